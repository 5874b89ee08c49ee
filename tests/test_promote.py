"""istio/promote.sh against istio/'s objects, through a fake kubectl (tests/fake_kubectl.py) that
applies its calls to them and plays KServe's controller: the primary gets the canary's storageUri,
the weight goes back to 0 only once KServe has put that storageUri into the primary's Deployment
and the Deployment has rolled out, and through the same patch `canary-split rollout --kubectl`
prints."""

import copy
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

import fake_kubectl

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMOTE = ROOT / "istio" / "promote.sh"
CLI = ROOT / "target" / "debug" / "canary-split"

sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from gateway_api import GATEWAY_API_DIR  # noqa: E402
from istio_routes import load_manifests, of_kind, wasm_plugin  # noqa: E402

MANIFESTS = load_manifests()
ISVC = {i["metadata"]["labels"]["canary-split.dev/variant"]: i for i in of_kind(MANIFESTS, "InferenceService")}
PRIMARY_URI = ISVC["primary"]["spec"]["predictor"]["model"]["storageUri"]
CANARY_URI = ISVC["canary"]["spec"]["predictor"]["model"]["storageUri"]
NAMESPACE = ISVC["primary"]["metadata"]["namespace"]
DEPLOYMENT = f'{ISVC["primary"]["metadata"]["name"]}-predictor'


def at_weight(weight) -> list[dict]:
    manifests = copy.deepcopy(MANIFESTS)
    wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"][0]["canary_weight"] = weight
    return manifests


class Cluster:
    def __init__(self, tmp_path: pathlib.Path, manifests: list[dict], **behaviour):
        self.state_path = tmp_path / "cluster.json"
        fake_kubectl.write_state(self.state_path, manifests, **behaviour)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "kubectl").symlink_to(pathlib.Path(fake_kubectl.__file__).resolve())
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_KUBECTL_STATE": str(self.state_path),
                    "POLL_SECONDS": "0.05"}

    def promote(self, **env) -> subprocess.CompletedProcess:
        return subprocess.run([str(PROMOTE)], capture_output=True, text=True, timeout=60, env={**self.env, **env})

    @property
    def state(self) -> dict:
        return fake_kubectl.read_state(self.state_path)

    def object(self, kind, namespace, name) -> dict:
        return self.state["objects"][fake_kubectl.key(kind, namespace, name)]

    def primary_uri(self) -> str:
        return self.object("InferenceService", NAMESPACE, ISVC["primary"]["metadata"]["name"])[
            "spec"]["predictor"]["model"]["storageUri"]

    def weight(self):
        plugin = wasm_plugin(MANIFESTS)["metadata"]
        return self.object("WasmPlugin", plugin["namespace"], plugin["name"])["spec"]["pluginConfig"]["routes"][0][
            "canary_weight"]

    def calls(self, *prefix) -> list[dict]:
        return [c for c in self.state["calls"] if c["argv"][:len(prefix)] == list(prefix)]


def test_promotion_moves_the_primary_to_the_canarys_model_then_sets_the_weight_to_0(tmp_path):
    cluster = Cluster(tmp_path, at_weight(100), reconcile_after_gets=2)
    result = cluster.promote()
    assert result.returncode == 0, result.stderr
    assert cluster.primary_uri() == CANARY_URI != PRIMARY_URI
    assert cluster.weight() == 0

    calls = [c["argv"][:2] for c in cluster.state["calls"]]
    rollout = calls.index(["rollout", "status"])
    assert calls.index(["patch", "inferenceservice"]) < rollout < calls.index(["patch", "wasmplugin"]) == len(calls) - 1
    # It waited for KServe: the rollout it waited for is the one with the canary's model.
    (status,) = cluster.calls("rollout", "status")
    assert status["argv"][2] == f"deployment/{DEPLOYMENT}" and status["storage_uri"] == CANARY_URI
    assert len(cluster.calls("get", "deployment")) == 3


def test_the_weight_patch_is_the_one_canary_split_rollout_prints(tmp_path):
    cluster = Cluster(tmp_path, at_weight(100))
    assert cluster.promote().returncode == 0
    (patch,) = cluster.calls("patch", "wasmplugin")
    plan = subprocess.run([str(CLI), "rollout", "--config", str(ROOT / "istio" / "wasmplugin.yaml"), "--kubectl",
                           "--steps", "100", "--interval", "1m"], capture_output=True, text=True, timeout=30)
    assert plan.returncode == 0, plan.stderr
    rollback = [line for line in plan.stdout.splitlines() if line.startswith("kubectl patch")][-1]
    assert ["kubectl", *patch["argv"]] == shlex.split(rollback)


@pytest.mark.parametrize("weight", [0, 50])
def test_no_promotion_before_the_canary_has_100_percent(tmp_path, weight):
    cluster = Cluster(tmp_path, at_weight(weight))
    result = cluster.promote()
    assert result.returncode == 1
    assert f"canary_weight is '{weight}', not 100" in result.stderr
    assert cluster.calls("patch") == [] and cluster.primary_uri() == PRIMARY_URI


def test_a_route_for_another_host_is_left_alone(tmp_path):
    cluster = Cluster(tmp_path, at_weight(100))
    result = cluster.promote(HOST="shop.example.com")
    assert result.returncode == 1
    assert "route 0 is for 'sklearn-predictor-models.example.com', not shop.example.com" in result.stderr
    assert cluster.calls("patch") == []


def test_a_failed_rollout_leaves_the_users_on_the_canary(tmp_path):
    cluster = Cluster(tmp_path, at_weight(100), rollout_fails=True)
    result = cluster.promote()
    assert result.returncode == 1
    assert f"deployment/{DEPLOYMENT} did not roll out; canary_weight left at 100" in result.stderr
    assert cluster.weight() == 100 and cluster.calls("patch", "wasmplugin") == []


def test_it_gives_up_when_kserve_never_updates_the_deployment(tmp_path):
    cluster = Cluster(tmp_path, at_weight(100), reconcile_after_gets=1000)
    result = cluster.promote(RECONCILE_POLLS="5")
    assert result.returncode == 1
    assert f"KServe has not put {CANARY_URI} into deployment/{DEPLOYMENT}" in result.stderr
    assert cluster.weight() == 100 and cluster.calls("rollout") == []


def test_on_the_gateway_api_deployment_it_patches_the_target_refs_plugin_in_the_gateways_namespace(tmp_path):
    """istio/gateway-api/'s WasmPlugin lives beside its Gateway, in models: promote.sh finds it with
    PLUGIN_NAMESPACE set to that (the README's command), and not with istio/'s default."""
    manifests = load_manifests(GATEWAY_API_DIR)
    plugin = wasm_plugin(manifests)
    plugin["spec"]["pluginConfig"]["routes"][0]["canary_weight"] = 100
    namespace, name = plugin["metadata"]["namespace"], plugin["metadata"]["name"]
    assert namespace == NAMESPACE and "targetRefs" in plugin["spec"]
    assert f"PLUGIN_NAMESPACE={namespace} istio/promote.sh" in (ROOT / "README.md").read_text()
    cluster = Cluster(tmp_path, manifests)

    result = cluster.promote()
    assert result.returncode == 1
    assert f'wasmplugin "{name}" not found' in result.stderr
    assert cluster.calls("patch") == [] and cluster.primary_uri() == PRIMARY_URI

    result = cluster.promote(PLUGIN_NAMESPACE=namespace)
    assert result.returncode == 0, result.stderr
    assert cluster.primary_uri() == CANARY_URI
    promoted = cluster.object("WasmPlugin", namespace, name)
    assert promoted["spec"]["pluginConfig"]["routes"][0]["canary_weight"] == 0
    assert promoted["spec"]["targetRefs"] == plugin["spec"]["targetRefs"]
    (patch,) = cluster.calls("patch", "wasmplugin")
    assert patch["argv"][2:5] == [name, "--namespace", namespace]
