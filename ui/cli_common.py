"""What every `labelpilot` command shares: the Typer app, consoles, common options, JSON output, errors.

Exit codes: 0 success, 1 failure (a clear message on stderr; with --json also a JSON error object on
stdout), 2 usage error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console

from tools.costs import duration
from tools.errors import LabelpilotError
from tools.settings import Settings
from tools.storage import Database

app = typer.Typer(
    name="labelpilot",
    help="Label text datasets with LLMs, measured against ground truth you trust.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        envvar="LABELPILOT_PROJECT",
        help="Project name (default: the only project, or $LABELPILOT_PROJECT).",
    ),
]

T = TypeVar("T")


# ---------------------------------------------------------------- plumbing


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def emit_json(value: Any) -> None:
    """Print a result as JSON on stdout."""
    sys.stdout.write(json.dumps(jsonable(value), ensure_ascii=False, indent=2, default=str) + "\n")


@contextmanager
def cli_errors(as_json: bool) -> Iterator[None]:
    """Turn labelpilot errors into a message, a JSON error object (with --json) and exit code 1."""
    try:
        yield
    except LabelpilotError as exc:
        if as_json:
            emit_json({"ok": False, **exc.to_dict()})
        err.print(f"[bold red]Error:[/] {exc.message}", markup=True, highlight=False)
        if exc.hint:
            err.print(f"[yellow]Hint:[/] {exc.hint}", markup=True, highlight=False)
        raise typer.Exit(exc.exit_code) from None


def open_db() -> Database:
    """Open the configured database (creating or upgrading it as needed)."""
    return Database.open(Settings.from_env())


def run_command(as_json: bool, action: Callable[[Database], T], render: Callable[[T], None]) -> None:
    """Open the database, run an action, and print its result as JSON or for people."""
    with cli_errors(as_json):
        db = open_db()
        try:
            result = action(db)
        finally:
            db.dispose()
    if as_json:
        emit_json(result)
    else:
        render(result)


def split_csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    return items or None


def short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


async def with_progress(
    show: bool,
    verb: str,
    work: Callable[[Callable[[Any], None], asyncio.Event], Awaitable[T]],
    *,
    cancel_note: str = "",
) -> T:
    """Run `work(progress, cancel)` with a progress bar on stderr; Ctrl-C (or SIGTERM) sets `cancel`.

    `progress` takes a `tools.engine.JobProgress`. A second Ctrl-C gets Python's default behaviour.
    """
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(number: int) -> None:
        if not cancel.is_set():
            cancel.set()
            err.print(
                f"[yellow]Cancelling: finishing the commit...{cancel_note} (Ctrl-C again to quit at once)[/]"
            )
            loop.remove_signal_handler(number)

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)
    columns = (
        TextColumn(f"[bold]{verb}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]}/s"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, disable=not show) as bar:
            task = bar.add_task(verb, total=None, failed=0, rate="-", eta="-")

            def update(progress: Any) -> None:
                bar.update(
                    task,
                    total=progress.total,
                    completed=progress.done + progress.failed,
                    failed=progress.failed,
                    rate=f"{progress.rate_per_s:,.1f}",
                    eta=duration(progress.eta_s),
                )

            return await work(update, cancel)
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)


def read_text(path: Path) -> str:
    """Read a UTF-8 text file given to a command (a clear InputFileError when it cannot be read)."""
    from tools.errors import InputFileError

    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError("file not found", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputFileError(f"not UTF-8 text ({exc.reason})", path=path) from None
    except OSError as exc:
        raise InputFileError(f"cannot read the file: {exc.strerror}", path=path) from None
