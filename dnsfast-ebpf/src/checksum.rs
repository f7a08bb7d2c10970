//! Internet checksums (RFC 1071) for the reply, computed from scratch over the reply itself:
//! veth and many NICs deliver queries whose UDP checksum is only partial (TX offload on the
//! sender), so the query's checksum is no base for an incremental update.
//!
//! All sums are of 16-bit words in memory order; a one's-complement sum is byte-order
//! independent as long as the result is stored back in memory order (RFC 1071 §2(B)). Eight
//! bytes are summed at a time as two 32-bit halves into a 64-bit accumulator, which cannot
//! overflow for any DNS message.

use aya_ebpf::programs::XdpContext;
use dnsfast_common::{
    maps::{MSG_AREA, MSG_MASK},
    wire::MSG_BUF_LEN,
};

use crate::packet::frame_ptr;

/// A 16-bit word in memory order.
#[inline(always)]
pub fn word(b: [u8; 2]) -> u64 {
    u64::from(u16::from_ne_bytes(b))
}

/// Sum of the words of `bytes` (even length).
#[inline(always)]
pub fn sum_words<const N: usize>(bytes: &[u8; N]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < N {
        s += word([bytes[i], bytes[i + 1]]);
        i += 2;
    }
    s
}

/// Folds a sum to 16 bits and complements it: the value to store, in memory order.
#[inline(always)]
pub fn finish(mut s: u64) -> [u8; 2] {
    s = (s & 0xFFFF_FFFF) + (s >> 32);
    s = (s & 0xFFFF) + (s >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    (!(s as u16)).to_ne_bytes()
}

#[inline(always)]
fn halves(w: [u8; 8]) -> u64 {
    let w = u64::from_ne_bytes(w);
    (w & 0xFFFF_FFFF) + (w >> 32)
}

/// Copies the DNS answer (`len` bytes of `buf`, at least 8, below 1024) into the frame at `off`
/// and returns its checksum sum (as if followed by zeros), eight bytes at a time with plain
/// loads and stores: cheaper than the copy and checksum helpers.
#[inline(always)]
pub fn copy_out(ctx: &XdpContext, off: usize, buf: &[u8; MSG_BUF_LEN], len: usize) -> Option<u64> {
    let len = len & MSG_MASK;
    if len < 8 {
        return None;
    }
    let mut sum = 0u64;
    let mut at = 0;
    for _ in 0..(MSG_AREA / 8) {
        if at + 8 > len {
            break;
        }
        let dst = frame_ptr(ctx, off + at, 8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(&buf[at & MSG_MASK..(at & MSG_MASK) + 8]);
        // SAFETY: frame_ptr checked the eight bytes lie inside the frame.
        unsafe { (dst as *mut [u8; 8]).write_unaligned(word) };
        sum += halves(word);
        at += 8;
    }
    let rest = len - at;
    if rest > 0 {
        // The last, partial word: write the eight bytes that end where the answer ends (over
        // bytes already written, with the same values), sum only the new ones.
        let start = crate::packet::opaque(len - 8);
        let dst = frame_ptr(ctx, off + start, 8)?;
        let from = start & MSG_MASK;
        let mut word = [0u8; 8];
        word.copy_from_slice(&buf[from..from + 8]);
        // SAFETY: frame_ptr checked the eight bytes lie inside the frame.
        unsafe { (dst as *mut [u8; 8]).write_unaligned(word) };
        let tail = (u64::from_le_bytes(word) >> (8 * (8 - rest))).to_le_bytes();
        sum += halves(tail);
    }
    Some(sum)
}
