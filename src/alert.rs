//! Pure alert state machine for one (SLO instance, tier). Time is a parameter; nothing here
//! reads a clock or does I/O.
//!
//! ```text
//! inactive ──burning──► pending ──held for `for`──► firing ──false for resolve_timeout──► resolved
//!                                                    │  ▲
//!                                                    └──┘ burning again: same incident, no page
//! ```
//!
//! - Firing resolves at the first evaluation `t` where the condition has been false at every
//!   evaluation since some `t0` and `t − t0 ≥ resolve_timeout`. An evaluation without a decision
//!   (no data, low traffic) is not "false": it neither resolves nor counts towards resolving.
//! - While firing, a reminder goes out every `repeat_interval`.
//! - While inhibited (a firing page inhibits the ticket of the same instance) the alert keeps its
//!   state but sends nothing; a firing alert that was never announced is announced when the
//!   inhibition ends, and resolves silently if it ends before that.

use crate::burn::Verdict;
use crate::slo::{Millis, Timing, millis};

/// Why a notification (or a replay event) happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Pending,
    Firing,
    Reminder,
    Resolved,
    InsufficientData,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Pending => "pending",
            Change::Firing => "firing",
            Change::Reminder => "reminder",
            Change::Resolved => "resolved",
            Change::InsufficientData => "insufficient_data",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Inactive,
    Pending {
        since: Millis,
    },
    Firing {
        /// When the incident started firing.
        since: Millis,
        /// When the last firing message or reminder went out.
        last_sent: Millis,
        /// First evaluation of the current run of "condition false", if in one.
        false_since: Option<Millis>,
    },
}

/// The state of one (SLO instance, tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    pub phase: Phase,
    /// Whether the current incident has been announced (it is not while inhibited).
    pub announced: bool,
    /// Whether the last evaluation was `insufficient_data` (to report entering it once).
    pub insufficient: bool,
}

impl Default for Alert {
    fn default() -> Self {
        Alert {
            phase: Phase::Inactive,
            announced: false,
            insufficient: false,
        }
    }
}

impl Alert {
    pub fn is_firing(&self) -> bool {
        matches!(self.phase, Phase::Firing { .. })
    }

    /// `inactive`, `pending`, `firing`, or `resolving` (firing, condition false, not yet for
    /// `resolve_timeout`).
    pub fn state(&self) -> &'static str {
        match self.phase {
            Phase::Inactive => "inactive",
            Phase::Pending { .. } => "pending",
            Phase::Firing {
                false_since: None, ..
            } => "firing",
            Phase::Firing { .. } => "resolving",
        }
    }

    /// When the current incident started firing.
    pub fn firing_since(&self) -> Option<Millis> {
        match self.phase {
            Phase::Firing { since, .. } => Some(since),
            _ => None,
        }
    }

    /// Advances the machine by one evaluation at `now`; returns what a person (or a replay
    /// timeline) should hear about, if anything.
    pub fn step(
        &mut self,
        now: Millis,
        verdict: Verdict,
        timing: &Timing,
        inhibited: bool,
    ) -> Option<Change> {
        let entered_insufficient = verdict == Verdict::InsufficientData && !self.insufficient;
        self.insufficient = verdict == Verdict::InsufficientData;
        match (self.phase, verdict) {
            (Phase::Inactive, Verdict::Burning) if timing.for_.is_zero() => {
                self.fire(now, inhibited)
            }
            (Phase::Inactive, Verdict::Burning) => {
                self.phase = Phase::Pending { since: now };
                Some(Change::Pending)
            }
            (Phase::Inactive, _) => entered_insufficient.then_some(Change::InsufficientData),
            (Phase::Pending { since }, Verdict::Burning) => {
                if millis(timing.for_) <= now - since {
                    self.fire(now, inhibited)
                } else {
                    None
                }
            }
            (Phase::Pending { .. }, Verdict::Ok) => {
                self.phase = Phase::Inactive;
                None
            }
            (Phase::Pending { .. }, _) => entered_insufficient.then_some(Change::InsufficientData),
            (
                Phase::Firing {
                    since,
                    last_sent,
                    false_since,
                },
                verdict,
            ) => {
                let false_since = match verdict {
                    Verdict::Ok => Some(false_since.unwrap_or(now)),
                    _ => None,
                };
                if let Some(false_since) = false_since
                    && millis(timing.resolve_timeout) <= now - false_since
                {
                    let announced = self.announced;
                    *self = Alert {
                        insufficient: self.insufficient,
                        ..Alert::default()
                    };
                    return announced.then_some(Change::Resolved);
                }
                self.phase = Phase::Firing {
                    since,
                    last_sent,
                    false_since,
                };
                if inhibited {
                    return None;
                }
                if !self.announced {
                    self.announced = true;
                    self.phase = Phase::Firing {
                        since,
                        last_sent: now,
                        false_since,
                    };
                    return Some(Change::Firing);
                }
                if millis(timing.repeat_interval) <= now - last_sent {
                    self.phase = Phase::Firing {
                        since,
                        last_sent: now,
                        false_since,
                    };
                    return Some(Change::Reminder);
                }
                if entered_insufficient {
                    return Some(Change::InsufficientData);
                }
                None
            }
        }
    }

    fn fire(&mut self, now: Millis, inhibited: bool) -> Option<Change> {
        self.phase = Phase::Firing {
            since: now,
            last_sent: now,
            false_since: None,
        };
        self.announced = !inhibited;
        self.announced.then_some(Change::Firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    /// Runs a timeline: a header line `for 2m resolve 5m repeat 4h`, then one line per
    /// evaluation: `<minute> <burning|ok|low|nodata> [inhibited]`. Prints each transition.
    fn check(script: &str, expected: Expect) {
        let mut lines = script
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty());
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let setting = |name: &str, default: &str| {
            let value = header
                .iter()
                .position(|word| *word == name)
                .map_or(default, |index| header[index + 1]);
            crate::slo::parse_duration(value).unwrap()
        };
        let timing = Timing {
            for_: setting("for", "0s"),
            resolve_timeout: setting("resolve", "5m"),
            repeat_interval: setting("repeat", "4h"),
        };
        let mut alert = Alert::default();
        let mut out = String::new();
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let minute: i64 = words[0].trim_end_matches('m').parse().unwrap();
            let verdict = match words[1] {
                "burning" => Verdict::Burning,
                "ok" => Verdict::Ok,
                "low" => Verdict::InsufficientData,
                "nodata" => Verdict::NoData,
                other => panic!("unknown verdict {other}"),
            };
            let inhibited = words.get(2) == Some(&"inhibited");
            let before = describe(&alert);
            let change = alert.step(minute * 60_000, verdict, &timing, inhibited);
            let after = describe(&alert);
            if before != after || change.is_some() {
                let note = change
                    .map(|change| format!("  notify({})", change.as_str()))
                    .unwrap_or_default();
                out.push_str(&format!("{minute}m {before} -> {after}{note}\n"));
            }
        }
        expected.assert_eq(&out);
    }

    fn describe(alert: &Alert) -> String {
        match alert.phase {
            Phase::Inactive => "inactive".to_string(),
            Phase::Pending { .. } => "pending".to_string(),
            Phase::Firing {
                false_since: None, ..
            } => "firing".to_string(),
            Phase::Firing {
                false_since: Some(_),
                ..
            } => "resolving".to_string(),
        }
    }

    #[test]
    fn pending_then_firing_then_resolved_after_resolve_timeout() {
        check(
            "for 2m resolve 5m
             0m burning
             1m burning
             2m burning
             3m ok
             7m ok
             8m ok
             9m ok",
            expect![[r#"
                0m inactive -> pending  notify(pending)
                2m pending -> firing  notify(firing)
                3m firing -> resolving
                8m resolving -> inactive  notify(resolved)
            "#]],
        );
    }

    #[test]
    fn pending_that_stops_burning_never_fires() {
        check(
            "for 5m
             0m burning
             3m ok
             4m burning
             8m burning
             9m burning",
            expect![[r#"
                0m inactive -> pending  notify(pending)
                3m pending -> inactive
                4m inactive -> pending  notify(pending)
                9m pending -> firing  notify(firing)
            "#]],
        );
    }

    #[test]
    fn flapping_within_resolve_timeout_is_one_incident() {
        check(
            "resolve 5m
             0m burning
             1m ok
             4m ok
             5m burning
             6m ok
             10m ok
             11m ok",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                1m firing -> resolving
                5m resolving -> firing
                6m firing -> resolving
                11m resolving -> inactive  notify(resolved)
            "#]],
        );
    }

    #[test]
    fn no_decision_holds_firing_and_restarts_the_resolve_clock() {
        check(
            "resolve 5m
             0m burning
             1m ok
             5m nodata
             6m ok
             10m ok
             11m ok",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                1m firing -> resolving
                5m resolving -> firing
                6m firing -> resolving
                11m resolving -> inactive  notify(resolved)
            "#]],
        );
    }

    #[test]
    fn reminders_every_repeat_interval_while_firing() {
        check(
            "repeat 1h
             0m burning
             59m burning
             60m burning
             90m ok
             119m burning
             120m burning
             121m burning",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                60m firing -> firing  notify(reminder)
                90m firing -> resolving
                119m resolving -> firing
                120m firing -> firing  notify(reminder)
            "#]],
        );
    }

    #[test]
    fn inhibited_alert_is_announced_when_inhibition_ends_or_resolves_silently() {
        check(
            "resolve 5m
             0m burning inhibited
             10m burning inhibited
             11m burning
             12m burning",
            expect![[r#"
                0m inactive -> firing
                11m firing -> firing  notify(firing)
            "#]],
        );
        check(
            "resolve 5m
             0m burning inhibited
             1m ok inhibited
             6m ok inhibited
             7m ok",
            expect![[r#"
                0m inactive -> firing
                1m firing -> resolving
                6m resolving -> inactive
            "#]],
        );
    }

    #[test]
    fn low_traffic_is_reported_once_and_never_pages() {
        check(
            "for 0s
             0m low
             1m low
             2m ok
             3m low
             4m low",
            expect![[r#"
                0m inactive -> inactive  notify(insufficient_data)
                3m inactive -> inactive  notify(insufficient_data)
            "#]],
        );
    }

    #[test]
    fn zero_resolve_timeout_resolves_at_the_first_false_evaluation() {
        check(
            "resolve 0s
             0m burning
             1m ok",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                1m firing -> inactive  notify(resolved)
            "#]],
        );
    }
}
