"""Authority mode needs the public host and both release hosts in one route table. Istio gives
each HTTPS Gateway server its own route table, so when the public host has a server (and a
certificate) of its own, a request the filter rewrites to a release host finds no virtual host for
it and ends in a 404. The shipped Gateway serves all three hosts from one server; the fixture
tests/fixtures/split-gateway.yaml splits them. Header mode works behind either."""

import copy
import pathlib

import pytest

from conftest import envoy_from_istio
from harness import DECISION_HEADER, Client
from istio_routes import gateways_of_plugin, load_manifests, of_kind, route_table_serving, route_tables, wasm_plugin

SPLIT_GATEWAY_DIR = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
SHIPPED = load_manifests()
SPLIT = [doc for doc in SHIPPED if doc["kind"] != "Gateway"] + load_manifests(SPLIT_GATEWAY_DIR)
PLUGIN_CONFIG = wasm_plugin(SHIPPED)["spec"]["pluginConfig"]
ROUTE = PLUGIN_CONFIG["routes"][0]
PUBLIC, PRIMARY_HOST, CANARY_HOST = ROUTE["host"], ROUTE["primary"]["host"], ROUTE["canary"]["host"]
RELEASE_HEADER = "x-release"


def header_mode(config: dict) -> dict:
    config = copy.deepcopy(config)
    config["routes"][0].update(primary={}, canary={})
    return config


def test_the_translation_renders_a_route_table_per_https_server_and_one_for_http():
    assert len(of_kind(SPLIT, "Gateway")) == 1
    tables = {name: table.domains() for name, table in route_tables(SPLIT, gateways_of_plugin(SPLIT)).items()}
    assert tables == {
        "http.80": {PUBLIC, PRIMARY_HOST, CANARY_HOST},
        "https.443.https-public.models-gateway.models": {PUBLIC},
        "https.443.https-releases.models-gateway.models": {PRIMARY_HOST, CANARY_HOST},
    }
    # The shipped Gateway: one HTTPS server, one table for all three hosts.
    shipped = route_tables(SHIPPED, gateways_of_plugin(SHIPPED))
    assert {name: table.domains() for name, table in shipped.items()} == {
        "http.80": {PUBLIC, PRIMARY_HOST, CANARY_HOST},
        "https.443.https.models-gateway.models": {PUBLIC, PRIMARY_HOST, CANARY_HOST},
    }
    # Plain HTTP redirects to HTTPS, as httpsRedirect asks.
    assert {vhost.get("require_tls") for vhost in shipped["http.80"].virtual_hosts} == {"ALL"}


@pytest.fixture
def split_gateway(upstreams, gateways):
    """Envoys serving the split Gateway's two HTTPS route tables (TLS itself left out: which table a
    connection uses is fixed once its server name picked the filter chain)."""

    def start(table_host: str, plugin_config: dict = PLUGIN_CONFIG) -> Client:
        table = route_table_serving(SPLIT, gateways_of_plugin(SPLIT), table_host)
        return gateways(envoy_from_istio(upstreams, manifests=SPLIT, plugin_config=plugin_config, route_table=table))

    return start


def test_authority_mode_behind_a_split_gateway_ends_in_404(split_gateway):
    public = split_gateway(PUBLIC)
    requests = [[("traffic", "test")], [("x-canary", "never")]] + [[("x-user-id", f"user-{i}")] for i in range(50)]
    for headers in requests:
        response = public.get(PUBLIC, headers)
        assert (response.status, response.upstream) == (404, None), headers
    # Every request was rewritten to a release host that this route table does not hold.
    assert public.envoy.stats("^http\\.gateway\\.no_route$") == {"http.gateway.no_route": len(requests)}
    # The release hosts work on their own server.
    releases = split_gateway(PRIMARY_HOST)
    assert releases.get(PRIMARY_HOST).upstream == "primary"
    assert releases.get(CANARY_HOST).upstream == "canary"


def test_header_mode_behind_a_split_gateway_routes_on_the_public_hosts_own_table(split_gateway):
    config = header_mode(PLUGIN_CONFIG)
    config["routes"][0]["canary_weight"] = 10  # a rollout step: istio/ ships 0
    public = split_gateway(PUBLIC, config)
    for pin, release in ((("traffic", "test"), "canary"), (("x-canary", "never"), "primary")):
        response = public.get(PUBLIC, [pin])
        assert (response.status, response.upstream, response.headers[DECISION_HEADER]) == (200, release, release)
        assert response.headers["host"] == PUBLIC
        assert response.response_header(RELEASE_HEADER) == [release]
    seen = {public.get(PUBLIC, [("x-user-id", f"user-{i}")]).upstream for i in range(100)}
    assert seen == {"primary", "canary"}


def test_authority_mode_behind_the_shipped_gateway_reaches_both_releases(upstreams):
    with envoy_from_istio(upstreams) as envoy:
        client = Client(envoy.port)
        assert client.get(PUBLIC, [("traffic", "test")]).upstream == "canary"
        assert client.get(PUBLIC, [("x-canary", "never")]).upstream == "primary"
        assert envoy.stats("^http\\.gateway\\.no_route$") == {"http.gateway.no_route": 0}
