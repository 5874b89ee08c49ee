//! The operator tool, run as users run it.

// Test code: a failed expectation should stop the test.
#![allow(clippy::expect_used)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary-split"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_file(name: &str, contents: &str) -> String {
    let path = std::env::temp_dir().join(format!("canary-split-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("writes");
    path.to_string_lossy().into_owned()
}

#[test]
fn check_accepts_json_and_wasmplugin_yaml() {
    let output = run(&["check", "filter-config/example.json", "istio/wasmplugin.yaml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "filter-config/example.json: ok, 3 route(s)\nistio/wasmplugin.yaml: WasmPlugin canary-split: ok, 1 route(s)\n"
    );
}

#[test]
fn check_reports_the_filters_own_message() {
    let bad = temp_file(
        "bad.json",
        r#"{"routes": [{"host": "a", "primary": {}, "canary": {}, "canary_weight": 150}]}"#,
    );
    let output = run(&["check", &bad]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        format!("{bad}: invalid configuration: routes[0].canary_weight: 150 is not in 0..=100")
    );
}

#[test]
fn check_reads_plugin_config_from_yaml_and_rejects_files_without_one() {
    let yaml = temp_file(
        "plugin.yaml",
        "kind: Service\n---\nkind: WasmPlugin\nmetadata: {name: split}\nspec:\n  pluginConfig:\n    routes:\n    - {host: a, primary: {}, canary: {}, canary_weight: 5, sticky: {ip: true}}\n",
    );
    let output = run(&["check", &yaml]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).ends_with("WasmPlugin split: invalid configuration: routes[0].sticky.ip: unknown field (expected one of: header, cookie, client_ip)\n"));

    let none = temp_file("none.yaml", "kind: Service\n");
    let output = run(&["check", &none]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no WasmPlugin document"));
}

#[test]
fn explain_says_why() {
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--config",
            "filter-config/example.json",
            "--host",
            "Sklearn-Predictor.example.com:443",
        ];
        args.extend_from_slice(extra);
        let output = run(&args);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let pinned = explain(&["-H", "traffic: test"]);
    assert!(
        pinned.contains("variant: canary\nwhy: pinned by pin[0]: header traffic is \"test\"\n"),
        "{pinned}"
    );
    assert!(
        pinned.contains("rewrites :authority to sklearn-canary-predictor.example.com"),
        "{pinned}"
    );

    // Bucket 3183 is alice's golden vector under this host; the canary takes buckets below 1250.
    let sticky = explain(&["-H", "X-User-Id: alice"]);
    assert!(
        sticky.contains("variant: primary\nwhy: sticky: header x-user-id is in bucket 3183 of 10000"),
        "{sticky}"
    );

    let cookie = explain(&["--cookie", "canary=never", "-H", "traffic: nope"]);
    assert!(
        cookie.contains("why: pinned by pin[3]: cookie canary is \"never\""),
        "{cookie}"
    );

    let random = explain(&[]);
    assert!(
        random.contains("variant: random: canary for 12.5 % of such requests"),
        "{random}"
    );
}

#[test]
fn explain_unknown_host_and_client_address() {
    let output = run(&[
        "explain",
        "--config",
        "filter-config/example.json",
        "--host",
        "nope.example.com",
    ]);
    assert!(stdout(&output).contains("no route; passed through untouched"));
    let output = run(&[
        "explain",
        "--config",
        "filter-config/example.json",
        "--host",
        "search.example.com",
        "--client-ip",
        "10.1.2.3:5555",
    ]);
    assert!(
        stdout(&output).contains("why: sticky: client address is in bucket"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn usage_errors_exit_non_zero() {
    for args in [
        &[][..],
        &["check"],
        &["explain", "--host", "a"],
        &["explain", "--bogus"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(!stderr(&output).is_empty());
    }
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")))
        .expect("reads a file of the repository")
}

/// Every YAML file in istio/, as `canary-split check istio/*.yaml` passes them.
fn istio_manifests() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../istio");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("lists istio/")
        .map(|entry| format!("istio/{}", entry.expect("entry").file_name().to_string_lossy()))
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

const SPLIT_GATEWAY: &str = "tests/fixtures/split-gateway.yaml";
const ROUTE_OK: &str = "istio/wasmplugin.yaml: WasmPlugin canary-split: routes[0]: authority mode: every route table \
    that serves sklearn-predictor-models.example.com serves its release hosts too \
    (http.80, https.443.https.models-gateway.models)\n";

#[test]
fn check_accepts_authority_mode_behind_the_shipped_gateway() {
    let mut args = vec!["check".to_owned()];
    args.extend(istio_manifests());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("istio/wasmplugin.yaml: WasmPlugin canary-split: ok, 1 route(s)\n{ROUTE_OK}")
    );
}

#[test]
fn check_refuses_authority_mode_when_the_public_host_has_a_gateway_server_of_its_own() {
    let output = run(&[
        "check",
        "istio/wasmplugin.yaml",
        "istio/virtualservices.yaml",
        SPLIT_GATEWAY,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let expected = "istio/wasmplugin.yaml: WasmPlugin canary-split: routes[0]: authority mode cannot work \
        behind route table https.443.https-public.models-gateway.models (models/models-gateway servers[1]): \
        it serves sklearn-predictor-models.example.com but not sklearn-primary-predictor-models.example.com \
        and sklearn-canary-predictor-models.example.com, so every request the filter rewrites there ends in 404. \
        Istio gives each HTTPS server its own route table: serve the public host and its release hosts from one \
        Gateway server (one certificate for all of them), or use header mode (no \"host\" in primary and canary; \
        the public host's routes match x-canary-route)";
    assert!(
        stderr(&output).lines().any(|line| line == expected),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_names_only_the_release_hosts_missing_from_the_public_hosts_table() {
    // The canary's host on an HTTPS server of its own; primary's shares the public host's.
    let gateway = repo_file("istio/gateway.yaml");
    let shared = "    - models/sklearn-primary-predictor-models.example.com\n    - models/sklearn-canary-predictor-models.example.com\n    tls:\n      mode: SIMPLE";
    assert!(gateway.contains(shared), "istio/gateway.yaml changed: update the test");
    let split = gateway.replacen(
        shared,
        "    - models/sklearn-primary-predictor-models.example.com\n    tls:\n      mode: SIMPLE\n      credentialName: models-example-com-tls\n  - port: { number: 443, name: https-canary, protocol: HTTPS }\n    hosts:\n    - models/sklearn-canary-predictor-models.example.com\n    tls:\n      mode: SIMPLE",
        1,
    );
    let split = temp_file("canary-on-its-own.yaml", &split);
    let output = run(&["check", "istio/wasmplugin.yaml", "istio/virtualservices.yaml", &split]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(
            "behind route table https.443.https.models-gateway.models (models/models-gateway servers[1]): it serves \
             sklearn-predictor-models.example.com but not sklearn-canary-predictor-models.example.com, so"
        ),
        "{}",
        stderr(&output)
    );
    assert!(
        !stderr(&output).contains("https-canary.models-gateway.models ("),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_accepts_header_mode_behind_a_split_gateway() {
    let plugin = repo_file("istio/wasmplugin.yaml");
    let authority = "      primary: { host: sklearn-primary-predictor-models.example.com }\n      canary: { host: sklearn-canary-predictor-models.example.com }\n";
    assert!(
        plugin.contains(authority),
        "istio/wasmplugin.yaml changed: update the test"
    );
    let plugin = temp_file(
        "header-mode.yaml",
        &plugin.replacen(authority, "      primary: {}\n      canary: {}\n", 1),
    );
    let output = run(&["check", &plugin, "istio/virtualservices.yaml", SPLIT_GATEWAY]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{plugin}: WasmPlugin canary-split: ok, 1 route(s)\n")
    );
}

#[test]
fn check_says_when_no_gateway_it_was_given_serves_the_public_host() {
    // Without the VirtualServices no route table holds any host.
    let output = run(&["check", "istio/wasmplugin.yaml", "istio/gateway.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(
            "routes[0]: authority mode: none of the Gateways given serves sklearn-predictor-models.example.com: no \
             VirtualService bound to them routes it on a server that admits it (give the VirtualServices too)"
        ),
        "{}",
        stderr(&output)
    );
    // A Gateway the plugin does not run on (another selector) serves nothing either.
    let other = repo_file("istio/gateway.yaml").replacen("istio: ingressgateway", "istio: other-gateway", 1);
    let other = temp_file("other-gateway.yaml", &other);
    let output = run(&["check", "istio/wasmplugin.yaml", "istio/virtualservices.yaml", &other]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("none of the Gateways given serves"),
        "{}",
        stderr(&output)
    );
}
