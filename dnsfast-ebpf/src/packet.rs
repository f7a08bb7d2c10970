//! Bounds-checked access to the packet. Every read or write of packet memory goes through
//! [`ptr_at`], whose check is the one the verifier needs: the whole object lies before
//! `data_end`. Offsets are constants or small bounded values, so the check is cheap.

use aya_ebpf::programs::XdpContext;
use dnsfast_common::{
    maps::{MAX_XDP_QUERY, MSG_AREA, MSG_MASK},
    wire::MSG_BUF_LEN,
};

/// Ethernet header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

/// IPv4 header without options.
#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub csum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// IPv6 fixed header.
#[repr(C)]
pub struct Ipv6Hdr {
    pub ver_tc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// UDP header.
#[repr(C)]
pub struct UdpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub csum: [u8; 2],
}

pub const ETH_LEN: usize = size_of::<EthHdr>();
pub const IPV4_LEN: usize = size_of::<Ipv4Hdr>();
pub const IPV6_LEN: usize = size_of::<Ipv6Hdr>();
pub const UDP_LEN: usize = size_of::<UdpHdr>();

/// Pointer to a `T` at `offset` bytes into the packet, if all of it is inside the packet.
///
/// The returned pointer is valid until the packet is resized (`bpf_xdp_adjust_*`); callers
/// re-derive it afterwards.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Address of the `n` bytes at `off` into the frame, if they lie inside it.
///
/// Written for the verifier, which learns a readable range from `p + n > data_end` only when the
/// pointer compared and the pointer used share their lineage, and only with the `+ n` in the
/// comparison itself. The compiler, left alone, recomputes the pointer separately for the check
/// and the access, or folds `p + 1 > end` into `p >= end` (same arithmetic, no range). Passing
/// the pointer and `n` through [`opaque`] keeps both as written; the verifier still sees the
/// constant.
#[inline(always)]
pub fn frame_ptr(ctx: &XdpContext, off: usize, n: usize) -> Option<usize> {
    let p = opaque(ctx.data() + off);
    (p + opaque(n) <= ctx.data_end()).then_some(p)
}

/// `v`, hidden from the compiler's optimiser but not from the verifier: an inline assembly
/// block that takes and returns it in a register and adds zero to it. That is one ALU
/// instruction, unlike `core::hint::black_box`, which costs a store and a load through the stack
/// on BPF, on the critical path of every packet access it guards. (Not a plain `r = r`: the JIT
/// emits nothing for a move to itself, and an instruction of no bytes leaves two entries of the
/// JIT's line table at one address, which makes bpftool drop the program's source lines.)
#[inline(always)]
pub fn opaque(mut v: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    // SAFETY: adding zero to a register changes nothing else.
    unsafe {
        core::arch::asm!("{0} += 0", inout(reg) v, options(pure, nomem, nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        v = core::hint::black_box(v);
    }
    v
}

/// Big-endian u16 from two packet bytes.
#[inline(always)]
pub fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Returns `v` through a volatile round trip in map memory: the verifier then knows nothing of it
/// but its type, so paths that left a loop at different iterations continue as one state.
#[inline(always)]
pub fn launder(cell: &mut u64, v: usize) -> usize {
    // SAFETY: `cell` is a valid, exclusive u64 (in a map value).
    unsafe {
        core::ptr::write_volatile(cell, v as u64);
        core::ptr::read_volatile(cell) as usize
    }
}

/// Copies the DNS message (`len` bytes at `off` into the frame, `len` at least 12 and at most
/// `MAX_XDP_QUERY`) into `buf`, eight bytes at a time with plain loads: a helper call costs more
/// than the whole copy of a typical query.
#[inline(always)]
pub fn copy_in(
    ctx: &XdpContext,
    off: usize,
    len: usize,
    buf: &mut [u8; MSG_BUF_LEN],
) -> Option<()> {
    let len = len & (MSG_AREA - 1);
    if len < 8 {
        return None;
    }
    let mut i = 0;
    for _ in 0..(MAX_XDP_QUERY / 8) {
        if i + 8 > len {
            break;
        }
        let p = frame_ptr(ctx, off + i, 8)?;
        // SAFETY: frame_ptr checked the eight bytes lie inside the frame.
        let w = unsafe { (p as *const [u8; 8]).read_unaligned() };
        buf[i & MSG_MASK..(i & MSG_MASK) + 8].copy_from_slice(&w);
        i += 8;
    }
    if i < len {
        // The last, partial word: the eight bytes that end where the message ends (the frame
        // may end there too), over the bytes already copied.
        let start = opaque(len - 8);
        let p = frame_ptr(ctx, off + start, 8)?;
        // SAFETY: frame_ptr checked the eight bytes lie inside the frame.
        let w = unsafe { (p as *const [u8; 8]).read_unaligned() };
        let j = start & MSG_MASK;
        buf[j..j + 8].copy_from_slice(&w);
    }
    Some(())
}
