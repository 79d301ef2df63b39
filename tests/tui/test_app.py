"""Pilot tests of `medkit chat` against a scripted backend."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading

import pytest
from textual.widgets import Input, OptionList

from medkit.errors import RuntimeLoadError
from medkit.runtime.history import ChatStore, HistoryError
from medkit.tui.app import AnswerView, ChatApp, StreamingAnswer, Turn
from medkit.tui.helpers import open_store
from medkit.tui.screens import AdapterScreen, ChatListScreen, SettingsScreen
from tests.tui.conftest import wait_for

pytestmark = pytest.mark.anyio
SIZE = (100, 32)


async def ask(pilot, text: str) -> None:
    pilot.app.query_one("#prompt", Input).value = text
    await pilot.press("enter")


def stored(app: ChatApp):
    return app.store.messages(app.chat_id)


async def test_answer_streams_in_batches_and_is_saved(make_app, backend):
    backend.answers = [" ".join(f"w{i}" for i in range(300))]
    app = make_app()
    updates: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        real_update = StreamingAnswer.update

        def counting_update(self, content=""):
            updates.append(str(content))
            return real_update(self, content)

        StreamingAnswer.update = counting_update  # type: ignore[method-assign]
        try:
            await ask(pilot, "What is anaemia?")
            await wait_for(pilot, lambda: not app.generating)
        finally:
            StreamingAnswer.update = real_update  # type: ignore[method-assign]
        msgs = stored(app)
        assert [m.role for m in msgs] == ["user", "assistant"]
        assert msgs[1].content == backend.answers[0] and not msgs[1].cancelled
        params = msgs[1].params
        assert msgs[1].model == "fake-smol" and isinstance(params.pop("seed"), int)
        assert params == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512}
        assert msgs[1].stats["completion_tokens"] == 300
        assert 1 <= len(updates) < 30  # 300 pieces, a handful of screen updates
        assert updates[-1] == backend.answers[0]
        await pilot.pause(0.1)
        assert app.query(AnswerView).last()._markdown == backend.answers[0]
        assert "42.0 tok/s" in str(app.query_one("#status").render())
        assert app.store.chat(app.chat_id).title == "What is anaemia?"


async def test_streaming_text_appears_before_the_answer_ends(make_app, backend):
    backend.answers = ["Iron deficiency is the most common cause."]
    backend.block = threading.Event()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "Causes?")
        await wait_for(pilot, lambda: app.answer_text == "Iron")
        assert app.generating  # the first piece is on screen while the answer is still running
        backend.block.set()
        await wait_for(pilot, lambda: not app.generating)
        assert app.last_answer == backend.answers[0]


async def test_escape_stops_the_answer_and_keeps_the_partial_text(make_app, backend):
    backend.answers = ["Iron deficiency is the most common cause of anaemia worldwide."]
    backend.block = threading.Event()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "Causes?")
        await wait_for(pilot, lambda: backend.first_piece.is_set())
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.generating)
        msgs = stored(app)
        assert msgs[-1].role == "assistant" and msgs[-1].cancelled and msgs[-1].content == "Iron"
        views = app.query(AnswerView)
        assert "(stopped)" in views.last()._markdown
        await ask(pilot, "Go on")  # the chat continues with the partial answer in the history
        await wait_for(pilot, lambda: len(backend.calls) == 2 and not app.generating)
        assert backend.calls[1]["messages"][-2] == {"role": "assistant", "content": "Iron"}


async def test_resume_an_older_chat(make_app, store, backend):
    old = store.new_chat(title="Old question", system_prompt="Be brief.")
    store.add_message(old, "user", "What is ferritin?")
    store.add_message(old, "assistant", "A protein that stores iron.", model="m", adapter=None)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        screen = app.screen
        assert isinstance(screen, ChatListScreen)
        options = screen.query_one(OptionList)
        index = next(i for i, c in enumerate(screen.chats) if c.id == old)
        options.highlighted = index
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat_id == old)
        assert [t.content for t in app.query(Turn)] == ["What is ferritin?"]
        assert app.settings.system_prompt == "Be brief."
        await ask(pilot, "And transferrin?")
        await wait_for(pilot, lambda: len(backend.calls) == 1 and not app.generating)
        sent = backend.calls[0]["messages"]
        assert sent[0] == {"role": "system", "content": "Be brief."}
        assert sent[1:3] == [
            {"role": "user", "content": "What is ferritin?"},
            {"role": "assistant", "content": "A protein that stores iron."},
        ]
        assert len(store.messages(old)) == 4


async def test_adapter_switch_mid_chat_is_recorded(make_app, backend):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "First")
        await wait_for(pilot, lambda: not app.generating and len(stored(app)) == 2)
        await pilot.press("ctrl+t")
        assert isinstance(app.screen, AdapterScreen)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: backend.adapter == "patient")
        await ask(pilot, "Second")
        await wait_for(pilot, lambda: not app.generating and len(stored(app)) == 5)
        msgs = stored(app)
        assert [m.role for m in msgs] == ["user", "assistant", "event", "user", "assistant"]
        assert msgs[1].adapter is None and msgs[4].adapter == "patient"
        assert msgs[2].content == "— adapter: patient —"
        assert backend.calls[1]["adapter"] == "patient"
        assert all(m["role"] != "event" for m in backend.calls[1]["messages"])
        assert "adapter: patient" in str(app.query_one("#status").render())


async def test_export_writes_markdown_and_json(make_app, tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "What is anaemia?")
        await wait_for(pilot, lambda: not app.generating and len(stored(app)) == 2)
        await pilot.press("ctrl+r")
        await pilot.pause()
    md = list(tmp_path.glob("medkit-chat-*.md"))
    js = list(tmp_path.glob("medkit-chat-*.json"))
    assert len(md) == 1 and len(js) == 1
    text = md[0].read_text()
    assert "information, not medical advice" in text and "**Anaemia** is a low level" in text
    data = json.loads(js[0].read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["model"] == "fake-smol" and data["messages"][1]["params"]["top_p"] == 0.95


async def test_settings_change_sampling_and_system_prompt(make_app, backend):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        screen.query_one("#temperature", Input).value = "0.2"
        screen.query_one("#max-tokens", Input).value = "64"
        screen.query_one("#system-prompt").text = "Answer like a nurse."
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.settings.temperature == 0.2)
        await ask(pilot, "Hi")
        await wait_for(pilot, lambda: len(backend.calls) == 1 and not app.generating)
        call = backend.calls[0]
        assert call["temperature"] == 0.2 and call["max_tokens"] == 64
        assert call["messages"][0] == {"role": "system", "content": "Answer like a nurse."}
        assert app.store.chat(app.chat_id).system_prompt == "Answer like a nurse."
        await pilot.press("ctrl+s")
        app.screen.query_one("#temperature", Input).value = "hot"
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, SettingsScreen)  # refused, still open
        assert any("must be numbers" in n for _, n in app.notes)


async def test_empty_prompt_is_ignored_and_huge_paste_is_cut(make_app, backend):
    backend.n_ctx_value = 512
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "   ")
        await pilot.pause()
        assert backend.calls == [] and stored(app) == []
        await ask(pilot, "word " * 5000)
        await wait_for(pilot, lambda: len(backend.calls) == 1 and not app.generating)
        sent = backend.calls[0]["messages"][-1]["content"]
        assert len(sent.split()) <= 512 - 128 - 64
        assert any(sev == "warning" and "too long" in n for sev, n in app.notes)


async def test_backend_error_is_a_notification_and_the_app_keeps_running(make_app, backend):
    backend.fail_with = RuntimeLoadError("llama.cpp fell over")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "Hi")
        await wait_for(pilot, lambda: len(backend.calls) == 1 and not app.generating)
        assert ("error", "llama.cpp fell over") in app.notes
        assert app.messages == []  # nothing came back: the question can be asked again
        backend.fail_with = None
        await ask(pilot, "Hi again")
        await wait_for(pilot, lambda: len(backend.calls) == 2 and not app.generating)
        assert app.last_answer


async def test_copy_new_chat_and_command_palette(make_app):
    app = make_app()
    copied: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
        await pilot.press("ctrl+y")
        assert any("no answer" in n for _, n in app.notes)
        await ask(pilot, "Hi")
        await wait_for(pilot, lambda: not app.generating and app.last_answer)
        await pilot.press("ctrl+y")
        assert copied == [app.last_answer]
        first = app.chat_id
        await pilot.press("ctrl+n")
        assert app.chat_id != first and not app.query(Turn) and app.messages == []
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {
            "New chat",
            "Chats",
            "Switch adapter",
            "Settings",
            "Copy last answer",
            "Export chat",
        } <= titles
        assert "information, not medical advice" in str(app.query_one("#disclaimer").render())


async def test_a_chat_is_stored_only_once_it_has_a_message(make_app, store):
    app = make_app(system_prompt="Be brief.")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n", "ctrl+n")  # launching and new chats store nothing
        await pilot.press("ctrl+t", "down", "enter")  # nor does an adapter switch alone
        await wait_for(pilot, lambda: app.backend.adapter == "patient")
        assert store.chats() == [] and app.chat_id == 0
        await ask(pilot, "What is anaemia?")
        await wait_for(pilot, lambda: not app.generating and len(stored(app)) == 3)
        await pilot.press("ctrl+n")
        await pilot.pause()
    [chat] = store.chats()
    assert (chat.title, chat.system_prompt, chat.n_messages) == ("What is anaemia?", "Be brief.", 3)
    assert [m.role for m in store.messages(chat.id)] == ["event", "user", "assistant"]


def _make_newer_db(path) -> bytes:
    ChatStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    db.close()
    return hashlib.sha256(path.read_bytes()).digest()


def test_db_from_a_newer_medkit_is_refused_and_kept(tmp_path):
    path = tmp_path / "chats.sqlite3"
    digest = _make_newer_db(path)
    with pytest.raises(HistoryError, match="schema v99, written by a newer medkit") as exc:
        ChatStore(path)
    assert "\n" not in exc.value.one_line()
    assert hashlib.sha256(path.read_bytes()).digest() == digest


async def test_app_with_a_newer_db_runs_without_saving_and_says_so(make_app, tmp_path):
    path = tmp_path / "chats.sqlite3"
    digest = _make_newer_db(path)
    store, warning = open_store(str(path))
    assert warning and "newer medkit" in warning
    app = make_app(store=store, startup_warning=warning)
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "Hi")
        await wait_for(pilot, lambda: not app.generating and app.last_answer)
        assert any(sev == "warning" and "not saved" in n for sev, n in app.notes)
    store.close()
    assert hashlib.sha256(path.read_bytes()).digest() == digest


def test_history_schema_is_versioned_and_wal(tmp_path):
    path = tmp_path / "h.sqlite3"
    s = ChatStore(path)
    assert s.schema_version == 1
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cid = s.new_chat()
    s.add_message(
        cid, "assistant", "x", model="m", adapter="a", params={"temperature": 0.1}, stats={"ttft_s": 1}
    )
    s.close()
    again = ChatStore(path)  # reopening does not re-run migrations
    assert again.schema_version == 1 and again.messages(cid)[0].params == {"temperature": 0.1}
    assert again.messages(cid)[0].adapter == "a"
    again.close()


def test_fake_backend_follows_the_protocol(backend):
    from medkit.tui.backend import Backend

    assert isinstance(backend, Backend)
