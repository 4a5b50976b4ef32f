"""The agent's tools: thin adapters over tools/ and evals/, with docstrings written for the model.

Each tool resolves the project (argument, else the conversation's, else the context's, else the only one),
calls one capability, and answers with a short text the model reads (numbers it may quote) plus artifacts
for the UI (files, full tables as CSV, pictures, cards). Failures never reach the person as a traceback:
`tool_error_message` (the ToolNode's error handler) turns a LabelpilotError into what went wrong and what to
do, and anything else into a short apology while the traceback goes to the log.

Tools that spend money or take long (start_labeling, improve_prompt, a paid evaluate) compute their estimate
first and ask for confirmation (`agent.confirm`); nothing before the question writes anything that a
re-run after the answer would duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from langgraph.prebuilt.tool_node import ToolInvocationError
from langgraph.types import Command
from pydantic import BaseModel, Field

from agent.artifacts import (
    Artifact,
    ArtifactKind,
    Artifacts,
    data_artifact,
    dump,
    file_artifact,
    image_artifact,
    table_artifact,
)
from agent.confirm import confirm
from agent.context import AgentContext
from agent.services import drop_empty_project, eval_labeler, labeler_for, newest_label_run, review_queue
from agent.state import AgentState
from tools.costs import duration
from tools.costs import money as format_money
from tools.errors import LabelpilotError, LabelValueError, NotFoundError

logger = logging.getLogger(__name__)

Runtime = ToolRuntime[AgentContext, AgentState]

#: Characters of a task field shown to the model per card (the UI gets the full text in the artifact).
CARD_TEXT_CHARS = 240
#: Items listed in a reply; the full list travels as a table artifact.
LISTED = 5


# ---------------------------------------------------------------------------------------------- helpers


def tool_error_message(error: Exception) -> str:
    """The tool reply for a failure: what went wrong and what to do, never a traceback."""
    if isinstance(error, LabelpilotError):
        text = f"That did not work: {error.message}"
        return text + (f"\nWhat to do: {error.hint}" if error.hint else "")
    if isinstance(error, ToolInvocationError):
        return f"The tool was called with invalid arguments: {error.message}"
    logger.error("tool failed unexpectedly", exc_info=error)
    return (
        f"Something went wrong inside labelpilot ({type(error).__name__}: {error}). "
        "This is a bug, not a problem with your data; the details are in the log. Nothing else was changed."
    )


def _project(runtime: Runtime, requested: str | None = None) -> str:
    """The project a tool acts on: asked for, else the conversation's, else the context's, else the only one."""
    from tools.projects import resolve_project_name

    chosen = requested or runtime.state.get("project") or runtime.context.project
    return resolve_project_name(runtime.context.db, chosen)


def _reply(runtime: Runtime, text: str, artifacts: Artifacts | None = None, **updates: Any) -> Command[Any]:
    """A tool answer that also updates the state (the project, the cards shown, the job)."""
    message = ToolMessage(content=text, artifact=artifacts or [], tool_call_id=runtime.tool_call_id or "")
    return Command(update={"messages": [message], **updates})


def _task_ref(runtime: Runtime, ref: str) -> str:
    """Map "#3" to the third task shown last; other references (task ids) pass through."""
    text = ref.strip()
    shown = runtime.state.get("shown_tasks") or []
    match = re.fullmatch(r"#\s*(\d+)", text)
    if match and shown:
        position = int(match.group(1))
        if not 1 <= position <= len(shown):
            raise LabelValueError(
                f"{text} is not one of the {len(shown)} item(s) shown last",
                hint=f"use #1 to #{len(shown)}, or the task id",
            )
        return shown[position - 1]
    return text


def money(value: float | None) -> str:
    """A cost as the agent says it ($0 when free; see tools.costs.money)."""
    return "$0" if value == 0 else format_money(value)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _short(value: Any, width: int = CARD_TEXT_CHARS) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _task_text(data: dict[str, Any], width: int = CARD_TEXT_CHARS) -> str:
    if len(data) == 1:
        return _short(next(iter(data.values())), width)
    each = max(40, width // max(1, len(data)))
    return " | ".join(f"{key}: {_short(value, each)}" for key, value in data.items())


def _coverage_text(db: Any, name: str) -> str:
    from tools.groundtruth import coverage

    found = coverage(db, name)
    classes = ", ".join(f"{c.label} {c.count}" for c in found.classes[:12])
    more = f", +{len(found.classes) - 12} more" if len(found.classes) > 12 else ""
    text = f"Ground truth: {found.labeled_count:,} of {found.task_count:,} tasks"
    return text + (f" ({classes}{more})" if classes else "") + "."


# ---------------------------------------------------------------------------------------------- projects


@tool(parse_docstring=True)
def project_status(runtime: Runtime, project: str | None = None) -> Command[Any]:
    """Show where things stand: the current project's tasks, ground truth per class, prompt versions,
    newest evaluation and newest labeling job, and which other projects exist.

    Use it first when you do not know the state, and for "status", "where are we", "what's done".

    Args:
        project: a project name to look at (default: the current project).
    """
    from tools.llm import is_configured
    from tools.projects import list_projects, project_summary

    ctx = runtime.context
    projects = [p.name for p in list_projects(ctx.db)]
    model = ctx.settings.label_model if is_configured(ctx.settings) else "none (offline mode)"
    if not projects:
        return _reply(
            runtime,
            f"There is no project yet. Labeling model: {model}. Create a project (create_project) or "
            "import a data file (import_file), which creates one.",
        )
    try:
        name = _project(runtime, project)
    except NotFoundError as exc:
        return _reply(runtime, f"{exc.message}. Projects: {', '.join(projects)}. Labeling model: {model}.")
    summary = project_summary(ctx.db, name)
    lines = [
        f"Project {summary.name}: {summary.task_count:,} tasks, {summary.ground_truth_count:,} with ground "
        f"truth, {summary.prompt_version_count} prompt version(s), {summary.run_count} run(s). "
        f"Labeling model: {model}."
    ]
    if summary.label_spec:
        from tools.labelspec import LabelSpec

        spec = LabelSpec.model_validate(summary.label_spec)
        lines.append(f"Labels ({spec.type.value}): {', '.join(spec.choices()) or '-'}.")
        lines.append(_coverage_text(ctx.db, name))
    else:
        lines.append("No label schema yet: set one with the classes (set_label_schema).")
    lines.extend(_newest_eval_and_job(ctx, name))
    others = [p for p in projects if p != name]
    if others:
        lines.append(f"Other projects: {', '.join(others)}.")
    data = {"project": summary.model_dump(mode="json"), "projects": projects, "model": model}
    return _reply(runtime, "\n".join(lines), dump(data_artifact("status", data)), project=name)


def _newest_eval_and_job(ctx: AgentContext, name: str) -> list[str]:
    from evals.evaluate import run_report
    from tools.engine import list_jobs

    lines: list[str] = []
    try:
        report = run_report(ctx.db, name, "latest")
    except NotFoundError:
        pass
    else:
        metrics = report.metrics
        lines.append(
            f"Newest evaluation: {report.run.name} (run {report.run.run_id}) {metrics.headline} "
            f"{_num(metrics.headline_value)}{_interval(report)} on {report.scored:,} item(s)."
        )
    jobs = [job for job in list_jobs(ctx.db, name) if job.kind == "label"]
    if jobs:
        job = jobs[0]
        total = f"{job.total:,}" if job.total is not None else "?"
        lines.append(
            f"Newest labeling job: {job.run_id} {job.status}, {job.done:,} of {total} labeled, "
            f"{job.failed:,} failed, cost {money(job.cost_usd)}."
        )
    return lines


def _interval(report: Any) -> str:
    interval = report.metrics.interval
    return f" [{_num(interval.low)}-{_num(interval.high)}]" if interval is not None else ""


@tool(parse_docstring=True)
def use_project(runtime: Runtime, name: str) -> Command[Any]:
    """Switch the conversation to another existing project (later tools act on it).

    Args:
        name: the project's name.
    """
    from tools.projects import project_summary

    summary = project_summary(runtime.context.db, name)
    return _reply(
        runtime,
        f"Now working on project {summary.name} ({summary.task_count:,} tasks, "
        f"{summary.ground_truth_count:,} with ground truth).",
        project=summary.name,
        shown_tasks=[],
    )


@tool(parse_docstring=True)
def create_project(
    runtime: Runtime, name: str, classes: str | None = None, description: str = ""
) -> Command[Any]:
    """Create a new project and make it the current one.

    Args:
        name: a new project name (letters, digits, spaces, '.', '_' or '-').
        classes: optional label classes, e.g. "Sports, World: international news, Business" (a class may
            have a description after a colon). Can also be set later with set_label_schema.
        description: what is labeled and why, in the person's words.
    """
    from tools.labelspec import LabelSpec, parse_class_list
    from tools.projects import create_project as create

    spec = LabelSpec.from_classes(parse_class_list(classes)) if classes else None
    summary = create(runtime.context.db, name, description=description, spec=spec)
    nxt = "Next: import the data (import_file)." if spec else "Next: import the data and set the labels."
    return _reply(runtime, f"Created project {summary.name}. {nxt}", project=summary.name, shown_tasks=[])


# ---------------------------------------------------------------------------------------------- import


@tool(parse_docstring=True)
def import_file(
    runtime: Runtime,
    path: str,
    fields: list[str] | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_separator: str | None = None,
    project: str | None = None,
) -> Command[Any]:
    """Import an uploaded data file (CSV, TSV, JSON, JSONL, Parquet, Excel, Label Studio export) as tasks.

    Re-importing the same file adds nothing. A bad file is refused as a whole with the line and field at
    fault. When no project exists (or `project` names a new one) the project is created.

    Args:
        path: the file's path, as given by the upload or the person.
        fields: the columns that are the input to label, e.g. ["text"] or ["article", "summary_1",
            "summary_2"]; default: every column except the id and label columns.
        label_column: a column holding labels a person already gave (they become ground truth).
        id_column: a column with stable task ids; default: a column named "id", else ids from the content.
        label_separator: splits several labels in one cell (e.g. ","), for multi-label data.
        project: the project to import into (default: the current one; created when it does not exist).
    """
    from tools.importers import import_file as run_import
    from tools.projects import create_project as create
    from tools.projects import list_projects, validate_project_name

    ctx = runtime.context
    existing = {p.name for p in list_projects(ctx.db)}
    created = False
    if project and project not in existing:
        name = validate_project_name(project)
        create(ctx.db, name)
        created = True
    elif project:
        name = project
    elif not existing:
        stem = re.sub(r"[^A-Za-z0-9_.\- ]+", "-", Path(path).stem).strip("-. ") or "project"
        name = validate_project_name(stem[:100])
        create(ctx.db, name)
        created = True
    else:
        name = _project(runtime)
    try:
        report = run_import(
            ctx.db,
            name,
            path,
            fields=fields or None,
            label_column=label_column,
            id_column=id_column,
            label_sep=label_separator,
            author=ctx.user,
        )
    except LabelpilotError:
        if created:  # the import wrote nothing: do not leave an empty project behind either
            drop_empty_project(ctx.db, name)
        raise
    text = (
        f"Imported {Path(report.path).name} into {'new ' if created else ''}project {name}: "
        f"{report.rows_read:,} rows read, {report.tasks_added:,} new tasks, {report.tasks_unchanged:,} already "
        f"there, {report.duplicates_in_file:,} duplicate rows. Input fields: {', '.join(report.fields)}."
    )
    if report.labels_added:
        text += f" {report.labels_added:,} labels became ground truth."
    if report.schema_created:
        text += " The label schema was created from the labels found."
    from tools.projects import project_summary

    if not project_summary(ctx.db, name).label_spec:
        text += " Next: say which labels to use (set_label_schema), e.g. /schema positive, negative, neutral."
    return _reply(runtime, text, dump(data_artifact("import", report.model_dump(mode="json"))), project=name)


# ---------------------------------------------------------------------------------------------- schema


@tool(parse_docstring=True)
def set_label_schema(
    runtime: Runtime,
    classes: str | list[str] | None = None,
    label_config: str | None = None,
    schema_type: Literal["single_choice", "multi_choice", "rating", "number", "text", "pairwise", "spans"] = (
        "single_choice"
    ),
    span_field: str | None = None,
    replace_labels: bool = False,
) -> Command[Any]:
    """Set the labels of the current project: from a list of classes or from a Label Studio label config.

    Give exactly one of `classes` or `label_config`.

    Args:
        classes: the classes, as a list (["Sports", "World: international news"]) or one text
            ("Sports, World: international news, Business"); a description may follow a colon.
        label_config: a Label Studio labeling config: the XML itself, or the path of an .xml file.
        schema_type: for classes: single_choice (one label), multi_choice (several), rating, number, text,
            pairwise or spans (entity labels over a text field).
        span_field: for spans: the input field the entities are marked in.
        replace_labels: replace the schema even when existing ground truth does not fit it.
    """
    from tools.errors import LabelSpecError
    from tools.labelspec import LabelClass, LabelSpec, TaskType, parse_class_list
    from tools.projects import set_label_spec

    if (classes is None) == (label_config is None):
        raise LabelSpecError("give either the classes or a Label Studio config (exactly one of them)")
    if label_config is not None:
        config = label_config
        if "<" not in config and config.strip().lower().endswith(".xml"):
            try:
                config = Path(config.strip()).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise LabelSpecError(f"cannot read the label config {label_config}: {exc.strerror}") from None
        spec = LabelSpec.from_label_config(config)
    else:
        text = classes if isinstance(classes, str) else "\n".join(classes or [])
        parsed: list[LabelClass] = parse_class_list(text)
        spec = LabelSpec.from_classes(parsed, type=TaskType(schema_type))
        if span_field:
            spec = spec.model_copy(update={"span_field": span_field})
    name = _project(runtime)
    summary = set_label_spec(runtime.context.db, name, spec, force=replace_labels)
    choices = spec.choices()
    text = f"Labels of {summary.name} set ({spec.type.value})" + (
        f": {', '.join(choices)}." if choices else "."
    )
    return _reply(
        runtime, text, dump(data_artifact("label schema", spec.model_dump(mode="json"))), project=name
    )


# ---------------------------------------------------------------------------------------------- ground truth


@tool(parse_docstring=True)
def sample_tasks(
    runtime: Runtime,
    n: int = 10,
    strategy: Literal["random", "stratified", "diverse"] = "random",
    column: str | None = None,
    include_labeled: bool = False,
) -> Command[Any]:
    """Pick tasks for the person to label (ground truth) and show them as numbered cards #1, #2, ...

    Afterwards "#3 is Sports" means the third card: record answers with record_labels.

    Args:
        n: how many tasks (1-50); 10-20 is a good batch.
        strategy: random; stratified (round-robin over the values of `column`); diverse (spread over the
            meaning of the texts; good first batch).
        column: for stratified: the metadata column to stratify by.
        include_labeled: also show tasks that already have ground truth.
    """
    from tools.groundtruth import SampleStrategy
    from tools.groundtruth import sample_tasks as sample
    from tools.projects import get_project, require_spec

    ctx = runtime.context
    name = _project(runtime)
    with ctx.db.session() as session:
        spec = require_spec(get_project(session, name))
    n = max(1, min(n, 50))
    tasks = sample(
        ctx.db, name, n, strategy=SampleStrategy(strategy), column=column, include_labeled=include_labeled
    )
    if not tasks:
        return _reply(
            runtime, "Every task already has ground truth: there is nothing left to label.", project=name
        )
    choices = spec.choices()
    menu = ", ".join(f"{i} {c}" for i, c in enumerate(choices, 1)) if choices else "free answer"
    lines = [
        f'{len(tasks)} item(s) to label (choices: {menu}). Answer like "#1 {choices[0] if choices else "…"}".'
    ]
    cards = []
    for position, task in enumerate(tasks, 1):
        lines.append(f"#{position} ({task.external_id}): {_task_text(task.data)}")
        cards.append(
            {
                "position": position,
                "task": task.external_id,
                "data": {k: _short(v, 4000) for k, v in task.data.items()},
                "ground_truth": task.ground_truth,
            }
        )
    artifact = Artifact(
        kind=ArtifactKind.cards, title="items to label", data={"choices": choices, "cards": cards}
    )
    return _reply(
        runtime, "\n".join(lines), dump(artifact), project=name, shown_tasks=[t.external_id for t in tasks]
    )


class LabelAssignment(BaseModel):
    """One label a person gave."""

    task: str = Field(description='"#3" for the third card shown last, or a task id')
    label: str = Field(
        description="the label as the person said it: a class name (any case), its number, several "
        "separated by commas for multi-label, a rating number"
    )


@tool(parse_docstring=True)
def record_labels(runtime: Runtime, labels: list[LabelAssignment]) -> Command[Any]:
    """Record labels the person gave as ground truth (e.g. "#1 is Sports, #2 World"). A later label for the
    same task replaces the earlier one (the history is kept).

    Args:
        labels: one entry per task: which task and which label.
    """
    from tools.groundtruth import AnnotationSource, set_label

    ctx = runtime.context
    name = _project(runtime)
    done: list[str] = []
    failed: list[str] = []
    for item in labels:
        try:
            ref = _task_ref(runtime, item.task)
            record = set_label(ctx.db, name, ref, item.label, author=ctx.user, source=AnnotationSource.chat)
        except LabelpilotError as exc:
            failed.append(f"{item.task}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        else:
            done.append(f"{item.task} {record.task} → {record.display}")
    parts = []
    if done:
        parts.append(
            f"Recorded {len(done)} label(s): " + "; ".join(done[:20]) + ("; …" if len(done) > 20 else "")
        )
    if failed:
        parts.append(f"Not recorded ({len(failed)}): " + "; ".join(failed[:10]))
    parts.append(_coverage_text(ctx.db, name))
    return _reply(runtime, "\n".join(parts), project=name)


@tool(parse_docstring=True)
def remove_label(runtime: Runtime, task: str) -> str:
    """Remove the ground-truth label of one task (undo; the history keeps it).

    Args:
        task: "#3" for the third card shown last, or a task id.
    """
    from tools.groundtruth import delete_label

    ctx = runtime.context
    name = _project(runtime)
    record = delete_label(ctx.db, name, _task_ref(runtime, task), author=ctx.user)
    return f"Removed the label of {record.task}. {_coverage_text(ctx.db, name)}"


@tool(parse_docstring=True)
def make_splits(runtime: Runtime, ratios: list[float] | None = None, reset: bool = False) -> str:
    """Split the ground truth into train / dev / test (stratified, seeded) for honest measurements.

    Items keep their split; run it again after labeling more to place the new items.

    Args:
        ratios: train, dev and test shares, e.g. [0.6, 0.2, 0.2] (the default).
        reset: deal every item again from scratch.
    """
    from tools.splits import DEFAULT_RATIOS, assign_splits

    summary = assign_splits(
        runtime.context.db, _project(runtime), ratios=ratios or DEFAULT_RATIOS, reset=reset
    )
    counts = ", ".join(f"{s.split.value} {s.items:,}" for s in summary.splits)
    text = f"Splits: {counts}; {summary.assigned_now:,} item(s) placed now."
    if summary.warnings:
        text += " Warnings: " + "; ".join(summary.warnings[:3])
    return text


# ---------------------------------------------------------------------------------------------- prompt versions


async def _ensure_version(ctx: AgentContext, name: str) -> str | None:
    """Create v1 with default instructions when the project has no version; return a note when it did."""
    from tools.versions import PromptConfig, create_version, list_versions

    if list_versions(ctx.db, name):
        return None
    info = create_version(
        ctx.db, name, PromptConfig(), note="default instructions (created by the chat)", adopt=True
    )
    return f"The project had no prompt version, so v{info.number} was created with default instructions."


@tool(parse_docstring=True)
async def add_preference(runtime: Runtime, text: str, base_version: int | None = None) -> Command[Any]:
    """Turn what the person wants ("I only care about summaries that mention numbers") into a new prompt
    version whose instructions include it. The current version is kept unchanged; nothing is adopted.

    Args:
        text: the preference in the person's own words (quote them, do not paraphrase).
        base_version: the version to start from (default: the newest).
    """
    ctx = runtime.context
    name = _project(runtime)
    note = await _ensure_version(ctx, name)
    try:
        from evals.optimize import preferences_to_instructions
    except ImportError:
        info = _append_preference(ctx, name, text, base_version)
    else:
        info = await preferences_to_instructions(
            ctx.db,
            ctx.settings,
            name,
            text,
            base_version=base_version,
            http_async_client=ctx.http_async_client,
        )
    reply = (
        f"Saved as prompt version v{info.number} (based on v{info.parent_number}). Its instructions now read: "
        f'"{_short(info.instructions, 500)}". Nothing changes until it is used: evaluate v{info.number} or '
        f"label with it."
    )
    if note:
        reply = f"{note} {reply}"
    return _reply(
        runtime, reply, dump(data_artifact(f"v{info.number}", info.model_dump(mode="json"))), project=name
    )


def _append_preference(ctx: AgentContext, name: str, text: str, base_version: int | None) -> Any:
    """Without the optimizer: append the preference verbatim as a new version (braces escaped)."""
    from tools.versions import derive_config, get_version, validate_and_create

    base = get_version(ctx.db, name, base_version)
    literal = text.strip().replace("{", "{{").replace("}", "}}")
    config = derive_config(base, instructions=f"{base.instructions.rstrip()}\n\nPreferences:\n{literal}")
    return validate_and_create(
        ctx.db, name, config, parent=base.number, note=f"preferences: {text.strip()}"
    ).version


@tool(parse_docstring=True)
def create_prompt_version(
    runtime: Runtime,
    instructions: str | None = None,
    label_descriptions: dict[str, str] | None = None,
    few_shot: Literal["none", "fixed", "nearest", "mmr", "label_diverse"] | None = None,
    k: int | None = None,
    model: str | None = None,
    reasoning: bool | None = None,
    base_version: int | None = None,
    note: str = "",
) -> str:
    """Create a new prompt version; settings not given come from the base version (versions never change).

    Args:
        instructions: the instructions; {field} inserts a task field (e.g. {text}).
        label_descriptions: what each label means, {"Sports": "games, athletes, results"}; merged into the
            base's ("" removes one).
        few_shot: how examples are shown: none, fixed, nearest, mmr or label_diverse.
        k: examples per request for nearest / mmr / label_diverse.
        model: the model this version labels with (default: the configured one).
        reasoning: ask the model for a short reasoning before its label.
        base_version: the version to start from (default: the newest).
        note: why this version exists.
    """
    from tools.versions import (
        FewShotKind,
        PromptConfig,
        derive_config,
        derive_few_shot,
        get_version,
        list_versions,
        validate_and_create,
    )

    ctx = runtime.context
    name = _project(runtime)
    base: PromptConfig
    parent: int | None = None
    if list_versions(ctx.db, name):
        info = get_version(ctx.db, name, base_version)
        base, parent = info, info.number
    else:
        base = PromptConfig()
    changes: dict[str, Any] = {}
    if instructions is not None:
        changes["instructions"] = instructions
    if label_descriptions:
        merged = {**base.label_descriptions, **label_descriptions}
        changes["label_descriptions"] = {key: value for key, value in merged.items() if value}
    if few_shot is not None or k is not None:
        changes["few_shot"] = derive_few_shot(
            base.few_shot, kind=FewShotKind(few_shot) if few_shot else None, k=k
        )
    if model is not None:
        changes["model"] = model
    if reasoning is not None:
        changes["reasoning"] = reasoning
    created = validate_and_create(
        ctx.db, name, derive_config(base, **changes), parent=parent, note=note, adopt=True
    )
    version = created.version
    text = f"Created prompt v{version.number}" + (f" (parent v{parent})" if parent else "") + "."
    if created.warnings:
        text += " Warnings: " + "; ".join(created.warnings)
    return text


@tool(response_format="content_and_artifact", parse_docstring=True)
def list_prompt_versions(runtime: Runtime) -> tuple[str, Artifacts]:
    """List the project's prompt versions: number, parent, model, few-shot policy, first line, note."""
    from tools.versions import few_shot_summary, list_versions

    ctx = runtime.context
    versions = list_versions(ctx.db, _project(runtime))
    if not versions:
        return (
            "There is no prompt version yet (one is created when labeling starts, or with a preference).",
            [],
        )
    rows = [
        {
            "version": f"v{v.number}",
            "current": v.current,
            "parent": f"v{v.parent_number}" if v.parent_number else "",
            "model": v.model or "default",
            "few_shot": few_shot_summary(v.few_shot),
            "reasoning": v.reasoning,
            "instructions": v.instructions,
            "note": v.note,
            "created": v.created_at.isoformat(timespec="seconds"),
        }
        for v in versions
    ]
    lines = [f"{len(versions)} prompt version(s), newest first:"]
    for v in reversed(versions[-LISTED:]):
        first = _short(v.instructions.splitlines()[0] if v.instructions else "", 90)
        parent = f", parent v{v.parent_number}" if v.parent_number else ""
        lines.append(
            f"v{v.number}{' (current)' if v.current else ''}{parent}, model {v.model or 'default'}, "
            f"few-shot {few_shot_summary(v.few_shot)}: "
            f'"{first}"' + (f" ({_short(v.note, 80)})" if v.note else "")
        )
    return "\n".join(lines), dump(table_artifact(ctx.artifacts_folder, "versions", rows, "prompt versions"))


@tool(parse_docstring=True)
def adopt_prompt_version(runtime: Runtime, version: int) -> str:
    """Make a prompt version the current one: labeling, evaluating and improving use it from now on.

    Only do this when the user asks to use or adopt a version; proposed versions (from improving or from
    preferences) are never adopted otherwise.

    Args:
        version: the version number to adopt, e.g. 3 for v3.
    """
    from tools.versions import adopt_version

    info = adopt_version(runtime.context.db, _project(runtime), version)
    return f"v{info.number} is now the current prompt version: labeling and evaluation use it by default."


@tool(response_format="content_and_artifact", parse_docstring=True)
def diff_prompt_versions(runtime: Runtime, a: int, b: int) -> tuple[str, Artifacts]:
    """Show what changed between two prompt versions: a diff of the instructions and every other setting.

    Args:
        a: the older version number.
        b: the newer version number.
    """
    from tools.versions import diff_versions, get_version

    ctx = runtime.context
    name = _project(runtime)
    diff = diff_versions(get_version(ctx.db, name, a), get_version(ctx.db, name, b))
    if diff.identical:
        return f"v{a} and v{b} have the same settings.", []
    lines = [f"v{a} → v{b}:"]
    body = diff.instructions_diff
    if body:
        lines.extend(body[:40])
        if len(body) > 40:
            lines.append(f"… {len(body) - 40} more diff line(s) in the attached file")
    for change in diff.changes:
        lines.append(f"{change.field}: {_short(change.before, 80)} → {_short(change.after, 80)}")
    return "\n".join(lines), dump(data_artifact(f"diff v{a} v{b}", diff.model_dump(mode="json")))


# ---------------------------------------------------------------------------------------------- evaluation


def _pictures(ctx: AgentContext, report: Any) -> list[Artifact]:
    """The confusion matrix and per-class F1 pictures of a report (as in `labelpilot eval`)."""
    from evals.pictures import confusion_png, per_class_f1_png

    folder = ctx.settings.home / "reports" / report.project
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{report.project} — {report.run.name} (run {report.run.run_id})"
    found: list[Artifact] = []
    metrics = report.metrics
    if metrics.confusion is not None and metrics.confusion.labels:
        path = confusion_png(
            metrics.confusion, folder / f"run-{report.run.run_id}-confusion.png", title=title
        )
        found.append(image_artifact(path, f"confusion matrix, run {report.run.run_id}"))
    if metrics.per_class:
        path = per_class_f1_png(
            metrics.per_class, folder / f"run-{report.run.run_id}-per-class-f1.png", title=title
        )
        found.append(image_artifact(path, f"F1 per class, run {report.run.run_id}"))
    return found


def _report_text(report: Any) -> str:
    metrics, run, usage = report.metrics, report.run, report.usage
    where = f"the {run.split} split" if run.split else "all ground truth"
    text = (
        f"{run.name} (run {run.run_id}, {run.model or run.kind}) on {where}: {metrics.headline} "
        f"{_num(metrics.headline_value)}{_interval(report)}"
        + (" (95% interval)" if metrics.interval else "")
        + f", {report.scored:,} item(s) scored."
    )
    extra = [
        f"{key.replace('_', ' ')} {_num(metrics.values[key])}"
        for key in ("macro_f1", "kappa", "micro_f1", "mae")
        if key != metrics.headline and metrics.values.get(key) is not None
    ]
    invalid = metrics.values.get("invalid_rate")
    if invalid is not None:
        extra.append(f"invalid outputs {invalid:.1%}")
    if extra:
        text += " " + ", ".join(extra) + "."
    if run.kind == "baseline":
        text += " Offline baseline: no model calls, $0."
    else:
        text += f" {usage.requests:,} request(s) ({usage.from_cache:,} cached), cost {money(usage.cost_usd)}."
    worst = sorted(metrics.per_class, key=lambda c: (c.f1, c.label))[:3]
    if worst and len(metrics.per_class) > 1:
        text += (
            " Weakest classes: "
            + ", ".join(f"{c.label} F1 {_num(c.f1, 2)} (n={c.support})" for c in worst)
            + "."
        )
    ref = report.reference
    if ref is not None:
        text += f" $0 reference: baseline (run {ref.run.run_id}) {ref.headline} {_num(ref.value)}."
    if report.warnings:
        text += " Note: " + " ".join(report.warnings[:2])
    return text


@tool(parse_docstring=True)
async def evaluate(
    runtime: Runtime, version: int | None = None, baseline: bool = False, split: str | None = None
) -> Command[Any]:
    """Measure a prompt version (or the offline baseline) against the ground truth: accuracy with its 95%
    interval, F1, per-class scores, confusion matrix picture, cost. A paid evaluation asks to confirm first.

    Args:
        version: the prompt version number (default: the newest).
        baseline: evaluate the offline baseline (the $0 reference) instead of a prompt.
        split: only the train, dev or test split (see make_splits); default: all ground truth.
    """
    from evals.evaluate import evaluate as run_eval

    ctx = runtime.context
    name = _project(runtime)
    labeler, notes = eval_labeler(
        ctx.db,
        ctx.settings,
        name,
        version=version,
        baseline=baseline,
        split=split,
        rate_limits=ctx.rate_limits,
        http_async_client=ctx.http_async_client,
        model=ctx.labeling_model,
        few_shot_k=ctx.few_shot_k,
    )
    estimate = None
    if getattr(labeler, "prices", None) is not None:
        from evals.evaluate import eval_scope
        from tools.costs import estimate_job
        from tools.engine import RunKind

        estimate = estimate_job(
            ctx.db, name, labeler, scope=eval_scope(ctx.db, name, split), kind=RunKind.eval, new_run=True
        )
        if estimate.requests:
            question = (
                f"Evaluate with {estimate.model} on {estimate.tasks:,} ground-truth item(s): "
                f"{estimate.requests:,} request(s), {_cost_range(estimate)}, about {duration(estimate.seconds)}. "
                "Start?"
            )
            if not confirm("evaluate", question, _estimate_data(estimate)):
                return _reply(runtime, "Not started: nothing was sent to the model.", project=name)
    report = await run_eval(ctx.db, name, labeler, split=split, estimate=estimate)
    text = _report_text(report)
    if notes:
        text += " (" + "; ".join(notes) + ")"
    artifacts = [
        *_pictures(ctx, report),
        data_artifact(f"evaluation run {report.run.run_id}", report.model_dump(mode="json")),
    ]
    if report.metrics.per_class:
        rows = [c.model_dump(mode="json") for c in report.metrics.per_class]
        artifacts.append(
            table_artifact(ctx.artifacts_folder, f"run-{report.run.run_id}-per-class", rows, "per class")
        )
    return _reply(runtime, text, dump(*artifacts), project=name)


@tool(response_format="content_and_artifact", parse_docstring=True)
def compare_runs(runtime: Runtime, run_a: str, run_b: str) -> tuple[str, Artifacts]:
    """Compare two evaluations on their common items: metric deltas, a paired significance test, and the
    items that flipped right → wrong and wrong → right.

    Args:
        run_a: the first run: a run id, "vN" (the newest evaluation of version N), "baseline" or "latest".
        run_b: the second run, same forms.
    """
    from evals.evaluate import compare_runs as compare

    ctx = runtime.context
    result = compare(ctx.db, _project(runtime), run_a, run_b)
    head = result.metrics_a.headline
    delta = result.deltas.get(head)
    test = result.test
    verdict = "significant" if test.p_value < 0.05 else "not significant"
    text = (
        f"{result.a.name} (run {result.a.run_id}) → {result.b.name} (run {result.b.run_id}) on "
        f"{result.common:,} common item(s): {head} {_num(result.metrics_a.values.get(head))} → "
        f"{_num(result.metrics_b.values.get(head))} ({'+' if (delta or 0) >= 0 else ''}{_num(delta)}); "
        f"{test.method.replace('_', ' ')} p = {test.p_value:.3g} ({verdict} at 0.05). Flipped: "
        f"{result.right_to_wrong:,} right → wrong, {result.wrong_to_right:,} wrong → right; "
        f"{result.changed:,} prediction(s) changed."
    )
    rows = [
        {"direction": direction, **item.model_dump(mode="json")}
        for direction, items in (
            ("right_to_wrong", result.right_to_wrong_items),
            ("wrong_to_right", result.wrong_to_right_items),
        )
        for item in items
    ]
    artifacts = [data_artifact("comparison", result.model_dump(mode="json"))]
    if rows:
        artifacts.append(table_artifact(ctx.artifacts_folder, "flipped", rows, "flipped items"))
    return text, dump(*artifacts)


@tool(response_format="content_and_artifact", parse_docstring=True)
def show_errors(
    runtime: Runtime,
    run: str = "latest",
    gold: str | None = None,
    predicted: str | None = None,
    limit: int = 20,
) -> tuple[str, Artifacts]:
    """Show what an evaluation got wrong, most confident mistakes first, and the most frequent confusions.

    Args:
        run: the evaluation: a run id, "vN", "baseline" or "latest" (default).
        gold: only items whose correct label is this.
        predicted: only items predicted as this ("(no answer)": failed predictions).
        limit: items in the attached table at most.
    """
    from evals.evaluate import error_items

    ctx = runtime.context
    page = error_items(ctx.db, _project(runtime), run, gold=gold, predicted=predicted, limit=max(1, limit))
    text = f"{page.run.name} (run {page.run.run_id}): {page.total_wrong:,} wrong item(s)"
    if gold or predicted:
        text += f", {page.matching:,} with gold {gold or 'any'} and prediction {predicted or 'any'}"
    text += "."
    if page.pairs:
        text += (
            " Most frequent confusions (gold → predicted): "
            + ", ".join(f"{g} → {p} ({n})" for g, p, n in page.pairs[:5])
            + "."
        )
    for item in page.items[:LISTED]:
        confidence = f", confidence {item.confidence:.2f}" if item.confidence is not None else ""
        text += (
            f"\n{item.external_id}: gold {_short(item.gold, 40)}, predicted "
            f"{_short(item.predicted, 40) if item.predicted is not None else '(no answer)'}{confidence}: "
            f"{_task_text(item.data, 160)}"
        )
    rows = [item.model_dump(mode="json") for item in page.items]
    artifacts = (
        [table_artifact(ctx.artifacts_folder, f"run-{page.run.run_id}-errors", rows, "wrong items")]
        if rows
        else []
    )
    return text, dump(*artifacts)


@tool(response_format="content_and_artifact", parse_docstring=True)
def suspect_labels(runtime: Runtime, min_runs: int = 2) -> tuple[str, Artifacts]:
    """Find ground-truth labels that several evaluations confidently contradict the same way: likely human
    mistakes worth a second look.

    Args:
        min_runs: how many different labelers (prompt versions, the baseline) must agree against the label.
    """
    from evals.evaluate import gt_suspects

    ctx = runtime.context
    suspects = gt_suspects(ctx.db, _project(runtime), min_runs=max(1, min_runs))
    if not suspects:
        return (
            "No suspicious ground truth: no item is confidently contradicted by several evaluations "
            "(this needs finished evaluations of at least two labelers).",
            [],
        )
    lines = [f"{len(suspects)} label(s) to re-check:"]
    for s in suspects[:LISTED]:
        lines.append(
            f"{s.external_id}: labeled {_short(s.gold, 30)}, {s.runs_agreeing}/{s.runs_total} runs say "
            f"{_short(s.suggested, 30)}: {_short(s.text, 120)}"
        )
    rows = [s.model_dump(mode="json") for s in suspects]
    return "\n".join(lines), dump(
        table_artifact(ctx.artifacts_folder, "suspects", rows, "labels to re-check")
    )


# ---------------------------------------------------------------------------------------------- improve


@tool(parse_docstring=True)
async def improve_prompt(
    runtime: Runtime,
    base_version: int | None = None,
    candidates: int = 4,
    budget_usd: float | None = None,
    max_calls: int | None = None,
) -> Command[Any]:
    """Propose better prompt versions from the current one's mistakes, pick the best on the dev split and
    report it on held-out test items it never saw. Shows the plan and cost and asks to confirm first. The
    winner becomes a new version; nothing is adopted. Without a model, tunes the offline baseline instead.

    Args:
        base_version: the version to improve (default: the newest).
        candidates: how many rewritten instructions to try (0-10).
        budget_usd: stop before spending more than this many dollars.
        max_calls: stop before sending more model calls than this.
    """
    from tools.llm import is_configured

    ctx = runtime.context
    name = _project(runtime)
    if not is_configured(ctx.settings):
        return _reply(runtime, await _tune_baseline(ctx, name), project=name)
    try:
        from evals.optimize import improve, plan_improvement
    except ImportError:
        return _reply(runtime, "Prompt improvement is not available in this installation.", project=name)
    note = await _ensure_version(ctx, name)
    options: dict[str, Any] = {
        "base_version": base_version,
        "candidates": max(0, min(candidates, 10)),
        "budget_usd": budget_usd,
        "max_calls": max_calls,
        "rate_limits": ctx.rate_limits,
    }
    plan = plan_improvement(ctx.db, ctx.settings, name, **options)
    cost = (
        "cost unknown (no price for the model)"
        if plan.usd_low is None
        else f"{money(plan.usd_low)} - {money(plan.usd_high)}"
    )
    question = (
        f"Improve v{plan.base_version}: {plan.candidates_total} candidate(s) (the current one, "
        f"{plan.instruction_candidates} rewrite(s), {plan.few_shot_variants} few-shot variant(s)), chosen on "
        f"{plan.dev_items} dev item(s), reported on {plan.test_items} test item(s): at most "
        f"{plan.total_calls:,} model calls, {cost}. Start?"
    )
    if not confirm("improve", question, plan.model_dump(mode="json")):
        return _reply(runtime, "Not started: nothing was sent to the model.", project=name)

    def progress(event: Any) -> None:
        runtime.stream_writer({"kind": "progress", "action": "improve", "message": event.message})

    report = await improve(
        ctx.db, ctx.settings, name, progress=progress, http_async_client=ctx.http_async_client, **options
    )
    text = _improvement_text(report)
    if note:
        text = f"{note} {text}"
    artifacts = [data_artifact("improvement", report.model_dump(mode="json"))]
    for test_report in report.test_reports.values():
        artifacts.extend(_pictures(ctx, test_report))
    return _reply(runtime, text, dump(*artifacts), project=name)


def _improvement_text(report: Any) -> str:
    parts = []
    if report.new_version is not None:
        parts.append(
            f"New prompt version v{report.new_version} (from v{report.base_version}), winner {report.winner}."
        )
    else:
        parts.append(f"The current v{report.base_version} stayed best: no new version was created.")
    comparison = report.comparison
    if comparison is not None:
        head = comparison.metrics_a.headline
        parts.append(
            f"On {comparison.common:,} held-out test item(s): {comparison.a.name} {head} "
            f"{_num(comparison.metrics_a.values.get(head))} → {comparison.b.name} "
            f"{_num(comparison.metrics_b.values.get(head))} (paired test p = {comparison.test.p_value:.3g})."
        )
    budget = report.budget
    parts.append(f"Used {budget.calls:,} model call(s), {money(budget.usd)}.")
    if budget.stopped_early and budget.reason:
        parts.append(f"Stopped early: {budget.reason}.")
    if report.new_version is not None:
        parts.append(f"Nothing is adopted: label with v{report.new_version} when you want it.")
    return " ".join(parts)


async def _tune_baseline(ctx: AgentContext, name: str) -> str:
    """No model: tune the offline baseline's policy (after a confirmation: it labels dev and test)."""
    try:
        from evals.tune_baseline import tune_baseline
    except ImportError:
        return (
            "Improving a prompt needs a model: set OPENAI_API_KEY (or OPENAI_BASE_URL for a local server). "
            "Tuning the offline baseline is not available in this installation."
        )
    from tools.groundtruth import coverage

    labeled = coverage(ctx.db, name).labeled_count
    question = (
        f"No model is configured, so only the offline baseline can be improved: try its few-shot policies on "
        f"the dev split of the {labeled:,} ground-truth item(s) and report the best on the test split. "
        "$0, no model calls. Start?"
    )
    if not confirm("improve", question, {"cost_usd": 0.0, "calls": 0, "ground_truth": labeled}):
        return "Not started: nothing was changed."
    result = await tune_baseline(ctx.db, name)
    return str(result.message)


# ---------------------------------------------------------------------------------------------- bulk labeling


def _cost_range(estimate: Any) -> str:
    if estimate.usd_low is None:
        return f"cost unknown (no price for {estimate.model})"
    return f"{money(estimate.usd_low)} - {money(estimate.usd_high)}"


def _estimate_data(estimate: Any) -> dict[str, Any]:
    keys = ("model", "tasks", "already_done", "to_label", "duplicates", "cached", "requests", "input_tokens")
    data = {key: getattr(estimate, key) for key in keys}
    data.update(
        usd_low=estimate.usd_low,
        usd_high=estimate.usd_high,
        batch_usd_low=estimate.batch_usd_low,
        batch_usd_high=estimate.batch_usd_high,
        seconds=estimate.seconds,
        notes=list(estimate.notes),
    )
    return data


def _estimate_text(estimate: Any) -> str:
    if estimate.token_count_method == "none":  # a labeler without model calls (the offline baseline)
        return (
            f"{estimate.to_label:,} of {estimate.tasks:,} task(s) to label with {estimate.model} "
            f"({estimate.already_done:,} already labeled): no model calls, $0."
        )
    text = (
        f"{estimate.to_label:,} of {estimate.tasks:,} task(s) to label with {estimate.model} "
        f"({estimate.already_done:,} already labeled): {estimate.requests:,} request(s) "
        f"({estimate.cached:,} answered from the cache, {estimate.duplicates:,} duplicates sent once), "
        f"{_cost_range(estimate)}"
    )
    if estimate.batch_usd_low is not None and estimate.requests:
        text += f" (Batch API: {money(estimate.batch_usd_low)} - {money(estimate.batch_usd_high)})"
    if estimate.seconds is not None:
        text += f", about {duration(estimate.seconds)}"
    return text + "."


def _job_scope(ground_truth_only: bool, limit: int | None) -> Any:
    from tools.engine import JobScope, ScopeKind

    return JobScope(kind=ScopeKind.ground_truth if ground_truth_only else ScopeKind.all, limit=limit)


def _prices(labeler: Any) -> Any:
    from tools.costs import PriceTable

    prices = getattr(labeler, "prices", None)
    return prices if isinstance(prices, PriceTable) else None


@tool(parse_docstring=True)
def estimate_cost(
    runtime: Runtime, version: int | None = None, limit: int | None = None, ground_truth_only: bool = False
) -> str:
    """Estimate what labeling the project would send, cost and take, without sending anything.

    Args:
        version: the prompt version (default: the newest).
        limit: only the first N tasks.
        ground_truth_only: only tasks with ground truth.
    """
    from tools.costs import estimate_job

    ctx = runtime.context
    name = _project(runtime)
    labeler, notes = labeler_for(
        ctx.db,
        ctx.settings,
        name,
        version=version,
        rate_limits=ctx.rate_limits,
        http_async_client=ctx.http_async_client,
        model=ctx.labeling_model,
        few_shot_k=ctx.few_shot_k,
    )
    estimate = estimate_job(
        ctx.db, name, labeler, scope=_job_scope(ground_truth_only, limit), prices=_prices(labeler)
    )
    text = _estimate_text(estimate)
    more = [*notes, *estimate.notes]
    return text + (" Notes: " + "; ".join(more) + "." if more else "")


def _report_line(report: Any, estimate: Any | None = None) -> str:
    from tools.engine import RunStatus

    failed = ", ".join(f"{n} {kind}" for kind, n in sorted(report.failed_by_kind.items()))
    text = (
        f"Job {report.run_id} {report.status.value}: {report.labeled:,} labeled in this session "
        f"({report.from_cache:,} from the cache, {report.deduplicated:,} duplicates), {report.failed:,} failed"
        + (f" ({failed})" if failed else "")
        + f"; {report.done_total:,} of {report.total:,} task(s) labeled in all; "
        f"{duration(report.duration_s)}, cost {money(report.cost_usd)}"
    )
    if estimate is not None and estimate.usd_low is not None and estimate.requests:
        text += f" (estimated {_cost_range(estimate)})"
    text += "."
    if report.status is RunStatus.failed and report.message:
        text += f" Reason: {report.message}. Fix it, then start labeling again to resume."
    elif report.status is RunStatus.cancelled:
        text += " Start labeling again to resume where it stopped."
    elif report.errors_total:
        text += f" {report.errors_total:,} task(s) have errors: start labeling again to retry them."
    return text


@tool(parse_docstring=True)
async def start_labeling(
    runtime: Runtime,
    version: int | None = None,
    limit: int | None = None,
    ground_truth_only: bool = False,
    new_run: bool = False,
) -> Command[Any]:
    """Label the project's tasks in bulk with a prompt version (or the offline baseline without a model).
    Shows the cost and time estimate and asks the person to confirm before anything starts. Running it
    again resumes the same job: nothing is labeled twice.

    Args:
        version: the prompt version (default: the newest).
        limit: only the first N tasks.
        ground_truth_only: only tasks with ground truth.
        new_run: label everything again in a new run (the old one is kept).
    """
    from tools.costs import estimate_job
    from tools.engine import RunStatus, count_scope, job_plan, run_job

    ctx = runtime.context
    name = _project(runtime)
    labeler, notes = labeler_for(
        ctx.db,
        ctx.settings,
        name,
        version=version,
        rate_limits=ctx.rate_limits,
        http_async_client=ctx.http_async_client,
        model=ctx.labeling_model,
        few_shot_k=ctx.few_shot_k,
    )
    scope = _job_scope(ground_truth_only, limit)
    plan = job_plan(ctx.db, name, labeler, scope=scope)
    rerun_errors = False
    if plan.run_id is not None and ctx.jobs.is_running(plan.run_id) and not new_run:
        return _reply(
            runtime,
            f"Job {plan.run_id} is already running in this chat: ask for its status.",
            job_id=plan.run_id,
        )
    if plan.run_status is RunStatus.finished and not new_run:
        if not count_scope(ctx.db, plan).pending:
            return _reply(
                runtime,
                f"Job {plan.run_id} already finished: every task in its scope is labeled. To label everything "
                "again, start a new run.",
                job_id=plan.run_id,
            )
        rerun_errors = True
        notes.append(f"continuing job {plan.run_id} for tasks added since or left with errors")
    estimate = estimate_job(ctx.db, name, labeler, scope=scope, new_run=new_run, prices=_prices(labeler))
    if not estimate.to_label:
        return _reply(runtime, "There is nothing to label in that scope.")
    question = f"{_estimate_text(estimate)} Start?"
    if not confirm("label", question, {**_estimate_data(estimate), "notes": [*notes, *estimate.notes]}):
        return _reply(runtime, "Not started: nothing was labeled.")

    async def work(cancel: asyncio.Event, progress: Any) -> Any:
        def report_progress(event: Any) -> None:
            progress(event)
            runtime.stream_writer({"kind": "progress", "action": "label", **event.model_dump(mode="json")})

        return await run_job(
            ctx.db,
            name,
            labeler,
            scope=scope,
            estimate=estimate,
            rerun_errors=rerun_errors,
            new_run=new_run,
            cancel=cancel,
            progress=report_progress,
        )

    def find_run_id() -> int | None:
        return job_plan(ctx.db, name, labeler, scope=scope).run_id

    report, run_id = await ctx.jobs.start(work, wait_s=ctx.foreground_s, find_run_id=find_run_id)
    if report is not None:
        text = _report_line(report, estimate)
    else:
        text = (
            f"Job {run_id} is running in the background ({estimate.to_label:,} task(s) to label). Ask for its "
            "status any time, or cancel it; progress is saved as it goes."
        )
    if notes:
        text += " Notes: " + "; ".join(notes) + "."
    return _reply(runtime, text, job_id=run_id)


def _job_id(runtime: Runtime, name: str, job_id: int | None) -> int:
    if job_id is not None:
        return job_id
    remembered = runtime.state.get("job_id")
    if remembered is not None:
        return int(remembered)
    from tools.engine import list_jobs

    jobs = [job for job in list_jobs(runtime.context.db, name) if job.kind == "label"]
    if not jobs:
        raise NotFoundError(
            "there is no labeling job yet", hint="start one: start labeling (with a confirmation)"
        )
    return jobs[0].run_id


@tool(parse_docstring=True)
def job_status(runtime: Runtime, job_id: int | None = None) -> str:
    """Watch a bulk labeling job: status, labeled / total, failures, cost.

    Args:
        job_id: the job (default: the one started last in this conversation, else the newest).
    """
    from tools.engine import job_status as read_status

    ctx = runtime.context
    name = _project(runtime)
    run_id = _job_id(runtime, name, job_id)
    info = read_status(ctx.db, name, run_id)
    total = f"{info.total:,}" if info.total is not None else "?"
    text = (
        f"Job {info.run_id} ({info.kind}, {info.model or info.labeler}) is {info.status}"
        + (" (cancel requested)" if info.cancel_requested else "")
        + f": {info.done:,} of {total} labeled, {info.failed:,} failed, cost {money(info.cost_usd)}."
    )
    if info.failed_by_kind:
        text += (
            " Errors: " + ", ".join(f"{n} {kind}" for kind, n in sorted(info.failed_by_kind.items())) + "."
        )
    if ctx.jobs.is_running(info.run_id):
        text += " It runs in this chat."
    return text


@tool(parse_docstring=True)
def cancel_job(runtime: Runtime, job_id: int | None = None) -> str:
    """Stop a bulk labeling job cleanly (what is labeled is kept; starting labeling again resumes it).

    Args:
        job_id: the job (default: the one started last in this conversation, else the newest).
    """
    from tools.engine import cancel_job as request_cancel

    ctx = runtime.context
    name = _project(runtime)
    run_id = _job_id(runtime, name, job_id)
    ctx.jobs.cancel(run_id)
    info = request_cancel(ctx.db, run_id)
    state = "stops at its next save" if info.cancel_requested else info.status
    return f"Job {run_id} {state}: {info.done:,} task(s) labeled are kept. Start labeling again to resume."


# ---------------------------------------------------------------------------------------------- review


@tool(parse_docstring=True)
def show_review_queue(runtime: Runtime, limit: int = 10, max_confidence: float | None = None) -> Command[Any]:
    """Show the predictions of the newest labeling job that most need a person: the least confident first,
    as numbered cards. Then accept them (review_items) or correct them.

    Args:
        limit: how many items to show (1-50).
        max_confidence: only predictions at most this confident (0-1).
    """
    name = _project(runtime)
    items, waiting = review_queue(
        runtime.context.db, name, limit=max(1, min(limit, 50)), max_confidence=max_confidence
    )
    if not items:
        return _reply(
            runtime, "Nothing waits for review: every prediction in scope has been checked.", project=name
        )
    lines = [
        f"{waiting:,} prediction(s) of {items[0].model_version} (job {items[0].run_id}) wait for review; the "
        f"{len(items)} least confident:"
    ]
    cards = []
    for position, item in enumerate(items, 1):
        confidence = f"{item.confidence:.2f}" if item.confidence is not None else "unknown"
        lines.append(
            f"#{position} ({item.task}) predicted {item.display} (confidence {confidence}): {_task_text(item.data)}"
        )
        cards.append({"position": position, **item.model_dump(mode="json")})
    lines.append('Accept with "accept #1 #2", correct with "#3 is <label>".')
    artifact = Artifact(kind=ArtifactKind.cards, title="review", data={"cards": cards})
    return _reply(
        runtime, "\n".join(lines), dump(artifact), project=name, shown_tasks=[i.task for i in items]
    )


class ReviewDecision(BaseModel):
    """A person's decision on one predicted item."""

    task: str = Field(description='"#2" for the second card shown last, or a task id')
    label: str | None = Field(
        default=None, description="the correct label when the prediction is wrong; leave empty to accept it"
    )


@tool(parse_docstring=True)
def review_items(runtime: Runtime, decisions: list[ReviewDecision]) -> str:
    """Accept or correct reviewed predictions. Both become ground truth (and so examples for few-shot
    prompts and the offline baseline).

    Args:
        decisions: one per item: which task, and the correct label if the prediction was wrong.
    """
    from tools.groundtruth import AnnotationSource, set_label

    ctx = runtime.context
    name = _project(runtime)
    newest = newest_label_run(ctx.db, name)
    accepted: list[str] = []
    corrected: list[str] = []
    failed: list[str] = []
    for decision in decisions:
        try:
            ref = _task_ref(runtime, decision.task)
            if decision.label:
                record = set_label(
                    ctx.db, name, ref, decision.label, author=ctx.user, source=AnnotationSource.review
                )
                corrected.append(f"{record.task} → {record.display}")
            else:
                if newest is None:
                    raise NotFoundError(
                        "there is no prediction to accept", hint="give the correct label instead"
                    )
                value = _prediction(ctx, name, newest[0], ref)
                record = set_label(
                    ctx.db, name, ref, value, author=ctx.user, source=AnnotationSource.review, parse=False
                )
                accepted.append(f"{record.task} ({record.display})")
        except LabelpilotError as exc:
            failed.append(f"{decision.task}: {exc.message}")
    parts = []
    if accepted:
        parts.append(f"Accepted {len(accepted)}: " + ", ".join(accepted[:15]) + ".")
    if corrected:
        parts.append(f"Corrected {len(corrected)}: " + ", ".join(corrected[:15]) + ".")
    if failed:
        parts.append("Not recorded: " + "; ".join(failed[:10]) + ".")
    parts.append(_coverage_text(ctx.db, name))
    return " ".join(parts)


def _prediction(ctx: AgentContext, name: str, run_id: int, ref: str) -> Any:
    from sqlalchemy import select

    from tools.groundtruth import find_task
    from tools.projects import get_project
    from tools.storage import Prediction

    with ctx.db.session() as session:
        task = find_task(session, get_project(session, name).id, ref)
        value = session.scalar(
            select(Prediction.value).where(Prediction.run_id == run_id, Prediction.task_id == task.id)
        )
    if value is None:
        raise NotFoundError(
            f"task {ref} has no prediction in job {run_id}", hint="give the correct label instead"
        )
    return value


# ---------------------------------------------------------------------------------------------- export


@tool(parse_docstring=True)
def export_labels(
    runtime: Runtime,
    format: Literal["csv", "jsonl", "json", "parquet", "labelstudio", "labelstudio_min"] = "csv",
    rows: Literal["all", "ground_truth", "labeled"] = "all",
    version: int | None = None,
    min_confidence: float | None = None,
    include_predictions: bool = True,
) -> Command[Any]:
    """Export the project to a file the person can download: every task with its ground truth and the
    newest predictions (spreadsheet-safe CSV, JSONL, JSON, Parquet, Label Studio JSON).

    Args:
        format: the file format.
        rows: "all" tasks; "ground_truth": only tasks a person labeled; "labeled": tasks with a label of any
            kind ("everything labeled so far": the ground truth when nothing was bulk-labeled yet).
        version: take the predictions of this prompt version's newest run (default: the newest run).
        min_confidence: only tasks whose prediction is at least this confident (0-1).
        include_predictions: include predictions (false: ground truth only columns).
    """
    from tools.exporters import ExportFormat, export_project

    ctx = runtime.context
    name = _project(runtime)
    ground_truth_only = rows == "ground_truth"
    note = ""
    if rows == "labeled" and min_confidence is None and newest_label_run(ctx.db, name) is None:
        ground_truth_only = True
        note = " Nothing was bulk-labeled yet, so these are the tasks with ground truth."
    report = export_project(
        ctx.db,
        name,
        fmt=ExportFormat(format),
        exports_dir=ctx.settings.exports_dir,
        ground_truth_only=ground_truth_only,
        version=version,
        min_confidence=min_confidence,
        include_predictions=include_predictions,
    )
    size = f"{report.bytes / 1024:,.1f} KB" if report.bytes >= 1024 else f"{report.bytes} bytes"
    text = (
        f"Exported {report.rows:,} row(s) of {name} ({report.with_ground_truth:,} with ground truth, "
        f"{report.with_predictions:,} with predictions) to {Path(report.path).name} ({size}).{note}"
    )
    if rows == "labeled" and not ground_truth_only:
        unlabeled = report.rows - max(report.with_ground_truth, report.with_predictions)
        if unlabeled > 0:
            text += f" At least {unlabeled:,} row(s) have no label yet."
    if report.warnings:
        text += " Warnings: " + "; ".join(report.warnings[:3])
    artifact = file_artifact(report.path, f"{name} export ({format})")
    return _reply(runtime, text, dump(artifact), project=name)


# ---------------------------------------------------------------------------------------------- registry


def agent_tools() -> list[BaseTool]:
    """Every tool the agent offers, in the order the model sees them."""
    return [
        project_status,
        use_project,
        create_project,
        import_file,
        set_label_schema,
        sample_tasks,
        record_labels,
        remove_label,
        make_splits,
        add_preference,
        create_prompt_version,
        list_prompt_versions,
        adopt_prompt_version,
        diff_prompt_versions,
        evaluate,
        compare_runs,
        show_errors,
        suspect_labels,
        improve_prompt,
        estimate_cost,
        start_labeling,
        job_status,
        cancel_job,
        show_review_queue,
        review_items,
        export_labels,
    ]
