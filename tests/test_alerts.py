"""istio/alerts.yaml's rules, run by promtool (Debian's `prometheus` package): they load, and the
unit tests in tests/alerts/ pass, the shipped Gateway API deployment's too, as `kubectl kustomize
istio/gateway-api` renders them. promtool reads plain rule files, not a PrometheusRule, so the
rule's spec.groups is written to a temporary file. Each unit test is also run against rules broken
on purpose, to show that it catches what it is there for."""

import functools
import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALERTS = ROOT / "istio" / "alerts.yaml"
UNIT_TESTS = sorted((ROOT / "tests" / "alerts").glob("*.yaml"))
RULES_FILE = "sklearn-canary.rules.yaml"  # the name the unit tests' rule_files give
# The rules pointed at the other gateway installs, as the README's "Which gateway" says: the
# canary_split:gateway rule's two labels set to the gateway's Deployment and namespace.
GATEWAY_RULES_FILES = {
    "helm-gateway.rules.yaml": ("istio-ingress", "istio-ingress"),  # the Helm chart, per Istio's guide
    "gateway-api.rules.yaml": ("gateway-istio", "istio-ingress"),  # Gateway `gateway`, class `istio`
}
GATEWAY_API_DIR = ROOT / "istio" / "gateway-api"
SHIPPED_GATEWAY_API_RULES_FILE = "gateway-api-shipped.rules.yaml"


@functools.cache
def gateway_api_groups() -> str:
    """The PrometheusRule istio/gateway-api/ deploys, as `kubectl kustomize` renders it, as a rule file."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make setup` installs it (Debian package kubernetes-client)"
    rendered = subprocess.run([kubectl, "kustomize", str(GATEWAY_API_DIR)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    (rule,) = [d for d in yaml.safe_load_all(rendered.stdout) if d["kind"] == "PrometheusRule"]
    return yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False)


def pointed_at(groups: list, workload: str, namespace: str) -> list:
    gateway_rules = [rule for group in groups for rule in group["rules"] if rule.get("record") == "canary_split:gateway"]
    assert len(gateway_rules) == 1, "alerts.yaml names its gateway in one canary_split:gateway rule"
    gateway_rules[0]["labels"] = {"source_workload": workload, "source_workload_namespace": namespace}
    return groups


def promtool(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    executable = shutil.which("promtool")
    assert executable, "promtool is missing: `make test` installs it (Debian package prometheus)"
    return subprocess.run([executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def with_rules(directory: pathlib.Path, alerts_yaml: str) -> pathlib.Path:
    """DIRECTORY with the PrometheusRule's groups as a plain rule file, beside copies of the unit tests."""
    groups = yaml.safe_load(alerts_yaml)["spec"]["groups"]
    (directory / RULES_FILE).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    for name, (workload, namespace) in GATEWAY_RULES_FILES.items():
        groups = pointed_at(yaml.safe_load(alerts_yaml)["spec"]["groups"], workload, namespace)
        (directory / name).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    (directory / SHIPPED_GATEWAY_API_RULES_FILE).write_text(gateway_api_groups())
    for unit_test in UNIT_TESTS:
        shutil.copy(unit_test, directory)
    return directory


def test_the_rules_load(tmp_path):
    groups = yaml.safe_load(ALERTS.read_text())["spec"]["groups"]
    result = promtool("check", "rules", RULES_FILE, cwd=with_rules(tmp_path, ALERTS.read_text()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in result.stdout


def test_every_alert_has_unit_tests():
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["spec"]["groups"]
              for rule in group["rules"] if "alert" in rule}
    tested = {check["alertname"] for path in UNIT_TESTS for group in yaml.safe_load(path.read_text())["tests"]
              for check in group.get("alert_rule_test", [])}
    assert alerts == tested


def test_the_gateway_api_rules_are_istios_pointed_at_the_shipped_gateway(tmp_path):
    """istio/gateway-api/'s rules differ from istio/'s in canary_split:gateway's two labels alone."""
    shipped = yaml.safe_load(ALERTS.read_text())["spec"]["groups"]
    assert yaml.safe_load(gateway_api_groups())["groups"] == pointed_at(shipped, "models-gateway-istio", "models")
    result = promtool("check", "rules", SHIPPED_GATEWAY_API_RULES_FILE, cwd=with_rules(tmp_path, ALERTS.read_text()))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unit_test", [p.name for p in UNIT_TESTS])
def test_unit_tests_pass(tmp_path, unit_test):
    result = promtool("test", "rules", unit_test, cwd=with_rules(tmp_path, ALERTS.read_text()))
    assert result.returncode == 0, result.stdout + result.stderr


# (what is broken, text in alerts.yaml, replaced by, unit test file, how promtool reports the test
# in it that catches it: the test's name, or for an expression test, which promtool reports without
# a name, the expression and time)
BROKEN = [
    ("error-ratio-factor-1.2", "clamp_min(1.5 *", "clamp_min(1.2 *",
     "error_rate.yaml", "name: canary fails 2.5 %, primary 2 %"),
    ("error-floor-0.1-percent", "vector(0)), 0.01)", "vector(0)), 0.001)",
     "error_rate.yaml", "name: primary has never failed; canary fails 0.5 %, under the 1 % floor"),
    ("no-floor-without-primary-traffic", "\n          or on() vector(0)", "",
     "error_rate.yaml", "name: no traffic on primary (canary_weight 100); canary fails 5 %"),
    ("no-zero-errors-for-a-release-without-failures", "\n        or\n        sklearn:gateway_requests:rate5m * 0", "",
     "error_rate.yaml", 'expr: "sklearn:gateway_error_ratio:rate5m", time: 10m'),
    ("only-503-counts-as-an-error", 'response_code=~"5.."', 'response_code="503"',
     "error_rate.yaml", "name: canary fails 5 % of requests, primary 0.5 %"),
    ("error-alert-for-3m", "for: 5m", "for: 3m",
     "error_rate.yaml", "name: half the canary's requests fail for one minute"),
    ("every-reporter-counts", '{reporter="source",', "{",
     "error_rate.yaml", "name: only the gateway's reports count"),
    ("latency-factor-1.1", "> on() 1.3 *", "> on() 1.1 *",
     "latency.yaml", "name: canary mean 1.2 times primary's"),
    ("p95-instead-of-mean",
     'mean5m{destination_service_name="sklearn-canary-predictor"}\n        > on() 1.3 *\n'
     '        sklearn:gateway_request_duration_ms:mean5m{',
     'p95_5m{destination_service_name="sklearn-canary-predictor"}\n        > on() 1.3 *\n'
     '        sklearn:gateway_request_duration_ms:p95_5m{',
     "latency.yaml", "name: primary in (100, 250] ms, canary in (250, 500] ms"),
    ("latency-alert-for-5m", "for: 10m", "for: 5m",
     "latency.yaml", "name: canary as fast as primary except 3 minutes"),
    ("every-gateway-counts",
     "\n          * on (source_workload, source_workload_namespace) group_left() canary_split:gateway)", ")",
     "gateway_helm.yaml", "name: the Helm chart's rules; a failing canary behind another gateway"),
    ("inputs-need-no-histogram",
     "(count(sklearn:gateway_requests:rate5m) and on() count(sklearn:gateway_request_duration_ms_count:rate5m))",
     "count(sklearn:gateway_requests:rate5m)",
     "inputs_missing.yaml", "name: the gateway's requests are there but its duration histogram is not"),
    ("inputs-missing-without-traffic", "[5m])) > 0\n        unless on()\n        (count",
     "[5m])) >= 0\n        unless on()\n        (count",
     "inputs_missing.yaml", "name: no Istio series and no traffic through the filter either"),
    ("inputs-missing-on-any-host", 'canary_split_requests_total{host="sklearn-predictor-models.example.com"}',
     "canary_split_requests_total",
     "inputs_missing.yaml", "name: the filter counts requests for another host only"),
    ("no-traffic-below-1-request-a-second", ") > 1\n        unless", ") > 0\n        unless",
     "no_traffic.yaml", "name: quiet hours"),
    ("no-traffic-alert-for-10m", "for: 15m", "for: 10m",
     "no_traffic.yaml", "name: canary gets no traffic while primary serves 10 requests a second"),
    ("guard-alert-on-every-series", "count by (host) (canary_split_guard_tripped == 1)",
     "count by (host) (canary_split_guard_tripped)",
     "guard.yaml", "name: guarded, never tripped"),
    ("guard-alert-when-every-replica-tripped", "count by (host) (canary_split_guard_tripped == 1)",
     "count by (host) (canary_split_guard_tripped == 1) unless on (host) min by (host) (canary_split_guard_tripped) == 0",
     "guard.yaml", "name: one of two gateway replicas trips at 10m; a push that changes the route ends the trip at 20m"),
    ("guard-alert-without-host", "count by (host) (canary_split_guard_tripped == 1)",
     "count(canary_split_guard_tripped == 1)",
     "guard.yaml", "name: two guarded hosts; only the one whose guard tripped alerts"),
    ("guard-alert-on-the-trips-counter", "count by (host) (canary_split_guard_tripped == 1)",
     "count by (host) (canary_split_guard_trips_total >= 1)",
     "guard.yaml", "name: one of two gateway replicas trips at 10m; a push that changes the route ends the trip at 20m"),
]


@pytest.mark.parametrize("old, new, unit_test, failure", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_each_unit_test_catches_its_broken_rule(tmp_path, old, new, unit_test, failure):
    text = ALERTS.read_text()
    assert old in text, f"alerts.yaml no longer contains {old!r}: update the test"
    directory = with_rules(tmp_path, text.replace(old, new))
    assert promtool("check", "rules", RULES_FILE, cwd=directory).returncode == 0  # broken, but still valid rules
    result = promtool("test", "rules", unit_test, cwd=directory)
    assert result.returncode != 0
    assert f"\n    {failure}" in result.stderr, result.stdout + result.stderr
