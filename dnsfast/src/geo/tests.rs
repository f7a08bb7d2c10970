//! The region map against a naive per-address reading of the same database and regions.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use super::*;
use crate::geoip::{Schema, place_of};

/// splitmix64: a fixed seed gives the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn wide(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

const PLACES: [(Option<&str>, Option<&str>); 9] = [
    (Some("US"), None),
    (Some("BR"), None),
    (Some("DE"), None),
    (Some("NG"), None),
    (Some("JP"), None),
    (Some("AU"), None),
    (Some("AQ"), None),
    (None, Some("EU")),
    (None, None),
];

fn addr(bits: u32, v: u128) -> IpAddr {
    if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// Random disjoint networks, clustered under `around` (a /`spread` prefix) so that neighbours
/// touch, plus a few anywhere and at both ends of the space.
fn networks(rng: &mut Rng, bits: u32, around: u128, spread: u8, n: usize) -> Vec<Network> {
    let mut out: Vec<Network> = Vec::new();
    let mut tries = 0;
    while out.len() < n && tries < n * 20 {
        tries += 1;
        let (start, len) = match rng.below(10) {
            0 => (0, spread + rng.below(8) as u8),
            1 => (host_mask(bits, 0), bits as u8 - rng.below(4) as u8),
            2 => (rng.wide(), 1 + rng.below(u64::from(bits)) as u8),
            _ => {
                let len = (spread + 1 + rng.below(u64::from(bits) - u64::from(spread)) as u8)
                    .min(bits as u8);
                (around | (rng.wide() & host_mask(bits, spread)), len)
            }
        };
        let start = (start & host_mask(bits, 0)) & !host_mask(bits, len);
        let end = start | host_mask(bits, len);
        if out.iter().any(|o| {
            let oe = o.start | host_mask(bits, o.len);
            o.start <= end && start <= oe
        }) {
            continue;
        }
        let (c, k) = PLACES[rng.below(PLACES.len() as u64) as usize];
        out.push(Network {
            start,
            len,
            place: place_of(c, k),
        });
    }
    out.sort_by_key(|n| n.start);
    out
}

fn subnets(rng: &mut Rng, bits: u32, around: u128, spread: u8, regions: u16) -> Vec<(IpNet, u16)> {
    let mut out: Vec<(IpNet, u16)> = Vec::new();
    for _ in 0..rng.below(12) {
        let len =
            (spread + rng.below(u64::from(bits) - u64::from(spread) + 1) as u8).min(bits as u8);
        let start = (around | (rng.wide() & host_mask(bits, spread))) & !host_mask(bits, len);
        let net = to_net(bits, start, len);
        if out.iter().any(|(n, _)| *n == net) {
            continue;
        }
        out.push((net, rng.below(u64::from(regions)) as u16));
    }
    out.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    out
}

fn policy(rng: &mut Rng, subnets: Vec<(IpNet, u16)>) -> Policy {
    let code = |s: &str| -> Code { s.as_bytes().try_into().unwrap() };
    let mut p = Policy {
        subnets,
        default_region: rng.below(3) as u16,
        ..Policy::default()
    };
    for k in ["NA", "SA", "EU", "AF", "AS", "OC"] {
        if rng.below(4) != 0 {
            p.continents.insert(code(k), rng.below(3) as u16);
        }
    }
    for c in ["DE", "JP", "US"] {
        if rng.below(3) == 0 {
            p.countries.insert(code(c), rng.below(3) as u16);
        }
    }
    p
}

/// The rule read for one address with no index at all: linear scans.
fn naive(bits: u32, db: &[Network], p: &Policy, a: u128) -> (u16, bool) {
    let ip = addr(bits, a);
    if let Some((_, r)) = p
        .subnets
        .iter()
        .filter(|(n, _)| n.contains(&ip))
        .max_by_key(|(n, _)| n.prefix_len())
    {
        return (*r, false);
    }
    if special_nets().iter().any(|n| n.contains(&ip)) {
        return (p.default_region, true);
    }
    (naive_db(bits, db, p, a), false)
}

fn naive_db(bits: u32, db: &[Network], p: &Policy, a: u128) -> u16 {
    let Some(n) = db
        .iter()
        .find(|n| n.start <= a && a <= (n.start | host_mask(bits, n.len)))
    else {
        return p.default_region;
    };
    if let Some(r) = n.place.country.and_then(|c| p.countries.get(&c)) {
        return *r;
    }
    if let Some(r) = n.place.continent.and_then(|c| p.continents.get(&c)) {
        return *r;
    }
    p.default_region
}

fn db(v4: Vec<Network>, v6: Vec<Network>) -> Database {
    Database {
        path: PathBuf::from("test.mmdb"),
        schema: Schema::Flat,
        database_type: "test".into(),
        build_epoch: 0,
        v4,
        v6,
        load_time: Duration::ZERO,
    }
}

/// Blocks cover the space in order, each aligned; each is maximal (its parent block is not
/// all one region); the run count is that of adjacent region changes plus one.
fn check_shape(bits: u32, fam: &Family) {
    let max = host_mask(bits, 0);
    let b = &fam.blocks;
    assert_eq!(b[0].start, 0);
    for w in b.windows(2) {
        assert_eq!(w[0].start | host_mask(bits, w[0].len), w[1].start - 1);
    }
    let last = b.last().unwrap();
    assert_eq!(last.start | host_mask(bits, last.len), max);
    let changes = b
        .windows(2)
        .filter(|w| (w[0].region, w[0].special) != (w[1].region, w[1].special))
        .count();
    assert_eq!(fam.runs, changes + 1);
    // Runs as intervals, to test maximality.
    let mut runs: Vec<(u128, u128, u32)> = Vec::new();
    for x in b {
        push(
            &mut runs,
            x.start,
            x.start | host_mask(bits, x.len),
            x.value() & !0x00FF_0000,
        );
    }
    for x in b {
        assert_eq!(x.start & host_mask(bits, x.len), 0, "unaligned {x:?}");
        if x.len == 0 {
            continue;
        }
        let parent = x.start & !host_mask(bits, x.len - 1);
        let pend = parent | host_mask(bits, x.len - 1);
        let i = runs.partition_point(|r| r.0 <= x.start) - 1;
        assert!(
            !(runs[i].0 <= parent && pend <= runs[i].1),
            "block {x:?} could be one bit shorter"
        );
    }
}

#[test]
fn blocks_agree_with_a_naive_lookup_at_every_boundary_and_at_random() {
    let mut rng = Rng(0x5EED_0001);
    for case in 0..300 {
        let v4 = networks(&mut rng, 32, 0xC612_0000, 15, 1 + case % 40);
        let v6 = networks(
            &mut rng,
            128,
            0x2001_0002_u128 << 96,
            32,
            1 + (case * 7) % 40,
        );
        let mut subs = subnets(&mut rng, 32, 0xC612_0000, 15, 3);
        subs.extend(subnets(&mut rng, 128, 0x2001_0002_u128 << 96, 32, 3));
        subs.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let p = policy(&mut rng, subs);
        let d = if case % 10 == 9 {
            None
        } else {
            Some(db(v4, v6))
        };
        let map = RegionMap::build(d.as_ref(), &p);
        for (f, bits) in [(0usize, 32u32), (1, 128)] {
            let fam = &map.families[f];
            check_shape(bits, fam);
            let nets: &[Network] = d
                .as_ref()
                .map_or(&[], |d| if f == 0 { &d.v4 } else { &d.v6 });
            let mut probes: Vec<u128> = Vec::new();
            for b in &fam.blocks {
                let end = b.start | host_mask(bits, b.len);
                probes.extend(
                    [
                        Some(b.start),
                        b.start.checked_sub(1),
                        b.start.checked_add(1),
                    ]
                    .into_iter()
                    .flatten(),
                );
                probes.extend(
                    [Some(end), end.checked_sub(1), end.checked_add(1)]
                        .into_iter()
                        .flatten(),
                );
            }
            for n in nets {
                probes.push(n.start);
                probes.push(n.start | host_mask(bits, n.len));
            }
            for _ in 0..200 {
                probes.push(rng.wide() & host_mask(bits, 0));
                probes.push(
                    (if f == 0 {
                        0xC612_0000
                    } else {
                        0x2001_0002_u128 << 96
                    }) | (rng.wide() & host_mask(bits, if f == 0 { 15 } else { 32 })),
                );
            }
            for a in probes.into_iter().filter(|a| *a <= host_mask(bits, 0)) {
                let ip = addr(bits, a);
                if ip.to_canonical() != ip {
                    // IPv4-mapped: placed as IPv4 (tested below).
                    continue;
                }
                let want = naive(bits, nets, &p, a);
                let (net, got) = map.block(ip).unwrap();
                assert!(
                    net.contains(&ip),
                    "case {case}: {ip} not in its block {net}"
                );
                assert_eq!(
                    (got.region, got.special),
                    want,
                    "case {case}: {ip} (block {net})"
                );
                assert_eq!(
                    p.decide(d.as_ref(), ip).0,
                    want.0,
                    "case {case}: decide({ip})"
                );
            }
        }
    }
}

#[test]
fn ipv4_mapped_clients_are_placed_as_ipv4() {
    let code = |s: &str| -> Code { s.as_bytes().try_into().unwrap() };
    let d = db(
        vec![Network {
            start: 0xC612_0100,
            len: 24,
            place: place_of(Some("DE"), None),
        }],
        Vec::new(),
    );
    let mut p = Policy {
        default_region: 0,
        ..Policy::default()
    };
    p.continents.insert(code("EU"), 1);
    let map = RegionMap::build(Some(&d), &p);
    let mapped: IpAddr = "::ffff:198.18.1.7".parse().unwrap();
    let (net, region) = map.lookup(mapped);
    assert_eq!((net.to_string().as_str(), region), ("198.18.1.0/24", 1));
    assert_eq!(
        p.decide(Some(&d), mapped),
        (
            1,
            Reason::Continent(
                code("EU"),
                Some(code("DE")),
                "198.18.1.0/24".parse().unwrap()
            )
        )
    );
}

#[test]
fn without_database_or_subnets_only_special_use_space_stands_apart() {
    let p = Policy {
        default_region: 2,
        ..Policy::default()
    };
    let map = RegionMap::build(None, &p);
    let mut special: Vec<String> = Vec::new();
    for (f, bits) in map.families.iter().zip([32, 128]) {
        assert!(f.blocks.iter().all(|b| b.region == 2));
        special.extend(
            f.blocks
                .iter()
                .filter(|b| b.special)
                .map(|b| to_net(bits, b.start, b.len).to_string()),
        );
    }
    // ::/128 and ::1/128 are one block.
    let mut want: Vec<&str> = SPECIAL.to_vec();
    want.splice(8..10, ["::/127"]);
    assert_eq!(special, want);
    // A subnet inside special space takes it back from the flag.
    let p = Policy {
        subnets: vec![("10.1.0.0/16".parse().unwrap(), 1)],
        ..p
    };
    let map = RegionMap::build(None, &p);
    let at = |a: &str| map.block(a.parse().unwrap()).unwrap().1;
    assert_eq!((at("10.1.2.3").region, at("10.1.2.3").special), (1, false));
    assert_eq!((at("10.2.0.1").region, at("10.2.0.1").special), (2, true));
}
