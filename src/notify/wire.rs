//! The receivers' wire formats, built from alert changes: the Slack message as queued, the
//! generic webhook's document, Alertmanager's alert (and its re-send), and the "evaluation
//! stale" meta alert. Pure: no I/O, no clock.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::alert::Change;
use crate::engine::Event;
use crate::notify::render::{self, Message};
use crate::replay::format_time;
use crate::slo::{Millis, Slo};

/// A Slack message as queued: the routed channel, the fallback text and the blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackPayload {
    pub channel: String,
    pub text: String,
    pub blocks: Value,
    #[serde(default)]
    pub broadcast: bool,
}

impl SlackPayload {
    pub(crate) fn new(channel: &str, message: &Message, broadcast: bool) -> SlackPayload {
        SlackPayload {
            channel: channel.to_string(),
            text: message.slack_text(),
            blocks: message.blocks(),
            broadcast,
        }
    }
}

/// The labels of the "evaluation stale" meta alert.
pub fn meta_labels() -> Vec<(String, String)> {
    [
        ("alertname", "BurnwatchEvaluationStale"),
        ("service", "burnwatch"),
        ("severity", "critical"),
        ("tier", "page"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

/// An SLO Prometheus has not answered for, as the "evaluation stale" meta alert names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSlo {
    pub id: String,
    /// Its last successful evaluation; `None` if none since `watched_since`.
    pub last_answered: Option<Millis>,
    /// Since when burnwatch has waited for an answer (start, reload, an earlier staleness).
    pub watched_since: Millis,
}

/// The stale SLOs in words: each with when Prometheus last answered for it (the first ten).
fn describe_stale(stale: &[StaleSlo]) -> String {
    const NAMED: usize = 10;
    let mut named: Vec<String> = stale
        .iter()
        .take(NAMED)
        .map(|slo| match slo.last_answered {
            Some(at) => format!("{} (last answered {})", slo.id, format_time(at)),
            None => format!(
                "{} (no answer since {})",
                slo.id,
                format_time(slo.watched_since)
            ),
        })
        .collect();
    if stale.len() > NAMED {
        named.push(format!("and {} more", stale.len() - NAMED));
    }
    named.join(", ")
}

/// The meta alert's message and its Alertmanager alert. `since`: when Prometheus last
/// answered for the SLO silent the longest.
pub fn meta_alert(
    firing: bool,
    since: Millis,
    now: Millis,
    external_url: &str,
    stale: &[StaleSlo],
) -> (Message, Value) {
    let (emoji, title, body) = if firing {
        let count = match stale.len() {
            1 => "1 SLO".to_string(),
            many => format!("{many} SLOs"),
        };
        (
            ":rotating_light:",
            "CRITICAL: burnwatch evaluation stale".to_string(),
            format!(
                "Prometheus has not answered for {count}: {}. Their alerts are held, neither firing nor resolving.",
                describe_stale(stale)
            ),
        )
    } else {
        (
            ":white_check_mark:",
            "RESOLVED: burnwatch evaluation stale".to_string(),
            format!(
                "Evaluation recovered at {} (stale since {}).",
                format_time(now),
                format_time(since)
            ),
        )
    };
    let message = Message::notice(emoji, title.clone(), &body);
    let mut alert = json!({
        "labels": meta_labels().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "annotations": {"summary": title, "description": body},
        "startsAt": format_time(since),
        "generatorURL": format!("{external_url}/api/v1/slos"),
    });
    if !firing {
        alert["endsAt"] = json!(format_time(now));
    }
    (message, alert)
}

/// The generic webhook's JSON document (stable; documented in the README).
pub fn webhook_document(
    slo: &Slo,
    event: &Event,
    labels: &[(String, String)],
    message: &Message,
) -> Value {
    let reading = &event.reading;
    json!({
        "version": "1",
        "status": match event.change { Change::Resolved => "resolved", _ => "firing" },
        "change": event.change.as_str(),
        "end_reason": event.ended.map(|ending| ending.as_str()),
        "at": format_time(event.at),
        "slo": {
            "id": slo.id,
            "service": slo.service,
            "name": slo.name,
            "objective": slo.objective.percent(),
            "period": crate::slo::format_duration(slo.period),
        },
        "tier": event.tier.as_str(),
        "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "instance": event.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "firing_since": event.firing_since.map(format_time),
        "windows": {
            "long": crate::slo::format_duration(reading.pair.long),
            "short": crate::slo::format_duration(reading.pair.short),
            "factor": reading.pair.factor,
            "burn_rate_long": finite(reading.burn_long),
            "burn_rate_short": finite(reading.burn_short),
        },
        "error_ratio": reading.long.map(|value| finite(value.error_ratio)),
        "events": reading.long.map(|value| json!({"bad": finite(value.bad), "total": finite(value.total)})),
        "budget_remaining": finite(event.budget_remaining),
        "budget_spent_since_firing": event.budget_spent.and_then(finite),
        "time_to_exhaustion_seconds": event.time_to_exhaustion.map(|d| d.as_secs()),
        "runbook_url": slo.runbook,
        "dashboard_url": slo.dashboard,
        "title": message.title,
        "text": message.plain,
    })
}

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it. `ends_at`: for a firing alert,
/// how long Alertmanager may keep it without hearing again; resolved alerts end at the event.
pub fn alertmanager_alert(
    slo: &Slo,
    event: &Event,
    labels: &[(String, String)],
    message: &Message,
    external_url: &str,
    ends_at: Option<Millis>,
) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(tier) = slo.tier(event.tier) {
        for (name, value) in &tier.annotations {
            annotations.insert(name.clone(), json!(value));
        }
    }
    annotations.insert("summary".to_string(), json!(message.title));
    annotations.insert("description".to_string(), json!(message.plain));
    if let Some(runbook) = &slo.runbook {
        annotations.insert("runbook_url".to_string(), json!(runbook));
    }
    if let Some(dashboard) = &slo.dashboard {
        annotations.insert("dashboard_url".to_string(), json!(dashboard));
    }
    annotations.insert(
        "burn_rate".to_string(),
        json!(render_rate(event.reading.burn_long)),
    );
    if let Some(spent) = event.budget_spent.filter(|spent| spent.is_finite()) {
        annotations.insert(
            "budget_spent_since_firing".to_string(),
            json!(crate::replay::format_percent(spent)),
        );
    }
    if let Some(ending) = event.ended {
        annotations.insert("end_reason".to_string(), json!(ending.as_str()));
    }
    let starts_at = event.firing_since.unwrap_or(event.at);
    let ends_at = match event.change {
        Change::Resolved => Some(event.at),
        _ => ends_at,
    };
    let mut alert = json!({
        "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "annotations": annotations,
        "startsAt": format_time(starts_at),
        "generatorURL": format!("{external_url}/api/v1/slos?slo={}", percent_encode(&slo.id)),
    });
    if let Some(ends_at) = ends_at {
        alert["endsAt"] = json!(format_time(ends_at));
    }
    alert
}

/// A firing alert as re-sent to Alertmanager between changes (labels, links, start; the
/// figures went with the firing notification).
pub fn alertmanager_resend(
    slo: &Slo,
    tier: crate::slo::TierKind,
    instance: &[(String, String)],
    firing_since: Millis,
    external_url: &str,
) -> Value {
    let labels = render::alert_labels(slo, tier, instance);
    let mut annotations = serde_json::Map::new();
    if let Some(spec_tier) = slo.tier(tier) {
        for (name, value) in &spec_tier.annotations {
            annotations.insert(name.clone(), json!(value));
        }
    }
    annotations.insert(
        "summary".to_string(),
        json!(render::title(slo, tier, Change::Firing)),
    );
    if let Some(runbook) = &slo.runbook {
        annotations.insert("runbook_url".to_string(), json!(runbook));
    }
    if let Some(dashboard) = &slo.dashboard {
        annotations.insert("dashboard_url".to_string(), json!(dashboard));
    }
    json!({
        "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "annotations": annotations,
        "startsAt": format_time(firing_since),
        "generatorURL": format!("{external_url}/api/v1/slos?slo={}", percent_encode(&slo.id)),
    })
}

fn render_rate(value: f64) -> String {
    crate::replay::format_rate(value)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
