"""The calibrated export's memory, planned from the model's shapes before it starts.

    free, why = available()                    # bytes: psutil's available, or the cgroup's room if less
    plan = plan_calibration(config, tokens)    # peak of the layer loop and of GPTQ per block, in bytes
    blocks = plan.fit(free)                    # decoder blocks GPTQ rounds at once; ConvertError if none fit

Containers and CI jobs limit memory with a cgroup (v2 memory.max, v1 memory.limit_in_bytes) that psutil
does not see: a plan taken from the machine's free memory alone would be killed by the OOM killer there.
The room in a cgroup is its limit less what it uses, plus the file cache it may reclaim (inactive_file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.errors import ConvertError

GiB = 2**30
UNLIMITED = 2**60  # a v1 cgroup's "no limit" is 2^63 rounded down to a page
MARGIN = 0.85  # of the free memory a plan may use (the allocator's slack, other processes)
MAX_GPTQ_BLOCKS = 1  # decoder blocks GPTQ rounds at once at most: 2 peaked at 3.5 GiB on the TinyLlama shape
SYS_CGROUP = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key and v.strip().isdigit():
                return int(v)
    except OSError:
        pass
    return 0


def cgroup_room(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = SYS_CGROUP) -> int | None:
    """Bytes this process's memory cgroup (v2 or v1; its own limit or an ancestor's, the least) still
    has room for, counting reclaimable file cache as room; None where no limit is set."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, ctrl, rel = line.split(":", 2)
        v1 = "memory" in ctrl.split(",")
        if not v1 and ctrl != "":
            continue
        base = root / "memory" if v1 else root
        if not base.is_dir():
            continue
        folder = base / rel.lstrip("/")
        while True:  # the least room of the cgroup and its ancestors
            if v1:
                limit, used = (
                    _read_int(folder / "memory.limit_in_bytes"),
                    _read_int(folder / "memory.usage_in_bytes"),
                )
                cache = _stat(folder / "memory.stat", "total_inactive_file")
            else:
                limit, used = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
                cache = _stat(folder / "memory.stat", "inactive_file")
            if limit is not None and limit < UNLIMITED and used is not None:
                rooms.append(max(0, limit - used + cache))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(rooms) if rooms else None


def available() -> tuple[int, str]:
    """(bytes free for this process, what says so): psutil's available memory, or the cgroup's room."""
    import psutil

    free = int(psutil.virtual_memory().available)
    room = cgroup_room()
    if room is not None and room < free:
        return room, "the cgroup's memory limit"
    return free, "available memory"


@dataclass
class CalibPlan:
    base: int  # this process before the pass (torch, the tokenizer)
    layer_loop: int  # one decoder layer, the carried activations, one layer's Gram matrices
    gptq_block: int  # GPTQ's memory per decoder block rounded at once
    n_blocks: int
    store: int = 0  # disk: every layer's Gram matrices, kept until GPTQ rounds with them (gram_store)
    streamed: bool = False  # no store: GPTQ rounds each layer inside the loop (layerwise.Recompute)

    def need(self, blocks: int) -> int:
        if self.streamed:
            return self.base + self.layer_loop + self.gptq_block * blocks
        return self.base + max(self.layer_loop, self.gptq_block * blocks)

    def fit(self, free: int, why: str = "available memory") -> int:
        """The decoder blocks GPTQ may round at once within ``free`` (MARGIN of it); one line if none."""
        room = int(free * MARGIN)
        fits = [k for k in range(1, min(MAX_GPTQ_BLOCKS, self.n_blocks) + 1) if self.need(k) <= room]
        if not fits:
            raise ConvertError(
                f"the calibrated export needs ~{self.need(1) / GiB:.1f} GiB of memory and "
                f"{free / GiB:.1f} GiB is free ({why})",
                hint="free memory, or export with --no-gptq (--imatrix none for llama.cpp's rounding alone)",
            )
        return max(fits)

    def on_gpu(self, gpu_free: int) -> CalibPlan:
        """The plan with its layer loop on a GPU with ``gpu_free`` bytes free (one line if it does not fit
        there): what stays in this process's memory is GPTQ's rounding, a block at a time."""
        if self.layer_loop > gpu_free * MARGIN:
            raise ConvertError(
                f"the calibration's layer loop needs ~{self.layer_loop / GiB:.1f} GiB of GPU memory and "
                f"{gpu_free / GiB:.1f} GiB is free",
                hint="free GPU memory, or run it on the CPU: MEDKIT_CALIB_DEVICE=cpu",
            )
        return CalibPlan(self.base, 0, self.gptq_block, self.n_blocks, self.store, self.streamed)


GRAMS_ENV = "MEDKIT_GRAMS"  # disk (the Gram store), recompute (a pass per quantized file), or auto (default)
DISK_SLACK = 64 * 2**20  # bytes left free beside the store and the outputs still to be written


def grams_on_disk(store: int, folder: Path, reserve: int) -> bool:
    """Whether GPTQ's Gram matrices (``store`` bytes) are kept on disk in ``folder`` until it rounds
    (gram_store), or computed again for each quantized file (layerwise.Recompute): on disk when they fit
    beside the ``reserve`` bytes the export has still to write. MEDKIT_GRAMS=disk or recompute decides."""
    import shutil

    asked = os.environ.get(GRAMS_ENV, "auto").strip().lower() or "auto"
    if asked not in ("auto", "disk", "recompute"):
        raise ConvertError(f"{GRAMS_ENV}={asked}: expected auto, disk or recompute")
    if asked != "auto":
        return asked == "disk"
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free >= store + reserve + DISK_SLACK


def plan_calibration(config: dict[str, Any], tokens: int, forward_bytes: int = 4) -> CalibPlan:
    """Peak bytes of the layer-by-layer pass and of GPTQ from a llama-layout ``config`` and the number of
    calibration ``tokens`` (activations in ``forward_bytes``: 4 float32, 2 bfloat16)."""
    from medkit.convert.quant.act_stats import FORWARD_TOKENS
    from medkit.convert.quant.gptq import BATCH_BYTES, SLICE_BYTES

    h, f = int(config["hidden_size"]), int(config["intermediate_size"])
    heads = int(config["num_attention_heads"])
    d = int(config.get("head_dim") or h // heads)
    q, kv = heads * d, int(config.get("num_key_value_heads") or heads) * d
    layer = h * (q + 2 * kv) + q * h + 3 * h * f  # weights of one decoder layer
    largest = max(f * h, h * (q + 2 * kv))
    grams = 4 * (h * h * 2 + f * f + q * q)  # attention input, MLP input, down and o inputs (float32)
    carried = 2 * tokens * h * forward_bytes  # the rows' hidden states, and one batch's output beside them
    batch = FORWARD_TOKENS * (3 * f + 4 * h) * 4 + 4 * 2048 * max(
        f, h
    )  # one forward's temporaries, rows held
    layer_loop = 4 * layer + 8 * largest + grams + carried + batch
    # GPTQ per block: the Gram matrices, their factors and the factors stacked; the float weights in act
    # order, their grids (two float32 arrays) and the codes
    gptq_block = 3 * grams + 4 * 4 * layer + 2 * layer
    # the output layer (vocab x h, untied): its Gram matrix and factors, and one slice of its rows at a time
    # (gptq.row_slices; a slice's float weights with their grids, codes and copies: ~12x, measured)
    if not config.get("tie_word_embeddings", False):
        vocab = int(config.get("vocab_size") or 0)
        head_bytes = 4 * vocab * h if 4 * vocab * h <= BATCH_BYTES else SLICE_BYTES
        gptq_block = max(gptq_block, 3 * 4 * h * h + 12 * head_bytes)
    n = int(config["num_hidden_layers"])
    return CalibPlan(_rss(), layer_loop, gptq_block, n, store=n * grams + 4 * h * h)  # and the head's input


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # noqa: BLE001 - no psutil: a torch process's usual size
        return GiB // 2
