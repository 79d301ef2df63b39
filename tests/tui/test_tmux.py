"""A real terminal run under tmux: a streamed answer, a new chat, Esc, quit; then what the history holds.

Two apps: `medkit chat <SmolLM2 GGUF>` (slow: llama.cpp) and the same app on the scripted backend of
fake_backend.py (seconds), so the terminal path is tested even where llama.cpp cannot run. Every step waits
on what the screen shows, with generous deadlines, so a busy machine only makes it slower.
Needs tmux (CI: apt-get install -y tmux). Set MEDKIT_TMUX_TRANSCRIPT=path to keep the screens.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux not installed (apt-get install -y tmux)"
)
REPO = Path(__file__).resolve().parents[2]


PROMPT = "Ask a question"  # the input box's placeholder: shown while it is empty
TIMEOUT_S = 300.0  # per step; a busy 2-core machine (the full suite in parallel) needs minutes, not seconds
RETRY_S = 15.0  # keys the app has not acted on by then are sent again (only keys that are safe to repeat)


class Tmux:
    def __init__(self, socket: str):
        self.base = ["tmux", "-L", socket]

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=30).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "chat")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self("send-keys", "-t", "chat", *(["-l"] if literal else []), *keys)

    def wait(self, cond, *, retry=None, timeout: float = TIMEOUT_S, every: float = 0.2) -> str:
        """Poll the screen until ``cond(screen)``; ``retry()`` every RETRY_S seconds it does not hold."""
        deadline = time.monotonic() + timeout
        next_retry = time.monotonic() + RETRY_S
        while time.monotonic() < deadline:
            text = self.screen()
            if cond(text):
                return text
            if retry is not None and time.monotonic() > next_retry:
                retry()
                next_retry = time.monotonic() + RETRY_S
            time.sleep(every)
        raise AssertionError("screen never matched; last screen:\n" + self.screen())

    def ask(self, text: str) -> None:
        """Type ``text`` until the input box shows it, then Enter until the box is empty (the app took it).

        Typing again is ctrl+u (clear the box) and the text, so a slow app that gets both copies still
        holds one; Enter again on an empty box sends nothing. Nothing here races the app's start-up.
        """

        def retype() -> None:
            self.keys("C-u")
            self.keys(text, literal=True)

        self.keys(text, literal=True)
        self.wait(lambda s: text in s and PROMPT not in s, retry=retype)
        self.keys("Enter")
        self.wait(lambda s: PROMPT in s, retry=lambda: self.keys("Enter"))


def _writing(screen: str) -> int:
    """Tokens written so far according to the status bar (-1 when no answer is running)."""
    m = re.search(r"writing… (\d+) tok", screen)
    return int(m.group(1)) if m else -1


def _command(app: str, db: Path, request) -> str:  # Textual draws on stderr: no redirection
    if app == "scripted":
        return f"cd {REPO} && {sys.executable} -m tests.tui.fake_backend --db {db}"
    gguf = request.getfixturevalue("smollm2_gguf")
    return (
        f"cd {db.parent} && {sys.executable} -m medkit chat {gguf} --db {db} --ctx 1024 --threads 1 --seed 0 "
        "--gpu-layers 0"
    )


@pytest.mark.parametrize("app", ["scripted", pytest.param("smollm2", marks=pytest.mark.slow)])
def test_chat_in_a_real_terminal(app, tmp_path, request):
    db = tmp_path / "chats.sqlite3"
    tmux = Tmux(f"medkit-test-{os.getpid()}")
    cmd = _command(app, db, request)
    # tmux hands the session COLUMNS=80/LINES=24 when started without a terminal; the app must size the pane
    tmux("new-session", "-d", "-s", "chat", "-x", "110", "-y", "34", "unset COLUMNS LINES; " + cmd)
    screens: list[str] = []
    try:
        screens.append(tmux.wait(lambda s: PROMPT in s))
        tmux.ask("What is anaemia?")
        streaming = tmux.wait(lambda s: _writing(s) >= 8)  # the answer is on screen while it is written
        screens.append(streaming)
        done = tmux.wait(lambda s: "tok/s ·" in s and "writing…" not in s)
        screens.append(done)
        assert "What is anaemia?" in done and "first token" in done
        tmux.keys("C-n")  # a new chat, then a question with a long answer
        tmux.wait(lambda s: "What is anaemia?" not in s, retry=lambda: tmux.keys("C-n"))
        tmux.ask("List twenty causes of anaemia, one per line, each with a short explanation.")
        tmux.wait(lambda s: _writing(s) >= 5)
        tmux.keys("Escape")
        stopped = tmux.wait(lambda s: "(stopped)" in s, retry=lambda: tmux.keys("Escape"))
        screens.append(stopped)
        tmux.keys("C-q")
        tmux.wait(lambda s: "chat" not in tmux("list-sessions"), retry=lambda: tmux.keys("C-q"), timeout=60)
    finally:
        if os.environ.get("MEDKIT_TMUX_TRANSCRIPT"):
            Path(os.environ["MEDKIT_TMUX_TRANSCRIPT"]).write_text(("\n" + "=" * 110 + "\n").join(screens))
        tmux("kill-server")
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT role, cancelled, length(content) FROM messages ORDER BY id").fetchall()
        chats = con.execute("SELECT title FROM chats ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["user", "assistant", "user", "assistant"]  # over two chats
    assert rows[1][1] == 0 and rows[1][2] > 10  # a full answer
    assert rows[3][1] == 1 and rows[3][2] > 0  # stopped with Esc, partial text kept
    assert len(chats) == 2  # the launch and Ctrl+N stored no empty "New chat"
