//! The answer engine for everything the hot path does not answer: RFC 1034 §4.3.2 lookup over
//! the loaded zones (referrals, CNAME chains, wildcards, negative answers), as an authoritative
//! server gives it.

use std::{collections::HashMap, sync::Arc};

use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType, rdata::TXT};

use crate::{
    config::Identity,
    zone::{Node, Zone},
};

/// Longest CNAME chain followed inside a zone.
pub const MAX_CNAME_CHAIN: usize = 8;

/// Every label of `name`: hickory's `num_labels` leaves out a leading `*`, and a query may ask
/// for a wildcard owner by its literal name.
fn labels(name: &LowerName) -> u8 {
    name.num_labels() + u8::from(name.is_wildcard())
}

/// The zones an instance serves, found by longest match.
#[derive(Debug, Default)]
pub struct Zones {
    by_apex: HashMap<LowerName, Arc<Zone>>,
    /// Label counts of the apexes, longest first, so a lookup tries only lengths that exist.
    depths: Vec<u8>,
}

impl Zones {
    /// Indexes `zones`.
    #[must_use]
    pub fn new(zones: Vec<Zone>) -> Self {
        let mut depths: Vec<u8> = zones.iter().map(|z| labels(&z.apex)).collect();
        depths.sort_unstable_by(|a, b| b.cmp(a));
        depths.dedup();
        let by_apex = zones
            .into_iter()
            .map(|z| (z.apex.clone(), Arc::new(z)))
            .collect();
        Self { by_apex, depths }
    }

    /// The zone that holds `name`: the one with the longest apex at or above it.
    #[must_use]
    pub fn find(&self, name: &LowerName) -> Option<&Zone> {
        let labels = labels(name);
        let mut n = name.clone();
        let mut at = labels;
        for &d in &self.depths {
            if d > labels {
                continue;
            }
            while at > d {
                n = n.base_name();
                at -= 1;
            }
            if let Some(z) = self.by_apex.get(&n) {
                return Some(z);
            }
        }
        None
    }

    /// All zones.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.by_apex.values()
    }

    /// Number of zones.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_apex.len()
    }

    /// Whether there are no zones.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_apex.is_empty()
    }
}

/// Response code and sections of an answer, before encoding.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    /// RCODE (may be extended, > 15).
    pub rcode: u16,
    /// Authoritative answer.
    pub aa: bool,
    /// Answer section.
    pub answer: Vec<Record>,
    /// Authority section.
    pub authority: Vec<Record>,
    /// Additional section (optional: dropped first when space runs out).
    pub additional: Vec<Record>,
}

impl Answer {
    /// An answer with `rcode` and no records.
    #[must_use]
    pub fn error(rcode: u16) -> Self {
        Self {
            rcode,
            ..Self::default()
        }
    }
}

/// Answers `qname`/`qtype` in class `qclass` from `zones`.
#[must_use]
pub fn resolve(zones: &Zones, qname: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
    use dnsfast_common::wire::rcode::{NOERROR, NXDOMAIN, REFUSED};

    // QCLASS ANY (RFC 1035 §3.2.5) matches our data, all of class IN, as with Knot.
    if qclass != DNSClass::IN && qclass != DNSClass::ANY {
        return Answer::error(REFUSED);
    }
    let Some(zone) = zones.find(&LowerName::new(qname)) else {
        return Answer::error(REFUSED);
    };
    let mut out = Answer {
        rcode: NOERROR,
        aa: true,
        ..Answer::default()
    };
    let mut name = qname.clone();
    let mut visited = vec![LowerName::new(qname)];

    for _ in 0..=MAX_CNAME_CHAIN {
        let lname = LowerName::new(&name);
        // At or below a zone cut we are not authoritative: refer, except for DS at the cut itself,
        // which the parent side answers.
        if let Some(cut) = zone.cut_above(&lname)
            && !(qtype == RecordType::DS && cut == lname)
        {
            referral(zone, &cut, &mut out);
            return out;
        }
        let node = zone
            .node(&lname)
            .map(|n| (n, name.clone()))
            .or_else(|| wildcard(zone, &lname, &name));
        let Some((node, owner)) = node else {
            if zone.is_empty_non_terminal(&lname) {
                negative(zone, &mut out);
            } else {
                out.rcode = NXDOMAIN;
                negative(zone, &mut out);
            }
            return out;
        };
        if qtype == RecordType::ANY {
            // RFC 8482: one RRset is a complete answer to ANY: the node's first, in type order.
            // A node without any (a steered name's: the server adds its records) is a NODATA.
            if let Some(set) = node.rrsets.first() {
                out.answer.extend(set.records(&owner));
                additional(zones, set.rtype, &set.rdatas, &mut out);
            } else {
                negative(zone, &mut out);
            }
            return out;
        }
        if let Some(set) = node.get(qtype) {
            out.answer.extend(set.records(&owner));
            additional(zones, set.rtype, &set.rdatas, &mut out);
            return out;
        }
        let Some(cname) = node.get(RecordType::CNAME) else {
            negative(zone, &mut out);
            return out;
        };
        out.answer.extend(cname.records(&owner));
        let Some(RData::CNAME(target)) = cname.rdatas.first() else {
            return out;
        };
        let next = LowerName::new(&target.0);
        // A chain that leaves the zone ends here, as with Knot: the resolver follows it (into
        // another of our zones too, with that zone's authority). So does a loop.
        if !zone.apex.zone_of(&next) || visited.contains(&next) {
            return out;
        }
        visited.push(next);
        name = target.0.clone();
    }
    out
}

/// The RCODE for a QTYPE we never answer with data, as Knot gives it: 0 (reserved) and AXFR
/// over UDP are NOTIMP; zone transfers, which we do not serve, are NOTAUTH.
#[must_use]
pub fn unserved_qtype(qtype: RecordType, tcp: bool) -> Option<u16> {
    use dnsfast_common::wire::rcode::{NOTAUTH, NOTIMP};

    match qtype {
        RecordType::ZERO => Some(NOTIMP),
        RecordType::AXFR if !tcp => Some(NOTIMP),
        RecordType::AXFR | RecordType::IXFR => Some(NOTAUTH),
        _ => None,
    }
}

/// Answers a query in class CH: `id.server.` and `hostname.bind.` give the configured identity,
/// `version.server.` and `version.bind.` the configured version, as one TXT record with TTL 0
/// (RFC 4892); anything else, or an identity not configured, is REFUSED. Like Knot, AA stays
/// clear: these names are in no zone.
#[must_use]
pub fn chaos(id: &Identity, qname: &Name, qtype: RecordType) -> Answer {
    use dnsfast_common::wire::rcode::{NOERROR, REFUSED};

    let value = match qname.to_lowercase().to_ascii().as_str() {
        "id.server." | "hostname.bind." => id.server_id.as_deref(),
        "version.server." | "version.bind." => id.version.as_deref(),
        _ => None,
    };
    match value {
        Some(v) if matches!(qtype, RecordType::TXT | RecordType::ANY) => {
            let mut r = Record::from_rdata(qname.clone(), 0, RData::TXT(TXT::new(vec![v.into()])));
            r.dns_class = DNSClass::CH;
            Answer {
                rcode: NOERROR,
                aa: false,
                answer: vec![r],
                ..Answer::default()
            }
        }
        _ => Answer::error(REFUSED),
    }
}

/// The wildcard that synthesises `name` (RFC 4592): `*.<closest encloser>`, if the closest
/// encloser has one and `name` is not at or below a cut.
fn wildcard<'z>(zone: &'z Zone, lname: &LowerName, name: &Name) -> Option<(&'z Node, Name)> {
    // An empty non-terminal exists: a wildcard does not apply to it (RFC 4592 §2.2.2).
    if zone.is_empty_non_terminal(lname) {
        return None;
    }
    let mut encloser = lname.base_name();
    while zone.apex.zone_of(&encloser) {
        if zone.node(&encloser).is_some() || zone.is_empty_non_terminal(&encloser) {
            let star = LowerName::new(&Name::from(encloser.clone()).prepend_label("*").ok()?);
            return zone.node(&star).map(|n| (n, name.clone()));
        }
        encloser = encloser.base_name();
    }
    None
}

/// Adds the SOA for a negative answer (NXDOMAIN or NODATA), with the negative TTL.
fn negative(zone: &Zone, out: &mut Answer) {
    let mut soa = zone.soa.clone();
    soa.ttl = zone.negative_ttl;
    out.authority.push(soa);
}

/// A referral to the zone cut `cut`: its NS RRset in authority and glue in additional, AA=0.
fn referral(zone: &Zone, cut: &LowerName, out: &mut Answer) {
    let Some(ns) = zone.node(cut).and_then(|n| n.get(RecordType::NS)) else {
        return;
    };
    // AA describes the answer section: a pure referral is not authoritative.
    if out.answer.is_empty() {
        out.aa = false;
    }
    let owner = Name::from(cut.clone());
    out.authority.extend(ns.records(&owner));
    for d in &ns.rdatas {
        if let RData::NS(target) = d {
            addresses_of(zone, &target.0, &mut out.additional);
        }
    }
}

/// Adds A/AAAA records of names that MX, SRV and NS records point to, when we hold them.
fn additional(zones: &Zones, rtype: RecordType, rdatas: &[RData], out: &mut Answer) {
    for d in rdatas {
        let target = match (rtype, d) {
            (RecordType::MX, RData::MX(mx)) => &mx.exchange,
            (RecordType::SRV, RData::SRV(srv)) => &srv.target,
            (RecordType::NS, RData::NS(ns)) => &ns.0,
            _ => continue,
        };
        if let Some(zone) = zones.find(&LowerName::new(target)) {
            addresses_of(zone, target, &mut out.additional);
        }
    }
}

/// Appends the A and AAAA records of `target` in `zone` to `out`.
fn addresses_of(zone: &Zone, target: &Name, out: &mut Vec<Record>) {
    if let Some(node) = zone.node(&LowerName::new(target)) {
        for t in [RecordType::A, RecordType::AAAA] {
            if let Some(set) = node.get(t) {
                out.extend(set.records(target));
            }
        }
    }
}

#[cfg(test)]
mod tests;
