//! The two ways of reading windows from Prometheus, side by side on the same real Prometheus
//! data: `query` (one PromQL per window, Prometheus's own answer) and `incremental` (raw samples
//! since the last cycle, windows summed locally). Their burn rates must agree within 1%, and the
//! incremental one must read far fewer samples per cycle.

use std::path::Path;
use std::time::Duration;

use burnwatch::config::{Document, load_str};
use burnwatch::slo::Slo;
use burnwatch::source::incremental::Incremental;
use burnwatch::source::live::{self, fetch_by_query};
use burnwatch::source::prometheus::{Client, Endpoint};

use crate::prom::{Prometheus, Version};

const SPEC: &str = r#"version: burnwatch/v1
service: orders
slos:
  - name: availability
    objective: 99.9
    period: 7d
    group_by: [route]
    sli:
      ratio:
        errors: http_requests_total{job="orders",code=~"5.."}
        total: http_requests_total{job="orders"}
"#;

const SCRAPE: i64 = 30;
/// The last sample: 2023-11-22T00:00:00Z.
const END: i64 = 1_700_611_200;
const DAYS: i64 = 8;
const BURST: (i64, i64) = (END - 9_600, END - 8_400);
const RESET: i64 = END - 9_000;

/// Two routes, 30s scrapes, ~0.1% errors, a 20-minute burst at 8% on one route and a counter
/// reset of that route's series in the middle of it.
fn data() -> String {
    let mut out = String::from("# TYPE http_requests counter\n");
    let mut noise: u64 = 0x9e37_79b9_7f4a_7c15;
    for (route, rate) in [("POST /orders", 12.0), ("GET /orders", 40.0)] {
        let mut counts = [0.0f64; 2];
        let mut lines = [String::new(), String::new()];
        let mut at = END - DAYS * 86_400;
        while at <= END {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let jitter = (noise % 1000) as f64 / 1000.0;
            let requests = (rate * SCRAPE as f64 * (0.9 + 0.2 * jitter)).round();
            let share = if route == "POST /orders" && (BURST.0..BURST.1).contains(&at) {
                0.08
            } else {
                0.001
            };
            let failed = (requests * share * (0.5 + jitter)).round();
            if route == "POST /orders" && at == RESET {
                counts = [0.0, 0.0];
            }
            counts[0] += requests - failed;
            counts[1] += failed;
            for (index, code) in ["200", "500"].iter().enumerate() {
                lines[index].push_str(&format!(
                    "http_requests_total{{code=\"{code}\",job=\"orders\",route=\"{route}\"}} {} {at}\n",
                    counts[index]
                ));
            }
            at += SCRAPE;
        }
        out.push_str(&lines[0]);
        out.push_str(&lines[1]);
    }
    out.push_str("# EOF\n");
    out
}

/// A current Prometheus (3.16) holding `data()`, a runtime and a client for it.
fn fixture() -> (Prometheus, tokio::runtime::Runtime, Client) {
    fixture_on(Version::V3_16)
}

/// [`fixture`] on `version`.
fn fixture_on(version: Version) -> (Prometheus, tokio::runtime::Runtime, Client) {
    let prometheus = Prometheus::start_version(version, &data());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::new(&Endpoint::new(prometheus.url())).unwrap();
    (prometheus, runtime, client)
}

fn slo() -> Slo {
    match load_str("spec.yaml", SPEC, Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    }
}

/// A proxy in front of `upstream` that answers 503 to the requests `refuse` picks (by their
/// target) and forwards the rest; with a client that does not retry.
fn flaky_proxy(
    upstream: String,
    refuse: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> (crate::serve::HttpStub, Client) {
    use crate::serve::{HttpStub, Reply};
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let proxy = HttpStub::start(move |_, target, _| {
        if refuse(target) {
            return Reply::json(
                503,
                r#"{"status":"error","errorType":"unavailable","error":"injected"}"#,
            );
        }
        match http.get(format!("{upstream}{target}")).send() {
            Ok(answer) => Reply::json(answer.status().as_u16(), answer.text().unwrap_or_default()),
            Err(error) => Reply::json(502, format!("{error}")),
        }
    });
    let mut endpoint = Endpoint::new(proxy.url());
    endpoint.retries = 0;
    let client = Client::new(&endpoint).unwrap();
    (proxy, client)
}

#[test]
fn incremental_agrees_with_query_within_one_percent_and_reads_far_less() {
    // On each version: the incremental windows follow the detected version's arithmetic.
    for version in crate::prom::VERSIONS {
        incremental_agrees_with_query_on(version);
    }
}

fn incremental_agrees_with_query_on(version: Version) {
    let (_prometheus, runtime, client) = fixture_on(version);
    let slo = slo();
    let mut incremental = Incremental::new(&slo).unwrap();
    let interval = Duration::from_secs(30);
    let first = (BURST.0 - 1_800) * 1000;
    let mut compared = 0;
    let mut beyond_one_percent = 0;
    let mut worst = (0.0f64, String::new());
    let (mut query_samples, mut incremental_samples) = (0u64, 0u64);
    for cycle in 0..100 {
        let now = first + cycle * 30_000;
        // The windows since two incidents fired (20 minutes and 5 hours before the first
        // cycle), as the engine asks for them: raw and bucketed windows of every length.
        let since_firing: Vec<Duration> = [first - 1_200_000, first - 18_000_000]
            .iter()
            .filter_map(|&since| burnwatch::engine::since_window(now, since))
            .collect();
        let by_query = runtime
            .block_on(fetch_by_query(&client, &slo, now, &since_firing))
            .unwrap();
        let by_increment = runtime
            .block_on(incremental.fetch(&client, &slo, now, interval, &since_firing))
            .unwrap();
        if cycle > 0 {
            query_samples += by_query.samples_touched;
            incremental_samples += by_increment.samples_touched;
        }
        assert_eq!(
            by_query.instances.keys().collect::<Vec<_>>(),
            by_increment.instances.keys().collect::<Vec<_>>(),
            "same instances at {now}"
        );
        for (labels, windows) in &by_query.instances {
            for (window, expected) in windows {
                let actual = by_increment
                    .measure(labels, *window)
                    .unwrap_or_else(|| panic!("no {window:?} for {labels:?}"));
                let budget = slo.objective.error_budget();
                let (expected_burn, actual_burn) =
                    (expected.error_ratio / budget, actual.error_ratio / budget);
                let difference =
                    (actual_burn - expected_burn).abs() / expected_burn.abs().max(1e-9);
                if difference > worst.0 {
                    worst = (
                        difference,
                        format!(
                            "{labels:?} {window:?} at {now}: query {expected_burn} incremental {actual_burn}"
                        ),
                    );
                }
                if *window <= Duration::from_secs(2 * 3600) {
                    // Computed from raw samples exactly as Prometheus does.
                    assert!(
                        difference <= 1e-9,
                        "raw window {window:?} of {labels:?} at {now}: query {expected_burn}, incremental {actual_burn}"
                    );
                } else if difference > 0.01 {
                    // Bucketed windows may differ by what one edge explains: the bad events of
                    // one edge bucket (5m up to 3d, 1h beyond) plus one scrape interval.
                    beyond_one_percent += 1;
                    let edge = if *window <= Duration::from_secs(3 * 86_400) {
                        300.0
                    } else {
                        3600.0
                    };
                    let explained = expected.bad * (edge + SCRAPE as f64) / window.as_secs_f64();
                    let bad_difference =
                        (actual.error_ratio - expected.error_ratio).abs() * expected.total;
                    assert!(
                        bad_difference <= explained,
                        "{labels:?} over {window:?} at {now}: burn rates differ by {:.3}% ({bad_difference:.1} bad events, an edge explains {explained:.1}): query {expected_burn}, incremental {actual_burn}",
                        difference * 100.0
                    );
                }
                compared += 1;
            }
        }
    }
    // 100 cycles × 2 instances × 8 windows (5m … 3d and the 7d period) and the two since
    // firing, but where those equal a tier's window (30m, 1h).
    assert_eq!(compared, 100 * 2 * 10 - 2 * 2);
    eprintln!(
        "worst difference {:.4}%: {}; {beyond_one_percent} of {compared} comparisons beyond 1%, each within one edge's events",
        worst.0 * 100.0,
        worst.1
    );
    let ratio = query_samples as f64 / incremental_samples.max(1) as f64;
    eprintln!(
        "samples touched per cycle: query {} incremental {} ({ratio:.0}x)",
        query_samples / 99,
        incremental_samples / 99
    );
    assert!(
        incremental_samples > 0,
        "incremental reads samples every cycle"
    );
    assert!(
        100.0 <= ratio,
        "incremental must read at least 100x fewer samples, read {ratio:.1}x fewer"
    );
}

/// Regression: the warm start added each `query_range` answer into the state as it came; when
/// a later slice failed (or the warm start timed out), the half-filled state was kept and the
/// retry added the same history again: 6h to the period read up to twice the events for days.
/// And at scale a warm start that timed out kept nothing, so the next began from scratch.
/// Through a proxy that fails one slice, the retry goes on from that slice (the three read
/// before are not read again) and the result equals a clean warm start, and PromQL's answer.
#[test]
fn a_warm_start_that_fails_halfway_goes_on_from_the_failed_slice() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (prometheus, runtime, client) = fixture();
    let ranges = Arc::new(AtomicUsize::new(0));
    let (_proxy, flaky) = flaky_proxy(prometheus.url(), {
        let ranges = ranges.clone();
        move |target| {
            target.starts_with("/api/v1/query_range") && ranges.fetch_add(1, Ordering::SeqCst) == 3
        }
    });
    let slo = slo();
    let interval = Duration::from_secs(30);
    let now = (BURST.1 + 3_600) * 1000;
    let mut state = Incremental::new(&slo).unwrap();
    let failed = runtime.block_on(state.fetch(&flaky, &slo, now, interval, &[]));
    assert!(failed.is_err(), "the fourth slice was refused: {failed:?}");
    assert!(!state.is_warm());
    let retried = runtime
        .block_on(state.fetch(&flaky, &slo, now, interval, &[]))
        .unwrap();
    assert!(state.is_warm());
    let retry_ranges = ranges.load(Ordering::SeqCst) - 4;
    // A clean warm start through the same proxy (its failure is spent) counts the requests.
    let before = ranges.load(Ordering::SeqCst);
    let clean = runtime
        .block_on(
            Incremental::new(&slo)
                .unwrap()
                .fetch(&flaky, &slo, now, interval, &[]),
        )
        .unwrap();
    let clean_ranges = ranges.load(Ordering::SeqCst) - before;
    assert!(clean_ranges > 4, "{clean_ranges} query_range requests");
    assert_eq!(
        retry_ranges,
        clean_ranges - 3,
        "the retry read again slices it had read"
    );
    assert_eq!(retried.instances, clean.instances);
    let by_query = runtime
        .block_on(fetch_by_query(&client, &slo, now, &[]))
        .unwrap();
    for (labels, windows) in &by_query.instances {
        for (window, expected) in windows {
            let actual = retried.measure(labels, *window).expect("window");
            let difference = (actual.total - expected.total).abs() / expected.total.abs().max(1e-9);
            assert!(
                difference < 0.01,
                "{labels:?} {window:?}: {} events, PromQL {}",
                actual.total,
                expected.total
            );
        }
    }
}

/// Regression: the windows since firing (for the budget an incident spent) were queried with
/// the SLO's windows and their failure failed the whole evaluation, holding every alert of
/// the SLO. They are best effort: through a proxy that refuses their queries, the evaluation
/// succeeds with every window of the SLO and without the one since firing.
#[test]
fn a_failed_query_of_a_window_since_firing_does_not_fail_the_evaluation() {
    let (prometheus, runtime, _client) = fixture();
    let (_proxy, flaky) = flaky_proxy(prometheus.url(), |target| target.contains("20m34s"));
    let slo = slo();
    let now = BURST.1 * 1000;
    let since_firing = Duration::from_secs(1234);
    let snapshot = runtime
        .block_on(fetch_by_query(&flaky, &slo, now, &[since_firing]))
        .expect("the evaluation succeeds without the window since firing");
    assert!(snapshot.optional_failures > 0, "{snapshot:?}");
    assert!(!snapshot.instances.is_empty());
    for (labels, windows) in &snapshot.instances {
        for window in live::windows_with_period(&slo) {
            assert!(
                windows.iter().any(|(length, _)| *length == window),
                "{labels:?} lacks {window:?}"
            );
        }
        assert!(snapshot.measure(labels, since_firing).is_none());
    }
    // A window of the SLO that fails still fails the evaluation.
    let failing = runtime.block_on(fetch_by_query(
        &Client::new(&Endpoint::new("http://127.0.0.1:9".to_string())).unwrap(),
        &slo,
        now,
        &[],
    ));
    assert!(failing.is_err());
}

/// After a pause (burnwatch stopped, a slow Prometheus), the catch-up reads the samples since
/// in half-hour slices: after 90 minutes the windows up to 2h equal PromQL's exactly. Beyond
/// the raw horizon (6 hours) the state warm-starts again instead of reading hours of raw
/// samples in one cycle, and equals a clean warm start.
#[test]
fn a_pause_is_caught_up_in_slices_and_a_long_one_warm_starts_again() {
    let (_prometheus, runtime, client) = fixture();
    let slo = slo();
    let interval = Duration::from_secs(30);
    let first = (BURST.0 - 7_200) * 1000;
    let mut state = Incremental::new(&slo).unwrap();
    runtime
        .block_on(state.fetch(&client, &slo, first, interval, &[]))
        .unwrap();
    let after_pause = first + 90 * 60_000;
    assert!(state.is_warm_at(after_pause));
    let caught_up = runtime
        .block_on(state.fetch(&client, &slo, after_pause, interval, &[]))
        .unwrap();
    assert!(
        caught_up.queries >= 2 * 3,
        "90 minutes in half-hour slices, both sides: {} queries",
        caught_up.queries
    );
    let by_query = runtime
        .block_on(fetch_by_query(&client, &slo, after_pause, &[]))
        .unwrap();
    for (labels, windows) in &by_query.instances {
        for (window, expected) in windows {
            if *window <= Duration::from_secs(7_200) {
                let actual = caught_up.measure(labels, *window).expect("window");
                assert!(
                    (actual.error_ratio - expected.error_ratio).abs()
                        <= 1e-9 * expected.error_ratio.abs().max(1e-9),
                    "{labels:?} {window:?}: {} vs PromQL {}",
                    actual.error_ratio,
                    expected.error_ratio
                );
            }
        }
    }
    let after_long_pause = after_pause + 6 * 3_600_000;
    assert!(!state.is_warm_at(after_long_pause));
    let warm_again = runtime
        .block_on(state.fetch(&client, &slo, after_long_pause, interval, &[]))
        .unwrap();
    let clean = runtime
        .block_on(Incremental::new(&slo).unwrap().fetch(
            &client,
            &slo,
            after_long_pause,
            interval,
            &[],
        ))
        .unwrap();
    assert_eq!(warm_again.instances, clean.instances);
}

#[test]
fn a_checkpointed_state_resumes_without_a_warm_start() {
    use burnwatch::source::incremental::Checkpoint;
    let (_prometheus, runtime, client) = fixture();
    let slo = slo();
    let interval = Duration::from_secs(30);
    let first = (BURST.0 - 600) * 1000;
    let mut running = Incremental::new(&slo).unwrap();
    let warm = runtime
        .block_on(running.fetch(&client, &slo, first, interval, &[]))
        .unwrap();
    runtime
        .block_on(running.fetch(&client, &slo, first + 30_000, interval, &[]))
        .unwrap();
    let bytes = running.encode_checkpoint(&slo).unwrap().unwrap();
    assert_eq!(
        bytes,
        running.checkpoint(&slo).unwrap().encode().unwrap(),
        "encoded from the state, the checkpoint is the same bytes as from a copy"
    );
    // A restart ten minutes later: the resumed state reads only the samples since.
    let later = first + 630_000;
    let mut resumed =
        Incremental::resume(&slo, Checkpoint::decode(&bytes).unwrap(), later).unwrap();
    assert!(resumed.is_warm());
    let from_checkpoint = runtime
        .block_on(resumed.fetch(&client, &slo, later, interval, &[]))
        .unwrap();
    let continued = runtime
        .block_on(running.fetch(&client, &slo, later, interval, &[]))
        .unwrap();
    assert_eq!(from_checkpoint.instances, continued.instances);
    assert!(
        from_checkpoint.samples_touched * 10 < warm.samples_touched,
        "resuming read {} samples, a warm start {}",
        from_checkpoint.samples_touched,
        warm.samples_touched
    );
    // A checkpoint older than the raw horizon (2h) starts cold: its next fetch would
    // warm-start anyway (regression: one up to three days old was decoded and resumed, and
    // then discarded by the fetch). The daemon does not even decode it.
    let stale = Incremental::resume(
        &slo,
        Checkpoint::decode(&bytes).unwrap(),
        later + 3 * 3_600_000,
    )
    .unwrap();
    assert!(!stale.is_warm());
    assert!(Incremental::resumable(later, later + 2 * 3_600_000));
    assert!(!Incremental::resumable(later, later + 2 * 3_600_000 + 1));
}

/// The POST route alone, over a day.
const POST_SPEC: &str = r#"version: burnwatch/v1
service: orders
slos:
  - name: post-availability
    objective: 99.9
    period: 1d
    group_by: [route]
    sli:
      ratio:
        errors: http_requests_total{route="POST /orders",code=~"5.."}
        total: http_requests_total{route="POST /orders"}
    alerting:
      ticket: {disable: true}
"#;

/// The same SLO as [`SPEC`] with an SLI that is not local (PromQL around the ratio): replayed
/// from Prometheus with `query_range`, it must decide as the local one does.
const QUERIED_SPEC: &str = r#"version: burnwatch/v1
service: orders
slos:
  - name: availability-queried
    objective: 99.9
    period: 7d
    group_by: [route]
    sli:
      raw:
        error_ratio: clamp_max(sum by (route) (rate(http_requests_total{job="orders",code=~"5.."}[{{.window}}])) / sum by (route) (rate(http_requests_total{job="orders"}[{{.window}}])), 1)
"#;

/// Replay from Prometheus reads the raw samples of a local SLI in slices and measures windows
/// as a recorded file is measured: the same events as replaying the recording the data was
/// backfilled from. An SLI that is not local goes through `query_range` per window and must
/// decide the same.
#[test]
fn replay_from_prometheus_matches_replay_from_the_recording() {
    use burnwatch::replay::{self, Range};
    use burnwatch::source::openmetrics;
    let (_prometheus, runtime, client) = fixture();
    let text = data();
    let queried = match load_str("queried.yaml", QUERIED_SPEC, Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    };
    assert!(
        queried.sli.local().is_err(),
        "the raw SLI must not be local"
    );
    // An SLO with a shorter period over part of the same series, first: the series both
    // name are read over two ranges (regression: the longer range's older samples were
    // dropped, so the 7d SLO saw one day of the POST route).
    let post = match load_str("post.yaml", POST_SPEC, Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    };
    let slos = vec![post, slo(), queried.clone()];
    let range = Range {
        from: (BURST.0 - 3_600) * 1000,
        to: END * 1000,
        step: Duration::from_secs(60),
    };
    let mut queries = 0;
    let from_prometheus = runtime
        .block_on(burnwatch::source::history::replay(
            &client,
            &slos,
            range,
            || queries += 1,
        ))
        .unwrap();
    assert_eq!(
        queries,
        burnwatch::source::history::queries_needed(&slos, &range)
    );
    let recording = openmetrics::parse("strategies.om", &text).unwrap();
    let from_recording = replay::run(&slos[..2], &recording, range);
    let timeline = |timeline: &replay::Timeline, slo_id: &str| -> Vec<String> {
        timeline
            .events
            .iter()
            .filter(|event| event.slo_id == slo_id)
            .map(|event| {
                format!(
                    "{} {:?} {} {}",
                    replay::format_time(event.at),
                    event.labels,
                    event.tier,
                    event.change.as_str()
                )
            })
            .collect()
    };
    let local_id = slos[1].id.as_str();
    let expected = timeline(&from_recording, local_id);
    assert!(
        expected.iter().any(|line| line.contains("page firing")),
        "the burst pages: {expected:?}"
    );
    assert_eq!(timeline(&from_prometheus, local_id), expected);
    assert_eq!(timeline(&from_prometheus, &queried.id), expected);
    assert_eq!(
        timeline(&from_prometheus, &slos[0].id),
        timeline(&from_recording, &slos[0].id)
    );
    assert_eq!(from_prometheus.instances, 5);
}

/// `replay --config` reaches Prometheus as `serve` does: the config's path prefix, tenant
/// header and bearer token (read from its file) on every request, through a gateway that
/// refuses requests without them; the replay equals the one from the recording.
#[test]
fn replay_with_a_daemon_config_reaches_prometheus_as_serve_does() {
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::serve::{HttpStub, Reply};
    let prometheus = Prometheus::start_version(Version::V3_16, &data());
    let upstream = prometheus.url();
    let (forwarded, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gateway = HttpStub::start({
        let (forwarded, refused) = (forwarded.clone(), refused.clone());
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        move |_, target, head| {
            let head = head.to_ascii_lowercase();
            let Some(rest) = target.strip_prefix("/tenants/orders") else {
                refused.fetch_add(1, Ordering::SeqCst);
                return Reply::json(404, "{}");
            };
            if !head.contains("x-scope-orgid: orders\r\n")
                || !head.contains("authorization: bearer t0ken-from-a-file\r\n")
            {
                refused.fetch_add(1, Ordering::SeqCst);
                return Reply::json(
                    401,
                    r#"{"status":"error","errorType":"unauthorized","error":"who are you"}"#,
                );
            }
            forwarded.fetch_add(1, Ordering::SeqCst);
            match http.get(format!("{upstream}{rest}")).send() {
                Ok(answer) => {
                    Reply::json(answer.status().as_u16(), answer.text().unwrap_or_default())
                }
                Err(error) => Reply::json(502, format!("{error}")),
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.yaml"), SPEC).unwrap();
    std::fs::write(dir.path().join("token"), "t0ken-from-a-file\n").unwrap();
    std::fs::write(dir.path().join("data.om"), data()).unwrap();
    std::fs::write(
        dir.path().join("burnwatch.yaml"),
        format!(
            "prometheus:\n  url: {}/tenants/orders\n  headers: {{X-Scope-OrgID: orders}}\n  bearer_token_file: token\nrules: [spec.yaml]\n",
            gateway.url()
        ),
    )
    .unwrap();
    let range = [
        "--from",
        &(BURST.0 - 3_600).to_string(),
        "--to",
        &END.to_string(),
        "--format",
        "json",
    ]
    .map(str::to_string);
    let replay = |source: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
            .arg("replay")
            .args(source)
            .args(&range)
            .current_dir(dir.path())
            .output()
            .expect("run burnwatch");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{source:?}: {stderr}");
        assert!(!stderr.contains("t0ken"), "{stderr}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let through_gateway = replay(&["--config", "burnwatch.yaml"]);
    assert!(forwarded.load(Ordering::SeqCst) > 0);
    assert_eq!(refused.load(Ordering::SeqCst), 0);
    let from_file = replay(&["--data", "data.om", "--spec", "spec.yaml"]);
    assert!(from_file.contains("\"state\": \"firing\""), "{from_file}");
    assert_eq!(through_gateway, from_file);
}

/// Regression: with the query strategy, a total written with `increase` was multiplied by the
/// window's seconds (1h read 124,902,000 events where Prometheus said 34,870), so `min_events`
/// never applied and messages showed inflated counts. Its events are Prometheus's own
/// `increase`, and agree with the incremental strategy's.
#[test]
fn an_increase_total_counts_events_in_the_query_strategy() {
    let (prometheus, runtime, client) = fixture();
    let spec = r#"version: "prometheus/v1"
service: orders
slos:
  - name: availability
    objective: 99.9
    sli:
      events:
        error_query: sum by (route) (increase(http_requests_total{job="orders",code=~"5.."}[{{.window}}]))
        total_query: sum by (route) (increase(http_requests_total{job="orders"}[{{.window}}]))
"#;
    let slo = match load_str("increase.yaml", spec, Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    };
    let now = (BURST.0 - 1_800) * 1000;
    let by_query = runtime
        .block_on(fetch_by_query(&client, &slo, now, &[]))
        .unwrap();
    let mut incremental = Incremental::new(&slo).unwrap();
    let by_increment = runtime
        .block_on(incremental.fetch(&client, &slo, now, Duration::from_secs(30), &[]))
        .unwrap();
    let hour = Duration::from_secs(3600);
    let mut compared = 0;
    for labels in by_query.instances.keys() {
        let route = &labels[0].1;
        let expected = prometheus
            .query_one(
                &format!(
                    "sum(increase(http_requests_total{{job=\"orders\",route=\"{route}\"}}[1h]))"
                ),
                now as f64 / 1000.0,
            )
            .expect("Prometheus's increase");
        let queried = by_query.measure(labels, hour).expect("a 1h value");
        assert!(
            (queried.total - expected).abs() <= 1e-9 * expected,
            "{route}: query strategy {} events, Prometheus {expected}",
            queried.total
        );
        let incremental = by_increment.measure(labels, hour).expect("a 1h value");
        assert!(
            (incremental.total - expected).abs() <= 1e-9 * expected,
            "{route}: incremental {} events, Prometheus {expected}",
            incremental.total
        );
        compared += 1;
    }
    assert_eq!(compared, 2);
}

/// Regression (hardening): a NaN sample in an errors counter was dropped by the incremental
/// strategy, so its windows counted zero errors where Prometheus's are NaN; and an errors
/// series whose every sample is NaN read as no errors at all. A NaN counter sample is bad
/// data: the raw windows it makes NaN are NaN in both strategies (Prometheus's `increase` is
/// NaN when a window's first or last sample is), and their pairs read "no data", never ok.
#[test]
fn nan_counter_samples_are_bad_data_in_both_strategies() {
    const NAN_AT: i64 = END - 3_600;
    let mut out = String::from("# TYPE http_requests counter\n");
    for (route, every_nan) in [("GET /orders", false), ("PUT /orders", true)] {
        let mut lines = [String::new(), String::new()];
        let mut at = END - 86_400;
        let mut counts = [0.0f64; 2];
        while at <= END {
            counts[0] += 300.0;
            counts[1] += 3.0;
            let errors = if every_nan || at == NAN_AT {
                "NaN".to_string()
            } else {
                counts[1].to_string()
            };
            for (index, (code, value)) in [("200", counts[0].to_string()), ("500", errors)]
                .into_iter()
                .enumerate()
            {
                lines[index].push_str(&format!(
                    "http_requests_total{{code=\"{code}\",job=\"orders\",route=\"{route}\"}} {value} {at}\n"
                ));
            }
            at += SCRAPE;
        }
        out.push_str(&lines[0]);
        out.push_str(&lines[1]);
    }
    out.push_str("# EOF\n");
    let prometheus = Prometheus::start_version(Version::V3_16, &out);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::new(&Endpoint::new(prometheus.url())).unwrap();
    let slo = slo();
    let mut incremental = Incremental::new(&slo).unwrap();
    let (mut nan_windows, mut compared) = (0, 0);
    // Every 15 s from 10 minutes before the NaN sample to 10 minutes after it.
    for cycle in 0..80 {
        let now = (NAN_AT - 600 + cycle * 15) * 1000;
        let by_query = runtime
            .block_on(fetch_by_query(&client, &slo, now, &[]))
            .unwrap();
        let by_increment = runtime
            .block_on(incremental.fetch(&client, &slo, now, Duration::from_secs(15), &[]))
            .unwrap();
        for (labels, windows) in &by_query.instances {
            for (window, expected) in windows {
                if *window > Duration::from_secs(2 * 3600) {
                    continue;
                }
                let actual = by_increment
                    .measure(labels, *window)
                    .unwrap_or_else(|| panic!("no {window:?} for {labels:?} at {now}"));
                let same = (expected.error_ratio.is_nan() && actual.error_ratio.is_nan())
                    || (expected.error_ratio - actual.error_ratio).abs() <= 1e-9;
                assert!(
                    same,
                    "{labels:?} over {window:?} at {now}: query {expected:?}, incremental {actual:?}"
                );
                if expected.error_ratio.is_nan() {
                    nan_windows += 1;
                    // A pair whose windows both read this value.
                    let verdict = burnwatch::burn::read_pair(
                        slo.tiers[0].windows[0],
                        slo.objective,
                        0.0,
                        &mut |_| Some(actual),
                    )
                    .verdict;
                    assert_eq!(verdict, burnwatch::burn::Verdict::NoData, "{labels:?}");
                }
                compared += 1;
            }
        }
    }
    // PUT's windows are NaN throughout; GET's 5m window is NaN only while the NaN sample is
    // its first or last one (a NaN in the middle is passed over, as by Prometheus).
    assert!(compared > 400, "{compared}");
    assert!(nan_windows > 80 * 2, "{nan_windows} NaN windows");
}
