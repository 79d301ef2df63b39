"""medkit: fine-tune small medical LLMs, export GGUF, run them offline.

Heavy dependencies are imported lazily: ``import medkit`` pulls in neither torch nor
llama.cpp. ``from medkit import Runtime`` loads the runtime (chat extra) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Runtime", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from medkit.runtime.engine import Runtime


def __getattr__(name: str) -> Any:
    if name == "Runtime":
        from medkit.runtime.engine import Runtime

        return Runtime
    raise AttributeError(f"module 'medkit' has no attribute {name!r}")
