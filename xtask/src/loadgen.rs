//! The bench's own UDP load generator, for workloads dnsperf cannot send: dnsperf puts one
//! `-E` option on every query, and the steered workloads need a different Client Subnet on each.
//!
//! It sends prepared DNS messages (the ID rewritten per query) from `threads` connected UDP
//! sockets, each keeping at most `window` queries outstanding as dnsperf does (closed loop),
//! optionally paced to a total rate. `sendmmsg`/`recvmmsg` move up to [`BATCH`] datagrams per
//! system call. A query unanswered after [`TIMEOUT`] is lost; a reply whose ID is not
//! outstanding is ignored. Every target of a workload, the ceilings included, is driven by it.

use std::{
    collections::VecDeque,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

/// Datagrams per `sendmmsg`/`recvmmsg`.
const BATCH: usize = 32;
/// A query unanswered this long is lost (dnsperf's `-t` in the bench is 2 s).
const TIMEOUT: Duration = Duration::from_secs(1);
/// Largest reply read.
const MAX_REPLY: usize = 1500;

/// What one run sent and received (summed over the threads).
#[derive(Debug, Default, Clone, Copy)]
pub struct Load {
    /// Queries sent.
    pub sent: u64,
    /// Replies to outstanding queries.
    pub completed: u64,
    /// Queries unanswered within [`TIMEOUT`].
    pub lost: u64,
    /// Replies with an RCODE other than NOERROR.
    pub errors: u64,
    /// Sum of reply latencies, ns.
    pub latency_ns: u128,
    /// Seconds the sending lasted.
    pub secs: f64,
}

impl Load {
    /// Replies per second.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn qps(&self) -> f64 {
        self.completed as f64 / self.secs
    }

    /// Average latency, seconds.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn latency_s(&self) -> f64 {
        if self.completed == 0 {
            0.0
        } else {
            self.latency_ns as f64 / self.completed as f64 / 1e9
        }
    }

    fn add(&mut self, o: &Self) {
        self.sent += o.sent;
        self.completed += o.completed;
        self.lost += o.lost;
        self.errors += o.errors;
        self.latency_ns += o.latency_ns;
        self.secs = self.secs.max(o.secs);
    }
}

/// Sends `queries` (cycled, each thread starting at its own offset) to `server` for `secs`,
/// at most `window` outstanding per thread, at `rate` queries/s in total if given.
///
/// # Errors
/// No queries, or a socket that cannot be made.
pub fn run(
    server: SocketAddr,
    queries: &[Vec<u8>],
    secs: f64,
    rate: Option<u64>,
    threads: usize,
    window: usize,
) -> Result<Load> {
    ensure!(!queries.is_empty(), "no queries to send");
    ensure!(
        queries.iter().all(|q| q.len() >= 12),
        "a query is shorter than a DNS header"
    );
    let window = window.clamp(1, 1 << 15);
    let threads = threads.max(1);
    #[expect(clippy::cast_precision_loss, reason = "rates far below 2^52")]
    let per_thread = rate.map(|r| r as f64 / threads as f64);
    let results: Vec<Result<Load>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = t * queries.len() / threads;
                s.spawn(move || one(server, queries, start, secs, per_thread, window))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread panicked")))
            })
            .collect()
    });
    let mut total = Load::default();
    for r in results {
        total.add(&r?);
    }
    Ok(total)
}

/// One thread's socket and loop.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "nanosecond clocks of one run fit u64; rates and counts are positive and small"
)]
fn one(
    server: SocketAddr,
    queries: &[Vec<u8>],
    mut next: usize,
    secs: f64,
    rate: Option<f64>,
    window: usize,
) -> Result<Load> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind).context("bind the generator's socket")?;
    sock.connect(server)
        .context("connect the generator's socket")?;
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    let big: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with a valid descriptor and an int option value; failure is harmless.
    unsafe {
        for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw const big).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    let t0 = Instant::now();
    let now_ns = || t0.elapsed().as_nanos() as u64 + 1;
    let end = (secs * 1e9) as u64;
    // Per ID: when it was sent (0: not outstanding). IDs are reused oldest-freed first.
    let mut sent_at = vec![0u64; 1 << 16];
    let mut free: VecDeque<u16> = (0..=u16::MAX).collect();
    let mut order: VecDeque<(u16, u64)> = VecDeque::with_capacity(window + 1);
    let mut out = Load::default();
    let mut outstanding = 0usize;

    let mut send_bufs = vec![[0u8; 512]; BATCH];
    let mut send_iov = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        BATCH
    ];
    let mut recv_bufs = vec![[0u8; MAX_REPLY]; BATCH];
    let mut recv_iov: Vec<libc::iovec> = recv_bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: MAX_REPLY,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) value.
    let mut send_msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    // SAFETY: as above.
    let mut recv_msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    for (m, iov) in recv_msgs.iter_mut().zip(recv_iov.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }

    let mut sending = true;
    let mut drain_until = 0u64;
    loop {
        let now = now_ns();
        if sending && now >= end {
            sending = false;
            out.secs = now as f64 / 1e9;
            drain_until = now + TIMEOUT.as_nanos() as u64;
        }
        if !sending && (outstanding == 0 || now >= drain_until) {
            out.lost += outstanding as u64;
            break;
        }
        // Send what the window (and the rate) allows.
        let mut n = 0;
        if sending {
            let mut room = window - outstanding;
            if let Some(r) = rate {
                let due = (r * now as f64 / 1e9) as u64;
                room = room.min(due.saturating_sub(out.sent) as usize);
            }
            n = room.min(BATCH);
            for k in 0..n {
                let q = &queries[next];
                next = (next + 1) % queries.len();
                let id = free.pop_front().expect("more IDs than a window");
                let b = &mut send_bufs[k];
                let len = q.len().min(b.len());
                b[..len].copy_from_slice(&q[..len]);
                b[..2].copy_from_slice(&id.to_be_bytes());
                send_iov[k] = libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: len,
                };
                send_msgs[k].msg_hdr.msg_iov = &raw mut send_iov[k];
                send_msgs[k].msg_hdr.msg_iovlen = 1;
                sent_at[usize::from(id)] = now;
                order.push_back((id, now));
            }
            if n > 0 {
                // SAFETY: n prepared headers pointing into live buffers; a connected socket.
                let r = unsafe { libc::sendmmsg(fd, send_msgs.as_mut_ptr(), n as libc::c_uint, 0) };
                let done = usize::try_from(r).unwrap_or(0);
                // What the kernel did not take goes back (the IDs freed, the queries unsent).
                for _ in done..n {
                    let (id, _) = order.pop_back().expect("pushed above");
                    sent_at[usize::from(id)] = 0;
                    free.push_front(id);
                    next = (next + queries.len() - 1) % queries.len();
                }
                out.sent += done as u64;
                outstanding += done;
                n = done;
            }
        }
        // Replies.
        // SAFETY: BATCH headers pointing into live buffers; MSG_DONTWAIT never blocks.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                recv_msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = usize::try_from(r).unwrap_or(0);
        let at = now_ns();
        for (m, b) in recv_msgs[..got].iter().zip(&recv_bufs) {
            if (m.msg_len as usize) < 12 {
                continue;
            }
            let id = u16::from_be_bytes([b[0], b[1]]);
            let t = sent_at[usize::from(id)];
            if t == 0 {
                continue;
            }
            sent_at[usize::from(id)] = 0;
            free.push_back(id);
            outstanding -= 1;
            out.completed += 1;
            out.latency_ns += u128::from(at - t);
            if b[3] & 0x0F != 0 {
                out.errors += 1;
            }
        }
        // Timeouts, oldest first (entries already answered are skipped).
        while let Some(&(id, t)) = order.front() {
            if sent_at[usize::from(id)] != t {
                order.pop_front();
            } else if at - t > TIMEOUT.as_nanos() as u64 {
                order.pop_front();
                sent_at[usize::from(id)] = 0;
                free.push_back(id);
                outstanding -= 1;
                out.lost += 1;
            } else {
                break;
            }
        }
        if n == 0 && got == 0 {
            // Nothing to do until a reply arrives or (paced) the next query is due.
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // Paced with room in the window: the next query is due within microseconds.
            let paced = rate.is_some() && outstanding < window;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&raw mut pfd, 1, i32::from(!paced)) };
            if paced {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
    Ok(out)
}
