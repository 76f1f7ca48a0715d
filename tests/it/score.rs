//! `replay --score`: the pure scorer on hand-computed timelines (a flapping burn, a missed
//! event, a false page, a ticket superseded by a page, an alert still firing), and the
//! binary on the seed incident.

use std::process::{Command, Output};

use burnwatch::alert::Change;
use burnwatch::replay::parse_time;
use burnwatch::score::{
    AlertSpan, SignificantEvent, Stats, TierInput, WorkingHours, alert_spans, score,
    significant_events,
};
use burnwatch::slo::Millis;

const MINUTE: Millis = 60_000;

/// 2023-11-13T06:00:00Z, a Monday: minute `m` of the synthetic timelines.
fn at(minute: i64) -> Millis {
    parse_time("2023-11-13T06:00:00Z").unwrap() + minute * MINUTE
}

/// Ten hours at a 1m step. Budget consumed per step: 0.12% in minutes 60..=89 (a 30-minute
/// burn), 0.3% in minutes 300..=309 (a 10-minute spike), nothing otherwise.
fn timeline() -> (Vec<Millis>, Vec<f64>) {
    let times: Vec<Millis> = (0..=600).map(at).collect();
    let per_step: Vec<f64> = (0..=600)
        .map(|minute| match minute {
            60..=89 => 0.0012,
            300..=309 => 0.003,
            _ => 0.0,
        })
        .collect();
    (times, per_step)
}

/// Budget consumed over the hour ending at each step: `(m − 60, m]`.
fn rolling_hour(per_step: &[f64]) -> Vec<f64> {
    (0..per_step.len())
        .map(|index| per_step[index.saturating_sub(59)..=index].iter().sum())
        .collect()
}

fn span(fired: i64, resolved: Option<i64>) -> AlertSpan {
    AlertSpan {
        fired: at(fired),
        resolved: resolved.map(at),
    }
}

fn close(found: f64, expected: f64) -> bool {
    (found - expected).abs() < 1e-9
}

/// Events at 2% in 1h by hand: the burn's hour exceeds 2% from its 17th minute in
/// (17 × 0.12% = 2.04%; 16 × 0.12% = 1.92%), minute 76, until fewer than 17 of its minutes
/// are left in the hour, after minute 132; the spike from its 7th minute (2.1%), minute 306,
/// to minute 362.
#[test]
fn significant_events_are_the_runs_above_the_share() {
    let (times, per_step) = timeline();
    let events = significant_events(&times, &rolling_hour(&per_step), 0.02);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!((events[0].start, events[0].end), (at(76), at(132)));
    assert!(close(events[0].lead_in, 0.0204), "{events:?}");
    assert_eq!((events[1].start, events[1].end), (at(306), at(362)));
    assert!(close(events[1].lead_in, 0.021), "{events:?}");
}

/// The burn flaps (the page fires at 78, resolves at 95, fires again at 100 and resolves at
/// 140), the spike is missed, and a page at 450..470 has no event.
#[test]
fn a_flapping_burn_a_missed_event_and_a_false_page() {
    let (times, per_step) = timeline();
    let events = significant_events(&times, &rolling_hour(&per_step), 0.02);
    let alerts = alert_spans([
        (at(77), Change::Pending),
        (at(78), Change::Firing),
        (at(95), Change::Resolved),
        (at(100), Change::Firing),
        (at(130), Change::Reminder),
        (at(140), Change::Resolved),
        (at(450), Change::Firing),
        (at(470), Change::Resolved),
    ]);
    assert_eq!(
        alerts,
        [
            span(78, Some(95)),
            span(100, Some(140)),
            span(450, Some(470))
        ]
    );
    let hours = WorkingHours::default();
    let score = score(&TierInput {
        from: at(0),
        to: at(600),
        times: &times,
        per_step: &per_step,
        alerts: &alerts,
        events: &events,
        superseding: &[],
        working_hours: Some(&hours),
    });
    assert_eq!(score.fired, 3);
    assert_eq!(score.still_firing, 0);
    // Both fires of the flapping burn overlap its event; the third overlaps nothing.
    assert_eq!(score.significant_alerts, 2);
    assert_eq!(
        score
            .alerts
            .iter()
            .map(|alert| alert.significant)
            .collect::<Vec<_>>(),
        [true, true, false]
    );
    assert!(close(score.precision.unwrap(), 2.0 / 3.0));
    assert_eq!(score.detected_events, 1);
    assert_eq!(score.recall, Some(0.5));
    let burn = &score.events[0];
    // Detected at the first fire, 2 minutes after the event started.
    assert_eq!(burn.detected_at, Some(at(78)));
    assert_eq!(burn.detection, Some(2 * MINUTE));
    // Reset at the last overlapping resolve, 8 minutes after the event ended.
    assert_eq!(burn.resolved_at, Some(at(140)));
    assert_eq!(burn.reset, Some(8 * MINUTE));
    // The lead-in (2.04%) and minutes 77 and 78 (0.12% each).
    assert!(
        close(burn.spent_before_detection.unwrap(), 0.0228),
        "{burn:?}"
    );
    let spike = &score.events[1];
    assert_eq!(
        (spike.detected_at, spike.detection, spike.reset),
        (None, None, None)
    );
    assert_eq!(spike.spent_before_detection, None);
    let minutes = |stats: Option<Stats>| stats.map(|s| (s.median / 60e3, s.max / 60e3));
    assert_eq!(minutes(score.detection), Some((2.0, 2.0)));
    assert_eq!(minutes(score.reset), Some((8.0, 8.0)));
    let spent = score.spent_before_detection.unwrap();
    assert!(close(spent.median, 0.0228) && close(spent.max, 0.0228));
    // 3 alerts in 10 hours: 3 × 168 / 10 a week.
    assert!(close(score.alerts_per_week.unwrap(), 50.4));
    // 17 + 40 + 20 minutes.
    assert_eq!(score.firing, 77 * MINUTE);
    // 07:18 and 07:40 on a Monday are before 09:00; 13:30 is within.
    assert_eq!(score.outside_working_hours, Some(2));
    assert_eq!(
        score
            .alerts
            .iter()
            .map(|alert| alert.outside_working_hours)
            .collect::<Vec<_>>(),
        [Some(true), Some(true), Some(false)]
    );
}

/// A ticket event alerted only by the page that inhibits the ticket counts as detected for
/// the ticket tier, but the page is not one of the ticket's alerts. An alert still firing at
/// the end fires until the end and has no reset time.
#[test]
fn superseding_pages_and_alerts_still_firing() {
    let (times, per_step) = timeline();
    let events = [
        SignificantEvent {
            start: at(100),
            end: at(200),
            lead_in: 0.1,
        },
        SignificantEvent {
            start: at(580),
            end: at(600),
            lead_in: 0.1,
        },
    ];
    let pages = [span(90, Some(150))];
    let tickets = [span(590, None)];
    let hours = WorkingHours::default();
    let score = score(&TierInput {
        from: at(0),
        to: at(600),
        times: &times,
        per_step: &per_step,
        alerts: &tickets,
        events: &events,
        superseding: &pages,
        working_hours: Some(&hours),
    });
    assert_eq!((score.fired, score.still_firing), (1, 1));
    assert_eq!(score.precision, Some(1.0));
    assert_eq!(score.recall, Some(1.0));
    // The page was firing when the first event started: detection 0, then reset 0 as it
    // resolved before the event ended; nothing was consumed after the start.
    assert_eq!(score.events[0].detection, Some(0));
    assert_eq!(score.events[0].reset, Some(0));
    assert!(close(score.events[0].spent_before_detection.unwrap(), 0.1));
    assert_eq!(score.events[1].detection, Some(10 * MINUTE));
    assert_eq!(score.events[1].reset, None);
    assert_eq!(score.firing, 10 * MINUTE);
    // Without an alert or an event, nothing to divide.
    let empty = burnwatch::score::score(&TierInput {
        from: at(0),
        to: at(0),
        times: &times[..1],
        per_step: &per_step[..1],
        alerts: &[],
        events: &[],
        superseding: &[],
        working_hours: None,
    });
    assert_eq!(
        (
            empty.precision,
            empty.recall,
            empty.alerts_per_week,
            empty.outside_working_hours
        ),
        (None, None, None, None)
    );
}

fn burnwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run burnwatch")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The seed incident's recording, written by `burnwatch demo --write-data`.
fn seed_recording(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("seed.om");
    let output = burnwatch(&["demo", "--write-data", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    path.to_str().unwrap().to_string()
}

fn scores_of(json: &serde_json::Value, slo: &str, route: &str, tier: &str) -> serde_json::Value {
    json["scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["slo"] == slo && row["labels"]["route"] == route && row["tier"] == tier)
        .unwrap_or_else(|| panic!("no score for {slo} {route} {tier}"))
        .clone()
}

/// The seed incident is one significant page event on `POST /orders`, paged at once, and the
/// page is the only alert: precision 1. Nothing else is significant or alerted.
#[test]
fn the_seed_incident_is_one_detected_page_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed_recording(&dir);
    let args = [
        "replay",
        "--spec",
        "rules/order-service.yaml",
        "--data",
        &data,
        "--score",
    ];
    let output = burnwatch(&[&args[..], &["--format", "json"]].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "from",
            "to",
            "step",
            "ground_truth",
            "working_hours",
            "scores"
        ]
    );
    // A full 30-day period after the first sample (2023-10-15T00:00:00Z).
    assert_eq!(json["from"], "2023-11-14T00:00:00Z");
    assert_eq!(json["ground_truth"], "budget");
    assert_eq!(json["scores"].as_array().unwrap().len(), 8);
    let availability = "order-service-requests-availability";
    let page = scores_of(&json, availability, "POST /orders", "page");
    assert_eq!(
        page["significant"],
        serde_json::json!({"budget_share": 0.02, "window": "1h"})
    );
    assert_eq!(page["significant_events"], 1, "{page:#}");
    assert_eq!(page["detected_events"], 1);
    assert_eq!(page["fired"], 1);
    assert_eq!(page["precision"], 1);
    assert_eq!(page["recall"], 1);
    let event = &page["events"][0];
    // The burst starts at 01:00; its hour passes 2% of the budget within the incident.
    let start = parse_time(event["start"].as_str().unwrap()).unwrap();
    let detected = parse_time(event["detected_at"].as_str().unwrap()).unwrap();
    assert!(
        (parse_time("2023-11-14T01:00:00Z").unwrap()..parse_time("2023-11-14T01:30:00Z").unwrap())
            .contains(&start),
        "{event:#}"
    );
    assert!(detected - start <= 5 * MINUTE, "{event:#}");
    let spent = event["budget_spent_before_detection"].as_f64().unwrap();
    assert!((0.02..0.03).contains(&spent), "{event:#}");
    assert_eq!(page["alerts"][0]["significant"], true);
    // 01:17 UTC on a Tuesday.
    assert_eq!(page["fired_outside_working_hours"], 1);
    for row in json["scores"].as_array().unwrap() {
        if row["slo"] == availability
            && row["labels"]["route"] == "POST /orders"
            && row["tier"] == "page"
        {
            continue;
        }
        assert_eq!(row["significant_events"], 0, "{row:#}");
        assert_eq!(row["fired"], 0, "{row:#}");
        assert_eq!(row["precision"], serde_json::Value::Null, "{row:#}");
    }

    let output = burnwatch(&[&args[..], &["--format", "csv"]].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let csv = text(&output.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 9, "{csv}");
    assert!(
        lines[0].starts_with("slo,labels,tier,significant,fired,"),
        "{csv}"
    );
    let prefix =
        format!("{availability},\"{{route=\"\"POST /orders\"\"}}\",page,2%/1h,1,0,1,1,1,1,1,");
    assert!(lines.iter().any(|line| line.starts_with(&prefix)), "{csv}");

    let output = burnwatch(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    assert!(
        table.contains("  alert 2023-11-14T01:17:00Z .. 2023-11-14T01:33:00Z  significant, outside working hours"),
        "{table}"
    );
}

/// Known incidents as the ground truth: the seed incident was paged; an incident on
/// `GET /orders` that burned nothing was missed.
#[test]
fn incidents_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed_recording(&dir);
    let incidents = dir.path().join("incidents.csv");
    std::fs::write(
        &incidents,
        "start,end,slo,labels\n\
         2023-11-14T01:00:00Z,2023-11-14T01:30:00Z,order-service-requests-availability,route=POST /orders\n\
         2023-11-14T03:00:00Z,2023-11-14T03:10:00Z,order-service-requests-availability,route=GET /orders\n\
         2023-11-10T03:00:00Z,2023-11-10T03:10:00Z,order-service-requests-availability,\n\
         2023-11-14T03:00:00Z,2023-11-14T03:10:00Z,order-service-gone,\n",
    )
    .unwrap();
    let output = burnwatch(&[
        "replay",
        "--spec",
        "rules/order-service.yaml",
        "--data",
        &data,
        "--score",
        "--incidents",
        incidents.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["ground_truth"], "incidents");
    assert!(
        text(&output.stderr).contains(
            "an incident names SLO \"order-service-gone\", which the specs do not define"
        ),
        "{}",
        text(&output.stderr)
    );
    let availability = "order-service-requests-availability";
    let page = scores_of(&json, availability, "POST /orders", "page");
    assert_eq!(page["significant"], serde_json::Value::Null);
    // The incident of 2023-11-10 lies before the range: left out.
    assert_eq!(page["significant_events"], 1, "{page:#}");
    assert_eq!(
        (page["recall"].clone(), page["precision"].clone()),
        (1.into(), 1.into())
    );
    // Paged at 01:17, 17 minutes into the incident.
    assert_eq!(page["detection_seconds"]["max"], 17 * 60);
    // The ticket, inhibited by the page, still counts the incident as alerted.
    let ticket = scores_of(&json, availability, "POST /orders", "ticket");
    assert_eq!(
        (ticket["fired"].clone(), ticket["recall"].clone()),
        (0.into(), 1.into())
    );
    let missed = scores_of(&json, availability, "GET /orders", "page");
    assert_eq!(missed["significant_events"], 1);
    assert_eq!(missed["recall"], 0);
    assert_eq!(missed["events"][0]["detected_at"], serde_json::Value::Null);
    let latency = scores_of(
        &json,
        "order-service-requests-latency",
        "POST /orders",
        "page",
    );
    assert_eq!(latency["significant_events"], 0);

    // Too early for a full period of samples: refused with the first time that works.
    let output = burnwatch(&[
        "replay",
        "--spec",
        "rules/order-service.yaml",
        "--data",
        &data,
        "--score",
        "--from",
        "2023-11-01T00:00:00Z",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("--from must be 2023-11-14T00:00:00Z or later"),
        "{}",
        text(&output.stderr)
    );
}

/// A recording built by hand, replayed and scored through the binary: the consumption the
/// replay measures follows the documented definition.
///
/// 100 requests a minute (samples every minute, a day of history first); a 99% objective
/// over 1d allows 1,440 bad events a day. From minute B (01:00 on the second day), 10 of each
/// minute's requests fail for 30 minutes (burn rate 10). With significant at 5% of the budget
/// in 1h (72 bad events), the event starts at B+8 (80 bad events in the hour) and ends at B+82
/// (the hour ending then still holds 8 of the burn's minutes). The page (10% of the budget
/// in 1h: factor 2.4, an error ratio above 2.4%: 150 bad of 6,000, where B+14 has 140) fires
/// at B+15: detected after 7 minutes with 150 bad events spent, 150 / 1,440 of the budget.
#[test]
fn a_recording_built_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "version: burnwatch/v1
service: shop
slos:
  - name: availability
    objective: 99
    period: 1d
    sli:
      ratio:
        errors: requests_total{code=\"500\"}
        total: requests_total
    alerting:
      resolve_timeout: 5m
      page:
        windows:
          - {long: 1h, short: 5m, budget_percent: 10}
      ticket: {disable: true}
",
    )
    .unwrap();
    let start: i64 = 1_699_833_600; // 2023-11-13T00:00:00Z, a Monday
    let day = 1_440;
    let burn_start = day + 60; // B: 2023-11-14T01:00:00Z
    let errors = |minute: i64| 10 * (minute - burn_start).clamp(0, 30);
    let mut recording = String::from("# TYPE requests counter\n");
    for (code, count) in [
        (
            "200",
            &(|minute: i64| 100 * minute - errors(minute)) as &dyn Fn(i64) -> i64,
        ),
        ("500", &errors),
    ] {
        for minute in 0..=day + 240 {
            recording.push_str(&format!(
                "requests_total{{code=\"{code}\"}} {} {}\n",
                count(minute),
                start + minute * 60
            ));
        }
    }
    recording.push_str("# EOF\n");
    let data = dir.path().join("shop.om");
    std::fs::write(&data, recording).unwrap();
    // The figures above are worked out on windows closed at both ends, Prometheus 2's.
    let output = burnwatch(&[
        "replay",
        "--spec",
        spec.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--semantics",
        "2.42",
        "--score",
        "--significant",
        "page=5%/1h",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["from"], "2023-11-14T00:00:00Z");
    let rows = json["scores"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json:#}");
    let page = &rows[0];
    assert_eq!(page["tier"], "page");
    assert_eq!(page["significant_events"], 1, "{page:#}");
    let event = &page["events"][0];
    assert_eq!(event["start"], "2023-11-14T01:08:00Z", "{event:#}");
    assert_eq!(event["end"], "2023-11-14T02:22:00Z", "{event:#}");
    assert_eq!(event["detected_at"], "2023-11-14T01:15:00Z", "{event:#}");
    assert_eq!(event["detection_seconds"], 420);
    let spent = event["budget_spent_before_detection"].as_f64().unwrap();
    assert!(close(spent, 150.0 / 1440.0), "{event:#}");
    // Resolved once the burn left the 5m window and resolve_timeout passed, long before the
    // hour let go of the event.
    assert_eq!(event["reset_seconds"], 0);
    assert_eq!(
        (page["precision"].clone(), page["recall"].clone()),
        (1.into(), 1.into())
    );
    // 01:15 on a Tuesday: outside the default working hours.
    assert_eq!(page["fired_outside_working_hours"], 1);
    // Working hours are an option: all of Tuesday counts.
    let output = burnwatch(&[
        "replay",
        "--spec",
        spec.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--score",
        "--significant",
        "page=5%/1h",
        "--working-hours",
        "Tue 00:00-24:00 UTC",
        "--format",
        "csv",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let csv = text(&output.stdout);
    let row = csv.lines().nth(1).unwrap();
    assert!(
        row.starts_with("shop-availability,,page,5%/1h,1,0,1,1,1,1,1,420,420,0,0,"),
        "{csv}"
    );
    assert!(row.ends_with(",0"), "{csv}");
}
