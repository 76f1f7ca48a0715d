//! The HTTP face (axum): the status page (`/`, `/slo/{id}`, see [`crate::page`]),
//! `/-/healthy`, `/-/ready`, `POST /-/reload`, `/metrics` (OpenMetrics),
//! `/api/v1/slos`, `/api/v1/alerts`, `/api/v1/outbox` (JSON) and `/api/v1/silences` (GET, POST;
//! `DELETE /api/v1/silences/{id}` expires one).
//!
//! Changes (`/-/reload`, adding or expiring silences) are never open to whoever reaches the
//! port: with `web.reload_token_file` they want `Authorization: Bearer <token>`; without, they
//! only answer callers on the loopback interface that name this host by a loopback name
//! (`Host: 127.0.0.1:9099`, `localhost`), so that a DNS-rebound name cannot borrow the trust.
//! Whatever the authorisation, a change is refused to a web page: a request whose `Origin`
//! (or `Sec-Fetch-Site`) says it comes from another site is refused (403), a body must be
//! `application/json` (415: a page can send `text/plain` cross-origin without a CORS
//! preflight, but not JSON) and at most [`MAX_BODY`] bytes (413).
//!
//! Connections are bounded in number and time (`conn`, `web.*` limits).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::HttpBody;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

mod conn;

pub use conn::fit_connections;

use crate::config::WebLimits;
use crate::config::notify::Silence;
use crate::daemon::Shared;
use crate::notify::matcher::Matcher;
use crate::replay::{format_time, parse_time};

/// The largest request body taken (a silence is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/slo/{id}", get(slo_page))
        .route("/-/healthy", get(|| async { "burnwatch is healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/slos", get(slos))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/outbox", get(outbox))
        .route("/api/v1/silences", get(silences).post(add_silence))
        .route(
            "/api/v1/silences/{id}",
            get(one_silence).delete(expire_silence),
        )
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// An HTML page of the status page: no script may run in it (its content is escaped, and the
/// policy forbids scripts besides).
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// A page drawn on a blocking thread, or the error that stopped it.
fn drawn_page(drawn: Result<String, tokio::task::JoinError>) -> Response {
    match drawn {
        Ok(body) => html(StatusCode::OK, body),
        Err(error) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::page::html::layout("error", &crate::page::html::escape(&error.to_string())),
        ),
    }
}

/// `/`: every SLO instance at a glance. The status is copied under the lock (an `Arc`) and
/// the page drawn off the runtime's workers, so a page view never holds up an evaluation.
async fn status_page(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<crate::page::ListQuery>,
) -> Response {
    let (slos, alerts, stale, last_evaluation, source_version) = {
        let status = shared.status.read().unwrap_or_else(|e| e.into_inner());
        (
            status.slos.clone(),
            status.alerts.clone(),
            status.stale_slos.clone(),
            status.last_evaluation,
            status.source.clone(),
        )
    };
    let source = shared
        .pages
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // A follower's figures are its own evaluation: the page says so, and who leads.
    let follower_note = shared
        .ha
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|ha| ha.role == crate::daemon::Role::Follower)
        .map(|ha| {
            format!(
                "this replica follows (leader: {}): its own evaluation; the leader's notifications are the ones sent",
                ha.leader.as_deref().unwrap_or("none yet")
            )
        });
    let drawn = tokio::task::spawn_blocking(move || {
        crate::page::list(
            &crate::page::Snapshot {
                source: &source,
                slos: &slos,
                alerts: &alerts,
                stale: &stale,
                last_evaluation,
                source_version: source_version.as_ref(),
                replica: follower_note,
            },
            &query,
        )
    })
    .await;
    drawn_page(drawn)
}

#[derive(Debug, Default, serde::Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

/// `/slo/{id}`: one SLO, its instances' charts, incidents and notifications.
async fn slo_page(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<PageQuery>,
) -> Response {
    let source = shared
        .pages
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some((slo, history)) = source.slos.iter().find(|(slo, _)| slo.id == id).cloned() else {
        return html(
            StatusCode::NOT_FOUND,
            crate::page::html::layout(
                "not found",
                &format!(
                    "<p>No SLO {} is configured. <a href=\"/\">All SLOs</a></p>",
                    crate::page::html::escape(&id)
                ),
            ),
        );
    };
    let (slos, alerts, now) = {
        let status = shared.status.read().unwrap_or_else(|e| e.into_inner());
        (
            status.slos.clone(),
            status.alerts.clone(),
            status.last_evaluation.unwrap_or_else(now),
        )
    };
    // Page views queue on the store's thread behind the cycle's saves and the delivery
    // workers: at most two of their reads at a time, so many open pages cannot hold them up.
    static PAGE_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _reading = PAGE_READS.acquire().await;
    let lookup = id.clone();
    let stored = with_store(&shared, move |store| {
        Ok((store.slo_incidents(&lookup)?, store.slo_notifications(&id)?))
    })
    .await;
    let drawn = tokio::task::spawn_blocking(move || {
        let status = slos.iter().find(|status| status.id == slo.id);
        let instances = crate::page::page_order(
            &slo.id,
            status.map_or(&[][..], |status| &status.instances[..]),
            &alerts,
        );
        let pages = instances.len().div_ceil(crate::page::SLO_PAGE).max(1);
        let page = query.page.unwrap_or(1).clamp(1, pages);
        let (views, spans) = crate::page::views(&history, &instances, page);
        let (incidents, notifications, error) = match &stored {
            Ok((incidents, notifications)) => {
                (incidents.as_slice(), notifications.as_slice(), None)
            }
            Err(error) => (&[][..], &[][..], Some(error.as_str())),
        };
        crate::page::slo_page(
            &slo,
            status,
            &views,
            spans,
            page,
            now,
            incidents,
            notifications,
            error,
        )
    })
    .await;
    drawn_page(drawn)
}

/// Serves until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: WebLimits,
    shutdown: CancellationToken,
) {
    if let Ok(address) = listener.local_addr() {
        let token = shared
            .reload_token
            .read()
            .map(|token| token.is_some())
            .unwrap_or(false);
        if !address.ip().is_loopback() && !token {
            tracing::warn!(
                %address,
                "listening beyond loopback without web.reload_token_file: POST /-/reload and \
                 the silences API answer only callers on loopback (reload with SIGHUP, or set \
                 web.reload_token_file in the daemon config to allow changes with a bearer \
                 token); behind a reverse proxy on this host every caller looks like loopback, \
                 so set the token there too"
            );
        }
    }
    conn::serve(listener, router(shared), limits, shutdown).await;
}

/// Ready once every SLO was evaluated or is stale. A follower replica is ready as the leader
/// is (it evaluates every cycle and takes over at once); the line after says which leads.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let ha = shared
        .ha
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|ha| format!("{}\n", ha.describe()))
        .unwrap_or_default();
    let status = shared.status.read().unwrap_or_else(|e| e.into_inner());
    let never = status.never_evaluated.join(", ");
    let (code, text) = match (status.ready, never.is_empty()) {
        (true, true) => (StatusCode::OK, "burnwatch is ready.\n".to_string()),
        (true, false) => (
            StatusCode::OK,
            format!("burnwatch is ready; stale, never evaluated successfully: {never}\n"),
        ),
        (false, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "burnwatch is not ready: no evaluation yet.\n".to_string(),
        ),
        (false, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("burnwatch is not ready: not evaluated successfully yet: {never}\n"),
        ),
    };
    (code, format!("{text}{ha}")).into_response()
}

/// `/api/v1/status`: readiness, the last evaluation, stale SLOs, and (with PostgreSQL) which
/// replica leads, since when, at which epoch.
async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let ha = shared.ha.read().unwrap_or_else(|e| e.into_inner()).clone();
    let status = shared.status.read().unwrap_or_else(|e| e.into_inner());
    axum::Json(json!({
        "ready": status.ready,
        "never_evaluated": status.never_evaluated,
        "last_evaluation": status.last_evaluation.map(format_time),
        "stale": status.stale,
        "stale_slos": status.stale_slos,
        "ha": ha,
        "source": status.source,
    }))
    .into_response()
}

/// The credentials of an `Authorization: Bearer …` value; the scheme is case-insensitive
/// (RFC 9110), so `bearer x` and `BEARER x` are accepted too.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a caller may change things: the bearer token when one is configured, else a
/// loopback caller that names this host by a loopback name (a page on a name rebound to
/// 127.0.0.1 sends its own name as `Host`).
fn authorised(shared: &Shared, peer: SocketAddr, headers: &HeaderMap) -> Result<(), &'static str> {
    let token = shared
        .reload_token
        .read()
        .map(|token| token.clone())
        .unwrap_or(None);
    match token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_credentials)
            .is_some_and(|given| same(given.trim().as_bytes(), token.expose().as_bytes()))
            .then_some(())
            .ok_or("missing or wrong bearer token\n"),
        None if !peer.ip().is_loopback() => Err(
            "not on loopback: without web.reload_token_file only loopback callers may make changes\n",
        ),
        None if !headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(split_authority)
            .is_some_and(|(host, _)| is_loopback_name(&host)) =>
        {
            Err(
                "without web.reload_token_file, changes must address this host as 127.0.0.1, [::1] or localhost\n",
            )
        }
        None => Ok(()),
    }
}

/// `host[:port]` (IPv6 in brackets) into the lowercase host and the port, if any.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim().to_ascii_lowercase();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (format!("[{host}]"), port.map(str::to_string))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port.to_string())),
            None => (authority.clone(), None),
        }
    };
    if host.is_empty() || (host.contains(['/', '@', ':']) && !host.starts_with('[')) {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

fn is_loopback_name(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a browser says the request comes from a page of another origin. `Origin` is
/// compared with `Host` (scheme aside: a TLS proxy in front changes it); `Origin: null`
/// (sandboxed frames, files, cross-site redirects) is foreign. Requests without either header
/// (curl, scripts) are not a browser's and pass.
fn foreign_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Some((scheme, authority)) = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
    else {
        return true;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return true,
    };
    let from = split_authority(authority);
    let to = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(split_authority);
    match (from, to) {
        (Some((from_host, from_port)), Some((to_host, to_port))) => {
            from_host != to_host
                || from_port.unwrap_or(default_port) != to_port.unwrap_or(default_port)
        }
        _ => true,
    }
}

/// A refusal before the body is read: the connection closes after it, so that a client does
/// not send its next request on a connection that still holds the unread body.
fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONNECTION, "close")], message.to_string()).into_response()
}

/// The checks before any change (every method but GET and HEAD): not from another site's
/// page, authorised, a body only as JSON and bounded.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let what = format!("{} {}", request.method(), request.uri().path());
    if foreign_origin(headers) {
        tracing::warn!(request = %what, "refused a change from another site's page");
        return refuse(
            StatusCode::FORBIDDEN,
            "refused: this request comes from another site's page (Origin)\n",
        );
    }
    let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    else {
        return refuse(StatusCode::FORBIDDEN, "refused: unknown peer\n");
    };
    if let Err(why) = authorised(&shared, peer, headers) {
        tracing::warn!(%peer, request = %what, "refused an unauthorised change");
        return refuse(StatusCode::FORBIDDEN, &format!("refused: {why}"));
    }
    let content_type = headers.get(header::CONTENT_TYPE);
    let has_body = content_type.is_some() || !request.body().is_end_stream();
    let json = content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if has_body && !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a request body must be sent as Content-Type: application/json\n",
        );
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if length.is_some_and(|length| length > MAX_BODY as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a request body may have at most {MAX_BODY} bytes\n"),
        );
    }
    next.run(request).await
}

async fn reload(State(shared): State<Arc<Shared>>) -> Response {
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
    let now = now();
    let configured = shared
        .config_silences
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|silence| now < silence.ends_at)
        .count();
    let stored = with_store(&shared, move |store| store.count_silences(now)).await;
    if let Ok(metrics) = shared.metrics.lock() {
        let gauge = |source| {
            metrics
                .silences
                .get_or_create(&crate::metrics::labels(&[("source", source)]))
                .clone()
        };
        gauge("config").set(configured as i64);
        match stored {
            Ok(count) => {
                gauge("api").set(count);
            }
            Err(error) => tracing::warn!(%error, "cannot count silences"),
        }
    }
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
        "slos": *status.slos,
        "replica": replica(&shared),
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
    axum::Json(json!({ "alerts": alerts, "replica": replica(&shared) })).into_response()
}

/// Which replica answers, with PostgreSQL replicas (`null` for one SQLite replica): a
/// follower's alerts and SLOs are its own evaluation, which the leader's may differ from.
fn replica(shared: &Shared) -> serde_json::Value {
    shared
        .ha
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(
            serde_json::Value::Null,
            |ha| json!({ "name": ha.replica, "role": ha.role, "leader": ha.leader }),
        )
}

/// A 500 saying what failed (a store error: never a secret).
fn internal(error: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
}

/// Runs a store operation on the store's thread.
async fn with_store<T: Send + 'static>(
    shared: &Arc<Shared>,
    work: impl FnOnce(&mut crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, String> {
    shared
        .store
        .call(work)
        .await
        .map_err(|error| error.to_string())
}

fn now() -> crate::slo::Millis {
    crate::notify::deliver::wall_clock()
}

async fn outbox(State(shared): State<Arc<Shared>>) -> Response {
    match with_store(&shared, |store| store.outbox_rows()).await {
        Ok(rows) => axum::Json(json!({ "notifications": rows })).into_response(),
        Err(error) => internal(error),
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

/// `?limit=N&after=ID`: a page of the silences list.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SilencesQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// Silences listed per page at most, and by default.
const SILENCES_PAGE: usize = 1000;

/// The active silences: those of the config (on the first page), then the API's in the order
/// they start, at most `limit` (default and most: [`SILENCES_PAGE`]) of them after the silence
/// `after`; `next` is the cursor of the following page (`null` on the last).
async fn silences(
    State(shared): State<Arc<Shared>>,
    query: Result<axum::extract::Query<SilencesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let axum::extract::Query(query) = match query {
        Ok(query) => query,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let limit = query.limit.unwrap_or(SILENCES_PAGE);
    if !(1..=SILENCES_PAGE).contains(&limit) {
        return (
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {SILENCES_PAGE}\n"),
        )
            .into_response();
    }
    let now = now();
    let mut listed: Vec<serde_json::Value> = Vec::new();
    if query.after.is_none() {
        listed.extend(
            shared
                .config_silences
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|silence| now < silence.ends_at)
                .map(|silence| silence_json(silence, "config")),
        );
    }
    let after = query.after.clone();
    // One more than the page, to know whether another follows.
    let page = with_store(&shared, move |store| {
        store.silences_page(now, after.as_deref(), limit + 1)
    })
    .await;
    match page {
        Ok(mut stored) => {
            let next = (stored.len() > limit).then(|| {
                stored.truncate(limit);
                stored.last().map(|silence| silence.id.clone())
            });
            listed.extend(stored.iter().map(|silence| silence_json(silence, "api")));
            axum::Json(json!({ "silences": listed, "next": next.flatten() })).into_response()
        }
        Err(error) => internal(error),
    }
}

/// One active silence by id (an API silence; config silences have ids `config-N`).
async fn one_silence(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let now = now();
    let configured = shared
        .config_silences
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|silence| silence.id == id && now < silence.ends_at)
        .map(|silence| silence_json(silence, "config"));
    if let Some(found) = configured {
        return axum::Json(found).into_response();
    }
    match with_store(&shared, move |store| store.silence(&id, now)).await {
        Ok(Some(silence)) => axum::Json(silence_json(&silence, "api")).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such active silence\n").into_response(),
        Err(error) => internal(error),
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

/// The most matchers one silence takes (Alertmanager's matchers are a handful of labels).
pub const MAX_MATCHERS: usize = 32;

fn parse_silence(body: &[u8], now: crate::slo::Millis) -> Result<Silence, String> {
    let input: SilenceInput =
        serde_json::from_slice(body).map_err(|error| format!("bad silence: {error}"))?;
    if input.matchers.is_empty() {
        return Err("a silence needs at least one matcher".to_string());
    }
    if input.matchers.len() > MAX_MATCHERS {
        return Err(format!(
            "a silence takes at most {MAX_MATCHERS} matchers, this one has {}",
            input.matchers.len()
        ));
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

async fn add_silence(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let now = now();
    // Regexes compile off the runtime's workers (bounded as they are, a few take a while).
    let parsed = tokio::task::spawn_blocking(move || parse_silence(&body, now)).await;
    let silence = match parsed {
        Ok(Ok(silence)) => silence,
        Ok(Err(error)) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response();
        }
    };
    let id = silence.id.clone();
    let described = silence_json(&silence, "api");
    let most = shared
        .max_silences
        .load(std::sync::atomic::Ordering::Relaxed);
    match with_store(&shared, move |store| store.add_silence(&silence, now, most)).await {
        Ok(true) => {
            tracing::info!(silence = %described, "silence added");
            axum::Json(json!({ "silenceID": id })).into_response()
        }
        Ok(false) => (
            StatusCode::BAD_REQUEST,
            format!(
                "{most} silences are active already, the most web.max_silences allows; expire \
                 some (DELETE /api/v1/silences/ID) or raise the limit\n"
            ),
        )
            .into_response(),
        Err(error) => internal(error),
    }
}

async fn expire_silence(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let now = now();
    let result = with_store(&shared, move |store| match store.silence(&id, now)? {
        Some(mut silence) => {
            silence.ends_at = now;
            store.save_silence(&silence)?;
            Ok(true)
        }
        None => Ok(false),
    })
    .await;
    match result {
        Ok(true) => (StatusCode::OK, "silence expired\n").into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            "no such active silence (config silences end by editing the config)\n",
        )
            .into_response(),
        Err(error) => internal(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn origins_are_compared_with_the_host_a_browser_sent() {
        let host = ("host", "127.0.0.1:9099");
        // Not a browser: no Origin, no Sec-Fetch-Site.
        assert!(!foreign_origin(&headers(&[host])));
        // A page served by burnwatch itself (or through a TLS proxy keeping the Host).
        assert!(!foreign_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:9099")
        ])));
        assert!(!foreign_origin(&headers(&[
            ("host", "burnwatch.example.com"),
            ("origin", "https://Burnwatch.example.com"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!foreign_origin(&headers(&[
            ("host", "[::1]:9099"),
            ("origin", "http://[::1]:9099")
        ])));
        for (origin, why) in [
            ("http://evil.example", "another site"),
            ("http://127.0.0.1:8080", "another port"),
            ("http://127.0.0.1", "the default port is another port"),
            ("http://localhost:9099", "another name"),
            ("null", "a sandboxed frame or a file"),
            ("chrome-extension://abc", "not a web origin"),
        ] {
            assert!(
                foreign_origin(&headers(&[host, ("origin", origin)])),
                "{origin}: {why}"
            );
        }
        assert!(foreign_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:9099"
        )])));
        for site in ["cross-site", "same-site"] {
            assert!(foreign_origin(&headers(&[host, ("sec-fetch-site", site)])));
        }
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("LocalHost:9099"),
            Some(("localhost".to_string(), Some(9099)))
        );
        assert_eq!(
            split_authority("[::1]:80"),
            Some(("[::1]".to_string(), Some(80)))
        );
        assert_eq!(split_authority("[::1]"), Some(("[::1]".to_string(), None)));
        assert_eq!(split_authority("a:b"), None);
        assert_eq!(split_authority("user@host:1"), None);
        assert_eq!(split_authority(""), None);
        for name in ["localhost", "127.0.0.1", "127.1.2.3", "[::1]"] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in ["rebound.example", "10.0.0.1", "[::2]", "localhost.example"] {
            assert!(!is_loopback_name(name), "{name}");
        }
    }
}
