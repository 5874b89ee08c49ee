"""A canary rollout on this machine: Envoy with the module reading its filter config from an ECDS
file, two upstreams whose failures can be turned on, a real Prometheus scraping Envoy's admin
`/stats/prometheus` every second, and steady traffic with sticky users and pinned testers.
Used by tests/e2e/test_rollout.py and `make demo-rollout`."""

from __future__ import annotations

import json
import pathlib
import random
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from harness import ROOT, Client, Envoy, bootstrap, catch_all_route, split_routes, write_ecds
from prometheus_server import Prometheus

CLI = ROOT / "target" / "debug" / "canary-split"
PUBLIC = "shop.example.com"
USERS = 10_000
# Envoy's own statistics, as the CLI's envoy preset reads them: one release per cluster.
ENVOY_PRESET = ["--preset", "envoy", "--primary", "primary", "--canary", "canary"]

# An alert like the shipped CanaryHigherErrorRate, on Envoy's statistics, firing at once, and
# labelled with the canary's cluster so that `status` shows it under the route; and the shipped
# CanarySplitGuardTripped as it is, on the filter's own gauge (added below).
ALERT_RULES = """groups:
- name: canary
  rules:
  - alert: CanaryHigherErrorRate
    expr: |
      sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="canary",envoy_response_code_class="5"}[3s]))
      / sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="canary"}[3s])) > 0.01
    labels:
      envoy_cluster_name: canary
"""
ALERT_RULES += yaml.safe_dump([group for group in yaml.safe_load((ROOT / "istio" / "alerts.yaml").read_text())["spec"]["groups"]
                               if group["name"] == "canary-split-guard"], sort_keys=False)


def filter_config(weight, guard: dict | None = None) -> str:
    route = {
        "host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": weight,
        "pin": [{"header": "traffic", "value": "test", "to": "canary"}],
        "sticky": {"header": "x-user-id"},
    }
    if guard is not None:
        route["guard"] = guard
    return json.dumps({"routes": [route]})


def ecds_weight(path: pathlib.Path) -> float | None:
    try:
        (resource,) = json.loads(path.read_text())["resources"]
    except (OSError, ValueError):
        return None  # between the write and the rename
    configuration = json.loads(resource["typed_config"]["config"]["configuration"]["value"])
    return configuration["routes"][0]["canary_weight"]


class ReleaseUpstream:
    """An upstream that names itself in `x-upstream` and fails `failure_rate` of its requests with
    a 500, spread evenly (the 5th, 10th, ... at 0.2)."""

    def __init__(self, name: str):
        self.failure_rate = 0.0
        self.served = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self):
                with lock:
                    upstream.served += 1
                    n, rate = upstream.served, upstream.failure_rate
                failed = int(n * rate) > int((n - 1) * rate)
                headers = [(k.lower(), v) for k, v in self.headers.raw_items()]
                body = json.dumps({"upstream": name, "headers": headers}).encode()
                self.send_response(500 if failed else 200)
                self.send_header("content-type", "application/json")
                self.send_header("x-upstream", name)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Traffic:
    """Steady requests to the public host from a background thread: sticky users, and one in ten
    pinned to the canary with `traffic: test`. Counts who answered, and how."""

    def __init__(self, port: int, per_second: float = 120.0):
        self.client = Client(port)
        self.interval = 1.0 / per_second
        # (when sent, pinned, upstream, status): the filter decides a request after it was sent.
        self.answers: list[tuple[float, bool, str | None, int]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        rng = random.Random(7)
        next_at = time.monotonic()
        sent = 0
        while not self.stopping.is_set():
            pinned = sent % 10 == 0
            headers = [("traffic", "test")] if pinned else [("x-user-id", f"user-{rng.randrange(USERS)}")]
            try:
                sent_at = time.monotonic()
                response = self.client.get(PUBLIC, headers)
                self.answers.append((sent_at, pinned, response.upstream, response.status))
            except OSError:
                self.client.reconnect()
            sent += 1
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> "Traffic":
        self.thread.start()
        return self

    def since(self, start: float) -> list[tuple[float, bool, str | None, int]]:
        return [answer for answer in list(self.answers) if answer[0] >= start]

    def at_least(self, count: int, start: float, timeout: float = 30.0) -> list[tuple[float, bool, str | None, int]]:
        """The answers to requests sent since `start`, once there are `count` of them: a busy
        machine sends fewer a second."""
        deadline = time.monotonic() + timeout
        while len(answers := self.since(start)) < count:
            assert time.monotonic() < deadline, f"{len(answers)} answers since then, after {timeout}s"
            time.sleep(0.1)
        return answers

    def stop(self):
        self.stopping.set()
        self.thread.join(10)


class WeightWatcher:
    """Follows the weight in the ECDS file, as Envoy does, and calls `on_weight[w]()` once when
    weight `w` first appears. With `envoy` (whose config is the file's when the watcher starts), it
    also notes when every worker of Envoy had configured each change: `applied`."""

    def __init__(self, path: pathlib.Path, on_weight: dict | None = None, envoy: Envoy | None = None):
        self.path = path
        self.on_weight = dict(on_weight or {})
        self.seen: list[tuple[float, float]] = []  # (time, weight), each change
        self.envoy = envoy
        self.reloads_before = ecds_state(envoy).reloads if envoy else 0
        self.applied: list[float] = []  # for each change after the first weight seen
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            self._look()
            time.sleep(0.02)

    def _look(self):
        weight = ecds_weight(self.path)
        if weight is not None and (not self.seen or self.seen[-1][1] != weight):
            self.seen.append((time.monotonic(), weight))
            action = self.on_weight.pop(weight, None)
            if action:
                action()
        if self.envoy and len(self.applied) < len(self.seen) - 1:
            state = ecds_state(self.envoy)
            if state.settled and state.reloads - self.reloads_before >= len(self.applied) + 1:
                self.applied.append(time.monotonic())

    def weights(self) -> list[float]:
        return [weight for _, weight in self.seen]

    def stop(self, timeout: float = 20.0):
        """Stops watching the file, and waits until Envoy has configured every change seen."""
        self.stopping.set()
        self.thread.join(5)
        self._look()  # the last write may have come after the last look
        deadline = time.monotonic() + timeout
        while self.envoy and len(self.applied) < len(self.seen) - 1:
            assert time.monotonic() < deadline, f"Envoy's workers configured {len(self.applied)} of {len(self.seen) - 1} pushes"
            time.sleep(0.05)
            self._look()


ECDS = "extension_config_discovery.http_filter.canary-split."


@dataclass
class EcdsState:
    handled: int
    """Pushes Envoy read, whether it took them or not."""
    reloads: int
    """Configs it took: a push identical to the config it has is read, not taken."""
    settled: bool
    """Every worker has configured every config Envoy took."""


def ecds_state(envoy: Envoy) -> EcdsState:
    stats = envoy.stats(rf"^{ECDS}(update_success|update_rejected|config_reload)$")
    reloads = stats[f"{ECDS}config_reload"]
    return EcdsState(stats[f"{ECDS}update_success"] + stats[f"{ECDS}update_rejected"], reloads,
                     envoy.configured_by_workers() == envoy.concurrency * reloads)


class Rig:
    """Everything a rollout needs, started once; `reset()` between rollouts, `close()` at the end.
    Prometheus takes about five seconds to scrape a new target, hence one rig for many rollouts,
    each judging only its own steps' traffic."""

    def __init__(self, concurrency: int = 1):
        self.upstreams = {name: ReleaseUpstream(name) for name in ("primary", "canary", "other")}
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-rollout-"))
        self.ecds_path = self.workdir / "canary-split.json"
        config = bootstrap(filter_config(0), {n: u.port for n, u in self.upstreams.items()},
                           split_routes(PUBLIC, None, None) + [catch_all_route()], ecds_path=self.ecds_path)
        # Histograms reach /stats/prometheus when Envoy merges them: every second, like the scrapes.
        config["stats_flush_interval"] = "1s"
        self.envoy = Envoy(config, concurrency=concurrency).start()
        self.prometheus = self.new_prometheus(ALERT_RULES)
        self.traffic: Traffic | None = None

    def new_prometheus(self, rules: str | None = None, dropped_metrics: list[str] | None = None) -> Prometheus:
        """A Prometheus scraping this rig's Envoy (less `dropped_metrics`), once it has scraped it."""
        prometheus = Prometheus([self.envoy.admin_address()], rules, dropped_metrics).start()
        prometheus.wait_for_series('envoy_cluster_upstream_rq_total{envoy_cluster_name="primary"}')
        return prometheus

    def start_traffic(self, per_second: float = 120.0) -> Traffic:
        self.traffic = Traffic(self.envoy.port, per_second).start()
        return self.traffic

    def cli(self, *args: str, capture: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(CLI), *args], capture_output=capture, text=True, timeout=120, env=env)

    def rollout(self, *args: str, prometheus: Prometheus | None = None, capture: bool = True):
        url = (prometheus or self.prometheus).url
        return self.cli("rollout", "--prometheus", url, "--config", str(self.ecds_path), *ENVOY_PRESET, *args,
                        capture=capture)

    def status(self, *args: str, capture: bool = True) -> subprocess.CompletedProcess:
        return self.cli("status", "--prometheus", self.prometheus.url, "--config", str(self.ecds_path),
                        *ENVOY_PRESET, *args, capture=capture)

    def reset(self, timeout: float = 20.0, guard: dict | None = None):
        """No traffic, weight 0 (with the route's `guard`, if given), a healthy canary, and no
        alert left firing."""
        if self.traffic:
            self.traffic.stop()
            self.traffic = None
        self.push(filter_config(0, guard), timeout)
        self.upstreams["canary"].failure_rate = 0.0
        deadline = time.monotonic() + timeout
        while self.prometheus.alerts():
            if time.monotonic() > deadline:
                raise AssertionError(f"alerts still firing after {timeout}s: {self.prometheus.alerts()}")
            time.sleep(0.5)

    def push(self, config: str, timeout: float = 20.0):
        """Writes a filter config to the ECDS file and returns once every worker of Envoy has
        configured it."""
        before, published = ecds_state(self.envoy), json.loads(self.ecds_path.read_text())
        write_ecds(self.ecds_path, config)
        changed = json.loads(self.ecds_path.read_text()) != published
        deadline = time.monotonic() + timeout
        while not ((state := ecds_state(self.envoy)).handled > before.handled
                   and (state.reloads > before.reloads or not changed) and state.settled):
            assert time.monotonic() < deadline, f"Envoy did not configure the push in {timeout}s: {state}"
            time.sleep(0.05)

    def close(self):
        if self.traffic:
            self.traffic.stop()
        self.prometheus.stop()
        self.envoy.stop()
        for upstream in self.upstreams.values():
            upstream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def requests_to(answers, upstream: str, pinned: bool) -> int:
    return sum(1 for _, p, u, _ in answers if p == pinned and u == upstream)
