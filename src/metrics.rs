//! The filter's Envoy stats: their names, with the labels Prometheus shows encoded in them.
//!
//! The proxy-wasm ABI has no tags, so labels go into the stat name as Istio's own stats do:
//! `host=.=shop.example.com;.;split_release=.=canary;.;reason=.=sticky;.;canary_split_requests_total`.
//! Envoy turns each `<tag>=.=<value>;.;` segment into a label through a `stats_tags` regex
//! `(<tag>=\.=(.*?);\.;)` (Istio: `extraStatTags`), and what is left is the metric's name.
//! Everything here is prepared when a configuration is loaded; a request only counts.

use crate::config::{Config, Variant};
use crate::decision::Reason;
use crate::pin_token::TokenRejection;

/// Requests decided, by split host, release and reason.
pub const REQUESTS: &str = "canary_split_requests_total";
/// The configured canary weight of each split host, in basis points.
pub const CANARY_WEIGHT: &str = "canary_split_canary_weight_basis_points";
/// Decision headers sent by clients and replaced or removed, by split host (`*`: any other host).
pub const SPOOFED_DECISION_HEADERS: &str = "canary_split_spoofed_decision_headers_total";
/// Pin tokens passed over, by split host and reason (`malformed`, `unknown_version`,
/// `bad_signature`, `expired`, `too_long`); defined for the hosts that have token pins.
pub const PIN_TOKENS_REJECTED: &str = "canary_split_pin_tokens_rejected_total";
/// Configurations each VM accepted or refused (Envoy loads a configuration in every VM: the
/// main thread's and each worker's).
pub const CONFIGS_ACCEPTED: &str = "canary_split_configs_accepted_total";
pub const CONFIGS_REFUSED: &str = "canary_split_configs_refused_total";

// The labels (tags) the stats carry. The release's is `split_release`, not `release`: a scrape
// that copies pod labels (istioctl's gateway pods have `release: istio`) would rename a clashing one.
pub const HOST_TAG: &str = "host";
pub const RELEASE_TAG: &str = "split_release";
pub const REASON_TAG: &str = "reason";
/// Whether each guarded host's guard has tripped (gauge: 1 tripped, 0 not).
pub const GUARD_TRIPPED: &str = "canary_split_guard_tripped";
/// Trips of each guarded host's guard.
pub const GUARD_TRIPS: &str = "canary_split_guard_trips_total";
/// The `reason` label of requests a tripped guard sent to primary.
pub const GUARD_REASON: &str = "guard";

/// The `host` label of requests to hosts that are not split; never a valid route host.
pub const OTHER_HOSTS: &str = "*";

/// A stat's full name: its labels as tag segments, then its name.
pub fn stat_name(name: &str, labels: &[(&str, &str)]) -> String {
    let mut full = String::new();
    for (tag, value) in labels {
        full.push_str(tag);
        full.push_str("=.=");
        full.push_str(value);
        full.push_str(";.;");
    }
    full.push_str(name);
    full
}

/// The stats of one split host, as the ids the host gave them.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteStats<Id> {
    primary: ByReason<Id>,
    canary: ByReason<Id>,
    pub spoofed_decision_headers: Id,
    /// For a route with token pins.
    rejected_tokens: Option<ByRejection<Id>>,
}

#[derive(Debug, PartialEq, Eq)]
struct ByReason<Id> {
    pin: Id,
    sticky: Id,
    random: Id,
}

#[derive(Debug, PartialEq, Eq)]
struct ByRejection<Id> {
    malformed: Id,
    unknown_version: Id,
    bad_signature: Id,
    expired: Id,
    too_long: Id,
}

/// Every rejection reason, as the counters name them.
const REJECTIONS: [TokenRejection; 5] = [
    TokenRejection::Malformed,
    TokenRejection::UnknownVersion,
    TokenRejection::BadSignature,
    TokenRejection::Expired { expiry: 0 },
    TokenRejection::TooLong {
        expiry: 0,
        max_ttl_seconds: 0,
    },
];

impl<Id: Copy> RouteStats<Id> {
    /// The counter of requests decided for `release` because of `reason`.
    pub fn requests(&self, release: Variant, reason: Reason) -> Id {
        let by_reason = match release {
            Variant::Primary => &self.primary,
            Variant::Canary => &self.canary,
        };
        match reason {
            Reason::Pinned { .. } => by_reason.pin,
            Reason::Sticky { .. } => by_reason.sticky,
            Reason::Random { .. } => by_reason.random,
        }
    }

    /// The counter of tokens passed over for `reason`, on a route with token pins.
    pub fn rejected_tokens(&self, reason: TokenRejection) -> Option<Id> {
        let by_rejection = self.rejected_tokens.as_ref()?;
        Some(match reason {
            TokenRejection::Malformed => by_rejection.malformed,
            TokenRejection::UnknownVersion => by_rejection.unknown_version,
            TokenRejection::BadSignature => by_rejection.bad_signature,
            TokenRejection::Expired { .. } => by_rejection.expired,
            TokenRejection::TooLong { .. } => by_rejection.too_long,
        })
    }
}

/// The filter's stats for one configuration.
#[derive(Debug, PartialEq, Eq)]
pub struct Stats<Id> {
    /// In the order of `Config::routes`.
    pub routes: Vec<RouteStats<Id>>,
    pub spoofed_decision_headers_elsewhere: Id,
}

impl<Id: Copy> Stats<Id> {
    /// Defines the stats of every split host through `define_counter`, and records each one's
    /// configured weight through `set_gauge`.
    pub fn define<E>(
        config: &Config,
        mut define_counter: impl FnMut(&str) -> Result<Id, E>,
        mut set_gauge: impl FnMut(&str, u64) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let host = route.host.as_str();
            let mut by_reason = |release: Variant| -> Result<ByReason<Id>, E> {
                let mut counter = |reason: &str| {
                    let labels = [(HOST_TAG, host), (RELEASE_TAG, release.as_str()), (REASON_TAG, reason)];
                    define_counter(&stat_name(REQUESTS, &labels))
                };
                Ok(ByReason {
                    pin: counter("pin")?,
                    sticky: counter("sticky")?,
                    random: counter("random")?,
                })
            };
            let (primary, canary) = (by_reason(Variant::Primary)?, by_reason(Variant::Canary)?);
            set_gauge(
                &stat_name(CANARY_WEIGHT, &[(HOST_TAG, host)]),
                u64::from(route.canary_basis_points),
            )?;
            let spoofed_decision_headers = define_counter(&stat_name(SPOOFED_DECISION_HEADERS, &[(HOST_TAG, host)]))?;
            let rejected_tokens = if route.has_token_pins() {
                let [malformed, unknown_version, bad_signature, expired, too_long] = REJECTIONS.map(|reason| {
                    define_counter(&stat_name(
                        PIN_TOKENS_REJECTED,
                        &[(HOST_TAG, host), (REASON_TAG, reason.as_str())],
                    ))
                });
                Some(ByRejection {
                    malformed: malformed?,
                    unknown_version: unknown_version?,
                    bad_signature: bad_signature?,
                    expired: expired?,
                    too_long: too_long?,
                })
            } else {
                None
            };
            routes.push(RouteStats {
                primary,
                canary,
                spoofed_decision_headers,
                rejected_tokens,
            });
        }
        let elsewhere = stat_name(SPOOFED_DECISION_HEADERS, &[(HOST_TAG, OTHER_HOSTS)]);
        Ok(Stats {
            routes,
            spoofed_decision_headers_elsewhere: define_counter(&elsewhere)?,
        })
    }
}

/// The name of `host`'s tripped gauge.
pub fn guard_tripped_name(host: &str) -> String {
    stat_name(GUARD_TRIPPED, &[(HOST_TAG, host)])
}

/// The stats of one guarded host: requests its tripped guard sent to primary, the tripped
/// gauge, and trips.
#[derive(Debug, PartialEq, Eq)]
pub struct GuardStats<Id> {
    pub requests: Id,
    pub tripped: Id,
    pub trips: Id,
}

impl<Id> GuardStats<Id> {
    /// Defines them for `host`; the glue sets the gauge once it knows the guard's state.
    pub fn define<E>(
        host: &str,
        mut define_counter: impl FnMut(&str) -> Result<Id, E>,
        define_gauge: impl FnOnce(&str) -> Result<Id, E>,
    ) -> Result<Self, E> {
        let labels = [
            (HOST_TAG, host),
            (RELEASE_TAG, Variant::Primary.as_str()),
            (REASON_TAG, GUARD_REASON),
        ];
        Ok(GuardStats {
            requests: define_counter(&stat_name(REQUESTS, &labels))?,
            tripped: define_gauge(&guard_tripped_name(host))?,
            trips: define_counter(&stat_name(GUARD_TRIPS, &[(HOST_TAG, host)]))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn labels_are_tag_segments_ahead_of_the_name() {
        assert_eq!(
            stat_name(
                REQUESTS,
                &[
                    (HOST_TAG, "a.example.com"),
                    (RELEASE_TAG, "canary"),
                    (REASON_TAG, "pin")
                ]
            ),
            "host=.=a.example.com;.;split_release=.=canary;.;reason=.=pin;.;canary_split_requests_total"
        );
        assert_eq!(stat_name(CONFIGS_ACCEPTED, &[]), CONFIGS_ACCEPTED);
    }

    #[test]
    fn every_host_release_and_reason_has_its_own_counter_and_a_weight() {
        let config = Config::from_json(
            br#"{"routes": [{"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 12.5},
                            {"host": "b.example.com", "primary": {}, "canary": {}, "canary_weight": 100}]}"#,
        )
        .expect("valid");
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut gauges = Vec::new();
        let stats = Stats::define::<()>(
            &config,
            |name| {
                let next = counters.len();
                Ok(*counters.entry(name.to_owned()).or_insert(next))
            },
            |name, value| {
                gauges.push((name.to_owned(), value));
                Ok(())
            },
        )
        .expect("defined");
        // 2 hosts x (2 releases x 3 reasons + spoofs), plus spoofs elsewhere: all distinct.
        assert_eq!(counters.len(), 15);
        let id = |host: &str, release: &str, reason: &str| {
            counters[&stat_name(
                REQUESTS,
                &[(HOST_TAG, host), (RELEASE_TAG, release), (REASON_TAG, reason)],
            )]
        };
        let b = &stats.routes[1];
        assert_eq!(
            b.requests(Variant::Canary, Reason::Sticky { bucket: 1 }),
            id("b.example.com", "canary", "sticky")
        );
        assert_eq!(
            b.requests(Variant::Primary, Reason::Pinned { rule: 0 }),
            id("b.example.com", "primary", "pin")
        );
        assert_eq!(
            b.requests(Variant::Primary, Reason::Random { bucket: 1 }),
            id("b.example.com", "primary", "random")
        );
        assert_eq!(
            stats.spoofed_decision_headers_elsewhere,
            counters[&stat_name(SPOOFED_DECISION_HEADERS, &[(HOST_TAG, OTHER_HOSTS)])]
        );
        assert_eq!(
            gauges,
            vec![
                (stat_name(CANARY_WEIGHT, &[(HOST_TAG, "a.example.com")]), 1250),
                (stat_name(CANARY_WEIGHT, &[(HOST_TAG, "b.example.com")]), 10_000)
            ]
        );
    }

    #[test]
    fn hosts_with_token_pins_count_rejected_tokens_by_reason() {
        let config = Config::from_json(
            br#"{"routes": [{"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 0,
                             "pin": [{"token": {"header": "x-canary-token"}}]},
                            {"host": "b.example.com", "primary": {}, "canary": {}, "canary_weight": 0}]}"#,
        )
        .expect("valid");
        let mut counters: HashMap<String, usize> = HashMap::new();
        let stats = Stats::define::<()>(
            &config,
            |name| {
                let next = counters.len();
                Ok(*counters.entry(name.to_owned()).or_insert(next))
            },
            |_, _| Ok(()),
        )
        .expect("defined");
        // Each host's 7 plus the spoofs elsewhere, and 5 rejection reasons for a.example.com only.
        assert_eq!(counters.len(), 2 * 7 + 1 + 5);
        let rejected = |reason: &str| {
            Some(counters[&stat_name(PIN_TOKENS_REJECTED, &[("host", "a.example.com"), ("reason", reason)])])
        };
        let a = &stats.routes[0];
        assert_eq!(a.rejected_tokens(TokenRejection::Malformed), rejected("malformed"));
        assert_eq!(
            a.rejected_tokens(TokenRejection::UnknownVersion),
            rejected("unknown_version")
        );
        assert_eq!(
            a.rejected_tokens(TokenRejection::BadSignature),
            rejected("bad_signature")
        );
        assert_eq!(
            a.rejected_tokens(TokenRejection::Expired { expiry: 9 }),
            rejected("expired")
        );
        assert_eq!(
            a.rejected_tokens(TokenRejection::TooLong {
                expiry: 9,
                max_ttl_seconds: 1
            }),
            rejected("too_long")
        );
        assert_eq!(stats.routes[1].rejected_tokens(TokenRejection::Malformed), None);
    }

    #[test]
    fn a_guarded_host_counts_guarded_requests_its_trips_and_shows_its_state() {
        let mut defined = Vec::new();
        let stats = GuardStats::define::<()>(
            "a.example.com",
            |name| {
                defined.push(("counter", name.to_owned()));
                Ok(defined.len())
            },
            |name| Ok(name.len()),
        )
        .expect("defined");
        assert_eq!(
            defined,
            [
                (
                    "counter",
                    "host=.=a.example.com;.;split_release=.=primary;.;reason=.=guard;.;canary_split_requests_total"
                        .to_owned()
                ),
                (
                    "counter",
                    "host=.=a.example.com;.;canary_split_guard_trips_total".to_owned()
                ),
            ]
        );
        assert_eq!(stats.tripped, "host=.=a.example.com;.;canary_split_guard_tripped".len());
        assert_eq!((stats.requests, stats.trips), (1, 2));
    }

    #[test]
    fn a_failure_to_define_stops_the_definition() {
        let config = Config::from_json(br#"{"routes": []}"#).expect("valid");
        assert_eq!(Stats::<u32>::define(&config, |_| Err("no"), |_, _| Ok(())), Err("no"));
    }
}
