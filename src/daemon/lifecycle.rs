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
use super::health::{self, MetaChange, Staleness};
use super::{
    CHECKPOINT_EVERY, Delivery, Loaded, Options, PlanInput, ReloadRequest, STALE_SINCE, Shared,
    Status, alertmanager_active, checkpoint, cycle, external_url, load,
    remember_alertmanager_payloads, resume_incremental, update_staleness,
};
use crate::engine::{Event, InstanceLabels, SavedAlert};
use crate::metrics::{Metrics, labels};
use crate::notify::{apply, console, outbox};
use crate::slo::{Millis, Slo, TierKind};
use crate::source::prometheus::QueryLoad;
use crate::store::{Store, StoreError, StoreHandle};

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
        let state_dir = options.state_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&state_dir)).await??;
        let store = StoreHandle::spawn(store)?;
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
        {
            // SLOs removed from the config while burnwatch was down: their Slack threads are
            // closed here (their alerts are retired below, with the tiers and group_bys that
            // changed meanwhile).
            let configured: Vec<String> = loaded.slos.iter().map(|slo| slo.id.clone()).collect();
            let (orphaned, closed) = store
                .call(move |store| {
                    let orphaned: Vec<String> = store
                        .open_incident_slos()?
                        .into_iter()
                        .filter(|id| !configured.contains(id))
                        .collect();
                    if orphaned.is_empty() {
                        return Ok((orphaned, 0));
                    }
                    let closed = store.save_cycle_notifications(|tx| {
                        apply::queue_removed(tx, &orphaned, wall_clock())
                    })?;
                    Ok((orphaned, closed))
                })
                .await?;
            if !orphaned.is_empty() {
                tracing::info!(slos = ?orphaned, closed, "closed the incidents of SLOs no longer configured");
            }
        }
        let metrics = Metrics::new();
        let query_load = metrics.query_load.clone();
        loaded.client = loaded.client.with_load(query_load.clone());
        let shared = Arc::new(Shared {
            status: RwLock::new(Status::default()),
            metrics: Mutex::new(metrics),
            reload_token: RwLock::new(loaded.reload_token.clone()),
            reloads: reload_sender,
            store: store.clone(),
            config_silences: RwLock::new(loaded.config.notify.silences.clone()),
            pages: RwLock::default(),
        });
        let listen = options.listen.unwrap_or(loaded.config.listen);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "listening");
        println!("burnwatch listening on http://{address}");
        let server = tokio::spawn(crate::server::serve(
            listener,
            shared.clone(),
            shutdown.clone(),
        ));
        match loaded.client.build_info().await {
            Ok(info) => {
                tracing::info!(version = %info.version, url = loaded.client.base_url(), "Prometheus found")
            }
            Err(error) => {
                tracing::warn!(%error, "Prometheus build info unavailable; evaluating anyway")
            }
        }
        let delivery = Delivery::start(&shared, database_id, loaded.sinks.clone());
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
        Ok(Daemon {
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
            unsaved: retired,
            unsaved_meta: Vec::new(),
            am_payloads: HashMap::new(),
        })
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
        let _ = self.delivery.sinks.send(new.sinks.clone());
        tracing::info!(slos = new.slos.len(), "configuration reloaded");
        self.loaded = Loaded {
            client: new.client.with_load(self.query_load.clone()),
            ..new
        };
        Ok(())
    }

    /// One evaluation: every SLO read and stepped, the meta alert stepped, alert state and
    /// notifications saved in one transaction, what the HTTP face shows refreshed, the
    /// incremental state checkpointed when due, the next tick scheduled.
    pub(super) async fn tick(&mut self) {
        let interval = self.loaded.config.evaluation_interval;
        let now = self.ticker.evaluation_time(&self.clock, interval);
        let started = Instant::now();
        let events = cycle(&self.loaded, &mut self.groups, &self.shared, now).await;
        if self.groups.warmed {
            super::release_freed_memory();
        }
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
        let stale = health::stale_slos(
            self.groups
                .iter()
                .map(|group| (group.slo.id.as_str(), &group.health.health)),
            now,
            self.loaded.config.stale_after,
        );
        let meta = update_staleness(&mut self.staleness, &stale, now, &self.shared);
        let saved = self.groups.export();
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
            .map(|since| outbox::meta_alert(true, since, now, &external, &stale).1);
        let active = alertmanager_active(
            &self.loaded,
            &self.options,
            &self.shared,
            &saved,
            &self.am_payloads,
            meta,
        )
        .await;
        let _ = self.delivery.active.send(active);
        self.save(planner, &saved).await;
        self.show(now, &saved, started);
        if CHECKPOINT_EVERY <= now - self.last_checkpoint {
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
                    .map_err(|error| (error.to_string(), Box::new(planner))))
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
            Ok(Err((error, planner))) => {
                tracing::error!(%error, "could not persist alert state and notifications; retrying next cycle");
                let planner = *planner;
                self.unsaved = planner.events;
                self.unsaved_meta = planner.meta;
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
        let saved = self.groups.export();
        // Changes whose save failed go with the last save (or the alert state stays as it
        // was, and the next start makes them again).
        let mut planner = PlanInput::new(&self.loaded, &self.options, self.unsaved);
        planner.meta = self.unsaved_meta;
        let count = saved.len();
        self.store
            .call(move |store| planner.save(store, &saved, wall_clock()))
            .await?;
        tracing::info!(alerts = count, "alert state saved; shutting down");
        // After the alert state, and never in its way: a failed checkpoint costs a warm start.
        if let Err(error) = checkpoint(&self.store, &self.groups, self.clock.now()) {
            tracing::error!("could not checkpoint incremental state: {error:#}");
        }
        self.delivery.stop().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        Ok(())
    }
}
