"""A header name that is not an HTTP token never reaches the filter: Envoy's HTTP/1.1 and HTTP/2
codecs refuse the request before any filter runs. The filter relies on it: it reads the whole
header map through the SDK, which decodes every name as UTF-8 and panics the VM otherwise.

The requests are written as raw bytes on the socket (HTTP/2 as frames), so no client library
cleans the names up first. The plugin runs with Envoy's FAIL_RELOAD policy only so that a failed
VM is counted (`wasm.canary-split.vm_reload*`): with the default policy a failure shows only as
503s."""

import json
import socket
import struct

import hpack
import pytest

from harness import DECISION_HEADER, Client, Envoy, bootstrap, catch_all_route, split_routes, wasm_failures

PUBLIC = "shop.example.com"
VALID_NAME = b"x-user"

# Not tokens (RFC 9110 section 5.6.2), or not UTF-8, or both.
BAD_NAMES = [
    b"x-\xff",
    b"\xfe\xff",
    b"x-\x80",
    "x-café".encode(),
    "ключ".encode(),
    b"x user",
    b"x-user ",
    b"x(user)",
    b"x,user",
    b"x\"user",
    b"x\x01user",
    b"x\x7fuser",
    b"x\tuser",
    b"x\x00user",
    b"",
]
# HTTP/2 carries names as length-prefixed strings, so separators and line breaks fit in one, and
# its names must be lower case.
BAD_NAMES_HTTP2 = BAD_NAMES + [b"x:user", b"x\r\nuser", b"X-User", b"x-USER"]


@pytest.fixture
def envoy(upstreams):
    """A gateway whose only route splits everything to canary: a request the filter routes reaches
    canary, one it never saw reaches primary."""
    filter_config = json.dumps({"routes": [{"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": 100}]})
    config = bootstrap(filter_config, upstreams, split_routes(PUBLIC, None, None) + [catch_all_route()])
    connection_manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (plugin,) = [f for f in connection_manager["http_filters"] if f["name"] == "canary-split"]
    plugin["typed_config"]["config"]["failure_policy"] = "FAIL_RELOAD"
    # Envoy drops an HTTP/2 connection it refuses without a word, then waits for the client to
    # close first: 0.1 s, not the default second, keeps the test short.
    connection_manager["delayed_close_timeout"] = "0.1s"
    with Envoy(config) as envoy:
        yield envoy


def http1_get(port: int, header_name: bytes) -> tuple[int, dict[bytes, bytes]]:
    """One raw HTTP/1.1 request carrying `header_name`; returns the status and response headers."""
    request = b"GET / HTTP/1.1\r\nhost: %s\r\n%s: v\r\nconnection: close\r\n\r\n" % (PUBLIC.encode(), header_name)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head = reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    status = int(head[0].split(b" ")[1])
    headers = dict(line.split(b": ", 1) for line in head[1:])
    return status, headers


FRAME_HEADERS, FRAME_RST_STREAM, FRAME_SETTINGS, FRAME_GOAWAY = 0x1, 0x3, 0x4, 0x7
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS = 0x1, 0x1, 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def http2_get(port: int, header_name: bytes) -> tuple[int, dict[bytes, bytes]] | str:
    """One raw HTTP/2 (h2c) request carrying `header_name`, on a new connection; returns the
    status and response headers, or "reset" / "goaway" / "closed" if Envoy refused the stream."""
    fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", PUBLIC.encode()),
              (header_name, b"v")]
    block = hpack.Encoder().encode(fields, huffman=False)
    decoder = hpack.Decoder()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(FRAME_SETTINGS, 0, 0, b"")
                     + frame(FRAME_HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, 1, block))
        while True:
            try:
                header = receive_exactly(sock, 9)
                length = int.from_bytes(header[:3], "big")
                kind, flags, stream = struct.unpack(">BBI", header[3:])
                payload = receive_exactly(sock, length)
            except EOFError:
                return "closed"
            if kind == FRAME_SETTINGS and not flags & FLAG_ACK:
                sock.sendall(frame(FRAME_SETTINGS, FLAG_ACK, 0, b""))
            elif kind == FRAME_GOAWAY:
                return "goaway"
            elif kind == FRAME_RST_STREAM and stream == 1:
                return "reset"
            elif kind == FRAME_HEADERS and stream == 1:
                assert flags & FLAG_END_HEADERS, "response headers in CONTINUATION frames are not read here"
                headers = dict(decoder.decode(payload, raw=True))
                return int(headers[b":status"]), headers


def protocol_errors(envoy: Envoy) -> int:
    """Connections Envoy's codec closed for a malformed request."""
    name = "http.gateway.downstream_cx_protocol_error"
    return envoy.stats(f"^{name}$")[name]


def assert_routed_by_the_filter(response: tuple[int, dict[bytes, bytes]] | str):
    assert response != "closed" and response[0] == 200, response
    assert response[1][b"x-upstream"] == b"canary", response


def assert_vm_never_failed(envoy: Envoy):
    # Each reload, or reload refused during its backoff, follows a failed VM.
    reloads = envoy.stats("^wasm\\.canary-split\\.vm_reload")
    assert set(reloads) == {f"wasm.canary-split.vm_reload{s}" for s in ("", "_backoff", "_failure", "_success")}
    assert set(reloads.values()) == {0}, reloads
    assert not wasm_failures(envoy.settled_log())


def test_http1_names_that_are_not_tokens_are_refused_before_the_filter(envoy):
    assert_routed_by_the_filter(http1_get(envoy.port, VALID_NAME))
    for name in BAD_NAMES:
        errors_before = protocol_errors(envoy)
        status, headers = http1_get(envoy.port, name)
        assert status == 400 and b"x-upstream" not in headers, (name, status)
        assert protocol_errors(envoy) == errors_before + 1, name
    assert_routed_by_the_filter(http1_get(envoy.port, VALID_NAME))
    assert Client(envoy.port).get(PUBLIC).headers[DECISION_HEADER] == "canary"
    assert_vm_never_failed(envoy)


def test_http2_names_that_are_not_tokens_are_refused_before_the_filter(envoy):
    assert_routed_by_the_filter(http2_get(envoy.port, VALID_NAME))
    for name in BAD_NAMES_HTTP2:
        errors_before = protocol_errors(envoy)
        outcome = http2_get(envoy.port, name)
        # Envoy's HTTP/2 codec rejects the headers and drops the connection (or, if configured
        # to, resets the stream); a 4xx would do as well. The filter's 200 from canary would not.
        assert outcome in ("closed", "reset", "goaway") or 400 <= outcome[0] < 500, (name, outcome)
        assert protocol_errors(envoy) == errors_before + 1, (name, outcome)
    assert_routed_by_the_filter(http2_get(envoy.port, VALID_NAME))
    assert Client(envoy.port).get(PUBLIC).headers[DECISION_HEADER] == "canary"
    assert_vm_never_failed(envoy)
