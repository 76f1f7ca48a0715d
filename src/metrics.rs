//! `/metrics` in OpenMetrics: burnwatch's own health, and SLO series named like Sloth's
//! recording rules so that dashboards built for Sloth keep working when they scrape burnwatch.
//!
//! SLO series carry `sloth_id`, `sloth_service`, `sloth_slo` (and `sloth_window` on the
//! per-window ratios) plus the SLO instance's grouping labels:
//! `slo:sli_error:ratio_rate5m` … `ratio_rate3d` and `ratio_rate<period>`,
//! `slo:objective:ratio`, `slo:error_budget:ratio`, `slo:current_burn_rate:ratio` (over the
//! shortest window), `slo:period_burn_rate:ratio`, `slo:period_error_budget_remaining:ratio`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::burn::WindowValue;
use crate::engine::InstanceLabels;
use crate::slo::{Slo, format_duration};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// What the SLO series of one SLO share: its Sloth labels and windows.
#[derive(Debug)]
struct SloMeta {
    /// `sloth_id`, `sloth_service`, `sloth_slo`.
    sloth: [(String, String); 3],
    objective: f64,
    budget: f64,
    /// The tiers' windows, shortest first, then the period; with their `sloth_window` names.
    windows: Vec<(Duration, String)>,
    period: Duration,
}

/// One SLO instance's values at the last evaluation, aligned with its SLO's `windows`.
#[derive(Debug)]
struct SloRow {
    meta: Arc<SloMeta>,
    labels: InstanceLabels,
    ratios: Vec<Option<f64>>,
}

/// The SLO series, encoded from compact rows at scrape time (a `Family` per series would keep
/// a label set and a gauge for each of ~13 series per instance).
#[derive(Debug, Default)]
struct SloSeries {
    rows: RwLock<Vec<SloRow>>,
}

impl SloSeries {
    fn ratio(row: &SloRow, window: Duration) -> Option<f64> {
        let index = row
            .meta
            .windows
            .iter()
            .position(|(length, _)| *length == window)?;
        row.ratios[index]
    }
}

impl Collector for SloSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        // Every window name in use, in the order first seen (shortest first per SLO).
        let mut names: Vec<&str> = Vec::new();
        for row in rows.iter() {
            for (_, name) in &row.meta.windows {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        for name in names {
            let family = format!("slo:sli_error:ratio_rate{name}");
            let mut metric = encoder.encode_descriptor(
                &family,
                "Error ratio over the window",
                None,
                MetricType::Gauge,
            )?;
            for row in rows.iter() {
                let Some(index) = row
                    .meta
                    .windows
                    .iter()
                    .position(|(_, window)| window == name)
                else {
                    continue;
                };
                let Some(ratio) = row.ratios[index] else {
                    continue;
                };
                let window_label = [("sloth_window", name)];
                let labels = (
                    row.labels.as_slice(),
                    (row.meta.sloth.as_slice(), window_label),
                );
                ConstGauge::new(ratio).encode(metric.encode_family(&labels)?)?;
            }
        }
        type Value = fn(&SloRow) -> Option<f64>;
        let families: [(&str, &str, Value); 5] = [
            (
                "slo:objective:ratio",
                "The SLO's objective as a ratio",
                |row| Some(row.meta.objective),
            ),
            (
                "slo:error_budget:ratio",
                "The SLO's error budget: 1 - objective",
                |row| Some(row.meta.budget),
            ),
            (
                "slo:current_burn_rate:ratio",
                "Burn rate over the shortest window",
                |row| {
                    let shortest = row.meta.windows.first()?.0;
                    Some(SloSeries::ratio(row, shortest)? / row.meta.budget)
                },
            ),
            (
                "slo:period_burn_rate:ratio",
                "Burn rate over the SLO period",
                |row| Some(SloSeries::ratio(row, row.meta.period)? / row.meta.budget),
            ),
            (
                "slo:period_error_budget_remaining:ratio",
                "Share of the period's error budget left",
                |row| Some(1.0 - SloSeries::ratio(row, row.meta.period)? / row.meta.budget),
            ),
        ];
        for (family, help, value) in families {
            let mut metric = encoder.encode_descriptor(family, help, None, MetricType::Gauge)?;
            for row in rows.iter() {
                let Some(value) = value(row) else { continue };
                let labels = (row.labels.as_slice(), row.meta.sloth.as_slice());
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

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
    /// SLOs Prometheus has not answered for for `stale_after`.
    pub stale_slos: Gauge,
    /// Evaluations skipped because a cycle ran past them.
    pub missed_evaluations: Counter,
    /// Evaluations an SLO missed while its fetch (a warm start) still ran, by SLO.
    pub slo_evaluations_missed: Family<Labels, Counter>,
    /// The Prometheus client's queue: requests waiting, in flight, seconds waited.
    pub query_load: crate::source::prometheus::QueryLoad,
    /// Pending notifications by sink family.
    pub outbox_depth: Family<Labels, Gauge>,
    pub notifications_queued: Counter,
    pub notifications_silenced: Counter,
    /// Active silences, by source (config, api); counted when `/metrics` is scraped.
    pub silences: Family<Labels, Gauge>,
    pub notifications_delivered: Family<Labels, Counter>,
    pub delivery_failures: Family<Labels, Counter>,
    /// From queueing a notification to its delivery.
    pub notification_delay: Histogram,
    /// Failed outbox store calls of the delivery workers, by operation.
    pub store_errors: Family<Labels, Counter>,
    /// The wait of each delivery worker after store failures, by sink family.
    pub delivery_store_backoff: Family<Labels, FloatGauge>,
    slo_series: Arc<SloSeries>,
    /// The metadata of each SLO, reused across evaluations while the SLO is unchanged.
    slo_meta: Vec<(String, Arc<SloMeta>)>,
}

/// The leadership gauges ([`Metrics::register_ha`]).
#[derive(Clone, Default)]
pub struct HaMetrics {
    pub leader: Gauge,
    pub epoch: Gauge,
    pub leader_since: FloatGauge,
    pub lease_errors: Counter,
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
            "1 while the evaluation stale meta alert fires (some SLO unanswered for stale_after)",
            stale.clone(),
        );
        let missed_evaluations = Counter::default();
        registry.register(
            "burnwatch_evaluations_missed",
            "Evaluations skipped because a cycle ran past their tick (as Prometheus's rule groups count missed iterations)",
            missed_evaluations.clone(),
        );
        let slo_evaluations_missed = Family::<Labels, Counter>::default();
        registry.register(
            "burnwatch_slo_evaluations_missed",
            "Evaluations an SLO missed because its fetch (a warm start) ran past a cycle; the other SLOs were evaluated on time",
            slo_evaluations_missed.clone(),
        );
        let query_load = crate::source::prometheus::QueryLoad::default();
        registry.register(
            "burnwatch_prometheus_requests_waiting",
            "Requests to Prometheus waiting for a turn (prometheus.max_concurrency are in flight at most)",
            query_load.waiting.clone(),
        );
        registry.register(
            "burnwatch_prometheus_requests_in_flight",
            "Requests to Prometheus in flight",
            query_load.in_flight.clone(),
        );
        registry.register(
            "burnwatch_prometheus_request_wait_seconds",
            "Seconds requests to Prometheus waited for a turn",
            query_load.wait_seconds.clone(),
        );
        let stale_slos = Gauge::default();
        registry.register(
            "burnwatch_stale_slos",
            "SLOs Prometheus has not answered for for stale_after",
            stale_slos.clone(),
        );
        let outbox_depth = Family::<Labels, Gauge>::default();
        registry.register(
            "burnwatch_outbox_depth",
            "Notifications waiting in the outbox, by sink",
            outbox_depth.clone(),
        );
        let notifications_queued = Counter::default();
        registry.register(
            "burnwatch_notifications_queued",
            "Notifications written to the outbox",
            notifications_queued.clone(),
        );
        let notifications_silenced = Counter::default();
        registry.register(
            "burnwatch_notifications_silenced",
            "Alert changes not notified because a silence matched",
            notifications_silenced.clone(),
        );
        let silences = Family::<Labels, Gauge>::default();
        registry.register(
            "burnwatch_silences",
            "Active silences, by source (config, api)",
            silences.clone(),
        );
        let notifications_delivered = Family::<Labels, Counter>::default();
        registry.register(
            "burnwatch_notifications_delivered",
            "Notifications delivered, by sink",
            notifications_delivered.clone(),
        );
        let delivery_failures = Family::<Labels, Counter>::default();
        registry.register(
            "burnwatch_notification_delivery_failures",
            "Failed delivery attempts, by sink and reason (Slack error code, http_<status>, timeout, ...)",
            delivery_failures.clone(),
        );
        let notification_delay =
            Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]);
        registry.register(
            "burnwatch_notification_delay_seconds",
            "Time from queueing a notification to its delivery",
            notification_delay.clone(),
        );
        let store_errors = Family::<Labels, Counter>::default();
        registry.register(
            "burnwatch_store_errors",
            "Failed outbox store calls of the delivery workers, by operation (due, mark_in_flight, mark_delivered, ...)",
            store_errors.clone(),
        );
        for operation in crate::notify::deliver::StoreOp::ALL {
            let _ = store_errors.get_or_create(&labels(&[("operation", operation.name())]));
        }
        let delivery_store_backoff = Family::<Labels, FloatGauge>::default();
        registry.register(
            "burnwatch_delivery_store_backoff_seconds",
            "How long each delivery worker waits after the outbox store failed (0 while it works), by sink family",
            delivery_store_backoff.clone(),
        );
        let slo_series = Arc::new(SloSeries::default());
        registry.register_collector(Box::new(slo_series.clone()));
        Metrics {
            outbox_depth,
            notifications_queued,
            notifications_silenced,
            silences,
            notifications_delivered,
            delivery_failures,
            notification_delay,
            store_errors,
            delivery_store_backoff,
            registry,
            cycle_seconds,
            queries,
            query_errors,
            samples_touched,
            alerts,
            last_evaluation,
            stale,
            stale_slos,
            missed_evaluations,
            slo_evaluations_missed,
            query_load,
            slo_series,
            slo_meta: Vec::new(),
        }
    }

    /// Registers the leadership gauges of a replica sharing PostgreSQL (a single SQLite
    /// replica has none) and returns them.
    pub fn register_ha(&mut self) -> HaMetrics {
        let ha = HaMetrics::default();
        self.registry.register(
            "burnwatch_ha_leader",
            "1 while this replica leads (saves alert state and plans notifications), else 0",
            ha.leader.clone(),
        );
        self.registry.register(
            "burnwatch_ha_epoch",
            "The leader lease's epoch (fencing token) as this replica last learnt it",
            ha.epoch.clone(),
        );
        self.registry.register(
            "burnwatch_ha_leader_since_timestamp_seconds",
            "When the current leader took the lease (the database's clock)",
            ha.leader_since.clone(),
        );
        self.registry.register(
            "burnwatch_ha_lease_errors",
            "Calls to the lease that failed (this replica follows until one answers)",
            ha.lease_errors.clone(),
        );
        ha
    }

    fn meta(&mut self, slo: &Slo) -> Arc<SloMeta> {
        let mut windows: Vec<(Duration, String)> = slo
            .windows()
            .into_iter()
            .map(|window| (window, format_duration(window)))
            .collect();
        if !windows.iter().any(|(window, _)| *window == slo.period) {
            windows.push((slo.period, format_duration(slo.period)));
        }
        let meta = SloMeta {
            sloth: [
                ("sloth_id".to_string(), slo.id.clone()),
                ("sloth_service".to_string(), slo.service.clone()),
                ("sloth_slo".to_string(), slo.name.clone()),
            ],
            objective: slo.objective.ratio(),
            budget: slo.objective.error_budget(),
            windows,
            period: slo.period,
        };
        match self.slo_meta.iter().find(|(id, _)| *id == slo.id) {
            Some((_, existing))
                if existing.windows == meta.windows && existing.objective == meta.objective =>
            {
                existing.clone()
            }
            _ => {
                let meta = Arc::new(meta);
                self.slo_meta.retain(|(id, _)| *id != slo.id);
                self.slo_meta.push((slo.id.clone(), meta.clone()));
                meta
            }
        }
    }

    /// Replaces the SLO series with one evaluation's values: `instances` lists each SLO with
    /// its instances and their window values.
    pub fn set_slos<'a, F: Fn(Duration) -> Option<WindowValue>>(
        &mut self,
        instances: impl IntoIterator<Item = (&'a Slo, &'a InstanceLabels, F)>,
    ) {
        let mut rows = Vec::new();
        for (slo, labels, measure) in instances {
            let meta = self.meta(slo);
            let ratios = meta
                .windows
                .iter()
                .map(|(window, _)| measure(*window).map(|value| value.error_ratio))
                .collect();
            rows.push(SloRow {
                meta,
                labels: labels.clone(),
                ratios,
            });
        }
        *self
            .slo_series
            .rows
            .write()
            .unwrap_or_else(|e| e.into_inner()) = rows;
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
