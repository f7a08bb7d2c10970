//! `cargo xtask bench`: dnsfast against the XDP ceiling, Knot DNS (kernel UDP and its XDP mode)
//! and NSD, on one test host, in one run, with dnsperf.
//!
//! Every target serves the same zones on the same address of the test host `dnsfast-bench`; the
//! load comes from this namespace over the veth pair. Rounds are interleaved (each round runs
//! every target), figures are medians over rounds, and every figure is printed beside its ratio
//! to the ceiling and to Knot (kernel UDP) measured in the same run.
//!
//! Per target and workload:
//! - full load: dnsperf `-T 2 -c 8` queries/s and its lost count;
//! - a fixed offered rate every target sustains (30% of the ceiling's `hot` rate, measured first):
//!   whole-machine busy CPU µs per answered query (from `/proc/stat`), average latency, lost
//!   queries, and for XDP programs ns per packet (`kernel.bpf_stats_enabled`: set and restored
//!   in one place, [`BpfStats`]).
//!
//! New workloads plug in as a [`Workload`] variant: a query file and dnsperf options.
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "benchmark arithmetic: counts far below 2^52, rates and times positive"
)]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use dnsfast_tests::{dns, host::TestHost, service::Service};
use hickory_proto::rr::RecordType;

use crate::{dnsfast_bin, root};

const NETNS: &str = "dnsfast-bench";
const SUBNET: u8 = 240;

/// What to run.
pub struct Opts {
    /// Short runs, one round, a 100k-name zone instead of 1M.
    pub quick: bool,
    /// Rounds (median over them).
    pub rounds: usize,
    /// Only these targets (names), if given.
    pub only: Vec<String>,
    /// Only these workloads (names), if given.
    pub workloads: Vec<String>,
    /// Back-to-back pairs of the two samples `check` compares (dnsfast-xdp and knot-udp on
    /// `hot`), taken after the rounds, the order alternating pair by pair: whole-machine CPU per
    /// query drifts by up to 2x over minutes here, so only samples taken next to each other
    /// compare.
    pub check_pairs: usize,
}

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The bare XDP responder: an empty answer to every query, no lookup.
    Ceiling,
    /// The ceiling plus the frame growth every answer with a record needs: one fixed A record
    /// for every query, no lookup, no validation.
    CeilingGrow,
    /// The ceiling plus one load from a random bucket of a hot-name table the size of dnsfast's
    /// for the big zone: what a lookup there cannot avoid (big-zone workload only).
    CeilingMiss,
    /// The ceiling plus one lookup of the Client Subnet address in a kernel LPM trie holding the
    /// region map's blocks (steered workloads only).
    CeilingLpm,
    /// The ceiling plus one load, picked by the Client Subnet address, from a table the size of
    /// the region tables' first level: the access random clients cannot avoid (steered
    /// workloads only).
    CeilingGeoMiss,
    /// dnsfast with native XDP.
    DnsfastXdp,
    /// dnsfast with XDP off (its userspace path only).
    DnsfastUser,
    /// Knot DNS over kernel UDP, two workers (its geoip module steers the steered name).
    KnotUdp,
    /// Knot DNS in its XDP mode (`AF_XDP`), the same module.
    KnotXdp,
    /// NSD, two servers, rate limiting off.
    Nsd,
}

impl Target {
    const ALL: [Self; 10] = [
        Self::Ceiling,
        Self::CeilingGrow,
        Self::CeilingMiss,
        Self::CeilingLpm,
        Self::CeilingGeoMiss,
        Self::DnsfastXdp,
        Self::DnsfastUser,
        Self::KnotUdp,
        Self::KnotXdp,
        Self::Nsd,
    ];

    /// All targets, in the chart's order.
    pub const ALL_FOR_CHART: [Self; 10] = Self::ALL;

    /// Name for the chart.
    pub fn label(self) -> &'static str {
        self.name()
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ceiling => "ceiling",
            Self::CeilingGrow => "ceiling-grow",
            Self::CeilingMiss => "ceiling-miss",
            Self::CeilingLpm => "ceiling-lpm",
            Self::CeilingGeoMiss => "ceiling-geo-miss",
            Self::DnsfastXdp => "dnsfast-xdp",
            Self::DnsfastUser => "dnsfast-user",
            Self::KnotUdp => "knot-udp",
            Self::KnotXdp => "knot-xdp",
            Self::Nsd => "nsd",
        }
    }

    /// Whether an XDP program answers (ns per packet is reported).
    fn xdp(self) -> bool {
        matches!(
            self,
            Self::Ceiling
                | Self::CeilingGrow
                | Self::CeilingMiss
                | Self::CeilingLpm
                | Self::CeilingGeoMiss
                | Self::DnsfastXdp
                | Self::KnotXdp
        )
    }

    /// Whether the target is measured on `wl`: the miss reference only matters for the big zone,
    /// the region lookup's references for the steered workloads; NSD has no geo, and the
    /// growing reference is the hot workloads'.
    fn runs(self, wl: Workload) -> bool {
        let geo_ref = matches!(self, Self::CeilingLpm | Self::CeilingGeoMiss);
        match wl {
            Workload::Steered | Workload::SteeredFew => {
                !matches!(self, Self::Nsd | Self::CeilingGrow | Self::CeilingMiss)
            }
            Workload::SteeredOne => matches!(self, Self::Ceiling | Self::DnsfastXdp),
            Workload::HotEcs => {
                !geo_ref && !matches!(self, Self::Nsd | Self::CeilingGrow | Self::CeilingMiss)
            }
            Workload::Zone1m => !geo_ref,
            _ => !geo_ref && self != Self::CeilingMiss,
        }
    }
}

/// A query mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// A/AAAA for a few names, mixed case.
    Hot,
    /// The same with DO set and a COOKIE option, as validating resolvers send.
    HotDoCookie,
    /// Hot names plus MX, TXT, SRV, CNAME, NXDOMAIN and SOA.
    Mixed,
    /// A million (quick: 100k) names queried at random.
    Zone1m,
    /// A/AAAA for a steered name (the seed's regions over the GeoIP database), each query with
    /// a Client Subnet of its own drawn uniformly over the database's networks (/24, /56),
    /// from the bench's generator (`queries`).
    Steered,
    /// The same over 1,000 subnets picked by Zipf's law (s = 1.0).
    SteeredFew,
    /// The same over one subnet of each family: the region tables' paths stay cached, so
    /// `steered-one` − `hot-ecs` is the steering's own cost and `steered-few` − `steered-one`
    /// what spreading over 1,000 subnets adds.
    SteeredOne,
    /// `steered`'s packets for an unsteered name whose answer has the same size: the baseline
    /// that isolates the region lookup's cost.
    HotEcs,
}

impl Workload {
    const ALL: [Self; 8] = [
        Self::Hot,
        Self::HotDoCookie,
        Self::Mixed,
        Self::Zone1m,
        Self::Steered,
        Self::SteeredFew,
        Self::SteeredOne,
        Self::HotEcs,
    ];

    /// Name for the chart.
    pub fn label(self) -> &'static str {
        self.name()
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::HotDoCookie => "hot-do-cookie",
            Self::Mixed => "mixed",
            Self::Zone1m => "zone-1m",
            Self::Steered => "steered",
            Self::SteeredFew => "steered-few",
            Self::SteeredOne => "steered-one",
            Self::HotEcs => "hot-ecs",
        }
    }

    /// The generator's queries, for the workloads dnsperf cannot send.
    fn queries(self, work: &Work) -> Option<&[Vec<u8>]> {
        match self {
            Self::Steered => Some(&work.steered),
            Self::SteeredFew => Some(&work.steered_few),
            Self::SteeredOne => Some(&work.steered_one),
            Self::HotEcs => Some(&work.hot_ecs),
            _ => None,
        }
    }

    fn dnsperf_args(self, work: &Path) -> Vec<String> {
        let file = |f: &str| work.join(f).display().to_string();
        match self {
            Self::Hot => vec!["-d".into(), file("hot.txt")],
            // -D sets DO; -E adds the option: code 10 (COOKIE), an 8-byte client cookie.
            Self::HotDoCookie => {
                vec![
                    "-d".into(),
                    file("hot.txt"),
                    "-D".into(),
                    "-E".into(),
                    "10:0123456789abcdef".into(),
                ]
            }
            Self::Mixed => vec!["-d".into(), file("mixed.txt")],
            Self::Zone1m => vec!["-d".into(), file("zone1m.txt")],
            Self::Steered | Self::SteeredFew | Self::SteeredOne | Self::HotEcs => Vec::new(),
        }
    }
}

/// One measurement of one target under one workload.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Full load: answered queries per second.
    pub qps: f64,
    /// Full load: queries lost.
    pub lost: u64,
    /// Fixed rate: whole-machine busy CPU µs per answered query.
    pub cpu_us: f64,
    /// Fixed rate: average latency, µs.
    pub latency_us: f64,
    /// Fixed rate: queries sent.
    pub fixed_sent: u64,
    /// Fixed rate: queries lost.
    pub fixed_lost: u64,
    /// Fixed rate: ns per packet of the XDP program, if any.
    pub ns_per_packet: Option<f64>,
    /// Fixed rate: ns per packet of the empty XDP program on the client's end of the pair (every
    /// reply passes it): what `bpf_stats` charges a program that does nothing.
    pub empty_ns_per_packet: Option<f64>,
    /// Fixed rate: queries dnsfast's XDP program answered (dnsfast-xdp only).
    pub xdp_answered: Option<u64>,
}

/// Results of a run.
pub struct Report {
    /// The fixed offered rate used.
    pub rate: u64,
    /// Medians per (target, workload).
    pub medians: BTreeMap<(Target, Workload), Sample>,
    /// Lowest and highest CPU µs per query over the rounds, per (target, workload).
    pub cpu_range: BTreeMap<(Target, Workload), (f64, f64)>,
    /// The check pairs: CPU µs per query of dnsfast-xdp and of knot-udp on `hot`, measured one
    /// right after the other.
    pub cpu_pairs: Vec<(f64, f64)>,
    /// Start-to-ready time per target (the big zone included).
    pub load_time: BTreeMap<Target, Duration>,
    /// dnsfast's XDP map memory (bytes, from bpftool), with the big zone loaded.
    pub map_memory: Option<u64>,
    /// dnsfast's answering program: instructions, JIT bytes, verifier-processed instructions
    /// (`dnsfast status`).
    pub program: Option<String>,
    /// Names in the big zone.
    pub big_zone: usize,
    /// The big zone's reference: bytes of dnsfast's `HOT_TABLE`, and ns per dependent random load
    /// over a buffer that size with 4 KiB pages (as BPF array maps are mapped) and 2 MiB pages.
    pub memory: Option<(usize, f64, f64)>,
    /// The open-loop rows (kxdpgun), the median run by replies, per (target, load).
    pub open_loop: BTreeMap<(Target, OpenLoad), crate::kxdpgun::Shot>,
}

/// `kernel.bpf_stats_enabled`, set for the run and restored when dropped.
struct BpfStats {
    before: String,
}

impl BpfStats {
    fn enable() -> Result<Self> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let before = fs::read_to_string(path)?.trim().to_string();
        fs::write(path, "1")?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.before);
    }
}

/// Busy jiffies of the whole machine: what this guest ran (user, nice, system, irq, softirq), not
/// the time the hypervisor gave to others (steal).
fn cpu_jiffies() -> Result<u64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(v.len() >= 8, "unexpected /proc/stat: {line}");
    Ok(v[0] + v[1] + v[2] + v[5] + v[6])
}

/// Clock ticks per second (`USER_HZ`).
fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// What dnsperf reported.
#[derive(Debug, Default)]
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
    qps: f64,
    latency_s: f64,
}

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(str::trim)
}

fn first_number(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

fn dnsperf(server: Ipv4Addr, args: &[String], seconds: u64, rate: Option<u64>) -> Result<Perf> {
    let mut c = Command::new("dnsperf");
    c.args([
        "-s",
        &server.to_string(),
        "-l",
        &seconds.to_string(),
        "-c",
        "8",
        "-T",
        "2",
        "-t",
        "2",
    ]);
    c.args(args);
    if let Some(r) = rate {
        c.args(["-Q", &r.to_string()]);
    }
    let out = c.output().context("run dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "dnsperf failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let num = |k: &str| {
        field(&text, k)
            .and_then(first_number)
            .with_context(|| format!("dnsperf output lacks {k:?}:\n{text}"))
    };
    Ok(Perf {
        sent: num("Queries sent:")? as u64,
        completed: num("Queries completed:")? as u64,
        lost: num("Queries lost:")? as u64,
        qps: num("Queries per second:")?,
        latency_s: num("Average Latency (s):")?,
    })
}

/// `run_time_ns` and `run_cnt` of the XDP program attached to the server's interface.
fn xdp_prog_stats(host: &TestHost) -> Result<Option<(u64, u64)>> {
    prog_stats(Some(&host.netns), &host.ns_if)
}

/// `run_time_ns` and `run_cnt` of the XDP program attached to the client's interface (the pass
/// program, which does nothing).
fn empty_prog_stats(host: &TestHost) -> Result<Option<(u64, u64)>> {
    prog_stats(None, &host.host_if)
}

/// `run_time_ns` and `run_cnt` of the XDP program on `ifname` (in `netns`, if given).
fn prog_stats(netns: Option<&str>, ifname: &str) -> Result<Option<(u64, u64)>> {
    let mut ip = Command::new("ip");
    if let Some(ns) = netns {
        ip.args(["-n", ns]);
    }
    let out = ip.args(["link", "show", "dev", ifname]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(id) = text
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
    else {
        return Ok(None);
    };
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", id])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.split_whitespace()
            .skip_while(|w| *w != k)
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
    };
    // bpftool leaves both out while the program has not run.
    Ok(Some((
        get("run_time_ns").unwrap_or(0),
        get("run_cnt").unwrap_or(0),
    )))
}

/// Average ns per run between two readings of a program's stats.
fn ns_per_run(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    match (before, after) {
        (Some((t0, c0)), Some((t1, c1))) if c1 > c0 => {
            Some(t1.saturating_sub(t0) as f64 / (c1 - c0) as f64)
        }
        _ => None,
    }
}

fn dnsfast_answered(netns: &str) -> Result<u64> {
    let out = Command::new(dnsfast_bin())
        .args(["status", "--netns", netns, "--json"])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("dnsfast status")?;
    // Queries with Client Subnet are answered by the program's ECS stage.
    let counter = |name: &str| {
        v["xdp"]["counters"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
            .and_then(|c| c["value"].as_u64())
            .with_context(|| format!("no {name} counter"))
    };
    Ok(counter("answered")? + counter("answered_ecs")?)
}

/// The bench's files (zones, query lists, server configurations) and the generator's queries.
struct Work {
    dir: PathBuf,
    big: usize,
    /// `steered`'s queries (empty without the GeoIP database).
    steered: Vec<Vec<u8>>,
    /// `steered-few`'s.
    steered_few: Vec<Vec<u8>>,
    /// `steered-one`'s.
    steered_one: Vec<Vec<u8>>,
    /// `hot-ecs`'s.
    hot_ecs: Vec<Vec<u8>>,
}

/// The steered name and the unsteered one of the same length whose answer has the same size
/// (one A or AAAA record, TTL 60), in their own zone (Knot's geoip module is per zone).
const STEER_ZONE: &str = "steer.example";
const STEERED_NAME: &str = "geo.steer.example";
const HOT_ECS_NAME: &str = "api.steer.example";

/// The bench's GeoIP database: the seed's (GeoLite2 country data in the flat `country_code`
/// schema). dnsfast and `ceiling-lpm` read it and the steered workloads' subnets are drawn from
/// its networks; Knot's geoip module reads the same data in MaxMind's schema
/// (`setup::geoip2_path`), where it finds continents.
fn bench_geoip() -> PathBuf {
    crate::setup::geoip_path()
}

fn write_files(dir: &Path, big: usize, server: Ipv4Addr) -> Result<Work> {
    fs::create_dir_all(dir)?;
    let mut zone = String::from(
        "$ORIGIN example.com.\n$TTL 3600\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n  NS ns1\n  NS ns2\n  MX 10 mail\n  TXT \"v=spf1 mx -all\"\n",
    );
    let _ = writeln!(zone, "ns1 A {server}\nns2 A {server}\nmail A 198.18.0.25");
    zone.push_str(
        "www 60 A 198.18.1.1\n  60 A 198.18.1.2\n  60 A 198.18.1.3\n  60 AAAA 2001:2:0:1::1\n  60 AAAA 2001:2:0:1::2\n\
         api 60 A 198.18.2.1\n  60 AAAA 2001:2:0:2::1\n\
         cdn 60 A 198.18.3.1\n  60 A 198.18.3.2\n  60 A 198.18.3.3\n  60 A 198.18.3.4\n  60 A 198.18.3.5\n\
         blog CNAME www\n_sip._udp SRV 10 5 5060 sip\nsip A 198.18.3.9\n",
    );
    fs::write(dir.join("example.com.zone"), zone)?;

    let hot = "www.example.com A\nWWW.Example.COM A\napi.example.com AAAA\nwww.example.com AAAA\ncdn.example.com A\nApi.Example.Com A\nwWw.eXaMpLe.CoM AAAA\nCDN.example.com A\n";
    fs::write(dir.join("hot.txt"), hot)?;
    let mixed = format!(
        "{hot}example.com MX\nexample.com TXT\n_sip._udp.example.com SRV\nblog.example.com A\nnope.example.com A\nexample.com SOA\n"
    );
    fs::write(dir.join("mixed.txt"), mixed)?;
    // The steered workloads' zone: dnsfast steers `geo` (a service); Knot's copy also holds
    // the default records its geoip module needs (`knot_config`).
    let steer = format!(
        "$ORIGIN {STEER_ZONE}.\n$TTL 3600\n@ SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 300\n  NS ns1.example.com.\n\
         api 60 A 198.18.10.1\n  60 AAAA 2001:2:0:10::1\n"
    );
    fs::write(dir.join("steer.example.zone"), &steer)?;
    fs::write(
        dir.join("steered-src.txt"),
        format!("{STEERED_NAME} A\n{STEERED_NAME} AAAA\n"),
    )?;
    fs::write(
        dir.join("steer.example.knot.zone"),
        format!("{steer}geo 60 A 198.18.10.1\n  60 AAAA 2001:2:0:10::1\n"),
    )?;

    // The big zone: `big` names, one A each; addresses cycle through 198.18.0.0/15.
    let mut z = String::with_capacity(big * 32);
    z.push_str("$ORIGIN million.example.\n$TTL 3600\n@ SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 300\n  NS ns1.example.com.\n");
    for i in 0..big {
        let a = 0xC612_0000u32 + (i as u32 % 131_072);
        let _ = writeln!(z, "h{i} A {}", Ipv4Addr::from(a));
    }
    fs::write(dir.join("million.example.zone"), z)?;
    // Names drawn at random (a fixed-seed LCG), as many queries as names.
    let mut q = String::with_capacity(big * 28);
    let mut x: u64 = 12345;
    for _ in 0..big {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let _ = writeln!(q, "h{}.million.example A", (x >> 33) as usize % big);
    }
    fs::write(dir.join("zone1m.txt"), q)?;

    let (steered, steered_few, steered_one, hot_ecs) = if bench_geoip().exists() {
        let nets = crate::queries::Networks::read(&bench_geoip())?;
        let n = if big >= 1_000_000 { 1 << 19 } else { 1 << 17 };
        let steered = crate::queries::uniform(&nets, STEERED_NAME, n, 7);
        let few = crate::queries::zipf(&nets, STEERED_NAME, n, 1000, 11);
        let one = crate::queries::one_each(&nets, STEERED_NAME, n, 13);
        let hot = crate::queries::renamed(&steered, STEERED_NAME, HOT_ECS_NAME);
        let (c4, c6) = nets.counts();
        println!(
            "bench: {n} queries a steered workload, subnets drawn from {c4} IPv4 and {c6} IPv6 \
             networks of {}",
            bench_geoip().display()
        );
        (steered, few, one, hot)
    } else {
        (Vec::new(), Vec::new(), Vec::new(), Vec::new())
    };
    Ok(Work {
        dir: dir.to_path_buf(),
        big,
        steered,
        steered_few,
        steered_one,
        hot_ecs,
    })
}

/// `xdp.max_hot_names` for a big zone of `big` names.
fn hot_names(big: usize) -> usize {
    (big + 1024).next_power_of_two()
}

/// Bytes of one `HOT_TABLE` bucket.
const HOT_BUCKET_BYTES: usize = 64;

/// Bytes of `HOT_TABLE` for a big zone of `big` names (twice the names in buckets, a power of
/// two: `mapsync::Capacity::buckets`).
fn hot_table_bytes(big: usize) -> usize {
    (2 * hot_names(big)).next_power_of_two() * HOT_BUCKET_BYTES
}

/// The seed's steering (examples/seed/: three regions of five dual-stack endpoints, weight 20,
/// one address an answer) for the steered name, over the bench's GeoIP database (by continent).
fn steering_config() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "[geoip]\ndatabase = \"{}\"\n[steering]\ndefault_region = \"us\"",
        bench_geoip().display()
    );
    for ((name, rule), subnet) in REGIONS.iter().zip(STEERED_SRC_SUBNETS) {
        let list: Vec<String> = rule.iter().map(|c| format!("\"{c}\"")).collect();
        let _ = writeln!(
            s,
            "[[region]]\nname = \"{name}\"\ncontinents = [{}]\nsubnets = [\"{subnet}\"]",
            list.join(", ")
        );
    }
    for (n, (region, _)) in REGIONS.iter().enumerate() {
        for i in 1..=5 {
            let _ = writeln!(
                s,
                "[[endpoint]]\nname = \"{region}-{i}\"\nipv4 = \"198.18.{}0.{i}\"\nipv6 = \"2001:2:0:{}0::{i}\"",
                n + 1,
                n + 1
            );
        }
    }
    let _ = writeln!(s, "[[service]]\nname = \"{STEERED_NAME}\"\nttl = 60");
    for (region, _) in REGIONS {
        let eps: Vec<String> = (1..=5)
            .map(|i| format!("{{ endpoint = \"{region}-{i}\", weight = 20 }}"))
            .collect();
        let _ = writeln!(
            s,
            "[[service.pool]]\nregion = \"{region}\"\nendpoints = [{}]",
            eps.join(", ")
        );
    }
    s
}

/// The seed's regions and their continents (the first is the default region).
const REGIONS: [(&str, [&str; 2]); 3] = [
    ("us", ["NA", "SA"]),
    ("eu", ["EU", "AF"]),
    ("apac", ["AS", "OC"]),
];

/// A configuration holding only the steered zone and the steering: what `ceiling-lpm` reads
/// to build the region map whose blocks its trie holds.
fn lpm_config(w: &Work) -> Result<PathBuf> {
    let p = w.dir.join("lpm.toml");
    fs::write(
        &p,
        format!(
            "instance = \"bench-lpm\"\n[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"{STEER_ZONE}.\"\nfile = \"steer.example.zone\"\n{}",
            steering_config()
        ),
    )?;
    Ok(p)
}

fn dnsfast_config(w: &Work, host: &TestHost, xdp: bool) -> Result<PathBuf> {
    let names = hot_names(w.big);
    let cfg = format!(
        "instance = \"bench\"\n[server]\nlisten = [\"{}:53\"]\n[xdp]\nmode = \"{}\"\ninterface = \"{}\"\nmax_hot_names = {names}\nmax_answers = {}\n\
         [[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n[[zone]]\norigin = \"million.example.\"\nfile = \"million.example.zone\"\n\
         [[zone]]\norigin = \"{STEER_ZONE}.\"\nfile = \"steer.example.zone\"\n{}",
        host.v4,
        if xdp { "native" } else { "off" },
        host.ns_if,
        names + names / 2,
        steering_config(),
    );
    let p = w.dir.join(if xdp {
        "dnsfast-xdp.toml"
    } else {
        "dnsfast-user.toml"
    });
    fs::write(&p, cfg)?;
    Ok(p)
}

fn knot_config(w: &Work, host: &TestHost, xdp: bool) -> Result<PathBuf> {
    let d = w.dir.join(if xdp { "knot-xdp" } else { "knot-udp" });
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("run"))?;
    fs::create_dir_all(d.join("db"))?;
    let xdp_section = if xdp {
        format!("xdp:\n    listen: {}\n    udp: on\n", host.ns_if)
    } else {
        String::new()
    };
    // The steered name through the geoip module on the same regions: the database's continent
    // decides (the Client Subnet's address when the query has one), one address a family and
    // region as dnsfast answers (the module has no weighted draw in geodb mode).
    let mut geo = format!("{STEERED_NAME}:\n");
    for (n, (_, continents)) in REGIONS.iter().enumerate() {
        for c in continents {
            let _ = writeln!(
                geo,
                "  - geo: \"{c}\"\n    A: 198.18.{0}0.1\n    AAAA: 2001:2:0:{0}0::1",
                n + 1
            );
        }
    }
    let geo_conf = d.join("geo.conf");
    fs::write(&geo_conf, geo)?;
    let cfg = format!(
        "server:\n    rundir: {run}\n    listen: {addr}@53\n    udp-workers: 2\n    tcp-workers: 1\n    background-workers: 1\n    edns-client-subnet: on\n\
         {xdp_section}database:\n    storage: {db}\n\
         mod-geoip:\n  - id: seed\n    config-file: {geo_conf}\n    ttl: 60\n    mode: geodb\n    geodb-file: {geodb}\n    geodb-key: [ continent/code ]\n\
         template:\n  - id: default\n    storage: {zones}\n    semantic-checks: off\n    journal-content: none\n    zonefile-sync: -1\n\
         zone:\n  - domain: example.com\n    file: example.com.zone\n  - domain: million.example\n    file: million.example.zone\n\
         \x20 - domain: {STEER_ZONE}\n    file: steer.example.knot.zone\n    module: mod-geoip/seed\n\
         log:\n  - target: stderr\n    any: warning\n",
        run = d.join("run").display(),
        addr = host.v4,
        db = d.join("db").display(),
        zones = w.dir.display(),
        geo_conf = geo_conf.display(),
        geodb = crate::setup::geoip2_path().display(),
    );
    let p = d.join("knot.conf");
    fs::write(&p, cfg)?;
    Ok(p)
}

fn nsd_config(w: &Work, host: &TestHost) -> Result<PathBuf> {
    let d = w.dir.join("nsd");
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d)?;
    let cfg = format!(
        "server:\n    ip-address: {addr}\n    port: 53\n    server-count: 2\n    username: \"\"\n    zonesdir: \"{zones}\"\n\
         pidfile: \"{d}/nsd.pid\"\n    database: \"\"\n    xfrdfile: \"{d}/xfrd.state\"\n    zonelistfile: \"{d}/zone.list\"\n\
         logfile: \"{d}/nsd.log\"\n    rrl-ratelimit: 0\n    verbosity: 1\n    do-ip6: no\n\
         remote-control:\n    control-enable: no\n\
         zone:\n    name: example.com\n    zonefile: example.com.zone\n\
         zone:\n    name: million.example\n    zonefile: million.example.zone\n",
        addr = host.v4,
        zones = w.dir.display(),
        d = d.display(),
    );
    let p = d.join("nsd.conf");
    fs::write(&p, cfg)?;
    Ok(p)
}

/// Waits until `server` answers the SOA of both zones (the big one loads last).
fn wait_for_zones(server: Ipv4Addr, deadline: Duration) -> Result<()> {
    let end = Instant::now() + deadline;
    for zone in ["example.com.", "million.example."] {
        loop {
            let q = dns::query(7, zone, RecordType::SOA, None);
            if let Ok(r) = dns::udp_exchange((server, 53).into(), &q, Duration::from_millis(200))
                && dns::rcode(&r).is_ok_and(|rc| rc == 0)
                && r[7] > 0
            {
                break;
            }
            ensure!(
                Instant::now() < end,
                "{zone} not served within {deadline:?}"
            );
        }
    }
    Ok(())
}

fn start(target: Target, w: &Work, host: &TestHost) -> Result<Service> {
    start_bin(target, w, host, &dnsfast_bin())
}

/// Starts `target`, with `bin` as dnsfast's binary.
fn start_bin(target: Target, w: &Work, host: &TestHost, bin: &Path) -> Result<Service> {
    let deadline = Duration::from_mins(10);
    // Knot's XDP mode attaches through netlink and may leave its program on the interface when
    // it stops; the next XDP target could not attach (EBUSY). Ours are links, gone with their
    // process, so this clears only what another server left.
    let _ = Command::new("ip")
        .args([
            "-n",
            &host.netns,
            "link",
            "set",
            "dev",
            &host.ns_if,
            "xdp",
            "off",
        ])
        .status();
    let netns_exec = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.netns]).args(args);
        c
    };
    let svc = match target {
        Target::Ceiling
        | Target::CeilingGrow
        | Target::CeilingMiss
        | Target::CeilingLpm
        | Target::CeilingGeoMiss => {
            let mut c = Command::new(bin);
            c.args([
                "reflect",
                "--interface",
                &host.ns_if,
                "--netns",
                &host.netns,
            ]);
            match target {
                Target::CeilingGrow => {
                    c.arg("--grow");
                }
                Target::CeilingMiss => {
                    c.arg("--miss-table")
                        .arg((hot_table_bytes(w.big) / HOT_BUCKET_BYTES).to_string());
                }
                Target::CeilingLpm => {
                    c.arg("--lpm").arg(lpm_config(w)?);
                }
                Target::CeilingGeoMiss => {
                    c.arg("--geo-miss");
                }
                _ => {}
            }
            return Service::start(target.name(), c, deadline);
        }
        Target::DnsfastXdp | Target::DnsfastUser => {
            let cfg = dnsfast_config(w, host, target == Target::DnsfastXdp)?;
            let mut c = Command::new(bin);
            c.arg("run")
                .arg("--config")
                .arg(cfg)
                .args(["--netns", &host.netns]);
            c.env("DNSFAST_LOG", "warn");
            Service::start(target.name(), c, deadline)?
        }
        Target::KnotUdp | Target::KnotXdp => {
            let cfg = knot_config(w, host, target == Target::KnotXdp)?;
            Service::start(
                target.name(),
                netns_exec(&["knotd", "-c", &cfg.display().to_string()]),
                deadline,
            )?
        }
        Target::Nsd => {
            let cfg = nsd_config(w, host)?;
            Service::start(
                "nsd",
                netns_exec(&["nsd", "-d", "-c", &cfg.display().to_string()]),
                deadline,
            )?
        }
    };
    wait_for_zones(host.v4, deadline)?;
    Ok(svc)
}

/// Median of `xs` (sorted copy).
fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        f64::midpoint(xs[n / 2 - 1], xs[n / 2])
    }
}

/// Generator threads and the queries each keeps outstanding (dnsperf's `-T 2`, and its default
/// 100 outstanding in all, rounded up to a power of two per thread).
const GEN_THREADS: usize = 2;
const GEN_WINDOW: usize = 64;

/// One run of `workload`'s load for `secs` (at `rate` if given): dnsperf, or the bench's
/// generator for the workloads with a Client Subnet per query.
fn drive(
    workload: Workload,
    w: &Work,
    host: &TestHost,
    secs: u64,
    rate: Option<u64>,
) -> Result<Perf> {
    match workload.queries(w) {
        Some(queries) => {
            let l = crate::loadgen::run(
                (host.v4, 53).into(),
                queries,
                secs as f64,
                rate,
                GEN_THREADS,
                GEN_WINDOW,
            )?;
            Ok(Perf {
                sent: l.sent,
                completed: l.completed,
                lost: l.lost,
                qps: l.qps(),
                latency_s: l.latency_s(),
            })
        }
        None => dnsperf(host.v4, &workload.dnsperf_args(&w.dir), secs, rate),
    }
}

fn measure(
    target: Target,
    workload: Workload,
    w: &Work,
    host: &TestHost,
    rate: u64,
    secs: (u64, u64),
) -> Result<Sample> {
    let full = drive(workload, w, host, secs.0, None)?;
    let answered_before = if target == Target::DnsfastXdp {
        Some(dnsfast_answered(&host.netns)?)
    } else {
        None
    };
    let prog_before = xdp_prog_stats(host)?;
    let empty_before = empty_prog_stats(host)?;
    let busy0 = cpu_jiffies()?;
    let fixed = drive(workload, w, host, secs.1, Some(rate))?;
    let busy1 = cpu_jiffies()?;
    let prog_after = xdp_prog_stats(host)?;
    let empty_after = empty_prog_stats(host)?;
    let busy_s = (busy1 - busy0) as f64 / user_hz();
    let ns_per_packet = if target.xdp() {
        ns_per_run(prog_before, prog_after)
    } else {
        None
    };
    let xdp_answered = match answered_before {
        Some(a) => Some(dnsfast_answered(&host.netns)? - a),
        None => None,
    };
    Ok(Sample {
        qps: full.qps,
        lost: full.lost,
        cpu_us: if fixed.completed > 0 {
            busy_s * 1e6 / fixed.completed as f64
        } else {
            f64::NAN
        },
        latency_us: fixed.latency_s * 1e6,
        fixed_sent: fixed.sent,
        fixed_lost: fixed.lost,
        ns_per_packet,
        empty_ns_per_packet: ns_per_run(empty_before, empty_after),
        xdp_answered,
    })
}

/// Seconds of a full-load and of a fixed-rate dnsperf run.
fn durations(quick: bool) -> (u64, u64) {
    if quick { (3, 4) } else { (8, 8) }
}

/// The bench's test host with the pass program on its client's end, its files (a big zone of
/// `big` names) and `bpf_stats` on; undone when dropped, `bpf_stats` first.
struct Rig {
    _stats: BpfStats,
    /// The pass program; off while kxdpgun has the interface.
    pass: std::cell::RefCell<Option<Service>>,
    work: Work,
    host: TestHost,
    /// The MAC address of the server's end (kxdpgun's `-R`).
    server_mac: String,
}

/// Attaches the pass program to the client's end of the bench's test host.
fn start_pass(host: &TestHost) -> Result<Service> {
    let mut pass = Command::new(dnsfast_bin());
    pass.args(["pass", "--interface", &host.host_if]);
    Service::start("pass program", pass, Duration::from_secs(30))
}

impl Rig {
    fn new(big: usize) -> Result<Self> {
        let host = TestHost::with_names(SUBNET, NETNS, "dnsb-cli", "dnsb-srv")
            .context("create the bench test host")?;
        let pass = start_pass(&host)?;
        let work = write_files(&root().join("target/bench/work"), big, host.v4)?;
        let out = Command::new("ip")
            .args(["-n", &host.netns, "-br", "link", "show", "dev", &host.ns_if])
            .output()?;
        let server_mac = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .context("the server end's MAC address")?
            .to_string();
        Ok(Self {
            _stats: BpfStats::enable()?,
            pass: std::cell::RefCell::new(Some(pass)),
            work,
            host,
            server_mac,
        })
    }

    /// Sets threaded NAPI on the server's end (`/sys/class/net/<if>/threaded`): its receive
    /// work, the server's XDP program with it, then runs in a kernel thread the scheduler
    /// places on the other core instead of in the sender's softirq.
    fn threaded(&self, on: bool) -> Result<()> {
        let path = format!("/sys/class/net/{}/threaded", self.host.ns_if);
        let ok = Command::new("ip")
            .args(["netns", "exec", &self.host.netns, "sh", "-c"])
            .arg(format!("echo {} > {path}", u8::from(on)))
            .status()?
            .success();
        ensure!(
            ok,
            "could not write {} to {path} in {}",
            u8::from(on),
            self.host.netns
        );
        Ok(())
    }

    /// One kxdpgun run of `load` against whatever serves now: the pass program is taken off the
    /// client's end for it (kxdpgun brings its own) and put back after, also when it fails.
    fn kxdpgun(&self, load: OpenLoad, secs: u64) -> Result<crate::kxdpgun::Shot> {
        if load.own_core() {
            self.threaded(true)?;
        }
        drop(self.pass.borrow_mut().take());
        let shot = crate::kxdpgun::run(
            &self.host.host_if,
            self.host.v4,
            &self.server_mac,
            &self.work.dir.join(load.file()),
            KXDPGUN_RATE,
            secs,
            load.local(),
        );
        *self.pass.borrow_mut() = Some(start_pass(&self.host)?);
        if load.own_core() {
            self.threaded(false)?;
        }
        shot
    }
}

/// The rate kxdpgun is asked for: more than it sends here (300–400k q/s on the ceiling when
/// the server's work shares its core, 0.55–1.15M when it does not, in this machine's runs), so
/// that it offers what it can.
const KXDPGUN_RATE: u64 = 2_000_000;

/// A workload of the open-loop rows (kxdpgun): a query file (`name TYPE` lines, dnsperf's
/// format) and, for `steered-src`, source addresses spread over the regions' test subnets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpenLoad {
    /// `hot`'s queries. On the veth test host the server's XDP program runs in the softirq of
    /// the sender's own transmit, on the generator's core: a reply costs the generator's work
    /// plus the server's, and the ratio to the ceiling is (G + ceiling) / (G + server).
    Hot,
    /// `hot`'s queries with threaded NAPI on the server's end: the server's work on the other
    /// core, the generator sending faster than the ceiling answers, so what each target answers
    /// is its own capacity (and what it cannot take is lost at the veth queue).
    HotOwnCore,
    /// `mixed`'s.
    Mixed,
    /// `zone-1m`'s.
    Zone1m,
    /// A/AAAA of the steered name, the source address deciding the region: kxdpgun walks
    /// [`STEERED_SRC_PREFIX`], whose addresses the bench's regions split by explicit subnets.
    SteeredSrc,
}

/// What `steered-src` spreads its sources over, and the regions' subnets in it (us, eu, apac).
const STEERED_SRC_PREFIX: &str = "198.18.244.0/28";
const STEERED_SRC_SUBNETS: [&str; 3] = ["198.18.244.0/30", "198.18.244.4/30", "198.18.244.8/29"];

impl OpenLoad {
    const ALL: [Self; 5] = [
        Self::Hot,
        Self::HotOwnCore,
        Self::Mixed,
        Self::Zone1m,
        Self::SteeredSrc,
    ];

    /// Name (`--workloads`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hot => "open-hot",
            Self::HotOwnCore => "open-hot-own-core",
            Self::Mixed => "open-mixed",
            Self::Zone1m => "open-zone-1m",
            Self::SteeredSrc => "steered-src",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Self::Hot | Self::HotOwnCore => "hot.txt",
            Self::Mixed => "mixed.txt",
            Self::Zone1m => "zone1m.txt",
            Self::SteeredSrc => "steered-src.txt",
        }
    }

    fn local(self) -> Option<&'static str> {
        (self == Self::SteeredSrc).then_some(STEERED_SRC_PREFIX)
    }

    fn own_core(self) -> bool {
        self == Self::HotOwnCore
    }

    /// Whether `t` runs it. `ceiling-grow` (the frame growth every answer with a record costs,
    /// nothing else) runs the `hot` loads as a second reference. Threaded NAPI needs the
    /// server's end to have an XDP program: `open-hot-own-core` runs only the XDP targets.
    /// Replies to `steered-src`'s spread sources have no route in the test host: only XDP
    /// answers reach the generator, and Knot's module places by continent. `quick`: the
    /// ceilings and dnsfast with XDP on the `hot` loads and `steered-src`.
    fn runs(self, t: Target, quick: bool) -> bool {
        let xdp = matches!(
            t,
            Target::Ceiling | Target::CeilingGrow | Target::DnsfastXdp
        );
        match self {
            Self::SteeredSrc => matches!(t, Target::Ceiling | Target::DnsfastXdp),
            Self::Hot | Self::HotOwnCore if quick => xdp,
            Self::HotOwnCore => xdp || t == Target::KnotXdp,
            _ if quick => false,
            Self::Hot | Self::Mixed | Self::Zone1m => {
                (xdp && (self == Self::Hot || t != Target::CeilingGrow))
                    || matches!(
                        t,
                        Target::DnsfastUser | Target::KnotUdp | Target::KnotXdp | Target::Nsd
                    )
            }
        }
    }
}

/// The fixed offered rate: 30% of what the ceiling answers on `hot` (a rate every target
/// sustains), rounded down to a thousand.
fn fixed_rate(work: &Work, host: &TestHost, secs: u64) -> Result<u64> {
    let svc = start(Target::Ceiling, work, host)?;
    let p = dnsperf(host.v4, &Workload::Hot.dnsperf_args(&work.dir), secs, None)?;
    drop(svc);
    Ok(((p.qps * 0.3) as u64 / 1000).max(1) * 1000)
}

/// What the profiling build for each stage of dnsfast's XDP program stops after
/// (`dnsfast-ebpf/src/stage.rs`), and the normal build last.
const STAGES: [&str; 8] = [
    "Ethernet, IP and UDP headers checked, configuration read",
    "DNS message copied into scratch memory",
    "query validated (header, name, question, EDNS and its options)",
    "lookup key built (name lowercased)",
    "hot-name table probed",
    "answer planned (sizes checked)",
    "answer written in scratch memory, headers saved",
    "the whole program: frame grown, answer copied into it with its checksum, headers rewritten",
];

/// `cargo xtask bench --stages`: ns per packet of dnsfast's XDP program stopping after each of
/// its stages, on `hot` at the fixed rate, one build per stage, interleaved rounds, medians; the
/// ceiling and the empty program in the same rounds. Writes `target/bench/stages.md`.
pub fn stages(rounds: usize, quick: bool) -> Result<()> {
    crate::setup::ensure_bench()?;
    let dir = root().join("target/bench/stages");
    fs::create_dir_all(&dir)?;
    let mut bins = Vec::new();
    for n in 1..STAGES.len() {
        println!("bench --stages: building the program that stops after stage {n}");
        crate::sh(
            crate::cargo()
                .args(["build", "--release", "--quiet", "--package", "dnsfast"])
                .env("DNSFAST_STAGE", n.to_string()),
        )?;
        let bin = dir.join(format!("dnsfast-stage{n}"));
        fs::copy(dnsfast_bin(), &bin).with_context(|| format!("copy to {}", bin.display()))?;
        bins.push(bin);
    }
    // The normal build last, so that target/release holds it again.
    crate::build_release()?;
    bins.push(dnsfast_bin());

    let secs = durations(quick);
    let rig = Rig::new(1000)?;
    let Rig { work, host, .. } = &rig;
    let rate = fixed_rate(work, host, secs.0)?;
    println!("bench --stages: fixed offered rate {rate} q/s (30% of the ceiling's hot rate)");
    let args = Workload::Hot.dnsperf_args(&work.dir);
    // One fixed-rate run: ns per packet of the program on the server's end and of the empty one.
    let sample = |svc: Service| -> Result<(f64, Option<f64>)> {
        let (p0, e0) = (xdp_prog_stats(host)?, empty_prog_stats(host)?);
        dnsperf(host.v4, &args, secs.1, Some(rate))?;
        let (p1, e1) = (xdp_prog_stats(host)?, empty_prog_stats(host)?);
        drop(svc);
        let ns = ns_per_run(p0, p1)
            .with_context(|| format!("no bpf_stats for the program: {p0:?} then {p1:?}"))?;
        Ok((ns, ns_per_run(e0, e1)))
    };
    let mut ceiling = Vec::new();
    let mut empty = Vec::new();
    let mut per_stage = vec![Vec::new(); bins.len()];
    for round in 0..rounds.max(1) {
        let (ns, e) = sample(start(Target::Ceiling, work, host)?)?;
        println!("  round {} ceiling  {ns:.0} ns/pkt", round + 1);
        ceiling.push(ns);
        empty.extend(e);
        for (i, bin) in bins.iter().enumerate() {
            let svc = start_bin(Target::DnsfastXdp, work, host, bin)
                .with_context(|| format!("start {}", bin.display()))?;
            let (ns, e) = sample(svc)?;
            println!("  round {} stage {}  {ns:.0} ns/pkt", round + 1, i + 1);
            per_stage[i].push(ns);
            empty.extend(e);
        }
    }
    let ceiling = median(ceiling);
    let mut md = format!(
        "`cargo xtask bench --stages`: dnsfast's XDP program built to stop after each stage, `hot` \
         at {rate} q/s, {} round(s), medians of bpf_stats ns per packet. The ceiling: {ceiling:.0} \
         ns; the empty program on the client's end: {:.0} ns.\n\n\
         | stage | stops after | ns/packet | added |\n|---:|---|---:|---:|\n",
        rounds.max(1),
        median(empty),
    );
    let mut prev = ceiling;
    for (i, xs) in per_stage.into_iter().enumerate() {
        let ns = median(xs);
        let _ = writeln!(
            md,
            "| {} | {} | {ns:.0} | {:+.0} |",
            i + 1,
            STAGES[i],
            ns - prev
        );
        prev = ns;
    }
    md.push_str(
        "\nStage 1 adds to the ceiling. Stages 1 to 7 pass the query up and the daemon answers it; \
         no build stops after growing the frame (it could neither pass the query up nor answer \
         it, and such builds measured more than the whole program: see \
         `dnsfast-ebpf/src/stage.rs`), so stage 8 adds the growth, the copy, the checksum and \
         the headers together. `ceiling-grow` minus the ceiling in `cargo xtask \
         bench` is what the growth alone costs.\n",
    );
    let out = root().join("target/bench/stages.md");
    fs::write(&out, &md)?;
    println!("\n{md}\nwritten: {}", out.display());
    Ok(())
}

/// Runs the benchmark.
pub fn run(opts: &Opts) -> Result<Report> {
    crate::setup::ensure_bench()?;
    crate::build_release()?;
    let big = if opts.quick { 100_000 } else { 1_000_000 };
    let secs = durations(opts.quick);
    let targets: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|t| opts.only.is_empty() || opts.only.iter().any(|o| o == t.name()))
        .collect();
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| opts.workloads.is_empty() || opts.workloads.iter().any(|o| o == w.name()))
        .collect();
    let open_loads: Vec<OpenLoad> = OpenLoad::ALL
        .into_iter()
        .filter(|w| opts.workloads.is_empty() || opts.workloads.iter().any(|o| o == w.name()))
        .collect();
    ensure!(
        !targets.is_empty() && (!workloads.is_empty() || !open_loads.is_empty()),
        "nothing selected to run"
    );

    let rig = Rig::new(big)?;
    let Rig { work, host, .. } = &rig;
    let workloads: Vec<Workload> = workloads
        .into_iter()
        .filter(|wl| {
            let none = wl.queries(work).is_some_and(<[_]>::is_empty);
            if none {
                println!(
                    "bench: no GeoIP database at {} (cargo xtask setup fetches it): {} left out",
                    bench_geoip().display(),
                    wl.name()
                );
            }
            !none
        })
        .collect();
    let rate = if targets.contains(&Target::Ceiling) {
        fixed_rate(work, host, secs.0)?
    } else {
        50_000
    };
    println!("bench: fixed offered rate {rate} q/s (30% of the ceiling's hot rate)");

    let mut samples: BTreeMap<(Target, Workload), Vec<Sample>> = BTreeMap::new();
    let mut load_time = BTreeMap::new();
    let mut map_memory = None;
    let mut program = None;
    let mut shots: BTreeMap<(Target, OpenLoad), Vec<crate::kxdpgun::Shot>> = BTreeMap::new();
    for round in 0..opts.rounds.max(1) {
        for &t in &targets {
            let t0 = Instant::now();
            let mut svc = start(t, work, host).with_context(|| format!("start {}", t.name()))?;
            load_time.entry(t).or_insert_with(|| t0.elapsed());
            if t == Target::DnsfastXdp && map_memory.is_none() {
                map_memory = dnsfast_map_memory(&host.netns).ok();
                program = dnsfast_program(&host.netns).ok();
            }
            for &wl in workloads.iter().filter(|wl| t.runs(**wl)) {
                let s = measure(t, wl, work, host, rate, secs)
                    .with_context(|| format!("{} / {}", t.name(), wl.name()))?;
                println!(
                    "  round {} {:<13} {:<14} {:>9.0} q/s  lost {:<6} cpu {:>6.2} µs/q  lat {:>7.1} µs{}",
                    round + 1,
                    t.name(),
                    wl.name(),
                    s.qps,
                    s.lost,
                    s.cpu_us,
                    s.latency_us,
                    s.ns_per_packet
                        .map(|n| format!("  {n:.0} ns/pkt"))
                        .unwrap_or_default()
                );
                samples.entry((t, wl)).or_default().push(s);
            }
            for &load in open_loads.iter().filter(|l| l.runs(t, opts.quick)) {
                let shot = rig
                    .kxdpgun(load, secs.0)
                    .with_context(|| format!("{} / {} (kxdpgun)", t.name(), load.name()))?;
                println!(
                    "  round {} {:<13} {:<17} kxdpgun offered {:>9.0} q/s, answered {:>9.0} q/s, lost {}",
                    round + 1,
                    t.name(),
                    load.name(),
                    shot.offered(),
                    shot.answered(),
                    shot.lost()
                );
                shots.entry((t, load)).or_default().push(shot);
            }
            let _ = svc.stop();
        }
    }
    // The pairs `check` compares, each two samples back to back, the order alternating.
    let mut cpu_pairs = Vec::new();
    let pair = [Target::DnsfastXdp, Target::KnotUdp];
    if pair.iter().all(|t| targets.contains(t)) && workloads.contains(&Workload::Hot) {
        for i in 0..opts.check_pairs {
            let order = if i % 2 == 0 { pair } else { [pair[1], pair[0]] };
            let mut cpu = [0.0; 2];
            for t in order {
                let mut svc =
                    start(t, work, host).with_context(|| format!("start {}", t.name()))?;
                let s = measure(t, Workload::Hot, work, host, rate, secs)
                    .with_context(|| format!("{} / hot", t.name()))?;
                let _ = svc.stop();
                println!(
                    "  check pair {} {:<13} hot  cpu {:>6.2} µs/q at {rate} q/s",
                    i + 1,
                    t.name(),
                    s.cpu_us
                );
                cpu[usize::from(t == Target::KnotUdp)] = s.cpu_us;
                samples.entry((t, Workload::Hot)).or_default().push(s);
            }
            cpu_pairs.push((cpu[0], cpu[1]));
        }
    }
    let cpu_range = samples
        .iter()
        .map(|(k, v)| {
            let lo = v.iter().map(|s| s.cpu_us).fold(f64::INFINITY, f64::min);
            let hi = v.iter().map(|s| s.cpu_us).fold(f64::NEG_INFINITY, f64::max);
            (*k, (lo, hi))
        })
        .collect();
    let medians = samples
        .into_iter()
        .map(|(k, v)| {
            let m = |f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
            let opt = |f: fn(&Sample) -> Option<f64>| {
                let xs: Vec<f64> = v.iter().filter_map(f).collect();
                (!xs.is_empty()).then(|| median(xs))
            };
            let last = v.last().cloned().unwrap_or_default();
            (
                k,
                Sample {
                    qps: m(|s| s.qps),
                    lost: last.lost,
                    cpu_us: m(|s| s.cpu_us),
                    latency_us: m(|s| s.latency_us),
                    fixed_sent: last.fixed_sent,
                    fixed_lost: v.iter().map(|s| s.fixed_lost).max().unwrap_or(0),
                    ns_per_packet: opt(|s| s.ns_per_packet),
                    empty_ns_per_packet: opt(|s| s.empty_ns_per_packet),
                    xdp_answered: last.xdp_answered,
                },
            )
        })
        .collect();
    let memory = if workloads.contains(&Workload::Zone1m) && targets.contains(&Target::DnsfastXdp) {
        let table = hot_table_bytes(work.big);
        let loads = if opts.quick { 500_000 } else { 2_000_000 };
        let small = crate::memprobe::random_load_ns(table, false, loads)?;
        let huge = crate::memprobe::random_load_ns(table, true, loads)?;
        Some((table, small, huge))
    } else {
        None
    };
    let open_loop = shots
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|s| s.replies);
            (k, v[v.len() / 2])
        })
        .collect();
    let report = Report {
        open_loop,
        rate,
        medians,
        cpu_range,
        cpu_pairs,
        load_time,
        map_memory,
        program,
        big_zone: work.big,
        memory,
    };
    write_report(&report, &root().join("target/bench"))?;
    Ok(report)
}

/// The answering program's size as `dnsfast status` reports it.
fn dnsfast_program(netns: &str) -> Result<String> {
    let out = Command::new(dnsfast_bin())
        .args(["status", "--netns", netns, "--json"])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let p = &v["xdp"]["program"];
    Ok(format!(
        "{} instructions, {} bytes JIT-compiled, {} instructions processed by the verifier (limit 1,000,000)",
        p["instructions"].as_u64().context("program size")?,
        p["jited_bytes"].as_u64().unwrap_or(0),
        p["verifier_processed"].as_u64().unwrap_or(0)
    ))
}

/// Sum of memlock of dnsfast's pinned maps.
fn dnsfast_map_memory(netns: &str) -> Result<u64> {
    let out = Command::new(dnsfast_bin())
        .args(["status", "--netns", netns, "--json"])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let dir = v["xdp"]["pin_dir"].as_str().context("pin dir")?.to_string();
    let mut total = 0;
    for entry in fs::read_dir(&dir)? {
        let p = entry?.path();
        let out = Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(&p)
            .output()?;
        if let Ok(j) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            total += j["bytes_memlock"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 && a.is_finite() => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// Writes `results.md`, `results.csv` and `chart.svg` under `dir` and prints the table.
fn write_report(r: &Report, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let mut md = String::new();
    let mut csv = String::from(
        "workload,target,qps,lost,qps_vs_ceiling,qps_vs_knot_udp,cpu_us_per_query,cpu_minus_ceiling_us,cpu_vs_knot_udp,latency_us,fixed_lost,ns_per_packet,ns_vs_ceiling,empty_prog_ns_per_packet\n",
    );
    let _ = writeln!(
        md,
        "Fixed rate for CPU, latency and ns/packet: {} q/s. Ratios are to the ceiling and to Knot (kernel UDP) in the same run.\n",
        r.rate
    );
    let _ = writeln!(
        md,
        "| workload | target | q/s | lost | ×ceiling | ×knot-udp | CPU µs/q | −ceiling µs | ×knot-udp | latency µs | ns/packet | ×ceiling |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let workloads: Vec<Workload> = {
        let mut w: Vec<Workload> = r.medians.keys().map(|k| k.1).collect();
        w.dedup();
        w.sort();
        w.dedup();
        w
    };
    for wl in workloads {
        let get = |t: Target| r.medians.get(&(t, wl));
        let ceil = get(Target::Ceiling);
        let knot = get(Target::KnotUdp);
        for t in Target::ALL {
            let Some(s) = get(t) else { continue };
            let ns = s.ns_per_packet.map_or("-".into(), |n| format!("{n:.0}"));
            let cpu_minus = ceil.map_or("-".into(), |c| format!("{:+.2}", s.cpu_us - c.cpu_us));
            let row = [
                wl.name().to_string(),
                t.name().to_string(),
                format!("{:.0}", s.qps),
                s.lost.to_string(),
                ratio(s.qps, ceil.map(|c| c.qps)),
                ratio(s.qps, knot.map(|c| c.qps)),
                format!("{:.2}", s.cpu_us),
                cpu_minus,
                ratio(s.cpu_us, knot.map(|c| c.cpu_us)),
                format!("{:.1}", s.latency_us),
                ns.clone(),
                s.ns_per_packet
                    .map_or("-".into(), |n| ratio(n, ceil.and_then(|c| c.ns_per_packet))),
            ];
            let _ = writeln!(md, "| {} |", row.join(" | "));
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[6],
                row[7],
                row[8],
                row[9],
                s.fixed_lost,
                row[10],
                row[11],
                s.empty_ns_per_packet
                    .map_or("-".into(), |n| format!("{n:.0}"))
            );
        }
    }
    let _ = writeln!(md);
    for (t, d) in &r.load_time {
        let _ = writeln!(
            md,
            "- {} start to serving both zones ({} names in the big one): {:.1} s",
            t.name(),
            r.big_zone,
            d.as_secs_f64()
        );
    }
    for ((t, wl), s) in &r.medians {
        if let (Target::DnsfastXdp, Some(a)) = (t, s.xdp_answered) {
            let _ = writeln!(
                md,
                "- dnsfast-xdp / {}: the XDP program answered {a} of the {} queries sent at the fixed rate",
                wl.name(),
                s.fixed_sent
            );
        }
    }
    // ns per packet of target `t` on `wl`, if measured.
    let ns_of = |t, wl| {
        r.medians
            .get(&(t, wl))
            .and_then(|s: &Sample| s.ns_per_packet)
    };
    for ((t, wl), s) in &r.medians {
        let (Target::DnsfastXdp, Some(ns), Some(c)) =
            (t, s.ns_per_packet, ns_of(Target::Ceiling, *wl))
        else {
            continue;
        };
        if s.xdp_answered != Some(s.fixed_sent) {
            // Part of the load went to the daemon: the program is not the whole difference.
            continue;
        }
        let spread = match r.cpu_range.get(&(Target::Ceiling, *wl)) {
            Some((lo, hi)) if hi > lo => format!(
                "; the whole-machine figure, mostly the load generator's own, ranged {lo:.2}–{hi:.2} \
                 µs/q over the rounds for the ceiling alone"
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "- dnsfast-xdp / {}: its XDP program costs {:+.2} µs per query more than the ceiling's \
             (bpf_stats: the CPU difference that is the program's){spread}",
            wl.name(),
            (ns - c) / 1000.0
        );
    }
    for ((t, wl), s) in &r.medians {
        let (Target::CeilingGrow, Some(ns), Some(c)) =
            (t, s.ns_per_packet, ns_of(Target::Ceiling, *wl))
        else {
            continue;
        };
        let _ = writeln!(
            md,
            "- ceiling-grow / {}: {ns:.0} ns per packet, {:.2}× the ceiling: the ceiling's work \
             plus growing the frame by one record, moving the query into the new room and fixing \
             the lengths, with no lookup and no validation",
            wl.name(),
            ns / c
        );
    }
    let empty: Vec<f64> = r
        .medians
        .values()
        .filter_map(|s| s.empty_ns_per_packet)
        .collect();
    if !empty.is_empty() {
        let lo = empty.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = empty.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            md,
            "- an empty XDP program (the pass program on the client's end, which every reply \
             crosses) costs {lo:.0}–{hi:.0} ns per packet as bpf_stats measures it here: part of \
             every ns/packet figure above, the ceiling's included"
        );
    }
    if let Some(m) = r.map_memory {
        let _ = writeln!(
            md,
            "- dnsfast XDP maps (memlock, bpftool): {:.1} MiB",
            m as f64 / f64::from(1u32 << 20)
        );
    }
    if let Some(p) = &r.program {
        let _ = writeln!(md, "- dnsfast's XDP program: {p}");
    }
    for line in geo_targets(r) {
        let _ = writeln!(md, "{line}");
    }
    open_loop_report(r, &mut md);
    let mut excess = match (
        ns_of(Target::DnsfastXdp, Workload::Hot),
        ns_of(Target::DnsfastXdp, Workload::Zone1m),
    ) {
        (Some(h), Some(b)) => format!(
            "; dnsfast-xdp's zone-1m packets cost {:.0} ns more than its hot ones",
            b - h
        ),
        _ => String::new(),
    };
    if let (Some(m), Some(c)) = (
        ns_of(Target::CeilingMiss, Workload::Zone1m),
        ns_of(Target::Ceiling, Workload::Zone1m),
    ) {
        let bytes = hot_table_bytes(r.big_zone);
        let _ = writeln!(
            md,
            "- ceiling-miss / zone-1m: {m:.0} ns per packet, the ceiling's work plus one load from \
             the bucket a hash of the queried name picks in an empty table of {} 64-byte buckets \
             ({:.0} MiB, dnsfast's HOT_TABLE for the big zone): that one memory access, with no \
             work after it to overlap, adds {:.0} ns here{}",
            bytes / HOT_BUCKET_BYTES,
            bytes as f64 / f64::from(1u32 << 20),
            m - c,
            std::mem::take(&mut excess)
        );
    }
    if let Some((bytes, small, huge)) = r.memory {
        let _ = writeln!(
            md,
            "- the same access as one of a chain of dependent loads over {:.0} MiB in userspace, \
             with nothing else running between them: {small:.0} ns with 4 KiB pages (how BPF \
             array maps are mapped), {huge:.0} ns with 2 MiB pages{excess}",
            bytes as f64 / f64::from(1u32 << 20),
        );
    }
    fs::write(dir.join("results.md"), &md)?;
    fs::write(dir.join("results.csv"), &csv)?;
    fs::write(dir.join("chart.svg"), crate::chart::svg(r))?;
    println!(
        "\n{md}\nwritten: {0}/results.md, {0}/results.csv, {0}/chart.svg",
        dir.display()
    );
    Ok(())
}

/// The open-loop rows (kxdpgun): offered and answered q/s, lost, the share answered and the
/// ratio to the ceiling's answers under the same load; the `hot` target, with `ceiling-grow`
/// (the frame growth alone) as what bounds it.
fn open_loop_report(r: &Report, md: &mut String) {
    if r.open_loop.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nOpen loop (kxdpgun, one AF_XDP sender asked for {KXDPGUN_RATE} q/s, sending what it can; \
         median run by replies):\n\n\
         | load | target | offered q/s | answered q/s | lost | answered | ×ceiling |\n\
         |---|---|---:|---:|---:|---:|---:|"
    );
    let shot = |t, load| r.open_loop.get(&(t, load));
    for load in OpenLoad::ALL {
        let ceiling = shot(Target::Ceiling, load).map(crate::kxdpgun::Shot::answered);
        for t in Target::ALL {
            let Some(s) = shot(t, load) else {
                continue;
            };
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let share = if s.sent > 0 {
                100.0 * s.replies as f64 / s.sent as f64
            } else {
                0.0
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {} | {share:.1}% | {} |",
                load.name(),
                t.name(),
                s.offered(),
                s.answered(),
                s.lost(),
                ratio(s.answered(), ceiling)
            );
        }
    }
    for load in [OpenLoad::Hot, OpenLoad::HotOwnCore] {
        let (Some(d), Some(c)) = (shot(Target::DnsfastXdp, load), shot(Target::Ceiling, load))
        else {
            continue;
        };
        let x = d.answered() / c.answered();
        let grow = shot(Target::CeilingGrow, load).map_or("-".into(), |g| {
            format!("{:.2}", g.answered() / c.answered())
        });
        let _ = writeln!(
            md,
            "\n- {}: dnsfast-xdp answers {x:.2} × the ceiling ({} of {} lost); ceiling-grow, \
             which only grows the frame and appends one record, {grow} ×{}",
            load.name(),
            d.lost(),
            d.sent,
            if load == OpenLoad::Hot {
                format!(
                    ". Target ≥ 0.95 ×, all answered: {}",
                    if x >= 0.95 && d.lost() == 0 {
                        "met"
                    } else {
                        "missed"
                    }
                )
            } else {
                String::new()
            }
        );
    }
}

/// The region lookup's figures and targets (issue 14), from the medians: ns per packet at the
/// fixed rate (`bpf_stats`), q/s at full load, all from the bench's generator.
fn geo_targets(r: &Report) -> Vec<String> {
    let get = |t, wl| r.medians.get(&(t, wl));
    let ns = |t, wl| get(t, wl).and_then(|s: &Sample| s.ns_per_packet);
    let mut out = Vec::new();
    let (Some(st), Some(hot)) = (
        ns(Target::DnsfastXdp, Workload::Steered),
        ns(Target::DnsfastXdp, Workload::HotEcs),
    ) else {
        return out;
    };
    let geo = st - hot;
    let ceiling = ns(Target::Ceiling, Workload::Steered);
    let lpm = ns(Target::CeilingLpm, Workload::Steered)
        .zip(ceiling)
        .map(|(l, c)| l - c);
    let miss = ns(Target::CeilingGeoMiss, Workload::Steered)
        .zip(ceiling)
        .map(|(m, c)| m - c);
    let fmt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:+.0}"));
    out.push(format!(
        "- the region lookup, dnsfast-xdp: steered {st:.0} ns per packet, hot-ecs (the same \
         packets, an unsteered name) {hot:.0}: {geo:+.0} ns for placing the client (the Client \
         Subnet's address in the region tables, the region's answer set, the weighted draw); \
         ceiling-lpm − ceiling {} ns (one kernel LPM-trie lookup of the address over the same \
         blocks), ceiling-geo-miss − ceiling {} ns (one load picked by the address over 32 MiB)",
        fmt(lpm),
        fmt(miss)
    ));
    if let (Some(lpm), Some(miss)) = (lpm, miss) {
        let (bound, rule) = if miss > lpm / 2.0 {
            (
                1.2 * miss,
                "1.2 × (ceiling-geo-miss − ceiling), the first-level miss alone exceeding ½ × (ceiling-lpm − ceiling)",
            )
        } else {
            (lpm / 2.0, "½ × (ceiling-lpm − ceiling)")
        };
        out.push(format!(
            "- target steered − hot-ecs ≤ {rule} = {bound:.0} ns: {geo:+.0} ns, {}",
            if geo <= bound { "met" } else { "missed" }
        ));
    }
    if let Some(few) = ns(Target::DnsfastXdp, Workload::SteeredFew) {
        let d = few - hot;
        out.push(format!(
            "- target steered-few − hot-ecs ≤ 40 ns: {d:+.0} ns ({few:.0} ns per packet), {}",
            if d <= 40.0 { "met" } else { "missed" }
        ));
    }
    if let Some(one) = ns(Target::DnsfastXdp, Workload::SteeredOne) {
        out.push(format!(
            "- steered-one (one subnet a family, the tables' paths cached) − hot-ecs: {:+.0} ns, \
             the steering's own cost (the name's region entry and answer set, the weighted draw, \
             the drawn records copied out); steered-few − steered-one {}, steered − steered-one {}: \
             what spreading the clients adds",
            one - hot,
            fmt(ns(Target::DnsfastXdp, Workload::SteeredFew).map(|f| f - one)),
            fmt(Some(st - one))
        ));
    }
    if let (Some(s), Some(c)) = (
        get(Target::DnsfastXdp, Workload::Steered),
        get(Target::Ceiling, Workload::Steered),
    ) {
        let ratio = s.qps / c.qps;
        out.push(format!(
            "- target steered q/s ≥ 0.95 × the ceiling's, zero loss: {:.0} vs {:.0} q/s ({ratio:.2}), \
             {} lost at full load, {} at the fixed rate: {}",
            s.qps,
            c.qps,
            s.lost,
            s.fixed_lost,
            if ratio >= 0.95 && s.lost == 0 { "met" } else { "missed" }
        ));
    }
    out
}

/// The checks `cargo xtask test` makes on a quick run (nothing absolute, nothing that races the
/// machine): at the fixed rate (30% of the ceiling) dnsfast loses nothing and answers every hot
/// query in XDP (the steered rows too), and spends less CPU per query than Knot (kernel UDP) in
/// most back-to-back pairs ([`check_cpu`]).
pub fn check(r: &Report) -> Result<()> {
    let s = r
        .medians
        .get(&(Target::DnsfastXdp, Workload::Hot))
        .context("no dnsfast-xdp hot sample")?;
    ensure!(
        s.fixed_lost == 0,
        "dnsfast lost {} of {} queries at {} q/s",
        s.fixed_lost,
        s.fixed_sent,
        r.rate
    );
    let answered = s.xdp_answered.unwrap_or(0);
    ensure!(
        answered >= s.fixed_sent,
        "XDP answered {answered} of {} hot queries at the fixed rate",
        s.fixed_sent
    );
    // The steered rows: nothing lost at the fixed rate, every query answered in XDP.
    for wl in [
        Workload::Steered,
        Workload::SteeredFew,
        Workload::SteeredOne,
        Workload::HotEcs,
    ] {
        let s = r
            .medians
            .get(&(Target::DnsfastXdp, wl))
            .with_context(|| format!("no dnsfast-xdp {} sample", wl.name()))?;
        let answered = s.xdp_answered.unwrap_or(0);
        ensure!(
            s.fixed_lost == 0 && answered >= s.fixed_sent,
            "dnsfast-xdp / {}: lost {} of {} queries at {} q/s, XDP answered {answered}",
            wl.name(),
            s.fixed_lost,
            s.fixed_sent,
            r.rate
        );
        println!(
            "bench check: dnsfast-xdp / {}: at {} q/s lost 0 of {}, all answered in XDP",
            wl.name(),
            r.rate,
            s.fixed_sent
        );
    }
    println!(
        "bench check: at {} q/s dnsfast lost 0 of {}, answered {answered} in XDP",
        r.rate, s.fixed_sent
    );
    check_cpu(r)
}

/// The CPU half of [`check`]: over the back-to-back pairs (`Opts::check_pairs`), the median of
/// dnsfast-xdp's CPU per hot query over Knot's (kernel UDP) stays below [`CPU_RATIO_MAX`].
pub fn check_cpu(r: &Report) -> Result<()> {
    ensure!(
        r.cpu_pairs.len() >= 3,
        "{} check pairs, at least 3 needed",
        r.cpu_pairs.len()
    );
    let ratios: Vec<f64> = r.cpu_pairs.iter().map(|(d, k)| d / k).collect();
    ensure!(
        ratios.iter().all(|x| x.is_finite() && *x > 0.0),
        "a check pair without a CPU figure: {:?}",
        r.cpu_pairs
    );
    let mid = median(ratios.clone());
    let shown: Vec<String> = r
        .cpu_pairs
        .iter()
        .zip(&ratios)
        .map(|((d, k), x)| format!("{d:.2}/{k:.2}={x:.2}"))
        .collect();
    println!(
        "bench check: CPU/query, dnsfast-xdp over knot-udp, pair by pair: {}; median {mid:.2} \
         (limit {CPU_RATIO_MAX})",
        shown.join(", ")
    );
    ensure!(
        mid < CPU_RATIO_MAX,
        "dnsfast spent more CPU per hot query than Knot (UDP) in most back-to-back pairs: median \
         ratio {mid:.2}, not below {CPU_RATIO_MAX} ({})",
        shown.join(", ")
    );
    Ok(())
}

/// Most dnsfast (XDP) may spend per hot query over Knot (kernel UDP) in the quick run, as the
/// median over back-to-back pairs of the ratio of whole-machine CPU per query. Recorded on this
/// VM (docs/bench/cpu-check.md): single pair ratios 0.47-0.77 over 40 pairs (two runs of ten, four
/// CI runs of five), medians 0.59-0.64. Before the pairs, the ratio of each side's best of three samples went 0.26-0.66
/// over seven quick runs and then 1.13 once (its samples 21.3-39.5 µs vs 18.8-42.6: Knot batches
/// more per system call when the machine is slow, so its cost can fall while ours rises, and
/// samples minutes apart do not compare). XDP not answering is caught by the answered count, not
/// by this ratio.
const CPU_RATIO_MAX: f64 = 1.0;
