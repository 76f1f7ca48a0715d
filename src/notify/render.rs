//! Pure: an engine [`Event`] → the message a person reads in Slack (mrkdwn), with a plain-text
//! fallback. Everything that came from a spec or from metric labels is escaped (`&`, `<`, `>`),
//! so a hostile label value cannot forge a link or a mention.
//!
//! A fast-burn page reads:
//!
//! ```text
//! :rotating_light: *CRITICAL: Fast error budget burn on order-service*
//! *SLO* requests-availability: 99.9% over 30d · route="POST /orders"
//! *Burning* 57.3x over 1h and 60.1x over 5m (threshold 14.4x)
//! *Errors* 5.73% over 1h: 1234 of 21540 requests failed
//! *Error budget* 84.2% left of 30d; runs out in 12h 34m at this rate
//! *Runbook* <https://runbooks.example.com/order-service>
//! ```

use std::time::Duration;

use crate::alert::Change;
use crate::engine::Event;
use crate::replay::{format_percent, format_rate, format_time};
use crate::slo::{Slo, TierKind, format_duration};

/// A rendered message: Slack mrkdwn and a plain-text fallback (notifications, screen readers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub title: String,
    pub mrkdwn: String,
    pub plain: String,
}

/// Escapes text for Slack mrkdwn: `&`, `<` and `>` are the only control characters.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// `<url>` escaped; a `|` in the URL would start a link text, so it is encoded.
fn link(url: &str) -> String {
    format!("<{}>", escape(url).replace('|', "%7C"))
}

fn headline(slo: &Slo, event: &Event) -> (String, String) {
    let speed = match event.tier {
        TierKind::Page => "Fast",
        TierKind::Ticket => "Slow",
    };
    let what = format!("{speed} error budget burn on {}", slo.service);
    let (emoji, status) = match (event.change, event.tier) {
        (Change::Firing, TierKind::Page) => (":rotating_light:", "CRITICAL"),
        (Change::Firing, TierKind::Ticket) => (":warning:", "WARNING"),
        (Change::Reminder, _) => (":repeat:", "STILL FIRING"),
        (Change::Resolved, _) => (":white_check_mark:", "RESOLVED"),
        (Change::Pending, _) => (":hourglass_flowing_sand:", "PENDING"),
        (Change::InsufficientData, _) => (":grey_question:", "INSUFFICIENT DATA"),
    };
    (emoji.to_string(), format!("{status}: {what}"))
}

/// A duration for people: `12h 34m`, `3d 4h`, `45s`.
pub fn humane(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Renders one event of `slo`.
pub fn render(slo: &Slo, event: &Event) -> Message {
    let (emoji, title) = headline(slo, event);
    let reading = &event.reading;
    let long = format_duration(reading.pair.long);
    let short = format_duration(reading.pair.short);
    let mut lines: Vec<(String, String)> = Vec::new();
    let instance: Vec<String> = event
        .labels
        .iter()
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    let mut slo_line = format!(
        "{}: {}% over {}",
        slo.name,
        trim_number(slo.objective.percent()),
        format_duration(slo.period)
    );
    if !instance.is_empty() {
        slo_line.push_str(&format!(" · {}", instance.join(", ")));
    }
    lines.push(("SLO".to_string(), escape(&slo_line)));
    let burning = format!(
        "{} over {long} and {} over {short} (threshold {})",
        format_rate(reading.burn_long),
        format_rate(reading.burn_short),
        format_rate(reading.pair.factor)
    );
    if event.change == Change::Resolved {
        let since = event
            .firing_since
            .map(|since| {
                let burned = Duration::from_millis((event.at - since).max(0) as u64);
                format!(
                    "Burned for {} (since {}); now ",
                    humane(burned),
                    format_time(since)
                )
            })
            .unwrap_or_default();
        lines.push(("Recovered".to_string(), format!("{since}{burning}")));
    } else {
        lines.push(("Burning".to_string(), burning));
    }
    if let Some(value) = reading.long {
        lines.push((
            "Errors".to_string(),
            format!(
                "{} over {long}: {:.0} of {:.0} events failed",
                format_percent(value.error_ratio),
                value.bad,
                value.total
            ),
        ));
    }
    let mut budget = format!(
        "{} left of {}",
        format_percent(event.budget_remaining),
        format_duration(slo.period)
    );
    if event.change != Change::Resolved
        && let Some(exhaustion) = event.time_to_exhaustion
    {
        budget.push_str(&format!(
            "; runs out in {} at this rate",
            humane(exhaustion)
        ));
    }
    lines.push(("Error budget".to_string(), budget));
    let mut links = Vec::new();
    if let Some(runbook) = &slo.runbook {
        links.push(("Runbook", runbook));
    }
    if let Some(dashboard) = &slo.dashboard {
        links.push(("Dashboard", dashboard));
    }
    let mut mrkdwn = format!("{emoji} *{}*", escape(&title));
    let mut plain = title.clone();
    for (name, value) in &lines {
        mrkdwn.push_str(&format!("\n*{name}* {value}"));
        plain.push_str(&format!("\n{name}: {}", unescape(value)));
    }
    for (name, url) in links {
        mrkdwn.push_str(&format!("\n*{name}* {}", link(url)));
        plain.push_str(&format!("\n{name}: {url}"));
    }
    Message {
        title,
        mrkdwn,
        plain,
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `99.9`, `99`, `99.95`: no trailing zeros.
fn trim_number(value: f64) -> String {
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::burn::{PairReading, Verdict, WindowValue};
    use crate::config::{Document, load_str};
    use crate::slo::WindowPair;
    use expect_test::expect;

    fn slo() -> Slo {
        let spec = "version: burnwatch/v1\nservice: orders & <co>\nslos:\n  - name: availability\n    objective: 99.9\n    runbook: https://runbooks.example.com/a?b=1&c=<2>\n    sli:\n      ratio:\n        errors: requests_total{code=\"500\"}\n        total: requests_total\n";
        match load_str("spec.yaml", spec, std::path::Path::new(".")) {
            Ok(Document::Slos(mut slos)) => slos.remove(0),
            other => panic!("{other:?}"),
        }
    }

    fn event(change: Change) -> Event {
        let pair =
            WindowPair::new(Duration::from_secs(3600), Duration::from_secs(300), 14.4).unwrap();
        Event {
            at: 1_700_002_000_000,
            slo_id: "orders-availability".to_string(),
            labels: vec![(
                "route".to_string(),
                "<!channel> \"POST\" /orders".to_string(),
            )],
            tier: TierKind::Page,
            change,
            reading: PairReading {
                pair,
                long: Some(WindowValue::new(314.0, 21_623.0)),
                short: Some(WindowValue::new(98.0, 1_806.0)),
                burn_long: 14.52,
                burn_short: 54.26,
                verdict: Verdict::Burning,
            },
            budget_remaining: 0.381,
            time_to_exhaustion: Some(Duration::from_secs(67_920)),
            firing_since: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn firing_page_message() {
        let message = render(&slo(), &event(Change::Firing));
        expect![[r#"
            :rotating_light: *CRITICAL: Fast error budget burn on orders &amp; &lt;co&gt;*
            *SLO* availability: 99.9% over 30d · route="&lt;!channel&gt; \"POST\" /orders"
            *Burning* 14.5x over 1h and 54.3x over 5m (threshold 14.4x)
            *Errors* 1.45% over 1h: 314 of 21623 events failed
            *Error budget* 38.1% left of 30d; runs out in 18h 52m at this rate
            *Runbook* <https://runbooks.example.com/a?b=1&amp;c=&lt;2&gt;>"#]]
        .assert_eq(&message.mrkdwn);
        assert!(
            message
                .plain
                .contains("route=\"<!channel> \\\"POST\\\" /orders\""),
            "{}",
            message.plain
        );
    }

    #[test]
    fn resolved_message_says_how_long_it_burned() {
        let message = render(&slo(), &event(Change::Resolved));
        expect![[r#"
            :white_check_mark: *RESOLVED: Fast error budget burn on orders &amp; &lt;co&gt;*
            *SLO* availability: 99.9% over 30d · route="&lt;!channel&gt; \"POST\" /orders"
            *Recovered* Burned for 33m (since 2023-11-14T22:13:20Z); now 14.5x over 1h and 54.3x over 5m (threshold 14.4x)
            *Errors* 1.45% over 1h: 314 of 21623 events failed
            *Error budget* 38.1% left of 30d
            *Runbook* <https://runbooks.example.com/a?b=1&amp;c=&lt;2&gt;>"#]]
        .assert_eq(&message.mrkdwn);
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(
            link("https://x/?a=1&b=<2>|3"),
            "<https://x/?a=1&amp;b=&lt;2&gt;%7C3>"
        );
    }

    #[test]
    fn humane_durations() {
        assert_eq!(humane(Duration::from_secs(45)), "45s");
        assert_eq!(humane(Duration::from_secs(300)), "5m");
        assert_eq!(humane(Duration::from_secs(45_240)), "12h 34m");
        assert_eq!(
            humane(Duration::from_secs(3 * 86_400 + 4 * 3_600 + 60)),
            "3d 4h"
        );
        assert_eq!(trim_number(99.9), "99.9");
        assert_eq!(trim_number(99.0), "99");
    }
}
