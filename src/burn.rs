//! Pure: window values → burn rates → a tier's verdict.
//!
//! burn rate = error ratio / (1 − objective). A window pair burns when both its long and its
//! short window burn faster than the pair's factor; a tier burns when any of its pairs does.
//! As in Sloth's rules, a window without samples, at 0/0 or at NaN never burns (NaN > factor
//! is false). What a pair that does not burn says depends on why:
//!
//! - a window without samples, or whose samples are unusable (a NaN counter sample makes its
//!   ratio NaN while it counted events): **no data**;
//! - a window that counted no events (0/0: the traffic stopped, or a counter stood still):
//!   **no traffic**, which is not a recovery (it ends a firing alert as "no data" would, on
//!   the clock Prometheus's rules keep);
//! - a long window with fewer than `min_events` events: **insufficient data**;
//! - otherwise **ok**.
//!
//! A tier burns when any pair burns; else it takes the first of insufficient data, ok, no
//! traffic and no data that one of its pairs says.

use std::time::Duration;

use crate::slo::{Objective, Tier, WindowPair};

/// Events counted over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowValue {
    pub bad: f64,
    pub total: f64,
    /// bad / total; NaN when total is 0 (0/0: no traffic, which never burns).
    pub error_ratio: f64,
}

impl WindowValue {
    pub fn new(bad: f64, total: f64) -> WindowValue {
        WindowValue {
            bad,
            total,
            error_ratio: bad / total,
        }
    }

    pub fn burn_rate(&self, objective: Objective) -> f64 {
        self.error_ratio / objective.error_budget()
    }

    /// Whether the window counted events at all, and could read them.
    fn events(&self) -> Events {
        if self.total == 0.0 {
            Events::None
        } else if self.error_ratio.is_nan() {
            // Events counted (or not known) but the ratio is NaN: a NaN sample in a counter,
            // or an SLI without a total whose ratio is NaN, which cannot say which it is.
            Events::Unreadable
        } else {
            Events::Counted
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Events {
    Counted,
    None,
    Unreadable,
}

/// What one window pair says at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairReading {
    pub pair: WindowPair,
    pub long: Option<WindowValue>,
    pub short: Option<WindowValue>,
    pub burn_long: f64,
    pub burn_short: f64,
    pub verdict: Verdict,
}

impl PairReading {
    /// A pair not read at this evaluation (its alert ended for a reason other than data).
    pub fn unread(pair: WindowPair) -> PairReading {
        PairReading {
            pair,
            long: None,
            short: None,
            burn_long: f64::NAN,
            burn_short: f64::NAN,
            verdict: Verdict::NoData,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Burning,
    Ok,
    /// Fewer than `min_events` in the long window: too little traffic to judge; reported,
    /// never paged on, not burning.
    InsufficientData,
    /// A window of the pair counted no events (0/0: the traffic stopped, a counter stood
    /// still). Not burning, as in Sloth's rules (a firing alert's resolve clock runs, a
    /// pending one is dropped), but not a recovery either: an alert that ends on it ends as
    /// "no data" (`end_reason: no_data`), never "Recovered".
    NoTraffic,
    /// A window of the pair has no samples at all, or unusable ones (a NaN counter sample);
    /// for a tier, every pair: the source cannot see the series (it vanished, a scrape gap,
    /// Prometheus's own hole after an outage). Holds a firing alert for `resolve_timeout`,
    /// then ends it; drops a pending one.
    NoData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Burning => "burning",
            Verdict::Ok => "ok",
            Verdict::InsufficientData => "insufficient_data",
            Verdict::NoTraffic => "no_traffic",
            Verdict::NoData => "no_data",
        }
    }
}

pub fn read_pair(
    pair: WindowPair,
    objective: Objective,
    min_events: f64,
    measure: &mut impl FnMut(Duration) -> Option<WindowValue>,
) -> PairReading {
    let long = measure(pair.long);
    let short = measure(pair.short);
    let burn_long = long.map_or(f64::NAN, |value| value.burn_rate(objective));
    let burn_short = short.map_or(f64::NAN, |value| value.burn_rate(objective));
    let verdict = match (long, short) {
        (None, _) => Verdict::NoData,
        (Some(long), _) if long.events() == Events::Unreadable => Verdict::NoData,
        (Some(long), _) if long.events() == Events::None => Verdict::NoTraffic,
        (Some(long), _) if long.total < min_events => Verdict::InsufficientData,
        // A short window without samples (a scrape gap, the hole after a Prometheus outage)
        // or with unusable ones cannot say whether the burn goes on.
        (_, None) => Verdict::NoData,
        (_, Some(short)) if short.events() == Events::Unreadable => Verdict::NoData,
        // Traffic stopped (or a counter stood still): nothing says the burn is over.
        (_, Some(short)) if short.events() == Events::None => Verdict::NoTraffic,
        // Compared as Sloth's alert rules do: error ratio > factor × (1 − objective).
        _ if is_above(long, pair.factor, objective) && is_above(short, pair.factor, objective) => {
            Verdict::Burning
        }
        _ => Verdict::Ok,
    };
    PairReading {
        pair,
        long,
        short,
        burn_long,
        burn_short,
        verdict,
    }
}

fn is_above(value: Option<WindowValue>, factor: f64, objective: Objective) -> bool {
    value.is_some_and(|value| factor * objective.error_budget() < value.error_ratio)
}

/// A tier's verdict and the readings of all its pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct TierReading {
    pub verdict: Verdict,
    pub pairs: Vec<PairReading>,
}

impl TierReading {
    /// The pair that speaks for the tier: the first burning pair, else the first pair.
    pub fn leading_pair(&self) -> &PairReading {
        self.pairs
            .iter()
            .find(|reading| reading.verdict == Verdict::Burning)
            .unwrap_or(&self.pairs[0])
    }

    pub fn pair(&self, pair: WindowPair) -> Option<&PairReading> {
        self.pairs.iter().find(|reading| reading.pair == pair)
    }
}

/// Burning if any pair burns; else insufficient data if a pair has too few events to judge;
/// else ok if a pair is ok (the others having no traffic or no data); else no traffic if a
/// pair has none; else (every pair) no data.
pub fn read_tier(
    tier: &Tier,
    objective: Objective,
    min_events: f64,
    measure: &mut impl FnMut(Duration) -> Option<WindowValue>,
) -> TierReading {
    let pairs: Vec<PairReading> = tier
        .windows
        .iter()
        .map(|&pair| read_pair(pair, objective, min_events, measure))
        .collect();
    let any = |verdict| pairs.iter().any(|reading| reading.verdict == verdict);
    let verdict = if any(Verdict::Burning) {
        Verdict::Burning
    } else if any(Verdict::InsufficientData) {
        Verdict::InsufficientData
    } else if any(Verdict::Ok) {
        Verdict::Ok
    } else if any(Verdict::NoTraffic) {
        Verdict::NoTraffic
    } else {
        Verdict::NoData
    };
    TierReading { verdict, pairs }
}

/// Share of the period's error budget left: 1 − period error ratio / budget (negative when
/// overspent).
pub fn budget_remaining(period: Option<WindowValue>, objective: Objective) -> f64 {
    period.map_or(f64::NAN, |value| {
        1.0 - value.error_ratio / objective.error_budget()
    })
}

/// Share of the period's error budget consumed by the events of `since` (a window ending now):
/// its bad events ÷ the bad events the period allows ((1 − objective) × the period's events).
/// Where the SLI has no event counts (a raw error ratio), the ratio over `since` times its share
/// of the period. Unlike a difference of budgets remaining, this does not shrink as old errors
/// slide out of the period window.
pub fn budget_spent(
    since: WindowValue,
    since_length: Duration,
    period: Option<WindowValue>,
    period_length: Duration,
    objective: Objective,
) -> Option<f64> {
    let budget = objective.error_budget();
    let by_events = period
        .map(|period| since.bad / (budget * period.total))
        .filter(|share| share.is_finite());
    let by_ratio = || {
        let share =
            since.error_ratio / budget * since_length.as_secs_f64() / period_length.as_secs_f64();
        share.is_finite().then_some(share)
    };
    by_events.or_else(by_ratio).map(|share| share.max(0.0))
}

/// Time until the remaining budget is spent at `burn_rate`, or `None` if it never is (or is
/// already spent).
pub fn time_to_exhaustion(
    budget_remaining: f64,
    burn_rate: f64,
    period: Duration,
) -> Option<Duration> {
    if 0.0 < budget_remaining && 0.0 < burn_rate && burn_rate.is_finite() {
        Duration::try_from_secs_f64(budget_remaining * period.as_secs_f64() / burn_rate).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::Timing;

    fn tier() -> Tier {
        Tier {
            kind: crate::slo::TierKind::Page,
            windows: vec![
                WindowPair::new(Duration::from_secs(3600), Duration::from_secs(300), 14.4).unwrap(),
                WindowPair::new(Duration::from_secs(21600), Duration::from_secs(1800), 6.0)
                    .unwrap(),
            ],
            timing: Timing::default(),
            labels: Default::default(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn tier_verdicts() {
        // Error ratios over (1h, 5m, 6h, 30m); `None` is a window without samples, NaN a
        // window without events (0/0), infinity a window whose errors counter read NaN.
        type Case = (&'static str, [Option<f64>; 4], f64, Verdict, u64);
        let cases: &[Case] = &[
            (
                "1.5% over 1h and 5m: burn 15 > 14.4 on the fast pair",
                [Some(0.015), Some(0.015), Some(0.001), Some(0.001)],
                1e4,
                Verdict::Burning,
                3600,
            ),
            (
                "long burns, short has recovered",
                [Some(0.015), Some(0.01), Some(0.001), Some(0.001)],
                1e4,
                Verdict::Ok,
                3600,
            ),
            (
                "just below the factor on the long window",
                [Some(0.01439), Some(0.02), Some(0.001), Some(0.001)],
                1e4,
                Verdict::Ok,
                3600,
            ),
            (
                "the slow pair trips",
                [Some(0.001), Some(0.001), Some(0.007), Some(0.007)],
                1e4,
                Verdict::Burning,
                21600,
            ),
            (
                "low traffic, even at 50%",
                [Some(0.5), Some(0.5), Some(0.5), Some(0.5)],
                50.0,
                Verdict::InsufficientData,
                3600,
            ),
            // Until issue 10 a window without samples or at 0/0 made its pair, and so the whole
            // tier, "no data", which held a firing alert. A window at 0/0 is no traffic (Sloth:
            // NaN > factor is false), and a pair without samples leaves the others to decide.
            (
                "a long window without samples: that pair has no data, the other is ok",
                [None, Some(0.0), Some(0.0), Some(0.0)],
                1e4,
                Verdict::Ok,
                3600,
            ),
            (
                "a long window at 0/0: that pair has no traffic, the other is ok",
                [Some(f64::NAN), Some(0.0), Some(0.0), Some(0.0)],
                1e4,
                Verdict::Ok,
                3600,
            ),
            (
                "a short window at 0/0 while its long window is fine: no traffic, no errors",
                [Some(0.001), Some(f64::NAN), Some(0.001), Some(0.001)],
                1e4,
                Verdict::Ok,
                3600,
            ),
            // Regression (hardening): traffic that stopped during a burn read as ok, and the
            // page resolved as "Recovered".
            (
                "short windows at 0/0 while a long window burns: no traffic, not ok",
                [Some(0.015), Some(f64::NAN), Some(0.001), Some(f64::NAN)],
                1e4,
                Verdict::NoTraffic,
                3600,
            ),
            (
                "low traffic on one pair, none on the other: too little to judge",
                [Some(0.015), Some(f64::NAN), Some(0.5), Some(0.5)],
                50.0,
                Verdict::InsufficientData,
                3600,
            ),
            (
                "a short window without samples: that pair has no data, the other is ok",
                [Some(0.015), None, Some(0.001), Some(0.001)],
                1e4,
                Verdict::Ok,
                3600,
            ),
            (
                "the other pair still burns",
                [Some(0.015), Some(f64::NAN), Some(0.007), Some(0.007)],
                1e4,
                Verdict::Burning,
                21600,
            ),
            (
                "every window at 0/0: no traffic",
                [Some(f64::NAN); 4],
                1e4,
                Verdict::NoTraffic,
                3600,
            ),
            // Regression (hardening): a NaN sample in the errors counter read as zero errors.
            (
                "a NaN error ratio over counted events: no data on that pair, the other is ok",
                [Some(0.015), Some(f64::INFINITY), Some(0.001), Some(0.001)],
                1e4,
                Verdict::Ok,
                3600,
            ),
            (
                "NaN error ratios over counted events everywhere: no data, not ok",
                [Some(f64::INFINITY); 4],
                1e4,
                Verdict::NoData,
                3600,
            ),
            (
                "no window has samples: no data",
                [None; 4],
                1e4,
                Verdict::NoData,
                3600,
            ),
        ];
        let objective = Objective::from_percent(99.9).unwrap();
        let mut wrong = Vec::new();
        for (name, ratios, total, verdict, leading_long) in cases {
            let mut measure = |window: Duration| {
                let index = [3600, 300, 21600, 1800]
                    .iter()
                    .position(|secs| *secs == window.as_secs())
                    .unwrap();
                ratios[index].map(|ratio| {
                    if ratio.is_nan() {
                        WindowValue::new(0.0, 0.0)
                    } else if ratio.is_infinite() {
                        WindowValue::new(f64::NAN, *total)
                    } else {
                        WindowValue::new(ratio * total, *total)
                    }
                })
            };
            let reading = read_tier(&tier(), objective, 100.0, &mut measure);
            let got = (reading.verdict, reading.leading_pair().pair.long.as_secs());
            if got != (*verdict, *leading_long) {
                wrong.push(format!(
                    "{name}: {got:?}, expected {:?}",
                    (verdict, leading_long)
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn budget_and_exhaustion() {
        let objective = Objective::from_percent(99.9).unwrap();
        let period = Duration::from_secs(30 * 86_400);
        let remaining = budget_remaining(Some(WindowValue::new(25.0, 100_000.0)), objective);
        assert!((remaining - 0.75).abs() < 1e-12);
        // 75% of a 30d budget at 10× lasts 2.25 days.
        let exhaustion = time_to_exhaustion(remaining, 10.0, period).unwrap();
        assert_eq!(exhaustion.as_secs_f64().round(), 194_400.0);
        assert_eq!(time_to_exhaustion(-0.1, 10.0, period), None);
        assert_eq!(time_to_exhaustion(0.5, 0.0, period), None);
    }
}
