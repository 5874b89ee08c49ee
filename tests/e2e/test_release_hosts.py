"""Who reaches a release's own host, on real Envoy: with `"release_hosts": "token"` a request sent
straight to `shop-canary.example.com` (or primary's host) passes only with a pin token that
verifies for that release, and gets the filter's 403 otherwise; the public host keeps working,
including the requests the filter itself rewrites to a release host. Token headers never reach a
release's backend, tokens valid for longer than `max_token_ttl_seconds` do not count, and a
repeated decision header is replaced on a split host and removed on any other. The protection lives
in the filter: under FAIL_OPEN a crashed VM leaves the release hosts open, under FAIL_CLOSED shut."""

import json
import time

import pytest

from harness import CRASH_HEADER, DECISION_HEADER, Envoy, bootstrap, catch_all_route, split_routes, wasm_failures
from pin_token import encode_keys, mint, new_key
from test_pin_tokens import rejected_tokens

KEYS_ENV = "CANARY_SPLIT_PIN_KEYS"
KEY, KEY_UNKNOWN = new_key(b"release hosts"), new_key(b"unknown")
SHOP, PRIMARY_HOST, CANARY_HOST = "shop.example.com", "shop-primary.example.com", "shop-canary.example.com"
OPEN = "open.example.com"
MAX_TTL = 86_400
CONFIG = {
    "max_token_ttl_seconds": MAX_TTL,
    "routes": [
        {"host": SHOP, "primary": {"host": PRIMARY_HOST}, "canary": {"host": CANARY_HOST}, "canary_weight": 0,
         "release_hosts": "token",
         "pin": [{"token": {"header": "x-canary-token"}}, {"token": {"cookie": "canary-token"}}]},
        # The default: its release hosts are left to the gateway's routes.
        {"host": OPEN, "primary": {"host": "open-primary.example.com"}, "canary": {"host": "open-canary.example.com"},
         "canary_weight": 0, "pin": [{"token": {"header": "x-canary-token"}}]},
    ],
}


def protected_gateway(upstreams, **bootstrap_options) -> Envoy:
    hosts = [h for r in CONFIG["routes"] for h in split_routes(r["host"], r["primary"]["host"], r["canary"]["host"])]
    config = bootstrap(json.dumps(CONFIG), upstreams, hosts + [catch_all_route()],
                       vm_environment={"host_env_keys": [KEYS_ENV]}, **bootstrap_options)
    return Envoy(config, env={KEYS_ENV: encode_keys(KEY)})


@pytest.fixture
def client(upstreams, gateways, monkeypatch):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    return gateways(protected_gateway(upstreams))


def token(release: str, ttl: int = 3600, key: bytes = KEY, host: str = SHOP) -> str:
    return mint(key, host, release, int(time.time()) + ttl)


def refused(response) -> bool:
    return response.status == 403 and response.upstream is None


def test_a_release_host_without_a_token_gets_403(client):
    for authority in (CANARY_HOST, PRIMARY_HOST, "SHOP-Canary.example.com:8443", CANARY_HOST + "."):
        assert refused(client.get(authority)), authority
        # Neither the decision header nor a plain pin value opens it.
        assert refused(client.get(authority, [(DECISION_HEADER, "canary"), ("traffic", "test")])), authority
    # The default leaves another route's release hosts to the gateway.
    assert client.get("open-canary.example.com").upstream == "canary"
    assert not wasm_failures(client.envoy.settled_log())


def test_a_token_for_that_release_opens_its_host_and_is_not_passed_on(client):
    response = client.get(CANARY_HOST, [("x-canary-token", token("canary"))])
    assert (response.status, response.upstream) == (200, "canary")
    assert "x-canary-token" not in response.headers
    response = client.get(CANARY_HOST, [("cookie", f"a=1; canary-token={token('canary')}")])
    assert (response.status, response.upstream) == (200, "canary")
    response = client.get(PRIMARY_HOST, [("x-canary-token", token("primary"))])
    assert (response.status, response.upstream) == (200, "primary")


def test_tokens_that_do_not_open_a_release_host(client):
    for name, bad in {
        "the other release's": token("primary"),
        "expired": token("canary", ttl=-1),
        "signed for the release host itself": token("canary", host=CANARY_HOST),
        "an unknown key's": token("canary", key=KEY_UNKNOWN),
        "valid for longer than max_token_ttl_seconds": token("canary", ttl=MAX_TTL + 3600),
        "malformed": "test",
    }.items():
        assert refused(client.get(CANARY_HOST, [("x-canary-token", bad)])), name


def test_the_public_host_and_the_requests_it_rewrites_still_pass(client):
    for _ in range(5):
        response = client.get(SHOP)
        assert (response.status, response.upstream) == (200, "primary")
        assert response.headers["host"] == PRIMARY_HOST
        # Rewritten to the protected canary host by the filter itself: not checked again.
        response = client.get(SHOP, [("x-canary-token", token("canary"))])
        assert (response.status, response.upstream) == (200, "canary")
        assert response.headers["host"] == CANARY_HOST
        assert "x-canary-token" not in response.headers


def test_a_token_valid_for_too_long_does_not_pin_and_is_counted(client):
    response = client.get(SHOP, [("x-canary-token", token("canary", ttl=MAX_TTL + 3600))])
    assert response.upstream == "primary"
    assert client.get(SHOP, [("x-canary-token", token("canary", ttl=MAX_TTL - 60))]).upstream == "canary"
    assert rejected_tokens(client.envoy) == {(SHOP, "too_long"): 1}


def test_a_repeated_decision_header_is_replaced_on_a_split_host_and_removed_elsewhere(client):
    spoofed = [(DECISION_HEADER, "canary"), (DECISION_HEADER, "canary")]
    for _ in range(5):
        response = client.get(SHOP, spoofed)
        assert response.upstream == "primary"
        assert [v for k, v in response.header_list if k == DECISION_HEADER] == ["primary"]
        response = client.get("elsewhere.example.com", spoofed)
        assert response.upstream == "other"
        assert DECISION_HEADER not in response.headers


@pytest.mark.parametrize("policy, after_a_crash", [("FAIL_OPEN", (200, "canary")), ("FAIL_CLOSED", (503, None))])
def test_a_crashed_vm_leaves_release_hosts_as_its_failure_policy_says(upstreams, gateways, monkeypatch, crash_module,
                                                                      policy, after_a_crash):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    client = gateways(protected_gateway(upstreams, module=crash_module, failure_policy=policy))
    assert refused(client.get(CANARY_HOST))
    assert client.get(SHOP, [CRASH_HEADER]).status == 503
    response = client.get(CANARY_HOST)
    assert (response.status, response.upstream) == after_a_crash
