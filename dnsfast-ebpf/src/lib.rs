//! Library target of the eBPF crate. It only exists so that `dnsfast` can name this crate as a
//! build dependency (cargo then rebuilds the daemon when the program changes); the program
//! itself is the `dnsfast-xdp` binary target.
#![no_std]
