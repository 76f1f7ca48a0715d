//! The daemon config (`config/burnwatch.yaml`): where Prometheus is, how often to evaluate,
//! which spec files to load. Relative spec paths are resolved against the config file's folder.
//!
//! ```yaml
//! prometheus:
//!   url: http://127.0.0.1:9090
//! evaluation_interval: 30s
//! rules:
//!   - ../rules/order-service.yaml
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, Problems};
use crate::slo;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    prometheus: Option<RawPrometheus>,
    evaluation_interval: Option<Spanned<String>>,
    rules: Spanned<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: Spanned<String>,
}

/// A validated daemon config.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub prometheus_url: Option<String>,
    pub evaluation_interval: Duration,
    /// Spec files and folders, resolved against the config file's folder.
    pub rules: Vec<PathBuf>,
}

pub fn load(file: &str, raw: File, base: &Path) -> Result<DaemonConfig, Vec<ConfigError>> {
    let mut problems = Problems::new(file);
    let evaluation_interval = match &raw.evaluation_interval {
        Some(value) => match slo::parse_duration(&value.value) {
            Ok(interval) if interval >= Duration::from_secs(1) => Some(interval),
            Ok(_) => {
                problems.at(value, "evaluation_interval", "must be at least 1s");
                None
            }
            Err(message) => {
                problems.at(value, "evaluation_interval", message);
                None
            }
        },
        None => Some(Duration::from_secs(30)),
    };
    let prometheus_url = raw.prometheus.map(|prometheus| {
        let url = prometheus.url.value.trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.at(
                &prometheus.url,
                "prometheus.url",
                format!("{url:?} is not an http:// or https:// URL"),
            );
        }
        url
    });
    if raw.rules.value.is_empty() {
        problems.at(
            &raw.rules,
            "rules",
            "expected at least one SLO spec file or folder",
        );
    }
    let rules = raw.rules.value.iter().map(|rule| base.join(rule)).collect();
    let config = DaemonConfig {
        prometheus_url,
        evaluation_interval: evaluation_interval.unwrap_or_default(),
        rules,
    };
    problems.into_result(config)
}
