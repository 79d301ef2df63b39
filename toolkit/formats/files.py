"""Filesystem helpers every stage asks: free space, writable folders, atomic writes, byte sizes.

A leaf: imports nothing of medkit but medkit.errors. An interrupted write leaves the old file (or none),
never half of a new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medkit.errors import DiskSpaceError, WriteError, write_error

CACHE_ENV = "MEDKIT_CACHE"


def cache_root() -> Path:
    """medkit's cache (dequantized bases, tokenizers, compiled grammars): $MEDKIT_CACHE or ~/.cache/medkit."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "medkit").expanduser()


def check_free_space(directory: Path, needed_bytes: int, *, what: str = "output") -> None:
    """Raise DiskSpaceError when ``directory`` has less than ``needed_bytes`` free, WriteError when it is
    read-only or not writable (checked first: a read-only mount often reports 0 bytes free)."""
    directory = Path(directory)
    make_dirs(directory)
    check_writable(directory)
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise DiskSpaceError(
            f"not enough disk for {what}: need {fmt_bytes(needed_bytes)}, {fmt_bytes(free)} free in {directory}"
        )


def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB', 3 * 2**30 -> '3.0 GiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def make_dirs(directory: Path) -> None:
    """mkdir -p; a read-only or forbidden parent is a WriteError naming the folder."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (write_error(exc, directory) or exc) from None


def check_writable(directory: Path) -> None:
    """WriteError when files cannot be created in ``directory`` (read-only mount, no permission)."""
    if hasattr(os, "statvfs") and os.statvfs(directory).f_flag & os.ST_RDONLY:
        raise WriteError("read-only file system, cannot write here", where=str(directory))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise WriteError("permission denied, cannot write here", where=str(directory))


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place only on success."""
    final = Path(final)
    make_dirs(final.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    except OSError as exc:
        raise (write_error(exc, final) or exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600; give the file the mode a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            tmp_path.chmod(0o666 & ~umask)
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)
