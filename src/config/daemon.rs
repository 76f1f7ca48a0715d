//! The daemon config (`config/burnwatch.yaml`): where Prometheus is and how to authenticate,
//! how often to evaluate, which spec files to load, where the HTTP face listens. Relative paths
//! are resolved against the config file's folder. Secrets are named by file, never inlined.
//!
//! ```yaml
//! prometheus:
//!   url: http://127.0.0.1:9090          # path prefix allowed: http://mimir:8080/prometheus
//!   headers: {X-Scope-OrgID: team-a}
//!   basic_auth: {username: burnwatch, password_file: /etc/burnwatch/password}
//!   # bearer_token_file: /etc/burnwatch/token
//!   # ca_file: /etc/burnwatch/ca.pem
//!   timeout: 30s
//!   max_concurrency: 16                 # requests in flight at most; more wait their turn
//!   # semantics: "2.42"                 # window arithmetic of this Prometheus version;
//!   #                                   # default: detected from /api/v1/status/buildinfo
//!   max_answer_size: 64MiB              # a larger answer is an error naming its query
//! evaluation_interval: 30s
//! stale_after: 5m
//! strategy: auto                        # auto | query | incremental
//! web:
//!   listen: 127.0.0.1:9099
//!   # reload_token_file: /etc/burnwatch/reload-token   # else changes only from loopback
//!   # max_connections: 512              # served at once; more wait in the accept queue
//!   # read_header_timeout: 10s          # to send a request's headers; also the idle limit
//!   # request_timeout: 60s              # one request, its body included
//!   # max_silences: 1000                # active silences added through the API
//! rules:
//!   - ../rules
//! state:                                # optional; default: SQLite under --state-dir
//!   backend: sqlite                     # sqlite | postgres (replicas sharing one database)
//!   # url_file: /etc/burnwatch/pg-url   # postgres://user:password@host:5432/db, for postgres
//!   # lease: 15s                        # postgres: the leader's lease, renewed every third
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, Problems};
use crate::slo::Origin;
use crate::window::Semantics;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    prometheus: Option<RawPrometheus>,
    evaluation_interval: Option<Spanned<String>>,
    stale_after: Option<Spanned<String>>,
    strategy: Option<Spanned<String>>,
    web: Option<RawWeb>,
    rules: Spanned<Vec<String>>,
    notify: Option<super::notify::RawNotify>,
    state: Option<RawState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    basic_auth: Option<RawBasicAuth>,
    bearer_token_file: Option<String>,
    ca_file: Option<String>,
    timeout: Option<Spanned<String>>,
    max_concurrency: Option<Spanned<u64>>,
    semantics: Option<Spanned<String>>,
    max_answer_size: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password_file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    listen: Option<Spanned<String>>,
    reload_token_file: Option<String>,
    external_url: Option<Spanned<String>>,
    max_connections: Option<Spanned<u64>>,
    read_header_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_silences: Option<Spanned<u64>>,
}

/// The HTTP face's bounds (`web.*`), so that no number of slow, idle or hostile callers can
/// take the descriptors, memory or threads that evaluation and delivery need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Connections served at once; more wait in the kernel's accept queue (Prometheus's
    /// `--web.max-connections`).
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, and stay idle between
    /// requests (Go's `ReadHeaderTimeout`, and the keep-alive idle time).
    pub read_header_timeout: Duration,
    /// How long one request may take, its body included.
    pub request_timeout: Duration,
    /// Silences added through the API and active at once (Alertmanager's
    /// `--silences.max-silences`).
    pub max_silences: usize,
}

impl Default for WebLimits {
    fn default() -> WebLimits {
        WebLimits {
            max_connections: 512,
            read_header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_silences: 1000,
        }
    }
}

/// How window values are fetched from Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Incremental where the SLI's shape allows it, query otherwise.
    Auto,
    /// One PromQL query per window, as Sloth's recording rules ask it.
    Query,
    /// Only what happened since the last cycle; windows summed locally.
    Incremental,
}

/// Where Prometheus is and how to authenticate to it.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// (username, file holding the password)
    pub basic_auth: Option<(String, PathBuf)>,
    pub bearer_token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Requests to Prometheus in flight at most.
    pub max_concurrency: usize,
    /// The window arithmetic to follow whatever the server says (`prometheus.semantics`);
    /// `None`: detected from the server's version.
    pub semantics: Option<Semantics>,
    /// The largest answer read (`prometheus.max_answer_size`), in bytes.
    pub max_answer_bytes: usize,
}

/// Where the daemon keeps its state (alert states, incidents, outbox, checkpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// The embedded SQLite database under `--state-dir` (the default; one replica).
    Sqlite,
    /// PostgreSQL, for several replicas (high availability): one leads at a time, holding a
    /// lease of `lease` that it renews every third of it. The URL, with its credentials, is
    /// read from `url_file` when needed, never logged.
    Postgres { url_file: PathBuf, lease: Duration },
}

/// The `state` section: the backend, and where in the config file it was chosen (for
/// messages that point at it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// `file:line:column` of `state.backend`; None when the default applies.
    pub backend_at: Option<Origin>,
}

/// A validated daemon config.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub prometheus: Option<PrometheusConfig>,
    pub evaluation_interval: Duration,
    pub stale_after: Duration,
    pub strategy: Strategy,
    pub listen: SocketAddr,
    pub reload_token_file: Option<PathBuf>,
    pub web: WebLimits,
    /// How people reach this burnwatch (links in Alertmanager's `generatorURL`).
    pub external_url: Option<String>,
    /// Spec files and folders, resolved against the config file's folder.
    pub rules: Vec<PathBuf>,
    pub notify: super::notify::NotifyConfig,
    pub state: StateConfig,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9099";

/// How long a leader's lease lasts unless renewed (`state.lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// `64MiB`, `100MB`, `512KiB`, `1GiB` or a number of bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit_bytes: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{other:?} is not a unit of size (B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(unit_bytes))
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| format!("{text:?} is not a size such as 64MiB"))
}

fn web_limits(problems: &mut Problems, raw: Option<&RawWeb>) -> WebLimits {
    let defaults = WebLimits::default();
    let Some(raw) = raw else { return defaults };
    let count =
        |problems: &mut Problems, value: &Option<Spanned<u64>>, path, most, default| match value {
            None => default,
            Some(value) if (1..=most).contains(&value.value) => value.value as usize,
            Some(value) => {
                problems.at(
                    value,
                    path,
                    format!("{} is not a number between 1 and {most}", value.value),
                );
                default
            }
        };
    let time = |problems: &mut Problems, value: &Option<Spanned<String>>, path, default| {
        match super::duration_at_least_1s(problems, value.as_ref(), path, default) {
            Some(time) if time <= Duration::from_secs(3600) => time,
            Some(_) => {
                if let Some(value) = value {
                    problems.at(value, path, "must be at most 1h");
                }
                default
            }
            None => default,
        }
    };
    WebLimits {
        max_connections: count(
            problems,
            &raw.max_connections,
            "web.max_connections",
            65_536,
            defaults.max_connections,
        ),
        read_header_timeout: time(
            problems,
            &raw.read_header_timeout,
            "web.read_header_timeout",
            defaults.read_header_timeout,
        ),
        request_timeout: time(
            problems,
            &raw.request_timeout,
            "web.request_timeout",
            defaults.request_timeout,
        ),
        max_silences: count(
            problems,
            &raw.max_silences,
            "web.max_silences",
            100_000,
            defaults.max_silences,
        ),
    }
}

pub fn load(file: &str, raw: File, base: &Path) -> Result<DaemonConfig, Vec<ConfigError>> {
    let mut problems = Problems::new(file);
    let duration = super::duration_at_least_1s;
    let evaluation_interval = duration(
        &mut problems,
        raw.evaluation_interval.as_ref(),
        "evaluation_interval",
        Duration::from_secs(30),
    );
    let evaluation_interval = evaluation_interval.and_then(|interval| {
        if interval <= Duration::from_secs(3600) {
            return Some(interval);
        }
        if let Some(value) = &raw.evaluation_interval {
            problems.at(
                value,
                "evaluation_interval",
                "must be at most 1h (a page would wait that long to be seen)",
            );
        }
        None
    });
    let stale_after = duration(
        &mut problems,
        raw.stale_after.as_ref(),
        "stale_after",
        Duration::from_secs(300),
    );
    let prometheus = raw.prometheus.map(|prometheus| {
        let url = prometheus.url.value.trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.at(&prometheus.url, "prometheus.url", format!("{url:?} is not an http:// or https:// URL"));
        } else if url.split("://").nth(1).is_some_and(|rest| rest.split('/').next().unwrap_or("").contains('@')) {
            problems.at(
                &prometheus.url,
                "prometheus.url",
                "credentials do not belong in the URL; use basic_auth.password_file or bearer_token_file",
            );
        }
        if prometheus.basic_auth.is_some() && prometheus.bearer_token_file.is_some() {
            problems.at(&prometheus.url, "prometheus", "set basic_auth or bearer_token_file, not both");
        }
        let timeout = duration(&mut problems, prometheus.timeout.as_ref(), "prometheus.timeout", Duration::from_secs(30));
        let max_concurrency = match &prometheus.max_concurrency {
            None => crate::source::prometheus::DEFAULT_MAX_CONCURRENCY,
            Some(limit) if (1..=1024).contains(&limit.value) => limit.value as usize,
            Some(limit) => {
                problems.at(
                    limit,
                    "prometheus.max_concurrency",
                    format!("{} is not a number of requests between 1 and 1024", limit.value),
                );
                crate::source::prometheus::DEFAULT_MAX_CONCURRENCY
            }
        };
        let semantics = prometheus.semantics.as_ref().and_then(|semantics| {
            semantics
                .value
                .parse::<Semantics>()
                .map_err(|message| problems.at(semantics, "prometheus.semantics", message))
                .ok()
        });
        let max_answer_bytes = match &prometheus.max_answer_size {
            None => crate::source::prometheus::DEFAULT_MAX_ANSWER_BYTES,
            Some(size) => match parse_size(&size.value) {
                Ok(bytes) if (1 << 20..=16 << 30).contains(&bytes) => bytes,
                Ok(_) => {
                    problems.at(size, "prometheus.max_answer_size", "must be between 1MiB and 16GiB");
                    crate::source::prometheus::DEFAULT_MAX_ANSWER_BYTES
                }
                Err(message) => {
                    problems.at(size, "prometheus.max_answer_size", message);
                    crate::source::prometheus::DEFAULT_MAX_ANSWER_BYTES
                }
            },
        };
        PrometheusConfig {
            semantics,
            max_answer_bytes,
            url,
            headers: prometheus.headers.into_iter().collect(),
            basic_auth: prometheus
                .basic_auth
                .map(|auth| (auth.username, base.join(auth.password_file))),
            bearer_token_file: prometheus.bearer_token_file.map(|path| base.join(path)),
            ca_file: prometheus.ca_file.map(|path| base.join(path)),
            timeout: timeout.unwrap_or_default(),
            max_concurrency,
        }
    });
    let strategy = match &raw.strategy {
        None => Some(Strategy::Auto),
        Some(value) => match value.value.as_str() {
            "auto" => Some(Strategy::Auto),
            "query" => Some(Strategy::Query),
            "incremental" => Some(Strategy::Incremental),
            other => {
                problems.at(
                    value,
                    "strategy",
                    format!("{other:?} is not one of auto, query, incremental"),
                );
                None
            }
        },
    };
    let external_url = raw
        .web
        .as_ref()
        .and_then(|web| web.external_url.as_ref())
        .map(|url| {
            let text = url.value.trim().trim_end_matches('/').to_string();
            if !(text.starts_with("http://") || text.starts_with("https://")) {
                problems.at(
                    url,
                    "web.external_url",
                    format!("{text:?} is not an http:// or https:// URL"),
                );
            }
            text
        });
    let notify = super::notify::load(&mut problems, raw.notify, base);
    let web = web_limits(&mut problems, raw.web.as_ref());
    let (listen, reload_token_file) = match raw.web {
        Some(web) => {
            let listen = match &web.listen {
                Some(listen) => listen
                    .value
                    .parse::<SocketAddr>()
                    .map_err(|_| {
                        problems.at(
                            listen,
                            "web.listen",
                            format!(
                                "{:?} is not an address such as 127.0.0.1:9099",
                                listen.value
                            ),
                        )
                    })
                    .ok(),
                None => DEFAULT_LISTEN.parse().ok(),
            };
            (listen, web.reload_token_file.map(|path| base.join(path)))
        }
        None => (DEFAULT_LISTEN.parse().ok(), None),
    };
    if raw.rules.value.is_empty() {
        problems.at(
            &raw.rules,
            "rules",
            "expected at least one SLO spec file or folder",
        );
    }
    let rules = raw.rules.value.iter().map(|rule| base.join(rule)).collect();
    let state = state(&mut problems, raw.state, base);
    let config = DaemonConfig {
        prometheus,
        evaluation_interval: evaluation_interval.unwrap_or_default(),
        stale_after: stale_after.unwrap_or_default(),
        strategy: strategy.unwrap_or(Strategy::Auto),
        listen: listen.unwrap_or(([127, 0, 0, 1], 9099).into()),
        reload_token_file,
        web,
        external_url,
        rules,
        notify,
        state,
    };
    problems.into_result(config)
}

fn state(problems: &mut Problems, raw: Option<RawState>, base: &Path) -> StateConfig {
    let sqlite = StateConfig {
        backend: StateBackend::Sqlite,
        backend_at: None,
    };
    let Some(raw) = raw else {
        return sqlite;
    };
    let backend_at = raw.backend.as_ref().map(|backend| problems.origin(backend));
    let lease =
        super::duration_at_least_1s(problems, raw.lease.as_ref(), "state.lease", DEFAULT_LEASE);
    let url_file = raw.url_file.as_ref().and_then(|file| {
        if file.value.trim().is_empty() {
            problems.at(
                file,
                "state.url_file",
                "expected the path of a file holding the PostgreSQL URL",
            );
            None
        } else {
            Some((file, base.join(file.value.trim())))
        }
    });
    match raw
        .backend
        .as_ref()
        .map(|backend| (backend, backend.value.trim()))
    {
        None | Some((_, "sqlite")) => {
            if let Some((file, _)) = &url_file {
                problems.at(
                    *file,
                    "state.url_file",
                    "only for `backend: postgres` (the SQLite state lives under --state-dir)",
                );
            }
            if let Some(lease) = &raw.lease {
                problems.at(
                    lease,
                    "state.lease",
                    "only for `backend: postgres` (one SQLite replica holds no lease)",
                );
            }
            StateConfig {
                backend_at,
                ..sqlite
            }
        }
        Some((backend, "postgres")) => match (url_file, lease) {
            (Some((_, url_file)), Some(lease)) => StateConfig {
                backend: StateBackend::Postgres { url_file, lease },
                backend_at,
            },
            (Some(_), None) => sqlite,
            (None, _) => {
                if raw.url_file.is_none() {
                    problems.at(
                        backend,
                    "state.url_file",
                    "`backend: postgres` needs url_file: a file holding the URL (postgres://user:password@host:5432/database)",
                    );
                }
                sqlite
            }
        },
        Some((backend, other)) => {
            problems.at(
                backend,
                "state.backend",
                if other.contains("://") {
                    // A URL (credentials and all) put here by mistake is not repeated.
                    "a URL is not a backend: give `backend: postgres` and the URL in url_file"
                        .to_string()
                } else {
                    format!("{other:?} is not one of sqlite, postgres")
                },
            );
            sqlite
        }
    }
}

/// The URL a local health check asks (`burnwatch healthcheck --config`): `/-/healthy` at the
/// config's `web.listen`, with an unspecified address (`0.0.0.0`, `[::]`) asked on the
/// loopback address of its family. Only `web.listen` is read, so a config that no longer
/// passes `check` (a reload would refuse it) does not make a running daemon look unhealthy.
pub fn health_url(file: &str, text: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Probe {
        web: Option<ProbeWeb>,
    }
    #[derive(Deserialize)]
    struct ProbeWeb {
        listen: Option<String>,
    }
    let probe: Probe = serde_saphyr::from_str(text)
        .map_err(|error| format!("{file}: not a daemon config: {error}"))?;
    let listen = probe
        .web
        .and_then(|web| web.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let mut address: SocketAddr = listen.parse().map_err(|_| {
        format!("{file}: web.listen {listen:?} is not an address such as 127.0.0.1:9099")
    })?;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("http://{address}/-/healthy"))
}

#[cfg(test)]
mod health_url_tests {
    use super::health_url;

    #[test]
    fn health_url_follows_web_listen_and_asks_loopback_for_any_address() {
        let url = |text: &str| health_url("burnwatch.yaml", text);
        assert_eq!(
            url("web:\n  listen: 0.0.0.0:9100\nrules: [rules]\n").as_deref(),
            Ok("http://127.0.0.1:9100/-/healthy")
        );
        assert_eq!(
            url("web:\n  listen: \"[::]:9101\"\n").as_deref(),
            Ok("http://[::1]:9101/-/healthy")
        );
        assert_eq!(
            url("web:\n  listen: 10.1.2.3:9102\n").as_deref(),
            Ok("http://10.1.2.3:9102/-/healthy")
        );
        assert_eq!(
            url("rules: [rules]\nprometheus: {url: http://prom:9090}\n").as_deref(),
            Ok("http://127.0.0.1:9099/-/healthy")
        );
        let error = url("web:\n  listen: everywhere\n").unwrap_err();
        assert!(error.contains("web.listen \"everywhere\""), "{error}");
    }
}
