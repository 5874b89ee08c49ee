//! The verdict on a canary step: its figures against primary's, by the conditions of the
//! rollout alerts. A pure function of the figures, so every rule is unit-tested.

use std::fmt;

use crate::weight::Weight;

/// What Prometheus says about one release over the judged window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReleaseFigures {
    pub requests: f64,
    /// Requests answered with a 5xx.
    pub errors: f64,
    /// The mean request duration (the histogram's sum over its count: exact whatever its
    /// buckets, where a percentile is only as fine as they are); `None` without requests.
    pub mean_ms: Option<f64>,
}

impl ReleaseFigures {
    pub fn error_ratio(&self) -> f64 {
        if self.requests > 0.0 {
            self.errors / self.requests
        } else {
            0.0
        }
    }
}

impl fmt::Display for ReleaseFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.0} requests, {} errors, mean {}",
            self.requests,
            percent(self.error_ratio()),
            self.mean_ms.map_or_else(|| "-".to_owned(), milliseconds)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    pub primary: ReleaseFigures,
    pub canary: ReleaseFigures,
}

/// When a canary fails, and how much traffic a verdict needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// Requests each release needs in the window before it is judged.
    pub min_requests: f64,
    /// The canary fails when its error ratio is more than this much above primary's (0.5: 50 %)...
    pub max_error_increase: f64,
    /// ...and above this ratio, so that a primary with no errors at all does not turn the canary's
    /// first failure into a rollback.
    pub error_ratio_floor: f64,
    /// The canary fails when its mean latency is more than this much above primary's (0.3: 30 %)...
    pub max_latency_increase: f64,
    /// ...and above this many milliseconds.
    pub latency_floor_ms: f64,
}

impl Default for Criteria {
    /// The conditions of the shipped alerts (istio/alerts.yaml).
    fn default() -> Self {
        Criteria {
            min_requests: 100.0,
            max_error_increase: 0.5,
            error_ratio_floor: 0.01,
            max_latency_increase: 0.3,
            latency_floor_ms: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The canary did as well as primary; notes say what could not be compared.
    Pass { notes: Vec<String> },
    /// The canary did worse; each reason is one condition it broke.
    Fail { reasons: Vec<String> },
    /// Not enough to judge yet: never advance on this.
    Hold { reason: String },
}

/// Judges a step at `weight`. Primary is the baseline when it has enough requests; at 100 % it
/// usually has none, and the canary is then held to the error floor alone.
pub fn judge(figures: &Figures, criteria: &Criteria, weight: Weight) -> Verdict {
    let Figures { primary, canary } = figures;
    if canary.requests < criteria.min_requests {
        return Verdict::Hold {
            reason: too_few("canary", canary.requests, criteria.min_requests),
        };
    }
    let baseline = (primary.requests >= criteria.min_requests).then_some(primary);
    let mut reasons = Vec::new();
    let mut notes = Vec::new();

    let canary_ratio = canary.error_ratio();
    let (error_limit, against) = match baseline {
        Some(primary) => (
            (primary.error_ratio() * (1.0 + criteria.max_error_increase)).max(criteria.error_ratio_floor),
            format!(
                "{:.2} × primary's {} (floor {})",
                1.0 + criteria.max_error_increase,
                percent(primary.error_ratio()),
                percent(criteria.error_ratio_floor)
            ),
        ),
        None => (
            criteria.error_ratio_floor,
            format!(
                "the floor of {} (primary has no baseline)",
                percent(criteria.error_ratio_floor)
            ),
        ),
    };
    if canary_ratio > error_limit {
        reasons.push(format!(
            "canary error ratio {} is over {against}",
            percent(canary_ratio)
        ));
    }

    match (baseline, canary.mean_ms, primary.mean_ms) {
        (Some(_), Some(canary_mean), Some(primary_mean)) => {
            let limit = (primary_mean * (1.0 + criteria.max_latency_increase)).max(criteria.latency_floor_ms);
            if canary_mean > limit {
                reasons.push(format!(
                    "canary mean latency {} is over {:.2} × primary's {} (floor {})",
                    milliseconds(canary_mean),
                    1.0 + criteria.max_latency_increase,
                    milliseconds(primary_mean),
                    milliseconds(criteria.latency_floor_ms)
                ));
            }
        }
        (Some(_), canary_mean, _) if reasons.is_empty() => {
            let missing = if canary_mean.is_none() { "canary" } else { "primary" };
            return Verdict::Hold {
                reason: format!("no latency figures for {missing}"),
            };
        }
        (Some(_), ..) => {}
        (None, ..) => notes.push("latency not compared: primary has no baseline".to_owned()),
    }

    if !reasons.is_empty() {
        return Verdict::Fail { reasons };
    }
    if baseline.is_none() {
        if weight != Weight::FULL {
            return Verdict::Hold {
                reason: too_few("primary", primary.requests, criteria.min_requests),
            };
        }
        notes.insert(
            0,
            format!(
                "at 100 % primary has {}: errors judged against the floor alone",
                requests(primary.requests)
            ),
        );
    }
    Verdict::Pass { notes }
}

fn too_few(release: &str, got: f64, needed: f64) -> String {
    format!("{release} has {} in the window, needs {needed:.0}", requests(got))
}

fn requests(count: f64) -> String {
    let count = count.round();
    if count == 1.0 {
        "1 request".to_owned()
    } else {
        format!("{count:.0} requests")
    }
}

pub fn percent(ratio: f64) -> String {
    format!("{:.2} %", ratio * 100.0)
}

pub fn milliseconds(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> Weight {
        Weight::parse("25").unwrap()
    }

    fn release(requests: f64, errors: f64, mean_ms: f64) -> ReleaseFigures {
        ReleaseFigures {
            requests,
            errors,
            mean_ms: Some(mean_ms),
        }
    }

    fn verdict(primary: ReleaseFigures, canary: ReleaseFigures) -> Verdict {
        judge(&Figures { primary, canary }, &Criteria::default(), step())
    }

    fn reasons(verdict: Verdict) -> Vec<String> {
        match verdict {
            Verdict::Fail { reasons } => reasons,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_canary_like_primary_passes() {
        assert_eq!(
            verdict(release(900.0, 9.0, 40.0), release(300.0, 3.0, 44.0)),
            Verdict::Pass { notes: vec![] }
        );
    }

    #[test]
    fn error_ratio_over_one_and_a_half_times_primary_fails() {
        // Primary 2 %: the canary may reach 3 % and no more.
        assert!(matches!(
            verdict(release(1000.0, 20.0, 40.0), release(200.0, 6.0, 40.0)),
            Verdict::Pass { .. }
        ));
        assert_eq!(
            reasons(verdict(release(1000.0, 20.0, 40.0), release(200.0, 7.0, 40.0))),
            ["canary error ratio 3.50 % is over 1.50 × primary's 2.00 % (floor 1.00 %)"]
        );
    }

    #[test]
    fn the_error_floor_spares_a_canary_next_to_a_flawless_primary() {
        assert!(matches!(
            verdict(release(1000.0, 0.0, 40.0), release(200.0, 2.0, 40.0)),
            Verdict::Pass { .. }
        ));
        assert_eq!(
            reasons(verdict(release(1000.0, 0.0, 40.0), release(200.0, 40.0, 40.0))),
            ["canary error ratio 20.00 % is over 1.50 × primary's 0.00 % (floor 1.00 %)"]
        );
    }

    #[test]
    fn mean_latency_over_one_point_three_times_primary_fails() {
        assert!(matches!(
            verdict(release(1000.0, 0.0, 100.0), release(200.0, 0.0, 130.0)),
            Verdict::Pass { .. }
        ));
        assert_eq!(
            reasons(verdict(release(1000.0, 0.0, 100.0), release(200.0, 0.0, 131.0))),
            ["canary mean latency 131 ms is over 1.30 × primary's 100 ms (floor 0.00 ms)"]
        );
    }

    #[test]
    fn means_tell_apart_what_envoys_default_buckets_do_not() {
        // All of primary in (100, 250] ms and of the canary in (250, 500] ms: the buckets' p95s
        // are 242.5 and 487.5 ms however close the requests are; the means are 240 and 260 ms.
        assert!(matches!(
            verdict(release(1000.0, 0.0, 240.0), release(200.0, 0.0, 260.0)),
            Verdict::Pass { .. }
        ));
        // Both in (250, 500] ms, the same p95 of 487.5 ms; the canary 85 % slower on average.
        assert_eq!(
            reasons(verdict(release(1000.0, 0.0, 260.0), release(200.0, 0.0, 481.0))),
            ["canary mean latency 481 ms is over 1.30 × primary's 260 ms (floor 0.00 ms)"]
        );
    }

    #[test]
    fn the_latency_floor_spares_sub_millisecond_noise() {
        let criteria = Criteria {
            latency_floor_ms: 25.0,
            ..Criteria::default()
        };
        let figures = |canary_mean| Figures {
            primary: release(1000.0, 0.0, 0.5),
            canary: release(200.0, 0.0, canary_mean),
        };
        assert!(matches!(judge(&figures(4.0), &criteria, step()), Verdict::Pass { .. }));
        assert!(matches!(judge(&figures(26.0), &criteria, step()), Verdict::Fail { .. }));
    }

    #[test]
    fn both_conditions_are_reported() {
        assert_eq!(
            reasons(verdict(release(1000.0, 0.0, 10.0), release(200.0, 50.0, 20.0))).len(),
            2
        );
    }

    #[test]
    fn too_few_requests_holds() {
        assert_eq!(
            verdict(release(1000.0, 0.0, 40.0), release(99.0, 0.0, 40.0)),
            Verdict::Hold {
                reason: "canary has 99 requests in the window, needs 100".to_owned()
            }
        );
        assert_eq!(
            verdict(release(1.0, 0.0, 40.0), release(500.0, 0.0, 40.0)),
            Verdict::Hold {
                reason: "primary has 1 request in the window, needs 100".to_owned()
            }
        );
        // Even a canary failing every request is not judged on too few of them.
        assert!(matches!(
            verdict(release(1000.0, 0.0, 40.0), release(10.0, 10.0, 40.0)),
            Verdict::Hold { .. }
        ));
    }

    #[test]
    fn without_a_baseline_a_canary_over_the_floor_fails_and_one_under_it_holds() {
        assert_eq!(
            reasons(verdict(release(0.0, 0.0, 40.0), release(500.0, 50.0, 40.0))),
            ["canary error ratio 10.00 % is over the floor of 1.00 % (primary has no baseline)"]
        );
        assert!(matches!(
            verdict(release(0.0, 0.0, 40.0), release(500.0, 0.0, 40.0)),
            Verdict::Hold { .. }
        ));
    }

    #[test]
    fn at_full_weight_the_canary_is_judged_on_the_floor_alone() {
        let full = |canary| {
            judge(
                &Figures {
                    primary: ReleaseFigures::default(),
                    canary,
                },
                &Criteria::default(),
                Weight::FULL,
            )
        };
        assert_eq!(
            full(release(500.0, 1.0, 40.0)),
            Verdict::Pass {
                notes: vec![
                    "at 100 % primary has 0 requests: errors judged against the floor alone".to_owned(),
                    "latency not compared: primary has no baseline".to_owned()
                ]
            }
        );
        assert!(matches!(full(release(500.0, 10.0, 40.0)), Verdict::Fail { .. }));
    }

    #[test]
    fn missing_latency_figures_hold() {
        let no_histogram = ReleaseFigures {
            mean_ms: None,
            ..release(200.0, 0.0, 0.0)
        };
        assert_eq!(
            verdict(release(1000.0, 0.0, 40.0), no_histogram),
            Verdict::Hold {
                reason: "no latency figures for canary".to_owned()
            }
        );
    }
}
