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

/// Every `burnwatch check` in the README's `sh` blocks runs as written and succeeds.
#[test]
fn the_readmes_check_commands_succeed() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut in_sh = false;
    let mut ran = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let command = line.split('#').next().unwrap_or("").trim();
        let Some(args) = command
            .strip_prefix("./target/release/burnwatch check ")
            .or_else(|| command.strip_prefix("burnwatch check "))
        else {
            continue;
        };
        if !in_sh {
            continue;
        }
        let mut argv = vec!["check"];
        argv.extend(args.split_whitespace());
        let output = burnwatch(&argv);
        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "README: {command}\n{stdout}{}",
            text(&output.stderr)
        );
        assert!(!stdout.contains("FAILED"), "README: {command}\n{stdout}");
        ran += 1;
    }
    assert!(
        ran >= 3,
        "the README's check commands were not found ({ran})"
    );
}

/// Regression: an SLO id defined in two files failed only on stderr while every file's line
/// said SUCCESS. Now a verdict of its own names both places, and the exit code agrees.
#[test]
fn check_names_both_places_of_a_duplicate_slo_id() {
    let output = burnwatch(&["check", "rules/", "examples/sloth/order-service.yml"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let verdict = stdout
        .split_once("Checking SLO ids across the files\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no verdict on SLO ids: {stdout}"));
    assert!(
        verdict.starts_with("  FAILED: 1 SLO id(s) defined twice\n"),
        "{verdict}"
    );
    assert!(
        verdict.contains(
            "\"order-service-requests-availability\": rules/order-service.yaml:8:11 and examples/sloth/order-service.yml:9:11"
        ),
        "{verdict}"
    );
    assert!(
        text(&output.stderr).contains(
            "examples/sloth/order-service.yml:9:11: SLO id \"order-service-requests-availability\" is already defined at rules/order-service.yaml:8:11"
        ),
        "{}",
        text(&output.stderr)
    );
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

/// `replay --semantics` follows the named Prometheus version's window arithmetic, says so in
/// the JSON, and the seed incident's figures move with it (3.x leaves the sample on a window's
/// start out); a version that is not one is refused naming the option.
#[test]
fn replay_semantics_option_changes_the_window_arithmetic_and_is_reported() {
    let data = demo_data();
    let replay = |semantics: &str| {
        let output = burnwatch(&[
            "replay",
            "--spec",
            "examples/sloth/order-service.yml",
            "--data",
            data.to_str().unwrap(),
            "--from",
            "2023-11-14T01:00:00Z",
            "--to",
            "2023-11-14T02:00:00Z",
            "--format",
            "json",
            "--semantics",
            semantics,
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let (old, new) = (replay("2.42"), replay("3"));
    assert_eq!(old["semantics"], "prometheus-2");
    assert_eq!(new["semantics"], "prometheus-3");
    assert_eq!(replay("2.51")["semantics"], "prometheus-2.51");
    assert_ne!(
        old["events"][0]["burn_rate"], new["events"][0]["burn_rate"],
        "the same samples, other windows"
    );
    let output = burnwatch(&[
        "replay",
        "--spec",
        "x.yaml",
        "--data",
        "y",
        "--semantics",
        "1.8",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("--semantics")
            && text(&output.stderr).contains("not a Prometheus version"),
        "{}",
        text(&output.stderr)
    );
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
    assert_eq!(keys, ["from", "to", "step", "semantics", "events"]);
    // A recording follows current Prometheus unless told otherwise.
    assert_eq!(json["semantics"], "prometheus-3");
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

/// Bad data in a series the SLOs select is an error naming the line. A series no SLO selects
/// is skipped unread beyond its syntax, so its samples out of order are no error; a recording
/// with nothing the SLOs select says so.
#[test]
fn replay_reports_bad_data_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.om");
    let replay = |contents: &str| {
        std::fs::write(&data, contents).unwrap();
        let output = burnwatch(&[
            "replay",
            "--spec",
            "rules/",
            "--data",
            data.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(1));
        text(&output.stderr).trim().to_string()
    };
    assert_eq!(
        replay(
            "http_requests_total{code=\"200\",service=\"order-service\"} 1 1700000000\nhttp_requests_total{code=\"200\",service=\"order-service\"} 2 1699999990\n"
        ),
        format!(
            "burnwatch: {}:2: sample at 1699999990 is not after the previous sample of http_requests_total{{code=\"200\",service=\"order-service\"}} at 1700000000 (samples of a series must be in time order)",
            data.display()
        )
    );
    assert_eq!(
        replay(
            "http_requests_total{code=\"200\"} 1 1700000000\nhttp_requests_total{code=\"200\"} 2 1699999990\n"
        ),
        "burnwatch: the recording has no samples of the series the SLOs select (2 samples of other series were skipped)"
    );
    assert_eq!(
        replay("http_requests_total{code=\"200\"} 1 1700000000\nup{} x 1699999990\n"),
        format!(
            "burnwatch: {}:2: \"x\" is not a sample value",
            data.display()
        )
    );
}

/// Regression: two samples 30 years apart made `replay`, its range defaulted from the data,
/// evaluate 15.8 million steps for many minutes. It now refuses at once, says the range, the
/// step and how to narrow them, and names the lines of the samples the range came from.
#[test]
fn replay_refuses_a_range_of_decades_and_names_the_samples_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("decades.om");
    let series = |route: &str| {
        format!("http_requests_total{{service=\"order-service\",code=\"200\",route=\"{route}\"}}")
    };
    std::fs::write(
        &data,
        format!(
            "# TYPE http_requests counter\n{a} 1 1704060000\n{b} 1 757382400\n{a} 2 1704067200\n# EOF\n",
            a = series("POST /orders"),
            b = series("GET /orders"),
        ),
    )
    .unwrap();
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--spec",
            "rules/order-service.yaml",
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend(extra);
        burnwatch(&args)
    };
    let cases: [(&[&str], String); 3] = [
        (
            &[],
            format!(
                "burnwatch: replaying 1994-01-01T00:00:00Z .. 2024-01-01T00:00:00Z every 1m takes 15778081 evaluation steps, more than the 1000000 a replay is allowed; narrow the range with --from and --to, or take a longer --step (--from defaults to the earliest sample, at {file}:3; --to defaults to the latest sample, at {file}:4)",
                file = data.display()
            ),
        ),
        (
            &["--to", "2023-01-01T00:00:00Z", "--step", "5m"],
            format!(
                "burnwatch: replaying 1994-01-01T00:00:00Z .. 2023-01-01T00:00:00Z every 5m takes 3050497 evaluation steps, more than the 1000000 a replay is allowed; narrow the range with --from and --to, or take a longer --step (--from defaults to the earliest sample, at {}:3)",
                data.display()
            ),
        ),
        (
            &["--from", "1994-01-01T00:00:00Z", "--to", "2024-01-01T00:00:00Z"],
            "burnwatch: replaying 1994-01-01T00:00:00Z .. 2024-01-01T00:00:00Z every 1m takes 15778081 evaluation steps, more than the 1000000 a replay is allowed; narrow the range with --from and --to, or take a longer --step".to_string(),
        ),
    ];
    for (extra, expected) in cases {
        let output = replay(extra);
        assert_eq!(output.status.code(), Some(1), "{extra:?}");
        assert_eq!(text(&output.stderr).trim(), expected, "{extra:?}");
    }
    // Narrowed to the recent samples, the same file replays.
    let output = replay(&["--from", "2023-12-31T00:00:00Z"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("every 1m: 2 SLO instances"),
        "{}",
        text(&output.stdout)
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

/// `demo` serves the status page while it runs: the URL it prints answers with the seed
/// incident's firing row at some point, and the SLO's page draws its burn lines; the demo
/// still ends by itself when its output is not a terminal.
#[test]
fn demo_serves_the_status_page_while_it_runs() {
    use std::io::BufRead as _;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(["demo", "--pace", "60ms", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the demo");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("status page: ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
        })
        .expect("the demo prints the status page's URL");
    // Drain the rest of the output so the demo never blocks on a full pipe.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    burnwatch::source::prometheus::install_crypto_provider();
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |path: &str| {
        http.get(format!("{}{}", url.trim_end_matches('/'), path))
            .send()
            .and_then(|answer| answer.text())
            .ok()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut firing = None;
    while firing.is_none() && std::time::Instant::now() < deadline {
        firing = get("/?show=firing").filter(|page| {
            page.contains(
                r#"<tr class="slo-row firing" data-slo="order-service-requests-availability">"#,
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let firing = firing.expect("the firing row of the seed incident on the status page");
    assert!(firing.contains("POST /orders"), "{firing}");
    let slo_page = get("/slo/order-service-requests-availability").expect("the SLO's page");
    assert!(
        slo_page.contains(r#"<path class="burn" d="M"#),
        "{slo_page}"
    );
    // The messages the demo planned are the SLO's notifications, its incident the page's.
    assert!(
        slo_page.contains("<td>slack</td><td>post</td>"),
        "{slo_page}"
    );
    assert!(slo_page.contains("#incidents"), "{slo_page}");
    let status = child.wait().expect("the demo ends");
    assert!(status.success());
    let rest = rest.join().unwrap();
    assert!(
        rest.iter().any(|line| line.contains("RESOLVED")),
        "{rest:?}"
    );
}

/// `state: {backend: postgres}` is a valid config that `check` describes, and `serve` with a
/// PostgreSQL it cannot reach fails at start-up naming the step, never the URL, and creates
/// no SQLite state.
#[test]
fn state_postgres_is_checked_and_an_unreachable_database_fails_serve_without_the_url() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let secret = "postgres://burnwatch:hunter2-secret@127.0.0.1:1/burnwatch";
    std::fs::write(dir.path().join("pg-url"), secret).unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let config = dir.path().join("burnwatch.yaml");
    std::fs::write(
        &config,
        format!(
            "prometheus:\n  url: http://127.0.0.1:9\nrules: [{:?}]\nstate:\n  backend: postgres\n  url_file: pg-url\n  lease: 6s\n",
            rules.display().to_string()
        ),
    )
    .unwrap();

    let output = burnwatch(&["check", config.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains(&format!(
            "state: postgres (URL in {}), replicas sharing it; the leader's lease lasts 6s",
            dir.path().join("pg-url").display()
        )),
        "{stdout}"
    );

    let state_dir = dir.path().join("state");
    let output = burnwatch(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("hunter2") && !text(&output.stdout).contains("hunter2"));
    assert!(
        !state_dir.exists(),
        "serve created a SQLite state although the state is in PostgreSQL"
    );
}

/// A recording for `rules/order-service.yaml`: two hours of 30s scrapes of `routes` routes'
/// request counters (one burst of errors on the first route), and `noise` series no SLO
/// selects, each with two samples, half of them `http_requests_total` of other services and
/// half of another metric, first and last in the same two hours.
fn order_service_recording(routes: usize, noise: usize) -> String {
    use std::fmt::Write as _;
    const START: i64 = 1_700_000_000;
    let mut out = String::from("# TYPE http_requests counter\n");
    let noise_line = |out: &mut String, index: usize, value: u64, at: i64| {
        if index.is_multiple_of(2) {
            writeln!(
                out,
                "http_requests_total{{code=\"200\",route=\"/n\",service=\"noise-{index}\"}} {value} {at}"
            )
        } else {
            writeln!(
                out,
                "node_cpu_seconds_total{{cpu=\"{index}\",instance=\"host-{index}:9100\",mode=\"idle\"}} {value} {at}"
            )
        }
        .unwrap();
    };
    for index in 0..noise {
        noise_line(&mut out, index, 1, START);
    }
    for route in 0..routes {
        for code in ["200", "500"] {
            let mut value = 0;
            for scrape in 0..240 {
                let at = START + 30 * scrape;
                let burst = route == 0 && (120..150).contains(&scrape);
                value += match (code, burst) {
                    ("500", true) => 30,
                    ("500", false) => u64::from(scrape % 10 == 0),
                    _ => 300,
                };
                writeln!(
                    out,
                    "http_requests_total{{code=\"{code}\",route=\"/r{route}\",service=\"order-service\"}} {value} {at}"
                )
                .unwrap();
            }
        }
    }
    for index in 0..noise {
        noise_line(&mut out, index, 2, START + 30 * 239);
    }
    out.push_str("# EOF\n");
    out
}

/// A finished run of the binary and its peak resident memory.
struct Measured {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    peak_rss_mib: f64,
}

/// Runs burnwatch, reading its peak RSS (`VmHWM`) from /proc every 2 ms while it runs. (Not
/// `wait4`'s `ru_maxrss`: Linux counts into it the memory of the test process the child was
/// spawned from.) The last reading is at most 2 ms before it exits.
fn burnwatch_measured(args: &[&str]) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_burnwatch"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run burnwatch");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib: u64 = 0;
    let status = loop {
        let high_water = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            });
        peak_kib = peak_kib.max(high_water.unwrap_or(0));
        if let Some(status) = child.try_wait().expect("wait for burnwatch") {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    Measured {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
        peak_rss_mib: peak_kib as f64 / 1024.0,
    }
}

/// Regression: `replay --data` read the whole file into memory and kept every series of it,
/// those no SLO selects included (2 million series took 5.1 GB). It now streams the file and
/// keeps only the series the SLOs select: 200,000 other series (a 30 MB file, which took
/// about 200 MiB before) leave its peak RSS far below the file's size, and the timeline is
/// the one of the same recording without them.
#[test]
fn replay_skips_series_no_slo_selects_and_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.om");
    let noisy = dir.path().join("noisy.om");
    std::fs::write(&clean, order_service_recording(3, 0)).unwrap();
    let noisy_text = order_service_recording(3, 200_000);
    let noisy_mib = noisy_text.len() as f64 / (1 << 20) as f64;
    std::fs::write(&noisy, noisy_text).unwrap();
    let replay = |data: &Path| {
        burnwatch_measured(&[
            "replay",
            "--spec",
            "rules/order-service.yaml",
            "--data",
            data.to_str().unwrap(),
        ])
    };
    let (clean, noisy) = (replay(&clean), replay(&noisy));
    for run in [&clean, &noisy] {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    assert!(
        clean.stdout.contains("firing"),
        "the burst pages: {}",
        clean.stdout
    );
    assert_eq!(noisy.stdout, clean.stdout);
    assert!(
        noisy.peak_rss_mib < 40.0 && noisy.peak_rss_mib < noisy_mib,
        "peak RSS {:.1} MiB replaying a {noisy_mib:.1} MiB recording (the same without the other series: {:.1} MiB)",
        noisy.peak_rss_mib,
        clean.peak_rss_mib
    );
}

/// A recording holding more series or samples the SLOs select than `--max-series` or
/// `--max-samples` allow is refused at the line that would exceed them, with the flag to
/// raise; series no SLO selects count towards neither.
#[test]
fn replay_refuses_a_recording_over_its_limits_naming_the_line_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("big.om");
    std::fs::write(&data, order_service_recording(2, 1_000)).unwrap();
    let file = data.display();
    let replay = |limit: &[&str]| {
        let mut args = vec![
            "replay",
            "--spec",
            "rules/order-service.yaml",
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend(limit);
        burnwatch(&args)
    };
    // 4 series of 240 samples the SLOs select, after 1,000 they do not (lines 2..=1001).
    assert!(
        replay(&["--max-series", "4", "--max-samples", "960"])
            .status
            .success()
    );
    let cases: [(&[&str], String); 2] = [
        (
            &["--max-series", "3"],
            format!(
                "burnwatch: {file}:1722: refusing to keep more than 3 series (--max-series): 3 series and 720 samples were kept before this line; raise --max-series, or select fewer series"
            ),
        ),
        (
            &["--max-samples", "959"],
            format!(
                "burnwatch: {file}:1961: refusing to keep more than 959 samples (--max-samples, 16 bytes each in memory): 4 series and 959 samples were kept before this line; raise --max-samples, or replay a shorter recording"
            ),
        ),
    ];
    for (limit, expected) in cases {
        let output = replay(limit);
        assert_eq!(output.status.code(), Some(1), "{limit:?}");
        assert_eq!(text(&output.stderr).trim(), expected, "{limit:?}");
    }
}
