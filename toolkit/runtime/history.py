"""Chat history in sqlite: chats and messages, each message with its model, adapter and sampling params.

The schema is versioned by a ``schema_migrations`` table; a database written by a newer medkit is refused
(and left untouched). The journal is WAL so a crash never loses earlier chats. Every sqlite failure after
the file has opened (a corrupt page, a full disk) is raised as a HistoryError naming the file.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medkit.errors import MedkitError
from medkit.formats.files import atomic_path

HOME_ENV = "MEDKIT_HOME"
DB_NAME = "chats.sqlite3"

# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE chats (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        system_prompt TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at REAL NOT NULL,
        model TEXT,
        adapter TEXT,
        params TEXT,
        stats TEXT,
        cancelled INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX messages_by_chat ON messages(chat_id, id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class HistoryError(MedkitError):
    """The chat history database cannot be opened, read or written."""


def _guarded(what: str):
    """Turn sqlite errors (and undecodable rows) of a ChatStore method into a HistoryError naming the file."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(self: ChatStore, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except (sqlite3.Error, json.JSONDecodeError) as exc:
                raise HistoryError(f"cannot {what} the chat history ({exc})", where=str(self.path)) from exc

        return guarded

    return wrap


@dataclass
class StoredMessage:
    id: int
    role: str
    content: str
    created_at: float
    model: str | None = None
    adapter: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False


@dataclass
class ChatSummary:
    id: int
    title: str
    system_prompt: str | None
    created_at: float
    updated_at: float
    n_messages: int


def default_db_path() -> Path:
    """$MEDKIT_HOME/chats.sqlite3, else the user data directory (platformdirs)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home) / DB_NAME
    from platformdirs import user_data_dir

    return Path(user_data_dir("medkit", appauthor=False)) / DB_NAME


class ChatStore:
    """Chats and messages in one sqlite file. Use from one thread."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, clock=time.time):
        self.path = Path(path) if path is not None else default_db_path()
        self._clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path)
            self._check_version()
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise HistoryError(f"cannot open chat history ({exc})", where=str(self.path)) from exc

    def _version(self) -> int:
        row = self.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
        ).fetchone()
        if row is None:
            return 0
        return int(self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])

    def _check_version(self) -> None:
        found = self._version()
        if found > SCHEMA_VERSION:
            self.db.close()
            raise HistoryError(
                f"chat history is schema v{found}, written by a newer medkit (this one knows v{SCHEMA_VERSION}); "
                "the file is left untouched",
                where=str(self.path),
                hint="upgrade medkit or pass --db with another file",
            )

    def _migrate(self) -> None:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
        )
        current = self._version()
        for version in range(current + 1, SCHEMA_VERSION + 1):
            record = f"INSERT INTO schema_migrations VALUES ({int(version)}, {float(self._clock())});"
            self.db.executescript("BEGIN;" + MIGRATIONS[version - 1] + ";" + record + "COMMIT;")

    @property
    def schema_version(self) -> int:
        return self._version()

    # -- chats ---------------------------------------------------------------------------------------
    @_guarded("write")
    def new_chat(self, title: str = "New chat", system_prompt: str | None = None) -> int:
        now = self._clock()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO chats (title, system_prompt, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (title, system_prompt, now, now),
            )
        return int(cur.lastrowid or 0)

    @_guarded("read")
    def chats(self) -> list[ChatSummary]:
        rows = self.db.execute(
            "SELECT c.id, c.title, c.system_prompt, c.created_at, c.updated_at, COUNT(m.id) "
            "FROM chats c LEFT JOIN messages m ON m.chat_id = c.id GROUP BY c.id ORDER BY c.updated_at DESC, c.id DESC"
        ).fetchall()
        return [ChatSummary(*row) for row in rows]

    def chat(self, chat_id: int) -> ChatSummary:
        for c in self.chats():
            if c.id == chat_id:
                return c
        raise HistoryError(f"no chat with id {chat_id}", where=str(self.path))

    @_guarded("write")
    def rename(self, chat_id: int, title: str) -> None:
        with self.db:
            self.db.execute("UPDATE chats SET title = ? WHERE id = ?", (title, chat_id))

    @_guarded("write")
    def set_system_prompt(self, chat_id: int, text: str | None) -> None:
        with self.db:
            self.db.execute(
                "UPDATE chats SET system_prompt = ?, updated_at = ? WHERE id = ?",
                (text, self._clock(), chat_id),
            )

    @_guarded("write")
    def delete_chat(self, chat_id: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    # -- messages ------------------------------------------------------------------------------------
    @_guarded("write")
    def add_message(
        self,
        chat_id: int,
        role: str,
        content: str,
        *,
        model: str | None = None,
        adapter: str | None = None,
        params: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        cancelled: bool = False,
    ) -> int:
        now = self._clock()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO messages (chat_id, role, content, created_at, model, adapter, params, stats, cancelled) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    chat_id,
                    role,
                    content,
                    now,
                    model,
                    adapter,
                    json.dumps(params or {}),
                    json.dumps(stats or {}),
                    int(cancelled),
                ),
            )
            self.db.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (now, chat_id))
        return int(cur.lastrowid or 0)

    @_guarded("read")
    def messages(self, chat_id: int) -> list[StoredMessage]:
        rows = self.db.execute(
            "SELECT id, role, content, created_at, model, adapter, params, stats, cancelled "
            "FROM messages WHERE chat_id = ? ORDER BY id",
            (chat_id,),
        ).fetchall()
        return [
            StoredMessage(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                json.loads(r[6] or "{}"),
                json.loads(r[7] or "{}"),
                bool(r[8]),
            )
            for r in rows
        ]

    # -- export --------------------------------------------------------------------------------------
    def to_dict(self, chat_id: int) -> dict[str, Any]:
        c = self.chat(chat_id)
        return {
            "id": c.id,
            "title": c.title,
            "system_prompt": c.system_prompt,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "note": "Answers are information, not medical advice.",
            "messages": [asdict(m) for m in self.messages(chat_id)],
        }

    def export_json(self, chat_id: int, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(self.to_dict(chat_id), indent=2, ensure_ascii=False) + "\n")
        return out

    def export_markdown(self, chat_id: int, path: str | os.PathLike[str]) -> Path:
        data = self.to_dict(chat_id)
        lines = [f"# {data['title']}", "", "> Answers are information, not medical advice.", ""]
        if data["system_prompt"]:
            lines += ["**System:** " + data["system_prompt"], ""]
        for m in data["messages"]:
            who = "You" if m["role"] == "user" else "Assistant"
            meta = ""
            if m["role"] == "assistant":
                bits = [m["model"] or "", f"adapter {m['adapter']}" if m["adapter"] else "base"]
                if m["cancelled"]:
                    bits.append("stopped")
                meta = " _(" + ", ".join(b for b in bits if b) + ")_"
            lines += [f"## {who}{meta}", "", m["content"], ""]
        out = Path(path)
        with atomic_path(out) as tmp:
            tmp.write_text("\n".join(lines))
        return out

    def close(self) -> None:
        self.db.close()
