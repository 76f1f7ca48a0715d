//! Window values from a live Prometheus, the `query` strategy: per window, the SLO's error-ratio
//! PromQL with the window substituted (exactly what Sloth's recording rules ask), plus the total
//! events where the SLI names them. Simple, and the reference the incremental strategy is
//! checked against; its cost grows with the window (a 30d range reads every raw sample).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::burn::WindowValue;
use crate::engine::InstanceLabels;
use crate::query::{LocalSli, RangeFunction, with_window};
use crate::slo::{Millis, Slo};
use crate::source::prometheus::{Answer, ApiError, Client};

/// Window values of every instance of one SLO at one evaluation time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub instances: BTreeMap<InstanceLabels, Vec<(Duration, WindowValue)>>,
    /// Queries sent and samples Prometheus reported touching for them.
    pub queries: u64,
    pub samples_touched: u64,
    /// Queries of windows since firing that failed, their windows left out.
    pub optional_failures: u64,
}

impl Snapshot {
    /// The value of one instance over one window, as the engine's `measure` wants it.
    pub fn measure(&self, labels: &InstanceLabels, window: Duration) -> Option<WindowValue> {
        self.instances
            .get(labels)?
            .iter()
            .find(|(length, _)| *length == window)
            .map(|(_, value)| *value)
    }
}

/// Every window the SLO needs at an evaluation: its tiers' windows and its period.
pub fn windows_with_period(slo: &Slo) -> Vec<Duration> {
    windows_and(slo, &[])
}

/// The SLO's windows and period, and `extra` windows (the windows since its firing alerts
/// fired, see [`crate::engine::Engine::firing_windows`]), each once.
pub fn windows_and(slo: &Slo, extra: &[Duration]) -> Vec<Duration> {
    let mut windows = slo.windows();
    for window in std::iter::once(&slo.period).chain(extra) {
        if !windows.contains(window) {
            windows.push(*window);
        }
    }
    windows
}

/// The SLO's error-ratio template, and its total-events template where the SLI names one.
pub fn templates(slo: &Slo) -> (String, Option<String>) {
    (slo.sli.error_ratio_template(), slo.sli.total_template())
}

/// How an SLO's PromQL answers read as window values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Whether a ratio PromQL leaves out, for an instance the total names, means no errors:
    /// yes for errors over total (no error series: no failed request), no for `1 - good /
    /// total` (no good series, a latency bound that matches no bucket: no data, never "100%
    /// slow") and for what Prometheus computes whole (a native histogram's fraction).
    pub absent_ratio_is_no_errors: bool,
    /// Whether the total's query answers a rate per second (`rate`, a native histogram's
    /// count of the rate), to be multiplied by the window's seconds, rather than the events
    /// themselves (`increase`).
    pub total_per_second: bool,
}

impl Reading {
    pub fn of(slo: &Slo) -> Reading {
        let local = slo.sli.local();
        Reading {
            absent_ratio_is_no_errors: matches!(local, Ok(LocalSli::BadOverTotal { .. })),
            total_per_second: match &local {
                Ok(local) => local.queries().1.function == RangeFunction::Rate,
                Err(_) => true,
            },
        }
    }
}

/// One window's value from Prometheus's answers: the error ratio and, where the SLI has one,
/// the total's answer (a rate or a count, as `reading` says). Where the total names an
/// instance the ratio does not: zero errors (0/0 when there was no traffic either) when
/// `reading.absent_ratio_is_no_errors`, else no data. Without a total, the ratio alone.
pub fn window_value(
    error_ratio: Option<f64>,
    total_answer: Option<f64>,
    window: Duration,
    reading: Reading,
) -> Option<WindowValue> {
    match total_answer {
        Some(answer) => {
            let total = if reading.total_per_second {
                answer * window.as_secs_f64()
            } else {
                answer
            };
            let error_ratio = match error_ratio {
                Some(ratio) => ratio,
                None if reading.absent_ratio_is_no_errors => {
                    if total > 0.0 {
                        0.0
                    } else {
                        f64::NAN
                    }
                }
                None => return None,
            };
            Some(WindowValue {
                bad: error_ratio * total,
                total,
                error_ratio,
            })
        }
        None => error_ratio.map(|error_ratio| WindowValue {
            bad: f64::NAN,
            total: f64::NAN,
            error_ratio,
        }),
    }
}

/// One query's answer as label set (without `__name__`) → value.
async fn vector(
    client: Client,
    expr: String,
    at: Millis,
) -> Result<(BTreeMap<InstanceLabels, f64>, u64), ApiError> {
    let evaluated = client.query(&expr, at).await?;
    let Answer::Vector(samples) = evaluated.answer else {
        return Err(ApiError::Malformed(format!("expected a vector for {expr}")));
    };
    let values = samples
        .into_iter()
        .map(|sample| {
            let labels = sample
                .labels
                .into_iter()
                .filter(|(name, _)| name != "__name__")
                .collect();
            (labels, sample.value)
        })
        .collect();
    Ok((values, evaluated.samples_touched.unwrap_or(0)))
}

/// Fetches every window of `slo` (and `extra` ones) at `at` with one ratio query (and one total
/// query where the SLI has a total) per window, all in flight together. The `extra` windows
/// (since firing: only the figures of a reminder or resolution need them) are best effort: a
/// query of theirs that fails leaves that window out instead of failing the evaluation.
pub async fn fetch_by_query(
    client: &Client,
    slo: &Slo,
    at: Millis,
    extra: &[Duration],
) -> Result<Snapshot, ApiError> {
    let (ratio_template, total_template) = templates(slo);
    let reading = Reading::of(slo);
    let mut tasks = JoinSet::new();
    let required = windows_with_period(slo).len();
    for (index, window) in windows_and(slo, extra).into_iter().enumerate() {
        tasks.spawn({
            let client = client.clone();
            let expr = with_window(&ratio_template, window);
            async move { (index, window, false, vector(client, expr, at).await) }
        });
        if let Some(template) = &total_template {
            let client = client.clone();
            let expr = with_window(template, window);
            tasks.spawn(async move { (index, window, true, vector(client, expr, at).await) });
        }
    }
    let mut ratios: BTreeMap<(usize, Duration), BTreeMap<InstanceLabels, f64>> = BTreeMap::new();
    let mut totals: BTreeMap<(usize, Duration), BTreeMap<InstanceLabels, f64>> = BTreeMap::new();
    let mut snapshot = Snapshot::default();
    while let Some(joined) = tasks.join_next().await {
        let (index, window, is_total, result) =
            joined.map_err(|error| ApiError::Connect(format!("query task failed: {error}")))?;
        snapshot.queries += 1;
        let (values, touched) = match result {
            Ok(answer) => answer,
            Err(error) if required <= index => {
                tracing::debug!(slo = %slo.id, ?window, %error, "a window since firing is left out");
                snapshot.optional_failures += 1;
                continue;
            }
            Err(error) => return Err(error),
        };
        snapshot.samples_touched += touched;
        let target = if is_total { &mut totals } else { &mut ratios };
        target.insert((index, window), values);
    }
    for (key, ratio_values) in &ratios {
        let window = key.1;
        // The total names the instances where there is one; otherwise the ratio does.
        let names: Vec<&InstanceLabels> = match totals.get(key) {
            Some(total_values) => total_values.keys().collect(),
            None => ratio_values.keys().collect(),
        };
        for labels in names {
            let total_rate = totals
                .get(key)
                .and_then(|total_values| total_values.get(labels).copied());
            // An instance the answers name stays, with no value where there is none (a
            // latency bound that matches no bucket), so its status can say why.
            let values = snapshot.instances.entry(labels.clone()).or_default();
            if let Some(value) = window_value(
                ratio_values.get(labels).copied(),
                total_rate,
                window,
                reading,
            ) {
                values.push((window, value));
            }
        }
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo(sli: &str) -> Slo {
        let spec = format!(
            "version: burnwatch/v1\nservice: s\nslos:\n  - name: n\n    objective: 99\n    sli:\n{sli}"
        );
        match crate::config::load_str("s.yaml", &spec, std::path::Path::new(".")) {
            Ok(crate::config::Document::Slos(mut slos)) => slos.remove(0),
            other => panic!("{other:?}"),
        }
    }

    /// Where PromQL's ratio has no sample but the total does: no errors for errors / total,
    /// no data for a latency SLI (its bound matches no `le`) and a native histogram.
    #[test]
    fn an_absent_ratio_is_no_errors_only_for_errors_over_total() {
        let ratio = slo("      ratio:\n        errors: r{code=\"500\"}\n        total: r\n");
        let latency = slo("      latency:\n        histogram: d\n        threshold: \"2\"\n");
        let native = slo(
            "      latency:\n        histogram: d\n        threshold: \"2\"\n        kind: native\n",
        );
        let window = Duration::from_secs(300);
        let value = |slo: &Slo| window_value(None, Some(10.0), window, Reading::of(slo));
        let zero = value(&ratio).expect("a value");
        assert_eq!((zero.bad, zero.total, zero.error_ratio), (0.0, 3000.0, 0.0));
        assert_eq!(value(&latency), None);
        assert_eq!(value(&native), None);
        // A ratio that is there is taken as it is.
        let slow =
            window_value(Some(0.25), Some(10.0), window, Reading::of(&latency)).expect("a value");
        assert_eq!((slow.bad, slow.error_ratio), (750.0, 0.25));
    }

    /// A total written with `increase` answers the events themselves: not multiplied by the
    /// window's seconds (which made 1h read 124,902,000 events where Prometheus said 34,870).
    #[test]
    fn an_increase_total_is_a_count_and_a_rate_total_a_rate() {
        let sloth = |function: &str| {
            let spec = format!(
                "version: \"prometheus/v1\"\nservice: s\nslos:\n  - name: n\n    objective: 99\n    \
                 sli:\n      events:\n        error_query: sum({function}(r{{code=\"500\"}}[{{{{.window}}}}]))\n        \
                 total_query: sum({function}(r[{{{{.window}}}}]))\n"
            );
            match crate::config::load_str("s.yaml", &spec, std::path::Path::new(".")) {
                Ok(crate::config::Document::Slos(mut slos)) => slos.remove(0),
                other => panic!("{other:?}"),
            }
        };
        let hour = Duration::from_secs(3600);
        let counted = window_value(
            Some(0.01),
            Some(34_870.0),
            hour,
            Reading::of(&sloth("increase")),
        )
        .expect("a value");
        assert_eq!(counted.total, 34_870.0);
        let rated = window_value(Some(0.01), Some(10.0), hour, Reading::of(&sloth("rate")))
            .expect("a value");
        assert_eq!(rated.total, 36_000.0);
    }
}
