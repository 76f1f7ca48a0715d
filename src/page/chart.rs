//! Burn-rate charts as inline SVG, drawn on the server: no script, no external asset.
//!
//! One chart per window pair of an instance: the short and the long window's burn rate over
//! the SLO's last period (log scale, 0.1× to above the highest of the threshold and the
//! values), the pair's threshold (its factor) dashed, and the alert intervals shaded (page
//! red, ticket amber). The right axis reads the same lines as error ratios.
//!
//! The pieces ([`Frame`] and the functions drawing into it) are shared with the scored
//! replay's HTML report (`score::html`), which draws more lines, thresholds and bands.

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

/// Where a chart draws: the plot area inside the SVG (`left`, `top`, `width`, `height`), the
/// time range across it and a log scale of burn rates from `floor` up to `ceiling`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    pub from: Millis,
    pub to: Millis,
    pub floor: f64,
    pub ceiling: f64,
}

impl Frame {
    /// The x of a time, clamped to the plot.
    pub fn x(&self, at: Millis) -> f64 {
        let span = (self.to - self.from).max(1) as f64;
        self.left
            + (at - self.from).clamp(0, (self.to - self.from).max(0)) as f64 / span * self.width
    }

    /// The y of a burn rate on the log scale, clamped to the plot (NaN and values at or below
    /// the floor at its bottom).
    pub fn y(&self, value: f64) -> f64 {
        let low = self.floor.log10();
        let high = self.ceiling.log10();
        let share = (value.max(self.floor).log10() - low) / (high - low);
        let share = if share.is_nan() { 0.0 } else { share };
        self.top + (1.0 - share.clamp(0.0, 1.0)) * self.height
    }

    pub fn right(&self) -> f64 {
        self.left + self.width
    }

    pub fn bottom(&self) -> f64 {
        self.top + self.height
    }
}

/// The next power of ten above 1.5 × the highest value shown, at least 10.
pub fn ceiling(highest: f64) -> f64 {
    let highest = if highest.is_nan() { 0.0 } else { highest };
    10f64
        .powf((highest * 1.5).max(1.0).log10().ceil())
        .max(10.0)
}

/// The plot area's background.
pub fn background(svg: &mut String, frame: &Frame) {
    let _ = write!(
        svg,
        r##"<rect class="plot" x="{}" y="{}" width="{}" height="{}" fill="#fbfbfd" stroke="#d0d4dc"/>"##,
        frame.left, frame.top, frame.width, frame.height
    );
}

/// Gridlines every power of ten, labelled as burn rates (left) and as error ratios (right:
/// the burn rate × the error budget).
pub fn grid(svg: &mut String, frame: &Frame, error_budget: f64) {
    let mut level = frame.floor;
    while level <= frame.ceiling * 1.0001 {
        let y = frame.y(level);
        let _ = write!(
            svg,
            r##"<line x1="{}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e6e8ee"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}×</text><text x="{}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
            frame.left,
            frame.right(),
            frame.left - 4.0,
            y + 3.0,
            trim(level),
            frame.right() + 4.0,
            y + 3.0,
            percent(level * error_budget)
        );
        level *= 10.0;
    }
}

/// A dashed horizontal line at `value` (a burn-rate threshold), its title `label`.
pub fn threshold(svg: &mut String, frame: &Frame, value: f64, colour: &str, label: &str) {
    let y = frame.y(value);
    let _ = write!(
        svg,
        r#"<line class="threshold" x1="{}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}" stroke-dasharray="5 4"><title>{}</title></line>"#,
        frame.left,
        frame.right(),
        escape(label)
    );
}

/// A line through `points` (time, burn rate); a NaN (no data) breaks it. Nothing for fewer
/// than one drawable point.
pub fn line(
    svg: &mut String,
    frame: &Frame,
    points: &[(Millis, f64)],
    class: &str,
    colour: &str,
    label: &str,
) {
    let mut path = String::new();
    let mut drawing = false;
    for (at, value) in points {
        if value.is_nan() {
            drawing = false;
            continue;
        }
        let _ = write!(
            path,
            "{}{:.1},{:.1}",
            match (drawing, path.is_empty()) {
                (true, _) => " L",
                (false, true) => "M",
                (false, false) => " M",
            },
            frame.x(*at),
            frame.y(*value)
        );
        drawing = true;
    }
    if path.is_empty() {
        return;
    }
    let _ = write!(
        svg,
        r#"<path class="{class}" d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"><title>{}</title></path>"#,
        escape(label)
    );
}

/// A shaded interval: an alert firing, a significant event.
pub struct Band<'a> {
    /// From, to (clamped to the frame's range).
    pub span: (Millis, Millis),
    /// Its top and height.
    pub rows: (f64, f64),
    pub class: &'a str,
    pub fill: &'a str,
    pub opacity: f64,
    pub title: &'a str,
}

/// A band (nothing when outside the frame's range), at least a pixel wide so an instant
/// shows.
pub fn band(svg: &mut String, frame: &Frame, band: &Band) {
    let Band {
        span: (from, to),
        rows: (y, height),
        class,
        fill,
        opacity,
        title,
    } = *band;
    if to < frame.from || from > frame.to {
        return;
    }
    let x = frame.x(from.max(frame.from));
    let end = frame.x(to.min(frame.to));
    let _ = write!(
        svg,
        r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{height:.1}" fill="{fill}" fill-opacity="{opacity}"><title>{}</title></rect>"#,
        (end - x).max(1.0),
        escape(title)
    );
}

/// The first and last time under the plot, at `y`.
pub fn time_axis(svg: &mut String, frame: &Frame, y: f64) {
    let _ = write!(
        svg,
        r##"<text x="{}" y="{y}" font-size="10" fill="#555">{}</text><text x="{}" y="{y}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
        frame.left,
        crate::replay::format_time(frame.from),
        frame.right(),
        crate::replay::format_time(frame.to)
    );
}

/// Vertical gridlines at round times (every 1m up to 7d, at most 8 across), labelled at `y`
/// under the plot: `HH:MM`, with the date when the range is longer than a day, the date alone
/// for steps of whole days (UTC).
pub fn time_ticks(svg: &mut String, frame: &Frame, y: f64) {
    const MINUTE: Millis = 60_000;
    let span = (frame.to - frame.from).max(1);
    let every = [
        1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1_440, 2_880, 10_080,
    ]
    .into_iter()
    .map(|minutes| minutes * MINUTE)
    .find(|every| span / every <= 8)
    .unwrap_or(10_080 * MINUTE);
    let mut at = frame.from.div_euclid(every) * every;
    if at < frame.from {
        at += every;
    }
    while at <= frame.to {
        let x = frame.x(at);
        let time = crate::replay::format_time(at);
        let label = match (every >= 1_440 * MINUTE, span > 1_440 * MINUTE) {
            (true, _) => time.get(5..10),
            (false, true) => time.get(5..16).map(|text| text.trim_start()),
            (false, false) => time.get(11..16),
        }
        .unwrap_or(&time)
        .replace('T', " ");
        let _ = write!(
            svg,
            r##"<line class="tick" x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#eef0f3"/><text x="{x:.1}" y="{y}" font-size="10" text-anchor="middle" fill="#555">{label}</text>"##,
            frame.top,
            frame.bottom()
        );
        at += every;
    }
}

/// At most `buckets` points of an evenly stepped series (`values[i]` at `from + i × step`):
/// each bucket of consecutive steps keeps its lowest and highest value, in time order, so a
/// spike of one step survives. NaN is kept only for a bucket with no value (a gap).
pub fn downsample(from: Millis, step: Millis, values: &[f64], buckets: usize) -> Series {
    let at = |index: usize| from + index as Millis * step;
    if values.len() <= buckets.max(1) * 2 {
        return values
            .iter()
            .enumerate()
            .map(|(i, v)| (at(i), *v))
            .collect();
    }
    let size = values.len().div_ceil(buckets.max(1));
    let mut points = Vec::with_capacity(buckets * 2);
    for (number, chunk) in values.chunks(size).enumerate() {
        let start = number * size;
        let known = chunk.iter().enumerate().filter(|(_, v)| !v.is_nan());
        let low = known.clone().min_by(|a, b| a.1.total_cmp(b.1));
        let high = known.max_by(|a, b| a.1.total_cmp(b.1));
        match (low, high) {
            (Some(low), Some(high)) if low.0 == high.0 || low.1 == high.1 => {
                points.push((at(start + low.0), *low.1))
            }
            (Some(low), Some(high)) => {
                let (first, second) = if low.0 < high.0 {
                    (low, high)
                } else {
                    (high, low)
                };
                points.push((at(start + first.0), *first.1));
                points.push((at(start + second.0), *second.1));
            }
            _ => points.push((at(start), f64::NAN)),
        }
    }
    points
}

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

/// The SVG of one chart.
pub fn render(chart: &Chart) -> String {
    let highest = chart
        .lines
        .iter()
        .flat_map(|(_, series, _)| series.iter().map(|(_, value)| *value))
        .fold(chart.threshold, f64::max);
    let frame = Frame {
        left: LEFT,
        top: TOP,
        width: WIDTH - LEFT - RIGHT,
        height: HEIGHT - TOP - BOTTOM,
        from: chart.from,
        to: chart.to,
        floor: FLOOR,
        ceiling: ceiling(highest),
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        escape(&chart.title)
    );
    background(&mut svg, &frame);
    for span in chart.spans {
        let (fill, name) = match span.tier {
            TierKind::Page => ("#e5484d", "page"),
            TierKind::Ticket => ("#f5a524", "ticket"),
        };
        band(
            &mut svg,
            &frame,
            &Band {
                span: (span.from, span.to.unwrap_or(chart.to)),
                rows: (frame.top, frame.height),
                class: &format!("alert {name}"),
                fill,
                opacity: 0.18,
                title: &format!("{name} firing"),
            },
        );
    }
    grid(&mut svg, &frame, chart.error_budget);
    threshold(
        &mut svg,
        &frame,
        chart.threshold,
        "#b42318",
        &format!("threshold {}×", trim(chart.threshold)),
    );
    for (label, series, colour) in &chart.lines {
        line(&mut svg, &frame, series, "burn", colour, label);
    }
    time_axis(&mut svg, &frame, HEIGHT - 6.0);
    svg.push_str("</svg>");
    svg
}

/// A scale figure without trailing zeros: `14.4`, `0.01`, `1000`.
pub(crate) fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A gridline's error ratio: `0.01%`, `1%`, `10%`.
fn percent(ratio: f64) -> String {
    let text = crate::replay::format_percent(ratio);
    match text.strip_suffix('%') {
        Some(number) if number.contains('.') => {
            format!("{}%", number.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => text,
    }
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

    #[test]
    fn downsampling_keeps_a_spike_and_the_gaps() {
        let mut values = vec![1.0; 10_000];
        values[4_321] = 500.0;
        values[7_000..7_100].fill(f64::NAN);
        let points = downsample(0, 60_000, &values, 100);
        assert!(points.len() <= 200, "{}", points.len());
        assert!(
            points.contains(&(4_321 * 60_000, 500.0)),
            "the spike is kept"
        );
        assert!(
            points.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "in time order"
        );
        // Bucket 70 (steps 7000..7100) is all NaN: one gap point.
        assert!(
            points
                .iter()
                .any(|(at, value)| *at == 7_000 * 60_000 && value.is_nan())
        );
        // Short series are kept whole.
        assert_eq!(downsample(0, 1, &[1.0, 2.0], 100), vec![(0, 1.0), (1, 2.0)]);
    }

    #[test]
    fn thresholds_sit_on_the_log_scale() {
        let frame = Frame {
            left: 10.0,
            top: 0.0,
            width: 100.0,
            height: 300.0,
            from: 0,
            to: 1_000,
            floor: 0.1,
            ceiling: 100.0,
        };
        // 0.1× at the bottom, 1× a third up, 10× two thirds up, 100× at the top.
        assert_eq!(frame.y(0.1), 300.0);
        assert!((frame.y(1.0) - 200.0).abs() < 1e-9);
        assert!((frame.y(10.0) - 100.0).abs() < 1e-9);
        assert_eq!(frame.y(f64::NAN), 300.0);
        assert_eq!(frame.y(1e9), 0.0);
        // 14.4× is log10(144) / 3 of the way up.
        let mut svg = String::new();
        threshold(&mut svg, &frame, 14.4, "#b42318", "page <1h>");
        let expected = 300.0 - 144f64.log10() / 3.0 * 300.0;
        assert!(
            svg.contains(&format!(r#"y1="{expected:.1}" y2="{expected:.1}""#)),
            "{svg}"
        );
        assert!(svg.contains("page &lt;1h&gt;"), "{svg}");
        assert_eq!(frame.x(500), 60.0);
        assert_eq!(frame.x(-5), 10.0);
        assert_eq!(trim(0.01), "0.01");
        assert_eq!(trim(14.4), "14.4");
        assert_eq!(trim(1000.0), "1000");
        assert_eq!(percent(0.0001), "0.01%");
        assert_eq!(percent(0.1), "10%");
    }

    #[test]
    fn time_ticks_fall_on_round_times() {
        let hour = 3_600_000;
        let from = 1_699_920_000_000; // 2023-11-14T00:00:00Z
        let frame = Frame {
            left: 0.0,
            top: 0.0,
            width: 240.0,
            height: 10.0,
            from: from + 10 * 60_000,
            to: from + 4 * hour,
            floor: 0.1,
            ceiling: 10.0,
        };
        let mut svg = String::new();
        time_ticks(&mut svg, &frame, 20.0);
        let labels: Vec<&str> = svg
            .split("fill=\"#555\">")
            .skip(1)
            .filter_map(|rest| rest.split('<').next())
            .collect();
        assert_eq!(
            labels,
            [
                "00:30", "01:00", "01:30", "02:00", "02:30", "03:00", "03:30", "04:00"
            ]
        );
        let days = Frame {
            to: from + 30 * 24 * hour,
            ..frame
        };
        let mut svg = String::new();
        time_ticks(&mut svg, &days, 20.0);
        // Weekly ticks (from the epoch, a Thursday).
        assert!(
            svg.contains(">11-16<") && svg.contains(">12-07<") && !svg.contains(":00<"),
            "{svg}"
        );
    }

    #[test]
    fn a_line_breaks_at_no_data() {
        let frame = Frame {
            left: 0.0,
            top: 0.0,
            width: 100.0,
            height: 100.0,
            from: 0,
            to: 4,
            floor: 0.1,
            ceiling: 10.0,
        };
        let mut svg = String::new();
        line(
            &mut svg,
            &frame,
            &[(0, 1.0), (1, 1.0), (2, f64::NAN), (3, 1.0), (4, 1.0)],
            "burn",
            "#000",
            "x",
        );
        assert!(
            svg.contains(r#"d="M0.0,50.0 L25.0,50.0 M75.0,50.0 L100.0,50.0""#),
            "{svg}"
        );
    }
}
