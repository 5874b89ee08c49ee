"""The manifests in istio/, turned into what the ingress gateway's Envoy runs: the WasmPlugin's
pluginConfig, and the VirtualServices bound to the gateway as Envoy virtual hosts.

Only the subset of VirtualService the project uses is translated (hosts, gateways, header and
uri matches, one destination with a port, response headers set on a route). Anything else
raises, so the tests can never run against routes that differ silently from the ones users deploy.
"""

from __future__ import annotations

import pathlib

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


def virtual_hosts(manifests: list[dict], gateway: str) -> tuple[list[dict], set[str]]:
    """Envoy virtual hosts for the VirtualServices bound to `gateway`, and the clusters they use."""
    hosts, clusters = [], set()
    for vs in of_kind(manifests, "VirtualService"):
        if gateway not in bound_gateways(vs):
            continue
        name = f'{vs["metadata"]["namespace"]}/{vs["metadata"]["name"]}'
        routes = []
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
        domains = [d for host in vs["spec"]["hosts"] for d in (host, f"{host}:*")]
        hosts.append({"name": name, "domains": domains, "routes": routes})
    return hosts, clusters
