//! Errors of the persistence layer.

use std::path::PathBuf;

/// Why the data directory could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Another process holds the directory's lock.
    #[error("data directory {path} is in use by another sai process (its LOCK file is held)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The directory was written by a newer sai.
    #[error("data directory {path} has format {found}; this sai reads format {supported} and older; upgrade sai")]
    NewerFormat {
        /// The directory.
        path: PathBuf,
        /// Its format.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The directory holds files but no `FORMAT` marker: it is not a sai data directory, and
    /// starting a new one among someone else's files would mix them with ours.
    #[error("{path} is not a sai data directory: it holds {found:?} but no FORMAT file; give an empty or new directory")]
    NotADataDirectory {
        /// The directory.
        path: PathBuf,
        /// One of the entries found in it.
        found: String,
    },
    /// Something on disk is not what sai wrote.
    #[error("data directory is corrupt: {what}; refusing to start rather than lose data")]
    Corrupt {
        /// What is wrong, and where.
        what: String,
    },
    /// An I/O error outside the storage engine.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The storage engine failed.
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// An earlier write failed, so no more are accepted until a restart recovers.
    #[error(
        "an earlier write to the data directory failed; writes are refused until sai restarts"
    )]
    Failed,
}

impl PersistError {
    /// An I/O error with what was being done.
    pub fn io(context: String, source: std::io::Error) -> Self {
        PersistError::Io { context, source }
    }
}
