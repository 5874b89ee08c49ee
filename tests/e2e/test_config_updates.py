"""Config changes as Istio delivers them (ECDS): a new weight applies without a restart and keeps
sticky users' assignments monotonic; a bad config is refused and traffic keeps flowing on the
last good one."""

import json
import pathlib
import tempfile
import time

import pytest

from harness import Client, Envoy, bootstrap, catch_all_route, split_routes, write_ecds
from sticky_hash import is_canary

PUBLIC = "shop.example.com"
USERS = [f"user-{i}" for i in range(300)]


def config(weight) -> str:
    return json.dumps({"routes": [{"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": weight,
                                   "sticky": {"header": "x-user-id"}}]})


@pytest.fixture
def ecds_gateway(upstreams):
    ecds_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-ecds-")) / "canary-split.json"
    hosts = split_routes(PUBLIC, None, None) + [catch_all_route()]
    envoy = Envoy(bootstrap(config(10), upstreams, hosts, ecds_path=ecds_path), concurrency=2).start()
    yield envoy, ecds_path
    envoy.stop()


def assignments(client):
    return {u: client.get(PUBLIC, [("x-user-id", u)]).upstream for u in USERS}


def expected(weight):
    return {u: "canary" if is_canary(PUBLIC.encode(), u.encode(), weight) else "primary" for u in USERS}


def wait_for(predicate, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_weight_change_applies_live_and_keeps_canary_users(ecds_gateway):
    envoy, ecds_path = ecds_gateway
    client = Client(envoy.port)
    assert assignments(client) == expected(10)
    write_ecds(ecds_path, config(35))
    wait_for(lambda: client.get(PUBLIC, [("x-user-id", "user-0")]) and assignments(client) == expected(35),
             "the new weight on the running gateway")
    before, after = expected(10), expected(35)
    assert all(after[u] == "canary" for u in USERS if before[u] == "canary")


def test_bad_update_is_refused_and_the_last_good_config_keeps_serving(ecds_gateway):
    envoy, ecds_path = ecds_gateway
    client = Client(envoy.port)
    write_ecds(ecds_path, json.dumps({"routes": [{"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": 150}]}))
    wait_for(lambda: "routes[0].canary_weight: 150 is not in 0..=100" in envoy.log(), "the rejection in the log")
    for _ in range(3):
        client.reconnect()  # new connections too, on every worker
        assert assignments(client) == expected(10)
    write_ecds(ecds_path, config(35))
    wait_for(lambda: assignments(client) == expected(35), "a good config after a bad one")
