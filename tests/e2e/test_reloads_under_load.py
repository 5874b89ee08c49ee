"""Config pushes under load: for 30 s a new filter config arrives through ECDS every 200 ms, one
in four of them invalid, while wrk (HTTP/1.1) and h2load (HTTP/2) load the gateway and the
test's own clients watch the decisions.

The config has two routes. `stable.example.com` never changes (sticky on `x-user-id`, 30 %);
`shop.example.com` gets a new weight with each good push. Each push also names its variant hosts
after its number (`g17.canary.example.com`), and the upstream reports the authority it got, so
every sampled request tells which push decided it: the weight a push sets is checked on exactly
the requests that push served, however long Envoy took to apply it.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import pathlib
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field

import pytest

from answering_upstream import answering_upstream, listener_ports
from harness import Envoy, bootstrap, to_cluster, write_ecds
from load_tools import LoadResult, h2load, wrk
from raw_http import Http2Connection, Reply
from sticky_hash import is_canary
from vm_health import stats, vm_failures

DURATION_S = 30
PUSH_EVERY_S = 0.2
BAD_EVERY = 4  # every fourth push is invalid
STABLE, SHIFTING = "stable.example.com", "shop.example.com"
STABLE_WEIGHT = 30
SHIFTING_WEIGHTS = [10, 90, 30, 70, 50]  # cycled over the good pushes; neighbours always differ
USERS = [f"user-{n}" for n in range(200)]
ECDS = "extension_config_discovery.http_filter.canary-split."
# Per push, the share of canary must be within this many standard deviations of its weight.
PER_PUSH_SIGMAS = 4.5


def filter_config(push: int, shifting_weight: float) -> dict:
    return {"routes": [
        {"host": STABLE, "primary": {"host": "stable.primary.example.com"},
         "canary": {"host": "stable.canary.example.com"}, "canary_weight": STABLE_WEIGHT,
         "sticky": {"header": "x-user-id"}},
        {"host": SHIFTING, "primary": {"host": f"g{push}.primary.example.com"},
         "canary": {"host": f"g{push}.canary.example.com"}, "canary_weight": shifting_weight},
    ]}


def bad_config(push: int) -> tuple[str, str]:
    """An invalid config (still naming the push in its hosts, should one ever serve) and the
    problem the filter must report."""
    config = filter_config(push, 20)
    kind = (push // BAD_EVERY) % 4
    if kind == 0:
        config["routes"][1]["canary_weight"] = 150
        return json.dumps(config), "routes[1].canary_weight: 150 is not in 0..=100"
    if kind == 1:
        config["routes"][1]["weight"] = 20
        return json.dumps(config), "routes[1].weight: unknown field"
    if kind == 2:
        config["routes"][1]["host"] = STABLE
        return json.dumps(config), f'routes[1].host: "{STABLE}" is already the host of routes[0]'
    return json.dumps(config)[:-5], "config: is not valid JSON"


def expected_stable(user: str) -> str:
    return "canary" if is_canary(STABLE.encode(), user.encode(), STABLE_WEIGHT) else "primary"


@dataclass
class Push:
    number: int
    began: float
    """When its write began."""
    at: float
    """When it was published (renamed into place)."""
    weight: float | None
    """None for an invalid push."""
    problem: str = ""


@dataclass
class Sample:
    connection: int
    sent: float
    answered: float
    push: int
    variant: str


@dataclass
class Run:
    pushes: list[Push] = field(repr=False)
    samples: list[Sample] = field(repr=False)
    sticky_checks: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per protocol, how often each user was checked."""
    sticky_switches: list[str] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    loads: list[LoadResult] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    ecds: dict[str, int] = field(default_factory=dict)
    vm_failures: list[str] = field(default_factory=list)
    log: str = field(default="", repr=False)


# ---------------------------------------------------------------------------------------------
# The test's own clients


class Http1:
    """Keep-alive HTTP/1.1, one request at a time."""
    protocol = "HTTP/1.1"

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, host: str, header_sets: list[dict[str, str]]) -> list[Reply]:
        replies = []
        for headers in header_sets:
            self.conn.request("GET", "/", headers={"Host": host, **headers})
            response = self.conn.getresponse()
            body = response.read()
            replies.append(Reply(response.status, [(k.lower().encode(), v.encode()) for k, v in response.getheaders()],
                                 body))
        return replies


class Http2:
    """HTTP/2, a batch of requests on concurrent streams: a client waiting for one request at a
    time would get few answers from a gateway busy with the load tools' many streams."""
    protocol = "HTTP/2"

    def __init__(self, port: int):
        self.connection = Http2Connection(port)

    def get(self, host: str, header_sets: list[dict[str, str]]) -> list[Reply]:
        pseudo = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", host.encode())]
        requests = [pseudo + [(k.encode(), v.encode()) for k, v in headers.items()] for headers in header_sets]
        replies = self.connection.exchange(requests)
        failed = [reply for reply in replies if not isinstance(reply, Reply)]
        if failed:
            raise ConnectionError(f"HTTP/2 streams ended without a reply: {failed}")
        return replies


BATCH = 16  # concurrent HTTP/2 streams per batch


def track_sticky_users(client: Http1 | Http2, run: Run, until: float):
    """Cycles the stable route's users: each must get the variant the sticky hash gives at the
    route's unchanged weight, every time."""
    users = itertools.cycle(USERS)
    while time.monotonic() < until:
        batch = [next(users) for _ in range(BATCH if client.protocol == "HTTP/2" else 1)]
        try:
            replies = client.get(STABLE, [{"x-user-id": user} for user in batch])
        except (OSError, http.client.HTTPException) as error:
            run.client_errors.append(f"sticky {client.protocol}: {error!r}")
            return
        for user, reply in zip(batch, replies):
            expected = expected_stable(user)
            seen = (reply.status, reply.upstream, reply.header("x-seen-authority"))
            if seen != (200, expected, f"stable.{expected}.example.com".encode()):
                run.sticky_switches.append(f"{user} over {client.protocol}: got {seen}, expected {expected}")
            checks = run.sticky_checks.setdefault(client.protocol, {})
            checks[user] = checks.get(user, 0) + 1


AUTHORITY = re.compile(rb"g(\d+)\.(primary|canary)\.example\.com")


def sample_weights(port: int, run: Run, until: float):
    """Random traffic on the shifting route over two HTTP/1.1 connections and one HTTP/2, each
    request tagged with the push that decided it."""
    clients = [Http1(port), Http1(port), Http2(port)]
    for index in itertools.cycle(range(len(clients))):
        sent = time.monotonic()
        if sent >= until:
            return
        client = clients[index]
        try:
            replies = client.get(SHIFTING, [{}] * (BATCH if client.protocol == "HTTP/2" else 1))
        except (OSError, http.client.HTTPException) as error:
            run.client_errors.append(f"sampler {index}: {error!r}")
            return
        answered = time.monotonic()
        for reply in replies:
            tag = AUTHORITY.fullmatch(reply.header("x-seen-authority") or b"")
            if reply.status != 200 or not tag or reply.upstream != tag.group(2).decode():
                run.client_errors.append(f"sampler {index}: status {reply.status}, {reply.headers}")
                continue
            run.samples.append(Sample(index, sent, answered, int(tag.group(1)), reply.upstream))


# ---------------------------------------------------------------------------------------------
# The run


COUNTERS = r"^(http\.gateway\.downstream_rq_(completed|[1-5]xx|rx_reset|tx_reset)|cluster\.\w+\.upstream_rq_(completed|tx_reset|rx_reset))$"


@pytest.fixture(scope="module")
def run() -> Run:
    with answering_upstream() as upstream:
        ecds_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-reloads-")) / "canary-split.json"
        hosts = [{"name": v, "domains": [f"*.{v}.example.com"], "routes": [to_cluster(v)]} for v in ("primary", "canary")]
        hosts.append({"name": "others", "domains": ["*"], "routes": [to_cluster("other")]})
        pushes = [Push(0, time.monotonic(), time.monotonic(), SHIFTING_WEIGHTS[-1])]
        config = bootstrap(json.dumps(filter_config(0, pushes[0].weight)), listener_ports(upstream), hosts,
                           ecds_path=ecds_path, failure_policy="FAIL_RELOAD")
        with Envoy(config, concurrency=2) as gateway:
            return drive(gateway, ecds_path, pushes)


def drive(gateway: Envoy, ecds_path: pathlib.Path, pushes: list[Push]) -> Run:
    run = Run(pushes, [])
    loads = [wrk(gateway.port, DURATION_S + 3, [STABLE, SHIFTING]), h2load(gateway.port, DURATION_S + 3, SHIFTING)]
    time.sleep(1)  # the load is up
    counters_before, ecds_before = stats(gateway, COUNTERS), stats(gateway, f"^{ECDS}")
    started = time.monotonic()
    until = started + DURATION_S
    clients = [threading.Thread(target=track_sticky_users, args=(Http1(gateway.port), run, until)),
               threading.Thread(target=track_sticky_users, args=(Http2(gateway.port), run, until)),
               threading.Thread(target=sample_weights, args=(gateway.port, run, until))]
    for client in clients:
        client.start()
    good_weights = itertools.cycle(SHIFTING_WEIGHTS)
    for number in itertools.count(1):
        due = started + (number - 1) * PUSH_EVERY_S
        if due >= until:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        began = time.monotonic()
        if number % BAD_EVERY == 0:
            text, problem = bad_config(number)
            write_ecds(ecds_path, text, failure_policy="FAIL_RELOAD")
            pushes.append(Push(number, began, time.monotonic(), None, problem))
        else:
            weight = next(good_weights)
            write_ecds(ecds_path, json.dumps(filter_config(number, weight)), failure_policy="FAIL_RELOAD")
            pushes.append(Push(number, began, time.monotonic(), weight))
    for client in clients:
        client.join(timeout=30)
    # Counted while the load still runs: a load tool stopping with requests in flight resets them.
    counters_after = stats(gateway, COUNTERS)
    run.counters = {name: counters_after[name] - counters_before.get(name, 0) for name in counters_after}
    run.ecds = ecds_counts_once_handled(gateway, ecds_before, len(pushes) - 1)
    run.loads = [load.result(timeout=30) for load in loads]
    run.vm_failures = vm_failures(gateway)
    run.log = gateway.log()
    return run


def ecds_counts_once_handled(gateway: Envoy, before: dict[str, int], pushed: int, timeout: float = 30.0) -> dict[str, int]:
    """The ECDS counters since `before`, once Envoy has accepted or rejected `pushed` updates: it
    handles a push some time after the file is renamed into place, the last one too."""
    deadline = time.monotonic() + timeout
    while True:
        after = stats(gateway, f"^{ECDS}")
        counts = {name[len(ECDS):]: after[name] - before.get(name, 0) for name in after}
        if counts.get("update_success", 0) + counts.get("update_rejected", 0) >= pushed or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# What must hold


def test_no_failed_request_or_reset(run: Run):
    for load in run.loads:
        assert load.requests > 1000, load.output
        assert (load.errors, load.non_2xx) == (0, 0), load.output
    assert not run.client_errors, run.client_errors[:5]
    counters = run.counters
    assert counters["http.gateway.downstream_rq_completed"] > 10_000, counters
    assert counters["http.gateway.downstream_rq_2xx"] == counters["http.gateway.downstream_rq_completed"], counters
    resets = {name: value for name, value in counters.items() if "reset" in name and value}
    assert not resets, resets
    # Every request was decided: none reached the catch-all release.
    assert counters.get("cluster.other.upstream_rq_completed", 0) == 0, counters
    assert not run.vm_failures, run.vm_failures


def test_sticky_users_of_the_unchanged_route_never_switch(run: Run):
    assert not run.sticky_switches, run.sticky_switches[:5]
    # Each user was checked again and again over both protocols while the pushes went on.
    for protocol in ("HTTP/1.1", "HTTP/2"):
        checks = run.sticky_checks.get(protocol, {})
        assert set(checks) == set(USERS) and min(checks.values()) >= 2, (protocol, sorted(checks.values())[:3])


def test_each_good_push_serves_its_weight(run: Run):
    good = {push.number: push for push in run.pushes if push.weight is not None}
    by_push: dict[int, list[Sample]] = {}
    for sample in run.samples:
        by_push.setdefault(sample.push, []).append(sample)
    assert set(by_push) <= set(good), f"invalid pushes served: {sorted(set(by_push) - set(good))}"
    # Each good push was applied and served: it lived at least 200 ms, in which the samplers send
    # dozens of requests (one may be missed if the machine stalls them).
    pushed = [number for number in good if number > 0]
    unseen = [number for number in pushed if number not in by_push]
    assert len(unseen) <= len(pushed) // 20, f"pushes never seen serving: {unseen}"
    deviation, variance = 0.0, 0.0
    for number, samples in by_push.items():
        p, n = good[number].weight / 100, len(samples)
        canary = sum(sample.variant == "canary" for sample in samples)
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(canary - n * p) <= PER_PUSH_SIGMAS * sigma + 1, \
            f"push {number} at {good[number].weight} %: {canary} of {n} requests to canary"
        deviation += canary - n * p
        variance += n * p * (1 - p)
    # All pushes together: the canary count within 4 standard deviations of what the weights give.
    assert abs(deviation) <= 4 * math.sqrt(variance), (deviation, variance)


def test_configs_only_move_forward_and_bad_pushes_leave_the_last_good_serving(run: Run):
    bad = [push for push in run.pushes if push.weight is None]
    good = [push for push in run.pushes if push.weight is not None]
    assert len(bad) >= 30 and len(good) >= 100, (len(bad), len(good))
    assert run.ecds.get("update_rejected") == len(bad), run.ecds
    assert run.ecds.get("update_success") == len(good) - 1, run.ecds
    for push in bad:
        assert any(f"invalid configuration: {push.problem}" in line for line in run.log.splitlines()), push.problem
    # On each connection (one worker each), a later request is never decided by an earlier push:
    # no push, good or bad, ever brings an older config back.
    for connection in {sample.connection for sample in run.samples}:
        served = [sample.push for sample in run.samples if sample.connection == connection]
        assert served == sorted(served), f"connection {connection} went back to an older push"
    # After a bad push, requests keep being decided by the last good one before it: those sent from
    # half a period after the bad push until the next push decides them (each sample names its push,
    # so the window lasts as long as Envoy takes to apply the next one, however busy the machine).
    last_good_before = {}
    for push in run.pushes:
        last_good_before[push.number] = push.number if push.weight is not None else last_good_before[push.number - 1]
    windows = {push.number: [s.push for s in run.samples if push.at + PUSH_EVERY_S / 2 <= s.sent
                             and s.push < following.number]
               for push, following in zip(run.pushes, run.pushes[1:]) if push.weight is None}
    for number, window in windows.items():
        assert not window or max(window) == last_good_before[number], (number, sorted(set(window)))
    # Every such window holds dozens of requests; a stalled machine may leave one empty.
    assert sum(bool(window) for window in windows.values()) >= 0.9 * len(windows), windows


