"""Real Envoy with the canary-split module, in front of loopback upstreams that say who answered.

Envoy's routes are what Istio renders for the plain VirtualServices the filter is meant for:
one virtual host per variant host, and a public host that routes on the decision header with
primary as the default. The HTTP filters are in an Istio gateway's order: the Wasm filter (phase
AUTHN), then fault and CORS, then the router (pilot/pkg/networking/core/listener_builder.go).
Envoy's connection manager resolves the route before the first filter runs, so the route is
already cached when the filter changes the request: routing only works if Envoy selects the
route again.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODULE = ROOT / "target" / "canary_split.wasm"
ENVOY = pathlib.Path(os.environ.get("ENVOY_BIN", ROOT / ".venv" / "bin" / "envoy"))
# Envoy writes its log file at this interval (its default is 10 s): tests wait for warnings.
LOG_FLUSH_INTERVAL_MS = 100

DECISION_HEADER = "x-canary-route"
# The filter's stats carry these labels encoded in their names (src/metrics.rs); Envoy extracts
# them with these regexes, as Istio does for the gateway's `extraStatTags`.
STATS_TAGS = ("host", "split_release", "reason")

# A request header that panics the VM of a module built with the test-only `crash-trigger` feature.
CRASH_HEADER = ("x-canary-split-test-crash", "1")

# A request header that makes an echo upstream hold the request until the test releases it
# (`EchoUpstream.release_held`): a request in flight for exactly as long as the test needs.
UPSTREAM_HOLD_HEADER = "x-test-upstream-hold"


class UpstreamServer(ThreadingHTTPServer):
    # Bursts of new connections (slow requests held open, drains) must not overflow the default
    # backlog of 5: the kernel retries a dropped connection attempt only after a second, by when
    # Envoy's 1 s connect timeout has answered the request with a 503.
    request_queue_size = 128
    daemon_threads = True


class EchoUpstream:
    """An HTTP/1.1 server that answers every request with its own name and the headers it got,
    adding `response_headers` to its response; one carrying UPSTREAM_HOLD_HEADER is answered only
    once the test calls `release_held`."""

    def __init__(self, name: str, response_headers: list[tuple[str, str]] = ()):
        self.name = name
        self.holding = 0
        self._held = threading.Condition()
        self._released = threading.Event()
        upstream_name = name
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                if self.headers.get(UPSTREAM_HOLD_HEADER):
                    upstream._hold()
                headers = [(k.lower(), v) for k, v in self.headers.raw_items()]
                body = json.dumps({"upstream": upstream_name, "headers": headers}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("x-upstream", upstream_name)
                for header_name, value in response_headers:
                    self.send_header(header_name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = UpstreamServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _hold(self):
        with self._held:
            self.holding += 1
            self._held.notify_all()
        self._released.wait(60)  # a test that never releases still ends

    def wait_until_holding(self, count: int, timeout: float = 30.0):
        """Returns once `count` requests are held here: they went through Envoy and its filters."""
        with self._held:
            if not self._held.wait_for(lambda: self.holding >= count, timeout):
                raise AssertionError(f"{self.name} holds {self.holding} requests after {timeout} s, not {count}")

    def release_held(self):
        """Answers every held request, and every later one at once."""
        self._released.set()

    def close(self):
        self.release_held()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Response:
    status: int
    upstream: str | None
    headers: dict[str, str]
    """The request headers as the upstream received them (last value wins)."""
    header_list: list[tuple[str, str]] = field(default_factory=list)
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    """The headers of the response the client got, names in lower case, in order."""

    def response_header(self, name: str) -> list[str]:
        """Every value of one response header."""
        return [value for header_name, value in self.response_headers if header_name == name]


def vhost(name: str, domains: list[str], routes: list[dict]) -> dict:
    return {"name": name, "domains": [d for host in domains for d in (host, f"{host}:*")], "routes": routes}


def to_cluster(cluster: str, headers: list[dict] | None = None) -> dict:
    match: dict = {"prefix": "/"}
    if headers:
        match["headers"] = headers
    return {"match": match, "route": {"cluster": cluster}}


def split_routes(public_host: str, primary_host: str | None, canary_host: str | None) -> list[dict]:
    """Virtual hosts as the plain VirtualServices render: each variant host to its own service,
    the public host to the variant the decision header names, primary by default."""
    hosts = []
    if primary_host:
        hosts.append(vhost(f"{primary_host}", [primary_host], [to_cluster("primary")]))
    if canary_host:
        hosts.append(vhost(f"{canary_host}", [canary_host], [to_cluster("canary")]))
    hosts.append(vhost(public_host, [public_host], [
        to_cluster("canary", [{"name": DECISION_HEADER, "string_match": {"exact": "canary"}}]),
        to_cluster("primary"),
    ]))
    return hosts


def catch_all_route() -> dict:
    """Hosts that are not split. A decision header would send them to the canary: the filter
    removes it, so this route is taken only if Envoy fails to select the route again."""
    return vhost("others", ["*"], [
        to_cluster("canary", [{"name": DECISION_HEADER, "string_match": {"exact": "canary"}}]),
        to_cluster("other"),
    ])


def wasm_filter_config(filter_config: str, module: pathlib.Path = MODULE, failure_policy: str | None = None,
                       vm_environment: dict | None = None) -> dict:
    """The Wasm filter running `module`; `failure_policy` is Envoy's (FAIL_OPEN, FAIL_CLOSED,
    FAIL_RELOAD), which Istio sets from the WasmPlugin's failStrategy. Envoy's default is FAIL_CLOSED.
    With `vm_environment`, the VM's environment variables as Envoy's `EnvironmentVariables`:
    `host_env_keys` (names passed on from Envoy's own environment) and `key_values`."""
    config = {
        "name": "canary-split",
        "root_id": "canary-split",
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": filter_config},
        "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(module)}}},
    }
    if vm_environment:
        config["vm_config"]["environment_variables"] = vm_environment
    if failure_policy:
        config["failure_policy"] = failure_policy
    return {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config}


def write_ecds(path: pathlib.Path, filter_config: str, module: pathlib.Path = MODULE, failure_policy: str | None = None,
               vm_environment: dict | None = None):
    """Publishes a filter config the way Istio does (ECDS), through a watched file, atomically."""
    publish_ecds(path, {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                        "name": "canary-split",
                        "typed_config": wasm_filter_config(filter_config, module, failure_policy, vm_environment)})


def istio_fetch_failure_stand_in(fail_open: bool) -> dict:
    """What Istio's agent publishes in the filter's place when it cannot fetch the module
    (pkg/wasm/convert.go): an RBAC filter that allows everything for FAIL_OPEN, and one that denies
    everything otherwise, FAIL_RELOAD included."""
    rbac = {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}
    if fail_open:
        rbac["rules_stat_prefix"] = "wasm-default-allow"
    else:
        rbac.update(rules={}, rules_stat_prefix="wasm-default-deny")  # a policy without rules denies all
    return {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "name": "canary-split",
            "typed_config": rbac}


def publish_ecds(path: pathlib.Path, resource: dict):
    """Publishes one ECDS resource (a TypedExtensionConfig) through the watched file, atomically."""
    staging = path.with_suffix(".staging")
    staging.write_text(json.dumps({"resources": [resource]}))
    staging.rename(path)


def bootstrap(filter_config: str | None, upstream_ports: dict[str, int], virtual_hosts: list[dict],
              ecds_path: pathlib.Path | None = None, module: pathlib.Path = MODULE,
              failure_policy: str | None = None, listener_port: int = 0, vm_environment: dict | None = None,
              route_config: dict | None = None) -> dict:
    """An Envoy config; with `filter_config` None the gateway runs without the filter. With
    `ecds_path` the filter's config is read from that file (see `write_ecds`) and reloaded when it
    changes, as Istio delivers it: the filter may also be replaced by an RBAC filter, which is
    what Istio's agent puts in its place when it cannot fetch the module. `vm_environment`: see
    `wasm_filter_config`. `route_config`: a whole RouteConfiguration instead of one holding
    `virtual_hosts`."""
    def cluster(name: str, port: int) -> dict:
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
        }

    if ecds_path:
        write_ecds(ecds_path, filter_config, module, failure_policy, vm_environment)
        wasm_filter = {"name": "canary-split", "config_discovery": {
            "config_source": {"path_config_source": {
                "path": str(ecds_path), "watched_directory": {"path": str(ecds_path.parent)}}},
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                          "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"]}}
    else:
        wasm_filter = {"name": "canary-split", "typed_config": wasm_filter_config(
            filter_config, module, failure_policy, vm_environment)}
    return {
        "node": {"id": "gateway", "cluster": "canary-split-tests"},  # dynamic config needs a node
        "stats_config": {"stats_tags": [{"tag_name": tag, "regex": f"({tag}=\\.=(.*?);\\.;)"} for tag in STATS_TAGS]},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        "route_config": route_config or {"name": "gateway", "virtual_hosts": virtual_hosts},
                        "http_filters": [
                            *([wasm_filter] if filter_config is not None else []),
                            # After the AUTHN plugins, as Istio places them.
                            {"name": "envoy.filters.http.fault", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
                            {"name": "envoy.filters.http.cors", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": [cluster(name, port) for name, port in upstream_ports.items()],
        },
    }


def wasm_failures(log: str) -> list[str]:
    """Lines of an Envoy log that tell of a panic or trap in the Wasm VM."""
    return [line for line in log.splitlines()
            if "panicked" in line or "Function: proxy_on" in line or "wasm trap" in line.lower()]


def stop_process(process: subprocess.Popen | None):
    """Terminates a child process, and kills it if it has not exited after ten seconds."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    """A loopback port nothing listens on now, for a listener whose port must be known up front."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HotRestart:
    """Envoy's hot restart: epoch 0 picks a free base id and writes it to `base_id_path`; a later
    epoch with the same base id takes over the listeners, and its parent drains (for the parent's
    `drain_seconds`) and is told to exit after the child's `parent_shutdown_seconds`."""
    epoch: int
    base_id_path: pathlib.Path
    parent_shutdown_seconds: int = 6

    def arguments(self) -> list[str]:
        base_id = (["--use-dynamic-base-id", "--base-id-path", str(self.base_id_path)] if self.epoch == 0
                   else ["--base-id", self.base_id_path.read_text().strip()])
        return ["--restart-epoch", str(self.epoch), *base_id,
                "--parent-shutdown-time-s", str(self.parent_shutdown_seconds)]


class Envoy:
    """One Envoy process; `start()` returns once its listener accepts requests. `drain_seconds` is
    how long a drain (admin `/drain_listeners?graceful`, or a hot restart's parent) lasts."""

    def __init__(self, config: dict, concurrency: int = 1, hot_restart: HotRestart | None = None,
                 drain_seconds: int | None = None, env: dict[str, str] | None = None):
        """`env`: variables added to Envoy's own environment (the gateway's, in Istio)."""
        self.env = {**os.environ, **(env or {})}
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-envoy-"))
        self.config_path = self.workdir / "envoy.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.admin_address_path = self.workdir / "admin-address"
        self.log_path = self.workdir / "envoy.log"
        self.concurrency = concurrency
        self.hot_restart = hot_restart
        self.drain_seconds = drain_seconds
        self.process: subprocess.Popen | None = None
        self.port = 0

    def command(self) -> list[str]:
        restart = self.hot_restart.arguments() if self.hot_restart else ["--disable-hot-restart"]
        drain = ["--drain-time-s", str(self.drain_seconds)] if self.drain_seconds is not None else []
        return [
            str(ENVOY), "-c", str(self.config_path), "--concurrency", str(self.concurrency),
            "--admin-address-path", str(self.admin_address_path), *restart, *drain,
            "--log-level", "warn", "--component-log-level", "wasm:info",
            "--log-path", str(self.log_path),
            "--file-flush-interval-msec", str(LOG_FLUSH_INTERVAL_MS),
        ]

    def start(self, timeout: float = 30.0) -> "Envoy":
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log()}")
            port = self._listener_port()
            if port:
                self.port = port
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"envoy did not become ready in {timeout}s:\n{self.log()}")

    def run_to_exit(self, timeout: float = 30.0) -> int:
        """For configs Envoy must refuse: runs it and returns its exit code."""
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        env=self.env)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"envoy kept running with a config it should refuse:\n{self.log()}")

    def _listener_port(self) -> int:
        try:
            admin = self.admin_address_path.read_text().strip()
        except FileNotFoundError:
            return 0
        if not admin:
            return 0
        host, port = admin.rsplit(":", 1)
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            conn.request("GET", "/ready")
            ready = conn.getresponse().read().strip() == b"LIVE"
            if not ready:
                return 0
            conn.request("GET", "/listeners?format=json")
            listeners = json.loads(conn.getresponse().read())
            conn.close()
        except (OSError, ValueError, http.client.HTTPException):
            return 0
        for listener in listeners.get("listener_statuses", []):
            address = listener.get("local_address", {}).get("socket_address", {})
            if address.get("port_value"):
                return int(address["port_value"])
        return 0

    def admin_address(self) -> str:
        """`127.0.0.1:PORT` of the admin interface (stats, Prometheus's scrape target)."""
        return self.admin_address_path.read_text().strip()

    def admin(self, path: str, method: str = "GET") -> tuple[int, str]:
        """One call to the admin interface: its status and body."""
        admin = self.admin_address_path.read_text().strip()
        request = urllib.request.Request(f"http://{admin}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stats(self, pattern: str) -> dict[str, int]:
        """Envoy's counters and gauges whose names match a regular expression."""
        status, body = self.admin(f"/stats?filter={urllib.parse.quote(pattern)}")
        assert status == 200, body
        values = (line.split(": ", 1) for line in body.splitlines())
        return {name: int(value) for name, value in values if value.isdigit()}  # not text or histograms

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def settled_log(self) -> str:
        """The log with everything Envoy has logged so far: a line can wait up to one flush
        interval in Envoy's buffer, so a check that nothing was logged reads after a few."""
        time.sleep(3 * LOG_FLUSH_INTERVAL_MS / 1000)
        return self.log()

    def configured_by_workers(self) -> int:
        """How many configs the filter's VMs on worker threads have accepted so far, each one
        logged as "configured N route(s)": the log names each line's thread, and the main thread's
        id is the process's (Linux). Envoy skips a main-thread VM for a config it has seen before,
        never a worker's."""
        return sum(1 for line in self.log().splitlines()
                   if "wasm log canary-split: configured " in line and line.split("][", 2)[1] != str(self.process.pid))

    def stop(self):
        stop_process(self.process)

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def h2_get(port: int, host: str, headers: list[tuple[str, str]] = ()) -> Response:
    """One HTTP/2 (h2c) request with nghttp; headers are sent in order, and one given twice is sent
    as two fields."""
    command = ["nghttp", "-H", f":authority: {host}"]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://127.0.0.1:{port}/")
    body = json.loads(subprocess.run(command, check=True, capture_output=True, timeout=10).stdout)
    header_list = [(k, v) for k, v in body["headers"]]
    return Response(200, body["upstream"], dict(header_list), header_list)


class Client:
    """A keep-alive HTTP/1.1 client to one Envoy; header values may be raw bytes."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, host: str | bytes, headers: list[tuple[str, str | bytes]] = (), path: str = "/") -> Response:
        for attempt in range(2):
            try:
                return self._get(host, headers, path)
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                # The server closed a kept-alive connection: reconnect once.
                self.reconnect()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _get(self, host, headers, path) -> Response:
        self.conn.putrequest("GET", path, skip_host=True)
        self.conn.putheader("host", host)
        for name, value in headers:
            self.conn.putheader(name, value)
        self.conn.endheaders()
        reply = self.conn.getresponse()
        body = reply.read()
        upstream = reply.getheader("x-upstream")
        header_list = []
        if upstream:
            header_list = [(k, v) for k, v in json.loads(body)["headers"]]
        response_headers = [(name.lower(), value) for name, value in reply.getheaders()]
        return Response(reply.status, upstream, dict(header_list), header_list, response_headers)

    def reconnect(self):
        """A new connection, which Envoy may hand to another worker thread."""
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
