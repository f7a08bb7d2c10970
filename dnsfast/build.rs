//! Builds the XDP program (the `dnsfast-xdp` binary of `dnsfast-ebpf`) with the nightly
//! toolchain for `bpfel-unknown-none`, into `OUT_DIR`, where `src/xdp.rs` embeds it.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
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
    // aya-build forwards the nested cargo's stderr as build warnings; keep that to real messages.
    // SAFETY: build scripts are single-threaded; the variable is read by the child cargo only.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    // The program uses dnsfast-common too; rebuild when it changes.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("../dnsfast-common/src")
    );
    aya_build::build_ebpf(
        [Package {
            name: "dnsfast-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
