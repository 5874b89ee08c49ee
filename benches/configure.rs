//! Time to configure: `Config::from_json` for 1, 100 and 10,000 routes. Each Envoy worker's VM
//! does this once per configuration push (target: 10,000 routes under 50 ms).

use std::time::Duration;

use canary_split::config::Config;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod fixtures;

fn configure(c: &mut Criterion) {
    let mut group = c.benchmark_group("configure");
    group.sample_size(10);
    for routes in [1, 100, 10_000] {
        let json = fixtures::config_json("shop.example.com", routes, true);
        group.throughput(Throughput::Elements(routes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(routes), &json, |b, json| {
            b.iter(|| Config::from_json(json.as_bytes()).map(|config| config.routes.len()))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = configure
}
criterion_main!(benches);
