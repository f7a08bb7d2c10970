//! The daemon's life: set up the dataplane and sockets, serve, reload on SIGHUP (keeping the
//! last good configuration when the new one fails), clean up on SIGINT/SIGTERM.

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use dnsfast_common::{
    maps::{CFG_ANY_V4, CFG_ANY_V6, MAX_LISTEN_ADDRS, XdpConfig},
    stats::COUNTER_NAMES,
};
use hickory_proto::rr::RData;

use crate::{
    compile::{self, Snapshot},
    config::{Config, XdpMode},
    control::{self, Counter, MapStatus, Status, TcpStatus, XdpStatus, ZoneStatus},
    forced::{self, ForcedStates},
    health,
    hot::Change,
    instance::{self, Instance},
    mapsync::{self, Capacity},
    server::{self, Shared},
    signals::{Signal, Signals},
    steering::{Compiled, Eligible},
    tcp, udp,
    xdp::Dataplane,
};

/// What went wrong with the maps, and how often they were rebuilt.
#[derive(Debug, Default)]
struct MapHealth {
    /// Map updates that failed.
    failures: u64,
    /// Rebuilds that brought XDP answering back.
    recoveries: u64,
    /// Why answering is off, while it is.
    broken: Option<String>,
}

/// A running instance.
pub struct Daemon {
    cfg: Config,
    inst: Instance,
    shared: Arc<Shared>,
    tcp: Arc<tcp::Table>,
    dataplane: Mutex<Option<Dataplane>>,
    maps: Mutex<MapHealth>,
    reloads: AtomicU64,
    last_reload_error: Mutex<Option<String>>,
    /// Health checks.
    checker: Arc<health::Checker>,
    /// Operator-forced states, and the file they persist in.
    forced: Mutex<ForcedStates>,
    forced_file: std::path::PathBuf,
    /// Map updates a health result or a drain decided (the TTL caps' refreshes not counted).
    health_updates: AtomicU64,
    /// When the earliest up/down decision recorded in the health table but not yet applied
    /// arrived (set under the table's lock).
    undelivered: Mutex<Option<Instant>>,
    /// Answer sets that started failing open, and answering NODATA (no healthy endpoint
    /// anywhere in their chains).
    fail_open_entered: AtomicU64,
    nodata_entered: AtomicU64,
    last_health_update: Mutex<std::collections::VecDeque<Duration>>,
}

/// The program's configuration for `cfg`: port and our addresses, answering off
/// ([`Dataplane::set_answering`] switches it on once the sockets are up).
pub fn xdp_config(cfg: &Config) -> Result<XdpConfig> {
    let mut x = XdpConfig::zeroed();
    x.port = cfg.dns_port();
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
    // The ECS flags come with the resolver list (`Dataplane::set_ecs`).
    Ok(x)
}

impl Daemon {
    fn set_answering(&self, on: bool) {
        let mut dp = self.dataplane.lock().expect("dataplane lock");
        if let Some(dp) = dp.as_mut()
            && let Err(e) = dp.set_answering(on)
        {
            tracing::error!("XDP config: {e:#}");
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        let snap = self.shared.snapshot.load();
        // Not under the dataplane lock: a health update holds it while it takes the table's
        // (so the table, then the dataplane, would deadlock).
        let health = (!snap.steering.regions.is_empty()).then(|| {
            let recent: Vec<u64> = self
                .last_health_update
                .lock()
                .expect("lock")
                .iter()
                .map(|d| micros(*d))
                .collect();
            control::HealthStatus {
                targets: self.checker.table.status(),
                pools: snap.steering.pool_status(),
                updates: self.health_updates.load(Ordering::Relaxed),
                fail_open_entered: self.fail_open_entered.load(Ordering::Relaxed),
                nodata_entered: self.nodata_entered.load(Ordering::Relaxed),
                last_update_us: recent.last().copied(),
                update_spread_us: control::Spread::of(recent),
                forced: self.forced.lock().expect("forced lock").entries.clone(),
            }
        });
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
                    program: dp.program_size().ok(),
                    ecs_stage: dp.ecs_stage_size().ok(),
                    maps: {
                        let h = self.maps.lock().expect("maps lock");
                        MapStatus {
                            failures: h.failures,
                            recoveries: h.recoveries,
                            answering_off: h.broken.clone(),
                        }
                    },
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
            tcp: {
                let (l, st) = (self.tcp.limits(), &self.tcp.stats);
                TcpStatus {
                    open: self.tcp.open(),
                    max: l.max,
                    per_client: l.per_client,
                    refused: st.refused.load(Ordering::Relaxed),
                    evicted: st.evicted.load(Ordering::Relaxed),
                    accept_errors: st.accept_errors.load(Ordering::Relaxed),
                }
            },
            steering: snap.steering.status(&snap.ecs),
            health,
        }
    }

    /// A forced-state request from the control socket: checked against the configuration,
    /// applied, persisted, and in the answers before the reply.
    fn force(&self, req: forced::Request) -> Result<Vec<forced::Forced>, String> {
        let t = Instant::now();
        let snap = self.shared.snapshot.load_full();
        let (scope, name, family) = match &req {
            forced::Request::Set(f) => (f.scope, &f.name, &f.family),
            forced::Request::Clear {
                scope,
                name,
                family,
            } => (*scope, name, family),
        };
        if let Some(f) = family
            && f != "ipv4"
            && f != "ipv6"
        {
            return Err(format!("family {f:?}: ipv4 or ipv6"));
        }
        let known = match scope {
            forced::Scope::Endpoint => snap.steering.endpoints.iter().any(|e| e.name == *name),
            forced::Scope::Region => snap.steering.regions.iter().any(|r| r == name),
        };
        // A clear may name what a reload removed; a set must name what is configured.
        if !known && matches!(req, forced::Request::Set(_)) {
            return Err(format!(
                "no {} {name:?} in the configuration",
                match scope {
                    forced::Scope::Endpoint => "endpoint",
                    forced::Scope::Region => "region",
                }
            ));
        }
        let entries = {
            let mut f = self.forced.lock().expect("forced lock");
            f.apply(req)?;
            f.entries.clone()
        };
        self.save_forced();
        self.apply_health(Some(t));
        Ok(entries)
    }

    /// Writes the forced states to their file (an error is logged: the states hold anyway).
    fn save_forced(&self) {
        // Saved under the lock: two saves never race on the temporary file, and the last one
        // written is the newest.
        let f = self.forced.lock().expect("forced lock");
        if let Err(e) = f.save(&self.forced_file) {
            tracing::error!("saving the forced states failed: {e:#}");
        }
    }

    /// Brings the answers to the health table: recomputes every set's state for the snapshot
    /// served, writes the sets whose state changed (one store each) and installs the states
    /// for the userspace path. `decided` is when the result (or request) that caused it
    /// arrived; `None` for a refresh of the TTL caps, whose duration is not the one `status`
    /// reports.
    fn apply_health(&self, decided: Option<Instant>) {
        // The dataplane lock serializes updates (one computed earlier never lands later) and
        // pairs the snapshot with the maps' generation: a reload stores its snapshot and
        // switches the generation under it. The table and forced states are read briefly
        // inside it (nobody takes the dataplane lock while holding either).
        let mut dp = self.dataplane.lock().expect("dataplane lock");
        let snap = self.shared.snapshot.load_full();
        let forced = self.forced.lock().expect("forced lock").clone();
        let (new, undelivered) = {
            let table = self.checker.table.lock();
            // A decision recorded in the table is applied by whichever call reads it first
            // (a refresh may come before the consumer's own call): it goes with the table.
            let undelivered = self.undelivered.lock().expect("lock").take();
            (
                snap.steering.health_from(&table, &forced, Instant::now()),
                undelivered,
            )
        };
        let decided = match (decided, undelivered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let old = snap.steering.health.load_full();
        if *old == new {
            return;
        }
        let new = Arc::new(new);
        snap.steering.health.store(Arc::clone(&new));
        if let Some(d) = dp.as_mut() {
            let sets = snap.steering.state_changes(&old, &new, d.generation());
            let steering = mapsync::Steering {
                sets: &sets,
                keys: &[],
            };
            let mut maps = self.maps.lock().expect("maps lock");
            let failed = if maps.broken.is_some() {
                // An earlier failure left the maps behind: rebuild them whole.
                None
            } else {
                d.apply_with(&[], steering).err()
            };
            if let Some(e) = &failed {
                maps.failures += 1;
                maps.broken = Some(format!("{e:#}"));
                tracing::error!(
                    "health: writing the answer sets' states failed ({e:#}); XDP passes every \
                     query up while the maps are rebuilt"
                );
            }
            if maps.broken.is_some() {
                Self::rebuild(d, &mut maps, &snap);
            }
        }
        drop(dp);
        self.log_all_down(&snap.steering, &old, &new);
        let Some(decided) = decided else {
            return;
        };
        self.health_updates.fetch_add(1, Ordering::Relaxed);
        let took = decided.elapsed();
        {
            let mut recent = self.last_health_update.lock().expect("lock");
            if recent.len() == control::UPDATE_HISTORY {
                recent.pop_front();
            }
            recent.push_back(took);
        }
        for p in tracing::enabled!(tracing::Level::DEBUG)
            .then(|| snap.steering.pool_status())
            .unwrap_or_default()
        {
            tracing::debug!(
                "health: {} {} {}/{} healthy, answers {}",
                p.region,
                p.family,
                p.healthy,
                p.endpoints,
                p.answers
            );
        }
        tracing::info!("health: answers updated {took:?} after the deciding result");
    }

    /// Logs (once per transition) and counts the answer sets that start or stop failing open
    /// or answering NODATA: no healthy endpoint anywhere in their chains.
    fn log_all_down(&self, steering: &Compiled, old: &[Eligible], new: &[Eligible]) {
        let (was, now) = (all_down(old), all_down(new));
        let pools = |sets: &mut dyn Iterator<Item = usize>| -> String {
            let mut names: Vec<String> = sets
                .map(|i| {
                    let (r, f) = steering.set_owner(i);
                    format!("{} {}", steering.regions[usize::from(r)], ["A", "AAAA"][f])
                })
                .collect();
            names.sort();
            names.dedup();
            names.join(", ")
        };
        for (mode, counter) in [
            (AllDownMode::Open, &self.fail_open_entered),
            (AllDownMode::Nodata, &self.nodata_entered),
        ] {
            let entered: Vec<usize> = (0..now.len())
                .filter(|&i| now[i] == Some(mode) && was.get(i).copied().flatten() != Some(mode))
                .collect();
            if !entered.is_empty() {
                counter.fetch_add(entered.len() as u64, Ordering::Relaxed);
                tracing::warn!(
                    "health: {} answer sets have no healthy endpoint anywhere in their chains and {} \
                     (pools of {})",
                    entered.len(),
                    match mode {
                        AllDownMode::Open =>
                            "fail open: their endpoints are answered as if healthy",
                        AllDownMode::Nodata => "answer NODATA",
                    },
                    pools(&mut entered.iter().copied())
                );
            }
        }
        let left: Vec<usize> = (0..now.len())
            .filter(|&i| now[i].is_none() && was.get(i).copied().flatten().is_some())
            .collect();
        if !left.is_empty() {
            tracing::info!(
                "health: {} answer sets have healthy endpoints again (pools of {})",
                left.len(),
                pools(&mut left.iter().copied())
            );
        }
    }

    /// Brings the maps to `new`. A failed update may leave them mixing old and new answers,
    /// and the model ahead of them: XDP answering goes off at once (the daemon answers from
    /// `new`, which the caller installs), the maps are rebuilt from `new`'s whole table, and
    /// answering comes back on. Both the failure and the recovery show in `status`. The same
    /// happens when an earlier rebuild failed, until one succeeds.
    fn update_maps(&self, d: &mut Dataplane, changes: &[Change], old: &Snapshot, new: &Snapshot) {
        let mut health = self.maps.lock().expect("maps lock");
        if health.broken.is_none() {
            let applied = if new.steering.same_as(&old.steering) {
                d.apply(changes).map(|_| ())
            } else {
                // One switch of generation: the new sets beside the old, the region map in
                // the new generation (every lookup meets old placement and old sets, or new
                // and new), then the old sets go.
                let t = new.steering.transition(&old.steering, d.generation());
                d.apply_with(changes, t.first.steering())
                    .and_then(|_| d.set_regions(&new.steering, t.generation))
                    .and_then(|()| d.apply_with(&[], t.last.steering()).map(|_| ()))
            };
            match applied {
                Ok(()) => return,
                Err(e) => {
                    health.failures += 1;
                    health.broken = Some(format!("{e:#}"));
                    tracing::error!(
                        "updating the XDP maps failed ({e:#}); XDP passes every query up while \
                         the maps are rebuilt from the new configuration"
                    );
                }
            }
        }
        Self::rebuild(d, &mut health, new);
    }

    /// Rebuilds the maps from `new` whole, XDP answering off meanwhile; the outcome goes to
    /// `health` (and `status`).
    fn rebuild(d: &mut Dataplane, health: &mut MapHealth, new: &Snapshot) {
        let t = Instant::now();
        let rebuilt = d
            .set_answering(false)
            .context("switch XDP answering off")
            .and_then(|()| {
                let steering = new.steering.map_changes(d.generation());
                d.resync(&new.hot.as_changes(), steering.steering())
            })
            .and_then(|_| d.set_regions(&new.steering, d.generation()))
            .and_then(|()| d.set_answering(true));
        match rebuilt {
            Ok(()) => {
                health.recoveries += 1;
                health.broken = None;
                tracing::info!(
                    "XDP maps rebuilt in {:?} ({} hot keys); XDP answers again",
                    t.elapsed(),
                    d.hot_keys()
                );
            }
            Err(e) => {
                let e = format!("{e:#}");
                tracing::error!(
                    "rebuilding the XDP maps failed ({e}); XDP passes every query up until a \
                     reload rebuilds them"
                );
                health.broken = Some(e);
            }
        }
    }

    /// Re-reads the configuration file and zones; on success the maps and the userspace path
    /// switch to the new answers, on failure nothing changes.
    fn reload(&self) {
        let t = Instant::now();
        let result = Config::load(&self.cfg.path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                let changed = self.cfg.restart_only_changes(&cfg);
                if !changed.is_empty() {
                    tracing::warn!(
                        "reload: {} changed, which takes effect only on restart; applying the \
                         zones and identity",
                        changed.join(", ")
                    );
                }
                let snap = compile::compile(&cfg).map_err(|e| e.to_string())?;
                // The maps keep the capacities they were created with.
                if self.cfg.xdp.mode != XdpMode::Off
                    && let Some(advice) = steering_advice(&self.cfg, &snap)
                {
                    return Err(format!("{advice} (and restart)"));
                }
                Ok(snap)
            });
        let new = match result {
            Ok(s) => s,
            Err(e) => {
                // One event, one line: each zone's error is a clause of it.
                let e = e.replace('\n', "; ");
                tracing::error!("reload failed, still serving the previous configuration: {e}");
                *self.last_reload_error.lock().expect("lock") = Some(e);
                return;
            }
        };
        // Addresses the new configuration checks first are checked once now (each starts
        // down, its first result decides), so its first answers are health-checked too.
        let fresh =
            tokio::runtime::Handle::current().block_on(self.checker.sync(&new.steering.targets()));
        if !fresh.is_empty() {
            tracing::info!("reload: {} new health check targets checked", fresh.len());
        }
        let forced = self.forced.lock().expect("forced lock").clone();
        new.steering.health.store(Arc::new(new.steering.health_from(
            &self.checker.table.lock(),
            &forced,
            Instant::now(),
        )));
        let old = self.shared.snapshot.load_full();
        let changes = old.hot.diff(&new.hot);
        let hot = new.hot.len();
        let new = Arc::new(new);
        {
            let mut dp = self.dataplane.lock().expect("dataplane lock");
            // The daemon answers from the new configuration from here on, also while the maps
            // follow (or are rebuilt after a failed update, with XDP answering off). Stored
            // under the dataplane lock: a health update meets this snapshot with the new
            // generation, or the old with the old.
            self.shared.snapshot.store(Arc::clone(&new));
            if let Some(d) = dp.as_mut() {
                // What the new ECS policy honours less takes effect before the maps change
                // (the program must not honour an option the new configuration ignores, over
                // its maps), what it honours more after them.
                let ecs = |d: &mut Dataplane, narrow: bool| {
                    let r = if narrow {
                        d.narrow_ecs(&new.ecs)
                    } else {
                        d.set_ecs(&new.ecs)
                    };
                    if let Err(e) = r {
                        tracing::error!(
                            "reload: setting the XDP program's ECS policy failed: {e:#}"
                        );
                    }
                };
                ecs(d, true);
                self.update_maps(d, &changes, &old, &new);
                ecs(d, false);
            }
        }
        // States of targets the new configuration no longer checks go only now (the old
        // snapshot, served until the store above, still read them); a result that arrived
        // while the maps changed went to the old snapshot: recompute for the new one.
        self.checker.prune(&new.steering.targets());
        self.apply_health(Some(Instant::now()));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        *self.last_reload_error.lock().expect("lock") = None;
        tracing::info!(
            "reloaded: {hot} hot answers, {} changed, in {:?}",
            changes.len(),
            t.elapsed()
        );
    }
}

/// The map capacities `cfg` asks for.
#[must_use]
pub fn capacity(cfg: &Config) -> Capacity {
    Capacity {
        entries: cfg.xdp.max_hot_names,
        small: cfg.xdp.max_answers,
        large: cfg.xdp.max_large_answers,
        sets: cfg.xdp.max_answer_sets,
        steered: cfg.xdp.max_steered_names * 2,
        geo: cfg.xdp.max_geo_blocks,
    }
}

/// What to raise when the steering tables do not fit the maps (`None`: they do). Unlike hot
/// answers, nothing steered is left to the daemon: a client placed by a partial region map
/// would get another region's answers, so such a configuration is refused.
#[must_use]
pub fn steering_advice(cfg: &Config, snap: &Snapshot) -> Option<String> {
    let s = &snap.steering;
    let x = &cfg.xdp;
    let [v4, v6] = &s.map.families;
    let mut raise = Vec::new();
    for (key, need, have) in [
        // A reload that changes the steering writes the new sets beside the old ones (one
        // switch of generation), so the maps hold two configurations' sets for a moment.
        ("xdp.max_answer_sets", 2 * s.sets.len(), x.max_answer_sets),
        (
            "xdp.max_steered_names",
            s.service_count(),
            x.max_steered_names,
        ),
        (
            "xdp.max_geo_blocks",
            v4.blocks.len().max(v6.blocks.len()),
            x.max_geo_blocks,
        ),
    ] {
        if need > have as usize {
            raise.push(format!("{key} = {have} to at least {need}"));
        }
    }
    // The region tables, each generation's half sized by xdp.max_geo_blocks.
    if !s.regions.is_empty() {
        use dnsfast_common::geotable::{V4_FIRST, V4_MAX_GROUPS, V6_STRIDES};

        use crate::geo::table::Table;
        let cap = capacity(cfg);
        let need4 = Table::need(32, &[V4_FIRST, 8], &v4.blocks)[1];
        let need6: usize = Table::need(128, &V6_STRIDES, &v6.blocks)
            .iter()
            .zip(V6_STRIDES)
            .map(|(g, s)| g << s)
            .sum();
        if need4 > V4_MAX_GROUPS / 2 {
            raise.push(format!(
                "xdp.max_geo_blocks in vain: the IPv4 region table holds at most {} /24s \
                 split into longer blocks, and this map has {need4} (use fewer, coarser \
                 region subnets)",
                V4_MAX_GROUPS / 2
            ));
        } else if need4 > crate::xdp::geo4_groups_half(&cap) as usize
            || need6 > crate::xdp::geo6_entries_half(&cap) as usize
        {
            let blocks = crate::xdp::geo_blocks_for(need4, need6);
            raise.push(format!(
                "xdp.max_geo_blocks = {} to at least {blocks} (the region tables need {need4} \
                 IPv4 groups and {need6} IPv6 entries)",
                x.max_geo_blocks
            ));
        }
    }
    (!raise.is_empty()).then(|| {
        format!(
            "the steering tables do not fit the XDP maps; raise {}",
            raise.join(", ")
        )
    })
}

/// What to raise when the hot answers do not all fit the maps (`None`: they do).
#[must_use]
pub fn capacity_advice(cfg: &Config, fit: &mapsync::Fit) -> Option<String> {
    if fit.skipped == 0 {
        return None;
    }
    let x = &cfg.xdp;
    let mut raise = Vec::new();
    for (key, need, have) in [
        ("xdp.max_hot_names", fit.keys, x.max_hot_names),
        ("xdp.max_large_answers", fit.large, x.max_large_answers),
        ("xdp.max_answers", fit.small, x.max_answers),
    ] {
        if need > have as usize {
            raise.push(format!("{key} = {have} to at least {need}"));
        }
    }
    if raise.is_empty() {
        // Short names whose probe run was full need small slots too.
        raise.push(format!(
            "xdp.max_answers = {} (full probe runs need slots)",
            x.max_answers
        ));
    }
    Some(format!(
        "{} of {} hot answers do not fit the XDP maps and would be answered by the daemon; raise {}",
        fit.skipped,
        fit.keys,
        raise.join(", ")
    ))
}

fn setup_dataplane(cfg: &Config, inst: &Instance, snap: &Snapshot) -> Result<Dataplane> {
    let iface = cfg.xdp.interface.as_deref().context("xdp.interface")?;
    if let Some(advice) = steering_advice(cfg, snap) {
        bail!("{}: {advice}", cfg.path.display());
    }
    let pin_dir = inst.prepare_pin_dir()?;
    let cap = capacity(cfg);
    let t = Instant::now();
    let mut dp = Dataplane::load(cap, Some(&pin_dir))?;
    dp.set_config(&xdp_config(cfg)?)?;
    let load_time = t.elapsed();
    let t = Instant::now();
    let st = dp.apply_with(
        &snap.hot.as_changes(),
        snap.steering.map_changes(0).steering(),
    )?;
    let answers_time = t.elapsed();
    let t = Instant::now();
    dp.set_regions(&snap.steering, 0)?;
    dp.set_ecs(&snap.ecs)?;
    tracing::info!(
        "XDP program loaded in {load_time:?} ({}); {} hot answers written in {answers_time:?} \
         ({} skipped); region map written in {:?}",
        dp.program_size()
            .map_or_else(|e| format!("size unknown: {e:#}"), |p| p.to_string()),
        dp.hot_keys(),
        st.skipped,
        t.elapsed()
    );
    if let Some(st) = snap.steering.status(&snap.ecs) {
        let text = control::render_steering(&st);
        tracing::info!("{}", text.trim_end().replace('\n', "; "));
    }
    let how = dp.attach(iface, cfg.xdp.mode)?;
    tracing::info!(
        "XDP attached to {iface} ({}), maps pinned under {}",
        how.as_str(),
        pin_dir.display()
    );
    Ok(dp)
}

/// The TCP limits for `cfg`, the total cut to what the open-file limit leaves (raised to its
/// hard limit first), with a warning when that is less than configured.
fn tcp_limits(cfg: &Config) -> Result<tcp::Limits> {
    let (budget, nofile) = tcp::connection_budget().context("open-file limit")?;
    let mut max = cfg.tcp_max_connections;
    if max > budget {
        tracing::warn!(
            "server.tcp_max_connections = {max} does not fit the open-file limit ({nofile}, \
             RLIMIT_NOFILE; LimitNOFILE= under systemd): at most {budget} TCP connections at once"
        );
        max = budget.max(1);
    }
    Ok(tcp::Limits {
        max,
        per_client: cfg.tcp_max_per_client,
        idle: cfg.tcp_idle_timeout,
    })
}

/// Logs that start-up ended early because of `s`.
fn stopped_while_starting(s: Signal, during: &str) {
    tracing::info!("{} while {during}: stopped before serving", s.name());
}

/// Runs the daemon for `cfg` until SIGINT or SIGTERM. `signals` holds what arrived while
/// starting (they stay blocked, see [`crate::signals`]): a stop ends start-up at the next step,
/// a SIGHUP reloads once serving.
pub async fn run(cfg: Config, inst: Instance, snapshot: Snapshot, signals: Signals) -> Result<()> {
    let mut signals = signals;
    // The first round of health checks before anything is served: every address starts down
    // and its first result (or timeout) decides, so the first answers are already checked.
    let forced_file = ForcedStates::file(&cfg.state_dir);
    let forced = ForcedStates::load(&forced_file)?;
    if !forced.entries.is_empty() {
        tracing::info!(
            "{} forced states (drains) from {}",
            forced.entries.len(),
            forced_file.display()
        );
    }
    let (checker, mut reports) = health::Checker::new();
    let checker = Arc::new(checker);
    let targets = snapshot.steering.targets();
    snapshot
        .steering
        .health
        .store(Arc::new(snapshot.steering.health_from(
            &checker.table.lock(),
            &forced,
            Instant::now(),
        )));
    if !targets.is_empty() {
        let t = Instant::now();
        checker.sync(&targets).await;
        let table = checker.table.lock();
        let up = table.values().filter(|s| s.up).count();
        snapshot
            .steering
            .health
            .store(Arc::new(snapshot.steering.health_from(
                &table,
                &forced,
                Instant::now(),
            )));
        tracing::info!(
            "health: first round of {} checks in {:?}: {up} up, {} down",
            targets.len(),
            t.elapsed(),
            targets.len() - up
        );
    }
    let dataplane = match cfg.xdp.mode {
        XdpMode::Off => None,
        _ => Some(setup_dataplane(&cfg, &inst, &snapshot).inspect_err(|_| inst.cleanup())?),
    };
    if let Some(s) = signals.stop_requested()? {
        stopped_while_starting(s, "loading the XDP program");
        drop(dataplane);
        inst.cleanup();
        return Ok(());
    }
    let shared = Arc::new(Shared::new(snapshot));
    let mut tasks = tokio::task::JoinSet::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    let mut listeners = Vec::new();
    let bound = (|| -> Result<tcp::Limits> {
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
            listeners.push(tokio::net::TcpListener::from_std(l)?);
        }
        // Every other descriptor is open now: what is left of the open-file limit bounds TCP.
        tcp_limits(&cfg)
    })();
    let stopped = match bound {
        Err(e) => Err(e),
        Ok(limits) => match signals.stop_requested()? {
            None => Ok(Some(limits)),
            Some(s) => {
                stopped_while_starting(s, "opening sockets");
                Ok(None)
            }
        },
    };
    let Ok(Some(limits)) = stopped else {
        stop.store(true, Ordering::Relaxed);
        for t in udp_threads {
            let _ = t.join();
        }
        drop(dataplane);
        inst.cleanup();
        return stopped.map(|_| ());
    };
    let tcp = Arc::new(tcp::Table::new(limits));
    for l in listeners {
        tasks.spawn(tcp::acceptor(l, Arc::clone(&shared), Arc::clone(&tcp)));
    }
    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        inst: inst.clone(),
        shared: Arc::clone(&shared),
        tcp,
        dataplane: Mutex::new(dataplane),
        maps: Mutex::new(MapHealth::default()),
        reloads: AtomicU64::new(0),
        last_reload_error: Mutex::new(None),
        checker,
        forced: Mutex::new(forced),
        forced_file,
        health_updates: AtomicU64::new(0),
        undelivered: Mutex::new(None),
        fail_open_entered: AtomicU64::new(0),
        nodata_entered: AtomicU64::new(0),
        last_health_update: Mutex::new(std::collections::VecDeque::new()),
    });
    daemon.set_answering(true);

    // Health results: a change of up or down rewrites the affected answer sets, and so does
    // a failed check of an address that stays up (its answers' TTL cap).
    let health_daemon = Arc::clone(&daemon);
    tasks.spawn(async move {
        while let Some(r) = reports.recv().await {
            let (changed, pending) = {
                let mut table = health_daemon.checker.table.lock();
                // A target whose first probe was lost has no state yet: this result is its
                // first.
                let s = table.entry(r.target.clone()).or_default();
                let was = s.pending_until;
                let changed = s.record(&r.target.check, r.outcome.clone(), r.started);
                if changed {
                    health_daemon
                        .undelivered
                        .lock()
                        .expect("lock")
                        .get_or_insert(r.at);
                }
                if changed {
                    tracing::info!(
                        "health: {} {} is {} ({})",
                        r.target.check.name,
                        r.target.addr,
                        if s.up { "up" } else { "down" },
                        r.outcome.detail
                    );
                }
                (changed, was != s.pending_until)
            };
            if changed || pending {
                let d = Arc::clone(&health_daemon);
                let at = changed.then_some(r.at);
                let _ = tokio::task::spawn_blocking(move || d.apply_health(at)).await;
            }
        }
    });
    // Forced states that expire: swept every 100 ms (an expiry takes effect that late at most).
    // The TTL caps of addresses with failed checks count down on the same tick (a cap is
    // rounded up to the second, so each set's changes once a second).
    let sweep_daemon = Arc::clone(&daemon);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(health::CAP_REFRESH);
        loop {
            tick.tick().await;
            let swept = sweep_daemon.forced.lock().expect("forced lock").sweep();
            let pending = sweep_daemon
                .checker
                .table
                .lock()
                .values()
                .any(|s| s.pending_until.is_some());
            if swept || pending {
                let d = Arc::clone(&sweep_daemon);
                let _ = tokio::task::spawn_blocking(move || {
                    if swept {
                        d.save_forced();
                        tracing::info!("a forced state expired");
                    }
                    d.apply_health(swept.then(Instant::now));
                })
                .await;
            }
        }
    });

    let status_daemon = Arc::clone(&daemon);
    let force_daemon = Arc::clone(&daemon);
    let control = control::listen(&inst.socket()).context("control socket")?;
    tasks.spawn(async move {
        let status: Arc<dyn Fn() -> Status + Send + Sync> =
            Arc::new(move || status_daemon.status());
        let force: Arc<control::ForceFn> = Arc::new(move |req| force_daemon.force(req));
        control::serve(control, status, force).await;
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

    // What arrived since the last look: SIGHUPs merge into the one pending reload, a stop wins.
    if let Some(s) = signals.stop_requested()? {
        tracing::info!("{}", s.name());
        return shutdown(&daemon, tasks, &stop, udp_threads, &inst);
    }
    let mut signals = signals.into_async()?;
    let mut reload_now = signals.take_reload_pending();
    loop {
        if std::mem::take(&mut reload_now) {
            instance::notify("RELOADING=1");
            let d = Arc::clone(&daemon);
            tokio::task::spawn_blocking(move || d.reload()).await?;
            instance::notify("READY=1");
            continue;
        }
        tokio::select! {
            s = signals.recv() => match s? {
                Signal::Hangup => reload_now = true,
                s => {
                    tracing::info!("{}", s.name());
                    break;
                }
            },
            Some(r) = tasks.join_next() => {
                if let Err(e) = r {
                    bail!("a server task failed: {e}");
                }
            }
        }
    }

    shutdown(&daemon, tasks, &stop, udp_threads, &inst)
}

/// Stops serving: XDP answering off, tasks and UDP workers ended, detached, pins removed.
fn shutdown(
    daemon: &Daemon,
    mut tasks: tokio::task::JoinSet<()>,
    stop: &AtomicBool,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    inst: &Instance,
) -> Result<()> {
    tracing::info!("shutting down");
    instance::notify("STOPPING=1");
    daemon.checker.stop();
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

/// `d` in whole microseconds.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// How a set answers with no healthy endpoint anywhere in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AllDownMode {
    /// Its undrained endpoints as if healthy.
    Open,
    /// NODATA.
    Nodata,
}

/// Per set, whether (and how) it answers with nothing healthy in its chain.
fn all_down(health: &[Eligible]) -> Vec<Option<AllDownMode>> {
    health
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (e.from == i && e.healthy == 0).then_some(if e.eligible == 0 {
                AllDownMode::Nodata
            } else {
                AllDownMode::Open
            })
        })
        .collect()
}
