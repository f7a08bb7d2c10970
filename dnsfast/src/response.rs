//! Encodes answers of the general path: header bits as an authoritative server sets them, the
//! question as asked, records compressed, our OPT, and truncation that never splits an RRset.

use dnsfast_common::wire::{
    EDNS_DO, EDNS_UDP_SIZE, FLAG_AA, FLAG_CD, FLAG_QR, FLAG_RD, FLAG_TC, HEADER_LEN, OPT_RR_LEN,
    Query, QueryError, SliceWire, TYPE_OPT, Wire,
};
use hickory_proto::{
    rr::{Name, Record},
    serialize::binary::{BinEncodable, BinEncoder},
};

use crate::answer::Answer;

/// Writes our OPT record: root owner, our UDP size, extended RCODE, version 0, DO copied, no
/// options (the same bytes `wire::write_hot_answer` appends).
fn push_opt(out: &mut Vec<u8>, rcode: u16, dnssec_ok: bool) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    out.push((rcode >> 4) as u8);
    out.push(0);
    out.extend_from_slice(&(if dnssec_ok { EDNS_DO } else { 0 }).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
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
        push_opt(&mut buf, ans.rcode, e.dnssec_ok());
    }
    Some(buf)
}

/// Encodes `ans` to the query `q` (whose QNAME is `qname`), in at most `limit` bytes: additional
/// records are dropped first (no TC), then, if the answer still does not fit, everything but the
/// question and OPT goes and TC is set.
#[must_use]
pub fn encode(q: &Query, qname: &Name, ans: &Answer, limit: usize) -> Option<Vec<u8>> {
    let full = encode_sections(
        q,
        qname,
        ans,
        [&ans.answer, &ans.authority, &ans.additional],
        false,
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
        )?;
        if m.len() <= limit {
            return Some(m);
        }
    }
    encode_sections(q, qname, ans, [&[], &[], &[]], true)
}

/// The answer to a message the validator rejected, or `None` when it gets none (too short to
/// answer, or a response).
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
    if err == QueryError::BadVersion {
        // BADVERS: the question as asked and an OPT of version 0 carrying the extended RCODE.
        let end = question_end(msg)?;
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
        out.extend_from_slice(&msg[HEADER_LEN..end]);
        push_opt(&mut out, rcode, false);
        return Some(out);
    }
    out.extend_from_slice(&[0; 8]);
    debug_assert_eq!(out.len(), HEADER_LEN);
    Some(out)
}

/// End of the (single, uncompressed) question of `msg`.
fn question_end(msg: &[u8]) -> Option<usize> {
    let mut off = HEADER_LEN;
    loop {
        let l = usize::from(*msg.get(off)?);
        if l & 0xC0 != 0 {
            return None;
        }
        off += 1 + l;
        if l == 0 {
            break;
        }
    }
    (off + 4 <= msg.len()).then_some(off + 4)
}

/// Size of our OPT record, for callers budgeting space.
pub const OPT_LEN: usize = OPT_RR_LEN;
