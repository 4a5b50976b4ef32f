"""`labelpilot users add / list / remove`: the logins of the web app, kept in the users file."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tools.errors import ConfigError, ConflictError, NotFoundError
from tools.settings import Settings
from ui.cli_common import JsonOpt, app, cli_errors, emit_json, err, out
from ui.web_auth import (
    USERS_ENV,
    hash_password,
    login_enabled,
    parse_users_env,
    read_users_file,
    users_file,
    validate_user_name,
    write_users_file,
)

users_app = typer.Typer(
    help="Logins of the web app (chat history is kept per user): add, list, remove.", no_args_is_help=True
)
app.add_typer(users_app, name="users")

NameArg = Annotated[str, typer.Argument(help="The login name (letters, digits and . _ @ + -).")]


def _env_users(settings: Settings) -> dict[str, str]:
    return parse_users_env(settings.web_users.get_secret_value()) if settings.web_users else {}


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        # Prompts go to stderr so that --json output stays one JSON document.
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    if not password:
        raise ConfigError("the password is empty", hint="give a non-empty password")
    return str(password)


@users_app.command("add")
def users_add(
    name: NameArg,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Change the password of a user that already exists.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a login to the users file (asks for the password twice); the web app then asks for a login."""
    settings = Settings.from_env()
    with cli_errors(as_json):
        validate_user_name(name)
        path = users_file(settings)
        users = read_users_file(path)
        existed = name in users
        if existed and not replace:
            raise ConflictError(
                f"user '{name}' already exists in {path}",
                hint=f"change the password with `labelpilot users add {name} --replace`",
            )
        users[name] = hash_password(_read_password(password_stdin))
        write_users_file(path, users)
    try:
        shadowed = name in _env_users(settings)
    except ConfigError:  # a malformed variable is reported by `users list` and the app, not here
        shadowed = False
    if shadowed:
        err.print(f"[yellow]Note:[/] {USERS_ENV} also gives '{escape(name)}' a password, and it wins.")
    if as_json:
        emit_json({"name": name, "file": path, "replaced": existed})
        return
    verb = "Changed the password of" if existed else "Added"
    out.print(f"{verb} [bold]{escape(name)}[/] in {escape(str(path))}.")


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """List the logins: those in the users file and those in LABELPILOT_USERS (which win on a clash)."""
    settings = Settings.from_env()
    with cli_errors(as_json):
        path = users_file(settings)
        in_file = read_users_file(path)
        in_env = _env_users(settings)
        enabled = login_enabled(settings)
    users = [
        {"name": name, "source": "env" if name in in_env else "file"} for name in sorted({*in_file, *in_env})
    ]
    result: dict[str, Any] = {
        "file": path,
        "file_exists": path.exists(),
        "login_enabled": enabled,
        "users": users,
    }
    if as_json:
        emit_json(result)
        return
    if not users:
        state = "nobody can log in" if enabled else "the web app has no login"
        out.print(f"No users ({state}). Add one with: labelpilot users add NAME")
        return
    table = Table("user", "from")
    for user in users:
        table.add_row(escape(user["name"]), USERS_ENV if user["source"] == "env" else escape(str(path)))
    out.print(table)


@users_app.command("remove")
def users_remove(name: NameArg, as_json: JsonOpt = False) -> None:
    """Remove a login from the users file."""
    settings = Settings.from_env()
    with cli_errors(as_json):
        path = users_file(settings)
        users = read_users_file(path)
        if name not in users:
            try:
                in_env = name in _env_users(settings)
            except ConfigError:
                in_env = False
            raise NotFoundError(
                f"no user '{name}' in {path}",
                hint=f"'{name}' is set in {USERS_ENV}: remove it there"
                if in_env
                else "see `labelpilot users list`",
            )
        del users[name]
        write_users_file(path, users)
    if as_json:
        emit_json({"name": name, "file": path, "remaining": len(users)})
        return
    out.print(f"Removed [bold]{escape(name)}[/] from {escape(str(path))}.")
    if not users:
        err.print(
            f"[yellow]Note:[/] the file has no users left, so nobody can log in with it; "
            f"delete {escape(str(path))} to turn the login off."
        )
