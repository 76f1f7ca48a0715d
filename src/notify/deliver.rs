//! Delivery workers: one task per sink family (`slack`, `slack-webhook`, `webhook`,
//! `alertmanager`) drains the outbox in order, at most one request at a time.
//!
//! - Backoff: exponential from 1s, doubling to 5 minutes, with jitter (each wait is 50–100% of
//!   the step); a `429` waits exactly its `Retry-After` (and holds the channel that long).
//! - About one Slack message per second per channel (posts and replies; updates are free).
//! - Rows that cannot succeed (unknown channel, bad token, payload rejected) are marked
//!   `failed` with the reason; transient failures are retried for up to a day.
//! - A row found in flight (an earlier attempt whose outcome is unknown) is looked up first:
//!   Slack history/thread by metadata key; everything else is idempotent at the receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::notify::AlertmanagerConfig;
use crate::notify::outbox::{Row, SlackPayload};
use crate::notify::sinks::{Failure, Http, Outgoing, SlackApi};
use crate::replay::format_time;
use crate::slo::Millis;
use crate::source::prometheus::Secret;
use crate::store::Store;

/// Transient failures are retried this long after the notification was queued.
pub const GIVE_UP_AFTER: Millis = 86_400_000;
const BACKOFF_FIRST: Millis = 1_000;
const BACKOFF_MAX: Millis = 300_000;
/// Slack's guidance: about one message per second per channel.
const CHANNEL_SPACING: Duration = Duration::from_secs(1);
/// How far back a lookup of an in-flight Slack message reaches before the attempt started.
const LOOKUP_MARGIN_SECS: f64 = 60.0;

/// The receivers as configured, secrets read. Replaced whole on reload.
#[derive(Debug)]
pub struct Sinks {
    pub slack_api: Option<SlackApi>,
    pub slack_webhook: Option<(Secret, Duration)>,
    pub webhooks: Vec<(String, Secret, Duration)>,
    pub alertmanager: Option<AlertmanagerConfig>,
    pub http: Http,
}

/// Delivery metrics (clones of the registered families).
#[derive(Clone)]
pub struct DeliveryMetrics {
    pub depth: Family<Vec<(String, String)>, Gauge>,
    pub delivered: Family<Vec<(String, String)>, Counter>,
    pub failures: Family<Vec<(String, String)>, Counter>,
    pub delay: Histogram,
}

/// What every worker shares.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<Mutex<Store>>,
    pub database_id: String,
    pub sinks: watch::Receiver<Arc<Sinks>>,
    pub metrics: DeliveryMetrics,
    /// Signalled after rows are queued.
    pub wake: Arc<Notify>,
    /// Held across each Alertmanager request, so a re-send read before a resolution was
    /// committed cannot land after that resolution.
    pub alertmanager_lock: Arc<tokio::sync::Mutex<()>>,
    pub shutdown: CancellationToken,
}

/// The sink families, each drained by its own worker.
pub const FAMILIES: [&str; 4] = ["slack", "slack-webhook", "webhook", "alertmanager"];

pub fn wall_clock() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as Millis)
}

/// The wait before attempt `attempts + 1`: doubling from 1s to 5 minutes, 50–100% of it.
pub fn backoff(attempts: i64) -> Millis {
    let step = BACKOFF_FIRST
        .saturating_mul(1 << attempts.clamp(0, 20))
        .min(BACKOFF_MAX);
    step / 2 + fastrand::i64(0..=step / 2)
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a store operation off the async threads.
async fn with_store<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    work: impl FnOnce(&mut Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, crate::store::StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(&mut lock(&store)))
        .await
        .unwrap_or_else(|error| {
            Err(crate::store::StoreError::new(format!(
                "store task failed: {error}"
            )))
        })
}

/// Per-channel spacing of Slack messages, and holds after a 429.
#[derive(Default)]
struct Pacer {
    next: HashMap<String, Instant>,
}

impl Pacer {
    fn wait(&self, channel: &str) -> Option<Duration> {
        let next = self.next.get(channel)?;
        next.checked_duration_since(Instant::now())
            .filter(|wait| !wait.is_zero())
    }

    fn sent(&mut self, channel: &str) {
        let next = Instant::now() + CHANNEL_SPACING;
        let entry = self.next.entry(channel.to_string()).or_insert(next);
        *entry = (*entry).max(next);
    }

    fn hold(&mut self, channel: &str, wait: Duration) {
        let until = Instant::now() + wait;
        let entry = self.next.entry(channel.to_string()).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// Drains the outbox rows of `family` until shutdown.
pub async fn worker(family: &'static str, context: Context) {
    let mut pacer = Pacer::default();
    loop {
        if context.shutdown.is_cancelled() {
            return;
        }
        let now = wall_clock();
        let rows = match with_store(&context.store, move |store| store.due(family, now, 256)).await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, family, "cannot read the outbox");
                Vec::new()
            }
        };
        let mut earliest_hold: Option<Duration> = None;
        let mut sent = 0;
        for row in rows {
            if context.shutdown.is_cancelled() {
                return;
            }
            let channel = pacing_key(&row);
            if let Some(channel) = &channel
                && let Some(wait) = pacer.wait(channel)
            {
                earliest_hold = Some(earliest_hold.map_or(wait, |known| known.min(wait)));
                continue;
            }
            let sinks = context.sinks.borrow().clone();
            deliver(&context, &sinks, &row, channel.as_deref(), &mut pacer).await;
            sent += 1;
        }
        update_depth(&context).await;
        if sent > 0 {
            continue;
        }
        // Rows due now were all held by the pacer (or there were none): wait for the first
        // hold to end or the next row to fall due, whichever is first.
        let now = wall_clock();
        let next_due = with_store(&context.store, move |store| store.next_due(family, now))
            .await
            .ok()
            .flatten()
            .map(|at| Duration::from_millis((at - wall_clock()).max(0) as u64));
        let wait = [earliest_hold, next_due]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(30))
            .clamp(Duration::from_millis(20), Duration::from_secs(30));
        tokio::select! {
            _ = context.shutdown.cancelled() => return,
            _ = context.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn pacing_key(row: &Row) -> Option<String> {
    match (row.sink.as_str(), row.kind.as_str()) {
        ("slack", "post" | "reply") => row.payload["channel"].as_str().map(str::to_string),
        ("slack-webhook", _) => Some("slack-webhook".to_string()),
        _ => None,
    }
}

async fn update_depth(context: &Context) {
    if let Ok(depth) = with_store(&context.store, |store| store.depth()).await {
        for family in FAMILIES {
            let pending: i64 = depth
                .iter()
                .filter(|(sink, _)| sink == family || sink.starts_with(&format!("{family}:")))
                .map(|(_, count)| count)
                .sum();
            context
                .metrics
                .depth
                .get_or_create(&vec![("sink".to_string(), family.to_string())])
                .set(pending);
        }
    }
}

fn sink_label(row: &Row) -> String {
    row.sink.clone()
}

/// One attempt at one row, and its bookkeeping.
async fn deliver(
    context: &Context,
    sinks: &Sinks,
    row: &Row,
    channel: Option<&str>,
    pacer: &mut Pacer,
) {
    let key = row.key(&context.database_id);
    let outcome = attempt(context, sinks, row, &key).await;
    // Every attempt counts against the channel's pace, whatever its outcome: a request that
    // failed (a dropped connection, a 5xx) may still have posted, and the rows behind it must
    // not rush out.
    if let Some(channel) = channel {
        pacer.sent(channel);
    }
    let now = wall_clock();
    let sink = sink_label(row);
    let id = row.id;
    match outcome {
        Ok(result) => {
            context
                .metrics
                .delivered
                .get_or_create(&vec![("sink".to_string(), sink.clone())])
                .inc();
            context
                .metrics
                .delay
                .observe((now - row.created_at).max(0) as f64 / 1000.0);
            tracing::info!(sink, id, kind = %row.kind, attempts = row.attempts + 1, "notification delivered");
            let recorded = match result {
                Done::Recorded => Ok(()),
                Done::Delivered(result) => {
                    with_store(&context.store, move |store| {
                        store.mark_delivered(id, now, result.as_deref())
                    })
                    .await
                }
            };
            if let Err(error) = recorded {
                tracing::error!(%error, id, "delivered, but could not record it");
            }
        }
        Err(failure) => {
            context
                .metrics
                .failures
                .get_or_create(&vec![
                    ("sink".to_string(), sink.clone()),
                    ("reason".to_string(), failure.reason().to_string()),
                ])
                .inc();
            let (retry_at, ambiguous) = match &failure {
                Failure::RateLimited(wait) => {
                    if let Some(channel) = channel {
                        pacer.hold(channel, *wait);
                    }
                    let wait = *wait + Duration::from_millis(fastrand::u64(0..250));
                    (Some(now + wait.as_millis() as Millis), false)
                }
                Failure::Transient { ambiguous, .. } => {
                    let retry_at = now + backoff(row.attempts);
                    (
                        (retry_at - row.created_at < GIVE_UP_AFTER).then_some(retry_at),
                        *ambiguous,
                    )
                }
                Failure::Permanent { .. } => (None, false),
            };
            let reason = failure.reason().to_string();
            match retry_at {
                Some(at) => tracing::warn!(
                    sink, id, kind = %row.kind, reason, retry_at = %format_time(at),
                    "notification not delivered; will retry"
                ),
                None => tracing::error!(
                    sink, id, kind = %row.kind, reason,
                    "notification cannot be delivered; giving up"
                ),
            }
            if let Err(error) = with_store(&context.store, move |store| {
                store.mark_failed(id, &reason, retry_at, ambiguous)
            })
            .await
            {
                tracing::error!(%error, id, "could not record a failed delivery");
            }
        }
    }
}

/// The outbox itself failed: retry later, keeping any in-flight mark of an earlier attempt.
fn store_failure(id: i64, error: &crate::store::StoreError) -> Failure {
    tracing::error!(%error, id, "outbox store error");
    Failure::Transient {
        reason: "store".to_string(),
        ambiguous: true,
    }
}

/// How a successful attempt was recorded.
enum Done {
    /// Mark the row delivered with this result.
    Delivered(Option<String>),
    /// Already recorded (with the incident's root, in one transaction).
    Recorded,
}

async fn attempt(context: &Context, sinks: &Sinks, row: &Row, key: &str) -> Result<Done, Failure> {
    let not_configured = || Failure::Permanent {
        reason: "sink_not_configured".to_string(),
    };
    let id = row.id;
    let store = &context.store;
    let mark_in_flight = || async {
        let now = wall_clock();
        with_store(store, move |store| store.mark_in_flight(id, now))
            .await
            .map_err(|error| store_failure(id, &error))
    };
    match row.sink.as_str() {
        "slack" => {
            let api = sinks.slack_api.as_ref().ok_or_else(not_configured)?;
            let payload: SlackPayload =
                serde_json::from_value(row.payload.clone()).map_err(|_| Failure::Permanent {
                    reason: "bad_payload".to_string(),
                })?;
            slack(context, api, row, &payload, key).await
        }
        "slack-webhook" => {
            let (url, timeout) = sinks.slack_webhook.as_ref().ok_or_else(not_configured)?;
            mark_in_flight().await?;
            sinks
                .http
                .slack_webhook(
                    url,
                    row.payload["text"].as_str().unwrap_or_default(),
                    &row.payload["blocks"],
                    *timeout,
                )
                .await?;
            Ok(Done::Delivered(None))
        }
        "alertmanager" => {
            let config = sinks.alertmanager.as_ref().ok_or_else(not_configured)?;
            let _one_at_a_time = context.alertmanager_lock.lock().await;
            let alert = with_ends_at(row.payload.clone(), config);
            mark_in_flight().await?;
            sinks
                .http
                .alertmanager(&config.url, &Value::Array(vec![alert]), config.timeout)
                .await?;
            Ok(Done::Delivered(None))
        }
        webhook => {
            let name = webhook.strip_prefix("webhook:").unwrap_or(webhook);
            let (_, url, timeout) = sinks
                .webhooks
                .iter()
                .find(|(known, _, _)| known == name)
                .ok_or_else(not_configured)?;
            mark_in_flight().await?;
            sinks.http.webhook(url, &row.payload, key, *timeout).await?;
            Ok(Done::Delivered(None))
        }
    }
}

/// A firing alert without `endsAt` is valid for four resend intervals from now (as Prometheus
/// does), so Alertmanager's own `resolve_timeout` never ends it while burnwatch is alive.
pub fn with_ends_at(mut alert: Value, config: &AlertmanagerConfig) -> Value {
    if alert.get("endsAt").is_none() {
        let valid = 4 * config.resend_interval.as_millis() as Millis;
        alert["endsAt"] = Value::String(format_time(wall_clock() + valid));
    }
    alert
}

async fn slack(
    context: &Context,
    api: &SlackApi,
    row: &Row,
    payload: &SlackPayload,
    key: &str,
) -> Result<Done, Failure> {
    let store = &context.store;
    let id = row.id;
    let incident = row.incident_id.unwrap_or_default();
    let (channel_id, root_ts) = with_store(store, move |store| store.incident_root(incident))
        .await
        .map_err(|error| store_failure(id, &error))?;
    match row.kind.as_str() {
        "update" => {
            let (Some(channel_id), Some(root_ts)) = (channel_id, root_ts) else {
                return Err(Failure::Permanent {
                    reason: "no_root_message".to_string(),
                });
            };
            api.update(&channel_id, &root_ts, &payload.text, &payload.blocks)
                .await?;
            Ok(Done::Delivered(Some(root_ts)))
        }
        kind => {
            // "post" opens the incident; "reply" goes under its root (or, when the root
            // could never be posted, stands alone).
            let thread_ts = if kind == "reply" {
                root_ts.clone()
            } else {
                None
            };
            if let Some(since) = row.in_flight_since {
                match look_up(
                    context,
                    api,
                    &payload.channel,
                    channel_id.as_deref(),
                    thread_ts.as_deref(),
                    key,
                    since,
                )
                .await
                {
                    Ok(Some((channel, ts))) => {
                        tracing::info!(
                            id,
                            "found the message of an earlier attempt; not posting again"
                        );
                        return record_post(context, row, kind, &channel, &ts).await;
                    }
                    Ok(None) => {}
                    Err(Failure::Permanent { reason }) => {
                        // The lookup itself cannot work (say, no channels:read scope): post
                        // again rather than lose the message.
                        tracing::warn!(
                            id,
                            reason,
                            "cannot tell whether an earlier attempt was posted; posting again"
                        );
                    }
                    // The earlier attempt is still unaccounted for: keep the row in flight so
                    // the next attempt looks again (a 429 here waits by backoff instead).
                    Err(failure) => {
                        return Err(Failure::Transient {
                            reason: failure.reason().to_string(),
                            ambiguous: true,
                        });
                    }
                }
                with_store(store, move |store| store.clear_in_flight(id))
                    .await
                    .map_err(|error| store_failure(id, &error))?;
            }
            let now = wall_clock();
            with_store(store, move |store| store.mark_in_flight(id, now))
                .await
                .map_err(|error| store_failure(id, &error))?;
            let target = channel_id.as_deref().unwrap_or(&payload.channel);
            let posted = api
                .post(&Outgoing {
                    channel: target,
                    text: &payload.text,
                    blocks: &payload.blocks,
                    thread_ts: thread_ts.as_deref(),
                    broadcast: payload.broadcast && thread_ts.is_some(),
                    key,
                })
                .await?;
            record_post(context, row, kind, &posted.channel_id, &posted.ts).await
        }
    }
}

/// Looks for the message an earlier attempt at this row may have posted: by the row's key in
/// the metadata of the channel's recent messages, or of the incident's thread.
async fn look_up(
    context: &Context,
    api: &SlackApi,
    target: &str,
    channel_id: Option<&str>,
    thread_ts: Option<&str>,
    key: &str,
    since: Millis,
) -> Result<Option<(String, String)>, Failure> {
    let channel = match channel_id {
        Some(known) => known.to_string(),
        None => {
            let name = target.to_string();
            let learned = with_store(&context.store, move |store| store.known_channel_id(&name))
                .await
                .ok()
                .flatten();
            match learned {
                Some(id) => id,
                None => api.channel_id(target).await?,
            }
        }
    };
    let since = since as f64 / 1000.0 - LOOKUP_MARGIN_SECS;
    Ok(api
        .find(&channel, thread_ts, key, since)
        .await?
        .map(|ts| (channel, ts)))
}

async fn record_post(
    context: &Context,
    row: &Row,
    kind: &str,
    channel_id: &str,
    ts: &str,
) -> Result<Done, Failure> {
    if kind != "post" {
        return Ok(Done::Delivered(Some(ts.to_string())));
    }
    let (id, incident, channel_id, ts) = (
        row.id,
        row.incident_id.unwrap_or_default(),
        channel_id.to_string(),
        ts.to_string(),
    );
    let now = wall_clock();
    match with_store(&context.store, move |store| {
        store.root_posted(id, incident, &channel_id, &ts, now)
    })
    .await
    {
        Ok(()) => Ok(Done::Recorded),
        Err(error) => {
            // Posted but not recorded: the row stays in flight and the next attempt finds
            // the message by its key.
            tracing::error!(%error, id, "posted, but could not record it");
            Err(Failure::Transient {
                reason: "store".to_string(),
                ambiguous: true,
            })
        }
    }
}

/// Re-sends Alertmanager the alerts that are firing, every `resend_interval`, so that they stay
/// active there while burnwatch runs (and end four intervals after it stops, as Prometheus's
/// alerts do).
pub async fn alertmanager_resender(context: Context, mut active: watch::Receiver<Vec<Value>>) {
    let mut last_sent: Option<Instant> = None;
    loop {
        let sinks = context.sinks.borrow().clone();
        let interval = sinks
            .alertmanager
            .as_ref()
            .map_or(Duration::from_secs(60), |config| config.resend_interval);
        let due = last_sent.is_none_or(|at| interval <= at.elapsed());
        if let Some(config) = &sinks.alertmanager
            && due
        {
            let _one_at_a_time = context.alertmanager_lock.lock().await;
            let alerts: Vec<Value> = active
                .borrow_and_update()
                .iter()
                .map(|alert| with_ends_at(alert.clone(), config))
                .collect();
            if !alerts.is_empty() {
                match sinks
                    .http
                    .alertmanager(&config.url, &Value::Array(alerts), config.timeout)
                    .await
                {
                    Ok(()) => last_sent = Some(Instant::now()),
                    Err(failure) => {
                        // Tried again after another interval, not at once.
                        last_sent = Some(Instant::now());
                        context
                            .metrics
                            .failures
                            .get_or_create(&vec![
                                ("sink".to_string(), "alertmanager".to_string()),
                                ("reason".to_string(), failure.reason().to_string()),
                            ])
                            .inc();
                        tracing::warn!(
                            reason = failure.reason(),
                            "could not re-send firing alerts to Alertmanager"
                        );
                    }
                }
            } else {
                last_sent = Some(Instant::now());
            }
        }
        tokio::select! {
            _ = context.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_five_minutes() {
        for attempts in 0..12 {
            let step = (1_000i64 << attempts).min(300_000);
            for _ in 0..50 {
                let wait = backoff(attempts);
                assert!(step / 2 <= wait && wait <= step, "{attempts}: {wait}");
            }
        }
        assert!(backoff(1_000) <= 300_000);
    }

    #[test]
    fn pacer_spaces_a_channel_and_holds_after_429() {
        let mut pacer = Pacer::default();
        assert_eq!(pacer.wait("#incidents"), None);
        pacer.sent("#incidents");
        assert!(pacer.wait("#incidents").is_some());
        assert_eq!(pacer.wait("#other"), None);
        pacer.hold("#other", Duration::from_secs(5));
        assert!(pacer.wait("#other").unwrap() > Duration::from_secs(4));
    }
}
