"""filter-config/schema.json accepts the shipped example and rejects what the filter rejects,
so editors and CI pipelines that validate with it agree with the filter."""

import json
import pathlib

import jsonschema
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "filter-config" / "schema.json").read_text())
EXAMPLE = json.loads((ROOT / "filter-config" / "example.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def route(**changes):
    base = {"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 10}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_schema_is_valid_and_accepts_the_example():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    VALIDATOR.validate(EXAMPLE)


@pytest.mark.parametrize("weight", [0, 0.01, 12.5, 33.33, 99.99, 100])
def test_accepts_weights_in_basis_points(weight):
    VALIDATOR.validate({"routes": [route(canary_weight=weight)]})


@pytest.mark.parametrize("config", [
    {"routes": [route(pin=[{"token": {"header": "x-canary-token"}}, {"token": {"cookie": "canary-token"}}])]},
    {"pin_keys_env": "GATEWAY_PIN_KEYS_2", "routes": []},
    {"max_token_ttl_seconds": 86400, "decision_header": "x-te-route", "routes": [
        route(canary={"host": "a-canary.example.com"}, release_hosts="token",
              pin=[{"token": {"header": "x-canary-token"}}])]},
    {"decision_values": {"primary": "p", "canary": "c-5Hq~2f"}, "routes": []},
], ids=lambda c: json.dumps(c)[:60])
def test_accepts_token_pins_a_keys_variable_and_decision_values(config):
    VALIDATOR.validate(config)


@pytest.mark.parametrize("config", [
    {"routes": [route(sticky={"cookie": "canary-split-user", "assign": {}})]},
    {"routes": [route(sticky={"cookie": "u", "assign": {"max_age_seconds": 3600, "path": "/shop",
                                                         "domain": ".example.com"}})]},
    {"routes": [route(primary={"host": "p.example.com"}, x_forwarded_host=True)]},
], ids=lambda c: json.dumps(c)[:60])
def test_accepts_cookie_assignment_and_x_forwarded_host(config):
    VALIDATOR.validate(config)


@pytest.mark.parametrize("guard", [
    {},
    {"window_seconds": 1, "min_requests": 1, "max_error_increase": 0, "error_ratio_floor": 0},
    {"window_seconds": 300, "max_error_increase": 250.5, "error_ratio_floor": 100},
    {"max_latency_increase": 30},
    {"max_latency_increase": 30, "latency_floor_ms": 250},
], ids=lambda g: json.dumps(g)[:60])
def test_accepts_guards(guard):
    VALIDATOR.validate({"routes": [route(guard=guard)]})


@pytest.mark.parametrize("config", [
    {},
    {"routes": [], "extra": 1},
    {"routes": [route(canary_weight=150)]},
    {"routes": [route(canary=None)]},
    {"routes": [route(host="a.example.com:80")]},
    {"routes": [route(weight=5)]},
    {"routes": [route(pin=[{"header": "a", "cookie": "b", "value": "v", "to": "canary"}])]},
    {"routes": [route(pin=[{"value": "v", "to": "canary"}])]},
    {"routes": [route(pin=[{"header": "a", "value": "v", "to": "beta"}])]},
    {"routes": [route(pin=[{"header": "a", "value": "v"}])]},
    {"routes": [route(pin=[{"token": {"header": "t"}, "to": "canary"}])]},
    {"routes": [route(pin=[{"token": {"header": "t"}, "value": "v"}])]},
    {"routes": [route(pin=[{"token": {"header": "t"}, "header": "a", "value": "v", "to": "canary"}])]},
    {"routes": [route(pin=[{"token": {}}])]},
    {"routes": [route(pin=[{"token": {"header": "t", "cookie": "t"}}])]},
    {"routes": [route(pin=[{"token": {"client_ip": True}}])]},
    {"routes": [route(pin=[{"token": "x-canary-token"}])]},
    {"pin_keys_env": "1KEYS", "routes": []},
    {"pin_keys_env": "PIN-KEYS", "routes": []},
    {"pin_keys_env": "", "routes": []},
    {"routes": [route(sticky={})]},
    {"routes": [route(sticky={"header": "a", "client_ip": True})]},
    {"routes": [route(sticky={"client_ip": False})]},
    {"routes": [route(salt="")]},
    {"routes": [route(sticky={"header": "u", "assign": {}})]},
    {"routes": [route(sticky={"client_ip": True, "assign": {}})]},
    {"routes": [route(sticky={"cookie": "u", "assign": {"max_age": 5}})]},
    {"routes": [route(sticky={"cookie": "u", "assign": {"max_age_seconds": 0}})]},
    {"routes": [route(sticky={"cookie": "u", "assign": {"max_age_seconds": 34560001}})]},
    {"routes": [route(sticky={"cookie": "u", "assign": {"max_age_seconds": 1.5}})]},
    {"routes": [route(sticky={"cookie": "u", "assign": {"path": "app"}})]},
    {"routes": [route(sticky={"cookie": "u", "assign": {"path": "/a; Secure"}})]},
    {"routes": [route(sticky={"cookie": "u", "assign": {"domain": "example.com:443"}})]},
    {"routes": [route(x_forwarded_host="yes")]},
    {"decision_header": "bad header", "routes": []},
    {"decision_header": "X-Forwarded-Host", "routes": []},
    {"decision_header": "host", "routes": []},
    {"decision_header": "Authorization", "routes": []},
    {"decision_header": "cookie", "routes": []},
    {"decision_header": "content-length", "routes": []},
    {"decision_header": "Transfer-Encoding", "routes": []},
    {"decision_header": "te", "routes": []},
    {"decision_header": "X-Envoy-Retry-On", "routes": []},
    {"decision_header": ":authority", "routes": []},
    {"max_token_ttl_seconds": 0, "routes": []},
    {"max_token_ttl_seconds": 1.5, "routes": []},
    {"routes": [route(release_hosts="closed")]},
    {"decision_values": {"canary": "a b"}, "routes": []},
    {"decision_values": {"canary": ""}, "routes": []},
    {"decision_values": {"canary": "x" * 129}, "routes": []},
    {"decision_values": {"beta": "x"}, "routes": []},
    {"routes": [route(guard={"window_seconds": 0})]},
    {"routes": [route(guard={"window_seconds": 301})]},
    {"routes": [route(guard={"window_seconds": 2.5})]},
    {"routes": [route(guard={"min_requests": 0})]},
    {"routes": [route(guard={"max_error_increase": -1})]},
    {"routes": [route(guard={"error_ratio_floor": 100.5})]},
    {"routes": [route(guard={"max_latency_increase": -5})]},
    {"routes": [route(guard={"latency_floor_ms": 100})]},
    {"routes": [route(guard={"window": 10})]},
    {"routes": [route(guard=True)]},
], ids=lambda c: json.dumps(c)[:60])
def test_rejects_what_the_filter_rejects(config):
    assert not VALIDATOR.is_valid(config)
