# Quick start: `make demo` then `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

# Reinstall only when the package metadata changes (or the venv is missing).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: venv
	$(PY) -m partir.cli demo

test: venv
	$(PY) -m pytest -q -n 2 tests

bench: venv
	$(PY) benchmarks/trace_speed.py
	$(PY) benchmarks/partition_speed.py
	$(PY) benchmarks/plan_vs_xla.py
	$(PY) benchmarks/runtime.py
	$(PY) benchmarks/simulate_speed.py
	$(PY) benchmarks/simulator_accuracy.py
	$(PY) benchmarks/what_if_175b.py
	$(PY) benchmarks/auto_quality.py
	$(PY) benchmarks/auto_search_time.py

lint: venv
	$(VENV)/bin/ruff check partir tests benchmarks
	$(VENV)/bin/ruff format --check partir tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
