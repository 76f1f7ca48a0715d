//! Latency SLIs on scraped histograms. Over native histograms (`latency: {kind: native}`): a
//! real Prometheus 3.16 scraping a target that serves a classic histogram, converted to native
//! buckets with custom bounds on ingestion (NHCB, `convert_classic_histograms_to_nhcb`), so no
//! `_bucket` series exist; burnwatch asks `histogram_fraction(0, T, …)` and
//! `histogram_count(…)` in `serve` (query strategy) and in `replay --prometheus`. Over classic
//! buckets on both Prometheus versions: an integer bound found whatever `le` spelling the
//! version stored, and a bound with no bucket shown as no data with the reason.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::prom::{Prometheus, SCRAPE_JOB, Version};
use crate::serve::{HttpStub, Reply, Setup};

/// Requests per tenth of a second, split over the buckets as below.
const PER_TICK: u64 = 20;
/// Cumulative share of requests at or under 0.1 s, 0.3 s, 1 s, +Inf (of `PER_TICK`).
const CUMULATIVE: [(&str, u64); 4] = [("0.1", 12), ("0.3", 17), ("1", 19), ("+Inf", 20)];

/// A target serving `request_duration_seconds` as a classic histogram (text format) whose
/// counts grow with time: exactly 15% of requests slower than 0.3 s, 5% slower than 1 s.
fn histogram_target() -> HttpStub {
    let started = Arc::new(Instant::now());
    HttpStub::start(move |_, target, _| {
        if target != "/metrics" {
            return Reply::new(404, "text/plain", "not found\n");
        }
        let ticks = started.elapsed().as_millis() as u64 / 100 + 100;
        let mut body = String::from(
            "# HELP request_duration_seconds Request latency.\n\
             # TYPE request_duration_seconds histogram\n",
        );
        for (le, share) in CUMULATIVE {
            body.push_str(&format!(
                "request_duration_seconds_bucket{{route=\"POST /orders\",le=\"{le}\"}} {}\n",
                ticks * share
            ));
        }
        body.push_str(&format!(
            "request_duration_seconds_sum{{route=\"POST /orders\"}} {}\n\
             request_duration_seconds_count{{route=\"POST /orders\"}} {}\n",
            ticks * 3,
            ticks * PER_TICK
        ));
        Reply::new(200, "text/plain; version=0.0.4", body)
    })
}

fn spec(threshold: &str) -> String {
    classic_spec(threshold).replace(
        "    group_by: [route]",
        "        kind: native\n    group_by: [route]",
    )
}

fn classic_spec(threshold: &str) -> String {
    format!(
        r#"version: burnwatch/v1
service: checkout
slos:
  - name: requests-availability
    objective: 99
    sli:
      latency:
        histogram: request_duration_seconds{{job="{SCRAPE_JOB}"}}
        threshold: "{threshold}"
    group_by: [route]
    alerting:
      resolve_timeout: 3s
      page:
        windows: [{{long: 20s, short: 5s, factor: 10}}]
      ticket: {{disable: true}}
"#
    )
}

#[test]
fn a_native_histogram_latency_slo_pages_from_prometheus_3() {
    let target = histogram_target();
    let prom = Prometheus::start_scraping_version(
        Version::V3_16,
        &[target.address()],
        Duration::from_secs(1),
        "    convert_classic_histograms_to_nhcb: true\n",
    );
    prom.wait_until_up(1);
    // Windows full of scrapes first, so the totals are the target's rate.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = crate::serve::now_ms() as f64 / 1000.0;
        let samples = prom
            .query_one("count_over_time(request_duration_seconds[20s])", now)
            .unwrap_or(0.0);
        if 18.0 <= samples {
            break;
        }
        assert!(Instant::now() < deadline, "{samples} scrapes in 20s");
        std::thread::sleep(Duration::from_millis(500));
    }
    let setup = Setup::new(&prom.url(), "");
    setup.write_spec(&spec("0.3"));
    let serve = setup.serve();

    // 15% of requests slower than 0.3 s against a 1% budget: 15x over both windows, the page
    // (10x) fires; the figures are Prometheus's histogram_fraction over native buckets.
    let windows = serve.wait_for("both windows of the native SLI", || {
        let slos = serve.slos();
        let slo = slos["slos"].as_array()?.first()?.clone();
        let instance = slo["instances"].as_array()?.first()?.clone();
        let windows = instance["windows"].as_array()?.clone();
        let field = |window: &str, field: &str| {
            windows
                .iter()
                .find(|value| value["window"] == window)?
                .get(field)?
                .as_f64()
        };
        Some((
            field("20s", "error_ratio")?,
            field("5s", "error_ratio")?,
            field("20s", "events")?,
            instance,
        ))
    });
    let (long, short, events, instance) = windows;
    // 200 requests a second over 20 s, from histogram_count of the rate (extrapolated over 1 s
    // scrapes, some late on a loaded machine: a few hundred either way).
    assert!(
        (events - 4000.0).abs() < 1000.0,
        "{events} events ({instance})"
    );
    assert!((long - 0.15).abs() < 1e-9, "20s: {long} ({instance})");
    assert!((short - 0.15).abs() < 1e-9, "5s: {short} ({instance})");
    assert_eq!(instance["labels"]["route"], "POST /orders", "{instance}");
    let block = serve.wait_for("the page firing on stdout", || {
        serve
            .blocks_of("firing", "CRITICAL: Fast error budget burn on checkout")
            .into_iter()
            .next()
    });
    assert!(
        block.text.contains("15.0x over 20s and 15.0x over 5s"),
        "{block:?}"
    );

    // Only native buckets are stored: a classic query finds nothing, the native one does.
    let now = crate::serve::now_ms() as f64 / 1000.0;
    assert!(
        prom.query("count(request_duration_seconds_bucket)", now)
            .is_empty(),
        "classic bucket series stored"
    );
    let count = prom
        .query_one(
            "histogram_count(sum(rate(request_duration_seconds[20s])))",
            now,
        )
        .expect("a native histogram");
    assert!((count - 200.0).abs() < 50.0, "{count} requests/s");

    // Replayed from Prometheus's history: the same SLI through query_range, the page firing
    // with the same figures.
    let from = (now - 40.0).floor() as i64;
    let to = now.floor() as i64;
    let output = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(["replay", "--prometheus", &prom.url(), "--spec"])
        .arg(setup.spec_path())
        .args([
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--step",
            "5s",
            "--format",
            "json",
        ])
        .output()
        .expect("run replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["semantics"], "prometheus-3", "{json}");
    let firing = json["events"]
        .as_array()
        .and_then(|events| events.iter().find(|event| event["state"] == "firing"))
        .unwrap_or_else(|| panic!("the replay pages: {json:#}"));
    let replayed = firing["error_ratio"]["long"].as_f64().expect("a ratio");
    assert!((replayed - 0.15).abs() < 1e-9, "{firing}");
    let events = firing["events"]["total"].as_f64().expect("events");
    assert!(events > 0.0, "{firing}");
}

/// Classic buckets scraped live, each Prometheus version, both strategies: the bound `1`
/// finds the bucket the target writes `le="1"` (stored `le="1.0"` by 3.16): 5% slower; the
/// bound `2` matches no bucket: no data, and the status says why; never 0% or 100%.
#[test]
fn classic_bounds_find_their_bucket_on_each_version_or_say_why_not() {
    let target = histogram_target();
    for version in crate::prom::VERSIONS {
        let prom = Prometheus::start_scraping_version(
            version,
            &[target.address()],
            Duration::from_secs(1),
            "",
        );
        prom.wait_until_up(1);
        for strategy in ["query", "incremental"] {
            let setup = Setup::new(&prom.url(), "");
            let config = std::fs::read_to_string(setup.config()).expect("config");
            std::fs::write(
                setup.config(),
                config.replace("strategy: query", &format!("strategy: {strategy}")),
            )
            .expect("config");
            for (threshold, expected) in [("1", Some(0.05)), ("2", None)] {
                setup.write_spec(&classic_spec(threshold));
                let serve = setup.serve();
                let instance = serve.wait_for("the instance evaluated", || {
                    let slos = serve.slos();
                    let instance = slos["slos"].as_array()?.first()?["instances"]
                        .as_array()?
                        .first()?
                        .clone();
                    let windows = instance["windows"].as_array()?;
                    let evaluated = match expected {
                        Some(_) => windows.iter().any(|w| w["window"] == "5s"),
                        None => instance["no_data"].is_string(),
                    };
                    evaluated.then_some(instance)
                });
                let what = format!("{version:?} {strategy} threshold {threshold}: {instance}");
                match expected {
                    Some(ratio) => {
                        let found = instance["windows"]
                            .as_array()
                            .and_then(|windows| windows.iter().find(|w| w["window"] == "5s"))
                            .and_then(|w| w["error_ratio"].as_f64())
                            .unwrap_or_else(|| panic!("{what}"));
                        assert!((found - ratio).abs() < 1e-6, "{what}");
                    }
                    None => {
                        assert_eq!(instance["windows"], serde_json::json!([]), "{what}");
                        assert!(
                            instance["no_data"]
                                .as_str()
                                .is_some_and(|why| why.contains("le = 2")),
                            "{what}"
                        );
                    }
                }
                assert!(serve.firing_page().is_none(), "{what}");
            }
        }
    }
}
