//! Replay from Prometheus: the window values of every step of a past range, from `query_range`
//! (the `query` strategy over history: per window, the SLO's error-ratio PromQL and its total),
//! fed through the same engine as `serve`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::burn::WindowValue;
use crate::engine::{Engine, Event, InstanceLabels};
use crate::query::with_window;
use crate::replay::{Range, Skipped, Timeline};
use crate::slo::{Millis, Slo, millis};
use crate::source::live::{templates, window_value, windows_with_period};
use crate::source::prometheus::{ApiError, Client, RangeSeries};

/// Per instance, per window, the value at every step of the range (`None` where absent).
type History = BTreeMap<InstanceLabels, Vec<(Duration, Vec<Option<WindowValue>>)>>;

fn by_step(
    series: Vec<RangeSeries>,
    range: &Range,
    steps: usize,
) -> BTreeMap<InstanceLabels, Vec<Option<f64>>> {
    let step = millis(range.step).max(1);
    let mut values = BTreeMap::new();
    for piece in series {
        let labels: InstanceLabels = piece
            .labels
            .into_iter()
            .filter(|(name, _)| name != "__name__")
            .collect();
        let row = values.entry(labels).or_insert_with(|| vec![None; steps]);
        for (at, value) in piece.samples {
            let offset = at - range.from;
            if offset >= 0 && offset % step == 0 && ((offset / step) as usize) < steps {
                row[(offset / step) as usize] = Some(value);
            }
        }
    }
    values
}

/// Fetches the history of one SLO; `progress` is called after each query.
async fn fetch(
    client: &Client,
    slo: &Slo,
    range: &Range,
    progress: &mut impl FnMut(),
) -> Result<History, ApiError> {
    let steps = range.times().count();
    let (ratio_template, total_template) = templates(slo);
    let mut history = History::new();
    for window in windows_with_period(slo) {
        let ratios = by_step(
            client
                .query_range(
                    &with_window(&ratio_template, window),
                    range.from,
                    range.to,
                    range.step,
                )
                .await?,
            range,
            steps,
        );
        progress();
        let totals = match &total_template {
            Some(template) => {
                let totals = client
                    .query_range(
                        &with_window(template, window),
                        range.from,
                        range.to,
                        range.step,
                    )
                    .await?;
                progress();
                Some(by_step(totals, range, steps))
            }
            None => None,
        };
        // The total names the instances where there is one; otherwise the ratio does.
        let names: Vec<InstanceLabels> = match &totals {
            Some(totals) => totals.keys().cloned().collect(),
            None => ratios.keys().cloned().collect(),
        };
        let mut values: BTreeMap<InstanceLabels, Vec<Option<WindowValue>>> = BTreeMap::new();
        for labels in names {
            let row = (0..steps)
                .map(|index| {
                    let ratio = ratios.get(&labels).and_then(|row| row[index]);
                    match &totals {
                        Some(totals) => {
                            let rate = totals.get(&labels).and_then(|row| row[index])?;
                            window_value(ratio, Some(rate), window)
                        }
                        None => window_value(ratio, None, window),
                    }
                })
                .collect();
            values.insert(labels, row);
        }
        for (labels, row) in values {
            history.entry(labels).or_default().push((window, row));
        }
    }
    Ok(history)
}

/// How many range queries a replay of `slos` sends (for progress bars).
pub fn queries_needed(slos: &[Slo]) -> u64 {
    slos.iter()
        .map(|slo| {
            let per_window = if slo.sli.local().is_ok() { 2 } else { 1 };
            windows_with_period(slo).len() as u64 * per_window
        })
        .sum()
}

/// Replays `slos` over Prometheus's history in `range` through the engine.
pub async fn replay(
    client: &Client,
    slos: &[Slo],
    range: Range,
    mut progress: impl FnMut(),
) -> Result<Timeline, ApiError> {
    let mut events: Vec<Event> = Vec::new();
    let mut instances = 0;
    let steps: Vec<Millis> = range.times().collect();
    for slo in slos {
        let history = fetch(client, slo, &range, &mut progress).await?;
        instances += history.len();
        let mut engine = Engine::new();
        for (labels, windows) in &history {
            let id = engine.instance(slo, labels);
            for (index, now) in steps.iter().enumerate() {
                let mut measure = |window: Duration| {
                    windows
                        .iter()
                        .find(|(length, _)| *length == window)
                        .and_then(|(_, row)| row[index])
                };
                events.extend(engine.evaluate(*now, slo, id, &mut measure));
            }
        }
    }
    events.sort_by_key(|event| event.at);
    Ok(Timeline {
        range,
        events,
        skipped: Vec::<Skipped>::new(),
        instances,
        evaluations: steps.len() as u64 * instances as u64,
    })
}
