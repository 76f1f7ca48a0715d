//! The running daemon: what it holds between cycles, and the four things that happen to it
//! (start, a tick, a reload, stop). `run` in the parent module is the select loop over them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::clock::{Clock, Rehearsal, Ticker, start_rehearsal, wall_clock};
use super::group::Groups;
use super::ha::{Ha, LeaseTask};
use super::health::{self, MetaChange, Staleness};
use super::{
    CHECKPOINT_EVERY, Delivery, Loaded, Options, PlanInput, ReloadRequest, STALE_SINCE, Shared,
    Status, alertmanager_active, checkpoint, cycle, external_url, load,
    remember_alertmanager_payloads, resume_incremental, update_staleness,
};
use crate::config::StateBackend;
use crate::engine::{Event, InstanceLabels, SavedAlert};
use crate::ha::{Fence, Leases};
use crate::metrics::{Metrics, labels};
use crate::notify::{apply, console, outbox};
use crate::slo::{Millis, Slo, TierKind};
use crate::source::prometheus::QueryLoad;
use crate::store::{Fencing, Store, StoreError, StoreHandle};

/// Everything the loop keeps between cycles.
pub(super) struct Daemon {
    options: Options,
    loaded: Loaded,
    store: StoreHandle,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    delivery: Delivery,
    /// The Prometheus client's load gauges, handed to every client a reload builds.
    query_load: QueryLoad,
    /// Every SLO's group: its spec, source state, health and alerts.
    groups: Groups,
    staleness: Staleness,
    rehearsal: Option<Rehearsal>,
    clock: Clock,
    ticker: Ticker,
    last_checkpoint: Millis,
    /// Changes whose save failed, planned again with the next cycle's.
    unsaved: Vec<(Slo, Event)>,
    unsaved_meta: Vec<MetaChange>,
    /// The last full Alertmanager alert of each firing alert, for the re-sends.
    am_payloads: HashMap<(String, InstanceLabels, TierKind), serde_json::Value>,
    /// With PostgreSQL: this replica's standing among the others (None: one SQLite replica,
    /// which always leads).
    ha: Option<Ha>,
    /// When the source's version was last asked for (see `detect_source_version`).
    version_asked: Instant,
}

impl Daemon {
    /// Loads the config, opens the state, restores alert state (closing the incidents of SLOs
    /// no longer configured), starts the HTTP face and the delivery workers.
    pub(super) async fn start(
        options: Options,
        reload_sender: mpsc::Sender<ReloadRequest>,
        shutdown: &CancellationToken,
    ) -> Result<Daemon> {
        let config_path = options.config_path.clone();
        let mut loaded = tokio::task::spawn_blocking(move || load(&config_path)).await??;
        let (store, replica) = open_state(&loaded, &options).await?;
        let database_id = store.call(|store| store.database_id()).await?;
        let rehearsal = match options.rehearse {
            Some(rehearsal) => {
                let state_dir = options.state_dir.clone();
                let started = store
                    .call(move |store| {
                        start_rehearsal(store, rehearsal, &state_dir)
                            .map_err(|error| StoreError::new(format!("{error:#}")))
                    })
                    .await?;
                Some(started)
            }
            None => None,
        };
        let saved = store.call(|store| store.load_alerts()).await?;
        tracing::info!(alerts = saved.len(), "restored alert state");
        if replica.is_none() {
            close_orphaned(&store, &loaded).await?;
        }
        let mut metrics = Metrics::new();
        let ha = replica.map(|(replica, leases, duration)| {
            let metrics = metrics.register_ha();
            Ha {
                lease: LeaseTask::start(
                    leases,
                    replica.clone(),
                    duration,
                    metrics.lease_errors.clone(),
                ),
                replica,
                leading: None,
                refused_epoch: None,
                metrics,
            }
        });
        let query_load = metrics.query_load.clone();
        loaded.client = loaded.client.with_load(query_load.clone());
        let shared = Arc::new(Shared {
            status: RwLock::new(Status::default()),
            metrics: Mutex::new(metrics),
            reload_token: RwLock::new(loaded.reload_token.clone()),
            reloads: reload_sender,
            store: store.clone(),
            config_silences: RwLock::new(loaded.config.notify.silences.clone()),
            max_silences: loaded.config.web.max_silences.into(),
            pages: RwLock::default(),
            ha: RwLock::new(ha.as_ref().map(Ha::status)),
        });
        let listen = options.listen.unwrap_or(loaded.config.listen);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "listening");
        println!("burnwatch listening on http://{address}");
        let mut limits = loaded.config.web;
        limits.max_connections = crate::server::fit_connections(
            limits.max_connections,
            loaded
                .config
                .prometheus
                .as_ref()
                .map_or(0, |prometheus| prometheus.max_concurrency),
        );
        let server = tokio::spawn(crate::server::serve(
            listener,
            shared.clone(),
            limits,
            shutdown.clone(),
        ));
        super::detect_source_version(loaded.client.clone()).await;
        // Alertmanager hears from the leader only.
        let leads: crate::notify::deliver::MaySend = match &ha {
            None => Arc::new(|| true),
            Some(ha) => {
                let view = ha.lease.view.clone();
                Arc::new(move || view.borrow().leads_now())
            }
        };
        let delivery = Delivery::start(&shared, database_id, loaded.sinks.clone(), leads);
        let clock = Clock::new(rehearsal);
        // Alerts that no longer match a configured (SLO, tier, instance labels) end; their
        // resolutions are planned with the first cycle's changes.
        let states = resume_incremental(&store, &loaded, clock.now()).await?;
        let histories = super::load_histories(&store).await;
        // Stale when the last run stopped: the SLOs' silence counts from then, and the meta
        // alert resolves once every SLO has answered.
        let stale_since: Option<Millis> = store
            .call(|store| store.meta(STALE_SINCE))
            .await?
            .and_then(|since| since.parse().ok());
        let watched_since = stale_since.unwrap_or(clock.now()).min(clock.now());
        // Each SLO's group, with its saved alerts and checkpointed state; alerts that no longer
        // match a (tier, instance) end, their resolutions planned with the first cycle's.
        let (groups, retired) = Groups::start(
            &loaded.slos,
            saved,
            states,
            histories,
            watched_since,
            clock.now(),
        );
        *shared.pages.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(groups.page_source());
        let ticker = Ticker::new(&clock, loaded.config.evaluation_interval);
        let mut daemon = Daemon {
            last_checkpoint: clock.now(),
            options,
            loaded,
            store,
            shared,
            server,
            delivery,
            query_load,
            groups,
            staleness: Staleness {
                firing_since: stale_since,
                named: None,
            },
            rehearsal,
            clock,
            ticker,
            // A replica sharing PostgreSQL plans the retirements if and when it leads (it
            // restores the state again then).
            unsaved: if ha.is_some() { Vec::new() } else { retired },
            unsaved_meta: Vec::new(),
            am_payloads: HashMap::new(),
            ha,
            version_asked: Instant::now(),
        };
        if daemon.leads() {
            daemon.recall_alertmanager_payloads().await;
        }
        Ok(daemon)
    }

    /// The payloads Alertmanager was last told of the alerts that fire, read back from the
    /// outbox, so that re-sends after a restart or a change of leader carry the figures the
    /// firing notification had.
    async fn recall_alertmanager_payloads(&mut self) {
        self.am_payloads.clear();
        if self.loaded.config.notify.alertmanager.is_none() {
            return;
        }
        match self.store.call(|store| store.last_told()).await {
            Ok(told) => self.am_payloads = super::told_alertmanager_payloads(told),
            Err(error) => {
                tracing::warn!(%error, "cannot read what Alertmanager was told; re-sends carry no figures until the next change")
            }
        }
    }

    /// Whether this replica saves alert state and plans notifications: always with SQLite,
    /// while it holds the lease with PostgreSQL.
    fn leads(&self) -> bool {
        self.ha.as_ref().is_none_or(|ha| ha.leading.is_some())
    }

    /// The lease task's view, for the loop to wait on its changes (None: SQLite).
    pub(super) fn lease_view(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<crate::daemon::ha::LeaseView>> {
        self.ha.as_ref().map(|ha| ha.lease.view.clone())
    }

    /// Acts on what the lease task learnt: takes over when this replica got the lease (or a
    /// new epoch of it), steps down when it lost it, and shows where it stands.
    pub(super) async fn sync_role(&mut self) {
        let Some(ha) = &self.ha else { return };
        let wanted = ha.wanted();
        if wanted != ha.leading {
            match wanted {
                Some(fence) => self.take_over(fence).await,
                None => self.step_down("this replica does not hold the lease").await,
            }
        }
        if let Some(ha) = &self.ha {
            *self.shared.ha.write().unwrap_or_else(|e| e.into_inner()) = Some(ha.status());
        }
    }

    /// This replica took the lease at `fence`'s epoch: from now on its writes carry the fence,
    /// and it goes on from the alert state the last leader saved (and its evaluation-stale
    /// mark), so nothing re-pages and nothing resolves early. If the store cannot be read it
    /// stays a follower and tries again at the next change or tick.
    async fn take_over(&mut self, fence: Fence) {
        let epoch = fence.epoch;
        let leader = Fencing::Leader(fence.clone());
        let restored = self
            .store
            .call(move |store| {
                store.set_fencing(leader)?;
                Ok((store.load_alerts()?, store.meta(STALE_SINCE)?))
            })
            .await;
        let (saved, stale_since) = match restored {
            Ok(restored) => restored,
            Err(error) => {
                tracing::error!(%error, epoch, "took the lease but cannot read the saved state; following until it can");
                let _ = self
                    .store
                    .call(|store| store.set_fencing(Fencing::Follower))
                    .await;
                return;
            }
        };
        let now = self.clock.now();
        let alerts = saved.len();
        // The first checkpoint comes an interval of checkpoints after taking over, not in the
        // first tick, where it would hold the new leader's first evaluations (the last
        // leader's checkpoint is recent).
        self.last_checkpoint = now;
        self.unsaved = self.groups.adopt(saved, now);
        self.unsaved_meta.clear();
        self.staleness.firing_since = stale_since.and_then(|since| since.parse().ok());
        self.staleness.named = None;
        self.recall_alertmanager_payloads().await;
        if let Some(ha) = &mut self.ha {
            ha.leading = Some(fence);
        }
        if let Err(error) = close_orphaned(&self.store, &self.loaded).await {
            tracing::error!(
                "could not close the incidents of SLOs no longer configured: {error:#}"
            );
        }
        tracing::info!(
            epoch,
            alerts,
            "took the lease: this replica leads, going on from the saved alert state"
        );
    }

    /// This replica no longer leads: its writes are refused from now on (they would be by the
    /// database anyway), what it had not saved is dropped (the leader makes its own changes),
    /// and it stops re-sending to Alertmanager.
    async fn step_down(&mut self, reason: &str) {
        let Some(ha) = &mut self.ha else { return };
        let epoch = ha.leading.take().map(|fence| fence.epoch);
        let _ = self
            .store
            .call(|store| store.set_fencing(Fencing::Follower))
            .await;
        self.unsaved.clear();
        self.unsaved_meta.clear();
        let _ = self.delivery.active.send(Vec::new());
        if epoch.is_some() {
            tracing::warn!(?epoch, reason, "stepped down: this replica follows");
        }
    }

    /// The real time until the next evaluation.
    pub(super) fn until_next_tick(&self) -> Duration {
        self.ticker.wait(&self.clock)
    }

    /// Reloads config and specs: all fallible work first; a bad config is rejected with its
    /// error and the running one keeps going. SLOs whose id is unchanged keep their state.
    pub(super) async fn reload(&mut self) -> Result<(), String> {
        let config_path = self.options.config_path.clone();
        let new = match tokio::task::spawn_blocking(move || load(&config_path)).await {
            Ok(Ok(new)) => new,
            Ok(Err(error)) => {
                tracing::error!("reload rejected, keeping the running configuration: {error:#}");
                return Err(format!("{error:#}"));
            }
            Err(error) => return Err(format!("reload failed: {error}")),
        };
        if new.config.state != self.loaded.config.state {
            let error = "reload rejected, keeping the running configuration: `state` changed; \
                         the state backend changes with a restart only";
            tracing::error!("{error}");
            return Err(error.to_string());
        }
        let ids: Vec<String> = new.slos.iter().map(|slo| slo.id.clone()).collect();
        self.unsaved.retain(|(slo, _)| ids.contains(&slo.id));
        for (slo, _) in &mut self.unsaved {
            if let Some(current) = new.slos.iter().find(|known| known.id == slo.id) {
                *slo = current.clone();
            }
        }
        // Each new group copies the state of the old group of its SLO (alerts matched by
        // (tier, instance labels), the incremental state while the SLI and strategy allow,
        // the health); what no longer matches is retired, its resolutions planned with the
        // next cycle's changes.
        let retired = self
            .groups
            .reload(&new.slos, new.config.strategy, self.clock.now());
        *self.shared.pages.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(self.groups.page_source());
        if new.config.notify.console {
            for (slo, event) in &retired {
                console::emit(slo, event);
            }
        }
        if !retired.is_empty() {
            tracing::info!(alerts = retired.len(), "alerts retired by the reload");
        }
        self.unsaved.extend(retired);
        *self
            .shared
            .reload_token
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new.reload_token.clone();
        *self
            .shared
            .config_silences
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new.config.notify.silences.clone();
        self.shared.max_silences.store(
            new.config.web.max_silences,
            std::sync::atomic::Ordering::Relaxed,
        );
        let _ = self.delivery.sinks.send(new.sinks.clone());
        tracing::info!(slos = new.slos.len(), "configuration reloaded");
        self.loaded = Loaded {
            client: new
                .client
                .with_load(self.query_load.clone())
                .with_version_of(&self.loaded.client),
            ..new
        };
        Ok(())
    }

    /// One evaluation: every SLO read and stepped, the meta alert stepped, alert state and
    /// notifications saved in one transaction, what the HTTP face shows refreshed, the
    /// incremental state checkpointed when due, the next tick scheduled.
    pub(super) async fn tick(&mut self) {
        self.sync_role().await;
        let interval = self.loaded.config.evaluation_interval;
        let Some(now) = self.ticker.evaluation_time(&self.clock, interval) else {
            tracing::warn!(
                "the wall clock went back to before the last evaluation; this tick evaluates nothing"
            );
            self.ticker.after_cycle(&mut self.clock, 0, interval);
            return;
        };
        let started = Instant::now();
        if super::version_due(&self.loaded.client, self.version_asked.elapsed()) {
            self.version_asked = Instant::now();
            tokio::spawn(super::detect_source_version(self.loaded.client.clone()));
        }
        let leads = self.leads();
        let events = cycle(&self.loaded, &mut self.groups, &self.shared, now, leads).await;
        // After a warm start, or answers large enough to leave a high-water mark.
        if self.groups.warmed | crate::source::prometheus::take_large_answers() {
            super::release_freed_memory();
        }
        let stale = health::stale_slos(
            self.groups
                .iter()
                .map(|group| (group.slo.id.as_str(), &group.health.health)),
            now,
            self.loaded.config.stale_after,
        );
        let meta = update_staleness(&mut self.staleness, &stale, now, &self.shared);
        let saved = self.groups.export();
        // A follower's changes are its own view only: the leader saves and notifies.
        if self.leads() {
            self.notify(now, events, meta, &stale, &saved).await;
        }
        self.show(now, &saved, started);
        if self.leads() && CHECKPOINT_EVERY <= now - self.last_checkpoint {
            self.last_checkpoint = now;
            self.checkpoint_and_prune().await;
        }
        let missed = self.ticker.after_cycle(&mut self.clock, now, interval);
        if missed > 0 {
            tracing::warn!(
                missed,
                "a cycle ran past its next evaluations; skipped them"
            );
            if let Ok(metrics) = self.shared.metrics.lock() {
                metrics.missed_evaluations.inc_by(missed);
            }
        }
    }

    /// The leader's part of a cycle: the alert changes (with those whose save failed) shown on
    /// the console, told to Alertmanager's re-sends, and saved with the alert state and their
    /// notifications in one transaction.
    async fn notify(
        &mut self,
        now: Millis,
        events: Vec<Event>,
        meta: Option<MetaChange>,
        stale: &[health::StaleSlo],
        saved: &[SavedAlert],
    ) {
        let mut with_slos: Vec<(Slo, Event)> = std::mem::take(&mut self.unsaved);
        with_slos.extend(events.into_iter().filter_map(|event| {
            let slo = self.loaded.slos.iter().find(|slo| slo.id == event.slo_id)?;
            Some((slo.clone(), event))
        }));
        if self.loaded.config.notify.console {
            for (slo, event) in with_slos.iter().filter(|(_, event)| event.at == now) {
                console::emit(slo, event);
            }
        }
        let external = external_url(&self.loaded, &self.options);
        if self.loaded.config.notify.alertmanager.is_some() {
            remember_alertmanager_payloads(&mut self.am_payloads, &with_slos, &external);
        }
        let mut planner = PlanInput::new(&self.loaded, &self.options, with_slos);
        planner.rehearsal_reached = self.rehearsal.map(|_| now);
        planner.meta = std::mem::take(&mut self.unsaved_meta);
        planner.meta.extend(meta);
        // Alertmanager's re-sends stop carrying a resolved alert before its resolution is
        // committed (its worker may send the resolution at once).
        // The meta alert while it fires, with the SLOs stale now.
        let meta = self
            .staleness
            .firing_since
            .map(|since| outbox::meta_alert(true, since, now, &external, stale).1);
        let active = alertmanager_active(
            &self.loaded,
            &self.options,
            &self.shared,
            saved,
            &self.am_payloads,
            meta,
        )
        .await;
        let _ = self.delivery.active.send(active);
        self.save(planner, saved).await;
    }

    /// Saves the cycle's alert state and queues its notifications, off the runtime's
    /// workers; a failed save keeps the changes for the next cycle's.
    async fn save(&mut self, planner: PlanInput, saved: &[SavedAlert]) {
        let to_save = saved.to_vec();
        let outcome = self
            .store
            .call(move |store| {
                // The outbox keeps real time (retries, silences), also in a rehearsal.
                Ok(planner
                    .save(store, &to_save, wall_clock())
                    .map_err(|error| (error, Box::new(planner))))
            })
            .await;
        match outcome {
            Ok(Ok(planned)) => {
                if let Ok(metrics) = self.shared.metrics.lock() {
                    metrics.notifications_queued.inc_by(planned.queued as u64);
                    metrics
                        .notifications_silenced
                        .inc_by(planned.silenced as u64);
                }
                if planned.silenced > 0 {
                    tracing::info!(silenced = planned.silenced, "alert changes silenced");
                }
                if planned.queued > 0 {
                    self.delivery.wake();
                }
            }
            // The engine has moved on; its changes are planned again with the next cycle's
            // (queueing is idempotent by each change's natural key).
            Ok(Err((error, _))) if error.is_fenced() => {
                // A newer leader exists (this replica was paused, or cut off, past its lease):
                // nothing was written, and this replica's changes are not the ones to keep.
                if let Some(ha) = &mut self.ha {
                    ha.refused_epoch = ha.leading.as_ref().map(|fence| fence.epoch);
                }
                self.step_down(&error.to_string()).await;
                self.sync_role().await;
            }
            Ok(Err((error, planner))) => {
                tracing::error!(%error, "could not persist alert state and notifications; retrying next cycle");
                let planner = *planner;
                self.unsaved = bound_unsaved(planner.events);
                self.unsaved_meta = planner.meta;
                self.unsaved_meta.truncate(MAX_UNSAVED);
            }
            Err(error) => tracing::error!(%error, "could not persist alert state"),
        }
    }

    /// What the HTTP face and `/metrics` show after the cycle at `now`.
    fn show(&self, now: Millis, saved: &[SavedAlert], started: Instant) {
        {
            let mut status = self
                .shared
                .status
                .write()
                .unwrap_or_else(|e| e.into_inner());
            status.alerts = Arc::new(saved.to_vec());
            // Ready once every SLO has answered, or is stale (the meta alert speaks for it).
            let (ready, never) = health::readiness(
                self.groups
                    .iter()
                    .map(|group| (group.slo.id.as_str(), &group.health.health)),
                now,
                self.loaded.config.stale_after,
            );
            status.ready |= ready;
            status.never_evaluated = never;
            status.last_evaluation = Some(now);
        }
        if let Ok(metrics) = self.shared.metrics.lock() {
            metrics
                .cycle_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.alerts.clear();
            for alert in saved {
                let state = alert.alert.state();
                if state == "inactive" {
                    continue;
                }
                metrics
                    .alerts
                    .get_or_create(&labels(&[("tier", alert.tier.as_str()), ("state", state)]))
                    .inc();
            }
        }
    }

    async fn checkpoint_and_prune(&self) {
        if let Err(error) = checkpoint(&self.store, &self.groups, self.clock.now()) {
            tracing::error!("could not checkpoint incremental state: {error:#}");
        }
        super::release_freed_memory();
        let pruned = self
            .store
            .call(|store| store.prune_outbox(wall_clock()))
            .await;
        if let Err(error) = pruned {
            tracing::error!("could not prune the outbox: {error:#}");
        }
    }

    /// Checkpoints, saves the alert state (with any changes whose save failed), lets each
    /// delivery worker finish its request in flight, and waits for the HTTP face to close.
    pub(super) async fn stop(mut self) -> Result<()> {
        // A fetch that ended since the last cycle gives its state back for the checkpoint;
        // one still running (a warm start) is abandoned.
        self.groups.settle_for_shutdown().await;
        let mut failed = None;
        if self.leads() {
            let saved = self.groups.export();
            // Changes whose save failed go with the last save (or the alert state stays as it
            // was, and the next start makes them again).
            let mut planner = PlanInput::new(&self.loaded, &self.options, self.unsaved);
            planner.meta = self.unsaved_meta;
            let count = saved.len();
            let outcome = self
                .store
                .call(move |store| planner.save(store, &saved, wall_clock()))
                .await;
            match outcome {
                Ok(_) => tracing::info!(alerts = count, "alert state saved; shutting down"),
                // A newer leader has it: nothing of this replica's is the state to keep.
                Err(error) if error.is_fenced() => {
                    tracing::warn!(%error, "stepped down: the alert state is the new leader's")
                }
                // The rest of the shutdown still happens (the checkpoint, the lease given up,
                // delivery drained): the error is returned once it has.
                Err(error) => {
                    tracing::error!(%error, "could not save the alert state at shutdown");
                    failed = Some(error);
                }
            }
            // After the alert state, and never in its way: a failed checkpoint costs a warm
            // start.
            if let Err(error) = checkpoint(&self.store, &self.groups, self.clock.now()) {
                tracing::error!("could not checkpoint incremental state: {error:#}");
            }
        }
        // Given up after the last save, so the follower that takes over goes on from it.
        if let Some(ha) = self.ha {
            ha.lease.stop().await;
        }
        self.delivery.stop().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        match failed {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }
}

/// Alert changes kept at most while saves fail (the store is down): beyond this, each alert
/// keeps only its first and its last unsaved change.
const MAX_UNSAVED: usize = 10_000;

/// Bounds the changes kept while saves fail, so that a long store outage does not grow memory
/// without limit: past [`MAX_UNSAVED`], each (SLO, instance, tier) keeps its first change
/// (what opened its incident) and its last (where it stands); the reminders and flaps in
/// between are dropped, said in the log. Past that (more alerts than the bound), the oldest
/// go.
fn bound_unsaved(events: Vec<(Slo, Event)>) -> Vec<(Slo, Event)> {
    if events.len() <= MAX_UNSAVED {
        return events;
    }
    let before = events.len();
    let key = |event: &Event| (event.slo_id.clone(), event.labels.clone(), event.tier);
    let mut first = std::collections::HashMap::new();
    let mut last = std::collections::HashMap::new();
    for (index, (_, event)) in events.iter().enumerate() {
        first.entry(key(event)).or_insert(index);
        last.insert(key(event), index);
    }
    let mut kept: Vec<(Slo, Event)> = events
        .into_iter()
        .enumerate()
        .filter(|(index, (_, event))| {
            let key = key(event);
            first.get(&key) == Some(index) || last.get(&key) == Some(index)
        })
        .map(|(_, change)| change)
        .collect();
    if kept.len() > MAX_UNSAVED {
        kept.drain(..kept.len() - MAX_UNSAVED);
    }
    tracing::error!(
        before,
        kept = kept.len(),
        "saves keep failing: of the unsaved alert changes, each alert keeps its first and last"
    );
    kept
}

/// Opens the state the config names: SQLite under `--state-dir`, or PostgreSQL shared with
/// other replicas (then also this replica's name, the lease client and the lease's duration;
/// the store follows until the lease says otherwise).
async fn open_state(
    loaded: &Loaded,
    options: &Options,
) -> Result<(StoreHandle, Option<(String, Leases, Duration)>)> {
    match &loaded.config.state.backend {
        StateBackend::Sqlite => {
            let state_dir = options.state_dir.clone();
            let store = tokio::task::spawn_blocking(move || Store::open(&state_dir)).await??;
            Ok((StoreHandle::spawn(store)?, None))
        }
        StateBackend::Postgres { url_file, lease } => {
            if options.rehearse.is_some() {
                anyhow::bail!(
                    "--rehearse runs on the SQLite state only (a rehearsal must not share a \
                     live deployment's PostgreSQL state); remove `state` from the config"
                );
            }
            let url = super::read_secret(url_file, "PostgreSQL URL")?;
            let replica = super::ha::replica_id();
            let mut leases = Leases::new(url.expose())?;
            // A replica paused inside a transaction must not hold the lease row past its lease.
            leases.limit_idle_transactions(*lease);
            let named = replica.clone();
            let idle_limit = *lease;
            let store = tokio::task::spawn_blocking(move || {
                let mut store = Store::open_postgres_replica(url.expose(), Some(idle_limit))?;
                store.set_replica(&named);
                store.set_fencing(Fencing::Follower)?;
                Ok::<_, StoreError>(store)
            })
            .await??;
            tracing::info!(%replica, lease = ?lease, "state in PostgreSQL, shared with other replicas");
            Ok((StoreHandle::spawn(store)?, Some((replica, leases, *lease))))
        }
    }
}

/// Closes the Slack threads of SLOs removed from the config while burnwatch was down (their
/// alerts are retired with the tiers and group_bys that changed meanwhile). A leader's write.
async fn close_orphaned(store: &StoreHandle, loaded: &Loaded) -> Result<()> {
    let configured: Vec<String> = loaded.slos.iter().map(|slo| slo.id.clone()).collect();
    let (orphaned, closed) = store
        .call(move |store| {
            let gone = |id: &str| !configured.iter().any(|configured| configured == id);
            let told: Vec<crate::notify::outbox::Told> = store
                .last_told()?
                .into_iter()
                .filter(|told| told.firing() && told.slo_id().is_some_and(gone))
                .collect();
            let mut orphaned: Vec<String> = store
                .open_incident_slos()?
                .into_iter()
                .filter(|id| gone(id))
                .collect();
            for told in &told {
                if let Some(id) = told.slo_id()
                    && !orphaned.iter().any(|orphan| orphan == id)
                {
                    orphaned.push(id.to_string());
                }
            }
            if orphaned.is_empty() {
                return Ok((orphaned, 0));
            }
            let closed = store.save_cycle_notifications(|tx| {
                apply::queue_removed(tx, &orphaned, told, wall_clock())
            })?;
            Ok((orphaned, closed))
        })
        .await?;
    if !orphaned.is_empty() {
        tracing::info!(slos = ?orphaned, closed, "ended the alerts of SLOs no longer configured, in every sink");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Change;
    use crate::notify::fixtures;
    use crate::slo::TierKind;

    /// Regression (hardening): while saves failed, the unsaved changes grew every cycle
    /// without bound. Past the bound each alert keeps its first and last change.
    #[test]
    fn unsaved_changes_are_bounded_keeping_each_alerts_first_and_last() {
        let slo = fixtures::slo("order-service", "https://runbooks.example.com/orders");
        let mut events = Vec::new();
        for cycle in 0..30 {
            for route in 0..500 {
                let change = if cycle == 0 {
                    Change::Firing
                } else {
                    Change::Reminder
                };
                let event = fixtures::event(
                    &slo.id,
                    &format!("/r/{route}"),
                    TierKind::Page,
                    change,
                    1_000 + cycle,
                    1_000,
                );
                events.push((slo.clone(), event));
            }
        }
        assert_eq!(events.len(), 15_000);
        let kept = bound_unsaved(events);
        assert_eq!(kept.len(), 1_000);
        assert!(
            kept[..500]
                .iter()
                .all(|(_, event)| event.change == Change::Firing)
        );
        assert!(kept[500..].iter().all(|(_, event)| event.at == 1_029));
        let small: Vec<(Slo, Event)> = kept[..10].to_vec();
        assert_eq!(bound_unsaved(small.clone()).len(), small.len());
    }
}
