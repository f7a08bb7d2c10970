//! Child processes that report readiness the systemd way: we hand them `NOTIFY_SOCKET` and wait
//! for `READY=1`, bounded by a deadline (never a sleep). Stopped by PID on drop.

use std::{
    fs::File,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A started child process.
pub struct Service {
    name: String,
    child: Option<Child>,
    notify: UnixDatagram,
    notify_path: PathBuf,
    log_path: PathBuf,
}

impl Service {
    /// Starts `cmd` and waits up to `deadline` for `READY=1`. Output goes to a log file, shown in
    /// the error if the service fails to start.
    pub fn start(name: &str, cmd: Command, deadline: Duration) -> Result<Self> {
        let mut s = Self::spawn(name, cmd)?;
        s.wait_for("READY=1", deadline)?;
        Ok(s)
    }

    /// Starts `cmd` without waiting for it (tests of start-up itself).
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!(
            "dnsfast-{}-{}-{seq}",
            std::process::id(),
            name.replace(['/', ' '], "_")
        );
        let notify_path = std::env::temp_dir().join(format!("{tag}.notify"));
        let log_path = std::env::temp_dir().join(format!("{tag}.log"));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).context("bind notify socket")?;
        let log = File::create(&log_path)?;
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            notify,
            notify_path,
            log_path,
        })
    }

    /// How it exited, if it has (without waiting).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{} already stopped", self.name),
        }
    }

    /// Waits up to `deadline` for it to exit.
    pub fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(st) = self.exited()? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() >= end {
                bail!(
                    "{} still running after {deadline:?}\n--- log ---\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `deadline` for the service to send `state` (e.g. `READY=1` after a reload).
    pub fn wait_for(&mut self, state: &str, deadline: Duration) -> Result<()> {
        let end = Instant::now() + deadline;
        let mut buf = [0u8; 512];
        loop {
            let now = Instant::now();
            if now >= end {
                bail!(
                    "{} did not report {state} within {deadline:?}\n--- log ---\n{}",
                    self.name,
                    self.log()
                );
            }
            self.notify
                .set_read_timeout(Some((end - now).min(Duration::from_millis(100))))?;
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if msg.lines().any(|l| l == state) {
                        return Ok(());
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("notify socket"),
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited ({status}) before reporting {state}\n--- log ---\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    /// The process ID.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = i32::try_from(self.pid())?;
        // SAFETY: kill on the PID of a child we started and have not reaped.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        Ok(())
    }

    /// The file its output goes to.
    #[must_use]
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// What the service wrote so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops the service with SIGTERM (SIGKILL after 10 s) and returns how it exited.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{} already stopped", self.name)
        };
        if child.try_wait()?.is_none() {
            let pid = i32::try_from(child.id())?;
            // SAFETY: as in `signal`.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > end {
                    child.kill()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(child.wait()?)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        let _ = std::fs::remove_file(&self.notify_path);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}
