//! How many runtime worker threads a command runs with.
//!
//! One per core serves calls with the least switching between threads. A server whose data
//! directory is larger than half the memory it may use gets more: its gets and lists of
//! finished invocations read the storage engine inline, and a block the page cache lacks keeps
//! its worker waiting on the disk (about 0.1 ms here) while the core's other workers serve
//! other calls. Handing such reads to another thread cost more than the waits (BENCHMARKS.md,
//! "Reads of the data directory on the blocking pool"). Workers beyond one per core cost the
//! hot path about a tenth more CPU per call, so they grow with how much of the history the
//! page cache cannot hold ("Runtime workers for a history the page cache has let go"):
//! - over half the memory: two per core. The page cache holds most of it while gets keep it
//!   warm, and there two per core served more gets than four.
//! - over all of it: four per core. Most gets then read the disk, and with the page cache
//!   emptied four per core served a third more gets than two, at less CPU per get, and more
//!   than three or eight per core.

use std::path::Path;

/// The cores the machine, or a container's CPU limit, gives this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Workers for a server on the data directory `dir`: `None` for the runtime's default of one
/// per core. Read before the directory is opened, so a history that grows past the line is
/// counted at the next start.
pub fn workers_for_data_dir(dir: &Path) -> Option<usize> {
    workers_for_history(cores(), bytes_under(dir), memory_bytes())
}

/// Workers for a history of `history_bytes` beside `memory_bytes` of memory (unknown: assume
/// the page cache holds it): more per core the less of it the page cache can hold.
fn workers_for_history(
    cores: usize,
    history_bytes: u64,
    memory_bytes: Option<u64>,
) -> Option<usize> {
    let memory = memory_bytes?;
    let per_core = if history_bytes > memory {
        4
    } else if history_bytes > memory / 2 {
        2
    } else {
        return None;
    };
    Some(cores.saturating_mul(per_core))
}

/// Bytes the files under `dir` take on the disk, not following links; 0 for a directory not
/// made yet, and what could be read of one that cannot all be.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => bytes_under(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| stored_bytes(&m)),
            _ => 0,
        })
        .sum()
}

/// The blocks a file takes, not its length: the storage engine's journal files are sparse.
#[cfg(unix)]
fn stored_bytes(metadata: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    metadata.blocks().saturating_mul(512)
}

#[cfg(not(unix))]
fn stored_bytes(metadata: &std::fs::Metadata) -> u64 {
    metadata.len()
}

/// The memory this process may use: the machine's, or its control group's limit if lower.
/// `None` where neither can be read (not Linux).
fn memory_bytes() -> Option<u64> {
    let machine = machine_memory_bytes();
    let limit = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|groups| cgroup_v2_path(&groups).map(str::to_owned))
        .and_then(|path| {
            let file = format!("/sys/fs/cgroup{}/memory.max", path.trim_end_matches('/'));
            std::fs::read_to_string(file).ok()
        })
        .and_then(|max| max.trim().parse::<u64>().ok());
    match (machine, limit) {
        (Some(machine), Some(limit)) => Some(machine.min(limit)),
        (machine, limit) => machine.or(limit),
    }
}

/// The machine's memory (`MemTotal` of /proc/meminfo); `None` where it cannot be read.
pub fn machine_memory_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The process's cgroup v2 path, from /proc/self/cgroup ("0::/path").
fn cgroup_v2_path(groups: &str) -> Option<&str> {
    groups.lines().find_map(|line| line.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn workers_per_core_grow_with_the_history_the_page_cache_cannot_hold() {
        assert_eq!(workers_for_history(2, 0, Some(24 * GIB)), None);
        assert_eq!(workers_for_history(2, 12 * GIB, Some(24 * GIB)), None);
        assert_eq!(
            workers_for_history(2, 12 * GIB + 1, Some(24 * GIB)),
            Some(4)
        );
        assert_eq!(workers_for_history(8, 24 * GIB, Some(24 * GIB)), Some(16));
        assert_eq!(
            workers_for_history(2, 24 * GIB + 1, Some(24 * GIB)),
            Some(8)
        );
        assert_eq!(workers_for_history(8, 100 * GIB, Some(24 * GIB)), Some(32));
        assert_eq!(
            workers_for_history(2, 100 * GIB, None),
            None,
            "memory unknown"
        );
    }

    /// Bytes no file system compresses much.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn a_directory_counts_what_its_files_take_on_the_disk_in_it_and_below() {
        const KIB: u64 = 1024;
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(bytes_under(&dir.path().join("not made yet")), 0);
        std::fs::write(dir.path().join("a"), noise(200 * 1024)).expect("write");
        std::fs::create_dir_all(dir.path().join("tables/1")).expect("mkdir");
        std::fs::write(dir.path().join("tables/1/b"), noise(100 * 1024)).expect("write");
        let written = bytes_under(dir.path());
        assert!(
            (300 * KIB..400 * KIB).contains(&written),
            "{written} bytes for 300 KiB written"
        );
        let sparse = std::fs::File::create(dir.path().join("journal")).expect("create");
        sparse.set_len(GIB).expect("a sparse file");
        let with_sparse = bytes_under(dir.path());
        assert!(
            with_sparse < written + 64 * KIB,
            "a sparse 1 GiB file counts as {} bytes",
            with_sparse - written
        );
    }

    #[test]
    fn memory_comes_from_meminfo_and_the_cgroup_path_from_its_v2_line() {
        let meminfo = "MemTotal:       24563428 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_563_428 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        let groups = "12:cpu:/legacy\n0::/system.slice/sai.service\n";
        assert_eq!(cgroup_v2_path(groups), Some("/system.slice/sai.service"));
        assert_eq!(cgroup_v2_path("3:memory:/x\n"), None);
    }
}
