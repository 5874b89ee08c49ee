"""istio/grafana-dashboard.json: every query parses (promtool checks them as recording rules),
and every metric it names exists: the filter's own stats (src/metrics.rs), the recording rules of
istio/alerts.yaml, the Istio metrics those read, and Prometheus's ALERTS. tests/e2e/test_metrics.py
runs the filter's queries against a real Prometheus scraping a real Envoy."""

import json
import pathlib
import re
import shutil
import subprocess

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "istio" / "grafana-dashboard.json"
ALERTS = ROOT / "istio" / "alerts.yaml"
# Grafana's variables, as a query runs with them filled in.
VARIABLES = {"$host": "shop.example.com", "$__rate_interval": "5m"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset"}


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [target["expr"] for panel in panels for target in panel["targets"]]
    for name, value in VARIABLES.items():
        queries = [query.replace(name, value) for query in queries]
    return queries


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query selects: identifiers that are not functions, keywords,
    label names or inside strings."""
    query = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)  # strings
    query = re.sub(r"\{[^}]*\}", "", query)  # label matchers
    query = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", query)  # label lists
    query = re.sub(r"\[[^\]]*\]", "", query)  # ranges
    words = re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", query)
    return {word for word, call in words if not call and word not in PROMQL_WORDS}


def known_metrics() -> set[str]:
    filter_stats = set(re.findall(r'pub const \w+: &str = "(canary_split_\w+)";', (ROOT / "src" / "metrics.rs").read_text()))
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["spec"]["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    read_by_rules = {name for rule in rules for name in metric_names(rule["expr"])}
    return filter_stats | recorded | read_by_rules | {"ALERTS"}


def test_every_query_parses(tmp_path):
    queries = dashboard_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": query} for n, query in enumerate(queries)]}]}
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (Debian package prometheus)"
    result = subprocess.run([promtool, "check", "rules", "dashboard.rules.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_every_metric_it_names_exists():
    named = {name for query in dashboard_queries() for name in metric_names(query)}
    assert named, "no metric found in the dashboard's queries"
    assert named <= known_metrics(), named - known_metrics()


def test_it_shows_what_a_rollout_is_judged_on():
    named = {name for query in dashboard_queries() for name in metric_names(query)}
    assert {"canary_split_canary_weight_basis_points", "canary_split_requests_total",
            "sklearn:gateway_error_ratio:rate5m", "sklearn:gateway_request_duration_ms:mean5m"} <= named


def test_it_lists_every_alert_of_the_rules():
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["spec"]["groups"]
              for rule in group["rules"] if "alert" in rule}
    (listed,) = [re.search(r'alertname=~"([^"]*)"', query)[1] for query in dashboard_queries() if "ALERTS" in query]
    assert set(listed.split("|")) == alerts


def test_the_name_extraction_sees_through_promql():
    assert metric_names('sum by (release) (rate(a_total{host="x", r=~"b|c"}[5m])) / on() b:rule * 100') == {
        "a_total", "b:rule"}
