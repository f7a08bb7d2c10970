//! The daemon's life: set up the dataplane and sockets, serve, reload on SIGHUP (keeping the
//! last good configuration when the new one fails), clean up on SIGINT/SIGTERM.

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use dnsfast_common::{
    maps::{CFG_ANSWER, CFG_ANY_V4, CFG_ANY_V6, MAX_LISTEN_ADDRS, XdpConfig},
    stats::COUNTER_NAMES,
};
use hickory_proto::rr::RData;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    compile::{self, Snapshot},
    config::{Config, XdpMode},
    control::{self, Counter, Status, XdpStatus, ZoneStatus},
    instance::{self, Instance},
    mapsync::Capacity,
    server::{self, Shared},
    udp,
    xdp::Dataplane,
};

/// A running instance.
pub struct Daemon {
    cfg: Config,
    inst: Instance,
    shared: Arc<Shared>,
    dataplane: Mutex<Option<Dataplane>>,
    reloads: AtomicU64,
    last_reload_error: Mutex<Option<String>>,
}

/// The program's configuration for `cfg`: port, our addresses, answering on or off.
pub fn xdp_config(cfg: &Config, answering: bool) -> Result<XdpConfig> {
    let mut x = XdpConfig::zeroed();
    x.port = cfg.dns_port();
    if answering {
        x.flags |= CFG_ANSWER;
    }
    let iface_addrs = match &cfg.xdp.interface {
        Some(i) => instance::interface_addresses(i)?,
        None => Vec::new(),
    };
    for v6 in [false, true] {
        let (mut addrs, any) = cfg.addresses(v6);
        if any {
            // A wildcard means every address of the interface: exactly those, so traffic for
            // other hosts (this box routing) is never answered.
            addrs.extend(iface_addrs.iter().filter(|a| a.is_ipv6() == v6));
        }
        addrs.dedup();
        if addrs.len() > MAX_LISTEN_ADDRS {
            tracing::warn!(
                "more than {MAX_LISTEN_ADDRS} {} addresses: XDP answers queries to any address",
                if v6 { "IPv6" } else { "IPv4" }
            );
            x.flags |= if v6 { CFG_ANY_V6 } else { CFG_ANY_V4 };
            continue;
        }
        for (i, a) in addrs.iter().enumerate() {
            match a {
                IpAddr::V4(a) => x.v4[i] = a.octets(),
                IpAddr::V6(a) => x.v6[i] = a.octets(),
            }
        }
        if v6 {
            x.v6_count = addrs.len() as u8;
        } else {
            x.v4_count = addrs.len() as u8;
        }
    }
    Ok(x)
}

impl Daemon {
    fn set_answering(&self, on: bool) {
        let mut dp = self.dataplane.lock().expect("dataplane lock");
        if let Some(dp) = dp.as_mut() {
            match xdp_config(&self.cfg, on) {
                Ok(c) => {
                    if let Err(e) = dp.set_config(&c) {
                        tracing::error!("XDP config: {e:#}");
                    }
                }
                Err(e) => tracing::error!("XDP config: {e:#}"),
            }
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        let snap = self.shared.snapshot.load();
        let mut zones: Vec<ZoneStatus> = snap
            .zones
            .iter()
            .map(|z| ZoneStatus {
                origin: z.origin.to_string(),
                serial: match &z.soa.data {
                    RData::SOA(s) => s.serial,
                    _ => 0,
                },
                names: z.len(),
                file: z.file.display().to_string(),
            })
            .collect();
        zones.sort_by(|a, b| a.origin.cmp(&b.origin));
        let dp = self.dataplane.lock().expect("dataplane lock");
        let xdp = match dp.as_ref() {
            None => XdpStatus {
                mode: self.cfg.xdp.mode.to_string(),
                ..XdpStatus::default()
            },
            Some(dp) => {
                let counters = dp.counters().unwrap_or_default();
                let cap = dp.capacity();
                XdpStatus {
                    mode: self.cfg.xdp.mode.to_string(),
                    interface: self.cfg.xdp.interface.clone(),
                    attached: dp.attached().map(|a| a.as_str().to_string()),
                    pin_dir: dp.pin_dir().map(|p| p.display().to_string()),
                    hot_keys: dp.hot_keys(),
                    capacity: [cap.entries, cap.small, cap.large],
                    counters: COUNTER_NAMES
                        .iter()
                        .zip(counters)
                        .map(|(n, v)| Counter {
                            name: (*n).to_string(),
                            value: v,
                        })
                        .collect(),
                }
            }
        };
        Status {
            instance: self.inst.name.clone(),
            pid: std::process::id(),
            netns: self.inst.netns_id(),
            config: self.cfg.path.display().to_string(),
            listen: self.cfg.listen.iter().map(ToString::to_string).collect(),
            zones,
            hot_answers: snap.hot.len(),
            reloads: self.reloads.load(Ordering::Relaxed),
            last_reload_error: self.last_reload_error.lock().expect("lock").clone(),
            xdp,
            server: self.shared.stats.view(),
        }
    }

    /// Re-reads the configuration file and zones; on success the maps and the userspace path
    /// switch to the new answers, on failure nothing changes.
    fn reload(&self) {
        let t = Instant::now();
        let result = Config::load(&self.cfg.path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                if cfg.listen != self.cfg.listen
                    || cfg.xdp.mode != self.cfg.xdp.mode
                    || cfg.xdp.interface != self.cfg.xdp.interface
                    || cfg.instance != self.cfg.instance
                {
                    tracing::warn!(
                        "listen addresses, instance and XDP settings change only on restart"
                    );
                }
                compile::compile(&cfg).map_err(|e| e.to_string())
            });
        let new = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("reload failed; still serving the previous configuration:\n{e}");
                *self.last_reload_error.lock().expect("lock") = Some(e);
                return;
            }
        };
        let changes = self.shared.snapshot.load().hot.diff(&new.hot);
        {
            let mut dp = self.dataplane.lock().expect("dataplane lock");
            if let Some(d) = dp.as_mut()
                && let Err(e) = d.apply(&changes)
            {
                // The maps may now mix old and new answers: stop answering from them; the
                // daemon answers everything from the new configuration instead.
                tracing::error!(
                    "updating the XDP maps failed ({e:#}); XDP now passes all queries up"
                );
                if let Ok(c) = xdp_config(&self.cfg, false) {
                    let _ = d.set_config(&c);
                }
            }
        }
        let hot = new.hot.len();
        self.shared.snapshot.store(Arc::new(new));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        *self.last_reload_error.lock().expect("lock") = None;
        tracing::info!(
            "reloaded: {hot} hot answers, {} changed, in {:?}",
            changes.len(),
            t.elapsed()
        );
    }
}

fn setup_dataplane(cfg: &Config, inst: &Instance, snap: &Snapshot) -> Result<Dataplane> {
    let iface = cfg.xdp.interface.as_deref().context("xdp.interface")?;
    let pin_dir = inst.prepare_pin_dir()?;
    let cap = Capacity {
        entries: cfg.xdp.max_hot_names,
        small: cfg.xdp.max_answers,
        large: cfg.xdp.max_large_answers,
    };
    let t = Instant::now();
    let mut dp = Dataplane::load(cap, Some(&pin_dir))?;
    dp.set_config(&xdp_config(cfg, false)?)?;
    let load_time = t.elapsed();
    let t = Instant::now();
    let st = dp.apply(&snap.hot.as_changes())?;
    tracing::info!(
        "XDP program loaded in {load_time:?}; {} hot answers written in {:?} ({} skipped)",
        dp.hot_keys(),
        t.elapsed(),
        st.skipped
    );
    let how = dp.attach(iface, cfg.xdp.mode)?;
    tracing::info!(
        "XDP attached to {iface} ({}), maps pinned under {}",
        how.as_str(),
        pin_dir.display()
    );
    Ok(dp)
}

/// Runs the daemon for `cfg` until SIGINT or SIGTERM.
pub async fn run(cfg: Config, inst: Instance, snapshot: Snapshot) -> Result<()> {
    // Handlers first: SIGHUP's default action is to terminate, and a supervisor may send it as
    // soon as it sees READY=1 (or before). Signals that arrive while starting wait for the loop.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let dataplane = match cfg.xdp.mode {
        XdpMode::Off => None,
        _ => Some(setup_dataplane(&cfg, &inst, &snapshot).inspect_err(|_| inst.cleanup())?),
    };
    let shared = Arc::new(Shared::new(snapshot));
    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        inst: inst.clone(),
        shared: Arc::clone(&shared),
        dataplane: Mutex::new(dataplane),
        reloads: AtomicU64::new(0),
        last_reload_error: Mutex::new(None),
    });

    let mut tasks = tokio::task::JoinSet::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    let bound = (|| -> Result<()> {
        for &addr in &cfg.listen {
            for i in 0..cfg.udp_workers {
                let s = server::bind_udp(addr).with_context(|| format!("bind UDP {addr}"))?;
                let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
                udp_threads.push(
                    std::thread::Builder::new()
                        .name(format!("udp-{i}"))
                        .spawn(move || udp::worker(&s, &shared, &stop))?,
                );
            }
            let l = server::bind_tcp(addr).with_context(|| format!("bind TCP {addr}"))?;
            let l = tokio::net::TcpListener::from_std(l)?;
            tasks.spawn(server::tcp_acceptor(
                l,
                Arc::clone(&shared),
                cfg.tcp_idle_timeout,
                cfg.tcp_max_connections,
            ));
        }
        Ok(())
    })();
    if let Err(e) = bound {
        stop.store(true, Ordering::Relaxed);
        daemon.dataplane.lock().expect("lock").take();
        inst.cleanup();
        return Err(e);
    }
    daemon.set_answering(true);

    let status_daemon = Arc::clone(&daemon);
    let socket = inst.socket();
    tasks.spawn(async move {
        let status: Arc<dyn Fn() -> Status + Send + Sync> =
            Arc::new(move || status_daemon.status());
        if let Err(e) = control::serve(&socket, status).await {
            tracing::error!("control socket: {e:#}");
        }
    });

    tracing::info!(
        "dnsfast {} ready: instance {} ({}), listening on {}",
        env!("CARGO_PKG_VERSION"),
        inst.name,
        inst.netns_id(),
        cfg.listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    instance::notify("READY=1");

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                instance::notify("RELOADING=1");
                let d = Arc::clone(&daemon);
                tokio::task::spawn_blocking(move || d.reload()).await?;
                instance::notify("READY=1");
            }
            Some(r) = tasks.join_next() => {
                if let Err(e) = r {
                    bail!("a server task failed: {e}");
                }
            }
        }
    }

    tracing::info!("shutting down");
    instance::notify("STOPPING=1");
    daemon.set_answering(false);
    tasks.abort_all();
    stop.store(true, Ordering::Relaxed);
    for t in udp_threads {
        let _ = t.join();
    }
    if let Some(mut dp) = daemon.dataplane.lock().expect("lock").take() {
        dp.detach()?;
    }
    inst.cleanup();
    Ok(())
}
