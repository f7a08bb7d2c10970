//! Test hosts: a network namespace with one end of a veth pair, the other end in this
//! namespace. Each test host gets its own names and subnet (`198.18.<n>.0/24`, `2001:2:0:<n>::/64`),
//! IPv6 addresses go on with `nodad` so they are usable at once, and everything is removed on
//! drop.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Runs `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A test host.
#[derive(Debug)]
pub struct TestHost {
    /// Network namespace of the server side.
    pub netns: String,
    /// Veth end in this namespace (the client side).
    pub host_if: String,
    /// Veth end inside the namespace (the server side, where XDP attaches).
    pub ns_if: String,
    /// Server address (inside the namespace).
    pub v4: Ipv4Addr,
    /// Client address (this namespace).
    pub v4_peer: Ipv4Addr,
    /// Server address.
    pub v6: Ipv6Addr,
    /// Client address.
    pub v6_peer: Ipv6Addr,
}

impl TestHost {
    /// A test host on subnet `n` (1..=250) with the given names. Leftovers of an earlier run with
    /// the same names are removed first.
    pub fn with_names(n: u8, netns: &str, host_if: &str, ns_if: &str) -> Result<Self> {
        let h = Self {
            netns: netns.to_string(),
            host_if: host_if.to_string(),
            ns_if: ns_if.to_string(),
            v4: Ipv4Addr::new(198, 18, n, 1),
            v4_peer: Ipv4Addr::new(198, 18, n, 2),
            v6: Ipv6Addr::new(0x2001, 2, 0, u16::from(n), 0, 0, 0, 1),
            v6_peer: Ipv6Addr::new(0x2001, 2, 0, u16::from(n), 0, 0, 0, 2),
        };
        h.remove();
        h.create().inspect_err(|_| h.remove())?;
        Ok(h)
    }

    /// A test host named after `tag` on subnet `n`.
    pub fn new(n: u8, tag: &str) -> Result<Self> {
        Self::with_names(
            n,
            &format!("dft-{tag}"),
            &format!("dft{n}h"),
            &format!("dft{n}n"),
        )
    }

    fn create(&self) -> Result<()> {
        let ns = self.netns.as_str();
        ip(&["netns", "add", ns])?;
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &self.ns_if,
        ])?;
        ip(&["link", "set", &self.ns_if, "netns", ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.v4_peer),
            "dev",
            &self.host_if,
        ])?;
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.v6_peer),
            "dev",
            &self.host_if,
            "nodad",
        ])?;
        ip(&["link", "set", &self.host_if, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", self.v4),
            "dev",
            &self.ns_if,
        ])?;
        ip(&[
            "-n",
            ns,
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.v6),
            "dev",
            &self.ns_if,
            "nodad",
        ])?;
        ip(&["-n", ns, "link", "set", &self.ns_if, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn remove(&self) {
        // Deleting the namespace deletes its veth end, and with it the peer.
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = ip(&["link", "del", &self.host_if]);
    }

    /// Runs `f` on a thread inside the test host's namespace (sockets it creates stay there).
    pub fn in_netns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.netns);
        std::thread::spawn(move || -> Result<T> {
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            // SAFETY: setns on this (new, short-lived) thread only, with an fd we own.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) }
                != 0
            {
                return Err(std::io::Error::last_os_error()).context("setns");
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.netns))?
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.remove();
    }
}
