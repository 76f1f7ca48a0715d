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
use std::io::BufRead;

use rustc_hash::FxHashMap;

use crate::query::CounterQuery;
use crate::slo::Millis;
use crate::window::{Semantics, Series};

/// All series of a recording that a reading kept, in order of first appearance.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// The file it was read from, as errors name it.
    pub file: String,
    pub series: Vec<Series>,
    /// Number of samples kept.
    pub samples: usize,
    /// Number of samples read but not kept: those of series no selector of the [`Selection`]
    /// selects.
    pub skipped_samples: usize,
    /// Where the earliest and the latest kept sample are (the first line holding each).
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

/// The series a reading keeps: those at least one of its counter queries selects. Series of
/// other metrics are dropped on their name alone; series of a wanted metric are matched on
/// their labels once, when first seen.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    by_metric: FxHashMap<String, Vec<CounterQuery>>,
}

impl Selection {
    pub fn new<'q>(queries: impl IntoIterator<Item = &'q CounterQuery>) -> Selection {
        let mut by_metric: FxHashMap<String, Vec<CounterQuery>> = FxHashMap::default();
        for query in queries {
            let queries = by_metric.entry(query.metric.clone()).or_default();
            if !queries.contains(query) {
                queries.push(query.clone());
            }
        }
        Selection { by_metric }
    }

    /// Whether a series, its key as written (`name{labels}`) and `name` its metric name, is
    /// selected; an error says what is wrong with labels that had to be read to know.
    fn selects(&self, name: &str, key: &str) -> Result<bool, String> {
        let Some(queries) = self.by_metric.get(name) else {
            return Ok(false);
        };
        let body = key
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('{'))
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or("");
        // Without escapes the values are the text between the quotes: match them in place.
        if !body.contains('\\')
            && let Some(labels) = plain_labels(body)
        {
            let value_of = |label: &str| {
                labels
                    .iter()
                    .find(|(name, _)| *name == label)
                    .map_or("", |(_, value)| *value)
            };
            return Ok(queries.iter().any(|query| query.matchers_match(value_of)));
        }
        let labels = parse_labels(key)?;
        Ok(queries.iter().any(|query| query.selects(&labels)))
    }
}

/// `a="x",b="y"` without escapes → its labels, or `None` when it is not that simple (the full
/// parser then decides, and names what is wrong).
fn plain_labels(body: &str) -> Option<Vec<(&str, &str)>> {
    let mut labels = Vec::with_capacity(8);
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return Some(labels);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || labels.iter().any(|(existing, _)| *existing == name)
        {
            return None;
        }
        rest = rest[name_end..].strip_prefix("=\"")?;
        let value_end = rest.find('"')?;
        labels.push((name, &rest[..value_end]));
        rest = &rest[value_end + 1..];
        if rest.is_empty() {
            return Some(labels);
        }
        rest = rest.strip_prefix(',')?;
    }
}

/// How much of a recording a reading may keep, so that a huge one is refused with a clear
/// error instead of exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Series kept (`--max-series`).
    pub max_series: usize,
    /// Samples kept (`--max-samples`), 16 bytes each in memory.
    pub max_samples: usize,
}

impl Limits {
    /// What `replay`, `replay --score` and `tune` keep unless told otherwise: about 1.6 GB of
    /// samples.
    pub const DEFAULT: Limits = Limits {
        max_series: 1_000_000,
        max_samples: 100_000_000,
    };

    pub const NONE: Limits = Limits {
        max_series: usize::MAX,
        max_samples: usize::MAX,
    };
}

/// What a reading keeps: the series `selection` selects (every series without one), within
/// `limits`.
#[derive(Debug, Clone, Copy)]
pub struct Keep<'s> {
    pub selection: Option<&'s Selection>,
    pub limits: Limits,
}

impl Keep<'_> {
    pub const EVERYTHING: Keep<'static> = Keep {
        selection: None,
        limits: Limits::NONE,
    };
}

/// Parses OpenMetrics text, keeping every series. `file` only names the input in errors.
pub fn parse(file: &str, text: &str) -> Result<Recording, RecordingError> {
    read(file, text.as_bytes(), Keep::EVERYTHING)
}

/// Reads OpenMetrics text line by line from `input`, keeping what `keep` says. Every line's
/// syntax is checked up to its timestamp; a series that is not kept is neither stored nor
/// checked for time order. `file` only names the input in errors.
pub fn read(file: &str, mut input: impl BufRead, keep: Keep) -> Result<Recording, RecordingError> {
    let mut recording = Recording {
        file: file.to_string(),
        ..Recording::default()
    };
    let mut index_of: FxHashMap<Box<str>, usize> = FxHashMap::default();
    // The series of the last kept line, and its key: consecutive lines of one series are the
    // common case, found without hashing.
    let mut last: Option<usize> = None;
    let mut last_key = String::new();
    let mut buffer = Vec::with_capacity(256);
    let mut line_number = 0;
    loop {
        buffer.clear();
        let read = input
            .read_until(b'\n', &mut buffer)
            .map_err(|error| RecordingError {
                file: file.to_string(),
                line: line_number + 1,
                message: format!("cannot read: {error}"),
            })?;
        if read == 0 {
            break;
        }
        line_number += 1;
        let fail = |message: String| RecordingError {
            file: file.to_string(),
            line: line_number,
            message,
        };
        let mut bytes = buffer.as_slice();
        if let Some(without_newline) = bytes.strip_suffix(b"\n") {
            bytes = without_newline
                .strip_suffix(b"\r")
                .unwrap_or(without_newline);
        }
        let line = std::str::from_utf8(bytes)
            .map_err(|error| fail(format!("the line is not UTF-8 text ({error})")))?;
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
        let (value, at) = parse_value_and_timestamp(&line[key_end..]).map_err(fail)?;
        let series_index = match last {
            Some(index) if last_key == key => index,
            _ => {
                let name = &key[..key.find('{').unwrap_or(key.len())];
                let wanted = keep
                    .selection
                    .is_none_or(|selection| selection.by_metric.contains_key(name));
                let known = if wanted {
                    index_of.get(key).copied()
                } else {
                    None
                };
                let index = match known {
                    Some(index) => index,
                    None => {
                        let selected = match keep.selection {
                            None => true,
                            Some(selection) => {
                                wanted && selection.selects(name, key).map_err(fail)?
                            }
                        };
                        if !selected {
                            recording.skipped_samples += 1;
                            continue;
                        }
                        if keep.limits.max_series <= recording.series.len() {
                            return Err(fail(over_limit(
                                &recording,
                                format!("{} series (--max-series)", keep.limits.max_series),
                                "raise --max-series, or select fewer series",
                            )));
                        }
                        let labels = parse_labels(key).map_err(fail)?;
                        recording.series.push(Series::new(labels));
                        let index = recording.series.len() - 1;
                        index_of.insert(key.into(), index);
                        index
                    }
                };
                last = Some(index);
                last_key.clear();
                last_key.push_str(key);
                index
            }
        };
        if keep.limits.max_samples <= recording.samples {
            return Err(fail(over_limit(
                &recording,
                format!(
                    "{} samples (--max-samples, 16 bytes each in memory)",
                    keep.limits.max_samples
                ),
                "raise --max-samples, or replay a shorter recording",
            )));
        }
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
            line: line_number,
        };
        if recording.earliest.is_none_or(|earliest| at < earliest.at) {
            recording.earliest = Some(here);
        }
        if recording.latest.is_none_or(|latest| at > latest.at) {
            recording.latest = Some(here);
        }
    }
    for series in &mut recording.series {
        series.shrink_to_fit();
    }
    Ok(recording)
}

/// Why a reading stops at a limit: the limit, what was kept before the line, what to do.
fn over_limit(recording: &Recording, limit: String, remedy: &str) -> String {
    format!(
        "refusing to keep more than {limit}: {} series and {} samples were kept before this line; {remedy}",
        recording.series.len(),
        recording.samples
    )
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

    fn order_service_selection() -> Selection {
        let queries = [
            "sum by (route) (rate(http_requests_total{service=\"order-service\",code=~\"5..\"}[{{.window}}]))",
            "sum by (route) (rate(http_requests_total{service=\"order-service\"}[{{.window}}]))",
        ]
        .map(|template| CounterQuery::parse(template).expect("a counter query"));
        Selection::new(&queries)
    }

    /// Series no selector selects are read but neither kept nor checked for time order: a
    /// recording of many other series stays as small as the series the SLOs read.
    #[test]
    fn a_selection_keeps_only_the_series_it_selects() {
        let text = "# TYPE node_cpu_seconds counter\n\
            node_cpu_seconds_total{cpu=\"0\"} 5 1700000060\n\
            http_requests_total{code=\"200\",service=\"order-service\",route=\"a \\\"b\\\"\"} 1 1700000000\n\
            http_requests_total{code=\"200\",service=\"billing\"} 1 1700000000\n\
            http_requests_total{service=\"order-service\", code=\"500\"} 0 1700000000\n\
            node_cpu_seconds_total{cpu=\"0\"} 4 1699999999\n\
            http_requests_total{code=\"200\",service=\"billing\"} 0 1600000000\n\
            http_requests_total{code=\"200\",service=\"order-service\",route=\"a \\\"b\\\"\"} 2 1700000030\n\
            http_requests_total 7 1800000000\n\
            http_requests_total{service=\"order-service\", code=\"500\"} 1 1700000030\n\
            # EOF\n";
        let selection = order_service_selection();
        let keep = Keep {
            selection: Some(&selection),
            limits: Limits::DEFAULT,
        };
        let recording = read("r.om", text.as_bytes(), keep).expect("reads");
        let kept: Vec<(String, usize)> = recording
            .series
            .iter()
            .map(|series| {
                (
                    format!("{}/{}", series.label("code"), series.label("route")),
                    series.len(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [("200/a \"b\"".to_string(), 2), ("500/".to_string(), 2)]
        );
        assert_eq!((recording.samples, recording.skipped_samples), (4, 5));
        // The time range is the kept series' only.
        assert_eq!(
            recording.time_range(),
            Some((1_700_000_000_000, 1_700_000_030_000))
        );
        assert_eq!(
            recording.earliest.map(|at| at.line),
            Some(3),
            "the first line of a kept series at the earliest time"
        );
        // A line of a series that is not kept is still read: bad syntax is an error.
        let bad = "node_cpu_seconds_total{cpu=\"0\"} five 1700000000\n";
        assert_eq!(
            read("r.om", bad.as_bytes(), keep).unwrap_err().to_string(),
            "r.om:1: \"five\" is not a sample value"
        );
        // Without a selection everything is kept, as `parse` does.
        assert_eq!(parse("r.om", "x 1 1\ny 1 1\n").unwrap().series.len(), 2);
    }

    /// Limits stop a reading at the line that would exceed them, naming the flag to raise and
    /// what was kept; series not kept count towards neither.
    #[test]
    fn limits_refuse_at_the_line_with_the_flag_to_raise() {
        let mut text = String::from("# TYPE http_requests counter\n");
        for at in 0..3 {
            text.push_str(&format!(
                "other_total{{n=\"{at}\"}} 1 {}\n",
                1_700_000_000 + at
            ));
            for route in ["a", "b", "c"] {
                text.push_str(&format!(
                    "http_requests_total{{service=\"order-service\",route=\"{route}\"}} {at} {}\n",
                    1_700_000_000 + at
                ));
            }
        }
        let selection = order_service_selection();
        let read_with = |max_series, max_samples| {
            let keep = Keep {
                selection: Some(&selection),
                limits: Limits {
                    max_series,
                    max_samples,
                },
            };
            read("r.om", text.as_bytes(), keep).map(|recording| recording.samples)
        };
        assert_eq!(read_with(3, 9), Ok(9));
        assert_eq!(
            read_with(2, 9).unwrap_err().to_string(),
            "r.om:5: refusing to keep more than 2 series (--max-series): 2 series and 2 samples were kept before this line; raise --max-series, or select fewer series"
        );
        assert_eq!(
            read_with(3, 8).unwrap_err().to_string(),
            "r.om:13: refusing to keep more than 8 samples (--max-samples, 16 bytes each in memory): 3 series and 8 samples were kept before this line; raise --max-samples, or replay a shorter recording"
        );
    }

    #[test]
    fn reads_a_stream_with_crlf_line_ends_and_names_a_line_that_is_not_utf8() {
        let recording = parse("r.om", "x 1 1\r\nx 2 2\r\n# EOF\r\n").expect("reads");
        assert_eq!(recording.samples, 2);
        let bytes: &[u8] = b"x 1 1\nx{a=\"\xff\"} 1 1\n";
        let error = read("r.om", bytes, Keep::EVERYTHING).unwrap_err();
        assert_eq!(
            (
                error.line,
                error.message.starts_with("the line is not UTF-8 text")
            ),
            (2, true)
        );
    }

    #[test]
    fn escaping_round_trips() {
        let value = "a\\b\"c\nd";
        let text = format!("x{{v=\"{}\"}} 1 1\n", escape_label_value(value));
        assert_eq!(parse("r", &text).unwrap().series[0].label("v"), value);
    }
}
