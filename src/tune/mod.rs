//! `tune`: a sweep over candidate alert policies per SLO and tier, scored on a recording.
//!
//! Window values are computed once per instance and step, for the union of the windows the
//! grid needs ([`Precomputed`]); each candidate is then a pass of a fresh [`Engine`] over
//! those values (its `measure` looks them up; any other window, such as the budget period or
//! a window since firing, is `None`: those only feed the numbers events carry, never a
//! verdict), scored with [`crate::score`] against the same significant events as
//! `replay --score`. Candidates run in parallel over the machine's cores.
//!
//! Tiers are swept one at a time, the other tier as the spec has it: a ticket candidate runs
//! under the current page (which inhibits it, and counts towards its recall); a page
//! candidate runs alone (nothing changes a page's verdicts).

pub mod diff;
pub mod front;
pub mod grid;
pub mod report;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::burn::WindowValue;
use crate::engine::{Engine, InstanceLabels};
use crate::replay::{Consumption, Range, Skipped};
use crate::score::report::{Truth, ground_truth};
use crate::score::{
    AlertSpan, Score, SignificantEvent, TierInput, WorkingHours, alert_spans, html, score,
};
use crate::slo::{Millis, Slo, Tier, TierKind, WindowPair, millis};
use crate::source::openmetrics::Recording;
use crate::source::recorded::RecordedSlo;

pub use front::Summary;
pub use grid::{Grid, Policy};

/// What a sweep scores against.
#[derive(Debug, Clone)]
pub struct Options {
    pub grid: Grid,
    pub truth: Truth,
    pub working_hours: WorkingHours,
}

/// One SLO instance's window values at every step, for every window the grid needs.
#[derive(Debug, Clone)]
pub struct Precomputed {
    pub labels: InstanceLabels,
    windows: Vec<Duration>,
    /// Per window (as `windows`), per step.
    values: Vec<Vec<Option<WindowValue>>>,
    /// The budget consumed, for scoring.
    consumption: Consumption,
    /// Per tier (page, ticket), the significant events.
    events: [Vec<SignificantEvent>; 2],
}

impl Precomputed {
    fn value(&self, window: Duration, step: usize) -> Option<WindowValue> {
        let index = self.windows.iter().position(|known| *known == window)?;
        self.values[index][step]
    }
}

/// One candidate policy and how it did over every instance.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub policy: Policy,
    pub summary: Summary,
}

/// The sweep of one SLO's tier.
#[derive(Debug, Clone)]
pub struct TierSweep {
    pub slo_id: String,
    pub kind: TierKind,
    pub instances: usize,
    /// The current policy first.
    pub candidates: Vec<Candidate>,
    /// Indices into `candidates`.
    pub front: Vec<usize>,
    pub recommended: usize,
}

impl TierSweep {
    pub const CURRENT: usize = 0;

    pub fn current(&self) -> &Candidate {
        &self.candidates[Self::CURRENT]
    }

    pub fn recommendation(&self) -> &Candidate {
        &self.candidates[self.recommended]
    }

    pub fn changes(&self) -> bool {
        self.recommended != Self::CURRENT
    }
}

/// What the sweep cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// The replay measuring budget consumption, and the window values of every instance.
    pub precompute: Duration,
    /// Every candidate over every instance.
    pub candidates: Duration,
    /// Candidate policies evaluated (over all tiers of all SLOs).
    pub policies: usize,
    /// Policy × instance passes over the range.
    pub passes: usize,
    pub instances: usize,
    pub steps: usize,
}

/// One SLO's precomputed instances.
#[derive(Debug, Clone)]
struct SloData {
    slo: Slo,
    instances: Vec<Precomputed>,
}

/// The outcome of a sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub range: Range,
    pub tiers: Vec<TierSweep>,
    pub skipped: Vec<Skipped>,
    pub timings: Timings,
    data: Vec<SloData>,
    times: Vec<Millis>,
}

impl Sweep {
    /// Per instance, the alert spans of the candidate `candidate` of `tier` (for reports that
    /// draw the current and the recommended policy).
    pub fn spans(
        &self,
        tier: &TierSweep,
        candidate: usize,
    ) -> Vec<(InstanceLabels, Vec<AlertSpan>)> {
        let Some(data) = self.data.iter().find(|data| data.slo.id == tier.slo_id) else {
            return Vec::new();
        };
        let slo = candidate_slo(&data.slo, tier.kind, &tier.candidates[candidate].policy);
        data.instances
            .iter()
            .map(|instance| {
                let spans = evaluate(&slo, instance, &self.times);
                (instance.labels.clone(), spans[slot(tier.kind)].clone())
            })
            .collect()
    }

    /// The SLO a tier's sweep belongs to, as the spec has it.
    pub fn slo(&self, slo_id: &str) -> Option<&Slo> {
        self.data
            .iter()
            .map(|data| &data.slo)
            .find(|slo| slo.id == slo_id)
    }
}

fn slot(kind: TierKind) -> usize {
    match kind {
        TierKind::Page => 0,
        TierKind::Ticket => 1,
    }
}

/// `slo` with `policy` for the tier `kind`; for a page, without its ticket tier (which cannot
/// change the page's verdicts), so the pass is cheaper.
fn candidate_slo(slo: &Slo, kind: TierKind, policy: &Policy) -> Slo {
    let mut candidate = policy.apply(slo, kind);
    if kind == TierKind::Page {
        candidate.tiers.retain(|tier| tier.kind == TierKind::Page);
    }
    candidate
}

/// Runs `slo` through a fresh engine over the precomputed values; the alert spans of the page
/// and of the ticket.
pub fn evaluate(slo: &Slo, instance: &Precomputed, times: &[Millis]) -> [Vec<AlertSpan>; 2] {
    let mut engine = Engine::new();
    let id = engine.instance(slo, &instance.labels);
    let mut changes: [Vec<_>; 2] = [Vec::new(), Vec::new()];
    for (step, &now) in times.iter().enumerate() {
        let mut measure = |window: Duration| instance.value(window, step);
        for event in engine.evaluate(now, slo, id, &mut measure) {
            changes[slot(event.tier)].push((event.at, event.change));
        }
    }
    let [page, ticket] = changes;
    [alert_spans(page), alert_spans(ticket)]
}

/// Sweeps every tier of every SLO the recording can replay. `progress` is told the number of
/// policies to evaluate once, then called after each.
pub fn sweep(
    slos: &[Slo],
    recording: &Recording,
    range: Range,
    options: &Options,
    progress: &(dyn Fn(Progress) + Sync),
) -> Sweep {
    let started = Instant::now();
    let times: Vec<Millis> = range.times().collect();
    let (timeline, consumption) =
        crate::replay::run_measuring(slos, recording, range, Some(&options.truth.windows()));
    let plans: Vec<(&Slo, Plan)> = slos
        .iter()
        .filter(|slo| !timeline.skipped.iter().any(|s| s.slo_id == slo.id))
        .map(|slo| (slo, plan(slo, &options.grid)))
        .collect();
    progress(Progress::Total(
        plans
            .iter()
            .flat_map(|(_, tiers)| tiers.iter().map(|(_, c)| c.len() as u64))
            .sum(),
    ));
    let data: Vec<SloData> = plans
        .iter()
        .map(|(slo, tiers)| precompute(slo, tiers, recording, range, &times, &consumption, options))
        .collect();
    let precomputed = Instant::now();
    let mut tiers = Vec::new();
    let mut timings = Timings {
        precompute: precomputed - started,
        instances: data.iter().map(|data| data.instances.len()).sum(),
        steps: times.len(),
        ..Timings::default()
    };
    for ((_, plan), data) in plans.iter().zip(&data) {
        for (kind, policies) in plan {
            let summaries = score_all(data, *kind, policies, range, &times, options, progress);
            timings.policies += policies.len();
            timings.passes += policies.len() * data.instances.len();
            tiers.push(tier_sweep(data, *kind, policies, summaries));
        }
    }
    timings.candidates = precomputed.elapsed();
    Sweep {
        range,
        tiers,
        skipped: timeline.skipped,
        timings,
        data,
        times,
    }
}

/// A sweep's progress: the number of policies, then one more done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Total(u64),
    Done,
}

/// Per tier of an SLO, its candidate policies.
type Plan = Vec<(TierKind, Vec<Policy>)>;

/// The candidates of every tier of `slo`.
fn plan(slo: &Slo, grid: &Grid) -> Plan {
    slo.tiers
        .iter()
        .map(|tier| (tier.kind, grid.get(tier.kind).candidates(slo, tier)))
        .collect()
}

/// `slo` with one tier holding every pair of `policies`: bound to a recording, its instances
/// slide a cursor over each of those windows.
fn measuring_slo(slo: &Slo, tiers: &[(TierKind, Vec<Policy>)]) -> Slo {
    let mut pairs: Vec<WindowPair> = Vec::new();
    for policy in tiers.iter().flat_map(|(_, policies)| policies) {
        for pair in &policy.pairs {
            if !pairs
                .iter()
                .any(|known| known.long == pair.long && known.short == pair.short)
            {
                pairs.push(*pair);
            }
        }
    }
    let mut measuring = slo.clone();
    measuring.tiers = vec![Tier {
        kind: TierKind::Page,
        windows: pairs,
        timing: Default::default(),
        labels: Default::default(),
        annotations: Default::default(),
    }];
    measuring
}

/// Every instance of `slo`'s window values, computed once, in parallel over instances.
fn precompute(
    slo: &Slo,
    tiers: &[(TierKind, Vec<Policy>)],
    recording: &Recording,
    range: Range,
    times: &[Millis],
    consumption: &[Consumption],
    options: &Options,
) -> SloData {
    let measuring = measuring_slo(slo, tiers);
    let windows = measuring.windows();
    let mut bound = RecordedSlo::bind(&measuring, recording)
        .map(|recorded| recorded.instances)
        .unwrap_or_default();
    let instances = parallel_map(&mut bound, |instance| {
        let values = windows
            .iter()
            .map(|&window| {
                times
                    .iter()
                    .map(|&now| instance.measure(recording, now, window))
                    .collect()
            })
            .collect();
        let consumption = consumption
            .iter()
            .find(|c| c.slo_id == slo.id && c.labels == instance.labels)
            .cloned()
            .unwrap_or_else(|| Consumption {
                slo_id: slo.id.clone(),
                labels: instance.labels.clone(),
                per_step: vec![f64::NAN; times.len()],
                rolling: Vec::new(),
                error_ratios: Vec::new(),
            });
        let events = [TierKind::Page, TierKind::Ticket]
            .map(|kind| ground_truth(&options.truth, &consumption, kind, times, range).0);
        Precomputed {
            labels: instance.labels.clone(),
            windows: windows.clone(),
            values,
            consumption,
            events,
        }
    });
    SloData {
        slo: slo.clone(),
        instances,
    }
}

/// `f` over every item, spread over the machine's cores; results in the items' order.
fn parallel_map<T: Send, R: Send>(items: &mut [T], f: impl Fn(&mut T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let chunk = items.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks_mut(chunk)
            .map(|chunk| scope.spawn(|| chunk.iter_mut().map(&f).collect::<Vec<R>>()))
            .collect();
        joined(handles)
    })
}

/// Every worker's results, in the workers' order; a worker's panic goes on in the caller.
fn joined<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, Vec<T>>>) -> Vec<T> {
    handles
        .into_iter()
        .flat_map(|handle| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .collect()
}

/// Scores every policy of one tier over every instance; workers take policies in turn.
fn score_all(
    data: &SloData,
    kind: TierKind,
    policies: &[Policy],
    range: Range,
    times: &[Millis],
    options: &Options,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<Summary> {
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(policies.len().max(1));
    let mut done: Vec<(usize, Summary)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(policy) = policies.get(index) else {
                            break;
                        };
                        let summary = score_policy(data, kind, policy, range, times, options);
                        done.push((index, summary));
                        progress(Progress::Done);
                    }
                    done
                })
            })
            .collect();
        joined(handles)
    });
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, summary)| summary).collect()
}

/// One policy of one tier over every instance of an SLO.
fn score_policy(
    data: &SloData,
    kind: TierKind,
    policy: &Policy,
    range: Range,
    times: &[Millis],
    options: &Options,
) -> Summary {
    let slo = candidate_slo(&data.slo, kind, policy);
    let scores: Vec<_> = data
        .instances
        .iter()
        .map(|instance| score_instance(&slo, kind, instance, range, times, options).0)
        .collect();
    Summary::of(&scores, range.to - range.from)
}

/// One instance under `slo` (a candidate's): the score of its tier `kind`, and that tier's
/// alerts.
fn score_instance(
    slo: &Slo,
    kind: TierKind,
    instance: &Precomputed,
    range: Range,
    times: &[Millis],
    options: &Options,
) -> (Score, Vec<AlertSpan>) {
    let [pages, tickets] = evaluate(slo, instance, times);
    let (alerts, superseding): (&[AlertSpan], &[AlertSpan]) = match kind {
        TierKind::Page => (&pages, &[]),
        TierKind::Ticket => (&tickets, &pages),
    };
    let score = score(&TierInput {
        from: range.from,
        to: range.to,
        times,
        per_step: &instance.consumption.per_step,
        alerts,
        events: &instance.events[slot(kind)],
        superseding,
        working_hours: Some(&options.working_hours),
    });
    (score, alerts.to_vec())
}

impl Sweep {
    /// The HTML report of the sweep: per instance, the error ratio of every window the grid
    /// measured, the significant events, and two policies, "current" and "recommended" (each
    /// tier's recommendation, scored as the sweep scored it).
    pub fn report(&self, options: &Options) -> html::Report {
        let instances = self
            .data
            .iter()
            .flat_map(|data| {
                data.instances
                    .iter()
                    .map(move |instance| self.instance_report(data, instance, options))
            })
            .collect();
        html::Report {
            from: self.range.from,
            step: millis(self.range.step).max(1),
            count: self.times.len(),
            ground_truth: crate::score::report::describe_truth(&options.truth),
            working_hours: options.working_hours.to_string(),
            instances,
        }
    }

    fn instance_report(
        &self,
        data: &SloData,
        instance: &Precomputed,
        options: &Options,
    ) -> html::InstanceReport {
        let tiers: Vec<&TierSweep> = self
            .tiers
            .iter()
            .filter(|tier| tier.slo_id == data.slo.id)
            .collect();
        let policy = |name: &str, pick: &dyn Fn(&TierSweep) -> usize| html::Policy {
            name: name.to_string(),
            tiers: tiers
                .iter()
                .map(|tier| {
                    let policy = &tier.candidates[pick(tier)].policy;
                    let slo = candidate_slo(&data.slo, tier.kind, policy);
                    let (score, alerts) =
                        score_instance(&slo, tier.kind, instance, self.range, &self.times, options);
                    html::PolicyTier {
                        tier: tier.kind,
                        pairs: policy.pairs.clone(),
                        alerts,
                        score: Some(score),
                    }
                })
                .collect(),
        };
        let windows = instance
            .windows
            .iter()
            .zip(&instance.values)
            .map(|(&window, values)| {
                let ratios = values
                    .iter()
                    .map(|value| value.map_or(f64::NAN, |value| value.error_ratio))
                    .collect();
                (window, ratios)
            })
            .collect();
        html::InstanceReport {
            slo_id: data.slo.id.clone(),
            labels: instance.labels.clone(),
            error_budget: data.slo.objective.error_budget(),
            windows,
            events: tiers
                .iter()
                .map(|tier| html::TierEvents {
                    tier: tier.kind,
                    significance: match &options.truth {
                        Truth::Budget(thresholds) => Some(thresholds.get(tier.kind)),
                        Truth::Incidents(_) => None,
                    },
                    events: instance.events[slot(tier.kind)].clone(),
                })
                .collect(),
            policies: vec![
                policy("current", &|_| TierSweep::CURRENT),
                policy("recommended", &|tier| tier.recommended),
            ],
        }
    }
}

fn tier_sweep(
    data: &SloData,
    kind: TierKind,
    policies: &[Policy],
    summaries: Vec<Summary>,
) -> TierSweep {
    let mut front = front::pareto_front(&summaries);
    let current = &policies[TierSweep::CURRENT];
    let recommended = front::recommend(&summaries, &front, TierSweep::CURRENT, |index| {
        policies[index].distance(current)
    });
    // The recommended policy, else the current one, stands for the points equal to it on
    // the front.
    for on in front.iter_mut() {
        for stand_in in [recommended, TierSweep::CURRENT] {
            if summaries[*on].same_point(&summaries[stand_in]) {
                *on = stand_in;
                break;
            }
        }
    }
    TierSweep {
        slo_id: data.slo.id.clone(),
        kind,
        instances: data.instances.len(),
        candidates: policies
            .iter()
            .cloned()
            .zip(summaries)
            .map(|(policy, summary)| Candidate { policy, summary })
            .collect(),
        front,
        recommended,
    }
}

/// The steps of a range that scoring can use: from a full period (the longest of the SLOs')
/// after `first`, the first sample.
pub fn scorable_from(slos: &[Slo], first: Millis) -> Millis {
    first + slos.iter().map(|slo| millis(slo.period)).max().unwrap_or(0)
}
