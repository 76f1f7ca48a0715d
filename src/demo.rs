//! The seed incident, replayed through the real engine on an accelerated clock.
//!
//! order-service serves `POST /orders` and `GET /orders` with steady traffic and about 0.06%
//! errors against a 99.9% objective. Thirty days in, the payment dependency starts failing for
//! `POST /orders`: the error ratio climbs to 5.73% for about 20 minutes (and an inventory slow
//! path inflates latency), then a fix is deployed and the service recovers. The recording is
//! generated here from a fixed seed, so every run (and every test) sees the same samples;
//! `burnwatch demo --write-data FILE` writes it as OpenMetrics for `replay` or promtool.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alert::Change;
use crate::config::notify::{NotifyConfig, Route};
use crate::config::{self, Document};
use crate::history::SloHistory;
use crate::notify::apply;
use crate::notify::deliver::{self, Sinks};
use crate::notify::outbox::{self, SinkFamily, SlackKind};
use crate::notify::sinks::{Http, SlackApi};
use crate::replay::{Range, Replay, format_percent, format_rate, format_time};
use crate::slo::{Millis, Slo};
use crate::source::openmetrics::{self, Recording, escape_label_value};
use crate::source::prometheus::Secret;
use crate::store::{Store, StoreHandle};
use crate::window::Semantics;

/// The spec the demo runs: the repository's `rules/order-service.yaml`.
pub const SPEC: &str = include_str!("../rules/order-service.yaml");
pub const SPEC_NAME: &str = "rules/order-service.yaml";

/// First sample: 2023-10-15T00:00:00Z, so the 30-day budget window is full at the burst.
pub const START: i64 = 1_697_328_000;
pub const SCRAPE_SECONDS: i64 = 30;
/// The payment dependency starts failing thirty days and one hour in.
pub const BURST_START: i64 = START + 30 * 86_400 + 3_600;
/// Ramp up, 5.73% plateau, ramp down (seconds).
const RAMP_UP: i64 = 180;
const PLATEAU: i64 = 20 * 60;
const RAMP_DOWN: i64 = 120;
pub const END: i64 = BURST_START + 3 * 3_600;

const ROUTES: [(&str, f64); 2] = [("POST /orders", 6.0), ("GET /orders", 24.0)];
const BASELINE_ERRORS: f64 = 0.0006;
const PEAK_ERRORS: f64 = 0.0573;
/// Latency bucket bounds and the share of requests slower than each, at rest and in the burst.
const BUCKETS: [(&str, f64, f64); 3] = [
    ("0.1", 0.05, 0.22),
    ("0.3", 0.003, 0.04),
    ("1", 0.0005, 0.008),
];

/// xorshift64*: small, deterministic, good enough for traffic noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How far into the burst `at` is: 0 at rest, 1 on the plateau.
fn burst_level(at: i64) -> f64 {
    let into = at - BURST_START;
    if into <= 0 || into >= RAMP_UP + PLATEAU + RAMP_DOWN {
        0.0
    } else if into < RAMP_UP {
        into as f64 / RAMP_UP as f64
    } else if into <= RAMP_UP + PLATEAU {
        1.0
    } else {
        (RAMP_UP + PLATEAU + RAMP_DOWN - into) as f64 / RAMP_DOWN as f64
    }
}

/// Counts of one route's counters at one scrape.
#[derive(Default, Clone)]
struct RouteCounters {
    ok: f64,
    failed: f64,
    /// Requests at or under each bucket bound (cumulative as Prometheus histograms are).
    buckets: [f64; 3],
    count: f64,
    carry_failed: f64,
    carry_slow: [f64; 3],
}

/// The recording of the seed incident as OpenMetrics text.
pub fn recording_text() -> String {
    let mut noise = Noise(0x5eed_0fb0_a4d5);
    let scrapes = (END - START) / SCRAPE_SECONDS + 1;
    let mut history: Vec<Vec<RouteCounters>> =
        vec![Vec::with_capacity(scrapes as usize); ROUTES.len()];
    let mut state = vec![RouteCounters::default(); ROUTES.len()];
    for scrape in 0..scrapes {
        let at = START + scrape * SCRAPE_SECONDS;
        for (route_index, (route, rps)) in ROUTES.iter().enumerate() {
            let counters = &mut state[route_index];
            let level = if *route == "POST /orders" {
                burst_level(at)
            } else {
                0.0
            };
            let requests = (rps * SCRAPE_SECONDS as f64 * (0.9 + 0.2 * noise.next())).round();
            let error_share = BASELINE_ERRORS + (PEAK_ERRORS - BASELINE_ERRORS) * level;
            counters.carry_failed += requests * error_share * (0.5 + noise.next());
            let failed = counters.carry_failed.floor().min(requests);
            counters.carry_failed -= failed;
            counters.failed += failed;
            counters.ok += requests - failed;
            counters.count += requests;
            for (bucket, (_, rest, burst)) in BUCKETS.iter().enumerate() {
                let slow_share = rest + (burst - rest) * level;
                counters.carry_slow[bucket] += requests * slow_share * (0.5 + noise.next());
                let slow = counters.carry_slow[bucket].floor().min(requests);
                counters.carry_slow[bucket] -= slow;
                counters.buckets[bucket] += requests - slow;
            }
            history[route_index].push(counters.clone());
        }
    }
    let mut out = String::with_capacity(scrapes as usize * ROUTES.len() * 8 * 90);
    // One series: `key` (name and labels) with one sample per scrape.
    let series = |out: &mut String,
                  key: &str,
                  samples: &[RouteCounters],
                  value: &dyn Fn(&RouteCounters) -> f64| {
        for (scrape, counters) in samples.iter().enumerate() {
            let at = START + scrape as i64 * SCRAPE_SECONDS;
            let _ = writeln!(out, "{key} {} {at}", value(counters));
        }
    };
    let labels: Vec<String> = ROUTES
        .iter()
        .map(|(route, _)| {
            format!(
                "route=\"{}\",service=\"order-service\"",
                escape_label_value(route)
            )
        })
        .collect();
    out.push_str("# TYPE http_requests counter\n");
    for (code, failed) in [("200", false), ("500", true)] {
        for (route_index, labels) in labels.iter().enumerate() {
            let key = format!("http_requests_total{{code=\"{code}\",{labels}}}");
            let value =
                |counters: &RouteCounters| if failed { counters.failed } else { counters.ok };
            series(&mut out, &key, &history[route_index], &value);
        }
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for (route_index, labels) in labels.iter().enumerate() {
        let samples = &history[route_index];
        for (bucket, (le, _, _)) in BUCKETS.iter().enumerate() {
            let key = format!("http_request_duration_seconds_bucket{{le=\"{le}\",{labels}}}");
            series(&mut out, &key, samples, &|counters| {
                counters.buckets[bucket]
            });
        }
        let key = format!("http_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}}");
        series(&mut out, &key, samples, &|counters| counters.count);
        let key = format!("http_request_duration_seconds_count{{{labels}}}");
        series(&mut out, &key, samples, &|counters| counters.count);
    }
    out.push_str("# EOF\n");
    out
}

/// The demo's SLOs and recording.
pub fn load() -> Result<(Vec<Slo>, Recording), String> {
    let slos = match config::load_str(SPEC_NAME, SPEC, std::path::Path::new(".")) {
        Ok(Document::Slos(slos)) => slos,
        Ok(Document::Daemon(_)) => return Err(format!("{SPEC_NAME} is not an SLO spec")),
        Err(errors) => return Err(config::ConfigErrors(errors).to_string()),
    };
    let recording = openmetrics::parse("seed incident", &recording_text())
        .map_err(|error| error.to_string())?;
    Ok((slos, recording))
}

/// The replay range the demo shows: from 30 minutes before the burst to the end.
pub fn range() -> Range {
    Range {
        from: (BURST_START - 1_800) * 1000,
        to: END * 1000,
        step: Duration::from_secs(SCRAPE_SECONDS as u64),
    }
}

/// Where the demo posts for real, when asked to.
pub struct DemoSlack {
    pub api_url: String,
    pub token: Secret,
    /// Every message to this channel; else pages to `#incidents`, tickets to `#slo-alerts`.
    pub channel: Option<String>,
}

/// The demo's notification path: the daemon's outbox planner (in memory) and, with a Slack
/// token, the daemon's delivery worker.
struct Notifier {
    store: StoreHandle,
    notify: NotifyConfig,
    last_row: i64,
    delivery: Option<(tokio::runtime::Runtime, Arc<Notify>, CancellationToken)>,
}

impl Notifier {
    fn new(slack: Option<DemoSlack>) -> anyhow::Result<Notifier> {
        let store = StoreHandle::spawn(Store::in_memory()?)?;
        let mut notify = NotifyConfig::default();
        if let Some(channel) = slack.as_ref().and_then(|slack| slack.channel.clone()) {
            notify.routes = vec![Route {
                matchers: Vec::new(),
                slack_channel: Some(channel),
            }];
        }
        let delivery = match slack {
            None => None,
            Some(slack) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()?;
                let api = {
                    let _entered = runtime.enter();
                    SlackApi::new(&slack.api_url, &slack.token, Duration::from_secs(10))?
                };
                let sinks = Arc::new(Sinks {
                    slack_api: Some(api),
                    slack_webhook: None,
                    webhooks: Vec::new(),
                    alertmanager: None,
                    http: Http::new()?,
                });
                let (_, receiver) = tokio::sync::watch::channel(sinks);
                let wake = Arc::new(Notify::new());
                let stop = CancellationToken::new();
                let database_id = store.call_blocking(|store| store.database_id())?;
                let context = deliver::Context {
                    store: store.clone(),
                    database_id,
                    sinks: receiver,
                    metrics: deliver::DeliveryMetrics {
                        depth: Default::default(),
                        delivered: Default::default(),
                        failures: Default::default(),
                        delay: prometheus_client::metrics::histogram::Histogram::new([1.0]),
                        store_errors: Default::default(),
                        store_backoff: Default::default(),
                    },
                    wake: wake.clone(),
                    alertmanager_lock: Default::default(),
                    leads: std::sync::Arc::new(|| true),
                    shutdown: stop.clone(),
                };
                runtime.spawn(deliver::worker(SinkFamily::Slack, context));
                Some((runtime, wake, stop))
            }
        };
        Ok(Notifier {
            store,
            notify,
            last_row: 0,
            delivery,
        })
    }

    /// Queues the notifications of `events` and returns what was queued: (kind, channel,
    /// mrkdwn).
    fn queue(
        &mut self,
        slos: &[Slo],
        events: &[crate::engine::Event],
    ) -> anyhow::Result<Vec<(String, String, String)>> {
        let owned: Vec<(Slo, crate::engine::Event)> = events
            .iter()
            .filter_map(|event| {
                let slo = slos.iter().find(|slo| slo.id == event.slo_id)?;
                Some((slo.clone(), event.clone()))
            })
            .collect();
        let (notify, last_row) = (self.notify.clone(), self.last_row);
        let rows = self.store.call_blocking(move |store| {
            let plan = outbox::Plan {
                notify: &notify,
                silences: &[],
                slack: Some(SlackKind::WebApi),
                external_url: "http://127.0.0.1:9099",
            };
            let pairs: Vec<(&Slo, &crate::engine::Event)> =
                owned.iter().map(|(slo, event)| (slo, event)).collect();
            store.save_cycle(&[], |tx| {
                apply::queue_events(tx, &plan, &pairs, deliver::wall_clock())
            })?;
            store.queued_after(last_row)
        })?;
        if let Some((_, wake, _)) = &self.delivery {
            wake.notify_one();
        }
        Ok(rows
            .into_iter()
            .map(|(id, _, kind, payload)| {
                self.last_row = self.last_row.max(id);
                let mrkdwn = payload["blocks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|block| {
                        let mut texts =
                            vec![block["text"]["text"].as_str().unwrap_or("").to_string()];
                        for element in block["elements"].as_array().into_iter().flatten() {
                            texts.push(element["text"].as_str().unwrap_or("").to_string());
                        }
                        texts
                    })
                    .filter(|text| !text.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n");
                (
                    kind.to_string(),
                    payload["channel"].as_str().unwrap_or("").to_string(),
                    mrkdwn,
                )
            })
            .collect())
    }

    /// Waits (up to a minute) until everything queued is delivered or given up; returns how
    /// many were not delivered.
    fn drain(self) -> anyhow::Result<i64> {
        let Some((runtime, _, stop)) = self.delivery else {
            return Ok(0);
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let pending = loop {
            let pending: i64 = self
                .store
                .call_blocking(|store| store.depth())?
                .iter()
                .map(|(_, count)| count)
                .sum();
            if pending == 0 || deadline < std::time::Instant::now() {
                break pending;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        stop.cancel();
        runtime.shutdown_timeout(Duration::from_secs(5));
        let failed = self
            .store
            .call_blocking(|store| store.outbox_rows())?
            .iter()
            .filter(|row| row["state"] == "failed")
            .count() as i64;
        Ok(pending + failed)
    }
}

/// The status page while the demo runs: serve's HTTP face over the demo's state (its SLOs,
/// their windows and alerts at each step, their histories, the outbox of its messages).
struct Board {
    runtime: tokio::runtime::Runtime,
    shared: Arc<crate::daemon::Shared>,
    histories: Vec<(String, Arc<std::sync::Mutex<SloHistory>>)>,
    stop: CancellationToken,
    url: String,
}

impl Board {
    fn start(listen: SocketAddr, slos: &[Slo], store: StoreHandle) -> anyhow::Result<Board> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(listen))?;
        let url = format!("http://{}/", listener.local_addr()?);
        let histories: Vec<(String, Arc<std::sync::Mutex<SloHistory>>)> = slos
            .iter()
            .map(|slo| {
                (
                    slo.id.clone(),
                    Arc::new(std::sync::Mutex::new(SloHistory::new(slo))),
                )
            })
            .collect();
        let (reloads, _) = tokio::sync::mpsc::channel(1);
        let shared = Arc::new(crate::daemon::Shared {
            status: Default::default(),
            metrics: std::sync::Mutex::new(crate::metrics::Metrics::new()),
            reload_token: Default::default(),
            reloads,
            store,
            config_silences: Default::default(),
            max_silences: crate::config::WebLimits::default().max_silences.into(),
            pages: std::sync::RwLock::new(Arc::new(crate::page::PageSource {
                slos: slos
                    .iter()
                    .zip(&histories)
                    .map(|(slo, (_, history))| (slo.clone(), history.clone()))
                    .collect(),
            })),
            ha: std::sync::RwLock::new(None),
        });
        let stop = CancellationToken::new();
        runtime.spawn(crate::server::serve(
            listener,
            shared.clone(),
            crate::config::WebLimits::default(),
            stop.clone(),
        ));
        Ok(Board {
            runtime,
            shared,
            histories,
            stop,
            url,
        })
    }

    /// Shows the evaluation at `now`: every instance's windows, the alerts, the histories.
    fn publish(
        &self,
        slos: &[Slo],
        replay: &mut Replay,
        recording: &Recording,
        events: &[crate::engine::Event],
        now: Millis,
    ) {
        let mut statuses = Vec::with_capacity(slos.len());
        for (slo, (_, history)) in slos.iter().zip(&self.histories) {
            let windows = crate::source::live::windows_with_period(slo);
            let instances: Vec<_> = replay
                .instances_of(&slo.id)
                .into_iter()
                .map(|(index, labels)| {
                    let values: Vec<_> = windows
                        .iter()
                        .filter_map(|window| {
                            Some((*window, replay.measure(recording, index, now, *window)?))
                        })
                        .collect();
                    (labels, values)
                })
                .collect();
            {
                let mut history = history.lock().unwrap_or_else(|e| e.into_inner());
                for (labels, values) in &instances {
                    history.record(now, labels, values, slo.objective.error_budget());
                }
                for event in events.iter().filter(|event| event.slo_id == slo.id) {
                    history.note(event);
                }
            }
            statuses.push(crate::daemon::evaluated_status(slo, instances, now));
        }
        let mut status = self
            .shared
            .status
            .write()
            .unwrap_or_else(|e| e.into_inner());
        status.slos = Arc::new(statuses);
        status.alerts = Arc::new(replay.alerts());
        status.last_evaluation = Some(now);
        status.ready = true;
    }

    /// Keeps serving until Ctrl-C, then stops.
    fn linger(self) {
        let _ = self.runtime.block_on(tokio::signal::ctrl_c());
        self.stop.cancel();
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Replays the seed incident, printing a status line every five virtual minutes and every
/// Slack message as serve would send it (post, update in place, thread reply). With `slack`
/// the messages are posted for real. `pace` is the real time per 30 s evaluation step.
pub fn run(
    out: &mut impl Write,
    pace: Duration,
    slack: Option<DemoSlack>,
    listen: Option<SocketAddr>,
    semantics: Semantics,
) -> anyhow::Result<()> {
    let posting = slack.is_some();
    let mut notifier = Notifier::new(slack)?;
    let (slos, mut recording) = load().map_err(io::Error::other)?;
    recording.semantics = semantics;
    let range = range();
    let (mut replay, skipped) = Replay::new(&slos, &recording);
    // The status page: a port already taken costs the page, not the demo.
    let board = match listen.map(|address| Board::start(address, &slos, notifier.store.clone())) {
        Some(Ok(board)) => {
            writeln!(out, "status page: {} (while the demo runs)", board.url)?;
            Some(board)
        }
        Some(Err(error)) => {
            writeln!(
                out,
                "no status page: cannot listen on {}: {error:#}",
                listen.map_or(String::new(), |a| a.to_string())
            )?;
            None
        }
        None => None,
    };
    writeln!(
        out,
        "burnwatch demo: the order-service seed incident, replayed through the real engine"
    )?;
    writeln!(
        out,
        "spec {SPEC_NAME} ({} SLOs) · recording: {} series, {} samples, 30s scrapes since {}",
        slos.len(),
        recording.series.len(),
        recording.samples,
        format_time(START * 1000)
    )?;
    writeln!(
        out,
        "virtual clock {} → {}, one evaluation per 30s; windows as {} (--semantics)\n",
        format_time(range.from),
        format_time(range.to),
        recording.semantics
    )?;
    for skip in skipped {
        writeln!(out, "skipped {}: {}", skip.slo_id, skip.reason)?;
    }
    let availability = slos
        .iter()
        .find(|slo| slo.name == "requests-availability")
        .ok_or_else(|| io::Error::other("the demo spec has no requests-availability SLO"))?;
    for (tick, now) in range.times().enumerate() {
        let events = replay.step(&recording, now);
        if let Some(board) = &board {
            board.publish(&slos, &mut replay, &recording, &events, now);
        }
        if tick % 10 == 0 {
            status_line(out, &mut replay, &recording, availability, now)?;
        }
        for event in &events {
            if !matches!(
                event.change,
                Change::Firing | Change::Reminder | Change::Resolved
            ) {
                writeln!(
                    out,
                    "{}  {} {} {}",
                    clock(event.at),
                    event.slo_id,
                    event.tier,
                    event.change.as_str()
                )?;
            }
        }
        for (kind, channel, mrkdwn) in notifier.queue(&slos, &events)? {
            let verb = match kind.as_str() {
                "post" => "chat.postMessage (new incident)",
                "update" => "chat.update (the incident's root message)",
                _ => "chat.postMessage (reply in the incident's thread)",
            };
            writeln!(out, "\n┌─ Slack {channel} · {verb} · {}", format_time(now))?;
            for line in mrkdwn.lines() {
                writeln!(out, "│ {line}")?;
            }
            writeln!(out, "└─\n")?;
        }
        out.flush()?;
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    if posting {
        let left = notifier.drain()?;
        if left == 0 {
            writeln!(out, "every message was delivered to Slack")?;
        } else {
            anyhow::bail!("{left} messages could not be delivered to Slack (see the log)");
        }
    }
    if let Some(board) = board {
        // On a terminal the page stays for a look; a script's run ends here.
        if io::IsTerminal::is_terminal(&io::stdout()) {
            writeln!(out, "the status page stays at {} until Ctrl-C", board.url)?;
            out.flush()?;
            board.linger();
        }
    }
    Ok(())
}

fn clock(at: Millis) -> String {
    format_time(at)[11..16].to_string()
}

fn status_line(
    out: &mut impl Write,
    replay: &mut Replay,
    recording: &Recording,
    slo: &Slo,
    now: Millis,
) -> io::Result<()> {
    let budget = slo.objective.error_budget();
    let mut line = clock(now);
    for (instance, labels) in replay.instances_of(&slo.id) {
        let route = labels
            .first()
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        let mut read = |window: u64| {
            replay
                .measure(recording, instance, now, Duration::from_secs(window))
                .map_or(f64::NAN, |value| value.error_ratio)
        };
        let (five_minutes, hour) = (read(300), read(3_600));
        let _ = write!(
            line,
            "  {route}: errors {} (5m) {} (1h), burn {} / {}",
            format_percent(five_minutes),
            format_percent(hour),
            format_rate(hour / budget),
            format_rate(five_minutes / budget)
        );
    }
    writeln!(out, "{line}")
}
