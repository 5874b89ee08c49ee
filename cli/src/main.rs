//! `canary-split`: the operator's view of the filter, built from the same core.
//!
//! check FILE...      validate filter configs (JSON, the pluginConfig of WasmPlugin YAML, or ECDS),
//!                    and authority mode against the Gateways and VirtualServices given
//! explain ...        which variant a request gets, and why
//! status ...         what Prometheus says about each split host
//! rollout ...        raise canary_weight step by step, judging each step; roll back on failure
//! token ...          mint a signed pin token

mod config_file;
mod flags;
mod gateway;
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
use std::time::{SystemTime, UNIX_EPOCH};

use canary_split::config::{
    normalized_public_host, Config, KeySource, PinRule, Route, Variant, DEFAULT_PIN_KEYS_ENV, FORWARDED_HOST_HEADER,
};
use canary_split::decision::{decide, Reason, RequestView};
use canary_split::pin_token::PinKeys;

use config_file::{is_kind, is_yaml, one_config_with_keys, read_configs, FoundConfig, Keys, Loaded};
use flags::Flags;
use gateway::Routing;

const USAGE: &str = "usage:
  canary-split check FILE...
      Validates each filter config: a JSON file, a YAML file whose WasmPlugin documents carry
      the config as spec.pluginConfig, or an ECDS file. Messages are the filter's own. Token
      pins' keys are checked when their variable (pin_keys_env) is set here. Given the Gateways
      and VirtualServices too (e.g. check istio/*.yaml), it also checks that every route in
      authority mode can reach its release hosts from its public host's route table.
  canary-split explain --config FILE --host HOST [--header 'NAME: VALUE']... [--cookie NAME=VALUE]... [--client-ip ADDR]
                       [--key-file FILE] [--now UNIX_SECONDS]
      Says which variant such a request gets, and why, and whether a pin token verifies. Keys
      come from --key-file or the config's pin_keys_env variable; the time from --now or the clock.
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
  NAME is the release's destination_service (istio preset) or envoy_cluster_name (envoy preset).
  canary-split token --host HOST --to primary|canary --ttl DURATION [--key-env NAME | --key-file FILE] [--now UNIX_SECONDS]
      Prints a pin token for the route with that host, valid for DURATION (90s, 30m, 2h, 7d),
      signed with the first key of the variable NAME (default CANARY_SPLIT_PIN_KEYS) or of FILE.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "check" && !rest.is_empty() => check(rest),
        Some((command, rest)) if command == "explain" => explain(rest),
        Some((command, rest)) if command == "status" => status::status(rest).map_err(with_usage),
        Some((command, rest)) if command == "rollout" => rollout::rollout(rest).map_err(with_usage),
        Some((command, rest)) if command == "token" => token(rest),
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

/// Everything `check` reads from its files: filter configs, and the routing they run behind.
#[derive(Default)]
struct Manifests {
    configs: Vec<FoundConfig>,
    routing: Routing,
}

fn read_manifests(paths: &[String]) -> Result<Manifests, String> {
    let mut manifests = Manifests::default();
    for path in paths {
        if !is_yaml(path) {
            manifests.configs.extend(read_configs(path)?);
            continue;
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for document in config_file::yaml_documents(path, &text)? {
            if is_kind(&document, "WasmPlugin") {
                manifests.configs.push(config_file::wasm_plugin_config(path, &document));
            } else if is_kind(&document, "Gateway") {
                manifests.routing.add_gateway(&document, path)?;
            } else if is_kind(&document, "VirtualService") {
                manifests.routing.add_virtual_service(&document, path)?;
            }
        }
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
        let label = &found.label;
        match found.parse_with_keys(None) {
            Ok(Loaded { config, keys }) => {
                let _ = write!(report, "{label}: ok, {} route(s)", config.routes.len());
                let _ = match keys {
                    Keys::NotNeeded => writeln!(report),
                    Keys::Loaded => writeln!(report, "; token pins' keys in {} ok", config.pin_keys_env),
                    Keys::NotHere(name) => writeln!(report, "; token pins' keys not checked ({name} is not set here)"),
                };
                for (index, route) in config.routes.iter().enumerate() {
                    if let Some(guard) = &route.guard {
                        let _ = writeln!(report, "{label}: routes[{index}] ({}): guard {guard}", route.host);
                    }
                }
                if routing.has_gateways() {
                    for finding in routing.check_authority_mode(&config, found.selector.as_ref()) {
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
    unix_time: u64,
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

    fn unix_time(&self) -> u64 {
        self.unix_time
    }
}

impl CommandLineRequest {
    /// The header or cookie a token pin reads.
    fn value(&self, source: &KeySource) -> Option<Vec<u8>> {
        match source {
            KeySource::Header(name) => self.header(name),
            KeySource::Cookie(name) => {
                let cookies = self.cookies()?;
                canary_split::cookie::find(&cookies, name.as_bytes()).map(<[u8]>::to_vec)
            }
            KeySource::ClientAddress => self.client_address(),
        }
    }
}

/// `--now`, or the clock.
fn unix_time(now: Option<String>) -> Result<u64, String> {
    match now {
        Some(now) => now.parse().map_err(|_| format!("--now {now:?}: expected Unix seconds")),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .map_err(|e| format!("the clock is before 1970: {e}")),
    }
}

/// A key list read from a file, checked as the filter checks its variable.
fn read_key_file(path: &str) -> Result<String, String> {
    let value = std::fs::read_to_string(path).map_err(|e| format!("--key-file {path}: {e}"))?;
    PinKeys::parse(&value).map_err(|e| e.describe(path))?;
    Ok(value)
}

fn explain(args: &[String]) -> Result<String, String> {
    let mut config_path = None;
    let mut key_file = None;
    let mut now = None;
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
            "--key-file" => key_file = Some(value()?),
            "--now" => now = Some(value()?),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    request.unix_time = unix_time(now)?;
    let keys = key_file.as_deref().map(read_key_file).transpose()?;
    let config_path = config_path.ok_or_else(|| format!("--config is required\n{USAGE}"))?;
    let host = request
        .host
        .clone()
        .ok_or_else(|| format!("--host is required\n{USAGE}"))?;
    let Loaded { config, keys } =
        one_config_with_keys(&config_path, read_configs(&config_path)?, "explain", keys.as_deref())?;
    let route = config.route_for_authority(host.as_bytes());
    if let (Keys::NotHere(name), Some(route)) = (keys, route) {
        if let Some(source) = carried_token(route, &request) {
            return Err(format!(
                "the request carries a pin token in {}, and no key to check it is here: set {name} to the gateway's keys, or pass --key-file",
                describe(source)
            ));
        }
    }
    Ok(explain_request(&config, &host, &request))
}

/// Where the first token that a token pin of `route` would read comes from, if the request has one.
fn carried_token<'r>(route: &'r Route, request: &CommandLineRequest) -> Option<&'r KeySource> {
    route.pins.iter().find_map(|pin| match pin {
        PinRule::Token { source } => request
            .value(source)
            .is_some_and(|token| !token.is_empty())
            .then_some(source),
        PinRule::Value { .. } => None,
    })
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
    if let Some(guard) = &route.guard {
        let _ = writeln!(out, "guard: {guard}");
    }
    for rejected in &decision.rejected_tokens {
        if let Some(pin) = route.pins.get(rejected.rule) {
            let _ = writeln!(
                out,
                "pin[{}]: the token in {} does not count: {}",
                rejected.rule,
                describe(pin.source()),
                rejected.reason
            );
        }
    }
    match decision.reason {
        Reason::Pinned { rule } => {
            let _ = writeln!(out, "variant: {}", decision.variant.as_str());
            match route.pins.get(rule) {
                Some(PinRule::Value { source, value, .. }) => {
                    let value = String::from_utf8_lossy(value);
                    let _ = writeln!(out, "why: pinned by pin[{rule}]: {} is {value:?}", describe(source));
                }
                Some(PinRule::Token { source }) => {
                    let _ = writeln!(
                        out,
                        "why: pinned by pin[{rule}]: {} carries a token for {} that verifies{}",
                        describe(source),
                        decision.variant.as_str(),
                        token_details(route, source, request)
                    );
                }
                None => {}
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

/// Which key verified the token in `source`, and until when it is valid.
fn token_details(route: &Route, source: &KeySource, request: &CommandLineRequest) -> String {
    let verified = request
        .value(source)
        .and_then(|token| route.pin_keys.verify(&token, &route.host, || request.unix_time).ok());
    match verified {
        Some(verified) => format!(
            " (key {}; valid until {}, for {} more seconds)",
            verified.key_number,
            verified.expiry,
            verified.expiry - request.unix_time
        ),
        None => String::new(),
    }
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

fn token(args: &[String]) -> Result<String, String> {
    let flags = Flags::parse(
        args,
        &["--host", "--to", "--ttl", "--key-env", "--key-file", "--now"],
        &[],
    )
    .map_err(with_usage)?;
    let host =
        normalized_public_host(flags.required("--host").map_err(with_usage)?).map_err(|e| format!("--host {e}"))?;
    let to =
        Variant::try_from(flags.required("--to").map_err(with_usage)?.to_owned()).map_err(|e| format!("--to {e}"))?;
    let ttl = flags.required("--ttl").map_err(with_usage)?;
    let seconds = flags
        .duration("--ttl")
        .ok()
        .flatten()
        .map(|ttl| ttl.as_secs())
        .filter(|&seconds| seconds > 0)
        .ok_or_else(|| format!("--ttl {ttl:?}: expected a duration like 90s, 30m, 2h or 7d"))?;
    let (key_env, key_file, now) = (
        flags.get("--key-env").map(str::to_owned),
        flags.get("--key-file").map(str::to_owned),
        flags.get("--now").map(str::to_owned),
    );
    let (value, subject) = match (key_env, key_file) {
        (Some(_), Some(_)) => return Err(format!("--key-env and --key-file are exclusive\n{USAGE}")),
        (None, Some(path)) => (
            std::fs::read_to_string(&path).map_err(|e| format!("--key-file {path}: {e}"))?,
            path,
        ),
        (name, None) => {
            let name = name.unwrap_or_else(|| DEFAULT_PIN_KEYS_ENV.to_owned());
            let value =
                std::env::var(&name).map_err(|_| format!("{name} is not set: it holds the keys to sign with"))?;
            (value, name)
        }
    };
    let keys = PinKeys::parse(&value).map_err(|e| e.describe(&subject))?;
    let expiry = unix_time(now)?
        .checked_add(seconds)
        .ok_or_else(|| format!("--ttl {ttl:?} is too long"))?;
    let token = keys.mint(&host, to, expiry).ok_or("no key to sign with")?;
    Ok(format!("{token}\n"))
}
