//! `docs/conformance.md`, executed: the hostile-query table on the XDP path and the socket path,
//! the document and the table kept in step, and the protocol battery compared with Knot DNS.
//! Needs root; run serially.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use dnsfast_tests::{
    battery::{ask_all, cases},
    daemon::{TestDaemon, pass_program},
    dns::{self, Normal},
    host::TestHost,
    hostile::{Expect, Row, normal_query, rows},
    knot::Knot,
    workspace_root,
};

/// Per-query deadline: a local veth answers in well under a millisecond.
const TIMEOUT: Duration = Duration::from_secs(3);
/// How long to listen for an answer that must not come (a real one takes well under 1 ms).
const SILENCE: Duration = Duration::from_millis(300);

/// Sends `msg` to `server` and returns the first datagram it sends back within `wait`.
fn exchange(server: SocketAddr, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send(msg).unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Checks `reply` to `row` against `expect`.
fn check(row: &Row, expect: Expect, reply: Option<&[u8]>) -> Result<(), String> {
    let Some(r) = reply else {
        return if expect == Expect::NoAnswer {
            Ok(())
        } else {
            Err("no answer".into())
        };
    };
    let n = dns::normalize(r).map_err(|e| format!("unparseable answer {r:02x?}: {e:#}"))?;
    let rc = dns::rcode(r).map_err(|e| format!("{e:#}"))?;
    let qdcount = u16::from_be_bytes([r[4], r[5]]);
    if r[..2] != row.msg[..2] {
        return Err(format!("ID {:02x?} not echoed", &r[..2]));
    }
    if n.flags & 0x8000 == 0 {
        return Err("QR clear".into());
    }
    if n.flags & 0x00B0 != 0 {
        return Err(format!("RA, Z or AD set: flags {:#06x}", n.flags));
    }
    let aa = n.flags & 0x0400 != 0;
    let records = |s: &dns::Section| s.values().map(|set| set.rdata.len()).sum::<usize>();
    match expect {
        Expect::NoAnswer => Err(format!("answered: rcode {rc}")),
        Expect::Error {
            rcode: want,
            question,
            opt,
        } => {
            let question_ok = if question {
                qdcount == 1 && row.msg.get(12..12 + n.question.len()) == Some(&n.question[..])
            } else {
                qdcount == 0
            };
            let mut problems = Vec::new();
            if rc != want {
                problems.push(format!("rcode {rc}, want {want}"));
            }
            if aa {
                problems.push("AA set".into());
            }
            if !question_ok {
                problems.push(format!(
                    "QDCOUNT {qdcount}, question echoed: want {question}"
                ));
            }
            if n.edns.is_some() != opt {
                problems.push(format!("OPT present: {}, want {opt}", n.edns.is_some()));
            }
            if records(&n.answer) + records(&n.authority) + records(&n.additional) != 0 {
                problems.push("records in an error answer".into());
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        }
        Expect::Answer {
            rcode: want,
            answers,
        } => {
            if rc == want && aa && records(&n.answer) == answers && qdcount == 1 {
                Ok(())
            } else {
                Err(format!(
                    "rcode {rc} AA {aa} QDCOUNT {qdcount} with {} answers, want rcode {want}, \
                     AA, {answers} answers",
                    records(&n.answer)
                ))
            }
        }
    }
}

/// What each row got from the server on `host` over IPv4 and IPv6, after checking it against
/// `expect` and that a normal query is still answered right after. Failures are collected, not
/// thrown, so one run reports every row that is off.
fn run_table(
    host: &TestHost,
    path: &str,
    expect: fn(&Row) -> Expect,
    failures: &mut Vec<String>,
) -> BTreeMap<(String, SocketAddr), Option<Normal>> {
    let servers: [SocketAddr; 2] = [(host.v4, 53).into(), (host.v6, 53).into()];
    let mut got = BTreeMap::new();
    for row in rows() {
        for server in servers {
            let wait = if expect(&row) == Expect::NoAnswer {
                SILENCE
            } else {
                TIMEOUT
            };
            let reply = exchange(server, &row.msg, wait);
            if let Err(e) = check(&row, expect(&row), reply.as_deref()) {
                failures.push(format!("{} {} ({path}, {server}): {e}", row.id, row.what));
            }
            let normal = exchange(server, &normal_query(), TIMEOUT)
                .and_then(|r| dns::normalize(&r).ok())
                .filter(|n| n.answer.len() == 1);
            if normal.is_none() {
                failures.push(format!(
                    "{} ({path}, {server}): no answer to a normal query right after",
                    row.id
                ));
            }
            got.insert(
                (row.id.to_string(), server),
                reply.and_then(|r| dns::normalize(&r).ok()),
            );
        }
    }
    got
}

#[test]
fn hostile_table_on_both_paths() {
    let host = TestHost::new(17, "hostile").unwrap();
    let _pass = pass_program(&host);
    let mut failures = Vec::new();

    let d = TestDaemon::start_battery(&host, "hostile", "native").unwrap();
    assert_eq!(d.status().unwrap()["xdp"]["attached"], "native");
    let with_xdp = run_table(&host, "XDP", |r| r.expect, &mut failures);
    let passed: u64 = ["pass_malformed", "pass_not_hot", "pass_edns", "pass_short"]
        .iter()
        .map(|c| d.xdp_counter(c).unwrap())
        .sum();
    let dropped =
        d.xdp_counter("drop_short_header").unwrap() + d.xdp_counter("drop_response").unwrap();
    drop(d);

    let d = TestDaemon::start_battery(&host, "hostile", "off").unwrap();
    let without_xdp = run_table(&host, "sockets", |r| r.expect, &mut failures);
    drop(d);

    for (k, a) in &with_xdp {
        if without_xdp.get(k) != Some(a) {
            failures.push(format!(
                "{} over {}: XDP path {a:?}, socket path {:?}",
                k.0, k.1, without_xdp[k]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The XDP program passed the malformed rows up or dropped the unanswerable ones; none of them
    // left as a reply of its own making (the comparison above proves that).
    assert!(
        passed > 0 && dropped > 0,
        "passed {passed}, dropped {dropped}"
    );
}

/// The table's Knot column is what Knot does: the differences `docs/conformance.md` lists are
/// real, and a Knot upgrade that changes them shows up here.
#[test]
fn hostile_table_knot_column() {
    let host = TestHost::new(19, "knot-table").unwrap();
    let knot = Knot::start(
        &host,
        &dnsfast_tests::battery::zones(),
        Duration::from_mins(1),
    )
    .unwrap();
    let mut failures = Vec::new();
    run_table(&host, "Knot", |r| r.knot, &mut failures);
    drop(knot);
    assert!(
        failures.is_empty(),
        "Knot differs from the table's Knot column in {} places:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn conformance_doc_lists_every_row() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/conformance.md")).unwrap();
    let in_doc: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| H"))
        .filter_map(|l| l.get(..2).filter(|d| d.bytes().all(|b| b.is_ascii_digit())))
        .collect();
    let in_code: Vec<String> = rows().iter().map(|r| r.id[1..].to_string()).collect();
    assert_eq!(
        in_doc, in_code,
        "docs/conformance.md's hostile table and tests/src/hostile.rs list different rows"
    );
    let ids: std::collections::BTreeSet<_> = in_code.iter().collect();
    assert_eq!(ids.len(), in_code.len(), "row IDs are unique");
}

/// Battery cases where we answer differently from Knot on purpose (see `docs/conformance.md`,
/// "Differences from Knot DNS"): case → why.
const KEPT_DIFFERENCES: &[(&str, &str)] = &[
    (
        "CNAME chain past the cap",
        "we follow 8 CNAMEs within a zone, Knot 5; both end with the last CNAME followed",
    ),
    (
        "www A +ecs",
        "we echo Client Subnet with SCOPE 0 for an answer that does not depend on it (RFC 7871 \
         §7.2.1: an ECS-aware server includes the option in every answer from its data); Knot \
         without its geoip module ignores the option; the records are the same",
    ),
];

#[test]
fn battery_matches_knot() {
    let host = TestHost::new(18, "knot").unwrap();
    let cases = cases();

    let d = TestDaemon::start_battery(&host, "knot", "off").unwrap();
    let ours = ask_all(&host, &cases, TIMEOUT);
    drop(d);
    let knot = Knot::start(
        &host,
        &dnsfast_tests::battery::zones(),
        Duration::from_mins(1),
    )
    .unwrap();
    let theirs = ask_all(&host, &cases, TIMEOUT);
    drop(knot);

    let mut same = 0;
    let mut kept = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for ((what, a), (_, b)) in ours.iter().zip(&theirs) {
        let case = what.rsplitn(3, ' ').last().unwrap_or(what);
        let kept_reason = KEPT_DIFFERENCES.iter().find(|(c, _)| *c == case);
        match (a == b, kept_reason) {
            (true, None) => same += 1,
            (false, Some((c, _))) => {
                kept.insert(*c);
            }
            (false, None) => failures.push(format!("{what}:\n  dnsfast {a:?}\n  knot    {b:?}")),
            (true, Some((c, _))) => failures.push(format!(
                "{what}: listed as a kept difference ({c}) but answers agree: update the list"
            )),
        }
    }
    eprintln!(
        "{}: {} answers compared ({} cases × IPv4/IPv6 × UDP/TCP): {same} identical, {} kept \
         differences in {} cases",
        Knot::version().unwrap_or_default(),
        ours.len(),
        cases.len(),
        ours.len() - same - failures.len(),
        kept.len()
    );
    assert!(
        failures.is_empty(),
        "{} answers differ from Knot's:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
