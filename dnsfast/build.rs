//! Builds the XDP program (the `dnsfast-xdp` binary of `dnsfast-ebpf`) with the nightly
//! toolchain for `bpfel-unknown-none`, into `OUT_DIR`, where `src/xdp.rs` embeds it.
//!
//! This does what `aya_build::build_ebpf` does, plus one flag it has no way to pass: the whole
//! program, `core` included, is compiled with the BPF target feature
//! `allows-misaligned-mem-access`. DNS fields sit at odd offsets; without the feature LLVM splits
//! every multi-byte packet and scratch access into single bytes (the program was 33.9 KB of
//! instructions instead of 25.4 KB; docs/architecture.md has what that cost per packet). A
//! `#[target_feature]` on the program's functions is not enough: code LLVM does not inline into
//! them, `core`'s copies among it, keeps byte accesses. The verifier accepts misaligned packet
//! and map access on every architecture with efficient unaligned access (x86-64, arm64, ...).
//!
//! Without the BPF toolchain (no `bpf-linker` on `PATH`), or with `DNSFAST_EBPF=stub`, the
//! daemon is built around an empty object instead, with a warning, as aya-template does: the
//! host code then builds and unit-tests on stable alone, and loading XDP fails with a message
//! saying why. `DNSFAST_EBPF=require` makes a missing toolchain an error.
use std::{
    env,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::{Artifact, Message};

/// The toolchain the XDP program builds with (see `../shared/TOOLCHAIN.md`).
const TOOLCHAIN: &str = "nightly";
const TARGET: &str = "bpfel-unknown-none";
const FEATURE: &str = "allows-misaligned-mem-access";

/// The object file name `src/xdp.rs` embeds.
const OBJECT: &str = "dnsfast-xdp";

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=DNSFAST_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let mode = env::var("DNSFAST_EBPF").unwrap_or_default();
    let linker = env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|d| d.join("bpf-linker"))
            .find(|p| p.is_file())
    });
    // Build again when the linker appears (`cargo xtask setup` installs it into cargo's bin
    // directory) or changes; not on every other change of PATH.
    if let Some(p) = &linker {
        println!("cargo::rerun-if-changed={}", p.display());
    } else if let Some(home) = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    {
        println!("cargo::rerun-if-changed={}", home.join("bin").display());
    }
    match (mode.as_str(), linker.is_some()) {
        ("stub", _) | ("", false) => {
            if mode.is_empty() {
                println!(
                    "cargo::warning=bpf-linker not found: dnsfast is built without its XDP \
                     program (xdp.mode = \"off\" only); `cargo xtask setup` installs the BPF toolchain"
                );
            }
            std::fs::write(out_dir.join(OBJECT), []).context("writing the stub XDP object")?;
            return Ok(());
        }
        ("require", false) => bail!(
            "DNSFAST_EBPF=require, but bpf-linker is not on PATH (`cargo xtask setup` installs it)"
        ),
        ("" | "require", true) => {}
        (other, _) => bail!("DNSFAST_EBPF={other:?}: expected \"stub\" or \"require\""),
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "dnsfast-ebpf")
        .ok_or_else(|| anyhow!("dnsfast-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    println!("cargo::rerun-if-changed={root}");
    // The program uses dnsfast-common too; rebuild when it changes.
    println!(
        "cargo::rerun-if-changed={}",
        root.join("../dnsfast-common/src")
    );
    // Profiling builds stop the program part way (`dnsfast-ebpf/src/stage.rs`).
    println!("cargo::rerun-if-env-changed=DNSFAST_STAGE");
    // The kernel headers aya-ebpf picks (its `bpf_target_arch` cfg) are the host's.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;

    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        // BTF, so that bpftool prints map keys and values by field name.
        "-Clink-arg=--btf".to_owned(),
        format!("-Ctarget-feature=+{FEATURE}"),
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", TOOLCHAIN, "cargo", "build", "--release"]);
    cmd.args(["--package", "dnsfast-ebpf", "--bins", "--target", TARGET]);
    cmd.args(["-Z", "build-std=core", "--message-format=json"]);
    // Apart from the outer build's target directory: cargo would wait on its own lock.
    cmd.arg("--target-dir").arg(out_dir.join("ebpf-target"));
    cmd.current_dir(root);
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // Errors and warnings only, no progress lines.
    cmd.env("CARGO_TERM_QUIET", "true");
    // Set by the outer (stable) cargo for its own rustc; the nested build must pick nightly's.
    cmd.env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {cmd:?} (is rustup installed?)"))?;
    let stderr = child.stderr.take().context("stderr")?;
    let forward = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            warn(&line);
        }
    });
    let stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut executables = Vec::new();
    for message in Message::parse_stream(stdout) {
        match message.context("reading the nested cargo's JSON messages")? {
            Message::CompilerArtifact(Artifact {
                executable: Some(exe),
                target,
                ..
            }) => executables.push((target.name, exe.into_std_path_buf())),
            Message::CompilerMessage(m) => {
                m.message
                    .rendered
                    .unwrap_or_default()
                    .lines()
                    .for_each(warn);
            }
            Message::TextLine(line) => warn(&line),
            _ => {}
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {cmd:?}"))?;
    forward
        .join()
        .map_err(|_| anyhow!("stderr forwarder panicked"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    if executables.is_empty() {
        bail!("{cmd:?} built no executable");
    }
    for (name, exe) in executables {
        let dst = out_dir.join(name);
        std::fs::copy(&exe, &dst)
            .with_context(|| format!("copying {} to {}", exe.display(), dst.display()))?;
    }
    Ok(())
}

/// Shows a line of the nested build as a build-script warning, leaving out rustc's note that the
/// target feature is unstable (it is set on purpose, see above): three lines per crate built.
fn warn(line: &str) {
    let t = line.trim();
    if t.is_empty()
        || t == "|"
        || t == format!("warning: unstable feature specified for `-Ctarget-feature`: `{FEATURE}`")
        || t.starts_with("= note: this feature is not stably supported")
    {
        return;
    }
    println!("cargo::warning={line}");
}
