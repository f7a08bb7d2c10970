//! The weighted draw both executors use for a steered answer: which of a set's eligible records
//! an answer carries, and in which order.
//!
//! Route 53's weighted routing: each record is chosen with probability weight / total, without
//! replacement, up to `answer_count` records. The draw is a pure function of the set and of the
//! query's hash (`wire::answer_rotation`: ID and client port), so the XDP program and the daemon
//! give one query the same records in the same order, and resolvers' random IDs and ports spread
//! the choices by weight. Records of weight 0 are answered only when no record of positive weight
//! is eligible; then (as when every weight is 0) the eligible records share equally.
//!
//! Written for the verifier: fixed loop bounds, no branch per record (the choice is accumulated
//! with masks), one division per draw.

use crate::{
    maps::{GEO_SPECIAL, MAX_SET_RECORDS},
    wire::Ecs,
};

/// The region and SCOPE a Client Subnet option decides (RFC 7871 §7.2.1), given the `GEO_V4` /
/// `GEO_V6` lookups of an address (the XDP program's tries, the daemon's region map; both hold
/// the same values). `None`: it does not decide, and the resolver's address does with SCOPE 0:
/// SOURCE 0, an address in private or special-use space ([`GEO_SPECIAL`]), or no entry.
///
/// The address, zero past SOURCE (the validator checked), decides whatever SOURCE is, and
/// SCOPE is the length of its block (it may exceed SOURCE). An IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, SOURCE at least 96) is looked up as IPv4, its SCOPE 96 + the block's.
#[inline(always)]
pub fn ecs_region(
    e: &Ecs,
    lookup4: impl FnOnce([u8; 4]) -> Option<u32>,
    lookup6: impl FnOnce([u8; 16]) -> Option<u32>,
) -> Option<(u16, u8)> {
    if e.source_prefix == 0 {
        return None;
    }
    let a = e.address;
    let head = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let mid = u32::from_be_bytes([a[8], a[9], a[10], a[11]]);
    let (value, base) = if e.family == 1 {
        (lookup4([a[0], a[1], a[2], a[3]])?, 0)
    } else if head == 0 && mid == 0xFFFF && e.source_prefix >= 96 {
        (lookup4([a[12], a[13], a[14], a[15]])?, 96)
    } else {
        (lookup6(a)?, 0)
    };
    if value & GEO_SPECIAL != 0 {
        return None;
    }
    Some(((value & 0xFFFF) as u16, ((value >> 16) & 0xFF) as u8 + base))
}

/// Most records one steered answer carries.
pub const MAX_ANSWER_COUNT: usize = 8;

/// The records a steered answer carries: indices into the set, in answer order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    /// Record indices; the first `len` are valid.
    pub order: [u8; MAX_ANSWER_COUNT],
    /// How many were drawn (0 if no record is eligible).
    pub len: usize,
}

/// The `k`-th 32-bit draw value of a query whose hash is `seed` (splitmix64's finaliser).
#[inline(always)]
#[must_use]
pub const fn draw_value(seed: u32, k: usize) -> u32 {
    let mut x = ((seed as u64) << 8 | k as u64) ^ 0x5354_4545_5244_5257;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as u32
}

/// Draws up to `answer_count` (clamped to 1..=[`MAX_ANSWER_COUNT`]) of the first `count`
/// records whose bit is set in `eligible`, by `weights`, without replacement, for the query
/// whose hash is `seed`.
#[inline(always)]
#[must_use]
pub fn draw(
    weights: &[u8; MAX_SET_RECORDS],
    count: usize,
    eligible: u32,
    answer_count: usize,
    seed: u32,
) -> Draw {
    draw_with(weights, count, eligible, answer_count, seed, |v| v)
}

/// [`draw`], passing its running values through `launder` (which must return its argument).
/// The XDP program launders them through memory the verifier cannot see into: without that
/// the precise values it tracks down each draw's branches (which records are left, which was
/// chosen) would multiply its states by up to 16 per record drawn.
///
/// Branch-free and loop-free per record: the 16 weights are handled as four 64-bit words of
/// four 16-bit lanes (SWAR), so one record drawn costs a few dozen ALU operations and no
/// dependent chain per record. Each lane holds a weight (at most 255) or a running sum of them
/// (at most 16 × 255 = 4,080), far from a lane's 15 bits, so no lane carries into the next.
#[inline(always)]
#[must_use]
pub fn draw_with(
    weights: &[u8; MAX_SET_RECORDS],
    count: usize,
    eligible: u32,
    answer_count: usize,
    seed: u32,
    mut launder: impl FnMut(u32) -> u32,
) -> Draw {
    const ONES: u64 = 0x0001_0001_0001_0001;
    const HIGH: u64 = 0x8000_8000_8000_8000;
    let present = if count >= 32 {
        u32::MAX
    } else {
        (1u32 << count) - 1
    };
    let eligible = launder(eligible & present);
    // Record 4g + l's weight in lane l of word g.
    let mut lanes = [0u64; 4];
    let mut g = 0;
    while g < 4 {
        let mut l = 0;
        while l < 4 {
            lanes[g] |= u64::from(weights[4 * g + l]) << (16 * l);
            l += 1;
        }
        g += 1;
    }
    // The weighted records (bit i: weight i is not 0): a lane's bit 15 is set by adding
    // 0x7FFF to a nonzero lane of at most 255.
    let mut weighted = 0u32;
    let mut g = 0;
    while g < 4 {
        let nonzero = ((lanes[g] + 0x7FFF * ONES) & HIGH) >> 15;
        // Bits 0, 16, 32, 48 to bits 0..4.
        let packed = (nonzero | nonzero >> 15 | nonzero >> 30 | nonzero >> 45) & 0xF;
        weighted |= (packed as u32) << (4 * g);
        g += 1;
    }
    // If no eligible record is weighted, every eligible one weighs 1.
    let equal = launder(u32::from(eligible & weighted == 0));
    let equal_mask = 0u32.wrapping_sub(equal);
    let mut left = launder(eligible & (weighted | equal_mask));
    let equal_lanes = u64::from(equal_mask) | u64::from(equal_mask) << 32;
    let mut g = 0;
    while g < 4 {
        lanes[g] = (lanes[g] & !equal_lanes) | (ONES & equal_lanes);
        g += 1;
    }
    let want = answer_count.clamp(1, MAX_ANSWER_COUNT);
    let mut out = Draw {
        order: [0; MAX_ANSWER_COUNT],
        len: 0,
    };
    let mut k = 0;
    while k < MAX_ANSWER_COUNT {
        if k >= want || left == 0 {
            break;
        }
        // Each lane's running sum of the weights left (the records before it included), over
        // all 16: within a word by one multiply, across words by the totals before it.
        let mut prefix = [0u64; 4];
        let mut before = 0u64;
        let mut g = 0;
        while g < 4 {
            let bits = u64::from(left >> (4 * g)) & 0xF;
            let spread = (bits | bits << 15 | bits << 30 | bits << 45) & ONES;
            let w = lanes[g] & (spread * 0xFFFF);
            prefix[g] = w.wrapping_mul(ONES) + before * ONES;
            before = prefix[g] >> 48;
            g += 1;
        }
        // total > 0: `left` holds at least one record of positive weight.
        // (A checked remainder: the laundered total is not known to be nonzero, and a division
        // by zero must not become a panic path in the XDP program.)
        let total = launder(before as u32);
        let r = launder(draw_value(seed, k).checked_rem(total).unwrap_or(0));
        // The first record whose running sum passes r is the number of running sums that do
        // not: a lane's bit 15, set on each, is cleared by subtracting r + 1 where the sum is
        // at most r.
        let step = u64::from(r) + 1;
        let mut not_past = 0u64;
        let mut g = 0;
        while g < 4 {
            let past = ((prefix[g] | HIGH) - step * ONES) & HIGH;
            not_past += 4 - ((past >> 15).wrapping_mul(ONES) >> 48);
            g += 1;
        }
        let chosen = launder(not_past as u32) & (MAX_SET_RECORDS as u32 - 1);
        out.order[k] = chosen as u8;
        left = launder(left & !(1u32 << chosen));
        out.len = k + 1;
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;

    /// The draw as first written: record by record, a chain of compares (what the SWAR draw
    /// must equal), without the verifier's laundering, which returns its argument.
    fn draw_reference(
        weights: &[u8; MAX_SET_RECORDS],
        count: usize,
        eligible: u32,
        answer_count: usize,
        seed: u32,
    ) -> Draw {
        let present = if count >= 32 {
            u32::MAX
        } else {
            (1u32 << count) - 1
        };
        let eligible = eligible & present;
        // The weighted records among the eligible; if there are none, every eligible one weighs 1.
        let mut weighted = 0u32;
        let mut i = 0;
        while i < MAX_SET_RECORDS {
            weighted |= u32::from(weights[i] != 0) << i;
            i += 1;
        }
        let equal = u32::from(eligible & weighted == 0);
        // All ones when every eligible record weighs the same (1).
        let equal_mask = 0u32.wrapping_sub(equal);
        let mut left = eligible & (weighted | equal_mask);
        let mut eff = [0u8; MAX_SET_RECORDS];
        let mut i = 0;
        while i < MAX_SET_RECORDS {
            eff[i] = ((u32::from(weights[i]) & !equal_mask) | (equal_mask & 1)) as u8;
            i += 1;
        }
        let want = answer_count.clamp(1, MAX_ANSWER_COUNT);
        let mut out = Draw {
            order: [0; MAX_ANSWER_COUNT],
            len: 0,
        };
        let mut k = 0;
        while k < MAX_ANSWER_COUNT {
            if k >= want || left == 0 {
                break;
            }
            let weight = |i: usize| u32::from(eff[i]) * ((left >> i) & 1);
            let mut total = 0u32;
            let mut i = 0;
            while i < MAX_SET_RECORDS {
                total += weight(i);
                i += 1;
            }
            // total > 0 where `left` holds a record of positive weight (as in `draw_with`, a
            // zero total draws 0 rather than panicking).
            let r = draw_value(seed, k).checked_rem(total).unwrap_or(0);
            // The first record whose running sum passes r.
            let (mut acc, mut chosen, mut found) = (0u32, 0u32, 0u32);
            let mut i = 0;
            while i < MAX_SET_RECORDS {
                acc += weight(i);
                let hit = u32::from(acc > r) & (found ^ 1);
                chosen |= hit * i as u32;
                found |= hit;
                i += 1;
            }
            let chosen = chosen & (MAX_SET_RECORDS as u32 - 1);
            out.order[k] = chosen as u8;
            left &= !(1u32 << chosen);
            out.len = k + 1;
            k += 1;
        }
        out
    }

    #[test]
    fn the_lane_draw_equals_the_record_by_record_one() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..300_000u32 {
            let v = next();
            let mut ws = [0u8; MAX_SET_RECORDS];
            for (i, w) in ws.iter_mut().enumerate() {
                let b = (next() >> (i % 8)) as u8;
                // Many zeros, many 255s, the rest anything.
                *w = match v >> (2 * i) & 3 {
                    0 => 0,
                    1 => 255,
                    _ => b,
                };
            }
            let count = (v >> 40) as usize % 18;
            let eligible = (next() as u32) & if case % 3 == 0 { 0xFFFF } else { u32::MAX };
            let answer_count = (v >> 48) as usize % 10;
            let seed = next() as u32;
            assert_eq!(
                draw(&ws, count, eligible, answer_count, seed),
                draw_reference(&ws, count, eligible, answer_count, seed),
                "weights {ws:?} count {count} eligible {eligible:#x} answers {answer_count} seed {seed}"
            );
        }
    }

    fn weights(w: &[u8]) -> [u8; MAX_SET_RECORDS] {
        let mut a = [0; MAX_SET_RECORDS];
        a[..w.len()].copy_from_slice(w);
        a
    }

    /// How often each record is drawn first over `n` seeds.
    fn first_shares(w: &[u8], eligible: u32, answer_count: usize, n: u32) -> Vec<f64> {
        let ws = weights(w);
        let mut hits = vec![0u32; w.len()];
        for seed in 0..n {
            let d = draw(
                &ws,
                w.len(),
                eligible,
                answer_count,
                seed.wrapping_mul(0x9E37_79B9),
            );
            hits[usize::from(d.order[0])] += 1;
        }
        hits.iter().map(|h| f64::from(*h) / f64::from(n)).collect()
    }

    fn assert_shares(got: &[f64], want: &[f64]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() < 0.01,
                "record {i}: share {g:.4}, weight share {w:.4}"
            );
        }
    }

    #[test]
    fn first_records_follow_the_weights() {
        let n = 200_000;
        assert_shares(
            &first_shares(&[50, 30, 20, 0], 0b1111, 1, n),
            &[0.5, 0.3, 0.2, 0.0],
        );
        // Drawing three changes nothing about the first.
        assert_shares(
            &first_shares(&[50, 30, 20, 0], 0b1111, 3, n),
            &[0.5, 0.3, 0.2, 0.0],
        );
        assert_shares(&first_shares(&[20; 5], 0b11111, 1, n), &[0.2; 5]);
        // All weights 0: equal shares.
        assert_shares(&first_shares(&[0; 4], 0b1111, 1, n), &[0.25; 4]);
        // Weight-0 records only when no weighted one is eligible.
        assert_shares(
            &first_shares(&[0, 10, 0, 30], 0b0101, 1, n),
            &[0.5, 0.0, 0.5, 0.0],
        );
        assert_shares(
            &first_shares(&[0, 10, 0, 30], 0b1111, 1, n),
            &[0.0, 0.25, 0.0, 0.75],
        );
    }

    #[test]
    fn draws_are_without_replacement_and_only_of_eligible_records() {
        let ws = weights(&[1, 200, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        for seed in 0..20_000u32 {
            let eligible = seed.wrapping_mul(0x0101_0101) & 0xFFFF;
            let d = draw(&ws, 16, eligible, 8, seed);
            assert_eq!(d.len, eligible.count_ones().min(8) as usize, "seed {seed}");
            let mut seen = 0u32;
            for &i in &d.order[..d.len] {
                assert!(eligible & (1 << i) != 0, "record {i} not eligible");
                assert!(seen & (1 << i) == 0, "record {i} twice");
                seen |= 1 << i;
            }
        }
        // Fewer weighted records than asked for: weight-0 ones do not fill up.
        let d = draw(&weights(&[0, 5, 0, 5]), 4, 0b1111, 4, 7);
        assert_eq!(d.len, 2);
        // Nothing eligible, or eligible bits past the set's records: nothing drawn.
        assert_eq!(draw(&ws, 16, 0, 3, 1).len, 0);
        assert_eq!(draw(&ws, 2, 0b1100, 3, 1).len, 0);
        // A pure function of the seed.
        assert_eq!(draw(&ws, 16, 0xFFFF, 8, 99), draw(&ws, 16, 0xFFFF, 8, 99));
    }
}
