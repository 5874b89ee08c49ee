//! The filter's side of the proxy-wasm ABI (0.2.1): load the configuration once per plugin, and for
//! each request read what the decision needs, decide, and write the decision into the request
//! headers.
//!
//! The module exports only the callbacks it uses. Envoy enters the VM for every callback a module
//! exports, on every stream, and an SDK exports all of them (response headers, log, done, ...);
//! each entry costs about 0.3 µs of gateway CPU, which `make bench-profile` measures. Streams keep
//! no state beyond the configuration they were created with.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::config::{Config, FORWARDED_HOST_HEADER};
use crate::decision::{decide, RequestView};
use crate::header_map;
use crate::host;
use crate::sticky_hash::BUCKETS;

/// Envoy loads a module only if it exports the ABI version it was written for.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    /// Each plugin (root context) that uses this VM, with its configuration once it is valid.
    /// Several plugins share a VM when they load the same module with the same VM configuration.
    static PLUGINS: RefCell<HashMap<u32, Option<Rc<Config>>>> = RefCell::new(HashMap::new());
    /// Each live stream, with its plugin's configuration at the time the stream started.
    static STREAMS: RefCell<HashMap<u32, Option<Rc<Config>>>> = RefCell::new(HashMap::new());
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> u32 {
    host::install_logger();
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    if parent_context_id == 0 {
        PLUGINS.with(|plugins| plugins.borrow_mut().insert(context_id, None));
    } else {
        let config = PLUGINS.with(|plugins| plugins.borrow().get(&parent_context_id).cloned().flatten());
        STREAMS.with(|streams| streams.borrow_mut().insert(context_id, config));
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    if STREAMS
        .with(|streams| streams.borrow_mut().remove(&context_id))
        .is_none()
    {
        PLUGINS.with(|plugins| plugins.borrow_mut().remove(&context_id));
    }
}

/// Returning 0 (false) makes Envoy reject the configuration; the plugin's previous one, if any,
/// keeps serving.
#[no_mangle]
pub extern "C" fn proxy_on_configure(root_context_id: u32, plugin_configuration_size: usize) -> u32 {
    let json = match host::plugin_configuration(plugin_configuration_size) {
        Ok(json) => json,
        Err(failed) => {
            log::error!("cannot read the plugin configuration: host status {}", failed.0);
            return 0;
        }
    };
    match Config::from_json(&json) {
        Ok(config) => {
            log::info!("configured {} route(s)", config.routes.len());
            PLUGINS.with(|plugins| plugins.borrow_mut().insert(root_context_id, Some(Rc::new(config))));
            1
        }
        Err(error) => {
            log::error!("invalid configuration: {error}");
            0
        }
    }
}

/// Always lets the request continue: the filter only rewrites headers.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _num_headers: usize, _end_of_stream: u32) -> u32 {
    const CONTINUE: u32 = 0;
    if let Some(config) = STREAMS.with(|streams| streams.borrow().get(&context_id).cloned().flatten()) {
        route_request(&config);
    }
    CONTINUE
}

/// Envoy selects the route again after this module changes a request header: it does so for
/// every module on ABI 0.2.1 (the explicit `clear_route_cache` call is only needed from ABI 0.2.2
/// on). The end-to-end tests run a filter that resolves the route first, and fail if that ever
/// stops being true.
fn route_request(config: &Config) {
    let authority = host::request_header(":authority");
    let Some(route) = authority.as_deref().and_then(|a| config.route_for_authority(a)) else {
        // Not a split host: only make sure the client cannot choose a variant itself.
        if host::request_header(&config.decision_header).is_some() {
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
        host::request_header(name)
    }

    fn cookies(&self) -> Option<Vec<u8>> {
        // One read of the whole map: the single-value getter returns only the first Cookie header.
        let serialized = host::request_header_pairs()?;
        let mut values = header_map::values(&serialized, b"cookie");
        let mut joined = values.next()?.to_vec();
        for value in values {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(value);
        }
        Some(joined)
    }

    fn client_address(&self) -> Option<Vec<u8>> {
        host::property(b"source\0address")
    }
}

fn set_request_header(name: &str, value: &[u8]) {
    if let Err(failed) = host::set_request_header(name, value) {
        log::warn!("cannot set request header {name}: host status {}", failed.0);
    }
}

fn remove_request_header(name: &str) {
    if let Err(failed) = host::remove_request_header(name) {
        log::warn!("cannot remove request header {name}: host status {}", failed.0);
    }
}
