"""The module with the shipped WasmPlugin config, in front of the routes the shipped
VirtualServices render to: what users deploy, with echo upstreams standing in for the models."""

import math

import pytest

from conftest import envoy_from_istio
from harness import DECISION_HEADER, Client
from istio_routes import load_manifests, wasm_plugin
from sticky_hash import is_canary

ROUTE = wasm_plugin(load_manifests())["spec"]["pluginConfig"]["routes"][0]
PUBLIC, PRIMARY_HOST, CANARY_HOST = ROUTE["host"], ROUTE["primary"]["host"], ROUTE["canary"]["host"]


@pytest.fixture
def deployed(upstreams):
    envoy = envoy_from_istio(upstreams).start()
    yield Client(envoy.port)
    envoy.stop()


def test_public_host_splits_at_the_shipped_weight(deployed):
    requests, canary = 3000, 0
    for _ in range(requests):
        response = deployed.get(PUBLIC)
        expected_host = CANARY_HOST if response.upstream == "canary" else PRIMARY_HOST
        assert response.headers["host"] == expected_host
        assert response.headers[DECISION_HEADER] == response.upstream
        canary += response.upstream == "canary"
    p = ROUTE["canary_weight"] / 100
    assert abs(canary - requests * p) <= 4.5 * math.sqrt(requests * p * (1 - p))


def test_test_traffic_is_pinned_and_release_hosts_reach_their_release(deployed):
    for _ in range(20):
        assert deployed.get(PUBLIC, [("traffic", "test")]).upstream == "canary"
        assert deployed.get(PUBLIC, [("x-canary", "never")]).upstream == "primary"
        assert deployed.get(PRIMARY_HOST).upstream == "primary"
        assert deployed.get(CANARY_HOST).upstream == "canary"

    # A client's own decision header changes nothing: the sticky key decides.
    expected = "canary" if is_canary(PUBLIC.encode(), b"user-3", ROUTE["canary_weight"]) else "primary"
    for _ in range(20):
        response = deployed.get(PUBLIC, [(DECISION_HEADER, "canary"), (DECISION_HEADER, "primary"), ("x-user-id", "user-3")])
        assert response.upstream == response.headers[DECISION_HEADER] == expected


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
        assert client.get(CANARY_HOST).upstream == "canary"
