//! The status page at scale: how long `/`, a filtered and sorted `/`, and an SLO's page take
//! to answer over HTTP with 10,000 SLO instances (100 SLOs of 100 instances; a full period of
//! history each, with a firing alert on every tenth instance), against a baseline measured in
//! the same run: `/api/v1/slos`, the JSON of the same status.
//!
//! `cargo bench --bench page` runs the HTTP face (serve's router) on a loopback port and
//! reports the median of 15 requests each. Under `cargo test` (no `--bench` argument) it runs
//! a small smoke size.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use burnwatch::alert::{Alert, Phase};
use burnwatch::burn::WindowValue;
use burnwatch::config::{Document, load_str};
use burnwatch::daemon::{Shared, evaluated_status};
use burnwatch::engine::SavedAlert;
use burnwatch::history::{PERIOD_POINTS, SloHistory};
use burnwatch::page::PageSource;
use burnwatch::slo::{Slo, TierKind, millis};
use burnwatch::source::live::windows_with_period;
use burnwatch::store::{Store, StoreHandle};

fn slos(count: usize) -> Vec<Slo> {
    let mut spec = String::from("version: burnwatch/v1\nservice: bench\nslos:\n");
    for index in 0..count {
        spec.push_str(&format!(
            "  - name: s{index:03}\n    objective: 99.9\n    group_by: [instance]\n    runbook: https://runbooks.example.com/s{index:03}\n    sli:\n      ratio:\n        errors: requests_total{{service=\"s{index:03}\",code=\"500\"}}\n        total: requests_total{{service=\"s{index:03}\"}}\n"
        ));
    }
    match load_str("spec.yaml", &spec, std::path::Path::new(".")) {
        Ok(Document::Slos(slos)) => slos,
        other => panic!("{other:?}"),
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (slo_count, per_slo, repeats) = if full { (100, 100, 15) } else { (4, 5, 2) };
    let slos = slos(slo_count);
    let now: i64 = 1_700_000_000_000;
    let mut statuses = Vec::new();
    let mut alerts = Vec::new();
    let mut sources = Vec::new();
    for slo in &slos {
        let windows = windows_with_period(slo);
        let mut history = SloHistory::new(slo);
        let step = millis(slo.period) / PERIOD_POINTS as i64;
        let instances: Vec<_> = (0..per_slo)
            .map(|index| {
                let labels = vec![("instance".to_string(), format!("i{index:04}"))];
                let ratio = if index % 10 == 0 { 0.02 } else { 0.0004 };
                let values: Vec<_> = windows
                    .iter()
                    .map(|window| (*window, WindowValue::new(ratio * 1000.0, 1000.0)))
                    .collect();
                (labels, values)
            })
            .collect();
        for point in 0..PERIOD_POINTS as i64 {
            for (labels, values) in &instances {
                history.record(
                    now - (PERIOD_POINTS as i64 - point) * step,
                    labels,
                    values,
                    0.001,
                );
            }
        }
        for (index, (labels, _)) in instances.iter().enumerate() {
            if index % 10 == 0 {
                alerts.push(SavedAlert {
                    slo_id: slo.id.clone(),
                    labels: labels.clone(),
                    tier: TierKind::Page,
                    alert: Alert {
                        phase: Phase::Firing {
                            since: now - 600_000,
                            last_sent: now - 600_000,
                            false_since: None,
                            absent_since: None,
                        },
                        announced: true,
                        insufficient: false,
                    },
                    tripped: None,
                });
            }
        }
        statuses.push(evaluated_status(slo, instances, now));
        sources.push((slo.clone(), Arc::new(Mutex::new(history))));
    }
    burnwatch::source::prometheus::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = StoreHandle::spawn(Store::in_memory().expect("store")).expect("store thread");
    let (reloads, _) = tokio::sync::mpsc::channel(1);
    let shared = Arc::new(Shared {
        status: Default::default(),
        metrics: Mutex::new(burnwatch::metrics::Metrics::new()),
        reload_token: Default::default(),
        reloads,
        store,
        config_silences: Default::default(),
        max_silences: burnwatch::config::WebLimits::default().max_silences.into(),
        pages: RwLock::new(Arc::new(PageSource { slos: sources })),
        ha: Default::default(),
    });
    {
        let mut status = shared.status.write().unwrap();
        status.slos = Arc::new(statuses);
        status.alerts = Arc::new(alerts);
        status.last_evaluation = Some(now);
        status.ready = true;
    }
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let stop = tokio_util::sync::CancellationToken::new();
    runtime.spawn(burnwatch::server::serve(
        listener,
        shared,
        burnwatch::config::WebLimits::default(),
        stop.clone(),
    ));
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let time = |path: &str| {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..repeats {
            let started = Instant::now();
            let answer = http.get(format!("{base}{path}")).send().expect("answer");
            assert!(answer.status().is_success(), "{path}: {}", answer.status());
            size = answer.bytes().expect("body").len();
            times.push(started.elapsed());
        }
        (median(times), size)
    };
    let instances = slo_count * per_slo;
    let (baseline, baseline_size) = time("/api/v1/slos");
    println!(
        "{instances} instances: /api/v1/slos (baseline) {:.1} ms ({} KiB)",
        baseline.as_secs_f64() * 1000.0,
        baseline_size / 1024
    );
    let slo_path = format!("/slo/{}", slos[0].id);
    for path in [
        "/",
        "/?show=firing&sort=burn",
        "/?q=i0042&sort=budget",
        "/?page=50",
        slo_path.as_str(),
    ] {
        let (median, size) = time(path);
        println!(
            "{instances} instances: {path} {:.1} ms ({} KiB), {:.2}x the baseline",
            median.as_secs_f64() * 1000.0,
            size / 1024,
            median.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    stop.cancel();
}
