//! The userspace server: UDP and TCP sockets, and [`handle`], which answers one query from the
//! current [`Snapshot`] — hot queries with the same builder the XDP program uses, everything
//! else through the answer engine. TCP connections are [`crate::tcp`]'s.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use arc_swap::ArcSwap;
use dnsfast_common::{
    maps::{AnswerLarge, MSG_AREA, REGION_ANY},
    wire::{
        AnswerData, CLASS_CH, Ecs, EdnsOption, FullLimits, HEADER_LEN, MSG_BUF_LEN, MsgBuf,
        OPTION_NSID, Query, SliceWire, TYPE_A, TYPE_AAAA, answer_rotation, build_hot_answer,
        parse_query, rcode,
    },
};
use hickory_proto::{
    rr::{DNSClass, Name, RData, Record, RecordType, rdata},
    serialize::binary::{BinDecodable as _, BinDecoder},
};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    answer,
    compile::Snapshot,
    hot::{addresses, lookup_key},
    response,
    steering::Compiled,
};

/// Largest DNS message over TCP.
const TCP_MAX: usize = 65_535;

/// Userspace counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Queries received over UDP.
    pub udp_queries: AtomicU64,
    /// Queries received over TCP.
    pub tcp_queries: AtomicU64,
    /// Answered by the hot builder.
    pub hot_answers: AtomicU64,
    /// Steered answers.
    pub steered_answers: AtomicU64,
    /// Answers by RCODE (0..=15; BADVERS counted at 16).
    pub rcodes: [AtomicU64; 17],
    /// Answers that did not fit and went out with TC=1.
    pub truncated: AtomicU64,
    /// Messages given no answer (too short, or responses).
    pub dropped: AtomicU64,
}

/// A copy of [`Stats`] for reporting.
#[derive(Debug, Serialize, serde::Deserialize, Default, Clone, PartialEq, Eq)]
pub struct StatsView {
    /// Queries received over UDP.
    pub udp_queries: u64,
    /// Queries received over TCP.
    pub tcp_queries: u64,
    /// Answered by the hot builder.
    pub hot_answers: u64,
    /// Steered answers.
    #[serde(default)]
    pub steered_answers: u64,
    /// NOERROR answers.
    pub noerror: u64,
    /// NXDOMAIN answers.
    pub nxdomain: u64,
    /// REFUSED answers.
    pub refused: u64,
    /// FORMERR answers.
    pub formerr: u64,
    /// NOTIMP answers.
    pub notimp: u64,
    /// SERVFAIL answers.
    pub servfail: u64,
    /// BADVERS answers.
    pub badvers: u64,
    /// TC=1 answers.
    pub truncated: u64,
    /// Messages given no answer.
    pub dropped: u64,
}

impl Stats {
    /// A snapshot of the counters.
    #[must_use]
    pub fn view(&self) -> StatsView {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsView {
            udp_queries: g(&self.udp_queries),
            tcp_queries: g(&self.tcp_queries),
            hot_answers: g(&self.hot_answers),
            steered_answers: g(&self.steered_answers),
            noerror: g(&self.rcodes[0]),
            nxdomain: g(&self.rcodes[3]),
            refused: g(&self.rcodes[5]),
            formerr: g(&self.rcodes[1]),
            notimp: g(&self.rcodes[4]),
            servfail: g(&self.rcodes[2]),
            badvers: g(&self.rcodes[16]),
            truncated: g(&self.truncated),
            dropped: g(&self.dropped),
        }
    }

    fn count_answer(&self, msg: &[u8]) {
        if msg.len() < HEADER_LEN {
            return;
        }
        let rc = usize::from(msg[3] & 0x0F);
        // An extended RCODE rides in the OPT record; BADVERS is the only one we send.
        let rc = if rc == 0 && msg[11] == 1 && is_badvers(msg) {
            16
        } else {
            rc
        };
        self.rcodes[rc].fetch_add(1, Ordering::Relaxed);
        if msg[2] & 0x02 != 0 {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether the response ends with an OPT record carrying extended RCODE 1 (BADVERS).
fn is_badvers(msg: &[u8]) -> bool {
    msg.len() >= 11
        && msg[msg.len() - 11] == 0
        && msg[msg.len() - 10..msg.len() - 8] == [0, 41]
        && msg[msg.len() - 6] == 1
}

/// State every worker shares.
#[derive(Debug)]
pub struct Shared {
    /// The compiled configuration being served.
    pub snapshot: ArcSwap<Snapshot>,
    /// Counters.
    pub stats: Stats,
}

impl Shared {
    /// Serves `snapshot`.
    #[must_use]
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            stats: Stats::default(),
        }
    }
}

/// Answers one message received over UDP (`tcp == false`) or TCP from `client` (its address
/// places it in a steering region; its port, as in XDP, orders a hot answer's records).
/// `None`: send nothing.
pub fn handle(shared: &Shared, msg: &[u8], tcp: bool, client: SocketAddr) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    handle_into(shared, msg, tcp, client, &mut out).then_some(out)
}

/// Like [`handle`], writing the answer into `out` (cleared by the caller); `false`: send nothing.
pub fn handle_into(
    shared: &Shared,
    msg: &[u8],
    tcp: bool,
    client: SocketAddr,
    out: &mut Vec<u8>,
) -> bool {
    let answered = answer_message(shared, msg, tcp, client, out);
    if answered {
        shared.stats.count_answer(out);
    } else {
        shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
    answered
}

fn answer_message(
    shared: &Shared,
    msg: &[u8],
    tcp: bool,
    client: SocketAddr,
    out: &mut Vec<u8>,
) -> bool {
    let mut q = match parse_query::<FullLimits, _>(&mut SliceWire(msg)) {
        Ok(q) => q,
        Err(e) => return emit(response::reject(msg, e), out),
    };
    let limit = if tcp { TCP_MAX } else { q.udp_limit() };
    let snap = shared.snapshot.load();
    // A Client Subnet option we do not honour is ignored, and not echoed.
    if let Some(e) = q.edns.as_mut()
        && e.ecs.is_some()
        && !snap.ecs.honours(client.ip())
    {
        e.ecs = None;
    }
    let ecs = q.edns.and_then(|e| e.ecs);
    // The configured NSID, when the query asked for it.
    let nsid = snap
        .identity
        .nsid
        .as_deref()
        .filter(|_| q.edns.is_some_and(|e| e.nsid));

    let option = nsid.map(|data| EdnsOption {
        code: OPTION_NSID,
        data,
    });
    let options = option.as_slice();

    // The fast paths, which look the name up by the key XDP builds (type, region, lowercased
    // QNAME): steered names (placed by their honoured Client Subnet, else the client's
    // address), then hot ones, with the validator verdict, the decision and the builder of the
    // XDP program (which passes NSID requests up, as it does not hold the identifier: here the
    // builder carries it). A Client Subnet is echoed with SCOPE 0 unless a steered answer set
    // it.
    // A steered name's NODATA: its negative TTL is the service's TTL at most.
    let mut negative_cap = None;
    if q.hot().is_ok() {
        // The hot builder works in a buffer of the XDP program's size: a longer query (padded,
        // or over TCP) gets the same answer from the general encoder.
        let fits = msg.len() <= MSG_AREA;
        let mut key_buf = [0u8; 4 + 255];
        let key = query_key(&mut key_buf, msg, &q);
        let steered = snap.steering.service(&key[4..]).map(|svc| {
            let (answer, scope) =
                snap.steering
                    .answer_for(svc, q.qtype, client, ecs.as_ref(), q.id);
            (answer, scope, svc.ttl)
        });
        if let Some((_, scope, _)) = steered {
            // A steered name's answer depends on the region, its NODATA too.
            q = with_scope(q, scope);
        }
        if let Some((None, _, ttl)) = steered {
            negative_cap = Some(ttl);
        }
        if let Some((Some(answer), _, _)) = steered {
            // The draw's order is the answer's: no rotation.
            if fits && hot_reply(msg, &q, &answer, options, 0, limit, out) {
                shared.stats.steered_answers.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            // Too big for the client's UDP size (a long name, NSID), or a long query: the
            // general encoder (which truncates).
            let Some(qname) = decode_qname(msg) else {
                return false;
            };
            let ans = steered_records(&qname, &answer);
            let sent = emit(response::encode(&q, &qname, &ans, limit, nsid), out);
            if sent {
                shared.stats.steered_answers.fetch_add(1, Ordering::Relaxed);
            }
            return sent;
        }
        // (A steered name without an address of this family has no hot key either: the
        // zone's node answers NODATA below.)
        // (A hot name's records are the zone's: a long query finds them there.)
        let rotation = answer_rotation(q.id, client.port());
        if fits
            && let Some(ans) = snap.hot.get(key)
            && hot_reply(msg, &q, ans.as_ref(), options, rotation, limit, out)
        {
            shared.stats.hot_answers.fetch_add(1, Ordering::Relaxed);
            return true;
        }
    }

    let Some(qname) = decode_qname(msg) else {
        return false;
    };
    let ans = if q.tsig {
        // We hold no TSIG keys (RFC 8945 §5.2: an unknown key gets NOTAUTH).
        answer::Answer::error(rcode::NOTAUTH)
    } else if let Some(rc) = answer::unserved_qtype(RecordType::from(q.qtype), tcp) {
        answer::Answer::error(rc)
    } else if q.qclass == CLASS_CH {
        answer::chaos(&snap.identity, &qname, RecordType::from(q.qtype))
    } else {
        let mut ans = answer::resolve(
            &snap.zones,
            &qname,
            RecordType::from(q.qtype),
            DNSClass::from(q.qclass),
        );
        // A steered NODATA the fast path placed has its cap already: not placed twice.
        if negative_cap.is_none()
            && let Some((scope, cap)) = steered_tail(
                &snap.steering,
                &mut ans,
                &qname,
                q.qtype,
                client,
                ecs.as_ref(),
                q.id,
            )
        {
            q = with_scope(q, scope);
            negative_cap = cap;
        } else {
            hot_order(&snap.hot, &mut ans, msg, &q, client.port());
        }
        if let Some(ttl) = negative_cap {
            cap_negative_ttl(&mut ans, ttl);
        }
        ans
    };
    emit(response::encode(&q, &qname, &ans, limit, nsid), out)
}

/// A steered name's NODATA: its SOA's TTL (the negative TTL, RFC 2308 §5) no longer than the
/// service's `ttl`, as health and the region decide it.
fn cap_negative_ttl(ans: &mut answer::Answer, ttl: u32) {
    for r in &mut ans.authority {
        if r.record_type() == RecordType::SOA && r.ttl > ttl {
            r.ttl = ttl;
        }
    }
}

/// `q` with the SCOPE its Client Subnet echo carries set to `scope`.
fn with_scope(mut q: Query, scope: u8) -> Query {
    if let Some(e) = q.edns.as_mut()
        && let Some(x) = e.ecs.as_mut()
    {
        x.scope = scope;
    }
    q
}

/// Writes the hot builder's answer to `msg` (validated as `q`) from `answer` into `out`;
/// `false` if it does not fit `limit` (nothing written).
fn hot_reply(
    msg: &[u8],
    q: &Query,
    answer: &impl AnswerData,
    options: &[EdnsOption<'_>],
    rotation: u32,
    limit: usize,
    out: &mut Vec<u8>,
) -> bool {
    let mut buf = [0u8; MSG_BUF_LEN];
    buf[..msg.len()].copy_from_slice(msg);
    let mut cell = 0;
    let mut m = MsgBuf::new(&mut buf, msg.len(), &mut cell);
    let ecs = q.edns.and_then(|e| e.ecs);
    match build_hot_answer(&mut m, q, answer, options, ecs.as_ref(), rotation, limit) {
        Ok(n) => {
            out.extend_from_slice(&m.as_bytes()[..n]);
            true
        }
        Err(_) => false,
    }
}

/// A steered answer as records of `owner`, for the general encoder.
fn steered_records(owner: &Name, a: &AnswerLarge) -> answer::Answer {
    let per = if a.rrtype == TYPE_A { 4 } else { 16 };
    let answer = addresses(a.rrtype, &a.rdata[..per * usize::from(a.count)])
        .map(|ip| {
            let rd = match ip {
                IpAddr::V4(v4) => RData::A(rdata::A(v4)),
                IpAddr::V6(v6) => RData::AAAA(rdata::AAAA(v6)),
            };
            Record::from_rdata(owner.clone(), a.ttl, rd)
        })
        .collect();
    answer::Answer {
        rcode: rcode::NOERROR,
        aa: true,
        answer,
        ..answer::Answer::default()
    }
}

/// A steered name's answer where the zone alone answers NODATA (it holds no addresses there):
/// at the end of a CNAME chain (A or AAAA), or asked directly on the general path (QCLASS ANY,
/// a query the hot builder's buffer cannot take), or QTYPE ANY at a steered name with no other
/// data, which gets the client's region's A records (AAAA if it has none; RFC 8482 §4.1: one
/// RRset answers ANY). The records for the client's region replace the NODATA; returns the
/// SCOPE of the decision when there was one, and the cap of the negative TTL when it is still a
/// NODATA.
fn steered_tail(
    steering: &Compiled,
    ans: &mut answer::Answer,
    qname: &Name,
    qtype: u16,
    client: SocketAddr,
    ecs: Option<&Ecs>,
    id: u16,
) -> Option<(u8, Option<u32>)> {
    if steering.is_empty() || ans.rcode != rcode::NOERROR {
        return None;
    }
    let address = qtype == TYPE_A || qtype == TYPE_AAAA;
    let owner = match ans.answer.last().map(|r| &r.data) {
        Some(RData::CNAME(target)) if address => target.0.clone(),
        None if address || qtype == u16::from(RecordType::ANY) => qname.clone(),
        _ => return None,
    };
    let svc = steering.service(&crate::steering::wire_lower(&owner))?;
    let (a, scope) = if address {
        steering.answer_for(svc, qtype, client, ecs, id)
    } else {
        match steering.answer_for(svc, TYPE_A, client, ecs, id) {
            (None, _) => steering.answer_for(svc, TYPE_AAAA, client, ecs, id),
            found => found,
        }
    };
    let Some(a) = a else {
        // No address of this family in the client's region: NODATA, which depends on the
        // region (and its negative TTL is the service's at most).
        return Some((scope, Some(svc.ttl)));
    };
    let records = steered_records(&owner, &a);
    ans.answer.extend(records.answer);
    // The negative answer's SOA goes: the chain now ends in data.
    ans.authority.clear();
    Some((scope, None))
}

/// A hot name's A or AAAA records answered by the general encoder (a query too long for the
/// hot builder's buffer, an answer too big for the client's size, QCLASS ANY) in the order the
/// hot builder would give the same query: from record `answer_rotation % count`.
fn hot_order(
    hot: &crate::hot::HotTable,
    ans: &mut answer::Answer,
    msg: &[u8],
    q: &Query,
    port: u16,
) {
    let n = ans.answer.len();
    if (q.qtype != TYPE_A && q.qtype != TYPE_AAAA)
        || ans.rcode != rcode::NOERROR
        || n < 2
        || ans
            .answer
            .iter()
            .any(|r| u16::from(r.record_type()) != q.qtype)
    {
        return;
    }
    let mut key_buf = [0u8; 4 + 255];
    if hot
        .get(query_key(&mut key_buf, msg, q))
        .is_some_and(|h| h.as_ref().count() == n)
    {
        ans.answer
            .rotate_left(answer_rotation(q.id, port) as usize % n);
    }
}

/// The hot-table key of the validated query `msg` (`q`): its type, no region, its QNAME
/// lowercased, as the XDP program builds it.
fn query_key<'b>(buf: &'b mut [u8; 4 + 255], msg: &[u8], q: &Query) -> &'b [u8] {
    lookup_key(
        buf,
        &msg[HEADER_LEN..HEADER_LEN + q.name_len],
        q.qtype,
        REGION_ANY,
    )
}

fn emit(answer: Option<Vec<u8>>, out: &mut Vec<u8>) -> bool {
    match answer {
        Some(a) => {
            out.extend_from_slice(&a);
            true
        }
        None => false,
    }
}

/// The QNAME of a validated query (plain labels at offset 12).
fn decode_qname(msg: &[u8]) -> Option<Name> {
    let mut d = BinDecoder::new(msg);
    d.read_slice(HEADER_LEN).ok()?;
    Name::read(&mut d).ok()
}

/// A UDP socket on `addr` with `SO_REUSEPORT` (one per worker) and, for IPv6, `IPV6_V6ONLY`
/// (so `[::]` and `0.0.0.0` can both be bound).
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Bursts of queries should queue, not drop, while a worker is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A TCP listener on `addr`.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}
