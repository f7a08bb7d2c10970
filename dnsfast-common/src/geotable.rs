//! The region map as multi-bit prefix tables in BPF arrays: the layout the daemon writes and
//! the lookup the XDP program (and the daemon's tests) run on it.
//!
//! IPv4 is DPDK `lib/fib`'s DIR-24-8 with 16-bit entries: `GEO4_L0` holds one entry per /24
//! (2^24 entries, 32 MiB), four to a 64-bit array value (an array rounds every value up to 8
//! bytes); an entry is a leaf (the region with its generation, the block length, the special
//! flag: [`v4_leaf`]) or, for a /24 holding longer blocks, the index of a 256-entry group of
//! `GEO4_POOL`, whose entries are leaves. A lookup is one load, or two.
//!
//! IPv6 uses 16-bit entries too, and the strides [`V6_STRIDES`] (16, then 8), chosen from the
//! shape of the GeoLite2 country database with the seed's regions (`tests/geoip.rs` prints the
//! candidates): 11.5 MiB a copy. A /32 block is found in three dependent loads, a /48 in five,
//! a /64 in seven; longer blocks, which only special-use space and explicit subnets have, take
//! up to fifteen, and a 256-entry group per level (16-bit strides past /64 would cost 65,536
//! entries for each /64 holding a longer block). A leaf is the index of its `GEO_*` value in `GEO6_VALUES` (a
//! prefix length up to 128 does not fit beside the region in 15 bits; the table of distinct
//! values is small and stays in cache); a pointer is the index of a group of the next level,
//! whose first entry is at `GEO6_LEVELS[half * 16 + level]` of `GEO6_POOL`. Each generation
//! writes its own half of all three; `CONFIG.geo6_half` says which half a lookup reads, and a
//! reload moves it with one store.
//!
//! Both families follow the generation rules of the answer sets: IPv4's first level is written
//! in place (each 16-bit store switches one entry from the old configuration to the new,
//! whole), its groups and all of IPv6 into the half the old configuration does not use.

/// Bits each IPv6 level consumes.
pub const V6_STRIDES: [u32; 15] = [16, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8];
/// IPv4: the first level's bits (the second level takes the other 8).
pub const V4_FIRST: u32 = 24;

/// Entries of `GEO4_L0`.
pub const V4_L0_ENTRIES: usize = 1 << V4_FIRST;
/// Entries of one `GEO4_POOL` group.
pub const V4_GROUP: usize = 256;
/// A 16-bit IPv4 entry that points to a group (its index in the low 15 bits).
pub const V4_POINTER: u16 = 1 << 15;
/// Most IPv4 groups, both halves.
pub const V4_MAX_GROUPS: usize = 1 << 15;
/// A 16-bit IPv6 entry that points to a group of the next level (its index in the low 15
/// bits); else it is the index of a value in `GEO6_VALUES`.
pub const V6_POINTER: u16 = 1 << 15;
/// Most groups of one IPv6 level.
pub const V6_MAX_GROUPS: usize = 1 << 15;
/// Entries of `GEO6_VALUES` per half.
pub const V6_VALUES: usize = 1 << 14;
/// Entries of `GEO6_LEVELS` per half (one per level, and room).
pub const V6_LEVEL_SLOTS: usize = 16;

/// The 16-bit IPv4 leaf of a `GEO_*` value (region with generation, 0..128; length, 0..=32;
/// special): region in bits 0..7, length in 7..13, special in bit 13.
#[inline(always)]
#[must_use]
pub const fn v4_leaf(value: u32) -> u16 {
    let region = value & 0x7F;
    let len = (value >> 16) & 0x3F;
    let special = (value >> 24) & 1;
    (region | len << 7 | special << 13) as u16
}

/// The `GEO_*` value of a 16-bit IPv4 leaf.
#[inline(always)]
#[must_use]
pub const fn v4_value(leaf: u16) -> u32 {
    let e = leaf as u32;
    (e & 0x7F) | ((e >> 7) & 0x3F) << 16 | ((e >> 13) & 1) << 24
}

/// The 16-bit entry `i` of an array of 64-bit values holding four each.
#[inline(always)]
#[must_use]
pub const fn entry16(word: u64, i: usize) -> u16 {
    (word >> ((i & 3) * 16)) as u16
}

/// The `GEO_*` value of IPv4 address `addr` (host order), with `l0(i)` and `pool(i)` the
/// 64-bit values `i` of `GEO4_L0` and `GEO4_POOL`.
#[inline(always)]
pub fn lookup_v4(
    addr: u32,
    l0: impl FnOnce(usize) -> Option<u64>,
    pool: impl FnOnce(usize) -> Option<u64>,
) -> Option<u32> {
    let i = (addr >> 8) as usize;
    let e = entry16(l0(i / 4)?, i);
    if e & V4_POINTER == 0 {
        return Some(v4_value(e));
    }
    let j = usize::from(e & !V4_POINTER) * V4_GROUP + (addr & 0xFF) as usize;
    let leaf = entry16(pool(j / 4)?, j);
    // A group holds only leaves (the daemon writes it so); a pointer there is not one.
    (leaf & V4_POINTER == 0).then_some(v4_value(leaf))
}

/// The `GEO_*` value of IPv6 address `addr` in half `half` of the tables, with `level(l)` the
/// entry offset of level `l`'s first group (`GEO6_LEVELS[half * 16 + l]`), `pool(i)` the
/// 64-bit value `i` of `GEO6_POOL` and `value(i)` entry `i` of `GEO6_VALUES`.
#[inline(always)]
pub fn lookup_v6(
    addr: [u8; 16],
    mut level: impl FnMut(usize) -> Option<u32>,
    mut pool: impl FnMut(usize) -> Option<u64>,
    value: impl FnOnce(usize) -> Option<u32>,
) -> Option<u32> {
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let mut group = 0u32;
    let mut consumed = 0u32;
    let mut l = 0;
    while l < V6_STRIDES.len() {
        let stride = V6_STRIDES[l];
        let end = consumed + stride;
        // No level crosses bit 64.
        let (half, end_in) = if end <= 64 { (hi, end) } else { (lo, end - 64) };
        let idx = ((half >> (64 - end_in)) & ((1u64 << stride) - 1)) as u32;
        let i = level(l)?.wrapping_add(group << stride).wrapping_add(idx) as usize;
        let e = entry16(pool(i / 4)?, i);
        if e & V6_POINTER == 0 {
            return value(usize::from(e));
        }
        group = u32::from(e & !V6_POINTER);
        consumed = end;
        l += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{GEO_SPECIAL, geo_value};

    #[test]
    fn a_v4_leaf_holds_every_value_a_region_map_has() {
        for region in [0u16, 1, 63, 64, 127] {
            for len in 0..=32u8 {
                for special in [0, GEO_SPECIAL] {
                    let v = geo_value(region, len) | special;
                    assert_eq!(v4_value(v4_leaf(v)), v);
                    assert_eq!(v4_leaf(v) & V4_POINTER, 0);
                }
            }
        }
    }

    #[test]
    fn no_v6_level_crosses_the_middle_and_they_cover_the_address() {
        let mut at = 0;
        for s in V6_STRIDES {
            assert!(at >= 64 || at + s <= 64, "a level across bit 64");
            at += s;
        }
        assert_eq!(at, 128);
    }
}
