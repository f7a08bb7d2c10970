//! Plans the map writes that apply a batch of hot-answer [`Change`]s without the XDP program
//! ever reading a half-written answer. Pure bookkeeping, no aya: `xdp` executes the [`Op`]s.
//!
//! The rules (see `docs/architecture.md`, "Map design"):
//! - an answer slot is written only while unreachable, then published by one atomic store into
//!   `ANSWER_INDEX[entry]` ([`Op::Flip`]);
//! - a slot or entry that was reachable is reused only after an RCU grace period ([`Op::Grace`]),
//!   when no program run that could have read it is still going;
//! - deleting a hash element and inserting another are separated by a grace period, because the
//!   kernel may hand the deleted element's memory to the insert while a reader still holds it.
//!
//! Grace periods are lazy: released ids wait in a pending list, across batches, until a batch
//! runs out of free ones (or inserts after a delete). A grace period costs milliseconds; most
//! batches (a health flip, a zone edit) then need none.

use std::{collections::HashMap, sync::Arc};

use dnsfast_common::maps::SLOT_LARGE;

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
    /// Publish: `ANSWER_INDEX[entry] = slot`, one atomic store.
    Flip {
        /// Entry.
        entry: u32,
        /// Slot now serving it.
        slot: u32,
    },
    /// Add `key → entry` to the hot map of its size class.
    InsertKey {
        /// Key.
        key: HotKey,
        /// Entry.
        entry: u32,
    },
    /// Remove `key` from its hot map.
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
    /// `ANSWER_INDEX` entries (= most hot keys).
    pub entries: u32,
    /// Small answer slots.
    pub small: u32,
    /// Large answer slots.
    pub large: u32,
}

#[derive(Clone, Copy, Debug)]
struct Live {
    entry: u32,
    slot: u32,
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
    pub skipped: usize,
}

/// What is in the maps, and which ids are free.
#[derive(Debug)]
pub struct MapSync {
    live: HashMap<HotKey, Live>,
    entries: Pool,
    small: Pool,
    large: Pool,
    /// A hash element was deleted since the last grace period.
    deleted: bool,
}

impl MapSync {
    /// Empty maps of `cap`.
    #[must_use]
    pub fn new(cap: Capacity) -> Self {
        Self {
            live: HashMap::new(),
            entries: Pool::new(cap.entries, 0),
            small: Pool::new(cap.small, 0),
            large: Pool::new(cap.large, SLOT_LARGE),
            deleted: false,
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
        if slot & SLOT_LARGE != 0 {
            &mut self.large
        } else {
            &mut self.small
        }
        .pending
        .push(slot);
    }

    /// Plans `changes`. Afterwards the maps hold the new answers; ids they no longer use are
    /// pending until a later grace period.
    pub fn plan(&mut self, changes: &[Change]) -> Plan {
        let mut ops = Vec::new();
        let mut skipped = 0;

        for c in changes.iter().filter(|c| c.answer.is_none()) {
            if let Some(live) = self.live.remove(&c.key) {
                ops.push(Op::DeleteKey { key: c.key.clone() });
                self.entries.pending.push(live.entry);
                self.release_slot(live.slot);
                self.deleted = true;
            }
        }

        let mut inserts = Vec::new();
        for c in changes {
            let Some(answer) = &c.answer else { continue };
            match self.live.get(&c.key).copied() {
                Some(live) => {
                    let Some(slot) = self.take(Self::slot_pool(answer), &mut ops) else {
                        // No slot even after a grace period: withdraw the key, so the daemon
                        // serves the new answer rather than XDP the old one.
                        ops.push(Op::DeleteKey { key: c.key.clone() });
                        self.live.remove(&c.key);
                        self.entries.pending.push(live.entry);
                        self.release_slot(live.slot);
                        self.deleted = true;
                        skipped += 1;
                        continue;
                    };
                    ops.push(Op::WriteSlot {
                        slot,
                        answer: Arc::clone(answer),
                    });
                    ops.push(Op::Flip {
                        entry: live.entry,
                        slot,
                    });
                    self.release_slot(live.slot);
                    self.live.insert(
                        c.key.clone(),
                        Live {
                            entry: live.entry,
                            slot,
                        },
                    );
                }
                None => inserts.push((c.key.clone(), Arc::clone(answer))),
            }
        }

        if self.deleted && !inserts.is_empty() {
            // A reader may still hold a deleted hash element; an insert could reuse its memory.
            self.grace(&mut ops);
        }
        for (key, answer) in inserts {
            let Some(entry) = self.take(|s| &mut s.entries, &mut ops) else {
                skipped += 1;
                continue;
            };
            let Some(slot) = self.take(Self::slot_pool(&answer), &mut ops) else {
                self.entries.free.push(entry);
                skipped += 1;
                continue;
            };
            ops.push(Op::WriteSlot { slot, answer });
            ops.push(Op::Flip { entry, slot });
            ops.push(Op::InsertKey {
                key: key.clone(),
                entry,
            });
            self.live.insert(key, Live { entry, slot });
        }

        Plan { ops, skipped }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::Ipv4Addr};

    use hickory_proto::rr::{RData, rdata::A};

    use super::*;

    fn answer(n: u8, count: u8) -> Arc<HotAnswer> {
        let rd: Vec<RData> = (0..count)
            .map(|i| RData::A(A(Ipv4Addr::new(198, 18, n, i))))
            .collect();
        Arc::new(HotAnswer::from_rrset(60, &rd).unwrap())
    }

    fn key(i: u32) -> HotKey {
        HotKey::new(format!("\x04n{i:03}\x04test\x00").as_bytes(), 1, 0)
    }

    fn set(k: u32, a: Arc<HotAnswer>) -> Change {
        Change {
            key: key(k),
            answer: Some(a),
        }
    }

    /// A model of what a reader can see: replays ops and checks the invariants.
    #[derive(Default)]
    struct Model {
        index: HashMap<u32, u32>,
        keys: HashMap<HotKey, u32>,
        slots: HashMap<u32, Arc<HotAnswer>>,
        /// Slots and entries reachable since the last grace period (a reader may still use them).
        maybe_read_slots: HashSet<u32>,
        deleted_since_grace: bool,
    }

    impl Model {
        fn apply(&mut self, ops: &[Op]) {
            for op in ops {
                match op {
                    Op::WriteSlot { slot, answer } => {
                        let reachable = self.keys.values().any(|e| self.index.get(e) == Some(slot));
                        assert!(
                            !reachable && !self.maybe_read_slots.contains(slot),
                            "slot {slot:#x} written while a reader may see it"
                        );
                        self.slots.insert(*slot, Arc::clone(answer));
                    }
                    Op::Flip { entry, slot } => {
                        assert!(self.slots.contains_key(slot));
                        if let Some(old) = self.index.insert(*entry, *slot) {
                            self.maybe_read_slots.insert(old);
                        }
                    }
                    Op::InsertKey { key, entry } => {
                        assert!(
                            !self.deleted_since_grace,
                            "insert after a delete without a grace period"
                        );
                        assert!(
                            !self.keys.values().any(|e| e == entry),
                            "entry {entry} shared"
                        );
                        self.keys.insert(key.clone(), *entry);
                    }
                    Op::DeleteKey { key } => {
                        let e = self.keys.remove(key).expect("deleting a present key");
                        // Readers holding the deleted element may still follow it until the
                        // next grace period; nothing can reach the entry after that.
                        if let Some(s) = self.index.remove(&e) {
                            self.maybe_read_slots.insert(s);
                        }
                        self.deleted_since_grace = true;
                    }
                    Op::Grace => {
                        self.maybe_read_slots.clear();
                        self.deleted_since_grace = false;
                    }
                }
            }
        }

        fn answer(&self, k: &HotKey) -> Option<&Arc<HotAnswer>> {
            self.keys
                .get(k)
                .and_then(|e| self.index.get(e))
                .and_then(|s| self.slots.get(s))
        }
    }

    #[test]
    fn batches_keep_readers_safe_and_end_consistent() {
        let mut sync = MapSync::new(Capacity {
            entries: 8,
            small: 10,
            large: 3,
        });
        let mut model = Model::default();
        let mut want: HashMap<u32, Arc<HotAnswer>> = HashMap::new();
        // Deterministic pseudo-random batches: adds, replacements (small <-> large), removals.
        let mut x = 12345u32;
        for round in 0u32..300 {
            let mut changes = Vec::new();
            let mut touched = HashSet::new();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let k = (x >> 8) % 10;
                if !touched.insert(k) {
                    continue;
                }
                if (x >> 20).is_multiple_of(4) {
                    changes.push(Change {
                        key: key(k),
                        answer: None,
                    });
                    want.remove(&k);
                } else {
                    let a = answer((round % 200) as u8, 1 + ((x >> 4) % 8) as u8);
                    changes.push(set(k, Arc::clone(&a)));
                    want.insert(k, a);
                }
            }
            let plan = sync.plan(&changes);
            model.apply(&plan.ops);
            for k in 0..10 {
                let got = model.answer(&key(k));
                match want.get(&k) {
                    Some(a) if plan.skipped == 0 => {
                        assert_eq!(got, Some(a), "round {round} key {k}");
                    }
                    Some(_) => {}
                    None => assert_eq!(got, None, "round {round} key {k} should be gone"),
                }
            }
            // Skipped keys are served by the daemon; forget them so later rounds stay exact.
            if plan.skipped > 0 {
                want.retain(|k, _| model.answer(&key(*k)).is_some());
            }
        }
    }

    #[test]
    fn full_maps_skip_instead_of_failing() {
        let mut sync = MapSync::new(Capacity {
            entries: 2,
            small: 4,
            large: 2,
        });
        let plan = sync.plan(&[
            set(1, answer(1, 1)),
            set(2, answer(2, 1)),
            set(3, answer(3, 1)),
        ]);
        assert_eq!(plan.skipped, 1);
        assert_eq!(sync.len(), 2);
    }

    #[test]
    fn replacing_reuses_slots_only_after_grace() {
        let mut sync = MapSync::new(Capacity {
            entries: 1,
            small: 2,
            large: 1,
        });
        let mut model = Model::default();
        for i in 0..10 {
            let plan = sync.plan(&[set(1, answer(i, 1))]);
            assert_eq!(plan.skipped, 0);
            model.apply(&plan.ops);
            assert_eq!(model.answer(&key(1)), Some(&answer(i, 1)));
        }
    }
}
