use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use hickory_proto::rr::{RData, rdata::A};

use super::*;

const SEED: u64 = 0x1234_5678;

fn answer(n: u8, count: u8) -> Arc<HotAnswer> {
    let rd: Vec<RData> = (0..count)
        .map(|i| RData::A(A(Ipv4Addr::new(198, 18, n, i))))
        .collect();
    Arc::new(HotAnswer::from_rrset(60, &rd).unwrap())
}

/// Key `i`: a short name, or for odd `i % 5 == 0` one longer than 32 octets (a hash map key).
fn key(i: u32) -> HotKey {
    let label = if i.is_multiple_of(5) {
        format!("long-name-{i:03}-{}", "x".repeat(30))
    } else {
        format!("n{i:03}")
    };
    HotKey::new(
        format!("{}{label}\x04test\x00", char::from(label.len() as u8)).as_bytes(),
        1,
        0,
    )
}

fn set(k: u32, a: Arc<HotAnswer>) -> Change {
    Change {
        key: key(k),
        answer: Some(a),
    }
}

/// A model of the maps and of what a reader may still hold: replays ops and checks the rules.
struct Model {
    buckets: Vec<(Option<HotKey32>, u32)>,
    /// Each bucket's inline answer.
    inline: Vec<Option<Arc<HotAnswer>>>,
    seq: u32,
    index: HashMap<u32, u32>,
    keys: HashMap<HotKey, u32>,
    slots: HashMap<u32, Arc<HotAnswer>>,
    /// Slots unlinked since the last grace period (a reader may still use them).
    maybe_read: HashSet<u32>,
    deleted_since_grace: bool,
}

impl Model {
    fn new(cap: Capacity) -> Self {
        Self {
            buckets: vec![(None, SLOT_NONE); cap.buckets() as usize],
            inline: vec![None; cap.buckets() as usize],
            seq: 0,
            index: HashMap::new(),
            keys: HashMap::new(),
            slots: HashMap::new(),
            maybe_read: HashSet::new(),
            deleted_since_grace: false,
        }
    }

    fn reachable(&self, slot: u32) -> bool {
        self.buckets.iter().any(|(_, s)| *s == slot)
            || self.keys.values().any(|e| self.index.get(e) == Some(&slot))
    }

    fn unlink(&mut self, old: u32) {
        if old != SLOT_NONE && old != SLOT_TOMB && !slot_is_inline(old) {
            self.maybe_read.insert(old);
        }
    }

    fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::WriteSlot { slot, answer } => {
                    assert!(
                        !self.reachable(*slot) && !self.maybe_read.contains(slot),
                        "slot {slot:#x} written while a reader may see it"
                    );
                    self.slots.insert(*slot, Arc::clone(answer));
                }
                Op::BucketKey { bucket, key } => {
                    let (_, s) = self.buckets[*bucket as usize];
                    assert!(
                        s == SLOT_NONE || s == SLOT_TOMB,
                        "key of bucket {bucket} written under a live slot"
                    );
                    self.buckets[*bucket as usize].0 = Some(key32(key));
                }
                Op::BucketInline { bucket, answer } => {
                    let b = *bucket as usize;
                    assert!(
                        self.buckets[b].0.is_some(),
                        "inline answer in a keyless bucket"
                    );
                    assert!(answer.is_small(), "a large answer inline");
                    assert!(
                        !slot_is_inline(self.buckets[b].1),
                        "inline answer of bucket {b} rewritten under an inline slot"
                    );
                    self.seq += 1;
                    let old = std::mem::replace(&mut self.buckets[b].1, SLOT_INLINE | self.seq);
                    self.unlink(old);
                    self.inline[b] = Some(Arc::clone(answer));
                }
                Op::BucketSlot { bucket, slot } => {
                    if *slot != SLOT_NONE && *slot != SLOT_TOMB {
                        assert!(self.slots.contains_key(slot), "published an unwritten slot");
                        assert!(
                            self.buckets[*bucket as usize].0.is_some(),
                            "published a keyless bucket"
                        );
                    }
                    let old = std::mem::replace(&mut self.buckets[*bucket as usize].1, *slot);
                    self.unlink(old);
                }
                Op::Flip { entry, slot } => {
                    assert!(self.slots.contains_key(slot));
                    if let Some(old) = self.index.insert(*entry, *slot) {
                        self.unlink(old);
                    }
                }
                Op::InsertKey { key, entry } => {
                    assert!(
                        !self.deleted_since_grace,
                        "hash insert after a delete without a grace period"
                    );
                    assert!(
                        !self.keys.values().any(|e| e == entry),
                        "entry {entry} shared"
                    );
                    self.keys.insert(key.clone(), *entry);
                }
                Op::DeleteKey { key } => {
                    let e = self.keys.remove(key).expect("deleting a present key");
                    // Readers holding the deleted element may still follow it until the next
                    // grace period; nothing can reach the entry after that.
                    if let Some(s) = self.index.remove(&e) {
                        self.unlink(s);
                    }
                    self.deleted_since_grace = true;
                }
                Op::Grace => {
                    self.maybe_read.clear();
                    self.deleted_since_grace = false;
                }
            }
        }
    }

    fn answer(&self, k: &HotKey) -> Option<&Arc<HotAnswer>> {
        let hashed = |k| self.keys.get(k).and_then(|e| self.index.get(e)).copied();
        let slot = if in_table(k) {
            let found = probe(&self.buckets, SEED, k);
            assert!(
                found == Probe::Exhausted || !self.keys.contains_key(k),
                "a short name in HOT_64 whose run a lookup does not exhaust: {found:?}"
            );
            match found {
                Probe::Found(slot) if slot_is_inline(slot) => {
                    let b = self.buckets.iter().position(|(_, s)| *s == slot)?;
                    return self.inline[b].as_ref();
                }
                Probe::Found(slot) => Some(slot),
                Probe::Absent => None,
                Probe::Exhausted => hashed(k),
            }
        } else {
            hashed(k)
        };
        slot.and_then(|s| self.slots.get(&s))
    }
}

#[test]
fn batches_keep_readers_safe_and_end_consistent() {
    let cap = Capacity {
        entries: 16,
        small: 24,
        large: 6,
    };
    let mut sync = MapSync::new(cap, SEED);
    let mut model = Model::new(cap);
    let mut want: HashMap<u32, Arc<HotAnswer>> = HashMap::new();
    // Deterministic pseudo-random batches: adds, replacements (small <-> large), removals.
    let mut x = 12345u32;
    for round in 0u32..500 {
        let mut changes = Vec::new();
        let mut touched = HashSet::new();
        for _ in 0..5 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let k = (x >> 8) % 14;
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
        // Skipped keys are served by the daemon: exactly those leave the maps (the model must
        // not lose any other), so later rounds stay exact.
        for s in &plan.skipped {
            let k = (0..14).find(|&k| key(k) == *s).expect("a key of this test");
            assert!(
                want.remove(&k).is_some(),
                "round {round}: skipped key {k} was wanted"
            );
        }
        for k in 0..14 {
            assert_eq!(model.answer(&key(k)), want.get(&k), "round {round} key {k}");
        }
    }
    assert!(sync.len() > 4, "the test ended with keys in the maps");
}

#[test]
fn full_maps_skip_instead_of_failing() {
    let mut sync = MapSync::new(
        Capacity {
            entries: 2,
            small: 4,
            large: 2,
        },
        SEED,
    );
    // The table has four buckets, but the capacity is two keys: what `status` reports and
    // `xdp.max_hot_names` sets is the number of keys.
    let plan = sync.plan(
        &(1..=9)
            .map(|k| set(k * 2, answer(k as u8, 1)))
            .collect::<Vec<_>>(),
    );
    assert_eq!(sync.len(), 2, "two keys in maps of two entries");
    assert_eq!(plan.skipped.len(), 7);
}

#[test]
fn replacing_reuses_slots_only_after_grace() {
    let cap = Capacity {
        entries: 1,
        small: 2,
        large: 1,
    };
    let mut sync = MapSync::new(cap, SEED);
    let mut model = Model::new(cap);
    for i in 0..10 {
        for k in [1, 5] {
            let plan = sync.plan(&[set(k, answer(i, 1))]);
            assert!(plan.skipped.is_empty());
            model.apply(&plan.ops);
            assert_eq!(model.answer(&key(k)), Some(&answer(i, 1)));
            let plan = sync.plan(&[Change {
                key: key(k),
                answer: None,
            }]);
            model.apply(&plan.ops);
            assert_eq!(model.answer(&key(k)), None);
        }
    }
}

#[test]
fn keys_land_in_the_table_or_the_hash_maps_by_length() {
    assert!(in_table(&key(1)));
    assert!(!in_table(&key(5)));
    let cap = Capacity {
        entries: 8,
        small: 16,
        large: 4,
    };
    let mut sync = MapSync::new(cap, SEED);
    let plan = sync.plan(&[set(1, answer(1, 1)), set(5, answer(5, 1))]);
    assert!(plan.ops.iter().any(|o| matches!(o, Op::BucketKey { .. })));
    assert!(plan.ops.iter().any(|o| matches!(o, Op::InsertKey { .. })));
    // Probes stay within HOT_PROBES of the home bucket.
    let mut model = Model::new(cap);
    model.apply(&plan.ops);
    let home = bucket_hash(SEED, &key(1)) & u64::from(cap.buckets() - 1);
    let b = model.buckets.iter().position(|(k, _)| k.is_some()).unwrap() as u64;
    assert!((b + u64::from(cap.buckets()) - home) % u64::from(cap.buckets()) < HOT_PROBES as u64);
}

#[test]
fn small_answers_of_short_names_live_in_the_bucket() {
    // Two small slots for two names rewritten fifty times: each rewrite parks the new answer in
    // a slot first, and the slots come back after grace periods.
    let cap = Capacity {
        entries: 8,
        small: 2,
        large: 2,
    };
    let mut sync = MapSync::new(cap, SEED);
    let mut model = Model::new(cap);
    for g in 0..50u8 {
        let plan = sync.plan(&[set(1, answer(g, 1 + g % 4)), set(2, answer(g, 2))]);
        assert!(plan.skipped.is_empty());
        let inline = plan
            .ops
            .iter()
            .filter(|o| matches!(o, Op::BucketInline { .. }))
            .count();
        assert_eq!(inline, 2, "{:?}", plan.ops);
        model.apply(&plan.ops);
        assert_eq!(model.answer(&key(1)), Some(&answer(g, 1 + g % 4)));
    }
    // Growing past four A records moves the answer to a large slot, and back.
    let plan = sync.plan(&[set(1, answer(9, 9))]);
    model.apply(&plan.ops);
    assert!(plan.ops.iter().any(|o| matches!(o, Op::WriteSlot { .. })));
    assert_eq!(model.answer(&key(1)), Some(&answer(9, 9)));
    let plan = sync.plan(&[set(1, answer(9, 1))]);
    model.apply(&plan.ops);
    assert_eq!(model.answer(&key(1)), Some(&answer(9, 1)));
}

#[test]
fn inline_rewrites_without_a_free_slot_withdraw_for_a_moment() {
    let cap = Capacity {
        entries: 4,
        small: 0,
        large: 1,
    };
    let mut sync = MapSync::new(cap, SEED);
    let mut model = Model::new(cap);
    for g in 0..5u8 {
        let plan = sync.plan(&[set(1, answer(g, 2))]);
        assert!(plan.skipped.is_empty());
        model.apply(&plan.ops);
        assert_eq!(model.answer(&key(1)), Some(&answer(g, 2)));
    }
}

/// A short name `c<i>.test.` (table-sized).
fn short(i: u32) -> HotKey {
    let label = format!("c{i}");
    HotKey::new(
        format!("{}{label}\x04test\x00", char::from(label.len() as u8)).as_bytes(),
        1,
        0,
    )
}

#[test]
fn short_names_whose_run_is_full_overflow_to_the_hash_map() {
    let cap = Capacity {
        entries: 16,
        small: 16,
        large: 2,
    };
    let mask = u64::from(cap.buckets() - 1);
    // Twelve names with the same home bucket: eight fill its run, four overflow.
    let home = bucket_hash(SEED, &short(0)) & mask;
    let names: Vec<HotKey> = (0..)
        .map(short)
        .filter(|k| bucket_hash(SEED, k) & mask == home)
        .take(12)
        .collect();
    let mut sync = MapSync::new(cap, SEED);
    let mut model = Model::new(cap);
    let change = |k: &HotKey, a: Option<Arc<HotAnswer>>| Change {
        key: k.clone(),
        answer: a,
    };
    let plan = sync.plan(
        &names
            .iter()
            .enumerate()
            .map(|(i, k)| change(k, Some(answer(i as u8, 1))))
            .collect::<Vec<_>>(),
    );
    assert!(plan.skipped.is_empty());
    let overflowed = plan
        .ops
        .iter()
        .filter(|o| matches!(o, Op::InsertKey { .. }))
        .count();
    assert_eq!(overflowed, 4, "{:?}", plan.ops);
    model.apply(&plan.ops);
    for (i, k) in names.iter().enumerate() {
        assert_eq!(model.answer(k), Some(&answer(i as u8, 1)), "name {i}");
    }
    // Rewrites, a removal from the run and one from the hash map, and the names coming back.
    let mut want: Vec<Option<Arc<HotAnswer>>> = (0..12).map(|i| Some(answer(i, 1))).collect();
    for round in 0..16u8 {
        let changes: Vec<Change> = [round as usize % 8, 8 + round as usize % 4]
            .iter()
            .map(|&i| {
                want[i] = if want[i].is_some() && round % 2 == 0 {
                    None
                } else {
                    Some(answer(100 + round, 1 + round % 4))
                };
                change(&names[i], want[i].clone())
            })
            .collect();
        let plan = sync.plan(&changes);
        assert!(plan.skipped.is_empty(), "round {round}");
        model.apply(&plan.ops);
        for (i, k) in names.iter().enumerate() {
            assert_eq!(model.answer(k), want[i].as_ref(), "round {round} name {i}");
        }
    }
}
