//! Status of a running instance: gathered by the daemon, served as JSON on its control socket,
//! printed by `dnsfast status`.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
};

use crate::server::StatsView;

/// A named counter.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Name.
    pub name: String,
    /// Value.
    pub value: u64,
}

/// XDP part of the status.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct XdpStatus {
    /// Configured mode.
    pub mode: String,
    /// Interface.
    pub interface: Option<String>,
    /// How it is attached ("native", "generic"), if it is.
    pub attached: Option<String>,
    /// Where the maps are pinned.
    pub pin_dir: Option<String>,
    /// Hot keys in the maps.
    pub hot_keys: usize,
    /// Map capacities: entries, small slots, large slots.
    pub capacity: [u32; 3],
    /// Counters of the XDP program, summed over CPUs.
    pub counters: Vec<Counter>,
}

/// A served zone.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct ZoneStatus {
    /// Apex.
    pub origin: String,
    /// SOA serial.
    pub serial: u32,
    /// Names with data.
    pub names: usize,
    /// Master file.
    pub file: String,
}

/// Everything `dnsfast status` shows.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct Status {
    /// Instance name.
    pub instance: String,
    /// Daemon PID.
    pub pid: u32,
    /// Network namespace (`ns<inode>`).
    pub netns: String,
    /// Configuration file.
    pub config: String,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Zones.
    pub zones: Vec<ZoneStatus>,
    /// Hot answers compiled.
    pub hot_answers: usize,
    /// Successful reloads.
    pub reloads: u64,
    /// The last failed reload's error, if the last reload failed.
    pub last_reload_error: Option<String>,
    /// XDP.
    pub xdp: XdpStatus,
    /// Userspace counters.
    pub server: StatsView,
}

/// Serves `status()` on the Unix socket `path` until the task is dropped.
pub async fn serve(path: &Path, status: Arc<dyn Fn() -> Status + Send + Sync>) -> Result<()> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let status = Arc::clone(&status);
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(rd).read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match line.trim() {
                "status" => serde_json::to_string(&status()).unwrap_or_default(),
                other => {
                    serde_json::json!({ "error": format!("unknown request {other:?}") }).to_string()
                }
            };
            let _ = wr.write_all(reply.as_bytes()).await;
            let _ = wr.write_all(b"\n").await;
        });
    }
}

/// Asks the instance behind `socket` for its status.
pub fn query(socket: &Path) -> Result<Status> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect to {} (is the instance running?)", socket.display()))?;
    s.write_all(b"status\n")?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).context("parse status")
}

/// Human-readable status.
#[must_use]
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "instance   {} (pid {}, {})", s.instance, s.pid, s.netns);
    let _ = writeln!(o, "config     {}", s.config);
    let _ = writeln!(o, "listen     {}", s.listen.join(" "));
    for z in &s.zones {
        let _ = writeln!(
            o,
            "zone       {} serial {} ({} names, {})",
            z.origin, z.serial, z.names, z.file
        );
    }
    let _ = writeln!(
        o,
        "hot        {} answers compiled, {} reloads",
        s.hot_answers, s.reloads
    );
    if let Some(e) = &s.last_reload_error {
        let _ = writeln!(
            o,
            "reload     FAILED, serving the previous configuration: {e}"
        );
    }
    let x = &s.xdp;
    let _ = writeln!(
        o,
        "xdp        mode {} on {} ({}), {} hot keys in maps (capacity {} names, {}+{} slots)",
        x.mode,
        x.interface.as_deref().unwrap_or("-"),
        x.attached.as_deref().unwrap_or("not attached"),
        x.hot_keys,
        x.capacity[0],
        x.capacity[1],
        x.capacity[2]
    );
    if let Some(p) = &x.pin_dir {
        let _ = writeln!(o, "pins       {p}");
    }
    for c in x
        .counters
        .iter()
        .filter(|c| c.value > 0 || c.name == "seen" || c.name == "answered")
    {
        let _ = writeln!(o, "  xdp.{:<22} {}", c.name, c.value);
    }
    let v = serde_json::to_value(&s.server).unwrap_or_default();
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let _ = writeln!(o, "  server.{k:<19} {val}");
        }
    }
    o
}
