//! Operator-forced states (drains): an endpoint, one family of it, or a whole region forced
//! down (drained) or up, optionally until a time. They sit beside the health results and win
//! over them, persist in a state file (`server.state_dir`/`forced.json`, written whole and
//! renamed into place) across reloads and restarts, and are set with `dnsfast drain`,
//! `dnsfast undrain` and `dnsfast force-up` over the control socket.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// What a forced state applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// An endpoint, wherever it is in a pool.
    Endpoint,
    /// Every endpoint of a region's own pools (for that region's clients only).
    Region,
}

/// One forced state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forced {
    /// Endpoint or region.
    pub scope: Scope,
    /// Its name.
    pub name: String,
    /// `ipv4` or `ipv6`; none: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// `down` (drained) or `up`.
    pub up: bool,
    /// Until when (ms since 1970); none: until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// A request over the control socket (`force <json>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Sets a forced state (replacing one for the same scope, name and family).
    Set(Forced),
    /// Clears the forced states of a scope and name (of one family, or all).
    Clear {
        /// Endpoint or region.
        scope: Scope,
        /// Its name.
        name: String,
        /// One family; none: every entry of the name.
        #[serde(default)]
        family: Option<String>,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Forced {
    /// Whether it has expired.
    #[must_use]
    pub fn expired(&self, now_ms: u64) -> bool {
        self.until_ms.is_some_and(|u| u <= now_ms)
    }

    /// Whether it covers family `f` (0: IPv4, 1: IPv6).
    fn covers(&self, f: usize) -> bool {
        match self.family.as_deref() {
            None => true,
            Some("ipv4") => f == 0,
            Some(_) => f == 1,
        }
    }

    /// The time left, for status.
    #[must_use]
    pub fn left(&self) -> Option<Duration> {
        self.until_ms
            .map(|u| Duration::from_millis(u.saturating_sub(now_ms())))
    }
}

/// The forced states in effect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForcedStates {
    /// Every entry (expired ones until the next sweep).
    pub entries: Vec<Forced>,
}

impl ForcedStates {
    /// The file they are kept in.
    #[must_use]
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("forced.json")
    }

    /// Reads the state file (none: nothing forced).
    ///
    /// # Errors
    /// An unreadable or malformed file, named.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: not a forced-state file (fix it, or remove it to clear every drain)",
                    path.display()
                )
            }),
        }
    }

    /// Writes the state file whole (a temporary file renamed over it).
    ///
    /// # Errors
    /// The directory or file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
    }

    /// Applies a request; `Err` if it names nothing forced (a clear of nothing).
    ///
    /// # Errors
    /// A clear that matches no entry.
    pub fn apply(&mut self, req: Request) -> Result<(), String> {
        match req {
            Request::Set(f) => {
                self.entries
                    .retain(|e| !(e.scope == f.scope && e.name == f.name && e.family == f.family));
                self.entries.push(f);
                Ok(())
            }
            Request::Clear {
                scope,
                name,
                family,
            } => {
                let before = self.entries.len();
                self.entries.retain(|e| {
                    !(e.scope == scope
                        && e.name == name
                        && (family.is_none() || e.family == family))
                });
                if self.entries.len() == before {
                    Err(format!("nothing is forced for {name}"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Drops expired entries; whether any went.
    pub fn sweep(&mut self) -> bool {
        let now = now_ms();
        let before = self.entries.len();
        self.entries.retain(|e| !e.expired(now));
        self.entries.len() != before
    }

    /// The forced state of endpoint `endpoint`'s family `f` in region `region`'s pools, if
    /// any: the most specific entry wins (an endpoint's family, the endpoint, the region's
    /// family, the region).
    #[must_use]
    pub fn state(&self, region: &str, endpoint: &str, f: usize) -> Option<bool> {
        let now = now_ms();
        let live = || {
            self.entries
                .iter()
                .filter(|e| !e.expired(now) && e.covers(f))
        };
        let pick = |scope: Scope, name: &str, family: bool| {
            live()
                .find(|e| e.scope == scope && e.name == name && e.family.is_some() == family)
                .map(|e| e.up)
        };
        pick(Scope::Endpoint, endpoint, true)
            .or_else(|| pick(Scope::Endpoint, endpoint, false))
            .or_else(|| pick(Scope::Region, region, true))
            .or_else(|| pick(Scope::Region, region, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(scope: Scope, name: &str, family: Option<&str>, up: bool) -> Request {
        Request::Set(Forced {
            scope,
            name: name.into(),
            family: family.map(Into::into),
            up,
            until_ms: None,
        })
    }

    #[test]
    fn the_most_specific_forced_state_wins_and_expired_ones_do_not_count() {
        let mut s = ForcedStates::default();
        s.apply(set(Scope::Region, "eu", None, false)).unwrap();
        assert_eq!(s.state("eu", "eu-1", 0), Some(false));
        assert_eq!(
            s.state("us", "eu-1", 0),
            None,
            "a region drain is its own pools'"
        );
        s.apply(set(Scope::Endpoint, "eu-1", Some("ipv6"), true))
            .unwrap();
        assert_eq!(
            s.state("eu", "eu-1", 1),
            Some(true),
            "the endpoint's family first"
        );
        assert_eq!(s.state("eu", "eu-1", 0), Some(false));
        s.apply(set(Scope::Endpoint, "eu-1", Some("ipv6"), false))
            .unwrap();
        assert_eq!(
            s.entries.len(),
            2,
            "a set replaces the same scope, name and family"
        );
        assert!(
            s.apply(Request::Clear {
                scope: Scope::Endpoint,
                name: "us-9".into(),
                family: None
            })
            .is_err()
        );
        s.apply(Request::Clear {
            scope: Scope::Region,
            name: "eu".into(),
            family: None,
        })
        .unwrap();
        assert_eq!(s.state("eu", "eu-1", 0), None);
        s.entries.push(Forced {
            scope: Scope::Endpoint,
            name: "us-1".into(),
            family: None,
            up: false,
            until_ms: Some(now_ms() - 1),
        });
        assert_eq!(s.state("us", "us-1", 0), None, "expired");
        assert!(s.sweep());
        assert!(!s.sweep());
    }

    #[test]
    fn the_state_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = ForcedStates::file(dir.path());
        assert_eq!(ForcedStates::load(&path).unwrap(), ForcedStates::default());
        let mut s = ForcedStates::default();
        s.apply(set(Scope::Endpoint, "us-1", Some("ipv4"), false))
            .unwrap();
        s.save(&path).unwrap();
        assert_eq!(ForcedStates::load(&path).unwrap(), s);
        std::fs::write(&path, "{").unwrap();
        let e = format!("{:#}", ForcedStates::load(&path).unwrap_err());
        assert!(e.contains("forced.json"), "{e}");
    }
}
