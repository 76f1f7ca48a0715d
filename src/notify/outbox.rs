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
//! - **One attempt at a time.** A worker claims a row (`claimed_by`, `claimed_until`) before
//!   attempting it and records its outcome only while the claim is still its own; replicas
//!   sharing a PostgreSQL outbox take rows `FOR UPDATE SKIP LOCKED`, so two never attempt the
//!   same row, and a dead replica's claim runs out for the others to take over.
//! - **In order.** Rows with the same `order_key` (one Slack incident thread, one SLO instance
//!   at a webhook) go out one at a time in creation order.
//!
//! Slack incidents: one row per (channel, SLO instance) while any of its tiers fires. The first
//! firing tier posts the root message; later changes update the root in place and reply in
//! its thread (escalation from ticket to page is broadcast to the channel); when the last tier
//! resolves the root turns RESOLVED and the incident closes.
//!
//! This module is the pure side: the schema, the row and sink types, and the planner, which
//! turns events (with the routes, silences and open incidents it is given as plain values)
//! into the incident changes and rows to write. `apply.rs` reads the open incidents from the
//! cycle's transaction and writes the plan in that same transaction.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value, json};

use crate::alert::Change;
use crate::config::notify::{NotifyConfig, Silence};
use crate::engine::{Ending, Event};
use crate::notify::matcher;
use crate::notify::render::{self, Message};
use crate::replay::format_time;
use crate::slo::{Millis, Slo, TierKind};

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

/// Delivery claims (the SQLite migration; PostgreSQL's is `ha`'s list): a worker claims a row
/// before it attempts it, so replicas sharing the outbox never attempt one row at once. A
/// claim lasts until `claimed_until` (milliseconds since the epoch), long enough for one
/// attempt, and is renewed just before the request goes out; a replica that died holding one
/// leaves the row to the others when it runs out.
pub const CLAIMS: &str = "
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;
";

/// How long delivered rows are kept (for inspection) before they are pruned.
pub const KEEP_DELIVERED: Millis = 7 * 86_400_000;

/// The sink families, each drained by its own delivery worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkFamily {
    Slack,
    SlackWebhook,
    Webhook,
    Alertmanager,
}

impl SinkFamily {
    pub const ALL: [SinkFamily; 4] = [
        SinkFamily::Slack,
        SinkFamily::SlackWebhook,
        SinkFamily::Webhook,
        SinkFamily::Alertmanager,
    ];

    /// The family's name: the `sink` column's value (or, for webhooks, its prefix) and the
    /// `sink` label of the delivery metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkFamily::Slack => "slack",
            SinkFamily::SlackWebhook => "slack-webhook",
            SinkFamily::Webhook => "webhook",
            SinkFamily::Alertmanager => "alertmanager",
        }
    }
}

impl fmt::Display for SinkFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a row goes: the `sink` column (`slack`, `slack-webhook`, `webhook:<name>`,
/// `alertmanager`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sink {
    /// The Slack Web API (incident threads).
    Slack,
    /// A Slack incoming webhook.
    SlackWebhook,
    /// A generic webhook, by its configured name.
    Webhook(String),
    Alertmanager,
}

impl Sink {
    pub fn family(&self) -> SinkFamily {
        match self {
            Sink::Slack => SinkFamily::Slack,
            Sink::SlackWebhook => SinkFamily::SlackWebhook,
            Sink::Webhook(_) => SinkFamily::Webhook,
            Sink::Alertmanager => SinkFamily::Alertmanager,
        }
    }

    /// The value stored in the `sink` column.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Sink::Webhook(name) => format!("webhook:{name}").into(),
            other => other.family().as_str().into(),
        }
    }

    /// Reads a `sink` column value.
    pub fn parse(text: &str) -> Option<Sink> {
        match text {
            "slack" => Some(Sink::Slack),
            "slack-webhook" => Some(Sink::SlackWebhook),
            "alertmanager" => Some(Sink::Alertmanager),
            other => other
                .strip_prefix("webhook:")
                .map(|name| Sink::Webhook(name.to_string())),
        }
    }
}

impl fmt::Display for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// What a row does at its receiver: the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A Slack incident's root message.
    Post,
    /// A reply in a Slack incident's thread.
    Reply,
    /// The root message of a Slack incident, updated in place.
    Update,
    /// One message to a receiver without threads (incoming webhook, webhooks, Alertmanager).
    Send,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Post => "post",
            Kind::Reply => "reply",
            Kind::Update => "update",
            Kind::Send => "send",
        }
    }

    /// Reads a `kind` column value.
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "post" => Some(Kind::Post),
            "reply" => Some(Kind::Reply),
            "update" => Some(Kind::Update),
            "send" => Some(Kind::Send),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row ready to be delivered.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub sink: Sink,
    pub kind: Kind,
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

/// An incident as the planner refers to it: one in the store, or one this plan opens (the
/// n-th [`IncidentChange::Open`] of the plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentRef {
    Stored(i64),
    New(usize),
}

/// An open Slack incident, as the planner is given it (and keeps it while planning).
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: IncidentRef,
    /// The routed channel, as configured when it opened.
    pub target: String,
    pub slo_id: String,
    /// The instance's labels as stored (a JSON array of [name, value]).
    pub labels: String,
    /// Firing tier -> its current root message.
    pub tiers: Map<String, Value>,
}

/// A change to the `incidents` table, in plan order.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentChange {
    /// Opens a new incident ([`IncidentRef::New`] of its position among the opens).
    Open {
        target: String,
        slo_id: String,
        labels: String,
        tiers: Map<String, Value>,
    },
    /// The firing tiers of an open incident changed.
    Tiers {
        incident: IncidentRef,
        tiers: Map<String, Value>,
    },
    /// The incident closes.
    Close { incident: IncidentRef },
}

/// The order a planned row keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// The thread of a Slack incident (order key `slack|<incident id>`).
    Incident(IncidentRef),
    /// Any other order key (one SLO instance at a webhook, one alert at Alertmanager).
    Key(String),
}

/// A row to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRow {
    pub sink: Sink,
    pub kind: Kind,
    pub order: Order,
    /// What caused it: the row's natural key is `slack|<incident id>|<cause>` for incident
    /// rows and `<sink>|<cause>` for the others, so planning the same change twice queues it
    /// once.
    pub cause: String,
    pub payload: Value,
}

impl PlannedRow {
    /// The natural key once the incident's id is known.
    pub fn natural_key(&self, incident: Option<i64>) -> String {
        match incident {
            Some(id) => format!("slack|{id}|{}", self.cause),
            None => format!("{}|{}", self.sink, self.cause),
        }
    }

    /// The order key once the incident's id is known.
    pub fn order_key(&self, incident: Option<i64>) -> String {
        match (&self.order, incident) {
            (Order::Key(key), _) => key.clone(),
            (Order::Incident(_), id) => format!("slack|{}", id.unwrap_or_default()),
        }
    }
}

/// What to write: incident changes (in order), then rows (in order), and how many
/// notifications silences held.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub incidents: Vec<IncidentChange>,
    pub rows: Vec<PlannedRow>,
    pub silenced: usize,
}

/// A change of the "evaluation stale" meta alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaStatus {
    /// It fires (naming the stale SLOs).
    Firing,
    /// It still fires, but the set of stale SLOs changed: the message is updated in place.
    Changed,
    Resolved,
}

impl MetaStatus {
    pub fn is_firing(self) -> bool {
        self != MetaStatus::Resolved
    }
}

pub(crate) fn labels_json(labels: &[(String, String)]) -> String {
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

/// The order key of the meta alert at `sink` (Alertmanager: the alert's key there).
pub fn meta_order_key(sink: &Sink) -> String {
    format!("{sink}|burnwatch|meta")
}

/// The `slo_id` of the meta alert's incidents.
pub const META_SLO_ID: &str = "burnwatch";

/// The first route whose matchers match decides the Slack channel.
pub fn route<'a>(notify: &'a NotifyConfig, labels: &[(String, String)]) -> Option<&'a str> {
    notify
        .routes
        .iter()
        .find(|route| matcher::all_match(&route.matchers, labels))
        .and_then(|route| route.slack_channel.as_deref())
}

/// Whether a silence (of the config or `api`) holds `labels` at `now`.
pub fn silenced(
    notify: &NotifyConfig,
    api: &[Silence],
    labels: &[(String, String)],
    now: Millis,
) -> bool {
    notify
        .silences
        .iter()
        .chain(api)
        .any(|silence| silence.active(now) && matcher::all_match(&silence.matchers, labels))
}

fn severity_rank(tier: &str) -> u8 {
    match tier {
        "page" => 2,
        _ => 1,
    }
}

fn to_value<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The incidents open while planning, and what the plan does so far.
struct Book {
    now: Millis,
    /// By (SLO, instance labels).
    open: HashMap<(String, String), Vec<Incident>>,
    opened: usize,
    outcome: Outcome,
}

/// Oldest first: stored incidents by id, then those this plan opens.
fn age(id: IncidentRef) -> (u8, i64) {
    match id {
        IncidentRef::Stored(id) => (0, id),
        IncidentRef::New(index) => (1, index as i64),
    }
}

impl Book {
    fn new(open: Vec<Incident>, now: Millis) -> Book {
        let mut by_instance: HashMap<(String, String), Vec<Incident>> = HashMap::new();
        for incident in open {
            by_instance
                .entry((incident.slo_id.clone(), incident.labels.clone()))
                .or_default()
                .push(incident);
        }
        for incidents in by_instance.values_mut() {
            incidents.sort_by_key(|incident| age(incident.id));
        }
        Book {
            now,
            open: by_instance,
            opened: 0,
            outcome: Outcome::default(),
        }
    }

    /// The open incidents of `slo_id` (of one instance, when `labels` is given), oldest first.
    fn open_of(&self, slo_id: &str, labels: Option<&str>) -> Vec<Incident> {
        let mut open: Vec<Incident> = match labels {
            Some(labels) => self
                .open
                .get(&(slo_id.to_string(), labels.to_string()))
                .cloned()
                .unwrap_or_default(),
            None => self
                .open
                .iter()
                .filter(|((slo, _), _)| slo == slo_id)
                .flat_map(|(_, incidents)| incidents.iter().cloned())
                .collect(),
        };
        open.sort_by_key(|incident| age(incident.id));
        open
    }

    fn open_incident(
        &mut self,
        target: &str,
        slo_id: &str,
        labels: &str,
        tiers: Map<String, Value>,
    ) -> IncidentRef {
        let id = IncidentRef::New(self.opened);
        self.opened += 1;
        self.outcome.incidents.push(IncidentChange::Open {
            target: target.to_string(),
            slo_id: slo_id.to_string(),
            labels: labels.to_string(),
            tiers: tiers.clone(),
        });
        self.open
            .entry((slo_id.to_string(), labels.to_string()))
            .or_default()
            .push(Incident {
                id,
                target: target.to_string(),
                slo_id: slo_id.to_string(),
                labels: labels.to_string(),
                tiers,
            });
        id
    }

    fn held(&mut self, incident: &Incident) -> Option<&mut Vec<Incident>> {
        self.open
            .get_mut(&(incident.slo_id.clone(), incident.labels.clone()))
    }

    fn set_tiers(&mut self, incident: &Incident, tiers: Map<String, Value>) {
        if let Some(held) = self.held(incident)
            && let Some(held) = held.iter_mut().find(|held| held.id == incident.id)
        {
            held.tiers = tiers.clone();
        }
        self.outcome.incidents.push(IncidentChange::Tiers {
            incident: incident.id,
            tiers,
        });
    }

    fn close(&mut self, incident: &Incident) {
        if let Some(held) = self.held(incident) {
            held.retain(|held| held.id != incident.id);
        }
        self.outcome.incidents.push(IncidentChange::Close {
            incident: incident.id,
        });
    }

    fn thread_row(&mut self, id: IncidentRef, kind: Kind, payload: Value, cause: String) {
        self.outcome.rows.push(PlannedRow {
            sink: Sink::Slack,
            kind,
            order: Order::Incident(id),
            cause,
            payload,
        });
    }

    fn row(&mut self, sink: Sink, order_key: String, payload: Value, cause: &str) {
        self.outcome.rows.push(PlannedRow {
            sink,
            kind: Kind::Send,
            order: Order::Key(order_key),
            cause: cause.to_string(),
            payload,
        });
    }

    /// Closes a Slack incident: its root turns to `payload` and the same goes in its thread.
    /// `cause` tells this closing from any other in the rows' natural keys.
    fn close_incident(&mut self, incident: &Incident, payload: &SlackPayload, cause: &str) {
        self.close(incident);
        let payload = to_value(payload);
        for (index, kind) in [Kind::Update, Kind::Reply].into_iter().enumerate() {
            self.thread_row(
                incident.id,
                kind,
                payload.clone(),
                format!("{cause}|{index}"),
            );
        }
    }
}

/// The pure planner: given the open incidents it may touch, turns events into the incident
/// changes and rows to write. No I/O, no clock: `now` is the outbox's time.
pub struct Planner<'a> {
    plan: &'a Plan<'a>,
    book: Book,
}

impl<'a> Planner<'a> {
    /// `open`: the open Slack incidents of the SLOs the events name (and of the meta alert,
    /// `META_SLO_ID`, when it changes).
    pub fn new(plan: &'a Plan<'a>, open: Vec<Incident>, now: Millis) -> Planner<'a> {
        Planner {
            plan,
            book: Book::new(open, now),
        }
    }

    /// What to write.
    pub fn finish(self) -> Outcome {
        self.book.outcome
    }

    fn silenced(&self, labels: &[(String, String)]) -> bool {
        silenced(self.plan.notify, self.plan.silences, labels, self.book.now)
    }

    /// Plans the notifications of `events` (each with its SLO). Pending and
    /// insufficient-data changes are not notifications.
    pub fn events(&mut self, events: &[(&Slo, &Event)]) {
        for (slo, event) in events {
            self.event(slo, event);
        }
    }

    fn event(&mut self, slo: &Slo, event: &Event) {
        if !matches!(
            event.change,
            Change::Firing | Change::Reminder | Change::Resolved
        ) {
            return;
        }
        let labels = render::alert_labels(slo, event.tier, &event.labels);
        // A silence holds new and continuing burns; a resolution always goes out, so nothing
        // that was told about the burn is left believing it still burns.
        if event.change != Change::Resolved && self.silenced(&labels) {
            self.book.outcome.silenced += 1;
            return;
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
        let channel = route(self.plan.notify, &labels);
        match (self.plan.slack, channel) {
            (Some(SlackKind::WebApi), _) => {
                self.slack_thread(slo, event, channel, &instance, &cause);
            }
            (Some(SlackKind::Webhook), Some(_)) => {
                let order_key = format!("slack-webhook|{}|{instance}", slo.id);
                let payload = SlackPayload::new("", &message, false);
                self.book
                    .row(Sink::SlackWebhook, order_key, to_value(payload), &cause);
            }
            _ => {}
        }
        for webhook in &self.plan.notify.webhooks {
            let sink = Sink::Webhook(webhook.name.clone());
            let order_key = format!("{sink}|{}|{instance}", slo.id);
            let document = webhook_document(slo, event, &labels, &message);
            self.book.row(sink, order_key, document, &cause);
        }
        if self.plan.notify.alertmanager.is_some() && event.change != Change::Reminder {
            let order_key = alertmanager_order_key(&slo.id, &event.labels, event.tier);
            let alert =
                alertmanager_alert(slo, event, &labels, &message, self.plan.external_url, None);
            self.book.row(Sink::Alertmanager, order_key, alert, &cause);
        }
    }

    /// One Slack incident thread: open, escalate, remind, resolve.
    ///
    /// A burn (firing, reminder) goes to the incident in the channel it routes to now; a
    /// resolution goes to every open incident of the instance where that tier fires, wherever
    /// it was routed (routes may have changed since).
    fn slack_thread(
        &mut self,
        slo: &Slo,
        event: &Event,
        channel: Option<&str>,
        instance: &str,
        cause: &str,
    ) {
        let open = self.book.open_of(&slo.id, Some(instance));
        let tier = event.tier.as_str();
        if event.change == Change::Resolved {
            for incident in open {
                if incident.tiers.contains_key(tier) {
                    let target = incident.target.clone();
                    self.advance_thread(slo, event, &target, Some(incident), cause);
                }
            }
            return;
        }
        let Some(channel) = channel else {
            return;
        };
        let (here, elsewhere): (Vec<_>, Vec<_>) = open
            .into_iter()
            .partition(|incident| incident.target == channel);
        self.advance_thread(slo, event, channel, here.into_iter().next(), cause);
        // A page while the ticket's thread is open in another channel: the page goes where
        // pages go, and the ticket's thread says where the incident went.
        if event.change == Change::Firing && event.tier == TierKind::Page {
            for incident in elsewhere {
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
                self.book.thread_row(
                    incident.id,
                    Kind::Reply,
                    to_value(SlackPayload::new(&incident.target, &note, false)),
                    format!("{cause}|escalated"),
                );
            }
        }
    }

    /// One change in one incident thread (`open`: the incident), or a new incident.
    fn advance_thread(
        &mut self,
        slo: &Slo,
        event: &Event,
        channel: &str,
        open: Option<Incident>,
        cause: &str,
    ) {
        let tier = event.tier.as_str();
        // Reminders refresh the root with current figures under the firing headline.
        let mut as_firing = event.clone();
        if as_firing.change == Change::Reminder {
            as_firing.change = Change::Firing;
        }
        let root_now = SlackPayload::new(channel, &render::render(slo, &as_firing), false);
        let message = render::render(slo, event);
        let mut rows: Vec<(Kind, SlackPayload)> = Vec::new();
        let id = match (open, event.change) {
            (None, Change::Resolved) => return,
            (None, _) => {
                // A new incident (or one whose firing was silenced until now).
                let mut tiers = Map::new();
                tiers.insert(tier.to_string(), to_value(&root_now));
                let instance = labels_json(&event.labels);
                rows.push((Kind::Post, root_now));
                self.book.open_incident(channel, &slo.id, &instance, tiers)
            }
            (Some(incident), change) => {
                let mut tiers = incident.tiers.clone();
                let top_before = tiers.keys().map(|t| severity_rank(t)).max().unwrap_or(0);
                match change {
                    Change::Resolved => {
                        tiers.remove(tier);
                    }
                    _ => {
                        tiers.insert(tier.to_string(), to_value(&root_now));
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
                        // The last firing tier resolved: the root says RESOLVED, the thread
                        // says how it ended, the incident closes.
                        rows.push((Kind::Update, SlackPayload::new(channel, &message, false)));
                        rows.push((Kind::Reply, SlackPayload::new(channel, &message, false)));
                        self.book.close(&incident);
                    }
                    Some((top_tier, root)) => {
                        if (top_tier == tier || change == Change::Resolved)
                            && let Ok(root) = serde_json::from_value::<SlackPayload>(root)
                        {
                            rows.push((Kind::Update, root));
                        }
                        rows.push((
                            Kind::Reply,
                            SlackPayload::new(channel, &message, escalation),
                        ));
                        self.book.set_tiers(&incident, tiers);
                    }
                }
                incident.id
            }
        };
        for (index, (kind, payload)) in rows.into_iter().enumerate() {
            self.book
                .thread_row(id, kind, to_value(payload), format!("{cause}|{index}"));
        }
    }

    /// Plans a change of the "evaluation stale" meta alert at evaluation time `at`: a Slack
    /// thread in the routed channel (as an SLO incident has; updated and resolved wherever it
    /// was opened), Alertmanager, webhooks.
    pub fn meta(&mut self, status: MetaStatus, since: Millis, at: Millis, stale: &[StaleSlo]) {
        let labels = meta_labels();
        let firing = status.is_firing();
        // As for SLO alerts: a silence holds the firing and its changes, never the resolution.
        if firing && self.silenced(&labels) {
            self.book.outcome.silenced += 1;
            return;
        }
        let (message, alert) = meta_alert(firing, since, at, self.plan.external_url, stale);
        let web_api = self.plan.slack == Some(SlackKind::WebApi);
        if status == MetaStatus::Changed {
            // The stale SLOs changed while it fires: every open stale thread's root names the
            // current ones. Only the Web API can edit a message; the other sinks heard of the
            // firing and will hear of the resolution (Alertmanager's re-sends carry the
            // current list).
            if web_api {
                for incident in self.book.open_of(META_SLO_ID, None) {
                    let payload = to_value(SlackPayload::new(&incident.target, &message, false));
                    self.book.thread_row(
                        incident.id,
                        Kind::Update,
                        payload,
                        format!("burnwatch|meta|changed|{since}|{at}|0"),
                    );
                }
            }
            return;
        }
        if !firing && web_api {
            // Resolve every open stale thread, wherever routes sent it.
            for incident in self.book.open_of(META_SLO_ID, None) {
                self.book.close_incident(
                    &incident,
                    &SlackPayload::new(&incident.target, &message, false),
                    &format!("burnwatch|meta|resolved|{since}"),
                );
            }
        }
        let change = if firing { "firing" } else { "resolved" };
        let cause = format!("burnwatch|meta|{change}|{since}");
        if let Some(channel) = route(self.plan.notify, &labels) {
            match self.plan.slack {
                Some(SlackKind::WebApi) if firing => {
                    let payload = to_value(SlackPayload::new(channel, &message, false));
                    let open = self
                        .book
                        .open_of(META_SLO_ID, None)
                        .into_iter()
                        .find(|incident| incident.target == channel && incident.labels == "[]");
                    let (incident, kinds): (IncidentRef, &[Kind]) = match open {
                        None => (
                            self.book
                                .open_incident(channel, META_SLO_ID, "[]", Map::new()),
                            &[Kind::Post],
                        ),
                        // Stale again while an earlier episode's thread is still open: the
                        // same thread says so.
                        Some(incident) => (incident.id, &[Kind::Update, Kind::Reply]),
                    };
                    for (index, kind) in kinds.iter().enumerate() {
                        self.book.thread_row(
                            incident,
                            *kind,
                            payload.clone(),
                            format!("{cause}|{index}"),
                        );
                    }
                }
                Some(SlackKind::Webhook) => {
                    let payload = to_value(SlackPayload::new("", &message, false));
                    self.book.row(
                        Sink::SlackWebhook,
                        meta_order_key(&Sink::SlackWebhook),
                        payload,
                        &cause,
                    );
                }
                Some(SlackKind::WebApi) | None => {}
            }
        }
        for webhook in &self.plan.notify.webhooks {
            let sink = Sink::Webhook(webhook.name.clone());
            let document = json!({
                "version": "1",
                "status": change,
                "change": change,
                "at": format_time(self.book.now),
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
            let order_key = meta_order_key(&sink);
            self.book.row(sink, order_key, document, &cause);
        }
        if self.plan.notify.alertmanager.is_some() {
            self.book.row(
                Sink::Alertmanager,
                meta_order_key(&Sink::Alertmanager),
                alert,
                &cause,
            );
        }
    }
}

/// Closes the open Slack incidents of SLOs that a reload removed: their roots and threads say
/// the SLO is no longer evaluated (else they would show it burning forever). `open`: the
/// open incidents of those SLOs.
pub fn plan_removed(open: Vec<Incident>, slo_ids: &[String], now: Millis) -> Outcome {
    let mut book = Book::new(open, now);
    for slo_id in slo_ids {
        for incident in book.open_of(slo_id, None) {
            let title = format!("ENDED: {slo_id} is no longer evaluated");
            let body = format!(
                "The SLO was removed from burnwatch's configuration at {}; this incident is closed without a verdict.",
                format_time(now)
            );
            let message = Message::notice(":heavy_minus_sign:", title, &body);
            book.close_incident(
                &incident,
                &SlackPayload::new(&incident.target, &message, false),
                &format!("removed|{now}"),
            );
        }
    }
    book.outcome
}

/// The last notification an Alertmanager or a webhook was sent for an alert, read back from
/// the outbox to end it there when its SLO is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Told {
    pub sink: Sink,
    pub order_key: String,
    pub payload: Value,
}

impl Told {
    /// The SLO id in the order key (`alertmanager|<slo>|…`, `webhook:<name>|<slo>|…`).
    pub fn slo_id(&self) -> Option<&str> {
        self.order_key.split('|').nth(1)
    }

    /// Whether that notification said the alert fires.
    pub fn firing(&self) -> bool {
        match self.sink {
            Sink::Alertmanager => self.payload.get("endsAt").is_none(),
            _ => self.payload["status"] == "firing",
        }
    }
}

/// Ends, at Alertmanager and at each webhook, the alerts of SLOs that are gone (removed while
/// burnwatch was down, or unknown to the replica that took the lease): `told` is the last
/// notification of each alert there; those still firing get their ending, with
/// `end_reason: slo_removed`, as an online reload sends it.
pub fn plan_removed_told(told: Vec<Told>, now: Millis) -> Vec<PlannedRow> {
    let ended = Ending::SloRemoved.as_str();
    told.into_iter()
        .filter(Told::firing)
        .map(|told| {
            let mut payload = told.payload;
            match told.sink {
                Sink::Alertmanager => {
                    payload["endsAt"] = json!(format_time(now));
                    payload["annotations"]["end_reason"] = json!(ended);
                }
                _ => {
                    payload["status"] = json!("resolved");
                    payload["change"] = json!("resolved");
                    payload["end_reason"] = json!(ended);
                    payload["at"] = json!(format_time(now));
                }
            }
            PlannedRow {
                cause: format!("removed|{}|{now}", told.order_key),
                sink: told.sink,
                kind: Kind::Send,
                order: Order::Key(told.order_key),
                payload,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::apply;
    use crate::notify::fixtures;
    use crate::notify::matcher::Matcher;
    use crate::slo::TierKind;
    use crate::store::{Sql as _, Store};
    use std::time::Duration;

    fn slo() -> Slo {
        fixtures::slo("order-service", "https://runbooks.example.com/orders")
    }

    fn event(tier: TierKind, change: Change, at: Millis) -> Event {
        fixtures::event(&slo().id, "POST /orders", tier, change, at, at)
    }

    /// (kind, channel, headline, broadcast) of every queued row, oldest first.
    fn queued(store: &Store) -> Vec<(String, String, String, bool)> {
        store
            .db()
            .query(
                "queued",
                "SELECT sink, kind, payload FROM outbox ORDER BY id",
                crate::store::params![],
            )
            .unwrap()
            .iter()
            .map(|row| {
                let (sink, kind, payload): (String, String, String) = (
                    row.get(0).unwrap(),
                    row.get(1).unwrap(),
                    row.get(2).unwrap(),
                );
                let payload: Value = serde_json::from_str(&payload).unwrap();
                let headline = payload["text"]
                    .as_str()
                    .map(|text| text.lines().next().unwrap_or("").to_string())
                    .unwrap_or_else(|| payload["labels"]["alertname"].to_string());
                (
                    format!("{sink}:{kind}"),
                    payload["channel"].as_str().unwrap_or("").to_string(),
                    headline,
                    payload["broadcast"].as_bool().unwrap_or(false),
                )
            })
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
            .save_cycle(&[], |tx| apply::queue_events(tx, &context, &pairs, now))
            .unwrap()
    }

    #[test]
    fn one_thread_per_incident_across_tiers_in_one_channel() {
        for (_backend, mut store) in crate::store::testing::stores() {
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
                .db()
                .query_one(
                    "open incidents",
                    "SELECT COUNT(*) FROM incidents WHERE closed_at IS NULL",
                    crate::store::params![],
                )
                .and_then(|row| row.get(0))
                .unwrap();
            assert_eq!(open, 0);
            // Firing again after the close opens a new incident with its own root.
            let before = queued(&store).len();
            let again = step(&mut store, &notify, TierKind::Ticket, Change::Firing, t + 9);
            assert_eq!(again.queued, 1, "a new incident opens: {again:?}");
            assert_eq!(queued(&store)[before].0, "slack:post");
        }
    }

    #[test]
    fn a_resolution_finds_its_thread_after_routes_change_and_is_never_silenced() {
        for (_backend, mut store) in crate::store::testing::stores() {
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
    }

    #[test]
    fn due_rows_are_the_heads_of_their_orders() {
        for (_backend, mut store) in crate::store::testing::stores() {
            let t = 1_700_000_000_000;
            let notify = NotifyConfig::default();
            // Incident A: post, then update + reply; incident B (a ticket, other channel): post.
            step(&mut store, &notify, TierKind::Page, Change::Firing, t);
            step(&mut store, &notify, TierKind::Page, Change::Resolved, t + 1);
            step(&mut store, &notify, TierKind::Ticket, Change::Firing, t + 2);
            let ids = |rows: Vec<Row>| {
                rows.iter()
                    .map(|row| (row.id, row.kind))
                    .collect::<Vec<_>>()
            };
            let now = crate::notify::deliver::wall_clock();
            assert_eq!(
                ids(store.due(SinkFamily::Slack, now, 10).unwrap()),
                [(1, Kind::Post), (4, Kind::Post)]
            );
            assert!(store.due(SinkFamily::Webhook, now, 10).unwrap().is_empty());
            // A worker claims a row before attempting it, and records its outcome under it.
            assert!(store.claim(1, now, 60_000).unwrap().is_some());
            assert!(
                store
                    .mark_failed(1, "http_503", Some(now + 60_000), true)
                    .unwrap()
            );
            assert_eq!(
                ids(store.due(SinkFamily::Slack, now, 10).unwrap()),
                [(4, Kind::Post)],
                "a row waiting for its retry holds back its order only"
            );
            assert!(
                store.claim(1, now, 60_000).unwrap().is_none(),
                "not due yet"
            );
            assert!(store.claim(1, now + 60_000, 60_000).unwrap().is_some());
            assert!(store.mark_delivered(1, now, Some("1.0")).unwrap());
            assert_eq!(
                ids(store.due(SinkFamily::Slack, now, 10).unwrap()),
                [(2, Kind::Update), (4, Kind::Post)]
            );
            assert_eq!(store.next_due(SinkFamily::Slack, now).unwrap(), None);
        }
    }

    #[test]
    fn removing_an_slo_closes_its_threads() {
        for (_backend, mut store) in crate::store::testing::stores() {
            let t = 1_700_000_000_000;
            run(
                &mut store,
                &NotifyConfig::default(),
                &[event(TierKind::Page, Change::Firing, t)],
                t,
            );
            let closed = store
                .save_cycle(&[], |tx| {
                    apply::queue_removed(tx, &[slo().id], Vec::new(), t + 1)
                })
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
                .save_cycle(&[], |tx| {
                    apply::queue_removed(tx, &[slo().id], Vec::new(), t + 2)
                })
                .unwrap();
            assert_eq!(again, 0, "closed once");
        }
    }

    #[test]
    fn default_routes_silences_and_other_sinks() {
        for (_backend, mut store) in crate::store::testing::stores() {
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

    // The planner alone: open incidents in, incident changes and rows out; no database.

    fn pure_plan<'a>(notify: &'a NotifyConfig, silences: &'a [Silence]) -> Plan<'a> {
        Plan {
            notify,
            silences,
            slack: Some(SlackKind::WebApi),
            external_url: "http://burnwatch:9099",
        }
    }

    fn routed(channel: &str) -> NotifyConfig {
        let mut notify = NotifyConfig::default();
        notify.routes = vec![crate::config::notify::Route {
            matchers: Vec::new(),
            slack_channel: Some(channel.to_string()),
        }];
        notify
    }

    fn instance() -> String {
        labels_json(&event(TierKind::Page, Change::Firing, 0).labels)
    }

    /// An open incident of the fixture's instance with `tiers` firing.
    fn incident(id: i64, target: &str, tiers: &[TierKind]) -> Incident {
        let slo = slo();
        let mut firing = Map::new();
        for tier in tiers {
            let root = SlackPayload::new(
                target,
                &render::render(&slo, &event(*tier, Change::Firing, 1)),
                false,
            );
            firing.insert(tier.as_str().to_string(), to_value(root));
        }
        Incident {
            id: IncidentRef::Stored(id),
            target: target.to_string(),
            slo_id: slo.id.clone(),
            labels: instance(),
            tiers: firing,
        }
    }

    fn planned(plan: &Plan, open: Vec<Incident>, events: &[Event], now: Millis) -> Outcome {
        let slo = slo();
        let pairs: Vec<(&Slo, &Event)> = events.iter().map(|event| (&slo, event)).collect();
        let mut planner = Planner::new(plan, open, now);
        planner.events(&pairs);
        planner.finish()
    }

    /// (sink:kind, order, channel, headline, broadcast) of every planned row.
    fn described(outcome: &Outcome) -> Vec<String> {
        outcome
            .rows
            .iter()
            .map(|row| {
                let order = match &row.order {
                    Order::Incident(IncidentRef::Stored(id)) => format!("incident {id}"),
                    Order::Incident(IncidentRef::New(index)) => format!("new {index}"),
                    Order::Key(key) => key.clone(),
                };
                let headline = row.payload["text"]
                    .as_str()
                    .map(|text| text.lines().next().unwrap_or("").to_string())
                    .unwrap_or_else(|| row.payload["labels"]["alertname"].to_string());
                format!(
                    "{}:{} [{order}] {} {headline}{}",
                    row.sink,
                    row.kind,
                    row.payload["channel"].as_str().unwrap_or(""),
                    if row.payload["broadcast"] == json!(true) {
                        " (broadcast)"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    }

    #[test]
    fn planner_opens_a_new_incident_with_its_root() {
        let notify = routed("#incidents");
        let plan = pure_plan(&notify, &[]);
        let t = 1_700_000_000_000;
        let outcome = planned(
            &plan,
            Vec::new(),
            &[event(TierKind::Page, Change::Firing, t)],
            t,
        );
        assert_eq!(
            described(&outcome),
            ["slack:post [new 0] #incidents CRITICAL: Fast error budget burn on order-service"]
        );
        match outcome.incidents.as_slice() {
            [
                IncidentChange::Open {
                    target,
                    slo_id,
                    labels,
                    tiers,
                },
            ] => {
                assert_eq!(
                    (target.as_str(), slo_id.as_str(), labels.as_str()),
                    ("#incidents", slo().id.as_str(), instance().as_str())
                );
                assert_eq!(tiers.keys().collect::<Vec<_>>(), ["page"]);
            }
            other => panic!("{other:?}"),
        }
        let row = &outcome.rows[0];
        assert_eq!(row.order_key(Some(9)), "slack|9");
        assert_eq!(
            row.natural_key(Some(9)),
            format!("slack|9|{}|{}|page|firing|{t}|0", slo().id, instance())
        );
    }

    #[test]
    fn planner_updates_the_root_in_place_and_replies_in_the_thread() {
        let notify = routed("#incidents");
        let plan = pure_plan(&notify, &[]);
        let open = vec![incident(7, "#incidents", &[TierKind::Page])];
        let t = 1_700_000_000_000;
        let outcome = planned(
            &plan,
            open,
            &[event(TierKind::Page, Change::Reminder, t)],
            t,
        );
        assert_eq!(
            described(&outcome),
            [
                "slack:update [incident 7] #incidents CRITICAL: Fast error budget burn on order-service",
                "slack:reply [incident 7] #incidents STILL FIRING: Fast error budget burn on order-service",
            ]
        );
        assert!(matches!(
            outcome.incidents.as_slice(),
            [IncidentChange::Tiers {
                incident: IncidentRef::Stored(7),
                ..
            }]
        ));
        // Escalation in the same thread: the page's root replaces the ticket's, broadcast.
        let open = vec![incident(7, "#incidents", &[TierKind::Ticket])];
        let outcome = planned(&plan, open, &[event(TierKind::Page, Change::Firing, t)], t);
        assert_eq!(
            described(&outcome),
            [
                "slack:update [incident 7] #incidents CRITICAL: Fast error budget burn on order-service",
                "slack:reply [incident 7] #incidents CRITICAL: Fast error budget burn on order-service (broadcast)",
            ]
        );
    }

    #[test]
    fn planner_sees_the_incidents_it_opens_within_one_cycle() {
        // A ticket and a page firing in the same cycle, then the page resolving (a cycle
        // replayed after a failed save): one thread, the second change finds the first's.
        let notify = routed("#incidents");
        let plan = pure_plan(&notify, &[]);
        let t = 1_700_000_000_000;
        let outcome = planned(
            &plan,
            Vec::new(),
            &[
                event(TierKind::Ticket, Change::Firing, t),
                event(TierKind::Page, Change::Firing, t),
                event(TierKind::Page, Change::Resolved, t + 1),
                event(TierKind::Ticket, Change::Resolved, t + 1),
            ],
            t + 1,
        );
        assert_eq!(
            described(&outcome),
            [
                "slack:post [new 0] #incidents WARNING: Slow error budget burn on order-service",
                "slack:update [new 0] #incidents CRITICAL: Fast error budget burn on order-service",
                "slack:reply [new 0] #incidents CRITICAL: Fast error budget burn on order-service (broadcast)",
                "slack:update [new 0] #incidents WARNING: Slow error budget burn on order-service",
                "slack:reply [new 0] #incidents RESOLVED: Fast error budget burn on order-service",
                "slack:update [new 0] #incidents RESOLVED: Slow error budget burn on order-service",
                "slack:reply [new 0] #incidents RESOLVED: Slow error budget burn on order-service",
            ]
        );
        assert_eq!(outcome.incidents.len(), 4, "{:?}", outcome.incidents);
        assert_eq!(
            outcome.incidents.last(),
            Some(&IncidentChange::Close {
                incident: IncidentRef::New(0)
            })
        );
    }

    #[test]
    fn planner_replies_an_escalation_into_the_tickets_thread_elsewhere() {
        // Default routes: pages to #incidents, tickets to #slo-alerts.
        let notify = NotifyConfig::default();
        let plan = pure_plan(&notify, &[]);
        let open = vec![incident(3, "#slo-alerts", &[TierKind::Ticket])];
        let t = 1_700_000_000_000;
        let outcome = planned(&plan, open, &[event(TierKind::Page, Change::Firing, t)], t);
        assert_eq!(
            described(&outcome),
            [
                "slack:post [new 0] #incidents CRITICAL: Fast error budget burn on order-service",
                "slack:reply [incident 3] #slo-alerts Escalated: paging in #incidents",
            ]
        );
        assert_eq!(outcome.incidents.len(), 1, "the ticket's thread stays open");
    }

    #[test]
    fn planner_resolves_in_the_thread_opened_before_routes_changed() {
        let mut notify = routed("#elsewhere");
        let t = 1_700_000_000_000;
        notify.silences = vec![Silence {
            id: "all".to_string(),
            matchers: vec![Matcher::parse("service=~\".+\"").unwrap()],
            starts_at: t - 1,
            ends_at: t + 100,
            comment: String::new(),
            created_by: String::new(),
        }];
        let plan = pure_plan(&notify, &[]);
        let open = vec![incident(5, "#incidents", &[TierKind::Page])];
        let outcome = planned(
            &plan,
            open,
            &[event(TierKind::Page, Change::Resolved, t)],
            t,
        );
        assert_eq!(
            described(&outcome),
            [
                "slack:update [incident 5] #incidents RESOLVED: Fast error budget burn on order-service",
                "slack:reply [incident 5] #incidents RESOLVED: Fast error budget burn on order-service",
            ]
        );
        assert_eq!(
            outcome.incidents,
            [IncidentChange::Close {
                incident: IncidentRef::Stored(5)
            }]
        );
        assert_eq!(outcome.silenced, 0, "a resolution is never silenced");
    }

    #[test]
    fn planner_mutes_silenced_burns() {
        let mut notify = routed("#incidents");
        notify.alertmanager = Some(crate::config::notify::AlertmanagerConfig {
            url: "http://am:9093".to_string(),
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        });
        let t = 1_700_000_000_000;
        let api = [Silence {
            id: "api".to_string(),
            matchers: vec![Matcher::parse("tier=\"page\"").unwrap()],
            starts_at: t - 1,
            ends_at: t + 10,
            comment: String::new(),
            created_by: String::new(),
        }];
        let plan = pure_plan(&notify, &api);
        let open = vec![incident(7, "#incidents", &[TierKind::Page])];
        let outcome = planned(
            &plan,
            open.clone(),
            &[
                event(TierKind::Page, Change::Firing, t),
                event(TierKind::Page, Change::Reminder, t),
            ],
            t,
        );
        assert_eq!(outcome.silenced, 2);
        assert!(outcome.rows.is_empty() && outcome.incidents.is_empty());
        // Once the silence has ended, the burn is heard again.
        let outcome = planned(
            &plan,
            open,
            &[event(TierKind::Page, Change::Reminder, t + 20)],
            t + 20,
        );
        assert_eq!((outcome.silenced, outcome.rows.len()), (0, 2));
    }

    #[test]
    fn planner_ends_threads_of_retired_alerts_and_removed_slos() {
        let notify = routed("#incidents");
        let plan = pure_plan(&notify, &[]);
        let t = 1_700_000_000_000;
        let mut retired = event(TierKind::Page, Change::Resolved, t);
        retired.ended = Some(crate::engine::Ending::TierRemoved);
        let open = vec![incident(5, "#incidents", &[TierKind::Page])];
        let outcome = planned(&plan, open.clone(), &[retired], t);
        assert_eq!(
            described(&outcome),
            [
                "slack:update [incident 5] #incidents ENDED: Fast error budget burn on order-service",
                "slack:reply [incident 5] #incidents ENDED: Fast error budget burn on order-service",
            ]
        );
        assert_eq!(
            outcome.incidents,
            [IncidentChange::Close {
                incident: IncidentRef::Stored(5)
            }]
        );
        let outcome = plan_removed(open, &[slo().id, "other".to_string()], t);
        assert_eq!(
            described(&outcome),
            [
                "slack:update [incident 5] #incidents ENDED: order-service-availability is no longer evaluated",
                "slack:reply [incident 5] #incidents ENDED: order-service-availability is no longer evaluated",
            ]
        );
        assert_eq!(
            outcome.rows[0].natural_key(Some(5)),
            format!("slack|5|removed|{t}|0")
        );
    }

    #[test]
    fn planner_raises_renames_and_resolves_the_meta_alert() {
        let mut notify = NotifyConfig::default();
        notify.alertmanager = Some(crate::config::notify::AlertmanagerConfig {
            url: "http://am:9093".to_string(),
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        });
        let plan = pure_plan(&notify, &[]);
        let t = 1_700_000_000_000;
        let stale = |ids: &[&str]| -> Vec<StaleSlo> {
            ids.iter()
                .map(|id| StaleSlo {
                    id: id.to_string(),
                    last_answered: Some(t - 60_000),
                    watched_since: t - 120_000,
                })
                .collect()
        };
        let since = t - 60_000;
        let mut planner = Planner::new(&plan, Vec::new(), t);
        planner.meta(MetaStatus::Firing, since, t, &stale(&["a", "b"]));
        let fired = planner.finish();
        assert_eq!(
            described(&fired),
            [
                "slack:post [new 0] #incidents CRITICAL: burnwatch evaluation stale",
                "alertmanager:send [alertmanager|burnwatch|meta]  \"BurnwatchEvaluationStale\"",
            ]
        );
        assert!(
            fired.rows[0].payload["text"]
                .as_str()
                .unwrap()
                .contains("a (last answered")
        );
        assert!(matches!(
            fired.incidents.as_slice(),
            [IncidentChange::Open { slo_id, labels, .. }] if slo_id == META_SLO_ID && labels == "[]"
        ));
        // The stale SLOs change while it fires: the root names the current ones, in place.
        let open = vec![Incident {
            id: IncidentRef::Stored(11),
            target: "#incidents".to_string(),
            slo_id: META_SLO_ID.to_string(),
            labels: "[]".to_string(),
            tiers: Map::new(),
        }];
        let mut planner = Planner::new(&plan, open.clone(), t + 30_000);
        planner.meta(MetaStatus::Changed, since, t + 30_000, &stale(&["b"]));
        let changed = planner.finish();
        assert_eq!(
            described(&changed),
            ["slack:update [incident 11] #incidents CRITICAL: burnwatch evaluation stale"]
        );
        let text = changed.rows[0].payload["text"].as_str().unwrap();
        assert!(
            text.contains("1 SLO: b (last answered") && !text.contains("a (last"),
            "{text}"
        );
        assert!(changed.incidents.is_empty());
        // Resolved: the thread closes, Alertmanager hears the end.
        let mut planner = Planner::new(&plan, open, t + 60_000);
        planner.meta(MetaStatus::Resolved, since, t + 60_000, &[]);
        let resolved = planner.finish();
        assert_eq!(
            described(&resolved),
            [
                "slack:update [incident 11] #incidents RESOLVED: burnwatch evaluation stale",
                "slack:reply [incident 11] #incidents RESOLVED: burnwatch evaluation stale",
                "alertmanager:send [alertmanager|burnwatch|meta]  \"BurnwatchEvaluationStale\"",
            ]
        );
        assert!(resolved.rows[2].payload.get("endsAt").is_some());
        assert_eq!(
            resolved.incidents,
            [IncidentChange::Close {
                incident: IncidentRef::Stored(11)
            }]
        );
    }

    #[test]
    fn sinks_and_kinds_read_back_the_stored_values() {
        for (sink, text) in [
            (Sink::Slack, "slack"),
            (Sink::SlackWebhook, "slack-webhook"),
            (Sink::Webhook("pager".to_string()), "webhook:pager"),
            (Sink::Alertmanager, "alertmanager"),
        ] {
            assert_eq!(sink.as_str(), text);
            assert_eq!(Sink::parse(text), Some(sink.clone()));
            assert_eq!(sink.family().as_str(), text.split(':').next().unwrap());
        }
        assert_eq!(Sink::parse("pagerduty"), None);
        for kind in [Kind::Post, Kind::Reply, Kind::Update, Kind::Send] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("delete"), None);
    }
}
