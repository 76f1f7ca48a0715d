//! Test fixtures shared by the notify modules' tests: an SLO from a small spec and a page
//! event with the evidence of the seed incident's firing.

use std::time::Duration;

use crate::alert::Change;
use crate::burn::{PairReading, Verdict, WindowValue};
use crate::config::{Document, load_str};
use crate::engine::Event;
use crate::slo::{Millis, Slo, TierKind, WindowPair};

/// The `availability` SLO of `service` (a 99.9% ratio SLI) with that runbook.
pub fn slo(service: &str, runbook: &str) -> Slo {
    let spec = format!(
        "version: burnwatch/v1\nservice: {service}\nslos:\n  - name: availability\n    objective: 99.9\n    runbook: {runbook}\n    sli:\n      ratio:\n        errors: requests_total{{code=\"500\"}}\n        total: requests_total\n"
    );
    match load_str("spec.yaml", &spec, std::path::Path::new(".")) {
        Ok(Document::Slos(mut slos)) => slos.remove(0),
        other => panic!("{other:?}"),
    }
}

/// A change of `tier` at `at` for the instance `route=<route>`, tripped by the 1h/5m pair.
pub fn event(
    slo_id: &str,
    route: &str,
    tier: TierKind,
    change: Change,
    at: Millis,
    firing_since: Millis,
) -> Event {
    let pair = WindowPair::new(Duration::from_secs(3600), Duration::from_secs(300), 14.4)
        .expect("valid pair");
    Event {
        at,
        slo_id: slo_id.to_string(),
        labels: vec![("route".to_string(), route.to_string())],
        tier,
        change,
        reading: PairReading {
            pair,
            long: Some(WindowValue::new(314.0, 21_623.0)),
            short: Some(WindowValue::new(98.0, 1_806.0)),
            burn_long: 14.52,
            burn_short: 54.26,
            verdict: Verdict::Burning,
        },
        budget_remaining: 0.381,
        time_to_exhaustion: Some(Duration::from_secs(67_920)),
        firing_since: Some(firing_since),
        budget_spent: Some(0.031),
        ended: None,
    }
}
