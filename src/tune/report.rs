//! A sweep for people (text) and tools (JSON).
//!
//! JSON shape (stable, documented in README.md): `{"from","to","step","tiers":[{"slo","tier",
//! "instances","candidates","current":POINT,"current_on_front","recommended":POINT,
//! "changes","front":[POINT]}],"changes":[{"file","diff","notes"}],"timings":{...}}`, a POINT
//! being `{"policy":{"windows":[{"long","short","factor"}],"for","resolve_timeout",
//! "min_events"},"recall","precision","alerts_per_week","detection_seconds":{"median","max"},
//! "fired","events","detected"}`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::diff::SpecChange;
use super::{Candidate, Sweep, TierSweep, Timings};
use crate::replay::{format_time, number};
use crate::slo::format_duration;

/// `14.4x 1h/5m + 6x 6h/30m, for 0s, resolve_timeout 5m, min_events 100`.
pub fn describe(policy: &super::Policy) -> String {
    let pairs: Vec<String> = policy
        .pairs
        .iter()
        .map(|pair| {
            format!(
                "{}x {}/{}",
                pair.factor,
                format_duration(pair.long),
                format_duration(pair.short)
            )
        })
        .collect();
    format!(
        "{}, for {}, resolve_timeout {}, min_events {}",
        pairs.join(" + "),
        format_duration(policy.timing.for_),
        format_duration(policy.timing.resolve_timeout),
        policy.min_events
    )
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0))
}

fn minutes(candidate: &Candidate) -> String {
    candidate
        .summary
        .detection
        .map_or("-".to_string(), |stats| {
            format_duration(std::time::Duration::from_millis(stats.median as u64))
        })
}

fn row(candidate: &Candidate, mark: &str) -> String {
    let summary = &candidate.summary;
    format!(
        "  {mark:<3}{:>7} {:>9} {:>10.2} {:>10}  {}",
        percent(summary.recall),
        percent(summary.precision),
        summary.alerts_per_week,
        minutes(candidate),
        describe(&candidate.policy)
    )
}

fn tier_text(out: &mut String, tier: &TierSweep) {
    let current = tier.current();
    let _ = writeln!(
        out,
        "\n{} {}: {} instances, {} significant events, {} candidates",
        tier.slo_id,
        tier.kind,
        tier.instances,
        current.summary.events,
        tier.candidates.len()
    );
    let _ = writeln!(
        out,
        "  Pareto front (recall up, alerts/week down, median detection down); * current, > recommended"
    );
    let _ = writeln!(
        out,
        "  {:<3}{:>7} {:>9} {:>10} {:>10}  policy",
        "", "recall", "precision", "alerts/wk", "detection"
    );
    for &index in &tier.front {
        let mark = match (index == TierSweep::CURRENT, index == tier.recommended) {
            (true, true) => "*>",
            (true, false) => "*",
            (false, true) => ">",
            (false, false) => "",
        };
        let _ = writeln!(out, "{}", row(&tier.candidates[index], mark));
    }
    if !tier.front.contains(&TierSweep::CURRENT) {
        let _ = writeln!(out, "  current policy, not on the front:");
        let _ = writeln!(out, "{}", row(current, "*"));
    }
    if tier.changes() {
        let _ = writeln!(
            out,
            "  recommended: {}",
            describe(&tier.recommendation().policy)
        );
    } else if current.summary.events == 0 {
        let _ = writeln!(
            out,
            "  recommended: keep the current policy (no significant event in the range to tune against)"
        );
    } else {
        let _ = writeln!(out, "  recommended: keep the current policy");
    }
}

/// The text report: per tier, the front and the recommendation; then the spec changes.
pub fn to_text(sweep: &Sweep, changes: &[SpecChange], timings: bool) -> String {
    let range = sweep.range;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tune {} .. {} every {}: {} SLO instances, {} candidate policies",
        format_time(range.from),
        format_time(range.to),
        format_duration(range.step),
        sweep.timings.instances,
        sweep.timings.policies
    );
    let _ = writeln!(
        out,
        "recommendation: on the front, precision at least the current's; the highest recall, then the fewest alerts/week, then the fastest median detection"
    );
    for skipped in &sweep.skipped {
        let _ = writeln!(out, "skipped {}: {}", skipped.slo_id, skipped.reason);
    }
    for tier in &sweep.tiers {
        tier_text(&mut out, tier);
    }
    if changes.is_empty() {
        let _ = writeln!(out, "\nno change to the specs recommended");
    }
    for change in changes {
        let _ = writeln!(out, "\nrecommended change to {}:", change.file);
        for note in &change.notes {
            let _ = writeln!(out, "{note}");
        }
        if let Some(diff) = &change.diff {
            out.push_str(diff);
        }
    }
    if timings {
        out.push_str(&timings_text(&sweep.timings, range.to - range.from));
    }
    out
}

/// The sweep's cost: precompute, candidates, per candidate and per SLO-day.
pub fn timings_text(timings: &Timings, span: i64) -> String {
    let days = span as f64 / 86_400_000.0;
    let seconds = timings.candidates.as_secs_f64();
    let per_pass = seconds * 1000.0 / timings.passes.max(1) as f64;
    format!(
        "\ntimings: precompute {:.3} s ({} instances x {} steps, {:.1} SLO-days); \
         {} candidate policies, {} passes (policy x instance) in {:.3} s: \
         {:.3} ms per candidate policy, {:.3} ms per pass, {:.4} ms per candidate per SLO-day\n",
        timings.precompute.as_secs_f64(),
        timings.instances,
        timings.steps,
        days * timings.instances as f64,
        timings.policies,
        timings.passes,
        seconds,
        seconds * 1000.0 / timings.policies.max(1) as f64,
        per_pass,
        per_pass / days.max(f64::MIN_POSITIVE),
    )
}

fn point(candidate: &Candidate) -> Value {
    let summary = &candidate.summary;
    let policy = &candidate.policy;
    json!({
        "policy": {
            "windows": policy.pairs.iter().map(|pair| json!({
                "long": format_duration(pair.long),
                "short": format_duration(pair.short),
                "factor": number(pair.factor),
            })).collect::<Vec<_>>(),
            "for": format_duration(policy.timing.for_),
            "resolve_timeout": format_duration(policy.timing.resolve_timeout),
            "min_events": number(policy.min_events),
        },
        "recall": summary.recall.map_or(Value::Null, number),
        "precision": summary.precision.map_or(Value::Null, number),
        "alerts_per_week": number(summary.alerts_per_week),
        "detection_seconds": summary.detection.map_or(Value::Null, |stats| json!({
            "median": number(stats.median / 1000.0),
            "max": number(stats.max / 1000.0),
        })),
        "fired": summary.fired,
        "events": summary.events,
        "detected": summary.detected,
    })
}

/// The stable JSON form of a sweep.
pub fn to_json(sweep: &Sweep, changes: &[SpecChange]) -> Value {
    let tiers: Vec<Value> = sweep
        .tiers
        .iter()
        .map(|tier| {
            json!({
                "slo": tier.slo_id,
                "tier": tier.kind.as_str(),
                "instances": tier.instances,
                "candidates": tier.candidates.len(),
                "current": point(tier.current()),
                "current_on_front": tier.front.contains(&TierSweep::CURRENT),
                "recommended": point(tier.recommendation()),
                "changes": tier.changes(),
                "front": tier.front.iter().map(|&i| point(&tier.candidates[i])).collect::<Vec<_>>(),
            })
        })
        .collect();
    let timings = &sweep.timings;
    json!({
        "from": format_time(sweep.range.from),
        "to": format_time(sweep.range.to),
        "step": format_duration(sweep.range.step),
        "tiers": tiers,
        "changes": changes.iter().map(|change| json!({
            "file": change.file,
            "diff": change.diff,
            "notes": change.notes,
        })).collect::<Vec<_>>(),
        "timings": {
            "precompute_seconds": number(timings.precompute.as_secs_f64()),
            "candidates_seconds": number(timings.candidates.as_secs_f64()),
            "policies": timings.policies,
            "passes": timings.passes,
            "instances": timings.instances,
            "steps": timings.steps,
        },
    })
}
