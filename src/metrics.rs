//! `/metrics` in OpenMetrics: burnwatch's own health, and SLO series named and labelled like
//! the ones Sloth's recording rules make, so that Sloth's Grafana dashboards (and anything else
//! built on Sloth's series) keep working when they scrape burnwatch.
//!
//! Per SLO, as Sloth's `vector(...)` rules: `slo:objective:ratio`, `slo:error_budget:ratio`,
//! `slo:time_period:days` and `sloth_slo_info` (1, with `sloth_mode`, `sloth_spec`,
//! `sloth_version`, `sloth_objective`), labelled with the spec's labels and `sloth_id`,
//! `sloth_service`, `sloth_slo`. Per SLO instance, with the instance's grouping labels too:
//! `slo:sli_error:ratio_rate5m` … `ratio_rate3d` and `ratio_rate<period>` (`sloth_window`),
//! `slo:current_burn_rate:ratio` (over the shortest window), `slo:period_burn_rate:ratio` and
//! `slo:period_error_budget_remaining:ratio`; these three keep the `sloth_window` of the ratio
//! they divide, as Sloth's `/ on(...) group_left` rules do. A spec label overrides an instance
//! label of the same name (a rule's labels override its expression's), and Sloth's identity
//! labels override both.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
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

/// `sloth_mode` of `sloth_slo_info`: what made the series (Sloth says `cli-gen-prom` and the
/// like).
pub const SLOTH_MODE: &str = "burnwatch";
/// `sloth_version` of `sloth_slo_info`: burnwatch's own version, never a Sloth one.
pub const SLOTH_VERSION: &str = concat!("burnwatch-v", env!("CARGO_PKG_VERSION"));

/// What the SLO series of one SLO share: its labels and windows.
#[derive(Debug, PartialEq)]
struct SloMeta {
    /// The spec's labels, then `sloth_id`, `sloth_service`, `sloth_slo` (each name once), as
    /// Sloth's rules label every series of the SLO.
    labels: Labels,
    /// `sloth_slo_info`'s own labels: `sloth_mode`, `sloth_spec`, `sloth_version`,
    /// `sloth_objective`.
    info: Labels,
    objective: f64,
    budget: f64,
    /// The period in days (`slo:time_period:days`).
    days: f64,
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

/// One evaluation's SLO series: every configured SLO's metadata, and a row per instance
/// evaluated.
#[derive(Debug, Default)]
struct SloSnapshot {
    slos: Vec<Arc<SloMeta>>,
    rows: Vec<SloRow>,
}

/// The SLO series, encoded from compact rows at scrape time (a `Family` per series would keep
/// a label set and a gauge for each of ~13 series per instance).
#[derive(Debug, Default)]
struct SloSeries {
    snapshot: RwLock<SloSnapshot>,
}

/// An instance series' labels: the instance's (less those the SLO's labels override), the
/// SLO's, and `sloth_window` where given; encoded without building a label set per series.
struct SeriesLabels<'a> {
    instance: &'a [(String, String)],
    slo: &'a [(String, String)],
    window: Option<&'a str>,
}

impl EncodeLabelSet for SeriesLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let overridden = |name: &str| {
            self.slo.iter().any(|(slo_name, _)| slo_name == name)
                || (self.window.is_some() && name == "sloth_window")
        };
        for label in self.instance {
            if !overridden(&label.0) {
                label.encode(encoder.encode_label())?;
            }
        }
        for label in self.slo {
            if self.window.is_none() || label.0 != "sloth_window" {
                label.encode(encoder.encode_label())?;
            }
        }
        if let Some(window) = self.window {
            ("sloth_window", window).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

impl SloSeries {
    /// The period's `sloth_window` name.
    fn period_name(row: &SloRow) -> Option<&str> {
        row.meta
            .windows
            .iter()
            .find(|(length, _)| *length == row.meta.period)
            .map(|(_, name)| name.as_str())
    }

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
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let rows = &snapshot.rows;
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
                let labels = SeriesLabels {
                    instance: &row.labels,
                    slo: &row.meta.labels,
                    window: Some(name),
                };
                ConstGauge::new(ratio).encode(metric.encode_family(&labels)?)?;
            }
        }
        type SloValue = fn(&SloMeta) -> f64;
        let per_slo: [(&str, &str, SloValue); 3] = [
            (
                "slo:objective:ratio",
                "The SLO's objective as a ratio",
                |meta| meta.objective,
            ),
            (
                "slo:error_budget:ratio",
                "The SLO's error budget: 1 - objective",
                |meta| meta.budget,
            ),
            ("slo:time_period:days", "The SLO's period in days", |meta| {
                meta.days
            }),
        ];
        for (family, help, value) in per_slo {
            let mut metric = encoder.encode_descriptor(family, help, None, MetricType::Gauge)?;
            for meta in &snapshot.slos {
                ConstGauge::new(value(meta)).encode(metric.encode_family(&meta.labels)?)?;
            }
        }
        // Each with the `sloth_window` of the ratio it divides.
        type Value = fn(&SloRow) -> Option<(f64, &str)>;
        let per_instance: [(&str, &str, Value); 3] = [
            (
                "slo:current_burn_rate:ratio",
                "Burn rate over the shortest window",
                |row| {
                    let (shortest, name) = row.meta.windows.first()?;
                    Some((SloSeries::ratio(row, *shortest)? / row.meta.budget, name))
                },
            ),
            (
                "slo:period_burn_rate:ratio",
                "Burn rate over the SLO period",
                |row| {
                    let name = SloSeries::period_name(row)?;
                    Some((
                        SloSeries::ratio(row, row.meta.period)? / row.meta.budget,
                        name,
                    ))
                },
            ),
            (
                "slo:period_error_budget_remaining:ratio",
                "Share of the period's error budget left",
                |row| {
                    let name = SloSeries::period_name(row)?;
                    Some((
                        1.0 - SloSeries::ratio(row, row.meta.period)? / row.meta.budget,
                        name,
                    ))
                },
            ),
        ];
        for (family, help, value) in per_instance {
            let mut metric = encoder.encode_descriptor(family, help, None, MetricType::Gauge)?;
            for row in rows.iter() {
                let Some((value, window)) = value(row) else {
                    continue;
                };
                let labels = SeriesLabels {
                    instance: &row.labels,
                    slo: &row.meta.labels,
                    window: Some(window),
                };
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "sloth_slo_info",
            "Information about the SLO, as Sloth records it",
            None,
            MetricType::Gauge,
        )?;
        for meta in &snapshot.slos {
            let labels = (meta.labels.as_slice(), meta.info.as_slice());
            ConstGauge::new(1).encode(metric.encode_family(&labels)?)?;
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
        let identity = [
            ("sloth_id", &slo.id),
            ("sloth_service", &slo.service),
            ("sloth_slo", &slo.name),
        ];
        let mut labels: Labels = slo
            .labels
            .iter()
            .filter(|(name, _)| !identity.iter().any(|(key, _)| key == name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        labels.extend(
            identity
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        let info = [
            ("sloth_mode", SLOTH_MODE.to_string()),
            ("sloth_spec", slo.spec_version.to_string()),
            ("sloth_version", SLOTH_VERSION.to_string()),
            // Sloth's strconv.FormatFloat(objective, 'f', -1, 64): the shortest decimal.
            ("sloth_objective", format!("{}", slo.objective.percent())),
        ]
        .into_iter()
        .filter(|(name, _)| !labels.iter().any(|(key, _)| key == name))
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        let meta = SloMeta {
            labels,
            info,
            objective: slo.objective.ratio(),
            budget: slo.objective.error_budget(),
            days: slo.period.as_secs_f64() / 86_400.0,
            windows,
            period: slo.period,
        };
        match self.slo_meta.iter().find(|(id, _)| *id == slo.id) {
            Some((_, existing)) if **existing == meta => existing.clone(),
            _ => {
                let meta = Arc::new(meta);
                self.slo_meta.retain(|(id, _)| *id != slo.id);
                self.slo_meta.push((slo.id.clone(), meta.clone()));
                meta
            }
        }
    }

    /// Replaces the SLO series with one evaluation's values: every configured SLO's metadata,
    /// and each evaluated SLO's instances with their window values.
    pub fn set_slos<'a, F: Fn(Duration) -> Option<WindowValue>>(
        &mut self,
        slos: &[&Slo],
        instances: impl IntoIterator<Item = (&'a Slo, &'a InstanceLabels, F)>,
    ) {
        let metas = slos.iter().map(|slo| self.meta(slo)).collect();
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
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = SloSnapshot { slos: metas, rows };
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
