//! `burnwatch serve`: the one async loop. Every `evaluation_interval` (aligned to the clock,
//! never overlapping) it fetches every SLO's windows from Prometheus, steps the engine, hands
//! alert changes to the sinks, persists alert state and refreshes what the HTTP face shows.
//!
//! - Reload (SIGHUP or `POST /-/reload`) does all fallible work first (read config and specs,
//!   build the client); a bad config is rejected with its error and the old one keeps running.
//!   Alert state of SLOs whose id is unchanged is kept.
//! - When Prometheus cannot answer, the SLO's alerts hold their state (no false "resolved"),
//!   `/api/v1/slos` says stale, and after `stale_after` a meta alert "evaluation stale" goes
//!   to the sinks; it resolves when evaluation recovers.
//! - Shutdown (SIGTERM/SIGINT) finishes the cycle in flight, persists, and returns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::burn::WindowValue;
use crate::config::notify::{NotifyConfig, SecretSource, Silence, SlackMode};
use crate::config::{self, DaemonConfig, Document, Strategy};
use crate::engine::{Event, InstanceLabels, SavedAlert};
use crate::metrics::{Metrics, labels};
use crate::notify::apply;
use crate::notify::console;
use crate::notify::deliver::{self, Sinks};
use crate::notify::outbox::{self, SlackKind};
use crate::notify::sinks::{Http, SlackApi};
use crate::replay::format_time;
use crate::slo::TierKind;
use crate::slo::{Millis, Slo};
use crate::source::incremental::{Checkpoint, Incremental};
use crate::source::live::Snapshot;
use crate::source::prometheus::{Auth, Client, Endpoint, Secret, VERSION_RETRY};
use crate::store::Sql as _;
use crate::store::{Store, StoreHandle};

mod clock;
mod group;
mod ha;
mod health;
mod lifecycle;
pub use clock::Rehearsal;
use clock::{REHEARSAL_REACHED, wall_clock};
use group::Groups;
pub use ha::{HaStatus, Role};
use health::{Health, MetaChange, StaleSlo, Staleness};
use lifecycle::Daemon;

/// A reload request and where to send its outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// How `serve` was started.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    /// Overrides `web.listen` (tests bind 127.0.0.1:0).
    pub listen: Option<SocketAddr>,
    /// Rehearsal: evaluate from this past time on, `speed` times faster than real time.
    pub rehearse: Option<Rehearsal>,
}

/// Everything a config file yields, built before it replaces the running one.
struct Loaded {
    config: DaemonConfig,
    slos: Vec<Slo>,
    client: Client,
    reload_token: Option<Secret>,
    sinks: Arc<Sinks>,
}

/// The shortest reload token accepted: one that guessing cannot find.
const MIN_RELOAD_TOKEN: usize = 16;

fn read_secret(path: &Path, what: &str) -> Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    warn_if_readable_by_others(path, what);
    Ok(Secret::new(text.trim().to_string()))
}

/// A secret's file that others on the machine may read gets a warning (the file is still
/// used: a Kubernetes secret volume, say, decides its own modes).
fn warn_if_readable_by_others(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the {what} file {} is readable by others (mode {mode:03o}); chmod 600 it",
                path.display()
            );
        }
    }
}

fn read_source(source: &SecretSource, what: &str) -> Result<Secret> {
    match source {
        SecretSource::File(path) => read_secret(path, what),
        SecretSource::Env(name) => match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim().to_string())),
            _ => anyhow::bail!("environment variable {name} ({what}) is not set"),
        },
    }
}

/// A URL read from a secret must be an http(s) URL; the error does not repeat it.
fn check_url(url: &Secret, what: &str) -> Result<()> {
    match reqwest::Url::parse(url.expose()) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => anyhow::bail!("the {what} is not an http:// or https:// URL"),
    }
}

/// The receivers of `notify`, with their secrets read.
fn build_sinks(notify: &NotifyConfig) -> Result<Sinks> {
    let (slack_api, slack_webhook) = match &notify.slack {
        None => (None, None),
        Some(slack) => match &slack.mode {
            SlackMode::WebApi { token, api_url } => {
                let token = read_source(token, "Slack bot token")?;
                (Some(SlackApi::new(api_url, &token, slack.timeout)?), None)
            }
            SlackMode::Webhook { url } => {
                let url = read_source(url, "Slack webhook URL")?;
                check_url(&url, "Slack webhook URL")?;
                (None, Some((url, slack.timeout)))
            }
        },
    };
    let webhooks = notify
        .webhooks
        .iter()
        .map(|hook| {
            let what = format!("webhook {:?} URL", hook.name);
            Ok((
                hook.name.clone(),
                read_source(&hook.url, &what)?,
                hook.timeout,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(Sinks {
        slack_api,
        slack_webhook,
        webhooks,
        alertmanager: notify.alertmanager.clone(),
        http: Http::new()?,
    })
}

/// The Prometheus client a daemon config describes (URL and path prefix, headers such as
/// `X-Scope-OrgID`, CA, timeout, concurrency, basic auth or a bearer token read from its
/// file), for `serve` and for the commands that read Prometheus's history (`what` names the
/// command in the error when the config has no `prometheus` section).
pub fn prometheus_client(config: &DaemonConfig, config_path: &Path, what: &str) -> Result<Client> {
    let prometheus = config.prometheus.as_ref().with_context(|| {
        format!(
            "{}: `prometheus.url` is required to {what}",
            config_path.display()
        )
    })?;
    let mut endpoint = Endpoint::new(prometheus.url.clone());
    endpoint.headers = prometheus.headers.clone();
    endpoint.ca_file = prometheus.ca_file.clone();
    endpoint.timeout = prometheus.timeout;
    endpoint.max_concurrency = prometheus.max_concurrency;
    endpoint.semantics = prometheus.semantics;
    endpoint.max_answer_bytes = prometheus.max_answer_bytes;
    endpoint.auth = match (&prometheus.basic_auth, &prometheus.bearer_token_file) {
        (Some((username, password_file)), _) => Auth::Basic {
            username: username.clone(),
            password: read_secret(password_file, "password")?,
        },
        (None, Some(token_file)) => Auth::Bearer(read_secret(token_file, "bearer token")?),
        (None, None) => Auth::None,
    };
    Ok(Client::new(&endpoint)?)
}

/// Reads a daemon config file (not an SLO spec).
pub fn read_config(config_path: &Path) -> Result<DaemonConfig> {
    match config::load_file(config_path) {
        Ok(Document::Daemon(config)) => Ok(*config),
        Ok(Document::Slos(_)) => anyhow::bail!(
            "{} is an SLO spec, not a daemon config",
            config_path.display()
        ),
        Err(errors) => Err(config::ConfigErrors(errors).into()),
    }
}

fn load(config_path: &Path) -> Result<Loaded> {
    let config = read_config(config_path)?;
    let slos = config::load_specs(&config.rules)?;
    let client = prometheus_client(&config, config_path, "serve")?;
    for slo in &slos {
        for warning in &slo.warnings {
            tracing::warn!(slo = %slo.id, "{warning}");
        }
    }
    for warning in config::cross_check(&config, &slos) {
        tracing::warn!("{warning}");
    }
    if config.strategy == Strategy::Incremental {
        for slo in &slos {
            if let Err(reason) = slo.sli.local() {
                tracing::warn!(slo = %slo.id, %reason, "cannot be evaluated incrementally; using the query strategy");
            }
        }
    }
    let reload_token = match &config.reload_token_file {
        Some(path) => {
            let token = read_secret(path, "reload token")?;
            let length = token.expose().chars().count();
            if length < MIN_RELOAD_TOKEN {
                anyhow::bail!(
                    "the reload token in {} is {length} characters long; use at least \
                     {MIN_RELOAD_TOKEN} (e.g. `openssl rand -hex 16`)",
                    path.display()
                );
            }
            Some(token)
        }
        None => None,
    };
    let sinks = Arc::new(build_sinks(&config.notify)?);
    Ok(Loaded {
        config,
        slos,
        client,
        reload_token,
        sinks,
    })
}

/// What the HTTP face shows about one SLO instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub labels: std::collections::BTreeMap<String, String>,
    pub windows: Vec<WindowStatus>,
    pub budget_remaining: Option<f64>,
    /// Why no window has a value, when none has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_data: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowStatus {
    pub window: String,
    pub error_ratio: Option<f64>,
    pub burn_rate: Option<f64>,
    pub events: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SloStatus {
    pub id: String,
    pub service: String,
    pub name: String,
    pub objective: f64,
    pub period: String,
    /// `ok`, or `stale` when the last evaluation of this SLO failed.
    pub state: String,
    pub last_error: Option<String>,
    pub last_success: Option<String>,
    /// Shared with the SLO's health, which keeps the last instances for cycles that fail.
    pub instances: Arc<[InstanceStatus]>,
}

/// What the daemon shares with the HTTP face.
#[derive(Default)]
pub struct Status {
    pub ready: bool,
    /// SLOs that have not been evaluated successfully yet.
    pub never_evaluated: Vec<String>,
    /// SLOs Prometheus has not answered for for `stale_after`.
    pub stale_slos: Vec<String>,
    pub last_evaluation: Option<Millis>,
    pub stale: bool,
    /// Swapped whole by each cycle: readers clone the `Arc` and let go of the lock.
    pub slos: Arc<Vec<SloStatus>>,
    pub alerts: Arc<Vec<SavedAlert>>,
    /// The source's version and the window arithmetic followed for it.
    pub source: Option<crate::source::version::SourceVersion>,
}

/// State shared between the loop and the HTTP server.
pub struct Shared {
    pub status: RwLock<Status>,
    pub metrics: Mutex<Metrics>,
    pub reload_token: RwLock<Option<Secret>>,
    pub reloads: mpsc::Sender<ReloadRequest>,
    pub store: StoreHandle,
    /// Silences from the config file (API silences live in the store).
    pub config_silences: RwLock<Vec<Silence>>,
    /// API silences active at once at most (`web.max_silences`).
    pub max_silences: std::sync::atomic::AtomicUsize,
    /// The SLOs as loaded and their histories, for the status page (replaced by a reload).
    pub pages: RwLock<Arc<crate::page::PageSource>>,
    /// Which replica leads, with PostgreSQL (None: one SQLite replica).
    pub ha: RwLock<Option<HaStatus>>,
}

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

/// The per-SLO memory of the loop: its evaluation health, and its instances as last seen
/// (shown while evaluation fails).
#[derive(Clone)]
struct SloHealth {
    health: Health,
    last_instances: Arc<[InstanceStatus]>,
}

impl SloHealth {
    fn new(watched_since: Millis) -> SloHealth {
        SloHealth {
            health: Health::new(watched_since),
            last_instances: Arc::from(Vec::new()),
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled. `reloads` carries SIGHUP and HTTP reload
/// requests; `reload_sender` is handed to the HTTP face.
pub async fn run(
    options: Options,
    shutdown: CancellationToken,
    reload_sender: mpsc::Sender<ReloadRequest>,
    mut reloads: mpsc::Receiver<ReloadRequest>,
) -> Result<()> {
    let mut daemon = Daemon::start(options, reload_sender, &shutdown).await?;
    let mut lease = daemon.lease_view();
    loop {
        let wait = daemon.until_next_tick();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(reply) = reloads.recv() => {
                let _ = reply.send(daemon.reload().await);
            }
            Some(()) = ha::changed(&mut lease) => daemon.sync_role().await,
            _ = tokio::time::sleep(wait) => daemon.tick().await,
        }
    }
    daemon.stop().await
}

/// The delivery workers and what the loop tells them.
struct Delivery {
    sinks: watch::Sender<Arc<Sinks>>,
    active: watch::Sender<Vec<serde_json::Value>>,
    wakes: Vec<Arc<Notify>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Delivery {
    fn start(
        shared: &Arc<Shared>,
        database_id: String,
        sinks: Arc<Sinks>,
        leads: deliver::MaySend,
    ) -> Delivery {
        let (sinks_tx, sinks_rx) = watch::channel(sinks);
        let (active_tx, active_rx) = watch::channel(Vec::new());
        let stop = CancellationToken::new();
        let metrics = {
            let metrics = shared.metrics.lock().unwrap_or_else(|e| e.into_inner());
            deliver::DeliveryMetrics {
                depth: metrics.outbox_depth.clone(),
                delivered: metrics.notifications_delivered.clone(),
                failures: metrics.delivery_failures.clone(),
                delay: metrics.notification_delay.clone(),
                store_errors: metrics.store_errors.clone(),
                store_backoff: metrics.delivery_store_backoff.clone(),
            }
        };
        let mut wakes = Vec::new();
        let mut tasks = Vec::new();
        let alertmanager_lock = Arc::new(tokio::sync::Mutex::new(()));
        let context = |wake: Arc<Notify>| deliver::Context {
            store: shared.store.clone(),
            database_id: database_id.clone(),
            sinks: sinks_rx.clone(),
            metrics: metrics.clone(),
            wake,
            alertmanager_lock: alertmanager_lock.clone(),
            leads: leads.clone(),
            shutdown: stop.clone(),
        };
        for family in outbox::SinkFamily::ALL {
            let wake = Arc::new(Notify::new());
            wakes.push(wake.clone());
            tasks.push(tokio::spawn(deliver::worker(family, context(wake))));
        }
        tasks.push(tokio::spawn(deliver::alertmanager_resender(
            context(Arc::new(Notify::new())),
            active_rx,
        )));
        Delivery {
            sinks: sinks_tx,
            active: active_tx,
            wakes,
            stop,
            tasks,
        }
    }

    fn wake(&self) {
        for wake in &self.wakes {
            wake.notify_one();
        }
    }

    /// Lets each worker finish the request in flight; what is still queued goes out after
    /// the next start.
    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

/// The base of links back to this burnwatch (`web.external_url`, else the listen address).
fn external_url(loaded: &Loaded, options: &Options) -> String {
    loaded
        .config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", options.listen.unwrap_or(loaded.config.listen)))
}

/// What planning a cycle's notifications needs, owned so it can run off the async threads.
struct PlanInput {
    notify: NotifyConfig,
    slack: Option<SlackKind>,
    external_url: String,
    events: Vec<(Slo, Event)>,
    /// Changes of the "evaluation stale" meta alert, oldest first.
    meta: Vec<MetaChange>,
    /// In a rehearsal, the evaluation time saved with this cycle's state: a restart resumes
    /// after it.
    rehearsal_reached: Option<Millis>,
}

/// The `meta` key that holds since when evaluation is stale, while it is.
const STALE_SINCE: &str = "stale_since";
impl PlanInput {
    fn new(loaded: &Loaded, options: &Options, events: Vec<(Slo, Event)>) -> PlanInput {
        let slack = loaded
            .config
            .notify
            .slack
            .as_ref()
            .map(|slack| match slack.mode {
                SlackMode::WebApi { .. } => SlackKind::WebApi,
                SlackMode::Webhook { .. } => SlackKind::Webhook,
            });
        PlanInput {
            // Only planning reads the routes and silences.
            notify: loaded.config.notify.clone(),
            slack,
            external_url: external_url(loaded, options),
            events,
            meta: Vec::new(),
            rehearsal_reached: None,
        }
    }

    /// Saves the alert states and queues their notifications in one transaction.
    fn save(
        &self,
        store: &mut Store,
        alerts: &[SavedAlert],
        now: Millis,
    ) -> Result<outbox::Planned, crate::store::StoreError> {
        let silences = if self.events.is_empty() && self.meta.is_empty() {
            Vec::new()
        } else {
            store.silences(now)?
        };
        let plan = outbox::Plan {
            notify: &self.notify,
            silences: &silences,
            slack: self.slack,
            external_url: &self.external_url,
        };
        let events: Vec<(&Slo, &Event)> = self
            .events
            .iter()
            .map(|(slo, event)| (slo, event))
            .collect();
        store.save_cycle(alerts, |tx| {
            // The open incidents the plan may touch, read in this transaction; the plan is
            // written in it too, with the alert states.
            let mut slo_ids: Vec<&str> = events.iter().map(|(slo, _)| slo.id.as_str()).collect();
            if !self.meta.is_empty() {
                slo_ids.push(outbox::META_SLO_ID);
            }
            let open = apply::open_incidents(tx, slo_ids)?;
            let mut planner = outbox::Planner::new(&plan, open, now);
            planner.events(&events);
            for change in &self.meta {
                planner.meta(change.status, change.since, change.at, &change.stale);
            }
            let planned = apply::apply(tx, &planner.finish(), now)?;
            for change in &self.meta {
                if change.status.is_firing() {
                    crate::store::set_meta(tx, STALE_SINCE, &change.since.to_string())?;
                } else {
                    tx.execute(
                        "save staleness",
                        "DELETE FROM meta WHERE key = ?1",
                        crate::store::params![STALE_SINCE],
                    )?;
                }
            }
            if let Some(reached) = self.rehearsal_reached {
                crate::store::set_meta(tx, REHEARSAL_REACHED, &reached.to_string())?;
            }
            Ok(planned)
        })
    }
}

/// Keeps the full Alertmanager alert (figures in its annotations) of every firing alert, as of
/// its last firing or reminder, so re-sends do not strip the figures.
/// The full payloads of the alerts Alertmanager was last told fire, read back from the outbox
/// (`told`): what a new leader, or a restarted one, re-sends with their figures, as the
/// leader that sent them did.
fn told_alertmanager_payloads(
    told: Vec<outbox::Told>,
) -> HashMap<(String, InstanceLabels, TierKind), serde_json::Value> {
    let mut payloads = HashMap::new();
    for told in told {
        if told.sink != outbox::Sink::Alertmanager || !told.firing() {
            continue;
        }
        // `alertmanager|<slo id>|<labels as JSON>|<tier>`
        let Some(rest) = told.order_key.strip_prefix("alertmanager|") else {
            continue;
        };
        let Some((slo_id, rest)) = rest.split_once('|') else {
            continue;
        };
        let Some((labels, tier)) = rest.rsplit_once('|') else {
            continue;
        };
        let tier = match tier {
            "page" => TierKind::Page,
            "ticket" => TierKind::Ticket,
            _ => continue,
        };
        let Ok(labels) = serde_json::from_str::<InstanceLabels>(labels) else {
            continue;
        };
        payloads.insert((slo_id.to_string(), labels, tier), told.payload);
    }
    payloads
}

fn remember_alertmanager_payloads(
    payloads: &mut HashMap<(String, InstanceLabels, TierKind), serde_json::Value>,
    events: &[(Slo, Event)],
    external_url: &str,
) {
    for (slo, event) in events {
        let key = (event.slo_id.clone(), event.labels.clone(), event.tier);
        match event.change {
            crate::alert::Change::Firing | crate::alert::Change::Reminder => {
                let labels = crate::notify::render::alert_labels(slo, event.tier, &event.labels);
                let message = crate::notify::render::render(slo, event);
                let mut alert =
                    outbox::alertmanager_alert(slo, event, &labels, &message, external_url, None);
                if let Some(object) = alert.as_object_mut() {
                    object.remove("endsAt");
                }
                payloads.insert(key, alert);
            }
            crate::alert::Change::Resolved => {
                payloads.remove(&key);
            }
            _ => {}
        }
    }
}

/// The alerts Alertmanager should keep active: every announced firing alert that no silence
/// matches, and every one Alertmanager was already told fires, silenced or not (a silence
/// mutes; it must not let Alertmanager, and PagerDuty behind it, believe the burn is over).
/// An alert silenced from its start was never sent, so it is not re-sent either. The
/// "evaluation stale" meta alert (`meta`, while it fires) follows the same rule.
async fn alertmanager_active(
    loaded: &Loaded,
    options: &Options,
    shared: &Shared,
    saved: &[SavedAlert],
    payloads: &HashMap<(String, InstanceLabels, TierKind), serde_json::Value>,
    meta: Option<serde_json::Value>,
) -> Vec<serde_json::Value> {
    if loaded.config.notify.alertmanager.is_none() {
        return Vec::new();
    }
    // Silences keep real time, also in a rehearsal.
    let now = wall_clock();
    let mut silences = shared
        .config_silences
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // The store's reads off the runtime's workers.
    let (stored, told) = shared
        .store
        .call(move |store| Ok((store.silences(now), store.alertmanager_told_firing())))
        .await
        .unwrap_or_else(|error| {
            let failed = || crate::store::StoreError::new(error.to_string());
            (Err(failed()), Err(failed()))
        });
    match stored {
        Ok(stored) => silences.extend(stored),
        Err(error) => tracing::warn!(%error, "cannot read silences"),
    }
    let told = told.unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot read what Alertmanager was told");
        Default::default()
    });
    let base = external_url(loaded, options);
    resend_list(
        &ResendInput {
            slos: &loaded.slos,
            saved,
            payloads,
            silences: &silences,
            told: &told,
            now,
            external_url: &base,
        },
        meta,
    )
}

/// What [`resend_list`] decides from.
struct ResendInput<'a> {
    slos: &'a [Slo],
    saved: &'a [SavedAlert],
    payloads: &'a HashMap<(String, InstanceLabels, TierKind), serde_json::Value>,
    /// Every silence, config and API.
    silences: &'a [crate::config::notify::Silence],
    /// The order keys of the alerts Alertmanager was told fire.
    told: &'a std::collections::HashSet<String>,
    now: Millis,
    external_url: &'a str,
}

/// The re-send list (see [`alertmanager_active`]); pure.
fn resend_list(input: &ResendInput, meta: Option<serde_json::Value>) -> Vec<serde_json::Value> {
    // Re-sent unless a silence holds it and Alertmanager was not told it fires.
    let keep = |labels: &[(String, String)], order_key: String| {
        let silenced = input.silences.iter().any(|silence| {
            silence.active(input.now)
                && crate::notify::matcher::all_match(&silence.matchers, labels)
        });
        !silenced || input.told.contains(&order_key)
    };
    let mut active: Vec<serde_json::Value> = input
        .saved
        .iter()
        .filter(|alert| alert.alert.is_firing() && alert.alert.announced)
        .filter_map(|alert| {
            let slo = input.slos.iter().find(|slo| slo.id == alert.slo_id)?;
            let labels = crate::notify::render::alert_labels(slo, alert.tier, &alert.labels);
            if !keep(
                &labels,
                outbox::alertmanager_order_key(&alert.slo_id, &alert.labels, alert.tier),
            ) {
                return None;
            }
            let key = (alert.slo_id.clone(), alert.labels.clone(), alert.tier);
            if let Some(full) = input.payloads.get(&key) {
                return Some(full.clone());
            }
            Some(outbox::alertmanager_resend(
                slo,
                alert.tier,
                &alert.labels,
                alert.alert.firing_since()?,
                input.external_url,
            ))
        })
        .collect();
    if let Some(meta) = meta
        && keep(
            &outbox::meta_labels(),
            outbox::meta_order_key(&outbox::Sink::Alertmanager),
        )
    {
        active.push(meta);
    }
    active
}

/// Evaluates every SLO at `now`; returns the alert changes.
/// Per-SLO incremental state, kept across cycles and across reloads that leave the SLO's id and
/// SLI unchanged: (the SLI's error-ratio template, the state).
type IncrementalStates = HashMap<String, (String, Incremental)>;

/// How often the incremental state is checkpointed (and always at shutdown).
const CHECKPOINT_EVERY: Millis = 3_600_000;

/// Incremental states from the store's checkpoints, for SLOs whose SLI is unchanged.
async fn resume_incremental(
    store: &StoreHandle,
    loaded: &Loaded,
    now: Millis,
) -> Result<IncrementalStates> {
    let saved = store.call(|store| store.checkpoint_times()).await?;
    let mut states = IncrementalStates::new();
    for (slo_id, saved_at) in saved {
        if !Incremental::resumable(saved_at, now) {
            tracing::info!(slo = %slo_id, "checkpoint older than the raw horizon; warm-starting instead");
            continue;
        }
        let Some(slo) = loaded
            .slos
            .iter()
            .find(|slo| slo.id == slo_id && incremental_for(loaded.config.strategy, slo))
        else {
            continue;
        };
        // Decoded on the store's thread as it is read: the bytes are never held whole.
        let id = slo_id.clone();
        let decoded = store
            .call(move |store| store.read_checkpoint(&id, Checkpoint::read))
            .await?
            .unwrap_or_else(|| Err("the checkpoint is gone".to_string()));
        match decoded.and_then(|checkpoint| Incremental::resume(slo, checkpoint, now)) {
            Ok(state) => {
                tracing::info!(slo = %slo_id, resumed = state.is_warm(), "incremental state restored from checkpoint");
                states.insert(slo_id, (slo.sli.error_ratio_template(), state));
            }
            Err(error) => {
                tracing::warn!(slo = %slo_id, %error, "ignoring an unreadable checkpoint")
            }
        }
    }
    Ok(states)
}

/// Hands the heap memory freed after a large transient use (a warm start's answers, a
/// checkpoint's chunks) back to the system, so the resident size follows what is live
/// (glibc otherwise keeps freed pages in its arenas for reuse).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live
    // allocation and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc at two arenas. By default every thread that allocates may get an arena
/// of its own (up to 8 per core), and the blocking threads that ingest warm starts and write
/// checkpoints each leave one holding freed pages: at 10,000 instances that was about 70 MiB
/// of resident memory no allocation used. Two arenas serve the daemon's two worker threads.
/// Call before the runtime starts its threads.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The bytes of a checkpoint sent to the store's thread at a time (in flight at most twice:
/// the buffer and its copy on the way).
const CHECKPOINT_CHUNK: usize = 1 << 20;

/// Counts what is written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes into a staged checkpoint through the store's thread (wrapped in a `BufWriter` of
/// [`CHECKPOINT_CHUNK`], so each call carries a chunk).
struct ChunkWriter<'a> {
    store: &'a StoreHandle,
    rowid: i64,
    offset: usize,
}

impl std::io::Write for ChunkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let (rowid, offset, chunk) = (self.rowid, self.offset, bytes.to_vec());
        self.store
            .call_blocking(move |store| store.write_checkpoint_at(rowid, offset, &chunk))
            .map_err(std::io::Error::other)?;
        self.offset += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn checkpoint(store: &StoreHandle, groups: &Groups, now: Millis) -> Result<()> {
    // Encoding 10,000 instances takes a while: off the runtime's worker (its other tasks move
    // to the other worker), one SLO at a time, each written before the next is encoded.
    tokio::task::block_in_place(|| {
        for (slo, state) in groups.incremental_states() {
            // Encoded twice, written never whole: once to count its bytes, once into the
            // staged row a chunk at a time; then kept in one transaction.
            let mut counter = ByteCount(0);
            match state.write_checkpoint(slo, &mut counter) {
                None => continue,
                Some(Err(error)) => {
                    tracing::warn!(slo = %slo.id, %error, "cannot encode the incremental state");
                    continue;
                }
                Some(Ok(())) => {}
            }
            let (id, size) = (slo.id.clone(), counter.0);
            let rowid = store.call_blocking(move |store| store.begin_checkpoint(&id, now, size))?;
            let mut chunks = std::io::BufWriter::with_capacity(
                CHECKPOINT_CHUNK,
                ChunkWriter {
                    store,
                    rowid,
                    offset: 0,
                },
            );
            let written = state
                .write_checkpoint(slo, &mut chunks)
                .unwrap_or_else(|| Err("the state changed while saved".to_string()))
                .and_then(|()| {
                    std::io::Write::flush(&mut chunks).map_err(|error| error.to_string())
                });
            if let Err(error) = written {
                tracing::warn!(slo = %slo.id, %error, "cannot write the checkpoint");
                continue;
            }
            let id = slo.id.clone();
            store.call_blocking(move |store| store.commit_checkpoint(&id, rowid))?;
        }
        for group in groups.iter() {
            let encoded = group
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .encode();
            match encoded {
                Ok(bytes) => {
                    let id = group.slo.id.clone();
                    store.call_blocking(move |store| store.save_history(&id, now, &bytes))?
                }
                Err(error) => {
                    tracing::warn!(slo = %group.slo.id, %error, "cannot encode the history")
                }
            }
        }
        let configured: Vec<String> = groups.iter().map(|group| group.slo.id.clone()).collect();
        store.call_blocking(move |store| {
            let configured: Vec<&str> = configured.iter().map(String::as_str).collect();
            store.retain_checkpoints(&configured)
        })?;
        Ok(())
    })
}

/// The status page's histories from the store; an unreadable one is left out (the page's
/// charts start over, nothing else depends on them).
async fn load_histories(store: &StoreHandle) -> HashMap<String, crate::history::SloHistory> {
    let saved = match store.call(|store| store.load_histories()).await {
        Ok(saved) => saved,
        Err(error) => {
            tracing::warn!(%error, "cannot read the status page's histories");
            return HashMap::new();
        }
    };
    let histories: HashMap<String, crate::history::SloHistory> = saved
        .into_iter()
        .filter_map(
            |(slo_id, bytes)| match crate::history::SloHistory::decode(&bytes) {
                Ok(history) => Some((slo_id, history)),
                Err(error) => {
                    tracing::warn!(slo = %slo_id, %error, "ignoring an unreadable history");
                    None
                }
            },
        )
        .collect();
    tracing::info!(
        slos = histories.len(),
        instances = histories
            .values()
            .map(|history| history.len())
            .sum::<usize>(),
        "status page histories restored"
    );
    histories
}

/// How often the source is asked for its version again once it answered (an upgrade from
/// Prometheus 2 to 3 changes the window arithmetic under a running daemon).
const VERSION_EVERY: Duration = Duration::from_secs(600);

/// Whether to ask the source for its version now: [`VERSION_EVERY`] after the last ask, or
/// the client's [`VERSION_RETRY`] after one that got no version (one ask at a time, not one per cycle
/// while Prometheus is down). A pinned source is asked too: its version is shown.
fn version_due(client: &Client, since_asked: Duration) -> bool {
    let answered = client.source_version().version.is_some();
    let wait = if answered {
        VERSION_EVERY
    } else {
        VERSION_RETRY
    };
    wait <= since_asked
}

/// Asks the source for its version, so windows follow that Prometheus's arithmetic; logs
/// what was found when it changes, and a failure (what was known stays).
async fn detect_source_version(client: Client) {
    let before = client.source_version();
    match client.detect().await {
        Ok(found) if found != before => tracing::info!(
            version = found.version.as_deref().unwrap_or(""),
            semantics = %found.semantics,
            url = client.base_url(),
            reason = %found.reason,
            "Prometheus found"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(
            %error,
            semantics = %before.semantics,
            "Prometheus build info unavailable; evaluating with the semantics known so far"
        ),
    }
}

/// Whether an SLO is evaluated incrementally under the configured strategy.
fn incremental_for(strategy: Strategy, slo: &Slo) -> bool {
    strategy != Strategy::Query && slo.sli.local().is_ok()
}

/// One evaluation of every group at `now` (see [`Groups::evaluate`]), with what `/metrics` and
/// the HTTP face show of it; returns the alert changes. The `slo:*` series are exported by the
/// leader only (`exports_slos`): a dashboard summing them over replicas counts each SLO once.
async fn cycle(
    loaded: &Loaded,
    groups: &mut Groups,
    shared: &Shared,
    now: Millis,
    exports_slos: bool,
) -> Vec<Event> {
    let group::Evaluation {
        events,
        statuses,
        answers,
        missed,
    } = groups
        .evaluate(
            &loaded.client,
            loaded.config.strategy,
            loaded.config.evaluation_interval,
            now,
        )
        .await;
    let slos: Vec<&Slo> = groups.iter().map(|group| &group.slo).collect();
    // One lock for the whole update: a scrape sees one evaluation, with its timestamp.
    if let Ok(mut metrics) = shared.metrics.lock() {
        for (_, answer) in &answers {
            let queries = metrics
                .queries
                .get_or_create(&labels(&[("endpoint", "query")]))
                .clone();
            match answer {
                Ok(snapshot) => {
                    queries.inc_by(snapshot.queries);
                    metrics.samples_touched.inc_by(snapshot.samples_touched);
                    if snapshot.optional_failures > 0 {
                        metrics
                            .query_errors
                            .get_or_create(&labels(&[
                                ("endpoint", "query"),
                                ("reason", "since_firing"),
                            ]))
                            .inc_by(snapshot.optional_failures);
                    }
                }
                Err(error) => {
                    queries.inc();
                    metrics
                        .query_errors
                        .get_or_create(&labels(&[
                            ("endpoint", "query"),
                            ("reason", error.reason()),
                        ]))
                        .inc();
                }
            }
        }
        let exported: &[&Slo] = if exports_slos { &slos } else { &[] };
        metrics.set_slos(
            exported,
            answers
                .iter()
                .filter(|_| exports_slos)
                .flat_map(|(index, answer)| {
                    let slo = slos[*index];
                    answer.iter().flat_map(move |snapshot| {
                        snapshot.instances.keys().map(move |labels| {
                            (slo, labels, move |window| snapshot.measure(labels, window))
                        })
                    })
                }),
        );
        for index in missed {
            metrics
                .slo_evaluations_missed
                .get_or_create(&labels(&[("slo", slos[index].id.as_str())]))
                .inc();
        }
        metrics.last_evaluation.set(now as f64 / 1000.0);
    }
    let mut status = shared.status.write().unwrap_or_else(|e| e.into_inner());
    status.slos = Arc::new(statuses);
    status.source = Some(loaded.client.source_version());
    events
}

/// The status of one SLO evaluated at `now` with these window values per instance, as the
/// HTTP face shows it (the demo's status page).
pub fn evaluated_status(
    slo: &Slo,
    instances: Vec<(InstanceLabels, Vec<(Duration, WindowValue)>)>,
    now: Millis,
) -> SloStatus {
    let mut health = SloHealth::new(now);
    health.health.last_success = Some(now);
    let snapshot = Snapshot {
        instances: instances.into_iter().collect(),
        ..Snapshot::default()
    };
    slo_status(slo, &mut health, Some(&snapshot))
}

/// The status of one SLO from a fresh snapshot, or (without one) as last seen.
fn slo_status(slo: &Slo, health: &mut SloHealth, snapshot: Option<&Snapshot>) -> SloStatus {
    let budget = slo.objective.error_budget();
    if let Some(snapshot) = snapshot {
        health.last_instances = snapshot
            .instances
            .iter()
            .map(|(labels, windows)| instance_status(slo, labels, windows, budget))
            .collect::<Vec<_>>()
            .into();
    }
    let instances = health.last_instances.clone();
    SloStatus {
        id: slo.id.clone(),
        service: slo.service.clone(),
        name: slo.name.clone(),
        objective: slo.objective.percent(),
        period: crate::slo::format_duration(slo.period),
        state: if health.health.last_error.is_some() {
            "stale"
        } else {
            "ok"
        }
        .to_string(),
        last_error: health.health.last_error.clone(),
        last_success: health.health.last_success.map(format_time),
        instances,
    }
}

fn instance_status(
    slo: &Slo,
    labels: &InstanceLabels,
    windows: &[(Duration, WindowValue)],
    budget: f64,
) -> InstanceStatus {
    InstanceStatus {
        labels: labels.iter().cloned().collect(),
        windows: windows
            .iter()
            .map(|(window, value)| WindowStatus {
                window: crate::slo::format_duration(*window),
                error_ratio: finite(value.error_ratio),
                burn_rate: finite(value.error_ratio / budget),
                events: finite(value.total),
            })
            .collect(),
        budget_remaining: windows
            .iter()
            .find(|(window, _)| *window == slo.period)
            .and_then(|(_, value)| finite(1.0 - value.error_ratio / budget)),
        no_data: windows.is_empty().then(|| no_data_reason(slo)),
    }
}

/// Why an instance the total names has no window value: for a latency SLI, its bound matches
/// no bucket (never read as 0% or 100% slow).
fn no_data_reason(slo: &Slo) -> String {
    match &slo.sli {
        crate::slo::Sli::Latency {
            good, threshold, ..
        } => format!(
            "no bucket series of {} has le = {threshold} (in any spelling): the histogram has \
             no bucket at this bound; pick the threshold among its buckets",
            good.metric
        ),
        crate::slo::Sli::NativeLatency { .. } => {
            "Prometheus gave no histogram_fraction for it: the series selected are not native \
             histograms (or convert_classic_histograms_to_nhcb is off)"
                .to_string()
        }
        _ => "no window has two samples of its series".to_string(),
    }
}

/// Steps the "evaluation stale" meta alert over the SLOs stale at `now` (see
/// [`health`]), prints its change, and shows its state to the HTTP face and `/metrics`.
fn update_staleness(
    staleness: &mut Staleness,
    stale: &[StaleSlo],
    now: Millis,
    shared: &Shared,
) -> Option<MetaChange> {
    let change = staleness.step(now, stale);
    if let Some(change) = &change {
        console::emit_meta(change.status.is_firing(), change.since, now, &change.stale);
    }
    {
        // One write: a reader never sees the meta alert firing without the SLOs it names.
        let mut status = shared.status.write().unwrap_or_else(|e| e.into_inner());
        status.stale = staleness.is_firing();
        status.stale_slos = stale.iter().map(|slo| slo.id.clone()).collect();
    }
    if let Ok(metrics) = shared.metrics.lock() {
        metrics.stale.set(i64::from(staleness.is_firing()));
        metrics.stale_slos.set(stale.len() as i64);
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::notify::Silence;
    use crate::notify::matcher::Matcher;

    /// Regression: the meta alert was re-sent to Alertmanager whatever the silences, so a
    /// silence set before it fired still had Alertmanager page with it. Now it follows the
    /// rule of SLO alerts: a silence keeps an alert Alertmanager never heard of from it, and
    /// does not end one Alertmanager was told fires.
    #[test]
    fn the_meta_alert_is_re_sent_as_slo_alerts_are() {
        let now = 1_700_000_000_000;
        let meta = || {
            let stale = [StaleSlo {
                id: "a".to_string(),
                last_answered: Some(now - 60_000),
                watched_since: now - 120_000,
            }];
            Some(outbox::meta_alert(true, now - 60_000, now, "http://bw:9099", &stale).1)
        };
        let silence = Silence {
            id: "maintenance".to_string(),
            matchers: vec![Matcher::parse("service=\"burnwatch\"").unwrap()],
            starts_at: now - 1,
            ends_at: now + 3_600_000,
            comment: String::new(),
            created_by: String::new(),
        };
        let payloads = HashMap::new();
        let resends = |silences: &[Silence], told: &std::collections::HashSet<String>| {
            resend_list(
                &ResendInput {
                    slos: &[],
                    saved: &[],
                    payloads: &payloads,
                    silences,
                    told,
                    now,
                    external_url: "http://bw:9099",
                },
                meta(),
            )
        };
        let never_told = std::collections::HashSet::new();
        let told: std::collections::HashSet<String> =
            [outbox::meta_order_key(&outbox::Sink::Alertmanager)].into();
        let alertnames = |alerts: Vec<serde_json::Value>| -> Vec<String> {
            alerts
                .iter()
                .map(|alert| alert["labels"]["alertname"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            alertnames(resends(&[], &never_told)),
            ["BurnwatchEvaluationStale"]
        );
        assert!(
            resends(std::slice::from_ref(&silence), &never_told).is_empty(),
            "silenced from its start: Alertmanager never heard of it"
        );
        assert_eq!(
            alertnames(resends(&[silence], &told)),
            ["BurnwatchEvaluationStale"],
            "told it fires: a silence mutes, it does not end it"
        );
    }
}
