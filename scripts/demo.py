"""`make demo`: a real Envoy with canary_split.wasm in front of two local upstreams, showing the
split at the configured weight, pinned test traffic, sticky users, and a weight increase.

    python scripts/demo.py           # show, then stop
    python scripts/demo.py --serve   # show, then keep Envoy running for your own curl requests
"""

import collections
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import Client, EchoUpstream, Envoy, bootstrap, catch_all_route, split_routes  # noqa: E402

PUBLIC = "shop.example.com"
PRIMARY_HOST = "shop-primary.example.com"
CANARY_HOST = "shop-canary.example.com"


def filter_config(weight: float) -> str:
    return f"""{{
  "routes": [{{
    "host": "{PUBLIC}",
    "primary": {{ "host": "{PRIMARY_HOST}" }},
    "canary":  {{ "host": "{CANARY_HOST}" }},
    "canary_weight": {weight},
    "pin": [ {{ "header": "traffic", "value": "test", "to": "canary" }} ],
    "sticky": {{ "header": "x-user-id" }}
  }}]
}}"""


def start_gateway(weight: float, upstreams: dict) -> Envoy:
    routes = split_routes(PUBLIC, PRIMARY_HOST, CANARY_HOST) + [catch_all_route()]
    return Envoy(bootstrap(filter_config(weight), upstreams, routes), concurrency=2).start()


def section(title: str):
    print(f"\n== {title}")


def main():
    serve = "--serve" in sys.argv
    servers = {name: EchoUpstream(name) for name in ("primary", "canary", "other")}
    upstreams = {name: server.port for name, server in servers.items()}
    weight = 20
    users = [f"user-{i}" for i in range(1, 11)]

    envoy = start_gateway(weight, upstreams)
    client = Client(envoy.port)
    print(f"Envoy listening on 127.0.0.1:{envoy.port} with this filter config:\n{filter_config(weight)}")

    section(f"Split: 2000 requests to {PUBLIC} without a user key (canary_weight {weight})")
    counts = collections.Counter(client.get(PUBLIC).upstream for _ in range(2000))
    for variant in ("primary", "canary"):
        print(f"  {variant:8} {counts[variant]:5}  {100 * counts[variant] / 2000:5.1f} %")

    section("Pinned: 5 requests with `traffic: test` (test traffic always reaches the canary)")
    print("  " + " ".join(client.get(PUBLIC, [("traffic", "test")]).upstream for _ in range(5)))

    section("Spoofed: 5 requests with `x-canary-route: canary` (clients cannot pick a variant)")
    print("  " + " ".join(client.get(PUBLIC, [("x-canary-route", "canary")]).upstream for _ in range(5)))

    section("Rewritten: what the canary upstream receives")
    response = client.get(PUBLIC, [("traffic", "test")])
    for name in ("host", "x-canary-route"):
        print(f"  {name}: {response.headers[name]}")

    section(f"Sticky: 10 users, 5 requests each (x-user-id), at canary_weight {weight}")
    before = {}
    for user in users:
        seen = [client.get(PUBLIC, [("x-user-id", user)]).upstream for _ in range(5)]
        before[user] = seen[0]
        print(f"  {user:8} {' '.join(seen)}")

    raised = 50
    section(f"Raise canary_weight {weight} -> {raised} (a new gateway, as after a config push)")
    envoy.stop()
    envoy = start_gateway(raised, upstreams)
    client = Client(envoy.port)
    for user in users:
        after = client.get(PUBLIC, [("x-user-id", user)]).upstream
        note = "stays on canary" if before[user] == "canary" else ("moves to canary" if after == "canary" else "")
        print(f"  {user:8} {before[user]:8} -> {after:8} {note}")
    moved_back = [u for u in users if before[u] == "canary" and client.get(PUBLIC, [("x-user-id", u)]).upstream != "canary"]
    print(f"  users moved back from canary to primary: {len(moved_back)}")

    if serve:
        section("Serving; try it yourself (Ctrl-C to stop)")
        print(f"  curl -s -H 'host: {PUBLIC}' http://127.0.0.1:{envoy.port}/ -H 'x-user-id: me'")
        print(f"  curl -s -H 'host: {PUBLIC}' http://127.0.0.1:{envoy.port}/ -H 'traffic: test'")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    envoy.stop()
    for server in servers.values():
        server.close()
    return 1 if moved_back else 0


if __name__ == "__main__":
    sys.exit(main())
