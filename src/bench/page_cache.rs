//! Whether a run's reads came from the page cache or the disk: the KiB the kernel paged in
//! over it (`/proc/vmstat`, the whole machine), and whether the kernel pages out idle memory
//! on its own (a DAMON scheme whose action is `pageout`, as some virtual machines run). Under
//! such a scheme a data directory read at random, a small part of it each minute, does not
//! stay in the page cache however much memory is free, and reads of it wait on the disk.

use std::path::Path;

/// Where the kernel's DAMON control files are.
const DAMON_ADMIN: &str = "/sys/kernel/mm/damon/admin/kdamonds";

/// KiB the kernel has read in from block devices since it started (0 where unknown).
pub fn paged_in_kib() -> u64 {
    super::report::proc_field("/proc/vmstat", "pgpgin ")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// A description of the kernel's proactive pageout, if a running DAMON scheme pages out idle
/// memory: "DAMON pages out memory idle for 60 s".
pub fn proactive_pageout() -> Option<String> {
    pageout_under(Path::new(DAMON_ADMIN))
}

fn pageout_under(kdamonds: &Path) -> Option<String> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let children = |path: &Path| -> Vec<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect();
        found.sort();
        found
    };
    let mut idle_seconds: Option<f64> = None;
    for kdamond in children(kdamonds) {
        if read(&kdamond.join("state")).as_deref() != Some("on") {
            continue;
        }
        for context in children(&kdamond.join("contexts")) {
            let aggregation_us: f64 = read(&context.join("monitoring_attrs/intervals/aggr_us"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            for scheme in children(&context.join("schemes")) {
                if read(&scheme.join("action")).as_deref() != Some("pageout") {
                    continue;
                }
                let age: f64 = read(&scheme.join("access_pattern/age/min"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0);
                let seconds = age * aggregation_us / 1e6;
                idle_seconds = Some(idle_seconds.map_or(seconds, |s| s.min(seconds)));
            }
        }
    }
    idle_seconds.map(|seconds| format!("DAMON pages out memory idle for {seconds:.0} s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, value: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, value).expect("write");
    }

    #[test]
    fn a_running_pageout_scheme_is_described_with_its_idle_time() {
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(pageout_under(root.path()), None, "no kdamond");
        write(root.path(), "0/state", "off\n");
        write(
            root.path(),
            "0/contexts/0/monitoring_attrs/intervals/aggr_us",
            "5000000\n",
        );
        write(root.path(), "0/contexts/0/schemes/0/action", "pageout\n");
        write(
            root.path(),
            "0/contexts/0/schemes/0/access_pattern/age/min",
            "12\n",
        );
        assert_eq!(pageout_under(root.path()), None, "a kdamond that is off");
        write(root.path(), "0/state", "on\n");
        assert_eq!(
            pageout_under(root.path()).as_deref(),
            Some("DAMON pages out memory idle for 60 s")
        );
        write(root.path(), "0/contexts/0/schemes/0/action", "stat\n");
        assert_eq!(
            pageout_under(root.path()),
            None,
            "a scheme that only counts"
        );
    }
}
