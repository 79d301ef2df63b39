"""`medkit chat`: a Textual chat app on a GGUF model, fully offline.

Tokens are produced in a worker thread into a TokenBuffer; a timer flushes it to the screen at most
every FLUSH_S seconds, as plain text, so rendering never slows generation down; the finished answer is
then rendered once as Markdown (re-rendering Markdown at every flush halved tokens/s on a busy CPU). The app talks to a small Backend
(medkit.tui.backend); `medkit.Runtime` is the real one.

The history is written through a Recorder (medkit.tui.helpers): a failing store is a notification, not a
crash; the chat goes on in memory and what could not be saved is retried and counted in the status bar.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from medkit.errors import MedkitError
from medkit.runtime.history import HistoryError
from medkit.runtime.options import constrain_option, open_runtime, runtime_options
from medkit.tui.constrain import ConstrainToggle
from medkit.tui.helpers import (
    COMMANDS,
    DISCLAIMER,
    ChatRef,
    Recorder,
    TokenBuffer,
    open_store,
    stats_dict,
)
from medkit.tui.screens import (
    STOPPED,
    AdapterScreen,
    AnswerView,
    ChatListScreen,
    Settings,
    SettingsScreen,
    StreamingAnswer,
    Turn,
    history_widgets,
)

FLUSH_S = 0.05  # answer text: at most 20 redraws a second
STATUS_S = 0.5  # live tokens/s in the status bar
ANSWER_MARGIN = 64  # tokens kept free for the template around a message


class ChatApp(ConstrainToggle, App[None]):
    """Offline chat with streaming answers, history, adapters and settings."""

    CSS_PATH = "chat.tcss"
    TITLE = "medkit chat"
    BINDINGS = [  # none overrides the prompt's own keys (Input binds ctrl+a/e/k/u/w/x/c/v)
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+o", "chats", "Chats"),
        Binding("ctrl+t", "adapter", "Adapter"),
        Binding("ctrl+s", "settings", "Settings"),
        Binding("ctrl+y", "copy_answer", "Copy"),
        Binding("ctrl+r", "export", "Export"),
        Binding("ctrl+q", "quit", "Quit"),
        Binding("ctrl+g", "constrain", "ICD-10 only", show=False),
    ]

    def __init__(
        self,
        backend: Any,
        store: Any,
        *,
        system_prompt: str = "",
        export_dir: str | Path | None = None,
        startup_warning: str | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        self.backend = backend
        self.store = store
        self.recorder = Recorder(store, self._report)
        self.chat = ChatRef()
        self.settings = Settings(system_prompt=system_prompt)
        self.seed = seed  # None: a fresh random seed per answer (recorded with the answer)
        self.export_dir = Path(export_dir) if export_dir else Path.cwd()
        self.startup_warning = startup_warning
        self.messages: list[dict[str, str]] = []  # the conversation sent to the model
        self.generating = False
        self.buffer = TokenBuffer()
        self.answer_text = ""
        self.answer_view: StreamingAnswer | None = None
        self.last_answer = ""
        self.params: dict[str, Any] = {}
        self._status_at = 0.0
        self.constrain: str | None = getattr(backend, "constrain", None)  # each answer's (ConstrainToggle)
        self._constrain_on = self.constrain or "icd10"
        self.sub_title = f"{backend.model_name} · {self._adapter_label()}"

    # -- layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(DISCLAIMER, id="disclaimer")
        yield VerticalScroll(id="log")
        yield Input(placeholder="Ask a question — Enter to send, Esc to stop", id="prompt")
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.start_chat()
        self.set_interval(FLUSH_S, self.flush)
        self.query_one("#prompt", Input).focus()
        if self.startup_warning:
            self.notify(self.startup_warning, severity="warning", timeout=10)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in COMMANDS:
            yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))

    # -- chats ---------------------------------------------------------------------------------------
    @property
    def chat_id(self) -> int:
        """The current chat's id in the history; 0 until its first message is stored."""
        return self.chat.id

    def _report(self, message: str, severity: str) -> None:
        """The recorder's word on the history (failing, working again); errors stay on screen longer."""
        self.notify(message, severity=severity, timeout=10 if severity == "error" else 5)  # type: ignore[arg-type]

    def start_chat(self) -> None:
        self.chat = ChatRef(
            system_prompt=self.settings.system_prompt or None
        )  # stored with its first message
        self.messages = []
        self.query_one("#log", VerticalScroll).remove_children()
        self.last_answer = ""
        self.update_status()

    def load_chat(self, chat_id: int) -> None:
        try:
            chat, stored = self.recorder.load(chat_id)
        except HistoryError as exc:
            self.notify(f"{exc.one_line()} — this chat stays open", severity="error", timeout=10)
            return
        self.chat = chat
        self.settings = Settings(
            system_prompt=chat.system_prompt or "",
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            max_tokens=self.settings.max_tokens,
        )
        widgets, self.messages, self.last_answer = history_widgets(stored)
        log = self.query_one("#log", VerticalScroll)
        log.remove_children()
        log.mount(*widgets)
        log.scroll_end(animate=False)
        self.update_status()
        self.notify(f"resumed chat: {chat.title}")

    def conversation(self) -> list[dict[str, str]]:
        system = self.settings.system_prompt
        return ([{"role": "system", "content": system}] if system else []) + self.messages

    # -- sending and streaming -----------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    def submitted(self, event: Input.Submitted) -> None:
        self.send(event.value)

    def send(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if self.generating:
            self.notify("an answer is being written: wait, or Esc to stop it", severity="warning")
            return
        budget = self.backend.n_ctx - min(self.settings.max_tokens, self.backend.n_ctx // 4) - ANSWER_MARGIN
        text, cut = self.backend.truncate(text, max(16, budget))
        if cut:
            self.notify(f"message too long for the context: cut to {budget} tokens", severity="warning")
        if not self.recorder.add_question(self.chat, text, first=not self.messages):
            self.update_status()
            return  # not recorded and not sent: the text stays in the input box
        self.query_one("#prompt", Input).value = ""
        self.messages.append({"role": "user", "content": text})
        log = self.query_one("#log", VerticalScroll)
        log.mount(Turn(text, classes="user", markup=False))
        self.answer_view = StreamingAnswer("", classes="answer", markup=False)
        log.mount(self.answer_view)
        log.scroll_end(animate=False)
        self.answer_text = ""
        self.buffer = TokenBuffer()
        self.generating = True
        self.update_status()
        self.params = {
            **self.settings.params(),
            "seed": self.seed if self.seed is not None else random.randrange(2**31),
        }
        if self.constrain or getattr(self.backend, "constrain", None):  # on, or off against the default
            self.params["constrain"] = self.constrain
        self.generate(self.conversation(), self.params, self.buffer)

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, messages: list[dict[str, str]], params: dict[str, Any], buffer: TokenBuffer) -> None:
        error: str | None = None
        try:
            for piece in self.backend.stream(messages, **params):
                buffer.put(piece)
        except MedkitError as exc:
            error = exc.one_line()
        except Exception as exc:  # a model failure must not take the app down
            error = f"generation failed: {type(exc).__name__}: {exc}"
        self.call_from_thread(self.finish, error)

    def flush(self) -> None:
        """Move buffered pieces to the screen (runs every FLUSH_S on the UI thread)."""
        text = self.buffer.take()
        if text and self.answer_view is not None:
            self.answer_text += text
            self.answer_view.update(self.answer_text)
            self.query_one("#log", VerticalScroll).scroll_end(animate=False)
        now = time.perf_counter()
        if self.generating and now - self._status_at >= STATUS_S:
            self._status_at = now
            self.update_status()

    def finish(self, error: str | None) -> None:
        """The answer ended (done, stopped or failed): save it, then show it as Markdown."""
        self.flush()
        stats = self.backend.last_stats
        cancelled = getattr(stats, "stop_reason", "") == "cancelled"
        if error:
            self.notify(error, severity="error", timeout=10)
        if self.answer_text or not error:
            self.recorder.add_message(
                self.chat,
                "assistant",
                self.answer_text,
                model=self.backend.model_name,
                adapter=self.backend.adapter,
                params=self.params,
                stats=stats_dict(stats),
                cancelled=cancelled,
            )
            self.messages.append({"role": "assistant", "content": self.answer_text})
            self.last_answer = self.answer_text
        elif self.messages and self.messages[-1]["role"] == "user":
            self.messages.pop()  # nothing came back: the question can be asked again
        dropped = getattr(stats, "dropped_messages", 0)
        if dropped:
            self.notify(f"context full: the {dropped} oldest message(s) were left out of this answer")
        view, self.answer_view = self.answer_view, None
        text = self.answer_text + (STOPPED if cancelled else "")
        self.call_later(self._show_final, view, text)

    async def _show_final(self, view: StreamingAnswer | None, text: str) -> None:
        """Swap the plain streaming text for Markdown, rendered before it replaces it (no blank frame)."""
        if view is not None:
            answer = AnswerView("", classes="answer")
            await self.query_one("#log", VerticalScroll).mount(answer, after=view)
            await answer.update(text)
            await view.remove()
        self.generating = False
        self.update_status()

    # -- status --------------------------------------------------------------------------------------
    def _adapter_label(self) -> str:
        return f"adapter: {self.backend.adapter or 'base'}"

    def update_status(self) -> None:
        s, st = self.settings, self.backend.last_stats
        parts = [self._adapter_label()]
        if self.generating:
            elapsed = max(time.perf_counter() - self.buffer.started, 1e-6)
            parts.append(f"writing… {self.buffer.count} tok, {self.buffer.count / elapsed:.1f} tok/s")
        elif getattr(st, "completion_tokens", 0):
            parts.append(f"{st.tokens_per_s:.1f} tok/s · first token {st.ttft_s * 1000:.0f} ms")
        used = getattr(st, "ctx_used", 0) if self.messages else 0
        if self.generating:
            used = getattr(st, "prompt_tokens", 0) + self.buffer.count
        parts.append(f"ctx {used}/{self.backend.n_ctx}")
        parts.append(f"T {s.temperature:g} · top-p {s.top_p:g} · max {s.max_tokens}")
        if self.constrain:
            parts.append(f"codes only ({self.constrain})")
        if self.recorder.unsaved:
            parts.append(f"{self.recorder.unsaved} unsaved")
        self.query_one("#status", Static).update(" · ".join(parts))
        self.sub_title = f"{self.backend.model_name} · {self._adapter_label()}"

    # -- actions -------------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        self.recorder.write([])  # a last try for what could not be saved (the CLI says if some is left)
        self.exit()

    def action_stop(self) -> None:
        if self.generating:
            self.backend.cancel()

    def _idle(self, what: str) -> bool:
        if len(self.screen_stack) > 1:  # a dialog is open: app keys wait for it
            return False
        if self.generating:
            self.notify(f"stop the answer first (Esc), then {what}", severity="warning")
            return False
        return True

    def action_new_chat(self) -> None:
        if self._idle("start a new chat"):
            self.start_chat()
            self.notify("new chat")

    def action_chats(self) -> None:
        if self._idle("open another chat"):
            try:
                chats = self.store.chats()
            except HistoryError as exc:
                self.notify(
                    f"{exc.one_line()} — earlier chats cannot be listed", severity="error", timeout=10
                )
                return
            self.push_screen(ChatListScreen(chats, self.chat_id), self._chat_picked)

    def _chat_picked(self, chat_id: int | None) -> None:
        if chat_id:
            self.load_chat(chat_id)

    def action_adapter(self) -> None:
        if self._idle("switch adapter"):
            self.push_screen(AdapterScreen(self.backend.adapters, self.backend.adapter), self.switch_adapter)

    def switch_adapter(self, name: str | None) -> None:
        if name is None:
            return
        target = None if name == "base" else name
        try:
            self.backend.use_adapter(target)
        except MedkitError as exc:
            self.notify(exc.one_line(), severity="error")
            return
        line = f"— adapter: {target or 'base'} —"
        self.recorder.add_message(self.chat, "event", line, adapter=target, model=self.backend.model_name)
        self.query_one("#log", VerticalScroll).mount(Turn(line, classes="event", markup=False))
        self.update_status()
        self.notify(f"now answering with {target or 'the base model'}")

    def action_settings(self) -> None:
        if len(self.screen_stack) == 1:
            self.push_screen(SettingsScreen(self.settings), self._settings_saved)

    def _settings_saved(self, settings: Settings | None) -> None:
        if settings is None:
            return
        if settings.system_prompt != self.settings.system_prompt:
            self.recorder.set_system_prompt(self.chat, settings.system_prompt or None)
        self.settings = settings
        self.update_status()
        self.notify("settings saved")

    def action_copy_answer(self) -> None:
        if len(self.screen_stack) > 1:
            return
        if not self.last_answer:
            self.notify("no answer to copy yet", severity="warning")
            return
        self.copy_to_clipboard(self.last_answer)
        self.notify("last answer copied to the clipboard")

    def action_export(self) -> None:
        if len(self.screen_stack) > 1:
            return
        if not self.messages:
            self.notify("nothing to export: this chat is empty", severity="warning")
            return
        if not self.recorder.write([]):  # the files are written from the history: it must hold the whole chat
            n, where = self.recorder.unsaved, self.store.path
            self.notify(f"not exported: {n} message(s) are not saved to {where} yet", severity="error")
            return
        stem = self.export_dir / f"medkit-chat-{self.chat_id}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            md = self.store.export_markdown(self.chat_id, stem.with_suffix(".md"))
            js = self.store.export_json(self.chat_id, stem.with_suffix(".json"))
        except OSError as exc:
            self.notify(f"export failed: {exc.strerror} ({exc.filename})", severity="error")
            return
        except HistoryError as exc:
            self.notify(f"export failed: {exc.one_line()}", severity="error")
            return
        self.notify(f"exported {md.name} and {js.name} to {self.export_dir}")


@click.command(name="chat")
@runtime_options
@click.option(
    "--db", type=click.Path(dir_okay=False), default=None, help="Chat history file (default: user data dir)."
)
@click.option("--system", "system_prompt", default="", help="System prompt for new chats.")
@click.option(
    "--seed", type=int, default=None, help="Sampling seed for every answer (default: random per answer)."
)
@constrain_option
def command(
    model: str | None,
    adapter_specs: tuple[str, ...],
    gpu_layers: int | None,
    ctx: int,
    threads: int | None,
    db: str | None,
    system_prompt: str,
    seed: int | None,
    constrain: str | None,
) -> None:
    """Chat offline with a GGUF model (default: the latest `medkit export`).

    \b
    Keys: Enter send · Esc stop · Ctrl+N new chat · Ctrl+O chats · Ctrl+T adapter
          Ctrl+S settings · Ctrl+Y copy answer · Ctrl+R export · Ctrl+P commands · Ctrl+Q quit
          Ctrl+G ICD-10 codes only (on/off; --constrain picks the code set)
    """
    path, adapters, runtime = open_runtime(
        model, adapter_specs, gpu_layers, ctx, threads, constrain=constrain
    )
    store, warning = open_store(db)
    from medkit.provenance import stale_reason  # a GGUF exported before its run's adapter was retrained

    ggufs: list[str | Path] = [path, *adapters.values()]
    stale = [r for p in ggufs if (r := stale_reason(p))]
    warning = "; ".join(w for w in (warning, *stale) if w) or None
    app = ChatApp(runtime, store, system_prompt=system_prompt, startup_warning=warning, seed=seed)
    try:
        app.run()
    finally:
        runtime.close()
        store.close()
    if app.recorder.unsaved:
        click.echo(f"warning: {app.recorder.unsaved} message(s) could not be saved to {store.path}", err=True)
    if app.return_code:  # the app stopped on an unexpected error (Textual printed it): not a success
        raise SystemExit(app.return_code)
