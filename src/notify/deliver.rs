//! Delivery workers: one task per [`SinkFamily`] (`slack`, `slack-webhook`, `webhook`,
//! `alertmanager`) drains the outbox in order, at most one request at a time.
//!
//! - Backoff: exponential from 1s, doubling to 5 minutes, with jitter (each wait is 50–100% of
//!   the step); a `429` waits exactly its `Retry-After` (and holds the channel that long).
//! - About one Slack message per second per channel (posts and replies; updates are free).
//! - Rows that cannot succeed (unknown channel, bad token, payload rejected) are marked
//!   `failed` with the reason; transient failures are retried for up to a day.
//! - A row found in flight (an earlier attempt whose outcome is unknown) is looked up first:
//!   Slack history/thread by metadata key; everything else is idempotent at the receiver.
//! - When the outbox itself fails (a full disk, a read-only or locked database), the worker
//!   stops its pass and waits: 100 ms doubling to 30 s, reset by the first store call that
//!   succeeds; one log line per wait, every failure counted by operation. An attempt whose
//!   outcome could not be recorded is kept in memory and recorded before its row is touched
//!   again: a sent notification is not sent again because its "delivered" mark failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::notify::AlertmanagerConfig;
use crate::notify::outbox::{Kind, Row, Sink, SinkFamily, SlackPayload};
use crate::notify::sinks::{Failure, Http, Outgoing, SlackApi};
use crate::replay::format_time;
use crate::slo::Millis;
use crate::source::prometheus::Secret;
use crate::store::{Store, StoreHandle};

/// Transient failures are retried this long after the notification was queued.
pub const GIVE_UP_AFTER: Millis = 86_400_000;
const BACKOFF_FIRST: Millis = 1_000;
const BACKOFF_MAX: Millis = 300_000;
/// The wait after the outbox store fails, doubling up to `STORE_BACKOFF_MAX`.
const STORE_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(30);
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

impl Sinks {
    /// How long a worker claims a row for: one attempt's longest request (the slowest
    /// receiver's timeout) and a margin for the store calls around it. A claim is renewed
    /// just before its request goes out.
    pub fn claim_for(&self) -> Millis {
        let timeouts = [
            self.slack_api.as_ref().map(SlackApi::timeout),
            self.slack_webhook.as_ref().map(|(_, timeout)| *timeout),
            self.alertmanager.as_ref().map(|config| config.timeout),
        ];
        let slowest = timeouts
            .into_iter()
            .flatten()
            .chain(self.webhooks.iter().map(|(_, _, timeout)| *timeout))
            .max()
            .unwrap_or_default();
        (slowest + CLAIM_MARGIN).as_millis() as Millis
    }
}

/// What a claim holds beyond the slowest receiver's timeout.
const CLAIM_MARGIN: Duration = Duration::from_secs(10);

/// Delivery metrics (clones of the registered families).
#[derive(Clone)]
pub struct DeliveryMetrics {
    pub depth: Family<Vec<(String, String)>, Gauge>,
    pub delivered: Family<Vec<(String, String)>, Counter>,
    pub failures: Family<Vec<(String, String)>, Counter>,
    pub delay: Histogram,
    /// Failed outbox store calls, by `operation` (one of [`StoreOp`]'s names).
    pub store_errors: Family<Vec<(String, String)>, Counter>,
    /// The wait each worker is in after store failures, by `sink` family (0 when healthy).
    pub store_backoff: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
}

/// What every worker shares.
#[derive(Clone)]
pub struct Context {
    pub store: StoreHandle,
    pub database_id: String,
    pub sinks: watch::Receiver<Arc<Sinks>>,
    pub metrics: DeliveryMetrics,
    /// Signalled after rows are queued.
    pub wake: Arc<Notify>,
    /// Held across each Alertmanager request, so a re-send read before a resolution was
    /// committed cannot land after that resolution.
    pub alertmanager_lock: Arc<tokio::sync::Mutex<()>>,
    /// Whether this replica leads now. Alertmanager's rows and re-sends go out from the
    /// leader only, under `alertmanager_lock`, so a re-send can never overtake a resolution
    /// another replica sent. Always true for one replica.
    pub leads: MaySend,
    pub shutdown: CancellationToken,
}

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

/// The outbox store calls of a worker: the `operation` label of `burnwatch_store_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Due,
    NextDue,
    Claim,
    Depth,
    MarkInFlight,
    ClearInFlight,
    MarkDelivered,
    MarkFailed,
    IncidentRoot,
    RootPosted,
    KnownChannelId,
}

impl StoreOp {
    pub const ALL: [StoreOp; 11] = [
        StoreOp::Due,
        StoreOp::NextDue,
        StoreOp::Claim,
        StoreOp::Depth,
        StoreOp::MarkInFlight,
        StoreOp::ClearInFlight,
        StoreOp::MarkDelivered,
        StoreOp::MarkFailed,
        StoreOp::IncidentRoot,
        StoreOp::RootPosted,
        StoreOp::KnownChannelId,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Due => "due",
            StoreOp::NextDue => "next_due",
            StoreOp::Claim => "claim",
            StoreOp::Depth => "depth",
            StoreOp::MarkInFlight => "mark_in_flight",
            StoreOp::ClearInFlight => "clear_in_flight",
            StoreOp::MarkDelivered => "mark_delivered",
            StoreOp::MarkFailed => "mark_failed",
            StoreOp::IncidentRoot => "incident_root",
            StoreOp::RootPosted => "root_posted",
            StoreOp::KnownChannelId => "known_channel_id",
        }
    }
}

/// A store call of a worker failed: the worker backs off before its next store call.
#[derive(Debug)]
struct StoreFailed {
    operation: StoreOp,
    error: crate::store::StoreError,
}

/// Runs a store operation for a worker: counts a failure under its operation.
async fn store_call<T: Send + 'static>(
    context: &Context,
    operation: StoreOp,
    work: impl FnOnce(&mut Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, StoreFailed> {
    context.store.call(work).await.map_err(|error| {
        context
            .metrics
            .store_errors
            .get_or_create(&vec![(
                "operation".to_string(),
                operation.name().to_string(),
            )])
            .inc();
        StoreFailed { operation, error }
    })
}

/// The wait of a worker whose store calls fail: 100 ms doubling to 30 s; reset once a store
/// call succeeds.
#[derive(Debug, Default)]
struct StoreBackoff {
    step: Option<Duration>,
}

impl StoreBackoff {
    /// The next wait after a failure.
    fn failed(&mut self) -> Duration {
        let step = self.step.map_or(STORE_BACKOFF_FIRST, |step| {
            (step * 2).min(STORE_BACKOFF_MAX)
        });
        self.step = Some(step);
        step
    }

    /// A store call succeeded; whether the worker was backing off.
    fn recovered(&mut self) -> bool {
        self.step.take().is_some()
    }
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
pub async fn worker(family: SinkFamily, context: Context) {
    let backoff_gauge = context
        .metrics
        .store_backoff
        .get_or_create(&vec![("sink".to_string(), family.as_str().to_string())])
        .clone();
    backoff_gauge.set(0.0);
    let mut worker = Worker {
        family,
        context,
        pacer: Pacer::default(),
        backoff: StoreBackoff::default(),
        unrecorded: BTreeMap::new(),
    };
    loop {
        if worker.context.shutdown.is_cancelled() {
            return;
        }
        match worker.pass().await {
            Ok(wait) => {
                if worker.backoff.recovered() {
                    backoff_gauge.set(0.0);
                    tracing::info!(%family, "the outbox store answers again; delivery resumes");
                }
                let Some(wait) = wait else { continue };
                tokio::select! {
                    _ = worker.context.shutdown.cancelled() => return,
                    _ = worker.context.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(StoreFailed { operation, error }) => {
                // One line per wait, however many rows are waiting; new rows do not cut the
                // wait short.
                let wait = worker.backoff.failed();
                backoff_gauge.set(wait.as_secs_f64());
                tracing::error!(
                    %error,
                    %family,
                    operation = operation.name(),
                    unrecorded = worker.unrecorded.len(),
                    "outbox store failed; delivery waits {}ms before trying again",
                    wait.as_millis()
                );
                tokio::select! {
                    _ = worker.context.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// One worker's state.
struct Worker {
    family: SinkFamily,
    context: Context,
    pacer: Pacer,
    backoff: StoreBackoff,
    /// Outcomes of attempts that could not be written to the outbox, by row id. Written
    /// before anything else; until then their rows are not attempted again.
    unrecorded: BTreeMap<i64, Record>,
}

impl Worker {
    /// One pass over the rows due: `Ok(None)` to pass again at once, `Ok(Some(wait))` to
    /// wait for that long (or a wake), `Err` when a store call failed (the pass stops there).
    async fn pass(&mut self) -> Result<Option<Duration>, StoreFailed> {
        while let Some((&id, record)) = self.unrecorded.first_key_value() {
            write_record(&self.context, id, record.clone()).await?;
            self.unrecorded.remove(&id);
        }
        let family = self.family;
        if family == SinkFamily::Alertmanager && !(self.context.leads)() {
            // Alertmanager hears from the leader only (see `Context::leads`).
            return Ok(Some(Duration::from_secs(1)));
        }
        let now = wall_clock();
        let rows = store_call(&self.context, StoreOp::Due, move |store| {
            store.due(family, now, 256)
        })
        .await?;
        let mut earliest_hold: Option<Duration> = None;
        let mut sent = 0;
        for row in rows {
            if self.context.shutdown.is_cancelled() {
                return Ok(None);
            }
            let channel = pacing_key(&row);
            if let Some(channel) = &channel
                && let Some(wait) = self.pacer.wait(channel)
            {
                earliest_hold = Some(earliest_hold.map_or(wait, |known| known.min(wait)));
                continue;
            }
            let sinks = self.context.sinks.borrow().clone();
            // Another replica may be attempting it, or have attempted it since it was read:
            // the row as claimed is the one attempted.
            let (id, hold) = (row.id, sinks.claim_for());
            let claimed = store_call(&self.context, StoreOp::Claim, move |store| {
                store.claim(id, wall_clock(), hold)
            })
            .await?;
            let Some(row) = claimed else { continue };
            self.deliver(&sinks, &row, channel.as_deref()).await?;
            sent += 1;
        }
        update_depth(&self.context).await?;
        if sent > 0 {
            return Ok(None);
        }
        // Rows due now were all held by the pacer (or there were none): wait for the first
        // hold to end or the next row to fall due, whichever is first.
        let now = wall_clock();
        let next_due = store_call(&self.context, StoreOp::NextDue, move |store| {
            store.next_due(family, now)
        })
        .await?
        .map(|at| Duration::from_millis((at - wall_clock()).max(0) as u64));
        let wait = [earliest_hold, next_due]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(30))
            .clamp(Duration::from_millis(20), Duration::from_secs(30));
        Ok(Some(wait))
    }

    /// One attempt at one row, and its bookkeeping. An outcome that cannot be recorded is
    /// kept in `unrecorded`.
    async fn deliver(
        &mut self,
        sinks: &Sinks,
        row: &Row,
        channel: Option<&str>,
    ) -> Result<(), StoreFailed> {
        let context = &self.context;
        let key = row.key(&context.database_id);
        let outcome = match attempt(context, sinks, row, &key).await {
            // Nothing was sent: the row is as it was.
            Err(AttemptError::Store(failed)) => return Err(failed),
            // Nothing was sent: the row is another replica's now.
            Err(AttemptError::ClaimLost) => {
                tracing::info!(id = row.id, "the claim on this row ran out; not sending");
                return Ok(());
            }
            Err(AttemptError::NotLeader) => {
                let id = row.id;
                store_call(context, StoreOp::Claim, move |store| {
                    store.release_claim(id)
                })
                .await?;
                return Ok(());
            }
            Err(AttemptError::Sink(failure)) => Err(failure),
            Ok(done) => Ok(done),
        };
        // Every attempt counts against the channel's pace, whatever its outcome: a request
        // that failed (a dropped connection, a 5xx) may still have posted, and the rows behind
        // it must not rush out.
        if let Some(channel) = channel {
            self.pacer.sent(channel);
        }
        let now = wall_clock();
        let sink = sink_label(row);
        let id = row.id;
        let record = match outcome {
            Ok(done) => {
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
                match done {
                    Done::Delivered(result) => Record::Delivered { at: now, result },
                    Done::Root { channel_id, ts } => Record::Root {
                        at: now,
                        incident: row.incident_id.unwrap_or_default(),
                        channel_id,
                        ts,
                    },
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
                            self.pacer.hold(channel, *wait);
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
                Record::Failed {
                    reason,
                    retry_at,
                    ambiguous,
                }
            }
        };
        if let Err(failed) = write_record(context, id, record.clone()).await {
            // Kept until the store answers: a delivered row is then marked delivered, not
            // sent again (its in-flight mark covers a restart meanwhile).
            self.unrecorded.insert(id, record);
            return Err(failed);
        }
        Ok(())
    }
}

fn pacing_key(row: &Row) -> Option<String> {
    match (&row.sink, row.kind) {
        (Sink::Slack, Kind::Post | Kind::Reply) => {
            row.payload["channel"].as_str().map(str::to_string)
        }
        (Sink::SlackWebhook, _) => Some(Sink::SlackWebhook.to_string()),
        _ => None,
    }
}

async fn update_depth(context: &Context) -> Result<(), StoreFailed> {
    let depth = store_call(context, StoreOp::Depth, |store| store.depth()).await?;
    for family in SinkFamily::ALL {
        let pending: i64 = depth
            .iter()
            .filter(|(sink, _)| sink.family() == family)
            .map(|(_, count)| count)
            .sum();
        context
            .metrics
            .depth
            .get_or_create(&vec![("sink".to_string(), family.as_str().to_string())])
            .set(pending);
    }
    Ok(())
}

fn sink_label(row: &Row) -> String {
    row.sink.to_string()
}

/// The outcome of an attempt, as the outbox records it.
#[derive(Debug, Clone)]
enum Record {
    Delivered {
        at: Millis,
        result: Option<String>,
    },
    /// An incident's root message: recorded with the incident, in one transaction.
    Root {
        at: Millis,
        incident: i64,
        channel_id: String,
        ts: String,
    },
    Failed {
        reason: String,
        retry_at: Option<Millis>,
        ambiguous: bool,
    },
}

async fn write_record(context: &Context, id: i64, record: Record) -> Result<(), StoreFailed> {
    let written = match record {
        Record::Delivered { at, result } => {
            store_call(context, StoreOp::MarkDelivered, move |store| {
                store.mark_delivered(id, at, result.as_deref())
            })
            .await
        }
        Record::Root {
            at,
            incident,
            channel_id,
            ts,
        } => {
            store_call(context, StoreOp::RootPosted, move |store| {
                store.root_posted(id, incident, &channel_id, &ts, at)
            })
            .await
        }
        Record::Failed {
            reason,
            retry_at,
            ambiguous,
        } => {
            store_call(context, StoreOp::MarkFailed, move |store| {
                store.mark_failed(id, &reason, retry_at, ambiguous)
            })
            .await
        }
    }?;
    if !written {
        // This worker's claim ran out and another replica's took the row: the outcome is
        // that replica's to record (an earlier post is found by its key).
        tracing::warn!(
            id,
            "the claim on this row was taken over by another replica; its outcome is left to it"
        );
    }
    Ok(())
}

/// Why an attempt did not deliver.
#[derive(Debug)]
enum AttemptError {
    /// The receiver failed (or nothing could be sent to it).
    Sink(Failure),
    /// The outbox failed before anything was sent: the row is unchanged.
    Store(StoreFailed),
    /// This worker's claim on the row ran out and another replica took it: nothing was sent.
    ClaimLost,
    /// An Alertmanager row on a replica that does not lead: nothing was sent; the claim goes.
    NotLeader,
}

impl From<Failure> for AttemptError {
    fn from(failure: Failure) -> AttemptError {
        AttemptError::Sink(failure)
    }
}

impl From<StoreFailed> for AttemptError {
    fn from(failed: StoreFailed) -> AttemptError {
        AttemptError::Store(failed)
    }
}

/// A successful attempt.
enum Done {
    /// Mark the row delivered with this result.
    Delivered(Option<String>),
    /// The incident's root message: record it with the incident.
    Root { channel_id: String, ts: String },
}

async fn attempt(
    context: &Context,
    sinks: &Sinks,
    row: &Row,
    key: &str,
) -> Result<Done, AttemptError> {
    let not_configured = || Failure::Permanent {
        reason: "sink_not_configured".to_string(),
    };
    let id = row.id;
    let mark_in_flight = || mark_in_flight(context, sinks, id);
    match &row.sink {
        Sink::Slack => {
            let api = sinks.slack_api.as_ref().ok_or_else(not_configured)?;
            let payload: SlackPayload =
                serde_json::from_value(row.payload.clone()).map_err(|_| Failure::Permanent {
                    reason: "bad_payload".to_string(),
                })?;
            slack(context, sinks, api, row, &payload, key).await
        }
        Sink::SlackWebhook => {
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
        Sink::Alertmanager => {
            let config = sinks.alertmanager.as_ref().ok_or_else(not_configured)?;
            let _one_at_a_time = context.alertmanager_lock.lock().await;
            // Only the leader sends to Alertmanager (see `Context::leads`); the row waits
            // for the next one.
            if !(context.leads)() {
                return Err(AttemptError::NotLeader);
            }
            let alert = with_ends_at(row.payload.clone(), config);
            mark_in_flight().await?;
            sinks
                .http
                .alertmanager(&config.url, &Value::Array(vec![alert]), config.timeout)
                .await?;
            Ok(Done::Delivered(None))
        }
        Sink::Webhook(name) => {
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

/// Marks row `id` in flight just before its request goes out, renewing this worker's claim
/// for one more attempt; a claim another replica has taken since stops the request.
async fn mark_in_flight(context: &Context, sinks: &Sinks, id: i64) -> Result<(), AttemptError> {
    let now = wall_clock();
    let hold = sinks.claim_for();
    let marked = store_call(context, StoreOp::MarkInFlight, move |store| {
        store.mark_in_flight(id, now, hold)
    })
    .await?;
    if marked {
        Ok(())
    } else {
        Err(AttemptError::ClaimLost)
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
    sinks: &Sinks,
    api: &SlackApi,
    row: &Row,
    payload: &SlackPayload,
    key: &str,
) -> Result<Done, AttemptError> {
    let id = row.id;
    let incident = row.incident_id.unwrap_or_default();
    let (channel_id, root_ts) = store_call(context, StoreOp::IncidentRoot, move |store| {
        store.incident_root(incident)
    })
    .await?;
    match row.kind {
        Kind::Update => {
            let (Some(channel_id), Some(root_ts)) = (channel_id, root_ts) else {
                return Err(Failure::Permanent {
                    reason: "no_root_message".to_string(),
                }
                .into());
            };
            // An update that went out late (its worker paused past its claim) would undo the
            // updates after it: the claim is checked (and renewed) just before.
            mark_in_flight(context, sinks, id).await?;
            api.update(&channel_id, &root_ts, &payload.text, &payload.blocks)
                .await?;
            Ok(Done::Delivered(Some(root_ts)))
        }
        kind => {
            // "post" opens the incident; "reply" goes under its root (or, when the root
            // could never be posted, stands alone).
            let thread_ts = if kind == Kind::Reply {
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
                        return Ok(posted(kind, channel, ts));
                    }
                    Ok(None) => {}
                    Err(AttemptError::Sink(Failure::Permanent { reason })) => {
                        // The lookup itself cannot work (say, no channels:read scope): post
                        // again rather than lose the message.
                        tracing::warn!(
                            id,
                            reason,
                            "cannot tell whether an earlier attempt was posted; posting again"
                        );
                    }
                    Err(AttemptError::Store(failed)) => return Err(failed.into()),
                    Err(error @ (AttemptError::ClaimLost | AttemptError::NotLeader)) => {
                        return Err(error);
                    }
                    // The earlier attempt is still unaccounted for: keep the row in flight so
                    // the next attempt looks again (a 429 here waits by backoff instead).
                    Err(AttemptError::Sink(failure)) => {
                        return Err(Failure::Transient {
                            reason: failure.reason().to_string(),
                            ambiguous: true,
                        }
                        .into());
                    }
                }
                if !store_call(context, StoreOp::ClearInFlight, move |store| {
                    store.clear_in_flight(id)
                })
                .await?
                {
                    return Err(AttemptError::ClaimLost);
                }
            }
            mark_in_flight(context, sinks, id).await?;
            let target = channel_id.as_deref().unwrap_or(&payload.channel);
            let sent = api
                .post(&Outgoing {
                    channel: target,
                    text: &payload.text,
                    blocks: &payload.blocks,
                    thread_ts: thread_ts.as_deref(),
                    broadcast: payload.broadcast && thread_ts.is_some(),
                    key,
                })
                .await?;
            Ok(posted(kind, sent.channel_id, sent.ts))
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
) -> Result<Option<(String, String)>, AttemptError> {
    let channel = match channel_id {
        Some(known) => known.to_string(),
        None => {
            let name = target.to_string();
            let learned = store_call(context, StoreOp::KnownChannelId, move |store| {
                store.known_channel_id(&name)
            })
            .await?;
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

/// A posted message: an incident's root (`post`) is recorded with its incident.
fn posted(kind: Kind, channel_id: String, ts: String) -> Done {
    if kind == Kind::Post {
        Done::Root { channel_id, ts }
    } else {
        Done::Delivered(Some(ts))
    }
}

/// Re-sends Alertmanager the alerts that are firing, every `resend_interval`, so that they stay
/// active there while burnwatch runs (and end four intervals after it stops, as Prometheus's
/// alerts do).
/// Whether this replica may re-send now (replicas sharing PostgreSQL: only while it leads, by
/// its own clock, so a leader paused past its lease does not wake to re-fire what its
/// successor resolved).
pub type MaySend = Arc<dyn Fn() -> bool + Send + Sync>;

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
            && (context.leads)()
        {
            let _one_at_a_time = context.alertmanager_lock.lock().await;
            // Leadership may have gone while the lock was awaited.
            if !(context.leads)() {
                continue;
            }
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
                                ("sink".to_string(), Sink::Alertmanager.to_string()),
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
    fn store_backoff_doubles_from_100ms_to_30s_and_resets() {
        let mut backoff = StoreBackoff::default();
        let waits: Vec<u128> = (0..12).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(
            waits,
            [
                100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000, 30_000
            ]
        );
        assert!(backoff.recovered());
        assert!(!backoff.recovered());
        assert_eq!(backoff.failed(), Duration::from_millis(100));
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
