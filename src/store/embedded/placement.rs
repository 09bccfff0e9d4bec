//! Where reads of the data directory run. A read the storage engine's block cache or the OS
//! page cache answers takes tens of microseconds, and handing it to another thread would cost
//! more than the read: such reads run inline on the runtime worker. A read of a block the page
//! cache does not hold waits on the disk, and on one of the runtime's few workers that wait
//! stalls every connection the worker serves: while a share of recent reads waited that long,
//! reads go to the blocking pool, where those waits overlap and the workers go on answering.
//!
//! Which reads will wait is not known before they run, so the choice follows what recent reads
//! did: a moving share of the reads that had the kernel read blocks from the disk, as the
//! reading thread's resource usage counts them (`ru_inblock`). Not their duration: a read
//! served from memory also takes long when its thread is preempted on a busy machine.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The moving share is kept in units of 1/`SCALE`.
const SCALE: u32 = 1 << 16;

/// Each read moves the share by 1/`WEIGHT` of the way to 0 or 1: about the last few hundred
/// reads count.
const WEIGHT: u32 = 256;

/// Reads move to the blocking pool once this share of them waited on the disk (2%)...
const TO_POOL: u32 = SCALE / 50;

/// ...and come back inline once it falls below this one (0.5%), so that a share near the
/// threshold does not make them go back and forth.
const TO_INLINE: u32 = SCALE / 200;

/// The moving share of reads that waited on the disk, and where reads run now.
#[derive(Default)]
pub struct ReadPlacement {
    waited_share: AtomicU32,
    on_pool: AtomicBool,
}

impl ReadPlacement {
    /// Whether the next read should run on the blocking pool.
    pub fn on_pool(&self) -> bool {
        self.on_pool.load(Ordering::Relaxed)
    }

    /// Send reads to the blocking pool from now on (until reads show they need not).
    #[cfg(test)]
    pub fn move_to_pool(&self) {
        self.on_pool.store(true, Ordering::Relaxed);
    }

    /// `read`, on the calling thread, counted in the share.
    pub fn counted<R>(&self, read: impl FnOnce() -> R) -> R {
        let before = blocks_read();
        let result = read();
        let after = blocks_read();
        self.record(matches!((before, after), (Some(before), Some(after)) if after > before));
        result
    }

    /// A read that `waited` on the disk or not. Concurrent reads may overwrite each other's
    /// update: the share is an estimate, and a lost update moves it by one read's weight.
    fn record(&self, waited: bool) {
        let share = self.waited_share.load(Ordering::Relaxed);
        let target = if waited { SCALE } else { 0 };
        let share = share - share / WEIGHT + target / WEIGHT;
        self.waited_share.store(share, Ordering::Relaxed);
        if share >= TO_POOL {
            self.on_pool.store(true, Ordering::Relaxed);
        } else if share < TO_INLINE {
            self.on_pool.store(false, Ordering::Relaxed);
        }
    }
}

/// Blocks the calling thread has had read from the disk so far; `None` where that is not
/// counted per thread, and then reads stay inline.
fn blocks_read() -> Option<i64> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{getrusage, UsageWho};
        getrusage(UsageWho::RUSAGE_THREAD)
            .ok()
            .map(|usage| usage.block_reads())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_to_the_pool_while_some_wait_on_the_disk_and_come_back_once_none_do() {
        let placement = ReadPlacement::default();
        assert!(!placement.on_pool(), "inline at first");
        for _ in 0..1_000 {
            placement.record(false);
        }
        assert!(!placement.on_pool(), "inline while reads are fast");
        // One read in ten waits on the disk.
        for n in 0..200 {
            placement.record(n % 10 == 0);
        }
        assert!(placement.on_pool(), "on the pool once reads wait");
        // A share between the thresholds keeps the placement it has.
        while placement.waited_share.load(Ordering::Relaxed) >= TO_POOL {
            placement.record(false);
        }
        assert!(
            placement.on_pool(),
            "still on the pool above the lower threshold"
        );
        for _ in 0..2_000 {
            placement.record(false);
        }
        assert!(!placement.on_pool(), "inline again once reads stop waiting");
    }

    #[test]
    fn a_lone_slow_read_does_not_move_reads_to_the_pool() {
        let placement = ReadPlacement::default();
        placement.record(true);
        assert!(!placement.on_pool());
    }
}
