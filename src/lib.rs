//! canary-split: picks the primary or the canary version of a service for every request.
//!
//! The decision core (`config`, `authority`, `cookie`, `sticky_hash`, `sticky_cookie`, `pin_token`,
//! `decision`, `guard`) is plain Rust
//! with no proxy-wasm types, so it is tested natively and inside a Wasm engine alike. `filter` is
//! the thin glue on the `proxy-wasm` SDK, compiled only for the module Envoy loads
//! (`wasm32-wasip1`).

pub mod authority;
pub mod config;
pub mod cookie;
pub mod decision;
pub mod guard;
pub mod metrics;
pub mod pin_token;
pub mod sticky_cookie;
pub mod sticky_hash;

#[cfg(test)]
mod properties;

#[cfg(target_os = "wasi")]
mod filter;
#[cfg(target_os = "wasi")]
mod guard_host;
