//! The engine over synthetic traffic: per-minute error ratios in a tiny notation, every tier
//! read from exact window sums, each change printed as a timeline line.

use std::path::Path;
use std::time::Duration;

use burnwatch::burn::WindowValue;
use burnwatch::config::{Document, load_str};
use burnwatch::engine::Engine;
use burnwatch::slo::Slo;
use expect_test::{Expect, expect};

const SPEC: &str = r#"version: burnwatch/v1
service: orders
slos:
  - name: availability
    objective: 99.9
    min_events: 1000
    sli:
      ratio:
        errors: requests_total{code="500"}
        total: requests_total
    alerting:
      resolve_timeout: 5m
      repeat_interval: 2h
"#;

fn slo() -> Slo {
    match load_str("spec.yaml", SPEC, Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    }
}

/// Cumulative bad and total events at the end of every minute (index 0: nothing yet) of
/// `phases`: `<minutes>x<error ratio>@<requests per minute>` separated by spaces, e.g.
/// `4320x0.0005@1000 60x0.05@1000`.
fn counters(phases: &str) -> (Vec<f64>, Vec<f64>) {
    let mut bad = vec![0.0];
    let mut total = vec![0.0];
    for phase in phases.split_whitespace() {
        let (minutes, rest) = phase.split_once('x').unwrap();
        let (ratio, rate) = rest.split_once('@').unwrap();
        let (ratio, rate): (f64, f64) = (ratio.parse().unwrap(), rate.parse().unwrap());
        for _ in 0..minutes.parse::<usize>().unwrap() {
            bad.push(bad.last().unwrap() + ratio * rate);
            total.push(total.last().unwrap() + rate);
        }
    }
    (bad, total)
}

/// The engine evaluates every minute of the last `evaluate_last` minutes of `phases` (see
/// [`counters`]); earlier minutes are history. Reminders and resolutions show the budget spent
/// since the incident fired.
fn check(phases: &str, evaluate_last: usize, expected: Expect) {
    let (bad, total) = counters(phases);
    let slo = slo();
    let mut engine = Engine::new();
    let instance = engine.instance(&slo, &Vec::new());
    let minutes = bad.len() - 1;
    let mut out = String::new();
    for minute in minutes - evaluate_last..=minutes {
        let mut measure = |window: Duration| {
            let start = minute.saturating_sub(window.as_secs() as usize / 60);
            Some(WindowValue::new(
                bad[minute] - bad[start],
                total[minute] - total[start],
            ))
        };
        for event in engine.evaluate(minute as i64 * 60_000, &slo, instance, &mut measure) {
            let reading = event.reading;
            out.push_str(&format!(
                "t+{}m {:<6} {:<17} {}/{} burn {:.1}/{:.1} > {}\n",
                minute - (minutes - evaluate_last),
                event.tier.as_str(),
                event.change.as_str(),
                reading.pair.long.as_secs() / 60,
                reading.pair.short.as_secs() / 60,
                reading.burn_long,
                reading.burn_short,
                reading.pair.factor
            ));
            if let Some(spent) = event.budget_spent {
                out.insert_str(out.len() - 1, &format!(" spent {:.2}%", spent * 100.0));
            }
            if let Some(ended) = event.ended {
                out.insert_str(out.len() - 1, &format!(" ended: {}", ended.as_str()));
            }
        }
    }
    expected.assert_eq(&out);
}

#[test]
fn fast_burn_pages_once_and_resolves_after_resolve_timeout() {
    // Three quiet days, then 30 minutes at 5% errors (burn 50), then quiet again.
    check(
        "4320x0.0003@2000 30x0.05@2000 240x0.0003@2000",
        300,
        expect![[r#"
            t+48m page   firing            60/5 burn 15.2/50.0 > 14.4
            t+69m page   resolved          60/5 burn 25.2/0.3 > 14.4 spent 13.83%
        "#]],
    );
}

#[test]
fn a_firing_page_inhibits_the_ticket_until_it_resolves() {
    // An 8-hour burn at 10x trips the 6h/30m page pair and, under it, the 1d/2h ticket pair.
    // The ticket is announced only when the page resolves and the ticket still burns.
    check(
        "4320x0.0002@2000 480x0.01@2000 600x0.0002@2000",
        1080,
        expect![[r#"
            t+214m page   firing            360/30 burn 6.0/10.0 > 6
            t+334m page   reminder          360/30 burn 9.3/10.0 > 6 spent 25.78%
            t+454m page   reminder          360/30 burn 10.0/10.0 > 6 spent 50.27%
            t+498m page   resolved          360/30 burn 9.5/4.1 > 6 spent 55.28%
            t+498m ticket firing            1440/120 burn 3.5/8.5 > 3
            t+618m ticket reminder          4320/360 burn 1.3/6.2 > 1 spent 26.28%
            t+738m ticket reminder          4320/360 burn 1.3/3.0 > 1 spent 26.13%
            t+816m ticket resolved          4320/360 burn 1.3/0.9 > 1 spent 26.04%
        "#]],
    );
}

#[test]
fn a_slow_burn_opens_a_ticket_with_reminders_and_no_page() {
    check(
        "4320x0.0002@2000 1440x0.004@2000",
        1440,
        expect![[r#"
            t+910m ticket firing            4320/360 burn 1.0/4.0 > 1
            t+1030m ticket reminder          4320/360 burn 1.1/4.0 > 1 spent 8.97%
            t+1150m ticket reminder          1440/120 burn 3.2/4.0 > 3 spent 17.55%
            t+1270m ticket reminder          1440/120 burn 3.6/4.0 > 3 spent 25.76%
            t+1390m ticket reminder          1440/120 burn 3.9/4.0 > 3 spent 33.63%
        "#]],
    );
}

/// Regression (issue 10): traffic stops while the page fires. The burn ends at t+27m and the
/// traffic at t+30m; the 5m window drops below the factor at t+31m and holds no events (0/0)
/// from t+35m, while the 6h/30m pair is fine; an hour later every window is at 0/0. Before,
/// a window at 0/0 made its pair "no data": it restarted the resolve clock at t+35m and then
/// held the page firing for ever, with a reminder every 2h (t+135m, t+255m). As in Sloth's
/// rules (0/0 is NaN, NaN > factor is false) a window without traffic does not burn: the page
/// resolves `resolve_timeout` after t+31m, and nothing is reminded; it recovered (the 5m
/// window was below the factor, with traffic, from t+31m) before the traffic stopped. Windows
/// without events are "no traffic", not "insufficient data": nothing is reported at t+90m.
#[test]
fn a_firing_page_resolves_when_traffic_stops_and_sends_no_reminder() {
    check(
        "4320x0.0003@2000 30x0.05@2000 3x0.0003@2000 300x0.0@0",
        330,
        expect![[r#"
            t+15m page   firing            60/5 burn 15.2/50.0 > 14.4
            t+36m page   resolved          60/5 burn 27.9/NaN > 14.4 spent 13.80%
        "#]],
    );
}

/// Regression (hardening): traffic stopped in the middle of a burn (the service went down,
/// or its counters stood still) and the page resolved as "Recovered": a window at 0/0 read
/// as ok. It is "no traffic": the resolve clock runs from t+35m (the first 5m window without
/// events), as Prometheus's rules with `keep_firing_for` would, and the page ends at t+40m
/// as "no data", never as a recovery.
#[test]
fn traffic_that_stops_during_a_burn_ends_the_page_as_no_data() {
    check(
        "4320x0.0003@2000 30x0.05@2000 60x0.0@0",
        90,
        expect![[r#"
            t+18m page   firing            60/5 burn 15.2/50.0 > 14.4
            t+40m page   resolved          60/5 burn 30.1/NaN > 14.4 spent 13.79% ended: no_data
        "#]],
    );
}

#[test]
fn low_traffic_never_pages_while_long_windows_are_below_min_events() {
    // 2 requests a minute: 120 an hour and 720 in 6h, below min_events 1000 even at 50%
    // errors, so the page tier has insufficient data. The ticket's 1d window holds 2880
    // events: it has enough to decide, and it does.
    check(
        "4320x0.0@2 120x0.5@2",
        120,
        expect![[r#"
            t+0m page   insufficient_data 60/5 burn 0.0/0.0 > 14.4
            t+9m ticket firing            1440/120 burn 3.1/37.5 > 3
        "#]],
    );
}

/// Regression: "budget spent since it fired" was the budget left at firing minus the budget
/// left now, which shrinks as old errors slide out of the 30d window. Here a burst 30 days
/// before the incident slides out while the incident burns at the same rate: the old figure
/// was about 0%. The budget spent is the incident's own bad events ÷ the bad events the
/// period allows.
#[test]
fn budget_spent_since_firing_counts_the_incidents_own_events() {
    let phases = "60x0.05@2000 43140x0.0003@2000 30x0.05@2000 240x0.0003@2000";
    check(
        phases,
        300,
        expect![[r#"
            t+48m page   firing            60/5 burn 15.2/50.0 > 14.4
            t+69m page   resolved          60/5 burn 25.2/0.3 > 14.4 spent 1.40%
        "#]],
    );
    // By hand: the page fires at minute 43218 (t+48m) and resolves at 43239 (t+69m). Since
    // firing: 12 minutes at 5% of 2000 (1200 bad) and 9 quiet minutes at 0.03% (5.4 bad). The
    // 30d window at 43239 holds minutes 40..=43239, 43200 × 2000 events, so the period allows
    // 0.1% × 86,400,000 = 86,400 bad events: 1205.4 / 86,400 = 1.40%. (Meanwhile 2100 bad
    // events of the old burst slid out of that window: budget left went up, not down.)
    let (bad, total) = counters(phases);
    let (fired, resolved) = (43_218, 43_239);
    let own = bad[resolved] - bad[fired];
    assert!((own - 1205.4).abs() < 1e-6, "{own}");
    let allowed = 0.001 * (total[resolved] - total[resolved - 43_200]);
    assert!((allowed - 86_400.0).abs() < 1e-6, "{allowed}");
    let slo = slo();
    let mut engine = Engine::new();
    let instance = engine.instance(&slo, &Vec::new());
    let mut resolution = None;
    for minute in fired - 60..=resolved {
        let mut measure = |window: Duration| {
            let start = minute.saturating_sub(window.as_secs() as usize / 60);
            Some(WindowValue::new(
                bad[minute] - bad[start],
                total[minute] - total[start],
            ))
        };
        for event in engine.evaluate(minute as i64 * 60_000, &slo, instance, &mut measure) {
            if event.change == burnwatch::alert::Change::Resolved {
                resolution = Some(event);
            }
        }
    }
    let spent = resolution
        .expect("resolved")
        .budget_spent
        .expect("a figure");
    assert!(
        (spent - own / allowed).abs() < 1e-12,
        "{spent} vs {}",
        own / allowed
    );
}

/// An SLO grouped by route, paging at once (`for: 0s`), holding for 5m; `extra` is appended
/// under `alerting:`.
fn grouped(group_by: &str, extra: &str, name: &str) -> Slo {
    let spec = format!(
        r#"version: burnwatch/v1
service: orders
slos:
  - name: {name}
    objective: 99.9
    group_by: [{group_by}]
    sli:
      ratio:
        errors: requests_total{{code="500"}}
        total: requests_total
    alerting:
      for: 0s
      resolve_timeout: 5m
{extra}"#
    );
    match load_str("spec.yaml", &spec, Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    }
}

/// Every window at `ratio` errors, 1,000 requests a minute.
fn steady(ratio: f64) -> impl FnMut(Duration) -> Option<WindowValue> {
    move |window: Duration| {
        let total = window.as_secs_f64() / 60.0 * 1000.0;
        Some(WindowValue::new(total * ratio, total))
    }
}

fn route(name: &str) -> Vec<(String, String)> {
    vec![("route".to_string(), name.to_string())]
}

/// Regression (issue 10): an instance that vanished while firing (label churn, a relabel)
/// was never evaluated again, so its page fired for ever. Absent from the answer, it is
/// evaluated as having no data: it ends `resolve_timeout` after it was last seen, saying why,
/// and the engine forgets it.
#[test]
fn an_instance_that_vanishes_while_firing_ends_after_resolve_timeout() {
    let slo = grouped("route", "", "availability");
    let mut engine = Engine::new();
    let mut out = String::new();
    for minute in 0..=10i64 {
        let now = minute * 60_000;
        let mut events = Vec::new();
        let b = engine.instance(&slo, &route("b"));
        events.extend(engine.evaluate(now, &slo, b, &mut steady(0.0)));
        if minute < 2 {
            let a = engine.instance(&slo, &route("a"));
            events.extend(engine.evaluate(now, &slo, a, &mut steady(0.1)));
        }
        events.extend(engine.evaluate_absent(now, &[&slo]));
        for event in events {
            out.push_str(&format!(
                "{minute}m {} {} {} {:?} held={}\n",
                event.labels[0].1,
                event.tier.as_str(),
                event.change.as_str(),
                event.ended,
                engine.len()
            ));
        }
    }
    expect![[r#"
        0m a page firing None held=2
        7m a page resolved Some(NoData { since: 120000 }) held=1
    "#]]
    .assert_eq(&out);
    assert_eq!(engine.export(), Vec::new());
}

/// Label churn: a new instance every minute, each burning for one evaluation and then gone.
/// The engine holds only those still within their hold, not every instance it ever saw.
#[test]
fn under_label_churn_the_engine_holds_a_bounded_set_of_instances() {
    let slo = grouped("route", "", "availability");
    let mut engine = Engine::new();
    let (mut fired, mut ended, mut most) = (0, 0, 0);
    for minute in 0..1_000i64 {
        let now = minute * 60_000;
        let id = engine.instance(&slo, &route(&format!("r{minute}")));
        let ratio = if minute % 2 == 0 { 0.1 } else { 0.0 };
        let mut events = engine.evaluate(now, &slo, id, &mut steady(ratio));
        events.extend(engine.evaluate_absent(now, &[&slo]));
        for event in events {
            match event.change.as_str() {
                "firing" => fired += 1,
                "resolved" => {
                    assert!(matches!(
                        event.ended,
                        Some(burnwatch::engine::Ending::NoData { .. })
                    ));
                    ended += 1
                }
                _ => {}
            }
        }
        most = most.max(engine.len());
    }
    assert_eq!(fired, 500);
    // Those that fired in the last five minutes are still held.
    assert_eq!(ended, 497);
    assert!(most <= 5, "the engine held {most} instances at once");
}

/// Regression (issue 10): a reload dropped or kept state by SLO id alone, so a disabled tier
/// or a changed `group_by` left its page firing. Reload matches by (SLO, tier, instance
/// labels) and retires the rest with a resolution that says why.
#[test]
fn a_reload_retires_the_alerts_it_no_longer_matches() {
    let before = [
        grouped("route", "", "availability"),
        grouped("route", "", "latency"),
        grouped("route", "", "checkout"),
        grouped("route", "", "kept"),
    ];
    let after = [
        grouped("route", "      page: {disable: true}\n", "availability"),
        grouped("route, method", "", "latency"),
        grouped("route", "", "kept"),
    ];
    let mut engine = Engine::new();
    for slo in &before {
        let id = engine.instance(slo, &route("a"));
        assert_eq!(engine.evaluate(0, slo, id, &mut steady(0.1)).len(), 1);
    }
    let mut out = String::new();
    for (slo, event) in engine.retire(60_000, &after, &before) {
        assert_eq!(slo.id, event.slo_id);
        out.push_str(&format!(
            "{} {} {} {:?}\n",
            event.slo_id,
            event.tier.as_str(),
            event.change.as_str(),
            event.ended
        ));
    }
    expect![[r#"
        orders-availability page resolved Some(TierRemoved)
        orders-latency page resolved Some(GroupByChanged)
        orders-checkout page resolved Some(SloRemoved)
    "#]]
    .assert_eq(&out);
    // The ticket tiers fired too (inhibited by the page); where the tier is still
    // configured for the same instance, its state carries over.
    let kept: Vec<String> = engine
        .export()
        .into_iter()
        .map(|alert| format!("{} {}", alert.slo_id, alert.tier.as_str()))
        .collect();
    assert_eq!(
        kept,
        [
            "orders-availability ticket",
            "orders-kept page",
            "orders-kept ticket"
        ]
    );
    assert_eq!(engine.len(), 2);
    // Without the SLO as it was (a start after the config changed), a removed SLO's
    // alert ends silently; its threads are closed by the store.
    let mut engine = Engine::new();
    let id = engine.instance(&before[2], &route("a"));
    engine.evaluate(0, &before[2], id, &mut steady(0.1));
    assert_eq!(engine.retire(60_000, &after, &[]), Vec::new());
    assert!(engine.is_empty());
}

/// A failed evaluation leaves a hole in the source's own data: "no data" while the tier's
/// short windows still reach back into it is that hole, not a vanished instance, so an
/// instance that had data until the failure starts its hold without data only once the
/// shortest short window (here 5m) lies past the failure. One that had vanished before the
/// failure keeps its clock (regression: a failure restarted it, so a flaky source kept a
/// vanished instance's alert firing for ever).
#[test]
fn a_failed_evaluation_excuses_the_hole_it_leaves_but_not_an_earlier_absence() {
    let slo = grouped("route", "", "availability");
    let ended_at = |data_until: i64| {
        let mut engine = Engine::new();
        let a = engine.instance(&slo, &route("a"));
        for minute in 0..=20i64 {
            let now = minute * 60_000;
            if minute == 4 {
                engine.hold(now, &slo.id);
                continue;
            }
            let events = if minute <= data_until {
                engine.evaluate(now, &slo, a, &mut steady(0.1))
            } else {
                engine.evaluate_absent(now, &[&slo])
            };
            if events.iter().any(|event| event.ended.is_some()) {
                return Some(minute);
            }
        }
        None
    };
    // Data until 3m, failed at 4m: excused while (now − 5m, now] holds 4m (5m to 8m),
    // without data from 9m: ends at 14m (resolve_timeout 5m).
    assert_eq!(ended_at(3), Some(14));
    // Vanished at 1m, before the failure: ends 5m later, at 6m, failure or not.
    assert_eq!(ended_at(0), Some(6));
}
