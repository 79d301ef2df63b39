"""Runtime fixtures: random LoRA adapters for the shared SmolLM2 GGUF (tests/fixtures.py), one loaded Runtime."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.runtime.lora_gguf import write_random_lora

# One thread: on a shared 2-core machine more threads busy-wait (OpenMP) and run 10x slower.
THREADS = int(os.environ.get("MEDKIT_TEST_THREADS", "1"))


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="session")
def patient_lora(smollm2_gguf, lora_dir) -> Path:
    return write_random_lora(smollm2_gguf, lora_dir / "patient.gguf", seed=1)


@pytest.fixture(scope="session")
def wrong_base_lora(smollm2_gguf, lora_dir) -> Path:
    return write_random_lora(smollm2_gguf, lora_dir / "wide.gguf", seed=2, n_in_override=2048)


@pytest.fixture(scope="session")
def runtime(smollm2_gguf, patient_lora):
    """One loaded SmolLM2 Runtime for the module's tests (loading costs ~1 s)."""
    pytest.importorskip("llama_cpp")
    from medkit.runtime.engine import Runtime

    rt = Runtime(smollm2_gguf, adapters={"patient": patient_lora}, ctx=1024, threads=THREADS, gpu_layers=0)
    yield rt
    rt.close()
