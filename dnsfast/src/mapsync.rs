//! Plans the map writes that apply a batch of hot-answer [`Change`]s without the XDP program
//! ever reading a half-written answer. Pure bookkeeping, no aya: `xdp` executes the [`Op`]s.
//!
//! Names of at most 32 octets live in buckets of `HOT_TABLE` (open addressing, linear probing
//! from the key's home bucket for at most `HOT_PROBES`), with their answer inside the bucket when
//! it is small (up to four A or one AAAA records); longer ones in the `HOT_*` hash maps with an
//! `ANSWER_INDEX` entry each, and so is a short name whose probe run is full (in `HOT_64`, where
//! the XDP program looks after probing the whole run: buckets are never emptied once used, so
//! such a run stays without an unused bucket that would end the lookup early). The rules (see
//! `docs/architecture.md`, "Map design"):
//! - an answer slot is written only while unreachable, then published by one atomic store (into
//!   a bucket or an index entry);
//! - a slot or entry that was reachable is reused only after an RCU grace period ([`Op::Grace`]),
//!   when no program run that could have read it is still going;
//! - a bucket's key is written only while its slot holds no answer (`SLOT_NONE`, `SLOT_TOMB`),
//!   and a bucket whose key is removed stays a tombstone (lookups probe past it) until reused;
//! - a bucket's inline answer is written ([`Op::BucketInline`]) only while the bucket's slot is
//!   not inline: a new answer for an inline bucket is first parked in a slot and published
//!   there, so readers always find an answer, and the slot is recycled after a grace period
//!   like any other;
//! - deleting a hash element and inserting another are separated by a grace period, because the
//!   kernel may hand the deleted element's memory to the insert while a reader still holds it.
//!
//! - a steered name's key points at its block of `REGION_SETS` (`SLOT_STEERED | block`), filled
//!   before the key is published; its entries are re-pointed one store each, always at a whole
//!   answer set;
//! - an answer set ([`SetChange`]) is written whole while unreachable; afterwards only its
//!   `state` word changes ([`Op::SetState`], one 64-bit store). Replacing its records writes a
//!   fresh set and re-points every region entry and every redirect that named the old one,
//!   which is released like a slot. A set's new state is stored before any redirect that newly
//!   names it, and after every redirect that leaves it, so a region that fails over (or back)
//!   finds its target's current eligibility.
//!
//! Grace periods are lazy: released ids wait in a pending list, across batches, until a batch
//! runs out of free ones (or inserts into a hash map after a delete). A grace period costs
//! milliseconds; most batches (a health flip, a zone edit) then need none.

use std::{collections::HashMap, sync::Arc};

use dnsfast_common::maps::{
    AnswerSet, HOT_PROBES, HotKey32, MAX_SET_RECORDS, REGION_SLOTS, SET_NONE, SLOT_INLINE,
    SLOT_LARGE, SLOT_NONE, SLOT_STEERED, SLOT_TOMB, hot_hash, name_class, set_state,
    slot_is_inline, slot_is_steered,
};

use crate::hot::{Change, HotAnswer, HotKey};

/// The caller's name for an answer set, stable across batches (the steering compiler numbers
/// its pools); the maps' own set ids are the planner's business.
pub type SetName = u32;

/// What an answer set holds: immutable while anything can reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetContents {
    /// TTL, type and records (1..=[`MAX_SET_RECORDS`]).
    pub answer: HotAnswer,
    /// Each record's weight.
    pub weights: Vec<u8>,
    /// Records an answer carries.
    pub answer_count: u8,
}

impl SetContents {
    /// The map value, with `state` as its state word.
    #[must_use]
    pub fn to_map(&self, state: u64) -> AnswerSet {
        let mut v = AnswerSet::zeroed();
        v.state = state;
        v.ttl = self.answer.ttl;
        v.rrtype = self.answer.rrtype;
        v.count = self.answer.count.min(MAX_SET_RECORDS as u16) as u8;
        v.answer_count = self.answer_count;
        for (d, w) in v.weights.iter_mut().zip(&self.weights) {
            *d = *w;
        }
        let n = self.answer.rdata.len().min(v.rdata.len());
        v.rdata[..n].copy_from_slice(&self.answer.rdata[..n]);
        v
    }
}

/// What changes with health: the records that may be answered (bit `i` = record `i`), the TTL
/// cap while one of them has failed checks, and the set answered from instead while this one
/// is down (`None`: itself). A redirect names a set
/// that answers from itself: the XDP program follows one hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetState {
    /// Eligible records.
    pub eligible: u32,
    /// The longest TTL its answers may carry, seconds (0: the set's own).
    pub ttl_cap: u16,
    /// The failover target, if the set is down.
    pub answers_from: Option<SetName>,
}

/// A change to the answer sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetChange {
    /// Adds set `name`, or replaces its records.
    Put {
        /// The set.
        name: SetName,
        /// Records and weights.
        contents: Arc<SetContents>,
        /// Its state.
        state: SetState,
    },
    /// Changes only a set's state (a health change): one store.
    State {
        /// The set.
        name: SetName,
        /// Its new state.
        state: SetState,
    },
    /// Removes set `name`; region entries still naming it send their clients to the daemon.
    Remove {
        /// The set.
        name: SetName,
    },
}

/// A steered name's regions (index = region; `None` or past the end: no set, the daemon
/// answers), or `None` to remove the name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SteerChange {
    /// The name's key (region [`dnsfast_common::maps::REGION_ANY`]).
    pub key: HotKey,
    /// The set of each region.
    pub regions: Option<Arc<[Option<SetName>]>>,
}

/// The steered part of a batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Steering<'a> {
    /// Answer set changes.
    pub sets: &'a [SetChange],
    /// Steered names added, changed or removed.
    pub keys: &'a [SteerChange],
}

/// One step for the executor, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write `answer` into the unreachable slot `slot` (`SLOT_LARGE` bit selects the table).
    WriteSlot {
        /// Slot id.
        slot: u32,
        /// Contents.
        answer: Arc<HotAnswer>,
    },
    /// Write the key of a bucket whose slot holds no answer.
    BucketKey {
        /// Bucket.
        bucket: u32,
        /// Key (a name of at most 32 octets).
        key: HotKey,
    },
    /// Write `answer` (small) into the bucket itself, then publish it: slot to `SLOT_INLINE` with
    /// a fresh sequence number. Only while the slot is not inline (it holds no answer, or a slot
    /// with the same answer): a reader uses the inline copy only if it read the same inline slot
    /// before and after copying it.
    BucketInline {
        /// Bucket (its key already written).
        bucket: u32,
        /// Contents (small).
        answer: Arc<HotAnswer>,
    },
    /// Publish or withdraw: `HOT_TABLE[bucket].slot = slot`, one atomic store.
    BucketSlot {
        /// Bucket.
        bucket: u32,
        /// An answer slot, `SLOT_NONE` or `SLOT_TOMB`.
        slot: u32,
    },
    /// Publish: `ANSWER_INDEX[entry] = slot`, one atomic store.
    Flip {
        /// Entry.
        entry: u32,
        /// Slot now serving it.
        slot: u32,
    },
    /// Write the whole answer set `set` (unreachable), `state` included.
    WriteSet {
        /// Set id in `ANSWER_SETS`.
        set: u32,
        /// Records and weights.
        contents: Arc<SetContents>,
        /// Its state word (`maps::set_state`).
        state: u64,
    },
    /// `ANSWER_SETS[set].state = state`, one atomic 64-bit store.
    SetState {
        /// Set id.
        set: u32,
        /// State word.
        state: u64,
    },
    /// `REGION_SETS[index] = set`, one atomic store (`SET_NONE`: the daemon answers).
    RegionSet {
        /// Entry (`block * REGION_SLOTS + region`).
        index: u32,
        /// Set id.
        set: u32,
    },
    /// Add `key → entry` to the hash map of its size class (names over 32 octets).
    InsertKey {
        /// Key.
        key: HotKey,
        /// Entry.
        entry: u32,
    },
    /// Remove `key` from its hash map.
    DeleteKey {
        /// Key.
        key: HotKey,
    },
    /// Wait until no program run that started before now is still running.
    Grace,
}

/// Capacities of the maps being planned for.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    /// Most hot keys; `ANSWER_INDEX` entries for long names.
    pub entries: u32,
    /// Small answer slots.
    pub small: u32,
    /// Large answer slots.
    pub large: u32,
    /// Answer sets (`ANSWER_SETS`).
    pub sets: u32,
    /// Steered names (blocks of `REGION_SETS`).
    pub steered: u32,
    /// Region-map blocks per family the region tables are sized for (`xdp.max_geo_blocks`).
    pub geo: u32,
}

impl Capacity {
    /// Buckets of `HOT_TABLE`: a power of two, at least twice the keys (load at most 1/2).
    #[must_use]
    pub fn buckets(&self) -> u32 {
        (u64::from(self.entries) * 2)
            .next_power_of_two()
            .min(1 << 31) as u32
    }
}

/// The home bucket hash of `key` (a name of at most 32 octets) under `seed`.
#[must_use]
pub fn bucket_hash(seed: u64, key: &HotKey) -> u64 {
    let k = key32(key);
    hot_hash(seed, k.head(), k.words())
}

/// The `HOT_TABLE` form of a short key (a name of at most 32 octets).
#[must_use]
pub fn key32(key: &HotKey) -> HotKey32 {
    HotKey32::new(key.qtype(), key.region(), key.name()).expect("a short name")
}

/// Whether `key` goes into `HOT_TABLE` (else into a hash map).
#[must_use]
pub fn in_table(key: &HotKey) -> bool {
    name_class(key.name().len()) == 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Bucket(u32),
    Entry(u32),
}

#[derive(Clone, Copy, Debug)]
struct Live {
    place: Place,
    slot: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bucket {
    Empty,
    Live,
    Tomb,
}

/// Ids that are free now, and ids that become free after the next grace period.
#[derive(Debug, Default)]
struct Pool {
    free: Vec<u32>,
    pending: Vec<u32>,
}

impl Pool {
    fn new(n: u32, tag: u32) -> Self {
        Self {
            free: (0..n).rev().map(|i| i | tag).collect(),
            pending: Vec::new(),
        }
    }
}

/// The result of planning a batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// Steps, in order.
    pub ops: Vec<Op>,
    /// Keys that did not fit the maps; the daemon still answers them.
    pub skipped: Vec<HotKey>,
    /// Answer sets that did not fit; the regions that answer from them go to the daemon.
    pub skipped_sets: Vec<SetName>,
}

/// An answer set in the maps.
#[derive(Clone, Debug)]
struct SetLive {
    /// Its id in `ANSWER_SETS`.
    id: u32,
    contents: Arc<SetContents>,
    state: SetState,
    /// The state word last written.
    word: u64,
}

/// What is in the maps, and which ids are free.
#[derive(Debug)]
pub struct MapSync {
    live: HashMap<HotKey, Live>,
    buckets: Vec<Bucket>,
    seed: u64,
    entries: Pool,
    small: Pool,
    large: Pool,
    /// A hash element was deleted since the last grace period.
    deleted: bool,
    /// Most keys held (`Capacity::entries`): the table has room for more short names, but the
    /// capacity a user sets and `status` reports is one number of keys.
    max_keys: usize,
    sets: HashMap<SetName, SetLive>,
    set_ids: Pool,
    blocks: Pool,
    steered: HashMap<HotKey, SteeredLive>,
}

/// A steered key's regions as asked, and its block's entries as written.
#[derive(Debug)]
struct SteeredLive {
    regions: Arc<[Option<SetName>]>,
    written: Box<[u32; REGION_SLOTS]>,
}

impl MapSync {
    /// Empty maps of `cap`; `seed` is the table hash's.
    #[must_use]
    pub fn new(cap: Capacity, seed: u64) -> Self {
        Self {
            live: HashMap::new(),
            buckets: vec![Bucket::Empty; cap.buckets() as usize],
            seed,
            entries: Pool::new(cap.entries, 0),
            small: Pool::new(cap.small, 0),
            large: Pool::new(cap.large, SLOT_LARGE),
            deleted: false,
            max_keys: cap.entries as usize,
            sets: HashMap::new(),
            set_ids: Pool::new(cap.sets, 0),
            blocks: Pool::new(cap.steered.min(SLOT_TOMB - SLOT_STEERED), 0),
            steered: HashMap::new(),
        }
    }

    /// Number of keys in the maps.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether the maps hold no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Ends a grace period in the plan: everything pending becomes free.
    fn grace(&mut self, ops: &mut Vec<Op>) {
        ops.push(Op::Grace);
        for pool in [
            &mut self.entries,
            &mut self.small,
            &mut self.large,
            &mut self.set_ids,
            &mut self.blocks,
        ] {
            pool.free.append(&mut pool.pending);
        }
        self.deleted = false;
    }

    /// Takes a free id from the pool `which` selects, waiting a grace period if only pending
    /// ids are left.
    fn take(&mut self, which: fn(&mut Self) -> &mut Pool, ops: &mut Vec<Op>) -> Option<u32> {
        if which(self).free.is_empty() && !which(self).pending.is_empty() {
            self.grace(ops);
        }
        which(self).free.pop()
    }

    fn slot_pool(answer: &HotAnswer) -> fn(&mut Self) -> &mut Pool {
        if answer.is_small() {
            |s| &mut s.small
        } else {
            |s| &mut s.large
        }
    }

    fn release_slot(&mut self, slot: u32) {
        if slot_is_inline(slot) || slot == SLOT_NONE || slot == SLOT_TOMB {
            return;
        }
        if slot_is_steered(slot) {
            self.blocks.pending.push(slot & !SLOT_STEERED);
            return;
        }
        if slot & SLOT_LARGE != 0 {
            &mut self.large
        } else {
            &mut self.small
        }
        .pending
        .push(slot);
    }

    /// Withdraws `key` (live at `live`) from the maps.
    fn remove(&mut self, key: &HotKey, live: Live, ops: &mut Vec<Op>) {
        self.steered.remove(key);
        match live.place {
            Place::Bucket(b) => {
                ops.push(Op::BucketSlot {
                    bucket: b,
                    slot: SLOT_TOMB,
                });
                self.buckets[b as usize] = Bucket::Tomb;
            }
            Place::Entry(e) => {
                ops.push(Op::DeleteKey { key: key.clone() });
                self.entries.pending.push(e);
                self.deleted = true;
            }
        }
        self.release_slot(live.slot);
    }

    /// The first bucket a lookup of `key` reaches that can take it.
    fn free_bucket(&self, key: &HotKey) -> Option<u32> {
        let mask = self.buckets.len() as u64 - 1;
        let home = bucket_hash(self.seed, key);
        (0..HOT_PROBES as u64)
            .map(|i| (home.wrapping_add(i) & mask) as u32)
            .find(|&b| self.buckets[b as usize] != Bucket::Live)
    }

    /// Plans `changes` (unsteered names). Afterwards the maps hold the new answers; ids they
    /// no longer use are pending until a later grace period.
    pub fn plan(&mut self, changes: &[Change]) -> Plan {
        self.plan_with(changes, Steering::default())
    }

    /// Plans `changes` and the steered names and answer sets of `steering`. A key is either in
    /// `changes` or in `steering.keys`: one that turns from one kind to the other is removed
    /// from the first and added to the second.
    pub fn plan_with(&mut self, changes: &[Change], steering: Steering<'_>) -> Plan {
        let mut ops = Vec::new();
        let mut skipped = Vec::new();
        for c in steering.keys {
            let turns = c.regions.is_none()
                || self
                    .live
                    .get(&c.key)
                    .is_some_and(|l| !slot_is_steered(l.slot));
            if turns && let Some(live) = self.live.remove(&c.key) {
                self.remove(&c.key, live, &mut ops);
            }
        }
        for c in changes {
            if self.steered.contains_key(&c.key)
                && let Some(live) = self.live.remove(&c.key)
            {
                self.remove(&c.key, live, &mut ops);
            }
        }

        for c in changes.iter().filter(|c| c.answer.is_none()) {
            if let Some(live) = self.live.remove(&c.key) {
                self.remove(&c.key, live, &mut ops);
            }
        }

        let mut inserts = Vec::new();
        for c in changes {
            let Some(answer) = &c.answer else { continue };
            let Some(live) = self.live.get(&c.key).copied() else {
                inserts.push((c.key.clone(), Arc::clone(answer)));
                continue;
            };
            if let (Place::Bucket(bucket), true) = (live.place, answer.is_small()) {
                if slot_is_inline(live.slot) {
                    // Readers must never copy the inline answer while it changes under an
                    // unchanged slot: park the new answer in a slot first, so they always find
                    // one answer or the other. Without a free slot, withdraw it for a moment
                    // (lookups miss, and the daemon answers, until the bucket is republished).
                    match self.take(|s| &mut s.small, &mut ops) {
                        Some(parked) => {
                            ops.push(Op::WriteSlot {
                                slot: parked,
                                answer: Arc::clone(answer),
                            });
                            ops.push(Op::BucketSlot {
                                bucket,
                                slot: parked,
                            });
                            self.release_slot(parked);
                        }
                        None => ops.push(Op::BucketSlot {
                            bucket,
                            slot: SLOT_NONE,
                        }),
                    }
                }
                ops.push(Op::BucketInline {
                    bucket,
                    answer: Arc::clone(answer),
                });
                self.release_slot(live.slot);
                self.live.insert(
                    c.key.clone(),
                    Live {
                        place: live.place,
                        slot: SLOT_INLINE,
                    },
                );
                continue;
            }
            let Some(slot) = self.take(Self::slot_pool(answer), &mut ops) else {
                // No slot even after a grace period: withdraw the key, so the daemon serves
                // the new answer rather than XDP the old one.
                self.live.remove(&c.key);
                self.remove(&c.key, live, &mut ops);
                skipped.push(c.key.clone());
                continue;
            };
            ops.push(Op::WriteSlot {
                slot,
                answer: Arc::clone(answer),
            });
            ops.push(match live.place {
                Place::Bucket(bucket) => Op::BucketSlot { bucket, slot },
                Place::Entry(entry) => Op::Flip { entry, slot },
            });
            self.release_slot(live.slot);
            self.live.insert(
                c.key.clone(),
                Live {
                    place: live.place,
                    slot,
                },
            );
        }

        for (key, answer) in inserts {
            if self.live.len() >= self.max_keys {
                skipped.push(key);
                continue;
            }
            // A short name whose probe run is full overflows to the hash map of the next class
            // (the XDP program looks there once it has probed the whole run).
            let bucket = if in_table(&key) {
                self.free_bucket(&key)
            } else {
                None
            };
            let place = if let Some(b) = bucket {
                Place::Bucket(b)
            } else {
                if self.deleted {
                    // A reader may still hold a deleted hash element; an insert could reuse it.
                    self.grace(&mut ops);
                }
                let Some(e) = self.take(|s| &mut s.entries, &mut ops) else {
                    skipped.push(key);
                    continue;
                };
                Place::Entry(e)
            };
            if let (Place::Bucket(bucket), true) = (place, answer.is_small()) {
                // The bucket is empty or a tombstone: its slot holds no answer while the key
                // changes.
                ops.push(Op::BucketKey {
                    bucket,
                    key: key.clone(),
                });
                ops.push(Op::BucketInline { bucket, answer });
                self.buckets[bucket as usize] = Bucket::Live;
                self.live.insert(
                    key,
                    Live {
                        place,
                        slot: SLOT_INLINE,
                    },
                );
                continue;
            }
            let Some(slot) = self.take(Self::slot_pool(&answer), &mut ops) else {
                if let Place::Entry(e) = place {
                    self.entries.free.push(e);
                }
                skipped.push(key);
                continue;
            };
            ops.push(Op::WriteSlot { slot, answer });
            match place {
                Place::Bucket(bucket) => {
                    // The bucket is empty or a tombstone: its slot holds no answer while the
                    // key changes.
                    ops.push(Op::BucketKey {
                        bucket,
                        key: key.clone(),
                    });
                    ops.push(Op::BucketSlot { bucket, slot });
                    self.buckets[bucket as usize] = Bucket::Live;
                }
                Place::Entry(entry) => {
                    ops.push(Op::Flip { entry, slot });
                    ops.push(Op::InsertKey {
                        key: key.clone(),
                        entry,
                    });
                }
            }
            self.live.insert(key, Live { place, slot });
        }
        let mut plan = Plan {
            ops,
            skipped,
            skipped_sets: Vec::new(),
        };
        if !steering.sets.is_empty() || !steering.keys.is_empty() {
            self.plan_steering(steering, &mut plan);
        }
        plan
    }

    /// The state word of set `name` as the sets stand in the model.
    fn word(&self, name: SetName) -> Option<u64> {
        let s = self.sets.get(&name)?;
        let from = s
            .state
            .answers_from
            .and_then(|t| self.sets.get(&t))
            .map_or(s.id, |t| t.id);
        Some(set_state(s.state.eligible, s.state.ttl_cap, from))
    }

    /// The block entries of `regions` as the sets stand in the model.
    fn block_values(&self, regions: &[Option<SetName>]) -> Box<[u32; REGION_SLOTS]> {
        let mut v = Box::new([SET_NONE; REGION_SLOTS]);
        for (d, r) in v.iter_mut().zip(regions) {
            *d = r.and_then(|n| self.sets.get(&n)).map_or(SET_NONE, |s| s.id);
        }
        v
    }

    /// The steered half of [`Self::plan_with`] (steered keys to remove are already withdrawn).
    fn plan_steering(&mut self, steering: Steering<'_>, plan: &mut Plan) {
        let ops = &mut plan.ops;
        // Sets: fresh ids for new records, written whole (their state resolved once every id
        // is known); the ids they replace are released at the end, when nothing names them.
        let mut released = Vec::new();
        let mut written = Vec::new();
        for c in steering.sets {
            match c {
                SetChange::Put {
                    name,
                    contents,
                    state,
                } => {
                    if let Some(old) = self.sets.get(name)
                        && old.contents == *contents
                    {
                        // Same records: only the state can differ.
                        let (id, word) = (old.id, old.word);
                        self.sets.insert(
                            *name,
                            SetLive {
                                id,
                                contents: Arc::clone(contents),
                                state: *state,
                                word,
                            },
                        );
                        continue;
                    }
                    let Some(id) = self.take(|s| &mut s.set_ids, ops) else {
                        if let Some(old) = self.sets.remove(name) {
                            released.push(old.id);
                        }
                        plan.skipped_sets.push(*name);
                        continue;
                    };
                    let old = self.sets.insert(
                        *name,
                        SetLive {
                            id,
                            contents: Arc::clone(contents),
                            state: *state,
                            word: u64::MAX,
                        },
                    );
                    released.extend(old.map(|o| o.id));
                    written.push(*name);
                }
                SetChange::State { name, state } => {
                    if let Some(s) = self.sets.get_mut(name) {
                        s.state = *state;
                    }
                }
                SetChange::Remove { name } => {
                    if let Some(old) = self.sets.remove(name) {
                        released.push(old.id);
                    }
                }
            }
        }
        for name in written {
            let word = self.word(name).expect("just put");
            let s = self.sets.get_mut(&name).expect("just put");
            s.word = word;
            ops.push(Op::WriteSet {
                set: s.id,
                contents: Arc::clone(&s.contents),
                state: word,
            });
        }
        // States. Where a set's redirect moves from set A to set B, B's new state is stored
        // first (the redirect never reaches a state about to change), then the redirect, then
        // A's (a region that leaves A never sees A's new state, such as its last record
        // going down): so a batch of health changes never makes a lookup miss where the old
        // and the new states both answer.
        let mut names: Vec<SetName> = self.sets.keys().copied().collect();
        names.sort_unstable();
        let mut changed = Vec::new();
        let (mut new_targets, mut old_targets) = (Vec::new(), Vec::new());
        for &name in &names {
            let word = self.word(name).expect("listed");
            let s = &self.sets[&name];
            if s.word == word {
                continue;
            }
            let (old_from, new_from) = ((s.word >> 32) as u32, (word >> 32) as u32);
            if old_from != new_from {
                if new_from != s.id {
                    new_targets.push(new_from);
                }
                if old_from != s.id {
                    old_targets.push(old_from);
                }
            }
            changed.push((name, s.id, word));
        }
        let class = |id: u32| {
            if new_targets.contains(&id) {
                0
            } else if old_targets.contains(&id) {
                2
            } else {
                1
            }
        };
        changed.sort_by_key(|&(name, id, _)| (class(id), name));
        for (name, id, word) in changed {
            self.sets.get_mut(&name).expect("listed").word = word;
            ops.push(Op::SetState {
                set: id,
                state: word,
            });
        }
        // Steered names already in the maps: re-point the entries that changed.
        let asked: HashMap<&HotKey, &Arc<[Option<SetName>]>> = steering
            .keys
            .iter()
            .filter_map(|c| c.regions.as_ref().map(|r| (&c.key, r)))
            .collect();
        let mut keys: Vec<HotKey> = self.steered.keys().cloned().collect();
        keys.sort_unstable();
        for key in keys {
            let block = self.live[&key].slot & !SLOT_STEERED;
            let regions = asked.get(&key).map_or_else(
                || Arc::clone(&self.steered[&key].regions),
                |r| Arc::clone(r),
            );
            let values = self.block_values(&regions);
            let old = &self.steered[&key].written;
            for (r, (new, old)) in values.iter().zip(old.iter()).enumerate() {
                if new != old {
                    ops.push(Op::RegionSet {
                        index: block * REGION_SLOTS as u32 + r as u32,
                        set: *new,
                    });
                }
            }
            self.steered.insert(
                key,
                SteeredLive {
                    regions,
                    written: values,
                },
            );
        }
        // New steered names: a block filled while unreachable, then the key published.
        for c in steering.keys {
            let Some(regions) = &c.regions else { continue };
            if self.live.contains_key(&c.key) {
                continue;
            }
            if self.live.len() >= self.max_keys {
                plan.skipped.push(c.key.clone());
                continue;
            }
            let Some(block) = self.take(|s| &mut s.blocks, ops) else {
                plan.skipped.push(c.key.clone());
                continue;
            };
            let slot = SLOT_STEERED | block;
            let values = self.block_values(regions);
            for (r, set) in values.iter().enumerate() {
                ops.push(Op::RegionSet {
                    index: block * REGION_SLOTS as u32 + r as u32,
                    set: *set,
                });
            }
            let bucket = if in_table(&c.key) {
                self.free_bucket(&c.key)
            } else {
                None
            };
            let place = if let Some(bucket) = bucket {
                ops.push(Op::BucketKey {
                    bucket,
                    key: c.key.clone(),
                });
                ops.push(Op::BucketSlot { bucket, slot });
                self.buckets[bucket as usize] = Bucket::Live;
                Place::Bucket(bucket)
            } else {
                if self.deleted {
                    self.grace(ops);
                }
                let Some(entry) = self.take(|s| &mut s.entries, ops) else {
                    self.blocks.free.push(block);
                    plan.skipped.push(c.key.clone());
                    continue;
                };
                ops.push(Op::Flip { entry, slot });
                ops.push(Op::InsertKey {
                    key: c.key.clone(),
                    entry,
                });
                Place::Entry(entry)
            };
            self.live.insert(c.key.clone(), Live { place, slot });
            self.steered.insert(
                c.key.clone(),
                SteeredLive {
                    regions: Arc::clone(regions),
                    written: values,
                },
            );
        }
        // Nothing names the released sets now: they wait out the readers that still might.
        self.set_ids.pending.extend(released);
    }
}

/// How well a hot table fits maps of some capacity: what each kind of key needs, and how many
/// keys the daemon would answer instead of XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    /// Keys (`xdp.max_hot_names`).
    pub keys: usize,
    /// Answers over the small size, each a large slot (`xdp.max_large_answers`).
    pub large: usize,
    /// Small answers of names over 32 octets, each a small slot (`xdp.max_answers`); short
    /// names keep small answers in their bucket (but one whose probe run is full needs a slot).
    pub small: usize,
    /// Keys that did not fit.
    pub skipped: usize,
}

/// Plans `changes` into empty maps of `cap`, as a start does. The seed is fixed, so that
/// `check` gives one verdict for one configuration (a start's own seed can place short names
/// differently; that matters only when `xdp.max_answers` leaves no room for full probe runs).
#[must_use]
pub fn fit(cap: Capacity, changes: &[Change]) -> Fit {
    let mut f = Fit {
        keys: 0,
        large: 0,
        small: 0,
        skipped: MapSync::new(cap, 0x6466_6173_7466_6974)
            .plan(changes)
            .skipped
            .len(),
    };
    for c in changes {
        let Some(a) = &c.answer else { continue };
        f.keys += 1;
        if !a.is_small() {
            f.large += 1;
        } else if !in_table(&c.key) {
            f.small += 1;
        }
    }
    f
}

/// What a walk of a key's probe run finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The key's bucket, with this slot (which may be `SLOT_NONE`).
    Found(u32),
    /// Not in the table: an unused bucket ended the run, or the key's bucket is a tombstone.
    Absent,
    /// The whole run holds other keys: the name may have overflowed to `HOT_64`.
    Exhausted,
}

/// What a lookup of `key` finds walking `buckets` as the XDP program does (for tests).
#[must_use]
pub fn probe(buckets: &[(Option<HotKey32>, u32)], seed: u64, key: &HotKey) -> Probe {
    let k = key32(key);
    let mask = buckets.len() as u64 - 1;
    let home = hot_hash(seed, k.head(), k.words());
    for i in 0..HOT_PROBES as u64 {
        let (bk, slot) = &buckets[(home.wrapping_add(i) & mask) as usize];
        let Some(bk) = bk else { return Probe::Absent };
        if *bk == k {
            return if *slot == SLOT_TOMB {
                Probe::Absent
            } else {
                Probe::Found(*slot)
            };
        }
    }
    Probe::Exhausted
}

#[cfg(test)]
mod tests;
