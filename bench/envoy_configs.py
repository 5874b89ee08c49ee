"""Envoy bootstraps for the benchmark: the upstream (a separate Envoy answering with
`direct_response`) and one gateway per configuration compared, in two shapes:

- bare: plain-text listener, only the split host's routes, the filter under test, a CORS filter
  and the router;
- realistic: shaped like an Istio ingress gateway: TLS termination (ALPN h2 and HTTP/1.1), request
  ids, an access log to a file, the filter under test, fault and CORS filters, Istio's route
  defaults (retry policy, no timeout), and a few hundred other virtual hosts.

Filters are in an Istio gateway's order: AUTHN plugins, then fault and CORS, then the router
(pilot/pkg/networking/core/listener_builder.go). Envoy's connection manager resolves the route
before the first filter runs, so in either shape the route is resolved before the decision and
must be selected again.
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


def _listener(virtual_hosts: list[dict], http_filters: list[dict], stat_prefix: str,
              connection_manager: dict | None = None, transport_socket: dict | None = None) -> dict:
    """`connection_manager`: more HttpConnectionManager fields; `transport_socket`: TLS."""
    chain: dict = {"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {"name": stat_prefix, "virtual_hosts": virtual_hosts},
            "http_filters": http_filters + [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            **(connection_manager or {}),
        },
    }]}
    if transport_socket:
        chain["transport_socket"] = transport_socket
    return {"name": stat_prefix, "address": _address(0), "filter_chains": [chain]}


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
            {"header": {"key": "x-seen-request-id", "value": "%REQ(x-request-id)%"}},
        ],
    }
    # It must not make up request ids itself: the realistic gateway's are checked.
    listener = _listener([{"name": "all", "domains": ["*"], "routes": [route]}], [], "upstream",
                         {"generate_request_id": False})
    return _bootstrap(listener, [])


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
# Without faults of its own, as Istio renders it: VirtualServices add them per route.
FAULT = {"name": "envoy.filters.http.fault", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}}


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


def _clusters(upstream_port: int) -> list[dict]:
    def cluster(name: str) -> dict:
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(upstream_port)}}]}]}}

    return [cluster("primary"), cluster("canary")]


def gateway(virtual_hosts: list[dict], filters: list[dict], upstream_port: int) -> dict:
    """The bare gateway: only what the comparison needs."""
    return _bootstrap(_listener(virtual_hosts, filters + [CORS], "gateway"), _clusters(upstream_port))


# ---------------------------------------------------------------------------------------------
# The realistic gateway

OTHER_HOSTS = 300
# The fields of an Istio gateway's default access log line.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% '
    '%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% '
    '%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n'
)


def _as_istio_renders(route: dict) -> dict:
    """A route with the defaults Istio gives every HTTP route: no timeout, two retries."""
    action = route["route"]
    return {**route, "route": {
        **action,
        "timeout": "0s",
        "retry_policy": {
            "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            "num_retries": 2,
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
            "host_selection_retry_max_attempts": "5",
        },
        "max_grpc_timeout": "0s",
    }}


def _other_virtual_hosts() -> list[dict]:
    """Other services on the same gateway, a few routes each (they go to the primary cluster:
    only their number and shape matter here)."""
    def routes() -> list[dict]:
        return [{"match": {"prefix": prefix}, "route": {"cluster": "primary"}} for prefix in ("/api/", "/static/", "/")]

    return [_vhost(f"app-{i}.example.com", routes()) for i in range(OTHER_HOSTS)]


def realistic_gateway(split_virtual_hosts: list[dict], filters: list[dict], upstream_port: int,
                      certificate: pathlib.Path, private_key: pathlib.Path, access_log: pathlib.Path) -> dict:
    """`split_virtual_hosts`: the split host's virtual hosts (one of the route tables above),
    placed among the other hosts; `filters` run before fault and CORS, as AUTHN plugins do."""
    others = _other_virtual_hosts()
    middle = len(others) // 2
    virtual_hosts = [{**host, "routes": [_as_istio_renders(r) for r in host["routes"]]}
                     for host in others[:middle] + split_virtual_hosts + others[middle:]]
    connection_manager = {
        "generate_request_id": True,
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "server_name": "istio-envoy",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(access_log),
            "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
        }}],
    }
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [{"certificate_chain": {"filename": str(certificate)},
                                  "private_key": {"filename": str(private_key)}}],
        },
    }}
    listener = _listener(virtual_hosts, filters + [FAULT, CORS], "gateway", connection_manager, tls)
    return _bootstrap(listener, _clusters(upstream_port))
