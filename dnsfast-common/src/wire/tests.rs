use std::{vec, vec::Vec};

use super::*;
use crate::maps::{AnswerLarge, AnswerSmall, HotKey256, SMALL_RDATA};

/// Wire form of a dotted name ("www.example.com").
fn wire_name(dotted: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in dotted.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [id, flags, qd, an, ns, ar] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h
}

fn opt(udp: u16, version: u8, flags: u16, options: &[u8]) -> Vec<u8> {
    let mut o = vec![0];
    o.extend_from_slice(&TYPE_OPT.to_be_bytes());
    o.extend_from_slice(&udp.to_be_bytes());
    o.push(0);
    o.push(version);
    o.extend_from_slice(&flags.to_be_bytes());
    o.extend_from_slice(&(options.len() as u16).to_be_bytes());
    o.extend_from_slice(options);
    o
}

fn query(name: &str, qtype: u16, opt_rr: Option<Vec<u8>>) -> Vec<u8> {
    let mut m = header(0x1234, FLAG_RD, 1, 0, 0, u16::from(opt_rr.is_some()));
    m.extend(wire_name(name));
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(o) = opt_rr {
        m.extend(o);
    }
    m
}

fn parse(m: &[u8]) -> Result<Query, QueryError> {
    let full = parse_query::<FullLimits, _>(&mut SliceWire(m));
    // The XDP copy path must agree whenever the message fits its buffer and limits.
    if m.len() <= crate::maps::MAX_XDP_QUERY {
        let mut buf = [0u8; MSG_BUF_LEN];
        buf[..m.len()].copy_from_slice(m);
        let mut cell = 0;
        let xdp = parse_query::<XdpLimits, _>(&mut MsgBuf::new(&mut buf, m.len(), &mut cell));
        // The XDP limits check options without recording them.
        let unrecorded = full.map(|mut q| {
            if let Some(e) = q.edns.as_mut() {
                e.cookie = false;
            }
            q
        });
        match (&full, &xdp) {
            (
                _,
                Err(
                    QueryError::TooManyAdditional
                    | QueryError::OtherAdditional
                    | QueryError::ClientSubnet
                    | QueryError::NsidRequest,
                ),
            ) => {}
            _ => assert_eq!(
                unrecorded, xdp,
                "XDP and daemon validators disagree on {m:02x?}"
            ),
        }
    }
    full
}

fn ecs_option(family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(&OPTION_ECS.to_be_bytes());
    o.extend_from_slice(&((4 + addr.len()) as u16).to_be_bytes());
    o.extend_from_slice(&family.to_be_bytes());
    o.push(source);
    o.push(scope);
    o.extend_from_slice(addr);
    o
}

#[test]
fn plain_query() {
    let m = query("www.Example.com", TYPE_A, None);
    let q = parse(&m).unwrap();
    assert_eq!(q.id, 0x1234);
    assert_eq!(q.name_len, 17);
    assert_eq!(q.qtype, TYPE_A);
    assert_eq!(q.qclass, CLASS_IN);
    assert_eq!(q.question_end, m.len());
    assert!(q.recursion_desired());
    assert_eq!(q.edns, None);
    assert_eq!(q.udp_limit(), 512);
}

#[test]
fn edns_query() {
    let m = query("a.test", TYPE_AAAA, Some(opt(4096, 0, EDNS_DO, &[])));
    let q = parse(&m).unwrap();
    let e = q.edns.unwrap();
    assert!(e.dnssec_ok());
    assert_eq!(e.udp_size, 4096);
    assert_eq!(q.udp_limit(), 1232);
    let small = query("a.test", TYPE_AAAA, Some(opt(100, 0, 0, &[])));
    assert_eq!(parse(&small).unwrap().udp_limit(), 512);
}

#[test]
fn header_errors() {
    assert_eq!(parse(&[]), Err(QueryError::ShortHeader));
    assert_eq!(parse(&[0; 11]), Err(QueryError::ShortHeader));
    let mut m = query("a.test", TYPE_A, None);
    m[2] |= 0x80;
    assert_eq!(parse(&m), Err(QueryError::Response));
    let mut m = query("a.test", TYPE_A, None);
    m[2] |= 15 << 3;
    assert_eq!(parse(&m), Err(QueryError::Opcode));
    let mut m = query("a.test", TYPE_A, None);
    m[5] = 0;
    assert_eq!(parse(&m), Err(QueryError::NoQuestion));
    m[5] = 2;
    assert_eq!(parse(&m), Err(QueryError::QuestionCount));
    let mut m = query("a.test", TYPE_A, None);
    m[7] = 1;
    assert_eq!(parse(&m), Err(QueryError::Sections));
}

#[test]
fn name_errors() {
    let mut m = header(1, 0, 1, 0, 0, 0);
    m.extend_from_slice(&[0x40, b'a', 0, 0, 1, 0, 1]);
    assert_eq!(parse(&m), Err(QueryError::LabelType));
    m[12] = 0x80;
    assert_eq!(parse(&m), Err(QueryError::LabelType));
    let mut m = header(1, 0, 1, 0, 0, 0);
    m.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    assert_eq!(parse(&m), Err(QueryError::Pointer));
    let mut m = header(1, 0, 1, 0, 0, 0);
    m.extend_from_slice(&[3, b'w', b'w', b'w', 0xC0, 0x0C, 0, 1, 0, 1]);
    assert_eq!(parse(&m), Err(QueryError::Pointer));
    // Cut before QCLASS.
    let m = query("a.test", TYPE_A, None);
    assert_eq!(parse(&m[..m.len() - 2]), Err(QueryError::Truncated));
    // Cut inside the name.
    assert_eq!(parse(&m[..15]), Err(QueryError::Truncated));
    // One trailing byte.
    let mut m = query("a.test", TYPE_A, None);
    m.push(0);
    assert_eq!(parse(&m), Err(QueryError::TrailingData));
}

/// A name of exactly `total` wire octets made of 63-octet labels and one shorter label.
fn name_of_len(total: usize) -> Vec<u8> {
    let mut n = Vec::new();
    let mut left = total - 1;
    while left > 0 {
        let l = left.min(64) - 1;
        n.push(l as u8);
        n.extend(std::iter::repeat_n(b'x', l));
        left -= l + 1;
    }
    n.push(0);
    assert_eq!(n.len(), total);
    n
}

#[test]
fn name_length_limit() {
    for (len, ok) in [(255, true), (256, false)] {
        let mut m = header(1, 0, 1, 0, 0, 0);
        m.extend(name_of_len(len));
        m.extend_from_slice(&[0, 1, 0, 1]);
        let r = parse(&m);
        if ok {
            assert_eq!(r.unwrap().name_len, 255);
        } else {
            assert_eq!(r, Err(QueryError::NameTooLong));
        }
    }
}

#[test]
fn escaped_zero_byte_is_a_name() {
    let mut m = header(1, 0, 1, 0, 0, 0);
    m.extend_from_slice(&[3, b'a', 0, b'b', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1]);
    assert_eq!(parse(&m).unwrap().name_len, 10);
}

#[test]
fn opt_errors() {
    let mut m = query("a.test", TYPE_A, Some(opt(1232, 0, 0, &[])));
    m[11] = 2;
    m.extend(opt(1232, 0, 0, &[]));
    assert_eq!(parse(&m), Err(QueryError::DuplicateOpt));

    // OPT owned by a non-root name.
    let mut m = query("a.test", TYPE_A, None);
    m[11] = 1;
    let mut o = opt(1232, 0, 0, &[]);
    o.splice(0..1, [1, b'x', 0]);
    m.extend(o);
    assert_eq!(parse(&m), Err(QueryError::OptOwner));

    // RDLENGTH past the end.
    let mut m = query("a.test", TYPE_A, Some(opt(1232, 0, 0, &[])));
    let n = m.len();
    m[n - 1] = 8;
    assert_eq!(parse(&m), Err(QueryError::Truncated));

    // An option whose length overruns the RDATA.
    let m = query(
        "a.test",
        TYPE_A,
        Some(opt(1232, 0, 0, &[0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8])),
    );
    assert_eq!(parse(&m), Err(QueryError::OptionOverrun));
    let m = query("a.test", TYPE_A, Some(opt(1232, 0, 0, &[0, 10, 0])));
    assert_eq!(parse(&m), Err(QueryError::OptionOverrun));

    let m = query("a.test", TYPE_A, Some(opt(1232, 1, 0, &[])));
    assert_eq!(parse(&m), Err(QueryError::BadVersion));
    assert_eq!(QueryError::BadVersion.rcode(), Some(rcode::BADVERS));
}

#[test]
fn cookies_and_unknown_options_are_accepted() {
    let mut opts = vec![0, 10, 0, 8];
    opts.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    opts.extend_from_slice(&[0xFE, 0x01, 0, 2, 9, 9]);
    let m = query("a.test", TYPE_A, Some(opt(1232, 0, EDNS_DO, &opts)));
    let e = parse(&m).unwrap().edns.unwrap();
    assert!(e.cookie);
    let m = query(
        "a.test",
        TYPE_A,
        Some(opt(1232, 0, 0, &[0, 10, 0, 3, 1, 2, 3])),
    );
    assert_eq!(parse(&m), Err(QueryError::BadCookie));
}

#[test]
fn ecs_validation() {
    let good = ecs_option(1, 24, 0, &[198, 18, 7]);
    let e = parse(&query("a.test", TYPE_A, Some(opt(1232, 0, 0, &good)))).unwrap();
    assert_eq!(
        e.edns.unwrap().ecs,
        Some(Ecs {
            family: 1,
            source_prefix: 24,
            scope: 0,
            address: [198, 18, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        })
    );
    for bad in [
        ecs_option(1, 33, 0, &[198, 18, 7, 1, 0]),
        ecs_option(2, 129, 0, &[0; 17]),
        ecs_option(3, 8, 0, &[1]),
        ecs_option(1, 24, 0, &[198, 18, 7, 1]),
        ecs_option(1, 23, 0, &[198, 18, 7]),
        ecs_option(1, 24, 8, &[198, 18, 7]),
    ] {
        let m = query("a.test", TYPE_A, Some(opt(1232, 0, 0, &bad)));
        assert_eq!(parse(&m), Err(QueryError::BadEcs), "{bad:02x?}");
    }
    let zero = ecs_option(2, 0, 0, &[]);
    assert!(parse(&query("a.test", TYPE_A, Some(opt(1232, 0, 0, &zero)))).is_ok());
}

#[test]
fn tsig_is_reported_by_the_daemon_validator_only() {
    let mut m = query("a.test", TYPE_A, None);
    m[11] = 1;
    // key name "k.", type TSIG, class ANY, TTL 0, empty RDATA (enough to be walked).
    m.extend_from_slice(&[1, b'k', 0, 0, 250, 0, 255, 0, 0, 0, 0, 0, 0]);
    assert!(
        parse_query::<FullLimits, _>(&mut SliceWire(&m))
            .unwrap()
            .tsig
    );
    let mut buf = [0u8; MSG_BUF_LEN];
    buf[..m.len()].copy_from_slice(&m);
    let mut cell = 0;
    assert_eq!(
        parse_query::<XdpLimits, _>(&mut MsgBuf::new(&mut buf, m.len(), &mut cell)),
        Err(QueryError::OtherAdditional)
    );
}

#[test]
fn lowercase_word_matches_std() {
    for b in 0..=255u8 {
        for pos in 0..8 {
            let mut bytes = [b'q'; 8];
            bytes[pos] = b;
            let got = ascii_lower_word(u64::from_le_bytes(bytes)).to_le_bytes();
            let want = bytes.map(|c| c.to_ascii_lowercase());
            assert_eq!(got, want, "byte {b:#x} at {pos}");
        }
    }
}

#[test]
fn key_is_lowercase_and_padded_to_class() {
    let m = query("WwW.ExAmPlE.CoM", TYPE_A, None);
    let mut key = HotKey256::zeroed();
    key.name = [0xAA; 256];
    let class = build_key(&mut SliceWire(&m), 17, TYPE_A, 3, &mut key);
    assert_eq!(class, 0);
    assert_eq!(key.qtype, TYPE_A);
    assert_eq!(key.region, 3);
    assert_eq!(&key.name[..17], &wire_name("www.example.com")[..]);
    assert!(
        key.name[17..32].iter().all(|&b| b == 0),
        "class padding must be zero"
    );
    // Bytes past the class are not part of the key and may hold anything.
    let long = "a".repeat(60);
    let m = query(&long, TYPE_A, None);
    assert_eq!(build_key(&mut SliceWire(&m), 62, TYPE_A, 0, &mut key), 1);
}

fn small(rrtype: u16, ttl: u32, addrs: &[&[u8]]) -> AnswerSmall {
    let mut a = AnswerSmall::zeroed();
    a.ttl = ttl;
    a.rrtype = rrtype;
    a.count = addrs.len() as u16;
    let mut off = 0;
    for addr in addrs {
        a.rdata[off..off + addr.len()].copy_from_slice(addr);
        off += addr.len();
    }
    assert!(off <= SMALL_RDATA);
    a
}

fn build(
    m: &[u8],
    ans: &impl AnswerData,
    rotation: u32,
    limit: usize,
) -> Result<Vec<u8>, BuildError> {
    build_with(m, ans, &[], rotation, limit)
}

fn build_with(
    m: &[u8],
    ans: &impl AnswerData,
    options: &[EdnsOption<'_>],
    rotation: u32,
    limit: usize,
) -> Result<Vec<u8>, BuildError> {
    let mut buf = [0u8; MSG_BUF_LEN];
    buf[..m.len()].copy_from_slice(m);
    let mut cell = 0;
    let mut msg = MsgBuf::new(&mut buf, m.len(), &mut cell);
    let q = parse_query::<XdpLimits, _>(&mut msg).unwrap();
    let n = build_hot_answer(&mut msg, &q, ans, options, None, rotation, limit)?;
    assert_eq!(msg.as_bytes().len(), n);
    Ok(msg.as_bytes().to_vec())
}

#[test]
fn hot_answer_bytes() {
    let m = query("WWW.example.com", TYPE_A, None);
    let ans = small(TYPE_A, 60, &[&[198, 18, 0, 1], &[198, 18, 0, 2]]);
    let r = build(&m, &ans, 1, 512).unwrap();
    // Header: same ID, QR AA RD, counts 1/2/0/0.
    assert_eq!(&r[..12], &[0x12, 0x34, 0x85, 0x00, 0, 1, 0, 2, 0, 0, 0, 0]);
    // Question byte for byte, case kept.
    assert_eq!(&r[12..m.len()], &m[12..]);
    let rr = |addr: [u8; 4]| {
        let mut v = vec![0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4];
        v.extend_from_slice(&addr);
        v
    };
    // Rotation 1 starts at the second address.
    let mut want = rr([198, 18, 0, 2]);
    want.extend(rr([198, 18, 0, 1]));
    assert_eq!(&r[m.len()..], &want[..]);
}

#[test]
fn hot_answer_with_opt() {
    let mut cookie = vec![0, 10, 0, 8];
    cookie.extend_from_slice(&[7; 8]);
    let m = query(
        "a.test",
        TYPE_AAAA,
        Some(opt(4096, 0, EDNS_DO | 0x0001, &cookie)),
    );
    let mut ans = AnswerLarge::zeroed();
    ans.ttl = 300;
    ans.rrtype = TYPE_AAAA;
    ans.count = 1;
    ans.rdata[..16].copy_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let r = build(&m, &ans, 0, 1232).unwrap();
    let qend = 12 + 8 + 4;
    assert_eq!(&r[2..4], &[0x85, 0x00]);
    assert_eq!(&r[10..12], &[0, 1], "ARCOUNT 1 for our OPT");
    assert_eq!(r.len(), qend + 28 + 11);
    // OPT: root, type 41, 1232, ext-rcode 0, version 0, only DO kept, no options.
    assert_eq!(
        &r[qend + 28..],
        &[0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0]
    );
}

#[test]
fn hot_answer_carries_options_in_order_and_counts_them_against_the_limit() {
    let m = query("a.test", TYPE_A, Some(opt(1232, 0, 0, &[])));
    let ans = small(TYPE_A, 60, &[&[198, 18, 0, 1]]);
    let nsid = EdnsOption {
        code: OPTION_NSID,
        data: b"ns1",
    };
    let other = EdnsOption {
        code: 0xFDE9,
        data: &[1, 2],
    };
    let qend = 12 + 8 + 4;
    let total = qend + 16 + 11 + (4 + 3) + (4 + 2);
    let r = build_with(&m, &ans, &[nsid, other], 0, total).unwrap();
    assert_eq!(r.len(), total);
    assert_eq!(
        &r[qend + 16..],
        &[
            0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 13, // OPT, RDLENGTH 13
            0, 3, 0, 3, b'n', b's', b'1', // NSID "ns1"
            0xFD, 0xE9, 0, 2, 1, 2, // the second option
        ]
    );
    // One byte short of the answer with its options: too big (the daemon's general path then
    // answers), as the plan counted the options.
    assert_eq!(
        build_with(&m, &ans, &[nsid, other], 0, total - 1),
        Err(BuildError::TooBig)
    );
    // Without EDNS in the query there is no OPT, so no options either.
    let plain = query("a.test", TYPE_A, None);
    let r = build_with(&plain, &ans, &[nsid], 0, 512).unwrap();
    assert_eq!(r.len(), 12 + 12 + 16);
}

#[test]
fn response_opt_bytes() {
    let mut buf = [0u8; MSG_BUF_LEN];
    let mut cell = 0;
    let mut w = MsgBuf::new(&mut buf, 0, &mut cell);
    // BADVERS (16): the upper eight bits of the extended RCODE are 1; DO set.
    let opt = ResponseOpt {
        rcode: 16,
        dnssec_ok: true,
        options: &[],
        ecs: None,
    };
    assert_eq!(opt.wire_len(), OPT_RR_LEN);
    assert_eq!(opt.write(&mut w, 5), Some(5 + OPT_RR_LEN));
    assert_eq!(&buf[5..16], &[0, 0, 41, 0x04, 0xD0, 1, 0, 0x80, 0, 0, 0]);
    // Options past MAX_RESPONSE_OPTIONS are neither written nor counted.
    let o = EdnsOption {
        code: 1,
        data: &[9],
    };
    let many = [o; MAX_RESPONSE_OPTIONS + 1];
    let opt = ResponseOpt {
        rcode: 0,
        dnssec_ok: false,
        options: &many,
        ecs: None,
    };
    assert_eq!(opt.wire_len(), OPT_RR_LEN + MAX_RESPONSE_OPTIONS * 5);
    // The Client Subnet echo goes last: FAMILY, SOURCE, our SCOPE, ADDRESS as received.
    let mut address = [0u8; 16];
    address[..3].copy_from_slice(&[198, 18, 7]);
    let ecs = Ecs {
        family: 1,
        source_prefix: 22,
        scope: 24,
        address,
    };
    let opt = ResponseOpt {
        rcode: 0,
        dnssec_ok: false,
        options: &[o],
        ecs: Some(&ecs),
    };
    assert_eq!(opt.wire_len(), OPT_RR_LEN + 5 + 11);
    let mut buf = [0xEEu8; MSG_BUF_LEN];
    let mut w = MsgBuf::new(&mut buf, 0, &mut cell);
    assert_eq!(opt.write(&mut w, 0), Some(OPT_RR_LEN + 16));
    assert_eq!(
        &buf[OPT_RR_LEN..OPT_RR_LEN + 17],
        &[0, 1, 0, 1, 9, 0, 8, 0, 7, 0, 1, 22, 24, 198, 18, 7, 0xEE]
    );
    assert_eq!(&buf[9..11], &[0, 16], "RDLENGTH");
}

#[test]
fn hot_answer_respects_limit_and_slot_checks() {
    let m = query("a.test", TYPE_A, None);
    let ans = small(TYPE_A, 60, &[&[198, 18, 0, 1]]);
    assert_eq!(
        build(&m, &ans, 0, 12 + 12 + 16 - 1),
        Err(BuildError::TooBig)
    );
    assert!(build(&m, &ans, 0, 12 + 12 + 16).is_ok());
    let aaaa = query("a.test", TYPE_AAAA, None);
    assert_eq!(build(&aaaa, &ans, 0, 512), Err(BuildError::BadSlot));
    let mut empty = ans;
    empty.count = 0;
    assert_eq!(build(&m, &empty, 0, 512), Err(BuildError::BadSlot));
    let mut over = ans;
    over.count = 5;
    assert_eq!(build(&m, &over, 0, 512), Err(BuildError::BadSlot));
}

#[test]
fn header_bits_do_not_leak() {
    let mut m = query("a.test", TYPE_A, None);
    // Client sets AA, TC, RA, Z, AD, CD and a non-zero rcode: only RD and CD survive.
    m[2] = 0x07;
    m[3] = 0xFF;
    let ans = small(TYPE_A, 60, &[&[198, 18, 0, 1]]);
    let r = build(&m, &ans, 0, 512).unwrap();
    assert_eq!(r[2], 0x85);
    assert_eq!(r[3], 0x10);
}

#[test]
fn the_hot_decision() {
    let hot = |m: &[u8]| parse(m).unwrap().hot();
    assert_eq!(hot(&query("www.example.com", TYPE_A, None)), Ok(()));
    assert_eq!(
        hot(&query(
            "www.example.com",
            TYPE_AAAA,
            Some(opt(1232, 0, EDNS_DO, &[]))
        )),
        Ok(())
    );
    assert_eq!(
        hot(&query("www.example.com", 15, None)),
        Err(NotHot::Shape),
        "MX"
    );
    let mut ch = query("www.example.com", TYPE_A, None);
    let n = ch.len();
    ch[n - 2..].copy_from_slice(&CLASS_CH.to_be_bytes());
    assert_eq!(hot(&ch), Err(NotHot::Shape), "class CH");
    // Client Subnet does not keep a query from the hot builder: it echoes the option.
    let ecs = ecs_option(1, 24, 0, &[198, 18, 7]);
    assert_eq!(
        hot(&query(
            "www.example.com",
            TYPE_A,
            Some(opt(1232, 0, 0, &ecs))
        )),
        Ok(())
    );
}

#[test]
fn query_keys_and_daemon_keys_lowercase_alike() {
    // Every byte value, at every position of an 8-byte word, in a query's name: the XDP key
    // (`build_key`, eight bytes at a time) equals the daemon's (`HotKeyN::new`, byte by byte).
    for b in 0..=255u8 {
        for at in 0..8 {
            let mut label = *b"AbCdEfGhZ";
            label[at] = b;
            let mut name = vec![label.len() as u8];
            name.extend_from_slice(&label);
            name.extend_from_slice(b"\x07ExAmPlE\x00");
            let mut m = header(1, 0, 1, 0, 0, 0);
            m.extend_from_slice(&name);
            m.extend_from_slice(&TYPE_A.to_be_bytes());
            m.extend_from_slice(&CLASS_IN.to_be_bytes());
            let mut key = HotKey256::zeroed();
            let class = build_key(&mut SliceWire(&m), name.len(), TYPE_A, 5, &mut key);
            assert_eq!(class, 0);
            let want = crate::maps::HotKey32::new(TYPE_A, 5, &name).unwrap();
            assert_eq!(&key.name[..32], &want.name[..], "byte {b:#04x} at {at}");
            assert_eq!((key.qtype, key.region), (want.qtype, want.region));
        }
    }
    assert!(crate::maps::HotKey32::new(TYPE_A, 0, &[1; 33]).is_none());
}
