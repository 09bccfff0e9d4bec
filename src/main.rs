//! The `sai` binary: everything lives in the library; see `sai::cli`.

// Under load, glibc's malloc took about a fifth of the server's CPU, much of it arena locks
// contended between the runtime threads and the writer thread that frees what they allocate.
// jemalloc rather than mimalloc: with the same live heap (~145 MiB, flat, under heaptrack),
// mimalloc's resident memory swung by ~70 MiB between samples and rose over a soak, while
// jemalloc, purging on its background threads (settings in .cargo/config.toml), stays near
// what is live, at no more CPU per invocation.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sai::server::read_heap_with(jemalloc_stats);
    sai::cli::run()
}

/// jemalloc's counts of allocated, active, metadata and resident bytes, as of now (its
/// statistics are snapshots, refreshed by advancing its epoch).
fn jemalloc_stats() -> Option<sai::server::HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(sai::server::HeapStats {
        allocated: u64::try_from(stats::allocated::read().ok()?).ok()?,
        active: u64::try_from(stats::active::read().ok()?).ok()?,
        metadata: u64::try_from(stats::metadata::read().ok()?).ok()?,
        resident: u64::try_from(stats::resident::read().ok()?).ok()?,
    })
}
