//! The upgrade of a data directory written before format 4, whose partitions are a fjall 2
//! keyspace in `db/`: each partition is copied in key order into a partition of the same name
//! in a new fjall 3 database, which takes the place of the old keyspace only once it is
//! complete and synced.
//!
//! Every step leaves a state the next start finishes (the directory is marked as format 4
//! before any of it, so an older build refuses it throughout):
//!
//! ```text
//! db/ only                 copy into store.partial/, rename it to store/, remove db/
//! db/ and store.partial/   a copy cut short: removed, and the copy starts again
//! db/ and store/           the copy is complete: db/ is removed
//! ```

use std::fs;
use std::path::Path;

use fjall::KeyspaceCreateOptions;

use super::layout::DataDir;
use super::PersistError;

/// Copy `dir`'s fjall 2 keyspace into its fjall 3 database, creating each partition with
/// `options`, if it still has one. Returns how many entries were copied.
pub fn from_fjall_2(
    dir: &DataDir,
    options: impl Fn(&str) -> KeyspaceCreateOptions,
) -> Result<usize, PersistError> {
    let legacy = dir.legacy_db_path();
    if !legacy.exists() {
        return Ok(0);
    }
    let store = dir.store_path();
    let mut copied = 0;
    if !store.exists() {
        let partial = dir.path().join("store.partial");
        if partial.exists() {
            remove(&partial)?;
        }
        tracing::info!(
            from = %legacy.display(),
            to = %store.display(),
            "copying the data directory to the current storage engine (once; it may take minutes)"
        );
        copied = copy(&legacy, &partial, options)?;
        fs::rename(&partial, &store)
            .map_err(|err| PersistError::io(format!("renaming {}", partial.display()), err))?;
        dir.sync()?;
        tracing::info!(entries = copied, "data directory copied");
    }
    remove(&legacy)?;
    dir.sync()?;
    Ok(copied)
}

/// Copy every partition of the fjall 2 keyspace at `from` into a new fjall 3 database at `to`.
fn copy(
    from: &Path,
    to: &Path,
    options: impl Fn(&str) -> KeyspaceCreateOptions,
) -> Result<usize, PersistError> {
    let old = super::journal_check::recover_checked(
        &from.join("journals"),
        |_| true,
        || {
            fjall2::Config::new(from)
                .open()
                .map_err(|err| legacy_error(from, err))
        },
    )?;
    let new = super::open_database(to, super::DEFAULT_BLOCK_CACHE_BYTES)?;
    let mut copied = 0;
    for name in old.list_partitions() {
        let source = old
            .open_partition(&name, fjall2::PartitionCreateOptions::default())
            .map_err(|err| legacy_error(from, err))?;
        let target = new.keyspace(&name, || options(&name))?;
        let mut ingestion = target.start_ingestion()?;
        for item in source.iter() {
            let (key, value) = item.map_err(|err| legacy_error(from, err))?;
            ingestion.write(&*key, &*value)?;
            copied += 1;
        }
        ingestion.finish()?;
    }
    new.persist(fjall::PersistMode::SyncAll)?;
    Ok(copied)
}

fn legacy_error(path: &Path, err: fjall2::Error) -> PersistError {
    match err {
        fjall2::Error::Io(source) => PersistError::io(
            format!("reading the older keyspace in {}", path.display()),
            source,
        ),
        other => PersistError::Corrupt {
            what: format!("the older keyspace in {}: {other}", path.display()),
        },
    }
}

fn remove(path: &Path) -> Result<(), PersistError> {
    fs::remove_dir_all(path)
        .map_err(|err| PersistError::io(format!("removing {}", path.display()), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format-3 directory: a fjall 2 keyspace with `entries` in partitions "a" and "b".
    fn format_3_directory(entries: usize) -> tempfile::TempDir {
        let temp = tempfile::tempdir().expect("temp dir");
        fs::write(temp.path().join("FORMAT"), "sai-data-format 3\n").expect("marker");
        let keyspace = fjall2::Config::new(temp.path().join("db"))
            .open()
            .expect("fjall 2 keyspace");
        for name in ["a", "b"] {
            let partition = keyspace
                .open_partition(name, fjall2::PartitionCreateOptions::default())
                .expect("partition");
            for i in 0..entries {
                partition
                    .insert(format!("{name}-{i:05}"), format!("value {i}"))
                    .expect("insert");
            }
        }
        keyspace
            .persist(fjall2::PersistMode::SyncAll)
            .expect("persist");
        temp
    }

    fn entries(dir: &DataDir, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = crate::persist::open_database(
            &dir.store_path(),
            crate::persist::DEFAULT_BLOCK_CACHE_BYTES,
        )
        .expect("database");
        let keyspace = db
            .keyspace(name, KeyspaceCreateOptions::default)
            .expect("partition");
        keyspace
            .iter()
            .map(|item| {
                let (key, value) = item.into_inner().expect("read");
                (key.to_vec(), value.to_vec())
            })
            .collect()
    }

    #[test]
    fn every_entry_is_copied_in_order_and_the_old_keyspace_goes() {
        let temp = format_3_directory(1_000);
        // A copy cut short by a crash is thrown away and made again.
        fs::create_dir_all(temp.path().join("store.partial/junk")).expect("partial copy");
        let dir = DataDir::open(temp.path()).expect("open");

        let copied = from_fjall_2(&dir, |_| KeyspaceCreateOptions::default()).expect("upgrade");

        assert_eq!(copied, 2_000);
        assert!(!dir.legacy_db_path().exists());
        assert!(!temp.path().join("store.partial").exists());
        let a = entries(&dir, "a");
        assert_eq!(a.len(), 1_000);
        assert_eq!(a[0], (b"a-00000".to_vec(), b"value 0".to_vec()));
        assert_eq!(a[999], (b"a-00999".to_vec(), b"value 999".to_vec()));
        assert!(a.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert_eq!(entries(&dir, "b").len(), 1_000);
    }

    #[test]
    fn a_complete_copy_is_kept_and_only_the_old_keyspace_is_removed() {
        let temp = format_3_directory(10);
        let dir = DataDir::open(temp.path()).expect("open");
        from_fjall_2(&dir, |_| KeyspaceCreateOptions::default()).expect("upgrade");
        // A crash after the copy was renamed into place, before the old keyspace was removed.
        let leftover = format_3_directory(3);
        fs::rename(leftover.path().join("db"), dir.legacy_db_path()).expect("leftover");

        let copied = from_fjall_2(&dir, |_| KeyspaceCreateOptions::default()).expect("finish");

        assert_eq!(copied, 0);
        assert!(!dir.legacy_db_path().exists());
        assert_eq!(entries(&dir, "a").len(), 10);
    }
}
