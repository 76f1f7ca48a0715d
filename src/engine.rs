//! The one evaluation engine that `replay`, `demo` (and later `serve`) drive: per SLO instance
//! and evaluation time, read every tier, step its alert, apply inhibition, and describe each
//! change with what a person needs to act on it.
//!
//! The engine does no I/O and reads no clock: `now` and a `measure` function (window →
//! window value) are its inputs, so a replay over history is a faithful rehearsal of the daemon.

use std::collections::HashMap;
use std::time::Duration;

use crate::alert::{Alert, Change};
use crate::burn::{self, PairReading, Verdict, WindowValue};
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
    /// For a resolution: why the alert ended when its burn was not seen to be over (`None`:
    /// it recovered).
    pub ended: Option<Ending>,
}

/// Why an alert ended without its burn being seen to be over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// No data since `since`, for the tier's `resolve_timeout`: the instance vanished (label
    /// churn, a relabel), stopped reporting, or its traffic stopped (0/0 is not a recovery).
    NoData { since: Millis },
    /// A reload removed the tier from the SLO.
    TierRemoved,
    /// A reload removed the SLO.
    SloRemoved,
    /// A reload changed the SLO's `group_by`: the instance no longer exists.
    GroupByChanged,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::NoData { .. } => "no_data",
            Ending::TierRemoved => "tier_removed",
            Ending::SloRemoved => "slo_removed",
            Ending::GroupByChanged => "group_by_changed",
        }
    }

    /// One sentence for people: why the alert ended.
    pub fn describe(self) -> String {
        match self {
            Ending::NoData { since } => format!(
                "No data since {}: the instance vanished, stopped reporting or saw no traffic, so the alert ended without a verdict.",
                crate::replay::format_time(since)
            ),
            Ending::TierRemoved => {
                "The tier was removed from the SLO by a reload, so the alert ended without a verdict.".to_string()
            }
            Ending::SloRemoved => {
                "The SLO was removed from the configuration by a reload, so the alert ended without a verdict.".to_string()
            }
            Ending::GroupByChanged => {
                "The SLO's group_by changed in a reload, so this instance no longer exists and its alert ended without a verdict.".to_string()
            }
        }
    }
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
    /// The last evaluation that read this instance.
    evaluated_at: Option<Millis>,
}

impl Instance {
    fn new(slo_id: String, labels: InstanceLabels) -> Instance {
        Instance {
            slo_id,
            labels,
            tiers: Default::default(),
            evaluated_at: None,
        }
    }

    /// Whether the instance holds nothing worth keeping: every tier inactive.
    fn is_idle(&self) -> bool {
        self.tiers
            .iter()
            .all(|entry| entry.alert == Alert::default())
    }
}

/// A handle on an SLO instance registered with [`Engine::instance`]; valid until the
/// instance is forgotten ([`Engine::evaluate_absent`], [`Engine::retire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(usize);

/// Alert state for every (SLO, instance, tier) the engine holds: the instances in the
/// sources' answers and those absent ones still holding an alert. An absent instance whose
/// alerts are all inactive is forgotten, so label churn does not grow the list.
#[derive(Debug, Default)]
pub struct Engine {
    index: HashMap<(String, InstanceLabels), InstanceId>,
    instances: Vec<Option<Instance>>,
    /// Slots of forgotten instances, reused first.
    free: Vec<usize>,
    /// Per SLO, when its last evaluation failed (the source did not answer): until a tier's
    /// short windows lie past it, no data is the hole that outage left, not absence.
    failed_at: HashMap<String, Millis>,
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

/// Whether, at `now`, every short window of `tier`, `(now − short, now]`, still holds
/// `failed`, a failed evaluation (so none of them can show data the source had while it did
/// not answer).
fn in_outage_hole(now: Millis, failed: Millis, tier: &crate::slo::Tier) -> bool {
    let shortest = tier.windows.iter().map(|pair| pair.short).min();
    shortest.is_some_and(|short| now - crate::slo::millis(short) < failed)
}

fn slot_of(kind: TierKind) -> usize {
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
        self.insert(Instance::new(slo.id.clone(), labels.clone()))
    }

    fn insert(&mut self, instance: Instance) -> InstanceId {
        let key = (instance.slo_id.clone(), instance.labels.clone());
        let id = match self.free.pop() {
            Some(slot) => {
                self.instances[slot] = Some(instance);
                InstanceId(slot)
            }
            None => {
                self.instances.push(Some(instance));
                InstanceId(self.instances.len() - 1)
            }
        };
        self.index.insert(key, id);
        id
    }

    fn forget(&mut self, slot: usize) {
        if let Some(instance) = self.instances[slot].take() {
            self.index.remove(&(instance.slo_id, instance.labels));
            self.free.push(slot);
        }
    }

    fn live(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().flatten()
    }

    /// How many instances the engine holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
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
        let failed_at = self.failed_at.get(&slo.id).copied();
        let instance = self.instances[id.0]
            .as_mut()
            .expect("an instance handle outlived its instance");
        instance.evaluated_at = Some(now);
        let mut changes = Vec::new();
        let mut page_firing = false;
        for kind in [TierKind::Page, TierKind::Ticket] {
            let Some(tier) = slo.tier(kind) else { continue };
            let reading = burn::read_tier(tier, slo.objective, slo.min_events, measure);
            let entry = &mut instance.tiers[slot_of(kind)];
            let inhibited = kind == TierKind::Ticket && page_firing;
            let firing_before = entry.alert.firing_since();
            let absent_before = entry.alert.absent_since();
            let false_before = entry.alert.false_since();
            if reading.verdict == Verdict::NoData
                && entry.alert.is_firing()
                && absent_before.is_none()
                && failed_at.is_some_and(|failed| in_outage_hole(now, failed, tier))
            {
                // Data until the source stopped answering, and every short window still
                // reaches back into that time: the missing samples are the outage's hole,
                // not a vanished instance. The alert holds as at a failed evaluation (an
                // instance already gone before the outage keeps its clock).
                if kind == TierKind::Page {
                    page_firing = true;
                }
                continue;
            }
            // A firing alert judged by other pairs while the pair that tripped it counts no
            // events is not seen to recover: to the alert it is "no traffic".
            let tripped_quiet = entry
                .tripped
                .and_then(|pair| reading.pair(pair))
                .is_some_and(|tripped| {
                    matches!(tripped.verdict, Verdict::NoTraffic | Verdict::NoData)
                });
            let verdict = match reading.verdict {
                Verdict::Ok | Verdict::InsufficientData
                    if entry.alert.is_firing() && tripped_quiet =>
                {
                    Verdict::NoTraffic
                }
                verdict => verdict,
            };
            let change = entry.alert.step(now, verdict, &tier.timing, inhibited);
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
            // Ended without a verdict: at no data; at no traffic unless the burn was seen to
            // be over (an evaluation with traffic, not burning) before the traffic stopped.
            let absent = absent_before.unwrap_or(now);
            let seen_over = false_before.is_some_and(|since| since < absent);
            let ended = (change == Change::Resolved
                && match verdict {
                    Verdict::NoData => true,
                    Verdict::NoTraffic => !seen_over,
                    _ => false,
                })
            .then_some(Ending::NoData { since: absent });
            changes.push((kind, change, pair_reading, firing_since, ended));
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
        for (tier, change, reading, firing_since, ended) in changes {
            if change == Change::Resolved {
                instance.tiers[slot_of(tier)].tripped = None;
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
                ended,
            });
        }
        events
    }

    /// Evaluates, as having no data, every instance of the given SLOs (their evaluation at
    /// `now` succeeded) that the sources' answers no longer hold: its firing alerts end once
    /// they have been without data for `resolve_timeout`, its pending ones drop, and the
    /// instance is forgotten once every alert of it is inactive.
    pub fn evaluate_absent(&mut self, now: Millis, slos: &[&Slo]) -> Vec<Event> {
        let by_id: HashMap<&str, &Slo> = slos.iter().map(|slo| (slo.id.as_str(), *slo)).collect();
        let mut events = Vec::new();
        for slot in 0..self.instances.len() {
            let Some(instance) = &self.instances[slot] else {
                continue;
            };
            if instance.evaluated_at == Some(now) {
                continue;
            }
            let Some(slo) = by_id.get(instance.slo_id.as_str()) else {
                continue;
            };
            events.extend(self.evaluate(now, slo, InstanceId(slot), &mut |_| None));
            if self.instances[slot].as_ref().is_some_and(Instance::is_idle) {
                self.forget(slot);
            }
        }
        events
    }

    /// The evaluation of `slo_id` at `now` failed: its alerts hold as they are. A source
    /// that could not answer leaves a hole in its own data, not a vanished instance: a firing
    /// alert that had data until then starts its hold without data only once the tier's short
    /// windows lie past `now` (until then "no data" holds it as a failed evaluation does).
    pub fn hold(&mut self, now: Millis, slo_id: &str) {
        self.failed_at.insert(slo_id.to_string(), now);
    }

    /// After a reload: matches every alert by (SLO, tier, instance labels) against the
    /// `current` SLOs and retires the rest, as Prometheus's `CopyState` keeps only the state
    /// of rules it finds again. An alert whose SLO is gone, whose tier is gone, or whose
    /// instance's labels no longer fit the SLO's `group_by` ends; the firing ones that were
    /// announced come back as `Resolved` events naming why, with the SLO as it was
    /// (`previous`, else `current`). An SLO gone from both ends silently.
    pub fn retire(&mut self, now: Millis, current: &[Slo], previous: &[Slo]) -> Vec<(Slo, Event)> {
        let mut events = Vec::new();
        for slot in 0..self.instances.len() {
            let Some(instance) = self.instances[slot].as_mut() else {
                continue;
            };
            let found = current.iter().find(|slo| slo.id == instance.slo_id);
            let shaped = |slo: &Slo| {
                let mut names: Vec<&str> = instance
                    .labels
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect();
                let mut wanted: Vec<&str> = slo.group_by.iter().map(String::as_str).collect();
                names.sort_unstable();
                wanted.sort_unstable();
                names == wanted
            };
            let whole = match found {
                None => Some(Ending::SloRemoved),
                Some(slo) if !shaped(slo) => Some(Ending::GroupByChanged),
                Some(_) => None,
            };
            let told = previous
                .iter()
                .find(|slo| slo.id == instance.slo_id)
                .or(found);
            for kind in [TierKind::Page, TierKind::Ticket] {
                let ending = match (whole, found) {
                    (Some(ending), _) => ending,
                    (None, Some(slo)) if slo.tier(kind).is_none() => Ending::TierRemoved,
                    _ => continue,
                };
                let entry = &mut instance.tiers[slot_of(kind)];
                let firing_since = entry.alert.firing_since();
                let tripped = entry.tripped.take();
                if entry.alert.retire() != Some(Change::Resolved) {
                    continue;
                }
                let (Some(slo), Some(pair)) = (told, tripped) else {
                    continue;
                };
                events.push((
                    slo.clone(),
                    Event {
                        at: now,
                        slo_id: instance.slo_id.clone(),
                        labels: instance.labels.clone(),
                        tier: kind,
                        change: Change::Resolved,
                        reading: PairReading::unread(pair),
                        budget_remaining: f64::NAN,
                        time_to_exhaustion: None,
                        firing_since,
                        budget_spent: None,
                        ended: Some(ending),
                    },
                ));
            }
            if instance.is_idle() {
                self.forget(slot);
            }
        }
        events
    }

    /// Per SLO id, the windows since firing of its firing alerts at `now` (see
    /// [`since_window`]): what a source must measure besides the tiers' windows and the
    /// period so that reminders and resolutions can say what the incident cost.
    pub fn firing_windows(&self, now: Millis) -> HashMap<&str, Vec<Duration>> {
        let mut windows: HashMap<&str, Vec<Duration>> = HashMap::new();
        for instance in self.live() {
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

    /// Every alert that is not simply inactive.
    pub fn export(&self) -> Vec<SavedAlert> {
        let mut saved = Vec::new();
        for instance in self.live() {
            for kind in [TierKind::Page, TierKind::Ticket] {
                let entry = &instance.tiers[slot_of(kind)];
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
                None => self.insert(Instance::new(alert.slo_id, alert.labels)),
            };
            if let Some(instance) = self.instances[id.0].as_mut() {
                instance.tiers[slot_of(alert.tier)] = Entry {
                    alert: alert.alert,
                    tripped: alert.tripped,
                };
            }
        }
    }
}
