//! Installs what building and testing dnsfast needs, skipping what is already there. The facts
//! behind each step are in `../shared/TOOLCHAIN.md` (nightly version, bpf-linker against the
//! nightly's own libLLVM).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::sh;

/// Debian packages and a command each provides (to tell whether it is installed).
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("bpftool", "bpftool"),
    ("knot-dnsutils", "kdig"),
    ("dnsperf", "dnsperf"),
    // The conformance tests compare our answers with Knot's; the benchmark measures it.
    ("knot", "knotd"),
];

/// What `cargo xtask bench` adds: the other server it compares with.
const BENCH_PACKAGES: &[(&str, &str)] = &[("nsd", "nsd")];

/// The bpf-linker release that works with the nightly's LLVM 22.
const BPF_LINKER: &str = "0.13.0";

/// Full setup, reporting each step.
pub fn setup() -> Result<()> {
    ensure()?;
    println!(
        "setup complete: Debian packages, nightly rust-src and bpf-linker {BPF_LINKER} are in place"
    );
    Ok(())
}

/// Installs whatever is missing; quick when nothing is.
pub fn ensure() -> Result<()> {
    apt()?;
    nightly()?;
    bpf_linker()
}

fn found(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `ensure`, plus the servers the benchmark compares with.
pub fn ensure_bench() -> Result<()> {
    ensure()?;
    apt_install(BENCH_PACKAGES)
}

fn apt() -> Result<()> {
    apt_install(PACKAGES)
}

fn apt_install(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, cmd)| !found(cmd))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "xtask setup: installing Debian packages: {}",
        missing.join(" ")
    );
    sh(Command::new("apt-get").args(["update", "-q"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn rustc_nightly(args: &[&str]) -> Result<String> {
    let out = Command::new("rustc")
        .arg("+nightly")
        .args(args)
        .output()
        .context("run rustc +nightly")?;
    if !out.status.success() {
        bail!(
            "the nightly toolchain is missing (`rustup toolchain list`); this machine's image ships it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn nightly() -> Result<()> {
    let sysroot = PathBuf::from(rustc_nightly(&["--print", "sysroot"])?);
    if sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        return Ok(());
    }
    println!(
        "xtask setup: adding rust-src to the nightly toolchain (needed for -Z build-std=core)"
    );
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER)
        });
    if ok {
        return Ok(());
    }
    println!(
        "xtask setup: building bpf-linker {BPF_LINKER} against the nightly's libLLVM (about 90 s)"
    );
    let sysroot = PathBuf::from(rustc_nightly(&["--print", "sysroot"])?);
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .context("the nightly toolchain has no libLLVM.so.* in its lib directory")?;
    // A prefix that outlives `cargo clean`: bpf-linker's rpath points into it.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let prefix = cargo_home.join("dnsfast-llvm-prefix");
    let libdir = prefix.join("lib");
    std::fs::create_dir_all(&libdir)?;
    for link in ["libLLVM.so", lib.as_str()] {
        let p = libdir.join(link);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(sysroot.join("lib").join(&lib), &p)
            .with_context(|| format!("symlink {}", p.display()))?;
    }
    sh(Command::new("cargo")
        .args([
            "+nightly",
            "install",
            "--force",
            &format!("bpf-linker@{BPF_LINKER}"),
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", &prefix))
}
