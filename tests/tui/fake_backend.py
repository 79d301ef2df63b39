"""A scripted Backend for the chat app tests: answers come from a script, piece by piece."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from medkit.runtime.engine import AnswerStats


@dataclass
class FakeBackend:
    """Streams ``answers`` (cycled) word by word, ``delay`` seconds apart; records every call."""

    answers: list[str] = field(default_factory=lambda: ["**Anaemia** is a low level of *haemoglobin*."])
    delay: float = 0.0
    model_name: str = "fake-smol"
    adapter: str | None = None
    n_ctx_value: int = 2048
    adapter_names: list[str] = field(default_factory=lambda: ["patient"])
    calls: list[dict] = field(default_factory=list)
    switches: list[str | None] = field(default_factory=list)
    fail_with: Exception | None = None
    block: threading.Event | None = None  # when set, streaming waits on it after the first piece
    constrain: str | None = None  # the default constraint, as Runtime(constrain=...) keeps it
    prepared: list[str] = field(default_factory=list)  # specs compiled by grammar(), in order

    def __post_init__(self) -> None:
        self.last_stats = AnswerStats(n_ctx=self.n_ctx_value)
        self._cancel = threading.Event()
        self.first_piece = threading.Event()

    @property
    def n_ctx(self) -> int:
        return self.n_ctx_value

    @property
    def adapters(self) -> list[str]:
        return list(self.adapter_names)

    def stream(self, messages: Sequence[Mapping[str, str]], **params) -> Iterator[str]:
        self.calls.append({"messages": [dict(m) for m in messages], **params, "adapter": self.adapter})
        if self.fail_with is not None:
            raise self.fail_with
        self._cancel.clear()
        text = self.answers[(len(self.calls) - 1) % len(self.answers)]
        words = text.split(" ")
        stats = AnswerStats(prompt_tokens=10 * len(messages), n_ctx=self.n_ctx_value, adapter=self.adapter)
        self.last_stats = stats
        t0 = time.perf_counter()
        for i, word in enumerate(words):
            if self._cancel.is_set():
                stats.stop_reason = "cancelled"
                break
            yield word if i == 0 else " " + word
            stats.completion_tokens += 1
            if i == 0:
                stats.ttft_s = 0.012  # fixed numbers keep the snapshots stable
                self.first_piece.set()
                if self.block is not None:
                    self.block.wait(5)
            if self.delay:
                time.sleep(self.delay)
        else:
            stats.stop_reason = "eos"
        stats.elapsed_s = time.perf_counter() - t0
        stats.tokens_per_s = 42.0
        stats.ctx_used = stats.prompt_tokens + stats.completion_tokens

    def cancel(self) -> None:
        self._cancel.set()
        if self.block is not None:
            self.block.set()

    def use_adapter(self, name: str | None, scale: float = 1.0) -> None:
        if name is not None and name not in self.adapter_names:
            from medkit.errors import RuntimeLoadError

            raise RuntimeLoadError(f"unknown adapter '{name}'")
        self.adapter = name
        self.switches.append(name)

    def grammar(self, spec: str | None, response_format=None, grammar=None):
        """The Runtime's check of a constraint, without a model: the code set is built for real."""
        from medkit.runtime.constrain import code_set

        if spec is not None:
            code_set(spec)
            self.prepared.append(spec)

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        words = text.split()
        return (" ".join(words[:max_tokens]), True) if len(words) > max_tokens else (text, False)


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.tui.fake_backend --db PATH`: the chat app on a scripted backend, in a real terminal.

    The first answer is a short one, the second one long enough to be stopped with Esc (test_tmux.py).
    """
    import argparse

    from medkit.runtime.history import ChatStore
    from medkit.tui.app import ChatApp

    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    answers = [" ".join(f"short{i}" for i in range(40)), " ".join(f"long{i}" for i in range(600))]
    store = ChatStore(args.db)
    try:
        ChatApp(FakeBackend(answers=answers, delay=0.05), store).run()
    finally:
        store.close()


if __name__ == "__main__":
    main()
