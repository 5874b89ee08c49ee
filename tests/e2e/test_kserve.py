"""Two real KServe model servers (the primary and the canary InferenceService, the same model
name, different models) behind Envoy running the module with the shipped WasmPlugin config and
the routes the shipped VirtualServices render to."""

import http.client
import json
import math
import pathlib
import sys

import pytest

from conftest import envoy_from_istio
from istio_routes import load_manifests, wasm_plugin

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "kserve"))

from servers import EXPECTED_PREDICTIONS, PROBE, start_servers  # noqa: E402

ROUTE = wasm_plugin(load_manifests())["spec"]["pluginConfig"]["routes"][0]
PUBLIC, PRIMARY_HOST, CANARY_HOST = ROUTE["host"], ROUTE["primary"]["host"], ROUTE["canary"]["host"]
PREDICT = "/v1/models/sklearn:predict"


@pytest.fixture(scope="module")
def gateway():
    with start_servers() as models:
        envoy = envoy_from_istio(models.ports).start()
        yield envoy
        envoy.stop()


class Predictor:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def predict(self, host, headers=()) -> str:
        """POSTs the probe and returns which release answered, told by the prediction itself."""
        self.conn.request("POST", PREDICT, body=json.dumps(PROBE),
                          headers={"host": host, "content-type": "application/json", **dict(headers)})
        reply = self.conn.getresponse()
        body = reply.read()
        assert reply.status == 200, body
        predictions = json.loads(body)["predictions"]
        (release,) = [r for r, expected in EXPECTED_PREDICTIONS.items() if expected == predictions]
        assert reply.getheader("x-model-variant") == release
        return release


def test_public_host_splits_by_the_configured_weight(gateway):
    client = Predictor(gateway.port)
    requests = 1500
    canary = sum(client.predict(PUBLIC) == "canary" for _ in range(requests))
    p = ROUTE["canary_weight"] / 100
    assert abs(canary - requests * p) <= 4.5 * math.sqrt(requests * p * (1 - p)), f"{canary}/{requests}"


def test_test_traffic_reaches_the_canary_model(gateway):
    client = Predictor(gateway.port)
    assert {client.predict(PUBLIC, {"traffic": "test"}) for _ in range(30)} == {"canary"}
    assert {client.predict(PUBLIC, {"x-canary": "never"}) for _ in range(30)} == {"primary"}


def test_release_hosts_reach_their_own_model(gateway):
    client = Predictor(gateway.port)
    assert {client.predict(PRIMARY_HOST) for _ in range(20)} == {"primary"}
    assert {client.predict(CANARY_HOST, {"x-canary-route": "primary"}) for _ in range(20)} == {"canary"}


def test_a_user_keeps_their_model(gateway):
    client = Predictor(gateway.port)
    for user in [f"user-{i}" for i in range(40)]:
        assert len({client.predict(PUBLIC, {"x-user-id": user}) for _ in range(5)}) == 1
