"""Two plugins that load the same module with the same VM configuration share one Wasm VM per
thread (Envoy keys VMs by code and VM configuration; Istio leaves `vm_id` empty). Each must still
route with its own plugin configuration."""

import copy
import json
import urllib.request

from harness import Client, Envoy, bootstrap, catch_all_route, split_routes

PUBLIC = "shop.example.com"


def config(weight: int) -> str:
    return json.dumps({"routes": [{"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": weight}]})


def admin_get(envoy: Envoy, path: str) -> bytes:
    admin = envoy.admin_address_path.read_text().strip()
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=5) as reply:
        return reply.read()


def listener_ports(envoy: Envoy) -> dict[str, int]:
    listeners = json.loads(admin_get(envoy, "/listeners?format=json"))["listener_statuses"]
    return {listener["name"]: listener["local_address"]["socket_address"]["port_value"] for listener in listeners}


def active_vms(envoy: Envoy) -> int:
    stats = admin_get(envoy, "/stats?filter=^wasm.envoy.wasm.runtime.v8.active$").decode()
    return int(stats.split(":")[1])


def gateway(upstreams, weights: list[int]) -> Envoy:
    """One listener per weight, each with its own canary-split plugin, same module and VM config."""
    config_ = bootstrap(config(weights[0]), upstreams, split_routes(PUBLIC, None, None) + [catch_all_route()])
    first = config_["static_resources"]["listeners"][0]
    for index, weight in enumerate(weights[1:], start=1):
        listener = copy.deepcopy(first)
        listener["name"] = f"gateway-{index}"
        http_filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        (plugin,) = [f for f in http_filters if f["name"] == "canary-split"]
        plugin["typed_config"]["config"]["configuration"]["value"] = config(weight)
        config_["static_resources"]["listeners"].append(listener)
    return Envoy(config_, concurrency=2)


def test_plugins_sharing_a_vm_keep_their_own_configs(upstreams):
    with gateway(upstreams, [0]) as alone:
        vms_for_one_plugin = active_vms(alone)
    with gateway(upstreams, [0, 100]) as envoy:
        assert active_vms(envoy) == vms_for_one_plugin, "the two plugins should share their VMs"
        ports = listener_ports(envoy)
        for listener, expected in (("gateway", "primary"), ("gateway-1", "canary")):
            client = Client(ports[listener])
            for _ in range(3):
                client.reconnect()  # new connections, so both workers serve some
                assert {client.get(PUBLIC).upstream for _ in range(10)} == {expected}
