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
use crate::source::live::windows_with_period;
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
    let ratio_template = slo.sli.error_ratio_template();
    let total_template = slo
        .sli
        .local()
        .ok()
        .map(|local| local.queries().1.template().to_string());
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
        let seconds = window.as_secs_f64();
        let mut values: BTreeMap<InstanceLabels, Vec<Option<WindowValue>>> = BTreeMap::new();
        match totals {
            Some(totals) => {
                for (labels, rates) in totals {
                    let ratio_row = ratios.get(&labels);
                    let row = rates
                        .iter()
                        .enumerate()
                        .map(|(index, rate)| {
                            let total = (*rate)? * seconds;
                            let ratio = ratio_row
                                .and_then(|row| row[index])
                                .unwrap_or(if total > 0.0 { 0.0 } else { f64::NAN });
                            Some(WindowValue {
                                bad: ratio * total,
                                total,
                                error_ratio: ratio,
                            })
                        })
                        .collect();
                    values.insert(labels, row);
                }
            }
            None => {
                for (labels, row) in ratios {
                    let row = row
                        .into_iter()
                        .map(|ratio| {
                            ratio.map(|error_ratio| WindowValue {
                                bad: f64::NAN,
                                total: f64::NAN,
                                error_ratio,
                            })
                        })
                        .collect();
                    values.insert(labels, row);
                }
            }
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
