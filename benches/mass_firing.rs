//! A mass firing's save against a distant PostgreSQL: the leader writes every alert row of a
//! cycle in one transaction, and a save longer than the lease would make its own renewal time
//! out (the lease row was locked from the save's first statement). Measured through a proxy
//! on loopback that delays every packet each way, so a round trip costs what it does to a
//! database in another zone.
//!
//! Baseline, in the same run: one statement's round trip, and the save as it was written
//! before (one `INSERT` per alert). `cargo bench --bench mass_firing` saves 10,000 firing
//! instances with 2 ms each way; under `cargo test` a 300-instance smoke size.

#[allow(dead_code)]
#[path = "../tests/it/child.rs"]
mod child;
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/pg.rs"]
mod pg;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use burnwatch::alert::{Alert, Phase};
use burnwatch::engine::SavedAlert;
use burnwatch::slo::TierKind;
use burnwatch::store::{Sql as _, Store, StoreError};

/// Forwards `from` to `to`, each chunk `delay` late.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(read) = from.read(&mut buffer) {
        if read == 0 {
            break;
        }
        std::thread::sleep(delay);
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A TCP proxy to `upstream` on 127.0.0.1 that delays every chunk by `delay` each way; its
/// port.
fn latency_proxy(upstream: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client2, server2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || pump(client, server, delay));
            std::thread::spawn(move || pump(server2, client2, delay));
        }
    });
    port
}

fn firing(route: usize, since: i64) -> SavedAlert {
    SavedAlert {
        slo_id: "order-service-availability".to_string(),
        labels: vec![("route".to_string(), format!("/route/{route:05}"))],
        tier: TierKind::Page,
        alert: Alert {
            phase: Phase::Firing {
                since,
                last_sent: since,
                false_since: None,
                absent_since: None,
            },
            announced: true,
            insufficient: false,
        },
        tripped: None,
    }
}

/// The save as it was written before: every row deleted, then one `INSERT` per alert.
fn save_row_by_row(store: &mut Store, alerts: &[SavedAlert]) -> Result<(), StoreError> {
    store.leader_transaction(|tx| {
        tx.execute("clear alerts", "DELETE FROM alerts", &[])?;
        for alert in alerts {
            let labels = serde_json::to_string(&alert.labels).expect("labels");
            let state = serde_json::to_string(&(alert.alert, alert.tripped)).expect("state");
            tx.execute(
                "insert alert",
                "INSERT INTO alerts (slo_id, labels, tier, state) VALUES (?1, ?2, ?3, ?4)",
                &[
                    alert.slo_id.as_str().into(),
                    labels.into(),
                    alert.tier.as_str().into(),
                    state.into(),
                ],
            )?;
        }
        Ok(())
    })
}

fn timed(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (instances, delay) = if full {
        (10_000, Duration::from_millis(2))
    } else {
        (300, Duration::from_millis(1))
    };
    let server = pg::Pg::start();
    let direct = server.url();
    let upstream: u16 = direct
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .expect("the server's port");
    let port = latency_proxy(upstream, delay);
    let url = direct.replace(&format!(":{upstream}/"), &format!(":{port}/"));
    let mut store = Store::open_postgres(&url).expect("PostgreSQL through the proxy");

    let round_trips = 20;
    let round_trip = timed(|| {
        for _ in 0..round_trips {
            store.meta("bench").expect("meta");
        }
    }) / round_trips;
    let alerts: Vec<SavedAlert> = (0..instances).map(|route| firing(route, 1_000)).collect();
    let row_by_row = timed(|| save_row_by_row(&mut store, &alerts).expect("row by row"));
    // A fresh store knows nothing of the table: its first save rewrites it all.
    let mut store = Store::open_postgres(&url).expect("PostgreSQL through the proxy");
    let first = timed(|| store.save_alerts(&alerts).expect("first save"));
    let mut next = alerts.clone();
    for alert in next.iter_mut().step_by(100) {
        alert.alert = firing(0, 2_000).alert;
    }
    let one_percent = timed(|| store.save_alerts(&next).expect("1% changed"));
    let unchanged = timed(|| store.save_alerts(&next).expect("unchanged"));
    assert_eq!(store.load_alerts().expect("load").len(), instances);
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    let ratio = |duration: Duration| duration.as_secs_f64() / round_trip.as_secs_f64();
    println!(
        "{instances} firing instances, {} ms each way: one round trip (baseline) {:.1} ms",
        delay.as_millis(),
        ms(round_trip)
    );
    println!(
        "  save, one INSERT per alert (as before): {:.0} ms = {:.0}x the baseline",
        ms(row_by_row),
        ratio(row_by_row)
    );
    for (what, took) in [
        ("first save, every row in multi-row statements", first),
        ("next save, 1% of the alerts changed", one_percent),
        ("next save, nothing changed", unchanged),
    ] {
        println!(
            "  {what}: {:.0} ms = {:.1}x the baseline, {:.3}x the row-by-row save",
            ms(took),
            ratio(took),
            took.as_secs_f64() / row_by_row.as_secs_f64()
        );
    }
}
