//! Pure alert state machine for one (SLO instance, tier). Time is a parameter; nothing here
//! reads a clock or does I/O.
//!
//! ```text
//! inactive ──burning──► pending ──held for `for`──► firing ──not burning for resolve_timeout──► resolved
//!    ▲                    │                         │  ▲
//!    └─ not burning ──────┘                         └──┘ burning again: same incident, no page
//! ```
//!
//! - Only a "burning" verdict is true. Ok, insufficient data (fewer than `min_events`) and no
//!   traffic (0/0) are "not burning", as in Sloth's rules (0/0 is NaN, NaN > factor is false):
//!   a pending alert is dropped and a firing one counts them towards resolving. No traffic
//!   also marks since when (`absent_since`), so the engine can tell an alert that ended
//!   without traffic from one that recovered.
//! - No data (no pair of the tier has samples in both windows: the source cannot see) drops a
//!   pending alert, as Prometheus drops one at the first empty evaluation, so a gap restarts
//!   `for`; it holds a firing alert as a failed evaluation (which never reaches this machine)
//!   does: no resolving, no reminder, the resolve clock neither advanced nor reset.
//! - Firing resolves at the first evaluation `t` with data where the condition has been not
//!   burning at every evaluation with data since some `t0` and `t − t0 ≥ resolve_timeout`
//!   (Prometheus's `keep_firing_for`).
//! - A reminder goes out at a burning evaluation once `repeat_interval` has passed since the
//!   last firing message or reminder; never while not burning (resolving, low traffic) or
//!   without data.
//! - While inhibited (a firing page inhibits the ticket of the same instance) the alert keeps its
//!   state but sends nothing; a firing alert that was never announced is announced at the
//!   first burning evaluation after the inhibition ends, and resolves silently if it ends
//!   before that.

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
        /// First evaluation of the current run of "not burning", if in one.
        false_since: Option<Millis>,
        /// First evaluation of the current run without data or traffic (the instance vanished,
        /// stopped reporting, or counted no events), if in one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        absent_since: Option<Millis>,
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

    /// `inactive`, `pending`, `firing`, or `resolving` (firing, not burning, not yet for
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

    /// Since when a firing alert has not burned, if it does not now.
    pub fn false_since(&self) -> Option<Millis> {
        match self.phase {
            Phase::Firing { false_since, .. } => false_since,
            _ => None,
        }
    }

    /// Since when a firing alert has had no data or no traffic, if it has none now.
    pub fn absent_since(&self) -> Option<Millis> {
        match self.phase {
            Phase::Firing { absent_since, .. } => absent_since,
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
        // Only "burning" is true. Ok and insufficient data are "not burning", as Sloth's rules
        // compare (NaN > factor is false). No data (no samples at all) drops a pending alert
        // but holds a firing one, as a failed evaluation does.
        let burning = verdict == Verdict::Burning;
        let insufficient = entered_insufficient.then_some(Change::InsufficientData);
        match self.phase {
            Phase::Inactive if burning && timing.for_.is_zero() => self.fire(now, inhibited),
            Phase::Inactive if burning => {
                self.phase = Phase::Pending { since: now };
                Some(Change::Pending)
            }
            Phase::Inactive => insufficient,
            Phase::Pending { since } if burning => {
                if millis(timing.for_) <= now - since {
                    self.fire(now, inhibited)
                } else {
                    None
                }
            }
            // As Prometheus drops a pending alert at the first evaluation that returns
            // nothing: a gap restarts `for`.
            Phase::Pending { .. } => {
                self.phase = Phase::Inactive;
                insufficient
            }
            // No pair of the tier has samples in both windows (the instance vanished, a
            // scrape gap, Prometheus's own hole after an outage): the alert holds for
            // `resolve_timeout` (Prometheus's `keep_firing_for`) without moving its resolve
            // clock or sending anything, then ends.
            Phase::Firing {
                since,
                last_sent,
                false_since,
                absent_since,
            } if verdict == Verdict::NoData => {
                let absent_since = absent_since.unwrap_or(now);
                if millis(timing.resolve_timeout) <= now - absent_since {
                    return self.end();
                }
                self.phase = Phase::Firing {
                    since,
                    last_sent,
                    false_since,
                    absent_since: Some(absent_since),
                };
                None
            }
            Phase::Firing {
                since,
                last_sent,
                false_since,
                absent_since,
            } => {
                // No traffic runs the resolve clock as "not burning" does (Prometheus's
                // `keep_firing_for`), and remembers since when, for the ending's reason.
                let absent_since =
                    (verdict == Verdict::NoTraffic).then(|| absent_since.unwrap_or(now));
                let false_since = if burning {
                    None
                } else {
                    Some(false_since.unwrap_or(now))
                };
                if let Some(false_since) = false_since
                    && millis(timing.resolve_timeout) <= now - false_since
                {
                    return self.end();
                }
                self.phase = Phase::Firing {
                    since,
                    last_sent,
                    false_since,
                    absent_since,
                };
                if inhibited {
                    return None;
                }
                // Announcements and reminders only at an evaluation that burns.
                if burning && (!self.announced || millis(timing.repeat_interval) <= now - last_sent)
                {
                    let change = if self.announced {
                        Change::Reminder
                    } else {
                        Change::Firing
                    };
                    self.announced = true;
                    self.phase = Phase::Firing {
                        since,
                        last_sent: now,
                        false_since,
                        absent_since: None,
                    };
                    return Some(change);
                }
                insufficient
            }
        }
    }

    fn fire(&mut self, now: Millis, inhibited: bool) -> Option<Change> {
        self.phase = Phase::Firing {
            since: now,
            last_sent: now,
            false_since: None,
            absent_since: None,
        };
        self.announced = !inhibited;
        self.announced.then_some(Change::Firing)
    }

    /// Ends the incident: `Resolved` if it was announced (an inhibited one ends silently).
    fn end(&mut self) -> Option<Change> {
        let announced = self.announced;
        *self = Alert {
            insufficient: self.insufficient,
            ..Alert::default()
        };
        announced.then_some(Change::Resolved)
    }

    /// Ends the incident because its tier or SLO is no longer configured (after a reload):
    /// `Resolved` if it was firing and announced; a pending alert is dropped silently.
    pub fn retire(&mut self) -> Option<Change> {
        if self.is_firing() {
            self.end()
        } else {
            *self = Alert::default();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    /// Runs a timeline: a header line `for 2m resolve 5m repeat 4h`, then one line per
    /// evaluation: `<minute> <burning|ok|low|nodata|idle> [inhibited]`. Prints each transition.
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
                "idle" => Verdict::NoTraffic,
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

    /// This used to pin "an evaluation without a decision restarts the resolve clock": here
    /// the alert went back to firing at 5m and resolved at 11m. Now an evaluation without
    /// samples holds the alert as it is, resolving included: the clock started at 1m keeps
    /// running and the alert resolves at the next evaluation with data, 6m.
    #[test]
    fn no_samples_neither_resolves_nor_restarts_the_resolve_clock() {
        check(
            "resolve 5m
             0m burning
             1m ok
             5m nodata
             6m ok",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                1m firing -> resolving
                6m resolving -> inactive  notify(resolved)
            "#]],
        );
    }

    /// Regression (issue 10): without data a firing alert held for ever (an instance that
    /// vanished kept its page open, its thread, its Alertmanager alert). Now it holds for
    /// `resolve_timeout` without data, as Prometheus's `keep_firing_for` does for a series
    /// that is absent, then ends; data back within the hold keeps the incident.
    #[test]
    fn without_data_for_resolve_timeout_a_firing_alert_ends() {
        check(
            "resolve 5m
             0m burning
             1m ok
             2m nodata
             6m nodata
             7m nodata
             8m burning",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                1m firing -> resolving
                7m resolving -> inactive  notify(resolved)
                8m inactive -> firing  notify(firing)
            "#]],
        );
        check(
            "resolve 5m
             0m burning
             2m nodata
             6m nodata
             7m burning
             8m nodata
             12m nodata
             13m nodata",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                13m firing -> inactive  notify(resolved)
            "#]],
        );
        // With no hold, as Prometheus without `keep_firing_for`: the first evaluation
        // without data ends it.
        check(
            "resolve 0s
             0m burning
             1m nodata",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                1m firing -> inactive  notify(resolved)
            "#]],
        );
    }

    #[test]
    fn a_retired_alert_resolves_if_firing_and_announced() {
        let timing = Timing {
            for_: std::time::Duration::from_secs(120),
            resolve_timeout: std::time::Duration::from_secs(300),
            repeat_interval: std::time::Duration::from_secs(3600),
        };
        let mut pending = Alert::default();
        pending.step(0, Verdict::Burning, &timing, false);
        assert_eq!(pending.retire(), None);
        assert_eq!(pending, Alert::default());
        let mut firing = Alert::default();
        firing.step(0, Verdict::Burning, &timing, false);
        firing.step(120_000, Verdict::Burning, &timing, false);
        assert!(firing.is_firing());
        assert_eq!(firing.retire(), Some(Change::Resolved));
        assert_eq!(firing, Alert::default());
        let mut inhibited = Alert::default();
        inhibited.step(0, Verdict::Burning, &timing, true);
        inhibited.step(120_000, Verdict::Burning, &timing, true);
        assert!(inhibited.is_firing());
        assert_eq!(inhibited.retire(), None);
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
        // The inhibition ends while the alert is resolving: nothing is announced unless it
        // burns again before resolving, and then it is announced as firing.
        check(
            "resolve 5m
             0m burning inhibited
             1m ok inhibited
             2m ok
             6m ok",
            expect![[r#"
                0m inactive -> firing
                1m firing -> resolving
                6m resolving -> inactive
            "#]],
        );
        check(
            "resolve 5m
             0m burning inhibited
             1m ok inhibited
             2m ok
             3m burning",
            expect![[r#"
                0m inactive -> firing
                1m firing -> resolving
                3m resolving -> firing  notify(firing)
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

    /// Regression (issue 10): a firing alert whose windows saw no traffic (0/0, a verdict of
    /// insufficient data or ok since the fix in `burn`) or no samples was reminded every
    /// `repeat_interval`. Without samples it still holds (the source cannot see the series,
    /// as after a Prometheus outage), but sends nothing: the reminder that fell due waits for
    /// the next burning evaluation.
    #[test]
    fn firing_alert_without_samples_holds_and_sends_no_reminder() {
        check(
            "resolve 2h repeat 1h
             0m burning
             1m nodata
             6m nodata
             60m nodata
             61m nodata
             62m burning",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                62m firing -> firing  notify(reminder)
            "#]],
        );
    }

    /// No traffic runs the resolve clock as "not burning" does (unlike no data, which holds
    /// it), drops a pending alert, sends no reminder, and marks since when it began.
    #[test]
    fn no_traffic_resolves_on_prometheus_clock_and_marks_its_start() {
        check(
            "resolve 5m repeat 1h for 1m
             0m burning
             1m idle
             2m burning
             3m burning
             4m idle
             5m burning
             6m idle
             11m idle",
            expect![[r#"
                0m inactive -> pending  notify(pending)
                1m pending -> inactive
                2m inactive -> pending  notify(pending)
                3m pending -> firing  notify(firing)
                4m firing -> resolving
                5m resolving -> firing
                6m firing -> resolving
                11m resolving -> inactive  notify(resolved)
            "#]],
        );
        let timing = Timing {
            resolve_timeout: std::time::Duration::from_secs(300),
            ..Timing::default()
        };
        let mut alert = Alert::default();
        alert.step(0, Verdict::Burning, &timing, false);
        alert.step(60_000, Verdict::Ok, &timing, false);
        assert_eq!(alert.absent_since(), None);
        alert.step(120_000, Verdict::NoTraffic, &timing, false);
        alert.step(180_000, Verdict::NoTraffic, &timing, false);
        assert_eq!(
            (alert.false_since(), alert.absent_since()),
            (Some(60_000), Some(120_000))
        );
        alert.step(240_000, Verdict::Ok, &timing, false);
        assert_eq!(alert.absent_since(), None);
    }

    /// Regression (issue 10): an evaluation without data kept a pending alert pending, so `for`
    /// ran across the gap. Prometheus drops a pending alert at the first evaluation whose
    /// expression returns nothing: a gap restarts `for`.
    #[test]
    fn a_gap_resets_a_pending_for() {
        check(
            "for 5m
             0m burning
             2m nodata
             3m burning
             5m burning
             7m burning
             8m burning",
            expect![[r#"
                0m inactive -> pending  notify(pending)
                2m pending -> inactive
                3m inactive -> pending  notify(pending)
                8m pending -> firing  notify(firing)
            "#]],
        );
        // Too little traffic to judge drops a pending alert too (and is reported once).
        check(
            "for 5m
             0m burning
             2m low
             3m burning
             5m burning
             8m burning",
            expect![[r#"
                0m inactive -> pending  notify(pending)
                2m pending -> inactive  notify(insufficient_data)
                3m inactive -> pending  notify(pending)
                8m pending -> firing  notify(firing)
            "#]],
        );
    }

    /// Regression (issue 10): reminders went out every `repeat_interval` whatever the verdict,
    /// including while resolving. A reminder goes out only at an evaluation that burns; one that
    /// fell due while not burning waits for the next burning evaluation.
    #[test]
    fn no_reminder_while_not_burning() {
        check(
            "resolve 2h repeat 1h
             0m burning
             30m ok
             60m ok
             61m low
             62m nodata
             90m burning
             91m burning",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                30m firing -> resolving
                61m resolving -> resolving  notify(insufficient_data)
                90m resolving -> firing  notify(reminder)
            "#]],
        );
    }

    /// Low traffic (fewer than `min_events`) while firing is reported once and counts as not
    /// burning: the alert resolves after `resolve_timeout` unless it burns again.
    #[test]
    fn low_traffic_while_firing_counts_towards_resolving() {
        check(
            "resolve 5m repeat 1h
             0m burning
             1m low
             2m low
             6m low
             61m low",
            expect![[r#"
                0m inactive -> firing  notify(firing)
                1m firing -> resolving  notify(insufficient_data)
                6m resolving -> inactive  notify(resolved)
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
