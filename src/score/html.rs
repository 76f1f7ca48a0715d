//! `replay --score --html`: the scored replay as one self-contained HTML page (inline CSS and
//! SVG, no script, no external asset) for people to look at.
//!
//! Two halves: a pure data model ([`Report`]: the evaluation times, per SLO instance the error
//! ratio of every window at every step, the ground truth per tier, and any number of named
//! policies with their alerts and scores) and [`render`], which draws it. [`from_scorecard`]
//! builds the model of a `replay --score` (one policy, "current"); a sweep can add its
//! recommended policy (or several) to the same instances.
//!
//! Per instance and tier, one chart per window pair: both windows' burn rates (log scale;
//! the right axis reads them as error ratios), each policy's threshold for the pair dashed,
//! the tier's significant events shaded across the plot, and under it one lane for the events
//! and one per policy with its alert intervals. Every text from specs and labels is escaped.

use std::fmt::Write as _;
use std::time::Duration;

use super::report::{self, Scorecard};
use super::{AlertSpan, Score, Significance, SignificantEvent};
use crate::engine::InstanceLabels;
use crate::page::chart::{self, Band, Frame};
use crate::page::html::escape;
use crate::replay::{Consumption, format_labels, format_percent, format_time};
use crate::slo::{Millis, Slo, TierKind, WindowPair, format_duration, millis};

/// A whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Evaluation times: `from + i × step` for `i < count`.
    pub from: Millis,
    pub step: Millis,
    pub count: usize,
    /// What the significant events are, for people.
    pub ground_truth: String,
    pub working_hours: String,
    pub instances: Vec<InstanceReport>,
}

/// One SLO instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceReport {
    pub slo_id: String,
    pub labels: InstanceLabels,
    /// 1 − objective: a burn rate is an error ratio ÷ this.
    pub error_budget: f64,
    /// Per window, its error ratio at every evaluation time (NaN: no data).
    pub windows: Vec<(Duration, Vec<f64>)>,
    /// The ground truth, per tier.
    pub events: Vec<TierEvents>,
    /// The policies compared, the current one first.
    pub policies: Vec<Policy>,
}

/// The significant events of one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct TierEvents {
    pub tier: TierKind,
    /// The threshold they come from (`None`: an incidents file).
    pub significance: Option<Significance>,
    pub events: Vec<SignificantEvent>,
}

/// A named alert policy and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub tiers: Vec<PolicyTier>,
}

/// One tier of a policy: its window pairs (with their factors), its alerts, its score.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyTier {
    pub tier: TierKind,
    pub pairs: Vec<WindowPair>,
    pub alerts: Vec<AlertSpan>,
    pub score: Option<Score>,
}

/// The most points a line keeps per pixel column pair: spikes survive as each bucket keeps
/// its lowest and highest value.
const BUCKETS: usize = PLOT_WIDTH as usize / 2;
const WIDTH: f64 = 660.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 78.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
const TOP: f64 = 8.0;
const PLOT_HEIGHT: f64 = 150.0;
const LANE: f64 = 11.0;
const LANE_GAP: f64 = 4.0;
const AXIS: f64 = 26.0;
const FLOOR: f64 = 0.01;
const SHORT_COLOUR: &str = "#f76b15";
const LONG_COLOUR: &str = "#1f6feb";
const EVENT_COLOUR: &str = "#8e4ec6";
/// Per policy, in order (the last repeats): its alert lane and threshold line.
const POLICY_COLOURS: [&str; 4] = ["#e5484d", "#12a594", "#3e63dd", "#8b8d98"];

fn policy_colour(index: usize) -> &'static str {
    POLICY_COLOURS[index.min(POLICY_COLOURS.len() - 1)]
}

/// The report of a `replay --score`: its scorecard as the policy "current", and the error
/// ratios `run_measured` recorded per instance.
pub fn from_scorecard(slos: &[Slo], card: &Scorecard, consumption: &[Consumption]) -> Report {
    let range = card.range;
    let instances = consumption
        .iter()
        .filter_map(|measured| {
            let slo = slos.iter().find(|slo| slo.id == measured.slo_id)?;
            Some(instance_from_rows(slo, card, measured))
        })
        .collect();
    Report {
        from: range.from,
        step: millis(range.step).max(1),
        count: range.times().count(),
        ground_truth: report::describe_truth(&card.truth),
        working_hours: card.working_hours.to_string(),
        instances,
    }
}

fn instance_from_rows(slo: &Slo, card: &Scorecard, measured: &Consumption) -> InstanceReport {
    let rows: Vec<&report::Row> = card
        .rows
        .iter()
        .filter(|row| row.slo_id == measured.slo_id && row.labels == measured.labels)
        .collect();
    let events = rows
        .iter()
        .map(|row| TierEvents {
            tier: row.tier,
            significance: row.significance,
            events: row.score.events.iter().map(|event| event.event).collect(),
        })
        .collect();
    let tiers = rows
        .iter()
        .map(|row| PolicyTier {
            tier: row.tier,
            pairs: slo
                .tiers
                .iter()
                .find(|tier| tier.kind == row.tier)
                .map_or_else(Vec::new, |tier| tier.windows.clone()),
            alerts: row.score.alerts.iter().map(|alert| alert.span).collect(),
            score: Some(row.score.clone()),
        })
        .collect();
    InstanceReport {
        slo_id: measured.slo_id.clone(),
        labels: measured.labels.clone(),
        error_budget: slo.objective.error_budget(),
        windows: measured.error_ratios.clone(),
        events,
        policies: vec![Policy {
            name: "current".to_string(),
            tiers,
        }],
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1c2024;background:#fff}
header{background:#1c2024;color:#fff;padding:12px 20px}
header h1{font-size:18px;margin:0 0 4px}
header p{margin:0;color:#d0d4dc;font-size:13px}
main{padding:12px 20px}
h2{font-size:16px;margin:22px 0 6px}
h3{font-size:14px;margin:12px 0 4px}
section.instance{border-top:2px solid #e6e8ee;margin-top:18px}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{padding:3px 8px;border-bottom:1px solid #e6e8ee;text-align:left;white-space:nowrap}
td.name{white-space:normal;overflow-wrap:anywhere;max-width:420px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.missed td.recall,tr.false td.precision{color:#b42318;font-weight:600}
tr.quiet td{color:#8b8d98}
.charts{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0}figcaption{font-size:12px;color:#60646c}
.chart{display:block;max-width:100%;height:auto}
.legend{font-size:12px;color:#60646c;margin:6px 0}
.legend span{display:inline-block;margin-right:14px}
.swatch{display:inline-block;width:18px;height:10px;vertical-align:middle;margin-right:4px}
.muted{color:#60646c;font-size:12px}
";

/// The page.
pub fn render(report: &Report) -> String {
    let mut body = String::new();
    summary(&mut body, report);
    for (index, instance) in report.instances.iter().enumerate() {
        instance_section(&mut body, report, index, instance);
    }
    let to = report.from + (report.count.max(1) as Millis - 1) * report.step;
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>burnwatch score report</title><style>{STYLE}</style></head><body><header><h1>burnwatch score report</h1><p>{} .. {} every {} · {} SLO instances · significant events: {} · working hours {}</p></header><main>{}{body}</main></body></html>"#,
        format_time(report.from),
        format_time(to),
        format_duration(Duration::from_millis(report.step.max(0) as u64)),
        report.instances.len(),
        escape(&report.ground_truth),
        escape(&report.working_hours),
        legend(report)
    )
}

/// `99.9%`, `0.1%`: up to four decimals, no trailing zeros.
fn short_percent(ratio: f64) -> String {
    let text = format!("{:.4}", ratio * 100.0);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

fn instance_name(instance: &InstanceReport) -> String {
    format!("{}{}", instance.slo_id, format_labels(&instance.labels))
}

/// The policy names used anywhere, in order of first use.
fn policy_names(report: &Report) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for policy in report.instances.iter().flat_map(|i| &i.policies) {
        if !names.contains(&policy.name.as_str()) {
            names.push(&policy.name);
        }
    }
    names
}

fn legend(report: &Report) -> String {
    let swatch = |colour: &str, text: &str, dashed: bool| {
        let style = if dashed {
            format!("border-top:2px dashed {colour};height:0")
        } else {
            format!("background:{colour}")
        };
        format!(
            r#"<span><i class="swatch" style="{style}"></i>{}</span>"#,
            escape(text)
        )
    };
    let mut out = String::from(r#"<div class="legend">"#);
    out.push_str(&swatch(SHORT_COLOUR, "short window burn rate", false));
    out.push_str(&swatch(LONG_COLOUR, "long window burn rate", false));
    out.push_str(&swatch(
        EVENT_COLOUR,
        "significant events (ground truth)",
        false,
    ));
    for (index, name) in policy_names(report).into_iter().enumerate() {
        let colour = policy_colour(index);
        out.push_str(&swatch(colour, &format!("{name}: alerts"), false));
        out.push_str(&swatch(colour, &format!("{name}: threshold"), true));
    }
    out.push_str("</div>");
    out
}

/// The table at the top: one row per instance, tier and policy, linking to the instance.
fn summary(body: &mut String, report: &Report) {
    body.push_str(r#"<section id="summary"><h2>Summary</h2><table class="summary"><tr><th>SLO instance</th><th>tier</th><th>policy</th><th>fired</th><th>events detected</th><th>precision</th><th>recall</th><th>detect median</th><th>per week</th></tr>"#);
    for (index, instance) in report.instances.iter().enumerate() {
        for policy in &instance.policies {
            for tier in &policy.tiers {
                let Some(score) = &tier.score else { continue };
                let _ = write!(
                    body,
                    r##"<tr class="{}"><td class="name"><a href="#instance-{index}">{}</a></td><td>{}</td><td>{}</td>{}</tr>"##,
                    row_class(score),
                    escape(&instance_name(instance)),
                    tier.tier.as_str(),
                    escape(&policy.name),
                    summary_cells(score)
                );
            }
        }
    }
    body.push_str("</table></section>");
}

/// `missed` (an event not alerted), `false` (an alert with no event), `quiet` (neither
/// events nor alerts), else `ok`.
fn row_class(score: &Score) -> &'static str {
    if score.fired == 0 && score.events.is_empty() {
        "quiet"
    } else if score.detected_events < score.events.len() {
        "missed"
    } else if score.significant_alerts < score.fired {
        "false"
    } else {
        "ok"
    }
}

fn summary_cells(score: &Score) -> String {
    format!(
        r#"<td class="num fired">{}</td><td class="num events">{}/{}</td><td class="num precision">{}</td><td class="num recall">{}</td><td class="num">{}</td><td class="num">{}</td>"#,
        score.fired,
        score.detected_events,
        score.events.len(),
        report::ratio(score.precision),
        report::ratio(score.recall),
        score
            .detection
            .map_or("-".to_string(), |stats| report::human_duration(
                stats.median
            )),
        per_week(score)
    )
}

fn per_week(score: &Score) -> String {
    score
        .alerts_per_week
        .map_or("-".to_string(), |rate| format!("{rate:.2}"))
}

/// The full score table of one instance: one row per policy and tier.
fn score_table(body: &mut String, instance: &InstanceReport) {
    body.push_str(r#"<table class="scores"><tr><th>policy</th><th>tier</th><th>fired</th><th>events detected</th><th>precision</th><th>recall</th><th>detect med/max</th><th>reset med/max</th><th>spent before detect med/max</th><th>per week</th><th>firing</th><th>off hours</th></tr>"#);
    for policy in &instance.policies {
        for tier in &policy.tiers {
            let Some(score) = &tier.score else { continue };
            let _ = write!(
                body,
                r#"<tr class="{}"><td>{}</td><td>{}</td><td class="num fired">{}</td><td class="num events">{}/{}</td><td class="num precision">{}</td><td class="num recall">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                row_class(score),
                escape(&policy.name),
                tier.tier.as_str(),
                score.fired,
                score.detected_events,
                score.events.len(),
                report::ratio(score.precision),
                report::ratio(score.recall),
                report::pair(score.detection, report::human_duration),
                report::pair(score.reset, report::human_duration),
                report::pair(score.spent_before_detection, format_percent),
                per_week(score),
                report::human_duration(score.firing as f64),
                score
                    .outside_working_hours
                    .map_or("-".to_string(), |count| count.to_string()),
            );
        }
    }
    body.push_str("</table>");
}

fn instance_section(body: &mut String, report: &Report, index: usize, instance: &InstanceReport) {
    let _ = write!(
        body,
        r##"<section class="instance" id="instance-{index}"><h2 class="name">{}</h2><p class="muted">objective {} (error budget {}) · <a href="#summary">back to the summary</a></p>"##,
        escape(&instance_name(instance)),
        short_percent(1.0 - instance.error_budget),
        short_percent(instance.error_budget)
    );
    score_table(body, instance);
    for tier in tiers_of(instance) {
        let events = instance.events.iter().find(|events| events.tier == tier);
        let significance = events
            .and_then(|events| events.significance)
            .map_or("from the incidents file".to_string(), |s| {
                format!("budget consumed above {s}")
            });
        let _ = write!(
            body,
            r#"<h3>{} <span class="muted">significant events: {significance}</span></h3><div class="charts">"#,
            tier.as_str()
        );
        for pair in pairs_of(instance, tier) {
            body.push_str(&chart_figure(report, instance, tier, pair));
        }
        body.push_str("</div>");
    }
    body.push_str("</section>");
}

/// The tiers any policy or the ground truth has, page first.
fn tiers_of(instance: &InstanceReport) -> Vec<TierKind> {
    [TierKind::Page, TierKind::Ticket]
        .into_iter()
        .filter(|kind| {
            instance.events.iter().any(|events| events.tier == *kind)
                || instance
                    .policies
                    .iter()
                    .any(|policy| policy.tiers.iter().any(|tier| tier.tier == *kind))
        })
        .collect()
}

/// The distinct window pairs (long, short) of a tier across the policies, in order of use.
fn pairs_of(instance: &InstanceReport, kind: TierKind) -> Vec<(Duration, Duration)> {
    let mut pairs = Vec::new();
    for tier in instance.policies.iter().flat_map(|policy| &policy.tiers) {
        if tier.tier != kind {
            continue;
        }
        for pair in &tier.pairs {
            if !pairs.contains(&(pair.long, pair.short)) {
                pairs.push((pair.long, pair.short));
            }
        }
    }
    pairs
}

/// One window's burn rates, downsampled for drawing.
fn burn_points(report: &Report, instance: &InstanceReport, window: Duration) -> Vec<(Millis, f64)> {
    let Some((_, ratios)) = instance.windows.iter().find(|(known, _)| *known == window) else {
        return Vec::new();
    };
    let burns: Vec<f64> = ratios
        .iter()
        .map(|ratio| ratio / instance.error_budget)
        .collect();
    chart::downsample(report.from, report.step, &burns, BUCKETS)
}

/// What one chart draws: the tier, the pair's windows, both windows' burn rates and each
/// policy's threshold on the pair (`(policy index, policy, factor)`).
struct PairChart<'a> {
    kind: TierKind,
    long: Duration,
    short: Duration,
    long_points: Vec<(Millis, f64)>,
    short_points: Vec<(Millis, f64)>,
    thresholds: Vec<(usize, &'a Policy, f64)>,
}

impl<'a> PairChart<'a> {
    fn new(
        report: &Report,
        instance: &'a InstanceReport,
        kind: TierKind,
        (long, short): (Duration, Duration),
    ) -> PairChart<'a> {
        let thresholds = instance
            .policies
            .iter()
            .enumerate()
            .filter_map(|(index, policy)| {
                let tier = policy.tiers.iter().find(|tier| tier.tier == kind)?;
                let pair = tier
                    .pairs
                    .iter()
                    .find(|pair| pair.long == long && pair.short == short)?;
                Some((index, policy, pair.factor))
            })
            .collect();
        PairChart {
            kind,
            long,
            short,
            long_points: burn_points(report, instance, long),
            short_points: burn_points(report, instance, short),
            thresholds,
        }
    }

    /// The plot: the whole range across, up to above the highest burn rate and threshold.
    fn frame(&self, report: &Report) -> Frame {
        let highest = self
            .short_points
            .iter()
            .chain(&self.long_points)
            .map(|(_, value)| *value)
            .chain(self.thresholds.iter().map(|(_, _, factor)| *factor))
            .fold(1.0, f64::max);
        Frame {
            left: LEFT,
            top: TOP,
            width: PLOT_WIDTH,
            height: PLOT_HEIGHT,
            from: report.from,
            to: report.from + (report.count.max(1) as Millis - 1) * report.step,
            floor: FLOOR,
            ceiling: chart::ceiling(highest),
        }
    }

    /// `page · 1h / 5m · threshold current 14.4×, recommended 10×`.
    fn caption(&self) -> String {
        let factors: Vec<String> = self
            .thresholds
            .iter()
            .map(|(_, policy, factor)| format!("{} {}×", policy.name, chart::trim(*factor)))
            .collect();
        format!(
            "{} · {} / {} · threshold {}",
            self.kind.as_str(),
            format_duration(self.long),
            format_duration(self.short),
            factors.join(", ")
        )
    }

    /// The thresholds, then the long window over the short one (the smoother line on top).
    fn lines(&self, svg: &mut String, frame: &Frame) {
        for (index, policy, factor) in &self.thresholds {
            let label = format!("{} threshold {}×", policy.name, chart::trim(*factor));
            chart::threshold(svg, frame, *factor, policy_colour(*index), &label);
        }
        for (points, class, colour, window) in [
            (&self.short_points, "burn short", SHORT_COLOUR, self.short),
            (&self.long_points, "burn long", LONG_COLOUR, self.long),
        ] {
            let label = format!("{} burn rate", format_duration(window));
            chart::line(svg, frame, points, class, colour, &label);
        }
    }
}

fn chart_figure(
    report: &Report,
    instance: &InstanceReport,
    kind: TierKind,
    pair: (Duration, Duration),
) -> String {
    let chart = PairChart::new(report, instance, kind, pair);
    let frame = chart.frame(report);
    let caption = chart.caption();
    let lanes = 1 + instance.policies.len();
    let height = TOP + PLOT_HEIGHT + LANE_GAP + lanes as f64 * (LANE + LANE_GAP) + AXIS;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg" data-tier="{}" data-long="{}" data-short="{}"><title>{}</title>"#,
        kind.as_str(),
        format_duration(chart.long),
        format_duration(chart.short),
        escape(&format!("{} {caption}", instance_name(instance)))
    );
    chart::background(&mut svg, &frame);
    let events = instance
        .events
        .iter()
        .find(|events| events.tier == kind)
        .map_or(&[][..], |events| events.events.as_slice());
    for event in events {
        let band = Band {
            span: (event.start, event.end),
            rows: (frame.top, frame.height),
            class: "event",
            fill: EVENT_COLOUR,
            opacity: 0.14,
            title: &event_title(event),
        };
        chart::band(&mut svg, &frame, &band);
    }
    chart::grid(&mut svg, &frame, instance.error_budget);
    chart.lines(&mut svg, &frame);
    lanes_svg(&mut svg, &frame, instance, kind, events);
    chart::time_ticks(&mut svg, &frame, height - 8.0);
    svg.push_str("</svg>");
    format!(
        r#"<figure><figcaption>{}</figcaption>{svg}</figure>"#,
        escape(&caption)
    )
}

fn event_title(event: &SignificantEvent) -> String {
    format!(
        "significant event {} .. {}",
        format_time(event.start),
        format_time(event.end)
    )
}

/// Under the plot: the events' lane, then one lane per policy with its alerts of this tier.
fn lanes_svg(
    svg: &mut String,
    frame: &Frame,
    instance: &InstanceReport,
    kind: TierKind,
    events: &[SignificantEvent],
) {
    let lane_y = |lane: usize| frame.bottom() + LANE_GAP + lane as f64 * (LANE + LANE_GAP);
    lane_label(svg, frame, lane_y(0), "events");
    for event in events {
        let band = Band {
            span: (event.start, event.end),
            rows: (lane_y(0), LANE),
            class: "event lane",
            fill: EVENT_COLOUR,
            opacity: 0.7,
            title: &event_title(event),
        };
        chart::band(svg, frame, &band);
    }
    for (index, policy) in instance.policies.iter().enumerate() {
        let y = lane_y(index + 1);
        lane_label(svg, frame, y, &policy.name);
        let alerts = policy
            .tiers
            .iter()
            .find(|tier| tier.tier == kind)
            .map_or(&[][..], |tier| tier.alerts.as_slice());
        for alert in alerts {
            let title = format!(
                "{} {} firing {} .. {}",
                policy.name,
                kind.as_str(),
                format_time(alert.fired),
                alert
                    .resolved
                    .map_or("the end (still firing)".to_string(), format_time)
            );
            let band = Band {
                span: (alert.fired, alert.end(frame.to)),
                rows: (y, LANE),
                class: &format!("alert policy-{index}"),
                fill: policy_colour(index),
                opacity: 0.8,
                title: &title,
            };
            chart::band(svg, frame, &band);
        }
    }
}

/// A lane's name right of the plot (12 characters at most; the whole name in its title).
fn lane_label(svg: &mut String, frame: &Frame, y: f64, name: &str) {
    let short: String = name.chars().take(12).collect();
    let _ = write!(
        svg,
        r##"<rect x="{}" y="{y:.1}" width="{}" height="{LANE}" fill="#f3f4f6"/><text class="lane" x="{}" y="{:.1}" font-size="9" fill="#555">{}<title>{}</title></text>"##,
        frame.left,
        frame.width,
        frame.right() + 4.0,
        y + LANE - 2.0,
        escape(&short),
        escape(name)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<script>alert('x')</script>";
    const MINUTE: Millis = 60_000;

    fn pair(factor: f64) -> WindowPair {
        WindowPair::new(Duration::from_secs(3_600), Duration::from_secs(300), factor).unwrap()
    }

    fn policy(name: &str, factor: f64, alerts: Vec<AlertSpan>) -> Policy {
        Policy {
            name: name.to_string(),
            tiers: vec![PolicyTier {
                tier: TierKind::Page,
                pairs: vec![pair(factor)],
                alerts,
                score: None,
            }],
        }
    }

    /// `count` minutes from 0, a burn rate of 0.5 everywhere but `spikes`, with two policies.
    fn report(count: usize, spikes: &[(usize, f64)]) -> Report {
        let mut ratios = vec![0.0005; count];
        for &(at, burn) in spikes {
            ratios[at] = burn * 0.001;
        }
        Report {
            from: 0,
            step: MINUTE,
            count,
            ground_truth: "budget consumed above page 2%/1h".to_string(),
            working_hours: "Mon-Fri 09:00-18:00 UTC".to_string(),
            instances: vec![InstanceReport {
                slo_id: format!("shop-{HOSTILE}"),
                labels: vec![("route".to_string(), HOSTILE.to_string())],
                error_budget: 0.001,
                windows: vec![
                    (Duration::from_secs(300), ratios.clone()),
                    (Duration::from_secs(3_600), ratios),
                ],
                events: vec![TierEvents {
                    tier: TierKind::Page,
                    significance: None,
                    events: vec![SignificantEvent {
                        start: 10 * MINUTE,
                        end: 20 * MINUTE,
                        lead_in: 0.02,
                    }],
                }],
                policies: vec![
                    policy(
                        "current",
                        14.4,
                        vec![AlertSpan {
                            fired: 12 * MINUTE,
                            resolved: Some(30 * MINUTE),
                        }],
                    ),
                    policy(&format!("recommended {HOSTILE}"), 10.0, Vec::new()),
                ],
            }],
        }
    }

    #[test]
    fn hostile_names_and_labels_are_text() {
        let page = render(&report(60, &[]));
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        // The anchors are numbered, never made of labels.
        assert!(page.contains(r##"id="instance-0""##));
        assert!(
            !page.contains("href=\"#instance-0\""),
            "no score, no summary row"
        );
    }

    #[test]
    fn each_policy_has_its_threshold_and_lane() {
        let page = render(&report(60, &[]));
        assert_eq!(page.matches(r#"class="threshold""#).count(), 2, "{page}");
        assert!(page.contains(&format!(
            r#"stroke="{}" stroke-dasharray"#,
            POLICY_COLOURS[0]
        )));
        assert!(page.contains(&format!(
            r#"stroke="{}" stroke-dasharray"#,
            POLICY_COLOURS[1]
        )));
        assert_eq!(page.matches(r#"class="alert policy-0""#).count(), 1);
        assert_eq!(page.matches(r#"class="alert policy-1""#).count(), 0);
        // The event across the plot and in its lane.
        assert_eq!(page.matches(r#"class="event"#).count(), 2);
        assert!(page.contains("page · 1h / 5m · threshold current 14.4×, recommended"));
    }

    /// 30 days at 1m: 43,200 steps drawn in at most two points per bucket, a one-minute
    /// spike of 200× kept.
    #[test]
    fn a_month_of_minutes_stays_small_and_keeps_its_spike() {
        let count = 43_200;
        let page = render(&report(count, &[(20_000, 200.0)]));
        assert!(page.len() < 60_000, "{} bytes", page.len());
        let burn = |class: &str| {
            let start = page.find(&format!(r#"<path class="{class}" d=""#)).unwrap();
            let d = &page[start..];
            d[..d.find("\"><title>").unwrap()].to_string()
        };
        let short = burn("burn short");
        assert!(short.matches(" L").count() <= 2 * BUCKETS, "{short}");
        // 200× on a scale from 0.01× to 1000×: y = 8 + 150 × (1 − log10(20000) / 5) ≈ 29.0.
        assert!(short.contains(",29.0"), "{short}");
    }
}
