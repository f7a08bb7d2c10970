//! Turns the query frame into the reply: resize, write fresh Ethernet/IP/UDP headers from the
//! query's (addresses and ports swapped), copy the answer in, and compute the IPv4 header and UDP
//! checksums from scratch.
//!
//! Growing the frame: `bpf_xdp_adjust_tail` first; where the driver leaves little tailroom (veth
//! copies frames into buffers sized to fit them) the headroom, which XDP guarantees to be 256
//! bytes, takes the growth via `bpf_xdp_adjust_head` instead. The headers are written from saved
//! fields rather than edited in place, so the reply is the same either way.
//!
//! Every check that can fail on a well-formed query happens before the frame is touched, so a
//! failure passes the query up unchanged; after the resize a failure can only drop.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use dnsfast_common::{maps::MSG_AREA, stats::Counter, wire::MSG_BUF_LEN};

use crate::{
    Verdict, checksum,
    packet::{
        ETH_LEN, EthHdr, IPV4_LEN, IPV6_LEN, Ipv4Hdr, Ipv6Hdr, UDP_LEN, UdpHdr, frame_len, ptr_at,
    },
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

/// Resizes the frame by `delta` bytes: tail first, headroom when the tail has no room.
#[inline(always)]
fn resize(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: plain helper on our context; on failure the frame is unchanged.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0 {
        return true;
    }
    // SAFETY: as above.
    delta > 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } == 0
}

/// Rewrites the frame into the reply carrying `msg[..len]`.
#[inline(always)]
#[expect(clippy::cast_possible_wrap, reason = "frame lengths are below 64 KiB")]
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
    let saved = save(ctx, frame.v6).ok_or(Verdict::Pass(Counter::PassRewrite))?;
    let payload_sum = checksum::sum_message(msg, len).ok_or(Verdict::Pass(Counter::PassRewrite))?;
    let old_len = frame_len(ctx) as i64;
    let new_len = (frame.dns + len) as i64;
    if !resize(ctx, (new_len - old_len) as i32) {
        return Err(Verdict::Pass(Counter::PassNoRoom));
    }
    // SAFETY: `msg` is a map value of MSG_BUF_LEN > len bytes; the helper checks the packet side.
    let stored = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            frame.dns as u32,
            msg.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if stored != 0 {
        return Err(Verdict::Drop(Counter::DropRewrite));
    }
    let udp_len = (UDP_LEN + len) as u16;
    let ok = if frame.v6 {
        ipv6(ctx, &saved, udp_len, payload_sum)
    } else {
        ipv4(ctx, &saved, udp_len, payload_sum)
    };
    if ok.is_none() {
        return Err(Verdict::Drop(Counter::DropRewrite));
    }
    Ok(())
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
