//! A client for the Prometheus HTTP API (and what speaks it: Thanos, Mimir, Cortex,
//! VictoriaMetrics): `/api/v1/query`, `/api/v1/query_range`, `/api/v1/status/buildinfo`.
//!
//! - The base URL may carry a path prefix (Mimir's `/prometheus`); extra headers
//!   (`X-Scope-OrgID`), basic auth or a bearer token read from a file, a custom CA.
//! - Values arrive as strings, `NaN` and `±Inf` included. Errors carry Prometheus's `errorType`.
//!   A malformed or hostile answer is an [`ApiError::Malformed`], never a panic.
//! - 5xx answers, timeouts and refused connections are retried with exponential backoff;
//!   4xx (a bad query) is not.
//! - Secrets never reach logs or errors: credentials are sent as headers, never in the URL,
//!   and error texts are built here without URLs or bodies that could echo them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use serde::Deserialize;
use serde_json::Value;

use crate::slo::Millis;
use crate::source::version::{self, BuildInfo, SourceVersion};
use crate::window::Semantics;

/// Prometheus refuses range queries of more than 11,000 points per series.
pub const MAX_STEPS_PER_QUERY: i64 = 11_000;

/// A secret value that prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to authenticate to Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: Secret,
    },
    Bearer(Secret),
}

/// Everything needed to reach one Prometheus-compatible API. Its `Debug` names the headers
/// but not their values (an API key or a tenant id may be one).
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    /// Base URL, path prefix included: `http://mimir:8080/prometheus`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub auth: Auth,
    /// PEM file of a CA to trust in addition to the system's.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Attempts after the first for retryable failures.
    pub retries: usize,
    /// Requests in flight at most; more wait their turn (see [`QueryLoad`]).
    pub max_concurrency: usize,
    /// Window arithmetic to follow whatever the server reports; `None`: detected.
    pub semantics: Option<Semantics>,
    /// The largest answer read, in bytes; a larger one is an error naming its query.
    pub max_answer_bytes: usize,
}

/// The default of `prometheus.max_answer_size`: at 10,000 SLO instances the largest answers
/// (a warm start's 12-hour slice of 5-minute increments) are about 45 MB.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 << 20;

/// An answer at least this large (read whole, or refused past the cap) leaves freed memory
/// worth handing back to the system once the cycle is over ([`take_large_answers`]).
const LARGE_ANSWER_BYTES: usize = 8 << 20;

/// Whether an answer of [`LARGE_ANSWER_BYTES`] or more was read since the last call.
static LARGE_ANSWERS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a large answer was read (or refused) since the last call; the daemon then trims
/// the heap after its cycle, so the resident size does not stay at the answer's high-water
/// mark.
pub fn take_large_answers() -> bool {
    LARGE_ANSWERS.swap(false, std::sync::atomic::Ordering::Relaxed)
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: <redacted>"))
            .collect();
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("headers", &headers)
            .field("auth", &self.auth)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("max_concurrency", &self.max_concurrency)
            .field("semantics", &self.semantics)
            .finish()
    }
}

/// Requests in flight at once by default: a cycle of hundreds of SLOs × windows queues rather
/// than opening thousands of connections (Prometheus itself runs 20 queries at a time).
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

/// How busy the client is, as the daemon's `/metrics` shows it: requests waiting for a turn,
/// in flight, and the seconds spent waiting. Shared handles; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct QueryLoad {
    pub waiting: Gauge,
    pub in_flight: Gauge,
    pub wait_seconds: Counter<f64>,
}

impl Endpoint {
    pub fn new(url: impl Into<String>) -> Endpoint {
        Endpoint {
            url: url.into(),
            headers: Vec::new(),
            auth: Auth::None,
            ca_file: None,
            timeout: Duration::from_secs(30),
            retries: 3,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            semantics: None,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The client could not be built (bad URL, CA file, header).
    Config(String),
    /// No connection (refused, DNS, TLS handshake).
    Connect(String),
    Timeout,
    /// A non-2xx answer without a Prometheus error body.
    Http {
        status: u16,
    },
    /// A 3xx: redirects are not followed, so the headers and credentials meant for Prometheus
    /// (a tenant id, an API key) never reach another host, nor its answers drive alerts.
    /// `to`: the target's scheme, host and port (never its path or query).
    Redirect {
        status: u16,
        to: String,
    },
    /// Prometheus said `"status": "error"`.
    Api {
        error_type: String,
        error: String,
    },
    /// The answer is not what the API promises.
    Malformed(String),
    /// The answer was larger than `limit` bytes (`prometheus.max_answer_size`); `query` is
    /// the PromQL asked (cut short), or the API path.
    TooLarge {
        limit: usize,
        query: String,
    },
}

impl ApiError {
    /// Whether trying again may help: server-side trouble, not a bad query.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Connect(_) | ApiError::Timeout => true,
            ApiError::Http { status } => *status >= 500 || *status == 429,
            ApiError::Api { error_type, .. } => {
                matches!(error_type.as_str(), "timeout" | "internal" | "unavailable")
            }
            ApiError::Config(_)
            | ApiError::Malformed(_)
            | ApiError::Redirect { .. }
            | ApiError::TooLarge { .. } => false,
        }
    }

    /// A short, bounded reason for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Config(_) => "config",
            ApiError::Connect(_) => "connect",
            ApiError::Timeout => "timeout",
            ApiError::Http { .. } => "http",
            ApiError::Redirect { .. } => "redirect",
            ApiError::Api { .. } => "api",
            ApiError::Malformed(_) => "malformed",
            ApiError::TooLarge { .. } => "too_large",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Config(message) => write!(f, "Prometheus client configuration: {message}"),
            ApiError::Connect(message) => write!(f, "cannot reach Prometheus: {message}"),
            ApiError::Timeout => write!(f, "Prometheus did not answer in time"),
            ApiError::Http { status } => write!(f, "Prometheus answered HTTP {status}"),
            ApiError::Redirect { status, to } => write!(
                f,
                "Prometheus answered HTTP {status}, a redirect to {to}; burnwatch follows no \
                 redirects (its headers and credentials go to prometheus.url only): set \
                 prometheus.url to where it points"
            ),
            ApiError::Api { error_type, error } => {
                write!(f, "Prometheus error ({error_type}): {error}")
            }
            ApiError::Malformed(message) => {
                write!(f, "malformed answer from Prometheus: {message}")
            }
            ApiError::TooLarge { limit, query } => write!(
                f,
                "Prometheus's answer to {query} is larger than prometheus.max_answer_size ({} MiB); \
                 narrow the SLO's selector (or its group_by), or raise the limit",
                limit >> 20
            ),
        }
    }
}

impl std::error::Error for ApiError {}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub at: Millis,
    pub value: f64,
}

/// One series of a range vector (a matrix): raw samples, or a range query's points.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(Millis, f64)>,
}

/// An instant query's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
    Scalar(f64),
}

/// An answer and what it cost Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    pub answer: Answer,
    /// `stats.samples.totalQueryableSamples`, when Prometheus reports it.
    pub samples_touched: Option<u64>,
    pub warnings: Vec<String>,
}

/// A client for one endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    retries: usize,
    max_answer_bytes: usize,
    /// One permit per request in flight.
    turns: Arc<tokio::sync::Semaphore>,
    load: QueryLoad,
    pinned: Option<Semantics>,
    /// What the server's version is known to be, shared by clones ([`Client::detect`]).
    version: Arc<std::sync::Mutex<Known>>,
}

/// The server's version as known, and when it was last asked for.
#[derive(Debug)]
struct Known {
    version: SourceVersion,
    asked: Option<Instant>,
}

/// How long a server whose version could not be read is left before it is asked again by
/// [`Client::know_version`].
pub const VERSION_RETRY: Duration = Duration::from_secs(15);

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Installs the one TLS crypto provider (ring) for the process; safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    pub fn new(endpoint: &Endpoint) -> Result<Client, ApiError> {
        install_crypto_provider();
        let base = endpoint.url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base)
            .map_err(|error| ApiError::Config(format!("invalid URL: {error}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ApiError::Config(
                "credentials in the URL are not accepted; use basic_auth or bearer_token_file"
                    .to_string(),
            ));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ApiError::Config(format!(
                "unsupported scheme {:?}",
                url.scheme()
            )));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &endpoint.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ApiError::Config(format!("invalid header name {name:?}")))?;
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| ApiError::Config(format!("invalid value for header {name}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.timeout.min(Duration::from_secs(10)))
            .no_proxy();
        if let Some(ca_file) = &endpoint.ca_file {
            let pem = std::fs::read(ca_file).map_err(|error| {
                ApiError::Config(format!(
                    "cannot read CA file {}: {error}",
                    ca_file.display()
                ))
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|_| {
                ApiError::Config(format!("{} is not a PEM certificate", ca_file.display()))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder
            .build()
            .map_err(|error| ApiError::Config(error.without_url().to_string()))?;
        Ok(Client {
            http,
            base,
            auth: endpoint.auth.clone(),
            retries: endpoint.retries,
            turns: Arc::new(tokio::sync::Semaphore::new(endpoint.max_concurrency.max(1))),
            max_answer_bytes: endpoint.max_answer_bytes,
            load: QueryLoad::default(),
            pinned: endpoint.semantics,
            version: Arc::new(std::sync::Mutex::new(Known {
                version: SourceVersion::unknown(endpoint.semantics),
                asked: None,
            })),
        })
    }

    /// This client, sharing what `old` learnt of the server's version when both talk to the
    /// same server under the same pin (a reload that changed neither keeps the detection).
    pub fn with_version_of(mut self, old: &Client) -> Client {
        if self.base == old.base && self.pinned == old.pinned {
            self.version = old.version.clone();
        }
        self
    }

    /// This client, reporting its load to `load`.
    pub fn with_load(mut self, load: QueryLoad) -> Client {
        self.load = load;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// An instant query at `at`, with the samples it touched.
    pub async fn query(&self, expr: &str, at: Millis) -> Result<Evaluated, ApiError> {
        let time = seconds(at);
        let params = [("query", expr), ("time", time.as_str()), ("stats", "all")];
        let body = self.get("/api/v1/query", &params).await?;
        parse_answer(&body)
    }

    /// A range query, split into requests of at most [`MAX_STEPS_PER_QUERY`] points; the
    /// pieces are joined per series.
    pub async fn query_range(
        &self,
        expr: &str,
        start: Millis,
        end: Millis,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, ApiError> {
        let step_ms = (step.as_millis() as i64).max(1);
        let mut joined: Vec<RangeSeries> = Vec::new();
        let mut from = start;
        while from <= end {
            let to = end.min(from + step_ms * (MAX_STEPS_PER_QUERY - 1));
            let (from_text, to_text, step_text) = (seconds(from), seconds(to), seconds(step_ms));
            let params = [
                ("query", expr),
                ("start", from_text.as_str()),
                ("end", to_text.as_str()),
                ("step", step_text.as_str()),
            ];
            let body = self.get("/api/v1/query_range", &params).await?;
            let Answer::Matrix(series) = parse_answer(&body)?.answer else {
                return Err(ApiError::Malformed(
                    "query_range did not return a matrix".to_string(),
                ));
            };
            for piece in series {
                match joined
                    .iter_mut()
                    .find(|existing| existing.labels == piece.labels)
                {
                    Some(existing) => existing.samples.extend(piece.samples),
                    None => joined.push(piece),
                }
            }
            from = to + step_ms;
        }
        Ok(joined)
    }

    pub async fn build_info(&self) -> Result<BuildInfo, ApiError> {
        let body = self.get("/api/v1/status/buildinfo", &[]).await?;
        let (data, _) = parse_body(200, &body)?;
        let version = data
            .get("version")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::Malformed("buildinfo has no version".to_string()))?;
        Ok(BuildInfo {
            version: bounded(version),
            application: data.get("application").and_then(Value::as_str).map(bounded),
        })
    }

    /// Asks the server for its version and sets the window arithmetic this client's windows
    /// follow ([`Client::semantics`]) from it; on failure what was known stays.
    pub async fn detect(&self) -> Result<SourceVersion, ApiError> {
        self.known().asked = Some(Instant::now());
        let build = self.build_info().await?;
        let features = match Semantics::of_version(&build.version) {
            Ok(_) if build.application.is_none() => None,
            _ => Some(self.get("/api/v1/features", &[]).await.is_ok()),
        };
        let judged = version::judge(self.pinned, &build, features);
        self.known().version = judged.clone();
        Ok(judged)
    }

    /// Makes sure the server's version is known before windows are computed from its
    /// samples: asks unless pinned, known, or asked less than 15 s ago; a failure is
    /// logged and leaves current Prometheus assumed.
    pub async fn know_version(&self) {
        let due = {
            let known = self.known();
            known.version.basis != version::Basis::Pinned
                && known.version.version.is_none()
                && known.asked.is_none_or(|at| VERSION_RETRY <= at.elapsed())
        };
        if !due {
            return;
        }
        match self.detect().await {
            Ok(found) => tracing::info!(
                semantics = %found.semantics,
                reason = %found.reason,
                "Prometheus found"
            ),
            Err(error) => tracing::warn!(
                %error,
                semantics = %self.semantics(),
                "Prometheus build info unavailable; windows follow the semantics known so far"
            ),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.version.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The window arithmetic of this source: pinned, detected, or assumed current.
    pub fn semantics(&self) -> Semantics {
        self.known().version.semantics
    }

    /// What is known of the server's version.
    pub fn source_version(&self) -> SourceVersion {
        self.known().version.clone()
    }

    /// GET with retries; returns the body of a 2xx answer (parsed by the caller, so that
    /// large answers are read straight into their final shape).
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<bytes::Bytes, ApiError> {
        let mut attempt = 0;
        let mut delay = Duration::from_millis(200);
        loop {
            let result = {
                let _turn = self.turn().await;
                self.get_once(path, params).await
            };
            match result {
                Ok(data) => return Ok(data),
                Err(error) if error.is_retryable() && attempt < self.retries => {
                    attempt += 1;
                    tracing::debug!(path, attempt, %error, "retrying Prometheus request");
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Waits for a turn to send a request; the turn ends when the guard drops.
    async fn turn(&self) -> InFlight {
        let started = Instant::now();
        // A guard, so that a request given up while waiting (the cycle's timeout) stops
        // counting as waiting.
        let waiting = Waiting::new(&self.load.waiting);
        let permit = self.turns.clone().acquire_owned().await;
        drop(waiting);
        self.load
            .wait_seconds
            .inc_by(started.elapsed().as_secs_f64());
        self.load.in_flight.inc();
        InFlight {
            _permit: permit.ok(),
            in_flight: self.load.in_flight.clone(),
        }
    }

    async fn get_once(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<bytes::Bytes, ApiError> {
        let mut request = self.http.get(format!("{}{path}", self.base)).query(params);
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ApiError::Redirect {
                status: status.as_u16(),
                to: redirect_target(response.headers()),
            });
        }
        let body = self.read_body(response, path, params).await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(match parse_body(status.as_u16(), &body) {
            Err(error) => error,
            Ok(_) => ApiError::Http {
                status: status.as_u16(),
            },
        })
    }
}

impl Client {
    /// Reads an answer's body, stopping at [`Endpoint::max_answer_bytes`].
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<bytes::Bytes, ApiError> {
        let limit = self.max_answer_bytes;
        let too_large = || {
            let query = params
                .iter()
                .find(|(name, _)| *name == "query")
                .map_or(path, |(_, query)| query);
            let query = match query.char_indices().nth(200) {
                Some((end, _)) => format!("{}…", &query[..end]),
                None => query.to_string(),
            };
            ApiError::TooLarge { limit, query }
        };
        let announced = response.content_length().unwrap_or(0);
        if announced > limit as u64 {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::with_capacity(announced as usize);
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > limit {
                LARGE_ANSWERS.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if body.len() >= LARGE_ANSWER_BYTES {
            LARGE_ANSWERS.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(body.freeze())
    }
}

/// A request's place in the waiting gauge while it waits for its turn.
struct Waiting(Gauge);

impl Waiting {
    fn new(gauge: &Gauge) -> Waiting {
        gauge.inc();
        Waiting(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request's turn: its permit, and its place in the in-flight gauge.
struct InFlight {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    in_flight: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// A redirect's target as `scheme://host:port`, without user, path or query (they may carry
/// secrets); `an unnamed place` when it has none that parses.
fn redirect_target(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|location| reqwest::Url::parse(location).ok())
        .and_then(|url| {
            let host = url.host_str()?;
            Some(match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            })
        })
        .map(|target| bounded(&target))
        .unwrap_or_else(|| "a path on the same host or an unreadable Location".to_string())
}

fn transport_error(error: reqwest::Error) -> ApiError {
    if error.is_timeout() {
        ApiError::Timeout
    } else if error.is_connect() {
        ApiError::Connect("connection failed".to_string())
    } else {
        // Without the URL: it names the host, and a query may carry label values.
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        ApiError::Connect(message)
    }
}

/// Up to ±20% so that many clients do not retry in lockstep.
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let factor = 0.8 + 0.4 * (nanos % 1000) as f64 / 1000.0;
    delay.mul_f64(factor)
}

fn seconds(at: Millis) -> String {
    format!("{}.{:03}", at.div_euclid(1000), at.rem_euclid(1000))
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<Value>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// The `data` and warnings of an API answer, or the error it carries. Bodies are never echoed
/// whole.
pub fn parse_body(status: u16, body: &[u8]) -> Result<(Value, Vec<String>), ApiError> {
    let envelope: Result<Envelope, _> = serde_json::from_slice(body);
    match envelope {
        Ok(envelope) if envelope.status == "success" && (200..300).contains(&status) => {
            let data = envelope
                .data
                .ok_or_else(|| ApiError::Malformed("success without data".to_string()))?;
            let warnings: Vec<String> = envelope
                .warnings
                .iter()
                .map(|warning| bounded(warning))
                .collect();
            for warning in &warnings {
                tracing::warn!(%warning, "Prometheus warning");
            }
            Ok((data, warnings))
        }
        Ok(envelope) if envelope.status == "error" => Err(ApiError::Api {
            error_type: bounded(envelope.error_type.as_deref().unwrap_or("unknown")),
            error: bounded(envelope.error.as_deref().unwrap_or("")),
        }),
        _ if !(200..300).contains(&status) => Err(ApiError::Http { status }),
        Ok(envelope) => Err(ApiError::Malformed(format!(
            "status {:?}",
            bounded(&envelope.status)
        ))),
        Err(error) => Err(ApiError::Malformed(format!(
            "not an API answer ({})",
            error.classify_name()
        ))),
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// At most 200 characters of text that came from the server.
fn bounded(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[derive(Deserialize)]
struct FastAnswer<'a, R> {
    status: &'a str,
    #[serde(borrow)]
    data: FastData<'a, R>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct FastData<'a, R> {
    #[serde(rename = "resultType")]
    result_type: &'a str,
    result: Vec<R>,
    stats: Option<FastStats>,
}

#[derive(Deserialize)]
struct FastStats {
    samples: Option<FastSamples>,
}

#[derive(Deserialize)]
struct FastSamples {
    #[serde(rename = "totalQueryableSamples")]
    total_queryable_samples: Option<u64>,
}

#[derive(Deserialize)]
struct FastSample<'a> {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(borrow)]
    value: (f64, &'a str),
}

#[derive(Deserialize)]
struct FastSeries<'a> {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(borrow, default)]
    values: Vec<(f64, &'a str)>,
}

fn fast_point((at, value): (f64, &str)) -> Option<(Millis, f64)> {
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => value.parse::<f64>().ok().filter(|v| v.is_finite())?,
    };
    (at.is_finite() && at.abs() < 1e11).then(|| ((at * 1000.0).round() as Millis, value))
}

/// The typed reading of a well-formed vector or matrix answer, straight from the bytes (no
/// intermediate JSON tree: a warm start's answer can hold millions of samples). `None` for
/// anything else, which the general parser then reads or explains.
fn parse_fast(body: &[u8]) -> Option<Evaluated> {
    let head = &body[..body.len().min(256)];
    let needle = br#""resultType":"matrix""#;
    let matrix = head.windows(needle.len()).any(|window| window == needle);
    let touched =
        |stats: Option<FastStats>| stats.and_then(|stats| stats.samples?.total_queryable_samples);
    if matrix {
        let answer: FastAnswer<FastSeries> = serde_json::from_slice(body).ok()?;
        if answer.status != "success" || answer.data.result_type != "matrix" {
            return None;
        }
        let mut series = Vec::with_capacity(answer.data.result.len());
        for item in answer.data.result {
            let samples = item
                .values
                .into_iter()
                .map(fast_point)
                .collect::<Option<Vec<_>>>()?;
            series.push(RangeSeries {
                labels: item.metric.into_iter().collect(),
                samples,
            });
        }
        Some(Evaluated {
            answer: Answer::Matrix(series),
            samples_touched: touched(answer.data.stats),
            warnings: answer.warnings,
        })
    } else {
        let answer: FastAnswer<FastSample> = serde_json::from_slice(body).ok()?;
        if answer.status != "success" || answer.data.result_type != "vector" {
            return None;
        }
        let mut samples = Vec::with_capacity(answer.data.result.len());
        for item in answer.data.result {
            let (at, value) = fast_point(item.value)?;
            samples.push(Sample {
                labels: item.metric.into_iter().collect(),
                at,
                value,
            });
        }
        Some(Evaluated {
            answer: Answer::Vector(samples),
            samples_touched: touched(answer.data.stats),
            warnings: answer.warnings,
        })
    }
}

/// A query answer: the typed fast path for well-formed vectors and matrices, the general
/// parser (with its precise error messages) for everything else.
pub fn parse_answer(body: &[u8]) -> Result<Evaluated, ApiError> {
    if let Some(evaluated) = parse_fast(body) {
        for warning in &evaluated.warnings {
            tracing::warn!(warning = %bounded(warning), "Prometheus warning");
        }
        return Ok(evaluated);
    }
    parse_evaluated(parse_body(200, body)?)
}

/// Reads `data` of a query answer: `resultType` and `result`, plus stats.
pub fn parse_evaluated((data, warnings): (Value, Vec<String>)) -> Result<Evaluated, ApiError> {
    let malformed = |what: &str| ApiError::Malformed(what.to_string());
    let result_type = data
        .get("resultType")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no resultType"))?;
    let result = data.get("result").ok_or_else(|| malformed("no result"))?;
    let answer = match result_type {
        "vector" => Answer::Vector(
            array(result, "result")?
                .iter()
                .map(|item| {
                    let (at, value) = point(
                        item.get("value")
                            .ok_or_else(|| malformed("vector item without value"))?,
                    )?;
                    Ok(Sample {
                        labels: labels(item.get("metric"))?,
                        at,
                        value,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
        ),
        "matrix" => Answer::Matrix(
            array(result, "result")?
                .iter()
                .map(|item| {
                    let values = item
                        .get("values")
                        .map_or(Ok(&[][..]), |values| array(values, "values"))?;
                    Ok(RangeSeries {
                        labels: labels(item.get("metric"))?,
                        samples: values.iter().map(point).collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
        ),
        "scalar" => Answer::Scalar(point(result)?.1),
        other => {
            return Err(ApiError::Malformed(format!(
                "unsupported resultType {:?}",
                bounded(other)
            )));
        }
    };
    let samples_touched = data
        .pointer("/stats/samples/totalQueryableSamples")
        .and_then(Value::as_u64);
    Ok(Evaluated {
        answer,
        samples_touched,
        warnings,
    })
}

fn array<'a>(value: &'a Value, what: &str) -> Result<&'a [Value], ApiError> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| ApiError::Malformed(format!("{what} is not an array")))
}

/// `[1700000000.123, "0.5"]` → (milliseconds, value); values may be `NaN`, `+Inf`, `-Inf`.
fn point(value: &Value) -> Result<(Millis, f64), ApiError> {
    let malformed = || ApiError::Malformed("a sample is not [time, \"value\"]".to_string());
    let pair = value
        .as_array()
        .filter(|pair| pair.len() == 2)
        .ok_or_else(malformed)?;
    let at = pair[0]
        .as_f64()
        .filter(|at| at.is_finite() && at.abs() < 1e11)
        .ok_or_else(malformed)?;
    let text = pair[1].as_str().ok_or_else(malformed)?;
    let value = match text {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                ApiError::Malformed(format!("{:?} is not a sample value", bounded(text)))
            })?,
    };
    Ok(((at * 1000.0).round() as Millis, value))
}

fn labels(metric: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(metric) = metric else {
        return Ok(Vec::new());
    };
    let object = metric
        .as_object()
        .ok_or_else(|| ApiError::Malformed("metric is not an object".to_string()))?;
    let mut labels = Vec::with_capacity(object.len());
    for (name, value) in object {
        let value = value.as_str().ok_or_else(|| {
            ApiError::Malformed(format!("label {:?} is not a string", bounded(name)))
        })?;
        labels.push((name.clone(), value.to_string()));
    }
    labels.sort();
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `Endpoint` derived `Debug`, printing its headers' values (an API key).
    #[test]
    fn an_endpoint_prints_header_names_and_no_secrets() {
        let mut endpoint = Endpoint::new("http://mimir:8080/prometheus");
        endpoint.headers = vec![
            ("X-Scope-OrgID".to_string(), "tenant-secret".to_string()),
            ("X-Api-Key".to_string(), "key-secret".to_string()),
        ];
        endpoint.auth = Auth::Bearer(Secret::new("token-secret".to_string()));
        let printed = format!("{endpoint:?}");
        assert!(
            printed.contains("X-Scope-OrgID: <redacted>") && printed.contains("mimir:8080"),
            "{printed}"
        );
        assert!(!printed.contains("secret"), "{printed}");
    }

    fn evaluated(body: &str) -> Result<Evaluated, ApiError> {
        parse_evaluated(parse_body(200, body.as_bytes())?)
    }

    #[test]
    fn reads_vectors_with_special_values_and_stats() {
        let answer = evaluated(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"route":"b"},"value":[1700000000.5,"NaN"]},
                {"metric":{"route":"a"},"value":[1700000000.5,"+Inf"]},
                {"metric":{},"value":[1700000000,"0.25"]}],
                "stats":{"samples":{"totalQueryableSamples":1234}}}}"#,
        )
        .unwrap();
        assert_eq!(answer.samples_touched, Some(1234));
        let Answer::Vector(samples) = answer.answer else {
            panic!("vector")
        };
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[0].at, 1_700_000_000_500);
        assert_eq!(samples[1].value, f64::INFINITY);
        assert_eq!(samples[2].value, 0.25);
    }

    #[test]
    fn the_fast_path_reads_what_the_general_parser_reads() {
        let bodies = [
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"route":"b"},"value":[1700000000.5,"NaN"]},{"metric":{},"value":[1700000000,"0.25"]}],"stats":{"samples":{"totalQueryableSamples":12}}}}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"x","a":"b \"q\""},"values":[[1700000000,"1"],[1700000030.5,"+Inf"]]}]},"warnings":["w"]}"#,
        ];
        for body in bodies {
            let fast = parse_fast(body.as_bytes()).expect("fast path reads it");
            let general = parse_evaluated(parse_body(200, body.as_bytes()).unwrap()).unwrap();
            assert_eq!(format!("{:?}", fast), format!("{:?}", general), "{body}");
            assert_eq!(
                format!("{:?}", parse_answer(body.as_bytes()).unwrap()),
                format!("{general:?}")
            );
        }
        // Anything odd goes to the general parser and its message.
        let odd = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,2]]}]}}"#;
        assert!(parse_fast(odd.as_bytes()).is_none());
        assert_eq!(
            parse_answer(odd.as_bytes()).unwrap_err().to_string(),
            "malformed answer from Prometheus: a sample is not [time, \"value\"]"
        );
    }

    #[test]
    fn errors_carry_error_type_and_are_classified() {
        let error = parse_body(
            400,
            br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Prometheus error (bad_data): parse error at char 5"
        );
        assert!(!error.is_retryable());
        let error = parse_body(
            503,
            br#"{"status":"error","errorType":"unavailable","error":"shutting down"}"#,
        )
        .unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(
            parse_body(502, b"<html>bad gateway</html>").unwrap_err(),
            ApiError::Http { status: 502 }
        );
        assert!(ApiError::Http { status: 502 }.is_retryable());
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let cases = [
            (
                "",
                "malformed answer from Prometheus: not an API answer (truncated JSON)",
            ),
            (
                "[]",
                "malformed answer from Prometheus: not an API answer (unexpected JSON shape)",
            ),
            (
                r#"{"status":"success"}"#,
                "malformed answer from Prometheus: success without data",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
                "malformed answer from Prometheus: result is not an array",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}"#,
                "malformed answer from Prometheus: a sample is not [time, \"value\"]",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
                "malformed answer from Prometheus: \"x\" is not a sample value",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":1},"value":[1,"1"]}]}}"#,
                "malformed answer from Prometheus: label \"a\" is not a string",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1e300,"1"]}]}}"#,
                "malformed answer from Prometheus: a sample is not [time, \"value\"]",
            ),
            (
                r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#,
                "malformed answer from Prometheus: unsupported resultType \"string\"",
            ),
            (
                r#"{"status":"weird","data":{}}"#,
                "malformed answer from Prometheus: status \"weird\"",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(evaluated(body).unwrap_err().to_string(), expected, "{body}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let auth = Auth::Bearer(Secret::new("s3cr3t-token".to_string()));
        assert!(!format!("{auth:?}").contains("s3cr3t"));
        let error = Client::new(&Endpoint::new("http://user:pass@127.0.0.1:9090")).unwrap_err();
        assert!(!error.to_string().contains("pass"), "{error}");
    }
}
