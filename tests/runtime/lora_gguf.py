"""Test helper: write a small random GGUF LoRA adapter for a GGUF base (until medkit.convert.adapter.lora lands).

Layout as llama.cpp reads it (ggml ne order): for a base weight of ne [n_in, n_out], ``lora_a`` is
[n_in, r] and ``lora_b`` is [r, n_out]; in numpy order (what GGUFWriter takes) that is (r, n_in) and
(n_out, r).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medkit.runtime.engine import read_gguf_info


def write_random_lora(
    base: Path,
    out: Path,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    std: float = 0.1,
    seed: int = 0,
    targets: Sequence[str] = ("attn_q", "attn_v", "ffn_down"),
    n_in_override: int | None = None,
) -> Path:
    """A LoRA GGUF whose A/B are Gaussian(0, std): big enough to change greedy outputs.

    ``n_in_override`` makes the adapter for a base with another width (to test the refusal).
    """
    import gguf

    info = read_gguf_info(base)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(out), arch=info.arch)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for name, shape in info.tensors.items():
        parts = name.split(".")
        if len(shape) != 2 or parts[0] != "blk" or parts[2] not in targets:
            continue
        n_in, n_out = shape
        n_in = n_in_override or n_in
        writer.add_tensor(f"{name}.lora_a", rng.normal(0, std, (rank, n_in)).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", rng.normal(0, std, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
