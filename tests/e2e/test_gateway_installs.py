"""The `istio` preset and the alerts' recording rules on the three ways to install an ingress
gateway, against a real Prometheus: each gateway's Istio series come from an exporter that
imitates what a gateway reports (Istio's metric and label names, reporter="source",
source_workload and source_workload_namespace as the gateway's Deployment and namespace: istio/proxy
source/extensions/filters/http/istio_stats/istio_stats.cc before its move to Envoy, and the
Deployment names of istio/istio manifests/charts/gateway/templates/_helpers.tpl and
pilot/pkg/config/kube/gatewaycommon/gateway_utils.go). The gateways serve the same releases at
different mean latencies, so each figure says which gateway it was read from. The exporter also
serves the filter's request counter, for the alert on missing inputs."""

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from harness import ROOT
from prometheus_server import Prometheus
from rollout_rig import CLI

ALERTS = ROOT / "istio" / "alerts.yaml"
WASMPLUGIN = ROOT / "istio" / "wasmplugin.yaml"
RELEASES = {"primary": "sklearn-primary-predictor", "canary": "sklearn-canary-predictor"}
HOST = "sklearn-predictor-models.example.com"  # the model's split host in istio/wasmplugin.yaml
NAMESPACE = "models"
# (Deployment, namespace) of each install's gateway -> its requests per second and mean latency.
GATEWAYS = {
    ("istio-ingressgateway", "istio-system"): (20.0, 40.0),  # istioctl
    ("istio-ingress", "istio-ingress"): (10.0, 80.0),  # the Helm chart, as Istio's guide installs it
    ("gateway-istio", "istio-ingress"): (10.0, 120.0),  # the Gateway API: Gateway `gateway`, class `istio`
    # The Helm chart installed as its own README shows (`helm install istio-ingressgateway
    # istio/gateway`), here in istio-ingress: istioctl's Deployment name in another namespace.
    ("istio-ingressgateway", "istio-ingress"): (10.0, 200.0),
}


def full_name(service: str) -> str:
    return f"{service}.{NAMESPACE}.svc.cluster.local"


class IstioGatewayExporter(ThreadingHTTPServer):
    """/stats/prometheus with istio_requests_total and istio_request_duration_milliseconds_sum and
    _count for each of `gateways` and each release, growing at each gateway's steady rate, and the
    filter's canary_split_requests_total for the model's host."""

    def __init__(self, gateways=tuple(GATEWAYS)):
        self.started = time.monotonic()
        self.gateways = gateways

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler):
                body = self.exposition().encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "text/plain; version=0.0.4")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def exposition(self) -> str:
        elapsed = time.monotonic() - self.started
        lines = [f'canary_split_requests_total{{host="{HOST}",split_release="{release}",reason="random"}} {elapsed}'
                 for release in RELEASES]
        for workload, namespace in self.gateways:
            per_second, mean_ms = GATEWAYS[(workload, namespace)]
            for service in RELEASES.values():
                labels = (f'reporter="source",source_workload="{workload}",source_workload_namespace="{namespace}",'
                          f'destination_service="{full_name(service)}",destination_service_name="{service}",'
                          f'destination_service_namespace="{NAMESPACE}",response_code="200"')
                count = per_second * elapsed
                lines += [f"istio_requests_total{{{labels}}} {count}",
                          f"istio_request_duration_milliseconds_sum{{{labels}}} {count * mean_ms}",
                          f"istio_request_duration_milliseconds_count{{{labels}}} {count}"]
        return "\n".join(lines) + "\n"

    def target(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def close(self):
        self.shutdown()
        self.server_close()


def rules_for(workload: str, namespace: str) -> str:
    """istio/alerts.yaml's rules with canary_split:gateway pointed at a gateway, as the README says."""
    groups = yaml.safe_load(ALERTS.read_text())["spec"]["groups"]
    (gateway,) = [rule for group in groups for rule in group["rules"] if rule.get("record") == "canary_split:gateway"]
    gateway["labels"] = {"source_workload": workload, "source_workload_namespace": namespace}
    return yaml.safe_dump({"groups": groups})


@pytest.fixture(scope="module")
def exporter():
    server = IstioGatewayExporter()
    yield server
    server.close()


def status_means(prometheus: Prometheus, *selector: str) -> dict[str, str]:
    """`status`'s mean latency column, per release."""
    result = subprocess.run([str(CLI), "status", "--prometheus", prometheus.url, "--config", str(WASMPLUGIN),
                             "--primary", full_name(RELEASES["primary"]), "--canary", full_name(RELEASES["canary"]),
                             "--window", "1m", *selector], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    return {release: rows[release][-3] + " " + rows[release][-2] for release in RELEASES}


@pytest.mark.parametrize("gateway", list(GATEWAYS), ids=["istioctl", "helm-chart", "gateway-api", "helm-chart-named-as-istioctls"])
def test_the_rules_pointed_at_a_gateway_read_that_gateway_alone(exporter, gateway):
    _, mean_ms = GATEWAYS[gateway]
    prometheus = Prometheus([exporter.target()], rules=rules_for(*gateway)).start()
    try:
        def recorded(name):
            return {s["metric"]["destination_service_name"]: float(s["value"][1]) for s in prometheus.query(name)}

        prometheus.wait_for(lambda: len(recorded("sklearn:gateway_request_duration_ms:mean5m")) == 2, timeout=30)
        assert recorded("sklearn:gateway_request_duration_ms:mean5m") == pytest.approx(
            {service: mean_ms for service in RELEASES.values()})
        # Over seconds of data a rate over 5 minutes is a fraction of the real one: only its
        # presence says something here.
        assert set(recorded("sklearn:gateway_requests:rate5m")) == set(RELEASES.values())
        assert not [a for a in prometheus.alerts() if a["labels"]["alertname"] == "SklearnCanaryAlertInputsMissing"]
    finally:
        prometheus.stop()


def test_the_rules_as_shipped_on_a_helm_gateway_say_their_inputs_are_missing():
    """The filter counts requests, but istioctl's gateway, which the shipped rules name, reports
    none: the alert goes pending at once (and fires after its `for`)."""
    exporter = IstioGatewayExporter(gateways=[("istio-ingress", "istio-ingress")])
    prometheus = Prometheus([exporter.target()], rules=yaml.safe_dump({"groups": yaml.safe_load(
        ALERTS.read_text())["spec"]["groups"]})).start()
    try:
        prometheus.wait_for(lambda: [a for a in prometheus.alerts()
                                     if a["labels"]["alertname"] == "SklearnCanaryAlertInputsMissing"], timeout=30)
        assert not prometheus.query("sklearn:gateway_requests:rate5m")
    finally:
        prometheus.stop()
        exporter.close()


def test_the_istio_preset_reads_istioctls_gateway_and_a_selector_points_it_at_another(exporter):
    if not CLI.exists():
        pytest.fail(f"missing {CLI}: run the tests with `make test`")
    prometheus = Prometheus([exporter.target()]).start()
    try:
        def scraped_twice():  # for increase() over the window
            counts = [float(s["value"][1]) for s in prometheus.query("count_over_time(istio_requests_total[1m])")]
            return len(counts) == 2 * len(GATEWAYS) and min(counts) >= 2

        prometheus.wait_for(scraped_twice, timeout=30)
        means = {gateway: status_means(prometheus, "--selector",
                                       f'reporter="source",source_workload="{gateway[0]}",'
                                       f'source_workload_namespace="{gateway[1]}"')
                 for gateway in GATEWAYS}
        default = status_means(prometheus)
    finally:
        prometheus.stop()
    for gateway, (_, mean_ms) in GATEWAYS.items():
        assert means[gateway] == {release: f"{mean_ms:.0f} ms" for release in RELEASES}, gateway
    # istioctl's, and not the gateway of the same name in another namespace.
    assert default == means[("istio-ingressgateway", "istio-system")]
