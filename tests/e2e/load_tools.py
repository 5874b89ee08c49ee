"""wrk (HTTP/1.1) and h2load (HTTP/2) as background load on a gateway, and what each reports of
its failures. Both run at the lowest priority (nice 19), so that the gateway and the test's own
clients get the CPU first on a small machine."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from harness import ROOT, stop_process

USERS_SCRIPT = ROOT / "bench" / "load" / "users.lua"


@dataclass
class LoadResult:
    tool: str
    requests: int
    errors: int
    """Socket errors, or failed, errored and timed-out requests."""
    non_2xx: int
    output: str


def parse_wrk(output: str) -> LoadResult:
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return LoadResult("wrk", requests, errors, int(non_2xx.group(1)) if non_2xx else 0, output)


def parse_h2load(output: str) -> LoadResult:
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed, (\d+) errored, "
                     r"(\d+) timeout", output)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    requests, failed, errored, timeouts = (int(n) for n in done.groups())
    return LoadResult("h2load", requests, failed + errored + timeouts, sum(int(n) for n in codes.groups()[1:]), output)


class BackgroundLoad:
    """A load tool running until its own duration is over."""

    def __init__(self, command: list[str], parse):
        self.command = command
        self.parse = parse
        self.process = subprocess.Popen(["nice", "-n", "19", *command], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)

    def result(self, timeout: float) -> LoadResult:
        try:
            output = self.process.communicate(timeout=timeout)[0]
        finally:
            stop_process(self.process)
        if self.process.returncode:
            raise AssertionError(f"{self.command[0]} exited with {self.process.returncode}:\n{output}")
        return self.parse(output)


def wrk(port: int, seconds: int, hosts: list[str], connections: int = 8) -> BackgroundLoad:
    """HTTP/1.1 keep-alive load over `hosts`, 1,000 user ids in `x-user-id`."""
    return BackgroundLoad(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(USERS_SCRIPT),
                           f"http://127.0.0.1:{port}/", "--", *hosts], parse_wrk)


def h2load(port: int, seconds: int, authority: str, connections: int = 4, streams: int = 8) -> BackgroundLoad:
    """HTTP/2 (h2c) load on one authority, `streams` concurrent streams per connection."""
    return BackgroundLoad(["h2load", "-t1", f"-c{connections}", f"-m{streams}", "-D", str(seconds),
                           "-H", f":authority: {authority}", f"http://127.0.0.1:{port}/"], parse_h2load)
