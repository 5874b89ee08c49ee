//! `canary-split`: the operator's view of the filter, built from the same core.
//!
//! check FILE...      validate filter configs (JSON, the pluginConfig of WasmPlugin YAML, or ECDS)
//! explain ...        which variant a request gets, and why
//! status ...         what Prometheus says about each split host
//! rollout ...        raise canary_weight step by step, judging each step; roll back on failure

mod config_file;
mod flags;
mod judge;
mod preset;
mod prometheus;
mod rollout;
mod status;
mod target;
mod text_edit;
mod weight;

use std::fmt::Write as _;
use std::process::ExitCode;

use canary_split::config::{Config, KeySource, Route, Variant, FORWARDED_HOST_HEADER};
use canary_split::decision::{decide, Reason, RequestView};

use config_file::{read_configs, read_one_config};

const USAGE: &str = "usage:
  canary-split check FILE...
      Validates each filter config: a JSON file, a YAML file whose WasmPlugin documents carry
      the config as spec.pluginConfig, or an ECDS file. Messages are the filter's own.
  canary-split explain --config FILE --host HOST [--header 'NAME: VALUE']... [--cookie NAME=VALUE]... [--client-ip ADDR]
      Says which variant such a request gets, and why.
  canary-split status --prometheus URL --config FILE [--host HOST] [--primary NAME --canary NAME]
                      [--preset istio|envoy] [--selector MATCHERS] [--window 5m] [--min-requests 100]
      For each split host: the configured and reported weight, requests by reason, and with the
      releases' names, the canary's share, each release's errors and p95, the verdict a rollout
      would give now; and the alerts firing.
  canary-split rollout --prometheus URL --config FILE [--host HOST] --primary NAME --canary NAME
                       --steps 10,25,50,100 --interval 5m [--kubectl [--run]]
                       [--preset istio|envoy] [--selector MATCHERS] [--window DURATION] [--poll DURATION]
                       [--max-hold DURATION] [--min-requests 100] [--max-error-increase 50]
                       [--error-ratio-floor 1] [--max-latency-increase 30] [--latency-floor 0ms]
                       [--after-write COMMAND]
      Sets canary_weight to each step, waits --interval, judges the canary against primary and
      advances; rolls back to 0 and exits non-zero when it fails, or when Prometheus cannot judge
      it within --max-hold. Writes the one canary_weight line of --config (WasmPlugin YAML or JSON),
      or an ECDS file, then runs the --after-write shell command (CANARY_WEIGHT is set) to apply
      it; with --kubectl prints the kubectl patch commands, with --run runs them.
  NAME is the release's destination_service (istio preset) or envoy_cluster_name (envoy preset).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "check" && !rest.is_empty() => check(rest),
        Some((command, rest)) if command == "explain" => explain(rest),
        Some((command, rest)) if command == "status" => status::status(rest).map_err(with_usage),
        Some((command, rest)) if command == "rollout" => rollout::rollout(rest).map_err(with_usage),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// A mistake on the command line, with the usage after it.
fn with_usage(message: String) -> String {
    if message.ends_with("is required") || message.starts_with("unknown argument") {
        format!("{message}\n{USAGE}")
    } else {
        message
    }
}

fn check(paths: &[String]) -> Result<String, String> {
    let mut report = String::new();
    let mut failed = false;
    for path in paths {
        for found in read_configs(path)? {
            let label = &found.label;
            match found.parse() {
                Ok(config) => {
                    let _ = writeln!(report, "{label}: ok, {} route(s)", config.routes.len());
                }
                Err(error) => {
                    failed = true;
                    let _ = writeln!(report, "{label}: invalid configuration: {error}");
                }
            }
        }
    }
    if failed {
        Err(report.trim_end().to_owned())
    } else {
        Ok(report)
    }
}

/// A request described on the command line.
#[derive(Default)]
struct CommandLineRequest {
    host: Option<String>,
    headers: Vec<(String, String)>,
    cookies: Vec<String>,
    client_ip: Option<String>,
}

impl RequestView for CommandLineRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone().into_bytes())
    }

    fn cookies(&self) -> Option<Vec<u8>> {
        let in_headers = self
            .headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .map(|(_, v)| v.as_str());
        let all: Vec<&str> = in_headers.chain(self.cookies.iter().map(String::as_str)).collect();
        (!all.is_empty()).then(|| all.join("; ").into_bytes())
    }

    fn client_address(&self) -> Option<Vec<u8>> {
        self.client_ip.clone().map(String::into_bytes)
    }
}

fn explain(args: &[String]) -> Result<String, String> {
    let mut config_path = None;
    let mut request = CommandLineRequest::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--config" => config_path = Some(value()?),
            "--host" => request.host = Some(value()?),
            "--header" | "-H" => {
                let header = value()?;
                let (name, value) = header
                    .split_once(':')
                    .ok_or_else(|| format!("--header {header:?}: expected 'NAME: VALUE'"))?;
                request
                    .headers
                    .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            "--cookie" => request.cookies.push(value()?),
            "--client-ip" => request.client_ip = Some(value()?),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let config_path = config_path.ok_or_else(|| format!("--config is required\n{USAGE}"))?;
    let host = request
        .host
        .clone()
        .ok_or_else(|| format!("--host is required\n{USAGE}"))?;
    let (_, config) = read_one_config(&config_path, "explain")?;
    Ok(explain_request(&config, &host, &request))
}

fn explain_request(config: &Config, host: &str, request: &CommandLineRequest) -> String {
    let Some(route) = config.route_for_authority(host.as_bytes()) else {
        return format!(
            "host {host}: no route; passed through untouched (a client-sent {} header is removed)\n",
            config.decision_header
        );
    };
    let weight = f64::from(route.canary_basis_points) / 100.0;
    let decision = decide(route, request, || 0);
    let mut out = format!("host {host}: route {} (canary_weight {weight})\n", route.host);
    match decision.reason {
        Reason::Pinned { rule } => {
            let _ = writeln!(out, "variant: {}", decision.variant.as_str());
            if let Some(pin) = route.pins.get(rule) {
                let value = String::from_utf8_lossy(&pin.value);
                let _ = writeln!(
                    out,
                    "why: pinned by pin[{rule}]: {} is {value:?}",
                    describe(&pin.source)
                );
            }
            out += &describe_action(config, route, decision.variant);
        }
        Reason::Sticky { bucket } => {
            let source = route.sticky.as_ref().map(describe).unwrap_or_default();
            let _ = writeln!(out, "variant: {}", decision.variant.as_str());
            let _ = writeln!(
                out,
                "why: sticky: {source} is in bucket {bucket} of 10000 (salt {:?}); canary takes buckets below {}",
                route.salt, route.canary_basis_points
            );
            out += &describe_action(config, route, decision.variant);
        }
        Reason::Random { .. } => {
            let why = match &route.sticky {
                Some(source) => format!("no pin matched and the request has no {}", describe(source)),
                None => "no pin matched and the route has no sticky key".to_owned(),
            };
            let _ = writeln!(
                out,
                "variant: random: canary for {weight} % of such requests, primary otherwise"
            );
            let _ = writeln!(out, "why: {why}");
            if route.canary_basis_points > 0 {
                out += &describe_action(config, route, Variant::Canary);
            }
            if route.canary_basis_points < 10_000 {
                out += &describe_action(config, route, Variant::Primary);
            }
        }
    }
    out
}

fn describe(source: &KeySource) -> String {
    match source {
        KeySource::Header(name) => format!("header {name}"),
        KeySource::Cookie(name) => format!("cookie {name}"),
        KeySource::ClientAddress => "client address".to_owned(),
    }
}

fn describe_action(config: &Config, route: &Route, variant: Variant) -> String {
    let mut action = format!(
        "{}: sets {}: {}",
        variant.as_str(),
        config.decision_header,
        variant.as_str()
    );
    if let Some(host) = &route.target(variant).host {
        let _ = write!(
            action,
            "; rewrites :authority to {host} (original kept in {FORWARDED_HOST_HEADER})"
        );
    }
    action + "\n"
}
