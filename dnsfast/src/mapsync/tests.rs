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
    /// `REGION_SETS` (absent: `SET_NONE`).
    region_sets: HashMap<u32, u32>,
    /// `ANSWER_SETS`: records and state word.
    sets: HashMap<u32, (Arc<SetContents>, u64)>,
    /// Sets and blocks unlinked since the last grace period.
    maybe_read_sets: HashSet<u32>,
    maybe_read_blocks: HashSet<u32>,
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
            region_sets: HashMap::new(),
            sets: HashMap::new(),
            maybe_read_sets: HashSet::new(),
            maybe_read_blocks: HashSet::new(),
        }
    }

    fn block_reachable(&self, block: u32) -> bool {
        let slot = SLOT_STEERED | block;
        self.buckets.iter().any(|(k, s)| k.is_some() && *s == slot)
            || self.keys.values().any(|e| self.index.get(e) == Some(&slot))
    }

    fn set_reachable(&self, set: u32) -> bool {
        self.region_sets
            .iter()
            .any(|(i, s)| *s == set && self.block_reachable(*i / REGION_SLOTS as u32))
            || self.sets.iter().any(|(id, (_, w))| {
                *id != set && (w >> 32) as u32 == set && self.set_reachable(*id)
            })
    }

    /// The records and eligible mask a lookup of steered `k` in `region` gets (the TTL cap in
    /// bits 16..32).
    fn steered(&self, k: &HotKey, region: u32) -> Option<(Arc<SetContents>, u32)> {
        let hashed = |k| self.keys.get(k).and_then(|e| self.index.get(e)).copied();
        let slot = if in_table(k) {
            match probe(&self.buckets, SEED, k) {
                Probe::Found(s) => s,
                Probe::Absent => return None,
                Probe::Exhausted => hashed(k)?,
            }
        } else {
            hashed(k)?
        };
        if !slot_is_steered(slot) {
            return None;
        }
        let block = slot & !SLOT_STEERED;
        let id = *self
            .region_sets
            .get(&(block * REGION_SLOTS as u32 + region))?;
        let (_, word) = self.sets.get(&id)?;
        let from = (word >> 32) as u32;
        let (contents, word) = self.sets.get(&from)?;
        let mask = (*word as u32) & ((1u32 << contents.answer.count) - 1);
        (mask != 0).then(|| (Arc::clone(contents), mask | (*word as u32 & 0xFFFF_0000)))
    }

    fn reachable(&self, slot: u32) -> bool {
        self.buckets.iter().any(|(_, s)| *s == slot)
            || self.keys.values().any(|e| self.index.get(e) == Some(&slot))
    }

    fn unlink(&mut self, old: u32) {
        if slot_is_steered(old) {
            self.maybe_read_blocks.insert(old & !SLOT_STEERED);
        } else if old != SLOT_NONE && old != SLOT_TOMB && !slot_is_inline(old) {
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
                Op::BucketSlot { bucket, slot } if slot_is_steered(*slot) => {
                    assert!(
                        self.buckets[*bucket as usize].0.is_some(),
                        "published a keyless bucket"
                    );
                    let old = std::mem::replace(&mut self.buckets[*bucket as usize].1, *slot);
                    self.unlink(old);
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
                    assert!(slot_is_steered(*slot) || self.slots.contains_key(slot));
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
                Op::WriteSet {
                    set,
                    contents,
                    state,
                } => {
                    assert!(
                        !self.set_reachable(*set) && !self.maybe_read_sets.contains(set),
                        "set {set} written while a reader may see it (reachable {}, unlinked {})",
                        self.set_reachable(*set),
                        self.maybe_read_sets.contains(set)
                    );
                    self.sets.insert(*set, (Arc::clone(contents), *state));
                }
                Op::SetState { set, state } => {
                    assert!(
                        self.sets.contains_key(&((state >> 32) as u32)),
                        "redirect to an unwritten set"
                    );
                    let entry = self.sets.get_mut(set).expect("state of an unwritten set");
                    let old = std::mem::replace(&mut entry.1, *state);
                    if old >> 32 != state >> 32 {
                        self.maybe_read_sets.insert((old >> 32) as u32);
                    }
                }
                Op::RegionSet { index, set } => {
                    let block = index / REGION_SLOTS as u32;
                    assert!(
                        self.block_reachable(block) || !self.maybe_read_blocks.contains(&block),
                        "block {block} refilled while a reader may still use it"
                    );
                    if *set != SET_NONE {
                        assert!(
                            self.sets.contains_key(set),
                            "region entry names an unwritten set"
                        );
                    }
                    // An entry of a block nobody can read (being filled) unlinks nothing.
                    let live = self.block_reachable(block);
                    if let Some(old) = self.region_sets.insert(*index, *set)
                        && live
                    {
                        self.maybe_read_sets.insert(old);
                    }
                }
                Op::Grace => {
                    self.maybe_read.clear();
                    self.maybe_read_sets.clear();
                    self.maybe_read_blocks.clear();
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
        sets: 16,
        steered: 4,
        geo: 16,
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
            sets: 16,
            steered: 4,
            geo: 16,
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
        sets: 16,
        steered: 4,
        geo: 16,
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
        sets: 16,
        steered: 4,
        geo: 16,
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
        sets: 16,
        steered: 4,
        geo: 16,
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
        sets: 16,
        steered: 4,
        geo: 16,
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
        sets: 16,
        steered: 4,
        geo: 16,
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

/// What the caller asked for: sets and steered keys.
#[derive(Clone, Default)]
struct Wanted {
    sets: HashMap<SetName, (Arc<SetContents>, SetState)>,
    keys: HashMap<u32, Arc<[Option<SetName>]>>,
}

impl Wanted {
    /// The set a key's region answers from, with the region named as in `self` and the sets'
    /// redirects as in `states`.
    fn target_under(&self, states: &Self, k: u32, region: usize) -> Option<SetName> {
        let name = (*self.keys.get(&k)?.get(region)?)?;
        let (_, state) = states.sets.get(&name)?;
        Some(
            state
                .answers_from
                .filter(|t| states.sets.contains_key(t))
                .unwrap_or(name),
        )
    }

    /// The set a key's region answers from, and what a lookup there gets.
    fn resolve(&self, k: u32, region: usize) -> Option<(SetName, Arc<SetContents>, u32)> {
        self.resolve_under(self, k, region)
    }

    /// [`Self::resolve`] with the region named as in `self` and the sets as in `states`.
    fn resolve_under(
        &self,
        states: &Self,
        k: u32,
        region: usize,
    ) -> Option<(SetName, Arc<SetContents>, u32)> {
        let from = self.target_under(states, k, region)?;
        let (contents, state) = &states.sets[&from];
        let mask = state.eligible & ((1u32 << contents.answer.count) - 1);
        (mask != 0).then(|| {
            (
                from,
                Arc::clone(contents),
                mask | u32::from(state.ttl_cap) << 16,
            )
        })
    }
}

fn contents(n: u8, count: u8) -> Arc<SetContents> {
    Arc::new(SetContents {
        answer: (*answer(n, count)).clone(),
        weights: vec![20; usize::from(count)],
        answer_count: 1,
    })
}

#[test]
fn steered_batches_keep_readers_safe_and_lose_no_answer() {
    const REGIONS: usize = 3;
    const SETS: u32 = 8;
    const KEYS: u32 = 6;
    let cap = Capacity {
        entries: 16,
        small: 8,
        large: 4,
        sets: 24,
        steered: 8,
        geo: 16,
    };
    let mut sync = MapSync::new(cap, SEED);
    let mut model = Model::new(cap);
    let mut want = Wanted::default();
    let mut x = 0x5EED_u32;
    let mut rnd = |m: u32| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (x >> 8) % m
    };
    let (mut state_only, mut redirects_seen, mut must_answer) = (0, 0, 0);
    for round in 0u32..400 {
        let before = want.clone();
        let mut sets = Vec::new();
        let mut keys = Vec::new();
        let mut touched = HashSet::new();
        for _ in 0..4 {
            let name = rnd(SETS);
            if !touched.insert(name) {
                continue;
            }
            let state = SetState {
                eligible: rnd(16),
                ttl_cap: [0, 1, 37][(round % 3) as usize],
                answers_from: (rnd(3) == 0).then(|| rnd(SETS)).filter(|t| *t != name),
            };
            match rnd(6) {
                0 => {
                    sets.push(SetChange::Remove { name });
                    want.sets.remove(&name);
                }
                1 | 2 if want.sets.contains_key(&name) => {
                    sets.push(SetChange::State { name, state });
                    want.sets.get_mut(&name).unwrap().1 = state;
                    state_only += 1;
                }
                _ => {
                    let c = contents((round % 250) as u8, 1 + rnd(4) as u8);
                    sets.push(SetChange::Put {
                        name,
                        contents: Arc::clone(&c),
                        state,
                    });
                    want.sets.insert(name, (c, state));
                }
            }
        }
        // Redirect targets are final: a set answers from one that answers from itself.
        let finals: Vec<(SetName, SetState)> = want
            .sets
            .iter()
            .filter_map(|(n, (_, st))| {
                let t = st.answers_from?;
                let chained = want
                    .sets
                    .get(&t)
                    .is_some_and(|(_, ts)| ts.answers_from.is_some());
                chained.then_some((
                    *n,
                    SetState {
                        answers_from: None,
                        ..*st
                    },
                ))
            })
            .collect();
        for (name, state) in finals {
            sets.push(SetChange::State { name, state });
            want.sets.get_mut(&name).unwrap().1 = state;
        }
        redirects_seen += want
            .sets
            .values()
            .filter(|(_, s)| s.answers_from.is_some())
            .count();
        let mut ktouched = HashSet::new();
        for _ in 0..2 {
            let k = rnd(KEYS);
            if !ktouched.insert(k) {
                continue;
            }
            if rnd(5) == 0 {
                keys.push(SteerChange {
                    key: key(k),
                    regions: None,
                });
                want.keys.remove(&k);
            } else {
                let regions: Arc<[Option<SetName>]> = (0..REGIONS)
                    .map(|_| (rnd(4) != 0).then(|| rnd(SETS)))
                    .collect();
                keys.push(SteerChange {
                    key: key(k),
                    regions: Some(Arc::clone(&regions)),
                });
                want.keys.insert(k, regions);
            }
        }
        let plan = sync.plan_with(
            &[],
            Steering {
                sets: &sets,
                keys: &keys,
            },
        );
        assert!(
            plan.skipped.is_empty() && plan.skipped_sets.is_empty(),
            "round {round}: {plan:?}"
        );
        // After every step, each lookup gets a whole set under its old or its new state, and
        // it never misses where every pairing of old and new answers.
        for (i, op) in plan.ops.iter().enumerate() {
            model.apply(std::slice::from_ref(op));
            for k in 0..KEYS {
                for r in 0..REGIONS {
                    let got = model.steered(&key(k), r as u32);
                    // While a batch runs, region entries and set states change one store at a
                    // time: a lookup may pair the old naming with the new states, or the
                    // reverse.
                    let mut targets = Vec::new();
                    for naming in [&before, &want] {
                        for states in [&before, &want] {
                            targets.extend(naming.target_under(states, k, r));
                        }
                    }
                    // A miss sends the query to the daemon, which answers from the new
                    // configuration: allowed only where one of those pairings has no answer
                    // either (never in a batch of health changes whose old and new states both
                    // answer).
                    let may_miss = [&before, &want].iter().any(|naming| {
                        [&before, &want]
                            .iter()
                            .any(|states| naming.resolve_under(states, k, r).is_none())
                    });
                    must_answer += usize::from(!may_miss);
                    let ok = match &got {
                        None => may_miss,
                        Some((c, m)) => targets.iter().any(|t| {
                            [&before, &want]
                                .iter()
                                .any(|w| w.sets.get(t).is_some_and(|(wc, _)| wc == c))
                                && [&before, &want].iter().any(|w| {
                                    w.sets.get(t).is_some_and(|(wc, ws)| {
                                        ws.eligible & ((1u32 << wc.answer.count) - 1)
                                            | u32::from(ws.ttl_cap) << 16
                                            == *m
                                    })
                                })
                        }),
                    };
                    if !ok {
                        let show = |w: &Wanted| {
                            format!(
                                "keys {:?} sets {:?}",
                                w.keys.get(&k),
                                w.sets
                                    .iter()
                                    .map(|(n, (c, st))| (*n, c.answer.count, *st))
                                    .collect::<Vec<_>>()
                            )
                        };
                        panic!(
                            "round {round} op {i} ({op:?}): key {k} region {r} got {got:?}\nbefore {}\nwant {}\nmaps {:?}",
                            show(&before),
                            show(&want),
                            model
                                .sets
                                .iter()
                                .map(|(id, (c, w))| (
                                    *id,
                                    c.answer.count,
                                    *w as u32,
                                    (*w >> 32) as u32
                                ))
                                .collect::<Vec<_>>()
                        );
                    }
                }
            }
        }
        for k in 0..KEYS {
            for r in 0..REGIONS {
                let got = model.steered(&key(k), r as u32);
                let exp = want.resolve(k, r).map(|(_, c, m)| (c, m));
                assert_eq!(got, exp, "round {round}: key {k} region {r}");
            }
        }
    }
    assert!(
        state_only > 100 && redirects_seen > 100 && must_answer > 10_000,
        "{state_only} state changes, {redirects_seen} redirects, {must_answer} lookups that \
         had to answer"
    );
}

#[test]
fn a_health_change_is_one_store_per_set_however_many_names_share_it() {
    let cap = Capacity {
        entries: 64,
        small: 8,
        large: 4,
        sets: 8,
        steered: 64,
        geo: 16,
    };
    let mut sync = MapSync::new(cap, SEED);
    let put = |name, eligible, answers_from| SetChange::Put {
        name,
        contents: contents(name as u8, 4),
        state: SetState {
            eligible,
            ttl_cap: 0,
            answers_from,
        },
    };
    let sets = [put(0, 0b1111, None), put(1, 0b1111, None)];
    // Forty names, each answering from set 0 in region 0 and set 1 in region 1.
    let regions: Arc<[Option<SetName>]> = Arc::new([Some(0), Some(1)]);
    let keys: Vec<SteerChange> = (1..=40)
        .map(|k| SteerChange {
            key: key(k),
            regions: Some(Arc::clone(&regions)),
        })
        .collect();
    let plan = sync.plan_with(
        &[],
        Steering {
            sets: &sets,
            keys: &keys,
        },
    );
    assert!(plan.skipped.is_empty());
    // An endpoint of set 0 goes down: one store.
    let down = [SetChange::State {
        name: 0,
        state: SetState {
            eligible: 0b1101,
            ttl_cap: 0,
            answers_from: None,
        },
    }];
    let plan = sync.plan_with(
        &[],
        Steering {
            sets: &down,
            keys: &[],
        },
    );
    assert!(
        matches!(plan.ops[..], [Op::SetState { state, .. }] if state as u32 == 0b1101),
        "{:?}",
        plan.ops
    );
    // Region 0 fails over to set 1: still one store.
    let over = [SetChange::State {
        name: 0,
        state: SetState {
            eligible: 0,
            ttl_cap: 0,
            answers_from: Some(1),
        },
    }];
    let plan = sync.plan_with(
        &[],
        Steering {
            sets: &over,
            keys: &[],
        },
    );
    assert_eq!(plan.ops.len(), 1, "{:?}", plan.ops);
    // Same records again: nothing to do.
    let same = [put(1, 0b1111, None)];
    assert!(
        sync.plan_with(
            &[],
            Steering {
                sets: &same,
                keys: &[]
            }
        )
        .ops
        .is_empty()
    );
    // New records for set 1: one fresh set, then each name's region-1 entry and the redirect
    // of set 0 re-pointed (a reload, not a health change).
    let new = [SetChange::Put {
        name: 1,
        contents: contents(9, 2),
        state: SetState {
            eligible: 0b11,
            ttl_cap: 0,
            answers_from: None,
        },
    }];
    let plan = sync.plan_with(
        &[],
        Steering {
            sets: &new,
            keys: &[],
        },
    );
    let writes = plan
        .ops
        .iter()
        .filter(|o| matches!(o, Op::WriteSet { .. }))
        .count();
    let entries = plan
        .ops
        .iter()
        .filter(|o| matches!(o, Op::RegionSet { .. }))
        .count();
    let states = plan
        .ops
        .iter()
        .filter(|o| matches!(o, Op::SetState { .. }))
        .count();
    assert_eq!((writes, entries, states), (1, 40, 1), "{:?}", plan.ops);
}
