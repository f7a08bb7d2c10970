//! The protocol battery: the zones under `tests/data/` and the questions asked of them. The same
//! battery runs over XDP and over the socket path (they must agree), over IPv4 and IPv6, UDP and
//! TCP, and against Knot DNS serving the same zones (`tests/tests/conformance.rs`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use hickory_proto::rr::{DNSClass, RecordType};

use crate::{dns, dns::Normal, host::TestHost, workspace_root};

/// What both servers are told about themselves (Knot's `server` section says the same).
pub const IDENTITY: &str = "ns1.dnsfast.test";
/// Version string for `version.bind`.
pub const VERSION: &str = "battery";
/// NSID payload.
pub const NSID: &str = "ns1";

/// The zones: (origin, file).
#[must_use]
pub fn zones() -> Vec<(&'static str, PathBuf)> {
    let data = workspace_root().join("tests/data");
    vec![
        ("example.com.", data.join("hot.zone")),
        ("example.org.", data.join("example.org.zone")),
        (
            "18.198.in-addr.arpa.",
            data.join("18.198.in-addr.arpa.zone"),
        ),
        (
            "0.0.0.0.2.0.0.0.1.0.0.2.ip6.arpa.",
            data.join("0.0.0.0.2.0.0.0.1.0.0.2.ip6.arpa.zone"),
        ),
    ]
}

/// The `[server]` lines that configure [`IDENTITY`], [`VERSION`] and [`NSID`].
#[must_use]
pub fn identity_config() -> String {
    format!("identity = \"{IDENTITY}\"\nversion = \"{VERSION}\"\nnsid = \"{NSID}\"\n")
}

/// A battery question.
pub struct Case {
    /// What it asks, for messages.
    pub what: String,
    /// The query.
    pub msg: Vec<u8>,
    /// Whether the XDP program answers it over UDP.
    pub hot: bool,
}

/// Queries the XDP program passes up (it does not hold the NSID) that the daemon answers with
/// the hot builder, on both transports.
pub const DAEMON_HOT: &[&str] = &["www A +nsid"];

/// Queries that are hot but whose answer may need more room than a veth frame has (448 bytes
/// more than the query): passed up with `pass_no_room` when it lacks, answered by the daemon.
pub const NO_ROOM_ON_VETH: &[&str] = &["16 AAAA +edns"];

/// `q` with `option` (code, length and data) appended to its OPT record, which must be last.
#[must_use]
pub fn with_option(mut q: Vec<u8>, option: &[u8]) -> Vec<u8> {
    let n = q.len();
    let rdlen = u16::from_be_bytes([q[n - 2], q[n - 1]]) + option.len() as u16;
    q[n - 2..].copy_from_slice(&rdlen.to_be_bytes());
    q.extend_from_slice(option);
    q
}

/// An empty NSID option (RFC 5001 request).
pub const NSID_REQUEST: [u8; 4] = [0, 3, 0, 0];
/// A COOKIE option with an 8-byte client cookie.
pub const CLIENT_COOKIE: [u8; 12] = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];

fn case(what: impl Into<String>, msg: Vec<u8>, hot: bool) -> Case {
    Case {
        what: what.into(),
        msg,
        hot,
    }
}

/// Every battery question, with IDs 1, 2, … in order.
#[must_use]
#[expect(clippy::too_many_lines, reason = "a list of cases")]
pub fn cases() -> Vec<Case> {
    use RecordType::{A, AAAA, ANY, AXFR, CAA, CNAME, DS, MX, NS, PTR, SOA, SRV, TXT, Unknown};
    let long = format!(
        "{a}.{a}.{a}.{}.example.com.",
        "z".repeat(49),
        a = "a".repeat(63)
    );
    let sixteen = "sixteen-aaaa-records-under-a-rather-long-owner.example.com.";
    let ecs = dns::ecs_option(1, 24, 0, &[198, 18, 7]);
    let edns = Some((1232, false));
    let dnssec = Some((1232, true));
    let mut v1 = dns::query(0, "www.example.com.", A, edns);
    let n = v1.len();
    v1[n - 5] = 1;
    let mut trailing = dns::query(0, "www.example.com.", A, None);
    trailing.push(0);

    let mut list = vec![
        // The hot names of example.com (the XDP tests' zone).
        case("www A", dns::query(0, "www.example.com.", A, None), true),
        case(
            "www AAAA +do",
            dns::query(0, "www.example.com.", AAAA, dnssec),
            true,
        ),
        case(
            "WWW A (0x20)",
            dns::query(0, "WwW.ExAmPlE.cOm.", A, None),
            true,
        ),
        case(
            "single A +cookie",
            with_option(
                dns::query(0, "single.example.com.", A, Some((4096, true))),
                &CLIENT_COOKIE,
            ),
            true,
        ),
        case("255-octet name", dns::query(0, &long, A, edns), true),
        case("16 AAAA +edns", dns::query(0, sixteen, AAAA, edns), true),
        case(
            "16 AAAA, 512 limit (TC)",
            dns::query(0, sixteen, AAAA, None),
            false,
        ),
        case(
            "www A +ecs",
            with_option(dns::query(0, "www.example.com.", A, edns), &ecs),
            true,
        ),
        case(
            "www A +nsid",
            with_option(dns::query(0, "www.example.com.", A, edns), &NSID_REQUEST),
            false,
        ),
        case(
            "CNAME to hot",
            dns::query(0, "alias.example.com.", A, None),
            false,
        ),
        case(
            "NXDOMAIN",
            dns::query(0, "nope.example.com.", A, edns),
            false,
        ),
        case(
            "NODATA",
            dns::query(0, "single.example.com.", AAAA, None),
            false,
        ),
        case(
            "MX + additional",
            dns::query(0, "mail.example.com.", MX, None),
            false,
        ),
        case("SOA", dns::query(0, "example.com.", SOA, None), false),
        case("NS", dns::query(0, "example.com.", NS, dnssec), false),
        case(
            "outside our zones",
            dns::query(0, "www.example.net.", A, None),
            false,
        ),
        case(
            "class CH, a zone name",
            dns::query_class(0, "www.example.com.", A, DNSClass::CH, None),
            false,
        ),
        case("EDNS version 1", v1, false),
        case("trailing byte", trailing, false),
        // example.org: every type and lookup case.
        case("org SOA", dns::query(0, "example.org.", SOA, None), false),
        case(
            "org NS + glue",
            dns::query(0, "example.org.", NS, None),
            false,
        ),
        case("org MX", dns::query(0, "example.org.", MX, edns), false),
        case("org TXT", dns::query(0, "example.org.", TXT, None), false),
        case("org CAA", dns::query(0, "example.org.", CAA, None), false),
        case(
            "CAA with parameters, unknown tag",
            dns::query(0, "caa.example.org.", CAA, None),
            false,
        ),
        case(
            "org ANY (one RRset)",
            dns::query(0, "example.org.", ANY, None),
            false,
        ),
        case(
            "org www A",
            dns::query(0, "www.example.org.", A, None),
            true,
        ),
        case(
            "org www AAAA",
            dns::query(0, "www.example.org.", AAAA, dnssec),
            true,
        ),
        case(
            "mixed-case owner",
            dns::query(0, "mixed.case.example.org.", A, None),
            true,
        ),
        case(
            "ns1 AAAA",
            dns::query(0, "ns1.example.org.", AAAA, None),
            true,
        ),
        case(
            "TXT, several strings",
            dns::query(0, "txt.example.org.", TXT, None),
            false,
        ),
        case(
            "TXT, escapes",
            dns::query(0, "escaped.example.org.", TXT, None),
            false,
        ),
        case(
            "TXT 600 bytes, 512 (TC)",
            dns::query(0, "long.example.org.", TXT, None),
            false,
        ),
        case(
            "TXT 600 bytes +edns",
            dns::query(0, "long.example.org.", TXT, edns),
            false,
        ),
        case(
            "SRV + additional",
            dns::query(0, "_sip._udp.example.org.", SRV, None),
            false,
        ),
        case(
            "SRV, target outside",
            dns::query(0, "_ext._tcp.example.org.", SRV, None),
            false,
        ),
        case(
            "MX, additional overflows 512",
            dns::query(0, "many.example.org.", MX, None),
            false,
        ),
        case(
            "MX, additional +edns",
            dns::query(0, "many.example.org.", MX, edns),
            false,
        ),
        case(
            "CNAME, one step",
            dns::query(0, "cname.example.org.", A, None),
            false,
        ),
        case(
            "CNAME asked",
            dns::query(0, "cname.example.org.", CNAME, None),
            false,
        ),
        case(
            "CNAME, ANY",
            dns::query(0, "cname.example.org.", ANY, None),
            false,
        ),
        case(
            "CNAME chain",
            dns::query(0, "chain1.example.org.", AAAA, None),
            false,
        ),
        case(
            "CNAME loop",
            dns::query(0, "loop1.example.org.", A, None),
            false,
        ),
        case(
            "CNAME chain past the cap",
            dns::query(0, "deep0.example.org.", A, None),
            false,
        ),
        case(
            "CNAME out of our zones",
            dns::query(0, "outside.example.org.", A, None),
            false,
        ),
        case(
            "CNAME into another zone",
            dns::query(0, "cross.example.org.", A, None),
            false,
        ),
        case(
            "wildcard A",
            dns::query(0, "foo.wild.example.org.", A, None),
            false,
        ),
        case(
            "wildcard TXT",
            dns::query(0, "foo.wild.example.org.", TXT, None),
            false,
        ),
        case(
            "wildcard NODATA",
            dns::query(0, "foo.wild.example.org.", AAAA, None),
            false,
        ),
        case(
            "wildcard, two labels",
            dns::query(0, "x.y.wild.example.org.", A, None),
            false,
        ),
        case(
            "wildcard, name exists",
            dns::query(0, "exists.wild.example.org.", A, None),
            true,
        ),
        case(
            "wildcard, existing name NODATA",
            dns::query(0, "exists.wild.example.org.", TXT, None),
            false,
        ),
        case(
            "wildcard's parent ENT",
            dns::query(0, "wild.example.org.", A, None),
            false,
        ),
        case(
            "the wildcard itself",
            dns::query(0, "*.wild.example.org.", A, None),
            true,
        ),
        case("ENT", dns::query(0, "c.ent.example.org.", A, None), false),
        case(
            "ENT deeper",
            dns::query(0, "b.c.ent.example.org.", TXT, None),
            false,
        ),
        case(
            "NXDOMAIN under ENT",
            dns::query(0, "x.c.ent.example.org.", A, None),
            false,
        ),
        case(
            "referral (NS at cut)",
            dns::query(0, "sub.example.org.", NS, None),
            false,
        ),
        case(
            "referral (A at cut)",
            dns::query(0, "sub.example.org.", A, None),
            false,
        ),
        case(
            "referral below cut",
            dns::query(0, "www.sub.example.org.", A, None),
            false,
        ),
        case(
            "occluded data",
            dns::query(0, "occluded.sub.example.org.", A, None),
            false,
        ),
        case(
            "glue asked",
            dns::query(0, "ns.sub.example.org.", A, edns),
            false,
        ),
        case(
            "DS at cut (parent)",
            dns::query(0, "sub.example.org.", DS, None),
            false,
        ),
        case(
            "unknown type",
            dns::query(0, "unknown.example.org.", Unknown(65280), None),
            false,
        ),
        case(
            "unknown type, empty data",
            dns::query(0, "unknown.example.org.", Unknown(65281), None),
            false,
        ),
        case(
            "A in generic form",
            dns::query(0, "generic.example.org.", A, None),
            true,
        ),
        case(
            "PTR in a forward zone",
            dns::query(0, "ptr.example.org.", PTR, None),
            false,
        ),
        case(
            "$INCLUDE origin",
            dns::query(0, "host.inc.example.org.", A, None),
            true,
        ),
        case(
            "$INCLUDE apex",
            dns::query(0, "inc.example.org.", TXT, None),
            false,
        ),
        case(
            "org NXDOMAIN +do",
            dns::query(0, "nope.example.org.", A, dnssec),
            false,
        ),
        case(
            "AXFR (UDP NOTIMP, TCP NOTAUTH)",
            dns::query(0, "example.org.", AXFR, None),
            false,
        ),
        case(
            "QCLASS ANY",
            dns::query_class(0, "www.example.org.", A, DNSClass::ANY, None),
            false,
        ),
        case(
            "QCLASS NONE",
            dns::query_class(0, "www.example.org.", A, DNSClass::NONE, None),
            false,
        ),
        // Reverse zones.
        case(
            "PTR v4",
            dns::query(0, "80.30.18.198.in-addr.arpa.", PTR, None),
            false,
        ),
        case(
            "PTR v6",
            dns::query(
                0,
                "0.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.0.0.0.0.2.0.0.0.1.0.0.2.ip6.arpa.",
                PTR,
                None,
            ),
            false,
        ),
        case(
            "reverse NXDOMAIN",
            dns::query(0, "1.1.18.198.in-addr.arpa.", PTR, None),
            false,
        ),
        // Class CH identity (RFC 4892) and NSID (RFC 5001).
        case(
            "id.server",
            dns::query_class(0, "id.server.", TXT, DNSClass::CH, None),
            false,
        ),
        case(
            "hostname.bind",
            dns::query_class(0, "hostname.bind.", TXT, DNSClass::CH, None),
            false,
        ),
        case(
            "version.bind",
            dns::query_class(0, "version.bind.", TXT, DNSClass::CH, None),
            false,
        ),
        case(
            "version.server +nsid",
            with_option(
                dns::query_class(0, "version.server.", TXT, DNSClass::CH, edns),
                &NSID_REQUEST,
            ),
            false,
        ),
        case(
            "id.server A",
            dns::query_class(0, "id.server.", A, DNSClass::CH, None),
            false,
        ),
        case(
            "unknown CH name",
            dns::query_class(0, "authors.bind.", TXT, DNSClass::CH, None),
            false,
        ),
        case(
            "NXDOMAIN +nsid",
            with_option(dns::query(0, "nope.example.org.", A, edns), &NSID_REQUEST),
            false,
        ),
    ];
    for (i, c) in list.iter_mut().enumerate() {
        let id = u16::try_from(i + 1).expect("fewer than 65536 cases");
        c.msg[..2].copy_from_slice(&id.to_be_bytes());
    }
    list
}

/// Every case asked of the server on `host` (port 53) over IPv4 and IPv6, UDP and TCP: (case and
/// transport, answer in normal form), in a fixed order.
///
/// # Panics
/// When a case gets no answer within `timeout` or an answer that does not parse.
#[must_use]
pub fn ask_all(host: &TestHost, cases: &[Case], timeout: Duration) -> Vec<(String, Normal)> {
    let servers: [SocketAddr; 2] = [(host.v4, 53).into(), (host.v6, 53).into()];
    let mut out = Vec::new();
    for c in cases {
        for s in servers {
            let udp = dns::udp_exchange(s, &c.msg, timeout)
                .unwrap_or_else(|e| panic!("{} over UDP {s}: {e:#}", c.what));
            out.push((format!("{} udp {s}", c.what), dns::normalize(&udp).unwrap()));
            let tcp = dns::tcp_exchange(s, std::slice::from_ref(&c.msg), timeout)
                .unwrap_or_else(|e| panic!("{} over TCP {s}: {e:#}", c.what));
            out.push((
                format!("{} tcp {s}", c.what),
                dns::normalize(&tcp[0]).unwrap(),
            ));
        }
    }
    out
}
