//! The steering part of the configuration: regions, endpoints and services (steered names).
//!
//! ```toml
//! [geoip]
//! database = "GeoLite2-Country.mmdb"
//!
//! [steering]
//! default_region = "us"
//!
//! [[region]]
//! name = "us"
//! continents = ["NA", "SA"]
//! countries = []
//! subnets = ["198.18.1.0/24", "2001:2:0:1::/64"]
//!
//! [[endpoint]]
//! name = "us-1"
//! ipv4 = "198.18.10.1"
//! ipv6 = "2001:2:0:10::1"
//!
//! [[service]]
//! name = "www.example.com."
//! ttl = 60
//! answer_count = 1
//! [[service.pool]]
//! region = "us"
//! endpoints = [{ endpoint = "us-1", weight = 20 }]
//! [[service.pool]]
//! region = "eu"
//! borrow = "us"
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
    path::{Path, PathBuf},
};

use dnsfast_common::{
    maps::{MAX_REGIONS, MAX_SET_RECORDS},
    steer::MAX_ANSWER_COUNT,
};
use hickory_proto::rr::Name;
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, health::Check, line_of};
use crate::geoip::{self, Code};

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSteering {
    default_region: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGeoip {
    database: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegion {
    name: Spanned<String>,
    #[serde(default)]
    subnets: Vec<Spanned<String>>,
    #[serde(default)]
    countries: Vec<Spanned<String>>,
    #[serde(default)]
    continents: Vec<Spanned<String>>,
    failover: Option<Vec<Spanned<String>>>,
    min_healthy: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    name: Spanned<String>,
    ipv4: Option<Spanned<String>>,
    ipv6: Option<Spanned<String>>,
    check: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    name: Spanned<String>,
    ttl: Option<Spanned<i64>>,
    answer_count: Option<Spanned<i64>>,
    all_down: Option<Spanned<String>>,
    #[serde(default)]
    pool: Vec<Spanned<RawPool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    region: Spanned<String>,
    endpoints: Option<Vec<Spanned<RawMember>>>,
    borrow: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    endpoint: Spanned<String>,
    weight: Option<Spanned<i64>>,
}

/// A client region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Its name.
    pub name: String,
    /// Client subnets that belong to it (IPv4 and IPv6); a longer subnet beats a shorter one.
    pub subnets: Vec<IpNet>,
    /// Countries (GeoIP), upper case.
    pub countries: Vec<Code>,
    /// Continents (GeoIP), upper case.
    pub continents: Vec<Code>,
    /// Where its clients go while it is down, in order (region indices; itself not among
    /// them): `failover`, by default the default region (none for the default region).
    pub failover: Vec<usize>,
    /// Eligible endpoints (per family) below which it counts as down.
    pub min_healthy: MinHealthy,
}

/// `region.min_healthy`: a count, or a fraction of the pool (rounded up, at least 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinHealthy {
    /// At least this many.
    Count(u32),
    /// At least this share of the pool's endpoints of the family, 0 < f <= 1.
    Fraction(f64),
}

impl Eq for MinHealthy {}

impl MinHealthy {
    /// The eligible endpoints a pool of `n` needs (at least 1, at most `n` for a fraction).
    #[must_use]
    pub fn needed(self, n: u32) -> u32 {
        match self {
            Self::Count(c) => c.max(1),
            Self::Fraction(f) => {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "0 < f <= 1 and n <= 16"
                )]
                let k = (f * f64::from(n)).ceil() as u32;
                k.clamp(1, n.max(1))
            }
        }
    }
}

/// `service.all_down`: what a service answers when no region of a client's chain has an
/// eligible endpoint of the family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllDown {
    /// Fail open: the home region's endpoints, as if healthy (Route 53 and gdnsd do this).
    #[default]
    ServeAll,
    /// NODATA, negative TTL min(SOA minimum, the service's TTL).
    Nodata,
}

/// The GeoIP database a configuration names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoipSource {
    /// The file (relative paths are relative to the configuration file).
    pub path: PathBuf,
    /// Line of the `geoip.database` key, for errors about the file.
    pub line: usize,
}

/// A server that answers for a service: an IPv4 and/or an IPv6 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name.
    pub name: String,
    /// Its IPv4 address (A answers).
    pub v4: Option<Ipv4Addr>,
    /// Its IPv6 address (AAAA answers).
    pub v6: Option<Ipv6Addr>,
    /// The health check its addresses get (index into `Steering::checks`); none: always
    /// healthy.
    pub check: Option<usize>,
}

/// An endpoint in a pool, with its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Index into `Steering::endpoints`.
    pub endpoint: usize,
    /// Weight, 0..=255 (Route 53's range).
    pub weight: u8,
}

/// What a region of a service answers from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Its own endpoints.
    Own(Vec<Member>),
    /// Another region's pool (the same answer sets): index into `Steering::regions`.
    Borrow(usize),
}

/// A steered name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The owner name (absolute).
    pub name: Name,
    /// TTL of its A/AAAA answers.
    pub ttl: u32,
    /// Addresses an answer carries, 1..=8.
    pub answer_count: u8,
    /// Per region (index into `Steering::regions`): what it answers from. A region the
    /// configuration gives no pool borrows the default region's.
    pub pools: Vec<Pool>,
    /// When no region of a chain has an eligible endpoint.
    pub all_down: AllDown,
    /// Line of its `name`, for errors found later (against the zones).
    pub line: usize,
}

/// Regions, endpoints and services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steering {
    /// Regions, in configuration order (a region's index is its number in the maps).
    pub regions: Vec<Region>,
    /// The GeoIP database, if countries or continents are to be placed.
    pub geoip: Option<GeoipSource>,
    /// Index of the region of clients that match no other.
    pub default_region: usize,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Services.
    pub services: Vec<Service>,
    /// Health checks.
    pub checks: Vec<Check>,
}

impl Steering {
    /// The region that answers for `region` of `service` with its own pool (following
    /// borrows), and that pool.
    #[must_use]
    pub fn own_pool<'s>(&self, service: &'s Service, region: usize) -> (usize, &'s [Member]) {
        let mut r = region;
        // Borrow chains were checked acyclic; the bound only guards the loop.
        for _ in 0..=self.regions.len() {
            match &service.pools[r] {
                Pool::Own(m) => return (r, m),
                Pool::Borrow(to) => r = *to,
            }
        }
        unreachable!("borrow chains are checked acyclic")
    }
}

type ErrFn<'a> = &'a dyn Fn(Range<usize>, &str, String) -> ConfigError;

/// A name of a region or an endpoint: 1-63 characters of a-z, A-Z, 0-9, '-' or '_'.
pub(super) fn check_ident(
    s: &Spanned<String>,
    key: &str,
    err: ErrFn<'_>,
) -> Result<String, ConfigError> {
    let v = s.get_ref();
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(v.clone())
    } else {
        Err(err(
            s.span(),
            key,
            format!("{v:?} must be 1-63 characters of a-z, A-Z, 0-9, '-' or '_'"),
        ))
    }
}

/// Whether `net` lies in `::ffff:0:0/96` (IPv4-mapped), which the configuration writes as IPv4:
/// addresses there are matched as IPv4.
pub(super) fn is_ipv4_mapped(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(n) if n.prefix_len() >= 96 && n.addr().to_ipv4_mapped().is_some())
}

/// A subnet in CIDR form without host bits; IPv4-mapped IPv6 subnets are written as IPv4.
fn subnet(s: &Spanned<String>, err: ErrFn<'_>) -> Result<IpNet, ConfigError> {
    let v = s.get_ref();
    let net: IpNet = v.parse().map_err(|_| {
        err(
            s.span(),
            "region.subnets",
            format!("{v:?} is not a subnet (\"198.18.1.0/24\", \"2001:2:0:1::/64\")"),
        )
    })?;
    if net.trunc() != net {
        return Err(err(
            s.span(),
            "region.subnets",
            format!("{v:?} has host bits set: the subnet is {}", net.trunc()),
        ));
    }
    if is_ipv4_mapped(&net) {
        return Err(err(
            s.span(),
            "region.subnets",
            format!(
                "{v:?} is IPv4-mapped: write it as IPv4 (clients at ::ffff:a.b.c.d are looked \
                 up as a.b.c.d)"
            ),
        ));
    }
    Ok(net)
}

/// `region.min_healthy`: an integer count or a percentage string (`"60%"`).
fn min_healthy(v: &Spanned<toml::Value>, err: ErrFn<'_>) -> Result<MinHealthy, ConfigError> {
    let bad = || {
        err(
            v.span(),
            "region.min_healthy",
            format!(
                "{} is not a count (1..=16) or a share of the pool (\"1%\"..\"100%\")",
                v.get_ref()
            ),
        )
    };
    match v.get_ref() {
        toml::Value::Integer(n) => u32::try_from(*n)
            .ok()
            .filter(|n| (1..=MAX_SET_RECORDS as u32).contains(n))
            .map(MinHealthy::Count)
            .ok_or_else(bad),
        toml::Value::String(s) => s
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<f64>().ok())
            .filter(|p| *p > 0.0 && *p <= 100.0)
            .map(|p| MinHealthy::Fraction(p / 100.0))
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Validates the steering tables of a configuration.
#[expect(
    clippy::too_many_arguments,
    reason = "one per table of the configuration"
)]
pub(super) fn parse(
    text: &str,
    base: &Path,
    raw: &RawSteering,
    raw_geoip: &RawGeoip,
    regions: &[Spanned<RawRegion>],
    endpoints: &[Spanned<RawEndpoint>],
    services: &[Spanned<RawService>],
    checks: Vec<Check>,
    err: ErrFn<'_>,
) -> Result<Option<Steering>, ConfigError> {
    if regions.is_empty() {
        if let Some(d) = &raw_geoip.database {
            return Err(err(
                d.span(),
                "geoip.database",
                "no [[region]] is configured: the database only places clients in regions".into(),
            ));
        }
        if let Some(d) = &raw.default_region {
            return Err(err(
                d.span(),
                "steering.default_region",
                "no [[region]] is configured".into(),
            ));
        }
        if let Some(s) = services.first() {
            return Err(err(
                s.get_ref().name.span(),
                "service",
                "a [[service]] needs at least one [[region]] and steering.default_region".into(),
            ));
        }
        if let Some(e) = endpoints.first() {
            return Err(err(
                e.get_ref().name.span(),
                "endpoint",
                "endpoints are only used by [[service]] pools, and none is configured".into(),
            ));
        }
        return Ok(None);
    }

    // Regions.
    if regions.len() > MAX_REGIONS {
        return Err(err(
            regions[MAX_REGIONS].span(),
            "region",
            format!("at most {MAX_REGIONS} regions"),
        ));
    }
    let mut out_regions: Vec<Region> = Vec::new();
    let mut seen_subnets: Vec<(IpNet, String)> = Vec::new();
    let mut seen_codes: Vec<(Code, String)> = Vec::new();
    for r in regions {
        let r = r.get_ref();
        let name = check_ident(&r.name, "region.name", err)?;
        if out_regions.iter().any(|o| o.name == name) {
            return Err(err(
                r.name.span(),
                "region.name",
                format!("region {name:?} defined twice"),
            ));
        }
        if raw_geoip.database.is_none()
            && let Some(c) = r.countries.first().or(r.continents.first())
        {
            let key = if r.countries.is_empty() {
                "region.continents"
            } else {
                "region.countries"
            };
            return Err(err(
                c.span(),
                key,
                "countries and continents are placed by a GeoIP database: set geoip.database"
                    .into(),
            ));
        }
        let mut codes = [Vec::new(), Vec::new()];
        for (list, out, key) in [
            (&r.countries, 0, "region.countries"),
            (&r.continents, 1, "region.continents"),
        ] {
            for c in list {
                let v = c.get_ref().to_ascii_uppercase();
                let ok = if out == 0 {
                    geoip::continent_of(&v).is_some()
                } else {
                    geoip::is_continent(&v)
                };
                if !ok {
                    let msg = if out == 0 {
                        let hint = if geoip::is_continent(&v) || v == "EU" || v == "AP" {
                            " (a continent's code: list it in continents)"
                        } else {
                            ""
                        };
                        format!(
                            "{:?} is not an ISO 3166-1 alpha-2 country code (or XK){hint}",
                            c.get_ref()
                        )
                    } else {
                        format!(
                            "{:?} is not a continent code ({})",
                            c.get_ref(),
                            geoip::CONTINENTS.join(", ")
                        )
                    };
                    return Err(err(c.span(), key, msg));
                }
                let code: Code = v.as_bytes().try_into().expect("two letters");
                // Continents and countries never share a code (NA is Namibia and North America:
                // they are told apart by the list they are in).
                let tag = if out == 0 {
                    code
                } else {
                    [code[0] | 0x80, code[1]]
                };
                if let Some((_, other)) = seen_codes.iter().find(|(t, _)| *t == tag) {
                    let what = if out == 0 { "country" } else { "continent" };
                    let msg = if *other == name {
                        format!("{what} {v} listed twice in region {name:?}")
                    } else {
                        format!("{what} {v} is in region {other:?} and in region {name:?}")
                    };
                    return Err(err(c.span(), key, msg));
                }
                seen_codes.push((tag, name.clone()));
                codes[out].push(code);
            }
        }
        let [countries, continents] = codes;
        let mut subnets = Vec::new();
        for s in &r.subnets {
            let net = subnet(s, err)?;
            if let Some((_, other)) = seen_subnets.iter().find(|(n, _)| *n == net) {
                let msg = if *other == name {
                    format!("{net} listed twice in region {name:?}")
                } else {
                    format!("{net} is in region {other:?} and in region {name:?}")
                };
                return Err(err(s.span(), "region.subnets", msg));
            }
            seen_subnets.push((net, name.clone()));
            subnets.push(net);
        }
        let min_healthy = match &r.min_healthy {
            None => MinHealthy::Count(1),
            Some(v) => min_healthy(v, err)?,
        };
        out_regions.push(Region {
            name,
            subnets,
            countries,
            continents,
            failover: Vec::new(),
            min_healthy,
        });
    }
    let region_index = |s: &Spanned<String>, key: &str| {
        out_regions
            .iter()
            .position(|r| r.name == *s.get_ref())
            .ok_or_else(|| {
                err(
                    s.span(),
                    key,
                    format!(
                        "no region {:?} (regions: {})",
                        s.get_ref(),
                        out_regions
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    };
    let default_region = match &raw.default_region {
        Some(d) => region_index(d, "steering.default_region")?,
        None => {
            return Err(err(
                regions[0].span(),
                "steering.default_region",
                "required with [[region]]: the region of clients that match no other".into(),
            ));
        }
    };

    // Failover chains, once every region is known.
    let mut chains = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let chain = match &r.get_ref().failover {
            None if i == default_region => Vec::new(),
            None => vec![default_region],
            Some(list) => {
                let mut chain = Vec::new();
                for s in list {
                    let to = region_index(s, "region.failover")?;
                    if to == i || chain.contains(&to) {
                        return Err(err(
                            s.span(),
                            "region.failover",
                            format!(
                                "region {:?} {}",
                                s.get_ref(),
                                if to == i {
                                    "is the region itself"
                                } else {
                                    "is listed twice"
                                }
                            ),
                        ));
                    }
                    chain.push(to);
                }
                chain
            }
        };
        chains.push(chain);
    }

    // Endpoints.
    let mut out_endpoints: Vec<Endpoint> = Vec::new();
    for e in endpoints {
        let e = e.get_ref();
        let name = check_ident(&e.name, "endpoint.name", err)?;
        if out_endpoints.iter().any(|o| o.name == name) {
            return Err(err(
                e.name.span(),
                "endpoint.name",
                format!("endpoint {name:?} defined twice"),
            ));
        }
        let v4 = match &e.ipv4 {
            None => None,
            Some(s) => Some(s.get_ref().parse::<Ipv4Addr>().map_err(|_| {
                err(
                    s.span(),
                    "endpoint.ipv4",
                    format!("{:?} is not an IPv4 address", s.get_ref()),
                )
            })?),
        };
        let v6 = match &e.ipv6 {
            None => None,
            Some(s) => {
                let a = s.get_ref().parse::<Ipv6Addr>().map_err(|_| {
                    err(
                        s.span(),
                        "endpoint.ipv6",
                        format!("{:?} is not an IPv6 address", s.get_ref()),
                    )
                })?;
                if a.to_ipv4_mapped().is_some() {
                    return Err(err(
                        s.span(),
                        "endpoint.ipv6",
                        format!("{a} is IPv4-mapped: give it as ipv4"),
                    ));
                }
                Some(a)
            }
        };
        if v4.is_none() && v6.is_none() {
            return Err(err(
                e.name.span(),
                "endpoint",
                format!("endpoint {name:?} has neither ipv4 nor ipv6"),
            ));
        }
        for (a, key) in [
            (v4.map(IpAddr::V4), "endpoint.ipv4"),
            (v6.map(IpAddr::V6), "endpoint.ipv6"),
        ] {
            if let Some(a) = a
                && (a.is_unspecified() || a.is_multicast())
            {
                return Err(err(
                    e.name.span(),
                    key,
                    format!("{a} cannot answer queries"),
                ));
            }
        }
        let check = match &e.check {
            None => None,
            Some(c) => Some(
                checks
                    .iter()
                    .position(|k| k.name == *c.get_ref())
                    .ok_or_else(|| {
                        err(
                            c.span(),
                            "endpoint.check",
                            format!("no [[check]] named {:?}", c.get_ref()),
                        )
                    })?,
            ),
        };
        out_endpoints.push(Endpoint {
            name,
            v4,
            v6,
            check,
        });
    }

    // Services.
    let mut out_services: Vec<Service> = Vec::new();
    for raw_svc in services {
        let svc = raw_svc.get_ref();
        let name = super::absolute_name(svc.name.get_ref())
            .map_err(|m| err(svc.name.span(), "service.name", m))?;
        if name.is_wildcard() {
            return Err(err(
                svc.name.span(),
                "service.name",
                format!("{name}: a service is one name, not a wildcard"),
            ));
        }
        if out_services
            .iter()
            .any(|o| o.name.eq_case(&name) || o.name == name)
        {
            return Err(err(
                svc.name.span(),
                "service.name",
                format!("service {name} defined twice"),
            ));
        }
        let ttl = match &svc.ttl {
            None => 60,
            Some(t) => u32::try_from(*t.get_ref())
                .ok()
                .filter(|t| i32::try_from(*t).is_ok())
                .ok_or_else(|| {
                    err(
                        t.span(),
                        "service.ttl",
                        format!("{} is out of range 0..=2147483647", t.get_ref()),
                    )
                })?,
        };
        let answer_count = match &svc.answer_count {
            None => 1,
            Some(c) => u8::try_from(*c.get_ref())
                .ok()
                .filter(|c| (1..=MAX_ANSWER_COUNT as u8).contains(c))
                .ok_or_else(|| {
                    err(
                        c.span(),
                        "service.answer_count",
                        format!("{} is out of range 1..={MAX_ANSWER_COUNT}", c.get_ref()),
                    )
                })?,
        };
        let all_down = match &svc.all_down {
            None => AllDown::ServeAll,
            Some(v) => match v.get_ref().as_str() {
                "serve-all" => AllDown::ServeAll,
                "nodata" => AllDown::Nodata,
                other => {
                    return Err(err(
                        v.span(),
                        "service.all_down",
                        format!("{other:?}: \"serve-all\" (fail open) or \"nodata\""),
                    ));
                }
            },
        };
        let mut pools: Vec<Option<Pool>> = vec![None; out_regions.len()];
        let mut borrow_spans = vec![0..0; out_regions.len()];
        for raw_pool in &svc.pool {
            let pool = raw_pool.get_ref();
            let ix = region_index(&pool.region, "service.pool.region")?;
            if pools[ix].is_some() {
                return Err(err(
                    pool.region.span(),
                    "service.pool.region",
                    format!("{name}: two pools for region {:?}", pool.region.get_ref()),
                ));
            }
            pools[ix] = Some(match (&pool.endpoints, &pool.borrow) {
                (Some(members), None) => {
                    let mut out = Vec::new();
                    for m in members {
                        let m = m.get_ref();
                        let endpoint = out_endpoints
                            .iter()
                            .position(|e| e.name == *m.endpoint.get_ref())
                            .ok_or_else(|| {
                                err(
                                    m.endpoint.span(),
                                    "service.pool.endpoints.endpoint",
                                    format!("no endpoint {:?}", m.endpoint.get_ref()),
                                )
                            })?;
                        if out.iter().any(|o: &Member| o.endpoint == endpoint) {
                            return Err(err(
                                m.endpoint.span(),
                                "service.pool.endpoints.endpoint",
                                format!("endpoint {:?} twice in one pool", m.endpoint.get_ref()),
                            ));
                        }
                        let weight = match &m.weight {
                            None => 1,
                            Some(w) => u8::try_from(*w.get_ref()).map_err(|_| {
                                err(
                                    w.span(),
                                    "service.pool.endpoints.weight",
                                    format!("{} is out of range 0..=255", w.get_ref()),
                                )
                            })?,
                        };
                        out.push(Member { endpoint, weight });
                    }
                    if out.is_empty() {
                        return Err(err(
                            pool.region.span(),
                            "service.pool.endpoints",
                            format!(
                                "{name}: the pool of region {:?} is empty",
                                pool.region.get_ref()
                            ),
                        ));
                    }
                    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
                        let n = out
                            .iter()
                            .filter(|m| {
                                let e = &out_endpoints[m.endpoint];
                                if v6 { e.v6.is_some() } else { e.v4.is_some() }
                            })
                            .count();
                        if n > MAX_SET_RECORDS {
                            return Err(err(
                                pool.region.span(),
                                "service.pool.endpoints",
                                format!(
                                    "{name}: {n} {family} endpoints in the pool of region {:?}; \
                                     at most {MAX_SET_RECORDS}",
                                    pool.region.get_ref()
                                ),
                            ));
                        }
                    }
                    Pool::Own(out)
                }
                (None, Some(b)) => {
                    borrow_spans[ix] = b.span();
                    Pool::Borrow(region_index(b, "service.pool.borrow")?)
                }
                _ => {
                    return Err(err(
                        pool.region.span(),
                        "service.pool",
                        format!(
                            "{name}: the pool of region {:?} needs either endpoints or borrow",
                            pool.region.get_ref()
                        ),
                    ));
                }
            });
        }
        if !matches!(pools[default_region], Some(Pool::Own(_))) {
            return Err(err(
                svc.name.span(),
                "service.pool",
                format!(
                    "{name}: the default region {:?} needs a pool of its own endpoints (regions \
                     without a pool borrow it)",
                    out_regions[default_region].name
                ),
            ));
        }
        let pools: Vec<Pool> = pools
            .into_iter()
            .map(|p| p.unwrap_or(Pool::Borrow(default_region)))
            .collect();
        // Borrowing ends at a region with its own pool.
        for start in 0..pools.len() {
            let mut at = start;
            let mut hops = 0;
            while let Pool::Borrow(to) = pools[at] {
                at = to;
                hops += 1;
                if hops > pools.len() {
                    return Err(err(
                        borrow_spans[start].clone(),
                        "service.pool.borrow",
                        format!(
                            "{name}: region {:?} borrows in a circle",
                            out_regions[start].name
                        ),
                    ));
                }
            }
        }
        out_services.push(Service {
            name,
            ttl,
            answer_count,
            pools,
            all_down,
            line: line_of(text, svc.name.span().start),
        });
    }
    let geoip = raw_geoip.database.as_ref().map(|d| GeoipSource {
        path: base.join(d.get_ref()),
        line: line_of(text, d.span().start),
    });
    for (r, chain) in out_regions.iter_mut().zip(chains) {
        r.failover = chain;
    }
    Ok(Some(Steering {
        regions: out_regions,
        geoip,
        default_region,
        endpoints: out_endpoints,
        services: out_services,
        checks,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigError};

    const BASE: &str = "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"z\"\n";

    fn parse(steering: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/dnsfast.toml"), &format!("{BASE}{steering}"))
    }

    /// The line (counted from the steering text's first line as 1) and key of the error.
    fn error(steering: &str) -> (usize, String, String) {
        let e = parse(steering).expect_err(steering);
        (e.line - 5, e.key, e.message)
    }

    const GEO: &str = "[geoip]\ndatabase = \"GeoLite2-Country.mmdb\"\n";

    const REGIONS: &str = "[steering]\ndefault_region = \"us\"\n\
        [[region]]\nname = \"us\"\nsubnets = [\"198.18.1.0/24\"]\n\
        [[region]]\nname = \"eu\"\nsubnets = [\"198.18.2.0/24\"]\n\
        [[endpoint]]\nname = \"us-1\"\nipv4 = \"198.18.10.1\"\n";

    #[test]
    fn a_full_steering_section() {
        let c = parse(&format!(
            "{REGIONS}[[endpoint]]\nname = \"eu-1\"\nipv6 = \"2001:2:0:20::1\"\n\
             [[service]]\nname = \"www.example.com\"\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\", weight = 0 }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}]\n"
        ))
        .unwrap();
        let s = c.steering.unwrap();
        assert_eq!(s.regions.len(), 2);
        assert_eq!(s.default_region, 0);
        let svc = &s.services[0];
        assert_eq!(svc.name.to_string(), "www.example.com.");
        assert_eq!((svc.ttl, svc.answer_count), (60, 1), "defaults");
        assert_eq!(
            svc.pools,
            [
                super::Pool::Own(vec![super::Member {
                    endpoint: 0,
                    weight: 0
                }]),
                super::Pool::Own(vec![super::Member {
                    endpoint: 1,
                    weight: 1
                }]),
            ]
        );
        assert!(parse("").unwrap().steering.is_none());
        // Countries and continents, any case; Namibia (country NA) and North America
        // (continent NA) in different regions; the database relative to the configuration.
        let c = parse(&format!(
            "{GEO}{}",
            REGIONS
                .replace(
                    "subnets = [\"198.18.1.0/24\"]",
                    "continents = [\"na\", \"SA\"]"
                )
                .replace(
                    "subnets = [\"198.18.2.0/24\"]",
                    "countries = [\"NA\", \"xk\"]"
                )
        ))
        .unwrap();
        let s = c.steering.unwrap();
        assert_eq!(s.regions[0].continents, [*b"NA", *b"SA"]);
        assert_eq!(s.regions[1].countries, [*b"NA", *b"XK"]);
        let g = s.geoip.unwrap();
        assert_eq!(g.path, Path::new("/etc/GeoLite2-Country.mmdb"));
        assert_eq!(g.line, 2 + 5);
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let svc = "[[service]]\nname = \"www.example.com\"\n[[service.pool]]\nregion = \"us\"\n";
        let mut wrong = Vec::new();
        for (text, line, key, says) in [
            (
                "[steering]\ndefault_region = \"us\"\n".to_string(),
                2,
                "steering.default_region",
                "no [[region]]",
            ),
            (
                REGIONS.replace("default_region = \"us\"", "default_region = \"mars\""),
                2,
                "steering.default_region",
                "no region \"mars\" (regions: us, eu)",
            ),
            (
                REGIONS.replace("198.18.2.0/24", "198.18.1.0/24"),
                8,
                "region.subnets",
                "198.18.1.0/24 is in region \"us\" and in region \"eu\"",
            ),
            (
                REGIONS.replace("198.18.2.0/24", "198.18.2.1/24"),
                8,
                "region.subnets",
                "host bits set: the subnet is 198.18.2.0/24",
            ),
            (
                REGIONS.replace("198.18.2.0/24", "::ffff:198.18.2.0/120"),
                8,
                "region.subnets",
                "IPv4-mapped",
            ),
            (
                REGIONS.replace("name = \"eu\"", "name = \"us\""),
                7,
                "region.name",
                "defined twice",
            ),
            (
                REGIONS.replace("subnets = [\"198.18.2.0/24\"]", "countries = [\"DE\"]"),
                8,
                "region.countries",
                "placed by a GeoIP database: set geoip.database",
            ),
            (
                format!(
                    "{GEO}{}",
                    REGIONS.replace("subnets = [\"198.18.2.0/24\"]", "countries = [\"ZZ\"]")
                ),
                10,
                "region.countries",
                "\"ZZ\" is not an ISO 3166-1 alpha-2 country code (or XK)",
            ),
            (
                format!(
                    "{GEO}{}",
                    REGIONS.replace("subnets = [\"198.18.2.0/24\"]", "countries = [\"EU\"]")
                ),
                10,
                "region.countries",
                "(a continent's code: list it in continents)",
            ),
            (
                format!(
                    "{GEO}{}",
                    REGIONS.replace("subnets = [\"198.18.2.0/24\"]", "continents = [\"Europe\"]")
                ),
                10,
                "region.continents",
                "\"Europe\" is not a continent code (AF, AN, AS, EU, NA, OC, SA)",
            ),
            (
                format!(
                    "{GEO}{}",
                    REGIONS
                        .replace("subnets = [\"198.18.1.0/24\"]", "countries = [\"de\"]")
                        .replace("subnets = [\"198.18.2.0/24\"]", "countries = [\"DE\"]")
                ),
                10,
                "region.countries",
                "country DE is in region \"us\" and in region \"eu\"",
            ),
            (
                format!(
                    "{GEO}{}",
                    REGIONS
                        .replace("subnets = [\"198.18.1.0/24\"]", "continents = [\"EU\"]")
                        .replace(
                            "subnets = [\"198.18.2.0/24\"]",
                            "continents = [\"EU\", \"AF\"]"
                        )
                ),
                10,
                "region.continents",
                "continent EU is in region \"us\" and in region \"eu\"",
            ),
            (
                format!("{GEO}[[zone]]\norigin = \"example.net\"\nfile = \"y\"\n"),
                2,
                "geoip.database",
                "no [[region]] is configured",
            ),
            (
                REGIONS.replace("ipv4 = \"198.18.10.1\"", "ipv4 = \"2001:2::1\""),
                11,
                "endpoint.ipv4",
                "not an IPv4 address",
            ),
            (
                REGIONS.replace("ipv4 = \"198.18.10.1\"\n", ""),
                10,
                "endpoint",
                "neither ipv4 nor ipv6",
            ),
            (
                format!("{REGIONS}{svc}endpoints = [{{ endpoint = \"us-9\" }}]\n"),
                16,
                "service.pool.endpoints.endpoint",
                "no endpoint \"us-9\"",
            ),
            (
                format!("{REGIONS}{svc}endpoints = [{{ endpoint = \"us-1\", weight = 256 }}]\n"),
                16,
                "service.pool.endpoints.weight",
                "0..=255",
            ),
            (
                format!("{REGIONS}{svc}borrow = \"eu\"\n"),
                13,
                "service.pool",
                "default region \"us\" needs a pool of its own",
            ),
            (
                format!("{REGIONS}{svc}endpoints = []\n"),
                15,
                "service.pool.endpoints",
                "is empty",
            ),
            (
                format!(
                    "{REGIONS}{svc}endpoints = [{{ endpoint = \"us-1\" }}]\n\
                     [[service.pool]]\nregion = \"us\"\nborrow = \"eu\"\n"
                ),
                18,
                "service.pool.region",
                "two pools for region \"us\"",
            ),
            (
                format!("{REGIONS}[[service]]\nname = \"www.example.com\"\nanswer_count = 9\n"),
                14,
                "service.answer_count",
                "1..=8",
            ),
            (
                format!("{REGIONS}[[service]]\nname = \"*.example.com\"\n"),
                13,
                "service.name",
                "not a wildcard",
            ),
            (
                "[[service]]\nname = \"www.example.com\"\n".to_string(),
                2,
                "service",
                "at least one [[region]]",
            ),
        ] {
            let (l, k, m) = error(&text);
            if (l, k.as_str()) != (line, key) || !m.contains(says) {
                wrong.push(format!("want {line} {key} {says:?}, got {l} {k} {m:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn borrowing_in_a_circle_is_an_error() {
        let text = format!(
            "{REGIONS}[[region]]\nname = \"apac\"\n\
             [[service]]\nname = \"www.example.com\"\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nborrow = \"apac\"\n\
             [[service.pool]]\nregion = \"apac\"\nborrow = \"eu\"\n"
        );
        let (_, key, m) = error(&text);
        assert_eq!(key, "service.pool.borrow");
        assert!(m.contains("borrows in a circle"), "{m}");
    }
}
