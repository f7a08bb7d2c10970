//! Where an instance keeps its state, and the host plumbing around it: network namespace, bpffs,
//! the single-instance lock, and readiness notification.
//!
//! Layout, unique per network namespace and instance name:
//! - pins: `/sys/fs/bpf/dnsfast/ns<netns inode>/<instance>/v<layout>/<MAP>`
//! - control socket: `/run/dnsfast/ns<netns inode>/<instance>.sock`
//! - lock (holds the PID): `/run/dnsfast/ns<netns inode>/<instance>.lock`

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _, net::UnixDatagram},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use dnsfast_common::maps::LAYOUT_VERSION;

/// Root of all pins.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Root of sockets and locks.
pub const RUN_DIR: &str = "/run/dnsfast";
const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;

/// Paths of one instance in one network namespace.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Instance name.
    pub name: String,
    /// Inode of the network namespace it serves.
    pub netns: u64,
}

impl Instance {
    /// `name` in the current network namespace.
    pub fn current(name: &str) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            netns: netns_inode(Path::new("/proc/self/ns/net"))?,
        })
    }

    /// `name` in the named network namespace (`ip netns` name), or the current one.
    pub fn lookup(name: &str, netns: Option<&str>) -> Result<Self> {
        match netns {
            None => Self::current(name),
            Some(ns) => Ok(Self {
                name: name.to_string(),
                netns: netns_inode(&netns_path(ns))?,
            }),
        }
    }

    /// `ns<inode>`.
    #[must_use]
    pub fn netns_id(&self) -> String {
        format!("ns{}", self.netns)
    }

    /// Directory the maps are pinned in.
    #[must_use]
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(BPFFS)
            .join("dnsfast")
            .join(self.netns_id())
            .join(&self.name)
            .join(format!("v{LAYOUT_VERSION}"))
    }

    /// The control socket.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        Path::new(RUN_DIR)
            .join(self.netns_id())
            .join(format!("{}.sock", self.name))
    }

    fn lock_path(&self) -> PathBuf {
        Path::new(RUN_DIR)
            .join(self.netns_id())
            .join(format!("{}.lock", self.name))
    }

    /// Takes the instance lock, or fails naming the PID that holds it.
    pub fn lock(&self) -> Result<InstanceLock> {
        let path = self.lock_path();
        fs::create_dir_all(path.parent().expect("has parent"))
            .with_context(|| format!("create {RUN_DIR}"))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "instance {:?} is already running in this network namespace (pid {})",
                self.name,
                pid.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(InstanceLock { _file: file, path })
    }

    /// Makes an empty pin directory, removing what a crashed run of this instance left, of any
    /// layout version (we hold the instance's lock, which every version takes, so nothing there
    /// is in use; a pinned program left there would stay loaded for good).
    pub fn prepare_pin_dir(&self) -> Result<PathBuf> {
        ensure_bpffs()?;
        let dir = self.pin_dir();
        let instance_dir = dir.parent().expect("the version directory has a parent");
        if instance_dir.exists() {
            tracing::info!("removing stale pins under {}", instance_dir.display());
            fs::remove_dir_all(instance_dir)
                .with_context(|| format!("remove {}", instance_dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(dir)
    }

    /// Removes the pins and the control socket, and empty parent directories.
    pub fn cleanup(&self) {
        let dir = self.pin_dir();
        if dir.exists()
            && let Err(e) = fs::remove_dir_all(&dir)
        {
            tracing::warn!("could not remove {}: {e}", dir.display());
        }
        // Parents are shared with other instances: remove them only when empty.
        let mut p = dir.parent();
        for _ in 0..3 {
            let Some(d) = p else { break };
            if fs::remove_dir(d).is_err() {
                break;
            }
            p = d.parent();
        }
        let _ = fs::remove_file(self.socket());
    }
}

/// Held while the instance runs; removes the lock file on drop.
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Refuses to start without the privileges serving needs, naming them, rather than failing at
/// the first file or system call they guard ("open …/x.lock: Permission denied").
pub fn check_privileges(xdp: bool, low_port: bool, netns: bool) -> Result<()> {
    // Capability numbers from linux/capability.h. Root has them all, unless a container took
    // some away: the effective set is what counts, whoever we are.
    let mut needed = Vec::new();
    if xdp {
        needed.extend([("CAP_NET_ADMIN", 12), ("CAP_PERFMON", 38), ("CAP_BPF", 39)]);
    }
    if netns {
        needed.push(("CAP_SYS_ADMIN (to enter the network namespace)", 21));
    }
    if low_port {
        needed.push(("CAP_NET_BIND_SERVICE", 10));
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    let mut missing: Vec<&str> = needed
        .iter()
        .filter(|(_, bit)| eff & (1u64 << bit) == 0)
        .map(|(name, _)| *name)
        .collect();
    let run_dir = if Path::new(RUN_DIR).exists() {
        RUN_DIR
    } else {
        "/run"
    };
    let c = CString::new(run_dir).expect("no NUL");
    // SAFETY: faccessat(2) with a valid C string; AT_EACCESS asks for our effective ids and
    // capabilities, as the open will.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) } != 0 {
        missing.push("write access to /run/dnsfast (its lock and control socket)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "dnsfast run needs root, or what this process lacks: {}",
        missing.join(", ")
    )
}

/// Path of a named network namespace.
#[must_use]
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn netns_inode(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("network namespace {}", path.display()))?
        .ino())
}

/// Moves this thread (and threads it creates from now on) into the named network namespace.
/// Call before starting other threads.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = netns_path(name);
    let f =
        File::open(&path).with_context(|| format!("open network namespace {}", path.display()))?;
    // SAFETY: setns with a namespace fd we own; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("enter network namespace {name}"));
    }
    Ok(())
}

/// Mounts bpffs on /sys/fs/bpf if nothing is mounted there (as systemd does on most hosts).
pub fn ensure_bpffs() -> Result<()> {
    let path = CString::new(BPFFS).expect("no NUL");
    // SAFETY: statfs into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statfs(path.as_ptr(), &raw mut st) } == 0 && st.f_type == BPF_FS_MAGIC {
        return Ok(());
    }
    tracing::info!("mounting bpffs on {BPFFS}");
    let fstype = CString::new("bpf").expect("no NUL");
    // SAFETY: plain mount(2) with valid C strings.
    if unsafe {
        libc::mount(
            fstype.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).context("mount bpffs on /sys/fs/bpf");
    }
    Ok(())
}

/// Tells a supervisor (`NOTIFY_SOCKET`, as systemd's `Type=notify` and the test harness use)
/// our state, e.g. `READY=1`.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("NOTIFY_SOCKET: {e}");
            return;
        }
    };
    let bytes = path.as_bytes();
    let r = if let Some(abs) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(abs)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = r {
        tracing::warn!("NOTIFY_SOCKET {}: {e}", path.display());
    }
}

/// The control sockets of running instances in the network namespace `netns` (inode).
#[must_use]
pub fn running_sockets(netns: u64) -> Vec<PathBuf> {
    let dir = Path::new(RUN_DIR).join(format!("ns{netns}"));
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .filter(|p| lock_held(&p.with_extension("lock")))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether a running instance holds the lock file `path`. A daemon that was killed leaves its
/// socket behind, and a deleted namespace's inode number can come back for a new one: only a
/// held lock says the instance is alive.
fn lock_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: flock on a file descriptor we own; released at once (and on close).
    unsafe {
        if libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) == 0 {
            libc::flock(file.as_raw_fd(), libc::LOCK_UN);
            return false;
        }
    }
    true
}

/// IP addresses configured on `iface` (for a wildcard listen address: the XDP program matches
/// exactly these).
#[expect(
    clippy::cast_ptr_alignment,
    reason = "getifaddrs allocates each address as the sockaddr of its family, aligned for it"
)]
pub fn interface_addresses(iface: &str) -> Result<Vec<std::net::IpAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head`; we free it below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; the family tells which sockaddr it is.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: AF_INET means sockaddr_in.
                let sa = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                out.push(std::net::IpAddr::from(
                    u32::from_be(sa.sin_addr.s_addr).to_be_bytes(),
                ));
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 means sockaddr_in6.
                let sa = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                out.push(std::net::IpAddr::from(sa.sin6_addr.s6_addr));
            }
            _ => {}
        }
    }
    // SAFETY: freeing the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}
