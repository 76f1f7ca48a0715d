//! The `incremental` strategy: each cycle asks Prometheus only for the raw samples since the last
//! cycle (`selector[Δ]`), and burnwatch sums every window itself, up to the 30-day period, so the
//! query cost per cycle does not grow with the window.
//!
//! Per SLO instance it keeps:
//! - the raw samples of the last two hours of every series, so windows up to 2h (5m, 30m, 1h,
//!   2h) are computed exactly as Prometheus computes `rate()` (per-series extrapolation, via
//!   [`Series`]);
//! - 5-minute buckets of counter increases for the last 3 days (6h, 1d, 3d windows) and hourly
//!   buckets for the period (30d). An increase is the reset-aware difference of two
//!   consecutive samples, counted at the later sample's time; the bucket cut by a window's
//!   start counts in proportion to its overlap. These windows are exact ratios of sums without
//!   Prometheus's extrapolation: they differ from PromQL by the traffic of about one scrape
//!   interval at the window's start and the unevenness of traffic within one edge bucket,
//!   which stays well under 1% of a 6h or longer window.
//!
//! Memory per instance with one good and one bad series at a 30s scrape: about 12 KiB of raw
//! samples and 7 KiB of buckets (counts are `f32`; sums are taken in `f64`).
//!
//! At start-up the state is warm-started: hourly and 5-minute increases from two `query_range`s
//! (`sum by (...) (increase(selector[1h]))`, `[5m]`), and the raw samples since the last full
//! hour before the raw horizon from one range-vector query, so every window is right from the
//! first cycle.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::burn::WindowValue;
use crate::engine::InstanceLabels;
use crate::query::{CounterQuery, LocalSli};
use crate::slo::{Millis, Slo, millis};
use crate::source::live::{Snapshot, windows_and};
use crate::source::prometheus::{Answer, ApiError, Client, RangeSeries};
use crate::window::{Semantics, extrapolate};

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
/// Windows up to this length are computed from raw samples, as Prometheus would.
const RAW_HORIZON: Millis = 2 * HOUR;
/// Windows up to this length use 5-minute buckets; longer ones hourly buckets.
const MEDIUM_HORIZON: Millis = 3 * 24 * HOUR;
const MEDIUM: Millis = 5 * MINUTE;
/// The warm start reads raw samples in slices of this length.
const WARM_START_SLICE: Millis = 30 * MINUTE;

/// Which side of the ratio a series feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum Role {
    Numerator = 0,
    Total = 1,
}

/// Counter increases per time bucket, numerator and total, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ring {
    width: Millis,
    capacity: usize,
    first_index: i64,
    buckets: VecDeque<[f32; 2]>,
}

impl Ring {
    fn new(width: Millis, span: Millis) -> Ring {
        Ring {
            width,
            capacity: (span / width) as usize + 2,
            first_index: 0,
            buckets: VecDeque::new(),
        }
    }

    fn add(&mut self, at: Millis, role: Role, increase: f64) {
        let index = at.div_euclid(self.width);
        if self.buckets.is_empty() {
            self.first_index = index;
            // The ring fills up to its capacity and stays there: allocate it once, exactly.
            self.buckets.reserve_exact(self.capacity + 1);
        }
        if index < self.first_index {
            // Older than the oldest bucket so far (another series began earlier): extend the
            // ring backwards while it stays within its capacity.
            let missing = (self.first_index - index) as usize;
            if self.buckets.len() + missing > self.capacity {
                return; // older than the ring keeps
            }
            for _ in 0..missing {
                self.buckets.push_front([0.0; 2]);
            }
            self.first_index = index;
        }
        while self.first_index + self.buckets.len() as i64 <= index {
            self.buckets.push_back([0.0; 2]);
        }
        self.buckets[(index - self.first_index) as usize][role as usize] += increase as f32;
        while self.buckets.len() > self.capacity {
            self.buckets.pop_front();
            self.first_index += 1;
        }
    }

    /// Sum over `(from, to]`, where `to` is the time of the newest data (the evaluation time). A bucket cut by
    /// `from` counts in proportion to its overlap; the bucket holding `to` has only filled up
    /// to `to`, so its filled part is what the proportion is taken of.
    fn sum(&self, from: Millis, to: Millis) -> [f64; 2] {
        let mut sum = [0.0; 2];
        for (offset, bucket) in self.buckets.iter().enumerate() {
            // In milliseconds, the window is [from + 1, to + 1) and a bucket [start, end).
            let start = (self.first_index + offset as i64) * self.width;
            let filled_end = (start + self.width).min(to + 1);
            let overlap = (filled_end - start.max(from + 1)).max(0);
            if overlap > 0 {
                let share = overlap as f64 / (filled_end - start) as f64;
                sum[0] += f64::from(bucket[0]) * share;
                sum[1] += f64::from(bucket[1]) * share;
            }
        }
        sum
    }
}

/// The recent raw samples of one series, compact: times as millisecond offsets from `base`.
/// Windows over them reproduce Prometheus's `increase()` (resets, extrapolation).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawSeries {
    labels: Vec<(String, String)>,
    base: Millis,
    offsets: Vec<u32>,
    values: Vec<f64>,
}

impl RawSeries {
    fn new(labels: Vec<(String, String)>) -> RawSeries {
        RawSeries {
            labels,
            base: 0,
            offsets: Vec::new(),
            values: Vec::new(),
        }
    }

    fn at(&self, index: usize) -> Millis {
        self.base + Millis::from(self.offsets[index])
    }

    fn last_timestamp(&self) -> Option<Millis> {
        (!self.offsets.is_empty()).then(|| self.at(self.offsets.len() - 1))
    }

    /// Appends a sample after the last one. Grows by an eighth at a time: a series holds a
    /// steady number of samples, so doubling would waste up to half.
    fn push(&mut self, at: Millis, value: f64) {
        if self.offsets.is_empty() || u32::try_from(at - self.base).is_err() {
            self.offsets.clear();
            self.values.clear();
            self.base = at;
        }
        if self.offsets.len() == self.offsets.capacity() {
            let more = (self.offsets.len() / 8).max(16);
            self.offsets.reserve_exact(more);
            self.values.reserve_exact(more);
        }
        self.offsets.push((at - self.base) as u32);
        self.values.push(value);
    }

    /// Forgets samples before `at`, 16 or more at a time.
    fn trim_before(&mut self, at: Millis) {
        let old = self
            .offsets
            .partition_point(|&offset| self.base + Millis::from(offset) < at);
        if old >= 16 {
            let shift = self.offsets[old.min(self.offsets.len() - 1)];
            self.offsets.drain(..old);
            self.values.drain(..old);
            self.base += Millis::from(shift);
            for offset in &mut self.offsets {
                *offset -= shift;
            }
        }
    }

    /// `increase()` over the window ending at `range_end`, or `None` with fewer than two
    /// samples.
    fn increase(
        &self,
        semantics: Semantics,
        range_start: Millis,
        range_end: Millis,
    ) -> Option<f64> {
        let lo = self.offsets.partition_point(|&offset| {
            semantics.before_window(self.base + Millis::from(offset), range_start)
        });
        let hi = self
            .offsets
            .partition_point(|&offset| self.base + Millis::from(offset) <= range_end);
        if hi < lo + 2 {
            return None;
        }
        let values = &self.values[lo..hi];
        let mut raw = values[values.len() - 1] - values[0];
        for pair in values.windows(2) {
            if pair[1] < pair[0] {
                raw += pair[0];
            }
        }
        Some(extrapolate(
            semantics,
            raw,
            (self.at(lo), values[0]),
            self.at(hi - 1),
            hi - lo,
            range_start,
            range_end,
        ))
    }
}

/// One series, stored once even when both selectors match it (the error series of a ratio
/// SLI are also in its total: a third of the raw samples at 10,000 instances).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeriesState {
    /// Per role (numerator, total): the last sample whose increase that role counted, or
    /// `None` while the role's selector has not matched the series. Each role counts the
    /// increases between the samples its own answers held, as if it stored them alone.
    last: [Option<(Millis, f64)>; 2],
    /// Samples of the last [`RAW_HORIZON`] (and a little more).
    raw: RawSeries,
}

impl SeriesState {
    /// The roles whose selector matches this series.
    fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        [Role::Numerator, Role::Total]
            .into_iter()
            .filter(|role| self.last[*role as usize].is_some())
    }
}

/// One SLO instance: its series and its buckets.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InstanceState {
    series: Vec<SeriesState>,
    medium: Ring,
    coarse: Ring,
}

/// The incremental state of one SLO.
#[derive(Debug, Clone)]
pub struct Incremental {
    numerator: CounterQuery,
    total: CounterQuery,
    /// Whether the numerator counts good events (latency SLIs) rather than bad ones.
    numerator_is_good: bool,
    period: Millis,
    instances: BTreeMap<InstanceLabels, InstanceState>,
    /// Where each series lives: its instance and its index in the instance's series.
    series_index: HashMap<SeriesKey, (InstanceLabels, usize)>,
    /// The last evaluation time whose samples have been read.
    last_read: Option<Millis>,
    /// Samples the last fetch made Prometheus read.
    pub samples_touched: u64,
    /// A warm start in progress (one that failed or ran out of time partway): its requests
    /// done so far, kept so the next fetch goes on from there.
    warming: Option<Box<WarmStart>>,
}

/// One request of a warm start, planned when the warm start begins.
#[derive(Debug, Clone, Copy)]
enum WarmStep {
    /// `width`-wide increases (hourly or 5-minute) ending from `first` to `until`, into the
    /// buckets.
    Buckets {
        role: Role,
        width: Millis,
        first: Millis,
        until: Millis,
    },
    /// Raw samples over `(from, to]`, into the series (and the buckets after the ranges').
    Raw {
        role: Role,
        from: Millis,
        to: Millis,
    },
}

/// A warm start as of `at`: its requests in order, those `done` already read into `fresh`.
/// A request that fails or is cancelled adds nothing (its answer is ingested only once
/// complete), so going on from `done` never counts anything twice.
#[derive(Debug, Clone)]
struct WarmStart {
    at: Millis,
    fresh: Box<Incremental>,
    steps: Vec<WarmStep>,
    done: usize,
    /// The 5-minute and hourly bucket ranges' ends: raw samples at or before them are
    /// already counted in those buckets.
    counted_until: (Millis, Millis),
}

/// A series by its full label set, and its role when the numerator and the total group by
/// different labels (then a series matched by both belongs to two instances and is stored
/// twice; otherwise `None`: stored once for both).
type SeriesKey = (Option<Role>, Vec<(String, String)>);

/// The state of an [`Incremental`] as saved across restarts (MessagePack in the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The SLI's error-ratio template and period it was built for: a changed SLI starts over.
    template: String,
    period: Millis,
    last_read: Millis,
    instances: Vec<(InstanceLabels, InstanceState)>,
}

impl Checkpoint {
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(self).map_err(|error| error.to_string())
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        rmp_serde::from_slice(bytes).map_err(|error| error.to_string())
    }

    /// Decodes a checkpoint as it reads it.
    pub fn read(reader: &mut dyn std::io::Read) -> Result<Checkpoint, String> {
        rmp_serde::from_read(reader).map_err(|error| error.to_string())
    }
}

/// `metric{matchers}` of a counter query.
fn selector(query: &CounterQuery) -> String {
    query.selector()
}

fn group_key(query: &CounterQuery, labels: &[(String, String)]) -> InstanceLabels {
    query
        .by
        .iter()
        .map(|name| {
            let value = labels
                .iter()
                .find(|(label, _)| label == name)
                .map_or("", |(_, value)| value.as_str());
            (name.clone(), value.to_string())
        })
        .collect()
}

impl Incremental {
    /// The incremental state for an SLO, or why its SLI cannot be tracked incrementally.
    pub fn new(slo: &Slo) -> Result<Incremental, String> {
        let local = slo.sli.local()?;
        let numerator_is_good = matches!(local, LocalSli::OneMinusGoodOverTotal { .. });
        let (numerator, total) = local.queries();
        Ok(Incremental {
            numerator: numerator.clone(),
            total: total.clone(),
            numerator_is_good,
            period: millis(slo.period),
            instances: BTreeMap::new(),
            series_index: HashMap::new(),
            last_read: None,
            samples_touched: 0,
            warming: None,
        })
    }

    /// The same SLI with nothing read yet.
    fn cold(&self) -> Incremental {
        Incremental {
            numerator: self.numerator.clone(),
            total: self.total.clone(),
            numerator_is_good: self.numerator_is_good,
            period: self.period,
            instances: BTreeMap::new(),
            series_index: HashMap::new(),
            last_read: None,
            samples_touched: 0,
            warming: None,
        }
    }

    /// The checkpoint's bytes, encoded straight from the state (no copy of it is made: at
    /// 10,000 instances a copy would double the daemon's memory while it is written), or
    /// `None` before the warm start.
    pub fn encode_checkpoint(&self, slo: &Slo) -> Option<Result<Vec<u8>, String>> {
        let mut bytes = Vec::new();
        self.write_checkpoint(slo, &mut bytes)
            .map(|written| written.map(|()| bytes))
    }

    /// Writes the checkpoint to `out` as it encodes it, straight from the state (neither the
    /// state nor its encoding is ever held whole), or `None` before the warm start.
    pub fn write_checkpoint(
        &self,
        slo: &Slo,
        out: &mut impl std::io::Write,
    ) -> Option<Result<(), String>> {
        /// [`Checkpoint`]'s layout, borrowing.
        #[derive(Serialize)]
        struct Borrowed<'a> {
            template: String,
            period: Millis,
            last_read: Millis,
            instances: Instances<'a>,
        }
        /// The instances as a sequence, serialized one by one from the map.
        struct Instances<'a>(&'a BTreeMap<InstanceLabels, InstanceState>);
        impl Serialize for Instances<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter())
            }
        }
        let borrowed = Borrowed {
            template: slo.sli.error_ratio_template(),
            period: self.period,
            last_read: self.last_read?,
            instances: Instances(&self.instances),
        };
        Some(rmp_serde::encode::write(out, &borrowed).map_err(|error| error.to_string()))
    }

    /// The state to save, once it has been warm-started.
    pub fn checkpoint(&self, slo: &Slo) -> Option<Checkpoint> {
        Some(Checkpoint {
            template: slo.sli.error_ratio_template(),
            period: self.period,
            last_read: self.last_read?,
            instances: self
                .instances
                .iter()
                .map(|(key, buckets)| (key.clone(), buckets.clone()))
                .collect(),
        })
    }

    /// Whether a checkpoint saved at `saved_at` can still be resumed at `now`: the samples
    /// since lie within the raw horizon, so the next fetch catches up instead of warm-starting
    /// (an older checkpoint is not worth decoding).
    pub fn resumable(saved_at: Millis, now: Millis) -> bool {
        now - saved_at <= RAW_HORIZON
    }

    /// Resumes from a checkpoint of the same SLI whose last read lies within the raw horizon
    /// of `now` (the next fetch reads the samples since); otherwise starts cold (the next
    /// fetch warm-starts).
    pub fn resume(slo: &Slo, checkpoint: Checkpoint, now: Millis) -> Result<Incremental, String> {
        let mut state = Incremental::new(slo)?;
        let same_sli = checkpoint.template == slo.sli.error_ratio_template()
            && checkpoint.period == state.period;
        if same_sli && Incremental::resumable(checkpoint.last_read, now) {
            state.instances = checkpoint.instances.into_iter().collect();
            state.reindex();
            state.last_read = Some(checkpoint.last_read);
        }
        Ok(state)
    }

    /// Whether the state has been warm-started.
    pub fn is_warm(&self) -> bool {
        self.last_read.is_some()
    }

    /// Whether the next fetch at `now` is a cycle's catch-up rather than a warm start (never
    /// read, or not within the raw horizon).
    pub fn is_warm_at(&self, now: Millis) -> bool {
        self.last_read.is_some_and(|last| now - last <= RAW_HORIZON)
    }

    fn query(&self, role: Role) -> &CounterQuery {
        match role {
            Role::Numerator => &self.numerator,
            Role::Total => &self.total,
        }
    }

    /// Brings the state up to `now` (warm-starting on first use) and returns every window,
    /// and the `extra` ones.
    pub async fn fetch(
        &mut self,
        client: &Client,
        slo: &Slo,
        now: Millis,
        interval: Duration,
        extra: &[Duration],
    ) -> Result<Snapshot, ApiError> {
        let mut queries = 0;
        self.samples_touched = 0;
        // Raw windows follow the server's window arithmetic: know it first.
        client.know_version().await;
        // Never read, or not for longer than the raw horizon (burnwatch was down): the raw
        // samples since would be more than a cycle can read, and the buckets are rebuilt from
        // Prometheus's history anyway.
        if self.last_read.is_none_or(|last| RAW_HORIZON < now - last) {
            queries += self.warm_start(client, now).await?;
        }
        let last = self.last_read.unwrap_or(now);
        if last < now {
            // Re-read a margin before the last read: samples ingested late are not lost, and
            // those already seen are skipped by timestamp. A longer catch-up (after a pause, or
            // a warm start that took several cycles) reads in slices, so no answer holds hours
            // of every series, and a slice that fails is read again next cycle without
            // counting twice. Each slice read is progress kept: a catch-up longer than one
            // cycle's timeout goes on from there next cycle.
            let margin = (2 * millis(interval)).max(MINUTE);
            let mut slice_from = now - (now - last + margin).max(MINUTE);
            while slice_from < now {
                let slice_to = (slice_from + WARM_START_SLICE).min(now);
                for role in [Role::Numerator, Role::Total] {
                    let series = self
                        .raw_samples(client, role, slice_to - slice_from, slice_to)
                        .await?;
                    queries += 1;
                    for piece in series {
                        self.ingest(role, piece, None);
                    }
                }
                if slice_to < now {
                    self.last_read = Some(slice_to);
                }
                slice_from = slice_to;
            }
        }
        self.last_read = Some(now);
        self.trim(now);
        let mut snapshot = Snapshot {
            queries,
            samples_touched: self.samples_touched,
            ..Snapshot::default()
        };
        let windows = windows_and(slo, extra);
        for instance in self.instances.keys() {
            let windows = windows
                .iter()
                .copied()
                .filter_map(|window| {
                    self.measure(instance, client.semantics(), now, window)
                        .map(|value| (window, value))
                })
                .collect();
            snapshot.instances.insert(instance.clone(), windows);
        }
        Ok(snapshot)
    }

    async fn raw_samples(
        &mut self,
        client: &Client,
        role: Role,
        range: Millis,
        at: Millis,
    ) -> Result<Vec<RangeSeries>, ApiError> {
        let expr = format!("{}[{}ms]", selector(self.query(role)), range);
        let evaluated = client.query(&expr, at).await?;
        self.samples_touched += evaluated.samples_touched.unwrap_or(0);
        match evaluated.answer {
            Answer::Matrix(series) => Ok(series),
            _ => Err(ApiError::Malformed(format!("expected a matrix for {expr}"))),
        }
    }

    /// Warm-starts into a fresh state, swapped in only once complete, as of the time the warm
    /// start began (the caller catches up from there). A warm start that fails or is cancelled
    /// partway keeps the requests it completed, and the next call goes on from there; one
    /// begun longer than half the raw horizon ago begins again (its catch-up would be too
    /// long). Returns the requests made.
    async fn warm_start(&mut self, client: &Client, now: Millis) -> Result<u64, ApiError> {
        if self
            .warming
            .as_ref()
            .is_none_or(|warming| RAW_HORIZON / 2 < now - warming.at)
        {
            // What the state held is rebuilt by the warm start: let it go first, so the daemon
            // never holds two states of the SLO (at 10,000 instances, hundreds of MiB each).
            // Until the warm start completes there is no snapshot and no checkpoint to write.
            self.instances = BTreeMap::new();
            self.series_index = HashMap::new();
            self.last_read = None;
            let (steps, counted_until) = self.warm_plan(now);
            self.warming = Some(Box::new(WarmStart {
                at: now,
                fresh: Box::new(self.cold()),
                steps,
                done: 0,
                counted_until,
            }));
        }
        let warming = self
            .warming
            .as_mut()
            .expect("a warm start was just planned");
        warming.fresh.samples_touched = 0;
        let mut queries = 0;
        while let Some(&step) = warming.steps.get(warming.done) {
            let counted_until = warming.counted_until;
            warming.fresh.warm_step(client, step, counted_until).await?;
            queries += 1;
            warming.done += 1;
        }
        let warming = self.warming.take().expect("a warm start in progress");
        let mut fresh = *warming.fresh;
        fresh.last_read = Some(warming.at);
        *self = fresh;
        Ok(queries)
    }

    /// The requests of a warm start at `at`: hourly and 5-minute increases from `query_range`
    /// up to the last full hour (and 5 minutes) before the raw horizon, then the raw samples
    /// since that hour, which fill the buckets after those boundaries and the raw windows.
    /// Also the bucket ranges' ends (5-minute, hourly).
    fn warm_plan(&self, at: Millis) -> (Vec<WarmStep>, (Millis, Millis)) {
        let raw_from = at - RAW_HORIZON;
        let hours_until = raw_from.div_euclid(HOUR) * HOUR;
        let medium_until = raw_from.div_euclid(MEDIUM) * MEDIUM;
        let mut steps = Vec::new();
        for role in [Role::Numerator, Role::Total] {
            for (width, first, until) in [
                (
                    HOUR,
                    (at - self.period).div_euclid(HOUR) * HOUR + HOUR,
                    hours_until,
                ),
                (
                    MEDIUM,
                    (at - MEDIUM_HORIZON).div_euclid(MEDIUM) * MEDIUM + MEDIUM,
                    medium_until,
                ),
            ] {
                // Half a day of points per request: one answer never holds the whole period
                // of every instance.
                let mut slice_first = first;
                while slice_first <= until {
                    let slice_until = until.min(slice_first + 12 * HOUR - width);
                    steps.push(WarmStep::Buckets {
                        role,
                        width,
                        first: slice_first,
                        until: slice_until,
                    });
                    slice_first = slice_until + width;
                }
            }
        }
        // Raw samples in slices of half an hour so that no answer holds hours of every series.
        for role in [Role::Numerator, Role::Total] {
            let mut from = hours_until;
            while from < at {
                let to = (from + WARM_START_SLICE).min(at);
                steps.push(WarmStep::Raw { role, from, to });
                from = to;
            }
        }
        (steps, (medium_until, hours_until))
    }

    /// Reads one warm-start request into the state; nothing is added unless it completes.
    async fn warm_step(
        &mut self,
        client: &Client,
        step: WarmStep,
        counted_until: (Millis, Millis),
    ) -> Result<(), ApiError> {
        match step {
            WarmStep::Buckets {
                role,
                width,
                first,
                until,
            } => {
                let query = self.query(role).clone();
                let by = if query.by.is_empty() {
                    String::new()
                } else {
                    format!(" by ({})", query.by.join(", "))
                };
                // Each bucket's increase runs from the sample on its start: adjacent buckets
                // share that sample and so split the counter's increase between them. From
                // Prometheus 3 on a range leaves the sample on its start out (and would make
                // up the first interval from the average), so it is a millisecond longer.
                let range = match client.semantics() {
                    crate::window::Semantics::Prometheus3 => width + 1,
                    _ => width,
                };
                let expr = format!("sum{by} (increase({}[{range}ms]))", selector(&query));
                let points = client
                    .query_range(&expr, first, until, Duration::from_millis(width as u64))
                    .await?;
                for series in points {
                    let instance: InstanceLabels = group_key(&query, &series.labels);
                    let buckets = self.buckets(&instance);
                    let ring = if width == HOUR {
                        &mut buckets.coarse
                    } else {
                        &mut buckets.medium
                    };
                    for (end, increase) in series.samples {
                        if increase.is_finite() {
                            ring.add(end - width, role, increase);
                        }
                    }
                }
            }
            WarmStep::Raw { role, from, to } => {
                let series = self.raw_samples(client, role, to - from, to).await?;
                for piece in series {
                    self.ingest(role, piece, Some(counted_until));
                }
            }
        }
        Ok(())
    }

    fn buckets(&mut self, instance: &InstanceLabels) -> &mut InstanceState {
        let period = self.period;
        self.instances
            .entry(instance.clone())
            .or_insert_with(|| InstanceState {
                series: Vec::new(),
                medium: Ring::new(MEDIUM, MEDIUM_HORIZON),
                coarse: Ring::new(HOUR, period + HOUR),
            })
    }

    /// The role part of a series' key (see [`SeriesKey`]).
    fn key_role(&self, role: Role) -> Option<Role> {
        (self.numerator.by != self.total.by).then_some(role)
    }

    /// Rebuilds `series_index` from the instances.
    fn reindex(&mut self) {
        self.series_index.clear();
        let shared = self.numerator.by == self.total.by;
        for (instance, state) in &self.instances {
            for (index, series) in state.series.iter().enumerate() {
                let roles: Vec<Option<Role>> = if shared {
                    vec![None]
                } else {
                    series.roles().map(Some).collect()
                };
                for role in roles {
                    self.series_index
                        .insert((role, series.raw.labels.clone()), (instance.clone(), index));
                }
            }
        }
    }

    /// Adds new samples of one series: each increase goes to the buckets of its instance.
    /// With `counted_until` (5-minute, hourly), increases at or before those times are not
    /// added to those buckets (the warm start's `query_range`s already counted them).
    fn ingest(&mut self, role: Role, piece: RangeSeries, counted_until: Option<(Millis, Millis)>) {
        let key = (self.key_role(role), piece.labels);
        let (instance, index) = match self.series_index.get(&key) {
            Some(found) => found.clone(),
            None => {
                let instance = group_key(self.query(role), &key.1);
                let state = self.buckets(&instance);
                state.series.push(SeriesState {
                    last: [None, None],
                    raw: RawSeries::new(key.1.clone()),
                });
                let index = state.series.len() - 1;
                self.series_index.insert(key, (instance.clone(), index));
                (instance, index)
            }
        };
        let (medium_until, hours_until) = counted_until.unwrap_or((Millis::MIN, Millis::MIN));
        let state = self.buckets(&instance);
        let series = &mut state.series[index];
        for (at, value) in piece.samples {
            let last = &mut series.last[role as usize];
            if value.is_infinite() || last.is_some_and(|(last_at, _)| at <= last_at) {
                continue;
            }
            if value.is_nan() {
                // Bad data, not zero: the raw windows it falls in read NaN, as Prometheus's
                // (their verdict is no data). The buckets count past it, from the last real
                // value to the next.
                *last = Some((at, last.map_or(f64::NAN, |(_, previous)| previous)));
                if series.raw.last_timestamp().is_none_or(|stored| stored < at) {
                    series.raw.push(at, value);
                }
                continue;
            }
            if let Some((_, previous)) = last.filter(|(_, previous)| !previous.is_nan()) {
                let increase = if value < previous {
                    value
                } else {
                    value - previous
                };
                if medium_until < at {
                    state.medium.add(at, role, increase);
                }
                if hours_until < at {
                    state.coarse.add(at, role, increase);
                }
            }
            *last = Some((at, value));
            // The other role's answer may have stored it already.
            if series.raw.last_timestamp().is_none_or(|stored| stored < at) {
                series.raw.push(at, value);
            }
        }
    }

    /// Drops raw samples older than needed, series quiet for longer than the period, and
    /// instances left with neither series nor events in the period.
    fn trim(&mut self, now: Millis) {
        let keep_from = now - RAW_HORIZON - 10 * MINUTE;
        let period = self.period;
        let mut removed = false;
        for state in self.instances.values_mut() {
            let before = state.series.len();
            state.series.retain(|series| {
                series
                    .raw
                    .last_timestamp()
                    .is_some_and(|last| now - period < last)
            });
            removed |= state.series.len() != before;
            for series in &mut state.series {
                series.raw.trim_before(keep_from);
            }
        }
        let before = self.instances.len();
        self.instances.retain(|_, state| {
            !state.series.is_empty() || state.coarse.sum(now - period, now) != [0.0, 0.0]
        });
        if removed || self.instances.len() != before {
            self.reindex();
        }
    }

    /// The window value of one instance over the `window` ending at `now` (raw windows
    /// as `semantics` selects samples; bucketed ones over `(now - window, now]`).
    pub fn measure(
        &self,
        instance: &InstanceLabels,
        semantics: Semantics,
        now: Millis,
        window: Duration,
    ) -> Option<WindowValue> {
        let window = millis(window);
        let state = self.instances.get(instance)?;
        let [numerator, total] = if window <= RAW_HORIZON {
            let mut sums = [None::<f64>; 2];
            for series in &state.series {
                if let Some(increase) = series.raw.increase(semantics, now - window, now) {
                    for role in series.roles() {
                        *sums[role as usize].get_or_insert(0.0) += increase;
                    }
                }
            }
            // No good series: no data (see recorded.rs); no error series: no errors.
            let numerator = if self.numerator_is_good {
                sums[0]?
            } else {
                sums[0].unwrap_or(0.0)
            };
            [numerator, sums[1]?]
        } else {
            if self.numerator_is_good
                && !state
                    .series
                    .iter()
                    .any(|series| series.roles().any(|role| role == Role::Numerator))
            {
                return None;
            }
            let buckets = state;
            let ring = if window <= MEDIUM_HORIZON {
                &buckets.medium
            } else {
                &buckets.coarse
            };
            ring.sum(now - window, now)
        };
        Some(if self.numerator_is_good {
            WindowValue::new(total - numerator, total)
        } else {
            WindowValue::new(numerator, total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_series_trims_and_rebases_without_changing_windows() {
        let mut raw = RawSeries::new(Vec::new());
        let mut reference = crate::window::Series::new(Vec::new());
        for step in 0..400 {
            let at = 1_700_000_000_000 + step * 30_000;
            let value = if step == 350 { 3.0 } else { 10.0 * step as f64 };
            raw.push(at, value);
            reference.push(at, value);
        }
        let now = 1_700_000_000_000 + 399 * 30_000;
        let semantics_and_windows = [Semantics::Prometheus2, Semantics::Prometheus3]
            .into_iter()
            .flat_map(|semantics| [(semantics, 300_000), (semantics, 3_600_000)]);
        let before: Vec<Option<f64>> = semantics_and_windows
            .clone()
            .map(|(semantics, w)| raw.increase(semantics, now - w, now))
            .collect();
        raw.trim_before(now - 2 * HOUR);
        assert!(
            raw.offsets.len() < 400 && raw.offsets[0] == 0,
            "trimmed and rebased"
        );
        for ((semantics, window), expected) in semantics_and_windows.zip(before) {
            assert_eq!(raw.increase(semantics, now - window, now), expected);
            assert_eq!(
                raw.increase(semantics, now - window, now),
                reference.increase(semantics, now - window, now)
            );
        }
    }

    fn ratio_slo(by: &str) -> Slo {
        let spec = format!(
            "version: burnwatch/v1\nservice: orders\nslos:\n  - name: availability\n    \
             objective: 99.9\n    sli:\n      ratio:\n        errors: requests_total{{code=\"500\"}}\n        \
             total: requests_total\n    group_by: [{by}]\n"
        );
        match crate::config::load_str("spec.yaml", &spec, std::path::Path::new(".")) {
            Ok(crate::config::Document::Slos(mut slos)) => slos.remove(0),
            other => panic!("{other:?}"),
        }
    }

    fn piece(code: &str, samples: &[(Millis, f64)]) -> RangeSeries {
        RangeSeries {
            labels: vec![
                ("__name__".to_string(), "requests_total".to_string()),
                ("code".to_string(), code.to_string()),
                ("route".to_string(), "a".to_string()),
            ],
            samples: samples.to_vec(),
        }
    }

    /// A series both selectors match (an error series is also in the total) is stored once,
    /// and each role counts its increases as if it stored the series alone, whatever order
    /// their answers come in.
    #[test]
    fn a_series_of_both_roles_is_stored_once_and_counted_for_each() {
        let t = 1_700_000_000_000;
        let errors: Vec<(Millis, f64)> =
            (0..10).map(|i| (t + i * 30_000, (i * 2) as f64)).collect();
        let ok: Vec<(Millis, f64)> = (0..10)
            .map(|i| (t + i * 30_000, (i * 100) as f64))
            .collect();
        let now = t + 9 * 30_000;
        let window = Duration::from_secs(300);
        let mut shared = Incremental::new(&ratio_slo("route")).expect("incremental");
        // The total's answer first for the first half, the numerator's first for the rest.
        shared.ingest(Role::Total, piece("500", &errors[..5]), None);
        shared.ingest(Role::Total, piece("200", &ok[..5]), None);
        shared.ingest(Role::Numerator, piece("500", &errors[..5]), None);
        shared.ingest(Role::Numerator, piece("500", &errors[5..]), None);
        shared.ingest(Role::Total, piece("500", &errors[3..]), None);
        shared.ingest(Role::Total, piece("200", &ok[5..]), None);
        let instance = vec![("route".to_string(), "a".to_string())];
        let state = &shared.instances[&instance];
        assert_eq!(state.series.len(), 2, "the error series is stored once");
        assert!(
            state
                .series
                .iter()
                .all(|series| series.raw.offsets.len() == 10)
        );
        let value = shared
            .measure(&instance, Semantics::CURRENT, now, window)
            .expect("a value");
        // 9 steps of +2 errors and of +100 + 2 requests.
        assert_eq!((value.bad, value.total), (18.0, 918.0));
        // The buckets count each role once too.
        let ring = state.medium.sum(t - HOUR, now + HOUR);
        assert_eq!(ring, [18.0, 918.0]);

        // Grouped differently, the roles' series belong to different instances: kept apart.
        let mut apart = Incremental::new(&ratio_slo("route")).expect("incremental");
        apart.total.by = vec!["code".to_string()];
        apart.ingest(Role::Numerator, piece("500", &errors), None);
        apart.ingest(Role::Total, piece("500", &errors), None);
        let series: usize = apart
            .instances
            .values()
            .map(|state| state.series.len())
            .sum();
        assert_eq!(series, 2);
        apart.reindex();
        assert_eq!(apart.series_index.len(), 2);
    }

    #[test]
    fn ring_sums_with_proportional_edges() {
        let mut ring = Ring::new(MINUTE, 10 * MINUTE);
        for minute in 0..20 {
            ring.add(minute * MINUTE + 30_000, Role::Total, 60.0);
            ring.add(minute * MINUTE + 30_000, Role::Numerator, 1.0);
        }
        let near = |[bad, total]: [f64; 2], expected: [f64; 2]| {
            assert!(
                (bad - expected[0]).abs() < 1e-3 && (total - expected[1]).abs() < 0.1,
                "{bad} {total} vs {expected:?}"
            );
        };
        // The ring keeps the last 12 buckets: minutes 8..=19.
        near(ring.sum(15 * MINUTE, 20 * MINUTE), [5.0, 300.0]);
        // Half of the oldest bucket; the newest bucket has filled up to `to`, and its sample
        // (at :30) is inside: a sample exactly at the end of the window counts.
        near(
            ring.sum(15 * MINUTE + 30_000, 17 * MINUTE + 30_000),
            [2.5, 150.0],
        );
        // A series that begins earlier than those seen so far extends the ring backwards.
        let mut late_first = Ring::new(MINUTE, 10 * MINUTE);
        late_first.add(8 * MINUTE, Role::Numerator, 1.0);
        late_first.add(2 * MINUTE, Role::Total, 60.0);
        late_first.add(8 * MINUTE, Role::Total, 60.0);
        near(late_first.sum(0, 8 * MINUTE + 30_000), [1.0, 120.0]);
        // Older than kept: only what is kept counts, and late samples that old are dropped.
        let newest = 19 * MINUTE + 30_000;
        near(ring.sum(0, newest), [12.0, 720.0]);
        ring.add(0, Role::Total, 1e9);
        near(ring.sum(0, newest), [12.0, 720.0]);
    }
}
