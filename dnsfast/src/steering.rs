//! Steering compiled: which region a client is in, and what each steered name answers there.
//!
//! Every service (steered name) answers A and AAAA from answer sets: one per family of each
//! region's own pool, shared by every region that borrows it (the layout `mapsync` writes to the
//! maps, `mapsync::SetContents`). An answer is [`steer::draw`] over the set's eligible records
//! (every record, until health checks land), seeded with the query's hash, so both paths give one
//! query the same records in the same order.
//!
//! A region whose pool (own or borrowed) has no endpoint of a family answers that family from
//! the first region of its failover chain whose pool has some; if none has, the name has no
//! such records (NODATA).
//!
//! Health ([`Compiled::health_states`]): each set's eligible records are its members whose
//! address (of the set's family) is healthy. A set below its region's `min_healthy` answers
//! from the first set of its owner's chain that reaches it; if none does, from the first in the
//! chain (itself first) with any eligible record; if none has any, per service: every record
//! as if healthy (fail open) or none (NODATA). The result is one [`Eligible`] per set, which
//! the maps hold as each set's `state` word and the daemon reads from [`Compiled::health`].

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use arc_swap::ArcSwap;
use dnsfast_common::{
    maps::{AnswerLarge, MAX_REGIONS, REGION_ANY, REGION_SLOTS, capped_ttl, set_state},
    steer::{Draw, draw, ecs_region},
    wire::{Ecs, TYPE_A, TYPE_AAAA, answer_rotation},
};
use hickory_proto::rr::{Name, RData, rdata};
use ipnet::IpNet;

use crate::{
    config::{
        health::Check,
        steering::{AllDown, Endpoint, Steering as SteeringConfig},
    },
    geo::{Policy, RegionMap},
    geoip::Database,
    hot::{HotAnswer, HotKey},
    mapsync::{SetChange, SetContents, SetName, SetState, SteerChange, Steering},
};

/// A steered name's sets: per family (0: A, 1: AAAA), per region, the set it answers from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Per family, per region.
    pub sets: [Vec<Option<SetName>>; 2],
    /// Its records' TTL, which also bounds its NODATA's negative TTL (the answer depends on
    /// the region and on health).
    pub ttl: u32,
}

/// The map changes of a steering configuration (`mapsync`'s input).
#[derive(Debug, Default)]
pub struct MapChanges {
    /// Answer sets.
    pub sets: Vec<SetChange>,
    /// Steered keys.
    pub keys: Vec<SteerChange>,
}

impl MapChanges {
    /// As `mapsync` takes them.
    #[must_use]
    pub fn steering(&self) -> Steering<'_> {
        Steering {
            sets: &self.sets,
            keys: &self.keys,
        }
    }
}

/// The steering part of a snapshot.
#[derive(Debug, Default)]
pub struct Compiled {
    /// Region names, by index.
    pub regions: Vec<String>,
    /// The region of clients that match nothing else.
    pub default_region: u16,
    /// The placement rule (subnets, countries, continents, default region).
    policy: Policy,
    /// The rule flattened over the database: what the XDP region tables hold.
    pub map: RegionMap,
    /// The GeoIP database, if one is configured.
    pub db: Option<Arc<Database>>,
    /// Steered names by lowercased wire name.
    services: HashMap<Box<[u8]>, Service>,
    /// Answer sets; a [`SetName`] is an index.
    pub sets: Vec<Arc<SetContents>>,
    /// The region whose pool each set is.
    owners: Vec<u16>,
    /// What each set's health depends on.
    info: Vec<SetInfo>,
    /// Endpoints (the addresses the health checks probe).
    pub endpoints: Vec<Endpoint>,
    /// Health checks.
    pub checks: Vec<Arc<Check>>,
    /// Per set, what it answers now (swapped whole on a health change).
    pub health: ArcSwap<Vec<Eligible>>,
}

/// What a set's health depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SetInfo {
    /// 0: A, 1: AAAA.
    family: usize,
    /// The endpoint of each record.
    members: Vec<usize>,
    /// The sets of the owner's failover chain for the same service and family, itself first.
    chain: Vec<usize>,
    /// Eligible records below which it is down.
    needed: u32,
    /// What it answers when nothing in its chain has an eligible record.
    all_down: AllDown,
}

/// What one set answers now: from set `from` (itself, or its failover target), with the
/// records in `eligible` of its own (the target's are the target's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Eligible {
    /// Bit `i`: record `i` may be answered.
    pub eligible: u32,
    /// The set answered from (an index into `Compiled::sets`).
    pub from: usize,
    /// Records whose address is healthy (`eligible` differs when failing open).
    pub healthy: u32,
    /// The longest TTL an answer from this set may carry (0: the set's own): the time until
    /// one of its eligible addresses, failing its checks, could be marked down.
    pub ttl_cap: u16,
}

/// What the health rule knows of one endpoint address in one region's pools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrState {
    /// It may be answered (healthy or forced up, and not drained).
    pub up: bool,
    /// It is drained (failing open does not answer it).
    pub drained: bool,
    /// Seconds until it could be marked down while it has failed checks but is up (0: none).
    pub ttl_cap: u16,
}

/// Where a client was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Region index.
    pub region: u16,
    /// The block of the region map holding the client (its length is an ECS answer's SCOPE).
    pub block: IpNet,
}

fn family(qtype: u16) -> Option<usize> {
    match qtype {
        TYPE_A => Some(0),
        TYPE_AAAA => Some(1),
        _ => None,
    }
}

/// The lowercased wire form of `name`.
#[must_use]
pub fn wire_lower(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len());
    for label in name {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

impl Compiled {
    /// Compiles the steering tables of a configuration, with its GeoIP database read.
    #[must_use]
    pub fn new(s: &SteeringConfig, db: Option<Arc<Database>>) -> Self {
        let mut policy = Policy {
            default_region: s.default_region as u16,
            ..Policy::default()
        };
        for (i, r) in s.regions.iter().enumerate() {
            let i = i as u16;
            policy.subnets.extend(r.subnets.iter().map(|n| (*n, i)));
            policy.countries.extend(r.countries.iter().map(|c| (*c, i)));
            policy
                .continents
                .extend(r.continents.iter().map(|c| (*c, i)));
        }
        policy
            .subnets
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let map = RegionMap::build(db.as_deref(), &policy);
        let mut sets: Vec<Arc<SetContents>> = Vec::new();
        let mut owners = Vec::new();
        let mut info: Vec<SetInfo> = Vec::new();
        let mut services = HashMap::new();
        for svc in &s.services {
            // The sets of each region that has a pool of its own, per family.
            let mut own: Vec<[Option<SetName>; 2]> = vec![[None, None]; s.regions.len()];
            for (r, slot) in own.iter_mut().enumerate() {
                let crate::config::steering::Pool::Own(members) = &svc.pools[r] else {
                    continue;
                };
                for (f, slot) in slot.iter_mut().enumerate() {
                    let chosen: Vec<(&Endpoint, u8)> = members
                        .iter()
                        .map(|m| (&s.endpoints[m.endpoint], m.weight))
                        .filter(|(e, _)| {
                            if f == 0 {
                                e.v4.is_some()
                            } else {
                                e.v6.is_some()
                            }
                        })
                        .collect();
                    if chosen.is_empty() {
                        continue;
                    }
                    let rd: Vec<RData> = chosen
                        .iter()
                        .map(|(e, _)| match f {
                            0 => RData::A(rdata::A(e.v4.expect("filtered"))),
                            _ => RData::AAAA(rdata::AAAA(e.v6.expect("filtered"))),
                        })
                        .collect();
                    let answer = HotAnswer::from_rrset(svc.ttl, &rd)
                        .expect("at most 16 endpoints per family (checked)");
                    *slot = Some(sets.len() as SetName);
                    owners.push(r as u16);
                    sets.push(Arc::new(SetContents {
                        answer,
                        weights: chosen.iter().map(|(_, w)| *w).collect(),
                        answer_count: svc.answer_count,
                    }));
                }
            }
            // A region without endpoints of a family answers it from the first region of its
            // (owner's) chain that has some.
            let per_family = |f: usize| -> Vec<Option<SetName>> {
                (0..s.regions.len())
                    .map(|r| {
                        let (owner, _) = s.own_pool(svc, r);
                        std::iter::once(owner)
                            .chain(s.regions[owner].failover.iter().copied())
                            .chain(std::iter::once(s.default_region))
                            .find_map(|c| own[s.own_pool(svc, c).0][f])
                    })
                    .collect()
            };
            // Each own set's failover candidates: the sets of its owner's chain.
            for (r, slot) in own.iter().enumerate() {
                for (f, set) in slot.iter().enumerate() {
                    let Some(set) = *set else { continue };
                    let crate::config::steering::Pool::Own(members) = &svc.pools[r] else {
                        continue;
                    };
                    let members: Vec<usize> = members
                        .iter()
                        .map(|m| m.endpoint)
                        .filter(|&e| {
                            let e = &s.endpoints[e];
                            if f == 0 {
                                e.v4.is_some()
                            } else {
                                e.v6.is_some()
                            }
                        })
                        .collect();
                    let mut chain = vec![set as usize];
                    for c in &s.regions[r].failover {
                        if let Some(t) = own[s.own_pool(svc, *c).0][f]
                            && !chain.contains(&(t as usize))
                        {
                            chain.push(t as usize);
                        }
                    }
                    let needed = s.regions[r].min_healthy.needed(members.len() as u32);
                    let i = set as usize;
                    if info.len() <= i {
                        info.resize(i + 1, SetInfo::default());
                    }
                    info[i] = SetInfo {
                        family: f,
                        members,
                        chain,
                        needed,
                        all_down: svc.all_down,
                    };
                }
            }
            services.insert(
                wire_lower(&svc.name),
                Service {
                    sets: [per_family(0), per_family(1)],
                    ttl: svc.ttl,
                },
            );
        }
        let everyone: Vec<Eligible> = sets
            .iter()
            .enumerate()
            .map(|(i, c)| Eligible {
                eligible: all_records(c),
                from: i,
                healthy: all_records(c),
                ttl_cap: 0,
            })
            .collect();
        Self {
            regions: s.regions.iter().map(|r| r.name.clone()).collect(),
            default_region: s.default_region as u16,
            policy,
            map,
            db,
            services,
            sets,
            owners,
            info,
            endpoints: s.endpoints.clone(),
            checks: s.checks.iter().cloned().map(Arc::new).collect(),
            health: ArcSwap::from_pointee(everyone),
        }
    }

    /// What every set answers when `up(endpoint, family)` says which addresses are healthy
    /// (and not drained): see the module's documentation.
    #[must_use]
    pub fn health_states(&self, up: impl Fn(usize, usize) -> bool) -> Vec<Eligible> {
        self.health_states_with(|_, e, f| AddrState {
            up: up(e, f),
            ..AddrState::default()
        })
    }

    /// [`Self::health_states`] where `state(region, endpoint, family)` says what is known of
    /// the endpoint's address in the region's pools: whether it may be answered, whether it is
    /// drained (failing open answers only the undrained) and its TTL cap (the set's is the
    /// lowest of its eligible records').
    #[must_use]
    pub fn health_states_with(
        &self,
        state: impl Fn(u16, usize, usize) -> AddrState,
    ) -> Vec<Eligible> {
        let mask = |i: usize, want: &dyn Fn(AddrState) -> bool| -> u32 {
            let s = &self.info[i];
            s.members
                .iter()
                .enumerate()
                .filter(|(_, e)| want(state(self.owners[i], **e, s.family)))
                .fold(0, |m, (j, _)| m | 1 << j)
        };
        let healthy: Vec<u32> = (0..self.info.len()).map(|i| mask(i, &|a| a.up)).collect();
        let count = |i: usize| healthy[i].count_ones();
        let is_up = |i: usize| count(i) >= self.info[i].needed;
        // The set `i` answers from; it always answers from itself (one hop in the program).
        let resolve = |i: usize| -> usize {
            let mut at = i;
            for _ in 0..=self.sets.len() {
                let chain = &self.info[at].chain;
                if let Some(&t) = chain.iter().find(|&&c| is_up(c)) {
                    return t;
                }
                match chain.iter().find(|&&c| count(c) > 0) {
                    Some(&t) if t == at => return t,
                    Some(&t) => at = t,
                    None => return at,
                }
            }
            at
        };
        (0..self.sets.len())
            .map(|i| {
                let from = resolve(i);
                let eligible = if from == i && count(i) == 0 {
                    match self.info[i].all_down {
                        AllDown::ServeAll => mask(i, &|a| !a.drained),
                        AllDown::Nodata => 0,
                    }
                } else {
                    healthy[i]
                };
                let s = &self.info[i];
                let ttl_cap = s
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| eligible & 1 << j != 0)
                    .map(|(_, e)| state(self.owners[i], *e, s.family).ttl_cap)
                    .filter(|&c| c != 0)
                    .min()
                    .unwrap_or(0);
                Eligible {
                    eligible,
                    from,
                    healthy: healthy[i],
                    ttl_cap,
                }
            })
            .collect()
    }

    /// The health targets: each endpoint address whose endpoint names a check.
    #[must_use]
    pub fn targets(&self) -> Vec<crate::health::Target> {
        let mut out = Vec::new();
        for e in &self.endpoints {
            let Some(c) = e.check else { continue };
            for addr in [e.v4.map(IpAddr::V4), e.v6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                let t = crate::health::Target {
                    check: Arc::clone(&self.checks[c]),
                    addr,
                };
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Whether endpoint `e`'s address of family `f` is healthy by `table` (an endpoint
    /// without a check always is; a target without a result is not).
    #[must_use]
    pub fn endpoint_up(
        &self,
        table: &HashMap<crate::health::Target, crate::health::State>,
        e: usize,
        f: usize,
    ) -> bool {
        self.endpoint_state(table, e, f).is_none_or(|(up, _)| up)
    }

    /// What `table` says of endpoint `e`'s address of family `f`: whether it is up and until
    /// when it could be marked down if it has failed checks while up. `None` for an endpoint
    /// without a check (always healthy); an address without a result (or none of the family) is
    /// down.
    fn endpoint_state(
        &self,
        table: &HashMap<crate::health::Target, crate::health::State>,
        e: usize,
        f: usize,
    ) -> Option<(bool, Option<Instant>)> {
        let ep = &self.endpoints[e];
        let c = ep.check?;
        let addr = if f == 0 {
            ep.v4.map(IpAddr::V4)
        } else {
            ep.v6.map(IpAddr::V6)
        };
        let found = addr.and_then(|addr| {
            table.get(&crate::health::Target {
                check: Arc::clone(&self.checks[c]),
                addr,
            })
        });
        Some(found.map_or((false, None), |s| (s.up, s.pending_until)))
    }

    /// [`Self::health_states`] by a health table and the forced states (which win), at `now`
    /// (for the TTL caps of addresses with failed checks).
    #[must_use]
    pub fn health_from(
        &self,
        table: &HashMap<crate::health::Target, crate::health::State>,
        forced: &crate::forced::ForcedStates,
        now: Instant,
    ) -> Vec<Eligible> {
        // Each endpoint address and each (region, endpoint, family) looked up once, not once
        // per set that holds it (a thousand services share a handful of endpoints).
        let (ne, nr) = (self.endpoints.len(), self.regions.len());
        let checked: Vec<(bool, u16)> = (0..ne * 2)
            .map(|i| {
                self.endpoint_state(table, i / 2, i % 2)
                    .map_or((true, 0), |(up, until)| {
                        (up, until.map_or(0, |t| crate::health::ttl_cap(t, now)))
                    })
            })
            .collect();
        let mut state = vec![AddrState::default(); nr * ne * 2];
        for (r, region) in self.regions.iter().enumerate() {
            for (e, ep) in self.endpoints.iter().enumerate() {
                for f in 0..2 {
                    let (up, ttl_cap) = checked[e * 2 + f];
                    state[(r * ne + e) * 2 + f] = match forced.state(region, &ep.name, f) {
                        Some(up) => AddrState {
                            up,
                            drained: !up,
                            ttl_cap: 0,
                        },
                        None => AddrState {
                            up,
                            drained: false,
                            ttl_cap,
                        },
                    };
                }
            }
        }
        self.health_states_with(|r, e, f| state[(usize::from(r) * ne + e) * 2 + f])
    }

    /// Per region and family, what its own pools hold and answer now (`dnsfast status`).
    #[must_use]
    pub fn pool_status(&self) -> Vec<crate::control::PoolStatus> {
        let health = self.health.load();
        let mut out = Vec::new();
        for (r, name) in self.regions.iter().enumerate() {
            for (f, family) in ["A", "AAAA"].into_iter().enumerate() {
                let own: Vec<usize> = (0..self.sets.len())
                    .filter(|&i| usize::from(self.owners[i]) == r && self.info[i].family == f)
                    .collect();
                if own.is_empty() {
                    continue;
                }
                let mut members = std::collections::BTreeSet::new();
                let mut healthy = std::collections::BTreeSet::new();
                let mut to = std::collections::BTreeSet::new();
                let (mut open, mut nodata) = (0, 0);
                for &i in &own {
                    let e = health[i];
                    for (j, m) in self.info[i].members.iter().enumerate() {
                        members.insert(*m);
                        if e.healthy & (1 << j) != 0 {
                            healthy.insert(*m);
                        }
                    }
                    if e.from != i {
                        to.insert(self.regions[usize::from(self.owners[e.from])].clone());
                    } else if e.healthy == 0 {
                        if e.eligible == 0 {
                            nodata += 1;
                        } else {
                            open += 1;
                        }
                    }
                }
                let answers = if !to.is_empty() {
                    format!(
                        "failed over to {}",
                        to.into_iter().collect::<Vec<_>>().join(", ")
                    )
                } else if open > 0 {
                    "fail open (no healthy endpoint anywhere in its chain)".into()
                } else if nodata > 0 {
                    "NODATA (no healthy endpoint anywhere in its chain)".into()
                } else {
                    "its own endpoints".into()
                };
                out.push(crate::control::PoolStatus {
                    region: name.clone(),
                    family: family.into(),
                    healthy: healthy.len(),
                    endpoints: members.len(),
                    answers,
                });
            }
        }
        out
    }

    /// The region whose pool set `i` is, and its family (0: A, 1: AAAA).
    #[must_use]
    pub fn set_owner(&self, i: usize) -> (u16, usize) {
        (self.owners[i], self.info[i].family)
    }

    /// The endpoints of set `i`'s records, in record order.
    #[must_use]
    pub fn set_members(&self, i: usize) -> &[usize] {
        &self.info[i].members
    }

    /// What `dnsfast explain` prints: the region of a client at `addr` and why, and, for
    /// `name`, the answer set it gets for A and AAAA.
    #[must_use]
    pub fn explain(&self, addr: IpAddr, name: Option<&Name>) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if self.regions.is_empty() {
            return "no [[region]] is configured: every client gets the same answers\n".into();
        }
        let p = self.place(addr);
        let region = &self.regions[usize::from(p.region)];
        let (decided, reason) = self.policy.decide(self.db.as_deref(), addr);
        debug_assert_eq!(
            decided, p.region,
            "the map disagrees with its rule at {addr}"
        );
        let _ = writeln!(
            out,
            "{addr}: region {region} ({}); block {} (ECS SCOPE {})",
            reason.describe(),
            p.block,
            p.block.prefix_len()
        );
        let Some(name) = name else { return out };
        let Some(svc) = self.service(&wire_lower(name)) else {
            let _ = writeln!(
                out,
                "{name} is not a steered name: every client gets the zone's answer"
            );
            return out;
        };
        for (qtype, t) in [(TYPE_A, "A"), (TYPE_AAAA, "AAAA")] {
            let Some(id) = Self::set_name(svc, qtype, p.region) else {
                let _ = writeln!(out, "{name} {t}: no endpoint of this family: NODATA");
                continue;
            };
            let set = &self.sets[id as usize];
            let owner = self.owners[id as usize];
            let from = if owner == p.region {
                "its own pool".to_string()
            } else {
                format!("region {}'s pool", self.regions[usize::from(owner)])
            };
            let members: Vec<String> = set
                .answer
                .addresses()
                .zip(&set.weights)
                .map(|(ip, w)| format!("{ip} (weight {w})"))
                .collect();
            let _ = writeln!(
                out,
                "{name} {t}: {from}, {} drawn by weight from {}; TTL {}",
                set.answer_count,
                members.join(", "),
                set.answer.ttl
            );
        }
        out
    }

    /// What `dnsfast status` shows (`None`: no regions).
    #[must_use]
    pub fn status(&self, ecs: &crate::config::EcsPolicy) -> Option<crate::control::SteeringStatus> {
        use crate::config::EcsPolicy;
        if self.regions.is_empty() {
            return None;
        }
        let [v4, v6] = &self.map.families;
        Some(crate::control::SteeringStatus {
            regions: self.regions.clone(),
            default_region: self.regions[usize::from(self.default_region)].clone(),
            services: self.services.len(),
            answer_sets: self.sets.len(),
            runs: [v4.runs, v6.runs],
            blocks: [v4.blocks.len(), v6.blocks.len()],
            geoip: self.db.as_ref().map(|d| crate::control::GeoipStatus {
                path: d.path.display().to_string(),
                schema: d.schema.to_string(),
                database_type: d.database_type.clone(),
                built: crate::geoip::date(d.build_epoch),
                networks: [d.v4.len(), d.v6.len()],
                load_ms: u64::try_from(d.load_time.as_millis()).unwrap_or(u64::MAX),
            }),
            ecs: match ecs {
                EcsPolicy::Any => "any resolver".into(),
                EcsPolicy::Off => "nobody (off)".into(),
                EcsPolicy::Listed(l) => l
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            },
        })
    }

    /// Number of steered names.
    #[must_use]
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Whether any name is steered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The region of a client at `addr` (an IPv4-mapped IPv6 address counts as IPv4), from
    /// the region map the XDP program reads too (`geo`'s rule).
    #[must_use]
    pub fn place(&self, addr: IpAddr) -> Placement {
        if self.regions.is_empty() {
            return Placement {
                region: self.default_region,
                block: IpNet::V4(ipnet::Ipv4Net::default()),
            };
        }
        let (block, region) = self.map.lookup(addr);
        Placement { region, block }
    }

    /// The steered name `wire` (lowercased wire form), if it is one.
    #[must_use]
    pub fn service(&self, wire: &[u8]) -> Option<&Service> {
        self.services.get(wire)
    }

    /// The name of the set `service` answers `qtype` from in `region` (`None`: NODATA).
    fn set_name(service: &Service, qtype: u16, region: u16) -> Option<SetName> {
        *service.sets[family(qtype)?].get(usize::from(region))?
    }

    /// The set `service` answers `qtype` from in `region` (`None`: NODATA).
    #[must_use]
    pub fn set(&self, service: &Service, qtype: u16, region: u16) -> Option<&Arc<SetContents>> {
        self.sets
            .get(Self::set_name(service, qtype, region)? as usize)
    }

    /// The region of a query from `client` with the (honoured) Client Subnet `ecs`, and the
    /// SCOPE its answer echoes: as the XDP program decides (`steer::ecs_region` over the same
    /// blocks), else by the client's address with SCOPE 0.
    #[must_use]
    pub fn place_query(&self, client: IpAddr, ecs: Option<&Ecs>) -> (u16, u8) {
        if !self.regions.is_empty()
            && let Some(e) = ecs
            && let Some(decided) = ecs_region(
                e,
                |a| self.map.value(IpAddr::from(a)),
                |a| self.map.value(IpAddr::from(a)),
            )
        {
            return decided;
        }
        (self.place(client).region, 0)
    }

    /// What `service` answers a `qtype` query with ID `id` from `client` with the (honoured)
    /// Client Subnet `ecs`: the records its region's set draws for the query, in answer order
    /// (`None`: no set, NODATA), and the SCOPE of the decision (which a NODATA depends on too).
    #[must_use]
    pub fn answer_for(
        &self,
        service: &Service,
        qtype: u16,
        client: SocketAddr,
        ecs: Option<&Ecs>,
        id: u16,
    ) -> (Option<AnswerLarge>, u8) {
        let (region, scope) = self.place_query(client.ip(), ecs);
        let health = self.health.load();
        let answer = Self::set_name(service, qtype, region)
            .and_then(|i| health.get(i as usize))
            .and_then(|e| Some((self.sets.get(e.from)?, health.get(e.from)?)))
            .map(|(set, h)| {
                let (mut a, d) = Self::answer(set, h.eligible, answer_rotation(id, client.port()));
                a.ttl = capped_ttl(a.ttl, set_state(0, h.ttl_cap, 0));
                (a, d)
            })
            .filter(|(_, d)| d.len > 0)
            .map(|(a, _)| a);
        (answer, scope)
    }

    /// The records of `set` among `eligible` an answer to the query with hash `seed` carries,
    /// in answer order, as the hot builder takes them (none: NODATA; the XDP program passes
    /// such a query up).
    #[must_use]
    pub fn answer(set: &SetContents, eligible: u32, seed: u32) -> (AnswerLarge, Draw) {
        let mut weights = [0u8; dnsfast_common::maps::MAX_SET_RECORDS];
        for (d, w) in weights.iter_mut().zip(&set.weights) {
            *d = *w;
        }
        let count = usize::from(set.answer.count);
        let d = draw(
            &weights,
            count,
            eligible,
            usize::from(set.answer_count),
            seed,
        );
        let rdlen = set.answer.rdata.len() / count.max(1);
        let mut a = AnswerLarge::zeroed();
        a.ttl = set.answer.ttl;
        a.rrtype = set.answer.rrtype;
        a.count = d.len as u16;
        for (j, &i) in d.order[..d.len].iter().enumerate() {
            let i = usize::from(i);
            a.rdata[j * rdlen..(j + 1) * rdlen]
                .copy_from_slice(&set.answer.rdata[i * rdlen..(i + 1) * rdlen]);
        }
        (a, d)
    }

    /// Whether `other` places every client and answers every steered name as this does: then
    /// a reload has nothing to write for steering.
    #[must_use]
    pub fn same_as(&self, other: &Self) -> bool {
        self.regions == other.regions
            && self.default_region == other.default_region
            && self.map == other.map
            && self.services == other.services
            && self.sets == other.sets
            && *self.health.load_full() == *other.health.load_full()
    }

    /// The answer sets and steered keys for the XDP maps (every record eligible), in
    /// generation `generation`: its half of every steered block, its set names.
    #[must_use]
    pub fn map_changes(&self, generation: u8) -> MapChanges {
        let mut keys = Vec::new();
        for (wire, svc) in &self.services {
            for (f, qtype) in [TYPE_A, TYPE_AAAA].into_iter().enumerate() {
                let mut regions = vec![None; REGION_SLOTS];
                svc.half(f, generation, &mut regions);
                keys.push(SteerChange {
                    key: HotKey::new(wire, qtype, REGION_ANY),
                    regions: Some(regions.into()),
                });
            }
        }
        MapChanges {
            sets: self.set_puts(generation),
            keys,
        }
    }

    fn set_puts(&self, generation: u8) -> Vec<SetChange> {
        let health = self.health.load();
        self.sets
            .iter()
            .enumerate()
            .map(|(i, c)| SetChange::Put {
                name: set_name(generation, i),
                contents: Arc::clone(c),
                state: map_state(&health, i, generation),
            })
            .collect()
    }

    /// The state changes that take the maps (sets written in `generation`) from `old` to
    /// `new` health.
    #[must_use]
    pub fn state_changes(
        &self,
        old: &[Eligible],
        new: &[Eligible],
        generation: u8,
    ) -> Vec<SetChange> {
        (0..new.len())
            .filter(|&i| old.get(i) != new.get(i))
            .map(|i| SetChange::State {
                name: set_name(generation, i),
                state: map_state(new, i, generation),
            })
            .collect()
    }

    /// What the maps need to go from `old`'s steering, written in generation `old_gen`, to
    /// this one's in the other generation, as one switch: `first` writes this one's sets and
    /// its half of every steered block beside the old half (a steered name that is new gets
    /// only its new half; one that is gone is removed: its answers do not depend on the
    /// region); then the caller writes the region map in the new generation (each block a
    /// lookup meets is then old, leading to the old half and sets, or new); `last` clears the
    /// old halves and removes the old sets.
    #[must_use]
    pub fn transition(&self, old: &Self, old_gen: u8) -> Transition {
        let new_gen = 1 - old_gen;
        let (mut first, mut last) = (Vec::new(), Vec::new());
        for (wire, svc) in &self.services {
            for (f, qtype) in [TYPE_A, TYPE_AAAA].into_iter().enumerate() {
                let key = HotKey::new(wire, qtype, REGION_ANY);
                let mut regions = vec![None; REGION_SLOTS];
                svc.half(f, new_gen, &mut regions);
                if let Some(was) = old.services.get(wire) {
                    last.push(SteerChange {
                        key: key.clone(),
                        regions: Some(regions.clone().into()),
                    });
                    was.half(f, old_gen, &mut regions);
                }
                first.push(SteerChange {
                    key,
                    regions: Some(regions.into()),
                });
            }
        }
        for wire in old.services.keys() {
            if !self.services.contains_key(wire) {
                for qtype in [TYPE_A, TYPE_AAAA] {
                    first.push(SteerChange {
                        key: HotKey::new(wire, qtype, REGION_ANY),
                        regions: None,
                    });
                }
            }
        }
        Transition {
            generation: new_gen,
            first: MapChanges {
                sets: self.set_puts(new_gen),
                keys: first,
            },
            last: MapChanges {
                sets: (0..old.sets.len())
                    .map(|i| SetChange::Remove {
                        name: set_name(old_gen, i),
                    })
                    .collect(),
                keys: last,
            },
        }
    }
}

/// A reload's steering changes as one switch of generation ([`Compiled::transition`]).
#[derive(Debug)]
pub struct Transition {
    /// The generation the new configuration is written in.
    pub generation: u8,
    /// Before the region map.
    pub first: MapChanges,
    /// After it.
    pub last: MapChanges,
}

/// Every record of a set.
fn all_records(c: &SetContents) -> u32 {
    (1u32 << c.answer.count.min(31)) - 1
}

/// The map state of set `i`.
fn map_state(health: &[Eligible], i: usize, generation: u8) -> SetState {
    let e = health[i];
    SetState {
        eligible: e.eligible,
        ttl_cap: e.ttl_cap,
        answers_from: (e.from != i).then(|| set_name(generation, e.from)),
    }
}

/// The map's name of set `i` of a configuration written in generation `generation`: the two
/// generations' sets are different sets, even where their records are the same.
#[must_use]
pub fn set_name(generation: u8, i: usize) -> SetName {
    (SetName::from(generation) << 31) | i as SetName
}

impl Service {
    /// Writes family `f`'s sets into generation `generation`'s half of a block's entries.
    fn half(&self, f: usize, generation: u8, out: &mut [Option<SetName>]) {
        let base = usize::from(generation) * MAX_REGIONS;
        for (r, set) in self.sets[f].iter().enumerate() {
            out[base + r] = set.map(|i| set_name(generation, i as usize));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn steering(extra: &str) -> SteeringConfig {
        let text = format!(
            "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"z\"\n\
             [steering]\ndefault_region = \"us\"\n\
             [[region]]\nname = \"us\"\nsubnets = [\"198.18.1.0/24\"]\n\
             [[region]]\nname = \"eu\"\nsubnets = [\"198.18.2.0/24\", \"198.18.2.128/25\", \"2001:2:0:2::/64\"]\n\
             [[region]]\nname = \"apac\"\nsubnets = [\"198.18.2.192/26\"]\n\
             [[endpoint]]\nname = \"us-1\"\nipv4 = \"198.18.10.1\"\nipv6 = \"2001:2:0:10::1\"\n\
             [[endpoint]]\nname = \"us-2\"\nipv4 = \"198.18.10.2\"\n\
             [[endpoint]]\nname = \"eu-1\"\nipv4 = \"198.18.20.1\"\n\
             [[service]]\nname = \"www.example.com\"\nanswer_count = 2\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\", weight = 3 }}, {{ endpoint = \"us-2\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}]\n{extra}"
        );
        Config::parse(Path::new("/etc/dnsfast.toml"), &text)
            .unwrap()
            .steering
            .unwrap()
    }

    /// Three regions of two endpoints each (us-1, us-2, eu-1, eu-2, ap-1, ap-2; IPv4 only but
    /// us-1, which is dual-stack), chains us → eu → apac, eu → us, apac → eu → us; us needs
    /// two healthy endpoints.
    fn chained(all_down: &str) -> Compiled {
        let text = format!(
            "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"z\"\n\
             [steering]\ndefault_region = \"us\"\n\
             [[region]]\nname = \"us\"\nfailover = [\"eu\", \"apac\"]\nmin_healthy = 2\n\
             [[region]]\nname = \"eu\"\nfailover = [\"us\"]\n\
             [[region]]\nname = \"apac\"\nfailover = [\"eu\", \"us\"]\nmin_healthy = \"50%\"\n\
             [[endpoint]]\nname = \"us-1\"\nipv4 = \"198.18.10.1\"\nipv6 = \"2001:2:0:10::1\"\n\
             [[endpoint]]\nname = \"us-2\"\nipv4 = \"198.18.10.2\"\n\
             [[endpoint]]\nname = \"eu-1\"\nipv4 = \"198.18.20.1\"\n\
             [[endpoint]]\nname = \"eu-2\"\nipv4 = \"198.18.20.2\"\n\
             [[endpoint]]\nname = \"ap-1\"\nipv4 = \"198.18.30.1\"\n\
             [[endpoint]]\nname = \"ap-2\"\nipv4 = \"198.18.30.2\"\n\
             [[service]]\nname = \"www.example.com\"\nall_down = \"{all_down}\"\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}, {{ endpoint = \"us-2\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}, {{ endpoint = \"eu-2\" }}]\n\
             [[service.pool]]\nregion = \"apac\"\nendpoints = [{{ endpoint = \"ap-1\" }}, {{ endpoint = \"ap-2\" }}]\n"
        );
        let cfg = Config::parse(Path::new("/etc/dnsfast.toml"), &text).unwrap();
        Compiled::new(&cfg.steering.unwrap(), None)
    }

    #[test]
    fn a_region_below_min_healthy_answers_from_the_next_of_its_chain_that_is_up() {
        let c = chained("serve-all");
        let name = |e: usize| c.endpoints[e].name.clone();
        let svc = c
            .service(&wire_lower(&Name::from_ascii("www.example.com.").unwrap()))
            .unwrap();
        let a = |region: u16| Compiled::set_name(svc, TYPE_A, region).unwrap() as usize;
        let aaaa = |region: u16| Compiled::set_name(svc, TYPE_AAAA, region).unwrap() as usize;
        // What a region's clients get for A: the endpoints of the set it answers from.
        let gets = |h: &[Eligible], set: usize| -> Vec<String> {
            let e = h[set];
            let from = e.from;
            c.set_members(from)
                .iter()
                .enumerate()
                .filter(|(i, _)| h[from].eligible & (1 << i) != 0)
                .map(|(_, m)| name(*m))
                .collect()
        };
        let eps = &c.endpoints;
        let down = |names: &'static [&'static str]| {
            move |e: usize, _f: usize| !names.contains(&eps[e].name.as_str())
        };
        // Everyone up: each region its own.
        let h = c.health_states(down(&[]));
        assert_eq!(gets(&h, a(0)), ["us-1", "us-2"]);
        assert_eq!(gets(&h, a(2)), ["ap-1", "ap-2"]);
        // us-2 down: us (min 2) fails over to eu; apac (50% of 2 = 1) keeps ap-2 alone.
        let h = c.health_states(down(&["us-2", "ap-1"]));
        assert_eq!(gets(&h, a(0)), ["eu-1", "eu-2"]);
        assert_eq!(h[a(0)].from, a(1));
        assert_eq!(gets(&h, a(2)), ["ap-2"]);
        // AAAA: only us has IPv6 (us-1), and every region answers it from us's set (the
        // first of each chain with IPv6 endpoints): us-1 alone is below us's min of 2, and no
        // other set exists for the family, so us answers it itself.
        assert_eq!(aaaa(1), aaaa(0));
        assert_eq!(gets(&h, aaaa(0)), ["us-1"]);
        // us and eu below their thresholds, apac up: us skips eu for apac.
        let h = c.health_states(down(&["us-2", "eu-1", "eu-2"]));
        assert_eq!(gets(&h, a(0)), ["ap-1", "ap-2"]);
        // eu's own chain (us) has no region up: the first with any eligible endpoint is us
        // (eu has none), which itself answers from apac: eu follows it there, one hop in the
        // maps.
        assert_eq!(h[a(1)].from, a(2));
        // Nothing reaches min anywhere, us has one: us answers with it (partial chain), and so
        // does eu (none of its own).
        let h = c.health_states(down(&["us-2", "eu-1", "eu-2", "ap-1", "ap-2"]));
        assert_eq!(gets(&h, a(0)), ["us-1"]);
        assert_eq!(gets(&h, a(1)), ["us-1"]);
        assert_eq!(gets(&h, a(2)), ["us-1"]);
        // Nothing at all: fail open, each set its own endpoints as if healthy.
        let h = c.health_states(|_, _| false);
        assert_eq!(gets(&h, a(0)), ["us-1", "us-2"]);
        assert_eq!(gets(&h, a(1)), ["eu-1", "eu-2"]);
        assert_eq!(h[a(0)].healthy, 0);
        // Or NODATA where configured.
        let c = chained("nodata");
        let h = c.health_states(|_, _| false);
        assert!(h.iter().all(|e| e.eligible == 0));
        // Whatever is down, a set's target answers from itself (the program follows one hop).
        let c = chained("serve-all");
        for mask in 0u32..64 {
            let h = c.health_states(|e, _| mask & (1 << e) != 0);
            for e in &h {
                assert_eq!(h[e.from].from, e.from, "endpoints up: {mask:06b}");
            }
        }
    }

    #[test]
    fn an_answer_is_cached_no_longer_than_until_a_failing_address_in_it_could_be_down() {
        let c = chained("serve-all");
        let svc = c
            .service(&wire_lower(&Name::from_ascii("www.example.com.").unwrap()))
            .unwrap();
        let a = |region: u16| Compiled::set_name(svc, TYPE_A, region).unwrap() as usize;
        let eps = &c.endpoints;
        let caps = |caps: &'static [(&'static str, u16)], down: &'static [&'static str]| {
            c.health_states_with(move |_, e, _| AddrState {
                up: !down.contains(&eps[e].name.as_str()),
                drained: false,
                ttl_cap: caps
                    .iter()
                    .find(|(n, _)| *n == eps[e].name)
                    .map_or(0, |(_, c)| *c),
            })
        };
        // The lowest cap of the set's eligible addresses; none without failing addresses.
        let h = caps(&[("us-1", 7), ("us-2", 3), ("eu-1", 9)], &[]);
        assert_eq!(
            (h[a(0)].ttl_cap, h[a(1)].ttl_cap, h[a(2)].ttl_cap),
            (3, 9, 0)
        );
        // An address that is not answered does not cap: us-2 down, us (min 2) fails over to
        // eu, whose set carries its own cap; us's own set keeps only us-1's.
        let h = caps(&[("us-1", 7), ("us-2", 3), ("eu-1", 9)], &["us-2"]);
        assert_eq!(h[a(0)].from, a(1));
        assert_eq!((h[a(0)].ttl_cap, h[a(1)].ttl_cap), (7, 9));
        // The map's state word carries it, and an answer's TTL is the lower of the two.
        let SetState {
            ttl_cap: word_cap, ..
        } = map_state(&h, a(1), 0);
        assert_eq!(word_cap, 9);
        assert_eq!(capped_ttl(60, set_state(0b11, 9, 4)), 9);
        assert_eq!(capped_ttl(5, set_state(0b11, 9, 4)), 5);
        assert_eq!(capped_ttl(60, set_state(0b11, 0, 4)), 60);
        // Whole seconds left after the refresh period, at least 1.
        let now = Instant::now();
        let ms = std::time::Duration::from_millis;
        let cap = crate::health::ttl_cap;
        assert_eq!(cap(now + ms(3_100), now), 3);
        assert_eq!(cap(now + ms(3_099), now), 2);
        assert_eq!(cap(now + ms(1_000), now), 1);
        assert_eq!(cap(now, now + ms(1_000)), 1);
    }

    #[test]
    fn a_state_change_writes_only_the_sets_whose_state_changed() {
        let c = chained("serve-all");
        let all = c.health_states(|_, _| true);
        let one = c.health_states(|e, _| c.endpoints[e].name != "eu-1");
        let changes = c.state_changes(&all, &one, 1);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let SetChange::State { name, state } = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(*name >> 31, 1, "the generation's names");
        assert_eq!(state.eligible, 0b10);
        assert_eq!(state.answers_from, None);
        // A failover names the target in the same generation.
        let us_down = c.health_states(|e, _| c.endpoints[e].name != "us-2");
        let ch = c.state_changes(&all, &us_down, 0);
        assert!(
            ch.iter().any(
                |x| matches!(x, SetChange::State { state, .. } if state.answers_from.is_some())
            )
        );
    }

    #[test]
    fn the_longest_subnet_decides_and_everyone_else_is_in_the_default_region() {
        let c = Compiled::new(&steering(""), None);
        let at = |a: &str| c.regions[usize::from(c.place(a.parse().unwrap()).region)].clone();
        assert_eq!(at("198.18.1.7"), "us");
        assert_eq!(at("198.18.2.7"), "eu");
        assert_eq!(at("198.18.2.130"), "eu");
        assert_eq!(at("198.18.2.200"), "apac", "a /26 beats the /25 and /24");
        assert_eq!(
            at("::ffff:198.18.2.200"),
            "apac",
            "v4-mapped is looked up as IPv4"
        );
        assert_eq!(at("2001:2:0:2::9"), "eu");
        assert_eq!(at("198.19.0.1"), "us", "default");
        assert_eq!(
            c.place("198.18.2.200".parse().unwrap()).block.to_string(),
            "198.18.2.192/26"
        );
        // The default region's block around 198.19.0.1: all of 198.19.0.0/16 is free.
        assert_eq!(
            c.place("198.19.0.1".parse().unwrap()).block.to_string(),
            "198.19.0.0/16"
        );
    }

    #[test]
    fn regions_answer_from_their_own_borrowed_or_the_default_pool() {
        let c = Compiled::new(&steering(""), None);
        let svc = c.service(&wire_lower(&Name::from_ascii("WWW.example.com.").unwrap()));
        let svc = svc.expect("steered, case-insensitively");
        let us = c.set(svc, TYPE_A, 0).unwrap();
        assert_eq!(us.answer.count, 2);
        assert_eq!(us.weights, [3, 1]);
        assert_eq!(us.answer_count, 2);
        let eu = c.set(svc, TYPE_A, 1).unwrap();
        assert_eq!(&eu.answer.rdata[..], &[198, 18, 20, 1]);
        // apac has no pool: the default region's.
        assert!(Arc::ptr_eq(c.set(svc, TYPE_A, 2).unwrap(), us));
        // eu has no IPv6 endpoint: the default region's AAAA.
        assert_eq!(c.set(svc, TYPE_AAAA, 1).unwrap().answer.count, 1);
        assert_eq!(
            c.sets.len(),
            3,
            "us A, us AAAA, eu A: shared, not per region"
        );
        // Draws of two records, weight 3:1.
        let mut first = [0u32; 2];
        for seed in 0..40_000u32 {
            let (a, d) = Compiled::answer(us, u32::MAX, seed.wrapping_mul(0x9E37_79B9));
            assert_eq!((a.count, d.len), (2, 2));
            first[usize::from(d.order[0])] += 1;
        }
        let share = f64::from(first[0]) / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    /// The addresses of a message's A and AAAA answers, in order.
    fn addrs(m: &hickory_proto::op::Message) -> Vec<String> {
        use hickory_proto::rr::RData;
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect()
    }

    /// A configuration and zone in a fresh directory; the configuration's path.
    fn files(tag: &str, services: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dnsfast-steering-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("z"),
            "$ORIGIN example.com.\n$TTL 300\n\
             @ SOA ns1 host 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 198.18.0.1\n\
             www TXT \"steered\"\nalias CNAME www\n* A 198.18.9.9\nfixed A 198.18.0.5\n\
             multi A 198.18.0.7\nmulti A 198.18.0.8\nmulti A 198.18.0.9\n\
             sub NS ns.sub\nns.sub A 198.18.0.6\n",
        )
        .unwrap();
        let cfg = dir.join("dnsfast.toml");
        std::fs::write(&cfg, format!("{}{services}", config_text(""))).unwrap();
        cfg
    }

    fn config_text(extra: &str) -> String {
        format!(
            "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\nfile = \"z\"\n\
             [steering]\ndefault_region = \"us\"\n\
             [[region]]\nname = \"us\"\nsubnets = [\"198.18.1.0/24\"]\n\
             [[region]]\nname = \"eu\"\nsubnets = [\"198.18.2.0/24\", \"2001:2:0:2::/64\"]\n\
             [[endpoint]]\nname = \"us-1\"\nipv4 = \"198.18.10.1\"\nipv6 = \"2001:2:0:10::1\"\n\
             [[endpoint]]\nname = \"us-2\"\nipv4 = \"198.18.10.2\"\n\
             [[endpoint]]\nname = \"eu-1\"\nipv4 = \"198.18.20.1\"\n{extra}"
        )
    }

    fn service(name: &str) -> String {
        format!(
            "[[service]]\nname = \"{name}\"\nanswer_count = 2\n\
             [[service.pool]]\nregion = \"us\"\nendpoints = [{{ endpoint = \"us-1\" }}, {{ endpoint = \"us-2\" }}]\n\
             [[service.pool]]\nregion = \"eu\"\nendpoints = [{{ endpoint = \"eu-1\" }}]\n"
        )
    }

    #[test]
    fn the_daemon_answers_steered_names_per_region_and_the_zone_keeps_the_rest() {
        use hickory_proto::{
            op::{Message, MessageType, OpCode, Query},
            rr::{RData, RecordType},
        };

        let cfg = Config::load(&files(
            "answers",
            &format!(
                "{}{}",
                service("www.example.com"),
                service("x.deep.example.com")
            ),
        ))
        .unwrap();
        let snap = crate::compile::compile(&cfg).unwrap();
        let shared = crate::server::Shared::new(snap);
        let ask = |name: &str, t: RecordType, client: &str, id: u16| -> Message {
            let mut m = Message::new(id, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
            let wire = m.to_vec().unwrap();
            let client: SocketAddr = client.parse().unwrap();
            let r = crate::server::handle(&shared, &wire, false, client).expect("an answer");
            Message::from_vec(&r).unwrap()
        };
        let snap = shared.snapshot.load();
        let svc = snap
            .steering
            .service(&wire_lower(&Name::from_ascii("www.example.com.").unwrap()))
            .unwrap();
        for id in 0..50u16 {
            let m = ask("www.example.com.", RecordType::A, "198.18.1.7:5300", id);
            // The draw the XDP program makes for this query, in its order.
            let set = snap.steering.set(svc, TYPE_A, 0).unwrap();
            let (a, _) = Compiled::answer(set, u32::MAX, answer_rotation(id, 5300));
            let want: Vec<String> = a.rdata[..4 * usize::from(a.count)]
                .chunks(4)
                .map(|c| std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]).to_string())
                .collect();
            assert_eq!(addrs(&m), want, "us client, query {id}");
            assert!(m.authoritative);
            assert_eq!(m.answers[0].ttl, 60);
        }
        assert_eq!(
            addrs(&ask("www.example.com.", RecordType::A, "198.18.2.7:53", 1)),
            ["198.18.20.1"]
        );
        assert_eq!(
            addrs(&ask(
                "www.example.com.",
                RecordType::A,
                "[::ffff:198.18.2.7]:53",
                1
            )),
            ["198.18.20.1"]
        );
        // eu has no IPv6 endpoint: the default region's.
        assert_eq!(
            addrs(&ask(
                "WWW.example.com.",
                RecordType::AAAA,
                "[2001:2:0:2::5]:53",
                1
            )),
            ["2001:2:0:10::1"]
        );
        // Other types: the zone's data, or NODATA (not the wildcard).
        let txt = ask("www.example.com.", RecordType::TXT, "198.18.1.7:53", 1);
        assert_eq!(txt.answers.len(), 1);
        let mx = ask("www.example.com.", RecordType::MX, "198.18.1.7:53", 1);
        assert_eq!(
            (
                mx.response_code.low(),
                mx.answers.len(),
                mx.authorities.len()
            ),
            (0, 0, 1)
        );
        let ns = ask("x.deep.example.com.", RecordType::NS, "198.18.1.7:53", 1);
        assert_eq!(
            (ns.response_code.low(), ns.answers.len()),
            (0, 0),
            "NODATA at the service"
        );
        let ent = ask("deep.example.com.", RecordType::A, "198.18.1.7:53", 1);
        assert_eq!(
            (ent.response_code.low(), ent.answers.len()),
            (0, 0),
            "its parent is an empty non-terminal, not the wildcard"
        );
        assert_eq!(
            addrs(&ask(
                "x.deep.example.com.",
                RecordType::A,
                "198.18.2.9:53",
                1
            )),
            ["198.18.20.1"]
        );
        // A CNAME to a steered name: the chain, then the region's records.
        let c = ask("alias.example.com.", RecordType::A, "198.18.2.7:53", 1);
        assert!(matches!(c.answers[0].data, RData::CNAME(_)));
        assert_eq!(addrs(&c), ["198.18.20.1"]);
        assert!(c.authorities.is_empty());
        // (The CNAME answer goes through the general encoder.)
        assert_eq!(shared.stats.view().steered_answers, 54);
    }

    #[test]
    fn steered_names_must_be_free_in_an_authoritative_zone() {
        for (name, says) in [
            ("fixed.example.com", "has A records at fixed.example.com."),
            ("alias.example.com", "has CNAME records"),
            ("host.sub.example.com", "delegation at sub.example.com."),
            ("www.example.org", "in no configured zone"),
        ] {
            let cfg = Config::load(&files("errors", &service(name))).unwrap();
            let e = crate::compile::compile(&cfg).unwrap_err().to_string();
            assert!(
                e.contains("dnsfast.toml:") && e.contains(": service.name: ") && e.contains(says),
                "{name}: {e}"
            );
        }
    }

    /// A query for `name`/`qtype` with an OPT record carrying Client Subnet `ecs`
    /// (FAMILY, SOURCE, ADDRESS bytes).
    fn ecs_query(id: u16, name: &str, qtype: u16, ecs: Option<(u16, u8, &[u8])>) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
        m.extend_from_slice(&wire_lower(&Name::from_ascii(name).unwrap()));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        let opt: Vec<u8> = match ecs {
            None => Vec::new(),
            Some((family, source, addr)) => {
                let mut o = vec![0, 8];
                o.extend_from_slice(&(4 + addr.len() as u16).to_be_bytes());
                o.extend_from_slice(&family.to_be_bytes());
                o.extend_from_slice(&[source, 0]);
                o.extend_from_slice(addr);
                o
            }
        };
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
        m.extend_from_slice(&(opt.len() as u16).to_be_bytes());
        m.extend_from_slice(&opt);
        m
    }

    #[test]
    fn client_subnet_decides_steered_answers_and_is_echoed_with_its_scope() {
        use hickory_proto::op::Message;

        let extra = format!(
            "{}[[region]]\nname = \"apac\"\nsubnets = [\"10.9.0.0/16\", \"2001:db8::/32\"]\n",
            service("www.example.com")
        );
        let path = files("ecs", &extra);
        let text = std::fs::read_to_string(&path).unwrap();
        let run = |ecs_conf: &str| {
            std::fs::write(&path, format!("{ecs_conf}{text}")).unwrap();
            let cfg = Config::load(&path).unwrap();
            crate::server::Shared::new(crate::compile::compile(&cfg).unwrap())
        };
        let shared = run("");
        let resolver: SocketAddr = "198.18.1.53:5300".parse().unwrap();
        // (query, resolver, want: first octets of the answers' region, SCOPE echoed or None)
        let ask = |shared: &crate::server::Shared,
                   q: &[u8],
                   from: SocketAddr|
         -> (Vec<String>, Option<Vec<u8>>, u8) {
            let r = crate::server::handle(shared, q, false, from).expect("an answer");
            let m = Message::from_vec(&r).unwrap();
            let addrs = addrs(&m);
            // Our OPT is the last record and the echo its last option.
            let at = r.windows(2).rposition(|w| w == [0, 8]);
            let echo = at
                .filter(|i| r.len() >= i + 8)
                .map(|i| r[i..].to_vec())
                .filter(|e| usize::from(u16::from_be_bytes([e[2], e[3]])) + 4 == e.len());
            (addrs, echo, r[3] & 0xF)
        };
        let www = |ecs| ecs_query(7, "www.example.com.", TYPE_A, ecs);
        let eu = |v: &(Vec<String>, Option<Vec<u8>>, u8)| {
            v.0.iter().all(|a| a.starts_with("198.18.20."))
        };
        let us = |v: &(Vec<String>, Option<Vec<u8>>, u8)| {
            v.0.iter().all(|a| a.starts_with("198.18.10."))
        };

        // An ECS address in eu's subnet: eu's endpoints, SCOPE the block's (/24), FAMILY,
        // SOURCE and ADDRESS as sent.
        let r = ask(&shared, &www(Some((1, 22, &[198, 18, 0]))), resolver);
        assert!(
            us(&r),
            "198.18.0.0/22 is split: the /22's address 198.18.0.0 is us's default"
        );
        let r = ask(&shared, &www(Some((1, 24, &[198, 18, 2]))), resolver);
        assert!(eu(&r) && !r.0.is_empty(), "{r:?}");
        assert_eq!(r.1.unwrap(), [0, 8, 0, 7, 0, 1, 24, 24, 198, 18, 2]);
        // A /16 ECS inside a /24 block: SCOPE 24 exceeds SOURCE 16... the block at 198.18.0.0
        // is us's (198.18.0.0/23), SCOPE 23.
        let r = ask(&shared, &www(Some((1, 16, &[198, 18]))), resolver);
        assert_eq!(r.1.unwrap(), [0, 8, 0, 6, 0, 1, 16, 23, 198, 18]);
        // IPv4-mapped IPv6 ECS: looked up as IPv4, SCOPE 96 + 24.
        let mut mapped = [0u8; 15];
        mapped[10] = 0xFF;
        mapped[11] = 0xFF;
        mapped[12..15].copy_from_slice(&[198, 18, 2]);
        let r = ask(&shared, &www(Some((2, 120, &mapped))), resolver);
        assert!(eu(&r), "{r:?}");
        assert_eq!(r.1.unwrap()[6..8], [120, 120]);
        // IPv6 ECS /56 in eu's /64... the /56 address 2001:2:0:2:: is in it: SCOPE 64.
        let r = ask(
            &shared,
            &www(Some((2, 56, &[0x20, 1, 0, 2, 0, 0, 0]))),
            resolver,
        );
        assert!(
            us(&r),
            "2001:2::/56 holds 2001:2:0:0::, not eu's 2001:2:0:2::/64"
        );
        let r = ask(
            &shared,
            &www(Some((2, 64, &[0x20, 1, 0, 2, 0, 0, 0, 2]))),
            resolver,
        );
        assert!(eu(&r), "{r:?}");
        assert_eq!(r.1.unwrap()[6..8], [64, 64]);
        // SOURCE 0 and private space: the resolver's address decides (198.18.1.53: us... and
        // from eu's subnet, eu), SCOPE 0.
        let from_eu: SocketAddr = "198.18.2.53:5300".parse().unwrap();
        for ecs in [
            (1u16, 0u8, &[][..]),
            (1, 24, &[192, 168, 1]),
            (2, 8, &[0xFD]),
        ] {
            let r = ask(&shared, &www(Some(ecs)), from_eu);
            assert!(eu(&r), "{ecs:?}: {r:?}");
            assert_eq!(r.1.as_ref().unwrap()[7], 0, "{ecs:?}: SCOPE 0");
        }
        // Private space a region subnet covers decides: 10.9.0.0/16 is apac's (which borrows
        // the default region's pool: us's endpoints), SCOPE 16.
        let r = ask(&shared, &www(Some((1, 24, &[10, 9, 1]))), from_eu);
        assert!(us(&r) && r.1.as_ref().unwrap()[7] == 16, "{r:?}");
        // A CNAME to the steered name: the target's records for the ECS's region, its SCOPE.
        let r = ask(
            &shared,
            &ecs_query(
                8,
                "alias.example.com.",
                TYPE_A,
                Some((1, 24, &[198, 18, 2])),
            ),
            resolver,
        );
        assert!(eu(&r) && !r.0.is_empty(), "{r:?}");
        assert_eq!(
            r.1.unwrap()[7],
            24,
            "CNAME to a steered name: the block's SCOPE"
        );
        // Every other answer from the zone echoes SCOPE 0: a hot name, NXDOMAIN, another type.
        for (name, qtype, rcode) in [
            ("fixed.example.com.", TYPE_A, 0),
            ("x.fixed.example.com.", TYPE_A, 3),
            ("www.example.com.", 16, 0),
        ] {
            let r = ask(
                &shared,
                &ecs_query(9, name, qtype, Some((1, 24, &[198, 18, 2]))),
                resolver,
            );
            assert_eq!(r.2, rcode, "{name}");
            assert_eq!(
                r.1.unwrap(),
                [0, 8, 0, 7, 0, 1, 24, 0, 198, 18, 2],
                "{name}"
            );
        }
        // Error answers carry none: REFUSED (class CH without identity), FORMERR (bad ECS).
        let mut ch = ecs_query(9, "version.bind.", 16, Some((1, 24, &[198, 18, 2])));
        let at = 12 + 14 + 2;
        ch[at..at + 2].copy_from_slice(&[0, 3]);
        let r = ask(&shared, &ch, resolver);
        assert_eq!((r.2, r.1), (5, None), "REFUSED");
        let r = ask(&shared, &www(Some((1, 24, &[198, 18, 2, 0]))), resolver);
        assert_eq!((r.2, r.1), (1, None), "FORMERR");

        // Off: ignored and not echoed.
        let shared = run("[ecs]\nenabled = false\n");
        let r = ask(&shared, &www(Some((1, 24, &[198, 18, 2]))), resolver);
        assert!(us(&r) && r.1.is_none(), "{r:?}");
        // Listed resolvers only.
        let shared = run("[ecs]\nresolvers = [\"198.18.2.0/24\"]\n");
        let r = ask(&shared, &www(Some((1, 24, &[198, 18, 2]))), resolver);
        assert!(us(&r) && r.1.is_none(), "an unlisted resolver: {r:?}");
        let from_listed: SocketAddr = "198.18.2.9:5300".parse().unwrap();
        let r = ask(&shared, &www(Some((1, 24, &[198, 18, 1]))), from_listed);
        assert!(
            us(&r) && r.1.as_ref().is_some_and(|e| e[7] == 23),
            "a listed resolver's ECS decides: us (198.18.0.0/23 is one us block) {r:?}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_query_longer_than_the_xdp_buffer_gets_the_same_steered_answer() {
        use hickory_proto::{op::Message, rr::rdata::opt::EdnsCode};

        let path = files("long", &service("www.example.com"));
        let cfg = Config::load(&path).unwrap();
        let shared = crate::server::Shared::new(crate::compile::compile(&cfg).unwrap());
        let name = "www.example.com.";
        // `q`, a query for `qname`, with a Padding option (RFC 7830) of `n` bytes after its
        // other options.
        let padded = |q: &[u8], qname: &str, n: usize| {
            let mut m = q.to_vec();
            let qname_len = wire_lower(&Name::from_ascii(qname).unwrap()).len();
            // The OPT record's RDLENGTH, after its owner (the root), TYPE, CLASS and TTL.
            let at = dnsfast_common::wire::HEADER_LEN + qname_len + 4 + 9;
            let rdlen = u16::from_be_bytes([m[at], m[at + 1]]) + 4 + n as u16;
            m[at..at + 2].copy_from_slice(&rdlen.to_be_bytes());
            m.extend_from_slice(&[0, 12]);
            m.extend_from_slice(&(n as u16).to_be_bytes());
            m.resize(m.len() + n, 0);
            m
        };
        let wire = |q: &[u8], tcp: bool, from: SocketAddr| {
            crate::server::handle(&shared, q, tcp, from).expect("an answer")
        };
        let ask = |q: &[u8], from: SocketAddr| {
            let m = Message::from_vec(&wire(q, false, from)).unwrap();
            let ecs = m
                .edns
                .as_ref()
                .and_then(|e| e.options().get(EdnsCode::Subnet).cloned());
            (m.response_code.low(), m.authoritative, addrs(&m), ecs)
        };
        let us: SocketAddr = "198.18.1.7:5300".parse().unwrap();
        let eu: SocketAddr = "198.18.2.7:5300".parse().unwrap();
        for id in 0..20u16 {
            for (qtype, ecs, from, region) in [
                (TYPE_A, None, us, "198.18.10."),
                (TYPE_A, None, eu, "198.18.20."),
                (TYPE_AAAA, None, us, "2001:2:0:10::"),
                // A Client Subnet in eu's block from a us resolver: eu's, SCOPE 24.
                (TYPE_A, Some((1, 24, &[198u8, 18, 2][..])), us, "198.18.20."),
            ] {
                let short = ecs_query(id, name, qtype, ecs);
                let want = ask(&short, from);
                assert!(
                    want.0 == 0 && want.1 && !want.2.is_empty(),
                    "the short query's answer: {want:?}"
                );
                assert!(want.2.iter().all(|a| a.starts_with(region)), "{want:?}");
                assert_eq!(want.3.is_some(), ecs.is_some());
                // The same bytes whatever the query's length (neither path pads an answer).
                for tcp in [false, true] {
                    let want = wire(&short, tcp, from);
                    for n in [1200, 4000] {
                        let long = padded(&short, name, n);
                        assert!(long.len() > dnsfast_common::maps::MSG_AREA);
                        assert_eq!(
                            wire(&long, tcp, from),
                            want,
                            "id {id}, type {qtype}, {n} bytes of padding, tcp {tcp}"
                        );
                    }
                }
            }
        }
        // A hot name's records come from the zone for a long query, in the hot builder's order.
        for id in 0..20u16 {
            let short = ecs_query(id, "multi.example.com.", TYPE_A, None);
            for tcp in [false, true] {
                let want = wire(&short, tcp, us);
                assert_eq!(addrs(&Message::from_vec(&want).unwrap()).len(), 3);
                let long = padded(&short, "multi.example.com.", 1200);
                assert_eq!(wire(&long, tcp, us), want, "multi, id {id}, tcp {tcp}");
            }
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn qclass_any_and_qtype_any_at_a_steered_name_get_its_regions_records() {
        use hickory_proto::op::Message;

        let path = files(
            "any",
            &format!(
                "{}{}",
                service("www.example.com"),
                service("x.deep.example.com")
            ),
        );
        let cfg = Config::load(&path).unwrap();
        let shared = crate::server::Shared::new(crate::compile::compile(&cfg).unwrap());
        let wire = |q: &[u8], from: &str| {
            crate::server::handle(&shared, q, false, from.parse().unwrap()).expect("an answer")
        };
        // QCLASS of a query `ecs_query` built for `name`.
        let class_at = |name: &str| {
            dnsfast_common::wire::HEADER_LEN
                + wire_lower(&Name::from_ascii(name).unwrap()).len()
                + 2
        };
        let eu_ecs = Some((1, 24, &[198u8, 18, 2][..]));
        for id in 0..20u16 {
            for (name, qtype, ecs, from) in [
                ("www.example.com.", TYPE_A, None, "198.18.1.7:5300"),
                ("www.example.com.", TYPE_A, None, "198.18.2.7:5300"),
                ("www.example.com.", TYPE_AAAA, None, "198.18.1.7:5300"),
                ("x.deep.example.com.", TYPE_A, eu_ecs, "198.18.1.7:5300"),
            ] {
                let q = ecs_query(id, name, qtype, ecs);
                let want = wire(&q, from);
                // QCLASS ANY (RFC 1035 §3.2.5): the same answer, the question's class as asked.
                let at = class_at(name);
                let mut any = q.clone();
                any[at..at + 2].copy_from_slice(&255u16.to_be_bytes());
                let mut got = wire(&any, from);
                assert_eq!(got[at..at + 2], [0, 255]);
                got[at..at + 2].copy_from_slice(&[0, 1]);
                assert_eq!(
                    got, want,
                    "{name} type {qtype} class ANY, id {id}, from {from}"
                );
            }
            // QTYPE ANY where the zone holds nothing else: the region's A records, as the A
            // query's draw gives them, SCOPE and all; where it holds a TXT, that.
            for (ecs, from) in [(None, "198.18.1.7:5300"), (eu_ecs, "198.18.1.7:5300")] {
                let a = Message::from_vec(&wire(
                    &ecs_query(id, "x.deep.example.com.", TYPE_A, ecs),
                    from,
                ))
                .unwrap();
                let any =
                    Message::from_vec(&wire(&ecs_query(id, "x.deep.example.com.", 255, ecs), from))
                        .unwrap();
                assert!(!addrs(&a).is_empty());
                assert_eq!(addrs(&any), addrs(&a), "ANY, id {id}, {ecs:?}");
                assert_eq!(
                    (
                        any.response_code.low(),
                        any.authoritative,
                        any.authorities.len()
                    ),
                    (0, true, 0)
                );
                assert_eq!(any.edns, a.edns, "the Client Subnet echo, SCOPE included");
            }
            let txt = Message::from_vec(&wire(
                &ecs_query(id, "www.example.com.", 255, None),
                "198.18.1.7:53",
            ))
            .unwrap();
            assert_eq!(
                txt.answers
                    .iter()
                    .map(hickory_proto::rr::Record::record_type)
                    .collect::<Vec<_>>(),
                [hickory_proto::rr::RecordType::TXT]
            );
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_bad_geoip_database_is_an_error_naming_the_key_and_the_file() {
        let cfg = files("geoip", &service("www.example.com"));
        let dir = cfg.parent().unwrap().to_path_buf();
        let text = std::fs::read_to_string(&cfg).unwrap();
        for (contents, says) in [
            (None, "cannot read"),
            (Some(&b"not a database"[..]), "not a MaxMind DB file"),
        ] {
            let _ = std::fs::remove_file(dir.join("geo.mmdb"));
            if let Some(c) = contents {
                std::fs::write(dir.join("geo.mmdb"), c).unwrap();
            }
            std::fs::write(&cfg, format!("[geoip]\ndatabase = \"geo.mmdb\"\n{text}")).unwrap();
            let c = Config::load(&cfg).unwrap();
            let e = crate::compile::compile(&c).unwrap_err().to_string();
            let want = format!(
                "{}:2: geoip.database: {}: {says}",
                cfg.display(),
                dir.join("geo.mmdb").display()
            );
            assert!(e.starts_with(&want), "{e}\nwant {want}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn explain_says_where_a_client_is_and_what_a_name_answers_there() {
        let c = Compiled::new(&steering(""), None);
        let www = Name::from_ascii("www.example.com.").unwrap();
        assert_eq!(
            c.explain("198.18.2.200".parse().unwrap(), Some(&www)),
            "198.18.2.200: region apac (its subnet 198.18.2.192/26); block 198.18.2.192/26 (ECS \
             SCOPE 26)\n\
             www.example.com. A: region us's pool, 2 drawn by weight from 198.18.10.1 (weight 3), \
             198.18.10.2 (weight 1); TTL 60\n\
             www.example.com. AAAA: region us's pool, 2 drawn by weight from 2001:2:0:10::1 \
             (weight 3); TTL 60\n"
        );
        assert_eq!(
            c.explain("198.19.0.1".parse().unwrap(), None),
            "198.19.0.1: region us (the default region: no region's subnet covers it and GeoIP \
             does not place it); block 198.19.0.0/16 (ECS SCOPE 16)\n"
        );
        let e = c.explain(
            "198.18.1.1".parse().unwrap(),
            Some(&Name::from_ascii("mail.example.com.").unwrap()),
        );
        assert!(
            e.ends_with(
                "mail.example.com. is not a steered name: every client gets the zone's answer\n"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_transition_writes_the_new_generation_beside_the_old_then_clears_the_old() {
        let a = Compiled::new(
            &steering(
                "[[service]]\nname = \"old.example.com\"\n\
                 [[service.pool]]\nregion = \"us\"\nendpoints = [{ endpoint = \"us-2\" }]\n",
            ),
            None,
        );
        let b = Compiled::new(
            &steering(
                "[[service]]\nname = \"new.example.com\"\n\
                 [[service.pool]]\nregion = \"us\"\nendpoints = [{ endpoint = \"us-1\" }]\n",
            ),
            None,
        );
        assert!(a.same_as(&a) && !a.same_as(&b));
        let t = b.transition(&a, 0);
        assert_eq!(t.generation, 1);
        let key = |c: &MapChanges, name: &str, qtype| {
            let wire = wire_lower(&Name::from_ascii(name).unwrap());
            c.keys
                .iter()
                .find(|k| k.key == HotKey::new(&wire, qtype, REGION_ANY))
                .map(|k| k.regions.clone())
        };
        let half =
            |r: &[Option<SetName>], g: usize| r[g * MAX_REGIONS..(g + 1) * MAX_REGIONS].to_vec();
        // A name in both: both halves first (old names in the lower, new in the upper), the
        // new half only last.
        let first = key(&t.first, "www.example.com.", TYPE_A).unwrap().unwrap();
        let old = a.map_changes(0);
        let was = key(&old, "www.example.com.", TYPE_A).unwrap().unwrap();
        assert_eq!(half(&first, 0), half(&was, 0));
        let now = key(&b.map_changes(1), "www.example.com.", TYPE_A)
            .unwrap()
            .unwrap();
        assert_eq!(half(&first, 1), half(&now, 1));
        assert!(half(&first, 1).iter().flatten().all(|&n| n >> 31 == 1));
        let last = key(&t.last, "www.example.com.", TYPE_A).unwrap().unwrap();
        assert_eq!(&*last, &*now);
        // A new name: only its new half, at once; a gone one: removed at once.
        let fresh = key(&t.first, "new.example.com.", TYPE_A).unwrap().unwrap();
        assert!(half(&fresh, 0).iter().all(Option::is_none));
        assert!(half(&fresh, 1).iter().any(Option::is_some));
        assert_eq!(key(&t.first, "old.example.com.", TYPE_A), Some(None));
        assert_eq!(key(&t.last, "new.example.com.", TYPE_A), None);
        // Sets: every new one put under a new-generation name first, every old one removed
        // last.
        assert_eq!(t.first.sets.len(), b.sets.len());
        assert!(
            t.first
                .sets
                .iter()
                .all(|c| matches!(c, SetChange::Put { name, .. } if name >> 31 == 1))
        );
        assert_eq!(t.last.sets.len(), a.sets.len());
        assert!(
            t.last
                .sets
                .iter()
                .all(|c| matches!(c, SetChange::Remove { name } if name >> 31 == 0))
        );
        // And back.
        let back = a.transition(&b, 1);
        assert_eq!(back.generation, 0);
    }

    #[test]
    fn map_changes_name_one_set_per_region_and_family() {
        let c = Compiled::new(
            &steering("[[service.pool]]\nregion = \"apac\"\nborrow = \"eu\"\n"),
            None,
        );
        let MapChanges { sets, keys } = c.map_changes(0);
        assert_eq!(sets.len(), 3);
        assert_eq!(keys.len(), 2, "A and AAAA of one name");
        let a = keys.iter().find(|k| k.key.qtype() == TYPE_A).unwrap();
        let regions = a.regions.as_deref().unwrap();
        assert_eq!(regions[..3], [Some(0), Some(2), Some(2)]);
        assert!(regions[3..].iter().all(Option::is_none));
        // Generation 1: the upper half, other set names.
        let MapChanges { keys, .. } = c.map_changes(1);
        let a = keys.iter().find(|k| k.key.qtype() == TYPE_A).unwrap();
        let regions = a.regions.as_deref().unwrap();
        let g1 = |i| Some(set_name(1, i));
        assert_eq!(regions[MAX_REGIONS..MAX_REGIONS + 3], [g1(0), g1(2), g1(2)]);
        assert!(regions[..MAX_REGIONS].iter().all(Option::is_none));
    }
}
