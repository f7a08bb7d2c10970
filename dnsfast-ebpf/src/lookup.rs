//! The hot-answer maps and the per-CPU scratch space.
//!
//! Names of up to 32 octets (almost every name a steering policy serves) are found in
//! `HOT_TABLE`, an open-addressing table the program probes itself: one hash, then one cache
//! line per probe, no helper call (the rare name that finds no room within `HOT_PROBES` of its
//! home bucket is placed in `HOT_64`, and looked up there once the run is exhausted). Longer
//! names take three steps (see `dnsfast_common::maps`):
//! the size class's hash map gives the entry, `ANSWER_INDEX[entry]` gives the slot (one atomic
//! 32-bit load: the daemon flips it with one store). Either way the slot holds the answer, which
//! the daemon never writes while it is reachable, or says the name is steered: then (and only
//! then) the client's region picks an entry of the name's `REGION_SETS` block, which names the
//! shared answer set, whose `state` word gives the eligible records and the set they are
//! answered from ([`steer`]).

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, LpmTrie, PerCpuArray, ProgramArray, lpm_trie::Key},
    macros::btf_map,
    programs::XdpContext,
};
use dnsfast_common::{
    geotable::{V4_L0_ENTRIES, V6_LEVEL_SLOTS, V6_VALUES, lookup_v4, lookup_v6},
    maps::{
        ANSWER_WORDS, AnswerLarge, AnswerSet, AnswerSmall, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC,
        BUCKET_ANSWER_WORD, BUCKET_NAME_WORD, CFG_ECS_LISTED, DEFAULT_ANSWER_SETS,
        DEFAULT_GEO4_WORDS, DEFAULT_GEO6_WORDS, DEFAULT_HOT_ENTRIES, DEFAULT_LARGE_SLOTS,
        DEFAULT_SMALL_SLOTS, DEFAULT_STEERED, HOT_PROBES, HotBucket, HotKey32, HotKey64, HotKey128,
        HotKey256, HotRef, LARGE_RDATA, MAX_ECS_RESOLVERS, MAX_SET_RECORDS, NAME_CLASSES,
        REGION_SLOTS, SLOT_LARGE, SLOT_NONE, SLOT_STEERED, SLOT_TOMB, Scratch, XdpConfig,
        capped_ttl, hot_hash, slot_is_inline, slot_is_steered, state_eligible,
    },
    steer::{MAX_ANSWER_COUNT, draw_with},
    wire::{TYPE_A, TYPE_AAAA},
};

#[btf_map]
static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Sized by the daemon at load (a power of two); the size here only satisfies the loader.
#[btf_map]
static HOT_TABLE: Array<HotBucket, { 2 * DEFAULT_HOT_ENTRIES }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
static HOT_64: HashMap<HotKey64, HotRef, DEFAULT_HOT_ENTRIES, BPF_F_NO_PREALLOC> = HashMap::new();
#[btf_map]
static HOT_128: HashMap<HotKey128, HotRef, DEFAULT_HOT_ENTRIES, BPF_F_NO_PREALLOC> = HashMap::new();
#[btf_map]
static HOT_256: HashMap<HotKey256, HotRef, DEFAULT_HOT_ENTRIES, BPF_F_NO_PREALLOC> = HashMap::new();

#[btf_map]
static ANSWER_INDEX: Array<u32, DEFAULT_HOT_ENTRIES, BPF_F_MMAPABLE> = Array::new();
#[btf_map]
static ANSWERS_SMALL: Array<AnswerSmall, DEFAULT_SMALL_SLOTS> = Array::new();
#[btf_map]
static ANSWERS_LARGE: Array<AnswerLarge, DEFAULT_LARGE_SLOTS> = Array::new();

#[btf_map]
static REGION_SETS: Array<u32, { DEFAULT_STEERED * REGION_SLOTS }, BPF_F_MMAPABLE> = Array::new();
#[btf_map]
static ANSWER_SETS: Array<AnswerSet, DEFAULT_ANSWER_SETS, BPF_F_MMAPABLE> = Array::new();

// The client region map's prefix tables (`dnsfast_common::geotable`); the pools are sized by
// the daemon at load.
#[btf_map]
static GEO4_L0: Array<u64, { V4_L0_ENTRIES / 4 }, BPF_F_MMAPABLE> = Array::new();
#[btf_map]
static GEO4_POOL: Array<u64, DEFAULT_GEO4_WORDS, BPF_F_MMAPABLE> = Array::new();
#[btf_map]
static GEO6_POOL: Array<u64, DEFAULT_GEO6_WORDS, BPF_F_MMAPABLE> = Array::new();
#[btf_map]
static GEO6_LEVELS: Array<u32, { 2 * V6_LEVEL_SLOTS }, BPF_F_MMAPABLE> = Array::new();
#[btf_map]
static GEO6_VALUES: Array<u32, { 2 * V6_VALUES }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
static ECS_RESOLVERS_V4: LpmTrie<[u8; 4], u8, MAX_ECS_RESOLVERS> = LpmTrie::new();
#[btf_map]
static ECS_RESOLVERS_V6: LpmTrie<[u8; 16], u8, MAX_ECS_RESOLVERS> = LpmTrie::new();

/// Value `i` of a mapped array the daemon stores into while we read (aligned, whole).
#[inline(always)]
fn word<T: Copy, const N: usize, const F: usize>(map: &Array<T, N, F>, i: usize) -> Option<T> {
    let p = map.get_ptr(u32::try_from(i).ok()?)?;
    // SAFETY: element pointer from a successful array lookup, valid for this program run.
    Some(unsafe { core::ptr::read_volatile(p) })
}

/// The benchmark's `ceiling-lpm` reference (`reflect::reflect_lpm`): the value of the longest
/// prefix holding `addr` (the first 4 bytes if not `v6`) in `ECS_RESOLVERS_*`, which that
/// reference's loader fills with the region map's blocks instead of resolvers (the daemon never
/// runs beside it).
#[inline(always)]
pub fn reference_lpm(v6: bool, addr: [u8; 16]) -> Option<u8> {
    let found = if v6 {
        ECS_RESOLVERS_V6.get(&Key::new(128, addr))
    } else {
        ECS_RESOLVERS_V4.get(&Key::new(32, [addr[0], addr[1], addr[2], addr[3]]))
    };
    // SAFETY: a value pointer from a successful lookup, valid for this program run.
    found.map(|v| unsafe { core::ptr::read_volatile(v) })
}

/// The benchmark's `ceiling-geo-miss` reference (`reflect::reflect_geo_miss`): value `i` of
/// `GEO4_L0` (the region tables' first level, at its full size, loaded empty).
#[inline(always)]
pub fn reference_l0(i: usize) -> Option<u64> {
    word(&GEO4_L0, i)
}

/// The `GEO_*` value of an IPv4 address (region | block length << 16 | `GEO_SPECIAL`).
#[inline(always)]
pub fn geo_v4(addr: [u8; 4]) -> Option<u32> {
    lookup_v4(
        u32::from_be_bytes(addr),
        |i| word(&GEO4_L0, i),
        |i| word(&GEO4_POOL, i),
    )
}

/// The `GEO_*` value of an IPv6 address, from the half of the tables `half` names.
#[inline(always)]
pub fn geo_v6(a: [u8; 16], half: u32) -> Option<u32> {
    let base = (half & 1) as usize * V6_LEVEL_SLOTS;
    lookup_v6(
        a,
        |l| word(&GEO6_LEVELS, base + l),
        |i| word(&GEO6_POOL, i),
        |i| word(&GEO6_VALUES, i),
    )
}

/// The programs the main one hands a query to: slot [`STAGE_ECS`] is `dnsfast_ecs`, which
/// answers queries that carry a Client Subnet option (the daemon fills the slot at load).
#[btf_map]
static STAGES: ProgramArray<1> = ProgramArray::new();

/// `STAGES` slot of the Client Subnet stage.
const STAGE_ECS: u32 = 0;

/// Hands a query with a Client Subnet option to the Client Subnet stage if the option is
/// honoured: from any resolver, or (`CFG_ECS_LISTED`) from one whose address is in
/// `ECS_RESOLVERS_*`. Returns if it is not (the daemon answers, ignoring the option) or the
/// stage is not there.
#[inline(always)]
pub fn to_ecs_stage(ctx: &XdpContext) {
    let Some(cfg) = crate::config::get() else {
        return;
    };
    if cfg.flags & CFG_ECS_LISTED != 0 && !resolver_listed(ctx) {
        return;
    }
    // SAFETY: a tail call into a program the daemon placed in the slot, with this context;
    // nothing of this program runs after it succeeds, and on failure it simply returns.
    unsafe { STAGES.tail_call(ctx, STAGE_ECS) };
}

/// Whether the frame's source address is in `ECS_RESOLVERS_*` (the parser passed up every
/// frame but untagged IPv4 and IPv6: the `EtherType` decides the family).
#[inline(always)]
fn resolver_listed(ctx: &XdpContext) -> bool {
    let Some(ethertype) = crate::packet::ptr_at::<[u8; 2]>(ctx, 12) else {
        return false;
    };
    // SAFETY: ptr_at checked the bytes are inside the packet.
    if unsafe { core::ptr::read_unaligned(ethertype) } == [0x86, 0xDD] {
        crate::packet::ptr_at::<[u8; 16]>(ctx, 22).is_some_and(|p| {
            // SAFETY: as above, the 16 bytes.
            let key = Key::new(128, unsafe { core::ptr::read_unaligned(p) });
            ECS_RESOLVERS_V6.get(&key).is_some()
        })
    } else {
        crate::packet::ptr_at::<[u8; 4]>(ctx, 26).is_some_and(|p| {
            // SAFETY: as above, the 4 bytes.
            let key = Key::new(32, unsafe { core::ptr::read_unaligned(p) });
            ECS_RESOLVERS_V4.get(&key).is_some()
        })
    }
}

/// The region of the client that sent the frame (IPv6 if `v6`): its source address's block in
/// the region tables, else (no table written) the default region. Called only for a steered name.
#[inline(always)]
pub fn client_region(ctx: &XdpContext, v6: bool, cfg: &XdpConfig) -> u32 {
    // The source address: IPv4 at 14 + 12, IPv6 at 14 + 8 (no VLAN tag: the parser passed
    // those up).
    let found = if v6 {
        crate::packet::ptr_at::<[u8; 16]>(ctx, 22).and_then(|p| {
            // SAFETY: ptr_at checked the 16 bytes are inside the packet.
            geo_v6(unsafe { core::ptr::read_unaligned(p) }, cfg.geo6_half)
        })
    } else {
        crate::packet::ptr_at::<[u8; 4]>(ctx, 26).and_then(|p| {
            // SAFETY: as above.
            geo_v4(unsafe { core::ptr::read_unaligned(p) })
        })
    };
    found.map_or(cfg.default_region, |v| v & 0xFFFF)
}

/// Never read by the program. The daemon updates it to wait for an RCU grace period: the
/// kernel answers an update of a map-of-maps only after every BPF program that could still hold
/// an old value has finished (`maybe_wait_bpf_programs`), which is what recycling an answer
/// slot or a hash element needs.
#[btf_map]
static GRACE: ArrayOfMaps<Array<u32, 1>, 1> = ArrayOfMaps::new();

/// This CPU's scratch space.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: a per-CPU array slot is used only by the program running on this CPU, and XDP
    // programs do not nest on one CPU, so this is the only reference to it.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The slot of the `HOT_TABLE` bucket `hash` picks, read as a probe reads it (the benchmark's
/// big-zone reference, `reflect::reflect_miss`).
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "a probe uses the hash's low 32 bits too"
)]
pub fn bucket_slot(cfg: &XdpConfig, hash: u64) -> Option<u32> {
    let bucket = HOT_TABLE.get_ptr(hash as u32 & cfg.hot_mask)?;
    // SAFETY: element pointer from a successful array lookup, valid for this program run.
    Some(unsafe { core::ptr::read_volatile(&raw const (*bucket).slot) })
}

/// A hot answer: in one of the two slot tables, or the copy of a bucket's inline answer.
pub enum Answer<'a> {
    Small(&'a AnswerSmall),
    Large(&'a AnswerLarge),
}

/// Where [`find`] copies what it found that is not a map value of its own.
pub struct Found<'a, 'r> {
    /// `Scratch::inline`.
    pub inline: &'a mut [u64; ANSWER_WORDS],
    /// `Scratch::steered`.
    pub steered: &'a mut AnswerLarge,
    /// The answer's rotation (`wire::answer_rotation`): a steered answer's draw is seeded with
    /// it and sets it to 0.
    pub rotation: &'r mut u32,
}

/// The answer for `key` (built by `wire::build_key` for size class `class`), if it is hot.
/// `region` is asked only for a steered name.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a reference keeps the key off the 512-byte BPF stack"
)]
pub fn find<'a>(
    cfg: &XdpConfig,
    class: usize,
    key: &mut HotKey256,
    found: Found<'a, '_>,
    region: impl FnOnce() -> u32,
    launder: impl FnMut(usize) -> usize,
) -> Option<Answer<'a>> {
    let Found {
        inline,
        steered,
        rotation,
    } = found;
    let k: *mut HotKey256 = key;
    let mut map_class = class;
    let mut slot = SLOT_NONE;
    if class == 0 {
        // SAFETY: HotKey32 is a prefix of HotKey256's layout (same leading fields, shorter name,
        // same alignment), so the cast is a valid reference to the smaller key.
        match probe(cfg, unsafe { &*k.cast::<HotKey32>() }, inline) {
            Probe::Found(s) if slot_is_inline(s) => {
                let copy: *const [u64; ANSWER_WORDS] = inline;
                // SAFETY: three u64 words are an AnswerSmall's 24 bytes (asserted in maps), with
                // stricter alignment; the copy is this CPU's, written by `probe` just now.
                return Some(Answer::Small(unsafe { &*copy.cast::<AnswerSmall>() }));
            }
            Probe::Found(s) => slot = s,
            Probe::Absent => return None,
            // Every bucket of the run is taken: the daemon may have placed the name in HOT_64.
            // `build_key` padded the name to 32 octets; HOT_64 reads 64.
            Probe::Exhausted => {
                // SAFETY: the scratch key is this CPU's and nothing else refers to it now.
                unsafe { (&mut (*k).name)[NAME_CLASSES[0]..NAME_CLASSES[1]].fill(0) };
                map_class = 1;
            }
        }
    }
    if map_class != 0 {
        // The larger keys are prefixes of HotKey256 too, and each map reads only
        // size_of::<HotKeyN>() bytes: no copy lands on the 512-byte stack.
        let entry = match map_class {
            // SAFETY: see above.
            1 => HOT_64.get_ptr(unsafe { &*k.cast::<HotKey64>() }),
            // SAFETY: see above.
            2 => HOT_128.get_ptr(unsafe { &*k.cast::<HotKey128>() }),
            _ => HOT_256.get_ptr(key),
        }?;
        // SAFETY: the pointer came from a successful lookup and is valid for this program run.
        // The element may be recycled by a concurrent delete+insert; the daemon waits an RCU
        // grace period between the two, and a plain 32-bit load cannot tear.
        let entry = unsafe { core::ptr::read_volatile(&raw const (*entry).entry) };
        let index = ANSWER_INDEX.get_ptr(entry)?;
        // SAFETY: array element pointer from a successful lookup; the daemon writes it only with
        // aligned 32-bit atomic stores, so this load sees either the old or the new slot.
        slot = unsafe { core::ptr::read_volatile(index) };
    }
    if slot == SLOT_NONE {
        return None;
    }
    if slot_is_steered(slot) {
        return steer(slot & !SLOT_STEERED, region(), steered, rotation, launder)
            .map(Answer::Large);
    }
    if slot & SLOT_LARGE != 0 {
        ANSWERS_LARGE.get(slot & !SLOT_LARGE).map(Answer::Large)
    } else {
        ANSWERS_SMALL.get(slot).map(Answer::Small)
    }
}

/// What a walk of `key`'s probe run in `HOT_TABLE` found.
enum Probe {
    /// The key, with this slot.
    Found(u32),
    /// Not in the table: an unused bucket ended the run, the key was removed, or its bucket kept
    /// changing.
    Absent,
    /// `HOT_PROBES` buckets held other keys. The daemon places a name it cannot fit in its run
    /// in `HOT_64` instead; such a run never has an unused bucket, since buckets are never
    /// emptied once used.
    Exhausted,
}

/// How many times a bucket whose slot keeps changing is read before the lookup gives up.
const READ_ATTEMPTS: usize = 3;

/// Walks `key`'s run of `HOT_TABLE` from its hash; the bucket's inline answer is copied to
/// `inline` on the way (used only if the slot says it is inline).
///
/// The daemon writes a bucket while the program may read it: it publishes a new bucket by
/// writing the key and then the slot, and retires one by setting the slot to `SLOT_TOMB` before
/// touching the key. Reading the slot before and after comparing the key, and taking the answer
/// only if both reads agree on a valid slot, therefore never pairs a key with another key's
/// answer (loads and stores stay in program order on x86, and the compiler keeps volatile loads
/// in program order).
#[inline(always)]
fn probe(cfg: &XdpConfig, key: &HotKey32, inline: &mut [u64; ANSWER_WORDS]) -> Probe {
    let head = key.head();
    let words = key.words();
    let hash = hot_hash(cfg.seed, head, words);
    let mut i = 0;
    while i < HOT_PROBES {
        let index = (hash as u32).wrapping_add(i as u32) & cfg.hot_mask;
        let Some(bucket) = HOT_TABLE.get_ptr(index) else {
            return Probe::Absent;
        };
        // A slot that changes while the key is compared (the daemon publishing a new answer
        // for it) is read again, a bounded number of times, rather than missed.
        let mut attempt = 0;
        while attempt < READ_ATTEMPTS {
            // SAFETY: element pointer from a successful array lookup, valid for this program
            // run; every field is read with an aligned volatile load of its natural size, so no
            // read tears, and volatile loads stay in program order.
            let (before, stored_head, same_name, after) = unsafe {
                let before = core::ptr::read_volatile(&raw const (*bucket).slot);
                let stored_head = core::ptr::read_volatile(bucket.cast::<u32>().add(1));
                let name = bucket.cast::<u64>().add(BUCKET_NAME_WORD);
                let mut same = true;
                let mut w = 0;
                while w < 4 {
                    same &= core::ptr::read_volatile(name.add(w)) == words[w];
                    w += 1;
                }
                let answer = bucket.cast::<u64>().add(BUCKET_ANSWER_WORD);
                let mut w = 0;
                while w < ANSWER_WORDS {
                    inline[w] = core::ptr::read_volatile(answer.add(w));
                    w += 1;
                }
                let after = core::ptr::read_volatile(&raw const (*bucket).slot);
                (before, stored_head, same, after)
            };
            if stored_head.trailing_zeros() >= 16 {
                // qtype (the low half) is 0: a bucket never used, so the key is not in the table.
                return Probe::Absent;
            }
            if stored_head != head || !same_name {
                break;
            }
            if before == after {
                return if before == SLOT_TOMB {
                    Probe::Absent
                } else {
                    Probe::Found(before)
                };
            }
            attempt += 1;
        }
        if attempt == READ_ATTEMPTS {
            return Probe::Absent;
        }
        i += 1;
    }
    Probe::Exhausted
}

const _: () = assert!(
    core::mem::offset_of!(AnswerSet, rdata) % 4 == 0
        && core::mem::offset_of!(AnswerLarge, rdata) % 4 == 0
        && align_of::<AnswerSet>() >= 4
        && align_of::<AnswerLarge>() >= 4
);

/// A steered name's answer for `region`, from its block `block` of `REGION_SETS`: the records
/// `steer::draw` picks (by weight, among the eligible ones of the set the region answers from,
/// for the query whose hash is `seed`), in draw order, copied to `out`; `seed` becomes 0, the
/// rotation that keeps that order. `None` (the daemon answers) if the region has no set or no
/// record is eligible: what then goes out (fail open, NODATA) is the daemon's policy, not the
/// program's.
///
/// Each word read here is stored whole by the daemon: the region's entry (32 bits), the set's
/// `state` (64 bits: eligibility, TTL cap and redirect together). A redirect's target is final,
/// so one hop suffices; its `state` gives the eligibility and the cap, its own redirect is not
/// followed. Records,
/// TTL and count are immutable while a set is reachable.
#[inline(always)]
fn steer<'a>(
    block: u32,
    region: u32,
    out: &'a mut AnswerLarge,
    seed: &mut u32,
    mut launder: impl FnMut(usize) -> usize,
) -> Option<&'a AnswerLarge> {
    const REGIONS: u32 = REGION_SLOTS as u32;
    const WORDS: usize = LARGE_RDATA / 4;
    let index = block
        .wrapping_mul(REGIONS)
        .wrapping_add(region & (REGIONS - 1));
    let entry = REGION_SETS.get_ptr(index)?;
    // SAFETY: element pointer from a successful array lookup, valid for this program run; the
    // daemon stores it with aligned 32-bit atomic stores.
    let id = unsafe { core::ptr::read_volatile(entry) };
    let mut set = ANSWER_SETS.get_ptr(id)?;
    // SAFETY: as above; `state` is 8-aligned and stored with 64-bit atomic stores.
    let mut state = unsafe { core::ptr::read_volatile(&raw const (*set).state) };
    let from = (state >> 32) as u32;
    if from != id {
        set = ANSWER_SETS.get_ptr(from)?;
        // SAFETY: as above.
        state = unsafe { core::ptr::read_volatile(&raw const (*set).state) };
    }
    // SAFETY: as above; the fields read through it do not change while the set is reachable.
    let set = unsafe { &*set };
    let rdlen = match set.rrtype {
        TYPE_A => 4,
        TYPE_AAAA => 16,
        _ => return None,
    };
    let count = usize::from(set.count);
    if count == 0 || count > MAX_SET_RECORDS {
        return None;
    }
    let eligible = state_eligible(state);
    let drawn = draw_with(
        &set.weights,
        count,
        eligible,
        usize::from(set.answer_count),
        *seed,
        |v| launder(v as usize) as u32,
    );
    // One verifier state whichever number of records the draw stopped at.
    let n = launder(drawn.len);
    if n == 0 || n > MAX_ANSWER_COUNT {
        return None;
    }
    let rdlen = launder(rdlen) & 0x1C;
    // The drawn order is the answer's: the writer must not rotate it.
    *seed = 0;
    // Copied as 32-bit words: both address arrays start 4-aligned (asserted above `steer`)
    // and every record starts on a multiple of 4 bytes.
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "4-aligned, asserted at compile time"
    )]
    let src = set.rdata.as_ptr().cast::<u32>();
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "4-aligned, asserted at compile time"
    )]
    let dst = out.rdata.as_mut_ptr().cast::<u32>();
    let rec_words = rdlen / 4;
    // Every place is filled (16 bytes, whatever the type: an A record's next places are
    // overwritten by the records after it, and the count keeps what is past the last), so the
    // loop has no exit that depends on the data.
    let mut taken = 0;
    while taken < MAX_ANSWER_COUNT {
        let rec = usize::from(drawn.order[taken]) & (MAX_SET_RECORDS - 1);
        let mut word = 0;
        while word < 4 {
            let from = (rec * rec_words + word) & (WORDS - 1);
            let to = (taken * rec_words + word) & (WORDS - 1);
            // SAFETY: `from` and `to` are below WORDS, so both words lie inside their arrays,
            // which are 4-aligned; the set's records do not change while it is reachable.
            unsafe { dst.add(to).write(src.add(from).read()) };
            word += 1;
        }
        taken += 1;
    }
    out.ttl = capped_ttl(set.ttl, state);
    out.rrtype = set.rrtype;
    out.count = n as u16;
    Some(out)
}
