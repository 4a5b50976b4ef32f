"""Optional password login and persisted chat history for the Chainlit app.

Login is on when users are configured: `LABELPILOT_USERS` (`alice:secret1,bob:secret2`; a password may
contain ':' but not ',') and/or the users file (`LABELPILOT_USERS_FILE`, default `users.toml` in the data
folder, written by `labelpilot users add`), which keeps salted scrypt hashes:

    [users."alice"]
    password = "scrypt$32768$8$1$<salt>$<key>"

The app wires it like this (Chainlit lists threads per user, so history only makes sense with login):

    if login_enabled(settings):
        ensure_auth_secret(settings)                # before Chainlit checks for CHAINLIT_AUTH_SECRET

        @cl.password_auth_callback
        async def login(name: str, password: str) -> cl.User | None:
            # scrypt takes ~0.2 s on purpose: keep it off the event loop.
            ok = await asyncio.to_thread(lambda: check_password(load_users(settings), name, password))
            return cl.User(identifier=name) if ok else None

        @cl.data_layer
        def data_layer() -> BaseDataLayer:
            return history_data_layer(settings)     # creates / upgrades the schema first

Passwords and the auth secret are never logged or put in error messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tools.errors import ConfigError
from tools.settings import Settings
from tools.storage import Database, parse_database_url

if TYPE_CHECKING:
    from chainlit.data.sql_alchemy import SQLAlchemyDataLayer

USERS_ENV = "LABELPILOT_USERS"
USERS_FILE_ENV = "LABELPILOT_USERS_FILE"
AUTH_SECRET_ENV = "CHAINLIT_AUTH_SECRET"
USERS_FILE_NAME = "users.toml"
AUTH_SECRET_FILE = "chainlit-auth-secret"

#: Letters, digits and . _ @ + - (an e-mail address works); no ':' or ',' so LABELPILOT_USERS can hold it.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
NAME_RULE = "1-64 letters, digits and . _ @ + - (starting with a letter or digit)"

_SCHEME = "scrypt"
_SCRYPT_N = 2**15  # 32 MiB and ~0.2 s per check: slow for guessing, fine for a login
_SCRYPT_R = 8
_SCRYPT_P = 1
#: Passwords given in LABELPILOT_USERS are hashed in memory on every `load_users`; the plain text is in
#: the environment anyway, so a cheaper cost only keeps logins quick.
_ENV_SCRYPT_N = 2**12
_SALT_BYTES = 16
_KEY_BYTES = 32
_HASH_FORMAT = "scrypt$N$r$p$SALT$KEY (as written by `labelpilot users add`)"
_USERS_FORMAT_HINT = "write it as LABELPILOT_USERS=alice:secret1,bob:secret2"


# ---------------------------------------------------------------- password hashes


def hash_password(password: str, *, cost: int = _SCRYPT_N) -> str:
    """Return a salted scrypt hash of a password: `scrypt$N$r$p$salt$key` (base64 salt and key)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, n=cost, r=_SCRYPT_R, p=_SCRYPT_P)
    return "$".join((_SCHEME, str(cost), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(key)))


def check_password(users: Mapping[str, str], name: str, password: str) -> bool:
    """Whether `password` is the password of user `name` (constant-time; unknown users cost the same)."""
    stored = users.get(name)
    parsed = _parse_hash(stored) if stored is not None else None
    known = parsed is not None
    if parsed is None:
        # Do the same work for an unknown name so response times do not tell which names exist.
        parsed = _parse_hash(_dummy_hash())
        assert parsed is not None
    n, r, p, salt, key = parsed
    matches = hmac.compare_digest(_scrypt(password, salt, n=n, r=r, p=p), key)
    return known and matches


def _scrypt(password: str, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + 2**20
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES, maxmem=maxmem)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_hash(text: str) -> tuple[int, int, int, bytes, bytes] | None:
    """(n, r, p, salt, key) of a stored hash, or None when it is not one labelpilot can check."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return None
    # Bounds keep a tampered file from making a login take gigabytes of memory or minutes.
    if not (n >= 2**10 and n & (n - 1) == 0 and r >= 1 and 128 * n * r <= 2**28 and 1 <= p <= 4):
        return None
    if len(salt) < 8 or len(key) != _KEY_BYTES:
        return None
    return n, r, p, salt, key


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


# ---------------------------------------------------------------- users


def validate_user_name(name: str) -> str:
    """Return `name` if it can be a login name, else raise a ConfigError saying what is allowed."""
    if not USER_NAME.fullmatch(name):
        raise ConfigError(f"'{name}' cannot be a user name", hint=f"use {NAME_RULE}")
    return name


def users_file(settings: Settings) -> Path:
    """The users file: LABELPILOT_USERS_FILE, else `users.toml` in the data folder."""
    return settings.users_file or settings.home / USERS_FILE_NAME


def login_enabled(settings: Settings) -> bool:
    """Whether the web app asks for a login: LABELPILOT_USERS is set, or there is a users file.

    A users file with no users left still turns login on (nobody can log in): delete it to turn login off.
    """
    env_users = settings.web_users.get_secret_value().strip() if settings.web_users else ""
    return bool(env_users) or settings.users_file is not None or users_file(settings).exists()


def load_users(settings: Settings) -> dict[str, str]:
    """Every login (name → password hash) from the users file and LABELPILOT_USERS (which wins on a clash).

    A LABELPILOT_USERS_FILE that does not exist, or a malformed file or variable, is a ConfigError.
    """
    path = users_file(settings)
    if settings.users_file is not None and not path.exists():
        raise ConfigError(
            f"{USERS_FILE_ENV} points at {path}, which does not exist",
            hint=f"create it with `labelpilot users add NAME`, or unset {USERS_FILE_ENV}",
        )
    users = read_users_file(path)
    if settings.web_users is not None:
        for name, password in parse_users_env(settings.web_users.get_secret_value()).items():
            users[name] = hash_password(password, cost=_ENV_SCRYPT_N)
    return users


def parse_users_env(text: str) -> dict[str, str]:
    """Parse LABELPILOT_USERS (`alice:secret1,bob:secret2`) into name → plain password."""
    users: dict[str, str] = {}
    for number, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        name, colon, password = entry.partition(":")
        name = name.strip()
        where = f"{USERS_ENV}, entry {number}"
        if not colon:
            raise ConfigError(
                f"{where} has no ':' between the name and the password", hint=_USERS_FORMAT_HINT
            )
        if not USER_NAME.fullmatch(name):
            # Only what comes before the first ':' is shown, never the password after it.
            shown = f" '{name}'" if name and len(name) <= 64 else ""
            raise ConfigError(f"{where}: the user name{shown} is not valid", hint=f"use {NAME_RULE}")
        if not password:
            raise ConfigError(f"{where}: user '{name}' has an empty password", hint=_USERS_FORMAT_HINT)
        if name in users:
            raise ConfigError(
                f"{where}: user '{name}' is given twice", hint=f"give each user once; {_USERS_FORMAT_HINT}"
            )
        users[name] = password
    return users


def read_users_file(path: Path) -> dict[str, str]:
    """Read a users file into name → password hash ({} when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise _file_error(path, "is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the users file {path}: {exc.strerror}",
            hint="check its permissions (it should belong to the user running labelpilot, mode 600)",
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _file_error(path, f"is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"users"})
    if unknown:
        raise _file_error(
            path, f"has unknown top-level keys: {', '.join(unknown)} (only [users.NAME] tables)"
        )
    table = data.get("users", {})
    if not isinstance(table, dict):
        raise _file_error(path, "has `users` that is not a table of [users.NAME] sections")
    users: dict[str, str] = {}
    for name, entry in table.items():
        if not USER_NAME.fullmatch(name):
            raise _file_error(path, f"has the invalid user name '{name}' ({NAME_RULE})")
        if not isinstance(entry, dict) or set(entry) != {"password"}:
            raise _file_error(path, f"[users.{name}] must hold exactly one key, password")
        stored = entry["password"]
        if not isinstance(stored, str) or _parse_hash(stored) is None:
            raise _file_error(path, f"[users.{name}] password is not a hash of the form {_HASH_FORMAT}")
        users[name] = stored
    return users


def write_users_file(path: Path, users: Mapping[str, str]) -> None:
    """Write name → password hash to the users file atomically (a temporary file renamed), mode 600."""
    lines = [
        "# labelpilot web app logins: `labelpilot users add NAME` / `labelpilot users remove NAME`.",
        "# Passwords are salted scrypt hashes. Delete this file to turn the login off.",
    ]
    for name in sorted(users):
        validate_user_name(name)
        if _parse_hash(users[name]) is None:
            raise ValueError(f"not a password hash for user {name}")
        lines += ["", f"[users.{_toml_string(name)}]", f"password = {_toml_string(users[name])}"]
    _write_private(path, "\n".join(lines) + "\n")


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _file_error(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        f"the users file {path} {problem}",
        hint="fix the file, or delete it and add the users again with `labelpilot users add NAME`",
    )


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically; the file is readable by its owner only (mode 600)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}", hint="check that its folder exists and is writable"
        ) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:  # mkstemp made it mode 600
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temporary).replace(path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}", hint="check the folder's permissions"
        ) from None


# ---------------------------------------------------------------- Chainlit's session secret


def ensure_auth_secret(settings: Settings) -> None:
    """Make sure CHAINLIT_AUTH_SECRET is set: keep the environment's, else read or create the secret file.

    The file is `chainlit-auth-secret` in the data folder (random, mode 600), so logins survive restarts.
    """
    if os.environ.get(AUTH_SECRET_ENV):
        return
    path = settings.ensure_home() / AUTH_SECRET_FILE
    if not path.exists():
        _create_secret_file(path)
    fix = f"delete it to make a new one (everyone must log in again), or set {AUTH_SECRET_ENV}"
    try:
        secret = path.read_text(encoding="ascii").strip()
    except UnicodeDecodeError:  # the message would quote a byte of the secret
        raise ConfigError(f"the login secret file {path} is not ASCII text", hint=fix) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the login secret file {path}: {exc.strerror}", hint=fix) from None
    if not secret:
        raise ConfigError(f"the login secret file {path} is empty", hint=fix)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    os.environ[AUTH_SECRET_ENV] = secret


def _create_secret_file(path: Path) -> None:
    """Create the secret file unless another process just did (a link never replaces a file)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="ascii") as stream:
            stream.write(secrets.token_urlsafe(48) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        # FileExistsError: another process won the race, and its secret is the one to use.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


# ---------------------------------------------------------------- chat history


def history_conninfo(settings: Settings) -> str:
    """The async SQLAlchemy URL of the project's database (aiosqlite / psycopg 3); it holds any password."""
    url = parse_database_url(settings.effective_database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError(
                "chat history needs a database file, not an in-memory SQLite database",
                hint="unset LABELPILOT_DATABASE_URL to use the file in the data folder",
            )
        url = url.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    else:
        raise ConfigError(
            f"chat history is kept in SQLite or PostgreSQL, not {backend}",
            hint="point LABELPILOT_DATABASE_URL at PostgreSQL, or unset it to use the embedded SQLite file",
        )
    return url.render_as_string(hide_password=False)


def history_data_layer(settings: Settings) -> SQLAlchemyDataLayer:
    """Chainlit's SQLAlchemy data layer on the project's database, its tables created or upgraded first.

    The schema is brought up to date here (migration 0005 makes the tables) because Chainlit writes the user
    at login, before any chat starts. Elements (files, pictures, cards) are kept in `<data folder>/chat-files`
    and served to their owner by the route `add_chat_files_route` adds.
    """
    Database.open(settings).dispose()
    conninfo = history_conninfo(settings)
    # SQLite: wait for a bulk job's write lock like labelpilot's own engine does, instead of failing.
    connect_args = {"timeout": 30} if conninfo.startswith("sqlite") else {}
    storage = _storage_class()(chat_files_folder(settings))
    return _history_layer_class()(conninfo=conninfo, connect_args=connect_args, storage_provider=storage)


# ---------------------------------------------------------------- files of the chat history

#: Where the browser reads the files of past chats (pictures, downloads, cards); login required.
FILES_ROUTE = "/labelpilot/chat-files"


def chat_files_folder(settings: Settings) -> Path:
    """The folder that keeps the files of past chats (`<data folder>/chat-files`)."""
    return settings.home / "chat-files"


def chat_file_path(folder: Path, object_key: str) -> Path:
    """The file of an object key, refusing keys that would leave the folder."""
    parts = object_key.split("/")
    if not object_key or any(part in ("", ".", "..") for part in parts) or "\\" in object_key:
        raise ConfigError(f"not a chat file key: {object_key!r}")
    path = folder.joinpath(*parts)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ConfigError(f"not a chat file key: {object_key!r}")
    return path


@functools.cache
def _storage_class() -> type[Any]:
    """A Chainlit storage client on a local folder, built on first use (importing Chainlit is slow)."""
    from chainlit.data.storage_clients.base import BaseStorageClient

    class LocalFileStorage(BaseStorageClient):
        """Keeps the elements of chats (files, pictures, cards) in a folder; the app serves them at
        FILES_ROUTE to their owner only (the first part of the key is the owner's user id)."""

        def __init__(self, folder: Path) -> None:
            self.folder = folder

        async def upload_file(
            self,
            object_key: str,
            data: bytes | str,
            mime: str = "application/octet-stream",
            overwrite: bool = True,
            content_disposition: str | None = None,
        ) -> dict[str, Any]:
            path = chat_file_path(self.folder, object_key)
            if overwrite or not path.exists():
                content = data.encode("utf-8") if isinstance(data, str) else data
                await asyncio.to_thread(_write_file, path, content, mime)
            return {"object_key": object_key, "url": await self.get_read_url(object_key)}

        async def delete_file(self, object_key: str) -> bool:
            path = chat_file_path(self.folder, object_key)
            existed = path.exists()
            path.unlink(missing_ok=True)
            path.with_name(path.name + MIME_SUFFIX).unlink(missing_ok=True)
            return existed

        async def get_read_url(self, object_key: str) -> str:
            return f"{FILES_ROUTE}/{quote(object_key)}"

        async def close(self) -> None:
            return None

    return LocalFileStorage


#: Next to each chat file, its media type.
MIME_SUFFIX = ".mime"


def _write_file(path: Path, content: bytes, mime: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(content)
    temporary.replace(path)
    path.with_name(path.name + MIME_SUFFIX).write_text(mime, encoding="utf-8")


def add_chat_files_route(settings: Settings) -> None:
    """Serve the files of past chats at FILES_ROUTE/<key> to the logged-in user who owns them."""
    from chainlit.auth import get_current_user
    from chainlit.server import app
    from fastapi import Depends, HTTPException
    from fastapi.responses import FileResponse
    from fastapi.routing import APIRoute

    folder = chat_files_folder(settings)

    async def chat_file(object_key: str, user: Any = Depends(get_current_user)) -> FileResponse:
        owner = object_key.split("/", 1)[0]
        if user is None or str(getattr(user, "id", "")) != owner:
            raise HTTPException(status_code=404, detail="not found")
        try:
            path = chat_file_path(folder, object_key)
        except ConfigError:
            raise HTTPException(status_code=404, detail="not found") from None
        if not path.is_file():
            raise HTTPException(status_code=404, detail="not found")
        mime_file = path.with_name(path.name + MIME_SUFFIX)
        mime = mime_file.read_text(encoding="utf-8") if mime_file.is_file() else "application/octet-stream"
        return FileResponse(path, media_type=mime, filename=path.name)

    route = APIRoute(f"{FILES_ROUTE}/{{object_key:path}}", chat_file, methods=["GET"])
    # Before Chainlit's catch-all route, which would otherwise answer with the web app.
    if not any(getattr(r, "path", None) == route.path for r in app.router.routes):
        app.router.routes.insert(0, route)


#: Columns (and the aliases Chainlit's queries give them) that hold JSON text on SQLite.
_JSON_RESULT_KEYS = frozenset(
    {"metadata", "thread_metadata", "step_metadata", "step_generation", "tags", "thread_tags", "step_tags"}
)


@functools.cache
def _history_layer_class() -> type[SQLAlchemyDataLayer]:
    """The data layer class, built on first use so that importing this module does not import Chainlit."""
    from chainlit.data.sql_alchemy import SQLAlchemyDataLayer

    class HistoryDataLayer(SQLAlchemyDataLayer):
        """SQLAlchemyDataLayer that binds what its drivers cannot, and reads SQLite's JSON text back as data.

        Chainlit binds a message's `modes` as a dict (neither psycopg nor sqlite3 adapts one) and thread tags
        as a list (sqlite3 cannot): its INSERT then fails, is only logged, and the step or thread is lost.
        Such values are bound as JSON text; on SQLite, JSON columns are decoded when read, so threads and
        steps come back the same as from PostgreSQL's JSONB.
        """

        async def execute_sql(
            self, query: str, parameters: dict[str, Any]
        ) -> list[dict[str, Any]] | int | None:
            sqlite = self.engine.dialect.name == "sqlite"
            bound = {key: _bindable(value, sqlite=sqlite) for key, value in parameters.items()}
            result = await super().execute_sql(query, bound)
            if sqlite and isinstance(result, list):
                return [{key: _decoded(key, value) for key, value in row.items()} for row in result]
            return result

    return HistoryDataLayer


def _bindable(value: Any, *, sqlite: bool) -> Any:
    if isinstance(value, dict) or (sqlite and isinstance(value, list)):
        return json.dumps(value)
    return value


def _decoded(key: str, value: Any) -> Any:
    if key not in _JSON_RESULT_KEYS or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
