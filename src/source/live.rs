//! Window values from a live Prometheus, the `query` strategy: per window, the SLO's error-ratio
//! PromQL with the window substituted (exactly what Sloth's recording rules ask), plus the total
//! events where the SLI names them. Simple, and the reference the incremental strategy is
//! checked against; its cost grows with the window (a 30d range reads every raw sample).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::burn::WindowValue;
use crate::engine::InstanceLabels;
use crate::query::with_window;
use crate::slo::{Millis, Slo};
use crate::source::prometheus::{Answer, ApiError, Client};

/// Window values of every instance of one SLO at one evaluation time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub instances: BTreeMap<InstanceLabels, Vec<(Duration, WindowValue)>>,
    /// Queries sent and samples Prometheus reported touching for them.
    pub queries: u64,
    pub samples_touched: u64,
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
    let mut windows = slo.windows();
    if !windows.contains(&slo.period) {
        windows.push(slo.period);
    }
    windows
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

/// Fetches every window of `slo` at `at` with one ratio query (and one total query where the
/// SLI has a total) per window, all in flight together.
pub async fn fetch_by_query(client: &Client, slo: &Slo, at: Millis) -> Result<Snapshot, ApiError> {
    let ratio_template = slo.sli.error_ratio_template();
    let total_template = slo
        .sli
        .local()
        .ok()
        .map(|local| local.queries().1.template().to_string());
    let mut tasks = JoinSet::new();
    for (index, window) in windows_with_period(slo).into_iter().enumerate() {
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
        let (values, touched) = result?;
        snapshot.queries += 1;
        snapshot.samples_touched += touched;
        let target = if is_total { &mut totals } else { &mut ratios };
        target.insert((index, window), values);
    }
    for (key, ratio_values) in &ratios {
        let window = key.1;
        let seconds = window.as_secs_f64();
        match totals.get(key) {
            // The total names the instances; an absent ratio means no error series: 0 errors.
            Some(total_values) => {
                for (labels, rate) in total_values {
                    let total = rate * seconds;
                    let error_ratio = ratio_values.get(labels).copied().unwrap_or(if total > 0.0 {
                        0.0
                    } else {
                        f64::NAN
                    });
                    let value = WindowValue {
                        bad: error_ratio * total,
                        total,
                        error_ratio,
                    };
                    snapshot
                        .instances
                        .entry(labels.clone())
                        .or_default()
                        .push((window, value));
                }
            }
            // A raw ratio without a known total: the ratio alone.
            None => {
                for (labels, error_ratio) in ratio_values {
                    let value = WindowValue {
                        bad: f64::NAN,
                        total: f64::NAN,
                        error_ratio: *error_ratio,
                    };
                    snapshot
                        .instances
                        .entry(labels.clone())
                        .or_default()
                        .push((window, value));
                }
            }
        }
    }
    Ok(snapshot)
}
