# Benchmarks (issue 5). Included from the Makefile, which defines PYTHON, MODULE, `build` and
# `$(VENV)/.installed` (the venv with Envoy from PyPI) and `system-tools` (wrk and h2load from
# apt); the chart library comes from bench/requirements.txt.

BENCH_RUN = $(PYTHON) bench/run.py --envoy $(dir $(PYTHON))envoy --module $(MODULE)

.PHONY: bench bench-smoke bench-profile soak soak-smoke

## bench: the full suite (about 6 minutes on 2 cores); writes bench/results/latest.{md,png,json}
bench: build $(VENV)/.installed system-tools
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BENCH_RUN)

## bench-smoke: every configuration for a second; fails if one errs or makes no decisions
bench-smoke: build $(VENV)/.installed system-tools
	$(BENCH_RUN) --smoke

## bench-profile: where a request's cost goes (probe modules); writes bench/results/profile.md
bench-profile: build $(VENV)/.installed system-tools
	$(BENCH_RUN) --profile

SOAK = $(PYTHON) bench/soak.py
BENCH_REQUIREMENTS = $(PYTHON) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt

## soak: 10 minutes of HTTP/1.1 + HTTP/2 load with abandoned requests and a config push a minute;
## fails if memory grows after the warm-up, a VM fails or a 5xx; writes bench/results/soak.{png,md,json,csv}
soak: build $(VENV)/.installed system-tools
	$(BENCH_REQUIREMENTS)
	$(SOAK)

## soak-smoke: the same for 30 s with a push every 10 s, same checks; results in target/soak-smoke/
soak-smoke: build $(VENV)/.installed system-tools
	$(BENCH_REQUIREMENTS)
	$(SOAK) --duration 30 --push-every 10 --results target/soak-smoke
