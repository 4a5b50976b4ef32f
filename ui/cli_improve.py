"""`labelpilot improve` and `labelpilot prompt prefer`: better prompt versions, proposed and measured, never adopted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tools.costs import money
from tools.settings import Settings
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
    short,
)
from ui.cli_eval import _fmt, _render_comparison
from ui.cli_prompt import prompt_app

VersionOpt = Annotated[
    int | None, typer.Option("--version", min=1, help="The version to start from (default: the current one).")
]
WriterOpt = Annotated[
    str | None,
    typer.Option(
        "--writer-model",
        envvar="LABELPILOT_WRITER_MODEL",
        help="The model that writes instructions (default: the labeling model; may be a stronger one).",
    ),
]
NO_MODEL_HINT = "rewriting instructions needs a model: set OPENAI_API_KEY or OPENAI_BASE_URL"


# ---------------------------------------------------------------- improve


def _render_plan(plan: Any) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("start from", f"[bold]v{plan.base_version}[/] (model {escape(plan.model)})")
    table.add_row("writer", escape(plan.writer_model))
    table.add_row(
        "candidates",
        f"{plan.candidates_total} = v{plan.base_version} + {plan.instruction_candidates} rewritten "
        f"instruction(s) + {plan.few_shot_variants} few-shot variant(s)",
    )
    table.add_row(
        "items",
        f"train {plan.train_items:,} (errors), dev {plan.dev_items:,} (choosing), test {plan.test_items:,} "
        "(the report)",
    )
    if plan.rounds:
        table.add_row(
            "rounds",
            "; ".join(f"{r.candidates} on {r.items} dev item(s)" for r in plan.rounds),
        )
    calls = plan.calls
    table.add_row(
        "calls",
        f"[bold]≤ {plan.total_calls:,}[/] (train {calls['train']:,}, writer {calls['writer']:,}, "
        f"dev {calls['dev']:,}, test {calls['test']:,}); at least {plan.minimum_calls:,}",
    )
    if plan.usd_low is None:
        table.add_row("cost", "unknown (no price for the model)")
    else:
        table.add_row("cost", f"[bold]{money(plan.usd_low)} - {money(plan.usd_high)}[/]")
    budget = []
    if plan.max_calls is not None:
        budget.append(f"{plan.max_calls:,} calls")
    if plan.budget_usd is not None:
        budget.append(money(plan.budget_usd))
    if budget:
        fits = (
            "fits" if plan.fits_budget else "[yellow]the run stops early when the next round does not fit[/]"
        )
        table.add_row("budget", f"{' and '.join(budget)}: {fits}")
    out.print(table)
    for note in plan.notes:
        err.print(f"[dim]note: {escape(note)}[/]")


def _render_rounds(report: Any) -> None:
    by_name = {c.name: c for c in report.candidates}
    for summary in report.rounds:
        table = Table(
            "rank",
            "candidate",
            "few-shot",
            "score",
            "calls",
            "cost",
            title=f"round {summary.round} on {summary.items} dev item(s)",
        )
        for rank, name in enumerate(summary.ranking, start=1):
            candidate = by_name.get(name)
            if candidate is None:
                continue
            score = next((s for s in candidate.rounds if s.round == summary.round), None)
            value = (
                "-"
                if score is None
                else f"{score.headline} {_fmt(score.value)} ({score.correct}/{score.items})"
            )
            kept = " [green]✓[/]" if name in summary.kept else ""
            table.add_row(
                str(rank),
                Text(name) + Text.from_markup(kept),
                candidate.few_shot,
                value,
                str(score.calls) if score else "-",
                money(score.cost_usd) if score else "-",
            )
        out.print(table)


def _render_improvement(report: Any) -> None:
    train = report.train
    if train is not None:
        out.print(
            f"v{report.base_version} on {train.items} train item(s): {train.headline} {_fmt(train.value)}, "
            f"{train.errors} wrong"
            + (
                "; most confused: "
                + ", ".join(f"{p.gold} → {p.predicted} ({p.count})" for p in train.top_confusions[:3])
                if train.top_confusions
                else ""
            )
        )
    _render_rounds(report)
    winner = next((c for c in report.candidates if c.name == report.winner), None)
    out.print(f"[bold]winner:[/] {escape(report.winner)}")
    if winner is not None and not report.winner_is_base:
        out.print(Text(f"  instructions: {short(winner.instructions, 200)}"))
        out.print(Text(f"  few-shot: {winner.few_shot}"))
        if winner.rationale:
            out.print(Text(f"  why: {short(winner.rationale, 300)}"))
    if report.comparison is not None:
        out.print("[bold]on test[/] (held out, never seen while choosing):")
        _render_comparison(report.comparison)
    budget = report.budget
    limits = []
    if budget.max_calls is not None:
        limits.append(f"{budget.max_calls:,} calls")
    if budget.budget_usd is not None:
        limits.append(money(budget.budget_usd))
    out.print(
        f"used: {budget.calls:,} call(s), {money(budget.usd)}"
        + (f" of the budget ({' and '.join(limits)})" if limits else "")
    )
    if budget.stopped_early:
        err.print(f"[yellow]budget:[/] {escape(budget.reason or 'stopped early')}")
    if report.leaks:
        for leak in report.leaks:
            err.print(f"[red]leak:[/] {escape(leak)}")
    for note in report.notes:
        err.print(f"[dim]note: {escape(note)}[/]")
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    out.print(Text(report.message))


@contextmanager
def _progress_display(show: bool) -> Iterator[Callable[[Any], None]]:
    """A progress bar on stderr for rounds and candidates; one line per step as it starts."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not show,
    ) as bar:
        task = bar.add_task("improving", total=None)
        last = [""]

        def update(event: Any) -> None:
            description = event.message
            if description != last[0]:
                last[0] = description
                if show:
                    bar.console.print(f"[dim]{escape(event.stage.value)}:[/] {escape(description)}")
            bar.update(task, description=description, completed=event.done, total=event.total or None)

        yield update


def _no_model(name: str | None, as_json: bool) -> None:
    """Without a model: tune the offline baseline's few-shot policy and say what needs a model."""
    result: Any = None
    try:
        from evals.tune_baseline import tune_baseline
    except ImportError:
        available = False
    else:
        available = True
        with cli_errors(as_json):
            db = open_db()
            try:
                from tools.projects import resolve_project_name

                say = (lambda line: None) if as_json else (lambda line: err.print(f"[dim]{escape(line)}[/]"))
                result = asyncio.run(tune_baseline(db, resolve_project_name(db, name), progress=say))
            finally:
                db.dispose()
    if as_json:
        emit_json({"model": False, "tuning": jsonable(result), "message": NO_MODEL_HINT})
        return
    if available and result is not None:
        out.print(Text(f"offline baseline: {result.message}"))
        best = ", ".join(f"{k}={v}" for k, v in result.best.items())
        if best:
            out.print(Text(f"best few-shot policy on dev: {best}"))
        if result.comparison is not None:
            _render_comparison(result.comparison)
    else:
        err.print("[dim]note: tuning the offline baseline is not available in this installation[/]")
    err.print(f"[yellow]{NO_MODEL_HINT}[/]")


@app.command("improve")
def improve_command(
    project: ProjectOpt = None,
    version: VersionOpt = None,
    candidates: Annotated[
        int, typer.Option("--candidates", min=0, max=20, help="Rewritten instructions to try.")
    ] = 4,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", min=0.0, help="Stop before spending more than this.")
    ] = None,
    max_calls: Annotated[
        int | None, typer.Option("--max-calls", min=1, help="Stop before sending more model calls than this.")
    ] = None,
    writer_model: WriterOpt = None,
    few_shot: Annotated[
        bool,
        typer.Option(
            "--few-shot/--no-few-shot", help="Also try few-shot variants (none / nearest / label-diverse)."
        ),
    ] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the dev subsets and the train sample.")] = 0,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=4096)] = 16,
    rpm: Annotated[float, typer.Option("--rpm", min=1, envvar="LABELPILOT_RPM")] = 500,
    tpm: Annotated[float | None, typer.Option("--tpm", min=1, envvar="LABELPILOT_TPM")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Start without asking (after the plan).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Propose better prompt versions, choose one on the dev split inside a budget, report it on test.

    An LLM rewrites the instructions from the errors on train; few-shot policies are varied; candidates
    compete on dev (successive halving: small subsets first); the winner is saved as a new version and
    compared with the current one on test. Nothing is adopted: try the new version with --version N, adopt it with `labelpilot prompt use N`.
    With --json and without --yes, only the plan is printed. Without a model, the offline baseline's
    few-shot policy is tuned instead.
    """
    from evals.optimize import improve, plan_improvement
    from tools.llm import is_configured
    from tools.projects import resolve_project_name
    from tools.ratelimit import RateLimits

    settings = Settings.from_env()
    if not is_configured(settings):
        _no_model(project, as_json)
        return
    limits = RateLimits(rpm=rpm, tpm=tpm, max_concurrency=concurrency)
    with cli_errors(as_json):
        db = open_db()
        try:
            name = resolve_project_name(db, project)
            options: dict[str, Any] = {
                "base_version": version,
                "candidates": candidates,
                "budget_usd": budget_usd,
                "max_calls": max_calls,
                "writer_model": writer_model,
                "seed": seed,
                "few_shot": few_shot,
                "rate_limits": limits,
            }
            plan = plan_improvement(db, settings, name, **options)
            if not yes:
                if as_json:
                    emit_json({"started": False, "plan": plan, "message": "pass --yes to start"})
                    return
                _render_plan(plan)
                if not typer.confirm("Start?", default=False, err=True):
                    err.print("Not started.")
                    return
            elif not as_json:
                _render_plan(plan)
            with _progress_display(not as_json and err.is_terminal) as progress:
                report = asyncio.run(improve(db, settings, name, progress=progress, **options))
        finally:
            db.dispose()
    if as_json:
        emit_json({"started": True, **report.model_dump(mode="json")})
    else:
        _render_improvement(report)


# ---------------------------------------------------------------- prompt prefer


@prompt_app.command("prefer")
def prompt_prefer(
    text: Annotated[str, typer.Argument(help='Preferences in your words, e.g. "summaries with numbers".')],
    version: VersionOpt = None,
    writer_model: WriterOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn stated preferences into a new version's instructions (the parent is unchanged, nothing adopted).

    With a model, the writer model merges them into the instructions; without one they are added verbatim
    as a "Preferences:" paragraph.
    """
    from evals.optimize import preferences_to_instructions
    from tools.projects import resolve_project_name

    settings = Settings.from_env()
    with cli_errors(as_json):
        db = open_db()
        try:
            name = resolve_project_name(db, project)
            info = asyncio.run(
                preferences_to_instructions(
                    db, settings, name, text, base_version=version, writer_model=writer_model
                )
            )
        finally:
            db.dispose()
    if as_json:
        emit_json(info)
        return
    out.print(f"Created prompt [bold]v{info.number}[/] (parent v{info.parent_number}).")
    out.print(Text(f"note: {info.note}"))
    out.print(Text(f"instructions: {short(info.instructions, 400)}"))
    out.print(
        f"Nothing is adopted: evaluate it with `labelpilot eval --version {info.number} --split test`, "
        f"or use it with `labelpilot label --version {info.number}`."
    )
