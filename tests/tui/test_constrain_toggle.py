"""The chat app's ICD-10 toggle (Ctrl+G, issue 33): each answer carries the constraint that was on when it
was asked; a constraint that cannot be built is a notification and the toggle stays off."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Static

from tests.tui.conftest import wait_for

pytestmark = pytest.mark.anyio
SIZE = (100, 32)


async def ask(pilot, text: str, app) -> None:
    n = len(app.backend.calls)
    app.query_one("#prompt", Input).value = text
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(app.backend.calls) > n and not app.generating)


def status(app) -> str:
    return str(app.query_one("#status", Static).render())


async def test_toggle_on_and_off_goes_with_each_answer(make_app, backend, store):
    pytest.importorskip("simple_icd_10_cm")
    backend.answers = ["J45.901"]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, "Asthma attack?", app)
        assert "constrain" not in backend.calls[0]  # nothing on anywhere: the parameters are as before
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: app.constrain == "icd10", timeout=60)  # a cold compile: seconds
        assert backend.prepared == ["icd10"] and "codes only (icd10)" in status(app)
        assert ("information", "answers: billable ICD-10-CM codes only (icd10)") in app.notes
        await ask(pilot, "And now?", app)
        assert backend.calls[1]["constrain"] == "icd10"
        assert store.messages(app.chat_id)[-1].params["constrain"] == "icd10"  # in the history too
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: app.constrain is None)
        await ask(pilot, "Free text please", app)
        assert "constrain" not in backend.calls[2] and "codes only" not in status(app)


async def test_the_command_line_spec_is_on_at_start_and_can_be_turned_off(make_app, backend):
    pytest.importorskip("simple_icd_10_cm")
    backend.constrain = "icd10:J"
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert app.constrain == "icd10:J" and "codes only (icd10:J)" in status(app)
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: app.constrain is None)
        await ask(pilot, "Prose?", app)
        assert backend.calls[0]["constrain"] is None  # off against the Runtime's default: said explicitly
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: app.constrain == "icd10:J", timeout=60)


async def test_a_constraint_that_cannot_be_built_is_a_notification(make_app, backend, tmp_path):
    backend.constrain = None
    app = make_app()
    app._constrain_on = (
        f"icd10:{tmp_path / 'missing.txt'}"  # as `--constrain` would name it, then toggled off
    )
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: any(sev == "error" for sev, _ in app.notes))
        assert app.constrain is None
        assert any("no such ICD-10 code file" in m for sev, m in app.notes if sev == "error")
