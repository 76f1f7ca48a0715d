//! The recommended policies as a change to the spec files: a unified diff of the lines that
//! change, for burnwatch/v1 files; for Sloth prometheus/v1 files, which fix their windows
//! and factors from the SLO period and have no `for`, `resolve_timeout` or `min_events`, a
//! note saying so and the burnwatch/v1 equivalent.
//!
//! Edits work on the file's text, from the line the SLO's `name` is on (its [`Origin`]), so
//! comments and layout elsewhere stay as written.
//!
//! [`Origin`]: crate::slo::Origin

use std::fmt::Write as _;

use super::grid::Policy;
use super::{Sweep, TierSweep};
use crate::slo::{Slo, TierKind, format_duration};

/// Replace lines `start..end` (0-based, end excluded) with `lines`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub lines: Vec<String>,
}

/// What to change in one spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecChange {
    pub file: String,
    /// A unified diff (`--- a/FILE`, `+++ b/FILE`), when the file can express the change.
    pub diff: Option<String>,
    /// What could not be written, and the native equivalent.
    pub notes: Vec<String>,
}

/// The spec changes the sweep recommends, one per file with a change.
pub fn spec_changes(sweep: &Sweep) -> Vec<SpecChange> {
    let mut files: Vec<String> = Vec::new();
    for tier in sweep.tiers.iter().filter(|tier| tier.changes()) {
        if let Some(slo) = sweep.slo(&tier.slo_id)
            && !files.contains(&slo.origin.file)
        {
            files.push(slo.origin.file.clone());
        }
    }
    files
        .into_iter()
        .map(|file| {
            let changed: Vec<(&Slo, &TierSweep)> = sweep
                .tiers
                .iter()
                .filter(|tier| tier.changes())
                .filter_map(|tier| Some((sweep.slo(&tier.slo_id)?, tier)))
                .filter(|(slo, _)| slo.origin.file == file)
                .collect();
            match std::fs::read_to_string(&file) {
                Ok(text) => file_change(&file, &text, &changed),
                Err(error) => SpecChange {
                    file: file.clone(),
                    diff: None,
                    notes: vec![format!("cannot read {file}: {error}")],
                },
            }
        })
        .collect()
}

fn is_sloth(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        line.starts_with("version:") && line.contains("prometheus/v1")
    })
}

/// The change to one file's text for the tiers that change in it.
pub fn file_change(file: &str, text: &str, changed: &[(&Slo, &TierSweep)]) -> SpecChange {
    if is_sloth(text) {
        let notes = changed
            .iter()
            .map(|(slo, tier)| {
                format!(
                    "{file}: Sloth prometheus/v1 cannot express the {} change for {} (its windows and factors follow from the SLO period; it has no for, resolve_timeout or min_events). The burnwatch/v1 equivalent:\n{}",
                    tier.kind,
                    slo.id,
                    native_block(tier.kind, &tier.recommendation().policy, 0).join("\n")
                )
            })
            .collect();
        return SpecChange {
            file: file.to_string(),
            diff: None,
            notes,
        };
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut edits = Vec::new();
    let mut notes = Vec::new();
    for (slo, tier) in changed {
        match native_edits(
            &lines,
            slo,
            tier.kind,
            &tier.recommendation().policy,
            &tier.current().policy,
        ) {
            Ok(found) => edits.extend(found),
            Err(reason) => notes.push(format!("{file}: {} {}: {reason}", slo.id, tier.kind)),
        }
    }
    edits.sort_by_key(|edit| (edit.start, edit.end));
    let overlapping = edits.windows(2).any(|pair| pair[1].start < pair[0].end);
    if overlapping {
        notes.push(format!(
            "{file}: the changes overlap; apply them one tier at a time"
        ));
        return SpecChange {
            file: file.to_string(),
            diff: None,
            notes,
        };
    }
    SpecChange {
        file: file.to_string(),
        diff: (!edits.is_empty()).then(|| unified(file, &lines, &edits)),
        notes,
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// The first line after `start` (before `end`) that is content indented `indent` or less: the
/// end of the block the line `start` opens.
fn block_end(lines: &[&str], start: usize, end: usize, indent: usize) -> usize {
    (start + 1..end)
        .find(|&index| is_content(lines[index]) && indent_of(lines[index]) <= indent)
        .unwrap_or(end)
}

/// The line of `key:` at `indent` within `from..to`.
fn find_key(lines: &[&str], from: usize, to: usize, indent: usize, key: &str) -> Option<usize> {
    (from..to).find(|&index| {
        let line = lines[index];
        let body = line.trim_start().trim_start_matches("- ");
        let at = line.len() - body.len();
        at == indent && (body.starts_with(&format!("{key}:")))
    })
}

/// The indent of the block under the line `line`, or `fallback` when it has none.
fn child_indent(lines: &[&str], line: usize, end: usize, fallback: usize) -> usize {
    (line + 1..end)
        .find(|&index| is_content(lines[index]))
        .map(|index| indent_of(lines[index]))
        .filter(|&indent| indent > indent_of(lines[line]))
        .unwrap_or(fallback)
}

fn window_lines(policy: &Policy, indent: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    let mut lines = vec![format!("{pad}windows:")];
    for pair in &policy.pairs {
        lines.push(format!(
            "{pad}  - {{long: {}, short: {}, factor: {}}}",
            format_duration(pair.long),
            format_duration(pair.short),
            pair.factor
        ));
    }
    lines
}

/// The keys of a tier that differ from `current` (every key with `None`), as block YAML at
/// `indent`.
fn tier_keys(policy: &Policy, current: Option<&Policy>, indent: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    let differs = |same: fn(&Policy, &Policy) -> bool| current.is_none_or(|c| !same(policy, c));
    let mut lines = Vec::new();
    if differs(|a, b| a.pairs == b.pairs) {
        lines.extend(window_lines(policy, indent));
    }
    if differs(|a, b| a.timing.for_ == b.timing.for_) {
        lines.push(format!("{pad}for: {}", format_duration(policy.timing.for_)));
    }
    if differs(|a, b| a.timing.resolve_timeout == b.timing.resolve_timeout) {
        lines.push(format!(
            "{pad}resolve_timeout: {}",
            format_duration(policy.timing.resolve_timeout)
        ));
    }
    lines
}

/// The burnwatch/v1 lines stating a tier's whole policy, at `indent` (the SLO's keys).
pub fn native_block(kind: TierKind, policy: &Policy, indent: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    let mut lines = vec![
        format!("{pad}min_events: {}", policy.min_events),
        format!("{pad}alerting:"),
        format!("{pad}  {kind}:"),
    ];
    lines.extend(tier_keys(policy, None, indent + 4));
    lines
}

/// The edits that give `slo`'s tier `kind` the policy `policy` in a burnwatch/v1 file.
pub fn native_edits(
    lines: &[&str],
    slo: &Slo,
    kind: TierKind,
    policy: &Policy,
    current: &Policy,
) -> Result<Vec<Edit>, String> {
    let name_line = (slo.origin.line as usize)
        .checked_sub(1)
        .filter(|&line| line < lines.len())
        .ok_or("the SLO's line is not in the file")?;
    let key_indent = lines[name_line]
        .find("name:")
        .ok_or("the SLO's line has no name")?;
    // The item: from its `- ` line to the next line indented less than its keys.
    let item_start = (0..=name_line)
        .rev()
        .find(|&index| {
            let line = lines[index];
            line.trim_start().starts_with("- ") && indent_of(line) + 2 == key_indent
        })
        .unwrap_or(name_line);
    let item_end = (name_line + 1..lines.len())
        .find(|&index| is_content(lines[index]) && indent_of(lines[index]) < key_indent)
        .unwrap_or(lines.len());
    // Trailing blank lines and comments belong to what follows.
    let item_end = (item_start..item_end)
        .rev()
        .find(|&index| is_content(lines[index]))
        .map_or(item_end, |index| index + 1);
    let mut edits = Vec::new();
    if policy.min_events != current.min_events {
        let line = format!(
            "{}min_events: {}",
            " ".repeat(key_indent),
            policy.min_events
        );
        match find_key(lines, item_start, item_end, key_indent, "min_events") {
            Some(at) => edits.push(Edit {
                start: at,
                end: at + 1,
                lines: vec![with_comment(line, lines[at])],
            }),
            None => edits.push(Edit {
                start: name_line + 1,
                end: name_line + 1,
                lines: vec![line],
            }),
        }
    }
    let keys = |indent: usize| tier_keys(policy, Some(current), indent);
    let Some(alerting) = find_key(lines, item_start, item_end, key_indent, "alerting") else {
        let pad = " ".repeat(key_indent);
        let mut new = vec![format!("{pad}alerting:"), format!("{pad}  {kind}:")];
        new.extend(keys(key_indent + 4));
        edits.push(Edit {
            start: item_end,
            end: item_end,
            lines: new,
        });
        return Ok(edits);
    };
    let alerting_end = block_end(lines, alerting, item_end, key_indent);
    let tier_indent = child_indent(lines, alerting, alerting_end, key_indent + 2);
    let Some(tier_line) = find_key(
        lines,
        alerting + 1,
        alerting_end,
        tier_indent,
        kind.as_str(),
    ) else {
        let mut new = vec![format!("{}{kind}:", " ".repeat(tier_indent))];
        new.extend(keys(tier_indent + 2));
        edits.push(Edit {
            start: alerting_end,
            end: alerting_end,
            lines: new,
        });
        return Ok(edits);
    };
    let value = lines[tier_line]
        .split_once(':')
        .map_or("", |(_, value)| value)
        .trim();
    if value.starts_with('{') {
        return flow_tier_edit(lines, tier_line, kind, policy, current).map(|edit| {
            edits.push(edit);
            edits
        });
    }
    if !(value.is_empty() || value.starts_with('#')) {
        return Err(format!(
            "alerting.{kind} is neither a block nor a flow mapping"
        ));
    }
    let tier_end = block_end(lines, tier_line, alerting_end, tier_indent);
    let inner = child_indent(lines, tier_line, tier_end, tier_indent + 2);
    let new_keys = keys(inner);
    // Drop the keys written anew, with their blocks.
    let mut index = tier_line + 1;
    while index < tier_end {
        let replaced = ["windows", "for", "resolve_timeout"]
            .into_iter()
            .filter(|key| {
                new_keys
                    .iter()
                    .any(|line| line.trim_start().starts_with(&format!("{key}:")))
            })
            .any(|key| find_key(lines, index, index + 1, inner, key).is_some());
        if replaced {
            let end = block_end(lines, index, tier_end, inner);
            edits.push(Edit {
                start: index,
                end,
                lines: Vec::new(),
            });
            index = end;
        } else {
            index += 1;
        }
    }
    edits.push(Edit {
        start: tier_line + 1,
        end: tier_line + 1,
        lines: new_keys,
    });
    edits.sort_by_key(|edit| (edit.start, edit.end));
    Ok(merge_adjacent(edits))
}

/// Edits touching or inserting at the same place, made one.
fn merge_adjacent(edits: Vec<Edit>) -> Vec<Edit> {
    let mut merged: Vec<Edit> = Vec::new();
    for edit in edits {
        match merged.last_mut() {
            Some(last) if last.end == edit.start => {
                last.end = edit.end;
                last.lines.extend(edit.lines);
            }
            _ => merged.push(edit),
        }
    }
    merged
}

/// `page: {labels: {...}}` becomes `page: {windows: [...], for: 2m, labels: {...}}`.
fn flow_tier_edit(
    lines: &[&str],
    tier_line: usize,
    kind: TierKind,
    policy: &Policy,
    current: &Policy,
) -> Result<Edit, String> {
    let line = lines[tier_line];
    let open = line.find('{').ok_or("no flow mapping")?;
    let inner = &line[open + 1..];
    for key in ["windows", "for", "resolve_timeout"] {
        if inner.contains(&format!("{key}:")) {
            return Err(format!(
                "alerting.{kind} sets {key} in a flow mapping; write the tier as a block to apply this change"
            ));
        }
    }
    let mut keys = Vec::new();
    if policy.pairs != current.pairs {
        let pairs: Vec<String> = policy
            .pairs
            .iter()
            .map(|pair| {
                format!(
                    "{{long: {}, short: {}, factor: {}}}",
                    format_duration(pair.long),
                    format_duration(pair.short),
                    pair.factor
                )
            })
            .collect();
        keys.push(format!("windows: [{}]", pairs.join(", ")));
    }
    if policy.timing.for_ != current.timing.for_ {
        keys.push(format!("for: {}", format_duration(policy.timing.for_)));
    }
    if policy.timing.resolve_timeout != current.timing.resolve_timeout {
        keys.push(format!(
            "resolve_timeout: {}",
            format_duration(policy.timing.resolve_timeout)
        ));
    }
    let rest = inner.trim_start();
    let separator = if rest.starts_with('}') { "" } else { ", " };
    Ok(Edit {
        start: tier_line,
        end: tier_line + 1,
        lines: vec![format!(
            "{}{{{}{separator}{rest}",
            &line[..open],
            keys.join(", ")
        )],
    })
}

/// `line`, keeping the comment at the end of `old` (`  # ...`).
fn with_comment(line: String, old: &str) -> String {
    match old.find(" #") {
        Some(at) => format!("{line} {}", old[at..].trim_start()),
        None => line,
    }
}

const CONTEXT: usize = 3;

/// A unified diff of `lines` with `edits` applied (sorted, not overlapping).
pub fn unified(file: &str, lines: &[&str], edits: &[Edit]) -> String {
    let mut out = format!("--- a/{file}\n+++ b/{file}\n");
    let mut groups: Vec<Vec<&Edit>> = Vec::new();
    for edit in edits {
        match groups.last_mut() {
            Some(group) if edit.start <= group[group.len() - 1].end + 2 * CONTEXT => {
                group.push(edit)
            }
            _ => groups.push(vec![edit]),
        }
    }
    let mut shift: isize = 0;
    for group in groups {
        let first = group[0].start.saturating_sub(CONTEXT);
        let last = (group[group.len() - 1].end + CONTEXT).min(lines.len());
        let mut body = String::new();
        let mut at = first;
        let (mut old_count, mut new_count) = (0, 0);
        for edit in &group {
            for line in &lines[at..edit.start] {
                let _ = writeln!(body, " {line}");
            }
            old_count += edit.start - at + (edit.end - edit.start);
            new_count += edit.start - at + edit.lines.len();
            for line in &lines[edit.start..edit.end] {
                let _ = writeln!(body, "-{line}");
            }
            for line in &edit.lines {
                let _ = writeln!(body, "+{line}");
            }
            at = edit.end;
        }
        for line in &lines[at..last] {
            let _ = writeln!(body, " {line}");
        }
        old_count += last - at;
        new_count += last - at;
        let old_start = if old_count == 0 { first } else { first + 1 };
        let new_start = (first as isize + shift) as usize + usize::from(new_count > 0);
        let _ = writeln!(
            out,
            "@@ -{old_start},{old_count} +{new_start},{new_count} @@"
        );
        out.push_str(&body);
        shift += new_count as isize - old_count as isize;
    }
    out
}

/// `lines` with `edits` applied (sorted, not overlapping), as text.
pub fn apply(lines: &[&str], edits: &[Edit]) -> String {
    let mut out = String::new();
    let mut at = 0;
    for edit in edits {
        for line in &lines[at..edit.start] {
            out.push_str(line);
            out.push('\n');
        }
        for line in &edit.lines {
            out.push_str(line);
            out.push('\n');
        }
        at = edit.end;
    }
    for line in &lines[at..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Document, load_str};
    use crate::slo::Timing;
    use std::path::Path;
    use std::time::Duration;

    fn slos(text: &str) -> Vec<Slo> {
        match load_str("rules/order-service.yaml", text, Path::new(".")) {
            Ok(Document::Slos(slos)) => slos,
            other => panic!("{other:?}"),
        }
    }

    fn changed(policy: &Policy) -> Policy {
        let mut new = policy.clone();
        new.pairs.truncate(1);
        new.pairs[0].factor *= 2.0;
        new.timing.for_ = Duration::from_secs(120);
        new.min_events = 50.0;
        new
    }

    /// The shipped spec, edited for every tier of both SLOs in turn (tiers in a block with a
    /// comment, tiers with a flow mapping under them, keys shared at the alerting level): the
    /// file loads again and holds the new policy, everything else as it was.
    #[test]
    fn edits_give_the_tier_its_new_policy() {
        let text = include_str!("../../rules/order-service.yaml");
        let lines: Vec<&str> = text.lines().collect();
        let before = slos(text);
        for (index, slo) in before.iter().enumerate() {
            for tier in &slo.tiers {
                let current = Policy::current(slo, tier);
                let policy = changed(&current);
                let edits = native_edits(&lines, slo, tier.kind, &policy, &current).unwrap();
                let after = slos(&apply(&lines, &edits));
                assert_eq!(
                    after[index],
                    Slo {
                        origin: after[index].origin.clone(),
                        ..policy.apply(slo, tier.kind)
                    },
                    "{}",
                    apply(&lines, &edits)
                );
                let other = Slo {
                    origin: before[1 - index].origin.clone(),
                    ..after[1 - index].clone()
                };
                assert_eq!(other, before[1 - index], "the other SLO is untouched");
            }
        }
    }

    #[test]
    fn flow_tiers_and_absent_alerting_are_written_too() {
        let text = "version: burnwatch/v1
service: s
slos:
  - name: a
    objective: 99
    sli:
      ratio: {errors: e_total, total: t_total}
    alerting:
      page: {labels: {channel: \"#x\"}}
  - name: b
    objective: 99
    sli:
      ratio: {errors: e_total, total: t_total}
";
        let lines: Vec<&str> = text.lines().collect();
        let before = slos(text);
        for slo in &before {
            let tier = slo.tier(TierKind::Page).unwrap();
            let current = Policy::current(slo, tier);
            let policy = Policy {
                timing: Timing {
                    resolve_timeout: Duration::from_secs(900),
                    ..current.timing
                },
                ..changed(&current)
            };
            let edits = native_edits(&lines, slo, TierKind::Page, &policy, &current).unwrap();
            let after = slos(&apply(&lines, &edits));
            let found = after.iter().find(|s| s.id == slo.id).unwrap();
            assert_eq!(found.tier(TierKind::Page).unwrap().windows, policy.pairs);
            assert_eq!(found.tier(TierKind::Page).unwrap().timing, policy.timing);
            assert_eq!(found.min_events, 50.0);
        }
    }

    #[test]
    fn hunks_count_their_lines() {
        let lines: Vec<String> = (1..=20).map(|n| format!("line {n}")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let edits = [
            Edit {
                start: 4,
                end: 5,
                lines: vec!["five".to_string(), "five and a half".to_string()],
            },
            Edit {
                start: 15,
                end: 15,
                lines: vec!["new".to_string()],
            },
        ];
        let diff = unified("f.yaml", &lines, &edits);
        assert_eq!(
            diff,
            "--- a/f.yaml\n+++ b/f.yaml\n@@ -2,7 +2,8 @@\n line 2\n line 3\n line 4\n-line 5\n+five\n+five and a half\n line 6\n line 7\n line 8\n@@ -13,6 +14,7 @@\n line 13\n line 14\n line 15\n+new\n line 16\n line 17\n line 18\n"
        );
    }

    #[test]
    fn sloth_files_get_a_note_and_the_native_equivalent() {
        let text = "version: \"prometheus/v1\"
service: s
slos:
  - name: a
    objective: 99
    sli:
      events:
        error_query: sum(rate(e_total[{{.window}}]))
        total_query: sum(rate(t_total[{{.window}}]))
    alerting:
      page_alert: {labels: {severity: page}}
";
        let slo = match load_str("sloth.yaml", text, Path::new(".")) {
            Ok(Document::Slos(mut slos)) => slos.remove(0),
            other => panic!("{other:?}"),
        };
        let tier = slo.tier(TierKind::Page).unwrap();
        let current = Policy::current(&slo, tier);
        let summary = crate::tune::Summary::of(&[], 1);
        let sweep = TierSweep {
            slo_id: slo.id.clone(),
            kind: TierKind::Page,
            instances: 1,
            candidates: [current.clone(), changed(&current)]
                .into_iter()
                .map(|policy| crate::tune::Candidate {
                    policy,
                    summary: summary.clone(),
                })
                .collect(),
            front: vec![1],
            recommended: 1,
        };
        let change = file_change("sloth.yaml", text, &[(&slo, &sweep)]);
        assert_eq!(change.diff, None);
        assert_eq!(change.notes.len(), 1);
        let note = &change.notes[0];
        assert!(
            note.contains("Sloth prometheus/v1 cannot express the page change for s-a"),
            "{note}"
        );
        assert!(
            note.ends_with(
                "min_events: 50\nalerting:\n  page:\n    windows:\n      - {long: 1h, short: 5m, factor: 28.8}\n    for: 2m\n    resolve_timeout: 5m"
            ),
            "{note}"
        );
    }
}
