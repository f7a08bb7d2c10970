//! The region map as a multi-bit prefix table: the structure the XDP program's region lookup
//! reads from BPF arrays instead of walking the kernel's one-bit LPM trie.
//!
//! A family's table is a list of strides (bits consumed per level; they sum to the address
//! width). Level 0 is one group of `2^strides[0]` entries indexed by the address's first bits;
//! an entry is either a leaf (the `GEO_*` value of the one block holding every address under
//! it: region, block length, special) or a pointer to a group of the next level, indexed by
//! the next `strides[1]` bits, and so on. IPv4 with strides 24 and 8 is DPDK `lib/fib`'s
//! DIR-24-8: one load for every block of /24 or shorter, two for the longer. Since the blocks
//! partition the space (every address in exactly one: [`super::Family`]) and each is CIDR
//! aligned, an entry lies in one block or is split by the next level, never anything in
//! between; a lookup is `levels` dependent loads at most, and usually one or two.

use super::Block;

/// An entry that points to a group of the next level (its index in the low bits).
pub const POINTER: u32 = 1 << 31;

/// One family's table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Address width: 32 or 128.
    pub bits: u32,
    /// Bits each level consumes, summing to `bits`.
    pub strides: Vec<u32>,
    /// Per level, its groups back to back (`2^strides[level]` entries each); level 0 holds one.
    pub levels: Vec<Vec<u32>>,
}

impl Table {
    /// The table of `blocks` (a partition of the `bits`-bit space in address order, as
    /// [`super::Family::blocks`]) with `strides`.
    ///
    /// # Panics
    /// If the strides do not sum to `bits`, or the blocks do not partition the space.
    #[must_use]
    pub fn build(bits: u32, strides: &[u32], blocks: &[Block]) -> Self {
        assert_eq!(strides.iter().sum::<u32>(), bits, "strides {strides:?}");
        let mut t = Self {
            bits,
            strides: strides.to_vec(),
            levels: vec![Vec::new(); strides.len()],
        };
        let root = t.group(0, 0, 0, blocks);
        debug_assert_eq!(root, 0);
        t
    }

    /// Adds to level `level` the group for the range that starts at `base` after `consumed`
    /// bits, holding exactly `blocks`; returns its index.
    fn group(&mut self, level: usize, consumed: u32, base: u128, blocks: &[Block]) -> u32 {
        let stride = self.strides[level];
        let depth = consumed + stride;
        let shift = self.bits - depth;
        let mut entries = vec![0u32; 1usize << stride];
        let mut i = 0;
        while i < blocks.len() {
            let b = blocks[i];
            let idx = usize::try_from((b.start - base) >> shift).expect("an index of the group");
            if u32::from(b.len) <= depth {
                // The block covers 2^(depth - len) entries, starting at its own.
                let n = 1usize << (depth - u32::from(b.len));
                entries[idx..idx + n].fill(b.value());
                i += 1;
            } else {
                // Blocks longer than this level: the next level splits the entry.
                let start = base + ((idx as u128) << shift);
                let end = start + ((1u128 << shift) - 1);
                let mut j = i;
                while j < blocks.len() && blocks[j].start <= end {
                    j += 1;
                }
                let g = self.group(level + 1, depth, start, &blocks[i..j]);
                entries[idx] = POINTER | g;
                i = j;
            }
        }
        let pool = &mut self.levels[level];
        let index = u32::try_from(pool.len() >> stride).expect("group count");
        pool.extend_from_slice(&entries);
        index
    }

    /// The `GEO_*` value of `addr` (the low `bits` bits), and the number of dependent loads
    /// the lookup took.
    #[must_use]
    pub fn lookup(&self, addr: u128) -> (u32, usize) {
        let (mut consumed, mut group) = (0u32, 0usize);
        for (level, &stride) in self.strides.iter().enumerate() {
            consumed += stride;
            let idx = ((addr >> (self.bits - consumed)) & ((1u128 << stride) - 1)) as usize;
            let e = self.levels[level][(group << stride) + idx];
            if e & POINTER == 0 {
                return (e, level + 1);
            }
            group = (e & !POINTER) as usize;
        }
        unreachable!("the last level holds only leaves")
    }

    /// The groups per level a table of `blocks` with `strides` has, without building it: a
    /// level's groups are the distinct prefixes (of the bits the levels above it consume) of
    /// the blocks longer than those bits.
    #[must_use]
    pub fn need(bits: u32, strides: &[u32], blocks: &[Block]) -> Vec<usize> {
        let mut out = vec![1];
        let mut consumed = 0;
        for s in &strides[..strides.len() - 1] {
            consumed += s;
            let mut n = 0;
            let mut last = None;
            for b in blocks.iter().filter(|b| u32::from(b.len) > consumed) {
                let p = b.start >> (bits - consumed);
                if last != Some(p) {
                    n += 1;
                    last = Some(p);
                }
            }
            out.push(n);
        }
        out
    }

    /// Groups per level.
    #[must_use]
    pub fn groups(&self) -> Vec<usize> {
        self.levels
            .iter()
            .zip(&self.strides)
            .map(|(l, s)| l.len() >> s)
            .collect()
    }

    /// Entries over all levels.
    #[must_use]
    pub fn entries(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }
}

/// A family's table as the XDP program's arrays hold it ([`dnsfast_common::geotable`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// IPv4: the first level's 2^24 entries (empty for IPv6).
    pub first: Vec<u16>,
    /// IPv4: the groups' entries; IPv6: every level's, level by level.
    pub pool: Vec<u16>,
    /// IPv6: the entry offset of each level's first group (`GEO6_LEVELS`).
    pub levels: Vec<u32>,
    /// IPv6: the leaves' values (`GEO6_VALUES`), from the image's first value index on.
    pub values: Vec<u32>,
}

/// The map image of IPv4 `blocks` (their region field plus `region_base`, the generation's)
/// with its groups numbered from `first_group` (the half of `GEO4_POOL` it is written to).
///
/// # Errors
/// More groups than a half of the pool holds.
pub fn v4_image(blocks: &[Block], region_base: u32, first_group: u32) -> Result<Image, String> {
    use dnsfast_common::geotable::{V4_FIRST, V4_MAX_GROUPS, V4_POINTER, v4_leaf};
    let t = Table::build(32, &[V4_FIRST, 8], blocks);
    let groups = t.groups()[1];
    if groups > V4_MAX_GROUPS / 2 {
        return Err(format!(
            "the IPv4 region map needs {groups} second-level groups, more than the {} a table \
             holds",
            V4_MAX_GROUPS / 2
        ));
    }
    let leaf = |e: u32| v4_leaf(e + region_base);
    let first = t.levels[0]
        .iter()
        .map(|&e| {
            if e & POINTER == 0 {
                leaf(e)
            } else {
                // At most 2^14 groups a half, numbered from 0 or 2^14: 15 bits.
                V4_POINTER | u16::try_from((e & !POINTER) + first_group).expect("15 bits")
            }
        })
        .collect();
    let pool = t.levels[1].iter().map(|&e| leaf(e)).collect();
    Ok(Image {
        first,
        pool,
        ..Image::default()
    })
}

/// The map image of IPv6 `blocks` (their region field plus `region_base`) written from entry
/// `base` of `GEO6_POOL` and value `value_base` of `GEO6_VALUES` on.
///
/// # Errors
/// A level with more groups, or more distinct values, than the table holds.
pub fn v6_image(
    blocks: &[Block],
    region_base: u32,
    base: u32,
    value_base: u32,
) -> Result<Image, String> {
    use dnsfast_common::geotable::{V6_MAX_GROUPS, V6_POINTER, V6_STRIDES, V6_VALUES};
    let t = Table::build(128, &V6_STRIDES, blocks);
    let mut levels = Vec::with_capacity(t.levels.len());
    let mut at = u64::from(base);
    for (l, g) in t.levels.iter().zip(t.groups()) {
        if g > V6_MAX_GROUPS {
            return Err(format!(
                "the IPv6 region map needs {g} groups on one level, more than the \
                 {V6_MAX_GROUPS} a table holds"
            ));
        }
        levels.push(u32::try_from(at).map_err(|_| "the IPv6 region map is too large")?);
        at += l.len() as u64;
    }
    let mut index: std::collections::HashMap<u32, u16> = std::collections::HashMap::new();
    let mut values = Vec::new();
    let mut pool = Vec::with_capacity(t.entries());
    for entries in &t.levels {
        for &e in entries {
            pool.push(if e & POINTER == 0 {
                let v = e + region_base;
                let next = values.len();
                *index.entry(v).or_insert_with(|| {
                    values.push(v);
                    // Checked below: at most V6_VALUES values, from value_base on.
                    (value_base as usize + next) as u16
                })
            } else {
                V6_POINTER | u16::try_from(e & !POINTER).expect("groups checked")
            });
        }
    }
    if values.len() > V6_VALUES {
        return Err(format!(
            "the IPv6 region map has {} distinct (region, length) values, more than the \
             {V6_VALUES} a table holds",
            values.len()
        ));
    }
    Ok(Image {
        first: Vec::new(),
        pool,
        levels,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition of the 32-bit space: a /1 split down to single addresses near its end,
    /// and a few blocks of every length.
    fn blocks() -> Vec<Block> {
        let b = |start: u128, len: u8, region: u16| Block {
            start,
            len,
            region,
            special: false,
        };
        let mut out = vec![b(0, 1, 0)];
        // 2^31.. : halves getting smaller, alternating regions, down to /32s.
        let mut at = 1u128 << 31;
        for len in 2..=32u8 {
            out.push(b(at, len, u16::from(len % 3)));
            at += 1 << (32 - u32::from(len));
        }
        out.push(b(at, 32, 7));
        assert_eq!(at, (1 << 32) - 1);
        out
    }

    #[test]
    fn every_address_finds_its_block_in_at_most_one_load_per_level() {
        let blocks = blocks();
        for strides in [&[24, 8][..], &[16, 8, 8], &[8; 4], &[16, 16]] {
            let t = Table::build(32, strides, &blocks);
            for (i, b) in blocks.iter().enumerate() {
                let end = b.start | ((1u128 << (32 - u32::from(b.len))) - 1);
                for a in [b.start, end, b.start + (end - b.start) / 2] {
                    let (v, loads) = t.lookup(a);
                    assert_eq!(v, b.value(), "block {i} at {a:#x}, strides {strides:?}");
                    assert!(loads <= strides.len());
                }
            }
            assert_eq!(Table::need(32, strides, &blocks), t.groups(), "{strides:?}");
            // DIR-24-8: a block of /24 or shorter in one load, longer in two.
            if strides == [24, 8] {
                assert_eq!(t.lookup(0).1, 1);
                assert_eq!(t.lookup((1 << 32) - 1).1, 2);
                assert_eq!(t.groups(), [1, 1]);
            }
        }
    }
}
