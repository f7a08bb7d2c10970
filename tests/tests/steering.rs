//! Steered names over the wire: clients at different addresses of a test host get their
//! region's endpoints, drawn by weight, in the order the shared draw gives their query, from
//! the XDP program over UDP and from the daemon over TCP; the zone keeps answering everything
//! else. Needs root; runs serially (test host 38).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use dnsfast::{
    compile::compile,
    config::Config,
    server::{Shared, handle},
    steering::Compiled,
};
use dnsfast_common::wire::{TYPE_A, TYPE_AAAA, answer_rotation};
use dnsfast_tests::{
    daemon::{TestDaemon, pass_program, write_config},
    dns,
    host::{TestHost, ip},
};
use hickory_proto::{
    op::Message,
    rr::{Name, RData, RecordType},
};

const TIMEOUT: Duration = Duration::from_secs(3);

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 host 1 7200 3600 1209600 300\n\
                    @ NS ns1\nns1 A 198.18.38.1\nfixed 60 A 198.18.38.50\nalias CNAME www\n";

fn steering(eu4: Ipv4Addr, apac4: Ipv4Addr, eu6: Ipv6Addr) -> String {
    format!(
        "[steering]\ndefault_region = \"us\"\n\
         [[region]]\nname = \"us\"\n\
         [[region]]\nname = \"eu\"\nsubnets = [\"{eu4}/32\", \"{eu6}/128\"]\n\
         [[region]]\nname = \"apac\"\nsubnets = [\"{apac4}/32\"]\n\
         [[endpoint]]\nname = \"us-1\"\nipv4 = \"198.18.40.1\"\nipv6 = \"2001:2:0:40::1\"\n\
         [[endpoint]]\nname = \"us-2\"\nipv4 = \"198.18.40.2\"\nipv6 = \"2001:2:0:40::2\"\n\
         [[endpoint]]\nname = \"us-3\"\nipv4 = \"198.18.40.3\"\n\
         [[endpoint]]\nname = \"eu-1\"\nipv4 = \"198.18.41.1\"\n\
         [[endpoint]]\nname = \"eu-2\"\nipv4 = \"198.18.41.2\"\n\
         [[service]]\nname = \"www.example.com\"\nttl = 60\nanswer_count = 2\n\
         [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\", weight = 50 }}, \
         {{ endpoint = \"us-2\", weight = 30 }}, {{ endpoint = \"us-3\", weight = 20 }}]\n\
         [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}, {{ endpoint = \"eu-2\" }}]\n\
         [[service.pool]]\nregion = \"apac\"\nborrow = \"eu\"\n"
    )
}

fn addresses(reply: &[u8]) -> Vec<IpAddr> {
    let m = Message::from_vec(reply).unwrap();
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn clients_get_their_regions_endpoints_in_the_shared_draws_order() {
    let host = TestHost::new(38, "steer").unwrap();
    let _pass = pass_program(&host);
    // Two more client addresses on the host's side, in the test host's subnet.
    let eu4 = Ipv4Addr::new(198, 18, 38, 3);
    let apac4 = Ipv4Addr::new(198, 18, 38, 4);
    let eu6 = Ipv6Addr::new(0x2001, 2, 0, 38, 0, 0, 0, 3);
    for a in [format!("{eu4}/24"), format!("{apac4}/24")] {
        ip(&["addr", "add", &a, "dev", &host.host_if]).unwrap();
    }
    ip(&[
        "-6",
        "addr",
        "add",
        &format!("{eu6}/64"),
        "dev",
        &host.host_if,
        "nodad",
    ])
    .unwrap();

    let zdir = tempfile::tempdir().unwrap();
    let zone = zdir.path().join("example.com.zone");
    std::fs::write(&zone, ZONE).unwrap();
    let (config, dir) = write_config(
        &host,
        "steer",
        "native",
        &[("example.com.", zone.as_path())],
        "",
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&steering(eu4, apac4, eu6));
    std::fs::write(&config, &text).unwrap();
    // What the daemon must answer, from the same configuration through the library.
    let cfg = Config::load(&config).unwrap();
    let snap = compile(&cfg).unwrap();
    let steer = &snap.steering;
    let wire = {
        let n = Name::from_ascii("www.example.com.").unwrap();
        dnsfast::steering::wire_lower(&n)
    };
    let svc = steer.service(&wire).unwrap();
    // The daemon's own code path, to compare the kernel's bytes with.
    let shared = Shared::new(compile(&cfg).unwrap());
    // `explain` tells an operator the same, from the configuration alone.
    let out = std::process::Command::new(dnsfast_tests::dnsfast_bin())
        .args(["explain", "--config"])
        .arg(&config)
        .args([&eu4.to_string(), "www.example.com"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with(&format!(
            "{eu4}: region eu (its subnet {eu4}/32); block {eu4}/32 (ECS SCOPE 32)\n"
        )) && text.contains("www.example.com. A: its own pool, 2 drawn by weight from 198.18.41.1")
            && text.contains("www.example.com. AAAA: region us's pool"),
        "{text}"
    );
    let daemon = TestDaemon::start_with(&host, "steer", config, dir).unwrap();
    let server4: SocketAddr = (host.v4, 53).into();
    let server6: SocketAddr = (host.v6, 53).into();

    let mut first = [0u32; 3];
    for (client, server, qtype, region) in [
        (IpAddr::V4(host.v4_peer), server4, RecordType::A, "us"),
        (IpAddr::V4(eu4), server4, RecordType::A, "eu"),
        (IpAddr::V4(apac4), server4, RecordType::A, "apac"),
        (IpAddr::V6(host.v6_peer), server6, RecordType::AAAA, "us"),
        // eu has no IPv6 endpoint: the default region's.
        (IpAddr::V6(eu6), server6, RecordType::AAAA, "eu"),
    ] {
        let sock = UdpSocket::bind((client, 0)).unwrap();
        let port = sock.local_addr().unwrap().port();
        let region_ix = steer.regions.iter().position(|n| n == region).unwrap() as u16;
        let t = if qtype == RecordType::A {
            TYPE_A
        } else {
            TYPE_AAAA
        };
        let set = steer.set(svc, t, region_ix).unwrap();
        for id in 0..300u16 {
            let q = dns::query(id, "www.example.com.", qtype, Some((1232, false)));
            let reply = dns::udp_exchange_on(&sock, server, &q, TIMEOUT).unwrap();
            let (want, drawn) = Compiled::answer(set, answer_rotation(id, port));
            let rdlen = if t == TYPE_A { 4 } else { 16 };
            let want: Vec<IpAddr> = want.rdata[..rdlen * usize::from(want.count)]
                .chunks(rdlen)
                .map(|c| match rdlen {
                    4 => IpAddr::from(<[u8; 4]>::try_from(c).unwrap()),
                    _ => IpAddr::from(<[u8; 16]>::try_from(c).unwrap()),
                })
                .collect();
            let got = addresses(&reply);
            assert_eq!(got, want, "{client} ({region}) {qtype} query {id}");
            let user = handle(&shared, &q, false, (client, port).into()).unwrap();
            assert_eq!(
                reply, user,
                "{client} {qtype} query {id}: XDP and the daemon differ"
            );
            if region == "us" && t == TYPE_A {
                first[usize::from(drawn.order[0])] += 1;
            }
        }
    }
    // 50/30/20 over 300 queries (the XDP test checks ±2 points over 100,000).
    assert!(
        first[0] > first[1] && first[1] > first[2] && first[2] > 20,
        "{first:?}"
    );

    // The zone answers the rest; a CNAME to the steered name ends in the client's records.
    let sock = UdpSocket::bind((eu4, 0)).unwrap();
    let fixed = dns::query(1, "fixed.example.com.", RecordType::A, None);
    let r = dns::udp_exchange_on(&sock, server4, &fixed, TIMEOUT).unwrap();
    assert_eq!(addresses(&r), [IpAddr::V4(Ipv4Addr::new(198, 18, 38, 50))]);
    let alias = dns::query(2, "alias.example.com.", RecordType::A, None);
    let r = dns::udp_exchange_on(&sock, server4, &alias, TIMEOUT).unwrap();
    let got = addresses(&r);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter().all(|a| a.to_string().starts_with("198.18.41.")),
        "{got:?}"
    );
    let mx = dns::query(3, "www.example.com.", RecordType::MX, None);
    let r = dns::udp_exchange_on(&sock, server4, &mx, TIMEOUT).unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert_eq!((m.response_code.low(), m.answers.len()), (0, 0), "NODATA");
    // Over TCP too.
    let q = dns::query(4, "www.example.com.", RecordType::A, None);
    let r = dns::tcp_exchange(server4, &[q], TIMEOUT).unwrap();
    assert_eq!(addresses(&r[0]).len(), 2);

    // Every steered query over UDP was answered in the kernel (region decided there from the
    // source address), and the hot name too; the daemon answered the TCP one.
    assert!(
        daemon.xdp_counter("answered").unwrap() >= 1501,
        "{}",
        daemon.status().unwrap()["xdp"]["counters"]
    );
    assert_eq!(daemon.server_counter("steered_answers").unwrap(), 1);
}
