//! `cargo xtask run`: a test host in the network namespace `dnsfast-demo` serving the shipped
//! example (`examples/dnsfast.toml`) until Ctrl-C, then everything removed. With `--smoke` the
//! printed commands are run and checked instead of waiting.

use std::{process::Command, sync::mpsc, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use dnsfast_tests::{host::TestHost, service::Service};

use crate::{dnsfast_bin, root};

const NETNS: &str = "dnsfast-demo";

/// Runs `cmd` (a shell line as printed) and returns its stdout.
fn output(line: &str) -> Result<String> {
    let out = Command::new("sh").args(["-c", line]).output()?;
    if !out.status.success() {
        bail!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub fn run(smoke: bool) -> Result<()> {
    let bin = dnsfast_bin();
    let config = root().join("examples/dnsfast.toml");
    // Names and the 198.18.0.0/24 / 2001:2::/64 subnet match examples/dnsfast.toml.
    let host = TestHost::with_names(0, NETNS, "dnsf-cli", "dnsf-srv")
        .context("create the demo test host")?;
    let mut pass = Command::new(&bin);
    pass.args(["pass", "--interface", &host.host_if]);
    let _pass = Service::start("pass program", pass, Duration::from_secs(30))?;
    let mut run = Command::new(&bin);
    run.arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--netns", NETNS]);
    let mut daemon = Service::start("dnsfast", run, Duration::from_mins(1))?;

    let status = output(&format!("{} status --netns {NETNS} --json", bin.display()))?;
    let pins = status
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("\"pin_dir\": \"")
                .map(|p| p.trim_end_matches("\",").to_string())
        })
        .context("no pin directory in the status")?;
    let b = bin.display();
    // The bucket that holds www.example.com A (the table's hash is seeded at start), for a
    // bpftool lookup that shows one bucket's named fields.
    let maps = output(&format!("{b} maps --netns {NETNS}"))?;
    let bucket: u32 = maps
        .lines()
        .find(|l| l.starts_with("www.example.com. ") && l.contains(" A "))
        .and_then(|l| l.split("[bucket ").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .context("no bucket for www.example.com A in `dnsfast maps`")?;
    let key = bucket
        .to_le_bytes()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let lines = [
        format!("kdig @{} www.example.com A", host.v4),
        format!("kdig @{} www.example.com AAAA +dnssec", host.v6),
        format!("kdig @{} blog.example.com A +tcp", host.v4),
        format!("kdig @{} nope.example.com A", host.v4),
        format!("{b} status --netns {NETNS}"),
        format!("{b} maps --netns {NETNS}"),
        format!("bpftool map lookup pinned {pins}/HOT_TABLE key {key}"),
        format!("bpftool prog show pinned {pins}/dnsfast"),
    ];
    println!(
        "\ndnsfast serves examples/example.com.zone on {} and {} (netns {NETNS}, XDP on {}).",
        host.v4, host.v6, host.ns_if
    );
    println!("Query it and look inside:\n");
    for l in &lines {
        println!("  {l}");
    }

    if smoke {
        smoke_checks(&lines)?;
    } else {
        println!(
            "\nServing until Ctrl-C. The daemon logs to {}",
            daemon.log_path().display()
        );
        let (tx, rx) = mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = tx.send(());
        })?;
        let _ = rx.recv();
        println!("\nstopping; removing the test host");
    }
    let status = daemon.stop()?;
    if smoke && !status.success() {
        bail!("dnsfast exited with {status}\n{}", daemon.log());
    }
    drop(host);
    Ok(())
}

/// Runs the printed commands and checks what they print.
fn smoke_checks(lines: &[String]) -> Result<()> {
    let a = output(&format!("{} +short", lines[0]))?;
    ensure!(
        a.lines().count() == 3 && a.contains("198.18.1.1"),
        "www A: {a}"
    );
    let aaaa = output(&format!("{} +short", lines[1]))?;
    ensure!(
        aaaa.contains("2001:2:0:1::1") && aaaa.contains("2001:2:0:1::2"),
        "www AAAA: {aaaa}"
    );
    let cname = output(&format!("{} +short", lines[2]))?;
    ensure!(
        cname.starts_with("www.example.com.") && cname.lines().count() == 4,
        "blog A over TCP: {cname}"
    );
    let nx = output(&lines[3])?;
    ensure!(nx.contains("status: NXDOMAIN"), "nope A: {nx}");
    let st = output(&format!("{} --json", lines[4]))?;
    let answered = st
        .split("\"name\": \"answered\",")
        .nth(1)
        .and_then(|s| s.split("\"value\": ").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .context("no answered counter in the status")?;
    ensure!(
        answered >= 2,
        "the XDP program answered {answered} queries, expected the two UDP ones"
    );
    let maps = output(&lines[5])?;
    ensure!(
        maps.contains("www.example.com.") && maps.contains("198.18.1.3"),
        "maps: {maps}"
    );
    let bucket = output(&lines[6])?;
    ensure!(
        bucket.contains("\"qtype\": 1")
            && bucket.contains("\"slot\"")
            && bucket.contains("\"rdata\""),
        "bpftool map lookup: {bucket}"
    );
    output(&lines[7])?;
    println!("\nsmoke: every printed command answered as expected ({answered} answered in XDP)");
    Ok(())
}
