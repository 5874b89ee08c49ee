//! The filter on the proxy-wasm SDK: each plugin (root context) loads its configuration once,
//! and each request reads what the decision needs, decides, and writes the decision into the
//! request headers; a sticky key it handed out goes into the response's `Set-Cookie`.
//!
//! Plugins that load the same module with the same VM settings share one VM; each is a root
//! context of its own, and the SDK creates every stream under its plugin, so each request is
//! routed with its own plugin's configuration.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType, Status};

use crate::config::{Config, Route, Variant, FORWARDED_HOST_HEADER};
use crate::decision::{admit_to_release, decide_assigning, RequestView};
use crate::guard_host::{self, Guards, Judged, OnRequest};
use crate::metrics::{self, Stats};
use crate::sticky_cookie;
use crate::sticky_hash::BUCKETS;

proxy_wasm::main! {{
    // The SDK's logger also installs a panic hook that logs the panic text before the VM traps.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::<Plugin>::default());
}}

/// One plugin: its configuration and stats, once a configuration was accepted.
#[derive(Default)]
struct Plugin {
    configured: Option<Rc<Configured>>,
}

/// A validated configuration, the stats its requests count in, and its routes' guards.
struct Configured {
    config: Config,
    stats: Stats<u32>,
    guards: Guards,
}

impl Context for Plugin {}

impl RootContext for Plugin {
    /// Returning false makes Envoy reject the configuration; the plugin's previous one, if any,
    /// keeps serving. Token pins' keys come from the VM's environment, which Envoy fills from
    /// the VM config's `environment_variables` (Istio: the WasmPlugin's `vmConfig.env`).
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let json = self.get_plugin_configuration().unwrap_or_default();
        // A value that is not UTF-8 is passed on as such, to be refused as not base64.
        let env = |name: &str| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned());
        let configured = Config::from_json_with_env(&json, env)
            .map_err(|error| format!("invalid configuration: {error}"))
            .and_then(|config| {
                let stats = Stats::define(&config, define_counter, set_gauge)
                    .map_err(|status| format!("cannot define its stats: host status {status:?}"))?;
                let guards = Guards::start(&config)
                    .map_err(|status| format!("cannot start its guards: host status {status:?}"))?;
                Ok(Configured { config, stats, guards })
            });
        let accepted = match configured {
            Ok(configured) => {
                log::info!("configured {} route(s)", configured.config.routes.len());
                guard_host::on_accepted(&configured.config, &configured.guards);
                self.configured = Some(Rc::new(configured));
                true
            }
            Err(problem) => {
                log::error!("{problem}");
                false
            }
        };
        let outcome = if accepted {
            metrics::CONFIGS_ACCEPTED
        } else {
            metrics::CONFIGS_REFUSED
        };
        if let Ok(counter) = define_counter(outcome) {
            count(counter);
        }
        accepted
    }

    fn on_tick(&mut self) {
        if let Some(configured) = &self.configured {
            configured.guards.tick();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            configured: self.configured.clone(),
            set_cookie: None,
            judged: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn define_counter(name: &str) -> Result<u32, Status> {
    hostcalls::define_metric(MetricType::Counter, name)
}

fn set_gauge(name: &str, value: u64) -> Result<(), Status> {
    hostcalls::record_metric(hostcalls::define_metric(MetricType::Gauge, name)?, value)
}

/// Counting never stands in the way of routing: a failed increment is dropped.
fn count(counter: u32) {
    let _ = hostcalls::increment_metric(counter, 1);
}

/// One request, with its plugin's configuration (none if the plugin has no valid one), and what
/// its response needs from the decision.
struct Stream {
    configured: Option<Rc<Configured>>,
    /// The `Set-Cookie` that gives the client the sticky key the filter made for it.
    set_cookie: Option<String>,
    /// What the guard needs to count the response, for a request it judged.
    judged: Option<Judged>,
}

impl Context for Stream {}

/// What a routed request leaves for its response.
#[derive(Default)]
struct Routed {
    judged: Option<Judged>,
    set_cookie: Option<String>,
    /// Answered with a 403 here: a protected release host without a token for it.
    denied: bool,
}

impl HttpContext for Stream {
    /// Lets the request continue with its headers rewritten, except a request straight to a
    /// protected release host without a token for it, which gets a 403.
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(configured) = &self.configured else {
            return Action::Continue;
        };
        let routed = self.route_request(configured);
        (self.judged, self.set_cookie) = (routed.judged, routed.set_cookie);
        if routed.denied {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// Envoy's own replies (timeout, reset, no healthy upstream) pass through here as well.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let (Some(judged), Some(configured)) = (self.judged.take(), &self.configured) {
            configured.guards.on_response(judged);
        }
        self.send_assigned_cookie();
        Action::Continue
    }
}

impl Stream {
    /// Envoy's connection manager resolves the route before the first filter runs, and selects it
    /// again after this module changes a request header: it does so for every module on ABI
    /// 0.2.1, which the SDK declares (the explicit `clear_route_cache` call is only needed from
    /// ABI 0.2.2 on). The end-to-end tests route on the filter's changes, and fail if that ever
    /// stops being true.
    fn route_request(&self, Configured { config, stats, guards }: &Configured) -> Routed {
        let request = Request { stream: self };
        #[cfg(feature = "crash-trigger")]
        crash_if_asked(&request);
        let authority = request.first(":authority");
        let spoofed = request.first(&config.decision_header).is_some();
        let split = authority
            .as_deref()
            .and_then(|a| config.route_index(a))
            .and_then(|index| {
                let route_stats = stats.routes.get(index)?;
                Some((index, config.routes.get(index)?, route_stats))
            });
        let Some((index, route, route_stats)) = split else {
            // Not a split host: only make sure the client cannot choose a variant itself.
            if spoofed {
                self.remove_http_request_header(&config.decision_header);
                count(stats.spoofed_decision_headers_elsewhere);
            }
            let protected = authority.as_deref().and_then(|a| config.protected_release(a));
            let denied = protected.is_some_and(|releases| self.deny_release_host(config, releases, &request));
            return Routed {
                denied,
                ..Routed::default()
            };
        };
        if spoofed {
            count(route_stats.spoofed_decision_headers);
        }
        let (decision, assigned_key) = decide_assigning(route, &request, || fastrand::u16(..BUCKETS), key_bytes);
        let guarded = guards.on_request(index, &decision);
        let variant = if matches!(guarded, OnRequest::ToPrimary) {
            Variant::Primary // counted by the guard, with reason `guard`
        } else {
            count(route_stats.requests(decision.variant, decision.reason));
            decision.variant
        };
        for rejected in &decision.rejected_tokens {
            if let Some(counter) = route_stats.rejected_tokens(rejected.reason) {
                count(counter);
            }
        }
        let value = config.decision_values.of(variant);
        self.set_http_request_header_bytes(&config.decision_header, Some(value.as_bytes()));
        self.remove_token_headers(route);
        if let Some(target_host) = &route.target(variant).host {
            if let (true, Some(original)) = (route.x_forwarded_host, &authority) {
                self.set_http_request_header_bytes(FORWARDED_HOST_HEADER, Some(original));
            }
            self.set_http_request_header_bytes(":authority", Some(target_host.as_bytes()));
        }
        let judged = match guarded {
            OnRequest::Judged(judged) => Some(judged),
            OnRequest::Unjudged | OnRequest::ToPrimary => None,
        };
        let set_cookie = assigned_key.zip(route.assign.as_ref()).map(|(key, assignment)| {
            let secure = sticky_cookie::is_https(request.first("x-forwarded-proto").as_deref());
            assignment.set_cookie(&key, secure)
        });
        Routed {
            judged,
            set_cookie,
            denied: false,
        }
    }

    /// Added, never set: the upstream's own cookies stay. A failed call only loses the cookie; the
    /// user gets a new key on their next request.
    fn send_assigned_cookie(&mut self) {
        if let Some(cookie) = self.set_cookie.take() {
            let _ = hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, "set-cookie", cookie.as_bytes());
        }
    }

    /// Whether a request sent straight to a protected release host is refused: it passes only with
    /// a token that verifies for that release (of a route the host serves); any other gets a 403
    /// from here. Requests the filter rewrites to a release host are not seen again: Envoy runs the filter
    /// chain once per request, so they pass.
    fn deny_release_host(&self, config: &Config, releases: &[(usize, Variant)], request: &Request) -> bool {
        let admitted = releases.iter().find_map(|&(index, release)| {
            let route = config.routes.get(index)?;
            admit_to_release(route, release, request).ok().map(|_| route)
        });
        match admitted {
            Some(route) => {
                self.remove_token_headers(route);
                false
            }
            None => {
                self.send_http_response(
                    403,
                    vec![("content-type", "text/plain")],
                    Some(b"a release host needs a valid pin token for that release\n"),
                );
                true
            }
        }
    }

    /// Token headers are for the gateway: the release's backend never sees them, so it cannot log
    /// or forward a token. (A token in a cookie stays: rewriting `Cookie` would touch the
    /// client's other cookies.)
    fn remove_token_headers(&self, route: &Route) {
        for name in route.token_headers() {
            self.remove_http_request_header(name);
        }
    }
}

/// The random bytes of a new sticky key, from the host: WASI `random_get`, which Envoy's Wasm host
/// (proxy-wasm-cpp-host, src/exports.cc `wasi_unstable_random_get`) fills with BoringSSL's
/// `RAND_bytes`. `None` if the host refuses, logged once per VM: the request is then split at random
/// without a key (see `decide_assigning`).
fn key_bytes() -> Option<[u8; sticky_cookie::KEY_BYTES]> {
    static FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);
    let mut bytes = [0; sticky_cookie::KEY_BYTES];
    match getrandom::fill(&mut bytes) {
        Ok(()) => Some(bytes),
        Err(error) => {
            if !FAILURE_LOGGED.swap(true, Ordering::Relaxed) {
                // The errno only: getrandom's error texts cost bytes, for a line Envoy's host has no
                // reason to print (it fails only past 64 KiB or outside the VM's memory). -1: an errno
                // out of WASI's range.
                let errno = error.raw_os_error().unwrap_or(-1);
                log::warn!("random_get failed (WASI errno {errno}): users without a sticky cookie get none, and a random release");
            }
            None
        }
    }
}

/// Test builds only: a request with this header crashes the VM, as a bug would.
#[cfg(feature = "crash-trigger")]
#[allow(clippy::panic, reason = "the crash is the point of this test-only feature")]
fn crash_if_asked(request: &Request) {
    if request.first("x-canary-split-test-crash").is_some() {
        panic!("crash requested by the test header x-canary-split-test-crash");
    }
}

/// The request as the decision sees it, read from the host as the decision needs each value.
///
/// Each header is read on its own. Side by side on the bare and the realistic gateway, that cost
/// the same as one read of the whole header map, within the machine's noise (about 2 µs), and it
/// spares the SDK's decoding of every header name and value. Only cookies need the whole map.
struct Request<'s> {
    stream: &'s Stream,
}

impl Request<'_> {
    /// The first value of a header: the host's single-value getter returns only that one.
    fn first(&self, name: &str) -> Option<Vec<u8>> {
        self.stream.get_http_request_header_bytes(name)
    }
}

impl RequestView for Request<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.first(name)
    }

    fn cookies(&self) -> Option<Vec<u8>> {
        // Every Cookie header, joined as HTTP/2 crumbs are: an HTTP/1.1 client may send several,
        // and the single-value getter returns the first. The SDK decodes header names as UTF-8
        // and panics otherwise: Envoy's codecs refuse any name that is not an HTTP token before a
        // filter runs (tests/e2e/test_header_names.py proves it).
        let headers = self.stream.get_http_request_headers_bytes();
        let mut values = headers.iter().filter(|(n, _)| n == "cookie").map(|(_, value)| value);
        let mut joined = values.next()?.clone();
        for value in values {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(value);
        }
        Some(joined)
    }

    fn client_address(&self) -> Option<Vec<u8>> {
        // The hostcall, not the `Context` method, which unwraps a failed serialization.
        proxy_wasm::hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
    }

    fn unix_time(&self) -> u64 {
        // The hostcall, not the `Context` method, which unwraps. Without a clock every token
        // counts as expired: a pin that cannot be checked does not pin.
        proxy_wasm::hostcalls::get_current_time()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |since_epoch| since_epoch.as_secs())
    }
}
