"""Authority mode needs the public host and both release hosts in one route table. Istio gives
each HTTPS Gateway server its own route table, so when the public host has a server (and a
certificate) of its own, a request the filter rewrites to a release host finds no virtual host for
it and ends in a 404. The shipped Gateway serves all three hosts from one server; the fixture
tests/fixtures/split-gateway.yaml splits them. Header mode works behind either."""

import pathlib

import pytest

from conftest import HEADER_MODE_CANARY_VALUE, envoy_from_istio, header_mode, release_token
from harness import DECISION_HEADER, Client
from istio_routes import (HELM_CHART_TARGET_PORTS, gateways_of_plugin, load_manifests, of_kind, route_table_serving,
                          route_tables, wasm_plugin)

SPLIT_GATEWAY_DIR = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
SHIPPED = load_manifests()
SPLIT = [doc for doc in SHIPPED if doc["kind"] != "Gateway"] + load_manifests(SPLIT_GATEWAY_DIR)
PLUGIN_CONFIG = wasm_plugin(SHIPPED)["spec"]["pluginConfig"]
ROUTE = PLUGIN_CONFIG["routes"][0]
PUBLIC, PRIMARY_HOST, CANARY_HOST = ROUTE["host"], ROUTE["primary"]["host"], ROUTE["canary"]["host"]
RELEASE_HEADER = "x-release"


HOSTS = {PUBLIC, PRIMARY_HOST, CANARY_HOST}
# The port-80 server's httpsRedirect adds a virtual host for each of its `hosts` entries as
# written, namespace included, beside the ones its VirtualServices give (buildGatewayHTTPRouteConfig):
# no request's :authority has a slash, so they never match, but Istio renders them.
REDIRECT_ONLY = {f"models/{host}" for host in HOSTS}


def test_the_translation_renders_a_route_table_per_https_server_and_one_for_http():
    assert len(of_kind(SPLIT, "Gateway")) == 1
    tables = {name: table.domains() for name, table in route_tables(SPLIT, gateways_of_plugin(SPLIT)).items()}
    assert tables == {
        "http.8080": HOSTS | REDIRECT_ONLY,
        "https.443.https-public.models-gateway.models": {PUBLIC},
        "https.443.https-releases.models-gateway.models": {PRIMARY_HOST, CANARY_HOST},
    }
    # The shipped Gateway: one HTTPS server, one table for all three hosts; HTTP tables are named
    # after the port listened on, HTTPS ones after the Gateway's.
    shipped = route_tables(SHIPPED, gateways_of_plugin(SHIPPED))
    assert {name: (table.domains(), table.listener_port) for name, table in shipped.items()} == {
        "http.8080": (HOSTS | REDIRECT_ONLY, 8080),
        "https.443.https.models-gateway.models": (HOSTS, 8443),
    }
    on_the_chart = route_tables(SHIPPED, gateways_of_plugin(SHIPPED), HELM_CHART_TARGET_PORTS)
    assert {name: table.listener_port for name, table in on_the_chart.items()} == {
        "http.80": 80, "https.443.https.models-gateway.models": 443}
    # Plain HTTP redirects to HTTPS, as httpsRedirect asks.
    assert {vhost.get("require_tls") for vhost in shipped["http.8080"].virtual_hosts} == {"ALL"}


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
    assert releases.get(PRIMARY_HOST, [release_token(ROUTE, "primary")]).upstream == "primary"
    assert releases.get(CANARY_HOST, [release_token(ROUTE, "canary")]).upstream == "canary"


def test_header_mode_behind_a_split_gateway_routes_on_the_public_hosts_own_table(upstreams, gateways):
    manifests, config = header_mode(SPLIT, PLUGIN_CONFIG)
    config["routes"][0]["canary_weight"] = 10  # a rollout step: istio/ ships 0
    table = route_table_serving(manifests, gateways_of_plugin(manifests), PUBLIC)
    public = gateways(envoy_from_istio(upstreams, manifests=manifests, plugin_config=config, route_table=table))
    for pin, release, value in ((("traffic", "test"), "canary", HEADER_MODE_CANARY_VALUE),
                                (("x-canary", "never"), "primary", "primary")):
        response = public.get(PUBLIC, [pin])
        assert (response.status, response.upstream, response.headers[DECISION_HEADER]) == (200, release, value)
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
