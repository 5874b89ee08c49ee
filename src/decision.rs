//! The decision: which variant a request goes to, and why. A pure function of the route and
//! what the request carries; the glue supplies the request through [`RequestView`].

use std::cell::Cell;
use std::ops::Range;

use crate::config::{KeySource, PinRule, Route, Variant};
use crate::cookie;
use crate::pin_token::TokenRejection;
use crate::{sticky_cookie, sticky_hash};

/// What the decision may read from a request. Each value is fetched only when a rule needs it,
/// so a route without pins or stickiness costs no header reads.
pub trait RequestView {
    /// The value of a request header, by lower-case name (the first, if it is repeated).
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// Every `Cookie` header's value, joined with `; `: an HTTP/1.1 client may send several.
    fn cookies(&self) -> Option<Vec<u8>>;
    /// The client's address as the proxy reports it, port included (`10.0.0.1:5555`, `[::1]:80`).
    fn client_address(&self) -> Option<Vec<u8>>;
    /// The time, in Unix seconds; asked only to check the expiry of a token that verifies.
    fn unix_time(&self) -> u64;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `pin[rule]` of the route matched: its value, or a token that verified.
    Pinned { rule: usize },
    /// The sticky key hashed into `bucket` (of 10,000).
    Sticky { bucket: u16 },
    /// No pin matched and the request had no sticky key: a random `bucket`.
    Random { bucket: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub variant: Variant,
    pub reason: Reason,
    /// The token pins whose request carried a token that did not verify, in rule order: they
    /// are passed over, and metrics count them.
    pub rejected_tokens: Vec<RejectedToken>,
}

/// A token that a token pin rule passed over, and why. Never the token itself: it is a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedToken {
    pub rule: usize,
    pub reason: TokenRejection,
}

/// Picks the variant: the first matching pin rule, else the sticky key's bucket, else
/// `random_bucket()` (a uniform number in `0..10_000`). Canary when the bucket is below the weight.
/// A token pin matches when its header or cookie carries a token that verifies for the route's
/// host; an empty value is no token.
///
/// A route that hands out sticky cookies (`assign`) decides a request without its key at random
/// here, as if it had none: the filter uses [`decide_assigning`], which gives it one.
pub fn decide(route: &Route, request: &impl RequestView, random_bucket: impl FnOnce() -> u16) -> Decision {
    decide_with(route, request, random_bucket, None::<fn() -> _>).0
}

/// As [`decide`]; and on a route that hands out sticky cookies, a request that no pin decides and
/// that carries no key (or an empty one) gets a new key made of `key_bytes()` (the host's random
/// bytes, see [`sticky_cookie::new_key`]) and is decided with it exactly as if it had carried it.
/// The new key comes back beside the decision, for the `Set-Cookie`. When the host has no random
/// bytes to give (`None`), the request is decided at random and gets no key: a key made of
/// anything weaker could repeat, and put users who never met on one key for its whole lifetime.
pub fn decide_assigning(
    route: &Route,
    request: &impl RequestView,
    random_bucket: impl FnOnce() -> u16,
    key_bytes: impl FnOnce() -> Option<[u8; sticky_cookie::KEY_BYTES]>,
) -> (Decision, Option<String>) {
    decide_with(route, request, random_bucket, Some(key_bytes))
}

fn decide_with(
    route: &Route,
    request: &impl RequestView,
    random_bucket: impl FnOnce() -> u16,
    key_bytes: Option<impl FnOnce() -> Option<[u8; sticky_cookie::KEY_BYTES]>>,
) -> (Decision, Option<String>) {
    let mut values = RequestValues::new(request, &route.cookie_names);
    let clock = Cell::new(None);
    let mut rejected_tokens = Vec::new();
    for (rule, pin) in route.pins.iter().enumerate() {
        let pinned_to = match pin {
            PinRule::Value { source, value, to } => (values.read(source) == Some(&value[..])).then_some(*to),
            PinRule::Token { source } => match verify_token(route, &mut values, &clock, source) {
                None => None,
                Some(Ok(release)) => Some(release),
                Some(Err(reason)) => {
                    rejected_tokens.push(RejectedToken { rule, reason });
                    None
                }
            },
        };
        if let Some(variant) = pinned_to {
            let decision = Decision {
                variant,
                reason: Reason::Pinned { rule },
                rejected_tokens,
            };
            return (decision, None);
        }
    }
    let sticky_key = route
        .sticky
        .as_ref()
        .and_then(|source| values.read(source))
        .filter(|key| !key.is_empty());
    let assigned_key = match (sticky_key, &route.assign, key_bytes) {
        (None, Some(_), Some(key_bytes)) => key_bytes().map(sticky_cookie::new_key),
        _ => None,
    };
    let (bucket, reason) = match sticky_key.or(assigned_key.as_deref().map(str::as_bytes)) {
        Some(key) => {
            let bucket = sticky_hash::bucket(route.salt.as_bytes(), key);
            (bucket, Reason::Sticky { bucket })
        }
        None => {
            let bucket = random_bucket();
            (bucket, Reason::Random { bucket })
        }
    };
    let variant = if bucket < route.canary_basis_points {
        Variant::Canary
    } else {
        Variant::Primary
    };
    let decision = Decision {
        variant,
        reason,
        rejected_tokens,
    };
    (decision, assigned_key)
}

/// The release a token in `source` pins, or why it does not; `None` without a token. The
/// clock is read at most once per request, and only for a token whose MAC verifies.
fn verify_token<'c, R: RequestView>(
    route: &Route,
    values: &mut RequestValues<'c, '_, R>,
    clock: &Cell<Option<u64>>,
    source: &'c KeySource,
) -> Option<Result<Variant, TokenRejection>> {
    let request = values.request;
    let token = values.read(source).filter(|token| !token.is_empty())?;
    let now = || match clock.get() {
        Some(now) => now,
        None => {
            let now = request.unix_time();
            clock.set(Some(now));
            now
        }
    };
    Some(
        route
            .pin_keys
            .verify_within(token, &route.host, now, route.max_token_ttl_seconds)
            .map(|verified| verified.release),
    )
}

/// Whether a request sent straight to the host of `release` of `route` (protected with
/// `"release_hosts": "token"`) may pass: the token pin rule whose token verifies for that
/// release, or every token passed over (none: the request carried no token).
pub fn admit_to_release(
    route: &Route,
    release: Variant,
    request: &impl RequestView,
) -> Result<usize, Vec<RejectedToken>> {
    let mut values = RequestValues::new(request, &route.cookie_names);
    let clock = Cell::new(None);
    let mut rejected_tokens = Vec::new();
    for (rule, pin) in route.pins.iter().enumerate() {
        let PinRule::Token { source } = pin else {
            continue;
        };
        match verify_token(route, &mut values, &clock, source) {
            Some(Ok(named)) if named == release => return Ok(rule),
            // Genuine, but for the other release: no entry to this one.
            Some(Ok(_)) | None => {}
            Some(Err(reason)) => rejected_tokens.push(RejectedToken { rule, reason }),
        }
    }
    Err(rejected_tokens)
}

/// What the decision has read from a request so far: each header, the cookies and the client
/// address are fetched at most once, however many rules look at them (the client address is a
/// host call, and joining cookies allocates). The cookies are parsed once, for the names the
/// route reads: a rule per name never rescans a large `Cookie` header.
struct RequestValues<'c, 'r, R> {
    request: &'r R,
    headers: Vec<(&'c str, Option<Vec<u8>>)>,
    /// The route's cookie names, and once read, the joined cookies with where each name's value is.
    cookie_names: &'c [String],
    cookies: Option<Option<ParsedCookies>>,
    client_address: Option<Option<Vec<u8>>>,
}

struct ParsedCookies {
    joined: Vec<u8>,
    /// By position in `cookie_names`.
    values: Vec<Option<Range<usize>>>,
}

impl<'c, 'r, R: RequestView> RequestValues<'c, 'r, R> {
    fn new(request: &'r R, cookie_names: &'c [String]) -> Self {
        RequestValues {
            request,
            headers: Vec::new(),
            cookie_names,
            cookies: None,
            client_address: None,
        }
    }

    fn read(&mut self, source: &'c KeySource) -> Option<&[u8]> {
        let request = self.request;
        match source {
            KeySource::Header(name) => {
                let index = match self.headers.iter().position(|(read, _)| *read == name) {
                    Some(index) => index,
                    None => {
                        self.headers.push((name, request.header(name)));
                        self.headers.len() - 1
                    }
                };
                self.headers.get(index)?.1.as_deref()
            }
            KeySource::Cookie(name) => {
                let names = self.cookie_names;
                let cookies = self.cookies.get_or_insert_with(|| {
                    request.cookies().map(|joined| ParsedCookies {
                        values: cookie::collect(&joined, names),
                        joined,
                    })
                });
                let cookies = cookies.as_ref()?;
                let position = names.iter().position(|known| known == name)?;
                let range = cookies.values.get(position)?.clone()?;
                cookies.joined.get(range)
            }
            KeySource::ClientAddress => {
                let address = self.client_address.get_or_insert_with(|| request.client_address());
                Some(without_port(address.as_deref()?))
            }
        }
    }
}

/// `10.0.0.1:5555` -> `10.0.0.1`, `[::1]:80` -> `::1`; anything else is kept as it is.
fn without_port(address: &[u8]) -> &[u8] {
    if let Some(rest) = address.strip_prefix(b"[") {
        return match rest.iter().position(|&b| b == b']') {
            Some(end) => rest.get(..end).unwrap_or(address),
            None => address,
        };
    }
    let mut colons = address.iter().enumerate().filter(|(_, &b)| b == b':');
    match (colons.next(), colons.next()) {
        (Some((colon, _)), None) => address.get(..colon).unwrap_or(address),
        _ => address, // no port, or a bare IPv6 address
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pin_token::PinKeys;
    use std::cell::RefCell;
    use std::collections::HashMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A request for tests, counting which headers the decision read.
    #[derive(Default)]
    struct FakeRequest {
        headers: HashMap<&'static str, Vec<u8>>,
        client_address: Option<Vec<u8>>,
        unix_time: u64,
        reads: RefCell<Vec<String>>,
    }

    impl FakeRequest {
        fn with(mut self, name: &'static str, value: &[u8]) -> Self {
            self.headers.insert(name, value.to_vec());
            self
        }
    }

    impl RequestView for FakeRequest {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.reads.borrow_mut().push(name.to_owned());
            self.headers.get(name).cloned()
        }
        fn cookies(&self) -> Option<Vec<u8>> {
            self.reads.borrow_mut().push("cookies".to_owned());
            self.headers.get("cookie").cloned()
        }
        fn client_address(&self) -> Option<Vec<u8>> {
            self.reads.borrow_mut().push("client address".to_owned());
            self.client_address.clone()
        }
        fn unix_time(&self) -> u64 {
            self.reads.borrow_mut().push("clock".to_owned());
            self.unix_time
        }
    }

    fn route(json_route: &str) -> Route {
        let config = Config::from_json(format!(r#"{{"routes": [{json_route}]}}"#).as_bytes()).expect("valid");
        config.routes.into_iter().next().expect("one route")
    }

    fn pinned_route(weight: &str) -> Route {
        route(&format!(
            r#"{{"host": "a.example.com", "primary": {{}}, "canary": {{}}, "canary_weight": {weight},
                "pin": [{{"header": "traffic", "value": "test", "to": "canary"}},
                        {{"cookie": "canary", "value": "never", "to": "primary"}},
                        {{"header": "x-canary", "value": "always", "to": "canary"}}],
                "sticky": {{"header": "x-user-id"}}}}"#
        ))
    }

    fn no_random() -> u16 {
        panic!("random bucket drawn where the decision should not need one")
    }

    #[test]
    fn header_pin_forces_canary_even_at_weight_zero() {
        let request = FakeRequest::default().with("traffic", b"test").with("x-user-id", b"u");
        let decision = decide(&pinned_route("0"), &request, no_random);
        assert_eq!(
            decision,
            Decision {
                variant: Variant::Canary,
                reason: Reason::Pinned { rule: 0 },
                rejected_tokens: vec![],
            }
        );
    }

    #[test]
    fn cookie_pin_forces_primary_even_at_weight_hundred() {
        let request = FakeRequest::default()
            .with("cookie", b"a=1; canary=never")
            .with("x-user-id", b"u");
        let decision = decide(&pinned_route("100"), &request, no_random);
        assert_eq!(
            decision,
            Decision {
                variant: Variant::Primary,
                reason: Reason::Pinned { rule: 1 },
                rejected_tokens: vec![],
            }
        );
    }

    #[test]
    fn first_matching_pin_wins() {
        let request = FakeRequest::default()
            .with("cookie", b"canary=never")
            .with("x-canary", b"always");
        assert_eq!(
            decide(&pinned_route("50"), &request, no_random).reason,
            Reason::Pinned { rule: 1 }
        );
    }

    #[test]
    fn pin_values_match_exactly() {
        for value in [&b"Test"[..], b"test ", b"tes", b"test,test", b"\xfftest"] {
            let request = FakeRequest::default().with("traffic", value);
            let decision = decide(&pinned_route("0"), &request, || 9_999);
            assert_eq!(decision.reason, Reason::Random { bucket: 9_999 }, "{value:?}");
        }
    }

    #[test]
    fn sticky_key_decides_by_its_bucket() {
        let route = pinned_route("50");
        let request = FakeRequest::default().with("x-user-id", b"user-1");
        let bucket = sticky_hash::bucket(b"a.example.com", b"user-1");
        let decision = decide(&route, &request, no_random);
        assert_eq!(decision.reason, Reason::Sticky { bucket });
        assert_eq!(decision.variant == Variant::Canary, bucket < 5_000);
    }

    #[test]
    fn canary_exactly_below_the_weight() {
        let route = pinned_route("12.5");
        for (bucket, variant) in [
            (0, Variant::Canary),
            (1_249, Variant::Canary),
            (1_250, Variant::Primary),
            (9_999, Variant::Primary),
        ] {
            assert_eq!(
                decide(&route, &FakeRequest::default(), || bucket).variant,
                variant,
                "bucket {bucket}"
            );
        }
        let none = pinned_route("0");
        assert_eq!(decide(&none, &FakeRequest::default(), || 0).variant, Variant::Primary);
        let all = pinned_route("100");
        assert_eq!(decide(&all, &FakeRequest::default(), || 9_999).variant, Variant::Canary);
    }

    #[test]
    fn raising_the_weight_only_moves_users_to_canary() {
        let weights = ["0", "1", "10", "25", "50", "75", "99.99", "100"];
        let routes: Vec<Route> = weights.iter().map(|w| pinned_route(w)).collect();
        for user in 0..2_000 {
            let request = FakeRequest::default().with("x-user-id", format!("user-{user}").as_bytes());
            let variants: Vec<Variant> = routes.iter().map(|r| decide(r, &request, no_random).variant).collect();
            let first_canary = variants
                .iter()
                .position(|&v| v == Variant::Canary)
                .unwrap_or(variants.len());
            assert!(
                variants.iter().skip(first_canary).all(|&v| v == Variant::Canary),
                "user-{user}: {variants:?}"
            );
        }
    }

    #[test]
    fn empty_sticky_key_falls_back_to_random() {
        let request = FakeRequest::default().with("x-user-id", b"");
        assert_eq!(
            decide(&pinned_route("50"), &request, || 42).reason,
            Reason::Random { bucket: 42 }
        );
    }

    #[test]
    fn sticky_cookie_and_client_address() {
        let by_cookie =
            route(r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 50, "sticky": {"cookie": "uid"}}"#);
        let request = FakeRequest::default().with("cookie", b"x=1; uid=alice");
        assert_eq!(
            decide(&by_cookie, &request, no_random).reason,
            Reason::Sticky {
                bucket: sticky_hash::bucket(b"a", b"alice")
            }
        );

        let by_address =
            route(r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 50, "sticky": {"client_ip": true}}"#);
        for (address, key) in [
            (&b"10.1.2.3:5555"[..], &b"10.1.2.3"[..]),
            (b"[::1]:80", b"::1"),
            (b"10.1.2.3", b"10.1.2.3"),
            (b"fe80::1", b"fe80::1"),
        ] {
            let request = FakeRequest {
                client_address: Some(address.to_vec()),
                ..Default::default()
            };
            assert_eq!(
                decide(&by_address, &request, no_random).reason,
                Reason::Sticky {
                    bucket: sticky_hash::bucket(b"a", key)
                }
            );
        }
        assert_eq!(
            decide(&by_address, &FakeRequest::default(), || 7).reason,
            Reason::Random { bucket: 7 }
        );
    }

    #[test]
    fn each_value_is_read_once_and_nothing_more_than_needed() {
        let route = route(
            r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 50,
                "pin": [{"cookie": "p1", "value": "v", "to": "canary"}, {"cookie": "p2", "value": "v", "to": "canary"}],
                "sticky": {"cookie": "uid"}}"#,
        );
        let request = FakeRequest::default().with("cookie", b"uid=bob");
        decide(&route, &request, no_random);
        assert_eq!(*request.reads.borrow(), vec!["cookies".to_owned()]);

        let same_header = self::route(
            r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 50,
                "pin": [{"header": "x-canary", "value": "always", "to": "canary"},
                        {"header": "x-canary", "value": "never", "to": "primary"}],
                "sticky": {"header": "x-canary"}}"#,
        );
        let request = FakeRequest::default().with("x-canary", b"sometimes");
        decide(&same_header, &request, no_random);
        assert_eq!(*request.reads.borrow(), vec!["x-canary".to_owned()]);

        let plain = self::route(r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 50}"#);
        let request = FakeRequest::default();
        decide(&plain, &request, || 0);
        assert!(request.reads.borrow().is_empty());
    }

    /// 32 bytes of 0x07 in standard base64, and the same key's HMAC state for minting.
    const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    const NOW: u64 = 1_800_000_000;

    /// A route at `weight` with a token pin in a header, a plain pin, a token pin in a cookie,
    /// and a sticky key, keyed with `KEY`.
    fn token_route(weight: &str) -> Route {
        let json = format!(
            r#"{{"routes": [{{"host": "a.example.com", "primary": {{}}, "canary": {{}}, "canary_weight": {weight},
                "pin": [{{"token": {{"header": "x-canary-token"}}}},
                        {{"header": "traffic", "value": "test", "to": "canary"}},
                        {{"token": {{"cookie": "canary-token"}}}}],
                "sticky": {{"header": "x-user-id"}}}}]}}"#
        );
        let config = Config::from_json_with_env(json.as_bytes(), |_| Some(KEY.to_owned())).expect("valid");
        config.routes.into_iter().next().expect("one route")
    }

    fn token(host: &str, release: Variant, expiry: u64) -> Vec<u8> {
        let keys = PinKeys::parse(KEY).expect("valid key");
        keys.mint(host, release, expiry).expect("minted").into_bytes()
    }

    fn at_now() -> FakeRequest {
        FakeRequest {
            unix_time: NOW,
            ..FakeRequest::default()
        }
    }

    #[test]
    fn a_valid_token_pins_the_release_it_names_at_any_weight() {
        for (weight, release) in [("0", Variant::Canary), ("100", Variant::Primary)] {
            let request = at_now()
                .with("x-canary-token", &token("a.example.com", release, NOW + 60))
                .with("x-user-id", b"u");
            let decision = decide(&token_route(weight), &request, no_random);
            assert_eq!(
                decision,
                Decision {
                    variant: release,
                    reason: Reason::Pinned { rule: 0 },
                    rejected_tokens: vec![],
                }
            );
        }
        let in_cookie = at_now().with(
            "cookie",
            &[b"canary-token=", &token("a.example.com", Variant::Canary, NOW + 1)[..]].concat(),
        );
        assert_eq!(
            decide(&token_route("0"), &in_cookie, no_random).reason,
            Reason::Pinned { rule: 2 }
        );
    }

    #[test]
    fn a_token_that_does_not_verify_is_passed_over_and_reported() {
        let route = token_route("0");
        let genuine = String::from_utf8(token("a.example.com", Variant::Canary, NOW + 60)).expect("ASCII");
        let later = genuine.replace(&(NOW + 60).to_string(), &(NOW + 6000).to_string());
        let cases = [
            (
                token("a.example.com", Variant::Canary, NOW),
                TokenRejection::Expired { expiry: NOW },
            ),
            (
                token("b.example.com", Variant::Canary, NOW + 60),
                TokenRejection::BadSignature,
            ),
            (later.into_bytes(), TokenRejection::BadSignature),
            (
                genuine.as_bytes()[..genuine.len() - 1].to_vec(),
                TokenRejection::Malformed,
            ),
            (b"test".to_vec(), TokenRejection::Malformed),
            (vec![0xff; 10 * 1024], TokenRejection::Malformed),
        ];
        for (bad, reason) in cases {
            // Next the plain pin decides; without it, the sticky key.
            let request = at_now()
                .with("x-canary-token", &bad)
                .with("traffic", b"test")
                .with("x-user-id", b"u");
            let decision = decide(&route, &request, no_random);
            assert_eq!(
                (decision.variant, decision.reason),
                (Variant::Canary, Reason::Pinned { rule: 1 })
            );
            assert_eq!(decision.rejected_tokens, [RejectedToken { rule: 0, reason }]);

            let request = at_now().with("x-canary-token", &bad).with("x-user-id", b"u");
            let decision = decide(&route, &request, no_random);
            assert_eq!(
                (decision.variant, decision.rejected_tokens.len()),
                (Variant::Primary, 1)
            );
            assert!(matches!(decision.reason, Reason::Sticky { .. }));
        }
    }

    #[test]
    fn every_rejected_token_is_reported_and_an_empty_one_is_no_token() {
        let request = at_now().with("x-canary-token", b"v9.x").with(
            "cookie",
            &[b"canary-token=", &token("a.example.com", Variant::Canary, NOW - 1)[..]].concat(),
        );
        let decision = decide(&token_route("0"), &request, || 42);
        assert_eq!(decision.reason, Reason::Random { bucket: 42 });
        assert_eq!(
            decision.rejected_tokens,
            [
                RejectedToken {
                    rule: 0,
                    reason: TokenRejection::UnknownVersion
                },
                RejectedToken {
                    rule: 2,
                    reason: TokenRejection::Expired { expiry: NOW - 1 }
                },
            ]
        );
        let empty = at_now().with("x-canary-token", b"").with("cookie", b"canary-token=");
        assert!(decide(&token_route("0"), &empty, || 42).rejected_tokens.is_empty());
    }

    #[test]
    fn the_clock_is_read_only_for_a_genuine_token() {
        let route = token_route("50");
        let plain = at_now().with("x-user-id", b"u");
        decide(&route, &plain, no_random);
        assert_eq!(
            *plain.reads.borrow(),
            ["x-canary-token", "traffic", "cookies", "x-user-id"]
        );

        let forged = at_now().with("x-canary-token", &token("b.example.com", Variant::Canary, NOW + 9));
        decide(&route, &forged, || 0);
        assert!(!forged.reads.borrow().contains(&"clock".to_owned()));

        let genuine = at_now().with("x-canary-token", &token("a.example.com", Variant::Canary, NOW + 9));
        decide(&route, &genuine, no_random);
        assert_eq!(*genuine.reads.borrow(), ["x-canary-token", "clock"]);
    }

    #[test]
    fn a_config_read_without_its_environment_verifies_no_token() {
        let json = r#"{"routes": [{"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 0,
            "pin": [{"token": {"header": "x-canary-token"}}]}]}"#;
        let config = Config::from_json(json.as_bytes()).expect("valid");
        let request = at_now().with("x-canary-token", &token("a.example.com", Variant::Canary, NOW + 60));
        let decision = decide(&config.routes[0], &request, || 0);
        assert_eq!(decision.variant, Variant::Primary);
        assert_eq!(
            decision.rejected_tokens,
            [RejectedToken {
                rule: 0,
                reason: TokenRejection::BadSignature
            }]
        );
    }

    mod properties {
        use super::*;
        use crate::properties::check;
        use proptest::collection::vec;
        use proptest::prelude::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                vec(any::<u8>(), 0..64),
                Just(b"test".to_vec()),
                Just(b"canary=never".to_vec())
            ]
        }

        #[test]
        fn any_request_gets_a_decision_that_follows_the_rules() {
            let requests = (bytes(), bytes(), bytes(), proptest::option::of(bytes()), 0..=10_000u16);
            check(requests, |(traffic, cookie, user, address, weight)| {
                let mut route = pinned_route("0");
                route.canary_basis_points = weight;
                let request = FakeRequest {
                    client_address: address,
                    ..FakeRequest::default()
                }
                .with("traffic", &traffic)
                .with("cookie", &cookie)
                .with("x-user-id", &user);
                let decision = decide(&route, &request, || 9_999);
                let expected = if traffic == b"test" {
                    Reason::Pinned { rule: 0 }
                } else if cookie::find(&cookie, b"canary") == Some(&b"never"[..]) {
                    Reason::Pinned { rule: 1 }
                } else if !user.is_empty() {
                    Reason::Sticky {
                        bucket: sticky_hash::bucket(b"a.example.com", &user),
                    }
                } else {
                    Reason::Random { bucket: 9_999 }
                };
                prop_assert_eq!(decision.reason, expected);
                Ok(())
            });
        }

        /// Users on the canary stay there as its weight grows; lowering it moves back only those
        /// whose bucket is at or above the new weight.
        #[test]
        fn weight_changes_move_only_the_users_between_the_weights() {
            let route =
                route(r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 0, "sticky": {"header": "u"}}"#);
            // Weights at, just around, or anywhere from the user's bucket: the boundaries matter.
            let user_and_weights = vec(any::<u8>(), 1..32).prop_flat_map(|user| {
                let bucket = sticky_hash::bucket(b"a", &user);
                let near = prop_oneof![
                    Just(bucket),
                    Just(bucket + 1),
                    Just(bucket.saturating_sub(1)),
                    0..=10_000u16
                ];
                (Just(user), near.clone(), near)
            });
            check(user_and_weights, |(user, one, other)| {
                let (low, high) = (one.min(other), one.max(other));
                let request = FakeRequest::default().with("u", &user);
                let variant_at = |weight| {
                    let mut weighted = route.clone();
                    weighted.canary_basis_points = weight;
                    decide(&weighted, &request, no_random).variant
                };
                let (at_low, at_high) = (variant_at(low), variant_at(high));
                if at_low == Variant::Canary {
                    prop_assert_eq!(at_high, Variant::Canary);
                }
                let bucket = sticky_hash::bucket(b"a", &user);
                prop_assert_eq!(at_low != at_high, (low..high).contains(&bucket));
                Ok(())
            });
        }
    }

    #[test]
    fn salt_separates_services() {
        let a = route(r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 50, "sticky": {"header": "u"}}"#);
        let salted = route(
            r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 50, "sticky": {"header": "u"}, "salt": "b"}"#,
        );
        let request = FakeRequest::default().with("u", b"user-1");
        assert_eq!(
            decide(&salted, &request, no_random).reason,
            Reason::Sticky {
                bucket: sticky_hash::bucket(b"b", b"user-1")
            }
        );
        assert_eq!(
            decide(&a, &request, no_random).reason,
            Reason::Sticky {
                bucket: sticky_hash::bucket(b"a", b"user-1")
            }
        );
    }

    fn assigning_route(weight: &str) -> Route {
        route(&format!(
            r#"{{"host": "a.example.com", "primary": {{}}, "canary": {{}}, "canary_weight": {weight},
                "pin": [{{"header": "traffic", "value": "test", "to": "canary"}}],
                "sticky": {{"cookie": "uid", "assign": {{}}}}}}"#
        ))
    }

    fn no_key() -> Option<[u8; sticky_cookie::KEY_BYTES]> {
        panic!("a key made where the decision should not need one")
    }

    #[test]
    fn a_request_without_the_cookie_gets_a_new_key_and_is_decided_with_it() {
        let route = assigning_route("50");
        let random = *b"sixteen  bytes!!";
        let expected_key = sticky_cookie::new_key(random);
        for cookies in [None, Some(&b"other=1"[..]), Some(b"uid="), Some(b"uid=\"\"")] {
            let request = match cookies {
                Some(cookies) => FakeRequest::default().with("cookie", cookies),
                None => FakeRequest::default(),
            };
            let (decision, key) = decide_assigning(&route, &request, no_random, || Some(random));
            assert_eq!(key.as_ref(), Some(&expected_key), "{cookies:?}");
            let bucket = sticky_hash::bucket(b"a.example.com", expected_key.as_bytes());
            assert_eq!(decision.reason, Reason::Sticky { bucket });
            assert_eq!(decision.variant == Variant::Canary, bucket < 5_000);
        }
    }

    /// Without the host's random bytes a new user is split at random, as without `assign`, and
    /// gets no cookie; the next request tries again.
    #[test]
    fn without_random_bytes_from_the_host_the_request_is_random_and_gets_no_key() {
        for weight in ["0", "50", "100"] {
            let route = assigning_route(weight);
            for bucket in [0, 4_999, 5_000, 9_999] {
                let (decision, key) = decide_assigning(&route, &FakeRequest::default(), || bucket, || None);
                assert_eq!((decision.reason, key), (Reason::Random { bucket }, None));
                let expected = decide(&route, &FakeRequest::default(), || bucket);
                assert_eq!(decision.variant, expected.variant, "weight {weight}, bucket {bucket}");
            }
        }
    }

    #[test]
    fn a_request_with_the_cookie_or_a_pin_gets_no_new_key() {
        let route = assigning_route("50");
        let carried = FakeRequest::default().with("cookie", b"uid=alice");
        let (decision, key) = decide_assigning(&route, &carried, no_random, no_key);
        assert_eq!(key, None);
        assert_eq!(
            decision.reason,
            Reason::Sticky {
                bucket: sticky_hash::bucket(b"a.example.com", b"alice")
            }
        );
        let pinned = FakeRequest::default().with("traffic", b"test");
        let (decision, key) = decide_assigning(&route, &pinned, no_random, no_key);
        assert_eq!((decision.reason, key), (Reason::Pinned { rule: 0 }, None));
    }

    #[test]
    fn only_routes_that_assign_make_keys() {
        let plain = pinned_route("50");
        let (decision, key) = decide_assigning(&plain, &FakeRequest::default(), || 7, no_key);
        assert_eq!((decision.reason, key), (Reason::Random { bucket: 7 }, None));
        let by_cookie =
            route(r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 50, "sticky": {"cookie": "uid"}}"#);
        let (decision, key) = decide_assigning(&by_cookie, &FakeRequest::default(), || 7, no_key);
        assert_eq!((decision.reason, key), (Reason::Random { bucket: 7 }, None));
        // Without a generator (tools, which cannot know the key) such a request is random.
        let decision = decide(&assigning_route("50"), &FakeRequest::default(), || 7);
        assert_eq!(decision.reason, Reason::Random { bucket: 7 });
    }

    mod assigning_properties {
        use super::*;
        use crate::properties::check;
        use proptest::prelude::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        /// A user given a key is decided exactly as they are on every later request that brings
        /// it back, at the weight they arrived at and at every higher one.
        #[test]
        fn a_new_key_decides_as_the_same_key_carried_later() {
            check(
                (any::<[u8; sticky_cookie::KEY_BYTES]>(), 0..=10_000u16, 0..=10_000u16),
                |(random, weight, raised)| {
                    let mut route = assigning_route("0");
                    route.canary_basis_points = weight;
                    let (first, key) = decide_assigning(&route, &FakeRequest::default(), no_random, || Some(random));
                    let key = key.expect("a new key");
                    let cookie = format!("session=1; uid={key}");
                    let later = FakeRequest::default().with("cookie", cookie.as_bytes());
                    let (again, none) = decide_assigning(&route, &later, no_random, no_key);
                    prop_assert_eq!(&first, &again);
                    prop_assert_eq!(none, None);
                    route.canary_basis_points = weight.max(raised);
                    if first.variant == Variant::Canary {
                        prop_assert_eq!(decide(&route, &later, no_random).variant, Variant::Canary);
                    }
                    Ok(())
                },
            );
        }
    }

    /// `token_route` with `max_token_ttl_seconds` and the canary on a protected host of its own.
    fn guarded_route(max_ttl: u64) -> Route {
        let json = format!(
            r#"{{"max_token_ttl_seconds": {max_ttl}, "routes": [{{"host": "a.example.com",
                "primary": {{"host": "a-primary.example.com"}}, "canary": {{"host": "a-canary.example.com"}},
                "canary_weight": 0, "release_hosts": "token",
                "pin": [{{"token": {{"header": "x-canary-token"}}}}, {{"token": {{"cookie": "canary-token"}}}}]}}]}}"#
        );
        let config = Config::from_json_with_env(json.as_bytes(), |_| Some(KEY.to_owned())).expect("valid");
        config.routes.into_iter().next().expect("one route")
    }

    #[test]
    fn a_token_valid_for_longer_than_the_maximum_lifetime_does_not_pin() {
        let route = guarded_route(3_600);
        let within = at_now().with("x-canary-token", &token("a.example.com", Variant::Canary, NOW + 3_600));
        assert_eq!(decide(&route, &within, || 9_999).variant, Variant::Canary);
        let too_long = at_now().with("x-canary-token", &token("a.example.com", Variant::Canary, NOW + 3_601));
        let decision = decide(&route, &too_long, || 9_999);
        assert_eq!(decision.variant, Variant::Primary);
        assert_eq!(
            decision.rejected_tokens,
            [RejectedToken {
                rule: 0,
                reason: TokenRejection::TooLong {
                    expiry: NOW + 3_601,
                    max_ttl_seconds: 3_600
                }
            }]
        );
        // Without the limit the same token pins.
        assert_eq!(decide(&token_route("0"), &too_long, || 9_999).variant, Variant::Canary);
    }

    #[test]
    fn the_clock_is_read_once_for_several_tokens() {
        let route = guarded_route(60);
        let long = token("a.example.com", Variant::Canary, NOW + 600);
        let request = at_now()
            .with("x-canary-token", &long)
            .with("cookie", &[b"canary-token=", &long[..]].concat());
        assert_eq!(decide(&route, &request, || 9_999).rejected_tokens.len(), 2);
        assert_eq!(request.reads.borrow().iter().filter(|read| *read == "clock").count(), 1);
    }

    #[test]
    fn a_release_host_admits_only_a_valid_token_for_that_release() {
        let route = guarded_route(3_600);
        let canary = token("a.example.com", Variant::Canary, NOW + 60);
        let with_header = at_now().with("x-canary-token", &canary);
        assert_eq!(admit_to_release(&route, Variant::Canary, &with_header), Ok(0));
        let in_cookie = at_now().with("cookie", &[b"x=1; canary-token=", &canary[..]].concat());
        assert_eq!(admit_to_release(&route, Variant::Canary, &in_cookie), Ok(1));
        // A genuine canary token does not open primary's host.
        assert_eq!(admit_to_release(&route, Variant::Primary, &with_header), Err(vec![]));
        assert_eq!(admit_to_release(&route, Variant::Canary, &at_now()), Err(vec![]));
        // A plain pin value is no way in.
        let plain = at_now().with("traffic", b"test").with("x-canary-token", b"test");
        assert_eq!(
            admit_to_release(&route, Variant::Canary, &plain),
            Err(vec![RejectedToken {
                rule: 0,
                reason: TokenRejection::Malformed
            }])
        );
        for (bad, reason) in [
            (
                token("a.example.com", Variant::Canary, NOW),
                TokenRejection::Expired { expiry: NOW },
            ),
            (
                token("a-canary.example.com", Variant::Canary, NOW + 60),
                TokenRejection::BadSignature,
            ),
            (
                token("a.example.com", Variant::Canary, NOW + 7_200),
                TokenRejection::TooLong {
                    expiry: NOW + 7_200,
                    max_ttl_seconds: 3_600,
                },
            ),
        ] {
            let request = at_now().with("x-canary-token", &bad);
            assert_eq!(
                admit_to_release(&route, Variant::Canary, &request),
                Err(vec![RejectedToken { rule: 0, reason }])
            );
        }
    }

    #[test]
    fn many_cookie_rules_read_their_cookies_from_one_parse() {
        let route = route(
            r#"{"host": "a", "primary": {}, "canary": {}, "canary_weight": 0,
                "pin": [{"cookie": "p1", "value": "x", "to": "canary"}, {"cookie": "p2", "value": "x", "to": "canary"},
                        {"cookie": "p1", "value": "y", "to": "canary"}, {"cookie": "p3", "value": "\"q\"", "to": "canary"}],
                "sticky": {"cookie": "uid"}}"#,
        );
        assert_eq!(route.cookie_names, ["p1", "p2", "p3", "uid"]);
        let filler = "f=".to_owned() + &"v".repeat(100);
        let mut cookies = vec![filler.as_str(); 500];
        cookies.extend(["p2=no", "p1=y", "p1=x", "uid = bob "]);
        let request = FakeRequest::default().with("cookie", cookies.join("; ").as_bytes());
        // The first p1 (y) decides: rule 2.
        assert_eq!(decide(&route, &request, no_random).reason, Reason::Pinned { rule: 2 });
        let request = FakeRequest::default().with("cookie", b"uid=bob; p3=\"q\"");
        assert_eq!(
            decide(&route, &request, no_random).reason,
            Reason::Sticky {
                bucket: sticky_hash::bucket(b"a", b"bob")
            }
        );
        let request = FakeRequest::default().with("cookie", b"uid=bob; p3=\"\"q\"\"");
        assert_eq!(decide(&route, &request, no_random).reason, Reason::Pinned { rule: 3 });
    }
}
