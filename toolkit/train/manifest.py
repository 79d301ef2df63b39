"""What a training run leaves for people and for later verbs: metrics.jsonl, loss.png and run.json."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from medkit.formats.files import atomic_path, atomic_write_text


class MetricsLog:
    """Append-only metrics.jsonl, one JSON object per log or eval step."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [line for line in self.read() if line.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_loss(records: list[dict[str, Any]], out: Path, title: str = "") -> None:
    """loss.png: train loss and val loss against step, learning rate on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    lr = [(r["step"], r["lr"]) for r in records if "lr" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([x for x, _ in train], [y for _, y in train], label="train loss", color="tab:blue")
    if val:
        ax.plot([x for x, _ in val], [y for _, y in val], "o-", label="val loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if lr:
        ax2 = ax.twinx()
        (line,) = ax2.plot(
            [x for x, _ in lr], [y for _, y in lr], "--", color="tab:gray", alpha=0.7, label="learning rate"
        )
        ax2.set_ylabel("learning rate")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        handles.append(line)
        labels.append("learning rate")
    ax.legend(handles, labels, loc="upper right")
    _save(fig, ax, out, title)


def _save(fig: Any, ax: Any, out: Path, title: str) -> None:
    """Title, layout and an atomic PNG write, then the figure freed."""
    import matplotlib.pyplot as plt

    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_rewards(records: list[dict[str, Any]], out: Path, title: str = "") -> bool:
    """rewards.png: the per-step reward curves of preference and reward tuning (DPO/ORPO: reward margin and
    accuracy; GRPO: each reward's mean); False (nothing written) when the records hold none."""
    keys = sorted({k for r in records for k in r if k.startswith("reward_") and not k.endswith("_std")})
    if not keys:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([x for x, _ in points], [y for _, y in points], label=key.removeprefix("reward_"))
    ax.set_xlabel("step")
    ax.set_ylabel("reward (mean per log step)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    _save(fig, ax, out, title)
    return True


def versions() -> dict[str, str]:
    """Versions of Python, medkit and the libraries training depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("medkit", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def git_sha() -> str | None:
    """The commit of the medkit checkout in use (None outside a git checkout)."""
    import medkit

    try:
        res = subprocess.run(
            ["git", "-C", str(Path(medkit.__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def peak_memory(device: str) -> dict[str, Any]:
    """CUDA max allocated bytes on CUDA, else the process's peak resident set size."""
    if device == "cuda":
        import torch

        return {"kind": "cuda_max_allocated", "gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss *= 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return {"kind": "process_peak_rss", "gib": round(rss / 2**30, 3)}
    except ImportError:  # pragma: no cover - Windows
        import psutil

        return {"kind": "process_rss", "gib": round(psutil.Process().memory_info().rss / 2**30, 3)}


def hardware(device: str) -> dict[str, Any]:
    import os

    info: dict[str, Any] = {"device": device, "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if device == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
