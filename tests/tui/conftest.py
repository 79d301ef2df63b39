"""Chat app fixtures: a scripted backend, an in-memory history with a fixed clock, a notification log."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest

pytest.importorskip("textual")

from medkit.runtime.history import ChatStore  # noqa: E402
from medkit.tui.app import ChatApp  # noqa: E402
from tests.tui.fake_backend import FakeBackend  # noqa: E402

FIXED_NOW = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC

os.environ["TZ"] = "UTC"
time.tzset()


class Clock:
    def __init__(self, start: float = FIXED_NOW):
        self.now = start

    def __call__(self) -> float:
        self.now += 60.0
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def store():
    s = ChatStore(":memory:", clock=Clock())
    yield s
    s.close()


def build_app(backend, store, **kwargs) -> ChatApp:
    """A ChatApp whose notifications are also logged in ``app.notes`` as (severity, message)."""
    app = ChatApp(backend, store, **kwargs)
    app.notes = []  # type: ignore[attr-defined]
    real_notify = app.notify

    def notify(message, *args, **kw):
        app.notes.append((kw.get("severity", "information"), str(message)))  # type: ignore[attr-defined]
        return real_notify(message, *args, **kw)

    app.notify = notify  # type: ignore[method-assign]
    return app


@pytest.fixture
def make_app(backend, store, tmp_path) -> Callable[..., ChatApp]:
    def make(**kwargs) -> ChatApp:
        kwargs.setdefault("export_dir", tmp_path)
        return build_app(kwargs.pop("backend", backend), kwargs.pop("store", store), **kwargs)

    return make


async def wait_for(pilot, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the app run until ``cond()`` holds (worker threads report through the event loop)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)
    await asyncio.sleep(0)
