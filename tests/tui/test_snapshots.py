"""Snapshots of the main screens (pytest-textual-snapshot). Update with: pytest tests/tui --snapshot-update"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from tests.tui.conftest import wait_for

pytest.importorskip("pytest_textual_snapshot")

SIZE = (100, 30)
ANSWER = (
    "**Anaemia** means a low level of *haemoglobin* in the blood.\n\n"
    "Common causes:\n\n- iron deficiency\n- blood loss\n- chronic disease\n\n"
    "See a clinician if you feel unusually tired."
)


def _app(make_app, backend):
    backend.answers = [ANSWER]
    return make_app()


async def _answered(pilot) -> None:
    app = pilot.app
    app.query_one("#prompt", Input).cursor_blink = False
    app.query_one("#prompt", Input).value = "What is anaemia?"
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.generating and app.last_answer)
    app.clear_notifications()
    await pilot.pause()


def test_main_screen_after_an_answer(snap_compare, make_app, backend):
    assert snap_compare(_app(make_app, backend), terminal_size=SIZE, run_before=_answered)


def test_chat_list(snap_compare, make_app, backend, store):
    old = store.new_chat(title="Iron tablets and constipation")
    store.add_message(old, "user", "Do iron tablets cause constipation?")

    async def run_before(pilot) -> None:
        await _answered(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()

    assert snap_compare(_app(make_app, backend), terminal_size=SIZE, run_before=run_before)


def test_settings(snap_compare, make_app, backend):
    async def run_before(pilot) -> None:
        pilot.app.query_one("#prompt", Input).cursor_blink = False
        await pilot.press("ctrl+s")
        await wait_for(
            pilot, lambda: pilot.app.focused is not None and pilot.app.focused.id == "system-prompt"
        )
        pilot.app.screen.query_one("#save").focus()  # no text cursor: its blink phase made this flaky
        await pilot.pause(0.2)

    assert snap_compare(_app(make_app, backend), terminal_size=SIZE, run_before=run_before)


def test_adapter_picker(snap_compare, make_app, backend):
    async def run_before(pilot) -> None:
        await _answered(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()

    assert snap_compare(_app(make_app, backend), terminal_size=SIZE, run_before=run_before)
