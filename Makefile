# The two commands a new user needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKA := scripts/kafka-local

.PHONY: venv system-deps kafka-up kafka-down kafka-status test test-unit lint demo bench chaos clean

# A virtualenv with the package and its dev extras. Re-installs when pyproject changes.
# pip's and the build backend's notices go to $(VENV)/install.log, shown if it fails.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "installing the shipper and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev]'; } \
	  > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	touch $@

venv: $(VENV)/.installed

kafka-up:
	$(KAFKA) up

kafka-down:
	$(KAFKA) down

kafka-status:
	$(KAFKA) status

lint: venv
	$(VENV)/bin/ruff check shipper actors tests
	$(VENV)/bin/ruff format --check shipper actors tests
	$(VENV)/bin/mypy
	$(PY) scripts/gen-metrics-doc --check

test-unit: venv system-deps
	$(PY) -m pytest tests/unit -q

# Installs what the tests need outside Python (promtool, kcat) when it is missing.
system-deps:
	@if [ -x scripts/install-test-tools ]; then scripts/install-test-tools; fi

# The whole suite against real brokers: scripts/run-tests runs the unit tests, the
# tests that break the broker (on a second broker of their own) and the rest side by
# side, then the tests that need the machine's Ray alone. A broker it started is
# stopped afterwards. The exit code is the first non-zero pytest's (5: no test ran).
test: venv system-deps
	PY=$(PY) PYTEST_ARGS="$(PYTEST_ARGS)" scripts/run-tests

demo: venv
	scripts/kafka-local up
	$(PY) -m actors.demo $(DEMO_ARGS)

# The benchmark suite (bench/README.md): the pipeline against a bare confluent-kafka
# loop, kcat and the CLI, per codec, plus the latency and memory scenarios (~15 min);
# then the sources (file, HTTP) against the API pipeline, the DLQ's drain rate, and
# the fleet on 1, 2 and 3 simulated nodes.
# BENCH_ARGS=--quick for 30,000 entries; results in bench/results/latest.json.
bench: venv system-deps
	scripts/kafka-local up
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/bench_sources.py --json bench/results/sources.json
	$(PY) bench/bench_drain.py --json bench/results/drain.json
	$(PY) bench/bench_fleet.py --json bench/results/fleet.json

# The fault matrix at full size (tests/faultmatrix.py, about 20 minutes): every way in
# (API, pipe, --input, file source, HTTP) against a broker that is down at start, killed
# -9, frozen past the timeout, back during a replay, and a SIGTERM to each process
# group; writes the table into docs/operations.md and bench/results/chaos.json.
chaos: venv system-deps
	scripts/kafka-local up
	$(PY) -m tests.faultmatrix --full --docs docs/operations.md --json bench/results/chaos.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
