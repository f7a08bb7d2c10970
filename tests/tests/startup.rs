//! Start-up as an operator meets it: signals at any moment of it, sockets of other processes on
//! our addresses, a host that lacks the interface or the addresses, a second instance on the
//! interface, too little privilege, and the messages each gives. Needs root; run serially: each
//! test has its own namespace, interfaces, subnet and instance.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use dnsfast::instance::{Instance, RUN_DIR};
use dnsfast_tests::{
    daemon::{START_DEADLINE, TestDaemon, pass_program, write_config},
    dns,
    host::TestHost,
    hot_zone,
};
use hickory_proto::rr::RecordType;

const TIMEOUT: Duration = Duration::from_secs(3);

/// A zone of `names` A records under `big.example.`: seconds to load in a debug build, a wide
/// window for signals to land in.
fn big_zone(dir: &Path, names: usize) -> PathBuf {
    use std::fmt::Write as _;
    let mut z = String::from(
        "$ORIGIN big.example.\n$TTL 60\n@ SOA ns1 h 1 7200 3600 1209600 60\n NS ns1\nns1 A 198.18.200.53\n",
    );
    for i in 0..names {
        let _ = writeln!(z, "h{i} A 198.18.{}.{}", (i >> 8) & 0xFF, i & 0xFF);
    }
    let p = dir.join("big.example.zone");
    std::fs::write(&p, z).unwrap();
    p
}

/// Whether `pid` blocks signal `sig` (its `SigBlk` mask in `/proc`).
fn blocks(pid: u32, sig: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// Waits until the freshly spawned `d` runs `main` (it blocks SIGHUP first thing).
fn wait_main(d: &mut TestDaemon) {
    let end = Instant::now() + Duration::from_secs(10);
    while !blocks(d.service.pid(), libc::SIGHUP) {
        assert!(
            d.service.exited().unwrap().is_none(),
            "exited: {}",
            d.service.log()
        );
        assert!(
            Instant::now() < end,
            "dnsfast never blocked SIGHUP: a SIGHUP while starting would kill it"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Sends `sig` every `every` until `d` reports ready; the signals sent and the time taken.
fn storm_until_ready(d: &mut TestDaemon, sig: i32, every: Duration) -> (usize, Duration) {
    let t = Instant::now();
    let mut sent = 0;
    loop {
        d.service.signal(sig).unwrap();
        sent += 1;
        if d.service.wait_for("READY=1", every).is_ok() {
            return (sent, t.elapsed());
        }
        if let Some(st) = d.service.exited().unwrap() {
            panic!(
                "dnsfast exited ({st}) after {sent} signals while starting:\n{}",
                d.service.log()
            );
        }
        assert!(
            t.elapsed() < START_DEADLINE,
            "never ready:\n{}",
            d.service.log()
        );
    }
}

fn answers_www(host: &TestHost) {
    let server: SocketAddr = (host.v4, 53).into();
    let r = dns::udp_exchange(
        server,
        &dns::query(3, "www.example.com.", RecordType::A, None),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(dns::rcode(&r).unwrap(), 0);
}

#[test]
fn sighup_while_starting_is_never_fatal() {
    let host = TestHost::new(30, "hup").unwrap();
    let _pass = pass_program(&host);
    let zdir = tempfile::tempdir().unwrap();
    let big = big_zone(zdir.path(), 50_000);
    let (config, dir) = write_config(
        &host,
        "hup",
        "native",
        &[("example.com.", &hot_zone()), ("big.example.", &big)],
        "",
    )
    .unwrap();
    let mut d = TestDaemon::spawn_with(&host, "hup", config, dir, &[]).unwrap();
    wait_main(&mut d);
    // SIGHUP from the first moment of main through zone loading, the program load and binding.
    let (sent, took) = storm_until_ready(&mut d, libc::SIGHUP, Duration::from_millis(2));
    println!("{sent} SIGHUPs during a {took:?} start-up");
    assert!(sent > 10, "the storm covered start-up ({sent} signals)");
    // They were kept for later: one reload once serving.
    d.service.wait_for("RELOADING=1", START_DEADLINE).unwrap();
    d.service.wait_for("READY=1", START_DEADLINE).unwrap();
    let log = d.service.log();
    assert!(
        log.contains("SIGHUP while starting: reloading once serving") && log.contains("reloaded:"),
        "{log}"
    );
    answers_www(&host);
    assert!(d.service.stop().unwrap().success());
}

#[test]
fn signals_while_starting_neither_slow_nor_strand_it() {
    let host = TestHost::new(31, "sigs").unwrap();
    let _pass = pass_program(&host);
    let zones = [("example.com.", hot_zone())];
    let refs: Vec<(&str, &Path)> = zones.iter().map(|(o, f)| (*o, f.as_path())).collect();
    let spawn = || {
        let (config, dir) = write_config(&host, "sigs", "native", &refs, "").unwrap();
        let mut d = TestDaemon::spawn_with(&host, "sigs", config, dir, &[]).unwrap();
        wait_main(&mut d);
        d
    };

    // Start-up time without signals, then under a SIGHUP every 5 ms: a signal pending during
    // the program load made the verifier give up and aya verify again with logs (0.4 s -> 9 s).
    let t = Instant::now();
    let mut d = spawn();
    d.service.wait_for("READY=1", START_DEADLINE).unwrap();
    let quiet = t.elapsed();
    assert!(d.service.stop().unwrap().success());
    let t = Instant::now();
    let mut d = spawn();
    let (sent, _) = storm_until_ready(&mut d, libc::SIGHUP, Duration::from_millis(5));
    let stormy = t.elapsed();
    println!("start-up: {quiet:?} quiet, {stormy:?} under {sent} SIGHUPs");
    let bound = (quiet * 3).max(quiet + Duration::from_secs(3));
    assert!(
        stormy < bound,
        "signals stretched start-up from {quiet:?} to {stormy:?}"
    );
    assert!(d.service.stop().unwrap().success());

    // SIGTERM at several moments of start-up: a prompt, clean exit that leaves nothing behind.
    let inst = Instance::lookup("sigs", Some(host.netns.as_str())).unwrap();
    for after in [0, 30, 100, 250] {
        let mut d = spawn();
        std::thread::sleep(Duration::from_millis(after));
        let t = Instant::now();
        d.service.signal(libc::SIGTERM).unwrap();
        let st = d.service.wait_exit(TIMEOUT).unwrap();
        let took = t.elapsed();
        let log = d.service.log();
        println!("SIGTERM {after} ms into start-up: exited {st} in {took:?}");
        assert!(st.success(), "{st}\n{log}");
        assert!(!inst.pin_dir().exists(), "pins left behind\n{log}");
        let lock = Path::new(RUN_DIR).join(inst.netns_id()).join("sigs.lock");
        assert!(!lock.exists(), "lock left behind");
        let ns_if = host.ns_if.clone();
        let attached = host
            .in_netns(move || dnsfast::preflight::xdp_program_on(&ns_if).unwrap())
            .unwrap();
        assert_eq!(attached, None, "XDP left attached\n{log}");
    }
}

/// `dnsfast run` that is expected to refuse to start: its output once it has exited (killed
/// after [`START_DEADLINE`] if it serves instead).
fn run_output(config: &Path, netns: &str) -> Output {
    let mut child = Command::new(dnsfast_tests::dnsfast_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--netns", netns])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + START_DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn check_output(config: &Path, netns: Option<&str>) -> Output {
    let mut c = Command::new(dnsfast_tests::dnsfast_bin());
    c.arg("check").arg("--config").arg(config);
    if let Some(ns) = netns {
        c.args(["--netns", ns]);
    }
    c.output().unwrap()
}

#[test]
fn a_foreign_reuseport_socket_on_our_address_is_refused() {
    let host = TestHost::new(32, "reuse").unwrap();
    let addr: SocketAddr = (host.v4, 53).into();
    // What a stray resolver or an old copy of a server might have left: SO_REUSEPORT on our
    // address. The kernel would spread our queries over it and us.
    let squatter = host
        .in_netns(move || {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            s
        })
        .unwrap();
    let zones = [("example.com.", hot_zone())];
    let refs: Vec<(&str, &Path)> = zones.iter().map(|(o, f)| (*o, f.as_path())).collect();
    let (config, dir) = write_config(&host, "reuse", "off", &refs, "").unwrap();
    let out = run_output(&config, &host.netns);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started beside a foreign socket: {err}"
    );
    let me = std::process::id();
    assert!(
        err.contains(
            "dnsfast.toml:3: server.listen: other processes have sockets on our addresses"
        ) && err.contains(&format!("udp {addr} held by pid {me} (")),
        "{err}"
    );
    assert!(err.contains("server.allow_shared_port = true"), "{err}");

    // Allowed on purpose: it starts, with a warning naming the socket.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("[server]\n", "[server]\nallow_shared_port = true\n"),
    )
    .unwrap();
    let d = TestDaemon::start_with(&host, "reuse", config, dir).unwrap();
    assert!(
        d.service
            .log()
            .contains(&format!("sharing our addresses with other sockets (server.allow_shared_port): udp {addr} held by pid {me}")),
        "{}",
        d.service.log()
    );
    drop(squatter);
}

#[test]
fn check_refuses_what_run_refuses_and_status_counts_in_keys() {
    let host = TestHost::new(33, "chk").unwrap();
    let zones = [("example.com.", hot_zone())];
    let refs: Vec<(&str, &Path)> = zones.iter().map(|(o, f)| (*o, f.as_path())).collect();
    let (config, _dir) = write_config(&host, "chk", "native", &refs, "").unwrap();
    let ok = check_output(&config, Some(&host.netns));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let original = std::fs::read_to_string(&config).unwrap();

    // No such interface: check says so, and so does run before it loads anything.
    std::fs::write(
        &config,
        original.replace(&format!("\"{}\"", host.ns_if), "\"nosuch0\""),
    )
    .unwrap();
    for out in [
        check_output(&config, Some(&host.netns)),
        run_output(&config, &host.netns),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(
                "dnsfast.toml:8: xdp.interface: no interface \"nosuch0\" in this network namespace"
            ),
            "{err}"
        );
        assert!(
            !err.contains("XDP program loaded"),
            "failed before loading: {err}"
        );
    }
    // A listen address the host does not have.
    std::fs::write(
        &config,
        original.replace(&host.v4.to_string(), "198.18.33.99"),
    )
    .unwrap();
    for out in [
        check_output(&config, Some(&host.netns)),
        run_output(&config, &host.netns),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains(
                    "dnsfast.toml:3: server.listen: 198.18.33.99 is not an address of this host"
                ),
            "{err}"
        );
    }

    // More hot keys than the maps hold: check names the key to raise; run serves the rest from
    // the daemon and status counts keys against a capacity in keys.
    let zdir = tempfile::tempdir().unwrap();
    let big = big_zone(zdir.path(), 300);
    std::fs::write(
        &config,
        original.replace("[xdp]\n", "[xdp]\nmax_hot_names = 100\n")
            + &format!(
                "[[zone]]\norigin = \"big.example.\"\nfile = \"{}\"\n",
                big.display()
            ),
    )
    .unwrap();
    let out = check_output(&config, Some(&host.netns));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("hot answers do not fit the XDP maps and would be answered by the daemon; raise xdp.max_hot_names = 100 to at least"),
        "{err}"
    );
    let _pass = pass_program(&host);
    let d =
        TestDaemon::start_with(&host, "chk", config.clone(), tempfile::tempdir().unwrap()).unwrap();
    let st = d.status().unwrap();
    assert_eq!(st["xdp"]["hot_keys"], 100, "{st}");
    assert_eq!(st["xdp"]["capacity"][0], 100);
    let compiled = st["hot_answers"].as_u64().unwrap();
    assert!(compiled > 300);
    assert!(
        err.contains(&format!("{} of {compiled} hot answers", compiled - 100)),
        "{err}"
    );
    let text = Command::new(dnsfast_tests::dnsfast_bin())
        .args(["status", "--instance", "chk", "--netns", &host.netns])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "100 of {compiled} hot keys in maps (capacity 100 keys,"
        )) && text.contains(&format!("{} hot keys did not fit", compiled - 100)),
        "{text}"
    );
}

#[test]
fn errors_name_the_file_line_setting_and_holder() {
    let host = TestHost::new(34, "errs").unwrap();
    let _pass = pass_program(&host);
    let dir = tempfile::tempdir().unwrap();
    let zones = [("example.com.", hot_zone())];
    let refs: Vec<(&str, &Path)> = zones.iter().map(|(o, f)| (*o, f.as_path())).collect();

    // A zone file that does not exist: the configuration line that names it.
    let cfg = dir.path().join("dnsfast.toml");
    std::fs::write(
        &cfg,
        "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"nonexistent.zone\"\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&check_output(&cfg, None).stderr).into_owned();
    assert!(
        err.contains("dnsfast.toml:5: zone.file: cannot open") && err.contains("nonexistent.zone"),
        "{err}"
    );
    // A type error names the key.
    std::fs::write(
        &cfg,
        "[server]\ntcp_idle_timeout = \"ten\"\n[xdp]\nmode = \"off\"\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&check_output(&cfg, None).stderr).into_owned();
    assert!(
        err.contains("dnsfast.toml:2: server.tcp_idle_timeout: invalid type"),
        "{err}"
    );
    // An $INCLUDE loop names the directive and the chain.
    std::fs::write(
        dir.path().join("main.zone"),
        "$TTL 60\n$INCLUDE loop1.inc\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("loop1.inc"), "$INCLUDE loop2.inc\n").unwrap();
    std::fs::write(dir.path().join("loop2.inc"), "\n$INCLUDE loop1.inc\n").unwrap();
    std::fs::write(
        &cfg,
        "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"main.zone\"\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&check_output(&cfg, None).stderr).into_owned();
    assert!(
        err.contains("loop2.inc:2: directive: $INCLUDE loop: main.zone:2 → loop1.inc:1 → loop2.inc:2 → loop1.inc"),
        "{err}"
    );
    // Bytes that are not UTF-8: line and offset.
    std::fs::write(
        dir.path().join("main.zone"),
        b"$TTL 60\n@ SOA ns1 h 1 2 3 4 5\nx TXT \"\xff\"\n".as_slice(),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&check_output(&cfg, None).stderr).into_owned();
    assert!(
        err.contains("main.zone:3: file: byte 0xff at offset") && err.contains("is not UTF-8"),
        "{err}"
    );

    // Without root: which privileges are missing, not "Permission denied" on a lock file.
    let (config, cdir) = write_config(&host, "errs", "native", &refs, "").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let readable = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        readable(cdir.path(), 0o755);
        readable(&config, 0o644);
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(dnsfast_tests::dnsfast_bin())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("dnsfast run needs root, or what this process lacks: CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_NET_BIND_SERVICE"),
        "{err}"
    );

    // A second instance on the same interface: who holds it, and no fallback to generic.
    let mut first = TestDaemon::start_with(&host, "errs", config.clone(), cdir).unwrap();
    let (second, _sdir) = write_config(&host, "errs2", "native", &refs, "").unwrap();
    let out = run_output(&second, &host.netns);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "xdp.interface: {} already has an XDP program attached: program \"dnsfast\"",
            host.ns_if
        )) && err.contains(&format!(
            "native mode), held by pid {} (dnsfast)",
            first.service.pid()
        )),
        "{err}"
    );
    assert!(!err.contains("falling back to generic"), "{err}");

    // A reload that changes a restart-only setting names it, and a failed reload is one line.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[server]\n", "[server]\ntcp_max_connections = 7\n"),
    )
    .unwrap();
    first.reload().unwrap();
    let log = first.service.log();
    assert!(
        log.contains(
            "reload: server.tcp_max_connections changed, which takes effect only on restart"
        ),
        "{log}"
    );
    let bad_a = first.dir().join("a.zone");
    let bad_b = first.dir().join("b.zone");
    std::fs::write(&bad_a, "$TTL 60\nwww A 198.18.0.1\n").unwrap();
    std::fs::write(&bad_b, "$TTL 60\nwww A 198.18.0.1\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}[[zone]]\norigin = \"a.test\"\nfile = \"{}\"\n[[zone]]\norigin = \"b.test\"\nfile = \"{}\"\n",
            bad_a.display(),
            bad_b.display()
        ),
    )
    .unwrap();
    first.reload().unwrap();
    let log = first.service.log();
    let line = log
        .lines()
        .find(|l| l.contains("reload failed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("ERROR") && line.contains("a.zone") && line.contains("b.zone"),
        "both zones' errors on the one line: {line}\n{log}"
    );
    answers_www(&host);
}
