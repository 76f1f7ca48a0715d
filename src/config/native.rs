//! burnwatch's own spec format, `version: burnwatch/v1`.
//!
//! ```yaml
//! version: burnwatch/v1
//! service: order-service
//! slos:
//!   - name: requests-availability
//!     objective: 99.9          # percent
//!     period: 30d              # default 30d; 1h to 90d, at least the longest window
//!     sli:
//!       ratio:                 # or latency: {histogram, threshold}, or raw: {error_ratio}
//!         errors: http_requests_total{service="order-service",code=~"5.."}
//!         total: http_requests_total{service="order-service"}
//!     group_by: [route]        # one SLO instance per route
//!     min_events: 100          # fewer in a long window: insufficient_data
//!     runbook: https://runbooks.example.com/order-service
//!     alerting:
//!       resolve_timeout: 5m
//!       page: {labels: {channel: "#incidents"}}
//!       ticket: {disable: true}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, Problems, map_spec_file, name_and_objective};
use crate::query::{self, CounterQuery};
use crate::slo::{self, Sli, Slo, Tier, TierKind, Timing, WindowPair};

pub const VERSION: &str = "burnwatch/v1";

type Labels = BTreeMap<String, String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[allow(dead_code)]
    version: String,
    service: Spanned<String>,
    #[serde(default)]
    labels: Labels,
    slos: Vec<RawSlo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    name: Spanned<String>,
    objective: Spanned<f64>,
    period: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    sli: Spanned<RawSli>,
    #[serde(default)]
    group_by: Vec<String>,
    min_events: Option<Spanned<f64>>,
    #[serde(default)]
    labels: Labels,
    runbook: Option<Spanned<String>>,
    dashboard: Option<Spanned<String>>,
    #[serde(default)]
    alerting: RawAlerting,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSli {
    ratio: Option<RawRatio>,
    latency: Option<RawLatency>,
    raw: Option<RawRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRatio {
    errors: Spanned<String>,
    total: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    /// The histogram's base name with matchers: `http_request_duration_seconds{job="x"}`.
    histogram: Spanned<String>,
    /// The `le` bucket bound that counts as fast enough, as written in the `le` label.
    threshold: Spanned<String>,
    /// `classic` (`_bucket` series with `le`, the default) or `native` (a native histogram, or
    /// a classic one Prometheus converts to native buckets).
    kind: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRaw {
    error_ratio: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerting {
    name: Option<String>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    resolve_timeout: Option<Spanned<String>>,
    repeat_interval: Option<Spanned<String>>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    page: Option<RawTier>,
    ticket: Option<RawTier>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTier {
    #[serde(default)]
    disable: bool,
    windows: Option<Spanned<Vec<RawWindow>>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    resolve_timeout: Option<Spanned<String>>,
    repeat_interval: Option<Spanned<String>>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    long: Spanned<String>,
    short: Spanned<String>,
    budget_percent: Option<Spanned<f64>>,
    factor: Option<Spanned<f64>>,
}

pub fn load(file: &str, raw: File) -> Result<Vec<Slo>, Vec<ConfigError>> {
    let labels = raw.labels;
    map_spec_file(
        file,
        &raw.service,
        raw.slos,
        |problems, path, service, raw_slo| map_slo(problems, path, service, &labels, raw_slo),
    )
}

fn map_slo(
    problems: &mut Problems,
    path: &str,
    service: &str,
    file_labels: &Labels,
    raw: RawSlo,
) -> Option<Slo> {
    let errors_before = problems.errors.len();
    let (name, objective) = name_and_objective(problems, path, &raw.name, &raw.objective);
    let period = match &raw.period {
        Some(period) => map_period(problems, period, &format!("{path}.period")),
        None => Some(DEFAULT_PERIOD),
    };
    let sli = map_sli(problems, &format!("{path}.sli"), &raw.sli, &raw.group_by);
    let min_events = match &raw.min_events {
        Some(value) if !(value.value.is_finite() && value.value >= 0.0) => {
            problems.at(
                value,
                format!("{path}.min_events"),
                format!("{} is not a count of events (0 or more)", value.value),
            );
            None
        }
        Some(value) => Some(value.value),
        None => Some(0.0),
    };
    let alerting = raw.alerting;
    let mut tiers = Vec::new();
    for (kind, raw_tier) in [
        (TierKind::Page, alerting.page),
        (TierKind::Ticket, alerting.ticket),
    ] {
        let raw_tier = raw_tier.unwrap_or_default();
        if raw_tier.disable {
            continue;
        }
        let tier_path = format!("{path}.alerting.{}", kind.as_str());
        let timing = timing(
            problems,
            [
                own_or_shared(path, &tier_path, "for", &raw_tier.for_, &alerting.for_),
                own_or_shared(
                    path,
                    &tier_path,
                    "resolve_timeout",
                    &raw_tier.resolve_timeout,
                    &alerting.resolve_timeout,
                ),
                own_or_shared(
                    path,
                    &tier_path,
                    "repeat_interval",
                    &raw_tier.repeat_interval,
                    &alerting.repeat_interval,
                ),
            ],
        );
        let windows = match (&raw_tier.windows, period) {
            (Some(windows), Some(period)) => {
                map_windows(problems, &format!("{tier_path}.windows"), windows, period)
            }
            (None, Some(period)) => {
                let pairs = default_pairs(kind, period);
                let longest = pairs.iter().map(|pair| pair.long).max();
                match (&raw.period, longest) {
                    (Some(written), Some(longest)) if period < longest => {
                        problems.at(
                            written,
                            format!("{path}.period"),
                            format!(
                                "{} is shorter than the {kind} tier's default {} window; give alerting.{kind}.windows no longer than the period, or disable the tier",
                                written.value.trim(),
                                slo::format_duration(longest)
                            ),
                        );
                        None
                    }
                    _ => Some(pairs),
                }
            }
            (_, None) => None,
        };
        let mut labels = alerting.labels.clone();
        labels.extend(raw_tier.labels);
        let mut annotations = alerting.annotations.clone();
        annotations.extend(raw_tier.annotations);
        if let (Some(timing), Some(windows)) = (timing, windows) {
            tiers.push(Tier {
                kind,
                windows,
                timing,
                labels,
                annotations,
            });
        }
    }
    if problems.errors.len() > errors_before {
        return None;
    }
    let mut labels = file_labels.clone();
    labels.extend(raw.labels);
    Some(Slo {
        id: format!("{service}-{name}"),
        service: service.to_string(),
        name,
        description: raw.description,
        objective: objective?,
        period: period?,
        sli: sli?,
        group_by: raw.group_by,
        min_events: min_events?,
        tiers,
        labels,
        runbook: raw
            .runbook
            .as_ref()
            .and_then(|link| super::checked_link(problems, link, &format!("{path}.runbook"))),
        dashboard: raw
            .dashboard
            .as_ref()
            .and_then(|link| super::checked_link(problems, link, &format!("{path}.dashboard"))),
        alert_name: alerting.name,
        spec_version: "burnwatch/v1",
        origin: problems.origin(&raw.name),
        warnings: Vec::new(),
    })
}

pub(super) const DEFAULT_PERIOD: Duration = Duration::from_secs(30 * 86_400);
const _: () = assert!(
    slo::MIN_PERIOD.as_secs() <= DEFAULT_PERIOD.as_secs()
        && DEFAULT_PERIOD.as_secs() <= slo::MAX_PERIOD.as_secs()
);

/// A period between [`slo::MIN_PERIOD`] and [`slo::MAX_PERIOD`].
fn map_period(problems: &mut Problems, value: &Spanned<String>, path: &str) -> Option<Duration> {
    let period = duration(problems, value, path)?;
    if (slo::MIN_PERIOD..=slo::MAX_PERIOD).contains(&period) {
        return Some(period);
    }
    problems.at(
        value,
        path,
        format!(
            "{} is not a period between {} and {}",
            value.value.trim(),
            slo::format_duration(slo::MIN_PERIOD),
            slo::format_duration(slo::MAX_PERIOD)
        ),
    );
    None
}

fn map_sli(
    problems: &mut Problems,
    path: &str,
    raw: &Spanned<RawSli>,
    group_by: &[String],
) -> Option<Sli> {
    let sli = &raw.value;
    let given = [
        sli.ratio.is_some(),
        sli.latency.is_some(),
        sli.raw.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if given != 1 {
        problems.at(
            raw,
            path,
            "expected exactly one of `ratio`, `latency` or `raw`",
        );
        return None;
    }
    let by = if group_by.is_empty() {
        String::new()
    } else {
        format!(" by ({})", group_by.join(", "))
    };
    let counter = |problems: &mut Problems,
                   field: &str,
                   selector: &Spanned<String>,
                   extra: Option<(&str, &str)>| {
        let text = match extra {
            Some((suffix, le)) => with_suffix_and_le(&selector.value, suffix, le),
            None => Ok(selector.value.trim().to_string()),
        };
        problems.check_le_spelling(selector, &format!("{path}.{field}"));
        let parsed = text.and_then(|text| {
            check_selector(&selector.value)?;
            CounterQuery::parse(&format!("sum{by} (rate({text}[{{{{.window}}}}]))"))
        });
        parsed
            .map_err(|message| problems.at(selector, format!("{path}.{field}"), message))
            .ok()
    };
    if let Some(ratio) = &sli.ratio {
        let errors = counter(problems, "ratio.errors", &ratio.errors, None);
        let total = counter(problems, "ratio.total", &ratio.total, None);
        return Some(Sli::Ratio {
            errors: errors?,
            total: total?,
        });
    }
    if let Some(latency) = &sli.latency {
        let native = match latency.kind.as_ref().map(|kind| kind.value.trim()) {
            None | Some("classic") => false,
            Some("native") => true,
            Some(other) => {
                let kind = latency.kind.as_ref().expect("a kind");
                problems.at(
                    kind,
                    format!("{path}.latency.kind"),
                    format!("{other:?} is not a histogram kind (expected `classic` or `native`)"),
                );
                return None;
            }
        };
        if native {
            return native_latency(problems, path, latency, &by);
        }
        let threshold = latency.threshold.value.trim().to_string();
        if threshold.parse::<f64>().is_err() {
            problems.at(
                &latency.threshold,
                format!("{path}.latency.threshold"),
                format!("{threshold:?} is not a bucket bound (a number, as in the `le` label)"),
            );
            return None;
        }
        let good = counter(
            problems,
            "latency.histogram",
            &latency.histogram,
            Some(("_bucket", &threshold)),
        );
        let total = counter(
            problems,
            "latency.histogram",
            &latency.histogram,
            Some(("_count", "")),
        );
        return Some(Sli::Latency {
            good: good?,
            total: total?,
            threshold,
        });
    }
    let raw_query = sli.raw.as_ref()?;
    map_raw_query(
        problems,
        &format!("{path}.raw.error_ratio"),
        &raw_query.error_ratio,
    )
}

/// A latency SLI over a native histogram: `histogram_fraction(0, threshold, …)` of the rate
/// of the selected histograms summed by the SLO's grouping labels.
fn native_latency(
    problems: &mut Problems,
    path: &str,
    latency: &RawLatency,
    by: &str,
) -> Option<Sli> {
    let threshold = match latency.threshold.value.trim().parse::<f64>() {
        Ok(bound) if bound.is_finite() && 0.0 < bound => Some(bound),
        _ => {
            problems.at(
                &latency.threshold,
                format!("{path}.latency.threshold"),
                format!(
                    "{:?} is not a positive bound in the histogram's unit (seconds, say)",
                    latency.threshold.value.trim()
                ),
            );
            None
        }
    };
    let selector = latency.histogram.value.trim();
    let checked = check_selector(selector).and_then(|()| {
        if selector.contains("le=") || selector.contains("le =") || selector.contains("le=~") {
            Err("a native histogram has no `le` label: name the histogram itself".to_string())
        } else {
            Ok(())
        }
    });
    if let Err(message) = checked {
        problems.at(
            &latency.histogram,
            format!("{path}.latency.histogram"),
            message,
        );
        return None;
    }
    Some(Sli::NativeLatency {
        rate: format!("sum{by} (rate({selector}[{{{{.window}}}}]))"),
        threshold: threshold?,
    })
}

/// A raw error-ratio query: valid PromQL with `{{.window}}`; evaluated locally when its shape
/// is recognised.
pub(super) fn map_raw_query(
    problems: &mut Problems,
    path: &str,
    query: &Spanned<String>,
) -> Option<Sli> {
    problems.check_le_spelling(query, path);
    if !query::has_window_placeholder(&query.value) {
        problems.at(
            query,
            path,
            "expected `{{.window}}` where the range goes, e.g. `rate(x[{{.window}}])`",
        );
        return None;
    }
    if let Err(message) = query::parse_template(&query.value) {
        problems.at(query, path, message);
        return None;
    }
    let (local, not_local_because) = match query::recognise_error_ratio(&query.value) {
        Ok(local) => (Some(local), None),
        Err(reason) => (None, Some(reason)),
    };
    Some(Sli::Raw {
        error_ratio_query: query.value.trim().to_string(),
        local,
        not_local_because,
    })
}

/// A plain series selector, not a query.
fn check_selector(text: &str) -> Result<(), String> {
    match promql_parser::parser::parse(text) {
        Ok(promql_parser::parser::Expr::VectorSelector(_)) => Ok(()),
        Ok(_) => Err(format!(
            "expected a series selector such as `http_requests_total{{code=~\"5..\"}}`, not a query: {text:?}"
        )),
        Err(error) => Err(format!("invalid series selector: {error}")),
    }
}

/// `h{job="x"}` → `h_bucket{job="x",le="0.3"}` (or `h_count{job="x"}` with an empty `le`).
fn with_suffix_and_le(selector: &str, suffix: &str, le: &str) -> Result<String, String> {
    let selector = selector.trim();
    let (name, matchers) = match selector.find('{') {
        Some(open) => (
            &selector[..open],
            selector[open + 1..]
                .trim_end()
                .strip_suffix('}')
                .unwrap_or(""),
        ),
        None => (selector, ""),
    };
    if name.is_empty() {
        return Err("the histogram selector needs a metric name".to_string());
    }
    let mut parts: Vec<String> = Vec::new();
    if !matchers.trim().is_empty() {
        parts.push(matchers.trim().trim_end_matches(',').to_string());
    }
    if !le.is_empty() {
        // Every spelling of the bound: Prometheus 3 stores `le="1"` as `le="1.0"`.
        let bound: f64 = le
            .parse()
            .map_err(|_| format!("{le:?} is not a bucket bound"))?;
        let pattern = crate::query::bucket_bound_pattern(bound).replace('\\', "\\\\");
        parts.push(format!("le=~\"{pattern}\""));
    }
    Ok(format!("{name}{suffix}{{{}}}", parts.join(",")))
}

fn duration(problems: &mut Problems, value: &Spanned<String>, path: &str) -> Option<Duration> {
    slo::parse_duration(&value.value)
        .map_err(|message| problems.at(value, path, message))
        .ok()
}

/// A tier's own timing setting, else the SLO's `alerting` one, with the path it was written at.
fn own_or_shared(
    path: &str,
    tier_path: &str,
    name: &str,
    own: &Option<Spanned<String>>,
    shared: &Option<Spanned<String>>,
) -> Option<(Spanned<String>, String)> {
    match (own, shared) {
        (Some(own), _) => Some((own.clone(), format!("{tier_path}.{name}"))),
        (None, Some(shared)) => Some((shared.clone(), format!("{path}.alerting.{name}"))),
        (None, None) => None,
    }
}

/// Tier timing from `for`, `resolve_timeout`, `repeat_interval` (the tier's own, else the
/// SLO's `alerting` ones, each with the path it was written at), falling back to the defaults.
/// `repeat_interval` is at least 1s: 0 would send a reminder every cycle.
fn timing(
    problems: &mut Problems,
    [for_, resolve_timeout, repeat_interval]: [Option<(Spanned<String>, String)>; 3],
) -> Option<Timing> {
    let defaults = Timing::default();
    let mut pick = |value: Option<(Spanned<String>, String)>, default: Duration| match value {
        Some((value, path)) => duration(problems, &value, &path),
        None => Some(default),
    };
    let for_ = pick(for_, defaults.for_);
    let resolve_timeout = pick(resolve_timeout, defaults.resolve_timeout);
    let repeat_interval = match repeat_interval {
        Some((value, path)) => {
            super::duration_at_least_1s(problems, Some(&value), &path, defaults.repeat_interval)
        }
        None => Some(defaults.repeat_interval),
    };
    Some(Timing {
        for_: for_?,
        resolve_timeout: resolve_timeout?,
        repeat_interval: repeat_interval?,
    })
}

/// The default window table with factors scaled to the period.
pub(super) fn default_pairs(kind: TierKind, period: Duration) -> Vec<WindowPair> {
    slo::default_windows(kind)
        .iter()
        .map(|&(long, short, budget)| WindowPair {
            long,
            short,
            factor: WindowPair::factor_for_budget(budget, period, long),
        })
        .collect()
}

fn map_windows(
    problems: &mut Problems,
    path: &str,
    windows: &Spanned<Vec<RawWindow>>,
    period: Duration,
) -> Option<Vec<WindowPair>> {
    if windows.value.is_empty() {
        problems.at(
            windows,
            path,
            "expected at least one window pair (or `disable: true` on the tier)",
        );
        return None;
    }
    let mut pairs = Vec::new();
    let before = problems.errors.len();
    for (index, raw) in windows.value.iter().enumerate() {
        let path = format!("{path}[{index}]");
        let long = duration(problems, &raw.long, &format!("{path}.long"));
        let short = duration(problems, &raw.short, &format!("{path}.short"));
        let (Some(long), Some(short)) = (long, short) else {
            continue;
        };
        if long > period {
            problems.at(
                &raw.long,
                format!("{path}.long"),
                format!(
                    "{} is longer than the period {}",
                    raw.long.value.trim(),
                    slo::format_duration(period)
                ),
            );
            continue;
        }
        let factor = match (&raw.budget_percent, &raw.factor) {
            (Some(budget), None) => {
                if !(0.0 < budget.value && budget.value <= 100.0) {
                    problems.at(
                        budget,
                        format!("{path}.budget_percent"),
                        format!("{} is not a percentage in (0, 100]", budget.value),
                    );
                    continue;
                }
                WindowPair::factor_for_budget(budget.value, period, long)
            }
            (None, Some(factor)) => factor.value,
            _ => {
                problems.at(
                    &raw.long,
                    path.clone(),
                    "expected exactly one of `budget_percent` or `factor`",
                );
                continue;
            }
        };
        match WindowPair::new(long, short, factor) {
            Ok(pair) => pairs.push(pair),
            Err(message) => problems.at(&raw.short, path, message),
        }
    }
    (problems.errors.len() == before).then_some(pairs)
}
