"""Resumable checkpoints: adapter weights, optimizer, scheduler, RNG states and data position.

    checkpoints/step-00000040/   adapter.safetensors optimizer.pt scheduler.pt [scaler.pt]
                                 rng-rank0.pt ... state.json recipe.toml
    checkpoints/best/            adapter.safetensors best.json (the best val loss so far)

A checkpoint is written to a `.partial` folder and renamed into place, so a crash never leaves a half one
that `--resume` would pick up. Only trainable tensors are saved: a LoRA checkpoint is megabytes.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medkit.errors import TrainError

STATE = "state.json"
WEIGHTS = "adapter.safetensors"
# Keys that may change between an interrupted run and its resumption without altering the training math.
RESUME_SAFE = ("description", "eval.", "export.", "train.log_every", "train.save_every", "train.keep_last")


def step_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest(root: Path) -> Path | None:
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, tensors: dict[str, Any], where: Path) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(tensors):
        extra = sorted(set(tensors) ^ set(params))[:3]
        raise TrainError(f"checkpoint {where} does not match this model's adapter (e.g. {', '.join(extra)})")
    for name, p in params.items():
        p.data.copy_(tensors[name].to(p.device, p.dtype))


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    root: Path,
    step: int,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    state: dict[str, Any],
    recipe_toml: str,
    keep_last: int,
    rank: int = 0,
    is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Write checkpoint `step` (every rank its RNG, the main process the rest), keep the last `keep_last`."""
    import torch
    from safetensors.torch import save_file

    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.partial"
    if is_main and tmp.exists():
        shutil.rmtree(tmp)
    barrier()
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    barrier()
    if is_main:
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "recipe.toml").write_text(recipe_toml)
        (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in step_dirs(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load(
    path: Path, *, model: Any, optimizer: Any, scheduler: Any, scaler: Any, rank: int = 0
) -> dict[str, Any]:
    """Restore everything `save` wrote; returns the trainer state dict."""
    import torch
    from safetensors.torch import load_file

    load_trainable(model, load_file(str(path / WEIGHTS)), path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    if scaler is not None and (path / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=False))
    rng = path / f"rng-rank{rank}.pt"
    if not rng.is_file():
        raise TrainError(
            f"checkpoint {path} has no RNG state for rank {rank} (was it written with fewer processes?)"
        )
    set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((path / STATE).read_text())


def save_best(root: Path, model: Any, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    best = root / "best"
    tmp = root / ".best.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / WEIGHTS))
    (tmp / "best.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(best, ignore_errors=True)
    tmp.rename(best)


def load_best(root: Path, model: Any) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    best = root / "best"
    if not (best / "best.json").is_file():
        return None
    load_trainable(model, load_file(str(best / WEIGHTS)), best)
    return json.loads((best / "best.json").read_text())


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def recipe_diff(old_toml: str, new_toml: str, *, ignore: tuple[str, ...] = RESUME_SAFE) -> list[str]:
    """'key: old -> new' for every key that differs between two resolved recipes (resume-safe keys skipped)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    old, new = _flatten(tomllib.loads(old_toml)), _flatten(tomllib.loads(new_toml))
    lines = []
    for key in sorted(set(old) | set(new)):
        if key.startswith(ignore) or old.get(key) == new.get(key):
            continue
        lines.append(f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}")
    return lines
