//! Each kind of health check against real servers on a test host (no default route): HTTPS
//! with an untrusted certificate (verification on: down; off: up; its CA as `ca_file`, with
//! SNI: down while the file is missing, up at the next probe once it appears), a body that lacks the wanted string, a server that never answers (timeout), a
//! wanted status and Host header, TCP connects that succeed and are refused. The answers hold
//! exactly the endpoints whose checks pass, from the XDP program and the daemon alike; each
//! target is probed on its schedule, once per interval however many services use it; status
//! names what failed. Needs root; test host 50.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use dnsfast_tests::{
    daemon::{TestDaemon, pass_program, write_config},
    dns,
    health::HealthServer,
    host::{TestHost, ip},
};
use hickory_proto::rr::RecordType;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const N: u8 = 50;
const TIMEOUT: Duration = Duration::from_secs(3);
const INTERVAL_MS: u64 = 500;

fn addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, N, 10 + i)
}

/// A listener whose connections `handle` serves one at a time, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(at: SocketAddr, handle: impl Fn(TcpStream) + Send + 'static) -> Self {
        let l = TcpListener::bind(at).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                        handle(c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a request's head (up to the blank line).
fn read_head(c: &mut impl std::io::Read) -> bool {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16_384 {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A CA and a certificate for `health.test` it signed: the server's chain and key, and the
/// CA's PEM.
fn certificates() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "dnsfast test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["health.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ca_cert.pem(),
    )
}

/// An HTTPS server answering 200 `OK` with `chain`.
fn https_server(
    at: SocketAddr,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Server {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain.to_vec(), key.clone_key())
            .unwrap(),
    );
    Server::start(at, move |tcp| {
        let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&cfg)) else {
            return;
        };
        // A client that refuses the certificate aborts the handshake: the read fails.
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        if read_head(&mut tls) {
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    })
}

/// A server that reads the request and never answers (it holds the connection 1 s).
fn silent_server(at: SocketAddr) -> Server {
    Server::start(at, |mut c| {
        read_head(&mut c);
        std::thread::sleep(Duration::from_secs(1));
    })
}

/// What the test checks per endpoint: its check's table, whether it must pass, and what the
/// last result must say.
struct Case {
    check: String,
    port: u16,
    up: bool,
    says: &'static str,
}

#[test]
fn every_kind_of_check_decides_over_the_wire_and_runs_on_its_schedule() {
    let host = TestHost::new(N, "checks").unwrap();
    let _pass = pass_program(&host);
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, ca_pem) = certificates();
    // Written only once the daemon runs: e3 is down (the client cannot be built) until then.
    let ca_file = dir.path().join("ca.pem");
    for i in 1..=8 {
        ip(&[
            "addr",
            "add",
            &format!("{}/24", addr(i)),
            "dev",
            &host.host_if,
        ])
        .unwrap();
    }
    let t = |i: u8, port: u16| SocketAddr::from((addr(i), port));
    let _servers = (
        [1, 2, 3].map(|i| https_server(t(i, 8443), &chain, &key)),
        [4, 5, 7].map(|i| HealthServer::start(t(i, 8080), None).unwrap()),
        silent_server(t(6, 8080)),
    );
    let timing = format!("interval = \"{INTERVAL_MS}ms\"\ntimeout = \"300ms\"\n");
    let cases = [
        Case {
            check: "type = \"https\"\n".into(),
            port: 8443,
            up: false,
            says: "certificate",
        },
        Case {
            check: "type = \"https\"\ntls_verify = false\n".into(),
            port: 8443,
            up: true,
            says: "HTTP 200",
        },
        Case {
            check: format!(
                "type = \"https\"\nsni = \"health.test\"\nca_file = \"{}\"\n",
                ca_file.display()
            ),
            port: 8443,
            up: true,
            says: "HTTP 200",
        },
        Case {
            check: "type = \"http\"\nbody = \"ready\"\n".into(),
            port: 8080,
            up: false,
            says: "\"ready\" is not in the body",
        },
        Case {
            check: "type = \"http\"\nbody = \"OK\"\nhost = \"health.test\"\nstatus = \"200\"\n"
                .into(),
            port: 8080,
            up: true,
            says: "HTTP 200",
        },
        Case {
            check: "type = \"http\"\n".into(),
            port: 8080,
            up: false,
            says: "timeout after 300ms",
        },
        Case {
            check: "type = \"tcp\"\n".into(),
            port: 8080,
            up: true,
            says: "connected",
        },
        Case {
            check: "type = \"tcp\"\n".into(),
            port: 8081,
            up: false,
            says: "connect",
        },
    ];
    let zone = dir.path().join("example.com.zone");
    std::fs::write(
        &zone,
        format!(
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 host 1 7200 3600 1209600 30\n@ NS ns1\n\
             ns1 A 198.18.{N}.1\n"
        ),
    )
    .unwrap();
    let (config, cdir) =
        write_config(&host, "checks", "native", &[("example.com.", &zone)], "").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    let _ = write!(
        text,
        "[steering]\ndefault_region = \"us\"\n[[region]]\nname = \"us\"\nsubnets = [\"198.18.{N}.0/24\"]\n"
    );
    for (i, c) in cases.iter().enumerate() {
        let i = i as u8 + 1;
        let _ = write!(
            text,
            "[[check]]\nname = \"c{i}\"\nport = {}\n{}{}{timing}\
             [[endpoint]]\nname = \"e{i}\"\nipv4 = \"{}\"\ncheck = \"c{i}\"\n",
            c.port,
            if c.check.contains("tcp") {
                ""
            } else {
                "path = \"/health\"\n"
            },
            c.check,
            addr(i)
        );
    }
    let all: Vec<String> = (1..=8)
        .map(|i| format!("{{ endpoint = \"e{i}\" }}"))
        .collect();
    // `api` shares e5 and e7 (their checks still run once per interval).
    let _ = write!(
        text,
        "[[service]]\nname = \"www.example.com\"\nanswer_count = 8\n\
         [[service.pool]]\nregion = \"us\"\nendpoints = [{}]\n\
         [[service]]\nname = \"api.example.com\"\nanswer_count = 8\n\
         [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"e5\" }}, {{ endpoint = \"e7\" }}]\n",
        all.join(", ")
    );
    std::fs::write(&config, &text).unwrap();
    let started = Instant::now();
    let daemon = TestDaemon::start_with(&host, "checks", config, cdir).unwrap();
    let server = SocketAddr::from((host.v4, 53));

    // The first round decided before anything was served: the answers hold exactly the
    // endpoints whose checks pass, from both paths.
    let want: BTreeSet<IpAddr> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.up)
        .map(|(i, _)| IpAddr::V4(addr(i as u8 + 1)))
        .collect();
    let both = |name: &str| -> [BTreeSet<IpAddr>; 2] {
        let q = dns::query(1, name, RecordType::A, Some((1232, false)));
        let udp = dns::udp_exchange(server, &q, TIMEOUT).unwrap();
        let tcp = dns::tcp_exchange(server, std::slice::from_ref(&q), TIMEOUT)
            .unwrap()
            .remove(0);
        [udp, tcp].map(|r| dns::addresses(&r).into_iter().collect())
    };
    let e3 = IpAddr::V4(addr(3));
    let mut without_e3 = want.clone();
    without_e3.remove(&e3);
    assert_eq!(
        both("www.example.com."),
        [without_e3.clone(), without_e3],
        "www: UDP, TCP"
    );
    let api: BTreeSet<IpAddr> = [5, 7].map(|i| IpAddr::V4(addr(i))).into();
    assert_eq!(
        both("api.example.com."),
        [api.clone(), api],
        "api: UDP, TCP"
    );
    let st = daemon.status().unwrap();
    let e3_status = |st: &serde_json::Value| {
        st["health"]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["addr"] == e3.to_string())
            .unwrap()
            .clone()
    };
    let t3 = e3_status(&st);
    assert!(
        t3["state"] == "down" && t3["last"].as_str().unwrap().contains("ca_file"),
        "{t3}"
    );
    // The CA appears: the next probe builds the client and passes (rise 1).
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let by = Instant::now() + Duration::from_millis(3 * INTERVAL_MS + 1_000);
    while both("www.example.com.") != [want.clone(), want.clone()] {
        assert!(
            Instant::now() < by,
            "e3 not answered after its CA appeared: {}",
            e3_status(&daemon.status().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        daemon.xdp_counter("answered").unwrap() >= 2,
        "answered in XDP"
    );

    // Each target's state and last result; probes on the schedule: the first round, then one
    // per interval at a fixed phase. Counted over at least 8 intervals: never more than the
    // schedule allows (one interval apart, shared by both services), at least half of it.
    let settle = started + Duration::from_millis(8 * INTERVAL_MS + 500);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = daemon.status().unwrap();
    let elapsed = started.elapsed();
    let targets = st["health"]["targets"].as_array().unwrap().clone();
    assert_eq!(
        targets.len(),
        cases.len(),
        "one target per address and check"
    );
    let most = 2 + (elapsed.as_millis() / u128::from(INTERVAL_MS)) as u64;
    for (i, c) in cases.iter().enumerate() {
        let a = addr(i as u8 + 1).to_string();
        let target = targets.iter().find(|t| t["addr"] == a).unwrap();
        let state = if c.up { "up" } else { "down" };
        assert_eq!(target["state"], state, "e{}: {target}", i + 1);
        let last = target["last"].as_str().unwrap();
        assert!(
            last.contains(c.says),
            "e{}: {last:?} lacks {:?}",
            i + 1,
            c.says
        );
        let probes = target["probes"].as_u64().unwrap();
        assert!(
            (most / 2..=most).contains(&probes),
            "e{}: {probes} probes in {elapsed:?} (at most {most})",
            i + 1
        );
        println!(
            "e{}: {state}, {last}, {probes} probes in {elapsed:?}",
            i + 1
        );
    }
}
