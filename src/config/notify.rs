//! The `notify:` section of the daemon config: where notifications go.
//!
//! ```yaml
//! notify:
//!   slack:
//!     token_file: slack-token          # a bot token (xoxb-…); or token_env: SLACK_BOT_TOKEN
//!     # webhook_url_file: slack-webhook  # incoming-webhook mode instead: no updates, no threads
//!     # api_url: https://slack.com/api
//!   routes:                            # first match wins; no route → no Slack message
//!     - matchers: ['tier="page"']      # also: severity, service, slo, sloth_id, SLO labels
//!       slack_channel: "#incidents"
//!     - slack_channel: "#slo-alerts"
//!   alertmanager:
//!     url: http://127.0.0.1:9093
//!     resend_interval: 1m
//!   webhooks:
//!     - name: ops
//!       url_file: ops-webhook-url
//!   silences:
//!     - matchers: ['service="checkout"']
//!       ends_at: 2026-12-01T00:00:00Z
//!       comment: planned migration
//!   console: true
//! ```
//!
//! Secrets (Slack token, webhook URLs) are named by file or environment variable and read when
//! the config is loaded; they never appear in logs or errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Problems;
use crate::notify::matcher::Matcher;
use crate::slo::Millis;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    slack: Option<Spanned<RawSlack>>,
    routes: Option<Vec<Spanned<RawRoute>>>,
    alertmanager: Option<RawAlertmanager>,
    #[serde(default)]
    webhooks: Vec<Spanned<RawWebhook>>,
    #[serde(default)]
    silences: Vec<Spanned<RawSilence>>,
    console: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    token_file: Option<String>,
    token_env: Option<String>,
    webhook_url_file: Option<String>,
    api_url: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    matchers: Vec<Spanned<String>>,
    slack_channel: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: Spanned<String>,
    resend_interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    url_file: Option<String>,
    url_env: Option<String>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilence {
    matchers: Vec<Spanned<String>>,
    ends_at: Spanned<String>,
    starts_at: Option<Spanned<String>>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    created_by: String,
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SlackMode {
    /// The Web API with a bot token: post, update in place, threads.
    WebApi {
        token: SecretSource,
        api_url: String,
    },
    /// An incoming webhook: one message per transition, in the webhook's channel.
    Webhook { url: SecretSource },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlackConfig {
    pub mode: SlackMode,
    pub timeout: Duration,
}

/// Which Slack channel gets the notifications whose labels match.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub matchers: Vec<Matcher>,
    /// `None`: no Slack message for these.
    pub slack_channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerConfig {
    pub url: String,
    pub resend_interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub name: String,
    pub url: SecretSource,
    pub timeout: Duration,
}

/// A silence: notifications whose labels match every matcher are not sent while it lasts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: Millis,
    pub ends_at: Millis,
    pub comment: String,
    pub created_by: String,
}

impl Silence {
    pub fn active(&self, now: Millis) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub slack: Option<SlackConfig>,
    pub routes: Vec<Route>,
    pub alertmanager: Option<AlertmanagerConfig>,
    pub webhooks: Vec<WebhookConfig>,
    pub silences: Vec<Silence>,
    pub console: bool,
}

pub const DEFAULT_SLACK_API: &str = "https://slack.com/api";
pub const PAGE_CHANNEL: &str = "#incidents";
pub const TICKET_CHANNEL: &str = "#slo-alerts";

/// Pages to `#incidents`, everything else (tickets) to `#slo-alerts`.
pub fn default_routes() -> Vec<Route> {
    vec![
        Route {
            matchers: vec![Matcher::parse("tier=\"page\"").expect("valid")],
            slack_channel: Some(PAGE_CHANNEL.to_string()),
        },
        Route {
            matchers: Vec::new(),
            slack_channel: Some(TICKET_CHANNEL.to_string()),
        },
    ]
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            slack: None,
            routes: default_routes(),
            alertmanager: None,
            webhooks: Vec::new(),
            silences: Vec::new(),
            console: true,
        }
    }
}

fn http_url(problems: &mut Problems, value: &Spanned<String>, path: &str) -> String {
    let url = value.value.trim().trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        problems.at(
            value,
            path,
            format!("{url:?} is not an http:// or https:// URL"),
        );
    }
    url
}

fn duration(
    problems: &mut Problems,
    value: &Option<Spanned<String>>,
    path: &str,
    default: Duration,
) -> Duration {
    super::duration_at_least_1s(problems, value.as_ref(), path, default).unwrap_or(default)
}

fn matchers(problems: &mut Problems, raw: &[Spanned<String>], path: &str) -> Vec<Matcher> {
    raw.iter()
        .enumerate()
        .filter_map(|(index, text)| match Matcher::parse(&text.value) {
            Ok(matcher) => Some(matcher),
            Err(message) => {
                problems.at(text, format!("{path}[{index}]"), message);
                None
            }
        })
        .collect()
}

fn secret(
    problems: &mut Problems,
    at: &Spanned<impl Sized>,
    path: &str,
    file: Option<String>,
    env: Option<String>,
    base: &Path,
) -> Option<SecretSource> {
    match (file, env) {
        (Some(file), None) => Some(SecretSource::File(base.join(file))),
        (None, Some(env)) => Some(SecretSource::Env(env)),
        (Some(_), Some(_)) => {
            problems.at(at, path, "set a file or an environment variable, not both");
            None
        }
        (None, None) => None,
    }
}

pub(super) fn load(problems: &mut Problems, raw: Option<RawNotify>, base: &Path) -> NotifyConfig {
    let Some(raw) = raw else {
        return NotifyConfig::default();
    };
    let slack = raw.slack.and_then(|spanned| {
        let slack = &spanned.value;
        let timeout = duration(
            problems,
            &slack.timeout,
            "notify.slack.timeout",
            Duration::from_secs(10),
        );
        let token = secret(
            problems,
            &spanned,
            "notify.slack",
            slack.token_file.clone(),
            slack.token_env.clone(),
            base,
        );
        let mode = match (token, &slack.webhook_url_file) {
            (Some(_), Some(_)) => {
                problems.at(
                    &spanned,
                    "notify.slack",
                    "set a bot token (Web API) or webhook_url_file (incoming webhook), not both",
                );
                return None;
            }
            (Some(token), None) => SlackMode::WebApi {
                token,
                api_url: match &slack.api_url {
                    Some(url) => http_url(problems, url, "notify.slack.api_url"),
                    None => DEFAULT_SLACK_API.to_string(),
                },
            },
            (None, Some(file)) => SlackMode::Webhook {
                url: SecretSource::File(base.join(file)),
            },
            (None, None) => {
                problems.at(
                    &spanned,
                    "notify.slack",
                    "needs token_file or token_env (a bot token), or webhook_url_file",
                );
                return None;
            }
        };
        Some(SlackConfig { mode, timeout })
    });
    let routes = match raw.routes {
        None => default_routes(),
        Some(routes) => routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                let path = format!("notify.routes[{index}]");
                if let Some(channel) = &route.value.slack_channel
                    && channel.trim().is_empty()
                {
                    problems.at(route, format!("{path}.slack_channel"), "is empty");
                }
                Route {
                    matchers: matchers(
                        problems,
                        &route.value.matchers,
                        &format!("{path}.matchers"),
                    ),
                    slack_channel: route.value.slack_channel.clone(),
                }
            })
            .collect(),
    };
    let alertmanager = raw.alertmanager.map(|am| AlertmanagerConfig {
        url: http_url(problems, &am.url, "notify.alertmanager.url"),
        resend_interval: duration(
            problems,
            &am.resend_interval,
            "notify.alertmanager.resend_interval",
            Duration::from_secs(60),
        ),
        timeout: duration(
            problems,
            &am.timeout,
            "notify.alertmanager.timeout",
            Duration::from_secs(10),
        ),
    });
    let mut webhooks = Vec::new();
    for (index, hook) in raw.webhooks.iter().enumerate() {
        let path = format!("notify.webhooks[{index}]");
        let value = &hook.value;
        if webhooks
            .iter()
            .any(|known: &WebhookConfig| known.name == value.name)
        {
            problems.at(
                hook,
                format!("{path}.name"),
                format!("{:?} is used twice", value.name),
            );
        }
        let timeout = duration(
            problems,
            &value.timeout,
            &format!("{path}.timeout"),
            Duration::from_secs(10),
        );
        match secret(
            problems,
            hook,
            &path,
            value.url_file.clone(),
            value.url_env.clone(),
            base,
        ) {
            Some(url) => webhooks.push(WebhookConfig {
                name: value.name.clone(),
                url,
                timeout,
            }),
            None => problems.at(hook, &path, "needs url_file or url_env"),
        }
    }
    let mut silences = Vec::new();
    for (index, silence) in raw.silences.iter().enumerate() {
        let path = format!("notify.silences[{index}]");
        let value = &silence.value;
        let time = |problems: &mut Problems, text: &Spanned<String>, field: &str| {
            crate::replay::parse_time(&text.value)
                .map_err(|message| problems.at(text, format!("{path}.{field}"), message))
                .ok()
        };
        let ends_at = time(problems, &value.ends_at, "ends_at");
        let starts_at = match &value.starts_at {
            Some(text) => time(problems, text, "starts_at"),
            None => Some(0),
        };
        let parsed = matchers(problems, &value.matchers, &format!("{path}.matchers"));
        if value.matchers.is_empty() {
            problems.at(
                silence,
                format!("{path}.matchers"),
                "a silence needs at least one matcher",
            );
        }
        if let (Some(starts_at), Some(ends_at)) = (starts_at, ends_at) {
            silences.push(Silence {
                id: format!("config-{index}"),
                matchers: parsed,
                starts_at,
                ends_at,
                comment: value.comment.clone(),
                created_by: value.created_by.clone(),
            });
        }
    }
    NotifyConfig {
        slack,
        routes,
        alertmanager,
        webhooks,
        silences,
        console: raw.console.unwrap_or(true),
    }
}
