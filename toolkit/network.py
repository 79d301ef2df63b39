"""Whether this process may reach a model hub: decided once per verb, before the hub libraries load.

The CLI calls `start()` first thing. From then on the hub is closed: every library medkit uses is put in
offline mode through its environment variables (read when the library is imported) and, for a library
already imported, its module flag. A verb that loads a recipe or takes an argument naming a hub id calls
`allow()` with the ids; the hub opens for this process unless the user said ``--offline`` (or
``MEDKIT_OFFLINE=1``), in which case each named id must already be in the local cache, or one line says it
is not. Code from a hub is never loaded: `kernels` (the package bitsandbytes and transformers ask for
hub-hosted kernels) is made unimportable unless ``MEDKIT_HUB_KERNELS=1`` is set, online or not.

A library user who never calls `start()` keeps full control of their own environment: `allow()` and
`is_open()` then change nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from medkit.errors import ModelError

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",
}
FORCE_OFFLINE_ENV = "MEDKIT_OFFLINE"
HUB_KERNELS_ENV = "MEDKIT_HUB_KERNELS"  # the documented opt-in to hub-hosted kernels
HUB_CODE_MODULES = ("kernels",)
HUB_CODE_ENV = {"USE_HUB_KERNELS": "NO"}  # transformers >= 5.25 asks for hub kernels in every from_pretrained

_state: dict[str, object] = {"started": False, "forced": False, "open": False, "set_by_us": {}}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def start(*, offline: bool = False) -> None:
    """The CLI's first step: hub closed, hub code unimportable. ``offline`` (``--offline``) keeps it closed."""
    _state["started"] = True
    _state["forced"] = offline or _truthy(os.environ.get(FORCE_OFFLINE_ENV))
    block_hub_code()
    _close()


def force_offline() -> None:
    """``--offline`` given after startup (a verb's own option): the hub stays closed whatever is named."""
    _state["forced"] = True
    if _state["started"]:
        _close()


def is_forced_offline() -> bool:
    return bool(_state["forced"])


def is_open() -> bool:
    """True where this process may reach a hub (always, for a library user who never called start())."""
    return bool(_state["open"]) or not _state["started"]


def allow(hub_ids: Iterable[str], *, where: str | None = None) -> None:
    """A recipe or argument names ``hub_ids``: open the hub for this process, or, offline, check each id is
    cached (one line naming the first that is not)."""
    ids = [i for i in hub_ids if i]
    if not ids or not _state["started"]:
        return
    if _state["forced"]:
        for hub_id in ids:
            if not is_cached(hub_id):
                raise ModelError(
                    f"{hub_id!r} is a hub id and is not in the local cache (--offline)",
                    where=where,
                    hint="drop --offline to download it, or give a local folder or file",
                )
        return
    _open()


def is_cached(hub_id: str) -> bool:
    """True if a snapshot of ``hub_id`` (model or dataset) lies in the local Hugging Face cache."""
    owner_name = hub_id.replace("/", "--")
    for root in _hub_caches():
        for kind in ("models", "datasets"):
            snapshots = root / f"{kind}--{owner_name}" / "snapshots"
            if snapshots.is_dir() and any(snapshots.iterdir()):
                return True
    return False


def _hub_caches() -> list[Path]:
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    roots = [os.environ.get("HF_HUB_CACHE"), os.environ.get("HUGGINGFACE_HUB_CACHE"), str(home / "hub")]
    return [Path(r).expanduser() for r in roots if r]


def block_hub_code() -> None:
    """Make the hub-kernel package unimportable and tell transformers not to ask for it: bitsandbytes and
    transformers then use their own code."""
    if _truthy(os.environ.get(HUB_KERNELS_ENV)):
        return
    os.environ.update(HUB_CODE_ENV)
    for name in HUB_CODE_MODULES:
        if name not in sys.modules or sys.modules[name] is None:
            sys.modules[name] = None  # type: ignore[assignment]  # import raises, find_spec gives None


def _close() -> None:
    saved: dict[str, str | None] = _state["set_by_us"]  # type: ignore[assignment]
    for key, value in OFFLINE_ENV.items():
        saved.setdefault(key, os.environ.get(key))  # what the user had, restored if the hub opens
        os.environ[key] = value
    _state["open"] = False
    _set_flags(offline=True)


def _open() -> None:
    saved: dict[str, str | None] = _state["set_by_us"]  # type: ignore[assignment]
    for key, before in saved.items():
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
    _state["set_by_us"] = {}
    _state["open"] = True
    _set_flags(offline=_truthy(os.environ.get("HF_HUB_OFFLINE")))  # a user's own HF_HUB_OFFLINE=1 stays


def _set_flags(*, offline: bool) -> None:
    """The flags of hub libraries already imported (they read the environment once, at import)."""
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = offline  # type: ignore[attr-defined]
    ds = sys.modules.get("datasets.config")
    if ds is not None:
        ds.HF_HUB_OFFLINE = offline  # type: ignore[attr-defined]
        ds.HF_DATASETS_OFFLINE = offline  # type: ignore[attr-defined]
        ds.HF_UPDATE_DOWNLOAD_COUNTS = not offline  # type: ignore[attr-defined]
