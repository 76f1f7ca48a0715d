//! Evaluation health per SLO and the "evaluation stale" meta alert, decided without I/O.
//!
//! An SLO is stale when Prometheus has not answered for it for `stale_after`: `now − last
//! success ≥ stale_after`, counting from when burnwatch began to watch it (start, reload, or
//! the persisted start of an earlier staleness) if it never succeeded. Staleness is per SLO, as
//! Prometheus keeps health per rule group: many SLOs each failing now and then are not stale,
//! and one SLO that always fails is stale without holding the others back. The meta alert
//! fires while any SLO is stale, names them and when Prometheus last answered for each, and
//! resolves once none is. Readiness waits for every SLO's first answer, or its staleness.

use std::time::Duration;

pub use crate::notify::outbox::{MetaStatus, StaleSlo};
use crate::slo::{Millis, millis};

/// What the loop remembers of one SLO's evaluations.
#[derive(Debug, Clone)]
pub struct Health {
    /// Since when burnwatch has watched this SLO without an answer it remembers: its
    /// staleness counts from here until the first success.
    pub watched_since: Millis,
    pub last_success: Option<Millis>,
    /// Why the last evaluation failed, if it did.
    pub last_error: Option<String>,
}

impl Health {
    pub fn new(watched_since: Millis) -> Health {
        Health {
            watched_since,
            last_success: None,
            last_error: None,
        }
    }

    /// When Prometheus last answered for this SLO, or since when it has been waited for.
    pub fn silent_since(&self) -> Millis {
        self.last_success.unwrap_or(self.watched_since)
    }

    pub fn is_stale(&self, now: Millis, stale_after: Duration) -> bool {
        millis(stale_after) <= now - self.silent_since()
    }
}

/// The SLOs stale at `now`, in the order given.
pub fn stale_slos<'a>(
    health: impl IntoIterator<Item = (&'a str, &'a Health)>,
    now: Millis,
    stale_after: Duration,
) -> Vec<StaleSlo> {
    health
        .into_iter()
        .filter(|(_, health)| health.is_stale(now, stale_after))
        .map(|(id, health)| StaleSlo {
            id: id.to_string(),
            last_answered: health.last_success,
            watched_since: health.watched_since,
        })
        .collect()
}

/// Whether the daemon is ready: every SLO has answered once, or is stale (the meta alert
/// speaks for it). The ids of those that never answered, for the readiness answer.
pub fn readiness<'a>(
    health: impl IntoIterator<Item = (&'a str, &'a Health)>,
    now: Millis,
    stale_after: Duration,
) -> (bool, Vec<String>) {
    let mut ready = true;
    let mut never = Vec::new();
    for (id, health) in health {
        if health.last_success.is_none() {
            never.push(id.to_string());
            ready &= health.is_stale(now, stale_after);
        }
    }
    (ready, never)
}

/// A change of the meta alert: raised (naming the stale SLOs), the stale SLOs changed while it
/// fires, or resolved. `since`: when Prometheus last answered for the SLO silent the longest,
/// the staleness's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaChange {
    pub status: MetaStatus,
    pub since: Millis,
    /// Evaluation time of the change.
    pub at: Millis,
    /// The stale SLOs when it fires (empty when it resolves).
    pub stale: Vec<StaleSlo>,
}

/// The meta alert's state: firing since when, if it is, and the SLOs it last named (`None`
/// after a restart: the first evaluation names them again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staleness {
    pub firing_since: Option<Millis>,
    pub named: Option<Vec<String>>,
}

impl Staleness {
    pub fn is_firing(&self) -> bool {
        self.firing_since.is_some()
    }

    /// Advances the meta alert given the SLOs stale at `now`.
    pub fn step(&mut self, now: Millis, stale: &[StaleSlo]) -> Option<MetaChange> {
        let names: Vec<String> = stale.iter().map(|slo| slo.id.clone()).collect();
        let named = self.named.replace(names.clone());
        match (self.firing_since, stale.is_empty()) {
            (None, false) => {
                let since = stale
                    .iter()
                    .map(|slo| slo.last_answered.unwrap_or(slo.watched_since))
                    .min()
                    .unwrap_or(now);
                self.firing_since = Some(since);
                Some(MetaChange {
                    status: MetaStatus::Firing,
                    since,
                    at: now,
                    stale: stale.to_vec(),
                })
            }
            (Some(since), true) => {
                self.firing_since = None;
                Some(MetaChange {
                    status: MetaStatus::Resolved,
                    since,
                    at: now,
                    stale: Vec::new(),
                })
            }
            // Still stale, but not the same SLOs: the message names the current ones.
            (Some(since), false) if named.as_ref() != Some(&names) => Some(MetaChange {
                status: MetaStatus::Changed,
                since,
                at: now,
                stale: stale.to_vec(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Millis = 1000;

    /// The meta alert's changes: (cycle, status, the SLOs named).
    type Changes = Vec<(i64, MetaStatus, Vec<String>)>;

    /// Runs `cycles` evaluations one second apart of SLOs whose answers `answers(cycle, slo)`
    /// gives, with `stale_after` 3s; returns the meta alert's changes and when readiness came.
    fn run(
        slos: usize,
        cycles: i64,
        answers: impl Fn(i64, usize) -> bool,
    ) -> (Changes, Option<i64>) {
        let stale_after = Duration::from_secs(3);
        let ids: Vec<String> = (0..slos).map(|index| format!("slo-{index}")).collect();
        let mut health: Vec<Health> = (0..slos).map(|_| Health::new(0)).collect();
        let mut staleness = Staleness::default();
        let mut changes = Vec::new();
        let mut ready_at = None;
        for cycle in 1..=cycles {
            let now = cycle * SECOND;
            for (index, slo) in health.iter_mut().enumerate() {
                if answers(cycle, index) {
                    slo.last_success = Some(now);
                    slo.last_error = None;
                } else {
                    slo.last_error = Some("timeout".to_string());
                }
            }
            let pairs = || ids.iter().map(String::as_str).zip(health.iter());
            let stale = stale_slos(pairs(), now, stale_after);
            if let Some(change) = staleness.step(now, &stale) {
                let names = change.stale.iter().map(|slo| slo.id.clone()).collect();
                changes.push((cycle, change.status, names));
            }
            if ready_at.is_none() && readiness(pairs(), now, stale_after).0 {
                ready_at = Some(cycle);
            }
        }
        (changes, ready_at)
    }

    #[test]
    fn slos_failing_now_and_then_are_never_stale() {
        // Regression: staleness was "some SLO failed in every cycle for stale_after"; 200 SLOs
        // that each fail one cycle in a hundred fail somewhere in nearly every cycle.
        let (changes, ready_at) = run(200, 300, |cycle, slo| (cycle + slo as i64) % 100 != 0);
        assert_eq!(changes, Vec::new());
        assert_eq!(ready_at, Some(2), "slo-99 and slo-199 fail the first cycle");
    }

    #[test]
    fn one_always_failing_slo_is_named_and_does_not_hold_readiness() {
        // Regression: one SLO that always failed kept `/-/ready` at 503 forever.
        let (changes, ready_at) = run(3, 10, |_, slo| slo != 1);
        assert_eq!(
            changes,
            vec![(3, MetaStatus::Firing, vec!["slo-1".to_string()])]
        );
        assert_eq!(ready_at, Some(3));
    }

    #[test]
    fn an_outage_fires_from_the_last_answer_and_resolves_when_all_answer() {
        let mut health = vec![Health::new(0), Health::new(0)];
        health[0].last_success = Some(5 * SECOND);
        health[1].last_success = Some(6 * SECOND);
        let ids = ["a", "b"];
        let stale_after = Duration::from_secs(3);
        let mut staleness = Staleness::default();
        let at = |now: Millis, health: &[Health]| {
            stale_slos(ids.iter().copied().zip(health.iter()), now, stale_after)
        };
        assert_eq!(staleness.step(7 * SECOND, &at(7 * SECOND, &health)), None);
        let fired = staleness
            .step(9 * SECOND, &at(9 * SECOND, &health))
            .expect("fires");
        assert_eq!(
            (fired.status, fired.since, fired.stale.len()),
            (MetaStatus::Firing, 5 * SECOND, 2)
        );
        assert_eq!(fired.stale[1].last_answered, Some(6 * SECOND));
        // The same SLOs stay stale: no new change.
        assert_eq!(staleness.step(9_500, &at(9_500, &health)), None);
        // One answers again: still firing since the same time, naming the other only.
        health[0].last_success = Some(10 * SECOND);
        let changed = staleness
            .step(10 * SECOND, &at(10 * SECOND, &health))
            .expect("the stale SLOs changed");
        assert_eq!(
            (changed.status, changed.since, changed.stale[0].id.as_str()),
            (MetaStatus::Changed, 5 * SECOND, "b")
        );
        assert_eq!(changed.stale.len(), 1);
        assert_eq!(staleness.step(10_500, &at(10_500, &health)), None);
        health[1].last_success = Some(11 * SECOND);
        let resolved = staleness
            .step(11 * SECOND, &at(11 * SECOND, &health))
            .expect("resolves");
        assert_eq!(
            (resolved.status, resolved.since),
            (MetaStatus::Resolved, 5 * SECOND)
        );
        assert!(!staleness.is_firing());
        // After a restart the names are unknown: the first evaluation still stale names them.
        let mut restarted = Staleness {
            firing_since: Some(5 * SECOND),
            named: None,
        };
        health[0].last_success = Some(5 * SECOND);
        let renamed = restarted.step(20 * SECOND, &at(20 * SECOND, &health));
        assert_eq!(
            renamed.map(|change| change.status),
            Some(MetaStatus::Changed)
        );
    }
}
