//! The benchmark's ceiling: a bare XDP responder that turns every UDP query to port 53 into an
//! empty response without looking anything up (`cargo xtask bench` measures it beside dnsfast;
//! no XDP DNS server can answer faster with the same load). It swaps addresses and ports, sets QR
//! and, over IPv4, sends no UDP checksum (legal there, and the cheapest possible); over IPv6 it
//! passes. Every field it touches keeps the IPv4 header checksum valid (the sum of swapped words
//! does not change).
//!
//! [`reflect_grow`] is the second reference: what the ceiling costs once it also does what every
//! answer with a record needs, and nothing else. It grows the frame by one A record (16 bytes) in
//! the headroom, as dnsfast does on veth, moves the query there, appends a fixed A record
//! compressed to the question name, sets QR, AA and ANCOUNT 1, and fixes the lengths and the IPv4
//! header checksum (UDP checksum 0). The reply is well formed for queries without additional
//! records (the record lands after an OPT otherwise: the cost is the same, the layout is not).
//!
//! [`reflect_miss`] is the big zone's reference: the ceiling plus the one memory access a lookup
//! in a large table cannot avoid. It hashes the first 16 bytes of the question name and loads the
//! slot of the bucket that hash picks in `HOT_TABLE`, loaded empty with as many buckets as
//! dnsfast gives the benchmark's big zone, before reflecting the query as the ceiling does.

//! [`reflect_lpm`] and [`reflect_geo_miss`] are the region lookup's references, for queries
//! whose last bytes are a Client Subnet option of an IPv4 /24 or an IPv6 /56 (as the bench's
//! generator builds them; others pass). The first adds one lookup of the option's address in a
//! kernel LPM trie (`ECS_RESOLVERS_*`, filled by its loader with the region map's blocks), the
//! second one load, picked by that address, from `GEO4_L0` at its full size: the memory access a
//! lookup for random clients cannot avoid.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_head, programs::XdpContext,
};
use dnsfast_common::maps::{MAX_XDP_QUERY, SLOT_TOMB, hot_hash};

use crate::{
    checksum,
    packet::{ETH_LEN, EthHdr, IPV4_LEN, Ipv4Hdr, UDP_LEN, UdpHdr, be16, frame_ptr, ptr_at},
};

/// What [`reflect_grow`] appends: an A record for the question name (a pointer to offset 12),
/// TTL 60, address 198.18.0.1.
const RECORD: [u8; 16] = [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 0, 1];

/// Pointers to the Ethernet, IPv4 and UDP headers of a frame that is an IPv4 (no options) UDP
/// datagram to port 53; all three lie inside the frame (until it is resized).
type Headers = (*mut EthHdr, *mut Ipv4Hdr, *mut UdpHdr);

#[inline(always)]
fn udp4_to_53(ctx: &XdpContext) -> Option<Headers> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
    let udp = ptr_at::<UdpHdr>(ctx, ETH_LEN + IPV4_LEN)?;
    // SAFETY: ptr_at checked each header lies inside the packet.
    let ours = unsafe {
        be16((*eth).proto) == 0x0800
            && (*ip).ver_ihl == 0x45
            && (*ip).proto == 17
            && be16((*udp).dport) == 53
    };
    ours.then_some((eth, ip, udp))
}

/// Swaps the addresses and ports of the headers `h` points to.
///
/// # Safety
/// `h` must come from [`udp4_to_53`] on the frame as it is now.
#[inline(always)]
unsafe fn swap_ends(h: Headers) {
    // SAFETY: the caller's promise; the three headers do not overlap.
    unsafe {
        core::mem::swap(&mut (*h.0).src, &mut (*h.0).dst);
        core::mem::swap(&mut (*h.1).src, &mut (*h.1).dst);
        core::mem::swap(&mut (*h.2).sport, &mut (*h.2).dport);
    }
}

#[inline(always)]
pub fn reflect(ctx: &XdpContext) -> Option<u32> {
    reflect_after(ctx, |_| Some(()))
}

/// The ceiling plus one load from the `HOT_TABLE` bucket a hash of the queried name picks (see
/// the module comment).
#[inline(always)]
pub fn reflect_miss(ctx: &XdpContext) -> Option<u32> {
    reflect_after(ctx, |ctx| {
        let cfg = crate::config::get()?;
        let name = ptr_at::<[u64; 2]>(ctx, ETH_LEN + IPV4_LEN + UDP_LEN + 12)?;
        // SAFETY: ptr_at checked the 16 bytes lie inside the frame.
        let [a, b] = unsafe { name.read_unaligned() };
        let slot = crate::lookup::bucket_slot(cfg, hot_hash(0, 0, [a, b, 0, 0]))?;
        // The daemon never runs beside this program, so every bucket is unused; the test keeps
        // the load (and its latency) on the path to the answer, as a lookup's key test does.
        (slot != SLOT_TOMB).then_some(())
    })
}

/// The Client Subnet address of a query that ends with the option for an IPv4 /24 or an IPv6
/// /56: whether it is IPv6, and its bytes (zero-padded).
#[inline(always)]
fn ecs_tail(ctx: &XdpContext) -> Option<(bool, [u8; 16])> {
    let len = ctx.data_end() - ctx.data();
    if len < ETH_LEN + IPV4_LEN + UDP_LEN + 12 + 16 {
        return None;
    }
    // Bounded for the verifier, as `reflect_grow`'s length.
    let at = crate::packet::opaque(len - 16) & 0x3FF;
    let p = frame_ptr(ctx, at, 16)?;
    // SAFETY: frame_ptr checked the 16 bytes lie inside the frame.
    let t = unsafe { (p as *const [u8; 16]).read_unaligned() };
    let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    let mut a = [0u8; 16];
    // Option code 8, length, FAMILY, SOURCE and SCOPE 0, then the address.
    if word(5) == 0x0008_0007 && word(9) == 0x0001_1800 {
        a[..3].copy_from_slice(&t[13..]);
        Some((false, a))
    } else if word(1) == 0x0008_000B && word(5) == 0x0002_3800 {
        a[..7].copy_from_slice(&t[9..]);
        Some((true, a))
    } else {
        None
    }
}

/// The ceiling plus one LPM-trie lookup of the Client Subnet address (see the module comment).
#[inline(always)]
pub fn reflect_lpm(ctx: &XdpContext) -> Option<u32> {
    reflect_after(ctx, |ctx| {
        let (v6, a) = ecs_tail(ctx)?;
        // The blocks cover the whole space: a lookup always finds one, and its value is a
        // region (never 0xFF); the test keeps the load on the path to the answer.
        (crate::lookup::reference_lpm(v6, a)? != 0xFF).then_some(())
    })
}

/// The ceiling plus one load from `GEO4_L0` picked by the Client Subnet address (see the module
/// comment): an IPv4 /24's own entry (four to a value), an IPv6 /56 hashed over the table.
#[inline(always)]
pub fn reflect_geo_miss(ctx: &XdpContext) -> Option<u32> {
    reflect_after(ctx, |ctx| {
        let (v6, a) = ecs_tail(ctx)?;
        let i = if v6 {
            let h = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], 0])
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (h >> 42) as usize
        } else {
            (usize::from(a[0]) << 14) | (usize::from(a[1]) << 6) | (usize::from(a[2]) >> 2)
        };
        // Loaded empty: every value is 0.
        (crate::lookup::reference_l0(i)? != u64::MAX).then_some(())
    })
}

/// The ceiling's reflection, once `before` (run on the frame after the header checks) agreed.
#[inline(always)]
fn reflect_after(ctx: &XdpContext, before: impl FnOnce(&XdpContext) -> Option<()>) -> Option<u32> {
    let h = udp4_to_53(ctx)?;
    before(ctx)?;
    let flags = ptr_at::<u8>(ctx, ETH_LEN + IPV4_LEN + UDP_LEN + 2)?;
    // SAFETY: `h` is from this frame, `flags` checked by ptr_at (byte 2 of the DNS header).
    unsafe {
        swap_ends(h);
        (*h.2).csum = [0, 0];
        *flags |= 0x80;
    }
    Some(xdp_action::XDP_TX)
}

/// Bytes [`reflect_grow`] adds.
const GROW: usize = RECORD.len();

/// The ceiling plus one record's frame growth (see the module comment).
#[inline(always)]
pub fn reflect_grow(ctx: &XdpContext) -> Option<u32> {
    let (_, _, udp) = udp4_to_53(ctx)?;
    // SAFETY: udp4_to_53 checked the header lies inside the frame.
    let udp_len = usize::from(be16(unsafe { (*udp).len }));
    if !(UDP_LEN + 12..=UDP_LEN + MAX_XDP_QUERY).contains(&udp_len) {
        return None;
    }
    // Only frames that end where the UDP payload ends (no Ethernet padding).
    let len = ETH_LEN + IPV4_LEN + udp_len;
    if ctx.data() + len != ctx.data_end() {
        return None;
    }
    // Bounds the verifier can use for the offsets below (it drops a packet range once the
    // variable part may exceed 64 KiB).
    let len = crate::packet::opaque(len) & 0x3FF;
    if len < ETH_LEN + IPV4_LEN + UDP_LEN + 12 {
        return None;
    }
    // SAFETY: plain helper on our context; on failure the frame is unchanged.
    #[expect(clippy::cast_possible_wrap, reason = "16")]
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(GROW as i32)) } != 0 {
        return None;
    }
    // The frame has changed: from here a failure (none is expected) can only drop it.
    Some(grown_reply(ctx, len).map_or(xdp_action::XDP_DROP, |()| xdp_action::XDP_TX))
}

/// Turns the frame, whose `len`-byte query starts [`GROW`] bytes in, into the reply.
#[inline(always)]
fn grown_reply(ctx: &XdpContext, len: usize) -> Option<()> {
    // Move the query to the front, eight bytes at a time (each write lands on bytes already
    // read), then the last partial word, ending where the query ends.
    let move_word = |at: usize| -> Option<()> {
        let p = frame_ptr(ctx, at, GROW + 8)?;
        // SAFETY: frame_ptr checked the GROW + 8 bytes from p lie inside the frame.
        unsafe {
            let w = ((p + GROW) as *const [u8; 8]).read_unaligned();
            (p as *mut [u8; 8]).write_unaligned(w);
        }
        Some(())
    };
    let mut at = 0;
    for _ in 0..(ETH_LEN + IPV4_LEN + UDP_LEN + MAX_XDP_QUERY) / 8 {
        if at + 8 > len {
            break;
        }
        move_word(at)?;
        at += 8;
    }
    if at < len {
        // Computed apart: folded into the access, the -8 would be a negative fixed offset.
        move_word(crate::packet::opaque(len - 8))?;
    }
    let rec = frame_ptr(ctx, len, GROW)?;
    // SAFETY: frame_ptr checked the record's bytes lie inside the frame.
    unsafe { (rec as *mut [u8; GROW]).write_unaligned(RECORD) };

    let h = udp4_to_53(ctx)?;
    let dns = ptr_at::<[u8; 12]>(ctx, ETH_LEN + IPV4_LEN + UDP_LEN)?;
    #[expect(clippy::cast_possible_truncation, reason = "below 600")]
    let grown = |b: [u8; 2]| (be16(b) + GROW as u16).to_be_bytes();
    // SAFETY: `h` is from the resized frame and ptr_at checked the DNS header; none overlap.
    unsafe {
        swap_ends(h);
        let (ip, udp, dns) = (&mut *h.1, &mut *h.2, &mut *dns);
        ip.tot_len = grown(ip.tot_len);
        ip.csum = [0, 0];
        let raw = &*core::ptr::from_ref(ip).cast::<[u8; IPV4_LEN]>();
        ip.csum = checksum::finish(checksum::sum_words(raw));
        udp.len = grown(udp.len);
        udp.csum = [0, 0];
        dns[2] |= 0x84;
        dns[6] = 0;
        dns[7] = 1;
    }
    Some(())
}
