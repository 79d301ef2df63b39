"""`medkit chat` when its sqlite history fails after it has opened: corrupt pages, a full disk.

Every fault must end the same way: the app keeps running, one error notification says what and where (the
db file), the chat goes on in memory, and a question that could not be recorded stays in the input box.
Add a fault: a row in FAULTS (how the db breaks, what the user does, words the notification must hold).
The app runs under Textual's Pilot against the scripted backend of tests/tui; nothing waits on a fixed sleep.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("textual")

from textual.widgets import Input, OptionList  # noqa: E402

from medkit.runtime.history import ChatStore, HistoryError  # noqa: E402
from medkit.tui.app import ChatApp  # noqa: E402
from medkit.tui.screens import ChatListScreen  # noqa: E402
from tests.tui.conftest import Clock, build_app, wait_for  # noqa: E402
from tests.tui.fake_backend import FakeBackend  # noqa: E402

pytestmark = pytest.mark.anyio
SIZE = (100, 32)
QUESTION = "What is anaemia?"
OLD_QUESTION = "What is ferritin?"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- how the history breaks ----------------------------------------------------------------------------
class DiskFull:
    """Wraps a store's sqlite connection: reads pass, writes fail as on a full disk until ``full`` is off."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db
        self.full = True

    def execute(self, sql: str, *args):
        if self.full and sql.split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __enter__(self):
        return self._db.__enter__()

    def __exit__(self, *exc):
        return self._db.__exit__(*exc)

    def __getattr__(self, name: str):
        return getattr(self._db, name)


def overwrite_pages(path: Path, pages: list[int]) -> None:
    """Garbage over whole pages of the db file (1-based page numbers), as a bad disk sector would leave."""
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the pages' latest versions are in the main file
        size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    junk = random.Random(0)
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * size)
            f.write(junk.randbytes(size))


def root_page(path: Path, table: str) -> int:
    with sqlite3.connect(path) as con:
        page = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    con.close()
    return int(page)


def corrupt_messages(store: ChatStore) -> None:  # the chat list still reads, a chat's messages do not
    overwrite_pages(store.path, [root_page(store.path, "messages")])


def corrupt_all_but_the_header(store: ChatStore) -> None:
    n = store.path.stat().st_size // store.db.execute("PRAGMA page_size").fetchone()[0]
    overwrite_pages(store.path, list(range(2, n + 1)))


def fill_the_disk(store: ChatStore) -> None:
    store.db = DiskFull(store.db)  # type: ignore[assignment]


# -- what the user does --------------------------------------------------------------------------------
async def ask(pilot, text: str) -> None:
    pilot.app.query_one("#prompt", Input).value = text
    await pilot.press("enter")


async def open_chat_list(pilot) -> None:
    await pilot.press("ctrl+o")


async def resume_old_chat(pilot) -> None:
    app = pilot.app
    await pilot.press("ctrl+o")
    await wait_for(pilot, lambda: isinstance(app.screen, ChatListScreen))
    screen = app.screen
    screen.query_one(OptionList).highlighted = next(i for i, c in enumerate(screen.chats) if c.id == 1)
    await pilot.press("enter")


async def send_question(pilot) -> None:
    await ask(pilot, QUESTION)


async def answer_then_disk_full(pilot) -> None:
    """The question is saved; the disk fills while the answer is written, so the answer cannot be."""
    app, backend = pilot.app, pilot.app.backend
    backend.block = threading.Event()
    await ask(pilot, QUESTION)
    await wait_for(pilot, backend.first_piece.is_set)
    fill_the_disk(app.store)
    backend.block.set()
    await wait_for(pilot, lambda: not app.generating)


@dataclass
class Fault:
    name: str
    breaks: Callable[[ChatStore], None] | None  # applied after the store has opened, before the user acts
    act: Callable[..., Awaitable[None]]
    needles: tuple[str, ...]  # in the error notification, besides the db path
    kept_in_input: str = ""  # the text that must still be in the input box afterwards


FAULTS = [
    Fault(
        "corrupt pages, then resume an old chat",
        corrupt_messages,
        resume_old_chat,
        ("malformed", "stays open"),
    ),
    Fault(
        "corrupt pages, then list the chats",
        corrupt_all_but_the_header,
        open_chat_list,
        ("cannot be listed",),
    ),
    Fault("corrupt pages, then send", corrupt_all_but_the_header, send_question, ("not sent",), QUESTION),
    Fault("disk full while sending", fill_the_disk, send_question, ("disk is full", "not sent"), QUESTION),
    Fault("disk full while the answer is saved", None, answer_then_disk_full, ("disk is full", "in memory")),
]


def _db_with_an_old_chat(path: Path) -> None:
    old = ChatStore(path, clock=Clock())
    cid = old.new_chat(title="Old question")
    old.add_message(cid, "user", OLD_QUESTION)
    old.add_message(cid, "assistant", "A protein that stores iron.", model="m")
    old.close()  # checkpoints the WAL: everything is in the main file


@pytest.fixture
def file_store(tmp_path):
    path = tmp_path / "chats.sqlite3"
    _db_with_an_old_chat(path)
    store = ChatStore(path, clock=Clock())
    yield store
    store.db.close()


def _app(store: ChatStore, backend: FakeBackend | None = None) -> ChatApp:
    return build_app(backend or FakeBackend(), store, export_dir=store.path.parent)


def _errors(app: ChatApp) -> list[str]:
    return [message for severity, message in app.notes if severity == "error"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_a_history_fault_is_a_notification_and_the_app_keeps_running(fault: Fault, file_store):
    app = _app(file_store)
    async with app.run_test(size=SIZE) as pilot:
        if fault.breaks:
            fault.breaks(file_store)
        await fault.act(pilot)
        await wait_for(pilot, lambda: bool(_errors(app)))
        await pilot.pause()
        assert app.is_running and app.return_code is None
        errors = _errors(app)
        assert len(errors) == 1 and "\n" not in errors[0], errors
        for needle in (str(file_store.path), *fault.needles):
            assert needle in errors[0], (needle, errors[0])
        assert app.query_one("#prompt", Input).value == fault.kept_in_input
        if fault.kept_in_input:
            assert app.backend.calls == []  # not recorded, so not sent: nothing the user typed is lost


async def test_a_held_back_question_is_sent_on_enter_and_saved_once_the_disk_has_room(file_store):
    backend = FakeBackend(answers=["Low haemoglobin.", "Iron, B12, folate."])
    app = _app(file_store, backend)
    async with app.run_test(size=SIZE) as pilot:
        fill_the_disk(file_store)
        await ask(pilot, QUESTION)
        await wait_for(pilot, lambda: bool(_errors(app)))
        assert app.query_one("#prompt", Input).value == QUESTION and backend.calls == []
        await pilot.press("enter")  # the same text again: sent, kept in memory
        await wait_for(pilot, lambda: len(backend.calls) == 1 and not app.generating)
        assert app.query_one("#prompt", Input).value == "" and app.last_answer == "Low haemoglobin."
        assert "2 unsaved" in str(app.query_one("#status").render())
        assert len(_errors(app)) == 1  # one notification for the failing history, not one per message
        file_store.db.full = False  # type: ignore[union-attr]
        await ask(pilot, "What causes it?")
        await wait_for(pilot, lambda: len(backend.calls) == 2 and not app.generating)
        assert any("saved again" in n for _, n in app.notes)  # type: ignore[attr-defined]
        assert "unsaved" not in str(app.query_one("#status").render())
        assert backend.calls[1]["messages"][:2] == [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "Low haemoglobin."},
        ]
    again = ChatStore(file_store.path)
    [chat] = [c for c in again.chats() if c.id != 1]
    assert chat.title == QUESTION
    assert [(m.role, m.content) for m in again.messages(chat.id)] == [
        ("user", QUESTION),
        ("assistant", "Low haemoglobin."),
        ("user", "What causes it?"),
        ("assistant", "Iron, B12, folate."),
    ]
    again.close()


async def test_after_a_failed_resume_the_current_chat_goes_on(file_store):
    app = _app(file_store)
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "First question")
        await wait_for(pilot, lambda: not app.generating and app.last_answer)
        current = app.chat_id
        corrupt_messages(file_store)
        await resume_old_chat(pilot)
        await wait_for(pilot, lambda: bool(_errors(app)))
        assert app.chat_id == current and len(app.screen_stack) == 1
        assert [m["content"] for m in app.messages][0] == "First question"


def test_the_store_names_the_file_when_its_pages_are_corrupt(file_store):
    corrupt_messages(file_store)
    with pytest.raises(HistoryError, match="malformed") as exc:
        file_store.messages(1)
    assert exc.value.one_line().startswith(f"{file_store.path}: cannot read the chat history")
