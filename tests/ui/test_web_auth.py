"""Web login and chat history: users from the environment and the users file, the CLI that manages them, the
session secret, and Chainlit's real SQLAlchemy data layer on the migrated SQLite / PostgreSQL database."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner, Result

from tests.ui.conftest import import_chainlit
from tools.errors import ConfigError
from tools.settings import Settings
from tools.storage import Database, head_revision
from ui.cli import app
from ui.web_auth import (
    AUTH_SECRET_ENV,
    AUTH_SECRET_FILE,
    check_password,
    ensure_auth_secret,
    hash_password,
    history_conninfo,
    history_data_layer,
    load_users,
    login_enabled,
    parse_users_env,
    read_users_file,
    users_file,
    write_users_file,
)

runner = CliRunner()
CHAT_TABLES = {"users", "threads", "steps", "elements", "feedbacks"}


def settings_with(home: Path, **env: str) -> Settings:
    return Settings.from_env({"LABELPILOT_HOME": str(home), **env})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_auth_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """CHAINLIT_AUTH_SECRET unset, and whatever a test sets removed again afterwards."""
    monkeypatch.setenv(AUTH_SECRET_ENV, "")  # recorded, so teardown removes what ensure_auth_secret sets
    monkeypatch.delenv(AUTH_SECRET_ENV)


@pytest.fixture(scope="module")
def chainlit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The chainlit package, imported so that it writes its folders into a temporary directory."""
    return import_chainlit(tmp_path_factory)


# ---------------------------------------------------------------- hashes


def test_hash_and_check_password() -> None:
    first, second = hash_password("s3cret:with$signs"), hash_password("s3cret:with$signs")
    assert first.startswith("scrypt$") and first != second  # salted
    assert "s3cret" not in first
    users = {"alice": first}
    assert check_password(users, "alice", "s3cret:with$signs")
    assert not check_password(users, "alice", "s3cret:with$sign")
    assert not check_password(users, "alice", "")
    assert not check_password(users, "bob", "s3cret:with$signs")
    assert not check_password({"alice": "scrypt$1$2$3$not$valid"}, "alice", "anything")


# ---------------------------------------------------------------- users from the environment


def test_users_from_the_environment(tmp_path: Path) -> None:
    assert parse_users_env(" alice:secret1,bob:se:cr:et2 ,,") == {"alice": "secret1", "bob": "se:cr:et2"}
    settings = settings_with(tmp_path, LABELPILOT_USERS="alice:secret1,bob:se:cr:et2")
    assert login_enabled(settings)
    assert "secret1" not in repr(settings)
    users = load_users(settings)
    assert set(users) == {"alice", "bob"}
    assert check_password(users, "bob", "se:cr:et2")
    assert not check_password(users, "bob", "se")
    assert not check_password(users, "alice", "se:cr:et2")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("alice", "entry 1 has no ':'"),
        ("alice:pw1,bob", "entry 2 has no ':'"),
        (":hunter2", "entry 1: the user name is not valid"),
        ("al ice:hunter2", "the user name 'al ice' is not valid"),
        ("alice:", "user 'alice' has an empty password"),
        ("alice:hunter2,alice:hunter3", "user 'alice' is given twice"),
    ],
)
def test_malformed_users_variable_is_a_clear_error(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_users(settings_with(tmp_path, LABELPILOT_USERS=value))
    message = info.value.user_message()
    assert message.startswith("LABELPILOT_USERS") and problem in message
    assert info.value.hint  # how to fix it
    assert "hunter" not in message  # never a password


# ---------------------------------------------------------------- the users file


def test_users_file_roundtrip_and_the_environment_wins(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    assert not login_enabled(settings) and load_users(settings) == {}
    path = users_file(settings)
    assert path == tmp_path / "users.toml"
    write_users_file(path, {"alice": hash_password("from-file"), "carol@example.com": hash_password("c")})
    assert mode(path) == 0o600
    assert login_enabled(settings)
    users = load_users(settings)
    assert set(users) == {"alice", "carol@example.com"}
    assert check_password(users, "alice", "from-file") and check_password(users, "carol@example.com", "c")

    both = load_users(settings_with(tmp_path, LABELPILOT_USERS="alice:from-env"))
    assert check_password(both, "alice", "from-env") and not check_password(both, "alice", "from-file")
    assert check_password(both, "carol@example.com", "c")


def test_users_file_can_be_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "logins.toml"
    settings = settings_with(tmp_path / "home", LABELPILOT_USERS_FILE=str(path))
    assert login_enabled(settings)  # asked for, so login stays on even before the file exists
    with pytest.raises(
        ConfigError, match=r"LABELPILOT_USERS_FILE points at .*logins\.toml, which does not exist"
    ):
        load_users(settings)
    write_users_file(path, {"dana": hash_password("d")})
    assert check_password(load_users(settings), "dana", "d")


VALID_HASH = hash_password("x")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[users.alice\npassword = 1", "is not valid TOML"),
        ("users = 3", "is not a table"),
        ('[admins.alice]\npassword = "x"', "unknown top-level keys: admins"),
        ("[users.alice]", "must hold exactly one key, password"),
        (f'[users.alice]\npassword = "{VALID_HASH}"\nrole = "admin"', "must hold exactly one key"),
        ('[users.alice]\npassword = "plain-text"', "password is not a hash"),
        ("[users.alice]\npassword = 5", "password is not a hash"),
        (f'[users."bad name"]\npassword = "{VALID_HASH}"', "invalid user name 'bad name'"),
    ],
)
def test_malformed_users_file_is_a_clear_error(tmp_path: Path, content: str, problem: str) -> None:
    settings = settings_with(tmp_path)
    users_file(settings).write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_users(settings)
    assert str(users_file(settings)) in info.value.message and problem in info.value.message
    assert info.value.hint and "labelpilot users add" in info.value.hint


def test_users_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_bytes(b"\xff\xfe[users]")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        read_users_file(path)


# ---------------------------------------------------------------- Chainlit's session secret


@pytest.mark.usefixtures("no_auth_secret")
def test_auth_secret_is_created_private_and_reused(tmp_path: Path) -> None:
    settings = settings_with(tmp_path / "home")
    ensure_auth_secret(settings)
    path = tmp_path / "home" / AUTH_SECRET_FILE
    secret = os.environ[AUTH_SECRET_ENV]
    assert len(secret) >= 32 and path.read_text().strip() == secret
    assert mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [AUTH_SECRET_FILE]  # no temporary file left

    del os.environ[AUTH_SECRET_ENV]
    path.chmod(0o644)
    ensure_auth_secret(settings)
    assert os.environ[AUTH_SECRET_ENV] == secret  # the same secret: logins survive a restart
    assert mode(path) == 0o600


@pytest.mark.usefixtures("no_auth_secret")
def test_auth_secret_from_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_SECRET_ENV, "given")
    ensure_auth_secret(settings_with(tmp_path))
    assert os.environ[AUTH_SECRET_ENV] == "given"
    assert not (tmp_path / AUTH_SECRET_FILE).exists()


@pytest.mark.usefixtures("no_auth_secret")
def test_empty_auth_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / AUTH_SECRET_FILE).write_text("\n")
    with pytest.raises(ConfigError, match="is empty") as info:
        ensure_auth_secret(settings_with(tmp_path))
    assert info.value.hint and "delete it" in info.value.hint
    assert AUTH_SECRET_ENV not in os.environ


# ---------------------------------------------------------------- the CLI


def invoke(*args: str, expect: int = 0, input: str | None = None) -> Result:
    """Run `labelpilot ARGS` in process and check its exit code."""
    result = runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})
    assert result.exit_code == expect, (
        f"exit {result.exit_code}\nstdout:{result.stdout}\nstderr:{result.stderr}\n{result.exception!r}"
    )
    return result


def test_cli_add_list_remove(isolated_env: Path) -> None:
    assert "No users" in invoke("users", "list").stdout

    added = json.loads(invoke("users", "add", "alice", "--password-stdin", "--json", input="pw:1 x\n").stdout)
    assert added == {"name": "alice", "file": str(isolated_env / "users.toml"), "replaced": False}
    # Asked twice; a mismatch asks again. The prompt goes to stderr, the password is never echoed.
    prompted = invoke("users", "add", "bob", input="one\ntwo\nbob-pw\nbob-pw\n")
    assert "Added bob" in prompted.stdout
    assert "do not match" in prompted.stderr and "bob-pw" not in prompted.output

    path = isolated_env / "users.toml"
    assert mode(path) == 0o600 and "pw:1 x" not in path.read_text() and "bob-pw" not in path.read_text()
    users = load_users(Settings.from_env())
    assert check_password(users, "alice", "pw:1 x") and check_password(users, "bob", "bob-pw")

    listed = json.loads(invoke("users", "list", "--json").stdout)
    assert listed["login_enabled"] and listed["file_exists"]
    assert listed["users"] == [{"name": "alice", "source": "file"}, {"name": "bob", "source": "file"}]
    assert "bob" in invoke("users", "list").stdout

    removed = json.loads(invoke("users", "remove", "bob", "--json").stdout)
    assert removed["remaining"] == 1
    assert set(load_users(Settings.from_env())) == {"alice"}
    last = invoke("users", "remove", "alice")
    assert "nobody can log in" in last.stderr
    assert read_users_file(path) == {} and login_enabled(Settings.from_env())


def test_cli_duplicate_replace_and_errors(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    invoke("users", "add", "alice", "--password-stdin", input="first\n")
    duplicate = invoke("users", "add", "alice", "--password-stdin", input="second\n", expect=1)
    assert "user 'alice' already exists" in duplicate.stderr and "--replace" in duplicate.stderr
    assert check_password(load_users(Settings.from_env()), "alice", "first")

    replaced = invoke("users", "add", "alice", "--password-stdin", "--replace", "--json", input="second\n")
    assert json.loads(replaced.stdout)["replaced"] is True
    assert check_password(load_users(Settings.from_env()), "alice", "second")

    bad = invoke("users", "add", "bad:name", "--password-stdin", "--json", input="x\n", expect=1)
    assert json.loads(bad.stdout)["error"] == "ConfigError" and "cannot be a user name" in bad.stderr
    empty = invoke("users", "add", "carol", "--password-stdin", input="\n", expect=1)
    assert "password is empty" in empty.stderr
    missing = invoke("users", "remove", "zed", expect=1)
    assert "no user 'zed'" in missing.stderr

    monkeypatch.setenv("LABELPILOT_USERS", "erin:pw")
    from_env = invoke("users", "remove", "erin", expect=1)
    assert "remove it there" in from_env.stderr
    listed = json.loads(invoke("users", "list", "--json").stdout)["users"]
    assert listed == [{"name": "alice", "source": "file"}, {"name": "erin", "source": "env"}]
    shadowed = invoke("users", "add", "erin", "--password-stdin", input="file-pw\n")
    assert "LABELPILOT_USERS also gives 'erin'" in shadowed.stderr

    (isolated_env / "users.toml").write_text("not toml [", encoding="utf-8")
    broken = invoke("users", "add", "frank", "--password-stdin", input="x\n", expect=1)
    assert "is not valid TOML" in broken.stderr
    assert (isolated_env / "users.toml").read_text(encoding="utf-8") == "not toml ["  # left as it was


# ---------------------------------------------------------------- chat history


def test_history_conninfo(tmp_path: Path) -> None:
    embedded = history_conninfo(settings_with(tmp_path))
    assert embedded == f"sqlite+aiosqlite:///{tmp_path / 'labelpilot.db'}"
    for url in ("postgresql://u:p%40ss@db:5432/lp", "postgresql+psycopg://u:p%40ss@db:5432/lp"):
        assert (
            history_conninfo(settings_with(tmp_path, LABELPILOT_DATABASE_URL=url))
            == "postgresql+psycopg://u:p%40ss@db:5432/lp"
        )
    with pytest.raises(ConfigError, match="SQLite or PostgreSQL, not mysql"):
        history_conninfo(settings_with(tmp_path, LABELPILOT_DATABASE_URL="mysql://u@h/db"))


def test_chat_tables_have_a_column_for_everything_chainlit_writes(chainlit: Any, db: Database) -> None:
    from chainlit.element import ElementDict
    from chainlit.step import StepDict
    from chainlit.types import Feedback

    columns = {table: {c["name"] for c in inspect(db.engine).get_columns(table)} for table in CHAT_TABLES}
    # `feedback` is joined in from feedbacks; `icon` is moved into metadata; `path` is never stored.
    assert set(StepDict.__annotations__) - {"feedback", "icon"} == columns["steps"]
    assert set(ElementDict.__annotations__) - {"path"} == columns["elements"]
    assert {f.name for f in dataclasses.fields(Feedback)} == columns["feedbacks"]
    assert {"autoCollapse", "defaultOpen", "showInput", "waitForAnswer", "isError"} <= columns["steps"]


async def history_roundtrip(chainlit: Any, settings: Settings) -> dict[str, Any]:
    """Log a user in, write a conversation through the real data layer, and read it back."""
    from chainlit.context import ChainlitContext, context_var
    from chainlit.session import HTTPSession
    from chainlit.types import Feedback, Pagination, ThreadFilter
    from chainlit.utils import utc_now

    layer = history_data_layer(settings)
    thread_id = str(uuid.uuid4())
    context_var.set(ChainlitContext(HTTPSession(id="session", thread_id=thread_id, client_type="webapp")))
    try:
        user = await layer.create_user(chainlit.User(identifier="alice", metadata={"role": "labeler"}))
        assert user is not None and user.identifier == "alice" and user.metadata == {"role": "labeler"}
        assert await layer.create_user(chainlit.User(identifier="alice")) is not None  # logging in again

        await layer.update_thread(
            thread_id, name="Label reviews", user_id=user.id, metadata={"project": "reviews"}, tags=["demo"]
        )
        # `send()` stamps a message's time; these are written directly, so they are stamped here.
        question = chainlit.Message(
            content="/status", author="alice", type="user_message", created_at=utc_now()
        )
        question.modes = {"model": "offline"}  # bound as a dict by Chainlit: needs the JSON adapter
        await layer.create_step(question.to_dict())
        tool = chainlit.Step(name="status", type="tool", auto_collapse=True, default_open=True, tags=["t"])
        tool.input, tool.output = '{"project": "reviews"}', "3 tasks"
        await layer.create_step(tool.to_dict())
        answer = chainlit.Message(
            content="reviews: 3 tasks", author="labelpilot", parent_id=question.id, created_at=utc_now()
        )
        await layer.create_step(answer.to_dict())
        await layer.upsert_feedback(Feedback(forId=answer.id, value=1, threadId=thread_id, comment="ok"))

        thread = await layer.get_thread(thread_id)
        listed = await layer.list_threads(Pagination(first=10), ThreadFilter(userId=user.id))
        assert await layer.get_thread_author(thread_id) == "alice"
        other = await layer.list_threads(Pagination(first=10), ThreadFilter(userId=str(uuid.uuid4())))
        assert other.data == []
    finally:
        await layer.close()
    assert thread is not None
    assert [t["id"] for t in listed.data] == [thread_id]
    steps = {step["id"]: step for step in thread["steps"]}
    assert [step["id"] for step in thread["steps"]] == [question.id, tool.id, answer.id]  # in order
    assert (thread["name"], thread["userIdentifier"], thread["tags"]) == ("Label reviews", "alice", ["demo"])
    assert thread["metadata"] == {"project": "reviews"}
    assert steps[question.id]["output"] == "/status" and steps[question.id]["type"] == "user_message"
    assert steps[tool.id]["output"] == "3 tasks" and steps[tool.id]["input"] == '{"project": "reviews"}'
    assert steps[tool.id]["tags"] == ["t"]
    assert steps[answer.id]["parentId"] == question.id
    feedback = steps[answer.id]["feedback"]
    assert feedback is not None and (feedback["forId"], feedback["value"], feedback["comment"]) == (
        answer.id,
        1,
        "ok",
    )
    return {"thread": thread, "tool": tool.id, "question": question.id}


def stored_step(url: str, step_id: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text('SELECT "autoCollapse", "defaultOpen", "modes" FROM steps WHERE id = :id'),
                {"id": step_id},
            ).one()
    finally:
        engine.dispose()
    return dict(row._mapping)


async def test_history_on_the_embedded_database(chainlit: Any, settings: Settings) -> None:
    result = await history_roundtrip(chainlit, settings)  # the data layer creates the schema itself
    db = Database.open(settings)
    assert (
        db.current_revision() == head_revision() and set(inspect(db.engine).get_table_names()) >= CHAT_TABLES
    )
    db.dispose()
    tool = stored_step(settings.effective_database_url, result["tool"])
    assert (tool["autoCollapse"], tool["defaultOpen"]) == (1, 1)
    question = stored_step(settings.effective_database_url, result["question"])
    assert json.loads(question["modes"]) == {"model": "offline"}


@pytest.mark.postgres
async def test_history_on_postgres(chainlit: Any, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELPILOT_DATABASE_URL", postgres_url)
    settings = Settings.from_env()
    assert history_conninfo(settings).startswith("postgresql+psycopg://")
    result = await history_roundtrip(chainlit, settings)
    tool = stored_step(postgres_url, result["tool"])
    assert (tool["autoCollapse"], tool["defaultOpen"]) == (True, True)
    assert stored_step(postgres_url, result["question"])["modes"] == {"model": "offline"}  # JSONB


@pytest.fixture
def existing_folder(settings: Settings) -> Settings:
    """A data folder written by labelpilot before the chat tables existed (schema 0004)."""
    from alembic import command

    from tools.storage import _alembic_config

    settings.ensure_home()
    engine = create_engine(settings.effective_database_url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0004")
    engine.dispose()
    return settings


async def test_history_upgrades_an_older_data_folder_with_a_backup(
    chainlit: Any, existing_folder: Settings
) -> None:
    await history_roundtrip(chainlit, existing_folder)
    assert (existing_folder.home / "labelpilot.db.backup-0004").is_file()


# ---------------------------------------------------------------- files of the chat history


async def test_chat_files_are_kept_in_the_data_folder(
    settings: Settings, chainlit: Any, tmp_path: Path
) -> None:
    from ui.web_auth import FILES_ROUTE, MIME_SUFFIX, _storage_class, chat_file_path, chat_files_folder

    folder = chat_files_folder(settings)
    storage = _storage_class()(folder)
    stored = await storage.upload_file("user-1/element-9/report.csv", "a,b\n1,2\n", mime="text/csv")
    assert stored == {
        "object_key": "user-1/element-9/report.csv",
        "url": f"{FILES_ROUTE}/user-1/element-9/report.csv",
    }
    path = folder / "user-1" / "element-9" / "report.csv"
    assert path.read_text(encoding="utf-8") == "a,b\n1,2\n"
    assert path.with_name("report.csv" + MIME_SUFFIX).read_text(encoding="utf-8") == "text/csv"
    await storage.upload_file("user-1/element-9/report.csv", b"new", overwrite=False)
    assert path.read_bytes() == b"a,b\n1,2\n"  # kept: no overwrite
    assert await storage.get_read_url("u/x y") == f"{FILES_ROUTE}/u/x%20y"
    assert await storage.delete_file("user-1/element-9/report.csv") is True
    assert not path.exists() and await storage.delete_file("user-1/element-9/report.csv") is False
    for bad in ("", "../x", "u/../../etc/passwd", "/abs", "u//x", "u\\x"):
        with pytest.raises(ConfigError):
            chat_file_path(folder, bad)
    with pytest.raises(ConfigError):
        await storage.upload_file("../outside", b"x")
    assert not (folder.parent / "outside").exists()


async def test_the_data_layer_keeps_elements_with_the_local_storage(
    settings: Settings, chainlit: Any
) -> None:
    from ui.web_auth import chat_files_folder, history_data_layer

    layer = history_data_layer(settings)
    assert layer.storage_provider is not None
    assert layer.storage_provider.folder == chat_files_folder(settings)
