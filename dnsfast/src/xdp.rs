//! The one module that touches aya: loads the XDP program, owns its maps, executes
//! [`crate::mapsync`] plans, attaches, pins, detaches. The rest of the daemon sees
//! [`Dataplane::apply`] and a few typed reads.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering, fence},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, ArrayOfMaps, HashMap, LpmTrie, Map, MapData, PerCpuArray, ProgramArray,
        lpm_trie::Key,
    },
    programs::{TestRun as _, TestRunOptions, Xdp, XdpMode as AyaXdpMode, xdp::XdpLinkId},
};
use dnsfast_common::{
    geotable::{V4_GROUP, V4_L0_ENTRIES, V4_MAX_GROUPS, V6_LEVEL_SLOTS, V6_STRIDES, V6_VALUES},
    maps::{
        AnswerLarge, AnswerSet, AnswerSmall, BUCKET_ANSWER_WORD, CFG_ANSWER, CFG_ECS,
        CFG_ECS_LISTED, HotBucket, HotKey32, HotKey64, HotKey128, HotKey256, HotRef,
        MAP_ANSWER_INDEX, MAP_ANSWER_SETS, MAP_ANSWERS_LARGE, MAP_ANSWERS_SMALL, MAP_CONFIG,
        MAP_CONFIG_ACTIVE, MAP_ECS_RESOLVERS_V4, MAP_ECS_RESOLVERS_V6, MAP_GEO4_L0, MAP_GEO4_POOL,
        MAP_GEO6_LEVELS, MAP_GEO6_POOL, MAP_GEO6_VALUES, MAP_GRACE, MAP_HOT, MAP_HOT_TABLE,
        MAP_REGION_SETS, MAP_SCRATCH, MAP_STAGES, MAP_STATS, MAX_REGIONS, PROG_DNSFAST, PROG_ECS,
        PROG_PASS, PROG_REFLECT, PROG_REFLECT_GEO_MISS, PROG_REFLECT_GROW, PROG_REFLECT_LPM,
        PROG_REFLECT_MISS, REGION_SLOTS, SET_NONE, SLOT_INLINE, SLOT_LARGE, SLOT_NONE, SLOT_SEQ,
        SLOT_TOMB, XdpConfig, name_class, slot_is_inline, slot_is_steered,
    },
    stats::COUNTERS,
};

use crate::{
    config::{EcsPolicy, XdpMode},
    hot::{Change, HotAnswer, HotKey},
    mapsync::{Capacity, MapSync, Op, SetContents, Steering, key32},
};

/// The XDP program, built by `build.rs`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dnsfast-xdp"));

const BPF_NOEXIST: u64 = 1;

/// A `BPF_F_MMAPABLE` array mapped into our memory, so that the daemon changes it with plain
/// atomic stores the XDP program sees whole: `ANSWER_INDEX` entries and `HOT_TABLE` buckets.
struct MmapArray {
    _map: MapData,
    base: NonNull<u8>,
    len: usize,
    /// Bytes from one element to the next (the kernel's `round_up(value_size, 8)`).
    stride: usize,
    elements: u32,
}

// SAFETY: the mapping is shared memory owned by this struct; all access is through atomics.
unsafe impl Send for MmapArray {}
// SAFETY: as above.
unsafe impl Sync for MmapArray {}

impl MmapArray {
    fn new(map: MapData, elements: u32, value_size: usize, writable: bool) -> Result<Self> {
        let stride = value_size.div_ceil(8) * 8;
        let page = 4096;
        let len = (elements as usize * stride).div_ceil(page) * page;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping a BPF_F_MMAPABLE array fd at offset 0 with at most its data size
        // (rounded to pages) is what the kernel supports; we check the result.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap a BPF array");
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| anyhow!("mmap returned null"))?;
        Ok(Self {
            _map: map,
            base,
            len,
            stride,
            elements,
        })
    }

    /// Where 32-bit word `word` of element `i` starts, for an access of `bytes` (4 or 8, at an
    /// offset aligned to it).
    fn word_ptr(&self, i: u32, word: usize, bytes: usize) -> *mut u8 {
        assert!(
            i < self.elements
                && (word * 4).is_multiple_of(bytes)
                && word * 4 + bytes <= self.stride,
            "element {i} word {word} ({bytes} bytes) out of range"
        );
        // SAFETY: in range (asserted): inside the mapping.
        unsafe { self.base.as_ptr().add(i as usize * self.stride + word * 4) }
    }

    /// The 16-bit entry `i` of an array of 64-bit values holding four each (in memory order:
    /// entry `4k + j` is bits `16j..16j + 16` of value `k`, little-endian).
    fn cell16(&self, i: usize) -> &AtomicU16 {
        assert!(
            self.stride == 8 && i / 4 < self.elements as usize,
            "16-bit entry {i} out of range"
        );
        // SAFETY: inside the mapping (asserted), 2-byte aligned; only accessed atomically.
        unsafe { AtomicU16::from_ptr(self.base.as_ptr().add(i * 2).cast()) }
    }

    /// The aligned 32-bit word `word` of element `i`.
    fn cell(&self, i: u32, word: usize) -> &AtomicU32 {
        // SAFETY: inside the mapping, 4-byte aligned (page-aligned base, 8-byte stride); only
        // ever accessed atomically by us.
        unsafe { AtomicU32::from_ptr(self.word_ptr(i, word, 4).cast()) }
    }

    /// The aligned 64-bit word at 32-bit word `word` (even) of element `i`.
    fn cell64(&self, i: u32, word: usize) -> &AtomicU64 {
        // SAFETY: as above, 8-byte aligned (asserted).
        unsafe { AtomicU64::from_ptr(self.word_ptr(i, word, 8).cast()) }
    }

    fn store(&self, i: u32, word: usize, v: u32, order: Ordering) {
        self.cell(i, word).store(v, order);
    }

    fn load(&self, i: u32, word: usize) -> u32 {
        self.cell(i, word).load(Ordering::Acquire)
    }
}

impl Drop for MmapArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// 32-bit word of a `HotBucket` holding its slot.
const BUCKET_SLOT_WORD: usize = 0;
/// 32-bit word of a `HotBucket` where its key starts.
const BUCKET_KEY_WORD: usize = 1;

/// 32-bit word of a `HotBucket` where its inline answer starts.
const BUCKET_ANSWER_U32: usize = 2 * BUCKET_ANSWER_WORD;

/// Writes `key` into bucket `b`, word by word; the caller publishes it afterwards.
fn store_bucket_key(table: &MmapArray, b: u32, key: &HotKey32) {
    for (w, v) in bytemuck::cast::<HotKey32, [u32; 9]>(*key)
        .into_iter()
        .enumerate()
    {
        table.store(b, BUCKET_KEY_WORD + w, v, Ordering::Relaxed);
    }
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// In the driver.
    Native,
    /// Generic (skb) mode.
    Generic,
}

impl Attached {
    /// "native" or "generic".
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    hot64: HashMap<MapData, HotKey64, HotRef>,
    hot128: HashMap<MapData, HotKey128, HotRef>,
    hot256: HashMap<MapData, HotKey256, HotRef>,
    index: MmapArray,
    table: MmapArray,
    table_mask: u32,
    seed: u64,
    /// Sequence number of the last inline answer written (30 bits).
    inline_seq: u32,
    small: Array<MapData, AnswerSmall>,
    large: Array<MapData, AnswerLarge>,
    /// `REGION_SETS` and `ANSWER_SETS`, mapped.
    region_sets: MmapArray,
    sets: MmapArray,
    /// The region tables (`dnsfast_common::geotable`), mapped.
    geo4_l0: MmapArray,
    geo4_pool: MmapArray,
    geo6_pool: MmapArray,
    geo6_levels: MmapArray,
    geo6_values: MmapArray,
    ecs4: LpmTrie<MapData, [u8; 4], u8>,
    ecs6: LpmTrie<MapData, [u8; 16], u8>,
    /// What `ECS_RESOLVERS_*` hold.
    ecs_written: std::collections::BTreeSet<ipnet::IpNet>,
    /// The generation `GEO_*` and `CONFIG.default_region` were last written in (0 or 1).
    generation: u8,
    config: Array<MapData, XdpConfig>,
    config_active: MmapArray,
    /// The entry of `CONFIG` the program reads now, and what it holds.
    config_current: u32,
    config_written: XdpConfig,
    stats: PerCpuArray<MapData, u64>,
    grace: ArrayOfMaps<MapData, Array<MapData, u32>>,
    grace_inner: Array<MapData, u32>,
    /// `STAGES`, holding the Client Subnet stage. Kept open: the kernel empties a program
    /// array when its last user reference goes.
    _stages: ProgramArray<MapData>,
    sync: MapSync,
    capacity: Capacity,
    pin_dir: Option<PathBuf>,
    link: Option<(XdpLinkId, Attached)>,
    /// Statistics of the last `apply`.
    pub last_apply: ApplyStats,
    /// Test hook (`DNSFAST_TEST_FAIL_MAP_UPDATE=N`): the second `apply` (the first after the
    /// start's) fails after N operations, as a map update the kernel refuses would.
    fault: Option<(u32, usize)>,
}

/// The answering program as the kernel holds it: the budget steering, ECS and cookies spend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgramSize {
    /// BPF instructions after verification (`xlated_prog_len / 8`).
    pub instructions: u32,
    /// Bytes of JIT-compiled machine code.
    pub jited_bytes: u32,
    /// Instructions the verifier processed, over all paths (the kernel's limit is 1,000,000).
    pub verifier_processed: u32,
}

impl std::fmt::Display for ProgramSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} instructions, {} bytes JIT-compiled, {} instructions processed by the verifier \
             (limit 1000000)",
            self.instructions, self.jited_bytes, self.verifier_processed
        )
    }
}

/// What an `apply` did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyStats {
    /// Map operations executed.
    pub ops: usize,
    /// Grace periods waited for.
    pub graces: usize,
    /// Keys that did not fit.
    pub skipped: usize,
}

fn take<T>(ebpf: &mut Ebpf, name: &str, pin_dir: Option<&Path>) -> Result<T>
where
    T: TryFrom<Map>,
    <T as TryFrom<Map>>::Error: std::error::Error + Send + Sync + 'static,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    if let Some(dir) = pin_dir {
        map.pin(dir.join(name))
            .with_context(|| format!("pin {name} under {}", dir.display()))?;
    }
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

fn raw_map(ebpf: &mut Ebpf, name: &str, pin_dir: Option<&Path>) -> Result<MapData> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    if let Some(dir) = pin_dir {
        map.pin(dir.join(name))
            .with_context(|| format!("pin {name} under {}", dir.display()))?;
    }
    match map {
        Map::Array(d) => Ok(d),
        _ => bail!("map {name} is not an array"),
    }
}

/// Entries of `REGION_SETS` for `capacity`: a block of `REGION_SLOTS` per steered name.
fn region_entries(capacity: Capacity) -> u32 {
    capacity.steered.max(1).saturating_mul(REGION_SLOTS as u32)
}

/// Removes every key of a hot-name hash map.
fn clear<K: aya::Pod>(map: &mut HashMap<MapData, K, HotRef>) -> Result<()> {
    let keys: Vec<K> = map.keys().collect::<Result<_, _>>()?;
    for k in keys {
        map.remove(&k)?;
    }
    Ok(())
}

/// Fails, saying why, when this binary was built without its XDP program (`build.rs`).
fn ensure_object() -> Result<()> {
    ensure!(
        !EBPF_OBJECT.is_empty(),
        "this dnsfast was built without its XDP program (bpf-linker was not found at build time): \
         set xdp.mode = \"off\", or build it with `cargo xtask build`"
    );
    Ok(())
}

/// The name of the loaded BPF program with id `id`.
#[must_use]
pub fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}

/// The OS error somewhere in `e`'s chain of causes.
fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(n) = io.raw_os_error()
        {
            return Some(n);
        }
        cur = err.source();
    }
    None
}

impl Dataplane {
    /// Loads the program with maps of `capacity`, pinning the maps under `pin_dir` if given
    /// (the directory must exist and be empty). Answering starts switched off.
    pub fn load(capacity: Capacity, pin_dir: Option<&Path>) -> Result<Self> {
        ensure_object()?;
        let entries = capacity.entries.max(1);
        let buckets = capacity.buckets();
        let mut loader = EbpfLoader::new();
        for m in MAP_HOT {
            loader.map_max_entries(m, entries);
        }
        loader
            .map_max_entries(MAP_HOT_TABLE, buckets)
            .map_max_entries(MAP_ANSWER_INDEX, entries)
            .map_max_entries(MAP_ANSWERS_SMALL, capacity.small.max(1))
            .map_max_entries(MAP_ANSWERS_LARGE, capacity.large.max(1))
            .map_max_entries(MAP_REGION_SETS, region_entries(capacity))
            .map_max_entries(MAP_ANSWER_SETS, capacity.sets.max(1))
            .map_max_entries(MAP_GEO4_POOL, geo4_words(&capacity))
            .map_max_entries(MAP_GEO6_POOL, geo6_words(&capacity));
        let mut ebpf = loader.load(EBPF_OBJECT).context("load the XDP object")?;
        for name in [PROG_DNSFAST, PROG_ECS, PROG_PASS] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verify/load program {name}"))?;
        }
        if let Some(dir) = pin_dir {
            let prog: &mut Xdp = ebpf
                .program_mut(PROG_DNSFAST)
                .expect("loaded above")
                .try_into()?;
            prog.pin(dir.join(PROG_DNSFAST))
                .context("pin the program")?;
        }
        // The scratch map is the program's own; pinning it lets bpftool show it, nothing more.
        if let Some(dir) = pin_dir
            && let Some(m) = ebpf.map(MAP_SCRATCH)
        {
            m.pin(dir.join(MAP_SCRATCH)).context("pin SCRATCH")?;
        }
        let mut stages: ProgramArray<MapData> = take(&mut ebpf, MAP_STAGES, pin_dir)?;
        let ecs: &Xdp = ebpf.program(PROG_ECS).expect("loaded above").try_into()?;
        stages
            .set(0, ecs.fd()?, 0)
            .context("place the Client Subnet stage in STAGES")?;
        // A seed per start: nobody can prepare names that pile up in one probe run.
        let seed =
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u64);
        let grace_inner =
            Array::<MapData, u32>::create(1, 0).context("create the grace inner map")?;
        let mut dp = Self {
            hot64: take(&mut ebpf, MAP_HOT[0], pin_dir)?,
            hot128: take(&mut ebpf, MAP_HOT[1], pin_dir)?,
            hot256: take(&mut ebpf, MAP_HOT[2], pin_dir)?,
            index: MmapArray::new(
                raw_map(&mut ebpf, MAP_ANSWER_INDEX, pin_dir)?,
                entries,
                4,
                true,
            )?,
            table: MmapArray::new(
                raw_map(&mut ebpf, MAP_HOT_TABLE, pin_dir)?,
                buckets,
                size_of::<HotBucket>(),
                true,
            )?,
            table_mask: buckets - 1,
            seed,
            inline_seq: 0,
            small: take(&mut ebpf, MAP_ANSWERS_SMALL, pin_dir)?,
            large: take(&mut ebpf, MAP_ANSWERS_LARGE, pin_dir)?,
            region_sets: MmapArray::new(
                raw_map(&mut ebpf, MAP_REGION_SETS, pin_dir)?,
                region_entries(capacity),
                4,
                true,
            )?,
            sets: MmapArray::new(
                raw_map(&mut ebpf, MAP_ANSWER_SETS, pin_dir)?,
                capacity.sets.max(1),
                size_of::<AnswerSet>(),
                true,
            )?,
            geo4_l0: MmapArray::new(
                raw_map(&mut ebpf, MAP_GEO4_L0, pin_dir)?,
                (V4_L0_ENTRIES / 4) as u32,
                8,
                true,
            )?,
            geo4_pool: MmapArray::new(
                raw_map(&mut ebpf, MAP_GEO4_POOL, pin_dir)?,
                geo4_words(&capacity),
                8,
                true,
            )?,
            geo6_pool: MmapArray::new(
                raw_map(&mut ebpf, MAP_GEO6_POOL, pin_dir)?,
                geo6_words(&capacity),
                8,
                true,
            )?,
            geo6_levels: MmapArray::new(
                raw_map(&mut ebpf, MAP_GEO6_LEVELS, pin_dir)?,
                (2 * V6_LEVEL_SLOTS) as u32,
                4,
                true,
            )?,
            geo6_values: MmapArray::new(
                raw_map(&mut ebpf, MAP_GEO6_VALUES, pin_dir)?,
                (2 * V6_VALUES) as u32,
                4,
                true,
            )?,
            ecs4: take(&mut ebpf, MAP_ECS_RESOLVERS_V4, pin_dir)?,
            ecs6: take(&mut ebpf, MAP_ECS_RESOLVERS_V6, pin_dir)?,
            ecs_written: std::collections::BTreeSet::new(),
            generation: 0,
            config: take(&mut ebpf, MAP_CONFIG, pin_dir)?,
            config_active: MmapArray::new(
                raw_map(&mut ebpf, MAP_CONFIG_ACTIVE, pin_dir)?,
                1,
                4,
                true,
            )?,
            config_current: 0,
            config_written: XdpConfig::zeroed(),
            stats: take(&mut ebpf, MAP_STATS, pin_dir)?,
            grace: take(&mut ebpf, MAP_GRACE, pin_dir)?,
            grace_inner,
            _stages: stages,
            ebpf,
            sync: MapSync::new(capacity, seed),
            capacity,
            pin_dir: pin_dir.map(Path::to_path_buf),
            link: None,
            last_apply: ApplyStats::default(),
            // Debug builds only: no stray variable can break a release's updates.
            fault: std::env::var("DNSFAST_TEST_FAIL_MAP_UPDATE")
                .ok()
                .filter(|_| cfg!(debug_assertions))
                .and_then(|v| v.parse().ok())
                .map(|n| (2, n)),
        };
        dp.grace.set(0, &dp.grace_inner, 0).context("prime GRACE")?;
        for e in 0..entries {
            dp.index.store(e, 0, SLOT_NONE, Ordering::Relaxed);
        }
        for e in 0..region_entries(capacity) {
            dp.region_sets.store(e, 0, SET_NONE, Ordering::Relaxed);
        }
        for b in 0..buckets {
            dp.table
                .store(b, BUCKET_SLOT_WORD, SLOT_NONE, Ordering::Relaxed);
        }
        Ok(dp)
    }

    /// The answering program's size and verification cost.
    pub fn program_size(&self) -> Result<ProgramSize> {
        self.size_of(PROG_DNSFAST)
    }

    /// The Client Subnet stage's size and verification cost (its own budget).
    pub fn ecs_stage_size(&self) -> Result<ProgramSize> {
        self.size_of(PROG_ECS)
    }

    fn size_of(&self, name: &str) -> Result<ProgramSize> {
        let prog: &Xdp = self.ebpf.program(name).expect("loaded").try_into()?;
        let info = prog.info().context("program info")?;
        Ok(ProgramSize {
            instructions: info.size_translated().unwrap_or(0) / 8,
            jited_bytes: info.size_jitted(),
            verifier_processed: info.verified_instruction_count().unwrap_or(0),
        })
    }

    /// Capacities the maps were created with.
    #[must_use]
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Number of hot keys in the maps.
    #[must_use]
    pub fn hot_keys(&self) -> usize {
        self.sync.len()
    }

    /// The seed of `HOT_TABLE`'s hash (chosen at load; tests use it to build colliding names).
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Writes the program's configuration (addresses, port, on/off) while it serves: into the
    /// entry of `CONFIG` not in use, then flips `CONFIG_ACTIVE` to it with one store. The grace
    /// period after the flip lets the runs that still read the old entry finish, so the next
    /// call may write that one.
    pub fn set_config(&mut self, cfg: &XdpConfig) -> Result<()> {
        let mut cfg = *cfg;
        // The table's geometry and seed are the dataplane's own.
        cfg.hot_mask = self.table_mask;
        cfg.seed = self.seed;
        let next = self.config_current ^ 1;
        self.config.set(next, cfg, 0).context("write CONFIG")?;
        self.config_active.store(0, 0, next, Ordering::Release);
        self.config_current = next;
        self.config_written = cfg;
        self.grace
            .set(0, &self.grace_inner, 0)
            .context("grace period")
    }

    /// Places clients as `steering` does, in generation `generation` (the half of the steered
    /// blocks its answer sets were written to, `Compiled::map_changes`): its region map into
    /// the region tables, generation `generation`'s half of them (`dnsfast_common::geotable`):
    /// the IPv4 groups into its half of `GEO4_POOL`, then the IPv4 first level in place (each
    /// entry's store switches it, whole, from the old map to the new), the IPv6 levels and
    /// values into its halves; then one configuration flip moves the default region and the
    /// IPv6 root. A lookup meets the old map with the old sets or the new with the new.
    ///
    /// # Errors
    /// A table the map does not fit (`xdp.max_geo_blocks` sizes them), or a map write.
    pub fn set_regions(
        &mut self,
        steering: &crate::steering::Compiled,
        generation: u8,
    ) -> Result<()> {
        let base = u32::from(generation) * MAX_REGIONS as u32;
        let default_region = u32::from(steering.default_region) + base;
        if steering.regions.is_empty() {
            // No steered names: nothing looks a client up.
            self.generation = generation;
            return self.set_geo_config(default_region, self.config_written.geo6_half);
        }
        let half = u32::from(generation & 1);
        let [f4, f6] = &steering.map.families;
        let groups_half = geo4_groups_half(&self.capacity);
        let v4 = crate::geo::table::v4_image(&f4.blocks, base, half * groups_half)
            .map_err(|e| anyhow!("{e}"))?;
        let groups = v4.pool.len() / V4_GROUP;
        ensure!(
            groups <= groups_half as usize,
            "the IPv4 region table needs {groups} groups; xdp.max_geo_blocks = {} sizes it for \
             {groups_half}: raise it",
            self.capacity.geo
        );
        let entries_half = geo6_entries_half(&self.capacity);
        let v6 = crate::geo::table::v6_image(
            &f6.blocks,
            base,
            half * entries_half,
            half * V6_VALUES as u32,
        )
        .map_err(|e| anyhow!("{e}"))?;
        ensure!(
            v6.pool.len() <= entries_half as usize,
            "the IPv6 region table needs {} entries; xdp.max_geo_blocks = {} sizes it for \
             {entries_half}: raise it",
            v6.pool.len(),
            self.capacity.geo
        );
        // The half being written was last read two maps ago; a program that read it then has
        // long finished, but wait for that formally (one grace period).
        self.grace
            .set(0, &self.grace_inner, 0)
            .context("grace period")?;
        let first_group = (half * groups_half) as usize * V4_GROUP;
        for (i, e) in v4.pool.iter().enumerate() {
            self.geo4_pool
                .cell16(first_group + i)
                .store(*e, Ordering::Relaxed);
        }
        let first6 = (half * entries_half) as usize;
        for (i, e) in v6.pool.iter().enumerate() {
            self.geo6_pool
                .cell16(first6 + i)
                .store(*e, Ordering::Relaxed);
        }
        let first_value = half * V6_VALUES as u32;
        for (i, v) in v6.values.iter().enumerate() {
            self.geo6_values
                .store(first_value + i as u32, 0, *v, Ordering::Relaxed);
        }
        for (l, at) in v6.levels.iter().enumerate() {
            self.geo6_levels.store(
                half * V6_LEVEL_SLOTS as u32 + l as u32,
                0,
                *at,
                Ordering::Relaxed,
            );
        }
        // The groups are whole before the first level points at them.
        fence(Ordering::Release);
        for (i, e) in v4.first.iter().enumerate() {
            let cell = self.geo4_l0.cell16(i);
            if cell.load(Ordering::Relaxed) != *e {
                cell.store(*e, Ordering::Release);
            }
        }
        self.set_geo_config(default_region, half)?;
        self.generation = generation;
        Ok(())
    }

    /// The generation the region map was last written in.
    #[must_use]
    pub fn generation(&self) -> u8 {
        self.generation
    }

    /// Sets the default region and the IPv6 tables' half with one configuration flip.
    fn set_geo_config(&mut self, default_region: u32, half: u32) -> Result<()> {
        if self.config_written.default_region == default_region
            && self.config_written.geo6_half == half
        {
            return Ok(());
        }
        let mut cfg = self.config_written;
        cfg.default_region = default_region;
        cfg.geo6_half = half;
        self.set_config(&cfg)
    }

    /// Applies the ECS policy's narrowing half: the listed resolvers it drops leave
    /// `ECS_RESOLVERS_*`, and the program honours no more than both the old and the new policy
    /// would (off if the new one is; only from listed resolvers if either lists them). A
    /// reload calls this before the maps change and [`Self::set_ecs`] after, so that the
    /// program never honours, over new maps, an option the new configuration ignores.
    pub fn narrow_ecs(&mut self, policy: &EcsPolicy) -> Result<()> {
        let want = ecs_entries(policy);
        let gone: Vec<ipnet::IpNet> = self.ecs_written.difference(&want).copied().collect();
        let old = self.config_written.flags & (CFG_ECS | CFG_ECS_LISTED);
        let flags = match policy {
            EcsPolicy::Off => 0,
            EcsPolicy::Listed(_) => old | CFG_ECS_LISTED,
            EcsPolicy::Any => old,
        };
        // The flags first: a resolver leaving the list is not looked up while it goes.
        self.set_ecs_flags(flags)?;
        for net in gone {
            let len = u32::from(net.prefix_len());
            match net {
                ipnet::IpNet::V4(n) => self.ecs4.remove(&Key::new(len, n.addr().octets())),
                ipnet::IpNet::V6(n) => self.ecs6.remove(&Key::new(len, n.addr().octets())),
            }
            .with_context(|| format!("remove {net} from the ECS resolver list"))?;
            self.ecs_written.remove(&net);
        }
        Ok(())
    }

    /// Sets the ECS policy: the listed resolvers into `ECS_RESOLVERS_*` (IPv4 prefixes also
    /// IPv4-mapped in the IPv6 trie, as the daemon matches a resolver at `::ffff:a.b.c.d`),
    /// then the flags ([`ecs_flags`]).
    pub fn set_ecs(&mut self, policy: &EcsPolicy) -> Result<()> {
        self.narrow_ecs(policy)?;
        for net in ecs_entries(policy) {
            if self.ecs_written.contains(&net) {
                continue;
            }
            let len = u32::from(net.prefix_len());
            match net {
                ipnet::IpNet::V4(n) => self.ecs4.insert(&Key::new(len, n.addr().octets()), 1, 0),
                ipnet::IpNet::V6(n) => self.ecs6.insert(&Key::new(len, n.addr().octets()), 1, 0),
            }
            .with_context(|| format!("write {net} to the ECS resolver list"))?;
            self.ecs_written.insert(net);
        }
        self.set_ecs_flags(ecs_flags(policy))
    }

    /// Sets the ECS policy flags (`CFG_ECS`, `CFG_ECS_LISTED`), keeping the rest (tests set
    /// them directly).
    pub fn set_ecs_flags(&mut self, flags: u32) -> Result<()> {
        let mut cfg = self.config_written;
        let want = (cfg.flags & !(CFG_ECS | CFG_ECS_LISTED)) | flags;
        if want == cfg.flags {
            return Ok(());
        }
        cfg.flags = want;
        self.set_config(&cfg)
    }

    /// Switches answering on or off, keeping the rest of the configuration last written (no
    /// address lookups that could fail on the way).
    pub fn set_answering(&mut self, on: bool) -> Result<()> {
        let mut cfg = self.config_written;
        if on {
            cfg.flags |= CFG_ANSWER;
        } else {
            cfg.flags &= !CFG_ANSWER;
        }
        self.set_config(&cfg)
    }

    /// Attaches the answering program to `iface`. Native mode falls back to generic when the
    /// driver refuses, with a warning.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<Attached> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_DNSFAST)
            .expect("loaded")
            .try_into()?;
        let (id, how) = match mode {
            XdpMode::Off => bail!("attach called with xdp off"),
            XdpMode::Generic => (prog.attach(iface, AyaXdpMode::Skb)?, Attached::Generic),
            XdpMode::Native => match prog.attach(iface, AyaXdpMode::Driver) {
                Ok(id) => (id, Attached::Native),
                // Taken, not unsupported: generic mode would be refused the same way.
                Err(e) if matches!(os_error(&e), Some(libc::EEXIST | libc::EBUSY)) => {
                    let held = crate::preflight::xdp_program_on(iface)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "another program".into());
                    bail!("attach XDP to {iface}: it already has {held}");
                }
                Err(e) => {
                    tracing::warn!(
                        "native XDP on {iface} failed ({e}); falling back to generic XDP"
                    );
                    (
                        prog.attach(iface, AyaXdpMode::Skb)
                            .with_context(|| format!("attach XDP to {iface}"))?,
                        Attached::Generic,
                    )
                }
            },
        };
        self.link = Some((id, how));
        Ok(how)
    }

    /// Detaches from the interface (also done on drop).
    pub fn detach(&mut self) -> Result<()> {
        if let Some((id, _)) = self.link.take() {
            let prog: &mut Xdp = self
                .ebpf
                .program_mut(PROG_DNSFAST)
                .expect("loaded")
                .try_into()?;
            prog.detach(id)?;
        }
        Ok(())
    }

    /// How the program is attached, if it is.
    #[must_use]
    pub fn attached(&self) -> Option<Attached> {
        self.link.as_ref().map(|(_, a)| *a)
    }

    /// Brings the maps in line with `changes`, never exposing a half-written answer.
    pub fn apply(&mut self, changes: &[Change]) -> Result<ApplyStats> {
        self.apply_with(changes, Steering::default())
    }

    /// [`Self::apply`] with steered names and answer sets.
    pub fn apply_with(&mut self, changes: &[Change], steering: Steering<'_>) -> Result<ApplyStats> {
        let plan = self.sync.plan_with(changes, steering);
        let mut stats = ApplyStats {
            ops: plan.ops.len(),
            skipped: plan.skipped.len(),
            graces: 0,
        };
        // The hook fires in the first apply after the start's that has more than N operations.
        let fail_at = match &mut self.fault {
            Some((1, n)) if plan.ops.len() > *n => {
                let n = *n;
                self.fault = None;
                Some(n)
            }
            Some((applies, _)) if *applies > 1 => {
                *applies -= 1;
                None
            }
            _ => None,
        };
        for (i, op) in plan.ops.iter().enumerate() {
            ensure!(
                fail_at != Some(i),
                "injected map update failure (DNSFAST_TEST_FAIL_MAP_UPDATE)"
            );
            match op {
                Op::WriteSlot { slot, answer } => self.write_slot(*slot, answer)?,
                Op::Flip { entry, slot } => self.index.store(*entry, 0, *slot, Ordering::Release),
                Op::BucketKey { bucket, key } => {
                    store_bucket_key(&self.table, *bucket, &key32(key));
                }
                Op::BucketInline { bucket, answer } => self.write_inline(*bucket, answer),
                Op::BucketSlot { bucket, slot } => {
                    self.table
                        .store(*bucket, BUCKET_SLOT_WORD, *slot, Ordering::Release);
                }
                Op::WriteSet {
                    set,
                    contents,
                    state,
                } => self.write_set(*set, contents, *state),
                Op::SetState { set, state } => {
                    self.sets.cell64(*set, 0).store(*state, Ordering::Release);
                }
                Op::RegionSet { index, set } => {
                    self.region_sets.store(*index, 0, *set, Ordering::Release);
                }
                Op::InsertKey { key, entry } => self.insert_key(key, *entry)?,
                Op::DeleteKey { key } => self.delete_key(key)?,
                Op::Grace => {
                    self.grace
                        .set(0, &self.grace_inner, 0)
                        .context("grace period")?;
                    stats.graces += 1;
                }
            }
        }
        if !plan.skipped.is_empty() {
            tracing::warn!(
                "{} hot answers did not fit the XDP maps (raise xdp.max_hot_names / max_answers); \
                 the daemon answers them",
                plan.skipped.len()
            );
        }
        self.last_apply = stats;
        Ok(stats)
    }

    /// Rebuilds the maps from nothing after a failed [`Self::apply`] left them and the model
    /// apart: waits out the readers (call with answering switched off), empties every bucket,
    /// index entry and hash map, starts a new model, and applies `changes` (the whole table).
    pub fn resync(&mut self, changes: &[Change], steering: Steering<'_>) -> Result<ApplyStats> {
        // Program runs that started before answering went off are over after this.
        self.grace
            .set(0, &self.grace_inner, 0)
            .context("grace period")?;
        for e in 0..self.capacity.entries.max(1) {
            self.index.store(e, 0, SLOT_NONE, Ordering::Relaxed);
        }
        for e in 0..region_entries(self.capacity) {
            self.region_sets.store(e, 0, SET_NONE, Ordering::Relaxed);
        }
        for b in 0..=self.table_mask {
            self.table
                .store(b, BUCKET_SLOT_WORD, SLOT_NONE, Ordering::Relaxed);
            store_bucket_key(&self.table, b, &HotKey32::zeroed());
        }
        clear(&mut self.hot64)?;
        clear(&mut self.hot128)?;
        clear(&mut self.hot256)?;
        // Deleted hash elements may be reused by the inserts below: no reader holds one now,
        // but the rule (a grace period between the two) costs one more millisecond.
        self.grace
            .set(0, &self.grace_inner, 0)
            .context("grace period")?;
        self.sync = MapSync::new(self.capacity, self.seed);
        self.apply_with(changes, steering)
    }

    /// Writes the inline answer of `bucket` (whose slot is not inline: nobody uses the inline
    /// answer), then publishes it with the next sequence number.
    fn write_inline(&mut self, bucket: u32, answer: &HotAnswer) {
        // The answer's stores must not become visible before the slot store that precedes them
        // (x86 keeps stores in order; the fence keeps the compiler from moving them).
        fence(Ordering::Release);
        let words: [u32; 6] = bytemuck::cast(answer.to_small());
        for (i, w) in words.into_iter().enumerate() {
            self.table
                .store(bucket, BUCKET_ANSWER_U32 + i, w, Ordering::Relaxed);
        }
        self.inline_seq = (self.inline_seq + 1) & SLOT_SEQ;
        self.table.store(
            bucket,
            BUCKET_SLOT_WORD,
            SLOT_INLINE | self.inline_seq,
            Ordering::Release,
        );
    }

    /// Writes answer set `id` whole (nothing can reach it), through the mapping: the records,
    /// then the state word.
    fn write_set(&self, id: u32, contents: &SetContents, state: u64) {
        let words: [u32; size_of::<AnswerSet>() / 4] = bytemuck::cast(contents.to_map(state));
        for (i, w) in words.into_iter().enumerate().skip(2) {
            self.sets.store(id, i, w, Ordering::Relaxed);
        }
        self.sets.cell64(id, 0).store(state, Ordering::Relaxed);
        // The stores that publish the set (a region entry, a redirect) come after these.
        fence(Ordering::Release);
    }

    fn write_slot(&mut self, slot: u32, answer: &HotAnswer) -> Result<()> {
        if slot & SLOT_LARGE == 0 {
            self.small.set(slot, answer.to_small(), 0)?;
        } else {
            self.large.set(slot & !SLOT_LARGE, answer.to_large(), 0)?;
        }
        Ok(())
    }

    fn insert_key(&mut self, key: &HotKey, entry: u32) -> Result<()> {
        const CLASS: &str = "the name fits the class name_class picked";
        let v = HotRef { entry };
        // A name of at most 32 octets is here because its probe run in HOT_TABLE was full.
        match name_class(key.name().len()) {
            0 | 1 => self.hot64.insert(
                HotKey64::new(key.qtype(), key.region(), key.name()).expect(CLASS),
                v,
                BPF_NOEXIST,
            )?,
            2 => self.hot128.insert(
                HotKey128::new(key.qtype(), key.region(), key.name()).expect(CLASS),
                v,
                BPF_NOEXIST,
            )?,
            _ => self.hot256.insert(
                HotKey256::new(key.qtype(), key.region(), key.name()).expect(CLASS),
                v,
                BPF_NOEXIST,
            )?,
        }
        Ok(())
    }

    fn delete_key(&mut self, key: &HotKey) -> Result<()> {
        const CLASS: &str = "the name fits the class name_class picked";
        match name_class(key.name().len()) {
            0 | 1 => self
                .hot64
                .remove(&HotKey64::new(key.qtype(), key.region(), key.name()).expect(CLASS))?,
            2 => self
                .hot128
                .remove(&HotKey128::new(key.qtype(), key.region(), key.name()).expect(CLASS))?,
            _ => self
                .hot256
                .remove(&HotKey256::new(key.qtype(), key.region(), key.name()).expect(CLASS))?,
        }
        Ok(())
    }

    /// Counter totals over all CPUs, indexed like `dnsfast_common::stats::COUNTER_NAMES`.
    pub fn counters(&self) -> Result<Vec<u64>> {
        (0..COUNTERS as u32)
            .map(|i| Ok(self.stats.get(&i, 0)?.iter().sum()))
            .collect()
    }

    /// Runs the answering program once on `frame` (`BPF_PROG_RUN`): the XDP action and the
    /// frame as the program left it.
    pub fn test_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog: &Xdp = self
            .ebpf
            .program(PROG_DNSFAST)
            .expect("loaded")
            .try_into()?;
        run_once(prog, frame)
    }

    /// Runs the answering program `repeat` times on `frame` and returns the kernel's average run
    /// time. Only meaningful for frames the program does not rewrite (a rewritten frame is what
    /// the next run sees).
    pub fn time_run(&self, frame: &[u8], repeat: u32) -> Result<std::time::Duration> {
        let prog: &Xdp = self
            .ebpf
            .program(PROG_DNSFAST)
            .expect("loaded")
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 4096];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })?;
        Ok(r.duration)
    }

    /// The directory the maps are pinned under, if any.
    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

/// A helper program of the object, for test hosts and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Helper {
    /// Passes everything: for the far end of a veth pair.
    Pass,
    /// The benchmark's ceiling: an empty answer to every DNS query, no lookup.
    Reflect,
    /// The ceiling plus one record's frame growth: a fixed A record for every query.
    ReflectGrow,
    /// The ceiling plus one load from a random bucket of an (empty) `HOT_TABLE` of this many
    /// buckets (a power of two).
    ReflectMiss(u32),
    /// The ceiling plus one lookup of the Client Subnet address in a kernel LPM trie holding a
    /// region map's blocks (given at load).
    ReflectLpm,
    /// The ceiling plus one load, picked by the Client Subnet address, from `GEO4_L0` at its
    /// full size (the region tables' first level), loaded empty.
    ReflectGeoMiss,
}

/// A helper program attached to an interface; detached when dropped.
pub struct HelperProgram {
    _ebpf: Ebpf,
}

/// The `CONFIG` flags of an ECS policy.
#[must_use]
pub fn ecs_flags(ecs: &EcsPolicy) -> u32 {
    match ecs {
        EcsPolicy::Any => CFG_ECS,
        EcsPolicy::Listed(_) => CFG_ECS | CFG_ECS_LISTED,
        EcsPolicy::Off => 0,
    }
}

/// What `ECS_RESOLVERS_*` hold for a policy: its prefixes, IPv4 ones also IPv4-mapped.
fn ecs_entries(policy: &EcsPolicy) -> std::collections::BTreeSet<ipnet::IpNet> {
    let EcsPolicy::Listed(list) = policy else {
        return std::collections::BTreeSet::new();
    };
    let mut out = std::collections::BTreeSet::new();
    for net in list {
        out.insert(*net);
        if let ipnet::IpNet::V4(n) = net {
            let mapped = ipnet::Ipv6Net::new(n.addr().to_ipv6_mapped(), 96 + n.prefix_len())
                .expect("96 + an IPv4 length is at most 128");
            out.insert(ipnet::IpNet::V6(mapped));
        }
    }
    out
}

/// Loads the object and verifies `helper`. The maps it brings along are kept tiny, except what
/// the references use: for the miss reference `HOT_TABLE` at the size asked for and `CONFIG`
/// with its mask, for the LPM reference the `ECS_RESOLVERS_*` tries holding `blocks`' blocks
/// (each with its region), for the geo-miss reference `GEO4_L0` whole.
fn load_helper(
    helper: Helper,
    blocks: Option<&crate::geo::RegionMap>,
) -> Result<(Ebpf, &'static str)> {
    ensure_object()?;
    ensure!(
        blocks.is_some() == (helper == Helper::ReflectLpm),
        "the LPM reference, and only it, takes a region map"
    );
    let mut loader = EbpfLoader::new();
    for m in MAP_HOT {
        loader.map_max_entries(m, 1);
    }
    loader
        .map_max_entries(MAP_ANSWER_INDEX, 1)
        .map_max_entries(MAP_ANSWERS_SMALL, 1)
        .map_max_entries(MAP_ANSWERS_LARGE, 1)
        .map_max_entries(MAP_REGION_SETS, 1)
        .map_max_entries(MAP_ANSWER_SETS, 1)
        .map_max_entries(MAP_GEO4_POOL, 1)
        .map_max_entries(MAP_GEO6_POOL, 1);
    if helper != Helper::ReflectGeoMiss {
        loader.map_max_entries(MAP_GEO4_L0, 1);
    }
    let [n4, n6] = blocks.map_or([1, 1], |m| {
        m.families
            .each_ref()
            .map(|f| u32::try_from(f.blocks.len().max(1)).unwrap_or(u32::MAX))
    });
    loader
        .map_max_entries(MAP_ECS_RESOLVERS_V4, n4)
        .map_max_entries(MAP_ECS_RESOLVERS_V6, n6);
    if let Helper::ReflectMiss(buckets) = helper {
        ensure!(
            buckets.is_power_of_two(),
            "the table's bucket count {buckets} is not a power of two"
        );
        loader.map_max_entries(MAP_HOT_TABLE, buckets);
    }
    let mut ebpf = loader.load(EBPF_OBJECT).context("load the XDP object")?;
    let name = match helper {
        Helper::Pass => PROG_PASS,
        Helper::Reflect => PROG_REFLECT,
        Helper::ReflectGrow => PROG_REFLECT_GROW,
        Helper::ReflectGeoMiss => PROG_REFLECT_GEO_MISS,
        Helper::ReflectLpm => {
            let map = blocks.expect("checked above");
            let mut v4: LpmTrie<&mut MapData, [u8; 4], u8> = LpmTrie::try_from(
                ebpf.map_mut(MAP_ECS_RESOLVERS_V4)
                    .ok_or_else(|| anyhow!("no map {MAP_ECS_RESOLVERS_V4}"))?,
            )?;
            for (net, value) in map.entries() {
                if let ipnet::IpNet::V4(n) = net {
                    let key = Key::new(u32::from(n.prefix_len()), n.addr().octets());
                    v4.insert(&key, (value & 0xFF) as u8, 0)
                        .with_context(|| format!("insert {n}"))?;
                }
            }
            let mut v6: LpmTrie<&mut MapData, [u8; 16], u8> = LpmTrie::try_from(
                ebpf.map_mut(MAP_ECS_RESOLVERS_V6)
                    .ok_or_else(|| anyhow!("no map {MAP_ECS_RESOLVERS_V6}"))?,
            )?;
            for (net, value) in map.entries() {
                if let ipnet::IpNet::V6(n) = net {
                    let key = Key::new(u32::from(n.prefix_len()), n.addr().octets());
                    v6.insert(&key, (value & 0xFF) as u8, 0)
                        .with_context(|| format!("insert {n}"))?;
                }
            }
            PROG_REFLECT_LPM
        }
        Helper::ReflectMiss(buckets) => {
            // Borrowed, not taken: the program refers to the map by a descriptor the object owns.
            let mut config: Array<&mut MapData, XdpConfig> = Array::try_from(
                ebpf.map_mut(MAP_CONFIG)
                    .ok_or_else(|| anyhow!("no map {MAP_CONFIG}"))?,
            )?;
            let cfg = XdpConfig {
                hot_mask: buckets - 1,
                ..XdpConfig::zeroed()
            };
            config.set(0, cfg, 0).context("write CONFIG")?;
            PROG_REFLECT_MISS
        }
    };
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("no program {name}"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("verify/load program {name}"))?;
    Ok((ebpf, name))
}

/// Attaches `helper` to `iface` in native mode (`blocks`: the LPM reference's region map).
pub fn attach_helper(
    helper: Helper,
    iface: &str,
    blocks: Option<&crate::geo::RegionMap>,
) -> Result<HelperProgram> {
    let (mut ebpf, name) = load_helper(helper, blocks)?;
    let prog: &mut Xdp = ebpf.program_mut(name).expect("loaded").try_into()?;
    prog.attach(iface, AyaXdpMode::Driver)
        .with_context(|| format!("attach {name} to {iface}"))?;
    Ok(HelperProgram { _ebpf: ebpf })
}

/// Runs `helper` once on `frame` (`BPF_PROG_RUN`): its action and the frame it leaves
/// (`blocks`: the LPM reference's region map).
pub fn helper_test_run(
    helper: Helper,
    frame: &[u8],
    blocks: Option<&crate::geo::RegionMap>,
) -> Result<(u32, Vec<u8>)> {
    let mut out = helper_test_runs(helper, &[frame], blocks)?;
    Ok(out.pop().expect("one frame"))
}

/// [`helper_test_run`] on each of `frames`, with one load of the helper.
pub fn helper_test_runs(
    helper: Helper,
    frames: &[&[u8]],
    blocks: Option<&crate::geo::RegionMap>,
) -> Result<Vec<(u32, Vec<u8>)>> {
    let (ebpf, name) = load_helper(helper, blocks)?;
    let prog: &Xdp = ebpf.program(name).expect("loaded").try_into()?;
    frames.iter().map(|f| run_once(prog, f)).collect()
}

/// One `BPF_PROG_RUN` of `prog` on `frame`: the XDP action and the frame as the program left it
/// (room for it to grow by 4 KiB).
fn run_once(prog: &Xdp, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 4096];
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

/// One hot entry as read back from pinned maps.
#[derive(Debug)]
pub struct PinnedEntry {
    /// Wire name (zero padding removed).
    pub name: Vec<u8>,
    /// QTYPE.
    pub qtype: u16,
    /// Region.
    pub region: u16,
    /// Where the key lives.
    pub place: Place,
    /// Slot id.
    pub slot: u32,
    /// The answer in the slot, if the slot is valid.
    pub answer: Option<HotAnswer>,
}

/// Where a hot key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A bucket of `HOT_TABLE` (names of at most 32 octets).
    Bucket(u32),
    /// An `ANSWER_INDEX` entry, reached through a `HOT_*` hash map.
    Entry(u32),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bucket(b) => write!(f, "bucket {b}"),
            Self::Entry(e) => write!(f, "entry {e}"),
        }
    }
}

/// Reads every hot entry from the maps pinned under `dir`.
pub fn read_pinned(dir: &Path) -> Result<Vec<PinnedEntry>> {
    let open = |name: &str| {
        MapData::from_pin(dir.join(name))
            .with_context(|| format!("open {}", dir.join(name).display()))
    };
    let index: Array<MapData, u32> = Array::try_from(Map::Array(open(MAP_ANSWER_INDEX)?))?;
    let small: Array<MapData, AnswerSmall> = Array::try_from(Map::Array(open(MAP_ANSWERS_SMALL)?))?;
    let large: Array<MapData, AnswerLarge> = Array::try_from(Map::Array(open(MAP_ANSWERS_LARGE)?))?;
    let mut out = Vec::new();
    let mut push = |name: &[u8],
                    qtype: u16,
                    region: u16,
                    place: Place,
                    slot: u32,
                    inline: Option<AnswerSmall>|
     -> Result<()> {
        // A steered name's answers are its regions' sets, not one slot.
        let answer = if slot == SLOT_NONE || slot == SLOT_TOMB || slot_is_steered(slot) {
            None
        } else if slot_is_inline(slot) {
            inline.map(|a| (a.ttl, a.rrtype, a.count, a.rdata.to_vec()))
        } else if slot & SLOT_LARGE == 0 {
            let a = small.get(&slot, 0)?;
            Some((a.ttl, a.rrtype, a.count, a.rdata.to_vec()))
        } else {
            let a = large.get(&(slot & !SLOT_LARGE), 0)?;
            Some((a.ttl, a.rrtype, a.count, a.rdata.to_vec()))
        }
        .map(|(ttl, rrtype, count, mut rdata)| {
            let per = if rrtype == dnsfast_common::wire::TYPE_AAAA {
                16
            } else {
                4
            };
            rdata.truncate((usize::from(count) * per).min(rdata.len()));
            HotAnswer {
                ttl,
                rrtype,
                count,
                rdata: rdata.into_boxed_slice(),
            }
        });
        let end = wire_len(name);
        out.push(PinnedEntry {
            name: name[..end].to_vec(),
            qtype,
            region,
            place,
            slot,
            answer,
        });
        Ok(())
    };
    macro_rules! scan {
        ($i:expr, $t:ty) => {{
            let m: HashMap<MapData, $t, HotRef> =
                HashMap::try_from(Map::HashMap(open(MAP_HOT[$i - 1])?))?;
            for k in m.keys() {
                let k = k?;
                let v = m.get(&k, 0)?;
                let slot = index.get(&v.entry, 0)?;
                push(
                    &k.name,
                    k.qtype,
                    k.region,
                    Place::Entry(v.entry),
                    slot,
                    None,
                )?;
            }
        }};
    }
    let table = open(MAP_HOT_TABLE)?;
    let buckets = table.info()?.max_entries();
    let table = MmapArray::new(table, buckets, size_of::<HotBucket>(), false)?;
    for b in 0..buckets {
        let words: [u32; 9] = std::array::from_fn(|w| table.load(b, BUCKET_KEY_WORD + w));
        let key: HotKey32 = bytemuck::cast(words);
        let slot = table.load(b, BUCKET_SLOT_WORD);
        if key.qtype != 0 && slot != SLOT_TOMB {
            let words: [u32; 6] = std::array::from_fn(|w| table.load(b, BUCKET_ANSWER_U32 + w));
            let inline: AnswerSmall = bytemuck::cast(words);
            push(
                &key.name,
                key.qtype,
                key.region,
                Place::Bucket(b),
                slot,
                Some(inline),
            )?;
        }
    }
    scan!(1, HotKey64);
    scan!(2, HotKey128);
    scan!(3, HotKey256);
    Ok(out)
}

/// Counter totals from the `STATS` map pinned under `dir`.
pub fn read_pinned_counters(dir: &Path) -> Result<Vec<u64>> {
    let stats: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(MapData::from_pin(dir.join(MAP_STATS))?))?;
    (0..COUNTERS as u32)
        .map(|i| Ok(stats.get(&i, 0)?.iter().sum()))
        .collect()
}

/// Length of the wire name at the start of `buf` (up to and including the root label).
fn wire_len(buf: &[u8]) -> usize {
    let mut i = 0;
    while i < buf.len() {
        let l = usize::from(buf[i]);
        if l == 0 {
            return i + 1;
        }
        i += l + 1;
    }
    buf.len()
}

/// Region-map blocks per IPv4 group the tables are sized for, and the groups added to those.
const GEO4_BLOCKS_PER_GROUP: u32 = 24;
const GEO4_SPARE_GROUPS: u32 = 64;
/// IPv6 table entries per region-map block the tables are sized for.
const GEO6_ENTRIES_PER_BLOCK: u32 = 14;

/// IPv6 table entries every size has: the root, and room for 16 blocks as long as /128 (a
/// group on every level each).
const fn geo6_fixed_entries() -> u32 {
    (1 << V6_STRIDES[0]) + 16 * V6_STRIDES.len() as u32 * 256
}

/// IPv4 region-table groups per half of `GEO4_POOL`, for a map of `capacity.geo` blocks: one
/// per 24 blocks and 64 more (the GeoLite2 country database with the seed's regions needs
/// 6,539 for 264,706 blocks), at most the 2^14 an entry can name.
#[must_use]
pub fn geo4_groups_half(capacity: &Capacity) -> u32 {
    (capacity.geo / GEO4_BLOCKS_PER_GROUP + GEO4_SPARE_GROUPS).min((V4_MAX_GROUPS / 2) as u32)
}

/// The `xdp.max_geo_blocks` that sizes the tables for `groups4` IPv4 groups and `entries6`
/// IPv6 entries a half (the inverse of [`geo4_groups_half`] and [`geo6_entries_half`]).
#[must_use]
pub fn geo_blocks_for(groups4: usize, entries6: usize) -> usize {
    let v4 = groups4.saturating_sub(GEO4_SPARE_GROUPS as usize) * GEO4_BLOCKS_PER_GROUP as usize;
    let v6 = entries6
        .saturating_sub(geo6_fixed_entries() as usize)
        .div_ceil(GEO6_ENTRIES_PER_BLOCK as usize);
    v4.max(v6)
}

/// `GEO4_POOL`'s 64-bit values (both halves).
fn geo4_words(capacity: &Capacity) -> u32 {
    2 * geo4_groups_half(capacity) * (V4_GROUP / 4) as u32
}

/// IPv6 region-table entries per half of `GEO6_POOL`: 14 per block (the seed's 455,181
/// blocks take about 5.8 million) and the fixed part ([`geo6_fixed_entries`]), a multiple of
/// four.
#[must_use]
pub fn geo6_entries_half(capacity: &Capacity) -> u32 {
    (capacity.geo.saturating_mul(GEO6_ENTRIES_PER_BLOCK))
        .saturating_add(geo6_fixed_entries())
        .next_multiple_of(4)
}

/// `GEO6_POOL`'s 64-bit values (both halves).
fn geo6_words(capacity: &Capacity) -> u32 {
    2 * geo6_entries_half(capacity) / 4
}
