"""Chat history of the web app: the tables Chainlit's SQLAlchemy data layer reads and writes.

Chainlit 2.12 (`chainlit/data/sql_alchemy.py`) writes raw SQL with quoted camelCase column names, so the
names and types follow what it binds and reads back:
- ids are text (uuid4 strings), times are ISO-8601 text (it reads users."createdAt" back as a string);
- documents it json.dumps (metadata, generation, modes, playerConfig) are TEXT on SQLite and JSONB on
  PostgreSQL; elements."props" stays TEXT on both, because it json.loads what it reads back;
- tags are a TEXT[] on PostgreSQL (it binds a Python list);
- every key of a step or element dict is a column: an INSERT naming a missing column fails, the data layer
  only logs it, and the step is lost (e.g. steps."autoCollapse").

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.Text().with_variant(JSONB(), "postgresql")
TAGS = sa.Text().with_variant(ARRAY(sa.Text()), "postgresql")


def _thread_id(*, nullable: bool) -> sa.Column[object]:
    return sa.Column("threadId", sa.Text, sa.ForeignKey("threads.id", ondelete="CASCADE"), nullable=nullable)


def upgrade() -> None:
    """Add users, threads, steps, elements and feedbacks."""
    op.create_table(
        "users",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("identifier", sa.Text, nullable=False, unique=True),
        sa.Column("metadata", JSON_DOCUMENT, nullable=False),
        sa.Column("createdAt", sa.Text, nullable=True),
    )
    op.create_table(
        "threads",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("createdAt", sa.Text, nullable=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("userId", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("userIdentifier", sa.Text, nullable=True),
        sa.Column("tags", TAGS, nullable=True),
        sa.Column("metadata", JSON_DOCUMENT, nullable=True),
    )
    op.create_index("ix_threads_user_id", "threads", ["userId"])
    op.create_table(
        "steps",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        _thread_id(nullable=False),
        sa.Column("parentId", sa.Text, nullable=True),
        sa.Column("streaming", sa.Boolean, nullable=False),
        sa.Column("waitForAnswer", sa.Boolean, nullable=True),
        sa.Column("isError", sa.Boolean, nullable=True),
        sa.Column("metadata", JSON_DOCUMENT, nullable=True),
        sa.Column("tags", TAGS, nullable=True),
        sa.Column("input", sa.Text, nullable=True),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("createdAt", sa.Text, nullable=True),
        sa.Column("command", sa.Text, nullable=True),
        sa.Column("modes", JSON_DOCUMENT, nullable=True),
        sa.Column("start", sa.Text, nullable=True),
        sa.Column("end", sa.Text, nullable=True),
        sa.Column("generation", JSON_DOCUMENT, nullable=True),
        sa.Column("showInput", sa.Text, nullable=True),
        sa.Column("defaultOpen", sa.Boolean, nullable=True),
        sa.Column("autoCollapse", sa.Boolean, nullable=True),
        sa.Column("language", sa.Text, nullable=True),
    )
    op.create_index("ix_steps_thread_id", "steps", ["threadId"])
    op.create_table(
        "elements",
        sa.Column("id", sa.Text, primary_key=True),
        _thread_id(nullable=True),
        sa.Column("type", sa.Text, nullable=True),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("chainlitKey", sa.Text, nullable=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("display", sa.Text, nullable=True),
        sa.Column("objectKey", sa.Text, nullable=True),
        sa.Column("size", sa.Text, nullable=True),
        sa.Column("page", sa.Integer, nullable=True),
        sa.Column("language", sa.Text, nullable=True),
        sa.Column("forId", sa.Text, nullable=True),
        sa.Column("mime", sa.Text, nullable=True),
        sa.Column("props", sa.Text, nullable=True),
        sa.Column("autoPlay", sa.Boolean, nullable=True),
        sa.Column("playerConfig", JSON_DOCUMENT, nullable=True),
    )
    op.create_index("ix_elements_thread_id", "elements", ["threadId"])
    op.create_table(
        "feedbacks",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("forId", sa.Text, nullable=False),
        _thread_id(nullable=True),
        sa.Column("value", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
    )
    op.create_index("ix_feedbacks_for_id", "feedbacks", ["forId"])


def downgrade() -> None:
    """Drop the chat history tables."""
    for table in ("feedbacks", "elements", "steps", "threads", "users"):
        op.drop_table(table)
