# Quick start: `make demo` then `make test`. Both create .venv on first use, with a
# Python >= 3.12 (tools/find_python.sh: pyenv's is found too; or `make PYTHON=...`).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The oldest JAX partir supports (partir/backend/jax_compat.py SUPPORTED), in its own venv.
OLDEST_VENV := .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed
OLDEST_PINS := jax==0.11.1 jaxlib==0.11.1
# The fast subset run on the oldest JAX: tracing, rules, the interpreter, emission in both
# modes, XLA's compiled-program formats, and a scanned model end to end.
OLDEST_TESTS := tests/frontend tests/ir tests/rules tests/backend/test_hlo.py \
	tests/api/test_plan.py tests/backend/test_jax_compat.py tests/simulator/test_memory.py \
	tests/test_filecheck.py tests/property/test_roundtrip.py
OLDEST_SELECT := tests/api/test_numerics.py -k "gpt_scan and 4x2"

.PHONY: venv demo test test-oldest bench lint clean

venv: $(STAMP)

# Reinstall only when the package metadata changes, or the venv is missing or too old.
$(STAMP): pyproject.toml tools/find_python.sh
	@if ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
		rm -rf $(VENV); \
		python="$$(PYTHON='$(PYTHON)' tools/find_python.sh)" || exit 1; \
		echo "creating $(VENV) with $$python"; "$$python" -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: venv
	$(PY) -m partir.cli demo

test: venv
	$(PY) -m pytest -q -n 2 tests

$(OLDEST_STAMP): pyproject.toml tools/find_python.sh
	@if ! $(OLDEST_VENV)/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
		rm -rf $(OLDEST_VENV); \
		python="$$(PYTHON='$(PYTHON)' tools/find_python.sh)" || exit 1; \
		"$$python" -m venv $(OLDEST_VENV); \
	fi
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q -e ".[test]" $(OLDEST_PINS)
	@touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -c 'import jax; print("oldest supported jax:", jax.__version__)'
	$(OLDEST_VENV)/bin/python -m pytest -q -n 2 $(OLDEST_TESTS)
	$(OLDEST_VENV)/bin/python -m pytest -q -n 2 $(OLDEST_SELECT)

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
	rm -rf $(VENV) $(OLDEST_VENV) .pytest_cache .hypothesis build *.egg-info
