"""Sticky cookies the filter hands out (`"sticky": {"cookie": NAME, "assign": {...}}`), on real
Envoy: a user without the cookie gets a new key in `Set-Cookie`, is decided with it exactly as the
README's hash predicts for that key, and keeps the release on every later request; new users split
by the weight; raising it keeps the canary's cookie users there; keys are 16 random bytes that
differ between gateways started together; HTTPS adds `Secure`; the upstream's own cookies
survive."""

from __future__ import annotations

import base64
import json
import math
import pathlib
import re
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import envoy_for
from harness import EchoUpstream, Envoy, bootstrap, catch_all_route, split_routes
from sticky_hash import is_canary

PUBLIC = "shop.example.com"
COOKIE = "canary-split-user"
# 128 bits in base64url without padding.
KEY = re.compile(r"[A-Za-z0-9_-]{22}")
ATTRIBUTES = "Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
UPSTREAM_COOKIE = "session=from-upstream; Path=/"


def assigning_route(weight: float, assign: dict | None = None) -> dict:
    return {"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": weight,
            "pin": [{"header": "traffic", "value": "test", "to": "canary"}],
            "sticky": {"cookie": COOKIE, "assign": assign or {}}}


def handed_out(set_cookies: list[str]) -> list[str]:
    """The filter's Set-Cookie values among a response's."""
    return [value for value in set_cookies if value.startswith(f"{COOKIE}=")]


def key_of(set_cookie: str, attributes: str = ATTRIBUTES) -> str:
    """The key of a Set-Cookie the filter sent, checked to be exactly as documented."""
    match = re.fullmatch(rf"{COOKIE}=({KEY.pattern}); {re.escape(attributes)}", set_cookie)
    assert match, set_cookie
    return match[1]


def expected_release(key: str, weight: float) -> str:
    return "canary" if is_canary(PUBLIC.encode(), key.encode(), weight) else "primary"


def requests_by_reason(envoy: Envoy) -> dict[str, int]:
    admin = envoy.admin_address_path.read_text().strip()
    with urllib.request.urlopen(f"http://{admin}/stats?filter=canary_split_requests_total", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    counts: dict[str, int] = {}
    for line in lines:
        match = re.search(r"reason=\.=(\w+);\.;canary_split_requests_total: (\d+)$", line)
        assert match, line
        counts[match[1]] = counts.get(match[1], 0) + int(match[2])
    return counts


def test_new_users_get_a_key_split_by_the_weight_and_keep_their_release(gateway):
    weight = 30
    client = gateway({"routes": [assigning_route(weight)]})
    first: dict[str, str] = {}
    for _ in range(600):
        response = client.get(PUBLIC, [("cookie", "theme=dark")])
        (set_cookie,) = response.response_header("set-cookie")
        key = key_of(set_cookie)
        # Decided exactly as a request carrying that key would be.
        assert response.upstream == expected_release(key, weight), key
        first[key] = response.upstream
    assert len(first) == 600, "every key is new"
    canary = sum(release == "canary" for release in first.values())
    # 4.5 standard deviations: a correct filter fails this about once in 150,000 runs.
    assert abs(canary - 600 * weight / 100) <= 4.5 * math.sqrt(600 * 0.3 * 0.7), canary

    # Every later request with the key keeps the release and gets no new cookie, on any worker.
    for key, release in list(first.items())[:200]:
        client.reconnect()
        for cookies in [f"{COOKIE}={key}", f"theme=dark; {COOKIE}={key}; x=1"]:
            response = client.get(PUBLIC, [("cookie", cookies)])
            assert response.upstream == release, key
            assert response.response_header("set-cookie") == [], key

    # An empty cookie is no key; a pin decides without one.
    assert len(handed_out(client.get(PUBLIC, [("cookie", f"{COOKIE}=")]).response_header("set-cookie"))) == 1
    pinned = client.get(PUBLIC, [("traffic", "test")])
    assert (pinned.upstream, pinned.response_header("set-cookie")) == ("canary", [])

    # Assigned and returning users are both counted as sticky; only the pinned request is not.
    assert requests_by_reason(client.envoy) == {"pin": 1, "sticky": 600 + 400 + 1, "random": 0}


def test_raising_the_weight_keeps_every_canary_cookie_user_there(gateway):
    at_10 = gateway({"routes": [assigning_route(10)]})
    first = {}
    for _ in range(400):
        response = at_10.get(PUBLIC)
        first[key_of(response.response_header("set-cookie")[0])] = response.upstream
    assert "canary" in first.values()
    at_40 = gateway({"routes": [assigning_route(40)]})
    later = {}
    for key in first:
        response = at_40.get(PUBLIC, [("cookie", f"{COOKIE}={key}")])
        assert response.response_header("set-cookie") == []
        later[key] = response.upstream
    assert not [key for key in first if first[key] == "canary" and later[key] == "primary"]
    assert sum(r == "canary" for r in later.values()) > sum(r == "canary" for r in first.values())
    assert later == {key: expected_release(key, 40) for key in first}


def test_the_attributes_configured_are_sent(gateway):
    assign = {"max_age_seconds": 3600, "path": "/shop", "domain": ".Example.com"}
    client = gateway({"routes": [assigning_route(50, assign)]})
    (set_cookie,) = client.get(PUBLIC).response_header("set-cookie")
    key_of(set_cookie, "Path=/shop; Max-Age=3600; Domain=example.com; HttpOnly; SameSite=Lax")


def test_gateways_started_together_hand_out_keys_of_16_random_bytes_that_never_repeat(gateways, upstreams):
    """Replicas start at the same moment with the same config; their keys must still differ, as
    they do when each is 16 bytes from Envoy's randomness (src/filter.rs `key_bytes`) rather than
    from a generator seeded by the clock. Each key is exactly those 16 bytes in base64url."""
    same_config = [envoy_for({"routes": [assigning_route(50)]}, upstreams) for _ in range(2)]
    with ThreadPoolExecutor(len(same_config)) as pool:
        clients = list(pool.map(gateways, same_config))
    keys = [key_of(client.get(PUBLIC).response_header("set-cookie")[0]) for client in clients for _ in range(32)]
    assert keys[0] != keys[32], "the two gateways' first keys are the same"
    assert len(set(keys)) == len(keys), "a key repeats"
    as_numbers = []
    for key in keys:
        random = base64.urlsafe_b64decode(key + "==")
        # 16 bytes, and the key is their only encoding (22 characters hold 132 bits: 4 unused, zero).
        assert len(random) == 16 and base64.urlsafe_b64encode(random).rstrip(b"=").decode() == key, key
        as_numbers.append(int.from_bytes(random, "big"))
    # Every one of the 128 bits varies among 64 random keys: a correct filter fails this once in
    # 2^56 runs; a key with some bytes fixed (zero padding, a short or repeated draw) fails at once.
    ones = zeros = 0
    for number in as_numbers:
        ones |= number
        zeros |= ~number & (2**128 - 1)
    assert ones == zeros == 2**128 - 1, f"bits never 1: {~ones & (2**128 - 1):032x}, never 0: {~zeros & (2**128 - 1):032x}"


@pytest.fixture
def upstreams_with_cookies():
    """Upstreams that set a cookie of their own on every response."""
    servers = {name: EchoUpstream(name, [("set-cookie", UPSTREAM_COOKIE)]) for name in ("primary", "canary", "other")}
    yield {name: server.port for name, server in servers.items()}
    for server in servers.values():
        server.close()


def test_the_upstreams_own_cookie_survives(gateways, upstreams_with_cookies):
    client = gateways(envoy_for({"routes": [assigning_route(50)]}, upstreams_with_cookies))
    for _ in range(20):
        set_cookies = client.get(PUBLIC).response_header("set-cookie")
        assert UPSTREAM_COOKIE in set_cookies and len(handed_out(set_cookies)) == 1, set_cookies
    key = key_of(handed_out(set_cookies)[0])
    assert client.get(PUBLIC, [("cookie", f"{COOKIE}={key}")]).response_header("set-cookie") == [UPSTREAM_COOKIE]


def edge_gateway(filter_config: dict, upstreams: dict, tls_directory: pathlib.Path | None = None) -> Envoy:
    """The tests' gateway as an Istio ingress gateway's connection manager is set up: with
    `use_remote_address` (istio/istio pilot/pkg/networking/core/gateway.go, 86c9f01f, lines 687
    and 709), so Envoy sets x-forwarded-proto from the connection; with `tls_directory`, its
    listener terminates TLS (ALPN h2 and HTTP/1.1) with a throwaway self-signed certificate."""
    route = filter_config["routes"][0]
    virtual_hosts = [*split_routes(PUBLIC, route["primary"].get("host"), route["canary"].get("host")),
                     catch_all_route()]
    config = bootstrap(json.dumps(filter_config), upstreams, virtual_hosts)
    chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["filters"][0]["typed_config"]["use_remote_address"] = True
    if tls_directory:
        certificate, private_key = tls_directory / "gateway.crt", tls_directory / "gateway.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", f"/CN={PUBLIC}", "-keyout", str(private_key),
                        "-out", str(certificate)], check=True, capture_output=True)
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{"certificate_chain": {"filename": str(certificate)},
                                      "private_key": {"filename": str(private_key)}}]}}}
    return Envoy(config)


def curl_set_cookies(port: int, protocol: str, headers: list[str] = ()) -> list[str]:
    """The Set-Cookie values of one request over HTTPS with curl (`--http1.1` or `--http2`)."""
    command = ["curl", "-sS", "-k", protocol, "-o", "/dev/null", "-D", "-", "--max-time", "10",
               "--resolve", f"{PUBLIC}:{port}:127.0.0.1", f"https://{PUBLIC}:{port}/"]
    for header in headers:
        command += ["-H", header]
    head = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    assert head.startswith("HTTP/2 200" if protocol == "--http2" else "HTTP/1.1 200"), head
    return [line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("set-cookie:")]


def test_over_https_the_cookie_is_secure(gateways, upstreams, tmp_path):
    client = gateways(edge_gateway({"routes": [assigning_route(50)]}, upstreams, tmp_path))
    for protocol in ("--http1.1", "--http2"):
        for _ in range(5):
            # A client that claims plain HTTP changes nothing: the edge sets x-forwarded-proto.
            (set_cookie,) = curl_set_cookies(client.port, protocol, ["x-forwarded-proto: http"])
            key_of(set_cookie, ATTRIBUTES + "; Secure")
        (set_cookie,) = curl_set_cookies(client.port, protocol)
        key = key_of(set_cookie, ATTRIBUTES + "; Secure")
        assert curl_set_cookies(client.port, protocol, [f"cookie: {COOKIE}={key}"]) == []


def test_over_plain_http_a_client_cannot_claim_https_at_the_edge(gateways, upstreams):
    client = gateways(edge_gateway({"routes": [assigning_route(50)]}, upstreams))
    for _ in range(5):
        (set_cookie,) = client.get(PUBLIC, [("x-forwarded-proto", "https")]).response_header("set-cookie")
        key_of(set_cookie)
