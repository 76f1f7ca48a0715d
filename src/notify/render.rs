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

impl Message {
    /// A message of burnwatch's own (not an SLO's): a headline and one paragraph.
    pub fn notice(emoji: &str, title: String, body: &str) -> Message {
        Message {
            mrkdwn: format!("{emoji} *{}*\n{}", escape(&title), escape(body)),
            plain: format!("{title}\n{body}"),
            title,
        }
    }
}

/// Slack's limit on a section block's text; longer (hostile) texts are cut.
const SECTION_LIMIT: usize = 3_000;

fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // Never leave half an escape (`&am`) behind.
    let kept = &text[..end];
    let kept = match kept.rfind('&') {
        Some(at) if !kept[at..].contains(';') => &kept[..at],
        _ => kept,
    };
    format!("{kept}...")
}

impl Message {
    /// Block Kit: the headline and body as one mrkdwn section, links in a context block.
    /// The plain text goes alongside as the notification fallback.
    pub fn blocks(&self) -> serde_json::Value {
        let (body, links): (Vec<&str>, Vec<&str>) = self.mrkdwn.lines().partition(|line| {
            !(line.starts_with("*Runbook* ") || line.starts_with("*Dashboard* "))
        });
        let mut blocks = vec![serde_json::json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": cut(&body.join("\n"), SECTION_LIMIT)},
        })];
        if !links.is_empty() {
            blocks.push(serde_json::json!({
                "type": "context",
                "elements": links
                    .iter()
                    .map(|line| serde_json::json!({"type": "mrkdwn", "text": cut(line, SECTION_LIMIT)}))
                    .collect::<Vec<_>>(),
            }));
        }
        serde_json::Value::Array(blocks)
    }

    /// The plain-text fallback, cut to what Slack shows.
    pub fn fallback(&self) -> String {
        cut(&self.plain, SECTION_LIMIT)
    }

    /// The fallback as Slack's top-level `text` (shown in notifications, parsed as mrkdwn):
    /// escaped, so a label value cannot mention `<!channel>` or forge a link there either.
    pub fn slack_text(&self) -> String {
        cut(&escape(&self.plain), SECTION_LIMIT)
    }
}

/// The labels a notification carries, for routes, silences and Alertmanager: the SLO's and the
/// tier's labels, the instance's labels, then `alertname`, `service`, `slo`, `sloth_id`,
/// `sloth_service`, `sloth_slo`, `tier` and `sloth_severity` (both `page` or `ticket`, the
/// latter as Sloth's alert rules set it, so Alertmanager routes written for Sloth match) and
/// `severity` (the tier's own, else critical for a page and warning for a ticket). Sorted by
/// name.
pub fn alert_labels(
    slo: &Slo,
    tier: TierKind,
    instance: &[(String, String)],
) -> Vec<(String, String)> {
    let mut labels: std::collections::BTreeMap<String, String> = slo.labels.clone();
    if let Some(spec_tier) = slo.tier(tier) {
        labels.extend(spec_tier.labels.clone());
    }
    for (name, value) in instance {
        labels.insert(name.clone(), value.clone());
    }
    labels
        .entry("severity".to_string())
        .or_insert_with(|| match tier {
            TierKind::Page => "critical".to_string(),
            TierKind::Ticket => "warning".to_string(),
        });
    let alertname = slo
        .alert_name
        .clone()
        .unwrap_or_else(|| "ErrorBudgetBurn".to_string());
    for (name, value) in [
        ("alertname", alertname),
        ("service", slo.service.clone()),
        ("slo", slo.name.clone()),
        ("sloth_id", slo.id.clone()),
        ("sloth_service", slo.service.clone()),
        ("sloth_slo", slo.name.clone()),
        ("tier", tier.as_str().to_string()),
        ("sloth_severity", tier.as_str().to_string()),
    ] {
        labels.insert(name.to_string(), value);
    }
    labels.into_iter().collect()
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

/// The longest label name and value shown in a message, in characters; longer ones are cut
/// (a 5,000-character value would push the figures out of Slack's section).
pub const MAX_LABEL_CHARS: usize = 120;

/// An instance's labels for a message: ` · route="POST /orders", code="500"` as mrkdwn
/// (each label an inline code span, so emphasis characters in a value (`*bold*`, `_x_`,
/// `~y~`) stay literal; a backquote is shown as `ˋ`, which cannot end the span) and as plain
/// text; each name and value cut to [`MAX_LABEL_CHARS`].
fn instance_labels(labels: &[(String, String)]) -> (String, String) {
    if labels.is_empty() {
        return (String::new(), String::new());
    }
    let shown: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={:?}",
                shorten(name, MAX_LABEL_CHARS),
                shorten(value, MAX_LABEL_CHARS)
            )
        })
        .collect();
    let mrkdwn: Vec<String> = shown
        .iter()
        .map(|label| format!("`{}`", escape(&label.replace('`', "ˋ"))))
        .collect();
    (
        format!(" · {}", mrkdwn.join(", ")),
        format!(" · {}", shown.join(", ")),
    )
}

/// `text` cut to `most` characters, with `…` where it was cut.
fn shorten(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// `<url>` escaped; a `|` in the URL would start a link text, so it is encoded.
fn link(url: &str) -> String {
    format!("<{}>", escape(url).replace('|', "%7C"))
}

/// `CRITICAL: Fast error budget burn on order-service`
pub fn title(slo: &Slo, tier: TierKind, change: Change) -> String {
    headline_of(slo, tier, change).1
}

fn headline(slo: &Slo, event: &Event) -> (String, String) {
    if event.ended.is_some() {
        let (_, title) = headline_of(slo, event.tier, event.change);
        let what = title
            .split_once(": ")
            .map_or(title.as_str(), |(_, what)| what);
        return (":heavy_minus_sign:".to_string(), format!("ENDED: {what}"));
    }
    headline_of(slo, event.tier, event.change)
}

fn headline_of(slo: &Slo, tier: TierKind, change: Change) -> (String, String) {
    let speed = match tier {
        TierKind::Page => "Fast",
        TierKind::Ticket => "Slow",
    };
    let what = format!("{speed} error budget burn on {}", slo.service);
    let (emoji, status) = match (change, tier) {
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
    let slo_line = format!(
        "{}: {}% over {}",
        slo.name,
        trim_number(slo.objective.percent()),
        format_duration(slo.period)
    );
    let (instance_mrkdwn, instance_plain) = instance_labels(&event.labels);
    lines.push(("SLO".to_string(), escape(&slo_line) + &instance_mrkdwn));
    let slo_plain = slo_line + &instance_plain;
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
        match event.ended {
            Some(ending) => {
                let since = since.trim_end_matches("; now ");
                lines.push(("Ended".to_string(), escape(&ending.describe())));
                if !since.is_empty() {
                    lines.push(("Burned".to_string(), since.to_string()));
                }
            }
            None => lines.push(("Recovered".to_string(), format!("{since}{burning}"))),
        }
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
    if event.budget_remaining.is_finite() {
        lines.push(("Error budget".to_string(), budget));
    }
    if let Some(spent) = budget_spent(slo, event) {
        lines.push(("Budget spent".to_string(), spent));
    }
    let mut links = Vec::new();
    if let Some(runbook) = &slo.runbook {
        links.push(("Runbook", runbook));
    }
    if let Some(dashboard) = &slo.dashboard {
        links.push(("Dashboard", dashboard));
    }
    let mut mrkdwn = format!("{emoji} *{}*", escape(&title));
    let mut plain = title.clone();
    for (index, (name, value)) in lines.iter().enumerate() {
        mrkdwn.push_str(&format!("\n*{name}* {value}"));
        let value = if index == 0 {
            slo_plain.clone()
        } else {
            unescape(value)
        };
        plain.push_str(&format!("\n{name}: {value}"));
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

/// What the incident has cost: since it fired (reminder, resolved), or over the tripped long
/// window when it fires (the burn that tripped it, at that window's average traffic).
fn budget_spent(slo: &Slo, event: &Event) -> Option<String> {
    let period = format_duration(slo.period);
    match (event.change, event.budget_spent) {
        (Change::Reminder | Change::Resolved, Some(spent)) if spent.is_finite() => Some(format!(
            "{} of the {period} budget since it fired",
            format_percent(spent)
        )),
        (Change::Firing, _) if event.reading.burn_long.is_finite() => {
            let window = event.reading.pair.long;
            let share = event.reading.burn_long * window.as_secs_f64() / slo.period.as_secs_f64();
            Some(format!(
                "{} of the {period} budget in the last {}",
                format_percent(share),
                format_duration(window)
            ))
        }
        _ => None,
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
    use crate::notify::fixtures;
    use expect_test::expect;

    fn slo() -> Slo {
        fixtures::slo("orders & <co>", "https://runbooks.example.com/a?b=1&c=<2>")
    }

    fn event(change: Change) -> Event {
        fixtures::event(
            "orders-availability",
            "<!channel> \"POST\" /orders",
            TierKind::Page,
            change,
            1_700_002_000_000,
            1_700_000_000_000,
        )
    }

    #[test]
    fn firing_page_message() {
        let message = render(&slo(), &event(Change::Firing));
        expect![[r#"
            :rotating_light: *CRITICAL: Fast error budget burn on orders &amp; &lt;co&gt;*
            *SLO* availability: 99.9% over 30d · `route="&lt;!channel&gt; \"POST\" /orders"`
            *Burning* 14.5x over 1h and 54.3x over 5m (threshold 14.4x)
            *Errors* 1.45% over 1h: 314 of 21623 events failed
            *Error budget* 38.1% left of 30d; runs out in 18h 52m at this rate
            *Budget spent* 2.02% of the 30d budget in the last 1h
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
            *SLO* availability: 99.9% over 30d · `route="&lt;!channel&gt; \"POST\" /orders"`
            *Recovered* Burned for 33m (since 2023-11-14T22:13:20Z); now 14.5x over 1h and 54.3x over 5m (threshold 14.4x)
            *Errors* 1.45% over 1h: 314 of 21623 events failed
            *Error budget* 38.1% left of 30d
            *Budget spent* 3.10% of the 30d budget since it fired
            *Runbook* <https://runbooks.example.com/a?b=1&amp;c=&lt;2&gt;>"#]]
        .assert_eq(&message.mrkdwn);
    }

    #[test]
    fn block_kit_with_links_in_context_and_a_plain_fallback() {
        let message = render(&slo(), &event(Change::Firing));
        expect![[r#"
            [
              {
                "type": "section",
                "text": {
                  "type": "mrkdwn",
                  "text": ":rotating_light: *CRITICAL: Fast error budget burn on orders &amp; &lt;co&gt;*\n*SLO* availability: 99.9% over 30d · `route=\"&lt;!channel&gt; \\\"POST\\\" /orders\"`\n*Burning* 14.5x over 1h and 54.3x over 5m (threshold 14.4x)\n*Errors* 1.45% over 1h: 314 of 21623 events failed\n*Error budget* 38.1% left of 30d; runs out in 18h 52m at this rate\n*Budget spent* 2.02% of the 30d budget in the last 1h"
                }
              },
              {
                "type": "context",
                "elements": [
                  {
                    "type": "mrkdwn",
                    "text": "*Runbook* <https://runbooks.example.com/a?b=1&amp;c=&lt;2&gt;>"
                  }
                ]
              }
            ]"#]]
        .assert_eq(&serde_json::to_string_pretty(&message.blocks()).unwrap());
        // Slack's own types accept the blocks.
        let _: Vec<slack_morphism::prelude::SlackBlock> =
            serde_json::from_value(message.blocks()).unwrap();
        assert!(
            message
                .fallback()
                .starts_with("CRITICAL: Fast error budget burn")
        );
    }

    /// Regression (hardening): a 5,000-character label value pushed the figures out of the
    /// section, and mrkdwn emphasis in a value (`*bold*`) still formatted. Each label is an
    /// inline code span, cut to [`MAX_LABEL_CHARS`], and the figures stay in the section.
    #[test]
    fn hostile_long_labels_are_cut_and_never_format() {
        let mut event = event(Change::Firing);
        event.labels = vec![
            ("route".to_string(), "<&>".repeat(2_000)),
            (
                "user".to_string(),
                "*bold* _it_ ~gone~ `code` <!channel>".to_string(),
            ),
        ];
        let message = render(&slo(), &event);
        let text = message.blocks()[0]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.len() <= SECTION_LIMIT, "{}", text.len());
        assert!(text.contains("\n*Burning* "), "{text}");
        assert!(text.contains("\n*Budget spent* "), "{text}");
        let route = format!("`route=\"{}…\"`", escape(&"<&>".repeat(40)));
        assert!(text.contains(&route), "{text}");
        assert!(
            text.contains("`user=\"*bold* _it_ ~gone~ ˋcodeˋ &lt;!channel&gt;\"`"),
            "{text}"
        );
        // No half escape anywhere: every & starts an entity.
        for (at, _) in text.match_indices('&') {
            assert!(
                ["&amp;", "&lt;", "&gt;"]
                    .iter()
                    .any(|entity| text[at..].starts_with(entity)),
                "{}",
                &text[at..]
            );
        }
        assert!(
            message
                .fallback()
                .contains("user=\"*bold* _it_ ~gone~ `code` <!channel>\"")
        );
        assert!(message.fallback().len() <= SECTION_LIMIT);

        // A description or name longer than a section is still cut at Slack's limit,
        // without half an escape.
        let mut long = slo();
        long.name = "<&>".repeat(2_000);
        let text = render(&long, &event).blocks()[0]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.len() <= SECTION_LIMIT && text.ends_with("..."));
        let before_dots = &text[..text.len() - 3];
        let last_amp = before_dots.rfind('&').unwrap();
        assert!(before_dots[last_amp..].contains(';'));
    }

    #[test]
    fn alert_labels_carry_identity_tier_and_severity() {
        let labels = alert_labels(
            &slo(),
            TierKind::Page,
            &[("route".to_string(), "POST /orders".to_string())],
        );
        let get = |name: &str| {
            labels
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(get("severity"), Some("critical"));
        assert_eq!(get("tier"), Some("page"));
        assert_eq!(get("sloth_id"), Some("orders & <co>-availability"));
        assert_eq!(get("route"), Some("POST /orders"));
        assert_eq!(get("alertname"), Some("ErrorBudgetBurn"));
        assert_eq!(get("sloth_severity"), Some("page"));
        let ticket = alert_labels(&slo(), TierKind::Ticket, &[]);
        assert!(ticket.contains(&("severity".to_string(), "warning".to_string())));
        assert!(ticket.contains(&("sloth_severity".to_string(), "ticket".to_string())));
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
