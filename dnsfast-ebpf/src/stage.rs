//! Profiling builds that stop part way (`cargo xtask bench --stages`).
//!
//! Built with `DNSFAST_STAGE=<n>` in the environment, the program stops after its `n`-th stage
//! and passes the query up (the daemon answers it); the bench reads `bpf_stats` for each build and
//! reports what every stage adds on the packet path, between the kernel's own work, where a
//! `BPF_PROG_TEST_RUN` loop would show a warm-cache figure instead. The last cut comes before the
//! frame changes: a build that stops after growing the frame can neither pass the query up nor
//! answer it, and such builds (dropping the frame, or sending it back unfinished) measured 300 to
//! 360 ns per packet, more than the whole program, most likely because with nothing answered the
//! machine's work around the program changes. A normal build has no `DNSFAST_STAGE`: every
//! [`cut`] compiles to nothing.

use dnsfast_common::stats::Counter;

use crate::Verdict;

/// The last stage run; `u8::MAX` (all of them) in a normal build.
const STAGE: u8 = match option_env!("DNSFAST_STAGE") {
    Some(s) => {
        let b = s.as_bytes();
        assert!(
            b.len() == 1 && b[0] >= b'1' && b[0] <= b'7',
            "DNSFAST_STAGE is a stage from 1 to 7"
        );
        b[0] - b'0'
    }
    None => u8::MAX,
};

/// Ends the program here in the build for stage `n`, passing the query up unchanged.
#[inline(always)]
pub fn cut(n: u8) -> Result<(), Verdict> {
    if STAGE == n {
        Err(Verdict::Pass(Counter::PassNotHot))
    } else {
        Ok(())
    }
}
