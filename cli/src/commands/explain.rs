//! `canary-split explain`: which variant a request described on the command line gets, and why,
//! and whether a pin token it carries verifies.

use std::fmt::Write as _;

use canary_split::config::{Config, KeySource, PinRule, Route, Variant, FORWARDED_HOST_HEADER};
use canary_split::decision::{admit_to_release, decide, Reason, RequestView};
use canary_split::pin_token::PinKeys;

use super::unix_time;
use crate::config_file::{one_config_with_keys, read_configs, Keys, Loaded};

/// Say which variant a request gets, and why
#[derive(clap::Args)]
#[command(after_help = format!("Keys for token pins come from --key-file or the config's pin_keys_env variable; the \
time from --now or the clock.

Examples:
  canary-split explain --config istio/wasmplugin.yaml --host sklearn-predictor-models.example.com -H 'x-user-id: alice'
  canary-split explain --config filter-config/example.json --host search.example.com --client-ip 10.1.2.3
  canary-split explain --config tokens.json --host shop.example.com -H 'x-canary-token: TOKEN' --key-file keys

{}", crate::EXIT_STATUS))]
pub struct ExplainArgs {
    /// The filter config: JSON, WasmPlugin YAML or ECDS file, holding one config
    #[arg(long, value_name = "FILE")]
    pub config: String,
    /// The request's host (:authority)
    #[arg(long)]
    pub host: String,
    /// A request header (repeatable)
    #[arg(short = 'H', long, value_name = "NAME: VALUE", value_parser = header)]
    pub header: Vec<(String, String)>,
    /// A request cookie (repeatable)
    #[arg(long, value_name = "NAME=VALUE")]
    pub cookie: Vec<String>,
    /// The client's address, for sticky by client_ip
    #[arg(long, value_name = "ADDR")]
    pub client_ip: Option<String>,
    /// Pin token keys, as the gateway's variable holds them [default: the config's pin_keys_env variable]
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<String>,
    /// The time to check tokens' expiry at [default: now]
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,
}

fn header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or("expected 'NAME: VALUE'")?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// A request described on the command line.
struct CommandLineRequest {
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

/// A key list read from a file, checked as the filter checks its variable.
fn read_key_file(path: &str) -> Result<String, String> {
    let value = std::fs::read_to_string(path).map_err(|e| format!("--key-file {path}: {e}"))?;
    PinKeys::parse(&value).map_err(|e| e.describe(path))?;
    Ok(value)
}

pub fn explain(args: &ExplainArgs) -> Result<String, String> {
    let request = CommandLineRequest {
        headers: args
            .header
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .collect(),
        cookies: args.cookie.clone(),
        client_ip: args.client_ip.clone(),
        unix_time: unix_time(args.now)?,
    };
    let keys = args.key_file.as_deref().map(read_key_file).transpose()?;
    let host = &args.host;
    let Loaded { config, keys } =
        one_config_with_keys(&args.config, read_configs(&args.config)?, "explain", keys.as_deref())?;
    let route = config.route_for_authority(host.as_bytes());
    if let (Keys::NotHere(name), Some(route)) = (keys, route) {
        if let Some(source) = carried_token(route, &request) {
            return Err(format!(
                "the request carries a pin token in {}, and no key to check it is here: set {name} to the gateway's keys, or pass --key-file",
                describe(source)
            ));
        }
    }
    Ok(explain_request(&config, host, &request))
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
    if let Some(releases) = config.protected_release(host.as_bytes()) {
        return explain_release_host(config, host, releases, request);
    }
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
            let why = match (&route.sticky, &route.assign) {
                (Some(source), Some(assign)) => format!(
                    "no pin matched and the request has no {}: the filter makes a new random key, decides with it, and sends it back as Set-Cookie: {} (and Secure over HTTPS)",
                    describe(source),
                    assign.set_cookie("<new key>", false)
                ),
                (Some(source), None) => format!("no pin matched and the request has no {}", describe(source)),
                (None, _) => "no pin matched and the route has no sticky key".to_owned(),
            };
            let such = if route.assign.is_some() {
                "new users"
            } else {
                "such requests"
            };
            let _ = writeln!(
                out,
                "variant: random: canary for {weight} % of {such}, primary otherwise"
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

/// A request straight to a release host that `"release_hosts": "token"` protects: let through
/// with a token for that release, or answered 403 by the filter.
fn explain_release_host(
    config: &Config,
    host: &str,
    releases: &[(usize, Variant)],
    request: &CommandLineRequest,
) -> String {
    let mut out = String::new();
    for &(index, release) in releases {
        let Some(route) = config.routes.get(index) else {
            continue;
        };
        let _ = writeln!(
            out,
            "host {host}: the {} host of route {} (release_hosts: token)",
            release.as_str(),
            route.host
        );
        match admit_to_release(route, release, request) {
            Ok(rule) => {
                let source = route
                    .pins
                    .get(rule)
                    .map(|pin| describe(pin.source()))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "let through: pin[{rule}]: {source} carries a token for {} that verifies",
                    release.as_str()
                );
                return out;
            }
            Err(rejected) => {
                for token in rejected {
                    if let Some(pin) = route.pins.get(token.rule) {
                        let _ = writeln!(
                            out,
                            "pin[{}]: the token in {} does not count: {}",
                            token.rule,
                            describe(pin.source()),
                            token.reason
                        );
                    }
                }
            }
        }
    }
    out + "refused: the filter answers 403 (a request straight to a release host needs a valid pin token for that release)\n"
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

pub fn describe(source: &KeySource) -> String {
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
        config.decision_values.of(variant)
    );
    if let Some(host) = &route.target(variant).host {
        let _ = write!(action, "; rewrites :authority to {host}");
        if route.x_forwarded_host {
            let _ = write!(action, " (original kept in {FORWARDED_HOST_HEADER})");
        }
    }
    action + "\n"
}
