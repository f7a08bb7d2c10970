//! Ethernet / IPv4 / IPv6 / UDP: decides whether a frame is a DNS query to us that the program
//! may answer, and where its DNS payload is. Anything unusual is passed up untouched: the
//! kernel stack and the daemon handle it correctly, the fast path only needs the common case.

use aya_ebpf::programs::XdpContext;
use dnsfast_common::{
    maps::{MAX_XDP_QUERY, XdpConfig},
    stats::Counter,
    wire::HEADER_LEN,
};

use crate::{
    Verdict, config,
    packet::{
        ETH_LEN, EthHdr, IPV4_LEN, IPV6_LEN, Ipv4Hdr, Ipv6Hdr, UDP_LEN, UdpHdr, be16, ptr_at,
    },
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_UDP: u8 = 17;

/// A DNS query frame the program may answer.
pub struct Frame {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Offset of the DNS message (a constant per family: no VLAN tag, no IP options).
    pub dns: usize,
    /// Length of the DNS message, from the UDP length.
    pub dns_len: usize,
    /// The client's UDP source port (host order): the answer order depends on it.
    pub client_port: u16,
}

/// Classifies the frame.
#[inline(always)]
pub fn frame(ctx: &XdpContext, cfg: &XdpConfig) -> Result<Frame, Verdict> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(Verdict::Pass(Counter::PassShort))?;
    // SAFETY: ptr_at checked that the header is inside the packet.
    let proto = be16(unsafe { (*eth).proto });
    match proto {
        ETH_P_IP => ipv4(ctx, cfg),
        ETH_P_IPV6 => ipv6(ctx, cfg),
        // Tagged frames are rare on a DNS server's port; the stack handles them.
        ETH_P_8021Q | ETH_P_8021AD => Err(Verdict::Pass(Counter::PassVlan)),
        _ => Err(Verdict::Pass(Counter::PassNotIp)),
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, cfg: &XdpConfig) -> Result<Frame, Verdict> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN).ok_or(Verdict::Pass(Counter::PassShort))?;
    // SAFETY: ptr_at checked the whole header.
    let ip = unsafe { &*ip };
    if ip.ver_ihl >> 4 != 4 {
        return Err(Verdict::Pass(Counter::PassShort));
    }
    // Options move the UDP header; they are rare enough to leave to the stack.
    if ip.ver_ihl & 0x0F != 5 {
        return Err(Verdict::Pass(Counter::PassIpOptions));
    }
    // MF set or a fragment offset: the payload is not all here.
    if be16(ip.frag) & 0x3FFF != 0 {
        return Err(Verdict::Pass(Counter::PassFragment));
    }
    if ip.proto != IPPROTO_UDP {
        return Err(Verdict::Pass(Counter::PassNotUdp));
    }
    let udp = ptr_at::<UdpHdr>(ctx, ETH_LEN + IPV4_LEN).ok_or(Verdict::Pass(Counter::PassShort))?;
    // SAFETY: ptr_at checked the whole header.
    let udp = unsafe { &*udp };
    if be16(udp.dport) != cfg.port {
        return Err(Verdict::Pass(Counter::PassNotDnsPort));
    }
    if !config::ours_v4(cfg, &ip.dst) {
        return Err(Verdict::Pass(Counter::PassNotOurs));
    }
    let ip_payload = usize::from(be16(ip.tot_len)).wrapping_sub(IPV4_LEN);
    dns_payload(
        ctx,
        false,
        ETH_LEN + IPV4_LEN,
        ip_payload,
        usize::from(be16(udp.len)),
        be16(udp.sport),
    )
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, cfg: &XdpConfig) -> Result<Frame, Verdict> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN).ok_or(Verdict::Pass(Counter::PassShort))?;
    // SAFETY: ptr_at checked the whole header.
    let ip = unsafe { &*ip };
    if ip.ver_tc_flow[0] >> 4 != 6 {
        return Err(Verdict::Pass(Counter::PassShort));
    }
    match ip.next {
        IPPROTO_UDP => {}
        // Hop-by-hop, routing, fragment, destination options, AH, ESP, mobility, HIP, shim6,
        // experimental: the UDP header is further in (or absent); leave it to the stack.
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => {
            return Err(Verdict::Pass(Counter::PassIpv6Ext));
        }
        _ => return Err(Verdict::Pass(Counter::PassNotUdp)),
    }
    let udp = ptr_at::<UdpHdr>(ctx, ETH_LEN + IPV6_LEN).ok_or(Verdict::Pass(Counter::PassShort))?;
    // SAFETY: ptr_at checked the whole header.
    let udp = unsafe { &*udp };
    if be16(udp.dport) != cfg.port {
        return Err(Verdict::Pass(Counter::PassNotDnsPort));
    }
    if !config::ours_v6(cfg, &ip.dst) {
        return Err(Verdict::Pass(Counter::PassNotOurs));
    }
    let ip_payload = usize::from(be16(ip.payload_len));
    dns_payload(
        ctx,
        true,
        ETH_LEN + IPV6_LEN,
        ip_payload,
        usize::from(be16(udp.len)),
        be16(udp.sport),
    )
}

/// Locates the DNS message from the UDP length. Sized from the headers, never from `data_end`:
/// Ethernet pads short frames to 60 bytes, and the padding is not DNS.
#[inline(always)]
fn dns_payload(
    ctx: &XdpContext,
    v6: bool,
    udp_off: usize,
    ip_payload: usize,
    udp_len: usize,
    client_port: u16,
) -> Result<Frame, Verdict> {
    // A UDP length that disagrees with IP is malformed or a trick; the stack judges it.
    if udp_len != ip_payload || udp_len < UDP_LEN {
        return Err(Verdict::Pass(Counter::PassUdpLength));
    }
    let dns = udp_off + UDP_LEN;
    let dns_len = udp_len - UDP_LEN;
    if dns_len > MAX_XDP_QUERY {
        return Err(Verdict::Pass(Counter::PassTooLarge));
    }
    if ctx.data() + dns + dns_len > ctx.data_end() {
        return Err(Verdict::Pass(Counter::PassShort));
    }
    // Addressed to our DNS port and address but shorter than a DNS header: nothing to answer.
    if dns_len < HEADER_LEN {
        return Err(Verdict::Drop(Counter::DropShortHeader));
    }
    Ok(Frame {
        v6,
        dns,
        dns_len,
        client_port,
    })
}
