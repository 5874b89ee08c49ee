//! The operator tool, run as users run it.

// Test code: a failed expectation should stop the test.
#![allow(clippy::expect_used)]

mod common;

use common::{run, run_with_env, stderr, stdout, temp_file};

#[test]
fn check_accepts_json_and_wasmplugin_yaml() {
    let output = run(&["check", "filter-config/example.json", "istio/wasmplugin.yaml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "filter-config/example.json: ok, 3 route(s)\nistio/wasmplugin.yaml: WasmPlugin canary-split: ok, 1 route(s); \
         token pins' keys not checked (CANARY_SPLIT_PIN_KEYS is not set here)\n"
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
    assert!(stderr(&output).ends_with("WasmPlugin split: invalid configuration: routes[0].sticky.ip: unknown field (expected one of: header, cookie, client_ip, assign)\n"));

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
fn check_refuses_cookie_assignment_without_a_cookie() {
    let config = temp_file(
        "assign-header.json",
        r#"{"routes": [{"host": "shop.example.com", "primary": {}, "canary": {}, "canary_weight": 20,
            "sticky": {"header": "x-user-id", "assign": {}}}]}"#,
    );
    let output = run(&["check", &config]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).ends_with(
            "invalid configuration: routes[0].sticky: takes \"assign\" only with \"cookie\" (keys are handed out in a cookie)\n"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn explain_says_a_request_without_the_sticky_cookie_gets_one() {
    let config = temp_file(
        "assign.json",
        r#"{"routes": [{"host": "shop.example.com", "primary": {}, "canary": {"host": "shop-canary.example.com"},
            "canary_weight": 20, "sticky": {"cookie": "canary-split-user", "assign": {"max_age_seconds": 3600}}}]}"#,
    );
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "--config", &config, "--host", "shop.example.com"];
        args.extend_from_slice(extra);
        let output = run(&args);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let new_user = explain(&[]);
    assert!(
        new_user.contains(
            "variant: random: canary for 20 % of new users, primary otherwise\nwhy: no pin matched and the request has no cookie canary-split-user: the filter makes a new random key, decides with it, and sends it back as Set-Cookie: canary-split-user=<new key>; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax (and Secure over HTTPS)\n"
        ),
        "{new_user}"
    );
    // Without x_forwarded_host the rewrite keeps no copy of the original host.
    assert!(
        new_user.contains("canary: sets x-canary-route: canary; rewrites :authority to shop-canary.example.com\n"),
        "{new_user}"
    );
    let returning = explain(&["--cookie", "canary-split-user=alice"]);
    assert!(
        returning.contains("why: sticky: cookie canary-split-user is in bucket"),
        "{returning}"
    );
}

#[test]
fn check_and_explain_describe_a_routes_guard() {
    let config = temp_file(
        "guarded.json",
        r#"{"routes": [{"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 10,
                        "guard": {"window_seconds": 20, "max_latency_increase": 30, "latency_floor_ms": 250}},
                       {"host": "b.example.com", "primary": {}, "canary": {}, "canary_weight": 10}]}"#,
    );
    let guard = "trips when, over the last 20 s, the canary has at least 20 judged requests (sticky or random) and, \
                 with 99 % confidence, an error ratio above 1 % and above primary's x 1.5, or a p95 above primary's \
                 x 1.3 and above 250 ms; tripped, every request no pin decides goes to primary until the route's \
                 configuration changes";
    let output = run(&["check", &config]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{config}: ok, 2 route(s)\n{config}: routes[0] (a.example.com): guard {guard}\n")
    );
    let output = run(&["explain", "--config", &config, "--host", "a.example.com"]);
    assert!(
        stdout(&output).starts_with(&format!(
            "host a.example.com: route a.example.com (canary_weight 10)\nguard: {guard}\n"
        )),
        "{}",
        stdout(&output)
    );
    let output = run(&["explain", "--config", &config, "--host", "b.example.com"]);
    assert!(!stdout(&output).contains("guard"), "{}", stdout(&output));
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
        &["token", "--host", "a", "--to", "canary"],
        &["token", "--bogus"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains("Usage: canary-split"),
            "{args:?}: {}",
            stderr(&output)
        );
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

#[test]
fn rollout_names_a_missing_flag_as_a_usage_mistake() {
    let output = run(&[
        "rollout",
        "--config",
        "istio/wasmplugin.yaml",
        "--kubectl",
        "--steps",
        "10",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with("error: --interval <DURATION> is required\n"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("Usage: canary-split rollout"),
        "{}",
        stderr(&output)
    );
}

/// The bytes 0..32 and 32 bytes of 0xAB, in standard base64, as in src/pin_token.rs.
const KEY_1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_2: &str = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";
/// The golden token for canary on shop.example.com under KEY_1, expiring at 1900000000.
const GOLDEN: &str = "v1.canary.1900000000.J8D8x7_fcidAkCA87FHrLguRkpzY6KXI_1nXyZYpc6c";

const TOKEN_CONFIG: &str = r#"{"routes": [{"host": "shop.example.com", "primary": {}, "canary": {}, "canary_weight": 0,
    "pin": [{"token": {"header": "x-canary-token"}}, {"header": "traffic", "value": "test", "to": "canary"}],
    "sticky": {"header": "x-user-id"}}]}"#;

#[test]
fn token_mints_the_documented_token() {
    let args = [
        "token",
        "--host",
        "Shop.Example.com.",
        "--to",
        "canary",
        "--ttl",
        "2h",
        "--now",
        "1899992800",
    ];
    let output = run_with_env(&args, &[("CANARY_SPLIT_PIN_KEYS", &format!("{KEY_1},{KEY_2}"))]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("{GOLDEN}\n"));

    let file = temp_file("keys", &format!("{KEY_1}\n"));
    let from_file = [
        "token",
        "--host",
        "shop.example.com",
        "--to",
        "canary",
        "--ttl",
        "7200s",
        "--now",
        "1899992800",
        "--key-file",
        &file,
    ];
    assert_eq!(stdout(&run(&from_file)), format!("{GOLDEN}\n"));
    let from_env = [
        "token",
        "--host",
        "shop.example.com",
        "--to",
        "canary",
        "--ttl",
        "120m",
        "--now",
        "1899992800",
        "--key-env",
        "MY_KEYS",
    ];
    assert_eq!(
        stdout(&run_with_env(&from_env, &[("MY_KEYS", KEY_1)])),
        format!("{GOLDEN}\n")
    );
}

#[test]
fn token_says_what_is_wrong() {
    // A flag in `extra` stands in for the default one.
    let token = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["token"];
        for (flag, default) in [("--host", "shop.example.com"), ("--to", "canary"), ("--ttl", "1d")] {
            if !extra.contains(&flag) {
                args.extend([flag, default]);
            }
        }
        args.extend_from_slice(extra);
        let output = run_with_env(&args, env);
        assert_eq!(output.status.code(), Some(1), "{extra:?}");
        stderr(&output).trim().to_owned()
    };
    let key = [("CANARY_SPLIT_PIN_KEYS", KEY_1)];
    assert_eq!(
        token(&[], &[]),
        "CANARY_SPLIT_PIN_KEYS is not set: it holds the keys to sign with"
    );
    assert_eq!(
        token(&[], &[("CANARY_SPLIT_PIN_KEYS", "AAAA")]),
        "key 1 in CANARY_SPLIT_PIN_KEYS has 3 bytes (at least 32 needed)"
    );
    assert_eq!(
        token(&["--ttl", "soon"], &key),
        "--ttl \"soon\": expected a duration like 90s, 30m, 2h or 7d"
    );
    assert_eq!(
        token(&["--ttl", "0s"], &key),
        "--ttl \"0s\": expected a duration like 90s, 30m, 2h or 7d"
    );
    assert_eq!(
        token(&["--to", "beta"], &key),
        "--to \"beta\" is not \"primary\" or \"canary\""
    );
    assert_eq!(
        token(&["--host", "shop.example.com:443"], &key),
        "--host \"shop.example.com:443\" must not include a port (ports are ignored when matching)"
    );
    let empty = temp_file("empty-keys", "\n");
    assert_eq!(token(&["--key-file", &empty], &[]), format!("{empty} is empty"));
}

/// A gateway's config for `token --config`: a route with token pins and a protected canary host,
/// one without a token pin, a TTL limit of 2h and keys in a variable of its own.
const GATEWAY_CONFIG: &str = r#"{"pin_keys_env": "SHOP_PIN_KEYS", "max_token_ttl_seconds": 7200, "routes": [
    {"host": "shop.example.com", "primary": {}, "canary": {"host": "shop-canary.example.com:8080"},
     "canary_weight": 0, "release_hosts": "token",
     "pin": [{"header": "traffic", "value": "test", "to": "canary"},
             {"token": {"header": "x-canary-token"}}, {"token": {"cookie": "canary-token"}}]},
    {"host": "plain.example.com", "primary": {}, "canary": {}, "canary_weight": 5,
     "pin": [{"header": "traffic", "value": "test", "to": "canary"}]}]}"#;

/// `token --config CONFIG` for canary at the golden token's time, with `extra` flags (a flag
/// there stands in for the default one) and only the key variables in `env`.
fn token_for_gateway(config: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut args = vec!["token".to_owned(), "--config".to_owned(), config.to_owned()];
    for (flag, default) in [("--host", "shop.example.com"), ("--ttl", "2h")] {
        if !extra.contains(&flag) {
            args.extend([flag.to_owned(), default.to_owned()]);
        }
    }
    args.extend(["--to", "canary", "--now", "1899992800"].map(str::to_owned));
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_with_env(&args, env)
}

#[test]
fn token_with_config_mints_the_same_token_from_the_configs_key_variable() {
    let config = temp_file("gateway-mints.json", GATEWAY_CONFIG);
    // 2h is the config's max_token_ttl_seconds: the longest it allows. The host is normalized as
    // the filter does. The config's variable is read, not the default one.
    let output = token_for_gateway(
        &config,
        &["--host", "Shop.Example.com."],
        &[
            ("SHOP_PIN_KEYS", &format!("{KEY_1},{KEY_2}")),
            ("CANARY_SPLIT_PIN_KEYS", KEY_2),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("{GOLDEN}\n"));
    // Where to send it goes to stderr, so `TOKEN=$(canary-split token ...)` captures the token alone.
    assert_eq!(
        stderr(&output),
        "send it in header x-canary-token or cookie canary-token, to shop.example.com or its canary host \
         shop-canary.example.com:8080; it pins canary until 1900000000 (Unix seconds)\n"
    );
    // --key-env and --key-file still say where the keys are.
    let explicit = token_for_gateway(
        &config,
        &["--key-env", "MY_KEYS"],
        &[("MY_KEYS", KEY_1), ("SHOP_PIN_KEYS", KEY_2)],
    );
    assert_eq!(stdout(&explicit), format!("{GOLDEN}\n"), "{}", stderr(&explicit));
    let file = temp_file("gateway-keys", KEY_1);
    let from_file = token_for_gateway(&config, &["--key-file", &file], &[("SHOP_PIN_KEYS", KEY_2)]);
    assert_eq!(stdout(&from_file), format!("{GOLDEN}\n"), "{}", stderr(&from_file));
    let unset = token_for_gateway(&config, &[], &[("CANARY_SPLIT_PIN_KEYS", KEY_1)]);
    assert_eq!(unset.status.code(), Some(1));
    assert_eq!(
        stderr(&unset).trim(),
        "SHOP_PIN_KEYS is not set: it holds the keys to sign with"
    );

    // The shipped WasmPlugin, as the README's example mints for it: the same bytes as without --config.
    let keys = temp_file("readme-keys", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n");
    let mut args = vec![
        "token",
        "--host",
        "sklearn-predictor-models.example.com",
        "--to",
        "canary",
        "--ttl",
        "2h",
        "--key-file",
        &keys,
        "--now",
        "1796196139",
    ];
    let without = run(&args);
    assert_eq!(
        stdout(&without),
        "v1.canary.1796203339.oP31x-EkZAmjehWh8KirBPK82AbFipkj5W9b4-hb7yw\n"
    );
    assert_eq!(stderr(&without), "");
    args.extend(["--config", "istio/wasmplugin.yaml"]);
    let with = run(&args);
    assert!(with.status.success(), "{}", stderr(&with));
    assert_eq!(stdout(&with), stdout(&without));
    assert_eq!(
        stderr(&with),
        "send it in header x-canary-token, to sklearn-predictor-models.example.com or its canary host \
         sklearn-canary-predictor-models.example.com; it pins canary until 1796203339 (Unix seconds)\n"
    );
}

#[test]
fn token_with_config_refuses_a_token_the_gateway_would_pass_over() {
    let config = temp_file("gateway-refuses.json", GATEWAY_CONFIG);
    let key = [("SHOP_PIN_KEYS", KEY_1)];
    let refused = |extra: &[&str]| {
        let output = token_for_gateway(&config, extra, &key);
        assert_eq!(output.status.code(), Some(1), "{extra:?}: {}", stderr(&output));
        assert_eq!(stdout(&output), "", "{extra:?}");
        stderr(&output).trim().replace(&config, "CONFIG")
    };
    assert_eq!(
        refused(&["--ttl", "30d"]),
        "--ttl 30d is 2592000 seconds, more than max_token_ttl_seconds (7200) in CONFIG: \
         the filter would pass the token over as too_long"
    );
    assert_eq!(
        refused(&["--ttl", "7201s"]),
        "--ttl 7201s is 7201 seconds, more than max_token_ttl_seconds (7200) in CONFIG: \
         the filter would pass the token over as too_long"
    );
    assert_eq!(
        refused(&["--host", "other.example.com"]),
        "--host other.example.com: no route for it in CONFIG (its routes: shop.example.com, plain.example.com)"
    );
    assert_eq!(
        refused(&["--host", "plain.example.com"]),
        "--host plain.example.com: route plain.example.com in CONFIG has no token pin rule, so the filter \
         reads no token there (add one to its pin, e.g. {\"token\": {\"header\": \"x-canary-token\"}})"
    );
    assert_eq!(
        refused(&["--host", "Shop-Canary.example.com"]),
        "--host shop-canary.example.com is the canary host of route shop.example.com in CONFIG, not a \
         route's host: tokens are signed for the route's host (--host shop.example.com)"
    );
    // A config the filter refuses mints nothing either.
    let invalid = temp_file("invalid-gateway.json", &GATEWAY_CONFIG.replace("7200", "0"));
    let output = run_with_env(
        &[
            "token",
            "--config",
            &invalid,
            "--host",
            "shop.example.com",
            "--to",
            "canary",
            "--ttl",
            "1h",
        ],
        &key,
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        format!("{invalid}: invalid configuration: max_token_ttl_seconds: must be at least 1 (omit it for no limit)")
    );
}

#[test]
fn explain_says_whether_a_token_verifies_and_why_not() {
    let config = temp_file("tokens.json", TOKEN_CONFIG);
    let explain = |token: &str, now: &str| {
        let args = [
            "explain",
            "--config",
            &config,
            "--host",
            "shop.example.com",
            "-H",
            &format!("x-canary-token: {token}"),
            "-H",
            "traffic: test",
            "--now",
            now,
        ];
        let output = run_with_env(&args, &[("CANARY_SPLIT_PIN_KEYS", &format!("{KEY_2},{KEY_1}"))]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let valid = explain(GOLDEN, "1899999000");
    assert!(
        valid.contains("variant: canary\nwhy: pinned by pin[0]: header x-canary-token carries a token for canary that verifies (key 2; valid until 1900000000, for 1000 more seconds)\n"),
        "{valid}"
    );
    let expired = explain(GOLDEN, "1900000000");
    assert!(
        expired.contains("pin[0]: the token in header x-canary-token does not count: expired at 1900000000 (Unix seconds)\nvariant: canary\nwhy: pinned by pin[1]: header traffic is \"test\""),
        "{expired}"
    );
    let tampered = explain(&GOLDEN.replace("1900000000", "1900000001"), "1");
    assert!(
        tampered.contains("does not count: bad signature: no key verifies it for this host (signed for another host, with an unknown key, or altered)"),
        "{tampered}"
    );
    assert!(explain("v2.canary.1.x", "1").contains("does not count: unknown version (this filter reads v1)"));
    assert!(explain("test", "1").contains("does not count: malformed (expected v1.<release>.<expiry>.<mac>)"));
}

#[test]
fn explain_says_who_a_protected_release_host_lets_through() {
    let guarded = TOKEN_CONFIG.replacen(
        r#""primary": {}, "canary": {}"#,
        r#""primary": {}, "canary": {"host": "shop-canary.example.com"}, "release_hosts": "token""#,
        1,
    );
    assert_ne!(guarded, TOKEN_CONFIG);
    let config = temp_file("guarded.json", &guarded);
    let explain = |headers: &[&str]| {
        let mut args = vec![
            "explain",
            "--config",
            &config,
            "--host",
            "Shop-Canary.example.com:443",
            "--now",
            "1899999000",
        ];
        for header in headers {
            args.extend(["-H", header]);
        }
        let output = run_with_env(&args, &[("CANARY_SPLIT_PIN_KEYS", &format!("{KEY_2},{KEY_1}"))]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let token = format!("x-canary-token: {GOLDEN}");
    assert_eq!(
        explain(&[&token]),
        "host Shop-Canary.example.com:443: the canary host of route shop.example.com (release_hosts: token)\n\
         let through: pin[0]: header x-canary-token carries a token for canary that verifies\n"
    );
    assert_eq!(
        explain(&["traffic: test"]),
        "host Shop-Canary.example.com:443: the canary host of route shop.example.com (release_hosts: token)\n\
         refused: the filter answers 403 (a request straight to a release host needs a valid pin token for that release)\n"
    );
    assert!(explain(&["x-canary-token: test"])
        .contains("pin[0]: the token in header x-canary-token does not count: malformed"));
}

#[test]
fn explain_and_check_without_the_keys_here() {
    let config = temp_file("tokens-unkeyed.json", TOKEN_CONFIG);
    // A request without a token is explained; one with a token cannot be.
    let plain = run(&[
        "explain",
        "--config",
        &config,
        "--host",
        "shop.example.com",
        "-H",
        "x-user-id: alice",
    ]);
    assert!(
        stdout(&plain).contains("why: sticky: header x-user-id"),
        "{}",
        stderr(&plain)
    );
    let with_token = run(&[
        "explain",
        "--config",
        &config,
        "--host",
        "shop.example.com",
        "-H",
        &format!("x-canary-token: {GOLDEN}"),
    ]);
    assert_eq!(with_token.status.code(), Some(1));
    assert_eq!(
        stderr(&with_token).trim(),
        "the request carries a pin token in header x-canary-token, and no key to check it is here: set CANARY_SPLIT_PIN_KEYS to the gateway's keys, or pass --key-file"
    );
    let key_file = temp_file("explain-keys", KEY_1);
    let keyed = run(&[
        "explain",
        "--config",
        &config,
        "--host",
        "shop.example.com",
        "-H",
        &format!("x-canary-token: {GOLDEN}"),
        "--key-file",
        &key_file,
        "--now",
        "1800000000",
    ]);
    assert!(stdout(&keyed).contains("why: pinned by pin[0]"), "{}", stderr(&keyed));

    // check validates everything it can, and says whether the keys were checked.
    let unchecked = run(&["check", &config]);
    assert!(unchecked.status.success(), "{}", stderr(&unchecked));
    assert_eq!(
        stdout(&unchecked),
        format!("{config}: ok, 1 route(s); token pins' keys not checked (CANARY_SPLIT_PIN_KEYS is not set here)\n")
    );
    let checked = run_with_env(&["check", &config], &[("CANARY_SPLIT_PIN_KEYS", KEY_1)]);
    assert_eq!(
        stdout(&checked),
        format!("{config}: ok, 1 route(s); token pins' keys in CANARY_SPLIT_PIN_KEYS ok\n")
    );
    let refused = run_with_env(&["check", &config], &[("CANARY_SPLIT_PIN_KEYS", "short")]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr(&refused).trim(),
        format!("{config}: invalid configuration: routes[0].pin[0].token: needs a usable key, but key 1 in CANARY_SPLIT_PIN_KEYS is not standard base64")
    );
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
    (http.8080, https.443.https.models-gateway.models)\n";

#[test]
fn check_accepts_authority_mode_behind_the_shipped_gateway() {
    let mut args = vec!["check".to_owned()];
    args.extend(istio_manifests());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("istio/wasmplugin.yaml: WasmPlugin canary-split: ok, 1 route(s); token pins' keys not checked (CANARY_SPLIT_PIN_KEYS is not set here)\n{ROUTE_OK}")
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

const HEADER_MODE_VIRTUAL_SERVICE: &str = "tests/fixtures/header-mode/virtualservice.yaml";
/// The canary's value the header-mode fixture's VirtualService matches.
const HEADER_MODE_CANARY_VALUE: &str = "canary-Vq3T8mZk1xR7pL2wYc9N";

/// The shipped WasmPlugin in header mode (no release hosts, so no `release_hosts` to protect them),
/// with `decision_values` if given, in a temporary file.
fn header_mode_plugin(name: &str, decision_values: Option<&str>) -> String {
    let plugin = repo_file("istio/wasmplugin.yaml");
    let authority = "      primary: { host: sklearn-primary-predictor-models.example.com }\n      canary: { host: sklearn-canary-predictor-models.example.com }\n";
    let header = "    decision_header: x-canary-route\n";
    let release_hosts = "      release_hosts: token\n";
    assert!(
        plugin.contains(authority) && plugin.contains(header) && plugin.contains(release_hosts),
        "istio/wasmplugin.yaml changed: update the test"
    );
    let values = decision_values.map_or(String::new(), |values| format!("    decision_values: {values}\n"));
    let plugin = plugin
        .replacen(authority, "      primary: {}\n      canary: {}\n", 1)
        .replacen(header, &format!("{header}{values}"), 1)
        .replacen(release_hosts, "", 1);
    temp_file(name, &plugin)
}

#[test]
fn check_accepts_header_mode_behind_a_split_gateway() {
    let plugin = header_mode_plugin(
        "header-mode.yaml",
        Some(&format!("{{ canary: {HEADER_MODE_CANARY_VALUE} }}")),
    );
    let output = run(&[
        "check",
        &plugin,
        "istio/virtualservices.yaml",
        HEADER_MODE_VIRTUAL_SERVICE,
        SPLIT_GATEWAY,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "{plugin}: WasmPlugin canary-split: ok, 1 route(s); token pins' keys not checked \
             (CANARY_SPLIT_PIN_KEYS is not set here)\n"
        )
    );
}

#[test]
fn check_refuses_header_mode_whose_routes_do_not_match_the_values_the_filter_writes() {
    // Without decision_values the filter writes "canary", which the fixture's route does not match.
    let plugin = header_mode_plugin("header-mode-defaults.yaml", None);
    let output = run(&[
        "check",
        &plugin,
        "istio/virtualservices.yaml",
        HEADER_MODE_VIRTUAL_SERVICE,
        "istio/gateway.yaml",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report = stderr(&output);
    assert!(
        report.contains(&format!(
            "routes[0]: VirtualService models/sklearn matches x-canary-route: {HEADER_MODE_CANARY_VALUE}, a value the \
             filter never writes (decision_values: primary \"primary\", canary \"canary\")"
        )),
        "{report}"
    );
    assert!(
        report.contains(
            "routes[0]: header mode: no VirtualService of sklearn-predictor-models.example.com matches x-canary-route: \
             canary, the value the filter writes for the canary"
        ),
        "{report}"
    );
    // The shipped public VirtualService has no route on the header at all.
    let output = run(&["check", &plugin, "istio/virtualservices.yaml", "istio/gateway.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("header mode: no VirtualService of"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_warns_when_header_mode_routes_on_a_value_clients_can_guess() {
    let plugin = header_mode_plugin("header-mode-guessable.yaml", None);
    let guessable = repo_file(HEADER_MODE_VIRTUAL_SERVICE).replacen(HEADER_MODE_CANARY_VALUE, "canary", 1);
    let guessable = temp_file("guessable-virtualservice.yaml", &guessable);
    let output = run(&[
        "check",
        &plugin,
        "istio/virtualservices.yaml",
        &guessable,
        "istio/gateway.yaml",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(
            "routes[0]: warning: header mode with the default decision value \"canary\": while the filter is bypassed \
             (FAIL_OPEN), any client that sends x-canary-route: canary reaches the canary through VirtualService \
             models/sklearn. Set decision_values.canary to a value clients cannot guess, and match it there"
        ),
        "{}",
        stdout(&output)
    );
}

#[test]
fn check_warns_when_the_public_host_routes_the_decision_header_in_authority_mode() {
    let output = run(&[
        "check",
        "istio/wasmplugin.yaml",
        "istio/virtualservices.yaml",
        HEADER_MODE_VIRTUAL_SERVICE,
        "istio/gateway.yaml",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(
            "routes[0]: warning: VirtualService models/sklearn routes sklearn-predictor-models.example.com by the \
             decision header x-canary-route, which the filter in authority mode never leaves on a request to it: \
             while the filter is bypassed (FAIL_OPEN: module not fetched, VM crashed), any client that sends the \
             header takes that route. Remove the match"
        ),
        "{}",
        stdout(&output)
    );
    // The shipped VirtualServices have no such route.
    let mut args = vec!["check".to_owned()];
    args.extend(istio_manifests());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(!stdout(&run(&args)).contains("warning"));
}

/// The shipped WasmPlugin with its `match` replaced by `selectors` (none: no match).
fn plugin_with_match(name: &str, selectors: Option<&str>) -> String {
    let plugin = repo_file("istio/wasmplugin.yaml");
    let shipped = "  match:\n  - ports: [{ number: 8443 }, { number: 443 }]\n";
    assert!(
        plugin.contains(shipped),
        "istio/wasmplugin.yaml changed: update the test"
    );
    let replacement = selectors.map_or(String::new(), |selectors| format!("  match: {selectors}\n"));
    temp_file(name, &plugin.replacen(shipped, &replacement, 1))
}

#[test]
fn check_refuses_authority_mode_on_a_server_that_redirects() {
    let plugin = plugin_with_match("no-match.yaml", None);
    let output = run(&["check", &plugin, "istio/virtualservices.yaml", "istio/gateway.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    let expected = format!(
        "{plugin}: WasmPlugin canary-split: routes[0]: authority mode on a server that redirects: the WasmPlugin \
         (no port match) runs on models/models-gateway servers[0] (port 80), whose httpsRedirect builds its 301 from \
         the :authority the filter rewrote, so plain-HTTP clients of sklearn-predictor-models.example.com are \
         redirected to https://sklearn-primary-predictor-models.example.com/... or \
         https://sklearn-canary-predictor-models.example.com/... and stay outside the split. Give the WasmPlugin a \
         match on the HTTPS listener's port only: Istio compares the Service's target port, 8443 on istioctl's \
         istio-ingressgateway and 443 on the istio/gateway chart (match: [{{ports: [{{number: 8443}}, {{number: 443}}]}}])"
    );
    assert!(
        stderr(&output).lines().any(|line| line == expected),
        "{}",
        stderr(&output)
    );
    // Either resolution of port 80 in the match runs the plugin there; 443 or 8443 alone do not.
    for (name, selectors, redirects) in [
        (
            "match-8080.yaml",
            "[{ ports: [{ number: 8080 }, { number: 8443 }] }]",
            true,
        ),
        ("match-80.yaml", "[{ ports: [{ number: 80 }, { number: 443 }] }]", true),
        ("match-all.yaml", "[{ mode: CLIENT }]", true),
        ("match-443.yaml", "[{ ports: [{ number: 443 }] }]", false),
        ("match-8443.yaml", "[{ ports: [{ number: 8443 }] }]", false),
    ] {
        let plugin = plugin_with_match(name, Some(selectors));
        let output = run(&["check", &plugin, "istio/virtualservices.yaml", "istio/gateway.yaml"]);
        assert_eq!(
            stderr(&output).contains("authority mode on a server that redirects"),
            redirects,
            "{selectors}: {}",
            stderr(&output)
        );
        assert_eq!(output.status.success(), !redirects, "{selectors}");
    }
}

#[test]
fn check_refuses_a_match_that_leaves_out_the_public_hosts_https_server() {
    for (name, selectors, described) in [
        ("match-9443.yaml", "[{ ports: [{ number: 9443 }] }]", "a match on ports 9443"),
        (
            "match-server.yaml",
            "[{ mode: SERVER }]",
            "a match that selects no gateway listener (mode SERVER, or no port number; a gateway's listeners are CLIENT)",
        ),
    ] {
        let plugin = plugin_with_match(name, Some(selectors));
        let output = run(&["check", &plugin, "istio/virtualservices.yaml", "istio/gateway.yaml"]);
        assert_eq!(output.status.code(), Some(1));
        let expected = format!(
            "{plugin}: WasmPlugin canary-split: routes[0]: the WasmPlugin has {described}, which leaves out \
             models/models-gateway servers[1] (port 443, listened on as 8443 by istioctl's istio-ingressgateway and \
             as 443 by the istio/gateway chart): requests to sklearn-predictor-models.example.com there are never \
             split. Istio compares the listener's port, the Service's target port"
        );
        assert!(stderr(&output).lines().any(|line| line == expected), "{}", stderr(&output));
    }
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

#[test]
fn explain_names_the_decision_value_the_filter_writes() {
    let config = temp_file(
        "decision-values.json",
        r#"{"decision_values": {"canary": "c-7Kq2"}, "routes": [{"host": "shop.example.com",
            "primary": {}, "canary": {}, "canary_weight": 50, "pin": [{"header": "traffic", "value": "test", "to": "canary"}]}]}"#,
    );
    let output = run(&[
        "explain",
        "--config",
        &config,
        "--host",
        "shop.example.com",
        "-H",
        "traffic: test",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).ends_with("canary: sets x-canary-route: c-7Kq2\n"),
        "{}",
        stdout(&output)
    );
    let random = stdout(&run(&["explain", "--config", &config, "--host", "shop.example.com"]));
    assert!(random.contains("primary: sets x-canary-route: primary\n"), "{random}");
}

#[test]
fn check_warns_when_the_match_names_the_https_port_as_only_one_install_listens_on_it() {
    for (name, port, missing, install) in [
        ("match-only-443.yaml", 443, 8443, "istioctl's istio-ingressgateway"),
        ("match-only-8443.yaml", 8443, 443, "the istio/gateway chart's gateway"),
    ] {
        let plugin = plugin_with_match(name, Some(&format!("[{{ ports: [{{ number: {port} }}] }}]")));
        let output = run(&["check", &plugin, "istio/virtualservices.yaml", "istio/gateway.yaml"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let expected = format!(
            "{plugin}: WasmPlugin canary-split: routes[0]: warning: the WasmPlugin has a match on ports {port}, which \
             leaves out port {missing}: on {install}, which listens on {missing} for models/models-gateway servers[1] \
             (port 443), requests to sklearn-predictor-models.example.com there are never split. Add {missing} to the \
             match unless your gateway is installed otherwise"
        );
        assert!(
            stdout(&output).lines().any(|line| line == expected),
            "{}",
            stdout(&output)
        );
    }
}
