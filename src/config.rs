//! The filter's JSON configuration: typed, deserialized straight from the bytes with `serde`, and
//! validated as it is read, so every problem names its field path
//! (`routes[0].canary_weight: 150 is not in 0..=100`). Everything the request path needs is
//! prepared here, once: lower-cased names, weights in basis points, a map from host to route.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, value::MapAccessDeserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::authority::{self, MAX_HOST_LEN};
use crate::guard::GuardConfig;
use crate::pin_token::PinKeys;
use crate::sticky_cookie::{CookieAssignment, DEFAULT_MAX_AGE_SECONDS, DEFAULT_PATH, MAX_MAX_AGE_SECONDS};
use crate::sticky_hash::BUCKETS;

/// The decision header's name when the config does not set `decision_header`.
pub const DEFAULT_DECISION_HEADER: &str = "x-canary-route";
/// The environment variable token pins take their keys from when the config does not set
/// `pin_keys_env`.
pub const DEFAULT_PIN_KEYS_ENV: &str = "CANARY_SPLIT_PIN_KEYS";
/// Where the client's original `:authority` is kept when the filter rewrites it.
pub const FORWARDED_HOST_HEADER: &str = "x-forwarded-host";
/// Headers the filter or Envoy set themselves: `decision_header` cannot take their names.
const SET_BY_THE_GATEWAY: &[&str] = &[
    FORWARDED_HOST_HEADER,
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
];
/// Headers that carry the client's credentials: the filter removes the decision header from every
/// request to a host it does not split, so naming one of these would strip them all.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];
/// Headers that frame the HTTP message or the connection: overwriting or removing one breaks the
/// request.
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "te",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "expect",
    "trailer",
];

/// The fields each object of the config may have, in the order the types declare them;
/// `filter-config/schema.json` must list the same (tests compare both with what serde accepts).
pub const CONFIG_FIELDS: &[&str] = &[
    "decision_header",
    "decision_values",
    "pin_keys_env",
    "max_token_ttl_seconds",
    "routes",
];
pub const DECISION_VALUES_FIELDS: &[&str] = &["primary", "canary"];
pub const ROUTE_FIELDS: &[&str] = &[
    "host",
    "primary",
    "canary",
    "canary_weight",
    "pin",
    "sticky",
    "salt",
    "x_forwarded_host",
    "guard",
    "release_hosts",
];
pub const TARGET_FIELDS: &[&str] = &["host"];
pub const PIN_RULE_FIELDS: &[&str] = &["header", "cookie", "token", "value", "to"];
pub const TOKEN_FIELDS: &[&str] = &["header", "cookie"];
pub const STICKY_FIELDS: &[&str] = &["header", "cookie", "client_ip", "assign"];
pub const ASSIGN_FIELDS: &[&str] = &["max_age_seconds", "path", "domain"];
pub const GUARD_FIELDS: &[&str] = &[
    "window_seconds",
    "min_requests",
    "max_error_increase",
    "error_ratio_floor",
    "max_latency_increase",
    "latency_floor_ms",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Variant {
    Primary,
    Canary,
}

impl Variant {
    /// The value of the decision header, and the name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Primary => "primary",
            Variant::Canary => "canary",
        }
    }
}

impl TryFrom<String> for Variant {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "primary" => Ok(Variant::Primary),
            "canary" => Ok(Variant::Canary),
            other => Err(format!("{other:?} is not \"primary\" or \"canary\"")),
        }
    }
}

/// Where a request value comes from: a header, a cookie, or the client's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// Lower-cased header name.
    Header(String),
    Cookie(String),
    ClientAddress,
}

/// A rule that forces a variant at any weight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "Object<PinRuleFields>")]
pub enum PinRule {
    /// A header or cookie with exactly `value` forces `to`.
    Value {
        source: KeySource,
        value: Vec<u8>,
        to: Variant,
    },
    /// A header or cookie carrying a token that verifies (`pin_token`) forces the release the
    /// token names.
    Token { source: KeySource },
}

impl PinRule {
    pub fn source(&self) -> &KeySource {
        match self {
            PinRule::Value { source, .. } | PinRule::Token { source } => source,
        }
    }
}

/// What the filter writes into the decision header for each release. Header mode's VirtualService
/// matches the canary's value: one clients cannot guess keeps the canary out of reach of a client
/// that sets the header itself while the filter is bypassed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionValues {
    pub primary: String,
    pub canary: String,
}

impl Default for DecisionValues {
    fn default() -> Self {
        DecisionValues {
            primary: Variant::Primary.as_str().to_owned(),
            canary: Variant::Canary.as_str().to_owned(),
        }
    }
}

impl DecisionValues {
    pub fn of(&self, variant: Variant) -> &str {
        match variant {
            Variant::Primary => &self.primary,
            Variant::Canary => &self.canary,
        }
    }
}

/// One variant's target: with `host`, the filter rewrites `:authority` to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "Object<TargetFields>")]
pub struct Target {
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "Object<RouteFields>")]
pub struct Route {
    /// Public host, lower-cased, without port.
    pub host: String,
    pub primary: Target,
    pub canary: Target,
    /// Share of traffic for the canary, in `0..=10_000` basis points.
    pub canary_basis_points: u16,
    pub pins: Vec<PinRule>,
    pub sticky: Option<KeySource>,
    /// With a sticky cookie: a request without one gets a new key in that cookie.
    pub assign: Option<CookieAssignment>,
    /// Salt of the sticky hash; the route's host unless the config overrides it.
    pub salt: String,
    /// When the filter rewrites `:authority`, it keeps the original in `x-forwarded-host`.
    pub x_forwarded_host: bool,
    /// The keys its token pins verify with; none for a route without token pins, or for a
    /// config read without its environment.
    pub pin_keys: PinKeys,
    /// Takes a failing canary out of the split (`guard`); none when the route has no guard.
    pub guard: Option<GuardConfig>,
    /// The longest a token may still be valid for when it is presented, in seconds (the config's
    /// `max_token_ttl_seconds`); `None`: no limit.
    pub max_token_ttl_seconds: Option<u64>,
    /// Who may send requests straight to the releases' own hosts.
    pub release_hosts: ReleaseHosts,
    /// The distinct cookie names its rules read, so a request's cookies are parsed once for all.
    pub cookie_names: Vec<String>,
}

/// Who may reach a route's release hosts (`primary.host`, `canary.host`) directly, without
/// going through the public host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum ReleaseHosts {
    /// Anyone who knows the name (the gateway's routes decide).
    #[default]
    Open,
    /// Only a request carrying a valid pin token (of the route's token pins) for that release;
    /// the filter answers any other with 403.
    Token,
}

impl TryFrom<String> for ReleaseHosts {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "open" => Ok(ReleaseHosts::Open),
            "token" => Ok(ReleaseHosts::Token),
            other => Err(format!("{other:?} is not \"open\" or \"token\"")),
        }
    }
}

impl Route {
    pub fn target(&self, variant: Variant) -> &Target {
        match variant {
            Variant::Primary => &self.primary,
            Variant::Canary => &self.canary,
        }
    }

    /// Whether it has a token pin rule, which needs keys.
    pub fn has_token_pins(&self) -> bool {
        self.first_token_rule().is_some()
    }

    /// The index of its first token pin rule, if it has one.
    fn first_token_rule(&self) -> Option<usize> {
        self.pins.iter().position(|pin| matches!(pin, PinRule::Token { .. }))
    }

    /// The headers its token pins read, which the filter removes once it has read them: a
    /// token is for the gateway, not for the release's backend.
    pub fn token_headers(&self) -> impl Iterator<Item = &str> {
        self.pins.iter().filter_map(|pin| match pin {
            PinRule::Token {
                source: KeySource::Header(name),
            } => Some(name.as_str()),
            _ => None,
        })
    }
}

/// Every distinct cookie name the pins and the sticky key read, in rule order.
fn cookie_names(pins: &[PinRule], sticky: Option<&KeySource>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for source in pins.iter().map(PinRule::source).chain(sticky) {
        if let KeySource::Cookie(name) = source {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// A validated configuration, ready for the request path.
#[derive(Debug)]
pub struct Config {
    /// Lower-cased name of the header that carries the decision.
    pub decision_header: String,
    /// The decision header's value for each release.
    pub decision_values: DecisionValues,
    /// The environment variable token pins take their keys from.
    pub pin_keys_env: String,
    pub routes: Vec<Route>,
    route_by_host: HashMap<Vec<u8>, usize>,
    /// The release hosts (without port) of routes with `"release_hosts": "token"`, and which
    /// route's release each is; a host may serve several.
    protected_release_hosts: ReleasesByHost,
}

/// Release hosts (lower case, without port) and the (route index, release) each serves.
type ReleasesByHost = HashMap<Vec<u8>, Vec<(usize, Variant)>>;

impl Config {
    /// Parses and validates the filter's JSON configuration, as the filter does: token pins take
    /// their keys from the variable `pin_keys_env` names, looked up with `env` (the VM's
    /// environment in the filter), and a config with token pins but no usable key is refused.
    pub fn from_json_with_env(json: &[u8], env: impl FnOnce(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = Config::from_json(json)?;
        let Some((index, rule)) = config
            .routes
            .iter()
            .enumerate()
            .find_map(|(index, route)| Some((index, route.first_token_rule()?)))
        else {
            return Ok(config);
        };
        let name = &config.pin_keys_env;
        let problem = match env(name).map(|value| PinKeys::parse(&value)) {
            Some(Ok(keys)) => {
                for route in config.routes.iter_mut().filter(|route| route.has_token_pins()) {
                    route.pin_keys = keys.clone();
                }
                return Ok(config);
            }
            Some(Err(error)) => format!("needs a usable key, but {}", error.describe(name)),
            None => format!("needs a key, but the VM's environment has no {name}"),
        };
        Err(ConfigError {
            path: format!("routes[{index}].pin[{rule}].token"),
            problem,
        })
    }

    /// Parses and validates the configuration's structure only, with no environment: token pins
    /// get no keys, so no token verifies. For tools and tests; the filter runs
    /// [`Config::from_json_with_env`]. Routes are validated as they are read, so no second copy
    /// of a large config is ever held: a Wasm VM's memory never shrinks.
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        if json.trim_ascii().is_empty() {
            return Err(ConfigError::at_root(
                "is empty (expected a JSON object with \"routes\")",
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let parsed = serde_path_to_error::deserialize::<_, Object<ConfigFields>>(&mut deserializer);
        match (parsed, deserializer.end()) {
            (Ok(Object(fields)), Ok(())) => Config::new(fields),
            (Err(error), _) => Err(describe_error(json, &error)),
            (Ok(_), Err(trailing)) => Err(ConfigError::at_root(format!("is not valid JSON: {trailing}"))),
        }
    }

    /// The checks that span routes, on a config whose every field is valid.
    fn new(fields: ConfigFields) -> Result<Config, ConfigError> {
        let Array(mut routes) = fields.routes;
        let mut route_by_host = HashMap::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            if let Some(first) = route_by_host.insert(route.host.as_bytes().to_vec(), index) {
                return Err(ConfigError {
                    path: format!("routes[{index}].host"),
                    problem: format!("{:?} is already the host of routes[{first}]", route.host),
                });
            }
        }
        let decision_header = fields
            .decision_header
            .map_or_else(|| DEFAULT_DECISION_HEADER.to_owned(), |DecisionHeader(name)| name);
        refuse_rule_headers_named(&routes, &decision_header)?;
        let max_token_ttl_seconds = fields.max_token_ttl_seconds.map(|MaxTokenTtl(seconds)| seconds);
        for route in &mut routes {
            route.max_token_ttl_seconds = max_token_ttl_seconds;
        }
        let protected_release_hosts = protected_release_hosts(&routes, &route_by_host)?;
        Ok(Config {
            decision_header,
            decision_values: fields.decision_values.unwrap_or_default(),
            pin_keys_env: fields
                .pin_keys_env
                .map_or_else(|| DEFAULT_PIN_KEYS_ENV.to_owned(), |EnvVarName(name)| name),
            routes,
            route_by_host,
            protected_release_hosts,
        })
    }

    /// Whether any route has a token pin, which needs keys.
    pub fn has_token_pins(&self) -> bool {
        self.routes.iter().any(Route::has_token_pins)
    }

    /// The route for a request's `:authority`, matched case-insensitively with the port ignored.
    pub fn route_for_authority(&self, authority: &[u8]) -> Option<&Route> {
        self.route_index(authority).and_then(|index| self.routes.get(index))
    }

    /// Where in `routes` the route for an `:authority` is (see `route_for_authority`).
    pub fn route_index(&self, authority: &[u8]) -> Option<usize> {
        let mut buffer = [0; MAX_HOST_LEN];
        let host = authority::normalized_host(authority, &mut buffer)?;
        self.route_by_host.get(host).copied()
    }

    /// For an `:authority` that is a protected release host (`"release_hosts": "token"`), the
    /// routes and releases it serves, matched as `route_index` matches public hosts.
    pub fn protected_release(&self, authority: &[u8]) -> Option<&[(usize, Variant)]> {
        if self.protected_release_hosts.is_empty() {
            return None;
        }
        let mut buffer = [0; MAX_HOST_LEN];
        let host = authority::normalized_host(authority, &mut buffer)?;
        self.protected_release_hosts.get(host).map(Vec::as_slice)
    }
}

/// A rule that reads the decision header would read what the filter itself wrote (split hosts) or
/// nothing (it removes the header elsewhere): refused, naming the rule.
fn refuse_rule_headers_named(routes: &[Route], decision_header: &str) -> Result<(), ConfigError> {
    let problem = || {
        format!("{decision_header:?} is the decision header, which the filter overwrites on split hosts and removes on others")
    };
    for (index, route) in routes.iter().enumerate() {
        for (rule, pin) in route.pins.iter().enumerate() {
            let field = match pin {
                PinRule::Value { .. } => "header",
                PinRule::Token { .. } => "token.header",
            };
            if matches!(pin.source(), KeySource::Header(name) if name == decision_header) {
                return Err(ConfigError {
                    path: format!("routes[{index}].pin[{rule}].{field}"),
                    problem: problem(),
                });
            }
        }
        if matches!(&route.sticky, Some(KeySource::Header(name)) if name == decision_header) {
            return Err(ConfigError {
                path: format!("routes[{index}].sticky.header"),
                problem: problem(),
            });
        }
    }
    Ok(())
}

/// The release hosts the routes with `"release_hosts": "token"` protect. A protected host must
/// not be a public host the filter splits: that request would be split, never checked.
fn protected_release_hosts(
    routes: &[Route],
    route_by_host: &HashMap<Vec<u8>, usize>,
) -> Result<ReleasesByHost, ConfigError> {
    let mut protected = ReleasesByHost::new();
    for (index, route) in routes.iter().enumerate() {
        if route.release_hosts != ReleaseHosts::Token {
            continue;
        }
        if !route.has_token_pins() {
            return Err(ConfigError {
                path: format!("routes[{index}].release_hosts"),
                problem: "\"token\" admits only a request with a pin token, but the route has no token pin rule: every direct request would get 403".to_owned(),
            });
        }
        let mut any = false;
        for variant in [Variant::Primary, Variant::Canary] {
            let Some(target_host) = &route.target(variant).host else {
                continue;
            };
            any = true;
            let mut buffer = [0; MAX_HOST_LEN];
            let host = authority::normalized_host(target_host.as_bytes(), &mut buffer).unwrap_or_default();
            if let Some(split) = route_by_host.get(host) {
                return Err(ConfigError {
                    path: format!("routes[{index}].{}.host", variant.as_str()),
                    problem: format!(
                        "{target_host:?} is the host of routes[{split}], which the filter splits: it cannot also be a protected release host"
                    ),
                });
            }
            protected.entry(host.to_vec()).or_default().push((index, variant));
        }
        if !any {
            return Err(ConfigError {
                path: format!("routes[{index}].release_hosts"),
                problem: "\"token\" protects the releases' own hosts, but neither primary nor canary has a host"
                    .to_owned(),
            });
        }
    }
    Ok(protected)
}

/// A configuration problem: where (`routes[0].pin[1].to`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub problem: String,
}

impl ConfigError {
    fn at_root(problem: impl Into<String>) -> Self {
        ConfigError {
            path: "config".to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Turns serde's error into the filter's: the field path, and a problem worded in JSON's terms.
/// A syntax error anywhere wins over a problem found before it, so the message never depends on
/// how far the typed parse got.
fn describe_error(json: &[u8], error: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let inner = error.inner();
    if inner.is_syntax() || inner.is_eof() {
        return ConfigError::at_root(format!("is not valid JSON: {inner}"));
    }
    if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(json) {
        return ConfigError::at_root(format!("is not valid JSON: {syntax}"));
    }
    let message = inner.to_string();
    // serde_json appends the position; the path says where, better.
    let location = format!(" at line {} column {}", inner.line(), inner.column());
    let message = message.strip_suffix(&location).unwrap_or(&message);
    let path = match error.path().to_string() {
        root if root == "." => "config".to_owned(),
        path => path,
    };
    let field_path = |field: &str| {
        if path == "config" {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(field) = quoted_after(message, "missing field `") {
        return ConfigError {
            path: field_path(field),
            problem: "missing".to_owned(),
        };
    }
    if let Some(field) = quoted_after(message, "duplicate field `") {
        return ConfigError {
            path: field_path(field),
            problem: "is set more than once".to_owned(),
        };
    }
    let problem = if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde's path already ends with the unknown field's name.
        let expected = rest.split_once(", expected ").map_or("", |(_, fields)| fields);
        // serde lists them as `a`, or `a` or `b`, or one of `a`, `b`, `c`.
        let expected = expected.strip_prefix("one of ").unwrap_or(expected);
        let expected = expected.replace('`', "").replace(" or ", ", ");
        format!("unknown field (expected one of: {expected})")
    } else if let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        format!("expected {expected}, found {}", in_json_terms(found))
    } else {
        message.to_owned()
    };
    ConfigError { path, problem }
}

/// The name in ``prefix`name` ``, if `message` starts with `prefix`.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.strip_suffix('`')
}

/// serde's name for a value it did not expect (`integer \`7\``, `map`), as JSON calls it.
fn in_json_terms(unexpected: &str) -> String {
    let literal = |kind: &str| {
        unexpected
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(" `"))
            .and_then(|rest| rest.strip_suffix('`'))
    };
    if let Some(number) = literal("integer").or_else(|| literal("floating point")) {
        return format!("the number {number}");
    }
    if let Some(boolean) = literal("boolean") {
        return boolean.to_owned();
    }
    match unexpected {
        "sequence" => "an array".to_owned(),
        "map" => "an object".to_owned(),
        "null" | "unit value" => "null".to_owned(),
        _ => match unexpected.strip_prefix("string ") {
            Some(string) => format!("the string {string}"),
            None => unexpected.to_owned(),
        },
    }
}

/// `T`'s fields read from a JSON object only: serde_json would otherwise also build a struct from
/// an array of its field values.
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

/// A JSON array (serde calls it a sequence).
struct Array<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArrayVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ArrayVisitor<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(items)
            }
        }
        deserializer.deserialize_seq(ArrayVisitor(PhantomData)).map(Array)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFields {
    decision_header: Option<DecisionHeader>,
    decision_values: Option<DecisionValues>,
    pin_keys_env: Option<EnvVarName>,
    max_token_ttl_seconds: Option<MaxTokenTtl>,
    routes: Array<Route>,
}

impl<'de> Deserialize<'de> for DecisionValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Object(fields) = Object::<DecisionValuesFields>::deserialize(deserializer)?;
        let defaults = DecisionValues::default();
        let values = DecisionValues {
            primary: fields.primary.map_or(defaults.primary, |DecisionValue(value)| value),
            canary: fields.canary.map_or(defaults.canary, |DecisionValue(value)| value),
        };
        if values.primary == values.canary {
            return Err(de::Error::custom(format!(
                "{:?} is the value of both releases (the header must tell them apart)",
                values.canary
            )));
        }
        Ok(values)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionValuesFields {
    primary: Option<DecisionValue>,
    canary: Option<DecisionValue>,
}

/// A value the decision header may carry: visible ASCII without spaces, so a VirtualService's
/// `exact` match and Envoy's header map hold it byte for byte.
#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct DecisionValue(String);

/// Long enough for a random value of 256 bits in any text encoding.
const MAX_DECISION_VALUE_LEN: usize = 128;

impl TryFrom<NonEmpty> for DecisionValue {
    type Error = String;

    fn try_from(NonEmpty(value): NonEmpty) -> Result<Self, String> {
        if value.len() > MAX_DECISION_VALUE_LEN || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{value:?} is not a valid decision value (1 to {MAX_DECISION_VALUE_LEN} visible ASCII characters, no spaces)"
            ));
        }
        Ok(DecisionValue(value))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFields {
    host: PublicHost,
    primary: Target,
    canary: Target,
    canary_weight: BasisPoints,
    pin: Option<Array<PinRule>>,
    sticky: Option<Sticky>,
    salt: Option<NonEmpty>,
    x_forwarded_host: Option<bool>,
    guard: Option<GuardConfig>,
    release_hosts: Option<ReleaseHosts>,
}

impl TryFrom<Object<RouteFields>> for Route {
    type Error = String;

    fn try_from(Object(fields): Object<RouteFields>) -> Result<Self, String> {
        let PublicHost(host) = fields.host;
        let (sticky, assign) = match fields.sticky {
            Some(Sticky { source, assign }) => (Some(source), assign),
            None => (None, None),
        };
        if let Some(domain) = assign.as_ref().and_then(|assign| assign.domain.as_deref()) {
            let covered = host == domain || host.strip_suffix(domain).is_some_and(|sub| sub.ends_with('.'));
            if !covered {
                return Err(format!(
                    "sticky.assign.domain {domain:?} is neither the host {host:?} nor a domain above it (browsers would refuse the cookie)"
                ));
            }
        }
        let pins = fields.pin.map_or_else(Vec::new, |Array(pins)| pins);
        Ok(Route {
            salt: fields.salt.map_or_else(|| host.clone(), |NonEmpty(salt)| salt),
            host,
            primary: fields.primary,
            canary: fields.canary,
            canary_basis_points: fields.canary_weight.0,
            cookie_names: cookie_names(&pins, sticky.as_ref()),
            pins,
            sticky,
            assign,
            x_forwarded_host: fields.x_forwarded_host.unwrap_or(false),
            pin_keys: PinKeys::default(),
            guard: fields.guard,
            max_token_ttl_seconds: None,
            release_hosts: fields.release_hosts.unwrap_or_default(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFields {
    host: Option<TargetHost>,
}

impl From<Object<TargetFields>> for Target {
    fn from(Object(fields): Object<TargetFields>) -> Self {
        Target {
            host: fields.host.map(|TargetHost(host)| host),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinRuleFields {
    header: Option<HeaderName>,
    cookie: Option<CookieName>,
    token: Option<TokenSource>,
    #[serde(default)]
    value: NotNull<String>,
    #[serde(default)]
    to: NotNull<Variant>,
}

impl TryFrom<Object<PinRuleFields>> for PinRule {
    type Error = &'static str;

    fn try_from(Object(rule): Object<PinRuleFields>) -> Result<Self, Self::Error> {
        let source = match (rule.header, rule.cookie, rule.token) {
            (Some(HeaderName(name)), None, None) => KeySource::Header(name),
            (None, Some(CookieName(name)), None) => KeySource::Cookie(name),
            (None, None, Some(TokenSource(source))) => {
                if rule.value.0.is_some() || rule.to.0.is_some() {
                    return Err("takes no \"value\" or \"to\" with \"token\" (the token names the release)");
                }
                return Ok(PinRule::Token { source });
            }
            _ => return Err("needs exactly one of \"header\", \"cookie\" or \"token\""),
        };
        // Worded as serde words a missing field, so the message names the field's path.
        let value = rule.value.0.ok_or("missing field `value`")?;
        let to = rule.to.0.ok_or("missing field `to`")?;
        Ok(PinRule::Value {
            source,
            value: value.into_bytes(),
            to,
        })
    }
}

/// A field that may be left out but, when given, must be a `T`: unlike `Option`, `null` is
/// refused as `T` refuses it.
struct NotNull<T>(Option<T>);

impl<T> Default for NotNull<T> {
    fn default() -> Self {
        NotNull(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NotNull<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|value| NotNull(Some(value)))
    }
}

/// Where a token pin's token comes from.
#[derive(Deserialize)]
#[serde(try_from = "Object<TokenFields>")]
struct TokenSource(KeySource);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFields {
    header: Option<HeaderName>,
    cookie: Option<CookieName>,
}

impl TryFrom<Object<TokenFields>> for TokenSource {
    type Error = &'static str;

    fn try_from(Object(token): Object<TokenFields>) -> Result<Self, Self::Error> {
        match (token.header, token.cookie) {
            (Some(HeaderName(name)), None) => Ok(TokenSource(KeySource::Header(name))),
            (None, Some(CookieName(name))) => Ok(TokenSource(KeySource::Cookie(name))),
            _ => Err("needs exactly one of \"header\" or \"cookie\""),
        }
    }
}

/// Where a route's sticky key comes from, and for a cookie, whether the filter hands out keys.
#[derive(Deserialize)]
#[serde(try_from = "Object<StickyFields>")]
struct Sticky {
    source: KeySource,
    assign: Option<CookieAssignment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StickyFields {
    header: Option<HeaderName>,
    cookie: Option<CookieName>,
    client_ip: Option<ClientIp>,
    assign: Option<Object<AssignFields>>,
}

impl TryFrom<Object<StickyFields>> for Sticky {
    type Error = &'static str;

    fn try_from(Object(sticky): Object<StickyFields>) -> Result<Self, Self::Error> {
        let source = match (sticky.header, sticky.cookie, sticky.client_ip) {
            (Some(HeaderName(name)), None, None) => KeySource::Header(name),
            (None, Some(CookieName(name)), None) => KeySource::Cookie(name),
            (None, None, Some(ClientIp)) => KeySource::ClientAddress,
            _ => return Err("needs exactly one of \"header\", \"cookie\" or \"client_ip\""),
        };
        let assign = match (sticky.assign, &source) {
            (None, _) => None,
            (Some(Object(fields)), KeySource::Cookie(cookie)) => Some(CookieAssignment {
                cookie: cookie.clone(),
                max_age_seconds: fields
                    .max_age_seconds
                    .map_or(DEFAULT_MAX_AGE_SECONDS, |MaxAge(seconds)| seconds),
                path: fields
                    .path
                    .map_or_else(|| DEFAULT_PATH.to_owned(), |CookiePath(path)| path),
                domain: fields.domain.map(|CookieDomain(domain)| domain),
            }),
            (Some(_), _) => return Err("takes \"assign\" only with \"cookie\" (keys are handed out in a cookie)"),
        };
        Ok(Sticky { source, assign })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignFields {
    max_age_seconds: Option<MaxAge>,
    path: Option<CookiePath>,
    domain: Option<CookieDomain>,
}

/// `Max-Age` of an assigned cookie: whole seconds, at least one, at most the 400 days browsers
/// keep a cookie (RFC 6265bis).
#[derive(Deserialize)]
#[serde(try_from = "serde_json::Number")]
struct MaxAge(u32);

impl TryFrom<serde_json::Number> for MaxAge {
    type Error = String;

    fn try_from(number: serde_json::Number) -> Result<Self, String> {
        number
            .as_u64()
            .and_then(|seconds| u32::try_from(seconds).ok())
            .filter(|seconds| (1..=MAX_MAX_AGE_SECONDS).contains(seconds))
            .map(MaxAge)
            .ok_or_else(|| {
                format!("{number} is not a whole number of seconds from 1 to {MAX_MAX_AGE_SECONDS} (400 days)")
            })
    }
}

/// `Path` of an assigned cookie: starts with `/`, visible ASCII without `;`.
#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct CookiePath(String);

impl TryFrom<NonEmpty> for CookiePath {
    type Error = String;

    fn try_from(NonEmpty(path): NonEmpty) -> Result<Self, String> {
        let visible = path.bytes().all(|b| b.is_ascii_graphic() && b != b';');
        if !path.starts_with('/') || !visible || path.len() > 1024 {
            return Err(format!(
                "{path:?} is not a cookie path (starts with \"/\", visible ASCII without \";\")"
            ));
        }
        Ok(CookiePath(path))
    }
}

/// `Domain` of an assigned cookie: a host name, lower-cased, a leading dot dropped (RFC 6265
/// ignores it).
#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct CookieDomain(String);

impl TryFrom<NonEmpty> for CookieDomain {
    type Error = String;

    fn try_from(NonEmpty(domain): NonEmpty) -> Result<Self, String> {
        let name = domain.strip_prefix('.').unwrap_or(&domain);
        if name.is_empty() || name.len() > MAX_HOST_LEN || !name.bytes().all(is_host_byte) {
            return Err(format!("{domain:?} is not a domain name"));
        }
        Ok(CookieDomain(name.to_ascii_lowercase()))
    }
}

/// `"client_ip": true`.
#[derive(Deserialize)]
#[serde(try_from = "bool")]
struct ClientIp;

impl TryFrom<bool> for ClientIp {
    type Error = &'static str;

    fn try_from(enabled: bool) -> Result<Self, Self::Error> {
        if enabled {
            Ok(ClientIp)
        } else {
            Err("must be true (omit \"sticky\" for no stickiness)")
        }
    }
}

#[derive(Deserialize)]
#[serde(try_from = "String")]
struct NonEmpty(String);

impl TryFrom<String> for NonEmpty {
    type Error = &'static str;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.is_empty() {
            return Err("must not be empty");
        }
        Ok(NonEmpty(text))
    }
}

/// An HTTP header name (an RFC 9110 token), lower-cased as Envoy presents it.
#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct HeaderName(String);

impl TryFrom<NonEmpty> for HeaderName {
    type Error = String;

    fn try_from(NonEmpty(name): NonEmpty) -> Result<Self, String> {
        if !name.bytes().all(is_token_byte) {
            return Err(format!("{name:?} is not a valid header name"));
        }
        Ok(HeaderName(name.to_ascii_lowercase()))
    }
}

/// A header name the filter may write its decision to: on split hosts it overwrites the header,
/// on every other host it removes it, so it must be a header no one else relies on.
#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct DecisionHeader(String);

impl TryFrom<NonEmpty> for DecisionHeader {
    type Error = String;

    fn try_from(NonEmpty(name): NonEmpty) -> Result<Self, String> {
        if name.starts_with(':') {
            return Err(format!("{name:?} is a pseudo-header, which Envoy owns"));
        }
        let HeaderName(name) = HeaderName::try_from(NonEmpty(name))?;
        let name_is = |names: &[&str]| names.contains(&name.as_str());
        let problem = if name_is(SET_BY_THE_GATEWAY) {
            "is a header the filter or Envoy sets itself"
        } else if name_is(CREDENTIAL_HEADERS) {
            "carries the client's credentials, which the filter would remove from every request to a host it does not split"
        } else if name_is(FRAMING_HEADERS) {
            "frames the HTTP message or connection: overwriting or removing it breaks requests"
        } else if name.starts_with("x-envoy-") {
            "is an x-envoy- header, which Envoy reads to route, retry and time out requests"
        } else {
            return Ok(DecisionHeader(name));
        };
        Err(format!("{name:?} {problem}"))
    }
}

#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct CookieName(String);

impl TryFrom<NonEmpty> for CookieName {
    type Error = String;

    fn try_from(NonEmpty(name): NonEmpty) -> Result<Self, String> {
        if !name.bytes().all(is_token_byte) {
            return Err(format!("{name:?} is not a valid cookie name"));
        }
        Ok(CookieName(name))
    }
}

/// The name of an environment variable: letters, digits and `_`, not starting with a digit.
#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct EnvVarName(String);

impl TryFrom<NonEmpty> for EnvVarName {
    type Error = String;

    fn try_from(NonEmpty(name): NonEmpty) -> Result<Self, String> {
        // The refusal reaches Envoy's log: a key pasted here by mistake must not.
        if looks_like_keys(&name) {
            return Err(
                "looks like a key, not the name of the variable that holds the keys (the value is not shown)"
                    .to_owned(),
            );
        }
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("{name:?} is not a valid environment variable name"));
        }
        Ok(EnvVarName(name))
    }
}

/// Whether a value reads as a key list (see `pin_token`): base64 punctuation no variable name
/// has, or a run of base64 long enough to be a key.
fn looks_like_keys(value: &str) -> bool {
    value.contains(['+', '/', '=', ','])
        || value
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|run| run.len() >= 32)
}

/// `max_token_ttl_seconds`: a whole number of seconds, at least 1.
#[derive(Deserialize)]
#[serde(try_from = "Seconds")]
struct MaxTokenTtl(u64);

impl TryFrom<Seconds> for MaxTokenTtl {
    type Error = &'static str;

    fn try_from(Seconds(seconds): Seconds) -> Result<Self, Self::Error> {
        if seconds == 0 {
            return Err("must be at least 1 (omit it for no limit)");
        }
        Ok(MaxTokenTtl(seconds))
    }
}

/// A JSON number that is a whole, non-negative count of seconds.
struct Seconds(u64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v).map_err(|_| E::invalid_type(de::Unexpected::Signed(v), &self))
            }
        }
        deserializer.deserialize_u64(SecondsVisitor).map(Seconds)
    }
}

/// The public host a route matches: a DNS name, case-insensitive, without port.
#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct PublicHost(String);

impl TryFrom<NonEmpty> for PublicHost {
    type Error = String;

    fn try_from(NonEmpty(host): NonEmpty) -> Result<Self, String> {
        normalized_public_host(&host).map(PublicHost)
    }
}

/// A route's `host` as the filter keeps it (lower case, no trailing dot), or why it is not
/// one: also the `<host>` a pin token is signed for.
pub fn normalized_public_host(host: &str) -> Result<String, String> {
    if host.contains(':') {
        return Err(format!(
            "{host:?} must not include a port (ports are ignored when matching)"
        ));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN || !host.bytes().all(is_host_byte) {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(host.to_ascii_lowercase())
}

/// The host a variant's requests are rewritten to; a port is allowed here.
#[derive(Deserialize)]
#[serde(try_from = "NonEmpty")]
struct TargetHost(String);

impl TryFrom<NonEmpty> for TargetHost {
    type Error = String;

    fn try_from(NonEmpty(host): NonEmpty) -> Result<Self, String> {
        let (name, port) = host.split_once(':').unwrap_or((&host, "80"));
        let port_ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if name.is_empty() || name.len() > MAX_HOST_LEN || !name.bytes().all(is_host_byte) || !port_ok {
            return Err(format!("{host:?} is not a valid host[:port]"));
        }
        Ok(TargetHost(host.to_ascii_lowercase()))
    }
}

/// `canary_weight`: a percentage from 0 to 100 with at most two decimals, in basis points.
#[derive(Deserialize)]
#[serde(try_from = "Percent")]
struct BasisPoints(u16);

impl TryFrom<Percent> for BasisPoints {
    type Error = String;

    fn try_from(Percent(number): Percent) -> Result<Self, String> {
        let percent = number.as_f64().unwrap_or(f64::NAN);
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("{number} is not in 0..=100"));
        }
        let basis_points = (percent * 100.0).round();
        if (percent * 100.0 - basis_points).abs() > 1e-6 {
            return Err(format!(
                "{number} is finer than the resolution of 0.01 (one basis point)"
            ));
        }
        // In 0..=10_000 after the range check above.
        Ok(BasisPoints(basis_points.clamp(0.0, f64::from(BUCKETS)) as u16))
    }
}

/// Any JSON number, kept as written for messages.
struct Percent(serde_json::Number);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PercentVisitor;
        impl Visitor<'_> for PercentVisitor {
            type Value = serde_json::Number;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number from 0 to 100")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(v.into())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(v.into())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(v).ok_or_else(|| E::custom(format!("{v} is not in 0..=100")))
            }
        }
        deserializer.deserialize_any(PercentVisitor).map(Percent)
    }
}

/// RFC 9110 `tchar`: what header and cookie names are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const CONTRACT_EXAMPLE: &str = r#"{
      "decision_header": "x-canary-route",
      "routes": [{
        "host": "sklearn-predictor.example.com",
        "primary": { "host": "sklearn-primary-predictor.example.com" },
        "canary":  { "host": "sklearn-canary-predictor.example.com" },
        "canary_weight": 12.5,
        "pin": [ { "header": "traffic", "value": "test", "to": "canary" },
                 { "cookie": "canary", "value": "never", "to": "primary" } ],
        "sticky": { "header": "x-user-id" }
      }]
    }"#;

    fn error_of(json: &str) -> String {
        match Config::from_json(json.as_bytes()) {
            Ok(_) => format!("accepted: {json}"),
            Err(e) => e.to_string(),
        }
    }

    /// A valid single-route config with `route_fields` merged into the route.
    fn route_with(route_fields: &str) -> String {
        let base = r#""host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 10"#;
        if route_fields.is_empty() {
            format!(r#"{{"routes": [{{{base}}}]}}"#)
        } else {
            format!(r#"{{"routes": [{{{base}, {route_fields}}}]}}"#)
        }
    }

    #[test]
    fn parses_the_contract_example() {
        let config = Config::from_json(CONTRACT_EXAMPLE.as_bytes()).expect("valid");
        assert_eq!(config.decision_header, "x-canary-route");
        let route = config.routes.first().expect("one route");
        assert_eq!(route.host, "sklearn-predictor.example.com");
        assert_eq!(route.canary_basis_points, 1250);
        assert_eq!(route.salt, "sklearn-predictor.example.com");
        assert_eq!(
            route.canary.host.as_deref(),
            Some("sklearn-canary-predictor.example.com")
        );
        assert_eq!(
            route.pins,
            vec![
                PinRule::Value {
                    source: KeySource::Header("traffic".into()),
                    value: b"test".to_vec(),
                    to: Variant::Canary
                },
                PinRule::Value {
                    source: KeySource::Cookie("canary".into()),
                    value: b"never".to_vec(),
                    to: Variant::Primary
                },
            ]
        );
        assert_eq!(route.sticky, Some(KeySource::Header("x-user-id".into())));
    }

    #[test]
    fn strings_that_look_like_json_are_just_values() {
        let tricky = r#"{"routes": [{"host": "b.example.com", "primary": {}, "canary": {}, "canary_weight": 1,
            "pin": [{"header": "h", "value": "]},{\"[\\", "to": "canary"}]}], "decision_header": "X-D"}"#;
        let config = Config::from_json(tricky.as_bytes()).expect("valid");
        assert_eq!(config.decision_header, "x-d");
        assert!(matches!(&config.routes[0].pins[0], PinRule::Value { value, .. } if value == br#"]},{"[\"#));
        assert!(config.route_for_authority(b"b.example.com").is_some());
    }

    #[test]
    fn null_leaves_an_optional_field_unset() {
        let json = route_with(r#""pin": null, "sticky": null, "salt": null"#)
            .replace(r#"{"routes""#, r#"{"decision_header": null, "routes""#);
        let config = Config::from_json(json.as_bytes()).expect("valid");
        assert_eq!(config.decision_header, DEFAULT_DECISION_HEADER);
        let route = config.routes.first().expect("one route");
        assert_eq!(
            (route.pins.len(), &route.sticky, route.salt.as_str()),
            (0, &None, "a.example.com")
        );
    }

    /// The field lists the schema test compares with are the ones serde really accepts.
    #[test]
    fn field_lists_match_what_the_parser_accepts() {
        let unknown_field_message = |json: String| {
            let error = error_of(&json);
            let (_, expected) = error.split_once("(expected one of: ").expect(&error);
            expected.trim_end_matches(')').to_owned()
        };
        let cases = [
            (r#"{"routes": [], "zz": 1}"#.to_owned(), CONFIG_FIELDS),
            (
                r#"{"routes": [], "decision_values": {"zz": 1}}"#.to_owned(),
                DECISION_VALUES_FIELDS,
            ),
            (route_with(r#""zz": 1"#), ROUTE_FIELDS),
            (
                route_with("").replace(r#""canary": {}"#, r#""canary": {"zz": 1}"#),
                TARGET_FIELDS,
            ),
            (route_with(r#""pin": [{"zz": 1}]"#), PIN_RULE_FIELDS),
            (route_with(r#""pin": [{"token": {"zz": 1}}]"#), TOKEN_FIELDS),
            (route_with(r#""sticky": {"zz": 1}"#), STICKY_FIELDS),
            (
                route_with(r#""sticky": {"cookie": "u", "assign": {"zz": 1}}"#),
                ASSIGN_FIELDS,
            ),
            (route_with(r#""guard": {"zz": 1}"#), GUARD_FIELDS),
        ];
        for (json, fields) in cases {
            assert_eq!(unknown_field_message(json), fields.join(", "));
        }
    }

    /// 32 bytes of 0x01 and of 0x02, in standard base64.
    const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    fn token_route(host: &str, pins: &str) -> String {
        format!(r#"{{"host": "{host}", "primary": {{}}, "canary": {{}}, "canary_weight": 0, "pin": [{pins}]}}"#)
    }

    #[test]
    fn token_pins_take_their_keys_from_the_environment() {
        let json = format!(
            r#"{{"routes": [{}, {}, {}]}}"#,
            token_route(
                "a.example.com",
                r#"{"header": "traffic", "value": "test", "to": "canary"}, {"token": {"header": "X-Canary-Token"}}"#
            ),
            token_route(
                "b.example.com",
                r#"{"header": "traffic", "value": "test", "to": "canary"}"#
            ),
            token_route("c.example.com", r#"{"token": {"cookie": "canary-token"}}"#),
        );
        let mut asked = Vec::new();
        let config = Config::from_json_with_env(json.as_bytes(), |name| {
            asked.push(name.to_owned());
            Some(format!("{KEY_A},{KEY_B}"))
        })
        .expect("valid");
        assert_eq!(asked, [DEFAULT_PIN_KEYS_ENV]);
        assert!(config.has_token_pins());
        let [a, b, c] = &config.routes[..] else {
            panic!("three routes")
        };
        assert_eq!(
            a.pins[1],
            PinRule::Token {
                source: KeySource::Header("x-canary-token".into())
            }
        );
        assert_eq!(
            c.pins[0],
            PinRule::Token {
                source: KeySource::Cookie("canary-token".into())
            }
        );
        assert_eq!((a.pin_keys.len(), b.pin_keys.len(), c.pin_keys.len()), (2, 0, 2));
        assert_eq!(a.pin_keys, c.pin_keys, "one set of keys, shared");

        // Without an environment the structure is checked and token pins get no key.
        let unkeyed = Config::from_json(json.as_bytes()).expect("valid");
        assert!(unkeyed.routes.iter().all(|route| route.pin_keys.is_empty()));
    }

    #[test]
    fn the_environment_is_read_only_for_token_pins() {
        let json = route_with(r#""pin": [{"header": "traffic", "value": "test", "to": "canary"}]"#);
        let config = Config::from_json_with_env(json.as_bytes(), |name| panic!("asked for {name}")).expect("valid");
        assert!(!config.has_token_pins());
        assert_eq!(config.pin_keys_env, DEFAULT_PIN_KEYS_ENV);
    }

    #[test]
    fn pin_keys_env_names_the_variable() {
        let json = format!(
            r#"{{"pin_keys_env": "GATEWAY_PIN_KEYS_2", "routes": [{}]}}"#,
            token_route("a.example.com", r#"{"token": {"header": "t"}}"#)
        );
        let env = |name: &str| (name == "GATEWAY_PIN_KEYS_2").then(|| KEY_A.to_owned());
        let config = Config::from_json_with_env(json.as_bytes(), env).expect("valid");
        assert_eq!(config.pin_keys_env, "GATEWAY_PIN_KEYS_2");
        assert_eq!(config.routes[0].pin_keys.len(), 1);
    }

    /// The refusals of a config whose token pins have no usable key, word for word.
    #[test]
    fn token_pins_without_a_usable_key_are_refused() {
        let json = format!(
            r#"{{"routes": [{}, {}]}}"#,
            token_route(
                "a.example.com",
                r#"{"header": "traffic", "value": "test", "to": "canary"}"#
            ),
            token_route(
                "b.example.com",
                r#"{"cookie": "c", "value": "v", "to": "primary"}, {"token": {"header": "t"}}"#
            ),
        );
        let short = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=="; // 31 bytes
        let cases = [
            (None, "routes[1].pin[1].token: needs a key, but the VM's environment has no CANARY_SPLIT_PIN_KEYS"),
            (Some(""), "routes[1].pin[1].token: needs a usable key, but CANARY_SPLIT_PIN_KEYS is empty"),
            (Some(short), "routes[1].pin[1].token: needs a usable key, but key 1 in CANARY_SPLIT_PIN_KEYS has 31 bytes (at least 32 needed)"),
            (Some("not-a-key"), "routes[1].pin[1].token: needs a usable key, but key 1 in CANARY_SPLIT_PIN_KEYS is not standard base64"),
            (Some(&format!("{KEY_A},")), "routes[1].pin[1].token: needs a usable key, but key 2 in CANARY_SPLIT_PIN_KEYS is empty"),
        ];
        for (value, expected) in cases {
            let error = Config::from_json_with_env(json.as_bytes(), |_| value.map(str::to_owned)).expect_err(expected);
            assert_eq!(error.to_string(), expected);
        }
        // A structural problem is reported first, without asking for keys.
        let broken = json.replace("\"primary\"}", "\"beta\"}");
        let error = Config::from_json_with_env(broken.as_bytes(), |_| panic!("asked for keys")).expect_err("broken");
        assert_eq!(
            error.to_string(),
            "routes[1].pin[0].to: \"beta\" is not \"primary\" or \"canary\""
        );
    }

    #[test]
    fn every_truncation_of_a_config_gets_the_whole_tree_message() {
        for len in 0..CONTRACT_EXAMPLE.len() {
            let truncated = &CONTRACT_EXAMPLE.as_bytes()[..len];
            let error = Config::from_json(truncated).expect_err("truncated");
            match serde_json::from_slice::<serde_json::Value>(truncated) {
                Ok(value) => assert_eq!(
                    Some(error),
                    Config::from_json(&serde_json::to_vec(&value).expect("JSON")).err(),
                    "{len}"
                ),
                Err(json_error) if len > 0 => {
                    assert_eq!(
                        error.to_string(),
                        format!("config: is not valid JSON: {json_error}"),
                        "{len}"
                    )
                }
                Err(_) => assert_eq!(error.path, "config"),
            }
        }
    }

    #[test]
    fn defaults_and_normalisation() {
        let json = r#"{"routes": [{"host": "Shop.Example.COM.", "primary": {}, "canary": {"host": "Canary.svc:8080"},
            "canary_weight": 0, "salt": "rollout-7", "sticky": {"client_ip": true},
            "pin": [{"header": "X-Canary", "value": "Always", "to": "canary"}]}]}"#;
        let config = Config::from_json(json.as_bytes()).expect("valid");
        assert_eq!(config.decision_header, DEFAULT_DECISION_HEADER);
        assert_eq!(config.decision_values.of(Variant::Primary), "primary");
        assert_eq!(config.decision_values.of(Variant::Canary), "canary");
        let route = config.routes.first().expect("one route");
        assert_eq!(route.host, "shop.example.com");
        assert_eq!(route.canary.host.as_deref(), Some("canary.svc:8080"));
        assert_eq!(route.primary.host, None);
        assert_eq!(route.salt, "rollout-7");
        assert_eq!(route.sticky, Some(KeySource::ClientAddress));
        assert_eq!(
            route.pins,
            [PinRule::Value {
                source: KeySource::Header("x-canary".into()),
                value: b"Always".to_vec(), // values match exactly, case included
                to: Variant::Canary
            }]
        );
    }

    #[test]
    fn decision_values_are_kept_as_written() {
        let config =
            Config::from_json(br#"{"routes": [], "decision_values": {"canary": "Canary-7f3a~9"}}"#).expect("valid");
        assert_eq!(config.decision_values.of(Variant::Canary), "Canary-7f3a~9");
        assert_eq!(config.decision_values.of(Variant::Primary), "primary");
        let config = Config::from_json(br#"{"routes": [], "decision_values": {"primary": "p1", "canary": null}}"#)
            .expect("valid");
        assert_eq!(
            config.decision_values,
            DecisionValues {
                primary: "p1".into(),
                canary: "canary".into()
            }
        );
    }

    #[test]
    fn sticky_cookie_assignment_and_its_defaults() {
        let json = route_with(r#""sticky": {"cookie": "canary-split-user", "assign": {}}"#);
        let route = Config::from_json(json.as_bytes()).expect("valid").routes.remove(0);
        assert_eq!(route.sticky, Some(KeySource::Cookie("canary-split-user".into())));
        assert_eq!(
            route.assign,
            Some(CookieAssignment {
                cookie: "canary-split-user".into(),
                max_age_seconds: 2_592_000,
                path: "/".into(),
                domain: None,
            })
        );
        let json = route_with(
            r#""sticky": {"cookie": "u", "assign": {"max_age_seconds": 3600, "path": "/shop", "domain": ".Example.COM"}}"#,
        );
        let route = Config::from_json(json.as_bytes()).expect("valid").routes.remove(0);
        assert_eq!(
            route.assign,
            Some(CookieAssignment {
                cookie: "u".into(),
                max_age_seconds: 3600,
                path: "/shop".into(),
                domain: Some("example.com".into()),
            })
        );
        for domain in ["a.example.com", "example.com"] {
            let json = route_with(&format!(
                r#""sticky": {{"cookie": "u", "assign": {{"domain": "{domain}"}}}}"#
            ));
            assert!(Config::from_json(json.as_bytes()).is_ok(), "{domain}");
        }
        let json = route_with(r#""sticky": {"cookie": "u", "assign": null}"#);
        assert_eq!(
            Config::from_json(json.as_bytes()).expect("valid").routes[0].assign,
            None
        );
    }

    #[test]
    fn x_forwarded_host_is_opt_in() {
        let off = Config::from_json(route_with("").as_bytes()).expect("valid");
        assert!(!off.routes[0].x_forwarded_host);
        let on = Config::from_json(route_with(r#""x_forwarded_host": true"#).as_bytes()).expect("valid");
        assert!(on.routes[0].x_forwarded_host);
    }

    #[test]
    fn weights_convert_to_basis_points() {
        for (weight, expected) in [
            ("0", 0),
            ("0.01", 1),
            ("12.5", 1250),
            ("33.33", 3333),
            ("99.99", 9999),
            ("100", 10_000),
            ("1e1", 1000),
        ] {
            let config = Config::from_json(route_with("").replace("10", weight).as_bytes()).expect(weight);
            assert_eq!(
                config.routes.first().map(|r| r.canary_basis_points),
                Some(expected),
                "{weight}"
            );
        }
    }

    #[test]
    fn empty_route_list_is_valid() {
        let config = Config::from_json(br#"{"routes": []}"#).expect("valid");
        assert!(config.routes.is_empty());
    }

    #[test]
    fn matches_hosts_case_insensitively_ignoring_port() {
        let config = Config::from_json(CONTRACT_EXAMPLE.as_bytes()).expect("valid");
        for authority in [
            &b"sklearn-predictor.example.com"[..],
            b"SKLEARN-Predictor.example.com:443",
            b"sklearn-predictor.example.com.",
        ] {
            assert!(config.route_for_authority(authority).is_some(), "{authority:?}");
        }
        for authority in [
            &b"sklearn-primary-predictor.example.com"[..],
            b"example.com",
            b"",
            b"\xff",
        ] {
            assert!(config.route_for_authority(authority).is_none(), "{authority:?}");
        }
    }

    mod properties {
        use super::*;
        use crate::properties::check;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::select;
        use proptest::test_runner::TestCaseResult;
        use serde_json::Value;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        /// Field names the parser knows, and values it would accept somewhere, so random documents
        /// reach deep into the config as well as failing at its surface.
        fn key() -> impl Strategy<Value = String> {
            let known = [
                CONFIG_FIELDS,
                DECISION_VALUES_FIELDS,
                ROUTE_FIELDS,
                TARGET_FIELDS,
                PIN_RULE_FIELDS,
                TOKEN_FIELDS,
                STICKY_FIELDS,
                ASSIGN_FIELDS,
                GUARD_FIELDS,
            ]
            .concat();
            prop_oneof![select(known).prop_map(str::to_owned), "[a-z_]{1,8}"]
        }

        fn json() -> impl Strategy<Value = Value> {
            let text = prop_oneof![
                select(vec![
                    "primary",
                    "canary",
                    "a.example.com",
                    "A.Example.com.",
                    "h:80",
                    "x-user-id",
                    "",
                    "a b",
                    "host"
                ])
                .prop_map(str::to_owned),
                ".{0,12}",
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                (-1e4..1e4f64).prop_map(Value::from),
                (0..=10_000u32).prop_map(|bp| Value::from(f64::from(bp) / 100.0)),
                text.prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..4).prop_map(Value::Array),
                    vec((key(), inner), 0..7).prop_map(|fields| Value::Object(fields.into_iter().collect())),
                ]
            })
        }

        /// The contract example with one of its values, anywhere, replaced by a random one.
        fn mutated_example() -> impl Strategy<Value = Value> {
            let example: Value = serde_json::from_str(CONTRACT_EXAMPLE).expect("example");
            let mut pointers = Vec::new();
            collect_pointers(&example, String::new(), &mut pointers);
            (select(pointers), json()).prop_map(move |(pointer, replacement)| {
                let mut document = example.clone();
                if let Some(slot) = document.pointer_mut(&pointer) {
                    *slot = replacement;
                }
                document
            })
        }

        fn collect_pointers(value: &Value, at: String, out: &mut Vec<String>) {
            match value {
                Value::Object(fields) => fields
                    .iter()
                    .for_each(|(k, v)| collect_pointers(v, format!("{at}/{k}"), out)),
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .for_each(|(i, v)| collect_pointers(v, format!("{at}/{i}"), out)),
                _ => {}
            }
            out.push(at);
        }

        /// `routes[0].pin[1].to` as a JSON pointer (`/routes/0/pin/1/to`); `config` is the root.
        fn pointer_of(path: &str) -> String {
            if path == "config" {
                return String::new();
            }
            let mut pointer = String::new();
            for segment in path.split('.') {
                let mut parts = segment.split('[');
                pointer += &format!("/{}", parts.next().unwrap_or_default());
                for index in parts {
                    pointer += &format!("/{}", index.trim_end_matches(']'));
                }
            }
            pointer
        }

        /// A refusal names where the problem is: a value in the document, or for a missing
        /// field, the object that lacks it.
        fn names_a_place_in(document: &Value, error: &ConfigError) -> TestCaseResult {
            let pointer = pointer_of(&error.path);
            if error.problem == "missing" {
                let (parent, field) = pointer.rsplit_once('/').unwrap_or_default();
                let object = document.pointer(parent).and_then(Value::as_object);
                prop_assert!(object.is_some_and(|o| !o.contains_key(field)), "{error}");
            } else {
                prop_assert!(document.pointer(&pointer).is_some(), "{error} in {document}");
            }
            if let Some(expected) = error.problem.strip_prefix("unknown field (expected one of: ") {
                // The path ends at the unknown field itself, in an object.
                let (parent, field) = pointer.rsplit_once('/').unwrap_or_default();
                prop_assert!(document.pointer(parent).is_some_and(Value::is_object), "{error}");
                prop_assert!(
                    !expected.trim_end_matches(')').split(", ").any(|known| known == field),
                    "{error}"
                );
            }
            Ok(())
        }

        #[test]
        fn random_documents_are_accepted_or_refused_at_a_named_place() {
            check(prop_oneof![json(), mutated_example()], |document| {
                let bytes = serde_json::to_vec(&document).expect("serializable");
                match Config::from_json(&bytes) {
                    Ok(config) => prop_assert!(config.routes.len() <= 1),
                    Err(error) => names_a_place_in(&document, &error)?,
                }
                Ok(())
            });
        }

        #[test]
        fn random_bytes_are_refused_as_the_whole_config() {
            let example_prefix =
                (0..CONTRACT_EXAMPLE.len()).prop_map(|len| CONTRACT_EXAMPLE.as_bytes()[..len].to_vec());
            check(prop_oneof![vec(any::<u8>(), 0..256), example_prefix], |bytes| {
                if let Err(error) = Config::from_json(&bytes) {
                    prop_assert_eq!(error.path.as_str(), "config");
                }
                Ok(())
            });
        }

        #[test]
        fn any_authority_finds_its_route_or_none() {
            let config = Config::from_json(CONTRACT_EXAMPLE.as_bytes()).expect("valid");
            check(vec(any::<u8>(), 0..300), |authority| {
                if let Some(route) = config.route_for_authority(&authority) {
                    let host = String::from_utf8_lossy(&authority).to_ascii_lowercase();
                    prop_assert!(host.starts_with(&route.host), "{host}");
                }
                Ok(())
            });
        }
    }

    /// Every way a config can be wrong, with the exact message an operator sees in the Envoy log.
    /// `tests/e2e` asserts a selection of these against a real Envoy.
    #[test]
    fn rejects_invalid_configs_with_path_and_reason() {
        let cases: &[(String, &str)] = &[
            ("".into(), "config: is empty (expected a JSON object with \"routes\")"),
            ("{\"routes\": []} x".into(), "config: is not valid JSON: trailing characters at line 1 column 16"),
            ("{\"routes\": [".into(), "config: is not valid JSON: EOF while parsing a list at line 1 column 12"),
            ("[]".into(), "config: expected an object, found an array"),
            ("{}".into(), "routes: missing"),
            (r#"{"routes": {}}"#.into(), "routes: expected an array, found an object"),
            (r#"{"routes": [], "decision_heder": "x"}"#.into(), "decision_heder: unknown field (expected one of: decision_header, decision_values, pin_keys_env, max_token_ttl_seconds, routes)"),
            (r#"{"routes": [], "decision_values": {"canary": "a b"}}"#.into(), "decision_values.canary: \"a b\" is not a valid decision value (1 to 128 visible ASCII characters, no spaces)"),
            (r#"{"routes": [], "decision_values": {"primary": "caf\u00e9"}}"#.into(), "decision_values.primary: \"café\" is not a valid decision value (1 to 128 visible ASCII characters, no spaces)"),
            (format!(r#"{{"routes": [], "decision_values": {{"canary": "{}"}}}}"#, "x".repeat(129)), "decision_values.canary: \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\" is not a valid decision value (1 to 128 visible ASCII characters, no spaces)"),
            (r#"{"routes": [], "decision_values": {"canary": ""}}"#.into(), "decision_values.canary: must not be empty"),
            (r#"{"routes": [], "decision_values": {"canary": 7}}"#.into(), "decision_values.canary: expected a string, found the number 7"),
            (r#"{"routes": [], "decision_values": {"canary": "primary"}}"#.into(), "decision_values: \"primary\" is the value of both releases (the header must tell them apart)"),
            (r#"{"routes": [], "decision_values": {"primary": "x", "canary": "x"}}"#.into(), "decision_values: \"x\" is the value of both releases (the header must tell them apart)"),
            (r#"{"routes": [], "decision_values": ["x"]}"#.into(), "decision_values: expected an object, found an array"),
            (r#"{"routes": [], "decision_values": {"canary": "x", "staging": "y"}}"#.into(), "decision_values.staging: unknown field (expected one of: primary, canary)"),
            (r#"{"routes": [], "pin_keys_env": "1KEYS"}"#.into(), "pin_keys_env: \"1KEYS\" is not a valid environment variable name"),
            (r#"{"routes": [], "pin_keys_env": "PIN-KEYS"}"#.into(), "pin_keys_env: \"PIN-KEYS\" is not a valid environment variable name"),
            (r#"{"routes": [], "pin_keys_env": ""}"#.into(), "pin_keys_env: must not be empty"),
            (r#"{"routes": [], "pin_keys_env": 7}"#.into(), "pin_keys_env: expected a string, found the number 7"),
            (r#"{"routes": [], "decision_header": "bad header"}"#.into(), "decision_header: \"bad header\" is not a valid header name"),
            (r#"{"routes": [], "decision_header": ""}"#.into(), "decision_header: must not be empty"),
            (r#"{"routes": [], "decision_header": "X-Forwarded-Host"}"#.into(), "decision_header: \"x-forwarded-host\" is a header the filter or Envoy sets itself"),
            (r#"{"routes": [], "decision_header": "host"}"#.into(), "decision_header: \"host\" is a header the filter or Envoy sets itself"),
            (r#"{"routes": [7]}"#.into(), "routes[0]: expected an object, found the number 7"),
            (route_with(r#""canary_weigth": 5"#), "routes[0].canary_weigth: unknown field (expected one of: host, primary, canary, canary_weight, pin, sticky, salt, x_forwarded_host, guard, release_hosts)"),
            (route_with("").replace("10", "150"), "routes[0].canary_weight: 150 is not in 0..=100"),
            (route_with("").replace("10", "-1"), "routes[0].canary_weight: -1 is not in 0..=100"),
            (route_with("").replace("10", "12.345"), "routes[0].canary_weight: 12.345 is finer than the resolution of 0.01 (one basis point)"),
            (route_with("").replace("10", "\"10\""), "routes[0].canary_weight: expected a number from 0 to 100, found the string \"10\""),
            (r#"{"routes": [{"host": "a.example.com", "primary": {}, "canary": {}}]}"#.into(), "routes[0].canary_weight: missing"),
            (r#"{"routes": [{"host": "a.example.com", "primary": {}, "canary_weight": 1}]}"#.into(), "routes[0].canary: missing"),
            (r#"{"routes": [{"host": "a.example.com", "canary": {}, "canary_weight": 1}]}"#.into(), "routes[0].primary: missing"),
            (r#"{"routes": [{"primary": {}, "canary": {}, "canary_weight": 1}]}"#.into(), "routes[0].host: missing"),
            (route_with("").replace("a.example.com", "a.example.com:80"), "routes[0].host: \"a.example.com:80\" must not include a port (ports are ignored when matching)"),
            (route_with("").replace("a.example.com", "a b"), "routes[0].host: \"a b\" is not a valid host name"),
            (route_with("").replace("\"canary\": {}", "\"canary\": {\"host\": \"c:x\"}"), "routes[0].canary.host: \"c:x\" is not a valid host[:port]"),
            (route_with("").replace("\"canary\": {}", "\"canary\": {\"hots\": \"c\"}"), "routes[0].canary.hots: unknown field (expected one of: host)"),
            (route_with("").replace("\"primary\": {}", "\"primary\": \"p\""), "routes[0].primary: expected an object, found the string \"p\""),
            (format!(r#"{{"routes": [{0}, {0}]}}"#, r#"{"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 1}"#), "routes[1].host: \"a.example.com\" is already the host of routes[0]"),
            (format!(r#"{{"routes": [{}, {}]}}"#, r#"{"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 1}"#, r#"{"host": "A.Example.com", "primary": {}, "canary": {}, "canary_weight": 1}"#), "routes[1].host: \"a.example.com\" is already the host of routes[0]"),
            (route_with(r#""pin": [{"header": "h", "cookie": "c", "value": "v", "to": "canary"}]"#), "routes[0].pin[0]: needs exactly one of \"header\", \"cookie\" or \"token\""),
            (route_with(r#""pin": [{"value": "v", "to": "canary"}]"#), "routes[0].pin[0]: needs exactly one of \"header\", \"cookie\" or \"token\""),
            (route_with(r#""pin": [{"header": "h", "token": {"header": "t"}}]"#), "routes[0].pin[0]: needs exactly one of \"header\", \"cookie\" or \"token\""),
            (route_with(r#""pin": [{"header": "h", "value": "v"}]"#), "routes[0].pin[0].to: missing"),
            (route_with(r#""pin": [{"token": {"header": "t"}, "to": "canary"}]"#), "routes[0].pin[0]: takes no \"value\" or \"to\" with \"token\" (the token names the release)"),
            (route_with(r#""pin": [{"token": {"cookie": "t"}, "value": "v"}]"#), "routes[0].pin[0]: takes no \"value\" or \"to\" with \"token\" (the token names the release)"),
            (route_with(r#""pin": [{"token": {}}]"#), "routes[0].pin[0].token: needs exactly one of \"header\" or \"cookie\""),
            (route_with(r#""pin": [{"token": {"header": "t", "cookie": "t"}}]"#), "routes[0].pin[0].token: needs exactly one of \"header\" or \"cookie\""),
            (route_with(r#""pin": [{"token": {"client_ip": true}}]"#), "routes[0].pin[0].token.client_ip: unknown field (expected one of: header, cookie)"),
            (route_with(r#""pin": [{"token": {"header": "x y"}}]"#), "routes[0].pin[0].token.header: \"x y\" is not a valid header name"),
            (route_with(r#""pin": [{"token": "x-canary-token"}]"#), "routes[0].pin[0].token: expected an object, found the string \"x-canary-token\""),
            (route_with(r#""pin": [{"token": {"header": "t"}, "value": null}]"#), "routes[0].pin[0].value: expected a string, found null"),
            (route_with(r#""pin": [{"header": "h", "value": "v", "to": "both"}]"#), "routes[0].pin[0].to: \"both\" is not \"primary\" or \"canary\""),
            (route_with(r#""pin": [{"zz": 1, "header": "h", "value": "v", "to": "canary"}]"#), "routes[0].pin[0].zz: unknown field (expected one of: header, cookie, token, value, to)"),
            (route_with(r#""pin": [{"header": "h", "to": "canary"}]"#), "routes[0].pin[0].value: missing"),
            (route_with(r#""pin": [{"header": "h", "value": 1, "to": "canary"}]"#), "routes[0].pin[0].value: expected a string, found the number 1"),
            (route_with(r#""pin": [{"header": ":authority", "value": "v", "to": "canary"}]"#), "routes[0].pin[0].header: \":authority\" is not a valid header name"),
            (route_with(r#""pin": [{"cookie": "a=b", "value": "v", "to": "canary"}]"#), "routes[0].pin[0].cookie: \"a=b\" is not a valid cookie name"),
            (route_with(r#""pin": {"header": "h"}"#), "routes[0].pin: expected an array, found an object"),
            (route_with(r#""sticky": {}"#), "routes[0].sticky: needs exactly one of \"header\", \"cookie\" or \"client_ip\""),
            (route_with(r#""sticky": {"header": "u", "cookie": "u"}"#), "routes[0].sticky: needs exactly one of \"header\", \"cookie\" or \"client_ip\""),
            (route_with(r#""sticky": {"client_ip": false}"#), "routes[0].sticky.client_ip: must be true (omit \"sticky\" for no stickiness)"),
            (route_with(r#""sticky": {"ip": true}"#), "routes[0].sticky.ip: unknown field (expected one of: header, cookie, client_ip, assign)"),
            (route_with(r#""salt": """#), "routes[0].salt: must not be empty"),
            (route_with(r#""sticky": {"header": "u", "assign": {}}"#), "routes[0].sticky: takes \"assign\" only with \"cookie\" (keys are handed out in a cookie)"),
            (route_with(r#""sticky": {"client_ip": true, "assign": {}}"#), "routes[0].sticky: takes \"assign\" only with \"cookie\" (keys are handed out in a cookie)"),
            (route_with(r#""sticky": {"assign": {}}"#), "routes[0].sticky: needs exactly one of \"header\", \"cookie\" or \"client_ip\""),
            (route_with(r#""sticky": {"cookie": "u", "assign": true}"#), "routes[0].sticky.assign: expected an object, found true"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"max_age": 5}}"#), "routes[0].sticky.assign.max_age: unknown field (expected one of: max_age_seconds, path, domain)"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"max_age_seconds": 0}}"#), "routes[0].sticky.assign.max_age_seconds: 0 is not a whole number of seconds from 1 to 34560000 (400 days)"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"max_age_seconds": 34560001}}"#), "routes[0].sticky.assign.max_age_seconds: 34560001 is not a whole number of seconds from 1 to 34560000 (400 days)"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"max_age_seconds": 1.5}}"#), "routes[0].sticky.assign.max_age_seconds: 1.5 is not a whole number of seconds from 1 to 34560000 (400 days)"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"max_age_seconds": -1}}"#), "routes[0].sticky.assign.max_age_seconds: -1 is not a whole number of seconds from 1 to 34560000 (400 days)"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"max_age_seconds": "30d"}}"#), "routes[0].sticky.assign.max_age_seconds: expected a JSON number, found the string \"30d\""),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"path": "app"}}"#), "routes[0].sticky.assign.path: \"app\" is not a cookie path (starts with \"/\", visible ASCII without \";\")"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"path": "/a; Secure"}}"#), "routes[0].sticky.assign.path: \"/a; Secure\" is not a cookie path (starts with \"/\", visible ASCII without \";\")"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"path": ""}}"#), "routes[0].sticky.assign.path: must not be empty"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"domain": "example.com:443"}}"#), "routes[0].sticky.assign.domain: \"example.com:443\" is not a domain name"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"domain": "."}}"#), "routes[0].sticky.assign.domain: \".\" is not a domain name"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"domain": "other.com"}}"#), "routes[0]: sticky.assign.domain \"other.com\" is neither the host \"a.example.com\" nor a domain above it (browsers would refuse the cookie)"),
            (route_with(r#""sticky": {"cookie": "u", "assign": {"domain": "ple.com"}}"#), "routes[0]: sticky.assign.domain \"ple.com\" is neither the host \"a.example.com\" nor a domain above it (browsers would refuse the cookie)"),
            (route_with(r#""x_forwarded_host": "yes""#), "routes[0].x_forwarded_host: expected a boolean, found the string \"yes\""),
            (route_with("").replace("\"primary\": {}", "\"primary\": [\"p.example.com\"]"), "routes[0].primary: expected an object, found an array"),
            (r#"{"routes": [["a.example.com", {}, {}, 10]]}"#.into(), "routes[0]: expected an object, found an array"),
            (r#"{"routes": [], "routes": []}"#.into(), "routes: is set more than once"),
            (route_with(r#""sticky": {"client_ip": "yes"}"#), "routes[0].sticky.client_ip: expected a boolean, found the string \"yes\""),
            (route_with(r#""pin": [{"header": "h", "value": "v", "to": null}]"#), "routes[0].pin[0].to: expected a string, found null"),
            (route_with("").replace("10", "true"), "routes[0].canary_weight: expected a number from 0 to 100, found true"),
            (route_with("").replace("10", "1e3"), "routes[0].canary_weight: 1000.0 is not in 0..=100"),
            (r#"{"routes": [7], "x": "#.into(), "config: is not valid JSON: EOF while parsing a value at line 1 column 21"),
            (r#"{"routes": [], "decision_header": "Authorization"}"#.into(), "decision_header: \"authorization\" carries the client's credentials, which the filter would remove from every request to a host it does not split"),
            (r#"{"routes": [], "decision_header": "cookie"}"#.into(), "decision_header: \"cookie\" carries the client's credentials, which the filter would remove from every request to a host it does not split"),
            (r#"{"routes": [], "decision_header": "content-length"}"#.into(), "decision_header: \"content-length\" frames the HTTP message or connection: overwriting or removing it breaks requests"),
            (r#"{"routes": [], "decision_header": "Transfer-Encoding"}"#.into(), "decision_header: \"transfer-encoding\" frames the HTTP message or connection: overwriting or removing it breaks requests"),
            (r#"{"routes": [], "decision_header": "te"}"#.into(), "decision_header: \"te\" frames the HTTP message or connection: overwriting or removing it breaks requests"),
            (r#"{"routes": [], "decision_header": "x-envoy-upstream-rq-timeout-ms"}"#.into(), "decision_header: \"x-envoy-upstream-rq-timeout-ms\" is an x-envoy- header, which Envoy reads to route, retry and time out requests"),
            (r#"{"routes": [], "decision_header": ":authority"}"#.into(), "decision_header: \":authority\" is a pseudo-header, which Envoy owns"),
            (r#"{"routes": [], "decision_header": "x-forwarded-for"}"#.into(), "decision_header: \"x-forwarded-for\" is a header the filter or Envoy sets itself"),
            (route_with(r#""pin": [{"header": "X-Canary-Route", "value": "canary", "to": "canary"}]"#), "routes[0].pin[0].header: \"x-canary-route\" is the decision header, which the filter overwrites on split hosts and removes on others"),
            (route_with(r#""pin": [{"token": {"header": "x-canary-route"}}]"#), "routes[0].pin[0].token.header: \"x-canary-route\" is the decision header, which the filter overwrites on split hosts and removes on others"),
            (route_with(r#""sticky": {"header": "x-canary-route"}"#), "routes[0].sticky.header: \"x-canary-route\" is the decision header, which the filter overwrites on split hosts and removes on others"),
            (route_with(r#""sticky": {"header": "x-user"}"#).replace(r#"{"routes""#, r#"{"decision_header": "X-User", "routes""#), "routes[0].sticky.header: \"x-user\" is the decision header, which the filter overwrites on split hosts and removes on others"),
            (r#"{"routes": [], "pin_keys_env": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#.into(), "pin_keys_env: looks like a key, not the name of the variable that holds the keys (the value is not shown)"),
            (r#"{"routes": [], "pin_keys_env": "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s"}"#.into(), "pin_keys_env: looks like a key, not the name of the variable that holds the keys (the value is not shown)"),
            (r#"{"routes": [], "pin_keys_env": "KEY1,KEY2"}"#.into(), "pin_keys_env: looks like a key, not the name of the variable that holds the keys (the value is not shown)"),
            (r#"{"routes": [], "max_token_ttl_seconds": 0}"#.into(), "max_token_ttl_seconds: must be at least 1 (omit it for no limit)"),
            (r#"{"routes": [], "max_token_ttl_seconds": -5}"#.into(), "max_token_ttl_seconds: expected a whole number of seconds, found the number -5"),
            (r#"{"routes": [], "max_token_ttl_seconds": "1h"}"#.into(), "max_token_ttl_seconds: expected a whole number of seconds, found the string \"1h\""),
            (route_with(r#""release_hosts": "closed""#), "routes[0].release_hosts: \"closed\" is not \"open\" or \"token\""),
            (route_with(r#""release_hosts": "token""#), "routes[0].release_hosts: \"token\" admits only a request with a pin token, but the route has no token pin rule: every direct request would get 403"),
            (route_with(r#""release_hosts": "token", "pin": [{"token": {"header": "x-t"}}]"#), "routes[0].release_hosts: \"token\" protects the releases' own hosts, but neither primary nor canary has a host"),
            (format!(r#"{{"routes": [{}, {}]}}"#, r#"{"host": "a.example.com", "primary": {}, "canary": {"host": "B.example.com:8080"}, "canary_weight": 1, "release_hosts": "token", "pin": [{"token": {"header": "x-t"}}]}"#, r#"{"host": "b.example.com", "primary": {}, "canary": {}, "canary_weight": 1}"#), "routes[0].canary.host: \"b.example.com:8080\" is the host of routes[1], which the filter splits: it cannot also be a protected release host"),
        ];
        for (json, expected) in cases {
            assert_eq!(error_of(json), *expected, "config: {json}");
        }
    }
}
