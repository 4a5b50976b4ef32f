"""Alembic environment: labelpilot always passes an open connection in `config.attributes`."""

from __future__ import annotations

from alembic import context

from tools.storage import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - labelpilot never runs alembic without a connection
    raise RuntimeError("run migrations through tools.storage.Database.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
