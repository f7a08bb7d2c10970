//! Bounds-checked access to the packet. Every read or write of packet memory goes through
//! [`ptr_at`], whose check is the one the verifier needs: the whole object lies before
//! `data_end`. Offsets are constants or small bounded values, so the check is cheap.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use dnsfast_common::{
    maps::{MAX_XDP_QUERY, MSG_AREA},
    stats::Counter,
    wire::MSG_BUF_LEN,
};

use crate::Verdict;

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

/// Length of the frame, as a number. (`data_end - data` would be pointer arithmetic on
/// `pkt_end`, which the verifier refuses once the compiler rearranges it.)
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: plain helper call on our context.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}

/// Big-endian u16 from two packet bytes.
#[inline(always)]
pub fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Copies `len` bytes of DNS payload at `offset` into the message buffer.
#[inline(always)]
pub fn load(
    ctx: &XdpContext,
    offset: usize,
    buf: &mut [u8; MSG_BUF_LEN],
    len: usize,
) -> Result<(), Verdict> {
    // The caller bounded len to 12..=MAX_XDP_QUERY; restate it in a form the verifier tracks.
    let n = len & (MSG_AREA - 1);
    if n == 0 || n > MAX_XDP_QUERY {
        return Err(Verdict::Pass(Counter::PassTooLarge));
    }
    // SAFETY: `buf` is a valid map value of MSG_BUF_LEN bytes and n <= MAX_XDP_QUERY < that;
    // the helper checks `offset + n` against the packet itself.
    let r =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, buf.as_mut_ptr().cast(), n as u32) };
    if r != 0 {
        return Err(Verdict::Pass(Counter::PassShort));
    }
    Ok(())
}
