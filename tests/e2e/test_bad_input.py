"""Bad input never takes the gateway down: raw bytes in headers are handled as bytes, and a bad
config is refused at load time with one log line that names the field and the problem."""

import json

import pytest

from harness import DECISION_HEADER, Envoy, bootstrap, catch_all_route, wasm_failures
from sticky_hash import is_canary

PUBLIC = "shop.example.com"
ROUTE = {
    "host": PUBLIC, "primary": {}, "canary": {"host": "shop-canary.example.com"}, "canary_weight": 50,
    "pin": [{"header": "traffic", "value": "test", "to": "canary"},
            {"cookie": "canary", "value": "never", "to": "primary"}],
    "sticky": {"header": "x-user-id"},
}


def test_non_utf8_header_values_are_routed_and_the_worker_survives(gateway):
    # One worker: a VM panic would make every later request on it fail.
    client = gateway({"routes": [ROUTE]}, concurrency=1)
    raw_keys = [b"\xff\xfe", b"caf\xe9", b"\xc3\x28-user", b"\x80" * 64]
    for key in raw_keys:
        response = client.get(PUBLIC, [("x-user-id", key)])
        expected = "canary" if is_canary(PUBLIC.encode(), key, 50) else "primary"
        assert response.upstream == expected, key
    assert client.get(PUBLIC, [("traffic", b"t\xffst"), ("x-user-id", "user-1")]).upstream == (
        "canary" if is_canary(PUBLIC.encode(), b"user-1", 50) else "primary")
    for cookie in [b"canary=nev\xffer", b"\xff\xfe=\xfd; canary=never", b"\xff"]:
        response = client.get(PUBLIC, [("cookie", cookie), ("x-user-id", "user-2")])
        assert response.status == 200, cookie
    assert client.get(PUBLIC, [("cookie", b"\xff\xfe=\xfd; canary=never")]).upstream == "primary"
    other = client.get("other.example.com", [(DECISION_HEADER, b"can\xffary")])
    assert other.upstream == "other" and DECISION_HEADER not in other.headers
    # A raw byte in the Host header: Envoy may refuse it; either way nothing may break after it.
    client.get(b"shop.example.com\xff")
    client.reconnect()

    for i in range(200):
        response = client.get(PUBLIC, [("x-user-id", f"user-{i}")])
        assert response.status == 200
        assert response.headers[DECISION_HEADER] == response.upstream
    assert not wasm_failures(client.envoy.settled_log())


def test_oversized_and_odd_authorities_pass_through(gateway):
    client = gateway({"routes": [ROUTE]}, concurrency=1)
    for authority in ["a" * 300 + ".example.com", "[::1]:8080", ":80", "shop.example.com:", "SHOP.EXAMPLE.COM.."]:
        response = client.get(authority)
        assert response.status in (200, 400), authority
    assert client.get(PUBLIC, [("traffic", "test")]).upstream == "canary"
    assert not wasm_failures(client.envoy.settled_log())


INVALID_CONFIGS = [
    ("{not json", "config: is not valid JSON: key must be a string at line 1 column 2"),
    ("", "config: is empty (expected a JSON object with \"routes\")"),
    (json.dumps({"routes": [{**ROUTE, "canary_weight": 150}]}), "routes[0].canary_weight: 150 is not in 0..=100"),
    (json.dumps({"routes": [{**ROUTE, "canary_weight": 12.345}]}),
     "routes[0].canary_weight: 12.345 is finer than the resolution of 0.01 (one basis point)"),
    (json.dumps({"routes": [{**ROUTE, "weight": 5}]}),
     "routes[0].weight: unknown field (expected one of: host, primary, canary, canary_weight, pin, sticky, salt, x_forwarded_host, guard, release_hosts)"),
    (json.dumps({"routes": [ROUTE, {**ROUTE, "host": "Shop.Example.com"}]}),
     "routes[1].host: \"shop.example.com\" is already the host of routes[0]"),
    (json.dumps({"routes": [{k: v for k, v in ROUTE.items() if k != "canary"}]}), "routes[0].canary: missing"),
    (json.dumps({"routes": [{**ROUTE, "pin": [{"header": "a", "cookie": "b", "value": "v", "to": "canary"}]}]}),
     "routes[0].pin[0]: needs exactly one of \"header\", \"cookie\" or \"token\""),
    (json.dumps({"routes": [{**ROUTE, "pin": [{"value": "v", "to": "canary"}]}]}),
     "routes[0].pin[0]: needs exactly one of \"header\", \"cookie\" or \"token\""),
    (json.dumps({"routes": [{**ROUTE, "pin": [{"header": "a", "value": "v", "to": "beta"}]}]}),
     "routes[0].pin[0].to: \"beta\" is not \"primary\" or \"canary\""),
    (json.dumps({"routes": [{**ROUTE, "sticky": {"header": "a", "client_ip": True}}]}),
     "routes[0].sticky: needs exactly one of \"header\", \"cookie\" or \"client_ip\""),
    (json.dumps({"routes": [{**ROUTE, "host": "shop.example.com:443"}]}),
     "routes[0].host: \"shop.example.com:443\" must not include a port (ports are ignored when matching)"),
    (json.dumps({"decision_header": "bad header", "routes": []}),
     "decision_header: \"bad header\" is not a valid header name"),
    (json.dumps({"decision_header": "Authorization", "routes": []}),
     "decision_header: \"authorization\" carries the client's credentials, which the filter would remove from every "
     "request to a host it does not split"),
    (json.dumps({"routes": [{**ROUTE, "sticky": {"header": "x-canary-route"}}]}),
     "routes[0].sticky.header: \"x-canary-route\" is the decision header, which the filter overwrites on split hosts "
     "and removes on others"),
    # A key pasted where the variable's name goes: refused, and never written to the log.
    (json.dumps({"pin_keys_env": "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s", "routes": []}),
     "pin_keys_env: looks like a key, not the name of the variable that holds the keys (the value is not shown)"),
]


@pytest.mark.parametrize("config, message", INVALID_CONFIGS, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(INVALID_CONFIGS)])
def test_invalid_config_is_refused_with_one_clear_line(upstreams, config, message):
    envoy = Envoy(bootstrap(config, upstreams, [catch_all_route()]))
    exit_code = envoy.run_to_exit()
    log = envoy.log()
    assert exit_code != 0
    lines = [line for line in log.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1, log
    assert lines[0].endswith(f"invalid configuration: {message}"), lines[0]
    assert "[error]" in lines[0]
    assert "q6urq6ur" not in log
    assert not wasm_failures(log)
