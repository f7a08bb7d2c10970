//! The DNS wire code both executors run: the query validator and the hot-answer builder.
//!
//! The XDP program runs these on a per-CPU copy of the DNS payload ([`MsgBuf`]); the daemon runs
//! [`parse_query`] on every query it receives and [`write_hot_answer`] for every hot answer it
//! sends, so the two paths agree on what a query is ([`Query::hot`]) and produce the same bytes
//! for the same hot answer, the records' order included ([`answer_rotation`]).
//!
//! The code is written for the BPF verifier as much as for people: every loop has a constant
//! bound, every buffer index is masked to the buffer size, and values that leave a loop are
//! passed through [`Wire::launder`] so that the verifier sees one state, not one per iteration.

use crate::maps::{
    HotKey256, MAX_HOT_RECORDS, MSG_AREA, MSG_MASK, MSG_SLACK, NAME_CLASSES, name_class,
};

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Longest name in wire form (RFC 1035 §2.3.4), root label included.
pub const MAX_NAME_LEN: usize = 255;
/// Most labels a 255-octet name can hold, root included.
const MAX_LABELS: usize = 128;

/// RR type A.
pub const TYPE_A: u16 = 1;
/// RR type NS.
pub const TYPE_NS: u16 = 2;
/// RR type CNAME.
pub const TYPE_CNAME: u16 = 5;
/// RR type SOA.
pub const TYPE_SOA: u16 = 6;
/// RR type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// RR type OPT (RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// RR type TSIG (RFC 8945).
pub const TYPE_TSIG: u16 = 250;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// QCLASS CH (Chaos): identity queries.
pub const CLASS_CH: u16 = 3;

/// UDP payload size we advertise and the most we send over UDP (DNS flag day 2020).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// Smallest UDP payload every client accepts (RFC 1035, RFC 6891 §6.2.5).
pub const MIN_UDP_SIZE: usize = 512;
/// DO bit in the OPT TTL flags.
pub const EDNS_DO: u16 = 0x8000;
/// Size of an OPT record without options: root, type, class, TTL, RDLENGTH.
pub const OPT_RR_LEN: usize = 11;
/// Most options one response's OPT record carries ([`ResponseOpt`]).
pub const MAX_RESPONSE_OPTIONS: usize = 4;

/// EDNS option NSID (RFC 5001).
pub const OPTION_NSID: u16 = 3;
/// EDNS option Client Subnet (RFC 7871).
pub const OPTION_ECS: u16 = 8;
/// EDNS option COOKIE (RFC 7873).
pub const OPTION_COOKIE: u16 = 10;

/// An EDNS option of a response: its code and data (at most 65,535 − 4 bytes; ours are short:
/// an NSID of at most 128, a Client Subnet echo of at most 20, a cookie of at most 40).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdnsOption<'a> {
    /// Option code (`OPTION_*`).
    pub code: u16,
    /// Option data.
    pub data: &'a [u8],
}

/// The OPT record of a response (RFC 6891 §6.1.2): root owner, our UDP payload size as CLASS,
/// the upper eight bits of the extended RCODE, version 0, DO as the query had it, then the
/// options in the order given (at most [`MAX_RESPONSE_OPTIONS`]; any beyond are not written and
/// not counted), then the Client Subnet echo, if any (RFC 7871 §7.2.1: FAMILY, SOURCE
/// PREFIX-LENGTH and ADDRESS as the query had them, SCOPE the responder's). Both paths write every OPT they send with it: the hot builder (the XDP program
/// and the daemon) and the daemon's general encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseOpt<'a> {
    /// The response's RCODE, 12 bits (the low four go in the header).
    pub rcode: u16,
    /// Whether the query set DO.
    pub dnssec_ok: bool,
    /// Options to send.
    pub options: &'a [EdnsOption<'a>],
    /// The Client Subnet echo (with its SCOPE set), written last.
    pub ecs: Option<&'a Ecs>,
}

impl ResponseOpt<'_> {
    /// Bytes the record takes.
    #[inline(always)]
    #[must_use]
    pub fn wire_len(&self) -> usize {
        let mut n = OPT_RR_LEN;
        for o in self.options.iter().take(MAX_RESPONSE_OPTIONS) {
            n += 4 + o.data.len();
        }
        if let Some(e) = &self.ecs {
            n += e.echo_len();
        }
        n
    }

    /// Writes the record at `off`; returns the offset after it. `None` if `w` has no room.
    #[inline(always)]
    pub fn write<W: WireMut>(&self, w: &mut W, off: usize) -> Option<usize> {
        w.put_u8(off, 0)?;
        w.put_u16(off + 1, TYPE_OPT)?;
        w.put_u16(off + 3, EDNS_UDP_SIZE)?;
        w.put_u8(off + 5, (self.rcode >> 4) as u8)?;
        w.put_u8(off + 6, 0)?;
        w.put_u16(off + 7, u16::from(self.dnssec_ok) << 15)?;
        w.put_u16(off + 9, (self.wire_len() - OPT_RR_LEN) as u16)?;
        let mut at = off + OPT_RR_LEN;
        for o in self.options.iter().take(MAX_RESPONSE_OPTIONS) {
            w.put_u16(at, o.code)?;
            w.put_u16(at + 2, o.data.len() as u16)?;
            for (i, b) in o.data.iter().enumerate() {
                w.put_u8(at + 4 + i, *b)?;
            }
            at += 4 + o.data.len();
        }
        if let Some(e) = &self.ecs {
            let addr_len = e.address_len();
            w.put_u16(at, OPTION_ECS)?;
            w.put_u16(at + 2, (4 + addr_len) as u16)?;
            w.put_u16(at + 4, e.family)?;
            w.put_u8(at + 6, e.source_prefix)?;
            w.put_u8(at + 7, e.scope)?;
            // A fixed loop (one verifier state per byte, not per length).
            for i in 0..16 {
                if i < addr_len {
                    w.put_u8(at + 8 + i, e.address[i])?;
                }
            }
            at += e.echo_len();
        }
        Some(at)
    }
}
const _: () = assert!(EDNS_DO == 1 << 15);

/// Response codes we produce.
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;
    /// Not authorized (RFC 8945: TSIG with a key we do not hold).
    pub const NOTAUTH: u16 = 9;
    /// Bad EDNS version (extended rcode 16, RFC 6891).
    pub const BADVERS: u16 = 16;
}

/// Read access to a DNS message.
///
/// Implemented by [`MsgBuf`] (a masked, fixed-size buffer: the daemon's hot path and tests),
/// [`SliceWire`] (any received message in the daemon) and, in the XDP program, the packet itself
/// (every access bounds-checked against the frame). A read outside the message is `None`: the
/// validator turns it into [`QueryError::Truncated`].
pub trait Wire {
    /// Length of the message.
    fn len(&self) -> usize;

    /// Whether the message is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Byte at `i`, if `i < len()`.
    fn u8_at(&self, i: usize) -> Option<u8>;

    /// Big-endian u16 at `i`, if both bytes are inside the message.
    #[inline(always)]
    fn u16_at(&self, i: usize) -> Option<u16> {
        Some((u16::from(self.u8_at(i)?) << 8) | u16::from(self.u8_at(i + 1)?))
    }

    /// Eight bytes from `i`, little-endian. Bytes past the end of the message are unspecified
    /// (zero, or stale buffer contents): callers mask them off.
    fn u64_le_at(&self, i: usize) -> u64;

    /// Returns `v` unchanged. The XDP implementation round-trips it through memory the verifier
    /// cannot see into, so that states reached through different loop iterations become one.
    #[inline(always)]
    fn launder(&mut self, v: usize) -> usize {
        v
    }
}

/// Write access for building an answer in place. Writes may extend past [`Wire::len`] up to the
/// buffer's capacity; a write outside it is `None` (the XDP program then drops the frame).
pub trait WireMut: Wire {
    /// Writes a byte at `i`.
    fn put_u8(&mut self, i: usize, v: u8) -> Option<()>;
    /// Writes a big-endian u16 at `i`.
    fn put_u16(&mut self, i: usize, v: u16) -> Option<()>;
    /// Writes four bytes at `i`.
    fn put4(&mut self, i: usize, v: [u8; 4]) -> Option<()>;
    /// Writes a big-endian u32 at `i`.
    #[inline(always)]
    fn put_u32(&mut self, i: usize, v: u32) -> Option<()> {
        self.put4(i, v.to_be_bytes())
    }
}

/// A received message in a slice.
pub struct SliceWire<'a>(pub &'a [u8]);

impl Wire for SliceWire<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline]
    fn u8_at(&self, i: usize) -> Option<u8> {
        self.0.get(i).copied()
    }
    #[inline]
    fn u64_le_at(&self, i: usize) -> u64 {
        let mut w = [0u8; 8];
        for (k, b) in w.iter_mut().enumerate() {
            *b = self.u8_at(i + k).unwrap_or(0);
        }
        u64::from_le_bytes(w)
    }
}

/// Size of the buffer behind a [`MsgBuf`].
pub const MSG_BUF_LEN: usize = MSG_AREA + MSG_SLACK;

/// A message in a fixed buffer whose offsets are masked to [`MSG_AREA`], with [`MSG_SLACK`]
/// bytes after it so a masked offset can take a multi-byte access.
pub struct MsgBuf<'a> {
    buf: &'a mut [u8; MSG_BUF_LEN],
    len: usize,
    /// Opaque cell for [`Wire::launder`].
    cell: &'a mut u64,
}

impl<'a> MsgBuf<'a> {
    /// Wraps `buf`, of which the first `len` bytes (at most [`MSG_AREA`]) are the message; `cell`
    /// is scratch for [`Wire::launder`].
    #[inline(always)]
    pub fn new(buf: &'a mut [u8; MSG_BUF_LEN], len: usize, cell: &'a mut u64) -> Self {
        Self {
            buf,
            len: len & MSG_MASK,
            cell,
        }
    }

    /// The message bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Sets the message length (after building an answer).
    #[inline(always)]
    pub fn set_len(&mut self, len: usize) {
        self.len = len & MSG_MASK;
    }
}

impl Wire for MsgBuf<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }
    #[inline(always)]
    fn u8_at(&self, i: usize) -> Option<u8> {
        if i >= self.len {
            return None;
        }
        Some(self.buf[i & MSG_MASK])
    }
    #[inline(always)]
    fn u16_at(&self, i: usize) -> Option<u16> {
        // One check and one two-byte load (the trait's default makes two of each).
        if i + 2 > self.len {
            return None;
        }
        let j = i & MSG_MASK;
        Some(u16::from_be_bytes([self.buf[j], self.buf[j + 1]]))
    }
    #[inline(always)]
    fn u64_le_at(&self, i: usize) -> u64 {
        // No branch on the length here: in the XDP program's key loop a branch would double
        // the verifier's states per word. Callers mask what lies past what they read.
        let j = i & MSG_MASK;
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.buf[j..j + 8]);
        u64::from_le_bytes(w)
    }
    #[inline(always)]
    fn launder(&mut self, v: usize) -> usize {
        // SAFETY: `cell` is a valid, exclusive u64; volatile keeps the compiler from forwarding
        // the stored value, so it really is reloaded.
        unsafe {
            core::ptr::write_volatile(self.cell, v as u64);
            core::ptr::read_volatile(self.cell) as usize
        }
    }
}

impl WireMut for MsgBuf<'_> {
    #[inline(always)]
    fn put_u8(&mut self, off: usize, v: u8) -> Option<()> {
        self.buf[off & MSG_MASK] = v;
        Some(())
    }
    #[inline(always)]
    fn put_u16(&mut self, off: usize, v: u16) -> Option<()> {
        let i = off & MSG_MASK;
        self.buf[i..i + 2].copy_from_slice(&v.to_be_bytes());
        Some(())
    }
    #[inline(always)]
    fn put4(&mut self, off: usize, v: [u8; 4]) -> Option<()> {
        let i = off & MSG_MASK;
        self.buf[i..i + 4].copy_from_slice(&v);
        Some(())
    }
}

/// How far the validator walks. The XDP program stops early and passes the rest up; the daemon
/// walks everything.
pub trait Limits {
    /// Most additional records examined.
    const MAX_ADDITIONAL: usize;
    /// Most EDNS options examined.
    const MAX_OPTIONS: usize;
    /// Whether owner names in the additional section are walked (compression allowed). Without
    /// it an OPT owner must be the root byte and anything else fails with
    /// [`QueryError::OtherAdditional`] (the XDP program passes such queries up).
    const WALK_NAMES: bool;
    /// Whether COOKIE and NSID are recorded in [`Edns`]. Without it they are only checked, and
    /// an NSID option stops the walk with [`QueryError::NsidRequest`]: the XDP program leaves
    /// those queries to the daemon, and recording would multiply the verifier's states with
    /// every option.
    const RECORD_OPTIONS: bool;
    /// Whether a Client Subnet option is recorded in [`Edns::ecs`] (both paths answer it);
    /// without it the option stops the walk with [`QueryError::ClientSubnet`].
    const RECORD_ECS: bool;
    /// Whether the option is validated once, after the walk, from where the walk saw it (the
    /// XDP program: validating inside the walk multiplies the verifier's states by the options
    /// before and after it). A second Client Subnet option then stops the walk with
    /// [`QueryError::ClientSubnet`] (the daemon validates each one and keeps the last).
    const DEFER_ECS: bool;
    /// Whether additional records other than OPT (TSIG, stray records) are accepted and
    /// reported in [`Query::tsig`], instead of failing with [`QueryError::OtherAdditional`].
    const OTHER_ADDITIONAL: bool;
}

/// The XDP program's limits: one OPT record with a few options; anything else is passed up.
pub struct XdpLimits;
impl Limits for XdpLimits {
    const MAX_ADDITIONAL: usize = 1;
    const MAX_OPTIONS: usize = 8;
    const WALK_NAMES: bool = false;
    const RECORD_OPTIONS: bool = false;
    const RECORD_ECS: bool = false;
    const DEFER_ECS: bool = false;
    const OTHER_ADDITIONAL: bool = false;
}

/// The XDP program's Client Subnet stage (`dnsfast_ecs`, reached by a tail call from the main
/// program when a query carries the option): as [`XdpLimits`], with the option recorded.
pub struct XdpEcsLimits;
impl Limits for XdpEcsLimits {
    const MAX_ADDITIONAL: usize = 1;
    const MAX_OPTIONS: usize = 8;
    const WALK_NAMES: bool = false;
    const RECORD_OPTIONS: bool = false;
    const RECORD_ECS: bool = true;
    const DEFER_ECS: bool = true;
    const OTHER_ADDITIONAL: bool = false;
}

/// The daemon's limits: as many as a 64 KiB message can hold.
pub struct FullLimits;
impl Limits for FullLimits {
    const MAX_ADDITIONAL: usize = 65_535;
    const MAX_OPTIONS: usize = 16_384;
    const WALK_NAMES: bool = true;
    const RECORD_OPTIONS: bool = true;
    const RECORD_ECS: bool = true;
    const DEFER_ECS: bool = false;
    const OTHER_ADDITIONAL: bool = true;
}

/// Why a message is not a query we can answer as-is. [`QueryError::rcode`] says what the daemon
/// answers; the XDP program drops the first two and passes everything else up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Shorter than a DNS header: nothing to answer with.
    ShortHeader,
    /// QR=1: a response, never answered (it would make us a reflector).
    Response,
    /// Opcode other than QUERY.
    Opcode,
    /// QDCOUNT = 0.
    NoQuestion,
    /// QDCOUNT > 1.
    QuestionCount,
    /// ANCOUNT or NSCOUNT non-zero: a query carries no answer or authority records.
    Sections,
    /// A label type other than a plain label (0x40 or 0x80 in the length byte).
    LabelType,
    /// A compression pointer in the QNAME: it can only point into the header or loop.
    Pointer,
    /// QNAME longer than 255 octets.
    NameTooLong,
    /// The message ends inside the question or an additional record.
    Truncated,
    /// More additional records than the limits allow (the XDP program's limit is one).
    TooManyAdditional,
    /// An additional record other than OPT (TSIG, SIG(0), stray data): the XDP program passes
    /// it up; the daemon's limits accept it and report it in [`Query::tsig`].
    OtherAdditional,
    /// Two OPT records.
    DuplicateOpt,
    /// An OPT record whose owner is not the root.
    OptOwner,
    /// An EDNS option runs past the end of the OPT RDATA.
    OptionOverrun,
    /// More EDNS options than the limits allow.
    TooManyOptions,
    /// A malformed Client Subnet option (RFC 7871 §7.1.2).
    BadEcs,
    /// A Client Subnet option, under limits that leave those queries to the daemon.
    ClientSubnet,
    /// An NSID request, under limits that leave those queries to the daemon (it adds the
    /// configured identifier).
    NsidRequest,
    /// A malformed COOKIE option (RFC 7873 §5.2.2).
    BadCookie,
    /// EDNS version other than 0.
    BadVersion,
    /// Bytes after the last record.
    TrailingData,
}

impl QueryError {
    /// The rcode the daemon answers with, or `None` for no answer at all.
    #[must_use]
    pub const fn rcode(self) -> Option<u16> {
        match self {
            Self::ShortHeader | Self::Response => None,
            Self::Opcode => Some(rcode::NOTIMP),
            Self::BadVersion => Some(rcode::BADVERS),
            _ => Some(rcode::FORMERR),
        }
    }

    /// Whether the XDP program drops the packet instead of passing it up.
    #[must_use]
    pub const fn is_drop(self) -> bool {
        matches!(self, Self::ShortHeader | Self::Response)
    }
}

/// A validated Client Subnet option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecs {
    /// 1 = IPv4, 2 = IPv6.
    pub family: u16,
    /// Source prefix length.
    pub source_prefix: u8,
    /// SCOPE PREFIX-LENGTH: 0 in a query (validated); the responder sets the answer's.
    pub scope: u8,
    /// Address bytes, zero past the prefix.
    pub address: [u8; 16],
}

impl Ecs {
    /// Bytes of ADDRESS on the wire: the prefix's, rounded up to whole bytes.
    #[inline(always)]
    #[must_use]
    pub const fn address_len(&self) -> usize {
        (self.source_prefix as usize).div_ceil(8) & 31
    }

    /// Bytes the echo takes in an OPT record: code, length, FAMILY, the two prefix lengths,
    /// ADDRESS.
    #[inline(always)]
    #[must_use]
    pub const fn echo_len(&self) -> usize {
        8 + self.address_len()
    }
}

/// The EDNS part of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size, as sent.
    pub udp_size: u16,
    /// EDNS version (only 0 gets past the validator).
    pub version: u8,
    /// The 16 flag bits of the OPT TTL (DO is [`EDNS_DO`]).
    pub flags: u16,
    /// Client Subnet, if present and valid.
    pub ecs: Option<Ecs>,
    /// Whether a COOKIE option was present.
    pub cookie: bool,
    /// Whether the client asked for NSID.
    pub nsid: bool,
}

impl Edns {
    /// Whether the DO bit is set.
    #[must_use]
    pub const fn dnssec_ok(&self) -> bool {
        self.flags & EDNS_DO != 0
    }
}

/// A validated query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    /// Message ID.
    pub id: u16,
    /// Header flags as sent (bytes 2..4).
    pub flags: u16,
    /// Length of the QNAME in wire form, root label included.
    pub name_len: usize,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Offset just past the question.
    pub question_end: usize,
    /// The OPT record, if any.
    pub edns: Option<Edns>,
    /// Whether the additional section holds a TSIG record (only with [`FullLimits`]).
    pub tsig: bool,
}

/// Why [`Query::hot`] said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotHot {
    /// Not class IN, not A or AAAA, or signed.
    Shape,
}

/// Header flag RD.
pub const FLAG_RD: u16 = 0x0100;
/// Header flag CD.
pub const FLAG_CD: u16 = 0x0010;
/// Header flag QR.
pub const FLAG_QR: u16 = 0x8000;
/// Header flag AA.
pub const FLAG_AA: u16 = 0x0400;
/// Header flag TC.
pub const FLAG_TC: u16 = 0x0200;

impl Query {
    /// Whether the client set RD.
    #[must_use]
    pub const fn recursion_desired(&self) -> bool {
        self.flags & FLAG_RD != 0
    }

    /// Whether the client set CD.
    #[must_use]
    pub const fn checking_disabled(&self) -> bool {
        self.flags & FLAG_CD != 0
    }

    /// Whether the hot builder answers this query, the one decision both paths take: class IN,
    /// type A or AAAA, no TSIG (we hold no keys). A Client Subnet option is echoed (with the
    /// SCOPE the caller sets in [`Edns::ecs`], or dropped by it when ECS is not honoured). What else keeps a query from the XDP program (NSID asked,
    /// options beyond [`XdpLimits`], a message over [`crate::maps::MAX_XDP_QUERY`]) only sends
    /// it to the daemon, which answers it with the same builder and bytes.
    #[inline(always)]
    pub fn hot(&self) -> Result<(), NotHot> {
        if self.qclass != CLASS_IN || (self.qtype != TYPE_A && self.qtype != TYPE_AAAA) || self.tsig
        {
            return Err(NotHot::Shape);
        }
        Ok(())
    }

    /// The query as the hot builder needs it: only the fields it reads, each passed through
    /// `launder` (the XDP program's verifier aid: the paths the validator took through the
    /// options collapse into one state per type and EDNS presence).
    #[inline(always)]
    #[must_use]
    pub fn hot_form(&self, mut launder: impl FnMut(usize) -> usize) -> Self {
        Self {
            id: 0,
            flags: (launder(usize::from(self.flags)) as u16) & (FLAG_RD | FLAG_CD),
            name_len: launder(self.name_len) & 0xFF,
            qtype: self.qtype,
            qclass: CLASS_IN,
            question_end: launder(self.question_end) & 0x1FF,
            edns: self.edns.map(|e| Edns {
                udp_size: launder(usize::from(e.udp_size)) as u16,
                version: 0,
                flags: (launder(usize::from(e.flags)) as u16) & EDNS_DO,
                // The caller passes the echo to the builder on its own ([`plan_hot_answer`]).
                ecs: None,
                cookie: false,
                nsid: false,
            }),
            tsig: false,
        }
    }

    /// The most bytes an answer over UDP may have: 512 without EDNS, else the client's size
    /// (at least 512) capped at [`EDNS_UDP_SIZE`].
    #[must_use]
    pub const fn udp_limit(&self) -> usize {
        match self.edns {
            None => MIN_UDP_SIZE,
            Some(e) => {
                let s = e.udp_size as usize;
                if s < MIN_UDP_SIZE {
                    MIN_UDP_SIZE
                } else if s > EDNS_UDP_SIZE as usize {
                    EDNS_UDP_SIZE as usize
                } else {
                    s
                }
            }
        }
    }
}

/// Validates a query: header, exactly one question, and the additional section (OPT and its
/// options). Runs in the XDP program with [`XdpLimits`] and in the daemon with [`FullLimits`].
/// Always inlined: as a BPF function it would return its result through the caller's stack,
/// which the verifier refuses.
#[inline(always)]
pub fn parse_query<L: Limits, W: Wire>(msg: &mut W) -> Result<Query, QueryError> {
    let len = msg.len();
    // The header is fixed size; anything shorter carries no ID to answer with.
    if len < HEADER_LEN {
        return Err(QueryError::ShortHeader);
    }
    let id = msg.u16_at(0).ok_or(QueryError::ShortHeader)?;
    let flags = msg.u16_at(2).ok_or(QueryError::ShortHeader)?;
    if flags & FLAG_QR != 0 {
        return Err(QueryError::Response);
    }
    if (flags >> 11) & 0xF != 0 {
        return Err(QueryError::Opcode);
    }
    let questions = msg.u16_at(4).ok_or(QueryError::ShortHeader)?;
    let answers = msg.u16_at(6).ok_or(QueryError::ShortHeader)?;
    let authorities = msg.u16_at(8).ok_or(QueryError::ShortHeader)?;
    let additionals = msg.u16_at(10).ok_or(QueryError::ShortHeader)? as usize;
    if questions == 0 {
        return Err(QueryError::NoQuestion);
    }
    if questions > 1 {
        return Err(QueryError::QuestionCount);
    }
    if answers != 0 || authorities != 0 {
        return Err(QueryError::Sections);
    }

    let name_len = qname_len(msg, len)?;
    // One verifier state from here on, whichever iteration the name walk ended in.
    let name_len = msg.launder(name_len);
    if name_len == 0 || name_len > MAX_NAME_LEN {
        return Err(QueryError::NameTooLong);
    }
    let mut off = HEADER_LEN + name_len;
    if off + 4 > len {
        return Err(QueryError::Truncated);
    }
    let qtype = msg.u16_at(off).ok_or(QueryError::Truncated)?;
    let qclass = msg.u16_at(off + 2).ok_or(QueryError::Truncated)?;
    off += 4;
    let question_end = off;

    let mut edns = None;
    let mut tsig = false;
    if additionals > L::MAX_ADDITIONAL {
        return Err(QueryError::TooManyAdditional);
    }
    for i in 0..L::MAX_ADDITIONAL {
        if i >= additionals {
            break;
        }
        off = additional_record::<L, W>(msg, off, &mut edns, &mut tsig)?;
        off = msg.launder(off);
        if off > len {
            return Err(QueryError::Truncated);
        }
    }
    if off != len {
        return Err(QueryError::TrailingData);
    }
    if let Some(e) = edns
        && e.version != 0
    {
        return Err(QueryError::BadVersion);
    }
    Ok(Query {
        id,
        flags,
        name_len,
        qtype,
        qclass,
        question_end,
        edns,
        tsig,
    })
}

/// Length of the QNAME starting at the header's end: one bounded loop over the labels.
#[inline(always)]
fn qname_len<W: Wire>(msg: &W, len: usize) -> Result<usize, QueryError> {
    let mut off = HEADER_LEN;
    for _ in 0..MAX_LABELS {
        if off >= len {
            return Err(QueryError::Truncated);
        }
        let b = msg.u8_at(off).ok_or(QueryError::Truncated)? as usize;
        match b & 0xC0 {
            0 => {}
            0xC0 => return Err(QueryError::Pointer),
            _ => return Err(QueryError::LabelType),
        }
        off += 1;
        if b == 0 {
            return Ok(off - HEADER_LEN);
        }
        off += b;
        // The root label still has to fit.
        if off - HEADER_LEN >= MAX_NAME_LEN {
            return Err(QueryError::NameTooLong);
        }
    }
    Err(QueryError::NameTooLong)
}

/// Skips a name in the additional section (compression allowed there); returns the offset after
/// it and whether it was the root.
#[inline(always)]
fn skip_name<W: Wire>(msg: &W, mut off: usize, len: usize) -> Result<(usize, bool), QueryError> {
    let start = off;
    for _ in 0..MAX_LABELS {
        if off >= len {
            return Err(QueryError::Truncated);
        }
        let b = msg.u8_at(off).ok_or(QueryError::Truncated)? as usize;
        match b & 0xC0 {
            0 => {}
            // A pointer ends the name; where it points does not matter for skipping.
            0xC0 => return Ok((off + 2, false)),
            _ => return Err(QueryError::LabelType),
        }
        off += 1 + b;
        if b == 0 {
            return Ok((off, off == start + 1));
        }
        if off - start > MAX_NAME_LEN {
            return Err(QueryError::NameTooLong);
        }
    }
    Err(QueryError::NameTooLong)
}

/// Validates one additional record at `off`, recording an OPT in `edns`; returns the offset after
/// the record.
#[inline(always)]
fn additional_record<L: Limits, W: Wire>(
    msg: &mut W,
    off: usize,
    edns: &mut Option<Edns>,
    tsig: &mut bool,
) -> Result<usize, QueryError> {
    let len = msg.len();
    let (off, root) = if L::WALK_NAMES {
        skip_name(msg, off, len)?
    } else if msg.u8_at(off) == Some(0) {
        (off + 1, true)
    } else {
        return Err(QueryError::OtherAdditional);
    };
    let off = msg.launder(off);
    if off + 10 > len {
        return Err(QueryError::Truncated);
    }
    let field = |i: usize| msg.u16_at(off + i).ok_or(QueryError::Truncated);
    let rrtype = field(0)?;
    let class = field(2)?;
    let ttl_hi = field(4)?;
    let ttl_lo = field(6)?;
    let rdlen = field(8)? as usize;
    let rdata = off + 10;
    let end = rdata + rdlen;
    if end > len {
        return Err(QueryError::Truncated);
    }
    if rrtype != TYPE_OPT {
        if !L::OTHER_ADDITIONAL {
            return Err(QueryError::OtherAdditional);
        }
        *tsig |= rrtype == TYPE_TSIG;
        return Ok(end);
    }
    if edns.is_some() {
        return Err(QueryError::DuplicateOpt);
    }
    if !root {
        return Err(QueryError::OptOwner);
    }
    let mut e = Edns {
        udp_size: class,
        version: (ttl_hi & 0xFF) as u8,
        flags: ttl_lo,
        ecs: None,
        cookie: false,
        nsid: false,
    };
    // Options of another EDNS version have another syntax: answer BADVERS without reading them.
    if e.version == 0 {
        options::<L, W>(msg, rdata, end, &mut e)?;
    }
    *edns = Some(e);
    Ok(end)
}

/// Walks the EDNS options in `off..end`.
#[inline(always)]
fn options<L: Limits, W: Wire>(
    msg: &mut W,
    off: usize,
    end: usize,
    e: &mut Edns,
) -> Result<(), QueryError> {
    // Where the walk saw the Client Subnet option (data offset, length; 0: none), under
    // `L::DEFER_ECS`: opaque to the verifier, so every walk ends in one state.
    let mut deferred = (0, 0);
    walk_options::<L, W>(msg, off, end, e, &mut deferred)?;
    if L::DEFER_ECS && deferred.0 != 0 {
        e.ecs = Some(ecs(msg, deferred.0, deferred.1)?);
    }
    Ok(())
}

#[inline(always)]
fn walk_options<L: Limits, W: Wire>(
    msg: &mut W,
    mut off: usize,
    end: usize,
    e: &mut Edns,
    deferred: &mut (usize, usize),
) -> Result<(), QueryError> {
    for _ in 0..L::MAX_OPTIONS {
        if off == end {
            return Ok(());
        }
        if off + 4 > end {
            return Err(QueryError::OptionOverrun);
        }
        let code = msg.u16_at(off).ok_or(QueryError::OptionOverrun)?;
        let olen = msg.u16_at(off + 2).ok_or(QueryError::OptionOverrun)? as usize;
        let data = off + 4;
        if data + olen > end {
            return Err(QueryError::OptionOverrun);
        }
        match code {
            OPTION_ECS if !L::RECORD_ECS => return Err(QueryError::ClientSubnet),
            OPTION_ECS if L::DEFER_ECS => {
                if deferred.0 != 0 {
                    return Err(QueryError::ClientSubnet);
                }
                *deferred = (msg.launder(data), msg.launder(olen));
            }
            OPTION_ECS => e.ecs = Some(ecs(msg, data, olen)?),
            OPTION_COOKIE => {
                // A client cookie alone is 8 bytes; with a server cookie 16 to 40.
                if olen != 8 && !(16..=40).contains(&olen) {
                    return Err(QueryError::BadCookie);
                }
                if L::RECORD_OPTIONS {
                    e.cookie = true;
                }
            }
            // RFC 5001: the request carries an empty NSID option; ignore a non-empty one.
            OPTION_NSID if !L::RECORD_OPTIONS => return Err(QueryError::NsidRequest),
            OPTION_NSID => e.nsid = true,
            // Unknown options are ignored (RFC 6891 §6.1.2) and never echoed.
            _ => {}
        }
        off = msg.launder(data + olen);
    }
    if off == end {
        Ok(())
    } else {
        Err(QueryError::TooManyOptions)
    }
}

/// Validates a Client Subnet option per RFC 7871 §6 and §7.1.2.
#[inline(always)]
fn ecs<W: Wire>(msg: &mut W, data: usize, olen: usize) -> Result<Ecs, QueryError> {
    if olen < 4 {
        return Err(QueryError::BadEcs);
    }
    let family = msg.u16_at(data).ok_or(QueryError::BadEcs)?;
    let source = msg.u8_at(data + 2).ok_or(QueryError::BadEcs)?;
    let scope = msg.u8_at(data + 3).ok_or(QueryError::BadEcs)?;
    let max_prefix = match family {
        1 => 32,
        2 => 128,
        _ => return Err(QueryError::BadEcs),
    };
    // SCOPE PREFIX-LENGTH must be 0 in queries.
    if source > max_prefix || scope != 0 {
        return Err(QueryError::BadEcs);
    }
    let addr_len = (source as usize).div_ceil(8);
    // ADDRESS must be exactly as long as the prefix needs, no more.
    if olen - 4 != addr_len {
        return Err(QueryError::BadEcs);
    }
    // Read the address as two words (no byte loop: one verifier state), keeping only the
    // prefix's bytes, then check that no bit past the prefix is set.
    let hi = msg.u64_le_at(data + 4);
    let lo = msg.u64_le_at(data + 12);
    let (hi_bytes, lo_bytes) = if addr_len > 8 {
        (8, addr_len - 8)
    } else {
        (addr_len, 0)
    };
    let hi = hi & low_bytes_mask(hi_bytes);
    let lo = lo & low_bytes_mask(lo_bytes);
    let mut address = [0u8; 16];
    address[..8].copy_from_slice(&hi.to_le_bytes());
    address[8..].copy_from_slice(&lo.to_le_bytes());
    let tail_bits = (addr_len * 8) - source as usize;
    if addr_len > 0 && tail_bits > 0 {
        let last = address[(addr_len - 1) & 15];
        if last & ((1u8 << tail_bits) - 1) != 0 {
            return Err(QueryError::BadEcs);
        }
    }
    // The values as such, whichever way the checks went (in XDP, one verifier state for every
    // valid option: what follows is verified once, not once per family and length).
    let hi = launder_u64(msg, hi);
    let lo = launder_u64(msg, lo);
    address[..8].copy_from_slice(&hi.to_le_bytes());
    address[8..].copy_from_slice(&lo.to_le_bytes());
    Ok(Ecs {
        family: (msg.launder(usize::from(family)) & 3) as u16,
        source_prefix: (msg.launder(usize::from(source)) & 0xFF) as u8,
        scope: 0,
        address,
    })
}

/// `v` through [`Wire::launder`] where a `usize` holds it (the BPF target, 64-bit hosts);
/// unchanged elsewhere.
#[inline(always)]
fn launder_u64<W: Wire>(msg: &mut W, v: u64) -> u64 {
    if usize::BITS >= 64 {
        msg.launder(v as usize) as u64
    } else {
        v
    }
}

/// Mask keeping the first `n` bytes (all eight for `n >= 8`) of a little-endian word.
#[inline(always)]
#[must_use]
pub const fn low_bytes_mask(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    }
}

/// ASCII-lowercases the eight bytes of `w` at once (only `A`–`Z` change, exactly like
/// [`u8::to_ascii_lowercase`]). Label length bytes are at most 63, below `A`, so a whole wire name
/// can go through this word by word.
#[inline(always)]
#[must_use]
pub const fn ascii_lower_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HIGH;
    // Adding to the low seven bits never carries into the next byte (max 0x7F + 0x3F).
    let at_least_a = low7 + ONES * (0x80 - b'A' as u64);
    let above_z = low7 + ONES * (0x80 - b'Z' as u64 - 1);
    let upper = at_least_a & !above_z & !w & HIGH;
    w | (upper >> 2)
}

/// Builds the lookup key for the QNAME at offset 12 of `msg` into `key`: lowercased, zero-padded
/// to its size class. Returns the class index (see [`NAME_CLASSES`]).
#[inline(always)]
pub fn build_key<W: Wire>(
    msg: &mut W,
    name_len: usize,
    qtype: u16,
    region: u16,
    key: &mut HotKey256,
) -> usize {
    let class = name_class(name_len);
    let words = NAME_CLASSES[class & 3] / 8;
    key.qtype = qtype;
    key.region = region;
    for w in 0..NAME_CLASSES[3] / 8 {
        if w >= words {
            break;
        }
        // Compared afresh in each word: otherwise every comparison narrows what the verifier
        // knows of the length, and each narrowing is a state of its own for the rest of the
        // program.
        let len = msg.launder(name_len) & 0xFF;
        let base = w * 8;
        let word = if base >= len {
            0
        } else {
            let lower = ascii_lower_word(msg.u64_le_at(HEADER_LEN + base));
            lower & low_bytes_mask(len - base)
        };
        key.name[base..base + 8].copy_from_slice(&word.to_le_bytes());
    }
    class
}

/// Read access to a compiled hot answer (an `ANSWERS_*` slot).
pub trait AnswerData {
    /// Bytes of address data the slot can hold.
    const RDATA_CAPACITY: usize;
    /// TTL of the RRset.
    fn ttl(&self) -> u32;
    /// A or AAAA.
    fn rrtype(&self) -> u16;
    /// Number of records.
    fn count(&self) -> usize;
    /// Four address bytes at `offset` (a multiple of 4 below the capacity).
    fn rdata4(&self, offset: usize) -> [u8; 4];
}

/// Why a hot answer cannot be built. The XDP program passes the query up; the daemon answers it
/// on its general path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The slot is not a valid A/AAAA answer (never written, or torn: should not happen).
    BadSlot,
    /// The answer exceeds the size limit (the client's UDP size).
    TooBig,
}

/// Size of one answer record with a compressed owner: pointer, type, class, TTL, RDLENGTH, RDATA.
#[inline(always)]
const fn record_len(rdlen: usize) -> usize {
    2 + 2 + 2 + 4 + 2 + rdlen
}

/// The shape of a hot answer, decided before any byte of it is written (the XDP program resizes
/// the frame in between).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotPlan {
    /// Answer length.
    pub total: usize,
    /// End of the question (where the records start).
    pub question_end: usize,
    /// End of the records (where the OPT goes, if any).
    pub records_end: usize,
    /// Number of records.
    pub count: usize,
    /// RDATA length of each record (4 or 16).
    pub rdlen: usize,
}

/// Checks that `answer` can answer `q` within `limit` bytes and plans its layout. The `w` is
/// only used to launder values for the verifier.
#[inline(always)]
pub fn plan_hot_answer<A: AnswerData, W: Wire>(
    w: &mut W,
    q: &Query,
    answer: &A,
    options: &[EdnsOption<'_>],
    ecs: Option<&Ecs>,
    limit: usize,
) -> Result<HotPlan, BuildError> {
    let rrtype = answer.rrtype();
    let rdlen = match rrtype {
        TYPE_A => 4,
        TYPE_AAAA => 16,
        _ => return Err(BuildError::BadSlot),
    };
    if rrtype != q.qtype {
        return Err(BuildError::BadSlot);
    }
    let count = answer.count();
    if count == 0 || count > MAX_HOT_RECORDS || count * rdlen > A::RDATA_CAPACITY {
        return Err(BuildError::BadSlot);
    }
    let opt = match q.edns {
        Some(e) => hot_opt(&e, options, ecs).wire_len(),
        None => 0,
    };
    let total = q.question_end + count * record_len(rdlen) + opt;
    if total > limit || total > MSG_AREA {
        return Err(BuildError::TooBig);
    }
    // One verifier state whatever the name length, count and limit were: the record loop is
    // then verified once per iteration, not once per combination.
    let question_end = w.launder(q.question_end);
    let count = w.launder(count);
    if question_end > HEADER_LEN + MAX_NAME_LEN + 4 || count == 0 || count > MAX_HOT_RECORDS {
        return Err(BuildError::BadSlot);
    }
    let records_end = question_end + count * record_len(rdlen);
    Ok(HotPlan {
        total: records_end + opt,
        question_end,
        records_end,
        count,
        rdlen,
    })
}

/// Key of [`answer_rotation`]: fixed, so that every dnsfast (XDP or not, restarted or not)
/// orders the answer to one query alike, which tests and operators can reproduce. Knowing it
/// lets a client pick the order it gets, which it can do by reordering the answer anyway.
const ORDER_KEY: u64 = 0x6473_6661_7374_2d6f;

/// Where a hot answer's records start (`rotation % count`): a pure function of the query's ID
/// and the client's UDP (or TCP) source port, the same in the XDP program and in the daemon.
/// Resolvers randomise both, so over many queries every record leads equally often; the same
/// query asked again gets the same bytes. (splitmix64's finaliser: two multiplies.)
#[inline(always)]
#[must_use]
pub const fn answer_rotation(id: u16, client_port: u16) -> u32 {
    let mut x = ((id as u64) << 16 | client_port as u64) ^ ORDER_KEY;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as u32
}

/// Writes the hot answer planned by [`plan_hot_answer`] over the query in `w`: header flags and
/// counts rewritten (the ID and the question are left as they are: byte for byte, 0x20 case
/// kept), `answer`'s records compressed to the question name starting at record
/// `rotation % count`, and, if the query had an OPT record, ours ([`ResponseOpt`]) with
/// `options` (the same ones [`plan_hot_answer`] planned for). `None` only if `w` is too small
/// (not with a [`MsgBuf`]).
#[inline(always)]
pub fn write_hot_answer<A: AnswerData, W: WireMut>(
    w: &mut W,
    q: &Query,
    answer: &A,
    plan: &HotPlan,
    options: &[EdnsOption<'_>],
    ecs: Option<&Ecs>,
    rotation: u32,
) -> Option<()> {
    let rrtype = answer.rrtype();
    let rdlen = plan.rdlen;
    let rec = record_len(rdlen);
    // Header: QR, AA, RD and CD copied, opcode 0 (validated), everything else 0, NOERROR.
    let flags = FLAG_QR | FLAG_AA | (q.flags & (FLAG_RD | FLAG_CD));
    w.put_u16(2, flags)?;
    w.put_u16(4, 1)?;
    w.put_u16(6, plan.count as u16)?;
    w.put_u16(8, 0)?;
    w.put_u16(10, u16::from(q.edns.is_some()))?;

    let ttl = answer.ttl();
    let count = plan.count;
    if count == 0 || count > MAX_HOT_RECORDS {
        return None;
    }
    let first = rotation as usize % count;
    for i in 0..MAX_HOT_RECORDS {
        if i >= count {
            break;
        }
        // (first + i) mod count without a division per record, and without a branch (which
        // would double the verifier's states on every iteration): first + i < 2 * count, so
        // subtract count and add it back when that went below zero (the sign bit as a mask).
        let d = (first + i).wrapping_sub(count);
        let j = d.wrapping_add(count & 0usize.wrapping_sub(d >> (usize::BITS - 1)));
        let off = plan.question_end + i * rec;
        w.put_u16(off, 0xC000 | HEADER_LEN as u16)?;
        w.put_u16(off + 2, rrtype)?;
        w.put_u16(off + 4, CLASS_IN)?;
        w.put_u32(off + 6, ttl)?;
        w.put_u16(off + 10, rdlen as u16)?;
        let src = j * rdlen;
        w.put4(off + 12, answer.rdata4(src))?;
        if rdlen == 16 {
            w.put4(off + 16, answer.rdata4(src + 4))?;
            w.put4(off + 20, answer.rdata4(src + 8))?;
            w.put4(off + 24, answer.rdata4(src + 12))?;
        }
    }

    if let Some(e) = q.edns {
        hot_opt(&e, options, ecs).write(w, plan.records_end)?;
    }
    Some(())
}

/// The OPT record of a hot answer (NOERROR) to a query with EDNS `e`.
#[inline(always)]
fn hot_opt<'a>(e: &Edns, options: &'a [EdnsOption<'a>], ecs: Option<&'a Ecs>) -> ResponseOpt<'a> {
    ResponseOpt {
        rcode: rcode::NOERROR,
        dnssec_ok: e.flags & EDNS_DO != 0,
        options,
        ecs,
    }
}

/// Plans and writes the hot answer in `msg` (the daemon's path); returns its length.
#[inline(always)]
pub fn build_hot_answer<A: AnswerData>(
    msg: &mut MsgBuf<'_>,
    q: &Query,
    answer: &A,
    options: &[EdnsOption<'_>],
    ecs: Option<&Ecs>,
    rotation: u32,
    limit: usize,
) -> Result<usize, BuildError> {
    let plan = plan_hot_answer(msg, q, answer, options, ecs, limit)?;
    write_hot_answer(msg, q, answer, &plan, options, ecs, rotation).ok_or(BuildError::TooBig)?;
    msg.set_len(plan.total);
    Ok(plan.total)
}

#[cfg(test)]
mod tests;
