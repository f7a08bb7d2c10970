//! UDP workers: one OS thread per socket (`SO_REUSEPORT` spreads queries over them), receiving
//! and sending in batches with `recvmmsg`/`sendmmsg`, as Knot and NSD do. A DNS query is one
//! short datagram answered at once; an async runtime adds wake-ups and no concurrency here.

use std::{
    mem::MaybeUninit,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::server::{Shared, handle_into};

/// Datagrams per system call.
const BATCH: usize = 32;
/// Largest query we read (EDNS lets clients send more than 512; nobody sends 4 KiB).
const RX_SIZE: usize = 4096;
/// Largest answer over UDP (our EDNS size).
const TX_SIZE: usize = 1232;
/// How often a blocked worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// Buffers of one worker, allocated once.
struct Batch {
    rx: Vec<[u8; RX_SIZE]>,
    tx: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Self {
        Self {
            rx: vec![[0u8; RX_SIZE]; BATCH],
            tx: (0..BATCH).map(|_| Vec::with_capacity(TX_SIZE)).collect(),
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
            // bytes are a valid value.
            addrs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            // SAFETY: as above.
            iov: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            // SAFETY: as above.
            hdrs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
        }
    }
}

/// The UDP source port (host order) of the sender `recvmmsg` stored in `a` (`sockaddr_storage`
/// is aligned for every sockaddr type).
fn client_addr(a: &libc::sockaddr_storage) -> SocketAddr {
    let p: *const libc::sockaddr_storage = a;
    match i32::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says which sockaddr the kernel wrote.
            let s = unsafe { &*p.cast::<libc::sockaddr_in>() };
            SocketAddr::new(
                Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)).into(),
                u16::from_be(s.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: as above.
            let s = unsafe { &*p.cast::<libc::sockaddr_in6>() };
            SocketAddr::new(
                Ipv6Addr::from(s.sin6_addr.s6_addr).into(),
                u16::from_be(s.sin6_port),
            )
        }
        _ => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
    }
}

/// Serves `socket` on the calling thread until `stop` is set.
pub fn worker(socket: &std::net::UdpSocket, shared: &Arc<Shared>, stop: &AtomicBool) {
    if let Err(e) = socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_read_timeout(Some(POLL)))
    {
        tracing::error!("udp worker: {e}");
        return;
    }
    let fd = socket.as_raw_fd();
    let mut b = Batch::new();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            b.iov[i] = libc::iovec {
                iov_base: b.rx[i].as_mut_ptr().cast(),
                iov_len: RX_SIZE,
            };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut b.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &raw mut b.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers of this batch, sized as stated; the kernel
        // fills at most BATCH of them. MSG_WAITFORONE returns as soon as one datagram is there.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                b.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n.unsigned_abs() as usize;
        shared
            .stats
            .udp_queries
            .fetch_add(n as u64, Ordering::Relaxed);
        let mut out = 0;
        for i in 0..n {
            let len = b.hdrs[i].msg_len as usize;
            let name = b.hdrs[i].msg_hdr.msg_name;
            let namelen = b.hdrs[i].msg_hdr.msg_namelen;
            b.tx[out].clear();
            let client = client_addr(&b.addrs[i]);
            if !handle_into(
                shared,
                &b.rx[i][..len.min(RX_SIZE)],
                false,
                client,
                &mut b.tx[out],
            ) {
                continue;
            }
            b.iov[out] = libc::iovec {
                iov_base: b.tx[out].as_mut_ptr().cast(),
                iov_len: b.tx[out].len(),
            };
            let h = &mut b.hdrs[out].msg_hdr;
            h.msg_name = name;
            h.msg_namelen = namelen;
            h.msg_iov = &raw mut b.iov[out];
            h.msg_iovlen = 1;
            out += 1;
        }
        let mut sent = 0;
        while sent < out {
            // SAFETY: headers 0..out point at answers and client addresses of this batch.
            let r = unsafe {
                libc::sendmmsg(fd, b.hdrs.as_mut_ptr().add(sent), (out - sent) as u32, 0)
            };
            if r <= 0 {
                tracing::debug!("udp send: {}", std::io::Error::last_os_error());
                break;
            }
            sent += r.unsigned_abs() as usize;
        }
    }
}
