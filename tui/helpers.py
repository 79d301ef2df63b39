"""Helpers of `medkit chat`: the history store and its recorder, the token buffer (the model, its adapters and
the options `medkit serve` shares: medkit.runtime.options)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DISCLAIMER = "⚕ Answers are information, not medical advice. Ask a clinician about your own health."
IN_MEMORY = "the chat goes on in memory; saving is retried at each message"
NOT_SENT = "not sent, it stays in the input box; Enter sends it without saving"
COMMANDS = [  # the app's entries in the command palette: title, help, action
    ("New chat", "Start a new conversation", "new_chat"),
    ("Chats", "List and resume earlier chats", "chats"),
    ("Switch adapter", "Use another LoRA adapter for the next answers", "adapter"),
    ("Settings", "System prompt, temperature, top-p, max tokens", "settings"),
    ("Copy last answer", "Copy the last answer to the clipboard", "copy_answer"),
    ("Export chat", "Write this chat to Markdown and JSON files", "export"),
    ("Stop answer", "Stop the answer being written (keeps the text)", "stop"),
    ("ICD-10 codes only", "Toggle: answers limited to billable ICD-10-CM codes", "constrain"),
]


def open_store(db: str | None) -> tuple[Any, str | None]:
    """The chat store, or an in-memory one plus a warning when the file cannot be used (kept as is)."""
    from medkit.runtime.history import ChatStore, HistoryError

    try:
        return ChatStore(db), None
    except HistoryError as exc:
        return ChatStore(":memory:"), f"{exc.one_line()} — this session's chats are not saved"


def stats_dict(stats: Any) -> dict[str, Any]:
    if hasattr(stats, "as_dict"):
        return stats.as_dict()
    return dict(vars(stats)) if stats is not None else {}


class TokenBuffer:
    """Pieces appended by the generation thread, taken in batches by the UI thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self.count = 0
        self.started = time.perf_counter()

    def put(self, piece: str) -> None:
        with self._lock:
            self._pieces.append(piece)
            self.count += 1

    def take(self) -> str:
        with self._lock:
            if not self._pieces:
                return ""
            text = "".join(self._pieces)
            self._pieces.clear()
            return text


@dataclass(eq=False)
class ChatRef:
    """A chat of this session. ``id`` stays 0 until its first message is stored: no empty chats in the history."""

    title: str = "New chat"
    system_prompt: str | None = None
    id: int = 0
    held: list[Record] = field(default_factory=list)  # events before the first question, stored with it


@dataclass(eq=False)
class Record:
    chat: ChatRef
    kind: str  # "message" | "rename" | "system"
    data: dict[str, Any]


class Recorder:
    """Writes this session's chats to the history store; what cannot be written is kept and retried.

    Records are written in order. When a write fails (a full disk, a corrupt file) the record stays in
    ``pending``, ``failing`` turns on and ``report`` gets one error line (only the first failure of a run);
    every later write retries the pending records first, so once the store works again the history is
    complete. A question is the exception: the first one that cannot be recorded is not sent (it stays in
    the input box); after that, questions are sent and kept with the unsaved records.
    """

    def __init__(self, store: Any, report: Callable[[str, str], Any]):
        self.store = store
        self.report = report  # (message, severity)
        self.pending: list[Record] = []
        self.failing = False

    @property
    def unsaved(self) -> int:
        return sum(r.kind == "message" for r in self.pending)

    def add_message(self, chat: ChatRef, role: str, content: str, **meta: Any) -> bool:
        record = Record(chat, "message", {"role": role, "content": content, **meta})
        if not chat.id and role == "event" and not any(r.chat is chat for r in self.pending):
            chat.held.append(record)  # an adapter switch alone does not make a chat
            return True
        return self.write([record])

    def add_question(self, chat: ChatRef, text: str, *, first: bool) -> bool:
        """The user's message (the first one of a chat also names it). False: do not send it."""
        held, chat.held = chat.held, []
        records = [*held, Record(chat, "message", {"role": "user", "content": text})]
        if first:
            chat.title = re.sub(r"\s+", " ", text)[:60]
            records[:0] = [Record(chat, "rename", {})] if chat.id else []
        if self.failing:  # already said: sent, and kept with the unsaved records
            self.write(records)
            return True
        if self.write(records, keep=False, failed=NOT_SENT):
            return True
        chat.held = held
        return False

    def set_system_prompt(self, chat: ChatRef, text: str | None) -> bool:
        chat.system_prompt = text
        return self.write([Record(chat, "system", {})] if chat.id else [])

    def load(self, chat_id: int) -> tuple[ChatRef, list[dict[str, Any]]]:
        """A stored chat and its messages, with those of this session not saved yet. Raises HistoryError."""
        summary = self.store.chat(chat_id)
        messages = [vars(m) for m in self.store.messages(chat_id)]
        messages += [r.data for r in self.pending if r.kind == "message" and r.chat.id == chat_id]
        known = [r.chat for r in self.pending if r.chat.id == chat_id]
        return (known[0] if known else ChatRef(summary.title, summary.system_prompt, summary.id)), messages

    def write(self, records: list[Record], *, keep: bool = True, failed: str = IN_MEMORY) -> bool:
        """Queue ``records`` and write everything pending. False when the store failed."""
        from medkit.runtime.history import HistoryError

        was_failing = self.failing
        self.pending.extend(records)
        try:
            while self.pending:
                self._write(self.pending[0])
                self.pending.pop(0)
        except HistoryError as exc:
            self.failing = True
            if not keep:
                self.pending = [p for p in self.pending if all(p is not r for r in records)]
            if not was_failing:
                self.report(f"{exc.one_line()} — {failed}", "error")
            return False
        self.failing = False
        if was_failing:
            self.report("chat history is saved again", "information")
        return True

    def _write(self, rec: Record) -> None:
        chat = rec.chat
        if not chat.id:
            chat.id = self.store.new_chat(chat.title, system_prompt=chat.system_prompt)
        if rec.kind == "message":
            self.store.add_message(chat.id, **rec.data)
        elif rec.kind == "rename":
            self.store.rename(chat.id, chat.title)
        elif rec.kind == "system":
            self.store.set_system_prompt(chat.id, chat.system_prompt)
