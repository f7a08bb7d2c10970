//! The test-host harness shared by dnsfast's integration tests and `cargo xtask`.
//!
//! - [`host`]: a test host: a network namespace joined to this one by a veth pair, addressed
//!   from 198.18.0.0/15 and `2001:2::/48`, removed on drop even when a test fails;
//! - [`service`]: a child process started with `NOTIFY_SOCKET` and waited for until it reports
//!   `READY=1` (readiness, never a sleep), stopped by its PID on drop;
//! - [`daemon`]: the real `dnsfast` binary serving a test host, with its status at hand;
//! - [`dns`]: small DNS clients over UDP and TCP with deadlines;
//! - [`battery`]: the protocol battery's zones and questions;
//! - [`hostile`]: the hostile-query table of `docs/conformance.md`;
//! - [`knot`]: Knot DNS serving the battery's zones, for comparison.

pub mod battery;
pub mod daemon;
pub mod dns;
pub mod health;
pub mod host;
pub mod hostile;
pub mod knot;
pub mod service;

use std::path::PathBuf;

/// The workspace root.
#[must_use]
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The hot-name zone of the XDP tests (`example.com.`, `tests/data/hot.zone`).
#[must_use]
pub fn hot_zone() -> PathBuf {
    workspace_root().join("tests/data/hot.zone")
}

/// The `dnsfast` binary the tests run: `$DNSFAST_BIN`, else the one cargo built beside the test
/// executable (`target/<profile>/dnsfast`).
#[must_use]
pub fn dnsfast_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DNSFAST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/dnsfast
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    profile_dir.join("dnsfast")
}
