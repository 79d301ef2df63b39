"""Typed errors. The library raises these; the CLI turns them into one line and an exit code."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class MedkitError(Exception):
    """Base class: a user-facing problem with a one-line message."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class MissingExtraError(MedkitError):
    """A verb needs an optional dependency group that is not installed."""

    exit_code = 2

    def __init__(self, verb: str, extra: str, module: str):
        super().__init__(
            f"'medkit {verb}' needs the '{extra}' extra (module '{module}' is missing): "
            f"pip install 'medkit[{extra}]'"
        )
        self.extra = extra


class RecipeError(MedkitError):
    """A recipe is invalid. ``problems`` holds every problem found, one line each."""

    def __init__(self, problems: list[str], *, source: str | None = None):
        self.problems = list(problems)
        if len(self.problems) == 1:  # one problem, one line
            super().__init__(f"recipe {source}: {self.problems[0]}" if source else self.problems[0])
            return
        head = f"{len(self.problems)} problem(s) in recipe"
        if source:
            head += f" {source}"
        super().__init__(head + ":\n  " + "\n  ".join(self.problems))

    def one_line(self) -> str:  # a recipe error lists each problem on its own line
        return self.message


class DataError(MedkitError):
    """The dataset cannot be turned into training examples."""


class ModelError(MedkitError):
    """A model, tokenizer or adapter cannot be loaded or does not fit."""


class TrainError(MedkitError):
    """Training cannot start or continue."""


class ConvertError(MedkitError):
    """Merging, GGUF export, quantization or verification failed."""


class RuntimeLoadError(MedkitError):
    """A GGUF model or adapter cannot be loaded by the runtime."""


class RunNotFoundError(MedkitError):
    """No run directory or export was found where one was expected."""


class DiskSpaceError(MedkitError):
    """Not enough free space to write an output."""


class EvalError(MedkitError):
    """An evaluation cannot be run as asked."""


class WriteError(MedkitError):
    """An output cannot be written there: a read-only file system or no permission."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS,)
_DENIED = (errno.EACCES, errno.EPERM)


def shown_path(filename: str | os.PathLike[str] | None) -> str:
    """The path a user knows: an atomic write's ``.<name>.<random>.partial`` shows as ``<name>``."""
    if not filename:
        return ""
    p = Path(os.fsdecode(filename))
    if p.name.startswith(".") and p.name.endswith(".partial"):
        stem = p.name[1 : -len(".partial")].rsplit(".", 1)[0]
        if stem:
            return str(p.with_name(stem))
    return str(p)


def describe_os_error(exc: OSError) -> str | None:
    """One line for the OS errors a user can fix (full disk, read-only, no permission); None for others."""
    where = shown_path(exc.filename)
    at = f" {where}" if where else ""
    if exc.errno in _NO_SPACE:
        return f"no space left on device, cannot write{at} (free some space or write elsewhere)"
    if exc.errno in _READ_ONLY:
        return f"read-only file system, cannot write{at} (choose a writable folder)"
    if exc.errno in _DENIED:
        return f"permission denied:{at or ' (no path)'}"
    return None


def write_error(exc: OSError, where: str | os.PathLike[str]) -> MedkitError | None:
    """A typed error for ``exc`` met while creating ``where`` (a folder or a file), or None to re-raise."""
    if exc.errno in _READ_ONLY:
        return WriteError("read-only file system, cannot write here", where=str(where))
    if exc.errno in _DENIED:
        return WriteError("permission denied, cannot write here", where=str(where))
    if exc.errno in _NO_SPACE:
        return DiskSpaceError("no space left on device", where=str(where))
    return None
