//! A small HTTP health endpoint for tests and the demo: answers every request with a status
//! (200 with body `OK` unless told otherwise), or 503 while a flag file exists.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};

/// One listening health endpoint, stopped when dropped.
pub struct HealthServer {
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthServer {
    /// Listens on `addr`; while `fail_file` exists every answer is 503.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(addr: SocketAddr, fail_file: Option<PathBuf>) -> Result<Self> {
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let status = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&status), Arc::clone(&stop));
        // Non-blocking accept, polled: stopping never depends on reaching the address (the
        // test host may be gone first).
        l.set_nonblocking(true)?;
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16_384 {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let failing = fail_file.as_ref().is_some_and(|f| f.exists());
                let code = if failing {
                    503
                } else {
                    st.load(Ordering::Relaxed)
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
                );
            }
        });
        Ok(Self {
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// Answers `code` from now on.
    pub fn set(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
