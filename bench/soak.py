#!/usr/bin/env python3
"""canary-split soak (issue 11): a gateway under mixed HTTP/1.1 and HTTP/2 load for a long time,
with clients that give up half-way and a config push every minute, watched for memory growth.

    soak.py                          10 minutes; writes bench/results/soak.{png,md,json,csv}
    soak.py --duration 30 --push-every 10 --results target/soak-smoke
                                     the short version `make test` runs

Load: wrk (HTTP/1.1 keep-alive, 1,000 users over a sticky and a random route) and h2load (HTTP/2,
random route), both at the lowest priority, plus a client that keeps abandoning requests: HTTP/1.1
headers cut off, bodies cut off, connections closed before the response; HTTP/2 streams reset
after their headers or mid-body, connections closed with streams open, a frame cut off.

Every second it records the gateway's RSS (/proc/PID/status) and CPU time (/proc/PID/stat), and
the Wasm VMs' memory. Envoy 1.40 has no statistic for that (its Wasm stats count VMs and reloads,
`wasm.wasm_vm_count`, `wasm.envoy.wasm.runtime.v8.*`, `wasm.canary-split.vm_reload*`), so it is
read from the process's memory map: V8 reserves 8 GiB of address space for each VM's linear
memory and makes the part in use accessible, so each reservation shows as a read-write mapping
(the VM's linear memory, which only ever grows) followed by an inaccessible one, 8 GiB together.

It fails (exit status 1) if after the warm-up the gateway's RSS or the VMs' linear memory grew by
more than the tolerance (median of the last tenth of the run against the first tenth after the
warm-up), if a VM failed (FAIL_RELOAD counters, log), if the gateway answered any request with a
5xx, if wrk or h2load saw an error or a non-2xx, or if a sticky probe got the wrong release.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import pathlib
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import hpack

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from answering_upstream import answering_upstream, listener_ports  # noqa: E402
from harness import Envoy, bootstrap, to_cluster, write_ecds  # noqa: E402
from load_tools import h2load, wrk  # noqa: E402
from raw_http import PREFACE, SETTINGS, Http2Connection, Reply, frame, header_frames, http1_exchange, http1_request  # noqa: E402
from sticky_hash import is_canary  # noqa: E402
from vm_health import stats, vm_failures  # noqa: E402

STICKY, RANDOM = "stable.example.com", "shop.example.com"
STICKY_WEIGHT = 30
PUSHED_WEIGHTS = [12.5, 40]  # alternated at each push
WASM_RESERVATION = 8 << 30
PROBE_USERS = [f"probe-{n}" for n in range(50)]


def filter_config(weight: float) -> str:
    return json.dumps({"routes": [
        {"host": STICKY, "primary": {"host": "sticky.primary.example.com"},
         "canary": {"host": "sticky.canary.example.com"}, "canary_weight": STICKY_WEIGHT,
         "sticky": {"header": "x-user-id"}},
        {"host": RANDOM, "primary": {"host": "random.primary.example.com"},
         "canary": {"host": "random.canary.example.com"}, "canary_weight": weight},
    ]})


def gateway_config(upstream: Envoy, ecds_path: pathlib.Path) -> dict:
    hosts = [{"name": v, "domains": [f"*.{v}.example.com"], "routes": [to_cluster(v)]} for v in ("primary", "canary")]
    hosts.append({"name": "others", "domains": ["*"], "routes": [to_cluster("other")]})
    return bootstrap(filter_config(PUSHED_WEIGHTS[0]), listener_ports(upstream), hosts, ecds_path=ecds_path,
                     failure_policy="FAIL_RELOAD")


# ---------------------------------------------------------------------------------------------
# What is measured


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wasm_linear_memory(pid: int) -> list[int]:
    """The size of each Wasm VM's linear memory: the read-write mapping that, with the
    inaccessible one right after it, makes up one of V8's 8 GiB reservations."""
    mappings = []
    for line in pathlib.Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(address, 16) for address in fields[0].split("-"))
        anonymous = len(fields) < 6
        mappings.append((start, end, fields[1], anonymous))
    sizes = []
    for (start, end, perms, anonymous), (next_start, next_end, next_perms, _) in zip(mappings, mappings[1:]):
        if (anonymous and perms == "rw-p" and next_perms == "---p" and end == next_start
                and next_end - start == WASM_RESERVATION):
            sizes.append(end - start)
    return sizes


@dataclass
class Point:
    t: float
    rss: int
    cpu: float
    wasm_memory: int
    wasm_vms: int
    vm_count_stat: int
    heap_allocated: int
    requests: int
    server_errors: int


def measure(gateway: Envoy, started: float) -> Point:
    pid = gateway.process.pid
    counters = stats(gateway, r"^(http\.gateway\.downstream_rq_(completed|5xx)|wasm\.wasm_vm_count|server\.memory_allocated)$")
    memories = wasm_linear_memory(pid)
    return Point(round(time.monotonic() - started, 3), rss_bytes(pid), cpu_seconds(pid), sum(memories), len(memories),
                 counters["wasm.wasm_vm_count"], counters["server.memory_allocated"],
                 counters["http.gateway.downstream_rq_completed"], counters["http.gateway.downstream_rq_5xx"])


# ---------------------------------------------------------------------------------------------
# Clients that give up half-way


def http1_cut_headers(port: int):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: shop.example.com\r\nx-user-id: abandon")


def http1_cut_body(port: int):
    request = http1_request(b"POST", b"/", [(b"host", RANDOM.encode()), (b"content-length", b"4096")])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request + b"x" * 1000)


def http1_close_before_the_response(port: int):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(http1_request(b"GET", b"/", [(b"host", STICKY.encode()), (b"x-user-id", b"leaver")]))


def http2_fields(host: str, method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"http"), (b":path", b"/"), (b":authority", host.encode()),
            (b"x-user-id", b"resetter")]


def http2_reset_after_headers(port: int):
    with Http2Connection(port, timeout=5) as connection:
        for _ in range(4):
            connection.reset(connection.send_headers(http2_fields(STICKY), end_stream=False))


def http2_reset_mid_body(port: int):
    with Http2Connection(port, timeout=5) as connection:
        for _ in range(4):
            stream = connection.send_headers(http2_fields(RANDOM, b"POST"), end_stream=False)
            connection.send_data(stream, b"y" * 500, end_stream=False)
            connection.reset(stream)


def http2_close_with_streams_open(port: int):
    with Http2Connection(port, timeout=5) as connection:
        for _ in range(3):
            connection.send_headers(http2_fields(RANDOM), end_stream=False)


def http2_cut_frame(port: int):
    whole = header_frames(1, hpack.Encoder().encode(http2_fields(RANDOM)), end_stream=True)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + whole[:len(whole) // 2])


ABANDONERS = [http1_cut_headers, http1_cut_body, http1_close_before_the_response, http2_reset_after_headers,
              http2_reset_mid_body, http2_close_with_streams_open, http2_cut_frame]


def abandon_requests(port: int, until: float, counts: dict[str, int], errors: list[str]):
    """Each kind in turn, about 100 a second."""
    for abandon in itertools.cycle(ABANDONERS):
        if time.monotonic() >= until:
            return
        try:
            abandon(port)
        except OSError as error:  # the gateway may close first; that is its right, but count it
            errors.append(f"{abandon.__name__}: {error!r}")
        counts[abandon.__name__] = counts.get(abandon.__name__, 0) + 1
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Soak:
    duration: float
    warm_up: float
    push_every: float
    points: list[Point] = field(default_factory=list)
    pushes: list[float] = field(default_factory=list)
    abandoned: dict[str, int] = field(default_factory=dict)
    abandon_errors: list[str] = field(default_factory=list)
    probe_mismatches: list[str] = field(default_factory=list)
    probes: int = 0
    loads: list = field(default_factory=list)
    ecds: dict[str, int] = field(default_factory=dict)
    vm_failures: list[str] = field(default_factory=list)


def probe_sticky_user(port: int, user: str) -> str | None:
    """A mismatch, if the sticky route does not send `user` where the hash says."""
    reply = http1_exchange(port, http1_request(b"GET", b"/", [(b"host", STICKY.encode()), (b"x-user-id", user.encode())]))
    expected = "canary" if is_canary(STICKY.encode(), user.encode(), STICKY_WEIGHT) else "primary"
    if not isinstance(reply, Reply) or reply.status != 200 or reply.upstream != expected:
        return f"{user}: {reply if isinstance(reply, str) else (reply.status, reply.upstream)}, expected {expected}"
    return None


def soak(duration: float, warm_up: float, push_every: float, log=print) -> Soak:
    result = Soak(duration, warm_up, push_every)
    ecds_path = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-soak-")) / "canary-split.json"
    with answering_upstream() as upstream, Envoy(gateway_config(upstream, ecds_path), concurrency=2) as gateway:
        ecds_before = stats(gateway, r"^extension_config_discovery\.http_filter\.canary-split\.update_")
        seconds = int(duration) + 1
        loads = [wrk(gateway.port, seconds, [STICKY, RANDOM]), h2load(gateway.port, seconds, RANDOM)]
        started = time.monotonic()
        until = started + duration
        abandoner = threading.Thread(target=abandon_requests,
                                     args=(gateway.port, until, result.abandoned, result.abandon_errors))
        abandoner.start()
        weights = itertools.cycle(PUSHED_WEIGHTS[1:] + PUSHED_WEIGHTS[:1])
        next_push = started + push_every
        for tick in itertools.count(1):
            now = time.monotonic()
            if now >= until:
                break
            if now >= next_push:
                write_ecds(ecds_path, filter_config(next(weights)), failure_policy="FAIL_RELOAD")
                result.pushes.append(now - started)
                next_push += push_every
            mismatch = probe_sticky_user(gateway.port, PROBE_USERS[tick % len(PROBE_USERS)])
            result.probes += 1
            if mismatch:
                result.probe_mismatches.append(mismatch)
            point = measure(gateway, started)
            result.points.append(point)
            if tick % 30 == 0:
                log(f"{point.t:6.0f} s  RSS {point.rss / 2**20:6.1f} MiB  Wasm {point.wasm_memory / 2**20:5.2f} MiB "
                    f"({point.wasm_vms} VMs)  {point.requests:,} requests")
            time.sleep(max(0.0, started + tick - time.monotonic()))
        abandoner.join(timeout=30)
        result.loads = [load.result(timeout=60) for load in loads]
        ecds_after = stats(gateway, r"^extension_config_discovery\.http_filter\.canary-split\.update_")
        result.ecds = {name.rsplit(".", 1)[1]: ecds_after[name] - ecds_before.get(name, 0) for name in ecds_after}
        result.vm_failures = vm_failures(gateway)
    return result


# ---------------------------------------------------------------------------------------------
# Verdict and report


def growth(points: list[Point], warm_up: float, value) -> dict[str, float]:
    """Median of the last tenth of the run against the median of the first tenth after the
    warm-up (each at least 3 samples)."""
    after = [p for p in points if p.t >= warm_up]
    window = max(3, len(after) // 10)
    baseline = statistics.median(value(p) for p in after[:window])
    final = statistics.median(value(p) for p in after[-window:])
    peak = max(value(p) for p in after)
    return {"baseline": baseline, "final": final, "growth_percent": (final / baseline - 1) * 100,
            "peak_percent": (peak / baseline - 1) * 100}


def summarise(result: Soak, tolerance: float) -> tuple[dict, list[str]]:
    points = result.points
    rss = growth(points, result.warm_up, lambda p: p.rss)
    wasm = growth(points, result.warm_up, lambda p: p.wasm_memory)
    heap = growth(points, result.warm_up, lambda p: p.heap_allocated)
    cpu = (points[-1].cpu - points[0].cpu) / (points[-1].t - points[0].t) * 100
    requests = points[-1].requests - points[0].requests
    summary = {
        "duration_s": result.duration, "warm_up_s": result.warm_up, "tolerance_percent": tolerance,
        "pushes": len(result.pushes), "push_times_s": [round(t, 1) for t in result.pushes],
        "requests": requests, "requests_per_s": requests / (points[-1].t - points[0].t),
        "load_tools": {load.tool: {"requests": load.requests, "errors": load.errors, "non_2xx": load.non_2xx}
                       for load in result.loads},
        "abandoned": result.abandoned, "abandoned_total": sum(result.abandoned.values()),
        "abandoners_cut_off_by_the_gateway": len(result.abandon_errors),
        "gateway_5xx": points[-1].server_errors, "sticky_probes": result.probes,
        "sticky_probe_mismatches": len(result.probe_mismatches),
        "rss": rss, "wasm_linear_memory": wasm, "envoy_heap_allocated": heap,
        "wasm_vms_mapped": sorted({p.wasm_vms for p in points}), "wasm_vm_count_stat": sorted({p.vm_count_stat for p in points}),
        "gateway_cpu_percent_mean": cpu, "ecds_updates": result.ecds, "vm_failures": result.vm_failures,
    }
    problems = []
    if rss["growth_percent"] >= tolerance:
        problems.append(f"gateway RSS grew {rss['growth_percent']:.1f} % after the warm-up")
    if wasm["growth_percent"] >= tolerance:
        problems.append(f"Wasm linear memory grew {wasm['growth_percent']:.1f} % after the warm-up")
    if result.vm_failures:
        problems.append(f"the VM failed: {result.vm_failures}")
    if points[-1].server_errors:
        problems.append(f"the gateway answered {points[-1].server_errors} requests with a 5xx")
    for load in result.loads:
        if load.errors or load.non_2xx or not load.requests:
            problems.append(f"{load.tool}: {load.requests} requests, {load.errors} errors, {load.non_2xx} non-2xx")
    if result.probe_mismatches:
        problems.append(f"sticky probes went wrong: {result.probe_mismatches[:3]}")
    if result.ecds.get("update_success") != len(result.pushes):
        problems.append(f"{len(result.pushes)} pushes, ECDS counted {result.ecds}")
    if len(summary["wasm_vms_mapped"]) != 1 or summary["wasm_vms_mapped"] != summary["wasm_vm_count_stat"]:
        problems.append(f"Wasm VMs in the memory map {summary['wasm_vms_mapped']}, "
                        f"wasm.wasm_vm_count {summary['wasm_vm_count_stat']}: memory not tracked as it should be")
    return summary, problems


def write_plot(result: Soak, summary: dict, path: pathlib.Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result.points
    t = [p.t for p in points]
    fig, (rss_ax, wasm_ax, cpu_ax) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    rss_ax.plot(t, [p.rss / 2**20 for p in points], color="#4878a8")
    rss_ax.set_ylabel("gateway RSS (MiB)")
    rss_ax.set_title(f"gateway RSS: {summary['rss']['growth_percent']:+.1f} % after the warm-up", fontsize=9)
    wasm_ax.plot(t, [p.wasm_memory / 2**20 for p in points], color="#e08a3c",
                 label="Wasm linear memory, all VMs")
    wasm_ax.plot(t, [p.heap_allocated / 2**20 for p in points], color="#6a9f58", label="Envoy heap allocated")
    wasm_ax.set_ylabel("MiB")
    wasm_ax.set_title(f"Wasm linear memory: {summary['wasm_linear_memory']['growth_percent']:+.1f} % after the warm-up; "
                      f"Envoy heap: {summary['envoy_heap_allocated']['growth_percent']:+.1f} %", fontsize=9)
    wasm_ax.legend(fontsize=8, loc="center right")
    cpu = [(b.cpu - a.cpu) / (b.t - a.t) * 100 for a, b in zip(points, points[1:])]
    rate = [(b.requests - a.requests) / (b.t - a.t) for a, b in zip(points, points[1:])]
    cpu_ax.plot(t[1:], cpu, color="#a84848", label="gateway CPU %")
    cpu_ax.set_ylabel("gateway CPU (% of one core)")
    rate_ax = cpu_ax.twinx()
    rate_ax.plot(t[1:], rate, color="#888888", linewidth=0.8, label="requests/s")
    rate_ax.set_ylabel("requests/s")
    cpu_ax.set_xlabel("seconds")
    for ax in (rss_ax, wasm_ax, cpu_ax):
        ax.set_ylim(bottom=0)
        ax.axvspan(0, result.warm_up, color="#dddddd", alpha=0.5, linewidth=0)
        for push in result.pushes:
            ax.axvline(push, color="#999999", linestyle=":", linewidth=1)
    rate_ax.set_ylim(bottom=0)
    fig.suptitle(f"canary-split soak: {result.duration:.0f} s of HTTP/1.1 + HTTP/2 load with abandoned requests; "
                 "grey: warm-up, dotted: config pushes", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(summary: dict, problems: list[str]) -> str:
    def row(name: str, figures: dict, unit=2**20) -> str:
        return (f"| {name} | {figures['baseline'] / unit:.2f} MiB | {figures['final'] / unit:.2f} MiB "
                f"| {figures['growth_percent']:+.2f} % | {figures['peak_percent']:+.2f} % |")

    loads = summary["load_tools"]
    lines = [
        "# canary-split soak", "",
        f"{summary['duration_s']:.0f} s on real Envoy 1.40 (2 workers): wrk (HTTP/1.1, "
        f"{loads['wrk']['requests']:,} requests) and h2load (HTTP/2, {loads['h2load']['requests']:,} requests), "
        f"{summary['abandoned_total']:,} abandoned requests and connections, {summary['pushes']} config pushes "
        f"through ECDS. {summary['requests']:,} requests completed at the gateway, "
        f"{summary['requests_per_s']:,.0f}/s; gateway CPU {summary['gateway_cpu_percent_mean']:.0f} % of one core.", "",
        f"Memory, median of the first and last tenth after a {summary['warm_up_s']:.0f} s warm-up "
        f"(tolerance {summary['tolerance_percent']:g} %):", "",
        "| what | after warm-up | at the end | growth | peak |", "| --- | --- | --- | --- | --- |",
        row("gateway RSS", summary["rss"]),
        row(f"Wasm linear memory ({summary['wasm_vms_mapped'][0]} VMs)", summary["wasm_linear_memory"]),
        row("Envoy heap allocated (`server.memory_allocated`)", summary["envoy_heap_allocated"]), "",
        "| check | result |", "| --- | --- |",
        f"| gateway 5xx | {summary['gateway_5xx']} |",
        f"| wrk / h2load errors, non-2xx | {loads['wrk']['errors']} / {loads['h2load']['errors']}, "
        f"{loads['wrk']['non_2xx']} / {loads['h2load']['non_2xx']} |",
        f"| VM failures (FAIL_RELOAD counters, log) | {len(summary['vm_failures'])} |",
        f"| sticky probes wrong | {summary['sticky_probe_mismatches']} of {summary['sticky_probes']} |",
        f"| config pushes applied (ECDS update_success) | {summary['ecds_updates'].get('update_success')} "
        f"of {summary['pushes']} |",
        "| abandoned, by kind | " + ", ".join(f"{k} {v:,}" for k, v in summary["abandoned"].items()) + " |", "",
        "Verdict: " + ("**failed**: " + "; ".join(problems) if problems else "passed"), "",
        "Reproduce: `make soak` (10 minutes); `make test` runs 30 s of it.", "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--warm-up", type=float, help="seconds before memory must stay flat (default: a tenth "
                        "of the run, at most 60, at least 10)")
    parser.add_argument("--push-every", type=float, default=60, help="seconds between config pushes")
    parser.add_argument("--tolerance", type=float, default=5, help="allowed memory growth after the warm-up, %%")
    parser.add_argument("--results", type=pathlib.Path, default=ROOT / "bench" / "results",
                        help="where soak.{png,md,json,csv} go")
    args = parser.parse_args()
    warm_up = args.warm_up if args.warm_up is not None else min(60.0, max(10.0, args.duration / 10))

    result = soak(args.duration, warm_up, args.push_every, log=lambda line: print(line, file=sys.stderr, flush=True))
    summary, problems = summarise(result, args.tolerance)
    args.results.mkdir(parents=True, exist_ok=True)
    write_plot(result, summary, args.results / "soak.png")
    (args.results / "soak.json").write_text(json.dumps({"summary": summary, "problems": problems}, indent=1))
    with open(args.results / "soak.csv", "w", newline="") as series:
        columns = list(Point.__dataclass_fields__)
        writer = csv.writer(series)
        writer.writerow(columns)
        writer.writerows([getattr(point, column) for column in columns] for point in result.points)
    text = report(summary, problems)
    (args.results / "soak.md").write_text(text)
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
