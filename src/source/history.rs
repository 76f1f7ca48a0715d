//! Replay from Prometheus: SLOs with a local SLI from the raw counter samples of the range
//! (read in slices, measured as a recorded file is), the others from `query_range` (the
//! `query` strategy over history: per window, the SLO's error-ratio PromQL and its total), all
//! fed through the same engine as `serve`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::burn::WindowValue;
use crate::engine::{Engine, InstanceLabels};
use crate::query::{CounterQuery, with_window};
use crate::replay::{Range, Timeline};
use crate::slo::{Millis, Slo, millis};
use crate::source::live::{templates, window_value, windows_with_period};
use crate::source::openmetrics::Recording;
use crate::source::prometheus::{Answer, ApiError, Client, RangeSeries};
use crate::window::Series;

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
    let reading = crate::source::live::Reading::of(slo);
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
                            let total = totals.get(&labels).and_then(|row| row[index])?;
                            window_value(ratio, Some(total), window, reading)
                        }
                        None => window_value(ratio, None, window, reading),
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

/// Raw samples per request: six hours of every series a selector names, so no answer holds
/// the whole range (Prometheus bounds the samples one query may load).
const RAW_SLICE: Millis = 6 * 3_600_000;

/// Raw-sample requests in flight at once.
const RAW_IN_FLIGHT: usize = 4;

/// Read before the longest window's start too: that start falls between two scrapes, and
/// scoring wants the sample at or before it (Prometheus's default lookback).
const LOOKBACK: Millis = 5 * 60_000;

/// The first sample time a replay of `slo` over `range` needs: its longest window (the
/// period) before the first evaluation, and [`LOOKBACK`] before that.
fn needed_from(slo: &Slo, range: &Range) -> Millis {
    let longest = windows_with_period(slo)
        .into_iter()
        .max()
        .unwrap_or(slo.period);
    range.from - millis(longest) - LOOKBACK
}

/// The counter selectors to read for the SLOs evaluated locally, with the first sample time
/// each is needed from. A selector whose series another one's include (the same metric, and
/// every matcher of the other among its own: `errors` is usually `total` and a `code`
/// matcher) is not read on its own.
fn raw_selectors(slos: &[&Slo], range: &Range) -> Vec<(String, Millis)> {
    let mut queries: Vec<(CounterQuery, Millis)> = Vec::new();
    for slo in slos {
        let Ok(local) = slo.sli.local() else { continue };
        let (numerator, total) = local.queries();
        for query in [numerator, total] {
            queries.push((query.clone(), needed_from(slo, range)));
        }
    }
    let matchers = |query: &CounterQuery| -> Vec<String> {
        query.matchers.iter().map(ToString::to_string).collect()
    };
    let mut selectors: Vec<(String, Millis)> = Vec::new();
    for (index, (query, from)) in queries.iter().enumerate() {
        let own = matchers(query);
        // Covered by another selector (an identical one only by the first of them), read
        // from as early as any that needs its series.
        let covered = queries.iter().enumerate().any(|(other_index, (other, _))| {
            let theirs = matchers(other);
            other_index != index
                && other.metric == query.metric
                && theirs.iter().all(|matcher| own.contains(matcher))
                && (theirs.len() < own.len() || other_index < index)
        });
        if covered {
            continue;
        }
        let earliest = queries
            .iter()
            .filter(|(other, _)| {
                other.metric == query.metric
                    && own.iter().all(|matcher| matchers(other).contains(matcher))
            })
            .map(|(_, from)| *from)
            .fold(*from, Millis::min);
        let selector = query.selector();
        if !selectors.iter().any(|(known, _)| *known == selector) {
            selectors.push((selector, earliest));
        }
    }
    selectors
}

/// The requests reading `selectors` up to `to`: (selector, slice start, slice end).
fn raw_slices(selectors: &[(String, Millis)], to: Millis) -> Vec<(String, Millis, Millis)> {
    let mut slices = Vec::new();
    for (selector, from) in selectors {
        let mut slice_from = *from;
        while slice_from < to {
            let slice_to = (slice_from + RAW_SLICE).min(to);
            slices.push((selector.clone(), slice_from, slice_to));
            slice_from = slice_to;
        }
    }
    slices
}

/// How many requests a replay of `slos` over `range` sends (for progress bars): raw-sample
/// slices for the SLOs evaluated locally, range queries per window for the others.
pub fn queries_needed(slos: &[Slo], range: &Range) -> u64 {
    let local: Vec<&Slo> = slos.iter().filter(|slo| slo.sli.local().is_ok()).collect();
    let raw = raw_slices(&raw_selectors(&local, range), range.to).len() as u64;
    let queried: u64 = slos
        .iter()
        .filter(|slo| slo.sli.local().is_err())
        .map(|slo| windows_with_period(slo).len() as u64)
        .sum();
    raw + queried
}

/// The raw samples of `selectors` from their first needed time to `to`, read in slices
/// ([`RAW_IN_FLIGHT`] at once), as a recording: the same series a file of Prometheus's data
/// would hold.
async fn raw_recording(
    client: &Client,
    selectors: &[(String, Millis)],
    to: Millis,
    progress: &mut impl FnMut(),
) -> Result<Recording, ApiError> {
    let slices = raw_slices(selectors, to);
    let mut answers: Vec<Option<Vec<RangeSeries>>> = vec![None; slices.len()];
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        while tasks.len() < RAW_IN_FLIGHT && next < slices.len() {
            let (selector, from, to) = slices[next].clone();
            let client = client.clone();
            let index = next;
            tasks.spawn(async move {
                let expr = format!("{selector}[{}ms]", to - from);
                let answer = client.query(&expr, to).await;
                (index, expr, answer)
            });
            next += 1;
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (index, expr, answer) =
            joined.map_err(|error| ApiError::Connect(format!("query task failed: {error}")))?;
        progress();
        match answer?.answer {
            Answer::Matrix(series) => answers[index] = Some(series),
            _ => return Err(ApiError::Malformed(format!("expected a matrix for {expr}"))),
        }
    }
    // A series two selectors name comes in twice, each over its own range: its samples are
    // gathered from every answer, put in time order and read once.
    let mut by_labels: HashMap<InstanceLabels, Vec<(Millis, f64)>> = HashMap::new();
    for series in answers.into_iter().flatten() {
        for piece in series {
            let mut labels = piece.labels;
            labels.sort();
            by_labels.entry(labels).or_default().extend(piece.samples);
        }
    }
    let mut recording = Recording {
        file: "Prometheus's history".to_string(),
        semantics: client.semantics(),
        ..Recording::default()
    };
    let mut all: Vec<_> = by_labels.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (labels, mut samples) in all {
        samples.sort_by_key(|(at, _)| *at);
        samples.dedup_by_key(|(at, _)| *at);
        let mut series = Series::new(labels);
        for (at, value) in samples {
            series.push(at, value);
            recording.samples += 1;
        }
        recording.series.push(series);
    }
    Ok(recording)
}

/// The raw counter samples the SLOs with a local SLI need over `range` (from their period
/// before `range.from`), as a recording; `progress` is called after each request. SLOs whose
/// SLI is not local find no series in it.
pub async fn recording(
    client: &Client,
    slos: &[Slo],
    range: Range,
    mut progress: impl FnMut(),
) -> Result<Recording, ApiError> {
    client.know_version().await;
    let local: Vec<&Slo> = slos.iter().filter(|slo| slo.sli.local().is_ok()).collect();
    raw_recording(
        client,
        &raw_selectors(&local, &range),
        range.to,
        &mut progress,
    )
    .await
}

/// How many requests [`recording`] sends.
pub fn recording_queries(slos: &[Slo], range: &Range) -> u64 {
    let local: Vec<&Slo> = slos.iter().filter(|slo| slo.sli.local().is_ok()).collect();
    raw_slices(&raw_selectors(&local, range), range.to).len() as u64
}

/// Replays `slos` over Prometheus's history in `range` through the engine. SLOs whose SLI is
/// local (`sum by (...) (rate(...))`-shaped) are replayed from the raw counter samples, read
/// in slices and measured with the same exact window math as a recorded file, so a month
/// costs what reading its samples costs; the others from `query_range` per window.
pub async fn replay(
    client: &Client,
    slos: &[Slo],
    range: Range,
    mut progress: impl FnMut(),
) -> Result<Timeline, ApiError> {
    client.know_version().await;
    let (local, queried): (Vec<Slo>, Vec<Slo>) = slos
        .iter()
        .cloned()
        .partition(|slo| slo.sli.local().is_ok());
    let mut timeline = if local.is_empty() {
        Timeline {
            range,
            events: Vec::new(),
            skipped: Vec::new(),
            instances: 0,
            evaluations: 0,
            semantics: client.semantics(),
        }
    } else {
        let refs: Vec<&Slo> = local.iter().collect();
        let recording = raw_recording(
            client,
            &raw_selectors(&refs, &range),
            range.to,
            &mut progress,
        )
        .await?;
        crate::replay::run(&local, &recording, range)
    };
    let steps: Vec<Millis> = range.times().collect();
    for slo in &queried {
        let history = fetch(client, slo, &range, &mut progress).await?;
        timeline.instances += history.len();
        timeline.evaluations += steps.len() as u64 * history.len() as u64;
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
                timeline
                    .events
                    .extend(engine.evaluate(*now, slo, id, &mut measure));
            }
        }
    }
    // In time order; within one time, in spec order, as a replay of one source gives them.
    let order = |id: &str| slos.iter().position(|slo| slo.id == id);
    timeline
        .events
        .sort_by_key(|event| (event.at, order(&event.slo_id)));
    Ok(timeline)
}
