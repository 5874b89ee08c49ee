"""Requests in flight when the gateway drains or is hot-restarted complete, routed by the filter.

Slow upstream answers (UPSTREAM_DELAY_HEADER) keep requests in flight while Envoy is drained
through its admin interface (how Istio's agent stops a gateway) or replaced by a hot restart. The
route splits everything to canary, so a request the filter routed reaches canary with the
decision header set; one that bypassed it would reach primary."""

import http.client
import json
import pathlib
import tempfile
import threading
import time
from dataclasses import dataclass

import pytest

from harness import (DECISION_HEADER, UPSTREAM_DELAY_HEADER, Client, Envoy, HotRestart, bootstrap, catch_all_route,
                     free_port, split_routes)

PUBLIC = "shop.example.com"
CONFIG = json.dumps({"routes": [{"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": 100}]})
DRAIN_SECONDS = 2
UPSTREAM_SECONDS = 3  # longer than the drain


@dataclass
class Answer:
    status: int
    upstream: str | None
    decision: str | None
    finished: float


def slow_requests(port: int, count: int) -> tuple[list[threading.Thread], list[Answer]]:
    """Starts `count` requests, each on its own connection, that the upstream answers only after
    UPSTREAM_SECONDS; returns once they are all in flight."""
    answers: list[Answer] = []
    sent = threading.Barrier(count + 1)

    def one():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/", headers={"host": PUBLIC, UPSTREAM_DELAY_HEADER: str(UPSTREAM_SECONDS)})
        sent.wait()
        reply = connection.getresponse()
        received = dict(json.loads(reply.read())["headers"])
        answers.append(Answer(reply.status, reply.getheader("x-upstream"), received.get(DECISION_HEADER),
                              time.monotonic()))
        connection.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    sent.wait()
    time.sleep(0.3)  # through Envoy and the filter, waiting on the upstream
    return threads, answers


def assert_completed_and_routed_by_the_filter(threads: list[threading.Thread], answers: list[Answer], count: int):
    for thread in threads:
        thread.join(30)
    assert len(answers) == count
    for answer in answers:
        assert (answer.status, answer.upstream, answer.decision) == (200, "canary", "canary"), answer


def routed_by_the_filter(response) -> bool:
    return (response.status, response.upstream, response.headers.get(DECISION_HEADER)) == (200, "canary", "canary")


def gateway_config(upstreams: dict, port: int = 0) -> dict:
    return bootstrap(CONFIG, upstreams, split_routes(PUBLIC, None, None) + [catch_all_route()], listener_port=port)


def test_requests_in_flight_through_a_hot_restart_complete_routed_by_the_filter(upstreams):
    port = free_port()  # the new process takes over the listener by its address
    base_id_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-hot-restart-")) / "base-id"
    config = gateway_config(upstreams, port)
    parent = Envoy(config, hot_restart=HotRestart(0, base_id_path), drain_seconds=DRAIN_SECONDS).start()
    child = None
    try:
        threads, answers = slow_requests(port, 8)
        meanwhile = []  # new connections while the child starts and takes over
        stop = threading.Event()
        traffic = threading.Thread(target=lambda: meanwhile.extend(new_connection_outcomes(port, 30, stop)))
        traffic.start()
        child = Envoy(config, hot_restart=HotRestart(1, base_id_path), drain_seconds=DRAIN_SECONDS).start()
        restarted = time.monotonic()
        time.sleep(0.5)
        stop.set()
        traffic.join()
        assert len(meanwhile) > 5 and {outcome for _, outcome in meanwhile} == {"routed"}, meanwhile
        assert_completed_and_routed_by_the_filter(threads, answers, 8)
        assert all(answer.finished > restarted for answer in answers)  # in flight across the restart
        assert parent.process.wait(15) == 0  # the parent exits once it has shut down
        assert routed_by_the_filter(Client(port).get(PUBLIC))
    finally:
        parent.stop()
        if child:
            child.stop()


@pytest.fixture
def draining_gateway(upstreams):
    envoy = Envoy(gateway_config(upstreams), drain_seconds=DRAIN_SECONDS).start()
    yield envoy
    envoy.stop()


def new_connection_outcomes(port: int, seconds: float, stop: threading.Event | None = None) -> list[tuple[float, str]]:
    """For `seconds` (or until `stop`), a request on a new connection every 0.1 s: when, and what
    came of it."""
    outcomes = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds and not (stop and stop.is_set()):
        try:
            response = Client(port).get(PUBLIC)
            outcome = "routed" if routed_by_the_filter(response) else f"status {response.status} from {response.upstream}"
        except ConnectionRefusedError:
            outcome = "refused"
        outcomes.append((elapsed, outcome))
        time.sleep(0.1)
    return outcomes


def test_requests_in_flight_through_a_graceful_drain_complete_routed_by_the_filter(draining_gateway):
    threads, answers = slow_requests(draining_gateway.port, 8)
    assert draining_gateway.admin("/drain_listeners?graceful", method="POST") == (200, "OK\n")
    drain_started = time.monotonic()
    # New connections are served, and routed, while the drain lasts; then the listener closes.
    outcomes = new_connection_outcomes(draining_gateway.port, DRAIN_SECONDS - 0.5)
    assert outcomes and {outcome for _, outcome in outcomes} == {"routed"}, outcomes
    time.sleep(max(0.0, drain_started + DRAIN_SECONDS + 0.5 - time.monotonic()))
    with pytest.raises(ConnectionRefusedError):
        Client(draining_gateway.port).get(PUBLIC)
    assert_completed_and_routed_by_the_filter(threads, answers, 8)


def test_requests_in_flight_when_the_health_check_fails_complete_routed_by_the_filter(draining_gateway):
    threads, answers = slow_requests(draining_gateway.port, 8)
    assert draining_gateway.admin("/healthcheck/fail", method="POST") == (200, "OK\n")
    assert draining_gateway.admin("/ready")[0] == 503  # what takes the pod out of its Service
    outcomes = new_connection_outcomes(draining_gateway.port, 1.0)
    assert {outcome for _, outcome in outcomes} == {"routed"}, outcomes
    assert_completed_and_routed_by_the_filter(threads, answers, 8)
