//! The status page's HTML, written out directly: every text from specs, labels, Prometheus or
//! Slack goes through [`escape`], and only `http(s)` URLs become links.

use std::fmt::Write as _;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Percent-encodes a query-string or path value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A link to `url` if it is an `http(s)` URL (a spec's `javascript:` runbook stays text).
pub fn link(url: &str, text: &str) -> String {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        format!(
            r#"<a href="{}" rel="noopener noreferrer">{}</a>"#,
            escape(url.trim()),
            escape(text)
        )
    } else {
        escape(text)
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1c2024;background:#fff}
header{background:#1c2024;color:#fff;padding:10px 20px;display:flex;gap:16px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 20px}
table{border-collapse:collapse;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #e6e8ee;text-align:left;vertical-align:top}
th a{color:inherit}
.bar{display:inline-block;width:90px;height:8px;background:#e6e8ee;border-radius:4px;vertical-align:middle;margin-right:6px}
.bar span{display:block;height:8px;border-radius:4px;background:#30a46c}
.bar.low span{background:#f5a524}.bar.out span{background:#e5484d}
.state{display:inline-block;padding:1px 6px;border-radius:8px;font-size:12px;background:#eef0f3}
.state.firing{background:#e5484d;color:#fff}.state.pending{background:#f5a524}
.state.resolving{background:#ffd8a8}.state.stale{background:#8b8d98;color:#fff}
.state.insufficient{background:#dfe3e6}
.burning{color:#b42318;font-weight:600}
.muted{color:#60646c;font-size:12px}
form.filters{display:flex;gap:8px;margin-bottom:12px;align-items:center}
.chart{display:block;margin:2px 0 10px;max-width:100%;height:auto}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figcaption{font-size:12px;color:#60646c}
.pages a,.pages strong{margin-right:8px}
code{font-size:12px}
";

/// A whole page.
pub fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · burnwatch</title><style>{STYLE}</style></head><body><header><a href="/">burnwatch</a><span>{}</span></header><main>{body}</main></body></html>"#,
        escape(title),
        escape(title)
    )
}

/// The budget bar and figure.
pub fn budget(remaining: Option<f64>) -> String {
    match remaining {
        None => r#"<span class="muted">no data</span>"#.to_string(),
        Some(remaining) => {
            let class = if remaining <= 0.0 {
                "bar out"
            } else if remaining < 0.25 {
                "bar low"
            } else {
                "bar"
            };
            format!(
                r#"<span class="{class}"><span style="width:{:.0}%"></span></span><span class="budget">{}</span>"#,
                (remaining.clamp(0.0, 1.0) * 100.0),
                escape(&crate::replay::format_percent(remaining))
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped_and_only_http_urls_are_links() {
        assert_eq!(
            escape(r#"<img src=x onerror="alert('x')">&"#),
            "&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(link("javascript:alert(1)", "runbook"), "runbook");
        assert_eq!(
            link("https://runbooks.example.com/a?b=\"c\"", "runbook"),
            r#"<a href="https://runbooks.example.com/a?b=&quot;c&quot;" rel="noopener noreferrer">runbook</a>"#
        );
        assert_eq!(encode("POST /orders&x=1"), "POST%20%2Forders%26x%3D1");
    }
}
