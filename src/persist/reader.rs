//! Reads of the stored records: one invocation by id, a function's records in list order, and
//! what retention scans. They run on the caller's thread: a read is served from the storage
//! engine's memtables and block cache, or the OS page cache, and is short enough to run
//! inline rather than hop to a blocking thread. One that waits on the disk holds its thread,
//! which is why `sai serve` runs more runtime workers than cores on a data directory too large
//! to stay in the page cache.

use std::ops::Bound;
use std::sync::Arc;

use crate::model::{self, FunctionKey, Invocation, InvocationKey, Status};

use super::codec::{self, Decoder, Detail};
use super::numbers::FunctionNumbers;
use super::{Partitions, PersistError};

/// Reads stored records. Cheap to clone.
#[derive(Clone)]
pub struct Reader {
    db: fjall::Database,
    partitions: Partitions,
    numbers: Arc<FunctionNumbers>,
}

/// Blocks the storage engine has loaded for reads since the directory was opened, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockLoads {
    /// Blocks of records.
    pub data: BlockSources,
    /// Blocks of a table's index, which say which data block holds a key.
    pub index: BlockSources,
    /// Blocks of a table's bloom filter, which say that a key is not in the table.
    pub filter: BlockSources,
}

/// Where the loads of one kind of block came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockSources {
    /// Found in the block cache.
    pub cache: u64,
    /// Read from a table file: from the OS page cache, or from the disk where the page cache
    /// does not hold it.
    pub file: u64,
}

impl BlockSources {
    /// Count `loads` more, `cached` of them from the block cache.
    fn add(&mut self, cached: usize, loads: usize) {
        let widen = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.cache = self.cache.saturating_add(widen(cached));
        self.file = self
            .file
            .saturating_add(widen(loads.saturating_sub(cached)));
    }
}

/// One stored record as a range scan found it, not decoded yet.
pub struct StoredEntry {
    key: fjall::Slice,
    value: fjall::Slice,
}

impl StoredEntry {
    /// Its started time and id, from its key.
    pub fn started_and_id(&self) -> Result<(i64, &str), PersistError> {
        let (_, started, id) = codec::history_key_parts(&self.key).map_err(corrupt(&self.key))?;
        Ok((started, id))
    }

    /// Its status and end time (0 while open), without decoding the rest.
    pub fn status(&self) -> Result<(Status, i64), PersistError> {
        let (started, _) = self.started_and_id()?;
        codec::record_status(&self.value, started).map_err(corrupt(&self.key))
    }
}

fn corrupt(key: &[u8]) -> impl FnOnce(codec::DecodeError) -> PersistError + '_ {
    move |err| PersistError::Corrupt {
        what: format!("invocation record {key:?}: {err}"),
    }
}

/// The history key of invocation `id` of function `number` if the id carries its started time
/// (see [`codec::has_id_entry`]).
fn where_id_says(number: u32, id: &str) -> Option<Vec<u8>> {
    model::id::started_time(id).map(|started| codec::history_key(number, started, id))
}

/// Where a range of a function's records starts or ends: a (started time, id) position.
pub type Position<'a> = Bound<(i64, &'a str)>;

/// Where a function's records that retention keeps begin: a (started time, id) lower bound.
pub type Floor = Bound<(i64, Arc<str>)>;

impl Reader {
    pub(super) fn new(
        db: fjall::Database,
        partitions: Partitions,
        numbers: Arc<FunctionNumbers>,
    ) -> Self {
        Reader {
            db,
            partitions,
            numbers,
        }
    }

    /// The invocation `key`, with its events, if it is stored.
    pub fn get(&self, key: &InvocationKey) -> Result<Option<Invocation>, PersistError> {
        let p = &self.partitions;
        let Some(number) = self.numbers.number(&key.function) else {
            return Ok(None);
        };
        // A generated id says where its record is, and the id index does not hold it: one
        // read instead of two. Ids are unique in a function, so a record found there is this
        // one. The id index is still asked when none is there: it holds any id whose time is
        // not its record's started time (see `codec::has_id_entry`).
        if let Some(history_key) = where_id_says(number, &key.id) {
            if let Some(value) = p.history.get(&history_key)? {
                return self.decode(&history_key, &value, Detail::Full).map(Some);
            }
        }
        let Some(started) = p.ids.get(codec::id_key(number, &key.id))? else {
            return Ok(None);
        };
        let started: i64 =
            codec::decode(&started, "started time").map_err(|err| PersistError::Corrupt {
                what: format!("id entry of {}: {err}", key.id),
            })?;
        let history_key = codec::history_key(number, started, &key.id);
        let Some(value) = p.history.get(&history_key)? else {
            return Err(PersistError::Corrupt {
                what: format!("invocation {} has an id entry but no record", key.id),
            });
        };
        self.decode(&history_key, &value, Detail::Full).map(Some)
    }

    /// Whether an invocation with `key`'s id is stored in its function.
    pub fn contains(&self, key: &InvocationKey) -> Result<bool, PersistError> {
        let Some(number) = self.numbers.number(&key.function) else {
            return Ok(false);
        };
        let p = &self.partitions;
        if let Some(history_key) = where_id_says(number, &key.id) {
            if p.history.contains_key(history_key)? {
                return Ok(true);
            }
        }
        Ok(p.ids.contains_key(codec::id_key(number, &key.id))?)
    }

    /// `function`'s records between `low` and `high`, oldest first or newest first.
    pub fn range(
        &self,
        function: &FunctionKey,
        low: Position<'_>,
        high: Position<'_>,
        newest_first: bool,
    ) -> Box<dyn Iterator<Item = Result<StoredEntry, PersistError>>> {
        let Some(number) = self.numbers.number(function) else {
            return Box::new(std::iter::empty());
        };
        let bound = |position: Position<'_>, unbounded: Bound<Vec<u8>>| match position {
            Bound::Included((time, id)) => Bound::Included(codec::history_key(number, time, id)),
            Bound::Excluded((time, id)) => Bound::Excluded(codec::history_key(number, time, id)),
            Bound::Unbounded => unbounded,
        };
        let low = bound(low, Bound::Included(number.to_be_bytes().to_vec()));
        let high = bound(
            high,
            match number.checked_add(1) {
                Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
                None => Bound::Unbounded,
            },
        );
        let entries = self.partitions.history.range((low, high));
        let entry = |item: fjall::Guard| {
            let (key, value) = item.into_inner()?;
            Ok(StoredEntry { key, value })
        };
        if newest_first {
            Box::new(entries.rev().map(entry))
        } else {
            Box::new(entries.map(entry))
        }
    }

    /// Decode an entry a range scan found, sharing repeated strings through `decoder`.
    pub fn decode_entry(
        &self,
        decoder: &mut Decoder,
        entry: &StoredEntry,
        detail: Detail,
    ) -> Result<Invocation, PersistError> {
        self.decode_with(decoder, &entry.key, &entry.value, detail)
    }

    /// Decode a stored record, reading its payload from `history_payloads` if it is kept
    /// apart.
    pub(super) fn decode(
        &self,
        key: &[u8],
        value: &[u8],
        detail: Detail,
    ) -> Result<Invocation, PersistError> {
        self.decode_with(&mut Decoder::default(), key, value, detail)
    }

    fn decode_with(
        &self,
        decoder: &mut Decoder,
        key: &[u8],
        value: &[u8],
        detail: Detail,
    ) -> Result<Invocation, PersistError> {
        let (number, ..) = codec::history_key_parts(key).map_err(corrupt(key))?;
        let function = self
            .numbers
            .function(number)
            .ok_or_else(|| PersistError::Corrupt {
                what: format!(
                    "invocation record {key:?} names function {number}, which has no entry"
                ),
            })?;
        let apart = || -> Result<Arc<str>, codec::DecodeError> {
            let bytes = self
                .partitions
                .history_payloads
                .get(key)
                .map_err(|err| codec::DecodeError::new(format!("reading its payload: {err}")))?
                .ok_or_else(|| codec::DecodeError::new("its payload is missing"))?;
            std::str::from_utf8(&bytes)
                .map(Arc::from)
                .map_err(|_| codec::DecodeError::new("its payload is not UTF-8"))
        };
        decoder
            .history(function, key, value, detail, apart)
            .map_err(corrupt(key))
    }

    /// Per function, where the records retention keeps begin, as its last durable purge left
    /// it (see `WriteSet::put_retention_floor`).
    pub fn retention_floors(&self) -> Result<Vec<(FunctionKey, Floor)>, PersistError> {
        let mut floors = Vec::new();
        for item in self.partitions.meta.prefix(codec::RETENTION_FLOOR_PREFIX) {
            let (key, value) = item.into_inner()?;
            let corrupt = |what: String| PersistError::Corrupt { what };
            let number = codec::retention_floor_number(&key)
                .ok_or_else(|| corrupt(format!("retention floor key {key:?}")))?;
            let function = self
                .numbers
                .function(number)
                .ok_or_else(|| corrupt(format!("retention floor of unknown function {number}")))?;
            let floor = codec::decode_floor(&value).map_err(|err| {
                corrupt(format!("retention floor of {}: {err}", function.function))
            })?;
            floors.push((function, floor));
        }
        Ok(floors)
    }

    /// Bytes the history takes on disk (records, payloads and the id index).
    pub fn disk_space(&self) -> u64 {
        let p = &self.partitions;
        p.history.disk_space() + p.history_payloads.disk_space() + p.ids.disk_space()
    }

    /// Bytes the storage engine's memtables hold (written, not yet flushed to tables).
    pub fn write_buffer_bytes(&self) -> u64 {
        self.db.write_buffer_size()
    }

    /// Bytes the storage engine's block cache holds (index, filter and data blocks).
    pub fn block_cache_bytes(&self) -> u64 {
        // Hidden from fjall's docs but public; the only way to see how full the cache is.
        self.db.cache_size()
    }

    /// Blocks loaded by reads of every partition since the directory was opened.
    pub fn block_loads(&self) -> BlockLoads {
        let mut loads = BlockLoads::default();
        for keyspace in self.partitions.all() {
            // Hidden from fjall's docs and marked experimental, but public: the only account
            // of where a read's blocks came from.
            let metrics = keyspace.metrics();
            loads.data.add(
                metrics.data_block_load_cached_count(),
                metrics.data_block_load_count(),
            );
            loads.index.add(
                metrics.index_block_load_cached_count(),
                metrics.index_block_load_count(),
            );
            loads.filter.add(
                metrics.filter_block_load_cached_count(),
                metrics.filter_block_load_count(),
            );
        }
        loads
    }
}
