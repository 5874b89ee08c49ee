"""What each Envoy failure policy does to the requests that follow a crash of the filter's VM.

The filter must never panic, so the crash comes from a test-only build (cargo feature
`crash-trigger`, built by conftest's `crash_module` into its own target dir; `make build` never
enables it): a request
carrying CRASH_HEADER panics the VM, as a bug would. The gateway gets its config through ECDS, as
Istio delivers it, so a config push can be shown to bring a failed filter back.

The route splits everything to canary: a request the filter routes reaches canary, one it never
saw reaches primary (the public host's default route)."""

import json
import pathlib
import tempfile
import time

import pytest

from harness import (CRASH_HEADER, DECISION_HEADER, Client, Envoy, bootstrap, catch_all_route, split_routes,
                     wasm_failures, write_ecds)

PUBLIC = "shop.example.com"
# Envoy's FAIL_RELOAD waits at least this long after a VM was loaded before it loads another
# (ReloadConfig's default base interval; the wait is jittered up to 1.5 times it).
RELOAD_BACKOFF_SECONDS = 1.0


def config(weight: float) -> str:
    return json.dumps({"routes": [{"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": weight}]})


class Gateway:
    def __init__(self, envoy: Envoy, ecds_path: pathlib.Path, module: pathlib.Path, policy: str):
        self.envoy, self.ecds_path, self.module, self.policy = envoy, ecds_path, module, policy
        self.client = Client(envoy.port)

    def get(self, host: str = PUBLIC, headers=()):
        return self.client.get(host, list(headers))

    def crash(self):
        """Sends the request that panics the VM; Envoy answers it with a 503."""
        assert self.get(headers=[CRASH_HEADER]).status == 503
        deadline = time.monotonic() + 5
        while "crash requested by the test header" not in self.envoy.log():
            assert time.monotonic() < deadline, "the panic never reached the log"
            time.sleep(0.05)

    def push_config(self, weight: float):
        write_ecds(self.ecds_path, config(weight), self.module, self.policy)

    def reloads(self) -> dict[str, int]:
        counters = self.envoy.stats("^wasm\\.canary-split\\.vm_reload")
        return {name.removeprefix("wasm.canary-split."): value for name, value in counters.items()}


@pytest.fixture
def gateway(upstreams, crash_module):
    """Starts a gateway running the crash-trigger build under a failure policy."""
    started = []

    def start(policy: str, concurrency: int = 1) -> Gateway:
        ecds_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-ecds-")) / "canary-split.json"
        hosts = split_routes(PUBLIC, None, None) + [catch_all_route()]
        envoy = Envoy(bootstrap(config(100), upstreams, hosts, ecds_path=ecds_path, module=crash_module,
                                failure_policy=policy), concurrency).start()
        started.append(envoy)
        gateway = Gateway(envoy, ecds_path, crash_module, policy)
        assert_routed_by_the_filter(gateway.get())
        return gateway

    yield start
    for envoy in started:
        envoy.stop()


def assert_routed_by_the_filter(response):
    assert (response.status, response.upstream, response.headers.get(DECISION_HEADER)) == (200, "canary", "canary")


def wait_until_routed_by_the_filter(gateway: Gateway, timeout: float = 5.0) -> float:
    """Seconds until a request is routed by the filter again."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        response = gateway.get()
        if response.status == 200 and response.upstream == "canary":
            assert_routed_by_the_filter(response)
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"the filter was not back after {timeout} s")


def test_the_release_module_has_no_crash_trigger(upstreams):
    # `make build` must not enable the feature: the header is just a header to the shipped module.
    hosts = split_routes(PUBLIC, None, None) + [catch_all_route()]
    with Envoy(bootstrap(config(100), upstreams, hosts, failure_policy="FAIL_RELOAD")) as envoy:
        client = Client(envoy.port)
        for _ in range(3):
            assert_routed_by_the_filter(client.get(PUBLIC, [CRASH_HEADER]))
        assert set(envoy.stats("^wasm\\.canary-split\\.vm_reload").values()) == {0}
        assert not wasm_failures(envoy.settled_log())


def test_fail_open_bypasses_the_filter_until_a_config_push(gateway):
    gateway = gateway("FAIL_OPEN")
    gateway.crash()
    for _ in range(20):
        # Every request now skips the filter: the public host's default route sends it to primary,
        response = gateway.get(headers=[("x-user-id", "u")])
        assert (response.status, response.upstream) == (200, "primary")
        assert DECISION_HEADER not in response.headers
        # and nothing removes a decision header the client sends, so the client chooses.
        spoofed = gateway.get(headers=[(DECISION_HEADER, "canary")])
        assert (spoofed.status, spoofed.upstream, spoofed.headers[DECISION_HEADER]) == (200, "canary", "canary")
        assert gateway.get("other.example.com", [(DECISION_HEADER, "canary")]).upstream == "canary"
    time.sleep(1.5)  # no reload ever comes
    assert gateway.get().upstream == "primary"
    assert set(gateway.reloads().values()) == {0}
    # A config push creates the plugin anew, with a new VM.
    gateway.push_config(99.99)
    assert wait_until_routed_by_the_filter(gateway) < 2.0


def test_fail_closed_answers_503_on_every_host_of_the_worker_until_a_config_push(gateway):
    gateway = gateway("FAIL_CLOSED")
    gateway.crash()
    for _ in range(20):
        assert gateway.get().status == 503
        assert gateway.get("other.example.com").status == 503
    time.sleep(1.5)
    assert gateway.get().status == 503
    assert set(gateway.reloads().values()) == {0}
    gateway.push_config(99.99)
    assert wait_until_routed_by_the_filter(gateway) < 2.0


def test_a_crash_takes_down_only_its_workers_vm(gateway):
    gateway = gateway("FAIL_CLOSED", concurrency=2)
    gateway.crash()
    statuses = []
    for _ in range(100):
        gateway.client.reconnect()  # the kernel spreads new connections over both workers
        statuses.append(gateway.get().status)
    assert set(statuses) == {200, 503}, statuses


def test_fail_reload_serves_the_next_request_from_a_new_vm(gateway):
    gateway = gateway("FAIL_RELOAD")
    time.sleep(1.5 * RELOAD_BACKOFF_SECONDS)  # the VM loaded at start-up is past the backoff
    gateway.crash()
    assert_routed_by_the_filter(gateway.get())
    assert gateway.reloads() == {"vm_reload": 0, "vm_reload_backoff": 0, "vm_reload_failure": 0, "vm_reload_success": 1}
    for _ in range(20):
        assert_routed_by_the_filter(gateway.get(headers=[(DECISION_HEADER, "primary")]))


def test_fail_reload_answers_503_while_a_crash_follows_a_reload_closely(gateway):
    gateway = gateway("FAIL_RELOAD")
    time.sleep(1.5 * RELOAD_BACKOFF_SECONDS)
    gateway.crash()
    reloaded = time.monotonic()
    assert_routed_by_the_filter(gateway.get())
    gateway.crash()  # within the backoff of the reload: no new VM for a while
    failed = 0
    while (response := gateway.get()).status == 503:
        failed += 1
    assert_routed_by_the_filter(response)
    down = time.monotonic() - reloaded
    assert RELOAD_BACKOFF_SECONDS <= down < 1.5 * RELOAD_BACKOFF_SECONDS + 0.5, down
    assert failed > 10 and gateway.reloads()["vm_reload_backoff"] >= failed
    assert gateway.reloads()["vm_reload_success"] == 2


def repeated_crashes(gateway: Gateway, seconds: float = 3.0, every: float = 0.5) -> tuple[int, int]:
    """Ordinary requests while a crashing one arrives every `every` seconds: how many were sent,
    and how many failed."""
    sent = failed = 0
    start = last_crash = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        if now - last_crash >= every:
            gateway.get(headers=[CRASH_HEADER])
            last_crash = now
            continue
        sent += 1
        failed += gateway.get().status != 200
    return sent, failed


def test_a_crash_repeated_by_a_client_fails_most_requests_under_fail_reload_and_none_under_fail_open(gateway):
    reload = gateway("FAIL_RELOAD")
    time.sleep(1.5 * RELOAD_BACKOFF_SECONDS)
    sent, failed = repeated_crashes(reload)
    # Each crash comes before the backoff of the last reload is over, so the VM is down more
    # often than not.
    assert failed > sent / 2, (sent, failed)
    fail_open = gateway("FAIL_OPEN")
    sent, failed = repeated_crashes(fail_open)
    assert failed == 0 and sent > 100
    assert fail_open.get().upstream == "primary"  # served, but without the filter
