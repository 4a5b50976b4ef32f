"""The Chainlit chat: explicit commands and buttons over the tools (the conversational agent comes later).

Start it from this folder (Chainlit writes `.chainlit/` and `.files/` into the current directory):

    cd ui && chainlit run app.py --headless --host 127.0.0.1 --port 8000

Handlers only read the session, call a `tools/` function (in a worker thread, so the event loop stays free)
and render its result; labelpilot errors become a short message with their hint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import chainlit as cl

from tools.errors import ConfigError, LabelpilotError, LabelValueError, NotFoundError
from tools.exporters import ExportFormat, export_project
from tools.groundtruth import AnnotationSource, TaskView, coverage, sample_tasks, set_label
from tools.labelspec import LabelSpec
from tools.projects import ProjectSummary, list_projects, project_summary, resolve_project_name
from tools.settings import Settings
from tools.storage import Database

P = ParamSpec("P")
T = TypeVar("T")
#: A command handler, called with the text after the command name.
Handler = Callable[[str], Awaitable[None]]

# User-session keys.
DB_KEY = "labelpilot_db"
SETTINGS_KEY = "labelpilot_settings"
PROJECT_KEY = "labelpilot_project"
CARDS_KEY = "labelpilot_gt_cards"
SKIPPED_KEY = "labelpilot_gt_skipped"

LABEL_ACTION = "gt_label"
SKIP_ACTION = "gt_skip"

DEFAULT_GT_CARDS = 5
MAX_GT_CARDS = 20
MAX_FIELD_CHARS = 3000
MAX_CHOICES_SHOWN = 8


# Not a dataclass: `chainlit run` executes this file without registering it in sys.modules, which
# @dataclass needs to resolve postponed annotations.
class Command(NamedTuple):
    """A chat command: how to type it, what it does, and its handler (called with the text after it)."""

    usage: str
    summary: str
    run: Handler


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, summary: str) -> Callable[[Handler], Handler]:
    """Register a handler for `/name`."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(usage=usage, summary=summary, run=handler)
        return handler

    return register


# ---------------------------------------------------------------- session and plumbing


async def call(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking tools/ function in a worker thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


# Chainlit's session and message methods are untyped; these typed wrappers keep the ignores in one place.


def session_get(key: str) -> Any:
    """Read a value of this chat's user session."""
    return cl.user_session.get(key)  # type: ignore[no-untyped-call]


def session_set(key: str, value: Any) -> None:
    """Store a value in this chat's user session."""
    cl.user_session.set(key, value)  # type: ignore[no-untyped-call]


async def say(content: str, **kwargs: Any) -> cl.Message:
    """Send an assistant message."""
    message = cl.Message(content=content, **kwargs)
    await message.send()  # type: ignore[no-untyped-call]
    return message


def session_db() -> Database:
    """Return this chat's database handle (opened on chat start)."""
    db = session_get(DB_KEY)
    if not isinstance(db, Database):
        raise ConfigError("the database is not open in this chat", hint="reload the page to start a new chat")
    return db


def session_settings() -> Settings:
    """Return the settings this chat was started with."""
    settings = session_get(SETTINGS_KEY)
    return settings if isinstance(settings, Settings) else Settings.from_env()


async def current_project() -> str:
    """Return the project chosen with /use, else the only project."""
    try:
        return await call(resolve_project_name, session_db(), session_get(PROJECT_KEY))
    except NotFoundError as exc:
        raise NotFoundError(exc.message, hint="choose one with /use NAME (see /projects)") from None


def author() -> str:
    """Name recorded on labels given in this chat."""
    user = session_get("user")
    return str(getattr(user, "identifier", "") or "chat")


def reports_errors(handler: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Turn labelpilot errors raised by a handler into a chat message."""

    @wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await handler(*args, **kwargs)
        except LabelpilotError as exc:
            await say(f"**Error:** {exc.message}" + (f"\n\n*Hint:* {exc.hint}" if exc.hint else ""))

    return wrapper


# ---------------------------------------------------------------- rendering


def model_status(settings: Settings) -> str:
    """Say which model is configured, or that the app runs offline and how to configure one."""
    if settings.openai_api_key is None and settings.openai_base_url is None:
        return (
            "**No model is configured: offline mode.** Everything below works without one. To use an LLM, "
            "set `OPENAI_API_KEY` (and `OPENAI_BASE_URL` for Azure or a local/self-hosted OpenAI-compatible "
            "server such as vLLM or Ollama; `LABELPILOT_MODEL` picks the model) and restart the app."
        )
    endpoint = settings.openai_base_url or "OpenAI"
    return f"**Model:** `{settings.label_model}` at {endpoint}."


def schema_text(label_spec: dict[str, Any] | None) -> str:
    """Describe a stored label schema in one line."""
    if label_spec is None:
        return "not set"
    spec = LabelSpec.model_validate(label_spec)
    choices = spec.choices()
    shown = ", ".join(choices[:MAX_CHOICES_SHOWN])
    if len(choices) > MAX_CHOICES_SHOWN:
        shown += f", … (+{len(choices) - MAX_CHOICES_SHOWN})"
    kind = spec.type.value.replace("_", " ")
    return f"{kind}: {shown}" if shown else kind


def projects_table(projects: list[ProjectSummary], current: str | None) -> str:
    """Render projects as a markdown table."""
    if not projects:
        return (
            "No projects yet. Create the demo projects with `labelpilot demo setup`, or import a file with "
            "`labelpilot import FILE --project NAME --create`, then reload this page."
        )
    lines = ["| project | tasks | ground truth | schema |", "|---|---:|---:|---|"]
    for project in projects:
        marker = " ← current" if project.name == current else ""
        lines.append(
            f"| **{project.name}**{marker} | {project.task_count:,} | {project.ground_truth_count:,} "
            f"| {schema_text(project.label_spec)} |"
        )
    return "\n".join(lines)


def commands_text() -> str:
    """List the commands."""
    return "\n".join(f"- `{cmd.usage}`: {cmd.summary}" for cmd in COMMANDS.values())


def task_card(task: TaskView, spec: LabelSpec, project: str) -> str:
    """Render a task for labeling: its id and its input fields."""
    fields = [f for f in spec.input_fields if f in task.data] or list(task.data)
    parts = [f"**{project}** · task `{task.external_id}`"]
    for field in fields:
        value = task.data[field]
        text = value if isinstance(value, str) else repr(value)
        if len(text) > MAX_FIELD_CHARS:
            text = text[:MAX_FIELD_CHARS] + " …"
        parts.append(f"**{field}**\n\n{text}")
    return "\n\n".join(parts)


# ---------------------------------------------------------------- chat lifecycle


@cl.on_chat_start
async def on_chat_start() -> None:
    """Open the database and greet with the projects, the model status and the commands."""
    settings = Settings.from_env()
    session_set(SETTINGS_KEY, settings)
    try:
        db = await call(Database.open, settings)
    except LabelpilotError as exc:
        await say(f"**Cannot open the labelpilot database:** {exc.user_message()}")
        return
    session_set(DB_KEY, db)
    projects = await call(list_projects, db)
    await say(
        "# labelpilot\n"
        "Label text datasets with LLMs, measured against ground truth you trust.\n\n"
        f"{projects_table(projects, None)}\n\n"
        f"{model_status(settings)}\n\n"
        "The conversational assistant is not connected yet; these commands work:\n\n"
        f"{commands_text()}"
    )


@cl.on_chat_end
async def on_chat_end() -> None:
    """Close this chat's database connections."""
    db = session_get(DB_KEY)
    if isinstance(db, Database):
        await call(db.dispose)


@cl.on_message
@reports_errors
async def on_message(message: cl.Message) -> None:
    """Run a /command; anything else gets the list of commands."""
    text = message.content.strip()
    name, _, rest = text.removeprefix("/").partition(" ")
    entry = COMMANDS.get(name.lower()) if text.startswith("/") else None
    if entry is None:
        await say(f"I understand these commands for now:\n\n{commands_text()}")
        return
    await entry.run(rest.strip())


# ---------------------------------------------------------------- commands


@command("help", "/help", "show this list")
async def help_command(_: str) -> None:
    """List the commands."""
    await say(f"{commands_text()}\n\n{model_status(session_settings())}")


@command("projects", "/projects", "list the projects with their tasks, ground truth and schema")
async def projects_command(_: str) -> None:
    """List the projects."""
    projects = await call(list_projects, session_db())
    await say(projects_table(projects, session_get(PROJECT_KEY)))


@command("status", "/status [project]", "a project's size, schema and ground truth per class")
async def status_command(args: str) -> None:
    """Show one project's status and coverage."""
    db = session_db()
    name = args or await current_project()
    summary = await call(project_summary, db, name)
    lines = [
        f"**{summary.name}**" + (f": {summary.description}" if summary.description else ""),
        "",
        f"- tasks: {summary.task_count:,}",
        f"- ground truth: {summary.ground_truth_count:,}",
        f"- schema: {schema_text(summary.label_spec)}",
        f"- prompt versions: {summary.prompt_version_count}, runs: {summary.run_count}",
    ]
    if summary.label_spec is not None:
        cov = await call(coverage, db, summary.name)
        lines += ["", "| label | ground truth |", "|---|---:|"]
        lines += [f"| {item.label} | {item.count:,} |" for item in cov.classes]
        if cov.missing_classes:
            lines += ["", f"No ground truth yet for: {', '.join(cov.missing_classes)}."]
    await say("\n".join(lines))


@command("use", "/use <project>", "work on a project")
async def use_command(args: str) -> None:
    """Choose the current project."""
    if not args:
        raise NotFoundError("say which project to use", hint="e.g. /use support-intents (see /projects)")
    summary = await call(project_summary, session_db(), args)
    session_set(PROJECT_KEY, summary.name)
    await say(
        f"Now working on **{summary.name}** ({summary.task_count:,} tasks, "
        f"{summary.ground_truth_count:,} with ground truth). Label some with `/gt`."
    )


@command("gt", "/gt [n]", f"label the next n tasks without ground truth (default {DEFAULT_GT_CARDS})")
async def gt_command(args: str) -> None:
    """Show unlabeled tasks as cards with one button per label and Skip."""
    if args and not (args.isdigit() and 1 <= int(args) <= MAX_GT_CARDS):
        raise LabelValueError(
            f"'{args}' is not a number of tasks from 1 to {MAX_GT_CARDS}", hint="e.g. /gt 5"
        )
    count = int(args) if args else DEFAULT_GT_CARDS
    db = session_db()
    project = await current_project()
    summary = await call(project_summary, db, project)
    if summary.label_spec is None:
        raise NotFoundError(
            f"project '{project}' has no label schema yet",
            hint="set one with: labelpilot schema set --project NAME --classes 'A, B, C'",
        )
    spec = LabelSpec.model_validate(summary.label_spec)
    choices = spec.choices()
    if not choices:
        raise LabelValueError(
            f"{spec.type.value} labels are typed, not picked from buttons",
            hint=f"label them with: labelpilot gt label --project {project}",
        )
    skipped: set[int] = session_get(SKIPPED_KEY) or set()
    candidates = await call(sample_tasks, db, project, count + len(skipped))
    tasks = [task for task in candidates if task.id not in skipped][:count]
    if not tasks:
        left = " (apart from the ones you skipped)" if skipped else ""
        await say(f"Every task of **{project}** has ground truth{left}.")
        return
    cards: dict[str, cl.Message] = session_get(CARDS_KEY) or {}
    descriptions = {label.name: label.description for label in spec.classes}
    for task in tasks:
        payload = {"project": project, "task": task.id, "external_id": task.external_id}
        actions = [
            cl.Action(
                name=LABEL_ACTION,
                payload={**payload, "value": choice},
                label=choice,
                tooltip=descriptions.get(choice, ""),
            )
            for choice in choices
        ]
        actions.append(
            cl.Action(name=SKIP_ACTION, payload=payload, label="Skip", tooltip="Leave it for later")
        )
        card = await say(task_card(task, spec, project), actions=actions)
        cards[card.id] = card
    session_set(CARDS_KEY, cards)


@command("export", "/export [format]", "download the project: " + ", ".join(f.value for f in ExportFormat))
async def export_command(args: str) -> None:
    """Export the current project and send the file."""
    try:
        fmt = ExportFormat((args or "csv").lower())
    except ValueError:
        raise LabelValueError(
            f"'{args}' is not an export format",
            hint="use one of: " + ", ".join(f.value for f in ExportFormat),
        ) from None
    project = await current_project()
    report = await call(
        export_project, session_db(), project, fmt=fmt, exports_dir=session_settings().exports_dir
    )
    path = Path(report.path)
    await say(
        f"Exported **{report.rows:,}** tasks of **{project}** ({report.with_ground_truth:,} with ground "
        f"truth) as {fmt.value}.",
        elements=[cl.File(name=path.name, path=str(path), display="inline")],
    )


# ---------------------------------------------------------------- ground-truth buttons


async def close_card(message_id: str | None) -> None:
    """Remove the buttons of a labeled or skipped card."""
    cards: dict[str, cl.Message] = session_get(CARDS_KEY) or {}
    card = cards.pop(message_id or "", None)
    if card is not None:
        await card.remove_actions()  # type: ignore[no-untyped-call]


@cl.action_callback(LABEL_ACTION)
@reports_errors
async def on_label(action: cl.Action) -> None:
    """Record the label a button stands for."""
    payload = action.payload
    record = await call(
        set_label,
        session_db(),
        str(payload["project"]),
        f"#{payload['task']}",
        payload["value"],
        author=author(),
        source=AnnotationSource.chat,
    )
    await close_card(action.forId)
    await say(f"Labeled task `{record.task}` as **{record.display}**.")


@cl.action_callback(SKIP_ACTION)
@reports_errors
async def on_skip(action: cl.Action) -> None:
    """Leave a task unlabeled and stop offering it in this chat."""
    skipped: set[int] = session_get(SKIPPED_KEY) or set()
    skipped.add(int(action.payload["task"]))
    session_set(SKIPPED_KEY, skipped)
    await close_card(action.forId)
    await say(f"Skipped task `{action.payload['external_id']}`.")
