//! Counter series and window increases, computed exactly as Prometheus 2.x computes
//! `increase()`/`rate()`.
//!
//! A window `[t - W, t]` (closed at both ends, as in Prometheus 2.x) selects the samples of a
//! series; the raw increase is `last - first` plus the value before every counter reset, then
//! extrapolated towards the window edges (Prometheus's `extrapolatedRate`). A [`Series`] keeps a
//! running sum of the values lost at resets, so a window's raw increase is two lookups, and a
//! [`Cursor`] follows a window sliding forward in O(1) amortised steps: no evaluation rescans the
//! samples of its window.

use crate::slo::Millis;

/// One counter series: its labels (`__name__` included) and its samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    timestamps: Vec<Millis>,
    values: Vec<f64>,
    /// `reset_sums[i]`: sum of the values just before each reset among samples `0..=i`.
    reset_sums: Vec<f64>,
}

impl Series {
    pub fn new(labels: Vec<(String, String)>) -> Series {
        Series {
            labels,
            timestamps: Vec::new(),
            values: Vec::new(),
            reset_sums: Vec::new(),
        }
    }

    /// Appends a sample; the caller guarantees `at` is after the last sample.
    pub fn push(&mut self, at: Millis, value: f64) {
        let previous_sum = self.reset_sums.last().copied().unwrap_or(0.0);
        let lost = match self.values.last() {
            Some(&previous) if value < previous => previous,
            _ => 0.0,
        };
        self.timestamps.push(at);
        self.values.push(value);
        self.reset_sums.push(previous_sum + lost);
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
    pub fn increase(&self, range_start: Millis, range_end: Millis) -> Option<f64> {
        let lo = self.timestamps.partition_point(|&at| at < range_start);
        let hi = self.timestamps.partition_point(|&at| at <= range_end);
        self.increase_between(lo, hi, range_start, range_end)
    }

    /// The extrapolated increase over samples `lo..hi`, which lie in `[range_start, range_end]`.
    fn increase_between(
        &self,
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
        let raw = self.values[last] - first_value + (self.reset_sums[last] - self.reset_sums[lo]);
        Some(extrapolate(
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
/// `[range_start, range_end]`: towards each edge by the distance to it if that is within 1.1
/// average sample intervals, else by half an interval, and never past the counter's zero.
pub fn extrapolate(
    raw: f64,
    (first_at, first_value): (Millis, f64),
    last_at: Millis,
    count: usize,
    range_start: Millis,
    range_end: Millis,
) -> f64 {
    let sampled_interval = (last_at - first_at) as f64 / 1000.0;
    let average_step = sampled_interval / (count - 1) as f64;
    let mut to_start = (first_at - range_start) as f64 / 1000.0;
    let to_end = (range_end - last_at) as f64 / 1000.0;
    // A counter cannot go below zero: do not extrapolate the start past the zero point.
    if raw > 0.0 && first_value >= 0.0 {
        let to_zero = sampled_interval * (first_value / raw);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_step * 1.1;
    let mut extrapolated = sampled_interval;
    extrapolated += if to_start < threshold {
        to_start
    } else {
        average_step / 2.0
    };
    extrapolated += if to_end < threshold {
        to_end
    } else {
        average_step / 2.0
    };
    raw * (extrapolated / sampled_interval)
}

/// The samples of one series that fall in a window sliding forward in time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    lo: usize,
    hi: usize,
}

impl Cursor {
    /// `increase()` over `[range_start, range_end]`. Moving the window forward by a step costs
    /// O(1) amortised; moving it backwards falls back to a binary search.
    pub fn increase(
        &mut self,
        series: &Series,
        range_start: Millis,
        range_end: Millis,
    ) -> Option<f64> {
        let timestamps = &series.timestamps;
        self.lo = seek(timestamps, self.lo, |at| at < range_start);
        self.hi = seek(timestamps, self.hi, |at| at <= range_end);
        series.increase_between(self.lo, self.hi, range_start, range_end)
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
        assert_eq!(series(&samples).increase(0, 300_000), Some(100.0));
    }

    #[test]
    fn extrapolates_half_a_step_when_the_edge_is_far() {
        // Samples at 60 s .. 240 s (+10 each 30 s) in window [0, 300 s]: 60 s to either edge is
        // more than 1.1 × 30 s, so each side extends by 15 s: 60 × (180 + 30) / 180 = 70.
        let samples: Vec<(Millis, f64)> = (2..=8)
            .map(|i| (i * 30_000, 1000.0 + 10.0 * i as f64))
            .collect();
        let increase = series(&samples).increase(0, 300_000).unwrap();
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
        assert_eq!(series(&samples).increase(0, 120_000), Some(35.0));
        // The reset before the window does not count.
        assert_eq!(series(&samples).increase(90_000, 120_000), Some(10.0));
    }

    #[test]
    fn does_not_extrapolate_below_zero() {
        // A counter born at 0 s with value 1, +1 per 30 s; window starts 600 s earlier.
        let samples: Vec<(Millis, f64)> = (0..=4)
            .map(|i| (600_000 + i * 30_000, 1.0 + i as f64))
            .collect();
        let increase = series(&samples).increase(0, 720_000).unwrap();
        // to_zero = 120 s × 1/4 = 30 s replaces the 600 s to the window start, and is within
        // 1.1 × 30 s, so the start extends by 30 s (not 600 s): 4 × 150 / 120 = 5.
        assert!((increase - 5.0).abs() < 1e-9, "{increase}");
    }

    #[test]
    fn fewer_than_two_samples_is_no_value() {
        assert_eq!(series(&[(0, 1.0)]).increase(0, 60_000), None);
        assert_eq!(series(&[]).increase(0, 60_000), None);
    }

    #[test]
    fn cursor_agrees_with_binary_search_forwards_and_backwards() {
        let samples: Vec<(Millis, f64)> = (0..500)
            .filter(|i| i % 37 != 0) // gaps
            .map(|i| (i * 15_000, if i % 101 == 50 { 3.0 } else { 7.0 * i as f64 }))
            .collect();
        let series = series(&samples);
        let mut cursor = Cursor::default();
        let ends: Vec<Millis> = (0..400)
            .map(|i| i * 20_000)
            .chain((0..50).map(|i| 4_000_000 - i * 60_000))
            .collect();
        for end in ends {
            let start = end - 600_000;
            assert_eq!(
                cursor.increase(&series, start, end),
                series.increase(start, end),
                "end {end}"
            );
        }
    }
}
