//! TCP under pressure: idle connections from many clients, one greedy client, and a descriptor
//! limit the daemon cannot raise. A fresh client must be served throughout, the daemon must
//! not spin, and `status` must say what it did. Needs root; run serially: each test has its own
//! namespace, interfaces and subnet. Every loop is bounded in count and time.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use dnsfast_tests::{
    daemon::{TestDaemon, write_config},
    dns,
    host::{TestHost, ip},
    hot_zone,
};
use hickory_proto::rr::RecordType;
use socket2::{Domain, Socket, Type};

/// Deadline for one exchange or one connect on a local veth (nominal: well under 10 ms).
const TIMEOUT: Duration = Duration::from_secs(3);

/// This process needs more descriptors than a shell's default soft limit for its client side.
fn raise_own_nofile() {
    let limit = dnsfast::tcp::raise_nofile().unwrap();
    assert!(limit >= 4096, "the test needs 4096 descriptors");
}

/// Extra client addresses `198.18.<n>.<first>..` on the host's veth end.
fn add_clients(host: &TestHost, first: u8, count: u8) -> Vec<Ipv4Addr> {
    (first..first + count)
        .map(|i| {
            let a = Ipv4Addr::new(198, 18, host.v4.octets()[2], i);
            ip(&["addr", "add", &format!("{a}/24"), "dev", &host.host_if]).unwrap();
            a
        })
        .collect()
}

/// `count` idle TCP connections from `from` to the server.
fn idle_connections(host: &TestHost, from: Ipv4Addr, count: usize) -> Vec<Socket> {
    let server: SocketAddr = (host.v4, 53).into();
    (0..count)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())
                .unwrap();
            s.connect_timeout(&server.into(), TIMEOUT).unwrap();
            s
        })
        .collect()
}

/// A TCP query from the host's own address: answered, with www's addresses.
fn fresh_tcp_query(host: &TestHost) -> Result<(), String> {
    let server: SocketAddr = (host.v4, 53).into();
    let q = dns::query(7, "www.example.com.", RecordType::A, None);
    let r = dns::tcp_exchange(server, &[q], TIMEOUT).map_err(|e| format!("{e:#}"))?;
    match dns::rcode(&r[0]) {
        Ok(0) => Ok(()),
        other => Err(format!("rcode {other:?}")),
    }
}

/// Polls `status` until `pred` holds, up to `deadline`.
fn wait_status(
    d: &TestDaemon,
    deadline: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + deadline;
    loop {
        let st = d.status().unwrap();
        if pred(&st) {
            return st;
        }
        assert!(
            Instant::now() < end,
            "status never got there: {}",
            st["tcp"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tcp_field(st: &serde_json::Value, k: &str) -> u64 {
    st["tcp"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("no tcp.{k} in {st}"))
}

#[test]
fn idle_connections_do_not_lock_out_new_clients() {
    raise_own_nofile();
    let host = TestHost::new(35, "tcpidle").unwrap();
    // XDP plays no part in TCP: the daemon answers everything.
    let d = TestDaemon::start_opts(
        &host,
        "tcpidle",
        "off",
        &[("example.com.", &hot_zone())],
        "tcp_idle_timeout = 120\n",
    )
    .unwrap();
    let st = d.status().unwrap();
    assert_eq!(
        (tcp_field(&st, "max"), tcp_field(&st, "per_client")),
        (1024, 64),
        "defaults"
    );

    // 18 clients x 60 idle connections: more than the 1,024 the daemon keeps.
    let clients = add_clients(&host, 10, 19);
    let mut held = Vec::new();
    for c in &clients[..18] {
        held.extend(idle_connections(&host, *c, 60));
    }
    let st = wait_status(&d, Duration::from_secs(20), |st| {
        tcp_field(st, "open") == 1024 && tcp_field(st, "evicted") == 1080 - 1024
    });
    assert_eq!(tcp_field(&st, "refused"), 0);
    // A new client is served at once, by closing the idlest connection.
    fresh_tcp_query(&host)
        .expect("a fresh TCP client is served while 1,024 idle connections are open");
    let st = d.status().unwrap();
    assert_eq!(tcp_field(&st, "evicted"), 1080 - 1024 + 1);

    // One client may hold 64: its 65th and later connections are closed at once.
    let greedy = idle_connections(&host, clients[18], 70);
    let st = wait_status(&d, Duration::from_secs(20), |st| {
        tcp_field(st, "refused") == 6
    });
    assert_eq!(tcp_field(&st, "open"), 1024);
    let closed = greedy
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            // EOF (Ok(0)) or a reset: the daemon closed it. A timeout: still open.
            !matches!(s.recv(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        })
        .count();
    assert_eq!(
        closed, 6,
        "the greedy client's connections beyond 64 are closed"
    );
    let text = Command::new(dnsfast_tests::dnsfast_bin())
        .args(["status", "--instance", "tcpidle", "--netns", &host.netns])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        // 56 + 1 evicted before; the fresh client's own connection closed after its answer, so
        // the greedy client's first one found room and its other 63 evicted one each.
        text.contains("tcp        1024 open (at most 1024, 64 per client); 120 evicted, 6 refused"),
        "{text}"
    );
    drop(held);
}

/// Busy CPU ticks (user + system) of `pid` so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v[0], v[1])
}

#[test]
fn descriptor_exhaustion_backs_off_instead_of_spinning() {
    raise_own_nofile();
    let host = TestHost::new(36, "tcpfd").unwrap();
    let zones = [("example.com.", hot_zone())];
    let refs: Vec<(&str, &std::path::Path)> =
        zones.iter().map(|(o, f)| (*o, f.as_path())).collect();

    // A service manager's soft limit is raised to the hard one at start.
    let (config, dir) =
        write_config(&host, "tcpfd", "off", &refs, "tcp_idle_timeout = 120\n").unwrap();
    let mut d = TestDaemon::spawn_with(
        &host,
        "tcpfd",
        config,
        dir,
        &["prlimit", "--nofile=1024:4096", "--"],
    )
    .unwrap();
    d.service
        .wait_for("READY=1", dnsfast_tests::daemon::START_DEADLINE)
        .unwrap();
    let pid = d.service.pid();
    assert_eq!(
        nofile(pid),
        (4096, 4096),
        "soft limit raised to the hard one"
    );

    // Now the limit drops under the running daemon (an operator's prlimit, another process
    // eating the system's descriptors): accepts fail with EMFILE while connections queue.
    let lowered = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=150:150"])
        .status()
        .unwrap();
    assert!(lowered.success());
    let clients = add_clients(&host, 10, 4);
    let mut held = Vec::new();
    for c in &clients {
        held.extend(idle_connections(&host, *c, 50));
    }
    wait_status(&d, Duration::from_secs(20), |st| {
        tcp_field(st, "accept_errors") > 0
    });
    // Let the queue drain, then measure: the daemon must be idle, not spinning on accept.
    std::thread::sleep(Duration::from_millis(500));
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(2));
    let (ticks, secs) = (cpu_ticks(pid) - c0, t0.elapsed().as_secs_f64());
    // SAFETY: sysconf has no preconditions.
    let hz = u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
    let cores = f64::from(u32::try_from(ticks).unwrap()) / f64::from(hz) / secs;
    println!(
        "daemon CPU with 200 connections queued at a 150-descriptor limit: {cores:.3} cores (spinning used 1.2)"
    );
    assert!(
        cores < 0.25,
        "daemon uses {cores:.2} cores while out of descriptors"
    );
    // A new client is still served: the idlest connection makes room.
    fresh_tcp_query(&host).expect("a fresh TCP client is served at the descriptor limit");
    let log = d.service.log();
    let warnings = log.matches("TCP accept on").count();
    assert!(
        (1..=3).contains(&warnings),
        "accept failures logged once per 10 s, not per failure: {warnings} lines\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");
    drop(held);
    d.service.stop().unwrap();

    // A hard limit below tcp_max_connections: the daemon says so and sizes the table to fit.
    let (config, dir) = write_config(&host, "tcpfd", "off", &refs, "").unwrap();
    let mut d = TestDaemon::spawn_with(
        &host,
        "tcpfd",
        config,
        dir,
        &["prlimit", "--nofile=256:256", "--"],
    )
    .unwrap();
    d.service
        .wait_for("READY=1", dnsfast_tests::daemon::START_DEADLINE)
        .unwrap();
    let max = tcp_field(&d.status().unwrap(), "max");
    assert!((1..256).contains(&max), "table sized to the limit: {max}");
    let log = d.service.log();
    assert!(
        log.contains("server.tcp_max_connections = 1024 does not fit the open-file limit (256"),
        "{log}"
    );
    fresh_tcp_query(&host).unwrap();
}
