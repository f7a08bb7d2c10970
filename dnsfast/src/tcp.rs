//! DNS over TCP (RFC 7766): the acceptors, one per listen address, and the table of open
//! connections they share.
//!
//! Connections are a resource a client can hold for free, so the table defends it:
//! - at most `max` connections in all; a new one beyond that closes the idlest open connection
//!   (the one whose last query, or accept, is oldest), as Knot and Unbound do, so a crowd of
//!   idle connections cannot lock a new client out (counted as evicted);
//! - at most `per_client` from one client (an IPv4 address, an IPv6 /64): more are closed at
//!   once (counted as refused), so one client cannot take the table;
//! - `max` is sized against the open-file limit at start ([`connection_budget`]), and when
//!   accepting fails for want of descriptors anyway (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`:
//!   another process, a lowered limit) the acceptor closes the idlest connection and backs off
//!   instead of spinning on a listen queue that stays readable; it logs that once per
//!   [`LOG_EVERY`] and counts it.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

use crate::server::{Shared, handle};

/// Descriptors kept free for everything but TCP connections (reloads open zone files, status
/// requests a socket each, map updates a few descriptors).
const RESERVED_FDS: u64 = 64;
/// Accept failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// First and longest pause after an accept failed for want of resources.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Limits of the connection table.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once, in all.
    pub max: usize,
    /// Connections open at once from one client.
    pub per_client: usize,
    /// An idle connection is closed after this long.
    pub idle: Duration,
}

/// Raises the soft open-file limit to the hard one (systemd starts services with a soft 1024);
/// returns the soft limit now in force. Call first thing: sockets of many UDP workers and the
/// maps need descriptors before TCP does.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                lim = raised;
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// How many TCP connections fit beside the descriptors open now, and the limit. Call once
/// everything else is open (sockets, maps).
pub fn connection_budget() -> io::Result<(usize, u64)> {
    let limit = raise_nofile()?;
    let open = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    let free = limit.saturating_sub(open + RESERVED_FDS);
    Ok((usize::try_from(free).unwrap_or(usize::MAX), limit))
}

/// Counters of the table.
#[derive(Debug, Default)]
pub struct TcpStats {
    /// Connections closed at accept: their client already had `per_client` open.
    pub refused: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Accepts that failed for want of descriptors or memory.
    pub accept_errors: AtomicU64,
}

/// One open connection, as the table sees it.
struct Conn {
    client: IpAddr,
    /// Milliseconds since the table's epoch of the last query (or the accept).
    last: Arc<AtomicU64>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Conn>,
    per_client: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// The open connections of every acceptor of the daemon.
pub struct Table {
    limits: Limits,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// When accept failures were last logged, and how many since (one log line per interval
    /// for all acceptors).
    failures: Mutex<(Option<Instant>, u64)>,
    /// Counters.
    pub stats: TcpStats,
}

/// What a connection task holds: its activity clock and close signal; leaving the table on drop.
struct Ticket {
    table: Arc<Table>,
    id: u64,
    last: Arc<AtomicU64>,
    close: Arc<Notify>,
}

impl Ticket {
    fn touch(&self) {
        self.last.store(self.table.now(), Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut t = self.table.inner.lock().expect("tcp table lock");
        if let Some(c) = t.conns.remove(&self.id) {
            release(&mut t.per_client, c.client);
        }
    }
}

fn release(per_client: &mut HashMap<IpAddr, usize>, client: IpAddr) {
    if let Some(n) = per_client.get_mut(&client) {
        *n -= 1;
        if *n == 0 {
            per_client.remove(&client);
        }
    }
}

/// The address a per-client limit counts by: IPv4 addresses, IPv6 /64s (one host often has a
/// whole /64).
fn client_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = a.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl Table {
    /// An empty table.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            failures: Mutex::new((None, 0)),
            stats: TcpStats::default(),
        }
    }

    /// The limits it enforces.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now.
    #[must_use]
    pub fn open(&self) -> usize {
        self.inner.lock().expect("tcp table lock").conns.len()
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Admits a connection from `peer`, closing the idlest one if the table is full; `None`:
    /// refused (its client has `per_client` open).
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let client = client_of(peer);
        let mut t = self.inner.lock().expect("tcp table lock");
        if t.per_client.get(&client).copied().unwrap_or(0) >= self.limits.per_client {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        while t.conns.len() >= self.limits.max {
            if !Self::evict_idlest(&mut t) {
                break;
            }
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = t.next_id;
        t.next_id += 1;
        let last = Arc::new(AtomicU64::new(self.now()));
        let close = Arc::new(Notify::new());
        t.conns.insert(
            id,
            Conn {
                client,
                last: Arc::clone(&last),
                close: Arc::clone(&close),
            },
        );
        *t.per_client.entry(client).or_default() += 1;
        Some(Ticket {
            table: Arc::clone(self),
            id,
            last,
            close,
        })
    }

    /// Tells the connection idle longest to close, and takes it out of the table at once (its
    /// task ends at its next await). `false`: the table is empty.
    fn evict_idlest(t: &mut Inner) -> bool {
        let Some(id) = t
            .conns
            .iter()
            .min_by_key(|(id, c)| (c.last.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        let c = t.conns.remove(&id).expect("found above");
        release(&mut t.per_client, c.client);
        c.close.notify_one();
        true
    }

    /// Closes the idlest connection to free a descriptor; `false` if none is open.
    fn free_one(&self) -> bool {
        let evicted = Self::evict_idlest(&mut self.inner.lock().expect("tcp table lock"));
        if evicted {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        evicted
    }
}

/// Whether an accept error means "no descriptor or memory for a new socket".
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts connections on `listener` into `table` until the task is dropped.
pub async fn acceptor(listener: TcpListener, shared: Arc<Shared>, table: Arc<Table>) {
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let mut backoff = BACKOFF_MIN;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) if out_of_resources(&e) => {
                table.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                {
                    let mut f = table.failures.lock().expect("tcp failures lock");
                    f.1 += 1;
                    if f.0.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        tracing::warn!(
                            "TCP accept on {local} failed {} time(s) since the last report: {e}; \
                             closing the idlest connection and retrying in {backoff:?} (raise the \
                             open-file limit, or lower server.tcp_max_connections)",
                            f.1
                        );
                        *f = (Some(Instant::now()), 0);
                    }
                }
                table.free_one();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(e) => {
                // The client gave up between SYN and accept, and the like: nothing to act on.
                tracing::debug!("tcp accept on {local}: {e}");
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let Some(ticket) = table.admit(peer.ip()) else {
            tracing::debug!("tcp: {peer} has too many connections open, closing the new one");
            continue;
        };
        let shared = Arc::clone(&shared);
        let idle = table.limits.idle;
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &shared, &ticket, idle, peer).await {
                tracing::debug!("tcp {peer}: {e}");
            }
        });
    }
}

/// Length-prefixed messages, several per connection, answered in order; closed after `idle`
/// without a query, or when the table evicts it.
async fn connection(
    stream: TcpStream,
    shared: &Shared,
    ticket: &Ticket,
    idle: Duration,
    client: SocketAddr,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut msg = Vec::new();
    loop {
        let len = tokio::select! {
            () = ticket.close.notified() => return Ok(()),
            r = tokio::time::timeout(idle, rd.read_u16()) => match r {
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => usize::from(r?),
            },
        };
        ticket.touch();
        msg.resize(len, 0);
        tokio::select! {
            () = ticket.close.notified() => return Ok(()),
            r = tokio::time::timeout(idle, rd.read_exact(&mut msg)) => {
                r.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "query not completed in time")
                })??;
            }
        }
        shared.stats.tcp_queries.fetch_add(1, Ordering::Relaxed);
        if let Some(resp) = handle(shared, &msg, true, client) {
            let mut out = Vec::with_capacity(2 + resp.len());
            out.extend_from_slice(&(resp.len() as u16).to_be_bytes());
            out.extend_from_slice(&resp);
            // A client that does not read must neither keep the descriptor past an eviction
            // nor hold it forever.
            tokio::select! {
                () = ticket.close.notified() => return Ok(()),
                r = tokio::time::timeout(idle, wr.write_all(&out)) => {
                    r.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "answer not read in time"))??;
                }
            }
        }
        ticket.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize, per_client: usize) -> Arc<Table> {
        Arc::new(Table::new(Limits {
            max,
            per_client,
            idle: Duration::from_secs(10),
        }))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn full_table_evicts_the_idlest() {
        let table = table(3, 10);
        let recent = table.admit(ip("198.18.0.1")).unwrap();
        let idlest = table.admit(ip("198.18.0.2")).unwrap();
        let middle = table.admit(ip("198.18.0.3")).unwrap();
        recent.last.store(100, Ordering::Relaxed);
        idlest.last.store(1, Ordering::Relaxed);
        middle.last.store(50, Ordering::Relaxed);
        let new = table.admit(ip("198.18.0.4")).unwrap();
        assert_eq!(table.stats.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(table.open(), 3);
        let inner = table.inner.lock().unwrap();
        assert!(!inner.conns.contains_key(&idlest.id), "the idlest went");
        assert!(inner.conns.contains_key(&recent.id) && inner.conns.contains_key(&middle.id));
        assert!(inner.conns.contains_key(&new.id));
        assert!(!inner.per_client.contains_key(&ip("198.18.0.2")));
    }

    #[test]
    fn per_client_cap_refuses_and_frees_on_close() {
        let table = table(100, 2);
        let first = table.admit(ip("2001:2::1")).unwrap();
        let _second = table.admit(ip("2001:2::ffff")).unwrap();
        assert!(table.admit(ip("2001:2::2")).is_none(), "same /64");
        assert_eq!(table.stats.refused.load(Ordering::Relaxed), 1);
        assert!(table.admit(ip("2001:2:0:1::1")).is_some(), "another /64");
        drop(first);
        assert!(
            table.admit(ip("2001:2::3")).is_some(),
            "a closed one frees its place"
        );
        assert!(table.admit(ip("::ffff:198.18.0.1")).is_some());
        assert_eq!(client_of(ip("::ffff:198.18.0.1")), ip("198.18.0.1"));
    }
}
