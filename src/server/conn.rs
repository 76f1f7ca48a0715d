//! The HTTP face's connections, bounded so that no number of slow, idle or hostile callers
//! takes what evaluation and delivery need:
//!
//! - at most `web.max_connections` are served at once (Prometheus's
//!   `--web.max-connections`). At the cap, a new caller takes the slot of the connection that
//!   has waited longest without a request in service (an idle keep-alive, a caller still
//!   sending its headers), so a flood of idle or slow sockets cannot keep a health check or a
//!   scrape out; only when every slot serves a request does the caller wait in the kernel's
//!   accept queue, holding none of the process's file descriptors;
//! - a connection has `web.read_header_timeout` to send a request's headers, counted from
//!   when it opens or finished its previous request, so a slow-header caller and an idle
//!   keep-alive connection both give their slot back (hyper's header read timeout, as Go's
//!   `ReadHeaderTimeout`);
//! - a request, its body included, has `web.request_timeout`;
//! - an `accept` that fails (out of descriptors) is retried after a pause, never fatal.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::WebLimits;

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// Descriptors kept for everything but the HTTP face: the store, Prometheus's connections,
/// the sinks', the log. `web.max_connections` is lowered to fit beside them.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft limit of open files to the hard limit (as Go's runtime does at start) and
/// returns the connections the HTTP face may hold: `wanted`, or fewer if the limit leaves no
/// room for [`RESERVED_DESCRIPTORS`] and `others` (Prometheus's connections) beside them.
pub fn fit_connections(wanted: usize, others: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed, nothing else.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let room = soft.saturating_sub(RESERVED_DESCRIPTORS + others as u64);
    let fitted = (wanted as u64).min(room).max(1) as usize;
    if fitted < wanted {
        tracing::warn!(
            wanted,
            fitted,
            open_files_limit = soft,
            "web.max_connections lowered to leave descriptors for evaluation and delivery; \
             raise the open files limit (ulimit -n) to serve more"
        );
    }
    fitted
}

/// Serves `app` on `listener` within `limits` until `shutdown`, then lets requests in flight
/// finish for up to [`DRAIN`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: WebLimits,
    shutdown: CancellationToken,
) {
    let timeout = limits.request_timeout;
    let app = app.layer(middleware::from_fn(move |request: Request, next: Next| {
        within(timeout, request, next)
    }));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(Open::default());
    let mut accept_errors = 0u64;
    let mut next_id = 0u64;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(%error, failures = accept_errors, "cannot accept an HTTP connection; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // At the cap: the longest-waiting connection without a request in service
                // gives its slot up; if every one serves a request, wait for one to end.
                open.evict_oldest_idle();
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let state = open.add(next_id);
        let open = open.clone();
        let (app, shutdown, read_header_timeout) =
            (app.clone(), shutdown.clone(), limits.read_header_timeout);
        tokio::spawn(async move {
            connection(stream, remote, app, read_header_timeout, shutdown, state).await;
            open.remove(next_id);
            drop(slot);
        });
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(all)).await;
}

/// A served connection's state, seen by the accept loop.
#[derive(Default)]
struct ConnState {
    /// A request is in service (its handler has not answered yet).
    busy: AtomicBool,
    /// Closes the connection (the accept loop needs its slot).
    evict: CancellationToken,
}

/// The connections served, in the order they were accepted.
#[derive(Default)]
struct Open(Mutex<BTreeMap<u64, Arc<ConnState>>>);

impl Open {
    fn add(&self, id: u64) -> Arc<ConnState> {
        let state = Arc::new(ConnState::default());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, state.clone());
        state
    }

    fn remove(&self, id: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Closes the oldest connection that serves no request and is not being closed already.
    fn evict_oldest_idle(&self) {
        let open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = open
            .values()
            .find(|state| !state.busy.load(Ordering::Relaxed) && !state.evict.is_cancelled())
        {
            state.evict.cancel();
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    app: Router,
    read_header_timeout: Duration,
    shutdown: CancellationToken,
    state: Arc<ConnState>,
) {
    let evict = state.evict.clone();
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        let (app, state) = (app.clone(), state.clone());
        state.busy.store(true, Ordering::Relaxed);
        async move {
            let response = app.oneshot(request).await.into_response();
            state.busy.store(false, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, %remote, "HTTP connection ended");
            }
        }
        // Its slot is wanted by a new caller, and it serves no request: closed now.
        () = evict.cancelled() => {}
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, connection).await;
        }
    }
}

/// Runs a request (its body read included) within `timeout`, or answers 503.
async fn within(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than web.request_timeout ({})\n",
                humantime::format_duration(timeout)
            ),
        )
            .into_response(),
    }
}
