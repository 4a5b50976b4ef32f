"""`labelpilot prompt create / list / show / diff`: prompt versions from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tools.errors import ConfigError, InputFileError
from tools.storage import Database
from tools.versions import FewShotKind, NewVersion, VersionInfo
from ui.cli_common import (
    JsonOpt,
    ProjectOpt,
    app,
    cli_errors,
    emit_json,
    err,
    jsonable,
    open_db,
    out,
    read_text,
    short,
    split_csv,
)

prompt_app = typer.Typer(
    help="Prompt versions: create (from a parent), list, show, diff.", no_args_is_help=True
)
app.add_typer(prompt_app, name="prompt")

_DESCRIBE_EXAMPLE = "--describe 'Sports=Games, teams and athletes'"
_PARAM_EXAMPLE = "--param temperature=0.2 --param seed=7"


# ---------------------------------------------------------------- create


@prompt_app.command("create")
def prompt_create(
    instructions: Annotated[
        str | None, typer.Option("--instructions", "-i", help="The instructions; {field} names a task field.")
    ] = None,
    instructions_file: Annotated[
        Path | None, typer.Option("--instructions-file", help="Read the instructions from a UTF-8 file.")
    ] = None,
    from_version: Annotated[
        int | None,
        typer.Option("--from", min=1, help="Start from this version's settings; it becomes the parent."),
    ] = None,
    describe: Annotated[
        list[str] | None,
        typer.Option(
            "--describe",
            help="'Label=description' (repeatable); 'Label=' removes a description inherited from the parent.",
        ),
    ] = None,
    descriptions_file: Annotated[
        Path | None,
        typer.Option("--descriptions-file", help='A JSON object {"Label": "description", ...}.'),
    ] = None,
    few_shot: Annotated[
        FewShotKind | None, typer.Option("--few-shot", help="How few-shot examples are chosen.")
    ] = None,
    k: Annotated[
        int | None,
        typer.Option("--k", min=0, max=64, help="How many examples (nearest, mmr, label_diverse)."),
    ] = None,
    examples: Annotated[
        str | None, typer.Option("--examples", help="Example task ids for --few-shot fixed, e.g. t1,t7.")
    ] = None,
    few_shot_max_tokens: Annotated[
        int | None,
        typer.Option("--few-shot-max-tokens", min=1, help="Token budget of the few-shot examples."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name ('' = the configured default).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="Request parameter key=value (repeatable); the value is read as JSON when it parses "
            '(0.2, 7, true, null, ["x"]), else as text.',
        ),
    ] = None,
    reasoning: Annotated[
        bool | None,
        typer.Option("--reasoning/--no-reasoning", help="Ask for brief reasoning before the label."),
    ] = None,
    note: Annotated[str, typer.Option("--note", help="Why this version exists (not a setting).")] = "",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a new prompt version (versions are never changed; a new one records its parent).

    Every setting not given on the command line comes from the parent: the version named by --from, else
    the current version. The first version of a project starts from the defaults. Label descriptions and
    parameters are merged into the parent's. The config is checked against the label schema and the
    tasks' fields before anything is stored; warnings go to stderr.
    """
    from tools.projects import resolve_project_name
    from tools.versions import (
        PromptConfig,
        derive_config,
        derive_few_shot,
        get_version,
        list_versions,
        validate_and_create,
    )

    if instructions is not None and instructions_file is not None:
        raise typer.BadParameter(
            "give the instructions once: --instructions TEXT or --instructions-file PATH",
            param_hint="--instructions / --instructions-file",
        )

    def action(db: Database) -> tuple[NewVersion, list[str]]:
        name = resolve_project_name(db, project)
        if from_version is not None:
            base: VersionInfo | None = get_version(db, name, from_version)
        else:
            base = next((v for v in list_versions(db, name) if v.current), None)
        parent = base or PromptConfig()
        changes: dict[str, Any] = {}
        text = read_text(instructions_file) if instructions_file is not None else instructions
        if text is not None:
            changes["instructions"] = text
        descriptions = {
            **(_read_descriptions(descriptions_file) if descriptions_file is not None else {}),
            **_parse_pairs(describe or [], option="--describe", example=_DESCRIBE_EXAMPLE),
        }
        if descriptions:
            changes["label_descriptions"] = {**parent.label_descriptions, **descriptions}
        changes["few_shot"] = derive_few_shot(
            parent.few_shot,
            kind=few_shot,
            k=k,
            example_ids=split_csv(examples),
            max_tokens=few_shot_max_tokens,
        )
        if model is not None:
            changes["model"] = model.strip()
        params = {
            key: _json_or_text(value)
            for key, value in _parse_pairs(param or [], option="--param", example=_PARAM_EXAMPLE).items()
        }
        if params:
            changes["params"] = {**parent.params, **params}
        if reasoning is not None:
            changes["reasoning"] = reasoning
        config = derive_config(parent, **changes)
        created = validate_and_create(
            db, name, config, parent=base.number if base is not None else None, note=note, adopt=True
        )
        changed = _changed_settings(base, created.version) if base is not None else []
        return created, changed

    with cli_errors(as_json):
        db = open_db()
        try:
            created, changed = action(db)
        finally:
            db.dispose()
    for warning in created.warnings:
        err.print(f"[yellow]Warning:[/] {escape(warning)}")
    if as_json:
        emit_json({**jsonable(created.version), "warnings": created.warnings})
        return
    info = created.version
    parent_text = f" (parent v{info.parent_number})" if info.parent_number is not None else ""
    out.print(f"Created prompt [bold]v{info.number}[/]{parent_text}: {escape(_summary(info))}")
    out.print(Text(f"instructions: {short(info.instructions, 100)}"))
    if info.parent_number is not None:
        out.print(Text(f"changed from v{info.parent_number}: {', '.join(changed) or 'nothing'}"))


def _changed_settings(parent: VersionInfo, child: VersionInfo) -> list[str]:
    from tools.versions import diff_versions

    diff = diff_versions(parent, child)
    return (["instructions"] if diff.instructions_diff else []) + [c.field for c in diff.changes]


def _read_descriptions(path: Path) -> dict[str, str]:
    hint = 'write one JSON object: {"Sports": "Games, teams and athletes", "World": "..."}'
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise InputFileError(f"not valid JSON ({exc.msg})", path=path, line=exc.lineno, hint=hint) from None
    if not isinstance(data, dict):
        raise InputFileError(f"expected a JSON object, found {type(data).__name__}", path=path, hint=hint)
    wrong = [label for label, text in data.items() if not isinstance(text, str)]
    if wrong:
        raise InputFileError("every description must be a string", path=path, field=wrong[0], hint=hint)
    return data


def _parse_pairs(items: list[str], *, option: str, example: str) -> dict[str, str]:
    """Parse repeated 'key=value' options (split at the first '=')."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} '{item}' is not of the form key=value", hint=f"e.g. {example}")
        pairs[key.strip()] = value
    return pairs


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _summary(info: VersionInfo) -> str:
    from tools.versions import few_shot_summary

    return (
        f"model {info.model or 'default'}, few-shot {few_shot_summary(info.few_shot)}, "
        f"reasoning {'on' if info.reasoning else 'off'}"
        + (f", {len(info.label_descriptions)} label description(s)" if info.label_descriptions else "")
        + (f", params {json.dumps(info.params, ensure_ascii=False)}" if info.params else "")
    )


# ---------------------------------------------------------------- list


@prompt_app.command("list")
def prompt_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List the project's prompt versions, oldest first."""
    from tools.projects import resolve_project_name
    from tools.versions import few_shot_summary, list_versions

    with cli_errors(as_json):
        db = open_db()
        try:
            versions = list_versions(db, resolve_project_name(db, project))
        finally:
            db.dispose()
    if as_json:
        emit_json(versions)
        return
    if not versions:
        out.print("No prompt versions yet. Create one with: labelpilot prompt create --instructions '...'")
        return
    table = Table()
    for column in ("version", "parent", "model", "few-shot", "reasoning", "instructions", "note", "created"):
        table.add_column(column, no_wrap=column not in ("instructions", "note"))
    for info in versions:
        first_line = next(iter(info.instructions.strip().splitlines()), "")
        table.add_row(
            f"v{info.number}" + (" (current)" if info.current else ""),
            f"v{info.parent_number}" if info.parent_number is not None else "-",
            Text(info.model or "default"),
            few_shot_summary(info.few_shot),
            "yes" if info.reasoning else "no",
            Text(short(first_line, 40)),
            Text(short(info.note, 32)),
            info.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


# ---------------------------------------------------------------- show


@prompt_app.command("use")
def prompt_use(
    version: Annotated[int, typer.Argument(min=1, help="The version to adopt.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Adopt a version: label, eval and improve use it by default from now on.

    Versions proposed by `labelpilot improve` or `prompt prefer` are never adopted by themselves.
    """
    from tools.projects import resolve_project_name
    from tools.versions import adopt_version

    with cli_errors(as_json):
        db = open_db()
        try:
            info = adopt_version(db, resolve_project_name(db, project), version)
        finally:
            db.dispose()
    if as_json:
        emit_json(info)
    else:
        out.print(f"v{info.number} is now the current version (label, eval and improve use it by default).")


@prompt_app.command("show")
def prompt_show(
    version: Annotated[
        int | None, typer.Argument(min=1, help="Version number (default: the current one).")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a version: every setting, the instructions, and the messages it sends for the first task."""
    from tools.projects import resolve_project_name
    from tools.versions import get_version, preview_messages

    with cli_errors(as_json):
        db = open_db()
        try:
            name = resolve_project_name(db, project)
            info = get_version(db, name, version)
            preview = preview_messages(db, name, info)
        finally:
            db.dispose()
    if as_json:
        emit_json(
            {
                **jsonable(info),
                "preview": preview.messages,
                "preview_task": preview.task_id,
                "preview_note": preview.note,
            }
        )
        return
    _render_version(info)
    if preview.messages is not None:
        out.print()
        out.print(f"[bold]Preview[/] (task {escape(preview.task_id or '?')}):")
        for message in preview.messages:
            out.print(Panel(Text(message.content), title=message.role, title_align="left"), soft_wrap=False)
    if preview.note:
        out.print(f"[dim]{escape(preview.note)}[/]")


def _render_version(info: VersionInfo) -> None:
    from tools.versions import few_shot_summary

    table = Table(show_header=False, box=None)
    parent = f" (parent v{info.parent_number})" if info.parent_number is not None else ""
    table.add_row("version", f"[bold]v{info.number}[/]{parent}")
    table.add_row("created", info.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    if info.note:
        table.add_row("note", Text(info.note))
    table.add_row("model", Text(info.model or "default (LABELPILOT_MODEL)"))
    table.add_row("params", Text(json.dumps(info.params, ensure_ascii=False) if info.params else "-"))
    table.add_row("few-shot", few_shot_summary(info.few_shot))
    if info.few_shot.example_ids:
        table.add_row("examples", Text(", ".join(info.few_shot.example_ids)))
    table.add_row("reasoning", "yes" if info.reasoning else "no")
    out.print(table)
    out.print(Panel(Text(info.instructions), title="instructions", title_align="left"), soft_wrap=False)
    if info.label_descriptions:
        labels = Table("label", "description", title="label descriptions (others: the schema's)")
        for label, text in info.label_descriptions.items():
            labels.add_row(Text(label), Text(text))
        out.print(labels, soft_wrap=False)


# ---------------------------------------------------------------- diff


@prompt_app.command("diff")
def prompt_diff(
    a: Annotated[int, typer.Argument(min=1, help="The older version number.")],
    b: Annotated[int, typer.Argument(min=1, help="The newer version number.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two versions: a diff of the instructions, then every other changed setting."""
    from tools.projects import resolve_project_name
    from tools.versions import diff_versions, get_version

    with cli_errors(as_json):
        db = open_db()
        try:
            name = resolve_project_name(db, project)
            diff = diff_versions(get_version(db, name, a), get_version(db, name, b))
        finally:
            db.dispose()
    if as_json:
        emit_json(diff)
        return
    if diff.identical:
        out.print(f"v{diff.a} and v{diff.b} are identical")
        return
    for line in diff.instructions_diff:
        out.print(Text(line, style=_diff_style(line)))
    if not diff.instructions_diff:
        out.print("[dim]The instructions are the same.[/]")
    if diff.changes:
        table = Table("setting", f"v{diff.a}", f"v{diff.b}")
        for change in diff.changes:
            table.add_row(
                change.field,
                Text(_setting_text(change.field, change.before), style="red"),
                Text(_setting_text(change.field, change.after), style="green"),
            )
        out.print(table, soft_wrap=False)


def _diff_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("@@"):
        return "cyan"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    return ""


def _setting_text(field: str, value: Any) -> str:
    if value is None:
        return "-"
    if field == "model" and not value:
        return "default"
    if isinstance(value, str):
        return value or "''"
    return json.dumps(value, ensure_ascii=False)
