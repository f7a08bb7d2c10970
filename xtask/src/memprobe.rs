//! The reference for the big-zone workload: what one random memory access costs on this machine.
//!
//! A lookup among a million names touches one `HOT_TABLE` bucket (one cache line) that no cache
//! holds, in a BPF array map the kernel maps with 4 KiB pages, so it also misses the TLB. This
//! chases pointers through a buffer of the table's size in a random cyclic order, one dependent
//! load at a time, with 4 KiB pages and with 2 MiB pages: the first is what each big-zone lookup
//! pays at least, the difference is what the TLB costs.

use std::time::Instant;

use anyhow::{Result, bail};

/// Nanoseconds per dependent random load over `bytes` of memory, with huge pages or not.
pub fn random_load_ns(bytes: usize, huge: bool, loads: usize) -> Result<f64> {
    const LINE: usize = 64;
    let lines = bytes / LINE;
    if lines < 2 {
        bail!("buffer too small");
    }
    // SAFETY: a fresh private anonymous mapping, unmapped below; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        bail!("mmap {bytes} bytes: {}", std::io::Error::last_os_error());
    }
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: advice on the mapping made above. Failure only means default pages.
    unsafe { libc::madvise(base, bytes, advice) };
    // SAFETY: the mapping is `bytes` long, readable and writable, and u64-aligned (page-aligned).
    let words = unsafe { std::slice::from_raw_parts_mut(base.cast::<u64>(), bytes / 8) };
    // Sattolo's algorithm: one cycle through every line, in a fixed pseudo-random order.
    let mut order: Vec<u32> = (0..lines as u32).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..lines).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        order.swap(i, j);
    }
    for (i, &line) in order.iter().enumerate() {
        let next = order[(i + 1) % lines];
        words[line as usize * (LINE / 8)] = u64::from(next);
    }
    let mut at = 0u64;
    // Warm nothing on purpose beyond the setup writes: the chase itself is the measurement.
    let start = Instant::now();
    for _ in 0..loads {
        at = words[at as usize * (LINE / 8)];
    }
    let ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(u32::try_from(loads)?);
    std::hint::black_box(at);
    // SAFETY: unmapping the mapping made above; `words` is not used after this.
    unsafe { libc::munmap(base, bytes) };
    Ok(ns)
}
