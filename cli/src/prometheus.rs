//! The few calls to Prometheus's HTTP API that status and rollout need: instant queries and the
//! alerts its rules have raised.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    /// `None` for NaN or an infinity (a quantile of no data).
    pub value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    /// `firing` or `pending`.
    pub state: String,
    #[serde(rename = "activeAt", default)]
    pub active_at: Option<String>,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("?", String::as_str)
    }
}

#[derive(Deserialize)]
struct ApiResponse<T> {
    status: String,
    data: Option<T>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<VectorSample>,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct AlertsData {
    alerts: Vec<Alert>,
}

impl Prometheus {
    pub fn new(url: &str) -> Prometheus {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            // Prometheus explains a refused query in a JSON body: read it rather than stop at the status.
            .http_status_as_error(false)
            .build()
            .into();
        Prometheus {
            base: url.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// An instant query that must return a vector.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data: QueryData = self.get("/api/v1/query", &[("query", promql)])?;
        if data.result_type != "vector" {
            return Err(format!("{promql}: expected a vector, got a {}", data.result_type));
        }
        Ok(data
            .result
            .into_iter()
            .map(|sample| Sample {
                labels: sample.metric,
                value: sample.value.1.parse::<f64>().ok().filter(|v| v.is_finite()),
            })
            .collect())
    }

    /// The value of a query that sums to at most one series; no series is `None`.
    pub fn query_value(&self, promql: &str) -> Result<Option<f64>, String> {
        let samples = self.query(promql)?;
        match samples.as_slice() {
            [] => Ok(None),
            [sample] => Ok(sample.value),
            _ => Err(format!("{promql}: expected one series, got {}", samples.len())),
        }
    }

    /// The alerts of Prometheus's own rules, pending and firing.
    pub fn alerts(&self) -> Result<Vec<Alert>, String> {
        let data: AlertsData = self.get("/api/v1/alerts", &[])?;
        Ok(data.alerts)
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        for (key, value) in query {
            request = request.query(*key, *value);
        }
        let mut response = request
            .call()
            .map_err(|e| format!("Prometheus at {} is unreachable: {e}", self.base))?;
        let status = response.status();
        let reply: ApiResponse<T> = response
            .body_mut()
            .read_json()
            .map_err(|e| format!("{url}: HTTP {status}, not a Prometheus API answer: {e}"))?;
        match (reply.status.as_str(), reply.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(format!(
                "{url}: HTTP {status}: {}",
                reply.error.unwrap_or_else(|| "no data".to_owned())
            )),
        }
    }
}

/// A label value as a PromQL string literal.
pub fn quoted(value: &str) -> String {
    let mut literal = String::with_capacity(value.len() + 2);
    literal.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                literal.push('\\');
                literal.push(c);
            }
            '\n' => literal.push_str("\\n"),
            c => literal.push(c),
        }
    }
    literal.push('"');
    literal
}

/// A duration as PromQL writes a range, in whole seconds (at least one).
pub fn range(duration: Duration) -> String {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    format!("{}s", seconds.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_quoted_for_promql() {
        assert_eq!(quoted("sklearn-canary.models"), "\"sklearn-canary.models\"");
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn ranges_round_up_to_whole_seconds() {
        assert_eq!(range(Duration::from_secs(300)), "300s");
        assert_eq!(range(Duration::from_millis(4200)), "5s");
        assert_eq!(range(Duration::ZERO), "1s");
    }
}
