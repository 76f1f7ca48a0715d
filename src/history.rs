//! A compact, bounded history of every SLO instance's burn rates, kept by burnwatch itself so
//! the status page draws its charts without asking Prometheus again.
//!
//! Per instance: [`POINTS`] buckets spanning the SLO's period, each holding, per window, the
//! highest burn rate evaluated in it (a short spike stays visible at any zoom), and the
//! intervals its alerts fired. Memory is `POINTS × windows × 4` bytes per instance whatever
//! the evaluation interval; an instance not seen for a whole period is forgotten. Pure: time
//! is a parameter, and [`SloHistory`] is encoded for the store with the checkpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::Change;
use crate::burn::WindowValue;
use crate::engine::{Event, InstanceLabels};
use crate::slo::{Millis, Slo, TierKind, millis};

/// Buckets per instance across the period (3 hours each for 30 days, 15 seconds for 1 hour).
pub const POINTS: usize = 240;

/// Alert intervals kept per instance (the oldest go first).
const MAX_SPANS: usize = 64;

/// When one alert of an instance fired, and resolved (`None` while firing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlertSpan {
    pub tier: TierKind,
    pub from: Millis,
    pub to: Option<Millis>,
}

/// One instance's buckets and alert intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceHistory {
    /// The bucket number (time ÷ width) of the newest bucket.
    newest: i64,
    /// Row `r` of the ring is bucket `newest − ((head − r) mod POINTS)`; each row holds one
    /// burn rate per window (NaN: nothing evaluated).
    head: usize,
    burn: Vec<f32>,
    spans: Vec<AlertSpan>,
}

/// The history of one SLO's instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloHistory {
    /// The bucket width: the period ÷ [`POINTS`].
    width: Millis,
    /// The windows recorded, in row order.
    windows: Vec<Duration>,
    instances: BTreeMap<InstanceLabels, InstanceHistory>,
}

/// One window's series for a chart: (bucket start, highest burn rate in it).
pub type Series = Vec<(Millis, f64)>;

impl SloHistory {
    /// An empty history for `slo`: its tiers' windows and its period.
    pub fn new(slo: &Slo) -> SloHistory {
        let mut windows = slo.windows();
        if !windows.contains(&slo.period) {
            windows.push(slo.period);
        }
        SloHistory {
            width: (millis(slo.period) / POINTS as Millis).max(1),
            windows,
            instances: BTreeMap::new(),
        }
    }

    /// Whether this history was made for `slo` as it is now (same windows and period); a
    /// reload that changes them starts a new one.
    pub fn fits(&self, slo: &Slo) -> bool {
        let fresh = SloHistory::new(slo);
        fresh.windows == self.windows && fresh.width == self.width
    }

    /// Records one evaluation of an instance at `now`: each window's burn rate (its error
    /// ratio ÷ the error budget) raises its bucket's value.
    pub fn record(
        &mut self,
        now: Millis,
        labels: &InstanceLabels,
        values: &[(Duration, WindowValue)],
        error_budget: f64,
    ) {
        let bucket = now.div_euclid(self.width);
        let columns = self.windows.len();
        let instance = self
            .instances
            .entry(labels.clone())
            .or_insert_with(|| InstanceHistory {
                newest: bucket,
                head: 0,
                burn: vec![f32::NAN; POINTS * columns],
                spans: Vec::new(),
            });
        instance.advance(bucket, columns);
        if bucket < instance.newest - (POINTS as i64 - 1) {
            return;
        }
        let back = (instance.newest - bucket) as usize;
        let row = (instance.head + POINTS - back) % POINTS;
        for (window, value) in values {
            let Some(column) = self.windows.iter().position(|known| known == window) else {
                continue;
            };
            let burn = (value.error_ratio / error_budget) as f32;
            if !burn.is_finite() {
                continue;
            }
            let cell = &mut instance.burn[row * columns + column];
            if cell.is_nan() || *cell < burn {
                *cell = burn;
            }
        }
    }

    /// Notes an alert change: a firing opens an interval, a resolution closes it.
    pub fn note(&mut self, event: &Event) {
        let Some(instance) = self.instances.get_mut(&event.labels) else {
            return;
        };
        match event.change {
            Change::Firing => {
                let from = event.firing_since.unwrap_or(event.at);
                if !instance
                    .spans
                    .iter()
                    .any(|span| span.tier == event.tier && span.to.is_none())
                {
                    instance.spans.push(AlertSpan {
                        tier: event.tier,
                        from,
                        to: None,
                    });
                }
                if instance.spans.len() > MAX_SPANS {
                    instance.spans.remove(0);
                }
            }
            Change::Resolved => {
                if let Some(span) = instance
                    .spans
                    .iter_mut()
                    .rev()
                    .find(|span| span.tier == event.tier && span.to.is_none())
                {
                    span.to = Some(event.at);
                }
            }
            _ => {}
        }
    }

    /// Forgets instances not evaluated for a whole period, and alert intervals that ended
    /// before it.
    pub fn prune(&mut self, now: Millis) {
        let oldest_bucket = now.div_euclid(self.width) - POINTS as i64;
        let period_start = now - self.width * POINTS as Millis;
        self.instances.retain(|_, instance| {
            instance
                .spans
                .retain(|span| span.to.is_none_or(|to| period_start <= to));
            instance.newest > oldest_bucket || instance.spans.iter().any(|span| span.to.is_none())
        });
    }

    pub fn windows(&self) -> &[Duration] {
        &self.windows
    }

    pub fn instances(&self) -> impl Iterator<Item = &InstanceLabels> {
        self.instances.keys()
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// One window's buckets of an instance, oldest first, those with a value only.
    pub fn series(&self, labels: &InstanceLabels, window: Duration) -> Series {
        let (Some(instance), Some(column)) = (
            self.instances.get(labels),
            self.windows.iter().position(|known| *known == window),
        ) else {
            return Vec::new();
        };
        let columns = self.windows.len();
        (0..POINTS)
            .filter_map(|age| {
                let back = POINTS - 1 - age;
                let row = (instance.head + POINTS - back) % POINTS;
                let value = instance.burn[row * columns + column];
                let start = (instance.newest - back as i64) * self.width;
                (!value.is_nan()).then_some((start, f64::from(value)))
            })
            .collect()
    }

    /// The alert intervals of an instance, oldest first.
    pub fn spans(&self, labels: &InstanceLabels) -> &[AlertSpan] {
        self.instances
            .get(labels)
            .map_or(&[], |instance| instance.spans.as_slice())
    }

    /// The bucket width.
    pub fn width(&self) -> Millis {
        self.width
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(self).map_err(|error| error.to_string())
    }

    pub fn decode(bytes: &[u8]) -> Result<SloHistory, String> {
        rmp_serde::from_slice(bytes).map_err(|error| error.to_string())
    }
}

impl InstanceHistory {
    /// Moves the ring forward to `bucket`, clearing the buckets it passes.
    fn advance(&mut self, bucket: i64, columns: usize) {
        if bucket <= self.newest {
            return;
        }
        let steps = (bucket - self.newest).min(POINTS as i64) as usize;
        for _ in 0..steps {
            self.head = (self.head + 1) % POINTS;
            self.burn[self.head * columns..(self.head + 1) * columns].fill(f32::NAN);
        }
        self.newest = bucket;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::burn::PairReading;
    use crate::config::{Document, load_str};

    fn slo() -> Slo {
        let spec = "version: burnwatch/v1\nservice: orders\nslos:\n  - name: availability\n    objective: 99\n    period: 1h\n    sli:\n      ratio:\n        errors: e\n        total: t\n    alerting:\n      page:\n        windows: [{long: 10m, short: 1m, factor: 10}]\n      ticket:\n        windows: [{long: 30m, short: 5m, factor: 2}]\n";
        match load_str("spec.yaml", spec, std::path::Path::new(".")) {
            Ok(Document::Slos(mut slos)) => slos.remove(0),
            other => panic!("{other:?}"),
        }
    }

    fn value(ratio: f64) -> WindowValue {
        WindowValue::new(ratio * 1000.0, 1000.0)
    }

    #[test]
    fn buckets_keep_the_highest_burn_and_roll_over_the_period() {
        let slo = slo();
        let mut history = SloHistory::new(&slo);
        assert_eq!(history.width(), 15_000);
        let labels = vec![("route".to_string(), "a".to_string())];
        let minute = Duration::from_secs(60);
        // Two evaluations in one 15 s bucket: the higher burn stays.
        history.record(0, &labels, &[(minute, value(0.05))], 0.01);
        history.record(5_000, &labels, &[(minute, value(0.02))], 0.01);
        history.record(15_000, &labels, &[(minute, value(0.01))], 0.01);
        let series = history.series(&labels, minute);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].0, 0);
        assert!((series[0].1 - 5.0).abs() < 1e-6, "{series:?}");
        assert!((series[1].1 - 1.0).abs() < 1e-6, "{series:?}");
        // A whole period after the second bucket only the newest bucket is left.
        history.record(3_615_000, &labels, &[(minute, value(0.03))], 0.01);
        let series = history.series(&labels, minute);
        assert_eq!(series.len(), 1, "{series:?}");
        assert_eq!(series[0].0, 3_615_000);
        // Not seen for a period: forgotten.
        history.prune(7_214_999);
        assert_eq!(history.len(), 1);
        history.prune(7_215_000);
        assert!(history.is_empty());
    }

    #[test]
    fn alert_intervals_open_on_firing_close_on_resolution_and_survive_encoding() {
        let slo = slo();
        let mut history = SloHistory::new(&slo);
        let labels = vec![("route".to_string(), "a".to_string())];
        history.record(0, &labels, &[(Duration::from_secs(60), value(0.5))], 0.01);
        let pair = slo.tiers[0].windows[0];
        let event = |at, change| Event {
            at,
            slo_id: slo.id.clone(),
            labels: labels.clone(),
            tier: TierKind::Page,
            change,
            reading: PairReading::unread(pair),
            budget_remaining: 0.5,
            time_to_exhaustion: None,
            firing_since: Some(60_000),
            budget_spent: None,
            ended: None,
        };
        history.note(&event(60_000, Change::Firing));
        history.note(&event(120_000, Change::Reminder));
        assert_eq!(
            history.spans(&labels),
            &[AlertSpan {
                tier: TierKind::Page,
                from: 60_000,
                to: None
            }]
        );
        history.note(&event(300_000, Change::Resolved));
        assert_eq!(history.spans(&labels)[0].to, Some(300_000));
        let decoded = SloHistory::decode(&history.encode().unwrap()).unwrap();
        assert_eq!(decoded.spans(&labels), history.spans(&labels));
        assert!(decoded.fits(&slo));
    }
}
