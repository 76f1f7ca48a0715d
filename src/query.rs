//! PromQL shapes burnwatch evaluates itself.
//!
//! SLO specs carry PromQL templates with `{{.window}}` where the range goes (Sloth's notation).
//! Almost every spec uses one shape: `sum [by (labels)] (rate|increase(selector[{{.window}}]))`.
//! That shape is recognised here into a [`CounterQuery`], which the recorded source and the
//! window math evaluate from raw counter samples exactly as Prometheus would. Other shapes stay
//! valid PromQL for the Prometheus source; [`recognise_error_ratio`] says why they are not local.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier};
use regex::Regex;
use std::sync::LazyLock;
use std::time::Duration;

/// The range substituted for `{{.window}}` before parsing: an odd value no user writes, so a
/// matrix selector with this range is known to be the SLO window.
const WINDOW_SENTINEL_SECS: u64 = 7_777_777;

static WINDOW_PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*\.window\s*\}\}").expect("static regex"));

/// `rate` or `increase`: for an error ratio the two are the same, both are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFunction {
    Rate,
    Increase,
}

/// `sum by (by...) (function(metric{matchers}[{{.window}}]))`.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterQuery {
    pub function: RangeFunction,
    pub metric: String,
    /// Label matchers other than the metric name.
    pub matchers: Vec<Matcher>,
    /// Grouping labels; empty for a plain `sum`.
    pub by: Vec<String>,
    /// The template as written, with `{{.window}}`.
    template: String,
}

impl CounterQuery {
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The series selector, `metric{matchers}`, as PromQL reads it.
    pub fn selector(&self) -> String {
        let matchers: Vec<String> = self.matchers.iter().map(ToString::to_string).collect();
        format!("{}{{{}}}", self.metric, matchers.join(","))
    }

    /// Whether a series with these labels (`__name__` included) is selected.
    pub fn selects(&self, labels: &[(String, String)]) -> bool {
        let value_of = |name: &str| {
            labels
                .iter()
                .find(|(label, _)| label == name)
                .map(|(_, value)| value.as_str())
                .unwrap_or("")
        };
        value_of("__name__") == self.metric && self.matchers_match(value_of)
    }

    /// Whether the label matchers (the metric name aside) accept a series whose label values
    /// `value_of` gives ("" for a label it does not have).
    pub fn matchers_match<'v>(&self, value_of: impl Fn(&str) -> &'v str) -> bool {
        self.matchers
            .iter()
            .all(|matcher| matcher.is_match(value_of(&matcher.name)))
    }

    /// Parses a counter-query template, or says why it does not have the recognised shape.
    pub fn parse(template: &str) -> Result<CounterQuery, String> {
        let expr = parse_template(template)?;
        recognise_counter(&expr, template)
    }
}

/// An SLI burnwatch can evaluate from counter samples.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalSli {
    /// error ratio = bad / total
    BadOverTotal {
        bad: CounterQuery,
        total: CounterQuery,
    },
    /// error ratio = 1 - good / total
    OneMinusGoodOverTotal {
        good: CounterQuery,
        total: CounterQuery,
    },
}

impl LocalSli {
    /// (the query for the numerator, the query for all events)
    pub fn queries(&self) -> (&CounterQuery, &CounterQuery) {
        match self {
            LocalSli::BadOverTotal { bad, total } => (bad, total),
            LocalSli::OneMinusGoodOverTotal { good, total } => (good, total),
        }
    }
}

/// Substitutes the window placeholder and parses; errors say what PromQL did not accept.
pub fn parse_template(template: &str) -> Result<Expr, String> {
    let text =
        WINDOW_PLACEHOLDER.replace_all(template, format!("{WINDOW_SENTINEL_SECS}s").as_str());
    parser::parse(&text).map_err(|error| format!("invalid PromQL: {error}"))
}

/// Substitutes a real window into a template (`5m`, `1h`, ...), as Sloth's rules do.
pub fn with_window(template: &str, window: Duration) -> String {
    WINDOW_PLACEHOLDER
        .replace_all(template, crate::slo::format_duration(window).as_str())
        .into_owned()
}

/// Whether the template mentions `{{.window}}` at all.
pub fn has_window_placeholder(template: &str) -> bool {
    WINDOW_PLACEHOLDER.is_match(template)
}

fn strip_parens(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(paren) = expr {
        expr = &paren.expr;
    }
    expr
}

fn recognise_counter(expr: &Expr, template: &str) -> Result<CounterQuery, String> {
    let Expr::Aggregate(aggregate) = strip_parens(expr) else {
        return Err("expected `sum [by (...)] (rate(...[{{.window}}]))`".to_string());
    };
    if aggregate.op.to_string() != "sum" {
        return Err(format!("aggregation `{}` is not `sum`", aggregate.op));
    }
    let by = match &aggregate.modifier {
        None => Vec::new(),
        Some(LabelModifier::Include(labels)) => {
            let mut by = labels.labels.clone();
            by.sort();
            by.dedup();
            by
        }
        Some(LabelModifier::Exclude(_)) => {
            return Err("`sum without (...)` is not supported; use `sum by (...)`".to_string());
        }
    };
    let Expr::Call(call) = strip_parens(&aggregate.expr) else {
        return Err("expected `rate(...)` or `increase(...)` inside `sum`".to_string());
    };
    let function = match call.func.name {
        "rate" => RangeFunction::Rate,
        "increase" => RangeFunction::Increase,
        other => return Err(format!("function `{other}` is not `rate` or `increase`")),
    };
    let Some(Expr::MatrixSelector(matrix)) = call.args.args.first().map(|arg| strip_parens(arg))
    else {
        return Err("expected a range selector inside `rate(...)`".to_string());
    };
    if matrix.range != Duration::from_secs(WINDOW_SENTINEL_SECS) {
        return Err("the range selector must use `[{{.window}}]`".to_string());
    }
    let selector = &matrix.vs;
    if selector.offset.is_some() || selector.at.is_some() {
        return Err("`offset` and `@` modifiers are not supported".to_string());
    }
    if !selector.matchers.or_matchers.is_empty() {
        return Err("`or` label matchers are not supported".to_string());
    }
    let mut metric = selector.name.clone();
    let mut matchers = Vec::new();
    for matcher in &selector.matchers.matchers {
        if matcher.name == "__name__" {
            match (&matcher.op, &metric) {
                (MatchOp::Equal, None) => metric = Some(matcher.value.clone()),
                (MatchOp::Equal, Some(name)) if *name == matcher.value => {}
                _ => return Err("only an exact metric name is supported".to_string()),
            }
        } else {
            matchers.push(matcher.clone());
        }
    }
    let metric = metric.ok_or_else(|| "the selector has no metric name".to_string())?;
    Ok(CounterQuery {
        function,
        metric,
        matchers,
        by,
        template: template.trim().to_string(),
    })
}

/// Recognises `A / B` and `1 - (A / B)` over counter queries in a raw error-ratio template.
pub fn recognise_error_ratio(template: &str) -> Result<LocalSli, String> {
    let expr = parse_template(template)?;
    let expr = strip_parens(&expr);
    let Expr::Binary(binary) = expr else {
        return Err("expected `A / B` or `1 - (A / B)` over `sum(rate(...))` queries".to_string());
    };
    let op = binary.op.to_string();
    if op == "-" {
        let one = matches!(strip_parens(&binary.lhs), Expr::NumberLiteral(n) if n.val == 1.0);
        if !one {
            return Err("expected `1 - (A / B)`".to_string());
        }
        let (good, total) = recognise_division(&binary.rhs)?;
        return Ok(LocalSli::OneMinusGoodOverTotal { good, total });
    }
    let (bad, total) = recognise_division(expr)?;
    Ok(LocalSli::BadOverTotal { bad, total })
}

fn recognise_division(expr: &Expr) -> Result<(CounterQuery, CounterQuery), String> {
    let Expr::Binary(binary) = strip_parens(expr) else {
        return Err("expected a division `A / B`".to_string());
    };
    if binary.op.to_string() != "/" {
        return Err(format!("operator `{}` is not `/`", binary.op));
    }
    if binary.modifier.is_some() {
        return Err(
            "vector matching modifiers (`on`, `ignoring`, `group_left`) are not supported"
                .to_string(),
        );
    }
    let numerator = recognise_counter(&binary.lhs, &binary.lhs.to_string())
        .map_err(|error| format!("numerator: {error}"))?;
    let denominator = recognise_counter(&binary.rhs, &binary.rhs.to_string())
        .map_err(|error| format!("denominator: {error}"))?;
    Ok((numerator, denominator))
}

/// A regex (RE2 and Rust alike, anchored by PromQL) matching every usual spelling of the
/// histogram bucket bound `bound` as an `le` label value: `1`, `1.0`, `1.00`, `1e0`, `1e+00`
/// for 1; `0.3`, `0.30`, `3e-01` for 0.3; `+Inf` and `Inf`. Prometheus 3 stores a scraped
/// classic histogram's `le` in OpenMetrics form (`1.0`), 2.x as the target wrote it (`1`
/// from Go clients): one matcher finds the bucket on both, and across an upgrade.
pub fn bucket_bound_pattern(bound: f64) -> String {
    if bound == f64::INFINITY {
        return r"\+?(?i:inf(?:inity)?)".to_string();
    }
    // Shortest digits and decimal exponent: bound = d₀.d₁d₂… × 10^exponent.
    let scientific = format!("{:e}", bound.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if bound < 0.0 { "-" } else { "" };
    let fraction = |rest: &str| {
        if rest.is_empty() {
            r"(?:\.0*)?".to_string()
        } else {
            format!(r"\.{rest}0*")
        }
    };
    let positional = if exponent >= 0 {
        let whole_len = exponent as usize + 1;
        let mut whole = digits.chars().take(whole_len).collect::<String>();
        while whole.len() < whole_len {
            whole.push('0');
        }
        let rest: String = digits.chars().skip(whole_len).collect();
        format!("{sign}0*{whole}{}", fraction(&rest))
    } else {
        let zeros = "0".repeat((-exponent - 1) as usize);
        format!(r"{sign}0*\.{zeros}{digits}0*")
    };
    let exponent_part = match exponent {
        0 => "[eE][+-]?0+".to_string(),
        e if e > 0 => format!(r"[eE]\+?0*{e}"),
        e => format!("[eE]-0*{}", -e),
    };
    let scientific = format!(
        "{sign}{}{}{exponent_part}",
        &digits[..1],
        fraction(&digits[1..])
    );
    format!("{positional}|{scientific}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_sloth_event_queries() {
        let query = CounterQuery::parse(
            r#"sum by (route) (rate(http_requests_total{job="orders",code=~"(5..|429)"}[{{.window}}]))"#,
        )
        .unwrap();
        assert_eq!(query.metric, "http_requests_total");
        assert_eq!(query.by, vec!["route".to_string()]);
        assert_eq!(query.function, RangeFunction::Rate);
        let labels = |code: &str| {
            vec![
                ("__name__".to_string(), "http_requests_total".to_string()),
                ("code".to_string(), code.to_string()),
                ("job".to_string(), "orders".to_string()),
            ]
        };
        assert!(query.selects(&labels("503")));
        assert!(query.selects(&labels("429")));
        assert!(!query.selects(&labels("200")));
        assert!(
            !query.selects(&labels("5000")),
            "PromQL regexes are anchored"
        );
    }

    #[test]
    fn says_why_a_shape_is_not_local() {
        let cases = [
            (
                "sum(rate(x[5m]))",
                "the range selector must use `[{{.window}}]`",
            ),
            (
                "avg(rate(x[{{.window}}]))",
                "aggregation `avg` is not `sum`",
            ),
            (
                "sum(irate(x[{{.window}}]))",
                "function `irate` is not `rate` or `increase`",
            ),
            (
                "sum without (pod) (rate(x[{{.window}}]))",
                "`sum without (...)` is not supported; use `sum by (...)`",
            ),
            (
                "sum(rate(x[{{.window}}] offset 1h))",
                "`offset` and `@` modifiers are not supported",
            ),
        ];
        for (template, expected) in cases {
            assert_eq!(
                CounterQuery::parse(template).unwrap_err(),
                expected,
                "{template}"
            );
        }
        assert!(
            CounterQuery::parse("sum(rate(x[{{.window}}]")
                .unwrap_err()
                .starts_with("invalid PromQL")
        );
    }

    #[test]
    fn recognises_raw_ratio_shapes() {
        let ratio = recognise_error_ratio(
            "sum(rate(errors_total[{{.window}}])) / sum(rate(requests_total[{{.window}}]))",
        )
        .unwrap();
        assert!(
            matches!(ratio, LocalSli::BadOverTotal { ref bad, .. } if bad.metric == "errors_total")
        );
        let latency = recognise_error_ratio(
            r#"1 - (sum(rate(d_bucket{le="0.3"}[{{ .window }}])) / sum(rate(d_count[{{ .window }}])))"#,
        )
        .unwrap();
        assert!(
            matches!(latency, LocalSli::OneMinusGoodOverTotal { ref good, .. } if good.metric == "d_bucket")
        );
        assert!(recognise_error_ratio("max_over_time(x[{{.window}}])").is_err());
    }

    #[test]
    fn substitutes_windows() {
        assert_eq!(
            with_window(
                "sum(rate(x[{{.window}}])) / sum(rate(y[{{ .window }}]))",
                Duration::from_secs(3600)
            ),
            "sum(rate(x[1h])) / sum(rate(y[1h]))"
        );
    }

    #[test]
    fn bucket_bounds_match_every_usual_spelling_and_nothing_else() {
        let matches = |bound: f64, text: &str| {
            let pattern = format!("^(?:{})$", bucket_bound_pattern(bound));
            regex::Regex::new(&pattern).expect(&pattern).is_match(text)
        };
        for (bound, spellings) in [
            (1.0, &["1", "1.0", "1.00", "1e0", "1e+00", "1E0", "01"][..]),
            (0.3, &["0.3", "0.30", ".3", "3e-1", "3e-01", "3.0e-01"]),
            (2.5, &["2.5", "2.50", "2.5e0", "25e-1"][..1]),
            (1e6, &["1e+06", "1000000", "1000000.0", "1e6", "1.0e+06"]),
            (0.005, &["0.005", "5e-03", "5e-3"]),
            (10.0, &["10", "10.0", "1e+01", "1e1"]),
            (f64::INFINITY, &["+Inf", "Inf", "inf"]),
            (0.0, &["0", "0.0", "0e0"]),
        ] {
            for spelling in spellings {
                assert!(
                    matches(bound, spelling),
                    "{bound} should match {spelling:?}"
                );
                // Every spelling reads back as the bound: the pattern is exact.
                let read: f64 = spelling.parse().unwrap();
                assert_eq!(read, bound, "{spelling}");
            }
        }
        for (bound, other) in [
            (1.0, "10"),
            (1.0, "1.5"),
            (1.0, "0.1"),
            (1.0, "11"),
            (0.3, "0.03"),
            (0.3, "3"),
            (0.3, "0.31"),
            (10.0, "1"),
            (10.0, "100"),
            (1e6, "1e+07"),
            (f64::INFINITY, "1"),
        ] {
            assert!(!matches(bound, other), "{bound} should not match {other:?}");
        }
    }
}
