//! Domain nouns: what an SLO is once its spec has been read and validated.
//!
//! Nothing here knows YAML or Prometheus's wire format. Every value is checked once when it is
//! built (an `Objective` is always a ratio in (0, 1), a `WindowPair` always has short < long), so
//! code downstream never re-validates.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::query::{CounterQuery, LocalSli};

/// Milliseconds since the Unix epoch, as Prometheus counts time.
pub type Millis = i64;

pub fn millis(duration: Duration) -> Millis {
    duration.as_millis() as Millis
}

/// The target ratio of good events, strictly between 0 and 1 (99.9% is 0.999).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    ratio: f64,
    /// As written, for display (`99.9`, not `99.90000000000001`).
    percent: f64,
}

/// The highest objective accepted: a budget of one event in a million.
pub const MAX_OBJECTIVE_PERCENT: f64 = 99.9999;

impl Objective {
    /// Builds an objective from a percentage as users write it (`99.9`).
    pub fn from_percent(percent: f64) -> Result<Objective, String> {
        if !(percent.is_finite() && 0.0 < percent && percent < 100.0) {
            Err(format!("{percent} is not a percentage in (0, 100)"))
        } else if MAX_OBJECTIVE_PERCENT < percent {
            Err(format!(
                "{percent} leaves an error budget under one event in a million, where one \
                 failed request burns it a million times over; at most {MAX_OBJECTIVE_PERCENT}"
            ))
        } else {
            Ok(Objective {
                ratio: percent / 100.0,
                percent,
            })
        }
    }

    pub fn ratio(self) -> f64 {
        self.ratio
    }

    pub fn percent(self) -> f64 {
        self.percent
    }

    /// The share of events allowed to fail: 1 - objective.
    pub fn error_budget(self) -> f64 {
        1.0 - self.ratio
    }
}

/// Severity of a tier: a page wakes someone up, a ticket waits for working hours.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TierKind {
    Page,
    Ticket,
}

impl TierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TierKind::Page => "page",
            TierKind::Ticket => "ticket",
        }
    }
}

impl fmt::Display for TierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One multi-window condition: burn(long) > factor AND burn(short) > factor.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowPair {
    pub long: Duration,
    pub short: Duration,
    pub factor: f64,
}

impl WindowPair {
    pub fn new(long: Duration, short: Duration, factor: f64) -> Result<WindowPair, String> {
        if long < Duration::from_secs(1) || short < Duration::from_secs(1) {
            // Shorter than any scrape interval: such a window never holds two samples.
            return Err(format!(
                "windows must be at least 1s long (got {} and {})",
                format_duration(long),
                format_duration(short)
            ));
        }
        if long <= short {
            return Err(format!(
                "short window {} must be shorter than long window {}",
                format_duration(short),
                format_duration(long)
            ));
        }
        if !(factor.is_finite() && 0.0 < factor) {
            return Err(format!(
                "burn-rate factor {factor} must be a positive number"
            ));
        }
        Ok(WindowPair {
            long,
            short,
            factor,
        })
    }

    /// The factor that consumes `budget_percent` of the error budget of `period` within the
    /// long window: budget share × period / long window (as the SRE Workbook and Sloth do).
    pub fn factor_for_budget(budget_percent: f64, period: Duration, long: Duration) -> f64 {
        budget_percent / 100.0 * period.as_secs_f64() / long.as_secs_f64()
    }
}

/// The default window table for a tier, as (long, short, share of the period's budget in %).
/// Factors follow from the period: for 30d these are 14.4, 6, 3 and 1.
pub fn default_windows(kind: TierKind) -> &'static [(Duration, Duration, f64)] {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const PAGE: [(Duration, Duration, f64); 2] = [
        (
            Duration::from_secs(HOUR),
            Duration::from_secs(5 * MINUTE),
            2.0,
        ),
        (
            Duration::from_secs(6 * HOUR),
            Duration::from_secs(30 * MINUTE),
            5.0,
        ),
    ];
    const TICKET: [(Duration, Duration, f64); 2] = [
        (
            Duration::from_secs(24 * HOUR),
            Duration::from_secs(2 * HOUR),
            10.0,
        ),
        (
            Duration::from_secs(72 * HOUR),
            Duration::from_secs(6 * HOUR),
            10.0,
        ),
    ];
    match kind {
        TierKind::Page => &PAGE,
        TierKind::Ticket => &TICKET,
    }
}

/// The shortest SLO period. The period is also the window of the budget's bookkeeping, kept in
/// hourly buckets by the incremental strategy: under an hour it would not fill one.
pub const MIN_PERIOD: Duration = Duration::from_secs(60 * 60);

/// The longest SLO period: a quarter. The incremental strategy keeps an hourly bucket per SLO
/// instance for every hour of the period (2,160 buckets, 17 KiB, at 90 days); a period of years
/// would reserve megabytes per instance, gigabytes for a daemon's worth of instances.
pub const MAX_PERIOD: Duration = Duration::from_secs(90 * 86_400);

/// Timing of the alert state machine of one tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// How long the condition must hold before pending becomes firing.
    pub for_: Duration,
    /// How long the condition must stay false before a firing alert resolves.
    pub resolve_timeout: Duration,
    /// How often a reminder goes out while firing; at least 1s (0 would remind every cycle).
    pub repeat_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            for_: Duration::ZERO,
            resolve_timeout: Duration::from_secs(5 * 60),
            repeat_interval: Duration::from_secs(4 * 60 * 60),
        }
    }
}

/// An enabled alerting tier of one SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub kind: TierKind,
    /// Window pairs, fastest first; the tier burns when any pair does.
    pub windows: Vec<WindowPair>,
    pub timing: Timing,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// How the SLI is measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// Error events over total events, each a counter query.
    Ratio {
        errors: CounterQuery,
        total: CounterQuery,
    },
    /// Requests slower than a histogram bucket's `le` over all requests.
    Latency {
        /// `<histogram>_bucket{..., le="threshold"}`
        good: CounterQuery,
        /// `<histogram>_count{...}`
        total: CounterQuery,
        threshold: String,
    },
    /// Requests slower than a bound over all requests, from a native histogram (or a classic
    /// one Prometheus converts to native buckets, `convert_classic_histograms_to_nhcb`):
    /// Prometheus computes both (`histogram_fraction`, `histogram_count`), so it is evaluated
    /// with the query strategy.
    NativeLatency {
        /// `sum by (...) (rate(histogram{...}[{{.window}}]))`
        rate: String,
        /// The bound, in the histogram's unit (seconds).
        threshold: f64,
    },
    /// An error-ratio PromQL expression with `{{.window}}`, for the Prometheus source.
    Raw {
        error_ratio_query: String,
        /// Set when the expression has a shape burnwatch can evaluate from samples itself.
        local: Option<LocalSli>,
        /// Why it cannot be evaluated locally, when it cannot.
        not_local_because: Option<String>,
    },
}

impl Sli {
    /// The SLI as counter queries burnwatch can evaluate itself, or why not.
    pub fn local(&self) -> Result<LocalSli, String> {
        match self {
            Sli::Ratio { errors, total } => Ok(LocalSli::BadOverTotal {
                bad: errors.clone(),
                total: total.clone(),
            }),
            Sli::Latency { good, total, .. } => Ok(LocalSli::OneMinusGoodOverTotal {
                good: good.clone(),
                total: total.clone(),
            }),
            Sli::NativeLatency { .. } => Err(
                "a native histogram's share of slow requests is computed by Prometheus \
                 (histogram_fraction), with the query strategy"
                    .to_string(),
            ),
            Sli::Raw {
                local,
                not_local_because,
                ..
            } => local.clone().ok_or_else(|| {
                not_local_because
                    .clone()
                    .unwrap_or_else(|| "raw query has no recognised shape".to_string())
            }),
        }
    }

    /// The error-ratio PromQL with `{{.window}}` left in, as Sloth's recording rules ask it.
    pub fn error_ratio_template(&self) -> String {
        match self {
            Sli::Ratio { errors, total } => {
                format!("({})\n/\n({})", errors.template(), total.template())
            }
            Sli::Latency { good, total, .. } => {
                format!("1 - (({})\n/\n({}))", good.template(), total.template())
            }
            Sli::NativeLatency { rate, threshold } => {
                format!("1 - histogram_fraction(0, {threshold}, {rate})")
            }
            Sli::Raw {
                error_ratio_query, ..
            } => error_ratio_query.clone(),
        }
    }

    /// The PromQL of the total events with `{{.window}}` left in, where the SLI names one: a
    /// rate (to multiply by the window) or an `increase` (the events themselves), as
    /// `source::live::Reading` tells.
    pub fn total_template(&self) -> Option<String> {
        match self {
            Sli::NativeLatency { rate, .. } => Some(format!("histogram_count({rate})")),
            _ => self
                .local()
                .ok()
                .map(|local| local.queries().1.template().to_string()),
        }
    }
}

/// Where a definition came from, for messages that point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One validated SLO. With grouping labels it stands for one SLO instance per label set.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// `<service>-<name>`, as Sloth's `sloth_id`.
    pub id: String,
    pub service: String,
    pub name: String,
    pub description: String,
    pub objective: Objective,
    pub period: Duration,
    pub sli: Sli,
    /// Labels that split the SLO into instances (the `by` of `sum by (...)`).
    pub group_by: Vec<String>,
    /// Below this many events in a long window a tier is `insufficient_data`.
    pub min_events: f64,
    pub tiers: Vec<Tier>,
    pub labels: BTreeMap<String, String>,
    pub runbook: Option<String>,
    pub dashboard: Option<String>,
    /// Sloth's `alerting.name`, used as the alert name when set.
    pub alert_name: Option<String>,
    /// The spec format it was read from (`burnwatch/v1`, Sloth's `prometheus/v1`): the
    /// `sloth_spec` label of `sloth_slo_info`.
    pub spec_version: &'static str,
    pub origin: Origin,
    /// What `check` and `serve` warn about: accepted, but likely wrong
    /// (`file:line:column: field: message`).
    pub warnings: Vec<String>,
}

impl Slo {
    /// Every distinct window the tiers need, shortest first.
    pub fn windows(&self) -> Vec<Duration> {
        let mut windows: Vec<Duration> = self
            .tiers
            .iter()
            .flat_map(|tier| tier.windows.iter().flat_map(|pair| [pair.long, pair.short]))
            .collect();
        windows.sort();
        windows.dedup();
        windows
    }

    pub fn tier(&self, kind: TierKind) -> Option<&Tier> {
        self.tiers.iter().find(|tier| tier.kind == kind)
    }
}

/// `1h`, `5m`, `30d`, `1h30m`: the shortest humane spelling, as Prometheus prints durations.
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return if duration.is_zero() {
            "0s".to_string()
        } else {
            format!("{}ms", duration.as_millis())
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Parses `5m`, `1h30m`, `30d`, `1w` (Prometheus duration syntax, which humantime also reads).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration".to_string());
    }
    humantime::parse_duration(trimmed)
        .map_err(|_| format!("{trimmed:?} is not a duration such as 30s, 5m, 1h30m or 30d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_factors_for_30d_match_the_sre_workbook() {
        let period = Duration::from_secs(30 * 86_400);
        let factors: Vec<f64> = [TierKind::Page, TierKind::Ticket]
            .iter()
            .flat_map(|kind| default_windows(*kind))
            .map(|(long, _, budget)| WindowPair::factor_for_budget(*budget, period, *long))
            .map(|factor| (factor * 1000.0).round() / 1000.0)
            .collect();
        assert_eq!(factors, vec![14.4, 6.0, 3.0, 1.0]);
    }

    #[test]
    fn durations_print_like_prometheus() {
        let cases = [
            (300, "5m"),
            (3600, "1h"),
            (5400, "1h30m"),
            (2_592_000, "30d"),
            (0, "0s"),
        ];
        for (secs, text) in cases {
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
            assert_eq!(parse_duration(text).unwrap(), Duration::from_secs(secs));
        }
    }

    #[test]
    fn objective_rejects_out_of_range() {
        assert!(Objective::from_percent(99.9).is_ok());
        for bad in [0.0, 100.0, 100.5, -1.0, f64::NAN] {
            assert!(Objective::from_percent(bad).is_err(), "{bad}");
        }
    }
}
