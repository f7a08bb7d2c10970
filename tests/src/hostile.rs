//! The hostile-query table of `docs/conformance.md`: one row per malformed or unusual message,
//! with the behaviour both paths (XDP and sockets) must show. Row IDs match the document's.

pub use dnsfast_common::wire::rcode;
use hickory_proto::rr::RecordType;

use crate::dns::{self, ecs_option as ecs};

/// What a row must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Nothing at all.
    NoAnswer,
    /// An error: this RCODE, AA clear, no records; the question echoed or not, an OPT or not.
    Error {
        /// RCODE (extended ones include the OPT's high bits).
        rcode: u16,
        /// QDCOUNT 1 with the question as sent.
        question: bool,
        /// An OPT record in the answer.
        opt: bool,
    },
    /// Answered as a query: this RCODE, AA set, this many answer records.
    Answer {
        /// RCODE.
        rcode: u16,
        /// Records in the answer section.
        answers: usize,
    },
}

/// A row of the table.
pub struct Row {
    /// `H01`, `H02`, …: the row in `docs/conformance.md`.
    pub id: &'static str,
    /// What the message is.
    pub what: &'static str,
    /// The message.
    pub msg: Vec<u8>,
    /// What it must get.
    pub expect: Expect,
    /// What Knot DNS 3.2 gives it (the table's Knot column, checked by a test).
    pub knot: Expect,
}

fn header(flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = vec![0x4a, 0x11];
    h.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A query for `name`/`qtype`/`qclass` with the given counts (RD set).
fn q(name: &str, qtype: u16, qclass: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut m = header(0x0100, counts);
    m.extend_from_slice(&wire_name(name));
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&qclass.to_be_bytes());
    m
}

/// The everyday question, `www.example.com. A IN`, with the given counts.
fn www(counts: [u16; 4]) -> Vec<u8> {
    q("www.example.com.", 1, 1, counts)
}

/// An OPT record: root owner, UDP size 1232, `version`, `flags`, `options` (RDLENGTH `rdlen`
/// or their length).
fn opt(version: u8, flags: u16, options: &[u8], rdlen: Option<u16>) -> Vec<u8> {
    let mut o = vec![0, 0, 41];
    o.extend_from_slice(&1232u16.to_be_bytes());
    o.extend_from_slice(&[0, version]);
    o.extend_from_slice(&flags.to_be_bytes());
    o.extend_from_slice(&rdlen.unwrap_or(options.len() as u16).to_be_bytes());
    o.extend_from_slice(options);
    o
}

fn with_opt(counts_ar: u16, o: &[u8]) -> Vec<u8> {
    let mut m = www([1, 0, 0, counts_ar]);
    m.extend_from_slice(o);
    m
}

const fn error(rcode: u16, question: bool) -> Expect {
    Expect::Error {
        rcode,
        question,
        opt: false,
    }
}

/// Every row, in the document's order.
#[must_use]
#[expect(clippy::too_many_lines, reason = "a table")]
pub fn rows() -> Vec<Row> {
    let row = |id, what, msg, expect| Row {
        id,
        what,
        msg,
        expect,
        knot: expect,
    };
    // Rows where Knot differs (docs/conformance.md says why we do not follow it there).
    let knot_differs = |mut r: Row, knot: Expect| {
        r.knot = knot;
        r
    };
    let formerr_q = error(rcode::FORMERR, true);
    let formerr = error(rcode::FORMERR, false);
    let www_answer = Expect::Answer {
        rcode: rcode::NOERROR,
        answers: 3,
    };

    let mut response = www([1, 0, 0, 0]);
    response[2] |= 0x80;
    let mut qd2 = www([2, 0, 0, 0]);
    let question = qd2[12..].to_vec();
    qd2.extend_from_slice(&question);
    let cut = www([1, 0, 0, 0]);
    let cut = cut[..cut.len() - 2].to_vec();
    let mut trailing = www([1, 0, 0, 0]);
    trailing.push(0);
    let mut opcode15 = www([1, 0, 0, 0]);
    opcode15[2] |= 15 << 3;
    let label = |len_byte: u8| {
        let mut m = header(0x0100, [1, 0, 0, 0]);
        m.push(len_byte);
        m.extend_from_slice(b"abcdefghij");
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    };
    let label40 = label(0x40);
    let label80 = label(0x80);
    let name255 = format!("{a}.{a}.{a}.{}.", "b".repeat(61), a = "a".repeat(63));
    let name256 = format!("{a}.{a}.{a}.{}.", "b".repeat(62), a = "a".repeat(63));
    let pointer = |target: &[u8], tail: &[u8]| {
        let mut m = header(0x0100, [1, 0, 0, 0]);
        m.extend_from_slice(target);
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend_from_slice(tail);
        m
    };
    let mut nul = header(0x0100, [1, 0, 0, 0]);
    nul.extend_from_slice(b"\x03a\x00b");
    nul.extend_from_slice(&wire_name("example.com."));
    nul.extend_from_slice(&[0, 1, 0, 1]);
    let mut two_opt = www([1, 0, 0, 2]);
    two_opt.extend_from_slice(&opt(0, 0, &[], None));
    two_opt.extend_from_slice(&opt(0, 0, &[], None));
    let mut opt_in_answer = www([1, 1, 0, 0]);
    opt_in_answer.extend_from_slice(&opt(0, 0, &[], None));
    let mut opt_in_authority = www([1, 0, 1, 0]);
    opt_in_authority.extend_from_slice(&opt(0, 0, &[], None));
    let mut answer_rr = www([1, 1, 0, 0]);
    answer_rr.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 0, 1]);
    let mut no_question_opt = header(0x0100, [0, 0, 0, 1]);
    no_question_opt.extend_from_slice(&opt(0, 0, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], None));
    let mut tsig = www([1, 0, 0, 1]);
    tsig.extend_from_slice(&wire_name("key.example."));
    tsig.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0, 0, 0]);
    let with_flag = |bit: u16| {
        let mut m = www([1, 0, 0, 0]);
        let f = u16::from_be_bytes([m[2], m[3]]) | bit;
        m[2..4].copy_from_slice(&f.to_be_bytes());
        m
    };

    vec![
        row("H01", "empty datagram", Vec::new(), Expect::NoAnswer),
        row("H02", "1 zero byte", vec![0], Expect::NoAnswer),
        row("H03", "11 zero bytes", vec![0; 11], Expect::NoAnswer),
        row("H04", "QR=1 (a response)", response, Expect::NoAnswer),
        row("H05", "QDCOUNT=0, no OPT", header(0x0100, [0; 4]), formerr),
        row(
            "H06",
            "QDCOUNT=0 with an OPT (cookie only)",
            no_question_opt,
            Expect::Error {
                rcode: rcode::FORMERR,
                question: false,
                opt: true,
            },
        ),
        knot_differs(row("H07", "QDCOUNT=2", qd2, formerr), Expect::NoAnswer),
        knot_differs(
            row("H08", "question cut before QCLASS", cut, formerr),
            Expect::NoAnswer,
        ),
        row("H09", "one byte after the question", trailing, formerr_q),
        row("H10", "opcode 15", opcode15, error(rcode::NOTIMP, true)),
        row(
            "H11",
            "QCLASS 3 (CH), a zone name",
            q("www.example.com.", 1, 3, [1, 0, 0, 0]),
            error(rcode::REFUSED, true),
        ),
        row(
            "H12",
            "QCLASS 254 (NONE)",
            q("www.example.com.", 1, 254, [1, 0, 0, 0]),
            error(rcode::REFUSED, true),
        ),
        knot_differs(
            row("H13", "label length byte 0x40", label40, formerr),
            Expect::NoAnswer,
        ),
        knot_differs(
            row("H14", "label length byte 0x80", label80, formerr),
            Expect::NoAnswer,
        ),
        row(
            "H15",
            "QNAME of 255 octets (in no zone of ours)",
            q(&name255, 1, 1, [1, 0, 0, 0]),
            error(rcode::REFUSED, true),
        ),
        knot_differs(
            row(
                "H16",
                "QNAME of 256 octets",
                q(&name256, 1, 1, [1, 0, 0, 0]),
                formerr,
            ),
            Expect::NoAnswer,
        ),
        knot_differs(
            row(
                "H17",
                "QNAME pointing to itself (C0 0C)",
                pointer(&[0xC0, 12], &[]),
                formerr,
            ),
            Expect::NoAnswer,
        ),
        knot_differs(
            row(
                "H18",
                "QNAME pointer past the end",
                pointer(&[0xC0, 0xFF], &[]),
                formerr,
            ),
            Expect::NoAnswer,
        ),
        knot_differs(
            row(
                "H19",
                "QNAME pointer forward",
                pointer(b"\x03www\xC0\x15", &wire_name("example.com.")),
                formerr,
            ),
            Expect::NoAnswer,
        ),
        row(
            "H20",
            "\\000 inside a label",
            nul,
            Expect::Answer {
                rcode: rcode::NXDOMAIN,
                answers: 0,
            },
        ),
        row(
            "H21",
            "EDNS version 1",
            with_opt(1, &opt(1, 0, &[], None)),
            Expect::Error {
                rcode: rcode::BADVERS,
                question: true,
                opt: true,
            },
        ),
        row("H22", "two OPT records", two_opt, formerr_q),
        row("H23", "OPT in the answer section", opt_in_answer, formerr_q),
        row(
            "H24",
            "OPT in the authority section",
            opt_in_authority,
            formerr_q,
        ),
        row(
            "H25",
            "EDNS option overrunning the OPT RDATA",
            with_opt(1, &opt(0, 0, &[0xFD, 0xE9, 0, 8, 1, 2, 3, 4], Some(8))),
            formerr_q,
        ),
        row(
            "H26",
            "OPT RDLENGTH past the packet",
            with_opt(1, &opt(0, 0, &[], Some(20))),
            formerr_q,
        ),
        knot_differs(
            row(
                "H27",
                "ECS IPv4 source prefix 33",
                with_opt(1, &opt(0, 0, &ecs(1, 33, 0, &[198, 18, 0, 1, 0]), None)),
                formerr_q,
            ),
            www_answer,
        ),
        knot_differs(
            row(
                "H28",
                "ECS IPv6 source prefix 129",
                with_opt(1, &opt(0, 0, &ecs(2, 129, 0, &[0x20; 17]), None)),
                formerr_q,
            ),
            www_answer,
        ),
        knot_differs(
            row(
                "H29",
                "ECS unknown family 3",
                with_opt(1, &opt(0, 0, &ecs(3, 8, 0, &[1]), None)),
                formerr_q,
            ),
            www_answer,
        ),
        knot_differs(
            row(
                "H30",
                "ECS address bytes beyond the prefix",
                with_opt(1, &opt(0, 0, &ecs(1, 8, 0, &[198, 18]), None)),
                formerr_q,
            ),
            www_answer,
        ),
        knot_differs(
            row(
                "H31",
                "ECS non-zero bits past the prefix",
                with_opt(1, &opt(0, 0, &ecs(1, 7, 0, &[199]), None)),
                formerr_q,
            ),
            www_answer,
        ),
        knot_differs(
            row(
                "H32",
                "ECS SCOPE non-zero in a query",
                with_opt(1, &opt(0, 0, &ecs(1, 24, 8, &[198, 18, 0]), None)),
                formerr_q,
            ),
            www_answer,
        ),
        knot_differs(
            row("H33", "an answer record in a query", answer_rr, formerr_q),
            www_answer,
        ),
        knot_differs(
            row(
                "H34",
                "COOKIE option of 5 bytes",
                with_opt(1, &opt(0, 0, &[0, 10, 0, 5, 1, 2, 3, 4, 5], None)),
                formerr_q,
            ),
            www_answer,
        ),
        row(
            "H35",
            "unknown EDNS option",
            with_opt(1, &opt(0, 0, &[0xFD, 0xE9, 0, 2, 0x78, 0x79], None)),
            www_answer,
        ),
        row(
            "H36",
            "unknown EDNS flag bits",
            with_opt(1, &opt(0, 0x7FFF, &[], None)),
            www_answer,
        ),
        knot_differs(
            row(
                "H37",
                "TSIG with a key we do not hold",
                tsig,
                error(rcode::NOTAUTH, true),
            ),
            formerr_q,
        ),
        row("H38", "Z bit set", with_flag(0x0040), www_answer),
        row("H39", "AD bit set", with_flag(0x0020), www_answer),
        row(
            "H40",
            "TC, AA and RA set in the query",
            with_flag(0x0200 | 0x0400 | 0x0080),
            www_answer,
        ),
        row(
            "H41",
            "QTYPE 0",
            q("www.example.com.", 0, 1, [1, 0, 0, 0]),
            error(rcode::NOTIMP, true),
        ),
        row(
            "H42",
            "QTYPE AXFR over UDP",
            q("example.com.", 252, 1, [1, 0, 0, 0]),
            error(rcode::NOTIMP, true),
        ),
        row(
            "H43",
            "QTYPE IXFR",
            q("example.com.", 251, 1, [1, 0, 0, 0]),
            error(rcode::NOTAUTH, true),
        ),
    ]
}

/// The normal query asked after every row: the server must still answer it.
#[must_use]
pub fn normal_query() -> Vec<u8> {
    dns::query(0x7777, "www.example.com.", RecordType::A, None)
}
