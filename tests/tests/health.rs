//! Health checks over the wire: real HTTP health endpoints (on the client side of a test
//! host, which has no default route) go down and up, and the steered answers follow — an
//! endpoint leaves its region's answers after `fall` failed checks and comes back after `rise`
//! good ones, per family; a region below `min_healthy` fails over to the next of its chain;
//! the partial-chain rule; everything down fails open, or answers NODATA where configured —
//! the same from the XDP program (UDP) and the daemon (TCP); drains of an endpoint, a family
//! and a region, with an expiry, surviving reload and restart, and forced up. Needs root; runs
//! serially (test hosts 46 to 49, and 51). While an answered address has failed checks but is not
//! yet down, the answers holding it carry a TTL no longer than the time until it could be. A
//! region failing over with 1,000 services on its pools rewrites them within the update
//! budget, 40 times.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use dnsfast_tests::{
    daemon::{TestDaemon, pass_program, write_config},
    dns,
    health::HealthServer,
    host::{TestHost, ip},
};
use hickory_proto::rr::RecordType;

const TIMEOUT: Duration = Duration::from_secs(3);
/// The checks' interval, timeout, fall and rise.
const INTERVAL_MS: u64 = 200;
const CHECK_TIMEOUT_MS: u64 = 100;
const FALL: u64 = 2;
const RISE: u64 = 2;

fn addresses(reply: &[u8]) -> BTreeSet<IpAddr> {
    dns::addresses(reply).into_iter().collect()
}

/// A test host with eight health endpoints on its client side (us-1, us-2, eu-1, eu-2, each
/// with an IPv4 and an IPv6 address and its own HTTP server), a zone, and the steering
/// configuration: us (the host's clients; `min_healthy` as given) → eu, eu (ECS
/// 198.51.100.0/24) → us; services `www` (fail open) and `nod` (NODATA when all are down).
struct Rig {
    n: u8,
    host: TestHost,
    _pass: dnsfast_tests::service::Service,
    web4: Vec<HealthServer>,
    /// Kept serving (the IPv6 checks pass throughout).
    _web6: Vec<HealthServer>,
    zdir: tempfile::TempDir,
    extra: String,
}

fn v4(n: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, n, 10 + i)
}

fn v6(n: u8, i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, u16::from(n), 0, 0, 0, 0x10 + u16::from(i))
}

impl Rig {
    fn new(n: u8, tag: &str, us_min_healthy: u32) -> Self {
        let host = TestHost::new(n, tag).unwrap();
        let pass = pass_program(&host);
        for i in 1..=4 {
            ip(&[
                "addr",
                "add",
                &format!("{}/24", v4(n, i)),
                "dev",
                &host.host_if,
            ])
            .unwrap();
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", v6(n, i)),
                "dev",
                &host.host_if,
                "nodad",
            ])
            .unwrap();
        }
        let web4 = (1..=4)
            .map(|i| HealthServer::start((v4(n, i), 8080).into(), None).unwrap())
            .collect();
        let web6 = (1..=4)
            .map(|i| HealthServer::start((v6(n, i), 8080).into(), None).unwrap())
            .collect();
        let zdir = tempfile::tempdir().unwrap();
        std::fs::write(
            zdir.path().join("example.com.zone"),
            format!(
                "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 host 1 7200 3600 1209600 30\n@ NS ns1\n\
                 ns1 A 198.18.{n}.1\n"
            ),
        )
        .unwrap();
        let mut extra = format!(
            "[[check]]\nname = \"web\"\ntype = \"http\"\nport = 8080\npath = \"/health\"\n\
             interval = \"{INTERVAL_MS}ms\"\ntimeout = \"{CHECK_TIMEOUT_MS}ms\"\nfall = {FALL}\n\
             rise = {RISE}\n\
             [steering]\ndefault_region = \"us\"\n\
             [[region]]\nname = \"us\"\nsubnets = [\"198.18.{n}.0/24\"]\nfailover = [\"eu\"]\n\
             min_healthy = {us_min_healthy}\n\
             [[region]]\nname = \"eu\"\nsubnets = [\"198.51.100.0/24\"]\nfailover = [\"us\"]\n"
        );
        for (i, name) in ["us-1", "us-2", "eu-1", "eu-2"].iter().enumerate() {
            let i = i as u8 + 1;
            let _ = write!(
                extra,
                "[[endpoint]]\nname = \"{name}\"\nipv4 = \"{}\"\nipv6 = \"{}\"\ncheck = \"web\"\n",
                v4(n, i),
                v6(n, i)
            );
        }
        for (svc, all_down, ttl) in [("www", "serve-all", 60), ("nod", "nodata", 20)] {
            let _ = write!(
                extra,
                "[[service]]\nname = \"{svc}.example.com\"\nanswer_count = 2\nall_down = \"{all_down}\"\nttl = {ttl}\n\
                 [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}, {{ endpoint = \"us-2\" }}]\n\
                 [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}, {{ endpoint = \"eu-2\" }}]\n"
            );
        }
        Self {
            n,
            host,
            _pass: pass,
            web4,
            _web6: web6,
            zdir,
            extra,
        }
    }

    /// Starts a daemon (`server` added to `[server]`).
    fn start(&self, tag: &str, server: &str) -> TestDaemon {
        self.start_with(tag, server, "")
    }

    /// Starts a daemon (`server` added to `[server]`, `xdp` to `[xdp]`).
    fn start_with(&self, tag: &str, server: &str, xdp: &str) -> TestDaemon {
        self.start_bin(tag, server, xdp, None)
    }

    /// [`Self::start_with`], running `bin` if given.
    fn start_bin(&self, tag: &str, server: &str, xdp: &str, bin: Option<&Path>) -> TestDaemon {
        let zone = self.zdir.path().join("example.com.zone");
        let (config, dir) = write_config(
            &self.host,
            tag,
            "native",
            &[("example.com.", &zone)],
            server,
        )
        .unwrap();
        let mut text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("[xdp]\n", &format!("[xdp]\n{xdp}"));
        text.push_str(&self.extra);
        std::fs::write(&config, &text).unwrap();
        let daemon = match bin {
            None => TestDaemon::start_with(&self.host, tag, config, dir).unwrap(),
            Some(b) => TestDaemon::start_with_bin(&self.host, tag, config, dir, b).unwrap(),
        };
        // Every endpoint serves its checks when a test starts, but the first result decides a
        // target's state, and a first probe can time out while the daemon's own start-up
        // keeps this machine's two cores busy: then the target is down until `rise` passes.
        // Each test starts from everything up, so wait for that (3x the nominal recovery and
        // more).
        let deadline = Duration::from_millis(3 * (RISE * INTERVAL_MS + CHECK_TIMEOUT_MS) + 5000);
        let t = Instant::now();
        loop {
            let st = daemon.status().unwrap();
            let targets = st["health"]["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !targets.is_empty() && targets.iter().all(|t| t["state"] == "up") {
                break;
            }
            assert!(
                t.elapsed() < deadline,
                "not every target up {deadline:?} after start: {}",
                st["health"]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn server(&self) -> SocketAddr {
        (self.host.v4, 53).into()
    }

    fn a4(&self, i: &[u8]) -> BTreeSet<IpAddr> {
        i.iter().map(|&i| IpAddr::V4(v4(self.n, i))).collect()
    }

    fn a6(&self, i: &[u8]) -> BTreeSet<IpAddr> {
        i.iter().map(|&i| IpAddr::V6(v6(self.n, i))).collect()
    }
}

/// The answer sets a client of us (or eu: told by a Client Subnet) gets for `name` `qtype`
/// over UDP (the XDP program) and TCP (the daemon), twice each.
fn ask_both(server: SocketAddr, name: &str, qtype: RecordType, eu: bool) -> Vec<BTreeSet<IpAddr>> {
    let mut got = Vec::new();
    for id in [1u16, 2] {
        let q = dns::query(id, name, qtype, Some((1232, false)));
        let q = if eu {
            dnsfast_tests::battery::with_option(q, &dns::ecs_option(1, 24, 0, &[198, 51, 100]))
        } else {
            q
        };
        let udp = dns::udp_exchange(server, &q, TIMEOUT).unwrap();
        let tcp = dns::tcp_exchange(server, std::slice::from_ref(&q), TIMEOUT)
            .unwrap()
            .remove(0);
        assert_eq!(dns::rcode(&udp).unwrap(), 0, "{name} {qtype}");
        assert_eq!(dns::rcode(&tcp).unwrap(), 0, "{name} {qtype}");
        got.push(addresses(&udp));
        got.push(addresses(&tcp));
    }
    got
}

/// The same while nothing changes: all four must agree.
fn ask(server: SocketAddr, name: &str, qtype: RecordType, eu: bool) -> BTreeSet<IpAddr> {
    let got = ask_both(server, name, qtype, eu);
    assert!(
        got.iter().all(|g| *g == got[0]),
        "{name} {qtype} eu={eu}: XDP (UDP) and the daemon (TCP) differ: {got:?}"
    );
    got[0].clone()
}

/// Waits until `name`'s answer is `want` on both paths (during a change one query may meet
/// the old state, the next the new), returning how long it took.
#[expect(clippy::too_many_arguments, reason = "a query and what to wait for")]
fn until(
    daemon: &TestDaemon,
    server: SocketAddr,
    what: &str,
    name: &str,
    qtype: RecordType,
    eu: bool,
    want: &BTreeSet<IpAddr>,
    deadline: Duration,
) -> Duration {
    let t = Instant::now();
    loop {
        let got = ask_both(server, name, qtype, eu);
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
}

#[test]
fn answers_follow_health_with_failover_partial_chains_and_fail_open() {
    let rig = Rig::new(46, "health", 2);
    let daemon = rig.start("health", "");
    let server4 = rig.server();
    let web4 = &rig.web4;
    let ask = |name: &str, qtype, eu| ask(server4, name, qtype, eu);
    let until = |what: &str, name: &str, qtype, eu, want: &BTreeSet<IpAddr>, deadline| {
        until(&daemon, server4, what, name, qtype, eu, want, deadline)
    };
    let a4 = |i: &[u8]| rig.a4(i);
    let a6 = |i: &[u8]| rig.a6(i);
    let v4 = |i: u8| v4(rig.n, i);
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
    // Its negative TTL: min(SOA MINIMUM 30, the service's TTL 20), from both paths.
    let q = dns::query(9, "nod.example.com.", RecordType::A, Some((1232, false)));
    let udp = dns::udp_exchange(server4, &q, TIMEOUT).unwrap();
    let tcp = dns::tcp_exchange(server4, std::slice::from_ref(&q), TIMEOUT)
        .unwrap()
        .remove(0);
    assert_eq!(dns::ttls(&udp), (vec![], Some(20)), "NODATA over UDP");
    assert_eq!(dns::ttls(&tcp), (vec![], Some(20)), "NODATA over TCP");
    // Both counted (and logged) as they began: www's sets fail open, nod's answer NODATA.
    let h = daemon.status().unwrap()["health"].clone();
    assert!(
        h["fail_open_entered"].as_u64().unwrap() >= 1 && h["nodata_entered"].as_u64().unwrap() >= 1,
        "{h}"
    );
    assert_eq!(
        ask("nod.example.com.", RecordType::AAAA, false),
        a6(&[1, 2])
    );

    // Back up: every region its own endpoints again (nod's NODATA ends: www's fail-open
    // answer looks the same as its healthy one).
    for w in web4 {
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
}

/// One query's reply over UDP (the XDP program) and TCP (the daemon): the addresses and
/// their TTL (the same for all records of an answer).
fn ttl_pair(server: SocketAddr, id: u16, name: &str) -> [(BTreeSet<IpAddr>, u32); 2] {
    let q = dns::query(id, name, RecordType::A, Some((1232, false)));
    let udp = dns::udp_exchange(server, &q, TIMEOUT).unwrap();
    let tcp = dns::tcp_exchange(server, std::slice::from_ref(&q), TIMEOUT)
        .unwrap()
        .remove(0);
    [udp, tcp].map(|r| {
        let (ttls, _) = dns::ttls(&r);
        assert!(ttls.windows(2).all(|w| w[0] == w[1]), "{ttls:?}");
        (addresses(&r), ttls.first().copied().unwrap_or(0))
    })
}

#[test]
fn answers_with_a_failing_address_are_cached_no_longer_than_until_it_could_be_down() {
    // A slower check than the others' (interval 1 s, timeout 300 ms, fall 4): after its first
    // failure an address stays in the answers up to 3.3 s more, and the answers holding it
    // say so in their TTL (60 otherwise), counting down; it leaves, and the TTL is 60 again.
    let mut rig = Rig::new(49, "ttlcap", 1);
    rig.extra = rig
        .extra
        .replace(
            &format!("interval = \"{INTERVAL_MS}ms\"\ntimeout = \"{CHECK_TIMEOUT_MS}ms\"\nfall = {FALL}\nrise = {RISE}"),
            "interval = \"1s\"\ntimeout = \"300ms\"\nfall = 4\nrise = 1",
        );
    assert!(rig.extra.contains("fall = 4"));
    let daemon = rig.start("ttlcap", "");
    let server = rig.server();
    let www = "www.example.com.";
    let us1 = IpAddr::V4(v4(rig.n, 1));
    for (path, (addrs, ttl)) in ["UDP", "TCP"].iter().zip(ttl_pair(server, 1, www)) {
        assert_eq!((addrs, ttl), (rig.a4(&[1, 2]), 60), "{path} before");
    }
    let answered =
        || daemon.xdp_counter("answered").unwrap() + daemon.xdp_counter("answered_ecs").unwrap();
    let before = answered();
    let failed = Instant::now();
    rig.web4[0].set(503);
    // Nominal: the first failing probe within an interval (+ its timeout), three more one
    // interval apart: 4.3 s; the deadline 3x that and more.
    let deadline = Duration::from_millis(3 * 4_300 + 1_000);
    let mut seen: Vec<(Duration, usize, u32)> = Vec::new();
    let mut udp_queries = 0;
    let gone = loop {
        let at = failed.elapsed();
        let pair = ttl_pair(server, (seen.len() % 60_000) as u16, www);
        udp_queries += 1;
        if pair.iter().all(|(a, _)| *a == rig.a4(&[2])) {
            break failed.elapsed();
        }
        for (path, (addrs, ttl)) in pair.iter().enumerate() {
            assert!(*ttl <= 60, "{ttl}");
            if addrs.contains(&us1) {
                seen.push((at, path, *ttl));
            }
        }
        assert!(
            at < deadline,
            "us-1 still answered after {at:?}: {}",
            daemon.status().unwrap()["health"]
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let capped: Vec<&(Duration, usize, u32)> = seen.iter().filter(|s| s.2 < 60).collect();
    let mut steps: Vec<(u32, Duration)> = Vec::new();
    for (at, _, ttl) in &capped {
        if steps.last().is_none_or(|(t, _)| t != ttl) {
            steps.push((*ttl, *at));
        }
    }
    println!(
        "us-1 left the answers {gone:?} after its server started failing; meanwhile the answers \
         holding it had TTL {}",
        steps
            .iter()
            .map(|(t, at)| format!("{t} from {:.2} s", at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Both paths capped the TTL, counting down from at most the 3.3 s left after the first
    // failure (rounded up: 4), never below 1.
    for path in 0..2 {
        let ttls: Vec<u32> = capped.iter().filter(|s| s.1 == path).map(|s| s.2).collect();
        assert!(
            ttls.len() >= 2 && ttls.iter().all(|t| (1..=4).contains(t)),
            "path {path}: {ttls:?}"
        );
        assert!(
            ttls.windows(2).all(|w| w[1] <= w[0]),
            "counting down: {ttls:?}"
        );
    }
    // No answer holding us-1 outlives its removal: once its first failure could have been
    // recorded (one interval and the timeout after the server failed, with slack for a late
    // probe), every answer's expiry is within 2.5 s of the moment it left: the cap is rounded
    // up to the second, counts the last probe's whole timeout (a 503 takes a millisecond),
    // is refreshed every 100 ms, and the poll lags by one query.
    let recorded_by = Duration::from_millis(2_500);
    for (at, path, ttl) in &seen {
        if *at >= recorded_by {
            assert!(
                *at + Duration::from_secs(u64::from(*ttl)) <= gone + Duration::from_millis(2_500),
                "an answer at {at:?} (path {path}) with TTL {ttl} outlives the removal at {gone:?}"
            );
        }
    }
    // Every UDP query was answered in XDP, the capped ones included.
    assert_eq!(answered() - before, udp_queries, "answered in XDP");
    // After it left, the answers hold only addresses without failures: the full TTL.
    for (path, (addrs, ttl)) in ["UDP", "TCP"].iter().zip(ttl_pair(server, 2, www)) {
        assert_eq!((addrs, ttl), (rig.a4(&[2]), 60), "{path} after");
    }
    // Status says it is down; before that it said when it could be.
    let st = daemon.status().unwrap();
    let t = st["health"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["addr"] == us1.to_string())
        .unwrap()
        .clone();
    assert_eq!(t["state"], "down", "{t}");
    assert!(t.get("down_in_s").is_none(), "{t}");
}

/// `dnsfast drain|undrain|force-up ARGS` against the daemon; its output.
fn force_cli(daemon: &TestDaemon, args: &[&str]) -> String {
    let out = std::process::Command::new(dnsfast_tests::dnsfast_bin())
        .args(args)
        .args(["--instance", &daemon.instance, "--netns", &daemon.netns])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dnsfast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn drains_take_effect_at_once_expire_and_survive_reload_and_restart() {
    let rig = Rig::new(47, "drain", 1);
    let state = tempfile::tempdir().unwrap();
    let server_extra = format!("state_dir = \"{}\"\n", state.path().display());
    let mut daemon = rig.start("drain", &server_extra);
    let server4 = rig.server();
    let www = "www.example.com.";
    let a4 = |i: &[u8]| rig.a4(i);
    let a6 = |i: &[u8]| rig.a6(i);
    assert_eq!(ask(server4, www, RecordType::A, false), a4(&[1, 2]));

    // A drain is in the answers when the command returns (the map update is part of it).
    let mut took = Vec::new();
    let t = Instant::now();
    force_cli(&daemon, &["drain", "us-1", "--family", "ipv4"]);
    took.push(t.elapsed());
    assert_eq!(ask(server4, www, RecordType::A, false), a4(&[2]));
    assert_eq!(
        ask(server4, www, RecordType::AAAA, false),
        a6(&[1, 2]),
        "IPv4 only"
    );
    let t = Instant::now();
    let out = force_cli(&daemon, &["undrain", "us-1"]);
    took.push(t.elapsed());
    assert!(out.contains("nothing is forced"), "{out}");
    assert_eq!(ask(server4, www, RecordType::A, false), a4(&[1, 2]));

    // The whole endpoint, then a region: us's clients get eu's endpoints (its chain).
    force_cli(&daemon, &["drain", "us-1"]);
    assert_eq!(ask(server4, www, RecordType::AAAA, false), a6(&[2]));
    let out = force_cli(&daemon, &["drain", "--region", "us"]);
    assert!(out.contains("region us: drained"), "{out}");
    assert_eq!(ask(server4, www, RecordType::A, false), a4(&[3, 4]));
    assert_eq!(
        ask(server4, www, RecordType::A, true),
        a4(&[3, 4]),
        "eu's own clients"
    );
    let st = daemon.status().unwrap();
    assert_eq!(st["health"]["forced"].as_array().unwrap().len(), 2, "{st}");

    // Both survive a reload and a restart (the state file).
    daemon.reload().unwrap();
    assert_eq!(ask(server4, www, RecordType::A, false), a4(&[3, 4]));
    drop(daemon);
    let daemon = rig.start("drain", &server_extra);
    assert_eq!(
        ask(server4, www, RecordType::A, false),
        a4(&[3, 4]),
        "after restart"
    );
    force_cli(&daemon, &["undrain", "--region", "us"]);
    assert_eq!(
        ask(server4, www, RecordType::A, false),
        a4(&[2]),
        "us-1 still drained"
    );
    force_cli(&daemon, &["undrain", "us-1"]);

    // With an expiry: eu-1 drained for 1 s, then back by itself.
    force_cli(&daemon, &["drain", "eu-1", "--for", "1s"]);
    assert_eq!(ask(server4, www, RecordType::A, true), a4(&[4]));
    let back = until(
        &daemon,
        server4,
        "drain expired",
        www,
        RecordType::A,
        true,
        &a4(&[3, 4]),
        Duration::from_secs(5),
    );
    assert!(
        back >= Duration::from_millis(500),
        "expired early: {back:?}"
    );

    // Forced up beats a failing check.
    rig.web4[1].set(503);
    until(
        &daemon,
        server4,
        "us-2 down",
        www,
        RecordType::A,
        false,
        &a4(&[1]),
        Duration::from_secs(4),
    );
    force_cli(&daemon, &["force-up", "us-2", "--family", "ipv4"]);
    assert_eq!(ask(server4, www, RecordType::A, false), a4(&[1, 2]));
    force_cli(&daemon, &["undrain", "us-2"]);
    assert_eq!(ask(server4, www, RecordType::A, false), a4(&[1]));
    // A name the configuration does not have is refused, saying so.
    let out = std::process::Command::new(dnsfast_tests::dnsfast_bin())
        .args([
            "drain",
            "nope",
            "--instance",
            &daemon.instance,
            "--netns",
            &daemon.netns,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no endpoint \"nope\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The CLI's round trip, map update included (target 10 ms; this machine's process start
    // and socket round trip are most of it).
    println!("drain/undrain command round trips: {took:?}");
    let st = daemon.status().unwrap();
    println!(
        "last health map update {} µs after its cause",
        st["health"]["last_update_us"]
    );
    assert!(st["health"]["last_update_us"].as_u64().unwrap() < 100_000);
}

#[test]
fn a_region_failing_over_rewrites_a_thousand_services_within_the_budget() {
    let mut rig = Rig::new(48, "spread", 1);
    // 1,000 more services on the same pools: a region's failover rewrites 2,000 sets' states.
    for i in 0..1000 {
        let _ = write!(
            rig.extra,
            "[[service]]\nname = \"s{i}.example.com\"\nanswer_count = 2\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}, {{ endpoint = \"us-2\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}, {{ endpoint = \"eu-2\" }}]\n"
        );
    }
    // The daemon's own speed: the release build (a debug build takes ~15x as long for this
    // update).
    let daemon = rig.start_bin(
        "spread",
        "",
        "max_answer_sets = 8192\n",
        Some(&release_bin()),
    );
    let server4 = rig.server();
    let last = "s999.example.com.";
    let eu: BTreeSet<IpAddr> = [3u8, 4].iter().map(|&i| IpAddr::V4(v4(rig.n, i))).collect();
    let mut took = Vec::new();
    for round in 0..20 {
        for verb in ["drain", "undrain"] {
            force_cli(&daemon, &[verb, "--region", "us"]);
            let st = daemon.status().unwrap();
            took.push(st["health"]["last_update_us"].as_u64().unwrap());
            // The last service follows at once, in XDP and in the daemon.
            let got = ask(server4, last, RecordType::A, false);
            if verb == "drain" {
                assert_eq!(got, eu, "round {round}: s999 A with us drained");
            } else {
                assert!(
                    got.iter().all(|a| !eu.contains(a)),
                    "round {round}: {got:?}"
                );
            }
        }
    }
    took.sort_unstable();
    println!(
        "{} region failovers and back with 1,002 services: map update min {} µs, median {} µs, \
         max {} µs",
        took.len(),
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        took[took.len() - 1] < 100_000,
        "every update within 100 ms: {took:?}"
    );
}

/// The release build of the daemon (`cargo xtask test` builds it before these tests).
fn release_bin() -> std::path::PathBuf {
    let release = dnsfast_tests::workspace_root().join("target/release/dnsfast");
    assert!(
        release.exists(),
        "{} is missing: `cargo build --release -p dnsfast` (cargo xtask test builds it)",
        release.display()
    );
    release
}

/// dnsperf's figure for `key` (the first number after it).
fn perf_field(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("dnsperf output lacks {key:?}:\n{out}"))
}

#[test]
fn an_endpoint_flapping_under_the_seeds_load_gives_only_valid_answers_and_loses_nothing() {
    const SECONDS: u64 = 30;
    // The seed's 1M queries a minute (16,667 q/s, A and AAAA 1:1, dnsperf) on the steered name
    // for 30 s while us-1's IPv4 server flaps every 800 ms (checks every 250 ms, timeout
    // 200 ms, fall 2, rise 2: down within 0.7 s, up within 0.5 s; it leaves and rejoins the
    // answers about 37 times). A verifying client of ours asks meanwhile: every A answer is
    // one of the two states (us-1 and us-2, or us-2 alone), every AAAA answer the one state
    // (us-1 and us-2), a TTL below 60 only while us-1 is in it. The release daemon (as
    // deployed), with a timeout the two cores' load leaves room for: the other addresses'
    // checks must not fail under it.
    let mut rig = Rig::new(51, "flap", 1);
    rig.extra = rig.extra.replace(
        &format!(
            "interval = \"{INTERVAL_MS}ms\"\ntimeout = \"{CHECK_TIMEOUT_MS}ms\"\nfall = {FALL}\nrise = {RISE}"
        ),
        "interval = \"250ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 2",
    );
    assert!(rig.extra.contains("\"250ms\""));
    let daemon = rig.start_bin("flap", "", "", Some(&release_bin()));
    let server = rig.server();
    let www = "www.example.com.";
    // Everything up first (an address's first check may meet its neighbour entry unresolved).
    let settle = Duration::from_secs(5);
    until(
        &daemon,
        server,
        "A up",
        www,
        RecordType::A,
        false,
        &rig.a4(&[1, 2]),
        settle,
    );
    until(
        &daemon,
        server,
        "AAAA up",
        www,
        RecordType::AAAA,
        false,
        &rig.a6(&[1, 2]),
        settle,
    );
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries");
    std::fs::write(&queries, format!("{www} A\n{www} AAAA\n")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flapper = {
        let stop = std::sync::Arc::clone(&stop);
        let web = &rig.web4[0];
        std::thread::scope(|s| {
            let load = s.spawn(|| {
                std::process::Command::new("dnsperf")
                    .args(["-s", &server.ip().to_string(), "-d"])
                    .arg(&queries)
                    .args([
                        "-l",
                        &SECONDS.to_string(),
                        "-Q",
                        "16667",
                        "-c",
                        "4",
                        "-t",
                        "3",
                    ])
                    .output()
                    .unwrap()
            });
            let flap = s.spawn(|| {
                let mut flaps = 0u32;
                let t = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && t.elapsed() < Duration::from_secs(SECONDS + 10)
                {
                    web.set(if flaps.is_multiple_of(2) { 503 } else { 200 });
                    flaps += 1;
                    std::thread::sleep(Duration::from_millis(800));
                }
                web.set(200);
                flaps
            });
            // The verifying client, until dnsperf is done.
            let valid_a = [rig.a4(&[1, 2]), rig.a4(&[2])];
            let valid_aaaa = rig.a6(&[1, 2]);
            let us1 = IpAddr::V4(v4(rig.n, 1));
            let (mut asked, mut seen_a, mut capped) = (0u64, [0u64; 2], [0u64; 2]);
            let mut id = 0u16;
            while !load.is_finished() {
                id = id.wrapping_add(1);
                let qtype = if id.is_multiple_of(2) {
                    RecordType::A
                } else {
                    RecordType::AAAA
                };
                let q = dns::query(id, www, qtype, Some((1232, false)));
                let r = dns::udp_exchange(server, &q, TIMEOUT)
                    .unwrap_or_else(|e| panic!("query {id} unanswered under load: {e:#}"));
                asked += 1;
                assert_eq!(dns::rcode(&r).unwrap(), 0);
                let got = addresses(&r);
                let (ttls, _) = dns::ttls(&r);
                if qtype == RecordType::A {
                    let k = valid_a.iter().position(|v| *v == got).unwrap_or_else(|| {
                        panic!("query {id}: A answer {got:?} is none of {valid_a:?}")
                    });
                    seen_a[k] += 1;
                    // While us-1 fails its checks (or another address a probe under the
                    // load), the TTL is capped: one TTL for the RRset, 1 to 60.
                    assert!(
                        ttls.iter().all(|t| *t == ttls[0] && (1..=60).contains(t)),
                        "query {id}: {got:?} with TTL {ttls:?}"
                    );
                    capped[0] += u64::from(ttls[0] < 60 && got.contains(&us1));
                    capped[1] += u64::from(ttls[0] < 60 && !got.contains(&us1));
                } else {
                    assert_eq!(
                        got,
                        valid_aaaa,
                        "query {id}: AAAA; {}",
                        daemon.status().unwrap()["health"]
                    );
                    assert!(
                        ttls.iter().all(|t| *t == ttls[0] && (1..=60).contains(t)),
                        "query {id}: AAAA TTL {ttls:?}"
                    );
                    capped[1] += u64::from(ttls[0] < 60);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let out = load.join().unwrap();
            let flaps = flap.join().unwrap();
            (out, flaps, asked, seen_a, capped)
        })
    };
    let (out, flaps, asked, seen_a, capped) = flapper;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dnsperf: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sent, lost) = (
        perf_field(&text, "Queries sent:"),
        perf_field(&text, "Queries lost:"),
    );
    let st = daemon.status().unwrap();
    let spread = st["health"]["update_spread_us"].clone();
    println!(
        "flapping: {flaps} flips in {SECONDS} s; dnsperf sent {sent}, lost {lost}; our client \
         asked {asked} (A with us-1 {}, without {}; TTL capped in {} answers holding us-1, \
         {} others); health-driven map updates (µs): {spread}",
        seen_a[0], seen_a[1], capped[0], capped[1]
    );
    assert!(
        sent >= 16_667 * SECONDS * 9 / 10,
        "dnsperf sent {sent} (rate 16,667 q/s for {SECONDS} s)"
    );
    assert_eq!(lost, 0, "dnsperf lost queries:\n{text}");
    assert!(
        seen_a[0] > 0 && seen_a[1] > 0 && capped[0] > 0,
        "our client saw both states {seen_a:?} and capped TTLs while us-1 was failing {capped:?}"
    );
    // The transitions' map updates: at least 20, each within the budget.
    let n = spread["n"].as_u64().unwrap();
    let max = spread["max"].as_u64().unwrap();
    assert!(n >= 20, "{n} health-driven map updates: {spread}");
    assert!(max < 100_000, "a map update took {max} µs: {spread}");
}
