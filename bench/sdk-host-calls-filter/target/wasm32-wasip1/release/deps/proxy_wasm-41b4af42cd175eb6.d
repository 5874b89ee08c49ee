/work/main/bench/sdk-host-calls-filter/target/wasm32-wasip1/release/deps/proxy_wasm-41b4af42cd175eb6.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/hostcalls.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/traits.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/types.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/allocator.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/dispatcher.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/logger.rs

/work/main/bench/sdk-host-calls-filter/target/wasm32-wasip1/release/deps/libproxy_wasm-41b4af42cd175eb6.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/hostcalls.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/traits.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/types.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/allocator.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/dispatcher.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/logger.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/hostcalls.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/traits.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/types.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/allocator.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/dispatcher.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/proxy-wasm-0.2.5/src/logger.rs:
