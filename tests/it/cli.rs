//! The `burnwatch` binary as users run it: `check`, `replay`, `demo`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use expect_test::expect_file;

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

/// The seed incident's recording, written once per test run by `burnwatch demo --write-data`.
fn demo_data() -> PathBuf {
    static DATA: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = DATA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed-incident.om");
        let output = burnwatch(&["demo", "--write-data", path.to_str().unwrap()]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        (dir, path)
    });
    path.clone()
}

#[test]
fn check_accepts_the_shipped_examples() {
    for path in [
        "rules/",
        "config/burnwatch.yaml",
        "examples/sloth/order-service.yml",
    ] {
        let output = burnwatch(&["check", path]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{path}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        assert!(text(&output.stdout).contains("SUCCESS"), "{path}");
    }
}

#[test]
fn check_points_at_file_line_column_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("orders.yaml");
    let spec = std::fs::read_to_string("rules/order-service.yaml")
        .unwrap()
        .replace("objective: 99.9", "objective: 100.5");
    std::fs::write(&broken, spec).unwrap();
    let output = burnwatch(&["check", broken.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains("FAILED"));
    assert_eq!(
        text(&output.stderr).trim(),
        format!(
            "{}:10:16: slos[0].objective: 100.5 is not a percentage in (0, 100)",
            broken.display()
        )
    );
    let output = burnwatch(&["check", dir.path().join("missing.yaml").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("missing.yaml: cannot read: No such file or directory"));
}

#[test]
fn replay_json_of_a_sloth_spec_is_the_documented_shape() {
    let data = demo_data();
    let output = burnwatch(&[
        "replay",
        "--spec",
        "examples/sloth/order-service.yml",
        "--data",
        data.to_str().unwrap(),
        "--from",
        "2023-11-14T00:30:00Z",
        "--to",
        "2023-11-14T04:00:00Z",
        "--step",
        "30s",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["from", "to", "step", "events"]);
    let event_keys: Vec<&str> = json["events"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        event_keys,
        [
            "at",
            "slo",
            "labels",
            "tier",
            "state",
            "window",
            "factor",
            "burn_rate",
            "error_ratio",
            "events",
            "budget_remaining"
        ]
    );
    expect_file!["../data/golden/sloth-replay.json"].assert_eq(&text(&output.stdout));
}

#[test]
fn replay_text_timeline_of_the_seed_incident() {
    let data = demo_data();
    let output = burnwatch(&[
        "replay",
        "--spec",
        "rules/order-service.yaml",
        "--data",
        data.to_str().unwrap(),
        "--from",
        "1699921800",
        "--to",
        "2023-11-14T04:00:00Z",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    expect_file!["../data/golden/seed-incident-timeline.txt"].assert_eq(&text(&output.stdout));
}

#[test]
fn replay_reports_bad_data_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.om");
    std::fs::write(&data, "http_requests_total{code=\"200\"} 1 1700000000\nhttp_requests_total{code=\"200\"} 2 1699999990\n").unwrap();
    let output = burnwatch(&[
        "replay",
        "--spec",
        "rules/",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr).trim(),
        format!(
            "burnwatch: {}:2: sample at 1699999990 is not after the previous sample of http_requests_total{{code=\"200\"}} at 1700000000 (samples of a series must be in time order)",
            data.display()
        )
    );
}

#[test]
fn demo_prints_firing_then_resolved_with_the_runbook() {
    let output = burnwatch(&["demo", "--no-wait"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let firing = stdout
        .find(":rotating_light: *CRITICAL: Fast error budget burn on order-service*")
        .expect("a CRITICAL message");
    let resolved = stdout
        .find(":white_check_mark: *RESOLVED: Fast error budget burn on order-service*")
        .expect("a RESOLVED message");
    assert!(firing < resolved);
    assert_eq!(
        stdout.matches("CRITICAL").count(),
        1,
        "one page, no re-page:\n{stdout}"
    );
    // The root message updated in place, and the reply in its thread.
    assert_eq!(stdout.matches("RESOLVED").count(), 2, "{stdout}");
    assert!(stdout.contains("chat.update (the incident's root message)"));
    let firing_message = &stdout[firing..resolved];
    for needle in [
        "route=\"POST /orders\"",
        "over 1h and ",
        "over 5m (threshold 14.4x)",
        "<https://runbooks.example.com/order-service/availability>",
        "left of 30d; runs out in",
    ] {
        assert!(
            firing_message.contains(needle),
            "{needle:?} missing from:\n{firing_message}"
        );
    }
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("rules/order-service.yaml")
            .exists()
    );
}
