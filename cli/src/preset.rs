//! Where a release's requests, errors and latency come from: Istio's standard metrics as an ingress
//! gateway reports them, or plain Envoy's per-cluster statistics.

use std::time::Duration;

use crate::judge::{Figures, ReleaseFigures};
use crate::prometheus::{quoted, range, Prometheus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `istio_requests_total` and `istio_request_duration_milliseconds`, one release per
    /// `destination_service` (e.g. `sklearn-canary-predictor.models.svc.cluster.local`).
    Istio,
    /// `envoy_cluster_upstream_rq_*`, one release per `envoy_cluster_name`.
    Envoy,
}

impl Preset {
    pub fn parse(name: &str) -> Result<Preset, String> {
        match name {
            "istio" => Ok(Preset::Istio),
            "envoy" => Ok(Preset::Envoy),
            other => Err(format!("--preset {other:?}: expected istio or envoy")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Istio => "istio",
            Preset::Envoy => "envoy",
        }
    }

    /// The label that tells the releases apart.
    pub fn release_label(self) -> &'static str {
        match self {
            Preset::Istio => "destination_service",
            Preset::Envoy => "envoy_cluster_name",
        }
    }

    /// Label matchers every query adds unless `--selector` replaces them: for Istio, the
    /// requests the ingress gateway reports as a client (a release's sidecar would count them
    /// again as `reporter="destination"`), from istioctl's gateway, its Deployment and namespace.
    /// Other installs' gateways (the Helm chart's, the Gateway API's) need `--selector`.
    pub fn default_selector(self) -> &'static str {
        match self {
            Preset::Istio => {
                r#"reporter="source",source_workload="istio-ingressgateway",source_workload_namespace="istio-system""#
            }
            Preset::Envoy => "",
        }
    }

    fn requests_metric(self) -> &'static str {
        match self {
            Preset::Istio => "istio_requests_total",
            Preset::Envoy => "envoy_cluster_upstream_rq_total",
        }
    }

    fn errors_metric(self) -> (&'static str, &'static str) {
        match self {
            Preset::Istio => ("istio_requests_total", r#"response_code=~"5..""#),
            Preset::Envoy => ("envoy_cluster_upstream_rq_xx", r#"envoy_response_code_class="5""#),
        }
    }

    /// The request duration histogram, in milliseconds.
    fn duration_histogram(self) -> &'static str {
        match self {
            Preset::Istio => "istio_request_duration_milliseconds",
            Preset::Envoy => "envoy_cluster_upstream_rq_time",
        }
    }
}

/// The queries for one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    preset: Preset,
    matchers: String,
}

impl Queries {
    /// `selector` is the label matchers to add (`--selector`), or `None` for the preset's own.
    pub fn new(preset: Preset, selector: Option<&str>, release: &str) -> Queries {
        let mut matchers = format!("{}={}", preset.release_label(), quoted(release));
        let extra = selector.unwrap_or(preset.default_selector()).trim().trim_matches(',');
        if !extra.is_empty() {
            matchers = format!("{matchers},{extra}");
        }
        Queries { preset, matchers }
    }

    /// Whether the release has any request series at all: a check that the names are right.
    pub fn series(&self) -> String {
        format!("count({}{{{}}})", self.preset.requests_metric(), self.matchers)
    }

    pub fn requests(&self, window: Duration) -> String {
        format!(
            "sum(increase({}{{{}}}[{}]))",
            self.preset.requests_metric(),
            self.matchers,
            range(window)
        )
    }

    pub fn errors(&self, window: Duration) -> String {
        let (metric, failed) = self.preset.errors_metric();
        format!(
            "sum(increase({metric}{{{},{failed}}}[{}]))",
            self.matchers,
            range(window)
        )
    }

    /// The mean duration: the histogram's sum over its count, exact whatever its buckets (Envoy's
    /// default ones step 2 to 5 times, too coarse to compare percentiles within 30 %). No value
    /// without requests.
    pub fn mean_ms(&self, window: Duration) -> String {
        let (histogram, matchers, range) = (self.preset.duration_histogram(), &self.matchers, range(window));
        format!(
            "sum(increase({histogram}_sum{{{matchers}}}[{range}])) / (sum(increase({histogram}_count{{{matchers}}}[{range}])) > 0)"
        )
    }

    pub fn figures(&self, prometheus: &Prometheus, window: Duration) -> Result<ReleaseFigures, String> {
        Ok(ReleaseFigures {
            requests: prometheus.query_value(&self.requests(window))?.unwrap_or(0.0),
            // A release that never failed has no 5xx series.
            errors: prometheus.query_value(&self.errors(window))?.unwrap_or(0.0),
            mean_ms: prometheus.query_value(&self.mean_ms(window))?,
        })
    }
}

/// The two releases' queries.
pub struct Releases {
    /// The label that tells them apart.
    pub label: &'static str,
    pub primary_name: String,
    pub canary_name: String,
    pub primary: Queries,
    pub canary: Queries,
}

impl Releases {
    pub fn new(preset: Preset, selector: Option<&str>, primary: &str, canary: &str) -> Result<Releases, String> {
        if primary == canary {
            return Err(format!("--primary and --canary are both {primary:?}"));
        }
        if selector.is_some_and(|s| s.contains(['{', '}'])) {
            return Err("--selector: give label matchers without braces, e.g. 'job=\"gateway\"'".to_owned());
        }
        Ok(Releases {
            label: preset.release_label(),
            primary_name: primary.to_owned(),
            canary_name: canary.to_owned(),
            primary: Queries::new(preset, selector, primary),
            canary: Queries::new(preset, selector, canary),
        })
    }

    pub fn figures(&self, prometheus: &Prometheus, window: Duration) -> Result<Figures, String> {
        Ok(Figures {
            primary: self.primary.figures(prometheus, window)?,
            canary: self.canary.figures(prometheus, window)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn istio_queries_count_what_the_gateway_reports_per_destination_service() {
        let canary = Queries::new(Preset::Istio, None, "sklearn-canary-predictor.models.svc.cluster.local");
        let matchers = r#"destination_service="sklearn-canary-predictor.models.svc.cluster.local",reporter="source",source_workload="istio-ingressgateway",source_workload_namespace="istio-system""#;
        assert_eq!(
            canary.requests(FIVE_MINUTES),
            format!("sum(increase(istio_requests_total{{{matchers}}}[300s]))")
        );
        assert_eq!(
            canary.errors(FIVE_MINUTES),
            format!(r#"sum(increase(istio_requests_total{{{matchers},response_code=~"5.."}}[300s]))"#)
        );
        assert_eq!(
            canary.mean_ms(FIVE_MINUTES),
            format!(
                "sum(increase(istio_request_duration_milliseconds_sum{{{matchers}}}[300s])) / \
                 (sum(increase(istio_request_duration_milliseconds_count{{{matchers}}}[300s])) > 0)"
            )
        );
    }

    #[test]
    fn envoy_queries_count_per_cluster_and_a_selector_replaces_the_presets() {
        let canary = Queries::new(Preset::Envoy, None, "canary");
        assert_eq!(
            canary.errors(Duration::from_secs(5)),
            r#"sum(increase(envoy_cluster_upstream_rq_xx{envoy_cluster_name="canary",envoy_response_code_class="5"}[5s]))"#
        );
        assert_eq!(
            canary.series(),
            r#"count(envoy_cluster_upstream_rq_total{envoy_cluster_name="canary"})"#
        );
        let istio = Queries::new(Preset::Istio, Some(r#"reporter="source",source_workload="gw","#), "c");
        assert_eq!(
            istio.series(),
            r#"count(istio_requests_total{destination_service="c",reporter="source",source_workload="gw"})"#
        );
    }

    #[test]
    fn the_default_selector_is_istioctls_gateway_and_a_selector_points_at_another_install() {
        let release = "sklearn-canary-predictor.models.svc.cluster.local";
        let series = |selector: Option<&str>| Queries::new(Preset::Istio, selector, release).series();
        assert!(series(None)
            .ends_with(r#"source_workload="istio-ingressgateway",source_workload_namespace="istio-system"})"#));
        // The Helm chart as Istio's guide installs it, and a Gateway `gateway` of class `istio`.
        for (workload, namespace) in [("istio-ingress", "istio-ingress"), ("gateway-istio", "istio-ingress")] {
            let selector =
                format!(r#"reporter="source",source_workload="{workload}",source_workload_namespace="{namespace}""#);
            assert_eq!(
                series(Some(&selector)),
                format!(r#"count(istio_requests_total{{destination_service="{release}",{selector}}})"#)
            );
        }
    }

    #[test]
    fn releases_must_differ_and_selectors_have_no_braces() {
        assert!(Releases::new(Preset::Envoy, None, "a", "a").is_err());
        assert!(Releases::new(Preset::Envoy, Some("{job=\"x\"}"), "a", "b").is_err());
        assert!(Releases::new(Preset::Envoy, Some("job=\"x\""), "a", "b").is_ok());
    }
}
