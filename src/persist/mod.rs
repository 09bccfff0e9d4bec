//! Durability behind the store: every committed change is written to an embedded fjall
//! keyspace in the data directory before the RPC that made it is answered, and everything is
//! loaded back on start. The in-memory store stays the serving store; reads never touch disk.
//!
//! Why fjall: an LSM keyspace with atomic cross-partition batches, a checksummed journal that
//! tolerates a torn tail (and refuses other corruption), and explicit sync modes; it saves
//! writing and proving a log format and its compaction. One writer thread drains whatever
//! commits are waiting, writes them as one batch, syncs once, and acknowledges them all
//! (group commit): see [`writer`].

mod codec;
mod error;
mod journal_check;
mod layout;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle};

use crate::model::{FunctionKey, Invocation, StoredConfig};

pub use codec::DecodeError;
pub use error::PersistError;
pub use layout::FORMAT_VERSION;
pub use writer::{Journal, Ticket};

use codec::Decoder;
use journal_check::JournalCheck;
use layout::DataDir;

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
    /// An invocation with its events and payload.
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
    /// Invocations loaded.
    pub invocations: usize,
    /// Configs loaded.
    pub configs: usize,
    /// Functions loaded.
    pub functions: usize,
    /// The last watch sequence number handed out before the restart.
    pub sequence: u64,
    /// The highest record number stored: the next record takes the one after it.
    pub last_record_number: u64,
    /// Invocations found in the format-1/2 layout and moved under record numbers.
    pub migrated: usize,
}

/// Memtable size of the partitions every invocation writes (records, large payloads), as
/// RocksDB's default write buffer. A full memtable is written out as a new table and synced,
/// and while that happens the journal's syncs wait behind its writes at the device: with
/// fjall's default of 16 MiB, synced InvokeFunction throughput was 8% lower over 20 s runs
/// (27.5k vs 29.8k/s, 4 alternating pairs; BENCHMARKS.md). The keyspace's write buffer
/// (64 MiB) still bounds all memtables together, and the journal size bounds replay. fjall
/// keeps a partition's options from its creation, so directories made before this setting
/// keep 16 MiB.
const BULK_MEMTABLE_BYTES: u32 = 64 * 1024 * 1024;

/// Memtable size of the rarely written partitions (fjall's default).
const SMALL_MEMTABLE_BYTES: u32 = 16 * 1024 * 1024;

/// The partitions of the keyspace.
#[derive(Clone)]
struct Partitions {
    /// Invocation records (with their payload if it is small), keyed by record number.
    records: PartitionHandle,
    /// Large invocation payloads, same keys; written once.
    record_payloads: PartitionHandle,
    /// Formats 1 and 2: invocation records keyed by function prefix + id; emptied on open.
    invocations: PartitionHandle,
    /// Formats 1 and 2: payloads kept apart, same keys; emptied on open.
    payloads: PartitionHandle,
    /// Configs, keyed by function prefix + qualifier.
    configs: PartitionHandle,
    /// Known (function, qualifier) pairs, same keys, empty values.
    functions: PartitionHandle,
    /// Counters: the watch sequence.
    meta: PartitionHandle,
}

const SEQUENCE_KEY: &[u8] = b"sequence";

/// An open data directory, before or while it is loaded.
pub struct Persist {
    dir: DataDir,
    keyspace: Keyspace,
    partitions: Partitions,
    durability: Durability,
}

impl Persist {
    /// Open (creating if new) the data directory at `path`: takes its lock, checks its
    /// format, and recovers the keyspace (a torn journal tail is dropped; other corruption
    /// is an error).
    pub fn open(path: &Path, durability: Durability) -> Result<Persist, PersistError> {
        let dir = DataDir::open(path)?;
        let mut config = Config::new(dir.db_path())
            // Bounds how much journal a restart replays.
            .max_journaling_size(64 * 1024 * 1024)
            .max_write_buffer_size(64 * 1024 * 1024);
        if durability == Durability::Buffered {
            config = config.fsync_ms(Some(BUFFERED_SYNC_MS));
        }
        let check = JournalCheck::before_open(&dir.db_path())?;
        let keyspace = config.open().map_err(|err| recovery_error(path, err))?;
        if let Some(damage) = check.damage()? {
            drop(keyspace);
            check.restore()?;
            return Err(damage);
        }
        drop(check);
        let open = |name: &str, memtable_bytes: u32| {
            let options = PartitionCreateOptions::default().max_memtable_size(memtable_bytes);
            keyspace
                .open_partition(name, options)
                .map_err(|err| recovery_error(path, err))
        };
        let partitions = Partitions {
            records: open("records", BULK_MEMTABLE_BYTES)?,
            record_payloads: open("record_payloads", BULK_MEMTABLE_BYTES)?,
            invocations: open("invocations", SMALL_MEMTABLE_BYTES)?,
            payloads: open("payloads", SMALL_MEMTABLE_BYTES)?,
            configs: open("configs", SMALL_MEMTABLE_BYTES)?,
            functions: open("functions", SMALL_MEMTABLE_BYTES)?,
            meta: open("meta", SMALL_MEMTABLE_BYTES)?,
        };
        Ok(Persist {
            dir,
            keyspace,
            partitions,
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

    /// Stream everything stored into `sink`: configs and functions first, then invocations.
    pub fn load(&self, mut sink: impl FnMut(Loaded)) -> Result<LoadSummary, PersistError> {
        let mut decoder = Decoder::default();
        let mut summary = LoadSummary::default();
        let corrupt = |what: String| PersistError::Corrupt { what };
        let p = &self.partitions;

        for item in p.configs.iter() {
            let (key, value) = item?;
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
            let (key, _) = item?;
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

        for item in with_payloads(&p.records, &p.record_payloads) {
            let (key, value, apart) = item?;
            let number = codec::record_number(&key)
                .map_err(|e| corrupt(format!("invocation record {key:?}: {e}")))?;
            let mut invocation = decoder
                .record(&value, || apart)
                .map_err(|e| corrupt(format!("invocation record {number}: {e}")))?;
            invocation.record_number = number;
            summary.last_record_number = summary.last_record_number.max(number);
            summary.invocations += 1;
            sink(Loaded::Invocation(invocation));
        }

        // Formats 1 and 2 keyed invocations by function and id: each is moved under the next
        // record number as it loads, in atomic batches that also delete it from the old
        // partitions, so that a crash part way leaves every invocation in exactly one place
        // and the next start moves the rest.
        let mut migration = Migration::new(&self.keyspace, p);
        for item in with_payloads(&p.invocations, &p.payloads) {
            let (key, value, apart) = item?;
            let mut invocation = decoder
                .invocation(&key, &value, || apart)
                .map_err(|e| corrupt(format!("invocation {key:?}: {e}")))?;
            summary.last_record_number += 1;
            invocation.record_number = summary.last_record_number;
            migration.move_record(&key, &invocation)?;
            summary.invocations += 1;
            summary.migrated += 1;
            sink(Loaded::Invocation(invocation));
        }
        migration.finish()?;

        summary.sequence = match p.meta.get(SEQUENCE_KEY)? {
            Some(bytes) => codec::decode(&bytes, "sequence")
                .map_err(|e| corrupt(format!("watch sequence: {e}")))?,
            None => 0,
        };
        Ok(summary)
    }

    /// Start the writer: from now on changes are written through the returned journal.
    pub fn into_journal(self) -> Journal {
        Journal::start(self.dir, self.keyspace, self.partitions, self.durability)
    }
}

/// A stored record's key and value, and its payload kept apart (empty when there is none).
type WithPayload = (fjall::Slice, fjall::Slice, Result<Arc<str>, DecodeError>);

/// Each record of `records` with its payload from `payloads` when kept apart there (the two
/// partitions share keys, so one ordered pass over each pairs them); a record holding its
/// payload never looks.
fn with_payloads<'p>(
    records: &'p PartitionHandle,
    payloads: &'p PartitionHandle,
) -> impl Iterator<Item = Result<WithPayload, PersistError>> + 'p {
    let mut payloads = payloads.iter().peekable();
    records.iter().map(move |item| {
        let (key, value) = item?;
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

/// Moves format-1/2 invocations under record numbers, a batch at a time.
struct Migration<'p> {
    keyspace: &'p Keyspace,
    partitions: &'p Partitions,
    batch: Option<fjall::Batch>,
    moved: usize,
}

impl<'p> Migration<'p> {
    /// Invocations moved per batch.
    const BATCH: usize = 1_000;

    fn new(keyspace: &'p Keyspace, partitions: &'p Partitions) -> Self {
        Migration {
            keyspace,
            partitions,
            batch: None,
            moved: 0,
        }
    }

    /// Write `invocation` (loaded from `old_key`) under its record number and delete it
    /// from the old partitions, in the current batch.
    fn move_record(&mut self, old_key: &[u8], invocation: &Invocation) -> Result<(), PersistError> {
        let p = self.partitions;
        let batch = self.batch.get_or_insert_with(|| {
            let mut batch = self.keyspace.batch().durability(None);
            batch.insert(&p.meta, writer::BATCH_KEY, writer::BATCH_MARK.as_slice());
            batch
        });
        let mut writes = WriteSet::default();
        writes.put_accepted(invocation);
        for op in writes.ops {
            if let Op::Put(part, key, value) = op {
                batch.insert(partition(p, part), key, value);
            }
        }
        batch.remove(&p.invocations, old_key);
        batch.remove(&p.payloads, old_key);
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
    fn finish(mut self) -> Result<(), PersistError> {
        self.commit()?;
        if self.moved > 0 {
            self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        }
        Ok(())
    }
}

/// The partition a write goes to.
fn partition(partitions: &Partitions, part: Part) -> &PartitionHandle {
    match part {
        Part::Records => &partitions.records,
        Part::RecordPayloads => &partitions.record_payloads,
        Part::Configs => &partitions.configs,
        Part::Functions => &partitions.functions,
        Part::Meta => &partitions.meta,
    }
}

fn recovery_error(path: &Path, err: fjall::Error) -> PersistError {
    match err {
        fjall::Error::JournalRecovery(_)
        | fjall::Error::InvalidVersion(_)
        | fjall::Error::Decode(_) => PersistError::Corrupt {
            what: format!("{}: {err}", path.display()),
        },
        other => PersistError::Engine(other),
    }
}

/// The writes of one commit, encoded and ready for the writer.
#[derive(Debug, Default)]
pub struct WriteSet {
    ops: Vec<Op>,
}

#[derive(Debug)]
enum Op {
    Put(Part, Vec<u8>, Vec<u8>),
    Delete(Part, Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Records,
    RecordPayloads,
    Configs,
    Functions,
    Meta,
}

impl WriteSet {
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

    /// Store a newly accepted invocation, with its payload.
    pub fn put_accepted(&mut self, invocation: &Invocation) {
        let key = codec::record_key(invocation);
        if !codec::payload_is_inline(&invocation.payload) {
            self.ops.push(Op::Put(
                Part::RecordPayloads,
                key.clone(),
                invocation.payload.as_bytes().to_vec(),
            ));
        }
        self.put_record(key, invocation);
    }

    /// Store an invocation's current state (a large payload, kept apart, is not rewritten).
    pub fn put_invocation(&mut self, invocation: &Invocation) {
        self.put_record(codec::record_key(invocation), invocation);
    }

    fn put_record(&mut self, key: Vec<u8>, invocation: &Invocation) {
        let value = codec::encode_record(invocation);
        // A dispatch writes Dequeued then Running for the same record back to back: only
        // the last state needs storing.
        if let Some(Op::Put(Part::Records, last_key, last_value)) = self.ops.last_mut() {
            if *last_key == key {
                *last_value = value;
                return;
            }
        }
        self.ops.push(Op::Put(Part::Records, key, value));
    }

    /// Remove an invocation and its payload if that is kept apart.
    pub fn delete_invocation(&mut self, invocation: &Invocation) {
        let key = codec::record_key(invocation);
        if !codec::payload_is_inline(&invocation.payload) {
            self.ops.push(Op::Delete(Part::RecordPayloads, key.clone()));
        }
        self.ops.push(Op::Delete(Part::Records, key));
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
}
