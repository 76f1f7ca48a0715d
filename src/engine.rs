//! The one evaluation engine that `replay`, `demo` (and later `serve`) drive: per SLO instance
//! and evaluation time, read every tier, step its alert, apply inhibition, and describe each
//! change with what a person needs to act on it.
//!
//! The engine does no I/O and reads no clock: `now` and a `measure` function (window →
//! window value) are its inputs, so a replay over history is a faithful rehearsal of the daemon.

use std::collections::HashMap;
use std::time::Duration;

use crate::alert::{Alert, Change};
use crate::burn::{self, PairReading, WindowValue};
use crate::slo::{Millis, Slo, TierKind, WindowPair};

/// Labels identifying an SLO instance (the values of its `group_by` labels).
pub type InstanceLabels = Vec<(String, String)>;

/// A change of one alert, with its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Millis,
    pub slo_id: String,
    pub labels: InstanceLabels,
    pub tier: TierKind,
    pub change: Change,
    /// The window pair that tripped (or, when not burning, the one that speaks for the tier),
    /// with its current values.
    pub reading: PairReading,
    /// Share of the period's error budget left.
    pub budget_remaining: f64,
    /// At the long window's burn rate.
    pub time_to_exhaustion: Option<Duration>,
    /// When the incident started firing, for firing, reminder and resolved.
    pub firing_since: Option<Millis>,
    /// Share of the period's error budget this incident has consumed since it fired (its bad
    /// events ÷ the bad events the period allows), for reminder and resolved; `None` where the
    /// source cannot measure the window since firing.
    pub budget_spent: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    alert: Alert,
    /// The pair that tripped when the incident fired, to report on resolve.
    tripped: Option<WindowPair>,
}

/// Alert state of one SLO instance: one entry per tier kind (page, ticket).
#[derive(Debug, Clone)]
struct Instance {
    slo_id: String,
    labels: InstanceLabels,
    tiers: [Entry; 2],
}

/// A handle on an SLO instance registered with [`Engine::instance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(usize);

/// Alert state for every (SLO, instance, tier) the engine has seen.
#[derive(Debug, Default)]
pub struct Engine {
    index: HashMap<(String, InstanceLabels), InstanceId>,
    instances: Vec<Instance>,
}

/// One alert's state as saved across restarts and shown on status pages.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedAlert {
    pub slo_id: String,
    pub labels: InstanceLabels,
    pub tier: TierKind,
    pub alert: Alert,
    pub tripped: Option<WindowPair>,
}

/// The window from an incident's firing time to `now`, in whole seconds (what PromQL's range
/// selectors take), or `None` before a second has passed. Sources are asked for these windows
/// ([`Engine::firing_windows`]) so the engine can measure what an incident has cost.
pub fn since_window(now: Millis, since: Millis) -> Option<Duration> {
    let seconds = (now - since).div_euclid(1000);
    (0 < seconds).then(|| Duration::from_secs(seconds as u64))
}

fn slot(kind: TierKind) -> usize {
    match kind {
        TierKind::Page => 0,
        TierKind::Ticket => 1,
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// The handle of an SLO instance, registering it on first sight.
    pub fn instance(&mut self, slo: &Slo, labels: &InstanceLabels) -> InstanceId {
        let key = (slo.id.clone(), labels.clone());
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        let id = InstanceId(self.instances.len());
        self.instances.push(Instance {
            slo_id: slo.id.clone(),
            labels: labels.clone(),
            tiers: Default::default(),
        });
        self.index.insert(key, id);
        id
    }

    /// Evaluates one SLO instance at `now`. `measure(window)` gives the window value over
    /// `[now - window, now]`, or `None` without data. Page tiers are read before ticket tiers
    /// so that a firing page inhibits the ticket in the same evaluation.
    pub fn evaluate(
        &mut self,
        now: Millis,
        slo: &Slo,
        id: InstanceId,
        measure: &mut impl FnMut(Duration) -> Option<WindowValue>,
    ) -> Vec<Event> {
        let instance = &mut self.instances[id.0];
        let mut changes = Vec::new();
        let mut page_firing = false;
        for kind in [TierKind::Page, TierKind::Ticket] {
            let Some(tier) = slo.tier(kind) else { continue };
            let reading = burn::read_tier(tier, slo.objective, slo.min_events, measure);
            let entry = &mut instance.tiers[slot(kind)];
            let inhibited = kind == TierKind::Ticket && page_firing;
            let firing_before = entry.alert.firing_since();
            let change = entry
                .alert
                .step(now, reading.verdict, &tier.timing, inhibited);
            if entry.alert.is_firing() && firing_before.is_none() {
                entry.tripped = Some(reading.leading_pair().pair);
            }
            if kind == TierKind::Page {
                page_firing = entry.alert.is_firing();
            }
            let Some(change) = change else { continue };
            let pair_reading = match (change, entry.tripped) {
                (Change::Resolved, Some(pair)) => {
                    *reading.pair(pair).unwrap_or(reading.leading_pair())
                }
                _ => *reading.leading_pair(),
            };
            let firing_since = entry.alert.firing_since().or(firing_before);
            changes.push((kind, change, pair_reading, firing_since));
        }
        if changes.is_empty() {
            return Vec::new();
        }
        let period = measure(slo.period);
        let budget_remaining = burn::budget_remaining(period, slo.objective);
        let mut spent = |change: Change, firing_since: Option<Millis>| {
            if !matches!(change, Change::Reminder | Change::Resolved) {
                return None;
            }
            let window = since_window(now, firing_since?)?;
            burn::budget_spent(measure(window)?, window, period, slo.period, slo.objective)
        };
        let mut events = Vec::with_capacity(changes.len());
        for (tier, change, reading, firing_since) in changes {
            if change == Change::Resolved {
                instance.tiers[slot(tier)].tripped = None;
            }
            events.push(Event {
                at: now,
                slo_id: instance.slo_id.clone(),
                labels: instance.labels.clone(),
                tier,
                change,
                reading,
                budget_remaining,
                time_to_exhaustion: burn::time_to_exhaustion(
                    budget_remaining,
                    reading.burn_long,
                    slo.period,
                ),
                firing_since: match change {
                    Change::Firing | Change::Reminder | Change::Resolved => firing_since,
                    Change::Pending | Change::InsufficientData => None,
                },
                budget_spent: spent(change, firing_since),
            });
        }
        events
    }

    /// Per SLO id, the windows since firing of its firing alerts at `now` (see
    /// [`since_window`]): what a source must measure besides the tiers' windows and the
    /// period so that reminders and resolutions can say what the incident cost.
    pub fn firing_windows(&self, now: Millis) -> HashMap<&str, Vec<Duration>> {
        let mut windows: HashMap<&str, Vec<Duration>> = HashMap::new();
        for instance in &self.instances {
            for entry in &instance.tiers {
                if let Some(window) = entry
                    .alert
                    .firing_since()
                    .and_then(|since| since_window(now, since))
                {
                    let known = windows.entry(instance.slo_id.as_str()).or_default();
                    if !known.contains(&window) {
                        known.push(window);
                    }
                }
            }
        }
        windows
    }

    /// Every alert that is not simply inactive, in registration order.
    pub fn export(&self) -> Vec<SavedAlert> {
        let mut saved = Vec::new();
        for instance in &self.instances {
            for kind in [TierKind::Page, TierKind::Ticket] {
                let entry = &instance.tiers[slot(kind)];
                if entry.alert != Alert::default() {
                    saved.push(SavedAlert {
                        slo_id: instance.slo_id.clone(),
                        labels: instance.labels.clone(),
                        tier: kind,
                        alert: entry.alert,
                        tripped: entry.tripped,
                    });
                }
            }
        }
        saved
    }

    /// Restores saved alerts (after a restart), registering their instances.
    pub fn restore(&mut self, saved: Vec<SavedAlert>) {
        for alert in saved {
            let key = (alert.slo_id.clone(), alert.labels.clone());
            let id = match self.index.get(&key) {
                Some(&id) => id,
                None => {
                    let id = InstanceId(self.instances.len());
                    self.instances.push(Instance {
                        slo_id: alert.slo_id,
                        labels: alert.labels,
                        tiers: Default::default(),
                    });
                    self.index.insert(key, id);
                    id
                }
            };
            self.instances[id.0].tiers[slot(alert.tier)] = Entry {
                alert: alert.alert,
                tripped: alert.tripped,
            };
        }
    }

    /// Forgets the alerts of SLOs that no longer exist (after a reload). SLOs whose id is
    /// unchanged keep their state, as Prometheus keeps the state of unchanged rules.
    pub fn retain_slos(&mut self, keep: impl Fn(&str) -> bool) {
        let saved: Vec<SavedAlert> = self
            .export()
            .into_iter()
            .filter(|alert| keep(&alert.slo_id))
            .collect();
        *self = Engine::new();
        self.restore(saved);
    }
}
