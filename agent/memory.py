"""Conversation memory: a LangGraph checkpointer next to the data, and thread ids per user and conversation.

- Embedded SQLite database → `AsyncSqliteSaver` in `<data folder>/agent.sqlite`.
- PostgreSQL database (LABELPILOT_DATABASE_URL) → `AsyncPostgresSaver` in the same database (its own
  tables, created by `setup()`), so every machine of a deployment shares the conversations.

Checkpoints are read back with a strict serializer (only LangChain messages and plain data), so a tampered
checkpoint cannot make Python build arbitrary objects. A returning user continues their newest
conversation: `last_thread` / `remember_thread` keep it per user in `<data folder>/chat-threads.json`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from tools.errors import ConfigError
from tools.settings import Settings

CHECKPOINT_FILE = "agent.sqlite"
THREADS_FILE = "chat-threads.json"


def checkpoint_path(settings: Settings) -> Path:
    """The SQLite file that holds conversations when the database is embedded."""
    return settings.home / CHECKPOINT_FILE


def _serde() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=None)


def postgres_conninfo(url: str) -> str:
    """A libpq connection string from a SQLAlchemy PostgreSQL URL (drops the `+psycopg` driver part)."""
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url)


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open the checkpointer for the configured database (closed when the block ends)."""
    if settings.uses_sqlite:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        settings.ensure_home()
        async with AsyncSqliteSaver.from_conn_string(str(checkpoint_path(settings))) as saver:
            saver.serde = _serde()
            yield saver
        return
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:  # the package is a dependency; a trimmed installation says what is missing
        raise ConfigError(
            "conversation memory on PostgreSQL needs the package langgraph-checkpoint-postgres",
            hint="install labelpilot with its dependencies (make install)",
        ) from None
    import psycopg

    try:
        async with AsyncPostgresSaver.from_conn_string(
            postgres_conninfo(settings.effective_database_url), serde=_serde()
        ) as saver:
            await saver.setup()
            yield saver
    except psycopg.OperationalError as exc:
        raise ConfigError(
            f"cannot open the conversation memory in PostgreSQL: {str(exc).splitlines()[0]}",
            hint="check LABELPILOT_DATABASE_URL and that the server is running",
        ) from None


def new_thread_id(user: str) -> str:
    """A fresh conversation id for a user: `<user>:<random>`."""
    return f"{user}:{uuid.uuid4().hex[:12]}"


def _threads(settings: Settings) -> dict[str, str]:
    path = settings.home / THREADS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def last_thread(settings: Settings, user: str) -> str | None:
    """The conversation a user had last, if any."""
    return _threads(settings).get(user)


def remember_thread(settings: Settings, user: str, thread_id: str) -> None:
    """Remember a user's current conversation (written atomically)."""
    threads = _threads(settings)
    if threads.get(user) == thread_id:
        return
    threads[user] = thread_id
    settings.ensure_home()
    path = settings.home / THREADS_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(threads, indent=2), encoding="utf-8")
    temporary.replace(path)
