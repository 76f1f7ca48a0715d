//! Counter series and window increases, computed exactly as Prometheus computes
//! `increase()`/`rate()`, in the arithmetic of the Prometheus version at hand ([`Semantics`]).
//!
//! A window selects the samples of a series (`[t - W, t]` before Prometheus 3.0, `(t - W, t]`
//! from 3.0 on); the raw increase is `last - first` plus the value before every counter reset,
//! then extrapolated towards the window edges (Prometheus's `extrapolatedRate`). A [`Series`]
//! keeps a running sum of the values lost at resets, so a window's raw increase is two lookups,
//! and a [`Cursor`] follows a window sliding forward in O(1) amortised steps: no evaluation
//! rescans the samples of its window.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::slo::Millis;

/// Whose window arithmetic to follow. Prometheus changed it twice, and the same samples give
/// different window values (and decisions a step apart) under each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Semantics {
    /// Prometheus 2.0 to 2.50: windows closed at both ends, `[t − w, t]`; the start is clamped
    /// to the counter's zero point before the 1.1-intervals test.
    #[serde(rename = "prometheus-2")]
    Prometheus2,
    /// Prometheus 2.51 to 2.55: closed windows; the 1.1-intervals test comes first, then the
    /// zero-point clamp (prometheus#13725).
    #[serde(rename = "prometheus-2.51")]
    Prometheus2_51,
    /// Prometheus 3.0 and later: left-open windows `(t − w, t]` (a sample exactly at `t − w` is
    /// outside), the test before the clamp as in 2.51.
    #[serde(rename = "prometheus-3")]
    #[default]
    Prometheus3,
}

impl Semantics {
    /// Current Prometheus: what a replay or the demo uses unless told otherwise.
    pub const CURRENT: Semantics = Semantics::Prometheus3;

    /// The semantics of a Prometheus version as `buildinfo` reports it (`3.16.0`,
    /// `2.42.0+ds`, `v2.51.0-rc.0`), or of a version written by a user (`3`, `2.51`, `2`).
    pub fn of_version(version: &str) -> Result<Semantics, String> {
        let trimmed = version.trim();
        let numbers = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let core = numbers
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or("");
        let mut parts = core.split('.');
        let major: Option<u64> = parts.next().and_then(|part| part.parse().ok());
        let minor: u64 = match parts.next() {
            None => 0,
            Some(part) => part.parse().map_err(|_| invalid_version(version))?,
        };
        match major {
            Some(2) if minor < 51 => Ok(Semantics::Prometheus2),
            Some(2) => Ok(Semantics::Prometheus2_51),
            Some(major) if major >= 3 => Ok(Semantics::Prometheus3),
            _ => Err(invalid_version(version)),
        }
    }

    /// The stable name, as JSON output and `/api/v1/status` give it.
    pub fn name(self) -> &'static str {
        match self {
            Semantics::Prometheus2 => "prometheus-2",
            Semantics::Prometheus2_51 => "prometheus-2.51",
            Semantics::Prometheus3 => "prometheus-3",
        }
    }

    /// What it means, in words, for status pages and `check`.
    pub fn describe(self) -> &'static str {
        match self {
            Semantics::Prometheus2 => {
                "Prometheus 2.0–2.50: windows [t−w, t], zero-point clamp before the extrapolation test"
            }
            Semantics::Prometheus2_51 => {
                "Prometheus 2.51–2.55: windows [t−w, t], extrapolation test before the zero-point clamp"
            }
            Semantics::Prometheus3 => {
                "Prometheus 3.x: left-open windows (t−w, t], extrapolation test before the zero-point clamp"
            }
        }
    }

    /// Whether a sample at `at` lies before the window that starts at `range_start`.
    pub fn before_window(self, at: Millis, range_start: Millis) -> bool {
        match self {
            Semantics::Prometheus3 => at <= range_start,
            Semantics::Prometheus2 | Semantics::Prometheus2_51 => at < range_start,
        }
    }
}

fn invalid_version(version: &str) -> String {
    format!(
        "{version:?} is not a Prometheus version (expected e.g. `3`, `3.16.0`, `2.51` or `2.42.0`)"
    )
}

impl fmt::Display for Semantics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Semantics {
    type Err = String;

    /// A stable name (`prometheus-3`) or a version (`3`, `2.51`, `2.42.0`).
    fn from_str(text: &str) -> Result<Semantics, String> {
        let text = text.trim();
        let version = text.strip_prefix("prometheus-").unwrap_or(text);
        Semantics::of_version(version)
    }
}

/// One counter series: its labels (`__name__` included) and its samples in time order, 16 bytes
/// a sample (a time and a value) and 16 more per counter reset.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    timestamps: Vec<Millis>,
    values: Vec<f64>,
    /// One entry per counter reset, in sample order: (the index of the first sample after the
    /// reset, the sum of the values just before each reset up to and including this one).
    /// Counters rarely reset, so this is kept sparse rather than a sum per sample.
    resets: Vec<(usize, f64)>,
}

impl Series {
    pub fn new(labels: Vec<(String, String)>) -> Series {
        Series {
            labels,
            timestamps: Vec::new(),
            values: Vec::new(),
            resets: Vec::new(),
        }
    }

    /// Appends a sample; the caller guarantees `at` is after the last sample.
    pub fn push(&mut self, at: Millis, value: f64) {
        if let Some(&previous) = self.values.last()
            && value < previous
        {
            let previous_sum = self.resets.last().map_or(0.0, |&(_, sum)| sum);
            self.resets
                .push((self.values.len(), previous_sum + previous));
        }
        self.timestamps.push(at);
        self.values.push(value);
    }

    /// Gives back the room the sample vectors grew into beyond their samples.
    pub fn shrink_to_fit(&mut self) {
        self.timestamps.shrink_to_fit();
        self.values.shrink_to_fit();
        self.resets.shrink_to_fit();
    }

    /// The sum of the values just before each reset among samples `0..=index`.
    fn reset_sum(&self, index: usize) -> f64 {
        match self.resets.partition_point(|&(at, _)| at <= index) {
            0 => 0.0,
            after => self.resets[after - 1].1,
        }
    }

    pub fn last_timestamp(&self) -> Option<Millis> {
        self.timestamps.last().copied()
    }

    pub fn first_timestamp(&self) -> Option<Millis> {
        self.timestamps.first().copied()
    }

    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or("")
    }

    /// `increase(series[range_end - range_start])` evaluated at `range_end`, or `None` when the
    /// window holds fewer than two samples (Prometheus drops such series from the result).
    pub fn increase(
        &self,
        semantics: Semantics,
        range_start: Millis,
        range_end: Millis,
    ) -> Option<f64> {
        let lo = self
            .timestamps
            .partition_point(|&at| semantics.before_window(at, range_start));
        let hi = self.timestamps.partition_point(|&at| at <= range_end);
        self.increase_between(semantics, lo, hi, range_start, range_end)
    }

    /// The extrapolated increase over samples `lo..hi`, which lie in the window.
    fn increase_between(
        &self,
        semantics: Semantics,
        lo: usize,
        hi: usize,
        range_start: Millis,
        range_end: Millis,
    ) -> Option<f64> {
        if hi < lo + 2 {
            return None;
        }
        let last = hi - 1;
        let first_value = self.values[lo];
        let raw = self.values[last] - first_value + (self.reset_sum(last) - self.reset_sum(lo));
        Some(extrapolate(
            semantics,
            raw,
            (self.timestamps[lo], first_value),
            self.timestamps[last],
            hi - lo,
            range_start,
            range_end,
        ))
    }
}

/// Prometheus's extrapolation of a counter's raw increase over `count` samples, the first at
/// `first_at` with `first_value` and the last at `last_at`, to the window
/// `[range_start, range_end]`: towards each edge by the distance to it if that is below 1.1
/// average sample intervals, else by half an interval, and never past the counter's zero. The
/// order of the last two differs between versions ([`Semantics`]).
pub fn extrapolate(
    semantics: Semantics,
    raw: f64,
    (first_at, first_value): (Millis, f64),
    last_at: Millis,
    count: usize,
    range_start: Millis,
    range_end: Millis,
) -> f64 {
    let sampled_interval = (last_at - first_at) as f64 / 1000.0;
    let average_step = sampled_interval / (count - 1) as f64;
    let threshold = average_step * 1.1;
    let mut to_start = (first_at - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last_at) as f64 / 1000.0;
    // A counter cannot go below zero: do not extrapolate the start past the zero point.
    let clamp_to_zero = |to_start: f64| {
        if raw > 0.0 && first_value >= 0.0 {
            to_start.min(sampled_interval * (first_value / raw))
        } else {
            to_start
        }
    };
    match semantics {
        Semantics::Prometheus2 => {
            to_start = clamp_to_zero(to_start);
            if threshold <= to_start {
                to_start = average_step / 2.0;
            }
        }
        Semantics::Prometheus2_51 | Semantics::Prometheus3 => {
            if threshold <= to_start {
                to_start = average_step / 2.0;
            }
            to_start = clamp_to_zero(to_start);
        }
    }
    if threshold <= to_end {
        to_end = average_step / 2.0;
    }
    raw * ((sampled_interval + to_start + to_end) / sampled_interval)
}

/// The samples of one series that fall in a window sliding forward in time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    lo: usize,
    hi: usize,
}

impl Cursor {
    /// `increase()` over the window ending at `range_end`. Moving the window forward by a step
    /// costs O(1) amortised; moving it backwards falls back to a binary search.
    pub fn increase(
        &mut self,
        semantics: Semantics,
        series: &Series,
        range_start: Millis,
        range_end: Millis,
    ) -> Option<f64> {
        let timestamps = &series.timestamps;
        self.lo = seek(timestamps, self.lo, |at| {
            semantics.before_window(at, range_start)
        });
        self.hi = seek(timestamps, self.hi, |at| at <= range_end);
        series.increase_between(semantics, self.lo, self.hi, range_start, range_end)
    }
}

/// The first index at or after which `before` is false, starting the search from `from`.
/// Walks a few samples forward (the usual case for a window moved by one step), else
/// searches; a window moved backwards is searched from the start.
fn seek(timestamps: &[Millis], from: usize, before: impl Fn(Millis) -> bool) -> usize {
    let from = from.min(timestamps.len());
    if from > 0 && !before(timestamps[from - 1]) {
        return timestamps.partition_point(|&at| before(at));
    }
    const WALK: usize = 8;
    let mut index = from;
    while index < timestamps.len() && index < from + WALK {
        if !before(timestamps[index]) {
            return index;
        }
        index += 1;
    }
    index + timestamps[index..].partition_point(|&at| before(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P2: Semantics = Semantics::Prometheus2;
    const P3: Semantics = Semantics::Prometheus3;

    fn series(samples: &[(Millis, f64)]) -> Series {
        let mut series = Series::new(Vec::new());
        for &(at, value) in samples {
            series.push(at, value);
        }
        series
    }

    #[test]
    fn regular_samples_covering_the_window_are_not_extrapolated() {
        // Samples at 0, 30 s, ..., 300 s, +10 each: the window [0, 300 s] holds all 11.
        let samples: Vec<(Millis, f64)> = (0..=10)
            .map(|i| (i * 30_000, 100.0 + 10.0 * i as f64))
            .collect();
        assert_eq!(series(&samples).increase(P2, 0, 300_000), Some(100.0));
    }

    #[test]
    fn extrapolates_half_a_step_when_the_edge_is_far() {
        // Samples at 60 s .. 240 s (+10 each 30 s) in window [0, 300 s]: 60 s to either edge is
        // more than 1.1 × 30 s, so each side extends by 15 s: 60 × (180 + 30) / 180 = 70.
        let samples: Vec<(Millis, f64)> = (2..=8)
            .map(|i| (i * 30_000, 1000.0 + 10.0 * i as f64))
            .collect();
        let increase = series(&samples).increase(P2, 0, 300_000).unwrap();
        assert!((increase - 70.0).abs() < 1e-9, "{increase}");
    }

    #[test]
    fn counter_resets_add_the_value_before_the_reset() {
        // 10, 20, 30, reset to 5, 15: raw increase = 15 - 10 + 30 = 35.
        let samples = [
            (0, 10.0),
            (30_000, 20.0),
            (60_000, 30.0),
            (90_000, 5.0),
            (120_000, 15.0),
        ];
        assert_eq!(series(&samples).increase(P2, 0, 120_000), Some(35.0));
        // The reset before the window does not count.
        assert_eq!(series(&samples).increase(P2, 90_000, 120_000), Some(10.0));
    }

    #[test]
    fn does_not_extrapolate_below_zero() {
        // A counter born at 0 s with value 1, +1 per 30 s; window starts 600 s earlier.
        let samples: Vec<(Millis, f64)> = (0..=4)
            .map(|i| (600_000 + i * 30_000, 1.0 + i as f64))
            .collect();
        let increase = series(&samples).increase(P2, 0, 720_000).unwrap();
        // to_zero = 120 s × 1/4 = 30 s replaces the 600 s to the window start, and is within
        // 1.1 × 30 s, so the start extends by 30 s (not 600 s): 4 × 150 / 120 = 5.
        assert!((increase - 5.0).abs() < 1e-9, "{increase}");
    }

    #[test]
    fn fewer_than_two_samples_is_no_value() {
        assert_eq!(series(&[(0, 1.0)]).increase(P2, 0, 60_000), None);
        assert_eq!(series(&[]).increase(P2, 0, 60_000), None);
    }

    #[test]
    fn cursor_agrees_with_binary_search_forwards_and_backwards() {
        let samples: Vec<(Millis, f64)> = (0..500)
            .filter(|i| i % 37 != 0) // gaps
            .map(|i| (i * 15_000, if i % 101 == 50 { 3.0 } else { 7.0 * i as f64 }))
            .collect();
        let series = series(&samples);
        // Window edges on sample times and between them, under both window shapes.
        for semantics in [P2, P3] {
            let mut cursor = Cursor::default();
            let ends: Vec<Millis> = (0..400)
                .map(|i| i * 15_000)
                .chain((0..400).map(|i| i * 20_000))
                .chain((0..50).map(|i| 4_000_000 - i * 60_000))
                .collect();
            for end in ends {
                let start = end - 600_000;
                assert_eq!(
                    cursor.increase(semantics, &series, start, end),
                    series.increase(semantics, start, end),
                    "{semantics} end {end}"
                );
            }
        }
    }

    #[test]
    fn prometheus_3_leaves_a_sample_on_the_window_start_out() {
        // +100 between 0 s and 30 s, flat after: the sample at the window's start is in the
        // window on 2.x ([t−w, t]) and outside on 3.x ((t−w, t]).
        let samples: Vec<(Millis, f64)> = (0..=10)
            .map(|i| (i * 30_000, if i == 0 { 0.0 } else { 100.0 }))
            .collect();
        let series = series(&samples);
        assert_eq!(series.increase(P2, 0, 300_000), Some(100.0));
        assert_eq!(
            series.increase(Semantics::Prometheus2_51, 0, 300_000),
            Some(100.0)
        );
        assert_eq!(series.increase(P3, 0, 300_000), Some(0.0));
        // A start between samples selects the same samples under both.
        assert_eq!(
            series.increase(P2, 1, 300_000),
            series.increase(P3, 1, 300_000)
        );
    }

    #[test]
    fn from_2_51_the_extrapolation_test_comes_before_the_zero_point_clamp() {
        // The counter of does_not_extrapolate_below_zero: the start is 600 s away, beyond 1.1
        // intervals, so 2.51+ extends by half an interval (15 s), then clamps to the zero point
        // (30 s away, no change): 4 × 135 / 120 = 4.5. 2.x clamped first (30 s, within 1.1
        // intervals) and extended by 30 s: 5.
        let samples: Vec<(Millis, f64)> = (0..=4)
            .map(|i| (600_000 + i * 30_000, 1.0 + i as f64))
            .collect();
        let series = series(&samples);
        let increase = |semantics| series.increase(semantics, 0, 720_000).unwrap();
        assert!((increase(P2) - 5.0).abs() < 1e-9);
        assert!((increase(Semantics::Prometheus2_51) - 4.5).abs() < 1e-9);
        assert!((increase(P3) - 4.5).abs() < 1e-9);
        // Closer to zero than half an interval: both clamp to the zero point.
        let young: Vec<(Millis, f64)> = (0..=4)
            .map(|i| (600_000 + i * 30_000, 0.2 + i as f64))
            .collect();
        let young = self::series(&young);
        let both = [P2, P3].map(|semantics| young.increase(semantics, 0, 720_000).unwrap());
        assert!((both[0] - both[1]).abs() < 1e-9, "{both:?}");
    }

    #[test]
    fn semantics_from_versions() {
        for (version, expected) in [
            ("2.42.0", Semantics::Prometheus2),
            ("2.42.0+ds", Semantics::Prometheus2),
            ("v2.50.1", Semantics::Prometheus2),
            ("2.51.0-rc.0", Semantics::Prometheus2_51),
            ("2.55.1", Semantics::Prometheus2_51),
            ("3.0.0", Semantics::Prometheus3),
            ("3.16.0", Semantics::Prometheus3),
            ("3", Semantics::Prometheus3),
            ("2", Semantics::Prometheus2),
        ] {
            assert_eq!(Semantics::of_version(version), Ok(expected), "{version}");
        }
        assert_eq!("prometheus-2.51".parse(), Ok(Semantics::Prometheus2_51));
        assert_eq!("2.42".parse(), Ok(Semantics::Prometheus2));
        for bad in ["", "1.8.2", "x", "2.x", "0.34.0"] {
            assert!(Semantics::of_version(bad).is_err(), "{bad:?}");
        }
    }
}
