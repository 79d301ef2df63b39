"""Whether an export can be trusted: which adapter it was made from, and nothing half-written in it.

A run's adapter is identified by a content hash: sha256 over adapter_config.json and the adapter's weight
file(s), each name and byte length fed in before the bytes. `medkit merge` records it in
export/merged/medkit_merge.json; every GGUF medkit writes from a merged folder or an adapter carries it in
its metadata as ``medkit.adapter.sha256``. `medkit export` rebuilds a merge whose hash no longer matches;
`medkit eval` and `medkit chat` warn about a GGUF whose hash does not.

One export or merge writes into a folder at a time (`export_session`: a lock file, removed afterwards); it
starts by deleting the temp files that a killed export left there (``.<output>.XXXXXXXX.partial``, the f16
intermediate, ``.merged.old-<pid>``): no live writer can own them, since it would hold the lock.

Torch-free (chat imports this): the GGUF header is read by medkit.formats.gguf_header.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medkit.errors import ConvertError, MedkitError

ADAPTER_KEY = "medkit.adapter.sha256"
MERGE_RECORD = "medkit_merge.json"  # written by medkit.convert.adapter.merge into the merged folder
RECORD_FIELD = "adapter_sha256"
_WEIGHT_GLOBS = ("adapter_model*.safetensors", "adapter_model*.bin")
_CHUNK = 1 << 20


def adapter_files(adapter_dir: Path) -> list[Path]:
    """The files that make an adapter what it is: its config and its weights (tokenizer files excluded)."""
    adapter_dir = Path(adapter_dir)
    weights = sorted({p for g in _WEIGHT_GLOBS for p in adapter_dir.glob(g) if p.is_file()})
    config = adapter_dir / "adapter_config.json"
    return ([config] if config.is_file() else []) + weights


def adapter_hash(adapter_dir: str | Path) -> str | None:
    """sha256 (hex) of a PEFT adapter folder's config and weights; None when it holds no adapter."""
    files = adapter_files(Path(adapter_dir))
    if not files or files[0].name != "adapter_config.json" or len(files) < 2:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def recorded_merge_hash(merged_dir: str | Path) -> str | None:
    """The adapter hash a merged folder records (None: no record, or a merge made before medkit kept one)."""
    record = Path(merged_dir) / MERGE_RECORD
    try:
        value = json.loads(record.read_text(encoding="utf-8")).get(RECORD_FIELD)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def merge_stale_reason(merged_dir: str | Path, adapter_dir: str | Path) -> str | None:
    """Why ``merged_dir`` does not hold ``adapter_dir`` merged (one line), or None when it does or when the
    run has no adapter to compare with."""
    current = adapter_hash(adapter_dir)
    if current is None or not Path(merged_dir).is_dir():
        return None
    recorded = recorded_merge_hash(merged_dir)
    if recorded == current:
        return None
    if recorded is None:
        return f"{merged_dir} records no adapter hash, so it may hold another adapter than {adapter_dir}"
    return f"{merged_dir} was merged from adapter {recorded[:12]}, {adapter_dir} is now {current[:12]}"


def gguf_adapter_hash(gguf: str | Path) -> str | None:
    """The ``medkit.adapter.sha256`` a GGUF records, or None (no such key). RuntimeLoadError if unreadable."""
    from medkit.formats.gguf_header import read_gguf_info

    value = read_gguf_info(gguf, what="GGUF").meta.get(ADAPTER_KEY)  # magic, version, truncation checked
    return value if isinstance(value, str) and value else None


def run_of_export(gguf: str | Path) -> Path | None:
    """runs/<name>/ when ``gguf`` lives in runs/<name>/export/, else None."""
    folder = Path(gguf).absolute().parent
    run = folder.parent
    if folder.name != "export" or not ((run / "recipe.toml").is_file() or (run / "run.json").is_file()):
        return None
    return run


def _newest_mtime(files: list[Path]) -> float:
    return max(p.stat().st_mtime for p in files)


def stale_reason(gguf: str | Path) -> str | None:
    """One line saying why a GGUF in runs/<name>/export/ no longer matches runs/<name>/adapter/, or None
    (it matches, it lives outside a run, the run has no adapter, or the file cannot be read: the caller's
    own load reports that). A GGUF that records no hash is stale when the adapter was written after it."""
    gguf = Path(gguf)
    run = run_of_export(gguf)
    if run is None:
        return None
    adapter = run / "adapter"
    try:
        current = adapter_hash(adapter)
        if current is None:
            return None
        recorded = gguf_adapter_hash(gguf)
        if recorded is None:
            if _newest_mtime(adapter_files(adapter)) <= gguf.stat().st_mtime:
                return None
            return (
                f"{gguf} records no adapter hash and {adapter}/ was written after it: it may hold old "
                f"weights (re-export: medkit export {run} --force)"
            )
    except (OSError, MedkitError):
        return None
    if recorded == current:
        return None
    return (
        f"{gguf} was made from adapter {recorded[:12]}, but {adapter}/ is now {current[:12]} "
        f"(retrained?): it holds old weights (re-export: medkit export {run} --force)"
    )


# ---- one writer per export folder, and what killed writers left ------------------------------------

LOCK_NAME = ".medkit-export.lock"
# what medkit's atomic writes (mkstemp / mkdtemp) and merge's folder swap leave when killed
ORPHAN = re.compile(
    r"^\.(?:.+\.gguf|Modelfile|merged)\.[a-z0-9_]{8}\.partial$|^\..+\.intermediate\.gguf$|^\.merged\.old-\d+$"
)
_HELD: set[Path] = set()  # folders this process holds the lock of (export calls merge inside)


def remove_orphans(folder: Path) -> list[str]:
    """Delete what killed exports left in ``folder``; the caller holds its lock. Returns the names."""
    removed = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if ORPHAN.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on folder/.medkit-export.lock, deleted on release (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the rule (one export per folder at a time) still holds
        yield
        return
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConvertError(
                "another medkit export or merge is writing here; wait for it to finish", where=str(folder)
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break  # not a file its last holder already deleted
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def export_session(folder: Path, log: Callable[[str], Any] = print) -> Iterator[None]:
    """Hold ``folder``'s lock and clear what interrupted exports left there first (re-entrant)."""
    key = Path(folder).resolve()
    if key in _HELD:
        yield
        return
    key.mkdir(parents=True, exist_ok=True)
    with _lock(key):
        _HELD.add(key)
        try:
            removed = remove_orphans(key)
            if removed:
                log(
                    f"removed {len(removed)} temp file(s) an interrupted export left in {folder}: {', '.join(removed)}"
                )
            yield
        finally:
            _HELD.discard(key)
