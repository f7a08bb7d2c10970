//! The client region map: every address of a family in exactly one block, a block being the
//! largest CIDR block within which the region is constant.
//!
//! The region of one address ([`Policy::decide`], the rule the map must agree with): the longest
//! explicit region subnet that covers it; else, in private or special-use space ([`SPECIAL`]),
//! the default region; else its GeoIP network's country, if a region lists it; else that
//! network's continent, if a region lists it; else the default region. Blocks of special-use
//! space no subnet covers are marked (`GEO_SPECIAL`): a Client Subnet address there does not
//! decide.
//!
//! [`RegionMap::build`] flattens the database and the subnets into that map once per
//! configuration: disjoint intervals over the whole address space, neighbours that land in the
//! same region merged into runs, each run cut into CIDR blocks. The XDP program's region tables
//! ([`table`]) hold exactly these blocks (value: region and block length, the ECS SCOPE), and
//! the daemon places a client with [`RegionMap::lookup`], so both paths decide alike.

use std::{collections::HashMap, net::IpAddr};

use dnsfast_common::maps::{GEO_SPECIAL, geo_value};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::geoip::{Code, Database, Network, Place, code_str};

/// The host bits of a `len`-bit prefix in a `bits`-bit address.
#[must_use]
pub fn host_mask(bits: u32, len: u8) -> u128 {
    let host = bits - u32::from(len);
    if host == 0 {
        0
    } else {
        u128::MAX >> (128 - host)
    }
}

/// The network `start/len` of a `bits`-bit family.
#[must_use]
pub fn to_net(bits: u32, start: u128, len: u8) -> IpNet {
    if bits == 32 {
        IpNet::V4(Ipv4Net::new(std::net::Ipv4Addr::from(start as u32), len).expect("len ≤ 32"))
    } else {
        IpNet::V6(Ipv6Net::new(std::net::Ipv6Addr::from(start), len).expect("len ≤ 128"))
    }
}

/// An address as (family width, integer).
fn split(addr: IpAddr) -> (usize, u32, u128) {
    match addr.to_canonical() {
        IpAddr::V4(a) => (0, 32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (1, 128, u128::from(a)),
    }
}

/// Private and special-use space (the README lists it): a Client Subnet address here does not
/// decide a client's region, unless an explicit region subnet covers it.
pub const SPECIAL: [&str; 13] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// [`SPECIAL`] parsed.
#[must_use]
pub fn special_nets() -> &'static [IpNet] {
    static NETS: std::sync::LazyLock<Vec<IpNet>> = std::sync::LazyLock::new(|| {
        SPECIAL
            .iter()
            .map(|n| n.parse().expect("literal"))
            .collect()
    });
    &NETS
}

/// Whether `addr` is in [`SPECIAL`] space (IPv4-mapped as IPv4).
#[must_use]
pub fn is_special(addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    special_nets().iter().any(|n| n.contains(&addr))
}

/// One block of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// First address.
    pub start: u128,
    /// Prefix length (the SCOPE of an answer it decides).
    pub len: u8,
    /// Region index.
    pub region: u16,
    /// Special-use space no subnet covers (`GEO_SPECIAL`).
    pub special: bool,
}

impl Block {
    /// Its `GEO_*` value.
    #[must_use]
    pub fn value(&self) -> u32 {
        geo_value(self.region, self.len) | if self.special { GEO_SPECIAL } else { 0 }
    }
}

/// One family's blocks, in address order, covering the whole space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Family {
    /// Maximal runs of one region (adjacent runs differ).
    pub runs: usize,
    /// The runs cut into CIDR blocks.
    pub blocks: Vec<Block>,
}

/// Why an address is in its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A region subnet covers it.
    Subnet(IpNet),
    /// Its GeoIP network's country is listed by the region.
    Country(Code, IpNet),
    /// Its GeoIP network's continent is listed by the region (with its country, if any).
    Continent(Code, Option<Code>, IpNet),
    /// Nothing else matched (with the GeoIP network and place, if the database has one).
    Default(Option<(IpNet, Place)>),
    /// Private or special-use space no subnet covers: the default region (and a Client Subnet
    /// address here does not decide).
    Special,
}

/// The rule: subnets, countries, continents and the default region.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Explicit subnets and their regions, longest first.
    pub subnets: Vec<(IpNet, u16)>,
    /// Country → region.
    pub countries: HashMap<Code, u16>,
    /// Continent → region.
    pub continents: HashMap<Code, u16>,
    /// The region of clients nothing else places.
    pub default_region: u16,
}

impl Policy {
    /// The region of a place in the database (no subnet involved).
    #[must_use]
    pub fn region_of(&self, place: Place) -> u16 {
        self.reason_of(place, None).0
    }

    fn reason_of(&self, place: Place, net: Option<IpNet>) -> (u16, Reason) {
        let at = net.unwrap_or(IpNet::V4(Ipv4Net::default()));
        if let Some(c) = place.country
            && let Some(r) = self.countries.get(&c)
        {
            return (*r, Reason::Country(c, at));
        }
        if let Some(c) = place.continent
            && let Some(r) = self.continents.get(&c)
        {
            return (*r, Reason::Continent(c, place.country, at));
        }
        (
            self.default_region,
            Reason::Default(net.map(|n| (n, place))),
        )
    }

    /// The region of `addr` and why, straight from the rule (the reference the map is
    /// checked against, and what `explain` reports).
    #[must_use]
    pub fn decide(&self, db: Option<&Database>, addr: IpAddr) -> (u16, Reason) {
        let addr = addr.to_canonical();
        if let Some((net, r)) = self.subnets.iter().find(|(n, _)| n.contains(&addr)) {
            return (*r, Reason::Subnet(*net));
        }
        if is_special(addr) {
            return (self.default_region, Reason::Special);
        }
        match db.and_then(|d| d.lookup(addr)) {
            Some((net, place)) => self.reason_of(place, Some(net)),
            None => (self.default_region, Reason::Default(None)),
        }
    }
}

impl Reason {
    /// In words, for `explain`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Subnet(n) => format!("its subnet {n}"),
            Self::Country(c, n) => format!("country {} (GeoIP network {n})", code_str(c)),
            Self::Continent(c, None, n) => {
                format!("continent {} (GeoIP network {n})", code_str(c))
            }
            Self::Continent(c, Some(k), n) => format!(
                "continent {} (GeoIP network {n}: country {})",
                code_str(c),
                code_str(k)
            ),
            Self::Special => "the default region: private or special-use space, which a Client \
                               Subnet cannot claim"
                .into(),
            Self::Default(None) => {
                "the default region: no region's subnet covers it and GeoIP does not place it"
                    .into()
            }
            Self::Default(Some((n, p))) => {
                let place = match (p.country, p.continent) {
                    (Some(c), Some(k)) => format!("country {} in {}", code_str(&c), code_str(&k)),
                    (None, Some(k)) => format!("continent {} only", code_str(&k)),
                    _ => "no country or continent".into(),
                };
                format!("the default region: GeoIP network {n} ({place}) is in no region")
            }
        }
    }
}

/// Both families' blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionMap {
    /// Per family (0: IPv4, 1: IPv6).
    pub families: [Family; 2],
}

/// Appends `[start, end]` of `region`, merging with the previous interval when it continues it
/// in the same region.
fn push(out: &mut Vec<(u128, u128, u32)>, start: u128, end: u128, region: u32) {
    if let Some(last) = out.last_mut()
        && last.2 == region
        && last.1.checked_add(1) == Some(start)
    {
        last.1 = end;
        return;
    }
    out.push((start, end, region));
}

/// The database's networks as intervals covering the whole `bits`-bit space (gaps in the
/// default region), merged.
fn base(bits: u32, nets: &[Network], policy: &Policy) -> Vec<(u128, u128, u32)> {
    let max = host_mask(bits, 0);
    let mut out = Vec::new();
    let mut next: Option<u128> = Some(0);
    for n in nets {
        let end = n.start | host_mask(bits, n.len);
        let Some(at) = next else { break };
        if n.start < at {
            // Overlapping input (a database tree yields none): the earlier network wins.
            continue;
        }
        if n.start > at {
            push(&mut out, at, n.start - 1, u32::from(policy.default_region));
        }
        push(&mut out, n.start, end, u32::from(policy.region_of(n.place)));
        next = end.checked_add(1).filter(|_| end < max);
    }
    if let Some(at) = next {
        push(&mut out, at, max, u32::from(policy.default_region));
    }
    out
}

/// The subnets of one family as disjoint intervals, the longest covering subnet deciding each
/// address (`value` its interval's value).
fn overlay(bits: u32, subnets: &[(IpNet, u32)]) -> Vec<(u128, u128, u32)> {
    let mine: Vec<(u128, u128, u32)> = subnets
        .iter()
        .filter_map(|(n, r)| {
            let start = match (bits, n) {
                (32, IpNet::V4(v)) => u128::from(u32::from(v.network())),
                (128, IpNet::V6(v)) => u128::from(v.network()),
                _ => return None,
            };
            Some((start, start | host_mask(bits, n.prefix_len()), *r))
        })
        .collect();
    // Elementary intervals between every subnet boundary; `mine` is longest first.
    let mut points: Vec<u128> = mine
        .iter()
        .flat_map(|(s, e, _)| [Some(*s), e.checked_add(1)])
        .flatten()
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    for (i, &p) in points.iter().enumerate() {
        let end = points.get(i + 1).map_or(host_mask(bits, 0), |n| n - 1);
        if let Some((_, _, r)) = mine.iter().find(|(s, e, _)| *s <= p && p <= *e) {
            push(&mut out, p, end, *r);
        }
    }
    out
}

/// `base` with `top` laid over it; both sorted, `base` covering the whole space.
fn lay(base: &[(u128, u128, u32)], top: &[(u128, u128, u32)]) -> Vec<(u128, u128, u32)> {
    let mut out = Vec::with_capacity(base.len() + 2 * top.len());
    let mut t = 0;
    for &(s, e, r) in base {
        let mut at = s;
        loop {
            while t < top.len() && top[t].1 < at {
                t += 1;
            }
            let (end, region) = match top.get(t) {
                Some(&(ts, te, tr)) if ts <= at => (te.min(e), tr),
                Some(&(ts, _, _)) if ts <= e => (ts - 1, r),
                _ => (e, r),
            };
            push(&mut out, at, end, region);
            if end == e {
                break;
            }
            at = end + 1;
        }
    }
    out
}

/// Cuts each run into the fewest CIDR blocks.
fn blocks(bits: u32, runs: &[(u128, u128, u32)]) -> Vec<Block> {
    let mut out = Vec::new();
    for &(s, e, value) in runs {
        let region = (value & 0xFFFF) as u16;
        let special = value & GEO_SPECIAL != 0;
        let mut at = s;
        loop {
            // The largest block starting at `at` (aligned) that ends within the run.
            let align = if at == 0 {
                bits
            } else {
                at.trailing_zeros().min(bits)
            };
            let room = e - at; // the block's size minus one must not exceed this
            let fit = if room == u128::MAX {
                128
            } else {
                (room + 1).ilog2()
            };
            let host = align.min(fit).min(bits);
            let len = (bits - host) as u8;
            out.push(Block {
                start: at,
                len,
                region,
                special,
            });
            let last = at | host_mask(bits, len);
            if last >= e {
                break;
            }
            at = last + 1;
        }
    }
    out
}

impl RegionMap {
    /// Flattens `db` (if any) and the policy's subnets.
    #[must_use]
    pub fn build(db: Option<&Database>, policy: &Policy) -> Self {
        let empty: &[Network] = &[];
        let special: Vec<(IpNet, u32)> = special_nets()
            .iter()
            .map(|n| (*n, u32::from(policy.default_region) | GEO_SPECIAL))
            .collect();
        let subnets: Vec<(IpNet, u32)> = policy
            .subnets
            .iter()
            .map(|(n, r)| (*n, u32::from(*r)))
            .collect();
        let fam = |bits: u32, nets: &[Network]| {
            let with_special = lay(&base(bits, nets, policy), &overlay(bits, &special));
            let runs = lay(&with_special, &overlay(bits, &subnets));
            Family {
                runs: runs.len(),
                blocks: blocks(bits, &runs),
            }
        };
        Self {
            families: [
                fam(32, db.map_or(empty, |d| &d.v4)),
                fam(128, db.map_or(empty, |d| &d.v6)),
            ],
        }
    }

    /// The block holding `addr` (IPv4-mapped IPv6 as IPv4).
    #[must_use]
    pub fn block(&self, addr: IpAddr) -> Option<(IpNet, Block)> {
        let (f, bits, v) = split(addr);
        let list = &self.families[f].blocks;
        let i = list.partition_point(|b| b.start <= v).checked_sub(1)?;
        list.get(i).map(|b| (to_net(bits, b.start, b.len), *b))
    }

    /// The block holding `addr` (IPv4-mapped IPv6 as IPv4) and its region.
    #[must_use]
    pub fn lookup(&self, addr: IpAddr) -> (IpNet, u16) {
        match self.block(addr) {
            Some((net, b)) => (net, b.region),
            None => (to_net(split(addr).1, 0, 0), 0),
        }
    }

    /// The `GEO_*` value of the block holding `addr`, as the XDP program's tries answer.
    #[must_use]
    pub fn value(&self, addr: IpAddr) -> Option<u32> {
        self.block(addr).map(|(_, b)| b.value())
    }

    /// Every block as a network and its `GEO_*` value.
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        self.families.iter().zip([32, 128]).flat_map(|(f, bits)| {
            f.blocks
                .iter()
                .map(move |b| (to_net(bits, b.start, b.len), b.value()))
        })
    }
}

pub mod table;

#[cfg(test)]
mod tests;
