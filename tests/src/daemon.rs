//! The real `dnsfast` binary serving a test host: configuration written to a temporary
//! directory, readiness awaited, status read through `dnsfast status --json`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{dnsfast_bin, host::TestHost, service::Service};

/// Deadline for starting up or reloading: generous (3x and more what it takes on an idle
/// 2-core machine), since the verifier and zone loading share the machine with other tests.
pub const START_DEADLINE: Duration = Duration::from_mins(1);

/// `dnsfast pass` on the far end of `host`'s veth: native XDP needs a program there for
/// `XDP_TX` frames to arrive.
///
/// # Panics
/// When the program cannot be attached.
#[must_use]
pub fn pass_program(host: &TestHost) -> Service {
    let mut cmd = Command::new(dnsfast_bin());
    cmd.args(["pass", "--interface", &host.host_if]);
    Service::start("pass", cmd, Duration::from_secs(30)).expect("attach the pass program")
}

/// Writes the configuration [`TestDaemon::start_opts`] serves into a new temporary directory:
/// the host's two addresses, XDP `mode` on its veth end, `server` appended to `[server]`.
pub fn write_config(
    host: &TestHost,
    instance: &str,
    mode: &str,
    zones: &[(&str, &Path)],
    server: &str,
) -> Result<(PathBuf, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    // Short idle timeouts keep tests quick, unless the test sets its own.
    let idle = if server.contains("tcp_idle_timeout") {
        ""
    } else {
        "tcp_idle_timeout = 5\n"
    };
    // Forced states (drains) in the test's own directory, not the host's.
    let state = if server.contains("state_dir") {
        String::new()
    } else {
        format!("state_dir = \"{}\"\n", dir.path().join("state").display())
    };
    let mut cfg = format!(
        "instance = \"{instance}\"\n[server]\nlisten = [\"{}:53\", \"[{}]:53\"]\n{idle}\
         {state}{server}[xdp]\nmode = \"{mode}\"\ninterface = \"{}\"\n",
        host.v4, host.v6, host.ns_if
    );
    for (origin, file) in zones {
        let _ = write!(
            cfg,
            "[[zone]]\norigin = \"{origin}\"\nfile = \"{}\"\n",
            file.display()
        );
    }
    let config = dir.path().join("dnsfast.toml");
    std::fs::write(&config, cfg)?;
    Ok((config, dir))
}

/// A running daemon.
pub struct TestDaemon {
    /// The process.
    pub service: Service,
    /// Instance name.
    pub instance: String,
    /// Network namespace it serves.
    pub netns: String,
    /// Its configuration file.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    /// Starts `dnsfast run` in `host`'s namespace with XDP `mode` on the namespace's veth end,
    /// listening on the host's two addresses, serving `zones` (origin, file).
    pub fn start(
        host: &TestHost,
        instance: &str,
        mode: &str,
        zones: &[(&str, &Path)],
    ) -> Result<Self> {
        Self::start_opts(host, instance, mode, zones, "")
    }

    /// Like [`Self::start`], with `server` appended to the `[server]` section.
    pub fn start_opts(
        host: &TestHost,
        instance: &str,
        mode: &str,
        zones: &[(&str, &Path)],
        server: &str,
    ) -> Result<Self> {
        let (config, dir) = write_config(host, instance, mode, zones, server)?;
        Self::start_with(host, instance, config, dir)
    }

    /// Starts serving the protocol battery's zones with its identity settings.
    pub fn start_battery(host: &TestHost, instance: &str, mode: &str) -> Result<Self> {
        let zones = crate::battery::zones();
        let refs: Vec<(&str, &Path)> = zones.iter().map(|(o, f)| (*o, f.as_path())).collect();
        Self::start_opts(
            host,
            instance,
            mode,
            &refs,
            &crate::battery::identity_config(),
        )
    }

    /// Starts with an existing configuration file kept in `dir`.
    pub fn start_with(
        host: &TestHost,
        instance: &str,
        config: PathBuf,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        let mut d = Self::spawn_with(host, instance, config, dir, &[])?;
        d.service.wait_for("READY=1", START_DEADLINE)?;
        Ok(d)
    }

    /// Like [`Self::start_with`], running the binary `bin` (a release build, for a test that
    /// measures the daemon's own speed).
    pub fn start_with_bin(
        host: &TestHost,
        instance: &str,
        config: PathBuf,
        dir: tempfile::TempDir,
        bin: &Path,
    ) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--netns", &host.netns]);
        let service = Service::spawn(&format!("dnsfast {instance}"), cmd)?;
        let mut d = Self {
            service,
            instance: instance.into(),
            netns: host.netns.clone(),
            config,
            _dir: dir,
        };
        d.service.wait_for("READY=1", START_DEADLINE)?;
        Ok(d)
    }

    /// Starts `dnsfast run` for `config` without waiting for readiness, behind the command
    /// `wrapper` if one is given (`prlimit …`).
    pub fn spawn_with(
        host: &TestHost,
        instance: &str,
        config: PathBuf,
        dir: tempfile::TempDir,
        wrapper: &[&str],
    ) -> Result<Self> {
        let mut cmd = match wrapper {
            [] => Command::new(dnsfast_bin()),
            [first, rest @ ..] => {
                let mut c = Command::new(first);
                c.args(rest).arg(dnsfast_bin());
                c
            }
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--netns", &host.netns]);
        let service = Service::spawn(&format!("dnsfast {instance}"), cmd)?;
        Ok(Self {
            service,
            instance: instance.into(),
            netns: host.netns.clone(),
            config,
            _dir: dir,
        })
    }

    /// The directory the configuration is in (zone files written there are served on reload).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.config.parent().expect("config has a directory")
    }

    /// `dnsfast status --json`.
    pub fn status(&self) -> Result<Value> {
        let out = Command::new(dnsfast_bin())
            .args([
                "status",
                "--instance",
                &self.instance,
                "--netns",
                &self.netns,
                "--json",
            ])
            .output()?;
        if !out.status.success() {
            bail!("dnsfast status: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).context("status JSON")
    }

    /// An XDP counter from the status.
    pub fn xdp_counter(&self, name: &str) -> Result<u64> {
        let st = self.status()?;
        st["xdp"]["counters"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
            .and_then(|c| c["value"].as_u64())
            .with_context(|| format!("no XDP counter {name} in {st}"))
    }

    /// A userspace counter from the status.
    pub fn server_counter(&self, name: &str) -> Result<u64> {
        self.status()?["server"][name]
            .as_u64()
            .with_context(|| format!("no server counter {name}"))
    }

    /// SIGHUP, then wait until the daemon reports it is ready again.
    pub fn reload(&mut self) -> Result<()> {
        self.service.signal(libc::SIGHUP)?;
        self.service.wait_for("READY=1", START_DEADLINE)
    }
}
