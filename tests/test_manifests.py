"""istio/ is valid against the upstream CRD schemas, and its parts agree with each other and with
the filter: the WasmPlugin's config passes the filter's own validation, every host it names is
routed on the gateway the plugin runs on, and no route splits by weight."""

import copy
import json
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "e2e"))

from istio_routes import ISTIO_DIR, bound_gateways, gateways_of_plugin, load_manifests, of_kind, wasm_plugin  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
VALIDATOR = ROOT.parent / "shared" / "schemas" / "validate.py"
CLI = ROOT / "target" / "debug" / "canary-split"
MANIFESTS = load_manifests()


def test_manifests_match_the_upstream_crd_schemas():
    files = sorted(str(p) for p in ISTIO_DIR.glob("*.yaml"))
    result = subprocess.run([sys.executable, str(VALIDATOR), "--strict", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


def test_plugin_config_passes_the_filters_own_validation():
    result = subprocess.run([str(CLI), "check", str(ISTIO_DIR / "wasmplugin.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("WasmPlugin canary-split: ok, 1 route(s)")


def test_the_check_refuses_a_broken_plugin_config(tmp_path):
    plugin = copy.deepcopy(wasm_plugin(MANIFESTS))
    plugin["spec"]["pluginConfig"]["routes"][0]["canary_weight"] = 150
    broken = tmp_path / "wasmplugin.yaml"
    broken.write_text(json.dumps(plugin))  # JSON is YAML
    result = subprocess.run([str(CLI), "check", str(broken)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "invalid configuration: routes[0].canary_weight: 150 is not in 0..=100" in result.stderr


def routing_problems(manifests: list[dict]) -> list[str]:
    """Every host the filter names has a VirtualService on a gateway the plugin runs on, and
    that gateway accepts the host."""
    problems = []
    gateways = set(gateways_of_plugin(manifests))
    if not gateways:
        return ["no Gateway is served by the workloads the WasmPlugin selects"]
    routed = {host for vs in of_kind(manifests, "VirtualService") if gateways & set(bound_gateways(vs))
              for host in vs["spec"]["hosts"]}
    accepted = {server_host.split("/", 1)[-1] for g in of_kind(manifests, "Gateway")
                for server in g["spec"]["servers"] for server_host in server["hosts"]}
    for route in wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"]:
        named = [route["host"]] + [route[v]["host"].split(":")[0] for v in ("primary", "canary") if "host" in route[v]]
        for host in named:
            if host not in routed:
                problems.append(f"{host}: no VirtualService on {sorted(gateways)}")
            if host not in accepted:
                problems.append(f"{host}: no Gateway server accepts it")
    return problems


def weights(node, path="") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in ([f"{path}.{k}"] if k == "weight" else []) + weights(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in weights(v, f"{path}[{i}]")]
    return []


def weight_problems(manifests: list[dict]) -> list[str]:
    return [f'{vs["metadata"]["name"]}{p}' for vs in of_kind(manifests, "VirtualService") for p in weights(vs["spec"])]


def release_problems(manifests: list[dict]) -> list[str]:
    """Both releases serve the same model name from different storage, and each is a VirtualService destination."""
    problems = []
    services = of_kind(manifests, "InferenceService")
    destinations = {d["destination"]["host"] for vs in of_kind(manifests, "VirtualService")
                    for http in vs["spec"]["http"] for d in http["route"]}
    for isvc in services:
        service = f'{isvc["metadata"]["name"]}-predictor.{isvc["metadata"]["namespace"]}.svc.cluster.local'
        if service not in destinations:
            problems.append(f"{service}: no VirtualService routes to it")
        if isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode") != "RawDeployment":
            problems.append(f'{isvc["metadata"]["name"]}: not a RawDeployment')
    if len({tuple(s["spec"]["predictor"]["model"].get("args", [])) for s in services}) != 1:
        problems.append("the releases do not serve the same model name")
    if len({s["spec"]["predictor"]["model"]["storageUri"] for s in services}) != len(services):
        problems.append("two releases share a storageUri")
    return problems


@pytest.mark.parametrize("check", [routing_problems, weight_problems, release_problems])
def test_shipped_manifests_agree(check):
    assert check(MANIFESTS) == []


def broken(edit) -> list[dict]:
    manifests = copy.deepcopy(MANIFESTS)
    edit(manifests)
    return manifests


def vs_named(manifests, name):
    (vs,) = [v for v in of_kind(manifests, "VirtualService") if v["metadata"]["name"] == name]
    return vs


@pytest.mark.parametrize("check, edit", [
    (routing_problems, lambda m: vs_named(m, "sklearn-canary")["spec"].update(gateways=["other-gateway"])),
    (routing_problems, lambda m: m.remove(vs_named(m, "sklearn"))),
    (routing_problems, lambda m: of_kind(m, "Gateway")[0]["spec"]["selector"].update(istio="other")),
    (weight_problems, lambda m: vs_named(m, "sklearn")["spec"]["http"][-1]["route"][0].update(weight=90)),
    (release_problems, lambda m: of_kind(m, "InferenceService")[1]["spec"]["predictor"]["model"].update(args=[])),
    (release_problems, lambda m: of_kind(m, "InferenceService")[1]["metadata"].update(name="sklearn-beta")),
], ids=["vs-on-other-gateway", "public-vs-missing", "gateway-not-selected", "weighted-route", "model-name-differs",
        "release-not-routed"])
def test_each_cross_check_catches_its_problem(check, edit):
    assert check(broken(edit)) != []


def test_kustomization_lists_every_manifest():
    kustomization = (ISTIO_DIR / "Kustomization").read_text()
    for path in ISTIO_DIR.glob("*.yaml"):
        assert f"- {path.name}" in kustomization
