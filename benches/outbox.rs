//! The outbox's delivery query at depth: how long a worker's `due` (the head row of every
//! incident, oldest first) takes with many notifications waiting, as after a long Slack
//! outage, against a baseline measured in the same run: `depth` (one counting pass over the
//! pending rows).
//!
//! `cargo bench --bench outbox` queues 750 and 15,000 pending Slack rows (three per incident:
//! the post, the update and the reply of an incident that fired and resolved), on SQLite and
//! on PostgreSQL (Debian's PostgreSQL 15, started by the tests' fixture in a temp dir), and
//! prints both with PostgreSQL's time as a multiple of SQLite's. Under `cargo test` (no
//! `--bench` argument) it runs a small smoke size.

use std::time::{Duration, Instant};

use burnwatch::alert::Change;
use burnwatch::burn::{PairReading, Verdict, WindowValue};
use burnwatch::config::notify::NotifyConfig;
use burnwatch::config::{Document, load_str};
use burnwatch::engine::Event;
use burnwatch::notify::apply;
use burnwatch::notify::outbox::{Plan, SinkFamily, SlackKind};
use burnwatch::slo::{Slo, TierKind, WindowPair};
use burnwatch::store::Store;

#[allow(dead_code)]
#[path = "../tests/it/child.rs"]
mod child;
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/pg.rs"]
mod pg;

fn slo() -> Slo {
    let spec = "version: burnwatch/v1\nservice: order-service\nslos:\n  - name: availability\n    objective: 99.9\n    sli:\n      ratio:\n        errors: requests_total{code=\"500\"}\n        total: requests_total\n";
    match load_str("spec.yaml", spec, std::path::Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    }
}

fn event(slo: &Slo, route: usize, change: Change, at: i64) -> Event {
    Event {
        at,
        slo_id: slo.id.clone(),
        labels: vec![("route".to_string(), format!("/route/{route}"))],
        tier: TierKind::Page,
        change,
        reading: PairReading {
            pair: WindowPair::new(Duration::from_secs(3600), Duration::from_secs(300), 14.4)
                .expect("pair"),
            long: Some(WindowValue::new(314.0, 21_623.0)),
            short: Some(WindowValue::new(98.0, 1_806.0)),
            burn_long: 14.52,
            burn_short: 54.26,
            verdict: Verdict::Burning,
        },
        budget_remaining: 0.381,
        time_to_exhaustion: None,
        firing_since: Some(at),
        budget_spent: Some(0.02),
        ended: None,
    }
}

/// Fills `store` with `incidents` incidents that fired and resolved (three rows each, in two
/// cycles); returns the mean time of a cycle's transaction (alert states, plan, rows).
fn fill(store: &mut Store, incidents: usize) -> Duration {
    let slo = slo();
    let notify = NotifyConfig::default();
    let plan = Plan {
        notify: &notify,
        silences: &[],
        slack: Some(SlackKind::WebApi),
        external_url: "http://127.0.0.1:9099",
    };
    let t = 1_700_000_000_000;
    let started = Instant::now();
    for (offset, change) in [(0, Change::Firing), (1, Change::Resolved)] {
        let events: Vec<Event> = (0..incidents)
            .map(|route| event(&slo, route, change, t + offset))
            .collect();
        let pairs: Vec<(&Slo, &Event)> = events.iter().map(|event| (&slo, event)).collect();
        store
            .save_cycle(&[], |tx| apply::queue_events(tx, &plan, &pairs, t + offset))
            .expect("plan");
    }
    started.elapsed() / 2
}

/// What one backend took: a cycle's transaction, `due`, `depth` (the baseline), and a
/// delivered row's bookkeeping (claim, in-flight mark, delivered mark).
struct Timings {
    cycle: Duration,
    due: Duration,
    depth: Duration,
    row: Duration,
}

fn measure(store: &mut Store, incidents: usize) -> Timings {
    let cycle = fill(store, incidents);
    let now = i64::MAX / 2;
    let due = time(20, || {
        let rows = store.due(SinkFamily::Slack, now, 256).expect("due");
        assert_eq!(rows.len(), incidents.min(256));
    });
    let depth = time(20, || {
        store.depth().expect("depth");
    });
    // The head rows, delivered one by one as a worker does (claims of a replica's, in the
    // database's clock on PostgreSQL).
    let heads: Vec<i64> = store
        .due(SinkFamily::Slack, now, 100)
        .expect("due")
        .iter()
        .map(|row| row.id)
        .collect();
    let started = Instant::now();
    let wall = burnwatch::notify::deliver::wall_clock();
    for &id in &heads {
        assert!(
            store.claim(id, wall, 60_000).expect("claim").is_some(),
            "claimed"
        );
        assert!(store.mark_in_flight(id, wall, 60_000).expect("in flight"));
        assert!(
            store
                .mark_delivered(id, wall, Some("1.0"))
                .expect("delivered")
        );
    }
    let row = started.elapsed() / heads.len().max(1) as u32;
    Timings {
        cycle,
        due,
        depth,
        row,
    }
}

fn time(runs: u32, mut work: impl FnMut()) -> Duration {
    work();
    let started = Instant::now();
    for _ in 0..runs {
        work();
    }
    started.elapsed() / runs
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes: &[usize] = if full { &[250, 5_000] } else { &[50] };
    for &incidents in sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sqlite = Store::open(dir.path()).expect("SQLite store");
        let server = pg::Pg::start();
        let mut postgres = Store::open_postgres(&server.url()).expect("PostgreSQL store");
        let on_sqlite = measure(&mut sqlite, incidents);
        let on_postgres = measure(&mut postgres, incidents);
        for (name, timings) in [("SQLite", &on_sqlite), ("PostgreSQL", &on_postgres)] {
            println!(
                "{name}, {incidents} incidents: a cycle's transaction {:.1} ms; due {:.2} ms, depth (baseline) {:.2} ms: {:.2}x the baseline; a delivered row's claim, in-flight and delivered marks {:.3} ms",
                ms(timings.cycle),
                ms(timings.due),
                ms(timings.depth),
                timings.due.as_secs_f64() / timings.depth.as_secs_f64(),
                ms(timings.row)
            );
        }
        println!(
            "PostgreSQL against SQLite: cycle {:.2}x, due {:.2}x, a delivered row's marks {:.2}x",
            on_postgres.cycle.as_secs_f64() / on_sqlite.cycle.as_secs_f64(),
            on_postgres.due.as_secs_f64() / on_sqlite.due.as_secs_f64(),
            on_postgres.row.as_secs_f64() / on_sqlite.row.as_secs_f64()
        );
        let pending: i64 = sqlite.depth().expect("depth").iter().map(|(_, n)| n).sum();
        println!("({pending} pending rows)");
    }
}
