//! The hot-answer maps and the per-CPU scratch space.
//!
//! A lookup is three steps (see `dnsfast_common::maps`): the name's size-class hash map gives the
//! entry, `ANSWER_INDEX[entry]` gives the slot (one atomic 32-bit load: the daemon flips it with
//! one store), and the slot holds the answer, which the daemon never writes while it is
//! reachable.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, PerCpuArray},
    macros::btf_map,
};
use dnsfast_common::maps::{
    AnswerLarge, AnswerSmall, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, DEFAULT_HOT_ENTRIES,
    DEFAULT_LARGE_SLOTS, DEFAULT_SMALL_SLOTS, HotKey32, HotKey64, HotKey128, HotKey256, HotRef,
    SLOT_LARGE, SLOT_NONE, Scratch,
};

#[btf_map]
static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

#[btf_map]
static HOT_32: HashMap<HotKey32, HotRef, DEFAULT_HOT_ENTRIES, BPF_F_NO_PREALLOC> = HashMap::new();
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

/// A hot answer in one of the two slot tables.
pub enum Answer {
    Small(&'static AnswerSmall),
    Large(&'static AnswerLarge),
}

/// The answer for `key` (built by `wire::build_key` for size class `class`), if it is hot.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a reference keeps the key off the 512-byte BPF stack"
)]
pub fn find(class: usize, key: &HotKey256) -> Option<Answer> {
    let k: *const HotKey256 = key;
    // The smaller keys are prefixes of HotKey256's layout (same leading fields, shorter name,
    // same alignment) and each map reads only size_of::<HotKeyN>() bytes: a pointer cast is a
    // valid reference to the smaller key, and no copy lands on the 512-byte stack.
    let entry = match class {
        // SAFETY: see above.
        0 => HOT_32.get_ptr(unsafe { &*k.cast::<HotKey32>() }),
        // SAFETY: see above.
        1 => HOT_64.get_ptr(unsafe { &*k.cast::<HotKey64>() }),
        // SAFETY: see above.
        2 => HOT_128.get_ptr(unsafe { &*k.cast::<HotKey128>() }),
        _ => HOT_256.get_ptr(key),
    }?;
    // SAFETY: the pointer came from a successful lookup and is valid for this program run. The
    // element may be recycled by a concurrent delete+insert; the daemon waits an RCU grace period
    // between the two, and a plain 32-bit load cannot tear.
    let entry = unsafe { core::ptr::read_volatile(&raw const (*entry).entry) };
    let slot = ANSWER_INDEX.get_ptr(entry)?;
    // SAFETY: array element pointer from a successful lookup; the daemon writes it only with
    // aligned 32-bit atomic stores, so this load sees either the old or the new slot.
    let slot = unsafe { core::ptr::read_volatile(slot) };
    if slot == SLOT_NONE {
        return None;
    }
    if slot & SLOT_LARGE != 0 {
        ANSWERS_LARGE.get(slot & !SLOT_LARGE).map(Answer::Large)
    } else {
        ANSWERS_SMALL.get(slot).map(Answer::Small)
    }
}
