# Benchmarks (issues 5 and 9). Included from the Makefile, which defines PYTHON, MODULE, `build` and
# `$(VENV)/.installed` (the venv with Envoy from PyPI) and `system-tools` (wrk, h2load and openssl
# from apt); the chart library comes from bench/requirements.txt.

BENCH_RUN = $(PYTHON) bench/run.py --envoy $(dir $(PYTHON))envoy --module $(MODULE) --cargo-module $(CARGO_MODULE)

.PHONY: bench bench-smoke soak soak-smoke

## bench: the full suite, a realistic and a bare gateway with probes (under 10 minutes on 2 cores);
## writes bench/results/latest.{md,png,json}
bench: build $(VENV)/.installed system-tools
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BENCH_RUN)

## bench-smoke: every configuration for a second; fails if one errs or makes no decisions
bench-smoke: build $(VENV)/.installed system-tools
	$(BENCH_RUN) --smoke

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
