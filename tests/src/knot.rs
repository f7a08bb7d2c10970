//! Knot DNS (Debian's `knot` package) serving zones on a test host, for comparing answers.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use hickory_proto::rr::RecordType;

use crate::{battery, dns, host::TestHost, service::Service};

/// Where Debian installs it.
pub const KNOTD: &str = "/usr/sbin/knotd";

/// A running `knotd`.
pub struct Knot {
    /// The process.
    pub service: Service,
    _dir: tempfile::TempDir,
}

impl Knot {
    /// Whether Knot is installed (`cargo xtask setup` installs it).
    #[must_use]
    pub fn installed() -> bool {
        Path::new(KNOTD).exists()
    }

    /// Starts Knot in `host`'s namespace on port 53 of its two addresses, serving `zones` with
    /// the battery's identity, and waits until every zone answers its SOA.
    pub fn start(host: &TestHost, zones: &[(&str, PathBuf)], deadline: Duration) -> Result<Self> {
        ensure!(
            Self::installed(),
            "Knot DNS is not installed: `cargo xtask setup` installs it (Debian package knot)"
        );
        let dir = tempfile::tempdir()?;
        let d = dir.path().display();
        let mut conf = format!(
            "server:\n    listen: [ {v4}@53, {v6}@53 ]\n    rundir: {d}\n    \
             identity: \"{id}\"\n    version: \"{ver}\"\n    nsid: \"{nsid}\"\n    \
             udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: {d}\n\
             template:\n  - id: default\n    storage: {d}\n    semantic-checks: on\n    \
             zonefile-sync: -1\n    journal-content: none\n\
             zone:\n",
            v4 = host.v4,
            v6 = host.v6,
            id = battery::IDENTITY,
            ver = battery::VERSION,
            nsid = battery::NSID,
        );
        for (origin, file) in zones {
            let _ = writeln!(conf, "  - domain: {origin}\n    file: {}", file.display());
        }
        let path = dir.path().join("knot.conf");
        std::fs::write(&path, conf)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns, KNOTD, "-c"])
            .arg(&path);
        let service = Service::start("knotd", cmd, deadline)?;
        // READY=1 comes before the zones are loaded: wait for each one's SOA.
        let server: SocketAddr = (host.v4, 53).into();
        let until = Instant::now() + deadline;
        for (origin, _) in zones {
            loop {
                let q = dns::query(1, origin, RecordType::SOA, None);
                let loaded =
                    dns::udp_exchange(server, &q, Duration::from_millis(500)).is_ok_and(|a| {
                        a.len() > 12 && a[7] == 1 && dns::rcode(&a).is_ok_and(|rc| rc == 0)
                    });
                if loaded {
                    break;
                }
                if Instant::now() > until {
                    bail!(
                        "Knot did not load {origin} within {deadline:?}:\n{}",
                        service.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Self { service, _dir: dir })
    }

    /// Knot's version line.
    pub fn version() -> Result<String> {
        let out = Command::new(KNOTD)
            .arg("--version")
            .output()
            .context(KNOTD)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}
