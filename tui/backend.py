"""The small surface the chat app needs from a model. `medkit.Runtime` satisfies it; tests use a fake."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Backend(Protocol):
    """What the Textual app calls. ``stream`` runs in a worker thread; the rest on the UI thread."""

    model_name: str
    adapter: str | None
    last_stats: Any  # has tokens_per_s, ttft_s, ctx_used, n_ctx, dropped_messages, stop_reason

    @property
    def n_ctx(self) -> int: ...

    @property
    def adapters(self) -> list[str]: ...

    def stream(
        self,
        messages: Sequence[Mapping[str, str]],
        temperature: float = ...,
        top_p: float = ...,
        max_tokens: int = ...,
        seed: int | None = ...,
    ) -> Iterator[str]: ...

    def cancel(self) -> None: ...

    def use_adapter(self, name: str | None, scale: float = 1.0) -> None: ...

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]: ...
