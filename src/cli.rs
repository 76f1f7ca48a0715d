//! The command line: `check`, `replay`, `demo`. Each subcommand returns an exit code; errors
//! that stop a command are printed by `main`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Document};
use crate::replay::{self, Range};
use crate::score::input::{Thresholds, WorkingHours, parse_incidents};
use crate::score::report::{self, Truth};
use crate::slo::{Sli, Slo, format_duration, parse_duration};
use crate::source::openmetrics;
use crate::window::Semantics;

#[derive(Parser, Debug)]
#[command(
    name = "burnwatch",
    version,
    about = "SLO error-budget alerting: multi-window, multi-burn-rate"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate SLO specs (burnwatch or Sloth prometheus/v1) and daemon configs; exit 1 on errors.
    Check {
        /// Spec files, folders of specs, or daemon config files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay recorded metrics through the alert engine and print the timeline.
    Replay(ReplayArgs),
    /// Sweep candidate alert policies over history; print the Pareto front, the recommended
    /// policy per SLO and tier, and the spec diff that applies it.
    Tune(TuneArgs),
    /// Run the daemon next to Prometheus: evaluate every SLO each interval, alert, serve HTTP.
    Serve {
        /// The daemon config (Prometheus, interval, spec files, web).
        #[arg(long, default_value = "config/burnwatch.yaml")]
        config: PathBuf,
        /// Where alert state is kept across restarts.
        #[arg(long, default_value = "data")]
        state_dir: PathBuf,
        /// Listen address, overriding `web.listen` in the config.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Rehearse the past: evaluate from this time (RFC 3339 or Unix seconds) on, as the
        /// daemon would have, sending notifications for real (point them at a test channel).
        #[arg(long)]
        rehearse_from: Option<String>,
        /// With --rehearse-from: how many times faster than real time the clock runs.
        #[arg(long, default_value_t = 1.0, requires = "rehearse_from")]
        speed: f64,
    },
    /// Exit 0 if a running burnwatch answers its health check (for container HEALTHCHECKs).
    /// Asks `--url`, or `/-/healthy` where `--config`'s `web.listen` says (0.0.0.0 and [::]
    /// asked on loopback), or http://127.0.0.1:9099/-/healthy.
    Healthcheck {
        /// The URL to ask.
        #[arg(long, conflicts_with = "config")]
        url: Option<String>,
        /// The daemon config whose `web.listen` to ask (only that field is read).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replay the order-service seed incident and print the Slack messages it would post.
    Demo {
        /// Real time per 30s evaluation step (the virtual clock's pace).
        #[arg(long, default_value = "40ms", value_parser = parse_duration)]
        pace: Duration,
        /// Run as fast as possible.
        #[arg(long)]
        no_wait: bool,
        /// Write the seed incident's recording (OpenMetrics) to this file and exit.
        #[arg(long)]
        write_data: Option<PathBuf>,
        /// Post the messages to Slack for real with the bot token in this file (or in
        /// $SLACK_BOT_TOKEN). Pages go to #incidents, tickets to #slo-alerts.
        #[arg(long)]
        slack_token_file: Option<PathBuf>,
        /// With a token: post every message to this channel instead.
        #[arg(long)]
        slack_channel: Option<String>,
        /// Slack's Web API base URL.
        #[arg(long, default_value = crate::config::notify::DEFAULT_SLACK_API)]
        slack_api_url: String,
        /// Serve the status page (and the rest of serve's HTTP face) here while the demo runs;
        /// `off` for none.
        #[arg(long, default_value = "127.0.0.1:9099")]
        listen: String,
        /// Whose window arithmetic to follow: a Prometheus version (`3`, `2.51`, `2.42`).
        #[arg(long, default_value = "3", value_parser = parse_semantics)]
        semantics: Semantics,
    },
}

/// Where a replay's specs and history come from (`replay` and `tune`).
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// SLO spec files or folders (default with --config: the config's `rules`).
    #[arg(long, required_unless_present = "config", num_args = 1..)]
    spec: Vec<PathBuf>,
    /// OpenMetrics text with timestamps (the format promtool backfills).
    #[arg(
        long,
        required_unless_present_any = ["prometheus", "config"],
        conflicts_with_all = ["prometheus", "config"]
    )]
    data: Option<PathBuf>,
    /// Replay Prometheus's history instead (base URL; needs --from and --to).
    #[arg(long, requires_all = ["from", "to"], conflicts_with = "config")]
    prometheus: Option<String>,
    /// Replay the history of the Prometheus a daemon config names, with its path prefix,
    /// headers (X-Scope-OrgID), credentials and CA, as `serve` reaches it (needs --from
    /// and --to).
    #[arg(long, requires_all = ["from", "to"])]
    config: Option<PathBuf>,
    /// First evaluation: RFC 3339 or Unix seconds (default: the first sample).
    #[arg(long, value_parser = replay::parse_time)]
    from: Option<i64>,
    /// Last evaluation: RFC 3339 or Unix seconds (default: the last sample).
    #[arg(long, value_parser = replay::parse_time)]
    to: Option<i64>,
    /// Time between evaluations.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    step: Duration,
    /// Whose window arithmetic to follow: a Prometheus version (`3`, `2.51`, `2.42`).
    /// Default: current Prometheus (3) for --data; for --prometheus and --config the
    /// server's version, detected (as `serve` does; `prometheus.semantics` pins it).
    #[arg(long, value_parser = parse_semantics)]
    semantics: Option<Semantics>,
    /// With --data: the most series to keep from the recording (series no SLO selects are
    /// skipped and not counted); a recording needing more is refused.
    #[arg(long, default_value_t = openmetrics::Limits::DEFAULT.max_series)]
    max_series: usize,
    /// With --data: the most samples to keep from the recording (16 bytes each in memory); a
    /// recording needing more is refused.
    #[arg(long, default_value_t = openmetrics::Limits::DEFAULT.max_samples)]
    max_samples: usize,
}

/// `replay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// text, json, or (with --score) csv.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Score each SLO instance's tiers against the significant events instead of printing
    /// the timeline (--from defaults to a full period after the first sample; from
    /// Prometheus, the history read starts a period before --from).
    #[arg(long)]
    score: bool,
    /// Significant events: more than a share of the period's budget consumed over a
    /// rolling window, per tier.
    #[arg(long, requires = "score", conflicts_with = "incidents", default_value = "page=2%/1h,ticket=10%/3d", value_parser = Thresholds::parse)]
    significant: Thresholds,
    /// Significant events from a file of known incidents instead: CSV
    /// (start,end,slo[,labels]) or YAML (.yaml, .yml) with the same fields.
    #[arg(long, requires = "score")]
    incidents: Option<PathBuf>,
    /// Alerts fired outside these hours are counted (days, hours, UTC or a fixed offset).
    #[arg(long, requires = "score", default_value = "Mon-Fri 09:00-18:00 UTC", value_parser = WorkingHours::parse)]
    working_hours: WorkingHours,
    /// With --score: also write the report as one self-contained HTML page (charts of every
    /// window's burn rate, thresholds, alerts, significant events, the score tables).
    #[arg(long, requires = "score")]
    html: Option<PathBuf>,
}

/// `tune`'s arguments.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The candidate policies: a grid file (see README, "Tuning"); default: the Workbook's
    /// window pairs, factors ×0.5 to ×2, a few `for` and `resolve_timeout` values.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// text or json.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Significant events: more than a share of the period's budget consumed over a
    /// rolling window, per tier.
    #[arg(long, conflicts_with = "incidents", default_value = "page=2%/1h,ticket=10%/3d", value_parser = Thresholds::parse)]
    significant: Thresholds,
    /// Significant events from a file of known incidents instead (as replay --score).
    #[arg(long)]
    incidents: Option<PathBuf>,
    /// Alerts fired outside these hours are counted (days, hours, UTC or a fixed offset).
    #[arg(long, default_value = "Mon-Fri 09:00-18:00 UTC", value_parser = WorkingHours::parse)]
    working_hours: WorkingHours,
    /// Print what the sweep cost: precompute time, candidates, time per candidate and per
    /// SLO-day (on stderr with --format json).
    #[arg(long)]
    timings: bool,
    /// Also write the report as one self-contained HTML page: every window's burn rate with
    /// the current and the recommended thresholds, both policies' alerts, the significant
    /// events and the scores.
    #[arg(long)]
    html: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// With --score only.
    Csv,
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Replay(args) => replay_command(args),
        Command::Tune(args) => tune_command(args),
        Command::Healthcheck { url, config } => {
            let url = match (url, config) {
                (Some(url), _) => url,
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    config::health_url(&path.display().to_string(), &text)
                        .map_err(anyhow::Error::msg)?
                }
                (None, None) => "http://127.0.0.1:9099/-/healthy".to_string(),
            };
            crate::source::prometheus::install_crypto_provider();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let status = runtime.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .no_proxy()
                    .build()?;
                client
                    .get(&url)
                    .send()
                    .await
                    .map(|response| response.status())
            });
            match status {
                Ok(status) if status.is_success() => Ok(0),
                Ok(status) => {
                    eprintln!("burnwatch: {url} answered {status}");
                    Ok(1)
                }
                Err(error) => {
                    eprintln!("burnwatch: {url} did not answer: {}", error.without_url());
                    Ok(1)
                }
            }
        }
        Command::Serve {
            config,
            state_dir,
            listen,
            rehearse_from,
            speed,
        } => {
            if !(speed.is_finite() && speed > 0.0 && speed <= 10_000.0) {
                anyhow::bail!("--speed must be a number above 0 and at most 10000");
            }
            let rehearse = rehearse_from
                .map(|from| {
                    let from = crate::replay::parse_time(&from)
                        .map_err(|error| anyhow::anyhow!("--rehearse-from: {error}"))?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |since| since.as_millis() as i64);
                    if !(0..now).contains(&from) {
                        anyhow::bail!("--rehearse-from must be in the past (after 1970)");
                    }
                    Ok(crate::daemon::Rehearsal { from, speed })
                })
                .transpose()?;
            serve(crate::daemon::Options {
                config_path: config,
                state_dir,
                listen,
                rehearse,
            })?;
            Ok(0)
        }
        Command::Demo {
            pace,
            no_wait,
            write_data,
            slack_token_file,
            slack_channel,
            slack_api_url,
            listen,
            semantics,
        } => {
            let listen = match listen.as_str() {
                "off" => None,
                address => Some(address.parse::<std::net::SocketAddr>().with_context(|| {
                    format!("--listen {address}: not an address and port (or `off`)")
                })?),
            };
            if let Some(path) = write_data {
                std::fs::write(&path, crate::demo::recording_text())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote the seed incident's recording to {}", path.display());
                return Ok(0);
            }
            let pace = if no_wait { Duration::ZERO } else { pace };
            let token = match &slack_token_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| {
                            format!("cannot read Slack token file {}", path.display())
                        })?
                        .trim()
                        .to_string(),
                ),
                None => std::env::var("SLACK_BOT_TOKEN")
                    .ok()
                    .map(|token| token.trim().to_string())
                    .filter(|token| !token.is_empty()),
            };
            let slack = token.map(|token| crate::demo::DemoSlack {
                api_url: slack_api_url,
                token: crate::source::prometheus::Secret::new(token),
                channel: slack_channel,
            });
            crate::demo::run(&mut io::stdout().lock(), pace, slack, listen, semantics)?;
            Ok(0)
        }
    }
}

/// A Prometheus version (or `prometheus-3`) as the window arithmetic to follow.
fn parse_semantics(text: &str) -> Result<Semantics, String> {
    text.parse()
}

/// Where a replay reads history from.
enum History {
    /// A recording, the window arithmetic to measure it with, and how much of it to keep.
    File(PathBuf, Semantics, openmetrics::Limits),
    Prometheus(crate::source::prometheus::Client),
}

/// The SLOs and the history source `SourceArgs` name.
fn load_source(source: &SourceArgs) -> Result<(Vec<Slo>, History)> {
    let daemon_config = match &source.config {
        Some(path) => Some((crate::daemon::read_config(path)?, path.clone())),
        None => None,
    };
    let slos = match (&daemon_config, source.spec.is_empty()) {
        (Some((config, _)), true) => config::load_specs(&config.rules)?,
        _ => config::load_specs(&source.spec)?,
    };
    if daemon_config.is_some() || source.prometheus.is_some() {
        crate::source::prometheus::install_crypto_provider();
    }
    let history = match (&source.data, &daemon_config, &source.prometheus) {
        (Some(data), _, _) => History::File(
            data.clone(),
            source.semantics.unwrap_or(Semantics::CURRENT),
            openmetrics::Limits {
                max_series: source.max_series,
                max_samples: source.max_samples,
            },
        ),
        (None, Some((config, path)), _) => {
            let mut config = config.clone();
            if let Some(prometheus) = &mut config.prometheus {
                prometheus.semantics = source.semantics.or(prometheus.semantics);
            }
            History::Prometheus(crate::daemon::prometheus_client(
                &config,
                path,
                "replay its history",
            )?)
        }
        (None, None, Some(url)) => {
            let mut endpoint = crate::source::prometheus::Endpoint::new(url.clone());
            endpoint.semantics = source.semantics;
            History::Prometheus(crate::source::prometheus::Client::new(&endpoint)?)
        }
        (None, None, None) => bail!("give --data FILE, --prometheus URL or --config FILE"),
    };
    Ok((slos, history))
}

/// Reads a recording as a stream, keeping only the series the SLOs select, within `limits`.
fn read_recording(
    data: &std::path::Path,
    slos: &[Slo],
    semantics: Semantics,
    limits: openmetrics::Limits,
) -> Result<openmetrics::Recording> {
    let file =
        std::fs::File::open(data).with_context(|| format!("cannot read {}", data.display()))?;
    let selection = crate::source::recorded::selection(slos);
    let keep = openmetrics::Keep {
        selection: Some(&selection),
        limits,
    };
    let mut recording = openmetrics::read(
        &data.display().to_string(),
        io::BufReader::with_capacity(1 << 20, file),
        keep,
    )?;
    recording.semantics = semantics;
    Ok(recording)
}

/// The ground truth the options name: an incidents file, else the budget thresholds.
fn truth(significant: Thresholds, incidents: Option<&std::path::Path>) -> Result<Truth> {
    let Some(path) = incidents else {
        return Ok(Truth::Budget(significant));
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Truth::Incidents(
        parse_incidents(&path.display().to_string(), &text).map_err(anyhow::Error::msg)?,
    ))
}

/// `replay`: from a recording or Prometheus's history; scored with `--score`.
fn replay_command(args: ReplayArgs) -> Result<i32> {
    let (slos, history) = load_source(&args.source)?;
    let SourceArgs { from, to, step, .. } = args.source;
    if args.score {
        let truth = truth(args.significant, args.incidents.as_deref())?;
        let (recording, range) = scoring_recording(&slos, &history, from, to, step)?;
        let scoring = Scoring {
            format: args.format,
            truth,
            working_hours: args.working_hours,
            html: args.html,
        };
        return replay_score(&slos, &recording, range, scoring);
    }
    if args.format == Format::Csv {
        bail!("--format csv needs --score");
    }
    let timeline = match history {
        History::File(data, semantics, limits) => {
            let recording = read_recording(&data, &slos, semantics, limits)?;
            let range = Range::resolve(&recording, from, to, step).map_err(anyhow::Error::msg)?;
            tracing::info!(
                series = recording.series.len(),
                samples = recording.samples,
                skipped_samples = recording.skipped_samples,
                "replaying {} .. {}",
                replay::format_time(range.from),
                replay::format_time(range.to)
            );
            replay::run(&slos, &recording, range)
        }
        History::Prometheus(client) => replay_from_prometheus(&client, &slos, from, to, step)?,
    };
    if args.format == Format::Json {
        for skipped in &timeline.skipped {
            eprintln!("burnwatch: skipped {}: {}", skipped.slo_id, skipped.reason);
        }
    }
    let mut stdout = io::stdout().lock();
    match args.format {
        Format::Text => write!(stdout, "{}", replay::to_text(&timeline))?,
        Format::Json => writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&replay::to_json(&timeline))?
        )?,
        Format::Csv => unreachable!("refused above"),
    }
    Ok(0)
}

/// The recording scoring (and tuning) reads, and its range. Scoring wants the period's events
/// at every step, so the range starts no earlier than a full period (the longest of the
/// SLOs') after the first sample; from Prometheus, the raw samples are read from a period
/// before --from.
fn scoring_recording(
    slos: &[Slo],
    history: &History,
    from: Option<i64>,
    to: Option<i64>,
    step: Duration,
) -> Result<(openmetrics::Recording, Range)> {
    let recording = match history {
        History::File(data, semantics, limits) => read_recording(data, slos, *semantics, *limits)?,
        History::Prometheus(client) => {
            let (Some(from), Some(to)) = (from, to) else {
                bail!("scoring Prometheus's history needs --from and --to")
            };
            let range = Range::new(from, to, step).map_err(anyhow::Error::msg)?;
            let bar = progress_bar(
                crate::source::history::recording_queries(slos, &range),
                "reading history",
                "requests",
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let recording = runtime.block_on(crate::source::history::recording(
                client,
                slos,
                range,
                || bar.inc(1),
            ))?;
            bar.finish_and_clear();
            recording
        }
    };
    let (first, _) = recording
        .time_range()
        .ok_or_else(|| anyhow::anyhow!("the history has no samples"))?;
    let scorable = crate::tune::scorable_from(slos, first);
    let from = from.unwrap_or(scorable);
    if from < scorable {
        bail!(
            "--score needs a full period of samples before --from: the first sample is at {}, so --from must be {} or later",
            replay::format_time(first),
            replay::format_time(scorable)
        );
    }
    let range = Range::resolve(&recording, Some(from), to, step).map_err(anyhow::Error::msg)?;
    Ok((recording, range))
}

/// Warns of incidents naming SLOs the specs do not define.
fn warn_unknown_incidents(slos: &[Slo], truth: &Truth) {
    if let Truth::Incidents(incidents) = truth {
        for incident in incidents {
            if !slos.iter().any(|slo| slo.id == incident.slo) {
                eprintln!(
                    "burnwatch: an incident names SLO {:?}, which the specs do not define",
                    incident.slo
                );
            }
        }
    }
}

/// How `replay --score` scores and what it writes.
struct Scoring {
    format: Format,
    truth: Truth,
    working_hours: WorkingHours,
    /// Where the HTML report goes, if anywhere.
    html: Option<PathBuf>,
}

/// `replay --score`: the replay of a recording, scored.
fn replay_score(
    slos: &[Slo],
    recording: &openmetrics::Recording,
    range: Range,
    scoring: Scoring,
) -> Result<i32> {
    let Scoring {
        format,
        truth,
        working_hours,
        html,
    } = scoring;
    let windows = truth.windows();
    let measuring = replay::Measuring {
        windows: &windows,
        error_ratios: html.is_some(),
    };
    let (timeline, consumption) = replay::run_measured(slos, recording, range, Some(measuring));
    for skipped in &timeline.skipped {
        eprintln!("burnwatch: skipped {}: {}", skipped.slo_id, skipped.reason);
    }
    warn_unknown_incidents(slos, &truth);
    let card = report::scorecard(slos, &timeline, &consumption, truth, working_hours);
    if let Some(path) = &html {
        let report = crate::score::html::from_scorecard(slos, &card, &consumption);
        write_report(path, &crate::score::html::render(&report))?;
    }
    let mut stdout = io::stdout().lock();
    match format {
        Format::Text => write!(stdout, "{}", report::to_text(&card))?,
        Format::Json => writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&report::to_json(&card))?
        )?,
        Format::Csv => write!(stdout, "{}", report::to_csv(&card))?,
    }
    Ok(0)
}

/// Writes an HTML report and says where.
fn write_report(path: &std::path::Path, page: &str) -> Result<()> {
    std::fs::write(path, page).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote the report to {} ({} KiB)",
        path.display(),
        page.len().div_ceil(1024)
    );
    Ok(())
}

/// `tune`: the sweep over a recording or Prometheus's history, its report and spec diff.
fn tune_command(args: TuneArgs) -> Result<i32> {
    if args.format == Format::Csv {
        bail!("tune prints text or json");
    }
    let (slos, history) = load_source(&args.source)?;
    let grid = match &args.grid {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            crate::tune::Grid::parse(&path.display().to_string(), &text)
                .map_err(anyhow::Error::msg)?
        }
        None => crate::tune::Grid::default_grid(),
    };
    let truth = truth(args.significant, args.incidents.as_deref())?;
    warn_unknown_incidents(&slos, &truth);
    let SourceArgs { from, to, step, .. } = args.source;
    let (recording, range) = scoring_recording(&slos, &history, from, to, step)?;
    let options = crate::tune::Options {
        grid,
        truth,
        working_hours: args.working_hours,
    };
    let bar = progress_bar(0, "sweeping", "policies");
    let sweep = crate::tune::sweep(
        &slos,
        &recording,
        range,
        &options,
        &|progress| match progress {
            crate::tune::Progress::Total(total) => bar.set_length(total),
            crate::tune::Progress::Done => bar.inc(1),
        },
    );
    bar.finish_and_clear();
    let changes = crate::tune::diff::spec_changes(&sweep);
    if let Some(path) = &args.html {
        write_report(path, &crate::score::html::render(&sweep.report(&options)))?;
    }
    let mut stdout = io::stdout().lock();
    match args.format {
        Format::Json => {
            for skipped in &sweep.skipped {
                eprintln!("burnwatch: skipped {}: {}", skipped.slo_id, skipped.reason);
            }
            if args.timings {
                eprint!(
                    "{}",
                    crate::tune::report::timings_text(&sweep.timings, range.to - range.from)
                );
            }
            writeln!(
                stdout,
                "{}",
                serde_json::to_string_pretty(&crate::tune::report::to_json(&sweep, &changes))?
            )?
        }
        _ => write!(
            stdout,
            "{}",
            crate::tune::report::to_text(&sweep, &changes, args.timings)
        )?,
    }
    Ok(0)
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
fn progress_bar(len: u64, message: &'static str, unit: &str) -> indicatif::ProgressBar {
    if !io::IsTerminal::is_terminal(&io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{elapsed}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}

/// `replay --prometheus` or `--config`: the same engine over Prometheus's history, with a
/// progress bar on a terminal.
fn replay_from_prometheus(
    client: &crate::source::prometheus::Client,
    slos: &[Slo],
    from: Option<i64>,
    to: Option<i64>,
    step: Duration,
) -> Result<replay::Timeline> {
    let (Some(from), Some(to)) = (from, to) else {
        bail!("replaying Prometheus's history needs --from and --to")
    };
    let range = Range::new(from, to, step).map_err(anyhow::Error::msg)?;
    let bar = progress_bar(
        crate::source::history::queries_needed(slos, &range),
        "reading history",
        "requests",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeline = runtime.block_on(crate::source::history::replay(client, slos, range, || {
        bar.inc(1)
    }))?;
    bar.finish_and_clear();
    Ok(timeline)
}

/// Runs the daemon; SIGHUP reloads, SIGTERM and SIGINT stop it after the cycle in flight.
fn serve(options: crate::daemon::Options) -> Result<()> {
    crate::source::prometheus::install_crypto_provider();
    crate::daemon::limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (reload_sender, reloads) = tokio::sync::mpsc::channel(4);
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let signals = {
            let shutdown = shutdown.clone();
            let reload_sender = reload_sender.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = hangup.recv() => {
                            let (reply, outcome) = tokio::sync::oneshot::channel();
                            if reload_sender.send(reply).await.is_ok() {
                                match outcome.await {
                                    Ok(Ok(())) => tracing::info!("SIGHUP: configuration reloaded"),
                                    Ok(Err(error)) => tracing::error!("SIGHUP: reload rejected: {error}"),
                                    Err(_) => {}
                                }
                            }
                        }
                        _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down"); shutdown.cancel(); break; }
                        _ = interrupt.recv() => { tracing::info!("SIGINT: shutting down"); shutdown.cancel(); break; }
                    }
                }
            })
        };
        let result = crate::daemon::run(options, shutdown, reload_sender, reloads).await;
        signals.abort();
        result
    })
}

/// Like `promtool check`: one verdict per file, problems on stderr, exit 1 if any.
fn check(paths: &[PathBuf]) -> Result<i32> {
    let files = config::expand(paths)?;
    if files.is_empty() {
        bail!("no .yaml or .yml files found in {paths:?}");
    }
    let mut failed = false;
    let mut stdout = io::stdout().lock();
    let mut all_slos: Vec<Slo> = Vec::new();
    for file in files {
        writeln!(stdout, "Checking {}", file.display())?;
        match config::load_file(&file) {
            Ok(Document::Slos(slos)) => {
                writeln!(stdout, "  SUCCESS: {} SLOs found", slos.len())?;
                describe(&mut stdout, &slos)?;
                all_slos.extend(slos);
            }
            Ok(Document::Daemon(daemon)) => {
                writeln!(
                    stdout,
                    "  SUCCESS: daemon config (evaluation every {}), rules: {}",
                    format_duration(daemon.evaluation_interval),
                    daemon
                        .rules
                        .iter()
                        .map(|rule| rule.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
                match &daemon.state.backend {
                    config::StateBackend::Sqlite => {
                        writeln!(stdout, "  state: sqlite (under --state-dir)")?
                    }
                    config::StateBackend::Postgres { url_file, lease } => writeln!(
                        stdout,
                        "  state: postgres (URL in {}), replicas sharing it; the leader's lease lasts {}",
                        url_file.display(),
                        humantime::format_duration(*lease)
                    )?,
                }
                match config::load_specs(&daemon.rules) {
                    Ok(slos) => {
                        writeln!(stdout, "  SUCCESS: its rules define {} SLOs", slos.len())?;
                        describe(&mut stdout, &slos)?;
                        for warning in config::cross_check(&daemon, &slos) {
                            writeln!(stdout, "  WARNING: {warning}")?;
                        }
                    }
                    Err(errors) => {
                        failed = true;
                        writeln!(stdout, "  FAILED: its rules have errors")?;
                        eprintln!("{errors}");
                    }
                }
            }
            Err(errors) => {
                failed = true;
                writeln!(stdout, "  FAILED: {} problem(s)", errors.len())?;
                eprintln!("{}", config::ConfigErrors(errors));
            }
        }
    }
    // The spec files given are one set, as `serve` loads its rules: SLO ids must be unique
    // across them. A verdict of its own, so stdout never says only SUCCESS when this fails.
    let duplicates = duplicate_ids(&all_slos);
    if !duplicates.is_empty() {
        failed = true;
        writeln!(stdout, "Checking SLO ids across the files")?;
        writeln!(
            stdout,
            "  FAILED: {} SLO id(s) defined twice",
            duplicates.len()
        )?;
        for (first, again) in duplicates {
            writeln!(
                stdout,
                "  - {:?}: {} and {}",
                again.id, first.origin, again.origin
            )?;
            eprintln!(
                "{}: SLO id {:?} is already defined at {}",
                again.origin, again.id, first.origin
            );
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Each SLO whose id an earlier one already has, with that earlier one.
fn duplicate_ids(slos: &[Slo]) -> Vec<(&Slo, &Slo)> {
    slos.iter()
        .enumerate()
        .filter_map(|(index, slo)| {
            let first = slos[..index].iter().find(|other| other.id == slo.id)?;
            Some((first, slo))
        })
        .collect()
}

fn describe(out: &mut impl Write, slos: &[Slo]) -> io::Result<()> {
    for slo in slos {
        let tiers: Vec<String> = slo
            .tiers
            .iter()
            .map(|tier| {
                let pairs: Vec<String> = tier
                    .windows
                    .iter()
                    .map(|pair| {
                        format!(
                            "{}x {}/{}",
                            (pair.factor * 100.0).round() / 100.0,
                            format_duration(pair.long),
                            format_duration(pair.short)
                        )
                    })
                    .collect();
                format!("{} [{}]", tier.kind, pairs.join(", "))
            })
            .collect();
        let source = match slo.sli.local() {
            Ok(_) => "replayable from a recording".to_string(),
            Err(reason) => {
                format!("Prometheus only, cannot be replayed from a recording: {reason}")
            }
        };
        let kind = match slo.sli {
            Sli::Ratio { .. } => "ratio",
            Sli::Latency { .. } => "latency",
            Sli::NativeLatency { .. } => "native-histogram latency",
            Sli::Raw { .. } => "raw",
        };
        let group = if slo.group_by.is_empty() {
            String::new()
        } else {
            format!(" by ({})", slo.group_by.join(", "))
        };
        writeln!(
            out,
            "  - {}: {}% over {}, {kind} SLI{group}; {}; {source}",
            slo.id,
            slo.objective.percent(),
            format_duration(slo.period),
            if tiers.is_empty() {
                "no alerting tiers".to_string()
            } else {
                tiers.join("; ")
            }
        )?;
        for warning in &slo.warnings {
            writeln!(out, "    WARNING: {warning}")?;
        }
    }
    Ok(())
}
