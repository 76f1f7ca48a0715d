//! A local fake of the Slack Web API and of incoming webhooks, for the integration tests.
//!
//! [`FakeSlack::start`] serves `http://127.0.0.1:PORT` from plain std threads (one per
//! connection, `Connection: close`), so that the `slack-morphism` client (hyper) talks to it
//! unchanged with the base URL [`FakeSlack::api_url`]. It imitates what real Slack does
//! (<https://api.slack.com/methods>) for the methods an alerting daemon uses:
//!
//! - Web API replies are HTTP 200 `application/json; charset=utf-8` with `{"ok":true,…}` or
//!   `{"ok":false,"error":"…"}`; auth is `Authorization: Bearer <token>` (`not_authed` without
//!   it, `invalid_auth` for another token; like Slack, a `token` form/query parameter is
//!   accepted when the header is absent). A JSON body without `charset` gets Slack's
//!   `missing_charset` warning. Unknown methods answer `unknown_method`.
//! - `chat.postMessage`, `chat.update` (JSON or form bodies; `blocks`/`metadata` may be JSON
//!   strings in forms), `conversations.history`, `conversations.replies`, `conversations.list`,
//!   `auth.test`, `api.test`. `chat.*` take a channel ID, a name or `#name`; `conversations.*`
//!   only take IDs, like Slack. Replies always name the channel by ID. Message `ts` are
//!   `"<unix seconds>.<6 digits>"`, unique and strictly increasing. Threads carry
//!   `thread_ts`/`reply_count`/`latest_reply`; `metadata` is only returned by reads when
//!   `include_all_metadata=true`; `reply_broadcast` replies also show in the channel history
//!   (subtype `thread_broadcast`); edited messages carry `edited`.
//! - Incoming webhooks ([`FakeSlack::webhook_url`]): `text/html` bodies `ok`, 400 `no_text`,
//!   400 `invalid_payload`, 404 `no_service`; posts are stored under [`WEBHOOK_CHANNEL`].
//!
//! Fault knobs, settable from the test thread at any time (all `&self`):
//!
//! - [`FakeSlack::next_errors`]: the next calls answer with the given [`Fault`]s, in order;
//! - [`FakeSlack::fail_share`] / [`FakeSlack::fail_share_with`]: a deterministic pseudo-random
//!   share of calls fails before any effect, rotating through fault kinds (default
//!   [`Fault::RETRYABLE`]: 429 + `Retry-After`, 500, 503, `internal_error`, `fatal_error`);
//! - [`FakeSlack::fail_after_effect_share`]: a share of successful writes takes effect, then
//!   the connection is dropped without a reply (Slack accepted it, the client can't know);
//! - [`FakeSlack::latency`]: delay every reply (after the effect);
//! - [`FakeSlack::rate_limit_per_channel`]: 429 `ratelimited` + `Retry-After` when a channel
//!   gets more `chat.postMessage` than that per second (Slack allows about 1/s/channel);
//! - [`FakeSlack::clear_faults`]: all of them off.
//!
//! Faults apply to Web API and webhook requests alike, before authentication (as a gateway
//! would). Everything is recorded: [`FakeSlack::messages`], [`FakeSlack::calls`],
//! [`FakeSlack::snapshot`], and [`FakeSlack::wait_for`] polls them with a deadline.

// A toolkit: not every test uses every knob or field.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// `bot_id` of every message the fake stores.
pub const BOT_ID: &str = "B0FAKE";
/// `user` of every message the fake stores (the bot user).
pub const BOT_USER_ID: &str = "U0FAKEBOT";
/// The workspace (`team`) of the fake.
pub const TEAM_ID: &str = "T000";
/// `app_id` of every message the fake stores.
pub const APP_ID: &str = "A0FAKE";
/// [`FakeMessage::channel`] of messages posted through the incoming webhook.
pub const WEBHOOK_CHANNEL: &str = "#webhook";
/// The one incoming-webhook path that exists.
const WEBHOOK_PATH: &str = "/services/T000/B000/XXXX";

const JSON: &str = "application/json; charset=utf-8";
const HTML: &str = "text/html";
/// Largest request (head + body) the fake reads.
const MAX_REQUEST: usize = 8 << 20;

// ---- public types ----

/// One injected failure (see [`FakeSlack::next_errors`] and [`FakeSlack::fail_share_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: retry_after_secs` and `{"ok":false,"error":"ratelimited"}`
    /// (webhooks: `text/html` body `rate_limited`). No effect.
    RateLimited { retry_after_secs: u64 },
    /// That HTTP status with a short non-JSON (`text/html`) body, like a gateway error page.
    /// No effect.
    Status(u16),
    /// That HTTP status with a JSON body `{"ok":false,"error":"…"}`. No effect.
    StatusJson(u16),
    /// HTTP 200 `{"ok":false,"error":"<error>"}` (webhooks: the error as a `text/html` body with
    /// a 4xx/5xx status as Slack does). No effect.
    SlackError(&'static str),
    /// Close the connection without a reply and without effect.
    DropBeforeEffect,
    /// Process the request (a message is stored), then close the connection without a reply.
    DropAfterEffect,
    /// Hold the connection that long without answering, then close it; no effect.
    Hang(Duration),
}

impl Fault {
    /// The faults a Slack client should retry, which [`FakeSlack::fail_share`] rotates through.
    pub const RETRYABLE: [Fault; 5] = [
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        Fault::Status(500),
        Fault::StatusJson(503),
        Fault::SlackError("internal_error"),
        Fault::SlackError("fatal_error"),
    ];
}

/// A channel of the fake workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChannel {
    /// `C…`
    pub id: String,
    /// Without `#`.
    pub name: String,
    /// Unix seconds.
    pub created: u64,
}

/// A stored message, as the fake last left it.
#[derive(Debug, Clone)]
pub struct FakeMessage {
    /// Channel ID, or [`WEBHOOK_CHANNEL`] for webhook posts.
    pub channel: String,
    pub ts: String,
    /// The parent's `ts` for thread replies, `None` for top-level messages.
    pub thread_ts: Option<String>,
    /// Current text (`""` when posted with blocks only).
    pub text: String,
    /// Current blocks, `Value::Null` when none.
    pub blocks: Value,
    /// Current attachments, `Value::Null` when none.
    pub attachments: Value,
    /// `{event_type, event_payload}` as posted (or as last updated).
    pub metadata: Option<Value>,
    /// The text before each `chat.update`, oldest first (so `edits.len()` updates happened).
    pub edits: Vec<String>,
    /// `edited.ts` of the last update.
    pub edited_ts: Option<String>,
    pub reply_broadcast: bool,
    /// Posted through the incoming webhook.
    pub webhook: bool,
    pub received_at: Instant,
    /// When the last `chat.update` changed it.
    pub updated_at: Option<Instant>,
}

impl FakeMessage {
    pub fn is_reply(&self) -> bool {
        self.thread_ts.is_some()
    }
}

/// One HTTP request the fake received, and what it did with it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Web API method (`chat.postMessage`), `webhook`, or the path for anything else.
    pub method: String,
    /// `GET`, `POST`, …
    pub http_method: String,
    /// Request target as received (path and query).
    pub target: String,
    /// HTTP status answered; `None` when the connection was dropped or hung without a reply.
    pub status: Option<u16>,
    /// Slack error answered (`"invalid_auth"`, webhook body errors, `"ratelimited"`, …).
    pub error: Option<String>,
    /// The injected fault, if any.
    pub fault: Option<Fault>,
    /// `Authorization` header value.
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The request body (decoded from chunks if chunked), lossy UTF-8.
    pub body: String,
    /// When the request was fully read.
    pub at: Instant,
}

impl Call {
    /// Answered HTTP 200 without a Slack error.
    pub fn ok(&self) -> bool {
        self.status == Some(200) && self.error.is_none()
    }
}

/// A consistent copy of everything the fake recorded.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub channels: Vec<FakeChannel>,
    /// Every stored message, oldest first.
    pub messages: Vec<FakeMessage>,
    /// Every request, in the order they were handled.
    pub calls: Vec<Call>,
}

impl Snapshot {
    /// The channel ID that `channel` (ID, name or `#name`, or [`WEBHOOK_CHANNEL`]) names.
    pub fn channel_id(&self, channel: &str) -> Option<String> {
        if channel == WEBHOOK_CHANNEL {
            return Some(WEBHOOK_CHANNEL.to_string());
        }
        resolve_channel(&self.channels, channel).map(|c| c.id.clone())
    }

    fn expect_channel(&self, channel: &str) -> String {
        self.channel_id(channel)
            .unwrap_or_else(|| panic!("the fake Slack has no channel {channel:?}"))
    }

    /// Top-level messages of `channel` (ID, name or `#name`), oldest first. Panics on an unknown
    /// channel.
    pub fn top_level(&self, channel: &str) -> Vec<FakeMessage> {
        let id = self.expect_channel(channel);
        self.messages
            .iter()
            .filter(|m| m.channel == id && m.thread_ts.is_none())
            .cloned()
            .collect()
    }

    /// The thread of `ts` in `channel`: the parent, then its replies oldest first; empty if there
    /// is no such top-level message. Panics on an unknown channel.
    pub fn thread(&self, channel: &str, ts: &str) -> Vec<FakeMessage> {
        let id = self.expect_channel(channel);
        let Some(parent) = self
            .messages
            .iter()
            .find(|m| m.channel == id && m.ts == ts && m.thread_ts.is_none())
        else {
            return Vec::new();
        };
        let mut thread = vec![parent.clone()];
        thread.extend(
            self.messages
                .iter()
                .filter(|m| m.channel == id && m.thread_ts.as_deref() == Some(ts))
                .cloned(),
        );
        thread
    }

    /// The message with that `ts`, in any channel.
    pub fn message(&self, ts: &str) -> Option<&FakeMessage> {
        self.messages.iter().find(|m| m.ts == ts)
    }

    /// Calls of that method (`chat.postMessage`, `webhook`, …).
    pub fn calls_to(&self, method: &str) -> Vec<&Call> {
        self.calls.iter().filter(|c| c.method == method).collect()
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- fake Slack: {} messages ---", self.messages.len())?;
        for m in &self.messages {
            write!(f, "{} {}", m.channel, m.ts)?;
            if let Some(thread_ts) = &m.thread_ts {
                write!(f, " (in thread {thread_ts})")?;
            }
            write!(f, " {:?}", m.text)?;
            if !m.blocks.is_null() {
                write!(f, " blocks={}", m.blocks)?;
            }
            if let Some(metadata) = &m.metadata {
                write!(f, " metadata={metadata}")?;
            }
            if !m.edits.is_empty() {
                write!(f, " edits={:?}", m.edits)?;
            }
            writeln!(f)?;
        }
        writeln!(f, "--- {} calls ---", self.calls.len())?;
        let start = self.calls.first().map(|c| c.at);
        for c in &self.calls {
            let at = start.map_or(0.0, |s| c.at.duration_since(s).as_secs_f64());
            write!(f, "+{at:.3}s {} {}", c.http_method, c.method)?;
            match c.status {
                Some(status) => write!(f, " -> {status}")?,
                None => write!(f, " -> no reply")?,
            }
            if let Some(error) = &c.error {
                write!(f, " {error}")?;
            }
            if let Some(fault) = &c.fault {
                write!(f, " [fault {fault:?}]")?;
            }
            let body: String = c.body.chars().take(300).collect();
            writeln!(f, " {body}")?;
        }
        Ok(())
    }
}

// ---- the server ----

/// A fake Slack workspace served on 127.0.0.1; stops accepting on drop.
pub struct FakeSlack {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSlack {
    /// Serves on a free port; the Web API accepts `Bearer <token>`. Channels `#incidents`
    /// (`C0INCIDENTS`) and `#slo-alerts` (`C0SLOALERTS`) exist.
    pub fn start(token: &str) -> FakeSlack {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let created = unix_micros() as u64 / 1_000_000;
        let channel = |name: &str, id: &str| FakeChannel {
            id: id.to_string(),
            name: name.to_string(),
            created,
        };
        let shared = Arc::new(Shared {
            token: token.to_string(),
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                channels: vec![
                    channel("incidents", "C0INCIDENTS"),
                    channel("slo-alerts", "C0SLOALERTS"),
                ],
                messages: Vec::new(),
                calls: Vec::new(),
                version: 0,
                last_ts: 0,
                queue: VecDeque::new(),
                fail: None,
                after_effect: None,
                latency: Duration::ZERO,
                rate_limit: None,
                posts: HashMap::new(),
            }),
            changed: Condvar::new(),
        });
        let thread = thread::spawn({
            let shared = shared.clone();
            move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    thread::spawn(move || serve_connection(stream, &shared));
                }
            }
        });
        FakeSlack {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/api`, the Web API base URL (`…/api/chat.postMessage`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.url())
    }

    /// `http://127.0.0.1:PORT/services/T000/B000/XXXX`, the one incoming webhook that exists.
    pub fn webhook_url(&self) -> String {
        format!("{}{WEBHOOK_PATH}", self.url())
    }

    /// The bot token the Web API accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Adds a channel (`name` with or without `#`).
    pub fn add_channel(&self, name: &str, id: &str) {
        let mut state = self.shared.lock();
        state.channels.push(FakeChannel {
            id: id.to_string(),
            name: name.trim_start_matches('#').to_string(),
            created: unix_micros() as u64 / 1_000_000,
        });
        state.version += 1;
        drop(state);
        self.shared.changed.notify_all();
    }

    pub fn channels(&self) -> Vec<FakeChannel> {
        self.shared.lock().channels.clone()
    }

    // ---- faults ----

    /// The next calls answer with `faults`, one each, in order (appended to any still queued).
    /// Queued faults take precedence over the shares.
    pub fn next_errors(&self, faults: Vec<Fault>) {
        self.shared.lock().queue.extend(faults);
    }

    /// A share (0..=1) of calls, drawn pseudo-randomly from `seed`, fails before any effect,
    /// rotating through [`Fault::RETRYABLE`]. `share` 0 turns it off.
    pub fn fail_share(&self, share: f64, seed: u64) {
        self.fail_share_with(share, seed, Fault::RETRYABLE.to_vec());
    }

    /// Like [`FakeSlack::fail_share`], rotating through `kinds` (the k-th failure is
    /// `kinds[k % kinds.len()]`).
    pub fn fail_share_with(&self, share: f64, seed: u64, kinds: Vec<Fault>) {
        assert!(
            !kinds.is_empty(),
            "fail_share_with needs at least one fault kind"
        );
        self.shared.lock().fail = (share > 0.0).then_some(ShareFaults {
            share,
            rng: SplitMix64(seed),
            kinds,
            next_kind: 0,
        });
    }

    /// A share (0..=1) of successful writes (`chat.postMessage`, `chat.update`, webhook posts),
    /// drawn pseudo-randomly from `seed`, takes effect and then gets its connection dropped
    /// without a reply. `share` 0 turns it off.
    pub fn fail_after_effect_share(&self, share: f64, seed: u64) {
        self.shared.lock().after_effect = (share > 0.0).then_some(Share {
            share,
            rng: SplitMix64(seed),
        });
    }

    /// Delays every reply by `delay` (after the effect). `Duration::ZERO` turns it off.
    pub fn latency(&self, delay: Duration) {
        self.shared.lock().latency = delay;
    }

    /// Answers `chat.postMessage` with 429 `ratelimited` + `Retry-After` when a channel already
    /// got `per_second` posts in the last second (fractions work: 0.5 is one post per 2 s).
    /// 0 (or anything not positive and finite) turns it off, which is the default.
    pub fn rate_limit_per_channel(&self, per_second: f64) {
        let mut state = self.shared.lock();
        state.rate_limit = (per_second > 0.0 && per_second.is_finite()).then_some(per_second);
        state.posts.clear();
    }

    /// Turns every fault knob off and empties the fault queue.
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.queue.clear();
        state.fail = None;
        state.after_effect = None;
        state.latency = Duration::ZERO;
        state.rate_limit = None;
        state.posts.clear();
    }

    // ---- inspection ----

    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().snapshot()
    }

    /// Every stored message, oldest first.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.shared.lock().messages.clone()
    }

    /// See [`Snapshot::top_level`].
    pub fn top_level(&self, channel: &str) -> Vec<FakeMessage> {
        self.snapshot().top_level(channel)
    }

    /// See [`Snapshot::thread`].
    pub fn thread(&self, channel: &str, ts: &str) -> Vec<FakeMessage> {
        self.snapshot().thread(channel, ts)
    }

    /// Every request so far, in the order handled.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Waits until `done(snapshot)` holds (re-checked on every change), returning that snapshot;
    /// panics with the snapshot after `timeout`. `done` runs without the fake's lock held.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Snapshot) -> bool,
    ) -> Snapshot {
        let deadline = Instant::now() + timeout;
        loop {
            let (snapshot, version) = {
                let state = self.shared.lock();
                (state.snapshot(), state.version)
            };
            if done(&snapshot) {
                return snapshot;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("fake Slack: timed out after {timeout:?} waiting for {what}\n{snapshot}");
            }
            let state = self.shared.lock();
            if state.version == version {
                let _ = self
                    .shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---- state ----

struct Shared {
    token: String,
    stop: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    channels: Vec<FakeChannel>,
    messages: Vec<FakeMessage>,
    calls: Vec<Call>,
    /// Bumped on every change, for `wait_for`.
    version: u64,
    /// Last `ts` handed out, in microseconds.
    last_ts: u128,
    queue: VecDeque<Fault>,
    fail: Option<ShareFaults>,
    after_effect: Option<Share>,
    latency: Duration,
    rate_limit: Option<f64>,
    /// Accepted `chat.postMessage` per channel ID, within the rate-limit window.
    posts: HashMap<String, VecDeque<Instant>>,
}

struct ShareFaults {
    share: f64,
    rng: SplitMix64,
    kinds: Vec<Fault>,
    next_kind: usize,
}

struct Share {
    share: f64,
    rng: SplitMix64,
}

/// splitmix64: a tiny deterministic generator, good enough to spread faults.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Route {
    Api(String),
    Webhook,
    Other,
}

/// What the connection thread does after the request was handled.
enum Outcome {
    Reply(Reply),
    Drop,
    Hang(Duration),
}

struct Reply {
    status: u16,
    content_type: &'static str,
    retry_after: Option<u64>,
    body: String,
    /// Recorded in [`Call::error`].
    error: Option<String>,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            content_type: JSON,
            retry_after: None,
            body: body.to_string(),
            error: body["error"].as_str().map(str::to_string),
        }
    }

    fn slack_error(error: &str) -> Reply {
        Reply::json(200, &json!({"ok": false, "error": error}))
    }

    fn html(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: HTML,
            retry_after: None,
            body: body.to_string(),
            error: (status != 200).then(|| body.to_string()),
        }
    }

    fn rate_limited(retry_after_secs: u64, webhook: bool) -> Reply {
        let mut reply = if webhook {
            Reply::html(429, "rate_limited")
        } else {
            Reply::json(429, &json!({"ok": false, "error": "ratelimited"}))
        };
        reply.retry_after = Some(retry_after_secs);
        reply
    }
}

/// A failed Web API call.
enum ApiError {
    Slack(&'static str),
    RateLimited(u64),
}

impl From<&'static str> for ApiError {
    fn from(error: &'static str) -> ApiError {
        ApiError::Slack(error)
    }
}

type Params = Map<String, Value>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps `duration`, or less if the fake is dropped meanwhile.
    fn sleep(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Decides, applies and records one request; returns what to do with the connection and the
    /// latency to add before a reply.
    fn handle(&self, request: &Request, received: Instant) -> (Outcome, Duration) {
        let route = route(&request.path);
        let mut state = self.lock();
        let latency = state.latency;
        let fault = match route {
            Route::Api(_) | Route::Webhook => state.draw_fault(),
            Route::Other => None,
        };
        let webhook = matches!(route, Route::Webhook);
        let outcome = match fault {
            Some(Fault::DropBeforeEffect) => Outcome::Drop,
            Some(Fault::Hang(duration)) => Outcome::Hang(duration),
            Some(Fault::RateLimited { retry_after_secs }) => {
                Outcome::Reply(Reply::rate_limited(retry_after_secs, webhook))
            }
            Some(Fault::Status(status)) => {
                let mut reply = Reply::html(status, &format!("{status} {}", reason(status)));
                reply.error = None;
                Outcome::Reply(reply)
            }
            Some(Fault::StatusJson(status)) => Outcome::Reply(Reply::json(
                status,
                &json!({"ok": false, "error": status_error(status)}),
            )),
            Some(Fault::SlackError(error)) if webhook => {
                Outcome::Reply(Reply::html(webhook_error_status(error), error))
            }
            Some(Fault::SlackError(error)) => Outcome::Reply(Reply::slack_error(error)),
            Some(Fault::DropAfterEffect) | None => {
                let (reply, wrote) = match &route {
                    Route::Api(method) => state.api(method, request, &self.token),
                    Route::Webhook => state.webhook(request),
                    Route::Other => (Reply::html(404, "not_found"), false),
                };
                if fault == Some(Fault::DropAfterEffect) || (wrote && state.draw_after_effect()) {
                    Outcome::Drop
                } else {
                    Outcome::Reply(reply)
                }
            }
        };
        let (status, error) = match &outcome {
            Outcome::Reply(reply) => (Some(reply.status), reply.error.clone()),
            Outcome::Drop | Outcome::Hang(_) => (None, None),
        };
        state.calls.push(Call {
            method: match route {
                Route::Api(method) => method,
                Route::Webhook => "webhook".to_string(),
                Route::Other => request.path.clone(),
            },
            http_method: request.method.clone(),
            target: request.target.clone(),
            status,
            error,
            fault,
            authorization: request.header("authorization").map(str::to_string),
            content_type: request.header("content-type").map(str::to_string),
            body: String::from_utf8_lossy(&request.body).into_owned(),
            at: received,
        });
        state.version += 1;
        drop(state);
        self.changed.notify_all();
        (outcome, latency)
    }
}

fn route(path: &str) -> Route {
    if let Some(method) = path.strip_prefix("/api/") {
        Route::Api(method.trim_end_matches('/').to_string())
    } else if path.starts_with("/services/") {
        Route::Webhook
    } else {
        Route::Other
    }
}

fn resolve_channel<'a>(channels: &'a [FakeChannel], channel: &str) -> Option<&'a FakeChannel> {
    if let Some(name) = channel.strip_prefix('#') {
        return channels.iter().find(|c| c.name == name);
    }
    channels
        .iter()
        .find(|c| c.id == channel)
        .or_else(|| channels.iter().find(|c| c.name == channel))
}

impl State {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            channels: self.channels.clone(),
            messages: self.messages.clone(),
            calls: self.calls.clone(),
        }
    }

    fn draw_fault(&mut self) -> Option<Fault> {
        if let Some(fault) = self.queue.pop_front() {
            return Some(fault);
        }
        let fail = self.fail.as_mut()?;
        if fail.rng.next_f64() >= fail.share {
            return None;
        }
        let fault = fail.kinds[fail.next_kind % fail.kinds.len()];
        fail.next_kind += 1;
        Some(fault)
    }

    fn draw_after_effect(&mut self) -> bool {
        self.after_effect
            .as_mut()
            .is_some_and(|s| s.rng.next_f64() < s.share)
    }

    /// A fresh `ts`: now, or 1 µs after the last one.
    fn next_ts(&mut self) -> String {
        let ts = unix_micros().max(self.last_ts + 1);
        self.last_ts = ts;
        format_ts(ts)
    }

    // ---- Web API ----

    /// Answers a Web API call; `true` when it wrote (stored or changed a message).
    fn api(&mut self, method: &str, request: &Request, token: &str) -> (Reply, bool) {
        const METHODS: [&str; 7] = [
            "api.test",
            "auth.test",
            "chat.postMessage",
            "chat.update",
            "conversations.history",
            "conversations.replies",
            "conversations.list",
        ];
        if !METHODS.contains(&method) {
            return (
                Reply::json(
                    200,
                    &json!({"ok": false, "error": "unknown_method", "req_method": method}),
                ),
                false,
            );
        }
        let params = parse_params(request);
        if method != "api.test" {
            let presented = match request.header("authorization") {
                Some(header) => Some(
                    header
                        .strip_prefix("Bearer ")
                        .or_else(|| header.strip_prefix("bearer "))
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                ),
                None => params
                    .as_ref()
                    .ok()
                    .and_then(|p| str_param(p, "token"))
                    .filter(|t| !t.is_empty()),
            };
            match presented {
                None => return (Reply::slack_error("not_authed"), false),
                Some(presented) if presented != token => {
                    return (Reply::slack_error("invalid_auth"), false);
                }
                Some(_) => {}
            }
        }
        let params = match params {
            Ok(params) => params,
            Err(error) => return (Reply::slack_error(error), false),
        };
        let (result, writes) = match method {
            "api.test" => (Ok(json!({"args": params})), false),
            "auth.test" => (
                Ok(json!({
                    "url": "https://fake-slack.example/",
                    "team": "Fake Slack",
                    "user": "burnwatch",
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "bot_id": BOT_ID,
                    "is_enterprise_install": false,
                })),
                false,
            ),
            "chat.postMessage" => (self.post_message(&params), true),
            "chat.update" => (self.update(&params), true),
            "conversations.history" => (self.history(&params), false),
            "conversations.replies" => (self.replies(&params), false),
            _ => (Ok(self.list()), false),
        };
        match result {
            Ok(body) => {
                let mut object = Map::new();
                object.insert("ok".into(), Value::Bool(true));
                if let Value::Object(fields) = body {
                    object.extend(fields);
                }
                let content_type = request.header("content-type").unwrap_or("");
                if content_type.starts_with("application/json") && !content_type.contains("charset")
                {
                    object.insert("warning".into(), json!("missing_charset"));
                    let metadata = object
                        .entry("response_metadata")
                        .or_insert_with(|| json!({}));
                    metadata["warnings"] = json!(["missing_charset"]);
                }
                (Reply::json(200, &Value::Object(object)), writes)
            }
            Err(ApiError::Slack(error)) => (Reply::slack_error(error), false),
            Err(ApiError::RateLimited(retry_after)) => {
                (Reply::rate_limited(retry_after, false), false)
            }
        }
    }

    /// A `chat.*` channel parameter: ID, name or `#name`.
    fn chat_channel(&self, params: &Params) -> Result<String, ApiError> {
        let channel = str_param(params, "channel").unwrap_or_default();
        resolve_channel(&self.channels, &channel)
            .map(|c| c.id.clone())
            .ok_or(ApiError::Slack("channel_not_found"))
    }

    /// A `conversations.*` channel parameter: IDs only, like Slack.
    fn conversation_channel(&self, params: &Params) -> Result<String, ApiError> {
        let channel = str_param(params, "channel").unwrap_or_default();
        self.channels
            .iter()
            .find(|c| c.id == channel)
            .map(|c| c.id.clone())
            .ok_or(ApiError::Slack("channel_not_found"))
    }

    fn post_message(&mut self, params: &Params) -> Result<Value, ApiError> {
        let channel = self.chat_channel(params)?;
        let content = parse_content(params)?;
        let metadata = parse_metadata(params)?;
        let thread_ts = str_param(params, "thread_ts").filter(|t| !t.is_empty());
        if let Some(thread_ts) = &thread_ts
            && !self
                .messages
                .iter()
                .any(|m| m.channel == channel && &m.ts == thread_ts && m.thread_ts.is_none())
        {
            return Err("thread_not_found".into());
        }
        self.check_rate(&channel)?;
        let ts = self.next_ts();
        let reply_broadcast = thread_ts.is_some() && bool_param(params, "reply_broadcast");
        self.messages.push(FakeMessage {
            channel: channel.clone(),
            ts: ts.clone(),
            thread_ts,
            text: content.text,
            blocks: content.blocks,
            attachments: content.attachments,
            metadata,
            edits: Vec::new(),
            edited_ts: None,
            reply_broadcast,
            webhook: false,
            received_at: Instant::now(),
            updated_at: None,
        });
        let message = self.render(self.messages.last().expect("just pushed"), true);
        Ok(json!({"channel": channel, "ts": ts, "message": message}))
    }

    fn check_rate(&mut self, channel: &str) -> Result<(), ApiError> {
        let Some(per_second) = self.rate_limit else {
            return Ok(());
        };
        let limit = per_second.floor().max(1.0);
        let window = Duration::from_secs_f64(limit / per_second);
        let now = Instant::now();
        let posts = self.posts.entry(channel.to_string()).or_default();
        while posts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            posts.pop_front();
        }
        if posts.len() as f64 >= limit {
            let wait = window.saturating_sub(now.duration_since(posts[0]));
            return Err(ApiError::RateLimited(
                wait.as_secs_f64().ceil().max(1.0) as u64
            ));
        }
        posts.push_back(now);
        Ok(())
    }

    fn update(&mut self, params: &Params) -> Result<Value, ApiError> {
        let channel = self.chat_channel(params)?;
        let ts = str_param(params, "ts").unwrap_or_default();
        let index = self
            .messages
            .iter()
            .position(|m| m.channel == channel && m.ts == ts)
            .ok_or(ApiError::Slack("message_not_found"))?;
        let content = parse_content(params)?;
        let metadata = parse_metadata(params)?;
        let edited_ts = self.next_ts();
        let message = &mut self.messages[index];
        let old_text = std::mem::replace(&mut message.text, content.text);
        message.edits.push(old_text);
        message.blocks = content.blocks;
        message.attachments = content.attachments;
        if metadata.is_some() {
            message.metadata = metadata;
        }
        message.edited_ts = Some(edited_ts);
        message.updated_at = Some(Instant::now());
        let message = &self.messages[index];
        let mut rendered = json!({
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": message.text,
            "edited": {"user": BOT_USER_ID, "ts": message.edited_ts},
        });
        if !message.blocks.is_null() {
            rendered["blocks"] = message.blocks.clone();
        }
        if !message.attachments.is_null() {
            rendered["attachments"] = message.attachments.clone();
        }
        if let Some(metadata) = &message.metadata {
            rendered["metadata"] = metadata.clone();
        }
        let mut body = json!({
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": rendered,
        });
        if let Some(thread_ts) = &message.thread_ts {
            body["thread_ts"] = json!(thread_ts);
        }
        Ok(body)
    }

    fn history(&self, params: &Params) -> Result<Value, ApiError> {
        let channel = self.conversation_channel(params)?;
        let range = TsRange::parse(params)?;
        let limit = limit_param(params);
        let cursor = cursor_param(params)?;
        let metadata = bool_param(params, "include_all_metadata");
        let mut listed: Vec<&FakeMessage> = self
            .messages
            .iter()
            .filter(|m| m.channel == channel && (m.thread_ts.is_none() || m.reply_broadcast))
            .filter(|m| range.contains(&m.ts))
            .filter(|m| cursor.is_none_or(|c| ts_micros(&m.ts).is_some_and(|t| t <= c)))
            .collect();
        listed.reverse();
        let has_more = listed.len() > limit;
        let next_cursor = if has_more {
            format!("next_ts:{}", listed[limit].ts)
        } else {
            String::new()
        };
        let messages: Vec<Value> = listed
            .iter()
            .take(limit)
            .map(|m| self.render(m, metadata))
            .collect();
        Ok(json!({
            "messages": messages,
            "has_more": has_more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": next_cursor},
        }))
    }

    fn replies(&self, params: &Params) -> Result<Value, ApiError> {
        let channel = self.conversation_channel(params)?;
        let ts = str_param(params, "ts").unwrap_or_default();
        let range = TsRange::parse(params)?;
        let limit = limit_param(params);
        let cursor = cursor_param(params)?;
        let metadata = bool_param(params, "include_all_metadata");
        let found = self
            .messages
            .iter()
            .find(|m| m.channel == channel && m.ts == ts)
            .ok_or(ApiError::Slack("thread_not_found"))?;
        let parent_ts = found.thread_ts.clone().unwrap_or_else(|| found.ts.clone());
        let listed: Vec<&FakeMessage> = self
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .filter(|m| {
                m.ts == parent_ts
                    || (m.thread_ts.as_deref() == Some(parent_ts.as_str()) && range.contains(&m.ts))
            })
            .filter(|m| cursor.is_none_or(|c| ts_micros(&m.ts).is_some_and(|t| t >= c)))
            .collect();
        let has_more = listed.len() > limit;
        let next_cursor = if has_more {
            format!("next_ts:{}", listed[limit].ts)
        } else {
            String::new()
        };
        let messages: Vec<Value> = listed
            .iter()
            .take(limit)
            .map(|m| self.render(m, metadata))
            .collect();
        Ok(json!({
            "messages": messages,
            "has_more": has_more,
            "response_metadata": {"next_cursor": next_cursor},
        }))
    }

    fn list(&self) -> Value {
        let channels: Vec<Value> = self
            .channels
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "name": c.name,
                    "name_normalized": c.name,
                    "created": c.created,
                    "creator": BOT_USER_ID,
                    "is_channel": true,
                    "is_group": false,
                    "is_im": false,
                    "is_mpim": false,
                    "is_private": false,
                    "is_archived": false,
                    "is_general": false,
                    "is_shared": false,
                    "is_org_shared": false,
                    "is_member": true,
                    "num_members": 1,
                    "topic": {"value": "", "creator": "", "last_set": 0},
                    "purpose": {"value": "", "creator": "", "last_set": 0},
                    "previous_names": [],
                })
            })
            .collect();
        json!({"channels": channels, "response_metadata": {"next_cursor": ""}})
    }

    /// A message as Slack's reads return it.
    fn render(&self, m: &FakeMessage, with_metadata: bool) -> Value {
        let mut o = Map::new();
        o.insert("type".into(), json!("message"));
        if m.reply_broadcast {
            o.insert("subtype".into(), json!("thread_broadcast"));
        }
        o.insert("text".into(), json!(m.text));
        o.insert("user".into(), json!(BOT_USER_ID));
        o.insert("bot_id".into(), json!(BOT_ID));
        o.insert("app_id".into(), json!(APP_ID));
        o.insert("team".into(), json!(TEAM_ID));
        o.insert("ts".into(), json!(m.ts));
        if !m.blocks.is_null() {
            o.insert("blocks".into(), m.blocks.clone());
        }
        if !m.attachments.is_null() {
            o.insert("attachments".into(), m.attachments.clone());
        }
        match &m.thread_ts {
            Some(thread_ts) => {
                o.insert("thread_ts".into(), json!(thread_ts));
                o.insert("parent_user_id".into(), json!(BOT_USER_ID));
            }
            None => {
                let replies: Vec<&FakeMessage> = self
                    .messages
                    .iter()
                    .filter(|r| r.channel == m.channel && r.thread_ts.as_ref() == Some(&m.ts))
                    .collect();
                if let Some(latest) = replies.last() {
                    o.insert("thread_ts".into(), json!(m.ts));
                    o.insert("reply_count".into(), json!(replies.len()));
                    o.insert("reply_users_count".into(), json!(1));
                    o.insert("latest_reply".into(), json!(latest.ts));
                    o.insert("reply_users".into(), json!([BOT_USER_ID]));
                    o.insert("is_locked".into(), json!(false));
                    o.insert("subscribed".into(), json!(false));
                }
            }
        }
        if let Some(edited_ts) = &m.edited_ts {
            o.insert(
                "edited".into(),
                json!({"user": BOT_USER_ID, "ts": edited_ts}),
            );
        }
        if with_metadata && let Some(metadata) = &m.metadata {
            o.insert("metadata".into(), metadata.clone());
        }
        Value::Object(o)
    }

    // ---- incoming webhook ----

    fn webhook(&mut self, request: &Request) -> (Reply, bool) {
        if request.path != WEBHOOK_PATH {
            return (Reply::html(404, "no_service"), false);
        }
        if request.method != "POST" {
            return (Reply::html(405, "invalid_method"), false);
        }
        let body = String::from_utf8_lossy(&request.body);
        let content_type = request.header("content-type").unwrap_or("");
        // Like Slack: a JSON body, or a form with the JSON in `payload`.
        let json_text = if content_type.starts_with("application/x-www-form-urlencoded") {
            form_pairs(&body)
                .into_iter()
                .find(|(k, _)| k == "payload")
                .map(|(_, v)| v)
                .unwrap_or_default()
        } else {
            body.into_owned()
        };
        let Ok(Value::Object(payload)) = serde_json::from_str::<Value>(&json_text) else {
            return (Reply::html(400, "invalid_payload"), false);
        };
        let content = match parse_content(&payload) {
            Ok(content) => content,
            Err(ApiError::Slack(error)) => return (Reply::html(400, error), false),
            Err(ApiError::RateLimited(retry_after)) => {
                return (Reply::rate_limited(retry_after, true), false);
            }
        };
        let ts = self.next_ts();
        self.messages.push(FakeMessage {
            channel: WEBHOOK_CHANNEL.to_string(),
            ts,
            thread_ts: None,
            text: content.text,
            blocks: content.blocks,
            attachments: content.attachments,
            metadata: None,
            edits: Vec::new(),
            edited_ts: None,
            reply_broadcast: false,
            webhook: true,
            received_at: Instant::now(),
            updated_at: None,
        });
        (Reply::html(200, "ok"), true)
    }
}

// ---- parameters ----

struct Content {
    text: String,
    blocks: Value,
    attachments: Value,
}

fn parse_content(params: &Params) -> Result<Content, ApiError> {
    let text = str_param(params, "text").unwrap_or_default();
    let markdown = str_param(params, "markdown_text").filter(|t| !t.is_empty());
    let blocks = json_param(params, "blocks").map_err(|()| "invalid_blocks")?;
    if let Some(blocks) = &blocks {
        let valid = blocks.as_array().is_some_and(|blocks| {
            blocks.len() <= 50
                && blocks.iter().all(|b| {
                    b.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.is_empty())
                })
        });
        if !valid {
            return Err("invalid_blocks".into());
        }
    }
    let attachments = json_param(params, "attachments").map_err(|()| "invalid_attachments")?;
    if attachments.as_ref().is_some_and(|a| !a.is_array()) {
        return Err("invalid_attachments".into());
    }
    if markdown.is_some() && (!text.is_empty() || blocks.is_some()) {
        return Err("markdown_text_conflict".into());
    }
    let text = markdown.unwrap_or(text);
    let non_empty = |v: &Option<Value>| {
        v.as_ref()
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if text.is_empty() && !non_empty(&blocks) && !non_empty(&attachments) {
        return Err("no_text".into());
    }
    if text.chars().count() > 40_000 {
        return Err("msg_too_long".into());
    }
    Ok(Content {
        text,
        blocks: blocks.unwrap_or(Value::Null),
        attachments: attachments.unwrap_or(Value::Null),
    })
}

fn parse_metadata(params: &Params) -> Result<Option<Value>, ApiError> {
    let metadata = json_param(params, "metadata").map_err(|()| "invalid_metadata_format")?;
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let valid = metadata
        .get("event_type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
        && metadata
            .get("event_payload")
            .is_none_or(|p| p.is_object() || p.is_null());
    if valid {
        Ok(Some(metadata))
    } else {
        Err("invalid_metadata_format".into())
    }
}

/// `oldest`/`latest`/`inclusive` of the reads.
struct TsRange {
    oldest: Option<u128>,
    latest: Option<u128>,
    inclusive: bool,
}

impl TsRange {
    fn parse(params: &Params) -> Result<TsRange, ApiError> {
        let bound = |key: &str, error: &'static str| -> Result<Option<u128>, ApiError> {
            match str_param(params, key).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => ts_micros(&v).map(Some).ok_or(ApiError::Slack(error)),
            }
        };
        Ok(TsRange {
            oldest: bound("oldest", "invalid_ts_oldest")?,
            latest: bound("latest", "invalid_ts_latest")?,
            inclusive: bool_param(params, "inclusive"),
        })
    }

    fn contains(&self, ts: &str) -> bool {
        let Some(ts) = ts_micros(ts) else {
            return false;
        };
        let above = self
            .oldest
            .is_none_or(|o| ts > o || (self.inclusive && ts == o));
        let below = self
            .latest
            .is_none_or(|l| ts < l || (self.inclusive && ts == l));
        above && below
    }
}

/// `limit`: default 100 (Slack's default), at most 999.
fn limit_param(params: &Params) -> usize {
    str_param(params, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(100)
        .min(999)
}

/// `cursor`: `next_ts:<ts>` as handed out in `next_cursor`.
fn cursor_param(params: &Params) -> Result<Option<u128>, ApiError> {
    match str_param(params, "cursor").filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(cursor) => cursor
            .strip_prefix("next_ts:")
            .and_then(ts_micros)
            .map(Some)
            .ok_or(ApiError::Slack("invalid_cursor")),
    }
}

/// Query parameters, then the body's (JSON object or form).
fn parse_params(request: &Request) -> Result<Params, &'static str> {
    let mut params = Map::new();
    for (key, value) in form_pairs(&request.query) {
        params.insert(key, Value::String(value));
    }
    if request.body.is_empty() {
        return Ok(params);
    }
    let body = String::from_utf8_lossy(&request.body);
    let content_type = request
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json")
        || (content_type.is_empty() && body.trim_start().starts_with('{'))
    {
        match serde_json::from_str::<Value>(&body) {
            Ok(Value::Object(fields)) => params.extend(fields),
            _ => return Err("invalid_json"),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded")
        || content_type.is_empty()
    {
        for (key, value) in form_pairs(&body) {
            params.insert(key, Value::String(value));
        }
    } else {
        return Err("invalid_form_data");
    }
    Ok(params)
}

fn str_param(params: &Params, key: &str) -> Option<String> {
    match params.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn bool_param(params: &Params, key: &str) -> bool {
    match params.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "1"),
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// A parameter that is JSON in a JSON body and a JSON string in a form.
fn json_param(params: &Params, key: &str) -> Result<Option<Value>, ()> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|_| ()),
        Some(other) => Ok(Some(other.clone())),
    }
}

fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

// ---- ts ----

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros()
}

fn format_ts(micros: u128) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// `"1712345678.000123"` → microseconds (fewer fraction digits are padded, more truncated).
fn ts_micros(ts: &str) -> Option<u128> {
    let (seconds, fraction) = ts.split_once('.').unwrap_or((ts, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if seconds.is_empty() || seconds.len() > 12 || !digits(seconds) || !digits(fraction) {
        return None;
    }
    let mut fraction: String = fraction.chars().take(6).collect();
    while fraction.len() < 6 {
        fraction.push('0');
    }
    Some(seconds.parse::<u128>().ok()? * 1_000_000 + fraction.parse::<u128>().ok()?)
}

// ---- HTTP ----

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fake",
    }
}

/// The `error` of a [`Fault::StatusJson`] body.
fn status_error(status: u16) -> String {
    match status {
        429 => "ratelimited".to_string(),
        500 => "internal_error".to_string(),
        502 => "bad_gateway".to_string(),
        503 => "service_unavailable".to_string(),
        504 => "request_timeout".to_string(),
        _ => format!("http_{status}"),
    }
}

/// The HTTP status incoming webhooks use for an error.
fn webhook_error_status(error: &str) -> u16 {
    match error {
        "channel_not_found" | "no_service" => 404,
        "action_prohibited"
        | "invalid_token"
        | "no_service_id"
        | "no_team"
        | "team_disabled"
        | "posting_to_general_channel_denied"
        | "channel_is_archived" => 403,
        "internal_error" | "fatal_error" | "rollup_error" => 500,
        _ => 400,
    }
}

struct Request {
    method: String,
    /// As received: path and query.
    target: String,
    path: String,
    query: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Buffered reading of one request from a stream.
struct Input<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Input<'_> {
    fn more(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        if self.buf.len() > MAX_REQUEST {
            return Err(io::Error::other("request too large"));
        }
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line =
                    String::from_utf8_lossy(&self.buf[self.pos..self.pos + end]).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            self.more()?;
        }
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        if n > MAX_REQUEST {
            return Err(io::Error::other("request too large"));
        }
        while self.buf.len() - self.pos < n {
            self.more()?;
        }
        let bytes = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(bytes)
    }
}

fn read_request(stream: &mut TcpStream) -> io::Result<Request> {
    let mut input = Input {
        stream,
        buf: Vec::new(),
        pos: 0,
    };
    let request_line = input.line()?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let line = input.line()?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v): &(String, String)| v.to_ascii_lowercase())
    };
    if header("expect").is_some_and(|e| e == "100-continue") {
        input.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        loop {
            let size_line = input.line()?;
            let size = size_line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !input.line()?.is_empty() {}
                break;
            }
            body.extend(input.take(size)?);
            if body.len() > MAX_REQUEST {
                return Err(io::Error::other("request too large"));
            }
            input.line()?;
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| io::Error::other("bad content-length"))?;
        body = input.take(length)?;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Request {
        path: path.to_string(),
        query: query.to_string(),
        method,
        target: target.clone(),
        headers,
        body,
    })
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_nodelay(true);
    let Ok(request) = read_request(&mut stream) else {
        return;
    };
    let (outcome, latency) = shared.handle(&request, Instant::now());
    match outcome {
        Outcome::Drop => {
            let _ = stream.shutdown(Shutdown::Both);
        }
        Outcome::Hang(duration) => {
            shared.sleep(duration);
            let _ = stream.shutdown(Shutdown::Both);
        }
        Outcome::Reply(reply) => {
            shared.sleep(latency);
            let mut head = format!(
                "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                reply.status,
                reason(reply.status),
                reply.content_type,
                reply.body.len()
            );
            if let Some(retry_after) = reply.retry_after {
                head.push_str(&format!("Retry-After: {retry_after}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(reply.body.as_bytes());
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Write);
        }
    }
}

// ---- tests of the fake itself (raw HTTP, and the slack-morphism client) ----

const TOKEN: &str = "xoxb-fake-slack-test";

fn http_client(timeout: Duration) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("build http client")
}

/// What an HTTP request got back.
struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    fn new(response: reqwest::blocking::Response) -> Answer {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Answer {
            status: response.status().as_u16(),
            content_type: header("content-type").unwrap_or_default(),
            retry_after: header("retry-after"),
            body: response.text().expect("read body"),
        }
    }

    /// The JSON body, `Null` if it is not JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// HTTP 200 `ok:true`; panics otherwise.
    fn ok(self) -> Value {
        let json = self.json();
        assert!(
            self.status == 200 && json["ok"] == true,
            "{} {}",
            self.status,
            self.body
        );
        json
    }

    /// The Slack error of an HTTP 200 `ok:false`; panics otherwise.
    fn error(self) -> String {
        let json = self.json();
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.content_type, JSON);
        assert_eq!(json["ok"], false, "{}", self.body);
        json["error"].as_str().expect("error string").to_string()
    }
}

fn try_post(
    client: &reqwest::blocking::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Result<Answer> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().map(Answer::new)
}

fn post(fake: &FakeSlack, method: &str, body: Value) -> Answer {
    let client = http_client(Duration::from_secs(5));
    let url = format!("{}/{method}", fake.api_url());
    try_post(&client, &url, Some(TOKEN), &body).expect("post")
}

fn get(fake: &FakeSlack, method_and_query: &str) -> Answer {
    let client = http_client(Duration::from_secs(5));
    let response = client
        .get(format!("{}/{method_and_query}", fake.api_url()))
        .bearer_auth(TOKEN)
        .send()
        .expect("get");
    Answer::new(response)
}

fn assert_slack_ts(ts: &str) {
    let (seconds, micros) = ts.split_once('.').expect("ts has a dot");
    assert!(
        seconds.len() == 10 && micros.len() == 6,
        "ts {ts:?} is not <unix seconds>.<6 digits>"
    );
    assert!(
        seconds
            .bytes()
            .chain(micros.bytes())
            .all(|b| b.is_ascii_digit())
    );
}

#[test]
fn bad_or_missing_token_is_refused_without_effect() {
    let fake = FakeSlack::start(TOKEN);
    let client = http_client(Duration::from_secs(5));
    let url = format!("{}/chat.postMessage", fake.api_url());
    let body = json!({"channel": "#incidents", "text": "hello"});

    let wrong = try_post(&client, &url, Some("xoxb-wrong"), &body).expect("post");
    assert_eq!(wrong.error(), "invalid_auth");
    let missing = try_post(&client, &url, None, &body).expect("post");
    assert_eq!(missing.error(), "not_authed");
    assert!(fake.messages().is_empty());

    let good = try_post(&client, &url, Some(TOKEN), &body)
        .expect("post")
        .ok();
    assert_eq!(good["channel"], "C0INCIDENTS");
    assert_eq!(fake.messages().len(), 1);

    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].method, "chat.postMessage");
    assert_eq!(calls[0].authorization.as_deref(), Some("Bearer xoxb-wrong"));
    assert_eq!(calls[0].error.as_deref(), Some("invalid_auth"));
    assert_eq!(calls[1].authorization, None);
    assert!(calls[2].ok(), "{:?}", calls[2]);
    assert_eq!(calls[2].body, body.to_string());

    let unknown = post(&fake, "chat.teleport", json!({}));
    assert_eq!(unknown.error(), "unknown_method");
}

#[test]
fn post_reply_update_then_read_history_and_replies() {
    let fake = FakeSlack::start(TOKEN);
    let posted = post(
        &fake,
        "chat.postMessage",
        json!({
            "channel": "#incidents",
            "text": "CRITICAL: burn",
            "metadata": {"event_type": "burnwatch_alert", "event_payload": {"alert": "a1"}},
        }),
    )
    .ok();
    let ts = posted["ts"].as_str().expect("ts").to_string();
    assert_slack_ts(&ts);
    assert_eq!(posted["channel"], "C0INCIDENTS");
    assert_eq!(posted["message"]["ts"], ts.as_str());
    assert_eq!(posted["message"]["bot_id"], BOT_ID);
    assert_eq!(posted["message"]["text"], "CRITICAL: burn");
    assert_eq!(
        posted["message"]["metadata"]["event_payload"]["alert"],
        "a1"
    );

    // A form-encoded thread reply.
    let client = http_client(Duration::from_secs(5));
    let reply = Answer::new(
        client
            .post(format!("{}/chat.postMessage", fake.api_url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "channel=C0INCIDENTS&text=still+burning%21&thread_ts={ts}"
            ))
            .send()
            .expect("post form"),
    )
    .ok();
    let reply_ts = reply["ts"].as_str().expect("ts").to_string();
    assert!(ts_micros(&reply_ts) > ts_micros(&ts));
    assert_eq!(reply["message"]["thread_ts"], ts.as_str());
    assert_eq!(reply["message"]["text"], "still burning!");

    // Refusals, without effect.
    let refused = |body: Value| post(&fake, "chat.postMessage", body).error();
    let thread =
        |thread_ts: &str| json!({"channel": "incidents", "text": "x", "thread_ts": thread_ts});
    assert_eq!(refused(thread(&reply_ts)), "thread_not_found");
    assert_eq!(refused(thread("1.000000")), "thread_not_found");
    assert_eq!(
        refused(json!({"channel": "#nope", "text": "x"})),
        "channel_not_found"
    );
    assert_eq!(refused(json!({"text": "x"})), "channel_not_found");
    assert_eq!(refused(json!({"channel": "#incidents"})), "no_text");
    assert_eq!(
        refused(json!({"channel": "#incidents", "blocks": "nope"})),
        "invalid_blocks"
    );
    assert_eq!(
        refused(json!({"channel": "#incidents", "blocks": [{"text": "no type"}]})),
        "invalid_blocks"
    );
    assert_eq!(fake.messages().len(), 2);

    // Update the parent by channel name.
    let updated = post(
        &fake,
        "chat.update",
        json!({"channel": "incidents", "ts": ts, "text": "RESOLVED: burn"}),
    )
    .ok();
    assert_eq!(updated["channel"], "C0INCIDENTS");
    assert_eq!(updated["ts"], ts.as_str());
    assert_eq!(updated["text"], "RESOLVED: burn");
    assert_eq!(updated["message"]["text"], "RESOLVED: burn");
    let missing = post(
        &fake,
        "chat.update",
        json!({"channel": "C0INCIDENTS", "ts": "1.000001", "text": "x"}),
    );
    assert_eq!(missing.error(), "message_not_found");

    let later = post(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0INCIDENTS", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*later*"}}]}),
    )
    .ok();
    let later_ts = later["ts"].as_str().expect("ts").to_string();

    // History: top-level only, newest first, metadata only on request.
    let history = get(
        &fake,
        "conversations.history?channel=C0INCIDENTS&include_all_metadata=true",
    )
    .ok();
    let messages = history["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{history}");
    assert_eq!(messages[0]["ts"], later_ts.as_str());
    assert_eq!(messages[0]["blocks"][0]["type"], "section");
    assert_eq!(messages[1]["ts"], ts.as_str());
    assert_eq!(messages[1]["text"], "RESOLVED: burn");
    assert_eq!(messages[1]["reply_count"], 1);
    assert_eq!(messages[1]["latest_reply"], reply_ts.as_str());
    assert_eq!(messages[1]["metadata"]["event_type"], "burnwatch_alert");
    assert!(messages[1]["edited"]["ts"].is_string());
    assert_eq!(history["has_more"], false);
    assert_eq!(history["response_metadata"]["next_cursor"], "");

    let plain = get(&fake, "conversations.history?channel=C0INCIDENTS").ok();
    assert!(plain["messages"][1].get("metadata").is_none(), "{plain}");
    let by_name = get(&fake, "conversations.history?channel=%23incidents");
    assert_eq!(by_name.error(), "channel_not_found");
    let newer = get(
        &fake,
        &format!("conversations.history?channel=C0INCIDENTS&oldest={ts}"),
    )
    .ok();
    assert_eq!(newer["messages"].as_array().map(Vec::len), Some(1));
    let inclusive = get(
        &fake,
        &format!("conversations.history?channel=C0INCIDENTS&oldest={ts}&inclusive=true"),
    )
    .ok();
    assert_eq!(inclusive["messages"].as_array().map(Vec::len), Some(2));

    // Pages.
    let first = get(&fake, "conversations.history?channel=C0INCIDENTS&limit=1").ok();
    assert_eq!(first["has_more"], true);
    assert_eq!(first["messages"][0]["ts"], later_ts.as_str());
    let cursor = first["response_metadata"]["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    let second = get(
        &fake,
        &format!("conversations.history?channel=C0INCIDENTS&limit=1&cursor={cursor}"),
    )
    .ok();
    assert_eq!(second["messages"][0]["ts"], ts.as_str());
    assert_eq!(second["has_more"], false);

    // Replies: parent first, then replies oldest first.
    let replies = get(
        &fake,
        &format!("conversations.replies?channel=C0INCIDENTS&ts={ts}&include_all_metadata=true"),
    )
    .ok();
    let thread_messages = replies["messages"].as_array().expect("messages");
    assert_eq!(thread_messages.len(), 2, "{replies}");
    assert_eq!(thread_messages[0]["ts"], ts.as_str());
    assert_eq!(
        thread_messages[0]["metadata"]["event_type"],
        "burnwatch_alert"
    );
    assert_eq!(thread_messages[1]["ts"], reply_ts.as_str());
    assert_eq!(thread_messages[1]["thread_ts"], ts.as_str());
    let no_thread = get(
        &fake,
        "conversations.replies?channel=C0INCIDENTS&ts=1.000000",
    );
    assert_eq!(no_thread.error(), "thread_not_found");

    let list = post(&fake, "conversations.list", json!({})).ok();
    let ids: Vec<&str> = list["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["C0INCIDENTS", "C0SLOALERTS"]);

    // Inspection.
    let top = fake.top_level("#incidents");
    assert_eq!(top.len(), 2);
    assert_eq!(top[0].text, "RESOLVED: burn");
    assert_eq!(top[0].edits, ["CRITICAL: burn"]);
    assert_eq!(
        top[0].metadata.as_ref().map(|m| m["event_type"].clone()),
        Some(json!("burnwatch_alert"))
    );
    assert_eq!(top[1].blocks[0]["type"], "section");
    let thread = fake.thread("incidents", &ts);
    assert_eq!(thread.len(), 2);
    assert_eq!(thread[1].text, "still burning!");
    assert!(fake.top_level("C0SLOALERTS").is_empty());
}

#[test]
fn queued_faults_answer_in_order() {
    let fake = FakeSlack::start(TOKEN);
    fake.next_errors(vec![
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        Fault::Status(502),
        Fault::StatusJson(503),
        Fault::SlackError("internal_error"),
        Fault::DropAfterEffect,
        Fault::DropBeforeEffect,
    ]);
    let client = http_client(Duration::from_secs(5));
    let url = format!("{}/chat.postMessage", fake.api_url());
    let send = |text: &str| {
        try_post(
            &client,
            &url,
            Some(TOKEN),
            &json!({"channel": "#slo-alerts", "text": text}),
        )
    };

    let limited = send("1").expect("answer");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    assert_eq!(limited.content_type, JSON);
    assert_eq!(limited.json()["error"], "ratelimited");

    let gateway = send("2").expect("answer");
    assert_eq!(gateway.status, 502);
    assert_eq!(gateway.content_type, HTML);
    assert!(gateway.json().is_null(), "{}", gateway.body);

    let unavailable = send("3").expect("answer");
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.json()["error"], "service_unavailable");

    assert_eq!(send("4").expect("answer").error(), "internal_error");
    assert!(fake.messages().is_empty());

    assert!(send("5").is_err(), "dropped after effect");
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.messages()[0].text, "5");
    assert!(send("6").is_err(), "dropped before effect");
    assert_eq!(fake.messages().len(), 1);

    send("7").expect("answer").ok();
    let statuses: Vec<Option<u16>> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [
            Some(429),
            Some(502),
            Some(503),
            Some(200),
            None,
            None,
            Some(200)
        ]
    );

    // A hang outlasts the client's patience, without effect; latency delays replies.
    fake.next_errors(vec![Fault::Hang(Duration::from_millis(400))]);
    let impatient = http_client(Duration::from_millis(100));
    let hung = try_post(
        &impatient,
        &url,
        Some(TOKEN),
        &json!({"channel": "#slo-alerts", "text": "hung"}),
    );
    assert!(hung.is_err());
    fake.latency(Duration::from_millis(80));
    let start = Instant::now();
    send("slow").expect("answer").ok();
    assert!(start.elapsed() >= Duration::from_millis(80));
    fake.clear_faults();

    // Some writes take effect but lose their reply.
    fake.fail_after_effect_share(0.5, 7);
    let lost = (0..20).filter(|i| send(&format!("w{i}")).is_err()).count();
    assert!((3..=17).contains(&lost), "{lost} of 20 lost");
    assert_eq!(fake.messages().len(), 2 + 1 + 20);
}

#[test]
fn fail_share_fails_about_that_share_rotating_kinds() {
    let fake = FakeSlack::start(TOKEN);
    fake.fail_share(0.3, 42);
    let client = http_client(Duration::from_secs(5));
    let url = format!("{}/chat.postMessage", fake.api_url());
    let mut failures = 0;
    for i in 0..200 {
        let answer = try_post(
            &client,
            &url,
            Some(TOKEN),
            &json!({"channel": "C0SLOALERTS", "text": format!("m{i}")}),
        )
        .expect("answer");
        if answer.status != 200 || answer.json()["ok"] != true {
            failures += 1;
        }
    }
    assert!((40..=80).contains(&failures), "{failures} of 200 failed");
    assert_eq!(
        fake.messages().len(),
        200 - failures,
        "failures have no effect"
    );
    let calls = fake.calls();
    for kind in Fault::RETRYABLE {
        assert!(
            calls.iter().any(|c| c.fault == Some(kind)),
            "{kind:?} never injected"
        );
    }
    let limited = calls.iter().find(|c| c.status == Some(429)).expect("a 429");
    assert_eq!(limited.error.as_deref(), Some("ratelimited"));
}

#[test]
fn webhook_answers_text_html() {
    let fake = FakeSlack::start(TOKEN);
    let client = http_client(Duration::from_secs(5));
    let url = fake.webhook_url();
    let send = |body: &str| {
        Answer::new(
            client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .expect("post"),
        )
    };

    let ok = send(r#"{"text": "CRITICAL: burn"}"#);
    assert_eq!(
        (ok.status, ok.content_type.as_str(), ok.body.as_str()),
        (200, HTML, "ok")
    );
    let blocks =
        send(r#"{"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "b"}}]}"#);
    assert_eq!((blocks.status, blocks.body.as_str()), (200, "ok"));
    let empty = send("{}");
    assert_eq!(
        (
            empty.status,
            empty.content_type.as_str(),
            empty.body.as_str()
        ),
        (400, HTML, "no_text")
    );
    let garbage = send("not json");
    assert_eq!(
        (garbage.status, garbage.body.as_str()),
        (400, "invalid_payload")
    );
    let elsewhere = Answer::new(
        client
            .post(format!("{}/services/T000/B000/WRONG", fake.url()))
            .body(r#"{"text": "x"}"#)
            .send()
            .expect("post"),
    );
    assert_eq!(
        (elsewhere.status, elsewhere.body.as_str()),
        (404, "no_service")
    );

    let messages = fake.top_level(WEBHOOK_CHANNEL);
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.webhook));
    assert_eq!(messages[0].text, "CRITICAL: burn");
    assert_eq!(messages[1].blocks[0]["type"], "section");
    assert!(fake.calls().iter().all(|c| c.method == "webhook"));

    fake.next_errors(vec![Fault::RateLimited {
        retry_after_secs: 2,
    }]);
    let limited = send(r#"{"text": "x"}"#);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.retry_after.as_deref(), Some("2"));
    assert_eq!(limited.content_type, HTML);
}

#[test]
fn chunked_bodies_and_per_channel_rate_limit() {
    let fake = FakeSlack::start(TOKEN);
    let body = r##"{"channel": "#incidents", "text": "chunked"}"##;
    let (first, second) = body.split_at(20);
    let mut stream = TcpStream::connect(fake.url().trim_start_matches("http://")).expect("connect");
    write!(
        stream,
        "POST /api/chat.postMessage HTTP/1.1\r\nHost: slack\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("Content-Type: application/json; charset=utf-8\r\n"));
    assert!(response.contains("\"ok\":true"), "{response}");
    assert_eq!(fake.calls()[0].body, body);
    assert_eq!(fake.top_level("incidents")[0].text, "chunked");

    fake.rate_limit_per_channel(1.0);
    let message = |channel: &str| json!({"channel": channel, "text": "x"});
    post(&fake, "chat.postMessage", message("#slo-alerts")).ok();
    let limited = post(&fake, "chat.postMessage", message("#slo-alerts"));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    post(&fake, "chat.postMessage", message("#incidents")).ok();
    assert_eq!(fake.top_level("#slo-alerts").len(), 1);
}

#[test]
fn wait_for_sees_changes_and_reports_on_timeout() {
    let fake = Arc::new(FakeSlack::start(TOKEN));
    fake.add_channel("#team-orders", "C0ORDERS");
    let poster = thread::spawn({
        let fake = fake.clone();
        move || {
            thread::sleep(Duration::from_millis(50));
            post(
                &fake,
                "chat.postMessage",
                json!({"channel": "team-orders", "text": "hi"}),
            )
            .ok();
        }
    });
    let snapshot = fake.wait_for("a post in #team-orders", Duration::from_secs(2), |s| {
        !s.top_level("#team-orders").is_empty()
    });
    assert_eq!(snapshot.top_level("C0ORDERS")[0].text, "hi");
    poster.join().expect("poster");

    let timed_out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fake.wait_for(
            "something that never happens",
            Duration::from_millis(50),
            |_| false,
        )
    }));
    let message = timed_out.expect_err("times out");
    let message = message.downcast_ref::<String>().expect("panic message");
    assert!(
        message.contains("something that never happens"),
        "{message}"
    );
    assert!(message.contains("\"hi\""), "{message}");
}

#[test]
fn slack_morphism_client_talks_to_the_fake() {
    use slack_morphism::errors::SlackClientError;
    use slack_morphism::prelude::*;

    let fake = FakeSlack::start(TOKEN);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = SlackClient::new(
        SlackClientHyperConnector::with_connector(connector).with_slack_api_url(&fake.api_url()),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let token = SlackApiToken::new(SlackApiTokenValue::new(TOKEN.to_string()));
        let session = client.open_session(&token);
        let metadata = SlackMessageMetadata::new("burnwatch_alert".to_string()).with_event_payload(
            std::collections::HashMap::from([("alert".to_string(), "a1".to_string())]),
        );
        let posted = session
            .chat_post_message(&SlackApiChatPostMessageRequest::new(
                SlackChannelId::new("#slo-alerts".to_string()),
                SlackMessageContent::new()
                    .with_text("CRITICAL: burn".to_string())
                    .with_metadata(metadata),
            ))
            .await
            .expect("chat.postMessage");
        assert_eq!(posted.channel.value(), "C0SLOALERTS");
        assert_eq!(posted.message.origin.ts, posted.ts);

        session
            .chat_post_message(
                &SlackApiChatPostMessageRequest::new(
                    posted.channel.clone(),
                    SlackMessageContent::new().with_text("details".to_string()),
                )
                .with_thread_ts(posted.ts.clone()),
            )
            .await
            .expect("thread reply");

        let updated = session
            .chat_update(&SlackApiChatUpdateRequest::new(
                posted.channel.clone(),
                SlackMessageContent::new().with_text("RESOLVED: burn".to_string()),
                posted.ts.clone(),
            ))
            .await
            .expect("chat.update");
        assert_eq!(updated.ts, posted.ts);

        let history = session
            .conversations_history(
                &SlackApiConversationsHistoryRequest::new()
                    .with_channel(posted.channel.clone())
                    .with_include_all_metadata(true),
            )
            .await
            .expect("conversations.history");
        assert_eq!(history.messages.len(), 1);
        let parent = &history.messages[0];
        assert_eq!(parent.content.text.as_deref(), Some("RESOLVED: burn"));
        assert_eq!(parent.parent.reply_count, Some(1));
        assert_eq!(
            parent
                .content
                .metadata
                .as_ref()
                .map(|m| m.event_type.as_str()),
            Some("burnwatch_alert")
        );

        let replies = session
            .conversations_replies(&SlackApiConversationsRepliesRequest::new(
                posted.channel.clone(),
                posted.ts.clone(),
            ))
            .await
            .expect("conversations.replies");
        assert_eq!(replies.messages.len(), 2);
        assert_eq!(replies.messages[1].content.text.as_deref(), Some("details"));

        let list = session
            .conversations_list(&SlackApiConversationsListRequest::new())
            .await
            .expect("conversations.list");
        assert_eq!(list.channels.len(), 2);

        fake.next_errors(vec![
            Fault::RateLimited {
                retry_after_secs: 3,
            },
            Fault::SlackError("internal_error"),
            Fault::Status(503),
        ]);
        let request = SlackApiChatPostMessageRequest::new(
            SlackChannelId::new("C0SLOALERTS".to_string()),
            SlackMessageContent::new().with_text("again".to_string()),
        );
        match session.chat_post_message(&request).await {
            Err(SlackClientError::RateLimitError(e)) => {
                assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
            }
            other => panic!("expected a rate limit error, got {other:?}"),
        }
        match session.chat_post_message(&request).await {
            Err(SlackClientError::ApiError(e)) => assert_eq!(e.code, "internal_error"),
            other => panic!("expected an API error, got {other:?}"),
        }
        match session.chat_post_message(&request).await {
            Err(SlackClientError::HttpError(e)) => assert_eq!(e.status_code.as_u16(), 503),
            other => panic!("expected an HTTP error, got {other:?}"),
        }

        let wrong = SlackApiToken::new(SlackApiTokenValue::new("xoxb-wrong".to_string()));
        match client
            .open_session(&wrong)
            .chat_post_message(&request)
            .await
        {
            Err(SlackClientError::ApiError(e)) => assert_eq!(e.code, "invalid_auth"),
            other => panic!("expected invalid_auth, got {other:?}"),
        }
    });
    assert_eq!(fake.top_level("#slo-alerts").len(), 1);
}
