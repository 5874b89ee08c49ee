"""The manifests in istio/, turned into what the ingress gateway's Envoy runs: the WasmPlugin's
pluginConfig and the listeners it runs on, and the VirtualServices bound to the gateway as Envoy
route tables, as Istio builds them. Each rule is listed with the Istio file it comes from in
ISTIO.md beside this file; `cli/src/gateway.rs` follows the same rules for `canary-split check`.

Only the subset of Gateway and VirtualService the project uses is translated (HTTP and HTTPS
servers with exact or wildcard hosts, an HTTPS redirect; VirtualService hosts, gateways, header
and uri matches, one destination with a port, response headers set on a route). Anything else
raises, so the tests can never run against routes that differ silently from the ones users
deploy.
"""

from __future__ import annotations

import ipaddress
import pathlib
from dataclasses import dataclass, field

import yaml

ISTIO_DIR = pathlib.Path(__file__).resolve().parents[2] / "istio"

# Where a Gateway server's port is listened on (the Service's target port, `resolvePorts` in
# pilot/pkg/model/gateway.go): istioctl's `istio-ingressgateway` Service sends 80 and 443 to
# unprivileged ports; the `istio/gateway` Helm chart's gateway listens on the ports themselves.
ISTIOCTL_TARGET_PORTS = {80: 8080, 443: 8443}
HELM_CHART_TARGET_PORTS: dict[int, int] = {}

# The protocols Istio serves through an HTTP connection manager (`Instance.IsHTTP` in
# pkg/config/protocol/instance.go); `protocol.Parse` compares them case-insensitively.
HTTP_PROTOCOLS = {"http", "http2", "grpc", "grpc-web", "http_proxy"}

# The cluster's DNS domain, which Istio appends to short names (istiod's `--domain`,
# `DefaultClusterLocalDomain` in pkg/config/constants/constants.go); every renderer takes it as a
# parameter with this default.
CLUSTER_DOMAIN = "cluster.local"

# Istio's retry policy for a route without `retries` (`DefaultPolicy` in
# pilot/pkg/networking/core/route/retry/retry.go).
DEFAULT_RETRY_POLICY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
    "host_selection_retry_max_attempts": "5",
}


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


def plugin_runs_on(plugin: dict, listener_port: int) -> bool:
    """Whether Istio adds the WasmPlugin to a gateway listener on `listener_port` (its resolved
    port): without `match` on every listener; otherwise when an entry's mode admits a gateway's
    listeners, which are CLIENT, and its ports are empty or name the port (`matchTrafficSelectors`,
    `matchMode`, `matchPorts` and `workloadModeForListenerClass` in pilot/pkg/model/extensions.go)."""
    selectors = plugin["spec"].get("match") or []
    if not selectors:
        return True
    for selector in selectors:
        if selector.get("mode", "UNDEFINED") not in ("UNDEFINED", "CLIENT", "CLIENT_AND_SERVER"):
            continue
        ports = selector.get("ports") or []
        if not ports or any(p.get("number", 0) != 0 and p.get("number") == listener_port for p in ports):
            return True
    return False


def gateways_of_plugin(manifests: list[dict]) -> list[str]:
    """`namespace/name` of every Gateway served by the workloads the WasmPlugin selects. A plugin
    with targetRefs applies to Gateway API gateways alone (ShouldAttachPolicy in
    pilot/pkg/model/policyattachment.go; see gateway_api.py), one without a selector to all."""
    spec = wasm_plugin(manifests)["spec"]
    if spec.get("targetRefs") or spec.get("targetRef"):
        return []
    selector = spec.get("selector", {}).get("matchLabels", {})
    return [f'{g["metadata"]["namespace"]}/{g["metadata"]["name"]}' for g in of_kind(manifests, "Gateway")
            if selector.items() <= g["spec"]["selector"].items()]


def bound_gateways(virtual_service: dict) -> list[str]:
    namespace = virtual_service["metadata"]["namespace"]
    return [g if "/" in g else f"{namespace}/{g}" for g in virtual_service["spec"].get("gateways", [])]


def by_creation(documents: list[dict]) -> list[dict]:
    """Istio's order of Gateways and VirtualServices: by creation time, then name, then namespace
    (`sortConfigByCreationTime` in pilot/pkg/model/config.go). Manifests applied together have no
    creation times here, so name and namespace decide."""
    return sorted(documents, key=lambda d: (d["metadata"].get("creationTimestamp", ""), d["metadata"]["name"],
                                            d["metadata"].get("namespace", "")))


def resolve_short_name(host: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """A VirtualService host or destination host as Istio reads it (`ResolveShortnameToFQDN` in
    pilot/pkg/model/config.go, applied by `ResolveVirtualServiceShortnames` in
    pilot/pkg/model/virtualservice.go): a name without a dot is a Service in the VirtualService's
    namespace, `<name>.<namespace>.svc.<domain>`; `*`, IP addresses and names with a dot stay."""
    if not host or host == "*" or "." in host or _is_ip_address(host):
        return host
    return f"{host}.{namespace}.svc.{domain}"


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def destination_hosts(vs: dict, domain: str = CLUSTER_DOMAIN) -> list[str]:
    """The hosts a VirtualService's http routes send to, resolved as Istio does."""
    namespace = vs["metadata"].get("namespace", "default")
    return [resolve_short_name(route["destination"]["host"], namespace, domain)
            for http in vs["spec"]["http"] for route in http["route"]]


def cluster_name(destination: dict) -> str:
    """The cluster of a destination: `outbound|<port>|<subset>|<host>` (`BuildSubsetKey` in
    pilot/pkg/model/service.go)."""
    if "subset" in destination:
        raise ValueError(f'{destination["host"]}: subsets are not supported')
    return f'outbound|{destination["port"]["number"]}||{destination["host"]}'


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


def is_catch_all(route: dict) -> bool:
    """A route that matches every request: prefix `/` or regex `.*`, no header or query match
    (`IsCatchAllRoute` in pilot/pkg/networking/core/route/route.go)."""
    match = route["match"]
    path = match.get("prefix") == "/" or match.get("path_separated_prefix") == "/" or \
        match.get("safe_regex", {}).get("regex") == ".*"
    return path and not match.get("headers") and not match.get("query_parameters")


def _response_headers_to_add(headers: dict, where: str) -> list[dict]:
    """`headers.response.set` as Istio renders it on the route (translateAppendHeaders in
    pilot/pkg/networking/core/route/route.go): each header overwrites any value the upstream
    sent, in order of name."""
    if set(headers) != {"response"} or set(headers["response"]) != {"set"}:
        raise ValueError(f"{where}: only headers.response.set is supported")
    return [{"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for name, value in sorted(headers["response"]["set"].items())]


def route_action(cluster: str) -> dict:
    """A route to one cluster with Istio's defaults for a route that sets neither `timeout` nor
    `retries`: no timeout, gRPC's timeout header ignored (`setTimeout` and `Notimeout` in
    pilot/pkg/networking/core/route/route.go), the default retry policy."""
    return {"cluster": cluster, "timeout": "0s", "max_grpc_timeout": "0s", "retry_policy": DEFAULT_RETRY_POLICY}


def _routes(vs: dict, domain: str) -> tuple[list[dict], set[str]]:
    """A VirtualService's http routes as Envoy routes, in order, and the clusters they use
    (`BuildHTTPRoutesForVirtualService`, `TranslateRoute`: a route per match, named after the
    http route and the match), its destinations' short names resolved in `domain`."""
    name = f'{vs["metadata"]["namespace"]}/{vs["metadata"]["name"]}'
    routes, clusters = [], set()
    for index, http in enumerate(vs["spec"]["http"]):
        where = f"{name}.http[{index}]"
        unsupported = set(http) - {"name", "match", "route", "headers"}
        if unsupported:
            raise ValueError(f"{where}: unsupported fields {sorted(unsupported)}")
        if len(http["route"]) != 1 or set(http["route"][0]) != {"destination"}:
            raise ValueError(f"{where}: exactly one destination, no weight or headers of its own")
        destination = http["route"][0]["destination"]
        host = resolve_short_name(destination["host"], vs["metadata"]["namespace"], domain)
        cluster = cluster_name({**destination, "host": host})
        clusters.add(cluster)
        response_headers = _response_headers_to_add(http["headers"], f"{where}.headers") if "headers" in http else []
        for match_index, match in enumerate(http.get("match") or [{}]):
            route_name = http.get("name", "") + (f'.{match["name"]}' if match.get("name") else "")
            route = {"match": _route_match(match, f"{where}.match[{match_index}]"), "route": route_action(cluster)}
            if route_name:
                route["name"] = route_name
            if response_headers:
                route["response_headers_to_add"] = response_headers
            routes.append(route)
    return routes, clusters


def _protocol(server: dict) -> str:
    return server["port"]["protocol"].lower()


def _tls_mode(server: dict) -> str:
    return server.get("tls", {}).get("mode", "").upper()


def route_table_name(server: dict, gateway: str, listener_port: int | None = None) -> str | None:
    """The route table Istio gives a Gateway server (gatewayRDSRouteName in
    pilot/pkg/model/gateway.go), None for a server without one: every plain HTTP server on a
    resolved port shares `http.<resolved port>`; each HTTPS server that terminates TLS has its
    own, named after the Gateway's port (not the resolved one), port name and Gateway; TLS
    passthrough (PASSTHROUGH, AUTO_PASSTHROUGH) and TCP servers have none."""
    port = server["port"]
    bind = f'.{server["bind"]}' if server.get("bind") else ""
    if _protocol(server) in HTTP_PROTOCOLS:
        return f'http.{listener_port or port["number"]}{bind}'
    if _protocol(server) == "https" and _tls_mode(server) not in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        namespace, name = gateway.split("/")
        return f'https.{port["number"]}.{port["name"]}.{name}.{namespace}{bind}'
    if _protocol(server) in ("https", "tls", "tcp"):
        return None
    raise ValueError(f'{gateway}: unsupported server protocol {port["protocol"]!r}')


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
    """One Envoy route configuration of the gateway: the Gateway servers it serves, the port
    they are listened on, whether the WasmPlugin runs on that listener, and its virtual hosts."""
    name: str
    listener_port: int
    plugin_runs: bool = True
    servers: list[str] = field(default_factory=list)
    virtual_hosts: list[dict] = field(default_factory=list)
    clusters: set[str] = field(default_factory=set)

    def domains(self) -> set[str]:
        return {domain for vhost in self.virtual_hosts for domain in vhost["domains"]}

    def route_config(self) -> dict:
        """The RouteConfiguration, with Istio's gateway settings (buildGatewayHTTPRouteConfig in
        pilot/pkg/networking/core/gateway.go): the port of `:authority` ignored when matching
        domains."""
        return {"name": self.name, "virtual_hosts": self.virtual_hosts, "ignore_port_in_host_matching": True}


def _servers_by_table(manifests: list[dict], gateways: list[str], target_ports: dict[int, int]) -> dict:
    """The servers of `gateways` by route table, with their resolved ports, without the TLS
    servers Istio drops for naming a host that an earlier TLS server on the same resolved port
    and bind named (`CheckDuplicates` in mergeGateways, pilot/pkg/model/gateway.go)."""
    tables: dict[str, tuple[int, list[tuple[str, int, dict]]]] = {}
    tls_hosts: dict[int, dict[str, str]] = {}
    for gateway in by_creation(of_kind(manifests, "Gateway")):
        gateway_name = f'{gateway["metadata"]["namespace"]}/{gateway["metadata"]["name"]}'
        if gateway_name not in gateways:
            continue
        for index, server in enumerate(gateway["spec"]["servers"]):
            listener_port = target_ports.get(server["port"]["number"], server["port"]["number"])
            if "tls" in server:
                known = tls_hosts.setdefault(listener_port, {})
                bind = server.get("bind", "")
                if any(known.get(host) == bind for host in server["hosts"]):
                    continue
                known.update({host: bind for host in server["hosts"]})
            table = route_table_name(server, gateway_name, listener_port)
            if table is not None:
                tables.setdefault(table, (listener_port, []))[1].append((gateway_name, index, server))
    return tables


def route_tables(manifests: list[dict], gateways: list[str], target_ports: dict[int, int] = ISTIOCTL_TARGET_PORTS,
                 domain: str = CLUSTER_DOMAIN) -> dict[str, RouteTable]:
    """The route tables of the gateway workload that serves `gateways` (`namespace/name`), by
    name, on a gateway whose Service sends its ports to `target_ports` (istioctl's by default),
    in a cluster whose domain is `domain`.
    As buildGatewayHTTPRouteConfig (pilot/pkg/networking/core/gateway.go) builds them: one
    virtual host per host a bound VirtualService and a server admit, named `<host>:<port>`, with
    the routes of every such VirtualService in order and catch-alls moved last
    (`SortVHostRoutes`); a server with httpsRedirect makes its hosts' virtual hosts require TLS,
    and adds one for each of its `hosts` entries no VirtualService routes, as written."""
    plugin = wasm_plugin(manifests) if of_kind(manifests, "WasmPlugin") else None
    tables = {}
    for table_name, (listener_port, servers) in _servers_by_table(manifests, gateways, target_ports).items():
        table = RouteTable(table_name, listener_port, plugin is not None and plugin_runs_on(plugin, listener_port),
                           [f"{g} servers[{i}]" for g, i, _ in servers])
        vhosts: dict[str, dict] = {}
        for gateway, _, server in servers:
            port = server["port"]["number"]
            redirects = server.get("tls", {}).get("httpsRedirect", False)
            for vs in by_creation(of_kind(manifests, "VirtualService")):
                if gateway not in bound_gateways(vs):
                    continue
                namespace = vs["metadata"]["namespace"]
                hosts = []
                for host in (resolve_short_name(h, namespace, domain) for h in vs["spec"]["hosts"]):
                    if "*" in host:
                        raise ValueError(f'{namespace}/{vs["metadata"]["name"]}: only exact hosts are supported')
                    if any(server_accepts(h, gateway.split("/")[0], namespace, host) for h in server["hosts"]):
                        hosts.append(host.lower())
                if not hosts:
                    continue
                routes, clusters = _routes(vs, domain)
                table.clusters |= clusters
                for host in hosts:
                    vhost = vhosts.setdefault(host, {"name": f"{host}:{port}", "domains": [host], "routes": []})
                    vhost["routes"] += routes
                    if redirects:
                        vhost["require_tls"] = "ALL"
            if redirects:
                for host in (h.lower() for h in server["hosts"]):
                    vhost = vhosts.setdefault(host, {"name": f"{host}:{port}", "domains": [host], "routes": []})
                    vhost["require_tls"] = "ALL"
        for vhost in vhosts.values():
            vhost["routes"] = [r for r in vhost["routes"] if not is_catch_all(r)] + \
                [r for r in vhost["routes"] if is_catch_all(r)]
        table.virtual_hosts = sorted(vhosts.values(), key=lambda vhost: vhost["name"])
        tables[table_name] = table
    return tables


def route_table_serving(manifests: list[dict], gateways: list[str], host: str, protocol: str = "HTTPS",
                        target_ports: dict[int, int] = ISTIOCTL_TARGET_PORTS, domain: str = CLUSTER_DOMAIN) -> RouteTable:
    """The route table a request for `host` uses on the gateway's port for `protocol`."""
    (table,) = [t for t in route_tables(manifests, gateways, target_ports, domain).values()
                if t.name.startswith(f"{protocol.lower()}.") and host in t.domains()]
    return table
