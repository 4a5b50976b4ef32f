"""The `labelpilot` command line: every capability, scriptable, with `--json` output on every command.

Exit codes: 0 success, 1 failure (a clear message on stderr; with --json also a JSON error object on
stdout), 2 usage error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from tools.errors import LabelpilotError, LabelSpecError, LabelValueError
from tools.exporters import ExportFormat
from tools.importers import ImportFormat
from tools.settings import Settings
from tools.storage import Database

app = typer.Typer(
    name="labelpilot",
    help="Label text datasets with LLMs, measured against ground truth you trust.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
project_app = typer.Typer(help="Create, list and inspect projects.", no_args_is_help=True)
schema_app = typer.Typer(help="Set or show a project's label schema.", no_args_is_help=True)
gt_app = typer.Typer(help="Ground truth: sample, label, set, delete and show labels.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema version and upgrades.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(schema_app, name="schema")
app.add_typer(gt_app, name="gt")
app.add_typer(db_app, name="db")

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def emit_json(value: Any) -> None:
    """Print a result as JSON on stdout."""
    sys.stdout.write(json.dumps(_jsonable(value), ensure_ascii=False, indent=2, default=str) + "\n")


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


def _split_csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    return items or None


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------- project


def _render_project(summary: Any) -> None:
    from tools.labelspec import LabelSpec

    table = Table(show_header=False, box=None)
    table.add_row("project", f"[bold]{summary.name}[/] (id {summary.id})")
    if summary.description:
        table.add_row("description", summary.description)
    if summary.label_spec:
        spec = LabelSpec.model_validate(summary.label_spec)
        table.add_row("schema", f"{spec.type.value}: {', '.join(spec.choices()) or '-'}")
    else:
        table.add_row("schema", "[yellow]not set[/] (labelpilot schema set --classes 'A, B')")
    table.add_row("tasks", str(summary.task_count))
    table.add_row("ground truth", str(summary.ground_truth_count))
    table.add_row("prompt versions", str(summary.prompt_version_count))
    table.add_row("runs", str(summary.run_count))
    out.print(table)


@project_app.command("create")
def project_create(
    name: Annotated[str, typer.Argument(help="A new project name.")],
    description: Annotated[str, typer.Option(help="What is labeled and why.")] = "",
    classes: Annotated[
        str | None, typer.Option(help="Optional label classes, e.g. 'Sports, World: politics, Business'.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a project."""
    from tools.labelspec import LabelSpec, parse_class_list
    from tools.projects import create_project

    def action(db: Database) -> Any:
        spec = LabelSpec.from_classes(parse_class_list(classes)) if classes else None
        return create_project(db, name, description=description, spec=spec)

    def render(summary: Any) -> None:
        out.print(f"Created project [bold]{summary.name}[/].")
        if not summary.label_spec:
            out.print(
                "Next: labelpilot import FILE --fields COLUMN  and  labelpilot schema set --classes 'A, B'"
            )

    run_command(as_json, action, render)


@project_app.command("list")
def project_list(as_json: JsonOpt = False) -> None:
    """List projects."""
    from tools.projects import list_projects

    def render(projects: list[Any]) -> None:
        if not projects:
            out.print("No projects yet. Create one with: labelpilot project create NAME")
            return
        table = Table("name", "tasks", "ground truth", "schema", "versions", "runs")
        for item in projects:
            schema = item.label_spec["type"] if item.label_spec else "-"
            table.add_row(
                item.name,
                str(item.task_count),
                str(item.ground_truth_count),
                schema,
                str(item.prompt_version_count),
                str(item.run_count),
            )
        out.print(table)

    run_command(as_json, list_projects, render)


@project_app.command("show")
def project_show(
    name: Annotated[str | None, typer.Argument(help="Project name (default: the only one).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a project's sizes, schema and activity."""
    from tools.projects import project_summary, resolve_project_name

    run_command(
        as_json,
        lambda db: project_summary(db, resolve_project_name(db, name or project)),
        _render_project,
    )


@app.command("status")
def status(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Show where data lives, the schema version and the project's state."""
    from tools.groundtruth import coverage
    from tools.projects import list_projects, project_summary, resolve_project_name

    settings = Settings.from_env()

    def action(db: Database) -> dict[str, Any]:
        result: dict[str, Any] = {
            "data_folder": str(settings.home),
            "database": db.display_url,
            "schema_revision": db.current_revision(),
            "model_configured": settings.openai_api_key is not None or settings.openai_base_url is not None,
            "label_model": settings.label_model,
            "projects": [p.name for p in list_projects(db)],
            "project": None,
            "coverage": None,
        }
        if result["projects"]:
            name = resolve_project_name(db, project)
            summary = project_summary(db, name)
            result["project"] = summary
            if summary.label_spec:
                result["coverage"] = coverage(db, name)
        return result

    def render(result: dict[str, Any]) -> None:
        out.print(f"data folder  {result['data_folder']}")
        out.print(f"database     {result['database']} (schema {result['schema_revision']})")
        model = result["label_model"] if result["model_configured"] else "none (offline mode)"
        out.print(f"model        {model}")
        if result["project"] is None:
            out.print("No projects yet. Create one with: labelpilot project create NAME")
            return
        out.print()
        _render_project(result["project"])
        if result["coverage"] is not None:
            _render_coverage(result["coverage"])

    run_command(as_json, action, render)


# ---------------------------------------------------------------- import


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV, TSV, JSON, JSONL, Parquet, XLSX or Label Studio JSON.")],
    project: ProjectOpt = None,
    fields: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated input columns, e.g. article,summary_1 (default: all but id/label)."
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option("--id-column", help="Column with stable task ids (default: 'id' if present)."),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="Column holding ground-truth labels to import.")
    ] = None,
    label_sep: Annotated[
        str | None, typer.Option("--label-sep", help="Separator of several labels in one cell (multi-label).")
    ] = None,
    fmt: Annotated[
        ImportFormat | None, typer.Option("--format", help="Override the format guessed from the name.")
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of CSV/TSV/JSON files.")] = "utf-8",
    sheet: Annotated[str | None, typer.Option(help="Excel sheet name (default: the first).")] = None,
    column_names: Annotated[
        str | None,
        typer.Option("--column-names", help="Comma-separated names for a CSV/TSV/Excel file with no header."),
    ] = None,
    max_field_bytes: Annotated[
        int, typer.Option("--max-field-bytes", min=1, help="Largest allowed cell, in bytes.")
    ] = 1_000_000,
    keep_quotes: Annotated[
        bool,
        typer.Option(
            "--keep-quotes",
            help="Keep a leading ' before =,+,-,@ (by default it is removed, as exports add it).",
        ),
    ] = False,
    create: Annotated[
        bool, typer.Option("--create", help="Create the project if it does not exist.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import tasks (and optional ground truth) from a file; re-importing adds nothing new."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from tools.importers import import_file
    from tools.projects import create_project, list_projects, resolve_project_name

    def action(db: Database) -> Any:
        name = project
        if create and name and name not in {p.name for p in list_projects(db)}:
            create_project(db, name)
        name = resolve_project_name(db, name)
        show_progress = not as_json and err.is_terminal
        with Progress(
            SpinnerColumn(),
            TextColumn("importing {task.fields[rows]} rows"),
            TimeElapsedColumn(),
            console=err,
            disable=not show_progress,
            transient=True,
        ) as bar:
            job = bar.add_task("import", rows=0, total=None)
            return import_file(
                db,
                name,
                file,
                fmt=fmt,
                fields=_split_csv(fields),
                id_column=id_column,
                label_column=label,
                label_sep=label_sep,
                encoding=encoding,
                sheet=sheet,
                column_names=_split_csv(column_names),
                max_field_bytes=max_field_bytes,
                unescape_formulas=not keep_quotes,
                progress=lambda rows: bar.update(job, rows=f"{rows:,}"),
            )

    def render(report: Any) -> None:
        out.print(
            f"Imported {report.path}: {report.rows_read:,} rows read, "
            f"[bold]{report.tasks_added:,} new tasks[/], {report.tasks_unchanged:,} already present, "
            f"{report.duplicates_in_file:,} duplicates in the file, {report.labels_added:,} ground-truth labels"
            + (f", {report.predictions_added:,} predictions" if report.predictions_added else "")
            + f" ({report.seconds:.1f} s)."
        )
        out.print(f"Input fields: {', '.join(report.fields)}")
        if report.schema_created:
            out.print("A label schema was created from the label column (see: labelpilot schema show).")

    run_command(as_json, action, render)


# ---------------------------------------------------------------- schema


class SchemaType(str, Enum):
    """Schema types settable from a class list."""

    single_choice = "single_choice"
    multi_choice = "multi_choice"
    spans = "spans"


def _render_spec(spec: Any) -> None:
    out.print(f"type: [bold]{spec.type.value}[/]")
    if spec.classes:
        table = Table("#", "label", "description")
        for index, item in enumerate(spec.classes, start=1):
            table.add_row(str(index), item.name, item.description)
        out.print(table)
    elif spec.type.value == "rating":
        out.print(f"rating 1..{spec.max_rating}")
    if spec.input_fields:
        out.print(f"input fields: {', '.join(spec.input_fields)}")


@schema_app.command("set")
def schema_set(
    project: ProjectOpt = None,
    classes: Annotated[
        str | None,
        typer.Option(help="Classes, e.g. 'Sports, World: international politics, Business'."),
    ] = None,
    classes_file: Annotated[
        Path | None, typer.Option("--classes-file", help="A file with one 'Name: description' per line.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A Label Studio labeling config (XML).")
    ] = None,
    schema_type: Annotated[
        SchemaType, typer.Option("--type", help="Schema type for --classes / --classes-file.")
    ] = SchemaType.single_choice,
    span_field: Annotated[
        str | None, typer.Option("--span-field", help="For spans: the input field offsets refer to.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace even if existing labels do not fit the new schema.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set the label schema from classes or a Label Studio config."""
    from tools.labelspec import LabelSpec, TaskType, parse_class_list
    from tools.projects import resolve_project_name, set_label_spec

    def build_spec() -> LabelSpec:
        given = [option for option in (classes, classes_file, config) if option is not None]
        if len(given) != 1:
            raise LabelSpecError(
                "say what the labels are with exactly one of --classes, --classes-file or --config"
            )
        if config is not None:
            return LabelSpec.from_label_config(_read_text(config))
        text = classes if classes is not None else _read_text(classes_file)  # type: ignore[arg-type]
        spec = LabelSpec.from_classes(parse_class_list(text), type=TaskType(schema_type.value))
        if span_field:
            spec = spec.model_copy(update={"span_field": span_field})
        return spec

    def action(db: Database) -> Any:
        spec = build_spec()
        summary = set_label_spec(db, resolve_project_name(db, project), spec, force=force)
        return {"project": summary.name, "label_spec": summary.label_spec}

    def render(result: dict[str, Any]) -> None:
        out.print(f"Schema of [bold]{result['project']}[/] set.")
        _render_spec(LabelSpec.model_validate(result["label_spec"]))

    run_command(as_json, action, render)


def _read_text(path: Path) -> str:
    from tools.errors import InputFileError

    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError("file not found", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputFileError(f"not UTF-8 text ({exc.reason})", path=path) from None
    except OSError as exc:
        raise InputFileError(f"cannot read the file: {exc.strerror}", path=path) from None


@schema_app.command("show")
def schema_show(
    project: ProjectOpt = None,
    label_config: Annotated[
        bool, typer.Option("--label-config", help="Print the schema as a Label Studio config.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the label schema (or print it as a Label Studio config)."""
    from tools.projects import get_project, require_spec, resolve_project_name

    def action(db: Database) -> Any:
        with db.session() as session:
            spec = require_spec(get_project(session, resolve_project_name(db, project)))
        if label_config:
            return {"label_config": spec.to_label_config()}
        return {"label_spec": spec, "json_schema": spec.json_schema()}

    def render(result: dict[str, Any]) -> None:
        if "label_config" in result:
            sys.stdout.write(result["label_config"] + "\n")
        else:
            _render_spec(result["label_spec"])

    run_command(as_json, action, render)


# ---------------------------------------------------------------- ground truth


class StrategyChoice(str, Enum):
    """Sampling strategies for ground truth."""

    random = "random"
    stratified = "stratified"
    diverse = "diverse"


SampleN = Annotated[int, typer.Option("-n", "--count", min=1, help="How many tasks.")]
StrategyOpt = Annotated[StrategyChoice, typer.Option(help="random, stratified (by --column) or diverse.")]
ColumnOpt = Annotated[str | None, typer.Option(help="Column to stratify by.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed (same seed, same sample).")]


def _sample(
    db: Database,
    project: str | None,
    n: int,
    strategy: StrategyChoice,
    column: str | None,
    seed: int,
    include_labeled: bool = False,
) -> tuple[str, list[Any]]:
    from tools.groundtruth import SampleStrategy, sample_tasks
    from tools.projects import resolve_project_name

    name = resolve_project_name(db, project)
    tasks = sample_tasks(
        db,
        name,
        n,
        strategy=SampleStrategy(strategy.value),
        column=column,
        seed=seed,
        include_labeled=include_labeled,
    )
    return name, tasks


@gt_app.command("sample")
def gt_sample(
    project: ProjectOpt = None,
    count: SampleN = 20,
    strategy: StrategyOpt = StrategyChoice.random,
    column: ColumnOpt = None,
    seed: SeedOpt = 0,
    include_labeled: Annotated[bool, typer.Option(help="Also consider tasks that have a label.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Choose tasks worth labeling (unlabeled ones first)."""

    def render(tasks: list[Any]) -> None:
        if not tasks:
            out.print("Nothing to sample: every task has a label (or there are no tasks).")
            return
        table = Table("id", "input")
        for task in tasks:
            table.add_row(task.external_id, _short(task.data, 100))
        out.print(table)
        out.print("Label them with: labelpilot gt label  (or labelpilot gt set ID LABEL)")

    run_command(
        as_json,
        lambda db: _sample(db, project, count, strategy, column, seed, include_labeled)[1],
        render,
    )


@gt_app.command("set")
def gt_set(
    task: Annotated[str, typer.Argument(help="Task id (as in exports / gt sample).")],
    value: Annotated[str, typer.Argument(help="The label: a class name or number, '1,3' for several.")],
    project: ProjectOpt = None,
    author: Annotated[str, typer.Option(help="Who gives the label.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Record or change the ground-truth label of one task."""
    from tools.groundtruth import set_label
    from tools.projects import resolve_project_name

    run_command(
        as_json,
        lambda db: set_label(db, resolve_project_name(db, project), task, value, author=author or _user()),
        lambda record: out.print(f"{record.task}: [bold]{record.display}[/]"),
    )


@gt_app.command("delete")
def gt_delete(
    task: Annotated[str, typer.Argument(help="Task id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove the ground-truth label of one task (kept in its history)."""
    from tools.groundtruth import delete_label
    from tools.projects import resolve_project_name

    run_command(
        as_json,
        lambda db: delete_label(db, resolve_project_name(db, project), task, author=_user()),
        lambda record: out.print(f"{record.task}: label deleted"),
    )


def _render_coverage(cov: Any) -> None:
    out.print(f"ground truth: {cov.labeled_count:,} of {cov.task_count:,} tasks")
    table = Table("label", "count")
    for item in cov.classes:
        table.add_row(item.label, str(item.count))
    out.print(table)
    if cov.missing_classes:
        out.print(f"[yellow]No examples yet for:[/] {', '.join(cov.missing_classes)}")


@gt_app.command("show")
def gt_show(
    task: Annotated[str | None, typer.Argument(help="A task id for its history (default: coverage).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show coverage per class, or one task's label history."""
    from tools.groundtruth import coverage, task_history
    from tools.projects import resolve_project_name

    def action(db: Database) -> Any:
        name = resolve_project_name(db, project)
        if task is None:
            return coverage(db, name)
        return task_history(db, name, task)

    def render(result: Any) -> None:
        if isinstance(result, list):
            if not result:
                out.print("This task has no label history.")
            table = Table("when", "label", "author", "source")
            for record in result:
                table.add_row(
                    record.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    record.display,
                    record.author,
                    record.source,
                )
            out.print(table)
        else:
            _render_coverage(result)

    run_command(as_json, action, render)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


@gt_app.command("label")
def gt_label(
    project: ProjectOpt = None,
    count: SampleN = 20,
    strategy: StrategyOpt = StrategyChoice.random,
    column: ColumnOpt = None,
    seed: SeedOpt = 0,
    author: Annotated[str, typer.Option(help="Who gives the labels.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Label tasks interactively in the terminal: numbered choices, s=skip, u=undo, q=quit."""
    from tools.groundtruth import AnnotationSource, LabelingSession
    from tools.projects import get_project, require_spec

    with cli_errors(as_json):
        db = open_db()
        name, tasks = _sample(db, project, count, strategy, column, seed)
        with db.session() as session:
            spec = require_spec(get_project(session, name))
        labeling = LabelingSession(db, name, tasks, author=author or _user(), source=AnnotationSource.human)
        if not tasks:
            err.print("Nothing to label: every task already has a label.")
        choices = spec.choices()
        while not labeling.done:
            task = labeling.current
            assert task is not None
            body = "\n\n".join(f"[bold]{key}[/]\n{value}" for key, value in task.data.items())
            err.print(Panel(body, title=f"{labeling.progress()}  id {task.external_id}", expand=False))
            if choices:
                err.print("  ".join(f"[cyan]{i}[/] {c}" for i, c in enumerate(choices, start=1)))
            err.print("[dim]label (number or name; several: 1,3) · s skip · u undo · q quit[/]")
            err.print("> ", end="")
            line = sys.stdin.readline()
            if not line:
                break
            answer = line.strip()
            if answer.lower() in {"q", "quit", "exit"}:
                break
            if answer.lower() in {"s", "skip", ""}:
                labeling.skip()
                continue
            if answer.lower() in {"u", "undo"}:
                try:
                    undone = labeling.undo()
                    err.print(f"[yellow]Undone:[/] back to {undone.external_id}")
                except LabelpilotError as exc:
                    err.print(f"[yellow]{exc.message}[/]")
                continue
            try:
                record = labeling.label(answer)
                err.print(f"[green]✓[/] {record.display}")
            except LabelValueError as exc:
                err.print(f"[red]{exc.message}[/] — try again")
        summary = {
            "project": name,
            "labeled": labeling.labeled,
            "skipped": labeling.skipped,
            "remaining": len(labeling.tasks) - labeling.position,
        }
        db.dispose()
    if as_json:
        emit_json(summary)
    else:
        out.print(
            f"Labeled {summary['labeled']}, skipped {summary['skipped']}, {summary['remaining']} left in this round."
        )


# ---------------------------------------------------------------- export


@app.command("export")
def export_command(
    project: ProjectOpt = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="Output format.")] = (ExportFormat.csv),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output file (default: DATA_FOLDER/exports/...).")
    ] = None,
    gt_only: Annotated[bool, typer.Option("--gt-only", help="Only tasks with ground truth.")] = False,
    run: Annotated[int | None, typer.Option("--run", help="Predictions of this run id.")] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="Predictions of the newest run of this prompt version.")
    ] = None,
    min_confidence: Annotated[
        float | None, typer.Option("--min-confidence", min=0.0, max=1.0, help="Only predictions this sure.")
    ] = None,
    no_predictions: Annotated[bool, typer.Option("--no-predictions", help="Leave predictions out.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export tasks with ground truth and predictions (CSV, JSONL, JSON, Parquet, Label Studio)."""
    from tools.exporters import export_project
    from tools.projects import resolve_project_name

    settings = Settings.from_env()

    def action(db: Database) -> Any:
        return export_project(
            db,
            resolve_project_name(db, project),
            fmt=fmt,
            output=output,
            ground_truth_only=gt_only,
            run_id=run,
            version=version,
            min_confidence=min_confidence,
            include_predictions=not no_predictions,
            exports_dir=settings.exports_dir,
        )

    run_command(
        as_json,
        action,
        lambda report: out.print(f"Wrote {report.rows:,} rows to [bold]{report.path}[/] ({report.format})."),
    )


# ---------------------------------------------------------------- database


@db_app.command("status")
def db_status(as_json: JsonOpt = False) -> None:
    """Show the database URL and its schema revision (without upgrading)."""
    from tools.storage import head_revision

    settings = Settings.from_env()
    with cli_errors(as_json):
        if settings.database_url is None:
            settings.ensure_home()
        db = Database(settings.effective_database_url)
        current = db.current_revision()
        db.dispose()
    head = head_revision()
    result: dict[str, Any] = {
        "database": db.display_url,
        "revision": current,
        "head": head,
        "up_to_date": current == head,
    }
    if as_json:
        emit_json(result)
    else:
        state = "up to date" if result["up_to_date"] else "needs: labelpilot db upgrade"
        out.print(f"{result['database']}: revision {current or '(empty)'}, newest {result['head']} — {state}")


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Create or upgrade the database schema to the newest revision (SQLite files are backed up first)."""
    settings = Settings.from_env()
    with cli_errors(as_json):
        if settings.database_url is None:
            settings.ensure_home()
        db = Database(settings.effective_database_url)
        before = db.current_revision()
        revision = db.ensure_schema()
        db.dispose()
    result = {"database": db.display_url, "from": before, "to": revision}
    if as_json:
        emit_json(result)
    else:
        out.print(f"{result['database']}: {before or '(empty)'} → {revision}")


# ---------------------------------------------------------------- demo

demo_app = typer.Typer(help="Demo projects to try labelpilot with.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


@demo_app.command("setup")
def demo_setup(as_json: JsonOpt = False) -> None:
    """Create the demo projects (from ../shared/datasets or $LABELPILOT_SHARED_DIR, else bundled samples)."""
    from tools.demo import default_shared_dir, setup_demo

    settings = Settings.from_env()

    def render(projects: list[Any]) -> None:
        for project in projects:
            state = "created" if project.created else "already set up"
            out.print(
                f"[bold]{project.name}[/]: {state}, {project.tasks:,} tasks, "
                f"{project.ground_truth:,} with ground truth (source: {project.source})"
            )

    run_command(as_json, lambda db: setup_demo(db, settings, shared_dir=default_shared_dir()), render)


# ---------------------------------------------------------------- bulk labeling

jobs_app = typer.Typer(help="Bulk labeling jobs: list, show, cancel, resume.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

VersionOpt = Annotated[
    int | None, typer.Option("--version", help="Prompt version number (default: the newest).")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N tasks (by id).")]
GtOnlyOpt = Annotated[bool, typer.Option("--gt-only", help="Only tasks with ground truth.")]
ConcurrencyOpt = Annotated[
    int,
    typer.Option(
        "--concurrency", min=1, max=4096, envvar="LABELPILOT_CONCURRENCY", help="Requests in flight at most."
    ),
]
RpmOpt = Annotated[
    float,
    typer.Option("--rpm", min=1, envvar="LABELPILOT_RPM", help="Requests per minute the endpoint allows."),
]
TpmOpt = Annotated[
    float | None,
    typer.Option("--tpm", min=1, envvar="LABELPILOT_TPM", help="Tokens per minute the endpoint allows."),
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Start without asking (after showing the estimate).")
]


def _labeler_for(
    db: Database,
    settings: Settings,
    project_name: str,
    *,
    version: int | None,
    version_id: int | None = None,
    model: str | None = None,
    concurrency: int = 16,
    rpm: float = 500,
    tpm: float | None = None,
    baseline: bool | None = None,
) -> tuple[Any, list[str]]:
    """Build the labeler a command runs: the LLM one when a model is configured, else the offline baseline.

    `baseline` forces the choice (a resumed job keeps the labeler it started with).
    """
    from tools.errors import ConfigError
    from tools.llm import is_configured
    from tools.projects import get_project, require_spec
    from tools.versions import PromptConfig, create_version, get_version, list_versions

    notes: list[str] = []
    with db.session() as session:
        spec = require_spec(get_project(session, project_name))
    if baseline is None:
        baseline = not is_configured(settings)
    if baseline:
        from tools.baseline import BaselineLabeler

        if not is_configured(settings):
            notes.append("no model is configured: labeling with the offline baseline (embeddings, no LLM)")
        if not BaselineLabeler.supports(spec):
            raise ConfigError(
                "no model configured: set OPENAI_API_KEY or OPENAI_BASE_URL "
                f"(the offline baseline cannot label {spec.type.value} tasks)",
                hint="OPENAI_BASE_URL may point at a local OpenAI-compatible server (vLLM, Ollama, llama.cpp)",
            )
        return BaselineLabeler(db, project_name), notes
    from tools.llm import ModelSettings
    from tools.llm_labeler import LLMLabeler
    from tools.ratelimit import RateLimits

    versions = list_versions(db, project_name)
    if version_id is not None:
        info = next((v for v in versions if v.id == version_id), None)
        if info is None:
            raise ConfigError(f"the prompt version (id {version_id}) of this job no longer exists")
    elif not versions and version is None:
        info = create_version(db, project_name, PromptConfig(), note="created by labelpilot label")
        notes.append(f"the project had no prompt version: created v{info.number} with default instructions")
    else:
        info = get_version(db, project_name, version)
    model_settings = ModelSettings.from_settings(
        settings, model=model or info.model or None, params=info.params
    )
    limits = RateLimits(rpm=rpm, tpm=tpm, max_concurrency=concurrency)
    labeler = LLMLabeler(settings, spec, info, model_settings=model_settings, rate_limits=limits, db=db)
    return labeler, notes


def _job_scope(gt_only: bool, limit: int | None) -> Any:
    from tools.engine import JobScope, ScopeKind

    return JobScope(kind=ScopeKind.ground_truth if gt_only else ScopeKind.all, limit=limit)


def _money(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _render_estimate(estimate: Any, notes: list[str]) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("model", estimate.model)
    table.add_row(
        "tasks",
        f"{estimate.tasks:,} in scope, {estimate.already_done:,} already labeled, "
        f"[bold]{estimate.to_label:,} to label[/]",
    )
    table.add_row(
        "requests",
        f"[bold]{estimate.requests:,}[/] ({estimate.duplicates:,} duplicates sent once, "
        f"{estimate.cached:,} answered from the cache)",
    )
    table.add_row(
        "tokens",
        f"~{estimate.input_tokens:,} input ({estimate.input_tokens_per_request:,.0f} per request), "
        f"{estimate.output_tokens_low_total:,}-{estimate.output_tokens_high_total:,} output",
    )
    if estimate.usd_low is None:
        table.add_row("cost", f"unknown (no price for {estimate.model})")
    else:
        table.add_row(
            "cost",
            f"[bold]{_money(estimate.usd_low)} - {_money(estimate.usd_high)}[/]  (Batch API: "
            f"{_money(estimate.batch_usd_low)} - {_money(estimate.batch_usd_high)})",
        )
    if estimate.rpm:
        table.add_row("time", f"~{_duration(estimate.seconds)} at {estimate.rpm:,.0f} requests/min")
    out.print(table)
    for note in [*notes, *estimate.notes]:
        err.print(f"[dim]note: {note}[/]")


async def _run_with_progress(db: Database, project_name: str, labeler: Any, *, show: bool, **job: Any) -> Any:
    """Run a job with a progress bar on stderr; Ctrl-C (or SIGTERM) cancels it cleanly."""
    import asyncio
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tools.engine import JobProgress, run_job

    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(number: int) -> None:
        if not cancel.is_set():
            cancel.set()
            err.print("[yellow]Cancelling: finishing the commit... (Ctrl-C again to quit at once)[/]")
            # A second Ctrl-C gets Python's default behaviour.
            loop.remove_signal_handler(number)

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)
    columns = (
        TextColumn("[bold]labeling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]}/s"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, disable=not show) as bar:
            task = bar.add_task("label", total=None, failed=0, rate="-", eta="-")

            def update(progress: JobProgress) -> None:
                bar.update(
                    task,
                    total=progress.total,
                    completed=progress.done + progress.failed,
                    failed=progress.failed,
                    rate=f"{progress.rate_per_s:,.1f}",
                    eta=_duration(progress.eta_s),
                )

            return await run_job(db, project_name, labeler, progress=update, cancel=cancel, **job)
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)


def _label_flow(
    db: Database,
    project_name: str,
    labeler: Any,
    notes: list[str],
    *,
    scope: Any,
    yes: bool,
    as_json: bool,
    rerun_errors: bool = False,
    new_run: bool = False,
    run_id: int | None = None,
) -> int:
    """Estimate, confirm, run and report a job; return the exit code."""
    import asyncio

    from tools.costs import PriceTable, estimate_job
    from tools.engine import RunStatus, job_plan

    plan = job_plan(db, project_name, labeler, scope=scope, run_id=run_id)
    if plan.run_status is RunStatus.finished and not (rerun_errors or new_run or run_id is not None):
        message = (
            f"this job already finished as run {plan.run_id}: nothing to do. Retry its errors with "
            f"`labelpilot jobs resume {plan.run_id}`, or label everything again with --new-run"
        )
        if as_json:
            emit_json({"started": False, "run_id": plan.run_id, "status": "finished", "message": message})
        else:
            out.print(message)
        return 0
    prices = getattr(labeler, "prices", None)
    estimate = estimate_job(
        db,
        project_name,
        labeler,
        scope=scope,
        new_run=new_run,
        run_id=run_id,
        prices=prices if isinstance(prices, PriceTable) else None,
    )
    if not yes:
        if as_json:
            emit_json(
                {
                    "started": False,
                    "estimate": estimate,
                    "notes": notes,
                    "message": "pass --yes to start labeling",
                }
            )
            return 0
        _render_estimate(estimate, notes)
        if not typer.confirm("Start labeling?", default=False, err=True):
            err.print("Not started.")
            return 0
    elif not as_json:
        _render_estimate(estimate, notes)
    report = asyncio.run(
        _run_with_progress(
            db,
            project_name,
            labeler,
            show=not as_json and err.is_terminal,
            scope=scope,
            estimate=estimate,
            rerun_errors=rerun_errors,
            new_run=new_run,
            run_id=run_id,
        )
    )
    resume = f"labelpilot jobs resume {report.run_id}"
    if as_json:
        emit_json(
            {
                "started": True,
                "ok": report.status is RunStatus.finished,
                "report": report,
                "estimate": estimate,
                "notes": notes,
                "resume": resume if report.status is not RunStatus.finished or report.errors_total else None,
            }
        )
    else:
        failed = ", ".join(f"{count} {kind}" for kind, count in sorted(report.failed_by_kind.items()))
        out.print(
            f"Run {report.run_id} {report.status.value}: [bold]{report.labeled:,} labeled[/]"
            f" ({report.from_cache:,} from the cache, {report.deduplicated:,} duplicates), "
            f"{report.failed:,} failed{f' ({failed})' if failed else ''} in {_duration(report.duration_s)} "
            f"({report.throughput_per_s:,.1f}/s); cost {_money(report.cost_usd)}"
            + (
                f" (estimated {_money(estimate.usd_low)} - {_money(estimate.usd_high)})."
                if estimate.usd_low is not None
                else "."
            )
        )
        if report.status is RunStatus.cancelled:
            out.print(f"Nothing in flight was kept. Resume with: {resume}  (or run the same command again)")
        elif report.status is RunStatus.failed:
            err.print(f"[bold red]Error:[/] {report.message}")
            out.print(f"Fix the cause, then resume with: {resume}")
        elif report.errors_total:
            out.print(f"{report.errors_total:,} task(s) have errors; retry them with: {resume}")
    if report.status is RunStatus.cancelled:
        return 130
    return 0 if report.status is RunStatus.finished else 1


@app.command("label")
def label_command(
    project: ProjectOpt = None,
    version: VersionOpt = None,
    limit: LimitOpt = None,
    gt_only: GtOnlyOpt = False,
    concurrency: ConcurrencyOpt = 16,
    rpm: RpmOpt = 500,
    tpm: TpmOpt = None,
    yes: YesOpt = False,
    new_run: Annotated[
        bool, typer.Option("--new-run", help="Label everything again in a new run (the old one is kept).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Label the project's tasks in bulk: show the cost estimate, confirm, then run a resumable job.

    Running the same command again resumes the same job (same prompt version, model and tasks) without
    labeling anything twice. Ctrl-C stops cleanly. With --json and without --yes, only the estimate is
    printed (as JSON) and nothing is labeled. Without a configured model the offline baseline labels.
    """
    from tools.projects import resolve_project_name

    settings = Settings.from_env()
    with cli_errors(as_json):
        db = open_db()
        try:
            name = resolve_project_name(db, project)
            labeler, notes = _labeler_for(
                db, settings, name, version=version, concurrency=concurrency, rpm=rpm, tpm=tpm
            )
            code = _label_flow(
                db,
                name,
                labeler,
                notes,
                scope=_job_scope(gt_only, limit),
                yes=yes,
                as_json=as_json,
                new_run=new_run,
            )
        finally:
            db.dispose()
    if code:
        raise typer.Exit(code)


@app.command("estimate")
def estimate_command(
    project: ProjectOpt = None,
    version: VersionOpt = None,
    limit: LimitOpt = None,
    gt_only: GtOnlyOpt = False,
    rpm: RpmOpt = 500,
    as_json: JsonOpt = False,
) -> None:
    """Estimate what labeling would send, cost and take (nothing is sent to any model)."""
    from tools.costs import PriceTable, estimate_job
    from tools.projects import resolve_project_name

    settings = Settings.from_env()
    notes: list[str] = []

    def action(db: Database) -> Any:
        name = resolve_project_name(db, project)
        labeler, found = _labeler_for(db, settings, name, version=version, rpm=rpm)
        notes.extend(found)
        prices = getattr(labeler, "prices", None)
        return estimate_job(
            db,
            name,
            labeler,
            scope=_job_scope(gt_only, limit),
            prices=prices if isinstance(prices, PriceTable) else None,
        )

    run_command(as_json, action, lambda estimate: _render_estimate(estimate, notes))


def _render_job(info: Any) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("job", f"[bold]{info.run_id}[/] ({info.kind}, {info.labeler or '?'} labeler)")
    table.add_row("status", info.status + (" (cancel requested)" if info.cancel_requested else ""))
    table.add_row("model", info.model or "-")
    table.add_row("scope", json.dumps(info.scope))
    total = f"{info.total:,}" if info.total is not None else "?"
    table.add_row("progress", f"{info.done:,} of {total} labeled, {info.failed:,} failed")
    if info.failed_by_kind:
        table.add_row("errors", ", ".join(f"{n} {kind}" for kind, n in sorted(info.failed_by_kind.items())))
    table.add_row("cost", _money(info.cost_usd))
    stats = info.stats
    if stats.get("duration_s") is not None:
        table.add_row("time", f"{_duration(stats['duration_s'])} ({stats.get('throughput_per_s', 0):,.1f}/s)")
    compared = stats.get("estimate_vs_actual")
    if compared:
        low, high = compared["cost_usd"][0]
        table.add_row(
            "estimate vs actual",
            f"requests {compared['requests'][0]:,} / {compared['requests'][1]:,}; "
            f"input tokens {compared['input_tokens'][0]:,} / {compared['input_tokens'][1]:,}; "
            f"cost {_money(low)}-{_money(high)} / {_money(compared['cost_usd'][1])}",
        )
    table.add_row("created", info.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    if info.finished_at:
        table.add_row("finished", info.finished_at.strftime("%Y-%m-%d %H:%M:%S"))
    if stats.get("message"):
        table.add_row("message", str(stats["message"]))
    out.print(table)


@jobs_app.command("list")
def jobs_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List the project's labeling jobs, newest first."""
    from tools.engine import list_jobs
    from tools.projects import resolve_project_name

    def render(jobs: list[Any]) -> None:
        if not jobs:
            out.print("No jobs yet. Start one with: labelpilot label")
            return
        table = Table("id", "kind", "status", "model", "labeled", "failed", "cost", "created")
        for info in jobs:
            total = f"{info.total:,}" if info.total is not None else "?"
            table.add_row(
                str(info.run_id),
                info.kind,
                info.status,
                info.model,
                f"{info.done:,}/{total}",
                f"{info.failed:,}",
                _money(info.cost_usd),
                info.created_at.strftime("%Y-%m-%d %H:%M"),
            )
        out.print(table)

    run_command(as_json, lambda db: list_jobs(db, resolve_project_name(db, project)), render)


JobIdArg = Annotated[int, typer.Argument(help="The job (run) id, as `labelpilot jobs list` shows it.")]


@jobs_app.command("show")
def jobs_show(job: JobIdArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Show one job: progress, errors by kind, cost, and the estimate next to the actual use."""
    from tools.engine import job_status
    from tools.projects import resolve_project_name

    run_command(as_json, lambda db: job_status(db, resolve_project_name(db, project), job), _render_job)


@jobs_app.command("cancel")
def jobs_cancel(job: JobIdArg, as_json: JsonOpt = False) -> None:
    """Stop a job: a running one stops at its next commit (within about a second), from any process."""
    from tools.engine import cancel_job

    def render(info: Any) -> None:
        if info.cancel_requested:
            out.print(f"Job {info.run_id}: cancel requested; it stops at its next commit.")
        else:
            out.print(f"Job {info.run_id}: {info.status}.")
        out.print(f"Resume it later with: labelpilot jobs resume {info.run_id}")

    run_command(as_json, lambda db: cancel_job(db, job), render)


@jobs_app.command("resume")
def jobs_resume(
    job: JobIdArg,
    project: ProjectOpt = None,
    concurrency: ConcurrencyOpt = 16,
    rpm: RpmOpt = 500,
    tpm: TpmOpt = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Continue a job: label what it has not labeled yet and retry its errors (never twice per task)."""
    from tools.engine import job_status, labeler_info_of
    from tools.labelers import LabelerKind
    from tools.projects import resolve_project_name

    settings = Settings.from_env()
    with cli_errors(as_json):
        db = open_db()
        try:
            name = resolve_project_name(db, project)
            info = job_status(db, name, job)
            started_with = labeler_info_of(info)
            labeler, notes = _labeler_for(
                db,
                settings,
                name,
                version=None,
                version_id=info.prompt_version_id,
                model=info.model or None,
                concurrency=concurrency,
                rpm=rpm,
                tpm=tpm,
                baseline=started_with is not None and started_with.kind is LabelerKind.baseline,
            )
            code = _label_flow(db, name, labeler, notes, scope=None, yes=yes, as_json=as_json, run_id=job)
        finally:
            db.dispose()
    if code:
        raise typer.Exit(code)


def main() -> None:
    """Entry point of the `labelpilot` command."""
    app()


if __name__ == "__main__":
    main()
