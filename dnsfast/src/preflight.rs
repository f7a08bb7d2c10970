//! What the host must offer before anything is loaded: the XDP interface exists, every listen
//! address is one of this host's, and no other process has a socket on our addresses. `check`
//! runs the first two (so it refuses what `run` would), `run` all three before it loads the
//! program, so it fails in a second with the reason rather than after attaching.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use anyhow::{Result, bail};

use crate::config::{Config, XdpMode};

/// The interface and the addresses (`check` and `run`).
pub fn host(cfg: &Config) -> Result<()> {
    let mut problems = Vec::new();
    if cfg.xdp.mode != XdpMode::Off
        && let Some(iface) = &cfg.xdp.interface
    {
        let c = CString::new(iface.as_str()).unwrap_or_default();
        // SAFETY: a valid C string.
        if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
            problems.push(format!(
                "{}: xdp.interface: no interface {iface:?} in this network namespace",
                cfg.at("xdp.interface", 0)
            ));
        }
    }
    for (i, addr) in cfg.listen.iter().enumerate() {
        if addr.ip().is_unspecified() {
            continue;
        }
        // Binding port 0 asks the kernel the same question a bind to the real port will.
        if let Err(e) = std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)) {
            let why = if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                "is not an address of this host (in this network namespace)".to_string()
            } else {
                format!("cannot be bound: {e}")
            };
            problems.push(format!(
                "{}: server.listen: {} {why}",
                cfg.at("server.listen", i),
                addr.ip()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// The XDP interface has no program attached already (`run`): the kernel would refuse ours
/// with "File exists", and falling back to generic mode would not help. Names the program and
/// the processes holding it.
pub fn xdp_interface_free(cfg: &Config) -> Result<()> {
    if cfg.xdp.mode == XdpMode::Off {
        return Ok(());
    }
    let Some(iface) = &cfg.xdp.interface else {
        return Ok(());
    };
    let Some(held) = xdp_program_on(iface)? else {
        return Ok(());
    };
    bail!(
        "{}: xdp.interface: {iface} already has an XDP program attached: {held}; stop that \
         process or detach it (ip link set dev {iface} xdp off) first",
        cfg.at("xdp.interface", 0)
    )
}

/// The XDP program attached to `iface`, described (`None`: none).
pub fn xdp_program_on(iface: &str) -> Result<Option<String>> {
    let c = CString::new(iface)?;
    // SAFETY: a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {iface:?}");
    }
    let Some((mode, id)) = netlink_xdp(index)? else {
        return Ok(None);
    };
    let name = crate::xdp::program_name(id).unwrap_or_default();
    let holders = fd_holders(&format!("prog_id:\t{id}"));
    let held_by = if holders.is_empty() {
        "no process (pinned, or attached by ip/bpftool)".to_string()
    } else {
        holders
            .iter()
            .map(|(pid, comm)| format!("pid {pid} ({comm})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(Some(format!(
        "program {name:?} (id {id}, {mode} mode), held by {held_by}"
    )))
}

/// The attach mode and program id of the XDP program on interface `index`, asked of the kernel
/// over rtnetlink (`RTM_GETLINK`, attribute `IFLA_XDP`): the one answer that covers programs
/// attached by link, by netlink, or by another tool.
fn netlink_xdp(index: u32) -> Result<Option<(&'static str, u32)>> {
    const RTM_GETLINK: u16 = 18;
    const RTM_NEWLINK: u16 = 16;
    const NLMSG_ERROR: u16 = 2;
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_ATTACHED: u16 = 2;
    const IFLA_XDP_PROG_ID: u16 = 4;
    // With programs in several modes at once (`ATTACHED_MULTI`) only these are sent.
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const IFLA_XDP_HW_PROG_ID: u16 = 7;
    const NLA_TYPE_MASK: u16 = 0x3FFF;

    // SAFETY: a plain socket(2) call; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `fd` is fresh and ours.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);

    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes), native byte order.
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&32u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    req.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    req.extend_from_slice(&index.to_ne_bytes());
    req.extend_from_slice(&[0u8; 8]);
    // SAFETY: sending our buffer; the kernel is the destination of an unbound netlink socket.
    if unsafe { libc::send(raw, req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: receiving into our buffer of that length.
    let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let msg = &buf[..n.unsigned_abs()];
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if msg.len() < 32 {
        bail!("short rtnetlink answer");
    }
    match u16_at(msg, 4) {
        RTM_NEWLINK => {}
        NLMSG_ERROR => {
            let errno = -i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
            return Err(std::io::Error::from_raw_os_error(errno).into());
        }
        other => bail!("unexpected rtnetlink message type {other}"),
    }
    let total = (u32_at(msg, 0) as usize).min(msg.len());
    if total < 32 {
        bail!("short rtnetlink answer");
    }
    // Attributes: (len u16, type u16, payload), each padded to 4 bytes.
    let attrs = |b: &[u8]| {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 4 <= b.len() {
            let len = usize::from(u16_at(b, i));
            if len < 4 || i + len > b.len() {
                break;
            }
            out.push((u16_at(b, i + 2) & NLA_TYPE_MASK, b[i + 4..i + len].to_vec()));
            i += len.div_ceil(4) * 4;
        }
        out
    };
    let Some((_, xdp)) = attrs(&msg[32..total])
        .into_iter()
        .find(|(t, _)| *t == IFLA_XDP)
    else {
        return Ok(None);
    };
    let mut mode = None;
    let mut id = None;
    for (t, v) in attrs(&xdp) {
        match t {
            IFLA_XDP_ATTACHED if !v.is_empty() => {
                mode = match v[0] {
                    0 => return Ok(None),
                    1 => Some("native"),
                    2 => Some("generic"),
                    3 => Some("offloaded"),
                    _ => Some("several"),
                };
            }
            IFLA_XDP_PROG_ID | IFLA_XDP_DRV_PROG_ID | IFLA_XDP_SKB_PROG_ID
            | IFLA_XDP_HW_PROG_ID
                if v.len() >= 4 && id.is_none() =>
            {
                id = Some(u32_at(&v, 0));
            }
            _ => {}
        }
    }
    Ok(mode.map(|m| (m, id.unwrap_or(0))))
}

/// Processes with a descriptor whose `fdinfo` has the line `line` (a BPF program or link fd
/// shows `prog_id:` with its program's id).
fn fd_holders(line: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = Vec::new();
    for_each_fd("fdinfo", |pid, comm, fd| {
        if out.last().is_some_and(|(p, _)| *p == pid) {
            return;
        }
        if fs::read_to_string(fd).is_ok_and(|t| t.lines().any(|l| l == line)) {
            out.push((pid, comm.to_string()));
        }
    });
    out
}

/// Calls `f(pid, command name, path)` for every entry of `/proc/<pid>/<dir>` (`fd`,
/// `fdinfo`) of every process but ours, process by process.
fn for_each_fd(dir: &str, mut f: impl FnMut(u32, &str, &std::path::Path)) {
    let me = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for p in procs.filter_map(Result::ok) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join(dir)) else {
            continue;
        };
        let comm = fs::read_to_string(p.path().join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        for fd in fds.filter_map(Result::ok) {
            f(pid, &comm, &fd.path());
        }
    }
}

/// A socket of another process bound where we will listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// `udp` or `tcp`.
    pub proto: &'static str,
    /// Its local address.
    pub local: SocketAddr,
    /// The processes holding it (pid, command name).
    pub owners: Vec<(u32, String)>,
    /// Which of our listen addresses it overlaps (index into `server.listen`).
    pub ours: usize,
}

/// Sockets of other processes on our UDP/TCP addresses (`run`). With `SO_REUSEPORT` on both
/// sides the kernel lets them share the address and spreads our queries over them; a more
/// specific address than our wildcard takes that address's queries. Either way they answer in
/// our name, so we refuse to start unless `server.allow_shared_port` says it is meant.
pub fn foreign_sockets(cfg: &Config) -> Result<()> {
    let found = find_foreign(&cfg.listen)?;
    if found.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = found
        .iter()
        .map(|f| {
            let who = if f.owners.is_empty() {
                "a process we cannot see".to_string()
            } else {
                f.owners
                    .iter()
                    .map(|(pid, comm)| format!("pid {pid} ({comm})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("{} {} held by {who}", f.proto, f.local)
        })
        .collect();
    if cfg.allow_shared_port {
        tracing::warn!(
            "sharing our addresses with other sockets (server.allow_shared_port): {}",
            list.join("; ")
        );
        return Ok(());
    }
    bail!(
        "{}: server.listen: other processes have sockets on our addresses, and would take a \
         share of the queries: {}; stop them, or set server.allow_shared_port = true",
        cfg.at("server.listen", found[0].ours),
        list.join("; ")
    )
}

/// What [`foreign_sockets`] reports, for `listen`.
pub fn find_foreign(listen: &[SocketAddr]) -> Result<Vec<Foreign>> {
    let mut found = Vec::new();
    for (proto, file, v6) in [
        ("udp", "udp", false),
        ("udp", "udp6", true),
        ("tcp", "tcp", false),
        ("tcp", "tcp6", true),
    ] {
        let path = format!("/proc/thread-self/net/{file}");
        let Ok(text) = fs::read_to_string(&path) else {
            continue; // IPv6 may be off
        };
        for s in parse_proc_net(&text, v6) {
            // TCP: only listeners compete for connections; UDP: every bound socket.
            if proto == "tcp" && s.state != TCP_LISTEN {
                continue;
            }
            if let Some(ours) = listen.iter().position(|ours| overlaps(*ours, s.local)) {
                found.push((proto, s.local, s.inode, ours));
            }
        }
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let owners = socket_owners();
    let mut out: Vec<Foreign> = found
        .into_iter()
        .map(|(proto, local, inode, ours)| Foreign {
            proto,
            local,
            owners: owners.get(&inode).cloned().unwrap_or_default(),
            ours,
        })
        .collect();
    out.sort_by(|a, b| (a.proto, a.local).cmp(&(b.proto, b.local)));
    out.dedup();
    Ok(out)
}

/// Whether a socket bound to `theirs` takes queries meant for our `ours`: the same address
/// and port, or any address of the family on the port when ours is a wildcard (theirs is then
/// the more specific). A wildcard of theirs loses to our specific address.
fn overlaps(ours: SocketAddr, theirs: SocketAddr) -> bool {
    // An IPv6 socket bound to `::ffff:a.b.c.d` receives that IPv4 address's datagrams.
    let (mine, other) = (ours.ip().to_canonical(), theirs.ip().to_canonical());
    ours.port() == theirs.port()
        && mine.is_ipv6() == other.is_ipv6()
        && (mine == other || mine.is_unspecified())
}

const TCP_LISTEN: u8 = 0x0A;

/// One line of `/proc/net/{udp,tcp}{,6}`.
#[derive(Debug, PartialEq, Eq)]
struct ProcSocket {
    local: SocketAddr,
    state: u8,
    inode: u64,
}

/// The sockets listed in a `/proc/net/{udp,tcp}{,6}` text. Addresses there are the kernel's
/// 32-bit words in host byte order, printed in hex; ports are plain hex.
fn parse_proc_net(text: &str, v6: bool) -> Vec<ProcSocket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 {
            continue;
        }
        let Some((addr, port)) = fields[1].split_once(':') else {
            continue;
        };
        let (Ok(port), Ok(state), Ok(inode)) = (
            u16::from_str_radix(port, 16),
            u8::from_str_radix(fields[3], 16),
            fields[9].parse::<u64>(),
        ) else {
            continue;
        };
        let words: Option<Vec<u32>> = (0..addr.len() / 8)
            .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok())
            .collect();
        let Some(words) = words else { continue };
        let ip = match (v6, words.as_slice()) {
            (false, [w]) => IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())),
            (true, [_, _, _, _]) => {
                let mut octets = [0u8; 16];
                for (chunk, w) in octets.chunks_exact_mut(4).zip(&words) {
                    chunk.copy_from_slice(&w.to_ne_bytes());
                }
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => continue,
        };
        out.push(ProcSocket {
            local: SocketAddr::new(ip, port),
            state,
            inode,
        });
    }
    out
}

/// Socket inode → the processes holding it, from every `/proc/<pid>/fd`.
fn socket_owners() -> HashMap<u64, Vec<(u32, String)>> {
    let mut out: HashMap<u64, Vec<(u32, String)>> = HashMap::new();
    for_each_fd("fd", |pid, comm, fd| {
        let Some(inode) = fs::read_link(fd).ok().and_then(|t| {
            t.to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
        }) else {
            return;
        };
        let owners = out.entry(inode).or_default();
        if !owners.iter().any(|(q, _)| *q == pid) {
            owners.push((pid, comm.to_string()));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  12: 024D12C6:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
                  13: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0\n";
        let s = parse_proc_net(v4, false);
        assert_eq!(
            s,
            vec![
                ProcSocket {
                    local: "198.18.77.2:53".parse().unwrap(),
                    state: 7,
                    inode: 4242
                },
                ProcSocket {
                    local: "0.0.0.0:8080".parse().unwrap(),
                    state: TCP_LISTEN,
                    inode: 77
                },
            ]
        );
        // 2001:2:0:4d::1 as the kernel prints it on a little-endian machine.
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 020001204D0000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0\n";
        let s = parse_proc_net(v6, true);
        assert_eq!(s[0].local, "[2001:2:0:4d::1]:53".parse().unwrap());
        assert_eq!(s[0].inode, 99);
    }

    #[test]
    fn which_sockets_take_our_queries() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("198.18.77.2:53"), a("198.18.77.2:53")));
        assert!(!overlaps(a("198.18.77.2:53"), a("198.18.77.2:54")));
        assert!(!overlaps(a("198.18.77.2:53"), a("198.18.77.3:53")));
        assert!(
            !overlaps(a("198.18.77.2:53"), a("0.0.0.0:53")),
            "our specific address wins over their wildcard"
        );
        assert!(overlaps(a("0.0.0.0:53"), a("198.18.77.3:53")));
        assert!(overlaps(a("[::]:53"), a("[2001:2::1]:53")));
        assert!(!overlaps(a("[::]:53"), a("198.18.77.3:53")));
        assert!(overlaps(a("198.18.77.2:53"), a("[::ffff:198.18.77.2]:53")));
    }

    #[test]
    fn finds_a_socket_of_this_process_and_names_nobody_for_it() {
        // Our own pid is skipped as an owner (the daemon checks before it binds anything).
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let f = find_foreign(&[addr]).unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].proto, f[0].local), ("udp", addr));
        assert!(f[0].owners.is_empty());
    }
}
