"""`make demo-kserve`: the istio/ deployment on this machine. Two KServe model servers (KServe's
Python ModelServer with scikit-learn, started as the sklearn runtime starts its server for the
primary and the canary InferenceService: both serve "sklearn", trained differently) behind Envoy
running canary_split.wasm with the WasmPlugin's pluginConfig and the routes the VirtualServices
render to: the first deploy at canary_weight 0, the ramp, and what the same users get from a
per-request weighted split instead."""

import collections
import copy
import http.client
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "kserve"))

from conftest import envoy_from_istio, release_token  # noqa: E402
from harness import Envoy, bootstrap  # noqa: E402
from istio_routes import load_manifests, wasm_plugin  # noqa: E402
from servers import EXPECTED_PREDICTIONS, PROBE, start_servers  # noqa: E402

PLUGIN_CONFIG = wasm_plugin(load_manifests())["spec"]["pluginConfig"]
ROUTE = PLUGIN_CONFIG["routes"][0]
PUBLIC = ROUTE["host"]
RAMP = (10, 25, 50, 100)
USERS = [f"user-{i}" for i in range(1, 21)]
MANY_USERS = [f"user-{i}" for i in range(1, 201)]
REQUESTS_PER_USER = 5


def predict(conn, path, host, headers=None) -> str:
    """Which release's model answered, or the status of a refusal (`403`)."""
    conn.request("POST", path, body=json.dumps(PROBE),
                 headers={"host": host, "content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        return str(response.status)
    predictions = json.loads(body)["predictions"]
    return next(release for release, expected in EXPECTED_PREDICTIONS.items() if expected == predictions)


def with_weight(weight) -> dict:
    config = copy.deepcopy(PLUGIN_CONFIG)
    config["routes"][0]["canary_weight"] = weight
    return config


def weighted_route(weight) -> list[dict]:
    """The public host split by weighted_clusters, for an Envoy without the filter: a random pick per
    request, what a weighted route (a VirtualService's, or the HTTPRoute KServe makes for a
    Standard-mode canary) gives."""
    split = [{"name": "primary", "weight": 100 - weight}, {"name": "canary", "weight": weight}]
    hosts = [{"name": "public", "domains": [PUBLIC],
              "routes": [{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": split}}}]}]
    return hosts


def releases_per_user(conn, path, users=USERS) -> dict[str, set[str]]:
    return {u: {predict(conn, path, PUBLIC, {"x-user-id": u}) for _ in range(REQUESTS_PER_USER)} for u in users}


def main():
    print("Training two iris models and starting two KServe model servers ...")
    with start_servers() as models:
        path = f"/v1/models/{models.model_name}:predict"
        print(f"  primary on :{models.primary_port}, canary on :{models.canary_port}, model {models.model_name!r}; "
              f"probe {PROBE['instances'][0]}: primary answers {EXPECTED_PREDICTIONS['primary']}, "
              f"canary {EXPECTED_PREDICTIONS['canary']}")
        envoy = envoy_from_istio(models.ports).start()
        conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
        print(f"Envoy on 127.0.0.1:{envoy.port} with istio/wasmplugin.yaml's pluginConfig:\n"
              f"{json.dumps(PLUGIN_CONFIG, indent=1)}")

        weight = ROUTE["canary_weight"]
        print(f"\n== The first deploy (canary_weight {weight}): 1000 x POST {path} to {PUBLIC}")
        counts = collections.Counter(predict(conn, path, PUBLIC) for _ in range(1000))
        for release in ("primary", "canary"):
            print(f"  {release:8} {counts[release]:5}  {counts[release] / 10:5.1f} %")

        print("\n== With `traffic: test` (pinned to the canary), and on each release's own host, which needs a "
              "token for that release (release_hosts: token)")
        print(f"  {PUBLIC} + traffic: test -> {' '.join(predict(conn, path, PUBLIC, {'traffic': 'test'}) for _ in range(5))}")
        for release in ("primary", "canary"):
            host = ROUTE[release]["host"]
            token = dict([release_token(ROUTE, release)])
            with_token = " ".join(predict(conn, path, host, token) for _ in range(5))
            print(f"  {host} + a token --to {release} -> {with_token}")
            print(f"  {host} without a token -> {' '.join(predict(conn, path, host) for _ in range(5))}")

        before = {u: predict(conn, path, PUBLIC, {"x-user-id": u}) for u in USERS}
        print(f"\n== {len(USERS)} users (x-user-id), {REQUESTS_PER_USER} requests each, as the rollout raises the weight")
        print(f"  at {weight:3} %: {sum(v == 'canary' for v in before.values()):2} on the canary")
        envoy.stop()
        for raised in RAMP:
            envoy = envoy_from_istio(models.ports, plugin_config=with_weight(raised)).start()
            conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
            seen = releases_per_user(conn, path)
            envoy.stop()
            after = {u: next(iter(r)) for u, r in seen.items() if len(r) == 1}
            both = [u for u, r in seen.items() if len(r) > 1]
            moved_back = [u for u in after if before[u] == "canary" and after[u] != "canary"]
            print(f"  at {raised:3} %: {sum(v == 'canary' for v in after.values()):2} on the canary, "
                  f"{len(moved_back)} moved back to primary, {len(both)} got both models")
            if moved_back or both:
                return 1
            before = after

        weight = RAMP[0]
        print(f"\n== {len(MANY_USERS)} users, {REQUESTS_PER_USER} requests each, at {weight} %: "
              f"canary-split, and a per-request weighted split without it")
        expected = 1 - (1 - weight / 100) ** REQUESTS_PER_USER - (weight / 100) ** REQUESTS_PER_USER
        for name, envoy in (("canary-split", envoy_from_istio(models.ports, plugin_config=with_weight(weight))),
                            ("weighted split", Envoy(bootstrap(None, models.ports, weighted_route(weight))))):
            envoy.start()
            conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
            seen = releases_per_user(conn, path, MANY_USERS)
            envoy.stop()
            print(f"  {name:15} {sum('canary' in r for r in seen.values()):3} reached the canary, "
                  f"{sum(len(r) > 1 for r in seen.values()):3} got both models")
        print(f"  (at random, {expected * 100:.0f} % of users get both models within {REQUESTS_PER_USER} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
