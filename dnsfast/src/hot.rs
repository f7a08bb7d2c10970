//! Hot answers: the compiled A/AAAA answers both executors serve without a zone lookup.
//!
//! [`HotTable`] is what `compile` produces; the userspace server answers from it directly and
//! [`HotTable::diff`] gives the [`Change`]s that the XDP maps need to match it.

use std::{
    borrow::Borrow,
    fmt::{self, Write as _},
    sync::Arc,
};

use dnsfast_common::{
    maps::{AnswerLarge, AnswerSmall, LARGE_RDATA, MAX_HOT_RECORDS, REGION_ANY, SMALL_RDATA},
    wire::{AnswerData, TYPE_A, TYPE_AAAA},
};
use foldhash::{HashMap, HashMapExt};
use hickory_proto::{
    rr::{Name, RData, RecordType},
    serialize::binary::BinEncodable,
};

use crate::{answer::Zones, zone::Zone};

/// Key of a hot answer: QTYPE and region (big-endian) followed by the lowercased wire name. The
/// same bytes, zero-padded to the size class, are the XDP key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HotKey(Box<[u8]>);

impl HotKey {
    /// A key for `wire_name` (wire form; lowercased here).
    #[must_use]
    pub fn new(wire_name: &[u8], qtype: u16, region: u16) -> Self {
        let mut buf = [0u8; 4 + 255];
        Self(lookup_key(&mut buf, wire_name, qtype, region).into())
    }

    /// The lowercased wire name.
    #[must_use]
    pub fn name(&self) -> &[u8] {
        &self.0[4..]
    }

    /// QTYPE.
    #[must_use]
    pub fn qtype(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }

    /// Region.
    #[must_use]
    pub fn region(&self) -> u16 {
        u16::from_be_bytes([self.0[2], self.0[3]])
    }

    /// The name in presentation form.
    #[must_use]
    pub fn presentation(&self) -> String {
        wire_to_text(self.name())
    }
}

impl Borrow<[u8]> for HotKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} r{}",
            self.presentation(),
            RecordType::from(self.qtype()),
            self.region()
        )
    }
}

/// Writes the lookup form of a query's key into `buf`: QTYPE, region, lowercased QNAME (the
/// ASCII rule of `HotKeyN::new` and `wire::build_key`). `qname` is the wire-form QNAME as
/// received. [`HotKey::new`] is made the same way, so a lookup finds it.
pub fn lookup_key<'b>(
    buf: &'b mut [u8; 4 + 255],
    qname: &[u8],
    qtype: u16,
    region: u16,
) -> &'b [u8] {
    let n = qname.len().min(255);
    buf[..2].copy_from_slice(&qtype.to_be_bytes());
    buf[2..4].copy_from_slice(&region.to_be_bytes());
    for (d, s) in buf[4..4 + n].iter_mut().zip(qname) {
        *d = s.to_ascii_lowercase();
    }
    &buf[..4 + n]
}

/// Presentation form of a wire name (escapes per RFC 1035 §5.1).
#[must_use]
pub fn wire_to_text(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < wire.len() {
        let len = usize::from(wire[i]);
        if len == 0 {
            break;
        }
        for &b in wire.iter().skip(i + 1).take(len) {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7E => out.push(char::from(b)),
                _ => {
                    let _ = write!(out, "\\{b:03}");
                }
            }
        }
        out.push('.');
        i += 1 + len;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// A compiled A or AAAA answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotAnswer {
    /// TTL.
    pub ttl: u32,
    /// A or AAAA.
    pub rrtype: u16,
    /// Number of addresses.
    pub count: u16,
    /// The addresses back to back, network order.
    pub rdata: Box<[u8]>,
}

/// The addresses in `rdata`: 4-byte IPv4 ones for A (1), 16-byte IPv6 ones for any other type
/// (AAAA, 28), back to back, as in every answer slot and set.
pub fn addresses(rrtype: u16, rdata: &[u8]) -> impl Iterator<Item = std::net::IpAddr> + '_ {
    let per = if rrtype == TYPE_A { 4 } else { 16 };
    rdata.chunks_exact(per).map(move |c| match per {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(c).expect("4 bytes")),
        _ => std::net::IpAddr::from(<[u8; 16]>::try_from(c).expect("16 bytes")),
    })
}

impl HotAnswer {
    /// Its addresses, in order.
    pub fn addresses(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        addresses(self.rrtype, &self.rdata)
    }

    /// The answer for an A or AAAA RRset, if it can be hot (1..=16 records).
    #[must_use]
    pub fn from_rrset(ttl: u32, rdatas: &[RData]) -> Option<Self> {
        if rdatas.is_empty() || rdatas.len() > MAX_HOT_RECORDS {
            return None;
        }
        let mut rdata = Vec::new();
        let mut rrtype = 0;
        for d in rdatas {
            match d {
                RData::A(a) => {
                    rrtype = TYPE_A;
                    rdata.extend_from_slice(&a.0.octets());
                }
                RData::AAAA(a) => {
                    rrtype = TYPE_AAAA;
                    rdata.extend_from_slice(&a.0.octets());
                }
                _ => return None,
            }
        }
        Some(Self {
            ttl,
            rrtype,
            count: rdatas.len() as u16,
            rdata: rdata.into_boxed_slice(),
        })
    }

    /// Whether it fits a small slot.
    #[must_use]
    pub fn is_small(&self) -> bool {
        self.rdata.len() <= SMALL_RDATA
    }

    /// The small-slot form.
    #[must_use]
    pub fn to_small(&self) -> AnswerSmall {
        let mut s = AnswerSmall::zeroed();
        s.ttl = self.ttl;
        s.rrtype = self.rrtype;
        s.count = self.count;
        s.rdata[..self.rdata.len()].copy_from_slice(&self.rdata);
        s
    }

    /// The large-slot form.
    #[must_use]
    pub fn to_large(&self) -> AnswerLarge {
        let mut s = AnswerLarge::zeroed();
        s.ttl = self.ttl;
        s.rrtype = self.rrtype;
        s.count = self.count;
        s.rdata[..self.rdata.len()].copy_from_slice(&self.rdata);
        s
    }
}

impl AnswerData for HotAnswer {
    const RDATA_CAPACITY: usize = LARGE_RDATA;
    fn ttl(&self) -> u32 {
        self.ttl
    }
    fn rrtype(&self) -> u16 {
        self.rrtype
    }
    fn count(&self) -> usize {
        usize::from(self.count)
    }
    fn rdata4(&self, offset: usize) -> [u8; 4] {
        let mut w = [0u8; 4];
        if let Some(s) = self.rdata.get(offset..offset + 4) {
            w.copy_from_slice(s);
        }
        w
    }
}

/// One difference between two hot tables: `answer: None` removes the key.
#[derive(Clone, Debug)]
pub struct Change {
    /// The key.
    pub key: HotKey,
    /// The new answer, or `None` to remove it.
    pub answer: Option<Arc<HotAnswer>>,
}

/// All hot answers of a compiled configuration.
#[derive(Debug, Default)]
pub struct HotTable {
    map: HashMap<HotKey, Arc<HotAnswer>>,
}

impl HotTable {
    /// The hot answers of `zones`: every authoritative A/AAAA RRset of 1..=16 records. Names at
    /// or below a zone cut (glue, occluded data) are never hot: we are not authoritative there.
    /// A name is taken from the zone the general lookup answers it from (the longest apex at
    /// or above it, [`Zones::find`]): a parent that also holds data inside a served child zone
    /// without delegating it must not have its data answered from XDP.
    #[must_use]
    pub fn from_zones(zones: &Zones) -> Self {
        let mut map = HashMap::new();
        for zone in zones.iter() {
            add_zone(zones, zone, &mut map);
        }
        Self { map }
    }

    /// The answer for a lookup key built by [`lookup_key`].
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&Arc<HotAnswer>> {
        self.map.get(key)
    }

    /// Number of hot answers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every key and answer.
    pub fn iter(&self) -> impl Iterator<Item = (&HotKey, &Arc<HotAnswer>)> {
        self.map.iter()
    }

    /// What turns `self` into `new`: removals first, then additions and replacements.
    #[must_use]
    pub fn diff(&self, new: &Self) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .map
            .keys()
            .filter(|k| !new.map.contains_key(*k))
            .map(|k| Change {
                key: k.clone(),
                answer: None,
            })
            .collect();
        for (k, v) in &new.map {
            if self.map.get(k).is_none_or(|old| old != v) {
                out.push(Change {
                    key: k.clone(),
                    answer: Some(Arc::clone(v)),
                });
            }
        }
        out
    }

    /// The changes that build `self` from nothing.
    #[must_use]
    pub fn as_changes(&self) -> Vec<Change> {
        Self::default().diff(self)
    }
}

fn add_zone(zones: &Zones, zone: &Zone, map: &mut HashMap<HotKey, Arc<HotAnswer>>) {
    for (name, node) in zone.nodes() {
        if zone.cut_above(name).is_some() || zones.find(name).is_none_or(|z| z.apex != zone.apex) {
            continue;
        }
        let Ok(wire) = Name::from(name.clone()).to_bytes() else {
            continue;
        };
        for t in [RecordType::A, RecordType::AAAA] {
            if let Some(set) = node.get(t)
                && let Some(a) = HotAnswer::from_rrset(set.ttl, &set.rdatas)
            {
                map.insert(HotKey::new(&wire, u16::from(t), REGION_ANY), Arc::new(a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::rdata::A;

    use super::*;

    #[test]
    fn keys_and_presentation() {
        let k = HotKey::new(b"\x03WwW\x07example\x03com\x00", TYPE_A, 0);
        assert_eq!(k.name(), b"\x03www\x07example\x03com\x00");
        assert_eq!(k.presentation(), "www.example.com.");
        assert_eq!(k.qtype(), 1);
        let mut buf = [0u8; 259];
        let l = lookup_key(&mut buf, b"\x03WWW\x07EXAMPLE\x03com\x00", TYPE_A, 0);
        assert_eq!(l, Borrow::<[u8]>::borrow(&k));
        assert_eq!(wire_to_text(b"\x03a.b\x01\x00\x00"), "a\\.b.\\000.");
        assert_eq!(wire_to_text(b"\x00"), ".");
    }

    #[test]
    fn diff_adds_replaces_and_removes() {
        let a = |o: u8| {
            Arc::new(
                HotAnswer::from_rrset(60, &[RData::A(A(Ipv4Addr::new(198, 18, 0, o)))]).unwrap(),
            )
        };
        let k = |n: &str| HotKey::new(&Name::from_ascii(n).unwrap().to_bytes().unwrap(), TYPE_A, 0);
        let old = HotTable {
            map: [(k("a.test."), a(1)), (k("b.test."), a(2))]
                .into_iter()
                .collect(),
        };
        let new = HotTable {
            map: [(k("b.test."), a(3)), (k("c.test."), a(4))]
                .into_iter()
                .collect(),
        };
        let mut d: Vec<_> = old
            .diff(&new)
            .into_iter()
            .map(|c| (c.key.presentation(), c.answer))
            .collect();
        d.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(d.len(), 3);
        assert_eq!(d[0], ("a.test.".into(), None));
        assert_eq!(d[1], ("b.test.".into(), Some(a(3))));
        assert_eq!(d[2], ("c.test.".into(), Some(a(4))));
        assert!(new.diff(&new).is_empty());
    }

    #[test]
    fn a_served_child_zone_wins_over_its_parent_without_delegation() {
        use std::path::Path;

        use crate::{
            answer,
            zone::{Zone, read_text},
        };
        let zone = |origin: &str, text: &str| {
            let o = Name::from_ascii(origin).unwrap();
            Zone::build(
                &o,
                Path::new("t.zone"),
                read_text(text, Path::new("t.zone"), &o).unwrap(),
            )
            .unwrap()
        };
        let soa = "@ SOA ns1 h 1 7200 3600 1209600 60\n NS ns1\nns1 A 198.18.0.53\n";
        // The parent holds www.sub, and sub is a zone of its own with no NS in the parent.
        let parent = || {
            zone(
                "example.com.",
                &format!("$TTL 60\n{soa}www.sub A 198.18.0.1\n"),
            )
        };
        let child = || {
            zone(
                "sub.example.com.",
                &format!("$TTL 60\n{soa}www A 198.18.0.2\n"),
            )
        };
        // The zones are iterated in a hash order, seeded per map: many maps, both orders.
        for i in 0..16 {
            let zones = Zones::new(if i % 2 == 0 {
                vec![parent(), child()]
            } else {
                vec![child(), parent()]
            });
            let hot = HotTable::from_zones(&zones);
            let wire = Name::from_ascii("www.sub.example.com.")
                .unwrap()
                .to_bytes()
                .unwrap();
            let mut key = [0u8; 259];
            let got = hot.get(lookup_key(&mut key, &wire, TYPE_A, 0)).unwrap();
            let want = HotAnswer::from_rrset(60, &[RData::A(A(Ipv4Addr::new(198, 18, 0, 2)))]);
            assert_eq!(
                **got,
                want.unwrap(),
                "the child's answer, as the general lookup gives"
            );
            let general = answer::resolve(
                &zones,
                &Name::from_ascii("www.sub.example.com.").unwrap(),
                RecordType::A,
                hickory_proto::rr::DNSClass::IN,
            );
            assert!(format!("{general:?}").contains("198.18.0.2"), "{general:?}");
            assert!(
                !format!("{general:?}").contains("198.18.0.1"),
                "{general:?}"
            );
        }
    }

    #[test]
    fn rrset_limits() {
        let many: Vec<RData> = (0..17)
            .map(|i| RData::A(A(Ipv4Addr::new(198, 18, 0, i))))
            .collect();
        assert!(HotAnswer::from_rrset(60, &many).is_none());
        let ok = HotAnswer::from_rrset(60, &many[..16]).unwrap();
        assert!(!ok.is_small());
        assert_eq!(ok.to_large().count, 16);
        assert!(HotAnswer::from_rrset(60, &many[..4]).unwrap().is_small());
    }
}
