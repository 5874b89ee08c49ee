"""The filter's stats, as Prometheus sees them: a real Prometheus scrapes the gateway's
`/stats/prometheus` and the counts of a known mix of requests come back through its HTTP API,
with host, split_release and reason as labels (Envoy extracts them from the stat names with the
bootstrap's `stats_tags`, as Istio does with `extraStatTags`). Also: the stats Istio's own stats
matcher keeps, and what they look like without the tags."""

import json

import pytest

from harness import DECISION_HEADER, ROOT, Client, Envoy, bootstrap, catch_all_route, split_routes
from prometheus_server import Prometheus

PUBLIC = "shop.example.com"
OTHER_SPLIT = "api.example.com"
UNSPLIT = "elsewhere.example.com"

CONFIG = {"routes": [
    {"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": 25,
     "pin": [{"header": "traffic", "value": "test", "to": "canary"},
             {"cookie": "canary", "value": "never", "to": "primary"}],
     "sticky": {"header": "x-user-id"}, "guard": {}},
    {"host": OTHER_SPLIT, "primary": {}, "canary": {}, "canary_weight": 12.34},
]}


@pytest.fixture(scope="module")
def gateway_and_prometheus(upstreams):
    hosts = split_routes(PUBLIC, None, None) + split_routes(OTHER_SPLIT, None, None) + [catch_all_route()]
    with Envoy(bootstrap(json.dumps(CONFIG), upstreams, hosts), concurrency=2) as envoy:
        prometheus = Prometheus([envoy.admin_address()]).start()
        try:
            yield Client(envoy.port), prometheus
        finally:
            prometheus.stop()


def requests_by(prometheus: Prometheus, **labels) -> dict[tuple[str, str, str], int]:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {(s["metric"]["host"], s["metric"]["split_release"], s["metric"]["reason"]): int(float(s["value"][1]))
            for s in prometheus.query(f"canary_split_requests_total{{{selector}}}")}


def test_a_known_mix_of_requests_is_counted_by_host_split_release_and_reason(gateway_and_prometheus):
    client, prometheus = gateway_and_prometheus
    sticky_users = [f"user-{n}" for n in range(40)]
    canary_users = 0
    for _ in range(7):
        client.get(PUBLIC, [("traffic", "test")])
    for _ in range(5):
        client.get(PUBLIC, [("cookie", "canary=never")])
    for user in sticky_users:
        canary_users += client.get(PUBLIC, [("x-user-id", user)]).upstream == "canary"
    random_canary = sum(client.get(PUBLIC).upstream == "canary" for _ in range(60))
    for _ in range(3):  # a client choosing a release itself: overwritten, and counted
        client.get(PUBLIC, [(DECISION_HEADER, "canary"), ("traffic", "test")])
    for _ in range(4):  # and on a host that is not split: removed, and counted
        client.get(UNSPLIT, [(DECISION_HEADER, "canary")])
    client.get(OTHER_SPLIT)

    expected = {
        (PUBLIC, "canary", "pin"): 7 + 3,
        (PUBLIC, "primary", "pin"): 5,
        (PUBLIC, "canary", "sticky"): canary_users,
        (PUBLIC, "primary", "sticky"): len(sticky_users) - canary_users,
        (PUBLIC, "canary", "random"): random_canary,
        (PUBLIC, "primary", "random"): 60 - random_canary,
    }
    counted, spoofed = {}, {}

    def all_counted():
        # Each query reads its own latest scrape: wait for one that has the last request too.
        counted.update(requests_by(prometheus, host=PUBLIC))
        spoofed.update({s["metric"]["host"]: int(float(s["value"][1]))
                        for s in prometheus.query("canary_split_spoofed_decision_headers_total")})
        return ({k: v for k, v in counted.items() if v} == {k: v for k, v in expected.items() if v}
                and sum(requests_by(prometheus, host=OTHER_SPLIT).values()) == 1
                and spoofed == {PUBLIC: 3, OTHER_SPLIT: 0, "*": 4})

    prometheus.wait_for(all_counted, what=lambda: f"expected {expected}, last seen {counted}, spoofed {spoofed}")
    # Every counter exists from the start, zero or not: dashboards see a series per release; a
    # guarded host's has primary's requests sent by a tripped guard too.
    assert set(requests_by(prometheus, host=PUBLIC)) == {
        (PUBLIC, release, reason) for release in ("primary", "canary") for reason in ("pin", "sticky", "random")
    } | {(PUBLIC, "primary", "guard")}
    assert 0 < canary_users < len(sticky_users) and 0 < random_canary < 60


def test_the_configured_weights_and_the_accepted_configuration_are_reported(gateway_and_prometheus):
    _, prometheus = gateway_and_prometheus
    prometheus.wait_for(lambda: prometheus.query("canary_split_canary_weight_basis_points"))
    weights = {s["metric"]["host"]: float(s["value"][1])
               for s in prometheus.query("canary_split_canary_weight_basis_points")}
    assert weights == {PUBLIC: 2500, OTHER_SPLIT: 1234}
    # Every VM loads the configuration: 4 with two workers (measured: Envoy also configures a VM on
    # the main thread, and checks the configuration in one more).
    accepted = prometheus.query("canary_split_configs_accepted_total")
    assert [float(s["value"][1]) for s in accepted] == [4]
    refused = prometheus.query("canary_split_configs_refused_total")
    assert [float(s["value"][1]) for s in refused] in ([], [0])


def test_the_dashboards_filter_queries_return_data(gateway_and_prometheus):
    """The Grafana dashboard's queries on the filter's stats find series in a real Prometheus."""
    client, prometheus = gateway_and_prometheus
    for _ in range(20):
        client.get(PUBLIC)
    dashboard = json.loads((ROOT / "istio" / "grafana-dashboard.json").read_text())
    queries = [target["expr"].replace("$host", PUBLIC) for panel in dashboard["panels"]
               for target in panel["targets"] if "canary_split_" in target["expr"]]
    assert len(queries) >= 4
    for query in queries:
        prometheus.wait_for(lambda: prometheus.query(query), what=f"no result for {query}")


# The stats matcher Istio gives every proxy when nothing asks for more: the inclusion prefixes,
# suffixes and regex it always adds (istio/istio pkg/bootstrap/config.go,
# requiredEnvoyStatsMatcherInclusionPrefixes and the rest; the rbac suffixes only) and the ones its
# bootstrap template lists (tools/packaging/common/envoy_bootstrap.json).
ISTIO_PREFIXES = ["reporter=", "cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm",
                  "component", "istio"]
ISTIO_STATS_MATCHER = {"inclusion_list": {"patterns": (
    [{"prefix": prefix} for prefix in ISTIO_PREFIXES]
    + [{"suffix": suffix} for suffix in ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied")]
    + [{"safe_regex": {"regex": r"vhost\..*\.route\..*"}}])}}


def prometheus_text(config: dict) -> str:
    """The gateway's /stats/prometheus after one request pinned to the canary."""
    with Envoy(config) as envoy:
        Client(envoy.port).get(PUBLIC, [("traffic", "test")])
        status, body = envoy.admin("/stats/prometheus")
        assert status == 200
        return body


def gateway_config(upstreams, stats_config: dict) -> dict:
    config = bootstrap(json.dumps(CONFIG), upstreams, split_routes(PUBLIC, None, None) + [catch_all_route()])
    config["stats_config"] = stats_config
    return config


def test_istios_own_stats_matcher_keeps_the_filters_stats(upstreams):
    """No proxyStatsMatcher is needed: Envoy stores Wasm stats as `wasmcustom.<name>`, and Istio
    always keeps stats whose names start with `wasm`."""
    tags = bootstrap(None, upstreams, [])["stats_config"]["stats_tags"]
    kept = prometheus_text(gateway_config(upstreams, {"stats_tags": tags, "stats_matcher": ISTIO_STATS_MATCHER}))
    counted = f'canary_split_requests_total{{host="{PUBLIC}",split_release="canary",reason="pin"}} 1'
    assert counted in kept
    # The matcher does drop what it does not include: without `wasm` the filter's stats are gone.
    without_wasm = {"inclusion_list": {"patterns": [p for p in ISTIO_STATS_MATCHER["inclusion_list"]["patterns"]
                                                    if p != {"prefix": "wasm"}]}}
    dropped = prometheus_text(gateway_config(upstreams, {"stats_tags": tags, "stats_matcher": without_wasm}))
    assert "canary_split_" not in dropped and "envoy_server_" in dropped


def test_without_the_stats_tags_the_labels_end_up_in_metric_names(upstreams):
    """What the filter's stats look like on a gateway without `extraStatTags`."""
    text = prometheus_text(gateway_config(upstreams, {}))
    assert not [line for line in text.splitlines() if line.startswith("canary_split_requests_total")]
    name = f"host___{PUBLIC.replace('.', '_')}___split_release___canary___reason___pin___canary_split_requests_total"
    assert f"\n{name}{{}} 1\n" in text
