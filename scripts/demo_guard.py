"""`make demo-guard`: the filter's guard on this machine, with no Prometheus and no rollout running.
Envoy with the module (two workers) reads a config from an ECDS file whose route has a `guard`
and `canary_weight` 25, as if set by hand; steady traffic (sticky users, one request in ten pinned
with `traffic: test`) runs throughout. After a few healthy seconds the canary starts failing one
request in five: each second shows where requests went and the guard's gauge from Envoy's admin
stats, until the guard has taken the canary out of the split; pinned testers still reach it.
Then `canary_weight: 0` (a change to the route) ends the trip."""

import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import Envoy, bootstrap, catch_all_route, split_routes, write_ecds  # noqa: E402
from rollout_rig import PUBLIC, ReleaseUpstream, Traffic, filter_config  # noqa: E402

GUARD = {"window_seconds": 10, "min_requests": 20, "max_error_increase": 50, "error_ratio_floor": 1}
WEIGHT = 25
# At 25 % of the unpinned 90 %, about 54 unpinned canary requests a second.
PER_SECOND = 240
HEALTHY_SECONDS = 5
TRIPPED = "canary_split_guard_tripped"
TRIPS = "canary_split_guard_trips_total"


def guard_stats(envoy: Envoy) -> tuple[int, int]:
    stats = envoy.stats("canary_split_guard_")
    value = lambda name: next((v for k, v in stats.items() if k.endswith(f";{name}")), -1)  # noqa: E731
    return value(TRIPPED), value(TRIPS)


def second_by_second(envoy: Envoy, traffic: Traffic, seconds: int, failing_since: float | None,
                     after_trip: int | None = None) -> float | None:
    """Prints one line a second, for `seconds` or until `after_trip` seconds after the guard's
    gauge first read 1; returns when that was, if it did."""
    tripped_at = None
    for _ in range(seconds):
        if after_trip is not None and tripped_at is not None and time.monotonic() - tripped_at >= after_trip:
            break
        start = time.monotonic()
        time.sleep(1.0)
        answers = traffic.since(start)
        count = lambda upstream, pinned: sum(1 for _, p, u, _ in answers if p == pinned and u == upstream)  # noqa: E731
        failed = sum(1 for _, _, _, status in answers if status >= 500)
        tripped, trips = guard_stats(envoy)
        since = f"{time.monotonic() - failing_since:5.1f}" if failing_since else "    -"
        print(f"{since:>7}  {count('canary', False):>14}  {count('primary', False):>15}  "
              f"{count('canary', True):>13}  {count('primary', True):>14}  {failed:>4}  {tripped:>7}  {trips:>5}",
              flush=True)
        if tripped == 1 and tripped_at is None:
            tripped_at = time.monotonic()
    return tripped_at


def header():
    print("failing  unpinned→canary  unpinned→primary  pinned→canary  pinned→primary   5xx  tripped  trips")
    print("   (s)       (per second)")


def main() -> int:
    upstreams = {name: ReleaseUpstream(name) for name in ("primary", "canary", "other")}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="canary-split-guard-"))
    ecds = workdir / "canary-split.json"
    config = bootstrap(filter_config(WEIGHT, GUARD), {n: u.port for n, u in upstreams.items()},
                       split_routes(PUBLIC, None, None) + [catch_all_route()], ecds_path=ecds)
    envoy = Envoy(config, concurrency=2).start()
    traffic = Traffic(envoy.port, PER_SECOND)
    try:
        print(f"Envoy on 127.0.0.1:{envoy.port} with two workers; no Prometheus, no rollout.")
        print(f"Route {PUBLIC}: canary_weight {WEIGHT}, guard {GUARD}")
        print(f"Traffic: {PER_SECOND} requests a second, sticky users (x-user-id), one in ten pinned (traffic: test)")
        print(f"The guard's figures are Envoy's admin stats {TRIPPED} and {TRIPS}.\n")
        traffic.start()
        header()
        second_by_second(envoy, traffic, HEALTHY_SECONDS, None)

        print("\nThe canary starts failing one request in five.")
        upstreams["canary"].failure_rate = 0.2
        failing_since = time.monotonic()
        tripped_at = second_by_second(envoy, traffic, GUARD["window_seconds"] + 6, failing_since, after_trip=5)
        if tripped_at is None:
            print("\nThe guard did not trip.", file=sys.stderr)
            return 1
        # From the first failing request to the first unpinned request that no longer went to the canary.
        last_unpinned_canary = max((t for t, pinned, upstream, _ in traffic.since(failing_since)
                                    if not pinned and upstream == "canary"), default=failing_since)
        print(f"\nThe guard took the canary out of the split {last_unpinned_canary - failing_since:.1f} s after it "
              f"started failing (its window: {GUARD['window_seconds']} s); the gauge read 1 by "
              f"{tripped_at - failing_since:.1f} s. From Envoy's log:")
        for line in envoy.log().splitlines():
            if "guard tripped" in line:
                print("  " + line.partition("wasm log ")[2])

        print("\nRoll back: canary_weight 0 (any change to the route ends the trip; the canary still fails).")
        write_ecds(ecds, filter_config(0, GUARD))
        header()
        second_by_second(envoy, traffic, 3, failing_since)
        return 0
    finally:
        traffic.stop()
        envoy.stop()
        for upstream in upstreams.values():
            upstream.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
