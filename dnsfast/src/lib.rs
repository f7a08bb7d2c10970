//! dnsfast: an authoritative DNS server for traffic steering whose hot path runs in XDP.
//!
//! One answer engine, two executors (see `docs/architecture.md`):
//!
//! ```text
//! config + zones ─► compile ─► Snapshot { zones, hot } ─┬─► xdp (maps) ─► XDP program
//!                                                        └─► server (UDP/TCP)
//! ```
//!
//! - [`config`]: the TOML configuration; [`zone`]: master files and the zone model;
//! - [`compile`]: zones → [`compile::Snapshot`] (the zones, the [`hot`] table and the
//!   [`steering`] tables: regions, steered names and their answer sets);
//! - [`answer`]: the general lookup (referrals, CNAME, wildcards, negative answers),
//!   [`response`]: its encoding;
//! - [`mapsync`]: plans map writes that never expose a half-written answer;
//!   [`xdp`]: the only module that touches aya, executes those plans;
//! - [`server`]: answering one query, TCP; [`udp`]: batched UDP workers; [`control`]: status;
//!   [`daemon`]: lifecycle and reload;
//!   [`instance`]: pins, sockets, network namespaces.

pub mod answer;
pub mod compile;
pub mod config;
pub mod control;
pub mod daemon;
pub mod forced;
pub mod geo;
pub mod geoip;
pub mod health;
pub mod hot;
pub mod instance;
pub mod mapsync;
pub mod preflight;
pub mod response;
pub mod server;
pub mod signals;
pub mod steering;
pub mod tcp;
pub mod udp;
pub mod xdp;
pub mod zone;
