//! `canary-split check`: the filter's own verdict on each config given, and whether authority mode
//! can work behind the Gateways and VirtualServices given.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config_file::{self, is_kind, is_yaml, read_configs, FoundConfig, Keys, Loaded};
use crate::gateway::Routing;
use crate::gateway_api;
use crate::{Failure, Output};

/// Validate filter configs, and authority mode against the Gateways and VirtualServices given
#[derive(clap::Args)]
#[command(after_help = format!("Messages are the filter's own, word for word. Token pins' keys are checked when their \
variable (pin_keys_env) is set here. Given Gateways and VirtualServices too (or Gateway API Gateways and HTTPRoutes), \
every route in authority mode must reach its release hosts from its public host's route table. Route tables are \
named as on istioctl's istio-ingressgateway, whose Service sends port 80 to 8080 and 443 to 8443 (http.8080; the \
istio/gateway Helm chart's gateway keeps its ports, so Envoy calls that table http.80 there); a WasmPlugin's match \
is judged on both installs.

Examples:
  canary-split check filter-config/example.json
  canary-split check istio/*.yaml
  canary-split check istio/gateway-api/*.yaml
  canary-split check --output json istio/*.yaml

{}", crate::EXIT_STATUS))]
pub struct CheckArgs {
    /// JSON filter configs, WasmPlugin YAML (spec.pluginConfig), ECDS files; Gateways and VirtualServices (or Gateway API Gateways and HTTPRoutes) in YAML
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// text, or json (its shape is in the README)
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

/// Everything `check` reads from its files: filter configs, and the routing they run behind.
#[derive(Default)]
struct Manifests {
    configs: Vec<FoundConfig>,
    routing: Routing,
}

fn read_manifests(paths: &[String]) -> Result<Manifests, String> {
    let mut manifests = Manifests::default();
    let mut gateway_api_documents = gateway_api::Documents::default();
    for path in paths {
        if !is_yaml(path) {
            manifests.configs.extend(read_configs(path)?);
            continue;
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for document in config_file::yaml_documents(path, &text)? {
            if gateway_api::is_gateway_api(&document) {
                gateway_api_documents.push(document, path);
            } else if is_kind(&document, "WasmPlugin") {
                manifests.configs.push(config_file::wasm_plugin_config(path, &document));
            } else if is_kind(&document, "Gateway") {
                manifests.routing.add_gateway(&document, path)?;
            } else if is_kind(&document, "VirtualService") {
                manifests.routing.add_virtual_service(&document, path)?;
            }
        }
    }
    gateway_api_documents.add_to(&mut manifests.routing)?;
    if manifests.configs.is_empty() {
        return Err(format!("{}: no WasmPlugin document", paths.join(", ")));
    }
    Ok(manifests)
}

/// What `check` found, as `--output json` prints it.
#[derive(Serialize)]
struct Report {
    /// No config refused and no route that cannot work.
    ok: bool,
    configs: Vec<Checked>,
}

/// One config found in the files.
#[derive(Serialize)]
struct Checked {
    label: String,
    /// The filter's message when it refuses the config.
    error: Option<String>,
    /// How many routes it has, when valid.
    routes: Option<usize>,
    /// For a config with token pins: the variable their keys come from, and whether it was set here.
    pin_keys: Option<PinKeys>,
    /// The routes with a guard, and what it does.
    guards: Vec<RouteGuard>,
    findings: Vec<RouteFinding>,
}

#[derive(Serialize)]
struct RouteGuard {
    route: usize,
    host: String,
    guard: String,
}

#[derive(Serialize)]
struct PinKeys {
    env: String,
    checked: bool,
}

/// What the authority-mode check says about one route.
#[derive(Serialize)]
struct RouteFinding {
    route: usize,
    problem: bool,
    message: String,
}

fn check_all(paths: &[String]) -> Result<Report, String> {
    let Manifests { configs, routing } = read_manifests(paths)?;
    let configs: Vec<Checked> = configs
        .into_iter()
        .map(|found| match found.parse_with_keys(None) {
            Ok(Loaded { config, keys }) => {
                let findings = if routing.has_gateways() {
                    routing
                        .check_gateway_routing(
                            &config,
                            &gateway_api::attachment(found.targets.as_ref(), found.selector.as_ref()),
                            &found.listeners,
                        )
                        .into_iter()
                        .map(|finding| RouteFinding {
                            route: finding.route,
                            problem: finding.problem,
                            message: finding.message,
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let pin_keys = match keys {
                    Keys::NotNeeded => None,
                    Keys::Loaded => Some(PinKeys {
                        env: config.pin_keys_env.clone(),
                        checked: true,
                    }),
                    Keys::NotHere(env) => Some(PinKeys { env, checked: false }),
                };
                Checked {
                    label: found.label,
                    error: None,
                    routes: Some(config.routes.len()),
                    pin_keys,
                    guards: config
                        .routes
                        .iter()
                        .enumerate()
                        .filter_map(|(route, r)| {
                            r.guard.as_ref().map(|guard| RouteGuard {
                                route,
                                host: r.host.clone(),
                                guard: guard.to_string(),
                            })
                        })
                        .collect(),
                    findings,
                }
            }
            Err(error) => Checked {
                label: found.label,
                error: Some(error),
                routes: None,
                pin_keys: None,
                guards: Vec::new(),
                findings: Vec::new(),
            },
        })
        .collect();
    let ok = configs
        .iter()
        .all(|checked| checked.error.is_none() && checked.findings.iter().all(|finding| !finding.problem));
    Ok(Report { ok, configs })
}

fn text(report: &Report) -> String {
    let mut text = String::new();
    for checked in &report.configs {
        let label = &checked.label;
        if let Some(error) = &checked.error {
            let _ = writeln!(text, "{label}: invalid configuration: {error}");
            continue;
        }
        let _ = write!(text, "{label}: ok, {} route(s)", checked.routes.unwrap_or_default());
        let _ = match &checked.pin_keys {
            None => writeln!(text),
            Some(PinKeys { env, checked: true }) => writeln!(text, "; token pins' keys in {env} ok"),
            Some(PinKeys { env, checked: false }) => {
                writeln!(text, "; token pins' keys not checked ({env} is not set here)")
            }
        };
        for guard in &checked.guards {
            let _ = writeln!(
                text,
                "{label}: routes[{}] ({}): guard {}",
                guard.route, guard.host, guard.guard
            );
        }
        for finding in &checked.findings {
            let _ = writeln!(text, "{label}: routes[{}]: {}", finding.route, finding.message);
        }
    }
    text
}

pub fn check(args: &CheckArgs) -> Result<String, Failure> {
    let report = check_all(&args.files)?;
    match args.output {
        Output::Text if report.ok => Ok(text(&report)),
        Output::Text => Err(Failure::Refused(text(&report).trim_end().to_owned())),
        Output::Json => {
            let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n";
            if report.ok {
                Ok(json)
            } else {
                Err(Failure::Report(json))
            }
        }
    }
}
