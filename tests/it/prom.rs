//! A real Prometheus as a test fixture, for differential tests: backfill OpenMetrics text
//! with `promtool`, start `prometheus` on a free loopback port with that TSDB, and run instant
//! queries against it. For the daemon's tests it can also scrape live targets
//! (`start_scraping`), and be stopped and started again on the same port with the same TSDB
//! (`stop`, `restart`) to simulate an outage.
//!
//! Two versions ([`Version`]): 2.42 from Debian's `prometheus` package (on `PATH`), the default,
//! and 3.16 built from the Go module proxy by `scripts/build-tools` into its cache
//! (`$BURNWATCH_TOOLS`, else `~/.cache/burnwatch/tools`); `./scripts/test` provides both.
//! Every instance has its own temp dir and port, so tests may start several in parallel.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A Prometheus release the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Debian bookworm's package: the 2.x arithmetic (closed windows).
    V2_42,
    /// Built by `scripts/build-tools`: left-open windows, `le` normalised when scraped.
    V3_16,
}

/// Both versions, for tests that compare burnwatch with each.
pub const VERSIONS: [Version; 2] = [Version::V2_42, Version::V3_16];

impl Version {
    /// What `--version` prints after "version ".
    fn expected(self) -> &'static str {
        match self {
            Version::V2_42 => "2.42.",
            Version::V3_16 => "3.16.",
        }
    }

    /// The version burnwatch is told or detects (`buildinfo`'s form).
    pub fn number(self) -> &'static str {
        match self {
            Version::V2_42 => "2.42.0",
            Version::V3_16 => "3.16.0",
        }
    }

    /// The window arithmetic burnwatch follows for this version.
    pub fn semantics(self) -> burnwatch::window::Semantics {
        burnwatch::window::Semantics::of_version(self.number()).expect("a Prometheus version")
    }

    /// The `prometheus` or `promtool` binary of this version.
    pub fn binary(self, name: &str) -> PathBuf {
        match self {
            Version::V2_42 => PathBuf::from(name),
            Version::V3_16 => crate::tools::dir("prometheus", "3.16.0").join(name),
        }
    }
}
/// How long `start` waits for `/-/ready` and the backfilled data, per attempt.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at finding a free port (another process may grab the one we picked).
const PORT_ATTEMPTS: usize = 5;
/// Minimal config: no scrape targets at all, so the head stays empty and only the
/// backfilled blocks hold data.
const CONFIG: &str = "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n";

/// One series of an instant query result: its labels (incl. `__name__` if present) and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// One series of a range query result: its labels and its (milliseconds, value) points.
pub type Points = (BTreeMap<String, String>, Vec<(i64, f64)>);

/// The job name of the scrape config `start_scraping` writes (`up{job="live"}`).
pub const SCRAPE_JOB: &str = "live";

pub struct Prometheus {
    version: Version,
    // None while stopped (see `stop` and `restart`).
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    data: PathBuf,
    log_path: PathBuf,
    client: reqwest::blocking::Client,
    // Dropped after `drop` killed the child; None only while `launch` retries.
    dir: Option<tempfile::TempDir>,
}

impl Prometheus {
    /// Backfills `openmetrics` (OpenMetrics text, timestamps in seconds, ending in `# EOF`;
    /// the `# EOF` line is appended if missing) with
    /// `promtool tsdb create-blocks-from openmetrics FILE DIR` into a fresh temp dir, starts
    /// `prometheus` on 127.0.0.1:<free port> with that dir as its TSDB, and waits until
    /// `/-/ready` answers 200 and every backfilled sample is queryable.
    ///
    /// Panics with promtool's / prometheus' output on failure.
    pub fn start(openmetrics: &str) -> Prometheus {
        Prometheus::start_version(Version::V2_42, openmetrics)
    }

    /// [`Prometheus::start`] on `version`.
    pub fn start_version(version: Version, openmetrics: &str) -> Prometheus {
        Prometheus::start_backfilled(version, openmetrics, None)
    }

    /// [`Prometheus::start`] with `rules` (a rule file's YAML) loaded and evaluated every
    /// second.
    pub fn start_with_rules(openmetrics: &str, rules: &str) -> Prometheus {
        Prometheus::start_backfilled(Version::V2_42, openmetrics, Some(rules))
    }

    fn start_backfilled(version: Version, openmetrics: &str, rules: Option<&str>) -> Prometheus {
        check_version(version);
        let dir = tempfile::Builder::new()
            .prefix("burnwatch-prom-")
            .tempdir()
            .expect("create temp dir for prometheus");
        let data = dir.path().join("data");
        let input = dir.path().join("input.om");
        let config = dir.path().join("prometheus.yml");

        let mut text = openmetrics.trim_end().to_owned();
        if !text.ends_with("# EOF") {
            text.push_str("\n# EOF");
        }
        text.push('\n');
        fs::write(&input, text).expect("write openmetrics input");
        match rules {
            None => fs::write(&config, CONFIG).expect("write prometheus config"),
            Some(rules) => {
                let path = dir.path().join("rules.yml");
                fs::write(&path, rules).expect("write rules");
                fs::write(
                    &config,
                    format!(
                        "global:\n  scrape_interval: 15s\n  evaluation_interval: 1s\n\
                         rule_files: [{:?}]\n",
                        path.display().to_string()
                    ),
                )
                .expect("write prometheus config");
            }
        }

        // Large blocks: the default 2h blocks make a month of data hundreds of blocks, and
        // promtool takes minutes to write them.
        let out = run_tool(
            Command::new(version.binary("promtool"))
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg("--max-block-duration=744h")
                .arg(&input)
                .arg(&data),
            "promtool",
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            panic!(
                "promtool tsdb create-blocks-from openmetrics failed ({}):\n{}\n{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let blocks = parse_blocks(&stdout);
        // An input without samples makes no blocks (and maybe no dir).
        fs::create_dir_all(&data).expect("create tsdb dir");

        let prom = Prometheus::launch(version, dir, config, data);
        prom.wait_backfilled(&blocks);
        prom
    }

    /// Starts `prometheus` with an empty TSDB, scraping `targets` (`host:port`, path
    /// `/metrics`) every `scrape_interval` as job [`SCRAPE_JOB`], and waits until `/-/ready`
    /// answers 200. Samples get the labels `job` and `instance`, as in any scrape.
    pub fn start_scraping(targets: &[String], scrape_interval: Duration) -> Prometheus {
        Prometheus::start_scraping_version(Version::V2_42, targets, scrape_interval, "")
    }

    /// [`Prometheus::start_scraping`] on `version`, with `scrape_extra` (YAML lines indented
    /// as keys of the scrape config, e.g. `    scrape_native_histograms: true\n`) added to
    /// the job.
    pub fn start_scraping_version(
        version: Version,
        targets: &[String],
        scrape_interval: Duration,
        scrape_extra: &str,
    ) -> Prometheus {
        check_version(version);
        let dir = tempfile::Builder::new()
            .prefix("burnwatch-prom-")
            .tempdir()
            .expect("create temp dir for prometheus");
        let data = dir.path().join("data");
        let config = dir.path().join("prometheus.yml");
        let interval = format!("{}ms", scrape_interval.as_millis().max(1));
        let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
        let text = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
             evaluation_interval: 15s\nscrape_configs:\n  - job_name: {SCRAPE_JOB}\n    \
             static_configs:\n      - targets: [{}]\n{scrape_extra}",
            targets.join(", ")
        );
        fs::write(&config, text).expect("write prometheus config");
        fs::create_dir_all(&data).expect("create tsdb dir");
        Prometheus::launch(version, dir, config, data)
    }

    /// Starts `prometheus` on a free port (retrying with another port if it was taken) and
    /// waits until it is ready.
    fn launch(
        version: Version,
        mut dir: tempfile::TempDir,
        config: PathBuf,
        data: PathBuf,
    ) -> Prometheus {
        burnwatch::source::prometheus::install_crypto_provider();
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build http client");

        let log_path = dir.path().join("prometheus.log");
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut prom = Prometheus {
                version,
                child: None,
                port,
                config: config.clone(),
                data: data.clone(),
                log_path: log_path.clone(),
                client: client.clone(),
                dir: Some(dir),
            };
            prom.spawn();
            match prom.wait_ready() {
                Ok(()) => return prom,
                Err(Retry(why)) => {
                    failures.push(format!("port {port}: {why}"));
                    // Keep the temp dir (and its blocks) for the next attempt.
                    dir = prom.dir.take().expect("temp dir");
                    drop(prom);
                }
            }
        }
        panic!(
            "prometheus could not get a free port after {PORT_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// Runs `prometheus` on `self.port` with `self.config` and `self.data`.
    fn spawn(&mut self) {
        let log = File::create(&self.log_path).expect("create prometheus log");
        let child = Command::new(self.version.binary("prometheus"))
            .arg(format!("--config.file={}", self.config.display()))
            .arg(format!("--storage.tsdb.path={}", self.data.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prometheus: {e}{}", install_hint(&e)));
        self.child = Some(child);
    }

    /// Kills Prometheus (SIGKILL, as a crash or a lost machine would) and waits for it to
    /// exit. Its TSDB is kept for `restart`, which binds the same port again (nothing reserves
    /// the port meanwhile). Does nothing if already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Prometheus again after `stop`, on the same port with the same TSDB and config
    /// (it replays its WAL), and waits until it is ready. Panics if it does not get there
    /// within the ready timeout.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart: prometheus is still running; stop it first"
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(Retry(why)) => {
                    self.stop();
                    if Instant::now() > deadline {
                        panic!(
                            "prometheus could not restart on port {}: {why}\n{}",
                            self.port,
                            self.log_tail()
                        );
                    }
                    sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Waits until `targets` scrape targets of [`SCRAPE_JOB`] are up (`up == 1`), i.e. each
    /// has been scraped successfully at least once. Prometheus 2.42 applies discovered targets
    /// on a 5s tick, so the first scrape comes up to ~5s after start.
    pub fn wait_until_up(&self, targets: usize) {
        let expr = format!("count(up{{job=\"{SCRAPE_JOB}\"}} == 1)");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs_f64();
            let up = self.query_one(&expr, now).unwrap_or(0.0);
            if up == targets as f64 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "prometheus at {}: `{expr}` is {up}, expected {targets}:\n{}",
                    self.url(),
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Instant query at unix time `at` (seconds). Returns each result series as
    /// (labels incl. `__name__` if present, value); a scalar result is one series with no
    /// labels. Panics with Prometheus' errorType/error if the query fails.
    pub fn query(&self, expr: &str, at: f64) -> Vec<Sample> {
        self.try_query(expr, at)
            .unwrap_or_else(|e| panic!("query `{expr}` at {at} failed: {e}"))
    }

    /// Like `query`, but returns Prometheus' error (`errorType: error`) instead of panicking.
    pub fn try_query(&self, expr: &str, at: f64) -> Result<Vec<Sample>, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url()),
            &[("query", expr), ("time", &at.to_string())],
        )
        .expect("build query url");
        let body = self.get_json(url.as_str());
        if body["status"] != "success" {
            return Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("?")
            ));
        }
        let data = &body["data"];
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("vector") => Ok(result
                .as_array()
                .unwrap_or_else(|| panic!("vector result is not an array: {body}"))
                .iter()
                .map(|series| {
                    let labels = labels_of(series)
                        .unwrap_or_else(|| panic!("series without metric: {body}"));
                    (labels, parse_value(&series["value"]))
                })
                .collect()),
            Some("scalar") => Ok(vec![(BTreeMap::new(), parse_value(result))]),
            other => panic!(
                "query `{expr}`: result type {other:?} is not supported (instant vectors and \
                 scalars only): {body}"
            ),
        }
    }

    /// The value of a query that must return at most one series: None if it returns none.
    pub fn query_one(&self, expr: &str, at: f64) -> Option<f64> {
        let mut result = self.query(expr, at);
        match result.len() {
            0 => None,
            1 => Some(result.remove(0).1),
            n => panic!("query `{expr}` at {at} returned {n} series, expected one: {result:?}"),
        }
    }

    /// A range query from `start` to `end` (unix seconds) every `step` seconds: each result
    /// series' labels and its (milliseconds, value) points. Panics if the query fails.
    pub fn query_range(&self, expr: &str, start: f64, end: f64, step: f64) -> Vec<Points> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query_range", self.url()),
            &[
                ("query", expr),
                ("start", &start.to_string()),
                ("end", &end.to_string()),
                ("step", &step.to_string()),
            ],
        )
        .expect("build query_range url");
        let body = self.get_json(url.as_str());
        assert_eq!(body["status"], "success", "query_range `{expr}`: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query_range `{expr}`: no matrix: {body}"))
            .iter()
            .map(|series| {
                let labels = labels_of(series).unwrap_or_default();
                let points = series["values"]
                    .as_array()
                    .map(|values| {
                        values
                            .iter()
                            .map(|point| {
                                let at = (point[0].as_f64().expect("a time") * 1000.0).round();
                                (at as i64, parse_value(point))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (labels, points)
            })
            .collect()
    }

    fn get_json(&self, url: &str) -> Value {
        let resp = self
            .client
            .get(url)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", self.log_tail()));
        // Prometheus answers errors with 4xx/5xx and a JSON body: read it regardless.
        let status = resp.status();
        let text = resp
            .text()
            .unwrap_or_else(|e| panic!("GET {url}: reading body: {e}"));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {url}: {status}: body is not JSON ({e}): {text}"))
    }

    /// Waits for `/-/ready`, then checks that the answering server is ours (the port may
    /// have been taken by another process between picking and binding it).
    fn wait_ready(&mut self) -> Result<(), Retry> {
        let ready = format!("{}/-/ready", self.url());
        let child = self.child.as_mut().expect("prometheus was started");
        wait_http_ready(
            "prometheus",
            child,
            &self.client,
            &ready,
            READY_TIMEOUT,
            &self.log_path,
        )?;
        let flags = self.get_json(&format!("{}/api/v1/status/flags", self.url()));
        let path = flags["data"]["storage.tsdb.path"].as_str().unwrap_or("");
        if Path::new(path) != self.data {
            return Err(Retry(format!(
                "another server answers on the port (its tsdb path: {path:?})"
            )));
        }
        Ok(())
    }

    /// Waits until every sample promtool wrote answers a query.
    fn wait_backfilled(&self, blocks: &[Block]) {
        let (Some(min), Some(max)) = (
            blocks.iter().map(|b| b.min_ms).min(),
            blocks.iter().map(|b| b.max_ms).max(),
        ) else {
            return;
        };
        let expected: u64 = blocks.iter().map(|b| b.samples).sum();
        // promtool's max time is exclusive (last sample + 1 ms). A range one millisecond
        // longer than first..last covers every sample whether its start is in the range (2.x)
        // or not (3.x).
        let last = max - 1;
        let expr = format!(
            "sum(count_over_time({{__name__=~\".+\"}}[{}ms]))",
            last - min + 1
        );
        let at = last as f64 / 1000.0;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.query_one(&expr, at).unwrap_or(0.0);
            if got == expected as f64 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "prometheus at {} answers `{expr}` at {at} with {got}, but promtool \
                     backfilled {expected} samples in {} blocks:\n{}",
                    self.url(),
                    blocks.len(),
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// The last few KiB of prometheus' stdout/stderr.
    fn log_tail(&self) -> String {
        log_tail("prometheus", &self.log_path)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use crate::child::{Retry, log_tail};

/// Polls `ready` until it answers 200 within `timeout`. A child that exits because its port
/// is taken is a [`Retry`]; any other exit, or no answer in time, panics with the log tail.
pub fn wait_http_ready(
    name: &str,
    child: &mut Child,
    client: &reqwest::blocking::Client,
    ready: &str,
    timeout: Duration,
    log_path: &Path,
) -> Result<(), Retry> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .unwrap_or_else(|e| panic!("poll {name}: {e}"))
        {
            let log = log_tail(name, log_path);
            if log.contains("address already in use") {
                return Err(Retry(format!("address already in use ({status})")));
            }
            panic!("{name} exited during startup ({status}):\n{log}");
        }
        let ok = client
            .get(ready)
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            panic!(
                "{name} not ready at {ready} after {timeout:?}:\n{}",
                log_tail(name, log_path)
            );
        }
        sleep(Duration::from_millis(50));
    }
}

/// One row of promtool's block table.
#[derive(Debug)]
struct Block {
    min_ms: i64,
    max_ms: i64,
    samples: u64,
}

/// Parses promtool's table: `ULID MIN_TIME MAX_TIME DURATION NUM_SAMPLES NUM_CHUNKS ...`.
fn parse_blocks(stdout: &str) -> Vec<Block> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("BLOCK ULID"))
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let parsed = (f.len() >= 5)
                .then(|| Some((f[1].parse().ok()?, f[2].parse().ok()?, f[4].parse().ok()?)))
                .flatten();
            let Some((min_ms, max_ms, samples)) = parsed else {
                panic!("unexpected line in promtool output: {line:?}\n{stdout}");
            };
            Block {
                min_ms,
                max_ms,
                samples,
            }
        })
        .collect()
}

/// Parses `[time, "value"]`, where value may be "NaN", "+Inf" or "-Inf".
fn parse_value(pair: &Value) -> f64 {
    let s = pair[1]
        .as_str()
        .unwrap_or_else(|| panic!("not a [time, \"value\"] pair: {pair}"));
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s
            .parse()
            .unwrap_or_else(|e| panic!("bad sample value {s:?}: {e}")),
    }
}

/// A result series' `metric` as a label map; `None` when it has none.
fn labels_of(series: &Value) -> Option<BTreeMap<String, String>> {
    let metric = series["metric"].as_object()?;
    Some(
        metric
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
    )
}

/// Picks a port the OS considers free right now; `start` retries if it is taken meanwhile.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn install_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == ErrorKind::NotFound {
        " (not on PATH: run ./scripts/test, which installs Debian's `prometheus` package, \
         or `apt-get install prometheus`)"
    } else {
        ""
    }
}

fn run_tool(cmd: &mut Command, name: &str) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}{}", install_hint(&e)))
}

/// Both binaries of `version` must say that version: the differential tests pin its
/// semantics.
fn check_version(version: Version) {
    for name in ["prometheus", "promtool"] {
        crate::tools::check_version(
            &version.binary(name),
            version.expected(),
            "run ./scripts/test, which installs Debian bookworm's `prometheus` package (2.42) \
             and builds 3.16 with scripts/build-tools",
        );
    }
}

// ---- tests of the fixture itself ----

const T0: i64 = 1_700_000_000;

/// `http_requests_total{code="200"}` every 30 s from T0 for `samples` samples, starting
/// at 1000 and increasing by 10 per sample. (Starting above 0 keeps Prometheus from
/// clamping the extrapolation at the series start to where the counter would be zero.)
fn counter(samples: i64) -> String {
    let mut s = String::from("# TYPE http_requests counter\n");
    for i in 0..samples {
        s.push_str(&format!(
            "http_requests_total{{code=\"200\"}} {} {}\n",
            1000 + 10 * i,
            T0 + 30 * i
        ));
    }
    s.push_str("# EOF\n");
    s
}

fn at(offset: i64) -> f64 {
    (T0 + offset) as f64
}

#[test]
fn prometheus_fixture_answers_backfilled_counter() {
    // 2 h: samples at T0 .. T0+7170 (240 samples).
    let prom = Prometheus::start(&counter(240));
    assert!(
        prom.url().starts_with("http://127.0.0.1:"),
        "{}",
        prom.url()
    );

    // The raw series, with its name and labels.
    let raw = prom.query("http_requests_total", at(3600));
    let labels = BTreeMap::from([
        ("__name__".to_owned(), "http_requests_total".to_owned()),
        ("code".to_owned(), "200".to_owned()),
    ]);
    assert_eq!(raw, vec![(labels, 1000.0 + 10.0 * 120.0)]);

    // Window [t-600, t] holds 21 samples exactly on both edges: raw increase 200 over
    // 600 s, nothing to extrapolate. increase() drops the metric name.
    let inc = prom.query("increase(http_requests_total[10m])", at(3600));
    let code_only = BTreeMap::from([("code".to_owned(), "200".to_owned())]);
    assert_eq!(inc, vec![(code_only, 200.0)]);

    // Window [t-600, t] with t 15 s past a sample: 20 samples, raw increase 190 over
    // 570 s; both gaps (15 s) are under 1.1 * 30 s so it extrapolates to the full
    // 600 s: 190 * 600 / 570 = 200.
    let v = prom.query_one("increase(http_requests_total[10m])", at(3615));
    assert_close(v, 200.0);

    // 5 min after the first sample: samples T0..T0+300 = 11, raw increase 100 over
    // 300 s. The 300 s gap at the start exceeds 1.1 * 30 s, so it extrapolates only half
    // an average interval (15 s) there; durationToZero = 300 * 1000/100 = 3000 s does
    // not clamp it: 100 * 315 / 300 = 105.
    let v = prom.query_one("increase(http_requests_total[10m])", at(300));
    assert_close(v, 105.0);

    // 2 min after the last sample (T0+7170): samples T0+6690..T0+7170 = 17, raw
    // increase 160 over 480 s; 120 s gap at the end -> +15 s: 160 * 495 / 480 = 165.
    let v = prom.query_one("increase(http_requests_total[10m])", at(7170 + 120));
    assert_close(v, 165.0);

    // rate = increase / range.
    let v = prom.query_one("rate(http_requests_total[10m])", at(3600));
    assert_close(v, 200.0 / 600.0);

    // Past the 5 min lookback after the last sample the series is gone.
    assert_eq!(prom.query_one("http_requests_total", at(7170 + 301)), None);
    assert_eq!(prom.query_one("does_not_exist_total", at(3600)), None);
    assert_eq!(
        prom.query_one("sum(does_not_exist_total)", at(3600)),
        None,
        "sum over nothing is an empty vector"
    );

    // Scalars, special values.
    assert_eq!(prom.query_one("1/0", at(0)), Some(f64::INFINITY));
    assert_eq!(prom.query_one("-1/0", at(0)), Some(f64::NEG_INFINITY));
    assert!(prom.query_one("0/0", at(0)).unwrap().is_nan());
    assert_eq!(prom.query("vector(2)", at(0)), vec![(BTreeMap::new(), 2.0)]);

    // Errors carry Prometheus' errorType and message.
    let err = prom.try_query("sum(", at(0)).unwrap_err();
    assert!(err.starts_with("bad_data:"), "{err}");
    assert!(err.contains("unclosed left parenthesis"), "{err}");
}

#[test]
fn prometheus_fixture_keeps_days_of_backfilled_data() {
    // 4 days of 30 s samples: many 2 h blocks.
    let samples = 4 * 24 * 120;
    let prom = Prometheus::start(&counter(samples));
    let last = 30 * (samples - 1);

    // 3 d window ending on the last sample: 8641 samples, exact edges.
    let v = prom.query_one("increase(http_requests_total[3d])", at(last));
    assert_close(v, 10.0 * 3.0 * 24.0 * 120.0);

    // The first sample is still there (retention counts from the newest block).
    assert_eq!(prom.query_one("http_requests_total", at(0)), Some(1000.0));
    assert_eq!(prom.query_one("http_requests_total", at(-1)), None);

    // A 1 h window across a 2 h block boundary (T0+6400 is one).
    let v = prom.query_one("increase(http_requests_total[1h])", at(6400 + 1800));
    assert_close(v, 1200.0);
    assert_close(
        prom.query_one("count_over_time(http_requests_total[4d])", at(last)),
        samples as f64,
    );
}

fn assert_close(got: Option<f64>, want: f64) {
    let got = got.expect("query returned no series");
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "got {got}, want {want}"
    );
}

/// The finding behind `le` matching: a classic histogram's `le="1"`, backfilled (or scraped),
/// is stored as written by 2.42 and as `le="1.0"` by 3.16; burnwatch's bucket matcher for a
/// threshold of 1 finds it on both, and an equality matcher on one spelling misses it on one.
#[test]
fn prometheus_3_stores_an_integer_le_as_1_0_and_the_bound_matcher_finds_both() {
    let mut text = String::from("# TYPE latency_seconds histogram\n");
    for i in 0..10 {
        let t = T0 + 30 * i;
        for (le, value) in [("0.5", 10 * i), ("1", 20 * i), ("+Inf", 25 * i)] {
            text.push_str(&format!(
                "latency_seconds_bucket{{le=\"{le}\"}} {value} {t}\n"
            ));
        }
        // No `_sum`: it would share `_count`'s empty label set once the fixture's backfill
        // check drops the names.
        text.push_str(&format!("latency_seconds_count {} {t}\n", 25 * i));
    }
    text.push_str("# EOF\n");
    let pattern = burnwatch::query::bucket_bound_pattern(1.0).replace('\\', "\\\\");
    for version in VERSIONS {
        let prom = Prometheus::start_version(version, &text);
        let count = |matcher: &str| {
            prom.query_one(
                &format!("count(latency_seconds_bucket{{{matcher}}})"),
                at(270),
            )
            .unwrap_or(0.0)
        };
        let stored = match version {
            Version::V2_42 => "1",
            Version::V3_16 => "1.0",
        };
        let other = match version {
            Version::V2_42 => "1.0",
            Version::V3_16 => "1",
        };
        assert_eq!(count(&format!("le=\"{stored}\"")), 1.0, "{version:?}");
        assert_eq!(count(&format!("le=\"{other}\"")), 0.0, "{version:?}");
        assert_eq!(count(&format!("le=~\"{pattern}\"")), 1.0, "{version:?}");
    }
}
