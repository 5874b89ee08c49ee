//! The command line as Rust tools have it: help for every command, the version, suggestions for a
//! typo, usage mistakes on exit status 2, completion scripts, and `--output json`.

// Test code: a failed expectation should stop the test.
#![allow(clippy::expect_used)]

mod common;

use common::{run, stderr, stdout, temp_file};

use std::process::Command;

use serde::{Deserialize, Serialize};

/// Every subcommand and the flags (or arguments) its help must name.
const SUBCOMMANDS: &[(&str, &[&str])] = &[
    (
        "check",
        &["<FILE>...", "--output <OUTPUT>", "[possible values: text, json]"],
    ),
    (
        "explain",
        &[
            "--config <FILE>",
            "-H, --header <NAME: VALUE>",
            "--host <HOST>",
            "--cookie <NAME=VALUE>",
            "--client-ip <ADDR>",
            "--key-file <FILE>",
            "--now <UNIX_SECONDS>",
        ],
    ),
    (
        "status",
        &[
            "--prometheus <URL>",
            "--config <FILE>",
            "--host <HOST>",
            "--primary <NAME>",
            "--canary <NAME>",
            "--preset <PRESET>",
            "[possible values: istio, envoy]",
            "--selector <MATCHERS>",
            "--window <DURATION>",
            "[default: 5m]",
            "--min-requests <N>",
            "--output <OUTPUT>",
        ],
    ),
    (
        "rollout",
        &[
            "--prometheus <URL>",
            "--config <FILE>",
            "--host <HOST>",
            "--primary <NAME>",
            "--canary <NAME>",
            "--steps <PERCENTS>",
            "--interval <DURATION>",
            "--preset <PRESET>",
            "--selector <MATCHERS>",
            "--window <DURATION>",
            "--poll <DURATION>",
            "--max-hold <DURATION>",
            "--min-requests <N>",
            "--max-error-increase <PERCENT>",
            "--error-ratio-floor <PERCENT>",
            "--max-latency-increase <PERCENT>",
            "--latency-floor <DURATION>",
            "--after-write <COMMAND>",
            "--kubectl",
            "--run",
        ],
    ),
    (
        "token",
        &[
            "--host <HOST>",
            "--to <RELEASE>",
            "[possible values: primary, canary]",
            "--ttl <DURATION>",
            "--config <FILE>",
            "--key-env <NAME>",
            "[default: the config's pin_keys_env with --config, else CANARY_SPLIT_PIN_KEYS]",
            "--key-file <FILE>",
            "--now <UNIX_SECONDS>",
        ],
    ),
    (
        "completions",
        &["<SHELL>", "[possible values: bash, elvish, fish, powershell, zsh]"],
    ),
];

#[test]
fn every_subcommand_has_help_with_its_flags_an_example_and_the_exit_status() {
    for (subcommand, flags) in SUBCOMMANDS {
        let output = run(&[subcommand, "--help"]);
        assert_eq!(output.status.code(), Some(0), "{subcommand}: {}", stderr(&output));
        let help = stdout(&output);
        assert!(help.contains(&format!("Usage: canary-split {subcommand}")), "{help}");
        // Help is wrapped to the terminal's width.
        let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for flag in *flags {
            assert!(
                words.contains(flag),
                "{subcommand} --help does not name {flag}:\n{help}"
            );
        }
        assert!(help.contains("-h, --help"), "{help}");
        assert!(
            help.contains(&format!("Examples:\n  canary-split {subcommand} ")),
            "{subcommand} --help has no example:\n{help}"
        );
        if *subcommand != "completions" {
            assert!(words.contains("Exit status: 0 success; 1 a verdict"), "{help}");
        }
        let help_subcommand = run(&["help", subcommand]);
        assert_eq!(help_subcommand.status.code(), Some(0));
        assert_eq!(stdout(&help_subcommand), help, "help {subcommand}");
    }
}

#[test]
fn the_top_level_help_lists_the_commands_and_the_exit_status() {
    for args in [&["--help"][..], &["help"]] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(0));
        let help = stdout(&output);
        for (subcommand, _) in SUBCOMMANDS {
            assert!(help.contains(&format!("\n  {subcommand} ")), "{subcommand}:\n{help}");
        }
        let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains(
                "Exit status: 0 success; 1 a verdict (config refused, canary rolled back, rollout not started)"
            ),
            "{help}"
        );
        assert!(words.contains("2 a usage mistake"), "{help}");
    }
    // Without a command: the help, as a usage mistake.
    let output = run(&[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("Commands:"), "{}", stderr(&output));
}

#[test]
fn version() {
    for flag in ["--version", "-V"] {
        let output = run(&[flag]);
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(stdout(&output), format!("canary-split {}\n", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn a_typo_gets_a_suggestion_and_exit_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "status",
                "--promethues",
                "http://127.0.0.1:1",
                "--config",
                "istio/wasmplugin.yaml",
            ],
            "tip: a similar argument exists: '--prometheus'",
        ),
        (
            &[
                "rollout",
                "--config",
                "istio/wasmplugin.yaml",
                "--kubetcl",
                "--steps",
                "10",
                "--interval",
                "1m",
            ],
            "tip: a similar argument exists: '--kubectl'",
        ),
        (&["stauts"], "tip: a similar subcommand exists: 'status'"),
        (&["completions", "bsah"], "tip: a similar value exists: 'bash'"),
    ];
    for (args, tip) in cases {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains(tip), "{args:?}: {}", stderr(&output));
        assert!(stdout(&output).is_empty());
    }
}

#[test]
fn usage_mistakes_exit_2_and_say_what_is_wrong() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["check"],
            "the following required arguments were not provided:\n  <FILE>...",
        ),
        (
            &["status", "--config", "istio/wasmplugin.yaml"],
            "the following required arguments were not provided:\n  --prometheus <URL>",
        ),
        (
            &[
                "status",
                "--prometheus",
                "http://127.0.0.1:1",
                "--config",
                "c",
                "--primary",
                "p",
            ],
            "the following required arguments were not provided:\n  --canary <NAME>",
        ),
        (
            &[
                "status",
                "--prometheus",
                "http://127.0.0.1:1",
                "--config",
                "c",
                "--window",
                "5 parsecs",
            ],
            "invalid value '5 parsecs' for '--window <DURATION>'",
        ),
        (
            &["rollout", "--config", "c", "--interval", "0s"],
            "invalid value '0s' for '--interval <DURATION>': must be more than 0",
        ),
        (
            &["rollout", "--config", "c", "--min-requests", "-1"],
            "invalid value '-1' for '--min-requests <N>': expected a number, 0 or more",
        ),
        (
            &["explain", "--config", "c", "--host", "h", "-H", "no-colon"],
            "invalid value 'no-colon' for '--header <NAME: VALUE>': expected 'NAME: VALUE'",
        ),
        (
            &[
                "token",
                "--host",
                "h",
                "--to",
                "canary",
                "--ttl",
                "1h",
                "--key-env",
                "K",
                "--key-file",
                "f",
            ],
            "the argument '--key-env <NAME>' cannot be used with '--key-file <FILE>'",
        ),
        (
            &["token", "--host", "h", "--host", "i", "--to", "canary", "--ttl", "1h"],
            "the argument '--host <HOST>' cannot be used multiple times",
        ),
        (
            &[
                "rollout",
                "--config",
                "istio/wasmplugin.yaml",
                "--steps",
                "10",
                "--interval",
                "1m",
            ],
            "--primary <NAME> is required to judge the canary (only --kubectl without --run does without it)",
        ),
    ];
    for (args, expected) in cases {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).starts_with("error: "), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("For more information, try '--help'."),
            "{args:?}"
        );
    }
}

fn completions(shell: &str) -> String {
    let output = run(&["completions", shell]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output)
}

/// What bash offers after `words` (the last one being completed), with the script loaded.
fn bash_completes(script: &str, words: &[&str]) -> Vec<String> {
    let words: Vec<String> = words.iter().map(|word| format!("'{word}'")).collect();
    let program = format!(
        "source '{script}' && COMP_WORDS=({}) && COMP_CWORD={} && COMP_LINE=\"${{COMP_WORDS[*]}}\" && \
         COMP_POINT=${{#COMP_LINE}} && $(complete -p canary-split | sed -E 's/.* -F ([^ ]+) .*/\\1/') canary-split \"${{COMP_WORDS[COMP_CWORD]}}\" \
         \"${{COMP_WORDS[COMP_CWORD-1]}}\" && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words.join(" "),
        words.len() - 1
    );
    let output = Command::new("bash").args(["-c", &program]).output().expect("runs bash");
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output).lines().map(str::to_owned).collect()
}

#[test]
fn the_bash_completion_script_completes_commands_flags_and_values() {
    let script = temp_file("completion.bash", &completions("bash"));
    let syntax = Command::new("bash").args(["-n", &script]).output().expect("runs bash");
    assert!(syntax.status.success(), "{}", stderr(&syntax));

    assert_eq!(bash_completes(&script, &["canary-split", "sta"]), ["status"]);
    assert_eq!(
        bash_completes(&script, &["canary-split", "rollout", "--kub"]),
        ["--kubectl"]
    );
    assert_eq!(
        bash_completes(&script, &["canary-split", "status", "--preset", ""]),
        ["istio", "envoy"]
    );
    assert_eq!(
        bash_completes(&script, &["canary-split", "check", "--output", "j"]),
        ["json"]
    );
}

#[test]
fn the_zsh_and_fish_completion_scripts_know_every_command_and_flag() {
    let zsh = completions("zsh");
    assert!(zsh.starts_with("#compdef canary-split\n"), "{zsh}");
    let fish = completions("fish");
    for (subcommand, flags) in SUBCOMMANDS {
        assert!(zsh.contains(&format!("'{subcommand}:")), "zsh: {subcommand}");
        assert!(fish.contains(&format!("-a \"{subcommand}\"")), "fish: {subcommand}");
        for flag in flags
            .iter()
            // A flag's name opens its entry; a default's text may name other flags.
            .filter_map(|flag| flag.split_whitespace().next().filter(|w| w.starts_with("--")))
        {
            let long = flag.trim_start_matches("--");
            assert!(
                zsh.contains(&format!("--{long}=[")) || zsh.contains(&format!("--{long}[")),
                "zsh: {subcommand} {flag}"
            );
            assert!(fish.contains(&format!("-l {long}")), "fish: {subcommand} {flag}");
        }
    }
}

/// `check --output json`, as the README documents it; unknown fields are refused, so the
/// round trip below proves the output has exactly these fields.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckReport {
    ok: bool,
    configs: Vec<CheckedConfig>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckedConfig {
    label: String,
    error: Option<String>,
    routes: Option<usize>,
    pin_keys: Option<PinKeys>,
    guards: Vec<RouteGuard>,
    findings: Vec<Finding>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteGuard {
    route: usize,
    host: String,
    guard: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinKeys {
    env: String,
    checked: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Finding {
    route: usize,
    problem: bool,
    message: String,
}

impl CheckReport {
    /// The text `check` prints, as the README says the fields map to it.
    fn text(&self) -> String {
        let mut text = String::new();
        for config in &self.configs {
            if let Some(error) = &config.error {
                text += &format!("{}: invalid configuration: {error}\n", config.label);
                continue;
            }
            let routes = config.routes.expect("a valid config has a route count");
            text += &format!("{}: ok, {routes} route(s)", config.label);
            text += &match &config.pin_keys {
                None => "\n".to_owned(),
                Some(PinKeys { env, checked: true }) => format!("; token pins' keys in {env} ok\n"),
                Some(PinKeys { env, checked: false }) => {
                    format!("; token pins' keys not checked ({env} is not set here)\n")
                }
            };
            for guard in &config.guards {
                text += &format!(
                    "{}: routes[{}] ({}): guard {}\n",
                    config.label, guard.route, guard.host, guard.guard
                );
            }
            for finding in &config.findings {
                text += &format!("{}: routes[{}]: {}\n", config.label, finding.route, finding.message);
            }
        }
        text
    }
}

/// Runs `check` twice, as JSON and as text: the JSON round-trips through the documented shape and
/// says what the text says.
fn check_both_ways(files: &[&str], expected_code: i32) -> CheckReport {
    let mut json_args = vec!["check", "--output", "json"];
    json_args.extend_from_slice(files);
    let json_output = run(&json_args);
    assert_eq!(
        json_output.status.code(),
        Some(expected_code),
        "{}",
        stderr(&json_output)
    );
    assert!(stderr(&json_output).is_empty(), "{}", stderr(&json_output));
    let value: serde_json::Value = serde_json::from_str(&stdout(&json_output)).expect("check prints JSON");
    let report: CheckReport = serde_json::from_value(value.clone()).expect("in the documented shape");
    assert_eq!(serde_json::to_value(&report).expect("serializes"), value, "round trip");

    let mut text_args = vec!["check"];
    text_args.extend_from_slice(files);
    let text_output = run(&text_args);
    assert_eq!(text_output.status.code(), Some(expected_code));
    let text = if expected_code == 0 {
        stdout(&text_output)
    } else {
        stderr(&text_output)
    };
    assert_eq!(report.text().trim_end(), text.trim_end());
    assert_eq!(report.ok, expected_code == 0);
    report
}

#[test]
fn check_json_says_what_the_text_says() {
    let report = check_both_ways(&["filter-config/example.json", "istio/wasmplugin.yaml"], 0);
    assert_eq!(report.configs.len(), 2);
    assert_eq!(report.configs[0].routes, Some(3));

    let bad = temp_file(
        "bad.json",
        r#"{"routes": [{"host": "a", "primary": {}, "canary": {}, "canary_weight": 150}]}"#,
    );
    let report = check_both_ways(&[&bad, "filter-config/example.json"], 1);
    assert_eq!(
        report.configs[0].error.as_deref(),
        Some("routes[0].canary_weight: 150 is not in 0..=100")
    );
    assert!(report.configs[1].error.is_none());

    // Authority mode behind a Gateway that gives the public host a server of its own.
    let report = check_both_ways(
        &[
            "istio/wasmplugin.yaml",
            "istio/virtualservices.yaml",
            "tests/fixtures/split-gateway.yaml",
        ],
        1,
    );
    let findings = &report.configs[0].findings;
    assert!(findings.iter().any(|finding| finding.problem), "{findings:?}");
    let report = check_both_ways(
        &[
            "istio/wasmplugin.yaml",
            "istio/gateway.yaml",
            "istio/virtualservices.yaml",
        ],
        0,
    );
    assert!(!report.configs[0].findings.is_empty());
}

#[test]
fn status_json_without_prometheus_is_an_error_not_a_report() {
    let output = run(&[
        "status",
        "--prometheus",
        "http://127.0.0.1:1",
        "--config",
        "istio/wasmplugin.yaml",
        "--output",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    assert!(
        stderr(&output).starts_with("Prometheus at http://127.0.0.1:1 is unreachable"),
        "{}",
        stderr(&output)
    );
}
