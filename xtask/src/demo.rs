//! `cargo xtask run`: a test host in the network namespace `dnsfast-demo` serving a shipped
//! example until Ctrl-C, then everything removed: `examples/dnsfast.toml` (plain
//! authoritative, hot names in XDP), or with `--example seed` `examples/seed/dnsfast.toml` (the
//! seed's three steered regions; the client side gets an address in each region's test
//! subnet). With `--smoke` the printed commands are run and checked instead of waiting.

use std::{process::Command, sync::mpsc, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use dnsfast_tests::{
    health::HealthServer,
    host::{TestHost, ip},
    service::Service,
};

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

/// A shipped example.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Example {
    /// `examples/dnsfast.toml`.
    Basic,
    /// `examples/seed/dnsfast.toml`.
    Seed,
}

/// The seed example's regions and the third octet / fourth group of their test subnets (their
/// endpoints are in `198.18.n0.0/24` and `2001:2:0:n0::/64`).
const SEED_REGIONS: [(&str, u8); 3] = [("us", 1), ("eu", 2), ("apac", 3)];

/// Routes `v4` and `v6` on the server side to its veth end: the client side holds addresses
/// there (no default route on the test host).
fn on_link(host: &TestHost, v4: &str, v6: &str) -> Result<()> {
    ip(&["-n", NETNS, "route", "add", v4, "dev", &host.ns_if])?;
    ip(&["-n", NETNS, "-6", "route", "add", v6, "dev", &host.ns_if])
}

/// The seed instance's forced states (drains): a demo starts and ends without any.
const SEED_FORCED: &str = "/var/lib/dnsfast/seed/forced.json";

/// While a file of this directory named after a seed endpoint exists, its `/health` fails.
const FAIL_DIR: &str = "/run/dnsfast-demo/fail";

/// The seed example's 15 endpoints' health servers: each endpoint's two addresses on the
/// client side of the test host (routes to them on the server side), `/health` on port 8080
/// answering 200, or 503 while `FAIL_DIR/<endpoint>` exists.
fn seed_health_endpoints(host: &TestHost) -> Result<Vec<HealthServer>> {
    let _ = std::fs::remove_dir_all(FAIL_DIR);
    std::fs::create_dir_all(FAIL_DIR).with_context(|| format!("create {FAIL_DIR}"))?;
    let mut servers = Vec::new();
    for (region, n) in SEED_REGIONS {
        on_link(
            host,
            &format!("198.18.{n}0.0/24"),
            &format!("2001:2:0:{n}0::/64"),
        )?;
        for i in 1..=5 {
            let v4: std::net::IpAddr = format!("198.18.{n}0.{i}").parse()?;
            let v6: std::net::IpAddr = format!("2001:2:0:{n}0::{i}").parse()?;
            ip(&["addr", "add", &format!("{v4}/24"), "dev", &host.host_if])?;
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                &host.host_if,
                "nodad",
            ])?;
            let fail = std::path::Path::new(FAIL_DIR).join(format!("{region}-{i}"));
            for a in [v4, v6] {
                servers.push(HealthServer::start((a, 8080).into(), Some(fail.clone()))?);
            }
        }
    }
    Ok(servers)
}

/// The seed example with its checks scaled from 30 s / 5 s to 1 s / 200 ms (the smoke check's
/// failover timeline), beside the build: paths made absolute.
fn scaled_seed_config() -> Result<std::path::PathBuf> {
    let dir = root().join("examples/seed");
    let text = std::fs::read_to_string(dir.join("dnsfast.toml"))?;
    let scaled = text
        .replace("interval = \"30s\"", "interval = \"1s\"")
        .replace("timeout = \"5s\"", "timeout = \"200ms\"")
        .replace(
            "file = \"example.com.zone\"",
            &format!("file = \"{}\"", dir.join("example.com.zone").display()),
        )
        .replace(
            "database = \"../../target/",
            &format!("database = \"{}/", root().join("target").display()),
        );
    ensure!(
        scaled.contains("interval = \"1s\"") && scaled.contains("timeout = \"200ms\""),
        "the seed example's check is not the one the smoke check scales"
    );
    let out = root().join("target/seed-smoke");
    std::fs::create_dir_all(&out)?;
    let path = out.join("dnsfast.toml");
    std::fs::write(&path, scaled)?;
    Ok(path)
}

pub fn run(example: Example, smoke: bool) -> Result<()> {
    let bin = dnsfast_bin();
    let config = match (example, smoke) {
        (Example::Basic, _) => root().join("examples/dnsfast.toml"),
        (Example::Seed, false) => root().join("examples/seed/dnsfast.toml"),
        (Example::Seed, true) => scaled_seed_config()?,
    };
    // Names and the 198.18.0.0/24 / 2001:2::/64 subnet match both examples.
    let host = TestHost::with_names(0, NETNS, "dnsf-cli", "dnsf-srv")
        .context("create the demo test host")?;
    if example == Example::Seed {
        // A client address in each region's test subnet, on-link for the server.
        for (_, n) in SEED_REGIONS {
            ip(&[
                "addr",
                "add",
                &format!("198.18.{n}.2/24"),
                "dev",
                &host.host_if,
            ])?;
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("2001:2:0:{n}::2/64"),
                "dev",
                &host.host_if,
                "nodad",
            ])?;
            on_link(
                &host,
                &format!("198.18.{n}.0/24"),
                &format!("2001:2:0:{n}::/64"),
            )?;
        }
    }
    let health = if example == Example::Seed {
        let _ = std::fs::remove_file(SEED_FORCED);
        seed_health_endpoints(&host)?
    } else {
        Vec::new()
    };
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
    let b = bin.display().to_string();
    let lines = match example {
        Example::Basic => basic_lines(&b, &host, &pins)?,
        Example::Seed => seed_lines(&b, &host),
    };
    println!("Query it and look inside:\n");
    for l in &lines {
        println!("  {l}");
    }

    if smoke {
        match example {
            Example::Basic => smoke_checks(&lines)?,
            Example::Seed => {
                seed_checks(&lines)?;
                seed_timeline(&b, &host)?;
            }
        }
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
    drop(health);
    if example == Example::Seed {
        let _ = std::fs::remove_dir_all("/run/dnsfast-demo");
        let _ = std::fs::remove_file(SEED_FORCED);
    }
    drop(host);
    Ok(())
}

/// The basic example's commands (printed, and run by the smoke check).
fn basic_lines(b: &str, host: &TestHost, pins: &str) -> Result<Vec<String>> {
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
    let lines = vec![
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
    Ok(lines)
}

/// The seed example's commands: a client in each region (by its test subnet), a CNAME to the
/// steered name, `explain` for public addresses, status.
fn seed_lines(b: &str, host: &TestHost) -> Vec<String> {
    let config = root().join("examples/seed/dnsfast.toml");
    let c = config.display();
    println!(
        "\ndnsfast serves the seed example (examples/seed/) on {} and {} (netns {NETNS}, XDP on \
         {}): www.example.com is steered by region: us (NA, SA), eu (EU, AF), apac (AS, OC); \
         this side holds an address in each region's test subnet.",
        host.v4, host.v6, host.ns_if
    );
    let mut lines = Vec::new();
    for (region, n) in SEED_REGIONS {
        lines.push(format!(
            "kdig -b 198.18.{n}.2 @{} www.example.com A    # a client in {region}",
            host.v4
        ));
    }
    for (region, n) in SEED_REGIONS {
        lines.push(format!(
            "kdig -b 2001:2:0:{n}::2 @{} www.example.com AAAA    # a client in {region}",
            host.v6
        ));
    }
    // As a resolver passing its client's subnet (RFC 7871) would ask: the subnet decides.
    lines.push(format!(
        "kdig @{} www.example.com A +subnet=193.0.6.0/24    # ECS: a client in eu's Europe",
        host.v4
    ));
    lines.push(format!(
        "kdig @{} www.example.com AAAA +subnet=2001:dc0:2001::/48    # ECS: a client in apac's \
         Oceania",
        host.v6
    ));
    lines.push(format!("kdig @{} shop.example.com A +tcp", host.v4));
    lines.push(format!(
        "{b} explain --config {c} 193.0.6.139 www.example.com"
    ));
    lines.push(format!("{b} explain --config {c} 2001:dc0:2001::1"));
    lines.push(format!("{b} status --netns {NETNS}"));
    // Health: fail one server, or a whole region, and watch the answers and the status change;
    // drain at once.
    lines.push(format!(
        "touch {FAIL_DIR}/us-1    # fail us-1's /health (rm to heal): it leaves the answers \
         after 3 failed checks, about 95 s"
    ));
    lines.push(format!(
        "touch {FAIL_DIR}/eu-1 {FAIL_DIR}/eu-2 {FAIL_DIR}/eu-3 {FAIL_DIR}/eu-4 {FAIL_DIR}/eu-5    \
         # fail region eu: its clients get us's endpoints (its failover chain: us, apac)"
    ));
    lines.push(format!(
        "{b} drain --netns {NETNS} --region us    # drain us now: its clients get eu's endpoints"
    ));
    lines.push(format!("{b} undrain --netns {NETNS} --region us"));
    lines
}

/// The XDP program's `answered` counter, from the status command `status` with `--json`.
fn xdp_answered(status: &str) -> Result<u64> {
    xdp_counter(status, "answered")
}

/// An XDP counter, from the status command `status` with `--json`.
fn xdp_counter(status: &str, name: &str) -> Result<u64> {
    let st = output(&format!("{status} --json"))?;
    st.split(&format!("\"name\": \"{name}\","))
        .nth(1)
        .and_then(|s| s.split("\"value\": ").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("no {name} counter in the status"))
}

/// The answer's addresses and the Client Subnet echo's SCOPE of a kdig query with `+subnet`.
fn with_subnet(line: &str) -> Result<(Vec<String>, u8)> {
    let cmd = line.split('#').next().unwrap_or(line).trim();
    let out = output(cmd)?;
    // kdig: ";; CLIENT-SUBNET: 193.0.6.0/24/19" (address/SOURCE/SCOPE).
    let scope = out
        .lines()
        .find_map(|l| {
            l.trim_start_matches(';')
                .trim()
                .strip_prefix("CLIENT-SUBNET: ")
        })
        .and_then(|s| s.rsplit('/').next())
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("no Client Subnet echo in: {out}"))?;
    Ok((short(line)?, scope))
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
    let answered = xdp_answered(&lines[4])?;
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

/// The addresses a `+short` answer lists.
fn short(line: &str) -> Result<Vec<String>> {
    let cmd = line.split('#').next().unwrap_or(line).trim();
    Ok(output(&format!("{cmd} +short"))?
        .lines()
        .map(str::to_string)
        .collect())
}

/// Runs the seed example's commands and checks each region's clients get its endpoints.
fn seed_checks(lines: &[String]) -> Result<()> {
    for (i, (region, n)) in SEED_REGIONS.iter().enumerate() {
        let a = short(&lines[i])?;
        ensure!(
            a.len() == 1 && a[0].starts_with(&format!("198.18.{n}0.")),
            "{region} A: {a:?}"
        );
        let aaaa = short(&lines[3 + i])?;
        ensure!(
            aaaa.len() == 1 && aaaa[0].starts_with(&format!("2001:2:0:{n}0::")),
            "{region} AAAA: {aaaa:?}"
        );
    }
    // The Client Subnet decides (the demo's own address would be us's), in XDP, and its echo
    // carries the deciding block's length.
    let (eu, eu_scope) = with_subnet(&lines[6])?;
    ensure!(
        eu.len() == 1 && eu[0].starts_with("198.18.20.") && eu_scope > 0,
        "ECS eu A: {eu:?}, SCOPE {eu_scope}"
    );
    let (apac, apac_scope) = with_subnet(&lines[7])?;
    ensure!(
        apac.len() == 1 && apac[0].starts_with("2001:2:0:30::") && apac_scope > 0,
        "ECS apac AAAA: {apac:?}, SCOPE {apac_scope}"
    );
    // The demo's own address is in no region subnet and no GeoIP network: the default (us).
    let shop = short(&lines[8])?;
    ensure!(
        shop.len() == 2 && shop[0] == "www.example.com." && shop[1].starts_with("198.18.10."),
        "shop A over TCP: {shop:?}"
    );
    let eu = output(&lines[9])?;
    ensure!(
        eu.starts_with("193.0.6.139: region eu (continent EU"),
        "explain: {eu}"
    );
    let apac = output(&lines[10])?;
    ensure!(
        apac.contains("region apac (continent OC"),
        "explain: {apac}"
    );
    let text = output(&lines[11])?;
    ensure!(
        text.contains("steering   regions us eu apac (default us), 1 steered names, 6 answer sets")
            && text.contains("geoip      ")
            && text.contains("flat (country_code)")
            && text.contains("region map IPv4 "),
        "status: {text}"
    );
    let up = text
        .lines()
        .filter(|l| l.starts_with("check ") && l.contains(" up for "))
        .count();
    ensure!(up == 30, "{up} of the 30 endpoint addresses are up: {text}");
    let answered = xdp_answered(&lines[11])?;
    let with_ecs = xdp_counter(&lines[11], "answered_ecs")?;
    ensure!(
        answered >= 6 && with_ecs >= 2,
        "the XDP program answered {answered} queries and {with_ecs} with ECS, expected the six \
         steered UDP ones and the two with ECS"
    );
    // A drained region's clients fail over at once, and come back when it is undrained.
    output(lines[14].split('#').next().unwrap_or_default())?;
    let a = short(&lines[0])?;
    ensure!(
        a.len() == 1 && a[0].starts_with("198.18.20."),
        "us A with us drained: {a:?}"
    );
    output(&lines[15])?;
    let a = short(&lines[0])?;
    ensure!(
        a.len() == 1 && a[0].starts_with("198.18.10."),
        "us A after undrain: {a:?}"
    );
    println!(
        "\nsmoke: every region's clients got its endpoints ({answered} answered in XDP, {with_ecs} \
         with ECS: SCOPE {eu_scope} and {apac_scope}); 30 addresses healthy; a drained us failed \
         over to eu and came back"
    );
    Ok(())
}

/// One A query for www.example.com from a client in us (198.18.1.2): the answer's addresses
/// and TTL.
fn ask_as_us(host: &TestHost, id: u16) -> Result<(Vec<std::net::IpAddr>, u32)> {
    let sock = std::net::UdpSocket::bind("198.18.1.2:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let q = dnsfast_tests::dns::query(
        id,
        "www.example.com.",
        hickory_proto::rr::RecordType::A,
        None,
    );
    sock.send_to(&q, (host.v4, 53))?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).context("no answer")?;
    let (ttls, _) = dnsfast_tests::dns::ttls(&buf[..n]);
    Ok((
        dnsfast_tests::dns::addresses(&buf[..n]),
        ttls.first().copied().unwrap_or(0),
    ))
}

/// The failover timeline of the seed example with its checks scaled to 1 s (timeout 200 ms,
/// fall 3, rise 1; the smoke check runs that copy): region us fails (all five endpoints'
/// `/health`), its clients' answers show the TTL rule while the failures are pending and move
/// to eu, then us heals and they come back. Printed, and checked against 3x the nominal
/// bounds (fall × interval + timeout + 1 s down, interval + timeout + 1 s up).
fn seed_timeline(b: &str, host: &TestHost) -> Result<()> {
    let in_region = |a: &[std::net::IpAddr], prefix: &str| {
        !a.is_empty() && a.iter().all(|x| x.to_string().starts_with(prefix))
    };
    let (a, ttl) = ask_as_us(host, 1)?;
    ensure!(
        in_region(&a, "198.18.10.") && ttl == 60,
        "us before: {a:?} TTL {ttl}"
    );
    let status = format!("{b} status --netns {NETNS} --json");
    let failed = std::time::Instant::now();
    for i in 1..=5 {
        std::fs::write(format!("{FAIL_DIR}/us-{i}"), "")?;
    }
    let down_by = Duration::from_millis(3 * (3 * 1_000 + 200 + 1_000));
    let (mut capped, mut id) = (Vec::<(Duration, u32)>::new(), 1u16);
    let moved = loop {
        id = id.wrapping_add(1);
        let at = failed.elapsed();
        let (a, ttl) = ask_as_us(host, id)?;
        if in_region(&a, "198.18.20.") {
            break at;
        }
        ensure!(in_region(&a, "198.18.10."), "us while failing: {a:?}");
        if ttl < 60 && capped.last().is_none_or(|(_, t)| *t != ttl) {
            capped.push((at, ttl));
        }
        ensure!(
            at < down_by,
            "us still answered from us {at:?} after it failed"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let st = output(&status)?;
    let update_us: u64 = st
        .split("\"last_update_us\": ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .context("no last_update_us in the status")?;
    ensure!(
        !capped.is_empty(),
        "no answer carried a capped TTL while us was failing"
    );
    for i in 1..=5 {
        std::fs::remove_file(format!("{FAIL_DIR}/us-{i}"))?;
    }
    let healed = std::time::Instant::now();
    let up_by = Duration::from_millis(3 * (1_000 + 200 + 1_000));
    let back = loop {
        id = id.wrapping_add(1);
        let (a, ttl) = ask_as_us(host, id)?;
        if in_region(&a, "198.18.10.") && ttl == 60 {
            break healed.elapsed();
        }
        ensure!(
            healed.elapsed() < up_by,
            "us not back {:?} after it healed",
            healed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    println!(
        "\nfailover timeline (the seed's checks scaled to interval 1 s, timeout 200 ms, fall 3, \
         rise 1; bound fall × interval + timeout + 1 s = 4.2 s): region us failed at 0; its \
         clients' answers carried TTL {} while the checks failed; the last deciding result's \
         map update took {update_us} µs; the first answer from eu at {:.0} ms; us healed, \
         its own answers (TTL 60) back {:.0} ms later",
        capped
            .iter()
            .map(|(at, t)| format!("{t} from {:.0} ms", at.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", "),
        moved.as_secs_f64() * 1e3,
        back.as_secs_f64() * 1e3
    );
    Ok(())
}
