//! A file of credentials read at start and again on SIGHUP: the bearer tokens of gRPC and the
//! dashboard, and the access keys of FC's REST API. A reload that fails (the file is gone or
//! a line does not parse) leaves the entries in force, so a bad edit never locks everyone out.
//! Errors name the file and the line, never a secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

/// Why a credentials file could not be used. Never includes a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// "token file", "access key file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line does not hold a valid entry.
    #[error("{what} {path} line {line}: {rule}")]
    Line {
        /// "token file", "access key file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (the secret itself is never shown).
        rule: String,
    },
}

/// The entries of one kind of credentials file.
pub trait Entries: Default + Send + Sync + 'static {
    /// How errors name the file: "token file".
    const WHAT: &'static str;
    /// The entries of the file's text; a line's error as (1-based line, rule).
    fn parse(text: &str) -> Result<Self, (usize, String)>;
    /// How many entries there are.
    fn count(&self) -> usize;
}

/// The non-blank lines of `text` that are not `#` comments, with their 1-based numbers, each
/// split on whitespace.
pub fn lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(|(at, line)| {
        let line = line.trim();
        (!line.is_empty() && !line.starts_with('#'))
            .then(|| (at + 1, line.split_whitespace().collect()))
    })
}

/// A credentials file and the entries read from it.
#[derive(Debug)]
pub struct KeyFile<E> {
    path: PathBuf,
    current: RwLock<Arc<E>>,
}

impl<E: Entries> KeyFile<E> {
    /// Read `path`.
    pub fn load(path: &Path) -> Result<KeyFile<E>, KeyFileError> {
        let file = KeyFile {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::default()),
        };
        file.reload()?;
        Ok(file)
    }

    /// Read the file again; on error the entries in force stay. Returns how many are loaded.
    pub fn reload(&self) -> Result<usize, KeyFileError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| KeyFileError::Read {
            what: E::WHAT,
            path: self.path.clone(),
            source,
        })?;
        let entries = E::parse(&text).map_err(|(line, rule)| KeyFileError::Line {
            what: E::WHAT,
            path: self.path.clone(),
            line,
            rule,
        })?;
        let count = entries.count();
        *self.current.write() = Arc::new(entries);
        Ok(count)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries in force.
    pub fn current(&self) -> Arc<E> {
        self.current.read().clone()
    }
}
