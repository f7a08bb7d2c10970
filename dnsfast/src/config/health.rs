//! Health checks: `[[check]]` tables, referenced by name from `[[endpoint]] check`.
//!
//! ```toml
//! [[check]]
//! name = "web"
//! type = "http"          # http, https or tcp
//! port = 80              # http: 80, https: 443; tcp: required
//! path = "/health"       # http(s): default "/"
//! status = "200-399"     # http(s): codes and ranges, comma-separated
//! host = "www.example.com"   # http(s): the Host header (no name is resolved)
//! body = "OK"            # http(s): must appear in the first 5,120 bytes of the body
//! tls_verify = true      # https
//! sni = "www.example.com"    # https: the TLS server name (and the name verified)
//! ca_file = "ca.pem"     # https: trust these roots instead of the built-in ones
//! interval = "30s"
//! timeout = "5s"
//! fall = 3
//! rise = 1
//! ```

use std::{
    ops::{Range, RangeInclusive},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    port: Option<Spanned<i64>>,
    path: Option<Spanned<String>>,
    status: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
    tls_verify: Option<Spanned<bool>>,
    sni: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    interval: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<toml::Value>>,
    fall: Option<Spanned<i64>>,
    rise: Option<Spanned<i64>>,
}

/// What a check does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// An HTTP GET.
    Http,
    /// An HTTPS GET.
    Https,
    /// A TCP connect.
    Tcp,
}

/// A health check, run against each address of every endpoint that names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Check {
    /// Its name.
    pub name: String,
    /// HTTP, HTTPS or TCP.
    pub kind: CheckKind,
    /// The port on the endpoint's address.
    pub port: u16,
    /// HTTP(S): the path requested.
    pub path: String,
    /// HTTP(S): the status codes that pass.
    pub status: Vec<RangeInclusive<u16>>,
    /// HTTP(S): the Host header (default: the address).
    pub host: Option<String>,
    /// HTTP(S): a string the first [`BODY_LIMIT`] bytes of the body must hold.
    pub body: Option<String>,
    /// HTTPS: whether the certificate is verified.
    pub tls_verify: bool,
    /// HTTPS: the server name sent and verified (default: the address).
    pub sni: Option<String>,
    /// HTTPS: roots to trust instead of the built-in ones (PEM).
    pub ca_file: Option<PathBuf>,
    /// Time between two checks of one address.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive failures that mark an address down.
    pub fall: u32,
    /// Consecutive successes that mark it up.
    pub rise: u32,
}

/// How much of a response body a check reads.
pub const BODY_LIMIT: usize = 5_120;

type ErrFn<'a> = &'a dyn Fn(Range<usize>, &str, String) -> ConfigError;

/// A duration: a string of a number and a unit (`"200ms"`, `"30s"`, `"2m"`) or an integer
/// number of seconds.
fn duration(v: &Spanned<toml::Value>, key: &str, err: ErrFn<'_>) -> Result<Duration, ConfigError> {
    let bad = || {
        err(
            v.span(),
            key,
            format!(
                "{} is not a duration (\"200ms\", \"30s\", \"2m\", or seconds as an integer)",
                v.get_ref()
            ),
        )
    };
    let d = match v.get_ref() {
        toml::Value::Integer(s) => Duration::from_secs(u64::try_from(*s).map_err(|_| bad())?),
        toml::Value::String(s) => parse_duration(s).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if d < Duration::from_millis(10) || d > Duration::from_hours(1) {
        return Err(err(
            v.span(),
            key,
            format!("{d:?} is out of range 10ms..=1h"),
        ));
    }
    Ok(d)
}

/// A number and a unit: `"200ms"`, `"30s"`, `"2m"`, `"1h"`.
#[must_use]
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..digits].parse().ok()?;
    Some(match s[digits..].trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

/// `"200-399"`, `"200,204"`, `"200-299, 301"`.
fn status_list(
    s: &Spanned<String>,
    err: ErrFn<'_>,
) -> Result<Vec<RangeInclusive<u16>>, ConfigError> {
    let mut out = Vec::new();
    for part in s.get_ref().split(',') {
        let part = part.trim();
        let code = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let range = match part.split_once('-') {
            Some((a, b)) => code(a).zip(code(b)).filter(|(a, b)| a <= b),
            None => code(part).map(|c| (c, c)),
        };
        let Some((a, b)) = range else {
            return Err(err(
                s.span(),
                "check.status",
                format!(
                    "{:?}: {part:?} is not a status code (100-599) or a range of them \
                     (\"200-399\")",
                    s.get_ref()
                ),
            ));
        };
        out.push(a..=b);
    }
    Ok(out)
}

fn count(
    v: Option<&Spanned<i64>>,
    key: &str,
    default: u32,
    err: ErrFn<'_>,
) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) => u32::try_from(*v.get_ref())
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                err(
                    v.span(),
                    key,
                    format!("{} is out of range 1..=100", v.get_ref()),
                )
            }),
    }
}

/// Validates the `[[check]]` tables.
pub(super) fn parse(
    base: &Path,
    checks: &[Spanned<RawCheck>],
    err: ErrFn<'_>,
) -> Result<Vec<Check>, ConfigError> {
    let mut out: Vec<Check> = Vec::new();
    for c in checks {
        let c = c.get_ref();
        let name = super::steering::check_ident(&c.name, "check.name", err)?;
        if out.iter().any(|o| o.name == name) {
            return Err(err(
                c.name.span(),
                "check.name",
                format!("check {name:?} defined twice"),
            ));
        }
        let kind = match c.kind.get_ref().as_str() {
            "http" => CheckKind::Http,
            "https" => CheckKind::Https,
            "tcp" => CheckKind::Tcp,
            other => {
                return Err(err(
                    c.kind.span(),
                    "check.type",
                    format!("{other:?} is not a check type (http, https, tcp)"),
                ));
            }
        };
        // Keys that only one kind takes.
        let for_http = [
            (c.path.as_ref().map(Spanned::span), "check.path"),
            (c.status.as_ref().map(Spanned::span), "check.status"),
            (c.host.as_ref().map(Spanned::span), "check.host"),
            (c.body.as_ref().map(Spanned::span), "check.body"),
        ];
        let for_tls = [
            (c.tls_verify.as_ref().map(Spanned::span), "check.tls_verify"),
            (c.sni.as_ref().map(Spanned::span), "check.sni"),
            (c.ca_file.as_ref().map(Spanned::span), "check.ca_file"),
        ];
        for (span, key) in for_http {
            if let Some(span) = span
                && kind == CheckKind::Tcp
            {
                return Err(err(span, key, "a tcp check only connects".into()));
            }
        }
        for (span, key) in for_tls {
            if let Some(span) = span
                && kind != CheckKind::Https
            {
                return Err(err(span, key, "only an https check uses TLS".into()));
            }
        }
        let port = match (&c.port, kind) {
            (Some(p), _) => u16::try_from(*p.get_ref())
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    err(
                        p.span(),
                        "check.port",
                        format!("{} is out of range 1..=65535", p.get_ref()),
                    )
                })?,
            (None, CheckKind::Http) => 80,
            (None, CheckKind::Https) => 443,
            (None, CheckKind::Tcp) => {
                return Err(err(
                    c.name.span(),
                    "check.port",
                    format!("check {name:?}: a tcp check needs a port"),
                ));
            }
        };
        let path = match &c.path {
            None => "/".to_string(),
            Some(p)
                if p.get_ref().starts_with('/') && !p.get_ref().contains(char::is_whitespace) =>
            {
                p.get_ref().clone()
            }
            Some(p) => {
                return Err(err(
                    p.span(),
                    "check.path",
                    format!("{:?} must start with '/' and hold no spaces", p.get_ref()),
                ));
            }
        };
        let status = match &c.status {
            None => vec![200..=399],
            Some(s) => status_list(s, err)?,
        };
        let interval = match &c.interval {
            None => Duration::from_secs(30),
            Some(v) => duration(v, "check.interval", err)?,
        };
        let timeout = match &c.timeout {
            None => Duration::from_secs(5).min(interval / 2),
            Some(v) => duration(v, "check.timeout", err)?,
        };
        if timeout >= interval {
            let span = c
                .timeout
                .as_ref()
                .map_or_else(|| c.name.span(), Spanned::span);
            return Err(err(
                span,
                "check.timeout",
                format!(
                    "check {name:?}: timeout {timeout:?} must be shorter than interval \
                     {interval:?} (one check of an address at a time)"
                ),
            ));
        }
        for (v, key) in [(&c.host, "check.host"), (&c.sni, "check.sni")] {
            if let Some(v) = v {
                let s = v.get_ref();
                let ok = !s.is_empty()
                    && s.len() <= 253
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
                if !ok {
                    return Err(err(v.span(), key, format!("{s:?} is not a host name")));
                }
            }
        }
        out.push(Check {
            name,
            kind,
            port,
            path,
            status,
            host: c.host.as_ref().map(|h| h.get_ref().clone()),
            body: c.body.as_ref().map(|b| b.get_ref().clone()),
            tls_verify: c.tls_verify.as_ref().is_none_or(|v| *v.get_ref()),
            sni: c.sni.as_ref().map(|h| h.get_ref().clone()),
            ca_file: c.ca_file.as_ref().map(|f| base.join(f.get_ref())),
            interval,
            timeout,
            fall: count(c.fall.as_ref(), "check.fall", 3, err)?,
            rise: count(c.rise.as_ref(), "check.rise", 1, err)?,
        });
    }
    Ok(out)
}

impl Check {
    /// Whether an HTTP status passes.
    #[must_use]
    pub fn status_ok(&self, code: u16) -> bool {
        self.status.iter().any(|r| r.contains(&code))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{
        super::{Config, ConfigError},
        *,
    };

    const BASE: &str = "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"z\"\n\
        [steering]\ndefault_region = \"us\"\n[[region]]\nname = \"us\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/dnsfast.toml"), &format!("{BASE}{extra}"))
    }

    #[test]
    fn checks_take_the_documented_defaults() {
        let c = parse(
            "[[check]]\nname = \"web\"\ntype = \"http\"\n\
             [[check]]\nname = \"tls\"\ntype = \"https\"\nsni = \"www.example.com\"\n\
             ca_file = \"ca.pem\"\ninterval = \"200ms\"\ntimeout = \"50ms\"\nstatus = \"200, 301-302\"\n\
             [[check]]\nname = \"tcp\"\ntype = \"tcp\"\nport = 25\ninterval = 10\nfall = 1\nrise = 5\n\
             [[endpoint]]\nname = \"a\"\nipv4 = \"198.18.0.1\"\ncheck = \"tls\"\n",
        )
        .unwrap();
        let s = c.steering.unwrap();
        let [web, tls, tcp] = &s.checks[..] else {
            panic!("{:?}", s.checks)
        };
        assert_eq!(
            (
                web.port,
                web.path.as_str(),
                web.interval,
                web.timeout,
                web.fall,
                web.rise
            ),
            (
                80,
                "/",
                Duration::from_secs(30),
                Duration::from_secs(5),
                3,
                1
            )
        );
        assert!(web.status_ok(200) && web.status_ok(399) && !web.status_ok(400));
        assert!(web.tls_verify);
        assert_eq!(tls.port, 443);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(tls.interval, Duration::from_millis(200));
        assert!(tls.status_ok(301) && !tls.status_ok(200 + 3) && tls.status_ok(200));
        assert_eq!(
            (tcp.port, tcp.interval, tcp.fall, tcp.rise),
            (25, Duration::from_secs(10), 1, 5)
        );
        assert_eq!(tcp.timeout, Duration::from_secs(5));
        assert_eq!(s.endpoints[0].check, Some(1));
    }

    #[test]
    fn bad_checks_are_refused_naming_the_line_and_key() {
        for (extra, line, key, says) in [
            (
                "[[check]]\nname = \"w\"\ntype = \"ftp\"\n",
                12,
                "check.type",
                "not a check type",
            ),
            (
                "[[check]]\nname = \"w\"\ntype = \"tcp\"\n",
                11,
                "check.port",
                "needs a port",
            ),
            (
                "[[check]]\nname = \"w\"\ntype = \"http\"\ninterval = \"1s\"\ntimeout = \"1s\"\n",
                14,
                "check.timeout",
                "shorter than interval",
            ),
            (
                "[[check]]\nname = \"w\"\ntype = \"http\"\ninterval = \"5 parsecs\"\n",
                13,
                "check.interval",
                "not a duration",
            ),
            (
                "[[check]]\nname = \"w\"\ntype = \"http\"\nstatus = \"200-99\"\n",
                13,
                "check.status",
                "not a status code",
            ),
            (
                "[[check]]\nname = \"w\"\ntype = \"http\"\nsni = \"x\"\n",
                13,
                "check.sni",
                "only an https check",
            ),
            (
                "[[check]]\nname = \"w\"\ntype = \"tcp\"\nport = 1\npath = \"/\"\n",
                14,
                "check.path",
                "only connects",
            ),
            (
                "[[check]]\nname = \"w\"\ntype = \"http\"\nfall = 0\n",
                13,
                "check.fall",
                "out of range",
            ),
            (
                "[[endpoint]]\nname = \"a\"\nipv4 = \"198.18.0.1\"\ncheck = \"nope\"\n",
                13,
                "endpoint.check",
                "no [[check]]",
            ),
        ] {
            let e = parse(extra).expect_err(extra);
            assert_eq!((e.line, e.key.as_str()), (line, key), "{extra}: {e}");
            assert!(e.message.contains(says), "{extra}: {}", e.message);
        }
    }
}
