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

.PHONY: setup demo demo-icd10 demo-dpo demo-grpo bench-scale test test-fast test-latest bench bench-profile bench-constrain bench-pref lint format clean lock

setup: $(STAMP)

# The lock: every package of the dev install at an exact version with its hashes, for one platform (pip-tools'
# pip-compile; see the lock's header). Where this machine is that platform and TORCH is the default, setup
# installs exactly the lock (--require-hashes), then medkit itself (--no-deps); elsewhere it says so in one
# line and installs from pyproject's ranges. `make lock` regenerates it; `make test-latest` tries the newest.
LOCK          := requirements.lock
LOCK_PLATFORM := linux-x86_64-cp311
PLATFORM      := $(shell $(PY) -c 'import platform, sys; print(f"{sys.platform}-{platform.machine()}-cp{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null)
USE_LOCK      := $(and $(filter $(LOCK_PLATFORM),$(PLATFORM)),$(filter torch==2.13.0,$(TORCH)))

# Idempotent: creates .venv once and installs the lock (or, off its platform, torch first then the ranges).
# llama-cpp-python is compiled once; pip caches the wheel.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
ifneq ($(USE_LOCK),)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
else
	@echo "$(LOCK) is for $(LOCK_PLATFORM) with torch==2.13.0; this is $(PLATFORM) with $(TORCH): installing from pyproject's ranges"
	$(BIN)/python -m pip install -q -U pip wheel setuptools
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]' "$(TORCH)"
endif
	$(BIN)/python tests/llama_cpu_check.py || { \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q --no-cache-dir --force-reinstall --no-deps \
	    "llama-cpp-python==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')" \
	  && $(BIN)/python tests/llama_cpu_check.py; }
	touch $(STAMP)

demo: setup
	$(BIN)/python -m medkit.demo

demo-icd10: setup
	$(BIN)/python -m medkit.demo recipes/smollm2_icd10_demo.toml

# preference and reward tuning from the ICD-10 demo's SFT run (trained first if missing), then eval against
# that SFT run (its adapter scored beside, with the paired bootstrap interval of the difference)
SFT_ICD := runs/smollm2_icd10_demo/adapter/adapter_config.json
demo-dpo: setup
	test -f $(SFT_ICD) || $(BIN)/python -m medkit train recipes/smollm2_icd10_demo.toml
	$(BIN)/python -m medkit train recipes/smollm2_icd10_dpo_demo.toml --force
	$(BIN)/python -m medkit eval runs/smollm2_icd10_dpo_demo --against runs/smollm2_icd10_demo

demo-grpo: setup
	test -f $(SFT_ICD) || $(BIN)/python -m medkit train recipes/smollm2_icd10_demo.toml
	$(BIN)/python -m medkit train recipes/smollm2_icd10_grpo_demo.toml --force
	$(BIN)/python -m medkit eval runs/smollm2_icd10_grpo_demo --against runs/smollm2_icd10_demo

test: setup
	$(PYTEST) -q

test-fast: setup
	$(PYTEST) -q -m "not slow"

# Regenerate the lock from pyproject's ranges: the newest versions that fit, or those of LOCK_FROM (a
# `pip freeze` of a venv that passed `make test`). Commit it only after `make test` passes on it.
# pip-compile reads pip's own configuration (the local torch wheel's find-links).
lock:
	test -x $(BIN)/pip-compile || $(BIN)/python -m pip install -q pip-tools
	$(BIN)/pip-compile -q --resolver=backtracking --generate-hashes --allow-unsafe --strip-extras --extra dev \
	  --no-emit-index-url --no-emit-find-links --no-annotate $(if $(LOCK_FROM),-c $(LOCK_FROM)) -o $(LOCK) pyproject.toml
	sed -i -e '/^# WARNING: pip install will require/,/^medkit @ /d' -e 's/ --constraint=[^ ]*//' $(LOCK)
	sed -i '1i # platform: $(PLATFORM) with torch==2.13.0 (CPU); `make setup` installs it only there' $(LOCK)

# Drift watch (not CI): the newest releases pyproject allows, in their own venv, on the fast suite.
LATEST := .venv-latest
test-latest:
	test -x $(LATEST)/bin/python || $(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q -U pip wheel setuptools
	$(LATEST)/bin/python -m pip install -q "$(TORCH)"
	$(LATEST)/bin/python -m pip install -q -U --upgrade-strategy eager -e '.[dev]' "$(TORCH)"
	$(LATEST)/bin/python -m pip list --format=freeze > $(LATEST)/versions.txt
	$(LATEST)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider

bench: setup
	$(BIN)/python -m benchmarks

# where a training step's time goes (the SmolLM2 demo by default), and the FLOP count checked against torch
bench-profile: setup
	$(BIN)/python -m benchmarks profile

# calibrated export at real sizes: random-weight TinyLlama-1.1B / Llama-3.2-3B (/ Mistral-7B) shapes, medkit
# f16, plain and calibrated q4_k_m and llama.cpp's converter + quantizer side by side (time, peak RSS, ratios)
bench-scale: setup
	$(BIN)/python -m benchmarks scale

# constrained decoding: compile time (cold/warm), decode speed and first token, constrained vs not
bench-constrain: setup
	$(BIN)/python -m benchmarks constrain

# preference tuning's throughput: DPO tokens/s over SFT's on the ICD-10 demo's data and model (target >= 0.45x)
bench-pref: setup
	$(BIN)/python -m benchmarks pref

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
