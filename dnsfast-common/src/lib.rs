//! Types and DNS wire code shared by the dnsfast XDP program and the daemon.
//!
//! Everything here is `no_std` and compiles for both `bpfel-unknown-none` and the host, so the
//! two executors of the answer engine run literally the same code:
//!
//! - [`maps`]: the BPF map names, key and value layouts, and the layout version. The daemon writes
//!   these maps; the XDP program reads them.
//! - [`wire`]: the query validator and the hot-answer builder. The XDP program runs them on a
//!   per-CPU copy of the packet; the daemon runs them on every UDP/TCP query before anything
//!   else, so a query gets the same verdict and a hot answer the same bytes on both paths.
//! - [`stats`]: the per-CPU counter slots and their names.
//! - [`steer`]: the weighted draw of a steered answer's records, the same on both paths.
//! - [`geotable`]: the region map's prefix tables (layout and lookup).
#![no_std]

#[cfg(test)]
extern crate std;

pub mod geotable;
pub mod maps;
pub mod stats;
pub mod steer;
pub mod wire;
