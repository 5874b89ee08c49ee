//! Filter configs found in a file: a JSON filter config, the `pluginConfig` of each WasmPlugin in a
//! YAML file, or the Wasm filter of each resource in an ECDS file (what Envoy watches when it
//! reads its filter config from a file, as the tests and the local demo do).

use std::collections::BTreeMap;
use std::fmt;

use canary_split::config::{Config, Route};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::gateway::ListenerMatch;

/// Where in its file a config was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The whole file is the filter config.
    Json,
    /// `spec.pluginConfig` of a WasmPlugin.
    WasmPlugin { name: String, namespace: Option<String> },
    /// The `configuration` string of the Wasm filter in `resources[index]` of an ECDS file.
    Ecds { resource: usize },
}

/// One filter config found in a file, as the JSON the filter would be given, with a label saying
/// where it came from.
pub struct FoundConfig {
    pub label: String,
    pub origin: Origin,
    pub json: Result<Vec<u8>, String>,
    /// For a WasmPlugin, the workload labels it selects (`spec.selector.matchLabels`).
    pub selector: Option<BTreeMap<String, String>>,
    /// For a WasmPlugin, the gateway listeners its `spec.match` selects; every one otherwise.
    pub listeners: ListenerMatch,
    /// For a WasmPlugin with targetRefs, the Gateway API Gateways it runs on (`namespace/name`).
    pub targets: Option<Vec<String>>,
}

impl FoundConfig {
    /// The filter's own verdict on it, in the filter's words. Token pins are checked for their
    /// form only: their keys live on the gateway (see `parse_with_keys`).
    pub fn parse(&self) -> Result<Config, String> {
        self.json
            .as_ref()
            .map_err(String::clone)
            .and_then(|json| Config::from_json(json).map_err(|e| e.to_string()))
    }

    /// As `parse`, with token pins keyed by `keys` (the value of a key list) or, without, by the
    /// config's variable if it is set here.
    pub fn parse_with_keys(&self, keys: Option<&str>) -> Result<Loaded, String> {
        let config = self.parse()?;
        if !config.has_token_pins() {
            return Ok(Loaded {
                config,
                keys: Keys::NotNeeded,
            });
        }
        let value = keys
            .map(str::to_owned)
            .or_else(|| std::env::var(&config.pin_keys_env).ok());
        let Some(value) = value else {
            let keys = Keys::NotHere(config.pin_keys_env.clone());
            return Ok(Loaded { config, keys });
        };
        let json = self.json.as_ref().map_err(String::clone)?;
        let config = Config::from_json_with_env(json, |_| Some(value)).map_err(|e| e.to_string())?;
        Ok(Loaded {
            config,
            keys: Keys::Loaded,
        })
    }
}

/// A config that passed the filter's validation, and what became of its token pins' keys.
pub struct Loaded {
    pub config: Config,
    pub keys: Keys,
}

pub enum Keys {
    /// No token pins.
    NotNeeded,
    Loaded,
    /// Token pins, but the variable they take keys from is not set here: keys live on the gateway.
    NotHere(String),
}

pub fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

pub fn read_configs(path: &str) -> Result<Vec<FoundConfig>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    parse_configs(path, bytes)
}

/// The configs in `bytes`, read as the file at `path` would be.
pub fn parse_configs(path: &str, bytes: Vec<u8>) -> Result<Vec<FoundConfig>, String> {
    if is_yaml(path) {
        let text = String::from_utf8(bytes).map_err(|e| format!("{path}: {e}"))?;
        return wasm_plugin_configs(path, &text);
    }
    match strict_json(&bytes) {
        Ok(Value::Object(file)) if file.contains_key("resources") => ecds_configs(path, &file),
        // Anything else goes to the filter as it is, which judges it in its own words.
        _ => Ok(vec![FoundConfig {
            label: path.to_owned(),
            origin: Origin::Json,
            json: Ok(bytes),
            selector: None,
            listeners: ListenerMatch::Every,
            targets: None,
        }]),
    }
}

/// The documents of a YAML file, in order (JSON is YAML too). A mapping with the same key twice
/// is refused: YAML parsers read it as the last value, where the filter refuses duplicate keys.
pub fn yaml_documents(path: &str, text: &str) -> Result<Vec<Value>, String> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(index, document)| {
            StrictValue::deserialize(document)
                .map(|StrictValue(value)| value)
                .map_err(|e| format!("{path}: document {index} is not valid YAML: {e}"))
        })
        .collect()
}

/// A JSON document read as `yaml_documents` reads YAML: a key twice in an object is refused.
pub fn strict_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<StrictValue>(bytes).map(|StrictValue(value)| value)
}

/// A value read like `serde_json::Value`, except that a mapping with a key twice is an error.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(deserializer).map(|StrictValue(value)| value)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} appears twice in one mapping"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

pub fn is_kind(document: &Value, kind: &str) -> bool {
    document.get("kind").and_then(Value::as_str) == Some(kind)
}

fn wasm_plugin_configs(path: &str, text: &str) -> Result<Vec<FoundConfig>, String> {
    let found: Vec<FoundConfig> = yaml_documents(path, text)?
        .iter()
        .filter(|document| is_kind(document, "WasmPlugin"))
        .map(|document| wasm_plugin_config(path, document))
        .collect();
    if found.is_empty() {
        return Err(format!("{path}: no WasmPlugin document"));
    }
    Ok(found)
}

pub fn wasm_plugin_config(path: &str, document: &Value) -> FoundConfig {
    let metadata = |field: &str| {
        document
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let name = metadata("name").unwrap_or_else(|| "?".to_owned());
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
        origin: Origin::WasmPlugin {
            name,
            namespace: metadata("namespace"),
        },
        json,
        selector,
        listeners: ListenerMatch::of_wasm_plugin(document),
        targets: crate::gateway_api::target_gateways(document),
    }
}

/// Where an ECDS resource keeps the Wasm filter's config, as a JSON string.
pub const ECDS_CONFIGURATION: &str = "/typed_config/config/configuration/value";

fn ecds_configs(path: &str, file: &serde_json::Map<String, Value>) -> Result<Vec<FoundConfig>, String> {
    let resources = file
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{path}: resources is not an array"))?;
    let found: Vec<FoundConfig> = resources
        .iter()
        .enumerate()
        .filter_map(|(index, resource)| {
            let configuration = resource.pointer(ECDS_CONFIGURATION)?.as_str()?;
            let name = resource.get("name").and_then(Value::as_str).unwrap_or("?");
            Some(FoundConfig {
                label: format!("{path}: ECDS resource {name}"),
                origin: Origin::Ecds { resource: index },
                json: Ok(configuration.as_bytes().to_vec()),
                selector: None,
                listeners: ListenerMatch::Every,
                targets: None,
            })
        })
        .collect();
    if found.is_empty() {
        return Err(format!("{path}: no ECDS resource with a Wasm filter configuration"));
    }
    Ok(found)
}

/// The one config of a file, for the commands that work on one.
pub fn read_one_config(path: &str, command: &str) -> Result<(FoundConfig, Config), String> {
    one_config(path, read_configs(path)?, command)
}

pub fn one_config(path: &str, configs: Vec<FoundConfig>, command: &str) -> Result<(FoundConfig, Config), String> {
    let found = the_only(path, configs, command)?;
    let config = found
        .parse()
        .map_err(|e| format!("{}: invalid configuration: {e}", found.label))?;
    Ok((found, config))
}

/// As `one_config`, with token pins' keys (`FoundConfig::parse_with_keys`).
pub fn one_config_with_keys(
    path: &str,
    configs: Vec<FoundConfig>,
    command: &str,
    keys: Option<&str>,
) -> Result<Loaded, String> {
    let found = the_only(path, configs, command)?;
    found
        .parse_with_keys(keys)
        .map_err(|e| format!("{}: invalid configuration: {e}", found.label))
}

fn the_only(path: &str, mut configs: Vec<FoundConfig>, command: &str) -> Result<FoundConfig, String> {
    if configs.len() != 1 {
        return Err(format!(
            "{path}: holds {} configs; {command} needs exactly one",
            configs.len()
        ));
    }
    Ok(configs.remove(0))
}

/// The routes a command works on: the one `--host` names, or else all of them.
pub fn routes_for<'c>(config: &'c Config, host: Option<&str>) -> Result<Vec<(usize, &'c Route)>, String> {
    let Some(host) = host else {
        return Ok(config.routes.iter().enumerate().collect());
    };
    let route = config
        .route_for_authority(host.as_bytes())
        .ok_or_else(|| format!("--host {host}: no route for it in the config"))?;
    let index = config
        .routes
        .iter()
        .position(|r| r.host == route.host)
        .ok_or_else(|| format!("--host {host}: no route for it in the config"))?;
    Ok(vec![(index, route)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_in_yaml_and_json() {
        let yaml = "kind: WasmPlugin\nspec:\n  pluginConfig:\n    routes: []\n  pluginConfig:\n    routes: [1]\n";
        let error = yaml_documents("p.yaml", yaml).unwrap_err();
        assert!(
            error.starts_with(
                "p.yaml: document 0 is not valid YAML: spec: the key \"pluginConfig\" appears twice in one mapping"
            ),
            "{error}"
        );
        let flow = "---\nkind: x\n---\n{a: 1, b: {c: 1, c: 2}}\n";
        assert!(yaml_documents("p.yaml", flow).unwrap_err().contains("document 1"));
        assert!(strict_json(br#"{"resources": [], "resources": [{}]}"#).is_err());

        let fine = "a: 1\nb: [x, {c: 1.5, d: null, e: true}]\n---\n- 7\n";
        assert_eq!(
            yaml_documents("p.yaml", fine).unwrap(),
            vec![
                serde_json::json!({"a": 1, "b": ["x", {"c": 1.5, "d": null, "e": true}]}),
                serde_json::json!([7])
            ]
        );
    }
}
