//! Durability and history behind the store: every committed change is written to an embedded
//! fjall database in the data directory before the RPC that made it is answered. The database
//! holds every invocation kept (open and finished); memory holds only what is open, and a
//! restart loads only that, with the configs and functions ([`Persist::load`]). Finished
//! records are read back by id or by list range through a [`Reader`].
//!
//! Why fjall: an LSM database with atomic batches across its partitions, a checksummed journal that
//! tolerates a torn tail (and refuses other corruption), ordered range scans, and explicit
//! sync modes; it saves writing and proving a log format and its compaction. One writer thread
//! drains whatever commits are waiting, writes them as one batch, syncs once, and acknowledges
//! them all (group commit): see [`writer`]. The layout of keys and values is in [`codec`].

mod codec;
mod error;
mod journal_check;
mod layout;
mod numbers;
mod reader;
mod upgrade;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::model::{FunctionKey, Invocation, StoredConfig};

pub use codec::{encode_record, payload_is_inline, DecodeError, Decoder, Detail};
pub use error::PersistError;
pub use layout::{FORMAT_VERSION, STORE_DIR};
pub use reader::{BlockLoads, Floor, Reader, StoredEntry};
pub use writer::{Journal, Ticket};

use layout::DataDir;
use numbers::FunctionNumbers;

/// When an acknowledged change is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// Answer after the change is synced to disk (fdatasync): survives power loss.
    #[default]
    Sync,
    /// Answer after the change is handed to the OS, sync in the background every 100 ms:
    /// survives a crash or `kill -9` of sai, but a power loss or kernel crash may lose the
    /// last ~100 ms of acknowledged changes.
    Buffered,
}

/// How often buffered mode syncs.
const BUFFERED_SYNC_MS: u16 = 100;

/// One thing loaded from the data directory.
#[derive(Debug)]
pub enum Loaded {
    /// An open invocation with its events and payload.
    Invocation(Invocation),
    /// A config.
    Config {
        /// Function.
        function: FunctionKey,
        /// Qualifier.
        qualifier: Arc<str>,
        /// The config.
        config: StoredConfig,
    },
    /// A (function, qualifier) that was invoked or configured.
    Function {
        /// Function.
        function: FunctionKey,
        /// Qualifier.
        qualifier: Arc<str>,
    },
}

/// Counts of what a load found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Open invocations loaded.
    pub invocations: usize,
    /// Configs loaded.
    pub configs: usize,
    /// Functions loaded.
    pub functions: usize,
    /// The last watch sequence number handed out before the restart.
    pub sequence: u64,
    /// Invocations found in an older format's layout and moved to the current one.
    pub migrated: usize,
    /// Entries of the open set whose invocation had ended, dropped from it.
    pub stale_open: usize,
}

/// Memtable size of the partitions every invocation writes (history, ids, open), as
/// RocksDB's default write buffer. A full memtable is written out as a new table and synced,
/// and while that happens the journal's syncs wait behind its writes at the device: with
/// fjall's default of 16 MiB, synced InvokeFunction throughput was 8% lower over 20 s runs.
/// The journal size bounds all memtables together (past it, fjall flushes those the oldest
/// journal holds) and what a restart replays.
const BULK_MEMTABLE_BYTES: u64 = 64 * 1024 * 1024;

/// Memtable size of the rarely written partitions.
const SMALL_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Data block size of the history. A get of a record outside the cache reads one data block
/// of the id index, then one of the history, and decodes part of each to find its entry.
/// Larger blocks compress better and make pages (range scans) fewer reads: 8 KiB keeps a
/// record under 200 B on disk.
const HISTORY_DATA_BLOCK_BYTES: u32 = 8 * 1024;

/// Data block size of the id index: its entries are ~35 bytes, so a block of fjall's default
/// 4 KiB holds over a hundred, searched to find one.
const IDS_DATA_BLOCK_BYTES: u32 = 1024;

/// Share of an id-index block's entries given a slot in the block's hash index, which finds a
/// key without a binary search over the block's restart points.
const IDS_HASH_RATIO: f32 = 0.75;

/// Tables of the id index are written at a quarter of fjall's default size (64 MiB). Writing a
/// table with a bloom filter buffers a hash of every key it holds until the table is done: at
/// 64 MiB of ~50-byte entries that was a transient ~20-40 MiB on every compaction.
const IDS_TABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Default block cache (`--block-cache-size`), shared by every partition: data blocks, and
/// the index and filter blocks, which are partitioned (see [`partition_options`]) so that a
/// table keeps only their top-level index in memory and what history costs in memory stays
/// small as it grows. It fills only
/// with blocks that reads load. Gets of records spread over a large history load an index and
/// a filter block of each partition they search besides the data blocks (at 100 M records an
/// estimated ~230 MB of such blocks), and a cache that keeps more of them made such a get ~8%
/// cheaper than a 32 MiB one did (BENCHMARKS.md).
pub const DEFAULT_BLOCK_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// How the data directory's partitions are created. fjall stores these options with a
/// partition when it creates it: a data directory keeps the block sizes it was created with.
fn partition_options(name: &str) -> KeyspaceCreateOptions {
    use fjall::config::{BlockSizePolicy, CompressionPolicy, HashRatioPolicy, PartitioningPolicy};
    // Compressed at every level: fjall leaves its first two levels uncompressed by default,
    // and an upgraded directory's records are ingested into its first level whole, where
    // 100 M records took 23 GB instead of 14.
    //
    // Indexes and filters partitioned at every level: a table then keeps only a small
    // top-level index of its index and filter blocks in memory and a get reads the one block
    // of each it needs through the block cache. Unpartitioned (fjall's default above its
    // fourth level), a table's whole filter is one block read per get once it falls out of
    // the cache: an upgraded 100 M directory's id index, ingested as tables of ~1 M keys,
    // took 7-9 ms of CPU per get loading such filters.
    let bulk = || {
        KeyspaceCreateOptions::default()
            .max_memtable_size(BULK_MEMTABLE_BYTES)
            .data_block_compression_policy(CompressionPolicy::all(fjall::CompressionType::Lz4))
            .index_block_partitioning_policy(PartitioningPolicy::all(true))
            .filter_block_partitioning_policy(PartitioningPolicy::all(true))
    };
    match name {
        // Bloom filters on every level of the history and its payloads but the last. Their
        // keys grow with started time, but the records of every busy function interleave in
        // every table, so a table's key range rarely rules a key out: without filters, a get
        // of a record in the last level loaded an index block and a data block of each level
        // above it first (2.5 tables per get at 100 M records of ten functions). A get only
        // asks for records the id index found, so the last level, where most records are,
        // needs no filter: the filters cost about a tenth of what they would on every level.
        "history" => bulk()
            .expect_point_read_hits(true)
            .data_block_size_policy(BlockSizePolicy::all(HISTORY_DATA_BLOCK_BYTES)),
        "history_payloads" => bulk().expect_point_read_hits(true),
        // The id index, whose keys are in no time order, keeps them: an invoke asks it for
        // every new id, which is almost never there.
        "ids" => bulk()
            .data_block_size_policy(BlockSizePolicy::all(IDS_DATA_BLOCK_BYTES))
            .data_block_hash_ratio_policy(HashRatioPolicy::all(IDS_HASH_RATIO))
            .compaction_strategy(Arc::new(
                fjall::compaction::Leveled::default().with_table_target_size(IDS_TABLE_BYTES),
            )),
        "open" => bulk(),
        _ => KeyspaceCreateOptions::default().max_memtable_size(SMALL_MEMTABLE_BYTES),
    }
}

/// The partitions of the database (fjall calls them keyspaces; see [`codec`] for their keys
/// and values).
#[derive(Clone)]
pub(crate) struct Partitions {
    /// Invocation records in list order.
    history: Keyspace,
    /// Large payloads, same keys; written once.
    history_payloads: Keyspace,
    /// Started time by (function, id).
    ids: Keyspace,
    /// The history keys of the invocations not yet terminal.
    open: Keyspace,
    /// Each function's number, by its names.
    function_numbers: Keyspace,
    /// Configs, keyed by function prefix + qualifier.
    configs: Keyspace,
    /// Known (function, qualifier) pairs, same keys, empty values.
    functions: Keyspace,
    /// The watch sequence, and where retention has got to in each function.
    meta: Keyspace,
}

impl Partitions {
    fn all(&self) -> [&Keyspace; 8] {
        [
            &self.history,
            &self.history_payloads,
            &self.ids,
            &self.open,
            &self.function_numbers,
            &self.configs,
            &self.functions,
            &self.meta,
        ]
    }
}

/// Partitions of older formats, read once to move what they hold, then dropped.
const LEGACY_PARTITIONS: [&str; 4] = ["records", "record_payloads", "invocations", "payloads"];

const SEQUENCE_KEY: &[u8] = b"sequence";

/// Open-set entries of ended invocations a start removes per batch: bounds what it holds
/// when a directory carries millions of them.
const STALE_OPEN_BATCH: usize = 10_000;

/// An open data directory, before or while it is loaded.
pub struct Persist {
    dir: DataDir,
    db: Database,
    partitions: Partitions,
    numbers: Arc<FunctionNumbers>,
    durability: Durability,
}

/// Journal files of fjall 3: `<n>.jnl` in the database's folder.
fn is_journal(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "jnl")
}

/// Open the fjall database at `path` with a block cache of `block_cache_bytes`, creating it if
/// it is new.
fn open_database(path: &Path, block_cache_bytes: u64) -> Result<Database, fjall::Error> {
    Database::builder(path)
        .cache_size(block_cache_bytes)
        // Bounds how much journal a restart replays.
        .max_journaling_size(64 * 1024 * 1024)
        // Uncompressed, so that every batch's mark stays readable in the journal for
        // [`journal_check`].
        .journal_compression(fjall::CompressionType::None)
        .open()
}

impl Persist {
    /// Open (creating if new) the data directory at `path`: takes its lock, checks its
    /// format, upgrades a directory of an older format, and recovers the database (a torn
    /// journal tail is dropped; other corruption is an error).
    pub fn open(path: &Path, durability: Durability) -> Result<Persist, PersistError> {
        Self::open_with(&DiskConfig::new(path, durability))
    }

    /// [`Persist::open`] as `config` says.
    pub fn open_with(config: &DiskConfig) -> Result<Persist, PersistError> {
        let (path, durability) = (config.dir.as_path(), config.durability);
        let dir = DataDir::open(path)?;
        upgrade::from_fjall_2(&dir, partition_options)?;
        let store = dir.store_path();
        let db = journal_check::recover_checked(&store, is_journal, || {
            open_database(&store, config.block_cache_bytes).map_err(|err| recovery_error(path, err))
        })?;
        let open = |name: &str| {
            db.keyspace(name, || partition_options(name))
                .map_err(|err| recovery_error(path, err))
        };
        let partitions = Partitions {
            history: open("history")?,
            history_payloads: open("history_payloads")?,
            ids: open("ids")?,
            open: open("open")?,
            function_numbers: open("function_numbers")?,
            configs: open("configs")?,
            functions: open("functions")?,
            meta: open("meta")?,
        };
        let numbers = Arc::new(FunctionNumbers::default());
        let mut decoder = Decoder::default();
        for item in partitions.function_numbers.iter() {
            let (key, value) = item.into_inner()?;
            let (function, _) =
                decoder
                    .function_and_rest(&key)
                    .map_err(|e| PersistError::Corrupt {
                        what: format!("function number key: {e}"),
                    })?;
            let number =
                codec::decode(&value, "function number").map_err(|e| PersistError::Corrupt {
                    what: format!("number of {}: {e}", function.function),
                })?;
            numbers.restore(function, number);
        }
        Ok(Persist {
            dir,
            db,
            partitions,
            numbers,
            durability,
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The key page tokens are signed with: made once, kept in the data directory so that
    /// tokens stay valid across restarts.
    pub fn page_key(&self) -> Result<[u8; 32], PersistError> {
        self.dir.secret("page-token.key")
    }

    /// Move what an older format left, then stream what a server needs to start into `sink`:
    /// configs and functions first, then the open invocations. Finished ones stay on disk.
    pub fn load(&self, mut sink: impl FnMut(Loaded)) -> Result<LoadSummary, PersistError> {
        let mut summary = LoadSummary {
            migrated: self.migrate()?,
            ..LoadSummary::default()
        };
        let mut decoder = Decoder::default();
        let corrupt = |what: String| PersistError::Corrupt { what };
        let p = &self.partitions;

        for item in p.configs.iter() {
            let (key, value) = item.into_inner()?;
            let (function, qualifier) = decoder
                .function_and_rest(&key)
                .map_err(|e| corrupt(format!("config key: {e}")))?;
            let qualifier = decoder.qualifier(qualifier);
            let config = codec::decode(&value, "config")
                .map_err(|e| corrupt(format!("config of {}: {e}", function.function)))?;
            summary.configs += 1;
            sink(Loaded::Config {
                function,
                qualifier,
                config,
            });
        }
        for item in p.functions.iter() {
            let key = item.key()?;
            let (function, qualifier) = decoder
                .function_and_rest(&key)
                .map_err(|e| corrupt(format!("function key: {e}")))?;
            let qualifier = decoder.qualifier(qualifier);
            summary.functions += 1;
            sink(Loaded::Function {
                function,
                qualifier,
            });
        }
        let reader = self.reader();
        let mut stale = Vec::new();
        let drop_stale = |stale: &mut Vec<fjall::Slice>| -> Result<(), PersistError> {
            let mut batch = self
                .db
                .batch()
                .durability(Some(fjall::PersistMode::SyncData));
            for key in stale.drain(..) {
                batch.remove(&p.open, key);
            }
            batch.commit()?;
            Ok(())
        };
        for item in p.open.iter() {
            let key = item.key()?;
            let value = p
                .history
                .get(&key)?
                .ok_or_else(|| corrupt(format!("open invocation {key:?} has no record")))?;
            let invocation = reader.decode(&key, &value, Detail::Full)?;
            // The record is what counts: loading an ended invocation would hold a finished
            // record in memory as if it were open. Earlier builds' compactions of the open
            // set brought deleted entries back (see `writer::compact_open`), and directories
            // they wrote still carry them.
            if invocation.status.is_terminal() {
                summary.stale_open += 1;
                stale.push(key);
                if stale.len() == STALE_OPEN_BATCH {
                    drop_stale(&mut stale)?;
                }
                continue;
            }
            summary.invocations += 1;
            sink(Loaded::Invocation(invocation));
        }
        if !stale.is_empty() {
            drop_stale(&mut stale)?;
        }
        if summary.stale_open > 0 {
            tracing::warn!(
                entries = summary.stale_open,
                "dropped entries of ended invocations from the open set"
            );
        }

        summary.sequence = match p.meta.get(SEQUENCE_KEY)? {
            Some(bytes) => codec::decode(&bytes, "sequence")
                .map_err(|e| corrupt(format!("watch sequence: {e}")))?,
            None => 0,
        };
        Ok(summary)
    }

    /// Move the invocations of formats 1 to 3 to the current layout, in atomic batches that
    /// also delete them from the old partitions, so that a move cut short leaves every
    /// invocation in exactly one place and the next start moves the rest. Returns how many
    /// were moved.
    fn migrate(&self) -> Result<usize, PersistError> {
        let names: Vec<&str> = LEGACY_PARTITIONS
            .into_iter()
            .filter(|name| self.db.keyspace_exists(name))
            .collect();
        if names.is_empty() {
            return Ok(0);
        }
        let legacy = |name: &str| self.db.keyspace(name, || partition_options(name));
        let (records, record_payloads) = (legacy("records")?, legacy("record_payloads")?);
        let (invocations, payloads) = (legacy("invocations")?, legacy("payloads")?);
        let corrupt = |what: String| PersistError::Corrupt { what };
        let mut decoder = Decoder::default();
        let mut migration = Migration::new(&self.db, &self.partitions, &self.numbers);
        for item in with_payloads(&records, &record_payloads) {
            let (key, value, apart) = item?;
            let invocation = decoder
                .format_3(&value, || apart)
                .map_err(|e| corrupt(format!("invocation record {key:?}: {e}")))?;
            migration.move_record(&invocation, [(&records, &key), (&record_payloads, &key)])?;
        }
        for item in with_payloads(&invocations, &payloads) {
            let (key, value, apart) = item?;
            let invocation = decoder
                .format_2(&key, &value, || apart)
                .map_err(|e| corrupt(format!("invocation {key:?}: {e}")))?;
            migration.move_record(&invocation, [(&invocations, &key), (&payloads, &key)])?;
        }
        let moved = migration.finish()?;
        for handle in [records, record_payloads, invocations, payloads] {
            self.db.delete_keyspace(handle)?;
        }
        Ok(moved)
    }

    /// A reader of stored records.
    pub fn reader(&self) -> Reader {
        Reader::new(
            self.db.clone(),
            self.partitions.clone(),
            self.numbers.clone(),
        )
    }

    /// Start the writer: from now on changes are written through the returned journal.
    pub fn into_journal(self) -> Journal {
        Journal::start(
            self.dir,
            self.db,
            self.partitions,
            self.numbers,
            self.durability,
        )
    }
}

/// A stored record's key and value, and its payload kept apart (empty when there is none).
type WithPayload = (fjall::Slice, fjall::Slice, Result<Arc<str>, DecodeError>);

/// Each record of `records` with its payload from `payloads` when kept apart there (the two
/// partitions share keys, so one ordered pass over each pairs them); a record holding its
/// payload never looks.
fn with_payloads<'p>(
    records: &'p Keyspace,
    payloads: &'p Keyspace,
) -> impl Iterator<Item = Result<WithPayload, PersistError>> + 'p {
    let mut payloads = payloads.iter().map(|item| item.into_inner()).peekable();
    records.iter().map(move |item| {
        let (key, value) = item.into_inner()?;
        // As before format 2: a record without its payload and none apart has an empty one.
        let mut apart = Ok("".into());
        while let Some(next) = payloads.peek() {
            let Ok((payload_key, _)) = next else {
                // Surface the error through `next`.
                payloads.next().transpose()?;
                continue;
            };
            match payload_key.as_ref().cmp(key.as_ref()) {
                std::cmp::Ordering::Less => {
                    payloads.next();
                }
                std::cmp::Ordering::Equal => {
                    if let Some(Ok((_, bytes))) = payloads.next() {
                        apart = std::str::from_utf8(&bytes)
                            .map(Arc::from)
                            .map_err(|_| DecodeError::new("its payload is not UTF-8"));
                    }
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok((key, value, apart))
    })
}

/// Moves older formats' invocations to the current layout, a batch at a time.
struct Migration<'p> {
    db: &'p Database,
    partitions: &'p Partitions,
    numbers: &'p Arc<FunctionNumbers>,
    batch: Option<fjall::OwnedWriteBatch>,
    moved: usize,
}

impl<'p> Migration<'p> {
    /// Invocations moved per batch.
    const BATCH: usize = 1_000;

    fn new(
        db: &'p Database,
        partitions: &'p Partitions,
        numbers: &'p Arc<FunctionNumbers>,
    ) -> Self {
        Migration {
            db,
            partitions,
            numbers,
            batch: None,
            moved: 0,
        }
    }

    /// Write `invocation` in the current layout and delete its `old` entries, in the current
    /// batch.
    fn move_record(
        &mut self,
        invocation: &Invocation,
        old: [(&Keyspace, &fjall::Slice); 2],
    ) -> Result<(), PersistError> {
        let p = self.partitions;
        let batch = self.batch.get_or_insert_with(|| {
            let mut batch = self.db.batch().durability(None);
            batch.insert(&p.meta, writer::BATCH_KEY, writer::BATCH_MARK.as_slice());
            batch
        });
        let mut writes = WriteSet::new(self.numbers.clone());
        writes.put_moved(invocation);
        // The batch's commit makes the number durable before anything else uses it.
        writes.written();
        for op in std::mem::take(&mut writes.ops) {
            match op {
                Op::Put(part, key, value) => batch.insert(partition(p, part), key, value),
                Op::Delete(part, key) => batch.remove(partition(p, part), key),
            }
        }
        for (handle, key) in old {
            batch.remove(handle, key.clone());
        }
        self.moved += 1;
        if self.moved.is_multiple_of(Self::BATCH) {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), PersistError> {
        if let Some(batch) = self.batch.take() {
            batch.commit()?;
        }
        Ok(())
    }

    /// Write the last batch and sync, so that the move is on disk before anything new is.
    fn finish(mut self) -> Result<usize, PersistError> {
        self.commit()?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(self.moved)
    }
}

/// The partition a write goes to.
fn partition(partitions: &Partitions, part: Part) -> &Keyspace {
    match part {
        Part::History => &partitions.history,
        Part::HistoryPayloads => &partitions.history_payloads,
        Part::Ids => &partitions.ids,
        Part::Open => &partitions.open,
        Part::FunctionNumbers => &partitions.function_numbers,
        Part::Configs => &partitions.configs,
        Part::Functions => &partitions.functions,
        Part::Meta => &partitions.meta,
    }
}

fn recovery_error(path: &Path, err: fjall::Error) -> PersistError {
    match err {
        fjall::Error::JournalRecovery(_)
        | fjall::Error::InvalidVersion(_)
        | fjall::Error::InvalidTrailer
        | fjall::Error::InvalidTag(_)
        | fjall::Error::Decompress(_)
        | fjall::Error::Unrecoverable => PersistError::Corrupt {
            what: format!("{}: {err}", path.display()),
        },
        other => PersistError::Engine(other),
    }
}

/// The writes of one commit, encoded and ready for the writer.
#[derive(Debug)]
pub struct WriteSet {
    ops: Vec<Op>,
    numbers: Arc<FunctionNumbers>,
    /// Function numbers whose entries this write set carries, not yet durable.
    unwritten: Vec<Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(Debug)]
enum Op {
    Put(Part, Vec<u8>, Vec<u8>),
    Delete(Part, Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    History,
    HistoryPayloads,
    Ids,
    Open,
    FunctionNumbers,
    Configs,
    Functions,
    Meta,
}

impl WriteSet {
    /// An empty write set numbering functions with `numbers`.
    fn new(numbers: Arc<FunctionNumbers>) -> Self {
        WriteSet {
            ops: Vec::new(),
            numbers,
            unwritten: Vec::new(),
        }
    }

    /// The writes are durable: so are the function numbers they carried.
    pub(crate) fn written(&self) {
        for flag in &self.unwritten {
            flag.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// The number of `function`, with its entry written here until one is durable.
    fn number(&mut self, function: &FunctionKey) -> u32 {
        let assigned = self.numbers.assign(function);
        if let Some(flag) = assigned.unwritten {
            self.ops.push(Op::Put(
                Part::FunctionNumbers,
                codec::function_prefix(function),
                codec::encode(&assigned.number),
            ));
            self.unwritten.push(flag);
        }
        assigned.number
    }

    /// The key of `invocation`'s record.
    fn history_key(&mut self, invocation: &Invocation) -> (u32, Vec<u8>) {
        let number = self.number(&invocation.key.function);
        (
            number,
            codec::history_key(number, invocation.started_time_ms, &invocation.key.id),
        )
    }

    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Encoded size of the writes.
    pub fn encoded_len(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put(_, key, value) => key.len() + value.len(),
                Op::Delete(_, key) => key.len(),
            })
            .sum()
    }

    /// Store a newly accepted invocation, with its payload, findable by id, and open.
    pub fn put_accepted(&mut self, invocation: &Invocation) {
        let (number, key) = self.history_key(invocation);
        if !codec::payload_is_inline(&invocation.payload) {
            self.ops.push(Op::Put(
                Part::HistoryPayloads,
                key.clone(),
                invocation.payload.as_bytes().to_vec(),
            ));
        }
        if codec::has_id_entry(&invocation.key.id, invocation.started_time_ms) {
            self.ops.push(Op::Put(
                Part::Ids,
                codec::id_key(number, &invocation.key.id),
                codec::encode(&invocation.started_time_ms),
            ));
        }
        self.ops.push(Op::Put(Part::Open, key.clone(), Vec::new()));
        self.put_record(key, invocation);
    }

    /// Store an invocation moved from an older format: as accepted, but open only if it is.
    fn put_moved(&mut self, invocation: &Invocation) {
        self.put_accepted(invocation);
        if invocation.status.is_terminal() {
            self.ops
                .retain(|op| !matches!(op, Op::Put(Part::Open, _, _)));
        }
    }

    /// Store an invocation's current state (a large payload, kept apart, is not rewritten);
    /// once it is terminal, it is no longer open.
    pub fn put_invocation(&mut self, invocation: &Invocation) {
        let (_, key) = self.history_key(invocation);
        if invocation.status.is_terminal() {
            self.ops.push(Op::Delete(Part::Open, key.clone()));
        }
        self.put_record(key, invocation);
    }

    fn put_record(&mut self, key: Vec<u8>, invocation: &Invocation) {
        let value = codec::encode_record(invocation);
        // A dispatch writes Dequeued then Running for the same record back to back: only
        // the last state needs storing.
        if let Some(Op::Put(Part::History, last_key, last_value)) = self.ops.last_mut() {
            if *last_key == key {
                *last_value = value;
                return;
            }
        }
        self.ops.push(Op::Put(Part::History, key, value));
    }

    /// Remove an invocation: its record, its payload if kept apart, its id, and its entry in
    /// the open set unless it is terminal (its end deleted that already).
    pub fn delete_invocation(&mut self, invocation: &Invocation) {
        let (number, key) = self.history_key(invocation);
        if !codec::payload_is_inline(&invocation.payload) {
            self.ops
                .push(Op::Delete(Part::HistoryPayloads, key.clone()));
        }
        if codec::has_id_entry(&invocation.key.id, invocation.started_time_ms) {
            self.ops.push(Op::Delete(
                Part::Ids,
                codec::id_key(number, &invocation.key.id),
            ));
        }
        // Retention removes many records a second: a marker for each in the open set, whose
        // entry is long gone, would only give its compactor more to drop.
        if !invocation.status.is_terminal() {
            self.ops.push(Op::Delete(Part::Open, key.clone()));
        }
        self.ops.push(Op::Delete(Part::History, key));
    }

    /// Store a config.
    pub fn put_config(&mut self, function: &FunctionKey, qualifier: &str, config: &StoredConfig) {
        let key = codec::function_key(function, qualifier);
        self.ops
            .push(Op::Put(Part::Configs, key, codec::encode(config)));
    }

    /// Remove a config.
    pub fn delete_config(&mut self, function: &FunctionKey, qualifier: &str) {
        self.ops.push(Op::Delete(
            Part::Configs,
            codec::function_key(function, qualifier),
        ));
    }

    /// Record a (function, qualifier) as known.
    pub fn put_function(&mut self, function: &FunctionKey, qualifier: &str) {
        self.ops.push(Op::Put(
            Part::Functions,
            codec::function_key(function, qualifier),
            Vec::new(),
        ));
    }

    /// Record where `function`'s kept records begin: retention has purged every record before
    /// `floor`, or purges it in this same write set.
    pub fn put_retention_floor(&mut self, function: &FunctionKey, floor: reader::Position<'_>) {
        let number = self.number(function);
        self.ops.push(Op::Put(
            Part::Meta,
            codec::retention_floor_key(number),
            codec::encode_floor(floor),
        ));
    }

    /// Record the last watch sequence number handed out.
    pub fn put_sequence(&mut self, sequence: u64) {
        self.ops.push(Op::Put(
            Part::Meta,
            SEQUENCE_KEY.to_vec(),
            codec::encode(&sequence),
        ));
    }
}

/// Where a data directory lives and how it syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The data directory.
    pub dir: PathBuf,
    /// When acknowledged changes are on disk.
    pub durability: Durability,
    /// Bytes of the storage engine's block cache.
    pub block_cache_bytes: u64,
}

impl DiskConfig {
    /// The data directory at `dir` with `durability` and the default block cache.
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> Self {
        DiskConfig {
            dir: dir.into(),
            durability,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Change;

    fn open(dir: &Path) -> Persist {
        Persist::open(dir, Durability::Sync).expect("open the data directory")
    }

    /// Ids of the invocations a load hands over, and its summary.
    fn load(dir: &Path) -> (Vec<String>, LoadSummary) {
        let mut loaded = Vec::new();
        let summary = open(dir)
            .load(|item| {
                if let Loaded::Invocation(invocation) = item {
                    loaded.push(invocation.key.id.to_string());
                }
            })
            .expect("load");
        (loaded, summary)
    }

    /// Write what `fill` puts in one write set to the directory at `dir`, durably.
    fn commit(dir: &Path, fill: impl FnOnce(&mut WriteSet)) {
        let journal = open(dir).into_journal();
        let mut writes = journal.write_set();
        fill(&mut writes);
        let ticket = journal.submit(writes, Box::new(|| {})).expect("submit");
        journal.close().expect("close");
        assert!(matches!(ticket.blocking_recv(), Ok(Ok(()))));
    }

    #[test]
    fn an_ended_invocation_listed_as_open_is_not_loaded_and_leaves_the_open_set() {
        let dir = tempfile::tempdir().expect("temp dir");
        let function = FunctionKey::new("acct", "svc", "fn");
        let queued =
            Invocation::accept(function.invocation("queued"), "LATEST", "q".into(), "r1", 5);
        let mut ended =
            Invocation::accept(function.invocation("ended"), "LATEST", "e".into(), "r2", 5);
        ended
            .apply(&Change::Stop, 6)
            .expect("stop a queued invocation");
        assert!(ended.status.is_terminal());

        // What a compaction that brings back a deleted entry leaves: the ended record with
        // its key in the open set.
        commit(dir.path(), |writes| {
            writes.put_accepted(&queued);
            writes.put_accepted(&ended);
        });

        let (loaded, summary) = load(dir.path());
        assert_eq!(loaded, ["queued"]);
        assert_eq!((summary.invocations, summary.stale_open), (1, 1));
        let (loaded, summary) = load(dir.path());
        assert_eq!(loaded, ["queued"]);
        assert_eq!((summary.invocations, summary.stale_open), (1, 0));
        let record = open(dir.path())
            .reader()
            .get(&function.invocation("ended"))
            .expect("read")
            .expect("the ended record is kept");
        assert_eq!(record.status, ended.status);
    }

    #[test]
    fn removing_an_ended_invocation_leaves_the_open_set_alone_and_an_open_one_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = open(dir.path()).into_journal();
        let function = FunctionKey::new("acct", "svc", "fn");
        let mut ended =
            Invocation::accept(function.invocation("ended"), "LATEST", "e".into(), "r", 5);
        let queued =
            Invocation::accept(function.invocation("queued"), "LATEST", "q".into(), "r", 5);
        ended.apply(&Change::Stop, 6).expect("stop");
        let open_deletes = |invocation: &Invocation| {
            let mut writes = journal.write_set();
            writes.delete_invocation(invocation);
            writes
                .ops
                .iter()
                .filter(|op| matches!(op, Op::Delete(Part::Open, _)))
                .count()
        };
        assert_eq!((open_deletes(&ended), open_deletes(&queued)), (0, 1));
        journal.close().expect("close");
    }

    #[test]
    fn an_id_carrying_its_started_time_needs_no_id_entry_and_any_other_id_has_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let function = FunctionKey::new("acct", "svc", "fn");
        let started = 1_700_000_000_000;
        let generated_id = crate::model::id::time_ordered(started, [1; 16]);
        // An id whose time is not its record's started time is found through the id index.
        let other_time_id = crate::model::id::time_ordered(started - 60_000, [2; 16]);
        let mut written = Vec::new();
        for id in [generated_id.as_str(), &other_time_id, "job-1"] {
            let mut invocation =
                Invocation::accept(function.invocation(id), "LATEST", "p".into(), "r", started);
            invocation.apply(&Change::Stop, started + 1).expect("stop");
            written.push(invocation);
        }
        let write = |each: &dyn Fn(&mut WriteSet, &Invocation)| {
            commit(dir.path(), |writes| {
                for invocation in &written {
                    each(writes, invocation);
                }
            });
        };
        write(&|writes, invocation| writes.put_accepted(invocation));

        let persist = open(dir.path());
        let reader = persist.reader();
        let get = |id: &str| reader.get(&function.invocation(id)).expect("read");
        let contains = |id: &str| reader.contains(&function.invocation(id)).expect("read");
        for invocation in &written {
            assert_eq!(get(&invocation.key.id).as_ref(), Some(invocation));
            assert!(contains(&invocation.key.id));
        }
        let unknown = crate::model::id::time_ordered(started, [3; 16]);
        assert_eq!(get(&unknown), None);
        assert!(!contains(&unknown));
        let id_entries = || {
            persist
                .partitions
                .ids
                .iter()
                .map(|entry| {
                    let key = entry.key().expect("read an id entry");
                    String::from_utf8(key[4..].to_vec()).expect("an id is UTF-8")
                })
                .collect::<Vec<_>>()
        };
        let mut expected = vec![other_time_id.clone(), "job-1".to_string()];
        expected.sort();
        assert_eq!(id_entries(), expected, "only ids that do not say where");
        drop((reader, persist));

        write(&|writes, invocation| writes.delete_invocation(invocation));
        let persist = open(dir.path());
        let reader = persist.reader();
        for invocation in &written {
            let key = &invocation.key;
            assert_eq!(reader.get(key).expect("read"), None);
            assert!(!reader.contains(key).expect("read"));
        }
        assert_eq!(persist.partitions.ids.iter().count(), 0);
    }

    #[test]
    fn block_loads_say_whether_a_read_came_from_a_table_file_or_the_block_cache() {
        let dir = tempfile::tempdir().expect("temp dir");
        let function = FunctionKey::new("acct", "svc", "fn");
        let started = 1_700_000_000_000;
        let id = crate::model::id::time_ordered(started, [1; 16]);
        let mut ended =
            Invocation::accept(function.invocation(&id), "LATEST", "p".into(), "r", started);
        ended.apply(&Change::Stop, started + 1).expect("stop");
        commit(dir.path(), |writes| writes.put_accepted(&ended));

        let persist = open(dir.path());
        // From the journal's memtable into a table, which reads load blocks of.
        persist
            .partitions
            .history
            .rotate_memtable_and_wait()
            .expect("flush the history");
        let reader = persist.reader();
        let get = || {
            let before = reader.block_loads();
            let record = reader.get(&ended.key).expect("read");
            assert_eq!(record.as_ref(), Some(&ended));
            let after = reader.block_loads();
            (
                after.data.file - before.data.file,
                after.data.cache - before.data.cache,
            )
        };
        assert_eq!(
            get(),
            (1, 0),
            "the first read loads its block from the file"
        );
        assert_eq!(get(), (0, 1), "the second finds it in the block cache");
    }
}
