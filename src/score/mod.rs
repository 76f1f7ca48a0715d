//! Pure: how well one tier's alerts matched the times that mattered, over a replayed range.
//!
//! In: the tier's alerts as intervals (fired → resolved), the significant events as intervals
//! (the ground truth), and the budget each evaluation step consumed. Out: a [`Score`]
//! (precision, recall, detection and reset times, budget spent before detection, alerts per
//! week, time firing, alerts outside working hours). No I/O, no clock: a sweep over candidate
//! policies can call [`score`] once per policy on the same consumption.
//!
//! Definitions, after the SRE Workbook, ch. 5 "Alerting on SLOs" (precision, recall, detection
//! time, reset time; "2% budget consumption in 1 hour" for pages, "10% in 3 days" for tickets):
//!
//! - Budget consumed over a window `[t − W, t]`: the window's bad events ÷ (the period's total
//!   events `[t − period, t]` × (1 − objective)). A significant event is a maximal run of
//!   evaluation steps at which this exceeds the tier's share; it spans the first to the last
//!   step of the run, both included ([`significant_events`]).
//! - Intervals are closed: an alert `[fired, resolved]` (an alert still firing at the end of
//!   the range ends there) overlaps an event `[start, end]` when `fired ≤ end` and
//!   `start ≤ resolved`. A fire at the event's last step counts; a fire after it does not.
//! - Precision: alerts overlapping at least one event ÷ alerts fired. Recall: events overlapped
//!   by at least one alert ÷ events. Alerts of a superseding tier (the page, for the ticket it
//!   inhibits) count towards recall, never towards precision or alert counts.
//! - Detection time: the first overlapping alert's fire − the event's start, 0 when it was
//!   already firing. Reset time: the last overlapping alert's resolve − the event's end, 0 when
//!   it had resolved before; unmeasured when that alert is still firing at the end.
//! - Budget spent before detection: the event's lead-in (for an event from the budget, the
//!   consumption over its window at its first step, the budget that made it significant; 0 for
//!   an incident from a file) plus the per-step consumption of every step after the event's
//!   start up to and including the detection.

pub mod html;
pub mod input;
pub mod report;

use crate::alert::Change;
use crate::slo::Millis;

pub use input::{Incident, Significance, WorkingHours};

const WEEK_MILLIS: f64 = 7.0 * 86_400_000.0;

/// One alert of a tier: fired at `fired`, resolved at `resolved` (`None`: still firing when
/// the range ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertSpan {
    pub fired: Millis,
    pub resolved: Option<Millis>,
}

impl AlertSpan {
    /// Where the alert ends for overlaps and time firing: its resolve, else the range's end.
    pub fn end(&self, to: Millis) -> Millis {
        self.resolved.unwrap_or(to).max(self.fired)
    }

    fn overlaps(&self, event: &SignificantEvent, to: Millis) -> bool {
        self.fired <= event.end && event.start <= self.end(to)
    }
}

/// A time that mattered: from `start` to `end`, both included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignificantEvent {
    pub start: Millis,
    pub end: Millis,
    /// Budget already consumed when the event starts (see the module's definitions).
    pub lead_in: f64,
}

/// The alert intervals of one tier of one instance, from its changes in time order: a
/// `Firing` opens one, a `Resolved` closes it; pending, reminders and insufficient data leave
/// them as they are.
pub fn alert_spans(changes: impl IntoIterator<Item = (Millis, Change)>) -> Vec<AlertSpan> {
    let mut spans: Vec<AlertSpan> = Vec::new();
    let mut open = false;
    for (at, change) in changes {
        match change {
            Change::Firing if !open => {
                spans.push(AlertSpan {
                    fired: at,
                    resolved: None,
                });
                open = true;
            }
            Change::Resolved if open => {
                if let Some(last) = spans.last_mut() {
                    last.resolved = Some(at);
                }
                open = false;
            }
            _ => {}
        }
    }
    spans
}

/// Maximal runs of steps at which `consumption` (the budget consumed over the significance
/// window, one value per step of `times`) exceeds `share`. NaN (no data, no traffic in the
/// period) never exceeds it.
pub fn significant_events(
    times: &[Millis],
    consumption: &[f64],
    share: f64,
) -> Vec<SignificantEvent> {
    let mut events: Vec<SignificantEvent> = Vec::new();
    let mut open = false;
    for (&at, &value) in times.iter().zip(consumption) {
        let above = value > share;
        match (above, open) {
            (true, false) => events.push(SignificantEvent {
                start: at,
                end: at,
                lead_in: value,
            }),
            (true, true) => {
                if let Some(last) = events.last_mut() {
                    last.end = at;
                }
            }
            _ => {}
        }
        open = above;
    }
    events
}

/// What one tier is scored from.
#[derive(Debug, Clone, Copy)]
pub struct TierInput<'a> {
    /// The replayed range, both ends included.
    pub from: Millis,
    pub to: Millis,
    /// The evaluation steps, ascending.
    pub times: &'a [Millis],
    /// Budget consumed over each step `(previous step, this step]`, one value per step; NaN
    /// counts as nothing.
    pub per_step: &'a [f64],
    /// The tier's alerts.
    pub alerts: &'a [AlertSpan],
    /// The ground truth.
    pub events: &'a [SignificantEvent],
    /// Alerts of a tier that inhibits this one (the page, for the ticket): they alert people
    /// to this tier's events too.
    pub superseding: &'a [AlertSpan],
    pub working_hours: Option<&'a WorkingHours>,
}

/// Median and maximum of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for an empty set; the median of an even count is the mean of the middle two.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len().is_multiple_of(2) {
            (values[middle - 1] + values[middle]) / 2.0
        } else {
            values[middle]
        };
        Some(Stats {
            median,
            max: values[values.len() - 1],
        })
    }
}

/// One alert, scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertScore {
    pub span: AlertSpan,
    /// It overlaps a significant event.
    pub significant: bool,
    /// It fired outside the working hours (`None` without working hours).
    pub outside_working_hours: Option<bool>,
}

/// One significant event, scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventScore {
    pub event: SignificantEvent,
    /// The first fire of an overlapping alert (this tier's or a superseding one's).
    pub detected_at: Option<Millis>,
    /// `detected_at − start`, at least 0, in milliseconds.
    pub detection: Option<Millis>,
    /// The last resolve of an overlapping alert; `None` when undetected or still firing.
    pub resolved_at: Option<Millis>,
    /// `resolved_at − end`, at least 0, in milliseconds.
    pub reset: Option<Millis>,
    /// Share of the period's budget consumed before detection.
    pub spent_before_detection: Option<f64>,
}

/// How one tier did over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub alerts: Vec<AlertScore>,
    pub events: Vec<EventScore>,
    /// Alerts fired.
    pub fired: usize,
    /// Of those, still firing at the end of the range.
    pub still_firing: usize,
    /// Alerts overlapping a significant event.
    pub significant_alerts: usize,
    /// Events overlapped by an alert.
    pub detected_events: usize,
    /// `None` when nothing fired.
    pub precision: Option<f64>,
    /// `None` without events.
    pub recall: Option<f64>,
    /// Milliseconds.
    pub detection: Option<Stats>,
    /// Milliseconds.
    pub reset: Option<Stats>,
    /// Shares of the period's budget.
    pub spent_before_detection: Option<Stats>,
    /// `None` for a range of no length.
    pub alerts_per_week: Option<f64>,
    /// Total time firing, in milliseconds (alerts still firing count to the range's end).
    pub firing: Millis,
    /// Alerts fired outside the working hours (`None` without working hours).
    pub outside_working_hours: Option<usize>,
}

/// Scores one tier; see the module's definitions.
pub fn score(input: &TierInput) -> Score {
    let to = input.to;
    let alerts: Vec<AlertScore> = input
        .alerts
        .iter()
        .map(|span| AlertScore {
            span: *span,
            significant: input.events.iter().any(|event| span.overlaps(event, to)),
            outside_working_hours: input.working_hours.map(|hours| !hours.contains(span.fired)),
        })
        .collect();
    let events: Vec<EventScore> = input
        .events
        .iter()
        .map(|event| score_event(input, event))
        .collect();
    let fired = alerts.len();
    let significant_alerts = alerts.iter().filter(|alert| alert.significant).count();
    let detected_events = events
        .iter()
        .filter(|event| event.detected_at.is_some())
        .count();
    let span = input.to - input.from;
    Score {
        fired,
        still_firing: input
            .alerts
            .iter()
            .filter(|alert| alert.resolved.is_none())
            .count(),
        significant_alerts,
        detected_events,
        precision: (fired > 0).then(|| significant_alerts as f64 / fired as f64),
        recall: (!events.is_empty()).then(|| detected_events as f64 / events.len() as f64),
        detection: Stats::of(events.iter().filter_map(|e| e.detection.map(|d| d as f64))),
        reset: Stats::of(events.iter().filter_map(|e| e.reset.map(|r| r as f64))),
        spent_before_detection: Stats::of(events.iter().filter_map(|e| e.spent_before_detection)),
        alerts_per_week: (span > 0).then(|| fired as f64 * WEEK_MILLIS / span as f64),
        firing: input
            .alerts
            .iter()
            .map(|alert| alert.end(to) - alert.fired)
            .sum(),
        outside_working_hours: input.working_hours.map(|_| {
            alerts
                .iter()
                .filter(|alert| alert.outside_working_hours == Some(true))
                .count()
        }),
        alerts,
        events,
    }
}

fn score_event(input: &TierInput, event: &SignificantEvent) -> EventScore {
    let to = input.to;
    let overlapping: Vec<&AlertSpan> = input
        .alerts
        .iter()
        .chain(input.superseding)
        .filter(|span| span.overlaps(event, to))
        .collect();
    let detected_at = overlapping.iter().map(|span| span.fired).min();
    let resolved_at = if overlapping.iter().any(|span| span.resolved.is_none()) {
        None
    } else {
        overlapping.iter().filter_map(|span| span.resolved).max()
    };
    let spent_before_detection = detected_at.map(|at| {
        let after_start: f64 = input
            .times
            .iter()
            .zip(input.per_step)
            .filter(|&(&time, value)| event.start < time && time <= at && !value.is_nan())
            .map(|(_, value)| value)
            .sum();
        event.lead_in + after_start
    });
    EventScore {
        event: *event,
        detected_at,
        detection: detected_at.map(|at| (at - event.start).max(0)),
        resolved_at,
        reset: resolved_at.map(|at| (at - event.end).max(0)),
        spent_before_detection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_above_the_share_are_events() {
        let times = [0, 60, 120, 180, 240, 300];
        let consumption = [0.01, 0.03, 0.02, f64::NAN, 0.05, 0.06];
        let events = significant_events(&times, &consumption, 0.02);
        assert_eq!(
            events,
            [
                SignificantEvent {
                    start: 60,
                    end: 60,
                    lead_in: 0.03
                },
                SignificantEvent {
                    start: 240,
                    end: 300,
                    lead_in: 0.05
                },
            ]
        );
    }

    #[test]
    fn spans_from_changes() {
        let changes = [
            (10, Change::Pending),
            (20, Change::Firing),
            (30, Change::Reminder),
            (40, Change::Resolved),
            (50, Change::Firing),
        ];
        assert_eq!(
            alert_spans(changes),
            [
                AlertSpan {
                    fired: 20,
                    resolved: Some(40)
                },
                AlertSpan {
                    fired: 50,
                    resolved: None
                },
            ]
        );
    }

    #[test]
    fn medians() {
        assert_eq!(Stats::of([]), None);
        assert_eq!(
            Stats::of([3.0, 1.0, 2.0]),
            Some(Stats {
                median: 2.0,
                max: 3.0
            })
        );
        assert_eq!(
            Stats::of([4.0, 1.0, 2.0, 3.0]),
            Some(Stats {
                median: 2.5,
                max: 4.0
            })
        );
    }
}
