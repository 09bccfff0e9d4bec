//! The whole machine's CPU over a run, from `/proc/stat`: what every process on it (the
//! server, PostgreSQL, the load generator) used, and what the hypervisor took away (steal).
//! On a shared virtual machine a run's rate moves with the steal; CPU per invocation does
//! much less, so the two side by side say whether a slower run did more work or got less
//! of the machine.

/// Cumulative CPU times of every core, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    /// user, nice, system, irq, softirq: work done by anything on the machine.
    busy: u64,
    /// Time a virtual core was ready to run and the hypervisor ran something else.
    steal: u64,
    /// Everything, idle and I/O wait included.
    total: u64,
}

impl MachineCpu {
    /// The counters now; all zero where `/proc/stat` cannot be read (not Linux).
    pub fn now() -> Self {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        // A field that is not a number makes the whole line unreadable: zeros say "not
        // measured" more plainly than one counter quietly taken as 0.
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        Some(MachineCpu {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            steal: at(7),
            total: (0..8).map(at).sum(),
        })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: MachineCpu) -> MachineUse {
        MachineUse {
            busy_ticks: self.busy.saturating_sub(earlier.busy),
            steal_ticks: self.steal.saturating_sub(earlier.steal),
            total_ticks: self.total.saturating_sub(earlier.total),
        }
    }
}

/// The machine's CPU over an interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineUse {
    busy_ticks: u64,
    steal_ticks: u64,
    total_ticks: u64,
}

impl MachineUse {
    /// Busy CPU time per item done, in µs (USER_HZ is 100 on every mainstream platform).
    pub fn busy_us_per(&self, items: usize) -> f64 {
        self.busy_ticks as f64 * 10_000.0 / items.max(1) as f64
    }

    /// The share of the interval's CPU time the hypervisor took, in percent.
    pub fn steal_percent(&self) -> f64 {
        self.steal_ticks as f64 * 100.0 / self.total_ticks.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_steal_come_from_the_summary_line() {
        let before =
            MachineCpu::parse("cpu  100 0 50 800 10 5 5 40 0 0\ncpu0 50 0 25 400 5 2 3 20 0 0\n")
                .expect("a cpu line");
        let after = MachineCpu::parse("cpu  300 0 150 900 10 5 5 140 0 0\n").expect("a cpu line");
        let used = after.since(before);
        // 300 busy ticks (200 user + 100 system) over 3 items: 1 s each.
        assert_eq!(used.busy_us_per(3), 1_000_000.0);
        // 100 of the 500 ticks that passed were stolen.
        assert_eq!(used.steal_percent(), 20.0);
    }
}
