//! The decision core per request, natively: route lookup by `:authority` plus `decide`, for a
//! pinned request, a sticky header and a random pick (target: under 200 ns), and for a request
//! whose signed pin token verifies or is refused (HMAC-SHA256; target: a few µs), and for 60 KiB
//! of cookies read by one cookie rule and by five (parsed once: five cost about what one does).

// A broken fixture must stop the run loudly, as in a test.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use canary_split::config::{Config, Variant};
use canary_split::decision::{decide, RequestView};
use canary_split::pin_token::PinKeys;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};

mod fixtures;

const HOST: &str = "shop.example.com";

/// Request headers as the glue reads them: every read hands back an owned copy of the value, as
/// `RequestView` asks.
struct Request<'a> {
    headers: &'a [(&'a str, &'a [u8])],
}

impl RequestView for Request<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_vec())
    }

    fn cookies(&self) -> Option<Vec<u8>> {
        self.header("cookie")
    }

    fn client_address(&self) -> Option<Vec<u8>> {
        None
    }

    fn unix_time(&self) -> u64 {
        NOW
    }
}

const NOW: u64 = 1_800_000_000;
/// 32 bytes of 0x42, in standard base64.
const KEY: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

fn bench_case(group: &mut BenchmarkGroup<WallTime>, name: &str, config: &Config, headers: &[(&str, &[u8])]) {
    let request = Request { headers };
    let authority = HOST.as_bytes();
    group.bench_function(name, |b| {
        b.iter(|| {
            // A fixed bucket stands in for the random draw: fastrand is a few instructions.
            let route = config.route_for_authority(black_box(authority));
            route.map(|route| decide(route, black_box(&request), || black_box(4_321)).variant)
        })
    });
}

fn decision(c: &mut Criterion) {
    // 100 routes: a busy gateway's worth; the lookup is a hash map, so the count barely matters.
    let sticky = Config::from_json(fixtures::config_json(HOST, 100, true).as_bytes()).expect("valid sticky config");
    let random = Config::from_json(fixtures::config_json(HOST, 100, false).as_bytes()).expect("valid random config");
    let mut group = c.benchmark_group("decision");
    bench_case(
        &mut group,
        "pinned",
        &sticky,
        &[("traffic", b"test"), ("x-user-id", b"user-42")],
    );
    bench_case(&mut group, "sticky_header", &sticky, &[("x-user-id", b"user-42")]);
    bench_case(&mut group, "random", &random, &[("x-user-id", b"user-42")]);

    // The same routes with a token pin ahead of the others on the benchmarked host.
    let with_token = fixtures::config_json(HOST, 100, true).replacen(
        r#""pin": ["#,
        r#""pin": [{"token": {"header": "x-canary-token"}}, "#,
        1,
    );
    let tokens =
        Config::from_json_with_env(with_token.as_bytes(), |_| Some(KEY.to_owned())).expect("valid token config");
    let keys = PinKeys::parse(KEY).expect("valid key");
    let valid = keys.mint(HOST, Variant::Canary, NOW + 3600).expect("minted");
    let forged = keys
        .mint("other.example.com", Variant::Canary, NOW + 3600)
        .expect("minted");
    bench_case(
        &mut group,
        "token_valid",
        &tokens,
        &[("x-canary-token", valid.as_bytes()), ("x-user-id", b"user-42")],
    );
    bench_case(
        &mut group,
        "token_bad_signature",
        &tokens,
        &[("x-canary-token", forged.as_bytes()), ("x-user-id", b"user-42")],
    );
    bench_case(&mut group, "token_absent", &tokens, &[("x-user-id", b"user-42")]);

    // The worst case of cookies: 60 KiB (Envoy's default header limit) in which no rule's cookie
    // is found, read for one cookie rule and for five. The cookies are parsed once for all the
    // route's names, so five rules should cost about what one does.
    let cookies = cookie_filler(60 * 1024);
    let one_rule = cookie_rules_config(1);
    let five_rules = cookie_rules_config(5);
    bench_case(
        &mut group,
        "cookies_60k_one_rule",
        &one_rule,
        &[("cookie", cookies.as_slice())],
    );
    bench_case(
        &mut group,
        "cookies_60k_five_rules",
        &five_rules,
        &[("cookie", cookies.as_slice())],
    );
    group.finish();
}

/// `bytes` of `name=value` pairs that no rule reads.
fn cookie_filler(bytes: usize) -> Vec<u8> {
    let mut filler = Vec::with_capacity(bytes + 64);
    let mut n = 0;
    while filler.len() < bytes {
        filler.extend_from_slice(format!("filler{n:05}={}; ", "x".repeat(40)).as_bytes());
        n += 1;
    }
    filler.truncate(bytes);
    filler
}

/// The benchmarked host with `rules` cookie rules: pins on `pin1`.., the last one the sticky cookie.
fn cookie_rules_config(rules: usize) -> Config {
    let pins: Vec<String> = (1..rules)
        .map(|n| format!(r#"{{"cookie": "pin{n}", "value": "always", "to": "canary"}}"#))
        .collect();
    let json = format!(
        r#"{{"routes": [{{"host": "{HOST}", "primary": {{}}, "canary": {{}}, "canary_weight": 12,
            "pin": [{}], "sticky": {{"cookie": "uid"}}}}]}}"#,
        pins.join(", ")
    );
    Config::from_json(json.as_bytes()).expect("valid cookie config")
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = decision
}
criterion_main!(benches);
