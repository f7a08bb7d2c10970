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
            // DIR-24-8: a block of /24 or shorter in one load, longer in two.
            if strides == [24, 8] {
                assert_eq!(t.lookup(0).1, 1);
                assert_eq!(t.lookup((1 << 32) - 1).1, 2);
                assert_eq!(t.groups(), [1, 1]);
            }
        }
    }
}
