//! Turns the query frame into the reply: resize, copy the answer in, swap addresses and ports,
//! and compute fresh IPv4 header and UDP checksums.
//!
//! Every check that can fail on a well-formed query happens before the frame is touched, so a
//! failure passes the query up unchanged; after `bpf_xdp_adjust_tail` a failure can only drop.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_tail, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use dnsfast_common::{maps::MSG_AREA, stats::Counter, wire::MSG_BUF_LEN};

use crate::{
    Verdict, checksum,
    packet::{ETH_LEN, EthHdr, IPV4_LEN, IPV6_LEN, Ipv4Hdr, Ipv6Hdr, UDP_LEN, UdpHdr, ptr_at},
    parse::Frame,
};

/// IP TTL / hop limit of replies.
const REPLY_TTL: u8 = 64;
const IPPROTO_UDP: u8 = 17;

/// Rewrites the frame into the reply carrying `msg[..len]`.
#[inline(always)]
pub fn reply(
    ctx: &XdpContext,
    frame: &Frame,
    msg: &mut [u8; MSG_BUF_LEN],
    len: usize,
) -> Result<(), Verdict> {
    let len = len & (MSG_AREA - 1);
    if len == 0 {
        return Err(Verdict::Pass(Counter::PassRewrite));
    }
    let payload_sum = checksum::sum_message(msg, len).ok_or(Verdict::Pass(Counter::PassRewrite))?;
    let old_len = crate::packet::frame_len(ctx) as i64;
    let new_len = (frame.dns + len) as i64;
    // SAFETY: plain helper call on our context; on failure the frame is unchanged.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (new_len - old_len) as i32) } != 0 {
        return Err(Verdict::Pass(Counter::PassRewrite));
    }
    // SAFETY: `msg` is a map value of MSG_BUF_LEN > len bytes; the helper checks the packet side.
    let stored =
        unsafe { bpf_xdp_store_bytes(ctx.ctx, frame.dns as u32, msg.as_mut_ptr().cast(), len as u32) };
    if stored != 0 {
        return Err(Verdict::Drop(Counter::DropRewrite));
    }
    let udp_len = (UDP_LEN + len) as u16;
    let ok = if frame.v6 {
        ipv6(ctx, udp_len, payload_sum)
    } else {
        ipv4(ctx, udp_len, payload_sum)
    };
    if ok.is_none() {
        return Err(Verdict::Drop(Counter::DropRewrite));
    }
    Ok(())
}

#[inline(always)]
fn swap_eth(ctx: &XdpContext) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at re-checked the header against the resized packet.
    let eth = unsafe { &mut *eth };
    core::mem::swap(&mut eth.src, &mut eth.dst);
    Some(())
}

/// Swaps ports, sets length and checksum; `pseudo` is the pseudo-header sum.
#[inline(always)]
fn finish_udp(ctx: &XdpContext, off: usize, udp_len: u16, pseudo: u64, payload: u64) -> Option<()> {
    let udp = ptr_at::<UdpHdr>(ctx, off)?;
    // SAFETY: ptr_at re-checked the header against the resized packet.
    let udp = unsafe { &mut *udp };
    core::mem::swap(&mut udp.sport, &mut udp.dport);
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
fn ipv4(ctx: &XdpContext, udp_len: u16, payload: u64) -> Option<()> {
    swap_eth(ctx)?;
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
    // SAFETY: ptr_at re-checked the header against the resized packet.
    let ip = unsafe { &mut *ip };
    core::mem::swap(&mut ip.src, &mut ip.dst);
    ip.tot_len = (IPV4_LEN as u16 + udp_len).to_be_bytes();
    ip.ttl = REPLY_TTL;
    ip.csum = [0, 0];
    // SAFETY: Ipv4Hdr is 20 plain bytes.
    let raw = unsafe { &*core::ptr::from_ref(ip).cast::<[u8; IPV4_LEN]>() };
    ip.csum = checksum::finish(checksum::sum_words(raw));
    let pseudo = checksum::sum_words(&ip.src)
        + checksum::sum_words(&ip.dst)
        + checksum::word([0, IPPROTO_UDP])
        + checksum::word(udp_len.to_be_bytes());
    finish_udp(ctx, ETH_LEN + IPV4_LEN, udp_len, pseudo, payload)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, udp_len: u16, payload: u64) -> Option<()> {
    swap_eth(ctx)?;
    let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN)?;
    // SAFETY: ptr_at re-checked the header against the resized packet.
    let ip = unsafe { &mut *ip };
    core::mem::swap(&mut ip.src, &mut ip.dst);
    ip.payload_len = udp_len.to_be_bytes();
    ip.hop_limit = REPLY_TTL;
    let pseudo = checksum::sum_words(&ip.src)
        + checksum::sum_words(&ip.dst)
        + checksum::word(udp_len.to_be_bytes())
        + checksum::word([0, IPPROTO_UDP]);
    finish_udp(ctx, ETH_LEN + IPV6_LEN, udp_len, pseudo, payload)
}
