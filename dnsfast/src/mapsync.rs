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
//! Grace periods are lazy: released ids wait in a pending list, across batches, until a batch
//! runs out of free ones (or inserts into a hash map after a delete). A grace period costs
//! milliseconds; most batches (a health flip, a zone edit) then need none.

use std::{collections::HashMap, sync::Arc};

use dnsfast_common::maps::{
    HOT_PROBES, HotKey32, SLOT_INLINE, SLOT_LARGE, SLOT_NONE, SLOT_TOMB, hot_hash, name_class,
    slot_is_inline,
};

use crate::hot::{Change, HotAnswer, HotKey};

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
        for pool in [&mut self.entries, &mut self.small, &mut self.large] {
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
        if slot_is_inline(slot) {
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

    /// Plans `changes`. Afterwards the maps hold the new answers; ids they no longer use are
    /// pending until a later grace period.
    pub fn plan(&mut self, changes: &[Change]) -> Plan {
        let mut ops = Vec::new();
        let mut skipped = Vec::new();

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
        Plan { ops, skipped }
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
