//! Window values from a [`Recording`]: SLO instances found in the recorded series, and their
//! error ratios over any window, computed locally as Prometheus computes
//! `sum by (...) (rate(...[w]))` on the same samples.
//!
//! Absent error series count as zero errors (PromQL would return no sample for the ratio; an SLO
//! with no failing request is not "no data"). Absent good series (`1 - good / total`, a latency
//! SLI's bucket) are no data, as in PromQL: a bucket bound that matches no `le` never reads as
//! 100% errors.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::burn::WindowValue;
use crate::engine::InstanceLabels;
use crate::query::{CounterQuery, LocalSli};
use crate::slo::{Millis, Slo, millis};
use crate::source::openmetrics::{Recording, Selection};
use crate::window::{Cursor, Semantics, Series};

/// The series the SLOs of a replay read from a recording: those the counter queries of their
/// SLIs select. Reading a recording keeps only these (see [`crate::source::openmetrics::read`]);
/// an SLO that cannot be replayed from a recording selects none.
pub fn selection(slos: &[Slo]) -> Selection {
    let locals: Vec<LocalSli> = slos.iter().filter_map(|slo| slo.sli.local().ok()).collect();
    Selection::new(locals.iter().flat_map(|local| {
        let (numerator, total) = local.queries();
        [numerator, total]
    }))
}

/// One SLO instance bound to the recorded series that feed it.
#[derive(Debug, Clone)]
pub struct RecordedInstance {
    pub labels: InstanceLabels,
    kind: Numerator,
    numerator: Vec<usize>,
    total: Vec<usize>,
    /// Per window (milliseconds): a cursor per numerator series and per total series.
    cursors: Vec<(Millis, Vec<Cursor>, Vec<Cursor>)>,
}

/// Whether the numerator counts bad events or good ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numerator {
    Bad,
    Good,
}

/// The instances of one SLO in a recording.
#[derive(Debug, Clone)]
pub struct RecordedSlo {
    pub instances: Vec<RecordedInstance>,
}

impl RecordedSlo {
    /// Finds the SLO's instances: one per distinct value set of the grouping labels among the
    /// series the total query selects.
    pub fn bind(slo: &Slo, recording: &Recording) -> Result<RecordedSlo, String> {
        let local = slo.sli.local()?;
        let (numerator_query, total_query) = local.queries();
        let numerator = match local {
            LocalSli::BadOverTotal { .. } => Numerator::Bad,
            LocalSli::OneMinusGoodOverTotal { .. } => Numerator::Good,
        };
        let mut instances: BTreeMap<InstanceLabels, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
        for (index, series) in recording.series.iter().enumerate() {
            if total_query.selects(&series.labels) {
                instances
                    .entry(group_key(total_query, series))
                    .or_default()
                    .1
                    .push(index);
            }
        }
        for (index, series) in recording.series.iter().enumerate() {
            if numerator_query.selects(&series.labels)
                && let Some(instance) = instances.get_mut(&group_key(numerator_query, series))
            {
                instance.0.push(index);
            }
        }
        let windows: Vec<Millis> = slo.windows().into_iter().map(millis).collect();
        let instances = instances
            .into_iter()
            .map(|(labels, (numerator_series, total))| RecordedInstance {
                kind: numerator,
                cursors: windows
                    .iter()
                    .map(|&window| {
                        (
                            window,
                            vec![Cursor::default(); numerator_series.len()],
                            vec![Cursor::default(); total.len()],
                        )
                    })
                    .collect(),
                labels,
                numerator: numerator_series,
                total,
            })
            .collect();
        Ok(RecordedSlo { instances })
    }

    /// The window value of instance `index` over the `window` ending at `at` (its start in
    /// the window or not as `recording.semantics` says).
    pub fn measure(
        &mut self,
        recording: &Recording,
        index: usize,
        at: Millis,
        window: Duration,
    ) -> Option<WindowValue> {
        self.instances[index].measure(recording, at, window)
    }
}

impl RecordedInstance {
    /// The window value over the `window` ending at `at` (its start in the window or not as
    /// `recording.semantics` says); `None` when the total has no series with two samples in
    /// the window. Windows of the SLO's tiers slide with cursors; any other window
    /// (the budget period, say) is found by binary search.
    pub fn measure(
        &mut self,
        recording: &Recording,
        at: Millis,
        window: Duration,
    ) -> Option<WindowValue> {
        let window = millis(window);
        let start = at - window;
        let series = &recording.series;
        let semantics = recording.semantics;
        let (numerator, total) = match self
            .cursors
            .iter_mut()
            .find(|(length, _, _)| *length == window)
        {
            Some((_, numerator_cursors, total_cursors)) => (
                sum_with_cursors(
                    semantics,
                    series,
                    &self.numerator,
                    numerator_cursors,
                    start,
                    at,
                ),
                sum_with_cursors(semantics, series, &self.total, total_cursors, start, at),
            ),
            None => (
                sum_searching(semantics, series, &self.numerator, start, at),
                sum_searching(semantics, series, &self.total, start, at),
            ),
        };
        let total = total?;
        Some(match self.kind {
            // No error series: no errors (see the module's doc).
            Numerator::Bad => WindowValue::new(numerator.unwrap_or(0.0), total),
            // No good series (a bucket bound that matches no `le`): no data, as PromQL's
            // division has none; never "every request failed".
            Numerator::Good => WindowValue::new(total - numerator?, total),
        })
    }
}

fn group_key(query: &CounterQuery, series: &Series) -> InstanceLabels {
    query
        .by
        .iter()
        .map(|label| (label.clone(), series.label(label).to_string()))
        .collect()
}

fn sum_with_cursors(
    semantics: Semantics,
    series: &[Series],
    indices: &[usize],
    cursors: &mut [Cursor],
    start: Millis,
    end: Millis,
) -> Option<f64> {
    let mut sum = None;
    for (&index, cursor) in indices.iter().zip(cursors.iter_mut()) {
        if let Some(increase) = cursor.increase(semantics, &series[index], start, end) {
            *sum.get_or_insert(0.0) += increase;
        }
    }
    sum
}

fn sum_searching(
    semantics: Semantics,
    series: &[Series],
    indices: &[usize],
    start: Millis,
    end: Millis,
) -> Option<f64> {
    let mut sum = None;
    for &index in indices {
        if let Some(increase) = series[index].increase(semantics, start, end) {
            *sum.get_or_insert(0.0) += increase;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A latency SLI whose bound matches no bucket is no data, never "every request was
    /// slow"; the bound matches the bucket however the recording spells it.
    #[test]
    fn a_bound_that_matches_no_bucket_is_no_data() {
        let mut text = String::from("# TYPE d histogram\n");
        for i in 0..20 {
            let t = 1_700_000_000 + 30 * i;
            for (le, value) in [("0.5", 8 * i), ("1.0", 9 * i), ("+Inf", 10 * i)] {
                text.push_str(&format!("d_bucket{{le=\"{le}\"}} {value} {t}\n"));
            }
            text.push_str(&format!("d_count {} {t}\n", 10 * i));
        }
        let recording = crate::source::openmetrics::parse("d.om", &text).expect("parses");
        let measure = |threshold: &str| {
            let spec = format!(
                "version: burnwatch/v1\nservice: s\nslos:\n  - name: latency\n    objective: 99\n    \
                 sli:\n      latency:\n        histogram: d\n        threshold: \"{threshold}\"\n"
            );
            let slo = match crate::config::load_str("s.yaml", &spec, std::path::Path::new(".")) {
                Ok(crate::config::Document::Slos(mut slos)) => slos.remove(0),
                other => panic!("{other:?}"),
            };
            let mut bound = RecordedSlo::bind(&slo, &recording).expect("binds");
            bound.measure(&recording, 0, 1_700_000_570_000, Duration::from_secs(300))
        };
        // `1` finds the bucket written `1.0`: 10% slower than 1 s.
        let value = measure("1").expect("a value");
        assert!((value.error_ratio - 0.1).abs() < 1e-9, "{value:?}");
        assert!((measure("0.5").expect("a value").error_ratio - 0.2).abs() < 1e-9);
        // No bucket at 2 s: no data.
        assert_eq!(measure("2"), None);
    }
}
