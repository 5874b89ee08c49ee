//! `canary-split token`: mints a signed pin token, as a tester sends it to reach a release.

use canary_split::config::{normalized_public_host, Variant, DEFAULT_PIN_KEYS_ENV};
use canary_split::pin_token::PinKeys;

use super::unix_time;
use crate::OneOf;

/// Mint a signed pin token
#[derive(clap::Args)]
#[command(after_help = format!("Prints a pin token for the route with that host, signed with the first key of \
--key-env's variable or of --key-file. Send it as the header or cookie the route's token pin reads, e.g. \
x-canary-token: TOKEN.

Examples:
  canary-split token --host shop.example.com --to primary --ttl 30m --key-file keys
  CANARY_SPLIT_PIN_KEYS=... canary-split token --host sklearn-predictor-models.example.com --to canary --ttl 2h

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
    /// The variable holding the keys (the gateway's pin_keys_env)
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PIN_KEYS_ENV, conflicts_with = "key_file")]
    pub key_env: String,
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
    let (value, subject) = match &args.key_file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| format!("--key-file {path}: {e}"))?,
            path.clone(),
        ),
        None => {
            let name = &args.key_env;
            let value =
                std::env::var(name).map_err(|_| format!("{name} is not set: it holds the keys to sign with"))?;
            (value, name.clone())
        }
    };
    let keys = PinKeys::parse(&value).map_err(|e| e.describe(&subject))?;
    let expiry = unix_time(args.now)?
        .checked_add(seconds)
        .ok_or_else(|| format!("--ttl {ttl:?} is too long"))?;
    let token = keys.mint(&host, to, expiry).ok_or("no key to sign with")?;
    Ok(format!("{token}\n"))
}
