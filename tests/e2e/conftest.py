import copy
import json
import pathlib
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from harness import ENVOY, MODULE, ROOT, Client, EchoUpstream, Envoy, bootstrap, catch_all_route, split_routes  # noqa: E402
from istio_routes import (  # noqa: E402
    RouteTable, gateways_of_plugin, load_manifests, route_table_serving, vm_environment, wasm_plugin)
from pin_token import encode_keys, mint, new_key  # noqa: E402

# The public host's VirtualService for header mode, matching a canary value clients cannot guess.
HEADER_MODE_MANIFESTS = load_manifests(pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "header-mode")
(HEADER_MODE_CANARY_VALUE,) = [m["headers"]["x-canary-route"]["exact"] for vs in HEADER_MODE_MANIFESTS
                               for http in vs["spec"]["http"] for m in http.get("match", [])]
# The pin key `envoy_from_istio` gives the gateway unless told otherwise (the Secret of
# istio/patches/ingressgateway-pin-keys.yaml), so that tests can mint tokens that verify there.
GATEWAY_PIN_KEY = new_key(b"istio gateway")


def pytest_sessionstart(session):
    missing = [str(p) for p in (ENVOY, MODULE) if not p.exists()]
    if missing:
        pytest.exit(f"missing {', '.join(missing)}: run the tests with `make test`", returncode=2)


@pytest.fixture(scope="session")
def crash_module() -> pathlib.Path:
    """The module built with the test-only `crash-trigger` feature (in its own target dir; `make
    build` never enables it): a request carrying harness.CRASH_HEADER panics the VM, as a bug
    would. Through the same post-link pass as the shipped module, so Envoy calls the same
    callbacks."""
    target = ROOT / "target" / "crash-trigger"
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1", "--features", "crash-trigger",
                    "--target-dir", str(target)], cwd=ROOT, check=True, timeout=300)
    module = target / "canary_split.wasm"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "post_link.py"),
                    str(target / "wasm32-wasip1" / "release" / "canary_split.wasm"), str(module)],
                   check=True, timeout=120)
    return module


@pytest.fixture(scope="session")
def upstreams():
    servers = {name: EchoUpstream(name) for name in ("primary", "canary", "other")}
    yield {name: server.port for name, server in servers.items()}
    for server in servers.values():
        server.close()


def envoy_for(filter_config: dict, upstreams: dict, concurrency: int = 1) -> Envoy:
    """An Envoy whose routes are the plain per-host routes for every split host in the config."""
    virtual_hosts = {}
    for route in filter_config["routes"]:
        for host in split_routes(route["host"], route["primary"].get("host"), route["canary"].get("host")):
            virtual_hosts[host["name"]] = host  # routes may share variant hosts
    virtual_hosts = [*virtual_hosts.values(), catch_all_route()]
    return Envoy(bootstrap(json.dumps(filter_config), upstreams, virtual_hosts), concurrency)


@pytest.fixture
def gateways():
    """Starts an Envoy and returns a client to it (`client.envoy` is the Envoy); every Envoy it
    started is stopped after the test."""
    started = []

    def start(envoy: Envoy) -> Client:
        started.append(envoy.start())
        client = Client(envoy.port)
        client.envoy = envoy
        return client

    yield start
    for envoy in started:
        envoy.stop()


@pytest.fixture
def gateway(upstreams, gateways):
    """Starts an Envoy for a filter config and returns a client to it; stopped after the test."""
    return lambda filter_config, concurrency=1: gateways(envoy_for(filter_config, upstreams, concurrency))


# Envoy's failure policy for each WasmPlugin failStrategy (pilot/pkg/model/extensions.go).
FAILURE_POLICIES = {"FAIL_OPEN": "FAIL_OPEN", "FAIL_CLOSE": "FAIL_CLOSED", "FAIL_RELOAD": "FAIL_RELOAD"}


def envoy_from_istio(port_of_release: dict[str, int], with_filter: bool = True, concurrency: int = 1,
                     plugin_config: dict | None = None, manifests: list[dict] | None = None,
                     route_table: RouteTable | None = None, gateway_env: dict[str, str] | None = None,
                     ecds_path: pathlib.Path | None = None, module: pathlib.Path = MODULE) -> Envoy:
    """An Envoy running what istio/ (or `manifests`) deploys: the WasmPlugin's config and VM
    environment, and the route table that serves its public host over HTTPS (or `route_table`), as
    Istio renders the VirtualServices on its gateway, with the filter only if the WasmPlugin's
    `match` selects that table's listener. Each destination service goes to the local server of
    its release, found by name (`outbound|80||sklearn-primary-predictor...` -> `primary`).
    `gateway_env` is the gateway's own environment, where the plugin's HOST variables come from
    (the pin keys, from a Secret in Istio); by default each gets GATEWAY_PIN_KEY. With
    `ecds_path` the filter comes through ECDS, as Istio delivers it, with the WasmPlugin's
    failStrategy (see `harness.bootstrap`); `module` is the Wasm module the filter runs."""
    manifests = manifests or load_manifests()
    plugin = wasm_plugin(manifests)
    config = plugin_config or plugin["spec"]["pluginConfig"]
    table = route_table or route_table_serving(manifests, gateways_of_plugin(manifests), config["routes"][0]["host"])
    ports = {}
    for cluster in table.clusters:
        (release,) = [r for r in port_of_release if f"-{r}-" in cluster]
        ports[cluster] = port_of_release[release]
    environment = vm_environment(plugin)
    if gateway_env is None:
        gateway_env = {name: encode_keys(GATEWAY_PIN_KEY) for name in environment.get("host_env_keys", [])}
    with_filter = with_filter and table.plugin_runs
    return Envoy(bootstrap(json.dumps(config) if with_filter else None, ports, table.virtual_hosts,
                           vm_environment=environment, route_config=table.route_config(), ecds_path=ecds_path, module=module,
                           failure_policy=FAILURE_POLICIES[plugin["spec"].get("failStrategy", "FAIL_CLOSE")]),
                 concurrency, env=gateway_env)


def release_token(route: dict, release: str, ttl: int = 3600) -> tuple[str, str]:
    """The header of `route`'s first header token pin, with a token signed by GATEWAY_PIN_KEY that
    pins `release` (as `canary-split token --host <route's host> --to <release>` mints it): what a
    tester sends to reach a release host that `"release_hosts": "token"` protects."""
    header = next(pin["token"]["header"] for pin in route["pin"] if "header" in pin.get("token", {}))
    return header, mint(GATEWAY_PIN_KEY, route["host"], release, int(time.time()) + ttl)


def header_mode(manifests: list[dict], plugin_config: dict) -> tuple[list[dict], dict]:
    """`manifests` with the public host's VirtualService replaced by the header-mode fixture's, and
    `plugin_config` in header mode (no release hosts, so none for `release_hosts` to protect),
    writing the value that VirtualService matches for the canary."""
    replaced = {(vs["metadata"]["namespace"], vs["metadata"]["name"]) for vs in HEADER_MODE_MANIFESTS}
    kept = [doc for doc in manifests
            if (doc["metadata"].get("namespace"), doc["metadata"]["name"]) not in replaced or doc["kind"] != "VirtualService"]
    config = copy.deepcopy(plugin_config)
    config["decision_values"] = {"canary": HEADER_MODE_CANARY_VALUE}
    for route in config["routes"]:
        route.update(primary={}, canary={})
        route.pop("release_hosts", None)
    return kept + HEADER_MODE_MANIFESTS, config
