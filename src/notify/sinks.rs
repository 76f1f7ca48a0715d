//! The receivers: Slack's Web API (slack-morphism), Slack incoming webhooks, Alertmanager's
//! `POST /api/v2/alerts` and generic JSON webhooks. Each call ends in success or a
//! [`Failure`] that says whether and when to try again, and whether the receiver may have acted
//! on the request anyway (then the outbox looks before it sends again).
//!
//! Secrets (the bot token, webhook URLs) never appear in errors: reqwest errors are stripped of
//! their URL, and Slack errors are reduced to Slack's error code or the HTTP status.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::source::prometheus::Secret;

/// Why a delivery attempt failed, and what that means for the next one.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The receiver asked to wait (HTTP 429 `Retry-After`); it did not act on the request.
    RateLimited(Duration),
    /// Worth retrying with backoff. `ambiguous`: the receiver may have acted on it.
    Transient { reason: String, ambiguous: bool },
    /// Will not succeed as it is (unknown channel, bad token, rejected payload).
    Permanent { reason: String },
}

impl Failure {
    /// A short label for metrics and logs: a Slack error code, `http_503`, `timeout`, …
    pub fn reason(&self) -> &str {
        match self {
            Failure::RateLimited(_) => "ratelimited",
            Failure::Transient { reason, .. } | Failure::Permanent { reason } => reason,
        }
    }

    fn transient(reason: impl Into<String>, ambiguous: bool) -> Failure {
        Failure::Transient {
            reason: reason.into(),
            ambiguous,
        }
    }
}

/// Slack error codes after which a retry can succeed; the request may have been acted on for
/// the server-side ones.
fn slack_code(code: &str) -> Failure {
    match code {
        "ratelimited" | "rate_limited" => Failure::RateLimited(Duration::from_secs(1)),
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            Failure::transient(code, true)
        }
        _ => Failure::Permanent {
            reason: code_label(code),
        },
    }
}

/// The longest `Retry-After` honoured as given (a larger one is read as this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// A Slack error code as a metric label: Slack's codes are short snake_case words; anything
/// else (a misbehaving server) is reported as `unexpected_error`.
fn code_label(code: &str) -> String {
    if !code.is_empty()
        && code.len() <= 40
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
    {
        code.to_string()
    } else {
        "unexpected_error".to_string()
    }
}

fn http_status(status: u16, retry_after: Option<Duration>) -> Failure {
    match status {
        429 => Failure::RateLimited(retry_after.unwrap_or(Duration::from_secs(1))),
        408 => Failure::transient("http_408", false),
        // Redirects are not followed: a 301/302/303 would turn the POST into a GET that
        // delivers nothing, and a URL that moved is a configuration to fix, not to retry.
        300..=399 => Failure::Permanent {
            reason: "redirect".to_string(),
        },
        500..=599 => Failure::transient(format!("http_{status}"), true),
        _ => Failure::Permanent {
            reason: format!("http_{status}"),
        },
    }
}

fn from_slack(error: SlackClientError) -> Failure {
    match error {
        SlackClientError::ApiError(error) => slack_code(&error.code),
        SlackClientError::RateLimitError(error) => Failure::RateLimited(
            error
                .retry_after
                .unwrap_or(Duration::from_secs(1))
                .min(MAX_RETRY_AFTER),
        ),
        SlackClientError::HttpError(error) => http_status(error.status_code.as_u16(), None),
        // A transport error may come after Slack acted on the request: look before retrying.
        SlackClientError::HttpProtocolError(_) => Failure::transient("connection", true),
        SlackClientError::EndOfStream(_) => Failure::transient("connection", true),
        SlackClientError::ProtocolError(_) => Failure::transient("bad_response", true),
        SlackClientError::SystemError(_) | SlackClientError::SocketModeProtocolError(_) => {
            Failure::transient("client", true)
        }
    }
}

fn from_reqwest(error: &reqwest::Error) -> Failure {
    if error.is_connect() {
        Failure::transient("connect", false)
    } else if error.is_timeout() {
        Failure::transient("timeout", true)
    } else {
        Failure::transient("connection", true)
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// A message as sent to Slack.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub channel: &'a str,
    pub text: &'a str,
    pub blocks: &'a Value,
    pub thread_ts: Option<&'a str>,
    pub broadcast: bool,
    /// The outbox key, carried in the message's metadata.
    pub key: &'a str,
}

/// Where a posted message landed.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    pub channel_id: String,
    pub ts: String,
}

/// The event type of burnwatch's message metadata.
pub const METADATA_EVENT: &str = "burnwatch_notification";

/// The Slack Web API with a bot token.
pub struct SlackApi {
    client: SlackHyperClient,
    token: SlackApiToken,
    timeout: Duration,
    /// Channel names resolved to ids (for history lookups).
    ids: tokio::sync::Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi").finish_non_exhaustive()
    }
}

fn content(text: &str, blocks: &Value) -> SlackMessageContent {
    let blocks: Option<Vec<SlackBlock>> = serde_json::from_value(blocks.clone()).ok();
    SlackMessageContent::new()
        .with_text(text.to_string())
        .opt_blocks(blocks)
}

impl SlackApi {
    /// `api_url` is `https://slack.com/api` in production (plain http is allowed for a local
    /// Slack-compatible server).
    /// How long one call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn new(api_url: &str, token: &Secret, timeout: Duration) -> anyhow::Result<SlackApi> {
        crate::source::prometheus::install_crypto_provider();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(api_url.trim_end_matches('/'));
        Ok(SlackApi {
            client: SlackClient::new(connector),
            token: SlackApiToken::new(SlackApiTokenValue(token.expose().to_string())),
            timeout,
            ids: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = ClientResult<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(from_slack),
            Err(_) => Err(Failure::transient("timeout", true)),
        }
    }

    /// `chat.postMessage`, with the key in the message metadata.
    pub async fn post(&self, message: &Outgoing<'_>) -> Result<Posted, Failure> {
        let session = self.client.open_session(&self.token);
        let metadata = SlackMessageMetadata::new(METADATA_EVENT.to_string()).with_event_payload(
            [("key".to_string(), message.key.to_string())]
                .into_iter()
                .collect(),
        );
        let request = SlackApiChatPostMessageRequest::new(
            SlackChannelId(message.channel.to_string()),
            content(message.text, message.blocks).with_metadata(metadata),
        )
        .opt_thread_ts(message.thread_ts.map(|ts| SlackTs(ts.to_string())))
        .opt_reply_broadcast(message.broadcast.then_some(true))
        .with_unfurl_links(false);
        let response = self.timed(session.chat_post_message(&request)).await?;
        let channel_id = response.channel.to_string();
        self.ids
            .lock()
            .await
            .insert(message.channel.to_string(), channel_id.clone());
        Ok(Posted {
            channel_id,
            ts: response.ts.to_string(),
        })
    }

    /// `chat.update` of a message (idempotent: the same content again changes nothing).
    pub async fn update(
        &self,
        channel_id: &str,
        ts: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<(), Failure> {
        let session = self.client.open_session(&self.token);
        let request = SlackApiChatUpdateRequest::new(
            SlackChannelId(channel_id.to_string()),
            content(text, blocks),
            SlackTs(ts.to_string()),
        );
        self.timed(session.chat_update(&request)).await.map(|_| ())
    }

    /// The id of a channel given by name (`#incidents`) or id (`C0123…`).
    pub async fn channel_id(&self, channel: &str) -> Result<String, Failure> {
        let looks_like_id = channel.len() >= 9
            && channel.starts_with(['C', 'G', 'D'])
            && channel
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if looks_like_id {
            return Ok(channel.to_string());
        }
        if let Some(id) = self.ids.lock().await.get(channel) {
            return Ok(id.clone());
        }
        let name = channel.trim_start_matches('#');
        let session = self.client.open_session(&self.token);
        let mut cursor: Option<SlackCursorId> = None;
        loop {
            let request = SlackApiConversationsListRequest::new()
                .with_limit(1000)
                .with_exclude_archived(true)
                .with_types(vec![
                    SlackConversationType::Public,
                    SlackConversationType::Private,
                ])
                .opt_cursor(cursor.clone());
            let response = self.timed(session.conversations_list(&request)).await?;
            if let Some(found) = response
                .channels
                .iter()
                .find(|found| found.name.as_deref() == Some(name))
            {
                let id = found.id.to_string();
                self.ids
                    .lock()
                    .await
                    .insert(channel.to_string(), id.clone());
                return Ok(id);
            }
            cursor = response
                .response_metadata
                .and_then(|meta| meta.next_cursor)
                .filter(|next| !next.0.is_empty());
            if cursor.is_none() {
                return Err(Failure::Permanent {
                    reason: "channel_not_found".to_string(),
                });
            }
        }
    }

    /// Looks for a message carrying `key` in its metadata, posted since `since` (Unix
    /// seconds): at the top of `channel_id`, or in the thread under `thread_ts`. Pages through
    /// the answers (up to 10 pages); the messages are read as plain JSON, since other apps'
    /// metadata need not fit slack-morphism's types.
    pub async fn find(
        &self,
        channel_id: &str,
        thread_ts: Option<&str>,
        key: &str,
        since: f64,
    ) -> Result<Option<String>, Failure> {
        let session = self.client.open_session(&self.token);
        let oldest = format!("{:.6}", since.max(0.0));
        let (method, limit) = match thread_ts {
            None => ("conversations.history", "999"),
            Some(_) => ("conversations.replies", "1000"),
        };
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let params = vec![
                ("channel", Some(channel_id.to_string())),
                ("ts", thread_ts.map(str::to_string)),
                ("oldest", Some(oldest.clone())),
                ("limit", Some(limit.to_string())),
                ("include_all_metadata", Some("true".to_string())),
                ("cursor", cursor.clone()),
            ];
            let page: Value = self
                .timed(session.http_session_api.http_get(method, &params, None))
                .await?;
            let found = page["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|message| {
                    message["metadata"]["event_type"] == METADATA_EVENT
                        && message["metadata"]["event_payload"]["key"] == key
                });
            if let Some(message) = found {
                return Ok(message["ts"].as_str().map(str::to_string));
            }
            cursor = page["response_metadata"]["next_cursor"]
                .as_str()
                .filter(|next| !next.is_empty())
                .map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        Ok(None)
    }
}

/// Plain HTTP receivers: Slack incoming webhooks, Alertmanager, generic webhooks.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> anyhow::Result<Http> {
        crate::source::prometheus::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("burnwatch/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Http { client })
    }

    async fn post_json(
        &self,
        url: &str,
        body: &Value,
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Result<u16, Failure> {
        let mut request = self.client.post(url).timeout(timeout).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .map_err(|error| from_reqwest(&error.without_url()))?;
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        // The status says it all; the body (unbounded, maybe huge) is not read.
        drop(response);
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(http_status(status, wait))
        }
    }

    /// A Slack incoming webhook: `{text, blocks}`; Slack answers `ok`, or an error code as
    /// text (`invalid_payload`, `channel_not_found`, `no_service`, …).
    pub async fn slack_webhook(
        &self,
        url: &Secret,
        text: &str,
        blocks: &Value,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let body = serde_json::json!({"text": text, "blocks": blocks});
        match self.post_json(url.expose(), &body, timeout, &[]).await {
            Ok(_) => Ok(()),
            Err(Failure::Permanent { reason }) => Err(Failure::Permanent { reason }),
            Err(other) => Err(other),
        }
    }

    /// Alertmanager's `POST /api/v2/alerts` (idempotent: the same alert again refreshes it).
    pub async fn alertmanager(
        &self,
        base_url: &str,
        alerts: &Value,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let url = format!("{}/api/v2/alerts", base_url.trim_end_matches('/'));
        self.post_json(&url, alerts, timeout, &[])
            .await
            .map(|_| ())
            .map_err(|failure| match failure {
                // Alertmanager answers 400 for alerts it cannot take; nothing to retry.
                Failure::Transient { reason, .. } => Failure::transient(reason, false),
                other => other,
            })
    }

    /// A generic webhook: the JSON document, with the outbox key as `Idempotency-Key`.
    pub async fn webhook(
        &self,
        url: &Secret,
        document: &Value,
        key: &str,
        timeout: Duration,
    ) -> Result<(), Failure> {
        self.post_json(url.expose(), document, timeout, &[("Idempotency-Key", key)])
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_a_retry_can_do() {
        assert_eq!(
            slack_code("channel_not_found"),
            Failure::Permanent {
                reason: "channel_not_found".to_string()
            }
        );
        assert!(matches!(
            slack_code("invalid_auth"),
            Failure::Permanent { .. }
        ));
        assert_eq!(
            slack_code("internal_error"),
            Failure::transient("internal_error", true)
        );
        assert_eq!(
            http_status(429, Some(Duration::from_secs(7))),
            Failure::RateLimited(Duration::from_secs(7))
        );
        assert_eq!(http_status(503, None), Failure::transient("http_503", true));
        assert_eq!(
            http_status(404, None),
            Failure::Permanent {
                reason: "http_404".to_string()
            }
        );
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "1e300".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        for status in [301, 302, 303, 307, 308] {
            assert_eq!(
                http_status(status, None),
                Failure::Permanent {
                    reason: "redirect".to_string()
                }
            );
        }
        assert_eq!(code_label("channel_not_found"), "channel_not_found");
        assert_eq!(code_label("<script>"), "unexpected_error");
    }

    /// A receiver that answers every POST with `302 Location: /landed` and a GET of `/landed`
    /// with 200; records each request line.
    fn redirecting_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(line.clone());
                let reply = if line.starts_with("GET /landed") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 302 Found\r\nLocation: /landed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (base, seen)
    }

    /// A 302 (which a client following it would turn into a GET that delivers nothing) is a
    /// permanent `redirect` failure, and the redirect is not followed.
    #[tokio::test]
    async fn redirects_are_failures_and_not_followed() {
        let (base, seen) = redirecting_receiver();
        let http = Http::new().unwrap();
        let document = serde_json::json!({"version": "1"});
        let redirect = Failure::Permanent {
            reason: "redirect".to_string(),
        };
        let timeout = Duration::from_secs(5);
        let url = Secret::new(format!("{base}/hook"));
        assert_eq!(
            http.webhook(&url, &document, "k-1", timeout).await,
            Err(redirect.clone())
        );
        assert_eq!(
            http.alertmanager(&base, &serde_json::json!([]), timeout)
                .await,
            Err(redirect.clone())
        );
        assert_eq!(
            http.slack_webhook(&url, "text", &serde_json::json!([]), timeout)
                .await,
            Err(redirect)
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(
            seen.iter().all(|line| line.starts_with("POST ")),
            "a redirect was followed: {seen:?}"
        );
    }
}
