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

#[test]
fn check_reads_the_config_of_an_ecds_file() {
    let config = r#"{"routes": [{"host": "a", "primary": {}, "canary": {}, "canary_weight": 5}]}"#;
    let ecds = serde_json::json!({"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "canary-split",
        "typed_config": {"config": {"configuration": {"value": config}}},
    }]});
    let path = temp_file("ecds.json", &ecds.to_string());
    let output = run(&["check", &path]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{path}: ECDS resource canary-split: ok, 1 route(s)\n")
    );
}

#[test]
fn rollout_with_kubectl_and_without_run_prints_the_plan() {
    let output = run(&[
        "rollout",
        "--config",
        "istio/wasmplugin.yaml",
        "--kubectl",
        "--steps",
        "10,50,100",
        "--interval",
        "5m",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    let commands: Vec<&str> = printed.lines().filter(|l| !l.starts_with('#')).collect();
    let patch = |weight: u32| {
        format!(
            r#"kubectl patch wasmplugin canary-split --namespace istio-system --type=json -p '[{{"op":"test","path":"/spec/pluginConfig/routes/0/host","value":"sklearn-predictor-models.example.com"}},{{"op":"replace","path":"/spec/pluginConfig/routes/0/canary_weight","value":{weight}}}]'"#
        )
    };
    assert_eq!(commands, [patch(10), patch(50), patch(100), patch(0)]);
    assert!(printed.contains("# roll back\n"));
}

#[test]
fn rollout_does_not_start_when_prometheus_is_unreachable() {
    let plugin = temp_file(
        "unreachable.yaml",
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../istio/wasmplugin.yaml")).expect("reads"),
    );
    let before = std::fs::read_to_string(&plugin).expect("reads");
    let output = run(&[
        "rollout",
        "--prometheus",
        "http://127.0.0.1:1",
        "--config",
        &plugin,
        "--primary",
        "p",
        "--canary",
        "c",
        "--steps",
        "10",
        "--interval",
        "1s",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("not started: Prometheus at http://127.0.0.1:1 is unreachable"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&plugin).expect("reads"), before);
}

#[test]
fn rollout_and_status_refuse_what_they_cannot_do() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "rollout",
                "--config",
                "filter-config/example.json",
                "--steps",
                "10",
                "--interval",
                "1m",
            ],
            "filter-config/example.json: pick the route with --host (",
        ),
        (
            &[
                "rollout",
                "--config",
                "istio/wasmplugin.yaml",
                "--run",
                "--steps",
                "10",
                "--interval",
                "1m",
            ],
            "--run goes with --kubectl",
        ),
        (
            &[
                "rollout",
                "--config",
                "filter-config/example.json",
                "--kubectl",
                "--host",
                "search.example.com",
            ],
            "--kubectl needs a WasmPlugin YAML as --config",
        ),
        (
            &[
                "rollout",
                "--config",
                "istio/wasmplugin.yaml",
                "--kubectl",
                "--steps",
                "50,25",
                "--interval",
                "1m",
            ],
            "--steps: 25 does not go above the step before it",
        ),
        (
            &[
                "rollout",
                "--config",
                "istio/wasmplugin.yaml",
                "--kubectl",
                "--steps",
                "10",
            ],
            "--interval is required",
        ),
        (
            &[
                "status",
                "--prometheus",
                "http://127.0.0.1:1",
                "--config",
                "filter-config/example.json",
                "--primary",
                "p",
                "--canary",
                "c",
            ],
            "--primary and --canary name one route's releases: add --host",
        ),
        (
            &[
                "status",
                "--prometheus",
                "http://127.0.0.1:1",
                "--config",
                "istio/wasmplugin.yaml",
                "--preset",
                "linkerd",
            ],
            "--preset \"linkerd\": expected istio or envoy",
        ),
        (
            &[
                "status",
                "--prometheus",
                "http://127.0.0.1:1",
                "--config",
                "istio/wasmplugin.yaml",
            ],
            "Prometheus at http://127.0.0.1:1 is unreachable",
        ),
        (
            &[
                "rollout",
                "--config",
                "istio/wasmplugin.yaml",
                "--kubectl",
                "--after-write",
                "true",
            ],
            "--after-write goes with a file, not --kubectl",
        ),
    ];
    for (args, expected) in cases {
        let output = run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(stderr(&output).starts_with(expected), "{args:?}: {}", stderr(&output));
    }
}
