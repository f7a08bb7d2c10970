//! The configuration file (TOML): what to serve, where, and how.
//!
//! Every key, its default and its meaning is listed in the README ("Configuration"). Errors name
//! the file, the line and the key; unknown keys are errors, so a typo never silently falls back
//! to a default.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use hickory_proto::rr::Name;
use serde::Deserialize;
use toml::Spanned;

pub mod health;
pub mod steering;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (falls back to generic with a warning when the driver cannot).
    Native,
    /// In the kernel's generic path (any interface; checks logic, not speed).
    Generic,
    /// No XDP: the daemon answers everything.
    Off,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Off => "off",
        })
    }
}

/// A configuration error: file, line, key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The key, dotted (`xdp.interface`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    instance: Option<Spanned<String>>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    xdp: RawXdp,
    #[serde(default, rename = "zone")]
    zones: Vec<Spanned<RawZone>>,
    #[serde(default)]
    geoip: steering::RawGeoip,
    #[serde(default)]
    ecs: RawEcs,
    #[serde(default)]
    steering: steering::RawSteering,
    #[serde(default, rename = "region")]
    regions: Vec<Spanned<steering::RawRegion>>,
    #[serde(default, rename = "endpoint")]
    endpoints: Vec<Spanned<steering::RawEndpoint>>,
    #[serde(default, rename = "service")]
    services: Vec<Spanned<steering::RawService>>,
    #[serde(default, rename = "check")]
    checks: Vec<Spanned<health::RawCheck>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEcs {
    enabled: Option<bool>,
    resolvers: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Whose EDNS Client Subnet (RFC 7871) options are honoured: decide steered answers and are
/// echoed in every answer from our zones. One not honoured is ignored and not echoed, as by a
/// server without ECS support.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EcsPolicy {
    /// Every resolver's (the default).
    #[default]
    Any,
    /// Only those of resolvers in these prefixes (at most `MAX_ECS_RESOLVERS`).
    Listed(Vec<ipnet::IpNet>),
    /// Nobody's.
    Off,
}

impl EcsPolicy {
    /// Whether a query from `resolver` has its option honoured.
    #[must_use]
    pub fn honours(&self, resolver: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Off => false,
            Self::Listed(l) => {
                let r = resolver.to_canonical();
                l.iter().any(|n| n.contains(&r))
            }
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Vec<Spanned<String>>>,
    udp_workers: Option<Spanned<i64>>,
    tcp_idle_timeout: Option<Spanned<i64>>,
    tcp_max_connections: Option<Spanned<i64>>,
    tcp_max_per_client: Option<Spanned<i64>>,
    allow_shared_port: Option<bool>,
    state_dir: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    version: Option<Spanned<String>>,
    nsid: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXdp {
    mode: Option<Spanned<XdpMode>>,
    interface: Option<Spanned<String>>,
    max_hot_names: Option<Spanned<i64>>,
    max_answers: Option<Spanned<i64>>,
    max_large_answers: Option<Spanned<i64>>,
    max_answer_sets: Option<Spanned<i64>>,
    max_steered_names: Option<Spanned<i64>>,
    max_geo_blocks: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    origin: Spanned<String>,
    file: Spanned<String>,
}

/// A zone to load.
#[derive(Clone, Debug)]
pub struct ZoneSource {
    /// The zone's apex.
    pub origin: Name,
    /// Its master file (relative paths are relative to the configuration file).
    pub file: PathBuf,
    /// Line of the `file` key in the configuration file, for errors about the file itself.
    pub line: usize,
}

/// XDP settings.
#[derive(Clone, Debug)]
pub struct XdpSettings {
    /// How to attach.
    pub mode: XdpMode,
    /// Interface to attach to (required unless `mode` is off).
    pub interface: Option<String>,
    /// Capacity of the hot-name maps (names × types × regions).
    pub max_hot_names: u32,
    /// Small answer slots (up to 4 A or 1 AAAA records).
    pub max_answers: u32,
    /// Large answer slots (up to 16 records).
    pub max_large_answers: u32,
    /// Answer sets (one per family of each region's own pool of each steered name).
    pub max_answer_sets: u32,
    /// Steered names (each holds two blocks of `REGION_SETS`: A and AAAA).
    pub max_steered_names: u32,
    /// Region-map blocks per family.
    pub max_geo_blocks: u32,
}

/// What the server says about itself; each is off unless configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// TXT answer to `id.server.` and `hostname.bind.` in class CH (RFC 4892).
    pub server_id: Option<String>,
    /// TXT answer to `version.server.` and `version.bind.` in class CH.
    pub version: Option<String>,
    /// NSID option payload (RFC 5001), sent to queries that ask for it.
    pub nsid: Option<Vec<u8>>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// Instance name: pins, control socket and logs are keyed by it.
    pub instance: String,
    /// Addresses to answer on (UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// UDP sockets (`SO_REUSEPORT`) and threads per listen address.
    pub udp_workers: usize,
    /// Close an idle TCP connection after this long.
    pub tcp_idle_timeout: Duration,
    /// Most TCP connections open at once.
    pub tcp_max_connections: usize,
    /// Most TCP connections open at once from one client (IPv4 address, IPv6 /64).
    pub tcp_max_per_client: usize,
    /// Start even when sockets of other processes are bound to our addresses (with
    /// `SO_REUSEPORT` they would take a share of our queries).
    pub allow_shared_port: bool,
    /// Where state that outlives the process is kept (the forced states of drains).
    pub state_dir: PathBuf,
    /// Identity answers (CH TXT, NSID).
    pub identity: Identity,
    /// XDP settings.
    pub xdp: XdpSettings,
    /// The zones.
    pub zones: Vec<ZoneSource>,
    /// Regions, endpoints and steered names, if any region is configured.
    pub steering: Option<steering::Steering>,
    /// Whose Client Subnet options are honoured.
    pub ecs: EcsPolicy,
    /// Lines of keys that later checks (of the host, at start) refer to: `(key, line)`, one per
    /// value for a list.
    pub lines: Vec<(&'static str, usize)>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Validates configuration `text` read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let err = |span: Range<usize>, key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            line: line_of(text, span.start),
            key: key.to_string(),
            message,
        };
        let toml_err = |key: &str, e: &toml::de::Error| {
            err(e.span().unwrap_or(0..0), key, e.message().to_string())
        };
        let doc = toml::Deserializer::parse(text).map_err(|e| toml_err("(syntax)", &e))?;
        // toml's own errors carry only the span; the path tracker supplies the key, so a
        // wrong type or an unknown key is named like every other error below.
        let raw: RawConfig = serde_path_to_error::deserialize(doc)
            .map_err(|e| toml_err(&dotted_key(e.path()), e.inner()))?;
        let base = path.parent().unwrap_or(Path::new("."));

        let instance = match raw.instance {
            None => "default".to_string(),
            Some(s) => {
                let v = s.get_ref();
                let ok = !v.is_empty()
                    && v.len() <= 32
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(err(
                        s.span(),
                        "instance",
                        format!("{v:?} must be 1-32 characters of a-z, A-Z, 0-9, '-' or '_'"),
                    ));
                }
                v.clone()
            }
        };

        let mut lines = Vec::new();
        if let Some(list) = &raw.server.listen {
            lines.extend(
                list.iter()
                    .map(|s| ("server.listen", line_of(text, s.span().start))),
            );
        }
        if let Some(s) = &raw.xdp.interface {
            lines.push(("xdp.interface", line_of(text, s.span().start)));
        }
        let listen = match raw.server.listen {
            None => vec![
                "0.0.0.0:53".parse().expect("literal"),
                "[::]:53".parse().expect("literal"),
            ],
            Some(list) => {
                let mut out = Vec::new();
                for s in list {
                    let addr: SocketAddr = s.get_ref().parse().map_err(|_| {
                        err(
                            s.span(),
                            "server.listen",
                            format!(
                                "{:?} is not an address:port (IPv6 in brackets: \"[2001:2::1]:53\")",
                                s.get_ref()
                            ),
                        )
                    })?;
                    if out.contains(&addr) {
                        return Err(err(
                            s.span(),
                            "server.listen",
                            format!("{addr} listed twice"),
                        ));
                    }
                    out.push(addr);
                }
                if out.is_empty() {
                    return Err(err(0..0, "server.listen", "no address to listen on".into()));
                }
                out
            }
        };
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let udp_workers = bounded(
            raw.server.udp_workers,
            u32::try_from(cpus).unwrap_or(256).min(256),
            1,
            256,
            "server.udp_workers",
            &err,
        )?;
        let tcp_idle = bounded(
            raw.server.tcp_idle_timeout,
            10,
            1,
            3600,
            "server.tcp_idle_timeout",
            &err,
        )?;
        let tcp_max = bounded(
            raw.server.tcp_max_connections,
            1024,
            1,
            1_000_000,
            "server.tcp_max_connections",
            &err,
        )?;
        let tcp_per_client = bounded(
            raw.server.tcp_max_per_client,
            64,
            1,
            1_000_000,
            "server.tcp_max_per_client",
            &err,
        )?;

        let identity = Identity {
            server_id: txt_value(raw.server.identity.as_ref(), "server.identity", &err)?,
            version: txt_value(raw.server.version.as_ref(), "server.version", &err)?,
            nsid: match &raw.server.nsid {
                None => None,
                Some(s) => {
                    Some(nsid_value(s.get_ref()).map_err(|m| err(s.span(), "server.nsid", m))?)
                }
            },
        };

        let mode = raw
            .xdp
            .mode
            .as_ref()
            .map_or(XdpMode::Native, |m| *m.get_ref());
        let interface = raw.xdp.interface.as_ref().map(|s| s.get_ref().clone());
        if let Some(s) = &raw.xdp.interface
            && (s.get_ref().is_empty() || s.get_ref().len() > 15 || s.get_ref().contains('/'))
        {
            return Err(err(
                s.span(),
                "xdp.interface",
                format!("{:?} is not an interface name", s.get_ref()),
            ));
        }
        if mode != XdpMode::Off && interface.is_none() {
            let span = raw.xdp.mode.as_ref().map_or(0..0, Spanned::span);
            return Err(err(
                span,
                "xdp.interface",
                format!("required with xdp.mode = \"{mode}\" (or set xdp.mode = \"off\")"),
            ));
        }
        if mode != XdpMode::Off {
            let ports: Vec<u16> = listen.iter().map(SocketAddr::port).collect();
            if ports.iter().any(|p| *p != ports[0]) {
                return Err(err(
                    0..0,
                    "server.listen",
                    "with XDP on, every listen address must use the same port".into(),
                ));
            }
        }
        let max_hot = bounded(
            raw.xdp.max_hot_names,
            65_536,
            1,
            16_777_216,
            "xdp.max_hot_names",
            &err,
        )?;
        let max_answers = bounded(
            raw.xdp.max_answers,
            max_hot,
            2,
            33_554_432,
            "xdp.max_answers",
            &err,
        )?;
        let max_large = bounded(
            raw.xdp.max_large_answers,
            16_384,
            2,
            4_194_304,
            "xdp.max_large_answers",
            &err,
        )?;
        let max_answer_sets = bounded(
            raw.xdp.max_answer_sets,
            4096,
            1,
            262_144,
            "xdp.max_answer_sets",
            &err,
        )?;
        let max_steered_names = bounded(
            raw.xdp.max_steered_names,
            1024,
            1,
            65_536,
            "xdp.max_steered_names",
            &err,
        )?;
        let max_geo_blocks = bounded(
            raw.xdp.max_geo_blocks,
            524_288,
            16,
            4_194_304,
            "xdp.max_geo_blocks",
            &err,
        )?;

        let mut zones: Vec<ZoneSource> = Vec::new();
        for z in &raw.zones {
            let z = z.get_ref();
            let origin = absolute_name(z.origin.get_ref())
                .map_err(|m| err(z.origin.span(), "zone.origin", m))?;
            if zones
                .iter()
                .any(|o| o.origin.eq_case(&origin) || o.origin == origin)
            {
                return Err(err(
                    z.origin.span(),
                    "zone.origin",
                    format!("zone {origin} listed twice"),
                ));
            }
            let file = base.join(z.file.get_ref());
            let line = line_of(text, z.file.span().start);
            zones.push(ZoneSource { origin, file, line });
        }
        if zones.is_empty() {
            return Err(err(
                0..0,
                "zone",
                "no [[zone]] configured: nothing to serve".into(),
            ));
        }
        let ecs = match (raw.ecs.enabled, raw.ecs.resolvers) {
            (Some(false), Some(r)) if !r.get_ref().is_empty() => {
                return Err(err(
                    r.span(),
                    "ecs.resolvers",
                    "ecs.enabled is false: no resolver's Client Subnet is honoured".into(),
                ));
            }
            (Some(false), _) => EcsPolicy::Off,
            (_, None) => EcsPolicy::Any,
            (_, Some(list)) => {
                let span = list.span();
                let mut out = Vec::new();
                for s in list.get_ref() {
                    let net: ipnet::IpNet = s
                        .get_ref()
                        .parse()
                        .or_else(|_| s.get_ref().parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            err(
                                s.span(),
                                "ecs.resolvers",
                                format!(
                                    "{:?} is not an address or prefix (\"198.18.0.0/15\", \
                                     \"2001:2::/48\")",
                                    s.get_ref()
                                ),
                            )
                        })?;
                    if steering::is_ipv4_mapped(&net) {
                        return Err(err(
                            s.span(),
                            "ecs.resolvers",
                            format!(
                                "{:?} is IPv4-mapped: write it as IPv4 (resolvers at \
                                 ::ffff:a.b.c.d are matched as a.b.c.d)",
                                s.get_ref()
                            ),
                        ));
                    }
                    out.push(net.trunc());
                }
                if out.is_empty() {
                    return Err(err(
                        span,
                        "ecs.resolvers",
                        "empty: to honour nobody's Client Subnet set ecs.enabled = false".into(),
                    ));
                }
                if out.len() > dnsfast_common::maps::MAX_ECS_RESOLVERS {
                    return Err(err(
                        span,
                        "ecs.resolvers",
                        format!(
                            "{} prefixes: at most {} (the XDP program's resolver tables)",
                            out.len(),
                            dnsfast_common::maps::MAX_ECS_RESOLVERS
                        ),
                    ));
                }
                EcsPolicy::Listed(out)
            }
        };
        let steering = steering::parse(
            text,
            base,
            &raw.steering,
            &raw.geoip,
            &raw.regions,
            &raw.endpoints,
            &raw.services,
            health::parse(base, &raw.checks, &err)?,
            &err,
        )?;

        let state_dir = raw.server.state_dir.as_ref().map_or_else(
            || Path::new("/var/lib/dnsfast").join(&instance),
            |d| base.join(d.get_ref()),
        );
        Ok(Self {
            path: path.to_path_buf(),
            instance,
            listen,
            udp_workers: udp_workers as usize,
            tcp_idle_timeout: Duration::from_secs(u64::from(tcp_idle)),
            tcp_max_connections: tcp_max as usize,
            tcp_max_per_client: tcp_per_client as usize,
            allow_shared_port: raw.server.allow_shared_port.unwrap_or(false),
            state_dir,
            identity,
            xdp: XdpSettings {
                mode,
                interface,
                max_hot_names: max_hot,
                max_answers,
                max_large_answers: max_large,
                max_answer_sets,
                max_steered_names,
                max_geo_blocks,
            },
            zones,
            steering,
            ecs,
            lines,
        })
    }

    /// `file:line` of the `index`-th value of `key` (`file` alone if it was not written).
    #[must_use]
    pub fn at(&self, key: &str, index: usize) -> String {
        match self.lines.iter().filter(|(k, _)| *k == key).nth(index) {
            Some((_, line)) => format!("{}:{line}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// The keys whose new value in `new` a reload does not apply (sockets, maps and limits are
    /// set up once, at start).
    #[must_use]
    pub fn restart_only_changes(&self, new: &Self) -> Vec<&'static str> {
        let (a, b) = (self, new);
        [
            ("instance", a.instance != b.instance),
            ("server.listen", a.listen != b.listen),
            ("server.udp_workers", a.udp_workers != b.udp_workers),
            (
                "server.tcp_idle_timeout",
                a.tcp_idle_timeout != b.tcp_idle_timeout,
            ),
            (
                "server.tcp_max_connections",
                a.tcp_max_connections != b.tcp_max_connections,
            ),
            (
                "server.tcp_max_per_client",
                a.tcp_max_per_client != b.tcp_max_per_client,
            ),
            (
                "server.allow_shared_port",
                a.allow_shared_port != b.allow_shared_port,
            ),
            ("server.state_dir", a.state_dir != b.state_dir),
            ("xdp.mode", a.xdp.mode != b.xdp.mode),
            ("xdp.interface", a.xdp.interface != b.xdp.interface),
            (
                "xdp.max_hot_names",
                a.xdp.max_hot_names != b.xdp.max_hot_names,
            ),
            ("xdp.max_answers", a.xdp.max_answers != b.xdp.max_answers),
            (
                "xdp.max_large_answers",
                a.xdp.max_large_answers != b.xdp.max_large_answers,
            ),
            (
                "xdp.max_answer_sets",
                a.xdp.max_answer_sets != b.xdp.max_answer_sets,
            ),
            (
                "xdp.max_steered_names",
                a.xdp.max_steered_names != b.xdp.max_steered_names,
            ),
            (
                "xdp.max_geo_blocks",
                a.xdp.max_geo_blocks != b.xdp.max_geo_blocks,
            ),
        ]
        .into_iter()
        .filter_map(|(k, changed)| changed.then_some(k))
        .collect()
    }

    /// The UDP port the XDP program answers on.
    #[must_use]
    pub fn dns_port(&self) -> u16 {
        self.listen.first().map_or(53, SocketAddr::port)
    }

    /// Listen addresses of one family, and whether a wildcard covers the family.
    #[must_use]
    pub fn addresses(&self, v6: bool) -> (Vec<IpAddr>, bool) {
        let mut addrs = Vec::new();
        let mut any = false;
        for a in &self.listen {
            if a.is_ipv6() != v6 {
                continue;
            }
            if a.ip().is_unspecified() {
                any = true;
            } else {
                addrs.push(a.ip());
            }
        }
        (addrs, any)
    }
}

/// A domain name as written in the configuration (absolute whether or not it ends in a dot); the
/// error quotes it.
pub fn absolute_name(s: &str) -> Result<Name, String> {
    Name::from_ascii(s)
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .map_err(|e| format!("{s:?}: {e}"))
}

/// An integer key with a default and bounds (`min >= 0`).
fn bounded(
    value: Option<Spanned<i64>>,
    default: u32,
    min: u32,
    max: u32,
    key: &str,
    err: &impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(err(
                v.span(),
                key,
                format!("{} is out of range {min}..={max}", v.get_ref()),
            )),
        },
    }
}

/// An identity string for a TXT answer: printable ASCII, one character-string (at most 255).
fn txt_value(
    value: Option<&Spanned<String>>,
    key: &str,
    err: &impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let s = v.get_ref();
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Err(err(
            v.span(),
            key,
            format!("{s:?} must be 1-255 printable ASCII characters"),
        ));
    }
    Ok(Some(s.clone()))
}

/// An NSID payload: `0x` and hex digits for raw bytes, else the string's bytes (1-128 of them).
fn nsid_value(s: &str) -> Result<Vec<u8>, String> {
    let bytes = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?}: after 0x, an even number of hex digits"));
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
            .collect()
    } else {
        if !s.bytes().all(|b| (0x20..0x7F).contains(&b)) {
            return Err(format!("{s:?}: printable ASCII, or 0x and hex digits"));
        }
        s.as_bytes().to_vec()
    };
    if bytes.is_empty() || bytes.len() > 128 {
        return Err(format!("{s:?}: 1-128 bytes"));
    }
    Ok(bytes)
}

/// The dotted key (`server.tcp_idle_timeout`) of a deserialization error's path.
///
/// `Spanned` values deserialize through private fields of their own, which are not keys the user
/// wrote. Array indexes are left out too: the other errors name `zone.file`, not `zone[1].file`,
/// and the line already says which one.
fn dotted_key(path: &serde_path_to_error::Path) -> String {
    let parts: Vec<&str> = path
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key }
                if !key.starts_with("$__serde_spanned_private") =>
            {
                Some(key.as_str())
            }
            serde_path_to_error::Segment::Enum { variant } => Some(variant.as_str()),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        "(document)".into()
    } else {
        parts.join(".")
    }
}

/// 1-based line of byte offset `pos` in `text`.
#[must_use]
#[expect(
    clippy::naive_bytecount,
    reason = "configuration files are small; no crate for this"
)]
pub fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/dnsfast/dnsfast.toml"), text)
    }

    const MINIMAL: &str =
        "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"example.com.zone\"\n";

    #[test]
    fn defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.instance, "default");
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.dns_port(), 53);
        assert_eq!(c.xdp.mode, XdpMode::Off);
        assert_eq!(c.zones[0].origin.to_string(), "example.com.");
        assert_eq!(c.zones[0].file, Path::new("/etc/dnsfast/example.com.zone"));
        assert_eq!(c.tcp_idle_timeout, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse("instance = \"demo\"\n[server]\nlisten = [\"198.18.0.1\"]\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(e.key, "server.listen");
        assert!(
            e.to_string()
                .starts_with("/etc/dnsfast/dnsfast.toml:3: server.listen:"),
            "{e}"
        );

        let e = parse("[server]\nlisten = [\"198.18.0.1:53\"]\nlisten_typo = 1\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("listen_typo"), "{e}");

        let e = parse("[xdp]\nmode = \"native\"\n[[zone]]\norigin = \"a.test\"\nfile = \"f\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "xdp.interface"));

        let e = parse("[xdp]\nmode = \"fast\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");

        let e = parse("instance = \"../x\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "instance"));

        let e = parse("[xdp]\nmode = \"off\"\nmax_hot_names = 0\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "xdp.max_hot_names"));

        let e = parse("[xdp]\nmode = \"off\"\n").unwrap_err();
        assert_eq!(e.key, "zone");
    }

    #[test]
    fn identity() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.identity, Identity::default(), "off unless configured");
        let t = format!(
            "[server]\nidentity = \"ns1.example\"\nversion = \"dnsfast\"\nnsid = \"0x6e7331\"\n{MINIMAL}"
        );
        let c = parse(&t).unwrap();
        assert_eq!(c.identity.server_id.as_deref(), Some("ns1.example"));
        assert_eq!(c.identity.version.as_deref(), Some("dnsfast"));
        assert_eq!(c.identity.nsid.as_deref(), Some(&b"ns1"[..]));
        let t = format!("[server]\nnsid = \"ns1\"\n{MINIMAL}");
        assert_eq!(
            parse(&t).unwrap().identity.nsid.as_deref(),
            Some(&b"ns1"[..])
        );
        for bad in [
            "nsid = \"0x6e7\"",
            "nsid = \"\"",
            "identity = \"\"",
            "version = \"tab\\t\"",
        ] {
            let t = format!("[server]\n{bad}\n{MINIMAL}");
            let e = parse(&t).unwrap_err();
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
    }

    #[test]
    fn reload_names_the_restart_only_keys_that_changed() {
        let a = parse(MINIMAL).unwrap();
        let b = parse(&format!("[server]\ntcp_max_connections = 10\n{MINIMAL}")).unwrap();
        assert_eq!(a.restart_only_changes(&b), ["server.tcp_max_connections"]);
        assert!(a.restart_only_changes(&a).is_empty());
        let c =
            parse(&MINIMAL.replace("mode = \"off\"", "mode = \"off\"\nmax_hot_names = 5")).unwrap();
        // max_answers follows max_hot_names unless set.
        assert_eq!(
            a.restart_only_changes(&c),
            ["xdp.max_hot_names", "xdp.max_answers"]
        );
    }

    #[test]
    fn client_subnet_policy() {
        assert_eq!(
            parse(MINIMAL).unwrap().ecs,
            EcsPolicy::Any,
            "honoured by default"
        );
        let off = parse(&format!("[ecs]\nenabled = false\n{MINIMAL}")).unwrap();
        assert_eq!(off.ecs, EcsPolicy::Off);
        let listed = parse(&format!(
            "[ecs]\nresolvers = [\"198.18.0.0/15\", \"2001:2::1\"]\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(
            listed.ecs,
            EcsPolicy::Listed(vec![
                "198.18.0.0/15".parse().unwrap(),
                "2001:2::1/128".parse().unwrap()
            ])
        );
        assert!(listed.ecs.honours("::ffff:198.19.1.1".parse().unwrap()));
        assert!(!listed.ecs.honours("198.20.0.1".parse().unwrap()));
        for (text, line, says) in [
            ("[ecs]\nresolvers = []\n", 2, "empty"),
            (
                "[ecs]\nresolvers = [\"resolver\"]\n",
                2,
                "not an address or prefix",
            ),
            (
                "[ecs]\nresolvers = [\"::ffff:198.18.0.0/112\"]\n",
                2,
                "IPv4-mapped",
            ),
            (
                "[ecs]\nenabled = false\nresolvers = [\"198.18.0.0/15\"]\n",
                3,
                "ecs.enabled is false",
            ),
        ] {
            let e = parse(&format!("{text}{MINIMAL}")).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (line, "ecs.resolvers"), "{text}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
        // As many as the program's tables hold, not one more.
        let list = |n: u32| {
            let l: Vec<String> = (0..n)
                .map(|i| format!("\"198.{}.{}.0/24\"", 18 + i / 256, i % 256))
                .collect();
            format!("[ecs]\nresolvers = [{}]\n{MINIMAL}", l.join(", "))
        };
        let max = dnsfast_common::maps::MAX_ECS_RESOLVERS as u32;
        assert!(parse(&list(max)).is_ok());
        let e = parse(&list(max + 1)).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "ecs.resolvers"));
        assert!(e.message.contains("at most 1024"), "{}", e.message);
    }

    #[test]
    fn xdp_needs_one_port() {
        let t = "[server]\nlisten = [\"198.18.0.1:53\", \"[2001:2::1]:5353\"]\n[xdp]\ninterface = \"eth0\"\n[[zone]]\norigin = \"a.test\"\nfile = \"f\"\n";
        assert_eq!(parse(t).unwrap_err().key, "server.listen");
    }

    #[test]
    fn type_errors_name_the_dotted_key() {
        let e = parse("[server]\nlisten = [\"198.18.0.1:53\"]\ntcp_idle_timeout = \"ten\"\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/dnsfast/dnsfast.toml:3: server.tcp_idle_timeout: invalid type: string \"ten\", \
             expected i64"
        );
        let e = parse("[server]\nlisten = [\"198.18.0.1:53\", 53]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "server.listen"), "{e}");
        let e = parse("[xdp]\nmode = \"fast\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "xdp.mode"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}[[zone]]\norigin = \"b.test\"\nfile = 7\n"
        ))
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (8, "zone.file"), "{e}");
        let e = parse("[server]\nlisten_typo = 1\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "server.listen_typo"), "{e}");
        assert!(e.message.contains("unknown field `listen_typo`"), "{e}");

        // Only a document that is not TOML at all is a syntax error.
        let e = parse("[server\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "(syntax)"), "{e}");
    }

    #[test]
    fn zones_remember_their_line() {
        let c = parse(&format!("# comment\n{MINIMAL}")).unwrap();
        assert_eq!(c.zones[0].line, 6);
    }
}
