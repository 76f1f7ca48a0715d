//! Per-SLO evaluation groups, kept the way Prometheus's rules manager keeps rule groups.
//!
//! A [`Group`] owns one SLO as loaded, the source state its windows are read with (the
//! incremental strategy's), its health, and its alerts keyed by (tier, instance labels).
//! [`Groups`] is the manager: every cycle it fetches all groups concurrently and steps each
//! group's alerts over its own answer; a reload builds the new groups and copies each old
//! group's state into the group of the same SLO id (Prometheus's `Group.CopyState`), retiring
//! the alerts that no longer match a (tier, instance) and those of SLOs that are gone.
//!
//! Groups do not wait for each other. A cycle waits three quarters of an evaluation interval
//! for the answers; a fetch still running then goes on in its task. One that ends before the
//! next evaluation is stepped then, at the time it was started for (a slow SLO is evaluated
//! every interval, a little late); one that runs longer (a warm start, which may take up to
//! two minutes) makes its group miss the evaluations until it ends, as a Prometheus rule group
//! that runs past its interval misses iterations, while every other group is evaluated on
//! time and no tick is skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{IncrementalStates, SloHealth, SloStatus, incremental_for, slo_status};
use crate::config::Strategy;
use crate::engine::{Engine, Event, SavedAlert};
use crate::history::SloHistory;
use crate::page::PageSource;
use crate::slo::{Millis, Slo};
use crate::source::incremental::Incremental;
use crate::source::live::{self, Snapshot};
use crate::source::prometheus::{ApiError, Client};

/// One SLO's evaluation group.
pub(super) struct Group {
    pub(super) slo: Slo,
    /// The incremental strategy's state (`None` under the query strategy; taken out while a
    /// fetch holds it).
    incremental: Option<Incremental>,
    pub(super) health: SloHealth,
    /// This SLO's alerts, keyed by (tier, instance labels).
    alerts: Engine,
    /// Its instances' burn rates and alert intervals over the last period, for the status
    /// page (which locks it only to copy what it shows).
    pub(super) history: Arc<Mutex<SloHistory>>,
    /// Its fetch, while one runs (it holds the incremental state meanwhile).
    inflight: Option<Inflight>,
    /// The time of its last evaluation, stepped or held: a late answer for an earlier time is
    /// stepped only if it comes after it.
    evaluated_to: Millis,
}

/// A group's fetch in its task, started for the evaluation at `at`.
struct Inflight {
    at: Millis,
    /// Whether it is a warm start (which may take far longer than a cycle).
    warm_start: bool,
    task: tokio::task::JoinHandle<Fetched>,
}

impl Group {
    /// Closes the history's open alert intervals of alerts no longer firing.
    fn close_ended_spans(&self, now: Millis) {
        let alerts = self.alerts.export();
        let firing: Vec<(&crate::engine::InstanceLabels, crate::slo::TierKind)> = alerts
            .iter()
            .filter(|saved| saved.alert.is_firing())
            .map(|saved| (&saved.labels, saved.tier))
            .collect();
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close_ended(&firing, now);
    }

    fn new(slo: Slo, watched_since: Millis) -> Group {
        Group {
            history: Arc::new(Mutex::new(SloHistory::new(&slo))),
            slo,
            incremental: None,
            health: SloHealth::new(watched_since),
            alerts: Engine::new(),
            inflight: None,
            evaluated_to: Millis::MIN,
        }
    }

    /// Starts this group's fetch for the evaluation at `now` in a task of its own.
    fn start_fetch(
        &mut self,
        client: &Client,
        strategy: Strategy,
        interval: Duration,
        now: Millis,
    ) {
        let extra = self
            .alerts
            .firing_windows(now)
            .remove(self.slo.id.as_str())
            .unwrap_or_default();
        let incremental = self.take_incremental(strategy);
        let warm_start = incremental
            .as_ref()
            .is_some_and(|state| !state.is_warm_at(now));
        let task = tokio::spawn(fetch(
            client.clone(),
            self.slo.clone(),
            incremental,
            extra,
            interval,
            now,
        ));
        self.inflight = Some(Inflight {
            at: now,
            warm_start,
            task,
        });
    }

    /// An evaluation missed while the group's fetch still runs: the health stays as it is,
    /// and the alerts hold their state as for a failed evaluation, so the data a catch-up is
    /// still reading (the hole an outage left) is not taken for no data when it ends.
    fn miss(&mut self, now: Millis) -> (Vec<Event>, SloStatus) {
        tracing::debug!(slo = %self.slo.id, now, "still fetching; this evaluation is missed");
        self.evaluated_to = now;
        self.alerts.hold(now, &self.slo.id);
        (Vec::new(), slo_status(&self.slo, &mut self.health, None))
    }

    /// Takes back what an ended fetch held: its incremental state, and its answer.
    fn settle(&mut self, joined: Result<Fetched, tokio::task::JoinError>) -> Option<Fetched> {
        self.inflight = None;
        let mut fetched = joined
            .inspect_err(|error| {
                tracing::error!(slo = %self.slo.id, %error, "the evaluation task failed; its source state starts over")
            })
            .ok()?;
        if let Some(state) = fetched.incremental.take() {
            self.incremental = Some(state);
        }
        Some(fetched)
    }

    /// The incremental state to fetch with at this cycle, taken out of the group (`None`: the
    /// SLO is queried). One lost with a failed task starts cold.
    fn take_incremental(&mut self, strategy: Strategy) -> Option<Incremental> {
        if !incremental_for(strategy, &self.slo) {
            self.incremental = None;
            return None;
        }
        self.incremental
            .take()
            .or_else(|| Incremental::new(&self.slo).ok())
    }

    /// The status the HTTP face shows while this group's answer is still on its way.
    fn status(&mut self) -> SloStatus {
        slo_status(&self.slo, &mut self.health, None)
    }

    /// Steps the alerts over one answer (or a failed evaluation) at `now`; returns the alert
    /// changes and the status the HTTP face shows.
    fn step(&mut self, now: Millis, answer: Result<&Snapshot, String>) -> (Vec<Event>, SloStatus) {
        self.evaluated_to = now;
        let snapshot = match answer {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(slo = %self.slo.id, %error, "evaluation failed; alerts hold their state");
                self.health.health.last_error = Some(error);
                self.alerts.hold(now, &self.slo.id);
                return (Vec::new(), slo_status(&self.slo, &mut self.health, None));
            }
        };
        self.health.health.last_success = Some(now);
        self.health.health.last_error = None;
        let mut events = Vec::new();
        for labels in snapshot.instances.keys() {
            let id = self.alerts.instance(&self.slo, labels);
            let mut measure = |window: Duration| snapshot.measure(labels, window);
            events.extend(self.alerts.evaluate(now, &self.slo, id, &mut measure));
        }
        // Instances the answer no longer holds: their alerts end after `resolve_timeout`
        // without data, and they are forgotten once inactive.
        events.extend(self.alerts.evaluate_absent(now, &[&self.slo]));
        {
            let budget = self.slo.objective.error_budget();
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            for (labels, windows) in &snapshot.instances {
                history.record(now, labels, windows, budget);
            }
            for event in &events {
                history.note(event);
            }
            history.prune(now);
        }
        let status = slo_status(&self.slo, &mut self.health, Some(snapshot));
        (events, status)
    }
}

/// The manager of every SLO's group, in the configuration's order.
pub(super) struct Groups {
    groups: Vec<Group>,
    /// Whether the last evaluation completed a warm start (its transient memory is then
    /// worth handing back to the system).
    pub(super) warmed: bool,
}

/// What one evaluation of every group gave.
pub(super) struct Evaluation {
    /// The alert changes.
    pub(super) events: Vec<Event>,
    /// Every group's status, in the groups' order.
    pub(super) statuses: Vec<SloStatus>,
    /// The answers of this evaluation, by group index.
    pub(super) answers: Vec<(usize, Result<Snapshot, ApiError>)>,
    /// The groups that missed it, their fetch still running.
    pub(super) missed: Vec<usize>,
}

/// One group's fetch, run as its own task: what it answered, with the state it used.
struct Fetched {
    incremental: Option<Incremental>,
    answer: Result<Snapshot, ApiError>,
    /// Whether this fetch completed a warm start.
    warmed: bool,
}

impl Groups {
    /// The groups of `slos` at start: the saved alerts of each SLO restored into its group
    /// (those of SLOs no longer configured are dropped: their threads are closed apart), and
    /// the checkpointed incremental states of SLOs whose SLI is unchanged. Alerts that no
    /// longer match a tier or the `group_by` are retired; their resolutions are returned.
    pub(super) fn start(
        slos: &[Slo],
        saved: Vec<SavedAlert>,
        mut states: IncrementalStates,
        mut histories: HashMap<String, SloHistory>,
        watched_since: Millis,
        now: Millis,
    ) -> (Groups, Vec<(Slo, Event)>) {
        let mut groups = Groups {
            warmed: false,
            groups: slos
                .iter()
                .map(|slo| Group::new(slo.clone(), watched_since))
                .collect(),
        };
        for group in &mut groups.groups {
            if let Some((template, state)) = states.remove(&group.slo.id)
                && template == group.slo.sli.error_ratio_template()
            {
                group.incremental = Some(state);
            }
            if let Some(history) = histories.remove(&group.slo.id)
                && history.fits(&group.slo)
            {
                group.history = Arc::new(Mutex::new(history));
            }
        }
        let retired = groups.adopt(saved, now);
        (groups, retired)
    }

    /// Makes `saved` (the alert state in the store) every group's alerts, in place of their
    /// own: at start, and when a follower takes the lease and goes on from what the last
    /// leader saved. Alerts that no longer match a tier or the `group_by` are retired; their
    /// resolutions are returned.
    pub(super) fn adopt(&mut self, saved: Vec<SavedAlert>, now: Millis) -> Vec<(Slo, Event)> {
        for group in &mut self.groups {
            group.alerts = Engine::new();
        }
        for alert in saved {
            if let Some(group) = self.find_mut(&alert.slo_id) {
                group.alerts.restore(vec![alert]);
            }
        }
        let mut retired = Vec::new();
        for group in &mut self.groups {
            let slo = std::slice::from_ref(&group.slo);
            retired.extend(group.alerts.retire(now, slo, slo));
            group.close_ended_spans(now);
        }
        retired
    }

    /// A reload to `slos`: each new group takes the state of the old group with its SLO id
    /// (alerts matched by tier and instance labels, the rest retired; the incremental state
    /// when the SLI is unchanged and still evaluated incrementally; the health); the alerts
    /// of SLOs that are gone are retired. Returns the retirements' resolutions.
    pub(super) fn reload(
        &mut self,
        slos: &[Slo],
        strategy: Strategy,
        now: Millis,
    ) -> Vec<(Slo, Event)> {
        let mut old = std::mem::take(&mut self.groups);
        let mut retired = Vec::new();
        for slo in slos {
            let mut group = Group::new(slo.clone(), now);
            if let Some(position) = old.iter().position(|previous| previous.slo.id == slo.id) {
                let previous = old.swap_remove(position);
                retired.extend(group.copy_state(previous, strategy, now));
            }
            self.groups.push(group);
        }
        for mut gone in old {
            if let Some(inflight) = gone.inflight.take() {
                inflight.task.abort();
            }
            let slo = std::slice::from_ref(&gone.slo);
            retired.extend(gone.alerts.retire(now, &[], slo));
        }
        retired
    }

    fn find_mut(&mut self, slo_id: &str) -> Option<&mut Group> {
        self.groups.iter_mut().find(|group| group.slo.id == slo_id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter()
    }

    /// What the status page reads: each SLO as loaded, with its history.
    pub(super) fn page_source(&self) -> PageSource {
        PageSource {
            slos: self
                .groups
                .iter()
                .map(|group| (group.slo.clone(), group.history.clone()))
                .collect(),
        }
    }

    /// Every alert that is not simply inactive, group by group.
    pub(super) fn export(&self) -> Vec<SavedAlert> {
        self.groups
            .iter()
            .flat_map(|group| group.alerts.export())
            .collect()
    }

    /// The incremental state of each group that has one (for checkpoints).
    pub(super) fn incremental_states(&self) -> impl Iterator<Item = (&Slo, &Incremental)> {
        self.groups
            .iter()
            .filter_map(|group| Some((&group.slo, group.incremental.as_ref()?)))
    }

    /// One evaluation at `now`, each group on its own as Prometheus's rule groups are: the
    /// windows of every group without a fetch still running fetched concurrently (each
    /// bounded by the interval, a warm start by two minutes), then each group's alerts
    /// stepped over its answer. The cycle waits three quarters of an interval for the
    /// answers (half of one for a warm start), so that it ends before the next tick whatever
    /// one group's Prometheus queries cost. A fetch still running then goes on in its task:
    /// when it ends before the next evaluation, its group is stepped at the time it was
    /// started for (late, not missed); a fetch that runs past the next evaluation makes its
    /// group, and only it, miss evaluations until it ends. Returns the alert changes, the
    /// groups' statuses, and the answers of this evaluation by group index.
    pub(super) async fn evaluate(
        &mut self,
        client: &Client,
        strategy: Strategy,
        interval: Duration,
        now: Millis,
    ) -> Evaluation {
        self.warmed = false;
        let settled = self.settle_earlier_fetches().await;
        let mut late: Vec<(usize, Millis, Snapshot)> = Vec::new();
        let mut answers: Vec<(usize, Result<Snapshot, ApiError>)> = Vec::new();
        for (index, at, answer) in settled {
            match answer {
                Ok(snapshot) if at > self.groups[index].evaluated_to => {
                    late.push((index, at, snapshot));
                }
                // Stale: the group missed evaluations since; it fetches again now.
                Ok(_) => {}
                // A failure counts at this evaluation.
                Err(error) => answers.push((index, Err(error))),
            }
        }
        let mut lost = Vec::new();
        for (index, group) in self.groups.iter_mut().enumerate() {
            if group.inflight.is_none() && !answers.iter().any(|(answered, _)| *answered == index) {
                group.start_fetch(client, strategy, interval, now);
            }
        }
        let started = tokio::time::Instant::now();
        let deadline = started + interval * 3 / 4;
        let warm_deadline = started + interval / 2;
        let mut in_flight = Vec::new();
        for (index, group) in self.groups.iter_mut().enumerate() {
            let Some(inflight) = group
                .inflight
                .as_mut()
                .filter(|inflight| inflight.at == now)
            else {
                continue;
            };
            let until = if inflight.warm_start {
                warm_deadline
            } else {
                deadline
            };
            // Past it the fetch goes on; the group is stepped when it ends.
            let Ok(joined) = tokio::time::timeout_at(until, &mut inflight.task).await else {
                in_flight.push(index);
                continue;
            };
            match group.settle(joined) {
                Some(fetched) => {
                    self.warmed |= fetched.warmed;
                    answers.push((index, fetched.answer));
                }
                None => lost.push(index),
            }
        }
        answers.sort_by_key(|(index, _)| *index);
        let mut events = Vec::new();
        let mut statuses = Vec::with_capacity(self.groups.len());
        let mut missed = Vec::new();
        for (index, group) in self.groups.iter_mut().enumerate() {
            let mut status = None;
            if let Some((_, at, snapshot)) = late.iter().find(|(answered, ..)| *answered == index) {
                let (changes, late_status) = group.step(*at, Ok(snapshot));
                events.extend(changes);
                status = Some(late_status);
            }
            let current = match answers.iter().find(|(answered, _)| *answered == index) {
                Some((_, Ok(snapshot))) => Some(group.step(now, Ok(snapshot))),
                Some((_, Err(error))) => Some(group.step(now, Err(error.to_string()))),
                None if lost.contains(&index) => {
                    Some(group.step(now, Err("evaluation task failed".to_string())))
                }
                // Its fetch for this evaluation goes on: stepped at the next cycle.
                None if in_flight.contains(&index) => None,
                None if status.is_some() => None,
                None => {
                    missed.push(index);
                    Some(group.miss(now))
                }
            };
            if let Some((changes, current_status)) = current {
                events.extend(changes);
                status = Some(current_status);
            }
            statuses.push(status.unwrap_or_else(|| group.status()));
        }
        answers.extend(
            late.into_iter()
                .map(|(index, _, snapshot)| (index, Ok(snapshot))),
        );
        Evaluation {
            events,
            statuses,
            answers,
            missed,
        }
    }

    /// At shutdown: takes back the state of the fetches that have ended, and stops the rest.
    pub(super) async fn settle_for_shutdown(&mut self) {
        self.settle_earlier_fetches().await;
        for group in &mut self.groups {
            if let Some(inflight) = group.inflight.take() {
                inflight.task.abort();
            }
        }
    }

    /// Takes back the fetches of earlier evaluations that have ended since: their state, and
    /// their answers with the time they were started for.
    async fn settle_earlier_fetches(&mut self) -> Vec<(usize, Millis, Result<Snapshot, ApiError>)> {
        let mut settled = Vec::new();
        for (index, group) in self.groups.iter_mut().enumerate() {
            let Some(inflight) = group
                .inflight
                .take_if(|inflight| inflight.task.is_finished())
            else {
                continue;
            };
            let at = inflight.at;
            let joined = inflight.task.await;
            if let Some(fetched) = group.settle(joined) {
                self.warmed |= fetched.warmed;
                settled.push((index, at, fetched.answer));
            }
        }
        settled
    }
}

impl Group {
    /// Takes over `previous`'s state (the same SLO id, before a reload), as `CopyState` does:
    /// its alerts matched by (tier, instance labels) and the rest retired, its incremental
    /// state if the SLI is unchanged and still incremental, its health.
    fn copy_state(
        &mut self,
        previous: Group,
        strategy: Strategy,
        now: Millis,
    ) -> Vec<(Slo, Event)> {
        self.health = previous.health;
        self.evaluated_to = previous.evaluated_to;
        if incremental_for(strategy, &self.slo)
            && previous.slo.sli.error_ratio_template() == self.slo.sli.error_ratio_template()
            && previous.slo.period == self.slo.period
        {
            self.incremental = previous.incremental;
            // A warm start under way goes on for the reloaded group.
            self.inflight = previous.inflight;
        } else if let Some(inflight) = previous.inflight {
            inflight.task.abort();
        }
        self.alerts = previous.alerts;
        let fits = previous
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fits(&self.slo);
        if fits {
            self.history = previous.history;
        }
        let retired = self.alerts.retire(
            now,
            std::slice::from_ref(&self.slo),
            std::slice::from_ref(&previous.slo),
        );
        self.close_ended_spans(now);
        retired
    }
}

/// Fetches one group's windows at `now` (and `extra` ones, the windows since firing),
/// incrementally with `incremental`, else by query.
async fn fetch(
    client: Client,
    slo: Slo,
    incremental: Option<Incremental>,
    extra: Vec<Duration>,
    interval: Duration,
    now: Millis,
) -> Fetched {
    match incremental {
        Some(mut state) => {
            // A warm start reads the whole period; give it longer than a cycle (what it read
            // is kept if it runs out of time, and the next cycle goes on from there).
            let warm = state.is_warm_at(now);
            let timeout = if warm {
                interval
            } else {
                interval.max(Duration::from_secs(120))
            };
            let answer =
                tokio::time::timeout(timeout, state.fetch(&client, &slo, now, interval, &extra))
                    .await
                    .unwrap_or(Err(ApiError::Timeout));
            Fetched {
                incremental: Some(state),
                warmed: !warm && answer.is_ok(),
                answer,
            }
        }
        None => {
            let answer =
                tokio::time::timeout(interval, live::fetch_by_query(&client, &slo, now, &extra))
                    .await
                    .unwrap_or(Err(ApiError::Timeout));
            Fetched {
                incremental: None,
                answer,
                warmed: false,
            }
        }
    }
}
