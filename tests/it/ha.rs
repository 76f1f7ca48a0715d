//! High availability end to end: two `burnwatch serve` replicas keeping their state in one real
//! PostgreSQL 15 (pg.rs), against a real Prometheus 2.42 scraping a live target (serve.rs),
//! notifying a fake Slack Web API (fake_slack.rs). The spec and the checks are delivery.rs's:
//! page when the error ratio over 20s and over 5s exceeds 1%, resolve after 3s, remind every
//! `repeat_interval`; every outbox row delivered exactly once, in order.
//!
//! The replicas' config adds `state: {backend: postgres, url_file: pg-url, lease: 2s}` (renewed
//! every third of it) to delivery.rs's, which evaluates every second. Each replica has its own
//! `--state-dir` (ignored on PostgreSQL). What each replica says of itself is read from
//! `GET /api/v1/status` (`ha.role`, `ha.replica`, `ha.leader`, `ha.epoch`); two replicas never
//! both say leader at the same epoch.

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::alertmanager::Alertmanager;
use crate::delivery::{
    BURNING, CRITICAL, RESOLVED, STILL_FIRING, TOKEN, WAIT, exactly_once, headline, kill,
    kill_moments, resolved_and_drained, setup, slack_notify, slack_rows,
};
use crate::fake_slack::{FakeSlack, Fault, Snapshot};
use crate::pg::Pg;
use crate::serve::{Live, PATIENCE, POLL, Serve, parse_metrics};

/// The replicas' names: their state dirs are `state-a` and `state-b`.
const NAMES: [&str; 2] = ["a", "b"];
/// The leader lease (`state.lease`).
const LEASE: Duration = Duration::from_secs(2);
/// `evaluation_interval` of delivery.rs's config.
const EVALUATION_INTERVAL: Duration = Duration::from_secs(1);
/// A killed leader's advisory lock frees at once, so its survivor takes over within a lease
/// poll (a third of the lease); the bound allows two evaluations, the whole lease and 3s for a
/// loaded CI machine.
const MAX_TAKEOVER: Duration = Duration::from_secs(7);
/// How long a `/api/v1/status` request may take: a SIGSTOPped replica accepts the connection
/// (the kernel does) and never answers.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The log lines of a takeover and of a leader giving up.
const TOOK_THE_LEASE: &str = "took the lease";
const STEPPED_DOWN: &str = "stepped down";
/// Consecutive reminders (`repeat_interval: 1s`) are planned at least that far apart. A
/// reminder planned twice, by a stale leader and its successor, sits between two others a
/// second apart, so one of its gaps is at most half a second.
const MIN_REMINDER_GAP_MS: i64 = 500;

/// Two replicas on one PostgreSQL, their Slack, Prometheus and live target. Dropped in field
/// order: the replicas are killed first.
struct Ha {
    replicas: Vec<Serve>,
    states: Vec<PathBuf>,
    config: PathBuf,
    pg: Pg,
    live: Live,
    slack: FakeSlack,
}

/// What a replica says of itself in `/api/v1/status`'s `ha`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HaView {
    replica: String,
    role: String,
    leader: Option<String>,
    epoch: i64,
    since: Option<String>,
}

impl HaView {
    fn leads(&self) -> bool {
        self.role == "leader"
    }
}

impl Ha {
    /// delivery.rs's live setup (error ratio, `repeat_interval`, Slack) on a fresh PostgreSQL,
    /// and two replicas started on it at once.
    fn start(error_ratio: f64, repeat_interval: &str) -> Ha {
        Ha::start_notifying(error_ratio, repeat_interval, "")
    }

    /// `start`, notifying `more` (YAML lines under `notify:`) besides Slack.
    fn start_notifying(error_ratio: f64, repeat_interval: &str, more: &str) -> Ha {
        let slack = FakeSlack::start(TOKEN);
        let live = setup(
            error_ratio,
            repeat_interval,
            &format!("{}{more}", slack_notify(&slack)),
        );
        let pg = Pg::start();
        let dir = live.setup.dir.path().to_path_buf();
        std::fs::write(dir.join("pg-url"), format!("{}\n", pg.url())).expect("write pg-url");
        let config = live.setup.config();
        let text = std::fs::read_to_string(&config).expect("read config");
        assert!(
            text.contains("evaluation_interval: 1s\n"),
            "delivery.rs's config evaluates every second: {text}"
        );
        std::fs::write(
            &config,
            format!(
                "{text}state:\n  backend: postgres\n  url_file: pg-url\n  lease: {}s\n",
                LEASE.as_secs()
            ),
        )
        .expect("write config");
        let states: Vec<PathBuf> = NAMES
            .iter()
            .map(|name| dir.join(format!("state-{name}")))
            .collect();
        let replicas = states
            .iter()
            .map(|state| Serve::start(&config, state))
            .collect();
        Ha {
            replicas,
            states,
            config,
            pg,
            live,
            slack,
        }
    }

    /// Starts replica `index` again, with the same config and its own state dir.
    fn restart(&mut self, index: usize) {
        self.replicas[index] = Serve::start(&self.config, &self.states[index]);
    }

    /// Each replica's stdout and stderr tail.
    fn diagnostics(&self) -> String {
        self.replicas
            .iter()
            .zip(NAMES)
            .map(|(serve, name)| {
                format!(
                    "===== replica {name} (pid {}) =====\n{}",
                    serve.pid(),
                    serve.diagnostics()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls the fake Slack until `done` holds; on timeout panics with the snapshot and both
    /// replicas' logs.
    fn wait_slack(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Snapshot) -> bool,
    ) -> Snapshot {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.slack.snapshot();
            if done(&snapshot) {
                return snapshot;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{snapshot}\n{}",
                    self.diagnostics()
                );
            }
            sleep(POLL);
        }
    }

    /// Waits until one replica says leader; returns its index and what it says. Checks on
    /// every poll that no two replicas lead at the same epoch and that all are running.
    fn leader(&self) -> (usize, HaView) {
        self.poll_views("a replica that leads", |views| {
            views
                .iter()
                .enumerate()
                .filter_map(|(index, view)| match view {
                    Ok(view) if view.leads() => Some((index, view.clone())),
                    _ => None,
                })
                .max_by_key(|(_, view)| view.epoch)
        })
    }

    /// Waits until exactly one replica leads and the other follows it at its epoch; returns
    /// the leader's index and view.
    fn agreed(&self) -> (usize, HaView) {
        self.poll_views("the replicas agreeing on one leader", |views| {
            let leaders: Vec<usize> = (0..views.len())
                .filter(|index| views[*index].as_ref().is_ok_and(HaView::leads))
                .collect();
            let [leader] = leaders[..] else { return None };
            let view = views[leader].as_ref().expect("the leader answered").clone();
            let followed = views.iter().enumerate().all(|(index, other)| {
                index == leader
                    || other.as_ref().is_ok_and(|other| {
                        other.role == "follower"
                            && other.leader.as_deref() == Some(view.replica.as_str())
                            && other.epoch == view.epoch
                    })
            });
            followed.then_some((leader, view))
        })
    }

    /// Polls every replica's view until `found` gives an answer; checks on every poll that no
    /// two replicas lead at one epoch and that all are running; panics after PATIENCE.
    fn poll_views<T>(
        &self,
        what: &str,
        mut found: impl FnMut(&[Result<HaView, String>]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let views = self.views();
            if let Some(answer) = found(&views) {
                return answer;
            }
            self.assert_running();
            if Instant::now() > deadline {
                panic!(
                    "no {what} after {PATIENCE:?}: {views:?}\n{}",
                    self.diagnostics()
                );
            }
            sleep(POLL);
        }
    }

    /// Every replica's view (or why there is none), checked for two leaders at one epoch.
    fn views(&self) -> Vec<Result<HaView, String>> {
        let views: Vec<Result<HaView, String>> = self.replicas.iter().map(ha_view).collect();
        let leaders: Vec<&HaView> = views.iter().flatten().filter(|view| view.leads()).collect();
        for (index, one) in leaders.iter().enumerate() {
            for other in &leaders[index + 1..] {
                assert!(
                    one.epoch != other.epoch,
                    "split brain: two replicas lead at epoch {}: {one:?} {other:?}\n{}",
                    one.epoch,
                    self.diagnostics()
                );
            }
        }
        views
    }

    fn assert_running(&self) {
        for (serve, name) in self.replicas.iter().zip(NAMES) {
            if let Some(status) = serve.exited() {
                panic!(
                    "replica {name} exited ({status}) but should be running\n{}",
                    self.diagnostics()
                );
            }
        }
    }
}

/// `GET /api/v1/status` as JSON, or why not (no answer within STATUS_TIMEOUT, not 200, not
/// JSON).
fn status(serve: &Serve) -> Result<Value, String> {
    let response = serve
        .http()
        .get(serve.url("/api/v1/status"))
        .timeout(STATUS_TIMEOUT)
        .send()
        .map_err(|e| format!("GET /api/v1/status: {e}"))?;
    let code = response.status().as_u16();
    let body = response
        .text()
        .map_err(|e| format!("GET /api/v1/status: reading the body: {e}"))?;
    if code != 200 {
        return Err(format!("GET /api/v1/status: {code}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET /api/v1/status: not JSON ({e}): {body}"))
}

/// The replica's `ha` in `/api/v1/status`, or why there is none. Panics on an answer that
/// breaks the interface (not the postgres backend, an unknown role, a leader naming another).
fn ha_view(serve: &Serve) -> Result<HaView, String> {
    let status = status(serve)?;
    let ha = &status["ha"];
    assert_eq!(ha["backend"], "postgres", "/api/v1/status: {status}");
    let text = |key: &str| ha[key].as_str().map(str::to_string);
    let view = HaView {
        replica: text("replica").unwrap_or_else(|| panic!("no ha.replica: {status}")),
        role: text("role").unwrap_or_else(|| panic!("no ha.role: {status}")),
        leader: text("leader"),
        epoch: ha["epoch"]
            .as_i64()
            .unwrap_or_else(|| panic!("no ha.epoch: {status}")),
        since: text("since"),
    };
    assert!(
        matches!(view.role.as_str(), "leader" | "follower"),
        "ha.role is leader or follower: {status}"
    );
    if view.leads() {
        assert_eq!(
            view.leader.as_deref(),
            Some(view.replica.as_str()),
            "a leader names itself as the leader: {status}"
        );
        assert!(view.since.is_some(), "a leader says since when: {status}");
    }
    Ok(view)
}

/// Polls `serve` every 50 ms until it says leader at an epoch above `above`; returns what it
/// says and how long that took. Panics after `patience`.
fn wait_takeover(serve: &Serve, above: i64, patience: Duration) -> (HaView, Duration) {
    let started = Instant::now();
    let mut last = Err(String::from("not asked yet"));
    while started.elapsed() < patience {
        last = ha_view(serve);
        if let Ok(view) = &last
            && view.leads()
            && view.epoch > above
        {
            return (view.clone(), started.elapsed());
        }
        serve.assert_running();
        sleep(Duration::from_millis(50));
    }
    panic!(
        "no takeover above epoch {above} within {patience:?}; the replica last said {last:?}\n{}",
        serve.diagnostics()
    );
}

/// The first sample of `name` on the replica's `/metrics`, whatever its labels.
fn ha_metric(serve: &Serve, name: &str) -> Option<f64> {
    let (code, text) = serve.get("/metrics");
    assert_eq!(code, 200, "{text}");
    parse_metrics(&text)
        .into_iter()
        .find(|(found, _, _)| found == name)
        .map(|(_, _, value)| value)
}

/// Polls `read` until it gives `want` or `patience` ends; returns the last reading.
fn settled<T: PartialEq>(patience: Duration, want: T, mut read: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + patience;
    loop {
        let value = read();
        if value == want || Instant::now() > deadline {
            return value;
        }
        sleep(POLL);
    }
}

fn reminders(snapshot: &Snapshot) -> usize {
    snapshot
        .messages
        .iter()
        .filter(|m| m.is_reply() && headline(&m.text) == STILL_FIRING)
        .count()
}

/// The incident's single root in #incidents, its thread's headlines (replies only), and the
/// root's headline history (earlier texts, then the current one).
fn incident(snapshot: &Snapshot) -> (Vec<String>, Vec<String>) {
    let roots = snapshot.top_level("#incidents");
    assert_eq!(roots.len(), 1, "one incident, one root:\n{snapshot}");
    let root = &roots[0];
    let replies = snapshot
        .thread("#incidents", &root.ts)
        .iter()
        .skip(1)
        .map(|m| headline(&m.text).to_string())
        .collect();
    let texts = root
        .edits
        .iter()
        .chain(std::iter::once(&root.text))
        .map(|text| headline(text).to_string())
        .collect();
    (replies, texts)
}

/// The incident as it must end: the root CRITICAL until it was edited to RESOLVED (never
/// RESOLVED and then CRITICAL again), its thread reminders in order then the one RESOLVED.
/// Returns the number of reminders.
fn assert_resolved_in_place(snapshot: &Snapshot) -> usize {
    let (replies, texts) = incident(snapshot);
    let (last, earlier) = texts.split_last().expect("the root's text");
    assert_eq!(last, RESOLVED, "the root ends RESOLVED: {texts:?}");
    assert!(
        earlier.iter().all(|text| text == CRITICAL),
        "the root said CRITICAL until it resolved: {texts:?}"
    );
    let (last, earlier) = replies.split_last().expect("a reply in the thread");
    assert_eq!(
        last, RESOLVED,
        "the thread ends with the resolution: {replies:?}"
    );
    assert!(
        earlier.iter().all(|text| text == STILL_FIRING),
        "only reminders before the resolution: {replies:?}"
    );
    earlier.len()
}

/// The smallest gap (ms) between consecutive reminder rows of the outbox (Slack `reply` rows,
/// by id, the last one, the resolution, left out), and the gaps.
fn reminder_gaps(rows: &[Value]) -> (Option<i64>, Vec<i64>) {
    let mut replies: Vec<(i64, i64)> = rows
        .iter()
        .filter(|row| row["kind"] == "reply")
        .map(|row| {
            (
                row["id"].as_i64().expect("id"),
                row["created_at"].as_i64().expect("created_at"),
            )
        })
        .collect();
    replies.sort();
    replies.pop();
    let gaps: Vec<i64> = replies
        .windows(2)
        .map(|pair| pair[1].1 - pair[0].1)
        .collect();
    (gaps.iter().copied().min(), gaps)
}

fn assert_reminders_not_planned_twice(rows: &[Value]) {
    let (min, gaps) = reminder_gaps(rows);
    assert!(
        min.is_none_or(|min| min >= MIN_REMINDER_GAP_MS),
        "two reminders planned {min:?} ms apart with repeat_interval 1s (one planned twice, by \
         two leaders?): gaps {gaps:?}"
    );
}

/// Two replicas, one incident: exactly one replica leads (both say which, at one epoch; the
/// leader's /metrics says `burnwatch_ha_leader 1`, the follower's 0; /-/ready names the role),
/// the follower keeps evaluating, and Slack hears the incident once: one CRITICAL root in
/// #incidents, reminders in its thread, the root edited in place to RESOLVED; every outbox row
/// (shared: both replicas list the same) delivered exactly once. Leadership does not move.
#[test]
fn ha_two_replicas_page_once_and_resolve_in_place() {
    let ha = Ha::start(0.0, "2s");
    let (leader_index, leader) = ha.agreed();
    let follower_index = 1 - leader_index;
    let (lead, follow) = (&ha.replicas[leader_index], &ha.replicas[follower_index]);
    let follower = ha_view(follow).expect("the follower answers");
    assert_ne!(
        follower.replica, leader.replica,
        "each replica has its own id"
    );
    eprintln!(
        "leader {} (replica {}), epoch {}, since {:?}; follower {}",
        leader.replica, NAMES[leader_index], leader.epoch, leader.since, follower.replica
    );

    // Both are ready and evaluate; the follower's evaluations go on.
    for serve in [lead, follow] {
        serve.wait_for("ready: true in /api/v1/status", || {
            status(serve)
                .ok()
                .filter(|status| status["ready"] == true && status["last_evaluation"].is_string())
        });
    }
    let evaluated = |serve: &Serve| {
        status(serve).ok().and_then(|status| {
            status["last_evaluation"]
                .as_str()
                .map(|at| burnwatch::replay::parse_time(at).expect("last_evaluation is a time"))
        })
    };
    let first = evaluated(follow).expect("the follower has evaluated");
    follow.wait_for("the follower's next evaluations", || {
        evaluated(follow).filter(|at| *at >= first + 2 * EVALUATION_INTERVAL.as_millis() as i64)
    });

    // /metrics and /-/ready say the role.
    let on_leader = settled(Duration::from_secs(5), Some(1.0), || {
        ha_metric(lead, "burnwatch_ha_leader")
    });
    assert_eq!(on_leader, Some(1.0), "burnwatch_ha_leader on the leader");
    let on_follower = settled(Duration::from_secs(5), Some(0.0), || {
        ha_metric(follow, "burnwatch_ha_leader")
    });
    assert_eq!(
        on_follower,
        Some(0.0),
        "burnwatch_ha_leader on the follower"
    );
    assert_eq!(
        ha_metric(lead, "burnwatch_ha_epoch"),
        Some(leader.epoch as f64),
        "burnwatch_ha_epoch on the leader"
    );
    let (code, ready) = lead.get("/-/ready");
    assert_eq!(code, 200, "the leader is ready: {ready}");
    assert!(ready.contains("leader"), "/-/ready names the role: {ready}");
    let (_, ready) = follow.get("/-/ready");
    assert!(
        ready.contains("follower"),
        "/-/ready names the role: {ready}"
    );
    // Regression (hardening): both replicas exported the slo:* series, so dashboards summing
    // them over replicas counted every SLO twice. The leader exports them; the follower's API
    // says whose view it is.
    let slo_series = |serve: &Serve| {
        crate::serve::parse_metrics(&serve.get("/metrics").1)
            .iter()
            .filter(|(name, _, _)| name.starts_with("slo:"))
            .count()
    };
    let exported = settled(Duration::from_secs(5), true, || slo_series(lead) > 0);
    assert!(exported, "the leader exports the slo:* series");
    assert_eq!(
        slo_series(follow),
        0,
        "the follower exports no slo:* series"
    );
    let alerts = follow.json("/api/v1/alerts");
    assert_eq!(alerts["replica"]["role"], "follower", "{alerts}");
    assert_eq!(
        alerts["replica"]["leader"],
        leader.replica.as_str(),
        "{alerts}"
    );
    assert_eq!(lead.json("/api/v1/slos")["replica"]["role"], "leader");
    let (_, page) = follow.get("/");
    assert!(
        page.contains(&format!(
            "this replica follows (leader: {})",
            leader.replica
        )),
        "the follower's status page says whose view it is"
    );
    assert!(!lead.get("/").1.contains("this replica follows"));

    // The incident: one root, reminders in its thread, resolved in place.
    ha.live.target.set_error_ratio(BURNING);
    let snapshot = ha.wait_slack("the CRITICAL root in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let root = snapshot.top_level("#incidents")[0].clone();
    assert_eq!(headline(&root.text), CRITICAL, "{}", root.text);
    ha.wait_slack("two reminders in the root's thread", WAIT, |s| {
        s.thread("#incidents", &root.ts)
            .iter()
            .filter(|m| headline(&m.text) == STILL_FIRING)
            .count()
            >= 2
    });
    ha.live.target.set_error_ratio(0.0);
    ha.wait_slack("the root edited to RESOLVED", WAIT, |s| {
        s.message(&root.ts)
            .is_some_and(|m| headline(&m.text) == RESOLVED)
    });
    let rows = resolved_and_drained(&ha.slack, lead);
    let snapshot = ha.slack.snapshot();
    let (expected, delivered, duplicated) = exactly_once(&snapshot, &rows);
    eprintln!(
        "two replicas: messages expected {expected}, delivered {delivered}, duplicated {duplicated}"
    );
    assert_eq!((expected, delivered, duplicated), (expected, expected, 0));
    let reminded = assert_resolved_in_place(&snapshot);
    assert!(reminded >= 2, "reminders in the thread: {reminded}");
    assert!(
        snapshot.top_level("#slo-alerts").is_empty(),
        "nothing but the page:\n{snapshot}"
    );
    assert_reminders_not_planned_twice(&rows);

    // One outbox: the follower lists the same rows.
    let ids = |rows: &[Value]| rows.iter().map(|row| row["id"].clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&slack_rows(follow)),
        ids(&rows),
        "both replicas list the shared outbox"
    );
    // Leadership stayed where it was all along.
    let (still_index, still) = ha.agreed();
    assert_eq!(
        (still_index, still.epoch),
        (leader_index, leader.epoch),
        "the leadership moved without a failure: {still:?}"
    );
    ha.assert_running();
}

/// kill -9 of the leader at pseudo-random moments, 20 times, while an incident fires and
/// reminds every second (and, from round 14, resolves): each time the survivor takes over with
/// a higher epoch within MAX_TAKEOVER (the dead leader's advisory lock frees at once) and logs
/// it, the killed replica comes back as a follower, and Slack hears every message exactly
/// once, in order, in one thread whose root ends RESOLVED: no message lost or duplicated, no
/// re-page, no reminder planned twice.
#[test]
fn ha_kill_the_leader_20_times_loses_and_duplicates_nothing() {
    const ROUNDS: usize = 20;
    const RESOLVE_AT: usize = 14;
    let mut ha = Ha::start(BURNING, "1s");
    // A slow Slack widens the window between a request and its acknowledgement.
    ha.slack.latency(Duration::from_millis(80));
    let (mut expected_leader, _) = ha.agreed();
    ha.wait_slack("the CRITICAL root in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let mut random = kill_moments();
    let mut takeovers: Vec<Duration> = Vec::new();
    let mut epochs = Vec::new();
    for round in 0..ROUNDS {
        let (old, before) = ha.leader();
        assert_eq!(
            old, expected_leader,
            "round {round}: the leader is the survivor of the last round: {before:?}"
        );
        let survivor = 1 - old;
        let took_before = ha.replicas[survivor]
            .stderr()
            .matches(TOOK_THE_LEASE)
            .count();
        // Up to 1.5s: before, during and after evaluations, lease renewals and deliveries.
        sleep(Duration::from_millis(random() % 1_500));
        let killed = Instant::now();
        kill(&ha.replicas[old]);
        let (after, _) = wait_takeover(
            &ha.replicas[survivor],
            before.epoch,
            MAX_TAKEOVER + Duration::from_secs(20),
        );
        let took = killed.elapsed();
        assert!(
            took <= MAX_TAKEOVER,
            "round {round}: the survivor took over {took:?} after the kill (at most \
             {MAX_TAKEOVER:?}): {after:?}\n{}",
            ha.replicas[survivor].diagnostics()
        );
        assert_ne!(after.replica, before.replica, "round {round}: {after:?}");
        takeovers.push(took);
        epochs.push(after.epoch);
        ha.replicas[survivor].wait_for("the takeover in the survivor's log", || {
            (ha.replicas[survivor]
                .stderr()
                .matches(TOOK_THE_LEASE)
                .count()
                > took_before)
                .then_some(())
        });
        ha.restart(old);
        let restarted = &ha.replicas[old];
        restarted.wait_for("the restarted replica to follow the survivor", || {
            ha_view(restarted).ok().filter(|view| {
                view.role == "follower"
                    && view.leader.as_deref() == Some(after.replica.as_str())
                    && view.epoch == after.epoch
            })
        });
        expected_leader = survivor;
        if round == RESOLVE_AT {
            ha.live.target.set_error_ratio(0.0);
        }
    }
    let (leader, view) = ha.agreed();
    assert_eq!(leader, expected_leader, "{view:?}");
    let rows = resolved_and_drained(&ha.slack, &ha.replicas[leader]);
    let snapshot = ha.slack.snapshot();
    let (expected, delivered, duplicated) = exactly_once(&snapshot, &rows);
    let max = takeovers.iter().max().copied().unwrap_or_default();
    let mean = takeovers.iter().sum::<Duration>() / takeovers.len().max(1) as u32;
    eprintln!(
        "{ROUNDS} leader kills: takeover max {max:?}, mean {mean:?}; epochs {epochs:?}; \
         messages expected {expected}, delivered {delivered}, duplicated {duplicated}; \
         smallest gap between reminders {:?} ms",
        reminder_gaps(&rows).0
    );
    assert_eq!((delivered, duplicated), (expected, 0));
    let reminded = assert_resolved_in_place(&snapshot);
    assert!(expected >= 10, "the incident produced messages: {expected}");
    assert!(reminded >= 5, "reminders in the thread: {reminded}");
    assert_reminders_not_planned_twice(&rows);
    ha.assert_running();
}

/// Split brain: the leader is paused (SIGSTOP), so it keeps its sessions and its advisory
/// lock; the follower takes over only once the lease has expired, with the next epoch, and
/// reminds on. Resumed (SIGCONT), the old leader finds itself fenced: it steps down (logged,
/// and its status says follower of the new leader) and nothing it had under way lands. The
/// lease row in PostgreSQL names the new leader at its epoch; Slack hears every message once,
/// in order, no reminder twice, in one thread resolved in place.
#[test]
fn ha_split_brain_a_paused_leader_is_fenced_and_steps_down() {
    let ha = Ha::start(BURNING, "1s");
    let (old, before) = ha.agreed();
    let new = 1 - old;
    ha.wait_slack("the CRITICAL root and a reminder", WAIT, |s| {
        !s.top_level("#incidents").is_empty() && reminders(s) >= 1
    });

    ha.replicas[old].signal("STOP");
    let (took, waited) = wait_takeover(&ha.replicas[new], before.epoch, Duration::from_secs(30));
    eprintln!(
        "leader {} paused at epoch {}: {} took over at epoch {} after {waited:?}",
        before.replica, before.epoch, took.replica, took.epoch
    );
    assert_eq!(took.epoch, before.epoch + 1, "the next epoch: {took:?}");
    // Renewed at most a third of the lease before the pause, the lease runs at least two
    // thirds of it past the pause: a paused leader is not taken for dead.
    assert!(
        waited >= LEASE / 2,
        "the follower took over {waited:?} after the pause, before the lease ({LEASE:?}) ran out"
    );
    assert!(
        waited <= LEASE + Duration::from_secs(8),
        "the takeover took {waited:?} with a {LEASE:?} lease"
    );
    let successor = &ha.replicas[new];
    successor.wait_for("the takeover in the new leader's log", || {
        successor.stderr().contains(TOOK_THE_LEASE).then_some(())
    });
    let at_takeover = reminders(&ha.slack.snapshot());
    ha.wait_slack(
        "two reminders from the new leader while the old one is paused",
        Duration::from_secs(30),
        |s| reminders(s) >= at_takeover + 2,
    );

    ha.replicas[old].signal("CONT");
    let resumed = Instant::now();
    let stale = &ha.replicas[old];
    stale.wait_for("the old leader to follow the new one", || {
        ha_view(stale).ok().filter(|view| {
            view.role == "follower"
                && view.leader.as_deref() == Some(took.replica.as_str())
                && view.epoch == took.epoch
        })
    });
    let stepped_down = resumed.elapsed();
    stale.wait_for("`stepped down` in the old leader's log", || {
        stale.stderr().contains(STEPPED_DOWN).then_some(())
    });
    eprintln!("the old leader stepped down {stepped_down:?} after SIGCONT");
    assert!(
        stepped_down <= Duration::from_secs(10),
        "the old leader said follower only {stepped_down:?} after SIGCONT"
    );
    let (leader, now) = ha.leader();
    assert_eq!(
        (leader, now.epoch),
        (new, took.epoch),
        "the new leader keeps the lease: {now:?}"
    );
    let lease = ha
        .pg
        .psql("SELECT coalesce(holder, '') || '|' || epoch FROM leases");
    assert!(
        lease
            .lines()
            .any(|row| row == format!("{}|{}", took.replica, took.epoch)),
        "the lease row names {} at epoch {}: {lease:?}",
        took.replica,
        took.epoch
    );

    ha.live.target.set_error_ratio(0.0);
    let rows = resolved_and_drained(&ha.slack, &ha.replicas[new]);
    let snapshot = ha.slack.snapshot();
    let (expected, delivered, duplicated) = exactly_once(&snapshot, &rows);
    eprintln!(
        "split brain: messages expected {expected}, delivered {delivered}, duplicated {duplicated}; \
         smallest gap between reminders {:?} ms",
        reminder_gaps(&rows).0
    );
    assert_eq!((delivered, duplicated), (expected, 0));
    assert_resolved_in_place(&snapshot);
    assert_reminders_not_planned_twice(&rows);
    let (leader, now) = ha.agreed();
    assert_eq!((leader, now.epoch), (new, took.epoch), "{now:?}");
}

/// PostgreSQL goes away for 5s in the middle of an incident: neither replica exits or tells
/// Slack anything false (no RESOLVED while the error ratio burns); once PostgreSQL is back a
/// replica leads, holding the alert as it was (the same `since`, no second root), reminders
/// resume, and the incident resolves in place with every message delivered exactly once.
#[test]
fn ha_postgres_restart_mid_incident_holds_state_and_resumes() {
    let mut ha = Ha::start(BURNING, "2s");
    let (leader, _) = ha.agreed();
    ha.wait_slack("the CRITICAL root in #incidents", WAIT, |s| {
        !s.top_level("#incidents").is_empty()
    });
    let page = ha.replicas[leader].wait_for("the page firing on the leader", || {
        ha.replicas[leader].firing_page()
    });
    let since = page["since"].clone();

    ha.pg.stop();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(5) {
        let snapshot = ha.slack.snapshot();
        assert!(
            snapshot
                .messages
                .iter()
                .all(|m| headline(&m.text) != RESOLVED),
            "RESOLVED while burning, PostgreSQL down:\n{snapshot}\n{}",
            ha.diagnostics()
        );
        ha.assert_running();
        sleep(Duration::from_millis(200));
    }
    let during: Vec<String> = ha
        .replicas
        .iter()
        .map(|serve| format!("{:?}", ha_view(serve)))
        .collect();
    eprintln!("PostgreSQL down 5s; the replicas said {during:?}");
    ha.pg.start_again();
    let back = Instant::now();

    ha.wait_slack("a reminder posted after PostgreSQL came back", WAIT, |s| {
        s.messages
            .iter()
            .any(|m| m.is_reply() && headline(&m.text) == STILL_FIRING && m.received_at > back)
    });
    let (leader, view) = ha.leader();
    eprintln!(
        "after the restart replica {} leads at epoch {} ({:?} after PostgreSQL came back)",
        NAMES[leader],
        view.epoch,
        back.elapsed()
    );
    let page = ha.replicas[leader].wait_for("the page firing on the leader", || {
        ha.replicas[leader].firing_page()
    });
    assert_eq!(
        page["since"], since,
        "the alert held through the outage: {page}"
    );
    let snapshot = ha.slack.snapshot();
    assert!(
        snapshot
            .messages
            .iter()
            .all(|m| headline(&m.text) != RESOLVED),
        "RESOLVED while burning:\n{snapshot}"
    );

    ha.live.target.set_error_ratio(0.0);
    let (leader, _) = ha.leader();
    let rows = resolved_and_drained(&ha.slack, &ha.replicas[leader]);
    let snapshot = ha.slack.snapshot();
    let (expected, delivered, duplicated) = exactly_once(&snapshot, &rows);
    eprintln!(
        "PostgreSQL restart: messages expected {expected}, delivered {delivered}, duplicated {duplicated}"
    );
    assert_eq!((delivered, duplicated), (expected, 0));
    assert_resolved_in_place(&snapshot);
    ha.assert_running();
}

/// delivery.rs's fault test on two replicas sharing PostgreSQL: 30% of Slack calls fail
/// (429 with Retry-After, 5xx, Slack errors, a connection dropped after Slack acted) while the
/// incident reminds every second; both replicas' workers deliver from the one outbox. Every
/// message is delivered exactly once, in order, and the root ends RESOLVED: the delivery
/// guarantees of the SQLite backend hold on PostgreSQL with claims between replicas.
#[test]
fn ha_slack_faults_two_replicas_deliver_every_message_exactly_once_in_order() {
    let ha = Ha::start(0.0, "1s");
    let mut kinds = Fault::RETRYABLE.to_vec();
    kinds.push(Fault::DropAfterEffect);
    ha.slack.fail_share_with(0.3, 11, kinds);
    ha.agreed();
    ha.live.target.set_error_ratio(BURNING);
    ha.wait_slack("fifteen reminders in the thread", WAIT, |s| {
        s.messages
            .iter()
            .filter(|m| headline(&m.text) == STILL_FIRING)
            .count()
            >= 15
    });
    ha.live.target.set_error_ratio(0.0);
    let (leader, _) = ha.leader();
    let rows = resolved_and_drained(&ha.slack, &ha.replicas[leader]);
    let snapshot = ha.slack.snapshot();
    let (expected, delivered, duplicated) = exactly_once(&snapshot, &rows);
    let failed_calls = snapshot.calls.iter().filter(|call| !call.ok()).count();
    // Which replica delivered what: both workers take rows from the shared outbox.
    let delivered_by: Vec<usize> = ha
        .replicas
        .iter()
        .map(|serve| serve.stderr().matches("notification delivered").count())
        .collect();
    eprintln!(
        "two replicas, 30% faults: {} Slack calls, {failed_calls} failed; messages expected \
         {expected}, delivered {delivered}, duplicated {duplicated}; deliveries by replica \
         {delivered_by:?}",
        snapshot.calls.len()
    );
    assert!(
        failed_calls >= 5,
        "the faults were exercised: {failed_calls}"
    );
    assert_eq!((delivered, duplicated), (expected, 0));
    assert_resolved_in_place(&snapshot);
    assert_reminders_not_planned_twice(&rows);
}

/// Alertmanager hears from the leader only: the page fires at a real Alertmanager 0.25 and
/// resolves, every send and re-send coming from the leader's replica (the follower's log has no
/// Alertmanager delivery), and once resolved the alert stays resolved (no re-send of it as
/// firing overtakes the resolution).
#[test]
fn ha_alertmanager_hears_from_the_leader_only() {
    // The current Alertmanager (0.35); the delivery tests run 0.25 as well.
    let alertmanager = Alertmanager::start_version(crate::alertmanager::AmVersion::V0_35);
    let ha = Ha::start_notifying(
        0.0,
        "1h",
        &format!(
            "  alertmanager:\n    url: {}\n    resend_interval: 1s\n",
            alertmanager.url()
        ),
    );
    let (leader, _) = ha.agreed();
    let page_active = |alerts: &[Value]| {
        alerts
            .iter()
            .any(|alert| alert["labels"]["tier"] == "page" && alert["status"]["state"] == "active")
    };
    ha.live.target.set_error_ratio(BURNING);
    alertmanager.wait_for_alerts("the page active at Alertmanager", WAIT, |alerts| {
        page_active(alerts)
    });
    // Re-sends every second for a while, then the resolution.
    sleep(Duration::from_secs(3));
    ha.live.target.set_error_ratio(0.0);
    alertmanager.wait_for_alerts("the page resolved at Alertmanager", WAIT, |alerts| {
        !page_active(alerts)
    });
    // Four re-send intervals: a stale re-send would have made it active again.
    sleep(Duration::from_secs(4));
    let alerts = alertmanager.alerts();
    assert!(
        !page_active(&alerts),
        "the page is active again after its resolution: {alerts:?}"
    );
    let (now_leading, _) = ha.agreed();
    assert_eq!(now_leading, leader, "leadership moved during the test");
    let sent_to_alertmanager = |serve: &Serve| {
        serve
            .stderr()
            .lines()
            .filter(|line| line.contains("notification delivered") && line.contains("alertmanager"))
            .count()
    };
    let by_leader = sent_to_alertmanager(&ha.replicas[leader]);
    let by_follower = sent_to_alertmanager(&ha.replicas[1 - leader]);
    eprintln!("Alertmanager notifications delivered: leader {by_leader}, follower {by_follower}");
    assert!(
        by_leader >= 2,
        "the leader sent the firing and the resolution: {by_leader}"
    );
    assert_eq!(
        by_follower,
        0,
        "the follower sent to Alertmanager\n{}",
        ha.diagnostics()
    );
}
