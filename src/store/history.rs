//! Where finished invocations are kept and lists are read from: in memory for a store without
//! a data directory, or in the data directory behind a cache of records finished or read
//! again recently, bounded in bytes. The open invocations are the store's own (see
//! `Store::open`).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::model::{FunctionKey, Invocation, InvocationKey};
use crate::persist::{BlockLoads, Decoder, Detail, Floor, PersistError, Reader, StoredEntry};

use super::admission::SecondReadAdmission;
use super::backend::PurgeStop;
use super::error::StoreError;
use super::index::{self, FunctionIndex, ListQuery, Order, Page};
use super::page::PageSigner;
use super::Hashing;

/// Default bytes of finished records the cache holds (`--cache-size`).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The open invocations, as the store holds them.
pub type OpenRecords = DashMap<InvocationKey, Arc<Invocation>, Hashing>;

/// Finished invocations and the list order of every invocation.
pub enum History {
    /// Everything in memory: purged by retention only.
    Memory(MemoryHistory),
    /// Everything in the data directory; the finished records used recently also cached.
    Disk(DiskHistory),
}

/// Finished records, and an index of every record, in memory.
#[derive(Default)]
pub struct MemoryHistory {
    finished: DashMap<InvocationKey, Arc<Invocation>, Hashing>,
    /// Every invocation, open or finished, by function in list order.
    indexes: DashMap<FunctionKey, Arc<RwLock<FunctionIndex>>, Hashing>,
    /// Per function, the cutoff of retention's current pass and the last record it examined:
    /// the pass's next batch goes on after it rather than from the oldest record, so that a
    /// budget's worth of records that cannot be purged yet (open, or ended after the cutoff)
    /// does not hold back the rest. Cleared when a batch catches up, and not used at another
    /// cutoff: the next pass starts from the oldest, and looks at those again. Bounded by the
    /// functions.
    resume_at: Mutex<HashMap<FunctionKey, (i64, Position), Hashing>>,
}

/// Records read from the data directory, with a cache.
pub struct DiskHistory {
    reader: Reader,
    cache: quick_cache::sync::Cache<InvocationKey, Arc<Invocation>, RecordWeight, Hashing>,
    /// Which records read from disk the cache takes.
    admission: SecondReadAdmission,
    /// How far retention has got through each function's records.
    purge: Mutex<PurgeProgress>,
    /// Per function, where its kept records begin, as of retention's last pass: every record
    /// before it ended before a cutoff retention used, and is purged or being purged. A list
    /// starts there rather than at the function's oldest key, so that it does not walk the
    /// deletion markers of everything purged (an LSM keeps them until compaction takes them to
    /// its last level). Written with each purge and read back at start, so that neither lists
    /// nor retention walk those markers after a restart. Bounded by the functions.
    floors: RwLock<HashMap<FunctionKey, Floor, Hashing>>,
    /// Removals made durable so far.
    removals: AtomicU64,
}

/// A (started time, id) in list order.
type Position = (i64, Arc<str>);

/// Most records retention keeps to look at again (see [`PurgeProgress`]): ~100 B each.
const SURVIVORS_MAX: usize = 100_000;

/// How far retention has got through the history, so that a pass reads only the records it
/// has not examined yet. An LSM keeps a deleted record's marker until compaction takes it to
/// the last level, and a scan from each function's oldest record walked over the markers of
/// everything purged before: with purging as fast as invoking, that came to more than half
/// the server's CPU.
struct PurgeProgress {
    /// Per function, where its next scan starts: just past the last record examined, or at
    /// the floor the data directory kept. No record is added before it later: an invocation
    /// starts now, after any cutoff retention has used. Bounded by the functions.
    resume_at: HashMap<FunctionKey, Floor, Hashing>,
    /// Records examined while open or ended after the cutoff, looked at again every pass:
    /// those in flight at the cutoff, or running longer than the retention. At most
    /// [`SURVIVORS_MAX`]: a scan that cannot keep one more stops before it, and goes on from
    /// it in a later pass.
    survivors: Vec<Survivor>,
    /// [`SURVIVORS_MAX`], but in tests.
    survivors_max: usize,
    /// Whether the survivors reached their bound and an operator was told: retention then
    /// waits for some to be purged, and the history grows meanwhile.
    told_full: bool,
}

impl Default for PurgeProgress {
    fn default() -> Self {
        PurgeProgress {
            resume_at: HashMap::default(),
            survivors: Vec::new(),
            survivors_max: SURVIVORS_MAX,
            told_full: false,
        }
    }
}

impl PurgeProgress {
    /// A place at or past `cutoff_ms` was reached at an earlier cutoff, so the clock has gone
    /// back since: invocations started now can sort before it, where neither lists nor
    /// retention would look. Those functions start over from their oldest record (a floor
    /// that [`DiskHistory::set_floors`] then writes as such).
    fn start_over_where_the_clock_went_back(&mut self, cutoff_ms: i64) {
        let mut behind = Vec::new();
        for (function, from) in &mut self.resume_at {
            if let Bound::Included((started, _)) | Bound::Excluded((started, _)) = from {
                if *started >= cutoff_ms {
                    *from = Bound::Unbounded;
                    behind.push(function.clone());
                }
            }
        }
        if !behind.is_empty() {
            tracing::warn!(
                functions = behind.len(),
                "the clock went back past where retention had got to; it starts over"
            );
            // The scan from the oldest finds them again.
            self.survivors
                .retain(|survivor| !behind.contains(&survivor.key.function));
        }
    }
}

/// A record retention examined and could not purge yet.
struct Survivor {
    key: InvocationKey,
    started_time_ms: i64,
    /// Its end time, once terminal.
    end_time_ms: Option<i64>,
}

/// A cached record's weight: about the bytes it holds.
#[derive(Clone)]
struct RecordWeight;

impl quick_cache::Weighter<InvocationKey, Arc<Invocation>> for RecordWeight {
    fn weight(&self, _key: &InvocationKey, record: &Arc<Invocation>) -> u64 {
        u64::try_from(approximate_bytes(record)).unwrap_or(u64::MAX)
    }
}

/// About the bytes a record holds in memory.
pub fn approximate_bytes(record: &Invocation) -> usize {
    const FIXED: usize = 320;
    const PER_EVENT: usize = 64;
    FIXED
        + record.key.id.len()
        + record.payload.len()
        + record.return_payload.len()
        + record.error_message.len()
        + record
            .events
            .iter()
            .map(|e| PER_EVENT + e.detail.len())
            .sum::<usize>()
}

fn storage(err: PersistError) -> StoreError {
    StoreError::from(err)
}

/// What a retention pass found to purge, and the floors it moved: both are written in one
/// commit, so that a floor on disk never stands past a record that is still there.
pub struct PurgePass {
    /// Finished invocations that ended before the cutoff, without events.
    pub ended: Vec<Invocation>,
    /// Functions whose kept records now begin elsewhere, and where.
    pub floors: Vec<(FunctionKey, Floor)>,
    /// Why the scan stopped.
    pub stopped: PurgeStop,
}

impl DiskHistory {
    /// Records read through `reader`, caching up to `cache_bytes` of them; retention goes on
    /// from where the data directory says it had got to.
    pub fn new(reader: Reader, cache_bytes: u64) -> Result<Self, StoreError> {
        let estimated_records = usize::try_from(cache_bytes / 2048).unwrap_or(1).max(1);
        let history = DiskHistory {
            reader,
            cache: quick_cache::sync::Cache::with(
                estimated_records,
                cache_bytes.max(1),
                RecordWeight,
                Hashing::default(),
                Default::default(),
            ),
            admission: SecondReadAdmission::new(estimated_records),
            purge: Mutex::default(),
            floors: RwLock::default(),
            removals: AtomicU64::new(0),
        };
        history.restore_floors()?;
        Ok(history)
    }

    /// Start retention over from the floors the data directory holds: at opening, and after a
    /// purge that could not be written, whose records the next pass must find again.
    fn restore_floors(&self) -> Result<(), StoreError> {
        let mut progress = self.purge.lock();
        let survivors_max = progress.survivors_max;
        *progress = PurgeProgress {
            survivors_max,
            ..PurgeProgress::default()
        };
        let mut floors = self.floors.write();
        floors.clear();
        for (function, floor) in self.reader.retention_floors().map_err(storage)? {
            progress.resume_at.insert(function.clone(), floor.clone());
            floors.insert(function, floor);
        }
        Ok(())
    }
}

impl DiskHistory {
    /// See [`History::ended_before`]: the survivors first, then each function's records from
    /// the last one examined up to the cutoff.
    fn ended_before(
        &self,
        functions: &[FunctionKey],
        cutoff_ms: i64,
        budget: usize,
        is_open: impl Fn(&InvocationKey) -> bool,
    ) -> Result<PurgePass, StoreError> {
        let mut progress = self.purge.lock();
        progress.start_over_where_the_clock_went_back(cutoff_ms);
        let mut found = Vec::new();
        // A read that fails ends the call with what was found; the record it was reading
        // is read again next time, since only what was handled counts as examined.
        let mut failed = None;
        progress.survivors.retain_mut(|survivor| {
            if failed.is_some() || found.len() == budget {
                return true;
            }
            match survivor.end_time_ms {
                Some(end) if end >= cutoff_ms => return true,
                None if is_open(&survivor.key) => return true,
                _ => {}
            }
            // It ended (an end is durable before it leaves the open records): read it.
            match self.reader.get(&survivor.key) {
                Ok(Some(record)) if record.status.is_terminal() => {
                    if record.end_time_ms < cutoff_ms {
                        found.push(record.without_events());
                        return false;
                    }
                    survivor.end_time_ms = Some(record.end_time_ms);
                    true
                }
                Ok(Some(_)) => true,
                // Dropped as it ended: its function keeps no records.
                Ok(None) => false,
                Err(err) => {
                    failed = Some(err);
                    true
                }
            }
        });
        let mut examined = 0;
        // No room for one more record to look at again.
        let mut held_back = false;
        let mut decoder = Decoder::default();
        for function in functions {
            if failed.is_some() || examined == budget || found.len() == budget {
                break;
            }
            let from = progress
                .resume_at
                .get(function)
                .cloned()
                .unwrap_or(Bound::Unbounded);
            let low = from.as_ref().map(|(t, id)| (*t, &**id));
            // Records started at or after the cutoff cannot have ended before it.
            let high = Bound::Excluded((cutoff_ms, ""));
            // The last record handled; its place is read from it once the scan stops.
            let mut last = None;
            for entry in self.reader.range(function, low, high, false) {
                if examined == budget || found.len() == budget {
                    break;
                }
                let handled = entry.and_then(|entry| {
                    let (status, end) = entry.status()?;
                    if status.is_terminal() && end < cutoff_ms {
                        let record =
                            self.reader
                                .decode_entry(&mut decoder, &entry, Detail::Summary)?;
                        found.push(record);
                    } else if progress.survivors.len() < progress.survivors_max {
                        let (started_time_ms, id) = entry.started_and_id()?;
                        progress.survivors.push(Survivor {
                            key: function.invocation(id),
                            started_time_ms,
                            end_time_ms: status.is_terminal().then_some(end),
                        });
                    } else {
                        // No room for one more survivor: go on from this record later.
                        if !progress.told_full {
                            progress.told_full = true;
                            tracing::warn!(
                                records = progress.survivors_max,
                                "retention holds as many open or recently ended records to \
                                 look at again as it may; records after them wait until some \
                                 are purged"
                            );
                        }
                        held_back = true;
                        return Ok(None);
                    }
                    Ok(Some(entry))
                });
                match handled {
                    Ok(Some(entry)) => {
                        examined += 1;
                        last = Some(entry);
                    }
                    Ok(None) => break,
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            if let Some(last) = last {
                let (started, id) = last
                    .started_and_id()
                    .expect("its key was read when it was examined");
                progress
                    .resume_at
                    .insert(function.clone(), Bound::Excluded((started, id.into())));
            }
        }
        if progress.survivors.len() < progress.survivors_max / 2 {
            progress.told_full = false;
        }
        let floors = self.set_floors(&progress);
        let stopped = match failed {
            Some(err) if found.is_empty() => return Err(storage(err)),
            Some(err) => {
                tracing::warn!(%err, "retention stopped at a record it could not read");
                PurgeStop::HeldBack
            }
            None if held_back => PurgeStop::HeldBack,
            None if examined == budget || found.len() == budget => PurgeStop::Budget,
            None => PurgeStop::CaughtUp,
        };
        Ok(PurgePass {
            ended: found,
            floors,
            stopped,
        })
    }

    /// Where each function's kept records begin after a pass: where its next scan starts, or
    /// at its lowest survivor. What the pass found is purged next, so a list leaves it out a
    /// moment before it is gone, as it would a moment after. Returns the floors that moved.
    fn set_floors(&self, progress: &PurgeProgress) -> Vec<(FunctionKey, Floor)> {
        let mut floors: HashMap<FunctionKey, Floor, Hashing> = progress
            .resume_at
            .iter()
            .map(|(function, from)| (function.clone(), from.clone()))
            .collect();
        for survivor in &progress.survivors {
            if let Some(floor) = floors.get_mut(&survivor.key.function) {
                let at = Bound::Included((survivor.started_time_ms, survivor.key.id.clone()));
                if lower_bound_order(&at, floor).is_lt() {
                    *floor = at;
                }
            }
        }
        let mut current = self.floors.write();
        let moved = floors
            .iter()
            .filter(|(function, floor)| current.get(*function) != Some(*floor))
            .map(|(function, floor)| (function.clone(), floor.clone()))
            .collect();
        *current = floors;
        moved
    }

    /// Where retention's next scan of `function` starts (unbounded: at its oldest record).
    #[cfg(test)]
    pub(super) fn resumes_at(&self, function: &FunctionKey) -> Option<Floor> {
        self.purge.lock().resume_at.get(function).cloned()
    }

    /// `low`, or `function`'s floor if that is higher: where a list needs to start.
    pub(super) fn raise_to_floor(
        &self,
        function: &FunctionKey,
        low: Bound<Position>,
    ) -> Bound<Position> {
        match self.floors.read().get(function) {
            Some(floor) if lower_bound_order(&low, floor).is_lt() => floor.clone(),
            _ => low,
        }
    }
}

/// How two lower bounds of a range compare: the greater starts the narrower range.
fn lower_bound_order(a: &Bound<Position>, b: &Bound<Position>) -> std::cmp::Ordering {
    lower_bound_rank(a).cmp(&lower_bound_rank(b))
}

/// A lower bound as a sortable value: past a position comes right after it, before any
/// greater position.
fn lower_bound_rank(bound: &Bound<Position>) -> Option<(&Position, bool)> {
    match bound {
        Bound::Unbounded => None,
        Bound::Included(position) => Some((position, false)),
        Bound::Excluded(position) => Some((position, true)),
    }
}

impl History {
    /// An invocation was accepted.
    pub fn accepted(&self, invocation: &Invocation) {
        if let History::Memory(memory) = self {
            memory
                .indexes
                .entry(invocation.key.function.clone())
                .or_default()
                .write()
                .insert(invocation.started_time_ms, invocation.key.id.clone());
        }
    }

    /// An invocation ended and is durable: it is kept here from now on.
    pub fn finished(&self, invocation: Arc<Invocation>) {
        match self {
            History::Memory(memory) => {
                memory.finished.insert(invocation.key.clone(), invocation);
            }
            History::Disk(disk) => disk.cache.insert(invocation.key.clone(), invocation),
        }
    }

    /// An invocation is being removed (purged, or not kept once terminal): in memory, it is
    /// gone at once; on disk, once the removal is durable ([`History::forget`]).
    pub fn removed(&self, key: &InvocationKey, started_time_ms: i64) {
        if let History::Memory(memory) = self {
            memory.finished.remove(key);
            if let Some(index) = memory.indexes.get(&key.function) {
                index.write().remove(started_time_ms, &key.id);
            }
        }
    }

    /// The removal of `keys` is durable: drop them from the cache. Until then a read still
    /// finds them on disk, and one that does must not cache them again afterwards, which the
    /// removal count guards.
    pub fn forget(&self, keys: &[InvocationKey]) {
        if let (History::Disk(disk), false) = (self, keys.is_empty()) {
            disk.removals.fetch_add(1, Ordering::AcqRel);
            for key in keys {
                disk.cache.remove(key);
            }
        }
    }

    /// A finished invocation, with its events.
    pub fn get(&self, key: &InvocationKey) -> Result<Option<Arc<Invocation>>, StoreError> {
        match self {
            History::Memory(memory) => Ok(memory.finished.get(key).map(|r| r.clone())),
            History::Disk(disk) => {
                if let Some(cached) = disk.cache.get(key) {
                    return Ok(Some(cached));
                }
                let removals = disk.removals.load(Ordering::Acquire);
                let Some(read) = disk.reader.get(key).map_err(storage)? else {
                    return Ok(None);
                };
                let read = Arc::new(read);
                // Only finished records are cached: an open one read here (the store reads
                // its own first) is about to change. Nor one whose removal may have become
                // durable while it was read, nor one read for the first time in a while.
                if read.status.is_terminal()
                    && disk.removals.load(Ordering::Acquire) == removals
                    && disk.admission.admit(key)
                {
                    disk.cache.insert(key.clone(), read.clone());
                }
                Ok(Some(read))
            }
        }
    }

    /// Whether an invocation with `key`'s id is kept here.
    pub fn contains(&self, key: &InvocationKey) -> Result<bool, StoreError> {
        match self {
            History::Memory(memory) => Ok(memory.finished.contains_key(key)),
            History::Disk(disk) => {
                if disk.cache.peek(key).is_some() {
                    return Ok(true);
                }
                disk.reader.contains(key).map_err(storage)
            }
        }
    }

    /// One page of a function's invocations; `open` holds the open ones (a list from memory
    /// reads them there, one from disk finds them on disk as of their last durable change).
    pub fn list(
        &self,
        signer: &PageSigner,
        query: &ListQuery,
        open: &OpenRecords,
    ) -> Result<Page, StoreError> {
        let Some(range) = index::range(signer, query)? else {
            return Ok(index::empty_page());
        };
        match self {
            History::Memory(memory) => {
                let Some(function_index) = memory.indexes.get(&query.function).map(|i| i.clone())
                else {
                    return Ok(index::empty_page());
                };
                let function_index = function_index.read();
                let entries = function_index.entries(range, query.order).map(Ok);
                index::page(signer, query, entries, |(_, id)| {
                    let key = query.function.invocation_ref(id);
                    if let Some(open) = open.get(&key) {
                        return Ok(Some(open.without_events()));
                    }
                    Ok(memory.finished.get(&key).map(|r| r.without_events()))
                })
            }
            History::Disk(disk) => {
                let low = disk.raise_to_floor(&query.function, range.0);
                if index::is_empty(&low, &range.1) {
                    return Ok(index::empty_page());
                }
                let entries = disk
                    .reader
                    .range(
                        &query.function,
                        borrowed(&low),
                        borrowed(&range.1),
                        query.order == Order::Desc,
                    )
                    .map(|entry| entry.map_err(storage).and_then(DiskEntry::new));
                let mut decoder = Decoder::default();
                index::page(signer, query, entries, |entry| {
                    disk.reader
                        .decode_entry(&mut decoder, &entry.entry, Detail::Summary)
                        .map(Some)
                        .map_err(storage)
                })
            }
        }
    }

    /// Finished invocations that ended before `cutoff_ms`, at most `budget` examined, and
    /// without events: what retention purges next, with the floors to write beside it.
    /// `functions` are every function known; `is_open` says whether an invocation is still
    /// open.
    pub fn ended_before(
        &self,
        functions: &[FunctionKey],
        cutoff_ms: i64,
        budget: usize,
        is_open: impl Fn(&InvocationKey) -> bool,
    ) -> Result<PurgePass, StoreError> {
        match self {
            History::Memory(memory) => {
                let mut examined = 0;
                let mut at_budget = false;
                let mut found = Vec::new();
                let mut resume_at = memory.resume_at.lock();
                for function in functions {
                    let Some(index) = memory.indexes.get(function).map(|i| i.clone()) else {
                        continue;
                    };
                    let index = index.read();
                    let from = resume_at
                        .get(function)
                        .filter(|(pass, _)| *pass == cutoff_ms)
                        .map(|(_, last)| last);
                    let mut last = None;
                    for entry in index.started_before(from, cutoff_ms) {
                        if examined == budget {
                            at_budget = true;
                            break;
                        }
                        examined += 1;
                        last = Some(entry);
                        let key = function.invocation_ref(&entry.1);
                        if let Some(record) = memory.finished.get(&key) {
                            if record.end_time_ms < cutoff_ms {
                                found.push(record.without_events());
                            }
                        }
                    }
                    if let Some(last) = last {
                        resume_at.insert(function.clone(), (cutoff_ms, last.clone()));
                    }
                    if at_budget {
                        break;
                    }
                }
                let stopped = if at_budget {
                    PurgeStop::Budget
                } else {
                    resume_at.clear();
                    PurgeStop::CaughtUp
                };
                Ok(PurgePass {
                    ended: found,
                    floors: Vec::new(),
                    stopped,
                })
            }
            History::Disk(disk) => disk.ended_before(functions, cutoff_ms, budget, is_open),
        }
    }

    /// Not all that `ended_before` returned was purged, and the floors it moved were not
    /// written: on disk, retention starts over from the floors last written, so that its next
    /// pass finds what is left again.
    pub fn purge_incomplete(&self) {
        if let History::Disk(disk) = self {
            if let Err(err) = disk.restore_floors() {
                tracing::warn!(%err, "retention could not read back where it had got to");
            }
        }
    }

    /// Keep at most `max` records for retention to look at again (a data directory only).
    #[cfg(test)]
    pub fn cap_survivors(&self, max: usize) {
        if let History::Disk(disk) = self {
            disk.purge.lock().survivors_max = max;
        }
    }

    /// Whether `record`, which `ended_before` returned, is still kept as it was found. On
    /// disk it is: retention returns a record once (the scan moves past it, or it leaves the
    /// survivors), and only retention removes a finished record that is kept.
    pub fn still_kept(&self, record: &Invocation) -> bool {
        match self {
            History::Memory(memory) => memory
                .finished
                .get(&record.key)
                .is_some_and(|kept| kept.started_time_ms == record.started_time_ms),
            History::Disk(_) => true,
        }
    }

    /// Bytes of finished records cached, and how many (0 in memory, where all are kept).
    pub fn cached(&self) -> (u64, usize) {
        match self {
            History::Memory(_) => (0, 0),
            History::Disk(disk) => (disk.cache.weight(), disk.cache.len()),
        }
    }

    /// Bytes the storage engine holds in its memtables (0 in memory).
    pub fn write_buffer_bytes(&self) -> u64 {
        match self {
            History::Memory(_) => 0,
            History::Disk(disk) => disk.reader.write_buffer_bytes(),
        }
    }

    /// Bytes the storage engine's block cache holds (0 in memory).
    pub fn block_cache_bytes(&self) -> u64 {
        match self {
            History::Memory(_) => 0,
            History::Disk(disk) => disk.reader.block_cache_bytes(),
        }
    }

    /// Blocks the storage engine's reads have loaded (none in memory).
    pub fn block_loads(&self) -> BlockLoads {
        match self {
            History::Memory(_) => BlockLoads::default(),
            History::Disk(disk) => disk.reader.block_loads(),
        }
    }

    /// Records retention examined and looks at again each pass (0 in memory, where each pass
    /// starts from the oldest record).
    pub fn retention_rechecks(&self) -> usize {
        match self {
            History::Memory(_) => 0,
            History::Disk(disk) => disk.purge.lock().survivors.len(),
        }
    }

    /// Bytes the history takes on disk (0 in memory).
    pub fn disk_space(&self) -> u64 {
        match self {
            History::Memory(_) => 0,
            History::Disk(disk) => disk.reader.disk_space(),
        }
    }
}

impl index::ListEntry for &(i64, Arc<str>) {
    fn position(&self) -> (i64, &str) {
        (self.0, &self.1)
    }
}

/// A position bound borrowing its id.
fn borrowed(bound: &Bound<(i64, Arc<str>)>) -> Bound<(i64, &str)> {
    match bound {
        Bound::Included((t, id)) => Bound::Included((*t, &**id)),
        Bound::Excluded((t, id)) => Bound::Excluded((*t, &**id)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A record a disk list found; its key was checked to hold a position when it was found.
struct DiskEntry {
    entry: StoredEntry,
}

impl DiskEntry {
    fn new(entry: StoredEntry) -> Result<Self, StoreError> {
        entry.started_and_id().map_err(storage)?;
        Ok(DiskEntry { entry })
    }
}

impl index::ListEntry for DiskEntry {
    fn position(&self) -> (i64, &str) {
        self.entry
            .started_and_id()
            .expect("the key was read when the entry was found")
    }
}
