//! The proxy-wasm glue: load the config once per VM, and for each request read what the
//! decision needs, decide, and write the decision into the request headers.
//!
//! Host calls go through `hostcalls` directly, never the SDK's trait helpers, because those
//! `unwrap()` the host's status and the string getters panic on non-UTF-8 values; a panic here
//! would stop the VM and fail every later request on the worker.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::config::{Config, FORWARDED_HOST_HEADER};
use crate::decision::{decide, RequestView};
use crate::header_map;
use crate::sticky_hash::BUCKETS;

proxy_wasm::main! {{
    // Also installs a panic hook that logs the panic's message before the VM traps.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(CanarySplitRoot { config: None }));
}}

struct CanarySplitRoot {
    config: Option<Rc<Config>>,
}

impl Context for CanarySplitRoot {}

impl RootContext for CanarySplitRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let json = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(json) => json.unwrap_or_default(),
            Err(status) => {
                log::error!("cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        match Config::from_json(&json) {
            Ok(config) => {
                log::info!("configured {} route(s)", config.routes.len());
                self.config = Some(Rc::new(config));
                true
            }
            Err(error) => {
                // Returning false makes Envoy reject this configuration; the old one, if any, stays.
                log::error!("invalid configuration: {error}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on None, so a stream always gets a context, configured or not.
        Some(Box::new(CanarySplit {
            config: self.config.clone(),
        }))
    }
}

struct CanarySplit {
    config: Option<Rc<Config>>,
}

impl Context for CanarySplit {}

impl HttpContext for CanarySplit {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(config) = &self.config {
            route_request(config);
        }
        Action::Continue
    }
}

/// Envoy selects the route again after this module changes a request header: it does so for
/// every module on ABI 0.2.1, this SDK's (the explicit `clear_route_cache` call is only needed
/// from ABI 0.2.2 on). The end-to-end tests run a filter that resolves the route first, and fail
/// if that ever stops being true.
fn route_request(config: &Config) {
    let authority = request_header(":authority");
    let Some(route) = authority.as_deref().and_then(|a| config.route_for_authority(a)) else {
        // Not a split host: only make sure the client cannot choose a variant itself.
        if request_header(&config.decision_header).is_some() {
            remove_request_header(&config.decision_header);
        }
        return;
    };
    let decision = decide(route, &HostRequest, || fastrand::u16(..BUCKETS));
    set_request_header(&config.decision_header, decision.variant.as_str().as_bytes());
    if let Some(target_host) = &route.target(decision.variant).host {
        if let Some(original) = &authority {
            set_request_header(FORWARDED_HOST_HEADER, original);
        }
        set_request_header(":authority", target_host.as_bytes());
    }
}

/// The request as the decision sees it, read from the host on demand.
struct HostRequest;

impl RequestView for HostRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        request_header(name)
    }

    fn cookies(&self) -> Option<Vec<u8>> {
        // One read of the whole map: the single-value getter returns only the first Cookie header.
        let serialized = request_header_pairs()?;
        let mut values = header_map::values(&serialized, b"cookie");
        let mut joined = values.next()?.to_vec();
        for value in values {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(value);
        }
        Some(joined)
    }

    fn client_address(&self) -> Option<Vec<u8>> {
        hostcalls::get_property(vec!["source", "address"]).ok().flatten()
    }
}

/// The request's serialized header map, through the raw ABI: the SDK's reader panics on names
/// that are not UTF-8 and on statuses it does not expect.
fn request_header_pairs() -> Option<Vec<u8>> {
    const HTTP_REQUEST_HEADERS: u32 = 0;
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the pointers are valid for the call; the host allocates the result only on success.
    let status = unsafe { proxy_get_header_map_pairs(HTTP_REQUEST_HEADERS, &mut data, &mut size) };
    if status != STATUS_OK || data.is_null() {
        return None;
    }
    // SAFETY: on success the host hands over a buffer of `size` bytes it allocated with our allocator.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

fn set_request_header(name: &str, value: &[u8]) {
    if let Err(status) = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value)) {
        log::warn!("cannot set request header {name}: {status:?}");
    }
}

fn remove_request_header(name: &str) {
    if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
        log::warn!("cannot remove request header {name}: {status:?}");
    }
}

extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
}

/// Statuses are raw `u32`s, not the SDK's `Status` enum: a value outside it must not be undefined
/// behaviour.
const STATUS_OK: u32 = 0;
