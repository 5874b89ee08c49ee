"""istio/rollout/admission-policy.yaml lets the rollout Job's service account change only
`spec.pluginConfig.routes[*].canary_weight` of the WasmPlugin, and the Job's pod meets Pod Security
"restricted".

The policy's CEL expressions are evaluated with cel-python (PyPI `cel-python`, a CEL
implementation of its own) on the objects as JSON, as the API server evaluates a
ValidatingAdmissionPolicy on the unstructured object; the admission steps around them (match
conditions, variables, then validations, an evaluation error refusing under `failurePolicy: Fail`)
follow the API server's `k8s.io/apiserver/pkg/admission/plugin/policy/validating` as documented
for admissionregistration.k8s.io/v1. What this cannot check: Kubernetes' CEL extension libraries
and type checking against the CRD's schema (the expressions use neither: only standard macros,
`in`, `size` and equality), its cost budget, and heterogeneous number equality (cel-go has
`1 == 1.0`, cel-python refuses it: the expressions only compare values taken from the same field).
The manifests are validated against Kubernetes' own schemas (PyPI `kubernetes-validate`)."""

import copy
import json
import pathlib
import shlex
import subprocess

import celpy
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
POLICY_FILE = ROOT / "istio" / "rollout" / "admission-policy.yaml"
JOB_FILE = ROOT / "istio" / "rollout" / "job.yaml"
CLI = ROOT / "target" / "debug" / "canary-split"
ROLLOUT_USER = "system:serviceaccount:istio-system:canary-split-rollout"
# The oldest Kubernetes with admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy, and the newest known.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]

DOCUMENTS = {doc["kind"]: doc for doc in yaml.safe_load_all(POLICY_FILE.read_text())}
POLICY, BINDING = DOCUMENTS["ValidatingAdmissionPolicy"], DOCUMENTS["ValidatingAdmissionPolicyBinding"]
PLUGIN = yaml.safe_load((ROOT / "istio" / "wasmplugin.yaml").read_text())
GATEWAY_API_PLUGIN = yaml.safe_load((ROOT / "istio" / "gateway-api" / "wasmplugin.yaml").read_text())
JOB_DOCUMENTS = {doc["kind"]: doc for doc in yaml.safe_load_all(JOB_FILE.read_text())}

ENVIRONMENT = celpy.Environment()


def evaluate(expression: str, activation: dict):
    program = ENVIRONMENT.program(ENVIRONMENT.compile(expression))
    return program.evaluate({name: celpy.json_to_cel(value) for name, value in activation.items()})


def admit(old: dict, new: dict, user: str | None = None, policy: dict = POLICY) -> tuple[bool, list[str]]:
    """An UPDATE of the WasmPlugin `old` to `new` by `user`, as the API server runs the policy: the
    match conditions, then the variables, then every validation; an error refuses (failurePolicy
    Fail). Returns whether it is admitted, and the messages of the validations that refused it."""
    assert policy["spec"]["failurePolicy"] == "Fail"
    user = user or f"system:serviceaccount:{new['metadata']['namespace']}:canary-split-rollout"
    request = {"operation": "UPDATE", "userInfo": {"username": user},
               "namespace": new["metadata"]["namespace"], "name": new["metadata"]["name"]}
    activation = {"object": new, "oldObject": old, "request": request}
    for condition in policy["spec"].get("matchConditions", []):
        if not evaluate(condition["expression"], activation):
            return True, []
    variables = {}
    for variable in policy["spec"].get("variables", []):
        try:
            variables[variable["name"]] = json.loads(json.dumps(
                evaluate(variable["expression"], {**activation, "variables": variables}), default=_plain))
        except celpy.CELEvalError as error:
            return False, [f"variables.{variable['name']}: {error}"]
    refusals = []
    for validation in policy["spec"]["validations"]:
        try:
            passed = evaluate(validation["expression"], {**activation, "variables": variables})
        except celpy.CELEvalError as error:
            passed, validation = False, {"message": f"error: {error}"}
        if not passed:
            refusals.append(validation["message"])
    return not refusals, refusals


def _plain(value):
    """cel-python's values back into JSON for the next activation."""
    if isinstance(value, celpy.celtypes.MapType):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, celpy.celtypes.ListType):
        return list(value)
    if isinstance(value, celpy.celtypes.BoolType):
        return bool(value)
    if isinstance(value, celpy.celtypes.IntType):
        return int(value)
    if isinstance(value, celpy.celtypes.DoubleType):
        return float(value)
    return str(value)


def changed(edit, plugin: dict = PLUGIN) -> dict:
    plugin = copy.deepcopy(plugin)
    edit(plugin)
    return plugin


def route(plugin: dict, index: int = 0) -> dict:
    return plugin["spec"]["pluginConfig"]["routes"][index]


ALLOWED = {
    "weight-up": lambda p: route(p).update(canary_weight=25),
    "weight-fractional": lambda p: route(p).update(canary_weight=12.5),
    "weight-back-to-zero": lambda p: route(p).update(canary_weight=0),
    "nothing": lambda p: None,
}
REFUSED = {
    "module-url": lambda p: p["spec"].update(url="oci://attacker.example.com/evil:1"),
    "module-sha256": lambda p: p["spec"].update(sha256="0" * 64),
    "attachment-dropped": lambda p: p["spec"].pop("selector" if "selector" in p["spec"] else "targetRefs"),
    "attachment-added": lambda p: p["spec"].update(targetRefs=[{"group": "", "kind": "Service", "name": "x"}])
    if "selector" in p["spec"] else p["spec"].update(selector={"matchLabels": {"app": "x"}}),
    "vm-env-added": lambda p: p["spec"]["vmConfig"]["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": "HOST"}),
    "vm-config-dropped": lambda p: p["spec"].pop("vmConfig"),
    "fail-strategy": lambda p: p["spec"].update(failStrategy="FAIL_CLOSE"),
    "phase": lambda p: p["spec"].update(phase="STATS"),
    "new-spec-field": lambda p: p["spec"].update(imagePullSecret="attacker-registry"),
    "decision-header": lambda p: p["spec"]["pluginConfig"].update(decision_header="x-other"),
    "config-field-added": lambda p: p["spec"]["pluginConfig"].update(pin_keys_env="OTHER_KEYS"),
    "route-host": lambda p: route(p).update(host="other.example.com"),
    "route-canary-target": lambda p: route(p).update(canary={"host": "evil.example.com"}),
    "route-pin-added": lambda p: route(p)["pin"].append({"header": "x-me", "value": "1", "to": "canary"}),
    "route-pins-dropped": lambda p: route(p).pop("pin"),
    "route-field-added": lambda p: route(p).update(release_hosts="open"),
    "route-weight-and-sticky": lambda p: route(p).update(canary_weight=50, sticky={"client_ip": True}),
    "route-added": lambda p: p["spec"]["pluginConfig"]["routes"].append(
        {"host": "new.example.com", "primary": {}, "canary": {}, "canary_weight": 100}),
    "routes-emptied": lambda p: p["spec"]["pluginConfig"].update(routes=[]),
    "label-added": lambda p: p["metadata"].setdefault("labels", {}).update(owner="me"),
    "annotation-added": lambda p: p["metadata"].setdefault("annotations", {}).update(note="x"),
    "finalizer-added": lambda p: p["metadata"].setdefault("finalizers", []).append("example.com/hold"),
}


# The plugin istio/ deploys (a selector, in istio-system) and the Gateway API one (targetRefs, in
# the Gateway's namespace, where its rollout Job then runs).
PLUGINS = {"istio": PLUGIN, "gateway-api": GATEWAY_API_PLUGIN}


@pytest.mark.parametrize("plugin", list(PLUGINS.values()), ids=list(PLUGINS))
@pytest.mark.parametrize("edit", list(ALLOWED.values()), ids=list(ALLOWED))
def test_the_rollout_may_change_the_weight(edit, plugin):
    assert admit(plugin, changed(edit, plugin)) == (True, [])


@pytest.mark.parametrize("plugin", list(PLUGINS.values()), ids=list(PLUGINS))
@pytest.mark.parametrize("edit", list(REFUSED.values()), ids=list(REFUSED))
def test_the_rollout_may_change_nothing_else(edit, plugin):
    admitted, messages = admit(plugin, changed(edit, plugin))
    assert not admitted and messages


@pytest.mark.parametrize("user", ["system:serviceaccount:istio-system:istiod", "system:serviceaccount:models:default",
                                  "canary-split-rollout", "admin"])
@pytest.mark.parametrize("edit", list(REFUSED.values()), ids=list(REFUSED))
def test_other_users_are_left_to_rbac(edit, user):
    assert admit(PLUGIN, changed(edit), user=user) == (True, [])


def test_two_routes_each_keep_all_but_their_weight():
    two = changed(lambda p: p["spec"]["pluginConfig"]["routes"].append(
        {**copy.deepcopy(route(p)), "host": "b.example.com"}))
    assert admit(two, changed_from(two, lambda p: route(p, 1).update(canary_weight=40)))[0]
    # Route 0 takes route 1's host: the same set of hosts, but each route changed.
    swapped = changed_from(two, lambda p: (route(p, 0).update(host="b.example.com"),
                                           route(p, 1).update(host=route(two, 0)["host"], canary_weight=40)))
    assert admit(two, swapped)[0], "a reorder that keeps each route whole is harmless"
    duplicated = changed_from(two, lambda p: p["spec"]["pluginConfig"].update(routes=[route(p, 0), route(p, 0)]))
    assert not admit(two, duplicated)[0]


def changed_from(plugin: dict, edit) -> dict:
    plugin = copy.deepcopy(plugin)
    edit(plugin)
    return plugin


def apply_json_patch(document: dict, patch: list[dict]) -> dict:
    """The `test` and `replace` operations of RFC 6902, which the CLI's patch uses."""
    document = copy.deepcopy(document)
    for operation in patch:
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
        target = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key = int(last) if isinstance(target, list) else last
        if operation["op"] == "test":
            assert target[key] == operation["value"], operation
        else:
            assert operation["op"] == "replace", operation
            target[key] = operation["value"]
    return document


def test_the_patches_the_cli_sends_are_admitted(tmp_path):
    plugin_file = tmp_path / "wasmplugin.yaml"
    plugin_file.write_text(yaml.safe_dump(PLUGIN))
    plan = subprocess.run([str(CLI), "rollout", "--config", str(plugin_file), "--kubectl",
                           "--steps", "10,25,50,100", "--interval", "5m"],
                          capture_output=True, text=True, check=True).stdout
    commands = [shlex.split(line) for line in plan.splitlines() if line.startswith("kubectl patch")]
    assert len(commands) == 5  # four steps and the rollback
    for command in commands:
        patched = apply_json_patch(PLUGIN, json.loads(command[command.index("-p") + 1]))
        assert admit(PLUGIN, patched) == (True, []), command


def test_the_binding_enforces_the_policy_everywhere():
    spec = BINDING["spec"]
    assert spec["policyName"] == POLICY["metadata"]["name"]
    assert spec["validationActions"] == ["Deny"]
    assert "matchResources" not in spec  # every namespace: the Gateway API plugin lives beside its Gateway
    (rule,) = POLICY["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (
        [PLUGIN["apiVersion"].split("/")[0]], ["wasmplugins"], ["UPDATE"])
    account = JOB_DOCUMENTS["ServiceAccount"]["metadata"]
    assert f"system:serviceaccount:{account['namespace']}:{account['name']}" == ROLLOUT_USER


def test_a_policy_without_its_route_check_would_let_a_host_change():
    """The check that can fail: drop the routes validation and a host change gets through."""
    weakened = copy.deepcopy(POLICY)
    weakened["spec"]["validations"] = [v for v in weakened["spec"]["validations"] if "newRoutes" not in v["expression"]]
    assert admit(PLUGIN, changed(REFUSED["route-host"]), policy=weakened)[0]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", [POLICY_FILE, JOB_FILE], ids=lambda p: p.name)
def test_the_manifests_match_kubernetes_schemas(path, version):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, version, strict=True)


# ---------------------------------------------------------------------------------------------
# Pod Security "restricted", as k8s.io/pod-security-admission checks it (kubernetes/kubernetes,
# staging/src/k8s.io/pod-security-admission/policy/check_*.go): the checks a Job's pod can fail.

RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    found = []
    pod_context = pod.get("securityContext", {})
    containers = pod.get("initContainers", []) + pod["containers"]
    for key in ("hostNetwork", "hostPID", "hostIPC"):  # check_hostNamespaces.go
        if pod.get(key):
            found.append(key)
    for volume in pod.get("volumes", []):  # check_restrictedVolumes.go
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    if pod_context.get("runAsUser") == 0:  # check_runAsUser.go
        found.append("pod runAsUser 0")
    pod_seccomp = pod_context.get("seccompProfile", {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        found.append(f"pod seccompProfile {pod_seccomp}")
    for container in containers:
        name, context = container["name"], container.get("securityContext", {})
        if context.get("privileged"):  # check_privileged.go
            found.append(f"{name}: privileged")
        if any(port.get("hostPort") for port in container.get("ports", [])):  # check_hostPorts.go
            found.append(f"{name}: hostPort")
        if context.get("allowPrivilegeEscalation") is not False:  # check_allowPrivilegeEscalation.go
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities", {})  # check_capabilities_restricted.go
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities.drop lacks ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        # check_runAsNonRoot.go: true on the pod or on every container, false nowhere.
        if context.get("runAsNonRoot") is False or (
                context.get("runAsNonRoot") is not True and pod_context.get("runAsNonRoot") is not True):
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        # check_seccompProfile_restricted.go: RuntimeDefault or Localhost, on the pod or the container.
        seccomp = context.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        if context.get("procMount", "Default") != "Default":  # check_procMount_restricted.go
            found.append(f"{name}: procMount")
    return found


def job_pod(edit=lambda pod: None) -> dict:
    pod = copy.deepcopy(JOB_DOCUMENTS["Job"]["spec"]["template"]["spec"])
    edit(pod)
    return pod


def test_the_jobs_pod_meets_pod_security_restricted():
    assert restricted_violations(job_pod()) == []


@pytest.mark.parametrize("edit", [
    lambda pod: pod["containers"][0]["securityContext"].pop("capabilities"),
    lambda pod: pod["securityContext"].pop("seccompProfile"),
    lambda pod: pod["securityContext"].update(seccompProfile={"type": "Unconfined"}),
    lambda pod: (pod["securityContext"].pop("runAsNonRoot"), pod["containers"][0]["securityContext"].pop("runAsNonRoot")),
    lambda pod: pod["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
    lambda pod: pod["containers"][0]["securityContext"].update(capabilities={"drop": ["ALL"], "add": ["NET_ADMIN"]}),
    lambda pod: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    lambda pod: pod.update(hostNetwork=True),
], ids=["no-drop-all", "no-seccomp", "unconfined", "may-run-as-root", "escalation", "net-admin", "host-path",
        "host-network"])
def test_each_restricted_check_catches_its_problem(edit):
    assert restricted_violations(job_pod(edit)) != []
