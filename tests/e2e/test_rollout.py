"""`canary-split rollout` and `status` end to end: real Envoy with the module, a real Prometheus
scraping it every second, two real upstreams and steady traffic. A healthy canary is ramped to
100 %; one that starts failing is rolled back to 0 within its step while pinned testers still
reach it; a rollout that cannot be judged (no traffic, Prometheus gone) holds, then rolls back."""

import json
import os
import pathlib
import re
import shutil
import time

import pytest
import yaml

from rollout_rig import CLI, PUBLIC, Rig, WeightWatcher, ecds_weight, requests_to

STEPS = "10,25,50,100"
INTERVAL = 3.0
# Loopback upstreams answer in about a millisecond, but a step's mean rests on a few dozen requests
# and one slow scheduling of this shared machine moves it many times over: latency counts only above
# 100 ms.
JUDGING = ["--interval", f"{INTERVAL:.0f}s", "--poll", "500ms", "--min-requests", "20", "--latency-floor", "100ms"]
WASMPLUGIN = pathlib.Path(__file__).resolve().parents[2] / "istio" / "wasmplugin.yaml"


@pytest.fixture(scope="module")
def shared_rig():
    if not CLI.exists():
        pytest.fail(f"missing {CLI}: run the tests with `make test`")
    rig = Rig()
    yield rig
    rig.close()


@pytest.fixture
def rig(shared_rig):
    shared_rig.reset()
    return shared_rig


def fields(status_output: str, host: str) -> dict[str, str]:
    """The `label  value` lines of `status` output under one host; a table row's label is its
    first word."""
    lines = status_output.splitlines()
    start = lines.index(host) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    found = {}
    for line in lines[start:end]:
        first = line.split()[0]
        if first in ("release", "primary", "canary"):
            found[first] = line.strip().removeprefix(first).strip()
        else:
            found[line[:25].strip()] = line[25:]
    return found


def wait_for_status(rig, expected: str, *args: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = rig.status(*args)
        assert result.returncode == 0, result.stderr
        if expected in result.stdout or time.monotonic() > deadline:
            return result.stdout
        time.sleep(0.5)


def masked(text: str) -> str:
    """Text without its figures, which move between two runs of `status` under traffic."""
    return re.sub(r"\s+", " ", re.sub(r"\d+(\.\d+)?", "#", text)).strip()


def percent(number: float) -> str:
    return f"{number:g} %"


def alerts_text(alerts: list[dict]) -> str:
    described = [f"{a['name']} ({a['state']} since {a['active_at'].split('.')[0].removesuffix('Z')}Z)"
                 if a["active_at"] else f"{a['name']} ({a['state']})" for a in alerts]
    return ", ".join(described) or "none"


def assert_json_says_what_the_text_says(rig, *args: str) -> dict:
    """`status --output json` has the README's shape, every key and no other, and the facts of the
    text run just before it (figures compared without their digits: traffic goes on between the two)."""
    text = rig.status(*args)
    as_json = rig.status(*args, "--output", "json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    status = json.loads(as_json.stdout)
    assert set(status) == {"prometheus", "window_seconds", "preset", "config", "routes", "other_alerts"}
    header = text.stdout.splitlines()[0]
    assert header == (f"{status['prometheus']}, over the last {status['window_seconds']:g}s ({status['preset']} "
                      f"preset), config {status['config']}")
    (route,) = status["routes"]
    assert set(route) == {"host", "configured_weight", "reported_weights", "requests", "releases", "alerts"}
    shown = fields(text.stdout, route["host"])
    assert shown["configured weight"] == percent(route["configured_weight"])
    weights = sorted({percent(w) for w in route["reported_weights"]})
    assert shown["filter reports"].startswith(f"{', '.join(weights)} ")
    assert f" {len(route['reported_weights'])} gateway series" in shown["filter reports"]
    by_release: dict[str, list[str]] = {}
    for count in route["requests"]:
        assert set(count) == {"release", "reason", "requests"}
        by_release.setdefault(count["release"], []).append(f"{count['reason']} {count['requests']:.0f}")
    assert masked(shown["requests by reason"]) == masked(
        "; ".join(f"{release}: {', '.join(reasons)}" for release, reasons in by_release.items()))
    releases = route["releases"]
    assert set(releases) == {"label", "canary_share", "primary", "canary", "verdict"}
    assert shown["release"].split()[-1] == releases["label"]
    for role in ("primary", "canary"):
        assert set(releases[role]) == {"name", "requests", "errors", "error_ratio", "mean_ms"}
        assert shown[role].split()[-1] == releases[role]["name"]
    verdict = releases["verdict"]
    assert set(verdict) == {"outcome", "details"}
    details = "; ".join(verdict["details"])
    expected = {"pass": f"pass ({details})" if details else "pass", "fail": f"fail: {details}",
                "hold": f"no verdict: {details}"}[verdict["outcome"]]
    assert masked(shown["rollout verdict now"]) == masked(expected)
    for alert in route["alerts"] + status["other_alerts"]:
        assert set(alert) == {"name", "state", "active_at"}
    assert shown["alerts"] == alerts_text(route["alerts"])
    return status


def test_a_healthy_canary_is_ramped_to_100(rig):
    traffic = rig.start_traffic()
    watcher = WeightWatcher(rig.ecds_path)
    started = time.monotonic()
    result = rig.rollout("--steps", STEPS, *JUDGING)
    watcher.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert watcher.weights() == [0, 10, 25, 50, 100]
    for number, weight in enumerate([10, 25, 50, 100], 1):
        assert f"step {number}/4 at {weight} %: pass" in result.stdout, result.stdout
        assert f"step {number}/4 at {weight} %: primary " in result.stdout  # the figures judged
    assert "at 100 % primary has 0 requests: errors judged against the floor alone" in result.stdout
    assert "rollout complete" in result.stdout
    assert time.monotonic() - started < 4 * INTERVAL + 10

    at_full = traffic.since(watcher.seen[-1][0] + 0.2)
    assert requests_to(at_full, "canary", pinned=False) > 100
    assert requests_to(at_full, "primary", pinned=False) == 0

    status = fields(wait_for_status(rig, "share  100.00 %", "--window", "2s", "--min-requests", "20"), PUBLIC)
    assert status["configured weight"] == "100 %"
    assert status["observed canary share"].startswith("100.00 % of ")
    assert status["alerts"] == "none"
    # The filter's own stats, from the one gateway (src/metrics.rs).
    assert status["filter reports"] == "100 % on 1 gateway series"
    # At 100 % every user is on the canary; testers are pinned there; every request has a user key.
    assert re.fullmatch(r"primary: pin 0, sticky 0, random 0; canary: pin [1-9]\d*, sticky [1-9]\d*, random 0",
                        status["requests by reason"]), status["requests by reason"]

    as_json = assert_json_says_what_the_text_says(rig, "--window", "2s", "--min-requests", "20")
    (route,) = as_json["routes"]
    assert (route["configured_weight"], route["reported_weights"]) == (100, [100])
    assert route["releases"]["verdict"]["outcome"] == "pass"


def test_a_canary_that_starts_failing_is_rolled_back_within_its_step(rig):
    canary = rig.upstreams["canary"]
    watcher = WeightWatcher(rig.ecds_path, {25: lambda: setattr(canary, "failure_rate", 0.2)})
    traffic = rig.start_traffic()
    result = rig.rollout("--steps", STEPS, *JUDGING)
    watcher.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "step 1/4 at 10 %: pass" in result.stdout
    assert watcher.weights() == [0, 10, 25, 0], result.stdout
    (at_25, _), (at_0, _) = watcher.seen[2:]
    assert at_0 - at_25 < INTERVAL, result.stdout  # within the step, not at its end
    assert result.stderr.startswith("rolled back to canary_weight 0: step 2/4 at 25 %: canary error ratio "), (
        result.stderr)
    assert "is over 1.50 × primary's 0.00 % (floor 1.00 %)" in result.stderr

    time.sleep(1.0)
    after = traffic.since(at_0 + 0.2)
    assert requests_to(after, "canary", pinned=True) > 5  # testers still reach the canary
    assert requests_to(after, "primary", pinned=True) == 0
    assert requests_to(after, "canary", pinned=False) == 0
    assert requests_to(after, "primary", pinned=False) > 50

    status = fields(wait_for_status(rig, "(firing since", "--window", "5s", "--min-requests", "20"), PUBLIC)
    assert status["configured weight"] == "0 %"
    assert status["alerts"].startswith("CanaryHigherErrorRate (firing since ")
    assert status["rollout verdict now"].startswith("fail: canary error ratio ")
    assert status["canary"].split()[:2] != ["0", "0"]  # requests, and 5xx among them

    as_json = assert_json_says_what_the_text_says(rig, "--window", "5s", "--min-requests", "20")
    (route,) = as_json["routes"]
    assert route["configured_weight"] == 0
    assert route["releases"]["verdict"]["outcome"] == "fail"
    assert route["releases"]["canary"]["errors"] > 0
    assert (route["alerts"][0]["name"], route["alerts"][0]["state"]) == ("CanaryHigherErrorRate", "firing")


def test_without_traffic_the_rollout_holds_then_rolls_back(rig):
    result = rig.rollout("--steps", "10,50", "--interval", "2s", "--poll", "1s", "--max-hold", "3s",
                         "--min-requests", "20")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "step 1/2 at 10 %: hold: canary has 0 requests in the window, needs 20" in result.stdout
    assert result.stderr.strip() == (
        "rolled back to canary_weight 0: step 1/2 at 10 %: no verdict after holding 3s: "
        "canary has 0 requests in the window, needs 20")
    assert ecds_weight(rig.ecds_path) == 0


def test_when_prometheus_goes_away_the_rollout_holds_then_rolls_back(rig):
    prometheus = rig.new_prometheus()  # this one goes away at the second step
    watcher = WeightWatcher(rig.ecds_path, {25: prometheus.stop})
    rig.start_traffic()
    result = rig.rollout("--steps", STEPS, *JUDGING, "--max-hold", "2s", prometheus=prometheus)
    watcher.stop()
    prometheus.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "step 1/4 at 10 %: pass" in result.stdout
    unreachable = f"Prometheus at {prometheus.url} is unreachable"
    assert f"step 2/4 at 25 %: hold: {unreachable}" in result.stdout
    assert result.stderr.startswith(
        f"rolled back to canary_weight 0: step 2/4 at 25 %: no verdict after holding 2s: {unreachable}")
    assert watcher.weights() == [0, 10, 25, 0]


def test_a_rollout_does_not_start_without_primarys_series(rig):
    result = rig.cli("rollout", "--prometheus", rig.prometheus.url, "--config", str(rig.ecds_path),
                     "--preset", "envoy", "--primary", "primry", "--canary", "canary", "--steps", "10",
                     "--interval", "1s")
    assert result.returncode == 1
    assert result.stderr.startswith("not started: Prometheus has no series for primary")
    assert ecds_weight(rig.ecds_path) == 0


def test_the_istio_presets_queries_are_promql_prometheus_accepts(rig):
    """No Istio here: its series are absent, but Prometheus parses every query and finds nothing."""
    result = rig.cli("status", "--prometheus", rig.prometheus.url, "--config", str(rig.ecds_path),
                     "--preset", "istio", "--primary", "sklearn-primary-predictor.models.svc.cluster.local",
                     "--canary", "sklearn-canary-predictor.models.svc.cluster.local")
    assert result.returncode == 0, result.stderr
    status = fields(result.stdout, PUBLIC)
    assert status["observed canary share"] == "no requests"
    assert status["release"].split()[-1] == "destination_service"
    assert status["canary"].split() == ["0", "0", "0.00", "%", "-", "sklearn-canary-predictor.models.svc.cluster.local"]


def test_the_gitops_file_changes_by_one_line(rig, tmp_path):
    """The rollout edits a WasmPlugin YAML, and --after-write runs after each edit (where a
    pipeline would commit or apply it; Envoy's weight is left alone here, so both releases keep
    traffic to judge): each step is a one-line diff of the shipped file."""
    plugin, applied = tmp_path / "wasmplugin.yaml", tmp_path / "applied"
    shutil.copy(WASMPLUGIN, plugin)
    rig.start_traffic()
    result = rig.cli("rollout", "--prometheus", rig.prometheus.url, "--config", str(plugin),
                     "--preset", "envoy", "--primary", "primary", "--canary", "canary",
                     "--steps", "12.5,100", *JUDGING,
                     "--after-write", f'echo "$CANARY_WEIGHT:$(grep "canary_weight:" {plugin})" >> {applied}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"step 1/2 at 12.5 %: wrote canary_weight: 12.5 in {plugin}, then ran --after-write" in result.stdout
    assert applied.read_text().splitlines() == ["12.5:      canary_weight: 12.5", "100:      canary_weight: 100"]
    shipped, rolled = WASMPLUGIN.read_text().splitlines(), plugin.read_text().splitlines()
    assert len(shipped) == len(rolled)
    assert [(a, b) for a, b in zip(shipped, rolled) if a != b] == [
        ("      canary_weight: 0", "      canary_weight: 100")]
    assert yaml.safe_load(plugin.read_text())["spec"]["pluginConfig"]["routes"][0]["canary_weight"] == 100


def test_kubectl_run_patches_the_wasmplugin_at_each_step(rig, tmp_path):
    """`--kubectl --run` runs `kubectl patch` from PATH: here a script that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f'#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done >> {calls}\necho --- >> {calls}\n')
    kubectl.chmod(0o755)
    rig.start_traffic()
    result = rig.cli("rollout", "--prometheus", rig.prometheus.url, "--config", str(WASMPLUGIN),
                     "--kubectl", "--run", "--preset", "envoy", "--primary", "primary", "--canary", "canary",
                     "--steps", "10,100", *JUDGING, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    invocations = [call.strip().splitlines() for call in calls.read_text().split("---") if call.strip()]
    route = "/spec/pluginConfig/routes/0"
    assert invocations == [
        ["patch", "wasmplugin", "canary-split", "--namespace", "istio-system", "--type=json", "-p",
         f'[{{"op":"test","path":"{route}/host","value":"sklearn-predictor-models.example.com"}},'
         f'{{"op":"replace","path":"{route}/canary_weight","value":{weight}}}]']
        for weight in (10, 100)
    ]

