"""Signed, expiring pin tokens on real Envoy: a valid token pins the release it names at any
weight; expired, other-host, tampered, unknown-key and malformed tokens do not, and are counted;
two keys both verify during a rotation; keys come from the VM's environment, and a config with a
token pin and no usable key is refused. Tokens are minted by `pin_token.py`, an implementation
independent of the filter's, and by `canary-split token --config` from the gateway's own config."""

import json
import os
import re
import subprocess
import time
import urllib.request

import pytest

from conftest import envoy_from_istio
from harness import ROOT, Client, Envoy, bootstrap, catch_all_route, split_routes, wasm_failures
from istio_routes import load_manifests, vm_environment, wasm_plugin
from pin_token import encode_keys, mint, new_key
from sticky_hash import is_canary

KEYS_ENV = "CANARY_SPLIT_PIN_KEYS"
CLI = ROOT / "target" / "debug" / "canary-split"
FROM_THE_GATEWAY = {"host_env_keys": [KEYS_ENV]}  # Istio's vmConfig.env with valueFrom: HOST
KEY_OLD, KEY_NEW, KEY_UNKNOWN = new_key(b"old"), new_key(b"new"), new_key(b"unknown")
ZERO, ALL = "shop.example.com", "all.example.com"
PINS = [{"token": {"header": "x-canary-token"}}, {"token": {"cookie": "canary-token"}},
        {"header": "traffic", "value": "test", "to": "canary"}]
CONFIG = {"routes": [{"host": host, "primary": {}, "canary": {}, "canary_weight": weight, "pin": PINS}
                     for host, weight in ((ZERO, 0), (ALL, 100))]}


@pytest.fixture
def gateway_env(monkeypatch):
    """Envoy inherits the test's environment: no pin keys there but the ones a test gives."""
    monkeypatch.delenv(KEYS_ENV, raising=False)


def envoy_with(upstreams, env: dict[str, str], config: dict = CONFIG, vm_environment: dict = FROM_THE_GATEWAY) -> Envoy:
    hosts = [h for r in config["routes"] for h in split_routes(r["host"], None, None)] + [catch_all_route()]
    return Envoy(bootstrap(json.dumps(config), upstreams, hosts, vm_environment=vm_environment), env=env)


@pytest.fixture
def start(upstreams, gateway_env, gateways):
    """Starts an Envoy whose own environment is `env`; stopped after the test."""
    return lambda env, **kwargs: gateways(envoy_with(upstreams, env, **kwargs))


def in_an_hour() -> int:
    return int(time.time()) + 3600


def rejected_tokens(envoy: Envoy) -> dict[tuple[str, str], int]:
    """The non-zero canary_split_pin_tokens_rejected_total counters, by (host, reason)."""
    admin = envoy.admin_address_path.read_text().strip()
    url = f"http://{admin}/stats?filter=canary_split_pin_tokens_rejected_total"
    with urllib.request.urlopen(url, timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    found = {}
    for line in lines:
        match = re.search(r"host=\.=(.*?);\.;reason=\.=(.*?);\.;canary_split_pin_tokens_rejected_total: (\d+)$", line)
        assert match, line
        if int(match[3]):
            found[match[1], match[2]] = int(match[3])
    return found


def test_the_python_minter_matches_the_filters_golden_tokens():
    # The golden vectors of src/pin_token.rs and cli/tests/cli.rs.
    assert mint(bytes(range(32)), ZERO, "canary", 1_900_000_000) == \
        "v1.canary.1900000000.J8D8x7_fcidAkCA87FHrLguRkpzY6KXI_1nXyZYpc6c"
    assert mint(bytes(range(32)), ZERO, "primary", 1_900_000_000) == \
        "v1.primary.1900000000.5RDX-Pdyk1i0oS-shVLo63En12hW6H4M3mocaCTiVtQ"
    assert mint(b"\xab" * 32, "sklearn-predictor-models.example.com", "canary", 0) == \
        "v1.canary.0.JasQoAjtRtXEQdEyjfYRtGGoFywpJ5JFBELRl3n4cr0"


def test_a_valid_token_pins_the_release_it_names_at_any_weight(start):
    client = start({KEYS_ENV: encode_keys(KEY_OLD)})
    for _ in range(10):
        assert client.get(ZERO, [("x-canary-token", mint(KEY_OLD, ZERO, "canary", in_an_hour()))]).upstream == "canary"
        cookie = f"session=1; canary-token={mint(KEY_OLD, ZERO, 'canary', in_an_hour())}"
        assert client.get(ZERO, [("cookie", cookie)]).upstream == "canary"
        assert client.get(ALL, [("x-canary-token", mint(KEY_OLD, ALL, "primary", in_an_hour()))]).upstream == "primary"
    # Without a token the weight decides: 0 % and 100 % are exact.
    assert {client.get(ZERO).upstream for _ in range(20)} == {"primary"}
    assert {client.get(ALL).upstream for _ in range(20)} == {"canary"}
    assert rejected_tokens(client.envoy) == {}


def test_tokens_that_do_not_verify_do_not_pin_and_are_counted(start):
    client = start({KEYS_ENV: encode_keys(KEY_OLD)})
    valid = mint(KEY_OLD, ZERO, "canary", in_an_hour())
    bad = {
        "expired": [mint(KEY_OLD, ZERO, "canary", int(time.time()) - 1)],
        "bad_signature": [
            mint(KEY_OLD, ALL, "canary", in_an_hour()),  # another host's
            mint(KEY_UNKNOWN, ZERO, "canary", in_an_hour()),  # an unknown key's
            valid.replace(".canary.", ".primary."),  # tampered: another release
            re.sub(r"\.(\d+)\.", lambda m: f".{int(m[1]) + 86400}.", valid),  # tampered: a later expiry
        ],
        "malformed": [valid[:-1], valid + "A", "test", b"v1.canary.\xff\xfe.abc", "v" * 10 * 1024],
        "unknown_version": ["v2" + valid[2:]],
    }
    for reason, tokens in bad.items():
        for token in tokens:
            assert client.get(ZERO, [("x-canary-token", token)]).upstream == "primary", (reason, token)
            # The next rule decides.
            response = client.get(ZERO, [("x-canary-token", token), ("traffic", "test")])
            assert response.upstream == "canary", (reason, token)
    assert rejected_tokens(client.envoy) == {(ZERO, reason): 2 * len(tokens) for reason, tokens in bad.items()}
    # The VM is intact: a valid token still pins, and nothing panicked.
    assert client.get(ZERO, [("x-canary-token", valid)]).upstream == "canary"
    assert not wasm_failures(client.envoy.settled_log())


def test_two_keys_both_verify_during_a_rotation(start):
    client = start({KEYS_ENV: encode_keys(KEY_NEW, KEY_OLD)})
    for key in (KEY_NEW, KEY_OLD):
        assert client.get(ZERO, [("x-canary-token", mint(key, ZERO, "canary", in_an_hour()))]).upstream == "canary"
    assert client.get(ZERO, [("x-canary-token", mint(KEY_UNKNOWN, ZERO, "canary", in_an_hour()))]).upstream == "primary"

    # After the rotation only the new key is left.
    done = start({KEYS_ENV: encode_keys(KEY_NEW)})
    assert done.get(ZERO, [("x-canary-token", mint(KEY_NEW, ZERO, "canary", in_an_hour()))]).upstream == "canary"
    assert done.get(ZERO, [("x-canary-token", mint(KEY_OLD, ZERO, "canary", in_an_hour()))]).upstream == "primary"


def test_pin_keys_env_names_the_variable_and_inline_values_reach_the_vm_too(start):
    config = {**CONFIG, "pin_keys_env": "GATEWAY_PIN_KEYS"}
    client = start({}, config=config, vm_environment={"key_values": {"GATEWAY_PIN_KEYS": encode_keys(KEY_OLD)}})
    assert client.get(ZERO, [("x-canary-token", mint(KEY_OLD, ZERO, "canary", in_an_hour()))]).upstream == "canary"


def cli_token(*args: str, keys: dict[str, str]) -> subprocess.CompletedProcess:
    """`canary-split token ARGS`, with only the key variables in `keys`."""
    env = {name: value for name, value in os.environ.items() if name != KEYS_ENV} | keys
    return subprocess.run([str(CLI), "token", *args], capture_output=True, text=True, timeout=60, env=env)


def test_a_token_minted_with_the_gateways_config_is_honoured_and_one_it_refuses_would_not_be(start, tmp_path):
    config = {**CONFIG, "pin_keys_env": "GATEWAY_PIN_KEYS", "max_token_ttl_seconds": 7200}
    config_file = tmp_path / "filter-config.json"
    config_file.write_text(json.dumps(config))
    keys = {"GATEWAY_PIN_KEYS": encode_keys(KEY_NEW, KEY_OLD)}
    client = start({}, config=config, vm_environment={"key_values": keys})
    for host, release in ((ZERO, "canary"), (ALL, "primary")):
        # The CLI reads the keys from the config's pin_keys_env, as the gateway does.
        minted = cli_token("--config", str(config_file), "--host", host, "--to", release, "--ttl", "2h", keys=keys)
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        assert minted.stdout == token + "\n"
        assert minted.stderr.startswith(f"send it in header x-canary-token or cookie canary-token, to {host};")
        assert client.get(host, [("x-canary-token", token)]).upstream == release
        assert client.get(host, [("cookie", f"canary-token={token}")]).upstream == release
    assert rejected_tokens(client.envoy) == {}

    # Longer than max_token_ttl_seconds: refused with the config, and passed over by the gateway
    # when minted without it.
    too_long = ["--host", ZERO, "--to", "canary", "--ttl", "3h"]
    refused = cli_token("--config", str(config_file), *too_long, keys=keys)
    assert (refused.returncode, refused.stdout) == (1, ""), refused.stderr
    assert "more than max_token_ttl_seconds (7200)" in refused.stderr
    minted = cli_token(*too_long, "--key-env", "GATEWAY_PIN_KEYS", keys=keys)
    assert minted.returncode == 0, minted.stderr
    assert client.get(ZERO, [("x-canary-token", minted.stdout.strip())]).upstream == "primary"
    assert rejected_tokens(client.envoy) == {(ZERO, "too_long"): 1}


@pytest.mark.parametrize("env, vm_environment, message", [
    ({}, FROM_THE_GATEWAY, "needs a key, but the VM's environment has no CANARY_SPLIT_PIN_KEYS"),
    # The gateway has the keys, but the plugin does not pass them on to its VM.
    ({KEYS_ENV: encode_keys(KEY_OLD)}, {}, "needs a key, but the VM's environment has no CANARY_SPLIT_PIN_KEYS"),
    ({KEYS_ENV: ""}, FROM_THE_GATEWAY, "needs a usable key, but CANARY_SPLIT_PIN_KEYS is empty"),
    ({KEYS_ENV: encode_keys(KEY_OLD) + ",AAAA"}, FROM_THE_GATEWAY,
     "needs a usable key, but key 2 in CANARY_SPLIT_PIN_KEYS has 3 bytes (at least 32 needed)"),
], ids=["not-set", "not-passed-to-the-vm", "empty", "short-key"])
def test_a_token_pin_without_a_usable_key_is_refused(upstreams, gateway_env, env, vm_environment, message):
    envoy = envoy_with(upstreams, env, vm_environment=vm_environment)
    exit_code = envoy.run_to_exit()
    log = envoy.log()
    assert exit_code != 0
    lines = [line for line in log.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1, log
    assert lines[0].endswith(f"invalid configuration: routes[0].pin[0].token: {message}"), lines[0]
    assert encode_keys(KEY_OLD) not in log
    assert not wasm_failures(log)


def test_the_shipped_wasmplugin_takes_its_keys_from_the_gateway(upstreams, gateway_env):
    plugin = wasm_plugin(load_manifests())
    assert vm_environment(plugin) == FROM_THE_GATEWAY
    route = plugin["spec"]["pluginConfig"]["routes"][0]
    public = route["host"]
    # A user the sticky split keeps on primary, so only a token can move them.
    user = next(u for u in (f"user-{i}" for i in range(100))
                if not is_canary(public.encode(), u.encode(), route["canary_weight"]))
    with envoy_from_istio(upstreams, gateway_env={KEYS_ENV: encode_keys(KEY_NEW, KEY_OLD)}) as envoy:
        client = Client(envoy.port)
        for key in (KEY_NEW, KEY_OLD):
            token = mint(key, public, "canary", in_an_hour())
            assert client.get(public, [("x-canary-token", token), ("x-user-id", user)]).upstream == "canary"
        forged = mint(KEY_UNKNOWN, public, "canary", in_an_hour())
        assert client.get(public, [("x-canary-token", forged), ("x-user-id", user)]).upstream == "primary"
        # As the README mints one: with the CLI, from the shipped WasmPlugin and the gateway's keys.
        shipped = str(ROOT / "istio" / "wasmplugin.yaml")
        minted = cli_token("--config", shipped, "--host", public, "--to", "canary", "--ttl", "2h",
                           keys={KEYS_ENV: encode_keys(KEY_NEW, KEY_OLD)})
        assert minted.returncode == 0, minted.stderr
        assert client.get(public, [("x-canary-token", minted.stdout.strip()), ("x-user-id", user)]).upstream == "canary"
