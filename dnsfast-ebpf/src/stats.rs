//! Per-CPU counters (`STATS`), one slot per `dnsfast_common::stats::Counter`.

use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use dnsfast_common::stats::{COUNTERS, Counter};

#[btf_map]
static STATS: PerCpuArray<u64, COUNTERS> = PerCpuArray::new();

/// Adds one to `c` on this CPU. Per-CPU slots need no atomics: only this CPU writes them.
#[inline(always)]
pub fn bump(c: Counter) {
    if let Some(p) = STATS.get_ptr_mut(c.index()) {
        // SAFETY: `p` points at this CPU's slot of a per-CPU array; nothing else writes it while
        // this program runs on this CPU.
        unsafe { *p += 1 };
    }
}
