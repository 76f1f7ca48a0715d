//! The HTTP face (axum): `/-/healthy`, `/-/ready`, `POST /-/reload`, `/metrics` (OpenMetrics),
//! `/api/v1/slos` and `/api/v1/alerts` (JSON).
//!
//! `/-/reload` is never open to whoever reaches the port: with `web.reload_token_file` it wants
//! `Authorization: Bearer <token>`; without, it only answers callers on the loopback interface.

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

use crate::daemon::Shared;
use crate::replay::format_time;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/-/healthy", get(|| async { "burnwatch is healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .route("/metrics", get(metrics))
        .route("/api/v1/slos", get(slos))
        .route("/api/v1/alerts", get(alerts))
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
    if shared
        .status
        .read()
        .map(|status| status.ready)
        .unwrap_or(false)
    {
        (StatusCode::OK, "burnwatch is ready.\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "burnwatch is not ready: no complete evaluation yet.\n",
        )
            .into_response()
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn reload(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let token = shared
        .reload_token
        .read()
        .map(|token| token.clone())
        .unwrap_or(None);
    let allowed = match token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.expose().as_bytes())),
        None => peer.ip().is_loopback(),
    };
    if !allowed {
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
