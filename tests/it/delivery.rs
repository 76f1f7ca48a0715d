//! Delivery end to end: the real `burnwatch serve` against a real Prometheus 2.42 scraping a
//! live target (see serve.rs), notifying a fake Slack Web API that behaves like Slack
//! (fake_slack.rs) and a real Alertmanager 0.25 (alertmanager.rs).
//!
//! The spec pages when the error ratio over 20s and over 5s exceeds 1% (objective 99.9%,
//! factor 10), resolves after `resolve_timeout: 3s`, and reminds every `repeat_interval`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::alertmanager::{AM_VERSIONS, Alertmanager, AmVersion, Webhook};
use crate::fake_slack::{FakeMessage, FakeSlack, Fault, Snapshot};
use crate::prom::SCRAPE_JOB;
use crate::serve::{Live, ROUTE, Serve, live};

pub(crate) const TOKEN: &str = "xoxb-1234-s3cr3t-slack-bot-token";
pub(crate) const WAIT: Duration = Duration::from_secs(90);
/// The seed incident's plateau (see `burnwatch demo`): 5.73% of requests fail.
pub(crate) const BURNING: f64 = 0.0573;
const THRESHOLD: f64 = 10.0 * (1.0 - 0.999);
pub(crate) const CRITICAL: &str = "CRITICAL: Fast error budget burn on order-service";
pub(crate) const RESOLVED: &str = "RESOLVED: Fast error budget burn on order-service";
pub(crate) const STILL_FIRING: &str = "STILL FIRING: Fast error budget burn on order-service";

/// The serve tests' spec (see serve.rs) with a dashboard link and `repeat_interval`.
fn spec(repeat_interval: &str) -> String {
    crate::serve::spec("Requests that do not fail.", "99.9")
        .replace(
            "    alerting:\n",
            "    dashboard: https://grafana.example.com/d/orders\n    alerting:\n",
        )
        .replace(
            "      resolve_timeout: 3s\n",
            &format!("      resolve_timeout: 3s\n      repeat_interval: {repeat_interval}\n"),
        )
}

/// A live setup whose config sends to `notify` (YAML lines under `notify:`), with the bot token
/// in `slack-token`.
pub(crate) fn setup(error_ratio: f64, repeat_interval: &str, notify: &str) -> Live {
    let live = live(error_ratio, false);
    live.setup.write_spec(&spec(repeat_interval));
    let dir = live.setup.dir.path();
    std::fs::write(dir.join("slack-token"), format!("{TOKEN}\n")).expect("write token");
    // A slow Prometheus on a loaded machine must not page "evaluation stale" into the
    // channels these tests read (the stale test sets its own).
    let config = std::fs::read_to_string(live.setup.config())
        .expect("read config")
        .replace("stale_after: 3s", "stale_after: 1h");
    std::fs::write(live.setup.config(), format!("{config}notify:\n{notify}"))
        .expect("write config");
    live
}

pub(crate) fn slack_notify(slack: &FakeSlack) -> String {
    format!(
        "  slack:\n    token_file: slack-token\n    api_url: {}\n    timeout: 2s\n",
        slack.api_url()
    )
}

pub(crate) fn key_of(message: &FakeMessage) -> Option<String> {
    message.metadata.as_ref()?["event_payload"]["key"]
        .as_str()
        .map(str::to_string)
}

pub(crate) fn headline(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Converts an `Instant` of this process to wall-clock milliseconds.
fn instant_ms(at: Instant) -> i64 {
    let now = Instant::now();
    wall_ms() - now.saturating_duration_since(at).as_millis() as i64
}

/// The Slack rows of the outbox, and whether every one of them is delivered.
pub(crate) fn slack_rows(serve: &Serve) -> Vec<Value> {
    serve.json("/api/v1/outbox")["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|row| row["sink"] == "slack")
        .collect()
}

pub(crate) fn all_delivered(rows: &[Value]) -> bool {
    !rows.is_empty() && rows.iter().all(|row| row["state"] == "delivered")
}

/// The first time (Unix seconds, 0.1s steps from `from`) at which Prometheus says the page
/// condition holds: the error ratio over 20s and over 5s both above the threshold.
fn condition_true_at(live: &Live, from: f64, until: f64) -> Option<f64> {
    let ratio = |window: &str| {
        format!(
            "sum by (route) (rate(http_requests_total{{job=\"{SCRAPE_JOB}\",code=~\"5..\"}}[{window}])) \
             / sum by (route) (rate(http_requests_total{{job=\"{SCRAPE_JOB}\"}}[{window}]))"
        )
    };
    let expr = format!(
        "({} > {THRESHOLD}) and ({} > {THRESHOLD})",
        ratio("20s"),
        ratio("5s")
    );
    let mut at = from;
    while at <= until {
        if live.prom.query_one(&expr, at).is_some() {
            return Some(at);
        }
        at += 0.1;
    }
    None
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(name))
        .find(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Seed incident → CRITICAL root in #incidents (latency from the condition turning true in
/// Prometheus to Slack's request) → RESOLVED in place after resolve_timeout, with the thread
/// telling the same story. Secrets never show.
#[test]
fn slack_pages_in_incidents_and_resolves_in_place() {
    let slack = FakeSlack::start(TOKEN);
    let live = setup(0.0, "1h", &slack_notify(&slack));
    let serve = live.setup.serve();
    serve.wait_ready();
    let burn_from = wall_ms() as f64 / 1000.0;
    live.target.set_error_ratio(BURNING);
    let snapshot = slack.wait_for("the CRITICAL root in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let root = snapshot.top_level("#incidents")[0].clone();
    assert_eq!(headline(&root.text), CRITICAL, "{}", root.text);
    assert!(
        root.text
            .contains("Runbook: https://runbooks.example.com/order-service/availability")
    );
    let blocks = root.blocks.to_string();
    assert!(
        blocks.contains("*Burning*") && blocks.contains("(threshold 10.0x)"),
        "{blocks}"
    );
    assert!(blocks.contains("Dashboard"), "{blocks}");
    assert!(
        key_of(&root).is_some(),
        "the root carries its outbox key: {root:?}"
    );
    let post = snapshot.calls_to("chat.postMessage")[0].clone();
    assert_eq!(
        post.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );

    // Latency: from the condition turning true (Prometheus, same data) to Slack's request.
    let requested = instant_ms(post.at) as f64 / 1000.0;
    // Searched a little past the request: a scrape still in flight when burnwatch queried can
    // move the first true instant either way by a sample.
    let became_true = condition_true_at(&live, burn_from, requested + 5.0)
        .unwrap_or_else(|| panic!("Prometheus never saw the condition from {burn_from} on"));
    let latency = requested - became_true;
    eprintln!(
        "latency from the condition turning true to the Slack request: {:.2}s (evaluation interval 1s)",
        latency
    );
    assert!(
        latency <= 3.0,
        "latency {latency:.2}s exceeds the evaluation interval (1s) + 2s"
    );

    live.target.set_error_ratio(0.0);
    let snapshot = slack.wait_for("the root updated to RESOLVED", WAIT, |s| {
        s.message(&root.ts)
            .is_some_and(|message| headline(&message.text) == RESOLVED)
    });
    let resolved_root = snapshot.message(&root.ts).expect("root").clone();
    assert_eq!(resolved_root.edits.len(), 1, "{resolved_root:?}");
    assert!(
        resolved_root.text.contains("Burned for"),
        "{}",
        resolved_root.text
    );
    assert!(
        resolved_root.text.contains("since it fired"),
        "{}",
        resolved_root.text
    );
    let snapshot = slack.wait_for("the RESOLVED reply in the thread", WAIT, |s| {
        s.thread("#incidents", &root.ts)
            .iter()
            .any(|reply| headline(&reply.text) == RESOLVED)
    });
    assert_eq!(
        snapshot.top_level("#incidents").len(),
        1,
        "one incident, one root"
    );
    assert!(snapshot.top_level("#slo-alerts").is_empty());
    // Resolved no earlier than resolve_timeout after the root went out.
    let resolved_at = resolved_root.updated_at.expect("updated");
    assert!(resolved_at.duration_since(root.received_at) >= Duration::from_secs(3));

    serve.wait_for("the outbox drained", || {
        all_delivered(&slack_rows(&serve)).then_some(())
    });
    let (_, metrics) = serve.get("/metrics");
    assert_eq!(
        metric(&metrics, "burnwatch_outbox_depth", &[("sink", "slack")]),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "burnwatch_notifications_delivered_total",
            &[("sink", "slack")]
        )
        .is_some_and(|count| count >= 3.0),
        "{metrics}"
    );
    for (what, text) in [
        ("stdout", serve.stdout()),
        ("stderr", serve.stderr()),
        ("/metrics", metrics),
        ("/api/v1/outbox", serve.get("/api/v1/outbox").1),
    ] {
        assert!(!text.contains("s3cr3t"), "the Slack token shows in {what}");
    }
}

/// A wrong token: Slack says `invalid_auth`, nothing is retried forever, the failure is on
/// /metrics by reason, and the token shows nowhere. A webhook whose URL (a secret) points
/// nowhere fails with `connect`, retried, and its URL shows nowhere either.
#[test]
fn slack_invalid_auth_is_a_permanent_failure_without_leaking_the_token() {
    let slack = FakeSlack::start("xoxb-the-right-one");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!(
        "http://{}/hooks/s3cr3t-webhook-path",
        dead.local_addr().unwrap()
    );
    drop(dead);
    let notify = format!(
        "{}  webhooks:\n    - name: dead\n      url_file: dead-url\n",
        slack_notify(&slack)
    );
    let live = setup(BURNING, "1h", &notify);
    std::fs::write(live.setup.dir.path().join("dead-url"), &dead_url).expect("write");
    let serve = live.setup.serve();
    serve.wait_for("the root failing with invalid_auth", || {
        slack_rows(&serve)
            .iter()
            .any(|row| row["state"] == "failed" && row["last_error"] == "invalid_auth")
            .then_some(())
    });
    let (_, metrics) = serve.get("/metrics");
    assert!(
        metric(
            &metrics,
            "burnwatch_notification_delivery_failures_total",
            &[("sink", "slack"), ("reason", "invalid_auth")]
        )
        .is_some_and(|count| count >= 1.0),
        "{metrics}"
    );
    let metrics = serve.wait_for("the dead webhook failing with connect", || {
        let (_, metrics) = serve.get("/metrics");
        metric(
            &metrics,
            "burnwatch_notification_delivery_failures_total",
            &[("sink", "webhook:dead"), ("reason", "connect")],
        )
        .map(|_| metrics)
    });
    let calls = slack.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|call| call.method == "chat.postMessage")
            .count(),
        1,
        "invalid_auth is not retried: {calls:?}"
    );
    for text in [serve.stdout(), serve.stderr(), metrics] {
        assert!(!text.contains("s3cr3t"), "the Slack token shows: {text}");
    }
}

/// Waits for the RESOLVED reply and an outbox with every Slack row delivered; returns the rows.
pub(crate) fn resolved_and_drained(slack: &FakeSlack, serve: &Serve) -> Vec<Value> {
    slack.wait_for("the RESOLVED reply", WAIT, |s| {
        s.messages
            .iter()
            .any(|m| m.is_reply() && headline(&m.text) == RESOLVED)
    });
    serve.wait_for("the outbox drained", || {
        let rows = slack_rows(serve);
        all_delivered(&rows).then_some(rows)
    })
}

/// The checks every fault test ends with: each outbox row delivered, each Slack message posted
/// exactly once (by its metadata key), thread order equal to outbox order.
/// Returns (expected, delivered, duplicated).
pub(crate) fn exactly_once(slack: &Snapshot, rows: &[Value]) -> (usize, usize, usize) {
    let posted: Vec<&FakeMessage> = slack.messages.iter().filter(|m| !m.webhook).collect();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for message in &posted {
        *by_key
            .entry(key_of(message).unwrap_or_else(|| panic!("message without a key: {message:?}")))
            .or_default() += 1;
    }
    let expected: Vec<&Value> = rows
        .iter()
        .filter(|row| row["kind"] == "post" || row["kind"] == "reply")
        .collect();
    let duplicated: usize = by_key.values().map(|count| count - 1).sum();
    for (key, count) in &by_key {
        if *count > 1 {
            let copies: Vec<_> = posted
                .iter()
                .filter(|m| key_of(m).as_deref() == Some(key.as_str()))
                .map(|m| {
                    (
                        m.ts.clone(),
                        m.thread_ts.clone(),
                        headline(&m.text).to_string(),
                    )
                })
                .collect();
            let calls: Vec<_> = slack
                .calls
                .iter()
                .filter(|call| {
                    call.body.contains(key.as_str()) || call.target.contains("conversations")
                })
                .map(|call| {
                    (
                        call.method.clone(),
                        call.status,
                        call.error.clone(),
                        call.fault,
                    )
                })
                .collect();
            eprintln!("duplicated {key}: {copies:?}\ncalls: {calls:?}");
        }
    }
    let delivered = by_key.len();
    for row in &expected {
        assert_eq!(row["state"], "delivered", "{row}");
    }
    // Each delivered row's result is the ts of a message carrying that row's key.
    for row in &expected {
        let ts = row["result"].as_str().expect("ts");
        let message = slack
            .message(ts)
            .unwrap_or_else(|| panic!("row {row} names a message Slack does not have"));
        let key = key_of(message).expect("key");
        assert!(key.ends_with(&format!("-{}", row["id"])), "{row} ↔ {key}");
    }
    // In order per incident: thread replies' ts ascend with their rows' ids.
    let mut by_incident: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for row in &expected {
        by_incident
            .entry(row["order_key"].as_str().unwrap_or("").to_string())
            .or_default()
            .push((
                row["id"].as_i64().unwrap(),
                row["result"].as_str().unwrap().to_string(),
            ));
    }
    for (incident, mut sent) in by_incident {
        sent.sort();
        let ts: Vec<f64> = sent.iter().map(|(_, ts)| ts.parse().unwrap()).collect();
        assert!(
            ts.windows(2).all(|pair| pair[0] < pair[1]),
            "{incident}: messages out of order: {sent:?}"
        );
    }
    (expected.len(), delivered, duplicated)
}

/// 30% of Slack calls fail (429 with Retry-After, 500, 503, internal_error, fatal_error, and a
/// dropped connection after Slack acted): every message is delivered exactly once, in order.
#[test]
fn slack_faults_deliver_every_message_exactly_once_in_order() {
    let slack = FakeSlack::start(TOKEN);
    let mut kinds = Fault::RETRYABLE.to_vec();
    kinds.push(Fault::DropAfterEffect);
    slack.fail_share_with(0.3, 7, kinds);
    let live = setup(0.0, "1s", &slack_notify(&slack));
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    slack.wait_for("twenty reminders in the thread", WAIT, |s| {
        s.messages
            .iter()
            .filter(|m| headline(&m.text) == STILL_FIRING)
            .count()
            >= 20
    });
    live.target.set_error_ratio(0.0);
    let rows = resolved_and_drained(&slack, &serve);
    let snapshot = slack.snapshot();
    let (expected, delivered, duplicated) = exactly_once(&snapshot, &rows);
    let failed_calls = snapshot.calls.iter().filter(|call| !call.ok()).count();
    eprintln!(
        "30% faults: {} Slack calls, {failed_calls} failed; messages expected {expected}, delivered {delivered}, duplicated {duplicated}",
        snapshot.calls.len()
    );
    assert!(
        failed_calls >= 5,
        "the faults were exercised: {failed_calls}"
    );
    assert_eq!((delivered, duplicated), (expected, 0));
    let root = &snapshot.top_level("#incidents")[0];
    assert_eq!(headline(&root.text), RESOLVED, "the root ends RESOLVED");
}

/// A fixed xorshift sequence: the moments of the kill tests, the same on every run.
pub(crate) fn kill_moments() -> impl FnMut() -> u64 {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

pub(crate) fn kill(serve: &Serve) {
    let status = Command::new("kill")
        .args(["-s", "KILL", &serve.pid().to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run kill");
    assert!(status.success());
    serve.wait_for("the killed process to exit", || serve.exited().map(|_| ()));
}

/// SIGKILL at random points, 100 times, while an incident fires and reminds every second:
/// no message lost, none duplicated.
#[test]
fn slack_survives_100_sigkills_without_loss_or_duplicates() {
    let slack = FakeSlack::start(TOKEN);
    // A slow Slack widens the window between a request and its acknowledgement.
    slack.latency(Duration::from_millis(80));
    let live = setup(BURNING, "1s", &slack_notify(&slack));
    let config = live.setup.config();
    let state = live.setup.state();
    let mut random = kill_moments();
    let mut recovered = 0;
    for round in 0..100 {
        let serve = Serve::start(&config, &state);
        // Up to 1.8s: before, during and after evaluations and deliveries.
        sleep(Duration::from_millis(random() % 1_800));
        kill(&serve);
        recovered += serve
            .stderr()
            .matches("found the message of an earlier attempt")
            .count();
        if round == 70 {
            live.target.set_error_ratio(0.0);
        }
    }
    let serve = Serve::start(&config, &state);
    let rows = resolved_and_drained(&slack, &serve);
    let snapshot = slack.snapshot();
    let (expected, delivered, duplicated) = exactly_once(&snapshot, &rows);
    eprintln!(
        "100 SIGKILLs: messages expected {expected}, delivered {delivered}, duplicated {duplicated}; \
         {recovered} in-flight messages found by key after a kill"
    );
    assert_eq!((delivered, duplicated), (expected, 0));
    assert_eq!(
        snapshot.top_level("#incidents").len(),
        1,
        "one incident, one root"
    );
    assert!(expected >= 10, "the incident produced messages: {expected}");
}

/// Sets burnwatch's file size limit (`RLIMIT_FSIZE`, soft): `Some(0)` makes every write to a
/// file fail at once with `EFBIG`, which SQLite reports as an I/O error, as a full disk fails
/// writes; `None` lifts it to the hard limit. A process may set its own child's limits: no
/// privileges needed.
fn limit_file_size(pid: u32, limit: Option<u64>) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on valid pointers.
    let read = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(read, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: limit.map_or(old.rlim_max, |limit| limit.min(old.rlim_max)),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Issue 10 item 10: with the outbox failing (every write refused at once, as on a full disk)
/// while rows are due, the delivery workers used to loop without a pause, logging two errors
/// per row. Now they back off (100 ms doubling), count the failures on /metrics, show the
/// wait, and once the store works again every notification goes out exactly once, in order.
#[test]
fn store_failures_back_off_and_lose_nothing() {
    // Beyond its file size limit a process gets SIGXFSZ, which would kill burnwatch; ignored
    // here, it stays ignored in the burnwatch this test starts (ignored signals survive exec).
    // SAFETY: sets a signal to be ignored, no handler.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let slack = FakeSlack::start(TOKEN);
    let hook = Webhook::start();
    // Both receivers fail at first, so rows wait in the outbox, due again within seconds.
    slack.fail_share(1.0, 11);
    hook.fail(true);
    let live = setup(
        BURNING,
        "1s",
        &format!(
            "{}  webhooks:\n    - name: ops\n      url_file: hook-url\n",
            slack_notify(&slack)
        ),
    );
    std::fs::write(live.setup.dir.path().join("hook-url"), hook.url()).expect("write");
    let serve = live.setup.serve();
    serve.wait_ready();
    let rows = |sink: &str| -> Vec<Value> {
        serve.json("/api/v1/outbox")["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|row| row["sink"] == sink)
            .collect()
    };
    serve.wait_for("failed attempts in Slack and at the webhook", || {
        let tried = |sink: &str| {
            rows(sink)
                .iter()
                .any(|row| row["attempts"].as_i64() >= Some(1))
        };
        (tried("slack") && tried("webhook:ops")).then_some(())
    });
    let store_errors = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with("burnwatch_store_errors_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deliver_errors = |log: &str| {
        log.lines()
            .filter(|line| line.contains(" ERROR burnwatch::notify::deliver"))
            .count()
    };

    // The outbox fails for 6 s, while the receivers are back and the rows fall due.
    limit_file_size(serve.pid(), Some(0));
    let (_, metrics_before) = serve.get("/metrics");
    let log_before = serve.stderr().len();
    let calls_before = slack.calls().len();
    let hooks_before = hook.received().len();
    slack.clear_faults();
    hook.fail(false);
    let held = Duration::from_secs(6);
    sleep(held);
    let (_, metrics_during) = serve.get("/metrics");
    let log_during = serve.stderr()[log_before..].to_string();
    let calls_during = slack.calls().len() - calls_before;
    let hooks_during = hook.received().len() - hooks_before;
    limit_file_size(serve.pid(), None);
    serve.assert_running();

    let errors = deliver_errors(&log_during);
    let counted = store_errors(&metrics_during) - store_errors(&metrics_before);
    let webhook_backoff = metric(
        &metrics_during,
        "burnwatch_delivery_store_backoff_seconds",
        &[("sink", "webhook")],
    );
    eprintln!(
        "outbox failing for {held:?}: {errors} delivery error lines ({:.1}/s), {counted} store \
         errors counted, webhook worker waiting {webhook_backoff:?} s, {calls_during} Slack calls, \
         {hooks_during} webhook requests",
        errors as f64 / held.as_secs_f64()
    );
    assert!(
        errors <= 30,
        "{errors} delivery error lines in {held:?}: the workers spin\n{}",
        log_during.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    // Sent, but "delivered" could not be written: kept in memory, not sent again.
    assert!(
        hooks_during <= 1,
        "{hooks_during} webhook requests: re-sent"
    );
    assert!(
        (1.0..=30.0).contains(&counted),
        "store errors counted on /metrics: {counted}"
    );
    assert!(
        webhook_backoff.is_some_and(|wait| wait >= 0.4),
        "the webhook worker shows its wait: {webhook_backoff:?}"
    );

    // The store works again: everything is delivered, once, in order.
    live.target.set_error_ratio(0.0);
    let slack_rows = resolved_and_drained(&slack, &serve);
    let snapshot = slack.snapshot();
    let (expected, delivered, duplicated) = exactly_once(&snapshot, &slack_rows);
    eprintln!(
        "after the outbox recovered: Slack messages expected {expected}, delivered {delivered}, duplicated {duplicated}"
    );
    assert_eq!((delivered, duplicated), (expected, 0));
    assert_eq!(
        snapshot.top_level("#incidents").len(),
        1,
        "one incident, one root"
    );
    let hooks = serve.wait_for("the webhook rows delivered", || {
        let rows = rows("webhook:ops");
        all_delivered(&rows).then_some(rows)
    });
    // Firing, the reminders (repeat_interval 1s), resolved: one document per row.
    let changes: Vec<String> = hook
        .received()
        .iter()
        .map(|document| document["change"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        changes.len(),
        hooks.len(),
        "one document per row: {changes:?}"
    );
    assert_eq!(
        changes.first().map(String::as_str),
        Some("firing"),
        "{changes:?}"
    );
    assert_eq!(
        changes.last().map(String::as_str),
        Some("resolved"),
        "{changes:?}"
    );
    let (_, metrics_after) = serve.get("/metrics");
    assert_eq!(
        metric(
            &metrics_after,
            "burnwatch_delivery_store_backoff_seconds",
            &[("sink", "webhook")],
        ),
        Some(0.0),
        "the wait ends with the failures"
    );
}

/// Alertmanager v2 with its own routing: firing with labels, annotations and generatorURL,
/// kept active by re-sends (endsAt ahead), then resolved with endsAt; a generic webhook gets the
/// same changes with an Idempotency-Key; a Slack incoming webhook one message per change.
#[test]
fn alertmanager_webhook_and_slack_incoming_webhook() {
    for version in AM_VERSIONS {
        alertmanager_webhook_and_slack_incoming_webhook_on(version);
    }
}

fn alertmanager_webhook_and_slack_incoming_webhook_on(version: AmVersion) {
    let alertmanager = Alertmanager::start_version(version);
    let slack = FakeSlack::start(TOKEN);
    let live = live(0.0, false);
    live.setup.write_spec(&spec("1h"));
    let dir = live.setup.dir.path();
    std::fs::write(dir.join("hook-url"), alertmanager.webhook_url()).expect("write");
    std::fs::write(dir.join("slack-webhook"), slack.webhook_url()).expect("write");
    let config = std::fs::read_to_string(live.setup.config()).expect("read config");
    std::fs::write(
        live.setup.config(),
        format!(
            "{config}web:\n  external_url: http://burnwatch.example.com\nnotify:\n  \
             slack:\n    webhook_url_file: slack-webhook\n  \
             alertmanager:\n    url: {}\n    resend_interval: 1s\n  \
             webhooks:\n    - name: ops\n      url_file: hook-url\n",
            alertmanager.url()
        ),
    )
    .expect("write config");
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    let firing = alertmanager.wait_for_notification("a firing notification", WAIT, |all| {
        all.iter()
            .any(|n| n["version"] == "4" && n["status"] == "firing")
    });
    let notification = firing.iter().find(|n| n["version"] == "4").expect("am");
    let alert = &notification["alerts"][0];
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["tier"], "page");
    assert_eq!(alert["labels"]["route"], "POST /orders");
    assert_eq!(
        alert["labels"]["sloth_id"],
        "order-service-requests-availability"
    );
    // As Sloth's page alert rule labels it, so routes and silences written for Sloth match.
    assert_eq!(alert["labels"]["sloth_severity"], "page");
    for tier in ["page", "ticket"] {
        let matching = alertmanager.alerts_matching(&[&format!("sloth_severity=\"{tier}\"")]);
        assert!(
            matching.iter().all(|alert| alert["labels"]["tier"] == tier),
            "{matching:?}"
        );
        assert!(
            tier == "ticket" || !matching.is_empty(),
            "no {tier}: {matching:?}"
        );
    }
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://runbooks.example.com/order-service/availability"
    );
    assert_eq!(
        alert["generatorURL"],
        "http://burnwatch.example.com/api/v1/slos?slo=order-service-requests-availability"
    );
    // Re-sent while firing: each send says valid for four resend intervals (4s), so after 6s
    // only re-sends keep Alertmanager's endsAt ahead of now.
    sleep(Duration::from_secs(6));
    let active = alertmanager.alerts();
    let ends_at = active[0]["endsAt"].as_str().expect("endsAt");
    let ends_at = burnwatch::replay::parse_time(ends_at).expect("time");
    assert!(
        ends_at > wall_ms(),
        "endsAt {ends_at} has passed: not re-sent"
    );
    assert!(
        active[0]["annotations"]["description"]
            .as_str()
            .is_some_and(|text| text.contains("Burning")),
        "re-sends keep the figures: {}",
        active[0]
    );

    live.target.set_error_ratio(0.0);
    let all = alertmanager.wait_for_notification("a resolved notification", WAIT, |all| {
        all.iter()
            .any(|n| n["version"] == "4" && n["status"] == "resolved")
    });
    let resolved = all
        .iter()
        .find(|n| n["version"] == "4" && n["status"] == "resolved")
        .expect("resolved");
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    // The generic webhook: our document, firing then resolved, in order.
    let ours: Vec<&Value> = all.iter().filter(|n| n["version"] == "1").collect();
    let changes: Vec<&str> = ours.iter().map(|n| n["change"].as_str().unwrap()).collect();
    assert_eq!(changes, ["firing", "resolved"], "{ours:?}");
    assert_eq!(ours[0]["slo"]["id"], "order-service-requests-availability");
    assert!(ours[0]["windows"]["burn_rate_long"].as_f64().unwrap() > 10.0);

    // The Slack incoming webhook: one message per change, no updates.
    let snapshot = slack.wait_for("two webhook messages", WAIT, |s| {
        s.messages.iter().filter(|m| m.webhook).count() >= 2
    });
    let texts: Vec<&str> = snapshot
        .messages
        .iter()
        .filter(|m| m.webhook)
        .map(|m| headline(&m.text))
        .collect();
    assert_eq!(texts, [CRITICAL, RESOLVED]);
    assert!(snapshot.calls_to("chat.update").is_empty());
    let (_, metrics) = serve.get("/metrics");
    for secret in [slack.webhook_url(), alertmanager.webhook_url()] {
        for text in [serve.stdout(), serve.stderr(), metrics.clone()] {
            assert!(!text.contains(&secret), "a webhook URL shows: {text}");
        }
    }
}

/// Adds a silence through the API (JSON, as any client must); returns its id.
fn add_silence(serve: &Serve, matchers: Value, comment: &str) -> String {
    let body = serde_json::json!({
        "matchers": matchers,
        "endsAt": burnwatch::replay::format_time(wall_ms() + 3_600_000),
        "comment": comment,
        "createdBy": "sre@example.com",
    });
    let (status, answer) = serve.request(
        serve.http().post(serve.url("/api/v1/silences")).json(&body),
        "add a silence",
    );
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str::<Value>(&answer).expect("json")["silenceID"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Regression: a silence added while a page fired dropped it from the Alertmanager re-sends,
/// so Alertmanager let it lapse and told its receivers (PagerDuty) the burn was over. A
/// silence mutes burnwatch's own notifications; Alertmanager keeps the alert active.
#[test]
fn a_silence_does_not_resolve_the_alert_at_alertmanager() {
    for version in AM_VERSIONS {
        a_silence_does_not_resolve_the_alert_at(version);
    }
}

fn a_silence_does_not_resolve_the_alert_at(version: AmVersion) {
    let alertmanager = Alertmanager::start_version(version);
    let live = live(0.0, false);
    live.setup.write_spec(&spec("1h"));
    let config = std::fs::read_to_string(live.setup.config()).expect("read config");
    std::fs::write(
        live.setup.config(),
        format!(
            "{config}notify:\n  alertmanager:\n    url: {}\n    resend_interval: 1s\n",
            alertmanager.url()
        ),
    )
    .expect("write config");
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    alertmanager.wait_for_alerts("the page active at Alertmanager", WAIT, |alerts| {
        alerts.iter().any(|alert| alert["labels"]["tier"] == "page")
    });
    add_silence(
        &serve,
        serde_json::json!(["tier=\"page\""]),
        "known incident, muted while we work on it",
    );
    // Each send is valid for four resend intervals (4s): after 8s only re-sends keep it.
    sleep(Duration::from_secs(8));
    let active = alertmanager.alerts();
    let page = active
        .iter()
        .find(|alert| alert["labels"]["tier"] == "page")
        .unwrap_or_else(|| panic!("the page lapsed at Alertmanager: {active:?}"));
    let ends_at =
        burnwatch::replay::parse_time(page["endsAt"].as_str().expect("endsAt")).expect("time");
    assert!(ends_at > wall_ms(), "endsAt {ends_at} has passed: {page}");
    assert!(
        !alertmanager
            .notifications()
            .iter()
            .any(|n| n["status"] == "resolved"),
        "Alertmanager's receivers heard a resolution: {:?}",
        alertmanager.notifications()
    );
    assert!(serve.firing_page().is_some());
}

/// A silence added through the API keeps the page out of Slack; expiring it lets the next
/// reminder open the incident thread.
#[test]
fn silences_hold_notifications_until_they_expire() {
    let slack = FakeSlack::start(TOKEN);
    let live = setup(0.0, "2s", &slack_notify(&slack));
    let serve = live.setup.serve();
    serve.wait_ready();
    let id = add_silence(
        &serve,
        serde_json::json!(["service=\"order-service\"", {"name": "tier", "value": "page"}]),
        "planned failover",
    );
    let listed = serve.json("/api/v1/silences");
    assert_eq!(
        listed["silences"][0]["matchers"][1], "tier=\"page\"",
        "{listed}"
    );

    live.target.set_error_ratio(BURNING);
    serve.wait_for("the page firing", || serve.firing_page());
    serve.wait_for("a silenced change on /metrics", || {
        metric(
            &serve.get("/metrics").1,
            "burnwatch_notifications_silenced_total",
            &[],
        )
        .filter(|count| *count >= 2.0)
    });
    assert!(
        slack.messages().is_empty(),
        "silenced, yet Slack got {:?}",
        slack.messages()
    );

    let (status, answer) = serve.request(
        serve
            .http()
            .delete(serve.url(&format!("/api/v1/silences/{id}"))),
        "expire the silence",
    );
    assert_eq!(status, 200, "{answer}");
    let snapshot = slack.wait_for("the incident opened by a reminder", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    assert_eq!(
        headline(&snapshot.top_level("#incidents")[0].text),
        CRITICAL
    );
    let (status, _) = serve.request(
        serve
            .http()
            .post(serve.url("/api/v1/silences"))
            .json(&serde_json::json!({"matchers": [], "endsAt": burnwatch::replay::format_time(wall_ms() + 3_600_000)})),
        "an empty silence",
    );
    assert_eq!(status, 400);
}

/// Three SLOs page in the same evaluation: their roots go to #incidents about a second apart
/// (a Slack that enforces one message per second per channel never says 429), and an injected
/// 429 with `Retry-After: 2` holds the channel for two seconds.
#[test]
fn slack_paces_a_channel_and_honours_retry_after() {
    let slack = FakeSlack::start(TOKEN);
    slack.rate_limit_per_channel(1.0);
    slack.next_errors(vec![Fault::RateLimited {
        retry_after_secs: 2,
    }]);
    let live = setup(0.0, "1h", &slack_notify(&slack));
    live.setup.write_spec(&crate::serve::many_slos(
        &spec("1h"),
        &["checkout", "payments", "search"],
    ));
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    let snapshot = slack.wait_for("three roots in #incidents", WAIT, |s| {
        s.top_level("#incidents").len() >= 3
    });
    let posts: Vec<_> = snapshot.calls_to("chat.postMessage");
    let limited: Vec<_> = posts
        .iter()
        .filter(|call| call.error.as_deref() == Some("ratelimited"))
        .collect();
    assert_eq!(limited.len(), 1, "only the injected 429: {posts:?}");
    assert!(
        limited[0].fault.is_some(),
        "Slack's own limiter never tripped: {posts:?}"
    );
    let accepted: Vec<Instant> = posts
        .iter()
        .filter(|call| call.ok())
        .map(|call| call.at)
        .collect();
    assert_eq!(accepted.len(), 3);
    assert!(
        accepted[0].duration_since(limited[0].at) >= Duration::from_millis(1_900),
        "Retry-After: 2 was not honoured"
    );
    for pair in accepted.windows(2) {
        assert!(
            pair[1].duration_since(pair[0]) >= Duration::from_millis(900),
            "posts to one channel less than a second apart"
        );
    }
}

/// Regression: after a dropped connection, the rows behind the failed one went to the channel
/// at once (four roots within 11 ms). Every attempt, failed or not, keeps about a second from
/// the last one in its channel, retries and in-flight lookups included, and a Slack that
/// enforces one message per second per channel never says 429.
#[test]
fn slack_keeps_a_channels_pace_after_dropped_connections() {
    let slack = FakeSlack::start(TOKEN);
    slack.rate_limit_per_channel(1.0);
    slack.next_errors(vec![Fault::DropAfterEffect, Fault::DropBeforeEffect]);
    let live = setup(0.0, "1h", &slack_notify(&slack));
    live.setup.write_spec(&crate::serve::many_slos(
        &spec("1h"),
        &["checkout", "payments", "search", "shipping"],
    ));
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    let snapshot = slack.wait_for("four roots in #incidents", WAIT, |s| {
        s.top_level("#incidents").len() >= 4
    });
    sleep(Duration::from_secs(3));
    let snapshot_after = slack.snapshot();
    assert_eq!(
        snapshot_after.top_level("#incidents").len(),
        4,
        "one root per SLO, none posted twice"
    );
    let posts = snapshot.calls_to("chat.postMessage");
    assert_eq!(
        posts.first().and_then(|call| call.fault),
        Some(Fault::DropAfterEffect),
        "the first root's connection was dropped after it posted"
    );
    // The second drop hits the next call, whichever it is (the next root, or the lookup of
    // the first one).
    assert!(
        snapshot
            .calls
            .iter()
            .any(|call| call.fault == Some(Fault::DropBeforeEffect)),
        "the second drop was injected"
    );
    assert!(
        posts
            .iter()
            .all(|call| call.error.as_deref() != Some("ratelimited")),
        "Slack's per-channel limiter tripped: {posts:?}"
    );
    for pair in posts.windows(2) {
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(900),
            "two posts to #incidents {:?} apart: {posts:?}",
            pair[1].at.duration_since(pair[0].at)
        );
    }
    assert!(serve.exited().is_none());
}

/// `burnwatch demo` with a Slack token posts the seed incident for real: the CRITICAL root,
/// updated to RESOLVED, with the resolution in its thread.
#[test]
fn demo_posts_the_seed_incident_to_slack() {
    let slack = FakeSlack::start(TOKEN);
    slack.fail_share(0.3, 11);
    let output = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(["demo", "--no-wait", "--slack-api-url", &slack.api_url()])
        .env("SLACK_BOT_TOKEN", TOKEN)
        .output()
        .expect("run burnwatch demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("every message was delivered to Slack"),
        "{stdout}"
    );
    let snapshot = slack.snapshot();
    let roots = snapshot.top_level("#incidents");
    assert_eq!(roots.len(), 1, "{snapshot}");
    assert_eq!(headline(&roots[0].text), RESOLVED);
    assert_eq!(roots[0].edits.len(), 1);
    assert!(roots[0].edits[0].starts_with(CRITICAL));
    // The thread: the root, then the resolution.
    let thread = snapshot.thread("#incidents", &roots[0].ts);
    assert_eq!(
        thread
            .iter()
            .skip(1)
            .map(|m| headline(&m.text))
            .collect::<Vec<_>>(),
        [RESOLVED]
    );
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
}

/// Prometheus goes away: after `stale_after` the on-call channel hears that evaluation is
/// stale (alerts are held); when Prometheus is back, the same message turns RESOLVED.
#[test]
fn slack_hears_when_evaluation_goes_stale_and_recovers() {
    let slack = FakeSlack::start(TOKEN);
    let mut live = setup(0.0, "1h", &slack_notify(&slack));
    let config = std::fs::read_to_string(live.setup.config()).expect("read config");
    std::fs::write(
        live.setup.config(),
        config.replace("stale_after: 1h", "stale_after: 3s"),
    )
    .expect("write config");
    let serve = live.setup.serve();
    serve.wait_ready();
    live.prom.stop();
    let snapshot = slack.wait_for("the stale message in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let root = snapshot.top_level("#incidents")[0].clone();
    assert_eq!(headline(&root.text), "CRITICAL: burnwatch evaluation stale");
    assert!(root.text.contains("alerts are held"), "{}", root.text);
    live.prom.restart();
    slack.wait_for("the stale message resolved in place", WAIT, |s| {
        s.message(&root.ts)
            .is_some_and(|m| headline(&m.text) == "RESOLVED: burnwatch evaluation stale")
            && s.thread("#incidents", &root.ts).len() == 2
    });
}

/// The seed incident end to end: its recording backfilled into a real Prometheus 3, `serve`
/// rehearsing that past at 60× speed, Slack hearing it: the CRITICAL root in #incidents with
/// the very figures `burnwatch demo` (a replay of the same recording) shows, turned RESOLVED in
/// place after resolve_timeout (5m), with the resolution in its thread. The rehearsal is
/// killed mid-incident and resumed from its own state dir (regression: a crashed rehearsal was
/// refused and left the root saying CRITICAL); another `--rehearse-from` on that dir is
/// refused, naming the one to resume.
#[test]
fn slack_hears_the_seed_incident_rehearsed_from_prometheus() {
    use burnwatch::demo;
    let slack = FakeSlack::start(TOKEN);
    // Prometheus 3, whose window arithmetic the demo follows by default: serve detects it.
    let prom = crate::prom::Prometheus::start_version(
        crate::prom::Version::V3_16,
        &demo::recording_text(),
    );
    let dir = tempfile::Builder::new()
        .prefix("burnwatch-rehearsal-")
        .tempdir()
        .expect("temp dir");
    std::fs::write(dir.path().join("slack-token"), TOKEN).expect("write token");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/order-service.yaml");
    std::fs::write(
        dir.path().join("burnwatch.yaml"),
        format!(
            "prometheus:\n  url: {}\nevaluation_interval: 30s\nrules:\n  - {}\nnotify:\n{}",
            prom.url(),
            rules.display(),
            slack_notify(&slack)
        ),
    )
    .expect("write config");
    let from = (demo::BURST_START - 600).to_string();
    let rehearse = || {
        Serve::start_with(
            &dir.path().join("burnwatch.yaml"),
            &dir.path().join("state"),
            &["--rehearse-from", &from, "--speed", "60"],
        )
    };
    let serve = rehearse();
    let snapshot = slack.wait_for("the CRITICAL root in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let root = snapshot.top_level("#incidents")[0].clone();
    assert_eq!(headline(&root.text), CRITICAL, "{}", root.text);
    kill(&serve);
    drop(serve);

    let other = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("burnwatch.yaml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--listen", "127.0.0.1:0", "--rehearse-from"])
        .arg((demo::BURST_START - 7200).to_string())
        .output()
        .expect("run serve");
    let refusal = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        refusal.contains(&format!(
            "holds a rehearsal from {}: resume it with --rehearse-from {}",
            burnwatch::replay::format_time((demo::BURST_START - 600) * 1000),
            burnwatch::replay::format_time((demo::BURST_START - 600) * 1000)
        )),
        "{refusal}"
    );

    let serve = rehearse();
    serve.wait_for("the rehearsal to resume", || {
        serve
            .stderr()
            .contains("resuming the rehearsal")
            .then_some(())
    });

    // The same figures as the demo's replay of the recording.
    let demo = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(["demo", "--no-wait"])
        .output()
        .expect("run demo");
    let demo = String::from_utf8_lossy(&demo.stdout);
    let burning = demo
        .lines()
        .find(|line| line.starts_with("│ *Burning*"))
        .expect("the demo's Burning line")
        .trim_start_matches("│ ");
    let blocks = root.blocks.to_string();
    assert!(blocks.contains(burning), "{burning:?} not in {blocks}");

    let snapshot = slack.wait_for("the root turned RESOLVED, with a reply", WAIT, |s| {
        s.message(&root.ts)
            .is_some_and(|m| headline(&m.text) == RESOLVED)
            && s.thread("#incidents", &root.ts).len() == 2
    });
    let resolved = snapshot.message(&root.ts).expect("root");
    let recovered = demo
        .lines()
        .find(|line| line.starts_with("│ *Recovered*"))
        .expect("the demo's Recovered line")
        .trim_start_matches("│ *Recovered* ");
    assert!(
        resolved.text.contains(recovered),
        "{recovered:?} not in {}",
        resolved.text
    );
    assert_eq!(
        snapshot.top_level("#incidents").len(),
        1,
        "the resumed rehearsal posted a second root"
    );
    assert!(serve.exited().is_none());
}

const ENDED: &str = "ENDED: Fast error budget burn on order-service";

/// Regression (issue 10): an instance that vanished while firing (here its route relabelled,
/// as label churn or a changed relabel rule does) kept its page firing for ever: its Slack
/// root open, its Alertmanager alert re-sent. Now, without data for `resolve_timeout`, it
/// ends everywhere, saying why; the same under both strategies.
#[test]
fn an_instance_that_vanishes_while_firing_ends_everywhere() {
    // Each strategy against one Alertmanager version: both versions are covered.
    for (strategy, version) in [
        ("query", AmVersion::V0_25),
        ("incremental", AmVersion::V0_35),
    ] {
        vanishing_instance_ends_everywhere(strategy, version);
    }
}

fn vanishing_instance_ends_everywhere(strategy: &str, version: AmVersion) {
    let alertmanager = Alertmanager::start_version(version);
    let slack = FakeSlack::start(TOKEN);
    let notify = format!(
        "{}  alertmanager:\n    url: {}\n    resend_interval: 1s\n  \
         webhooks:\n    - name: ops\n      url_file: hook-url\n",
        slack_notify(&slack),
        alertmanager.url()
    );
    let live = setup(0.0, "1h", &notify);
    let dir = live.setup.dir.path();
    std::fs::write(dir.join("hook-url"), alertmanager.webhook_url()).expect("write");
    let config = std::fs::read_to_string(live.setup.config()).expect("read config");
    std::fs::write(
        live.setup.config(),
        config.replace("strategy: query", &format!("strategy: {strategy}")),
    )
    .expect("write config");
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    let snapshot = slack.wait_for("the CRITICAL root in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let root = snapshot.top_level("#incidents")[0].clone();
    assert_eq!(headline(&root.text), CRITICAL, "{strategy}: {}", root.text);
    alertmanager.wait_for_notification("a firing notification", WAIT, |all| {
        all.iter()
            .any(|n| n["version"] == "4" && n["status"] == "firing")
    });

    // The old route's series vanish; the new route's are healthy.
    live.target.set_route("POST /orders/v2");
    live.target.set_error_ratio(0.0);
    let snapshot = slack.wait_for("the root updated to ENDED", WAIT, |s| {
        s.message(&root.ts)
            .is_some_and(|message| headline(&message.text) == ENDED)
    });
    let ended = snapshot.message(&root.ts).expect("root");
    assert!(
        ended.text.contains("No data since") && ended.text.contains("vanished"),
        "{strategy}: {}",
        ended.text
    );
    assert!(!ended.text.contains("NaN"), "{strategy}: {}", ended.text);
    slack.wait_for("the ENDED reply in the thread", WAIT, |s| {
        s.thread("#incidents", &root.ts)
            .iter()
            .any(|reply| headline(&reply.text) == ENDED)
    });
    let all = alertmanager.wait_for_notification("a resolved notification", WAIT, |all| {
        all.iter()
            .any(|n| n["version"] == "4" && n["status"] == "resolved")
    });
    let resolved = all
        .iter()
        .find(|n| n["version"] == "4" && n["status"] == "resolved")
        .expect("resolved");
    assert_eq!(
        resolved["alerts"][0]["labels"]["route"], ROUTE,
        "{resolved}"
    );
    assert_eq!(
        resolved["alerts"][0]["annotations"]["end_reason"], "no_data",
        "{resolved}"
    );
    let documents: Vec<&Value> = all.iter().filter(|n| n["version"] == "1").collect();
    let changes: Vec<(&str, &Value)> = documents
        .iter()
        .map(|n| (n["change"].as_str().unwrap(), &n["end_reason"]))
        .collect();
    assert_eq!(
        changes,
        [
            ("firing", &Value::Null),
            ("resolved", &Value::from("no_data"))
        ],
        "{strategy}: {documents:?}"
    );
    assert_eq!(documents[1]["instance"]["route"], ROUTE);
    // Nothing of the old instance is held; the new one never paged.
    serve.wait_for("no alert held", || serve.alerts().is_empty().then_some(()));
    let snapshot = slack.snapshot();
    assert_eq!(snapshot.top_level("#incidents").len(), 1, "{strategy}");
    assert!(
        snapshot
            .messages
            .iter()
            .all(|m| headline(&m.text) != STILL_FIRING),
        "{strategy}: no reminders"
    );
}

/// Regression (issue 10): a reload matched alert state by SLO id alone, so a changed
/// `group_by` left the old instance's page firing for ever. The reload retires it (its root
/// says why) and the new instances page on their own.
#[test]
fn a_reload_that_changes_group_by_ends_the_old_instances_page() {
    let slack = FakeSlack::start(TOKEN);
    let live = setup(0.0, "1h", &slack_notify(&slack));
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    let snapshot = slack.wait_for("the CRITICAL root in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let root = snapshot.top_level("#incidents")[0].clone();
    live.setup
        .write_spec(&spec("1h").replace("group_by: [route]", "group_by: [route, job]"));
    serve.signal("HUP");
    let snapshot = slack.wait_for("the old root ENDED and a new root", WAIT, |s| {
        s.message(&root.ts)
            .is_some_and(|message| headline(&message.text) == ENDED)
            && s.top_level("#incidents").len() == 2
    });
    let ended = snapshot.message(&root.ts).expect("root");
    assert!(ended.text.contains("group_by changed"), "{}", ended.text);
    let new_root = snapshot.top_level("#incidents")[1].clone();
    assert_eq!(headline(&new_root.text), CRITICAL, "{}", new_root.text);
    assert!(
        new_root.text.contains(&format!("job=\"{SCRAPE_JOB}\"")),
        "{}",
        new_root.text
    );
    let alerts = serve.alerts();
    assert_eq!(alerts.len(), 1, "only the new instance is held: {alerts:?}");
    assert_eq!(alerts[0]["labels"]["job"], SCRAPE_JOB, "{alerts:?}");
    live.target.set_error_ratio(0.0);
    slack.wait_for("the new root RESOLVED", WAIT, |s| {
        s.message(&new_root.ts)
            .is_some_and(|message| headline(&message.text) == RESOLVED)
    });
}

/// Regression (hardening): an SLO removed from the config while burnwatch was down had its
/// firing alerts dropped at start, not ended: Slack's root said ENDED, but the webhook heard
/// nothing and Alertmanager's alert only lapsed at its expiry. At start, every sink hears the
/// end, as an online reload tells it: Alertmanager and the webhook with `end_reason:
/// slo_removed`.
#[test]
fn an_slo_removed_while_down_ends_in_every_sink() {
    let alertmanager = Alertmanager::start_version(AmVersion::V0_35);
    let slack = FakeSlack::start(TOKEN);
    let notify = format!(
        "{}  alertmanager:\n    url: {}\n    resend_interval: 1s\n  \
         webhooks:\n    - name: ops\n      url_file: hook-url\n",
        slack_notify(&slack),
        alertmanager.url()
    );
    let live = setup(0.0, "1h", &notify);
    std::fs::write(
        live.setup.dir.path().join("hook-url"),
        alertmanager.webhook_url(),
    )
    .expect("write");
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    let snapshot = slack.wait_for("the CRITICAL root in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let root = snapshot.top_level("#incidents")[0].clone();
    alertmanager.wait_for_notification("a firing webhook document", WAIT, |all| {
        all.iter()
            .any(|n| n["version"] == "1" && n["status"] == "firing")
    });
    let status = serve.stop("TERM");
    assert!(status.success(), "{}", serve.diagnostics());
    drop(serve);

    // The SLO is renamed while burnwatch is down: the old one is gone.
    live.setup.write_spec(&spec("1h").replace(
        "name: requests-availability",
        "name: requests-availability-v2",
    ));
    let serve = live.setup.serve();
    serve.wait_ready();
    slack.wait_for("the old root ENDED", WAIT, |s| {
        s.message(&root.ts)
            .is_some_and(|message| message.text.contains("is no longer evaluated"))
    });
    let all = alertmanager.wait_for_notification("the alert resolved", WAIT, |all| {
        all.iter().any(|n| {
            n["version"] == "4"
                && n["status"] == "resolved"
                && n["alerts"][0]["labels"]["slo"] == "requests-availability"
        })
    });
    let resolved = all
        .iter()
        .find(|n| n["version"] == "4" && n["status"] == "resolved")
        .expect("resolved");
    assert_eq!(
        resolved["alerts"][0]["annotations"]["end_reason"], "slo_removed",
        "{resolved}"
    );
    let documents: Vec<&Value> = all
        .iter()
        .filter(|n| n["version"] == "1" && n["slo"]["name"] == "requests-availability")
        .collect();
    let changes: Vec<(&str, &Value)> = documents
        .iter()
        .map(|n| (n["change"].as_str().unwrap(), &n["end_reason"]))
        .collect();
    assert_eq!(
        changes,
        [
            ("firing", &Value::Null),
            ("resolved", &Value::from("slo_removed"))
        ],
        "{documents:?}"
    );
    // Started again, nothing is sent twice.
    let status = serve.stop("TERM");
    assert!(status.success(), "{}", serve.diagnostics());
    drop(serve);
    let serve = live.setup.serve();
    serve.wait_ready();
    serve.wait_evaluations(3);
    let again = alertmanager.notifications();
    assert_eq!(
        again
            .iter()
            .filter(|n| n["version"] == "1" && n["end_reason"] == "slo_removed")
            .count(),
        1
    );
}

/// Regression (hardening): after a restart (or a change of leader) the re-sends that keep a
/// firing alert active at Alertmanager carried no figures (the payloads were remembered in
/// the process only): Alertmanager's alert lost its `burn_rate` and summary until the next
/// change. The payloads are read back from the outbox.
#[test]
fn alertmanager_resends_keep_their_figures_across_a_restart() {
    let alertmanager = Alertmanager::start_version(AmVersion::V0_35);
    let notify = format!(
        "  alertmanager:\n    url: {}\n    resend_interval: 1s\n",
        alertmanager.url()
    );
    let live = setup(0.0, "1h", &notify);
    let serve = live.setup.serve();
    serve.wait_ready();
    live.target.set_error_ratio(BURNING);
    let figures = |alerts: &[Value]| {
        alerts
            .iter()
            .find(|alert| alert["labels"]["slo"] == "requests-availability")
            .map(|alert| alert["annotations"]["burn_rate"].clone())
    };
    alertmanager.wait_for_alerts("the firing alert with its figures", WAIT, |alerts| {
        figures(alerts).is_some_and(|burn| burn.is_string())
    });
    let status = serve.stop("TERM");
    assert!(status.success(), "{}", serve.diagnostics());
    drop(serve);
    let serve = live.setup.serve();
    serve.wait_ready();
    // Several re-sends later (every second), the alert still carries its figures.
    serve.wait_evaluations(4);
    std::thread::sleep(Duration::from_secs(3));
    let alerts = alertmanager.alerts();
    let burn = figures(&alerts).expect("the alert is still active");
    assert!(
        burn.is_string(),
        "the re-sent alert lost its figures: {alerts:?}"
    );
}
