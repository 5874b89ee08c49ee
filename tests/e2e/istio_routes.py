"""The manifests in istio/, turned into what the ingress gateway's Envoy runs: the WasmPlugin's
pluginConfig, and the VirtualServices bound to the gateway as Envoy route tables, one per
Gateway server as Istio builds them.

Only the subset of Gateway and VirtualService the project uses is translated (HTTP and
TLS-terminating HTTPS servers with exact or wildcard hosts, an HTTPS redirect; VirtualService
hosts, gateways, header and uri matches, one destination with a port, response headers set on a
route). Anything else raises, so the tests can never run against routes that differ silently from
the ones users deploy.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import yaml

ISTIO_DIR = pathlib.Path(__file__).resolve().parents[2] / "istio"


def load_manifests(directory: pathlib.Path = ISTIO_DIR) -> list[dict]:
    documents = []
    for path in sorted(directory.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def of_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [doc for doc in manifests if doc.get("kind") == kind]


def wasm_plugin(manifests: list[dict]) -> dict:
    (plugin,) = [p for p in of_kind(manifests, "WasmPlugin") if p["spec"].get("pluginName") == "canary-split"]
    return plugin


def vm_environment(plugin: dict) -> dict:
    """The WasmPlugin's `vmConfig.env` as Istio renders it into the VM config's
    `environment_variables`: `valueFrom: HOST` names a variable passed on from the gateway's own
    environment (`host_env_keys`), `INLINE` (the default) sets one here (`key_values`)."""
    environment: dict = {}
    for variable in plugin["spec"].get("vmConfig", {}).get("env", []):
        if variable.get("valueFrom", "INLINE") == "HOST":
            environment.setdefault("host_env_keys", []).append(variable["name"])
        else:
            environment.setdefault("key_values", {})[variable["name"]] = variable.get("value", "")
    return environment


def gateways_of_plugin(manifests: list[dict]) -> list[str]:
    """`namespace/name` of every Gateway served by the workloads the WasmPlugin selects."""
    selector = wasm_plugin(manifests)["spec"]["selector"]["matchLabels"]
    return [f'{g["metadata"]["namespace"]}/{g["metadata"]["name"]}' for g in of_kind(manifests, "Gateway")
            if selector.items() <= g["spec"]["selector"].items()]


def bound_gateways(virtual_service: dict) -> list[str]:
    namespace = virtual_service["metadata"]["namespace"]
    return [g if "/" in g else f"{namespace}/{g}" for g in virtual_service["spec"].get("gateways", [])]


def cluster_name(destination: dict) -> str:
    return f'{destination["host"]}:{destination["port"]["number"]}'


def _string_match(match: dict, where: str) -> dict:
    (kind, value), = match.items()
    if kind == "exact":
        return {"exact": value}
    if kind == "prefix":
        return {"prefix": value}
    if kind == "regex":
        return {"safe_regex": {"regex": value}}
    raise ValueError(f"{where}: unsupported string match {kind!r}")


def _route_match(match: dict, where: str) -> dict:
    unsupported = set(match) - {"headers", "uri", "name"}
    if unsupported:
        raise ValueError(f"{where}: unsupported match fields {sorted(unsupported)}")
    envoy_match: dict = {"prefix": "/"}
    if "uri" in match:
        uri = _string_match(match["uri"], f"{where}.uri")
        envoy_match = {"path": uri["exact"]} if "exact" in uri else (
            {"prefix": uri["prefix"]} if "prefix" in uri else {"safe_regex": uri["safe_regex"]})
    if "headers" in match:
        envoy_match["headers"] = [{"name": name, "string_match": _string_match(m, f"{where}.headers.{name}")}
                                  for name, m in match["headers"].items()]
    return envoy_match


def _response_headers_to_add(headers: dict, where: str) -> list[dict]:
    """`headers.response.set` as Istio renders it on the route (translateAppendHeaders in
    pilot/pkg/networking/core/route/route.go): each header overwrites any value the upstream
    sent, in order of name."""
    if set(headers) != {"response"} or set(headers["response"]) != {"set"}:
        raise ValueError(f"{where}: only headers.response.set is supported")
    return [{"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for name, value in sorted(headers["response"]["set"].items())]


def _routes(vs: dict) -> tuple[list[dict], set[str]]:
    """A VirtualService's http routes as Envoy routes, and the clusters they use."""
    name = f'{vs["metadata"]["namespace"]}/{vs["metadata"]["name"]}'
    routes, clusters = [], set()
    for index, http in enumerate(vs["spec"]["http"]):
        where = f"{name}.http[{index}]"
        unsupported = set(http) - {"name", "match", "route", "headers"}
        if unsupported:
            raise ValueError(f"{where}: unsupported fields {sorted(unsupported)}")
        if len(http["route"]) != 1 or set(http["route"][0]) != {"destination"}:
            raise ValueError(f"{where}: exactly one destination, no weight or headers of its own")
        cluster = cluster_name(http["route"][0]["destination"])
        clusters.add(cluster)
        response_headers = _response_headers_to_add(http["headers"], f"{where}.headers") if "headers" in http else []
        for match_index, match in enumerate(http.get("match") or [{}]):
            route = {"match": _route_match(match, f"{where}.match[{match_index}]"), "route": {"cluster": cluster}}
            if response_headers:
                route["response_headers_to_add"] = response_headers
            routes.append(route)
    return routes, clusters


def route_table_name(server: dict, gateway: str) -> str:
    """The route table Istio gives a Gateway server (gatewayRDSRouteName in
    pilot/pkg/model/gateway.go): every plain HTTP server on a port shares one; each HTTPS server
    that terminates TLS has its own, named after its port, port name and Gateway."""
    port = server["port"]
    bind = f'.{server["bind"]}' if server.get("bind") else ""
    if port["protocol"] == "HTTP":
        return f'http.{port["number"]}{bind}'
    if port["protocol"] == "HTTPS" and server.get("tls", {}).get("mode") != "PASSTHROUGH":
        namespace, name = gateway.split("/")
        return f'https.{port["number"]}.{port["name"]}.{name}.{namespace}{bind}'
    raise ValueError(f'{gateway}: unsupported server protocol {port["protocol"]!r} (HTTP or terminated HTTPS)')


def server_accepts(server_host: str, gateway_namespace: str, namespace: str, host: str) -> bool:
    """Whether a server's `hosts` entry (`[namespace/]host`, the host possibly `*` or `*.suffix`)
    admits `host` from a VirtualService in `namespace`."""
    host_namespace, _, pattern = server_host.rpartition("/")
    if host_namespace == ".":
        host_namespace = gateway_namespace
    if host_namespace not in ("", "*", namespace):
        return False
    pattern, host = pattern.lower(), host.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


@dataclass
class RouteTable:
    """One Envoy route configuration of the gateway, and the Gateway servers it serves."""
    name: str
    servers: list[str] = field(default_factory=list)
    virtual_hosts: list[dict] = field(default_factory=list)
    clusters: set[str] = field(default_factory=set)

    def domains(self) -> set[str]:
        return {domain for vhost in self.virtual_hosts for domain in vhost["domains"] if not domain.endswith(":*")}


def route_tables(manifests: list[dict], gateways: list[str]) -> dict[str, RouteTable]:
    """The route tables of the gateway workload that serves `gateways` (`namespace/name`), by
    name: each holds a virtual host for every VirtualService bound to one of its servers' Gateways,
    with the hosts those servers accept (what buildGatewayHTTPRouteConfig does)."""
    servers_by_table: dict[str, list[tuple[str, int, dict]]] = {}
    for gateway in of_kind(manifests, "Gateway"):
        gateway_name = f'{gateway["metadata"]["namespace"]}/{gateway["metadata"]["name"]}'
        if gateway_name not in gateways:
            continue
        for index, server in enumerate(gateway["spec"]["servers"]):
            table = route_table_name(server, gateway_name)
            servers_by_table.setdefault(table, []).append((gateway_name, index, server))
    tables = {}
    for table_name, servers in servers_by_table.items():
        table = RouteTable(table_name, [f"{g} servers[{i}]" for g, i, _ in servers])
        for vs in of_kind(manifests, "VirtualService"):
            namespace = vs["metadata"]["namespace"]
            accepted, redirected = [], False
            for host in vs["spec"]["hosts"]:
                if "*" in host:
                    raise ValueError(f'{namespace}/{vs["metadata"]["name"]}: only exact hosts are supported')
                accepting = [server for gateway, _, server in servers if gateway in bound_gateways(vs)
                             and any(server_accepts(h, gateway.split("/")[0], namespace, host) for h in server["hosts"])]
                if accepting:
                    accepted.append(host)
                    redirected |= any(s.get("tls", {}).get("httpsRedirect") for s in accepting)
            if not accepted:
                continue
            routes, clusters = _routes(vs)
            vhost = {"name": f'{namespace}/{vs["metadata"]["name"]}',
                     "domains": [d for host in accepted for d in (host, f"{host}:*")], "routes": routes}
            if redirected:
                vhost["require_tls"] = "ALL"  # Istio's httpsRedirect: a 301 to https for every request
            table.virtual_hosts.append(vhost)
            table.clusters |= clusters
        tables[table_name] = table
    return tables


def route_table_serving(manifests: list[dict], gateways: list[str], host: str, protocol: str = "HTTPS") -> RouteTable:
    """The route table a request for `host` uses on the gateway's port for `protocol`."""
    (table,) = [t for t in route_tables(manifests, gateways).values()
                if t.name.startswith(f"{protocol.lower()}.") and host in t.domains()]
    return table
