//! BPF map layout shared by the XDP program (reader) and the daemon (writer).
//!
//! The layout is described in `docs/architecture.md` ("Map design"). In short:
//!
//! ```text
//! names of at most 32 octets (almost all):
//! HOT_TABLE[hash(key) + i, i < HOT_PROBES] = HotBucket{slot, key, answer}          (array, mmapped)
//!   slot = SLOT_INLINE|seq: the answer is the bucket's own (up to 4 A or 1 AAAA), else ─► slot
//! longer names:
//! HOT_<C>[HotKey<C>{qtype, region, name}] ─► HotRef{entry}          (hash, one per size class)
//! ANSWER_INDEX[entry]                     ─► slot                   (array, mmapped)
//! both:
//! ANSWERS_SMALL[slot] / ANSWERS_LARGE[slot & !SLOT_LARGE] ─► answer (arrays, immutable while reachable)
//! steered names (slot = SLOT_STEERED|block, in a bucket or an ANSWER_INDEX entry):
//! REGION_SETS[block * REGION_SLOTS + region] ─► set                 (array, mmapped)
//! ANSWER_SETS[set] = AnswerSet{state, records, weights}             (array, mmapped)
//!   state = eligible records | ttl_cap << 16 | answers_from << 32: the set answers from
//!   ANSWER_SETS[answers_from] (its failover) when that is not itself; a redirect's target is
//!   final (its own redirect is not followed), and its TTL cap (0: none) bounds the answer's TTL
//! ```
//!
//! A name's key is looked up first (one cache line for an unsteered name with a small answer);
//! only an entry that says it is steered then needs the client's region. Answer sets are shared:
//! every name and region that answers from one pool points at the same set, so a health change
//! is one 64-bit store into each affected set's `state`, whatever the number of names.
//!
//! Invariants the daemon keeps so that the XDP program never reads a half-written answer:
//! - an answer slot is written only while nothing points at it and no program that could have
//!   read the old pointer is still running (one RCU grace period after it was unlinked);
//! - an answer changes by writing a fresh slot, then storing its id with one aligned 32-bit store
//!   through a mmapped array: into the name's bucket (`HotBucket::slot`) or `ANSWER_INDEX` entry;
//! - a `HOT_*` hash element is written once, when its name is added, and never updated in place;
//! - a bucket's key changes only while its slot says it holds no answer (`SLOT_NONE`,
//!   `SLOT_TOMB`), and the reader takes a bucket's answer only if the slot read before and after
//!   comparing the key (and copying the inline answer) is the same valid slot (x86 keeps those
//!   loads, and the daemon's stores, in order);
//! - a bucket's inline answer is rewritten in place like a seqlock: slot to `SLOT_NONE`, the
//!   answer, then `SLOT_INLINE` with a new sequence number, so a reader that copied a torn answer
//!   sees the slot change and reads again;
//! - an answer set's records, TTL and weights are written only while no region entry and no
//!   other set's `state` refers to it (and a grace period after the last did); only `state`
//!   changes while it is reachable, with one aligned 64-bit store, so a reader sees either the
//!   old or the new eligibility and failover, never half of each;
//! - a `REGION_SETS` entry changes with one aligned 32-bit store, between two whole sets; a
//!   block is filled before the name that points at it is published.
//!
//! Every type here is `#[repr(C)]` without implicit padding and has its size asserted, because the
//! kernel copies them byte for byte between the two sides.

use core::mem::size_of;

/// Version of the map layout. Pins live under `/sys/fs/bpf/dnsfast/<instance>/v<LAYOUT_VERSION>/`,
/// so a daemon of another layout never opens maps it would misread.
pub const LAYOUT_VERSION: u32 = 9;

/// Name of the XDP program that answers queries.
pub const PROG_DNSFAST: &str = "dnsfast";
/// Name of the benchmark's ceiling program: an empty answer to every query, no lookup.
pub const PROG_REFLECT: &str = "dnsfast_reflect";
/// The benchmark's second reference: the ceiling plus the one frame resize every answer needs.
pub const PROG_REFLECT_GROW: &str = "dnsfast_reflect_grow";
/// The big zone's reference: the ceiling plus one load from a random bucket of `HOT_TABLE`.
pub const PROG_REFLECT_MISS: &str = "dnsfast_reflect_miss";
/// The region lookup's first reference: the ceiling plus one LPM-trie lookup of the Client
/// Subnet address in a trie of the region map's blocks.
pub const PROG_REFLECT_LPM: &str = "dnsfast_reflect_lpm";
/// The region lookup's second reference: the ceiling plus one load, picked by the Client Subnet
/// address, from a table the size of the region tables' first level.
pub const PROG_REFLECT_GEO_MISS: &str = "dnsfast_reflect_geo_miss";
/// Name of the XDP program that passes every packet (for the far end of a veth pair: native XDP
/// on veth only delivers `XDP_TX` frames to a peer that has an XDP program of its own).
pub const PROG_PASS: &str = "dnsfast_pass";
/// The Client Subnet stage, reached from [`PROG_DNSFAST`] by a tail call through [`MAP_STAGES`].
pub const PROG_ECS: &str = "dnsfast_ecs";

/// Two `XdpConfig` entries: the daemon writes the one not in use, then flips
/// [`MAP_CONFIG_ACTIVE`] to it with one store, so no reader sees a half-written configuration.
pub const MAP_CONFIG: &str = "CONFIG";
/// Which entry of [`MAP_CONFIG`] is current (0 or 1); mapped by the daemon.
pub const MAP_CONFIG_ACTIVE: &str = "CONFIG_ACTIVE";
/// Per-CPU counters, indexed by [`crate::stats::Counter`].
pub const MAP_STATS: &str = "STATS";
/// Per-CPU scratch space for the message and the key (the BPF stack holds 512 bytes).
pub const MAP_SCRATCH: &str = "SCRATCH";
/// The program array of the stages [`PROG_DNSFAST`] hands queries to (slot 0: [`PROG_ECS`]).
pub const MAP_STAGES: &str = "STAGES";
/// Open-addressing table of the names of at most 32 octets.
pub const MAP_HOT_TABLE: &str = "HOT_TABLE";
/// Hot-name hash maps for names over 32 octets, one per size class after the first, in the order
/// of [`NAME_CLASSES`] (the first class lives in `HOT_TABLE`).
pub const MAP_HOT: [&str; 3] = ["HOT_64", "HOT_128", "HOT_256"];
/// Entry → answer slot indirection.
pub const MAP_ANSWER_INDEX: &str = "ANSWER_INDEX";
/// Answer slots with up to [`SMALL_RDATA`] bytes of address data.
pub const MAP_ANSWERS_SMALL: &str = "ANSWERS_SMALL";
/// Answer slots with up to [`LARGE_RDATA`] bytes of address data.
pub const MAP_ANSWERS_LARGE: &str = "ANSWERS_LARGE";

/// Steered entries' blocks: `REGION_SLOTS` answer-set ids each, one per region and generation.
pub const MAP_REGION_SETS: &str = "REGION_SETS";
/// Answer sets of steered names ([`AnswerSet`]).
pub const MAP_ANSWER_SETS: &str = "ANSWER_SETS";
/// The client region map's IPv4 table, first level: one 16-bit entry per /24, four to a value
/// ([`crate::geotable`]).
pub const MAP_GEO4_L0: &str = "GEO4_L0";
/// Its 256-entry groups for the /24s that hold longer blocks, both generations' halves.
pub const MAP_GEO4_POOL: &str = "GEO4_POOL";
/// The IPv6 table's levels, both halves: 16-bit entries, four to a value.
pub const MAP_GEO6_POOL: &str = "GEO6_POOL";
/// Where each IPv6 level starts in `GEO6_POOL`, per half.
pub const MAP_GEO6_LEVELS: &str = "GEO6_LEVELS";
/// The `GEO_*` values IPv6 leaves name, per half.
pub const MAP_GEO6_VALUES: &str = "GEO6_VALUES";
/// Resolver IPv4 prefixes whose Client Subnet is honoured under [`CFG_ECS_LISTED`] (an LPM
/// trie; the value is unused).
pub const MAP_ECS_RESOLVERS_V4: &str = "ECS_RESOLVERS_V4";
/// Resolver IPv6 prefixes, IPv4 ones also as `::ffff:a.b.c.d/(96 + length)`.
pub const MAP_ECS_RESOLVERS_V6: &str = "ECS_RESOLVERS_V6";

/// Map-of-maps the daemon updates to wait for running programs to finish (RCU grace period).
pub const MAP_GRACE: &str = "GRACE";

/// Every map the daemon pins, for listing and cleanup.
pub const ALL_MAPS: [&str; 22] = [
    MAP_GRACE,
    MAP_HOT_TABLE,
    MAP_CONFIG,
    MAP_CONFIG_ACTIVE,
    MAP_STATS,
    MAP_SCRATCH,
    MAP_STAGES,
    MAP_HOT[0],
    MAP_HOT[1],
    MAP_HOT[2],
    MAP_ANSWER_INDEX,
    MAP_ANSWERS_SMALL,
    MAP_ANSWERS_LARGE,
    MAP_REGION_SETS,
    MAP_ANSWER_SETS,
    MAP_GEO4_L0,
    MAP_GEO4_POOL,
    MAP_GEO6_POOL,
    MAP_GEO6_LEVELS,
    MAP_GEO6_VALUES,
    MAP_ECS_RESOLVERS_V4,
    MAP_ECS_RESOLVERS_V6,
];

/// `BPF_F_NO_PREALLOC`: hash elements are allocated on insert, so an idle capacity costs nothing.
pub const BPF_F_NO_PREALLOC: usize = 1;
/// `BPF_F_MMAPABLE`: the daemon maps `HOT_TABLE`, `ANSWER_INDEX` and `CONFIG_ACTIVE` and flips
/// them with atomic stores.
pub const BPF_F_MMAPABLE: usize = 1 << 10;

/// Capacities compiled into the object; the daemon sets the real ones from its configuration
/// before loading (`[xdp] max_hot_names`, `max_answers`).
pub const DEFAULT_HOT_ENTRIES: usize = 65_536;
/// Default number of small answer slots (and of `ANSWER_INDEX` entries).
pub const DEFAULT_SMALL_SLOTS: usize = 2 * DEFAULT_HOT_ENTRIES;
/// Default number of large answer slots.
pub const DEFAULT_LARGE_SLOTS: usize = 16_384;
/// Default number of answer sets (`ANSWER_SETS`).
pub const DEFAULT_ANSWER_SETS: usize = 4096;
/// Default number of steered entries (blocks of `REGION_SETS`).
pub const DEFAULT_STEERED: usize = 1024;
/// Default size of the region tables' pools (the daemon sizes them at load from the region map
/// it starts with): 64-bit values of `GEO4_POOL` and of `GEO6_POOL`.
pub const DEFAULT_GEO4_WORDS: usize = 1 << 16;
/// See [`DEFAULT_GEO4_WORDS`].
pub const DEFAULT_GEO6_WORDS: usize = 1 << 20;

/// Set in a `GEO_*` value for a block of private or special-use space that no region subnet
/// covers: a Client Subnet address there does not decide (the resolver's address does, with
/// SCOPE 0); a packet's source address there is placed by the value's region as usual.
pub const GEO_SPECIAL: u32 = 1 << 24;

/// A `GEO_*` value: the region, and the length of the block that decided it (the answer's
/// Client Subnet SCOPE). The daemon adds `generation * MAX_REGIONS` to the region when it
/// writes the tries ([`REGION_SLOTS`]).
#[inline(always)]
#[must_use]
pub const fn geo_value(region: u16, prefix_len: u8) -> u32 {
    region as u32 | (prefix_len as u32) << 16
}

/// Name size classes: a name of `n` wire octets is keyed in the first class `>= n`, zero-padded.
/// Wire-format names are prefix-free (each label carries its length), so zero padding can never
/// make two different names equal.
pub const NAME_CLASSES: [usize; 4] = [32, 64, 128, 256];

/// Index into [`NAME_CLASSES`] (`MAP_HOT[class - 1]` above 0) for a wire name of `name_len` octets (1..=255).
#[inline(always)]
#[must_use]
pub const fn name_class(name_len: usize) -> usize {
    if name_len <= 32 {
        0
    } else if name_len <= 64 {
        1
    } else if name_len <= 128 {
        2
    } else {
        3
    }
}

/// Region of answers that apply to every client: every key carries it (a steered name's
/// regions are its block's entries in `REGION_SETS`, not keys of their own).
pub const REGION_ANY: u16 = 0;

/// Most regions a configuration defines.
pub const MAX_REGIONS: usize = 64;
/// Entries of one steered name's block of `REGION_SETS`: two generations of [`MAX_REGIONS`].
/// A region's entry is `generation * MAX_REGIONS + region`, and the `GEO_*` values and
/// `CONFIG.default_region` carry the same number, so a reload that changes the placement or
/// the sets writes the other generation's entries, then the tries, and a lookup meets either
/// the old map with the old sets or the new map with the new (never one with the other).
pub const REGION_SLOTS: usize = 2 * MAX_REGIONS;
/// Most records (endpoints) an answer set holds: one eligibility bit each.
pub const MAX_SET_RECORDS: usize = MAX_HOT_RECORDS;
/// `REGION_SETS` value of a region without a set (the daemon answers it), and `ANSWER_SETS`'s
/// out-of-range id.
pub const SET_NONE: u32 = u32::MAX;

macro_rules! hot_key {
    ($(#[$doc:meta])* $name:ident, $n:expr) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
        pub struct $name {
            /// Query type (host order): 1 = A, 28 = AAAA.
            pub qtype: u16,
            /// Geo region of the client; [`REGION_ANY`] for unsteered names.
            pub region: u16,
            /// The name in wire form, ASCII-lowercased, zero-padded.
            pub name: [u8; $n],
        }

        impl $name {
            /// An all-zero key.
            #[must_use]
            pub const fn zeroed() -> Self {
                Self { qtype: 0, region: 0, name: [0; $n] }
            }

            /// The key of `qtype`, `region` and the wire-form `name`, which is ASCII-lowercased
            /// here (the rule `wire::build_key` applies to a query, eight bytes at a time) and
            /// zero-padded; `None` if the name is longer than the class. The daemon's one way
            /// to make a map key.
            #[must_use]
            pub fn new(qtype: u16, region: u16, name: &[u8]) -> Option<Self> {
                if name.len() > $n {
                    return None;
                }
                let mut k = Self::zeroed();
                k.qtype = qtype;
                k.region = region;
                for (d, s) in k.name.iter_mut().zip(name) {
                    *d = s.to_ascii_lowercase();
                }
                Some(k)
            }
        }

        const _: () = assert!(size_of::<$name>() == 4 + $n);
        #[cfg(feature = "user")]
        // SAFETY: repr(C), only integer fields, no padding (asserted above).
        unsafe impl aya::Pod for $name {}
    };
}

hot_key!(
    /// Key of a `HOT_TABLE` bucket.
    HotKey32,
    32
);
hot_key!(
    /// Key of `HOT_64`.
    HotKey64,
    64
);
hot_key!(
    /// Key of `HOT_128`.
    HotKey128,
    128
);
hot_key!(
    /// Key of `HOT_256`; also the XDP program's scratch key, whose prefix is a valid key of
    /// every smaller class.
    HotKey256,
    256
);

/// Value of the `HOT_*` maps: the name's stable entry number in `ANSWER_INDEX`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotRef {
    /// Index into `ANSWER_INDEX`.
    pub entry: u32,
}
const _: () = assert!(size_of::<HotRef>() == 4);
#[cfg(feature = "user")]
// SAFETY: repr(C), one u32.
unsafe impl aya::Pod for HotRef {}

/// Bit set in a slot id that lives in `ANSWERS_LARGE`.
pub const SLOT_LARGE: u32 = 1 << 31;
/// `ANSWER_INDEX` value of an entry that has no answer (never followed by the XDP program).
pub const SLOT_NONE: u32 = u32::MAX;
/// Bit set in a bucket slot whose answer is the bucket's own; the low 30 bits are a sequence
/// number that changes with every rewrite of that answer.
pub const SLOT_INLINE: u32 = 1 << 30;
/// The sequence bits of an inline slot.
pub const SLOT_SEQ: u32 = SLOT_INLINE - 1;

/// Slot of a steered name: `SLOT_STEERED | block`, its block of `REGION_SETS`. Both table bits
/// are set, which no answer slot has; [`SLOT_TOMB`] and [`SLOT_NONE`] lie above every block.
pub const SLOT_STEERED: u32 = SLOT_LARGE | SLOT_INLINE;

/// Whether `slot` is a steered name's ([`SLOT_STEERED`] with a block number).
#[inline(always)]
#[must_use]
pub const fn slot_is_steered(slot: u32) -> bool {
    slot >= SLOT_STEERED && slot < SLOT_TOMB
}

/// Whether `slot` (neither [`SLOT_NONE`] nor [`SLOT_TOMB`]) says the answer is in the bucket.
#[inline(always)]
#[must_use]
pub const fn slot_is_inline(slot: u32) -> bool {
    slot & (SLOT_LARGE | SLOT_INLINE) == SLOT_INLINE
}

/// Most records a hot answer carries; larger RRsets are answered by the daemon.
pub const MAX_HOT_RECORDS: usize = 16;
/// Address bytes in a small slot: four A records or one AAAA.
pub const SMALL_RDATA: usize = 16;
/// Address bytes in a large slot: [`MAX_HOT_RECORDS`] AAAA records.
pub const LARGE_RDATA: usize = 256;

macro_rules! answer_slot {
    ($(#[$doc:meta])* $name:ident, $n:expr) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
        pub struct $name {
            /// TTL of the RRset, seconds.
            pub ttl: u32,
            /// 1 (A) or 28 (AAAA).
            pub rrtype: u16,
            /// Number of records, 1..=[`MAX_HOT_RECORDS`].
            pub count: u16,
            /// `count` addresses of 4 (A) or 16 (AAAA) bytes, network order, back to back.
            pub rdata: [u8; $n],
        }

        impl $name {
            /// An empty slot.
            #[must_use]
            pub const fn zeroed() -> Self {
                Self { ttl: 0, rrtype: 0, count: 0, rdata: [0; $n] }
            }
        }

        impl crate::wire::AnswerData for $name {
            const RDATA_CAPACITY: usize = $n;
            #[inline(always)]
            fn ttl(&self) -> u32 {
                self.ttl
            }
            #[inline(always)]
            fn rrtype(&self) -> u16 {
                self.rrtype
            }
            #[inline(always)]
            fn count(&self) -> usize {
                self.count as usize
            }
            #[inline(always)]
            fn rdata4(&self, offset: usize) -> [u8; 4] {
                // Callers keep offset + 4 <= RDATA_CAPACITY; the mask restates it for the
                // verifier (and the compiler, which then needs no bounds check).
                let i = offset & ($n - 4);
                let mut w = [0u8; 4];
                w.copy_from_slice(&self.rdata[i..i + 4]);
                w
            }
        }

        const _: () = assert!(size_of::<$name>() == 8 + $n);
        #[cfg(feature = "user")]
        // SAFETY: repr(C), only integer fields, no padding (asserted above).
        unsafe impl aya::Pod for $name {}
    };
}

answer_slot!(
    /// Value of `ANSWERS_SMALL`.
    AnswerSmall,
    SMALL_RDATA
);
answer_slot!(
    /// Value of `ANSWERS_LARGE`.
    AnswerLarge,
    LARGE_RDATA
);

/// An answer set (value of `ANSWER_SETS`): the records one region of a steered name answers
/// from, with what steering decides among them. Everything but `state` is immutable while the
/// set is reachable.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct AnswerSet {
    /// Bits 0..16: the records that may be answered (bit `i` = record `i`: healthy and not
    /// drained); bits 16..32: the TTL cap, seconds (0: none), while an answered address has
    /// failed checks but is not yet down; bits 32..64: the set this one answers from
    /// ([`set_state`]): its own id, or its failover's while it is down. The daemon changes it
    /// with one aligned 64-bit store.
    pub state: u64,
    /// TTL of the records, seconds.
    pub ttl: u32,
    /// 1 (A) or 28 (AAAA).
    pub rrtype: u16,
    /// Records held, 1..=[`MAX_SET_RECORDS`].
    pub count: u8,
    /// Records an answer carries (drawn by weight among the eligible), 1..=8.
    pub answer_count: u8,
    /// Each record's weight, 0..=255.
    pub weights: [u8; MAX_SET_RECORDS],
    /// `count` addresses of 4 (A) or 16 (AAAA) bytes, network order, back to back.
    pub rdata: [u8; LARGE_RDATA],
}
const _: () = assert!(size_of::<AnswerSet>() == 8 + 8 + MAX_SET_RECORDS + LARGE_RDATA);
const _: () = assert!(MAX_SET_RECORDS <= 16);
#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, no padding (asserted above).
unsafe impl aya::Pod for AnswerSet {}

impl AnswerSet {
    /// An empty set.
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            state: 0,
            ttl: 0,
            rrtype: 0,
            count: 0,
            answer_count: 0,
            weights: [0; MAX_SET_RECORDS],
            rdata: [0; LARGE_RDATA],
        }
    }
}

/// The `AnswerSet::state` word: the `eligible` records (the low 16 bits), answers no longer
/// than `ttl_cap` seconds (0: the set's TTL), answered from set `answers_from`.
#[inline(always)]
#[must_use]
pub const fn set_state(eligible: u32, ttl_cap: u16, answers_from: u32) -> u64 {
    (eligible & 0xFFFF) as u64 | (ttl_cap as u64) << 16 | (answers_from as u64) << 32
}

/// The eligible records of a `state` word.
#[inline(always)]
#[must_use]
pub const fn state_eligible(state: u64) -> u32 {
    (state & 0xFFFF) as u32
}

/// The TTL an answer from a set with TTL `ttl` and state word `state` carries: the set's,
/// or the word's cap if that is lower.
#[inline(always)]
#[must_use]
pub const fn capped_ttl(ttl: u32, state: u64) -> u32 {
    let cap = ((state >> 16) & 0xFFFF) as u32;
    if cap != 0 && cap < ttl { cap } else { ttl }
}

/// `XdpConfig::flags`: answer hot queries. Clear (as in a fresh map) means pass everything.
pub const CFG_ANSWER: u32 = 1;
/// `XdpConfig::flags`: accept any IPv4 destination (listen on 0.0.0.0).
pub const CFG_ANY_V4: u32 = 1 << 1;
/// `XdpConfig::flags`: accept any IPv6 destination (listen on `::`).
pub const CFG_ANY_V6: u32 = 1 << 2;
/// `XdpConfig::flags`: EDNS Client Subnet is honoured: the program hands queries with the
/// option to its ECS stage, which decides and echoes it. Clear: they go to the daemon (which
/// ignores the option).
pub const CFG_ECS: u32 = 1 << 3;
/// `XdpConfig::flags`, beside [`CFG_ECS`]: only from resolvers in `ECS_RESOLVERS_V4/_V6`; a
/// query with the option from any other goes to the daemon (which ignores the option).
pub const CFG_ECS_LISTED: u32 = 1 << 4;
/// Most resolver prefixes per family `[ecs] resolvers` may list (the size of each
/// `ECS_RESOLVERS_*` trie).
pub const MAX_ECS_RESOLVERS: usize = 1024;
/// Most explicit addresses per family the XDP program matches.
pub const MAX_LISTEN_ADDRS: usize = 8;

/// Value of the `CONFIG` singleton (key 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// `CFG_*` bits.
    pub flags: u32,
    /// UDP destination port of DNS queries (host order).
    pub port: u16,
    /// Used entries of `v4`.
    pub v4_count: u8,
    /// Used entries of `v6`.
    pub v6_count: u8,
    /// Our IPv4 addresses, network order.
    pub v4: [[u8; 4]; MAX_LISTEN_ADDRS],
    /// Our IPv6 addresses, network order.
    pub v6: [[u8; 16]; MAX_LISTEN_ADDRS],
    /// `HOT_TABLE` buckets minus one (a power of two minus one).
    pub hot_mask: u32,
    /// The region of clients no `GEO_*` subnet covers (`generation * MAX_REGIONS + region`).
    pub default_region: u32,
    /// The half of the IPv6 region tables lookups read (the generation written last).
    pub geo6_half: u32,
    /// Zero.
    pub reserved: u32,
    /// Seed of [`hot_hash`], chosen by the daemon at start.
    pub seed: u64,
}
const _: () = assert!(size_of::<XdpConfig>() == 8 + 4 * 8 + 16 * 8 + 24);
#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, no padding (asserted above).
unsafe impl aya::Pod for XdpConfig {}

impl XdpConfig {
    /// A configuration that passes every packet.
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            port: 0,
            v4_count: 0,
            v6_count: 0,
            v4: [[0; 4]; 8],
            v6: [[0; 16]; 8],
            hot_mask: 0,
            default_region: 0,
            geo6_half: 0,
            reserved: 0,
            seed: 0,
        }
    }
}

/// Buckets a lookup in `HOT_TABLE` examines at most, from the key's home bucket on. The daemon
/// places every key within them (or leaves it to userspace).
pub const HOT_PROBES: usize = 8;
/// `HotBucket::slot` of a bucket whose key was removed: lookups probe on past it.
pub const SLOT_TOMB: u32 = u32::MAX - 1;

/// A bucket of `HOT_TABLE`: one cache line holding the key and, for the usual answer of up to four
/// A or one AAAA records, the answer itself, so a lookup touches one line. The slot comes first
/// so that the key's name starts 8 bytes in (four aligned 64-bit words) and the answer 40 bytes
/// in (three).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct HotBucket {
    /// [`SLOT_INLINE`] with a sequence number (the answer is `answer`), an answer slot,
    /// [`SLOT_NONE`] (being filled) or [`SLOT_TOMB`] (removed).
    pub slot: u32,
    /// The key; `qtype == 0` marks a bucket never used, which ends a lookup.
    pub key: HotKey32,
    /// The answer, when `slot` says it is inline.
    pub answer: AnswerSmall,
}
/// 64-bit word of a `HotBucket` where its name starts.
pub const BUCKET_NAME_WORD: usize = 1;
/// 64-bit word of a `HotBucket` where its inline answer starts.
pub const BUCKET_ANSWER_WORD: usize = 5;
/// 64-bit words of an inline answer.
pub const ANSWER_WORDS: usize = 3;
const _: () = assert!(core::mem::offset_of!(HotBucket, answer) == 8 * BUCKET_ANSWER_WORD);
const _: () = assert!(size_of::<AnswerSmall>() == 8 * ANSWER_WORDS);
const _: () = assert!(size_of::<HotBucket>() == 64);
#[cfg(feature = "user")]
// SAFETY: repr(C), only integers and byte arrays, no padding (asserted above).
unsafe impl aya::Pod for HotBucket {}

impl HotBucket {
    /// A bucket never used.
    #[must_use]
    pub const fn empty() -> Self {
        Self {
            slot: SLOT_NONE,
            key: HotKey32::zeroed(),
            answer: AnswerSmall::zeroed(),
        }
    }
}

/// Home bucket hash of a key of the first size class: a multiply-xorshift over its 36 bytes.
/// The XDP program and the daemon compute it with this same function.
#[inline(always)]
#[must_use]
pub fn hot_hash(seed: u64, head: u32, name: [u64; 4]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ u64::from(head).wrapping_mul(K);
    let mut i = 0;
    while i < 4 {
        h = (h ^ name[i]).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 29;
        i += 1;
    }
    h ^ (h >> 32)
}

impl HotKey32 {
    /// `qtype` and `region` as the first word of the key (memory order).
    #[inline(always)]
    #[must_use]
    pub fn head(&self) -> u32 {
        u32::from(self.qtype) | (u32::from(self.region) << 16)
    }

    /// The name as four little-endian words.
    #[inline(always)]
    #[must_use]
    pub fn words(&self) -> [u64; 4] {
        let mut w = [0u64; 4];
        let mut i = 0;
        while i < 4 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.name[i * 8..i * 8 + 8]);
            w[i] = u64::from_le_bytes(b);
            i += 1;
        }
        w
    }
}

/// Largest answer either path builds with the hot builder (offsets below it are masked with
/// `MSG_MASK` for the verifier).
pub const MSG_AREA: usize = 1024;
/// Mask for offsets into a message.
pub const MSG_MASK: usize = MSG_AREA - 1;
/// Bytes past `MSG_AREA` in the daemon's message buffer so that a masked offset can take a
/// 16-byte write.
pub const MSG_SLACK: usize = 64;
/// Largest query the XDP program answers; bigger ones are passed up.
pub const MAX_XDP_QUERY: usize = 512;

/// `Scratch::hint`: growing the frame at the tail failed last time on this CPU (veth), so try
/// the headroom first.
pub const HINT_HEAD_FIRST: u32 = 1;

/// Per-CPU scratch of the XDP program (value of `SCRATCH`, one entry): what does not fit the
/// 512-byte BPF stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    /// Verifier-opaque cell for `Wire::launder`.
    pub cell: u64,
    /// The DNS message: the query is copied in, the answer built in place and copied out.
    pub msg: [u8; MSG_AREA + MSG_SLACK],
    /// The lookup key being built.
    pub key: HotKey256,
    /// `HINT_*` bits remembered between packets.
    pub hint: u32,
    /// A copy of the inline answer of the bucket a lookup found (an `AnswerSmall`, as words).
    pub inline: [u64; ANSWER_WORDS],
    /// A steered name's answer: the eligible records of the set its region answers from.
    pub steered: AnswerLarge,
}
const _: () =
    assert!(size_of::<Scratch>() == 8 + MSG_AREA + MSG_SLACK + 260 + 4 + 24 + 8 + LARGE_RDATA);
#[cfg(feature = "user")]
// SAFETY: repr(C), only integers and byte arrays, no padding (asserted above).
unsafe impl aya::Pod for Scratch {}
