"""istio_routes.py renders Gateways and VirtualServices as Istio does, rule by rule (ISTIO.md lists
each rule with its Istio file). The other tests run Envoy on these renderings; these pin the
rules themselves on small manifests."""

import pytest
import yaml

from istio_routes import (DEFAULT_RETRY_POLICY, HELM_CHART_TARGET_PORTS, ISTIOCTL_TARGET_PORTS, plugin_runs_on,
                          route_tables)

GATEWAY = "models/gw"


def manifests(servers: str, *virtual_services: str) -> list[dict]:
    gateway = f"""
kind: Gateway
metadata: {{name: gw, namespace: models}}
spec:
  selector: {{istio: ingressgateway}}
  servers: {servers}
"""
    return [yaml.safe_load(gateway)] + [yaml.safe_load(vs) for vs in virtual_services]


def virtual_service(name: str, host: str, http: str) -> str:
    return f"""
kind: VirtualService
metadata: {{name: {name}, namespace: models}}
spec: {{hosts: [{host}], gateways: [gw], http: {http}}}
"""


HTTPS = "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*/*.example.com'], tls: {mode: SIMPLE}}"
TO_A = "{destination: {host: a.models.svc.cluster.local, port: {number: 80}}}"
TO_B = "{destination: {host: b.models.svc.cluster.local, port: {number: 8080}}}"


def test_http_tables_are_named_after_the_port_listened_on_and_https_tables_after_the_gateways():
    shop = virtual_service("shop", "shop.example.com", f"[{{route: [{TO_A}]}}]")
    servers = f"[{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*/*']}}, {HTTPS}]"
    assert set(route_tables(manifests(servers, shop), [GATEWAY], ISTIOCTL_TARGET_PORTS)) == {
        "http.8080", "https.443.https.gw.models"}
    assert set(route_tables(manifests(servers, shop), [GATEWAY], HELM_CHART_TARGET_PORTS)) == {
        "http.80", "https.443.https.gw.models"}


@pytest.mark.parametrize("protocol", ["HTTP", "http", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY", "Http_Proxy"])
def test_every_http_protocol_in_any_case_shares_the_http_table(protocol):
    shop = virtual_service("shop", "shop.example.com", f"[{{route: [{TO_A}]}}]")
    servers = f"[{{port: {{number: 80, name: web, protocol: {protocol}}}, hosts: ['*/*']}}]"
    (table,) = route_tables(manifests(servers, shop), [GATEWAY]).values()
    assert (table.name, table.domains()) == ("http.8080", {"shop.example.com"})


@pytest.mark.parametrize("server", [
    "{port: {number: 443, name: tls, protocol: HTTPS}, hosts: ['*/*'], tls: {mode: PASSTHROUGH}}",
    "{port: {number: 15443, name: tls, protocol: TLS}, hosts: ['*/*'], tls: {mode: AUTO_PASSTHROUGH}}",
    "{port: {number: 443, name: tls, protocol: https}, hosts: ['*/*'], tls: {mode: AUTO_PASSTHROUGH}}",
    "{port: {number: 9000, name: tcp, protocol: TCP}, hosts: ['*/*']}",
])
def test_servers_istio_does_not_route_over_http_have_no_table(server):
    shop = virtual_service("shop", "shop.example.com", f"[{{route: [{TO_A}]}}]")
    assert route_tables(manifests(f"[{server}]", shop), [GATEWAY]) == {}


def test_a_tls_server_naming_a_host_of_an_earlier_one_on_its_port_is_dropped():
    servers = """[
      {port: {number: 443, name: one, protocol: HTTPS}, hosts: ['*/a.example.com'], tls: {mode: SIMPLE}},
      {port: {number: 443, name: two, protocol: HTTPS}, hosts: ['*/a.example.com', '*/b.example.com'], tls: {mode: SIMPLE}},
      {port: {number: 443, name: three, protocol: HTTPS}, hosts: ['*/b.example.com'], tls: {mode: SIMPLE}},
      {port: {number: 443, name: four, protocol: HTTPS}, hosts: ['*/a.example.com'], tls: {mode: SIMPLE}, bind: 10.0.0.1}]"""
    services = [virtual_service(name, f"{name}.example.com", f"[{{route: [{TO_A}]}}]") for name in ("a", "b")]
    tables = route_tables(manifests(servers, *services), [GATEWAY])
    assert {name: table.domains() for name, table in tables.items()} == {
        "https.443.one.gw.models": {"a.example.com"},
        "https.443.three.gw.models": {"b.example.com"},
        "https.443.four.gw.models.10.0.0.1": {"a.example.com"},  # another bind is another listener
    }


def test_routes_of_every_virtual_service_of_a_host_merge_into_one_virtual_host_with_catch_alls_last():
    first = virtual_service("a-first", "Shop.example.com", f"""[
      {{name: everything, route: [{TO_A}]}}]""")
    second = virtual_service("b-second", "shop.example.com", f"""[
      {{name: api, match: [{{uri: {{prefix: /api}}}}, {{name: v2, uri: {{prefix: /v2}}}}], route: [{TO_B}]}},
      {{name: beta, match: [{{headers: {{x-beta: {{exact: "1"}}}}}}], route: [{TO_B}]}},
      {{name: rest, match: [{{uri: {{regex: .*}}}}], route: [{TO_A}]}}]""")
    (table,) = route_tables(manifests(f"[{HTTPS}]", second, first), [GATEWAY]).values()
    (vhost,) = table.virtual_hosts
    assert (vhost["name"], vhost["domains"]) == ("shop.example.com:443", ["shop.example.com"])
    assert [route.get("name") for route in vhost["routes"]] == ["api", "api.v2", "beta", "everything", "rest"]
    assert table.clusters == {"outbound|80||a.models.svc.cluster.local", "outbound|8080||b.models.svc.cluster.local"}
    assert table.route_config()["ignore_port_in_host_matching"] is True


@pytest.mark.parametrize("destination, domain, cluster", [
    ("a", "cluster.local", "outbound|80||a.models.svc.cluster.local"),
    ("a", "example.internal", "outbound|80||a.models.svc.example.internal"),
    ("a.other", "example.internal", "outbound|80||a.other"),  # a dot: taken as written
    ("a.models.svc.cluster.local", "example.internal", "outbound|80||a.models.svc.cluster.local"),
    ("10.0.0.7", "cluster.local", "outbound|80||10.0.0.7"),
    ("::1", "cluster.local", "outbound|80||::1"),
])
def test_a_short_destination_is_a_service_of_the_virtual_services_namespace_in_the_cluster_domain(
        destination, domain, cluster):
    to = f"{{destination: {{host: '{destination}', port: {{number: 80}}}}}}"
    shop = virtual_service("shop", "shop.example.com", f"[{{route: [{to}]}}]")
    (table,) = route_tables(manifests(f"[{HTTPS}]", shop), [GATEWAY], domain=domain).values()
    assert table.clusters == {cluster}
    assert table.virtual_hosts[0]["routes"][0]["route"]["cluster"] == cluster


def test_a_short_virtual_service_host_is_a_service_of_its_namespace():
    servers = "[{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*/*']}]"
    shop = virtual_service("shop", "shop", f"[{{route: [{TO_A}]}}]")
    (table,) = route_tables(manifests(servers, shop), [GATEWAY]).values()
    assert table.domains() == {"shop.models.svc.cluster.local"}


def test_routes_get_istios_defaults():
    shop = virtual_service("shop", "shop.example.com", f"[{{route: [{TO_A}]}}]")
    (table,) = route_tables(manifests(f"[{HTTPS}]", shop), [GATEWAY]).values()
    (route,) = table.virtual_hosts[0]["routes"]
    assert route["route"] == {"cluster": "outbound|80||a.models.svc.cluster.local", "timeout": "0s",
                              "max_grpc_timeout": "0s", "retry_policy": DEFAULT_RETRY_POLICY}
    assert DEFAULT_RETRY_POLICY["num_retries"] == 2
    assert DEFAULT_RETRY_POLICY["retry_on"] == \
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def test_an_https_redirect_requires_tls_on_every_virtual_host_of_the_server():
    shop = virtual_service("shop", "shop.example.com", f"[{{route: [{TO_A}]}}]")
    servers = "[{port: {number: 80, name: http, protocol: HTTP}, hosts: ['shop.example.com', 'old.example.com'], " \
              "tls: {httpsRedirect: true}}]"
    (table,) = route_tables(manifests(servers, shop), [GATEWAY]).values()
    assert {vhost["name"]: (vhost.get("require_tls"), len(vhost["routes"])) for vhost in table.virtual_hosts} == {
        "shop.example.com:80": ("ALL", 1), "old.example.com:80": ("ALL", 0)}


@pytest.mark.parametrize("match, runs_on", [
    (None, {80, 8080, 443, 8443}),
    ([{"ports": [{"number": 8443}, {"number": 443}]}], {443, 8443}),
    ([{"mode": "CLIENT", "ports": [{"number": 8443}]}], {8443}),
    ([{"mode": "CLIENT_AND_SERVER"}], {80, 8080, 443, 8443}),
    ([{"mode": "SERVER", "ports": [{"number": 443}]}], set()),  # a gateway's listeners are CLIENT
    ([{"ports": [{"number": 0}]}], set()),
])
def test_a_wasm_plugin_runs_on_the_listeners_its_match_selects(match, runs_on):
    plugin = {"spec": {"match": match} if match is not None else {}}
    assert {port for port in (80, 8080, 443, 8443) if plugin_runs_on(plugin, port)} == runs_on


def test_unsupported_manifests_are_refused():
    weighted = virtual_service("shop", "shop.example.com", f"[{{route: [{TO_A}, {TO_B}]}}]")
    with pytest.raises(ValueError, match="exactly one destination"):
        route_tables(manifests(f"[{HTTPS}]", weighted), [GATEWAY])
    udp = "[{port: {number: 53, name: dns, protocol: UDP}, hosts: ['*/*']}]"
    with pytest.raises(ValueError, match="unsupported server protocol 'UDP'"):
        route_tables(manifests(udp), [GATEWAY])
