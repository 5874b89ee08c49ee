"""`make demo-rollout`: `canary-split rollout` and `status` on this machine. Envoy with the module
reads its filter config from an ECDS file, a real Prometheus scrapes Envoy every second, and
steady traffic (sticky users, one request in ten pinned with `traffic: test`) runs throughout.
First a healthy canary is ramped 10 -> 25 -> 50 -> 100 %; then a canary that starts failing one
request in five at the second step is rolled back to 0 within that step."""

import pathlib
import shlex
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from rollout_rig import CLI, ENVOY_PRESET, Rig, WeightWatcher, requests_to  # noqa: E402

STEPS = ["--steps", "10,25,50,100", "--interval", "5s", "--poll", "1s", "--min-requests", "30",
         # Loopback answers take about a millisecond, where one slow scheduling swings the mean.
         "--latency-floor", "100ms"]


def section(title: str):
    print(f"\n== {title}", flush=True)


def show(command: list[str]):
    shown = [arg if not arg.startswith("/tmp/") else pathlib.Path(arg).name for arg in command]
    print("$ canary-split " + shlex.join(shown), flush=True)


def main() -> int:
    if not CLI.exists():
        print(f"missing {CLI}: run `make demo-rollout`", file=sys.stderr)
        return 2
    rig = Rig()
    try:
        print(f"Envoy on 127.0.0.1:{rig.envoy.port}, filter config from the ECDS file {rig.ecds_path}")
        print(f"Prometheus on {rig.prometheus.url}, scraping Envoy's /stats/prometheus every second")
        print("Traffic: 120 requests a second, sticky users (x-user-id) and one in ten pinned (traffic: test)")
        common = ["--prometheus", rig.prometheus.url, "--config", str(rig.ecds_path), *ENVOY_PRESET]

        section("A healthy canary, ramped to 100 %")
        rig.start_traffic()
        show(["rollout", *common, *STEPS])
        healthy = rig.rollout(*STEPS, capture=False)
        show(["status", *common, "--window", "5s", "--min-requests", "30"])
        rig.status("--window", "5s", "--min-requests", "30", capture=False)

        section("A canary that fails one request in five from the second step")
        rig.reset()
        canary = rig.upstreams["canary"]
        watcher = WeightWatcher(rig.ecds_path, {25: lambda: setattr(canary, "failure_rate", 0.2)})
        traffic = rig.start_traffic()
        show(["rollout", *common, *STEPS])
        failing = rig.rollout(*STEPS, capture=False)
        watcher.stop()
        print(f"(exit status {failing.returncode})")
        time.sleep(3)
        rolled_back_at = watcher.seen[-1][0]
        after = traffic.since(rolled_back_at + 0.2)
        print(f"Since the rollback: pinned test requests to the canary {requests_to(after, 'canary', True)}, "
              f"to primary {requests_to(after, 'primary', True)}; other requests to the canary "
              f"{requests_to(after, 'canary', False)}, to primary {requests_to(after, 'primary', False)}")
        show(["status", *common, "--window", "5s", "--min-requests", "30"])
        rig.status("--window", "5s", "--min-requests", "30", capture=False)

        section("On a cluster: the kubectl commands for the shipped WasmPlugin (add --run to run them)")
        plan = ["rollout", "--config", str(ROOT / "istio" / "wasmplugin.yaml"), "--kubectl",
                "--steps", "10,25,50,100", "--interval", "5m"]
        show([arg.replace(f"{ROOT}/", "") for arg in plan])
        rig.cli(*plan, capture=False)
        return 0 if healthy.returncode == 0 and failing.returncode == 1 else 1
    finally:
        rig.close()


if __name__ == "__main__":
    sys.exit(main())
