//! Running the built tool from the repository root, as the integration tests do.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

pub fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

/// Runs the tool with only the pin key variables given here.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary-split"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_remove("CANARY_SPLIT_PIN_KEYS")
        .envs(env.iter().copied())
        .output()
        .expect("runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file in the temporary directory, named after the test binary's process and `name`.
pub fn temp_file(name: &str, contents: &str) -> String {
    let path = std::env::temp_dir().join(format!("canary-split-cli-test-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("writes");
    path.to_string_lossy().into_owned()
}
