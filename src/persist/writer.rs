//! The single writer: group commit.
//!
//! Commits are submitted in commit order (the store submits under its commit lock). The
//! writer thread takes the first waiting submission and every one queued behind it, writes
//! them as one atomic batch and syncs once (sync mode); what arrives meanwhile forms the next
//! group, so under load the sync's own length sets the group size and a quiet server syncs
//! each commit at once. Then, in order, each submission's `on_durable` runs (the store
//! publishes its events to watchers there, so a watcher never sees a change a crash could take
//! back) and it is acknowledged. A failed write poisons the journal: every later submission is
//! refused, because memory and disk no longer agree; a restart recovers from disk.
//!
//! The group is acknowledged by a task on the async runtime, not by this thread: waking the
//! waiting requests from a runtime worker puts them on that worker's own queue, where one
//! wake-up from this thread per request would otherwise be needed.
//!
//! There is no fixed wait for more commits before a sync (PostgreSQL's `commit_delay`): it
//! saved syncs but lengthened every call while the runtime sat a third idle, and end-to-end
//! throughput did not gain from it once acknowledging moved to the runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Database, PersistMode};
use parking_lot::Mutex;
use tokio::sync::oneshot;

pub(super) use super::journal_check::BATCH_MARK;
use super::layout::DataDir;
use super::numbers::FunctionNumbers;
use super::{partition, Durability, Op, Part, Partitions, PersistError, WriteSet};

/// Most commits written as one batch.
const MAX_GROUP: usize = 4_096;

/// Most encoded bytes in one batch (a single larger commit still goes alone): bounds the
/// latency of one write and what a torn tail can hold.
pub const MAX_GROUP_BYTES: usize = 1024 * 1024;

/// The meta key every batch writes its [`BATCH_MARK`] under.
pub(super) const BATCH_KEY: &[u8] = b"batch";

/// What runs once a submission is durable, in commit order: on the acknowledging task (on
/// the writer thread when the journal was started outside a runtime).
pub type OnDurable = Box<dyn FnOnce() + Send>;

/// Resolves when a submission is durable (or its write failed).
pub type Ticket = oneshot::Receiver<Result<(), Arc<PersistError>>>;

struct Submission {
    writes: WriteSet,
    bytes: usize,
    on_durable: OnDurable,
    ack: oneshot::Sender<Result<(), Arc<PersistError>>>,
}

/// The handle to the writer thread.
pub struct Journal {
    sender: Option<mpsc::Sender<Submission>>,
    thread: Option<JoinHandle<()>>,
    /// Dropped to stop the compactor of the open set; its thread.
    compactor: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Dropped to stop the periodic sync of buffered mode; its thread.
    syncer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    failed: Arc<AtomicBool>,
    /// When the group being written was handed to the database; `None` between groups.
    writing_since: Arc<Mutex<Option<Instant>>>,
    db: Database,
    numbers: Arc<FunctionNumbers>,
    /// Keeps the directory locked until the journal is closed.
    _dir: DataDir,
}

impl Journal {
    pub(super) fn start(
        dir: DataDir,
        db: Database,
        partitions: Partitions,
        numbers: Arc<FunctionNumbers>,
        durability: Durability,
    ) -> Journal {
        let (sender, receiver) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let writing_since = Arc::new(Mutex::new(None));
        // Acknowledging from inside the runtime wakes each waiting task through its worker's
        // own queue: one cross-thread wake-up per group instead of one per commit.
        let acknowledger = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (sender, mut groups) = tokio::sync::mpsc::unbounded_channel();
            runtime.spawn(async move {
                while let Some((group, result)) = groups.recv().await {
                    acknowledge(group, result);
                }
            });
            sender
        });
        let compactor = OpenCompactor::start(partitions.open.clone());
        let syncer = match durability {
            Durability::Sync => None,
            Durability::Buffered => start_syncer(db.clone(), failed.clone()),
        };
        let writer = Writer {
            acknowledger,
            db: db.clone(),
            partitions,
            mode: match durability {
                // fdatasync: the journal's data and size, not its timestamps.
                Durability::Sync => PersistMode::SyncData,
                // Flushes the journal's buffer to the OS with every batch: without it, the
                // last few KiB of acknowledged writes sat in fjall's user-space buffer until
                // the periodic sync, and a kill -9 lost them.
                Durability::Buffered => PersistMode::Buffer,
            },
            failed: failed.clone(),
            writing_since: writing_since.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sai-writer".into())
            .spawn(move || writer.run(receiver))
            .ok();
        if thread.is_none() {
            failed.store(true, Ordering::Release);
        }
        Journal {
            sender: Some(sender),
            thread,
            compactor,
            syncer,
            failed,
            writing_since,
            db,
            numbers,
            _dir: dir,
        }
    }

    /// An empty write set for a commit.
    pub fn write_set(&self) -> WriteSet {
        WriteSet::new(self.numbers.clone())
    }

    /// Whether a write failed, so that nothing more is accepted.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// How long the write in progress has been running, if one is. The database can halt a
    /// write while it waits for memtables to be flushed; one that never returns would
    /// otherwise show only as calls that never end.
    pub fn write_running_for(&self) -> Option<Duration> {
        self.writing_since.lock().map(|since| since.elapsed())
    }

    /// Queue `writes`; `on_durable` runs once they are on disk, before the ticket resolves.
    pub fn submit(&self, writes: WriteSet, on_durable: OnDurable) -> Result<Ticket, PersistError> {
        if self.has_failed() {
            return Err(PersistError::Failed);
        }
        let (ack, ticket) = oneshot::channel();
        let bytes = writes.encoded_len();
        self.sender
            .as_ref()
            .ok_or(PersistError::Failed)?
            .send(Submission {
                writes,
                bytes,
                on_durable,
                ack,
            })
            .map_err(|_| PersistError::Failed)?;
        Ok(ticket)
    }

    /// Write what is queued, stop the writer, and sync everything. Blocks.
    pub fn close(mut self) -> Result<(), PersistError> {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for (stop, thread) in [self.compactor.take(), self.syncer.take()]
            .into_iter()
            .flatten()
        {
            drop(stop);
            let _ = thread.join();
        }
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

/// How often the open set's size is looked at.
const OPEN_COMPACT_EVERY: Duration = Duration::from_secs(30);
/// Past this much on disk, the open set is compacted whole.
const OPEN_COMPACT_BYTES: u64 = 8 * 1024 * 1024;

/// Keeps the `open` partition small. Every invocation writes its key there when accepted and
/// deletes it when it ends, so the partition is almost all deletion markers, which an LSM
/// drops only when they reach its last level; a start reads the partition whole, and a
/// hundred million ended invocations left ~900 MiB of markers there and a 23 s start. A full
/// compaction drops them; the live set it writes back is only what is open.
struct OpenCompactor;

/// Compact the open set whole into its last level, keeping only the newest version of each
/// key and dropping deleted keys with their markers.
///
/// fjall's own `major_compact` passes the keyspace's snapshot watermark as the point below
/// which older versions may be dropped. That watermark only moves when snapshots close, and
/// sai takes none, so it stays behind: the compaction then kept a key's older insert *and*
/// dropped the newer deletion marker covering it (markers are always dropped at the last
/// level), and ended invocations came back as open. Nothing reads this partition while the
/// server runs (only a start does, before the compactor exists), so no reader needs an older
/// version and every version below the newest can go.
fn compact_open(open: &fjall::Keyspace) -> Result<(), fjall::LsmError> {
    use fjall::AbstractTree;
    open.tree.major_compact(u64::MAX, u64::MAX)
}

impl OpenCompactor {
    /// Look now and every [`OPEN_COMPACT_EVERY`] until the returned sender is dropped.
    fn start(open: fjall::Keyspace) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sai-open-compactor".into())
            .spawn(move || loop {
                if open.disk_space() > OPEN_COMPACT_BYTES {
                    let started = Instant::now();
                    match compact_open(&open) {
                        Ok(()) => tracing::debug!(
                            took_ms = started.elapsed().as_millis() as u64,
                            bytes_after = open.disk_space(),
                            "compacted the open set"
                        ),
                        Err(err) => tracing::warn!(%err, "the open set could not be compacted"),
                    }
                }
                match stopped.recv_timeout(OPEN_COMPACT_EVERY) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            })
            .ok()?;
        Some((stop, thread))
    }
}

/// Sync the journal every [`BUFFERED_SYNC_MS`](super::BUFFERED_SYNC_MS) until the returned
/// sender is dropped: buffered mode's bound on what a power loss can take. A failed sync
/// fails the journal like a failed write.
fn start_syncer(
    db: Database,
    failed: Arc<AtomicBool>,
) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let every = Duration::from_millis(u64::from(super::BUFFERED_SYNC_MS));
    let thread = std::thread::Builder::new()
        .name("sai-syncer".into())
        .spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if let Err(err) = db.persist(PersistMode::SyncData) {
                failed.store(true, Ordering::Release);
                tracing::error!(%err, "syncing the data directory failed; refusing further writes");
                return;
            }
        })
        .ok()?;
    Some((stop, thread))
}

/// Submissions written as one batch.
struct Group {
    submissions: Vec<Submission>,
    bytes: usize,
}

impl Group {
    fn new(first: Submission) -> Group {
        Group {
            bytes: first.bytes,
            submissions: vec![first],
        }
    }

    fn len(&self) -> usize {
        self.submissions.len()
    }

    /// Add what is waiting, up to the group caps; returns a submission that would have
    /// pushed the group over its byte cap (it starts the next group).
    fn take_waiting(&mut self, receiver: &mpsc::Receiver<Submission>) -> Option<Submission> {
        while self.len() < MAX_GROUP && self.bytes < MAX_GROUP_BYTES {
            match receiver.try_recv() {
                Ok(next) if self.bytes + next.bytes > MAX_GROUP_BYTES => return Some(next),
                Ok(next) => {
                    self.bytes += next.bytes;
                    self.submissions.push(next);
                }
                Err(_) => break,
            }
        }
        None
    }
}

/// A written group and how its write went.
type Outcome = (Vec<Submission>, Result<(), Arc<PersistError>>);

struct Writer {
    /// Where durable groups are acknowledged; on this thread when there is no runtime.
    acknowledger: Option<tokio::sync::mpsc::UnboundedSender<Outcome>>,
    db: Database,
    partitions: Partitions,
    /// How far each batch is pushed before it is acknowledged.
    mode: PersistMode,
    failed: Arc<AtomicBool>,
    writing_since: Arc<Mutex<Option<Instant>>>,
}

impl Writer {
    fn run(self, receiver: mpsc::Receiver<Submission>) {
        // A submission that would have pushed a group over its byte cap starts the next one.
        let mut carried: Option<Submission> = None;
        loop {
            let first = match carried.take() {
                Some(first) => first,
                None => match receiver.recv() {
                    Ok(first) => first,
                    Err(_) => return,
                },
            };
            let mut group = Group::new(first);
            carried = group.take_waiting(&receiver);
            self.write_group(group.submissions);
        }
    }

    fn write_group(&self, group: Vec<Submission>) {
        let result = if self.failed.load(Ordering::Acquire) {
            Err(Arc::new(PersistError::Failed))
        } else {
            let started = Instant::now();
            *self.writing_since.lock() = Some(started);
            let written = self.write(&group);
            *self.writing_since.lock() = None;
            crate::metrics::names::record_group_write(group.len(), started.elapsed().as_secs_f64());
            written
                .map(|()| {
                    group.iter().for_each(|s| s.writes.written());
                })
                .map_err(|err| {
                    self.failed.store(true, Ordering::Release);
                    tracing::error!(%err, "writing to the data directory failed; refusing further writes");
                    Arc::new(err)
                })
        };
        match &self.acknowledger {
            Some(acknowledger) => {
                if let Err(unsent) = acknowledger.send((group, result)) {
                    // The runtime is shutting down: acknowledge here.
                    let (group, result) = unsent.0;
                    acknowledge(group, result);
                }
            }
            None => acknowledge(group, result),
        }
    }

    /// One batch for the whole group; within it, the last write to a key wins.
    fn write(&self, group: &[Submission]) -> Result<(), PersistError> {
        let mut position: HashMap<(Part, &[u8]), usize, foldhash::fast::RandomState> =
            HashMap::default();
        let mut ops: Vec<&Op> = Vec::new();
        for op in group.iter().flat_map(|s| &s.writes.ops) {
            let slot = match op {
                Op::Put(part, key, _) | Op::Delete(part, key) => (*part, key.as_slice()),
            };
            match position.get(&slot) {
                Some(&at) => ops[at] = op,
                None => {
                    position.insert(slot, ops.len());
                    ops.push(op);
                }
            }
        }
        let mut batch = self.db.batch().durability(Some(self.mode));
        batch.insert(&self.partitions.meta, BATCH_KEY, BATCH_MARK.as_slice());
        for op in ops {
            match op {
                Op::Put(part, key, value) => batch.insert(
                    partition(&self.partitions, *part),
                    key.as_slice(),
                    value.as_slice(),
                ),
                Op::Delete(part, key) => {
                    batch.remove(partition(&self.partitions, *part), key.as_slice())
                }
            }
        }
        batch.commit()?;
        Ok(())
    }
}

/// In commit order: publish each submission's change (only once written) and acknowledge it.
fn acknowledge(group: Vec<Submission>, result: Result<(), Arc<PersistError>>) {
    for submission in group {
        if result.is_ok() {
            (submission.on_durable)();
        }
        let _ = submission.ack.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_the_open_set_keeps_deleted_keys_deleted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = fjall::Database::builder(dir.path())
            .open()
            .expect("database");
        let open = db
            .keyspace("open", fjall::KeyspaceCreateOptions::default)
            .expect("partition");
        open.insert("ended", "").expect("insert");
        open.insert("running", "").expect("insert");
        open.rotate_memtable_and_wait().expect("flush");
        open.remove("ended").expect("remove");
        open.rotate_memtable_and_wait().expect("flush");

        compact_open(&open).expect("compact");

        assert_eq!(open.get("ended").expect("read"), None);
        assert!(open.get("running").expect("read").is_some());

        // A deletion still in memory when the compaction runs covers the compacted insert
        // until it is flushed, and goes with it at the next compaction.
        open.remove("running").expect("remove");
        compact_open(&open).expect("compact");
        assert_eq!(open.get("running").expect("read"), None);
        open.rotate_memtable_and_wait().expect("flush");
        compact_open(&open).expect("compact");
        assert_eq!(open.get("running").expect("read"), None);
        assert_eq!(open.iter().count(), 0);
    }
}
