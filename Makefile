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

# The whole suite against a real broker. Kafka is stopped afterwards if this run
# started it; a broker that was already running is left alone. The unit tests (no
# Ray, no Kafka, CPU-bound) run beside the others (Ray and Kafka, mostly waiting on
# timers and the broker), in a process of their own; their report follows. The exit
# code is the first non-zero of the two pytest runs (5 when one ran no test).
test: venv system-deps
	@if scripts/kafka-local status >/dev/null 2>&1; then started=no; else started=yes; fi; \
	scripts/kafka-local up || exit $$?; \
	$(PY) -m pytest tests/unit -p no:cacheprovider $(PYTEST_ARGS) > .unit-tests.log 2>&1 & unit=$$!; \
	$(PY) -m pytest tests/actors tests/integration $(PYTEST_ARGS); rc=$$?; \
	wait $$unit; urc=$$?; \
	echo "---------------- tests/unit (run beside the above) ----------------"; \
	cat .unit-tests.log; \
	if [ $$started = yes ]; then scripts/kafka-local down; fi; \
	if [ $$rc -eq 0 ]; then rc=$$urc; fi; \
	exit $$rc

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
