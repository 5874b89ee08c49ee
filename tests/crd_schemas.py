"""Validates Kubernetes manifests against the upstream CRD schemas in tests/schemas/, strictly, as
the API server with strict field validation would (see tests/schemas/SOURCES.md): unknown fields,
wrong types, values outside an enum or pattern, missing required fields, duplicate YAML keys and
kinds without a schema are all reported. CEL rules and formats are not checked."""

from __future__ import annotations

import json
import pathlib

import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

SCHEMA_DIR = pathlib.Path(__file__).resolve().parent / "schemas"

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# The fields of Kubernetes' ObjectMeta (meta/v1). CRD schemas leave metadata to the API server;
# the ones a manifest writes are typed, the ones the server fills in only named.
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"}, "generateName": {"type": "string"}, "namespace": {"type": "string"},
        "labels": STRING_MAP, "annotations": STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        **{field: {} for field in ("selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
                                   "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences",
                                   "managedFields")},
    },
}


class _StrictLoader(yaml.SafeLoader):
    """Refuses a mapping that has the same key twice (PyYAML would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _strict(node: dict) -> dict:
    """Turns a CRD structural schema into a JSON Schema that refuses undeclared fields, in place."""
    if node.get("nullable") is True:  # OpenAPI's keyword; JSON Schema spells it as a type
        node["type"] = [node["type"], "null"]
    if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    children = [*node.get("properties", {}).values(), *node.get("anyOf", []), *node.get("oneOf", [])]
    children += [node[key] for key in ("items", "additionalProperties", "not") if isinstance(node.get(key), dict)]
    for child in children:
        _strict(child)
    return node


def _object_schema(path: pathlib.Path) -> dict:
    schema = json.loads(path.read_text())
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties["metadata"] = OBJECT_META
    return _strict(schema)


def validators() -> dict[tuple[str, str], Draft7Validator]:
    """(apiVersion, kind) -> validator, one per file named <group>_<Kind>_<version>.json."""
    found = {}
    for path in SCHEMA_DIR.glob("*.json"):
        group, kind, version = path.stem.split("_")
        found[(f"{group}/{version}", kind)] = Draft7Validator(_object_schema(path))
    return found


def problems(paths: list[pathlib.Path], known: dict[tuple[str, str], Draft7Validator]) -> list[str]:
    """One line per problem in the YAML files, naming the file, the object and the field."""
    found = []
    for path in paths:
        try:
            documents = [doc for doc in yaml.load_all(path.read_text(), _StrictLoader) if doc is not None]
        except yaml.YAMLError as error:
            found.append(f"{path.name}: {error}")
            continue
        for doc in documents:
            if not isinstance(doc, dict):
                found.append(f"{path.name}: a document is not a Kubernetes object")
                continue
            api_version, kind = doc.get("apiVersion"), doc.get("kind")
            where = f'{path.name}: {kind}/{(doc.get("metadata") or {}).get("name")}'
            validator = known.get((api_version, kind))
            if validator is None:
                found.append(f"{where}: no schema for apiVersion {api_version!r} kind {kind!r}")
                continue
            for error in validator.iter_errors(doc):
                error = best_match([error])  # of a failed anyOf/oneOf, the branch that came closest
                found.append(f"{where}: at {error.json_path}: {error.message}")
    return found
