"""istio/gateway-api/ is valid against the upstream CRD schemas (Gateway API standard channel
v1.6.1, Istio, KServe), renders with `kubectl kustomize`, and its parts agree with each other, with
istio/ and with the filter: every host the filter names has an HTTPRoute on the Gateway the
WasmPlugin targets, each release host reaches its own release and says so, no route splits by
weight, and the rollout Job and `rollout --kubectl` work on the targetRefs WasmPlugin unchanged."""

import copy
import json
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

import crd_schemas
import kubernetes_validate
from test_rollout_job import JOB_FILE, environment, flag, job_commands
from test_rollout_policy import KUBERNETES_VERSIONS

sys.path.insert(0, str(pathlib.Path(__file__).parent / "e2e"))

from gateway_api import GATEWAY_API_DIR, deployment_name, of_group, targeted_gateways  # noqa: E402
from istio_routes import ISTIO_DIR, load_manifests, of_kind, wasm_plugin  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLI = ROOT / "target" / "debug" / "canary-split"
MANIFESTS = load_manifests(GATEWAY_API_DIR)
JOB_GATEWAY_SELECTOR = environment(JOB_FILE)["GATEWAY_SELECTOR"]  # istioctl's, as istio/rollout/ ships it
SCHEMAS = crd_schemas.validators()


def test_manifests_match_the_upstream_crd_schemas():
    fixtures = ROOT / "tests" / "fixtures" / "gateway-api"
    files = [*sorted(GATEWAY_API_DIR.glob("*.yaml")), *sorted(fixtures.glob("*.yaml")),
             *sorted((fixtures / "header-mode").glob("*.yaml"))]
    assert crd_schemas.problems(files, SCHEMAS) == []


UNEXPECTED = "Additional properties are not allowed"


@pytest.mark.parametrize("file, old, new, reported", [
    ("httproutes.yaml", "    backendRefs:\n", "    backendRef:\n",
     f"at $.spec.rules[0]: {UNEXPECTED} ('backendRef' was unexpected)"),
    ("httproutes.yaml", "type: ResponseHeaderModifier", "type: ResponseHeaderRewriter",
     "at $.spec.rules[0].filters[0].type: 'ResponseHeaderRewriter' is not one of"),
    ("gateway.yaml", "protocol: HTTPS", "protocol: 443",
     "at $.spec.listeners[0].protocol: 443 is not of type 'string'"),
    ("gateway.yaml", "mode: Terminate", "mode: Terminated", "at $.spec.listeners[0].tls.mode: 'Terminated' is not one of"),
    ("gateway.yaml", "gateway.networking.k8s.io/v1\n", "gateway.networking.k8s.io/v1alpha2\n",
     "no schema for apiVersion 'gateway.networking.k8s.io/v1alpha2' kind 'Gateway'"),
    ("wasmplugin.yaml", "  targetRefs:\n", "  targetRef:\n",
     "at $.spec.targetRef: [{'group': 'gateway.networking.k8s.io', 'kind': 'Gateway', 'name': 'models-gateway'}] is not of type 'object'"),
], ids=["unknown-field", "not-in-enum", "wrong-type", "tls-mode", "unserved-version", "target-ref-list"])
def test_the_schema_check_reports_a_broken_manifest(tmp_path, file, old, new, reported):
    text = (GATEWAY_API_DIR / file).read_text()
    assert old in text, f"{file} no longer contains {old!r}: update the test"
    (tmp_path / file).write_text(text.replace(old, new, 1))
    found = crd_schemas.problems([tmp_path / file], SCHEMAS)
    assert any(reported in line for line in found), found


def test_kubectl_kustomize_renders_every_manifest():
    kustomization = (GATEWAY_API_DIR / "Kustomization").read_text()
    for path in GATEWAY_API_DIR.glob("*.yaml"):
        assert f"- {path.name}" in kustomization
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make setup` installs it (Debian package kubernetes-client)"
    rendered = subprocess.run([kubectl, "kustomize", str(GATEWAY_API_DIR)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered.stdout))
    assert kinds == sorted((d["kind"], d["metadata"]["name"]) for d in MANIFESTS)


def test_kustomize_refuses_the_parent_directorys_file_so_the_inferenceservices_are_a_copy(tmp_path):
    # Why inferenceservices.yaml and alerts.yaml are copied rather than listed as ../NAME.
    (tmp_path / "Kustomization").write_text("resources:\n- ../inferenceservices.yaml\n")
    shutil.copy(ISTIO_DIR / "inferenceservices.yaml", tmp_path.parent / "inferenceservices.yaml")
    rendered = subprocess.run([shutil.which("kubectl") or "kubectl", "kustomize", str(tmp_path)], capture_output=True,
                              text=True, timeout=60)
    assert rendered.returncode != 0 and "is not in or below" in rendered.stderr
    for name in ("inferenceservices.yaml", "alerts.yaml"):
        assert (GATEWAY_API_DIR / name).read_bytes() == (ISTIO_DIR / name).read_bytes(), \
            f"copy istio/{name} to istio/gateway-api/"


def kustomized(directory: pathlib.Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make setup` installs it (Debian package kubernetes-client)"
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def test_the_rendered_alerts_judge_the_gateway_istio_deploys_for_the_gateway():
    """The Kustomization points canary_split:gateway, the alerts' one gateway rule, at the
    Deployment Istio runs for the shipped Gateway (tests/alerts/gateway_api_shipped.yaml runs them)."""
    (gateway,) = of_group(MANIFESTS, "Gateway")
    (rule,) = [d for d in kustomized(GATEWAY_API_DIR) if d["kind"] == "PrometheusRule"]
    (gateway_rule,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("record") == "canary_split:gateway"]
    assert gateway_rule["labels"] == {"source_workload": deployment_name(gateway),
                                      "source_workload_namespace": gateway["metadata"]["namespace"]}


def test_the_deployment_name_follows_istios_name_override():
    (gateway,) = of_group(MANIFESTS, "Gateway")
    assert "gateway.istio.io/name-override" not in gateway["metadata"].get("annotations", {})
    overridden = copy.deepcopy(gateway)
    overridden["metadata"]["annotations"] = {"gateway.istio.io/name-override": "models-ingress"}
    assert deployment_name(overridden) == "models-ingress"
    overridden["metadata"]["annotations"]["gateway.istio.io/name-override"] = ""  # GetOrDefault: empty is unset
    assert deployment_name(overridden) == "models-gateway-istio"


def test_the_plugin_is_istios_with_target_refs_instead_of_a_selector():
    ours, theirs = copy.deepcopy(wasm_plugin(MANIFESTS)["spec"]), copy.deepcopy(wasm_plugin(load_manifests())["spec"])
    assert "selector" not in ours and theirs.pop("selector")
    ours.pop("targetRefs")
    # Istio's gateway listens on target ports (8443); this one on the listener's own (443).
    assert ours.pop("match") == [{"ports": [{"number": 443}]}]
    theirs.pop("match")
    assert ours == theirs


def attachment_problems(manifests: list[dict]) -> list[str]:
    """The WasmPlugin names the Gateway in its targetRefs, from the Gateway's namespace, and has no
    selector (which matches no pod of a Gateway API gateway)."""
    plugin = wasm_plugin(manifests)
    problems = []
    if "selector" in plugin["spec"]:
        problems.append("the WasmPlugin has a selector")
    if [f'{g["metadata"]["namespace"]}/{g["metadata"]["name"]}' for g in targeted_gateways(manifests)] != [
            f'{g["metadata"]["namespace"]}/{g["metadata"]["name"]}' for g in of_group(manifests, "Gateway")]:
        problems.append("the WasmPlugin's targetRefs do not attach it to the Gateway (name, group, kind, namespace)")
    return problems


def host_matches(pattern: str, host: str) -> bool:
    return host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern


def routing_problems(manifests: list[dict]) -> list[str]:
    """Every host the filter names has an HTTPRoute attached to the targeted Gateway, on a listener
    whose hostname admits it."""
    problems = []
    gateways = targeted_gateways(manifests)
    for route in wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"]:
        named = [route["host"]] + [route[v]["host"].split(":")[0] for v in ("primary", "canary") if "host" in route[v]]
        for host in named:
            attached = [r for r in of_group(manifests, "HTTPRoute") if host in r["spec"].get("hostnames", [])
                        and any(p["name"] == g["metadata"]["name"] and p.get("namespace", r["metadata"]["namespace"])
                                == g["metadata"]["namespace"] for p in r["spec"]["parentRefs"] for g in gateways)]
            if not attached:
                problems.append(f"{host}: no HTTPRoute on the Gateway the WasmPlugin targets")
            if not any(host_matches(listener.get("hostname", "*"), host) or "hostname" not in listener
                       for g in gateways for listener in g["spec"]["listeners"]):
                problems.append(f"{host}: no listener admits it")
    return problems


def weights(node, path="") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in ([f"{path}.{k}"] if k == "weight" else []) + weights(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in weights(v, f"{path}[{i}]")]
    return []


def weight_problems(manifests: list[dict]) -> list[str]:
    return [f'{r["metadata"]["name"]}{p}' for r in of_group(manifests, "HTTPRoute") for p in weights(r["spec"])]


def variant_of_backend(manifests: list[dict]) -> dict[tuple[str, str], str]:
    """(namespace, Service) of each release's predictor, as KServe names it, and its variant."""
    return {(i["metadata"]["namespace"], f'{i["metadata"]["name"]}-predictor'): i["metadata"]["labels"]["canary-split.dev/variant"]
            for i in of_kind(manifests, "InferenceService")}


def release_problems(manifests: list[dict]) -> list[str]:
    """Each release host's HTTPRoute sends everything to that release, every rule to a release
    names it in x-release, and every release is a backend."""
    problems = []
    variants = variant_of_backend(manifests)
    plugin_route = wasm_plugin(manifests)["spec"]["pluginConfig"]["routes"][0]
    release_hosts = {plugin_route[v]["host"]: v for v in ("primary", "canary") if "host" in plugin_route[v]}
    backends = set()
    for route in of_group(manifests, "HTTPRoute"):
        namespace = route["metadata"]["namespace"]
        for rule in route["spec"]["rules"]:
            name = f'{route["metadata"]["name"]}.{rule.get("name")}'
            served = {variants.get((namespace, b["name"])) for b in rule["backendRefs"]}
            backends |= {(namespace, b["name"]) for b in rule["backendRefs"]}
            for host in route["spec"]["hostnames"]:
                if host in release_hosts and served != {release_hosts[host]}:
                    problems.append(f"{name}: the {release_hosts[host]} host reaches {sorted(map(str, served))}")
            named = {h["value"] for f in rule.get("filters", []) if f["type"] == "ResponseHeaderModifier"
                     for h in f["responseHeaderModifier"].get("set", []) if h["name"].lower() == "x-release"}
            if len(served) == 1 and None not in served and named != served:
                problems.append(f"{name}: x-release is {sorted(named)}, routes to the {served.pop()}")
    problems += [f"{service}: no HTTPRoute sends to it" for service in variants if service not in backends]
    return problems


@pytest.mark.parametrize("check", [attachment_problems, routing_problems, weight_problems, release_problems])
def test_shipped_manifests_agree(check):
    assert check(MANIFESTS) == []


def route_named(manifests, name):
    (route,) = [r for r in of_group(manifests, "HTTPRoute") if r["metadata"]["name"] == name]
    return route


def edited(edit) -> list[dict]:
    manifests = copy.deepcopy(MANIFESTS)
    edit(manifests)
    return manifests


@pytest.mark.parametrize("check, edit", [
    (attachment_problems, lambda m: wasm_plugin(m)["metadata"].update(namespace="istio-system")),
    (attachment_problems, lambda m: wasm_plugin(m)["spec"]["targetRefs"][0].update(name="istio-ingressgateway")),
    (attachment_problems, lambda m: wasm_plugin(m)["spec"].update(selector={"matchLabels": {"istio": "ingressgateway"}})),
    (routing_problems, lambda m: m.remove(route_named(m, "sklearn-canary"))),
    (routing_problems, lambda m: route_named(m, "sklearn")["spec"]["parentRefs"][0].update(name="other-gateway")),
    (routing_problems, lambda m: of_group(m, "Gateway")[0]["spec"]["listeners"][0].update(hostname="*.example.org")),
    (weight_problems, lambda m: route_named(m, "sklearn")["spec"]["rules"][0]["backendRefs"][0].update(weight=90)),
    (release_problems, lambda m: route_named(m, "sklearn-canary")["spec"]["rules"][0]["backendRefs"][0].update(
        name="sklearn-primary-predictor")),
    (release_problems, lambda m: route_named(m, "sklearn-canary")["spec"]["rules"][0].pop("filters")),
    (release_problems, lambda m: of_kind(m, "InferenceService")[1]["metadata"].update(name="sklearn-beta")),
], ids=["plugin-in-other-namespace", "plugin-targets-other-gateway", "plugin-with-selector", "release-route-missing",
        "public-route-on-other-gateway", "listener-admits-other-hosts", "weighted-backend", "canary-host-to-primary",
        "release-header-missing", "release-not-routed"])
def test_each_cross_check_catches_its_problem(check, edit):
    assert check(edited(edit)) != []


def test_the_check_finds_the_listener_that_serves_the_public_host():
    result = subprocess.run([str(CLI), "check", *map(str, sorted(GATEWAY_API_DIR.glob("*.yaml")))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ("routes[0]: authority mode: every route table that serves sklearn-predictor-models.example.com serves its "
            "release hosts too (listener https of Gateway models/models-gateway)") in result.stdout


def test_the_check_refuses_a_plugin_that_targets_no_given_gateway(tmp_path):
    plugin = copy.deepcopy(wasm_plugin(MANIFESTS))
    plugin["metadata"]["namespace"] = "istio-system"  # Istio skips a targetRefs policy from another namespace
    (tmp_path / "wasmplugin.yaml").write_text(json.dumps(plugin))
    files = [p for p in sorted(GATEWAY_API_DIR.glob("*.yaml")) if p.name != "wasmplugin.yaml"] + [tmp_path / "wasmplugin.yaml"]
    result = subprocess.run([str(CLI), "check", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "authority mode: none of the Gateways given serves sklearn-predictor-models.example.com" in result.stderr


def test_the_readme_creates_the_listeners_certificate_where_the_gateway_reads_it():
    """A certificateRef without a namespace is a Secret in the Gateway's namespace: the README's
    step creates it there, under the name the listener gives."""
    (gateway,) = of_group(MANIFESTS, "Gateway")
    readme = (ROOT / "README.md").read_text()
    refs = [ref for listener in gateway["spec"]["listeners"] for ref in listener.get("tls", {}).get("certificateRefs", [])]
    assert refs
    for ref in refs:
        assert ref.get("kind", "Secret") == "Secret" and ref.get("group", "") == ""
        namespace = ref.get("namespace", gateway["metadata"]["namespace"])
        assert f'kubectl -n {namespace} create secret tls {ref["name"]} ' in readme
    assert f'kubectl -n {gateway["metadata"]["namespace"]} wait --for=create deployment/{deployment_name(gateway)}' in readme


def test_the_gateways_deployment_is_named_as_istio_names_it():
    """The README's commands patch the Deployment Istio runs for the Gateway, in its namespace."""
    (gateway,) = of_group(MANIFESTS, "Gateway")
    assert deployment_name(gateway) == "models-gateway-istio"
    readme = (ROOT / "README.md").read_text()
    for patch in ("ingressgateway-stats.yaml", "ingressgateway-pin-keys.yaml"):
        assert (f'kubectl -n {gateway["metadata"]["namespace"]} patch deployment {deployment_name(gateway)} '
                f"--patch-file istio/patches/{patch}") in readme


def json_patched(document: dict, operations: list[dict]) -> dict:
    """`kubectl patch --type=json` with test and replace operations: a failed test refuses the whole patch."""
    patched = copy.deepcopy(document)
    for operation in operations:
        *parents, last = operation["path"].lstrip("/").split("/")
        node = patched
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key = int(last) if isinstance(node, list) else last
        if operation["op"] == "test":
            assert node[key] == operation["value"], f"test failed at {operation['path']}"
        elif operation["op"] == "replace":
            node[key] = operation["value"]
        else:
            raise AssertionError(f"unexpected operation {operation['op']}")
    return patched


ROLLOUT_DIR = GATEWAY_API_DIR / "rollout"


def rollout_job_file() -> dict[str, dict]:
    """istio/gateway-api/rollout/ as `kubectl kustomize` renders it, by kind, as test_rollout_job reads job.yaml."""
    return {doc["kind"]: doc for doc in kustomized(ROLLOUT_DIR)}


def gateway_selector(gateway: dict) -> str:
    return (f'reporter="source",source_workload="{deployment_name(gateway)}",'
            f'source_workload_namespace="{gateway["metadata"]["namespace"]}"')


def rollout_overlay_problems(job_file: dict[str, dict]) -> list[str]:
    """The overlay is istio/rollout/'s Job, moved beside the targetRefs WasmPlugin and judging the
    Gateway's Deployment: everything else as istio/rollout/ ships it."""
    problems = []
    plugin = wasm_plugin(MANIFESTS)
    (gateway,) = of_group(MANIFESTS, "Gateway")
    fetch, rollout = job_commands(job_file)
    if fetch[3] != plugin["metadata"]["name"] or flag(fetch, "--namespace") != plugin["metadata"]["namespace"]:
        problems.append(f"fetches WasmPlugin {flag(fetch, '--namespace')}/{fetch[3]}, not the Gateway API one")
    if "--selector" not in rollout or flag(rollout, "--selector") != gateway_selector(gateway):
        problems.append("does not judge the Gateway's Deployment (--selector)")
    namespace = plugin["metadata"]["namespace"]
    for kind, document in job_file.items():
        if document["metadata"].get("namespace") != namespace:
            problems.append(f"{kind} is not in {namespace}")
    if [s.get("namespace") for s in job_file["RoleBinding"]["subjects"]] != [namespace]:
        problems.append(f"the RoleBinding's subject is not the ServiceAccount in {namespace}")
    # The rest is istio/rollout/'s, unchanged: moved to the namespace, with the selector set.
    base = copy.deepcopy(JOB_FILE)
    for document in base.values():
        document["metadata"]["namespace"] = namespace
    for subject in base["RoleBinding"]["subjects"]:
        subject["namespace"] = namespace
    ours = copy.deepcopy(job_file)
    for file in (base, ours):
        (container,) = file["Job"]["spec"]["template"]["spec"]["containers"]
        container["env"] = sorted((v for v in container["env"] if v["name"] != "GATEWAY_SELECTOR"), key=lambda v: v["name"])
    if ours != base:
        problems.append("differs from istio/rollout/ in more than its namespace and gateway")
    return problems


def test_the_rollout_overlay_renders_valid_manifests():
    rendered = kustomized(ROLLOUT_DIR)
    assert sorted(d["kind"] for d in rendered) == sorted(JOB_FILE)
    for version in KUBERNETES_VERSIONS:
        for document in rendered:
            kubernetes_validate.validate(document, version, strict=True)


def test_the_rollout_overlay_is_istios_job_beside_the_target_refs_plugin():
    assert rollout_overlay_problems(rollout_job_file()) == []


def edited_job(edit) -> dict[str, dict]:
    job_file = rollout_job_file()
    edit(job_file)
    return job_file


def job_container(job_file: dict) -> dict:
    return job_file["Job"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("edit", [
    lambda f: job_container(f)["env"].__setitem__(0, {"name": "GATEWAY_SELECTOR", "value": JOB_GATEWAY_SELECTOR}),
    lambda f: f["Job"]["metadata"].update(namespace="istio-system"),
    lambda f: f["RoleBinding"]["subjects"][0].update(namespace="istio-system"),
    lambda f: f["Job"]["spec"].update(backoffLimit=3),
], ids=["istioctls-gateway", "job-in-istio-system", "subject-in-istio-system", "other-change"])
def test_each_overlay_check_catches_its_problem(edit):
    assert rollout_overlay_problems(edited_job(edit)) != []


def test_the_rollout_job_and_rollout_kubectl_work_on_the_target_refs_plugin(tmp_path):
    """The overlay's command line against the targetRefs WasmPlugin: each printed `kubectl patch`
    applies to it and leaves it valid, still attached by targetRefs."""
    plugin = wasm_plugin(MANIFESTS)
    job_file = rollout_job_file()
    _, rollout = job_commands(job_file)
    variants = variant_of_backend(MANIFESTS)
    for release in ("--primary", "--canary"):
        service, namespace = flag(rollout, release).split(".")[:2]
        assert (namespace, service) in variants, f"{release} is not a release's predictor Service"
    (gateway,) = of_group(MANIFESTS, "Gateway")
    assert f"`'{gateway_selector(gateway)}'`" in (ROOT / "README.md").read_text()  # for status
    args = [arg for arg in rollout[3:] if arg != "--run"]
    args[args.index("--config") + 1] = str(GATEWAY_API_DIR / "wasmplugin.yaml")
    result = subprocess.run([str(CLI), "rollout", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line.startswith("kubectl patch")]
    assert len(commands) == len(flag(rollout, "--steps").split(",")) + 1  # and the rollback
    weights_applied = []
    for command in commands:
        assert command[:4] == ["kubectl", "patch", "wasmplugin", plugin["metadata"]["name"]]
        assert flag(command, "--namespace") == plugin["metadata"]["namespace"] and "--type=json" in command
        patched = json_patched(plugin, json.loads(flag(command, "-p")))
        assert patched["spec"]["targetRefs"] == plugin["spec"]["targetRefs"]
        path = tmp_path / "patched.yaml"
        path.write_text(yaml.safe_dump(patched))
        assert crd_schemas.problems([path], SCHEMAS) == []
        weights_applied.append(patched["spec"]["pluginConfig"]["routes"][0]["canary_weight"])
    assert weights_applied == [int(step) for step in flag(rollout, "--steps").split(",")] + [0]
