//! The bench's open-loop generator: Knot's `kxdpgun` (Debian `knot-dnsutils`), which sends
//! from an `AF_XDP` socket at a set rate whatever comes back, so the ceiling it measures is the
//! machine's, not a closed loop's window (dnsperf and `loadgen` keep a bounded number of queries
//! outstanding). It attaches its own XDP program to the sending interface and leaves it there:
//! [`run`] takes it off again, and the caller restores the pass program.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// What one kxdpgun run sent and got back.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shot {
    /// Queries sent.
    pub sent: u64,
    /// Replies received (any RCODE).
    pub replies: u64,
    /// Seconds of sending.
    pub secs: f64,
}

impl Shot {
    /// Queries sent a second.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn offered(&self) -> f64 {
        self.sent as f64 / self.secs
    }

    /// Replies a second.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn answered(&self) -> f64 {
        self.replies as f64 / self.secs
    }

    /// Queries without a reply.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.replies)
    }
}

/// Sends the queries of `file` (`name TYPE` lines) from `iface` to `server` port 53 for `secs`
/// at up to `rate` queries/s; `remote_mac` is the server's end's address; `local` spreads the
/// source address over a prefix (`-l`: kxdpgun picks the addresses of the range uniformly,
/// query by query). Takes kxdpgun's XDP program off `iface` afterwards.
///
/// # Errors
/// kxdpgun fails or prints no totals.
pub fn run(
    iface: &str,
    server: std::net::Ipv4Addr,
    remote_mac: &str,
    file: &Path,
    rate: u64,
    secs: u64,
    local: Option<&str>,
) -> Result<Shot> {
    let mut c = Command::new("kxdpgun");
    c.args(["-t", &secs.to_string(), "-Q", &rate.to_string(), "-i"])
        .arg(file)
        .args(["-I", iface, "-R", remote_mac]);
    if let Some(l) = local {
        c.args(["-l", l]);
    }
    c.arg(server.to_string());
    let out = c.output().context("run kxdpgun");
    // Whatever happened, its program must not stay on the interface.
    let _ = Command::new("ip")
        .args(["link", "set", "dev", iface, "xdp", "off"])
        .status();
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "kxdpgun failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text, secs)
}

/// The totals kxdpgun prints (`total queries:     N (P pps)`, `total replies:     N (P pps)
/// (X%)`).
fn parse(text: &str, secs: u64) -> Result<Shot> {
    let total = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let sent = total("total queries:").with_context(|| format!("no totals in:\n{text}"))?;
    #[expect(clippy::cast_precision_loss, reason = "seconds")]
    Ok(Shot {
        sent,
        replies: total("total replies:").unwrap_or(0),
        secs: secs as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_kxdpgun_output() {
        let text = "using interface dnsb-cli, XDP threads 1, UDP, native mode\n\
                    thread#00: sent 2400000, received 2399000\n\
                    total queries:     2400000 (480000 pps)\n\
                    total replies:     2399000 (479800 pps) (99%)\n\
                    average DNS reply size: 57 B\nduration: 5 s\n";
        let s = parse(text, 5).unwrap();
        assert_eq!((s.sent, s.replies, s.lost()), (2_400_000, 2_399_000, 1000));
        assert!((s.answered() - 479_800.0).abs() < 1e-6);
        assert!(parse("nothing", 5).is_err());
    }
}
