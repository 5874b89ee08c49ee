//! The filter's JSON configuration: types, and validation that names the field path of every
//! problem (`routes[0].canary_weight: 150 is not in 0..=100`). Everything the request path needs
//! is prepared here, once: lower-cased names, weights in basis points, a map from host to route.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::authority::{self, MAX_HOST_LEN};
use crate::json_split::{self, SplitConfig};
use crate::sticky_hash::BUCKETS;

/// The decision header's name when the config does not set `decision_header`.
pub const DEFAULT_DECISION_HEADER: &str = "x-canary-route";
/// Where the client's original `:authority` is kept when the filter rewrites it.
pub const FORWARDED_HOST_HEADER: &str = "x-forwarded-host";
/// Names `decision_header` cannot take: the filter writes the first, Envoy turns the second into
/// `:authority`.
const RESERVED_DECISION_HEADERS: &[&str] = &[FORWARDED_HOST_HEADER, "host"];

/// The fields each object of the config may have; `filter-config/schema.json` must list the same.
pub const CONFIG_FIELDS: &[&str] = &["decision_header", "routes"];
pub const ROUTE_FIELDS: &[&str] = &["host", "primary", "canary", "canary_weight", "pin", "sticky", "salt"];
pub const TARGET_FIELDS: &[&str] = &["host"];
pub const PIN_RULE_FIELDS: &[&str] = &["header", "cookie", "value", "to"];
pub const STICKY_FIELDS: &[&str] = &["header", "cookie", "client_ip"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Where a request value comes from: a header, a cookie, or the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Lower-cased header name.
    Header(String),
    Cookie(String),
    ClientAddress,
}

/// A header or cookie with exactly `value` forces `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRule {
    pub source: KeySource,
    pub value: Vec<u8>,
    pub to: Variant,
}

/// One variant's target: with `host`, the filter rewrites `:authority` to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Public host, lower-cased, without port.
    pub host: String,
    pub primary: Target,
    pub canary: Target,
    /// Share of traffic for the canary, in `0..=10_000` basis points.
    pub canary_basis_points: u16,
    pub pins: Vec<PinRule>,
    pub sticky: Option<KeySource>,
    /// Salt of the sticky hash; the route's host unless the config overrides it.
    pub salt: String,
}

impl Route {
    pub fn target(&self, variant: Variant) -> &Target {
        match variant {
            Variant::Primary => &self.primary,
            Variant::Canary => &self.canary,
        }
    }
}

/// A validated configuration, ready for the request path.
#[derive(Debug)]
pub struct Config {
    /// Lower-cased name of the header that carries the decision.
    pub decision_header: String,
    pub routes: Vec<Route>,
    route_by_host: HashMap<Vec<u8>, usize>,
}

impl Config {
    /// Parses and validates the filter's JSON configuration.
    ///
    /// Routes are parsed and validated one at a time, so only one route's JSON tree exists at
    /// once: a Wasm VM's memory never shrinks, and a tree of every route of a large config would
    /// stay allocated in every worker. On any problem the whole document is parsed again and the
    /// problem reported from there, so the message never depends on the path taken.
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        if json.trim_ascii().is_empty() {
            return Err(ConfigError::new(
                Path::Root,
                "is empty (expected a JSON object with \"routes\")",
            ));
        }
        if let Some(config) = json_split::split_routes(json).and_then(|split| Config::from_split(&split)) {
            return Ok(config);
        }
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| ConfigError::new(Path::Root, format!("is not valid JSON: {e}")))?;
        Config::from_value(&value)
    }

    /// Validates a configuration already parsed, e.g. from the YAML of a WasmPlugin.
    pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
        Config::from_root(value, Config::without_routes())
    }

    fn from_split(split: &SplitConfig) -> Option<Config> {
        let mut config = Config::without_routes();
        let routes_path = Path::Field(&Path::Root, "routes");
        for (index, text) in split.routes.iter().enumerate() {
            let route: Value = serde_json::from_slice(text).ok()?;
            config.add_route(&route, Path::Index(&routes_path, index)).ok()?;
        }
        let root: Value = serde_json::from_slice(&split.without_routes).ok()?;
        Config::from_root(&root, config).ok()
    }

    fn without_routes() -> Config {
        Config {
            decision_header: DEFAULT_DECISION_HEADER.to_owned(),
            routes: Vec::new(),
            route_by_host: HashMap::new(),
        }
    }

    /// Validates the root object and adds the routes in its tree to those already in `config`.
    fn from_root(value: &Value, mut config: Config) -> Result<Config, ConfigError> {
        let root = Object::new(value, Path::Root, CONFIG_FIELDS)?;
        if let Some(field) = root.optional("decision_header") {
            let name = field.header_name()?;
            if RESERVED_DECISION_HEADERS.contains(&name.as_str()) {
                return Err(field.error(format!("{name:?} is a header the filter or Envoy sets itself")));
            }
            config.decision_header = name;
        }
        let routes_field = root.required("routes")?;
        for (index, route) in routes_field.array()?.iter().enumerate() {
            config.add_route(route, Path::Index(&routes_field.path, index))?;
        }
        Ok(config)
    }

    fn add_route(&mut self, value: &Value, path: Path) -> Result<(), ConfigError> {
        let route = parse_route(value, path)?;
        if let Some(&first) = self.route_by_host.get(route.host.as_bytes()) {
            return Err(ConfigError::new(
                Path::Field(&path, "host"),
                format!("{:?} is already the host of routes[{first}]", route.host),
            ));
        }
        self.route_by_host
            .insert(route.host.as_bytes().to_vec(), self.routes.len());
        self.routes.push(route);
        Ok(())
    }

    /// The route for a request's `:authority`, matched case-insensitively with the port ignored.
    pub fn route_for_authority(&self, authority: &[u8]) -> Option<&Route> {
        let mut buffer = [0; MAX_HOST_LEN];
        let host = authority::normalized_host(authority, &mut buffer)?;
        self.route_by_host.get(host).and_then(|&index| self.routes.get(index))
    }
}

fn parse_route(value: &Value, path: Path) -> Result<Route, ConfigError> {
    let route = Object::new(value, path, ROUTE_FIELDS)?;
    let host = route.required("host")?.public_host()?;
    let primary = parse_target(route.required("primary")?)?;
    let canary = parse_target(route.required("canary")?)?;
    let canary_basis_points = route.required("canary_weight")?.weight_basis_points()?;
    let pins = match route.optional("pin") {
        Some(field) => {
            let rules = field.array()?;
            let mut pins = Vec::with_capacity(rules.len());
            for (index, rule) in rules.iter().enumerate() {
                pins.push(parse_pin_rule(rule, Path::Index(&field.path, index))?);
            }
            pins
        }
        None => Vec::new(),
    };
    let sticky = route.optional("sticky").map(parse_sticky).transpose()?;
    let salt = match route.optional("salt") {
        Some(field) => field.non_empty_string()?.to_owned(),
        None => host.clone(),
    };
    Ok(Route {
        host,
        primary,
        canary,
        canary_basis_points,
        pins,
        sticky,
        salt,
    })
}

fn parse_target(field: Field) -> Result<Target, ConfigError> {
    let target = Object::new(field.value, field.path, TARGET_FIELDS)?;
    let host = target.optional("host").map(|f| f.target_host()).transpose()?;
    Ok(Target { host })
}

fn parse_pin_rule(value: &Value, path: Path) -> Result<PinRule, ConfigError> {
    let rule = Object::new(value, path, PIN_RULE_FIELDS)?;
    let source = match (rule.optional("header"), rule.optional("cookie")) {
        (Some(header), None) => KeySource::Header(header.header_name()?),
        (None, Some(cookie)) => KeySource::Cookie(cookie.cookie_name()?),
        _ => return Err(rule.error("needs exactly one of \"header\" or \"cookie\"")),
    };
    let value = rule.required("value")?.string()?.as_bytes().to_vec();
    let to = rule.required("to")?.variant()?;
    Ok(PinRule { source, value, to })
}

fn parse_sticky(field: Field) -> Result<KeySource, ConfigError> {
    let sticky = Object::new(field.value, field.path, STICKY_FIELDS)?;
    match (
        sticky.optional("header"),
        sticky.optional("cookie"),
        sticky.optional("client_ip"),
    ) {
        (Some(header), None, None) => Ok(KeySource::Header(header.header_name()?)),
        (None, Some(cookie), None) => Ok(KeySource::Cookie(cookie.cookie_name()?)),
        (None, None, Some(client_ip)) => match client_ip.value {
            Value::Bool(true) => Ok(KeySource::ClientAddress),
            _ => Err(client_ip.error("must be true (omit \"sticky\" for no stickiness)")),
        },
        _ => Err(sticky.error("needs exactly one of \"header\", \"cookie\" or \"client_ip\"")),
    }
}

/// A configuration problem: where (`routes[0].pin[1].to`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub problem: String,
}

impl ConfigError {
    fn new(path: Path, problem: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_string(),
            problem: problem.into(),
        }
    }
}

/// Where a value sits in the config (`routes[0].pin[1]`): kept as links to its parents and
/// rendered only for an error, so validating a large config builds no strings.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("config"),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// A JSON object whose field names have been checked against the ones allowed at `path`.
struct Object<'v, 'p> {
    fields: &'v Map<String, Value>,
    path: Path<'p>,
}

impl<'v, 'p> Object<'v, 'p> {
    fn new(value: &'v Value, path: Path<'p>, allowed: &[&str]) -> Result<Self, ConfigError> {
        let Value::Object(fields) = value else {
            return Err(Field { value, path }.type_error("an object"));
        };
        let object = Object { fields, path };
        if let Some(unknown) = fields.keys().find(|name| !allowed.contains(&name.as_str())) {
            return Err(ConfigError::new(
                Path::Field(&object.path, unknown),
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            ));
        }
        Ok(object)
    }

    /// A field that is absent or JSON `null` counts as not set.
    fn optional<'s>(&'s self, name: &'static str) -> Option<Field<'v, 's>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Field {
                value,
                path: Path::Field(&self.path, name),
            }),
        }
    }

    fn required<'s>(&'s self, name: &'static str) -> Result<Field<'v, 's>, ConfigError> {
        self.optional(name)
            .ok_or_else(|| ConfigError::new(Path::Field(&self.path, name), "missing"))
    }

    fn error(&self, problem: &str) -> ConfigError {
        ConfigError::new(self.path, problem)
    }
}

/// One JSON value with its path, and the typed readers that validate it.
struct Field<'v, 'p> {
    value: &'v Value,
    path: Path<'p>,
}

impl<'v> Field<'v, '_> {
    fn error(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path, problem)
    }

    fn type_error(&self, expected: &str) -> ConfigError {
        let found = match self.value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("{b}"),
            Value::Number(n) => format!("the number {n}"),
            Value::String(s) => format!("the string {s:?}"),
            Value::Array(_) => "an array".to_owned(),
            Value::Object(_) => "an object".to_owned(),
        };
        ConfigError::new(self.path, format!("expected {expected}, found {found}"))
    }

    fn array(&self) -> Result<&'v Vec<Value>, ConfigError> {
        self.value.as_array().ok_or_else(|| self.type_error("an array"))
    }

    fn string(&self) -> Result<&'v str, ConfigError> {
        self.value.as_str().ok_or_else(|| self.type_error("a string"))
    }

    fn non_empty_string(&self) -> Result<&'v str, ConfigError> {
        let s = self.string()?;
        if s.is_empty() {
            return Err(self.error("must not be empty"));
        }
        Ok(s)
    }

    fn variant(&self) -> Result<Variant, ConfigError> {
        match self.string()? {
            "primary" => Ok(Variant::Primary),
            "canary" => Ok(Variant::Canary),
            other => Err(self.error(format!("{other:?} is not \"primary\" or \"canary\""))),
        }
    }

    /// An HTTP header name (an RFC 9110 token), lower-cased as Envoy presents it.
    fn header_name(&self) -> Result<String, ConfigError> {
        let name = self.non_empty_string()?;
        if !name.bytes().all(is_token_byte) {
            return Err(self.error(format!("{name:?} is not a valid header name")));
        }
        Ok(name.to_ascii_lowercase())
    }

    fn cookie_name(&self) -> Result<String, ConfigError> {
        let name = self.non_empty_string()?;
        if !name.bytes().all(is_token_byte) {
            return Err(self.error(format!("{name:?} is not a valid cookie name")));
        }
        Ok(name.to_owned())
    }

    /// The public host a route matches: a DNS name, case-insensitive, without port.
    fn public_host(&self) -> Result<String, ConfigError> {
        let host = self.non_empty_string()?;
        if host.contains(':') {
            return Err(self.error(format!(
                "{host:?} must not include a port (ports are ignored when matching)"
            )));
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() || host.len() > MAX_HOST_LEN || !host.bytes().all(is_host_byte) {
            return Err(self.error(format!("{host:?} is not a valid host name")));
        }
        Ok(host.to_ascii_lowercase())
    }

    /// The host a variant's requests are rewritten to; a port is allowed here.
    fn target_host(&self) -> Result<String, ConfigError> {
        let host = self.non_empty_string()?;
        let (name, port) = host.split_once(':').unwrap_or((host, "80"));
        let port_ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if name.is_empty() || name.len() > MAX_HOST_LEN || !name.bytes().all(is_host_byte) || !port_ok {
            return Err(self.error(format!("{host:?} is not a valid host[:port]")));
        }
        Ok(host.to_ascii_lowercase())
    }

    /// `canary_weight`: a percentage from 0 to 100 with at most two decimals.
    fn weight_basis_points(&self) -> Result<u16, ConfigError> {
        let Value::Number(number) = self.value else {
            return Err(self.type_error("a number from 0 to 100"));
        };
        let percent = number.as_f64().unwrap_or(f64::NAN);
        if !(0.0..=100.0).contains(&percent) {
            return Err(self.error(format!("{number} is not in 0..=100")));
        }
        let basis_points = (percent * 100.0).round();
        if (percent * 100.0 - basis_points).abs() > 1e-6 {
            return Err(self.error(format!(
                "{number} is finer than the resolution of 0.01 (one basis point)"
            )));
        }
        // In 0..=10_000 after the range check above.
        Ok(basis_points.clamp(0.0, f64::from(BUCKETS)) as u16)
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
                PinRule {
                    source: KeySource::Header("traffic".into()),
                    value: b"test".to_vec(),
                    to: Variant::Canary
                },
                PinRule {
                    source: KeySource::Cookie("canary".into()),
                    value: b"never".to_vec(),
                    to: Variant::Primary
                },
            ]
        );
        assert_eq!(route.sticky, Some(KeySource::Header("x-user-id".into())));
    }

    #[test]
    fn route_by_route_and_whole_tree_parsing_agree() {
        let tricky = r#"{"routes": [{"host": "b.example.com", "primary": {}, "canary": {}, "canary_weight": 1,
            "pin": [{"header": "h", "value": "]},{\"[\\", "to": "canary"}]}], "decision_header": "X-D"}"#;
        for json in [CONTRACT_EXAMPLE, tricky] {
            assert!(json_split::split_routes(json.as_bytes()).is_some(), "{json}");
            let from_json = Config::from_json(json.as_bytes()).expect("valid");
            let from_value = Config::from_value(&serde_json::from_str(json).expect("JSON")).expect("valid");
            assert_eq!(from_json.routes, from_value.routes);
            assert_eq!(from_json.decision_header, from_value.decision_header);
            assert!(from_json
                .route_for_authority(from_json.routes[0].host.as_bytes())
                .is_some());
        }
    }

    #[test]
    fn every_truncation_of_a_config_gets_the_whole_tree_message() {
        for len in 0..CONTRACT_EXAMPLE.len() {
            let truncated = &CONTRACT_EXAMPLE.as_bytes()[..len];
            let error = Config::from_json(truncated).expect_err("truncated");
            match serde_json::from_slice::<Value>(truncated) {
                Ok(value) => assert_eq!(Some(error), Config::from_value(&value).err(), "{len}"),
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
        let route = config.routes.first().expect("one route");
        assert_eq!(route.host, "shop.example.com");
        assert_eq!(route.canary.host.as_deref(), Some("canary.svc:8080"));
        assert_eq!(route.primary.host, None);
        assert_eq!(route.salt, "rollout-7");
        assert_eq!(route.sticky, Some(KeySource::ClientAddress));
        let pin = route.pins.first().expect("one pin");
        assert_eq!(pin.source, KeySource::Header("x-canary".into()));
        assert_eq!(pin.value, b"Always", "values match exactly, case included");
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
            (r#"{"routes": [], "decision_heder": "x"}"#.into(), "decision_heder: unknown field (expected one of: decision_header, routes)"),
            (r#"{"routes": [], "decision_header": "bad header"}"#.into(), "decision_header: \"bad header\" is not a valid header name"),
            (r#"{"routes": [], "decision_header": ""}"#.into(), "decision_header: must not be empty"),
            (r#"{"routes": [], "decision_header": "X-Forwarded-Host"}"#.into(), "decision_header: \"x-forwarded-host\" is a header the filter or Envoy sets itself"),
            (r#"{"routes": [], "decision_header": "host"}"#.into(), "decision_header: \"host\" is a header the filter or Envoy sets itself"),
            (r#"{"routes": [7]}"#.into(), "routes[0]: expected an object, found the number 7"),
            (route_with(r#""canary_weigth": 5"#), "routes[0].canary_weigth: unknown field (expected one of: host, primary, canary, canary_weight, pin, sticky, salt)"),
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
            (route_with(r#""pin": [{"header": "h", "cookie": "c", "value": "v", "to": "canary"}]"#), "routes[0].pin[0]: needs exactly one of \"header\" or \"cookie\""),
            (route_with(r#""pin": [{"value": "v", "to": "canary"}]"#), "routes[0].pin[0]: needs exactly one of \"header\" or \"cookie\""),
            (route_with(r#""pin": [{"header": "h", "value": "v", "to": "both"}]"#), "routes[0].pin[0].to: \"both\" is not \"primary\" or \"canary\""),
            (route_with(r#""pin": [{"header": "h", "to": "canary"}]"#), "routes[0].pin[0].value: missing"),
            (route_with(r#""pin": [{"header": "h", "value": 1, "to": "canary"}]"#), "routes[0].pin[0].value: expected a string, found the number 1"),
            (route_with(r#""pin": [{"header": ":authority", "value": "v", "to": "canary"}]"#), "routes[0].pin[0].header: \":authority\" is not a valid header name"),
            (route_with(r#""pin": [{"cookie": "a=b", "value": "v", "to": "canary"}]"#), "routes[0].pin[0].cookie: \"a=b\" is not a valid cookie name"),
            (route_with(r#""pin": {"header": "h"}"#), "routes[0].pin: expected an array, found an object"),
            (route_with(r#""sticky": {}"#), "routes[0].sticky: needs exactly one of \"header\", \"cookie\" or \"client_ip\""),
            (route_with(r#""sticky": {"header": "u", "cookie": "u"}"#), "routes[0].sticky: needs exactly one of \"header\", \"cookie\" or \"client_ip\""),
            (route_with(r#""sticky": {"client_ip": false}"#), "routes[0].sticky.client_ip: must be true (omit \"sticky\" for no stickiness)"),
            (route_with(r#""sticky": {"ip": true}"#), "routes[0].sticky.ip: unknown field (expected one of: header, cookie, client_ip)"),
            (route_with(r#""salt": """#), "routes[0].salt: must not be empty"),
        ];
        for (json, expected) in cases {
            assert_eq!(error_of(json), *expected, "config: {json}");
        }
    }
}
