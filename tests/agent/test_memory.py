"""Conversation memory: SQLite next to an embedded database, PostgreSQL next to a PostgreSQL one."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agent.context import AgentContext
from agent.memory import (
    checkpoint_path,
    last_thread,
    new_thread_id,
    open_checkpointer,
    postgres_conninfo,
    remember_thread,
)
from tests.agent.conftest import chat, make_project
from tools.settings import Settings
from tools.storage import Database


async def test_sqlite_checkpoints_live_in_the_data_folder(context: AgentContext, db: Database) -> None:
    make_project(db, items=3)
    async with chat(context, thread="carol:1") as conversation:
        await conversation.send("/status")
    assert checkpoint_path(context.settings).is_file()
    async with chat(context, thread="carol:1") as again:
        messages = await again.messages()
    assert isinstance(messages[0], HumanMessage) and messages[0].content == "/status"
    assert isinstance(messages[-1], AIMessage) and "Project news" in str(messages[-1].content)


def test_threads_per_user(settings: Settings) -> None:
    assert last_thread(settings, "dana") is None
    first = new_thread_id("dana")
    assert first.startswith("dana:") and first != new_thread_id("dana")
    remember_thread(settings, "dana", first)
    remember_thread(settings, "erin", "erin:x")
    assert last_thread(settings, "dana") == first and last_thread(settings, "erin") == "erin:x"


def test_postgres_urls_become_libpq_strings() -> None:
    assert postgres_conninfo("postgresql+psycopg://u:p@h:5432/d") == "postgresql://u:p@h:5432/d"
    assert postgres_conninfo("postgresql://u@h/d") == "postgresql://u@h/d"


@pytest.mark.postgres
async def test_postgres_database_keeps_conversations_in_postgres(pg_db: Database) -> None:
    settings = Settings.from_env()
    assert not settings.uses_sqlite
    context = AgentContext(settings=settings, db=pg_db, foreground_s=None)
    make_project(pg_db, items=3)
    async with open_checkpointer(settings) as saver:
        assert type(saver).__name__ == "AsyncPostgresSaver"
    async with chat(context, thread="pg:1") as conversation:
        await conversation.send("/gt 2")
        waiting = await conversation.send("/label")
        assert waiting.interrupt is not None
    assert not checkpoint_path(settings).exists()
    async with chat(context, thread="pg:1") as later:
        assert await later.pending() is not None
        recorded = await later.send("no")
        assert "Not started" in recorded.reply
        labeled = await later.send("#1 is Sports")
    assert "Recorded 1 label(s)" in labeled.reply
