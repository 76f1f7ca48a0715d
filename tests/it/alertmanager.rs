//! A real Alertmanager (Debian's 0.25 package) as a test fixture, for the delivery tests:
//! start `prometheus-alertmanager` on a free loopback port with clustering disabled, and a
//! webhook receiver served by the test (a plain `TcpListener` thread) that Alertmanager
//! routes every notification to. Tests post alerts to Alertmanager (or have burnwatch do
//! it), then wait for what Alertmanager reports at `/api/v2/alerts` and what it delivers to
//! the webhook.
//!
//! Routing: `group_by: ['...']` (every label, so each alert is its own group),
//! `group_wait: 0s`, `group_interval: 1s`, `repeat_interval: 1h`, `send_resolved: true`.
//!
//! What Alertmanager 0.25 does with that (seen with this fixture):
//! - A new firing alert is delivered within milliseconds of the POST (`group_wait: 0s`); a
//!   change to its group (e.g. the alert resolved by posting it again with `endsAt` <= now)
//!   at the group's next tick, up to `group_interval` (1 s) after the previous flush.
//! - Resolved: payload `status: "resolved"`, the alert's `status: "resolved"` and `endsAt`
//!   as posted. Firing: `endsAt` is Go's zero time `0001-01-01T00:00:00Z` in the webhook,
//!   even if the POST carried an `endsAt` in the future; `GET /api/v2/alerts` shows the
//!   real one (the posted one, or `updatedAt` + `resolve_timeout` 5m if none was posted).
//! - Re-posting a firing alert (same labels) sends nothing new until `repeat_interval`
//!   (1 h), even if its annotations changed. An alert first posted already resolved is
//!   never delivered. A resolved alert disappears from `GET /api/v2/alerts`.
//! - Times: the webhook uses Go's RFC 3339 with trailing zeros of fractions trimmed (a
//!   whole-second `startsAt` comes back as posted, see [`rfc3339`]); `/api/v2/alerts`
//!   always prints milliseconds (`...:05.000Z`).
//!
//! Two versions ([`AmVersion`]): 0.25 from Debian's `prometheus-alertmanager` package, the
//! default, and 0.35 built from the Go module proxy by `scripts/build-tools` into its cache;
//! `./scripts/test` provides both. What is said above holds for both (the fixture's own test
//! runs on each). Every instance has its own temp dir, ports and webhook, so tests may start
//! several in parallel.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::prom::{Retry, log_tail, wait_http_ready};

/// An Alertmanager release the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmVersion {
    /// Debian bookworm's `prometheus-alertmanager` package.
    V0_25,
    /// Built by `scripts/build-tools`.
    V0_35,
}

/// Both versions, for tests that run against each.
pub const AM_VERSIONS: [AmVersion; 2] = [AmVersion::V0_25, AmVersion::V0_35];

impl AmVersion {
    /// What `--version` prints after "version ".
    fn expected(self) -> &'static str {
        match self {
            AmVersion::V0_25 => "0.25.",
            AmVersion::V0_35 => "0.35.",
        }
    }

    fn binary(self) -> PathBuf {
        match self {
            AmVersion::V0_25 => PathBuf::from("prometheus-alertmanager"),
            AmVersion::V0_35 => crate::tools::dir("alertmanager", "0.35.0").join("alertmanager"),
        }
    }
}
/// How long `start` waits for `/-/ready`, per attempt.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at finding a free port (another process may grab the one we picked).
const PORT_ATTEMPTS: usize = 5;
/// The path of the webhook receiver that Alertmanager posts to.
const HOOK_PATH: &str = "/hook";
/// The receiver's name in the generated config (the payloads' `receiver` field).
pub const RECEIVER: &str = "webhook";

/// One webhook delivery: Alertmanager's JSON payload and when the receiver got it.
#[derive(Clone, Debug)]
pub struct Notification {
    /// When the receiver finished reading the request body.
    pub received_at: Instant,
    /// The body, parsed as JSON (a JSON string holding the raw text if it was not JSON).
    pub payload: Value,
}

/// A running `prometheus-alertmanager` that routes every alert to its own webhook receiver.
/// Dropping it kills Alertmanager and stops the receiver.
pub struct Alertmanager {
    version: AmVersion,
    // None only while `start` retries.
    child: Option<Child>,
    port: u16,
    log_path: PathBuf,
    client: reqwest::blocking::Client,
    webhook: Webhook,
    // Removed after `drop` killed the child.
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Checks that the binary of `version` says that version, starts a webhook receiver on
    /// 127.0.0.1:<free port>, writes an `alertmanager.yml` routing every alert to it, starts
    /// Alertmanager on 127.0.0.1:<free port> (clustering disabled, storage in a fresh temp
    /// dir, log in `alertmanager.log` there) and waits until `/-/ready` answers 200 and the
    /// server on the port is this one. Retries with another port if the port was taken
    /// meanwhile.
    ///
    /// Panics with a clear message if the binary is missing or the wrong version, and with
    /// Alertmanager's log if it fails to start.
    pub fn start_version(version: AmVersion) -> Alertmanager {
        check_version(version);
        burnwatch::source::prometheus::install_crypto_provider();
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build http client");
        let dir = tempfile::Builder::new()
            .prefix("burnwatch-alertmanager-")
            .tempdir()
            .expect("create temp dir for alertmanager");
        let webhook = Webhook::start();
        let hook_url = format!("http://{}{HOOK_PATH}", webhook.addr);
        let config = dir.path().join("alertmanager.yml");
        fs::write(&config, config_yaml(&hook_url)).expect("write alertmanager config");
        let storage = dir.path().join("data");
        fs::create_dir_all(&storage).expect("create alertmanager storage dir");
        let log_path = dir.path().join("alertmanager.log");

        let mut am = Alertmanager {
            version,
            child: None,
            port: 0,
            log_path,
            client,
            webhook,
            _dir: dir,
        };
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            am.port = free_port();
            am.spawn(&config, &storage);
            match am.wait_ready(&hook_url) {
                Ok(()) => return am,
                Err(Retry(why)) => {
                    failures.push(format!("port {}: {why}", am.port));
                    am.kill();
                }
            }
        }
        panic!(
            "alertmanager could not get a free port after {PORT_ATTEMPTS} attempts:\n{}\n{}",
            failures.join("\n"),
            am.log_tail()
        );
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The webhook URL Alertmanager delivers to, e.g. `http://127.0.0.1:PORT/hook`.
    pub fn webhook_url(&self) -> String {
        format!("http://{}{HOOK_PATH}", self.webhook.addr)
    }

    /// Posts `alerts` (a JSON array of `{labels, annotations, startsAt, endsAt,
    /// generatorURL}`) to `/api/v2/alerts`, as Prometheus or burnwatch would. Panics unless
    /// Alertmanager answers 200.
    pub fn post_alerts(&self, alerts: &Value) {
        let url = format!("{}/api/v2/alerts", self.url());
        let resp = self
            .client
            .post(&url)
            .json(alerts)
            .send()
            .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", self.log_tail()));
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            let body = resp.text().unwrap_or_default();
            panic!(
                "POST {url} answered {status}: {body}\nposted: {alerts}\n{}",
                self.log_tail()
            );
        }
    }

    /// The alerts Alertmanager holds now (`GET /api/v2/alerts`; active, silenced and
    /// inhibited ones, not resolved ones). Each has `labels`, `annotations`, `startsAt`,
    /// `endsAt`, `updatedAt`, `generatorURL`, `fingerprint`, `receivers` and
    /// `status: {state, silencedBy, inhibitedBy}`.
    pub fn alerts(&self) -> Vec<Value> {
        self.alerts_matching(&[])
    }

    /// `GET /api/v2/alerts` with `filter` matchers (`sloth_severity="page"`), which
    /// Alertmanager applies as it applies a route's matchers.
    pub fn alerts_matching(&self, filter: &[&str]) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts", self.url());
        let query: Vec<(&str, &str)> = filter.iter().map(|matcher| ("filter", *matcher)).collect();
        let resp = self
            .client
            .get(&url)
            .query(&query)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", self.log_tail()));
        let status = resp.status();
        let text = resp
            .text()
            .unwrap_or_else(|e| panic!("GET {url}: reading body: {e}"));
        if status != reqwest::StatusCode::OK {
            panic!("GET {url} answered {status}: {text}\n{}", self.log_tail());
        }
        match serde_json::from_str(&text) {
            Ok(Value::Array(alerts)) => alerts,
            _ => panic!("GET {url}: body is not a JSON array: {text}"),
        }
    }

    /// The webhook payloads received so far, in order of arrival. Each is Alertmanager's
    /// webhook JSON: `version`, `groupKey`, `status` (`firing` if any alert of the group
    /// fires, else `resolved`), `receiver`, `groupLabels`, `commonLabels`,
    /// `commonAnnotations`, `externalURL` and `alerts[]`, each with `status`, `labels`,
    /// `annotations`, `startsAt`, `endsAt`, `generatorURL` and `fingerprint`.
    pub fn notifications(&self) -> Vec<Value> {
        self.timed_notifications()
            .into_iter()
            .map(|n| n.payload)
            .collect()
    }

    /// Like `notifications`, with the time each one arrived.
    pub fn timed_notifications(&self) -> Vec<Notification> {
        self.webhook.received.lock().expect("webhook lock").clone()
    }

    /// Polls the webhook payloads received so far (see `notifications`) until `predicate`
    /// holds for them, and returns them. Panics after `timeout` with `description`, what was
    /// received and Alertmanager's log.
    pub fn wait_for_notification(
        &self,
        description: &str,
        timeout: Duration,
        predicate: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        self.wait_for(
            description,
            timeout,
            "webhook notifications",
            || self.notifications(),
            predicate,
        )
    }

    /// Polls `GET /api/v2/alerts` (see `alerts`) until `predicate` holds for the answer, and
    /// returns it. Panics after `timeout` with `description`, the last answer and
    /// Alertmanager's log.
    pub fn wait_for_alerts(
        &self,
        description: &str,
        timeout: Duration,
        predicate: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        self.wait_for(
            description,
            timeout,
            "/api/v2/alerts",
            || self.alerts(),
            predicate,
        )
    }

    fn wait_for(
        &self,
        description: &str,
        timeout: Duration,
        what: &str,
        get: impl Fn() -> Vec<Value>,
        predicate: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = get();
            if predicate(&got) {
                return got;
            }
            if Instant::now() > deadline {
                let pretty = serde_json::to_string_pretty(&got).unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {description} (alertmanager at \
                     {}); {what} ({}):\n{pretty}\n{}",
                    self.url(),
                    got.len(),
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Runs `prometheus-alertmanager` on `self.port`, its output going to `self.log_path`.
    fn spawn(&mut self, config: &std::path::Path, storage: &std::path::Path) {
        let log = File::create(&self.log_path).expect("create alertmanager log");
        let binary = self.version.binary();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            // Else links and the payloads' `externalURL` use the machine's hostname.
            .arg(format!("--web.external-url={}", self.url()))
            // Empty disables clustering: no gossip port to collide on, and no waiting for
            // peers to settle before notifying.
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}{}", binary.display(), install_hint(&e)));
        self.child = Some(child);
    }

    /// Kills Alertmanager and waits for it to exit. Does nothing if it is not running.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for `/-/ready`, then checks that the answering server is ours (the port may
    /// have been taken by another process between picking and binding it): its config must
    /// name our webhook.
    fn wait_ready(&mut self, hook_url: &str) -> Result<(), Retry> {
        let ready = format!("{}/-/ready", self.url());
        let child = self.child.as_mut().expect("alertmanager was started");
        wait_http_ready(
            "alertmanager",
            child,
            &self.client,
            &ready,
            READY_TIMEOUT,
            &self.log_path,
        )?;
        let url = format!("{}/api/v2/status", self.url());
        let status: Value = self
            .client
            .get(&url)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| Retry(format!("GET {url}: {e}")))?;
        let config = status["config"]["original"].as_str().unwrap_or("");
        if !config.contains(&marker(hook_url)) {
            return Err(Retry(format!(
                "another server answers on the port (its config does not name {hook_url})"
            )));
        }
        Ok(())
    }

    /// The last few KiB of Alertmanager's output.
    fn log_tail(&self) -> String {
        log_tail("alertmanager", &self.log_path)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.kill();
        // Then `webhook` drops, which stops the receiver.
    }
}

/// Routes everything to the webhook, one group per alert, notifying at once.
fn config_yaml(hook_url: &str) -> String {
    // The inhibit rule matches no alert: it marks the config as ours in `/api/v2/status`
    // (Alertmanager 0.35 shows webhook URLs there as `<secret>`).
    format!(
        "route:\n  receiver: {RECEIVER}\n  group_by: ['...']\n  group_wait: 0s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: {RECEIVER}\n    \
         webhook_configs:\n      - url: {hook_url}\n        send_resolved: true\n\
         inhibit_rules:\n  - source_matchers: ['fixture_marker=\"{}\"']\n    \
         target_matchers: ['fixture_marker=\"{}\"']\n",
        marker(hook_url),
        marker(hook_url)
    )
}

/// A value that names this fixture's config (from its webhook's unique address).
fn marker(hook_url: &str) -> String {
    format!(
        "fixture-{}",
        hook_url.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    )
}

/// The receiver Alertmanager delivers to (and burnwatch's generic webhooks, in tests):
/// answers every request 200 (and closes the connection) and records the bodies of POSTs to
/// `HOOK_PATH`; while [`Webhook::fail`] is on, answers 503 and records nothing.
pub(crate) struct Webhook {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Notification>>>,
    failing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    pub(crate) fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook on 127.0.0.1:0");
        let addr = listener.local_addr().expect("webhook local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = Arc::clone(&received);
            let failing = Arc::clone(&failing);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("alertmanager-webhook".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let received = Arc::clone(&received);
                        let failing = failing.load(Ordering::SeqCst);
                        // One thread per connection, so a stuck client cannot block others.
                        thread::spawn(move || serve(conn, &received, failing));
                    }
                })
                .expect("spawn webhook thread")
        };
        Webhook {
            addr,
            received,
            failing,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/hook`
    pub(crate) fn url(&self) -> String {
        format!("http://{}{HOOK_PATH}", self.addr)
    }

    /// The bodies received so far, oldest first.
    pub(crate) fn received(&self) -> Vec<Value> {
        self.received
            .lock()
            .expect("webhook lock")
            .iter()
            .map(|notification| notification.payload.clone())
            .collect()
    }

    /// While on, every request is answered 503 and not recorded.
    pub(crate) fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one HTTP/1.1 request (body by Content-Length), records it if it is a POST to
/// `HOOK_PATH`, and answers 200 with `Connection: close`, so that the client never reuses
/// the connection (and never races its reuse against our close).
fn serve(conn: TcpStream, received: &Mutex<Vec<Notification>>, failing: bool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return; // e.g. the wake-up connection of `Webhook::drop`
    }
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let received_at = Instant::now();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if failing {
        let mut out = write_half;
        let _ = out.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = out.flush();
        return;
    }
    if method == "POST" && path == HOOK_PATH {
        let payload = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        received.lock().expect("webhook lock").push(Notification {
            received_at,
            payload,
        });
    }
    let mut out = write_half;
    let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = out.flush();
}

/// `t` as RFC 3339 in UTC with whole seconds (`2024-01-02T03:04:05Z`), the format the
/// Alertmanager API takes and gives back unchanged for whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Picks a port the OS considers free right now; `start` retries if it is taken meanwhile.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn install_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == ErrorKind::NotFound {
        " (not on PATH: run ./scripts/test, which installs Debian's `prometheus-alertmanager` \
         package, or `apt-get install prometheus-alertmanager`)"
    } else {
        ""
    }
}

/// The binary of `version` must say that version: the delivery tests pin its API and timing.
fn check_version(version: AmVersion) {
    crate::tools::check_version(
        &version.binary(),
        version.expected(),
        "run ./scripts/test, which installs Debian bookworm's `prometheus-alertmanager` package \
         (0.25) and builds 0.35 with scripts/build-tools",
    );
}

// ---- tests of the fixture itself ----

#[test]
fn alertmanager_fixture_delivers_firing_and_resolved_to_webhook() {
    for version in AM_VERSIONS {
        fixture_delivers_firing_and_resolved(version);
    }
}

fn fixture_delivers_firing_and_resolved(version: AmVersion) {
    let am = Alertmanager::start_version(version);
    assert!(am.url().starts_with("http://127.0.0.1:"), "{}", am.url());
    assert!(
        am.webhook_url().ends_with(HOOK_PATH),
        "{}",
        am.webhook_url()
    );
    assert_eq!(am.alerts(), Vec::<Value>::new());
    assert!(am.notifications().is_empty());

    let is_ours = |a: &Value| a["labels"]["alertname"] == "SLOBurnRateHigh";
    let labels = json!({
        "alertname": "SLOBurnRateHigh",
        "slo": "checkout-availability",
        "severity": "page",
    });
    let annotations = json!({"runbook_url": "https://runbooks.example/checkout"});
    let generator = "http://burnwatch.test/slo/checkout-availability";
    let starts_at = rfc3339(SystemTime::now());
    let mut alert = json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts_at,
        "generatorURL": generator,
    });

    // Firing.
    am.post_alerts(&json!([alert]));
    let active = am.wait_for_alerts("the posted alert", Duration::from_secs(10), |alerts| {
        alerts.iter().any(is_ours)
    });
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0]["status"]["state"], "active", "{active:?}");
    assert_eq!(active[0]["labels"], labels);
    assert_eq!(active[0]["receivers"][0]["name"], RECEIVER);

    let got = am.wait_for_notification("a firing notification", Duration::from_secs(10), |ns| {
        ns.iter().any(|n| n["status"] == "firing")
    });
    assert_eq!(got.len(), 1, "{got:#?}");
    let firing = &got[0];
    assert_eq!(firing["receiver"], RECEIVER);
    assert_eq!(firing["externalURL"], am.url());
    assert_eq!(firing["commonLabels"], labels);
    assert_eq!(
        firing["alerts"].as_array().map(Vec::len),
        Some(1),
        "{firing}"
    );
    let a = &firing["alerts"][0];
    assert_eq!(a["status"], "firing", "{firing}");
    assert_eq!(a["labels"], labels);
    assert_eq!(a["annotations"], annotations);
    assert_eq!(a["startsAt"], starts_at.as_str());
    assert_eq!(a["generatorURL"], generator);
    // A firing alert posted without endsAt is reported with Go's zero time.
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z", "{firing}");

    // Resolved: the same alert with endsAt now.
    let ends_at = rfc3339(SystemTime::now());
    alert["endsAt"] = json!(ends_at);
    am.post_alerts(&json!([alert]));
    let got = am.wait_for_notification("a resolved notification", Duration::from_secs(10), |ns| {
        ns.iter().any(|n| n["status"] == "resolved")
    });
    assert_eq!(got.len(), 2, "{got:#?}");
    let resolved = &got[1];
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    let a = &resolved["alerts"][0];
    assert_eq!(a["status"], "resolved", "{resolved}");
    assert_eq!(a["labels"], labels);
    assert_eq!(a["startsAt"], starts_at.as_str());
    assert_eq!(a["endsAt"], ends_at.as_str());
    assert_eq!(firing["groupKey"], resolved["groupKey"]);

    // A resolved alert is no longer listed.
    am.wait_for_alerts("no alerts", Duration::from_secs(10), |alerts| {
        !alerts.iter().any(is_ours)
    });

    // The resolved one comes at the group's next tick (group_interval 1s).
    let timed = am.timed_notifications();
    let gap = timed[1].received_at - timed[0].received_at;
    assert!(
        gap < Duration::from_secs(5),
        "resolved came {gap:?} after firing"
    );
}
