//! Reading SLO specs and the daemon config: YAML as users wrote it → validated [`Slo`]s.
//!
//! Loading is two explicit steps, as in Sloth: deserialize the versioned file into raw structs
//! (`native.rs`, `sloth.rs`, `daemon.rs`), then map them to the one model in `slo.rs`. The model
//! never sees YAML. Every error names the file, line, column and field path, and says what was
//! expected: `rules/orders.yaml:12:17: slos[0].objective: 100.5 is not a percentage in (0, 100)`.
//!
//! YAML is read by serde-saphyr: maintained, pure Rust, rejects duplicate keys, and reports
//! line/column for syntax errors and for any value through `Spanned<T>`.

mod daemon;
mod native;
pub mod notify;
mod sloth;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_saphyr::Spanned;

pub use daemon::{
    DaemonConfig, PrometheusConfig, StateBackend, StateConfig, Strategy, WebLimits, health_url,
};

use crate::slo::{Objective, Origin, Slo};

/// One problem in one file, located as precisely as the YAML allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// Field path such as `slos[0].objective`; empty for file-level problems.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All problems found in a set of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects located errors while mapping one file.
pub(crate) struct Problems<'a> {
    file: &'a str,
    errors: Vec<ConfigError>,
    /// Accepted, but likely wrong: given to the SLO being mapped (`Slo::warnings`).
    warnings: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    fn new(file: &'a str) -> Problems<'a> {
        Problems {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a warning at a spanned value: accepted, but likely wrong.
    fn warn_at<T>(&mut self, spanned: &Spanned<T>, path: &str, message: String) {
        let warning = ConfigError {
            file: self.file.to_string(),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            path: path.to_string(),
            message,
        };
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// Warns about `le="<integer>"` equality matchers in a query: Prometheus 3 stores a scraped
    /// classic histogram's bound 1 as `le="1.0"`, Prometheus 2 as the target wrote it (`1`
    /// from Go clients), so the matcher finds no bucket on one of them.
    fn check_le_spelling(&mut self, query: &Spanned<String>, path: &str) {
        let mut rest = query.value.as_str();
        while let Some(at) = rest.find("le") {
            let before = query.value.len() - rest.len() + at;
            rest = &rest[at + 2..];
            let preceded_by_name = query.value[..before]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let after = rest.trim_start();
            let Some(quoted) = after.strip_prefix('=').map(str::trim_start) else {
                continue;
            };
            let Some(inner) = quoted.strip_prefix('"') else {
                continue;
            };
            let Some(end) = inner.find('"') else { continue };
            let value = &inner[..end];
            let Ok(bound) = value.parse::<f64>() else {
                continue;
            };
            if preceded_by_name || bound.fract() != 0.0 || 1e6 <= bound.abs() {
                continue;
            }
            let go = format!("{}", bound as i64);
            self.warn_at(
                query,
                path,
                format!(
                    "le=\"{value}\" matches no bucket on Prometheus 3, which stores this bound as \
                     le=\"{go}.0\" (Prometheus 2 keeps the target's le=\"{go}\"); write \
                     le=~\"{go}|{go}.0\" to match it on every version"
                ),
            );
        }
    }

    /// Records a problem at a spanned value, once (a value shared by both tiers, such as the
    /// SLO's `alerting.repeat_interval`, is checked for each).
    fn at<T>(&mut self, spanned: &Spanned<T>, path: impl Into<String>, message: impl Into<String>) {
        let error = ConfigError {
            file: self.file.to_string(),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            path: path.into(),
            message: message.into(),
        };
        if !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }

    fn origin<T>(&self, spanned: &Spanned<T>) -> Origin {
        Origin {
            file: self.file.to_string(),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        }
    }

    fn into_result<T>(self, value: T) -> Result<T, Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }
}

/// A duration of at least one second (`default` when absent); `None`, with the problem
/// recorded at the value, when it is not one.
pub(crate) fn duration_at_least_1s(
    problems: &mut Problems,
    value: Option<&Spanned<String>>,
    path: &str,
    default: std::time::Duration,
) -> Option<std::time::Duration> {
    match value {
        None => Some(default),
        Some(value) => match crate::slo::parse_duration(&value.value) {
            Ok(parsed) if parsed < std::time::Duration::from_secs(1) => {
                problems.at(value, path, "must be at least 1s");
                None
            }
            // Nothing in a config or spec means more than a year; a longer one is a typo, and
            // one beyond the clock's range would never come round.
            Ok(parsed) if parsed > std::time::Duration::from_secs(366 * 86_400) => {
                problems.at(value, path, "must be at most 366d");
                None
            }
            Ok(parsed) => Some(parsed),
            Err(message) => {
                problems.at(value, path, message);
                None
            }
        },
    }
}

/// Maps every raw SLO of a spec file with `map_slo(problems, "slos[i]", service, raw)`,
/// collecting located problems across all of them.
fn map_spec_file<R>(
    file: &str,
    service: &Spanned<String>,
    raw_slos: Vec<R>,
    mut map_slo: impl FnMut(&mut Problems, &str, &str, R) -> Option<Slo>,
) -> Result<Vec<Slo>, Vec<ConfigError>> {
    let mut problems = Problems::new(file);
    if service.value.trim().is_empty() {
        problems.at(service, "service", "must not be empty");
    }
    id_part(&mut problems, service, "service");
    let mut slos = Vec::new();
    for (index, raw_slo) in raw_slos.into_iter().enumerate() {
        let path = format!("slos[{index}]");
        if let Some(mut slo) = map_slo(&mut problems, &path, &service.value, raw_slo) {
            slo.warnings = std::mem::take(&mut problems.warnings)
                .iter()
                .map(ToString::to_string)
                .collect();
            slos.push(slo);
        }
        problems.warnings.clear();
    }
    problems.into_result(slos)
}

/// A runbook or dashboard link: an http(s) URL, since it is sent to Slack and shown as a link
/// (a `javascript:` or `file:` link is refused at its line).
fn checked_link(problems: &mut Problems, link: &Spanned<String>, path: &str) -> Option<String> {
    let text = link.value.trim();
    match link_problem(text) {
        None => Some(text.to_string()),
        Some(message) => {
            problems.at(link, path, message);
            None
        }
    }
}

/// Why `text` is not an http(s) link, if it is not.
fn link_problem(text: &str) -> Option<String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => None,
        Ok(url) => Some(format!(
            "{text:?} is a {}: link; expected an http:// or https:// URL",
            url.scheme()
        )),
        Err(_) => Some(format!(
            "{text:?} is not a URL; expected an http:// or https:// URL"
        )),
    }
}

/// The SLO's trimmed name and its objective, each checked at its position.
/// Unicode format characters (zero-width spaces and joiners, bidirectional controls, the
/// byte-order mark, tags): invisible, so two ids that print alike differ.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE0001 | 0xE0020..=0xE007F)
}

/// A service or SLO name makes the SLO's id (`service-name`), which routes, silences, links
/// and metric labels name: refused with characters nobody sees (control and format
/// characters), warned about beyond ASCII (a Cyrillic а looks like a Latin a, so `s-а` and
/// `s-a` would be two SLOs that look like one).
fn id_part(problems: &mut Problems, value: &Spanned<String>, path: &str) {
    if let Some(c) = value
        .value
        .chars()
        .find(|c| c.is_control() || is_invisible(*c))
    {
        problems.at(
            value,
            path,
            format!(
                "contains U+{:04X}, an invisible or control character: ids that print alike \
                 must be alike",
                c as u32
            ),
        );
    } else if let Some(c) = value.value.chars().find(|c| !c.is_ascii()) {
        problems.warn_at(
            value,
            path,
            format!(
                "contains {c:?} (U+{:04X}), which is not ASCII: it may look like another \
                 character (a Cyrillic а and a Latin a), so two SLO ids that look alike could \
                 differ; prefer ASCII names",
                c as u32
            ),
        );
    }
}

fn name_and_objective(
    problems: &mut Problems,
    path: &str,
    name: &Spanned<String>,
    objective: &Spanned<f64>,
) -> (String, Option<Objective>) {
    let trimmed = name.value.trim().to_string();
    if trimmed.is_empty() {
        problems.at(name, format!("{path}.name"), "must not be empty");
    }
    id_part(problems, name, &format!("{path}.name"));
    let objective = Objective::from_percent(objective.value)
        .map_err(|message| problems.at(objective, format!("{path}.objective"), message))
        .ok();
    (trimmed, objective)
}

/// A file of SLO specs or a daemon config, as read.
#[derive(Debug, Clone)]
pub enum Document {
    Slos(Vec<Slo>),
    Daemon(Box<DaemonConfig>),
}

/// Which format a YAML file is in, from its `version` key.
#[derive(serde::Deserialize)]
struct Probe {
    version: Option<Spanned<String>>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    slos: Option<serde::de::IgnoredAny>,
}

/// Reads one file: native spec, Sloth spec or daemon config.
pub fn load_file(path: &Path) -> Result<Document, Vec<ConfigError>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read: {error}"),
        }]
    })?;
    load_str(&file, &text, path.parent().unwrap_or(Path::new(".")))
}

/// Reads a file's text; `file` names it in errors, `base` resolves relative paths. A file may
/// hold several YAML documents separated by `---` (as Sloth allows); their SLOs are combined.
pub fn load_str(file: &str, text: &str, base: &Path) -> Result<Document, Vec<ConfigError>> {
    let documents = split_documents(text);
    if documents.len() <= 1 {
        return load_document(file, text, base);
    }
    let mut slos = Vec::new();
    let mut errors = Vec::new();
    for document in documents {
        match load_document(file, &document, base) {
            Ok(Document::Slos(mut found)) => slos.append(&mut found),
            Ok(Document::Daemon(_)) => errors.push(ConfigError {
                file: file.to_string(),
                line: 0,
                column: 0,
                path: String::new(),
                message: "a daemon config must be a single YAML document".to_string(),
            }),
            Err(mut found) => errors.append(&mut found),
        }
    }
    if errors.is_empty() {
        Ok(Document::Slos(slos))
    } else {
        Err(errors)
    }
}

/// The non-empty documents of a multi-document YAML text, each padded with blank lines so that
/// line numbers in errors still count from the top of the file.
fn split_documents(text: &str) -> Vec<String> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut has_content = false;
    for (index, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            if has_content {
                documents.push(std::mem::take(&mut current));
            }
            // The next document starts on line index + 2 (1-based).
            current = "\n".repeat(index + 1);
            has_content = false;
            continue;
        }
        if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            has_content = true;
        }
        current.push_str(line);
        current.push('\n');
    }
    if has_content {
        documents.push(current);
    }
    documents
}

fn load_document(file: &str, text: &str, base: &Path) -> Result<Document, Vec<ConfigError>> {
    let probe: Probe = deserialize(file, text).map_err(|error| vec![error])?;
    match (probe.version, probe.api_version, probe.slos) {
        (Some(version), _, _) if version.value == sloth::VERSION => Ok(Document::Slos(
            sloth::load(file, deserialize(file, text).map_err(|e| vec![e])?)?,
        )),
        (Some(version), _, _) if version.value == native::VERSION => Ok(Document::Slos(
            native::load(file, deserialize(file, text).map_err(|e| vec![e])?)?,
        )),
        (Some(version), _, _) => Err(vec![ConfigError {
            file: file.to_string(),
            line: version.referenced.line(),
            column: version.referenced.column(),
            path: "version".to_string(),
            message: format!(
                "{:?} is not a known version; expected {:?} (burnwatch) or {:?} (Sloth)",
                version.value,
                native::VERSION,
                sloth::VERSION
            ),
        }]),
        (None, Some(api_version), _) => Err(vec![ConfigError {
            file: file.to_string(),
            line: 1,
            column: 1,
            path: "apiVersion".to_string(),
            message: format!(
                "{api_version:?} (a Kubernetes resource) is not supported; use Sloth's `version: \"prometheus/v1\"` file format"
            ),
        }]),
        (None, None, Some(_)) => Err(vec![ConfigError {
            file: file.to_string(),
            line: 1,
            column: 1,
            path: "version".to_string(),
            message: format!(
                "missing; an SLO spec starts with `version: {:?}` (burnwatch) or `version: {:?}` (Sloth)",
                native::VERSION,
                sloth::VERSION
            ),
        }]),
        (None, None, None) => Ok(Document::Daemon(Box::new(daemon::load(
            file,
            deserialize(file, text).map_err(|e| vec![e])?,
            base,
        )?))),
    }
}

/// What a daemon config and its SLOs say together that neither says alone: a tier whose
/// `repeat_interval` is shorter than `evaluation_interval` (reminders can go out only at an
/// evaluation, so it would remind at every one).
pub fn cross_check(daemon: &DaemonConfig, slos: &[Slo]) -> Vec<String> {
    let mut warnings = Vec::new();
    for slo in slos {
        for tier in &slo.tiers {
            if tier.timing.repeat_interval < daemon.evaluation_interval {
                warnings.push(format!(
                    "{}: {}.alerting.{}.repeat_interval {} is shorter than evaluation_interval {}: \
                     a firing alert would be reminded at every evaluation",
                    slo.origin,
                    slo.id,
                    tier.kind.as_str(),
                    crate::slo::format_duration(tier.timing.repeat_interval),
                    crate::slo::format_duration(daemon.evaluation_interval)
                ));
            }
        }
    }
    warnings
}

/// Loads SLO spec files and directories (every `.yaml`/`.yml` inside), checking that SLO ids
/// are unique across them.
pub fn load_specs(paths: &[PathBuf]) -> Result<Vec<Slo>, ConfigErrors> {
    let mut slos: Vec<Slo> = Vec::new();
    let mut errors = Vec::new();
    for path in expand(paths).map_err(|error| ConfigErrors(vec![error]))? {
        match load_file(&path) {
            Ok(Document::Slos(loaded)) => slos.extend(loaded),
            Ok(Document::Daemon(_)) => errors.push(ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                path: String::new(),
                message: "this is a daemon config, not an SLO spec (it has no `slos`)".to_string(),
            }),
            Err(mut file_errors) => errors.append(&mut file_errors),
        }
    }
    for (index, slo) in slos.iter().enumerate() {
        if let Some(first) = slos[..index].iter().find(|other| other.id == slo.id) {
            errors.push(ConfigError {
                file: slo.origin.file.clone(),
                line: slo.origin.line,
                column: slo.origin.column,
                path: String::new(),
                message: format!("SLO id {:?} is already defined at {}", slo.id, first.origin),
            });
        }
    }
    if errors.is_empty() {
        Ok(slos)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Files as given, and the YAML files inside directories (sorted, not recursive).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|error| ConfigError {
                    file: path.display().to_string(),
                    line: 0,
                    column: 0,
                    path: String::new(),
                    message: format!("cannot read directory: {error}"),
                })?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| {
                    matches!(
                        file.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml")
                    )
                })
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// What a breach of serde-saphyr's parsing budget (`Nodes { nodes: 250001 }` …) means, in
/// words: the limits keep a hostile or runaway file (an alias bomb) from taking the memory
/// the daemon needs.
fn over_budget(breach: &str) -> String {
    let kind = breach.split([' ', '{']).next().unwrap_or("");
    let count: String = breach
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    let what = match kind {
        "Nodes" => "values (keys, scalars and list items, aliases expanded)",
        "Events" => "parser events",
        "Aliases" => "aliases (*name)",
        "Anchors" => "anchors (&name)",
        "Depth" => "levels of nesting",
        "Documents" => "YAML documents",
        _ => {
            return format!(
                "the file is too large to read ({breach}): over the limit a spec or config may \
                 have (a guard against alias bombs and runaway generated files)"
            );
        }
    };
    format!(
        "the file is too large to read: it reached {count} {what}, over the limit a spec or \
         config may have (a guard against alias bombs and runaway generated files); split it \
         into several files or remove repeated aliases"
    )
}

/// serde-saphyr with the field path of the failing value added to its located message.
fn deserialize<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, ConfigError> {
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            path = error.path().to_string();
            error.into_inner()
        })
    });
    result.map_err(|error| {
        let (line, column) = error
            .location()
            .map_or((0, 0), |location| (location.line(), location.column()));
        let message = error.without_snippet().to_string();
        let message = match message.find("budget breached: ") {
            Some(index) => over_budget(&message[index + "budget breached: ".len()..]),
            None => match message.rfind(" at line ") {
                Some(index) => message[..index].to_string(),
                None => message,
            },
        };
        // `Spanned<T>` shows up as a `.value` step; users never wrote it.
        let path = path.replace(".value", "");
        ConfigError {
            file: file.to_string(),
            line,
            column,
            path: if path == "." || path == "?" {
                String::new()
            } else {
                path
            },
            message,
        }
    })
}

#[cfg(test)]
mod tests;
