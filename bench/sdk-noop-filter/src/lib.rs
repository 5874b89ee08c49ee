//! The proxy-wasm Rust SDK's smallest HTTP filter: what Envoy charges every stream for a Wasm
//! filter on the SDK, before it does anything (the SDK exports every stream callback, so Envoy
//! enters the VM for each of them on every stream).

use proxy_wasm::traits::{Context, HttpContext};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Noop) });
}}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}
