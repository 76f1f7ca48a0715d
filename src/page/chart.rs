//! Burn-rate charts as inline SVG, drawn on the server: no script, no external asset.
//!
//! One chart per window pair of an instance: the short and the long window's burn rate over
//! the SLO's last period (log scale, 0.1× to above the highest of the threshold and the
//! values), the pair's threshold (its factor) dashed, and the alert intervals shaded (page
//! red, ticket amber). The right axis reads the same lines as error ratios.

use std::fmt::Write as _;

use super::html::escape;
use crate::history::{AlertSpan, Series};
use crate::slo::{Millis, TierKind};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;
const FLOOR: f64 = 0.1;

/// What one chart shows.
pub struct Chart<'a> {
    /// `(label, series, colour)` per line.
    pub lines: Vec<(String, &'a Series, &'static str)>,
    pub threshold: f64,
    pub spans: &'a [AlertSpan],
    pub from: Millis,
    pub to: Millis,
    /// The error budget (1 − objective), for the right axis's error ratios.
    pub error_budget: f64,
    pub title: String,
}

fn x_of(chart: &Chart, at: Millis) -> f64 {
    let span = (chart.to - chart.from).max(1) as f64;
    LEFT + (at - chart.from).clamp(0, chart.to - chart.from) as f64 / span * (WIDTH - LEFT - RIGHT)
}

fn y_of(top: f64, value: f64) -> f64 {
    let low = FLOOR.log10();
    let high = top.log10();
    let share = ((value.max(FLOOR)).log10() - low) / (high - low);
    TOP + (1.0 - share.clamp(0.0, 1.0)) * (HEIGHT - TOP - BOTTOM)
}

/// The SVG of one chart.
pub fn render(chart: &Chart) -> String {
    let highest = chart
        .lines
        .iter()
        .flat_map(|(_, series, _)| series.iter().map(|(_, value)| *value))
        .fold(chart.threshold, f64::max);
    // The next power of ten above everything shown.
    let top = 10f64
        .powf((highest * 1.5).max(1.0).log10().ceil())
        .max(10.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        escape(&chart.title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="#fbfbfd" stroke="#d0d4dc"/>"##,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
    for span in chart.spans {
        let from = x_of(chart, span.from.max(chart.from));
        let to = x_of(chart, span.to.unwrap_or(chart.to).min(chart.to));
        if to <= LEFT || from >= WIDTH - RIGHT {
            continue;
        }
        let (fill, name) = match span.tier {
            TierKind::Page => ("#e5484d", "page"),
            TierKind::Ticket => ("#f5a524", "ticket"),
        };
        let _ = write!(
            svg,
            r#"<rect class="alert {name}" x="{from:.1}" y="{TOP}" width="{:.1}" height="{}" fill="{fill}" fill-opacity="0.18"><title>{name} firing</title></rect>"#,
            (to - from).max(1.0),
            HEIGHT - TOP - BOTTOM
        );
    }
    // Gridlines every power of ten, labelled as burn rates (left) and error ratios (right).
    let mut level = FLOOR;
    while level <= top * 1.0001 {
        let y = y_of(top, level);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e6e8ee"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}×</text><text x="{}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 3.0,
            trim(level),
            WIDTH - RIGHT + 4.0,
            y + 3.0,
            percent(level * chart.error_budget)
        );
        level *= 10.0;
    }
    let y = y_of(top, chart.threshold);
    let _ = write!(
        svg,
        r##"<line class="threshold" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#b42318" stroke-dasharray="5 4"><title>threshold {}×</title></line>"##,
        WIDTH - RIGHT,
        trim(chart.threshold)
    );
    for (label, series, colour) in &chart.lines {
        if series.is_empty() {
            continue;
        }
        let mut path = String::new();
        for (index, (at, value)) in series.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if index == 0 { "M" } else { " L" },
                x_of(chart, *at),
                y_of(top, *value)
            );
        }
        let _ = write!(
            svg,
            r#"<path class="burn" d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"><title>{}</title></path>"#,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{}" font-size="10" fill="#555">{}</text><text x="{}" y="{}" font-size="10" text-anchor="end" fill="#555">{}</text></svg>"##,
        HEIGHT - 6.0,
        crate::replay::format_time(chart.from),
        WIDTH - RIGHT,
        HEIGHT - 6.0,
        crate::replay::format_time(chart.to)
    );
    svg
}

fn trim(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").unwrap_or(&text).to_string()
}

fn percent(ratio: f64) -> String {
    crate::replay::format_percent(ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_its_lines_threshold_and_alert_spans_and_escapes_its_labels() {
        let series: Series = vec![(0, 0.5), (60_000, 20.0), (120_000, 1.0)];
        let spans = [AlertSpan {
            tier: TierKind::Page,
            from: 60_000,
            to: Some(90_000),
        }];
        let chart = Chart {
            lines: vec![("5m <script>".to_string(), &series, "#1f6feb")],
            threshold: 14.4,
            spans: &spans,
            from: 0,
            to: 120_000,
            error_budget: 0.001,
            title: "route=\"<b>\"".to_string(),
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains(r#"<path class="burn" d="M48.0,"#), "{svg}");
        assert_eq!(svg.matches(" L").count(), 2, "{svg}");
        assert!(svg.contains(r#"class="threshold""#));
        assert!(svg.contains(r#"class="alert page""#));
        assert!(!svg.contains("<script>") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains("5m &lt;script&gt;"));
    }
}
