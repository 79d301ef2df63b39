"""Resumable checkpoints: adapter weights, optimizer, scheduler, RNG states and data position.

    checkpoints/step-00000040/   adapter.safetensors  optimizer.json optimizer.safetensors  scheduler.json
                                 [scaler.json]  rng-rank0.json rng-rank0.safetensors ...  state.json recipe.toml
    checkpoints/best/            adapter.safetensors best.json (the best val loss so far)

Nothing in a checkpoint is pickled, so `--resume` never runs code from a file: every state_dict is split
into its tensors (safetensors) and the rest (JSON, with tuples and non-string keys marked); `.pt` files an
older medkit wrote are never read. A checkpoint is written to a `.partial` folder and renamed into place,
so a crash or a full disk never leaves a half one; `resumable` skips a damaged one and says why.
Only trainable tensors are saved: a LoRA checkpoint is megabytes.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medkit.errors import DiskSpaceError, TrainError

STATE = "state.json"
WEIGHTS = "adapter.safetensors"
STATES = ("optimizer", "scheduler")  # always written; "scaler" only with a grad scaler
PICKLED = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng-rank0.pt")  # older medkit: never loaded
STEP_NAME = re.compile(r"step-(\d+)")
# Keys that may change between an interrupted run and its resumption without altering the training math.
RESUME_SAFE = ("description", "eval.", "export.", "train.log_every", "train.save_every", "train.keep_last")


def _numbered(root: Path) -> list[Path]:
    """Every step-N folder under `root`, complete or not, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m[1]), p) for p in root.iterdir() if (m := STEP_NAME.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def step_dirs(root: Path) -> list[Path]:
    """Checkpoints under `root` that got as far as their state.json, oldest first."""
    return [p for p in _numbered(root) if (p / STATE).is_file()]


def latest(root: Path) -> Path | None:
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def problem(path: Path, rank: int = 0) -> str | None:
    """Why `--resume` cannot use checkpoint `path` (None when it is complete). Reads no tensor data."""
    from safetensors import safe_open

    if not (path / "optimizer.json").is_file() and any((path / n).is_file() for n in PICKLED):
        return "written by an older medkit as pickled .pt files, which are never loaded"
    stems = (*STATES, f"rng-rank{rank}")
    checks = [(STATE, lambda f: _trainer_state(f)), ("recipe.toml", lambda f: f.read_text())]
    checks += [(f"{s}.json", lambda f: read_state(path, f.stem, tensors=False)) for s in stems]
    names = [WEIGHTS] + [f"{s}.safetensors" for s in stems if (path / f"{s}.safetensors").is_file()]
    checks += [(n, lambda f: safe_open(str(f), framework="pt").keys()) for n in names]
    for name, check in checks:
        try:
            check(path / name)
        except FileNotFoundError as exc:
            return f"{Path(exc.filename or name).name} is missing"
        except Exception as exc:  # json, safetensors and format errors all mean the same to a user
            why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            return f"{name} is unreadable: {why}"
    return None


def _trainer_state(file: Path) -> None:
    state = json.loads(file.read_text())
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError("no trainer state in it")


def resumable(root: Path, rank: int = 0) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest complete checkpoint or None, [(newer damaged checkpoint, why), ...] newest first)."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(_numbered(root)):
        why = problem(path, rank)
        if why is None:
            return path, skipped
        skipped.append((path, why))
    return None, skipped


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
    """Write checkpoint `step` (every rank its RNG, the main process the rest), keep the last `keep_last`.

    A full disk raises DiskSpaceError naming the folder and the space it needs; nothing partial stays."""
    from safetensors.torch import save_file

    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.partial"
    if is_main and tmp.exists():
        shutil.rmtree(tmp)
    barrier()
    states = {f"rng-rank{rank}": pack(rng_state())}
    if is_main:
        states.update(optimizer=pack(optimizer.state_dict()), scheduler=pack(scheduler.state_dict()))
        if scaler is not None:
            states["scaler"] = pack(scaler.state_dict())
    weights = trainable_state(model) if is_main else {}
    needed = sum(t.numel() * t.element_size() for t in weights.values()) + sum(map(nbytes, states.values()))
    with disk_full_guard(final, tmp, needed + len(recipe_toml) + 4096):
        tmp.mkdir(parents=True, exist_ok=True)
        write_state(tmp, f"rng-rank{rank}", states.pop(f"rng-rank{rank}"))
        barrier()
        if is_main:
            save_file(weights, str(tmp / WEIGHTS))
            for stem, value in states.items():
                write_state(tmp, stem, value)
            (tmp / "recipe.toml").write_text(recipe_toml)
            (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")
            normal_modes(tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
    if is_main:
        for old in step_dirs(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load(
    path: Path, *, model: Any, optimizer: Any, scheduler: Any, scaler: Any, rank: int = 0
) -> dict[str, Any]:
    """Restore everything `save` wrote (no pickle anywhere); returns the trainer state dict."""
    from safetensors.torch import load_file

    if not (path / f"rng-rank{rank}.json").is_file():
        raise TrainError(
            f"checkpoint {path} has no RNG state for rank {rank} (was it written with fewer processes?)"
        )
    why = problem(path, rank)
    if why is not None:
        raise TrainError(f"checkpoint {path} is corrupt: {why}", hint="resume from another one, or --force")
    load_trainable(model, load_file(str(path / WEIGHTS)), path)
    try:
        optimizer.load_state_dict(read_state(path, "optimizer"))
        scheduler.load_state_dict(read_state(path, "scheduler"))
        if scaler is not None and (path / "scaler.json").is_file():
            scaler.load_state_dict(read_state(path, "scaler"))
        set_rng_state(read_state(path, f"rng-rank{rank}"))
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise TrainError(f"checkpoint {path} does not fit this run: {exc}") from None
    return json.loads((path / STATE).read_text())


def save_best(root: Path, model: Any, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    best = root / "best"
    tmp = root / ".best.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    weights = trainable_state(model)
    with disk_full_guard(best, tmp, sum(t.numel() * t.element_size() for t in weights.values()) + 4096):
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / WEIGHTS))
        (tmp / "best.json").write_text(json.dumps(info, indent=2) + "\n")
        normal_modes(tmp)
        shutil.rmtree(best, ignore_errors=True)
        tmp.rename(best)


def load_best(root: Path, model: Any) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    best = root / "best"
    if not (best / "best.json").is_file():
        return None
    load_trainable(model, load_file(str(best / WEIGHTS)), best)
    return json.loads((best / "best.json").read_text())


# ---- state_dicts without pickle ----------------------------------------------------------------------
def _encode(obj: Any, tensors: dict[str, Any]) -> Any:
    """JSON for `obj`; its tensors go into `tensors` (named by position) and are referenced by name."""
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(x, tensors) for x in obj]}
    if isinstance(obj, list):
        return [_encode(x, tensors) for x in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TrainError(f"cannot store a {type(obj).__name__} in a checkpoint (only tensors, numbers and text)")


def _decode(obj: Any, tensors: dict[str, Any]) -> Any:
    import numpy as np

    if isinstance(obj, list):
        return [_decode(x, tensors) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in "biuf":
            raise ValueError(f"array of dtype {dtype} in a checkpoint")
        return np.asarray(obj["__ndarray__"], dtype=dtype)
    if "__tuple__" in obj:
        return tuple(_decode(x, tensors) for x in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def pack(value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON document, tensors) for a state_dict, an RNG state...; `nbytes` tells their size on disk."""
    tensors: dict[str, Any] = {}
    doc = {"format": 1, "state": _encode(value, tensors), "tensors": len(tensors)}
    return doc, tensors


def nbytes(packed: tuple[dict[str, Any], dict[str, Any]]) -> int:
    doc, tensors = packed
    return len(json.dumps(doc)) + sum(t.numel() * t.element_size() for t in tensors.values())


def write_state(folder: Path, stem: str, packed: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """A `pack`ed state as stem.json, its tensors as stem.safetensors."""
    from safetensors.torch import save_file

    doc, tensors = packed
    if tensors:
        save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(doc) + "\n")


def read_state(folder: Path, stem: str, *, tensors: bool = True) -> Any:
    """What `write_state` wrote; with tensors=False only the JSON is read and checked (for `problem`)."""
    from safetensors.torch import load_file

    doc = json.loads((folder / f"{stem}.json").read_text())
    if not isinstance(doc, dict) or doc.get("format") != 1 or "state" not in doc:
        raise ValueError(f"{stem}.json is not a medkit state file")
    if not tensors:
        if doc.get("tensors") and not (folder / f"{stem}.safetensors").is_file():
            raise FileNotFoundError(2, "missing", str(folder / f"{stem}.safetensors"))
        return doc["state"]
    loaded = load_file(str(folder / f"{stem}.safetensors")) if doc.get("tensors") else {}
    return _decode(doc["state"], loaded)


# ---- writing safely --------------------------------------------------------------------------------
def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT as an OSError, or as the SafetensorError that safetensors raises for it."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return any(s in text for s in ("os error 28", "os error 122", "No space left on device", "StorageFull"))


def disk_full_error(final: Path, needed: int) -> DiskSpaceError:
    from medkit.formats.files import fmt_bytes

    where = final.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = fmt_bytes(shutil.disk_usage(where).free)
    except OSError:
        free = "unknown"
    return DiskSpaceError(
        f"disk full while writing {final}: it needs about {fmt_bytes(needed)} free, {free} free in {where}",
        hint="free some space and run again",
    )


@contextmanager
def disk_full_guard(final: Path, tmp: Path, needed: int | Callable[[], int]) -> Iterator[None]:
    """Writes into `tmp` (a folder renamed to `final`): on any failure `tmp` is removed; a full disk
    becomes one DiskSpaceError naming `final` and the space it needs (`needed`, or what it returns)."""
    try:
        yield
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full_error(final, needed() if callable(needed) else needed) from None
        raise


def normal_modes(folder: Path) -> None:
    """Give the files in `folder` the mode a plain open() would (temp-file writers leave 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in folder.rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~umask)


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
