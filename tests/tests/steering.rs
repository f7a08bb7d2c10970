//! Steered names over the wire: clients at different addresses of a test host get their
//! region's endpoints, drawn by weight, in the order the shared draw gives their query, from
//! the XDP program over UDP and from the daemon over TCP; the zone keeps answering everything
//! else; regions by GeoIP country and continent from a crafted database of either schema, the
//! same in the kernel and the daemon. Needs root; runs serially (test hosts 38 and 39).

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
    rr::{Name, RecordType},
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

/// A configuration serving `zone` on the test host, with the steering tables `extra`.
fn steered_config(
    host: &TestHost,
    tag: &str,
    zone: &std::path::Path,
    extra: &str,
) -> (std::path::PathBuf, tempfile::TempDir) {
    let (config, dir) = write_config(host, tag, "native", &[("example.com.", zone)], "").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(extra);
    std::fs::write(&config, &text).unwrap();
    (config, dir)
}

/// More client addresses on the host's side, in the test host's subnet.
fn add_clients(host: &TestHost, addrs: &[IpAddr]) {
    for a in addrs {
        match a {
            IpAddr::V4(_) => ip(&["addr", "add", &format!("{a}/24"), "dev", &host.host_if]),
            IpAddr::V6(_) => ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                &host.host_if,
                "nodad",
            ]),
        }
        .unwrap();
    }
}

use dns::addresses;

#[test]
fn clients_get_their_regions_endpoints_in_the_shared_draws_order() {
    let host = TestHost::new(38, "steer").unwrap();
    let _pass = pass_program(&host);
    // Two more client addresses on the host's side, in the test host's subnet.
    let eu4 = Ipv4Addr::new(198, 18, 38, 3);
    let apac4 = Ipv4Addr::new(198, 18, 38, 4);
    let eu6 = Ipv6Addr::new(0x2001, 2, 0, 38, 0, 0, 0, 3);
    add_clients(
        &host,
        &[IpAddr::V4(eu4), IpAddr::V4(apac4), IpAddr::V6(eu6)],
    );

    let zdir = tempfile::tempdir().unwrap();
    let zone = zdir.path().join("example.com.zone");
    std::fs::write(&zone, ZONE).unwrap();
    let (config, dir) = steered_config(&host, "steer", &zone, &steering(eu4, apac4, eu6));
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
            let (want, drawn) = Compiled::answer(set, u32::MAX, answer_rotation(id, port));
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

/// A database of `schema` ("geoip2" or "flat") placing the test host's clients.
fn geoip_db(path: &std::path::Path, schema: &str) {
    use serde_json::json;
    let rec = |country: Option<&str>, continent: Option<&str>| match schema {
        "geoip2" => {
            let mut m = serde_json::Map::new();
            if let Some(c) = country {
                m.insert("country".into(), json!({"iso_code": c, "names": {"en": c}}));
            }
            if let Some(k) = continent {
                m.insert("continent".into(), json!({"code": k}));
            }
            serde_json::Value::Object(m)
        }
        // The flat schema has no continent: EU stands for Europe without a country.
        _ => json!({"country_code": country.or(continent).unwrap()}),
    };
    let mut w = mmdb_writer::Writer::new("dnsfast-test-country");
    for (net, country, continent) in [
        ("198.18.39.0/30", Some("US"), Some("NA")),
        ("198.18.39.3/32", Some("DE"), Some("EU")),
        ("198.18.39.4/32", Some("JP"), Some("AS")),
        ("198.18.39.5/32", None, Some("EU")),
        ("2001:2:0:27::3/128", Some("DE"), Some("EU")),
    ] {
        w.insert(
            net.parse::<ipnet::IpNet>().unwrap(),
            &rec(country, continent),
        )
        .unwrap();
    }
    std::fs::write(path, w.to_bytes().unwrap()).unwrap();
}

#[test]
fn geoip_places_clients_by_country_and_continent_in_xdp_as_in_the_daemon() {
    let host = TestHost::new(39, "geo").unwrap();
    let _pass = pass_program(&host);
    let v4 = |n: u8| Ipv4Addr::new(198, 18, 39, n);
    let v6_3 = Ipv6Addr::new(0x2001, 2, 0, 39, 0, 0, 0, 3);
    add_clients(
        &host,
        &[
            IpAddr::V4(v4(3)),
            IpAddr::V4(v4(4)),
            IpAddr::V4(v4(5)),
            IpAddr::V6(v6_3),
        ],
    );
    let zdir = tempfile::tempdir().unwrap();
    let zone = zdir.path().join("example.com.zone");
    std::fs::write(&zone, ZONE.replace("198.18.38.", "198.18.39.")).unwrap();
    for schema in ["geoip2", "flat"] {
        let db = zdir.path().join(format!("{schema}.mmdb"));
        geoip_db(&db, schema);
        let extra = format!(
            "[geoip]\ndatabase = \"{}\"\n\
             [steering]\ndefault_region = \"us\"\n\
             [[region]]\nname = \"us\"\ncontinents = [\"NA\", \"SA\"]\n\
             [[region]]\nname = \"eu\"\ncontinents = [\"EU\", \"AF\"]\n\
             [[region]]\nname = \"apac\"\ncountries = [\"JP\"]\n\
             [[endpoint]]\nname = \"us-1\"\nipv4 = \"198.18.40.1\"\nipv6 = \"2001:2:0:40::1\"\n\
             [[endpoint]]\nname = \"eu-1\"\nipv4 = \"198.18.41.1\"\nipv6 = \"2001:2:0:41::1\"\n\
             [[endpoint]]\nname = \"apac-1\"\nipv4 = \"198.18.42.1\"\n\
             [[service]]\nname = \"www.example.com\"\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}]\n\
             [[service.pool]]\nregion = \"apac\"\nendpoints = [{{ endpoint = \"apac-1\" }}]\n",
            db.display()
        );
        let (config, dir) = steered_config(&host, "geo", &zone, &extra);
        let cfg = Config::load(&config).unwrap();
        let shared = Shared::new(compile(&cfg).unwrap());
        let daemon = TestDaemon::start_with(&host, "geo", config, dir).unwrap();
        let answered_before = daemon.xdp_counter("answered").unwrap();
        let server4: SocketAddr = (host.v4, 53).into();
        let server6: SocketAddr = (host.v6, 53).into();
        let mut asked = 0;
        for (client, server, qtype, want) in [
            (IpAddr::V4(v4(2)), server4, RecordType::A, "198.18.40.1"),
            (IpAddr::V4(v4(3)), server4, RecordType::A, "198.18.41.1"),
            (IpAddr::V4(v4(4)), server4, RecordType::A, "198.18.42.1"),
            (IpAddr::V4(v4(5)), server4, RecordType::A, "198.18.41.1"),
            (
                IpAddr::V6(v6_3),
                server6,
                RecordType::AAAA,
                "2001:2:0:41::1",
            ),
            (
                IpAddr::V6(host.v6_peer),
                server6,
                RecordType::AAAA,
                "2001:2:0:40::1",
            ),
        ] {
            let sock = UdpSocket::bind((client, 0)).unwrap();
            let port = sock.local_addr().unwrap().port();
            for id in 0..50u16 {
                let q = dns::query(id, "www.example.com.", qtype, Some((1232, false)));
                let reply = dns::udp_exchange_on(&sock, server, &q, TIMEOUT).unwrap();
                asked += 1;
                let got: Vec<String> = addresses(&reply).iter().map(ToString::to_string).collect();
                assert_eq!(got, [want], "{schema}: {client} {qtype} query {id}");
                let user = handle(&shared, &q, false, (client, port).into()).unwrap();
                assert_eq!(
                    reply, user,
                    "{schema}: {client} query {id}: XDP and the daemon differ"
                );
            }
        }
        assert!(
            daemon.xdp_counter("answered").unwrap() - answered_before >= asked,
            "{schema}: every steered query answered in XDP"
        );
        let st = daemon.status().unwrap();
        // The writer splits 198.18.39.0/30 around the /32 inside it: 0/31, 2/32, 3/32.
        assert_eq!(
            st["steering"]["geoip"]["networks"],
            serde_json::json!([5, 1]),
            "{st}"
        );
        drop(daemon);
    }
}

/// What a Client Subnet query should get: the region whose endpoints answer (the first octets
/// of their addresses) and the SCOPE echoed.
struct EcsCase {
    what: &'static str,
    /// FAMILY, SOURCE, ADDRESS of the option.
    ecs: (u16, u8, Vec<u8>),
    /// The resolver: the host's default client (`false`) or the one in eu's subnet.
    from_eu: bool,
    qtype: RecordType,
    /// The answer's addresses start with this (the region's endpoints).
    want: &'static str,
    scope: u8,
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of cases and two configurations"
)]
fn client_subnet_decides_the_region_in_xdp_as_in_the_daemon() {
    use RecordType::{A, AAAA};
    use hickory_proto::rr::rdata::opt::EdnsCode;
    use serde_json::json;
    let host = TestHost::new(44, "ecs").unwrap();
    let _pass = pass_program(&host);
    let eu4 = Ipv4Addr::new(198, 18, 44, 3);
    let eu6 = Ipv6Addr::new(0x2001, 2, 0, 44, 0, 0, 0, 3);
    add_clients(&host, &[IpAddr::V4(eu4), IpAddr::V6(eu6)]);
    let zdir = tempfile::tempdir().unwrap();
    let zone = zdir.path().join("example.com.zone");
    std::fs::write(&zone, ZONE.replace("198.18.38.", "198.18.44.")).unwrap();
    // Public networks in the crafted database (data in ECS options: nothing is sent there).
    let db = zdir.path().join("flat.mmdb");
    let mut w = mmdb_writer::Writer::new("dnsfast-test-country");
    for (net, country) in [
        ("81.0.0.0/8", "DE"),
        ("126.0.0.0/8", "JP"),
        ("2a02::/16", "DE"),
    ] {
        let rec = json!({ "country_code": country });
        w.insert(net.parse::<ipnet::IpNet>().unwrap(), &rec)
            .unwrap();
    }
    std::fs::write(&db, w.to_bytes().unwrap()).unwrap();
    let tables = |ecs: &str| {
        format!(
            "{ecs}[geoip]\ndatabase = \"{}\"\n\
             [steering]\ndefault_region = \"us\"\n\
             [[region]]\nname = \"us\"\n\
             [[region]]\nname = \"eu\"\ncontinents = [\"EU\"]\n\
             subnets = [\"{eu4}/32\", \"{eu6}/128\", \"2001:2:0:2::/64\"]\n\
             [[region]]\nname = \"apac\"\ncountries = [\"JP\"]\nsubnets = [\"10.9.0.0/16\"]\n\
             [[endpoint]]\nname = \"us-1\"\nipv4 = \"198.18.40.1\"\nipv6 = \"2001:2:0:40::1\"\n\
             [[endpoint]]\nname = \"eu-1\"\nipv4 = \"198.18.41.1\"\nipv6 = \"2001:2:0:41::1\"\n\
             [[endpoint]]\nname = \"apac-1\"\nipv4 = \"198.18.42.1\"\nipv6 = \"2001:2:0:42::1\"\n\
             [[service]]\nname = \"www.example.com\"\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}]\n\
             [[service.pool]]\nregion = \"apac\"\nendpoints = [{{ endpoint = \"apac-1\" }}]\n",
            db.display()
        )
    };
    let mut mapped = vec![0u8; 10];
    mapped.extend_from_slice(&[0xFF, 0xFF, 81, 2, 3]);
    let case = |what, ecs: (u16, u8, &[u8]), from_eu, qtype, want, scope| EcsCase {
        what,
        ecs: (ecs.0, ecs.1, ecs.2.to_vec()),
        from_eu,
        qtype,
        want,
        scope,
    };
    let cases = [
        // The database's 81.0.0.0/8 (DE, Europe): a block wider than SOURCE, SCOPE 8 < 24.
        case("GeoIP /24", (1, 24, &[81, 2, 3]), false, A, "198.18.41.", 8),
        case(
            "GeoIP country",
            (1, 24, &[126, 1, 2]),
            false,
            A,
            "198.18.42.",
            8,
        ),
        // 198.18.0.0 lies in the default region's 198.18.0.0/19 (eu's /32 at 198.18.44.3
        // splits the /16): a block narrower than SOURCE, SCOPE 19 > 16.
        case(
            "narrower block",
            (1, 16, &[198, 18]),
            true,
            A,
            "198.18.40.",
            19,
        ),
        case(
            "eu's /32",
            (1, 32, &[198, 18, 44, 3]),
            false,
            A,
            "198.18.41.",
            32,
        ),
        // Looked up as IPv4: SCOPE 96 + 8.
        case("v4-mapped", (2, 120, &mapped), false, A, "198.18.41.", 104),
        case(
            "IPv6 /56",
            (2, 56, &[0x2a, 2, 0, 0, 0, 0, 1]),
            false,
            AAAA,
            "2001:2:0:41::",
            16,
        ),
        case(
            "IPv6 /64 subnet",
            (2, 64, &[0x20, 1, 0, 2, 0, 0, 0, 2]),
            false,
            AAAA,
            "2001:2:0:41::",
            64,
        ),
        // The resolver decides with SCOPE 0: SOURCE 0, private space no subnet covers.
        case("SOURCE 0", (1, 0, &[]), true, A, "198.18.41.", 0),
        case("private", (1, 24, &[192, 168, 1]), true, A, "198.18.41.", 0),
        case(
            "private, us resolver",
            (1, 24, &[192, 168, 1]),
            false,
            A,
            "198.18.40.",
            0,
        ),
        case(
            "private IPv6",
            (2, 8, &[0xFD]),
            true,
            AAAA,
            "2001:2:0:41::",
            0,
        ),
        // Private space a region's subnet covers decides.
        case(
            "covered private",
            (1, 24, &[10, 9, 1]),
            true,
            A,
            "198.18.42.",
            16,
        ),
    ];

    let listed = format!("[ecs]\nresolvers = [\"{eu4}/32\", \"{eu6}/128\"]\n");
    for ecs_conf in ["", listed.as_str(), "[ecs]\nenabled = false\n"] {
        let (config, dir) = steered_config(&host, "ecs", &zone, &tables(ecs_conf));
        let cfg = Config::load(&config).unwrap();
        let shared = Shared::new(compile(&cfg).unwrap());
        let daemon = TestDaemon::start_with(&host, "ecs", config, dir).unwrap();
        let counters =
            |d: &TestDaemon| ["answered_ecs", "pass_edns"].map(|c| d.xdp_counter(c).unwrap());
        let before = counters(&daemon);
        // Queries whose option is honoured (answered by the ECS stage) and the others (passed
        // up: the daemon ignores the option).
        let mut honoured_n = 0;
        let mut ignored_n = 0;
        let mut steered = 0;
        let hot_case = EcsCase {
            what: "hot name",
            ecs: (1, 24, vec![81, 2, 3]),
            from_eu: false,
            qtype: A,
            want: "198.18.44.50",
            scope: 0,
        };
        for c in cases.iter().chain([&hot_case]) {
            let v6 = c.ecs.0 == 2 && c.what != "v4-mapped";
            let client = match (c.from_eu, v6) {
                (false, false) => IpAddr::V4(host.v4_peer),
                (true, false) => IpAddr::V4(eu4),
                (false, true) => IpAddr::V6(host.v6_peer),
                (true, true) => IpAddr::V6(eu6),
            };
            let server: SocketAddr = match client {
                IpAddr::V4(_) => (host.v4, 53).into(),
                IpAddr::V6(_) => (host.v6, 53).into(),
            };
            let name = if c.what == "hot name" {
                "fixed.example.com."
            } else {
                "www.example.com."
            };
            let option = dns::ecs_option(c.ecs.0, c.ecs.1, 0, &c.ecs.2);
            let mut echo = option.clone();
            echo[7] = c.scope;
            // Who is honoured: everyone, only eu's resolver, nobody.
            let honoured = match ecs_conf {
                "" => true,
                _ if ecs_conf.contains("resolvers") => c.from_eu,
                _ => false,
            };
            let sock = UdpSocket::bind((client, 0)).unwrap();
            let port = sock.local_addr().unwrap().port();
            for id in 0..20u16 {
                let q = dnsfast_tests::battery::with_option(
                    dns::query(id, name, c.qtype, Some((1232, false))),
                    &option,
                );
                let reply = dns::udp_exchange_on(&sock, server, &q, TIMEOUT).unwrap();
                if honoured {
                    honoured_n += 1;
                } else {
                    ignored_n += 1;
                }
                let user = handle(&shared, &q, false, (client, port).into()).unwrap();
                assert_eq!(
                    reply, user,
                    "{ecs_conf:?} {}: query {id} from {client}: XDP and the daemon differ",
                    c.what
                );
                if !honoured {
                    // Ignored, as by a server without ECS: no echo.
                    let m = Message::from_vec(&reply).unwrap();
                    let e = m.edns.as_ref().expect("an OPT");
                    assert!(e.option(EdnsCode::Subnet).is_none(), "{}: no echo", c.what);
                    continue;
                }
                let got: Vec<String> = addresses(&reply).iter().map(ToString::to_string).collect();
                assert!(
                    got.len() == 1 && got[0].starts_with(c.want),
                    "{}: {got:?}, want {}",
                    c.what,
                    c.want
                );
                assert!(
                    reply.ends_with(&echo),
                    "{}: the echo with SCOPE {} ends the reply: {:02x?}",
                    c.what,
                    c.scope,
                    &reply[reply.len() - echo.len()..]
                );
            }
            steered += 1;
        }
        let after = counters(&daemon);
        assert_eq!(
            (after[0] - before[0], after[1] - before[1]),
            (honoured_n, ignored_n),
            "{ecs_conf:?}: every honoured Client Subnet query answered by the ECS stage, the \
             others passed up: {}",
            daemon.status().unwrap()["xdp"]["counters"]
        );
        if ecs_conf.contains("resolvers") {
            assert!(honoured_n > 0 && ignored_n > 0, "both kinds asked");
        }
        assert_eq!(steered, cases.len() + 1);
        drop(daemon);
    }
}

/// A database of `n` IPv4 /24 networks from 81.0.0.0 up, alternating DE and JP from `phase`:
/// two such databases with different phases place half their networks in other countries.
fn striped_db(path: &std::path::Path, n: u32, phase: u32) {
    let mut w = mmdb_writer::Writer::new("dnsfast-test-country");
    for i in 0..n {
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(0x5100_0000 + (i << 8)), 24).unwrap();
        let country = if (i + phase).is_multiple_of(2) {
            "DE"
        } else {
            "JP"
        };
        w.insert(
            ipnet::IpNet::V4(net),
            &serde_json::json!({ "country_code": country }),
        )
        .unwrap();
    }
    std::fs::write(path, w.to_bytes().unwrap()).unwrap();
}

#[test]
#[expect(clippy::too_many_lines, reason = "two configurations and the load")]
fn a_reload_under_load_answers_every_query_as_the_old_or_the_new_configuration() {
    const NETS: u32 = 4096;
    let host = TestHost::new(45, "reload").unwrap();
    let _pass = pass_program(&host);
    let moved = Ipv4Addr::new(198, 18, 45, 3);
    add_clients(&host, &[IpAddr::V4(moved)]);
    let zdir = tempfile::tempdir().unwrap();
    let zone = zdir.path().join("example.com.zone");
    std::fs::write(&zone, ZONE.replace("198.18.38.", "198.18.45.")).unwrap();
    let (db_a, db_b) = (zdir.path().join("a.mmdb"), zdir.path().join("b.mmdb"));
    striped_db(&db_a, NETS, 0);
    striped_db(&db_b, NETS, 1);
    // A and B differ in everything a placement depends on: the database (every network
    // changes country), the regions' order (every region's number changes), a client subnet
    // (`moved` goes from eu to apac) and the weights.
    let endpoints = "[[endpoint]]\nname = \"us-1\"\nipv4 = \"198.18.40.1\"\n\
                     [[endpoint]]\nname = \"eu-1\"\nipv4 = \"198.18.41.1\"\n\
                     [[endpoint]]\nname = \"eu-2\"\nipv4 = \"198.18.41.2\"\n\
                     [[endpoint]]\nname = \"apac-1\"\nipv4 = \"198.18.42.1\"\n\
                     [[endpoint]]\nname = \"apac-2\"\nipv4 = \"198.18.42.2\"\n";
    let service = |eu: (u8, u8), apac: (u8, u8)| {
        format!(
            "[[service]]\nname = \"www.example.com\"\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\", weight = {} }}, \
             {{ endpoint = \"eu-2\", weight = {} }}]\n\
             [[service.pool]]\nregion = \"apac\"\nendpoints = [{{ endpoint = \"apac-1\", weight = {} }}, \
             {{ endpoint = \"apac-2\", weight = {} }}]\n",
            eu.0, eu.1, apac.0, apac.1
        )
    };
    let conf_a = format!(
        "[geoip]\ndatabase = \"{}\"\n[steering]\ndefault_region = \"us\"\n\
         [[region]]\nname = \"us\"\n\
         [[region]]\nname = \"eu\"\ncountries = [\"DE\"]\nsubnets = [\"{moved}/32\"]\n\
         [[region]]\nname = \"apac\"\ncountries = [\"JP\"]\n{endpoints}{}",
        db_a.display(),
        service((50, 50), (50, 50))
    );
    let conf_b = format!(
        "[geoip]\ndatabase = \"{}\"\n[steering]\ndefault_region = \"us\"\n\
         [[region]]\nname = \"apac\"\ncountries = [\"JP\"]\nsubnets = [\"{moved}/32\"]\n\
         [[region]]\nname = \"eu\"\ncountries = [\"DE\"]\n\
         [[region]]\nname = \"us\"\n{endpoints}{}",
        db_b.display(),
        service((90, 10), (10, 90))
    );
    let (config, dir) = steered_config(&host, "reload", &zone, &conf_a);
    let base = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&conf_a, "");
    let shared = |extra: &str| {
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        Shared::new(compile(&Config::load(&config).unwrap()).unwrap())
    };
    // (A last: the daemon starts with it.)
    let shared_b = shared(&conf_b);
    let shared_a = shared(&conf_a);
    let mut daemon = TestDaemon::start_with(&host, "reload", config.clone(), dir).unwrap();
    let answered = |d: &TestDaemon| {
        d.xdp_counter("answered").unwrap() + d.xdp_counter("answered_ecs").unwrap()
    };
    let answered_before = answered(&daemon);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server: SocketAddr = (host.v4, 53).into();
    let clients = [host.v4_peer, moved];
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let socks: Vec<UdpSocket> = clients
                .iter()
                .map(|c| UdpSocket::bind((*c, 0)).unwrap())
                .collect();
            // (sent, only A's, only B's, both)
            let mut seen = [0u64; 4];
            let mut rng: u32 = 0x9E37_79B9;
            // Bounded in count and time whatever the reloads do.
            let deadline = std::time::Instant::now() + Duration::from_mins(2);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && seen[0] < 200_000
                && std::time::Instant::now() < deadline
            {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                let id = (rng >> 16) as u16;
                let client = (rng & 1) as usize;
                let mut q = dns::query(id, "www.example.com.", RecordType::A, Some((1232, false)));
                if rng & 6 != 0 {
                    // A network of the striped databases (ECS, data only), or next to them.
                    let net = (rng >> 4) % (NETS + 16);
                    let o = 0x5100_0000 + (net << 8);
                    let addr = o.to_be_bytes();
                    q = dnsfast_tests::battery::with_option(
                        q,
                        &dns::ecs_option(1, 24, 0, &addr[..3]),
                    );
                }
                let port = socks[client].local_addr().unwrap().port();
                let reply = dns::udp_exchange_on(&socks[client], server, &q, TIMEOUT).unwrap();
                let from: SocketAddr = (clients[client], port).into();
                let in_a = handle(&shared_a, &q, false, from).unwrap() == reply;
                let in_b = handle(&shared_b, &q, false, from).unwrap() == reply;
                assert!(
                    in_a || in_b,
                    "query {} from {from} ({q:02x?}): a reply neither A nor B gives: {reply:02x?}",
                    seen[0]
                );
                seen[0] += 1;
                seen[match (in_a, in_b) {
                    (true, false) => 1,
                    (false, true) => 2,
                    _ => 3,
                }] += 1;
            }
            seen
        })
    };
    // Let the load reach a steady state (some replies seen), then switch four times.
    std::thread::sleep(Duration::from_millis(300));
    for extra in [&conf_b, &conf_a, &conf_b, &conf_a] {
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        daemon.reload().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = load.join().unwrap();
    println!(
        "reload under load: {} replies, {} only A's, {} only B's, {} both's",
        seen[0], seen[1], seen[2], seen[3]
    );
    assert!(
        seen[1] > 100 && seen[2] > 100,
        "both configurations answered: {seen:?}"
    );
    let in_xdp = answered(&daemon) - answered_before;
    assert!(
        in_xdp * 10 >= seen[0] * 9,
        "{in_xdp} of {} answered in XDP",
        seen[0]
    );
    assert_eq!(daemon.status().unwrap()["reloads"], 4);
}
