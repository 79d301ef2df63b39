"""Helpers of `medkit chat`: model and adapter resolution, the history store, the token buffer."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from medkit.errors import MedkitError

DISCLAIMER = "⚕ Answers are information, not medical advice. Ask a clinician about your own health."


def parse_adapters(specs: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise click.BadParameter(f"'{spec}': expected NAME=PATH", param_hint="--adapter")
        if name.strip() == "base":
            raise click.BadParameter(
                "'base' is reserved for the model without adapter", param_hint="--adapter"
            )
        out[name.strip()] = path.strip()
    return out


def resolve_model(spec: str | None) -> tuple[Path, dict[str, str]]:
    """A model GGUF from a path, a run directory, or (None) the latest export; plus the run's adapters."""
    from medkit import runs

    if spec is None:
        try:
            model = runs.latest_export()
        except MedkitError as exc:
            raise MedkitError(
                "no model given and no exported GGUF found",
                hint="run `medkit export --gguf q4_0` first, or pass a GGUF: medkit chat model.gguf",
            ) from exc
        found = runs.RunDir(model.parent.parent)
    else:
        p = Path(spec)
        if p.suffix == ".gguf" or p.is_file():
            return p, {}
        found = runs.find_run(spec)
        models = [g for g in found.ggufs() if "adapter" not in g.name]
        if not models:
            raise MedkitError(
                f"run '{found.name}' has no exported GGUF", hint="run `medkit export --gguf q4_0`"
            )
        model = max(models, key=lambda g: g.stat().st_mtime)
    adapters = {re.sub(r"\W+", "-", g.stem): str(g) for g in found.ggufs() if "adapter" in g.name}
    return model, adapters


def open_store(db: str | None) -> tuple[Any, str | None]:
    """The chat store, or an in-memory one plus a warning when the file cannot be used (kept as is)."""
    from medkit.history import ChatStore, HistoryError

    try:
        return ChatStore(db), None
    except HistoryError as exc:
        return ChatStore(":memory:"), f"{exc.one_line()} — this session's chats are not saved"


class TokenBuffer:
    """Pieces appended by the generation thread, taken in batches by the UI thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self.count = 0
        self.started = time.perf_counter()

    def put(self, piece: str) -> None:
        with self._lock:
            self._pieces.append(piece)
            self.count += 1

    def take(self) -> str:
        with self._lock:
            if not self._pieces:
                return ""
            text = "".join(self._pieces)
            self._pieces.clear()
            return text
