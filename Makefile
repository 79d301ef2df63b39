# The one list of dev commands. `make demo` and `make test` set themselves up on a fresh machine.
PY      ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.medkit-setup
PYTEST  ?= $(BIN)/python -m pytest
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo demo-icd10 test test-fast bench lint format clean

setup: $(STAMP)

# Idempotent: creates .venv once, pins torch first (CPU wheel unless TORCH= says otherwise), then
# installs medkit editable with every extra. llama-cpp-python is compiled once; pip caches the wheel.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip wheel setuptools
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]' "$(TORCH)"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m medkit.demo

demo-icd10: setup
	$(BIN)/python -m medkit.demo recipes/smollm2_icd10_demo.toml

test: setup
	$(PYTEST) -q

test-fast: setup
	$(PYTEST) -q -m "not slow"

bench: setup
	$(BIN)/python -m benchmarks

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache build dist *.egg-info toolkit/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
