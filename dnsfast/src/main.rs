//! The `dnsfast` command: run the daemon, check a configuration, inspect a running instance.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use dnsfast::{
    compile,
    config::{Config, XdpMode},
    control, daemon,
    hot::wire_to_text,
    instance::{self, Instance},
    mapsync, preflight,
    signals::{self, Signals},
    xdp,
};
use hickory_proto::rr::RecordType;

#[derive(Parser)]
#[command(
    name = "dnsfast",
    version,
    about = "Authoritative DNS with an XDP fast path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configuration until SIGINT/SIGTERM (SIGHUP reloads it).
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Run in this network namespace (`ip netns` name); pins stay visible on the host.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Validate a configuration and its zones; exits non-zero with the errors.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Check the host as seen from this network namespace (`ip netns` name), where `run
        /// --netns` would serve.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Which region a client address is in and why, and what a steered name answers it (from
    /// the configuration, no daemon needed).
    Explain {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// The client's (or its Client Subnet's) address.
        address: std::net::IpAddr,
        /// A steered name.
        name: Option<String>,
    },
    /// Counters and map sizes of a running instance.
    Status {
        /// Instance name (default: the only one running).
        #[arg(short, long)]
        instance: Option<String>,
        /// Network namespace the instance runs in (`ip netns` name).
        #[arg(long)]
        netns: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drain an endpoint (or one family of it, or with --region a region's own pools) of a
    /// running instance: its addresses leave the answers, as if down, until undrained or for
    /// a time. Persists across reload and restart.
    Drain {
        #[command(flatten)]
        target: ForceTarget,
        /// For this long only (`90s`, `10m`, `2h`).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Force an endpoint (family, region) up: answered whatever its health checks say.
    ForceUp {
        #[command(flatten)]
        target: ForceTarget,
        /// For this long only (`90s`, `10m`, `2h`).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Clear what drain or force-up set: health checks decide again.
    Undrain {
        #[command(flatten)]
        target: ForceTarget,
    },
    /// Every hot entry in the XDP maps of a running instance, names in presentation form.
    Maps {
        /// Instance name (default: the only one running).
        #[arg(short, long)]
        instance: Option<String>,
        /// Network namespace the instance runs in (`ip netns` name).
        #[arg(long)]
        netns: Option<String>,
    },
    /// Test-host helper: attach a pass-everything XDP program to a veth end (native XDP on veth
    /// sends answers back only to a peer that has a program too) and hold it until Ctrl-C.
    Pass {
        /// Interface.
        #[arg(long)]
        interface: String,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Benchmark reference: attach the bare XDP responder that turns every DNS query into an
    /// empty answer without any lookup (the ceiling `cargo xtask bench` compares with) and hold
    /// it until Ctrl-C.
    Reflect {
        /// Interface.
        #[arg(long)]
        interface: String,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
        /// The second reference instead: also grow each frame by one A record (as every answer
        /// with a record must) and answer that fixed record.
        #[arg(long, conflicts_with_all = ["miss_table", "lpm", "geo_miss"])]
        grow: bool,
        /// The big zone's reference instead: also load one bucket, picked by a hash of the
        /// queried name, of an empty hot-name table of this many buckets (a power of two).
        #[arg(long, value_name = "BUCKETS", conflicts_with_all = ["lpm", "geo_miss"])]
        miss_table: Option<u32>,
        /// The region lookup's first reference instead: also look the Client Subnet address
        /// up (queries ending with an IPv4 /24 or IPv6 /56 option) in a kernel LPM trie
        /// holding the blocks of this configuration's region map.
        #[arg(long, value_name = "CONFIG", conflicts_with = "geo_miss")]
        lpm: Option<PathBuf>,
        /// The region lookup's second reference instead: also load one value, picked by the
        /// Client Subnet address, of an empty table the size of the region tables' first level.
        #[arg(long)]
        geo_miss: bool,
    },
}

/// What `drain`, `force-up` and `undrain` act on.
#[derive(clap::Args)]
struct ForceTarget {
    /// The endpoint's name (with --region: the region's).
    name: String,
    /// NAME is a region: every endpoint of its own pools, for its clients.
    #[arg(long)]
    region: bool,
    /// One family only.
    #[arg(long, value_parser = ["ipv4", "ipv6"])]
    family: Option<String>,
    /// Instance name (default: the only one running).
    #[arg(short, long)]
    instance: Option<String>,
    /// Network namespace the instance runs in (`ip netns` name).
    #[arg(long)]
    netns: Option<String>,
}

/// Sends a forced-state request built from `t` and prints what is forced afterwards.
fn force(t: ForceTarget, up: Option<bool>, duration: Option<&str>) -> Result<()> {
    use dnsfast::forced::{Forced, Request, Scope};
    let scope = if t.region {
        Scope::Region
    } else {
        Scope::Endpoint
    };
    let req = match up {
        None => Request::Clear {
            scope,
            name: t.name,
            family: t.family,
        },
        Some(up) => {
            let until_ms = match duration {
                None => None,
                Some(d) => {
                    let d = dnsfast::config::health::parse_duration(d).ok_or_else(|| {
                        anyhow::anyhow!("--for {d:?}: a duration such as 90s, 10m or 2h")
                    })?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .saturating_add(d);
                    Some(u64::try_from(now.as_millis()).unwrap_or(u64::MAX))
                }
            };
            Request::Set(Forced {
                scope,
                name: t.name,
                family: t.family,
                up,
                until_ms,
            })
        }
    };
    let socket = find_socket(t.instance.as_deref(), t.netns.as_deref())?;
    let states = control::force(&socket, &req)?;
    if states.is_empty() {
        println!("nothing is forced: health checks decide");
    }
    for f in states {
        println!(
            "{} {}{}: {}{}",
            match f.scope {
                Scope::Endpoint => "endpoint",
                Scope::Region => "region",
            },
            f.name,
            f.family
                .as_ref()
                .map_or_else(String::new, |x| format!(" ({x})")),
            if f.up { "forced up" } else { "drained" },
            f.left()
                .map_or_else(String::new, |d| format!(" for {} s more", d.as_secs()))
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    // Before anything else, and before any thread exists (threads inherit the mask): a SIGHUP,
    // SIGINT or SIGTERM from now on waits for us instead of killing the process half-started.
    signals::block();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DNSFAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cmd = Cli::parse().command;
    if !matches!(
        cmd,
        Command::Run { .. } | Command::Pass { .. } | Command::Reflect { .. }
    ) {
        // Short-lived commands stop on Ctrl-C like any other tool.
        signals::unblock();
    }
    match dispatch(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnsfast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Run { config, netns } => run(&config, netns.as_deref()),
        Command::Check { config, netns } => check(&config, netns.as_deref()),
        Command::Explain {
            config,
            address,
            name,
        } => {
            let cfg = Config::load(&config)?;
            let snap = compile::compile(&cfg)?;
            let name = name
                .map(|n| dnsfast::config::absolute_name(&n).map_err(anyhow::Error::msg))
                .transpose()?;
            print!("{}", snap.steering.explain(address, name.as_ref()));
            Ok(())
        }
        Command::Status {
            instance,
            netns,
            json,
        } => {
            let socket = find_socket(instance.as_deref(), netns.as_deref())?;
            let st = control::query(&socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", control::render(&st));
            }
            Ok(())
        }
        Command::Maps { instance, netns } => maps(instance.as_deref(), netns.as_deref()),
        Command::Drain { target, duration } => force(target, Some(false), duration.as_deref()),
        Command::ForceUp { target, duration } => force(target, Some(true), duration.as_deref()),
        Command::Undrain { target } => force(target, None, None),
        Command::Pass { interface, netns } => {
            hold_helper(xdp::Helper::Pass, &interface, netns.as_deref(), None)
        }
        Command::Reflect {
            interface,
            netns,
            grow,
            miss_table,
            lpm,
            geo_miss,
        } => {
            if let Some(config) = lpm {
                let cfg = Config::load(&config)?;
                let snapshot = compile::compile(&cfg)?;
                return hold_helper(
                    xdp::Helper::ReflectLpm,
                    &interface,
                    netns.as_deref(),
                    Some(&snapshot.steering.map),
                );
            }
            let helper = match (grow, miss_table, geo_miss) {
                (_, Some(buckets), _) => xdp::Helper::ReflectMiss(buckets),
                (_, None, true) => xdp::Helper::ReflectGeoMiss,
                (true, None, false) => xdp::Helper::ReflectGrow,
                (false, None, false) => xdp::Helper::Reflect,
            };
            hold_helper(helper, &interface, netns.as_deref(), None)
        }
    }
}

fn run(config: &std::path::Path, netns: Option<&str>) -> Result<()> {
    let mut signals = Signals::new().context("signalfd")?;
    // Many UDP workers' sockets and the maps need descriptors long before TCP sizes its table.
    dnsfast::tcp::raise_nofile().context("raise the open-file limit")?;
    let cfg = Config::load(config)?;
    instance::check_privileges(
        cfg.xdp.mode != XdpMode::Off,
        cfg.listen.iter().any(|a| a.port() < 1024),
        netns.is_some(),
    )?;
    // Before any thread exists: threads created later inherit the namespace.
    if let Some(ns) = netns {
        instance::enter_netns(ns)?;
    }
    let inst = Instance::current(&cfg.instance)?;
    let _lock = inst.lock()?;
    preflight::host(&cfg)?;
    preflight::xdp_interface_free(&cfg)?;
    preflight::foreign_sockets(&cfg)?;
    // Zone loading takes seconds for a big zone; a stop signal meanwhile ends it at once (it
    // holds nothing but memory).
    let to_compile = cfg.clone();
    let snapshot = match signals.interruptible(move || compile::compile(&to_compile))? {
        Ok(r) => r.context("loading zones")?,
        Err(s) => {
            tracing::info!("{} while loading zones: stopped before serving", s.name());
            return Ok(());
        }
    };
    // UDP has threads of its own (`udp`); the runtime serves TCP, control and signals.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(cfg, inst, snapshot, signals))
}

fn check(config: &std::path::Path, netns: Option<&str>) -> Result<()> {
    if let Some(ns) = netns {
        instance::enter_netns(ns)?;
    }
    let cfg = Config::load(config)?;
    let snap = compile::compile(&cfg)?;
    // What `run` would refuse, or serve worse than configured, `check` refuses too.
    preflight::host(&cfg)?;
    if cfg.xdp.mode != XdpMode::Off {
        let fit = mapsync::fit(daemon::capacity(&cfg), &snap.hot.as_changes());
        if let Some(advice) = daemon::capacity_advice(&cfg, &fit) {
            bail!("{}: {advice}", cfg.path.display());
        }
        if let Some(advice) = daemon::steering_advice(&cfg, &snap) {
            bail!("{}: {advice}", cfg.path.display());
        }
    }
    println!(
        "{}: OK — instance {}, {} zones, {} hot answers, {} regions, {} answer sets",
        config.display(),
        cfg.instance,
        snap.zones.len(),
        snap.hot.len(),
        snap.steering.regions.len(),
        snap.steering.sets.len()
    );
    if let Some(st) = snap.steering.status(&snap.ecs) {
        print!("{}", control::render_steering(&st));
    }
    Ok(())
}

/// The control socket of the instance to talk to.
fn find_socket(name: Option<&str>, netns: Option<&str>) -> Result<PathBuf> {
    if let Some(n) = name {
        return Ok(Instance::lookup(n, netns)?.socket());
    }
    let here = Instance::lookup("_", netns)?;
    let found = instance::running_sockets(here.netns);
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no dnsfast instance runs in network namespace {}",
            here.netns_id()
        ),
        many => bail!(
            "several instances run here, pick one with --instance: {}",
            many.iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn maps(name: Option<&str>, netns: Option<&str>) -> Result<()> {
    let socket = find_socket(name, netns)?;
    let inst_name = socket
        .file_stem()
        .context("socket name")?
        .to_string_lossy()
        .into_owned();
    let inst = Instance::lookup(&inst_name, netns)?;
    let dir = inst.pin_dir();
    let mut entries = xdp::read_pinned(&dir)?;
    entries.sort_by_cached_key(|e| (wire_to_text(&e.name), e.qtype, e.region));
    println!(
        "# {} hot entries pinned under {}",
        entries.len(),
        dir.display()
    );
    for e in entries {
        let addrs = e.answer.as_ref().map_or_else(
            || "(no answer)".to_string(),
            |a| {
                a.addresses()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        );
        let ttl = e.answer.as_ref().map_or(0, |a| a.ttl);
        let slot = if dnsfast_common::maps::slot_is_inline(e.slot) {
            format!("inline, seq {}", e.slot & dnsfast_common::maps::SLOT_SEQ)
        } else if dnsfast_common::maps::slot_is_steered(e.slot) {
            format!(
                "steered, REGION_SETS block {}",
                e.slot & !dnsfast_common::maps::SLOT_STEERED
            )
        } else {
            format!("slot {:#x}", e.slot)
        };
        println!(
            "{:<40} {:<5} region {:<3} ttl {:<6} {}   [{}, {slot}]",
            wire_to_text(&e.name),
            RecordType::from(e.qtype).to_string(),
            e.region,
            ttl,
            addrs,
            e.place,
        );
    }
    Ok(())
}

fn hold_helper(
    helper: xdp::Helper,
    interface: &str,
    netns: Option<&str>,
    blocks: Option<&dnsfast::geo::RegionMap>,
) -> Result<()> {
    if let Some(ns) = netns {
        instance::enter_netns(ns)?;
    }
    let signals = Signals::new().context("signalfd")?;
    let _prog = xdp::attach_helper(helper, interface, blocks)?;
    tracing::info!("{helper:?} program attached to {interface}; Ctrl-C detaches it");
    instance::notify("READY=1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let signals = signals.into_async()?;
        while !signals.recv().await?.is_stop() {}
        Ok::<(), anyhow::Error>(())
    })
}
