//! The filter's guard as Prometheus sees it, for `status` and `rollout`: on each gateway series
//! (one per gateway replica, each judging its own traffic) the gauge `canary_split_guard_tripped`
//! (1 tripped, 0 not), and the trips counted by `canary_split_guard_trips_total`.

use std::collections::BTreeMap;
use std::time::Duration;

use canary_split::metrics::{GUARD_TRIPPED, GUARD_TRIPS};
use serde::Serialize;

use crate::prometheus::{quoted, range, Prometheus, Sample};

/// One gateway series of the gauge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardSeries {
    /// The labels that tell the gateway series apart (the scrape's: `instance`, `pod`, ...).
    pub gateway: BTreeMap<String, String>,
    pub tripped: bool,
}

/// The gauge on every gateway series that reports it for `host`, ordered by their labels.
pub fn guard_series(prometheus: &Prometheus, host: &str) -> Result<Vec<GuardSeries>, String> {
    let samples = prometheus.query(&format!("{GUARD_TRIPPED}{{host={}}}", quoted(host)))?;
    Ok(from_samples(samples))
}

fn from_samples(samples: Vec<Sample>) -> Vec<GuardSeries> {
    let mut series: Vec<GuardSeries> = samples
        .into_iter()
        .map(|sample| {
            let mut gateway = sample.labels;
            gateway.remove("__name__");
            gateway.remove("host");
            GuardSeries {
                gateway,
                tripped: sample.value.is_some_and(|value| value > 0.0),
            }
        })
        .collect();
    series.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    series
}

/// Trips of `host`'s guard over the last `window`, summed over the gateway series.
pub fn trips(prometheus: &Prometheus, host: &str, window: Duration) -> Result<f64, String> {
    let trips = prometheus.query_value(&format!(
        "sum(increase({GUARD_TRIPS}{{host={}}}[{}]))",
        quoted(host),
        range(window)
    ))?;
    Ok(trips.unwrap_or(0.0))
}

/// A gateway series as PromQL would select it: `instance="10.0.0.5:15020",pod="gw-1"`.
pub fn describe_gateway(gateway: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = gateway
        .iter()
        .map(|(name, value)| format!("{name}={}", quoted(value)))
        .collect();
    labels.join(",")
}

/// Whether the guard has tripped anywhere: which series did, out of how many, or `None`.
pub fn tripped(series: &[GuardSeries]) -> Option<String> {
    let tripped: Vec<String> = series
        .iter()
        .filter(|series| series.tripped)
        .map(|series| describe_gateway(&series.gateway))
        .collect();
    (!tripped.is_empty()).then(|| {
        format!(
            "tripped on {} of {} gateway series ({})",
            tripped.len(),
            series.len(),
            tripped.join("; ")
        )
    })
}

/// The guard on one line: tripped where, or not on how many series.
pub fn describe(series: &[GuardSeries]) -> String {
    match (series.len(), tripped(series)) {
        (0, _) => format!("no {GUARD_TRIPPED} series"),
        (_, Some(tripped)) => tripped,
        (1, None) => "not tripped on 1 gateway series".to_owned(),
        (count, None) => format!("not tripped on {count} gateway series"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus answered for `canary_split_guard_tripped{host="shop.example.com"}` while it
    /// scraped two gateways, the first tripped (recorded from tests/e2e/test_rollout.py's rig).
    fn recorded() -> Vec<Sample> {
        let sample = |instance: &str, value: f64| Sample {
            labels: [
                ("__name__", GUARD_TRIPPED),
                ("host", "shop.example.com"),
                ("instance", instance),
                ("job", "gateway"),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
            value: Some(value),
        };
        vec![sample("127.0.0.1:40002", 0.0), sample("127.0.0.1:40001", 1.0)]
    }

    #[test]
    fn each_gateway_series_is_named_by_its_own_labels() {
        let series = from_samples(recorded());
        assert_eq!(
            series
                .iter()
                .map(|s| (describe_gateway(&s.gateway), s.tripped))
                .collect::<Vec<_>>(),
            [
                (r#"instance="127.0.0.1:40001",job="gateway""#.to_owned(), true),
                (r#"instance="127.0.0.1:40002",job="gateway""#.to_owned(), false),
            ]
        );
    }

    #[test]
    fn one_tripped_series_is_enough() {
        let series = from_samples(recorded());
        assert_eq!(
            tripped(&series).as_deref(),
            Some(r#"tripped on 1 of 2 gateway series (instance="127.0.0.1:40001",job="gateway")"#)
        );
        assert_eq!(describe(&series), tripped(&series).unwrap());
    }

    #[test]
    fn untripped_and_missing_series_are_said_as_such() {
        let untripped: Vec<GuardSeries> = from_samples(recorded())
            .into_iter()
            .map(|s| GuardSeries { tripped: false, ..s })
            .collect();
        assert_eq!(tripped(&untripped), None);
        assert_eq!(describe(&untripped), "not tripped on 2 gateway series");
        assert_eq!(describe(&untripped[..1]), "not tripped on 1 gateway series");
        assert_eq!(describe(&[]), "no canary_split_guard_tripped series");
    }

    #[test]
    fn a_value_prometheus_cannot_give_as_a_number_is_not_a_trip() {
        let mut samples = recorded();
        for sample in &mut samples {
            sample.value = None;
        }
        assert_eq!(tripped(&from_samples(samples)), None);
    }
}
