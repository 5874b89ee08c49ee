#!/usr/bin/env python3
"""Post-link pass on the filter module, with binaryen (Debian's `binaryen`):

1. `wasm-metadce` drops every export Envoy should not call. The proxy-wasm SDK exports all of
   the ABI's callbacks (response headers, body, trailers, log, done, ...), and Envoy enters the
   VM for each exported stream callback on every request, whether the filter uses it or not;
   `make bench` prices those entries beside this module.
2. `wasm-opt -Oz` shrinks what is left.

Usage: post_link.py CARGO_MODULE OUT_MODULE [--without EXPORT]...

`--without` drops one more of the kept exports: `make bench` builds the filter without
proxy_on_response_headers to price what exporting that callback costs a request.
"""

import json
import pathlib
import subprocess
import sys
import tempfile

# What Envoy needs from the module: its memory, the ABI version it was built for, the VM and
# plugin lifecycle, the stream callbacks the filter acts in (request headers: the decision;
# response headers: a sticky cookie handed out, and the guard counts responses) and the root
# context's tick (the guard merges its workers' counts). proxy_on_delete stays so the SDK forgets
# each stream; without proxy_on_done Envoy deletes a stream straight away.
KEPT_EXPORTS = [
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_response_headers",
    "proxy_on_tick",
    "proxy_on_delete",
]

# The Wasm features rustc's wasm32-wasip1 target emits.
FEATURES = ["--enable-bulk-memory", "--enable-sign-ext", "--enable-nontrapping-float-to-int",
            "--enable-mutable-globals"]


def main(cargo_module: str, out_module: str, without: list[str]) -> None:
    unknown = set(without) - set(KEPT_EXPORTS)
    if unknown:
        sys.exit(f"--without {', '.join(sorted(unknown))}: not a kept export")
    kept = [name for name in KEPT_EXPORTS if name not in without]
    graph = [{"name": "envoy", "root": True, "reaches": kept}]
    graph += [{"name": name, "export": name} for name in kept]
    with tempfile.TemporaryDirectory() as tmp:
        graph_file = pathlib.Path(tmp) / "graph.json"
        graph_file.write_text(json.dumps(graph))
        trimmed = pathlib.Path(tmp) / "trimmed.wasm"
        # metadce lists what it removed on stdout; only failures matter here.
        subprocess.run(["wasm-metadce", *FEATURES, "-f", str(graph_file), cargo_module, "-o", str(trimmed)],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["wasm-opt", *FEATURES, "-Oz", str(trimmed), "-o", out_module], check=True)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    options = arguments[2:]
    if len(arguments) < 2 or len(options) % 2 or any(flag != "--without" for flag in options[::2]):
        sys.exit(__doc__)
    main(arguments[0], arguments[1], options[1::2])
