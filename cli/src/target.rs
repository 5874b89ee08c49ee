//! Where a rollout writes each new `canary_weight`: the WasmPlugin YAML (or JSON filter config) a
//! GitOps pipeline applies, the running gateway through `kubectl patch`, or the ECDS file a local
//! Envoy watches. Every config written is first checked by the filter's own validation.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::config_file::{is_yaml, one_config, parse_configs, strict_json, yaml_documents, Origin, ECDS_CONFIGURATION};
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
                name: kubernetes_name(path, "metadata.name", name, MAX_NAME_LEN, true)?,
                namespace: namespace
                    .as_deref()
                    .map(|namespace| kubernetes_name(path, "metadata.namespace", namespace, MAX_LABEL_LEN, false))
                    .transpose()?,
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
        self.check_route(path, text.as_bytes())?;
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
        self.check_route(path, &bytes)?;
        let mut file: Value = strict_json(&bytes).map_err(|e| format!("{path}: {e}"))?;
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

    /// The file still has the rollout's route at its index: a file that changed between steps
    /// (an `--after-write` that pulls) is never written to another route, as the kubectl patch's
    /// `test` operation ensures for the cluster.
    fn check_route(&self, path: &str, bytes: &[u8]) -> Result<(), String> {
        let (found, _) = one_config(path, parse_configs(path, bytes.to_vec())?, "rollout")?;
        let json = found.json.map_err(|e| format!("{path}: {e}"))?;
        let config: Value = serde_json::from_slice(&json).map_err(|e| format!("{path}: {e}"))?;
        let pointer = format!("/routes/{}/host", self.route);
        match config.pointer(&pointer) {
            Some(host) if *host == self.host => Ok(()),
            now => Err(format!(
                "{path}: routes[{}] is no longer the route of host {} (now {}): the file changed; not written",
                self.route,
                self.host,
                now.map_or_else(|| "no such route".to_owned(), Value::to_string)
            )),
        }
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
    yaml_documents(path, text).map(Value::Array)
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
/// file when one is moved into its directory). The file keeps its permissions; a config that is a
/// symlink stays one (its target is replaced). The new content is staged in a file of a random
/// name created exclusively, so nothing planted in the directory is followed or overwritten.
fn write_atomically(path: &str, bytes: &[u8]) -> Result<(), String> {
    let target = std::fs::canonicalize(path).map_err(|e| format!("{path}: {e}"))?;
    let permissions = std::fs::metadata(&target)
        .map_err(|e| format!("{path}: {e}"))?
        .permissions();
    let (staging, mut file) = create_staging_file(&target).map_err(|e| format!("{path}: staging file: {e}"))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.set_permissions(permissions))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&staging, &target));
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written.map_err(|e| format!("{path}: {e}"))
}

/// A new, empty file beside `target`, of a random name, opened with `O_CREAT | O_EXCL`, which
/// never follows a symlink; retried on the rare name that exists.
fn create_staging_file(target: &Path) -> std::io::Result<(PathBuf, File)> {
    let name = target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut last_error = None;
    for _ in 0..16 {
        // std's per-process random hash keys: a random name without another crate.
        let random = RandomState::new().build_hasher().finish();
        let staging = target.with_file_name(format!(".{name}.{random:016x}.canary-split"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staging)
        {
            Ok(file) => return Ok((staging, file)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no free name")))
}

/// The longest `metadata.name` (a DNS subdomain) and namespace (a DNS label) Kubernetes takes.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// `value` if it is a valid Kubernetes object name (lower-case letters, digits, `-`, and `.` with
/// `dots`, starting and ending with a letter or digit): anything else, `--server=...` among them,
/// never reaches kubectl's argument list.
fn kubernetes_name(path: &str, field: &str, value: &str, max_len: usize, dots: bool) -> Result<String, String> {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !value.is_empty()
        && value.len() <= max_len
        && value.chars().all(|c| alphanumeric(c) || c == '-' || (dots && c == '.'))
        && value.starts_with(alphanumeric)
        && value.ends_with(alphanumeric);
    if !valid {
        return Err(format!(
            "{path}: {field} {value:?} is not a valid Kubernetes name (lower-case letters, digits, '-'{}; at most {max_len} characters)",
            if dots { ", '.'" } else { "" }
        ));
    }
    Ok(value.to_owned())
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

    /// A fresh directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("canary-split-target-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const TWO_ROUTES: &str = r#"{"routes": [
  {"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 0},
  {"host": "b.example.com", "primary": {}, "canary": {}, "canary_weight": 0}
]}
"#;

    fn file_writer(path: &Path, route: usize) -> Writer {
        let path = path.to_string_lossy().into_owned();
        Writer::new(Target::File { path }, route, TWO_ROUTES.as_bytes()).unwrap()
    }

    #[test]
    fn a_file_whose_routes_moved_is_not_written() {
        let dir = scratch("moved");
        let path = dir.join("config.json");
        std::fs::write(&path, TWO_ROUTES).unwrap();
        let writer = file_writer(&path, 1);
        writer.write(Weight::parse("10").unwrap()).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains(r#""b.example.com", "primary": {}, "canary": {}, "canary_weight": 10"#));
        // Someone pulls a version with the routes swapped between two steps.
        let swapped = TWO_ROUTES
            .replace("a.example.com", "@@")
            .replace("b.example.com", "a.example.com")
            .replace("@@", "b.example.com");
        std::fs::write(&path, &swapped).unwrap();
        let error = writer.write(Weight::parse("25").unwrap()).unwrap_err();
        assert!(
            error.contains("routes[1] is no longer the route of host \"b.example.com\" (now \"a.example.com\")"),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), swapped);

        let ecds = serde_json::json!({"resources": [{"name": "canary-split", "typed_config": {"config": {"configuration": {"value": swapped}}}}]});
        let ecds_path = dir.join("ecds.json");
        std::fs::write(&ecds_path, ecds.to_string()).unwrap();
        let target = Target::Ecds {
            path: ecds_path.to_string_lossy().into_owned(),
            resource: 0,
        };
        let writer = Writer::new(target, 1, TWO_ROUTES.as_bytes()).unwrap();
        assert!(writer
            .write(Weight::ZERO)
            .unwrap_err()
            .contains("is no longer the route of host"));
        assert_eq!(std::fs::read_to_string(&ecds_path).unwrap(), ecds.to_string());
    }

    #[test]
    fn a_symlinked_config_stays_a_symlink_and_planted_files_are_not_followed() {
        let dir = scratch("symlink");
        let real = dir.join("real.json");
        std::fs::write(&real, TWO_ROUTES).unwrap();
        let link = dir.join("config.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // What the old fixed staging name was: a planted symlink to a file the tool must not touch.
        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".config.json.canary-split-staging")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".real.json.canary-split-staging")).unwrap();

        file_writer(&link, 0).write(Weight::parse("12.5").unwrap()).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(&real)
            .unwrap()
            .contains(r#""a.example.com", "primary": {}, "canary": {}, "canary_weight": 12.5"#));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".config.json.canary-split-staging",
                ".real.json.canary-split-staging",
                "config.json",
                "real.json",
                "victim"
            ]
        );
    }

    #[test]
    fn staging_files_are_new_and_randomly_named() {
        let dir = scratch("staging");
        let target = dir.join("config.json");
        let (first, _) = create_staging_file(&target).unwrap();
        let (second, _) = create_staging_file(&target).unwrap();
        assert_ne!(first, second);
        assert!(first
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".config.json."));
        // O_EXCL: an existing name, even a dangling symlink, is never opened.
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("planted")).unwrap();
        let planted = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join("planted"));
        assert_eq!(planted.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn kubectl_takes_only_kubernetes_names() {
        let plugin = |name: &str, namespace: Option<&str>| Origin::WasmPlugin {
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
        };
        for (name, namespace) in [
            ("canary-split", Some("istio-system")),
            ("a.b-c", None),
            ("x", Some("y")),
        ] {
            assert!(
                Writer::for_config("p.yaml", &plugin(name, namespace), true, true).is_ok(),
                "{name}"
            );
        }
        for (name, namespace, field) in [
            (
                "--server=https://evil.example.com",
                Some("istio-system"),
                "metadata.name",
            ),
            ("-n", None, "metadata.name"),
            ("Canary", None, "metadata.name"),
            ("a b", None, "metadata.name"),
            ("", None, "metadata.name"),
            ("canary-split", Some("--kubeconfig=/tmp/x"), "metadata.namespace"),
            ("canary-split", Some("istio.system"), "metadata.namespace"),
            ("canary-split", Some(&"n".repeat(64)), "metadata.namespace"),
        ] {
            let Err(error) = Writer::for_config("p.yaml", &plugin(name, namespace), true, true) else {
                panic!("{name} {namespace:?} accepted");
            };
            assert!(error.starts_with(&format!("p.yaml: {field} ")), "{error}");
            assert!(error.contains("is not a valid Kubernetes name"), "{error}");
        }
    }
}
