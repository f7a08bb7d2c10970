//! The daemon's settings for the program (`CONFIG`): on/off, DNS port, our addresses, the hot
//! table's geometry; later cookie secrets and the geo database generation.
//!
//! The daemon changes them while we serve: it writes the entry not in use, flips
//! `CONFIG_ACTIVE` to it with one store, and waits a grace period before it writes that other
//! entry again. A run reads the index once and then only the entry it names, so it sees one
//! whole configuration, old or new.

use aya_ebpf::{btf_maps::Array, macros::btf_map};
use dnsfast_common::maps::{BPF_F_MMAPABLE, CFG_ANY_V4, CFG_ANY_V6, MAX_LISTEN_ADDRS, XdpConfig};

#[btf_map]
static CONFIG: Array<XdpConfig, 2> = Array::new();

#[btf_map]
static CONFIG_ACTIVE: Array<u32, 1, BPF_F_MMAPABLE> = Array::new();

/// The current configuration; a fresh (all-zero) map means "pass everything".
#[inline(always)]
pub fn get() -> Option<&'static XdpConfig> {
    // Read once: the entry must be the one this run chose, even if the index flips meanwhile.
    // SAFETY: a valid reference to a map value, read as a plain u32.
    let active = CONFIG_ACTIVE
        .get(0)
        .map_or(0, |a| unsafe { core::ptr::read_volatile(a) });
    CONFIG.get(active & 1)
}

/// Whether `dst` is one of the IPv4 addresses dnsfast listens on.
#[inline(always)]
pub fn ours_v4(cfg: &XdpConfig, dst: &[u8; 4]) -> bool {
    if cfg.flags & CFG_ANY_V4 != 0 {
        return true;
    }
    let dst = u32::from_ne_bytes(*dst);
    for i in 0..MAX_LISTEN_ADDRS {
        if i >= usize::from(cfg.v4_count) {
            break;
        }
        if u32::from_ne_bytes(cfg.v4[i]) == dst {
            return true;
        }
    }
    false
}

/// Whether `dst` is one of the IPv6 addresses dnsfast listens on.
#[inline(always)]
pub fn ours_v6(cfg: &XdpConfig, dst: &[u8; 16]) -> bool {
    if cfg.flags & CFG_ANY_V6 != 0 {
        return true;
    }
    let (hi, lo) = halves(dst);
    for i in 0..MAX_LISTEN_ADDRS {
        if i >= usize::from(cfg.v6_count) {
            break;
        }
        if halves(&cfg.v6[i]) == (hi, lo) {
            return true;
        }
    }
    false
}

/// An IPv6 address as two words, so comparing it is two compares instead of a `bcmp` call.
#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}
