"""The `labelpilot` command line: every capability, scriptable, with `--json` output on every command.

Exit codes: 0 success, 1 failure (a clear message on stderr; with --json also a JSON error object on
stdout), 2 usage error.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from tools.errors import LabelpilotError, LabelSpecError, LabelValueError
from tools.exporters import ExportFormat
from tools.importers import ImportFormat
from tools.settings import Settings
from tools.storage import Database
from ui import cli_chat, cli_eval, cli_improve, cli_label, cli_prompt, cli_users
from ui.cli_common import (
    JsonOpt,
    ProjectOpt,
    app,
    cli_errors,
    emit_json,
    err,
    open_db,
    out,
    read_text,
    run_command,
    short,
    split_csv,
)

__all__ = ["app", "cli_chat", "cli_eval", "cli_improve", "cli_label", "cli_prompt", "cli_users", "main"]

project_app = typer.Typer(help="Create, list and inspect projects.", no_args_is_help=True)
schema_app = typer.Typer(help="Set or show a project's label schema.", no_args_is_help=True)
gt_app = typer.Typer(help="Ground truth: sample, label, set, delete and show labels.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema version and upgrades.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(schema_app, name="schema")
app.add_typer(gt_app, name="gt")
app.add_typer(db_app, name="db")

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
                fields=split_csv(fields),
                id_column=id_column,
                label_column=label,
                label_sep=label_sep,
                encoding=encoding,
                sheet=sheet,
                column_names=split_csv(column_names),
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
            return LabelSpec.from_label_config(read_text(config))
        text = classes if classes is not None else read_text(classes_file)  # type: ignore[arg-type]
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
            table.add_row(task.external_id, short(task.data, 100))
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


def _render_splits(summary: Any) -> None:
    if summary.assigned_now:
        out.print(f"Assigned {summary.assigned_now:,} item(s) to splits (seed {summary.seed}).")
    table = Table("split", "items", "95% interval width at 50%", "per label")
    for entry in summary.splits:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(entry.per_label.items()))
        width = f"±{entry.interval_width / 2:.0%}" if entry.interval_width is not None else "-"
        table.add_row(entry.split.value, f"{entry.items:,}", width, short(labels, 70))
    out.print(table)
    for warning in summary.warnings:
        err.print(f"[yellow]warning:[/] {warning}")


@gt_app.command("split")
def gt_split(
    ratios: Annotated[
        str, typer.Option("--ratios", help="train,dev,test shares (normalised), e.g. 0.6,0.2,0.2.")
    ] = "0.6,0.2,0.2",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the assignment (same seed, same splits).")] = 0,
    reset: Annotated[
        bool, typer.Option("--reset", help="Re-assign every item (items may move between splits).")
    ] = False,
    show_only: Annotated[bool, typer.Option("--show", help="Only show the current splits.")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split the ground truth into train / dev / test, stratified by label and seeded.

    Items keep their split once given; run it again after labeling more to assign the new items.
    """
    from tools.errors import ConfigError
    from tools.projects import resolve_project_name
    from tools.splits import assign_splits, split_summary

    def action(db: Database) -> Any:
        name = resolve_project_name(db, project)
        if show_only:
            return split_summary(db, name)
        try:
            parts = [float(p) for p in ratios.split(",")]
        except ValueError:
            raise ConfigError(
                f"--ratios must be three numbers separated by commas, got '{ratios}'",
                hint="for example --ratios 0.6,0.2,0.2",
            ) from None
        return assign_splits(db, name, ratios=parts, seed=seed, reset=reset)

    run_command(as_json, action, _render_splits)


@gt_app.command("suspects")
def gt_suspects_command(
    min_runs: Annotated[
        int, typer.Option("--min-runs", min=1, help="Evaluations that must agree the label is wrong.")
    ] = 2,
    min_confidence: Annotated[
        float, typer.Option("--min-confidence", min=0, max=1, help="Mean confidence they must have.")
    ] = 0.7,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ground-truth sanity check: items several evaluations confidently label otherwise (re-check them)."""
    from evals.evaluate import gt_suspects
    from tools.projects import resolve_project_name

    run_command(
        as_json,
        lambda db: gt_suspects(
            db,
            resolve_project_name(db, project),
            min_runs=min_runs,
            min_confidence=min_confidence,
            limit=limit,
        ),
        cli_eval.render_suspects,
    )


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


_EXPORT_EXTENSIONS = {
    ".csv": ExportFormat.csv,
    ".jsonl": ExportFormat.jsonl,
    ".ndjson": ExportFormat.jsonl,
    ".json": ExportFormat.json,
    ".parquet": ExportFormat.parquet,
}


def _export_format_of(output: Path | None) -> ExportFormat:
    """The export format an output file name implies (csv when it implies none)."""
    if output is None:
        return ExportFormat.csv
    return _EXPORT_EXTENSIONS.get(output.suffix.lower(), ExportFormat.csv)


@app.command("export")
def export_command(
    project: ProjectOpt = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format", "-f", help="Output format (default: from the --output extension, else csv)."
        ),
    ] = None,
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
            fmt=fmt or _export_format_of(output),
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


def main() -> None:
    """Entry point of the `labelpilot` command."""
    app()


if __name__ == "__main__":
    main()
