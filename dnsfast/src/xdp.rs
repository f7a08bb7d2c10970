//! The one module that touches aya: loads the XDP program, owns its maps, executes
//! [`crate::mapsync`] plans, attaches, pins, detaches. The rest of the daemon sees
//! [`Dataplane::apply`] and a few typed reads.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunOptions, Xdp, XdpMode as AyaXdpMode, xdp::XdpLinkId},
};
use dnsfast_common::{
    maps::{
        AnswerLarge, AnswerSmall, HotKey32, HotKey64, HotKey128, HotKey256, HotRef,
        MAP_ANSWER_INDEX, MAP_ANSWERS_LARGE, MAP_ANSWERS_SMALL, MAP_CONFIG, MAP_GRACE, MAP_HOT,
        MAP_SCRATCH, MAP_STATS, PROG_DNSFAST, PROG_PASS, PROG_REFLECT, SLOT_LARGE, SLOT_NONE,
        XdpConfig, name_class,
    },
    stats::COUNTERS,
};

use crate::{
    config::XdpMode,
    hot::{Change, HotAnswer, HotKey},
    mapsync::{Capacity, MapSync, Op},
};

/// The XDP program, built by `build.rs`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dnsfast-xdp"));

const BPF_NOEXIST: u64 = 1;

/// `ANSWER_INDEX`, mapped into our memory so an entry is flipped with one atomic store.
struct IndexMap {
    _map: MapData,
    base: NonNull<u8>,
    len: usize,
    entries: u32,
}

// SAFETY: the mapping is shared memory owned by this struct; all access is through atomics.
unsafe impl Send for IndexMap {}
// SAFETY: as above.
unsafe impl Sync for IndexMap {}

impl IndexMap {
    /// Array elements are `round_up(value_size, 8)` apart in the kernel's layout.
    const STRIDE: usize = 8;

    fn new(map: MapData, entries: u32) -> Result<Self> {
        let page = 4096;
        let len = (entries as usize * Self::STRIDE).div_ceil(page) * page;
        // SAFETY: mapping a BPF_F_MMAPABLE array fd at offset 0 with at most its data size
        // (rounded to pages) is what the kernel supports; we check the result.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap ANSWER_INDEX");
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| anyhow!("mmap returned null"))?;
        let m = Self {
            _map: map,
            base,
            len,
            entries,
        };
        for e in 0..entries {
            m.store(e, SLOT_NONE);
        }
        Ok(m)
    }

    fn cell(&self, entry: u32) -> &AtomicU32 {
        assert!(entry < self.entries, "entry {entry} out of range");
        // SAFETY: entry < entries, so the 4 bytes at entry*8 lie inside the mapping; they are
        // 8-byte aligned (page-aligned base) and only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(entry as usize * Self::STRIDE).cast()) }
    }

    fn store(&self, entry: u32, slot: u32) {
        self.cell(entry).store(slot, Ordering::Release);
    }
}

impl Drop for IndexMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
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
    hot32: HashMap<MapData, HotKey32, HotRef>,
    hot64: HashMap<MapData, HotKey64, HotRef>,
    hot128: HashMap<MapData, HotKey128, HotRef>,
    hot256: HashMap<MapData, HotKey256, HotRef>,
    index: IndexMap,
    small: Array<MapData, AnswerSmall>,
    large: Array<MapData, AnswerLarge>,
    config: Array<MapData, XdpConfig>,
    stats: PerCpuArray<MapData, u64>,
    grace: ArrayOfMaps<MapData, Array<MapData, u32>>,
    grace_inner: Array<MapData, u32>,
    sync: MapSync,
    capacity: Capacity,
    pin_dir: Option<PathBuf>,
    link: Option<(XdpLinkId, Attached)>,
    /// Statistics of the last `apply`.
    pub last_apply: ApplyStats,
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

impl Dataplane {
    /// Loads the program with maps of `capacity`, pinning the maps under `pin_dir` if given
    /// (the directory must exist and be empty). Answering starts switched off.
    pub fn load(capacity: Capacity, pin_dir: Option<&Path>) -> Result<Self> {
        let entries = capacity.entries.max(1);
        let mut loader = EbpfLoader::new();
        for m in MAP_HOT {
            loader.map_max_entries(m, entries);
        }
        loader
            .map_max_entries(MAP_ANSWER_INDEX, entries)
            .map_max_entries(MAP_ANSWERS_SMALL, capacity.small.max(1))
            .map_max_entries(MAP_ANSWERS_LARGE, capacity.large.max(1));
        let mut ebpf = loader.load(EBPF_OBJECT).context("load the XDP object")?;
        for name in [PROG_DNSFAST, PROG_PASS] {
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
        let grace_inner =
            Array::<MapData, u32>::create(1, 0).context("create the grace inner map")?;
        let mut dp = Self {
            hot32: take(&mut ebpf, MAP_HOT[0], pin_dir)?,
            hot64: take(&mut ebpf, MAP_HOT[1], pin_dir)?,
            hot128: take(&mut ebpf, MAP_HOT[2], pin_dir)?,
            hot256: take(&mut ebpf, MAP_HOT[3], pin_dir)?,
            index: IndexMap::new(raw_map(&mut ebpf, MAP_ANSWER_INDEX, pin_dir)?, entries)?,
            small: take(&mut ebpf, MAP_ANSWERS_SMALL, pin_dir)?,
            large: take(&mut ebpf, MAP_ANSWERS_LARGE, pin_dir)?,
            config: take(&mut ebpf, MAP_CONFIG, pin_dir)?,
            stats: take(&mut ebpf, MAP_STATS, pin_dir)?,
            grace: take(&mut ebpf, MAP_GRACE, pin_dir)?,
            grace_inner,
            ebpf,
            sync: MapSync::new(capacity),
            capacity,
            pin_dir: pin_dir.map(Path::to_path_buf),
            link: None,
            last_apply: ApplyStats::default(),
        };
        dp.grace.set(0, &dp.grace_inner, 0).context("prime GRACE")?;
        Ok(dp)
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

    /// Writes the program's configuration (addresses, port, on/off).
    pub fn set_config(&mut self, cfg: &XdpConfig) -> Result<()> {
        self.config.set(0, cfg, 0).context("write CONFIG")
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
        let plan = self.sync.plan(changes);
        let mut stats = ApplyStats {
            ops: plan.ops.len(),
            skipped: plan.skipped,
            graces: 0,
        };
        for op in &plan.ops {
            match op {
                Op::WriteSlot { slot, answer } => self.write_slot(*slot, answer)?,
                Op::Flip { entry, slot } => self.index.store(*entry, *slot),
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
        if plan.skipped > 0 {
            tracing::warn!(
                "{} hot answers did not fit the XDP maps (raise xdp.max_hot_names / max_answers); \
                 the daemon answers them",
                plan.skipped
            );
        }
        self.last_apply = stats;
        Ok(stats)
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
        let v = HotRef { entry };
        match name_class(key.name().len()) {
            0 => self
                .hot32
                .insert(fill_key(key, HotKey32::zeroed()), v, BPF_NOEXIST)?,
            1 => self
                .hot64
                .insert(fill_key(key, HotKey64::zeroed()), v, BPF_NOEXIST)?,
            2 => self
                .hot128
                .insert(fill_key(key, HotKey128::zeroed()), v, BPF_NOEXIST)?,
            _ => self
                .hot256
                .insert(fill_key(key, HotKey256::zeroed()), v, BPF_NOEXIST)?,
        }
        Ok(())
    }

    fn delete_key(&mut self, key: &HotKey) -> Result<()> {
        match name_class(key.name().len()) {
            0 => self.hot32.remove(&fill_key(key, HotKey32::zeroed()))?,
            1 => self.hot64.remove(&fill_key(key, HotKey64::zeroed()))?,
            2 => self.hot128.remove(&fill_key(key, HotKey128::zeroed()))?,
            _ => self.hot256.remove(&fill_key(key, HotKey256::zeroed()))?,
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
        let mut out = vec![0u8; frame.len() + 4096];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
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

/// Copies the hot key into an XDP key of its class (zero padding already in `k`).
fn fill_key<K: KeyLayout>(key: &HotKey, mut k: K) -> K {
    k.set(key.qtype(), key.region(), key.name());
    k
}

/// The XDP key types, filled the same way.
trait KeyLayout {
    fn set(&mut self, qtype: u16, region: u16, name: &[u8]);
}

macro_rules! key_layout {
    ($($t:ty),*) => {$(
        impl KeyLayout for $t {
            fn set(&mut self, qtype: u16, region: u16, name: &[u8]) {
                self.qtype = qtype;
                self.region = region;
                self.name[..name.len()].copy_from_slice(name);
            }
        }
    )*};
}
key_layout!(HotKey32, HotKey64, HotKey128, HotKey256);

/// A helper program of the object, for test hosts and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Helper {
    /// Passes everything: for the far end of a veth pair.
    Pass,
    /// The benchmark's ceiling: an empty answer to every DNS query, no lookup.
    Reflect,
}

/// A helper program attached to an interface; detached when dropped.
pub struct HelperProgram {
    _ebpf: Ebpf,
}

/// Attaches `helper` to `iface` in native mode.
pub fn attach_helper(helper: Helper, iface: &str) -> Result<HelperProgram> {
    let mut loader = EbpfLoader::new();
    // Only the program is used; keep the maps it brings along tiny.
    for m in MAP_HOT {
        loader.map_max_entries(m, 1);
    }
    loader
        .map_max_entries(MAP_ANSWER_INDEX, 1)
        .map_max_entries(MAP_ANSWERS_SMALL, 1)
        .map_max_entries(MAP_ANSWERS_LARGE, 1);
    let mut ebpf = loader.load(EBPF_OBJECT).context("load the XDP object")?;
    let name = match helper {
        Helper::Pass => PROG_PASS,
        Helper::Reflect => PROG_REFLECT,
    };
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("no program {name}"))?
        .try_into()?;
    prog.load()?;
    prog.attach(iface, AyaXdpMode::Driver)
        .with_context(|| format!("attach {name} to {iface}"))?;
    Ok(HelperProgram { _ebpf: ebpf })
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
    /// Entry in `ANSWER_INDEX`.
    pub entry: u32,
    /// Slot id.
    pub slot: u32,
    /// The answer in the slot, if the slot is valid.
    pub answer: Option<HotAnswer>,
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
    let mut push = |name: &[u8], qtype: u16, region: u16, entry: u32| -> Result<()> {
        let slot = index.get(&entry, 0)?;
        let answer = if slot == SLOT_NONE {
            None
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
            entry,
            slot,
            answer,
        });
        Ok(())
    };
    macro_rules! scan {
        ($i:expr, $t:ty) => {{
            let m: HashMap<MapData, $t, HotRef> =
                HashMap::try_from(Map::HashMap(open(MAP_HOT[$i])?))?;
            for k in m.keys() {
                let k = k?;
                let v = m.get(&k, 0)?;
                push(&k.name, k.qtype, k.region, v.entry)?;
            }
        }};
    }
    scan!(0, HotKey32);
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
