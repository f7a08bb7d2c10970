//! `cargo xtask`: everything a developer or CI runs, from a fresh clone.
//!
//! - `setup`: installs, idempotently, what a fresh machine lacks (Debian packages, rust-src for
//!   the nightly toolchain, bpf-linker built against the nightly's own LLVM).
//! - `build`: builds the daemon (and with it the XDP program) in release mode.
//! - `run`: with no arguments, the demo: a test host in a network namespace serving the shipped
//!   example until Ctrl-C. `run -- <dnsfast run args>` runs the daemon itself.
//! - `test`: every check and test, the privileged ones included, with the time each phase took.

mod bench;
mod chart;
mod demo;
mod kxdpgun;
mod loadgen;
mod memprobe;
mod queries;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Build the daemon and the XDP program (release).
    Build,
    /// Run the demo (no arguments), or `dnsfast run` with the given arguments.
    Run {
        /// Set the demo up, check that the printed queries answer correctly, tear it down.
        #[arg(long)]
        smoke: bool,
        /// Which shipped example: `basic` (examples/dnsfast.toml) or `seed` (examples/seed/:
        /// the seed's three steered regions).
        #[arg(long, default_value = "basic")]
        example: demo::Example,
        /// Arguments for `dnsfast run` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmark dnsfast against the XDP ceiling, Knot DNS and NSD (needs root).
    Bench {
        /// Short runs, one round, a 100k-name big zone.
        #[arg(long)]
        quick: bool,
        /// Rounds; figures are medians over them.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Only these targets (comma-separated: ceiling, ceiling-grow, ceiling-miss,
        /// ceiling-lpm, ceiling-geo-miss, dnsfast-xdp, dnsfast-user, knot-udp, knot-xdp, nsd).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Only these workloads (comma-separated: hot, hot-do-cookie, mixed, zone-1m, steered,
        /// steered-few, steered-one, hot-ecs; under kxdpgun: open-hot, open-hot-own-core,
        /// open-mixed, open-zone-1m, steered-src).
        #[arg(long, value_delimiter = ',')]
        workloads: Vec<String>,
        /// Instead: what each stage of dnsfast's XDP program adds per packet on `hot` (one
        /// build of the program per stage, each stopping after it; the ceiling beside them).
        #[arg(long, conflicts_with_all = ["only", "workloads"])]
        stages: bool,
        /// After the rounds, this many back-to-back pairs of dnsfast-xdp and knot-udp on `hot`,
        /// and the CPU check `cargo xtask test` makes on them (it takes 5 pairs of a quick run).
        #[arg(long, default_value_t = 0)]
        check_pairs: usize,
    },
    /// Run every check and test (needs root: XDP and network namespaces).
    Test {
        /// Only run test names containing this filter (privileged phase).
        #[arg(long)]
        filter: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Build => setup::ensure().and_then(|()| build_release()),
        Cmd::Run {
            smoke,
            example,
            args,
        } => setup::ensure().and_then(|()| run(example, smoke, &args)),
        Cmd::Bench {
            quick,
            rounds,
            only,
            workloads,
            stages,
            check_pairs,
        } => {
            let rounds = if quick { 1 } else { rounds };
            if stages {
                bench::stages(rounds, quick)
            } else {
                bench::run(&bench::Opts {
                    quick,
                    rounds,
                    only,
                    workloads,
                    check_pairs,
                })
                .and_then(|r| {
                    if check_pairs > 0 {
                        bench::check_cpu(&r)
                    } else {
                        Ok(())
                    }
                })
            }
        }
        Cmd::Test { filter } => test(filter.as_deref()),
    };
    if let Err(e) = r {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `cmd`, failing with its name if it fails.
pub(crate) fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // `setup::ensure` installed bpf-linker, so `dnsfast/build.rs` builds the real program (a
    // stub only where no linker is found, or in the unit-test phase, which asks for one).
    c.current_dir(root());
    c
}

/// Cargo of the nightly toolchain (`$CARGO` is the stable toolchain's own binary, which does not
/// understand `+nightly`).
fn cargo_nightly() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"]).current_dir(root());
    c
}

pub(crate) fn build_release() -> Result<()> {
    sh(cargo().args(["build", "--release", "--package", "dnsfast"]))
}

/// The release binary.
pub(crate) fn dnsfast_bin() -> PathBuf {
    root().join("target/release/dnsfast")
}

fn run(example: demo::Example, smoke: bool, args: &[String]) -> Result<()> {
    build_release()?;
    if args.is_empty() {
        demo::run(example, smoke)
    } else {
        let status = Command::new(dnsfast_bin()).arg("run").args(args).status()?;
        if !status.success() {
            bail!("dnsfast exited with {status}");
        }
        Ok(())
    }
}

/// One phase of `xtask test`.
struct Phase {
    name: &'static str,
    took: Duration,
    ok: bool,
}

fn test(filter: Option<&str>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cargo xtask test needs root: the XDP and network-namespace tests attach programs and create test hosts"
        );
    }
    let total = Instant::now();
    let mut phases: Vec<Phase> = Vec::new();
    let mut phase = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| {
        println!("\n==> {name}");
        let t = Instant::now();
        let r = f();
        if let Err(e) = &r {
            eprintln!("xtask: phase {name} failed: {e:#}");
        }
        phases.push(Phase {
            name,
            took: t.elapsed(),
            ok: r.is_ok(),
        });
        r.is_ok()
    };

    let ready = phase("setup", &mut setup::ensure);
    if ready {
        phase("fmt", &mut || {
            sh(cargo_nightly().args(["fmt", "--all", "--", "--check"]))
        });
        phase("clippy", &mut || {
            sh(cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "dnsfast-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The XDP program is linted as what it is: a BPF binary built with nightly.
            sh(cargo_nightly().args([
                "clippy",
                "--package",
                "dnsfast-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ]))
        });
        phase("unit tests (stub XDP object)", &mut || {
            // The XDP program has no host tests: its code is tested through dnsfast-common and,
            // as the BPF object, by the privileged tests. The host crates' tests build and pass
            // without the BPF toolchain, as a plain `cargo test` on stable does: a target
            // directory of their own, so the stub never meets the real object's build.
            sh(cargo()
                .env("DNSFAST_EBPF", "stub")
                .env("CARGO_TARGET_DIR", root().join("target/host-only"))
                .args([
                    "test",
                    "--workspace",
                    "--exclude",
                    "dnsfast-tests",
                    "--exclude",
                    "dnsfast-ebpf",
                ]))
        });
        phase("build", &mut || {
            sh(cargo().args(["build", "--package", "dnsfast"]))?;
            build_release()
        });
        phase("privileged tests (serial)", &mut || {
            let mut c = cargo();
            // --show-output: the figures tests print (program size, start-up and failover
            // times, CPU) stay in the record of every run.
            c.args([
                "test",
                "--package",
                "dnsfast-tests",
                "--",
                "--test-threads=1",
                "--show-output",
            ]);
            if let Some(f) = filter {
                c.arg(f);
            }
            sh(&mut c)
        });
        if filter.is_none() {
            phase("demo (cargo xtask run --smoke)", &mut || {
                demo::run(demo::Example::Basic, true)
            });
            phase(
                "seed demo (cargo xtask run --example seed --smoke)",
                &mut || demo::run(demo::Example::Seed, true),
            );
            phase("bench --quick (checks)", &mut || {
                let report = bench::run(&bench::Opts {
                    quick: true,
                    rounds: 1,
                    only: Vec::new(),
                    workloads: Vec::new(),
                    check_pairs: 5,
                })?;
                bench::check(&report)
            });
        }
    }

    println!("\n==> summary");
    for p in &phases {
        println!(
            "  {:<34} {:>8.1}s  {}",
            p.name,
            p.took.as_secs_f64(),
            if p.ok { "ok" } else { "FAILED" }
        );
    }
    println!("  {:<34} {:>8.1}s", "total", total.elapsed().as_secs_f64());
    let failed = phases.iter().filter(|p| !p.ok).count();
    if failed > 0 || !ready {
        bail!("{failed} phase(s) failed");
    }
    Ok(())
}
