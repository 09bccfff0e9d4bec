//! A guard around the storage engine's journal recovery, so that damage in the middle of a
//! journal is reported instead of silently cut off.
//!
//! fjall's recovery stops at the first journal record it cannot decode and truncates the file
//! there. That is right for a torn tail (a crash mid-write leaves at most the last batch
//! partly written) but would also drop every good batch after a damaged one. So every batch
//! the writer writes starts with a [`BATCH_MARK`] (16 bytes that no UTF-8 text and no other
//! record can contain), and before fjall opens, the written part of each journal file (they
//! are preallocated with zeros) is read and kept. If what recovery cut off holds the marks of
//! two or more batches, it was not a torn tail: the original bytes are put back and the
//! directory is refused as corrupt, naming the file and offset.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::PersistError;

/// Written once at the start of every batch. 0xFF and 0xFE never occur in UTF-8, so no
/// payload, name or detail can contain it.
pub const BATCH_MARK: &[u8; 16] = b"\xff\xfesai-batch\xfe\xff\x00\x01\x02";

fn batch_marks(bytes: &[u8]) -> usize {
    bytes
        .windows(BATCH_MARK.len())
        .filter(|w| *w == BATCH_MARK)
        .count()
}

/// Run `recover` (which opens the storage engine, replaying the journal files in `folder` that
/// `is_journal` names) and refuse what it opened if it cut a journal short by more than a torn
/// tail: the journals are then put back as they were and the damage is the error.
pub fn recover_checked<T, E>(
    folder: &Path,
    is_journal: impl Fn(&Path) -> bool,
    recover: impl FnOnce() -> Result<T, E>,
) -> Result<T, PersistError>
where
    PersistError: From<E>,
{
    let check = JournalCheck::before_open(folder, is_journal)?;
    let recovered = recover()?;
    if let Some(damage) = check.damage()? {
        // Closed before the journals are written back under it.
        drop(recovered);
        check.restore()?;
        return Err(damage);
    }
    Ok(recovered)
}

/// The written bytes of every journal file, taken before recovery.
struct JournalCheck {
    journals: Vec<(PathBuf, Vec<u8>)>,
}

impl JournalCheck {
    /// Read the journal files in `folder` (those `is_journal` names; none yet for a new
    /// directory).
    fn before_open(
        folder: &Path,
        is_journal: impl Fn(&Path) -> bool,
    ) -> Result<JournalCheck, PersistError> {
        let mut journals = Vec::new();
        let entries = match fs::read_dir(folder) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(JournalCheck { journals })
            }
            Err(err) => {
                return Err(PersistError::io(
                    format!("reading {}", folder.display()),
                    err,
                ))
            }
        };
        for entry in entries {
            let path = entry
                .map_err(|err| PersistError::io(format!("reading {}", folder.display()), err))?
                .path();
            if !path.is_file() || !is_journal(&path) {
                continue;
            }
            let mut bytes = fs::read(&path)
                .map_err(|err| PersistError::io(format!("reading {}", path.display()), err))?;
            let written = bytes.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1);
            bytes.truncate(written);
            journals.push((path, bytes));
        }
        Ok(JournalCheck { journals })
    }

    /// The first journal that recovery cut short by more than a torn tail, if any.
    fn damage(&self) -> Result<Option<PersistError>, PersistError> {
        for (path, before) in &self.journals {
            let after = match fs::metadata(path) {
                Ok(meta) => meta.len(),
                // Recovery may retire a journal whose contents it flushed to tables.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(PersistError::io(format!("reading {}", path.display()), err))
                }
            };
            let written = before.len() as u64;
            let cut_off = before
                .get(usize::try_from(after).unwrap_or(usize::MAX)..)
                .unwrap_or_default();
            if batch_marks(cut_off) >= 2 {
                return Ok(Some(PersistError::Corrupt {
                    what: format!(
                        "journal {} cannot be read past byte {after} of {written}: the damage is \
                         not at its tail, so recovering would drop acknowledged writes",
                        path.display()
                    ),
                }));
            }
        }
        Ok(None)
    }

    /// Put every journal back as it was before recovery.
    fn restore(&self) -> Result<(), PersistError> {
        for (path, bytes) in &self.journals {
            fs::write(path, bytes)
                .map_err(|err| PersistError::io(format!("restoring {}", path.display()), err))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_marks_are_counted() {
        let mut bytes = vec![1, 2, 3];
        bytes.extend_from_slice(BATCH_MARK);
        bytes.extend_from_slice(b"data");
        assert_eq!(batch_marks(&bytes), 1);
        bytes.extend_from_slice(BATCH_MARK);
        assert_eq!(batch_marks(&bytes), 2);
    }
}
