//! Pure: the scoring options as people write them: significance thresholds
//! (`page=2%/1h,ticket=10%/3d`), working hours (`Mon-Fri 09:00-18:00 UTC`) and incidents files
//! (CSV or YAML). Text in, values or an error naming what is wrong out.

use std::fmt;
use std::time::Duration;

use crate::engine::InstanceLabels;
use crate::replay::parse_time;
use crate::slo::{Millis, TierKind, format_duration, parse_duration};

/// A tier's significant events: more than `share` of the period's budget consumed over
/// `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Significance {
    pub share: f64,
    pub window: Duration,
}

impl Significance {
    /// The SRE Workbook's examples: 2% of the budget in 1h for pages, 10% in 3d for tickets.
    pub fn default_for(kind: TierKind) -> Significance {
        match kind {
            TierKind::Page => Significance {
                share: 0.02,
                window: Duration::from_secs(3_600),
            },
            TierKind::Ticket => Significance {
                share: 0.10,
                window: Duration::from_secs(3 * 86_400),
            },
        }
    }
}

impl fmt::Display for Significance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent: f64 = format!("{:.6}", self.share * 100.0).parse().unwrap_or(0.0);
        write!(f, "{percent}%/{}", format_duration(self.window))
    }
}

/// Significance per tier, page first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub page: Significance,
    pub ticket: Significance,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            page: Significance::default_for(TierKind::Page),
            ticket: Significance::default_for(TierKind::Ticket),
        }
    }
}

impl Thresholds {
    pub fn get(&self, kind: TierKind) -> Significance {
        match kind {
            TierKind::Page => self.page,
            TierKind::Ticket => self.ticket,
        }
    }

    /// `page=2%/1h,ticket=10%/3d`; a tier left out keeps its default.
    pub fn parse(text: &str) -> Result<Thresholds, String> {
        let mut thresholds = Thresholds::default();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (tier, rest) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected TIER=SHARE%/WINDOW, as page=2%/1h"))?;
            let (share, window) = rest
                .split_once('/')
                .ok_or_else(|| format!("{part:?}: expected TIER=SHARE%/WINDOW, as page=2%/1h"))?;
            let percent: f64 = share
                .trim()
                .strip_suffix('%')
                .and_then(|number| number.trim().parse().ok())
                .filter(|percent: &f64| 0.0 < *percent && *percent <= 100.0)
                .ok_or_else(|| {
                    format!("{part:?}: {share:?} is not a percentage in (0, 100], as 2%")
                })?;
            let window = parse_duration(window).map_err(|error| format!("{part:?}: {error}"))?;
            if window.is_zero() {
                return Err(format!("{part:?}: the window must be longer than zero"));
            }
            let significance = Significance {
                share: percent / 100.0,
                window,
            };
            match tier.trim() {
                "page" => thresholds.page = significance,
                "ticket" => thresholds.ticket = significance,
                other => return Err(format!("{other:?} is not a tier (page or ticket)")),
            }
        }
        Ok(thresholds)
    }
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Weekly working hours at a fixed UTC offset: `Mon-Fri 09:00-18:00 UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingHours {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after local midnight: from `start` (included) to `end` (excluded).
    pub start: u32,
    pub end: u32,
    /// Local time − UTC, in minutes.
    pub offset: i32,
}

impl Default for WorkingHours {
    fn default() -> WorkingHours {
        WorkingHours {
            days: [true, true, true, true, true, false, false],
            start: 9 * 60,
            end: 18 * 60,
            offset: 0,
        }
    }
}

impl WorkingHours {
    /// Whether `at` falls within the working hours.
    pub fn contains(&self, at: Millis) -> bool {
        let local_minutes = at.div_euclid(60_000) + i64::from(self.offset);
        let day = local_minutes.div_euclid(1_440);
        let minute = local_minutes.rem_euclid(1_440) as u32;
        // 1970-01-01 was a Thursday.
        let weekday = (day + 3).rem_euclid(7) as usize;
        self.days[weekday] && self.start <= minute && minute < self.end
    }

    /// `DAYS HH:MM-HH:MM [ZONE]`: days as `Mon-Fri`, `Mon,Wed,Fri` or `Sat`; the end after the
    /// start (`24:00` for midnight); the zone `UTC` (the default), `UTC+02:00`, `+0530` or
    /// `UTC-5`, a fixed offset (no daylight saving).
    pub fn parse(text: &str) -> Result<WorkingHours, String> {
        let expected = || {
            format!(
                "{text:?}: expected DAYS HH:MM-HH:MM [UTC|UTC±HH:MM], as Mon-Fri 09:00-18:00 UTC"
            )
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (days, hours, zone) = match words[..] {
            [days, hours] => (days, hours, "UTC"),
            [days, hours, zone] => (days, hours, zone),
            _ => return Err(expected()),
        };
        let mut day_set = [false; 7];
        for item in days.split(',') {
            let index = |name: &str| {
                DAYS.iter()
                    .position(|day| day.eq_ignore_ascii_case(name))
                    .ok_or_else(|| format!("{name:?} is not a day (Mon, Tue, … Sun)"))
            };
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (index(first)?, index(last)?);
                    let mut day = first;
                    loop {
                        day_set[day] = true;
                        if day == last {
                            break;
                        }
                        day = (day + 1) % 7;
                    }
                }
                None => day_set[index(item)?] = true,
            }
        }
        let (start, end) = hours.split_once('-').ok_or_else(expected)?;
        let (start, end) = (clock(start)?, clock(end)?);
        if end <= start {
            return Err(format!(
                "{hours:?}: the end must be after the start (24:00 for midnight)"
            ));
        }
        Ok(WorkingHours {
            days: day_set,
            start,
            end,
            offset: offset(zone)?,
        })
    }
}

impl fmt::Display for WorkingHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ranges: Vec<String> = Vec::new();
        let mut day = 0;
        while day < 7 {
            if !self.days[day] {
                day += 1;
                continue;
            }
            let first = day;
            while day + 1 < 7 && self.days[day + 1] {
                day += 1;
            }
            ranges.push(if first == day {
                DAYS[first].to_string()
            } else {
                format!("{}-{}", DAYS[first], DAYS[day])
            });
            day += 1;
        }
        let hhmm = |minutes: u32| format!("{:02}:{:02}", minutes / 60, minutes % 60);
        let zone = if self.offset == 0 {
            "UTC".to_string()
        } else {
            let sign = if self.offset < 0 { '-' } else { '+' };
            let minutes = self.offset.unsigned_abs();
            format!("UTC{sign}{}", hhmm(minutes))
        };
        write!(
            f,
            "{} {}-{} {zone}",
            ranges.join(","),
            hhmm(self.start),
            hhmm(self.end)
        )
    }
}

fn clock(text: &str) -> Result<u32, String> {
    let (hours, minutes) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a time of day HH:MM"))?;
    let hours: u32 = hours
        .parse()
        .map_err(|_| format!("{text:?} is not a time of day HH:MM"))?;
    let minutes: u32 = minutes
        .parse()
        .map_err(|_| format!("{text:?} is not a time of day HH:MM"))?;
    let total = hours * 60 + minutes;
    if minutes >= 60 || total > 24 * 60 {
        return Err(format!("{text:?} is not a time of day HH:MM"));
    }
    Ok(total)
}

fn offset(zone: &str) -> Result<i32, String> {
    let invalid = || format!("{zone:?} is not UTC or a fixed offset such as UTC+02:00");
    let rest = zone.strip_prefix("UTC").unwrap_or(zone);
    if rest.is_empty() || rest == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match rest.as_bytes()[0] {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return Err(invalid()),
    };
    let (hours, minutes) = match rest.split_once(':') {
        Some((hours, minutes)) => (hours, minutes),
        None if rest.len() == 4 && rest.is_char_boundary(2) => rest.split_at(2),
        None => (rest, "0"),
    };
    let hours: i32 = hours.parse().map_err(|_| invalid())?;
    let minutes: i32 = minutes.parse().map_err(|_| invalid())?;
    if !(0..=14).contains(&hours) || !(0..60).contains(&minutes) {
        return Err(invalid());
    }
    Ok(sign * (hours * 60 + minutes))
}

/// A real incident the team knows of: ground truth for every tier of the SLO instances it
/// names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub start: Millis,
    pub end: Millis,
    pub slo: String,
    /// The instances it concerns: those whose labels include all of these (none: every
    /// instance of the SLO).
    pub labels: InstanceLabels,
}

impl Incident {
    pub fn concerns(&self, slo_id: &str, labels: &InstanceLabels) -> bool {
        self.slo == slo_id && self.labels.iter().all(|pair| labels.contains(pair))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncident {
    start: String,
    end: String,
    slo: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// An incidents file: YAML (a list of `{start, end, slo, labels}`) when `name` ends in `.yaml`
/// or `.yml`, else CSV (`start,end,slo[,labels]`, an optional header line, labels as
/// `name=value` pairs separated by `;`). Times are RFC 3339 or Unix seconds.
pub fn parse_incidents(name: &str, text: &str) -> Result<Vec<Incident>, String> {
    let incidents = if name.ends_with(".yaml") || name.ends_with(".yml") {
        let raw: Vec<RawIncident> =
            serde_saphyr::from_str(text).map_err(|error| format!("{name}: {error}"))?;
        raw.into_iter()
            .enumerate()
            .map(|(index, raw)| {
                incident(
                    &raw.start,
                    &raw.end,
                    &raw.slo,
                    raw.labels.into_iter().collect(),
                )
                .map_err(|error| format!("{name}: incident {}: {error}", index + 1))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let mut incidents = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let at = |error: String| format!("{name}:{}: {error}", index + 1);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = csv_fields(line).map_err(at)?;
            if incidents.is_empty() && fields.first().map(|f| f.trim()) == Some("start") {
                continue;
            }
            let (start, end, slo, labels) = match &fields[..] {
                [start, end, slo] => (start, end, slo, ""),
                [start, end, slo, labels] => (start, end, slo, labels.as_str()),
                _ => {
                    return Err(at(format!(
                        "expected start,end,slo[,labels], found {} fields",
                        fields.len()
                    )));
                }
            };
            let labels = labels
                .split(';')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
                        .ok_or_else(|| format!("{pair:?} is not name=value"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            incidents.push(incident(start, end, slo, labels).map_err(at)?);
        }
        incidents
    };
    Ok(incidents)
}

fn incident(start: &str, end: &str, slo: &str, labels: InstanceLabels) -> Result<Incident, String> {
    let start = parse_time(start)?;
    let end = parse_time(end)?;
    if end < start {
        return Err("the end is before the start".to_string());
    }
    let slo = slo.trim().to_string();
    if slo.is_empty() {
        return Err("no SLO id".to_string());
    }
    Ok(Incident {
        start,
        end,
        slo,
        labels,
    })
}

/// The fields of one CSV line (RFC 4180 quoting: `"a, b"`, `""` for a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".to_string());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(Thresholds::parse("").unwrap(), Thresholds::default());
        let parsed = Thresholds::parse("page=5%/6h").unwrap();
        assert_eq!(parsed.page.share, 0.05);
        assert_eq!(parsed.page.window, Duration::from_secs(6 * 3_600));
        assert_eq!(parsed.ticket, Significance::default_for(TierKind::Ticket));
        assert_eq!(parsed.page.to_string(), "5%/6h");
        assert!(Thresholds::parse("page=2/1h").is_err());
        assert!(Thresholds::parse("warn=2%/1h").is_err());
        assert!(Thresholds::parse("page=0%/1h").is_err());
    }

    #[test]
    fn working_hours() {
        let hours = WorkingHours::parse("Mon-Fri 09:00-18:00 UTC").unwrap();
        assert_eq!(hours, WorkingHours::default());
        assert_eq!(hours.to_string(), "Mon-Fri 09:00-18:00 UTC");
        // 2023-11-14 was a Tuesday.
        let tuesday = parse_time("2023-11-14T00:00:00Z").unwrap();
        let at = |h: i64, m: i64| tuesday + (h * 60 + m) * 60_000;
        assert!(!hours.contains(at(8, 59)));
        assert!(hours.contains(at(9, 0)));
        assert!(hours.contains(at(17, 59)));
        assert!(!hours.contains(at(18, 0)));
        // Saturday the 18th at noon.
        assert!(!hours.contains(at(4 * 24 + 12, 0)));
        // Regression: a zone of four bytes that are not four characters panicked.
        assert!(WorkingHours::parse("Mon-Fri 09:00-18:00 UTC+1é1").is_err());
        let berlin = WorkingHours::parse("Sat,Mon 08:00-24:00 UTC+01:00").unwrap();
        assert_eq!(berlin.to_string(), "Mon,Sat 08:00-24:00 UTC+01:00");
        assert!(!berlin.contains(at(6, 59)));
        assert!(!berlin.contains(at(7, 0)), "a Tuesday");
        assert!(berlin.contains(at(-17, 0)), "Monday 08:00 in Berlin");
        assert!(WorkingHours::parse("Mon-Fri 18:00-09:00").is_err());
        assert!(WorkingHours::parse("Mon-Fri 09:00-18:00 CET").is_err());
    }

    #[test]
    fn incidents_in_csv_and_yaml() {
        let csv = "start,end,slo,labels\n\
                   # the payment outage\n\
                   2023-11-14T01:00:00Z,2023-11-14T01:30:00Z,orders-availability,\"route=POST /orders\"\n\
                   1700000000,1700003600,orders-latency\n";
        let yaml = "- {start: 2023-11-14T01:00:00Z, end: 2023-11-14T01:30:00Z, slo: orders-availability, labels: {route: POST /orders}}\n\
                    - {start: '1700000000', end: '1700003600', slo: orders-latency}\n";
        let expected = vec![
            Incident {
                start: parse_time("2023-11-14T01:00:00Z").unwrap(),
                end: parse_time("2023-11-14T01:30:00Z").unwrap(),
                slo: "orders-availability".to_string(),
                labels: vec![("route".to_string(), "POST /orders".to_string())],
            },
            Incident {
                start: 1_700_000_000_000,
                end: 1_700_003_600_000,
                slo: "orders-latency".to_string(),
                labels: vec![],
            },
        ];
        assert_eq!(parse_incidents("incidents.csv", csv).unwrap(), expected);
        assert_eq!(parse_incidents("incidents.yaml", yaml).unwrap(), expected);
        let bad = parse_incidents("x.csv", "2023-11-14T02:00:00Z,2023-11-14T01:00:00Z,a\n");
        assert_eq!(bad.unwrap_err(), "x.csv:1: the end is before the start");
        assert!(expected[0].concerns(
            "orders-availability",
            &vec![
                ("method".to_string(), "POST".to_string()),
                ("route".to_string(), "POST /orders".to_string())
            ]
        ));
        assert!(!expected[0].concerns("orders-availability", &vec![]));
    }
}
