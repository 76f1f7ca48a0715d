//! `/metrics` in OpenMetrics: burnwatch's own health, and SLO series named like Sloth's
//! recording rules so that dashboards built for Sloth keep working when they scrape burnwatch.
//!
//! SLO series carry `sloth_id`, `sloth_service`, `sloth_slo` (and `sloth_window` on the
//! per-window ratios) plus the SLO instance's grouping labels:
//! `slo:sli_error:ratio_rate5m` … `ratio_rate3d` and `ratio_rate<period>`,
//! `slo:objective:ratio`, `slo:error_budget:ratio`, `slo:current_burn_rate:ratio` (over the
//! shortest window), `slo:period_burn_rate:ratio`, `slo:period_error_budget_remaining:ratio`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::burn::WindowValue;
use crate::engine::InstanceLabels;
use crate::slo::{Slo, format_duration};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric burnwatch exports.
pub struct Metrics {
    registry: Registry,
    pub cycle_seconds: Histogram,
    pub queries: Family<Labels, Counter>,
    pub query_errors: Family<Labels, Counter>,
    pub samples_touched: Counter,
    pub alerts: Family<Labels, Gauge>,
    pub last_evaluation: FloatGauge,
    pub stale: Gauge,
    slo_ratio: Vec<(String, Family<Labels, FloatGauge>)>,
    objective: Family<Labels, FloatGauge>,
    error_budget: Family<Labels, FloatGauge>,
    current_burn_rate: Family<Labels, FloatGauge>,
    period_burn_rate: Family<Labels, FloatGauge>,
    budget_remaining: Family<Labels, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let cycle_seconds = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register(
            "burnwatch_cycle_duration_seconds",
            "Time to evaluate every SLO once",
            cycle_seconds.clone(),
        );
        let queries = Family::<Labels, Counter>::default();
        registry.register(
            "burnwatch_prometheus_queries",
            "Requests to the Prometheus API by endpoint",
            queries.clone(),
        );
        let query_errors = Family::<Labels, Counter>::default();
        registry.register(
            "burnwatch_prometheus_query_errors",
            "Failed requests to the Prometheus API by endpoint and reason",
            query_errors.clone(),
        );
        let samples_touched = Counter::default();
        registry.register(
            "burnwatch_prometheus_samples_touched",
            "Samples Prometheus reported reading for burnwatch's queries (totalQueryableSamples)",
            samples_touched.clone(),
        );
        let alerts = Family::<Labels, Gauge>::default();
        registry.register(
            "burnwatch_alerts",
            "Alerts by tier and state",
            alerts.clone(),
        );
        let last_evaluation = FloatGauge::default();
        registry.register(
            "burnwatch_last_evaluation_timestamp_seconds",
            "When the last complete evaluation ran",
            last_evaluation.clone(),
        );
        let stale = Gauge::default();
        registry.register(
            "burnwatch_evaluation_stale",
            "1 while evaluation has failed for longer than stale_after",
            stale.clone(),
        );
        let mut slo_family = |name: &str, help: &str| {
            let family = Family::<Labels, FloatGauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let objective = slo_family("slo:objective:ratio", "The SLO's objective as a ratio");
        let error_budget = slo_family(
            "slo:error_budget:ratio",
            "The SLO's error budget: 1 - objective",
        );
        let current_burn_rate = slo_family(
            "slo:current_burn_rate:ratio",
            "Burn rate over the shortest window",
        );
        let period_burn_rate = slo_family(
            "slo:period_burn_rate:ratio",
            "Burn rate over the SLO period",
        );
        let budget_remaining = slo_family(
            "slo:period_error_budget_remaining:ratio",
            "Share of the period's error budget left",
        );
        Metrics {
            registry,
            cycle_seconds,
            queries,
            query_errors,
            samples_touched,
            alerts,
            last_evaluation,
            stale,
            slo_ratio: Vec::new(),
            objective,
            error_budget,
            current_burn_rate,
            period_burn_rate,
            budget_remaining,
        }
    }

    /// Sets the SLO series of one instance from its window values.
    pub fn set_slo(
        &mut self,
        slo: &Slo,
        labels: &InstanceLabels,
        measure: impl Fn(Duration) -> Option<WindowValue>,
    ) {
        let mut base: Labels = labels.clone();
        base.push(("sloth_id".to_string(), slo.id.clone()));
        base.push(("sloth_service".to_string(), slo.service.clone()));
        base.push(("sloth_slo".to_string(), slo.name.clone()));
        let budget = slo.objective.error_budget();
        let mut windows = slo.windows();
        windows.push(slo.period);
        windows.dedup();
        for window in &windows {
            let Some(value) = measure(*window) else {
                continue;
            };
            let name = format!("slo:sli_error:ratio_rate{}", format_duration(*window));
            let family = match self
                .slo_ratio
                .iter()
                .find(|(existing, _)| *existing == name)
            {
                Some((_, family)) => family.clone(),
                None => {
                    let family = Family::<Labels, FloatGauge>::default();
                    self.registry.register(
                        name.clone(),
                        "Error ratio over the window",
                        family.clone(),
                    );
                    self.slo_ratio.push((name, family.clone()));
                    family
                }
            };
            let mut with_window = base.clone();
            with_window.push(("sloth_window".to_string(), format_duration(*window)));
            family.get_or_create(&with_window).set(value.error_ratio);
        }
        self.objective
            .get_or_create(&base)
            .set(slo.objective.ratio());
        self.error_budget.get_or_create(&base).set(budget);
        if let Some(shortest) = slo.windows().first().and_then(|window| measure(*window)) {
            self.current_burn_rate
                .get_or_create(&base)
                .set(shortest.error_ratio / budget);
        }
        if let Some(period) = measure(slo.period) {
            self.period_burn_rate
                .get_or_create(&base)
                .set(period.error_ratio / budget);
            self.budget_remaining
                .get_or_create(&base)
                .set(1.0 - period.error_ratio / budget);
        }
    }

    /// Forgets all SLO series, before a cycle sets the current ones.
    pub fn clear_slos(&self) {
        for (_, family) in &self.slo_ratio {
            family.clear();
        }
        for family in [
            &self.objective,
            &self.error_budget,
            &self.current_burn_rate,
            &self.period_burn_rate,
            &self.budget_remaining,
        ] {
            family.clear();
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// `[("endpoint", "query")]`-style label sets.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}
