//! `canary-split token`: mints a signed pin token, as a tester sends it to reach a release.

use canary_split::config::{
    normalized_public_host, Config, PinRule, ReleaseHosts, Route, Variant, DEFAULT_PIN_KEYS_ENV,
};
use canary_split::pin_token::PinKeys;

use super::explain::describe;
use super::unix_time;
use crate::config_file::read_one_config;
use crate::OneOf;

/// Mint a signed pin token
#[derive(clap::Args)]
#[command(after_help = format!("Prints a pin token for the route with that host, signed with the first key of \
--key-env's variable or of --key-file. Send it as the header or cookie the route's token pin reads, e.g. \
x-canary-token: TOKEN.

With --config, the token is minted only if the gateway running that config would honour it: the host is a \
route's, the route has a token pin rule, and --ttl is within max_token_ttl_seconds. The keys then come from \
the config's pin_keys_env variable unless --key-env or --key-file says otherwise, and stderr says where \
to send the token; stdout holds only the token.

Examples:
  canary-split token --host shop.example.com --to primary --ttl 30m --key-file keys
  CANARY_SPLIT_PIN_KEYS=... canary-split token --host sklearn-predictor-models.example.com --to canary --ttl 2h
  TOKEN=$(canary-split token --config istio/wasmplugin.yaml --host sklearn-predictor-models.example.com --to canary --ttl 2h)

{}", crate::EXIT_STATUS))]
pub struct TokenArgs {
    /// The route's host (without a port)
    #[arg(long)]
    pub host: String,
    /// The release the token pins to
    #[arg(long, value_name = "RELEASE", value_parser = OneOf(&["primary", "canary"]))]
    pub to: String,
    /// How long it is valid: 90s, 30m, 2h, 7d
    #[arg(long, value_name = "DURATION")]
    pub ttl: String,
    /// The filter config the token is for (JSON, WasmPlugin YAML or ECDS file, holding one config)
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// The variable holding the keys [default: the config's pin_keys_env with --config, else CANARY_SPLIT_PIN_KEYS]
    #[arg(long, value_name = "NAME", conflicts_with = "key_file")]
    pub key_env: Option<String>,
    /// A file holding the keys, instead of --key-env
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<String>,
    /// Mint as if it were this time [default: now]
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,
}

pub fn token(args: &TokenArgs) -> Result<String, String> {
    let host = normalized_public_host(&args.host).map_err(|e| format!("--host {e}"))?;
    let to = Variant::try_from(args.to.clone()).map_err(|e| format!("--to {e}"))?;
    // Read here, not by clap, so that a bad or zero TTL gets the project's message.
    let ttl = &args.ttl;
    let seconds = humantime::parse_duration(ttl)
        .ok()
        .map(|ttl| ttl.as_secs())
        .filter(|&seconds| seconds > 0)
        .ok_or_else(|| format!("--ttl {ttl:?}: expected a duration like 90s, 30m, 2h or 7d"))?;
    let config = match &args.config {
        Some(path) => Some((path, read_one_config(path, "token")?.1)),
        None => None,
    };
    let route = match &config {
        Some((path, config)) => Some(honouring_route(path, config, &host, ttl, seconds)?),
        None => None,
    };
    let (value, subject) = match &args.key_file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| format!("--key-file {path}: {e}"))?,
            path.clone(),
        ),
        None => {
            // The gateway reads the config's variable: so does a token minted for that config.
            let name = match (&args.key_env, &config) {
                (Some(name), _) => name.clone(),
                (None, Some((_, config))) => config.pin_keys_env.clone(),
                (None, None) => DEFAULT_PIN_KEYS_ENV.to_owned(),
            };
            let value =
                std::env::var(&name).map_err(|_| format!("{name} is not set: it holds the keys to sign with"))?;
            (value, name)
        }
    };
    let keys = PinKeys::parse(&value).map_err(|e| e.describe(&subject))?;
    let expiry = unix_time(args.now)?
        .checked_add(seconds)
        .ok_or_else(|| format!("--ttl {ttl:?} is too long"))?;
    // The filter verifies a token against the host of the route it matched.
    let signed_for = route.map_or(host.as_str(), |route| route.host.as_str());
    let token = keys.mint(signed_for, to, expiry).ok_or("no key to sign with")?;
    if let Some(route) = route {
        // On stderr: scripts capture stdout, which holds the token alone.
        eprintln!("{}", where_to_send(route, to, expiry));
    }
    Ok(format!("{token}\n"))
}

/// The route of `config` for `host` if the filter would honour a token for it that is valid for
/// `seconds`, or what stands in the way.
fn honouring_route<'c>(
    path: &str,
    config: &'c Config,
    host: &str,
    ttl: &str,
    seconds: u64,
) -> Result<&'c Route, String> {
    let Some(route) = config.route_for_authority(host.as_bytes()) else {
        return Err(match release_host_of(config, host) {
            Some((route, release)) => format!(
                "--host {host} is the {} host of route {} in {path}, not a route's host: tokens are signed for the route's host (--host {})",
                release.as_str(),
                route.host,
                route.host
            ),
            None => {
                let hosts: Vec<&str> = config.routes.iter().map(|route| route.host.as_str()).collect();
                format!(
                    "--host {host}: no route for it in {path} (its routes: {})",
                    hosts.join(", ")
                )
            }
        });
    };
    if !route.has_token_pins() {
        return Err(format!(
            "--host {host}: route {} in {path} has no token pin rule, so the filter reads no token there (add one to its pin, e.g. {{\"token\": {{\"header\": \"x-canary-token\"}}}})",
            route.host
        ));
    }
    if let Some(max) = route.max_token_ttl_seconds.filter(|&max| seconds > max) {
        return Err(format!(
            "--ttl {ttl} is {seconds} seconds, more than max_token_ttl_seconds ({max}) in {path}: the filter would pass the token over as too_long"
        ));
    }
    Ok(route)
}

/// The route and release whose own host (`primary.host`, `canary.host`, port ignored) is `host`.
fn release_host_of<'c>(config: &'c Config, host: &str) -> Option<(&'c Route, Variant)> {
    config.routes.iter().find_map(|route| {
        [Variant::Primary, Variant::Canary].into_iter().find_map(|release| {
            let target = route.target(release).host.as_deref()?;
            let name = target.split_once(':').map_or(target, |(name, _)| name);
            (name == host).then_some((route, release))
        })
    })
}

/// Where the tester sends the token: the headers and cookies the route's token pins read.
fn where_to_send(route: &Route, to: Variant, expiry: u64) -> String {
    let sources: Vec<String> = route
        .pins
        .iter()
        .filter_map(|pin| match pin {
            PinRule::Token { source } => Some(describe(source)),
            PinRule::Value { .. } => None,
        })
        .collect();
    let mut hosts = route.host.clone();
    if let (ReleaseHosts::Token, Some(release_host)) = (route.release_hosts, &route.target(to).host) {
        hosts += &format!(" or its {} host {release_host}", to.as_str());
    }
    format!(
        "send it in {}, to {hosts}; it pins {} until {expiry} (Unix seconds)",
        sources.join(" or "),
        to.as_str()
    )
}
