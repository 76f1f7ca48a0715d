//! The status page on the HTTP face: `/` lists every SLO instance at a glance (budget, burn
//! rate per window pair against its threshold, alert state per tier since when), filtered,
//! sorted and paged on the server; `/slo/{id}` shows one SLO: its spec as loaded, and per
//! instance a burn-rate chart per window pair over the last period with its threshold and
//! alert intervals, the incidents with their Slack threads, and its notifications.
//!
//! Pages are read-only (GET; no state changes from them) and drawn on the server without
//! script. A page view copies what it shows under short locks (the status is an `Arc`
//! swapped by each cycle; one SLO's history is copied for the instances on the page) and
//! renders after, so it never holds up an evaluation. Charts come from burnwatch's own
//! [`SloHistory`], not from Prometheus.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::alert::{Alert, Phase};
use crate::daemon::{InstanceStatus, SloStatus};
use crate::engine::SavedAlert;
use crate::history::{AlertSpan, Series, SloHistory, Span};
use crate::replay::{format_labels, format_rate, format_time};
use crate::slo::{Millis, Slo, TierKind, format_duration};
use crate::store::{Dialect, Sql as _, Store, StoreError, params};

pub mod chart;
pub mod html;

use html::{budget, encode, escape, layout, link};

/// Rows per page of the list, instances per page of an SLO's page.
pub const LIST_PAGE: usize = 100;
pub const SLO_PAGE: usize = 20;

/// The SLOs as loaded, each with its history (shared with the group that records it).
#[derive(Default)]
pub struct PageSource {
    pub slos: Vec<(Slo, Arc<Mutex<SloHistory>>)>,
}

/// What the list shows, as of one evaluation.
pub struct Snapshot<'a> {
    pub source: &'a PageSource,
    pub slos: &'a [SloStatus],
    pub alerts: &'a [SavedAlert],
    pub stale: &'a [String],
    pub last_evaluation: Option<Millis>,
    /// The source's version and the window arithmetic followed (`None`: no source, the demo).
    pub source_version: Option<&'a crate::source::version::SourceVersion>,
    /// With PostgreSQL replicas, a follower's note: whose page this is, and who leads.
    pub replica: Option<String>,
}

/// ` · Prometheus 3.16.0, windows as prometheus-3 (detected)`, the reason as its title.
fn source_line(source: &crate::source::version::SourceVersion) -> String {
    let server = match (&source.application, &source.version) {
        (Some(application), Some(version)) => format!("{application} {version}"),
        (None, Some(version)) => format!("Prometheus {version}"),
        (_, None) => "Prometheus (version not known yet)".to_string(),
    };
    let basis = match source.basis {
        crate::source::version::Basis::Pinned => "pinned",
        crate::source::version::Basis::Detected => "detected",
        crate::source::version::Basis::Assumed => "assumed",
    };
    format!(
        r#" · <span id="source" title="{}">{}, windows as {} ({basis})</span>"#,
        escape(&source.reason),
        escape(&server),
        source.semantics.name()
    )
}

/// The list's query: `?show=all|firing|burning|stale&q=TEXT&sort=slo|budget|burn&page=N`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ListQuery {
    pub show: Option<String>,
    pub q: Option<String>,
    pub sort: Option<String>,
    pub page: Option<usize>,
}

/// One window pair's burn rates now.
struct PairNow {
    tier: TierKind,
    short: String,
    long: String,
    burn_short: Option<f64>,
    burn_long: Option<f64>,
    factor: f64,
}

impl PairNow {
    fn burning(&self) -> bool {
        matches!((self.burn_short, self.burn_long), (Some(short), Some(long)) if short > self.factor && long > self.factor)
    }
}

/// One tier's alert now.
struct TierNow {
    tier: TierKind,
    state: &'static str,
    since: Option<Millis>,
}

/// One row of the list: an SLO instance.
struct Row<'a> {
    slo: &'a Slo,
    labels: Vec<(String, String)>,
    budget_remaining: Option<f64>,
    pairs: Vec<PairNow>,
    tiers: Vec<TierNow>,
    stale: bool,
}

impl Row<'_> {
    fn firing(&self) -> bool {
        self.tiers
            .iter()
            .any(|tier| matches!(tier.state, "firing" | "resolving"))
    }

    fn burning(&self) -> bool {
        self.pairs.iter().any(PairNow::burning)
    }

    /// The highest burn relative to its threshold, for sorting.
    fn heat(&self) -> f64 {
        self.pairs
            .iter()
            .filter_map(|pair| Some(pair.burn_short?.min(pair.burn_long?) / pair.factor))
            .fold(0.0, f64::max)
    }

    fn matches(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        self.slo.id.to_lowercase().contains(&text)
            || self.slo.service.to_lowercase().contains(&text)
            || self
                .labels
                .iter()
                .any(|(name, value)| format!("{name}={value}").to_lowercase().contains(&text))
    }
}

fn tier_now(alert: Option<&Alert>, tier: TierKind, stale: bool) -> TierNow {
    let (state, since) = match alert {
        _ if stale => ("stale", None),
        None => ("inactive", None),
        Some(alert) => match alert.phase {
            Phase::Inactive if alert.insufficient => ("insufficient data", None),
            Phase::Inactive => ("inactive", None),
            Phase::Pending { since } => ("pending", Some(since)),
            Phase::Firing {
                false_since: Some(since),
                ..
            } => ("resolving", Some(since)),
            Phase::Firing { since, .. } => ("firing", Some(since)),
        },
    };
    TierNow { tier, state, since }
}

/// An alert by (SLO id, instance labels, tier).
type AlertKey<'a> = (&'a str, &'a [(String, String)], TierKind);

fn rows<'a>(snapshot: &Snapshot<'a>) -> Vec<Row<'a>> {
    let mut alerts: HashMap<AlertKey, &Alert> = HashMap::new();
    for saved in snapshot.alerts {
        alerts.insert(
            (saved.slo_id.as_str(), saved.labels.as_slice(), saved.tier),
            &saved.alert,
        );
    }
    let mut rows = Vec::new();
    for status in snapshot.slos {
        let Some((slo, _)) = snapshot
            .source
            .slos
            .iter()
            .find(|(slo, _)| slo.id == status.id)
        else {
            continue;
        };
        let stale = snapshot.stale.contains(&status.id);
        for instance in status.instances.iter() {
            let labels: Vec<(String, String)> = instance
                .labels
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            let burn = |window: std::time::Duration| {
                let name = format_duration(window);
                instance
                    .windows
                    .iter()
                    .find(|status| status.window == name)
                    .and_then(|status| status.burn_rate)
            };
            let pairs = slo
                .tiers
                .iter()
                .flat_map(|tier| {
                    tier.windows.iter().map(move |pair| PairNow {
                        tier: tier.kind,
                        short: format_duration(pair.short),
                        long: format_duration(pair.long),
                        burn_short: burn(pair.short),
                        burn_long: burn(pair.long),
                        factor: pair.factor,
                    })
                })
                .collect();
            let tiers = slo
                .tiers
                .iter()
                .map(|tier| {
                    let alert = alerts.get(&(slo.id.as_str(), labels.as_slice(), tier.kind));
                    tier_now(alert.copied(), tier.kind, stale)
                })
                .collect();
            rows.push(Row {
                slo,
                labels,
                budget_remaining: instance.budget_remaining,
                pairs,
                tiers,
                stale,
            });
        }
    }
    rows
}

fn since(at: Option<Millis>) -> String {
    at.map(|at| format!(r#" <span class="muted">since {}</span>"#, format_time(at)))
        .unwrap_or_default()
}

fn state_badge(tier: &TierNow) -> String {
    let class = tier.state.split(' ').next().unwrap_or("");
    format!(
        r#"<span class="state {class}" data-tier="{}">{}: {}</span>{}"#,
        tier.tier.as_str(),
        tier.tier.as_str(),
        tier.state,
        since(tier.since)
    )
}

fn rate(value: Option<f64>) -> String {
    value.map_or("–".to_string(), format_rate)
}

/// The list page.
pub fn list(snapshot: &Snapshot, query: &ListQuery) -> String {
    let show = query.show.as_deref().unwrap_or("all");
    let text = query.q.clone().unwrap_or_default();
    let sort = query.sort.as_deref().unwrap_or("slo");
    let mut rows: Vec<Row> = rows(snapshot)
        .into_iter()
        .filter(|row| match show {
            "firing" => row.firing(),
            "burning" => row.burning(),
            "stale" => row.stale,
            _ => true,
        })
        .filter(|row| text.is_empty() || row.matches(&text))
        .collect();
    match sort {
        "budget" => rows.sort_by(|a, b| {
            let key = |row: &Row| row.budget_remaining.unwrap_or(f64::INFINITY);
            key(a).total_cmp(&key(b))
        }),
        "burn" => rows.sort_by(|a, b| b.heat().total_cmp(&a.heat())),
        _ => {}
    }
    let pages = rows.len().div_ceil(LIST_PAGE).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let firing = rows.iter().filter(|row| row.firing()).count();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p class="muted">{} instance(s) shown, {firing} firing{}{}{}{}</p>"#,
        rows.len(),
        snapshot
            .last_evaluation
            .map(|at| format!(" · evaluated at {}", format_time(at)))
            .unwrap_or_default(),
        if snapshot.stale.is_empty() {
            String::new()
        } else {
            format!(" · stale: {}", escape(&snapshot.stale.join(", ")))
        },
        snapshot.source_version.map(source_line).unwrap_or_default(),
        snapshot
            .replica
            .as_deref()
            .map(|note| format!(r#" · <span id="replica">{}</span>"#, escape(note)))
            .unwrap_or_default()
    );
    let option = |value: &str, label: &str, current: &str| {
        format!(
            r#"<option value="{value}"{}>{label}</option>"#,
            if value == current { " selected" } else { "" }
        )
    };
    let _ = write!(
        body,
        r#"<form class="filters" method="get" action="/"><label>Show <select name="show" id="show">{}{}{}{}</select></label><label>Service or label <input type="search" name="q" id="q" value="{}"></label><label>Sort <select name="sort" id="sort">{}{}{}</select></label><button type="submit" id="apply">Apply</button></form>"#,
        option("all", "all", show),
        option("firing", "firing", show),
        option("burning", "burning", show),
        option("stale", "stale", show),
        escape(&text),
        option("slo", "SLO", sort),
        option("budget", "budget left", sort),
        option("burn", "burn rate", sort),
    );
    let link_with = |sort_by: &str, page: usize| {
        format!(
            "/?show={}&q={}&sort={}&page={page}",
            encode(show),
            encode(&text),
            encode(sort_by)
        )
    };
    let _ = write!(
        body,
        r#"<table id="slos"><thead><tr><th><a href="{}">SLO</a></th><th>Instance</th><th>Objective</th><th><a href="{}">Budget left</a></th><th><a href="{}">Burn rate (short / long vs threshold)</a></th><th>Alerts</th></tr></thead><tbody>"#,
        escape(&link_with("slo", 1)),
        escape(&link_with("budget", 1)),
        escape(&link_with("burn", 1)),
    );
    for row in rows.iter().skip((page - 1) * LIST_PAGE).take(LIST_PAGE) {
        let pairs: Vec<String> = row
            .pairs
            .iter()
            .map(|pair| {
                format!(
                    r#"<div class="pair{}" data-tier="{}">{} {}/{}: {} / {} vs {}</div>"#,
                    if pair.burning() { " burning" } else { "" },
                    pair.tier.as_str(),
                    pair.tier.as_str(),
                    escape(&pair.short),
                    escape(&pair.long),
                    rate(pair.burn_short),
                    rate(pair.burn_long),
                    format_rate(pair.factor)
                )
            })
            .collect();
        let tiers: Vec<String> = row.tiers.iter().map(state_badge).collect();
        let _ = write!(
            body,
            r#"<tr class="slo-row{}{}" data-slo="{}"><td><a href="/slo/{}">{}</a><div class="muted">{}</div></td><td class="labels">{}</td><td>{}% / {}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            if row.firing() { " firing" } else { "" },
            if row.stale { " stale" } else { "" },
            escape(&row.slo.id),
            encode(&row.slo.id),
            escape(&row.slo.name),
            escape(&row.slo.service),
            escape(&format_labels(&row.labels)),
            row.slo.objective.percent(),
            escape(&format_duration(row.slo.period)),
            budget(row.budget_remaining),
            pairs.join(""),
            tiers.join("<br>"),
        );
    }
    body.push_str("</tbody></table>");
    pager(&mut body, pages, page, |number| link_with(sort, number));
    layout("SLOs", &body)
}

/// One incident of an SLO, as the page lists it.
pub struct Incident {
    pub labels: String,
    pub target: String,
    pub opened_at: Millis,
    pub closed_at: Option<Millis>,
    pub channel_id: Option<String>,
    pub root_ts: Option<String>,
}

/// One notification of an SLO in the outbox.
pub struct Notification {
    pub id: i64,
    pub sink: String,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
    pub last_error: Option<String>,
}

impl Store {
    /// The incidents of one SLO, newest first (at most 50).
    pub fn slo_incidents(&self, slo_id: &str) -> Result<Vec<Incident>, StoreError> {
        self.db()
            .query(
                "select incidents",
                "SELECT labels, target, opened_at, closed_at, channel_id, root_ts FROM incidents
                 WHERE slo_id = ?1 ORDER BY id DESC LIMIT 50",
                params![slo_id],
            )?
            .iter()
            .map(|row| {
                Ok(Incident {
                    labels: row.get(0)?,
                    target: row.get(1)?,
                    opened_at: row.get(2)?,
                    closed_at: row.get(3)?,
                    channel_id: row.get(4)?,
                    root_ts: row.get(5)?,
                })
            })
            .collect()
    }

    /// The notifications of one SLO in the outbox, newest first (at most 100): those whose
    /// cause names it.
    pub fn slo_notifications(&self, slo_id: &str) -> Result<Vec<Notification>, StoreError> {
        let names = match self.db().dialect() {
            Dialect::Sqlite => "instr(natural_key, '|' || ?1 || '|') > 0",
            Dialect::Postgres => "strpos(natural_key, '|' || ?1 || '|') > 0",
        };
        self.db()
            .query(
                "select notifications",
                &format!(
                    "SELECT id, sink, kind, state, attempts, created_at, delivered_at, last_error
                     FROM outbox WHERE {names} ORDER BY id DESC LIMIT 100"
                ),
                params![slo_id],
            )?
            .iter()
            .map(|row| {
                Ok(Notification {
                    id: row.get(0)?,
                    sink: row.get(1)?,
                    kind: row.get(2)?,
                    state: row.get(3)?,
                    attempts: row.get(4)?,
                    created_at: row.get(5)?,
                    delivered_at: row.get(6)?,
                    last_error: row.get(7)?,
                })
            })
            .collect()
    }
}

/// What one SLO's page shows of one instance: its current status and its history.
pub struct InstanceView {
    pub status: InstanceStatus,
    pub labels: Vec<(String, String)>,
    /// Per window: its buckets over the recent span and over the period.
    pub recent: Vec<(std::time::Duration, Series)>,
    pub period: Vec<(std::time::Duration, Series)>,
    pub spans: Vec<AlertSpan>,
}

/// An SLO's instances as its page lists them: those with a firing (or resolving) alert
/// first, then in label order.
pub fn page_order<'a>(
    slo_id: &str,
    instances: &'a [InstanceStatus],
    alerts: &[SavedAlert],
) -> Vec<&'a InstanceStatus> {
    let firing: Vec<&[(String, String)]> = alerts
        .iter()
        .filter(|saved| saved.slo_id == slo_id && saved.alert.is_firing())
        .map(|saved| saved.labels.as_slice())
        .collect();
    let mut ordered: Vec<(bool, &InstanceStatus)> = instances
        .iter()
        .map(|status| {
            let labels: Vec<(String, String)> = status
                .labels
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            (!firing.contains(&labels.as_slice()), status)
        })
        .collect();
    ordered.sort_by_key(|(quiet, _)| *quiet);
    ordered.into_iter().map(|(_, status)| status).collect()
}

/// Copies, under the history's lock, what the page shows of the instances on it; also how
/// long the recent span and the period are.
pub fn views(
    history: &Mutex<SloHistory>,
    instances: &[&InstanceStatus],
    page: usize,
) -> (Vec<InstanceView>, (Millis, Millis)) {
    let history = history.lock().unwrap_or_else(|e| e.into_inner());
    let views = instances
        .iter()
        .skip((page - 1) * SLO_PAGE)
        .take(SLO_PAGE)
        .map(|status| {
            let labels: Vec<(String, String)> = status
                .labels
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            let series = |span| {
                history
                    .windows()
                    .iter()
                    .map(|window| (*window, history.series(&labels, *window, span)))
                    .collect()
            };
            InstanceView {
                recent: series(Span::Recent),
                period: series(Span::Period),
                spans: history.spans(&labels).to_vec(),
                status: (*status).clone(),
                labels,
            }
        })
        .collect();
    (
        views,
        (history.length(Span::Recent), history.length(Span::Period)),
    )
}

/// One SLO's page.
#[allow(clippy::too_many_arguments)]
pub fn slo_page(
    slo: &Slo,
    status: Option<&SloStatus>,
    views: &[InstanceView],
    spans: (Millis, Millis),
    page: usize,
    now: Millis,
    incidents: &[Incident],
    notifications: &[Notification],
    store_error: Option<&str>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1 id="slo-title">{}</h1><p>{} · objective {}% over {} · {}{}</p>"#,
        escape(&slo.id),
        escape(&slo.service),
        slo.objective.percent(),
        escape(&format_duration(slo.period)),
        status.map_or("not evaluated yet".to_string(), |status| {
            format!(
                "{} (last success {})",
                escape(&status.state),
                escape(status.last_success.as_deref().unwrap_or("never"))
            )
        }),
        status
            .and_then(|status| status.last_error.as_deref())
            .map(|error| format!(r#" · <span class="burning">{}</span>"#, escape(error)))
            .unwrap_or_default()
    );
    spec_section(&mut body, slo);
    instances_section(&mut body, slo, status, views, spans, page, now);
    store_sections(&mut body, incidents, notifications, store_error);
    layout(&slo.id, &body)
}

/// The spec as loaded: SLI, grouping, tiers with their pairs and timing, links.
fn spec_section(body: &mut String, slo: &Slo) {
    let _ = write!(
        body,
        r#"<h2>Spec</h2><table class="spec"><tr><th>SLI</th><td><code>{}</code></td></tr><tr><th>Grouped by</th><td>{}</td></tr><tr><th>Min events</th><td>{}</td></tr>"#,
        escape(&slo.sli.error_ratio_template()),
        escape(&slo.group_by.join(", ")),
        slo.min_events
    );
    for tier in &slo.tiers {
        let pairs: Vec<String> = tier
            .windows
            .iter()
            .map(|pair| {
                format!(
                    "{}/{} at {}",
                    format_duration(pair.short),
                    format_duration(pair.long),
                    format_rate(pair.factor)
                )
            })
            .collect();
        let _ = write!(
            body,
            "<tr><th>{}</th><td>{} · for {} · resolve_timeout {} · repeat {}</td></tr>",
            tier.kind.as_str(),
            escape(&pairs.join(", ")),
            format_duration(tier.timing.for_),
            format_duration(tier.timing.resolve_timeout),
            format_duration(tier.timing.repeat_interval)
        );
    }
    let links: Vec<String> = [("runbook", &slo.runbook), ("dashboard", &slo.dashboard)]
        .iter()
        .filter_map(|(name, url)| Some(link(url.as_deref()?, name)))
        .collect();
    let _ = write!(
        body,
        "<tr><th>Links</th><td>{}</td></tr></table>",
        if links.is_empty() {
            "none".to_string()
        } else {
            links.join(" · ")
        }
    );
}

/// The instances on this page of the SLO's, each with a chart per window pair and span.
fn instances_section(
    body: &mut String,
    slo: &Slo,
    status: Option<&SloStatus>,
    views: &[InstanceView],
    spans: (Millis, Millis),
    page: usize,
    now: Millis,
) {
    let total = status.map_or(0, |status| status.instances.len());
    let _ = write!(body, "<h2>Instances ({total})</h2>");
    let budget_share = slo.objective.error_budget();
    for view in views {
        let _ = write!(
            body,
            r#"<section class="instance" data-labels="{}"><h3>{}</h3><p>Budget left: {}</p>"#,
            escape(&format_labels(&view.labels)),
            escape(&format_labels(&view.labels)),
            budget(view.status.budget_remaining)
        );
        for tier in &slo.tiers {
            for pair in &tier.windows {
                let _ = write!(
                    body,
                    "<h4>{} · {} / {} · threshold {}</h4>",
                    tier.kind.as_str(),
                    format_duration(pair.short),
                    format_duration(pair.long),
                    format_rate(pair.factor)
                );
                body.push_str(r#"<div class="charts">"#);
                for (series, length, name) in [
                    (&view.recent, spans.0, "recent"),
                    (&view.period, spans.1, "period"),
                ] {
                    let find = |window| series.iter().find(|(known, _)| *known == window);
                    let (Some((_, short)), Some((_, long))) = (find(pair.short), find(pair.long))
                    else {
                        continue;
                    };
                    let shown =
                        format_duration(std::time::Duration::from_millis(length.max(0) as u64));
                    let _ = write!(
                        body,
                        r#"<figure class="{name}"><figcaption>last {shown}</figcaption>"#
                    );
                    body.push_str(&chart::render(&chart::Chart {
                        lines: vec![
                            (
                                format!("{} burn rate", format_duration(pair.short)),
                                short,
                                "#f76b15",
                            ),
                            (
                                format!("{} burn rate", format_duration(pair.long)),
                                long,
                                "#1f6feb",
                            ),
                        ],
                        threshold: pair.factor,
                        spans: &view.spans,
                        from: now - length,
                        to: now,
                        error_budget: budget_share,
                        title: format!(
                            "{} {} {}/{} over the last {shown}",
                            format_labels(&view.labels),
                            tier.kind.as_str(),
                            format_duration(pair.short),
                            format_duration(pair.long)
                        ),
                    }));
                    body.push_str("</figure>");
                }
                body.push_str("</div>");
            }
        }
        body.push_str("</section>");
    }
    pager(body, total.div_ceil(SLO_PAGE).max(1), page, |number| {
        format!("/slo/{}?page={number}", encode(&slo.id))
    });
}

/// The SLO's incidents (with their Slack threads) and its notifications in the outbox.
fn store_sections(
    body: &mut String,
    incidents: &[Incident],
    notifications: &[Notification],
    store_error: Option<&str>,
) {
    body.push_str("<h2>Incidents</h2>");
    if let Some(error) = store_error {
        let _ = write!(body, r#"<p class="burning">{}</p>"#, escape(error));
    }
    body.push_str(r#"<table id="incidents"><tr><th>Instance</th><th>Opened</th><th>Closed</th><th>Slack</th></tr>"#);
    for incident in incidents {
        let labels: Vec<(String, String)> =
            serde_json::from_str(&incident.labels).unwrap_or_default();
        let thread = match (&incident.channel_id, &incident.root_ts) {
            (Some(channel), Some(ts)) => link(
                &format!(
                    "https://slack.com/archives/{}/p{}",
                    encode(channel),
                    encode(&ts.replace('.', ""))
                ),
                &format!("{} thread", incident.target),
            ),
            _ => format!("{} (not posted yet)", escape(&incident.target)),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{thread}</td></tr>",
            escape(&format_labels(&labels)),
            format_time(incident.opened_at),
            incident.closed_at.map_or("open".to_string(), format_time)
        );
    }
    body.push_str("</table><h2>Notifications</h2>");
    body.push_str(r#"<table id="notifications"><tr><th>#</th><th>Sink</th><th>Kind</th><th>State</th><th>Attempts</th><th>Queued</th><th>Delivered</th><th>Last error</th></tr>"#);
    for row in notifications {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            row.id,
            escape(&row.sink),
            escape(&row.kind),
            escape(&row.state),
            row.attempts,
            format_time(row.created_at),
            row.delivered_at.map(format_time).unwrap_or_default(),
            escape(row.last_error.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</table>");
}

/// Links to the pages of a paged list, the current one in bold.
fn pager(body: &mut String, pages: usize, page: usize, href: impl Fn(usize) -> String) {
    if pages <= 1 {
        return;
    }
    body.push_str(r#"<p class="pages">"#);
    for number in 1..=pages {
        if number == page {
            let _ = write!(body, "<strong>{number}</strong>");
        } else {
            let _ = write!(body, r#"<a href="{}">{number}</a>"#, escape(&href(number)));
        }
    }
    body.push_str("</p>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_slo_page_lists_its_firing_instances_first() {
        let instance = |route: &str| InstanceStatus {
            labels: [("route".to_string(), route.to_string())].into(),
            windows: Vec::new(),
            budget_remaining: None,
            no_data: None,
        };
        let instances = [instance("a"), instance("b"), instance("c")];
        let firing = SavedAlert {
            slo_id: "orders-availability".to_string(),
            labels: vec![("route".to_string(), "c".to_string())],
            tier: TierKind::Page,
            alert: Alert {
                phase: Phase::Firing {
                    since: 0,
                    last_sent: 0,
                    false_since: None,
                    absent_since: None,
                },
                announced: true,
                insufficient: false,
            },
            tripped: None,
        };
        let order = |alerts: &[SavedAlert]| -> Vec<String> {
            page_order("orders-availability", &instances, alerts)
                .iter()
                .map(|status| status.labels["route"].clone())
                .collect()
        };
        assert_eq!(order(&[]), ["a", "b", "c"]);
        assert_eq!(order(std::slice::from_ref(&firing)), ["c", "a", "b"]);
        let elsewhere = SavedAlert {
            slo_id: "other".to_string(),
            ..firing
        };
        assert_eq!(order(&[elsewhere]), ["a", "b", "c"]);
    }
}
