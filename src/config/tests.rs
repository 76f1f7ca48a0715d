//! Spec reading: good specs map to the model, bad specs give the exact located error.

use std::path::Path;
use std::time::Duration;

use super::{Document, load_str};
use crate::slo::{Sli, Slo, TierKind};

fn slos(text: &str) -> Vec<Slo> {
    match load_str("rules/orders.yaml", text, Path::new(".")) {
        Ok(Document::Slos(slos)) => slos,
        other => panic!("expected SLOs, got {other:?}"),
    }
}

/// Loads `text` and returns its errors, one per line.
fn errors(text: &str) -> String {
    match load_str("rules/orders.yaml", text, Path::new(".")) {
        Ok(document) => panic!("expected errors, got {document:?}"),
        Err(errors) => errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

const NATIVE: &str = r#"version: burnwatch/v1
service: order-service
slos:
  - name: availability
    objective: 99.9
    sli:
      ratio:
        errors: http_requests_total{code=~"5.."}
        total: http_requests_total
"#;

#[test]
fn native_defaults() {
    let slo = &slos(NATIVE)[0];
    assert_eq!(slo.id, "order-service-availability");
    assert_eq!(slo.period, Duration::from_secs(30 * 86_400));
    assert_eq!(slo.tiers.len(), 2);
    let page = slo.tier(TierKind::Page).unwrap();
    assert_eq!(page.windows.len(), 2);
    assert!((page.windows[0].factor - 14.4).abs() < 1e-9);
    assert_eq!(page.timing.resolve_timeout, Duration::from_secs(300));
    assert_eq!(page.timing.repeat_interval, Duration::from_secs(4 * 3600));
    assert_eq!(
        slo.sli.error_ratio_template(),
        "(sum (rate(http_requests_total{code=~\"5..\"}[{{.window}}])))\n/\n(sum (rate(http_requests_total[{{.window}}])))"
    );
}

#[test]
fn native_period_scales_factors_and_tiers_can_be_tuned() {
    let text = r#"version: burnwatch/v1
service: checkout
slos:
  - name: latency
    objective: 99
    period: 28d
    group_by: [route]
    sli:
      latency:
        histogram: http_request_duration_seconds{job="checkout"}
        threshold: 0.3
    alerting:
      resolve_timeout: 10m
      page:
        for: 2m
        windows:
          - {long: 1h, short: 5m, factor: 10}
      ticket:
        disable: true
"#;
    let slo = &slos(text)[0];
    assert_eq!(slo.tiers.len(), 1);
    let page = &slo.tiers[0];
    assert_eq!(page.windows[0].factor, 10.0);
    assert_eq!(page.timing.for_, Duration::from_secs(120));
    assert_eq!(page.timing.resolve_timeout, Duration::from_secs(600));
    let Sli::Latency { good, total, .. } = &slo.sli else {
        panic!("latency SLI")
    };
    // The bucket bound in every spelling (`0.3`, `0.30`, `3e-01`): see bucket_bound_pattern.
    assert_eq!(
        good.template(),
        format!(
            "sum by (route) (rate(http_request_duration_seconds_bucket{{job=\"checkout\",le=~\"{}\"}}[{{{{.window}}}}]))",
            crate::query::bucket_bound_pattern(0.3).replace('\\', "\\\\")
        )
    );
    let bucket = |le: &str| {
        [
            ("__name__", "http_request_duration_seconds_bucket"),
            ("job", "checkout"),
            ("le", le),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
    };
    assert!(good.selects(&bucket("0.3")) && good.selects(&bucket("0.30")));
    assert!(!good.selects(&bucket("0.03")) && !good.selects(&bucket("3")));
    assert_eq!(
        total.template(),
        "sum by (route) (rate(http_request_duration_seconds_count{job=\"checkout\"}[{{.window}}]))"
    );
    // Same budget share over a 28d period: 2% × 28d / 1h = 13.44.
    let text = text.replace(
        "          - {long: 1h, short: 5m, factor: 10}",
        "          - {long: 1h, short: 5m, budget_percent: 2}",
    );
    assert!((slos(&text)[0].tiers[0].windows[0].factor - 13.44).abs() < 1e-9);
}

const SLOTH: &str = r##"version: "prometheus/v1"
service: "myservice"
labels:
  owner: "myteam"
slos:
  - name: "requests-availability"
    objective: 99.9
    description: "Common SLO based on availability for HTTP request responses."
    labels:
      category: availability
    sli:
      events:
        error_query: sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
    alerting:
      name: "MyServiceHighErrorRate"
      labels:
        category: "availability"
      annotations:
        summary: "High error rate on 'myservice' requests responses"
        runbook: "https://runbooks.example.com/myservice"
      page_alert:
        labels:
          severity: "pageteam"
          routing_key: "myteam"
      ticket_alert:
        labels:
          severity: "slack"
          slack_channel: "#alerts-myteam"
  - name: "requests-latency"
    objective: 99
    sli:
      raw:
        error_ratio_query: |
          1 - (
            sum(rate(http_request_duration_seconds_bucket{job="myservice",le="0.25"}[{{.window}}]))
            /
            sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
          )
    alerting:
      page_alert:
        disable: true
  - name: "queue-errors"
    objective: 95
    sli:
      raw:
        error_ratio_query: max_over_time(queue_error_ratio[{{.window}}])
    alerting:
      ticket_alert:
        disable: true
"##;

#[test]
fn sloth_specs_are_read_unchanged() {
    let slos = slos(SLOTH);
    assert_eq!(slos.len(), 3);
    let availability = &slos[0];
    assert_eq!(availability.id, "myservice-requests-availability");
    assert_eq!(
        availability.runbook.as_deref(),
        Some("https://runbooks.example.com/myservice")
    );
    assert_eq!(
        availability.alert_name.as_deref(),
        Some("MyServiceHighErrorRate")
    );
    assert_eq!(
        availability.labels.get("owner").map(String::as_str),
        Some("myteam")
    );
    let page = availability.tier(TierKind::Page).unwrap();
    assert_eq!(
        page.labels.get("severity").map(String::as_str),
        Some("pageteam")
    );
    assert_eq!(
        page.labels.get("category").map(String::as_str),
        Some("availability")
    );
    assert!(availability.sli.local().is_ok());

    let latency = &slos[1];
    assert_eq!(
        latency
            .tiers
            .iter()
            .map(|tier| tier.kind)
            .collect::<Vec<_>>(),
        vec![TierKind::Ticket]
    );
    assert!(
        latency.sli.local().is_ok(),
        "1 - (good / total) is evaluated locally"
    );

    let queue = &slos[2];
    assert_eq!(
        queue.sli.local().unwrap_err(),
        "expected `A / B` or `1 - (A / B)` over `sum(rate(...))` queries"
    );
}

#[test]
fn sloth_grouping_comes_from_sum_by() {
    let text = SLOTH.replace(
        "sum(rate(http_request_duration_seconds_count{job=\"myservice\",code",
        "sum by (route) (rate(http_request_duration_seconds_count{job=\"myservice\",code",
    );
    assert_eq!(
        errors(&text),
        "rules/orders.yaml:13:22: slos[0].sli.events.error_query: groups by (route) but total_query groups by (); both must group by the same labels"
    );
    let text = text.replace("total_query: sum(", "total_query: sum by (route) (");
    assert_eq!(slos(&text)[0].group_by, vec!["route".to_string()]);
}

#[test]
fn bad_specs_name_file_line_column_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "objective: 99.9",
            "objective: 100.5",
            "rules/orders.yaml:5:16: slos[0].objective: 100.5 is not a percentage in (0, 100)",
        ),
        (
            "objective: 99.9",
            "objective: high",
            "rules/orders.yaml:5:16: slos[0].objective: invalid floating point",
        ),
        (
            "objective: 99.9",
            "objective: 99.9\n    period: thirty",
            "rules/orders.yaml:6:13: slos[0].period: \"thirty\" is not a duration such as 30s, 5m, 1h30m or 30d",
        ),
        (
            "objective: 99.9",
            "objectiv: 99.9",
            "rules/orders.yaml:5:5: slos[0].objectiv: unknown field `objectiv`, expected one of name, objective, period, description, sli, group_by, min_events, labels, runbook, dashboard, alerting",
        ),
        (
            "total: http_requests_total",
            "total: sum(rate(http_requests_total[5m]))",
            "rules/orders.yaml:9:16: slos[0].sli.ratio.total: expected a series selector such as `http_requests_total{code=~\"5..\"}`, not a query: \"sum(rate(http_requests_total[5m]))\"",
        ),
        (
            "errors: http_requests_total{code=~\"5..\"}",
            "errors: http_requests_total{code=~\"5..\"",
            "rules/orders.yaml:8:17: slos[0].sli.ratio.errors: invalid series selector: unexpected end of input inside braces",
        ),
        (
            "      ratio:",
            "      raw:\n        error_ratio: sum(rate(x[5m]))\n      ratio:",
            "rules/orders.yaml:7:7: slos[0].sli: expected exactly one of `ratio`, `latency` or `raw`",
        ),
        (
            "version: burnwatch/v1",
            "version: burnwatch/v2",
            "rules/orders.yaml:1:10: version: \"burnwatch/v2\" is not a known version; expected \"burnwatch/v1\" (burnwatch) or \"prometheus/v1\" (Sloth)",
        ),
        (
            "service: order-service",
            "service: order-service\nservice: other",
            "rules/orders.yaml:3:1: duplicate mapping key: service, set DuplicateKeyPolicy in Options if acceptable",
        ),
        // Regression: these loaded, and `serve` then reserved gigabytes of hourly buckets (30y),
        // paged on one error (0s: factor 0), reminded every cycle (repeat_interval 0s), or
        // measured windows longer than the period it keeps.
        (
            "objective: 99.9",
            "objective: 99.9\n    period: 30y",
            "rules/orders.yaml:6:13: slos[0].period: 30y is not a period between 1h and 90d",
        ),
        (
            "objective: 99.9",
            "objective: 99.9\n    period: 0s",
            "rules/orders.yaml:6:13: slos[0].period: 0s is not a period between 1h and 90d",
        ),
        (
            "objective: 99.9",
            "objective: 99.9\n    period: 91d",
            "rules/orders.yaml:6:13: slos[0].period: 91d is not a period between 1h and 90d",
        ),
        (
            "objective: 99.9",
            "objective: 99.9\n    period: 59m",
            "rules/orders.yaml:6:13: slos[0].period: 59m is not a period between 1h and 90d",
        ),
        (
            "objective: 99.9",
            "objective: 99.9\n    period: 1d",
            "rules/orders.yaml:6:13: slos[0].period: 1d is shorter than the ticket tier's default 3d window; give alerting.ticket.windows no longer than the period, or disable the tier",
        ),
        (
            "total: http_requests_total",
            "total: http_requests_total\n    alerting:\n      repeat_interval: 0s",
            "rules/orders.yaml:11:24: slos[0].alerting.repeat_interval: must be at least 1s",
        ),
        (
            "total: http_requests_total",
            "total: http_requests_total\n    alerting:\n      page:\n        repeat_interval: 0s",
            "rules/orders.yaml:12:26: slos[0].alerting.page.repeat_interval: must be at least 1s",
        ),
        (
            "objective: 99.9",
            "objective: 99.9\n    period: 2h\n    alerting:\n      ticket: {disable: true}\n      page:\n        windows: [{long: 3h, short: 5m, factor: 10}]",
            "rules/orders.yaml:10:26: slos[0].alerting.page.windows[0].long: 3h is longer than the period 2h",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(NATIVE.contains(from), "{from}");
        let text = NATIVE.replacen(from, to, 1);
        let result = load_str("rules/orders.yaml", &text, Path::new("."));
        let Err(found) = result else {
            panic!("replacing {from:?} with {to:?} gave no error")
        };
        let found: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            found.join("\n"),
            *expected,
            "replacing {from:?} with {to:?}"
        );
    }
}

/// The bounds let through what the shipped specs and tests use: an hour's period with
/// windows of seconds, a quarter, reminders every second, a tier's windows up to the period.
#[test]
fn periods_and_repeat_intervals_at_their_bounds_load() {
    let cases = [
        (
            "    period: 1h\n    alerting:\n      repeat_interval: 1s\n      page:\n        windows: [{long: 20s, short: 5s, factor: 10}]\n      ticket: {disable: true}\n",
            Duration::from_secs(3600),
        ),
        ("    period: 90d\n", Duration::from_secs(90 * 86_400)),
        ("    period: 3d\n", Duration::from_secs(3 * 86_400)),
        (
            "    period: 1d\n    alerting:\n      ticket:\n        windows: [{long: 1d, short: 2h, budget_percent: 10}]\n",
            Duration::from_secs(86_400),
        ),
    ];
    for (extra, period) in cases {
        let slo = &slos(&format!("{NATIVE}{extra}"))[0];
        assert_eq!(slo.period, period, "{extra}");
    }
}

/// `serve` would tick without pause, or call every failure stale, at 0s: both need 1s or more.
#[test]
fn daemon_intervals_of_zero_are_refused() {
    let cases = [
        (
            "evaluation_interval: 0s\n",
            "burnwatch.yaml:3:22: evaluation_interval: must be at least 1s",
        ),
        (
            "stale_after: 0s\n",
            "burnwatch.yaml:3:14: stale_after: must be at least 1s",
        ),
        (
            "evaluation_interval: 500ms\n",
            "burnwatch.yaml:3:22: evaluation_interval: must be at least 1s",
        ),
        // Regression (hardening): accepted, and the daemon never evaluated.
        (
            "evaluation_interval: 99999999999999d\n",
            "burnwatch.yaml:3:22: evaluation_interval: must be at most 366d",
        ),
        (
            "evaluation_interval: 2h\n",
            "burnwatch.yaml:3:22: evaluation_interval: must be at most 1h (a page would wait that long to be seen)",
        ),
    ];
    for (line, expected) in cases {
        let text = format!("prometheus:\n  url: http://127.0.0.1:9090\n{line}rules: [rules]\n");
        match load_str("burnwatch.yaml", &text, Path::new(".")) {
            Ok(document) => panic!("{line}: expected errors, got {document:?}"),
            Err(errors) => assert_eq!(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                expected,
                "{line}"
            ),
        }
    }
}

#[test]
fn max_concurrency_is_a_number_of_requests() {
    for (value, expected) in [
        (
            "0",
            Some(
                "burnwatch.yaml:3:20: prometheus.max_concurrency: 0 is not a number of requests between 1 and 1024",
            ),
        ),
        (
            "5000",
            Some(
                "burnwatch.yaml:3:20: prometheus.max_concurrency: 5000 is not a number of requests between 1 and 1024",
            ),
        ),
        ("4", None),
    ] {
        let text = format!(
            "prometheus:\n  url: http://127.0.0.1:9090\n  max_concurrency: {value}\nrules: [rules]\n"
        );
        match (load_str("burnwatch.yaml", &text, Path::new(".")), expected) {
            (Ok(Document::Daemon(config)), None) => {
                assert_eq!(config.prometheus.expect("prometheus").max_concurrency, 4)
            }
            (Err(errors), Some(expected)) => assert_eq!(errors[0].to_string(), expected),
            (other, _) => panic!("{value}: {other:?}"),
        }
    }
}

#[test]
fn bad_tiers_and_windows() {
    let text = format!(
        "{NATIVE}    alerting:\n      page:\n        windows:\n          - {{long: 5m, short: 1h, factor: 14.4}}\n          - {{long: 1h, short: 5m}}\n      ticket:\n        resolve_timeout: soon\n"
    );
    assert_eq!(
        errors(&text),
        "rules/orders.yaml:13:31: slos[0].alerting.page.windows[0]: short window 1h must be shorter than long window 5m\n\
         rules/orders.yaml:14:20: slos[0].alerting.page.windows[1]: expected exactly one of `budget_percent` or `factor`\n\
         rules/orders.yaml:16:26: slos[0].alerting.ticket.resolve_timeout: \"soon\" is not a duration such as 30s, 5m, 1h30m or 30d"
    );
}

#[test]
fn sloth_errors_and_unsupported_parts() {
    let plugin = SLOTH.replacen(
        "      events:\n        error_query: sum(rate(http_request_duration_seconds_count{job=\"myservice\",code=~\"(5..|429)\"}[{{.window}}]))\n        total_query: sum(rate(http_request_duration_seconds_count{job=\"myservice\"}[{{.window}}]))",
        "      plugin:\n        id: \"sloth-common/kubernetes/apiserver/availability\"",
        1,
    );
    assert_eq!(
        errors(&plugin),
        "rules/orders.yaml:13:13: slos[0].sli.plugin.id: SLI plugins are not supported (\"sloth-common/kubernetes/apiserver/availability\"); write the plugin's queries as `events` or `raw`"
    );
    let no_window = SLOTH.replacen(
        "[{{.window}}]))\n        total_query",
        "[5m]))\n        total_query",
        1,
    );
    assert_eq!(
        errors(&no_window),
        "rules/orders.yaml:13:22: slos[0].sli.events.error_query: expected `{{.window}}` where the range goes, e.g. `rate(x[{{.window}}])`"
    );
    let crd = "apiVersion: sloth.slok.dev/v1\nkind: PrometheusServiceLevel\n";
    assert_eq!(
        errors(crd),
        "rules/orders.yaml:1:1: apiVersion: \"sloth.slok.dev/v1\" (a Kubernetes resource) is not supported; use Sloth's `version: \"prometheus/v1\"` file format"
    );
}

#[test]
fn unrecognised_event_shapes_are_kept_for_the_prometheus_source() {
    let text = SLOTH.replacen(
        "sum(rate(http_request_duration_seconds_count{job=\"myservice\",code=~\"(5..|429)\"}[{{.window}}]))",
        "sum(increase(errors_total[{{.window}}])) or vector(0)",
        1,
    );
    let slo = &slos(&text)[0];
    let Sli::Raw {
        error_ratio_query, ..
    } = &slo.sli
    else {
        panic!("raw")
    };
    assert!(
        error_ratio_query.starts_with("(sum(increase(errors_total[{{.window}}])) or vector(0))")
    );
    assert!(slo.sli.local().unwrap_err().starts_with("error_query: "));
}

#[test]
fn several_documents_in_one_file_keep_their_line_numbers() {
    let second = SLOTH.replace("service: \"myservice\"", "service: \"other\"");
    let text = format!("---\n{SLOTH}---\n{second}");
    assert_eq!(slos(&text).len(), 6);
    let broken = format!(
        "---\n{SLOTH}---\n{}",
        second.replace("objective: 99.9", "objective: 0")
    );
    let first_document_lines = SLOTH.lines().count() + 2;
    assert_eq!(
        errors(&broken),
        format!(
            "rules/orders.yaml:{}:16: slos[0].objective: 0 is not a percentage in (0, 100)",
            first_document_lines + 7
        )
    );
}

#[test]
fn sloth_plugin_chains_are_accepted_and_ignored() {
    let text = SLOTH.replace(
        "slos:\n",
        "slo_plugins:\n  chain:\n    - id: sloth.dev/core/alert_rules/v1\nslos:\n",
    );
    let text = text.replacen(
        "    objective: 99.9\n",
        "    objective: 99.9\n    plugins:\n      chain: [{id: x}]\n",
        1,
    );
    assert_eq!(slos(&text).len(), 3);
}

const DAEMON: &str = r##"prometheus:
  url: http://127.0.0.1:9090
rules: [rules]
notify:
  slack:
    token_env: SLACK_BOT_TOKEN
  routes:
    - matchers: ['service=~"pay.*"', 'tier="page"']
      slack_channel: "#payments-oncall"
    - matchers: ['tier="ticket"']
    - slack_channel: "#incidents"
  alertmanager:
    url: http://alertmanager:9093/
  webhooks:
    - name: ops
      url_file: secrets/ops-url
  silences:
    - matchers: ['slo="availability"']
      ends_at: 2026-12-01T00:00:00Z
      comment: migration
  console: false
"##;

#[test]
fn notify_section_maps_routes_sinks_and_silences() {
    let config = match load_str("burnwatch.yaml", DAEMON, Path::new("/etc/burnwatch")) {
        Ok(Document::Daemon(config)) => config,
        other => panic!("expected a daemon config, got {other:?}"),
    };
    let notify = &config.notify;
    use super::notify::{SecretSource, SlackMode};
    assert_eq!(
        notify.slack.as_ref().map(|slack| &slack.mode),
        Some(&SlackMode::WebApi {
            token: SecretSource::Env("SLACK_BOT_TOKEN".to_string()),
            api_url: "https://slack.com/api".to_string(),
        })
    );
    let channels: Vec<Option<&str>> = notify
        .routes
        .iter()
        .map(|route| route.slack_channel.as_deref())
        .collect();
    assert_eq!(
        channels,
        [Some("#payments-oncall"), None, Some("#incidents")]
    );
    assert_eq!(
        notify.routes[0].matchers[0].to_string(),
        "service=~\"pay.*\""
    );
    let am = notify.alertmanager.as_ref().expect("alertmanager");
    assert_eq!(am.url, "http://alertmanager:9093");
    assert_eq!(am.resend_interval, Duration::from_secs(60));
    assert_eq!(
        notify.webhooks[0].url,
        SecretSource::File("/etc/burnwatch/secrets/ops-url".into())
    );
    assert_eq!(notify.silences[0].ends_at, 1_796_083_200_000);
    assert!(!notify.console);
    // Without a notify section: console only, default routes.
    let bare = "prometheus:\n  url: http://127.0.0.1:9090\nrules: [rules]\n";
    let Ok(Document::Daemon(config)) = load_str("b.yaml", bare, Path::new(".")) else {
        panic!("bare config")
    };
    assert!(config.notify.slack.is_none() && config.notify.console);
    assert_eq!(config.notify.routes.len(), 2);
}

#[test]
fn bad_notify_sections_name_file_line_column_and_field() {
    let cases = [
        (
            "notify:\n  slack:\n    api_url: http://x\n",
            "burnwatch.yaml:6:5: notify.slack: needs token_file or token_env (a bot token), or webhook_url_file",
        ),
        (
            "notify:\n  slack:\n    token_file: t\n    webhook_url_file: w\n",
            "notify.slack: set a bot token (Web API) or webhook_url_file (incoming webhook), not both",
        ),
        (
            "notify:\n  routes:\n    - matchers: ['tier=~\"(\"']\n      slack_channel: '#x'\n",
            "burnwatch.yaml:6:18: notify.routes[0].matchers[0]: \"tier=~\\\"(\\\"\": bad regex",
        ),
        (
            "notify:\n  alertmanager:\n    url: alertmanager:9093\n",
            "burnwatch.yaml:6:10: notify.alertmanager.url: \"alertmanager:9093\" is not an http:// or https:// URL",
        ),
        (
            "notify:\n  silences:\n    - matchers: ['a=\"b\"']\n      ends_at: tomorrow\n",
            "burnwatch.yaml:7:16: notify.silences[0].ends_at:",
        ),
        (
            "notify:\n  webhooks:\n    - name: ops\n",
            "burnwatch.yaml:6:7: notify.webhooks[0]: needs url_file or url_env",
        ),
        (
            "notify:\n  slack:\n    token_file: t\n    channel: '#x'\n",
            "burnwatch.yaml:7:5: notify.slack.channel: unknown field `channel`",
        ),
    ];
    for (notify, expected) in cases {
        let text = format!("prometheus:\n  url: http://127.0.0.1:9090\nrules: [rules]\n{notify}");
        let errors = match load_str("burnwatch.yaml", &text, Path::new(".")) {
            Ok(document) => panic!("{notify}: expected errors, got {document:?}"),
            Err(errors) => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        };
        assert!(
            errors.contains(expected),
            "{notify}\nexpected {expected}\ngot {errors}"
        );
    }
}

fn daemon_config(state: &str) -> Result<super::DaemonConfig, String> {
    let text = format!("prometheus:\n  url: http://127.0.0.1:9090\nrules: [rules]\n{state}");
    match load_str("burnwatch.yaml", &text, Path::new("/etc/burnwatch")) {
        Ok(Document::Daemon(config)) => Ok(*config),
        Ok(other) => panic!("expected a daemon config, got {other:?}"),
        Err(errors) => Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

#[test]
fn daemon_state_defaults_to_sqlite_and_maps_postgres() {
    use super::StateBackend;
    let default = daemon_config("").unwrap();
    assert_eq!(default.state.backend, StateBackend::Sqlite);
    assert_eq!(default.state.backend_at, None);
    let sqlite = daemon_config("state:\n  backend: sqlite\n").unwrap();
    assert_eq!(sqlite.state.backend, StateBackend::Sqlite);
    let postgres =
        daemon_config("state:\n  backend: postgres\n  url_file: secrets/pg-url\n").unwrap();
    assert_eq!(
        postgres.state.backend,
        StateBackend::Postgres {
            url_file: Path::new("/etc/burnwatch/secrets/pg-url").to_path_buf(),
            lease: super::daemon::DEFAULT_LEASE,
        }
    );
    let short =
        daemon_config("state:\n  backend: postgres\n  url_file: pg-url\n  lease: 3s\n").unwrap();
    assert!(
        matches!(short.state.backend, StateBackend::Postgres { lease, .. } if lease == Duration::from_secs(3)),
        "{:?}",
        short.state.backend
    );
    assert_eq!(
        postgres
            .state
            .backend_at
            .map(|at| at.to_string())
            .as_deref(),
        Some("burnwatch.yaml:5:12")
    );
}

#[test]
fn daemon_state_problems_name_file_line_column_and_field() {
    let cases = [
        (
            "state:\n  backend: mysql\n",
            "burnwatch.yaml:5:12: state.backend: \"mysql\" is not one of sqlite, postgres",
        ),
        (
            "state:\n  backend: postgres://burnwatch:hunter2@db:5432/burnwatch\n",
            "burnwatch.yaml:5:12: state.backend: a URL is not a backend: give `backend: postgres` and the URL in url_file",
        ),
        (
            "state:\n  backend: postgres\n",
            "burnwatch.yaml:5:12: state.url_file: `backend: postgres` needs url_file: a file holding the URL (postgres://user:password@host:5432/database)",
        ),
        (
            "state:\n  url_file: pg-url\n",
            "burnwatch.yaml:5:13: state.url_file: only for `backend: postgres` (the SQLite state lives under --state-dir)",
        ),
        (
            "state:\n  backend: postgres\n  url_file: ''\n",
            "burnwatch.yaml:6:13: state.url_file: expected the path of a file holding the PostgreSQL URL",
        ),
        (
            "state:\n  backend: postgres\n  url_file: pg-url\n  lease: 500ms\n",
            "burnwatch.yaml:7:10: state.lease: must be at least 1s",
        ),
        (
            "state:\n  lease: 10s\n",
            "burnwatch.yaml:5:10: state.lease: only for `backend: postgres` (one SQLite replica holds no lease)",
        ),
    ];
    for (state, expected) in cases {
        assert_eq!(daemon_config(state).unwrap_err(), expected, "{state}");
    }
    // An unknown key is refused as anywhere else in the config.
    let unknown = daemon_config("state:\n  backend: postgres\n  url: postgres://x\n").unwrap_err();
    assert!(unknown.contains("url"), "{unknown}");
}

/// A hand-written `le="1"` finds no bucket on Prometheus 3 (stored as `le="1.0"`): `check`
/// warns, naming the file, line, column, field and the fix; a bound that every version spells
/// alike (`0.5`), or a matcher over both spellings, is not warned about.
#[test]
fn an_integer_le_in_a_hand_written_query_is_warned_about_with_its_line() {
    let spec = |le: &str| {
        format!(
            "version: \"prometheus/v1\"\nservice: orders\nslos:\n  - name: latency\n    \
             objective: 99\n    sli:\n      events:\n        error_query: 'sum(rate(d_count[{{{{.window}}}}])) - sum(rate(d_bucket{{{le}}}[{{{{.window}}}}]))'\n        \
             total_query: 'sum(rate(d_count[{{{{.window}}}}]))'\n"
        )
    };
    let warned = slos(&spec("le=\"1\""));
    assert_eq!(warned[0].warnings.len(), 1, "{:?}", warned[0].warnings);
    let warning = &warned[0].warnings[0];
    assert!(
        warning.starts_with("rules/orders.yaml:8:")
            && warning.contains("slos[0].sli.events.error_query")
            && warning.contains("le=\"1.0\"")
            && warning.contains("le=~\"1|1.0\""),
        "{warning}"
    );
    for fine in ["le=\"0.5\"", "le=~\"1|1.0\"", "handle=\"1\""] {
        assert_eq!(
            slos(&spec(fine))[0].warnings,
            Vec::<String>::new(),
            "{fine}"
        );
    }
}

/// `latency.kind: native`: Prometheus computes the share of slow requests
/// (`histogram_fraction`) and the events (`histogram_count`) over the histogram's rate summed
/// by the grouping labels; a kind that is neither, an `le` matcher or a bound that is not a
/// positive number are refused at their line.
#[test]
fn native_histogram_latency_slis() {
    let spec = |histogram: &str, threshold: &str, kind: &str| {
        format!(
            "version: burnwatch/v1\nservice: checkout\nslos:\n  - name: latency\n    objective: 99\n    \
             sli:\n      latency:\n        histogram: {histogram}\n        threshold: \"{threshold}\"\n        \
             kind: {kind}\n    group_by: [route]\n"
        )
    };
    let slo = slos(&spec(
        "request_duration_seconds{job=\"x\"}",
        "0.3",
        "native",
    ))
    .remove(0);
    assert_eq!(
        slo.sli.error_ratio_template(),
        "1 - histogram_fraction(0, 0.3, sum by (route) (rate(request_duration_seconds{job=\"x\"}[{{.window}}])))"
    );
    assert_eq!(
        slo.sli.total_template().as_deref(),
        Some(
            "histogram_count(sum by (route) (rate(request_duration_seconds{job=\"x\"}[{{.window}}])))"
        )
    );
    assert!(slo.sli.local().is_err(), "evaluated by Prometheus");
    let message = errors(&spec("d", "0.3", "exponential"));
    assert!(
        message.contains("rules/orders.yaml:10:15: slos[0].sli.latency.kind")
            && message.contains("expected `classic` or `native`"),
        "{message}"
    );
    let message = errors(&spec("d{le=\"0.3\"}", "0.3", "native"));
    assert!(
        message.contains("slos[0].sli.latency.histogram") && message.contains("no `le` label"),
        "{message}"
    );
    let message = errors(&spec("d", "-1", "native"));
    assert!(
        message.contains("slos[0].sli.latency.threshold") && message.contains("positive"),
        "{message}"
    );
}

/// A Sloth spec whose error query uses `rate` and whose total uses `increase` is accepted (as
/// Sloth does) with a warning at the error query's line: PromQL's ratio of the two is off by
/// the window's seconds.
#[test]
fn mixed_rate_and_increase_in_sloth_events_are_warned_about() {
    let spec = |errors: &str, total: &str| {
        format!(
            "version: \"prometheus/v1\"\nservice: orders\nslos:\n  - name: availability\n    \
             objective: 99\n    sli:\n      events:\n        error_query: sum({errors}(r{{code=\"500\"}}[{{{{.window}}}}]))\n        \
             total_query: sum({total}(r[{{{{.window}}}}]))\n"
        )
    };
    let mixed = slos(&spec("rate", "increase"));
    assert_eq!(mixed[0].warnings.len(), 1, "{:?}", mixed[0].warnings);
    assert!(
        mixed[0].warnings[0].starts_with("rules/orders.yaml:8:")
            && mixed[0].warnings[0].contains("uses rate and total_query increase"),
        "{:?}",
        mixed[0].warnings
    );
    assert!(slos(&spec("increase", "increase"))[0].warnings.is_empty());
}

/// Regression: `check` accepted a `javascript:` runbook (sent to Slack as a link) and an
/// objective of 99.99999999999999 (a burn rate of 5.5e12x). Both are refused at their line.
#[test]
fn links_are_http_and_objectives_leave_a_budget() {
    let native = |objective: &str, runbook: &str| {
        format!(
            "version: burnwatch/v1\nservice: s\nslos:\n  - name: n\n    objective: {objective}\n    \
             sli:\n      ratio:\n        errors: r{{code=\"500\"}}\n        total: r\n    runbook: {runbook}\n"
        )
    };
    let message = errors(&native("99.9", "\"javascript:alert(1)\""));
    assert!(
        message.contains("rules/orders.yaml:10:14: slos[0].runbook")
            && message.contains("is a javascript: link; expected an http:// or https:// URL"),
        "{message}"
    );
    let message = errors(&native(
        "99.99999999999999",
        "https://runbooks.example.com/s",
    ));
    assert!(
        message.contains("slos[0].objective") && message.contains("at most 99.9999"),
        "{message}"
    );
    assert_eq!(
        slos(&native("99.9999", "https://runbooks.example.com/s")).len(),
        1
    );
    let sloth = "version: \"prometheus/v1\"\nservice: s\nslos:\n  - name: n\n    objective: 99\n    \
                 sli:\n      events:\n        error_query: sum(rate(r{code=\"500\"}[{{.window}}]))\n        \
                 total_query: sum(rate(r[{{.window}}]))\n    alerting:\n      annotations:\n        \
                 runbook: \"file:///etc/passwd\"\n";
    let message = errors(sloth);
    assert!(
        message.contains("rules/orders.yaml:4:11: slos[0].alerting.annotations.runbook")
            && message.contains("file: link"),
        "{message}"
    );
}

/// Regression (hardening): `check` accepted a 1ns short window, SLO ids that look alike but
/// differ (a Cyrillic а, a zero-width space), said `budget breached: Nodes { nodes: 250001 }`
/// for an oversized file, and nothing of a `repeat_interval` below the evaluation interval.
#[test]
fn edge_values_are_refused_or_warned_about_at_their_line() {
    let text = format!(
        "{NATIVE}    alerting:\n      page:\n        windows:\n          - {{long: 1h, short: 1ns, factor: 14.4}}\n"
    );
    let message = errors(&text);
    assert!(
        message.starts_with("rules/orders.yaml:13:31: slos[0].alerting.page.windows[0]: windows must be at least 1s long"),
        "{message}"
    );

    let invisible = NATIVE.replace("name: availability", "name: \"avail\\u200Bability\"");
    let message = errors(&invisible);
    assert!(
        message.contains("rules/orders.yaml:4:11: slos[0].name: contains U+200B, an invisible or control character"),
        "{message}"
    );
    let cyrillic = NATIVE.replace("service: order-service", "service: order-servicе");
    let loaded = slos(&cyrillic);
    assert_eq!(loaded.len(), 1);
    assert!(
        loaded[0].warnings.iter().any(|warning| warning.contains(
            "rules/orders.yaml:2:10: service: contains 'е' (U+0435), which is not ASCII"
        )),
        "{:?}",
        loaded[0].warnings
    );
    assert!(slos(NATIVE)[0].warnings.is_empty());

    let labels: Vec<String> = (0..300_000).map(|index| format!("k{index}: v")).collect();
    let huge = format!("{NATIVE}    labels: {{{}}}\n", labels.join(", "));
    let message = errors(&huge);
    assert!(
        message.contains("the file is too large to read: it reached 250001 values")
            && !message.contains("budget breached"),
        "{message}"
    );

    let daemon = daemon_config("evaluation_interval: 1m\n").unwrap();
    let often = NATIVE.to_string() + "    alerting:\n      repeat_interval: 30s\n";
    let warnings = super::cross_check(&daemon, &slos(&often));
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("order-service-availability.alerting.page.repeat_interval 30s is shorter than evaluation_interval 1m"),
        "{warnings:?}"
    );
    assert!(super::cross_check(&daemon, &slos(NATIVE)).is_empty());
}
