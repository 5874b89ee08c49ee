"""The guard on a real Envoy with 2 workers: a canary whose error ratio jumps is out of the split on
every worker within `window_seconds` + 2 s, with no request failed by the filter; a canary as
healthy as primary, or 1.2 x its error ratio, or with fewer than `min_requests` judged requests, or
failing only for pinned testers, is never taken out; a push that changes another route keeps the
trip, one that changes the guarded route ends it; a canary slower than the latency rule allows is
taken out too.

The upstreams fail an exact share of their requests, spread evenly (every fifth for 20 %), so the
runs that must not trip depend on the glue counting right, not on luck; the statistics of random
errors are the core's property tests (src/guard.rs). Each run is short (GUARD_RUN_SECONDS, 20 s by
default); set it to 300 or more for the longer runs the issue asks of a release.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest

from harness import (Envoy, UpstreamServer, bootstrap, catch_all_route, free_port, split_routes, wasm_failures,
                     write_ecds)

PUBLIC, OTHER = "shop.example.com", "api.example.com"
WINDOW_SECONDS = 10
MIN_REQUESTS = 20
RUN_SECONDS = float(os.environ.get("GUARD_RUN_SECONDS", 20))
# The load: CLIENTS threads at RATE requests a second each, half of them to the canary.
CLIENTS, RATE, CANARY_WEIGHT = 4, 40, 50
MIN_CANARY_RATE = 50
INJECTED = "x-injected-failure"


class FailingUpstream:
    """An HTTP/1.1 upstream that answers 503 (marked with INJECTED) for an exact share of its
    requests, spread evenly, and 200 otherwise, after `delay` seconds; `fail_pinned` fails every
    request carrying the pin header `traffic: test` instead."""

    def __init__(self, name: str):
        self.name = name
        self.share = 0.0
        self.fail_pinned = False
        self.delay = 0.0
        self._owed = 0.0
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                failed = upstream._fails(self.headers.get("traffic") == "test")
                time.sleep(upstream.delay)
                self.send_response(503 if failed else 200)
                self.send_header("x-upstream", upstream.name)
                if failed:
                    self.send_header(INJECTED, "1")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = UpstreamServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _fails(self, pinned: bool) -> bool:
        if pinned:
            return self.fail_pinned
        with self._lock:
            self._owed += self.share
            if self._owed >= 1:
                self._owed -= 1
                return True
            return False

    def fail(self, share: float):
        with self._lock:
            self.share, self._owed = share, 0.0

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Outcome:
    sent: float
    status: int
    upstream: str | None
    injected: bool


@dataclass
class Load:
    """CLIENTS threads sending RATE requests a second each to `host` until stopped, each on a
    connection it renews every 20 requests, so Envoy hands the load to both workers."""
    port: int
    host: str = PUBLIC
    headers: dict[str, str] = field(default_factory=dict)
    clients: int = CLIENTS
    rate: float = RATE
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()

    def _client(self):
        conn, sent_on_conn, next_at = None, 0, time.monotonic()
        while not self._stop.is_set():
            if conn is None or sent_on_conn == 20:
                if conn:
                    conn.close()
                conn, sent_on_conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10), 0
            sent = time.monotonic()
            try:
                conn.request("GET", "/", headers={"host": self.host, **self.headers})
                reply = conn.getresponse()
                reply.read()
                self.outcomes.append(Outcome(sent, reply.status, reply.getheader("x-upstream"),
                                             reply.getheader(INJECTED) == "1"))
                sent_on_conn += 1
            except (OSError, http.client.HTTPException) as error:
                self.errors.append(f"{sent:.3f}: {error!r}")
                conn.close()
                conn = None
            next_at = max(next_at + 1 / self.rate, time.monotonic() - 1)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        return self.outcomes


def guard_config(canary_weight=CANARY_WEIGHT, other_weight=10, guard=None) -> dict:
    return {"routes": [
        {"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": canary_weight,
         "pin": [{"header": "traffic", "value": "test", "to": "canary"}],
         "guard": guard if guard is not None else {"window_seconds": WINDOW_SECONDS, "min_requests": MIN_REQUESTS}},
        {"host": OTHER, "primary": {}, "canary": {}, "canary_weight": other_weight},
    ]}


@pytest.fixture
def releases():
    servers = {name: FailingUpstream(name) for name in ("primary", "canary", "other")}
    yield servers
    for server in servers.values():
        server.close()


@dataclass
class Gateway:
    envoy: Envoy
    ecds: pathlib.Path

    def push(self, config: dict):
        """Publishes `config` and returns once every worker has configured it."""
        before = self.envoy.configured_by_workers()
        write_ecds(self.ecds, json.dumps(config))
        wait_for(lambda: self.envoy.configured_by_workers() >= before + self.envoy.concurrency,
                 "the push on every worker", 20)

    def stat(self, name: str, host: str = PUBLIC, **labels) -> int:
        """One of the filter's stats, by name and labels (0 when not defined)."""
        tags = "".join(f"{tag}=.={value};.;" for tag, value in {"host": host, **labels}.items())
        # Envoy puts a Wasm module's own stats under `wasmcustom.`.
        return self.envoy.stats(f"{name}$").get(f"wasmcustom.{tags}{name}", 0)

    def workers_with_new_connections(self, since: dict[str, int]) -> set[str]:
        return {worker for worker, total in self.connections_by_worker().items() if total > since.get(worker, 0)}

    def connections_by_worker(self) -> dict[str, int]:
        stats = self.envoy.stats(r"^listener\.127\.0\.0\.1_\d+\.worker_\d+\.downstream_cx_total$")
        return {name.split(".")[-2]: value for name, value in stats.items()}


def start_gateway(releases, config: dict, canary_port: int | None = None) -> Gateway:
    ecds = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-guard-")) / "canary-split.json"
    hosts = split_routes(PUBLIC, None, None) + split_routes(OTHER, None, None) + [catch_all_route()]
    ports = {name: server.port for name, server in releases.items()}
    if canary_port:
        ports["canary"] = canary_port
    envoy = Envoy(bootstrap(json.dumps(config), ports, hosts, ecds_path=ecds), concurrency=2).start()
    return Gateway(envoy, ecds)


@pytest.fixture
def gateways():
    started = []

    def start(*args, **kwargs) -> Gateway:
        gateway = start_gateway(*args, **kwargs)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.envoy.stop()


def canary_rate(outcomes: list[Outcome], since: float, until: float) -> float:
    return sum(since <= o.sent < until and o.upstream == "canary" for o in outcomes) / (until - since)


def assert_nothing_failed_by_the_filter(outcomes: list[Outcome], load: Load, envoy: Envoy):
    assert not load.errors, load.errors[:5]
    failed = [o for o in outcomes if o.status != 200 and not o.injected]
    assert not failed, failed[:5]
    assert not wasm_failures(envoy.settled_log())


def test_a_failing_canary_is_out_of_the_split_on_every_worker_within_the_window(releases, gateways):
    releases["primary"].fail(0.01)
    releases["canary"].fail(0.01)
    gateway = gateways(releases, guard_config())
    load = Load(gateway.envoy.port)
    time.sleep(6)  # a healthy window first
    jumped = time.monotonic()
    releases["canary"].fail(0.2)
    deadline = jumped + WINDOW_SECONDS + 2
    time.sleep(deadline - time.monotonic())
    connections = gateway.connections_by_worker()
    time.sleep(6)  # after the deadline: every request on every worker goes to primary
    outcomes = load.stop()

    after = [o for o in outcomes if o.sent >= deadline]
    assert after and all(o.upstream == "primary" for o in after), \
        [o for o in after if o.upstream != "primary"][:5]
    assert gateway.workers_with_new_connections(connections) == {"worker_0", "worker_1"}
    assert canary_rate(outcomes, jumped - 6, jumped) >= MIN_CANARY_RATE
    last_canary = max(o.sent for o in outcomes if o.upstream == "canary")
    print(f"canary out of the split {last_canary - jumped:.1f} s after its error ratio jumped")
    assert_nothing_failed_by_the_filter(outcomes, load, gateway.envoy)
    assert gateway.stat("canary_split_guard_tripped") == 1
    assert gateway.stat("canary_split_guard_trips_total") == 1
    assert gateway.stat("canary_split_requests_total", split_release="primary", reason="guard") > 0
    trips = trip_log_lines(gateway)
    assert len(trips) == 1 and "[warning]" in trips[0], trips
    assert "judged requests" in trips[0] and "primary" in trips[0]


@pytest.mark.parametrize("primary_share, canary_share", [(0.025, 0.025), (0.025, 0.03)],
                         ids=["as-primary", "1.2x-primary"])
def test_a_canary_within_its_limits_is_never_taken_out(releases, gateways, primary_share, canary_share):
    releases["primary"].fail(primary_share)
    releases["canary"].fail(canary_share)
    releases["canary"].fail_pinned = True  # testers' traffic never counts, however bad
    gateway = gateways(releases, guard_config())
    load = Load(gateway.envoy.port)
    pinned = Load(gateway.envoy.port, headers={"traffic": "test"}, clients=1, rate=20)
    started = time.monotonic()
    time.sleep(RUN_SECONDS)
    outcomes, pinned_outcomes = load.stop(), pinned.stop()

    late = [o for o in outcomes if o.sent >= started + RUN_SECONDS - WINDOW_SECONDS]
    assert sum(o.upstream == "canary" for o in late) > 0.4 * len(late), "the canary left the split"
    assert canary_rate(outcomes, started + 1, started + RUN_SECONDS - 1) >= MIN_CANARY_RATE
    assert pinned_outcomes and all(o.upstream == "canary" and o.injected for o in pinned_outcomes)
    assert_nothing_failed_by_the_filter(outcomes + pinned_outcomes, load, gateway.envoy)
    assert gateway.stat("canary_split_guard_tripped") == 0
    assert gateway.stat("canary_split_guard_trips_total") == 0
    assert gateway.stat("canary_split_requests_total", split_release="primary", reason="guard") == 0


def test_fewer_judged_requests_than_min_requests_never_trip(releases, gateways):
    """A canary failing half its requests, at under MIN_REQUESTS a window; then, to show that the
    count alone held it back, at three times that."""
    releases["canary"].fail(0.5)
    gateway = gateways(releases, guard_config(canary_weight=100))
    quiet_rate = 0.6 * MIN_REQUESTS / WINDOW_SECONDS
    load = Load(gateway.envoy.port, clients=1, rate=quiet_rate)
    started = time.monotonic()
    time.sleep(RUN_SECONDS)
    quiet = load.stop()
    assert quiet and all(o.upstream == "canary" for o in quiet)
    assert sum(o.injected for o in quiet) >= 0.4 * len(quiet)
    assert gateway.stat("canary_split_guard_tripped") == 0
    assert_nothing_failed_by_the_filter(quiet, load, gateway.envoy)

    busier = Load(gateway.envoy.port, clients=1, rate=3 * MIN_REQUESTS / WINDOW_SECONDS)
    deadline = time.monotonic() + WINDOW_SECONDS + 2
    while gateway.stat("canary_split_guard_tripped") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    busier.stop()
    assert gateway.stat("canary_split_guard_tripped") == 1, f"after {time.monotonic() - started:.0f} s"


def wait_for(predicate, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def trip_log_lines(gateway) -> list[str]:
    """The trip's log lines, once Envoy has written them: the gauge can be read before the log
    file's next flush."""
    def lines():
        return [line for line in gateway.envoy.log().splitlines() if "guard tripped for shop.example.com" in line]
    wait_for(lines, "the trip's log line", 5)
    return lines()


def test_a_trip_lasts_until_a_push_changes_the_route(releases, gateways):
    releases["canary"].fail(0.5)
    gateway = gateways(releases, guard_config())
    load = Load(gateway.envoy.port)
    wait_for(lambda: gateway.stat("canary_split_guard_tripped") == 1, "the trip", WINDOW_SECONDS + 2)
    releases["canary"].fail(0)  # fixed, but only a change of the route brings it back

    def served_by(since: float) -> set[str]:
        return {o.upstream for o in list(load.outcomes) if o.sent >= since}

    # A push that changes only the other route (Istio pushes the whole config): still tripped.
    gateway.push(guard_config(other_weight=20))
    pushed = time.monotonic()
    time.sleep(4)
    assert served_by(pushed) == {"primary"}
    assert gateway.stat("canary_split_guard_tripped") == 1
    wait_for(lambda: "guard for shop.example.com stays tripped" in gateway.envoy.log(), "the log line", 5)

    # A push that changes the guarded route: untripped, its canary back in the split.
    gateway.push(guard_config(canary_weight=CANARY_WEIGHT - 1, other_weight=20))
    pushed = time.monotonic()
    time.sleep(4)
    outcomes = load.stop()
    assert served_by(pushed) == {"primary", "canary"}
    assert gateway.stat("canary_split_guard_tripped") == 0
    assert gateway.stat("canary_split_guard_trips_total") == 1
    assert_nothing_failed_by_the_filter(outcomes, load, gateway.envoy)


def without_guard() -> dict:
    config = guard_config()
    del config["routes"][0]["guard"]
    return config


def without_route() -> dict:
    config = guard_config()
    del config["routes"][0]
    return config


@pytest.mark.parametrize("unguarded", [without_guard, without_route], ids=["guard-removed", "route-removed"])
def test_a_push_that_stops_guarding_a_tripped_host_sets_its_gauge_to_0(releases, gateways, unguarded):
    """Else `CanarySplitGuardTripped` fires on until the gateway restarts."""
    releases["canary"].fail(0.5)
    gateway = gateways(releases, guard_config())
    load = Load(gateway.envoy.port)
    wait_for(lambda: gateway.stat("canary_split_guard_tripped") == 1, "the trip", WINDOW_SECONDS + 2)
    time.sleep(1)  # every worker's tick has seen the trip
    gateway.push(unguarded())
    time.sleep(2)  # ticks of both workers after the push
    load.stop()
    gauge = "wasmcustom.host=.=shop.example.com;.;canary_split_guard_tripped"
    assert gateway.envoy.stats("canary_split_guard_tripped$") == {gauge: 0}
    assert gateway.stat("canary_split_guard_trips_total") == 1


def test_envoys_own_5xx_count_as_errors(releases, gateways):
    """A canary nobody listens for: Envoy answers its requests with 503 itself (connection
    refused), and the guard counts those."""
    releases["primary"].fail(0)
    gateway = gateways(releases, guard_config(), canary_port=free_port())
    load = Load(gateway.envoy.port)
    wait_for(lambda: gateway.stat("canary_split_guard_tripped") == 1, "the trip", WINDOW_SECONDS + 2)
    tripped = time.monotonic()
    time.sleep(3)
    outcomes = load.stop()
    after = [o for o in outcomes if o.sent >= tripped + 1]
    assert after and all(o.status == 200 and o.upstream == "primary" for o in after)
    assert not load.errors


def test_a_slow_canary_trips_the_latency_rule(releases, gateways):
    guard = {"window_seconds": WINDOW_SECONDS, "min_requests": MIN_REQUESTS,
             "max_latency_increase": 30, "latency_floor_ms": 150}
    gateway = gateways(releases, guard_config(guard=guard))
    load = Load(gateway.envoy.port)
    time.sleep(6)
    assert gateway.stat("canary_split_guard_tripped") == 0, "tripped while as fast as primary"
    releases["canary"].delay = 0.4
    wait_for(lambda: gateway.stat("canary_split_guard_tripped") == 1, "the trip", WINDOW_SECONDS + 2)
    outcomes = load.stop()
    assert_nothing_failed_by_the_filter(outcomes, load, gateway.envoy)
    (trip,) = trip_log_lines(gateway)
    assert "judged requests slower than 150 ms" in trip, trip
