/work/main/bench/sdk-host-calls-filter/target/wasm32-wasip1/release/deps/sdk_host_calls_filter-13d78cc75f743c11.d: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/bench/sdk-host-calls-filter/target/wasm32-wasip1/release/deps/libsdk_host_calls_filter-13d78cc75f743c11.rmeta: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/clippy.toml:
src/lib.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
