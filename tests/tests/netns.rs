//! The daemon on a test host (network namespace + veth, native XDP), queried from this
//! namespace over IPv4 and IPv6, UDP and TCP. Needs root; run serially (`--test-threads=1`):
//! each test has its own namespace, interfaces, subnet and instance (so its own pins).

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use dnsfast_tests::{
    battery::{self, NO_ROOM_ON_VETH, ask_all, cases},
    daemon::{TestDaemon, pass_program},
    dns,
    host::TestHost,
    hot_zone,
};
use hickory_proto::rr::RecordType;

/// Per-query deadline: a local veth answers in well under a millisecond.
const TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn xdp_on_and_off_answer_alike() {
    let host = TestHost::new(11, "battery").unwrap();
    let _pass = pass_program(&host);
    let cases = cases();
    let hot_cases = cases.iter().filter(|c| c.hot).count() as u64;

    // The hot answers' bytes, record order included, from one client port: XDP and the daemon
    // take the order from the query alike.
    let sock = std::net::UdpSocket::bind((host.v4_peer, 0)).unwrap();
    let ordered = |d: &TestDaemon| {
        // (No XDP counters with XDP off.)
        let before = d.xdp_counter("answered").unwrap_or(0);
        let replies: Vec<Vec<u8>> = (0..48u16)
            .map(|id| {
                let t = [RecordType::A, RecordType::AAAA][usize::from(id % 2)];
                let edns = (id % 3 == 0).then_some((1232, id % 4 == 0));
                let q = dns::query(id * 977, "www.example.com.", t, edns);
                dns::udp_exchange_on(&sock, (host.v4, 53).into(), &q, TIMEOUT).unwrap()
            })
            .collect();
        (replies, d.xdp_counter("answered").unwrap_or(0) - before)
    };

    let on = TestDaemon::start_battery(&host, "battery", "native").unwrap();
    let st = on.status().unwrap();
    assert_eq!(st["xdp"]["attached"], "native", "native XDP on veth");
    // Queries with a Client Subnet option are answered by the program's ECS stage.
    let answered = |d: &TestDaemon| {
        d.xdp_counter("answered").unwrap() + d.xdp_counter("answered_ecs").unwrap()
    };
    let answered_before = answered(&on);
    let with_xdp = ask_all(&host, &cases, TIMEOUT);
    // Every hot query over UDP (IPv4 and IPv6) was answered in the kernel, nothing else was;
    // except that a big answer may find no room to grow the veth frame (whether it does depends
    // on the buffer the kernel copied the query into), and then the daemon answers it.
    let answered = answered(&on) - answered_before;
    let no_room = on.xdp_counter("pass_no_room").unwrap();
    assert!(
        no_room <= 2 * NO_ROOM_ON_VETH.len() as u64,
        "{no_room} passed for room"
    );
    assert_eq!(
        answered + no_room,
        2 * hot_cases,
        "{}",
        on.status().unwrap()["xdp"]["counters"]
    );
    assert_eq!(on.xdp_counter("pass_bad_slot").unwrap(), 0);
    assert_eq!(on.xdp_counter("pass_rewrite").unwrap(), 0);
    assert_eq!(on.xdp_counter("drop_rewrite").unwrap(), 0);
    assert_eq!(
        on.server_counter("udp_queries").unwrap(),
        2 * (cases.len() as u64 - hot_cases) + no_room
    );
    // Over TCP the daemon answers the hot names with the same builder (the 16 AAAA without EDNS
    // too: no 512-byte limit there), over UDP those without room, and on both the NSID
    // requests for hot names.
    let hot_over_tcp = hot_cases + 1;
    let daemon_hot = cases
        .iter()
        .filter(|c| battery::DAEMON_HOT.contains(&c.what.as_str()))
        .count() as u64;
    assert_eq!(daemon_hot, battery::DAEMON_HOT.len() as u64);
    assert_eq!(
        on.server_counter("hot_answers").unwrap(),
        2 * hot_over_tcp + no_room + 2 * 2 * daemon_hot
    );
    let (on_bytes, in_xdp) = ordered(&on);
    assert_eq!(in_xdp, 48, "all answered in XDP");
    drop(on);

    let off = TestDaemon::start_battery(&host, "battery", "off").unwrap();
    assert_eq!(off.status().unwrap()["xdp"]["mode"], "off");
    let without_xdp = ask_all(&host, &cases, TIMEOUT);
    assert_eq!(
        off.server_counter("udp_queries").unwrap(),
        2 * cases.len() as u64
    );
    let (off_bytes, _) = ordered(&off);
    // The first A record's address (header 12 + question 21 + record head 12).
    let leads: std::collections::BTreeSet<&[u8]> =
        on_bytes.iter().step_by(2).map(|r| &r[45..49]).collect();
    // (24 draws over three records: all lead with the same record with probability 3^-23.)
    assert!(leads.len() > 1, "the lead varies with the query");
    for (i, (a, b)) in on_bytes.iter().zip(&off_bytes).enumerate() {
        assert_eq!(
            a, b,
            "query {i}: XDP and the daemon order the records differently"
        );
    }
    drop(off);

    for ((what, a), (_, b)) in with_xdp.iter().zip(&without_xdp) {
        assert_eq!(a, b, "{what}: XDP on and off differ");
    }

    // Spot checks of what both gave.
    let find = |w: &str| &with_xdp.iter().find(|(k, _)| k.starts_with(w)).unwrap().1;
    let www = find("www A udp");
    assert_eq!(www.flags, 0x8500, "QR AA RD, NOERROR");
    assert_eq!(
        www.answer[&("www.example.com.".into(), RecordType::A)]
            .rdata
            .len(),
        3
    );
    assert_eq!(
        find("16 AAAA, 512 limit (TC) udp").flags & 0x0200,
        0x0200,
        "TC over UDP"
    );
    assert!(
        find("16 AAAA, 512 limit (TC) tcp")
            .answer
            .values()
            .next()
            .is_some_and(|s| s.rdata.len() == 16)
    );
    assert_eq!(find("NXDOMAIN udp").flags & 0xF, 3);
    assert_eq!(find("outside our zones udp").flags & 0xF, 5, "REFUSED");
    assert_eq!(find("trailing byte udp").flags & 0xF, 1, "FORMERR");
    assert_eq!(
        find("EDNS version 1 udp")
            .edns
            .as_ref()
            .map(|e| e.ext_rcode),
        Some(1),
        "BADVERS"
    );
    assert!(
        find("www A +ecs udp")
            .answer
            .values()
            .next()
            .is_some_and(|s| s.rdata.len() == 3)
    );
}

#[test]
fn responses_get_no_answer_and_the_server_keeps_answering() {
    let host = TestHost::new(12, "reflect").unwrap();
    let _pass = pass_program(&host);
    let d =
        TestDaemon::start(&host, "reflect", "native", &[("example.com.", &hot_zone())]).unwrap();
    let server: SocketAddr = (host.v4, 53).into();
    let mut resp = dns::query(1, "www.example.com.", RecordType::A, None);
    resp[2] |= 0x80;
    assert!(
        dns::udp_exchange(server, &resp, Duration::from_millis(300)).is_err(),
        "a QR=1 message is never answered"
    );
    assert!(dns::udp_exchange(server, &[1, 2, 3], Duration::from_millis(300)).is_err());
    assert_eq!(d.xdp_counter("drop_response").unwrap(), 1);
    assert_eq!(d.xdp_counter("drop_short_header").unwrap(), 1);
    let ok = dns::udp_exchange(
        server,
        &dns::query(2, "www.example.com.", RecordType::A, None),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(dns::rcode(&ok).unwrap(), 0);
}

#[test]
fn tcp_pipelining_and_split_queries() {
    let host = TestHost::new(13, "tcp").unwrap();
    let _pass = pass_program(&host);
    let _d = TestDaemon::start(&host, "tcp", "native", &[("example.com.", &hot_zone())]).unwrap();
    let server: SocketAddr = (host.v6, 53).into();
    let msgs: Vec<Vec<u8>> = (0..20u16)
        .map(|i| {
            dns::query(
                i,
                if i % 2 == 0 {
                    "www.example.com."
                } else {
                    "nope.example.com."
                },
                RecordType::A,
                None,
            )
        })
        .collect();
    let replies = dns::tcp_exchange(server, &msgs, TIMEOUT).unwrap();
    for (m, r) in msgs.iter().zip(&replies) {
        assert_eq!(&r[..2], &m[..2], "answers in order, matching IDs");
    }
    // A query written in two pieces, with a pause between them, is still one query.
    let mut s = std::net::TcpStream::connect_timeout(&server, TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let q = dns::query(77, "www.example.com.", RecordType::AAAA, None);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed[..7]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&framed[7..]).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r[..2], &[0, 77]);
    assert_eq!(
        dns::normalize(&r)
            .unwrap()
            .answer
            .values()
            .next()
            .unwrap()
            .rdata
            .len(),
        2
    );
}

#[test]
fn reload_applies_good_zones_and_keeps_serving_through_bad_ones() {
    let host = TestHost::new(14, "reload").unwrap();
    let _pass = pass_program(&host);
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.com.zone");
    let head = "$TTL 300\n@ SOA ns1 h 1 7200 3600 1209600 60\n NS ns1\nns1 A 198.18.14.53\n";
    std::fs::write(&zone, format!("{head}www 60 A 198.18.14.10\n")).unwrap();
    let mut d = TestDaemon::start(&host, "reload", "native", &[("example.com.", &zone)]).unwrap();
    let server: SocketAddr = (host.v4, 53).into();
    let ask = || {
        let r = dns::udp_exchange(
            server,
            &dns::query(5, "www.example.com.", RecordType::A, None),
            TIMEOUT,
        )
        .unwrap();
        dns::normalize(&r)
            .unwrap()
            .answer
            .values()
            .next()
            .map(|s| s.rdata.iter().next().unwrap().clone())
    };
    assert_eq!(ask(), Some(vec![198, 18, 14, 10]));

    // A broken zone: the reload fails, the old answers stay, in XDP and in the daemon.
    std::fs::write(&zone, format!("{head}www 60 A 198.18.14.300\n")).unwrap();
    d.reload().unwrap();
    assert_eq!(ask(), Some(vec![198, 18, 14, 10]));
    let st = d.status().unwrap();
    let err = st["last_reload_error"].as_str().unwrap();
    assert!(
        err.contains("example.com.zone:5: rdata:"),
        "error names file, line and field: {err}"
    );
    assert_eq!(st["reloads"], 0);

    // Fixed: the new answer is served from the XDP maps at once.
    std::fs::write(&zone, format!("{head}www 60 A 198.18.14.11\n")).unwrap();
    d.reload().unwrap();
    let before = d.xdp_counter("answered").unwrap();
    assert_eq!(ask(), Some(vec![198, 18, 14, 11]));
    assert_eq!(d.xdp_counter("answered").unwrap(), before + 1);
    assert!(d.status().unwrap()["last_reload_error"].is_null());
}

#[test]
fn a_failed_map_update_is_rebuilt_and_xdp_answers_again() {
    let host = TestHost::new(37, "mapfail").unwrap();
    let _pass = pass_program(&host);
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.com.zone");
    let head = "$TTL 300\n@ SOA ns1 h 1 7200 3600 1209600 60\n NS ns1\nns1 A 198.18.37.53\n";
    // `old` (a table bucket) and `long` (a hash-map key: over 32 octets) go away in the reload
    // whose update fails: only a rebuild that clears the maps removes them from XDP.
    let long_name = "a-name-long-enough-for-the-hash-maps";
    std::fs::write(
        &zone,
        format!(
            "{head}www 60 A 198.18.37.10\nold 60 A 198.18.37.20\n{long_name} 60 A 198.18.37.21\n"
        ),
    )
    .unwrap();
    let (config, cdir) = dnsfast_tests::daemon::write_config(
        &host,
        "mapfail",
        "native",
        &[("example.com.", &zone)],
        "",
    )
    .unwrap();
    // The first update after the start fails before its first map operation, as one the kernel
    // refuses would (the test hook of `xdp::Dataplane`, debug builds only).
    let mut d = TestDaemon::spawn_with(
        &host,
        "mapfail",
        config,
        cdir,
        &["env", "DNSFAST_TEST_FAIL_MAP_UPDATE=0"],
    )
    .unwrap();
    d.service
        .wait_for("READY=1", dnsfast_tests::daemon::START_DEADLINE)
        .unwrap();
    let server: SocketAddr = (host.v4, 53).into();
    let ask = |name: &str| {
        let r =
            dns::udp_exchange(server, &dns::query(5, name, RecordType::A, None), TIMEOUT).unwrap();
        let rcode = dns::rcode(&r).unwrap();
        let n = dns::normalize(&r).unwrap();
        (
            rcode,
            n.answer
                .values()
                .next()
                .map(|s| s.rdata.iter().next().unwrap().clone()),
        )
    };
    assert_eq!(ask("www.example.com.").1, Some(vec![198, 18, 37, 10]));

    // A reload that changes one answer, removes a name and adds one: its map update fails.
    std::fs::write(
        &zone,
        format!("{head}www 60 A 198.18.37.11\nnew 60 A 198.18.37.30\n"),
    )
    .unwrap();
    d.reload().unwrap();
    let log = d.service.log();
    assert!(
        log.contains("updating the XDP maps failed (injected map update failure")
            && log.contains("XDP maps rebuilt in"),
        "{log}"
    );
    let st = d.status().unwrap();
    assert_eq!(st["xdp"]["maps"]["failures"], 1, "{st}");
    assert_eq!(st["xdp"]["maps"]["recoveries"], 1, "{st}");
    assert!(st["xdp"]["maps"]["answering_off"].is_null(), "{st}");
    // The new configuration, answered from the rebuilt maps by XDP again.
    let before = d.xdp_counter("answered").unwrap();
    assert_eq!(ask("www.example.com.").1, Some(vec![198, 18, 37, 11]));
    assert_eq!(ask("new.example.com.").1, Some(vec![198, 18, 37, 30]));
    assert_eq!(ask("old.example.com.").0, 3, "removed: NXDOMAIN");
    assert_eq!(
        ask(&format!("{long_name}.example.com.")).0,
        3,
        "removed: NXDOMAIN"
    );
    assert_eq!(
        d.xdp_counter("answered").unwrap(),
        before + 2,
        "both hot answers from XDP"
    );
    // Later updates go the usual way.
    std::fs::write(&zone, format!("{head}www 60 A 198.18.37.12\n")).unwrap();
    d.reload().unwrap();
    assert_eq!(ask("www.example.com.").1, Some(vec![198, 18, 37, 12]));
    assert_eq!(d.status().unwrap()["xdp"]["maps"]["recoveries"], 1);
}

#[test]
fn one_instance_per_name_and_namespace_and_clean_exit() {
    let host = TestHost::new(15, "lock").unwrap();
    let _pass = pass_program(&host);
    let mut d =
        TestDaemon::start(&host, "lock", "native", &[("example.com.", &hot_zone())]).unwrap();
    let pins = PathBuf::from(d.status().unwrap()["xdp"]["pin_dir"].as_str().unwrap());
    assert!(pins.join("HOT_TABLE").exists() && pins.join("STATS").exists());
    let out = std::process::Command::new(dnsfast_tests::dnsfast_bin())
        .arg("run")
        .arg("--config")
        .arg(&d.config)
        .args(["--netns", &host.netns])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains(&d.service.pid().to_string()),
        "{err}"
    );
    let status = d.service.stop().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(!pins.exists(), "pins removed on exit");
    // Detached: a query now goes to nobody.
    let server: SocketAddr = (host.v4, 53).into();
    assert!(
        dns::udp_exchange(
            server,
            &dns::query(1, "www.example.com.", RecordType::A, None),
            Duration::from_millis(300)
        )
        .is_err()
    );
    drop(d);

    // What a crashed run of another layout version left (a pinned map here) is removed at start:
    // the instance lock covers every version.
    let stale = pins.parent().unwrap().join("v1");
    let _ = std::fs::remove_dir_all(&stale);
    std::fs::create_dir_all(&stale).unwrap();
    let made = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(stale.join("STATS"))
        .args(["type", "array", "key", "4", "value", "4", "entries", "1"])
        .args(["name", "dnsfast_stale"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "bpftool map create: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut d =
        TestDaemon::start(&host, "lock", "native", &[("example.com.", &hot_zone())]).unwrap();
    assert!(
        !stale.exists(),
        "stale pins of another layout removed at start"
    );
    assert!(pins.join("HOT_TABLE").exists());
    assert!(d.service.stop().unwrap().success());
    assert!(
        !pins.parent().unwrap().exists(),
        "instance directory removed on exit"
    );
}

#[test]
fn check_reports_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("bad.zone");
    std::fs::write(&zone, "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n NS ns1\nns1 A 198.18.0.1\nwww CNAME x\nwww A 198.18.0.2\n").unwrap();
    let cfg = dir.path().join("dnsfast.toml");
    std::fs::write(
        &cfg,
        format!(
            "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"{}\"\n",
            zone.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(dnsfast_tests::dnsfast_bin())
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.zone:5: type: CNAME at www.example.com. beside other data (A at line 6)"),
        "{err}"
    );

    std::fs::write(&cfg, "[xdp]\nmode = \"off\"\nbogus = 1\n").unwrap();
    let out = std::process::Command::new(dnsfast_tests::dnsfast_bin())
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("dnsfast.toml:3:") && err.contains("bogus"),
        "{err}"
    );
}
