"""Typed errors. The library raises these; the CLI turns them into one line and an exit code."""

from __future__ import annotations


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
