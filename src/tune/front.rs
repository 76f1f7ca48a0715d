//! Pure: a candidate policy's scores over every instance of an SLO, the Pareto front over
//! (recall ↑, alerts per week ↓, median detection time ↓), and the recommendation.
//!
//! Recommendation rule: among the front's points whose precision is at least the current
//! policy's (a policy that fires nothing counts as precision 1), the highest recall, then the
//! fewest alerts per week, then the fastest median detection, then the policy closest to the
//! current one (see [`crate::tune::Policy::distance`]), then grid order. With no significant event in the range there is nothing to tune against: the
//! current policy is kept.

use crate::score::{Score, Stats};

const WEEK_MILLIS: f64 = 7.0 * 86_400_000.0;

/// One candidate over every instance of an SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub fired: usize,
    pub significant_alerts: usize,
    pub events: usize,
    pub detected: usize,
    /// `None` when nothing fired.
    pub precision: Option<f64>,
    /// `None` without events.
    pub recall: Option<f64>,
    pub alerts_per_week: f64,
    /// Detection times (milliseconds) over every detected event.
    pub detection: Option<Stats>,
}

impl Summary {
    /// The instances' scores of one tier over a range `span` milliseconds long.
    pub fn of<'a>(scores: impl IntoIterator<Item = &'a Score>, span: i64) -> Summary {
        let mut summary = Summary {
            fired: 0,
            significant_alerts: 0,
            events: 0,
            detected: 0,
            precision: None,
            recall: None,
            alerts_per_week: 0.0,
            detection: None,
        };
        let mut detections = Vec::new();
        for score in scores {
            summary.fired += score.fired;
            summary.significant_alerts += score.significant_alerts;
            summary.events += score.events.len();
            summary.detected += score.detected_events;
            detections.extend(
                score
                    .events
                    .iter()
                    .filter_map(|event| event.detection.map(|d| d as f64)),
            );
        }
        summary.precision =
            (summary.fired > 0).then(|| summary.significant_alerts as f64 / summary.fired as f64);
        summary.recall =
            (summary.events > 0).then(|| summary.detected as f64 / summary.events as f64);
        if span > 0 {
            summary.alerts_per_week = summary.fired as f64 * WEEK_MILLIS / span as f64;
        }
        summary.detection = Stats::of(detections);
        summary
    }

    /// Recall; without events there is nothing to miss.
    fn recall_key(&self) -> f64 {
        self.recall.unwrap_or(1.0)
    }

    /// Median detection; nothing detected is the slowest.
    fn detection_key(&self) -> f64 {
        self.detection.map_or(f64::INFINITY, |stats| stats.median)
    }

    /// Precision; nothing fired is no false alert.
    pub fn precision_key(&self) -> f64 {
        self.precision.unwrap_or(1.0)
    }

    /// At least as good as `other` on recall, alerts per week and detection, and better on
    /// one of them.
    pub fn dominates(&self, other: &Summary) -> bool {
        let no_worse = self.recall_key() >= other.recall_key()
            && self.alerts_per_week <= other.alerts_per_week
            && self.detection_key() <= other.detection_key();
        let better = self.recall_key() > other.recall_key()
            || self.alerts_per_week < other.alerts_per_week
            || self.detection_key() < other.detection_key();
        no_worse && better
    }

    /// Equal on recall, alerts per week and median detection.
    pub fn same_point(&self, other: &Summary) -> bool {
        self.recall_key() == other.recall_key()
            && self.alerts_per_week == other.alerts_per_week
            && self.detection_key() == other.detection_key()
    }
}

/// The indices of the points no other point dominates; of points equal on all three, the
/// first only.
pub fn pareto_front(points: &[Summary]) -> Vec<usize> {
    (0..points.len())
        .filter(|&index| {
            let point = &points[index];
            !points.iter().any(|other| other.dominates(point))
                && !points[..index].iter().any(|other| other.same_point(point))
        })
        .collect()
}

/// The recommended point (see the module's rule); `current` is the current policy's index,
/// `distance(i)` how far point `i`'s policy is from it. Points equal to a front point count
/// as on the front.
pub fn recommend(
    points: &[Summary],
    front: &[usize],
    current: usize,
    distance: impl Fn(usize) -> f64,
) -> usize {
    if points[current].events == 0 {
        return current;
    }
    let floor = points[current].precision_key();
    let mut eligible: Vec<usize> = (0..points.len())
        .filter(|&index| {
            front
                .iter()
                .any(|&on| points[on].same_point(&points[index]))
                && points[index].precision_key() >= floor
        })
        .collect();
    // The current point is on the front or dominated by one that is no worse there; if every
    // front point is less precise, keep it.
    if eligible.is_empty() {
        return current;
    }
    let key = |index: usize| {
        let point = &points[index];
        (
            -point.recall_key(),
            point.alerts_per_week,
            point.detection_key(),
        )
    };
    eligible.sort_by(|&a, &b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(ka.2.total_cmp(&kb.2))
            .then((a != current).cmp(&(b != current)))
            .then(distance(a).total_cmp(&distance(b)))
            .then(a.cmp(&b))
    });
    eligible[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(recall: f64, per_week: f64, detection_min: f64, precision: f64) -> Summary {
        Summary {
            fired: 1,
            significant_alerts: 1,
            events: 4,
            detected: (recall * 4.0) as usize,
            precision: Some(precision),
            recall: Some(recall),
            alerts_per_week: per_week,
            detection: Some(Stats {
                median: detection_min * 60_000.0,
                max: detection_min * 60_000.0,
            }),
        }
    }

    #[test]
    fn the_front_holds_the_undominated_points() {
        let points = [
            point(0.5, 2.0, 10.0, 1.0),  // current: dominated by 1
            point(0.5, 1.0, 5.0, 1.0),   // front
            point(1.0, 3.0, 8.0, 0.5),   // front: the best recall
            point(1.0, 4.0, 8.0, 1.0),   // dominated by 2
            point(0.25, 0.5, 20.0, 1.0), // front: the fewest alerts
            point(0.5, 1.0, 5.0, 1.0),   // equal to 1: left out
        ];
        assert_eq!(pareto_front(&points), vec![1, 2, 4]);
        assert!(points[1].dominates(&points[0]));
        assert!(!points[1].dominates(&points[5]));
        assert!(!points[2].dominates(&points[1]));
    }

    #[test]
    fn the_recommendation_keeps_precision_then_takes_recall() {
        let points = [
            point(0.5, 2.0, 10.0, 1.0),
            point(0.5, 1.0, 5.0, 1.0),
            point(1.0, 3.0, 8.0, 0.5),
            point(0.25, 0.5, 20.0, 1.0),
        ];
        let front = pareto_front(&points);
        // Point 2 has the best recall but is less precise than the current policy.
        assert_eq!(recommend(&points, &front, 0, |_| 0.0), 1);
        // A current policy of precision 0.5 lets it through.
        let mut imprecise = points.clone();
        imprecise[0].precision = Some(0.5);
        assert_eq!(recommend(&imprecise, &front, 0, |_| 0.0), 2);
    }

    #[test]
    fn a_current_policy_on_the_front_that_wins_is_kept() {
        let points = [
            point(1.0, 1.0, 5.0, 1.0),
            point(1.0, 1.0, 5.0, 1.0),
            point(0.5, 0.5, 5.0, 1.0),
        ];
        let front = pareto_front(&points);
        assert_eq!(front, vec![0, 2]);
        assert_eq!(recommend(&points, &front, 0, |_| 0.0), 0);
        // Equal to a point before it in the grid: still the current one.
        let front = pareto_front(&points[..]);
        assert_eq!(recommend(&points, &front, 1, |_| 0.0), 1);
    }

    #[test]
    fn of_equal_points_the_closest_to_the_current_policy() {
        let points = [
            point(0.5, 1.0, 9.0, 1.0),
            point(1.0, 1.0, 5.0, 1.0),
            point(1.0, 1.0, 5.0, 1.0),
            point(1.0, 1.0, 5.0, 1.0),
        ];
        let front = pareto_front(&points);
        assert_eq!(front, vec![1]);
        let distances = [0.0, 2.0, 0.5, 1.0];
        assert_eq!(recommend(&points, &front, 0, |i| distances[i]), 2);
    }

    #[test]
    fn no_events_keeps_the_current_policy() {
        let mut points = [point(1.0, 3.0, 5.0, 1.0), point(1.0, 0.0, 5.0, 1.0)];
        for point in &mut points {
            point.events = 0;
            point.recall = None;
        }
        let front = pareto_front(&points);
        assert_eq!(front, vec![1]);
        assert_eq!(recommend(&points, &front, 0, |_| 0.0), 0);
    }

    #[test]
    fn summaries_add_up_instances() {
        use crate::score::{EventScore, SignificantEvent};
        let event = |detection: Option<i64>| EventScore {
            event: SignificantEvent {
                start: 0,
                end: 1,
                lead_in: 0.0,
            },
            detected_at: detection,
            detection,
            resolved_at: None,
            reset: None,
            spent_before_detection: None,
        };
        let score = |fired: usize, significant: usize, events: Vec<EventScore>| Score {
            alerts: Vec::new(),
            detected_events: events.iter().filter(|e| e.detected_at.is_some()).count(),
            events,
            fired,
            still_firing: 0,
            significant_alerts: significant,
            precision: None,
            recall: None,
            detection: None,
            reset: None,
            spent_before_detection: None,
            alerts_per_week: None,
            firing: 0,
            outside_working_hours: None,
        };
        let scores = [
            score(2, 1, vec![event(Some(60_000)), event(None)]),
            score(1, 1, vec![event(Some(180_000))]),
        ];
        let summary = Summary::of(&scores, WEEK_MILLIS as i64 * 2);
        assert_eq!(summary.precision, Some(2.0 / 3.0));
        assert_eq!(summary.recall, Some(2.0 / 3.0));
        assert_eq!(summary.alerts_per_week, 1.5);
        assert_eq!(summary.detection.unwrap().median, 120_000.0);
    }
}
