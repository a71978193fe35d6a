//! Counting: latency percentiles, errors tallied by reply code, rates.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Latency samples of one run.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    /// Adds one sample.
    pub fn record(&mut self, sample: Duration) {
        self.samples.push(sample);
    }

    /// Adds the samples of another session.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The nearest-rank percentile `p` (0 to 100): the smallest sample that at
    /// least `p` % of the samples do not exceed.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        nearest_rank(&sorted, p)
    }

    /// p50, p90, p99 and the largest, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let ms = |p: f64| nearest_rank(&sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        LatencySummary {
            samples: sorted.len(),
            p50_ms: ms(50.0),
            p90_ms: ms(90.0),
            p99_ms: ms(99.0),
            max_ms: ms(100.0),
        }
    }
}

fn nearest_rank(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The percentiles of a run's latencies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// How many samples.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

impl LatencySummary {
    /// `p50 4.4 ms, p90 6.0 ms, p99 10.1 ms (max 20.3 ms)`.
    pub fn describe(&self) -> String {
        if self.samples == 0 {
            return "no sample".into();
        }
        format!(
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms (max {:.1} ms)",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Failures counted by what the server answered (`"451"`), or by what went
/// wrong without an answer (`"connection"`, `"timeout"`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ErrorTally {
    counts: BTreeMap<String, u64>,
}

impl ErrorTally {
    /// Counts one failure under `key`.
    pub fn add(&mut self, key: impl Into<String>) {
        *self.counts.entry(key.into()).or_default() += 1;
    }

    /// Adds the counts of another session.
    pub fn merge(&mut self, other: ErrorTally) {
        for (key, n) in other.counts {
            *self.counts.entry(key).or_default() += n;
        }
    }

    /// How many under `key`.
    pub fn get(&self, key: &str) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `451 ×3, 550 ×2`, or `none`.
    pub fn describe(&self) -> String {
        if self.counts.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(key, n)| format!("{key} ×{n}"))
            .collect();
        parts.join(", ")
    }
}

/// `count` per second over `elapsed` (0 for an empty interval).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// A duration in milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn of_ms(values: impl IntoIterator<Item = u64>) -> Latencies {
        let mut l = Latencies::default();
        for v in values {
            l.record(Duration::from_millis(v));
        }
        l
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // 1..=100 ms in a shuffled order: the p-th percentile is p ms.
        let l = of_ms((1..=100).map(|i| (i * 37) % 100 + 1));
        assert_eq!(l.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(l.percentile(90.0), Some(Duration::from_millis(90)));
        assert_eq!(l.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(l.percentile(100.0), Some(Duration::from_millis(100)));
        assert_eq!(l.percentile(0.0), Some(Duration::from_millis(1)));
        let s = l.summary();
        assert_eq!(
            (s.samples, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
    }

    #[test]
    fn percentiles_of_few_samples() {
        let l = of_ms([10, 30, 20]);
        assert_eq!(l.percentile(50.0), Some(Duration::from_millis(20)));
        assert_eq!(l.percentile(99.0), Some(Duration::from_millis(30)));
        let one = of_ms([7]);
        assert_eq!(one.percentile(1.0), Some(Duration::from_millis(7)));
        assert_eq!(one.percentile(99.0), Some(Duration::from_millis(7)));
        assert_eq!(Latencies::default().percentile(50.0), None);
        assert_eq!(Latencies::default().summary().describe(), "no sample");
    }

    #[test]
    fn merged_sessions_count_as_one_run() {
        let mut a = of_ms([1, 2]);
        a.merge(of_ms([3, 4]));
        assert_eq!(a.len(), 4);
        assert_eq!(a.percentile(50.0), Some(Duration::from_millis(2)));
    }

    #[test]
    fn the_tally_counts_by_code() {
        let mut a = ErrorTally::default();
        a.add("451");
        a.add("550");
        a.add("451");
        let mut b = ErrorTally::default();
        b.add("timeout");
        b.add("451");
        a.merge(b);
        assert_eq!((a.get("451"), a.get("550"), a.get("timeout")), (3, 1, 1));
        assert_eq!(a.get("421"), 0);
        assert_eq!(a.total(), 5);
        assert_eq!(a.describe(), "451 ×3, 550 ×1, timeout ×1");
        assert_eq!(ErrorTally::default().describe(), "none");
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"451": 3, "550": 1, "timeout": 1})
        );
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
    }
}
