"""The upstream for gateway tests under load or hostile input: an Envoy that answers every request
itself and tells in its response headers what the gateway forwarded. A process of its own keeps
pace with any load; its raised header limits refuse nothing the gateway forwards."""

from __future__ import annotations

import json
import urllib.request

from harness import DECISION_HEADER, Envoy

RELEASES = ("primary", "canary", "other")
# Response header -> the forwarded request's header it reports.
SEEN = {"x-seen-decision": DECISION_HEADER, "x-seen-authority": ":authority",
        "x-seen-forwarded-host": "x-forwarded-host"}
MAX_REQUEST_HEADERS_KB, MAX_HEADERS_COUNT = 96, 2000


def answering_upstream() -> Envoy:
    """One listener per release, each answering with the release's name in `x-upstream` and the
    `SEEN` headers; a header the request lacked is left out."""
    def listener(release: str) -> dict:
        echo = [{"header": {"key": seen, "value": f"%REQ({request_header})%"}} for seen, request_header in SEEN.items()]
        route = {"match": {"prefix": "/"},
                 "direct_response": {"status": 200, "body": {"inline_string": f"{release}\n"}},
                 "response_headers_to_add": [{"header": {"key": "x-upstream", "value": release}}, *echo]}
        return {
            "name": release,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": release,
                    "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
                    "common_http_protocol_options": {"max_headers_count": MAX_HEADERS_COUNT},
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                }}]}],
        }

    config = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
              "static_resources": {"listeners": [listener(release) for release in RELEASES]}}
    return Envoy(config)


def listener_ports(envoy: Envoy) -> dict[str, int]:
    """Each listener's port, by listener name."""
    admin = envoy.admin_address_path.read_text().strip()
    with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=5) as reply:
        statuses = json.loads(reply.read())["listener_statuses"]
    return {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses}
