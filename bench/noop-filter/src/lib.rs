//! A Wasm filter built like canary-split (the same host-call layer, the same exported callbacks,
//! the same per-stream bookkeeping and release profile) that does nothing: what Envoy charges
//! every stream for any Wasm filter. Its plugin configuration may list host calls to make on every
//! request, to price each kind alone, one per line:
//!
//! ```text
//! get NAME COUNT             read request header NAME
//! set NAME COUNT [VALUE]     set request header NAME to VALUE (default "x")
//! get_all COUNT              read the whole request header map
//! ```

// canary-split's own callbacks, per-stream bookkeeping and host-call layer, so the probe and its
// calls cost what the filter's do. The probe uses only part of the host-call layer.
#[path = "../../../src/contexts.rs"]
mod contexts;
#[allow(dead_code)]
#[path = "../../../src/host.rs"]
mod host;
#[path = "../../../src/lifecycle.rs"]
mod lifecycle;

use contexts::RequestConfig;
use lifecycle::CONTEXTS;

/// What each plugin is configured with, for `lifecycle`.
type PluginConfig = Vec<HostCall>;

enum HostCall {
    Get(String),
    Set(String, String),
    GetAll,
}

fn parse(config: &str) -> Result<Vec<HostCall>, String> {
    let mut calls = Vec::new();
    for line in config.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (make, count): (Box<dyn Fn() -> HostCall>, &str) = match words.as_slice() {
            ["get", name, count] => (Box::new(|| HostCall::Get((*name).to_owned())), count),
            ["set", name, count] => (Box::new(|| HostCall::Set((*name).to_owned(), "x".to_owned())), count),
            ["set", name, count, value] => (
                Box::new(|| HostCall::Set((*name).to_owned(), (*value).to_owned())),
                count,
            ),
            ["get_all", count] => (Box::new(|| HostCall::GetAll), count),
            _ => return Err(format!("cannot read {line:?}")),
        };
        let count: usize = count.parse().map_err(|_| format!("bad count in {line:?}"))?;
        calls.extend(std::iter::repeat_with(make).take(count));
    }
    Ok(calls)
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_context_id: u32, plugin_configuration_size: usize) -> u32 {
    let config = host::plugin_configuration(plugin_configuration_size).unwrap_or_default();
    match parse(&String::from_utf8_lossy(&config)) {
        Ok(calls) => {
            CONTEXTS.with(|contexts| contexts.borrow_mut().configured(root_context_id, calls));
            1
        }
        Err(error) => {
            log::error!("noop-filter: {error}");
            0
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _num_headers: usize, _end_of_stream: u32) -> u32 {
    let RequestConfig::Known(Some(calls)) = CONTEXTS.with(|contexts| contexts.borrow_mut().for_request(context_id))
    else {
        return 0;
    };
    for call in calls.iter() {
        // Results are ignored: only the cost of making the call is measured.
        match call {
            HostCall::Get(name) => drop(request_header(name)),
            HostCall::Set(name, value) => drop(host::set_request_header(name, value.as_bytes())),
            HostCall::GetAll => drop(host::request_header_pairs()),
        }
    }
    0 // continue
}

/// One header's first value, through the single-value getter canary-split does not use (it reads
/// the whole map once instead): the probe prices both.
fn request_header(name: &str) -> Option<Vec<u8>> {
    // SAFETY: the name and out-pointers are valid for the duration of the call.
    host::returned_bytes(|data, len| unsafe {
        proxy_get_header_map_value(host::MAP_HTTP_REQUEST_HEADERS, name.as_ptr(), name.len(), data, len)
    })
    .ok()
    .flatten()
}

extern "C" {
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}
