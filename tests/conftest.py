"""Shared fixtures: every test gets its own data folder and never sees the user's environment."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx

from tools.settings import Settings
from tools.storage import Database

_ISOLATED_ENV = (
    "LABELPILOT_HOME",
    "LABELPILOT_DATABASE_URL",
    "LABELPILOT_CHROMA_URL",
    "LABELPILOT_PROJECT",
    "LABELPILOT_MODEL",
    "LABELPILOT_AGENT_MODEL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "LABELPILOT_USERS",
    "LABELPILOT_USERS_FILE",
    "CHAINLIT_AUTH_SECRET",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point LABELPILOT_HOME at a temporary folder and hide API keys and URLs from every test."""
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "labelpilot-home"
    monkeypatch.setenv("LABELPILOT_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """A respx router for HTTP-level fakes of the OpenAI API; unmatched requests fail."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client that respx intercepts (pass it to the chat model factory)."""
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    """Settings for a fresh temporary data folder."""
    return Settings.from_env()


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """A fresh embedded database in the test's data folder."""
    database = Database.open(settings)
    yield database
    database.dispose()


# ---------------------------------------------------------------- PostgreSQL


def _find_pg_bin(name: str) -> str | None:
    import glob
    import shutil

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL: $LABELPILOT_TEST_POSTGRES_URL, or a throwaway cluster on loopback.

    The throwaway cluster uses the Debian `postgresql` binaries (run as the `postgres` user when the
    tests run as root). Without them the tests skip, unless LABELPILOT_REQUIRE_POSTGRES=1 (CI) makes
    that a failure.
    """
    import os
    import shutil
    import subprocess
    import tempfile

    given = os.environ.get("LABELPILOT_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    initdb, pg_ctl = _find_pg_bin("initdb"), _find_pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("LABELPILOT_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    workdir = tempfile.mkdtemp(prefix="labelpilot-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, user="postgres", group="postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    datadir = os.path.join(workdir, "data")
    port = _free_port()
    subprocess.run(
        [*prefix, initdb, "-D", datadir, "--auth=trust", "-U", "postgres", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", datadir, "-o", options, "-l", os.path.join(workdir, "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", datadir, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"lp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_db(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """A labelpilot Database on a fresh PostgreSQL database, configured through the environment."""
    monkeypatch.setenv("LABELPILOT_DATABASE_URL", postgres_url)
    database = Database.open(Settings.from_env())
    yield database
    database.dispose()
