//! Sloth's own rules as the anchor. The real `sloth generate` (0.16, built by
//! `scripts/build-tools`) turns the Sloth spec burnwatch reads unchanged
//! (`examples/sloth/order-service.yml`) into Prometheus rules; a real Prometheus, 2.42 and 3.16,
//! evaluates those rules' expressions over the seed incident's recording, and burnwatch's
//! windows and page/ticket decisions over the same samples (each with the version's window
//! arithmetic) must agree with them, at every minute from two hours before the burst to the
//! end of the data.
//!
//! The recording rules are evaluated as Sloth wrote them; in the alert rules each
//! `slo:sli_error:ratio_rate<window>` reference is replaced by that rule's expression, which is
//! what the rule manager would have recorded at that instant. One difference is on purpose:
//! Sloth's 30d rule is the mean of the recorded 5m ratios, burnwatch's period window the ratio
//! of the 30 days' sums; the test measures the gap at a few instants and bounds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use burnwatch::burn::{Verdict, read_tier};
use burnwatch::config::{self, Document};
use burnwatch::demo;
use burnwatch::slo::{Slo, TierKind, format_duration};
use burnwatch::source::openmetrics;
use burnwatch::source::recorded::RecordedSlo;
use serde::Deserialize;

use crate::prom::{Prometheus, VERSIONS};

const SPEC: &str = "examples/sloth/order-service.yml";
/// Relative difference allowed between burnwatch's values and Prometheus's.
const TOLERANCE: f64 = 1e-9;

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    record: Option<String>,
    alert: Option<String>,
    expr: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Runs `sloth generate` on the spec file `spec` (relative to the repository, or absolute);
/// returns the rule file it writes.
fn sloth_generate(spec: &Path) -> String {
    let sloth = crate::tools::dir("sloth", "v0.16.0").join("sloth");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("rules.yml");
    let output = Command::new(&sloth)
        .arg("generate")
        .arg("-i")
        .arg(spec)
        .arg("-o")
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run sloth");
    assert!(
        output.status.success(),
        "sloth generate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(&out).expect("sloth's rules")
}

fn parse_rules(text: &str) -> Vec<Rule> {
    let file: RuleFile = serde_saphyr::from_str(text).expect("sloth's rules are YAML");
    file.groups
        .into_iter()
        .flat_map(|group| group.rules)
        .collect()
}

/// Runs `sloth generate` on the spec; returns its rules.
fn sloth_rules() -> Vec<Rule> {
    parse_rules(&sloth_generate(Path::new(SPEC)))
}

fn burnwatch_slo() -> Slo {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SPEC);
    match config::load_file(&path) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    }
}

/// `expr` with every `slo:sli_error:ratio_rate<w>{…}` replaced by that rule's expression.
fn inline(expr: &str, slis: &BTreeMap<String, String>) -> String {
    let reference = regex::Regex::new(r"slo:sli_error:ratio_rate(\w+)\{[^}]*\}").unwrap();
    reference
        .replace_all(expr, |captures: &regex::Captures| {
            let window = &captures[1];
            let sli = slis
                .get(window)
                .unwrap_or_else(|| panic!("no SLI rule for {window}"));
            format!("({sli})")
        })
        .into_owned()
}

fn close(ours: f64, theirs: f64) -> bool {
    if ours.is_nan() || theirs.is_nan() {
        return ours.is_nan() && theirs.is_nan();
    }
    (ours - theirs).abs() <= TOLERANCE * ours.abs().max(theirs.abs()).max(1e-12)
}

#[test]
fn sloths_generated_rules_and_burnwatch_agree_on_both_prometheus_versions() {
    let rules = sloth_rules();
    let record = |name: &str| {
        rules
            .iter()
            .find(|rule| rule.record.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("sloth wrote no {name}"))
    };
    let slo = burnwatch_slo();
    let windows: Vec<String> = slo.windows().iter().map(|w| format_duration(*w)).collect();
    assert_eq!(windows, ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]);
    // Every window burnwatch uses is one Sloth records, with Sloth's labels.
    let slis: BTreeMap<String, String> = windows
        .iter()
        .map(|window| {
            let rule = record(&format!("slo:sli_error:ratio_rate{window}"));
            assert_eq!(rule.labels["sloth_id"], slo.id);
            assert_eq!(rule.labels["sloth_window"], *window);
            (window.clone(), rule.expr.trim().to_string())
        })
        .collect();
    let alert = |severity: &str| {
        let rule = rules
            .iter()
            .find(|rule| {
                rule.alert.is_some()
                    && rule.labels.get("sloth_severity").map(String::as_str) == Some(severity)
            })
            .unwrap_or_else(|| panic!("sloth wrote no {severity} alert"));
        assert_eq!(rule.alert.as_deref(), slo.alert_name.as_deref());
        inline(&rule.expr, &slis)
    };
    let alerts = [
        (TierKind::Page, alert("page")),
        (TierKind::Ticket, alert("ticket")),
    ];

    let text = demo::recording_text();
    let (start, end) = (
        (demo::BURST_START - 2 * 3_600) as f64,
        (demo::END - 60) as f64,
    );
    let mut report = Vec::new();
    for version in VERSIONS {
        let mut recording = openmetrics::parse("seed.om", &text).expect("the seed recording");
        recording.semantics = version.semantics();
        let mut bound = RecordedSlo::bind(&slo, &recording).expect("binds");
        let prom = Prometheus::start_version(version, &text);
        let route_of =
            |labels: &BTreeMap<String, String>| labels.get("route").cloned().unwrap_or_default();
        let routes: Vec<String> = bound
            .instances
            .iter()
            .map(|instance| instance.labels[0].1.clone())
            .collect();
        let index_of = |route: &str| routes.iter().position(|known| known == route);
        assert_eq!(routes.len(), 2, "{routes:?}");

        // The SLI recordings, window by window.
        let (mut values, mut differing) = (0usize, Vec::new());
        for (window, expr) in &slis {
            let length = burnwatch::slo::parse_duration(window).expect("a window");
            for (labels, points) in prom.query_range(expr, start, end, 60.0) {
                let route = route_of(&labels);
                let index = index_of(&route).unwrap_or_else(|| panic!("no instance {route}"));
                for (at, theirs) in points {
                    let ours = bound
                        .measure(&recording, index, at, length)
                        .map(|value| value.error_ratio);
                    values += 1;
                    if !ours.is_some_and(|ours| close(ours, theirs)) {
                        differing.push(format!(
                            "{window} {route} at {at}: sloth {theirs}, burnwatch {ours:?}"
                        ));
                    }
                }
            }
        }
        assert!(
            differing.is_empty(),
            "Prometheus {}: {} of {values} recorded values differ:\n{}",
            version.number(),
            differing.len(),
            differing[..differing.len().min(20)].join("\n")
        );
        // 7 windows × 2 routes × 5 hours of minutes.
        assert!(values >= 7 * 2 * 290, "{values} values compared");

        // The alert rules' conditions against burnwatch's tier verdicts, minute by minute.
        let mut decisions = 0usize;
        let mut burning_minutes = BTreeMap::new();
        for (kind, expr) in &alerts {
            let tier = slo
                .tiers
                .iter()
                .find(|tier| tier.kind == *kind)
                .expect("the tier");
            let mut sloth_fires: BTreeSet<(String, i64)> = BTreeSet::new();
            for (labels, points) in prom.query_range(expr, start, end, 60.0) {
                for (at, _) in points {
                    sloth_fires.insert((route_of(&labels), at));
                }
            }
            let mut burning = 0;
            let mut at = (start * 1000.0) as i64;
            while at <= (end * 1000.0) as i64 {
                for route in &routes {
                    let index = index_of(route).expect("an instance");
                    let mut measure =
                        |window: Duration| bound.measure(&recording, index, at, window);
                    let verdict =
                        read_tier(tier, slo.objective, slo.min_events, &mut measure).verdict;
                    let ours = verdict == Verdict::Burning;
                    let theirs = sloth_fires.contains(&(route.clone(), at));
                    decisions += 1;
                    burning += usize::from(ours);
                    assert_eq!(
                        ours,
                        theirs,
                        "Prometheus {}: {kind} at {at} on {route}: burnwatch {verdict:?}, Sloth's alert rule {}",
                        version.number(),
                        if theirs { "firing" } else { "quiet" }
                    );
                }
                at += 60_000;
            }
            burning_minutes.insert(kind.to_string(), burning);
        }
        assert!(
            burning_minutes["page"] >= 10,
            "the burst burns the page: {burning_minutes:?}"
        );

        // Sloth's 30d rule, the mean of the 5m ratios recorded every minute, against
        // burnwatch's ratio of sums over the period: not the same estimator, so bounded.
        let mean_of_ratios = format!("avg_over_time(({})[30d:1m])", slis["5m"]);
        let mut worst: f64 = 0.0;
        for at in [
            demo::BURST_START - 600,
            demo::BURST_START + 1_800,
            demo::END - 60,
        ] {
            for (labels, mean) in prom.query(&mean_of_ratios, at as f64) {
                let index = index_of(&route_of(&labels)).expect("an instance");
                let ratio = bound
                    .measure(&recording, index, at * 1000, slo.period)
                    .expect("a period value")
                    .error_ratio;
                let gap = (mean - ratio).abs() / ratio;
                worst = worst.max(gap);
                assert!(
                    gap < 0.05,
                    "30d at {at}: Sloth's mean of 5m ratios {mean}, burnwatch's ratio of sums {ratio}"
                );
            }
        }
        report.push(format!(
            "Prometheus {}: {values} recorded values and {decisions} decisions compared, none \
             differing; burning minutes {burning_minutes:?}; the 30d estimators differ by at \
             most {:.2}%",
            version.number(),
            worst * 100.0
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// A Sloth spec over `serve::backfill`'s counters, with labels on the file and on the SLO.
const SERIES_SPEC: &str = r#"version: "prometheus/v1"
service: "order-service"
labels:
  team: orders
slos:
  - name: "requests-availability"
    objective: 99.9
    labels:
      owner: checkout
    sli:
      events:
        error_query: sum by (route) (rate(http_requests_total{code=~"5.."}[{{.window}}]))
        total_query: sum by (route) (rate(http_requests_total[{{.window}}]))
    alerting:
      name: OrderServiceErrorBudgetBurn
      labels:
        category: availability
      page_alert:
        labels:
          severity: critical
      ticket_alert:
        labels:
          severity: warning
"#;

type LabelSets = BTreeMap<String, BTreeSet<BTreeMap<String, String>>>;

/// Sloth's series as Prometheus records them and burnwatch's `/metrics`: the same names and,
/// per name, the same label sets (keys and values), for one Sloth spec that both read: a
/// real Prometheus 2.42 evaluates the rules `sloth generate` writes for it over backfilled
/// counters while `burnwatch serve` evaluates the spec over the same Prometheus. Only
/// `sloth_slo_info`'s `sloth_version` and `sloth_mode` say burnwatch instead of Sloth. The
/// per-SLO values (objective, error budget, period in days, info) are compared too; the
/// ratios' values are `serve::metrics_have_sloth_series_matching_prometheus`'s.
#[test]
fn metrics_have_sloths_series_names_and_labels() {
    use crate::serve::{Setup, backfill, find_slo, now_ms, parse_metrics};
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = dir.path().join("order-service.yml");
    std::fs::write(&spec, SERIES_SPEC).expect("write spec");
    let rules_text = sloth_generate(&spec);
    let names: BTreeSet<String> = parse_rules(&rules_text)
        .into_iter()
        .filter_map(|rule| rule.record)
        .collect();
    for name in [
        "sloth_slo_info",
        "slo:time_period:days",
        "slo:objective:ratio",
        "slo:period_error_budget_remaining:ratio",
    ] {
        assert!(names.contains(name), "sloth records no {name}: {names:?}");
    }

    let prom =
        crate::prom::Prometheus::start_with_rules(&backfill(now_ms() / 1000 - 60), &rules_text);
    let setup = Setup::new(&prom.url(), "");
    setup.write_spec(SERIES_SPEC);
    let serve = setup.serve();
    serve.wait_ready();
    serve.wait_for("both routes evaluated", || {
        let slo = find_slo(&serve.slos())?;
        (slo["state"] == "ok" && slo["instances"].as_array()?.len() == 2).then_some(())
    });

    // Sloth's, once Prometheus has recorded every rule for both routes (the rules depend
    // on each other, so it takes a few evaluations).
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    let theirs: LabelSets = serve.wait_for("every series Sloth's rules record", || {
        let at = now_ms() as f64 / 1000.0;
        let mut sets = LabelSets::new();
        for name in &names {
            let found = prom.query(&format!("{{__name__={name:?}}}"), at);
            if found.is_empty() {
                return None;
            }
            for (mut labels, value) in found {
                labels.remove("__name__");
                values.insert(name.clone(), value);
                sets.entry(name.clone()).or_default().insert(labels);
            }
        }
        let per_instance = sets["slo:period_error_budget_remaining:ratio"].len();
        (per_instance == 2 && sets["slo:sli_error:ratio_rate5m"].len() == 2).then_some(sets)
    });
    let mut theirs = theirs;
    // Sloth's own mode and version, which burnwatch does not claim.
    let info = theirs.remove("sloth_slo_info").expect("sloth_slo_info");
    let info = info
        .into_iter()
        .map(|mut labels| {
            assert_eq!(
                labels.get("sloth_version").map(String::as_str),
                Some("v0.16.0")
            );
            assert_eq!(
                labels.get("sloth_mode").map(String::as_str),
                Some("cli-gen-prom")
            );
            labels.insert(
                "sloth_version".into(),
                burnwatch::metrics::SLOTH_VERSION.into(),
            );
            labels.insert("sloth_mode".into(), burnwatch::metrics::SLOTH_MODE.into());
            labels
        })
        .collect();
    theirs.insert("sloth_slo_info".into(), info);

    let (ours, our_values) = serve.wait_for("burnwatch's series for both routes", || {
        let (status, text) = serve.get("/metrics");
        assert_eq!(status, 200, "{text}");
        let mut sets = LabelSets::new();
        let mut values = BTreeMap::new();
        for (name, labels, value) in parse_metrics(&text) {
            if name.starts_with("slo:") || name == "sloth_slo_info" {
                values.insert(name.clone(), value);
                sets.entry(name).or_default().insert(labels);
            }
        }
        (sets
            .get("slo:sli_error:ratio_rate5m")
            .is_some_and(|found| found.len() == 2))
        .then_some((sets, values))
    });
    let only = |from: &LabelSets, other: &LabelSets| -> Vec<String> {
        from.iter()
            .flat_map(|(name, sets)| {
                sets.iter()
                    .filter(move |labels| {
                        !other.get(name).is_some_and(|found| found.contains(*labels))
                    })
                    .map(move |labels| format!("{name}{labels:?}"))
            })
            .collect()
    };
    let (sloth_only, burnwatch_only) = (only(&theirs, &ours), only(&ours, &theirs));
    assert!(
        sloth_only.is_empty() && burnwatch_only.is_empty(),
        "series and labels differ.\nonly Sloth's rules record:\n{}\nonly burnwatch exports:\n{}",
        sloth_only.join("\n"),
        burnwatch_only.join("\n")
    );
    for name in [
        "slo:objective:ratio",
        "slo:error_budget:ratio",
        "slo:time_period:days",
        "sloth_slo_info",
    ] {
        assert!(
            close(our_values[name], values[name]),
            "{name}: burnwatch {}, Sloth {}",
            our_values[name],
            values[name]
        );
    }
}

/// Every label an alert of Sloth's rules carries at Alertmanager (`alertname`, the alert
/// rule's labels with `sloth_severity`, the recorded series' labels but `sloth_window`, the
/// instance's) is on burnwatch's alert of the same tier with the same value, so Alertmanager
/// routes, inhibitions and silences written for Sloth's alerts match burnwatch's.
#[test]
fn alert_labels_include_every_label_of_sloths_alerts() {
    let rules = sloth_rules();
    let slo = burnwatch_slo();
    let recorded = rules
        .iter()
        .find(|rule| rule.record.as_deref() == Some("slo:sli_error:ratio_rate5m"))
        .expect("sloth records the 5m ratio");
    let instance = [("route".to_string(), "POST /orders".to_string())];
    for (kind, severity) in [(TierKind::Page, "page"), (TierKind::Ticket, "ticket")] {
        let rule = rules
            .iter()
            .find(|rule| {
                rule.alert.is_some()
                    && rule.labels.get("sloth_severity").map(String::as_str) == Some(severity)
            })
            .unwrap_or_else(|| panic!("sloth wrote no {severity} alert"));
        let mut theirs: BTreeMap<String, String> = recorded.labels.clone();
        theirs.remove("sloth_window");
        theirs.extend(instance.iter().cloned());
        theirs.extend(rule.labels.clone());
        theirs.insert("alertname".into(), rule.alert.clone().expect("an alert"));
        let ours: BTreeMap<String, String> =
            burnwatch::notify::render::alert_labels(&slo, kind, &instance)
                .into_iter()
                .collect();
        let missing: Vec<String> = theirs
            .iter()
            .filter(|(name, value)| ours.get(*name) != Some(value))
            .map(|(name, value)| format!("{name}={value:?} (burnwatch: {:?})", ours.get(name)))
            .collect();
        assert!(
            missing.is_empty(),
            "{kind}: labels of Sloth's alert burnwatch's lacks: {missing:?}\nours: {ours:?}"
        );
    }
}
