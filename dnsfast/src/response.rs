//! Encodes answers of the general path: header bits as an authoritative server sets them, the
//! question as asked, records compressed, our OPT, and truncation that never splits an RRset.

use dnsfast_common::wire::{
    EDNS_DO, Ecs, EdnsOption, FLAG_AA, FLAG_CD, FLAG_QR, FLAG_RD, FLAG_TC, HEADER_LEN, OPT_RR_LEN,
    OPTION_NSID, Query, QueryError, ResponseOpt, SliceWire, TYPE_OPT, Wire, WireMut,
};
use hickory_proto::{
    rr::{Name, Record},
    serialize::binary::{BinEncodable, BinEncoder},
};

use crate::answer::Answer;

/// A message being built in a `Vec`, which grows to take every write.
struct Grow<'a>(&'a mut Vec<u8>);

impl Grow<'_> {
    fn at(&mut self, i: usize, n: usize) -> &mut [u8] {
        if self.0.len() < i + n {
            self.0.resize(i + n, 0);
        }
        &mut self.0[i..i + n]
    }
}

impl Wire for Grow<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn u8_at(&self, i: usize) -> Option<u8> {
        self.0.get(i).copied()
    }
    fn u64_le_at(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        for (d, s) in b.iter_mut().zip(self.0.iter().skip(i)) {
            *d = *s;
        }
        u64::from_le_bytes(b)
    }
}

impl WireMut for Grow<'_> {
    fn put_u8(&mut self, i: usize, v: u8) -> Option<()> {
        self.at(i, 1)[0] = v;
        Some(())
    }
    fn put_u16(&mut self, i: usize, v: u16) -> Option<()> {
        self.at(i, 2).copy_from_slice(&v.to_be_bytes());
        Some(())
    }
    fn put4(&mut self, i: usize, v: [u8; 4]) -> Option<()> {
        self.at(i, 4).copy_from_slice(&v);
        Some(())
    }
}

/// Appends our OPT record (`wire::ResponseOpt`, the writer the hot builder uses too) with the
/// NSID option and the Client Subnet echo if given.
fn push_opt(
    out: &mut Vec<u8>,
    rcode: u16,
    dnssec_ok: bool,
    nsid: Option<&[u8]>,
    ecs: Option<&Ecs>,
) {
    let option;
    let options: &[EdnsOption<'_>] = match nsid {
        Some(data) => {
            option = [EdnsOption {
                code: OPTION_NSID,
                data,
            }];
            &option
        }
        None => &[],
    };
    let at = out.len();
    let opt = ResponseOpt {
        rcode,
        dnssec_ok,
        options,
        ecs,
    };
    // A growing buffer always has room.
    let _ = opt.write(&mut Grow(out), at);
}

/// Response flags for query flags `qflags`: QR, RD and CD copied, AA/TC as given, opcode 0.
fn flags(qflags: u16, aa: bool, tc: bool, rcode: u16) -> u16 {
    let mut f = FLAG_QR | (qflags & (FLAG_RD | FLAG_CD)) | (rcode & 0xF);
    if aa {
        f |= FLAG_AA;
    }
    if tc {
        f |= FLAG_TC;
    }
    f
}

fn encode_sections(
    q: &Query,
    qname: &Name,
    ans: &Answer,
    sections: [&[Record]; 3],
    tc: bool,
    nsid: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    {
        let mut enc = BinEncoder::new(&mut buf);
        enc.emit_u16(q.id).ok()?;
        enc.emit_u16(flags(q.flags, ans.aa, tc, ans.rcode)).ok()?;
        enc.emit_u16(1).ok()?;
        enc.emit_u16(sections[0].len() as u16).ok()?;
        enc.emit_u16(sections[1].len() as u16).ok()?;
        enc.emit_u16((sections[2].len() + usize::from(q.edns.is_some())) as u16)
            .ok()?;
        // The question name through the encoder (not as raw bytes) so later names compress
        // against it; hickory keeps the case, so the bytes are the client's.
        qname.emit(&mut enc).ok()?;
        enc.emit_u16(q.qtype).ok()?;
        enc.emit_u16(q.qclass).ok()?;
        for section in sections {
            for r in section {
                r.emit(&mut enc).ok()?;
            }
        }
    }
    if let Some(e) = q.edns {
        // Answers from our data echo Client Subnet (RFC 7871 §7.2.1); error answers do not.
        let ecs = e.ecs.as_ref().filter(|_| {
            !matches!(
                ans.rcode,
                dnsfast_common::wire::rcode::FORMERR
                    | dnsfast_common::wire::rcode::SERVFAIL
                    | dnsfast_common::wire::rcode::NOTIMP
                    | dnsfast_common::wire::rcode::REFUSED
                    | dnsfast_common::wire::rcode::NOTAUTH
                    | dnsfast_common::wire::rcode::BADVERS
            )
        });
        push_opt(
            &mut buf,
            ans.rcode,
            e.dnssec_ok(),
            nsid.filter(|_| e.nsid),
            ecs,
        );
    }
    Some(buf)
}

/// Encodes `ans` to the query `q` (whose QNAME is `qname`), in at most `limit` bytes: additional
/// records are dropped first (no TC), then, if the answer still does not fit, everything but the
/// question and OPT goes and TC is set. `nsid` (the configured identifier) goes into the OPT
/// record when the query asked for it.
#[must_use]
pub fn encode(
    q: &Query,
    qname: &Name,
    ans: &Answer,
    limit: usize,
    nsid: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let full = encode_sections(
        q,
        qname,
        ans,
        [&ans.answer, &ans.authority, &ans.additional],
        false,
        nsid,
    )?;
    if full.len() <= limit {
        return Some(full);
    }
    // Optional records go first, as many as needed, from the end.
    for keep in (0..ans.additional.len()).rev() {
        let m = encode_sections(
            q,
            qname,
            ans,
            [&ans.answer, &ans.authority, &ans.additional[..keep]],
            false,
            nsid,
        )?;
        if m.len() <= limit {
            return Some(m);
        }
    }
    encode_sections(q, qname, ans, [&[], &[], &[]], true, nsid)
}

/// The answer to a message the validator rejected, or `None` when it gets none (too short to
/// answer, or a response). As Knot does, the question is echoed when it could be read (QDCOUNT 1,
/// plain labels, complete), and a query with no question but one well-formed OPT record (a
/// cookie-only query, which we do not serve) gets an OPT back.
#[must_use]
pub fn reject(msg: &[u8], err: QueryError) -> Option<Vec<u8>> {
    let rcode = err.rcode()?;
    let w = SliceWire(msg);
    let id = w.u16_at(0)?;
    let qflags = w.u16_at(2)?;
    // Keep the opcode of what we refuse.
    let f = flags(qflags, false, false, rcode) | (qflags & 0x7800);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&f.to_be_bytes());
    let question = (w.u16_at(4)? == 1)
        .then(|| question_end(msg))
        .flatten()
        .map(|end| &msg[HEADER_LEN..end]);
    let opt = match err {
        // BADVERS: an OPT of version 0 carries the extended RCODE.
        QueryError::BadVersion => Some(false),
        QueryError::NoQuestion => lone_opt(msg),
        _ => None,
    };
    out.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
    if let Some(dnssec_ok) = opt {
        push_opt(&mut out, rcode, dnssec_ok, None, None);
    }
    Some(out)
}

/// For a message without a question whose only record is one well-formed OPT: whether it set
/// DO.
fn lone_opt(msg: &[u8]) -> Option<bool> {
    let w = SliceWire(msg);
    if (w.u16_at(6)?, w.u16_at(8)?, w.u16_at(10)?) != (0, 0, 1) {
        return None;
    }
    let at = HEADER_LEN;
    let rdlen = usize::from(w.u16_at(at + 9)?);
    let ok = w.u8_at(at)? == 0 && w.u16_at(at + 1)? == TYPE_OPT && at + 11 + rdlen == msg.len();
    ok.then(|| w.u16_at(at + 7).is_some_and(|f| f & EDNS_DO != 0))
}

/// End of the single question of `msg` if it is plain labels, at most 255 octets, complete.
fn question_end(msg: &[u8]) -> Option<usize> {
    let mut off = HEADER_LEN;
    loop {
        let l = usize::from(*msg.get(off)?);
        if l & 0xC0 != 0 {
            return None;
        }
        off += 1 + l;
        if off - HEADER_LEN > 255 {
            return None;
        }
        if l == 0 {
            break;
        }
    }
    (off + 4 <= msg.len()).then_some(off + 4)
}

/// Size of our OPT record, for callers budgeting space.
pub const OPT_LEN: usize = OPT_RR_LEN;
