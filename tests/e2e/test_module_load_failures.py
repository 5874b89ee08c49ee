"""What the gateway does when the filter's module cannot be loaded (the file is missing, or its
bytes are not a Wasm module), under each of Envoy's failure policies, and when Istio's agent
cannot fetch it at all.

Envoy's failure policy (`failure_policy`, which Istio sets from the WasmPlugin's failStrategy;
the older `fail_open` flag means FAIL_OPEN) governs a VM that fails while it runs. A module that
cannot be loaded fails the plugin's config instead, whatever the policy: the config is rejected.
The route splits everything to canary, so a request the filter routes reaches canary and one it
never saw reaches primary, the public host's default route."""

import json
import pathlib
import tempfile
import time

import pytest

from harness import (DECISION_HEADER, Client, Envoy, bootstrap, catch_all_route, istio_fetch_failure_stand_in,
                     publish_ecds, split_routes, write_ecds)

PUBLIC = "shop.example.com"
POLICIES = ["FAIL_OPEN", "FAIL_CLOSED", "FAIL_RELOAD"]
CONFIG = json.dumps({"routes": [{"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": 100}]})


@pytest.fixture(params=["missing", "corrupt"])
def bad_module(request, tmp_path) -> tuple[pathlib.Path, str]:
    """A module path Envoy cannot load, and the log line that says why."""
    if request.param == "missing":
        return tmp_path / "canary_split.wasm", "Invalid path"
    corrupt = tmp_path / "canary_split.wasm"
    corrupt.write_bytes(b"\0asm\x01\0\0\0" + b"not a module" * 100)
    return corrupt, "Failed to parse corrupted Wasm module"


def hosts() -> list[dict]:
    return split_routes(PUBLIC, None, None) + [catch_all_route()]


def wait_for_log(envoy: Envoy, text: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while text not in envoy.log():
        assert time.monotonic() < deadline, f"{text!r} never reached the log:\n{envoy.log()}"
        time.sleep(0.05)


def assert_routed_by_the_filter(client: Client):
    response = client.get(PUBLIC, [(DECISION_HEADER, "primary")])
    assert (response.status, response.upstream, response.headers[DECISION_HEADER]) == (200, "canary", "canary")


@pytest.mark.parametrize("policy", POLICIES + ["legacy fail_open"])
def test_a_static_config_whose_module_cannot_load_stops_envoy(upstreams, bad_module, policy):
    module, reason = bad_module
    config = bootstrap(CONFIG, upstreams, hosts(), module=module,
                       failure_policy=None if policy == "legacy fail_open" else policy)
    if policy == "legacy fail_open":
        connection_manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        (plugin,) = [f for f in connection_manager["http_filters"] if f["name"] == "canary-split"]
        plugin["typed_config"]["config"]["fail_open"] = True
    envoy = Envoy(config)
    assert envoy.run_to_exit() == 1
    assert reason in envoy.log()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_gateway_whose_first_ecds_module_cannot_load_answers_500_on_every_host(upstreams, bad_module, policy):
    module, reason = bad_module
    ecds_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-ecds-")) / "canary-split.json"
    with Envoy(bootstrap(CONFIG, upstreams, hosts(), ecds_path=ecds_path, module=module,
                         failure_policy=policy)) as envoy:
        wait_for_log(envoy, reason)
        # The listener serves, but its filter chain has no config for the plugin: no request
        # passes, whichever host it is for.
        client = Client(envoy.port)
        for host in (PUBLIC, "other.example.com"):
            response = client.get(host)
            assert (response.status, response.upstream) == (500, None)
        assert envoy.stats("http_filter\\.canary-split\\.update_rejected$") == {
            "extension_config_discovery.http_filter.canary-split.update_rejected": 1}
        write_ecds(ecds_path, CONFIG, failure_policy=policy)
        deadline = time.monotonic() + 10
        while client.get(PUBLIC).status != 200:
            assert time.monotonic() < deadline, "a good module did not take over"
            time.sleep(0.05)
        assert_routed_by_the_filter(client)


@pytest.mark.parametrize("policy", POLICIES)
def test_an_update_to_a_module_that_cannot_load_is_refused_and_the_filter_keeps_routing(upstreams, bad_module,
                                                                                        policy):
    module, reason = bad_module
    ecds_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-ecds-")) / "canary-split.json"
    with Envoy(bootstrap(CONFIG, upstreams, hosts(), ecds_path=ecds_path, failure_policy=policy),
               concurrency=2) as envoy:
        client = Client(envoy.port)
        assert_routed_by_the_filter(client)
        write_ecds(ecds_path, CONFIG, module, policy)
        wait_for_log(envoy, reason)
        for _ in range(3):
            client.reconnect()  # new connections too, on every worker
            assert_routed_by_the_filter(client)


@pytest.mark.parametrize("fail_open", [True, False], ids=["FAIL_OPEN", "FAIL_CLOSE or FAIL_RELOAD"])
def test_when_istio_cannot_fetch_the_module(upstreams, fail_open):
    ecds_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-ecds-")) / "canary-split.json"
    with Envoy(bootstrap(CONFIG, upstreams, hosts(), ecds_path=ecds_path)) as envoy:
        client = Client(envoy.port)
        assert_routed_by_the_filter(client)
        publish_ecds(ecds_path, istio_fetch_failure_stand_in(fail_open))
        deadline = time.monotonic() + 10
        while client.get(PUBLIC).upstream == "canary" and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):
            client.reconnect()
            response = client.get(PUBLIC, [("x-user-id", "u")])
            spoofed = client.get(PUBLIC, [(DECISION_HEADER, "canary")])
            other = client.get("other.example.com")
            if fail_open:
                # No filter: the default route sends everyone to primary, and a client-sent
                # decision header is not removed, so it picks the canary.
                assert (response.status, response.upstream, response.headers.get(DECISION_HEADER)) == (
                    200, "primary", None)
                assert (spoofed.status, spoofed.upstream) == (200, "canary")
                assert (other.status, other.upstream) == (200, "other")
            else:
                # Every request on the listener is denied, whichever host it is for.
                assert [r.status for r in (response, spoofed, other)] == [403, 403, 403]
