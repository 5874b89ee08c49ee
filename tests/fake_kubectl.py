#!/usr/bin/env python3
"""A stand-in for `kubectl` against a cluster holding istio/'s objects, for testing scripts that
drive kubectl (istio/promote.sh). Put a link named `kubectl` to this file on PATH and point
FAKE_KUBECTL_STATE at a JSON file made by `write_state`.

The state holds the objects by "kind/namespace/name", a log of every call (argv), and stands in
for the controllers with what the scripts rely on:
- KServe's predictor Deployment `NAME-predictor` for each InferenceService, whose pod template
  carries the storageUri in the annotation internal.serving.kserve.io/storage-initializer-sourceuri
  (Predictor.addStorageInitializerAnnotations, components/predictor.go; createRawDefaultDeployment,
  reconcilers/deployment/deployment_reconciler.go; github.com/kserve/kserve v0.16.0 to v0.20.0).
  KServe reconciles after a delay: a changed storageUri reaches the Deployment only after
  `reconcile_after_gets` more reads of it.
- `rollout status` exits 0, or with `rollout_fails` 1, as kubectl does for a Deployment that
  missed its progress deadline; its log entry records the storageUri the Deployment had then.

Supported: `get KIND NAME -n/--namespace NS -o jsonpath=TEMPLATE` (one {.a.b[0].c} expression,
backslash-escaped dots in keys), `patch KIND NAME -n/--namespace NS --type=json -p PATCH` (ops
test, replace and add, refused as the API server would when a test fails or a path is missing),
`rollout status deployment/NAME -n/--namespace NS [--timeout T]`. Anything else exits 2.
"""
import copy
import json
import os
import re
import sys

SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"
KINDS = {"inferenceservice": "InferenceService", "inferenceservices": "InferenceService", "isvc": "InferenceService",
         "wasmplugin": "WasmPlugin", "wasmplugins": "WasmPlugin", "deployment": "Deployment",
         "deployments": "Deployment"}


def key(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def predictor_deployment(isvc: dict) -> dict:
    meta = isvc["metadata"]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f'{meta["name"]}-predictor', "namespace": meta["namespace"]},
            "spec": {"template": {"metadata": {"annotations": {
                SOURCE_URI: isvc["spec"]["predictor"]["model"]["storageUri"]}}}}}


def write_state(path, manifests: list[dict], reconcile_after_gets: int = 0, rollout_fails: bool = False):
    objects = {key(m["kind"], m["metadata"].get("namespace", "default"), m["metadata"]["name"]): copy.deepcopy(m)
               for m in manifests if m.get("kind") in ("InferenceService", "WasmPlugin")}
    for isvc in [o for o in objects.values() if o["kind"] == "InferenceService"]:
        deployment = predictor_deployment(isvc)
        objects[key("Deployment", isvc["metadata"]["namespace"], deployment["metadata"]["name"])] = deployment
    state = {"objects": objects, "calls": [], "pending": {}, "reconcile_after_gets": reconcile_after_gets,
             "rollout_fails": rollout_fails}
    with open(path, "w") as f:
        json.dump(state, f)


def read_state(path) -> dict:
    with open(path) as f:
        return json.load(f)


def jsonpath(document, template: str):
    match = re.fullmatch(r"jsonpath=\{\.(.*)\}", template)
    if not match:
        raise SystemExit(f"fake kubectl: unsupported output {template!r}")
    node = document
    for part in re.split(r"(?<!\\)\.", match.group(1)):
        name, *indexes = re.split(r"\[(\d+)\]", part)
        for step in [name.replace("\\.", "."), *[int(i) for i in indexes if i != ""]]:
            if step == "":
                continue
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                return ""  # kubectl prints nothing for a missing field
    return node if isinstance(node, str) else json.dumps(node)


def pointer(document, path: str):
    """The parent container and last key of a JSON pointer; KeyError when the parent is missing."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    node = document
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    return node, (int(last) if isinstance(node, list) else last)


def apply_patch(document, operations: list[dict]):
    patched = copy.deepcopy(document)
    for op in operations:
        try:
            parent, last = pointer(patched, op["path"])
            if op["op"] == "test":
                if parent[last] != op["value"]:
                    raise SystemExit(f'The request is invalid: test failed at {op["path"]}')
            elif op["op"] == "replace":
                if last not in (range(len(parent)) if isinstance(parent, list) else parent):
                    raise KeyError(last)  # replace needs the member to exist
                parent[last] = op["value"]
            elif op["op"] == "add":
                parent[last] = op["value"]
            else:
                raise SystemExit(f'fake kubectl: unsupported op {op["op"]}')
        except (KeyError, IndexError, ValueError):
            raise SystemExit(f'The request is invalid: no such path {op["path"]}')
    return patched


def options(args: list[str]) -> tuple[list[str], dict[str, str]]:
    positional, named = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            name, _, value = arg.partition("=")
            name = {"-n": "--namespace", "-o": "--output", "-p": "--patch"}.get(name, name)
            if not value:
                i += 1
                value = args[i]
            named[name] = value
        else:
            positional.append(arg)
        i += 1
    return positional, named


def reconcile(state: dict, deployment_key: str):
    """KServe's controller: after enough reads, the Deployment takes its InferenceService's storageUri."""
    deployment = state["objects"][deployment_key]
    _, namespace, name = deployment_key.split("/")
    isvc = state["objects"].get(key("InferenceService", namespace, name.removesuffix("-predictor")))
    if isvc is None:
        return
    wanted = isvc["spec"]["predictor"]["model"]["storageUri"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    if annotations[SOURCE_URI] == wanted:
        return
    gets = state["pending"].get(deployment_key, 0)
    if gets >= state["reconcile_after_gets"]:
        annotations[SOURCE_URI] = wanted
        state["pending"].pop(deployment_key, None)
    else:
        state["pending"][deployment_key] = gets + 1


def run(state: dict, args: list[str]) -> int:
    positional, named = options(args)
    namespace = named.get("--namespace", "default")
    entry = {"argv": args}
    state["calls"].append(entry)
    if positional[:1] == ["get"] and len(positional) == 3:
        object_key = key(KINDS.get(positional[1], positional[1]), namespace, positional[2])
        if object_key not in state["objects"]:
            print(f'Error from server (NotFound): {positional[1]} "{positional[2]}" not found', file=sys.stderr)
            return 1
        if object_key.startswith("Deployment/"):
            reconcile(state, object_key)
        print(jsonpath(state["objects"][object_key], "jsonpath=" + named["--output"].removeprefix("jsonpath=")), end="")
        return 0
    if positional[:1] == ["patch"] and len(positional) == 3 and named.get("--type") == "json":
        object_key = key(KINDS.get(positional[1], positional[1]), namespace, positional[2])
        if object_key not in state["objects"]:
            print(f'Error from server (NotFound): {positional[1]} "{positional[2]}" not found', file=sys.stderr)
            return 1
        try:
            state["objects"][object_key] = apply_patch(state["objects"][object_key], json.loads(named["--patch"]))
        except SystemExit as refused:
            print(f"Error from server: {refused}", file=sys.stderr)
            return 1
        print(f"{positional[1]}/{positional[2]} patched")
        return 0
    if positional[:2] == ["rollout", "status"] and len(positional) == 3 and positional[2].startswith("deployment/"):
        object_key = key("Deployment", namespace, positional[2].removeprefix("deployment/"))
        if object_key not in state["objects"]:
            print(f'Error from server (NotFound): deployments "{positional[2]}" not found', file=sys.stderr)
            return 1
        entry["storage_uri"] = state["objects"][object_key]["spec"]["template"]["metadata"]["annotations"][SOURCE_URI]
        if state["rollout_fails"]:
            print(f'error: {positional[2]} exceeded its progress deadline', file=sys.stderr)
            return 1
        print(f'{positional[2]} successfully rolled out')
        return 0
    print(f"fake kubectl: unsupported command {args}", file=sys.stderr)
    return 2


def main() -> int:
    path = os.environ["FAKE_KUBECTL_STATE"]
    state = read_state(path)
    status = run(state, sys.argv[1:])
    with open(path, "w") as f:
        json.dump(state, f)
    return status


if __name__ == "__main__":
    sys.exit(main())
