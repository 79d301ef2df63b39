# The one list of dev commands. `make demo` and `make test` set themselves up on a fresh machine.
PY      ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.medkit-setup
PYTEST  ?= $(BIN)/python -m pytest
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python compiles llama.cpp with -march=native. Some x86 VMs list AMX in /proc/cpuinfo without
# enabling its register state, and the first decode dies with SIGILL; AMX is off in our build (a GPU or
# Metal build passes its own CMAKE_ARGS). Setup checks the installed build and rebuilds it if it cannot run.
NO_AMX  := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= $(if $(filter x86_64,$(shell uname -m)),-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)',)
export CMAKE_ARGS ?= $(LLAMA_CMAKE_ARGS)

.PHONY: setup demo demo-icd10 test test-fast bench bench-profile lint format clean

setup: $(STAMP)

# Idempotent: creates .venv once, pins torch first (CPU wheel unless TORCH= says otherwise), then
# installs medkit editable with every extra. llama-cpp-python is compiled once; pip caches the wheel.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip wheel setuptools
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]' "$(TORCH)"
	$(BIN)/python tests/llama_cpu_check.py || { \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q --no-cache-dir --force-reinstall --no-deps \
	    "llama-cpp-python==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')" \
	  && $(BIN)/python tests/llama_cpu_check.py; }
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

# where a training step's time goes (the SmolLM2 demo by default), and the FLOP count checked against torch
bench-profile: setup
	$(BIN)/python -m benchmarks profile

# mypy sees the one `medkit` namespace through a folder of links (toolkit/ + convert/ + tui/, as pyproject maps them)
TYPECHECK := .cache/typecheck
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/medkit
	for f in toolkit/*.py toolkit/*/; do ln -s "$(CURDIR)/$${f%/}" $(TYPECHECK)/medkit/; done
	ln -s "$(CURDIR)/convert" $(TYPECHECK)/medkit/convert && ln -s "$(CURDIR)/tui" $(TYPECHECK)/medkit/tui
	cd $(TYPECHECK) && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p medkit

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache build dist *.egg-info toolkit/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# GPU check (README "GPU check"): `make gpu-wheels` here, where PyPI is reachable, fills $(WHEELS)/wheels with
# what a bare CUDA machine lacks; `make gpu-check` there (python3 = the one with CUDA torch) installs them,
# runs `pytest -m gpu` and the training bench within a hard budget, and writes one JSON report.
WHEELS     ?= .gpu-wheels
GPU_REPORT ?= runs/gpu-check.json
GPU_BUDGET ?= 540
.PHONY: gpu-wheels gpu-check gpu-check-dry-run

gpu-wheels:
	$(BIN)/python -m benchmarks.gpu_wheels --dir $(WHEELS)

gpu-check:
	$(PY) -m benchmarks.gpu_check --wheels $(WHEELS) --out $(GPU_REPORT) --budget $(GPU_BUDGET)

gpu-check-dry-run:
	$(BIN)/python -m benchmarks.gpu_check --dry-run --wheels $(WHEELS) --out $(GPU_REPORT)
