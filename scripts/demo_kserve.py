"""`make demo-kserve`: the istio/ deployment on this machine. Two real KServe model servers (the
primary and the canary InferenceService: both serve "sklearn", trained differently) behind Envoy
running canary_split.wasm with the WasmPlugin's pluginConfig and the routes the VirtualServices
render to."""

import collections
import copy
import http.client
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "kserve"))

from conftest import envoy_from_istio  # noqa: E402
from istio_routes import load_manifests, wasm_plugin  # noqa: E402
from servers import EXPECTED_PREDICTIONS, PROBE, start_servers  # noqa: E402

PLUGIN_CONFIG = wasm_plugin(load_manifests())["spec"]["pluginConfig"]
ROUTE = PLUGIN_CONFIG["routes"][0]
PUBLIC = ROUTE["host"]


def predict(conn, host, headers=None) -> str:
    conn.request("POST", "/v1/models/sklearn:predict", body=json.dumps(PROBE),
                 headers={"host": host, "content-type": "application/json", **(headers or {})})
    predictions = json.loads(conn.getresponse().read())["predictions"]
    return next(release for release, expected in EXPECTED_PREDICTIONS.items() if expected == predictions)


def with_weight(weight) -> dict:
    config = copy.deepcopy(PLUGIN_CONFIG)
    config["routes"][0]["canary_weight"] = weight
    return config


def main():
    print("Training two iris models and starting two KServe model servers ...")
    with start_servers() as models:
        print(f"  primary on :{models.primary_port}, canary on :{models.canary_port}; probe {PROBE['instances'][0]}: "
              f"primary answers {EXPECTED_PREDICTIONS['primary']}, canary {EXPECTED_PREDICTIONS['canary']}")
        envoy = envoy_from_istio(models.ports).start()
        conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
        print(f"Envoy on 127.0.0.1:{envoy.port} with istio/wasmplugin.yaml's pluginConfig:\n"
              f"{json.dumps(PLUGIN_CONFIG, indent=1)}")

        weight = ROUTE["canary_weight"]
        print(f"\n== 1000 x POST /v1/models/sklearn:predict to {PUBLIC} (canary_weight {weight})")
        counts = collections.Counter(predict(conn, PUBLIC) for _ in range(1000))
        for release in ("primary", "canary"):
            print(f"  {release:8} {counts[release]:5}  {counts[release] / 10:5.1f} %")

        print("\n== With `traffic: test` (pinned to the canary), and on each release's own host")
        print(f"  {PUBLIC} + traffic: test -> {' '.join(predict(conn, PUBLIC, {'traffic': 'test'}) for _ in range(5))}")
        for release in ("primary", "canary"):
            host = ROUTE[release]["host"]
            print(f"  {host} -> {' '.join(predict(conn, host) for _ in range(5))}")

        users = [f"user-{i}" for i in range(1, 21)]
        before = {u: predict(conn, PUBLIC, {"x-user-id": u}) for u in users}
        print(f"\n== 20 users (x-user-id) at canary_weight {weight}: "
              f"{sum(v == 'canary' for v in before.values())} on the canary")
        envoy.stop()
        for raised in (25, 50, 100):
            envoy = envoy_from_istio(models.ports, plugin_config=with_weight(raised)).start()
            conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
            after = {u: predict(conn, PUBLIC, {"x-user-id": u}) for u in users}
            moved_back = [u for u in users if before[u] == "canary" and after[u] != "canary"]
            print(f"   ramp to {raised:3}: {sum(v == 'canary' for v in after.values()):2} on the canary, "
                  f"{len(moved_back)} moved back to primary")
            envoy.stop()
            if moved_back:
                return 1
            before = after
    return 0


if __name__ == "__main__":
    sys.exit(main())
