use std::path::Path;

use dnsfast_common::wire::rcode;

use super::*;
use crate::zone::read_text;

const ZONE: &str = "$TTL 300
@       SOA ns1 hostmaster 1 7200 3600 1209600 60
        NS  ns1
ns1     A   198.18.0.53
www     A   198.18.0.1
        A   198.18.0.2
        AAAA 2001:2::1
alias   CNAME www
chain1  CNAME chain2
chain2  CNAME alias
outside CNAME www.example.net.
loop1   CNAME loop2
loop2   CNAME loop1
mail    MX  10 mx1
mx1     A   198.18.0.25
*.wild  A   198.18.0.99
a.b.c   TXT \"deep\"
sub     NS  ns.sub
ns.sub  A   198.18.9.9
d0      CNAME d1
d1      CNAME d2
d2      CNAME d3
d3      CNAME d4
d4      CNAME d5
d5      CNAME d6
d6      CNAME d7
d7      CNAME d8
d8      CNAME d9
d9      CNAME d10
d10      CNAME d11
d11      CNAME d12
d12     A   198.18.0.12
";

fn zones() -> Zones {
    let origin = Name::from_ascii("example.com.").unwrap();
    let recs = read_text(ZONE, Path::new("t.zone"), &origin).unwrap();
    Zones::new(vec![
        Zone::build(&origin, Path::new("t.zone"), recs).unwrap(),
    ])
}

fn ask(name: &str, t: RecordType) -> Answer {
    resolve(&zones(), &Name::from_ascii(name).unwrap(), t, DNSClass::IN)
}

fn names(rs: &[Record]) -> Vec<String> {
    rs.iter()
        .map(|r| format!("{} {}", r.name.to_ascii().to_lowercase(), r.record_type()))
        .collect()
}

#[test]
fn positive_answers_keep_the_asked_case() {
    let a = ask("WwW.example.com.", RecordType::A);
    assert_eq!((a.rcode, a.aa), (rcode::NOERROR, true));
    assert_eq!(a.answer.len(), 2);
    assert_eq!(a.answer[0].name.to_ascii(), "WwW.example.com.");
    assert!(a.authority.is_empty() && a.additional.is_empty());
}

#[test]
fn negative_answers_carry_the_soa_with_the_negative_ttl() {
    let nx = ask("nope.example.com.", RecordType::A);
    assert_eq!((nx.rcode, nx.aa), (rcode::NXDOMAIN, true));
    assert_eq!(names(&nx.authority), ["example.com. SOA"]);
    assert_eq!(nx.authority[0].ttl, 60);
    let nodata = ask("www.example.com.", RecordType::MX);
    assert_eq!(nodata.rcode, rcode::NOERROR);
    assert!(nodata.answer.is_empty());
    assert_eq!(names(&nodata.authority), ["example.com. SOA"]);
    // Empty non-terminals exist (RFC 8020).
    let ent = ask("b.c.example.com.", RecordType::A);
    assert_eq!(ent.rcode, rcode::NOERROR);
    assert!(ent.answer.is_empty());
}

#[test]
fn cname_chains() {
    let a = ask("chain1.example.com.", RecordType::A);
    assert_eq!(
        names(&a.answer),
        [
            "chain1.example.com. CNAME",
            "chain2.example.com. CNAME",
            "alias.example.com. CNAME",
            "www.example.com. A",
            "www.example.com. A"
        ]
    );
    let out = ask("outside.example.com.", RecordType::A);
    assert_eq!(names(&out.answer), ["outside.example.com. CNAME"]);
    assert_eq!(out.rcode, rcode::NOERROR);
    let lp = ask("loop1.example.com.", RecordType::A);
    assert_eq!(
        names(&lp.answer),
        ["loop1.example.com. CNAME", "loop2.example.com. CNAME"],
        "a loop stops where a name repeats"
    );
    let deep = ask("d0.example.com.", RecordType::A);
    assert_eq!(
        deep.answer.len(),
        MAX_CNAME_CHAIN + 1,
        "the chain stops at the cap"
    );
    assert!(
        deep.answer
            .iter()
            .all(|r| r.record_type() == RecordType::CNAME)
    );
    let c = ask("alias.example.com.", RecordType::CNAME);
    assert_eq!(names(&c.answer), ["alias.example.com. CNAME"]);
}

#[test]
fn wildcards() {
    let w = ask("anything.wild.example.com.", RecordType::A);
    assert_eq!(names(&w.answer), ["anything.wild.example.com. A"]);
    let deep = ask("x.y.wild.example.com.", RecordType::A);
    assert_eq!(names(&deep.answer), ["x.y.wild.example.com. A"]);
    let nodata = ask("anything.wild.example.com.", RecordType::AAAA);
    assert!(nodata.answer.is_empty());
    assert_eq!(nodata.rcode, rcode::NOERROR);
    // The wildcard owner asked by its literal name: in the zone, answered as itself.
    let literal = ask("*.wild.example.com.", RecordType::A);
    assert_eq!((literal.rcode, literal.aa), (rcode::NOERROR, true));
    assert_eq!(names(&literal.answer), ["*.wild.example.com. A"]);
}

#[test]
fn referrals_and_glue() {
    let r = ask("host.sub.example.com.", RecordType::A);
    assert_eq!((r.rcode, r.aa), (rcode::NOERROR, false));
    assert!(r.answer.is_empty());
    assert_eq!(names(&r.authority), ["sub.example.com. NS"]);
    assert_eq!(names(&r.additional), ["ns.sub.example.com. A"]);
    // Glue itself is not authoritative data.
    let g = ask("ns.sub.example.com.", RecordType::A);
    assert!(!g.aa);
    assert!(g.answer.is_empty());
    // DS at the cut is the parent's: NODATA with the SOA, authoritative.
    let ds = ask("sub.example.com.", RecordType::DS);
    assert_eq!((ds.rcode, ds.aa), (rcode::NOERROR, true));
    assert_eq!(names(&ds.authority), ["example.com. SOA"]);
}

#[test]
fn additional_for_mx_and_outside_zones_refused() {
    let mx = ask("mail.example.com.", RecordType::MX);
    assert_eq!(names(&mx.additional), ["mx1.example.com. A"]);
    let r = ask("www.example.net.", RecordType::A);
    assert_eq!((r.rcode, r.aa), (rcode::REFUSED, false));
    let ch = resolve(
        &zones(),
        &Name::from_ascii("www.example.com.").unwrap(),
        RecordType::A,
        DNSClass::CH,
    );
    assert_eq!(ch.rcode, rcode::REFUSED);
}

#[test]
fn any_gets_one_rrset() {
    let a = ask("www.example.com.", RecordType::ANY);
    assert_eq!(
        a.answer
            .iter()
            .map(Record::record_type)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1
    );
}

#[test]
fn chaos_identity() {
    let id = Identity {
        server_id: Some("ns1.test".into()),
        version: None,
        nsid: None,
    };
    let ask = |n: &str, t| chaos(&id, &Name::from_ascii(n).unwrap(), t);
    for n in ["id.server.", "HOSTNAME.BIND.", "Id.Server."] {
        let a = ask(n, RecordType::TXT);
        assert_eq!((a.rcode, a.aa), (rcode::NOERROR, false), "{n}");
        assert_eq!(a.answer.len(), 1);
        assert_eq!(a.answer[0].dns_class, DNSClass::CH);
        assert_eq!(a.answer[0].ttl, 0);
        assert_eq!(
            a.answer[0].data,
            RData::TXT(TXT::new(vec!["ns1.test".into()]))
        );
    }
    assert_eq!(ask("id.server.", RecordType::ANY).answer.len(), 1);
    // Not configured, another type, another name: REFUSED.
    for (n, t) in [
        ("version.bind.", RecordType::TXT),
        ("id.server.", RecordType::A),
        ("www.example.com.", RecordType::TXT),
    ] {
        let a = ask(n, t);
        assert_eq!((a.rcode, a.answer.len()), (rcode::REFUSED, 0), "{n} {t}");
    }
}
