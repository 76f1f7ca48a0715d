//! Window values from a [`Recording`]: SLO instances found in the recorded series, and their
//! error ratios over any window, computed locally as Prometheus computes
//! `sum by (...) (rate(...[w]))` on the same samples.
//!
//! Absent error series count as zero errors (PromQL would return no sample for the ratio; an SLO
//! with no failing request is not "no data").

use std::collections::BTreeMap;
use std::time::Duration;

use crate::burn::WindowValue;
use crate::engine::InstanceLabels;
use crate::query::{CounterQuery, LocalSli};
use crate::slo::{Millis, Slo, millis};
use crate::source::openmetrics::Recording;
use crate::window::{Cursor, Series};

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

    /// The window value of instance `index` over `[at - window, at]`.
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
    /// The window value over `[at - window, at]`; `None` when the total has no series with two
    /// samples in the window. Windows of the SLO's tiers slide with cursors; any other window
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
        let (numerator, total) = match self
            .cursors
            .iter_mut()
            .find(|(length, _, _)| *length == window)
        {
            Some((_, numerator_cursors, total_cursors)) => (
                sum_with_cursors(series, &self.numerator, numerator_cursors, start, at),
                sum_with_cursors(series, &self.total, total_cursors, start, at),
            ),
            None => (
                sum_searching(series, &self.numerator, start, at),
                sum_searching(series, &self.total, start, at),
            ),
        };
        let total = total?;
        let numerator = numerator.unwrap_or(0.0);
        Some(match self.kind {
            Numerator::Bad => WindowValue::new(numerator, total),
            Numerator::Good => WindowValue::new(total - numerator, total),
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
    series: &[Series],
    indices: &[usize],
    cursors: &mut [Cursor],
    start: Millis,
    end: Millis,
) -> Option<f64> {
    let mut sum = None;
    for (&index, cursor) in indices.iter().zip(cursors.iter_mut()) {
        if let Some(increase) = cursor.increase(&series[index], start, end) {
            *sum.get_or_insert(0.0) += increase;
        }
    }
    sum
}

fn sum_searching(series: &[Series], indices: &[usize], start: Millis, end: Millis) -> Option<f64> {
    let mut sum = None;
    for &index in indices {
        if let Some(increase) = series[index].increase(start, end) {
            *sum.get_or_insert(0.0) += increase;
        }
    }
    sum
}
