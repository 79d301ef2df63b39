"""A real terminal run: `medkit chat <SmolLM2 GGUF>` under tmux, a streamed answer, Esc, quit.

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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (apt-get install -y tmux)"),
]


class Tmux:
    def __init__(self, socket: str):
        self.base = ["tmux", "-L", socket]

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=30).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "chat")

    def wait(self, cond, timeout: float = 90.0, every: float = 0.1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if cond(text):
                return text
            time.sleep(every)
        raise AssertionError("screen never matched; last screen:\n" + self.screen())


def _writing(screen: str) -> int:
    """Tokens written so far according to the status bar (-1 when no answer is running)."""
    m = re.search(r"writing… (\d+) tok", screen)
    return int(m.group(1)) if m else -1


def test_chat_in_a_real_terminal(smollm2_gguf, tmp_path):
    db = tmp_path / "chats.sqlite3"
    tmux = Tmux(f"medkit-test-{os.getpid()}")
    cmd = (
        f"cd {tmp_path} && {sys.executable} -m medkit chat {smollm2_gguf} --db {db} --ctx 1024 --threads 1 --seed 0 "
        "--gpu-layers 0"  # Textual draws on stderr: no redirection
    )
    tmux("new-session", "-d", "-s", "chat", "-x", "110", "-y", "34", cmd)
    screens: list[str] = []
    try:
        screens.append(tmux.wait(lambda s: "Ask a question" in s))
        tmux("send-keys", "-t", "chat", "What is anaemia?", "Enter")
        streaming = tmux.wait(lambda s: _writing(s) >= 8)  # the answer is on screen while it is written
        screens.append(streaming)
        done = tmux.wait(lambda s: "tok/s ·" in s and "writing…" not in s)
        screens.append(done)
        assert "What is anaemia?" in done and "first token" in done
        tmux("send-keys", "-t", "chat", "C-n")  # a new chat, then a question with a long answer
        tmux.wait(lambda s: "What is anaemia?" not in s)
        tmux(
            "send-keys",
            "-t",
            "chat",
            "List twenty causes of anaemia, one per line, each with a short explanation.",
        )
        tmux("send-keys", "-t", "chat", "Enter")
        tmux.wait(lambda s: _writing(s) >= 5)
        tmux("send-keys", "-t", "chat", "Escape")
        stopped = tmux.wait(lambda s: "(stopped)" in s)
        screens.append(stopped)
        tmux("send-keys", "-t", "chat", "C-q")
        deadline = time.monotonic() + 20
        while "chat" in tmux("list-sessions") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if os.environ.get("MEDKIT_TMUX_TRANSCRIPT"):
            Path(os.environ["MEDKIT_TMUX_TRANSCRIPT"]).write_text(("\n" + "=" * 110 + "\n").join(screens))
        tmux("kill-server")
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT role, cancelled, length(content) FROM messages ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["user", "assistant", "user", "assistant"]  # over two chats
    assert rows[1][1] == 0 and rows[1][2] > 10  # a full answer
    assert rows[3][1] == 1 and rows[3][2] > 0  # stopped with Esc, partial text kept
