//! The durable outbox: every notification is a row in the embedded database, written in the
//! same transaction as the alert state that caused it, before anything is sent.
//!
//! - **Nothing lost.** A crash before the commit loses the alert change too, so the next
//!   evaluation makes it again; after the commit the row is there until delivered.
//! - **Nothing twice.** A row is marked `in_flight_since` (committed) before its request goes
//!   out. A row found in flight when picked again (after a crash, a timeout, a dropped
//!   connection, a 5xx) is first looked up at the receiver: Slack messages carry the row's
//!   key in their metadata and are searched in the channel's history or the thread; updates
//!   and Alertmanager posts are idempotent; webhooks carry the key as `Idempotency-Key`.
//! - **In order.** Rows with the same `order_key` (one Slack incident thread, one SLO instance
//!   at a webhook) go out one at a time in creation order.
//!
//! Slack incidents: one row per (channel, SLO instance) while any of its tiers fires. The first
//! firing tier posts the root message; later changes update the root in place and reply in
//! its thread (escalation from ticket to page is broadcast to the channel); when the last tier
//! resolves the root turns RESOLVED and the incident closes.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use crate::alert::Change;
use crate::config::notify::{NotifyConfig, Silence};
use crate::engine::Event;
use crate::notify::matcher;
use crate::notify::render::{self, Message};
use crate::replay::format_time;
use crate::slo::{Millis, Slo, TierKind};
use crate::store::{StoreError, failed};

pub use crate::notify::wire::{
    SlackPayload, StaleSlo, alertmanager_alert, alertmanager_resend, meta_alert, meta_labels,
    webhook_document,
};

/// Schema of the outbox (migration 3 of the store).
pub const SCHEMA: &str = "
    CREATE TABLE incidents (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        sink        TEXT NOT NULL,              -- slack
        target      TEXT NOT NULL,              -- the routed channel, as configured
        slo_id      TEXT NOT NULL,
        labels      TEXT NOT NULL,              -- JSON array of [name, value]
        opened_at   INTEGER NOT NULL,
        closed_at   INTEGER,
        tiers       TEXT NOT NULL,              -- JSON: firing tier -> its current root message
        channel_id  TEXT,                       -- from Slack, once the root is posted
        root_ts     TEXT
    );
    CREATE UNIQUE INDEX incidents_open ON incidents (sink, target, slo_id, labels)
        WHERE closed_at IS NULL;
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        natural_key     TEXT NOT NULL UNIQUE,   -- what caused it; enqueueing twice is a no-op
        sink            TEXT NOT NULL,          -- slack | slack-webhook | webhook:<name> | alertmanager
        order_key       TEXT NOT NULL,
        incident_id     INTEGER REFERENCES incidents (id),
        kind            TEXT NOT NULL,          -- post | reply | update | send
        payload         TEXT NOT NULL,          -- JSON
        created_at      INTEGER NOT NULL,
        state           TEXT NOT NULL,          -- pending | delivered | failed
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        in_flight_since INTEGER,
        last_error      TEXT,
        delivered_at    INTEGER,
        result          TEXT                    -- e.g. the Slack ts
    );
    CREATE INDEX outbox_pending ON outbox (state, sink, order_key, id);
    CREATE INDEX outbox_order ON outbox (order_key, state, id);
    CREATE TABLE silences (
        id         TEXT PRIMARY KEY,
        matchers   TEXT NOT NULL,               -- JSON array of matcher strings
        starts_at  INTEGER NOT NULL,
        ends_at    INTEGER NOT NULL,
        comment    TEXT NOT NULL,
        created_by TEXT NOT NULL
    );
";

/// How long delivered rows are kept (for inspection) before they are pruned.
pub const KEEP_DELIVERED: Millis = 7 * 86_400_000;

/// One row ready to be delivered.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub sink: String,
    pub kind: String,
    pub payload: Value,
    pub incident_id: Option<i64>,
    pub attempts: i64,
    pub created_at: Millis,
    pub in_flight_since: Option<Millis>,
}

impl Row {
    /// The key receivers see (Slack metadata, `Idempotency-Key`): stable across retries and
    /// restarts, unique within this database.
    pub fn key(&self, database: &str) -> String {
        format!("{database}-{}", self.id)
    }
}

/// What planning one cycle's events did, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Planned {
    pub queued: usize,
    pub silenced: usize,
}

/// What the planner needs besides the events.
pub struct Plan<'a> {
    pub notify: &'a NotifyConfig,
    /// Silences added through the API (config silences are in `notify`).
    pub silences: &'a [Silence],
    /// Whether the Slack Web API (threads, updates) or an incoming webhook is configured.
    pub slack: Option<SlackKind>,
    pub external_url: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlackKind {
    WebApi,
    Webhook,
}

fn labels_json(labels: &[(String, String)]) -> String {
    serde_json::to_string(labels).unwrap_or_default()
}

/// The outbox order key of one alert at Alertmanager.
pub fn alertmanager_order_key(slo_id: &str, labels: &[(String, String)], tier: TierKind) -> String {
    format!(
        "alertmanager|{slo_id}|{}|{}",
        labels_json(labels),
        tier.as_str()
    )
}

struct Enqueue<'a> {
    sink: &'a str,
    order_key: &'a str,
    incident_id: Option<i64>,
    kind: &'a str,
    payload: Value,
    natural_key: String,
}

fn enqueue(tx: &Transaction, now: Millis, row: Enqueue) -> Result<bool, StoreError> {
    let inserted = tx
        .execute(
            "INSERT OR IGNORE INTO outbox
                (natural_key, sink, order_key, incident_id, kind, payload, created_at, state, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?7)",
            params![
                row.natural_key,
                row.sink,
                row.order_key,
                row.incident_id,
                row.kind,
                row.payload.to_string(),
                now
            ],
        )
        .map_err(failed("queue a notification"))?;
    Ok(inserted == 1)
}

/// The first route whose matchers match decides the Slack channel.
pub fn route<'a>(notify: &'a NotifyConfig, labels: &[(String, String)]) -> Option<&'a str> {
    notify
        .routes
        .iter()
        .find(|route| matcher::all_match(&route.matchers, labels))
        .and_then(|route| route.slack_channel.as_deref())
}

fn silenced(plan: &Plan, labels: &[(String, String)], now: Millis) -> bool {
    plan.notify
        .silences
        .iter()
        .chain(plan.silences)
        .any(|silence| silence.active(now) && matcher::all_match(&silence.matchers, labels))
}

fn severity_rank(tier: &str) -> u8 {
    match tier {
        "page" => 2,
        _ => 1,
    }
}

/// Queues the notifications of `events` (each with its SLO) inside `tx`. Pending and
/// insufficient-data changes are not notifications.
pub fn plan(
    tx: &Transaction,
    plan: &Plan,
    events: &[(&Slo, &Event)],
    now: Millis,
) -> Result<Planned, StoreError> {
    let mut planned = Planned::default();
    for (slo, event) in events {
        if !matches!(
            event.change,
            Change::Firing | Change::Reminder | Change::Resolved
        ) {
            continue;
        }
        let labels = render::alert_labels(slo, event.tier, &event.labels);
        // A silence holds new and continuing burns; a resolution always goes out, so nothing
        // that was told about the burn is left believing it still burns.
        if event.change != Change::Resolved && silenced(plan, &labels, now) {
            planned.silenced += 1;
            continue;
        }
        let message = render::render(slo, event);
        let instance = labels_json(&event.labels);
        let cause = format!(
            "{}|{}|{}|{}|{}",
            slo.id,
            instance,
            event.tier.as_str(),
            event.change.as_str(),
            event.at
        );
        let channel = route(plan.notify, &labels);
        match (plan.slack, channel) {
            (Some(SlackKind::WebApi), _) => {
                planned.queued +=
                    plan_slack_thread(tx, slo, event, channel, &instance, &cause, now)?;
            }
            (Some(SlackKind::Webhook), Some(_)) => {
                let order_key = format!("slack-webhook|{}|{instance}", slo.id);
                let payload = SlackPayload::new("", &message, false);
                planned.queued += usize::from(enqueue(
                    tx,
                    now,
                    Enqueue {
                        sink: "slack-webhook",
                        order_key: &order_key,
                        incident_id: None,
                        kind: "send",
                        payload: serde_json::to_value(payload).unwrap_or_default(),
                        natural_key: format!("slack-webhook|{cause}"),
                    },
                )?);
            }
            _ => {}
        }
        for webhook in &plan.notify.webhooks {
            let sink = format!("webhook:{}", webhook.name);
            let order_key = format!("{sink}|{}|{instance}", slo.id);
            planned.queued += usize::from(enqueue(
                tx,
                now,
                Enqueue {
                    sink: &sink,
                    order_key: &order_key,
                    incident_id: None,
                    kind: "send",
                    payload: webhook_document(slo, event, &labels, &message),
                    natural_key: format!("{sink}|{cause}"),
                },
            )?);
        }
        if plan.notify.alertmanager.is_some() && event.change != Change::Reminder {
            let order_key = alertmanager_order_key(&slo.id, &event.labels, event.tier);
            planned.queued += usize::from(enqueue(
                tx,
                now,
                Enqueue {
                    sink: "alertmanager",
                    order_key: &order_key,
                    incident_id: None,
                    kind: "send",
                    payload: alertmanager_alert(
                        slo,
                        event,
                        &labels,
                        &message,
                        plan.external_url,
                        None,
                    ),
                    natural_key: format!("alertmanager|{cause}"),
                },
            )?);
        }
    }
    Ok(planned)
}

/// Closes a Slack incident: its root turns to `payload` and the same goes in its thread.
/// `cause` tells this closing from any other in the rows' natural keys.
fn close_incident(
    tx: &Transaction,
    id: i64,
    payload: &SlackPayload,
    cause: &str,
    now: Millis,
) -> Result<usize, StoreError> {
    tx.execute(
        "UPDATE incidents SET closed_at = ?1, tiers = '{}' WHERE id = ?2",
        params![now, id],
    )
    .map_err(failed("close incident"))?;
    let payload = serde_json::to_value(payload).unwrap_or_default();
    let mut queued = 0;
    for (index, kind) in ["update", "reply"].iter().enumerate() {
        queued += usize::from(enqueue(
            tx,
            now,
            Enqueue {
                sink: "slack",
                order_key: &format!("slack|{id}"),
                incident_id: Some(id),
                kind,
                payload: payload.clone(),
                natural_key: format!("slack|{id}|{cause}|{index}"),
            },
        )?);
    }
    Ok(queued)
}

/// The open Slack incidents of `slo_id` (of one instance, when `labels` is given), oldest
/// first: (id, target channel, firing tiers as JSON).
fn open_incidents(
    tx: &Transaction,
    slo_id: &str,
    labels: Option<&str>,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    let mut query = tx
        .prepare_cached(
            "SELECT id, target, tiers FROM incidents
             WHERE sink = 'slack' AND slo_id = ?1 AND (?2 IS NULL OR labels = ?2)
               AND closed_at IS NULL
             ORDER BY id",
        )
        .map_err(failed("prepare incidents"))?;
    let rows = query
        .query_map(params![slo_id, labels], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(failed("read incidents"))?;
    rows.collect::<Result<_, _>>()
        .map_err(failed("read incident"))
}

/// Queues the "evaluation stale" meta alert's change at evaluation time `at`: a Slack thread in
/// the routed channel (as an SLO incident has; resolved wherever it was opened),
/// Alertmanager, webhooks. `now` is the outbox's (real) time.
pub fn plan_meta(
    tx: &Transaction,
    plan: &Plan,
    firing: bool,
    since: Millis,
    at: Millis,
    now: Millis,
    stale: &[StaleSlo],
) -> Result<Planned, StoreError> {
    let labels = meta_labels();
    let mut planned = Planned::default();
    if firing && silenced(plan, &labels, now) {
        planned.silenced += 1;
        return Ok(planned);
    }
    let (message, alert) = meta_alert(firing, since, at, plan.external_url, stale);
    if !firing && plan.slack == Some(SlackKind::WebApi) {
        // Resolve every open stale thread, wherever routes sent it.
        let open = open_incidents(tx, "burnwatch", None)?;
        for (id, target, _) in open {
            planned.queued += close_incident(
                tx,
                id,
                &SlackPayload::new(&target, &message, false),
                &format!("burnwatch|meta|resolved|{since}"),
                now,
            )?;
        }
    }
    let change = if firing { "firing" } else { "resolved" };
    let cause = format!("burnwatch|meta|{change}|{since}");
    let order_key_of = |sink: &str| format!("{sink}|burnwatch|meta");
    if let Some(channel) = route(plan.notify, &labels) {
        match plan.slack {
            Some(SlackKind::WebApi) if firing => {
                let open: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM incidents WHERE sink = 'slack' AND target = ?1
                         AND slo_id = 'burnwatch' AND labels = '[]' AND closed_at IS NULL",
                        params![channel],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(failed("read incident"))?;
                let payload = serde_json::to_value(SlackPayload::new(channel, &message, false))
                    .unwrap_or_default();
                let (incident, kinds): (i64, &[&str]) = match open {
                    None => {
                        tx.execute(
                            "INSERT INTO incidents (sink, target, slo_id, labels, opened_at, tiers)
                             VALUES ('slack', ?1, 'burnwatch', '[]', ?2, '{}')",
                            params![channel, now],
                        )
                        .map_err(failed("open incident"))?;
                        (tx.last_insert_rowid(), &["post"])
                    }
                    // Stale again while an earlier episode's thread is still open: the same
                    // thread says so.
                    Some(id) => (id, &["update", "reply"]),
                };
                let incident = Some(incident);
                if let Some(incident) = incident {
                    let order_key = format!("slack|{incident}");
                    for (index, kind) in kinds.iter().enumerate() {
                        planned.queued += usize::from(enqueue(
                            tx,
                            now,
                            Enqueue {
                                sink: "slack",
                                order_key: &order_key,
                                incident_id: Some(incident),
                                kind,
                                payload: payload.clone(),
                                natural_key: format!("slack|{incident}|{cause}|{index}"),
                            },
                        )?);
                    }
                }
            }
            Some(SlackKind::Webhook) => {
                planned.queued += usize::from(enqueue(
                    tx,
                    now,
                    Enqueue {
                        sink: "slack-webhook",
                        order_key: &order_key_of("slack-webhook"),
                        incident_id: None,
                        kind: "send",
                        payload: serde_json::to_value(SlackPayload::new("", &message, false))
                            .unwrap_or_default(),
                        natural_key: format!("slack-webhook|{cause}"),
                    },
                )?);
            }
            Some(SlackKind::WebApi) | None => {}
        }
    }
    for webhook in &plan.notify.webhooks {
        let sink = format!("webhook:{}", webhook.name);
        let document = json!({
            "version": "1",
            "status": change,
            "change": change,
            "at": format_time(now),
            "meta": "evaluation_stale",
            "stale_since": format_time(since),
            "stale_slos": stale.iter().map(|slo| json!({
                "id": slo.id,
                "last_answered": slo.last_answered.map(format_time),
            })).collect::<Vec<_>>(),
            "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "title": message.title,
            "text": message.plain,
        });
        planned.queued += usize::from(enqueue(
            tx,
            now,
            Enqueue {
                sink: &sink,
                order_key: &order_key_of(&sink),
                incident_id: None,
                kind: "send",
                payload: document,
                natural_key: format!("{sink}|{cause}"),
            },
        )?);
    }
    if plan.notify.alertmanager.is_some() {
        planned.queued += usize::from(enqueue(
            tx,
            now,
            Enqueue {
                sink: "alertmanager",
                order_key: &order_key_of("alertmanager"),
                incident_id: None,
                kind: "send",
                payload: alert,
                natural_key: format!("alertmanager|{cause}"),
            },
        )?);
    }
    Ok(planned)
}

/// Closes the open Slack incidents of SLOs that a reload removed: their roots and threads say
/// the SLO is no longer evaluated (else they would show it burning forever).
pub fn plan_removed(
    tx: &Transaction,
    slo_ids: &[String],
    now: Millis,
) -> Result<usize, StoreError> {
    let mut queued = 0;
    for slo_id in slo_ids {
        let open = open_incidents(tx, slo_id, None)?;
        for (id, target, _) in open {
            let title = format!("ENDED: {slo_id} is no longer evaluated");
            let body = format!(
                "The SLO was removed from burnwatch's configuration at {}; this incident is closed without a verdict.",
                format_time(now)
            );
            let message = Message::notice(":heavy_minus_sign:", title, &body);
            queued += close_incident(
                tx,
                id,
                &SlackPayload::new(&target, &message, false),
                &format!("removed|{now}"),
                now,
            )?;
        }
    }
    Ok(queued)
}

/// One Slack incident thread: open, escalate, remind, resolve.
///
/// A burn (firing, reminder) goes to the incident in the channel it routes to now; a
/// resolution goes to every open incident of the instance where that tier fires, wherever it
/// was routed (routes may have changed since).
fn plan_slack_thread(
    tx: &Transaction,
    slo: &Slo,
    event: &Event,
    channel: Option<&str>,
    instance: &str,
    cause: &str,
    now: Millis,
) -> Result<usize, StoreError> {
    let open = open_incidents(tx, &slo.id, Some(instance))?;
    let tier = event.tier.as_str();
    if event.change == Change::Resolved {
        let mut queued = 0;
        for (id, target, tiers) in open {
            let firing: serde_json::Map<String, Value> =
                serde_json::from_str(&tiers).unwrap_or_default();
            if firing.contains_key(tier) {
                queued += advance_thread(
                    tx,
                    slo,
                    event,
                    &target,
                    Some((id, tiers)),
                    instance,
                    cause,
                    now,
                )?;
            }
        }
        return Ok(queued);
    }
    let Some(channel) = channel else {
        return Ok(0);
    };
    let (here, elsewhere): (Vec<_>, Vec<_>) = open
        .into_iter()
        .partition(|(_, target, _)| target == channel);
    let mut queued = advance_thread(
        tx,
        slo,
        event,
        channel,
        here.into_iter().next().map(|(id, _, tiers)| (id, tiers)),
        instance,
        cause,
        now,
    )?;
    // A page while the ticket's thread is open in another channel: the page goes where pages
    // go, and the ticket's thread says where the incident went.
    if event.change == Change::Firing && event.tier == crate::slo::TierKind::Page {
        for (id, target, _) in elsewhere {
            let page = render::render(slo, event);
            let note = Message {
                title: format!("Escalated: paging in {channel}"),
                mrkdwn: format!(
                    ":arrow_double_up: *Escalated: paging in {}*\n{}",
                    render::escape(channel),
                    page.mrkdwn
                ),
                plain: format!("Escalated: paging in {channel}\n{}", page.plain),
            };
            queued += usize::from(enqueue(
                tx,
                now,
                Enqueue {
                    sink: "slack",
                    order_key: &format!("slack|{id}"),
                    incident_id: Some(id),
                    kind: "reply",
                    payload: serde_json::to_value(SlackPayload::new(&target, &note, false))
                        .unwrap_or_default(),
                    natural_key: format!("slack|{id}|{cause}|escalated"),
                },
            )?);
        }
    }
    Ok(queued)
}

/// One change in one incident thread (`open`: its id and firing tiers), or a new incident.
#[allow(clippy::too_many_arguments)]
fn advance_thread(
    tx: &Transaction,
    slo: &Slo,
    event: &Event,
    channel: &str,
    open: Option<(i64, String)>,
    instance: &str,
    cause: &str,
    now: Millis,
) -> Result<usize, StoreError> {
    let tier = event.tier.as_str();
    // Reminders refresh the root with current figures under the firing headline.
    let mut as_firing = event.clone();
    if as_firing.change == Change::Reminder {
        as_firing.change = Change::Firing;
    }
    let root_now = SlackPayload::new(channel, &render::render(slo, &as_firing), false);
    let message = render::render(slo, event);
    let mut rows: Vec<(&str, SlackPayload)> = Vec::new();
    let incident_id = match (open, event.change) {
        (None, Change::Resolved) => return Ok(0),
        (None, _) => {
            // A new incident (or one whose firing was silenced until now).
            let tiers = json!({ tier: root_now });
            tx.execute(
                "INSERT INTO incidents (sink, target, slo_id, labels, opened_at, tiers)
                 VALUES ('slack', ?1, ?2, ?3, ?4, ?5)",
                params![channel, slo.id, instance, now, tiers.to_string()],
            )
            .map_err(failed("open incident"))?;
            rows.push(("post", root_now));
            tx.last_insert_rowid()
        }
        (Some((id, tiers)), change) => {
            let mut tiers: serde_json::Map<String, Value> =
                serde_json::from_str(&tiers).unwrap_or_default();
            let top_before = tiers.keys().map(|t| severity_rank(t)).max().unwrap_or(0);
            match change {
                Change::Resolved => {
                    tiers.remove(tier);
                }
                _ => {
                    tiers.insert(
                        tier.to_string(),
                        serde_json::to_value(&root_now).unwrap_or_default(),
                    );
                }
            }
            let top = tiers
                .iter()
                .max_by_key(|(name, _)| severity_rank(name))
                .map(|(name, root)| (name.clone(), root.clone()));
            let escalation =
                change == Change::Firing && severity_rank(tier) > top_before && top_before > 0;
            match top {
                None => {
                    // The last firing tier resolved: the root says RESOLVED, the thread says
                    // how it ended, the incident closes.
                    rows.push(("update", SlackPayload::new(channel, &message, false)));
                    rows.push(("reply", SlackPayload::new(channel, &message, false)));
                    tx.execute(
                        "UPDATE incidents SET closed_at = ?1, tiers = '{}' WHERE id = ?2",
                        params![now, id],
                    )
                    .map_err(failed("close incident"))?;
                }
                Some((top_tier, root)) => {
                    if (top_tier == tier || change == Change::Resolved)
                        && let Ok(root) = serde_json::from_value::<SlackPayload>(root)
                    {
                        rows.push(("update", root));
                    }
                    rows.push(("reply", SlackPayload::new(channel, &message, escalation)));
                    tx.execute(
                        "UPDATE incidents SET tiers = ?1 WHERE id = ?2",
                        params![Value::Object(tiers).to_string(), id],
                    )
                    .map_err(failed("update incident"))?;
                }
            }
            id
        }
    };
    let order_key = format!("slack|{incident_id}");
    let mut queued = 0;
    for (index, (kind, payload)) in rows.into_iter().enumerate() {
        queued += usize::from(enqueue(
            tx,
            now,
            Enqueue {
                sink: "slack",
                order_key: &order_key,
                incident_id: Some(incident_id),
                kind,
                payload: serde_json::to_value(payload).unwrap_or_default(),
                natural_key: format!("slack|{incident_id}|{cause}|{index}"),
            },
        )?);
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures;
    use crate::notify::matcher::Matcher;
    use crate::slo::TierKind;
    use crate::store::Store;
    use std::time::Duration;

    fn slo() -> Slo {
        fixtures::slo("order-service", "https://runbooks.example.com/orders")
    }

    fn event(tier: TierKind, change: Change, at: Millis) -> Event {
        fixtures::event(&slo().id, "POST /orders", tier, change, at, at)
    }

    /// (kind, channel, headline, broadcast) of every queued row, oldest first.
    fn queued(store: &Store) -> Vec<(String, String, String, bool)> {
        let mut query = store
            .connection()
            .prepare("SELECT sink, kind, payload FROM outbox ORDER BY id")
            .unwrap();
        query
            .query_map([], |row| {
                let (sink, kind, payload): (String, String, String) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                let payload: Value = serde_json::from_str(&payload).unwrap();
                let headline = payload["text"]
                    .as_str()
                    .map(|text| text.lines().next().unwrap_or("").to_string())
                    .unwrap_or_else(|| payload["labels"]["alertname"].to_string());
                Ok((
                    format!("{sink}:{kind}"),
                    payload["channel"].as_str().unwrap_or("").to_string(),
                    headline,
                    payload["broadcast"].as_bool().unwrap_or(false),
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Plans one change of `tier` at `at`.
    fn step(
        store: &mut Store,
        notify: &NotifyConfig,
        tier: TierKind,
        change: Change,
        at: Millis,
    ) -> Planned {
        run(store, notify, &[event(tier, change, at)], at)
    }

    fn run(store: &mut Store, notify: &NotifyConfig, events: &[Event], now: Millis) -> Planned {
        let slo = slo();
        let context = Plan {
            notify,
            silences: &[],
            slack: Some(SlackKind::WebApi),
            external_url: "http://burnwatch:9099",
        };
        let pairs: Vec<(&Slo, &Event)> = events.iter().map(|event| (&slo, event)).collect();
        store
            .save_cycle(&[], |tx| plan(tx, &context, &pairs, now))
            .unwrap()
    }

    #[test]
    fn one_thread_per_incident_across_tiers_in_one_channel() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut notify = NotifyConfig::default();
        notify.routes = vec![crate::config::notify::Route {
            matchers: Vec::new(),
            slack_channel: Some("#incidents".to_string()),
        }];
        let t = 1_700_000_000_000;
        step(&mut store, &notify, TierKind::Ticket, Change::Firing, t);
        step(&mut store, &notify, TierKind::Page, Change::Firing, t + 1);
        step(&mut store, &notify, TierKind::Page, Change::Reminder, t + 2);
        step(&mut store, &notify, TierKind::Page, Change::Resolved, t + 3);
        step(
            &mut store,
            &notify,
            TierKind::Ticket,
            Change::Resolved,
            t + 4,
        );
        // Resolved again (a replayed cycle) with no open incident: nothing.
        step(
            &mut store,
            &notify,
            TierKind::Ticket,
            Change::Resolved,
            t + 5,
        );
        let rows: Vec<String> = queued(&store)
            .into_iter()
            .map(|(kind, channel, headline, broadcast)| {
                format!(
                    "{kind} {channel} {headline}{}",
                    if broadcast { " (broadcast)" } else { "" }
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                "slack:post #incidents WARNING: Slow error budget burn on order-service",
                "slack:update #incidents CRITICAL: Fast error budget burn on order-service",
                "slack:reply #incidents CRITICAL: Fast error budget burn on order-service (broadcast)",
                "slack:update #incidents CRITICAL: Fast error budget burn on order-service",
                "slack:reply #incidents STILL FIRING: Fast error budget burn on order-service",
                "slack:update #incidents WARNING: Slow error budget burn on order-service",
                "slack:reply #incidents RESOLVED: Fast error budget burn on order-service",
                "slack:update #incidents RESOLVED: Slow error budget burn on order-service",
                "slack:reply #incidents RESOLVED: Slow error budget burn on order-service",
            ]
        );
        let open: i64 = store
            .connection()
            .query_row(
                "SELECT COUNT(*) FROM incidents WHERE closed_at IS NULL",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(open, 0);
        // Firing again after the close opens a new incident with its own root.
        let before = queued(&store).len();
        let again = step(&mut store, &notify, TierKind::Ticket, Change::Firing, t + 9);
        assert_eq!(again.queued, 1, "a new incident opens: {again:?}");
        assert_eq!(queued(&store)[before].0, "slack:post");
    }

    #[test]
    fn a_resolution_finds_its_thread_after_routes_change_and_is_never_silenced() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let t = 1_700_000_000_000;
        let mut notify = NotifyConfig::default();
        step(&mut store, &notify, TierKind::Page, Change::Firing, t);
        // A reload sends pages elsewhere and silences everything.
        notify.routes = vec![crate::config::notify::Route {
            matchers: Vec::new(),
            slack_channel: Some("#elsewhere".to_string()),
        }];
        notify.silences = vec![Silence {
            id: "all".to_string(),
            matchers: vec![Matcher::parse("service=~\".+\"").unwrap()],
            starts_at: t,
            ends_at: t + 100,
            comment: String::new(),
            created_by: String::new(),
        }];
        let planned = step(&mut store, &notify, TierKind::Page, Change::Resolved, t + 1);
        assert_eq!(
            planned,
            Planned {
                queued: 2,
                silenced: 0
            }
        );
        let rows = queued(&store);
        assert_eq!(
            rows.iter()
                .map(|(kind, channel, _, _)| format!("{kind} {channel}"))
                .collect::<Vec<_>>(),
            [
                "slack:post #incidents",
                "slack:update #incidents",
                "slack:reply #incidents"
            ]
        );
    }

    #[test]
    fn due_rows_are_the_heads_of_their_orders() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let t = 1_700_000_000_000;
        let notify = NotifyConfig::default();
        // Incident A: post, then update + reply; incident B (a ticket, other channel): post.
        step(&mut store, &notify, TierKind::Page, Change::Firing, t);
        step(&mut store, &notify, TierKind::Page, Change::Resolved, t + 1);
        step(&mut store, &notify, TierKind::Ticket, Change::Firing, t + 2);
        let ids = |rows: Vec<Row>| {
            rows.iter()
                .map(|row| (row.id, row.kind.clone()))
                .collect::<Vec<_>>()
        };
        let now = crate::notify::deliver::wall_clock();
        assert_eq!(
            ids(store.due("slack", now, 10).unwrap()),
            [(1, "post".to_string()), (4, "post".to_string())]
        );
        assert!(store.due("webhook", now, 10).unwrap().is_empty());
        store
            .mark_failed(1, "http_503", Some(now + 60_000), true)
            .unwrap();
        assert_eq!(
            ids(store.due("slack", now, 10).unwrap()),
            [(4, "post".to_string())],
            "a row waiting for its retry holds back its order only"
        );
        store.mark_delivered(1, now, Some("1.0")).unwrap();
        assert_eq!(
            ids(store.due("slack", now, 10).unwrap()),
            [(2, "update".to_string()), (4, "post".to_string())]
        );
        assert_eq!(store.next_due("slack", now).unwrap(), None);
    }

    #[test]
    fn removing_an_slo_closes_its_threads() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let t = 1_700_000_000_000;
        run(
            &mut store,
            &NotifyConfig::default(),
            &[event(TierKind::Page, Change::Firing, t)],
            t,
        );
        let closed = store
            .save_cycle(&[], |tx| plan_removed(tx, &[slo().id], t + 1))
            .unwrap();
        assert_eq!(closed, 2);
        let rows = queued(&store);
        assert_eq!(
            rows[1].2,
            "ENDED: order-service-availability is no longer evaluated"
        );
        assert_eq!(
            (rows[1].0.as_str(), rows[2].0.as_str()),
            ("slack:update", "slack:reply")
        );
        let again = store
            .save_cycle(&[], |tx| plan_removed(tx, &[slo().id], t + 2))
            .unwrap();
        assert_eq!(again, 0, "closed once");
    }

    #[test]
    fn default_routes_silences_and_other_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut notify = NotifyConfig::default();
        notify.alertmanager = Some(crate::config::notify::AlertmanagerConfig {
            url: "http://am:9093".to_string(),
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        });
        let t = 1_700_000_000_000;
        notify.silences = vec![Silence {
            id: "s1".to_string(),
            matchers: vec![Matcher::parse("tier=\"ticket\"").unwrap()],
            starts_at: t - 1,
            ends_at: t + 10,
            comment: String::new(),
            created_by: String::new(),
        }];
        let planned = run(
            &mut store,
            &notify,
            &[
                event(TierKind::Page, Change::Firing, t),
                event(TierKind::Ticket, Change::Firing, t),
            ],
            t,
        );
        assert_eq!(
            planned,
            Planned {
                queued: 2,
                silenced: 1
            }
        );
        // After the silence ends, the ticket's next reminder opens its thread in #slo-alerts.
        step(
            &mut store,
            &notify,
            TierKind::Ticket,
            Change::Reminder,
            t + 20,
        );
        let rows = queued(&store);
        assert_eq!(rows[0].0, "slack:post");
        assert_eq!(rows[0].1, "#incidents");
        assert_eq!(rows[1].0, "alertmanager:send");
        assert_eq!(
            (rows[2].0.as_str(), rows[2].1.as_str()),
            ("slack:post", "#slo-alerts")
        );
        assert_eq!(
            rows[2].2,
            "WARNING: Slow error budget burn on order-service"
        );
        assert_eq!(
            rows.len(),
            3,
            "reminders are not sent to Alertmanager: {rows:?}"
        );
    }

    #[test]
    fn alertmanager_alerts_carry_labels_links_and_times() {
        let slo = slo();
        let firing = event(TierKind::Page, Change::Firing, 1_700_000_000_000);
        let labels = render::alert_labels(&slo, TierKind::Page, &firing.labels);
        let message = render::render(&slo, &firing);
        let alert = alertmanager_alert(&slo, &firing, &labels, &message, "http://bw:9099", None);
        assert_eq!(alert["labels"]["severity"], "critical");
        assert_eq!(alert["labels"]["route"], "POST /orders");
        assert_eq!(
            alert["annotations"]["runbook_url"],
            "https://runbooks.example.com/orders"
        );
        assert_eq!(alert["startsAt"], "2023-11-14T22:13:20Z");
        assert!(alert.get("endsAt").is_none());
        assert_eq!(
            alert["generatorURL"],
            "http://bw:9099/api/v1/slos?slo=order-service-availability"
        );
        let mut resolved = event(TierKind::Page, Change::Resolved, 1_700_000_600_000);
        resolved.firing_since = Some(1_700_000_000_000);
        let alert = alertmanager_alert(&slo, &resolved, &labels, &message, "http://bw:9099", None);
        assert_eq!(alert["endsAt"], "2023-11-14T22:23:20Z");
    }
}
