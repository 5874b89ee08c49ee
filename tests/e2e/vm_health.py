"""Whether the filter's Wasm VM ever failed, from Envoy's own counters. Under the plugin's
FAIL_RELOAD policy every VM failure is followed by a reload (or a reload refused while backing
off), and Envoy counts each in `wasm.canary-split.vm_reload*`."""

from __future__ import annotations

import urllib.parse
import urllib.request

from harness import Envoy, wasm_failures

RELOAD_COUNTERS = {f"wasm.canary-split.vm_reload{s}" for s in ("", "_backoff", "_failure", "_success")}


def stats(envoy: Envoy, pattern: str) -> dict[str, int]:
    """Envoy's counters and gauges whose names match a regular expression."""
    admin = envoy.admin_address_path.read_text().strip()
    query = urllib.parse.quote(pattern)
    with urllib.request.urlopen(f"http://{admin}/stats?filter={query}", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return {name: int(value) for name, value in (line.split(": ", 1) for line in lines) if value.isdigit()}


def vm_failures(envoy: Envoy) -> list[str]:
    """Signs of a failed VM: reload counters above zero, and panic or trap lines in the log.
    Empty when the VM never failed."""
    reloads = stats(envoy, r"^wasm\.canary-split\.vm_reload")
    if set(reloads) != RELOAD_COUNTERS:
        return [f"the plugin's reload counters are missing: {reloads}"]
    return [f"{name}: {value}" for name, value in sorted(reloads.items()) if value] + wasm_failures(envoy.settled_log())
