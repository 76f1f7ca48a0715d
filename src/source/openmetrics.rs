//! Recorded metrics: OpenMetrics text with timestamps, the format
//! `promtool tsdb create-blocks-from openmetrics` backfills.
//!
//! ```text
//! # TYPE http_requests counter
//! http_requests_total{code="200",route="POST /orders"} 1027 1700000000
//! http_requests_total{code="200",route="POST /orders"} 1041 1700000030.5
//! # EOF
//! ```
//!
//! Timestamps are seconds (fractions allowed). Samples of a series must be in time order, as
//! promtool requires. Lines of one series may interleave with other series. Every error names the
//! file and line.

use std::fmt;

use rustc_hash::FxHashMap;

use crate::slo::Millis;
use crate::window::{Semantics, Series};

/// All series of a recording, in order of first appearance.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// The file it was read from, as errors name it.
    pub file: String,
    pub series: Vec<Series>,
    /// Number of samples read.
    pub samples: usize,
    /// Where the earliest and the latest sample are (the first line holding each).
    pub earliest: Option<SampleAt>,
    pub latest: Option<SampleAt>,
    /// Whose window arithmetic its windows follow: the Prometheus version the recording stands
    /// for (a replay's `--semantics`; the detected version for Prometheus's history).
    pub semantics: Semantics,
}

/// A sample's time and the line it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleAt {
    pub at: Millis,
    pub line: usize,
}

impl Recording {
    /// The time range covered by the samples, or `None` for an empty recording.
    pub fn time_range(&self) -> Option<(Millis, Millis)> {
        let first = self
            .series
            .iter()
            .filter_map(Series::first_timestamp)
            .min()?;
        let last = self
            .series
            .iter()
            .filter_map(Series::last_timestamp)
            .max()?;
        Some((first, last))
    }
}

/// A recording that could not be read, with the file and line at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RecordingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for RecordingError {}

/// Parses OpenMetrics text. `file` only names the input in errors.
pub fn parse(file: &str, text: &str) -> Result<Recording, RecordingError> {
    let mut recording = Recording {
        file: file.to_string(),
        ..Recording::default()
    };
    let mut index_of: FxHashMap<&str, usize> = FxHashMap::default();
    let mut last_key: Option<(&str, usize)> = None;
    for (line_index, line) in text.lines().enumerate() {
        let fail = |message: String| RecordingError {
            file: file.to_string(),
            line: line_index + 1,
            message,
        };
        if line.starts_with('#') {
            if line == "# EOF" {
                break;
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let key_end = series_key_end(line).map_err(fail)?;
        let key = &line[..key_end];
        let rest = &line[key_end..];
        let (value, at) = parse_value_and_timestamp(rest).map_err(fail)?;
        let series_index = match last_key {
            Some((last, index)) if last == key => index,
            _ => match index_of.get(key) {
                Some(&index) => index,
                None => {
                    let labels = parse_labels(key).map_err(fail)?;
                    recording.series.push(Series::new(labels));
                    let index = recording.series.len() - 1;
                    index_of.insert(key, index);
                    index
                }
            },
        };
        last_key = Some((key, series_index));
        let series = &mut recording.series[series_index];
        if let Some(previous) = series.last_timestamp()
            && at <= previous
        {
            return Err(fail(format!(
                "sample at {} is not after the previous sample of {key} at {} (samples of a series must be in time order)",
                format_seconds(at),
                format_seconds(previous)
            )));
        }
        series.push(at, value);
        recording.samples += 1;
        let here = SampleAt {
            at,
            line: line_index + 1,
        };
        if recording.earliest.is_none_or(|earliest| at < earliest.at) {
            recording.earliest = Some(here);
        }
        if recording.latest.is_none_or(|latest| at > latest.at) {
            recording.latest = Some(here);
        }
    }
    Ok(recording)
}

fn format_seconds(at: Millis) -> String {
    if at % 1000 == 0 {
        format!("{}", at / 1000)
    } else {
        format!("{:.3}", at as f64 / 1000.0)
    }
}

/// The end of `name{labels}` at the start of a sample line.
fn series_key_end(line: &str) -> Result<usize, String> {
    let bytes = line.as_bytes();
    let name_end = bytes
        .iter()
        .position(|&byte| !(byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':'))
        .unwrap_or(bytes.len());
    if name_end == 0 || bytes[0].is_ascii_digit() {
        return Err(format!(
            "expected a metric name at the start of {:?}",
            truncate(line)
        ));
    }
    if bytes.get(name_end) != Some(&b'{') {
        return Ok(name_end);
    }
    let mut in_quotes = false;
    let mut escaped = false;
    for (offset, &byte) in bytes[name_end..].iter().enumerate() {
        if escaped {
            escaped = false;
        } else if in_quotes {
            match byte {
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_quotes = true;
        } else if byte == b'}' {
            return Ok(name_end + offset + 1);
        }
    }
    Err(format!("unterminated label set in {:?}", truncate(line)))
}

fn truncate(line: &str) -> &str {
    match line.char_indices().nth(80) {
        Some((index, _)) => &line[..index],
        None => line,
    }
}

/// ` value timestamp [# exemplar]` → (value, milliseconds).
fn parse_value_and_timestamp(rest: &str) -> Result<(f64, Millis), String> {
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected a space after the series name")?;
    let rest = match rest.find(" # ") {
        Some(exemplar) => &rest[..exemplar],
        None => rest,
    };
    let mut fields = rest.split(' ');
    let value_text = fields.next().unwrap_or("");
    let value =
        parse_float(value_text).ok_or_else(|| format!("{value_text:?} is not a sample value"))?;
    let Some(at_text) = fields.next() else {
        return Err("sample has no timestamp (recordings need one on every sample)".to_string());
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    let seconds: f64 = at_text
        .parse()
        .ok()
        .filter(|seconds: &f64| seconds.is_finite())
        .ok_or_else(|| format!("{at_text:?} is not a timestamp in seconds"))?;
    if seconds.abs() > 1e11 {
        return Err(format!(
            "timestamp {at_text} is not in seconds (OpenMetrics timestamps are seconds; this looks like milliseconds)"
        ));
    }
    Ok((value, (seconds * 1000.0).round() as Millis))
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || b"+-.eE".contains(&byte))
            && !text.is_empty() =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// `name{a="x",b="y"}` → sorted labels with `__name__`.
fn parse_labels(key: &str) -> Result<Vec<(String, String)>, String> {
    let (name, body) = match key.find('{') {
        Some(open) => (&key[..open], &key[open + 1..key.len() - 1]),
        None => (key, ""),
    };
    let mut labels = vec![("__name__".to_string(), name.to_string())];
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut label = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                label.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("expected a label name in {{{body}}}"));
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(format!("expected `=\"` after label {label}"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {label}")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    other => {
                        return Err(format!(
                            "invalid escape \\{} in label {label}",
                            other.unwrap_or(' ')
                        ));
                    }
                },
                Some(c) => value.push(c),
            }
        }
        if labels.iter().any(|(existing, _)| *existing == label) {
            return Err(format!("label {label} appears twice"));
        }
        labels.push((label, value));
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(other) => {
                return Err(format!(
                    "expected `,` or `}}` after label value, found {other:?}"
                ));
            }
        }
    }
    labels.sort();
    Ok(labels)
}

/// Writes a label value with OpenMetrics escapes.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_interleaved_series_with_escapes_and_resets() {
        let text = "# TYPE http_requests counter\n\
            http_requests_total{code=\"200\",path=\"/a \\\"b\\\" {c}\"} 10 1700000000\n\
            http_requests_total{code=\"500\"} 1 1700000000\n\
            http_requests_total{code=\"200\",path=\"/a \\\"b\\\" {c}\"} 3 1700000030.5\n\
            up 1 1700000030 # {trace_id=\"x\"} 1\n\
            # EOF\n\
            ignored 1 1\n";
        let recording = parse("r.om", text).unwrap();
        assert_eq!(recording.samples, 4);
        assert_eq!(recording.series.len(), 3);
        assert_eq!(recording.series[0].label("path"), "/a \"b\" {c}");
        assert_eq!(recording.series[0].len(), 2);
        assert_eq!(
            recording.time_range(),
            Some((1_700_000_000_000, 1_700_000_030_500))
        );
        assert_eq!(
            (recording.earliest, recording.latest),
            (
                Some(SampleAt {
                    at: 1_700_000_000_000,
                    line: 2
                }),
                Some(SampleAt {
                    at: 1_700_000_030_500,
                    line: 4
                })
            )
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "x 1 10\nx 2 5\n",
                "r.om:2: sample at 5 is not after the previous sample of x at 10 (samples of a series must be in time order)",
            ),
            (
                "x{a=\"1\" 1 10\n",
                "r.om:1: unterminated label set in \"x{a=\\\"1\\\" 1 10\"",
            ),
            ("x one 10\n", "r.om:1: \"one\" is not a sample value"),
            (
                "\nx 1\n",
                "r.om:2: sample has no timestamp (recordings need one on every sample)",
            ),
            (
                "x 1 1700000000000\n",
                "r.om:1: timestamp 1700000000000 is not in seconds (OpenMetrics timestamps are seconds; this looks like milliseconds)",
            ),
            ("x{a=\"1\",a=\"2\"} 1 1\n", "r.om:1: label a appears twice"),
            (
                "9x 1 1\n",
                "r.om:1: expected a metric name at the start of \"9x 1 1\"",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse("r.om", text).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn escaping_round_trips() {
        let value = "a\\b\"c\nd";
        let text = format!("x{{v=\"{}\"}} 1 1\n", escape_label_value(value));
        assert_eq!(parse("r", &text).unwrap().series[0].label("v"), value);
    }
}
