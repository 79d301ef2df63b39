"""Screens and widgets of the chat app: the log's turns and answers, chat list, adapter picker, settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Markdown, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from medkit.runtime.history import ChatSummary

STOPPED = "\n\n*(stopped)*"  # shown under an answer stopped with Esc


class Turn(Static):
    """A user message or an event line (adapter switch...)."""


class AnswerView(Markdown):
    """An assistant answer, rendered as Markdown."""


class StreamingAnswer(Static):
    """The answer while it is written: plain text, cheap to redraw; becomes an AnswerView when done."""


def history_widgets(stored: list[dict[str, Any]]) -> tuple[list[Widget], list[dict[str, str]], str]:
    """Stored messages -> (widgets for the log, the conversation for the model, the last answer)."""
    widgets: list[Widget] = []
    conversation: list[dict[str, str]] = []
    last_answer = ""
    for m in stored:
        role, content = m["role"], m["content"]
        if role == "user":
            widgets.append(Turn(content, classes="user", markup=False))
        elif role == "assistant":
            widgets.append(AnswerView(content + (STOPPED if m.get("cancelled") else ""), classes="answer"))
            last_answer = content
        else:  # events are shown, never sent to the model
            widgets.append(Turn(content, classes="event", markup=False))
            continue
        conversation.append({"role": role, "content": content})
    return widgets, conversation, last_answer


@dataclass(frozen=True)
class Settings:
    """Sampling settings and the system prompt of the current chat."""

    system_prompt: str = ""
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512

    def params(self) -> dict[str, float | int]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


class ChatListScreen(ModalScreen[int | None]):
    """Pick an earlier chat to resume. Returns its id, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, chats: list[ChatSummary], current: int | None = None):
        super().__init__()
        self.chats = chats
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Chats — Enter to resume, Esc to close", classes="dialog-title")
            options = [
                Option(
                    f"{'● ' if c.id == self.current else '  '}{c.title[:38]:<38} "
                    f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(c.updated_at))} {c.n_messages:>3} msg",
                    id=str(c.id),
                )
                for c in self.chats
            ]
            yield OptionList(*options, id="chat-list")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))


class AdapterScreen(ModalScreen[str | None]):
    """Pick the adapter for the next answers ("base" for none). Returns the name, or None if closed."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, adapters: list[str], current: str | None):
        super().__init__()
        self.adapters = adapters
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Adapter — Enter to switch, Esc to close", classes="dialog-title")
            names = ["base", *self.adapters]
            current = self.current or "base"
            yield OptionList(
                *[Option(f"{'● ' if n == current else '  '}{n}", id=n) for n in names], id="adapter-list"
            )

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class SettingsScreen(ModalScreen[Settings | None]):
    """Edit the system prompt and the sampling settings. Returns new Settings, or None if cancelled."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save", priority=True),
    ]

    def __init__(self, settings: Settings):
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(classes="dialog", id="settings"):
            yield Label("Settings — Ctrl+S to save, Esc to cancel", classes="dialog-title")
            yield Label("System prompt")
            yield TextArea(s.system_prompt, id="system-prompt")
            with Horizontal(classes="fields"):
                yield Label("Temperature")
                yield Input(str(s.temperature), id="temperature", type="number")
                yield Label("Top-p")
                yield Input(str(s.top_p), id="top-p", type="number")
                yield Label("Max tokens")
                yield Input(str(s.max_tokens), id="max-tokens", type="integer")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def action_save(self) -> None:
        try:
            temperature = float(self.query_one("#temperature", Input).value)
            top_p = float(self.query_one("#top-p", Input).value)
            max_tokens = int(self.query_one("#max-tokens", Input).value)
        except ValueError:
            self.notify(
                "settings: temperature and top-p must be numbers, max tokens an integer", severity="error"
            )
            return
        if not (0.0 <= temperature <= 2.0 and 0.0 < top_p <= 1.0 and max_tokens >= 1):
            self.notify("settings: need 0 ≤ temperature ≤ 2, 0 < top-p ≤ 1, max tokens ≥ 1", severity="error")
            return
        system = self.query_one("#system-prompt", TextArea).text.strip()
        self.dismiss(
            replace(
                self.settings,
                system_prompt=system,
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
            )
        )

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
