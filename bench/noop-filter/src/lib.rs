//! A proxy-wasm filter built like canary-split (same SDK, same release profile) that does
//! nothing: what Envoy charges every stream for any Wasm filter. Its plugin configuration may
//! list host calls to make on every request, to price each kind alone, one per line:
//!
//! ```text
//! get NAME COUNT             read request header NAME
//! set NAME COUNT [VALUE]     set request header NAME to VALUE (default "x")
//! get_all COUNT              read the whole request header map
//! clear_route_cache COUNT    call the clear_route_cache foreign function
//! ```

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(ProbeRoot { calls: Rc::new(Vec::new()) }));
}}

#[derive(Clone)]
enum HostCall {
    Get(String),
    Set(String, String),
    GetAll,
    ClearRouteCache,
}

fn parse(config: &str) -> Result<Vec<HostCall>, String> {
    let mut calls = Vec::new();
    for line in config.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (call, count) = match words.as_slice() {
            ["get", name, count] => (HostCall::Get((*name).to_owned()), count),
            ["set", name, count] => (HostCall::Set((*name).to_owned(), "x".to_owned()), count),
            ["set", name, count, value] => (HostCall::Set((*name).to_owned(), (*value).to_owned()), count),
            ["get_all", count] => (HostCall::GetAll, count),
            ["clear_route_cache", count] => (HostCall::ClearRouteCache, count),
            _ => return Err(format!("cannot read {line:?}")),
        };
        let count: usize = count.parse().map_err(|_| format!("bad count in {line:?}"))?;
        calls.extend(std::iter::repeat_with(|| call.clone()).take(count));
    }
    Ok(calls)
}

struct ProbeRoot {
    calls: Rc<Vec<HostCall>>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match parse(&String::from_utf8_lossy(&config)) {
            Ok(calls) => {
                self.calls = Rc::new(calls);
                true
            }
            Err(error) => {
                log::error!("noop-filter: {error}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe { calls: self.calls.clone() }))
    }
}

struct Probe {
    calls: Rc<Vec<HostCall>>,
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for call in self.calls.iter() {
            // Results are ignored: only the cost of making the call is measured.
            match call {
                HostCall::Get(name) => {
                    let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name);
                }
                HostCall::Set(name, value) => {
                    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value.as_bytes()));
                }
                HostCall::GetAll => {
                    let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
                }
                HostCall::ClearRouteCache => clear_route_cache(),
            }
        }
        Action::Continue
    }
}

/// The same raw call canary-split makes (src/filter.rs), so its price is the same.
fn clear_route_cache() {
    let name = "clear_route_cache";
    let mut result_data: *mut u8 = std::ptr::null_mut();
    let mut result_size: usize = 0;
    // SAFETY: the pointers are valid for the call; the host allocates result data only on success.
    let status = unsafe {
        proxy_call_foreign_function(name.as_ptr(), name.len(), std::ptr::null(), 0, &mut result_data, &mut result_size)
    };
    if status == 0 && !result_data.is_null() {
        // SAFETY: on success the host hands over a buffer it allocated with our allocator.
        drop(unsafe { Vec::from_raw_parts(result_data, result_size, result_size) });
    }
}

extern "C" {
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}
