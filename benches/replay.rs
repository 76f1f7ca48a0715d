//! End-to-end replay benchmark: 30 days × 100 SLO instances of 30s-scraped counters, replayed at
//! a 1m step from the OpenMetrics file (read, parse, bind, evaluate every tier every minute).
//!
//! `cargo bench --bench replay` runs the full size; `BENCH_DAYS` and `BENCH_INSTANCES` change it.
//! The baseline, measured in the same run on the same file, is reading the file and splitting it
//! into lines: the least any replay from that file must do. Under `cargo test` (no `--bench`
//! argument) it runs a small smoke size so the suite proves the bench still works.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use burnwatch::config::{Document, load_str};
use burnwatch::replay::{self, Range};
use burnwatch::source::{openmetrics, recorded};

const SPEC: &str = r#"version: burnwatch/v1
service: bench
slos:
  - name: availability
    objective: 99.9
    min_events: 100
    sli:
      ratio:
        errors: http_requests_total{service="bench",code="500"}
        total: http_requests_total{service="bench"}
    group_by: [route]
"#;

const START: i64 = 1_700_000_000;
const SCRAPE: i64 = 30;

fn write_data(path: &Path, days: i64, instances: usize) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let scrapes = days * 86_400 / SCRAPE;
    let mut samples = 0;
    writeln!(out, "# TYPE http_requests counter")?;
    for instance in 0..instances {
        // A few instances burn hard for an hour on day two, so alerts fire and resolve.
        let burst = (instance % 10 == 0).then_some(START + 86_400 + (instance as i64) * 600);
        for code in ["200", "500"] {
            let mut value = 0u64;
            for scrape in 0..scrapes {
                let at = START + scrape * SCRAPE;
                let requests = 300 + (scrape * 7 + instance as i64 * 13) % 60;
                let in_burst = burst.is_some_and(|start| (start..start + 3_600).contains(&at));
                let failed = if in_burst {
                    requests / 10
                } else {
                    u64::from(scrape % 5 == 0) as i64
                };
                value += if code == "500" {
                    failed
                } else {
                    requests - failed
                } as u64;
                writeln!(
                    out,
                    "http_requests_total{{code=\"{code}\",route=\"/r{instance:03}\",service=\"bench\"}} {value} {at}"
                )?;
                samples += 1;
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(samples)
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let number = |name: &str, default: i64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let days = number("BENCH_DAYS", if full { 30 } else { 2 });
    let instances = number("BENCH_INSTANCES", if full { 100 } else { 3 }) as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.om");
    let samples = write_data(&path, days, instances).expect("write data");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "data: {days} days x {instances} instances, {samples} samples, {:.1} MB",
        bytes as f64 / 1e6
    );

    // Baseline: read the file and count its lines.
    let started = Instant::now();
    let text = std::fs::read_to_string(&path).expect("read");
    let lines = text.lines().count();
    drop(text);
    let baseline = started.elapsed();
    assert!(lines as u64 > samples);

    let slos = match load_str("bench.yaml", SPEC, Path::new(".")) {
        Ok(Document::Slos(slos)) => slos,
        other => panic!("bench spec: {other:?}"),
    };
    let started = Instant::now();
    // As `replay --data` reads it: streamed, keeping the series the SLOs select.
    let file = std::fs::File::open(&path).expect("open");
    let selection = recorded::selection(&slos);
    let keep = openmetrics::Keep {
        selection: Some(&selection),
        limits: openmetrics::Limits::DEFAULT,
    };
    let recording = openmetrics::read(
        "bench.om",
        std::io::BufReader::with_capacity(1 << 20, file),
        keep,
    )
    .expect("parse");
    let parsed = started.elapsed();
    let range = Range::resolve(&recording, None, None, Duration::from_secs(60)).expect("range");
    let timeline = replay::run(&slos, &recording, range);
    let total = started.elapsed();

    assert_eq!(timeline.instances, instances);
    let fired = timeline
        .events
        .iter()
        .filter(|event| event.change.as_str() == "firing")
        .count();
    let resolved = timeline
        .events
        .iter()
        .filter(|event| event.change.as_str() == "resolved")
        .count();
    assert!(
        fired > 0 && fired == resolved,
        "every burst fires and resolves: {fired} fired, {resolved} resolved"
    );
    println!(
        "baseline (read + split lines): {:.2} s",
        baseline.as_secs_f64()
    );
    println!(
        "replay end to end: {:.2} s (parse {:.2} s, evaluate {:.2} s) = {:.1}x baseline",
        total.as_secs_f64(),
        parsed.as_secs_f64(),
        (total - parsed).as_secs_f64(),
        total.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "{:.1} M samples/s end to end; {} evaluations ({:.1} M/s); {} events ({fired} fired, {resolved} resolved)",
        samples as f64 / total.as_secs_f64() / 1e6,
        timeline.evaluations,
        timeline.evaluations as f64 / (total - parsed).as_secs_f64() / 1e6,
        timeline.events.len()
    );
}
