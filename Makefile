# The two commands a new user needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKA := scripts/kafka-local

.PHONY: venv system-deps kafka-up kafka-down kafka-status test test-unit lint demo bench clean

# A virtualenv with the package and its dev extras. Re-installs when pyproject changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
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

test-unit: venv
	$(PY) -m pytest tests/unit -q
