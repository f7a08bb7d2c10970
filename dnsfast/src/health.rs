//! Health checks: one probe loop per (check, address), a table of each address's state, and
//! the rule that turns results into up and down.
//!
//! Every address a configured check applies to is a [`Target`]; the same check on the same
//! address is one target however many endpoints or services name it. A target starts down; its
//! first result decides; afterwards `fall` consecutive failures mark it down and `rise`
//! consecutive successes up. Each target is probed at once when it appears, then at a fixed
//! phase of its interval (a hash of the target, so addresses are spread over the interval) and
//! exactly one interval apart, which bounds detection by `fall × interval + timeout`. A
//! semaphore caps concurrent probes; probes run on the runtime's tasks and never touch the
//! serving path. A check connects to the endpoint's own address: no proxy, no name resolution
//! (`host` and `sni` are only the header and the TLS server name).

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hash},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::config::health::{BODY_LIMIT, Check, CheckKind};

/// Probes run at once, at most.
pub const MAX_CONCURRENT: usize = 64;

/// One address probed by one check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The check.
    pub check: Arc<Check>,
    /// The endpoint's address.
    pub addr: IpAddr,
}

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Whether it passed.
    pub ok: bool,
    /// What happened: `HTTP 200`, `connected`, or the error.
    pub detail: String,
    /// How long it took, ms.
    pub latency_ms: u64,
}

/// A target's state.
#[derive(Clone, Debug)]
pub struct State {
    /// Up (its addresses may be answered).
    pub up: bool,
    /// Whether a result has decided it yet.
    pub decided: bool,
    /// Consecutive passes and failures, the current run.
    pub passes: u32,
    /// Consecutive failures.
    pub failures: u32,
    /// The last result.
    pub last: Option<Outcome>,
    /// When `up` last changed (or the target appeared).
    pub since: SystemTime,
    /// Probes run.
    pub probes: u64,
    /// While it is up with failed checks: when it could be marked down, at the latest (the
    /// remaining `fall` probes, one interval apart, each taking its timeout).
    pub pending_until: Option<Instant>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            up: false,
            decided: false,
            passes: 0,
            failures: 0,
            last: None,
            since: SystemTime::now(),
            probes: 0,
            pending_until: None,
        }
    }
}

impl State {
    /// Records a result of the probe that started (was due) at `started` under `check`'s fall
    /// and rise; whether `up` changed.
    pub fn record(&mut self, check: &Check, o: Outcome, started: Instant) -> bool {
        self.probes += 1;
        if o.ok {
            self.passes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.passes = 0;
        }
        let up = if !self.decided {
            o.ok
        } else if self.up {
            self.failures < check.fall
        } else {
            self.passes >= check.rise
        };
        self.decided = true;
        self.last = Some(o);
        let changed = up != self.up;
        if changed {
            self.up = up;
            self.since = SystemTime::now();
        }
        self.pending_until = (self.up && self.failures > 0)
            .then(|| started + check.interval * (check.fall - self.failures) + check.timeout);
        changed
    }
}

/// The targets' states, shared by the probe loops' consumer, the reload and the status.
#[derive(Debug, Default)]
pub struct Table {
    states: Mutex<HashMap<Target, State>>,
}

impl Table {
    /// Locks the table.
    ///
    /// # Panics
    /// If a holder panicked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Target, State>> {
        self.states.lock().expect("health table lock")
    }
}

/// A result for the consumer.
#[derive(Debug)]
pub struct Report {
    /// Whose.
    pub target: Target,
    /// What.
    pub outcome: Outcome,
    /// When the probe was due (its place in the target's schedule).
    pub started: Instant,
    /// When the probe ended.
    pub at: Instant,
}

/// The probe loops, one task per target.
#[derive(Debug)]
pub struct Checker {
    loops: Mutex<HashMap<Target, JoinHandle<()>>>,
    permits: Arc<tokio::sync::Semaphore>,
    reports: mpsc::UnboundedSender<Report>,
    /// The table the results go to.
    pub table: Arc<Table>,
}

impl Checker {
    /// A checker sending its results to the returned receiver.
    #[must_use]
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Report>) {
        // Both calls may race with nothing: the first wins and the provider is the same.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                loops: Mutex::new(HashMap::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT)),
                reports: tx,
                table: Arc::new(Table::default()),
            },
            rx,
        )
    }

    /// Runs every target of `targets` that has no loop yet once, at once, and records the
    /// results (every such target starts down; its first result decides): waits for all of
    /// them (each bounded by its timeout). Then starts their loops and stops the loops of
    /// targets no longer wanted (their states stay until [`Self::prune`]: the configuration
    /// served until a reload switches still reads them). Returns the targets that were new.
    pub async fn sync(&self, targets: &[Target]) -> Vec<Target> {
        let new: Vec<Target> = {
            let loops = self.loops.lock().expect("loops lock");
            let mut seen = std::collections::HashSet::new();
            targets
                .iter()
                .filter(|t| !loops.contains_key(*t) && seen.insert(*t))
                .cloned()
                .collect()
        };
        let mut first = tokio::task::JoinSet::new();
        for t in &new {
            let (t, permits) = (t.clone(), Arc::clone(&self.permits));
            first.spawn(async move {
                let started = Instant::now();
                let _p = permits.acquire_owned().await;
                let o = Probe::new(&t).run().await;
                (t, o, started)
            });
        }
        let started = Instant::now();
        while let Some(r) = first.join_next().await {
            let Ok((t, o, at)) = r else { continue };
            let mut table = self.table.lock();
            let st = table.entry(t.clone()).or_default();
            st.record(&t.check, o, at);
        }
        let mut loops = self.loops.lock().expect("loops lock");
        for t in &new {
            let handle = tokio::spawn(probe_loop(
                t.clone(),
                started,
                Arc::clone(&self.permits),
                self.reports.clone(),
            ));
            loops.insert(t.clone(), handle);
        }
        let wanted: std::collections::HashSet<&Target> = targets.iter().collect();
        loops.retain(|t, h| {
            let keep = wanted.contains(t);
            if !keep {
                h.abort();
            }
            keep
        });
        new
    }

    /// Forgets the states of targets not in `targets`.
    pub fn prune(&self, targets: &[Target]) {
        let wanted: std::collections::HashSet<&Target> = targets.iter().collect();
        self.table.lock().retain(|t, _| wanted.contains(t));
    }

    /// Stops every loop.
    pub fn stop(&self) {
        for (_, h) in self.loops.lock().expect("loops lock").drain() {
            h.abort();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The fixed phase of `t` within its interval.
fn phase(t: &Target) -> Duration {
    let h = foldhash::fast::FixedState::with_seed(0x6865_616c_7468).hash_one(t);
    let interval = t.check.interval.as_nanos().max(1) as u64;
    Duration::from_nanos(h % interval)
}

/// Probes `t` at `start + phase + k × interval` for k = 1, 2, … (a probe that overruns skips
/// the instants it missed), sending each result.
async fn probe_loop(
    t: Target,
    start: Instant,
    permits: Arc<tokio::sync::Semaphore>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let interval = t.check.interval;
    let mut next = start + phase(&t);
    let mut prober = Probe::new(&t);
    loop {
        next += interval;
        let now = Instant::now();
        while next <= now {
            next += interval;
        }
        tokio::time::sleep_until(next.into()).await;
        let outcome = {
            let Ok(_p) = permits.acquire().await else {
                return;
            };
            prober.run().await
        };
        let report = Report {
            target: t.clone(),
            outcome,
            started: next,
            at: Instant::now(),
        };
        if reports.send(report).is_err() {
            return;
        }
    }
}

/// What probes a target: it and, for HTTP(S), its client, built once (building one reads the
/// TLS roots) and used for every probe of the target (each still connects afresh: the client
/// keeps no idle connections). A client that could not be built (a `ca_file` missing, say) is
/// tried again at the next probe, and one built with a `ca_file` is built again when the
/// file's modification time changes (a rotated CA).
pub struct Probe {
    target: Target,
    client: Result<Option<reqwest::Client>, String>,
    /// The `ca_file`'s modification time the client was built with.
    ca_mtime: Option<SystemTime>,
}

impl Probe {
    /// The probe of `t`.
    #[must_use]
    pub fn new(t: &Target) -> Self {
        let mut p = Self {
            target: t.clone(),
            client: Ok(None),
            ca_mtime: None,
        };
        p.build();
        p
    }

    fn ca_mtime(&self) -> Option<SystemTime> {
        let path = self.target.check.ca_file.as_ref()?;
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn build(&mut self) {
        self.ca_mtime = self.ca_mtime();
        self.client = if self.target.check.kind == CheckKind::Tcp {
            Ok(None)
        } else {
            http_client(&self.target).map(Some)
        };
    }

    /// One probe, bounded by the check's timeout.
    pub async fn run(&mut self) -> Outcome {
        if self.client.is_err()
            || (self.target.check.ca_file.is_some() && self.ca_mtime() != self.ca_mtime)
        {
            self.build();
        }
        probe(&self.target, self.client.as_ref()).await
    }
}

/// One probe of `t` with `client` (HTTP(S)), bounded by its timeout.
async fn probe(t: &Target, client: Result<&Option<reqwest::Client>, &String>) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(t.check.timeout, probe_inner(t, client)).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (ok, detail) = match result {
        Err(_) => (false, format!("timeout after {:?}", t.check.timeout)),
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(e)) => (false, e),
    };
    Outcome {
        ok,
        detail,
        latency_ms,
    }
}

async fn probe_inner(
    t: &Target,
    client: Result<&Option<reqwest::Client>, &String>,
) -> Result<String, String> {
    let c = &t.check;
    let sock = SocketAddr::new(t.addr, c.port);
    if c.kind == CheckKind::Tcp {
        return tokio::net::TcpStream::connect(sock)
            .await
            .map(|_| "connected".to_string())
            .map_err(|e| format!("connect: {e}"));
    }
    let client = client
        .map_err(Clone::clone)?
        .as_ref()
        .ok_or("no HTTP client")?;
    let scheme = if c.kind == CheckKind::Https {
        "https"
    } else {
        "http"
    };
    // With an SNI name the URL carries the name (the client resolves it to the address, no
    // lookup), so that TLS sends and verifies it; else the address.
    let authority = match (&c.sni, c.kind) {
        (Some(name), CheckKind::Https) => format!("{name}:{}", c.port),
        _ => sock.to_string(),
    };
    let url = format!("{scheme}://{authority}{}", c.path);
    let mut req = client.get(&url);
    if let Some(h) = &c.host {
        req = req.header(reqwest::header::HOST, h);
    }
    let mut resp = req.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    if !c.status_ok(status) {
        return Err(format!("HTTP {status}"));
    }
    if let Some(want) = &c.body {
        let mut body = Vec::new();
        while body.len() < BODY_LIMIT {
            match resp.chunk().await.map_err(|e| error_chain(&e))? {
                Some(chunk) => body.extend_from_slice(&chunk),
                None => break,
            }
        }
        body.truncate(BODY_LIMIT);
        if !body
            .windows(want.len().max(1))
            .any(|w| w == want.as_bytes())
        {
            return Err(format!(
                "HTTP {status}, but {want:?} is not in the body's first {BODY_LIMIT} bytes"
            ));
        }
    }
    Ok(format!("HTTP {status}"))
}

/// The error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// A client for one target: no proxy, no redirects, no pooled connections (each probe
/// connects), the TLS settings of its check.
fn http_client(t: &Target) -> Result<reqwest::Client, String> {
    let c = &t.check;
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .connect_timeout(c.timeout)
        .user_agent(concat!("dnsfast-health/", env!("CARGO_PKG_VERSION")));
    if c.kind == CheckKind::Https {
        if !c.tls_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        } else if let Some(path) = &c.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            b = b.tls_certs_only(certs);
        }
        if let Some(name) = &c.sni {
            b = b.resolve(name, SocketAddr::new(t.addr, c.port));
        }
    }
    b.build().map_err(|e| error_chain(&e))
}

/// How often the daemon refreshes the TTL caps while an address has failed checks.
pub const CAP_REFRESH: Duration = Duration::from_millis(100);

/// The TTL cap (seconds) of answers holding an address that could be marked down at `until`,
/// computed at `now`: the whole seconds left once the refresh period has passed (an answer
/// given before the next refresh expires by `until`), at least 1 (so an answer may outlive
/// `until` by a second at most, near the end).
#[must_use]
pub fn ttl_cap(until: Instant, now: Instant) -> u16 {
    let left = until.saturating_duration_since(now + CAP_REFRESH);
    u16::try_from(left.as_secs().max(1)).unwrap_or(u16::MAX)
}

/// A target's state as `dnsfast status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TargetStatus {
    /// The check's name.
    pub check: String,
    /// The address.
    pub addr: String,
    /// `up`, `down`, or `pending` (no result yet).
    pub state: String,
    /// The last result.
    pub last: String,
    /// Seconds since the state last changed.
    pub since_s: u64,
    /// Consecutive failures (pending ones while up).
    pub failures: u32,
    /// Probes run.
    pub probes: u64,
    /// While up with failed checks: the longest TTL its answers carry, seconds (the time until
    /// it could be marked down, [`ttl_cap`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_in_s: Option<u64>,
}

impl Table {
    /// Every target's status, sorted by check and address.
    #[must_use]
    pub fn status(&self) -> Vec<TargetStatus> {
        let mut out: Vec<TargetStatus> = self
            .lock()
            .iter()
            .map(|(t, s)| TargetStatus {
                check: t.check.name.clone(),
                addr: t.addr.to_string(),
                state: if !s.decided {
                    "pending"
                } else if s.up {
                    "up"
                } else {
                    "down"
                }
                .into(),
                last: s.last.as_ref().map_or_else(String::new, |o| {
                    format!("{} ({} ms)", o.detail, o.latency_ms)
                }),
                since_s: s.since.elapsed().map_or(0, |d| d.as_secs()),
                failures: s.failures,
                probes: s.probes,
                down_in_s: s
                    .pending_until
                    .map(|t| u64::from(ttl_cap(t, Instant::now()))),
            })
            .collect();
        out.sort_by(|a, b| (&a.check, &a.addr).cmp(&(&b.check, &b.addr)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fall: u32, rise: u32) -> Check {
        Check {
            name: "web".into(),
            kind: CheckKind::Http,
            port: 80,
            path: "/".into(),
            status: vec![200..=399],
            host: None,
            body: None,
            tls_verify: true,
            sni: None,
            ca_file: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall,
            rise,
        }
    }

    fn outcome(ok: bool) -> Outcome {
        Outcome {
            ok,
            detail: String::new(),
            latency_ms: 1,
        }
    }

    #[test]
    fn the_first_result_decides_then_fall_and_rise_count() {
        let c = check(3, 2);
        let now = Instant::now();
        let mut s = State::default();
        assert!(!s.up && !s.decided, "down until a result");
        assert!(
            s.record(&c, outcome(true), now),
            "the first pass marks it up at once"
        );
        assert!(!s.record(&c, outcome(false), now));
        assert!(!s.record(&c, outcome(false), now));
        assert!(s.up, "two of three failures");
        assert!(s.record(&c, outcome(false), now), "the third marks it down");
        assert!(!s.up);
        assert!(!s.record(&c, outcome(true), now), "one of two passes");
        assert!(!s.record(&c, outcome(false), now), "the run restarts");
        assert!(!s.record(&c, outcome(true), now));
        assert!(s.record(&c, outcome(true), now), "two in a row");
        assert!(s.up);
        let mut first_fails = State::default();
        assert!(!first_fails.record(&c, outcome(false), now), "stays down");
        assert!(first_fails.decided && !first_fails.up);
        assert_eq!(first_fails.probes, 1);
    }

    #[test]
    fn an_address_up_with_failed_checks_says_when_it_could_be_marked_down() {
        // fall 3, interval 1 s, timeout 500 ms.
        let c = check(3, 1);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = State::default();
        s.record(&c, outcome(true), at(0));
        assert_eq!(s.pending_until, None);
        // The two probes left, one interval apart, the last taking its timeout.
        s.record(&c, outcome(false), at(1));
        assert_eq!(s.pending_until, Some(at(3) + Duration::from_millis(500)));
        s.record(&c, outcome(false), at(2));
        assert_eq!(s.pending_until, Some(at(3) + Duration::from_millis(500)));
        assert!(s.record(&c, outcome(false), at(3)), "down");
        assert_eq!(s.pending_until, None, "down is no longer pending");
        s.record(&c, outcome(true), at(4));
        s.record(&c, outcome(false), at(5));
        assert!(s.pending_until.is_some());
        s.record(&c, outcome(true), at(6));
        assert_eq!(s.pending_until, None, "a pass ends it");
        // A first result that fails is down at once: nothing pending.
        let mut first = State::default();
        first.record(&c, outcome(false), at(0));
        assert_eq!(first.pending_until, None);
    }

    #[test]
    fn phases_spread_over_the_interval() {
        let c = Arc::new(check(3, 1));
        let phases: std::collections::BTreeSet<u128> = (0..50u8)
            .map(|i| {
                let t = Target {
                    check: Arc::clone(&c),
                    addr: IpAddr::from([198, 18, 0, i]),
                };
                phase(&t).as_millis() / 100
            })
            .collect();
        assert!(
            phases.len() >= 8,
            "50 addresses land in {} of 10 tenths",
            phases.len()
        );
        assert!(phases.iter().all(|p| *p < 10));
    }
}
