//! `canary-split`: the operator's view of the filter, built from the same core.
//!
//! check FILE...      validate filter configs (JSON, or the pluginConfig of WasmPlugin YAML), and
//!                    check authority mode against the Gateways and VirtualServices given
//! explain ...        which variant a request gets, and why

mod gateway;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use canary_split::config::{Config, KeySource, Route, Variant, FORWARDED_HOST_HEADER};
use canary_split::decision::{decide, Reason, RequestView};
use gateway::Routing;
use serde_json::Value;

const USAGE: &str = "usage:
  canary-split check FILE...
      Validates each filter config: a JSON file, or a YAML file whose WasmPlugin documents
      carry the config as spec.pluginConfig. Messages are the filter's own. Given the Gateways
      and VirtualServices too (e.g. check istio/*.yaml), it also checks that every route in
      authority mode can reach its release hosts from its public host's route table.
  canary-split explain --config FILE --host HOST [--header 'NAME: VALUE']... [--cookie NAME=VALUE]... [--client-ip ADDR]
      Says which variant such a request gets, and why.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "check" && !rest.is_empty() => check(rest),
        Some((command, rest)) if command == "explain" => explain(rest),
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

/// One filter config found in a file, as the JSON the filter would be given, with a label saying
/// where it came from and, for a WasmPlugin, the workload labels it selects.
struct FoundConfig {
    label: String,
    json: Result<Vec<u8>, String>,
    selector: Option<BTreeMap<String, String>>,
}

impl FoundConfig {
    /// The filter's own verdict on it, in the filter's words.
    fn parse(self) -> Result<Config, String> {
        self.json
            .and_then(|json| Config::from_json(&json).map_err(|e| e.to_string()))
    }
}

/// Everything `check` reads from its files: filter configs, and the routing they run behind.
#[derive(Default)]
struct Manifests {
    configs: Vec<FoundConfig>,
    routing: Routing,
}

fn read_file(path: &str, manifests: &mut Manifests) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
        manifests.configs.push(FoundConfig {
            label: path.to_owned(),
            json: Ok(bytes),
            selector: None,
        });
        return Ok(());
    }
    let text = String::from_utf8(bytes).map_err(|e| format!("{path}: {e}"))?;
    for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let document: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| format!("{path}: document {index} is not valid YAML: {e}"))?;
        match document.get("kind").and_then(Value::as_str) {
            Some("WasmPlugin") => manifests.configs.push(wasm_plugin_config(path, &document)),
            Some("Gateway") => manifests.routing.add_gateway(&document, path)?,
            Some("VirtualService") => manifests.routing.add_virtual_service(&document, path)?,
            _ => {}
        }
    }
    Ok(())
}

fn wasm_plugin_config(path: &str, document: &Value) -> FoundConfig {
    let name = document
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    // Istio hands the filter the pluginConfig as JSON.
    let json = document
        .pointer("/spec/pluginConfig")
        .ok_or_else(|| "spec.pluginConfig: missing".to_owned())
        .and_then(|config| serde_json::to_vec(config).map_err(|e| e.to_string()));
    let selector = document
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        });
    FoundConfig {
        label: format!("{path}: WasmPlugin {name}"),
        json,
        selector,
    }
}

fn read_manifests(paths: &[String]) -> Result<Manifests, String> {
    let mut manifests = Manifests::default();
    for path in paths {
        read_file(path, &mut manifests)?;
    }
    if manifests.configs.is_empty() {
        return Err(format!("{}: no WasmPlugin document", paths.join(", ")));
    }
    Ok(manifests)
}

fn check(paths: &[String]) -> Result<String, String> {
    let Manifests { configs, routing } = read_manifests(paths)?;
    let mut report = String::new();
    let mut failed = false;
    for found in configs {
        let label = found.label.clone();
        let selector = found.selector.clone();
        match found.parse() {
            Ok(config) => {
                let _ = writeln!(report, "{label}: ok, {} route(s)", config.routes.len());
                if routing.has_gateways() {
                    for finding in routing.check_authority_mode(&config, selector.as_ref()) {
                        failed |= finding.problem;
                        let _ = writeln!(report, "{label}: routes[{}]: {}", finding.route, finding.message);
                    }
                }
            }
            Err(error) => {
                failed = true;
                let _ = writeln!(report, "{label}: invalid configuration: {error}");
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
    let mut configs = read_manifests(std::slice::from_ref(&config_path))?.configs;
    if configs.len() != 1 {
        return Err(format!(
            "{config_path}: holds {} configs; explain needs exactly one",
            configs.len()
        ));
    }
    let found = configs.remove(0);
    let label = found.label.clone();
    let config = found
        .parse()
        .map_err(|e| format!("{label}: invalid configuration: {e}"))?;
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
