//! DNS clients with deadlines, query builders, and a normal form of answers for comparing two
//! servers (or two paths of one): rcode, flags, question bytes, OPT, and each section's RRsets as
//! sets with their TTLs.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{DNSClass, Name, Record, RecordType},
    serialize::binary::BinEncodable,
};

/// A query for `name`/`qtype` (class IN) with ID `id`, RD set; with `edns = Some((size, do))`
/// an OPT record.
#[must_use]
pub fn query(id: u16, name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
    query_class(id, name, qtype, DNSClass::IN, edns)
}

/// Like [`query`] with a class.
#[must_use]
pub fn query_class(
    id: u16,
    name: &str,
    qtype: RecordType,
    class: DNSClass,
    edns: Option<(u16, bool)>,
) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let mut q = Query::query(Name::from_ascii(name).expect("valid test name"), qtype);
    q.set_query_class(class);
    m.add_query(q);
    if let Some((size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("encodable query")
}

/// Sends `msg` from `socket` to `server` and waits up to `timeout` for the reply with the same
/// ID (a late reply to an earlier query is skipped).
pub fn udp_exchange_on(
    socket: &UdpSocket,
    server: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    socket.send_to(msg, server)?;
    socket.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 65_535];
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (n, from) = socket
            .recv_from(&mut buf)
            .with_context(|| format!("no reply from {server} within {timeout:?}"))?;
        if from == server && n >= 2 && buf[..2] == msg[..2] {
            return Ok(buf[..n].to_vec());
        }
        if std::time::Instant::now() > deadline {
            bail!("no matching reply from {server} within {timeout:?}");
        }
    }
}

/// One UDP exchange from a fresh socket.
pub fn udp_exchange(server: SocketAddr, msg: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let s = UdpSocket::bind(bind)?;
    udp_exchange_on(&s, server, msg, timeout)
}

/// Sends `msgs` over one TCP connection (pipelined: all written first) and reads as many answers.
pub fn tcp_exchange(
    server: SocketAddr,
    msgs: &[Vec<u8>],
    timeout: Duration,
) -> Result<Vec<Vec<u8>>> {
    let mut s = TcpStream::connect_timeout(&server, timeout)
        .with_context(|| format!("connect {server}"))?;
    s.set_read_timeout(Some(timeout))?;
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&(m.len() as u16).to_be_bytes());
        out.extend_from_slice(m);
    }
    s.write_all(&out)?;
    let mut replies = Vec::new();
    for _ in msgs {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).context("read length")?;
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut r).context("read answer")?;
        replies.push(r);
    }
    Ok(replies)
}

/// An RRset in normal form: TTLs seen and the data of each record, wire-encoded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RRset {
    /// TTLs of the records (one value when they agree).
    pub ttls: BTreeSet<u32>,
    /// Record data, wire form, as a set (order does not matter).
    pub rdata: BTreeSet<Vec<u8>>,
}

/// A section in normal form: (lowercased owner, type) → RRset.
pub type Section = BTreeMap<(String, RecordType), RRset>;

/// An answer in normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normal {
    /// Header bytes 2..4: QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE.
    pub flags: u16,
    /// The question section, byte for byte.
    pub question: Vec<u8>,
    /// The OPT record as hickory reads it.
    pub edns: Option<Edns>,
    /// Answer section.
    pub answer: Section,
    /// Authority section.
    pub authority: Section,
    /// Additional section (without OPT).
    pub additional: Section,
}

fn section(records: &[Record]) -> Result<Section> {
    let mut s = Section::new();
    for r in records {
        let key = (r.name.to_ascii().to_ascii_lowercase(), r.record_type());
        let e = s.entry(key).or_insert_with(|| RRset {
            ttls: BTreeSet::new(),
            rdata: BTreeSet::new(),
        });
        e.ttls.insert(r.ttl);
        e.rdata.insert(r.data.to_bytes()?);
    }
    Ok(s)
}

/// The normal form of a DNS answer.
pub fn normalize(msg: &[u8]) -> Result<Normal> {
    let m = Message::from_vec(msg).context("parse answer")?;
    if msg.len() < 12 {
        bail!("short answer");
    }
    let mut qend = 12;
    if u16::from_be_bytes([msg[4], msg[5]]) > 0 {
        while msg[qend] != 0 {
            qend += 1 + usize::from(msg[qend]);
        }
        qend += 5;
    }
    Ok(Normal {
        flags: u16::from_be_bytes([msg[2], msg[3]]),
        question: msg[12..qend].to_vec(),
        edns: m.edns.clone(),
        answer: section(&m.answers)?,
        authority: section(&m.authorities)?,
        additional: section(&m.additionals)?,
    })
}

/// RCODE (with the extended bits from OPT).
pub fn rcode(msg: &[u8]) -> Result<u16> {
    let m = Message::from_vec(msg).context("parse answer")?;
    let high = m.edns.as_ref().map_or(0, |e| u16::from(e.rcode_high()));
    Ok((high << 4) | u16::from(msg[3] & 0x0F))
}
