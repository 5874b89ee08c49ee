"""Two KServe model servers (KServe's Python ModelServer with scikit-learn, started as the sklearn
runtime starts its server for each of istio/'s InferenceServices: same model name, different
models) behind Envoy running the module with the shipped WasmPlugin config and the routes the
shipped VirtualServices render to. Which release answered is told by the prediction itself and by
the x-release header the VirtualServices set, never by anything the model server adds."""

import copy
import http.client
import json
import math
import pathlib
import subprocess
import sys

import pytest

from conftest import envoy_from_istio, release_token
from istio_routes import load_manifests, wasm_plugin

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "kserve"))

from servers import EXPECTED_PREDICTIONS, PROBE, start_servers  # noqa: E402

PLUGIN_CONFIG = wasm_plugin(load_manifests())["spec"]["pluginConfig"]
ROUTE = PLUGIN_CONFIG["routes"][0]
PUBLIC, PRIMARY_HOST, CANARY_HOST = ROUTE["host"], ROUTE["primary"]["host"], ROUTE["canary"]["host"]
# istio/ ships canary_weight 0; the split is tested at a rollout's first step.
STEP_WEIGHT = 10


def at_weight(weight) -> dict:
    config = copy.deepcopy(PLUGIN_CONFIG)
    config["routes"][0]["canary_weight"] = weight
    return config


@pytest.fixture(scope="module")
def models():
    with start_servers() as servers:
        yield servers


@pytest.fixture(scope="module")
def gateway(models):
    envoy = envoy_from_istio(models.ports, plugin_config=at_weight(STEP_WEIGHT)).start()
    yield envoy
    envoy.stop()


class Predictor:
    def __init__(self, port, model_name):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = f"/v1/models/{model_name}:predict"

    def predict(self, host, headers=()) -> str:
        """POSTs the probe and returns which release answered, told by the prediction itself."""
        self.conn.request("POST", self.path, body=json.dumps(PROBE),
                          headers={"host": host, "content-type": "application/json", **dict(headers)})
        reply = self.conn.getresponse()
        body = reply.read()
        assert reply.status == 200, body
        predictions = json.loads(body)["predictions"]
        (release,) = [r for r, expected in EXPECTED_PREDICTIONS.items() if expected == predictions]
        assert reply.getheader("x-release") == release
        return release


def test_the_servers_serve_the_inference_services_model_name(models):
    # The InferenceServices' args name the model "sklearn"; the runtime would otherwise use the
    # InferenceService's own name (sklearn-primary, sklearn-canary).
    assert models.model_name == "sklearn"
    for port in models.ports.values():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/v1/models/sklearn-primary")
        assert conn.getresponse().status == 404


def test_the_first_deploy_sends_users_to_primary_and_testers_to_the_canary(models):
    assert ROUTE["canary_weight"] == 0
    with envoy_from_istio(models.ports) as envoy:
        client = Predictor(envoy.port, models.model_name)
        assert {client.predict(PUBLIC, {"x-user-id": f"user-{i}"}) for i in range(100)} == {"primary"}
        assert {client.predict(PUBLIC, {"traffic": "test"}) for _ in range(10)} == {"canary"}


def test_public_host_splits_by_a_rollout_steps_weight(gateway, models):
    client = Predictor(gateway.port, models.model_name)
    requests = 1500
    canary = sum(client.predict(PUBLIC) == "canary" for _ in range(requests))
    p = STEP_WEIGHT / 100
    assert abs(canary - requests * p) <= 4.5 * math.sqrt(requests * p * (1 - p)), f"{canary}/{requests}"


def test_test_traffic_reaches_the_canary_model(gateway, models):
    client = Predictor(gateway.port, models.model_name)
    assert {client.predict(PUBLIC, {"traffic": "test"}) for _ in range(30)} == {"canary"}
    assert {client.predict(PUBLIC, {"x-canary": "never"}) for _ in range(30)} == {"primary"}


def test_release_hosts_reach_their_own_model(gateway, models):
    # With a token for that release, as istio/ protects the release hosts (release_hosts: token).
    client = Predictor(gateway.port, models.model_name)
    primary_token, canary_token = release_token(ROUTE, "primary"), release_token(ROUTE, "canary")
    assert {client.predict(PRIMARY_HOST, [primary_token]) for _ in range(20)} == {"primary"}
    assert {client.predict(CANARY_HOST, [canary_token, ("x-canary-route", "primary")]) for _ in range(20)} == {"canary"}


def test_a_user_keeps_their_model(gateway, models):
    client = Predictor(gateway.port, models.model_name)
    seen = set()
    for user in [f"user-{i}" for i in range(40)]:
        releases = {client.predict(PUBLIC, {"x-user-id": user}) for _ in range(5)}
        assert len(releases) == 1
        seen |= releases
    assert seen == {"primary", "canary"}


@pytest.mark.parametrize("files, refusal", [
    ([], "ModelMissingError"),
    (["model.joblib", "older.pkl"], "holds 2 model files, the runtime allows one"),
], ids=["no-model-file", "two-model-files"])
def test_a_model_directory_holds_exactly_one_model_file(tmp_path, files, refusal):
    # As the runtime's SKLearnModel.load: one .joblib, .pkl or .pickle file, or the server does not start.
    for name in files:
        (tmp_path / name).write_bytes(b"")
    server = pathlib.Path(__file__).resolve().parents[1] / "kserve" / "model_server.py"
    result = subprocess.run([sys.executable, str(server), "--model_name=sklearn", f"--model_dir={tmp_path}",
                             "--http_port=1", "--enable_grpc=false"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert refusal in result.stderr
