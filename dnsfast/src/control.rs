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
    /// The answering program's size and verification cost.
    #[serde(default)]
    pub program: Option<crate::xdp::ProgramSize>,
    /// The Client Subnet stage's (its own verifier budget).
    #[serde(default)]
    pub ecs_stage: Option<crate::xdp::ProgramSize>,
    /// Failed map updates and the rebuilds after them.
    #[serde(default)]
    pub maps: MapStatus,
}

/// Map updates that failed, and the rebuilds that followed.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct MapStatus {
    /// Updates that failed.
    pub failures: u64,
    /// Rebuilds that brought XDP answering back.
    pub recoveries: u64,
    /// While XDP answering is off because a rebuild failed too: why.
    pub answering_off: Option<String>,
}

/// TCP connections: the table's limits and what it did to stay within them.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct TcpStatus {
    /// Open now.
    pub open: usize,
    /// Most open at once (`server.tcp_max_connections`, or less if the open-file limit is lower).
    pub max: usize,
    /// Most open at once from one client.
    pub per_client: usize,
    /// Closed at accept: their client had `per_client` open.
    pub refused: u64,
    /// Idle connections closed to admit new ones.
    pub evicted: u64,
    /// Accepts that failed for want of descriptors or memory.
    pub accept_errors: u64,
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
    /// TCP connections (absent from an older daemon's answer).
    #[serde(default)]
    pub tcp: TcpStatus,
    /// Steering: regions, answer sets, the GeoIP database and the region map (absent from an
    /// older daemon's answer, or without regions).
    #[serde(default)]
    pub steering: Option<SteeringStatus>,
    /// Health checks (absent from an older daemon's answer, or without steering).
    #[serde(default)]
    pub health: Option<HealthStatus>,
}

/// The GeoIP database in use.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct GeoipStatus {
    /// The file.
    pub path: String,
    /// Its schema.
    pub schema: String,
    /// The metadata's database type.
    pub database_type: String,
    /// Build date (UTC).
    pub built: String,
    /// Networks per family (IPv4, IPv6).
    pub networks: [usize; 2],
    /// How long reading it took, in milliseconds.
    pub load_ms: u64,
}

/// What `dnsfast status` shows of steering.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct SteeringStatus {
    /// Region names, in index order.
    pub regions: Vec<String>,
    /// The default region.
    pub default_region: String,
    /// Steered names.
    pub services: usize,
    /// Answer sets.
    pub answer_sets: usize,
    /// The region map: runs and blocks per family (IPv4, IPv6).
    pub runs: [usize; 2],
    /// Blocks per family.
    pub blocks: [usize; 2],
    /// The GeoIP database, if configured.
    pub geoip: Option<GeoipStatus>,
    /// Whose Client Subnet is honoured: "any", "off" or the listed prefixes.
    pub ecs: String,
}

/// Health checks and what they did to the answers.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct HealthStatus {
    /// Every checked address.
    pub targets: Vec<crate::health::TargetStatus>,
    /// Per region and family.
    pub pools: Vec<PoolStatus>,
    /// Map updates a health result or a drain decided (the TTL caps' refreshes not counted).
    pub updates: u64,
    /// Answer sets that started failing open (no healthy endpoint anywhere in their chains).
    #[serde(default)]
    pub fail_open_entered: u64,
    /// Answer sets that started answering NODATA for the same reason.
    #[serde(default)]
    pub nodata_entered: u64,
    /// The last one: from the result that decided it to the last map store, µs.
    pub last_update_us: Option<u64>,
    /// The same over the last [`UPDATE_HISTORY`] updates decided by a result or a request.
    #[serde(default)]
    pub update_spread_us: Option<Spread>,
    /// Operator-forced states in effect.
    #[serde(default)]
    pub forced: Vec<crate::forced::Forced>,
}

/// Health updates whose duration the spread covers, at most.
pub const UPDATE_HISTORY: usize = 256;

/// The spread of a series of durations, µs.
#[derive(Debug, Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spread {
    /// How many.
    pub n: usize,
    /// The shortest.
    pub min: u64,
    /// The median.
    pub median: u64,
    /// The longest.
    pub max: u64,
}

impl Spread {
    /// The spread of `values` (`None` if empty).
    #[must_use]
    pub fn of(values: impl IntoIterator<Item = u64>) -> Option<Self> {
        let mut v: Vec<u64> = values.into_iter().collect();
        v.sort_unstable();
        Some(Self {
            n: v.len(),
            min: *v.first()?,
            median: v[v.len() / 2],
            max: *v.last()?,
        })
    }
}

/// A region's own pools of one family, over every service.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct PoolStatus {
    /// The region.
    pub region: String,
    /// `A` or `AAAA`.
    pub family: String,
    /// Endpoints with a healthy address of the family.
    pub healthy: usize,
    /// Endpoints in its pools.
    pub endpoints: usize,
    /// What its clients get.
    pub answers: String,
}

/// Binds the control socket at `path` (replacing a stale one). Done before the daemon says
/// it is ready, so that a client who waited for that finds it listening, not a dead file.
pub fn listen(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))
}

/// What a forced-state request does: the forced states in effect afterwards, or why not.
pub type ForceFn =
    dyn Fn(crate::forced::Request) -> Result<Vec<crate::forced::Forced>, String> + Send + Sync;

/// Serves `status()` and `force(request)` (`force <json>`) on `listener` until the task is
/// dropped.
pub async fn serve(
    listener: UnixListener,
    status: Arc<dyn Fn() -> Status + Send + Sync>,
    force: Arc<ForceFn>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: the listen queue stays readable, so pause rather
                // than spin; the request waits in the queue.
                tracing::debug!("control socket accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let status = Arc::clone(&status);
        let force = Arc::clone(&force);
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(rd).read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match line.trim() {
                // Gathering takes the dataplane lock, which a reload holds while it writes the
                // maps: off the runtime's threads.
                "status" => tokio::task::spawn_blocking(move || status())
                    .await
                    .ok()
                    .and_then(|st| serde_json::to_string(&st).ok())
                    .unwrap_or_default(),
                other if other.starts_with("force ") => {
                    match serde_json::from_str::<crate::forced::Request>(&other[6..]) {
                        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
                        Ok(req) => match tokio::task::spawn_blocking(move || force(req)).await {
                            Ok(Ok(now)) => serde_json::json!({ "forced": now }),
                            Ok(Err(e)) => serde_json::json!({ "error": e }),
                            Err(e) => serde_json::json!({ "error": e.to_string() }),
                        },
                    }
                    .to_string()
                }
                other => {
                    serde_json::json!({ "error": format!("unknown request {other:?}") }).to_string()
                }
            };
            let _ = wr.write_all(reply.as_bytes()).await;
            let _ = wr.write_all(b"\n").await;
        });
    }
}

/// Sends a forced-state request to the instance behind `socket`; the forced states in effect
/// afterwards.
///
/// # Errors
/// The instance cannot be reached, or refused the request (the error says why).
pub fn force(socket: &Path, req: &crate::forced::Request) -> Result<Vec<crate::forced::Forced>> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect to {} (is the instance running?)", socket.display()))?;
    let timeout = Some(std::time::Duration::from_secs(10));
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(timeout)?;
    s.write_all(format!("force {}\n", serde_json::to_string(req)?).as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line).context("parse the reply")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("{e}");
    }
    serde_json::from_value(v["forced"].clone()).context("parse the reply")
}

/// Asks the instance behind `socket` for its status.
pub fn query(socket: &Path) -> Result<Status> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect to {} (is the instance running?)", socket.display()))?;
    // A daemon that cannot answer (out of descriptors, stopped) must not hang the caller.
    let timeout = Some(std::time::Duration::from_secs(10));
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(timeout)?;
    s.write_all(b"status\n")?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).context("parse status")
}

/// The steering lines of `dnsfast status` (`check` and the start-up log print them too).
#[must_use]
pub fn render_steering(st: &SteeringStatus) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "steering   regions {} (default {}), {} steered names, {} answer sets, ECS from {}",
        st.regions.join(" "),
        st.default_region,
        st.services,
        st.answer_sets,
        st.ecs
    );
    if let Some(g) = &st.geoip {
        let _ = writeln!(
            o,
            "geoip      {} ({}, {}, built {}): {} IPv4 + {} IPv6 networks, read in {} ms",
            g.path, g.schema, g.database_type, g.built, g.networks[0], g.networks[1], g.load_ms
        );
    }
    let _ = writeln!(
        o,
        "region map IPv4 {} runs in {} blocks, IPv6 {} runs in {} blocks",
        st.runs[0], st.blocks[0], st.runs[1], st.blocks[1]
    );
    o
}

/// The health part of `render`.
#[must_use]
pub fn render_health(h: &HealthStatus) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for p in &h.pools {
        let _ = writeln!(
            o,
            "pool       {} {}: {}/{} healthy, answers {}",
            p.region, p.family, p.healthy, p.endpoints, p.answers
        );
    }
    for t in &h.targets {
        let pending = t.down_in_s.map_or_else(String::new, |s| {
            format!("; answers' TTL capped to {s} s: it could be down by then")
        });
        let _ = writeln!(
            o,
            "check      {} {} {} for {} s, last {} ({} failing, {} probes{pending})",
            t.check, t.addr, t.state, t.since_s, t.last, t.failures, t.probes
        );
    }
    for f in &h.forced {
        let left = f.left().map_or_else(
            || "until cleared".to_string(),
            |d| format!("for {} s more", d.as_secs()),
        );
        let _ = writeln!(
            o,
            "forced     {} {}{} {} {left}",
            match f.scope {
                crate::forced::Scope::Endpoint => "endpoint",
                crate::forced::Scope::Region => "region",
            },
            f.name,
            f.family
                .as_ref()
                .map_or_else(String::new, |x| format!(" ({x})")),
            if f.up { "up" } else { "down (drained)" }
        );
    }
    if let Some(us) = h.last_update_us {
        let ms = |us: u64| format!("{}.{:03}", us / 1000, us % 1000);
        let spread = h.update_spread_us.map_or_else(String::new, |s| {
            format!(
                "; the last {}: {} / {} / {} ms (min / median / max)",
                s.n,
                ms(s.min),
                ms(s.median),
                ms(s.max)
            )
        });
        let _ = writeln!(
            o,
            "health     {} map updates, the last {} ms from the deciding result{spread}",
            h.updates,
            ms(us)
        );
        if h.fail_open_entered + h.nodata_entered > 0 {
            let _ = writeln!(
                o,
                "health     nothing healthy in a chain: {} times a set failed open, {} times \
                 NODATA",
                h.fail_open_entered, h.nodata_entered
            );
        }
    }
    o
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
    if let Some(st) = &s.steering {
        o.push_str(&render_steering(st));
    }
    if let Some(h) = &s.health {
        o.push_str(&render_health(h));
    }
    if let Some(e) = &s.last_reload_error {
        let _ = writeln!(
            o,
            "reload     FAILED, serving the previous configuration: {e}"
        );
    }
    let x = &s.xdp;
    // Keys are (name, type, region) everywhere: compiled, in the maps, and the capacity.
    if x.mode == "off" {
        let _ = writeln!(o, "xdp        off (the daemon answers every query)");
    } else {
        let _ = writeln!(
            o,
            "xdp        mode {} on {} ({}), {} of {} hot keys in maps (capacity {} keys, {}+{} slots)",
            x.mode,
            x.interface.as_deref().unwrap_or("-"),
            x.attached.as_deref().unwrap_or("not attached"),
            x.hot_keys,
            s.hot_answers,
            x.capacity[0],
            x.capacity[1],
            x.capacity[2]
        );
        if x.attached.is_some() && x.hot_keys < s.hot_answers {
            let _ = writeln!(
                o,
                "           {} hot keys did not fit and are answered by the daemon (raise xdp.max_hot_names)",
                s.hot_answers - x.hot_keys
            );
        }
    }
    if let Some(p) = &x.pin_dir {
        let _ = writeln!(o, "pins       {p}");
    }
    if let Some(p) = &x.program {
        let _ = writeln!(o, "program    {p}");
    }
    if let Some(p) = &x.ecs_stage {
        let _ = writeln!(o, "ecs stage  {p}");
    }
    if x.maps.failures > 0 {
        let _ = writeln!(
            o,
            "maps       {} updates failed, {} rebuilds{}",
            x.maps.failures,
            x.maps.recoveries,
            x.maps
                .answering_off
                .as_ref()
                .map_or_else(String::new, |e| format!(
                    "; XDP ANSWERING OFF until a reload rebuilds them: {e}"
                ))
        );
    }
    for c in x
        .counters
        .iter()
        .filter(|c| c.value > 0 || c.name == "seen" || c.name == "answered")
    {
        let _ = writeln!(o, "  xdp.{:<22} {}", c.name, c.value);
    }
    let tcp = &s.tcp;
    let _ = writeln!(
        o,
        "tcp        {} open (at most {}, {} per client); {} evicted, {} refused, {} accept errors",
        tcp.open, tcp.max, tcp.per_client, tcp.evicted, tcp.refused, tcp.accept_errors
    );
    let v = serde_json::to_value(&s.server).unwrap_or_default();
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let _ = writeln!(o, "  server.{k:<19} {val}");
        }
    }
    o
}
