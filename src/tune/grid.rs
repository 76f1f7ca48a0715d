//! Pure: the candidate policies a sweep tries for one tier, from a grid (the default, or a
//! small YAML file) and the tier as the spec has it.
//!
//! A candidate is a whole tier policy: window pairs with their factors, `for`,
//! `resolve_timeout` and the SLO's `min_events`. The current policy is always candidate 0.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::slo::{Slo, Tier, TierKind, Timing, WindowPair, default_windows, parse_duration};

/// One tier's policy, as the sweep varies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Fastest first, as in a tier.
    pub pairs: Vec<WindowPair>,
    pub timing: Timing,
    pub min_events: f64,
}

impl Policy {
    /// The policy `slo` has for `tier`.
    pub fn current(slo: &Slo, tier: &Tier) -> Policy {
        Policy {
            pairs: tier.windows.clone(),
            timing: tier.timing,
            min_events: slo.min_events,
        }
    }

    /// How far this policy is from `other`: one per setting that differs (the set of window
    /// pairs, `for`, `resolve_timeout`, `min_events`), plus, for the same pairs, how far the
    /// factors are apart (the sum of |ln(factor ÷ other's)|).
    pub fn distance(&self, other: &Policy) -> f64 {
        let same_windows = self.pairs.len() == other.pairs.len()
            && self
                .pairs
                .iter()
                .zip(&other.pairs)
                .all(|(a, b)| a.long == b.long && a.short == b.short);
        let factors: f64 = if same_windows {
            self.pairs
                .iter()
                .zip(&other.pairs)
                .map(|(a, b)| (a.factor / b.factor).ln().abs())
                .sum()
        } else {
            1.0
        };
        let differs = |differ: bool| f64::from(u8::from(differ));
        factors
            + differs(self.timing.for_ != other.timing.for_)
            + differs(self.timing.resolve_timeout != other.timing.resolve_timeout)
            + differs(self.min_events != other.min_events)
    }

    /// `slo` with this policy for the tier `kind` (the other tier as it is).
    pub fn apply(&self, slo: &Slo, kind: TierKind) -> Slo {
        let mut slo = slo.clone();
        slo.min_events = self.min_events;
        for tier in slo.tiers.iter_mut().filter(|tier| tier.kind == kind) {
            tier.windows = self.pairs.clone();
            tier.timing.for_ = self.timing.for_;
            tier.timing.resolve_timeout = self.timing.resolve_timeout;
        }
        slo
    }
}

/// What a sweep varies for one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct TierGrid {
    /// Sets of window pairs (long, short) tried, each a tier's whole list of pairs.
    pub pairs: Vec<Vec<(Duration, Duration)>>,
    /// Multipliers of each pair's base factor.
    pub scales: Vec<f64>,
    pub for_: Vec<Duration>,
    pub resolve_timeout: Vec<Duration>,
    /// Empty: the SLO's own only.
    pub min_events: Vec<f64>,
}

/// The grid of both tiers.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub page: TierGrid,
    pub ticket: TierGrid,
}

const MINUTE: u64 = 60;

fn minutes(values: &[u64]) -> Vec<Duration> {
    values
        .iter()
        .map(|&m| Duration::from_secs(m * MINUTE))
        .collect()
}

impl TierGrid {
    /// The Workbook's pairs for the tier, alone and together; factors ×0.5 to ×2.
    pub fn default_for(kind: TierKind) -> TierGrid {
        let pairs: Vec<(Duration, Duration)> = default_windows(kind)
            .iter()
            .map(|&(long, short, _)| (long, short))
            .collect();
        let (for_, resolve_timeout) = match kind {
            TierKind::Page => (minutes(&[0, 2, 5, 10]), minutes(&[5, 15])),
            TierKind::Ticket => (minutes(&[0, 30, 60, 120]), minutes(&[15, 60])),
        };
        TierGrid {
            pairs: vec![vec![pairs[0]], vec![pairs[1]], pairs],
            scales: vec![0.5, 0.75, 1.0, 1.5, 2.0],
            for_,
            resolve_timeout,
            min_events: Vec::new(),
        }
    }

    /// Every candidate for `tier` of `slo`, the current policy first, without repeats. Pairs
    /// whose long window exceeds the period are left out.
    pub fn candidates(&self, slo: &Slo, tier: &Tier) -> Vec<Policy> {
        let current = Policy::current(slo, tier);
        let mut sets: Vec<Vec<WindowPair>> = vec![current.pairs.clone()];
        let mut bases: Vec<Vec<WindowPair>> = vec![current.pairs.clone()];
        for set in &self.pairs {
            let base: Vec<WindowPair> = set
                .iter()
                .filter(|(long, _)| *long <= slo.period)
                .map(|&(long, short)| WindowPair {
                    long,
                    short,
                    factor: base_factor(slo, tier, long, short),
                })
                .collect();
            if !base.is_empty() && !bases.contains(&base) {
                bases.push(base);
            }
        }
        for base in &bases {
            for &scale in &self.scales {
                let set: Vec<WindowPair> = base
                    .iter()
                    .map(|pair| WindowPair {
                        factor: round_factor(pair.factor * scale),
                        ..*pair
                    })
                    .collect();
                if !sets.contains(&set) {
                    sets.push(set);
                }
            }
        }
        let with_current = |values: &[Duration], own: Duration| -> Vec<Duration> {
            let mut all = vec![own];
            all.extend(values.iter().filter(|value| **value != own));
            all
        };
        let fors = with_current(&self.for_, current.timing.for_);
        let resolves = with_current(&self.resolve_timeout, current.timing.resolve_timeout);
        let mut min_events = vec![current.min_events];
        min_events.extend(self.min_events.iter().filter(|m| **m != current.min_events));
        let mut candidates = vec![current.clone()];
        for pairs in &sets {
            for &for_ in &fors {
                for &resolve_timeout in &resolves {
                    for &min_events in &min_events {
                        let policy = Policy {
                            pairs: pairs.clone(),
                            timing: Timing {
                                for_,
                                resolve_timeout,
                                ..current.timing
                            },
                            min_events,
                        };
                        if !candidates.contains(&policy) {
                            candidates.push(policy);
                        }
                    }
                }
            }
        }
        candidates
    }
}

/// The factor a pair starts from: the tier's own for a pair it has, else the Workbook's budget
/// share for its pairs (2% and 5% for pages, 10% for tickets), else 2% (page) or 10% (ticket)
/// of the period's budget in the long window.
fn base_factor(slo: &Slo, tier: &Tier, long: Duration, short: Duration) -> f64 {
    if let Some(own) = tier
        .windows
        .iter()
        .find(|pair| pair.long == long && pair.short == short)
    {
        return own.factor;
    }
    let share = default_windows(tier.kind)
        .iter()
        .find(|(l, s, _)| *l == long && *s == short)
        .map(|(_, _, share)| *share)
        .unwrap_or(match tier.kind {
            TierKind::Page => 2.0,
            TierKind::Ticket => 10.0,
        });
    round_factor(WindowPair::factor_for_budget(share, slo.period, long))
}

/// Three decimals, so factors print as people write them (14.4, not 14.399999999999999).
fn round_factor(factor: f64) -> f64 {
    (factor * 1000.0).round() / 1000.0
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTierGrid {
    pairs: Option<Vec<Vec<String>>>,
    scales: Option<Vec<f64>>,
    #[serde(rename = "for")]
    for_: Option<Vec<String>>,
    resolve_timeout: Option<Vec<String>>,
    min_events: Option<Vec<f64>>,
}

impl Grid {
    pub fn default_grid() -> Grid {
        Grid {
            page: TierGrid::default_for(TierKind::Page),
            ticket: TierGrid::default_for(TierKind::Ticket),
        }
    }

    pub fn get(&self, kind: TierKind) -> &TierGrid {
        match kind {
            TierKind::Page => &self.page,
            TierKind::Ticket => &self.ticket,
        }
    }

    /// A grid file: per tier (`page`, `ticket`), any of `pairs` (lists of `long/short`),
    /// `scales`, `for`, `resolve_timeout`, `min_events`; what a file leaves out keeps the
    /// default.
    pub fn parse(name: &str, text: &str) -> Result<Grid, String> {
        let raw: BTreeMap<String, RawTierGrid> = if text.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_saphyr::from_str(text).map_err(|error| format!("{name}: {error}"))?
        };
        let mut grid = Grid::default_grid();
        for (tier, raw) in raw {
            let target = match tier.as_str() {
                "page" => &mut grid.page,
                "ticket" => &mut grid.ticket,
                other => return Err(format!("{name}: {other:?} is not a tier (page or ticket)")),
            };
            merge(target, raw).map_err(|error| format!("{name}: {tier}: {error}"))?;
        }
        Ok(grid)
    }
}

fn durations(values: &[String]) -> Result<Vec<Duration>, String> {
    values.iter().map(|value| parse_duration(value)).collect()
}

fn merge(grid: &mut TierGrid, raw: RawTierGrid) -> Result<(), String> {
    if let Some(sets) = raw.pairs {
        grid.pairs = sets
            .iter()
            .map(|set| set.iter().map(|pair| parse_pair(pair)).collect())
            .collect::<Result<_, String>>()?;
    }
    if let Some(scales) = raw.scales {
        if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("scale {bad} must be a positive number"));
        }
        grid.scales = scales;
    }
    if let Some(values) = raw.for_ {
        grid.for_ = durations(&values)?;
    }
    if let Some(values) = raw.resolve_timeout {
        grid.resolve_timeout = durations(&values)?;
    }
    if let Some(values) = raw.min_events {
        if let Some(bad) = values.iter().find(|m| !(m.is_finite() && **m >= 0.0)) {
            return Err(format!("min_events {bad} must be 0 or more"));
        }
        grid.min_events = values;
    }
    Ok(())
}

/// `1h/5m`: a long window and a shorter one.
fn parse_pair(text: &str) -> Result<(Duration, Duration), String> {
    let (long, short) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a window pair long/short, as 1h/5m"))?;
    let pair = WindowPair::new(parse_duration(long)?, parse_duration(short)?, 1.0)?;
    Ok((pair.long, pair.short))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600;

    #[test]
    fn grid_files_override_what_they_name() {
        let grid = Grid::parse(
            "grid.yaml",
            "page:\n  pairs: [[2h/10m]]\n  for: [0s, 1m]\nticket:\n  scales: [1]\n",
        )
        .unwrap();
        assert_eq!(
            grid.page.pairs,
            vec![vec![(
                Duration::from_secs(2 * HOUR),
                Duration::from_secs(600)
            )]]
        );
        assert_eq!(grid.page.for_, minutes(&[0, 1]));
        assert_eq!(
            grid.page.scales,
            TierGrid::default_for(TierKind::Page).scales
        );
        assert_eq!(grid.ticket.scales, vec![1.0]);
        assert!(Grid::parse("g", "warn: {}\n").is_err());
        assert!(Grid::parse("g", "page: {pairs: [[5m/1h]]}\n").is_err());
        assert!(Grid::parse("g", "page: {scales: [0]}\n").is_err());
    }
}
