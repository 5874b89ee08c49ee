"""istio/ is valid against the upstream CRD schemas, and its parts agree with each other and with
the filter: the WasmPlugin's config passes the filter's own validation, every host it names is
routed on the gateway the plugin runs on, and no route splits by weight."""

import base64
import copy
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

import crd_schemas

sys.path.insert(0, str(pathlib.Path(__file__).parent / "e2e"))

from istio_routes import (CLUSTER_DOMAIN, ISTIO_DIR, bound_gateways, destination_hosts, gateways_of_plugin,  # noqa: E402
                          load_manifests, of_kind, resolve_short_name, wasm_plugin)

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The variable token pins take their keys from when the config does not set pin_keys_env.
PIN_KEYS_ENV = "CANARY_SPLIT_PIN_KEYS"
CLI = ROOT / "target" / "debug" / "canary-split"
MANIFESTS = load_manifests()
SCHEMAS = crd_schemas.validators()


def test_manifests_match_the_upstream_crd_schemas():
    assert crd_schemas.problems(sorted(ISTIO_DIR.glob("*.yaml")), SCHEMAS) == []


def test_the_fixtures_match_the_upstream_crd_schemas():
    # The split Gateway and the header-mode VirtualService the tests run against must be ones
    # Istio would accept.
    fixtures = [ROOT / "tests" / "fixtures" / "split-gateway.yaml",
                ROOT / "tests" / "fixtures" / "header-mode" / "virtualservice.yaml"]
    assert crd_schemas.problems(fixtures, SCHEMAS) == []


def edited(file: str, old: str, new: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of istio/FILE with the first OLD replaced by NEW."""
    text = (ISTIO_DIR / file).read_text()
    assert old in text, f"{file} no longer contains {old!r}: update the test"
    copy_path = tmp_path / file
    copy_path.write_text(text.replace(old, new, 1))
    return copy_path


UNEXPECTED = "Additional properties are not allowed"


@pytest.mark.parametrize("file, old, new, reported", [
    ("virtualservices.yaml", "    route:\n", "    routes:\n",
     f"at $.spec.http[0]: {UNEXPECTED} ('routes' was unexpected)"),
    ("gateway.yaml", "number: 443", "number: https",
     "at $.spec.servers[1].port.number: 'https' is not of type 'integer'"),
    ("wasmplugin.yaml", "failStrategy: FAIL_OPEN", "failStrategy: FAIL_SOMETIMES",
     "at $.spec.failStrategy: 'FAIL_SOMETIMES' is not one of"),
    ("wasmplugin.yaml", "pluginName: canary-split", "pluginName: null",
     "at $.spec.pluginName: None is not of type 'string'"),
    ("inferenceservices.yaml", "minReplicas: 2", "minReplica: 2",
     f"at $.spec.predictor: {UNEXPECTED} ('minReplica' was unexpected)"),
    ("alerts.yaml", "  labels:\n    release:", "  lables:\n    release:",
     f"at $.metadata: {UNEXPECTED} ('lables' was unexpected)"),
    ("alerts.yaml", "for: 10m", "for: ten minutes",
     "at $.spec.groups[1].rules[9].for: 'ten minutes' does not match"),
    ("alerts.yaml", "    rules:\n", "    rule:\n",
     f"at $.spec.groups[0]: {UNEXPECTED} ('rule' was unexpected)"),
    ("gateway.yaml", "  namespace: models\n", "  namespace: models\n  name: models\n",
     "duplicate key 'name'"),
    ("gateway.yaml", "networking.istio.io/v1\n", "networking.istio.io/v2\n",
     "no schema for apiVersion 'networking.istio.io/v2' kind 'Gateway'"),
], ids=["unknown-field", "wrong-type", "not-in-enum", "null-not-allowed", "unknown-field-deep", "misspelt-metadata",
        "bad-duration", "misspelt-rules", "duplicate-key", "unknown-api-version"])
def test_the_schema_check_reports_a_broken_manifest(tmp_path, file, old, new, reported):
    found = crd_schemas.problems([edited(file, old, new, tmp_path)], SCHEMAS)
    assert any(reported in line for line in found), found


def test_the_schema_check_allows_null_where_the_schema_is_nullable(tmp_path):
    nullable = edited("wasmplugin.yaml", "priority: 1000", "priority: null", tmp_path)
    assert crd_schemas.problems([nullable], SCHEMAS) == []


def test_plugin_config_passes_the_filters_own_validation():
    # Without the gateway's keys everything else is checked; with a key, the keys too.
    env = {name: value for name, value in os.environ.items() if name != PIN_KEYS_ENV}
    check = [str(CLI), "check", str(ISTIO_DIR / "wasmplugin.yaml")]
    result = subprocess.run(check, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(
        f"WasmPlugin canary-split: ok, 1 route(s); token pins' keys not checked ({PIN_KEYS_ENV} is not set here)")
    keyed = {**env, PIN_KEYS_ENV: base64.b64encode(os.urandom(32)).decode()}
    result = subprocess.run(check, capture_output=True, text=True, env=keyed)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"WasmPlugin canary-split: ok, 1 route(s); token pins' keys in {PIN_KEYS_ENV} ok")


def test_authority_mode_works_behind_the_shipped_gateway():
    # Given the Gateway and VirtualServices too, the check finds the public host's route tables.
    result = subprocess.run([str(CLI), "check", *map(str, sorted(ISTIO_DIR.glob("*.yaml")))], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "routes[0]: authority mode: every route table that serves sklearn-predictor-models.example.com" in result.stdout
    # No public route on the decision header, and the plugin on no redirecting server.
    assert "warning" not in result.stdout


def test_the_check_refuses_a_broken_plugin_config(tmp_path):
    plugin = copy.deepcopy(wasm_plugin(MANIFESTS))
    plugin["spec"]["pluginConfig"]["routes"][0]["canary_weight"] = 150
    broken = tmp_path / "wasmplugin.yaml"
    broken.write_text(json.dumps(plugin))  # JSON is YAML
    result = subprocess.run([str(CLI), "check", str(broken)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "invalid configuration: routes[0].canary_weight: 150 is not in 0..=100" in result.stderr


def routing_problems(manifests: list[dict]) -> list[str]:
    """Every host the filter names has a VirtualService on a gateway the plugin runs on, and
    that gateway accepts the host."""
    problems = []
    gateways = set(gateways_of_plugin(manifests))
    if not gateways:
        return ["no Gateway is served by the workloads the WasmPlugin selects"]
    routed = {host for vs in of_kind(manifests, "VirtualService") if gateways & set(bound_gateways(vs))
              for host in vs["spec"]["hosts"]}
    accepted = {server_host.split("/", 1)[-1] for g in of_kind(manifests, "Gateway")
                for server in g["spec"]["servers"] for server_host in server["hosts"]}
    for route in wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"]:
        named = [route["host"]] + [route[v]["host"].split(":")[0] for v in ("primary", "canary") if "host" in route[v]]
        for host in named:
            if host not in routed:
                problems.append(f"{host}: no VirtualService on {sorted(gateways)}")
            if host not in accepted:
                problems.append(f"{host}: no Gateway server accepts it")
    return problems


def weights(node, path="") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in ([f"{path}.{k}"] if k == "weight" else []) + weights(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in weights(v, f"{path}[{i}]")]
    return []


def weight_problems(manifests: list[dict]) -> list[str]:
    return [f'{vs["metadata"]["name"]}{p}' for vs in of_kind(manifests, "VirtualService") for p in weights(vs["spec"])]


def release_problems(manifests: list[dict]) -> list[str]:
    """Both releases serve the same model name from different storage, and each is a VirtualService destination."""
    problems = []
    services = of_kind(manifests, "InferenceService")
    destinations = {host for vs in of_kind(manifests, "VirtualService") for host in destination_hosts(vs)}
    for service in release_services(manifests):
        if service not in destinations:
            problems.append(f"{service}: no VirtualService routes to it")
    if len({tuple(s["spec"]["predictor"]["model"].get("args", [])) for s in services}) != 1:
        problems.append("the releases do not serve the same model name")
    if len({s["spec"]["predictor"]["model"]["storageUri"] for s in services}) != len(services):
        problems.append("two releases share a storageUri")
    return problems


# KServe's names for a raw deployment (pkg/constants/constants.go, v0.16.0 to v0.20.0): "Standard",
# and "RawDeployment", deprecated since 0.16; the webhook refuses to change the mode once the status
# has recorded it (validateDeploymentMode, pkg/apis/serving/v1beta1/inference_service_validation.go).
DEPLOYMENT_MODE = ("serving.kserve.io/deploymentMode", "Standard")
# The label that keeps KServe from creating an Ingress or HTTPRoute for an InferenceService
# (RawIngressReconciler.Reconcile and RawHTTPRouteReconciler.Reconcile in
# pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/, v0.16.0 to v0.20.0 and master).
VISIBILITY = ("networking.kserve.io/visibility", "cluster-local")
# KServe's default ingress config (config/configmap/inferenceservice.yaml): the hosts it would route.
INGRESS_DOMAIN, DOMAIN_TEMPLATE = "example.com", "{name}-{namespace}.{domain}"


def kserve_hosts(isvc: dict) -> list[str]:
    """The hosts KServe's own Ingress for an InferenceService would serve with the default config:
    the top-level one and the predictor's (generateIngressHost, kube_ingress_reconciler.go)."""
    name, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
    return [DOMAIN_TEMPLATE.format(name=n, namespace=namespace, domain=INGRESS_DOMAIN)
            for n in (name, f"{name}-predictor")]


def kserve_problems(manifests: list[dict]) -> list[str]:
    """Every InferenceService runs in Standard mode and is cluster-local, so that KServe routes
    none of its hosts past canary-split; and no InferenceService's KServe hosts is the public host
    (an InferenceService named like its prefix, made public by mistake, would claim it)."""
    problems = []
    public = {route["host"] for route in wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"]}
    for isvc in of_kind(manifests, "InferenceService"):
        name = isvc["metadata"]["name"]
        key, mode = DEPLOYMENT_MODE
        if isvc["metadata"].get("annotations", {}).get(key) != mode:
            problems.append(f"{name}: annotation {key} is not {mode}")
        key, visibility = VISIBILITY
        if isvc["metadata"].get("labels", {}).get(key) != visibility:
            problems.append(f"{name}: label {key} is not {visibility}: KServe would route "
                            f"{' and '.join(kserve_hosts(isvc))} itself")
        problems += [f"{name}: KServe names its host {host}, a public host" for host in kserve_hosts(isvc)
                     if host in public]
    return problems


README = (ROOT / "README.md").read_text()


def first_deploy_problems(manifests: list[dict], readme: str) -> list[str]:
    """The shipped weight is the one the README's first rollout step deploys with, and it is 0:
    the canary gets public users only once the rollout raises it."""
    problems = []
    said = re.search(r"\*\*Deploy\*\* with `canary_weight: ([0-9.]+)`", readme)
    for route in wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"]:
        if route["canary_weight"] != 0:
            problems.append(f'{route["host"]}: ships canary_weight {route["canary_weight"]}, not 0')
        if said is None or float(said.group(1)) != route["canary_weight"]:
            problems.append(f'{route["host"]}: the README\'s deploy step does not say canary_weight '
                            f'{route["canary_weight"]}')
    return problems


def release_services(manifests: list[dict]) -> dict[str, str]:
    """The host of each release's predictor Service, as KServe names it and VirtualServices route
    to it once Istio resolved their short names, and the release's variant."""
    return {f'{i["metadata"]["name"]}-predictor.{i["metadata"]["namespace"]}.svc.{CLUSTER_DOMAIN}':
            i["metadata"]["labels"]["canary-split.dev/variant"] for i in of_kind(manifests, "InferenceService")}


def alert_problems(manifests: list[dict]) -> list[str]:
    """The alerts tell the releases apart by Istio's destination_service_name and
    destination_service_namespace, the name and namespace of the release's Service: every exact name
    is a release's, a pattern selects every release, and the namespace is theirs. The split host
    they name is one of the WasmPlugin's routes."""
    problems = []
    releases = {service.split(".")[0]: service.split(".")[1] for service in release_services(manifests)}
    hosts = {route["host"] for route in wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"]}
    for rule in (r for p in of_kind(manifests, "PrometheusRule") for g in p["spec"]["groups"] for r in g["rules"]):
        name = rule.get("alert") or rule["record"]
        for operator, quoted in re.findall(r'destination_service_name(=~|=)"((?:[^"\\]|\\.)*)"', rule["expr"]):
            value = quoted.replace("\\\\", "\\")  # a PromQL string's escaped backslash
            if operator == "=" and value not in releases:
                problems.append(f'{name}: destination_service_name="{value}" is not a release\'s Service')
            if operator == "=~":
                problems += [f"{name}: destination_service_name=~{value!r} misses {service}"
                             for service in releases if not re.fullmatch(value, service)]
        for namespace in re.findall(r'destination_service_namespace="([^"]*)"', rule["expr"]):
            if namespace not in releases.values():
                problems.append(f"{name}: destination_service_namespace {namespace!r} is not the releases' namespace")
        label = rule.get("labels", {}).get("destination_service_name")
        if label is not None and label not in releases:
            problems.append(f"{name}: label destination_service_name {label!r} is not a release's Service")
        for host in re.findall(r'host="([^"]*)"', rule["expr"]) + [rule.get("labels", {}).get("host")]:
            if host is not None and host not in hosts:
                problems.append(f"{name}: host {host!r} is not a route of the WasmPlugin")
    return problems


def release_header_problems(manifests: list[dict]) -> list[str]:
    """Every route to a release sets the response header x-release to that release's variant."""
    variant_of = release_services(manifests)
    problems = []
    for vs in of_kind(manifests, "VirtualService"):
        for http in vs["spec"]["http"]:
            variant = variant_of.get(resolve_short_name(http["route"][0]["destination"]["host"],
                                                        vs["metadata"]["namespace"]))
            named = http.get("headers", {}).get("response", {}).get("set", {}).get("x-release")
            if variant is not None and named != variant:
                problems.append(f'{vs["metadata"]["name"]}.{http["name"]}: x-release is {named!r}, '
                                f'routes to the {variant}')
    return problems


@pytest.mark.parametrize("check", [routing_problems, weight_problems, release_problems, alert_problems,
                                   release_header_problems, kserve_problems])
def test_shipped_manifests_agree(check):
    assert check(MANIFESTS) == []


def test_the_first_deploy_ships_the_weight_the_readme_deploys_with():
    assert first_deploy_problems(MANIFESTS, README) == []


def plugin_route(manifests):
    return wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"][0]


@pytest.mark.parametrize("edit, readme", [
    (lambda m: plugin_route(m).update(canary_weight=10), README),
    (lambda m: None, README.replace("**Deploy** with `canary_weight: 0`", "**Deploy** with `canary_weight: 10`")),
    (lambda m: None, README.replace("**Deploy** with `canary_weight: 0`", "**Deploy**")),
], ids=["ships-10", "readme-says-10", "readme-says-nothing"])
def test_the_first_deploy_check_catches_its_problem(edit, readme):
    assert first_deploy_problems(broken(edit), readme) != []


def broken(edit) -> list[dict]:
    manifests = copy.deepcopy(MANIFESTS)
    edit(manifests)
    return manifests


def alert_named(manifests, name):
    (alert,) = [r for p in of_kind(manifests, "PrometheusRule") for g in p["spec"]["groups"] for r in g["rules"]
                if r.get("alert") == name]
    return alert


def rule_recording(manifests, name):
    (rule,) = [r for p in of_kind(manifests, "PrometheusRule") for g in p["spec"]["groups"] for r in g["rules"]
               if r.get("record") == name]
    return rule


def vs_named(manifests, name):
    (vs,) = [v for v in of_kind(manifests, "VirtualService") if v["metadata"]["name"] == name]
    return vs


@pytest.mark.parametrize("check, edit", [
    (routing_problems, lambda m: vs_named(m, "sklearn-canary")["spec"].update(gateways=["other-gateway"])),
    (routing_problems, lambda m: m.remove(vs_named(m, "sklearn"))),
    (routing_problems, lambda m: of_kind(m, "Gateway")[0]["spec"]["selector"].update(istio="other")),
    (weight_problems, lambda m: vs_named(m, "sklearn")["spec"]["http"][-1]["route"][0].update(weight=90)),
    (release_problems, lambda m: of_kind(m, "InferenceService")[1]["spec"]["predictor"]["model"].update(args=[])),
    (release_problems, lambda m: of_kind(m, "InferenceService")[1]["metadata"].update(name="sklearn-beta")),
    (release_problems, lambda m: vs_named(m, "sklearn-canary")["metadata"].update(namespace="istio-system")),
    (alert_problems, lambda m: of_kind(m, "InferenceService")[1]["metadata"].update(name="sklearn-beta")),
    (alert_problems, lambda m: rule_recording(m, "sklearn:gateway_requests_by_code:rate5m").update(
        expr=rule_recording(m, "sklearn:gateway_requests_by_code:rate5m")["expr"].replace('"models"', '"default"'))),
    (alert_problems, lambda m: alert_named(m, "SklearnCanaryGetsNoTraffic")["labels"].update(
        destination_service_name="sklearn-canary")),
    (alert_problems, lambda m: alert_named(m, "SklearnCanaryAlertInputsMissing").update(
        expr=alert_named(m, "SklearnCanaryAlertInputsMissing")["expr"].replace("sklearn-predictor", "sklearn"))),
    (release_header_problems, lambda m: vs_named(m, "sklearn")["spec"]["http"][0]["headers"]["response"]["set"].update(
        {"x-release": "canary"})),
    (release_header_problems, lambda m: vs_named(m, "sklearn-canary")["spec"]["http"][0].pop("headers")),
    (kserve_problems, lambda m: of_kind(m, "InferenceService")[0]["metadata"]["annotations"].update(
        {"serving.kserve.io/deploymentMode": "RawDeployment"})),
    (kserve_problems, lambda m: of_kind(m, "InferenceService")[1]["metadata"]["labels"].pop(
        "networking.kserve.io/visibility")),
    (kserve_problems, lambda m: of_kind(m, "InferenceService")[1]["metadata"].update(annotations={
        **of_kind(m, "InferenceService")[1]["metadata"]["annotations"], "networking.kserve.io/visibility": "cluster-local"},
        labels={k: v for k, v in of_kind(m, "InferenceService")[1]["metadata"]["labels"].items()
                if k != "networking.kserve.io/visibility"})),
    (kserve_problems, lambda m: of_kind(m, "InferenceService")[0]["metadata"].update(name="sklearn")),
], ids=["vs-on-other-gateway", "public-vs-missing", "gateway-not-selected", "weighted-route", "model-name-differs",
        "release-not-routed", "short-name-in-other-namespace", "alerts-on-renamed-release", "alert-on-other-namespace", "alert-label-not-a-service",
        "alert-on-unsplit-host",
        "release-header-names-other-release", "release-header-missing", "raw-deployment-mode", "not-cluster-local",
        "visibility-as-annotation", "named-like-the-public-host"])
def test_each_cross_check_catches_its_problem(check, edit):
    assert check(broken(edit)) != []


def test_kustomization_lists_every_manifest():
    kustomization = (ISTIO_DIR / "Kustomization").read_text()
    for path in ISTIO_DIR.glob("*.yaml"):
        assert f"- {path.name}" in kustomization


def test_the_gateway_patch_exposes_the_filters_stats_with_their_labels():
    """The proxy settings shipped for the gateway extract the labels the filter defines
    (src/metrics.rs) and the tests' Envoy extracts, and nothing else is needed for the stats
    (tests/e2e/test_metrics.py keeps them through Istio's stats matcher)."""
    from harness import STATS_TAGS

    patch = yaml.safe_load((ISTIO_DIR / "patches" / "ingressgateway-stats.yaml").read_text())
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    proxy_config = yaml.safe_load(annotations["proxy.istio.io/config"])
    defined = tuple(re.findall(r'pub const \w+_TAG: &str = "(\w+)";', (ROOT / "src" / "metrics.rs").read_text()))
    assert tuple(proxy_config["extraStatTags"]) == STATS_TAGS == defined
    assert set(proxy_config) == {"extraStatTags"}


def test_the_gateway_patch_sets_duration_buckets_fine_enough_for_the_latency_rule():
    """Istio reads the annotation as JSON: stat name prefix -> bucket bounds (istio/istio
    pkg/bootstrap/config.go). From 3 ms to 10 s no step is over 1.33 times."""
    patch = yaml.safe_load((ISTIO_DIR / "patches" / "ingressgateway-stats.yaml").read_text())
    buckets = json.loads(patch["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/statsHistogramBuckets"])
    (bounds,) = buckets.values()
    assert list(buckets) == ["istiocustom.istio_request_duration_milliseconds"]
    assert bounds == sorted(bounds) and bounds[0] == 1 and bounds[-1] >= 60_000
    within = [b for b in bounds if b <= 10_000]
    assert within[-1] == 10_000
    assert max(high / low for low, high in zip(within[2:], within[3:])) <= 1.34


def pin_keys_problems(manifests: list[dict], patch: dict) -> list[str]:
    """The variable the filter takes its pin keys from is one the WasmPlugin passes on from the
    gateway (valueFrom HOST, never a value in the resource), and the gateway patch sets it from a
    Secret."""
    plugin = wasm_plugin(manifests)
    wanted = plugin["spec"]["pluginConfig"].get("pin_keys_env", PIN_KEYS_ENV)
    problems = []
    passed_on = {e["name"]: e for e in plugin["spec"].get("vmConfig", {}).get("env", [])}
    if wanted not in passed_on:
        problems.append(f"the WasmPlugin's vmConfig.env does not pass {wanted} on to the VM")
    elif passed_on[wanted].get("valueFrom") != "HOST" or "value" in passed_on[wanted]:
        problems.append(f"the WasmPlugin sets {wanted} itself instead of taking it from the gateway (valueFrom: HOST)")
    containers = patch["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for c in containers if c["name"] == "istio-proxy" for e in c.get("env", [])}
    if "secretKeyRef" not in env.get(wanted, {}).get("valueFrom", {}):
        problems.append(f"the gateway patch does not set {wanted} on istio-proxy from a Secret")
    return problems


PIN_KEYS_PATCH = yaml.safe_load((ISTIO_DIR / "patches" / "ingressgateway-pin-keys.yaml").read_text())


def test_the_pin_keys_come_from_a_secret_on_the_gateway():
    assert pin_keys_problems(MANIFESTS, PIN_KEYS_PATCH) == []


@pytest.mark.parametrize("edit_plugin, edit_patch", [
    (lambda p: p["spec"].pop("vmConfig"), lambda patch: None),
    (lambda p: p["spec"]["vmConfig"]["env"][0].update(valueFrom="INLINE", value="a-key"), lambda patch: None),
    (lambda p: p["spec"]["pluginConfig"].update(pin_keys_env="OTHER_KEYS"), lambda patch: None),
    (lambda p: None, lambda patch: patch["spec"]["template"]["spec"]["containers"][0].update(name="gateway")),
    (lambda p: None, lambda patch: patch["spec"]["template"]["spec"]["containers"][0]["env"].__setitem__(
        0, {"name": PIN_KEYS_ENV, "value": "a-key"})),
], ids=["not-passed-on", "inline-key", "other-variable", "other-container", "key-in-the-patch"])
def test_the_pin_keys_check_catches_its_problem(edit_plugin, edit_patch):
    manifests, patch = copy.deepcopy(MANIFESTS), copy.deepcopy(PIN_KEYS_PATCH)
    edit_plugin(wasm_plugin(manifests))
    edit_patch(patch)
    assert pin_keys_problems(manifests, patch) != []


def tls_secret_problems(manifests: list[dict], readme: str) -> list[str]:
    """Each credentialName of a Gateway in istio/ is a TLS Secret the README's deploy steps create,
    in the namespace of the gateway's pods (where its Deployment is patched): Istio reads an
    Istio Gateway's credentialName from the proxy's own namespace, whatever the Gateway's
    (ParseResourceName, pilot/pkg/model/credentials/resource.go; filterAuthorizedResources,
    pilot/pkg/xds/sds.go)."""
    pods = set(re.findall(r"kubectl -n (\S+) patch deployment istio-ingressgateway", readme))
    # The Gateway API deployment's step creates a Secret of the same name in its Gateway's namespace.
    created: dict[str, set[str]] = {}
    for namespace, name in re.findall(r"kubectl -n (\S+) create secret tls (\S+)", readme):
        created.setdefault(name, set()).add(namespace)
    problems = [] if len(pods) == 1 else [f"the README patches the gateway's Deployment in {sorted(pods)}, "
                                          "not in one namespace"]
    for gateway in of_kind(manifests, "Gateway"):
        for server in gateway["spec"]["servers"]:
            name = server.get("tls", {}).get("credentialName")
            if name is None:
                continue
            if name not in created:
                problems.append(f"{gateway['metadata']['name']}: no README step creates its TLS Secret {name}")
            elif not pods <= created[name]:
                problems.append(f"{gateway['metadata']['name']}: the README creates {name} in "
                                f"{', '.join(sorted(created[name]))}, "
                                f"not where the gateway's pods run ({', '.join(sorted(pods))})")
    return problems


def test_the_readme_creates_the_gateways_tls_secret_where_istio_reads_it():
    assert tls_secret_problems(MANIFESTS, README) == []


def renamed_credential(manifests):
    (gateway,) = of_kind(manifests, "Gateway")
    gateway["spec"]["servers"][1]["tls"]["credentialName"] = "other-tls"


@pytest.mark.parametrize("edit, readme", [
    (renamed_credential, README),
    (lambda m: None, README.replace("kubectl -n istio-system create secret tls", "kubectl -n models create secret tls")),
    (lambda m: None, README.replace("create secret tls", "create secret generic")),
], ids=["other-credential", "secret-in-the-gateways-namespace", "no-tls-secret-step"])
def test_the_tls_secret_check_catches_its_problem(edit, readme):
    assert tls_secret_problems(broken(edit), readme) != []
