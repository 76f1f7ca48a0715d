//! Label matchers as Alertmanager writes them: `name="value"`, `name!="value"`,
//! `name=~"regex"`, `name!~"regex"` (regexes anchored at both ends, a missing label is the
//! empty string). Routes and silences select notifications with them.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Serialize, Serializer};

/// The longest matcher value, in bytes (a label value is rarely longer than a URL path).
pub const MAX_VALUE_BYTES: usize = 1024;

/// The most memory one compiled regex may take (the regex crate's program, and each of its
/// lazy DFAs), in bytes. `\w{200}` (Unicode word characters) needs about 11 MB; a label
/// pattern such as `GET /orders/.*|POST /(carts|orders)` needs a few KiB.
pub const MAX_REGEX_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Matches,
    NotMatches,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Matches => "=~",
            Op::NotMatches => "!~",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // JSON string quoting, which `parse` reads back exactly.
        let quoted = serde_json::to_string(&self.value).map_err(|_| fmt::Error)?;
        write!(f, "{}{}{quoted}", self.name, self.op.as_str())
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Matcher {
    /// Parses one matcher; the message says what is wrong with it.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let text = text.trim();
        let at = text
            .find(['=', '!'])
            .ok_or_else(|| format!("{text:?} is not a matcher such as severity=\"critical\""))?;
        let name = text[..at].trim();
        if !valid_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        let rest = &text[at..];
        let (op, value) = if let Some(value) = rest.strip_prefix("=~") {
            (Op::Matches, value)
        } else if let Some(value) = rest.strip_prefix("!~") {
            (Op::NotMatches, value)
        } else if let Some(value) = rest.strip_prefix("!=") {
            (Op::NotEqual, value)
        } else if let Some(value) = rest.strip_prefix('=') {
            (Op::Equal, value)
        } else {
            return Err(format!("{text:?}: expected =, !=, =~ or !~ after {name:?}"));
        };
        let value = value.trim();
        let value = if value.starts_with('"') {
            serde_json::from_str::<String>(value)
                .map_err(|_| format!("{}: the value is not a well-quoted string", shown(text)))?
        } else {
            value.to_string()
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "{}: the value is {} bytes long, more than {MAX_VALUE_BYTES}",
                shown(text),
                value.len()
            ));
        }
        let regex = match op {
            Op::Matches | Op::NotMatches => {
                Some(compile(&value).map_err(|error| format!("{}: {error}", shown(text)))?)
            }
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value,
            regex,
        })
    }

    /// Whether `labels` satisfy this matcher (an absent label is the empty string).
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let value = labels
            .iter()
            .find(|(name, _)| *name == self.name)
            .map_or("", |(_, value)| value.as_str());
        match (self.op, &self.regex) {
            (Op::Equal, _) => value == self.value,
            (Op::NotEqual, _) => value != self.value,
            (Op::Matches, Some(regex)) => regex.is_match(value),
            (Op::NotMatches, Some(regex)) => !regex.is_match(value),
            (_, None) => false,
        }
    }
}

/// A matcher's text in a message: quoted, and cut to its first 80 characters.
fn shown(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// Compiles an anchored regex within [`MAX_REGEX_BYTES`], or says why not.
fn compile(value: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{value})$"))
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|error| match error {
            regex::Error::CompiledTooBig(_) => format!(
                "the regex compiles to more than {} KiB (the limit for a matcher); \
                 match fewer repetitions or narrower classes (\\w is every Unicode word \
                 character: [a-zA-Z0-9_] is far smaller)",
                MAX_REGEX_BYTES / 1024
            ),
            error => format!("bad regex: {error}"),
        })
}

/// Whether every matcher matches (an empty list matches everything).
pub fn all_match(matchers: &[Matcher], labels: &[(String, String)]) -> bool {
    matchers.iter().all(|matcher| matcher.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_like_alertmanager() {
        let event = labels(&[("severity", "critical"), ("service", "order-service")]);
        let cases = [
            ("severity=\"critical\"", true),
            ("severity = critical", true),
            ("severity!=\"critical\"", false),
            ("service=~\"order-.*\"", true),
            ("service=~\"order\"", false), // anchored
            ("service!~\"pay.*\"", true),
            ("team=\"\"", true), // absent is empty
            ("team=~\".+\"", false),
            ("route=\"a\\\"b\"", false),
        ];
        for (text, expected) in cases {
            let matcher = Matcher::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
            assert_eq!(matcher.matches(&event), expected, "{text}");
        }
        assert_eq!(
            Matcher::parse("route=\"a\\\"b\"").unwrap().value,
            "a\"b",
            "quoted values unescape"
        );
        assert_eq!(
            Matcher::parse("service=~\"order-.*\"").unwrap().to_string(),
            "service=~\"order-.*\""
        );
        // Whatever a matcher holds, its text parses back to it.
        let odd = Matcher::parse(&format!(
            "route={}",
            serde_json::json!("a\u{0}\u{200b}\u{7f}\"\\b")
        ))
        .unwrap();
        assert_eq!(Matcher::parse(&odd.to_string()).unwrap(), odd);
    }

    #[test]
    fn bad_matchers_say_why() {
        for (text, message) in [
            ("severity", "is not a matcher"),
            ("1abc=\"x\"", "is not a label name"),
            ("a=~\"(\"", "bad regex"),
            ("a=\"unterminated", "not a well-quoted string"),
            // Regression (hardening): one such regex took about 11 MB and 0.1 s to compile,
            // and 200 of them in one silence aborted the daemon.
            ("route=~\\w{200}", "compiles to more than 256 KiB"),
        ] {
            let error = Matcher::parse(text).unwrap_err();
            assert!(error.contains(message), "{text}: {error}");
        }
        let long = format!("route=\"{}\"", "x".repeat(MAX_VALUE_BYTES + 1));
        let error = Matcher::parse(&long).unwrap_err();
        assert!(
            error.contains("more than 1024") && error.len() < 200,
            "{error}"
        );
        // What a label pattern needs still compiles.
        Matcher::parse("route=~\"GET /orders/[0-9a-f]{32}|POST /(carts|orders)(/.*)?\"").unwrap();
    }
}
