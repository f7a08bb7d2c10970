//! DNS clients with deadlines, query builders, and a normal form of answers for comparing two
//! servers (or two paths of one): rcode, flags, question bytes, OPT, and each section's RRsets as
//! sets with their TTLs.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{DNSClass, Name, RData, RecordType},
};

/// A query for `name`/`qtype` (class IN) with ID `id`, RD set; with `edns = Some((size, do))`
/// an OPT record.
#[must_use]
pub fn query(id: u16, name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
    query_class(id, name, qtype, DNSClass::IN, edns)
}

/// A Client Subnet option (RFC 7871 §6) as it goes on the wire: code, length, FAMILY, SOURCE
/// and SCOPE PREFIX-LENGTH, ADDRESS as given (tests make malformed ones too).
#[must_use]
pub fn ecs_option(family: u16, source: u8, scope: u8, address: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 8];
    o.extend_from_slice(&(4 + address.len() as u16).to_be_bytes());
    o.extend_from_slice(&family.to_be_bytes());
    o.extend_from_slice(&[source, scope]);
    o.extend_from_slice(address);
    o
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

/// An RRset in normal form: class, TTLs seen and the data of each record with names expanded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RRset {
    /// Class of the records.
    pub class: u16,
    /// TTLs of the records (one value when they agree).
    pub ttls: BTreeSet<u32>,
    /// Record data as a set (order does not matter): wire form, with the domain names inside
    /// NS, CNAME, PTR, MX, SRV and SOA data decompressed and lowercased, so that two servers that
    /// compress differently compare equal.
    pub rdata: BTreeSet<Vec<u8>>,
}

/// A section in normal form: (lowercased owner, type) → RRset.
pub type Section = BTreeMap<(String, RecordType), RRset>;

/// The OPT record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// Advertised UDP payload size.
    pub udp_size: u16,
    /// Upper 8 bits of the extended RCODE.
    pub ext_rcode: u8,
    /// EDNS version.
    pub version: u8,
    /// DO bit.
    pub dnssec_ok: bool,
    /// The other 15 flag bits.
    pub flags: u16,
    /// Options, in order: (code, data).
    pub options: Vec<(u16, Vec<u8>)>,
}

/// An answer in normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normal {
    /// Header bytes 2..4: QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE.
    pub flags: u16,
    /// The question section, byte for byte.
    pub question: Vec<u8>,
    /// The OPT record.
    pub edns: Option<Opt>,
    /// Answer section.
    pub answer: Section,
    /// Authority section.
    pub authority: Section,
    /// Additional section (without OPT).
    pub additional: Section,
}

/// Reads the (possibly compressed) name at `off`: (lowercased wire form, offset after it).
fn read_name(msg: &[u8], mut off: usize) -> Result<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let l = *msg.get(off).context("name runs past the end")?;
        match l & 0xC0 {
            0 if l == 0 => {
                out.push(0);
                return Ok((out, end.unwrap_or(off + 1)));
            }
            0 => {
                let label = msg
                    .get(off + 1..off + 1 + usize::from(l))
                    .context("label runs past the end")?;
                out.push(l);
                out.extend(label.iter().map(u8::to_ascii_lowercase));
                off += 1 + usize::from(l);
            }
            0xC0 => {
                let p = usize::from(
                    u16::from_be_bytes([l, *msg.get(off + 1).context("pointer")?]) & 0x3FFF,
                );
                end.get_or_insert(off + 2);
                off = p;
            }
            _ => bail!("label type {l:#x}"),
        }
    }
    bail!("name with too many labels or a pointer loop")
}

/// `name` (wire form) in presentation form, for keys.
fn presentation(name: &[u8]) -> String {
    if name == [0] {
        return ".".into();
    }
    let mut s = String::new();
    let mut i = 0;
    while name[i] != 0 {
        let l = usize::from(name[i]);
        for &b in &name[i + 1..=i + l] {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                s.push(char::from(b));
            } else {
                let _ = write!(s, "\\{b:03}");
            }
        }
        s.push('.');
        i += 1 + l;
    }
    s
}

/// Record data with embedded names expanded (see [`RRset::rdata`]).
fn canonical_rdata(msg: &[u8], rtype: u16, start: usize, end: usize) -> Result<Vec<u8>> {
    let raw = &msg[start..end];
    let (fixed_before, names, fixed_after): (usize, usize, usize) = match rtype {
        2 | 5 | 12 => (0, 1, 0), // NS, CNAME, PTR
        15 => (2, 1, 0),         // MX
        33 => (6, 1, 0),         // SRV
        6 => (0, 2, 20),         // SOA
        _ => return Ok(raw.to_vec()),
    };
    let mut out = raw.get(..fixed_before).context("short rdata")?.to_vec();
    let mut off = start + fixed_before;
    for _ in 0..names {
        let (n, next) = read_name(msg, off)?;
        out.extend_from_slice(&n);
        off = next;
    }
    out.extend_from_slice(msg.get(off..off + fixed_after).context("short rdata")?);
    if off + fixed_after != end {
        bail!(
            "rdata of type {rtype} has {} stray bytes",
            end - off - fixed_after
        );
    }
    Ok(out)
}

/// The normal form of a DNS answer (our own parser: it must read whatever a server sends,
/// including records hickory refuses, such as empty RDATA).
pub fn normalize(msg: &[u8]) -> Result<Normal> {
    if msg.len() < 12 {
        bail!("short answer");
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([msg[4 + 2 * i], msg[5 + 2 * i]]));
    let mut off = 12;
    for _ in 0..count(0) {
        off = read_name(msg, off)?.1 + 4;
    }
    let question = msg
        .get(12..off)
        .context("question runs past the end")?
        .to_vec();
    let mut sections = [Section::new(), Section::new(), Section::new()];
    let mut edns = None;
    for (i, section) in sections.iter_mut().enumerate() {
        for _ in 0..count(i + 1) {
            let (owner, next) = read_name(msg, off)?;
            let f = msg
                .get(next..next + 10)
                .context("record header runs past the end")?;
            let rtype = u16::from_be_bytes([f[0], f[1]]);
            let class = u16::from_be_bytes([f[2], f[3]]);
            let ttl = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
            let rdlen = usize::from(u16::from_be_bytes([f[8], f[9]]));
            let start = next + 10;
            let end = start + rdlen;
            if end > msg.len() {
                bail!("record data runs past the end");
            }
            off = end;
            if rtype == 41 && i == 2 {
                if edns.is_some() {
                    bail!("two OPT records");
                }
                let mut options = Vec::new();
                let mut o = start;
                while o < end {
                    let h = msg.get(o..o + 4).context("option header")?;
                    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
                    let data = msg.get(o + 4..o + 4 + len).context("option data")?;
                    options.push((u16::from_be_bytes([h[0], h[1]]), data.to_vec()));
                    o += 4 + len;
                }
                edns = Some(Opt {
                    udp_size: class,
                    ext_rcode: (ttl >> 24) as u8,
                    version: (ttl >> 16) as u8,
                    dnssec_ok: ttl & 0x8000 != 0,
                    flags: (ttl & 0x7FFF) as u16,
                    options,
                });
                continue;
            }
            let set = section
                .entry((presentation(&owner), RecordType::from(rtype)))
                .or_insert_with(|| RRset {
                    class,
                    ttls: BTreeSet::new(),
                    rdata: BTreeSet::new(),
                });
            if set.class != class {
                bail!("one RRset in two classes");
            }
            set.ttls.insert(ttl);
            set.rdata.insert(canonical_rdata(msg, rtype, start, end)?);
        }
    }
    if off != msg.len() {
        bail!("{} bytes after the last record", msg.len() - off);
    }
    let [answer, authority, additional] = sections;
    Ok(Normal {
        flags: u16::from_be_bytes([msg[2], msg[3]]),
        question,
        edns,
        answer,
        authority,
        additional,
    })
}

/// RCODE (with the extended bits from OPT).
pub fn rcode(msg: &[u8]) -> Result<u16> {
    let n = normalize(msg)?;
    let high = n.edns.as_ref().map_or(0, |e| u16::from(e.ext_rcode));
    Ok((high << 4) | u16::from(msg[3] & 0x0F))
}

/// The A and AAAA addresses of a reply's answer section, in order.
///
/// # Panics
/// If `reply` is not a DNS message.
#[must_use]
pub fn addresses(reply: &[u8]) -> Vec<IpAddr> {
    let m = Message::from_vec(reply).expect("a DNS message");
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The TTLs of a reply's answer records and of its authority SOA (the negative TTL of a
/// NODATA or NXDOMAIN), if any.
///
/// # Panics
/// If `reply` is not a DNS message.
#[must_use]
pub fn ttls(reply: &[u8]) -> (Vec<u32>, Option<u32>) {
    let m = Message::from_vec(reply).expect("a DNS message");
    let answer = m.answers.iter().map(|r| r.ttl).collect();
    let soa = m
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.ttl);
    (answer, soa)
}
