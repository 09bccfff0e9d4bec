//! The data directory: its lock, its format marker, and where the storage engine lives.
//!
//! ```text
//! <data-dir>/LOCK      held (flock) by the one server using the directory
//! <data-dir>/FORMAT    "sai-data-format <n>": refused when newer than this build knows
//! <data-dir>/store/    the fjall database (format 4)
//! <data-dir>/db/       formats 1 to 3: a fjall 2 keyspace, copied to store/ once, then removed
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::PersistError;

/// The on-disk format this build writes. 2: a small payload is stored after its record
/// instead of apart. 3: invocation records are keyed by record number, their identity in the
/// value. 4: the keys and values of format 3 in a fjall 3 database (`store/`) instead of a
/// fjall 2 keyspace (`db/`). This build reads formats 1 to 3 too: it marks such a directory as
/// 4 when it opens it, copies the old keyspace into `store/` and moves its invocations to the
/// format-3 layout there.
pub const FORMAT_VERSION: u32 = 4;

const FORMAT_PREFIX: &str = "sai-data-format ";

/// The folder of a data directory that holds the storage engine's files.
pub const STORE_DIR: &str = "store";

/// The marker naming the directory's format; written last, by rename from [`FORMAT_TEMP_FILE`].
const FORMAT_FILE: &str = "FORMAT";
const FORMAT_TEMP_FILE: &str = "FORMAT.tmp";
/// Held locked while a server has the directory open.
const LOCK_FILE: &str = "LOCK";

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Held for as long as the directory is in use; the OS releases it if the process dies.
    _lock: File,
}

impl DataDir {
    /// Create or open `path`, take its lock, and check its format.
    pub fn open(path: &Path) -> Result<DataDir, PersistError> {
        let io = |context: &str| {
            let context = format!("{context} {}", path.display());
            move |source: std::io::Error| PersistError::io(context, source)
        };
        refuse_foreign(path)?;
        fs::create_dir_all(path).map_err(io("creating data directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK_FILE))
            .map_err(io("opening the lock file in"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(PersistError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(io("locking")(source));
            }
        }
        let dir = DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        };
        dir.check_format()?;
        Ok(dir)
    }

    /// Where the storage engine keeps its files.
    pub fn store_path(&self) -> PathBuf {
        self.path.join(STORE_DIR)
    }

    /// Where formats 1 to 3 kept theirs (fjall 2), until they are copied to
    /// [`store_path`](Self::store_path).
    pub fn legacy_db_path(&self) -> PathBuf {
        self.path.join("db")
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A 32-byte secret kept in file `name` (mode 0600), made at random the first time.
    pub fn secret(&self, name: &str) -> Result<[u8; 32], PersistError> {
        let path = self.path.join(name);
        match fs::read(&path) {
            Ok(bytes) => bytes.try_into().map_err(|_| PersistError::Corrupt {
                what: format!("{} is not a 32-byte key", path.display()),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                let temp = self.path.join(format!("{name}.tmp"));
                let io = |context: &str| {
                    let context = format!("{context} {}", temp.display());
                    move |source| PersistError::io(context, source)
                };
                let mut options = OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&temp).map_err(io("creating"))?;
                file.write_all(&secret).map_err(io("writing"))?;
                file.sync_all().map_err(io("syncing"))?;
                fs::rename(&temp, &path).map_err(io("renaming"))?;
                Ok(secret)
            }
            Err(err) => Err(PersistError::io(format!("reading {}", path.display()), err)),
        }
    }

    fn check_format(&self) -> Result<(), PersistError> {
        let marker = self.path.join(FORMAT_FILE);
        match fs::read_to_string(&marker) {
            Ok(text) => {
                let version = text
                    .trim()
                    .strip_prefix(FORMAT_PREFIX)
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| PersistError::Corrupt {
                        what: format!(
                            "{} does not name a sai data format (it reads {:?})",
                            marker.display(),
                            text.chars().take(40).collect::<String>()
                        ),
                    })?;
                if version > FORMAT_VERSION {
                    return Err(PersistError::NewerFormat {
                        path: self.path.clone(),
                        found: version,
                        supported: FORMAT_VERSION,
                    });
                }
                if version < FORMAT_VERSION {
                    // Marked first, so that an older build refuses what this one writes
                    // (the move of old records included) even if the move is cut short.
                    self.write_format()?;
                }
                Ok(())
            }
            // A new directory: `refuse_foreign` saw nothing in it but what a first open writes.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => self.write_format(),
            Err(err) => Err(PersistError::io(
                format!("reading {}", marker.display()),
                err,
            )),
        }
    }

    /// Write the marker atomically (temp file, sync, rename, sync the directory).
    fn write_format(&self) -> Result<(), PersistError> {
        let io = |context: &'static str| {
            move |source: std::io::Error| PersistError::io(context.to_string(), source)
        };
        let temp = self.path.join(FORMAT_TEMP_FILE);
        let mut file = File::create(&temp).map_err(io("creating FORMAT.tmp"))?;
        writeln!(file, "{FORMAT_PREFIX}{FORMAT_VERSION}").map_err(io("writing FORMAT.tmp"))?;
        file.sync_all().map_err(io("syncing FORMAT.tmp"))?;
        fs::rename(&temp, self.path.join(FORMAT_FILE)).map_err(io("renaming FORMAT.tmp"))?;
        self.sync()
    }

    /// Sync the directory itself, so that renames and removals in it are durable.
    pub fn sync(&self) -> Result<(), PersistError> {
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| PersistError::io(format!("syncing {}", self.path.display()), err))
    }
}

/// Entries a data directory that has no `FORMAT` yet may hold: what [`DataDir::open`] and
/// [`DataDir::write_format`] create before the marker is in place.
const BEFORE_FORMAT: [&str; 2] = [LOCK_FILE, FORMAT_TEMP_FILE];

/// Refuse, before writing anything in it, a directory that holds files but no `FORMAT`
/// marker (a mistyped path, or the storage engine's own folder): a new data directory is
/// started only in an empty or new one.
fn refuse_foreign(path: &Path) -> Result<(), PersistError> {
    if path.join(FORMAT_FILE).exists() {
        return Ok(());
    }
    let unreadable = |err| PersistError::io(format!("reading {}", path.display()), err);
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(unreadable(err)),
    };
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !BEFORE_FORMAT.contains(&name.as_str()) {
            return Err(PersistError::NotADataDirectory {
                path: path.to_path_buf(),
                found: name,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
        let temp = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(temp.path()).expect("first open");
        assert!(matches!(
            DataDir::open(temp.path()),
            Err(PersistError::Locked { .. })
        ));
        drop(first);
        DataDir::open(temp.path()).expect("open after the first closed");
    }

    #[test]
    fn a_newer_or_unreadable_format_is_refused() {
        let temp = tempfile::tempdir().expect("tempdir");
        fs::write(temp.path().join("FORMAT"), "sai-data-format 99\n").expect("write");
        assert!(matches!(
            DataDir::open(temp.path()),
            Err(PersistError::NewerFormat { found: 99, .. })
        ));
        fs::write(temp.path().join("FORMAT"), "garbage").expect("write");
        assert!(matches!(
            DataDir::open(temp.path()),
            Err(PersistError::Corrupt { .. })
        ));
    }

    #[test]
    fn data_without_a_marker_is_refused_not_reset() {
        let temp = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(temp.path().join("db")).expect("mkdir");
        assert!(matches!(
            DataDir::open(temp.path()),
            Err(PersistError::NotADataDirectory { found, .. }) if found == "db"
        ));
        assert!(temp.path().join("db").exists());
    }

    #[test]
    fn a_directory_of_other_files_is_refused_and_left_as_it_was() {
        let temp = tempfile::tempdir().expect("tempdir");
        fs::write(temp.path().join("notes.txt"), "mine").expect("write");
        let err = DataDir::open(temp.path()).expect_err("a foreign directory");
        assert!(
            err.to_string().contains("\"notes.txt\"") && err.to_string().contains("FORMAT"),
            "{err}"
        );
        let left: Vec<_> = fs::read_dir(temp.path())
            .expect("read_dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            ["notes.txt"],
            "nothing written beside the files found"
        );
    }

    #[test]
    fn the_storage_engines_own_folder_is_not_taken_for_a_data_directory() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(temp.path()).expect("new data directory");
        let store = dir.store_path();
        fs::create_dir_all(&store).expect("mkdir store");
        fs::write(store.join("version"), "engine's").expect("write");
        assert!(matches!(
            DataDir::open(&store),
            Err(PersistError::NotADataDirectory { .. })
        ));
    }

    #[test]
    fn an_empty_directory_or_one_left_by_a_cut_short_first_open_is_taken() {
        let temp = tempfile::tempdir().expect("tempdir");
        let empty = temp.path().join("empty");
        fs::create_dir_all(&empty).expect("mkdir");
        DataDir::open(&empty).expect("an empty directory");
        let cut_short = temp.path().join("cut-short");
        fs::create_dir_all(&cut_short).expect("mkdir");
        fs::write(cut_short.join("LOCK"), "").expect("write");
        fs::write(cut_short.join("FORMAT.tmp"), "sai-data").expect("write");
        DataDir::open(&cut_short).expect("only what a first open writes");
        assert!(cut_short.join("FORMAT").exists());
    }
}
