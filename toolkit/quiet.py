"""Quiet, honest output: a verb prints medkit's own lines and progress; other packages' chatter is held back.

`start(verbose)` is the CLI's first step (beside `network.start`). Unless ``-v/--verbose`` or
``MEDKIT_DEBUG=1``:
- progress bars of other packages are off (tqdm's own ``TQDM_DISABLE``, huggingface_hub's and datasets'
  switches, read when they are imported; transformers' logging tqdm follows huggingface_hub's);
- the loggers of other packages pass only errors to the terminal; their warnings and the Python warnings
  raised inside them are kept in a log file (``$MEDKIT_CACHE/logs/<verb>.log``), and at exit one line
  says how many were held back and where;
- stderr itself is never redirected: a real error, a traceback or a crash of a library still shows.
A message of a library that matters to the user is re-said by medkit in its own words where medkit
detects the condition (e.g. convert/arch refusing a config llama.cpp will not run), not passed through.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import warnings
from pathlib import Path

DEBUG_ENV = "MEDKIT_DEBUG"
QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "BITSANDBYTES_NOWELCOME": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
LIBRARIES = (
    "transformers", "datasets", "huggingface_hub", "peft", "accelerate", "bitsandbytes", "torch",
    "kernels", "gguf", "sentencepiece", "tokenizers", "filelock", "urllib3", "httpx", "matplotlib", "fsspec",
)  # fmt: skip
# a Python warning is held back when the code it points at is a library's, or when its text names a library
# API that a library calls on medkit's behalf (its stacklevel points the warning at medkit's line)
_LIBRARY_TEXT = re.compile(r"is_gradient_checkpointing|torch\.utils\.checkpoint|use_reentrant")

_held: list[str] = []
_state: dict[str, object] = {"verbose": True, "log": None, "failed": False}


def is_verbose() -> bool:
    return bool(_state["verbose"])


def start(*, verbose: bool = False, verb: str = "medkit") -> None:
    """Hold back other packages' output for this process unless ``verbose`` (or MEDKIT_DEBUG=1)."""
    verbose = verbose or bool(os.environ.get(DEBUG_ENV))
    _state["verbose"] = verbose
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    handler = _HoldHandler()
    for name in LIBRARIES:
        lib = logging.getLogger(name)
        lib.addHandler(handler)
        lib.propagate = False
        lib.setLevel(logging.WARNING)
    warnings.showwarning = _show_warning  # Python's own filters decide what is shown; this decides where
    _state["log"] = _log_path(verb)
    _silence_loaded_libraries()
    atexit.register(_report)


def failed() -> None:
    """The verb ends on an error line: the held messages go to the log file without a line of their own."""
    _state["failed"] = True


def verbose_option_help() -> str:
    return f"Show other packages' warnings and progress bars too (or {DEBUG_ENV}=1)."


def _silence_loaded_libraries() -> None:
    """Libraries imported before start() read their switches already: set them directly."""
    tlog = sys.modules.get("transformers.utils.logging")
    if tlog is not None:
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()


class _HoldHandler(logging.Handler):
    """Errors of a library go to stderr as they are; anything lower is held for the log file."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
        except Exception:  # a library's malformed log call must not take the verb down
            text = f"{record.name}: {record.msg!r}"
        if record.levelno >= logging.ERROR:
            print(text, file=sys.stderr)
        else:
            _held.append(f"{record.levelname.lower()} {text}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning that passed the filters: medkit's own is shown, a library's is held."""
    if _is_medkit_file(str(filename)) and not _LIBRARY_TEXT.search(str(message)):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _held.append(f"{category.__name__}: {message} ({Path(str(filename)).name}:{lineno})")


def _is_medkit_file(filename: str) -> bool:
    here = Path(__file__).resolve().parent  # toolkit/ (medkit), with convert/ and tui/ beside it
    try:
        path = Path(filename).resolve()
    except OSError:
        return False
    return any(path.is_relative_to(root) for root in (here, here.parent / "convert", here.parent / "tui"))


def _log_path(verb: str) -> Path:
    root = Path(os.environ.get("MEDKIT_CACHE") or Path.home() / ".cache" / "medkit").expanduser()
    return root / "logs" / f"{verb}.log"


def _report() -> None:
    """At exit: the held messages into the log file, and one line saying so."""
    path = _state["log"]
    if not _held or not isinstance(path, Path):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(_held) + "\n", encoding="utf-8")
        where = str(path)
    except OSError:
        where = "not saved: the log folder is not writable"
    if _state["failed"]:
        return
    n = len(_held)
    print(
        f"({n} message{'s' if n != 1 else ''} from other packages held back: {where}; -v shows them)",
        file=sys.stderr,
    )
