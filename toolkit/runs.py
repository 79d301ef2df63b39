"""Run directories: what `train` leaves and what `export`, `eval` and `chat` find without being told.

runs/<recipe-name>/
  recipe.toml  run.json  metrics.jsonl  loss.png  checkpoints/  adapter/  export/
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.errors import RunNotFoundError
from medkit.formats.files import atomic_write_text
from medkit.formats.gguf_types import precision_rank

RUNS_ROOT_ENV = "MEDKIT_RUNS"
ADAPTER_GGUF = "adapter.gguf"  # the LoRA GGUF `medkit export --adapter-only` writes into export/


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ROOT_ENV, "runs"))


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.toml"

    @property
    def manifest(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.path / "loss.png"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def export(self) -> Path:
        return self.path / "export"

    @property
    def merged(self) -> Path:
        return self.export / "merged"

    def is_run(self) -> bool:
        return self.recipe.is_file() or self.manifest.is_file()

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest.is_file():
            return {}
        return json.loads(self.manifest.read_text())

    def update_manifest(self, **sections: Any) -> dict[str, Any]:
        """Merge top-level keys into run.json atomically."""
        data = self.read_manifest()
        data.update(sections)
        atomic_write_text(self.manifest, json.dumps(data, indent=2, default=str) + "\n")
        return data

    def ggufs(self) -> list[Path]:
        """The export's GGUF files, highest precision first (f32 ... q4_0), then by name. A dot-name is an
        export's temporary file (the f16 intermediate, a .partial): never offered as a model."""

        def rank(p: Path) -> tuple[tuple[float, int], str]:
            return (precision_rank(p.stem.rsplit("-", 1)[-1]), p.name)

        if not self.export.is_dir():
            return []
        return sorted((p for p in self.export.glob("*.gguf") if p.is_file() and p.name[0] != "."), key=rank)

    def model_ggufs(self) -> list[Path]:
        """The export's model GGUFs (what chat, serve and eval load), in ggufs() order."""
        return [p for p in self.ggufs() if gguf_kind(p) == "model"]

    def adapter_ggufs(self) -> list[Path]:
        """The export's LoRA adapter GGUFs, in ggufs() order."""
        return [p for p in self.ggufs() if gguf_kind(p) == "adapter"]


def gguf_kind(path: Path) -> str:
    """ "model", "adapter" or "imatrix": the GGUF header's general.type; a file whose header cannot be read is told by
    the name medkit writes (ADAPTER_GGUF), so the verb that loads it reports the damage in one line."""
    from medkit.formats.gguf_header import read_gguf_kind

    kind = read_gguf_kind(path)
    if kind is None:
        return "adapter" if Path(path).name == ADAPTER_GGUF else "model"
    return kind if kind in ("adapter", "imatrix") else "model"  # export/imatrix.gguf is neither to load


def find_run(spec: str | os.PathLike[str] | None = None) -> RunDir:
    """A run by path or by recipe name under runs/; with no spec, the latest run."""
    if spec is None:
        return latest_run()
    p = Path(spec)
    for cand in (p, runs_root() / p):
        if cand.is_dir() and RunDir(cand).is_run():
            return RunDir(cand)
    raise RunNotFoundError(_not_a_run(p))


def _not_a_run(p: Path) -> str:
    """What ``p`` is and what it lacks, for a verb that wanted a run directory."""
    if p.is_file():
        return f"{p} is a file, not a run directory (a folder with recipe.toml/run.json)"
    if not p.is_dir():
        return f"no run directory at '{p}' (looked in ./ and {runs_root()}/)"
    if (p / "config.json").is_file():
        return f"{p} is a Hugging Face model folder, not a run directory (no recipe.toml/run.json)"
    return f"{p} is neither a run directory (no recipe.toml/run.json) nor an HF model folder (no config.json)"


def list_runs() -> list[RunDir]:
    root = runs_root()
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and RunDir(p).is_run()]
    return sorted(runs, key=lambda r: _mtime(r.path))


def latest_run() -> RunDir:
    runs = list_runs()
    if not runs:
        raise RunNotFoundError(
            f"no runs under {runs_root()}/", hint="train one first: medkit train recipes/smollm2_demo.toml"
        )
    return runs[-1]


def latest_export() -> Path:
    """The newest model GGUF under runs/*/export/ (adapter GGUFs excluded)."""
    cands = [g for r in list_runs() for g in r.model_ggufs()]
    if not cands:
        raise RunNotFoundError(
            f"no exported GGUF under {runs_root()}/*/export/", hint="run: medkit export --gguf q4_0"
        )
    return max(cands, key=_mtime)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0
