//! Replays recorded history through the engine on a virtual clock: the same decisions the daemon
//! would have made, as a timeline (text for people, JSON for tools).
//!
//! The JSON shape is stable (documented in README.md):
//! `{"from","to","step","events":[{"at","slo","labels","tier","state","window":{"long","short"},
//! "factor","burn_rate":{"long","short"},"error_ratio":{"long","short"},"events":{"bad","total"},
//! "budget_remaining"}]}`; times are RFC 3339 UTC, durations Prometheus-style (`5m`), numbers
//! rounded to 10 significant digits, and NaN (no data) is `null`.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::burn::WindowValue;
use crate::engine::{Engine, Event, InstanceId, InstanceLabels};
use crate::slo::{Millis, Slo, format_duration, millis};
use crate::source::openmetrics::Recording;
use crate::source::recorded::{RecordedInstance, RecordedSlo};
use crate::window::Semantics;

/// One SLO instance of a replay: its SLO, its recorded series, its handle in the engine.
struct Bound<'a> {
    slo: &'a Slo,
    instance: RecordedInstance,
}

/// The SLO instances of a replay, bound to a recording, and the engine's state.
pub struct Replay<'a> {
    bound: Vec<(Bound<'a>, InstanceId)>,
    engine: Engine,
}

/// An SLO a recording cannot replay, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub slo_id: String,
    pub reason: String,
}

/// Binds every SLO that can be evaluated from samples to its instances in the recording; the
/// others are returned with the reason (a raw PromQL SLI of an unrecognised shape, say).
fn bind<'a>(slos: &'a [Slo], recording: &Recording) -> (Vec<Bound<'a>>, Vec<Skipped>) {
    let mut bound = Vec::new();
    let mut skipped = Vec::new();
    for slo in slos {
        match RecordedSlo::bind(slo, recording) {
            Ok(recorded) => bound.extend(
                recorded
                    .instances
                    .into_iter()
                    .map(|instance| Bound { slo, instance }),
            ),
            Err(reason) => skipped.push(Skipped {
                slo_id: slo.id.clone(),
                reason,
            }),
        }
    }
    (bound, skipped)
}

impl<'a> Replay<'a> {
    pub fn new(slos: &'a [Slo], recording: &Recording) -> (Replay<'a>, Vec<Skipped>) {
        let (bound, skipped) = bind(slos, recording);
        let mut engine = Engine::new();
        let bound = bound
            .into_iter()
            .map(|bound| {
                let id = engine.instance(bound.slo, &bound.instance.labels);
                (bound, id)
            })
            .collect();
        (Replay { bound, engine }, skipped)
    }

    /// Evaluates every SLO instance at `now`.
    pub fn step(&mut self, recording: &Recording, now: Millis) -> Vec<Event> {
        let mut events = Vec::new();
        for (bound, id) in &mut self.bound {
            let mut measure = |window: Duration| bound.instance.measure(recording, now, window);
            events.extend(self.engine.evaluate(now, bound.slo, *id, &mut measure));
        }
        events
    }

    pub fn instances(&self) -> usize {
        self.bound.len()
    }

    /// Every alert that is not simply inactive (for status pages).
    pub fn alerts(&self) -> Vec<crate::engine::SavedAlert> {
        self.engine.export()
    }

    /// The instances of one SLO: (index for [`Replay::measure`], labels).
    pub fn instances_of(&self, slo_id: &str) -> Vec<(usize, InstanceLabels)> {
        self.bound
            .iter()
            .enumerate()
            .filter(|(_, (bound, _))| bound.slo.id == slo_id)
            .map(|(index, (bound, _))| (index, bound.instance.labels.clone()))
            .collect()
    }

    /// The current window value of an instance, for status displays.
    pub fn measure(
        &mut self,
        recording: &Recording,
        instance: usize,
        now: Millis,
        window: Duration,
    ) -> Option<WindowValue> {
        self.bound[instance]
            .0
            .instance
            .measure(recording, now, window)
    }
}

/// The time range and step of a replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub from: Millis,
    pub to: Millis,
    pub step: Duration,
}

/// The most evaluation steps one replay takes: a little under two years at the default 1m step,
/// about a quarter at 10s. Timestamps spanning decades would otherwise keep a replay busy for
/// hours; past this the range is refused, not cut.
pub const MAX_STEPS: u64 = 1_000_000;

impl Range {
    /// `--from`, `--to` and `--step` as given: a positive step, `to` not before `from`, and at
    /// most [`MAX_STEPS`] evaluations.
    pub fn new(from: Millis, to: Millis, step: Duration) -> Result<Range, String> {
        let range = Range::ordered(from, to, step)?;
        range.within_max_steps()?;
        Ok(range)
    }

    /// From the options, defaulting to the recording's first and last sample. When the range is
    /// too long and a bound was defaulted, the error names the line of that sample.
    pub fn resolve(
        recording: &Recording,
        from: Option<Millis>,
        to: Option<Millis>,
        step: Duration,
    ) -> Result<Range, String> {
        let (first, last) = recording.time_range().ok_or_else(|| {
            if recording.skipped_samples == 0 {
                "the recording has no samples".to_string()
            } else {
                format!(
                    "the recording has no samples of the series the SLOs select ({} samples of other series were skipped)",
                    recording.skipped_samples
                )
            }
        })?;
        let range = Range::ordered(from.unwrap_or(first), to.unwrap_or(last), step)?;
        range.within_max_steps().map_err(|message| {
            let file = &recording.file;
            let mut defaulted = Vec::new();
            if let (None, Some(earliest)) = (from, recording.earliest) {
                defaulted.push(format!(
                    "--from defaults to the earliest sample, at {file}:{}",
                    earliest.line
                ));
            }
            if let (None, Some(latest)) = (to, recording.latest) {
                defaulted.push(format!(
                    "--to defaults to the latest sample, at {file}:{}",
                    latest.line
                ));
            }
            if defaulted.is_empty() {
                message
            } else {
                format!("{message} ({})", defaulted.join("; "))
            }
        })?;
        Ok(range)
    }

    fn ordered(from: Millis, to: Millis, step: Duration) -> Result<Range, String> {
        if step.is_zero() {
            return Err("--step must be longer than zero".to_string());
        }
        if to < from {
            return Err(format!(
                "--to {} is before --from {}",
                format_time(to),
                format_time(from)
            ));
        }
        Ok(Range { from, to, step })
    }

    fn within_max_steps(&self) -> Result<(), String> {
        let steps = self.steps();
        if steps <= MAX_STEPS {
            return Ok(());
        }
        Err(format!(
            "replaying {} .. {} every {} takes {steps} evaluation steps, more than the {MAX_STEPS} a replay is allowed; narrow the range with --from and --to, or take a longer --step",
            format_time(self.from),
            format_time(self.to),
            format_duration(self.step)
        ))
    }

    /// The number of evaluations from `from` to `to`, both included.
    pub fn steps(&self) -> u64 {
        let span = (i128::from(self.to) - i128::from(self.from)).max(0);
        let steps = span / i128::from(millis(self.step).max(1)) + 1;
        u64::try_from(steps).unwrap_or(u64::MAX)
    }

    pub fn times(&self) -> impl Iterator<Item = Millis> + use<> {
        let Range { from, to, step } = *self;
        let step = millis(step).max(1);
        (0..)
            .map(move |index| from + index * step)
            .take_while(move |at| *at <= to)
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub range: Range,
    pub events: Vec<Event>,
    pub skipped: Vec<Skipped>,
    /// SLO instances evaluated at every step.
    pub instances: usize,
    pub evaluations: u64,
    /// Whose window arithmetic the windows followed.
    pub semantics: Semantics,
}

/// Replays `slos` over `recording` at every step of `range`.
///
/// SLO instances are independent (inhibition is within an instance), so each runs through the
/// whole range on its own, spread over the machine's cores; events are then put in time order,
/// instances in spec order within one time, as [`Replay::step`] would produce them.
pub fn run(slos: &[Slo], recording: &Recording, range: Range) -> Timeline {
    run_measuring(slos, recording, range, None).0
}

/// The error budget one SLO instance consumed at every step of a replay, for scoring
/// ([`crate::score`]). Shares of the period's budget: bad events ÷ (the period's total events
/// `[t − period, t]` × (1 − objective)); NaN where the period has no events or no data.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumption {
    pub slo_id: String,
    pub labels: InstanceLabels,
    /// Per step, the budget consumed over `(previous step, this step]`: the increase of the bad
    /// events over `[from − step, t]` since the previous step (so the steps add up to the
    /// increase over the whole range, whatever the scrape interval).
    pub per_step: Vec<f64>,
    /// Per window asked for, the budget consumed over `[t − window, t]` at every step.
    pub rolling: Vec<(Duration, Vec<f64>)>,
    /// With [`Measuring::error_ratios`]: per window of the SLO's tiers (shortest first), its
    /// error ratio at every step, as the engine measured it (NaN: no data or no traffic).
    pub error_ratios: Vec<(Duration, Vec<f64>)>,
}

/// What [`run_measured`] records at every step besides the timeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measuring<'a> {
    /// The rolling windows whose budget consumption is recorded.
    pub windows: &'a [Duration],
    /// Also the error ratio of every window the SLO's tiers use (for the HTML report).
    pub error_ratios: bool,
}

/// The windows an SLO's tiers read, shortest first.
pub fn tier_windows(slo: &Slo) -> Vec<Duration> {
    let mut windows: Vec<Duration> = slo
        .tiers
        .iter()
        .flat_map(|tier| &tier.windows)
        .flat_map(|pair| [pair.short, pair.long])
        .collect();
    windows.sort();
    windows.dedup();
    windows
}

/// [`run`], and with `windows` the budget every instance consumed at every step over each of
/// those windows (in the order of the instances bound, SLOs in spec order).
pub fn run_measuring(
    slos: &[Slo],
    recording: &Recording,
    range: Range,
    windows: Option<&[Duration]>,
) -> (Timeline, Vec<Consumption>) {
    let measuring = windows.map(|windows| Measuring {
        windows,
        error_ratios: false,
    });
    run_measured(slos, recording, range, measuring)
}

/// [`run`], and with `measuring` what every instance consumed and measured at every step
/// (in the order of the instances bound, SLOs in spec order).
pub fn run_measured(
    slos: &[Slo],
    recording: &Recording,
    range: Range,
    measuring: Option<Measuring>,
) -> (Timeline, Vec<Consumption>) {
    let (mut bound, skipped) = bind(slos, recording);
    let instances = bound.len();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(instances.max(1));
    let chunk = instances.div_ceil(workers).max(1);
    let (events, consumption): (Vec<Vec<Event>>, Vec<Vec<Consumption>>) =
        std::thread::scope(|scope| {
            let handles: Vec<_> = bound
                .chunks_mut(chunk)
                .map(|chunk| {
                    scope.spawn(move || {
                        let mut engine = Engine::new();
                        let mut events = Vec::new();
                        let mut consumption = Vec::new();
                        for bound in chunk {
                            let id = engine.instance(bound.slo, &bound.instance.labels);
                            let mut meter =
                                measuring.map(|measuring| Meter::new(bound, measuring, range));
                            for now in range.times() {
                                let mut measure = |window: Duration| {
                                    bound.instance.measure(recording, now, window)
                                };
                                events.extend(engine.evaluate(now, bound.slo, id, &mut measure));
                                if let Some(meter) = &mut meter {
                                    meter.step(bound, recording, now);
                                }
                            }
                            consumption.extend(meter.map(|meter| meter.consumption));
                        }
                        (events, consumption)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .unzip()
        });
    let mut events: Vec<Event> = events.into_iter().flatten().collect();
    events.sort_by_key(|event| event.at);
    let steps = range.times().count() as u64;
    let timeline = Timeline {
        range,
        events,
        skipped,
        instances,
        evaluations: steps * instances as u64,
        semantics: recording.semantics,
    };
    (timeline, consumption.into_iter().flatten().collect())
}

/// Measures one instance's budget consumption step by step.
struct Meter {
    consumption: Consumption,
    /// The start of the growing window whose increases give the per-step consumption.
    anchor: Millis,
    /// Bad events over `[anchor, previous step]`.
    bad_before: f64,
}

impl Meter {
    fn new(bound: &Bound, measuring: Measuring, range: Range) -> Meter {
        let ratio_windows = if measuring.error_ratios {
            tier_windows(bound.slo)
        } else {
            Vec::new()
        };
        let series =
            |windows: &[Duration]| windows.iter().map(|&window| (window, Vec::new())).collect();
        Meter {
            consumption: Consumption {
                slo_id: bound.slo.id.clone(),
                labels: bound.instance.labels.clone(),
                per_step: Vec::new(),
                rolling: series(measuring.windows),
                error_ratios: series(&ratio_windows),
            },
            anchor: range.from - millis(range.step).max(1),
            bad_before: 0.0,
        }
    }

    fn step(&mut self, bound: &mut Bound, recording: &Recording, now: Millis) {
        let slo = bound.slo;
        let budget = bound
            .instance
            .measure(recording, now, slo.period)
            .map_or(f64::NAN, |period| {
                period.total * slo.objective.error_budget()
            });
        let share = |bad: f64| if budget > 0.0 { bad / budget } else { f64::NAN };
        let grown = Duration::from_millis((now - self.anchor).max(1) as u64);
        let bad = bound
            .instance
            .measure(recording, now, grown)
            .map_or(self.bad_before, |value| value.bad);
        self.consumption.per_step.push(share(bad - self.bad_before));
        self.bad_before = bad;
        for (window, values) in &mut self.consumption.rolling {
            let bad = bound
                .instance
                .measure(recording, now, *window)
                .map_or(f64::NAN, |value| value.bad);
            values.push(share(bad));
        }
        for (window, values) in &mut self.consumption.error_ratios {
            let value = bound.instance.measure(recording, now, *window);
            values.push(value.map_or(f64::NAN, |value| value.error_ratio));
        }
    }
}

/// RFC 3339 UTC with seconds: `2023-11-14T22:13:20Z` (milliseconds when not whole).
pub fn format_time(at: Millis) -> String {
    let time = if at >= 0 {
        UNIX_EPOCH + Duration::from_millis(at as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(at.unsigned_abs())
    };
    if at % 1000 == 0 {
        humantime::format_rfc3339_seconds(time).to_string()
    } else {
        humantime::format_rfc3339_millis(time).to_string()
    }
}

/// RFC 3339 (`2023-11-14T22:13:20Z`) or Unix seconds (`1700000000`).
pub fn parse_time(text: &str) -> Result<Millis, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds.abs() < 1e11 {
            return Ok((seconds * 1000.0).round() as Millis);
        }
        return Err(format!("{text:?} is not a time in Unix seconds"));
    }
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|error| format!("{text:?} is not an RFC 3339 time or Unix seconds ({error})"))?;
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?;
    Ok(since_epoch.as_millis() as Millis)
}

/// Rounds to 10 significant digits so timelines carry no float noise; NaN and ±Inf become null.
pub(crate) fn number(value: f64) -> Value {
    if !value.is_finite() {
        return Value::Null;
    }
    let rounded: f64 = format!("{value:.9e}").parse().unwrap_or(value);
    if rounded.fract() == 0.0 && rounded.abs() < 9e15 {
        json!(rounded as i64)
    } else {
        json!(rounded)
    }
}

fn label_object(labels: &[(String, String)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect(),
    )
}

/// The stable JSON form of a timeline.
pub fn to_json(timeline: &Timeline) -> Value {
    let events: Vec<Value> = timeline
        .events
        .iter()
        .map(|event| {
            let reading = &event.reading;
            let long = reading.long;
            let short = reading.short;
            json!({
                "at": format_time(event.at),
                "slo": event.slo_id,
                "labels": label_object(&event.labels),
                "tier": event.tier.as_str(),
                "state": event.change.as_str(),
                "window": {
                    "long": format_duration(reading.pair.long),
                    "short": format_duration(reading.pair.short),
                },
                "factor": number(reading.pair.factor),
                "burn_rate": {"long": number(reading.burn_long), "short": number(reading.burn_short)},
                "error_ratio": {
                    "long": number(long.map_or(f64::NAN, |value| value.error_ratio)),
                    "short": number(short.map_or(f64::NAN, |value| value.error_ratio)),
                },
                "events": {
                    "bad": number(long.map_or(f64::NAN, |value| value.bad)),
                    "total": number(long.map_or(f64::NAN, |value| value.total)),
                },
                "budget_remaining": number(event.budget_remaining),
            })
        })
        .collect();
    json!({
        "from": format_time(timeline.range.from),
        "to": format_time(timeline.range.to),
        "step": format_duration(timeline.range.step),
        "semantics": timeline.semantics.name(),
        "events": events,
    })
}

/// `{route="POST /orders"}`, or nothing for an ungrouped SLO.
pub fn format_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// A burn rate as people read it: `57.3x`, `0.42x`.
pub fn format_rate(value: f64) -> String {
    if value.is_nan() {
        "n/a".to_string()
    } else if value.abs() >= 10.0 {
        format!("{value:.1}x")
    } else {
        format!("{value:.2}x")
    }
}

/// A ratio as a percentage with three significant digits: `5.73%`, `0.0612%`.
pub fn format_percent(ratio: f64) -> String {
    if ratio.is_nan() {
        return "n/a".to_string();
    }
    let percent = ratio * 100.0;
    let decimals = if percent.abs() >= 10.0 {
        1
    } else if percent.abs() >= 1.0 || percent == 0.0 {
        2
    } else {
        (2 - percent.abs().log10().floor() as i32).clamp(2, 6) as usize
    };
    format!("{percent:.decimals$}%")
}

/// The human timeline: one line per event.
pub fn to_text(timeline: &Timeline) -> String {
    let mut out = String::new();
    let range = &timeline.range;
    let _ = writeln!(
        out,
        "replay {} .. {} every {}: {} SLO instances, {} evaluations, {} events",
        format_time(range.from),
        format_time(range.to),
        format_duration(range.step),
        timeline.instances,
        timeline.evaluations,
        timeline.events.len()
    );
    for skipped in &timeline.skipped {
        let _ = writeln!(out, "skipped {}: {}", skipped.slo_id, skipped.reason);
    }
    for event in &timeline.events {
        let reading = &event.reading;
        let long = reading.long;
        let _ = writeln!(
            out,
            "{}  {:<17} {:<6} {}{}  {}/{} burn {}/{} (factor {})  errors {} of {} ({})  budget left {}",
            format_time(event.at),
            event.change.as_str(),
            event.tier.as_str(),
            event.slo_id,
            format_labels(&event.labels),
            format_duration(reading.pair.long),
            format_duration(reading.pair.short),
            format_rate(reading.burn_long),
            format_rate(reading.burn_short),
            format_rate(reading.pair.factor),
            long.map_or("n/a".to_string(), |value| format!("{:.0}", value.bad)),
            long.map_or("n/a".to_string(), |value| format!("{:.0}", value.total)),
            format_percent(long.map_or(f64::NAN, |value| value.error_ratio)),
            format_percent(event.budget_remaining),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step bound, and the checks `--prometheus` shares with recordings.
    #[test]
    fn ranges_are_bounded_in_steps() {
        let minute = Duration::from_secs(60);
        let last_allowed = (MAX_STEPS as i64 - 1) * 60_000;
        let cases: [(Millis, Millis, Duration, Result<u64, &str>); 5] = [
            (0, 0, minute, Ok(1)),
            (0, last_allowed, minute, Ok(MAX_STEPS)),
            (
                0,
                last_allowed + 60_000,
                minute,
                Err(
                    "replaying 1970-01-01T00:00:00Z .. 1971-11-26T10:40:00Z every 1m takes 1000001 evaluation steps, more than the 1000000 a replay is allowed; narrow the range with --from and --to, or take a longer --step",
                ),
            ),
            (0, 1, Duration::ZERO, Err("--step must be longer than zero")),
            (
                60_000,
                0,
                minute,
                Err("--to 1970-01-01T00:00:00Z is before --from 1970-01-01T00:01:00Z"),
            ),
        ];
        for (from, to, step, expected) in cases {
            let found = Range::new(from, to, step).map(|range| range.steps());
            assert_eq!(found, expected.map_err(str::to_string), "{from} .. {to}");
        }
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(format_time(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000);
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(format_rate(57.312), "57.3x");
        assert_eq!(format_rate(0.4212), "0.42x");
        assert_eq!(format_percent(0.0573), "5.73%");
        assert_eq!(format_percent(0.000612), "0.0612%");
        assert_eq!(format_percent(0.842), "84.2%");
        assert_eq!(number(0.1 + 0.2), json!(0.3));
        assert_eq!(number(f64::NAN), Value::Null);
    }
}
