"""istio/rollout/job.yaml, the example rollout Job, agrees with the CLI and with istio/: its
command line is one `canary-split rollout` accepts, it patches the WasmPlugin istio/ deploys,
judges the two releases the VirtualServices route to, and may do no more than that."""

import pathlib
import re
import shlex
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent / "e2e"))

from istio_routes import CLUSTER_DOMAIN, destination_hosts  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
ISTIO = ROOT / "istio"
CLI = ROOT / "target" / "debug" / "canary-split"


def documents(path: pathlib.Path) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text())}


JOB_FILE = documents(ISTIO / "rollout" / "job.yaml")
PLUGIN = documents(ISTIO / "wasmplugin.yaml")["WasmPlugin"]


def expand(text: str, environment: dict[str, str]) -> str:
    """Kubernetes' expansion of a container's command and args (`third_party/forked/golang/expansion`
    in kubernetes/kubernetes, documented with `Container.args`): `$(NAME)` becomes the value of
    the container's variable NAME, a reference to an unset one stays as written, `$$` is `$`."""
    def replace(reference: re.Match) -> str:
        if reference[0] == "$$":
            return "$"
        return environment.get(reference[1], reference[0])
    return re.sub(r"\$\$|\$\(([^)]*)\)", replace, text)


def environment(job_file: dict) -> dict[str, str]:
    """The container's variables: plain values, and the pod's namespace through the downward API
    (the Job's own: a Job's pods are created in its namespace)."""
    (container,) = job_file["Job"]["spec"]["template"]["spec"]["containers"]
    found = {}
    for variable in container.get("env", []):
        if "value" in variable:
            found[variable["name"]] = variable["value"]
        elif variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            found[variable["name"]] = job_file["Job"]["metadata"]["namespace"]
    return found


def job_commands(job_file: dict) -> tuple[list[str], list[str]]:
    """The Job's shell script as sh runs it, once Kubernetes expanded the container's variables:
    the `kubectl get` that fetches the plugin, then the rollout."""
    (container,) = job_file["Job"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["sh", "-c"]
    (script,) = container["args"]
    fetch, rollout = (shlex.split(part) for part in expand(script, environment(job_file)).split("&&"))
    return fetch, rollout


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def problems(job_file: dict) -> list[str]:
    found = []
    fetch, rollout = job_commands(job_file)
    name, namespace = PLUGIN["metadata"]["name"], PLUGIN["metadata"]["namespace"]
    config = flag(rollout, "--config")
    if fetch[:3] != ["kubectl", "get", "wasmplugin"] or fetch[3] != name or flag(fetch, "--namespace") != namespace:
        found.append(f"fetches {fetch[2:5]}, not WasmPlugin {namespace}/{name}")
    if fetch[-2:] != [">", config]:
        found.append(f"fetches the plugin to {fetch[-1]}, but the rollout reads {config}")
    if rollout[:3] != ["exec", "canary-split", "rollout"] or "--kubectl" not in rollout or "--run" not in rollout:
        found.append("does not run `canary-split rollout --kubectl --run`")

    if any("$(" in arg for arg in fetch + rollout):
        found.append("refers to a variable the container does not set")
    # It judges the gateway the alerts judge (their canary_split:gateway rule).
    (gateway,) = [rule["labels"] for group in yaml.safe_load((ISTIO / "alerts.yaml").read_text())["spec"]["groups"]
                  for rule in group["rules"] if rule.get("record") == "canary_split:gateway"]
    selector = ",".join(f'{name}="{value}"' for name, value in [("reporter", "source"), *gateway.items()])
    if "--selector" not in rollout or flag(rollout, "--selector") != selector:
        found.append(f"judges another gateway than the alerts' ({selector})")
    # The VirtualServices' short names as Istio resolves them, in the domain the Job names.
    domain = environment(job_file).get("CLUSTER_DOMAIN", CLUSTER_DOMAIN)
    destinations = {host for vs in yaml.safe_load_all((ISTIO / "virtualservices.yaml").read_text())
                    for host in destination_hosts(vs, domain)}
    for release in ("--primary", "--canary"):
        if flag(rollout, release) not in destinations:
            found.append(f"{release} {flag(rollout, release)} is not a destination of the VirtualServices")

    job, role, binding = job_file["Job"], job_file["Role"], job_file["RoleBinding"]
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    if job_file["ServiceAccount"]["metadata"]["name"] != account:
        found.append(f"runs as {account}, which the file does not create")
    if {job["metadata"]["namespace"], role["metadata"]["namespace"], binding["metadata"]["namespace"]} != {namespace}:
        found.append(f"not everything is in the plugin's namespace {namespace}")
    if binding["roleRef"]["name"] != role["metadata"]["name"] or [s["name"] for s in binding["subjects"]] != [account]:
        found.append("the RoleBinding does not give the Role to the Job's ServiceAccount")
    (rule,) = role["rules"]
    if (rule["apiGroups"], rule["resources"], rule.get("resourceNames"), sorted(rule["verbs"])) != (
            ["extensions.istio.io"], ["wasmplugins"], [name], ["get", "patch"]):
        found.append(f"the Role grants {rule}, not get and patch on WasmPlugin {name} alone")
    if job["spec"].get("backoffLimit") != 0:
        found.append("a rollout that rolled back would be started again")
    return found


def test_the_job_patches_the_deployed_plugin_and_judges_the_routed_releases():
    assert problems(JOB_FILE) == []


def test_the_cluster_domain_is_set_in_one_place():
    def other_domain(job_file):
        (variable,) = [v for v in container(job_file)["env"] if v["name"] == "CLUSTER_DOMAIN"]
        variable["value"] = "example.internal"
    job_file = broken(other_domain)
    _, rollout = job_commands(job_file)
    assert flag(rollout, "--canary") == "sklearn-canary-predictor.models.svc.example.internal"
    assert problems(job_file) == []


def broken(edit) -> dict:
    job_file = documents(ISTIO / "rollout" / "job.yaml")
    edit(job_file)
    return job_file


def container(job_file: dict) -> dict:
    return job_file["Job"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("edit", [
    lambda f: container(f).update(args=[container(f)["args"][0].replace("sklearn-canary-predictor", "sklearn-beta")]),
    lambda f: container(f).update(args=[container(f)["args"][0].replace("get wasmplugin canary-split", "get wasmplugin split")]),
    lambda f: container(f).update(args=[container(f)["args"][0].replace(" --run", "")]),
    lambda f: f["Role"]["rules"][0].update(verbs=["get", "patch", "delete"]),
    lambda f: f["RoleBinding"]["subjects"][0].update(name="default"),
    lambda f: f["Job"]["spec"].update(backoffLimit=3),
    lambda f: container(f).update(env=[v for v in container(f)["env"] if v["name"] != "CLUSTER_DOMAIN"]),
    lambda f: container(f).update(args=[container(f)["args"][0].replace("models.svc.$(CLUSTER_DOMAIN)", "models")]),
    lambda f: container(f).update(args=[container(f)["args"][0].replace("--selector '$(GATEWAY_SELECTOR)'", "")]),
    lambda f: container(f).update(env=[v for v in container(f)["env"] if v["name"] != "PLUGIN_NAMESPACE"]),
    lambda f: f["Job"]["metadata"].update(namespace="models"),
], ids=["unrouted-release", "other-plugin", "prints-only", "role-too-wide", "unbound-account", "retries",
        "domain-unset", "short-release-name", "default-selector", "namespace-unset", "job-elsewhere"])
def test_each_check_catches_its_problem(edit):
    assert problems(broken(edit)) != []


def test_the_cli_accepts_the_jobs_command_line():
    """The Job's own flags, run here without --run against the shipped WasmPlugin: the plan the
    Job would apply."""
    _, rollout = job_commands(JOB_FILE)
    args = [arg for arg in rollout[3:] if arg != "--run"]
    args[args.index("--config") + 1] = str(ISTIO / "wasmplugin.yaml")
    result = subprocess.run([str(CLI), "rollout", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("kubectl patch wasmplugin canary-split")]
    steps = flag(rollout, "--steps").split(",")
    assert len(commands) == len(steps) + 1  # and the rollback
