//! Differential tests: burnwatch's locally computed window values against a real Prometheus
//! (the oracle), 2.42 and 3.16 each, evaluating the Sloth-style expressions on the same
//! samples. burnwatch follows each version's window arithmetic (`Semantics`: closed windows
//! and the old extrapolation order on 2.42, left-open windows and the new order on 3.16); every
//! comparison is also made with the other version's arithmetic, and the scenarios built on
//! window edges must show that it would have disagreed there.
//!
//! Each test generates a deterministic recording (a fixed-seed xorshift; 30 s scrapes with up
//! to 40 ms of jitter over 3 d 10 h, so every default window from 5m to 3d is covered),
//! backfills it into Prometheus, reads the same text with burnwatch's OpenMetrics reader, and
//! compares, for every window of the SLO and every SLO instance (matched by group-by labels):
//!
//! - the error ratio: the SLO's own `error_ratio_template()` with the window substituted,
//! - the total rate: the SLO's total query,
//! - the total and the bad event counts: `increase()` over the same selectors,
//!
//! at these evaluation times:
//!
//! - a grid every 17m7.5s across the data (its offset to the scrapes cycles in 7.5 s steps);
//! - around every scenario edge (burst, restart, gap, appearing series, idle route, the first
//!   and the last sample): the edge sample's exact timestamp and six 7.5 s steps either side;
//! - the same again one window later, when the edge sample lies exactly on the window's start,
//!   and one millisecond after that, when it has just left the window.
//!
//! The grid and the edge neighbourhoods are range queries (one request per expression; 2.42
//! evaluates every step exactly as an instant query); the edge instants themselves are also
//! asked as instant queries through the fixture.
//!
//! Documented difference: where an SLO instance has no error series in a window, PromQL's
//! division has no result while burnwatch counts 0 errors. That is accepted only where
//! burnwatch says 0 bad events and Prometheus does have the total rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use burnwatch::burn::WindowValue;
use burnwatch::config::{self, Document};
use burnwatch::query::{CounterQuery, RangeFunction, with_window};
use burnwatch::slo::{Slo, format_duration};
use burnwatch::source::openmetrics::{self, Recording, escape_label_value};
use burnwatch::source::recorded::RecordedSlo;
use serde_json::Value;

use crate::prom::{Prometheus, Sample, VERSIONS};

/// First scrape, 2 h aligned (Prometheus' block boundaries).
const T0_MS: i64 = 1_699_999_200_000;
const STEP_MS: i64 = 30_000;
/// 3 d 10 h of scrapes: a 3d window ending anywhere in the last 10 h lies inside the data.
const STEPS: usize = 82 * 120;
/// Nominal time of the last scrape.
const LAST_MS: i64 = T0_MS + (STEPS as i64 - 1) * STEP_MS;
/// Every comparison: relative difference at most this, or absolute at most `ABS_TOLERANCE`.
const REL_TOLERANCE: f64 = 1e-9;
const ABS_TOLERANCE: f64 = 1e-12;
/// Grid of evaluation times: 17m7.5s, so the offset to the 30 s scrapes cycles.
const GRID_STEP_MS: i64 = 1_027_500;
/// Around an edge: 13 evaluations 7.5 s apart, the middle one on the edge.
const EDGE_STEP_MS: i64 = 7_500;
const EDGE_HALF_STEPS: i64 = 6;
/// Fewer value comparisons than this per scenario fail the test (it cannot pass vacuously).
const MIN_COMPARISONS: usize = 1000;

const fn hours(h: usize) -> usize {
    h * 120
}

const fn minutes(m: usize) -> usize {
    m * 2
}

// ---- deterministic data ----

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A whole number with mean `mean` (rounded up with the probability of its fraction).
    fn count(&mut self, mean: f64) -> f64 {
        (mean + self.unit()).floor()
    }
}

/// Daily traffic swing: 0.6 .. 1.4 of the mean.
fn diurnal(step: usize) -> f64 {
    1.0 + 0.4 * (step as f64 * std::f64::consts::TAU / hours(24) as f64).sin()
}

/// One scrape target: when it was scraped and when its process restarted.
struct Target {
    /// `job="x",instance="y"`
    labels: String,
    /// Scrape timestamp (ms) per step; `None` while the target was not scraped.
    scrapes: Vec<Option<i64>>,
    /// Steps at which every counter of the target starts again from zero.
    restarts: Vec<usize>,
}

impl Target {
    /// No samples for these steps (the target was unreachable).
    fn down(mut self, steps: Range<usize>) -> Target {
        for scrape in &mut self.scrapes[steps] {
            *scrape = None;
        }
        self
    }

    fn restart(mut self, step: usize) -> Target {
        self.restarts.push(step);
        self
    }

    /// The scrape timestamp of `step`, which must have been scraped.
    fn at(&self, step: usize) -> i64 {
        self.scrapes[step].unwrap_or_else(|| panic!("step {step} of {} not scraped", self.labels))
    }

    /// `edges` (name, timestamp) and the target's first and last sample.
    fn edges(&self, edges: &[(&str, i64)]) -> Vec<(String, i64)> {
        let mut scrapes = self.scrapes.iter().flatten();
        let first = *scrapes.next().expect("scraped");
        let last = *scrapes.last().expect("scraped twice");
        edges
            .iter()
            .copied()
            .chain([("first sample", first), ("last sample", last)])
            .map(|(name, at)| (name.to_string(), at))
            .collect()
    }
}

/// The error series of a route: its status code, the step it first appears at, and the share
/// of requests that fail at each step.
struct Errors<F> {
    code: &'static str,
    born: usize,
    ratio: F,
}

fn errors<F: Fn(usize) -> f64>(code: &'static str, ratio: F) -> Errors<F> {
    Errors {
        code,
        born: 0,
        ratio,
    }
}

impl<F> Errors<F> {
    /// No error series exists before `step`.
    fn born(self, step: usize) -> Errors<F> {
        Errors { born: step, ..self }
    }
}

/// Writes OpenMetrics text: families one after another, each series' samples in time order.
struct Generator {
    rng: Rng,
    text: String,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng(seed),
            text: String::new(),
        }
    }

    fn family(&mut self, name: &str, kind: &str) {
        writeln!(self.text, "# TYPE {name} {kind}").unwrap();
    }

    /// A target scraped every 30 s at `offset_ms` into each interval, plus 0..40 ms of jitter.
    fn target(&mut self, job: &str, instance: &str, offset_ms: i64) -> Target {
        let scrapes = (0..STEPS)
            .map(|step| {
                let jitter = (self.rng.next() % 40) as i64;
                Some(T0_MS + step as i64 * STEP_MS + offset_ms + jitter)
            })
            .collect();
        Target {
            labels: format!("job=\"{job}\",instance=\"{instance}\""),
            scrapes,
            restarts: Vec::new(),
        }
    }

    /// A target scraped exactly every 30 s from `T0_MS`, no jitter: every evaluation on the
    /// 30 s grid has a sample exactly on each window's start.
    fn aligned_target(&mut self, job: &str, instance: &str) -> Target {
        Target {
            labels: format!("job=\"{job}\",instance=\"{instance}\""),
            scrapes: (0..STEPS)
                .map(|step| Some(T0_MS + step as i64 * STEP_MS))
                .collect(),
            restarts: Vec::new(),
        }
    }

    /// One counter series of `target`: `increments[step]` is counted at each step from `born`
    /// on (before `born` the series does not exist). The counter starts at `start` and starts
    /// again from zero when the target's process restarts.
    fn counter(
        &mut self,
        metric: &str,
        target: &Target,
        labels: &[(&str, &str)],
        start: f64,
        born: usize,
        increments: &[f64],
    ) {
        let mut key = format!("{metric}{{{}", target.labels);
        for (name, value) in labels {
            write!(key, ",{name}=\"{}\"", escape_label_value(value)).unwrap();
        }
        key.push('}');
        let mut value = start;
        let steps = target.scrapes.iter().zip(increments).enumerate();
        for (step, (scrape, increment)) in steps.skip(born) {
            if step > born && target.restarts.contains(&step) {
                value = 0.0;
            }
            value += increment;
            if let Some(at) = scrape {
                writeln!(self.text, "{key} {value} {}.{:03}", at / 1000, at % 1000).unwrap();
            }
        }
    }

    /// Per-step (successful, failed) request counts: `mean` requests per scrape with the daily
    /// swing, `error_ratio(step)` of them failing.
    fn requests(&mut self, mean: f64, error_ratio: impl Fn(usize) -> f64) -> (Vec<f64>, Vec<f64>) {
        (0..STEPS)
            .map(|step| {
                let total = self.rng.count(mean * diurnal(step));
                let errors = self.rng.count(total * error_ratio(step)).min(total);
                (total - errors, errors)
            })
            .unzip()
    }

    /// `http_requests_total` of one route (`None`: no route label) on one target: a `200`
    /// series and an error series.
    fn route(
        &mut self,
        target: &Target,
        route: Option<&str>,
        mean: f64,
        errors: Errors<impl Fn(usize) -> f64>,
    ) {
        let (ok, failed) = self.requests(mean, errors.ratio);
        let start = self.rng.count(50_000.0);
        let labels = |code| {
            let mut labels = vec![("code", code)];
            labels.extend(route.map(|route| ("route", route)));
            labels
        };
        let metric = "http_requests_total";
        self.counter(metric, target, &labels("200"), start, 0, &ok);
        // An error series that exists from the start has counted a few errors already.
        let errors_start = if errors.born == 0 {
            (start / 200.0).floor()
        } else {
            0.0
        };
        let labels = labels(errors.code);
        self.counter(metric, target, &labels, errors_start, errors.born, &failed);
    }

    fn finish(mut self) -> String {
        self.text.push_str("# EOF\n");
        self.text
    }
}

// ---- specs and scenarios ----

fn load_slos(file: &str, yaml: &str) -> Vec<Slo> {
    match config::load_str(file, yaml, Path::new(".")) {
        Ok(Document::Slos(slos)) => slos,
        Ok(Document::Daemon(_)) => panic!("{file} is a daemon config:\n{yaml}"),
        Err(errors) => panic!(
            "{file} does not load:\n{}\n{yaml}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// A Sloth spec with one SLO per (job, `by` clause, range function) over
/// `http_requests_total{job="<job>"}`, errors `code=~"5.."`.
fn sloth_spec(slos: &[(&str, &str, &str)]) -> String {
    let mut yaml = String::from("version: \"prometheus/v1\"\nservice: orders\nslos:\n");
    for (job, by, function) in slos {
        let selector = |extra| format!("http_requests_total{{job=\"{job}\"{extra}}}");
        let query = |extra| format!("sum{by} ({function}({}[{{{{.window}}}}]))", selector(extra));
        write!(
            yaml,
            "  - name: {job}\n    objective: 99.9\n    sli:\n      events:\n        \
             error_query: '{}'\n        total_query: '{}'\n",
            query(",code=~\"5..\""),
            query(""),
        )
        .unwrap();
    }
    yaml
}

/// Group-by labels of an SLO instance / a Prometheus result series.
type Key = BTreeMap<String, String>;

fn key(pairs: &[(&str, &str)]) -> Key {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One SLO checked against Prometheus, with what its data must exhibit.
struct Scenario {
    name: &'static str,
    slo: Slo,
    /// PromQL with `{{.window}}`: the event counts burnwatch's `WindowValue.total` and `.bad`
    /// stand for.
    total_events: String,
    bad_events: String,
    /// The instances burnwatch must find.
    instances: Vec<Key>,
    /// Interesting instants: evaluated exactly, around, and one window later.
    edges: Vec<(String, i64)>,
    /// Also compare at every scrape (30 s, on the samples' own timestamps) over this range.
    every_scrape: Option<Range<i64>>,
    expect: Expect,
}

/// What a scenario's comparisons must have met, so that it cannot pass without exercising
/// the case it is about. Each flag is exact: set, the case must occur; unset, it must not.
#[derive(Default)]
struct Expect {
    /// Windows with no error series (PromQL: no ratio; burnwatch: 0).
    missing_errors: bool,
    /// Windows with samples but no events at all (0/0 on both sides).
    nan: bool,
    /// Windows inside the data where neither side has a value (fewer than two samples).
    no_samples: bool,
    /// The largest error ratio seen lies in this range.
    max_ratio: (f64, f64),
    /// The other Prometheus version's window arithmetic must disagree with this one's
    /// Prometheus somewhere (the data sit on window edges); unset, no requirement.
    semantics_matter: bool,
}

/// A scenario for the Sloth SLO `name` from `sloth_spec`.
fn ratio_scenario(
    slos: &[Slo],
    name: &'static str,
    instances: Vec<Key>,
    edges: Vec<(String, i64)>,
    expect: Expect,
) -> Scenario {
    let slo = slos
        .iter()
        .find(|slo| slo.name == name)
        .unwrap_or_else(|| panic!("no SLO {name}"))
        .clone();
    let by = if slo.group_by.is_empty() {
        String::new()
    } else {
        format!(" by ({})", slo.group_by.join(", "))
    };
    let events = |extra| {
        format!("sum{by} (increase(http_requests_total{{job=\"{name}\"{extra}}}[{{{{.window}}}}]))")
    };
    Scenario {
        name,
        total_events: events(""),
        bad_events: events(",code=~\"5..\""),
        slo,
        instances,
        edges,
        every_scrape: None,
        expect,
    }
}

/// 1-4: steady traffic, a 40 minute burst, process restarts and scrape gaps; one job each.
#[test]
fn sloth_ratio_slos_match_prometheus_through_bursts_resets_and_gaps() {
    let mut generator = Generator::new(0x5EED_0001);
    let g = &mut generator;
    g.family("http_requests", "counter");
    let get = Some("GET /orders");

    // 1. steady: ~0.1 % errors on two pods, no grouping.
    let steady_a = g.target("steady", "a", 0);
    let steady_b = g.target("steady", "b", 11_000);
    g.route(&steady_a, get, 600.0, errors("500", |_| 0.001));
    g.route(&steady_b, get, 300.0, errors("500", |_| 0.001));

    // 2. burst: 5 % errors for 40 minutes from 60 h.
    let burst_steps = hours(60)..hours(60) + minutes(40);
    let burst = g.target("burst", "a", 3_500);
    let burst_ratio = |step| {
        if burst_steps.contains(&step) {
            0.05
        } else {
            0.001
        }
    };
    g.route(&burst, get, 600.0, errors("500", burst_ratio));

    // 3. restarts: pod b at 50 h, pod a twice within 10 minutes at 75 h.
    let (restart_b, restart_a) = (hours(50), hours(75));
    let reset_a = g
        .target("reset", "a", 17_250)
        .restart(restart_a)
        .restart(restart_a + minutes(10));
    let reset_b = g.target("reset", "b", 29_000).restart(restart_b);
    g.route(&reset_a, get, 450.0, errors("500", |_| 0.002));
    g.route(&reset_b, get, 450.0, errors("500", |_| 0.002));

    // 4. gaps: nothing scraped for 20 minutes from 70 h, one missed scrape at 76 h.
    let (gap, missed) = (hours(70)..hours(70) + minutes(20), hours(76));
    let gappy = g
        .target("gap", "a", 8_000)
        .down(gap.clone())
        .down(missed..missed + 1);
    g.route(&gappy, get, 600.0, errors("500", |_| 0.001));

    let text = generator.finish();
    let slos = load_slos(
        "ratio.yaml",
        &sloth_spec(&[
            ("steady", "", "rate"),
            ("burst", " by (route)", "rate"),
            ("reset", " by (route)", "rate"),
            ("gap", " by (route)", "increase"),
        ]),
    );
    let get_orders = || vec![key(&[("route", "GET /orders")])];
    let scenarios = [
        ratio_scenario(
            &slos,
            "steady",
            vec![Key::new()],
            steady_a.edges(&[]),
            Expect {
                max_ratio: (0.0005, 0.01),
                ..Expect::default()
            },
        ),
        ratio_scenario(
            &slos,
            "burst",
            get_orders(),
            burst.edges(&[
                ("burst starts", burst.at(burst_steps.start)),
                ("burst ends", burst.at(burst_steps.end)),
            ]),
            Expect {
                max_ratio: (0.03, 0.08),
                ..Expect::default()
            },
        ),
        ratio_scenario(
            &slos,
            "reset",
            get_orders(),
            reset_a.edges(&[
                ("b restarts", reset_b.at(restart_b)),
                ("a restarts", reset_a.at(restart_a)),
                ("a restarts again", reset_a.at(restart_a + minutes(10))),
            ]),
            Expect {
                max_ratio: (0.001, 0.02),
                ..Expect::default()
            },
        ),
        ratio_scenario(
            &slos,
            "gap",
            get_orders(),
            gappy.edges(&[
                ("last sample before the gap", gappy.at(gap.start - 1)),
                ("first sample after the gap", gappy.at(gap.end)),
                ("sample before a missed scrape", gappy.at(missed - 1)),
                ("sample after a missed scrape", gappy.at(missed + 1)),
            ]),
            Expect {
                no_samples: true,
                max_ratio: (0.0005, 0.02),
                ..Expect::default()
            },
        ),
    ];
    run("ratio", &text, &scenarios);
}

/// 5-6: grouping by route (one route value hostile to naive escaping, one series without a
/// route label) and error series that appear only partway through the data.
#[test]
fn grouped_routes_and_late_error_series_match_prometheus() {
    let mut generator = Generator::new(0x5EED_0002);
    let g = &mut generator;
    g.family("http_requests", "counter");
    let (get, post) = (Some("GET /orders"), Some("POST /orders"));
    let hostile = "GET /a/{id} \"x\" \\ y,code=\"500\"}\n{";

    // 5. grouped: POST on pods a and b, GET on a; a quiet route on a with ~0.3 requests per
    // scrape, none at all for 2 h from 40 h; 404s (not errors); health checks without a route.
    let grouped_a = g.target("grouped", "a", 5_000);
    let grouped_b = g.target("grouped", "b", 20_500);
    g.route(&grouped_a, post, 300.0, errors("500", |_| 0.002));
    g.route(&grouped_b, post, 300.0, errors("502", |_| 0.002));
    g.route(&grouped_a, get, 900.0, errors("500", |_| 0.0005));
    let idle = hours(40)..hours(42);
    let (ok, failed) = g.requests(0.3, |_| 0.05);
    let quiet = |counts: Vec<f64>| -> Vec<f64> {
        let active = |(step, n)| if idle.contains(&step) { 0.0 } else { n };
        counts.into_iter().enumerate().map(active).collect()
    };
    let metric = "http_requests_total";
    let hostile_code = |code| [("code", code), ("route", hostile)];
    g.counter(
        metric,
        &grouped_a,
        &hostile_code("200"),
        70.0,
        0,
        &quiet(ok),
    );
    g.counter(
        metric,
        &grouped_a,
        &hostile_code("503"),
        3.0,
        0,
        &quiet(failed),
    );
    let (not_found, _) = g.requests(20.0, |_| 0.0);
    let labels = [("code", "404"), ("route", "POST /orders")];
    g.counter(metric, &grouped_a, &labels, 900.0, 0, &not_found);
    let (health, _) = g.requests(2.0, |_| 0.0);
    g.counter(metric, &grouped_b, &[("code", "200")], 10.0, 0, &health);

    // 6. late errors: POST has no 5xx series before 30 h, GET none before 76 h.
    let (post_born, get_born) = (hours(30), hours(76));
    let late = g.target("late", "a", 14_000);
    g.route(&late, post, 600.0, errors("500", |_| 0.001).born(post_born));
    g.route(&late, get, 600.0, errors("503", |_| 0.003).born(get_born));

    let text = generator.finish();
    let slos = load_slos(
        "grouped.yaml",
        &sloth_spec(&[
            ("grouped", " by (route)", "rate"),
            ("late", " by (route)", "rate"),
        ]),
    );
    let scenarios = [
        ratio_scenario(
            &slos,
            "grouped",
            vec![
                key(&[("route", "")]),
                key(&[("route", "GET /orders")]),
                key(&[("route", hostile)]),
                key(&[("route", "POST /orders")]),
            ],
            grouped_a.edges(&[
                ("quiet route goes idle", grouped_a.at(idle.start)),
                ("quiet route wakes up", grouped_a.at(idle.end)),
            ]),
            Expect {
                missing_errors: true,
                nan: true,
                max_ratio: (0.05, 1.0),
                ..Expect::default()
            },
        ),
        ratio_scenario(
            &slos,
            "late",
            vec![
                key(&[("route", "GET /orders")]),
                key(&[("route", "POST /orders")]),
            ],
            late.edges(&[
                ("first POST error sample", late.at(post_born)),
                ("second POST error sample", late.at(post_born + 1)),
                ("first GET error sample", late.at(get_born)),
            ]),
            Expect {
                missing_errors: true,
                max_ratio: (0.001, 0.05),
                ..Expect::default()
            },
        ),
    ];
    run("grouped", &text, &scenarios);
}

/// 7: latency SLIs (burnwatch's native spec) on a histogram, with a slow period and a restart:
/// one at 0.3 s and one at an integer bound, 1 s, which the data write `le="1"` and Prometheus 3
/// stores as `le="1.0"` (the SLO's matcher takes every spelling of the bound).
#[test]
fn latency_slo_on_a_histogram_matches_prometheus() {
    let mut generator = Generator::new(0x5EED_0003);
    let g = &mut generator;
    g.family("http_request_duration_seconds", "histogram");
    let slow = hours(55)..hours(56) + minutes(30);
    let restart = hours(75);
    let target = g.target("latency", "a", 9_500).restart(restart);
    let bounds = ["0.1", "0.3", "1", "+Inf"];
    for (route, mean) in [("GET /orders", 800.0), ("POST /orders", 200.0)] {
        // Cumulative bucket counts per step, one per bound.
        let mut buckets = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for step in 0..STEPS {
            let count = g.rng.count(mean * diurnal(step));
            let fast = g.rng.count(count * 0.6);
            // Of the slower requests, the share still under the 0.3 s threshold, and of the
            // rest the share under 1 s.
            let slowed = route == "GET /orders" && slow.contains(&step);
            let (share, under_1s) = if slowed { (0.5, 0.4) } else { (0.92, 0.9) };
            let medium = g.rng.count((count - fast) * share).min(count - fast);
            let long = g
                .rng
                .count((count - fast - medium) * under_1s)
                .min(count - fast - medium);
            buckets[0].push(fast);
            buckets[1].push(fast + medium);
            buckets[2].push(fast + medium + long);
            buckets[3].push(count);
        }
        let start = g.rng.count(100_000.0);
        let starts = [start * 0.6, start * 0.97, start * 0.995, start].map(f64::floor);
        let bucket = "http_request_duration_seconds_bucket";
        for ((le, counts), start) in bounds.iter().zip(&buckets).zip(starts) {
            let labels = [("route", route), ("le", le)];
            g.counter(bucket, &target, &labels, start, 0, counts);
        }
        let count = "http_request_duration_seconds_count";
        g.counter(count, &target, &[("route", route)], start, 0, &buckets[3]);
    }
    let text = generator.finish();
    let spec = |name: &str, threshold: &str| {
        format!(
            "version: burnwatch/v1\nservice: orders\nslos:\n  - name: {name}\n    objective: 99\n    \
             sli:\n      latency:\n        histogram: http_request_duration_seconds{{job=\"latency\"}}\n        \
             threshold: \"{threshold}\"\n    group_by: [route]\n"
        )
    };
    let count = "http_request_duration_seconds_count{job=\"latency\"}[{{.window}}]";
    let scenario = |name: &'static str, threshold: &str, le: &str, max_ratio| {
        let fast = format!(
            "http_request_duration_seconds_bucket{{job=\"latency\",{le}}}[{{{{.window}}}}]"
        );
        Scenario {
            name,
            slo: load_slos("latency.yaml", &spec(name, threshold)).remove(0),
            total_events: format!("sum by (route) (increase({count}))"),
            bad_events: format!(
                "sum by (route) (increase({count})) - sum by (route) (increase({fast}))"
            ),
            instances: vec![
                key(&[("route", "GET /orders")]),
                key(&[("route", "POST /orders")]),
            ],
            edges: target.edges(&[
                ("slow period starts", target.at(slow.start)),
                ("slow period ends", target.at(slow.end)),
                ("restart", target.at(restart)),
            ]),
            every_scrape: None,
            expect: Expect {
                max_ratio,
                ..Expect::default()
            },
        }
    };
    let scenarios = [
        scenario("latency", "0.3", "le=\"0.3\"", (0.15, 0.3)),
        // The event counts name both spellings, as a user who knows would.
        scenario("latency-1s", "1", "le=~\"1|1.0\"", (0.05, 0.2)),
    ];
    run("latency", &text, &scenarios);
}

/// 8: samples exactly on the evaluation grid, so every window starts on a sample (where 3.x's
/// left-open windows leave it out and 2.x's closed ones take it in), and a process restart
/// after two minutes down, so windows start in the gap just before the reset's first sample
/// (where 2.51+ tests the extrapolation before clamping to the counter's zero point).
#[test]
fn samples_on_window_edges_and_a_reset_after_a_gap_match_each_version() {
    let mut generator = Generator::new(0x5EED_0004);
    let g = &mut generator;
    g.family("http_requests", "counter");
    let burst = hours(60)..hours(60) + minutes(40);
    let (down, restart) = (hours(76)..hours(76) + 4, hours(76) + 4);
    let target = g
        .aligned_target("aligned", "a")
        .down(down.clone())
        .restart(restart);
    let ratio = |step| if burst.contains(&step) { 0.05 } else { 0.001 };
    g.route(&target, Some("GET /orders"), 600.0, errors("500", ratio));
    let text = generator.finish();
    let slos = load_slos(
        "aligned.yaml",
        &sloth_spec(&[("aligned", " by (route)", "rate")]),
    );
    let mut scenario = ratio_scenario(
        &slos,
        "aligned",
        vec![key(&[("route", "GET /orders")])],
        target.edges(&[
            ("burst starts", target.at(burst.start)),
            ("last sample before the restart", target.at(down.start - 1)),
            ("first sample after the restart", target.at(restart)),
        ]),
        Expect {
            max_ratio: (0.03, 0.08),
            semantics_matter: true,
            ..Expect::default()
        },
    );
    // Every scrape for two hours over the burst's start, and over the hour after the restart.
    let burst_start = target.at(burst.start);
    scenario.every_scrape = Some(burst_start - 3_600_000..burst_start + 3_600_000);
    let after_restart = Scenario {
        name: "aligned",
        every_scrape: Some(target.at(restart) - 600_000..target.at(restart) + 3_600_000),
        edges: Vec::new(),
        ..ratio_scenario(
            &slos,
            "aligned",
            vec![key(&[("route", "GET /orders")])],
            Vec::new(),
            Expect {
                max_ratio: (0.03, 0.08),
                semantics_matter: true,
                ..Expect::default()
            },
        )
    };
    run("aligned", &text, &[scenario, after_restart]);
}

// ---- running the comparisons ----

/// What is compared per (time, window, instance); `KINDS` lists them in this order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    ErrorRatio,
    TotalRate,
    TotalEvents,
    BadEvents,
}

const KINDS: [Kind; 4] = [
    Kind::ErrorRatio,
    Kind::TotalRate,
    Kind::TotalEvents,
    Kind::BadEvents,
];

impl Kind {
    fn expr(self, scenario: &Scenario, window: Duration) -> String {
        let template = match self {
            Kind::ErrorRatio => scenario.slo.sli.error_ratio_template(),
            Kind::TotalRate => total_query(&scenario.slo).template().to_string(),
            Kind::TotalEvents => scenario.total_events.clone(),
            Kind::BadEvents => scenario.bad_events.clone(),
        };
        with_window(&template, window)
    }

    /// burnwatch's value for this kind.
    fn of(self, value: &WindowValue, slo: &Slo, window: Duration) -> f64 {
        match self {
            Kind::ErrorRatio => value.error_ratio,
            Kind::TotalRate => match total_query(slo).function {
                RangeFunction::Rate => value.total / window.as_secs_f64(),
                RangeFunction::Increase => value.total,
            },
            Kind::TotalEvents => value.total,
            Kind::BadEvents => value.bad,
        }
    }
}

fn total_query(slo: &Slo) -> CounterQuery {
    let local = slo.sli.local().expect("SLI is evaluated locally");
    local.queries().1.clone()
}

/// Per evaluation time (ms): each result series' value, by its group-by labels.
type Answers = BTreeMap<i64, BTreeMap<Key, f64>>;

#[derive(Default, Debug)]
struct Stats {
    /// Comparisons where both sides had a value and agreed.
    values: usize,
    /// Of those, both NaN.
    nan: usize,
    /// Neither side had a value, for a window inside the data.
    no_samples: usize,
    /// Prometheus had no ratio/bad count, burnwatch 0 errors (the documented difference).
    missing_errors: usize,
    instant_queries: usize,
    range_queries: usize,
    max_ratio: f64,
    /// Values where the other version's arithmetic would have disagreed with Prometheus.
    other_semantics_differs: usize,
}

struct Check<'a> {
    prom: &'a Prometheus,
    client: reqwest::blocking::Client,
    recording: &'a Recording,
    scenario: &'a Scenario,
    recorded: RecordedSlo,
    /// The same recording and instances under the other version's window arithmetic.
    other_recording: &'a Recording,
    other: RecordedSlo,
    /// burnwatch's instances as group-by label maps, by index.
    keys: Vec<Key>,
    stats: Stats,
    failures: Vec<String>,
}

/// Backfills `text`, reads it with burnwatch, and checks every scenario; panics listing every
/// disagreement.
fn run(name: &str, text: &str, scenarios: &[Scenario]) {
    let mut failures = Vec::new();
    for version in VERSIONS {
        failures.extend(run_on(version, name, text, scenarios));
    }
    if !failures.is_empty() {
        let shown = failures.len().min(40);
        panic!(
            "{} disagreements with Prometheus (first {shown}):\n{}",
            failures.len(),
            failures[..shown].join("\n")
        );
    }
}

/// Checks every scenario against one Prometheus version; returns the disagreements.
fn run_on(
    version: crate::prom::Version,
    name: &str,
    text: &str,
    scenarios: &[Scenario],
) -> Vec<String> {
    use burnwatch::window::Semantics;
    let started = std::time::Instant::now();
    let mut recording = openmetrics::parse(&format!("{name}.om"), text).expect("recording parses");
    recording.semantics = version.semantics();
    let other_recording = Recording {
        semantics: match version.semantics() {
            Semantics::Prometheus3 => Semantics::Prometheus2,
            _ => Semantics::Prometheus3,
        },
        ..recording.clone()
    };
    let prom = Prometheus::start_version(version, text);
    burnwatch::source::prometheus::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for scenario in scenarios {
        let recorded = RecordedSlo::bind(&scenario.slo, &recording)
            .unwrap_or_else(|e| panic!("[{}] bind: {e}", scenario.name));
        let other = RecordedSlo::bind(&scenario.slo, &other_recording)
            .unwrap_or_else(|e| panic!("[{}] bind: {e}", scenario.name));
        let keys: Vec<Key> = recorded
            .instances
            .iter()
            .map(|instance| instance.labels.iter().cloned().collect())
            .collect();
        let mut check = Check {
            prom: &prom,
            client: client.clone(),
            recording: &recording,
            scenario,
            recorded,
            other_recording: &other_recording,
            other,
            keys,
            stats: Stats::default(),
            failures: Vec::new(),
        };
        check.all();
        check.expectations();
        report.push(format!("[{}] {:?}", scenario.name, check.stats));
        failures.append(&mut check.failures);
    }
    eprintln!(
        "differential {name} on Prometheus {} ({}): {} samples in {} series, {:.1?}\n{}",
        version.number(),
        recording.semantics,
        recording.samples,
        recording.series.len(),
        started.elapsed(),
        report.join("\n")
    );
    failures
        .into_iter()
        .map(|failure| format!("Prometheus {}: {failure}", version.number()))
        .collect()
}

impl Check<'_> {
    fn all(&mut self) {
        let scenario = self.scenario;
        let mut found = self.keys.clone();
        found.sort();
        let mut expected = scenario.instances.clone();
        expected.sort();
        assert_eq!(
            found, expected,
            "[{}] burnwatch's SLO instances",
            scenario.name
        );
        let windows = scenario.slo.windows();
        let expected_windows = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];
        assert_eq!(
            windows
                .iter()
                .map(|w| format_duration(*w))
                .collect::<Vec<_>>(),
            expected_windows,
            "[{}] windows",
            scenario.name
        );

        // The grid: from 10 minutes before the first sample to an hour after the last.
        let start = T0_MS - 600_000;
        let end = LAST_MS + 3_600_000;
        let count = ((end - start) / GRID_STEP_MS + 1) as usize;
        for &window in &windows {
            self.range("grid", start, GRID_STEP_MS, count, window);
        }

        if let Some(range) = &scenario.every_scrape {
            let count = ((range.end - range.start) / STEP_MS) as usize;
            for &window in &windows {
                self.range("every scrape", range.start, STEP_MS, count, window);
            }
        }

        for (what, at) in &scenario.edges {
            let around = at - EDGE_HALF_STEPS * EDGE_STEP_MS;
            let count = (2 * EDGE_HALF_STEPS + 1) as usize;
            for &window in &windows {
                self.range(what, around, EDGE_STEP_MS, count, window);
                // One window later the edge sample lies exactly on the window's start.
                let later = format!("{what}, one window later");
                let shifted = around + window.as_millis() as i64;
                self.range(&later, shifted, EDGE_STEP_MS, count, window);
                self.instant(what, *at, window);
                let gone = format!("{what}, one window and 1 ms later");
                self.instant(&gone, at + window.as_millis() as i64 + 1, window);
            }
        }
    }

    /// Compares at `start + k * step` for k in 0..count, asking Prometheus range queries.
    fn range(&mut self, what: &str, start: i64, step: i64, count: usize, window: Duration) {
        let times: Vec<i64> = (0..count as i64).map(|k| start + k * step).collect();
        let answers = KINDS.map(|kind| {
            let expr = kind.expr(self.scenario, window);
            self.query_range(&expr, &times)
        });
        self.stats.range_queries += KINDS.len();
        self.compare(what, &times, window, &answers);
    }

    /// Compares at `at`, asking Prometheus instant queries through the fixture.
    fn instant(&mut self, what: &str, at: i64, window: Duration) {
        let seconds = at as f64 / 1000.0;
        // The evaluation time must survive the round trip through the `time` parameter.
        let evaluated = self
            .prom
            .query_one("time()", seconds)
            .expect("time() has a value");
        assert_eq!(
            (evaluated * 1000.0).round() as i64,
            at,
            "Prometheus evaluated at {evaluated}, asked for {seconds}"
        );
        let answers = KINDS.map(|kind| {
            let expr = kind.expr(self.scenario, window);
            let result = self.prom.query(&expr, seconds);
            let by_key = self.by_key(&expr, at, result);
            BTreeMap::from([(at, by_key)])
        });
        self.stats.instant_queries += KINDS.len();
        self.compare(&format!("{what} (instant)"), &[at], window, &answers);
    }

    fn compare(&mut self, what: &str, times: &[i64], window: Duration, answers: &[Answers; 4]) {
        let scenario = self.scenario;
        let no_answer = BTreeMap::new();
        for &at in times {
            let at_answers = answers
                .each_ref()
                .map(|answers| answers.get(&at).unwrap_or(&no_answer));
            for (kind, answer) in KINDS.iter().zip(&at_answers) {
                for (key, theirs) in *answer {
                    if !self.keys.contains(key) {
                        let message =
                            format!("Prometheus {theirs:?}, burnwatch has no such instance");
                        self.fail(what, at, window, key, *kind, message);
                    }
                }
            }
            for index in 0..self.keys.len() {
                let key = self.keys[index].clone();
                let value = self.recorded.measure(self.recording, index, at, window);
                let other = self.other.measure(self.other_recording, index, at, window);
                let total_rate_present = at_answers[Kind::TotalRate as usize].contains_key(&key);
                for (kind, answer) in KINDS.iter().zip(&at_answers) {
                    let theirs = answer.get(&key).copied();
                    let ours = value.map(|value| kind.of(&value, &scenario.slo, window));
                    let other = other.map(|value| kind.of(&value, &scenario.slo, window));
                    let other_agrees = match (other, theirs) {
                        (Some(other), Some(theirs)) => close(other, theirs),
                        (other, theirs) => other.is_some() == theirs.is_some() || ours == other,
                    };
                    if !other_agrees {
                        self.stats.other_semantics_differs += 1;
                    }
                    let verdict = match (ours, theirs) {
                        (Some(ours), Some(theirs)) if close(ours, theirs) => {
                            self.stats.values += 1;
                            if ours.is_nan() {
                                self.stats.nan += 1;
                            }
                            if *kind == Kind::ErrorRatio && ours > self.stats.max_ratio {
                                self.stats.max_ratio = ours;
                            }
                            Ok(())
                        }
                        (Some(ours), Some(theirs)) => Err(format!(
                            "Prometheus {theirs:?}, burnwatch {ours:?} (relative difference {:e})",
                            (ours - theirs).abs() / ours.abs().max(theirs.abs())
                        )),
                        (None, None) => {
                            if T0_MS <= at - window.as_millis() as i64 && at <= LAST_MS {
                                self.stats.no_samples += 1;
                            }
                            Ok(())
                        }
                        (None, Some(theirs)) => {
                            Err(format!("Prometheus {theirs:?}, burnwatch has no value"))
                        }
                        (Some(ours), None) => {
                            let value = value.expect("burnwatch has a value");
                            // The documented difference: no error series in the window.
                            let zero_errors = value.bad == 0.0 && value.error_ratio == 0.0;
                            if matches!(kind, Kind::ErrorRatio | Kind::BadEvents)
                                && zero_errors
                                && total_rate_present
                            {
                                self.stats.missing_errors += 1;
                                Ok(())
                            } else {
                                Err(format!(
                                    "Prometheus has no value, burnwatch {ours:?} (total rate {})",
                                    if total_rate_present {
                                        "present"
                                    } else {
                                        "absent too"
                                    }
                                ))
                            }
                        }
                    };
                    if let Err(message) = verdict {
                        let message = format!("{message}; burnwatch {value:?}");
                        self.fail(what, at, window, &key, *kind, message);
                    }
                }
            }
        }
    }

    /// Records a disagreement with everything needed to reproduce it.
    fn fail(
        &mut self,
        what: &str,
        at: i64,
        window: Duration,
        key: &Key,
        kind: Kind,
        message: String,
    ) {
        self.failures.push(format!(
            "[{}] {what}: at {} window {} instance {key:?} {kind:?}: {message}\n    expr: {}",
            self.scenario.name,
            describe_time(at),
            format_duration(window),
            kind.expr(self.scenario, window).replace('\n', " "),
        ));
    }

    /// Checks what the data must have exercised.
    fn expectations(&mut self) {
        let name = self.scenario.name;
        let expect = &self.scenario.expect;
        let stats = &self.stats;
        let mut problems = Vec::new();
        if stats.values < MIN_COMPARISONS {
            problems.push(format!("only {} value comparisons", stats.values));
        }
        if expect.missing_errors != (stats.missing_errors > 0) {
            problems.push(format!(
                "{} windows without error series, expected {}",
                stats.missing_errors,
                if expect.missing_errors {
                    "some"
                } else {
                    "none"
                }
            ));
        }
        if expect.nan != (stats.nan > 0) {
            problems.push(format!("{} NaN ratios", stats.nan));
        }
        if expect.no_samples != (stats.no_samples > 0) {
            problems.push(format!("{} windows without samples", stats.no_samples));
        }
        if expect.semantics_matter && stats.other_semantics_differs == 0 {
            problems.push(
                "the other version's window arithmetic agreed everywhere; the data do not \
                 sit on window edges"
                    .to_string(),
            );
        }
        let (low, high) = expect.max_ratio;
        if !(low..=high).contains(&stats.max_ratio) {
            problems.push(format!(
                "largest error ratio {} is not in [{low}, {high}]",
                stats.max_ratio
            ));
        }
        for problem in problems {
            self.failures.push(format!(
                "[{name}] scenario did not exercise its case: {problem}"
            ));
        }
    }

    /// A range query at exactly `times` (evenly spaced), by evaluation time and group key.
    fn query_range(&self, expr: &str, times: &[i64]) -> Answers {
        let (start, end) = (times[0], times[times.len() - 1]);
        let step = if times.len() > 1 {
            times[1] - times[0]
        } else {
            1000
        };
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query_range", self.prom.url()),
            &[
                ("query", expr),
                ("start", &api_seconds(start)),
                ("end", &api_seconds(end)),
                ("step", &api_seconds(step)),
            ],
        )
        .expect("query_range url");
        let response = self
            .client
            .get(url.clone())
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let body: Value = response
            .json()
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
        assert_eq!(body["status"], "success", "query_range `{expr}`: {body}");
        assert_eq!(body["data"]["resultType"], "matrix", "{body}");
        let mut answers = Answers::new();
        for series in body["data"]["result"].as_array().expect("result array") {
            let labels: BTreeMap<String, String> = series["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            for point in series["values"].as_array().expect("values") {
                let at = (point[0].as_f64().expect("timestamp") * 1000.0).round() as i64;
                assert!(
                    times.binary_search(&at).is_ok(),
                    "query_range `{expr}` answered for {at}, not one of the asked times \
                     {start}..={end} step {step}"
                );
                let value = parse_value(&point[1]);
                let by_key = self.by_key(expr, at, vec![(labels.clone(), value)]);
                let entry = answers.entry(at).or_default();
                for (key, value) in by_key {
                    assert!(
                        entry.insert(key.clone(), value).is_none(),
                        "`{expr}` at {at}: two series for {key:?}"
                    );
                }
            }
        }
        answers
    }

    /// Result series by their group-by labels; they must carry no other labels.
    fn by_key(&self, expr: &str, at: i64, result: Vec<Sample>) -> BTreeMap<Key, f64> {
        let group_by = &self.scenario.slo.group_by;
        let mut out = BTreeMap::new();
        for (labels, value) in result {
            let extra: Vec<&String> = labels.keys().filter(|l| !group_by.contains(l)).collect();
            assert!(
                extra.is_empty(),
                "`{expr}` at {at}: unexpected labels {extra:?} in {labels:?}"
            );
            let key: Key = group_by
                .iter()
                .map(|label| {
                    (
                        label.clone(),
                        labels.get(label).cloned().unwrap_or_default(),
                    )
                })
                .collect();
            assert!(
                out.insert(key.clone(), value).is_none(),
                "`{expr}` at {at}: two series for {key:?}"
            );
        }
        out
    }
}

fn close(ours: f64, theirs: f64) -> bool {
    if ours.is_nan() || theirs.is_nan() {
        return ours.is_nan() && theirs.is_nan();
    }
    if ours == theirs {
        return true;
    }
    let difference = (ours - theirs).abs();
    difference <= ABS_TOLERANCE || difference <= REL_TOLERANCE * ours.abs().max(theirs.abs())
}

/// `1700000000.500` for the API (exact milliseconds).
fn api_seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// `1700180010.500 (T0+2d1h10s 500ms)`
fn describe_time(ms: i64) -> String {
    let offset = ms - T0_MS;
    let sign = if offset < 0 { "-" } else { "+" };
    let offset = offset.unsigned_abs();
    let rest = Duration::from_millis(offset % 1000);
    let whole = format_duration(Duration::from_secs(offset / 1000));
    let fraction = if rest.is_zero() {
        String::new()
    } else {
        format!(" {}ms", rest.as_millis())
    };
    format!("{} (T0{sign}{whole}{fraction})", api_seconds(ms))
}

/// `"1.5"`, `"NaN"`, `"+Inf"` → f64.
fn parse_value(value: &Value) -> f64 {
    let text = value.as_str().unwrap_or_else(|| panic!("value {value}"));
    match text {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text
            .parse()
            .unwrap_or_else(|e| panic!("bad sample value {text:?}: {e}")),
    }
}
