//! The guard's part of the glue: each worker counts the responses of judged requests in its own
//! memory, and a tick on the plugin's root context merges them into the state every worker of
//! the gateway shares (the host's shared data, compare-and-swap) and reads the verdict back. The
//! request path reads only a flag in local memory. The rules themselves are in `guard`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType, Status};

use crate::config::{Config, Variant};
use crate::decision::Decision;
use crate::guard::{self, Claim, GuardConfig, GuardedHosts, Update, Window};
use crate::metrics::{self, GuardStats};

/// How often each worker merges its counts and reads the verdict: all workers act on a trip
/// within this period of the tick that found it.
pub const TICK_PERIOD: Duration = Duration::from_millis(500);
/// Shared data keys, one per guarded host; the value says which configuration of the route it
/// judges (its fingerprint), so a push that leaves the route as it was keeps window and trip.
const KEY_PREFIX: &str = "canary-split.guard.";
/// Compare-and-swap attempts per tick; counts not written wait for the next tick.
const CAS_ATTEMPTS: usize = 8;

/// The guards of one configuration, by route index (none for routes without a guard).
pub struct Guards {
    routes: Vec<Option<RouteGuard>>,
    /// Until the plugin accepts a newer configuration: Envoy may keep this one's root context,
    /// and its ticks, for a while after, and a late trip seen there would set a gauge the newer
    /// configuration has set to 0.
    current: Rc<Cell<bool>>,
}

struct RouteGuard {
    host: String,
    config: GuardConfig,
    key: String,
    fingerprint: u64,
    tripped: Cell<bool>,
    /// Counts since this worker's last merge.
    pending: RefCell<Window>,
    stats: GuardStats<u32>,
}

/// A request the guard judges: its route and release, and when it started (latency rule only).
pub struct Judged {
    route: usize,
    release: Variant,
    started: Option<Duration>,
}

/// What the guard makes of a request's decision.
pub enum OnRequest {
    /// Not on a guarded route, or pinned: the decision stands and nothing is counted.
    Unjudged,
    /// The decision stands; its response counts.
    Judged(Judged),
    /// The guard tripped: the request goes to primary (counted with reason `guard`).
    ToPrimary,
}

impl Guards {
    /// Defines each guarded host's stats, joins or claims its shared state, and starts the tick.
    pub fn start(config: &Config) -> Result<Guards, Status> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let Some(guard_config) = &route.guard else {
                routes.push(None);
                continue;
            };
            let stats = GuardStats::define(
                &route.host,
                |name| hostcalls::define_metric(MetricType::Counter, name),
                |name| hostcalls::define_metric(MetricType::Gauge, name),
            )?;
            let key = format!("{KEY_PREFIX}{}", route.host);
            let fingerprint = guard::route_fingerprint(route);
            let tripped = join_or_claim(&key, fingerprint, guard_config);
            if tripped {
                log::info!(
                    "guard for {} stays tripped: the route's configuration is unchanged",
                    route.host
                );
            }
            hostcalls::record_metric(stats.tripped, u64::from(tripped))?;
            routes.push(Some(RouteGuard {
                host: route.host.clone(),
                config: guard_config.clone(),
                key,
                fingerprint,
                tripped: Cell::new(tripped),
                pending: RefCell::new(Window::default()),
                stats,
            }));
        }
        if routes.iter().any(Option::is_some) {
            hostcalls::set_tick_period(TICK_PERIOD)?;
        }
        Ok(Guards {
            routes,
            current: Rc::new(Cell::new(true)),
        })
    }

    /// On the request path: local memory only, plus the clock for the latency rule.
    pub fn on_request(&self, route: usize, decision: &Decision) -> OnRequest {
        let Some(guard) = self.routes.get(route).and_then(Option::as_ref) else {
            return OnRequest::Unjudged;
        };
        if !guard::is_judged(decision.reason) {
            return OnRequest::Unjudged;
        }
        if guard.tripped.get() {
            count(guard.stats.requests);
            return OnRequest::ToPrimary;
        }
        OnRequest::Judged(Judged {
            route,
            release: decision.variant,
            started: guard.config.latency.as_ref().and_then(|_| now()),
        })
    }

    /// Counts a judged request's response: a 5xx is an error, whoever made it (the release, or
    /// Envoy on its behalf: timeout, reset, no healthy upstream).
    pub fn on_response(&self, judged: Judged) {
        let Some(guard) = self.routes.get(judged.route).and_then(Option::as_ref) else {
            return;
        };
        let Ok(Some(status)) = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status") else {
            return;
        };
        let Some(now) = now() else {
            return;
        };
        let latency_ms = judged
            .started
            .map(|started| u64::try_from(now.saturating_sub(started).as_millis()).unwrap_or(u64::MAX));
        if let Ok(mut pending) = guard.pending.try_borrow_mut() {
            pending.record(
                now.as_secs(),
                judged.release,
                guard::is_error_status(&status),
                latency_ms,
            );
        }
    }

    /// The root context's tick, while this is the plugin's current configuration.
    pub fn tick(&self) {
        if !self.current.get() {
            return;
        }
        if let Some(now) = now() {
            self.routes.iter().flatten().for_each(|guard| guard.tick(now.as_secs()));
        }
    }
}

impl RouteGuard {
    fn tick(&self, now: u64) {
        if self.tripped.get() {
            return; // until a configuration changes the route, which makes a new RouteGuard
        }
        let Ok(mut pending) = self.pending.try_borrow_mut() else {
            return;
        };
        let counts = std::mem::take(&mut *pending);
        drop(pending);
        for _ in 0..CAS_ATTEMPTS {
            let Ok((current, cas)) = hostcalls::get_shared_data(&self.key) else {
                break;
            };
            match guard::update(current.as_deref(), self.fingerprint, &counts, now, &self.config) {
                Update::Superseded => return,
                Update::Unchanged { tripped } => {
                    if tripped {
                        self.observe_trip();
                    }
                    return;
                }
                Update::Write { state, trip } => {
                    if hostcalls::set_shared_data(&self.key, Some(&state), cas).is_err() {
                        continue; // another worker wrote first: merge into what it wrote
                    }
                    if let Some(trip) = trip {
                        count(self.stats.trips);
                        log::warn!(
                            "guard tripped for {}: {trip} over the last {} s; every request no pin decides goes to \
                             primary until the route's configuration changes",
                            self.host,
                            self.config.window_seconds
                        );
                        self.observe_trip();
                    }
                    return;
                }
            }
        }
        if let Ok(mut pending) = self.pending.try_borrow_mut() {
            pending.merge(&counts);
        }
    }

    fn observe_trip(&self) {
        self.tripped.set(true);
        let _ = hostcalls::record_metric(self.stats.tripped, 1);
    }
}

thread_local! {
    /// The VM's plugins' guarded hosts: a VM runs on one thread, and its plugins share it.
    static GUARDED_HOSTS: RefCell<GuardedHosts<Rc<Cell<bool>>>> = RefCell::default();
}

/// Once the plugin accepted `config` with `guards`: its previous configuration's guards stop, and
/// the tripped gauge of each host it stopped guarding goes to 0, unless another plugin of the VM
/// guards it. Plugins are told apart by name (Istio: the WasmPlugin's namespace.name), not by
/// root context: Envoy starts a new root context for each new configuration of a plugin. Every
/// VM of the gateway runs this on the push.
pub fn on_accepted(config: &Config, guards: &Guards) {
    let plugin = hostcalls::get_property(vec!["plugin_name"])
        .ok()
        .flatten()
        .unwrap_or_default();
    let (unguarded, previous) = GUARDED_HOSTS.with(|hosts| {
        hosts
            .try_borrow_mut()
            .map(|mut hosts| hosts.replace(&plugin, guard::guarded_hosts(config), Rc::clone(&guards.current)))
            .unwrap_or_default()
    });
    if let Some(previous) = previous {
        previous.set(false);
    }
    for host in unguarded {
        if let Ok(gauge) = hostcalls::define_metric(MetricType::Gauge, &metrics::guard_tripped_name(&host)) {
            let _ = hostcalls::record_metric(gauge, 0);
        }
    }
}

/// Joins the route's shared state when it judges this very configuration of the route, or
/// replaces it with a fresh one; whether the guard has tripped.
fn join_or_claim(key: &str, fingerprint: u64, config: &GuardConfig) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let Ok((current, cas)) = hostcalls::get_shared_data(key) else {
            return false;
        };
        match guard::claim(current.as_deref(), fingerprint, config) {
            Claim::Joined { tripped } => return tripped,
            Claim::Fresh(state) => {
                if hostcalls::set_shared_data(key, Some(&state), cas).is_ok() {
                    return false;
                }
            }
        }
    }
    false
}

/// Counting never stands in the way of routing: a failed increment is dropped.
fn count(counter: u32) {
    let _ = hostcalls::increment_metric(counter, 1);
}

/// The time since the Unix epoch; none without a clock.
fn now() -> Option<Duration> {
    hostcalls::get_current_time()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
}
