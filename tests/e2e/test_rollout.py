"""`canary-split rollout` and `status` end to end: real Envoy with the module, a real Prometheus
scraping it every second, two real upstreams and steady traffic. A healthy canary is ramped to
100 %; one that starts failing is rolled back to 0 within its step while pinned testers still
reach it; a rollout that cannot be judged (no traffic, Prometheus gone) holds, then rolls back. On a
guarded route, the filter's own guard trips on a canary failing one request in five, `status` shows
it, and `rollout` rolls back citing it (or does not start while it is tripped); a guard Prometheus
does not have holds the step, then rolls it back."""

import json
import os
import pathlib
import re
import shutil
import sys
import time

import pytest
import yaml

from harness import write_ecds
from rollout_rig import CLI, PUBLIC, Rig, WeightWatcher, ecds_weight, filter_config, requests_to

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import fake_kubectl  # noqa: E402  (tests/fake_kubectl.py, the kubectl stand-in)

STEPS = "10,25,50,100"
INTERVAL = 3.0
# Loopback upstreams answer in about a millisecond, but a step's mean rests on a few dozen requests
# and one slow scheduling of this shared machine moves it many times over: latency counts only above
# 100 ms.
JUDGING = ["--interval", f"{INTERVAL:.0f}s", "--poll", "500ms", "--min-requests", "20", "--latency-floor", "100ms"]
# A step long enough to tell a rollback within it from one at its end on a busy machine: a failing
# canary shows after two scrapes and a poll, about 2 s after the step began on this one.
FAILING_STEP = ["--interval", "8s", *JUDGING[2:]]
# The guard's defaults: 10 s window, 20 judged requests, 1.5 × primary's error ratio and 1 %.
GUARD = {}
# The rollout's own error judgement out of reach (a canary error ratio over 100 %), so that only the
# guard can fail a step.
GUARD_ALONE = ["--error-ratio-floor", "100"]
WASMPLUGIN = pathlib.Path(__file__).resolve().parents[2] / "istio" / "wasmplugin.yaml"
GATEWAY_API_WASMPLUGIN = pathlib.Path(__file__).resolve().parents[2] / "istio" / "gateway-api" / "wasmplugin.yaml"


@pytest.fixture(scope="module")
def shared_rig():
    if not CLI.exists():
        pytest.fail(f"missing {CLI}: run the tests with `make test`")
    rig = Rig(concurrency=2)  # the guard merges its two workers' counts
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


def wait_for_status(rig, expected: str | re.Pattern, *args: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = rig.status(*args)
        assert result.returncode == 0, result.stderr
        shown = expected.search(result.stdout) if isinstance(expected, re.Pattern) else expected in result.stdout
        if shown or time.monotonic() > deadline:
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


def guard_text(guard: dict | None, window_seconds: float) -> str:
    """What `status` says of a route's guard, from its JSON."""
    if guard is None:
        return "none on this route"
    for series in guard["series"]:
        assert set(series) == {"gateway", "tripped"}
    tripped = [",".join(f'{k}="{v}"' for k, v in s["gateway"].items()) for s in guard["series"] if s["tripped"]]
    count = len(guard["series"])
    if not count:
        said = "no canary_split_guard_tripped series"
    elif tripped:
        said = f"tripped on {len(tripped)} of {count} gateway series ({'; '.join(tripped)})"
    else:
        said = f"not tripped on {count} gateway series"
    trips = round(guard["trips"])
    return f"{said}; {trips} trip{'' if trips == 1 else 's'} in the last {window_seconds:g}s"


def assert_json_says_what_the_text_says(rig, *args: str, attempts: int = 3) -> dict:
    """`status --output json` has the README's shape, every key and no other, and the facts of the
    text run just before it (figures compared without their digits: traffic goes on between the two).
    An alert or a verdict may also change between the two runs: a pair that differs is taken again,
    `attempts` times in all."""
    for _ in range(attempts - 1):
        try:
            return json_says_what_the_text_says(rig.status(*args), rig.status(*args, "--output", "json"))
        except AssertionError:
            pass
    return json_says_what_the_text_says(rig.status(*args), rig.status(*args, "--output", "json"))


def json_says_what_the_text_says(text, as_json) -> dict:
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    status = json.loads(as_json.stdout)
    assert set(status) == {"prometheus", "window_seconds", "preset", "config", "routes", "other_alerts"}
    header = text.stdout.splitlines()[0]
    assert header == (f"{status['prometheus']}, over the last {status['window_seconds']:g}s ({status['preset']} "
                      f"preset), config {status['config']}")
    (route,) = status["routes"]
    assert set(route) == {"host", "configured_weight", "reported_weights", "guard", "requests", "releases", "alerts"}
    shown = fields(text.stdout, route["host"])
    assert shown["configured weight"] == percent(route["configured_weight"])
    weights = sorted({percent(w) for w in route["reported_weights"]})
    assert shown["filter reports"].startswith(f"{', '.join(weights)} ")
    assert f" {len(route['reported_weights'])} gateway series" in shown["filter reports"]
    assert masked(shown["guard"]) == masked(guard_text(route["guard"], status["window_seconds"]))
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
    watcher = WeightWatcher(rig.ecds_path, envoy=rig.envoy)
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

    at_full = traffic.at_least(120, watcher.applied[-1])
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
    watcher = WeightWatcher(rig.ecds_path, {25: lambda: setattr(canary, "failure_rate", 0.2)}, rig.envoy)
    traffic = rig.start_traffic()
    result = rig.rollout("--steps", STEPS, *FAILING_STEP)
    watcher.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "step 1/4 at 10 %: pass" in result.stdout
    assert watcher.weights() == [0, 10, 25, 0], result.stdout
    (at_25, _), (at_0, _) = watcher.seen[2:]
    assert at_0 - at_25 < 8, result.stdout  # within the step, not at its end
    assert result.stderr.startswith("rolled back to canary_weight 0: step 2/4 at 25 %: canary error ratio "), (
        result.stderr)
    assert "is over 1.50 × primary's 0.00 % (floor 1.00 %)" in result.stderr

    after = traffic.at_least(120, watcher.applied[-1])  # a second's worth, one in ten pinned
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


@pytest.mark.parametrize("wasmplugin", [WASMPLUGIN, GATEWAY_API_WASMPLUGIN], ids=["istio", "gateway-api"])
def test_kubectl_run_patches_the_wasmplugin_at_each_step(rig, tmp_path, wasmplugin):
    """`--kubectl --run` runs `kubectl patch` from PATH: here tests/fake_kubectl.py, which records
    each call and applies it to the shipped WasmPlugin as the API server would. The same on istio/'s
    plugin and on istio/gateway-api/'s, attached with targetRefs in the Gateway's namespace: the
    patches go to the plugin's own namespace and change its canary_weight alone."""
    plugin = yaml.safe_load(wasmplugin.read_text())
    name, namespace = plugin["metadata"]["name"], plugin["metadata"]["namespace"]
    state = tmp_path / "cluster.json"
    fake_kubectl.write_state(state, [plugin])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(pathlib.Path(fake_kubectl.__file__).resolve())
    rig.start_traffic()
    result = rig.cli("rollout", "--prometheus", rig.prometheus.url, "--config", str(wasmplugin),
                     "--kubectl", "--run", "--preset", "envoy", "--primary", "primary", "--canary", "canary",
                     "--steps", "10,100", *JUDGING,
                     env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_KUBECTL_STATE": str(state)})
    assert result.returncode == 0, result.stdout + result.stderr
    cluster = fake_kubectl.read_state(state)
    route = "/spec/pluginConfig/routes/0"
    assert [call["argv"] for call in cluster["calls"]] == [
        ["patch", "wasmplugin", name, "--namespace", namespace, "--type=json", "-p",
         f'[{{"op":"test","path":"{route}/host","value":"sklearn-predictor-models.example.com"}},'
         f'{{"op":"replace","path":"{route}/canary_weight","value":{weight}}}]']
        for weight in (10, 100)
    ]
    rolled = cluster["objects"][fake_kubectl.key("WasmPlugin", namespace, name)]
    plugin["spec"]["pluginConfig"]["routes"][0]["canary_weight"] = 100
    assert rolled == plugin  # targetRefs (or selector) and everything else as shipped


def test_a_tripped_guard_fails_the_step_and_the_rollout_rolls_back_citing_it(rig):
    rig.reset(guard=GUARD)
    rig.prometheus.wait_for_series(f'canary_split_guard_tripped{{host="{PUBLIC}"}}')
    canary = rig.upstreams["canary"]
    watcher = WeightWatcher(rig.ecds_path, {25: lambda: setattr(canary, "failure_rate", 0.2)}, rig.envoy)
    traffic = rig.start_traffic()
    # Steps long enough for the guard to trip within the second one: at 25 % about 27 unpinned
    # canary requests a second, the guard's tick every 500 ms, a scrape every second.
    result = rig.rollout("--steps", STEPS, "--interval", "8s", "--poll", "500ms", "--min-requests", "20",
                         "--latency-floor", "100ms", *GUARD_ALONE)
    watcher.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"the filter's guard on {PUBLIC}: a trip on any gateway series (not tripped on 1 gateway series) "
            "fails the step at once") in result.stdout, result.stdout
    assert "step 1/4 at 10 %: pass" in result.stdout
    assert watcher.weights() == [0, 10, 25, 0], result.stdout
    (at_25, _), (at_0, _) = watcher.seen[2:]
    assert at_0 - at_25 < 8, result.stdout  # within the step, not at its end
    assert re.fullmatch(r"rolled back to canary_weight 0: step 2/4 at 25 %: the filter's guard tripped on 1 of 1 "
                        r'gateway series \(instance="127\.0\.0\.1:\d+",job="[^"]+"\): it took the canary out of the split',
                        result.stderr.strip()), result.stderr

    after = traffic.at_least(120, watcher.applied[-1])  # a second's worth, one in ten pinned
    assert requests_to(after, "canary", pinned=True) > 5  # testers still reach the canary
    assert requests_to(after, "canary", pinned=False) == 0
    # Between the trip and the rollback the filter itself sent the canary's users to primary.
    guarded = rig.prometheus.query(f'canary_split_requests_total{{host="{PUBLIC}", reason="guard"}}')
    assert [s["metric"]["split_release"] for s in guarded] == ["primary"]
    assert float(guarded[0]["value"][1]) > 0

    # The rollback changed the route, which ends the trip; the trip is still counted.
    text = wait_for_status(rig, "not tripped", "--window", "30s", "--min-requests", "20")
    # Trips are counted by Prometheus's increase(), extrapolated over the window: at least one.
    assert re.fullmatch(r"not tripped on 1 gateway series; [1-9]\d* trips? in the last 30s", fields(text, PUBLIC)["guard"]), text
    as_json = assert_json_says_what_the_text_says(rig, "--window", "30s", "--min-requests", "20")
    (route,) = as_json["routes"]
    assert [s["tripped"] for s in route["guard"]["series"]] == [False]
    assert route["guard"]["trips"] > 0.5


def test_a_guard_prometheus_cannot_read_holds_the_step_then_rolls_back(rig):
    """A scrape that drops the filter's guard gauge, as a scrape keeping only the metrics it knows
    would: the rollout cannot see the guard, so no step passes, however healthy the canary."""
    rig.reset(guard=GUARD)
    rig.prometheus.wait_for_series(f'canary_split_guard_tripped{{host="{PUBLIC}"}}')  # the gateway has it
    prometheus = rig.new_prometheus(dropped_metrics=["canary_split_guard_tripped"])
    watcher = WeightWatcher(rig.ecds_path)
    rig.start_traffic()
    try:
        result = rig.rollout("--steps", "10,100", *JUDGING, "--max-hold", "2s", prometheus=prometheus)
    finally:
        watcher.stop()
        prometheus.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"the filter's guard on {PUBLIC}: a trip on any gateway series (no canary_split_guard_tripped series) "
            "fails the step at once") in result.stdout, result.stdout
    assert "step 1/2 at 10 %: primary " in result.stdout  # the figures were there, and healthy
    unreadable = f"the filter's guard cannot be read: Prometheus has no canary_split_guard_tripped series for {PUBLIC}"
    assert f"step 1/2 at 10 %: hold: {unreadable} (retrying for up to " in result.stdout, result.stdout
    assert result.stderr.strip() == (
        f"rolled back to canary_weight 0: step 1/2 at 10 %: no verdict after holding 2s: {unreadable}")
    assert watcher.weights() == [0, 10, 0]


def test_status_shows_a_tripped_guard_and_a_rollout_does_not_start_on_it(rig):
    rig.reset(guard=GUARD)
    rig.upstreams["canary"].failure_rate = 0.2
    rig.push(filter_config(25, GUARD))  # set by hand, no rollout watching
    traffic = rig.start_traffic()
    started = time.monotonic()
    text = wait_for_status(rig, "tripped on 1 of 1", "--window", "10s", "--min-requests", "20", timeout=20)
    shown = fields(text, PUBLIC)
    assert re.fullmatch(r'tripped on 1 of 1 gateway series \(instance="127\.0\.0\.1:\d+",job="[^"]+"\); '
                        r"[1-9]\d* trips? in the last 10s", shown["guard"]), text
    # Out of the split within seconds: the guard's 10 s window plus 2 s, and a scrape and a poll.
    assert time.monotonic() - started < 10 + 2 + 3
    # The requests the guard sent to primary show once Prometheus has scraped some after the trip.
    text = wait_for_status(rig, re.compile(r"primary: .*guard [1-9]\d*"), "--window", "10s", "--min-requests", "20")
    shown = fields(text, PUBLIC)
    assert re.search(r"primary: .*guard [1-9]\d*", shown["requests by reason"]), text
    assert shown["guard"].startswith("tripped on 1 of 1 gateway series"), text
    as_json = assert_json_says_what_the_text_says(rig, "--window", "10s", "--min-requests", "20")
    (route,) = as_json["routes"]
    assert [s["tripped"] for s in route["guard"]["series"]] == [True]

    recent = traffic.at_least(120, time.monotonic())  # a second's worth, one in ten pinned
    assert requests_to(recent, "canary", pinned=False) == 0
    assert requests_to(recent, "canary", pinned=True) > 5

    result = rig.rollout("--steps", "50,100", *JUDGING)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("not started: the filter's guard tripped on 1 of 1 gateway series ("), result.stderr
    assert result.stderr.strip().endswith(
        "it took the canary out of the split. Set canary_weight to 0 (which ends the trip) and fix the canary first")
    assert ecds_weight(rig.ecds_path) == 25  # nothing written

    # The shipped CanarySplitGuardTripped fires on the filter's gauge as Prometheus scrapes it.
    text = wait_for_status(rig, "CanarySplitGuardTripped (firing", "--window", "10s", "--min-requests", "20")
    assert "CanarySplitGuardTripped (firing since " in fields(text, PUBLIC)["alerts"], text
    # As `not started` advises: canary_weight 0 changes the route, which ends the trip and the alert.
    write_ecds(rig.ecds_path, filter_config(0, GUARD))
    text = wait_for_status(rig, "not tripped", "--window", "10s", "--min-requests", "20")
    shown = fields(text, PUBLIC)
    assert shown["guard"].startswith("not tripped on 1 gateway series; "), text
    rig.prometheus.wait_for(lambda: not [a for a in rig.prometheus.alerts()
                                         if a["labels"]["alertname"] == "CanarySplitGuardTripped"],
                            what="CanarySplitGuardTripped still firing after the rollback")


def test_an_unguarded_route_says_so(rig):
    result = rig.status("--window", "5s")
    assert result.returncode == 0, result.stderr
    assert fields(result.stdout, PUBLIC)["guard"] == "none on this route"
    (route,) = json.loads(rig.status("--window", "5s", "--output", "json").stdout)["routes"]
    assert route["guard"] is None
