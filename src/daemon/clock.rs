//! The daemon's time: the wall clock, or a rehearsal's virtual clock; and the ticker that
//! schedules evaluations.
//!
//! Live, evaluations tick on the monotonic clock, aligned to multiples of the interval when
//! the daemon starts (as Prometheus's rule groups tick), and each evaluates at the wall
//! clock's time rounded to the interval. A step of the wall clock (NTP, a VM resumed) moves
//! the evaluation times with it but never stalls the ticks; ticks missed because a cycle ran
//! over are skipped and counted, not run in a burst.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::replay::format_time;
use crate::slo::{Millis, millis};
use crate::store::Store;

/// A rehearsal of the past through the whole daemon: the clock starts at `from` and runs
/// `speed` times faster than real time. Notifications go out for real (to the configured sinks)
/// and are timed by the real clock (retries, silences); alerts and messages by the virtual one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rehearsal {
    pub from: Millis,
    pub speed: f64,
}

/// The daemon's clock: the wall clock, or a rehearsal's. A rehearsal's clock runs `speed`
/// times faster than real time (measured on the monotonic clock), pauses while a cycle runs
/// over (so no evaluation is skipped), and never passes the present: once there, the
/// rehearsal simply goes on live.
#[derive(Debug)]
pub(super) struct Clock {
    rehearsal: Option<Rehearsal>,
    started: Instant,
    /// Virtual time the clock was held back by (overrunning cycles).
    paused: Millis,
}

impl Clock {
    pub(super) fn new(rehearsal: Option<Rehearsal>) -> Clock {
        Clock {
            rehearsal,
            started: Instant::now(),
            paused: 0,
        }
    }

    fn virtual_now(&self, rehearsal: Rehearsal) -> Millis {
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0 * rehearsal.speed;
        rehearsal.from + elapsed.min(1e15) as Millis - self.paused
    }

    pub(super) fn now(&self) -> Millis {
        match self.rehearsal {
            None => wall_clock(),
            Some(rehearsal) => self.virtual_now(rehearsal).min(wall_clock()),
        }
    }

    /// The real time until `at` on this clock. A rehearsal's clock reaches `at` once its
    /// virtual time (at its speed) and the present (which it never passes) both have: a tick
    /// scheduled past the present is waited for in real time, never evaluated early.
    fn until(&self, at: Millis) -> Duration {
        let real = (at - wall_clock()).max(0) as f64;
        let wait = match self.rehearsal {
            None => real,
            Some(rehearsal) => {
                let virtual_wait = (at - self.virtual_now(rehearsal)).max(0) as f64;
                (virtual_wait / rehearsal.speed).max(real)
            }
        };
        Duration::from_millis(wait as u64)
    }

    /// A rehearsal's clock waits for a cycle that ran past `at`: it resumes from `at`.
    fn hold_at(&mut self, at: Millis) {
        if let Some(rehearsal) = self.rehearsal {
            let ahead = self.virtual_now(rehearsal) - at;
            if ahead > 0 {
                self.paused += ahead;
            }
        }
    }
}

/// Schedules evaluations: the real time to wait for the next, and the time it evaluates at.
#[derive(Debug)]
pub(super) struct Ticker {
    /// Live: when the next tick is due on the monotonic clock.
    due: Instant,
    /// Rehearsal: the virtual time of the next tick.
    next_virtual: Millis,
    /// Live: the time the last tick evaluated at.
    last_live: Option<Millis>,
}

impl Ticker {
    pub(super) fn new(clock: &Clock, interval: Duration) -> Ticker {
        let now = clock.now();
        let next_virtual = aligned_after(now, interval);
        Ticker {
            due: Instant::now() + Duration::from_millis((next_virtual - now).max(0) as u64),
            next_virtual,
            last_live: None,
        }
    }

    /// The real time until the next tick.
    pub(super) fn wait(&self, clock: &Clock) -> Duration {
        match clock.rehearsal {
            Some(_) => clock.until(self.next_virtual),
            None => self.due.saturating_duration_since(Instant::now()),
        }
    }

    /// The evaluation time of the tick that is due: a rehearsal's scheduled virtual time, or
    /// the wall clock rounded to the interval; `None`: this tick evaluates nothing (see
    /// [`next_live`]).
    pub(super) fn evaluation_time(&mut self, clock: &Clock, interval: Duration) -> Option<Millis> {
        match clock.rehearsal {
            Some(_) => Some(self.next_virtual),
            None => {
                let at = next_live(self.last_live, wall_clock(), interval)?;
                self.last_live = Some(at);
                Some(at)
            }
        }
    }

    /// Schedules the tick after the cycle that evaluated at `now`; returns how many ticks were
    /// skipped because the cycle ran past them.
    pub(super) fn after_cycle(
        &mut self,
        clock: &mut Clock,
        now: Millis,
        interval: Duration,
    ) -> u64 {
        match clock.rehearsal {
            Some(_) => {
                // A rehearsal's clock waits for the cycle instead: nothing is skipped.
                clock.hold_at(now);
                self.next_virtual = aligned_after(clock.now().max(now), interval);
                0
            }
            None => {
                let (due, missed) = next_due(self.due, Instant::now(), interval);
                self.due = due;
                missed
            }
        }
    }
}

/// The tick after `due` that is still ahead of `now` on the monotonic clock, and how many
/// ticks between them were missed.
fn next_due(due: Instant, now: Instant, interval: Duration) -> (Instant, u64) {
    let interval = interval.max(Duration::from_millis(1));
    let next = due + interval;
    if now < next {
        return (next, 0);
    }
    let behind = now.duration_since(next).as_nanos() / interval.as_nanos();
    let missed = behind as u64 + 1;
    (next + interval * missed as u32, missed)
}

/// `at` rounded to the nearest multiple of `interval`.
/// The time a live tick evaluates at: the wall clock rounded to the interval, if that is
/// after the last tick's. A wall clock stepped back a little (an NTP correction), or a tick
/// that fires early, would round to the last tick's time (or before it) and evaluate a time
/// twice: such a tick evaluates nothing, and the ticks go on once the clock has passed the
/// last time again (never ahead of it). A step back of more than ten intervals is a new time,
/// followed as it is, so evaluation never stalls waiting for the old one.
fn next_live(last: Option<Millis>, wall: Millis, interval: Duration) -> Option<Millis> {
    let at = rounded(wall, interval);
    match last {
        Some(last) if at <= last && last - at < 10 * millis(interval) => None,
        _ => Some(at),
    }
}

fn rounded(at: Millis, interval: Duration) -> Millis {
    let interval = millis(interval).max(1);
    (at + interval / 2).div_euclid(interval) * interval
}

/// The `meta` keys of a rehearsal's state dir: the `--rehearse-from` it was started with, and
/// the last evaluation time saved.
const REHEARSAL_FROM: &str = "rehearsal_from";
pub(super) const REHEARSAL_REACHED: &str = "rehearsal_reached";

/// Checks the state dir for a rehearsal and says where its clock starts. A new state dir is
/// marked as this rehearsal's; a dir this rehearsal (the same `--rehearse-from`) left behind,
/// after a crash or a stop, resumes after its last saved evaluation, Slack threads and all.
/// Anything else is refused: a live daemon's state, or another rehearsal's.
pub(super) fn start_rehearsal(
    store: &mut Store,
    rehearsal: Rehearsal,
    state_dir: &Path,
) -> Result<Rehearsal> {
    let dir = state_dir.display();
    match store.meta(REHEARSAL_FROM)? {
        Some(from) if from == rehearsal.from.to_string() => {
            let reached = store
                .meta(REHEARSAL_REACHED)?
                .and_then(|at| at.parse::<Millis>().ok())
                .unwrap_or(rehearsal.from);
            tracing::info!(from = %format_time(rehearsal.from), resumed_at = %format_time(reached), speed = rehearsal.speed, "resuming the rehearsal");
            Ok(Rehearsal {
                from: reached.max(rehearsal.from),
                speed: rehearsal.speed,
            })
        }
        Some(from) => {
            let from = from.parse::<Millis>().map_or(from.clone(), format_time);
            anyhow::bail!(
                "{dir} holds a rehearsal from {from}: resume it with --rehearse-from {from}, or rehearse {} in a new --state-dir",
                format_time(rehearsal.from)
            )
        }
        None => {
            if !store.load_alerts()?.is_empty() || !store.checkpoint_times()?.is_empty() {
                anyhow::bail!(
                    "{dir} holds the alert state of a live burnwatch: a rehearsal starts from a new --state-dir"
                );
            }
            store.set_meta(REHEARSAL_FROM, &rehearsal.from.to_string())?;
            tracing::info!(from = %format_time(rehearsal.from), speed = rehearsal.speed, "rehearsing the past");
            Ok(rehearsal)
        }
    }
}

/// The first multiple of `interval` after `now` (ticks align to the clock, as Prometheus's do).
fn aligned_after(now: Millis, interval: Duration) -> Millis {
    let interval = millis(interval).max(1);
    (now / interval + 1) * interval
}

pub(super) fn wall_clock() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_skip_what_a_cycle_ran_past_and_evaluation_times_round_to_the_interval() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        // On time: the next tick, nothing missed.
        assert_eq!(
            next_due(start, start + Duration::from_millis(300), second),
            (start + second, 0)
        );
        // A cycle that ran 2.5 intervals: the ticks at +1s and +2s are skipped.
        assert_eq!(
            next_due(start, start + Duration::from_millis(2_500), second),
            (start + 3 * second, 2)
        );
        assert_eq!(rounded(1_700_000_000_400, second), 1_700_000_000_000);
        assert_eq!(rounded(1_700_000_000_600, second), 1_700_000_001_000);
        assert_eq!(
            rounded(1_700_000_029_999, Duration::from_secs(30)),
            1_700_000_040_000
        );
    }

    /// Regression (hardening): a wall clock stepped back a little made two ticks evaluate the
    /// same time (each change planned twice, `for` and reminders counted from a repeated
    /// time).
    #[test]
    fn live_ticks_evaluate_at_strictly_later_times_unless_the_clock_jumps_far_back() {
        let second = Duration::from_secs(1);
        let t = 1_700_000_000_000;
        assert_eq!(next_live(None, t + 300, second), Some(t));
        assert_eq!(next_live(Some(t - 1_000), t + 300, second), Some(t));
        // 400 ms back: it would round to the last tick's time; nothing is evaluated.
        assert_eq!(next_live(Some(t), t - 100, second), None);
        // A few seconds back: nothing until the clock is past the last time again.
        assert_eq!(next_live(Some(t), t - 5_000, second), None);
        assert_eq!(next_live(Some(t), t + 1_000, second), Some(t + 1_000));
        // An hour back: the new time, as it is.
        assert_eq!(
            next_live(Some(t), t - 3_600_000, second),
            Some(t - 3_600_000)
        );
    }

    #[test]
    fn a_rehearsal_clock_runs_fast_pauses_for_overruns_and_stops_at_the_present() {
        let from = 1_700_000_000_000;
        let mut clock = Clock::new(Some(Rehearsal {
            from,
            speed: 1_000.0,
        }));
        std::thread::sleep(Duration::from_millis(20));
        let now = clock.now();
        assert!(now >= from + 20_000, "{}", now - from);
        // A cycle at `now` that ran over: the clock resumes from `now`.
        std::thread::sleep(Duration::from_millis(20));
        clock.hold_at(now);
        assert!(clock.now() - now < 5_000, "{}", clock.now() - now);
        // Waiting for a tick 30 s ahead takes 30 ms of real time at 1000x.
        assert!(clock.until(now + 30_000) <= Duration::from_millis(31));
        // A clock that would pass the present is the wall clock.
        let late = Clock::new(Some(Rehearsal {
            from: wall_clock() - 10,
            speed: 10_000.0,
        }));
        std::thread::sleep(Duration::from_millis(5));
        assert!(late.now() <= wall_clock());
        assert!(late.until(wall_clock() + 1_000) >= Duration::from_millis(900));
        // Regression: a rehearsal a minute behind the present, at 1000x, waited 61 ms for a
        // tick one second past the present and evaluated it a second early.
        let catching_up = Clock::new(Some(Rehearsal {
            from: wall_clock() - 60_000,
            speed: 1_000.0,
        }));
        assert!(catching_up.until(wall_clock() + 1_000) >= Duration::from_millis(900));
        assert!(catching_up.until(wall_clock() - 30_000) <= Duration::from_millis(31));
        // No rehearsal: the wall clock.
        assert!((Clock::new(None).now() - wall_clock()).abs() < 1_000);
    }
}
