//! The signals a long-running command acts on: SIGHUP (reload), SIGINT and SIGTERM (stop).
//!
//! [`block`] runs as the first thing in `main`, before any thread exists, so every thread
//! inherits a mask that blocks them: none of them is ever fatal, whenever it arrives (SIGHUP's
//! default action is to terminate, and a supervisor's `ExecReload` or a log rotation may send it
//! while a big zone is still loading). Blocked signals wait in the kernel until [`Signals`] reads
//! them from a signalfd. Blocking also keeps them from interrupting system calls: the verifier
//! gives up with `EAGAIN` when a signal is pending, and aya then verifies the program again with
//! a growing log buffer, which turned a 0.4 s start into 9 s.
//!
//! Commands that should die on Ctrl-C like any other tool (`check`, `status`) call [`unblock`].

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use tokio::io::{Interest, unix::AsyncFd};

/// A signal the daemon acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload the configuration.
    Hangup,
    /// SIGINT: stop.
    Interrupt,
    /// SIGTERM: stop.
    Terminate,
}

impl Signal {
    fn from_raw(n: i32) -> Option<Self> {
        match n {
            libc::SIGHUP => Some(Self::Hangup),
            libc::SIGINT => Some(Self::Interrupt),
            libc::SIGTERM => Some(Self::Terminate),
            _ => None,
        }
    }

    /// "SIGHUP", "SIGINT", "SIGTERM".
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Hangup => "SIGHUP",
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        }
    }

    /// Whether it asks us to stop.
    #[must_use]
    pub fn is_stop(self) -> bool {
        self != Self::Hangup
    }
}

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set we own; sigaddset with valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        for s in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
            libc::sigaddset(&raw mut set, s);
        }
        set
    }
}

fn set_mask(how: libc::c_int) {
    let set = handled_set();
    // SAFETY: pthread_sigmask with a valid set; it cannot fail with a valid `how`.
    unsafe { libc::pthread_sigmask(how, &raw const set, std::ptr::null_mut()) };
}

/// Blocks SIGHUP, SIGINT and SIGTERM in the calling thread and every thread it creates later.
pub fn block() {
    set_mask(libc::SIG_BLOCK);
}

/// Gives the calling thread back the default actions (for short-lived commands).
pub fn unblock() {
    set_mask(libc::SIG_UNBLOCK);
}

/// The blocked signals, read from a signalfd: synchronously while starting, then from the
/// async runtime with [`Signals::recv`].
pub struct Signals {
    fd: OwnedFd,
    reload_pending: bool,
}

impl Signals {
    /// A signalfd for the signals [`block`] blocked (call [`block`] first). Signals that arrived
    /// before it exists are already pending and are read from it.
    pub fn new() -> io::Result<Self> {
        let set = handled_set();
        // SAFETY: a new signalfd for a valid set; we own the returned descriptor.
        let fd =
            unsafe { libc::signalfd(-1, &raw const set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            reload_pending: false,
        })
    }

    /// Reads one pending signal, if any, without waiting.
    fn read(&self) -> io::Result<Option<Signal>> {
        loop {
            // SAFETY: signalfd_siginfo is a plain C struct; all-zero bytes are a valid value.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let want = size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading at most `want` bytes into `info`, which has that size.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut info).cast(), want) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if n.unsigned_abs() != want {
                return Err(io::Error::other("short read from signalfd"));
            }
            let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
            if let Some(s) = Signal::from_raw(signo) {
                return Ok(Some(s));
            }
        }
    }

    /// While starting: reads what arrived so far. A stop signal is returned; a SIGHUP is kept
    /// for later (the configuration being started may already be out of date: it is reloaded
    /// once serving).
    pub fn stop_requested(&mut self) -> io::Result<Option<Signal>> {
        while let Some(s) = self.read()? {
            if s.is_stop() {
                return Ok(Some(s));
            }
            if !self.reload_pending {
                tracing::info!("SIGHUP while starting: reloading once serving");
            }
            self.reload_pending = true;
        }
        Ok(None)
    }

    /// Runs `f` on a thread of its own while watching for a stop signal: `None` if one came
    /// first (the thread is abandoned; `f` must leave nothing behind that needs cleaning up).
    pub fn interruptible<T: Send + 'static>(
        &mut self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<Result<T, Signal>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("start".into())
            .spawn(move || {
                let _ = tx.send(f());
            })?;
        loop {
            if let Some(s) = self.stop_requested()? {
                return Ok(Err(s));
            }
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(v) => return Ok(Ok(v)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other("start-up thread panicked"));
                }
            }
        }
    }

    /// Whether a SIGHUP arrived while starting (cleared by the call).
    pub fn take_reload_pending(&mut self) -> bool {
        std::mem::take(&mut self.reload_pending)
    }

    /// For the async runtime (call inside it).
    pub fn into_async(self) -> io::Result<AsyncSignals> {
        // SAFETY: `Signals` owns its descriptor and keeps it open, unchanged, for as long as
        // the `AsyncFd` that owns it exists.
        let fd = unsafe { AsyncFd::register_with_interest(self, Interest::READABLE)? };
        Ok(AsyncSignals { fd })
    }
}

impl std::os::fd::AsRawFd for Signals {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// [`Signals`] read from the async runtime.
pub struct AsyncSignals {
    fd: AsyncFd<Signals>,
}

impl AsyncSignals {
    /// The next signal.
    pub async fn recv(&self) -> io::Result<Signal> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.get_inner().read()? {
                Some(s) => return Ok(s),
                None => guard.clear_ready(),
            }
        }
    }

    /// Whether a SIGHUP arrived while starting (cleared by the call).
    pub fn take_reload_pending(&mut self) -> bool {
        self.fd.get_mut().take_reload_pending()
    }
}
