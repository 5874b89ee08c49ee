"""Envoy bootstraps for the benchmark: the upstream (a separate Envoy answering with
`direct_response`) and one gateway per configuration compared.

Every gateway has the same listener, a CORS filter ahead of the one under test (as in an Istio
gateway, so the route is resolved before the decision and must be selected again) and the router.
"""

from __future__ import annotations

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent

PUBLIC_HOST = "shop.example.com"
PRIMARY_HOST = "shop-primary.example.com"
CANARY_HOST = "shop-canary.example.com"
DECISION_HEADER = "x-canary-route"
CANARY_PERCENT = 12


def _address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _listener(virtual_hosts: list[dict], http_filters: list[dict], stat_prefix: str) -> dict:
    return {
        "name": stat_prefix,
        "address": _address(0),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": stat_prefix,
                "route_config": {"name": stat_prefix, "virtual_hosts": virtual_hosts},
                "http_filters": http_filters + [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    }


def _bootstrap(listener: dict, clusters: list[dict]) -> dict:
    return {
        "admin": {"address": _address(0)},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def upstream() -> dict:
    """Answers every request itself, echoing what the gateway decided in response headers."""
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
        "response_headers_to_add": [
            {"header": {"key": "x-seen-decision", "value": f"%REQ({DECISION_HEADER})%"}},
            {"header": {"key": "x-seen-authority", "value": "%REQ(:authority)%"}},
        ],
    }
    return _bootstrap(_listener([{"name": "all", "domains": ["*"], "routes": [route]}], [], "upstream"), [])


def _vhost(host: str, routes: list[dict]) -> dict:
    return {"name": host, "domains": [host, f"{host}:*"], "routes": routes}


def _to(cluster: str, decision: str | None = None) -> dict:
    match: dict = {"prefix": "/"}
    if decision:
        match["headers"] = [{"name": DECISION_HEADER, "string_match": {"exact": decision}}]
    return {"match": match, "route": {"cluster": cluster}}


# Route tables. `split` is what the plain VirtualServices render (see the README): each variant
# host to its service, the public host by decision header, primary by default.
PLAIN_ROUTES = [_vhost(PUBLIC_HOST, [_to("primary")])]
WEIGHTED_ROUTES = [_vhost(PUBLIC_HOST, [{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
    {"name": "primary", "weight": 100 - CANARY_PERCENT},
    {"name": "canary", "weight": CANARY_PERCENT},
]}}}])]
SPLIT_ROUTES = [
    _vhost(PRIMARY_HOST, [_to("primary")]),
    _vhost(CANARY_HOST, [_to("canary")]),
    _vhost(PUBLIC_HOST, [_to("canary", "canary"), _to("primary")]),
]

CORS = {"name": "envoy.filters.http.cors", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}


def lua_filter() -> dict:
    return {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": (HERE / "envoy" / "canary_split.lua").read_text()},
    }}


def wasm_filter(module: pathlib.Path, plugin_config: str, vm_config: str = "") -> dict:
    """`vm_config` goes to the VM, which canary-split and the probe ignore: it lets a probe
    carry the same bootstrap size as canary-split's plugin configuration."""
    vm: dict = {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(module)}}}
    if vm_config:
        vm["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": vm_config}
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "bench", "root_id": "bench",
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_config},
            "vm_config": vm,
        },
    }}


def filter_config(authority_mode: bool, sticky: bool, extra_routes: int = 0) -> str:
    """canary-split's configuration for the public host (pin, optional sticky header, 12 %),
    plus `extra_routes` filler routes for the time-to-configure measurements."""
    def route(host: str, primary: str, canary: str) -> dict:
        entry: dict = {
            "host": host,
            "primary": {"host": primary} if authority_mode else {},
            "canary": {"host": canary} if authority_mode else {},
            "canary_weight": CANARY_PERCENT,
            "pin": [{"header": "traffic", "value": "test", "to": "canary"}],
        }
        if sticky:
            entry["sticky"] = {"header": "x-user-id"}
        return entry

    routes = [route(PUBLIC_HOST, PRIMARY_HOST, CANARY_HOST)]
    routes += [route(f"svc-{i}.example.com", f"svc-{i}-primary.example.com", f"svc-{i}-canary.example.com")
               for i in range(1, extra_routes + 1)]
    return json.dumps({"decision_header": DECISION_HEADER, "routes": routes})


def gateway(virtual_hosts: list[dict], filters: list[dict], upstream_port: int, cors_ahead: bool = True) -> dict:
    """`cors_ahead=False` leaves out the CORS filter, to show what it changes (nothing: Envoy
    resolves the route before the first filter anyway)."""
    def cluster(name: str) -> dict:
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(upstream_port)}}]}]}}

    http_filters = ([CORS] if cors_ahead else []) + filters
    return _bootstrap(_listener(virtual_hosts, http_filters, "gateway"), [cluster("primary"), cluster("canary")])
