//! Internet checksums (RFC 1071) for the reply, computed from scratch over the reply itself:
//! veth and many NICs deliver queries whose UDP checksum is only partial (TX offload on the
//! sender), so the query's checksum is no base for an incremental update.
//!
//! All sums are of 16-bit words in memory order; a one's-complement sum is byte-order
//! independent as long as the result is stored back in memory order (RFC 1071 §2(B)).

use aya_ebpf::helpers::generated::bpf_csum_diff;
use dnsfast_common::{maps::MSG_AREA, wire::MSG_BUF_LEN};

/// Largest buffer one `bpf_csum_diff` call sums on kernels before 6.13 (its scratchpad).
const CSUM_CHUNK: usize = 512;

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

/// Sum of the first `len` bytes of the message buffer (zero-padded to a multiple of four), by
/// the kernel's `csum_partial`, in chunks the helper accepts on every kernel.
#[inline(always)]
pub fn sum_message(msg: &mut [u8; MSG_BUF_LEN], len: usize) -> Option<u64> {
    let len = len & (MSG_AREA - 1);
    // Zero the pad bytes: the checksum covers the message as if followed by zeros.
    msg[len] = 0;
    msg[len + 1] = 0;
    msg[len + 2] = 0;
    let padded = (len + 3) & !3;
    let first = if padded > CSUM_CHUNK {
        CSUM_CHUNK
    } else {
        padded
    };
    let rest = padded - first;
    let base = msg.as_mut_ptr();
    // SAFETY: `base` is a map value of MSG_BUF_LEN bytes; first <= 512 and, below, 512 + rest
    // <= MSG_AREA < MSG_BUF_LEN. The helper only reads.
    let a = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, base.cast(), first as u32, 0) };
    if a < 0 {
        return None;
    }
    let mut s = a.cast_unsigned() & 0xFFFF_FFFF;
    if rest > 0 && rest <= MSG_AREA - CSUM_CHUNK {
        // SAFETY: as above; the second chunk starts at 512, 4-byte aligned like the first.
        let b = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                base.add(CSUM_CHUNK).cast(),
                rest as u32,
                0,
            )
        };
        if b < 0 {
            return None;
        }
        s += b.cast_unsigned() & 0xFFFF_FFFF;
    }
    Some(s)
}
