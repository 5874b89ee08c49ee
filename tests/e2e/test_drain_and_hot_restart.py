"""Requests in flight when the gateway drains or is hot-restarted complete, routed by the filter.

The canary upstream holds requests (UPSTREAM_HOLD_HEADER) until the test releases them, so they
stay in flight while Envoy is drained through its admin interface (how Istio's agent stops a
gateway) or replaced by a hot restart, however long that takes on a busy machine. The route
splits everything to canary, so a request the filter routed reaches canary with the decision
header set; one that bypassed it would reach primary."""

import http.client
import json
import pathlib
import tempfile
import threading
import time
from dataclasses import dataclass

import pytest

from harness import (DECISION_HEADER, UPSTREAM_HOLD_HEADER, Client, EchoUpstream, Envoy, HotRestart, bootstrap,
                     catch_all_route, free_port, split_routes)

PUBLIC = "shop.example.com"
CONFIG = json.dumps({"routes": [{"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": 100}]})
DRAIN_SECONDS = 2
# The drain ends on a timer of Envoy's main thread, which a busy machine may run late: the listener
# must close within this long after the drain time.
CLOSE_SECONDS = 5
HELD = 8


@dataclass
class Answer:
    status: int
    upstream: str | None
    decision: str | None
    finished: float


@pytest.fixture
def releases():
    """Echo upstreams of this test's own, whose held requests it releases."""
    servers = {name: EchoUpstream(name) for name in ("primary", "canary", "other")}
    yield servers
    for server in servers.values():
        server.close()


def held_requests(port: int, canary: EchoUpstream) -> tuple[list[threading.Thread], list[Answer]]:
    """Starts HELD requests, each on its own connection, that the canary holds until released;
    returns once it holds them all: through Envoy and the filter, and in flight."""
    answers: list[Answer] = []

    def one():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/", headers={"host": PUBLIC, UPSTREAM_HOLD_HEADER: "1"})
        reply = connection.getresponse()
        received = dict(json.loads(reply.read())["headers"])
        answers.append(Answer(reply.status, reply.getheader("x-upstream"), received.get(DECISION_HEADER),
                              time.monotonic()))
        connection.close()

    threads = [threading.Thread(target=one) for _ in range(HELD)]
    for thread in threads:
        thread.start()
    canary.wait_until_holding(HELD)
    return threads, answers


def assert_completed_and_routed_by_the_filter(threads: list[threading.Thread], answers: list[Answer]):
    for thread in threads:
        thread.join(30)
    assert len(answers) == HELD
    for answer in answers:
        assert (answer.status, answer.upstream, answer.decision) == (200, "canary", "canary"), answer


def routed_by_the_filter(response) -> bool:
    return (response.status, response.upstream, response.headers.get(DECISION_HEADER)) == (200, "canary", "canary")


def gateway_config(releases: dict[str, EchoUpstream], port: int = 0) -> dict:
    ports = {name: server.port for name, server in releases.items()}
    return bootstrap(CONFIG, ports, split_routes(PUBLIC, None, None) + [catch_all_route()], listener_port=port)


@dataclass
class Outcome:
    began: float
    ended: float
    outcome: str


def new_connection_outcomes(port: int, until, outcomes: list[Outcome]):
    """A request on a new connection every 0.1 s until `until()`: when it began and ended, and what
    came of it, appended to `outcomes` as they come."""
    while not until():
        began = time.monotonic()
        try:
            response = Client(port).get(PUBLIC)
            outcome = "routed" if routed_by_the_filter(response) else f"status {response.status} from {response.upstream}"
        except ConnectionRefusedError:
            outcome = "refused"
        outcomes.append(Outcome(began, time.monotonic(), outcome))
        time.sleep(0.1)


def test_requests_in_flight_through_a_hot_restart_complete_routed_by_the_filter(releases):
    port = free_port()  # the new process takes over the listener by its address
    base_id_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-hot-restart-")) / "base-id"
    config = gateway_config(releases, port)
    parent = Envoy(config, hot_restart=HotRestart(0, base_id_path), drain_seconds=DRAIN_SECONDS).start()
    child = None
    try:
        threads, answers = held_requests(port, releases["canary"])
        meanwhile: list[Outcome] = []  # new connections while the child starts and takes over
        stop = threading.Event()
        traffic = threading.Thread(target=new_connection_outcomes, args=(port, stop.is_set, meanwhile))
        traffic.start()
        child = Envoy(config, hot_restart=HotRestart(1, base_id_path), drain_seconds=DRAIN_SECONDS).start()
        restarted = time.monotonic()
        assert not answers  # in flight across the restart
        # Released well before the parent's shutdown time, counted from the child's start, is over.
        releases["canary"].release_held()
        assert_completed_and_routed_by_the_filter(threads, answers)
        deadline = time.monotonic() + 30
        while sum(o.began > restarted for o in meanwhile) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        traffic.join()
        assert sum(o.began > restarted for o in meanwhile) >= 5, meanwhile  # some after the takeover too
        assert {o.outcome for o in meanwhile} == {"routed"}, meanwhile
        assert parent.process.wait(15) == 0  # the parent exits once it has shut down
        assert routed_by_the_filter(Client(port).get(PUBLIC))
    finally:
        parent.stop()
        if child:
            child.stop()


@pytest.fixture
def draining_gateway(releases):
    envoy = Envoy(gateway_config(releases), drain_seconds=DRAIN_SECONDS).start()
    yield envoy
    envoy.stop()


def test_requests_in_flight_through_a_graceful_drain_complete_routed_by_the_filter(releases, draining_gateway):
    threads, answers = held_requests(draining_gateway.port, releases["canary"])
    asked = time.monotonic()
    assert draining_gateway.admin("/drain_listeners?graceful", method="POST") == (200, "OK\n")
    drain_started = time.monotonic()
    # New connections are served, and routed, while the drain lasts; then the listener closes.
    outcomes: list[Outcome] = []
    deadline = asked + DRAIN_SECONDS + CLOSE_SECONDS
    new_connection_outcomes(draining_gateway.port,
                            lambda: outcomes and outcomes[-1].outcome == "refused" or time.monotonic() > deadline,
                            outcomes)
    *served, closed = outcomes
    assert closed.outcome == "refused", f"the listener still accepts {CLOSE_SECONDS} s after the drain time"
    assert closed.ended >= asked + DRAIN_SECONDS, "the listener closed before the drain time"
    assert served and {o.outcome for o in served} == {"routed"}, outcomes
    assert served[-1].began >= drain_started + DRAIN_SECONDS / 2, outcomes  # served well into the drain
    assert not answers  # in flight through the whole drain
    releases["canary"].release_held()
    assert_completed_and_routed_by_the_filter(threads, answers)


def test_requests_in_flight_when_the_health_check_fails_complete_routed_by_the_filter(releases, draining_gateway):
    threads, answers = held_requests(draining_gateway.port, releases["canary"])
    assert draining_gateway.admin("/healthcheck/fail", method="POST") == (200, "OK\n")
    assert draining_gateway.admin("/ready")[0] == 503  # what takes the pod out of its Service
    outcomes: list[Outcome] = []
    until = time.monotonic() + 1.0
    new_connection_outcomes(draining_gateway.port, lambda: time.monotonic() > until, outcomes)
    assert outcomes and {o.outcome for o in outcomes} == {"routed"}, outcomes
    assert not answers
    releases["canary"].release_held()
    assert_completed_and_routed_by_the_filter(threads, answers)
