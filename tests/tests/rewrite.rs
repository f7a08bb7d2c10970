//! The atomic-update scheme under load: while a client queries a test host as fast as one
//! synchronous client can, the answers of every name are rewritten round after round (switching
//! between small and large slots), and some names are removed and re-added. Every reply must be
//! one whole answer of one generation for the name asked, never a mix, never lost, and never
//! passed to the daemon unless the name was removed.
//! Needs root; runs serially.
//!
//! What it catches: a slot written while reachable (an in-place rewrite tears answers within a
//! few thousand rounds here). What it cannot provoke on demand: a reader stalled across a whole
//! round (a preempted vCPU) meeting a slot recycled without a grace period, and a lookup meeting
//! the few nanoseconds in which a bucket's inline answer is written (an unprotected in-place
//! rewrite passes this test); the `mapsync` unit tests check the rules that make those safe on
//! every planned operation instead (a slot reused only after a grace period; an inline answer
//! written only while the bucket's slot points elsewhere).

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use dnsfast::{
    config::XdpMode,
    hot::{Change, HotAnswer, HotKey},
    mapsync::Capacity,
    xdp::Dataplane,
};
use dnsfast_common::{
    maps::{CFG_ANSWER, XdpConfig},
    stats::{COUNTER_NAMES, Counter},
    wire::{TYPE_A, TYPE_AAAA},
};
use dnsfast_tests::{dns, host::TestHost, service::Service};
use hickory_proto::{
    op::Message,
    rr::{Name, RData, RecordType},
    serialize::binary::BinEncodable,
};

const NAMES: u8 = 32;
/// Names 0..REMOVABLE disappear in every other full round and come back in the next.
const REMOVABLE: u8 = 4;
/// Bounds of the load: whichever comes first.
const MAX_QUERIES: u32 = 150_000;
const MAX_TIME: Duration = Duration::from_secs(25);

/// Even names fit `HOT_TABLE` (at most 32 octets); odd ones are longer and live in the hash
/// maps, so both lookup paths are rewritten under load.
fn name(i: u8) -> String {
    if i.is_multiple_of(2) {
        format!("n{i:02}.example.com.")
    } else {
        format!("n{i:02}.a-name-too-long-for-the-table.example.com.")
    }
}

fn key(i: u8, qtype: u16) -> HotKey {
    HotKey::new(
        &Name::from_ascii(name(i)).unwrap().to_bytes().unwrap(),
        qtype,
        0,
    )
}

/// Records of name `i` in generation `g`. Counts stay within what a veth frame can grow by
/// (about 200 bytes), so every answer is served from XDP, and cross the small/large boundary.
fn a_count(g: u32, i: u8) -> usize {
    1 + ((g % 16) as usize + usize::from(i)) % 12
}
fn aaaa_count(g: u32, i: u8) -> usize {
    1 + ((g % 16) as usize + usize::from(i)) % 7
}

fn answer(g: u32, i: u8, qtype: u16) -> Arc<HotAnswer> {
    let rdatas: Vec<RData> = if qtype == TYPE_A {
        (0..a_count(g, i))
            .map(|k| {
                RData::A(
                    std::net::Ipv4Addr::new(198, 19, i, (((g % 16) << 4) as u8) | k as u8).into(),
                )
            })
            .collect()
    } else {
        (0..aaaa_count(g, i))
            .map(|k| {
                let gg = (g % 65_536) as u16;
                RData::AAAA(
                    std::net::Ipv6Addr::new(
                        0x2001,
                        2,
                        0,
                        0xff00 | u16::from(i),
                        gg,
                        0,
                        0,
                        k as u16,
                    )
                    .into(),
                )
            })
            .collect()
    };
    Arc::new(HotAnswer::from_rrset(60, &rdatas).unwrap())
}

/// Names rewritten in every round; the others every [`FULL_EVERY`] rounds, when names
/// `0..REMOVABLE` also disappear or come back.
const CHURN: std::ops::Range<u8> = 30..32;
const FULL_EVERY: u32 = 16;

fn generation(g: u32) -> Vec<Change> {
    let full = g.is_multiple_of(FULL_EVERY);
    let removed = full && (g / FULL_EVERY) % 2 == 1;
    let mut out = Vec::new();
    for i in (0..NAMES).filter(|i| full || CHURN.contains(i)) {
        for t in [TYPE_A, TYPE_AAAA] {
            let gone = removed && i < REMOVABLE;
            out.push(Change {
                key: key(i, t),
                answer: (!gone).then(|| answer(g, i, t)),
            });
        }
    }
    out
}

/// Checks one reply to a query for name `i`, type `qtype`; returns whether it was REFUSED.
fn check(reply: &[u8], i: u8, qtype: u16) -> Result<bool, String> {
    let m = Message::from_vec(reply).map_err(|e| format!("unparseable reply: {e}"))?;
    let rcode = reply[3] & 0xF;
    if rcode == 5 {
        return if i < REMOVABLE {
            Ok(true)
        } else {
            Err(format!("REFUSED for n{i:02}, never removed"))
        };
    }
    if rcode != 0 || m.answers.is_empty() {
        return Err(format!(
            "rcode {rcode} with {} answers for n{i:02}",
            m.answers.len()
        ));
    }
    let mut gens = std::collections::BTreeSet::new();
    let mut ks = std::collections::BTreeSet::new();
    for r in &m.answers {
        if !r.name.to_ascii().eq_ignore_ascii_case(&name(i))
            || u16::from(r.record_type()) != qtype
            || r.ttl != 60
        {
            return Err(format!("record {r} in the answer for n{i:02} type {qtype}"));
        }
        match &r.data {
            RData::A(a) => {
                let o = a.0.octets();
                if o[..3] != [198, 19, i] {
                    return Err(format!("n{i:02} got {} (another name's address)", a.0));
                }
                gens.insert(u32::from(o[3] >> 4));
                ks.insert(o[3] & 0xF);
            }
            RData::AAAA(a) => {
                let s = a.0.segments();
                if s[..4] != [0x2001, 2, 0, 0xff00 | u16::from(i)] {
                    return Err(format!("n{i:02} got {} (another name's address)", a.0));
                }
                gens.insert(u32::from(s[4]) % 16);
                ks.insert(s[7] as u8);
            }
            other => return Err(format!("unexpected data {other:?}")),
        }
    }
    if gens.len() != 1 {
        return Err(format!(
            "n{i:02} type {qtype}: records of generations {gens:?} in one answer (torn)"
        ));
    }
    let g = *gens.first().unwrap();
    let want = if qtype == TYPE_A {
        a_count(g, i)
    } else {
        aaaa_count(g, i)
    };
    if m.answers.len() != want || ks.len() != want || ks.last().copied() != Some(want as u8 - 1) {
        return Err(format!(
            "n{i:02} type {qtype} generation {g}: {} records, want {want} (torn)",
            m.answers.len()
        ));
    }
    Ok(false)
}

#[test]
fn answers_rewritten_under_load_are_never_torn() {
    let host = TestHost::new(16, "rewrite").unwrap();
    let mut pass = std::process::Command::new(dnsfast_tests::dnsfast_bin());
    pass.args(["pass", "--interface", &host.host_if]);
    let _pass = Service::start("pass", pass, Duration::from_secs(30)).unwrap();

    // Whatever the program passes up (removed names) gets REFUSED from this stand-in daemon.
    let stop = Arc::new(AtomicBool::new(false));
    let responder = host
        .in_netns({
            let v4 = host.v4;
            move || UdpSocket::bind((v4, 53)).unwrap()
        })
        .unwrap();
    responder
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let responder_stop = Arc::clone(&stop);
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !responder_stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = responder.recv_from(&mut buf)
                && n >= 12
            {
                buf[2] = 0x80 | (buf[2] & 0x01);
                buf[3] = 5;
                let _ = responder.send_to(&buf[..n], from);
            }
        }
    });

    // The client: synchronous queries, every reply checked; starts once the program is attached.
    let server: SocketAddr = (host.v4, 53).into();
    let client_stop = Arc::clone(&stop);
    let (attached_tx, attached_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        if attached_rx.recv().is_err() {
            return (
                0,
                0,
                0,
                vec!["the writer never attached the program".to_string()],
                Duration::ZERO,
            );
        }
        let start = Instant::now();
        let (mut sent, mut lost, mut refused) = (0u32, 0u32, 0u32);
        let mut errors = Vec::new();
        let mut rng = 0x9E37_79B9u32;
        while sent < MAX_QUERIES && start.elapsed() < MAX_TIME {
            rng = rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            // Half the queries ask for the names rewritten in every round.
            let i = if (rng >> 28) & 1 == 0 {
                CHURN.start + ((rng >> 8) % u32::from(CHURN.end - CHURN.start)) as u8
            } else {
                ((rng >> 8) % u32::from(NAMES)) as u8
            };
            let qtype = if (rng >> 20) & 1 == 0 {
                RecordType::A
            } else {
                RecordType::AAAA
            };
            let q = dns::query((sent & 0xFFFF) as u16, &name(i), qtype, Some((1232, false)));
            sent += 1;
            match dns::udp_exchange_on(&sock, server, &q, Duration::from_secs(1)) {
                Ok(r) => match check(&r, i, u16::from(qtype)) {
                    Ok(true) => refused += 1,
                    Ok(false) => {}
                    Err(e) => errors.push(e),
                },
                Err(_) => lost += 1,
            }
        }
        client_stop.store(true, Ordering::Relaxed);
        (sent, lost, refused, errors, start.elapsed())
    });

    // The writer, in the namespace where the program is attached: rewrite until the client ends.
    let (rounds, counters) = host
        .in_netns({
            let ns_if = host.ns_if.clone();
            let v4 = host.v4;
            let stop = Arc::clone(&stop);
            move || {
                let mut dp = Dataplane::load(
                    Capacity {
                        entries: 128,
                        small: 256,
                        large: 256,
                        sets: 16,
                        steered: 4,
                        geo: 16,
                    },
                    None,
                )
                .unwrap();
                let mut cfg = XdpConfig::zeroed();
                cfg.flags = CFG_ANSWER;
                cfg.port = 53;
                cfg.v4_count = 1;
                cfg.v4[0] = v4.octets();
                dp.set_config(&cfg).unwrap();
                dp.apply(&generation(0)).unwrap();
                assert_eq!(
                    dp.attach(&ns_if, XdpMode::Native).unwrap(),
                    dnsfast::xdp::Attached::Native
                );
                attached_tx.send(()).unwrap();
                let mut g = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    g += 1;
                    let st = dp.apply(&generation(g)).unwrap();
                    assert_eq!(st.skipped, 0);
                }
                (g, dp.counters().unwrap())
            }
        })
        .unwrap();
    let (sent, lost, refused, errors, took) = client.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();

    let c = |x: Counter| counters[x as usize];
    eprintln!(
        "rewrite under load: {sent} queries in {took:?} ({:.0}/s), {rounds} rewrite rounds \
         ({} keys every round, all {} every {FULL_EVERY}), {refused} REFUSED while removed, {lost} lost; \
         XDP answered {}",
        f64::from(sent) / took.as_secs_f64(),
        2 * (CHURN.end - CHURN.start),
        2 * NAMES,
        c(Counter::Answered)
    );
    let nonzero: Vec<String> = COUNTER_NAMES
        .iter()
        .zip(&counters)
        .filter(|(_, v)| **v > 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    eprintln!("XDP counters: {}", nonzero.join(" "));
    assert!(
        errors.is_empty(),
        "{} bad replies, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(
        lost, 0,
        "replies lost (a bad checksum is dropped by the client's kernel)"
    );
    assert!(
        rounds >= 1_000,
        "only {rounds} rewrite rounds ran: the test did not exercise the scheme"
    );
    assert!(refused > 0, "removed names were queried while removed");
    assert!(
        c(Counter::Answered) + u64::from(refused) >= u64::from(sent),
        "answered in XDP"
    );
    for bad in [
        Counter::PassBadSlot,
        Counter::PassRewrite,
        Counter::DropRewrite,
        Counter::PassNoRoom,
    ] {
        assert_eq!(c(bad), 0, "{}", COUNTER_NAMES[bad as usize]);
    }
}
