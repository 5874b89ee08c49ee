//! canary-split: picks the primary or the canary version of a service for every request.
//!
//! The decision core (`config`, `authority`, `sticky_hash`, `decision`) is plain Rust with no
//! proxy-wasm types, so it is tested natively and inside a Wasm engine alike. `filter`, `host`
//! and `lifecycle` are the thin proxy-wasm glue, compiled only for the module Envoy loads
//! (`wasm32-wasip1`).

pub mod authority;
pub mod config;
pub mod contexts;
pub mod cookie;
pub mod decision;
pub mod header_map;
pub mod sticky_hash;

#[cfg(test)]
mod properties;

#[cfg(target_os = "wasi")]
mod filter;
#[cfg(target_os = "wasi")]
mod host;
#[cfg(target_os = "wasi")]
mod lifecycle;
/// What each plugin is configured with, for `lifecycle`.
#[cfg(target_os = "wasi")]
type PluginConfig = config::Config;
