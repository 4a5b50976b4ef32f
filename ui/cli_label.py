"""`labelpilot label`, `estimate` and `jobs`: bulk labeling from the command line."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from tools.settings import Settings
from tools.storage import Database
from ui.cli_common import (
    JsonOpt,
    ProjectOpt,
    app,
    cli_errors,
    duration,
    emit_json,
    err,
    money,
    open_db,
    out,
    run_command,
)

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
            f"[bold]{money(estimate.usd_low)} - {money(estimate.usd_high)}[/]  (Batch API: "
            f"{money(estimate.batch_usd_low)} - {money(estimate.batch_usd_high)})",
        )
    if estimate.rpm:
        table.add_row("time", f"~{duration(estimate.seconds)} at {estimate.rpm:,.0f} requests/min")
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
                    eta=duration(progress.eta_s),
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
            f"{report.failed:,} failed{f' ({failed})' if failed else ''} in {duration(report.duration_s)} "
            f"({report.throughput_per_s:,.1f}/s); cost {money(report.cost_usd)}"
            + (
                f" (estimated {money(estimate.usd_low)} - {money(estimate.usd_high)})."
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
    table.add_row("cost", money(info.cost_usd))
    stats = info.stats
    if stats.get("duration_s") is not None:
        table.add_row("time", f"{duration(stats['duration_s'])} ({stats.get('throughput_per_s', 0):,.1f}/s)")
    compared = stats.get("estimate_vs_actual")
    if compared:
        low, high = compared["cost_usd"][0]
        table.add_row(
            "estimate vs actual",
            f"requests {compared['requests'][0]:,} / {compared['requests'][1]:,}; "
            f"input tokens {compared['input_tokens'][0]:,} / {compared['input_tokens'][1]:,}; "
            f"cost {money(low)}-{money(high)} / {money(compared['cost_usd'][1])}",
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
                money(info.cost_usd),
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
