//! The XDP program on crafted frames through `BPF_PROG_RUN`: for each frame the action, the
//! counter that recorded it, and for `XDP_TX` the reply decoded field by field with both
//! checksums recomputed here, and its DNS payload compared with the daemon's answer to the same
//! query. Needs root (loads a BPF program); runs serially.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex, OnceLock},
    time::SystemTime,
};

use dnsfast::{
    answer::Zones,
    compile::Snapshot,
    config::{EcsPolicy, Identity},
    hot::{Change, HotAnswer, HotKey, HotTable},
    mapsync::{
        Capacity, SetChange, SetContents, SetName, SetState, SteerChange, Steering, bucket_hash,
    },
    server::{Shared, handle},
    xdp::{Dataplane, Helper, helper_test_run, helper_test_runs},
    zone::Zone,
};
use dnsfast_common::{
    maps::{AnswerLarge, CFG_ANSWER, MAX_SET_RECORDS, XdpConfig},
    stats::{COUNTER_NAMES, Counter},
    steer::draw,
    wire::{FullLimits, MSG_BUF_LEN, MsgBuf, answer_rotation, build_hot_answer, parse_query},
};
use dnsfast_tests::{dns, workspace_root};
use etherparse::PacketBuilder;
use hickory_proto::rr::{
    Name, RData, RecordType,
    rdata::{A, AAAA},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const SERVER4: [u8; 4] = [198, 18, 200, 1];
const CLIENT4: [u8; 4] = [198, 18, 200, 2];
const SERVER6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0xc8, 0, 0, 0, 0, 0, 0, 0, 1];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0xc8, 0, 0, 0, 0, 0, 0, 0, 2];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const CLIENT_PORT: u16 = 40_000;

/// The test client's address with source port `port`, as the daemon sees it.
fn client(port: u16) -> std::net::SocketAddr {
    (Ipv4Addr::from(CLIENT4), port).into()
}

struct Fixture {
    dp: Dataplane,
    shared: Shared,
}

fn snapshot() -> Snapshot {
    let origin = Name::from_ascii("example.com.").unwrap();
    let zone = Zone::load(&origin, &workspace_root().join("tests/data/hot.zone")).unwrap();
    let zones = Zones::new(vec![zone]);
    let hot = HotTable::from_zones(&zones);
    Snapshot {
        zones,
        hot,
        steering: dnsfast::steering::Compiled::default(),
        identity: Identity::default(),
        ecs: EcsPolicy::Any,
        compiled_at: SystemTime::now(),
    }
}

/// A program with maps of `cap`, answering on the test's server addresses, port 53.
fn answering(cap: Capacity) -> Dataplane {
    let mut dp = Dataplane::load(cap, None).unwrap();
    let mut cfg = XdpConfig::zeroed();
    cfg.flags = CFG_ANSWER;
    cfg.port = 53;
    cfg.v4_count = 1;
    cfg.v4[0] = SERVER4;
    cfg.v6_count = 1;
    cfg.v6[0] = SERVER6;
    dp.set_config(&cfg).unwrap();
    dp
}

fn fixture() -> &'static Mutex<Fixture> {
    static F: OnceLock<Mutex<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let snap = snapshot();
        let mut dp = answering(Capacity {
            entries: 64,
            small: 128,
            large: 16,
            sets: 16,
            steered: 4,
            geo: 16,
        });
        dp.apply(&snap.hot.as_changes()).unwrap();
        Mutex::new(Fixture {
            dp,
            shared: Shared::new(snap),
        })
    })
}

fn v4_frame(dns: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT4, SERVER4, 61)
        .udp(CLIENT_PORT, 53);
    let mut f = Vec::new();
    b.write(&mut f, dns).unwrap();
    f
}

fn v6_frame(dns: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv6(CLIENT6, SERVER6, 61)
        .udp(CLIENT_PORT, 53);
    let mut f = Vec::new();
    b.write(&mut f, dns).unwrap();
    f
}

/// RFC 1071 sum of `data` (odd length padded), not folded.
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

/// Runs `frame`, asserting the action and that exactly `counter` (besides `seen`) moved.
fn run(frame: &[u8], action: u32, counter: Counter) -> Vec<u8> {
    let f = fixture().lock().unwrap();
    let before = f.dp.counters().unwrap();
    let (got, out) = f.dp.test_run(frame).unwrap();
    let after = f.dp.counters().unwrap();
    let moved: Vec<&str> = (0..before.len())
        .filter(|&i| i != Counter::Seen as usize && after[i] != before[i])
        .map(|i| COUNTER_NAMES[i])
        .collect();
    assert_eq!(
        after[Counter::Seen as usize] - before[Counter::Seen as usize],
        1
    );
    assert_eq!(
        moved,
        [COUNTER_NAMES[counter as usize]],
        "counters that moved"
    );
    assert_eq!(
        got, action,
        "XDP action (1 drop, 2 pass, 3 tx) for counter {}",
        COUNTER_NAMES[counter as usize]
    );
    if action != XDP_TX {
        assert_eq!(out, frame, "a passed or dropped frame is left untouched");
    }
    out
}

/// Checks every header field and checksum of an IPv4 reply to `query`; returns the DNS payload.
fn check_v4_reply(query: &[u8], reply: &[u8]) -> Vec<u8> {
    assert_eq!(&reply[0..6], &query[6..12], "eth dst = query src");
    assert_eq!(&reply[6..12], &query[0..6], "eth src = query dst");
    assert_eq!(&reply[12..14], &[0x08, 0x00]);
    let ip = &reply[14..34];
    assert_eq!(ip[0], 0x45, "IPv4, no options");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        reply.len() - 14,
        "total length"
    );
    assert_eq!(ip[8], 64, "TTL");
    assert_eq!(ip[9], 17, "UDP");
    assert_eq!(&ip[12..16], &SERVER4, "source is the server");
    assert_eq!(&ip[16..20], &CLIENT4, "destination is the client");
    assert_eq!(fold(sum16(ip)), 0xFFFF, "IPv4 header checksum");
    let udp = &reply[34..];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 53);
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), CLIENT_PORT);
    assert_eq!(
        usize::from(u16::from_be_bytes([udp[4], udp[5]])),
        udp.len(),
        "UDP length"
    );
    assert_ne!(&udp[6..8], &[0, 0], "UDP checksum present");
    let pseudo = sum16(&ip[12..20]) + 17 + udp.len() as u32;
    assert_eq!(fold(pseudo + sum16(udp)), 0xFFFF, "UDP checksum");
    udp[8..].to_vec()
}

/// Same for IPv6.
fn check_v6_reply(query: &[u8], reply: &[u8]) -> Vec<u8> {
    assert_eq!(&reply[0..6], &query[6..12]);
    assert_eq!(&reply[6..12], &query[0..6]);
    assert_eq!(&reply[12..14], &[0x86, 0xDD]);
    let ip = &reply[14..54];
    assert_eq!(ip[0] >> 4, 6);
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[4], ip[5]])),
        reply.len() - 54,
        "payload length"
    );
    assert_eq!(ip[6], 17, "next header UDP");
    assert_eq!(ip[7], 64, "hop limit");
    assert_eq!(&ip[8..24], &SERVER6);
    assert_eq!(&ip[24..40], &CLIENT6);
    let udp = &reply[54..];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 53);
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), CLIENT_PORT);
    assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
    assert_ne!(&udp[6..8], &[0, 0], "IPv6 UDP checksum is never 0");
    let pseudo = sum16(&ip[8..40]) + udp.len() as u32 + 17;
    assert_eq!(fold(pseudo + sum16(udp)), 0xFFFF, "UDP checksum");
    udp[8..].to_vec()
}

/// The daemon's answer to the same DNS query from the same client port, for comparison.
fn userspace(dns: &[u8]) -> Vec<u8> {
    let f = fixture().lock().unwrap();
    handle(&f.shared, dns, false, client(CLIENT_PORT)).expect("the daemon answers")
}

fn same_answer(xdp: &[u8], query: &[u8]) {
    let user = userspace(query);
    assert_eq!(
        dns::normalize(xdp).unwrap(),
        dns::normalize(&user).unwrap(),
        "XDP and daemon answers differ"
    );
    // Byte for byte, the records' order included: both take it from the query.
    assert_eq!(
        xdp,
        user.as_slice(),
        "XDP and daemon answers differ in their bytes"
    );
}

/// The budget steering, ECS and cookies will spend, in every test run's output.
#[test]
fn program_size_and_verifier_cost_are_reported() {
    let f = fixture().lock().unwrap();
    let size = f.dp.program_size().unwrap();
    println!("XDP program: {size}");
    let ecs = f.dp.ecs_stage_size().unwrap();
    println!("Client Subnet stage: {ecs}");
    for size in [size, ecs] {
        assert!(size.instructions > 1000 && size.jited_bytes > 0, "{size}");
        assert!(
            (1..1_000_000).contains(&size.verifier_processed),
            "within the verifier's limit: {size}"
        );
    }
}

#[test]
fn ipv4_a_answered_in_xdp() {
    let q = dns::query(0x1111, "www.example.com.", RecordType::A, None);
    let frame = v4_frame(&q);
    let reply = run(&frame, XDP_TX, Counter::Answered);
    let payload = check_v4_reply(&frame, &reply);
    assert_eq!(&payload[..2], &[0x11, 0x11], "same ID");
    assert_eq!(payload[2], 0x85, "QR AA RD");
    assert_eq!(payload[3], 0x00, "RA AD CD Z 0, NOERROR");
    assert_eq!(&payload[12..q.len()], &q[12..], "question byte for byte");
    let n = dns::normalize(&payload).unwrap();
    let set = &n.answer[&("www.example.com.".into(), RecordType::A)];
    assert_eq!(set.ttls.iter().copied().collect::<Vec<_>>(), [60]);
    assert_eq!(set.rdata.len(), 3);
    assert!(n.edns.is_none(), "no OPT without one in the query");
    same_answer(&payload, &q);
}

#[test]
fn ipv6_aaaa_with_do_and_cookie() {
    // DO set and a client COOKIE, as validating resolvers send: answered, cookie not echoed.
    let mut q = dns::query(
        0x2222,
        "WwW.ExAmPlE.CoM.",
        RecordType::AAAA,
        Some((4096, true)),
    );
    let cookie = [0u8, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let n = q.len();
    q[n - 2..].copy_from_slice(&(cookie.len() as u16).to_be_bytes());
    q.extend_from_slice(&cookie);
    let frame = v6_frame(&q);
    let reply = run(&frame, XDP_TX, Counter::Answered);
    let payload = check_v6_reply(&frame, &reply);
    let qlen = 12 + 17 + 4;
    assert_eq!(&payload[12..qlen], &q[12..qlen], "0x20 case kept");
    let norm = dns::normalize(&payload).unwrap();
    let e = norm.edns.as_ref().expect("OPT in the answer");
    assert!(e.dnssec_ok);
    assert_eq!(e.udp_size, 1232);
    assert_eq!(e.version, 0);
    assert_eq!(e.options.len(), 0, "no options echoed");
    assert_eq!(
        &payload[payload.len() - 11..],
        &[0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0]
    );
    same_answer(&payload, &q);
}

#[test]
fn every_record_leads_equally_often_and_the_same_query_gets_the_same_order() {
    // 120,000 queries with pseudo-random IDs and client ports (fixed seed), as resolvers send
    // them: www's three A records each lead a third of the answers, within 2 points.
    const QUERIES: u32 = 120_000;
    let f = fixture().lock().unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut lead = std::collections::BTreeMap::<Vec<u8>, usize>::new();
    for i in 0..QUERIES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (id, port) = (x as u16, (x >> 16) as u16 | 1024);
        let q = dns::query(id, "www.example.com.", RecordType::A, None);
        let frame = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv4(CLIENT4, SERVER4, 61)
            .udp(port, 53);
        let mut bytes = Vec::new();
        frame.write(&mut bytes, &q).unwrap();
        let (action, reply) = f.dp.test_run(&bytes).unwrap();
        assert_eq!(action, XDP_TX);
        let payload = &reply[reply.len() - (q.len() + 3 * 16)..];
        let first = q.len() + 12;
        *lead.entry(payload[first..first + 4].to_vec()).or_default() += 1;
        if i % 1000 == 0 {
            let user = handle(&f.shared, &q, false, client(port)).unwrap();
            assert_eq!(
                payload,
                user.as_slice(),
                "the daemon orders query {i} alike"
            );
            let again = f.dp.test_run(&bytes).unwrap().1;
            assert_eq!(reply, again, "the same query, the same bytes");
        }
    }
    assert_eq!(lead.len(), 3, "{lead:?}");
    // Both inputs count: one ID from many ports, and many IDs from one port, each spread.
    let one_id: (Vec<u16>, Vec<u16>) = (vec![7], (1024..1060).collect());
    let one_port: (Vec<u16>, Vec<u16>) = ((0..36).collect(), vec![5353]);
    for (ids, ports) in [one_id, one_port] {
        let mut firsts = std::collections::BTreeSet::new();
        for &id in &ids {
            for &port in &ports {
                let q = dns::query(id, "www.example.com.", RecordType::A, None);
                let user = handle(&f.shared, &q, false, client(port)).unwrap();
                firsts.insert(user[q.len() + 12..q.len() + 16].to_vec());
            }
        }
        assert_eq!(firsts.len(), 3, "ids {ids:?} ports {ports:?}: {firsts:?}");
    }
    for (addr, n) in &lead {
        let share = f64::from(u32::try_from(*n).unwrap()) / f64::from(QUERIES);
        println!("{addr:?} leads {:.2}% of {QUERIES} answers", share * 100.0);
        assert!(
            (share - 1.0 / 3.0).abs() < 0.02,
            "{addr:?} leads {:.2}% of the answers, not 33.3 ± 2",
            share * 100.0
        );
    }
}

#[test]
fn too_big_without_edns_fits_with_it() {
    let name = "sixteen-aaaa-records-under-a-rather-long-owner.example.com.";
    let q = dns::query(3, name, RecordType::AAAA, None);
    run(&v4_frame(&q), XDP_PASS, Counter::PassTooBig);
    let q = dns::query(3, name, RecordType::AAAA, Some((1232, false)));
    let frame = v4_frame(&q);
    let payload = check_v4_reply(&frame, &run(&frame, XDP_TX, Counter::Answered));
    assert_eq!(
        dns::normalize(&payload)
            .unwrap()
            .answer
            .values()
            .next()
            .unwrap()
            .rdata
            .len(),
        16
    );
    same_answer(&payload, &q);
    // A client size below 512 counts as 512.
    let q = dns::query(3, name, RecordType::AAAA, Some((100, false)));
    run(&v4_frame(&q), XDP_PASS, Counter::PassTooBig);
}

#[test]
fn misses_and_other_types_go_to_the_daemon() {
    run(
        &v4_frame(&dns::query(1, "nope.example.com.", RecordType::A, None)),
        XDP_PASS,
        Counter::PassMiss,
    );
    run(
        &v4_frame(&dns::query(
            1,
            "single.example.com.",
            RecordType::AAAA,
            None,
        )),
        XDP_PASS,
        Counter::PassMiss,
    );
    run(
        &v4_frame(&dns::query(1, "alias.example.com.", RecordType::A, None)),
        XDP_PASS,
        Counter::PassMiss,
    );
    run(
        &v4_frame(&dns::query(1, "mail.example.com.", RecordType::MX, None)),
        XDP_PASS,
        Counter::PassNotHot,
    );
    let ch = dns::query_class(
        1,
        "www.example.com.",
        RecordType::A,
        hickory_proto::rr::DNSClass::CH,
        None,
    );
    run(&v4_frame(&ch), XDP_PASS, Counter::PassNotHot);
}

#[test]
fn queries_the_daemon_must_judge_are_passed_up() {
    let base = dns::query(9, "www.example.com.", RecordType::A, None);
    // One trailing byte.
    let mut q = base.clone();
    q.push(0);
    run(&v4_frame(&q), XDP_PASS, Counter::PassMalformed);
    // A compression pointer as QNAME.
    let mut q = base[..12].to_vec();
    q.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    run(&v4_frame(&q), XDP_PASS, Counter::PassMalformed);
    // EDNS version 1: BADVERS is the daemon's to send.
    let mut q = dns::query(9, "www.example.com.", RecordType::A, Some((1232, false)));
    let n = q.len();
    q[n - 5] = 1;
    run(&v4_frame(&q), XDP_PASS, Counter::PassEdns);
    // Opcode 15.
    let mut q = base.clone();
    q[2] |= 15 << 3;
    run(&v4_frame(&q), XDP_PASS, Counter::PassNotHot);
    // Two additional records.
    let mut q = dns::query(9, "www.example.com.", RecordType::A, Some((1232, false)));
    q[11] = 2;
    q.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    run(&v4_frame(&q), XDP_PASS, Counter::PassNotHot);
    // Client Subnet while the daemon has not switched ECS on (the fixture's CONFIG; see
    // `client_subnet_queries_are_answered_by_the_ecs_stage`).
    let q = ecs_query(9, "www.example.com.", RecordType::A, &[198, 18, 7]);
    run(&v4_frame(&q), XDP_PASS, Counter::PassEdns);
    // An NSID request: the daemon adds the configured identifier.
    let mut q = dns::query(9, "www.example.com.", RecordType::A, Some((1232, false)));
    let n = q.len();
    q[n - 2..].copy_from_slice(&4u16.to_be_bytes());
    q.extend_from_slice(&[0, 3, 0, 0]);
    run(&v4_frame(&q), XDP_PASS, Counter::PassEdns);
}

/// `name` `qtype` with EDNS and an IPv4 Client Subnet option of `address`'s bytes (SOURCE the
/// bytes' bits).
fn ecs_query(id: u16, name: &str, qtype: RecordType, address: &[u8]) -> Vec<u8> {
    let source = 8 * address.len() as u8;
    let q = dns::query(id, name, qtype, Some((1232, false)));
    dnsfast_tests::battery::with_option(q, &dns::ecs_option(1, source, 0, address))
}

/// Sets the fixture's ECS policy (CONFIG's bits and the resolver tables) while alive, as the
/// daemon does for `[ecs]`; turns it off when dropped, also when an assertion fails.
struct EcsFlags;
impl EcsFlags {
    fn set(policy: &EcsPolicy) -> Self {
        fixture().lock().unwrap().dp.set_ecs(policy).unwrap();
        Self
    }
}
impl Drop for EcsFlags {
    fn drop(&mut self) {
        let mut f = fixture()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.dp.set_ecs(&EcsPolicy::Off).unwrap();
    }
}

#[test]
fn client_subnet_queries_are_answered_by_the_ecs_stage() {
    let with = |q: Vec<u8>, o: &[u8]| dnsfast_tests::battery::with_option(q, o);
    let _on = EcsFlags::set(&EcsPolicy::Any);
    // A hot name (not steered): the answer echoes FAMILY, SOURCE and ADDRESS with SCOPE 0,
    // byte for byte what the daemon sends, over both families; the main program handed the
    // query to the stage, which counted it.
    let q = ecs_query(0x5151, "www.example.com.", RecordType::A, &[198, 18, 7]);
    let payload = check_v4_reply(
        &v4_frame(&q),
        &run(&v4_frame(&q), XDP_TX, Counter::AnsweredEcs),
    );
    assert!(
        payload.ends_with(&[0, 8, 0, 7, 0, 1, 24, 0, 198, 18, 7]),
        "the echo, last: {payload:02x?}"
    );
    same_answer(&payload, &q);
    let v6 = with(
        dns::query(
            0x5152,
            "www.example.com.",
            RecordType::AAAA,
            Some((1232, true)),
        ),
        &[
            dnsfast_tests::battery::CLIENT_COOKIE.as_slice(),
            &dns::ecs_option(2, 56, 0, &[0x20, 1, 0, 2, 0, 0, 1]),
        ]
        .concat(),
    );
    let payload = check_v6_reply(
        &v6_frame(&v6),
        &run(&v6_frame(&v6), XDP_TX, Counter::AnsweredEcs),
    );
    assert!(payload.ends_with(&[0, 8, 0, 11, 0, 2, 56, 0, 0x20, 1, 0, 2, 0, 0, 1]));
    same_answer(&payload, &v6);
    // SOURCE 0 (the resolver asks for no subnet to be used): echoed as is.
    let q = ecs_query(0x5153, "www.example.com.", RecordType::A, &[]);
    let payload = check_v4_reply(
        &v4_frame(&q),
        &run(&v4_frame(&q), XDP_TX, Counter::AnsweredEcs),
    );
    assert!(payload.ends_with(&[0, 8, 0, 4, 0, 1, 0, 0]));
    same_answer(&payload, &q);
    // What the stage leaves to the daemon: a malformed option (FORMERR is the daemon's), two
    // Client Subnet options, a name it does not hold.
    let bad = with(
        dns::query(9, "www.example.com.", RecordType::A, Some((1232, false))),
        &dns::ecs_option(1, 7, 0, &[199]),
    );
    run(&v4_frame(&bad), XDP_PASS, Counter::PassMalformed);
    let twice = with(
        dns::query(9, "www.example.com.", RecordType::A, Some((1232, false))),
        &[
            dns::ecs_option(1, 8, 0, &[198]),
            dns::ecs_option(1, 8, 0, &[198]),
        ]
        .concat(),
    );
    run(&v4_frame(&twice), XDP_PASS, Counter::PassEdns);
    let miss = ecs_query(9, "nothing-here.example.com.", RecordType::A, &[198, 18, 7]);
    run(&v4_frame(&miss), XDP_PASS, Counter::PassMiss);
    // Honoured only from listed resolvers: the program looks the packet's source up in its
    // resolver tables; a listed one's query is answered by the stage with the echo, an
    // unlisted one's goes to the daemon (which ignores the option).
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    let v4 = ecs_query(0x5154, "www.example.com.", RecordType::A, &[198, 18, 7]);
    let v6 = with(
        dns::query(
            0x5155,
            "www.example.com.",
            RecordType::AAAA,
            Some((1232, false)),
        ),
        &dns::ecs_option(2, 56, 0, &[0x20, 1, 0, 2, 0, 0, 1]),
    );
    let listed = |p: &[&str]| EcsPolicy::Listed(p.iter().map(|s| net(s)).collect());
    let _listed = EcsFlags::set(&listed(&["198.18.200.0/24", "2001:2:0:c9::/64"]));
    let payload = check_v4_reply(
        &v4_frame(&v4),
        &run(&v4_frame(&v4), XDP_TX, Counter::AnsweredEcs),
    );
    assert!(payload.ends_with(&[0, 8, 0, 7, 0, 1, 24, 0, 198, 18, 7]));
    same_answer(&payload, &v4);
    run(&v6_frame(&v6), XDP_PASS, Counter::PassEdns);
    // The list changed (as on reload): the IPv4 resolver left it, the IPv6 one is in; a query
    // without the option is answered as ever.
    fixture()
        .lock()
        .unwrap()
        .dp
        .set_ecs(&listed(&["198.18.201.0/24", "2001:2:0:c8::/64"]))
        .unwrap();
    run(&v4_frame(&v4), XDP_PASS, Counter::PassEdns);
    let payload = check_v6_reply(
        &v6_frame(&v6),
        &run(&v6_frame(&v6), XDP_TX, Counter::AnsweredEcs),
    );
    same_answer(&payload, &v6);
    let plain = dns::query(0x5156, "www.example.com.", RecordType::A, None);
    run(&v4_frame(&plain), XDP_TX, Counter::Answered);
}

#[test]
fn responses_and_short_headers_are_dropped() {
    let mut q = dns::query(9, "www.example.com.", RecordType::A, None);
    q[2] |= 0x80;
    run(&v4_frame(&q), XDP_DROP, Counter::DropResponse);
    run(
        &v4_frame(&[0x12, 0x34, 0, 0, 0]),
        XDP_DROP,
        Counter::DropShortHeader,
    );
    run(&v6_frame(&[]), XDP_DROP, Counter::DropShortHeader);
}

#[test]
fn padded_minimum_frame_is_sized_from_udp() {
    // 10 bytes of DNS: a 52-byte frame, padded by Ethernet to 60. The padding is not DNS data:
    // the header is short and the query dropped, not parsed into the padding.
    let mut frame = v4_frame(&[0xAB; 10]);
    assert_eq!(frame.len(), 52);
    frame.resize(60, 0);
    run(&frame, XDP_DROP, Counter::DropShortHeader);
    // A 17-byte root query (59-byte frame) padded to 60: a miss, not trailing garbage.
    let q = dns::query(5, ".", RecordType::A, None);
    let mut frame = v4_frame(&q);
    assert_eq!(frame.len(), 59);
    frame.push(0);
    run(&frame, XDP_PASS, Counter::PassMiss);
}

#[test]
fn unusual_frames_are_passed_up_untouched() {
    let q = dns::query(4, "www.example.com.", RecordType::A, None);
    // 802.1Q tag.
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .single_vlan(10.try_into().unwrap())
        .ipv4(CLIENT4, SERVER4, 64)
        .udp(CLIENT_PORT, 53);
    let mut tagged = Vec::new();
    b.write(&mut tagged, &q).unwrap();
    run(&tagged, XDP_PASS, Counter::PassVlan);
    // IPv4 More Fragments, and a fragment offset.
    let mut mf = v4_frame(&q);
    mf[20] |= 0x20;
    run(&mf, XDP_PASS, Counter::PassFragment);
    let mut off = v4_frame(&q);
    off[21] = 8;
    run(&off, XDP_PASS, Counter::PassFragment);
    // IHL 6 (one word of options).
    let mut opts = v4_frame(&q);
    opts[14] = 0x46;
    opts.splice(34..34, [1, 1, 1, 0]);
    let tl = u16::from_be_bytes([opts[16], opts[17]]) + 4;
    opts[16..18].copy_from_slice(&tl.to_be_bytes());
    run(&opts, XDP_PASS, Counter::PassIpOptions);
    // IPv6 hop-by-hop header before UDP, and a fragment header.
    for next in [0u8, 44] {
        let mut ext = v6_frame(&q);
        ext[20] = next;
        run(&ext, XDP_PASS, Counter::PassIpv6Ext);
    }
    // UDP length disagreeing with the IP payload length.
    let mut bad = v4_frame(&q);
    let ul = u16::from_be_bytes([bad[38], bad[39]]) - 1;
    bad[38..40].copy_from_slice(&ul.to_be_bytes());
    run(&bad, XDP_PASS, Counter::PassUdpLength);
    // Not our address, not our port, not UDP, not IP.
    let other = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT4, [198, 18, 200, 99], 64)
        .udp(CLIENT_PORT, 53);
    let mut f = Vec::new();
    other.write(&mut f, &q).unwrap();
    run(&f, XDP_PASS, Counter::PassNotOurs);
    let port = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT4, SERVER4, 64)
        .udp(CLIENT_PORT, 5353);
    let mut f = Vec::new();
    port.write(&mut f, &q).unwrap();
    run(&f, XDP_PASS, Counter::PassNotDnsPort);
    let mut tcp = v4_frame(&q);
    tcp[23] = 6;
    run(&tcp, XDP_PASS, Counter::PassNotUdp);
    let mut arp = v4_frame(&q);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    run(&arp, XDP_PASS, Counter::PassNotIp);
}

#[test]
fn every_name_size_class_up_to_255_octets() {
    let a = "a".repeat(63);
    let names = [
        (format!("{}.example.com.", "m".repeat(30)), 44),
        (
            format!("{}.{}.example.com.", "l".repeat(63), "l".repeat(30)),
            108,
        ),
        (format!("{a}.{a}.{a}.{}.example.com.", "z".repeat(49)), 255),
    ];
    for (name, octets) in names {
        let wire = hickory_proto::serialize::binary::BinEncodable::to_bytes(
            &Name::from_ascii(&name).unwrap(),
        )
        .unwrap();
        assert_eq!(wire.len(), octets);
        let q = dns::query(6, &name.to_uppercase(), RecordType::A, Some((1232, false)));
        let frame = v4_frame(&q);
        let payload = check_v4_reply(&frame, &run(&frame, XDP_TX, Counter::Answered));
        same_answer(&payload, &q);
    }
    // One octet more than a name may have: malformed, the daemon's to answer (FORMERR).
    let mut q = dns::query(6, "x.", RecordType::A, None);
    let mut long = vec![63u8];
    long.extend(std::iter::repeat_n(b'a', 63));
    let mut qname = Vec::new();
    for _ in 0..4 {
        qname.extend_from_slice(&long);
    }
    qname.push(0);
    assert_eq!(qname.len(), 257);
    q.splice(12..15, qname);
    run(&v4_frame(&q), XDP_PASS, Counter::PassMalformed);
}

#[test]
fn names_whose_probe_run_is_full_are_still_answered_in_xdp() {
    // Twelve names with the same home bucket in a small table: eight fill the run, four
    // overflow to HOT_64, and every one is answered in the kernel, also after rewrites.
    let cap = Capacity {
        entries: 32,
        small: 32,
        large: 4,
        sets: 16,
        steered: 4,
        geo: 16,
    };
    let mut dp = answering(cap);
    let mask = u64::from(cap.buckets() - 1);
    let key = |i: u32| {
        let name = Name::from_ascii(format!("c{i}.example.com.")).unwrap();
        let wire = hickory_proto::serialize::binary::BinEncodable::to_bytes(&name).unwrap();
        (name, HotKey::new(&wire, 1, 0))
    };
    let home = bucket_hash(dp.seed(), &key(0).1) & mask;
    let names: Vec<(Name, HotKey)> = (0..)
        .map(key)
        .filter(|(_, k)| bucket_hash(dp.seed(), k) & mask == home)
        .take(12)
        .collect();
    let answer = |i: usize, g: u8| {
        let rd = [RData::A(A(Ipv4Addr::new(198, 18, g, i as u8)))];
        Arc::new(HotAnswer::from_rrset(60, &rd).unwrap())
    };
    for g in 1..=3u8 {
        let changes: Vec<Change> = names
            .iter()
            .enumerate()
            .map(|(i, (_, k))| Change {
                key: k.clone(),
                answer: Some(answer(i, g)),
            })
            .collect();
        assert_eq!(dp.apply(&changes).unwrap().skipped, 0);
        for (i, (name, _)) in names.iter().enumerate() {
            let q = dns::query(7, &name.to_ascii(), RecordType::A, None);
            let frame = v4_frame(&q);
            let (action, out) = dp.test_run(&frame).unwrap();
            assert_eq!(action, XDP_TX, "{name} (generation {g})");
            let payload = check_v4_reply(&frame, &out);
            assert_eq!(
                &payload[payload.len() - 4..],
                &[198, 18, g, i as u8],
                "{name}'s address (generation {g})"
            );
        }
    }
    let c = dp.counters().unwrap();
    assert_eq!(c[Counter::Answered as usize], 36);
}

#[test]
fn answering_off_passes_everything() {
    // A second program instance whose CONFIG has answering off, as while the daemon starts.
    let mut off = Dataplane::load(
        Capacity {
            entries: 16,
            small: 16,
            large: 2,
            sets: 16,
            steered: 4,
            geo: 16,
        },
        None,
    )
    .unwrap();
    let mut cfg = XdpConfig::zeroed();
    cfg.port = 53;
    cfg.v4_count = 1;
    cfg.v4[0] = SERVER4;
    off.set_config(&cfg).unwrap();
    off.apply(&snapshot().hot.as_changes()).unwrap();
    let frame = v4_frame(&dns::query(1, "www.example.com.", RecordType::A, None));
    let (action, out) = off.test_run(&frame).unwrap();
    assert_eq!((action, out), (XDP_PASS, frame));
    assert_eq!(off.counters().unwrap()[Counter::PassDisabled as usize], 1);
}

/// The benchmark's second reference answers every query with one fixed A record: a reply a
/// resolver accepts, so dnsperf's figures for it are figures for real answers.
#[test]
fn growing_reference_answers_one_a_record() {
    let q = dns::query(0x2222, "WwW.example.com.", RecordType::A, None);
    let frame = v4_frame(&q);
    let (action, reply) = helper_test_run(Helper::ReflectGrow, &frame, None).unwrap();
    assert_eq!(action, XDP_TX);
    assert_eq!(reply.len(), frame.len() + 16, "grown by one record");
    assert_eq!(&reply[0..6], &frame[6..12], "eth dst = query src");
    assert_eq!(&reply[6..12], &frame[0..6], "eth src = query dst");
    let ip = &reply[14..34];
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        reply.len() - 14
    );
    assert_eq!(&ip[12..16], &SERVER4);
    assert_eq!(&ip[16..20], &CLIENT4);
    assert_eq!(fold(sum16(ip)), 0xFFFF, "IPv4 header checksum");
    let udp = &reply[34..];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 53);
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), CLIENT_PORT);
    assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
    assert_eq!(&udp[6..8], &[0, 0], "no UDP checksum (legal over IPv4)");
    let msg = &udp[8..];
    assert_eq!(&msg[..2], &[0x22, 0x22], "ID");
    let n = dns::normalize(msg).expect("a well-formed DNS message");
    assert_eq!(n.flags, 0x8500, "QR, AA, RD copied, NOERROR");
    assert_eq!(n.question, q[12..].to_vec(), "the question byte for byte");
    let rrset = &n.answer[&("www.example.com.".to_owned(), RecordType::A)];
    assert_eq!(
        rrset.rdata.iter().collect::<Vec<_>>(),
        [&vec![198, 18, 0, 1]]
    );
    assert_eq!(rrset.ttls.iter().collect::<Vec<_>>(), [&60]);
    assert!(n.authority.is_empty() && n.additional.is_empty() && n.edns.is_none());
    // Frames it does not answer are passed up untouched.
    let (action, out) = helper_test_run(Helper::ReflectGrow, &v6_frame(&q), None).unwrap();
    assert_eq!((action, out), (XDP_PASS, v6_frame(&q)));
}

/// The big zone's reference reflects queries exactly as the ceiling does (its bucket load changes
/// nothing in the reply), over tables of any power-of-two size; it refuses other sizes.
#[test]
fn miss_reference_reflects_like_the_ceiling() {
    for name in ["h123456.million.example.", "WwW.example.com."] {
        let q = dns::query(0x3333, name, RecordType::A, None);
        let frame = v4_frame(&q);
        let (action, ceiling) = helper_test_run(Helper::Reflect, &frame, None).unwrap();
        assert_eq!(action, XDP_TX, "{name}: the ceiling answers");
        assert_eq!(ceiling[14 + 20 + 8 + 2] & 0x80, 0x80, "{name}: QR set");
        assert_eq!(
            &ceiling[14 + 12..14 + 16],
            &SERVER4,
            "{name}: addresses swapped"
        );
        for buckets in [1, 1024, 1 << 16] {
            let (action, miss) =
                helper_test_run(Helper::ReflectMiss(buckets), &frame, None).unwrap();
            assert_eq!(action, XDP_TX, "{name}, {buckets} buckets");
            assert_eq!(
                miss, ceiling,
                "{name}, {buckets} buckets: the ceiling's reply"
            );
        }
    }
    // A name too short for the 16 bytes it hashes, and IPv6, are passed up untouched.
    for frame in [
        v4_frame(&dns::query(1, ".", RecordType::A, None)),
        v6_frame(&dns::query(1, "www.example.com.", RecordType::A, None)),
    ] {
        let (action, out) = helper_test_run(Helper::ReflectMiss(1024), &frame, None).unwrap();
        assert_eq!((action, out), (XDP_PASS, frame));
    }
    let err = helper_test_run(Helper::ReflectMiss(1000), &v4_frame(&[0; 12]), None).unwrap_err();
    assert!(format!("{err:#}").contains("not a power of two"), "{err:#}");
}

/// The region lookup's references (`ceiling-lpm`, `ceiling-geo-miss`) reflect a query ending
/// with an IPv4 /24 or IPv6 /56 Client Subnet option exactly as the ceiling does, for an
/// address in every block of a region map (the LPM reference finds each in its trie: a miss
/// would pass the query up), and pass other queries up untouched.
#[test]
fn region_lookup_references_reflect_like_the_ceiling() {
    let c = random_regions(4);
    let map = &c.map;
    let mut frames = Vec::new();
    for (f, source) in [(0usize, 24u8), (1, 56)] {
        let bytes = usize::from(source / 8);
        for b in &map.families[f].blocks {
            let addr: Vec<u8> = if f == 0 {
                (b.start as u32).to_be_bytes()[..bytes].to_vec()
            } else {
                b.start.to_be_bytes()[..bytes].to_vec()
            };
            let q = dns::query(
                0x4242,
                "geo.example.com.",
                RecordType::A,
                Some((1232, false)),
            );
            let q = dnsfast_tests::battery::with_option(
                q,
                &dns::ecs_option(1 + f as u16, source, 0, &addr),
            );
            frames.push(v4_frame(&q));
        }
    }
    assert!(frames.len() > 100, "{} frames", frames.len());
    // No option, another SOURCE, IPv6 transport: passed up.
    let q = dns::query(1, "geo.example.com.", RecordType::A, Some((1232, false)));
    let other =
        dnsfast_tests::battery::with_option(q.clone(), &dns::ecs_option(1, 20, 0, &[81, 2, 3]));
    let passed = [v4_frame(&q), v4_frame(&other), v6_frame(&other)];
    let all: Vec<&[u8]> = frames.iter().chain(&passed).map(Vec::as_slice).collect();
    let ceiling = helper_test_runs(Helper::Reflect, &all, None).unwrap();
    for (helper, blocks) in [
        (Helper::ReflectLpm, Some(map)),
        (Helper::ReflectGeoMiss, None),
    ] {
        let out = helper_test_runs(helper, &all, blocks).unwrap();
        for (i, (got, want)) in out.iter().zip(&ceiling).enumerate() {
            if i < frames.len() {
                assert_eq!(want.0, XDP_TX);
                assert_eq!(got, want, "{helper:?}, frame {i}");
            } else {
                assert_eq!(got, &(XDP_PASS, all[i].to_vec()), "{helper:?}, frame {i}");
            }
        }
    }
    let err = helper_test_run(Helper::ReflectLpm, &v4_frame(&q), None).unwrap_err();
    assert!(format!("{err:#}").contains("region map"), "{err:#}");
}

/// Per-stage cost on frames that leave the program at different points (not a pass/fail test:
/// `cargo test -p dnsfast-tests --test xdp_prog_run -- --ignored --nocapture stage_costs`).
#[test]
#[ignore = "measurement, run by hand"]
fn stage_costs() {
    let f = fixture().lock().unwrap();
    let q = dns::query(1, "www.example.com.", RecordType::A, None);
    let mut arp = v4_frame(&q);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let port = {
        let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv4(CLIENT4, SERVER4, 64)
            .udp(CLIENT_PORT, 5353);
        let mut v = Vec::new();
        b.write(&mut v, &q).unwrap();
        v
    };
    let mut resp = q.clone();
    resp[2] |= 0x80;
    let cases = [
        ("not IP (eth only)", arp),
        ("other port (eth+ip+udp)", port),
        ("response (+copy, header)", v4_frame(&resp)),
        (
            "miss (+parse, key, lookup)",
            v4_frame(&dns::query(1, "nope.example.com.", RecordType::A, None)),
        ),
        (
            "miss, 255-octet name",
            v4_frame(&dns::query(
                1,
                &format!(
                    "{a}.{a}.{a}.{}.example.com.",
                    "q".repeat(49),
                    a = "a".repeat(63)
                ),
                RecordType::A,
                None,
            )),
        ),
        (
            "too big (+build)",
            v4_frame(&dns::query(
                1,
                "sixteen-aaaa-records-under-a-rather-long-owner.example.com.",
                RecordType::AAAA,
                None,
            )),
        ),
    ];
    for (what, frame) in cases {
        let d = f.dp.time_run(&frame, 200_000).unwrap();
        eprintln!("{what:<32} {:>6} ns", d.as_nanos());
    }
}

/// The hot builder's answer to `query` with a steered set's `records`: the ones `steer::draw`
/// picks for the query, in draw order (what the daemon sends for a steered name).
fn built_answer(
    query: &[u8],
    ttl: u32,
    rrtype: u16,
    set: &[Vec<u8>],
    weights: &[u8],
    eligible: u32,
    answer_count: usize,
) -> Vec<u8> {
    let id = u16::from_be_bytes([query[0], query[1]]);
    let mut padded = [0u8; MAX_SET_RECORDS];
    padded[..weights.len()].copy_from_slice(weights);
    let drawn = draw(
        &padded,
        set.len(),
        eligible,
        answer_count,
        answer_rotation(id, CLIENT_PORT),
    );
    let mut answer = AnswerLarge::zeroed();
    answer.ttl = ttl;
    answer.rrtype = rrtype;
    answer.count = drawn.len as u16;
    for (at, &rec) in drawn.order[..drawn.len].iter().enumerate() {
        let r = &set[usize::from(rec)];
        answer.rdata[at * r.len()..(at + 1) * r.len()].copy_from_slice(r);
    }
    let mut buf = [0u8; MSG_BUF_LEN];
    buf[..query.len()].copy_from_slice(query);
    let mut cell = 0;
    let mut msg = MsgBuf::new(&mut buf, query.len(), &mut cell);
    let q = parse_query::<FullLimits, _>(&mut msg).unwrap();
    // The draw's order is the answer's: no rotation.
    let n = build_hot_answer(&mut msg, &q, &answer, &[], None, 0, q.udp_limit()).unwrap();
    msg.as_bytes()[..n].to_vec()
}

#[test]
fn steered_names_answer_the_eligible_records_of_their_regions_shared_set() {
    let cap = Capacity {
        entries: 16,
        small: 16,
        large: 4,
        sets: 8,
        steered: 4,
        geo: 16,
    };
    let mut dp = answering(cap);

    let v4 = |g: u8, n: u8| vec![198, 18, g, n];
    let v6 = |n: u8| {
        let mut a = [0u8; 16];
        a[..6].copy_from_slice(&[0x20, 0x01, 0, 2, 0, 0x50]);
        a[15] = n;
        a.to_vec()
    };
    // Draw every eligible record (8 at most), in the weights' order of chance.
    let weights = [40, 30, 20, 10];
    let set = |records: &[Vec<u8>]| {
        let rd: Vec<RData> = records
            .iter()
            .map(|r| match r.len() {
                4 => RData::A(A(Ipv4Addr::new(r[0], r[1], r[2], r[3]))),
                _ => RData::AAAA(AAAA(<[u8; 16]>::try_from(&r[..]).unwrap().into())),
            })
            .collect();
        Arc::new(SetContents {
            answer: HotAnswer::from_rrset(60, &rd).unwrap(),
            weights: weights[..records.len()].to_vec(),
            answer_count: 8,
        })
    };
    let pool0: Vec<Vec<u8>> = (1..=4).map(|n| v4(50, n)).collect();
    let pool1: Vec<Vec<u8>> = (1..=2).map(|n| v4(51, n)).collect();
    let pool6: Vec<Vec<u8>> = (1..=2).map(v6).collect();
    let up = |eligible| SetState {
        eligible,
        ttl_cap: 0,
        answers_from: None,
    };
    let sets = [
        SetChange::Put {
            name: 0,
            contents: set(&pool0),
            state: up(0b1111),
        },
        SetChange::Put {
            name: 1,
            contents: set(&pool1),
            state: up(0b11),
        },
        SetChange::Put {
            name: 2,
            contents: set(&pool6),
            state: up(0b11),
        },
    ];
    // Two names share set 0 for A: a short one (a HOT_TABLE bucket) and one over 32 octets
    // (HOT_64 and ANSWER_INDEX); the short one answers AAAA from set 2.
    let short = "steer.example.com.";
    let long = "a-steered-name-longer-than-32-octets.example.com.";
    let key = |name: &str, qtype: u16| {
        let wire = hickory_proto::serialize::binary::BinEncodable::to_bytes(
            &Name::from_ascii(name).unwrap(),
        )
        .unwrap();
        HotKey::new(&wire, qtype, 0)
    };
    let regions = |set: Option<SetName>| -> Arc<[Option<SetName>]> { Arc::new([set]) };
    let keys = [
        SteerChange {
            key: key(short, 1),
            regions: Some(regions(Some(0))),
        },
        SteerChange {
            key: key(long, 1),
            regions: Some(regions(Some(0))),
        },
        SteerChange {
            key: key(short, 28),
            regions: Some(regions(Some(2))),
        },
    ];
    let steering = Steering {
        sets: &sets,
        keys: &keys,
    };
    assert_eq!(dp.apply_with(&[], steering).unwrap().skipped, 0);

    let answered = |dp: &Dataplane, name: &str, qtype: RecordType, id: u16| {
        let q = dns::query(id, name, qtype, Some((1232, false)));
        let frame = if qtype == RecordType::A {
            v4_frame(&q)
        } else {
            v6_frame(&q)
        };
        let (action, out) = dp.test_run(&frame).unwrap();
        assert_eq!(action, XDP_TX, "{name} {qtype}");
        let payload = if qtype == RecordType::A {
            check_v4_reply(&frame, &out)
        } else {
            check_v6_reply(&frame, &out)
        };
        (q, payload)
    };
    let expect = |dp: &Dataplane, rrtype: u16, records: &[Vec<u8>], eligible: u32, what: &str| {
        let names: &[&str] = if rrtype == 1 {
            &[short, long]
        } else {
            &[short]
        };
        let qtype = RecordType::from(rrtype);
        for name in names {
            for id in [1u16, 2, 3, 4, 77] {
                let (q, payload) = answered(dp, name, qtype, id);
                let w = &weights[..records.len()];
                assert_eq!(
                    payload,
                    built_answer(&q, 60, rrtype, records, w, eligible, 8),
                    "{what}: {name} {qtype} id {id}"
                );
            }
        }
    };
    expect(&dp, 1, &pool0, 0b1111, "all of set 0");
    expect(&dp, 28, &pool6, 0b11, "all of set 2");

    // Records 2 and 4 go down: one store, and both names answer with records 1 and 3.
    let down = [SetChange::State {
        name: 0,
        state: up(0b0101),
    }];
    let plan_ops = dp
        .apply_with(
            &[],
            Steering {
                sets: &down,
                keys: &[],
            },
        )
        .unwrap()
        .ops;
    assert_eq!(plan_ops, 1, "a health change is one store");
    expect(&dp, 1, &pool0, 0b0101, "set 0 half down");

    // Set 0 fails over to set 1.
    let over = [SetChange::State {
        name: 0,
        state: SetState {
            eligible: 0,
            ttl_cap: 0,
            answers_from: Some(1),
        },
    }];
    let st = Steering {
        sets: &over,
        keys: &[],
    };
    assert_eq!(dp.apply_with(&[], st).unwrap().ops, 1);
    expect(&dp, 1, &pool1, 0b11, "set 0 answering from set 1");

    // Nothing eligible where it fails over to: the daemon decides (fail open or NODATA).
    let none = [SetChange::State {
        name: 1,
        state: up(0),
    }];
    let st = Steering {
        sets: &none,
        keys: &[],
    };
    dp.apply_with(&[], st).unwrap();
    let q = dns::query(5, short, RecordType::A, None);
    let (action, _) = dp.test_run(&v4_frame(&q)).unwrap();
    assert_eq!(action, XDP_PASS, "no eligible record: passed up");
    // A region without a set: passed up too; the AAAA side is untouched.
    let gone = [SteerChange {
        key: key(short, 28),
        regions: Some(regions(None)),
    }];
    let st = Steering {
        sets: &[],
        keys: &gone,
    };
    dp.apply_with(&[], st).unwrap();
    let q = dns::query(6, short, RecordType::AAAA, None);
    let (action, _) = dp.test_run(&v6_frame(&q)).unwrap();
    assert_eq!(action, XDP_PASS, "region without a set: passed up");
    let c = dp.counters().unwrap();
    assert_eq!(c[Counter::PassMiss as usize], 2);
}

/// Share of answers whose first record is each of `weights.len()` records of one steered set,
/// over `queries` pseudo-random IDs (fixed seed) through the program.
fn first_record_shares(weights: &[u8], answer_count: u8, queries: u32) -> Vec<f64> {
    let cap = Capacity {
        entries: 4,
        small: 4,
        large: 2,
        sets: 2,
        steered: 2,
        geo: 16,
    };
    let mut dp = answering(cap);
    let n = weights.len();
    let addrs: Vec<Vec<u8>> = (0..n).map(|i| vec![198, 18, 60, i as u8]).collect();
    let rd: Vec<RData> = addrs
        .iter()
        .map(|a| RData::A(A(Ipv4Addr::new(a[0], a[1], a[2], a[3]))))
        .collect();
    let all = (1u32 << n) - 1;
    let sets = [SetChange::Put {
        name: 0,
        contents: Arc::new(SetContents {
            answer: HotAnswer::from_rrset(60, &rd).unwrap(),
            weights: weights.to_vec(),
            answer_count,
        }),
        state: SetState {
            eligible: all,
            ttl_cap: 0,
            answers_from: None,
        },
    }];
    let wire = hickory_proto::serialize::binary::BinEncodable::to_bytes(
        &Name::from_ascii("w.example.com.").unwrap(),
    )
    .unwrap();
    let keys = [SteerChange {
        key: HotKey::new(&wire, 1, 0),
        regions: Some(Arc::from([Some(0)])),
    }];
    let st = Steering {
        sets: &sets,
        keys: &keys,
    };
    assert_eq!(dp.apply_with(&[], st).unwrap().skipped, 0);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut hits = vec![0u32; n];
    for i in 0..queries {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let q = dns::query(x as u16, "w.example.com.", RecordType::A, None);
        let frame = v4_frame(&q);
        let (action, reply) = dp.test_run(&frame).unwrap();
        assert_eq!(action, XDP_TX, "query {i}");
        let payload = check_v4_reply(&frame, &reply);
        let ancount = usize::from(u16::from_be_bytes([payload[6], payload[7]]));
        let weighted = weights.iter().filter(|w| **w > 0).count();
        let drawable = if weighted == 0 { n } else { weighted };
        assert_eq!(
            ancount,
            usize::from(answer_count).min(drawable),
            "records per answer"
        );
        let first = &payload[q.len() + 12..q.len() + 16];
        hits[usize::from(first[3])] += 1;
        if i % 5000 == 0 {
            let want = built_answer(&q, 60, 1, &addrs, weights, all, usize::from(answer_count));
            assert_eq!(
                payload, want,
                "query {i}: the shared draw's records and order"
            );
        }
    }
    hits.iter()
        .map(|h| f64::from(*h) / f64::from(queries))
        .collect()
}

#[test]
fn weighted_answers_lead_by_weight_share_within_two_points() {
    const QUERIES: u32 = 100_000;
    for (weights, answer_count) in [
        (&[50u8, 30, 20, 0][..], 1u8),
        (&[50, 30, 20, 0][..], 3),
        (&[20, 20, 20, 20, 20][..], 1),
        (&[0, 0, 0, 0][..], 1),
    ] {
        let shares = first_record_shares(weights, answer_count, QUERIES);
        let total: u32 = weights.iter().map(|w| u32::from(*w)).sum();
        let want: Vec<f64> = weights
            .iter()
            .map(|w| {
                if total == 0 {
                    1.0 / f64::from(weights.len() as u32)
                } else {
                    f64::from(*w) / f64::from(total)
                }
            })
            .collect();
        eprintln!(
            "weights {weights:?}, answer_count {answer_count}: first-record shares {:?} over \
             {QUERIES} queries",
            shares.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>()
        );
        for (i, (g, w)) in shares.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 0.02,
                "weights {weights:?}, answer_count {answer_count}: record {i} leads {g:.4}, \
                 its weight share is {w:.4}"
            );
        }
    }
}

/// A region map replaced by one of about the same size in tables sized for one of them: each
/// generation writes its own half, so every replacement succeeds (a reload near
/// `xdp.max_geo_blocks` must not fail for room).
#[test]
fn a_region_map_replaced_near_the_tables_capacity_is_written() {
    let compiled = |subnet: &str| {
        let text = format!(
            "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"z\"\n\
             [steering]\ndefault_region = \"a\"\n[[region]]\nname = \"a\"\n\
             [[region]]\nname = \"b\"\nsubnets = [\"{subnet}\"]\n"
        );
        let cfg = dnsfast::config::Config::parse(std::path::Path::new("/x.toml"), &text).unwrap();
        dnsfast::steering::Compiled::new(&cfg.steering.unwrap(), None)
    };
    // /128s far apart: each cuts the default region's IPv6 blocks around it differently (the
    // IPv6 map is the larger of the two families).
    let a = compiled("2001:2:0:50::7/128");
    let b = compiled("2001:2:f:60::9/128");
    let blocks = |c: &dnsfast::steering::Compiled| {
        c.map
            .entries()
            .filter(|(n, _)| n.addr().is_ipv6())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (ba, bb) = (blocks(&a), blocks(&b));
    let cap = ba.len().max(bb.len());
    assert!(a.map.families[0].blocks.len() <= cap);
    assert!(
        ba.union(&bb).count() > cap,
        "the old and new maps together exceed the capacity"
    );
    let mut dp = answering(Capacity {
        entries: 16,
        small: 16,
        large: 2,
        sets: 16,
        steered: 4,
        geo: cap as u32,
    });
    for (c, generation) in [(&a, 0), (&b, 1), (&a, 0), (&b, 0)] {
        dp.set_regions(c, generation).unwrap();
    }
}

/// A steering configuration of three regions whose explicit subnets (40 IPv4 and 40 IPv6 a
/// region, of every length, from `seed`) cut the address space into many blocks; each region
/// answers `geo.example.com` A with its own address, 198.18.70+r.1.
fn random_regions(seed: u64) -> dnsfast::steering::Compiled {
    use std::fmt::Write as _;
    let mut x = seed;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut taken = std::collections::BTreeSet::new();
    let mut text = String::from(
        "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"z\"\n\
         [steering]\ndefault_region = \"r0\"\n",
    );
    for r in 0..3 {
        let mut nets = Vec::new();
        while nets.len() < 80 {
            let v6 = nets.len() >= 40;
            let net: ipnet::IpNet = if v6 {
                let a = u128::from(rnd()) << 64 | u128::from(rnd());
                let len = 16 + (rnd() % 113) as u8;
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(a), len)
                    .unwrap()
                    .trunc()
                    .into()
            } else {
                let len = 8 + (rnd() % 25) as u8;
                ipnet::Ipv4Net::new(Ipv4Addr::from(rnd() as u32), len)
                    .unwrap()
                    .trunc()
                    .into()
            };
            if taken.insert(net) {
                nets.push(format!("\"{net}\""));
            }
        }
        let _ = write!(
            text,
            "[[region]]\nname = \"r{r}\"\nsubnets = [{}]\n[[endpoint]]\nname = \"e{r}\"\n\
             ipv4 = \"198.18.{}.1\"\n",
            nets.join(", "),
            70 + r
        );
    }
    text.push_str("[[service]]\nname = \"geo.example.com\"\n");
    for r in 0..3 {
        let _ = write!(
            text,
            "[[service.pool]]\nregion = \"r{r}\"\nendpoints = [{{ endpoint = \"e{r}\" }}]\n"
        );
    }
    let cfg = dnsfast::config::Config::parse(std::path::Path::new("/x.toml"), &text).unwrap();
    dnsfast::steering::Compiled::new(&cfg.steering.unwrap(), None)
}

/// The region tables place every address as the daemon's region map does: three maps of many
/// explicit subnets (both families, every length) written one after the other as reloads
/// write them (generation 0, then 1 into the other halves, then 0 again), and for each, Client
/// Subnet queries for every block's first and last address and their neighbours answered in
/// XDP with the region's address and SCOPE the daemon's (`place_query`: the block's length,
/// or 0 where the option does not decide and the resolver's address does).
#[test]
fn the_region_tables_place_every_address_as_the_daemons_region_map() {
    let mut dp = answering(Capacity {
        entries: 16,
        small: 16,
        large: 4,
        sets: 16,
        steered: 4,
        geo: 16_384,
    });
    dp.set_ecs(&EcsPolicy::Any).unwrap();
    let maps = [random_regions(1), random_regions(2), random_regions(3)];
    let mut old: Option<&dnsfast::steering::Compiled> = None;
    let mut probes = 0usize;
    for (c, generation) in maps.iter().zip([0u8, 1, 0]) {
        match old {
            None => {
                dp.apply_with(&[], c.map_changes(generation).steering())
                    .unwrap();
                dp.set_regions(c, generation).unwrap();
            }
            Some(o) => {
                let t = c.transition(o, dp.generation());
                assert_eq!(t.generation, generation);
                dp.apply_with(&[], t.first.steering()).unwrap();
                dp.set_regions(c, t.generation).unwrap();
                dp.apply_with(&[], t.last.steering()).unwrap();
            }
        }
        old = Some(c);
        for (f, bits) in [(0usize, 32u32), (1, 128)] {
            let mut addrs = Vec::new();
            for b in &c.map.families[f].blocks {
                let end = b.start | dnsfast::geo::host_mask(bits, b.len);
                let top = dnsfast::geo::host_mask(bits, 0);
                addrs.extend([b.start, end]);
                if end < top {
                    addrs.push(end + 1);
                }
                if b.start > 0 {
                    addrs.push(b.start - 1);
                }
            }
            for a in addrs {
                let bytes: Vec<u8> = if bits == 32 {
                    (a as u32).to_be_bytes().to_vec()
                } else {
                    a.to_be_bytes().to_vec()
                };
                let source = bits as u8;
                let family = if bits == 32 { 1 } else { 2 };
                let q = dnsfast_tests::battery::with_option(
                    dns::query(7, "geo.example.com.", RecordType::A, Some((1232, false))),
                    &dns::ecs_option(family, source, 0, &bytes),
                );
                let frame = v4_frame(&q);
                let (action, reply) = dp.test_run(&frame).unwrap();
                assert_eq!(action, XDP_TX, "{a:#x}");
                let payload = check_v4_reply(&frame, &reply);
                let ecs = dnsfast_common::wire::Ecs {
                    family,
                    source_prefix: source,
                    scope: 0,
                    address: {
                        let mut x = [0u8; 16];
                        x[..bytes.len()].copy_from_slice(&bytes);
                        x
                    },
                };
                let (region, scope) = c.place_query(Ipv4Addr::from(CLIENT4).into(), Some(&ecs));
                let want = Ipv4Addr::new(198, 18, 70 + u8::try_from(region).unwrap(), 1);
                let got = dns::addresses(&payload);
                assert_eq!(got, [std::net::IpAddr::V4(want)], "{a:#x} (bits {bits})");
                // The echo is last: FAMILY, SOURCE, SCOPE, ADDRESS.
                let at = payload.len() - bytes.len() - 1;
                assert_eq!(payload[at], scope, "SCOPE of {a:#x} (bits {bits})");
                probes += 1;
            }
        }
    }
    println!("{probes} Client Subnet addresses placed by the XDP tables as by the daemon");
}
