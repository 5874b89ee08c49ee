"""The split, the two action modes, pinning, and what clients must not be able to do."""

import math

import pytest

from harness import DECISION_HEADER, h2_get

PUBLIC = "shop.example.com"
PRIMARY_HOST = "shop-primary.example.com"
CANARY_HOST = "shop-canary.example.com"


def authority_route(weight, host=PUBLIC, **extra):
    return {"host": host, "primary": {"host": PRIMARY_HOST}, "canary": {"host": CANARY_HOST},
            "canary_weight": weight, **extra}


def header_route(weight, host=PUBLIC, **extra):
    return {"host": host, "primary": {}, "canary": {}, "canary_weight": weight, **extra}


def assert_routed_by_decision(response):
    """The upstream that answered is the one the filter decided on, and only one decision reached it."""
    decisions = [v for k, v in response.header_list if k == DECISION_HEADER]
    assert decisions == [response.upstream], response


@pytest.mark.parametrize("weight", [0, 0.5, 12.5, 50, 87.5, 100])
def test_split_matches_the_weight(gateway, weight):
    # One Envoy per weight keeps the check simple; the sample size bounds the error.
    client = gateway({"routes": [header_route(weight)]}, concurrency=2)
    requests = 3000
    canary = 0
    for _ in range(requests):
        response = client.get(PUBLIC)
        assert_routed_by_decision(response)
        canary += response.upstream == "canary"
    p = weight / 100
    # 4.5 standard deviations: a correct filter fails this about once in 150,000 runs.
    allowed = 4.5 * math.sqrt(requests * p * (1 - p))
    assert abs(canary - requests * p) <= allowed, f"{canary}/{requests} canary at weight {weight}"


def test_authority_mode_rewrites_host_and_keeps_the_original_when_asked(gateway):
    client = gateway({"routes": [authority_route(50, x_forwarded_host=True)]})
    seen = set()
    for _ in range(200):
        response = client.get(PUBLIC + ":8080", [("x-forwarded-host", "client.example")])
        expected_host = CANARY_HOST if response.upstream == "canary" else PRIMARY_HOST
        assert response.headers["host"] == expected_host
        forwarded = [v for k, v in response.header_list if k == "x-forwarded-host"]
        assert forwarded == [PUBLIC + ":8080"], "replaces what the client sent"
        assert_routed_by_decision(response)
        seen.add(response.upstream)
    assert seen == {"primary", "canary"}


def test_authority_mode_adds_no_x_forwarded_host_by_default(gateway):
    # As Envoy's own host rewrite, which adds it only with append_x_forwarded_host.
    client = gateway({"routes": [authority_route(50)]})
    seen = set()
    for _ in range(100):
        response = client.get(PUBLIC + ":8080")
        assert response.headers["host"] == (CANARY_HOST if response.upstream == "canary" else PRIMARY_HOST)
        assert "x-forwarded-host" not in response.headers
        sent = client.get(PUBLIC, [("x-forwarded-host", "client.example")])
        assert sent.headers["x-forwarded-host"] == "client.example", "a client's own passes untouched"
        seen.add(response.upstream)
    assert seen == {"primary", "canary"}


def test_header_mode_keeps_the_host_and_routes_on_the_header(gateway):
    client = gateway({"routes": [header_route(50)]})
    seen = set()
    for _ in range(200):
        response = client.get(PUBLIC)
        assert response.headers["host"] == PUBLIC
        assert "x-forwarded-host" not in response.headers
        assert_routed_by_decision(response)
        seen.add(response.upstream)
    assert seen == {"primary", "canary"}


def test_mixed_mode_rewrites_only_the_variant_with_a_host(gateway):
    route = {"host": PUBLIC, "primary": {}, "canary": {"host": CANARY_HOST}, "canary_weight": 50}
    client = gateway({"routes": [route]})
    for _ in range(100):
        response = client.get(PUBLIC)
        assert_routed_by_decision(response)
        assert response.headers["host"] == (CANARY_HOST if response.upstream == "canary" else PUBLIC)


def test_host_matching_ignores_case_and_port(gateway):
    client = gateway({"routes": [authority_route(100, x_forwarded_host=True)]})
    for authority in ["SHOP.Example.com", "shop.example.com:443", "shop.example.com.:80"]:
        response = client.get(authority)
        assert response.upstream == "canary", authority
        assert response.headers["x-forwarded-host"] == authority


PINS = [
    {"header": "traffic", "value": "test", "to": "canary"},
    {"cookie": "canary", "value": "never", "to": "primary"},
    {"header": "x-canary", "value": "always", "to": "canary"},
    {"header": "x-canary", "value": "never", "to": "primary"},
]


@pytest.mark.parametrize("mode", [authority_route, header_route])
def test_pins_force_a_variant_at_any_weight(gateway, mode):
    client = gateway({"routes": [mode(0, pin=PINS), mode(100, host="all.example.com", pin=PINS)]})
    for host in [PUBLIC, "all.example.com"]:
        for _ in range(20):
            assert client.get(host, [("traffic", "test")]).upstream == "canary"
            assert client.get(host, [("x-canary", "always")]).upstream == "canary"
            assert client.get(host, [("x-canary", "never")]).upstream == "primary"
            assert client.get(host, [("cookie", "session=1; canary=never")]).upstream == "primary"
    # Without a pin the weight decides: 0 % and 100 % are exact.
    assert {client.get(PUBLIC).upstream for _ in range(50)} == {"primary"}
    assert {client.get("all.example.com").upstream for _ in range(50)} == {"canary"}


def test_pins_match_only_the_exact_value(gateway):
    client = gateway({"routes": [header_route(0, pin=PINS)]})
    # (Trailing spaces are no test: HTTP strips them before any filter sees the value.)
    for value in ["Test", "tests", "tes", "test,test", "test;"]:
        assert client.get(PUBLIC, [("traffic", value)]).upstream == "primary", value
    assert client.get(PUBLIC, [("cookie", "canary=nevermore; xcanary=always")]).upstream == "primary"


def test_cookies_are_read_from_every_cookie_header(gateway):
    # RFC 6265 wants one Cookie header, but HTTP/1.1 clients may send several, and HTTP/2 clients
    # send cookies as separate fields; a pin in any of them must count.
    client = gateway({"routes": [header_route(100, pin=PINS, sticky={"cookie": "uid"})]})
    for _ in range(20):
        split = [("cookie", "session=1"), ("cookie", "theme=dark; canary=never")]
        assert client.get(PUBLIC, split).upstream == "primary"
        assert h2_get(client.port, PUBLIC, split).upstream == "primary"
    assert client.get(PUBLIC, [("cookie", "session=1")]).upstream == "canary"


def test_first_matching_pin_wins(gateway):
    client = gateway({"routes": [header_route(50, pin=PINS)]})
    for _ in range(20):
        response = client.get(PUBLIC, [("cookie", "canary=never"), ("x-canary", "always")])
        assert response.upstream == "primary"


def test_spoofed_decision_header_is_overwritten(gateway):
    client = gateway({"routes": [authority_route(0), header_route(0, host="hdr.example.com")]})
    for host in [PUBLIC, "hdr.example.com"]:
        for _ in range(50):
            response = client.get(host, [(DECISION_HEADER, "canary"), (DECISION_HEADER, "canary")])
            assert response.upstream == "primary"
            assert_routed_by_decision(response)


def test_unknown_host_passes_untouched_but_loses_the_decision_header(gateway):
    client = gateway({"routes": [authority_route(100)]})
    sent = [("x-user-id", "u1"), ("traffic", "test"), ("x-forwarded-host", "client.example"),
            (DECISION_HEADER, "canary")]
    for host in ["other.example.com", "shop-canary.example.com.evil", "example.com"]:
        response = client.get(host, sent)
        assert response.upstream == "other"
        assert response.headers["host"] == host
        assert response.headers["x-user-id"] == "u1"
        assert response.headers["x-forwarded-host"] == "client.example"
        assert DECISION_HEADER not in response.headers


def test_direct_variant_hosts_are_not_split(gateway):
    # Test traffic to a variant's own host reaches that variant, whatever the weight.
    client = gateway({"routes": [authority_route(50)]})
    for _ in range(30):
        assert client.get(CANARY_HOST).upstream == "canary"
        assert client.get(PRIMARY_HOST, [(DECISION_HEADER, "canary")]).upstream == "primary"


def test_custom_decision_header(gateway):
    client = gateway({"decision_header": "X-Variant", "routes": [header_route(100)]})
    response = client.get(PUBLIC, [("x-variant", "primary")])
    assert response.headers["x-variant"] == "canary"
    # The routes in this harness match the default header, so the request falls back to primary:
    # the filter never writes a header it was not told to.
    assert DECISION_HEADER not in response.headers
    assert response.upstream == "primary"
