//! The few calls to Prometheus's HTTP API that status and rollout need: instant queries and the
//! alerts its rules have raised.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub struct Prometheus {
    base: String,
    /// `base` with any password or user name replaced, for messages and output.
    shown: String,
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
        let base = url.trim_end_matches('/').to_owned();
        Prometheus {
            shown: redacted_url(&base),
            base,
            agent,
        }
    }

    /// The URL as it may be shown: without its user information (`user:password@`).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// An instant query that must return a vector.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data: QueryData = self.get("/api/v1/query", &[("query", promql)])?;
        if data.result_type != "vector" {
            return Err(format!(
                "{promql}: expected a vector, got a {}",
                printable(&data.result_type)
            ));
        }
        Ok(data
            .result
            .into_iter()
            .map(|sample| Sample {
                labels: printable_labels(sample.metric),
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
        Ok(data
            .alerts
            .into_iter()
            .map(|alert| Alert {
                labels: printable_labels(alert.labels),
                state: printable(&alert.state),
                active_at: alert.active_at.as_deref().map(printable),
            })
            .collect())
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, String> {
        let url = format!("{}{path}", self.base);
        let shown = format!("{}{path}", self.shown);
        // Whatever a message quotes (ureq's error, Prometheus's text) is shown without the password.
        let clean = |text: String| printable(&text.replace(&self.base, &self.shown));
        let mut request = self.agent.get(&url);
        for (key, value) in query {
            request = request.query(*key, *value);
        }
        let mut response = request
            .call()
            .map_err(|e| format!("Prometheus at {} is unreachable: {}", self.shown, clean(e.to_string())))?;
        let status = response.status();
        let reply: ApiResponse<T> = response.body_mut().read_json().map_err(|e| {
            format!(
                "{shown}: HTTP {status}, not a Prometheus API answer: {}",
                clean(e.to_string())
            )
        })?;
        match (reply.status.as_str(), reply.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(format!(
                "{shown}: HTTP {status}: {}",
                clean(reply.error.unwrap_or_else(|| "no data".to_owned()))
            )),
        }
    }
}

/// `text` without control characters (terminal escape sequences among them): what a server
/// sends is printed to the operator's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn printable_labels(labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .into_iter()
        .map(|(name, value)| (printable(&name), printable(&value)))
        .collect()
}

/// A URL with its user information (`user:password@`) replaced by `***@`.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.to_owned(),
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
    fn urls_are_shown_without_their_user_information() {
        assert_eq!(redacted_url("http://prometheus:9090"), "http://prometheus:9090");
        assert_eq!(
            redacted_url("https://admin:s3cret@prom.example.com:9090/prefix?x=a@b"),
            "https://***@prom.example.com:9090/prefix?x=a@b"
        );
        assert_eq!(redacted_url("http://token@prom/"), "http://***@prom/");
        assert_eq!(redacted_url("http://a:b@c@prom"), "http://***@prom");
        assert_eq!(redacted_url("prom:9090"), "prom:9090");
        assert!(!Prometheus::new("http://u:hunter2@127.0.0.1:1")
            .url()
            .contains("hunter2"));
    }

    #[test]
    fn unreachable_prometheus_is_reported_without_the_password() {
        let error = Prometheus::new("http://u:hunter2@127.0.0.1:1").alerts().unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("***@127.0.0.1:1"), "{error}");
    }

    #[test]
    fn control_characters_from_the_server_are_not_printed() {
        assert_eq!(
            printable("canary\u{1b}[2J\u{1b}]0;owned\u{7}\r\n"),
            "canary\u{fffd}[2J\u{fffd}]0;owned\u{fffd}\u{fffd}\u{fffd}"
        );
        assert_eq!(printable("sklearn-canary ✓"), "sklearn-canary ✓");
    }

    #[test]
    fn ranges_round_up_to_whole_seconds() {
        assert_eq!(range(Duration::from_secs(300)), "300s");
        assert_eq!(range(Duration::from_millis(4200)), "5s");
        assert_eq!(range(Duration::ZERO), "1s");
    }
}
