"""Copies a Wasm module without some of its exported functions (for `run.py --profile`).

The Rust proxy-wasm SDK exports every stream callback, so Envoy enters the VM for each of them
(response headers, response body, log, done) even when the filter does nothing there; Envoy skips
a callback the module does not export. Dropping the exports (the code stays) measures what those
VM entries cost.
"""

from __future__ import annotations

import pathlib

EXPORT_SECTION = 7

# Stream callbacks canary-split leaves to the SDK's defaults (which continue and do nothing).
UNUSED_STREAM_CALLBACKS = (
    "proxy_on_request_body", "proxy_on_request_trailers", "proxy_on_response_headers",
    "proxy_on_response_body", "proxy_on_response_trailers", "proxy_on_log", "proxy_on_done",
)


def _read_u32(data: bytes, at: int) -> tuple[int, int]:
    """An unsigned LEB128 number at `at`; returns it and the offset after it."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _u32(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def without_exports(source: pathlib.Path, target: pathlib.Path, names: tuple[str, ...]) -> list[str]:
    """Writes `source` to `target` without the exports in `names`; returns the ones dropped."""
    data = source.read_bytes()
    out, at, dropped = bytearray(data[:8]), 8, []  # magic and version
    while at < len(data):
        section_id = data[at]
        size, start = _read_u32(data, at + 1)
        body, at = data[start:start + size], start + size
        if section_id == EXPORT_SECTION:
            count, pos = _read_u32(body, 0)
            kept = []
            for _ in range(count):
                name_size, name_start = _read_u32(body, pos)
                name = body[name_start:name_start + name_size].decode()
                _, end = _read_u32(body, name_start + name_size + 1)  # after the kind byte: the index
                if name in names:
                    dropped.append(name)
                else:
                    kept.append(body[pos:end])
                pos = end
            body = _u32(len(kept)) + b"".join(kept)
        out += bytes([section_id]) + _u32(len(body)) + body
    target.write_bytes(bytes(out))
    return dropped
