"""The Gram matrices of the layer-by-layer calibration pass, kept on disk until GPTQ rounds with them.

    store = GramStore(out_dir / ".name.grams.partial")     # a hidden folder the export's orphan rule removes
    store.put({"blk.0.attn_q.weight": h, "blk.0.attn_k.weight": h, ...})   # one file per distinct input
    for part in store.parts(budget):                       # a few decoder blocks at a time
        grams = store.load(part)                           # {GGUF weight: float32 tensor}, shared ones shared
    store.remove()

A 1.1B model's Gram matrices take ~4 GiB in float32 (a 7B's ~33 GiB): held in memory they were what made
the calibrated export grow with the model. Written as each layer finishes and read back for the few blocks
GPTQ is rounding, memory holds a few layers' worth. Weights fed one input (q/k/v, gate/up) share one file.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def block_of(name: str) -> int:
    """The decoder block of a GGUF weight (blk.N.*), or -1 (output.weight, ...: after the last block)."""
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else -1


class GramStore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, str] = {}  # GGUF weight -> file of its input's Gram matrix
        self.sizes: dict[str, int] = {}  # file -> bytes
        self.widths: dict[str, int] = {}  # GGUF weight -> its Gram matrix's width
        self.budget: int | None = None  # bytes of Gram matrices GPTQ reads back at once (the memory plan's)

    def put(self, grams: dict[str, Any]) -> None:
        """Write each distinct matrix of {weight: Gram matrix} once (weights sharing one share its file)."""
        done: dict[int, str] = {}
        for name, h in grams.items():
            if id(h) not in done:
                file = f"{len(self.sizes):05d}.npy"
                arr = h.detach().cpu().numpy() if hasattr(h, "detach") else np.asarray(h)
                np.save(self.folder / file, np.ascontiguousarray(arr, dtype=np.float32))
                done[id(h)] = file
                self.sizes[file] = int(arr.shape[0]) ** 2 * 4
            self.files[name] = done[id(h)]
            self.widths[name] = int(h.shape[0])

    def close_writing(self) -> None:
        """Nothing buffered: every put is on disk when it returns (kept for the writer's symmetry)."""

    def __contains__(self, name: object) -> bool:
        return name in self.files

    def __iter__(self) -> Any:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def keys(self) -> Any:
        return self.files.keys()

    def block_bytes(self) -> dict[int, int]:
        """Bytes of Gram matrices per decoder block (-1: the weights after the last block)."""
        out: dict[int, int] = {}
        seen: set[str] = set()
        for name, file in self.files.items():
            if file not in seen:
                seen.add(file)
                out[block_of(name)] = out.get(block_of(name), 0) + self.sizes[file]
        return out

    def parts(self, budget: int, names: set[str] | None = None) -> list[list[str]]:
        """The stored weights (those in ``names``) by block, cut into runs of whole blocks whose Gram
        matrices take at most ``budget`` bytes (one block alone when it takes more)."""
        per = self.block_bytes()
        order = sorted(per, key=lambda b: (b < 0, b))
        out: list[list[str]] = []
        used = budget + 1
        for b in order:
            members = [n for n in self.files if block_of(n) == b and (names is None or n in names)]
            if not members:
                continue
            if used + per[b] > budget:
                out.append([])
                used = 0
            out[-1].extend(members)
            used += per[b]
        return out

    def load(self, names: list[str]) -> dict[str, Any]:
        """{weight: float32 torch tensor} for ``names``; weights sharing a file share one tensor."""
        import torch

        got: dict[str, Any] = {}
        out = {}
        for name in names:
            file = self.files[name]
            if file not in got:
                got[file] = torch.from_numpy(np.load(self.folder / file))
            out[name] = got[file]
        return out

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def refiner(self, f16: Path, budget: int) -> Any:
        """medkit.convert.quant.calibrate.refiner's function for a store: each quantized file's codes rounded a run of
        whole blocks at a time (``budget`` bytes of their Gram matrices read back, then freed)."""
        from medkit.convert import memtrace
        from medkit.convert.quant.gptq import RefineResult, refinable_shapes, refine

        def run(path: Path) -> RefineResult:
            total = RefineResult(0, 0.0, {})
            for part in self.parts(budget, set(refinable_shapes(f16))):
                memtrace.phase(f"gptq: blk.{block_of(part[0])}")
                total.add(refine(path, f16, self.load(part), part, {}, keep_weights=False))
            return total

        return run
