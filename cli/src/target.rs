//! Where a rollout writes each new `canary_weight`: the WasmPlugin YAML (or JSON filter config) a
//! GitOps pipeline applies, the running gateway through `kubectl patch`, or the ECDS file a local
//! Envoy watches. Every config written is first checked by the filter's own validation.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::config_file::{is_yaml, one_config, parse_configs, Origin, ECDS_CONFIGURATION};
use crate::text_edit::{set_canary_weight, Document};
use crate::weight::Weight;

pub enum Target {
    /// Edit the one `canary_weight` line of a WasmPlugin YAML or a JSON filter config.
    File { path: String },
    /// Rewrite the filter config inside an ECDS file, atomically, so Envoy reloads it.
    Ecds { path: String, resource: usize },
    /// `kubectl patch` the WasmPlugin; print the command, or run it with `run`.
    Kubectl {
        name: String,
        namespace: Option<String>,
        run: bool,
    },
}

/// A target and the route whose weight it sets.
pub struct Writer {
    target: Target,
    route: usize,
    /// The route's host as the file spells it, for kubectl's check that the index still names it.
    host: Value,
    /// A shell command run after each write to a file, to apply it (e.g. commit and push).
    after_write: Option<String>,
}

impl Writer {
    pub fn new(target: Target, route: usize, config_json: &[u8]) -> Result<Writer, String> {
        let config: Value = serde_json::from_slice(config_json).map_err(|e| e.to_string())?;
        let host = config
            .pointer(&format!("/routes/{route}/host"))
            .cloned()
            .ok_or_else(|| format!("no routes[{route}].host"))?;
        Ok(Writer {
            target,
            route,
            host,
            after_write: None,
        })
    }

    /// Runs `command` with `sh -c` after each write to a file, with `CANARY_WEIGHT` set to the
    /// weight written: how a pipeline applies the edited file.
    pub fn after_write(mut self, command: Option<&str>) -> Result<Writer, String> {
        if command.is_some() && matches!(self.target, Target::Kubectl { .. }) {
            return Err("--after-write goes with a file, not --kubectl".to_owned());
        }
        self.after_write = command.map(str::to_owned);
        Ok(self)
    }

    /// For the target named by `--config` (and `--kubectl`).
    pub fn for_config(path: &str, origin: &Origin, kubectl: bool, run: bool) -> Result<Target, String> {
        match (origin, kubectl) {
            (Origin::WasmPlugin { name, namespace }, true) => Ok(Target::Kubectl {
                name: name.clone(),
                namespace: namespace.clone(),
                run,
            }),
            (_, true) => Err(format!("--kubectl needs a WasmPlugin YAML as --config, not {path}")),
            (Origin::Ecds { resource }, false) => Ok(Target::Ecds {
                path: path.to_owned(),
                resource: *resource,
            }),
            (Origin::Json | Origin::WasmPlugin { .. }, false) => Ok(Target::File { path: path.to_owned() }),
        }
    }

    /// Where the weight goes, for the terminal.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::File { path } => format!("the canary_weight line of {path}"),
            Target::Ecds { path, .. } => format!("the ECDS file {path}"),
            Target::Kubectl { name, run: true, .. } => format!("WasmPlugin {name} through kubectl"),
            Target::Kubectl { run: false, .. } => "nothing (kubectl commands printed only)".to_owned(),
        }
    }

    /// Sets the weight; says what was done.
    pub fn write(&self, weight: Weight) -> Result<String, String> {
        let written = match &self.target {
            Target::File { path } => self.write_file(path, weight),
            Target::Ecds { path, resource } => self.write_ecds(path, *resource, weight),
            Target::Kubectl { run: false, .. } => Ok(self.kubectl_command(weight)),
            Target::Kubectl { run: true, .. } => self.run_kubectl(weight),
        }?;
        let Some(command) = &self.after_write else {
            return Ok(written);
        };
        let status = Command::new("sh")
            .args(["-c", command])
            .env("CANARY_WEIGHT", weight.to_string())
            .status()
            .map_err(|e| format!("--after-write: sh: {e}"))?;
        if !status.success() {
            return Err(format!("{written}, but --after-write {command:?} failed ({status})"));
        }
        Ok(format!("{written}, then ran --after-write"))
    }

    fn pointer(&self) -> String {
        format!("/routes/{}/canary_weight", self.route)
    }

    fn write_file(&self, path: &str, weight: Weight) -> Result<String, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let edited = if is_yaml(path) {
            let plugin = wasm_plugin_index(path, &text)?;
            let pointer = format!("/{plugin}/spec/pluginConfig{}", self.pointer());
            let document = Document {
                parse: &|text| all_yaml_documents(path, text),
                pointer: &pointer,
            };
            set_canary_weight(&text, &document, &weight.to_string())
        } else {
            let pointer = self.pointer();
            let document = Document {
                parse: &|text| serde_json::from_str(text).map_err(|e| format!("{path}: {e}")),
                pointer: &pointer,
            };
            set_canary_weight(&text, &document, &weight.to_string())
        }
        .map_err(|e| format!("{path}: {e}"))?;
        self.check(path, edited.as_bytes(), weight)?;
        if edited != text {
            write_atomically(path, edited.as_bytes())?;
        }
        Ok(format!("canary_weight: {weight} in {path}"))
    }

    fn write_ecds(&self, path: &str, resource: usize, weight: Weight) -> Result<String, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let mut file: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{path}: {e}"))?;
        let slot = file
            .pointer_mut(&format!("/resources/{resource}{ECDS_CONFIGURATION}"))
            .ok_or_else(|| format!("{path}: resources[{resource}] has no Wasm filter configuration"))?;
        let mut config: Value = slot
            .as_str()
            .ok_or_else(|| format!("{path}: resources[{resource}]: the configuration is not a string"))
            .and_then(|json| serde_json::from_str(json).map_err(|e| format!("{path}: {e}")))?;
        let pointer = self.pointer();
        let current = config
            .pointer_mut(&pointer)
            .ok_or_else(|| format!("{path}: the filter config has no {pointer}"))?;
        *current = weight_value(weight)?;
        *slot = Value::String(config.to_string());
        let updated = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
        self.check(path, &updated, weight)?;
        write_atomically(path, &updated)?;
        Ok(format!("canary_weight: {weight} in {path}"))
    }

    /// The config about to be written passes the filter's validation and has the new weight.
    fn check(&self, path: &str, bytes: &[u8], weight: Weight) -> Result<(), String> {
        let (_, config) = one_config(path, parse_configs(path, bytes.to_vec())?, "rollout")?;
        match config.routes.get(self.route) {
            Some(route) if route.canary_basis_points == weight.basis_points() => Ok(()),
            _ => Err(format!(
                "{path}: the edited config does not have canary_weight {weight}"
            )),
        }
    }

    fn kubectl_args(&self, weight: Weight) -> Result<Vec<String>, String> {
        let Target::Kubectl { name, namespace, .. } = &self.target else {
            return Err("not a kubectl target".to_owned());
        };
        let route = format!("/spec/pluginConfig/routes/{}", self.route);
        // The test operation makes the API server refuse the patch if the route moved.
        let patch = serde_json::json!([
            {"op": "test", "path": format!("{route}/host"), "value": self.host},
            {"op": "replace", "path": format!("{route}/canary_weight"), "value": weight_value(weight)?},
        ]);
        let mut args = vec!["patch".to_owned(), "wasmplugin".to_owned(), name.clone()];
        if let Some(namespace) = namespace {
            args.extend(["--namespace".to_owned(), namespace.clone()]);
        }
        args.extend(["--type=json".to_owned(), "-p".to_owned(), patch.to_string()]);
        Ok(args)
    }

    /// The `kubectl` command line that sets `weight`, quoted for a POSIX shell.
    pub fn kubectl_command(&self, weight: Weight) -> String {
        match self.kubectl_args(weight) {
            Ok(args) => std::iter::once("kubectl".to_owned())
                .chain(args.iter().map(|arg| shell_quoted(arg)))
                .collect::<Vec<_>>()
                .join(" "),
            Err(error) => error,
        }
    }

    fn run_kubectl(&self, weight: Weight) -> Result<String, String> {
        let output = Command::new("kubectl")
            .args(self.kubectl_args(weight)?)
            .output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{} failed ({}): {}",
                self.kubectl_command(weight),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(format!(
            "canary_weight: {weight} through {}",
            self.kubectl_command(weight)
        ))
    }
}

fn weight_value(weight: Weight) -> Result<Value, String> {
    serde_json::from_str(&weight.to_string()).map_err(|e| e.to_string())
}

fn all_yaml_documents(path: &str, text: &str) -> Result<Value, String> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(serde::Deserialize::deserialize)
        .collect::<Result<Vec<Value>, _>>()
        .map(Value::Array)
        .map_err(|e| format!("{path}: {e}"))
}

/// Which document of the file is its one WasmPlugin.
fn wasm_plugin_index(path: &str, text: &str) -> Result<usize, String> {
    let documents = all_yaml_documents(path, text)?;
    let plugins: Vec<usize> = documents
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .enumerate()
        .filter(|(_, document)| document.get("kind").and_then(Value::as_str) == Some("WasmPlugin"))
        .map(|(index, _)| index)
        .collect();
    match plugins.as_slice() {
        [plugin] => Ok(*plugin),
        _ => Err(format!(
            "{path}: holds {} WasmPlugin documents; rollout needs exactly one",
            plugins.len()
        )),
    }
}

/// Replaces the file in one step, so that nothing ever reads half of it (Envoy reloads an ECDS
/// file when one is moved into its directory). The file keeps its permissions.
fn write_atomically(path: &str, bytes: &[u8]) -> Result<(), String> {
    let target = Path::new(path);
    let name = target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let staging = target.with_file_name(format!(".{name}.canary-split-staging"));
    let permissions = std::fs::metadata(target)
        .map_err(|e| format!("{path}: {e}"))?
        .permissions();
    std::fs::write(&staging, bytes)
        .and_then(|()| std::fs::set_permissions(&staging, permissions))
        .and_then(|()| std::fs::rename(&staging, target))
        .map_err(|e| format!("{path}: {e}"))
}

/// `arg` as one word for a POSIX shell.
fn shell_quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '=' | ':' | ','));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quoted("canary-split"), "canary-split");
        assert_eq!(shell_quoted("--type=json"), "--type=json");
        assert_eq!(shell_quoted(r#"[{"op":"test"}]"#), r#"'[{"op":"test"}]'"#);
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
        assert_eq!(shell_quoted(""), "''");
    }

    #[test]
    fn the_kubectl_patch_checks_the_route_and_sets_only_its_weight() {
        let writer = Writer::new(
            Target::Kubectl {
                name: "canary-split".to_owned(),
                namespace: Some("istio-system".to_owned()),
                run: false,
            },
            1,
            br#"{"routes": [{"host": "a"}, {"host": "Shop.example.com"}]}"#,
        )
        .unwrap();
        assert_eq!(
            writer.kubectl_command(Weight::parse("12.5").unwrap()),
            r#"kubectl patch wasmplugin canary-split --namespace istio-system --type=json -p '[{"op":"test","path":"/spec/pluginConfig/routes/1/host","value":"Shop.example.com"},{"op":"replace","path":"/spec/pluginConfig/routes/1/canary_weight","value":12.5}]'"#
        );
    }
}
