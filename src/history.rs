//! A compact, bounded history of every SLO instance's burn rates, kept by burnwatch itself so
//! the status page draws its charts without asking Prometheus again.
//!
//! Per instance, two rings of buckets, each bucket holding per window the highest burn rate
//! evaluated in it (a short spike stays visible at any zoom): [`PERIOD_POINTS`] across the
//! SLO's period, and [`RECENT_POINTS`] across the recent span (6 hours, or a quarter of a
//! shorter period) for incidents; and the intervals its alerts fired. A burn rate is kept in
//! two bytes (log scale, 10⁻⁴ to 10⁶, about 0.04% apart), so an instance of an SLO with the
//! default windows costs about 2.7 KiB whatever the evaluation interval (27 MiB for 10,000).
//! An instance not seen for a whole period is forgotten. Pure: time is a parameter, and
//! [`SloHistory`] is encoded for the store with the checkpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::Change;
use crate::burn::WindowValue;
use crate::engine::{Event, InstanceLabels};
use crate::slo::{Millis, Slo, TierKind, millis};

/// Buckets across the period (6 hours each for 30 days).
pub const PERIOD_POINTS: usize = 120;
/// Buckets across the recent span (5 minutes each over 6 hours).
pub const RECENT_POINTS: usize = 72;
/// The recent span, at most.
const RECENT_SPAN: Millis = 6 * 3_600_000;

/// Alert intervals kept per instance (the oldest go first).
const MAX_SPANS: usize = 64;

/// When one alert of an instance fired, and resolved (`None` while firing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlertSpan {
    pub tier: TierKind,
    pub from: Millis,
    pub to: Option<Millis>,
}

/// Which of an instance's rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The SLO's period.
    Period,
    /// The last hours.
    Recent,
}

/// A ring of buckets: row `r` holds bucket `newest − ((head − r) mod points)`, one cell per
/// window (0: nothing evaluated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ring {
    newest: i64,
    head: usize,
    cells: Vec<u16>,
}

/// One instance's rings and alert intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceHistory {
    period: Ring,
    recent: Ring,
    spans: Vec<AlertSpan>,
}

/// The history of one SLO's instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloHistory {
    /// The bucket widths of the period's and the recent ring.
    period_width: Millis,
    recent_width: Millis,
    /// The windows recorded, in cell order: the tiers' windows.
    windows: Vec<Duration>,
    instances: BTreeMap<InstanceLabels, InstanceHistory>,
}

/// One window's series for a chart: (bucket start, highest burn rate in it).
pub type Series = Vec<(Millis, f64)>;

const DECADES: f64 = 10.0;
const LOWEST: f64 = -4.0;

/// A burn rate in two bytes, order kept: 1 for 10⁻⁴ or less, 65535 for 10⁶ or more.
fn encode(burn: f64) -> u16 {
    if burn.is_nan() {
        return 0;
    }
    let share = ((burn.max(1e-300).log10() - LOWEST) / DECADES).clamp(0.0, 1.0);
    1 + (share * 65534.0).round() as u16
}

fn decode(cell: u16) -> Option<f64> {
    (cell != 0).then(|| 10f64.powf(f64::from(cell - 1) / 65534.0 * DECADES + LOWEST))
}

impl Ring {
    fn new(bucket: i64, points: usize, columns: usize) -> Ring {
        Ring {
            newest: bucket,
            head: 0,
            cells: vec![0; points * columns],
        }
    }

    fn points(&self, columns: usize) -> usize {
        self.cells.len() / columns.max(1)
    }

    /// Raises the cells of `bucket` to `values` (moving the ring forward to it first).
    fn record(&mut self, bucket: i64, columns: usize, values: &[(usize, u16)]) {
        let points = self.points(columns);
        if bucket > self.newest {
            let steps = (bucket - self.newest).min(points as i64) as usize;
            for _ in 0..steps {
                self.head = (self.head + 1) % points;
                self.cells[self.head * columns..(self.head + 1) * columns].fill(0);
            }
            self.newest = bucket;
        }
        if bucket <= self.newest - points as i64 {
            return;
        }
        let back = (self.newest - bucket) as usize;
        let row = (self.head + points - back) % points;
        for &(column, value) in values {
            let cell = &mut self.cells[row * columns + column];
            *cell = (*cell).max(value);
        }
    }

    fn series(&self, columns: usize, column: usize, width: Millis) -> Series {
        let points = self.points(columns);
        (0..points)
            .filter_map(|age| {
                let back = points - 1 - age;
                let row = (self.head + points - back) % points;
                let value = decode(self.cells[row * columns + column])?;
                Some(((self.newest - back as i64) * width, value))
            })
            .collect()
    }
}

impl SloHistory {
    /// An empty history for `slo`: its tiers' windows over its period.
    pub fn new(slo: &Slo) -> SloHistory {
        let period = millis(slo.period);
        SloHistory {
            period_width: (period / PERIOD_POINTS as Millis).max(1),
            recent_width: (RECENT_SPAN.min(period / 4) / RECENT_POINTS as Millis).max(1),
            windows: slo.windows(),
            instances: BTreeMap::new(),
        }
    }

    /// Whether this history was made for `slo` as it is now (same windows and period); a
    /// reload that changes them starts a new one.
    pub fn fits(&self, slo: &Slo) -> bool {
        let fresh = SloHistory::new(slo);
        fresh.windows == self.windows
            && fresh.period_width == self.period_width
            && fresh.recent_width == self.recent_width
    }

    /// Records one evaluation of an instance at `now`: each window's burn rate (its error
    /// ratio ÷ the error budget) raises its buckets' values.
    pub fn record(
        &mut self,
        now: Millis,
        labels: &InstanceLabels,
        values: &[(Duration, WindowValue)],
        error_budget: f64,
    ) {
        let columns = self.windows.len();
        let cells: Vec<(usize, u16)> = values
            .iter()
            .filter_map(|(window, value)| {
                let column = self.windows.iter().position(|known| known == window)?;
                let burn = value.error_ratio / error_budget;
                burn.is_finite().then(|| (column, encode(burn)))
            })
            .collect();
        let (period_bucket, recent_bucket) = (
            now.div_euclid(self.period_width),
            now.div_euclid(self.recent_width),
        );
        let instance = self
            .instances
            .entry(labels.clone())
            .or_insert_with(|| InstanceHistory {
                period: Ring::new(period_bucket, PERIOD_POINTS, columns),
                recent: Ring::new(recent_bucket, RECENT_POINTS, columns),
                spans: Vec::new(),
            });
        instance.period.record(period_bucket, columns, &cells);
        instance.recent.record(recent_bucket, columns, &cells);
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
                if instance.spans.len() > MAX_SPANS
                    && let Some(oldest) = instance.spans.iter().position(|span| span.to.is_some())
                {
                    instance.spans.remove(oldest);
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

    /// Closes at `now` the open alert intervals of alerts not firing any more (`firing`: the
    /// (labels, tier) that are): after a restart (the history is saved hourly, the alerts
    /// every cycle) or a reload that retired them.
    pub fn close_ended(&mut self, firing: &[(&InstanceLabels, TierKind)], now: Millis) {
        for (labels, instance) in &mut self.instances {
            for span in &mut instance.spans {
                if span.to.is_none() && !firing.contains(&(labels, span.tier)) {
                    span.to = Some(now);
                }
            }
        }
    }

    /// Forgets instances not evaluated for a whole period (unless an alert of theirs is still
    /// open), and alert intervals that ended before it.
    pub fn prune(&mut self, now: Millis) {
        let oldest_bucket = now.div_euclid(self.period_width) - PERIOD_POINTS as i64;
        let period_start = now - self.period_width * PERIOD_POINTS as Millis;
        self.instances.retain(|_, instance| {
            instance
                .spans
                .retain(|span| span.to.is_none_or(|to| period_start <= to));
            instance.period.newest > oldest_bucket
                || instance.spans.iter().any(|span| span.to.is_none())
        });
    }

    pub fn windows(&self) -> &[Duration] {
        &self.windows
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// One window's buckets of an instance over `span`, oldest first, those with a value.
    pub fn series(&self, labels: &InstanceLabels, window: Duration, span: Span) -> Series {
        let (Some(instance), Some(column)) = (
            self.instances.get(labels),
            self.windows.iter().position(|known| *known == window),
        ) else {
            return Vec::new();
        };
        match span {
            Span::Period => instance
                .period
                .series(self.windows.len(), column, self.period_width),
            Span::Recent => instance
                .recent
                .series(self.windows.len(), column, self.recent_width),
        }
    }

    /// How long `span` covers.
    pub fn length(&self, span: Span) -> Millis {
        match span {
            Span::Period => self.period_width * PERIOD_POINTS as Millis,
            Span::Recent => self.recent_width * RECENT_POINTS as Millis,
        }
    }

    /// The alert intervals of an instance, oldest first.
    pub fn spans(&self, labels: &InstanceLabels) -> &[AlertSpan] {
        self.instances
            .get(labels)
            .map_or(&[], |instance| instance.spans.as_slice())
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(self).map_err(|error| error.to_string())
    }

    pub fn decode(bytes: &[u8]) -> Result<SloHistory, String> {
        rmp_serde::from_slice(bytes).map_err(|error| error.to_string())
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
        // A 1h period: 30 s buckets over it, 12.5 s buckets over its last quarter.
        assert_eq!(history.length(Span::Period), 3_600_000);
        assert_eq!(history.length(Span::Recent), 900_000);
        let labels = vec![("route".to_string(), "a".to_string())];
        let minute = Duration::from_secs(60);
        // Two evaluations in one bucket: the higher burn stays.
        history.record(0, &labels, &[(minute, value(0.05))], 0.01);
        history.record(5_000, &labels, &[(minute, value(0.02))], 0.01);
        history.record(30_000, &labels, &[(minute, value(0.01))], 0.01);
        let series = history.series(&labels, minute, Span::Period);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].0, 0);
        assert!((series[0].1 - 5.0).abs() < 5.0 * 1e-3, "{series:?}");
        assert!((series[1].1 - 1.0).abs() < 1e-3, "{series:?}");
        let recent = history.series(&labels, minute, Span::Recent);
        assert_eq!(recent.len(), 2, "{recent:?}");
        assert_eq!(recent[1].0, 25_000);
        // A whole period after the second bucket only the newest bucket is left.
        history.record(3_630_000, &labels, &[(minute, value(0.03))], 0.01);
        let series = history.series(&labels, minute, Span::Period);
        assert_eq!(series.len(), 1, "{series:?}");
        assert_eq!(series[0].0, 3_630_000);
        // Not seen for a period: forgotten.
        history.prune(7_229_999);
        assert_eq!(history.len(), 1);
        history.prune(7_230_000);
        assert!(history.is_empty());
    }

    #[test]
    fn open_intervals_are_never_trimmed_and_close_when_their_alert_is_gone() {
        let slo = slo();
        let mut history = SloHistory::new(&slo);
        let labels = vec![("route".to_string(), "a".to_string())];
        history.record(0, &labels, &[(Duration::from_secs(60), value(0.5))], 0.01);
        let pair = slo.tiers[0].windows[0];
        let event = |at, tier, change| Event {
            at,
            slo_id: slo.id.clone(),
            labels: labels.clone(),
            tier,
            change,
            reading: PairReading::unread(pair),
            budget_remaining: 0.5,
            time_to_exhaustion: None,
            firing_since: Some(at),
            budget_spent: None,
            ended: None,
        };
        history.note(&event(0, TierKind::Ticket, Change::Firing));
        for round in 1..=70 {
            history.note(&event(round * 10, TierKind::Page, Change::Firing));
            history.note(&event(round * 10 + 5, TierKind::Page, Change::Resolved));
        }
        let spans = history.spans(&labels);
        assert_eq!(spans.len(), 64);
        assert!(spans.contains(&AlertSpan {
            tier: TierKind::Ticket,
            from: 0,
            to: None
        }));
        // The ticket was retired (a reload, or resolved before a crash): its interval closes.
        history.close_ended(&[], 1_000);
        assert!(history.spans(&labels).iter().all(|span| span.to.is_some()));
    }

    #[test]
    fn burn_rates_keep_their_order_and_four_digits_in_two_bytes() {
        let mut last = 0;
        for burn in [0.0, 1e-5, 0.001, 0.5, 1.0, 14.4, 1000.0, 1e7] {
            let cell = encode(burn);
            assert!(cell > last || (burn <= 1e-4 && cell == 1), "{burn}");
            last = cell;
        }
        for burn in [0.001, 0.5, 1.0, 14.4, 999.0] {
            let back = decode(encode(burn)).unwrap();
            assert!((back - burn).abs() / burn < 5e-4, "{burn} → {back}");
        }
        assert_eq!(encode(f64::NAN), 0);
        assert_eq!(decode(0), None);
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
