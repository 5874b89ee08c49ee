"""The module Envoy loads is the post-linked one: it exports just the callbacks the filter uses
(scripts/post_link.py), and the end-to-end tests load and serve with exactly that module."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness import MODULE  # noqa: E402
from post_link import KEPT_EXPORTS  # noqa: E402

EXPORT_SECTION = 7


def leb128(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def exports(module: bytes) -> list[str]:
    assert module[:4] == b"\0asm", "not a Wasm module"
    names, at = [], 8
    while at < len(module):
        section, at = module[at], at + 1
        size, at = leb128(module, at)
        if section == EXPORT_SECTION:
            count, entry = leb128(module, at)
            for _ in range(count):
                length, entry = leb128(module, entry)
                names.append(module[entry:entry + length].decode())
                entry += length + 1  # the name, then the export's kind
                _, entry = leb128(module, entry)  # and its index
        at += size
    return names


def test_the_module_exports_only_what_the_filter_uses():
    kept = exports(MODULE.read_bytes())
    assert sorted(kept) == sorted(KEPT_EXPORTS)
    # The guard counts responses in the response-headers callback and merges counts on a tick.
    assert {"proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_tick"} <= set(kept)


def test_the_cargo_module_exports_every_sdk_callback():
    cargo_module = ROOT / "target" / "wasm32-wasip1" / "release" / "canary_split.wasm"
    found = set(exports(cargo_module.read_bytes()))
    assert set(KEPT_EXPORTS) < found and {"proxy_on_response_body", "proxy_on_log", "proxy_on_done"} <= found
