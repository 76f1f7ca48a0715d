//! `replay --score`: a replay's alerts and budget consumption turned into one [`Score`] per SLO
//! instance and tier, and that scorecard as text, JSON and CSV.
//!
//! The JSON shape is stable (documented in README.md):
//! `{"from","to","step","ground_truth","working_hours","scores":[{"slo","labels","tier",
//! "significant","fired","still_firing","significant_alerts","significant_events",
//! "detected_events","precision","recall","detection_seconds":{"median","max"},
//! "reset_seconds":{"median","max"},"budget_spent_before_detection":{"median","max"},
//! "alerts_per_week","firing_seconds","fired_outside_working_hours","events":[{"start","end",
//! "detected_at","detection_seconds","resolved_at","reset_seconds",
//! "budget_spent_before_detection"}],"alerts":[{"fired","resolved","significant",
//! "outside_working_hours"}]}]}`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::input::{Incident, Thresholds, WorkingHours};
use super::{AlertSpan, Score, Significance, SignificantEvent, Stats, TierInput};
use crate::engine::InstanceLabels;
use crate::replay::{
    Consumption, Range, Timeline, format_labels, format_percent, format_time, number,
};
use crate::slo::{Millis, Slo, TierKind, format_duration};

/// What counts as a significant event.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    /// Budget consumed over a rolling window above a share, per tier.
    Budget(Thresholds),
    /// Incidents the team knows of, for every tier; those entirely outside the range are left
    /// out.
    Incidents(Vec<Incident>),
}

impl Truth {
    /// The rolling windows the replay must measure.
    pub fn windows(&self) -> Vec<std::time::Duration> {
        match self {
            Truth::Budget(thresholds) => {
                let mut windows = vec![thresholds.page.window, thresholds.ticket.window];
                windows.dedup();
                windows
            }
            Truth::Incidents(_) => Vec::new(),
        }
    }
}

/// One SLO instance's tier, scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub slo_id: String,
    pub labels: InstanceLabels,
    pub tier: TierKind,
    /// The threshold its events come from (`None`: incidents).
    pub significance: Option<Significance>,
    pub score: Score,
}

/// Every row of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorecard {
    pub range: Range,
    pub truth: Truth,
    pub working_hours: WorkingHours,
    pub rows: Vec<Row>,
}

/// Scores every tier of every instance measured in `consumption`, from the alerts of
/// `timeline`.
pub fn scorecard(
    slos: &[Slo],
    timeline: &Timeline,
    consumption: &[Consumption],
    truth: Truth,
    working_hours: WorkingHours,
) -> Scorecard {
    let range = timeline.range;
    let times: Vec<Millis> = range.times().collect();
    let mut rows = Vec::new();
    for instance in consumption {
        let Some(slo) = slos.iter().find(|slo| slo.id == instance.slo_id) else {
            continue;
        };
        let spans = |kind: TierKind| {
            super::alert_spans(
                timeline
                    .events
                    .iter()
                    .filter(|event| {
                        event.tier == kind
                            && event.slo_id == instance.slo_id
                            && event.labels == instance.labels
                    })
                    .map(|event| (event.at, event.change)),
            )
        };
        let pages = spans(TierKind::Page);
        for tier in &slo.tiers {
            let (events, significance) = ground_truth(&truth, instance, tier.kind, &times, range);
            let alerts = spans(tier.kind);
            let superseding: &[AlertSpan] = match tier.kind {
                TierKind::Ticket => &pages,
                TierKind::Page => &[],
            };
            let score = super::score(&TierInput {
                from: range.from,
                to: range.to,
                times: &times,
                per_step: &instance.per_step,
                alerts: &alerts,
                events: &events,
                superseding,
                working_hours: Some(&working_hours),
            });
            rows.push(Row {
                slo_id: instance.slo_id.clone(),
                labels: instance.labels.clone(),
                tier: tier.kind,
                significance,
                score,
            });
        }
    }
    Scorecard {
        range,
        truth,
        working_hours,
        rows,
    }
}

/// The significant events of one instance's tier over `range` (`times` its steps), and the
/// threshold they come from (`None`: incidents).
pub fn ground_truth(
    truth: &Truth,
    instance: &Consumption,
    kind: TierKind,
    times: &[Millis],
    range: Range,
) -> (Vec<SignificantEvent>, Option<Significance>) {
    match truth {
        Truth::Budget(thresholds) => {
            let significance = thresholds.get(kind);
            let rolling = instance
                .rolling
                .iter()
                .find(|(window, _)| *window == significance.window)
                .map_or(&[][..], |(_, values)| values.as_slice());
            let events = super::significant_events(times, rolling, significance.share);
            (events, Some(significance))
        }
        Truth::Incidents(incidents) => (
            incidents
                .iter()
                .filter(|incident| {
                    incident.concerns(&instance.slo_id, &instance.labels)
                        && incident.start <= range.to
                        && range.from <= incident.end
                })
                .map(|incident| SignificantEvent {
                    start: incident.start,
                    end: incident.end,
                    lead_in: 0.0,
                })
                .collect(),
            None,
        ),
    }
}

fn optional(value: Option<f64>) -> Value {
    value.map_or(Value::Null, number)
}

fn seconds(millis: Millis) -> f64 {
    millis as f64 / 1000.0
}

fn stats(stats: Option<Stats>, scale: f64) -> Value {
    stats.map_or(
        Value::Null,
        |stats| json!({"median": number(stats.median * scale), "max": number(stats.max * scale)}),
    )
}

fn time(at: Option<Millis>) -> Value {
    at.map_or(Value::Null, |at| Value::String(format_time(at)))
}

fn truth_name(truth: &Truth) -> &'static str {
    match truth {
        Truth::Budget(_) => "budget",
        Truth::Incidents(_) => "incidents",
    }
}

/// The stable JSON form of a scorecard.
pub fn to_json(card: &Scorecard) -> Value {
    let scores: Vec<Value> = card
        .rows
        .iter()
        .map(|row| {
            let score = &row.score;
            let events: Vec<Value> = score
                .events
                .iter()
                .map(|event| {
                    json!({
                        "start": format_time(event.event.start),
                        "end": format_time(event.event.end),
                        "detected_at": time(event.detected_at),
                        "detection_seconds": optional(event.detection.map(seconds)),
                        "resolved_at": time(event.resolved_at),
                        "reset_seconds": optional(event.reset.map(seconds)),
                        "budget_spent_before_detection": optional(event.spent_before_detection),
                    })
                })
                .collect();
            let alerts: Vec<Value> = score
                .alerts
                .iter()
                .map(|alert| {
                    json!({
                        "fired": format_time(alert.span.fired),
                        "resolved": time(alert.span.resolved),
                        "significant": alert.significant,
                        "outside_working_hours": alert.outside_working_hours,
                    })
                })
                .collect();
            json!({
                "slo": row.slo_id,
                "labels": Value::Object(row.labels.iter().map(|(name, value)| (name.clone(), Value::String(value.clone()))).collect()),
                "tier": row.tier.as_str(),
                "significant": row.significance.map_or(Value::Null, |significance| json!({
                    "budget_share": number(significance.share),
                    "window": format_duration(significance.window),
                })),
                "fired": score.fired,
                "still_firing": score.still_firing,
                "significant_alerts": score.significant_alerts,
                "significant_events": score.events.len(),
                "detected_events": score.detected_events,
                "precision": optional(score.precision),
                "recall": optional(score.recall),
                "detection_seconds": stats(score.detection, 0.001),
                "reset_seconds": stats(score.reset, 0.001),
                "budget_spent_before_detection": stats(score.spent_before_detection, 1.0),
                "alerts_per_week": optional(score.alerts_per_week),
                "firing_seconds": number(seconds(score.firing)),
                "fired_outside_working_hours": score.outside_working_hours,
                "events": events,
                "alerts": alerts,
            })
        })
        .collect();
    json!({
        "from": format_time(card.range.from),
        "to": format_time(card.range.to),
        "step": format_duration(card.range.step),
        "ground_truth": truth_name(&card.truth),
        "working_hours": card.working_hours.to_string(),
        "scores": scores,
    })
}

/// The CSV columns, one row per SLO instance and tier.
pub const CSV_HEADER: &str = "slo,labels,tier,significant,fired,still_firing,significant_alerts,significant_events,detected_events,precision,recall,detection_median_seconds,detection_max_seconds,reset_median_seconds,reset_max_seconds,budget_spent_before_detection_median,budget_spent_before_detection_max,alerts_per_week,firing_seconds,fired_outside_working_hours";

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn csv_number(value: Option<f64>) -> String {
    match value.map(number) {
        Some(Value::Null) | None => String::new(),
        Some(value) => value.to_string(),
    }
}

/// The scorecard as CSV: the header, then one line per row (empty fields where JSON has null).
pub fn to_csv(card: &Scorecard) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{CSV_HEADER}");
    for row in &card.rows {
        let score = &row.score;
        let labels = format_labels(&row.labels);
        let fields = [
            csv_field(&row.slo_id),
            csv_field(&labels),
            row.tier.as_str().to_string(),
            row.significance
                .map_or(String::new(), |significance| significance.to_string()),
            score.fired.to_string(),
            score.still_firing.to_string(),
            score.significant_alerts.to_string(),
            score.events.len().to_string(),
            score.detected_events.to_string(),
            csv_number(score.precision),
            csv_number(score.recall),
            csv_number(score.detection.map(|s| s.median / 1000.0)),
            csv_number(score.detection.map(|s| s.max / 1000.0)),
            csv_number(score.reset.map(|s| s.median / 1000.0)),
            csv_number(score.reset.map(|s| s.max / 1000.0)),
            csv_number(score.spent_before_detection.map(|s| s.median)),
            csv_number(score.spent_before_detection.map(|s| s.max)),
            csv_number(score.alerts_per_week),
            csv_number(Some(seconds(score.firing))),
            score
                .outside_working_hours
                .map_or(String::new(), |count| count.to_string()),
        ];
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}

pub(super) fn human_duration(millis: f64) -> String {
    let rounded = std::time::Duration::from_secs((millis / 1000.0).round().max(0.0) as u64);
    format_duration(rounded)
}

pub(super) fn pair(stats: Option<Stats>, show: impl Fn(f64) -> String) -> String {
    stats.map_or("-".to_string(), |stats| {
        format!("{}/{}", show(stats.median), show(stats.max))
    })
}

pub(super) fn ratio(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |value| format!("{:.0}%", value * 100.0))
}

/// What the significant events are, for people.
pub fn describe_truth(truth: &Truth) -> String {
    match truth {
        Truth::Budget(thresholds) => format!(
            "budget consumed above page {}, ticket {}",
            thresholds.page, thresholds.ticket
        ),
        Truth::Incidents(incidents) => format!("{} incidents from the file", incidents.len()),
    }
}

/// The scorecard for people: a table, then each tier's events and alerts.
pub fn to_text(card: &Scorecard) -> String {
    let mut out = String::new();
    let range = &card.range;
    let truth = format!("significant events: {}", describe_truth(&card.truth));
    let _ = writeln!(
        out,
        "score {} .. {} every {}; {truth}; working hours {}",
        format_time(range.from),
        format_time(range.to),
        format_duration(range.step),
        card.working_hours
    );
    let header = [
        "SLO instance",
        "tier",
        "fired",
        "events",
        "precision",
        "recall",
        "detect med/max",
        "reset med/max",
        "spent before detect med/max",
        "per week",
        "firing",
        "off hours",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in &card.rows {
        let score = &row.score;
        table.push(vec![
            format!("{}{}", row.slo_id, format_labels(&row.labels)),
            row.tier.as_str().to_string(),
            score.fired.to_string(),
            format!("{}/{}", score.detected_events, score.events.len()),
            ratio(score.precision),
            ratio(score.recall),
            pair(score.detection, human_duration),
            pair(score.reset, human_duration),
            pair(score.spent_before_detection, format_percent),
            score
                .alerts_per_week
                .map_or("-".to_string(), |rate| format!("{rate:.2}")),
            human_duration(score.firing as f64),
            score
                .outside_working_hours
                .map_or("-".to_string(), |count| count.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            table
                .iter()
                .map(|cells| cells[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for cells in &table {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for row in &card.rows {
        let score = &row.score;
        if score.events.is_empty() && score.alerts.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{}{} {}",
            row.slo_id,
            format_labels(&row.labels),
            row.tier.as_str()
        );
        for event in &score.events {
            let detected = match event.detected_at {
                Some(at) => format!(
                    "detected {} (after {}, {} of the budget spent)",
                    format_time(at),
                    human_duration(event.detection.unwrap_or(0) as f64),
                    format_percent(event.spent_before_detection.unwrap_or(f64::NAN))
                ),
                None => "MISSED".to_string(),
            };
            let _ = writeln!(
                out,
                "  event {} .. {}  {detected}",
                format_time(event.event.start),
                format_time(event.event.end)
            );
        }
        for alert in &score.alerts {
            let _ = writeln!(
                out,
                "  alert {} .. {}  {}{}",
                format_time(alert.span.fired),
                alert
                    .span
                    .resolved
                    .map_or("still firing".to_string(), format_time),
                if alert.significant {
                    "significant"
                } else {
                    "FALSE"
                },
                if alert.outside_working_hours == Some(true) {
                    ", outside working hours"
                } else {
                    ""
                }
            );
        }
    }
    out
}
