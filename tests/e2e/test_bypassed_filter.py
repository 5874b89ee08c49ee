"""With the shipped FAIL_OPEN, a gateway whose filter is bypassed (Istio could not fetch the
module and put an allow-all filter in its place; the VM crashed) sends every request to the
public host's own routes, and nothing removes a decision header a client sends. The deployment
must leave no way to the canary then but the canary's own host: in authority mode the public
host's VirtualService has no route on the decision header; in header mode it matches a value
clients cannot guess (`decision_values.canary`)."""

import copy
import pathlib
import tempfile
import time

import pytest

from conftest import HEADER_MODE_CANARY_VALUE, envoy_from_istio, header_mode
from harness import CRASH_HEADER, DECISION_HEADER, MODULE, Client, istio_fetch_failure_stand_in, publish_ecds
from istio_routes import gateways_of_plugin, load_manifests, of_kind, route_table_serving, wasm_plugin

SHIPPED = load_manifests()
# As shipped: the gateway has its pin keys (conftest's GATEWAY_PIN_KEY), so release_hosts: token
# and the token pin work until the filter is bypassed.
PLUGIN_CONFIG = copy.deepcopy(wasm_plugin(SHIPPED)["spec"]["pluginConfig"])
ROUTE = PLUGIN_CONFIG["routes"][0]
PUBLIC, CANARY_HOST = ROUTE["host"], ROUTE["canary"]["host"]
# What a client may try while the filter is bypassed.
SPOOFS = [[(DECISION_HEADER, "canary")], [(DECISION_HEADER, "Canary")], [(DECISION_HEADER, "canary"), ("traffic", "test")]]


@pytest.fixture(params=["module not fetched", "VM crashed"])
def bypass(request, upstreams, gateways):
    """Starts a gateway running `manifests` with the filter through ECDS and, once it routed a
    pinned request to the canary, bypasses the filter as FAIL_OPEN does: Istio's agent replaces a
    module it cannot fetch with an allow-all filter, and Envoy skips a filter whose VM crashed."""
    crashes = request.param == "VM crashed"
    module = request.getfixturevalue("crash_module") if crashes else MODULE

    def start(manifests: list[dict], plugin_config: dict) -> Client:
        ecds_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-ecds-")) / "canary-split.json"
        table = route_table_serving(manifests, gateways_of_plugin(manifests), PUBLIC)
        client = gateways(envoy_from_istio(upstreams, manifests=manifests, plugin_config=plugin_config,
                                           route_table=table, ecds_path=ecds_path, module=module))
        assert client.get(PUBLIC, [("traffic", "test")]).upstream == "canary"
        if crashes:
            assert client.get(PUBLIC, [CRASH_HEADER]).status == 503
        else:
            publish_ecds(ecds_path, istio_fetch_failure_stand_in(fail_open=True))
        deadline = time.monotonic() + 10
        while client.get(PUBLIC, [("traffic", "test")]).upstream == "canary":
            assert time.monotonic() < deadline, "the filter was never bypassed"
            time.sleep(0.05)
        return client

    return start


def reached(client: Client) -> set[str]:
    return {client.get(PUBLIC, headers).upstream for headers in SPOOFS}


def test_authority_mode_bypassed_leaves_the_canary_only_its_own_host(bypass):
    client = bypass(SHIPPED, PLUGIN_CONFIG)
    assert reached(client) == {"primary"}
    # Without a token: the shipped release_hosts: token lives in the filter, bypassed with it.
    assert client.get(CANARY_HOST).upstream == "canary"


def test_a_public_route_on_the_decision_header_is_a_way_in_while_the_filter_is_bypassed(bypass):
    # What the deployment shipped before: the public host also routed the decision header.
    manifests = copy.deepcopy(SHIPPED)
    (public,) = [vs for vs in of_kind(manifests, "VirtualService") if vs["spec"]["hosts"] == [PUBLIC]]
    canary_route = copy.deepcopy(public["spec"]["http"][0])
    canary_route.update(name="decided-canary", match=[{"headers": {DECISION_HEADER: {"exact": "canary"}}}])
    canary_route["route"][0]["destination"]["host"] = "sklearn-canary-predictor.models.svc.cluster.local"
    public["spec"]["http"].insert(0, canary_route)
    assert "canary" in reached(bypass(manifests, PLUGIN_CONFIG))


def test_header_mode_routes_on_a_value_clients_cannot_guess(upstreams, gateways):
    manifests, config = header_mode(SHIPPED, PLUGIN_CONFIG)
    table = route_table_serving(manifests, gateways_of_plugin(manifests), PUBLIC)
    client = gateways(envoy_from_istio(upstreams, manifests=manifests, plugin_config=config, route_table=table))
    pinned = client.get(PUBLIC, [("traffic", "test")])
    assert (pinned.upstream, pinned.headers["host"], pinned.headers[DECISION_HEADER]) == (
        "canary", PUBLIC, HEADER_MODE_CANARY_VALUE)
    assert client.get(PUBLIC, [("x-canary", "never")]).headers[DECISION_HEADER] == "primary"
    # A client's own value is overwritten while the filter runs.
    spoofed = client.get(PUBLIC, [(DECISION_HEADER, HEADER_MODE_CANARY_VALUE), ("x-canary", "never")])
    assert spoofed.upstream == "primary"


def test_header_mode_bypassed_sends_clients_that_set_the_header_to_primary(bypass):
    manifests, config = header_mode(SHIPPED, PLUGIN_CONFIG)
    client = bypass(manifests, config)
    assert reached(client) == {"primary"}
    assert client.get(CANARY_HOST).upstream == "canary"


def test_header_mode_with_a_guessable_value_is_a_way_in_while_the_filter_is_bypassed(bypass):
    value = "canary"  # the default decision value
    manifests, config = header_mode(SHIPPED, PLUGIN_CONFIG)
    manifests = copy.deepcopy(manifests)
    for vs in of_kind(manifests, "VirtualService"):
        for http in vs["spec"]["http"]:
            for match in http.get("match", []):
                match["headers"][DECISION_HEADER]["exact"] = value
    config["decision_values"] = {"canary": value}
    assert "canary" in reached(bypass(manifests, config))
