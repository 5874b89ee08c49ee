"""Hostile requests, over HTTP/1.1 as raw bytes and HTTP/2 as raw frames: huge and repeated
headers, every odd authority form, non-UTF-8 bytes in each field the filter reads, CONNECT.

For each case Envoy must answer, either with what the release the filter chose answers or with
its own 4xx (HTTP/2 may instead reset the stream or close the connection: its codec refuses some
requests that way); the filter's VM must never fail (Envoy's FAIL_RELOAD counters); and when the
request gets through, the decision must be the one the README's rules give: pins, sticky buckets
predicted by the independent tests/e2e/sticky_hash.py, hosts matched case-insensitively with port
and one trailing dot ignored, the first value of a repeated header, cookies from every Cookie
header.

Every case runs on a gateway with Envoy's default header limits and on one that allows more
header fields (`max_headers_count` 1,100 instead of 100): with the defaults Envoy itself refuses
100 repeated pin headers or 1,000 Cookie fields (431, or a reset on HTTP/2), so only the raised
limit lets those reach the filter. 60 KB of cookies fit Envoy's default 60 KiB of headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from answering_upstream import answering_upstream, listener_ports
from harness import DECISION_HEADER, Envoy, bootstrap, to_cluster, vhost
from raw_http import Http2Connection, Reply, http1_exchange, http1_request
from sticky_hash import is_canary
from vm_health import vm_failures

SHOP, WEB, OTHER = b"shop.example.com", b"web.example.com", b"other.example.com"
# Several cookie rules: the cookies are parsed once for all of them (src/cookie.rs, `collect`).
MANY = b"many.example.com"
WEIGHT = 50
# shop.example.com rewrites the authority (authority mode, keeping the original in
# x-forwarded-host), web.example.com only sets the decision header (header mode); both at 50 %, so
# a sticky key's side is a coin toss the test must predict.
FILTER_CONFIG = {"routes": [
    {"host": SHOP.decode(), "primary": {"host": "shop-primary.example.com"},
     "canary": {"host": "shop-canary.example.com"}, "canary_weight": WEIGHT, "x_forwarded_host": True,
     "pin": [{"header": "traffic", "value": "test", "to": "canary"},
             {"cookie": "canary", "value": "never", "to": "primary"}],
     "sticky": {"header": "x-user-id"}},
    {"host": WEB.decode(), "primary": {}, "canary": {}, "canary_weight": WEIGHT,
     "pin": [{"cookie": "canary", "value": "always", "to": "canary"}],
     "sticky": {"cookie": "uid"}},
    {"host": MANY.decode(), "primary": {}, "canary": {}, "canary_weight": WEIGHT,
     "pin": [{"cookie": f"pin{n}", "value": "always", "to": "canary"} for n in range(4)],
     "sticky": {"cookie": "uid"}},
]}
LIMITS = {
    "envoy-defaults": {},
    "more-header-fields": {"common_http_protocol_options": {"max_headers_count": 1100}},
}


def sticky_variant(host: bytes, key: bytes) -> str:
    return "canary" if is_canary(host, key, WEIGHT) else "primary"


def key_for(host: bytes, variant: str, stem: bytes = b"user-", lossy_elsewhere: bool = False) -> bytes:
    """The first key `stem` + n that the sticky hash puts on `variant`. With `lossy_elsewhere`, the
    first that a filter reading the key as UTF-8 (invalid bytes replaced) would put on the other
    variant, so the case shows that the raw bytes are hashed."""
    for n in range(1000):
        key = stem + str(n).encode()
        lossy = key.decode("utf-8", "replace").encode()
        if sticky_variant(host, key) == variant and (not lossy_elsewhere or sticky_variant(host, lossy) != variant):
            return key
    raise AssertionError("no such key")


def cookie_filler(size: int, stem: bytes = b"f") -> bytes:
    """`size` bytes of cookie pairs the filter must skip (the last one may be cut short)."""
    pairs = [b"%s%05d=%s" % (stem, n, b"x" * 40) for n in range(size // 40 + 1)]
    return b"; ".join(pairs)[:size]


# ---------------------------------------------------------------------------------------------
# Expected outcomes


RANDOM = "random"
# Each request is sent several times: a filter that lost the key and fell back to random would
# still hit the expected release of a single request half the time, but 8 in a row once in 256.
REPEATS, REPEATS_FOR_RANDOM = 8, 24  # random: both releases at 50 %, except once in 8 million runs


@dataclass(frozen=True)
class Routed:
    """Reaches `variant`, with the decision header set to it; RANDOM: both variants over repeated
    requests. `forwarded_host`: authority mode, the :authority the filter saw, which it keeps in
    x-forwarded-host; None for header mode."""
    variant: str
    forwarded_host: bytes | None = None


def shop(variant: str, authority: bytes = SHOP) -> Routed:
    return Routed(variant, authority)


def web(variant: str) -> Routed:
    return Routed(variant)


UNSPLIT = "not a split host: the catch-all release, no decision header"
REFUSED = "Envoy's own 4xx, or on HTTP/2 a reset stream or closed connection"


@dataclass(frozen=True)
class Case:
    name: str
    authority: bytes | None
    headers: tuple[tuple[bytes, bytes], ...]
    expect: Routed | str
    http2: Routed | str | None = None
    """Where HTTP/2 differs: its codec refuses what HTTP/1.1 lets through."""
    protocols: tuple[str, ...] = ("http1", "http2")
    method: bytes = b"GET"
    path: bytes = b"/"
    http1_target: bytes | None = None
    """An HTTP/1.1 request-target other than `path` (absolute form)."""
    http1_version: bytes = b"HTTP/1.1"
    over_default_header_count: bool = False
    """More than Envoy's default 100 header fields."""

    def expected(self, protocol: str, limits: str) -> Routed | str:
        if self.over_default_header_count and limits == "envoy-defaults":
            return REFUSED
        return self.http2 if protocol == "http2" and self.http2 is not None else self.expect


# Keys by side, chosen so that a wrong reading of the request lands on the other side.
SHOP_CANARY_KEY, SHOP_PRIMARY_KEY = key_for(SHOP, "canary"), key_for(SHOP, "primary")
WEB_CANARY_KEY, WEB_PRIMARY_KEY = key_for(WEB, "canary"), key_for(WEB, "primary")
MANY_PRIMARY_KEY = key_for(MANY, "primary")
RAW_SHOP_KEY = key_for(SHOP, "canary", b"\xff\xfe\x80-", lossy_elsewhere=True)
RAW_WEB_KEY = key_for(WEB, "primary", b"caf\xe9-\xc3\x28", lossy_elsewhere=True)
TEST_PIN = (b"traffic", b"test")

CASES = [
    # Size
    Case("60kb-cookie-header-with-the-pin-cookie-last", SHOP,
         ((b"cookie", cookie_filler(60_000) + b"; canary=never"), (b"x-user-id", SHOP_CANARY_KEY)), shop("primary")),
    Case("60kb-of-cookies-in-six-headers-sticky-cookie-in-the-last", WEB,
         tuple((b"cookie", cookie_filler(10_000, b"f%d-" % n)) for n in range(5))
         + ((b"cookie", cookie_filler(10_000, b"g") + b"; uid=" + WEB_CANARY_KEY),), web("canary")),
    Case("60kb-of-cookies-five-cookie-rules-none-matches-sticky-cookie-last", MANY,
         ((b"cookie", cookie_filler(60_000) + b"; uid=" + MANY_PRIMARY_KEY),), web("primary")),
    Case("60kb-of-cookies-five-cookie-rules-the-last-pin-cookie-last", MANY,
         ((b"cookie", cookie_filler(30_000) + b"; pin0=no; uid=" + MANY_PRIMARY_KEY),
          (b"cookie", cookie_filler(30_000, b"g") + b"; pin3=always")), web("canary")),
    Case("1000-cookie-pairs-in-one-header-sticky-cookie-last", WEB,
         ((b"cookie", b"; ".join(b"c%d=v%d" % (n, n) for n in range(999)) + b"; uid=" + WEB_PRIMARY_KEY),),
         web("primary")),
    Case("1000-cookie-headers-sticky-cookie-in-the-last", WEB,
         tuple((b"cookie", b"c%d=v%d" % (n, n)) for n in range(999)) + ((b"cookie", b"uid=" + WEB_CANARY_KEY),),
         web("canary"), over_default_header_count=True),
    Case("pin-header-100-times-the-first-matches", SHOP,
         (TEST_PIN,) + ((b"traffic", b"no"),) * 99 + ((b"x-user-id", SHOP_PRIMARY_KEY),), shop("canary"),
         over_default_header_count=True),
    Case("pin-header-100-times-only-later-ones-match", SHOP,
         ((b"traffic", b"no"),) + (TEST_PIN,) * 99 + ((b"x-user-id", SHOP_PRIMARY_KEY),), shop("primary"),
         over_default_header_count=True),
    Case("sticky-header-100-times-the-first-counts", SHOP,
         ((b"x-user-id", SHOP_CANARY_KEY),) + ((b"x-user-id", SHOP_PRIMARY_KEY),) * 99, shop("canary"),
         over_default_header_count=True),
    # Cookies across Cookie headers (HTTP/2: cookie fields)
    Case("pin-cookie-in-the-second-cookie-header", SHOP,
         ((b"cookie", b"a=1"), (b"cookie", b"canary=never"), (b"x-user-id", SHOP_CANARY_KEY)), shop("primary")),
    Case("first-sticky-cookie-of-two-headers-counts", WEB,
         ((b"cookie", b"uid=" + WEB_CANARY_KEY), (b"cookie", b"uid=" + WEB_PRIMARY_KEY)), web("canary")),
    Case("sticky-cookie-name-in-other-case-is-not-the-key", WEB, ((b"cookie", b"UID=" + WEB_CANARY_KEY),), web(RANDOM)),
    # Authority forms
    Case("authority-upper-case", b"SHOP.EXAMPLE.COM", (TEST_PIN, (b"x-user-id", SHOP_PRIMARY_KEY)),
         shop("canary", b"SHOP.EXAMPLE.COM")),
    Case("authority-mixed-case-with-port", b"Shop.Example.Com:8443", ((b"x-user-id", SHOP_CANARY_KEY),),
         shop("canary", b"Shop.Example.Com:8443")),
    Case("authority-trailing-dot", b"shop.example.com.", ((b"x-user-id", SHOP_PRIMARY_KEY),),
         shop("primary", b"shop.example.com.")),
    Case("authority-trailing-dot-and-port", b"shop.example.com.:80", ((b"x-user-id", SHOP_CANARY_KEY),),
         shop("canary", b"shop.example.com.:80")),
    Case("authority-port-that-is-not-a-number", b"shop.example.com:abc", (TEST_PIN,),
         shop("canary", b"shop.example.com:abc")),
    Case("authority-two-trailing-dots", b"shop.example.com..", (TEST_PIN,), UNSPLIT),
    Case("authority-ipv6-literal-with-port", b"[::1]:8080", ((DECISION_HEADER.encode(), b"canary"),), UNSPLIT),
    Case("authority-port-only", b":8080", (TEST_PIN,), UNSPLIT),
    Case("authority-with-userinfo", b"user@shop.example.com", (TEST_PIN,), UNSPLIT, http2=REFUSED),
    Case("authority-empty", b"", (TEST_PIN,), UNSPLIT, http2=REFUSED),
    Case("authority-missing", None, (TEST_PIN,), REFUSED),
    Case("two-host-headers", None, ((b"host", SHOP), (b"host", OTHER), TEST_PIN), UNSPLIT, protocols=("http1",)),
    Case("authority-and-a-different-host-header", SHOP, ((b"host", OTHER), TEST_PIN), shop("canary"),
         protocols=("http2",)),
    Case("absolute-form-uri-wins-over-host", OTHER, (TEST_PIN,), shop("canary"), protocols=("http1",),
         http1_target=b"http://shop.example.com/"),
    Case("absolute-form-uri-upper-case-with-port", b"elsewhere", ((b"x-user-id", SHOP_PRIMARY_KEY),),
         shop("primary", b"SHOP.example.com:8443"), protocols=("http1",),
         http1_target=b"https://SHOP.example.com:8443/p?q=1"),
    Case("http10-without-host", None, (TEST_PIN,), REFUSED, protocols=("http1",), http1_version=b"HTTP/1.0"),
    Case("connect-to-the-split-host", b"shop.example.com:443", (TEST_PIN,), REFUSED, method=b"CONNECT",
         http1_target=b"shop.example.com:443"),
    # Non-UTF-8 bytes in each field the filter reads
    Case("non-utf8-pin-header-value", SHOP, ((b"traffic", b"t\xffst"), (b"x-user-id", SHOP_PRIMARY_KEY)),
         shop("primary")),
    Case("non-utf8-sticky-header-value", SHOP, ((b"x-user-id", RAW_SHOP_KEY),), shop("canary")),
    Case("non-utf8-sticky-cookie-value", WEB, ((b"cookie", b"a=\xff; uid=" + RAW_WEB_KEY),), web("primary")),
    Case("non-utf8-pin-cookie-value", SHOP, ((b"cookie", b"canary=nev\xffer"), (b"x-user-id", SHOP_CANARY_KEY)),
         shop("canary")),
    Case("non-utf8-cookie-pair-before-the-pin-cookie", SHOP,
         ((b"cookie", b"\xff\xfe=\xfd; canary=never"), (b"x-user-id", SHOP_CANARY_KEY)), shop("primary")),
    Case("non-utf8-decision-header-on-a-split-host", SHOP,
         ((DECISION_HEADER.encode(), b"can\xffary"), (b"x-user-id", SHOP_PRIMARY_KEY)), shop("primary")),
    Case("non-utf8-decision-header-on-another-host", OTHER, ((DECISION_HEADER.encode(), b"canary\xff"),), UNSPLIT),
    Case("non-utf8-authority", b"shop.example.com\xff", (TEST_PIN,), REFUSED),
    Case("non-utf8-path", SHOP, (TEST_PIN,), REFUSED, path=b"/\xff\xfe"),
    Case("percent-encoded-non-utf8-path", SHOP, (TEST_PIN,), shop("canary"), path=b"/%ff%fe"),
    # No usable key: random
    Case("empty-sticky-header", SHOP, ((b"x-user-id", b""),), shop(RANDOM)),
    Case("empty-sticky-cookie", WEB, ((b"cookie", b"uid="),), web(RANDOM)),
]
assert len({case.name for case in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------
# Sending


def http1_bytes(case: Case) -> bytes:
    host = [(b"host", case.authority)] if case.authority is not None else []
    return http1_request(case.method, case.http1_target or case.path, host + list(case.headers), case.http1_version)


def http2_fields(case: Case) -> list[tuple[bytes, bytes]]:
    authority = [(b":authority", case.authority)] if case.authority is not None else []
    if case.method == b"CONNECT":
        pseudo = [(b":method", case.method)] + authority
    else:
        pseudo = [(b":method", case.method), (b":scheme", b"http"), (b":path", case.path)] + authority
    return pseudo + list(case.headers)


def send(port: int, case: Case, protocol: str, times: int) -> list[Reply | str]:
    if protocol == "http1":
        return [http1_exchange(port, http1_bytes(case)) for _ in range(times)]
    with Http2Connection(port) as connection:
        replies = []
        for _ in range(times):
            replies.append(connection.request(http2_fields(case)))
            if isinstance(replies[-1], str):  # the connection is gone
                break
        return replies


# ---------------------------------------------------------------------------------------------
# Checking


def check_routed(reply: Reply | str, expected: Routed):
    assert isinstance(reply, Reply) and reply.status == 200, reply
    assert reply.upstream == expected.variant, reply.headers
    assert reply.header("x-seen-decision") == expected.variant.encode(), reply.headers
    if expected.forwarded_host is not None:
        assert reply.header("x-seen-authority") == b"shop-%s.example.com" % expected.variant.encode(), reply.headers
        assert reply.header("x-seen-forwarded-host") == expected.forwarded_host, reply.headers
    else:
        assert reply.header("x-seen-forwarded-host") is None, reply.headers


def check(replies: list[Reply | str], expected: Routed | str):
    if isinstance(expected, Routed) and expected.variant == RANDOM:
        variants = [reply.upstream if isinstance(reply, Reply) else reply for reply in replies]
        for reply, variant in zip(replies, variants):
            assert variant in ("primary", "canary"), reply
            check_routed(reply, Routed(variant, expected.forwarded_host))
        assert set(variants) == {"primary", "canary"}, variants
    elif isinstance(expected, Routed):
        for reply in replies:
            check_routed(reply, expected)
    elif expected == UNSPLIT:
        for reply in replies:
            assert isinstance(reply, Reply) and reply.status == 200, reply
            assert reply.upstream == "other" and reply.header("x-seen-decision") is None, reply.headers
    else:
        for reply in replies:
            if isinstance(reply, Reply):
                assert 400 <= reply.status < 500 and reply.upstream is None, (reply.status, reply.headers)
            else:
                assert reply in ("reset", "closed", "goaway"), reply


# ---------------------------------------------------------------------------------------------
# The gateway


@pytest.fixture(scope="module")
def upstream_ports():
    with answering_upstream() as upstream:
        yield listener_ports(upstream)


@pytest.fixture(scope="module", params=list(LIMITS))
def gateway(request, upstream_ports) -> tuple[Envoy, str]:
    """Both variant hosts route to their release; every other host goes by the decision header to
    a release, or to `other` without one, so a request the filter did not decide shows."""
    by_decision = [to_cluster(variant, [{"name": DECISION_HEADER, "string_match": {"exact": variant}}])
                   for variant in ("canary", "primary")]
    hosts = [vhost(f"shop-{v}.example.com", [f"shop-{v}.example.com"], [to_cluster(v)]) for v in ("primary", "canary")]
    hosts.append({"name": "others", "domains": ["*"], "routes": [*by_decision, to_cluster("other")]})
    config = bootstrap(json.dumps(FILTER_CONFIG), upstream_ports, hosts, failure_policy="FAIL_RELOAD")
    connection_manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    connection_manager.update(LIMITS[request.param])
    # A refused HTTP/2 connection is closed after 0.1 s rather than the default second.
    connection_manager["delayed_close_timeout"] = "0.1s"
    with Envoy(config) as envoy:
        yield envoy, request.param


@pytest.mark.parametrize("case, protocol", [(case, protocol) for case in CASES for protocol in case.protocols],
                         ids=[f"{case.name}-{protocol}" for case in CASES for protocol in case.protocols])
def test_hostile_request(gateway, case: Case, protocol: str):
    envoy, limits = gateway
    expected = case.expected(protocol, limits)
    random = isinstance(expected, Routed) and expected.variant == RANDOM
    replies = send(envoy.port, case, protocol, REPEATS_FOR_RANDOM if random else REPEATS)
    check(replies, expected)
    assert not vm_failures(envoy), vm_failures(envoy)
