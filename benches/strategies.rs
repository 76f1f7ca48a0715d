//! Prometheus samples touched per evaluation cycle, `query` strategy against `incremental`, on
//! a 30-day-period SLO with a 30s scrape, measured in one run on the same real Prometheus
//! (`stats=all`, `totalQueryableSamples`).
//!
//! `cargo bench --bench strategies` backfills 31 days of two routes (four series) and measures
//! 20 cycles after the incremental warm start. Under `cargo test` (no `--bench` argument) it
//! runs a 2-day smoke size (period 3d, the shortest that holds the default 3d ticket window)
//! so the suite proves the bench still works.

#[allow(dead_code)]
#[path = "../tests/it/child.rs"]
mod child;
#[allow(dead_code)]
#[path = "../tests/it/prom.rs"]
mod prom;
#[path = "../tests/it/tools.rs"]
mod tools;

use std::path::Path;
use std::time::{Duration, Instant};

use burnwatch::config::{Document, load_str};
use burnwatch::source::incremental::Incremental;
use burnwatch::source::live::fetch_by_query;
use burnwatch::source::prometheus::{Client, Endpoint};

const END: i64 = 1_700_611_200;
const SCRAPE: i64 = 30;

fn data(days: i64) -> String {
    let mut out = String::from("# TYPE http_requests counter\n");
    for (route, rate) in [("POST /orders", 12.0), ("GET /orders", 40.0)] {
        for (code, share) in [("200", 0.999), ("500", 0.001)] {
            let mut value = 0.0;
            let mut at = END - days * 86_400;
            while at <= END {
                value += (rate * SCRAPE as f64 * share * 1000.0_f64).round() / 1000.0;
                out.push_str(&format!(
                    "http_requests_total{{code=\"{code}\",route=\"{route}\"}} {value} {at}\n"
                ));
                at += SCRAPE;
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (days, period) = if full { (31, "30d") } else { (2, "3d") };
    let spec = format!(
        "version: burnwatch/v1\nservice: orders\nslos:\n  - name: availability\n    objective: 99.9\n    period: {period}\n    group_by: [route]\n    sli:\n      ratio:\n        errors: http_requests_total{{code=~\"5..\"}}\n        total: http_requests_total\n"
    );
    let slo = match load_str("bench.yaml", &spec, Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("bench spec: {other:?}"),
    };
    let started = Instant::now();
    let prometheus = prom::Prometheus::start(&data(days));
    println!(
        "{days} days of 30s samples, 4 series, backfilled in {:.1} s; period {period}",
        started.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::new(&Endpoint::new(prometheus.url())).expect("client");
    let mut incremental = Incremental::new(&slo).expect("incremental");
    let interval = Duration::from_secs(30);
    let first = (END - 3_600) * 1000;
    let warm = runtime
        .block_on(incremental.fetch(&client, &slo, first, interval, &[]))
        .expect("warm start");
    let cycles = 20;
    let (mut query_samples, mut incremental_samples) = (0, 0);
    let (mut query_time, mut incremental_time) = (Duration::ZERO, Duration::ZERO);
    for cycle in 1..=cycles {
        let now = first + cycle * 30_000;
        let started = Instant::now();
        let by_query = runtime
            .block_on(fetch_by_query(&client, &slo, now, &[]))
            .expect("query");
        query_time += started.elapsed();
        let started = Instant::now();
        let by_increment = runtime
            .block_on(incremental.fetch(&client, &slo, now, interval, &[]))
            .expect("incremental");
        incremental_time += started.elapsed();
        query_samples += by_query.samples_touched;
        incremental_samples += by_increment.samples_touched;
    }
    let cycles = cycles as u64;
    let ratio = query_samples as f64 / incremental_samples.max(1) as f64;
    println!(
        "warm start (once): {} samples touched",
        warm.samples_touched
    );
    println!(
        "per cycle: query {} samples ({:.1} ms), incremental {} samples ({:.1} ms): incremental reads {ratio:.0}x fewer",
        query_samples / cycles,
        query_time.as_secs_f64() * 1000.0 / cycles as f64,
        incremental_samples / cycles,
        incremental_time.as_secs_f64() * 1000.0 / cycles as f64
    );
    assert!(
        100.0 <= ratio,
        "incremental must read at least 100x fewer samples per cycle"
    );
}
