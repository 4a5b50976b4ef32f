"""Storage: schema creation, versioning and upgrades of existing data folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select, text

from tools.errors import ConfigError, StorageError
from tools.settings import Settings
from tools.storage import (
    Base,
    BatchJob,
    Database,
    Project,
    ResponseCache,
    _alembic_config,
    head_revision,
)


def test_open_creates_the_data_folder_and_schema(settings: Settings) -> None:
    assert not settings.home.exists()
    db = Database.open(settings)
    assert (settings.home / "labelpilot.db").is_file()
    assert db.current_revision() == head_revision()
    tables = set(inspect(db.engine).get_table_names())
    assert {"projects", "tasks", "annotations", "prompt_versions", "runs", "predictions"} <= tables
    assert {"users", "threads", "steps", "elements", "feedbacks"} <= tables  # the web app's chat history
    db.dispose()


def test_data_survives_reopening(settings: Settings) -> None:
    db = Database.open(settings)
    with db.session() as session:
        session.add(Project(name="kept", description=""))
    db.dispose()
    again = Database.open(settings)
    with again.session() as session:
        assert session.scalars(select(Project.name)).all() == ["kept"]
    again.dispose()


def test_session_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        session.add(Project(name="half", description=""))
        session.flush()
        raise RuntimeError("boom")
    with db.session() as session:
        assert session.scalars(select(Project)).all() == []


def test_old_data_folder_is_upgraded_with_a_backup(settings: Settings) -> None:
    settings.ensure_home()
    path = settings.home / "labelpilot.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0001")
        connection.execute(
            text(
                "INSERT INTO projects (name, description, created_at, updated_at) "
                "VALUES ('old', '', '2026-01-01', '2026-01-01')"
            )
        )
    engine.dispose()

    db = Database.open(settings)
    assert db.current_revision() == head_revision() != "0001"
    assert "response_cache" in inspect(db.engine).get_table_names()
    with db.session() as session:
        assert session.scalars(select(Project.name)).all() == ["old"]
    backup = settings.home / "labelpilot.db.backup-0001"
    assert backup.is_file()
    old = create_engine(f"sqlite:///{backup}")
    with old.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    old.dispose()
    db.dispose()


def test_a_0002_data_folder_gets_the_batch_registry(settings: Settings) -> None:
    settings.ensure_home()
    path = settings.home / "labelpilot.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0002")
        connection.execute(
            text(
                "INSERT INTO projects (name, description, created_at, updated_at) "
                "VALUES ('old', '', '2026-01-01', '2026-01-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO response_cache (key, model, response, created_at) "
                "VALUES ('k', 'm', '{\"value\": \"x\"}', '2026-01-01')"
            )
        )
    engine.dispose()

    db = Database.open(settings)
    assert db.current_revision() == head_revision() != "0002"
    assert "batch_jobs" in inspect(db.engine).get_table_names()
    with db.session() as session:
        project = session.scalars(select(Project)).one()
        session.add(
            BatchJob(
                id="batch_1",
                project_id=project.id,
                identity="i" * 64,
                endpoint="http://x/v1 m",
                status="validating",
                input_file_id="file-1",
                requests={"task-1": {"key": "k", "examples": None}},
            )
        )
    with db.session() as session:
        row = session.get(BatchJob, "batch_1")
        assert row is not None and row.request_counts == {} and row.ingested_at is None
        assert session.scalar(select(ResponseCache.model)) == "m"
    assert (settings.home / "labelpilot.db.backup-0002").is_file()
    db.dispose()


def test_the_migrations_build_exactly_the_orm_schema(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_database_from_a_newer_labelpilot_is_refused(settings: Settings) -> None:
    db = Database.open(settings)
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db.dispose()
    with pytest.raises(StorageError, match="newer version"):
        Database.open(settings)


def test_foreign_tables_without_version_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE projects (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{path}")
    with pytest.raises(StorageError, match="no schema version"):
        Database.open(settings)


def test_bad_database_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LABELPILOT_DATABASE_URL"):
        Database.open(Settings(home=tmp_path, database_url="not a url"))


def test_unreachable_server_is_a_clear_storage_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql://u:secret@127.0.0.1:1/none")
    with pytest.raises(StorageError) as info:
        Database.open(settings)
    assert "secret" not in info.value.user_message()
    assert "127.0.0.1" in info.value.user_message()


def test_settings_from_env_defaults_and_overrides(tmp_path: Path) -> None:
    default = Settings.from_env({})
    assert default.home == Path("~/.labelpilot").expanduser()
    assert default.effective_database_url.endswith(".labelpilot/labelpilot.db")
    custom = Settings.from_env(
        {
            "LABELPILOT_HOME": str(tmp_path),
            "LABELPILOT_DATABASE_URL": "postgresql://x@h/db",
            "OPENAI_API_KEY": "sk-test-secret",
            "LABELPILOT_MODEL": "gpt-4.1-mini",
        }
    )
    assert custom.home == tmp_path
    assert custom.effective_database_url == "postgresql://x@h/db"
    assert custom.label_model == "gpt-4.1-mini"
    assert "sk-test-secret" not in repr(custom)
    assert "sk-test-secret" not in custom.model_dump_json()
