//! Health checks over the wire: real HTTP health endpoints (on the client side of a test
//! host, which has no default route) go down and up, and the steered answers follow — an
//! endpoint leaves its region's answers after `fall` failed checks and comes back after `rise`
//! good ones, per family; a region below `min_healthy` fails over to the next of its chain;
//! the partial-chain rule; everything down fails open, or answers NODATA where configured —
//! the same from the XDP program (UDP) and the daemon (TCP). Needs root; runs serially (test
//! host 46).

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use dnsfast_tests::{
    daemon::{TestDaemon, pass_program, write_config},
    dns,
    host::{TestHost, ip},
};
use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};

const TIMEOUT: Duration = Duration::from_secs(3);
/// The checks' interval, timeout, fall and rise.
const INTERVAL_MS: u64 = 200;
const CHECK_TIMEOUT_MS: u64 = 100;
const FALL: u64 = 2;
const RISE: u64 = 2;

/// A tiny HTTP server answering every request with the status in `status` (and body `OK`).
struct HealthEndpoint {
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthEndpoint {
    fn start(addr: SocketAddr) -> Self {
        let l = TcpListener::bind(addr).unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&status), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if sp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let code = st.load(Ordering::Relaxed);
                let _ = write!(
                    c,
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
                );
            }
        });
        Self {
            status,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn set(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn addresses(reply: &[u8]) -> BTreeSet<IpAddr> {
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
fn answers_follow_health_with_failover_partial_chains_and_fail_open() {
    let n = 46u8;
    let host = TestHost::new(n, "health").unwrap();
    let _pass = pass_program(&host);
    // Eight health endpoints on the host's side: us-1, us-2, eu-1, eu-2, each dual-stack.
    let v4 = |i: u8| Ipv4Addr::new(198, 18, n, 10 + i);
    let v6 = |i: u8| Ipv6Addr::new(0x2001, 2, 0, u16::from(n), 0, 0, 0, 0x10 + u16::from(i));
    for i in 1..=4 {
        ip(&[
            "addr",
            "add",
            &format!("{}/24", v4(i)),
            "dev",
            &host.host_if,
        ])
        .unwrap();
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", v6(i)),
            "dev",
            &host.host_if,
            "nodad",
        ])
        .unwrap();
    }
    let web4: Vec<HealthEndpoint> = (1..=4)
        .map(|i| HealthEndpoint::start((v4(i), 8080).into()))
        .collect();
    let web6: Vec<HealthEndpoint> = (1..=4)
        .map(|i| HealthEndpoint::start((v6(i), 8080).into()))
        .collect();

    let zdir = tempfile::tempdir().unwrap();
    let zone = zdir.path().join("example.com.zone");
    std::fs::write(
        &zone,
        format!(
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 host 1 7200 3600 1209600 30\n@ NS ns1\n\
             ns1 A 198.18.{n}.1\n"
        ),
    )
    .unwrap();
    let names = ["us-1", "us-2", "eu-1", "eu-2"];
    let mut extra = format!(
        "[[check]]\nname = \"web\"\ntype = \"http\"\nport = 8080\npath = \"/health\"\n\
         interval = \"{INTERVAL_MS}ms\"\ntimeout = \"{CHECK_TIMEOUT_MS}ms\"\nfall = {FALL}\n\
         rise = {RISE}\n\
         [steering]\ndefault_region = \"us\"\n\
         [[region]]\nname = \"us\"\nsubnets = [\"198.18.{n}.0/24\"]\nfailover = [\"eu\"]\n\
         min_healthy = 2\n\
         [[region]]\nname = \"eu\"\nsubnets = [\"198.51.100.0/24\"]\nfailover = [\"us\"]\n"
    );
    for (i, name) in names.iter().enumerate() {
        let i = i as u8 + 1;
        let _ = write!(
            extra,
            "[[endpoint]]\nname = \"{name}\"\nipv4 = \"{}\"\nipv6 = \"{}\"\ncheck = \"web\"\n",
            v4(i),
            v6(i)
        );
    }
    for (svc, all_down) in [("www", "serve-all"), ("nod", "nodata")] {
        let _ = write!(
            extra,
            "[[service]]\nname = \"{svc}.example.com\"\nanswer_count = 2\nall_down = \"{all_down}\"\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}, {{ endpoint = \"us-2\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}, {{ endpoint = \"eu-2\" }}]\n"
        );
    }
    let (config, dir) =
        write_config(&host, "health", "native", &[("example.com.", &zone)], "").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&extra);
    std::fs::write(&config, &text).unwrap();
    let daemon = TestDaemon::start_with(&host, "health", config, dir).unwrap();

    let server4: SocketAddr = (host.v4, 53).into();
    // The answer sets a client of us (or eu: told by a Client Subnet) gets for `name` `qtype`
    // over UDP (the XDP program) and TCP (the daemon), twice each.
    let ask_both = |name: &str, qtype: RecordType, eu: bool| -> Vec<BTreeSet<IpAddr>> {
        let mut got = Vec::new();
        for id in [1u16, 2] {
            let q = dns::query(id, name, qtype, Some((1232, false)));
            let q = if eu {
                dnsfast_tests::battery::with_option(q, &dns::ecs_option(1, 24, 0, &[198, 51, 100]))
            } else {
                q
            };
            let udp = dns::udp_exchange(server4, &q, TIMEOUT).unwrap();
            let tcp = dns::tcp_exchange(server4, std::slice::from_ref(&q), TIMEOUT)
                .unwrap()
                .remove(0);
            assert_eq!(dns::rcode(&udp).unwrap(), 0, "{name} {qtype}");
            assert_eq!(dns::rcode(&tcp).unwrap(), 0, "{name} {qtype}");
            got.push(addresses(&udp));
            got.push(addresses(&tcp));
        }
        got
    };
    // The same while nothing changes: all four must agree.
    let ask = |name: &str, qtype: RecordType, eu: bool| -> BTreeSet<IpAddr> {
        let got = ask_both(name, qtype, eu);
        assert!(
            got.iter().all(|g| *g == got[0]),
            "{name} {qtype} eu={eu}: XDP (UDP) and the daemon (TCP) differ: {got:?}"
        );
        got[0].clone()
    };
    let a4 = |i: &[u8]| -> BTreeSet<IpAddr> { i.iter().map(|&i| IpAddr::V4(v4(i))).collect() };
    let a6 = |i: &[u8]| -> BTreeSet<IpAddr> { i.iter().map(|&i| IpAddr::V6(v6(i))).collect() };
    // Waits until `name`'s answer for the region is `want` on both paths (during a change one
    // query may meet the old state, the next the new), returning how long it took.
    let until = |what: &str, name: &str, qtype, eu, want: &BTreeSet<IpAddr>, deadline: Duration| {
        let t = Instant::now();
        loop {
            let got = ask_both(name, qtype, eu);
            if got.iter().all(|g| g == want) {
                let took = t.elapsed();
                println!("{what}: {took:?}");
                return took;
            }
            assert!(
                t.elapsed() < deadline,
                "{what}: {name} {qtype} eu={eu} still {got:?}, want {want:?} after {deadline:?}: {}",
                daemon.status().unwrap()["health"]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let www = "www.example.com.";
    // Nominal detection: fall checks one interval apart, the last one's timeout; recovery:
    // rise checks. Deadlines 3x that and more (a 2-core machine under the test's own load).
    let down_by = Duration::from_millis(3 * (FALL * INTERVAL_MS + CHECK_TIMEOUT_MS) + 1000);
    let up_by = Duration::from_millis(3 * (RISE * INTERVAL_MS + CHECK_TIMEOUT_MS) + 1000);

    // Everything up: each region its own endpoints, both families, answered in XDP.
    let before =
        daemon.xdp_counter("answered").unwrap() + daemon.xdp_counter("answered_ecs").unwrap();
    assert_eq!(ask(www, RecordType::A, false), a4(&[1, 2]));
    assert_eq!(ask(www, RecordType::AAAA, false), a6(&[1, 2]));
    assert_eq!(ask(www, RecordType::A, true), a4(&[3, 4]));
    let after =
        daemon.xdp_counter("answered").unwrap() + daemon.xdp_counter("answered_ecs").unwrap();
    assert!(after - before >= 6, "answered in XDP: {before} -> {after}");

    // eu-1's IPv4 check fails: it leaves eu's A answers after `fall` checks; AAAA keeps it.
    web4[2].set(503);
    until("eu-1 A down", www, RecordType::A, true, &a4(&[4]), down_by);
    assert_eq!(ask(www, RecordType::AAAA, true), a6(&[3, 4]), "per family");
    let st = daemon.status().unwrap();
    let target = st["health"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["addr"] == v4(3).to_string())
        .unwrap()
        .clone();
    assert_eq!(target["state"], "down", "{target}");
    assert!(
        target["last"].as_str().unwrap().contains("HTTP 503"),
        "{target}"
    );
    // Back after `rise` good checks.
    web4[2].set(200);
    until("eu-1 A up", www, RecordType::A, true, &a4(&[3, 4]), up_by);

    // us-1's IPv4 fails: us (min_healthy 2) is down for A and its clients get eu's endpoints;
    // AAAA stays home.
    web4[0].set(503);
    until(
        "us A failed over",
        www,
        RecordType::A,
        false,
        &a4(&[3, 4]),
        down_by,
    );
    // The failed-over answer comes from the XDP program (the set's redirect), not the daemon.
    let answered =
        || daemon.xdp_counter("answered").unwrap() + daemon.xdp_counter("answered_ecs").unwrap();
    let before = answered();
    assert_eq!(ask(www, RecordType::A, false), a4(&[3, 4]));
    assert_eq!(answered() - before, 2, "both UDP queries answered in XDP");
    assert_eq!(ask(www, RecordType::AAAA, false), a6(&[1, 2]));
    let st = daemon.status().unwrap();
    let pools = st["health"]["pools"].as_array().unwrap();
    let us_a = pools
        .iter()
        .find(|p| p["region"] == "us" && p["family"] == "A")
        .unwrap();
    assert_eq!(us_a["healthy"], 1, "{us_a}");
    assert!(
        us_a["answers"]
            .as_str()
            .unwrap()
            .contains("failed over to eu"),
        "{us_a}"
    );
    assert!(st["health"]["last_update_us"].as_u64().is_some());

    // eu fails too: no region of us's chain reaches min_healthy, so the first with any
    // eligible endpoint answers: us itself, with us-2.
    web4[2].set(503);
    web4[3].set(503);
    until(
        "partial chain",
        www,
        RecordType::A,
        false,
        &a4(&[2]),
        down_by,
    );
    // And eu, with none, gets us's us-2 (its chain's first with any).
    assert_eq!(ask(www, RecordType::A, true), a4(&[2]));

    // Everything's IPv4 down: www fails open (the home region's endpoints as if healthy),
    // nod answers NODATA.
    web4[1].set(503);
    until(
        "fail open",
        www,
        RecordType::A,
        false,
        &a4(&[1, 2]),
        down_by,
    );
    assert_eq!(ask(www, RecordType::A, true), a4(&[3, 4]));
    assert_eq!(
        ask("nod.example.com.", RecordType::A, false),
        BTreeSet::new()
    );
    assert_eq!(
        ask("nod.example.com.", RecordType::AAAA, false),
        a6(&[1, 2])
    );

    // Back up: every region its own endpoints again (nod's NODATA ends: www's fail-open
    // answer looks the same as its healthy one).
    for w in &web4 {
        w.set(200);
    }
    let nod = "nod.example.com.";
    until("all back", nod, RecordType::A, false, &a4(&[1, 2]), up_by);
    until("eu back", nod, RecordType::A, true, &a4(&[3, 4]), up_by);
    let st = daemon.status().unwrap();
    for p in st["health"]["pools"].as_array().unwrap() {
        assert_eq!(p["answers"], "its own endpoints", "{p}");
    }
    let updates = st["health"]["updates"].as_u64().unwrap();
    let last_us = st["health"]["last_update_us"].as_u64().unwrap();
    println!("{updates} health map updates, the last {last_us} µs from its deciding result");
    assert!(updates >= 6, "{updates}");
    assert!(
        last_us < 100_000,
        "a map update within 100 ms: {last_us} µs"
    );
    drop(web6);
}
