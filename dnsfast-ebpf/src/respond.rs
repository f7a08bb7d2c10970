//! Turns the query frame into the reply: build the answer in the scratch copy (shared builder),
//! resize the frame, write fresh Ethernet/IP/UDP headers from the query's (addresses and ports
//! swapped), copy the answer in while summing it, and compute the IPv4 header and UDP checksums
//! from scratch.
//!
//! Growing the frame: at the tail where the driver leaves room (NICs), else in the headroom,
//! which XDP guarantees (veth copies each frame into a buffer sized to fit it). Everything is
//! rewritten after the resize, so where the room came from does not matter; a per-CPU hint
//! remembers which worked, so the first try usually succeeds.
//!
//! Every check that can fail on a well-formed query happens before the frame is touched, so a
//! failure passes the query up unchanged; after the resize a failure can only drop.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use dnsfast_common::{
    maps::{HINT_HEAD_FIRST, MSG_AREA},
    stats::Counter,
    wire::{AnswerData, Ecs, HotPlan, MSG_BUF_LEN, MsgBuf, Query, write_hot_answer},
};

use crate::{
    Verdict, checksum,
    packet::{ETH_LEN, EthHdr, IPV4_LEN, IPV6_LEN, Ipv4Hdr, Ipv6Hdr, UDP_LEN, UdpHdr, ptr_at},
    parse::Frame,
};

/// IP TTL / hop limit of replies.
const REPLY_TTL: u8 = 64;
const IPPROTO_UDP: u8 = 17;

/// The query's header fields the reply needs, read before the frame moves.
struct Saved {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    eth_proto: [u8; 2],
    /// IPv4: TOS, ID, flags/fragment (DF kept). IPv6: version/class/flow label.
    v4_tos: u8,
    v4_id: [u8; 2],
    v4_frag: [u8; 2],
    v6_flow: [u8; 4],
    src: [u8; 16],
    dst: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
}

#[inline(always)]
fn save(ctx: &XdpContext, v6: bool) -> Option<Saved> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at checked the header lies inside the packet.
    let eth = unsafe { &*eth };
    let mut s = Saved {
        eth_src: eth.src,
        eth_dst: eth.dst,
        eth_proto: eth.proto,
        v4_tos: 0,
        v4_id: [0; 2],
        v4_frag: [0; 2],
        v6_flow: [0; 4],
        src: [0; 16],
        dst: [0; 16],
        sport: [0; 2],
        dport: [0; 2],
    };
    let udp_off = if v6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN)?;
        // SAFETY: as above.
        let ip = unsafe { &*ip };
        s.v6_flow = ip.ver_tc_flow;
        s.src = ip.src;
        s.dst = ip.dst;
        ETH_LEN + IPV6_LEN
    } else {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
        // SAFETY: as above.
        let ip = unsafe { &*ip };
        s.v4_tos = ip.tos;
        s.v4_id = ip.id;
        s.v4_frag = ip.frag;
        s.src[..4].copy_from_slice(&ip.src);
        s.dst[..4].copy_from_slice(&ip.dst);
        ETH_LEN + IPV4_LEN
    };
    let udp = ptr_at::<UdpHdr>(ctx, udp_off)?;
    // SAFETY: as above.
    let udp = unsafe { &*udp };
    s.sport = udp.sport;
    s.dport = udp.dport;
    Some(s)
}

#[inline(always)]
fn adjust_tail(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: plain helper on our context; on failure the frame is unchanged.
    unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) == 0 }
}

#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: as above.
    unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) == 0 }
}

/// Current frame length, without a helper call in the usual case: a query frame ends where its
/// DNS message ends unless Ethernet padded it.
#[inline(always)]
fn frame_len(ctx: &XdpContext, frame: &Frame) -> usize {
    if ctx.data() + frame.dns + frame.dns_len == ctx.data_end() {
        frame.dns + frame.dns_len
    } else {
        // SAFETY: plain helper on our context.
        unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
    }
}

/// Makes room for a DNS message of `total` bytes (the headers keep their size), at the tail or
/// in the headroom. `None` when there was no room: the frame is unchanged.
#[inline(always)]
#[expect(clippy::cast_possible_wrap, reason = "frame lengths are below 64 KiB")]
fn resize(ctx: &XdpContext, frame: &Frame, total: usize, hint: &mut u32) -> Option<()> {
    let old = frame_len(ctx, frame) as i64;
    let delta = (frame.dns + total) as i64 - old;
    if delta <= 0 {
        return (delta == 0 || adjust_tail(ctx, delta as i32)).then_some(());
    }
    let d = delta as i32;
    if *hint & HINT_HEAD_FIRST == 0 {
        if adjust_tail(ctx, d) {
            return Some(());
        }
        if adjust_head(ctx, -d) {
            *hint |= HINT_HEAD_FIRST;
            return Some(());
        }
    } else {
        if adjust_head(ctx, -d) {
            return Some(());
        }
        if adjust_tail(ctx, d) {
            *hint &= !HINT_HEAD_FIRST;
            return Some(());
        }
    }
    None
}

/// The parts of the scratch space the answer is built in (the rest may be borrowed elsewhere, by
/// the answer itself).
pub struct Work<'a> {
    /// `Scratch::msg`: the query, where the answer is built before it is copied into the frame.
    pub area: &'a mut [u8; MSG_BUF_LEN],
    /// `Scratch::cell`.
    pub cell: &'a mut u64,
    /// `Scratch::hint`.
    pub hint: &'a mut u32,
}

/// Rewrites the frame into the hot answer `answer` to `q` laid out as `plan`, with the Client
/// Subnet echo `ecs` if any.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one answer, each borrowed"
)]
pub fn answer<A: AnswerData>(
    ctx: &XdpContext,
    frame: &Frame,
    work: Work<'_>,
    q: &Query,
    answer: &A,
    plan: &HotPlan,
    ecs: Option<&Ecs>,
    rotation: u32,
) -> Result<(), Verdict> {
    let Work { area, cell, hint } = work;
    let saved = save(ctx, frame.v6).ok_or(Verdict::Pass(Counter::PassRewrite))?;
    let total = plan.total & (MSG_AREA - 1);
    let mut msg = MsgBuf::new(area, frame.dns_len, cell);
    write_hot_answer(&mut msg, q, answer, plan, &[], ecs, rotation)
        .ok_or(Verdict::Pass(Counter::PassRewrite))?;
    crate::stage::cut(7)?;
    // The frame changes from here on.
    resize(ctx, frame, total, hint).ok_or(Verdict::Pass(Counter::PassNoRoom))?;
    let payload = checksum::copy_out(ctx, frame.dns, area, total)
        .ok_or(Verdict::Drop(Counter::DropRewrite))?;
    let total = crate::packet::launder(cell, total) & (MSG_AREA - 1);
    let udp_len = (UDP_LEN + total) as u16;
    let ok = if frame.v6 {
        ipv6(ctx, &saved, udp_len, payload)
    } else {
        ipv4(ctx, &saved, udp_len, payload)
    };
    ok.ok_or(Verdict::Drop(Counter::DropRewrite))
}

#[inline(always)]
fn write_eth(ctx: &XdpContext, s: &Saved) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at checked the header against the resized packet.
    let eth = unsafe { &mut *eth };
    eth.dst = s.eth_src;
    eth.src = s.eth_dst;
    eth.proto = s.eth_proto;
    Some(())
}

/// Writes the UDP header (ports swapped) with its checksum; `pseudo` is the pseudo-header sum.
#[inline(always)]
fn write_udp(
    ctx: &XdpContext,
    off: usize,
    s: &Saved,
    udp_len: u16,
    pseudo: u64,
    payload: u64,
) -> Option<()> {
    let udp = ptr_at::<UdpHdr>(ctx, off)?;
    // SAFETY: ptr_at checked the header against the resized packet.
    let udp = unsafe { &mut *udp };
    udp.sport = s.dport;
    udp.dport = s.sport;
    udp.len = udp_len.to_be_bytes();
    let sum = pseudo
        + checksum::word(udp.sport)
        + checksum::word(udp.dport)
        + checksum::word(udp.len)
        + payload;
    let c = checksum::finish(sum);
    // A computed 0 is sent as all ones; 0 means "no checksum" (and is illegal over IPv6).
    udp.csum = if c == [0, 0] { [0xFF, 0xFF] } else { c };
    Some(())
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, s: &Saved, udp_len: u16, payload: u64) -> Option<()> {
    write_eth(ctx, s)?;
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
    // SAFETY: ptr_at checked the header against the resized packet.
    let ip = unsafe { &mut *ip };
    ip.ver_ihl = 0x45;
    ip.tos = s.v4_tos;
    ip.tot_len = (IPV4_LEN as u16 + udp_len).to_be_bytes();
    ip.id = s.v4_id;
    ip.frag = s.v4_frag;
    ip.ttl = REPLY_TTL;
    ip.proto = IPPROTO_UDP;
    ip.csum = [0, 0];
    ip.src.copy_from_slice(&s.dst[..4]);
    ip.dst.copy_from_slice(&s.src[..4]);
    // SAFETY: Ipv4Hdr is 20 plain bytes.
    let raw = unsafe { &*core::ptr::from_ref(ip).cast::<[u8; IPV4_LEN]>() };
    ip.csum = checksum::finish(checksum::sum_words(raw));
    let pseudo = checksum::sum_words(&ip.src)
        + checksum::sum_words(&ip.dst)
        + checksum::word([0, IPPROTO_UDP])
        + checksum::word(udp_len.to_be_bytes());
    write_udp(ctx, ETH_LEN + IPV4_LEN, s, udp_len, pseudo, payload)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, s: &Saved, udp_len: u16, payload: u64) -> Option<()> {
    write_eth(ctx, s)?;
    let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN)?;
    // SAFETY: ptr_at checked the header against the resized packet.
    let ip = unsafe { &mut *ip };
    ip.ver_tc_flow = s.v6_flow;
    ip.payload_len = udp_len.to_be_bytes();
    ip.next = IPPROTO_UDP;
    ip.hop_limit = REPLY_TTL;
    ip.src = s.dst;
    ip.dst = s.src;
    let pseudo = checksum::sum_words(&ip.src)
        + checksum::sum_words(&ip.dst)
        + checksum::word(udp_len.to_be_bytes())
        + checksum::word([0, IPPROTO_UDP]);
    write_udp(ctx, ETH_LEN + IPV6_LEN, s, udp_len, pseudo, payload)
}
