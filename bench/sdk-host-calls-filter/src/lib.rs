//! A filter on the proxy-wasm Rust SDK that makes the host calls canary-split makes on a split
//! host's request, and decides nothing: one read of the request's header map, then the header
//! changes. canary-split's CPU per request minus this probe's (same mode) is what its own code
//! costs. The plugin configuration chooses the calls, as words:
//!
//! ```text
//! (empty)                        read the header map only
//! DECISION_HEADER                ... and set DECISION_HEADER: primary (header mode)
//! DECISION_HEADER TARGET_HOST    ... and set :authority to TARGET_HOST (authority mode, without
//!                                `x_forwarded_host`, canary-split's default)
//! count ...                      ... and count the request in a stat, as canary-split does
//! ```

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Probe { calls: Rc::default() }) });
}}

#[derive(Default)]
struct HostCalls {
    decision_header: Option<String>,
    target_host: Option<String>,
    counter: Option<u32>,
}

struct Probe {
    calls: Rc<HostCalls>,
}

impl Context for Probe {}

impl RootContext for Probe {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let mut words: Vec<String> = String::from_utf8_lossy(&config)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let counter = if words.first().is_some_and(|word| word == "count") {
            words.remove(0);
            match hostcalls::define_metric(MetricType::Counter, "sdk_host_calls_probe_requests_total") {
                Ok(counter) => Some(counter),
                Err(_) => return false,
            }
        } else {
            None
        };
        let (decision_header, target_host) = match words.as_slice() {
            [] => (None, None),
            [decision_header] => (Some(decision_header.clone()), None),
            [decision_header, target_host] => (Some(decision_header.clone()), Some(target_host.clone())),
            _ => {
                let _ = hostcalls::log(LogLevel::Error, "sdk-host-calls-filter: expected at most two words after an optional \"count\"");
                return false;
            }
        };
        self.calls = Rc::new(HostCalls {
            decision_header,
            target_host,
            counter,
        });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            calls: Rc::clone(&self.calls),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    calls: Rc<HostCalls>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _headers = self.get_http_request_headers_bytes();
        if let Some(counter) = self.calls.counter {
            let _ = hostcalls::increment_metric(counter, 1);
        }
        if let Some(decision_header) = &self.calls.decision_header {
            self.set_http_request_header_bytes(decision_header, Some(b"primary"));
        }
        if let Some(target_host) = &self.calls.target_host {
            self.set_http_request_header_bytes(":authority", Some(target_host.as_bytes()));
        }
        Action::Continue
    }
}
