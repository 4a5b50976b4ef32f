"""`labelpilot label`, `estimate`, `jobs` and `batch`: bulk labeling from the command line."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from tools.costs import duration, money
from tools.settings import Settings
from tools.storage import Database
from ui.cli_common import (
    JsonOpt,
    ProjectOpt,
    app,
    cli_errors,
    emit_json,
    err,
    open_db,
    out,
    run_command,
    with_progress,
)

jobs_app = typer.Typer(help="Bulk labeling jobs: list, show, cancel, resume.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
batch_app = typer.Typer(
    help="Batch API batches (label --batch-api): list, show, resume, cancel.", no_args_is_help=True
)
app.add_typer(batch_app, name="batch")

VersionOpt = Annotated[
    int | None,
    typer.Option("--version", help="Prompt version number (default: the current one, see `prompt use`)."),
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
BatchApiOpt = Annotated[
    bool,
    typer.Option(
        "--batch-api", help="Label through the OpenAI Batch API: half price, results within 24 hours."
    ),
]
PollOpt = Annotated[
    float,
    typer.Option(
        "--poll-interval",
        min=0,
        envvar="LABELPILOT_BATCH_POLL_S",
        help="Seconds between two status reads of a batch (Batch API mode).",
    ),
]
DEFAULT_POLL_S = 30.0


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

    `baseline` forces the choice (a resumed job keeps the labeler it started with). The choice itself is
    `agent.services.labeler_for`, shared with the chat agent.
    """
    from agent.services import labeler_for
    from tools.ratelimit import RateLimits

    return labeler_for(
        db,
        settings,
        project_name,
        version=version,
        version_id=version_id,
        model=model,
        rate_limits=RateLimits(rpm=rpm, tpm=tpm, max_concurrency=concurrency),
        baseline=baseline,
        created_by="labelpilot label",
    )


def _job_scope(gt_only: bool, limit: int | None) -> Any:
    from tools.engine import JobScope, ScopeKind

    return JobScope(kind=ScopeKind.ground_truth if gt_only else ScopeKind.all, limit=limit)


def _render_estimate(estimate: Any, notes: list[str], *, batch_api: bool = False) -> None:
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
    elif batch_api:
        table.add_row(
            "cost",
            f"[bold]{money(estimate.batch_usd_low)} - {money(estimate.batch_usd_high)}[/] with the Batch API "
            f"(live: {money(estimate.usd_low)} - {money(estimate.usd_high)})",
        )
    else:
        table.add_row(
            "cost",
            f"[bold]{money(estimate.usd_low)} - {money(estimate.usd_high)}[/]  (Batch API: "
            f"{money(estimate.batch_usd_low)} - {money(estimate.batch_usd_high)})",
        )
    if batch_api:
        table.add_row(
            "time", "results within 24 hours (Batch API); repairs of unusable replies are sent live"
        )
    elif estimate.rpm:
        table.add_row("time", f"~{duration(estimate.seconds)} at {estimate.rpm:,.0f} requests/min")
    out.print(table)
    for note in [*notes, *estimate.notes]:
        err.print(f"[dim]note: {note}[/]")


async def _run_with_progress(
    db: Database, project_name: str, labeler: Any, *, show: bool, cancel_note: str = "", **job: Any
) -> Any:
    """Run a job with a progress bar on stderr; Ctrl-C (or SIGTERM) cancels it cleanly."""
    from tools.engine import run_job

    async def work(progress: Any, cancel: Any) -> Any:
        return await run_job(db, project_name, labeler, progress=progress, cancel=cancel, **job)

    return await with_progress(show, "labeling", work, cancel_note=cancel_note)


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
    batch_api: bool = False,
) -> int:
    """Estimate, confirm, run and report a job; return the exit code.

    With `batch_api` the labeler is a `BatchLabeler`: one window holds every pending task (up to one
    batch's 50,000 requests), so one window is one submission.
    """
    import asyncio

    from tools.costs import PriceTable, estimate_job
    from tools.engine import RunStatus, job_plan

    plan = job_plan(db, project_name, labeler, scope=scope, run_id=run_id)
    if plan.run_status is RunStatus.finished and not (rerun_errors or new_run or run_id is not None):
        from tools.engine import count_scope

        pending = count_scope(db, plan).pending
        if not pending:
            message = (
                f"this job already finished as run {plan.run_id}: every task in its scope is labeled. "
                "Label everything again with --new-run"
            )
            if as_json:
                emit_json({"started": False, "run_id": plan.run_id, "status": "finished", "message": message})
            else:
                out.print(message)
            return 0
        # Tasks added since, or left with errors: the same job continues its run.
        notes.append(f"continuing run {plan.run_id}: {pending:,} task(s) new to its scope or with errors")
        rerun_errors = True
    if not batch_api and plan.run_id is not None and not new_run:
        from tools.batch_registry import list_batches

        waiting = [b.id for b in list_batches(db, project_name, run_id=plan.run_id, open_only=True)]
        if waiting:
            notes.append(
                f"job {plan.run_id} has open Batch API batches ({', '.join(waiting)}): labeling live sends "
                f"their requests again; `labelpilot jobs resume {plan.run_id}` waits for them instead"
            )
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
        _render_estimate(estimate, notes, batch_api=batch_api)
        if not typer.confirm("Start labeling?", default=False, err=True):
            err.print("Not started.")
            return 0
    elif not as_json:
        _render_estimate(estimate, notes, batch_api=batch_api)
    windows: dict[str, Any] = {}
    cancel_note = ""
    if batch_api:
        from tools.batch_api import MAX_REQUESTS_PER_BATCH

        windows = {"window_size": max(1, min(estimate.to_label, MAX_REQUESTS_PER_BATCH)), "max_windows": 1}
        cancel_note = " The batch keeps running at the provider."
    report = asyncio.run(
        _run_with_progress(
            db,
            project_name,
            labeler,
            show=not as_json and err.is_terminal,
            cancel_note=cancel_note,
            scope=scope,
            estimate=estimate,
            rerun_errors=rerun_errors,
            new_run=new_run,
            run_id=run_id,
            **windows,
        )
    )
    resume = f"labelpilot jobs resume {report.run_id}"
    batches: list[str] = list(getattr(labeler, "batch_ids", [])) if batch_api else []
    if as_json:
        result: dict[str, Any] = {
            "started": True,
            "ok": report.status is RunStatus.finished,
            "report": report,
            "estimate": estimate,
            "notes": notes,
            "resume": resume if report.status is not RunStatus.finished or report.errors_total else None,
        }
        if batch_api:
            result["batches"] = batches
        emit_json(result)
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
        if batches:
            out.print(f"Batches: {', '.join(batches)}")
        if report.status is RunStatus.cancelled and batches:
            out.print(
                "Stopped waiting; the batch keeps running at the provider and nothing is lost. Resume with: "
                f"labelpilot batch resume {batches[-1]}  (or {resume})"
            )
        elif report.status is RunStatus.cancelled:
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
    batch_api: BatchApiOpt = False,
    poll_interval: PollOpt = DEFAULT_POLL_S,
    as_json: JsonOpt = False,
) -> None:
    """Label the project's tasks in bulk: show the cost estimate, confirm, then run a resumable job.

    Running the same command again resumes the same job (same prompt version, model and tasks) without
    labeling anything twice. Ctrl-C stops cleanly. With --json and without --yes, only the estimate is
    printed (as JSON) and nothing is labeled. Without a configured model the offline baseline labels.
    With --batch-api the requests go through the OpenAI Batch API (half price, results within 24 hours);
    Ctrl-C then only stops waiting: the batch keeps running, and `labelpilot batch resume ID` picks it up.
    """
    from tools.projects import resolve_project_name

    settings = Settings.from_env()
    with cli_errors(as_json):
        if batch_api:
            _require_model(settings)
        db = open_db()
        try:
            name = resolve_project_name(db, project)
            labeler, notes = _labeler_for(
                db,
                settings,
                name,
                version=version,
                concurrency=concurrency,
                rpm=rpm,
                tpm=tpm,
                baseline=False if batch_api else None,
            )
            if batch_api:
                labeler = _batch_labeler(labeler, name, poll_interval=poll_interval)
            code = _label_flow(
                db,
                name,
                labeler,
                notes,
                scope=_job_scope(gt_only, limit),
                yes=yes,
                as_json=as_json,
                new_run=new_run,
                batch_api=batch_api,
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
    """Stop a job: a running one stops at its next commit (within about a second), from any process.

    Batch API batches of the job keep running at the provider (`labelpilot batch cancel ID` stops one).
    """
    from sqlalchemy import select

    from tools.engine import cancel_job
    from tools.storage import BatchJob

    running: list[str] = []

    def action(db: Database) -> Any:
        info = cancel_job(db, job)
        with db.session() as session:
            running.extend(
                session.scalars(
                    select(BatchJob.id).where(BatchJob.run_id == job, BatchJob.ingested_at.is_(None))
                )
            )
        return info

    def render(info: Any) -> None:
        if info.cancel_requested:
            out.print(f"Job {info.run_id}: cancel requested; it stops at its next commit.")
        else:
            out.print(f"Job {info.run_id}: {info.status}.")
        if running:
            out.print(
                f"Its Batch API batches keep running at the provider ({', '.join(running)}); the resume "
                "reads their results. Stop one with: labelpilot batch cancel ID"
            )
        out.print(f"Resume it later with: labelpilot jobs resume {info.run_id}")

    run_command(as_json, action, render)


@jobs_app.command("resume")
def jobs_resume(
    job: JobIdArg,
    project: ProjectOpt = None,
    concurrency: ConcurrencyOpt = 16,
    rpm: RpmOpt = 500,
    tpm: TpmOpt = None,
    yes: YesOpt = False,
    batch_api: Annotated[
        bool,
        typer.Option(
            "--batch-api", help="Resume through the Batch API (automatic while the job has open batches)."
        ),
    ] = False,
    poll_interval: PollOpt = DEFAULT_POLL_S,
    as_json: JsonOpt = False,
) -> None:
    """Continue a job: label what it has not labeled yet and retry its errors (never twice per task).

    A job with open Batch API batches resumes in Batch API mode: it waits for those batches instead of
    sending their requests again.
    """
    from tools.projects import resolve_project_name

    _resume(
        job,
        lambda db: resolve_project_name(db, project),
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        yes=yes,
        batch_api=batch_api,
        poll_interval=poll_interval,
        as_json=as_json,
    )


def _resume(
    job: int,
    project_of: Any,
    *,
    concurrency: int = 16,
    rpm: float = 500,
    tpm: float | None = None,
    yes: bool,
    batch_api: bool,
    poll_interval: float,
    as_json: bool,
) -> None:
    """Resume run `job` of the project `project_of(db)` names, in Batch API mode when asked or when the run
    has open batches."""
    from tools.batch_registry import list_batches
    from tools.engine import job_status, labeler_info_of
    from tools.errors import ConfigError
    from tools.labelers import LabelerKind

    settings = Settings.from_env()
    with cli_errors(as_json):
        db = open_db()
        try:
            name = project_of(db)
            info = job_status(db, name, job)
            started_with = labeler_info_of(info)
            baseline = started_with is not None and started_with.kind is LabelerKind.baseline
            batch_api = batch_api or bool(list_batches(db, name, run_id=job, open_only=True))
            if batch_api and baseline:
                raise ConfigError(
                    f"job {job} was labeled by the offline baseline, which sends no requests to batch"
                )
            if batch_api:
                _require_model(settings)
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
                baseline=baseline,
            )
            if batch_api:
                labeler = _batch_labeler(labeler, name, poll_interval=poll_interval)
            code = _label_flow(
                db,
                name,
                labeler,
                notes,
                scope=None,
                yes=yes,
                as_json=as_json,
                run_id=job,
                batch_api=batch_api,
            )
        finally:
            db.dispose()
    if code:
        raise typer.Exit(code)


# ---------------------------------------------------------------------------------------------- Batch API


def _require_model(settings: Settings) -> None:
    from tools.errors import ConfigError
    from tools.llm import is_configured

    if not is_configured(settings):
        raise ConfigError(
            "the Batch API needs a model: set OPENAI_API_KEY (for OpenAI), or OPENAI_BASE_URL for a "
            "compatible server that offers /v1/files and /v1/batches",
            hint="without --batch-api, labeling works without a model (the offline baseline)",
        )


class _BatchStatusLine:
    """Prints what happens to the batches on stderr: submissions, how to resume, status changes."""

    def __init__(self) -> None:
        self.labeler: Any = None
        self._last: dict[str, tuple[str, int, int]] = {}
        self._told_resume = False

    def __call__(self, status: Any) -> None:
        from tools.batch_api import BatchPhase

        phase = status.phase
        if phase is BatchPhase.submitted:
            err.print(f"Submitted batch [bold]{status.batch_id}[/] ({status.tasks:,} requests).")
        elif phase is BatchPhase.attached:
            err.print(
                f"Waiting for batch [bold]{status.batch_id}[/] (submitted earlier, {status.status}) "
                f"for {status.tasks:,} tasks."
            )
        elif phase is BatchPhase.ingested:
            err.print(
                f"Batch {status.batch_id} {status.status}: results read "
                f"({status.completed:,} labeled, {status.failed:,} failed)."
            )
            return
        if phase in (BatchPhase.submitted, BatchPhase.attached) and not self._told_resume:
            self._told_resume = True
            run = getattr(self.labeler, "run_id", None)
            jobs = f" or `labelpilot jobs resume {run}`" if run is not None else ""
            err.print(
                "You can stop waiting with Ctrl-C; the batch keeps running. Resume with "
                f"`labelpilot batch resume {status.batch_id}`{jobs}."
            )
        seen = (status.status, status.completed, status.failed)
        if phase is BatchPhase.polled and self._last.get(status.batch_id) != seen:
            self._last[status.batch_id] = seen
            err.print(
                f"[dim]batch {status.batch_id}: {status.status}, {status.completed:,} of {status.total:,} "
                f"done, {status.failed:,} failed[/]"
            )


def _batch_labeler(labeler: Any, project_name: str, *, poll_interval: float) -> Any:
    """Wrap the LLM labeler a command built into a `BatchLabeler` that reports on stderr."""
    from tools.batch_api import BatchLabeler

    status_line = _BatchStatusLine()
    batch = BatchLabeler(labeler, project=project_name, poll_interval_s=poll_interval, on_status=status_line)
    status_line.labeler = batch
    return batch


def _render_batches(batches: list[Any]) -> None:
    if not batches:
        out.print("No batches yet. Submit some with: labelpilot label --batch-api")
        return
    table = Table("id", "run", "status", "done", "failed", "requests", "created", "ingested")
    for info in batches:
        counts = info.request_counts
        table.add_row(
            info.id,
            str(info.run_id) if info.run_id is not None else "-",
            info.status,
            f"{counts.get('completed', 0):,}/{counts.get('total', 0):,}",
            f"{counts.get('failed', 0):,}",
            f"{info.requests:,}",
            info.created_at.strftime("%Y-%m-%d %H:%M"),
            info.ingested_at.strftime("%Y-%m-%d %H:%M") if info.ingested_at else "not yet",
        )
    out.print(table)


def _render_batch(info: Any) -> None:
    counts = info.request_counts
    table = Table(show_header=False, box=None)
    table.add_row("batch", f"[bold]{info.id}[/]")
    table.add_row("job", str(info.run_id) if info.run_id is not None else "- (its run was deleted)")
    table.add_row("status", info.status)
    table.add_row(
        "requests",
        f"{info.requests:,} submitted; provider: {counts.get('completed', 0):,} of {counts.get('total', 0):,} "
        f"done, {counts.get('failed', 0):,} failed",
    )
    table.add_row("endpoint", info.endpoint)
    table.add_row(
        "files",
        f"input {info.input_file_id}, output {info.output_file_id or '-'}, "
        f"errors {info.error_file_id or '-'}",
    )
    table.add_row("created", info.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    table.add_row("updated", info.updated_at.strftime("%Y-%m-%d %H:%M:%S"))
    if info.ingested_at:
        table.add_row("ingested", info.ingested_at.strftime("%Y-%m-%d %H:%M:%S"))
    else:
        table.add_row("ingested", f"not yet: labelpilot batch resume {info.id}")
    out.print(table)


BatchIdArg = Annotated[str, typer.Argument(help="The batch id, as `labelpilot batch list` shows it.")]


@batch_app.command("list")
def batch_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List the project's Batch API batches, newest first."""
    from tools.batch_registry import list_batches
    from tools.projects import resolve_project_name

    run_command(as_json, lambda db: list_batches(db, resolve_project_name(db, project)), _render_batches)


@batch_app.command("show")
def batch_show(batch: BatchIdArg, as_json: JsonOpt = False) -> None:
    """Show one batch: its job, status, request counts, files, and whether its results were read."""
    from tools.batch_registry import get_batch

    run_command(as_json, lambda db: get_batch(db, batch), _render_batch)


@batch_app.command("resume")
def batch_resume(
    batch: BatchIdArg,
    yes: YesOpt = False,
    poll_interval: PollOpt = DEFAULT_POLL_S,
    as_json: JsonOpt = False,
) -> None:
    """Resume the job a batch belongs to, in Batch API mode: wait for its open batches, read their
    results, and submit what is still unlabeled."""
    from tools.batch_registry import get_batch
    from tools.errors import ConfigError

    with cli_errors(as_json):
        db = open_db()
        try:
            info = get_batch(db, batch)
        finally:
            db.dispose()
        if info.run_id is None:
            raise ConfigError(
                f"batch {batch} belongs to no job any more (its run was deleted)",
                hint="label again with: labelpilot label --batch-api",
            )
    _resume(
        info.run_id,
        lambda db: _project_name(db, info.project_id),
        yes=yes,
        batch_api=True,
        poll_interval=poll_interval,
        as_json=as_json,
    )


def _project_name(db: Database, project_id: int) -> str:
    from tools.projects import get_project

    with db.session() as session:
        return get_project(session, project_id).name


@batch_app.command("cancel")
def batch_cancel(batch: BatchIdArg, as_json: JsonOpt = False) -> None:
    """Cancel a batch at the provider. What it finished is kept: resume its job to read it."""
    import asyncio

    from tools.batch_api import cancel_remote_batch
    from tools.llm import ModelSettings

    settings = Settings.from_env()

    def action(db: Database) -> Any:
        _require_model(settings)
        return asyncio.run(cancel_remote_batch(db, batch, ModelSettings.from_settings(settings)))

    def render(info: Any) -> None:
        out.print(f"Batch {info.id}: {info.status}. The provider stops it shortly; what it finished is kept.")
        out.print(f"Read its results (and resubmit the rest) with: labelpilot batch resume {info.id}")

    run_command(as_json, action, render)
