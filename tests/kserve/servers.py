"""Start the primary and the canary model server for a test or the demo, each as the sklearn
runtime would start it for its InferenceService in istio/inferenceservices.yaml.

    with start_servers() as servers:
        url = f"http://127.0.0.1:{servers.primary_port}/v1/models/{servers.model_name}:predict"

Both serve the model name the InferenceServices give it; only their answers tell them apart: POST
PROBE and compare with EXPECTED_PREDICTIONS.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
INFERENCE_SERVICES = pathlib.Path(HERE).parents[1] / "istio" / "inferenceservices.yaml"
VARIANTS = ("primary", "canary")
# The sklearn runtime's arguments (config/runtimes/kserve-sklearnserver.yaml in
# github.com/kserve/kserve, v0.16.0 to v0.20.0): {{.Name}} is the InferenceService's name and
# /mnt/models the directory its storageUri is downloaded to.
RUNTIME_ARGS = ("--model_name={name}", "--model_dir={model_dir}", "--http_port={port}")

# A clear virginica: the primary says class 2; the canary (one split) can only say 0 or 1.
PROBE = {"instances": [[6.9, 3.1, 5.4, 2.1]]}
EXPECTED_PREDICTIONS = {"primary": [2], "canary": [1]}


def inference_services() -> dict[str, dict]:
    """istio/'s InferenceServices by variant."""
    return {isvc["metadata"]["labels"]["canary-split.dev/variant"]: isvc
            for isvc in yaml.safe_load_all(INFERENCE_SERVICES.read_text())}


def server_args(isvc: dict, model_dir: str, port: int) -> list[str]:
    """The runtime's arguments with the InferenceService's appended, as KServe merges them
    (MergeRuntimeContainers, pkg/controller/v1beta1/inferenceservice/utils/utils.go)."""
    runtime = [arg.format(name=isvc["metadata"]["name"], model_dir=model_dir, port=port) for arg in RUNTIME_ARGS]
    return runtime + list(isvc["spec"]["predictor"]["model"].get("args", []))


def model_name(args: list[str]) -> str:
    """The model name the server takes from its arguments: the last --model_name, as argparse does."""
    return [arg.split("=", 1)[1] for arg in args if arg.startswith("--model_name=")][-1]


class Servers:
    """The two running servers; stop() ends them and removes their temp dir."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.ports = {}
        self.model_name = None
        self._procs = {}
        self._logs = {}

    @property
    def primary_port(self):
        return self.ports["primary"]

    @property
    def canary_port(self):
        return self.ports["canary"]

    def log(self, variant):
        with open(self._logs[variant].name, errors="replace") as f:
            return f.read()

    def stop(self):
        for proc in self._procs.values():
            proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs.values():
            log.close()
        self._procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _free_ports(count):
    # kserve binds 0.0.0.0, so look for ports free on every interface; keep all
    # sockets open until the end so that the same port is not handed out twice.
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("0.0.0.0", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _is_ready(port, name):
    url = f"http://127.0.0.1:{port}/v1/models/{name}"
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return json.load(resp).get("ready") is True
    except (OSError, ValueError):
        return False


def start_servers(model_root=None, timeout=60.0):
    """Start both servers on free loopback ports and wait until they are ready.

    model_root holds a model directory per release (primary/, canary/), as the storage
    initializer leaves storageUri; without it the models are trained into the temp dir first.
    """
    servers = Servers(tempfile.mkdtemp(prefix="canary-split-kserve-"))
    try:
        if model_root is None:
            model_root = os.path.join(servers.workdir, "models")
            done = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), model_root],
                                  capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise RuntimeError(f"train.py failed:\n{done.stderr}")
        isvcs = inference_services()
        names = {}
        for variant, port in zip(VARIANTS, _free_ports(len(VARIANTS))):
            args = server_args(isvcs[variant], os.path.join(model_root, variant), port)
            names[variant] = model_name(args)
            log = open(os.path.join(servers.workdir, f"{variant}.log"), "w+b")
            servers._logs[variant] = log
            servers.ports[variant] = port
            servers._procs[variant] = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "model_server.py"), *args, "--enable_grpc=false"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if len(set(names.values())) != 1:
            raise RuntimeError(f"the releases serve different model names: {names}")
        servers.model_name = names["primary"]
        deadline = time.monotonic() + timeout
        for variant, proc in servers._procs.items():
            while not _is_ready(servers.ports[variant], servers.model_name):
                if proc.poll() is not None or time.monotonic() > deadline:
                    state = (f"exited with {proc.returncode}" if proc.poll() is not None
                             else f"not ready after {timeout:.0f}s")
                    raise RuntimeError(f"kserve {variant} server on port "
                                       f"{servers.ports[variant]} {state}; its log:\n"
                                       f"{servers.log(variant)}")
                time.sleep(0.1)
    except BaseException:
        servers.stop()
        raise
    return servers
