//! The proxy-wasm Rust SDK's smallest HTTP filter. The SDK exports every stream callback, so
//! Envoy enters the VM for each of them on every stream; set next to `noop-filter`, which exports
//! only what canary-split does, it prices those entries (the README says why that matters).

use proxy_wasm::traits::{Context, HttpContext};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Noop) });
}}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}
