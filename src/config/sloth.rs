//! Sloth's `version: "prometheus/v1"` spec files, accepted unchanged.
//!
//! Mapping: SLO id `<service>-<name>` (Sloth's `sloth_id`), objective in percent, period 30d
//! (Sloth's default, which Sloth sets with a flag, not in the file; within burnwatch's 1h..90d
//! and longer than every default window, so a Sloth file cannot break those bounds), the SRE
//! Workbook page/ticket windows, `sli.events` (error/total queries),
//! `sli.raw.error_ratio_query`, `alerting.name/labels/annotations`, `page_alert`/`ticket_alert`
//! with `disable`, and the runbook from the `runbook` (or `runbook_url`) annotation. Grouping
//! labels come from the queries' `sum by (...)`. SLI plugins are rejected with a clear message;
//! `slo_plugins`/`plugins` (chains that customise Sloth's generated rules) are accepted and
//! ignored, since burnwatch evaluates SLOs itself and generates no rules. Several specs may share
//! one file as YAML documents separated by `---`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::native::{DEFAULT_PERIOD, default_pairs, map_raw_query};
use super::{ConfigError, Problems, map_spec_file, name_and_objective};
use crate::query::CounterQuery;
use crate::slo::{Sli, Slo, Tier, TierKind, Timing};

pub const VERSION: &str = "prometheus/v1";

type Labels = BTreeMap<String, String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[allow(dead_code)]
    version: String,
    service: Spanned<String>,
    #[serde(default)]
    labels: Labels,
    /// Sloth's rule-generation plugin chain: accepted and ignored (burnwatch generates no rules).
    #[allow(dead_code)]
    slo_plugins: Option<serde::de::IgnoredAny>,
    slos: Vec<RawSlo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    name: Spanned<String>,
    objective: Spanned<f64>,
    #[serde(default)]
    description: String,
    /// Sloth's per-SLO rule-generation plugins: accepted and ignored.
    #[allow(dead_code)]
    plugins: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    labels: Labels,
    sli: Spanned<RawSli>,
    #[serde(default)]
    alerting: RawAlerting,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSli {
    events: Option<RawEvents>,
    raw: Option<RawRaw>,
    plugin: Option<RawPlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    error_query: Spanned<String>,
    total_query: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRaw {
    error_ratio_query: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    id: Spanned<String>,
    #[allow(dead_code)]
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerting {
    name: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    page_alert: Option<RawTierAlert>,
    ticket_alert: Option<RawTierAlert>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTierAlert {
    #[serde(default)]
    disable: bool,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
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
    let (sli, group_by) = map_sli(problems, &format!("{path}.sli"), &raw.sli).unzip();
    let alerting = raw.alerting;
    let mut tiers = Vec::new();
    for (kind, alert) in [
        (TierKind::Page, alerting.page_alert),
        (TierKind::Ticket, alerting.ticket_alert),
    ] {
        let alert = alert.unwrap_or_default();
        if alert.disable {
            continue;
        }
        let mut labels = alerting.labels.clone();
        labels.extend(alert.labels);
        let mut annotations = alerting.annotations.clone();
        annotations.extend(alert.annotations);
        tiers.push(Tier {
            kind,
            windows: default_pairs(kind, DEFAULT_PERIOD),
            timing: Timing::default(),
            labels,
            annotations,
        });
    }
    if problems.errors.len() > errors_before {
        return None;
    }
    let annotation = |keys: &[&str]| {
        tiers
            .iter()
            .flat_map(|tier| keys.iter().filter_map(|key| tier.annotations.get(*key)))
            .chain(keys.iter().filter_map(|key| alerting.annotations.get(*key)))
            .next()
            .cloned()
    };
    let runbook = annotation(&["runbook", "runbook_url"]);
    let dashboard = annotation(&["dashboard", "dashboard_url"]);
    // Annotations carry no positions of their own: a bad link is named at the SLO's name.
    for (what, link) in [("runbook", &runbook), ("dashboard", &dashboard)] {
        if let Some(message) = link.as_deref().and_then(super::link_problem) {
            problems.at(
                &raw.name,
                format!("{path}.alerting.annotations.{what}"),
                message,
            );
            return None;
        }
    }
    let mut labels = file_labels.clone();
    labels.extend(raw.labels);
    Some(Slo {
        id: format!("{service}-{name}"),
        service: service.to_string(),
        name,
        description: raw.description,
        objective: objective?,
        period: DEFAULT_PERIOD,
        sli: sli?,
        group_by: group_by?,
        min_events: 0.0,
        tiers,
        labels,
        runbook,
        dashboard,
        alert_name: alerting.name,
        spec_version: "prometheus/v1",
        origin: problems.origin(&raw.name),
        warnings: Vec::new(),
    })
}

/// The SLI and its grouping labels (from `sum by (...)`).
fn map_sli(
    problems: &mut Problems,
    path: &str,
    raw: &Spanned<RawSli>,
) -> Option<(Sli, Vec<String>)> {
    let sli = &raw.value;
    if let Some(plugin) = &sli.plugin {
        problems.at(
            &plugin.id,
            format!("{path}.plugin.id"),
            format!("SLI plugins are not supported ({:?}); write the plugin's queries as `events` or `raw`", plugin.id.value),
        );
        return None;
    }
    match (&sli.events, &sli.raw) {
        (Some(events), None) => {
            let error_query = check_event_query(
                problems,
                &format!("{path}.events.error_query"),
                &events.error_query,
            );
            let total_query = check_event_query(
                problems,
                &format!("{path}.events.total_query"),
                &events.total_query,
            );
            let (error_query, total_query) = (error_query?, total_query?);
            match (
                CounterQuery::parse(&error_query),
                CounterQuery::parse(&total_query),
            ) {
                (Ok(errors), Ok(total)) if errors.by == total.by => {
                    if errors.function != total.function {
                        let name = |function| match function {
                            crate::query::RangeFunction::Rate => "rate",
                            crate::query::RangeFunction::Increase => "increase",
                        };
                        problems.warn_at(
                            &events.error_query,
                            &format!("{path}.events.error_query"),
                            format!(
                                "error_query uses {} and total_query {}: the ratio of the two \
                                 is off by the window's seconds in PromQL (Sloth's rules, the \
                                 query strategy); use the same function in both",
                                name(errors.function),
                                name(total.function)
                            ),
                        );
                    }
                    let group_by = total.by.clone();
                    Some((Sli::Ratio { errors, total }, group_by))
                }
                (Ok(errors), Ok(total)) => {
                    problems.at(
                        &events.error_query,
                        format!("{path}.events.error_query"),
                        format!(
                            "groups by ({}) but total_query groups by ({}); both must group by the same labels",
                            errors.by.join(", "),
                            total.by.join(", ")
                        ),
                    );
                    None
                }
                (errors, total) => {
                    let reason = match (errors, total) {
                        (Err(reason), _) => format!("error_query: {reason}"),
                        (_, Err(reason)) => format!("total_query: {reason}"),
                        (Ok(_), Ok(_)) => String::new(),
                    };
                    let sli = Sli::Raw {
                        error_ratio_query: format!("({error_query})\n/\n({total_query})"),
                        local: None,
                        not_local_because: Some(reason),
                    };
                    Some((sli, Vec::new()))
                }
            }
        }
        (None, Some(raw_query)) => {
            let sli = map_raw_query(
                problems,
                &format!("{path}.raw.error_ratio_query"),
                &raw_query.error_ratio_query,
            )?;
            let group_by = match &sli {
                Sli::Raw {
                    local: Some(local), ..
                } => local.queries().1.by.clone(),
                _ => Vec::new(),
            };
            Some((sli, group_by))
        }
        _ => {
            problems.at(
                raw,
                path,
                "expected exactly one of `events`, `raw` or `plugin`",
            );
            None
        }
    }
}

/// Sloth event queries must be PromQL with `{{.window}}`; returns the trimmed query.
fn check_event_query(
    problems: &mut Problems,
    path: &str,
    query: &Spanned<String>,
) -> Option<String> {
    problems.check_le_spelling(query, path);
    if !crate::query::has_window_placeholder(&query.value) {
        problems.at(
            query,
            path,
            "expected `{{.window}}` where the range goes, e.g. `rate(x[{{.window}}])`",
        );
        return None;
    }
    match crate::query::parse_template(&query.value) {
        Ok(_) => Some(query.value.trim().to_string()),
        Err(message) => {
            problems.at(query, path, message);
            None
        }
    }
}
