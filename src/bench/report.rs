//! What a benchmark prints and writes: a table, and JSON with the machine and the date.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::BenchError;
use crate::cli::cores;

/// One scenario's results: named columns, one row per configuration measured.
pub struct Report {
    scenario: &'static str,
    params: Value,
    columns: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Report {
    /// An empty report of `scenario` run with `params`, with these columns.
    pub fn new(scenario: &'static str, params: Value, columns: Vec<&'static str>) -> Self {
        Report {
            scenario,
            params,
            columns,
            rows: Vec::new(),
        }
    }

    /// Add a row (one value per column).
    pub fn row(&mut self, values: Vec<Value>) {
        self.rows.push(values);
    }

    /// The table for a terminal.
    pub fn table(&self) -> String {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header(self.columns.clone());
        for row in &self.rows {
            table.add_row(row.iter().map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
                    _ => n.to_string(),
                },
                // A figure this run did not measure.
                Value::Null => "-".to_string(),
                other => other.to_string(),
            }));
        }
        format!(
            "{} ({}; {})\n{table}",
            self.scenario,
            machine_line(),
            crate::clock::rfc3339(crate::clock::Clock::system().now_ms())
        )
    }

    /// Write `<dir>/<scenario>.json`; returns its path.
    pub fn write_json(&self, dir: &Path) -> Result<PathBuf, BenchError> {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let fields: Map<String, Value> = self
                    .columns
                    .iter()
                    .map(|c| c.to_string())
                    .zip(row.iter().cloned())
                    .collect();
                Value::Object(fields)
            })
            .collect();
        let document = json!({
            "scenario": self.scenario,
            "date": crate::clock::rfc3339(crate::clock::Clock::system().now_ms()),
            "machine": { "cores": cores(), "memory_bytes": memory_bytes(), "cpu": cpu_model() },
            "params": self.params,
            "rows": rows,
        });
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::Io(format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!("{}.json", self.scenario));
        let text = serde_json::to_string_pretty(&document).unwrap_or_default();
        std::fs::write(&path, text)
            .map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))?;
        Ok(path)
    }
}

/// The rest of the first line of a /proc file that starts with `key`, trimmed.
pub fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(
        line[key.len()..]
            .trim_start_matches([':', ' ', '\t'])
            .trim()
            .to_string(),
    )
}

/// A /proc size field ("123456 kB") in bytes.
pub fn proc_kib(file: &str, key: &str) -> u64 {
    proc_field(file, key)
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn memory_bytes() -> u64 {
    crate::cli::machine_memory_bytes().unwrap_or(0)
}

fn cpu_model() -> String {
    proc_field("/proc/cpuinfo", "model name").unwrap_or_default()
}

fn machine_line() -> String {
    format!(
        "{} cores, {:.0} GiB, {}",
        cores(),
        memory_bytes() as f64 / (1u64 << 30) as f64,
        cpu_model()
    )
}

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Record one sample.
    pub fn record(&mut self, duration: std::time::Duration) {
        self.0
            .push(u32::try_from(duration.as_micros()).unwrap_or(u32::MAX));
    }

    /// Add another set's samples.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (0..=100), in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        f64::from(self.0[rank.min(self.0.len() - 1)]) / 1_000.0
    }
}

/// The index of the median of `values` (by value).
pub fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    order.get(values.len() / 2).copied().unwrap_or(0)
}

/// Every run's rate, rounded, as "18427 18325 20396" for a report's runs column.
pub fn runs_column(rates: &[f64]) -> serde_json::Value {
    serde_json::Value::String(
        rates
            .iter()
            .map(|rate| rate.round().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    )
}
