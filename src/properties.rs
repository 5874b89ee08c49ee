//! Running property tests (`proptest`) natively and inside the Wasm engine alike: fewer cases in
//! Wasm, where the runner is slower, the same properties.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

const CASES: u32 = if cfg!(target_arch = "wasm32") { 64 } else { 1024 };

/// Checks `property` on `CASES` values drawn from `strategy`; panics with the smallest failing
/// value proptest finds.
pub fn check<S: Strategy>(strategy: S, property: impl Fn(S::Value) -> TestCaseResult) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        // Failure persistence writes files, which the Wasm engine has none of.
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(failure) = runner.run(&strategy, property) {
        panic!("{failure}");
    }
}
