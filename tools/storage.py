"""Relational storage: the ORM tables and the `Database` handle (SQLite by default, PostgreSQL by URL).

The schema is versioned with Alembic (migrations in `tools/migrations/`). Opening a database creates it
when it is new and upgrades it when it was written by an older labelpilot (an embedded SQLite file is
copied to a backup first); a database written by a newer labelpilot is refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from tools.errors import ConfigError, StorageError
from tools.settings import Settings

JSONType = JSON().with_variant(JSONB(), "postgresql")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def utcnow() -> datetime:
    """Return the current time in UTC (all stored times are UTC)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONType,
        datetime: DateTime(timezone=True),
    }


class Project(Base):
    """A labeling project: a dataset, its label schema and everything done with it."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    label_spec: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    #: The prompt version number commands use by default (the user adopts one; proposals do not move it).
    current_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Task(Base):
    """One item to label: its input fields, a stable external id and a hash of its content."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id", name="uq_tasks_project_external_id"),
        Index("ix_tasks_project_hash", "project_id", "content_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Annotation(Base):
    """A ground-truth label given by a person; the history is kept and the latest row wins.

    Deleting a label appends a row with `deleted=True` so the history stays complete.
    """

    __tablename__ = "annotations"
    __table_args__ = (Index("ix_annotations_task", "task_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    author: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(String(50), default="human")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromptVersion(Base):
    """An immutable, numbered prompt version of a project."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("project_id", "number", name="uq_prompt_versions_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_versions.id"), nullable=True)
    instructions: Mapped[str] = mapped_column(Text, default="")
    label_descriptions: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    few_shot: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    model: Mapped[str] = mapped_column(String(200), default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    reasoning: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One execution of a labeler over a set of tasks (an evaluation, a bulk job, an import of predictions)."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    prompt_version_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_versions.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(50), default="created")
    model: Mapped[str] = mapped_column(String(200), default="")
    job_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    scope: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Prediction(Base):
    """A labeler's answer for one task in one run (at most one per run and task)."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("run_id", "task_id", name="uq_predictions_run_task"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    reasoning: Mapped[str | None] = mapped_column(Text, nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cached_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(50), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    examples: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ResponseCache(Base):
    """A model response stored under the hash of its request (model, messages, schema, parameters)."""

    __tablename__ = "response_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BatchJob(Base):
    """A batch labelpilot submitted to a provider's Batch API: where it stands and what it asked.

    `requests` maps each line's custom_id to the request's response-cache key and few-shot example ids (what
    ingesting its results needs); `ingested_at` is set once its results were turned into predictions.
    """

    __tablename__ = "batch_jobs"
    __table_args__ = (Index("ix_batch_jobs_project_identity", "project_id", "identity"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    identity: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(50))
    input_file_id: Mapped[str] = mapped_column(String(200))
    output_file_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    requests: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    ingested_at: Mapped[datetime | None] = mapped_column(nullable=True)


# ---------------------------------------------------------------- chat history of the web app
# Chainlit's SQLAlchemy data layer (set up in ui/web_auth.py) reads and writes these five tables with its own
# raw SQL; labelpilot code never touches them. Names and types are the ones it expects (migration 0005 says
# why each type is what it is); they are declared here so the migrations keep matching this metadata.

_CHAT_DOCUMENT = Text().with_variant(JSONB(), "postgresql")
_CHAT_TAGS = Text().with_variant(ARRAY(Text()), "postgresql")


def _chat_thread_id(*, nullable: bool) -> Column[str]:
    return Column("threadId", Text, ForeignKey("threads.id", ondelete="CASCADE"), nullable=nullable)


chat_users = Table(
    "users",
    Base.metadata,
    Column("id", Text, primary_key=True),
    Column("identifier", Text, nullable=False, unique=True),
    Column("metadata", _CHAT_DOCUMENT, nullable=False),
    Column("createdAt", Text, nullable=True),
)
chat_threads = Table(
    "threads",
    Base.metadata,
    Column("id", Text, primary_key=True),
    Column("createdAt", Text, nullable=True),
    Column("name", Text, nullable=True),
    Column("userId", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("userIdentifier", Text, nullable=True),
    Column("tags", _CHAT_TAGS, nullable=True),
    Column("metadata", _CHAT_DOCUMENT, nullable=True),
    Index("ix_threads_user_id", "userId"),
)
chat_steps = Table(
    "steps",
    Base.metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("type", Text, nullable=False),
    _chat_thread_id(nullable=False),
    Column("parentId", Text, nullable=True),
    Column("streaming", Boolean, nullable=False),
    Column("waitForAnswer", Boolean, nullable=True),
    Column("isError", Boolean, nullable=True),
    Column("metadata", _CHAT_DOCUMENT, nullable=True),
    Column("tags", _CHAT_TAGS, nullable=True),
    Column("input", Text, nullable=True),
    Column("output", Text, nullable=True),
    Column("createdAt", Text, nullable=True),
    Column("command", Text, nullable=True),
    Column("modes", _CHAT_DOCUMENT, nullable=True),
    Column("start", Text, nullable=True),
    Column("end", Text, nullable=True),
    Column("generation", _CHAT_DOCUMENT, nullable=True),
    Column("showInput", Text, nullable=True),
    Column("defaultOpen", Boolean, nullable=True),
    Column("autoCollapse", Boolean, nullable=True),
    Column("language", Text, nullable=True),
    Index("ix_steps_thread_id", "threadId"),
)
chat_elements = Table(
    "elements",
    Base.metadata,
    Column("id", Text, primary_key=True),
    _chat_thread_id(nullable=True),
    Column("type", Text, nullable=True),
    Column("url", Text, nullable=True),
    Column("chainlitKey", Text, nullable=True),
    Column("name", Text, nullable=False),
    Column("display", Text, nullable=True),
    Column("objectKey", Text, nullable=True),
    Column("size", Text, nullable=True),
    Column("page", Integer, nullable=True),
    Column("language", Text, nullable=True),
    Column("forId", Text, nullable=True),
    Column("mime", Text, nullable=True),
    Column("props", Text, nullable=True),
    Column("autoPlay", Boolean, nullable=True),
    Column("playerConfig", _CHAT_DOCUMENT, nullable=True),
    Index("ix_elements_thread_id", "threadId"),
)
chat_feedbacks = Table(
    "feedbacks",
    Base.metadata,
    Column("id", Text, primary_key=True),
    Column("forId", Text, nullable=False),
    _chat_thread_id(nullable=True),
    Column("value", Integer, nullable=False),
    Column("comment", Text, nullable=True),
    Index("ix_feedbacks_for_id", "forId"),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the chat read while a bulk job writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest schema revision this version of labelpilot knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "tools/migrations has no revisions"
    return head


def parse_database_url(url: str) -> URL:
    """Parse a database URL; plain `postgresql://` gets the psycopg 3 driver we ship (a ConfigError if bad)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"LABELPILOT_DATABASE_URL is not a database URL: {exc}",
            hint="use e.g. postgresql+psycopg://user:password@host:5432/dbname",
        ) from exc
    if parsed.drivername == "postgresql":
        # Plain postgresql:// would ask for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class Database:
    """A handle on the relational store: an engine plus a session factory."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = parse_database_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine: Engine = create_engine(self.url, echo=echo, future=True)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, settings: Settings, *, upgrade: bool = True) -> Database:
        """Open (creating or upgrading as needed) the database the settings point at."""
        if settings.database_url is None:
            settings.ensure_home()
        database = cls(settings.effective_database_url)
        if upgrade:
            database.ensure_schema()
        return database

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, safe for logs and output."""
        return self.url.render_as_string(hide_password=True)

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, when the database is one."""
        if self.is_sqlite and self.url.database and self.url.database != ":memory:":
            return Path(self.url.database)
        return None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session inside one transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def current_revision(self) -> str | None:
        """Return the schema revision stored in the database (None for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except OperationalError as exc:
            raise StorageError(
                f"cannot open the database {self.display_url}: {exc.orig}",
                hint="check LABELPILOT_DATABASE_URL / LABELPILOT_HOME and that the server is running",
            ) from exc

    def ensure_schema(self) -> str:
        """Create the schema when the database is empty, upgrade it when it is older; return the revision."""
        from alembic.script import ScriptDirectory

        head = head_revision()
        current = self.current_revision()
        if current == head:
            return head
        if current is None and inspect(self.engine).has_table("projects"):
            raise StorageError(
                f"the database {self.display_url} has labelpilot tables but no schema version",
                hint="point LABELPILOT_HOME / LABELPILOT_DATABASE_URL at a labelpilot data folder",
            )
        known = {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}
        if current is not None and current not in known:
            raise StorageError(
                f"the database {self.display_url} has schema revision {current}, "
                "which this labelpilot does not know (it was written by a newer version)",
                hint="upgrade labelpilot, or point LABELPILOT_HOME at another data folder",
            )
        self.upgrade(backup=current is not None)
        return head

    def upgrade(self, *, backup: bool = True) -> Path | None:
        """Upgrade the schema to the newest revision; back up an embedded SQLite file first."""
        from alembic import command

        backup_path: Path | None = None
        path = self.sqlite_path
        current = self.current_revision()
        if backup and path is not None and path.exists() and current is not None:
            backup_path = path.with_name(f"{path.name}.backup-{current}")
            self.engine.dispose()
            shutil.copy2(path, backup_path)
        with self.engine.begin() as connection:
            command.upgrade(_alembic_config(connection), "head")
        return backup_path

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
