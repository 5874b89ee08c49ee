# Benchmarks (issues 5 and 9). Included from the Makefile, which defines PYTHON, MODULE, `build` and
# `$(VENV)/.installed` (the venv with Envoy from PyPI) and `system-tools` (wrk, h2load and openssl
# from apt); the chart library comes from bench/requirements.txt.

BENCH_RUN = $(PYTHON) bench/run.py --envoy $(dir $(PYTHON))envoy --module $(MODULE) --cargo-module $(CARGO_MODULE)

.PHONY: bench bench-smoke

## bench: the full suite, a realistic and a bare gateway with probes (under 10 minutes on 2 cores);
## writes bench/results/latest.{md,png,json}
bench: build $(VENV)/.installed system-tools
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BENCH_RUN)

## bench-smoke: every configuration for a second; fails if one errs or makes no decisions
bench-smoke: build $(VENV)/.installed system-tools
	$(BENCH_RUN) --smoke
