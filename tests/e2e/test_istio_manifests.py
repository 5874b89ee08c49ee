"""The module with the shipped WasmPlugin config, in front of the routes the shipped
VirtualServices render to: what users deploy, with echo upstreams standing in for the models."""

import copy
import math

import pytest

from conftest import envoy_from_istio, header_mode, release_token
from harness import DECISION_HEADER, Client, EchoUpstream, Envoy
from istio_routes import (HELM_CHART_TARGET_PORTS, ISTIOCTL_TARGET_PORTS, gateways_of_plugin, load_manifests, of_kind,
                          route_table_serving, route_tables, wasm_plugin)
from sticky_hash import is_canary

MANIFESTS = load_manifests()
ROUTE = wasm_plugin(MANIFESTS)["spec"]["pluginConfig"]["routes"][0]
PUBLIC, PRIMARY_HOST, CANARY_HOST = ROUTE["host"], ROUTE["primary"]["host"], ROUTE["canary"]["host"]
RELEASE_HEADER = "x-release"  # the response header the VirtualServices set
# What a tester sends to reach each release's own host: istio/ protects them (release_hosts: token).
TOKEN_FOR = {release: [release_token(ROUTE, release)] for release in ("primary", "canary")}
# istio/ ships canary_weight 0 (the first deploy); most tests run at a rollout's first step.
STEP_WEIGHT = 10


def at_weight(weight) -> dict:
    config = copy.deepcopy(wasm_plugin(MANIFESTS)["spec"]["pluginConfig"])
    config["routes"][0]["canary_weight"] = weight
    return config


@pytest.fixture
def deployed(upstreams):
    envoy = envoy_from_istio(upstreams, plugin_config=at_weight(STEP_WEIGHT)).start()
    yield Client(envoy.port)
    envoy.stop()


def test_the_first_deploy_sends_only_pinned_requests_to_the_canary(upstreams):
    assert ROUTE["canary_weight"] == 0
    with envoy_from_istio(upstreams) as envoy:
        client = Client(envoy.port)
        assert {client.get(PUBLIC).upstream for _ in range(200)} == {"primary"}
        assert {client.get(PUBLIC, [("x-user-id", str(user))]).upstream for user in range(200)} == {"primary"}
        assert {client.get(PUBLIC, [("traffic", "test")]).upstream for _ in range(20)} == {"canary"}
        assert client.get(CANARY_HOST, TOKEN_FOR["canary"]).upstream == "canary"


def test_public_host_splits_at_a_rollout_steps_weight(deployed):
    requests, canary = 3000, 0
    for _ in range(requests):
        response = deployed.get(PUBLIC)
        expected_host = CANARY_HOST if response.upstream == "canary" else PRIMARY_HOST
        assert response.headers["host"] == expected_host
        assert response.headers[DECISION_HEADER] == response.upstream
        canary += response.upstream == "canary"
    p = STEP_WEIGHT / 100
    assert abs(canary - requests * p) <= 4.5 * math.sqrt(requests * p * (1 - p))


def test_test_traffic_is_pinned_and_release_hosts_reach_their_release(deployed):
    for _ in range(20):
        assert deployed.get(PUBLIC, [("traffic", "test")]).upstream == "canary"
        assert deployed.get(PUBLIC, [("x-canary", "never")]).upstream == "primary"
        assert deployed.get(PRIMARY_HOST, TOKEN_FOR["primary"]).upstream == "primary"
        assert deployed.get(CANARY_HOST, TOKEN_FOR["canary"]).upstream == "canary"

    # A client's own decision header changes nothing: the sticky key decides.
    expected = "canary" if is_canary(PUBLIC.encode(), b"user-3", STEP_WEIGHT) else "primary"
    for _ in range(20):
        response = deployed.get(PUBLIC, [(DECISION_HEADER, "canary"), (DECISION_HEADER, "primary"), ("x-user-id", "user-3")])
        assert response.upstream == response.headers[DECISION_HEADER] == expected


def test_a_release_host_needs_a_token_for_that_release(deployed):
    assert ROUTE["release_hosts"] == "token"
    refused = (403, None)
    for _ in range(5):
        for host, release, other in ((CANARY_HOST, "canary", "primary"), (PRIMARY_HOST, "primary", "canary")):
            response = deployed.get(host)
            assert (response.status, response.upstream) == refused, host
            # The pins that work on the public host do not open a release host.
            assert (deployed.get(host, [("traffic", "test"), ("x-canary", "always")]).status, host) == (403, host)
            response = deployed.get(host, TOKEN_FOR[release])
            assert (response.status, response.upstream) == (200, release), host
            assert response.response_header(RELEASE_HEADER) == [release]
            response = deployed.get(host, TOKEN_FOR[other])
            assert (response.status, response.upstream) == refused, host
    expired = [release_token(ROUTE, "canary", ttl=-1)]
    assert deployed.get(CANARY_HOST, expired).status == 403


def test_sticky_users_stay_put(deployed):
    first = {u: deployed.get(PUBLIC, [("x-user-id", u)]).upstream for u in map(str, range(200))}
    assert {u: deployed.get(PUBLIC, [("x-user-id", u)]).upstream for u in first} == first
    assert "canary" in first.values() and "primary" in first.values()


def test_without_the_filter_the_public_host_goes_to_primary(upstreams):
    # What a FAIL_OPEN plugin leaves when its module cannot be loaded.
    with envoy_from_istio(upstreams, with_filter=False) as envoy:
        client = Client(envoy.port)
        for _ in range(50):
            response = client.get(PUBLIC, [("x-user-id", "u"), ("traffic", "test")])
            assert response.upstream == "primary"
            assert DECISION_HEADER not in response.headers
            assert response.response_header(RELEASE_HEADER) == ["primary"]
        # The filter's release host protection is bypassed too: the canary's host is open again.
        assert client.get(CANARY_HOST).upstream == "canary"


def test_every_response_names_the_release_that_answered(deployed):
    for host, release in ((PRIMARY_HOST, "primary"), (CANARY_HOST, "canary")):
        response = deployed.get(host, TOKEN_FOR[release])
        assert (response.upstream, response.response_header(RELEASE_HEADER)) == (release, [release])
    assert deployed.get(PUBLIC, [("traffic", "test")]).response_header(RELEASE_HEADER) == ["canary"]
    assert deployed.get(PUBLIC, [("x-canary", "never")]).response_header(RELEASE_HEADER) == ["primary"]
    seen = set()
    for user in map(str, range(100)):
        response = deployed.get(PUBLIC, [("x-user-id", user)])
        assert response.response_header(RELEASE_HEADER) == [response.upstream]
        seen.add(response.upstream)
    assert seen == {"primary", "canary"}


def test_the_public_hosts_own_routes_name_the_release(upstreams):
    # Header mode: the filter only sets the decision header and the public host's routes choose,
    # so the header comes from the public host's canary route and its default primary route.
    manifests, config = header_mode(MANIFESTS, wasm_plugin(MANIFESTS)["spec"]["pluginConfig"])
    with envoy_from_istio(upstreams, plugin_config=config, manifests=manifests) as envoy:
        client = Client(envoy.port)
        for pin, release in ((("traffic", "test"), "canary"), (("x-canary", "never"), "primary")):
            response = client.get(PUBLIC, [pin])
            assert response.headers["host"] == PUBLIC  # not rewritten: the public host's route served it
            assert (response.upstream, response.response_header(RELEASE_HEADER)) == (release, [release])


def test_the_release_header_replaces_one_the_model_server_sends():
    servers = {name: EchoUpstream(name, [(RELEASE_HEADER, "from-the-model-server")]) for name in ("primary", "canary")}
    try:
        with envoy_from_istio({name: server.port for name, server in servers.items()}) as envoy:
            client = Client(envoy.port)
            for host, headers, release in ((PRIMARY_HOST, TOKEN_FOR["primary"], "primary"),
                                           (CANARY_HOST, TOKEN_FOR["canary"], "canary"),
                                           (PUBLIC, [("traffic", "test")], "canary")):
                assert client.get(host, headers).response_header(RELEASE_HEADER) == [release]
    finally:
        for server in servers.values():
            server.close()


def test_the_translation_refuses_header_operations_it_does_not_render():
    manifests = copy.deepcopy(MANIFESTS)
    (public,) = [vs for vs in of_kind(manifests, "VirtualService") if vs["spec"]["hosts"] == [PUBLIC]]
    public["spec"]["http"][0]["headers"]["response"]["add"] = {RELEASE_HEADER: "canary"}
    with pytest.raises(ValueError, match=r"models/sklearn.http\[0\].headers: only headers.response.set is supported"):
        route_tables(manifests, gateways_of_plugin(manifests))


def plain_http(upstreams: dict, manifests: list[dict], target_ports: dict[int, int] = ISTIOCTL_TARGET_PORTS) -> Envoy:
    """The gateway's port-80 listener as Istio renders `manifests`: the filter only if the
    WasmPlugin's match selects its port."""
    table = route_table_serving(manifests, gateways_of_plugin(manifests), PUBLIC, "HTTP", target_ports)
    return envoy_from_istio(upstreams, manifests=manifests, route_table=table)


USERS = [[("traffic", "test")], [("x-canary", "never")]] + [[("x-user-id", f"user-{i}")] for i in range(20)]


@pytest.mark.parametrize("target_ports", [ISTIOCTL_TARGET_PORTS, HELM_CHART_TARGET_PORTS],
                         ids=["istioctl istio-ingressgateway", "istio/gateway chart"])
def test_plain_http_on_the_public_host_redirects_to_the_public_host(upstreams, target_ports):
    with plain_http(upstreams, MANIFESTS, target_ports) as envoy:
        client = Client(envoy.port)
        for headers in USERS:
            response = client.get(PUBLIC, headers, path="/v1/models/sklearn:predict")
            assert (response.status, response.response_header("location")) == (
                301, [f"https://{PUBLIC}/v1/models/sklearn:predict"]), headers
        for host in (PRIMARY_HOST, CANARY_HOST):
            assert client.get(host).response_header("location") == [f"https://{host}/"]
        assert envoy.stats("canary_split") == {}  # the filter is not on this listener


def test_without_a_match_the_plugin_redirects_plain_http_to_a_release_host(upstreams):
    # What the deployment shipped before: the plugin on every listener, port 80 included, where
    # Envoy builds the redirect from the :authority the filter rewrote.
    manifests = copy.deepcopy(MANIFESTS)
    wasm_plugin(manifests)["spec"].pop("match")
    with plain_http(upstreams, manifests) as envoy:
        client = Client(envoy.port)
        assert client.get(PUBLIC, [("traffic", "test")]).response_header("location") == [f"https://{CANARY_HOST}/"]
        assert client.get(PUBLIC, [("x-canary", "never")]).response_header("location") == [f"https://{PRIMARY_HOST}/"]
