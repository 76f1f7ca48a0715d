//! `burnwatch serve`, the daemon, as users run it: the real binary against a real
//! Prometheus 2.42 that scrapes a live target served by the test (or against a fake
//! Prometheus that answers garbage), observed through its stdout (the console sink), its
//! HTTP face and its exit status.
//!
//! Tests run in parallel: each has its own ports, temp dirs and processes, killed on drop.
//! Waits are bounded polls; the spec uses seconds-long windows so that a page fires and
//! resolves within seconds:
//!
//! - objective 99.9%, page when the error ratio over 20s and over 5s exceeds 10 × 0.1% = 1%,
//! - `resolve_timeout: 3s`, period 1h, no ticket tier,
//! - `evaluation_interval: 1s`, `stale_after: 3s`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burnwatch::replay::parse_time;
use serde_json::Value;

use crate::prom::{Prometheus, SCRAPE_JOB};

/// Upper bound of every wait; waits normally end within seconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);
pub(crate) const POLL: Duration = Duration::from_millis(100);

pub(crate) const SLO_ID: &str = "order-service-requests-availability";
pub(crate) const ROUTE: &str = "POST /orders";
/// The page threshold on the error ratio: factor 10 × error budget (1 − 0.999).
pub(crate) const PAGE_THRESHOLD: f64 = 10.0 * (1.0 - 0.999);
pub(crate) const RESOLVE_TIMEOUT_MS: i64 = 3_000;
pub(crate) const STALE_AFTER_MS: i64 = 3_000;
pub(crate) const PAGE_FIRING: &str = "CRITICAL: Fast error budget burn on order-service";
pub(crate) const PAGE_RESOLVED: &str = "RESOLVED: Fast error budget burn on order-service";
pub(crate) const STALE_FIRING: &str =
    "CRITICAL: burnwatch evaluation stale: Prometheus last answered at ";
pub(crate) const STALE_RESOLVED: &str = "RESOLVED: burnwatch evaluation recovered";
pub(crate) const RELOAD_TOKEN: &str = "s3cr3t-reload-token";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

// ---- a tiny HTTP server: live scrape targets and fake Prometheus APIs ----

pub(crate) struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    /// More header lines, each ending in `\r\n`.
    headers: String,
}

impl Reply {
    pub(crate) fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: String::new(),
        }
    }

    pub(crate) fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply::new(status, "application/json", body)
    }

    /// This reply with one more header.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push_str(&format!("{name}: {value}\r\n"));
        self
    }
}

/// `handler(method, target, head)`: `head` is the request line and headers as received.
pub(crate) type Handler = dyn Fn(&str, &str, &str) -> Reply + Send + Sync;

/// Answers every request on 127.0.0.1:<free port> with `handler(method, target, head)`, one thread
/// per connection, `Connection: close`. Stops accepting on drop.
pub(crate) struct HttpStub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpStub {
    pub(crate) fn start(
        handler: impl Fn(&str, &str, &str) -> Reply + Send + Sync + 'static,
    ) -> HttpStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = thread::spawn({
            let stop = stop.clone();
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let handler = handler.clone();
                    thread::spawn(move || answer(stream, &*handler));
                }
            }
        });
        HttpStub {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`
    pub(crate) fn address(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn answer(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 1 << 20 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("");
    let target = request_line.next().unwrap_or("");
    let reply = handler(method, target, &head);
    let reason = if reply.status == 200 { "OK" } else { "Stub" };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len(),
        reply.headers
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(reply.body.as_bytes());
    let _ = stream.flush();
}

// ---- a live scrape target: request counters the test steers ----

pub(crate) const REQUESTS_PER_SECOND: f64 = 200.0;

/// `http_requests_total{code, route="POST /orders"}` counting REQUESTS_PER_SECOND requests,
/// a share `error_ratio` of them with code 500. The counters advance with real time
/// (integrated whenever they are read or the ratio changes).
pub(crate) struct Traffic {
    ok: f64,
    errors: f64,
    error_ratio: f64,
    last: Instant,
    /// The `route` label of the counters.
    route: String,
}

impl Traffic {
    pub(crate) fn advance(&mut self) {
        let now = Instant::now();
        let requests = (now - self.last).as_secs_f64() * REQUESTS_PER_SECOND;
        self.errors += requests * self.error_ratio;
        self.ok += requests * (1.0 - self.error_ratio);
        self.last = now;
    }
}

pub(crate) struct LiveTarget {
    traffic: Arc<Mutex<Traffic>>,
    pub(crate) stub: HttpStub,
}

impl LiveTarget {
    pub(crate) fn start(error_ratio: f64) -> LiveTarget {
        let traffic = Arc::new(Mutex::new(Traffic {
            ok: 1000.0,
            errors: 0.0,
            error_ratio,
            last: Instant::now(),
            route: ROUTE.to_string(),
        }));
        let stub = HttpStub::start({
            let traffic = traffic.clone();
            move |_, target, _| {
                if target != "/metrics" {
                    return Reply::new(404, "text/plain", "not found\n");
                }
                let mut traffic = traffic.lock().unwrap_or_else(|e| e.into_inner());
                traffic.advance();
                Reply::new(
                    200,
                    "text/plain; version=0.0.4",
                    format!(
                        "# HELP http_requests_total Requests by status code.\n\
                         # TYPE http_requests_total counter\n\
                         http_requests_total{{code=\"200\",route=\"{route}\"}} {}\n\
                         http_requests_total{{code=\"500\",route=\"{route}\"}} {}\n",
                        traffic.ok.floor(),
                        traffic.errors.floor(),
                        route = traffic.route,
                    ),
                )
            }
        });
        LiveTarget { traffic, stub }
    }

    pub(crate) fn set_error_ratio(&self, error_ratio: f64) {
        let mut traffic = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        traffic.advance();
        traffic.error_ratio = error_ratio;
    }

    /// Relabels the counters (as a changed relabel rule would): the series of the old route
    /// vanish from the next scrape on, and new ones appear with the counts so far.
    pub(crate) fn set_route(&self, route: &str) {
        let mut traffic = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        traffic.advance();
        traffic.route = route.to_string();
    }
}

// ---- the burnwatch serve process ----

/// One printed alert change: `[<time>] firing|reminder|resolved` and the message below it.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    at: i64,
    kind: String,
    pub(crate) text: String,
}

pub(crate) fn parse_blocks(stdout: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in stdout.lines() {
        let header = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("] "));
        if let Some((time, kind)) = header
            && matches!(kind, "firing" | "reminder" | "resolved")
        {
            blocks.extend(current.take());
            current = Some(Block {
                at: parse_time(time).unwrap_or_else(|e| panic!("{line:?}: {e}")),
                kind: kind.to_string(),
                text: String::new(),
            });
            continue;
        }
        match current.as_mut() {
            Some(block) if !line.is_empty() => {
                if !block.text.is_empty() {
                    block.text.push('\n');
                }
                block.text.push_str(line);
            }
            Some(_) => blocks.extend(current.take()),
            None => {}
        }
    }
    blocks.extend(current);
    blocks
}

pub(crate) fn capture(mut reader: impl BufRead + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    thread::spawn({
        let text = text.clone();
        move || {
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                text.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&line);
                line.clear();
            }
        }
    });
    text
}

/// `burnwatch serve --listen 127.0.0.1:0` with `BURNWATCH_LOG=info`; killed on drop.
pub(crate) struct Serve {
    child: Mutex<Child>,
    pid: u32,
    base: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    http: reqwest::blocking::Client,
}

impl Serve {
    pub(crate) fn start(config: &Path, state_dir: &Path) -> Serve {
        Serve::start_with(config, state_dir, &[])
    }

    /// `start` with more command-line arguments (`--listen` among them replaces
    /// `127.0.0.1:0`; the test still talks to 127.0.0.1).
    pub(crate) fn start_with(config: &Path, state_dir: &Path, args: &[&str]) -> Serve {
        Serve::start_with_env(config, state_dir, args, &[])
    }

    /// `start_with` and more environment variables.
    pub(crate) fn start_with_env(
        config: &Path,
        state_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Serve {
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(state_dir)
            .args(listen)
            .args(args)
            .env("BURNWATCH_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run burnwatch serve");
        let stdout: ChildStdout = child.stdout.take().expect("stdout");
        let stderr: ChildStderr = child.stderr.take().expect("stderr");
        burnwatch::source::prometheus::install_crypto_provider();
        let mut serve = Serve {
            pid: child.id(),
            child: Mutex::new(child),
            base: String::new(),
            stdout: capture(BufReader::new(stdout)),
            stderr: capture(BufReader::new(stderr)),
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("build http client"),
        };
        let first_line = serve.wait_for("the `listening on` line", || {
            let stdout = serve.stdout();
            stdout.find('\n').map(|end| stdout[..end].to_string())
        });
        serve.base = first_line
            .strip_prefix("burnwatch listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "first stdout line is not `burnwatch listening on http://ADDR`: \
                     {first_line:?}\n{}",
                    serve.diagnostics()
                )
            })
            .replace("http://0.0.0.0:", "http://127.0.0.1:");
        assert!(serve.base.starts_with("http://127.0.0.1:"), "{first_line}");
        serve
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// `http://127.0.0.1:PORT{path}`
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn blocks(&self) -> Vec<Block> {
        parse_blocks(&self.stdout())
    }

    /// Blocks of `kind` whose message starts with `headline`.
    pub(crate) fn blocks_of(&self, kind: &str, headline: &str) -> Vec<Block> {
        self.blocks()
            .into_iter()
            .filter(|block| block.kind == kind && block.text.starts_with(headline))
            .collect()
    }

    pub(crate) fn diagnostics(&self) -> String {
        let stderr = self.stderr();
        let tail: String = stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "--- burnwatch serve stdout ---\n{}\n--- stderr (tail) ---\n{tail}",
            self.stdout()
        )
    }

    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
            .expect("poll burnwatch")
    }

    pub(crate) fn assert_running(&self) {
        if let Some(status) = self.exited() {
            panic!(
                "burnwatch serve exited ({status}) but should be running\n{}",
                self.diagnostics()
            );
        }
    }

    /// Polls `check` until it returns Some, failing if serve exits or PATIENCE runs out.
    pub(crate) fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if let Some(status) = self.exited() {
                // One last look: the process may have done it and then exited.
                if let Some(value) = check() {
                    return value;
                }
                panic!(
                    "burnwatch serve exited ({status}) while waiting for {what}\n{}",
                    self.diagnostics()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {PATIENCE:?} waiting for {what}\n{}",
                    self.diagnostics()
                );
            }
            sleep(POLL);
        }
    }

    pub(crate) fn request(
        &self,
        request: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> (u16, String) {
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", self.diagnostics()));
        let status = response.status().as_u16();
        let body = response
            .text()
            .unwrap_or_else(|e| panic!("{what}: reading body: {e}"));
        (status, body)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        self.request(self.http.get(&url), &format!("GET {path}"))
    }

    pub(crate) fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// POST /-/reload with an optional `Authorization` header value.
    pub(crate) fn reload(&self, authorization: Option<&str>) -> (u16, String) {
        let mut request = self.http.post(format!("{}/-/reload", self.base));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        self.request(request, "POST /-/reload")
    }

    pub(crate) fn slos(&self) -> Value {
        self.json("/api/v1/slos")
    }

    pub(crate) fn alerts(&self) -> Vec<Value> {
        self.json("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap_or_else(|| panic!("alerts is not an array"))
            .clone()
    }

    /// The firing page alert of the route, once the API shows it.
    pub(crate) fn firing_page(&self) -> Option<Value> {
        self.alerts().into_iter().find(|alert| {
            alert["tier"] == "page" && alert["state"] == "firing" && alert["slo"] == SLO_ID
        })
    }

    /// `last_evaluation` of `/api/v1/slos` in milliseconds.
    pub(crate) fn last_evaluation(&self) -> Option<i64> {
        self.slos()["last_evaluation"]
            .as_str()
            .map(|text| parse_time(text).expect("last_evaluation is a time"))
    }

    /// Waits until `count` more evaluations (ticks) have completed than the last one now.
    pub(crate) fn wait_evaluations(&self, count: i64) -> i64 {
        let from = self.last_evaluation().unwrap_or(0);
        self.wait_for(&format!("{count} more evaluations after {from}"), || {
            self.last_evaluation()
                .filter(|last| *last >= from + count * 1000)
        })
    }

    pub(crate) fn wait_ready(&self) {
        self.wait_for("/-/ready to answer 200", || {
            (self.get("/-/ready").0 == 200).then_some(())
        });
    }

    /// Waits for the first page `firing` block and the API's firing page alert; checks they
    /// agree. Returns the alert's `since`.
    pub(crate) fn wait_page_firing(&self) -> String {
        let block = self.wait_for("a page firing block on stdout", || {
            self.blocks_of("firing", PAGE_FIRING).into_iter().next()
        });
        assert!(
            block.text.contains(&format!("route=\"{ROUTE}\"")),
            "the page names the SLO instance: {block:?}"
        );
        let alert = self.wait_for("the page alert firing in /api/v1/alerts", || {
            self.firing_page()
        });
        assert_eq!(
            alert["labels"],
            serde_json::json!({"route": ROUTE}),
            "{alert}"
        );
        assert_eq!(alert["announced"], true, "{alert}");
        let since = alert["since"]
            .as_str()
            .expect("firing has since")
            .to_string();
        assert_eq!(
            parse_time(&since).unwrap(),
            block.at,
            "the alert fires at the evaluation that printed it: {alert} {block:?}"
        );
        since
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid);
    }

    /// Sends `signal` (TERM or INT), then waits for the exit.
    pub(crate) fn stop(&self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "burnwatch serve did not exit within 20s of SIG{signal}\n{}",
                    self.diagnostics()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---- specs, configs and the SLO status ----

pub(crate) fn spec(description: &str, objective: &str) -> String {
    format!(
        r#"version: burnwatch/v1
service: order-service
slos:
  - name: requests-availability
    description: {description}
    objective: {objective}
    period: 1h
    sli:
      ratio:
        errors: http_requests_total{{job="{SCRAPE_JOB}",code=~"5.."}}
        total: http_requests_total{{job="{SCRAPE_JOB}"}}
    group_by: [route]
    runbook: https://runbooks.example.com/order-service/availability
    alerting:
      resolve_timeout: 3s
      page:
        windows: [{{long: 20s, short: 5s, factor: 10}}]
      ticket: {{disable: true}}
"#
    )
}

/// `spec` (one SLO, `requests-availability`) as one SLO per name, the same otherwise.
pub(crate) fn many_slos(spec: &str, names: &[&str]) -> String {
    let (head, body) = spec.split_once("slos:\n").expect("slos");
    let mut many = format!("{head}slos:\n");
    for name in names {
        many.push_str(&body.replace("requests-availability", name));
    }
    many
}

/// A temp dir with `slos.yaml`, `burnwatch.yaml` (plus `extra` config lines) and `state/`.
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
}

impl Setup {
    pub(crate) fn new(prometheus_url: &str, extra: &str) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("burnwatch-serve-")
            .tempdir()
            .expect("temp dir");
        let setup = Setup { dir };
        setup.write_spec(&spec("Requests that do not fail.", "99.9"));
        std::fs::write(
            setup.config(),
            format!(
                "prometheus:\n  url: {prometheus_url}\nevaluation_interval: 1s\n\
                 stale_after: 3s\nstrategy: query\nrules:\n  - slos.yaml\n{extra}"
            ),
        )
        .expect("write config");
        setup
    }

    pub(crate) fn with_reload_token(prometheus_url: &str) -> Setup {
        let setup = Setup::new(prometheus_url, "web:\n  reload_token_file: reload-token\n");
        std::fs::write(
            setup.dir.path().join("reload-token"),
            format!("{RELOAD_TOKEN}\n"),
        )
        .expect("write token");
        setup
    }

    pub(crate) fn spec_path(&self) -> PathBuf {
        self.dir.path().join("slos.yaml")
    }

    pub(crate) fn write_spec(&self, text: &str) {
        std::fs::write(self.spec_path(), text).expect("write spec");
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("burnwatch.yaml")
    }

    pub(crate) fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn serve(&self) -> Serve {
        Serve::start(&self.config(), &self.state())
    }
}

/// A live target at `error_ratio`, a Prometheus scraping it every second, and a setup.
pub(crate) struct Live {
    pub(crate) target: LiveTarget,
    pub(crate) prom: Prometheus,
    pub(crate) setup: Setup,
}

pub(crate) fn live(error_ratio: f64, with_token: bool) -> Live {
    let target = LiveTarget::start(error_ratio);
    let prom = Prometheus::start_scraping(&[target.stub.address()], Duration::from_secs(1));
    prom.wait_until_up(1);
    let setup = if with_token {
        Setup::with_reload_token(&prom.url())
    } else {
        Setup::new(&prom.url(), "")
    };
    Live {
        target,
        prom,
        setup,
    }
}

/// The SLO's status in `/api/v1/slos`, once it has been evaluated.
pub(crate) fn find_slo(slos: &Value) -> Option<Value> {
    slos["slos"]
        .as_array()
        .and_then(|all| all.iter().find(|slo| slo["id"] == SLO_ID))
        .cloned()
}

pub(crate) fn slo_status(slos: &Value) -> Value {
    find_slo(slos).unwrap_or_else(|| panic!("{SLO_ID} not in /api/v1/slos: {slos}"))
}

/// What one evaluation of the route's page condition said, from an SLO status: its time
/// (`last_success`) and Some(burning) — None when a window had no value (no decision) or a
/// value too close to the threshold to call.
pub(crate) fn page_condition(slo: &Value) -> Option<(i64, Option<bool>)> {
    let at = parse_time(slo["last_success"].as_str()?).ok()?;
    let instance = slo["instances"]
        .as_array()?
        .iter()
        .find(|instance| instance["labels"]["route"] == ROUTE)?;
    let ratio = |window: &str| {
        instance["windows"]
            .as_array()?
            .iter()
            .find(|value| value["window"] == window)?["error_ratio"]
            .as_f64()
            .filter(|ratio| (ratio - PAGE_THRESHOLD).abs() > 1e-9)
    };
    let verdict = match (ratio("20s"), ratio("5s")) {
        (Some(long), Some(short)) => Some(long > PAGE_THRESHOLD && short > PAGE_THRESHOLD),
        _ => None,
    };
    Some((at, verdict))
}

/// `name{labels} value` lines of Prometheus/OpenMetrics text.
pub(crate) fn parse_metrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let mut end = None;
            loop {
                // label name up to '=' (or the closing brace)
                let mut label = String::new();
                for (index, c) in chars.by_ref() {
                    match c {
                        '=' => break,
                        '}' => {
                            end = Some(index);
                            break;
                        }
                        ',' => {}
                        c => label.push(c),
                    }
                }
                if end.is_some() {
                    break;
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => panic!("{line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(label, value);
            }
            rest = &inner[end.expect("closing brace") + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("{line}"));
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            value => value
                .parse()
                .unwrap_or_else(|e| panic!("{line}: bad value: {e}")),
        };
        samples.push((name, labels, value));
    }
    samples
}

pub(crate) fn metric_value(text: &str, name: &str) -> Option<f64> {
    parse_metrics(text)
        .into_iter()
        .find(|(found, labels, _)| found == name && labels.is_empty())
        .map(|(_, _, value)| value)
}

// ---- the tests ----

#[test]
fn serve_pages_and_resolves_on_live_traffic() {
    let live = live(0.0, false);
    let serve = live.setup.serve();
    serve.wait_ready();

    // Healthy traffic: evaluations with data and a zero error ratio, no alert.
    serve.wait_for("a healthy evaluation with data", || {
        let slo = find_slo(&serve.slos())?;
        let (_, verdict) = page_condition(&slo)?;
        let zero = slo["instances"][0]["windows"]
            .as_array()?
            .iter()
            .all(|window| window["error_ratio"] == 0.0);
        (verdict == Some(false) && zero).then_some(())
    });
    serve.wait_evaluations(2);
    assert!(serve.blocks().is_empty(), "{}", serve.diagnostics());
    assert_eq!(serve.alerts(), Vec::<Value>::new());
    assert_eq!(slo_status(&serve.slos())["state"], "ok");

    // Half the requests fail: one page.
    live.target.set_error_ratio(0.5);
    let since = serve.wait_page_firing();
    serve.wait_evaluations(2);
    assert_eq!(
        serve.blocks_of("firing", "").len(),
        1,
        "exactly one firing block while burning\n{}",
        serve.diagnostics()
    );
    let alerts = serve.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["since"], since.as_str());

    // Healthy again: it resolves once, no earlier than resolve_timeout after the condition
    // turned false. Record every evaluation's verdict (keyed by its time) on the way.
    let mut verdicts: BTreeMap<i64, Option<bool>> = BTreeMap::new();
    let burning = serve.wait_for("an evaluation that sees the burn", || {
        let (at, verdict) = page_condition(&find_slo(&serve.slos())?)?;
        (verdict == Some(true)).then_some(at)
    });
    verdicts.insert(burning, Some(true));
    live.target.set_error_ratio(0.0);
    let mut saw_resolving = false;
    let resolved = serve.wait_for("a page resolved block", || {
        if let Some((at, verdict)) = find_slo(&serve.slos()).and_then(|slo| page_condition(&slo)) {
            verdicts.insert(at, verdict);
        }
        saw_resolving |= serve
            .alerts()
            .iter()
            .any(|alert| alert["state"] == "resolving" && alert["since"] == since.as_str());
        serve
            .blocks_of("resolved", PAGE_RESOLVED)
            .into_iter()
            .next()
    });
    assert!(
        resolved.text.contains(&format!("route=\"{ROUTE}\"")),
        "{resolved:?}"
    );
    assert!(
        saw_resolving,
        "/api/v1/alerts never showed the page `resolving`"
    );
    // The last evaluation before the resolution that was not "condition false": the
    // false run that resolved started after it (ticks are whole seconds apart).
    let before: Vec<(i64, Option<bool>)> = verdicts
        .range(..resolved.at)
        .map(|(at, verdict)| (*at, *verdict))
        .collect();
    let last_not_false = before
        .iter()
        .rev()
        .find(|(_, verdict)| *verdict != Some(false))
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("no burning evaluation seen after the switch: {before:?}"));
    assert!(
        before
            .iter()
            .any(|(at, verdict)| *at > last_not_false && *verdict == Some(false)),
        "resolved at {} without an observed `condition false` evaluation: {before:?}",
        resolved.at
    );
    assert!(
        resolved.at >= last_not_false + 1000 + RESOLVE_TIMEOUT_MS,
        "resolved at {} but the condition was not false at {last_not_false}, so it cannot \
         have been false for resolve_timeout (3s) yet; evaluations: {before:?}",
        resolved.at
    );

    // No second firing, no second resolved, no alert left.
    serve.wait_evaluations(2);
    let blocks = serve.blocks();
    let kinds: Vec<&str> = blocks.iter().map(|block| block.kind.as_str()).collect();
    assert_eq!(kinds, ["firing", "resolved"], "{}", serve.diagnostics());
    assert_eq!(serve.alerts(), Vec::<Value>::new());

    // The same period replayed from Prometheus's history through the same engine makes the
    // same decisions. Serve reads each tick as it comes and replay reads it later, so a sample
    // scraped just before a tick may reach serve one tick late: allow one tick either way.
    let fired = burnwatch::replay::parse_time(&since).expect("since is RFC 3339");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(["replay", "--prometheus", &live.prom.url(), "--spec"])
        .arg(live.setup.spec_path())
        .args(["--from", &((fired - 60_000) / 1000).to_string()])
        .args(["--to", &(resolved.at / 1000 + 5).to_string()])
        .args(["--step", "1s", "--format", "json"])
        .output()
        .expect("run burnwatch replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replayed: Value = serde_json::from_slice(&output.stdout).expect("replay JSON");
    let decisions: Vec<(String, i64)> = replayed["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| {
            event["tier"] == "page" && (event["state"] == "firing" || event["state"] == "resolved")
        })
        .map(|event| {
            let at = burnwatch::replay::parse_time(event["at"].as_str().unwrap_or_default())
                .expect("event time");
            (event["state"].as_str().unwrap_or_default().to_string(), at)
        })
        .collect();
    assert_eq!(decisions.len(), 2, "replay decisions: {decisions:?}");
    assert_eq!(decisions[0].0, "firing");
    assert!(
        (decisions[0].1 - fired).abs() <= 1000,
        "serve fired at {fired}, replay at {}",
        decisions[0].1
    );
    assert_eq!(decisions[1].0, "resolved");
    assert!(
        (decisions[1].1 - resolved.at).abs() <= 1000,
        "serve resolved at {}, replay at {}",
        resolved.at,
        decisions[1].1
    );
}

/// The incremental state is checkpointed at shutdown, one SLO at a time straight from the
/// state, and a restart resumes from it instead of warm-starting; a removed SLO's checkpoint
/// is forgotten at the next checkpoint.
#[test]
fn incremental_state_is_checkpointed_at_shutdown_and_resumed() {
    let live = live(0.0, false);
    let config = std::fs::read_to_string(live.setup.config()).expect("read config");
    std::fs::write(
        live.setup.config(),
        config.replace("strategy: query", "strategy: incremental"),
    )
    .expect("write config");
    let first = live.setup.serve();
    first.wait_ready();
    first.wait_evaluations(2);
    assert!(first.stop("TERM").success(), "{}", first.diagnostics());
    let saved = |state: &Path| -> Vec<(String, i64)> {
        let db = rusqlite::Connection::open(state.join("burnwatch.db")).expect("open db");
        let mut query = db
            .prepare(
                "SELECT h.slo_id, length(c.data) FROM checkpoint_heads h
                 JOIN checkpoints c ON c.rowid = h.data_row ORDER BY h.slo_id",
            )
            .expect("prepare");
        query
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let checkpoints = saved(&live.setup.state());
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    assert_eq!(checkpoints[0].0, SLO_ID);
    assert!(checkpoints[0].1 > 100, "{checkpoints:?}");

    let second = live.setup.serve();
    second.wait_ready();
    // The status page's history was saved with the checkpoint and comes back.
    assert!(
        second
            .stderr()
            .lines()
            .any(|line| line.contains("status page histories restored")
                && line.contains("slos=1")
                && line.contains("instances=1")),
        "{}",
        second.diagnostics()
    );
    assert!(
        second.stderr().lines().any(|line| line
            .contains("incremental state restored from checkpoint")
            && line.contains("resumed=true")),
        "{}",
        second.diagnostics()
    );
    // The SLO renamed: at shutdown the old SLO's checkpoint goes, the new one's is saved.
    live.setup.write_spec(
        &spec("Requests that do not fail.", "99.9").replace("requests-availability", "renamed"),
    );
    let (status, body) = second.reload(None);
    assert_eq!(status, 200, "{body}");
    second.wait_evaluations(2);
    assert!(second.stop("TERM").success(), "{}", second.diagnostics());
    let checkpoints = saved(&live.setup.state());
    assert_eq!(
        checkpoints
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["order-service-renamed"]
    );
}

#[test]
fn restart_keeps_firing_state_and_does_not_repage() {
    let live = live(0.5, false);
    let first = live.setup.serve();
    let since = first.wait_page_firing();

    let status = first.stop("TERM");
    assert!(
        status.success(),
        "SIGTERM should exit 0, got {status}\n{}",
        first.diagnostics()
    );
    assert!(
        live.setup.state().join("burnwatch.db").is_file(),
        "no burnwatch.db in the state dir"
    );
    drop(first);

    // The burn goes on while a new process starts on the same state.
    let second = live.setup.serve();
    second.wait_ready();
    second.wait_for("an evaluation that sees the burn", || {
        let (_, verdict) = page_condition(&find_slo(&second.slos())?)?;
        (verdict == Some(true)).then_some(())
    });
    second.wait_evaluations(2);
    let alert = second
        .firing_page()
        .unwrap_or_else(|| panic!("page not firing after restart: {:?}", second.alerts()));
    assert_eq!(alert["since"], since.as_str(), "{alert}");
    assert_eq!(alert["announced"], true, "{alert}");
    assert_eq!(
        second.blocks_of("firing", "").len(),
        0,
        "the restarted process paged again\n{}",
        second.diagnostics()
    );
    assert_eq!(second.blocks().len(), 0, "{}", second.diagnostics());

    // SIGINT stops it as cleanly as SIGTERM.
    let status = second.stop("INT");
    assert!(
        status.success(),
        "SIGINT should exit 0, got {status}\n{}",
        second.diagnostics()
    );
    assert!(
        second.stderr().contains("alert state saved"),
        "{}",
        second.diagnostics()
    );
}

#[test]
fn reload_keeps_state_and_rejects_a_bad_config() {
    let live = live(0.5, true);
    let serve = live.setup.serve();
    let since = serve.wait_page_firing();

    // A harmless edit, reloaded by SIGHUP: same alert, no new page.
    live.setup
        .write_spec(&spec("Requests that do not fail with a 5xx.", "99.9"));
    serve.signal("HUP");
    serve.wait_for("the SIGHUP reload", || {
        serve
            .stderr()
            .contains("SIGHUP: configuration reloaded")
            .then_some(())
    });
    serve.wait_evaluations(2);
    let alert = serve.firing_page().expect("page still firing after reload");
    assert_eq!(alert["since"], since.as_str(), "{alert}");
    assert_eq!(
        serve.blocks_of("firing", "").len(),
        1,
        "{}",
        serve.diagnostics()
    );

    // A broken spec: the reload is refused with file:line:col, the old config keeps running.
    let broken = spec("Requests that do not fail with a 5xx.", "100.5");
    live.setup.write_spec(&broken);
    let (line, column) = broken
        .lines()
        .enumerate()
        .find_map(|(index, text)| {
            text.find("objective: ")
                .map(|at| (index + 1, at + "objective: ".len() + 1))
        })
        .expect("objective line");
    let expected = format!(
        "{}:{line}:{column}: slos[0].objective: 100.5 is not a percentage in (0, 100)",
        live.setup.spec_path().display()
    );
    let (status, body) = serve.reload(Some(&format!("Bearer {RELOAD_TOKEN}")));
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains(&expected),
        "expected {expected:?} in {body:?}"
    );

    // Still evaluating, on the old config.
    serve.wait_evaluations(2);
    serve.assert_running();
    let slo = slo_status(&serve.slos());
    assert_eq!(slo["state"], "ok", "{slo}");
    assert_eq!(slo["objective"], 99.9, "{slo}");
    let alert = serve.firing_page().expect("page still firing");
    assert_eq!(alert["since"], since.as_str(), "{alert}");

    // SIGHUP with the broken spec: refused too, and serve keeps evaluating.
    serve.signal("HUP");
    serve.wait_for("the SIGHUP reload to be rejected", || {
        let stderr = serve.stderr();
        (stderr.contains("SIGHUP: reload rejected") && stderr.contains(&expected)).then_some(())
    });
    serve.wait_evaluations(2);
    serve.assert_running();
    let alert = serve.firing_page().expect("page still firing");
    assert_eq!(alert["since"], since.as_str(), "{alert}");
    assert_eq!(
        serve.blocks_of("firing", "").len(),
        1,
        "{}",
        serve.diagnostics()
    );
    assert_eq!(
        serve.blocks_of("resolved", "").len(),
        0,
        "{}",
        serve.diagnostics()
    );
}

/// A fake Prometheus whose every query answers an empty vector.
pub(crate) fn empty_prometheus() -> HttpStub {
    HttpStub::start(|_, _, _| {
        Reply::json(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        )
    })
}

/// Regression: each cycle started every window query of every SLO at once (300 query-strategy
/// SLOs: about 4,800 connections). With `prometheus.max_concurrency: 3`, a slow Prometheus
/// never sees more than 3 requests at a time, and `/metrics` shows the queue.
#[test]
fn queries_to_prometheus_are_bounded_by_max_concurrency() {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let answered = Arc::new(AtomicUsize::new(0));
    let prometheus = HttpStub::start({
        let (now, most, answered) = (now.clone(), most.clone(), answered.clone());
        move |_, target, _| {
            if target.starts_with("/api/v1/query") {
                let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(in_flight, Ordering::SeqCst);
                sleep(Duration::from_millis(100));
                now.fetch_sub(1, Ordering::SeqCst);
                answered.fetch_add(1, Ordering::SeqCst);
            }
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            )
        }
    });
    let setup = Setup::new(&prometheus.url(), "");
    setup.write_spec(&many_slos(
        &spec("Requests that do not fail.", "99.9"),
        &["checkout", "payments", "search", "shipping"],
    ));
    std::fs::write(
        setup.config(),
        format!(
            "prometheus:\n  url: {}\n  max_concurrency: 3\nevaluation_interval: 3s\n\
             stale_after: 1h\nstrategy: query\nrules:\n  - slos.yaml\n",
            prometheus.url()
        ),
    )
    .expect("write config");
    let serve = setup.serve();
    // 4 SLOs × 3 windows (20s, 5s, the 1h period) × 2 queries: 24 a cycle.
    serve.wait_for("two cycles of queries", || {
        (answered.load(Ordering::SeqCst) >= 48).then_some(())
    });
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 3, "{most} requests in flight at once");
    assert!(most >= 2, "requests went one at a time ({most})");
    let (_, metrics) = serve.get("/metrics");
    let waited = metric_value(&metrics, "burnwatch_prometheus_request_wait_seconds_total")
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(waited > 0.1, "no queueing shown: {waited}");
    assert!(metric_value(&metrics, "burnwatch_prometheus_requests_in_flight").is_some());
    assert!(metric_value(&metrics, "burnwatch_prometheus_requests_waiting").is_some());
    serve.assert_running();
}

/// Regression: every cycle waited for the slowest group's fetch, and a warm start may take two
/// minutes, so one SLO warming up (at start, or added by a reload) held every other SLO's
/// evaluation, and pages, that long. Groups are independent now, as Prometheus's rule groups
/// are: while one SLO's warm start is slow (each of its range queries takes 3 s, a cycle is
/// 1 s), the other is evaluated every cycle; the slow one is evaluated once its warm start
/// ends.
#[test]
fn a_slow_warm_start_does_not_hold_the_other_slos() {
    const SLOW: &str = "order-service-slow";
    const FAST: &str = "order-service-fast";
    let slow_ranges = Arc::new(AtomicUsize::new(0));
    let prometheus = HttpStub::start({
        let slow_ranges = slow_ranges.clone();
        move |_, target, body| {
            let range = target.starts_with("/api/v1/query_range");
            if range && format!("{target}{body}").contains("slow_requests_total") {
                slow_ranges.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_secs(3));
            }
            let raw = format!("{target}{body}").contains("ms%5D");
            let kind = if range || raw { "matrix" } else { "vector" };
            Reply::json(
                200,
                format!(r#"{{"status":"success","data":{{"resultType":"{kind}","result":[]}}}}"#),
            )
        }
    });
    let setup = Setup::new(&prometheus.url(), "");
    let base = spec("Requests that do not fail.", "99.9");
    let (head, body) = base.split_once("slos:\n").expect("slos");
    setup.write_spec(&format!(
        "{head}slos:\n{}{}",
        body.replace("requests-availability", "fast"),
        body.replace("requests-availability", "slow")
            .replace("http_requests_total", "slow_requests_total")
    ));
    std::fs::write(
        setup.config(),
        format!(
            "prometheus:\n  url: {}\nevaluation_interval: 1s\nstale_after: 1h\n\
             strategy: incremental\nrules:\n  - slos.yaml\n",
            prometheus.url()
        ),
    )
    .expect("write config");
    let serve = setup.serve();
    let last_success = |slos: &Value, id: &str| {
        slos["slos"]
            .as_array()
            .and_then(|all| all.iter().find(|slo| slo["id"] == id))
            .map_or(Value::Null, |slo| slo["last_success"].clone())
    };
    let mut seen = Vec::new();
    let slos = serve.wait_for("three evaluations of the fast SLO", || {
        let slos = serve.slos();
        let fast = last_success(&slos, FAST);
        if !fast.is_null() && !seen.contains(&fast) {
            seen.push(fast);
        }
        (seen.len() >= 3).then_some(slos)
    });
    assert!(
        last_success(&slos, SLOW).is_null(),
        "the slow SLO is still warming up: {slos}"
    );
    assert!(slow_ranges.load(Ordering::SeqCst) >= 1);
    let slos = serve.wait_for("the slow SLO's warm start to end", || {
        let slos = serve.slos();
        (!last_success(&slos, SLOW).is_null()).then_some(slos)
    });
    assert_eq!(
        slos["stale_slos"],
        serde_json::json!([]),
        "a warm start under way is not a failure: {slos}"
    );
    let (_, metrics) = serve.get("/metrics");
    let missed = |slo: &str| {
        parse_metrics(&metrics)
            .into_iter()
            .find(|(name, labels, _)| {
                name == "burnwatch_slo_evaluations_missed_total"
                    && labels.get("slo").map(String::as_str) == Some(slo)
            })
            .map(|(_, _, value)| value)
    };
    assert!(missed(SLOW).is_some_and(|n| n >= 2.0), "{metrics}");
    assert_eq!(missed(FAST), None, "{metrics}");
    // Starting the warm start did not make its cycle run past the next tick either.
    assert_eq!(
        metric_value(&metrics, "burnwatch_evaluations_missed_total"),
        Some(0.0),
        "{metrics}"
    );
    serve.assert_running();
}

#[test]
fn reload_endpoint_refuses_callers_without_the_token() {
    let prometheus = empty_prometheus();
    let setup = Setup::with_reload_token(&prometheus.url());
    let serve = setup.serve();
    serve.wait_ready();
    let reloads = |serve: &Serve| {
        serve
            .stderr()
            .lines()
            .filter(|line| line.contains("configuration reloaded") && !line.contains("SIGHUP"))
            .count()
    };

    for authorization in [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {RELOAD_TOKEN}x")),
        Some(format!("Basic {RELOAD_TOKEN}")),
        Some(RELOAD_TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ] {
        let (status, body) = serve.reload(authorization.as_deref());
        assert_eq!(status, 403, "{authorization:?}: {body}");
    }
    assert_eq!(
        reloads(&serve),
        0,
        "a refused reload reloaded\n{}",
        serve.diagnostics()
    );

    let (status, body) = serve.reload(Some(&format!("Bearer {RELOAD_TOKEN}")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "configuration reloaded\n");
    serve.wait_for("the reload in the log", || {
        (reloads(&serve) == 1).then_some(())
    });

    // A reload picks up a new token: the old one stops working.
    std::fs::write(
        setup.dir.path().join("reload-token"),
        "rotated-token-0123456789\n",
    )
    .unwrap();
    let (status, body) = serve.reload(Some(&format!("Bearer {RELOAD_TOKEN}")));
    assert_eq!(status, 200, "{body}");
    let (status, body) = serve.reload(Some(&format!("Bearer {RELOAD_TOKEN}")));
    assert_eq!(status, 403, "the old token still works: {body}");
    let (status, body) = serve.reload(Some("Bearer rotated-token-0123456789"));
    assert_eq!(status, 200, "{body}");
    // The token's file is 0644 here: the daemon says so (and still uses it).
    assert!(
        serve
            .stderr()
            .contains("reload-token is readable by others (mode 644)"),
        "{}",
        serve.stderr()
    );
    // The scheme is case-insensitive (regression: a lowercase `bearer` was refused).
    for scheme in ["bearer", "BEARER"] {
        let (status, body) = serve.reload(Some(&format!("{scheme} rotated-token-0123456789")));
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    // A token short enough to guess is refused with the reload; the running one stays.
    std::fs::write(
        setup.dir.path().join("reload-token"),
        "x
",
    )
    .unwrap();
    let (status, body) = serve.reload(Some("Bearer rotated-token-0123456789"));
    assert_ne!(status, 200, "{body}");
    assert!(
        body.contains("1 characters long; use at least 16"),
        "{body}"
    );
    let (status, body) = serve.reload(Some("Bearer x"));
    assert_eq!(status, 403, "{body}");
    std::fs::write(
        setup.dir.path().join("reload-token"),
        "rotated-token-0123456789\n",
    )
    .unwrap();
    serve.assert_running();

    // Without a token file, loopback callers may reload.
    let open = Setup::new(&prometheus.url(), "");
    let serve = open.serve();
    let (status, body) = serve.reload(None);
    assert_eq!(status, 200, "{body}");
}

/// Changes over HTTP are refused to web pages: a body that is not JSON (which a page can send
/// cross-origin without a CORS preflight) is 415, a request whose `Origin` is not this server
/// or whose `Host` is not a loopback name (DNS rebinding) is 403, a body over 64 KiB is 413,
/// and none of them creates or expires a silence or reloads. curl-like callers still may.
#[test]
fn changes_over_http_refuse_web_pages_and_bodies_that_are_not_json() {
    let prometheus = empty_prometheus();
    let setup = Setup::new(&prometheus.url(), "");
    let serve = setup.serve();
    let port = serve.url("").rsplit(':').next().unwrap().to_string();
    let own_origin = format!("http://127.0.0.1:{port}");
    let rebound = format!("rebound.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    let silence = serde_json::json!({
        "matchers": ["service=\"order-service\""],
        "endsAt": burnwatch::replay::format_time(now_ms() + 3_600_000),
        "comment": "from a test",
    })
    .to_string();
    let post = |headers: &[(&str, &str)], body: String| {
        let mut request = serve.http().post(serve.url("/api/v1/silences")).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        serve.request(request, "POST /api/v1/silences")
    };
    let json = ("Content-Type", "application/json");
    let refused: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![("Content-Type", "text/plain")], 415),
        (
            vec![("Content-Type", "application/x-www-form-urlencoded")],
            415,
        ),
        (
            vec![("Content-Type", "multipart/form-data; boundary=x")],
            415,
        ),
        (vec![], 415),
        (vec![json, ("Origin", "http://evil.example")], 403),
        (vec![json, ("Origin", "null")], 403),
        (vec![json, ("Origin", "http://127.0.0.1:1")], 403),
        (vec![json, ("Sec-Fetch-Site", "cross-site")], 403),
        (
            vec![
                ("Content-Type", "text/plain"),
                ("Origin", "http://evil.example"),
            ],
            403,
        ),
        // A name rebound to 127.0.0.1: the browser's page is then "same origin".
        (
            vec![
                json,
                ("Host", rebound.as_str()),
                ("Origin", rebound_origin.as_str()),
            ],
            403,
        ),
    ];
    for (headers, status) in &refused {
        let (got, body) = post(headers, silence.clone());
        assert_eq!(got, *status, "{headers:?}: {body}");
    }
    let huge = format!(
        r#"{{"matchers": ["a=\"b\""], "endsAt": "2999-01-01T00:00:00Z", "comment": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, body) = post(&[json], huge);
    assert_eq!(status, 413, "{body}");
    let listed = serve.json("/api/v1/silences");
    assert_eq!(
        listed["silences"],
        serde_json::json!([]),
        "a refused request made a silence"
    );

    // JSON from curl, or from a page of this very server: taken.
    let (status, body) = post(&[json], silence.clone());
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &[
            ("Content-Type", "application/json; charset=utf-8"),
            ("Origin", &own_origin),
        ],
        silence.clone(),
    );
    assert_eq!(status, 200, "{body}");
    let listed = serve.json("/api/v1/silences");
    let ids: Vec<String> = listed["silences"]
        .as_array()
        .expect("silences")
        .iter()
        .map(|silence| silence["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");

    // Expiring and reloading: a foreign Origin or a form body is refused, and changes nothing.
    let delete = |id: &str, origin: Option<&str>| {
        let mut request = serve
            .http()
            .delete(serve.url(&format!("/api/v1/silences/{id}")));
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        serve.request(request, "DELETE /api/v1/silences")
    };
    let (status, body) = delete(&ids[0], Some("http://evil.example"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        serve.json("/api/v1/silences")["silences"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let (status, body) = delete(&ids[0], None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serve.json("/api/v1/silences")["silences"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let reload = |headers: &[(&str, &str)], body: &'static str| {
        let mut request = serve.http().post(serve.url("/-/reload")).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        serve.request(request, "POST /-/reload")
    };
    let (status, body) = reload(&[("Origin", "http://evil.example")], "");
    assert_eq!(status, 403, "{body}");
    let (status, body) = reload(&[("Content-Type", "application/x-www-form-urlencoded")], "");
    assert_eq!(status, 415, "{body}");
    let (status, body) = reload(&[("Content-Type", "text/plain")], "x");
    assert_eq!(status, 415, "{body}");
    assert!(
        !serve.stderr().contains("configuration reloaded"),
        "a refused reload reloaded\n{}",
        serve.diagnostics()
    );
    let (status, body) = reload(&[], "");
    assert_eq!(status, 200, "{body}");
    let (status, body) = reload(&[json], "{}");
    assert_eq!(status, 200, "{body}");
    // Reading is unchanged: any Origin may GET.
    let (status, _) = serve.request(
        serve
            .http()
            .get(serve.url("/api/v1/silences"))
            .header("Origin", "http://evil.example"),
        "GET /api/v1/silences",
    );
    assert_eq!(status, 200);

    // With a token: the same refusals, whatever the token.
    let setup = Setup::with_reload_token(&prometheus.url());
    let serve = setup.serve();
    let bearer = format!("Bearer {RELOAD_TOKEN}");
    let post = |headers: &[(&str, &str)]| {
        let mut request = serve
            .http()
            .post(serve.url("/api/v1/silences"))
            .header("Authorization", &bearer)
            .body(silence.clone());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        serve.request(request, "POST /api/v1/silences")
    };
    let (status, body) = post(&[("Content-Type", "text/plain")]);
    assert_eq!(status, 415, "{body}");
    let (status, body) = post(&[json, ("Origin", "http://evil.example")]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        serve.json("/api/v1/silences")["silences"],
        serde_json::json!([])
    );
    // A token is not bound to loopback names (it is what a proxy in front would use).
    let (status, body) = post(&[json, ("Host", rebound.as_str())]);
    assert_eq!(status, 200, "{body}");
}

/// The address of this machine on its first non-loopback interface, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Listening on all interfaces without `web.reload_token_file` starts (a container must
/// listen beyond loopback for Prometheus to scrape `/metrics`) but says loudly that changes stay
/// loopback-only, and keeps them so: a caller from another address is refused, reads are not.
#[test]
fn listening_beyond_loopback_without_a_token_warns_and_keeps_changes_on_loopback() {
    let prometheus = empty_prometheus();
    let warning = "listening beyond loopback without web.reload_token_file";
    let setup = Setup::new(&prometheus.url(), "");
    let serve = Serve::start_with(&setup.config(), &setup.state(), &["--listen", "0.0.0.0:0"]);
    serve.wait_for("the warning about changes over HTTP", || {
        serve.stderr().contains(warning).then_some(())
    });
    let (status, body) = serve.reload(None);
    assert_eq!(status, 200, "loopback may still reload: {body}");
    match non_loopback_address() {
        Some(ip) => {
            let port = serve.url("").rsplit(':').next().unwrap().to_string();
            let base = format!("http://{}", SocketAddr::new(ip, port.parse().unwrap()));
            let (status, body) = serve.request(
                serve.http().post(format!("{base}/-/reload")),
                "POST /-/reload from another address",
            );
            assert_eq!(status, 403, "{body}");
            assert!(body.contains("not on loopback"), "{body}");
            let (status, _) = serve.request(
                serve.http().get(format!("{base}/-/healthy")),
                "GET /-/healthy from another address",
            );
            assert_eq!(status, 200);
        }
        None => eprintln!("no non-loopback interface: the remote caller is not tried"),
    }

    // Loopback only, or a token: no warning.
    for (setup, args) in [
        (
            Setup::new(&prometheus.url(), ""),
            &["--listen", "127.0.0.1:0"][..],
        ),
        (
            Setup::with_reload_token(&prometheus.url()),
            &["--listen", "0.0.0.0:0"][..],
        ),
    ] {
        let serve = Serve::start_with(&setup.config(), &setup.state(), args);
        let (status, _) = serve.get("/-/healthy");
        assert_eq!(status, 200);
        sleep(Duration::from_millis(500));
        assert!(
            !serve.stderr().contains(warning),
            "{args:?}\n{}",
            serve.stderr()
        );
    }
}

#[test]
fn prometheus_outage_holds_alerts_and_raises_stale_meta_alert() {
    // A restarted Prometheus answers before it scrapes again: 2.42 applies its targets on a 5s
    // tick, so its data has a hole of up to ~7s past its return, longer than the 5s short
    // window. The hold without data (`resolve_timeout`) is made longer than that hole here, as
    // an SRE would with windows this short; the hold itself is tested elsewhere.
    const HOLD_MS: i64 = 12_000;
    let mut live = live(0.5, false);
    live.setup
        .write_spec(&spec("Requests that do not fail.", "99.9").replace(
            "resolve_timeout: 3s",
            &format!("resolve_timeout: {}s", HOLD_MS / 1000),
        ));
    let serve = live.setup.serve();
    let since = serve.wait_page_firing();
    let last_good = serve.wait_for("a successful evaluation", || {
        let slos = serve.slos();
        let slo = find_slo(&slos)?;
        (slo["state"] == "ok" && slo["last_success"] == slos["last_evaluation"])
            .then(|| parse_time(slo["last_success"].as_str()?).ok())
            .flatten()
    });

    live.prom.stop();
    let stale = serve.wait_for("the stale meta alert", || {
        serve.blocks_of("firing", STALE_FIRING).into_iter().next()
    });
    // Regression: the message named the first failed evaluation, not Prometheus's last
    // answer. It names the SLO and when Prometheus last answered for it: its last success.
    let (last_answered, named) = stale
        .text
        .strip_prefix(STALE_FIRING)
        .and_then(|rest| rest.split_once(" ("))
        .map(|(time, rest)| {
            let time = parse_time(time).unwrap_or_else(|e| panic!("{e}"));
            (time, rest.split("): alerts are held").next().unwrap_or(""))
        })
        .unwrap_or_else(|| panic!("{stale:?}"));
    assert_eq!(named, "order-service-requests-availability", "{stale:?}");
    assert!(
        last_answered >= last_good,
        "last answered {last_answered}, but the evaluation at {last_good} succeeded"
    );
    assert!(
        stale.at - last_answered >= STALE_AFTER_MS,
        "stale alert at {} for no answer since {last_answered}: before stale_after",
        stale.at
    );
    let stale_since = last_answered;
    let slos = serve.slos();
    assert_eq!(slos["stale"], true, "{slos}");
    assert_eq!(
        slos["stale_slos"],
        serde_json::json!(["order-service-requests-availability"]),
        "{slos}"
    );
    let slo = slo_status(&slos);
    assert_eq!(slo["state"], "stale", "{slo}");
    assert_eq!(
        slo["last_success"]
            .as_str()
            .map(|time| parse_time(time).unwrap_or_else(|e| panic!("{e}"))),
        Some(last_answered),
        "the message's last answer is the SLO's last success: {slo}"
    );
    let error = slo["last_error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("cannot reach Prometheus")
            || error == "Prometheus did not answer in time",
        "{slo}"
    );
    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric_value(&metrics, "burnwatch_evaluation_stale"),
        Some(1.0),
        "{metrics}"
    );

    // Longer than resolve_timeout without answers: the page holds, nothing resolves.
    serve.wait_for("evaluations past resolve_timeout", || {
        serve
            .last_evaluation()
            .filter(|last| *last >= stale_since + HOLD_MS + 2000)
    });
    let alert = serve
        .firing_page()
        .unwrap_or_else(|| panic!("page not firing during the outage: {:?}", serve.alerts()));
    assert_eq!(alert["since"], since.as_str(), "{alert}");
    assert_eq!(
        serve.blocks_of("resolved", "").len(),
        0,
        "{}",
        serve.diagnostics()
    );

    // Prometheus is back on the same port with the same data: the meta alert resolves.
    live.prom.restart();
    let recovered = serve.wait_for("the stale meta alert to resolve", || {
        serve
            .blocks_of("resolved", STALE_RESOLVED)
            .into_iter()
            .next()
    });
    assert!(recovered.at > stale.at);
    serve.wait_for("stale: false", || {
        (serve.slos()["stale"] == false).then_some(())
    });
    assert_eq!(slo_status(&serve.slos())["state"], "ok");
    let (_, metrics) = serve.get("/metrics");
    assert_eq!(
        metric_value(&metrics, "burnwatch_evaluation_stale"),
        Some(0.0),
        "{metrics}"
    );

    // The burn went on: the page is the same incident, still unresolved.
    serve.wait_for("an evaluation that sees the burn again", || {
        let (_, verdict) = page_condition(&find_slo(&serve.slos())?)?;
        (verdict == Some(true)).then_some(())
    });
    serve.wait_evaluations(1);
    let alert = serve.firing_page().expect("page firing after the outage");
    assert_eq!(
        alert["since"],
        since.as_str(),
        "{alert}\n{}",
        serve.diagnostics()
    );
    let kinds: Vec<(String, String)> = serve
        .blocks()
        .into_iter()
        .map(|block| {
            (
                block.kind,
                block.text.lines().next().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(kinds[0], ("firing".to_string(), PAGE_FIRING.to_string()));
    assert!(kinds[1].1.starts_with(STALE_FIRING), "{kinds:?}");
    assert!(kinds[2].1.starts_with(STALE_RESOLVED), "{kinds:?}");
}

/// Regression: staleness was "some SLO failed in every cycle for stale_after", so one SLO
/// whose query always fails kept `/-/ready` at 503 forever and its failures spoke for every
/// SLO. Now staleness is per SLO: the broken one is named in the meta alert and the readiness
/// answer, the healthy one evaluates on, and readiness comes once the broken one is stale.
#[test]
fn one_broken_slo_is_stale_alone_and_does_not_hold_readiness() {
    const BROKEN: &str = "order-service-broken-query";
    let live = live(0.0, false);
    // Prometheus refuses this at evaluation, whatever the data: two series on the right match
    // the empty `on()` group.
    let broken = r#"  - name: broken-query
    objective: 99
    period: 1h
    sli:
      raw:
        error_ratio: 'sum_over_time(vector(1)[{{.window}}:10s]) / on() (label_replace(vector(1), "a", "x", "", "") or label_replace(vector(1), "a", "y", "", ""))' 
    alerting:
      page:
        windows: [{long: 20s, short: 5s, factor: 10}]
      ticket: {disable: true}
"#;
    live.setup.write_spec(&format!(
        "{}{broken}",
        spec("Requests that do not fail.", "99.9")
    ));
    let serve = live.setup.serve();
    let body = serve.wait_for("/-/ready to answer 200", || {
        let (status, body) = serve.get("/-/ready");
        (status == 200).then_some(body)
    });
    assert_eq!(
        body.trim(),
        format!("burnwatch is ready; stale, never evaluated successfully: {BROKEN}")
    );
    let stale = serve.wait_for("the stale meta alert", || {
        serve.blocks_of("firing", STALE_FIRING).into_iter().next()
    });
    assert!(
        stale.text.contains(&format!("({BROKEN}): alerts are held")),
        "only the broken SLO is named: {stale:?}"
    );
    let slos = serve.slos();
    assert_eq!(slos["stale_slos"], serde_json::json!([BROKEN]), "{slos}");
    let healthy = slo_status(&slos);
    assert_eq!(healthy["state"], "ok", "{healthy}");
    let broken = slos["slos"]
        .as_array()
        .and_then(|all| all.iter().find(|slo| slo["id"] == BROKEN))
        .cloned()
        .unwrap_or_else(|| panic!("{slos}"));
    assert_eq!(broken["last_success"], Value::Null, "{broken}");
    assert!(
        broken["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("match")),
        "Prometheus's own error is shown: {broken}"
    );
    let (_, metrics) = serve.get("/metrics");
    assert_eq!(metric_value(&metrics, "burnwatch_stale_slos"), Some(1.0));
    assert_eq!(
        metric_value(&metrics, "burnwatch_evaluation_stale"),
        Some(1.0)
    );
    serve.assert_running();
}

/// libfaketime (Debian's `faketime`, installed by scripts/test): the wall clock of one process
/// is offset by what a file says, the monotonic clock left alone.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Regression: ticks were computed from the wall clock and slept on the monotonic clock, so a
/// wall clock stepped back an hour stopped evaluation for an hour without a word. Ticks are
/// monotonic now; evaluation times follow the wall clock, stepped back with it.
#[test]
fn a_wall_clock_stepped_back_an_hour_does_not_stall_evaluation() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (scripts/test does)"
    );
    let live = live(0.0, false);
    let offset = live.setup.dir.path().join("clock-offset");
    std::fs::write(&offset, "+0\n").expect("write offset");
    let offset_path = offset.to_str().expect("utf-8 path");
    let serve = Serve::start_with_env(
        &live.setup.config(),
        &live.setup.state(),
        &[],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset_path),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    serve.wait_ready();
    let before = serve.wait_evaluations(2);
    assert!(
        (before - now_ms()).abs() < 10_000,
        "the offset starts at zero: evaluated at {before}, now {}",
        now_ms()
    );
    std::fs::write(&offset, "-1h\n").expect("step the clock back");
    let stepped = serve.wait_for("an evaluation an hour back", || {
        serve
            .last_evaluation()
            .filter(|last| *last < before - 3_000_000)
    });
    // And it goes on at the interval on the stepped clock.
    serve.wait_for("evaluations after the step", || {
        serve
            .last_evaluation()
            .filter(|last| *last >= stepped + 2_000)
    });
    let (status, _) = serve.get("/-/ready");
    assert_eq!(status, 200);
    serve.assert_running();
}

#[test]
fn malformed_prometheus_answers_are_errors_not_panics() {
    const MALFORMED: &str = "malformed answer from Prometheus: ";
    let vector = |value: &str| {
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"route":"{ROUTE}"}},"value":{value}}}]}}}}"#
        )
    };
    let deep = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":{}"#,
        "[".repeat(100_000)
    );
    // (status, content type, body, what last_error must start with)
    let cases: Vec<(u16, &'static str, String, Vec<String>)> = vec![
        (
            200,
            "text/plain",
            "this is not JSON".to_string(),
            vec![format!("{MALFORMED}not an API answer (invalid JSON)")],
        ),
        (
            200,
            "application/json",
            "[]".to_string(),
            vec![format!("{MALFORMED}not an API answer (unexpected JSON shape)")],
        ),
        (
            200,
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#.to_string(),
            vec![format!("{MALFORMED}result is not an array")],
        ),
        (
            400,
            "application/json",
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:1: parse error"}"#.to_string(),
            vec!["Prometheus error (bad_data): invalid parameter \"query\": 1:1: parse error".to_string()],
        ),
        (
            200,
            "application/json",
            vector("[1,2]"),
            vec![format!("{MALFORMED}a sample is not [time, \"value\"]")],
        ),
        (
            200,
            "application/json",
            vector(r#"[1700000000,"1e999"]"#),
            vec![format!("{MALFORMED}\"1e999\" is not a sample value")],
        ),
        (
            200,
            "application/json",
            vector(r#"[1e999,"1"]"#),
            vec![format!("{MALFORMED}not an API answer")],
        ),
        (
            422,
            "application/json",
            r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory"}"#.to_string(),
            vec!["Prometheus error (execution): query processing would load too many samples".to_string()],
        ),
        (
            200,
            "application/json",
            vector(r#"[1e300,"1"]"#),
            vec![format!("{MALFORMED}a sample is not [time, \"value\"]")],
        ),
        (
            200,
            "application/json",
            deep,
            vec![format!("{MALFORMED}not an API answer")],
        ),
        (
            200,
            "application/json",
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.to_string(),
            vec![format!("{MALFORMED}expected a vector")],
        ),
        // Regression (hardening): answers had no size limit (50 MB answers took memory to
        // 1.8 GB). A valid answer of 2 MB, over this config's 1MiB, is an error naming the
        // query.
        (
            200,
            "application/json",
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                (0..20_000)
                    .map(|i| format!(
                        r#"{{"metric":{{"route":"/padding/{i:08}/{}"}},"value":[1700000000,"0.1"]}}"#,
                        "x".repeat(40)
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            vec!["Prometheus's answer to ".to_string()],
        ),
        (
            404,
            "text/html",
            "<html><body>404 page not found</body></html>".to_string(),
            vec!["Prometheus answered HTTP 404".to_string()],
        ),
        (
            502,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>".to_string(),
            // Retried with backoff; with a 1s evaluation interval the retries outlast the
            // cycle's deadline.
            vec![
                "Prometheus answered HTTP 502".to_string(),
                "Prometheus did not answer in time".to_string(),
            ],
        ),
    ];
    let current = Arc::new(AtomicUsize::new(0));
    let replies: Arc<Vec<(u16, &'static str, String)>> = Arc::new(
        cases
            .iter()
            .map(|(status, content_type, body, _)| (*status, *content_type, body.clone()))
            .chain([(
                200,
                "application/json",
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.to_string(),
            )])
            .collect(),
    );
    let queries = Arc::new(AtomicUsize::new(0));
    let prometheus = HttpStub::start({
        let current = current.clone();
        let replies = replies.clone();
        let queries = queries.clone();
        move |_, target, _| {
            if target.starts_with("/api/v1/query?") {
                queries.fetch_add(1, Ordering::SeqCst);
            }
            let (status, content_type, body) = &replies[current.load(Ordering::SeqCst)];
            Reply::new(*status, content_type, body.clone())
        }
    });
    let setup = Setup::new(&prometheus.url(), "");
    // Never stale during the test: readiness waits for the SLO's first answer.
    let config = std::fs::read_to_string(setup.config()).expect("read config");
    std::fs::write(
        setup.config(),
        config
            .replace("stale_after: 3s", "stale_after: 1h")
            .replace("prometheus:\n", "prometheus:\n  max_answer_size: 1MiB\n"),
    )
    .expect("write config");
    let serve = setup.serve();

    for (index, (status, _, body, expected)) in cases.iter().enumerate() {
        current.store(index, Ordering::SeqCst);
        // Evaluations at or after this time query the new answer.
        let switched = now_ms();
        let shown = &body[..body.len().min(120)];
        let slo = serve.wait_for(&format!("last_error for HTTP {status} {shown}"), || {
            let slos = serve.slos();
            let evaluated = slos["last_evaluation"]
                .as_str()
                .is_some_and(|at| parse_time(at).unwrap() >= switched);
            let slo = find_slo(&slos)?;
            let error = slo["last_error"].as_str().unwrap_or("");
            (evaluated
                && expected
                    .iter()
                    .any(|prefix| error.starts_with(prefix.as_str())))
            .then_some(slo)
        });
        assert_eq!(slo["state"], "stale", "{slo}");
        serve.assert_running();
        let (status, body) = serve.get("/-/healthy");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serve.get("/-/ready").0,
            503,
            "ready without a complete evaluation"
        );
        assert_eq!(
            serve.get("/-/ready").1.trim(),
            format!("burnwatch is not ready: not evaluated successfully yet: {SLO_ID}")
        );
        assert_eq!(serve.alerts(), Vec::<Value>::new());
    }
    assert!(queries.load(Ordering::SeqCst) >= cases.len());

    // A well-formed answer again: evaluation recovers.
    current.store(cases.len(), Ordering::SeqCst);
    serve.wait_ready();
    let slo = serve.wait_for("the SLO to recover", || {
        let slo = find_slo(&serve.slos())?;
        (slo["state"] == "ok").then_some(slo)
    });
    assert_eq!(slo["last_error"], Value::Null, "{slo}");
    serve.assert_running();
    assert!(
        !serve.stderr().contains("panicked"),
        "{}",
        serve.diagnostics()
    );
}

/// Two routes of `http_requests_total` every 15s for 2h, ending a minute ago, with an
/// error ratio that varies over time (so each window has its own value).
pub(crate) fn backfill(end: i64) -> String {
    let steps = 2 * 3600 / 15;
    let start = end - 15 * steps;
    let mut text = String::from("# TYPE http_requests counter\n");
    for (route, per_step) in [("POST /orders", 150u64), ("GET /orders", 300u64)] {
        let mut series = [(String::from("200"), 1000u64), (String::from("500"), 10u64)];
        let mut lines = [String::new(), String::new()];
        for step in 0..=steps {
            if step > 0 {
                let errors = if route == "POST /orders" {
                    per_step * (step as u64 % 40) / 400
                } else {
                    u64::from(step % 7 == 0)
                };
                series[0].1 += per_step - errors;
                series[1].1 += errors;
            }
            for ((code, value), lines) in series.iter().zip(lines.iter_mut()) {
                lines.push_str(&format!(
                    "http_requests_total{{code=\"{code}\",route=\"{route}\"}} {value} {}\n",
                    start + 15 * step
                ));
            }
        }
        for lines in lines {
            text.push_str(&lines);
        }
    }
    text.push_str("# EOF\n");
    text
}

/// Grouped by route, windows 5m, 30m, 1h, 2h and the period 1d, over `backfill`'s series.
pub(crate) const BACKFILL_SPEC: &str = r#"version: burnwatch/v1
service: order-service
slos:
  - name: requests-availability
    objective: 99.9
    period: 1d
    sli:
      ratio:
        errors: http_requests_total{code=~"5.."}
        total: http_requests_total
    group_by: [route]
    alerting:
      page:
        windows: [{long: 1h, short: 5m, factor: 14.4}]
      ticket:
        windows: [{long: 2h, short: 30m, factor: 3}]
"#;

/// Prometheus with `backfill`ed data up to a minute ago, and serve evaluating
/// BACKFILL_SPEC against it, once it has evaluated both routes.
pub(crate) fn backfilled_serve() -> (Prometheus, Setup, Serve) {
    let end = now_ms() / 1000 - 60;
    let prom = Prometheus::start(&backfill(end));
    let setup = Setup::new(&prom.url(), "");
    setup.write_spec(BACKFILL_SPEC);
    let serve = setup.serve();
    serve.wait_ready();
    serve.wait_for("both routes evaluated", || {
        let slo = find_slo(&serve.slos())?;
        (slo["state"] == "ok" && slo["instances"].as_array()?.len() == 2).then_some(())
    });
    (prom, setup, serve)
}

#[test]
fn metrics_have_sloth_series_matching_prometheus() {
    let (prom, _setup, serve) = backfilled_serve();
    let slo = match burnwatch::config::load_str("slos.yaml", BACKFILL_SPEC, Path::new(".")) {
        Ok(burnwatch::config::Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    };
    let template = slo.sli.error_ratio_template();
    let windows = ["5m", "30m", "1h", "2h", "1d"];

    // Read /metrics once, half-way between two (1s, clock-aligned) evaluations, so that no
    // cycle is in flight; its SLO series and its timestamp then come from one evaluation.
    let (at, samples) = serve.wait_for("a /metrics read between evaluations", || {
        let phase = now_ms().rem_euclid(1000);
        sleep(Duration::from_millis(((1500 - phase) % 1000) as u64));
        let (status, text) = serve.get("/metrics");
        assert_eq!(status, 200, "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        let samples = parse_metrics(&text);
        let at = samples
            .iter()
            .find(|(name, _, _)| name == "burnwatch_last_evaluation_timestamp_seconds")
            .map(|(_, _, value)| *value)
            .expect("burnwatch_last_evaluation_timestamp_seconds");
        // The SLO status of the same evaluation confirms no cycle finished meanwhile.
        let slo = find_slo(&serve.slos())?;
        let success = parse_time(slo["last_success"].as_str()?).ok()?;
        (success == (at * 1000.0).round() as i64).then_some((at, samples))
    });
    assert_eq!(
        at.fract(),
        0.0,
        "evaluations are aligned to whole seconds: {at}"
    );
    assert!(
        (now_ms() as f64 / 1000.0 - at).abs() < 30.0,
        "last evaluation {at} is not recent"
    );

    let series = |name: &str, route: &str| -> Vec<(BTreeMap<String, String>, f64)> {
        samples
            .iter()
            .filter(|(found, labels, _)| {
                found == name && labels.get("route").map(String::as_str) == Some(route)
            })
            .map(|(_, labels, value)| (labels.clone(), *value))
            .collect()
    };
    let close = |ours: f64, theirs: f64| (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1e-12);
    for route in ["POST /orders", "GET /orders"] {
        let mut ratios = BTreeMap::new();
        for window in windows {
            let name = format!("slo:sli_error:ratio_rate{window}");
            let found = series(&name, route);
            assert_eq!(found.len(), 1, "{name} for {route}: {found:?}");
            let (labels, ours) = &found[0];
            let expected_labels: BTreeMap<String, String> = [
                ("route", route),
                ("sloth_id", SLO_ID),
                ("sloth_service", "order-service"),
                ("sloth_slo", "requests-availability"),
                ("sloth_window", window),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            assert_eq!(labels, &expected_labels, "{name}");

            let expr = burnwatch::query::with_window(
                &template,
                burnwatch::slo::parse_duration(window).unwrap(),
            );
            let theirs = prom
                .query(&expr, at)
                .into_iter()
                .find(|(labels, _)| labels.get("route").map(String::as_str) == Some(route))
                .map(|(_, value)| value)
                .unwrap_or_else(|| panic!("Prometheus has no {route} for {expr}"));
            assert!(
                close(*ours, theirs),
                "{name}{{route={route:?}}} at {at}: burnwatch {ours}, Prometheus {theirs} \
                 for\n{expr}"
            );
            ratios.insert(window, theirs);
        }
        // The windows really differ, so a mix-up would show.
        assert_ne!(ratios["5m"], ratios["1h"], "{route}: {ratios:?}");

        // Per instance; each keeps the `sloth_window` of the ratio it divides, as Sloth's
        // `/ on(...) group_left` rules do.
        let value = |name: &str, window: &str| {
            let found = series(name, route);
            assert_eq!(found.len(), 1, "{name} for {route}: {found:?}");
            let (labels, value) = &found[0];
            assert_eq!(labels.get("sloth_id").map(String::as_str), Some(SLO_ID));
            assert_eq!(
                labels.get("sloth_service").map(String::as_str),
                Some("order-service")
            );
            assert_eq!(
                labels.get("sloth_slo").map(String::as_str),
                Some("requests-availability")
            );
            assert_eq!(
                labels.get("sloth_window").map(String::as_str),
                Some(window),
                "{name}: {labels:?}"
            );
            *value
        };
        // Per SLO, as Sloth's `vector(...)` rules: no instance labels.
        let slo_value = |name: &str| {
            let found: Vec<_> = samples
                .iter()
                .filter(|(found, _, _)| found == name)
                .collect();
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            let (_, labels, value) = found[0];
            let expected: BTreeMap<String, String> = [
                ("sloth_id", SLO_ID),
                ("sloth_service", "order-service"),
                ("sloth_slo", "requests-availability"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            assert_eq!(labels, &expected, "{name}");
            *value
        };
        // 99.9 / 100 in floating point, as Sloth writes it: vector(0.9990000000000001).
        let objective = slo_value("slo:objective:ratio");
        assert!((objective - 0.999).abs() < 1e-12, "objective {objective}");
        let budget = slo_value("slo:error_budget:ratio");
        assert!(close(budget, 0.001), "error budget {budget}");
        assert_eq!(slo_value("slo:time_period:days"), 1.0);
        let info: Vec<_> = samples
            .iter()
            .filter(|(found, _, _)| found == "sloth_slo_info")
            .collect();
        assert_eq!(info.len(), 1, "{info:?}");
        let (_, labels, info_value) = info[0];
        assert_eq!(*info_value, 1.0);
        for (name, expected) in [
            ("sloth_id", SLO_ID),
            ("sloth_objective", "99.9"),
            ("sloth_spec", "burnwatch/v1"),
            ("sloth_mode", burnwatch::metrics::SLOTH_MODE),
            ("sloth_version", burnwatch::metrics::SLOTH_VERSION),
        ] {
            assert_eq!(
                labels.get(name).map(String::as_str),
                Some(expected),
                "{labels:?}"
            );
        }
        let current = value("slo:current_burn_rate:ratio", "5m");
        assert!(
            close(current, ratios["5m"] / budget),
            "current burn rate {current}"
        );
        let period = value("slo:period_burn_rate:ratio", "1d");
        assert!(
            close(period, ratios["1d"] / budget),
            "period burn rate {period}"
        );
        let remaining = value("slo:period_error_budget_remaining:ratio", "1d");
        assert!(
            (remaining - (1.0 - ratios["1d"] / budget)).abs() <= 1e-9,
            "budget remaining {remaining}"
        );
    }
    assert_eq!(
        metric_value(&serve.get("/metrics").1, "burnwatch_evaluation_stale"),
        Some(0.0)
    );
}

/// Every `/metrics` response is one evaluation's view: the SLO series that go with its
/// `burnwatch_last_evaluation_timestamp_seconds`, all of them. (With static data, one
/// evaluation time always yields the same values.) Reads as fast as it can across evaluations.
#[test]
fn metrics_responses_are_consistent_snapshots_of_one_evaluation() {
    let (_prom, _setup, serve) = backfilled_serve();
    // Per instance: five window ratios, current and period burn rates, budget remaining; per
    // SLO: objective, error budget, period in days.
    let expected_series = 2 * (5 + 3) + 3;
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut reads = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let (status, text) = serve.get("/metrics");
        assert_eq!(status, 200, "{text}");
        reads += 1;
        let samples = parse_metrics(&text);
        let at = samples
            .iter()
            .find(|(name, _, _)| name == "burnwatch_last_evaluation_timestamp_seconds")
            .map(|(_, _, value)| value.to_string())
            .expect("burnwatch_last_evaluation_timestamp_seconds");
        let series: Vec<String> = samples
            .iter()
            .filter(|(name, _, _)| name.starts_with("slo:"))
            .map(|(name, labels, value)| format!("{name}{labels:?} {value}"))
            .collect();
        assert_eq!(
            series.len(),
            expected_series,
            "read {reads}: a /metrics response with evaluation timestamp {at} has {} SLO \
             series instead of {expected_series}:\n{}",
            series.len(),
            series.join("\n")
        );
        if let Some(earlier) = seen.get(&at) {
            let differs = earlier
                .iter()
                .zip(&series)
                .find(|(before, now)| before != now);
            assert!(
                differs.is_none(),
                "read {reads}: two /metrics responses carry evaluation timestamp {at} but \
                 different SLO series, so the SLO series of an evaluation were published \
                 before its timestamp: {differs:?}"
            );
        } else {
            seen.insert(at, series);
        }
    }
    assert!(seen.len() >= 3, "only {} evaluations in 5s", seen.len());
}

// ---- the Prometheus client against a server that checks what it is sent ----

/// The value of `parameter` in a request target's query string (percent-decoded enough for
/// numbers).
pub(crate) fn parameter(target: &str, parameter: &str) -> Option<f64> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{parameter}=")))
        .and_then(|value| value.parse().ok())
}

#[test]
fn prometheus_client_sends_prefix_headers_and_credentials_and_retries_only_server_errors() {
    use burnwatch::source::prometheus::{ApiError, Auth, Client, Endpoint, Secret};
    let requests = Arc::new(AtomicUsize::new(0));
    let failures_left = Arc::new(AtomicUsize::new(0));
    let stub = HttpStub::start({
        let (requests, failures_left) = (requests.clone(), failures_left.clone());
        move |_, target, head| {
            requests.fetch_add(1, Ordering::SeqCst);
            let head = head.to_ascii_lowercase();
            let authorised = head.contains("authorization: bearer t0ken-from-a-file")
                || head.contains("authorization: basic dxnlcjpwyxnzd29yza==");
            if !target.starts_with("/prometheus/api/v1/")
                || !head.contains("x-scope-orgid: team-a")
                || !authorised
            {
                return Reply::json(
                    401,
                    r#"{"status":"error","errorType":"unauthorized","error":"who are you"}"#,
                );
            }
            if failures_left.load(Ordering::SeqCst) > 0 {
                failures_left.fetch_sub(1, Ordering::SeqCst);
                return Reply::new(503, "text/html", "<html>busy</html>");
            }
            if target.contains("query=bad") {
                return Reply::json(
                    400,
                    r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
                );
            }
            if target.starts_with("/prometheus/api/v1/query_range?") {
                let (start, end, step) = (
                    parameter(target, "start").unwrap_or(0.0),
                    parameter(target, "end").unwrap_or(0.0),
                    parameter(target, "step").unwrap_or(1.0),
                );
                let points = ((end - start) / step).round() as i64 + 1;
                if points > 11_000 {
                    return Reply::json(
                        400,
                        r#"{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of 11,000 points per timeseries"}"#,
                    );
                }
                let values: Vec<String> = (0..points)
                    .map(|i| format!("[{},\"1\"]", start + i as f64 * step))
                    .collect();
                return Reply::json(
                    200,
                    format!(
                        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"a":"b"}},"values":[{}]}}]}}}}"#,
                        values.join(",")
                    ),
                );
            }
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.5"]}]}}"#,
            )
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = |auth: Auth| {
        let mut endpoint = Endpoint::new(format!("{}/prometheus", stub.url()));
        endpoint.headers = vec![("X-Scope-OrgID".to_string(), "team-a".to_string())];
        endpoint.auth = auth;
        endpoint.retries = 3;
        endpoint
    };
    let bearer = Client::new(&endpoint(Auth::Bearer(Secret::new(
        "t0ken-from-a-file".to_string(),
    ))))
    .unwrap();
    let basic = Client::new(&endpoint(Auth::Basic {
        username: "user".to_string(),
        password: Secret::new("password".to_string()),
    }))
    .unwrap();
    for client in [&bearer, &basic] {
        assert!(
            runtime
                .block_on(client.query("up", 1_700_000_000_000))
                .is_ok()
        );
    }
    let anonymous = Client::new(&endpoint(Auth::None)).unwrap();
    let refused = runtime
        .block_on(anonymous.query("up", 1_700_000_000_000))
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "Prometheus error (unauthorized): who are you"
    );

    // Two 503s, then success: retried. A bad query: not retried.
    failures_left.store(2, Ordering::SeqCst);
    let before = requests.load(Ordering::SeqCst);
    assert!(
        runtime
            .block_on(bearer.query("up", 1_700_000_000_000))
            .is_ok()
    );
    assert_eq!(requests.load(Ordering::SeqCst) - before, 3);
    let before = requests.load(Ordering::SeqCst);
    let error = runtime
        .block_on(bearer.query("bad", 1_700_000_000_000))
        .unwrap_err();
    assert_eq!(
        error,
        ApiError::Api {
            error_type: "bad_data".to_string(),
            error: "parse error".to_string()
        }
    );
    assert_eq!(
        requests.load(Ordering::SeqCst) - before,
        1,
        "a 4xx is not retried"
    );
    // Four 503s exhaust three retries.
    failures_left.store(4, Ordering::SeqCst);
    let error = runtime
        .block_on(bearer.query("up", 1_700_000_000_000))
        .unwrap_err();
    assert_eq!(error, ApiError::Http { status: 503 });
    failures_left.store(0, Ordering::SeqCst);

    // 14,401 points at a 1s step: split into requests of at most 11,000, joined per series.
    let before = requests.load(Ordering::SeqCst);
    let series = runtime
        .block_on(bearer.query_range(
            "up",
            1_700_000_000_000,
            1_700_014_400_000,
            Duration::from_secs(1),
        ))
        .unwrap();
    assert_eq!(requests.load(Ordering::SeqCst) - before, 2);
    assert_eq!(series.len(), 1);
    let times: Vec<i64> = series[0].samples.iter().map(|(at, _)| *at).collect();
    assert_eq!(times.len(), 14_401);
    assert!(
        times.windows(2).all(|pair| pair[1] - pair[0] == 1000),
        "no gaps or duplicates at the seam"
    );

    // Secrets never show in errors, even when the server is gone.
    drop(stub);
    let error = runtime
        .block_on(bearer.query("up", 1_700_000_000_000))
        .unwrap_err()
        .to_string();
    assert!(
        !error.contains("t0ken") && !error.contains("team-a"),
        "{error}"
    );
    assert!(!format!("{bearer:?}").contains("t0ken"));
}

/// `serve` asks each Prometheus for its version and follows its window arithmetic, shown in
/// `/api/v1/status` (2.42: closed windows; 3.16: left-open); `prometheus.semantics` pins it
/// whatever the server says.
#[test]
fn serve_detects_the_prometheus_version_and_its_semantics() {
    let data = "# TYPE x counter\nx_total 1 1700000000\nx_total 2 1700000030\n# EOF\n";
    for (version, expected) in [
        (crate::prom::Version::V2_42, "prometheus-2"),
        (crate::prom::Version::V3_16, "prometheus-3"),
    ] {
        let prom = Prometheus::start_version(version, data);
        for pin in [None, Some("2.51")] {
            let setup = Setup::new(&prom.url(), "");
            if let Some(pin) = pin {
                let config = std::fs::read_to_string(setup.config()).expect("read config");
                let pinned = config.replacen(
                    &format!("  url: {}\n", prom.url()),
                    &format!("  url: {}\n  semantics: \"{pin}\"\n", prom.url()),
                    1,
                );
                assert_ne!(pinned, config);
                std::fs::write(setup.config(), pinned).expect("write config");
            }
            let serve = setup.serve();
            let source = serve.wait_for("the source's version in /api/v1/status", || {
                let status = serve.json("/api/v1/status");
                status["source"]["version"]
                    .is_string()
                    .then(|| status["source"].clone())
            });
            // Debian's says `2.42.0+ds`.
            assert!(
                source["version"]
                    .as_str()
                    .is_some_and(|found| found.starts_with(version.number())),
                "{source}"
            );
            match pin {
                None => {
                    assert_eq!(source["semantics"], expected, "{source}");
                    assert_eq!(source["basis"], "detected", "{source}");
                }
                Some(_) => {
                    assert_eq!(source["semantics"], "prometheus-2.51", "{source}");
                    assert_eq!(source["basis"], "pinned", "{source}");
                }
            }
            assert!(
                source["reason"]
                    .as_str()
                    .is_some_and(|reason| reason.contains(version.number())),
                "{source}"
            );
            // The status page says it too, once a cycle has taken it in.
            let shown = format!(
                "windows as {} ({})",
                source["semantics"].as_str().unwrap(),
                source["basis"].as_str().unwrap()
            );
            serve.wait_for("the source's version on the status page", || {
                let (code, page) = serve.get("/");
                (code == 200 && page.contains(&shown) && page.contains(version.number()))
                    .then_some(())
            });
        }
    }
}

/// Regression: the Prometheus client followed redirects to any host and sent the configured
/// headers (a tenant id, an API key) there, whose answers then drove alerts. A 3xx is an
/// error naming where it pointed (scheme, host and port only), and the other host hears
/// nothing.
#[test]
fn prometheus_redirects_are_refused_and_name_their_target() {
    let elsewhere_hits = Arc::new(AtomicUsize::new(0));
    let elsewhere = HttpStub::start({
        let hits = elsewhere_hits.clone();
        move |_, _, _| {
            hits.fetch_add(1, Ordering::SeqCst);
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            )
        }
    });
    let location = format!("{}/api/v1/query?token=s3cr3t", elsewhere.url());
    let redirecting = HttpStub::start(move |_, _, _| {
        Reply::new(302, "text/plain", "moved\n").with_header("Location", &location)
    });
    burnwatch::source::prometheus::install_crypto_provider();
    let mut endpoint = burnwatch::source::prometheus::Endpoint::new(redirecting.url());
    endpoint.headers = vec![("X-Scope-OrgID".to_string(), "team-a".to_string())];
    let client = burnwatch::source::prometheus::Client::new(&endpoint).expect("client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(client.query("up", now_ms()))
        .expect_err("a redirect is an error");
    let message = error.to_string();
    assert!(
        message.contains("HTTP 302")
            && message.contains(&format!("redirect to {}", elsewhere.url()))
            && !message.contains("s3cr3t"),
        "{message}"
    );
    assert_eq!(error.reason(), "redirect");
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "the other host was asked"
    );
}

/// Regression: two daemons on one SQLite state dir both ran when started apart (every page
/// twice), and the second died in a migration race when started together. The second is
/// refused at start, naming the state dir, and the first goes on serving.
#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let prometheus = empty_prometheus();
    let setup = Setup::new(&prometheus.url(), "");
    let first = setup.serve();
    first.wait_ready();
    let mut second = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(setup.config())
        .arg("--state-dir")
        .arg(setup.state())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a second burnwatch serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second daemon on the same state dir kept running");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("is in use by another burnwatch")
            && stderr.contains(&setup.state().display().to_string()),
        "{stderr}"
    );
    let healthy = first.http().get(first.url("/-/healthy")).send().unwrap();
    assert_eq!(healthy.status(), 200, "{}", first.diagnostics());
}

/// Regression (hardening): one 5 KB silence of 200 `\w{200}` matchers aborted the daemon on a
/// failed allocation (each such regex compiles to about 11 MB), and silences were unbounded
/// (100,000 accepted; each GET built all of them into one answer). Matchers per silence and
/// each regex's compiled size are bounded, with a 400 saying why; active API silences are
/// capped by `web.max_silences`; the list comes in pages with a cursor; one silence is found
/// by id; `/metrics` counts them.
#[test]
fn silences_are_bounded_paged_and_counted() {
    let prometheus = empty_prometheus();
    let setup = Setup::new(
        &prometheus.url(),
        "web:\n  max_silences: 5\nnotify:\n  silences:\n    - matchers: [service=\"batch\"]\n      \
         ends_at: 2999-01-01T00:00:00Z\n",
    );
    let serve = setup.serve();
    serve.wait_ready();
    let ends = burnwatch::replay::format_time(now_ms() + 3_600_000);
    let post = |matchers: Vec<String>| {
        let body = serde_json::json!({"matchers": matchers, "endsAt": ends}).to_string();
        serve.request(
            serve
                .http()
                .post(serve.url("/api/v1/silences"))
                .header("Content-Type", "application/json")
                .body(body),
            "POST /api/v1/silences",
        )
    };

    let hostile: Vec<String> = (0..200).map(|_| r"route=~\w{200}".to_string()).collect();
    let (status, body) = post(hostile);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 32 matchers"), "{body}");
    let (status, body) = post(vec![r"route=~\w{200}".to_string()]);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("matchers[0]") && body.contains("256 KiB"),
        "{body}"
    );
    serve
        .http()
        .get(serve.url("/-/healthy"))
        .send()
        .expect("still serving");

    let mut ids = Vec::new();
    for index in 0..5 {
        let (status, body) = post(vec![format!("route=~\"/r{index}/[a-z]+\"")]);
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        ids.push(answer["silenceID"].as_str().unwrap().to_string());
    }
    let (status, body) = post(vec!["route=\"/r6\"".to_string()]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("web.max_silences"), "{body}");

    // Pages: the config's silence and two API ones, then two, then the last.
    let mut listed = Vec::new();
    let mut path = "/api/v1/silences?limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = serve.json(&path);
        pages += 1;
        for silence in page["silences"].as_array().unwrap() {
            listed.push(silence["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/silences?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3, "{listed:?}");
    assert_eq!(listed.len(), 6, "{listed:?}");
    let api: Vec<String> = listed.iter().skip(1).cloned().collect();
    let mut sorted = api.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every API silence once");
    let (status, body) = serve.get("/api/v1/silences?limit=0");
    assert_eq!(status, 400, "{body}");

    let one = serve.json(&format!("/api/v1/silences/{}", ids[2]));
    assert_eq!(
        one["matchers"],
        serde_json::json!(["route=~\"/r2/[a-z]+\""])
    );
    let (status, _) = serve.get("/api/v1/silences/0000000000000000");
    assert_eq!(status, 404);

    let metrics = serve.get("/metrics").1;
    assert_eq!(silences_metric(&metrics, "api"), Some(5.0), "{metrics}");
    assert_eq!(silences_metric(&metrics, "config"), Some(1.0));

    // Expiring one makes room for another.
    let (status, body) = serve.request(
        serve
            .http()
            .delete(serve.url(&format!("/api/v1/silences/{}", ids[0]))),
        "DELETE",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(vec!["route=\"/r6\"".to_string()]);
    assert_eq!(status, 200, "{body}");
    let metrics = serve.get("/metrics").1;
    assert_eq!(silences_metric(&metrics, "api"), Some(5.0));
}

fn silences_metric(text: &str, source: &str) -> Option<f64> {
    parse_metrics(text)
        .into_iter()
        .find(|(name, labels, _)| {
            name == "burnwatch_silences" && labels.get("source").map(String::as_str) == Some(source)
        })
        .map(|(_, _, value)| value)
}

/// Regression (hardening): the HTTP face had no header-read or idle timeout and no
/// connection cap: 3,000 slow-header sockets stayed open, and 20,100 idle ones took every
/// file descriptor, so `/-/healthy`, `/` and `/metrics` stopped answering. With
/// `web.max_connections: 40` and `web.read_header_timeout: 2s`, 300 idle and slow-header
/// connections hold at most 40 descriptors, each is closed by the server once its headers
/// are late (or its slot is wanted), and `/-/healthy` answers at once.
#[test]
fn idle_and_slow_header_connections_are_capped_and_timed_out() {
    let prometheus = empty_prometheus();
    let setup = Setup::new(
        &prometheus.url(),
        "web:\n  max_connections: 40\n  read_header_timeout: 2s\n",
    );
    let serve = setup.serve();
    serve.wait_ready();
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{}/fd", serve.pid()))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    let before = descriptors();
    let address = serve.url("").trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for index in 0..300 {
        let mut stream = TcpStream::connect(&address).expect("connect");
        if index % 2 == 0 {
            // Slow headers: a request line, and then nothing.
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        held.push(stream);
    }
    thread::sleep(Duration::from_millis(500));
    let during = descriptors();
    assert!(
        during <= before + 40 + 5,
        "{during} descriptors open with 300 idle connections (from {before}; the cap is 40)"
    );
    // A health check gets through at once: at the cap, a new caller takes the slot of the
    // oldest connection that serves no request (before, it waited in the accept queue
    // behind every held socket).
    let started = Instant::now();
    let healthy = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(serve.url("/-/healthy"))
        .send()
        .expect("healthy answers while idle connections are held");
    assert_eq!(healthy.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/-/healthy took {:?} behind 300 held sockets",
        started.elapsed()
    );
    // The server closed the first connections it took (their headers were late): a read
    // ends (EOF, or a reset) instead of blocking.
    let first = &mut held[0];
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buffer = [0u8; 256];
    match first.read(&mut buffer) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(error) => panic!("the server kept a connection without headers open: {error}"),
    }
    drop(held);
}

/// Regression (hardening): one slow SLO delayed every SLO: the cycle waited up to an interval
/// and a second for every normal fetch, so an SLO whose queries took most of an interval made
/// the cycle run past the next tick, skipped for all groups (here an SLO whose queries hang
/// past the interval: every other tick was skipped). Each group is now on its own: no tick is
/// skipped, the fast SLO is evaluated every cycle, and an SLO whose queries take 0.9 s of the
/// 1 s interval every cycle too, a little late.
#[test]
fn a_slow_slo_delays_no_other_and_is_evaluated_late_not_missed() {
    const SLOW: &str = "order-service-slow";
    const FAST: &str = "order-service-fast";
    let prometheus = HttpStub::start(move |_, target, body| {
        let request = format!("{target}{body}");
        if request.contains("slow_requests_total") {
            sleep(Duration::from_millis(900));
        }
        if request.contains("stuck_requests_total") {
            sleep(Duration::from_secs(5));
        }
        Reply::json(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        )
    });
    let setup = Setup::new(&prometheus.url(), "");
    let base = spec("Requests that do not fail.", "99.9");
    let (head, body) = base.split_once("slos:\n").expect("slos");
    setup.write_spec(&format!(
        "{head}slos:\n{}{}{}",
        body.replace("requests-availability", "fast"),
        body.replace("requests-availability", "slow")
            .replace("http_requests_total", "slow_requests_total"),
        body.replace("requests-availability", "stuck")
            .replace("http_requests_total", "stuck_requests_total")
    ));
    std::fs::write(
        setup.config(),
        format!(
            "prometheus:\n  url: {}\n  max_concurrency: 64\nevaluation_interval: 1s\n\
             stale_after: 1h\nstrategy: query\nrules:\n  - slos.yaml\n",
            prometheus.url()
        ),
    )
    .expect("write config");
    let serve = setup.serve();
    let last_success = |slos: &Value, id: &str| {
        slos["slos"]
            .as_array()
            .and_then(|all| all.iter().find(|slo| slo["id"] == id))
            .map_or(Value::Null, |slo| slo["last_success"].clone())
    };
    let (mut slow, mut fast) = (Vec::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let slos = serve.slos();
        for (id, seen) in [(SLOW, &mut slow), (FAST, &mut fast)] {
            let at = last_success(&slos, id);
            if !at.is_null() && !seen.contains(&at) {
                seen.push(at);
            }
        }
        sleep(Duration::from_millis(100));
    }
    let (_, metrics) = serve.get("/metrics");
    let missed_ticks = metric_value(&metrics, "burnwatch_evaluations_missed_total");
    assert_eq!(missed_ticks, Some(0.0), "ticks skipped\n{metrics}");
    assert!(
        fast.len() >= 10,
        "the fast SLO evaluated {} times",
        fast.len()
    );
    assert!(
        slow.len() >= 9,
        "the slow SLO evaluated {} times",
        slow.len()
    );
    serve.assert_running();
}
