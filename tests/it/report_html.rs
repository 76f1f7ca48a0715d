//! `replay --score --html` in a real headless browser: the report of a synthetic recording with
//! one burn, opened from a `file://` URL in Debian's Chromium through the WebDriver harness of
//! `browser.rs`, checked in the DOM (sections, charts drawn, alert and event shading where the
//! burn was, the score table's numbers, a hostile label as text) and on a screenshot.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::browser::{Browser, colours};

/// A route label that would run script if the report did not escape it.
const HOSTILE_ROUTE: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

const SPEC: &str = "version: burnwatch/v1
service: shop
slos:
  - name: availability
    objective: 99
    period: 1d
    sli:
      ratio:
        errors: requests_total{code=\"500\"}
        total: requests_total
    group_by: [route]
    alerting:
      resolve_timeout: 5m
      page:
        windows:
          - {long: 1h, short: 5m, budget_percent: 10}
      ticket: {disable: true}
";

/// A day of history, then four hours scored (00:00 to 04:00 on 2023-11-14). Each route takes
/// 100 requests a minute; on `POST /orders` 10 of them fail from 01:00 for 30 minutes (burn
/// rate 10): one significant event (5% of the budget in 1h: 01:08 to 02:22), paged at 01:15.
/// The hostile route never fails.
fn recording() -> String {
    let start: i64 = 1_699_833_600; // 2023-11-13T00:00:00Z
    let day = 1_440;
    let burn_start = day + 60;
    let errors = |minute: i64| 10 * (minute - burn_start).clamp(0, 30);
    let mut text = String::from("# TYPE requests counter\n");
    for (route, burns) in [("POST /orders", true), (HOSTILE_ROUTE, false)] {
        for code in ["200", "500"] {
            for minute in 0..=day + 240 {
                let bad = if burns { errors(minute) } else { 0 };
                let count = if code == "500" {
                    bad
                } else {
                    100 * minute - bad
                };
                text.push_str(&format!(
                    "requests_total{{route=\"{route}\",code=\"{code}\"}} {count} {}\n",
                    start + minute * 60
                ));
            }
        }
    }
    text.push_str("# EOF\n");
    text
}

/// Where an element lies across the plot of its chart, as shares of the plot's width.
const SHARES: &str = "const share = (element) => {
       const plot = element.closest('svg').querySelector('rect.plot').getBoundingClientRect();
       const box = element.getBoundingClientRect();
       return [(box.left - plot.left) / plot.width, (box.right - plot.left) / plot.width];
     };";

#[test]
fn report_html_shows_the_burn_its_page_and_scores_and_escapes_labels() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    let data = dir.path().join("shop.om");
    let report = dir.path().join("report.html");
    std::fs::write(&spec, SPEC).unwrap();
    std::fs::write(&data, recording()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(["replay", "--spec", spec.to_str().unwrap()])
        .args(["--data", data.to_str().unwrap()])
        .args(["--score", "--significant", "page=5%/1h"])
        .args(["--html", report.to_str().unwrap()])
        .output()
        .expect("run burnwatch");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("wrote the report to"), "{stderr}");
    // The text scorecard is still printed.
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("score 2023-11-14T00:00:00Z"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let browser = Browser::start();
    browser.goto(&format!("file://{}", report.display()));
    let page = browser.eval(
        "return {sections: document.querySelectorAll('section.instance').length,
                 charts: document.querySelectorAll('section.instance svg.chart').length,
                 summary: [...document.querySelectorAll('table.summary a')].map(a => a.getAttribute('href')),
                 external: document.querySelectorAll('script,link,img,iframe,object,embed').length,
                 title: document.title,
                 names: [...document.querySelectorAll('section.instance h2.name')].map(h => h.textContent)};",
    );
    assert_eq!(page["sections"], 2, "{page}");
    assert_eq!(
        page["charts"], 2,
        "one chart per instance's one window pair: {page}"
    );
    assert_eq!(page["external"], 0, "{page}");
    assert_eq!(page["title"], "burnwatch score report", "{page}");
    assert_eq!(
        page["summary"],
        serde_json::json!(["#instance-0", "#instance-1"]),
        "{page}"
    );
    let names: Vec<&str> = page["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"shop-availability{route=\"POST /orders\"}"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|name| name.contains(HOSTILE_ROUTE)),
        "the hostile label is shown as text: {names:?}"
    );

    let burn = browser.eval(&format!(
        "{SHARES}
         const section = [...document.querySelectorAll('section.instance')]
           .find(s => s.querySelector('h2.name').textContent.includes('POST /orders'));
         const svg = section.querySelector('svg.chart');
         const row = section.querySelector('table.scores tr.ok');
         return {{paths: [...svg.querySelectorAll('path.burn')].map(p => p.getAttribute('d')),
                 thresholds: [...svg.querySelectorAll('line.threshold')].map(l => l.textContent),
                 alerts: [...svg.querySelectorAll('rect.alert.policy-0')].map(share),
                 events: [...svg.querySelectorAll('rect.event')].map(share),
                 precision: row && row.querySelector('td.precision').textContent,
                 recall: row && row.querySelector('td.recall').textContent,
                 fired: row && row.querySelector('td.fired').textContent,
                 detected: row && row.querySelector('td.events').textContent}};"
    ));
    let paths: Vec<&str> = burn["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(paths.len(), 2, "the short and the long window: {burn}");
    for d in &paths {
        assert!(d.matches(" L").count() >= 100, "a drawn line: {d}");
    }
    assert_eq!(
        burn["thresholds"],
        serde_json::json!(["current threshold 2.4×"])
    );
    // One page, fired at 01:15 of the 4 hours (0.3125 of the way) and resolved by 02:00.
    let alerts = burn["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{burn}");
    let (left, right) = (
        alerts[0][0].as_f64().unwrap(),
        alerts[0][1].as_f64().unwrap(),
    );
    assert!((0.30..0.33).contains(&left), "{burn}");
    assert!((left..0.5).contains(&right), "{burn}");
    // The event (01:08 to 02:22) shaded across the plot and in its lane.
    let events = burn["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{burn}");
    for event in events {
        let (left, right) = (event[0].as_f64().unwrap(), event[1].as_f64().unwrap());
        assert!((0.27..0.30).contains(&left), "{burn}");
        assert!((0.58..0.61).contains(&right), "{burn}");
    }
    assert_eq!(
        (
            &burn["precision"],
            &burn["recall"],
            &burn["fired"],
            &burn["detected"]
        ),
        (&"100%".into(), &"100%".into(), &"1".into(), &"1/1".into()),
        "{burn}"
    );

    // The hostile route: nothing fired, nothing to score, no alert drawn.
    let calm = browser.eval(
        "const section = [...document.querySelectorAll('section.instance')]
           .find(s => !s.querySelector('h2.name').textContent.includes('POST /orders'));
         return {alerts: section.querySelectorAll('rect.alert').length,
                 events: section.querySelectorAll('rect.event').length,
                 precision: section.querySelector('td.precision').textContent,
                 fired: section.querySelector('td.fired').textContent};",
    );
    assert_eq!(calm["alerts"], 0, "{calm}");
    assert_eq!(calm["events"], 0, "{calm}");
    assert_eq!(calm["precision"], "-", "{calm}");
    assert_eq!(calm["fired"], "0", "{calm}");

    let png = browser.screenshot();
    assert!(
        colours(&png) > 8,
        "the screenshot is blank ({} bytes)",
        png.len()
    );
    if let Ok(path) = std::env::var("BURNWATCH_REPORT_SCREENSHOT") {
        std::fs::write(path, &png).expect("write the screenshot");
    }
}

/// The error ratios the report draws are the engine's own: at every event of the seed
/// incident's replay, the recorded ratio of the event's long and short windows at that step
/// equals the one the engine read (bit for bit, or both no data).
#[test]
fn report_html_error_ratios_are_the_ones_the_engine_read() {
    use burnwatch::replay::{Measuring, Range, run_measured};
    let slos = burnwatch::config::load_specs(&[std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules/order-service.yaml"
    ))])
    .expect("the demo's specs");
    let recording =
        burnwatch::source::openmetrics::parse("seed.om", &burnwatch::demo::recording_text())
            .expect("the seed recording");
    let from = burnwatch::replay::parse_time("2023-11-14T00:00:00Z").unwrap();
    let range = Range::resolve(&recording, Some(from), None, Duration::from_secs(60)).unwrap();
    let measuring = Measuring {
        windows: &[],
        error_ratios: true,
    };
    let (timeline, measured) = run_measured(&slos, &recording, range, Some(measuring));
    // The page firing and resolving on POST /orders.
    assert!(timeline.events.len() >= 2, "{:?}", timeline.events);
    let step = 60_000;
    for event in &timeline.events {
        let instance = measured
            .iter()
            .find(|m| m.slo_id == event.slo_id && m.labels == event.labels)
            .expect("the event's instance was measured");
        let index = ((event.at - range.from) / step) as usize;
        let reading = &event.reading;
        for (window, value) in [
            (reading.pair.long, reading.long),
            (reading.pair.short, reading.short),
        ] {
            let (_, ratios) = instance
                .error_ratios
                .iter()
                .find(|(known, _)| *known == window)
                .expect("every tier window is recorded");
            assert_eq!(ratios.len(), range.times().count());
            let engine = value.map_or(f64::NAN, |value| value.error_ratio);
            let recorded = ratios[index];
            assert!(!engine.is_nan(), "the seed incident has traffic: {event:?}");
            assert!(
                recorded.to_bits() == engine.to_bits() || (recorded.is_nan() && engine.is_nan()),
                "{} {:?} at {}: recorded {recorded}, engine {engine}",
                event.slo_id,
                window,
                event.at
            );
        }
    }
    // Without asking, nothing is recorded.
    let (_, measured) = run_measured(&slos, &recording, range, Some(Measuring::default()));
    assert!(measured.iter().all(|m| m.error_ratios.is_empty()));
}

/// `tune --html`: the report draws the current (slow) page and the recommended one side by
/// side: both thresholds, both policies' alert lanes, the recommended alert starting earlier,
/// and a score row for each policy.
#[test]
fn report_html_of_a_sweep_shows_the_current_and_the_recommended_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, data) = crate::tune::write_fixture(dir.path());
    let report = dir.path().join("tune.html");
    let output = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(["tune", "--significant", "page=5%/1h", "--spec", &spec])
        .args(["--data", &data, "--html"])
        .arg(&report)
        .output()
        .expect("run burnwatch");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("wrote the report to"), "{stderr}");

    let browser = Browser::start();
    browser.goto(&format!("file://{}", report.display()));
    let page = browser.eval(&format!(
        "{SHARES}
         const section = document.querySelector('section.instance');
         return {{sections: document.querySelectorAll('section.instance').length,
                 thresholds: [...section.querySelectorAll('line.threshold')].map(l => l.textContent),
                 current: [...section.querySelectorAll('rect.alert.policy-0')].map(share),
                 recommended: [...section.querySelectorAll('rect.alert.policy-1')].map(share),
                 policies: [...section.querySelectorAll('table.scores tr')].slice(1)
                   .map(r => r.cells[0].textContent),
                 recalls: [...section.querySelectorAll('table.scores td.recall')].map(c => c.textContent)}};"
    ));
    assert_eq!(page["sections"], 1, "{page}");
    let thresholds: Vec<&str> = page["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        thresholds
            .iter()
            .any(|t| t.starts_with("current threshold"))
            && thresholds
                .iter()
                .any(|t| t.starts_with("recommended threshold")),
        "{page}"
    );
    let first = |key: &str| {
        page[key].as_array().unwrap()[0][0]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {page}"))
    };
    // The slow page fires 37 minutes into the event; the recommendation detects sooner.
    assert!(first("recommended") < first("current"), "{page}");
    assert_eq!(
        page["policies"],
        serde_json::json!(["current", "recommended"]),
        "{page}"
    );
    assert_eq!(
        page["recalls"],
        serde_json::json!(["100%", "100%"]),
        "{page}"
    );
    let shot = browser.screenshot();
    assert!(colours(&shot) > 8, "the screenshot is not blank");
}
