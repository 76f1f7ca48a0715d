//! The HTTP face (axum): `/-/healthy`, `/-/ready`, `POST /-/reload`, `/metrics` (OpenMetrics),
//! `/api/v1/slos`, `/api/v1/alerts`, `/api/v1/outbox` (JSON) and `/api/v1/silences` (GET, POST;
//! `DELETE /api/v1/silences/{id}` expires one).
//!
//! Changes (`/-/reload`, adding or expiring silences) are never open to whoever reaches the
//! port: with `web.reload_token_file` they want `Authorization: Bearer <token>`; without, they
//! only answer callers on the loopback interface.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::notify::Silence;
use crate::daemon::Shared;
use crate::notify::matcher::Matcher;
use crate::replay::{format_time, parse_time};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/-/healthy", get(|| async { "burnwatch is healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .route("/metrics", get(metrics))
        .route("/api/v1/slos", get(slos))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/outbox", get(outbox))
        .route("/api/v1/silences", get(silences).post(add_silence))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(expire_silence),
        )
        .with_state(shared)
}

/// Serves until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let app = router(shared).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(%error, "HTTP server stopped");
    }
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status.read().unwrap_or_else(|e| e.into_inner());
    let never = status.never_evaluated.join(", ");
    match (status.ready, never.is_empty()) {
        (true, true) => (StatusCode::OK, "burnwatch is ready.\n".to_string()).into_response(),
        (true, false) => (
            StatusCode::OK,
            format!("burnwatch is ready; stale, never evaluated successfully: {never}\n"),
        )
            .into_response(),
        (false, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "burnwatch is not ready: no evaluation yet.\n".to_string(),
        )
            .into_response(),
        (false, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("burnwatch is not ready: not evaluated successfully yet: {never}\n"),
        )
            .into_response(),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a caller may change things: the bearer token when one is configured, else loopback.
fn authorised(shared: &Shared, peer: SocketAddr, headers: &HeaderMap) -> bool {
    let token = shared
        .reload_token
        .read()
        .map(|token| token.clone())
        .unwrap_or(None);
    match token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.expose().as_bytes())),
        None => peer.ip().is_loopback(),
    }
}

async fn reload(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&shared, peer, &headers) {
        tracing::warn!(%peer, "refused an unauthorised reload");
        return (
            StatusCode::FORBIDDEN,
            "reload refused: missing or wrong bearer token (or not on loopback)\n",
        )
            .into_response();
    }
    let (reply, outcome) = oneshot::channel();
    if shared.reloads.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match outcome.await {
        Ok(Ok(())) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Ok(Err(error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {error}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared
        .metrics
        .lock()
        .map(|metrics| metrics.encode())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn slos(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status.read().unwrap_or_else(|e| e.into_inner());
    axum::Json(json!({
        "last_evaluation": status.last_evaluation.map(format_time),
        "stale": status.stale,
        "stale_slos": status.stale_slos,
        "slos": status.slos,
    }))
    .into_response()
}

async fn alerts(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status.read().unwrap_or_else(|e| e.into_inner());
    let alerts: Vec<_> = status
        .alerts
        .iter()
        .map(|saved| {
            let since = match saved.alert.phase {
                crate::alert::Phase::Inactive => None,
                crate::alert::Phase::Pending { since } | crate::alert::Phase::Firing { since, .. } => Some(since),
            };
            let state = saved.alert.state();
            json!({
                "slo": saved.slo_id,
                "labels": saved.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "tier": saved.tier.as_str(),
                "state": state,
                "since": since.map(format_time),
                "announced": saved.alert.announced,
                "insufficient_data": saved.alert.insufficient,
            })
        })
        .collect();
    axum::Json(json!({ "alerts": alerts })).into_response()
}

/// Runs a store operation off the async threads.
async fn with_store<T: Send + 'static>(
    shared: &Arc<Shared>,
    work: impl FnOnce(&mut crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
        work(&mut store).map_err(|error| error.to_string())
    })
    .await
    .unwrap_or_else(|error| Err(error.to_string()))
}

fn now() -> crate::slo::Millis {
    crate::notify::deliver::wall_clock()
}

async fn outbox(State(shared): State<Arc<Shared>>) -> Response {
    match with_store(&shared, |store| store.outbox_rows()).await {
        Ok(rows) => axum::Json(json!({ "notifications": rows })).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

fn silence_json(silence: &Silence, source: &str) -> serde_json::Value {
    json!({
        "id": silence.id,
        "matchers": silence.matchers,
        "startsAt": format_time(silence.starts_at),
        "endsAt": format_time(silence.ends_at),
        "comment": silence.comment,
        "createdBy": silence.created_by,
        "source": source,
    })
}

async fn silences(State(shared): State<Arc<Shared>>) -> Response {
    let now = now();
    let mut listed: Vec<serde_json::Value> = shared
        .config_silences
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|silence| now < silence.ends_at)
        .map(|silence| silence_json(silence, "config"))
        .collect();
    match with_store(&shared, move |store| store.silences(now)).await {
        Ok(stored) => {
            listed.extend(stored.iter().map(|silence| silence_json(silence, "api")));
            axum::Json(json!({ "silences": listed })).into_response()
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// A matcher as Alertmanager's API spells it, or as text (`service="checkout"`).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum MatcherInput {
    Text(String),
    Object {
        name: String,
        value: String,
        #[serde(rename = "isRegex", default)]
        is_regex: bool,
        #[serde(rename = "isEqual", default = "yes")]
        is_equal: bool,
    },
}

fn yes() -> bool {
    true
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceInput {
    matchers: Vec<MatcherInput>,
    #[serde(rename = "startsAt")]
    starts_at: Option<String>,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(default)]
    comment: String,
    #[serde(rename = "createdBy", default)]
    created_by: String,
}

fn parse_silence(body: &[u8], now: crate::slo::Millis) -> Result<Silence, String> {
    let input: SilenceInput =
        serde_json::from_slice(body).map_err(|error| format!("bad silence: {error}"))?;
    if input.matchers.is_empty() {
        return Err("a silence needs at least one matcher".to_string());
    }
    let matchers = input
        .matchers
        .into_iter()
        .enumerate()
        .map(|(index, matcher)| {
            let text = match matcher {
                MatcherInput::Text(text) => text,
                MatcherInput::Object {
                    name,
                    value,
                    is_regex,
                    is_equal,
                } => {
                    let op = match (is_regex, is_equal) {
                        (false, true) => "=",
                        (false, false) => "!=",
                        (true, true) => "=~",
                        (true, false) => "!~",
                    };
                    format!("{name}{op}{}", serde_json::Value::String(value))
                }
            };
            Matcher::parse(&text).map_err(|error| format!("matchers[{index}]: {error}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let starts_at = match &input.starts_at {
        Some(text) => parse_time(text).map_err(|error| format!("startsAt: {error}"))?,
        None => now,
    };
    let ends_at = parse_time(&input.ends_at).map_err(|error| format!("endsAt: {error}"))?;
    if ends_at <= starts_at.max(now) {
        return Err("endsAt must be in the future and after startsAt".to_string());
    }
    Ok(Silence {
        id: format!("{:016x}", fastrand::u64(..)),
        matchers,
        starts_at,
        ends_at,
        comment: input.comment,
        created_by: input.created_by,
    })
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "missing or wrong bearer token (or not on loopback)\n",
    )
        .into_response()
}

async fn add_silence(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorised(&shared, peer, &headers) {
        return forbidden();
    }
    let silence = match parse_silence(&body, now()) {
        Ok(silence) => silence,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let id = silence.id.clone();
    let described = silence_json(&silence, "api");
    match with_store(&shared, move |store| store.save_silence(&silence)).await {
        Ok(()) => {
            tracing::info!(silence = %described, "silence added");
            axum::Json(json!({ "silenceID": id })).into_response()
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

async fn expire_silence(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if !authorised(&shared, peer, &headers) {
        return forbidden();
    }
    let now = now();
    let result = with_store(&shared, move |store| {
        let found = store
            .silences(now)?
            .into_iter()
            .find(|silence| silence.id == id);
        match found {
            Some(mut silence) => {
                silence.ends_at = now;
                store.save_silence(&silence)?;
                Ok(true)
            }
            None => Ok(false),
        }
    })
    .await;
    match result {
        Ok(true) => (StatusCode::OK, "silence expired\n").into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            "no such active silence (config silences end by editing the config)\n",
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}
