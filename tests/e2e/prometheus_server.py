"""A real Prometheus (Debian's `prometheus` package) for the end-to-end tests: on 127.0.0.1, with
its own config and data directory, scraping Envoy admin interfaces every second."""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from harness import stop_process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Prometheus:
    """A real Prometheus (Debian's package) on 127.0.0.1 with its own config and data directory,
    scraping `targets` every second, less the series of `dropped_metrics` (dropped at the scrape,
    as a scrape config keeping only the metrics it knows would)."""

    def __init__(self, targets: list[str], rules: str | None = None, dropped_metrics: list[str] | None = None):
        binary = shutil.which("prometheus")
        if not binary:
            raise RuntimeError("prometheus is not installed: `make system-tools` installs it")
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-prometheus-"))
        scrape = {"job_name": "gateway", "metrics_path": "/stats/prometheus", "static_configs": [{"targets": targets}]}
        if dropped_metrics:
            scrape["metric_relabel_configs"] = [{"source_labels": ["__name__"], "regex": "|".join(dropped_metrics),
                                                 "action": "drop"}]
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [scrape]}
        if rules:
            (self.workdir / "rules.yml").write_text(rules)
            config["rule_files"] = [str(self.workdir / "rules.yml")]
        (self.workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "prometheus.log"
        self.command = [binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                        f"--storage.tsdb.path={self.workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Prometheus":
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready in {timeout}s:\n{self.log()}")

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())["data"]["result"]

    def alerts(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=5) as reply:
            return json.loads(reply.read())["data"]["alerts"]

    def wait_for_series(self, promql: str, timeout: float = 20.0):
        self.wait_for(lambda: self.query(promql), timeout, f"no {promql} series")

    def wait_for(self, condition, timeout: float = 20.0, what="the condition never held"):
        """Until `condition()` is true: scrapes land every second. `what` says what was missing,
        or is called to say it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(f"{what() if callable(what) else what} in Prometheus after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        stop_process(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)
