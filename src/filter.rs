//! The filter's side of the proxy-wasm ABI (0.2.1): load the configuration once per plugin, and for
//! each request read what the decision needs, decide, and write the decision into the request
//! headers.
//!
//! The module exports only the callbacks it uses. Envoy enters the VM for every callback a module
//! exports, on every stream, and an SDK exports all of them (response headers, log, done, ...);
//! `make bench-profile` measures what those entries cost. A stream is remembered only until its
//! request headers (`contexts`, `lifecycle`).

use crate::config::{Config, FORWARDED_HOST_HEADER};
use crate::contexts::RequestConfig;
use crate::decision::{decide, RequestView};
use crate::header_map;
use crate::host;
use crate::lifecycle::CONTEXTS;
use crate::sticky_hash::BUCKETS;

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
            CONTEXTS.with(|contexts| contexts.borrow_mut().configured(root_context_id, config));
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
    match CONTEXTS.with(|contexts| contexts.borrow_mut().for_request(context_id)) {
        RequestConfig::Known(Some(config)) => route_request(&config),
        RequestConfig::Known(None) => {}
        RequestConfig::Ambiguous(configs) => {
            // Which plugin this request belongs to is lost: route nothing, but never let the
            // client choose a variant through any plugin's decision header.
            log::warn!("stream {context_id} of an unknown plugin: its decision headers are removed, nothing else");
            for config in configs {
                remove_request_header(&config.decision_header);
            }
        }
    }
    CONTINUE
}

/// Envoy selects the route again after this module changes a request header: it does so for
/// every module on ABI 0.2.1 (the explicit `clear_route_cache` call is only needed from ABI 0.2.2
/// on). The end-to-end tests run a filter that resolves the route first, and fail if that ever
/// stops being true.
fn route_request(config: &Config) {
    // One copy of the whole header map serves every header the request is routed on. Most of a
    // read's price is the host entering the VM to allocate the copy, not its size, so one read
    // of everything costs about what one single header does.
    let Some(headers) = host::request_header_pairs() else {
        // Nothing to decide on; still make sure the client cannot choose a variant itself.
        remove_request_header(&config.decision_header);
        return;
    };
    let request = HostRequest { headers: &headers };
    let authority = request.first(":authority");
    let Some(route) = authority.and_then(|a| config.route_for_authority(a)) else {
        // Not a split host: only make sure the client cannot choose a variant itself.
        if request.first(&config.decision_header).is_some() {
            remove_request_header(&config.decision_header);
        }
        return;
    };
    let decision = decide(route, &request, || fastrand::u16(..BUCKETS));
    if !set_request_header(&config.decision_header, decision.variant.as_str().as_bytes()) {
        // Whatever the client sent there must not stand in for the decision.
        remove_request_header(&config.decision_header);
    }
    if let Some(target_host) = &route.target(decision.variant).host {
        if let Some(original) = authority {
            set_request_header(FORWARDED_HOST_HEADER, original);
        }
        set_request_header(":authority", target_host.as_bytes());
    }
}

/// The request as the decision sees it: its serialized header map, and the host for the rest.
struct HostRequest<'h> {
    headers: &'h [u8],
}

impl<'h> HostRequest<'h> {
    /// The first value of a header, as the host's single-value getter would return it.
    fn first(&self, name: &str) -> Option<&'h [u8]> {
        header_map::values(self.headers, name.as_bytes()).next()
    }
}

impl RequestView for HostRequest<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.first(name).map(<[u8]>::to_vec)
    }

    fn cookies(&self) -> Option<Vec<u8>> {
        // Every Cookie header, joined as HTTP/2 crumbs are: a client may send several.
        let mut values = header_map::values(self.headers, b"cookie");
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

/// Returns whether the header was set.
fn set_request_header(name: &str, value: &[u8]) -> bool {
    let result = host::set_request_header(name, value);
    if let Err(failed) = result {
        log::warn!("cannot set request header {name}: host status {}", failed.0);
    }
    result.is_ok()
}

fn remove_request_header(name: &str) {
    if let Err(failed) = host::remove_request_header(name) {
        log::warn!("cannot remove request header {name}: host status {}", failed.0);
    }
}
