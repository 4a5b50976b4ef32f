"""`labelpilot eval`, `compare` and `errors`: prompt versions and the baseline measured on ground truth."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tools.costs import money
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
    short,
    with_progress,
)

#: Confusion matrices up to this many labels are printed in full; larger ones as their top confusions.
MAX_MATRIX_LABELS = 6

SplitOpt = Annotated[
    str | None,
    typer.Option("--split", help="Evaluate on one split (train, dev, test; see `labelpilot gt split`)."),
]


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _headline(summary_value: float | None, low: float | None, high: float | None, name: str) -> str:
    text = f"{name} {_fmt(summary_value)}"
    if low is not None and high is not None:
        text += f" [{_fmt(low)}-{_fmt(high)}]"
    return text


def _pictures(report: Any, folder: Path) -> dict[str, str]:
    """Write the confusion matrix and per-class F1 pictures of a report; return their paths."""
    from evals.pictures import confusion_png, per_class_f1_png

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    title = f"{report.project} — {report.run.name} (run {report.run.run_id})"
    metrics = report.metrics
    if metrics.confusion is not None and metrics.confusion.labels:
        path = folder / f"run-{report.run.run_id}-confusion.png"
        written["confusion"] = str(confusion_png(metrics.confusion, path, title=title))
    if metrics.per_class:
        path = folder / f"run-{report.run.run_id}-per-class-f1.png"
        written["per_class_f1"] = str(per_class_f1_png(metrics.per_class, path, title=title))
    return written


def _render_report(report: Any, pictures: dict[str, str]) -> None:
    from evals.pictures import confusion_table

    metrics = report.metrics
    run = report.run
    where = run.split or "all ground truth"
    out.print(
        f"[bold]{run.name}[/] (run {run.run_id}, {run.model or run.kind}) on {where}: "
        f"{report.scored:,} item(s) scored"
    )
    interval = metrics.interval
    head = _headline(
        metrics.headline_value,
        interval.low if interval else None,
        interval.high if interval else None,
        metrics.headline,
    )
    out.print(f"  [bold green]{head}[/]" + (" (95% interval)" if interval else ""))
    values = Table("metric", "value", box=None)
    for key, value in metrics.values.items():
        if key.endswith(("_low", "_high")) or key in ("n", "answered"):
            continue
        values.add_row(key, _fmt(value) if key != "invalid_rate" else _pct(value))
    out.print(values)
    if metrics.per_class:
        rows = sorted(metrics.per_class, key=lambda c: (c.f1, c.label))
        shown = rows[:25]
        table = Table(
            "class",
            "precision",
            "recall",
            "F1",
            "support",
            title="per class (worst first)" + (f", {len(shown)} of {len(rows)}" if len(rows) > 25 else ""),
        )
        for c in shown:
            table.add_row(c.label, _fmt(c.precision), _fmt(c.recall), _fmt(c.f1), str(c.support))
        out.print(table)
    confusion = metrics.confusion
    if confusion is not None and confusion.labels:
        if len(confusion.labels) <= MAX_MATRIX_LABELS:
            rows_text = confusion_table(confusion)
            table = Table(*rows_text[0], title="confusion (rows: gold)")
            for row in rows_text[1:]:
                table.add_row(*row)
        else:
            table = Table("gold", "predicted", "count", title="top confusions")
            for gold, predicted, count in confusion.top_confusions(10):
                table.add_row(gold, predicted, str(count))
        if table.row_count:
            out.print(table)
    usage = report.usage
    if run.kind == "baseline":
        out.print(
            f"usage: offline baseline, no model calls, $0; p50 {_fmt(usage.latency_p50_ms, 0)} ms per batch"
        )
    else:
        out.print(
            f"usage: {usage.requests:,} request(s), {usage.from_cache:,} from the cache; tokens "
            f"{usage.input_tokens:,} in / {usage.output_tokens:,} out; cost {money(usage.cost_usd)}; latency "
            f"p50 {_fmt(usage.latency_p50_ms, 0)} ms, p95 {_fmt(usage.latency_p95_ms, 0)} ms"
        )
    if report.errors_by_kind:
        out.print("errors: " + ", ".join(f"{n} {k}" for k, n in sorted(report.errors_by_kind.items())))
    ref = report.reference
    if ref is not None:
        out.print(
            f"$0 reference: baseline (run {ref.run.run_id}) "
            f"{_headline(ref.value, ref.low, ref.high, ref.headline)}"
        )
    elif run.kind != "baseline":
        out.print("[dim]$0 reference: not measured yet — run `labelpilot eval --baseline`[/]")
    for name, path in pictures.items():
        out.print(f"picture ({name.replace('_', ' ')}): {path}")
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}")


def _render_list(summaries: list[Any]) -> None:
    if not summaries:
        out.print("No evaluations yet. Run one with: labelpilot eval (or labelpilot eval --baseline)")
        return
    table = Table("run", "labeler", "split", "score (95% interval)", "n", "invalid", "cost")
    for s in summaries:
        if s.run.kind == "baseline":
            name = "baseline ($0 reference)"
        else:
            name = f"{s.run.name} {s.run.model}" if s.run.model else s.run.name
        table.add_row(
            str(s.run.run_id),
            name,
            s.run.split or "all",
            _headline(s.value, s.low, s.high, s.headline),
            str(s.scored),
            _pct(s.invalid_rate),
            money(s.cost_usd),
        )
    out.print(table)


def _eval_labeler(
    db: Database,
    settings: Settings,
    name: str,
    *,
    version: int | None,
    baseline: bool,
    split: str | None,
    concurrency: int,
    rpm: float,
    tpm: float | None,
) -> tuple[Any, list[str]]:
    """The labeler an evaluation runs (`agent.services.eval_labeler`, shared with the chat agent)."""
    from agent.services import eval_labeler
    from tools.ratelimit import RateLimits

    return eval_labeler(
        db,
        settings,
        name,
        version=version,
        baseline=baseline,
        split=split,
        rate_limits=RateLimits(rpm=rpm, tpm=tpm, max_concurrency=concurrency),
    )


@app.command("eval")
def eval_command(
    project: ProjectOpt = None,
    version: Annotated[
        int | None,
        typer.Option("--version", help="Prompt version number (default: the current one, see `prompt use`)."),
    ] = None,
    baseline: Annotated[
        bool, typer.Option("--baseline", help="Evaluate the offline baseline (the $0 reference).")
    ] = False,
    split: SplitOpt = None,
    run: Annotated[
        str | None,
        typer.Option("--run", help="Show a stored evaluation (id, latest, vN or baseline) without labeling."),
    ] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List every evaluation, newest first.")] = False,
    pictures: Annotated[
        Path | None,
        typer.Option(
            "--pictures", help="Folder for the PNG pictures (default: <data folder>/reports/<project>)."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=4096)] = 16,
    rpm: Annotated[float, typer.Option("--rpm", min=1, envvar="LABELPILOT_RPM")] = 500,
    tpm: Annotated[float | None, typer.Option("--tpm", min=1, envvar="LABELPILOT_TPM")] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Start without asking when it costs money.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a prompt version (or the offline baseline) on the ground truth and show its metrics.

    Each evaluation is a new run; an interrupted one resumes when run again; cached answers are free.
    Without a configured model the offline baseline is evaluated. With --json and without --yes, an
    evaluation that would cost money only prints its estimate.
    """
    from evals.evaluate import eval_scope, evaluate, list_evals, run_report
    from tools.projects import resolve_project_name

    settings = Settings.from_env()
    if list_runs:
        run_command(as_json, lambda db: list_evals(db, resolve_project_name(db, project)), _render_list)
        return
    with cli_errors(as_json):
        db = open_db()
        try:
            name = resolve_project_name(db, project)
            folder = pictures or settings.home / "reports" / name
            if run is not None:
                report = run_report(db, name, run)
            else:
                labeler, notes = _eval_labeler(
                    db,
                    settings,
                    name,
                    version=version,
                    baseline=baseline,
                    split=split,
                    concurrency=concurrency,
                    rpm=rpm,
                    tpm=tpm,
                )
                for note in notes:
                    err.print(f"[dim]note: {note}[/]")
                estimate = None
                if getattr(labeler, "prices", None) is not None:
                    from tools.costs import estimate_job
                    from tools.engine import RunKind

                    estimate = estimate_job(
                        db, name, labeler, scope=eval_scope(db, name, split), kind=RunKind.eval, new_run=True
                    )
                    if estimate.requests and not yes:
                        if as_json:
                            emit_json(
                                {"started": False, "estimate": estimate, "message": "pass --yes to evaluate"}
                            )
                            return
                        from ui.cli_label import _render_estimate

                        _render_estimate(estimate, [])
                        if not typer.confirm("Start the evaluation?", default=False, err=True):
                            err.print("Not started.")
                            return
                show = not as_json and err.is_terminal

                async def work(progress: Any, cancel: asyncio.Event) -> Any:
                    return await evaluate(
                        db, name, labeler, split=split, progress=progress, cancel=cancel, estimate=estimate
                    )

                report = asyncio.run(with_progress(show, "evaluating", work))
            written = _pictures(report, folder)
        finally:
            db.dispose()
    if as_json:
        emit_json({**report.model_dump(mode="json"), "pictures": written})
    else:
        _render_report(report, written)


def _render_comparison(result: Any) -> None:
    a, b = result.a, result.b
    out.print(
        f"[bold]{a.name}[/] (run {a.run_id}) → [bold]{b.name}[/] (run {b.run_id}) on {result.common:,} "
        "common item(s)"
    )
    head = result.metrics_a.headline
    test = result.test
    delta = result.deltas.get(head)
    colour = "green" if (delta or 0) > 0 else "red" if (delta or 0) < 0 else "white"
    if head in ("mae", "rmse"):
        colour = "green" if (delta or 0) < 0 else "red" if (delta or 0) > 0 else "white"
    out.print(
        f"  {head}: {_fmt(result.metrics_a.values.get(head))} → {_fmt(result.metrics_b.values.get(head))} "
        f"([{colour}]{'+' if (delta or 0) >= 0 else ''}{_fmt(delta)}[/]); "
        f"{test.method.replace('_', ' ')} p = {test.p_value:.4g}"
        + (" (significant at 0.05)" if test.p_value < 0.05 else " (not significant at 0.05)")
    )
    table = Table("metric", a.name, b.name, "delta", box=None)
    for key, d in result.deltas.items():
        if key.endswith(("_low", "_high")) or key in ("n", "answered"):
            continue
        table.add_row(
            key, _fmt(result.metrics_a.values.get(key)), _fmt(result.metrics_b.values.get(key)), _fmt(d)
        )
    out.print(table)
    out.print(
        f"flipped: {result.right_to_wrong:,} right → wrong, {result.wrong_to_right:,} wrong → right; "
        f"label drift: {result.changed:,} prediction(s) changed ({_pct(result.changed_rate)})"
    )
    for title, items in (
        ("right → wrong", result.right_to_wrong_items),
        ("wrong → right", result.wrong_to_right_items),
    ):
        if not items:
            continue
        flips = Table("id", "text", "gold", a.name, b.name, title=title)
        for item in items[:15]:
            flips.add_row(
                item.external_id,
                short(item.text, 60),
                short(item.gold, 20),
                short(item.a, 20),
                short(item.b, 20),
            )
        out.print(flips)
    moved = [row for row in result.per_class if row.get("delta")]
    if moved:
        classes = Table(
            "class", f"F1 {a.name}", f"F1 {b.name}", "delta", "support", title="per-class F1 deltas"
        )
        for row in moved[:20]:
            classes.add_row(
                str(row["label"]),
                _fmt(row["f1_a"]),
                _fmt(row["f1_b"]),
                _fmt(row["delta"]),
                str(row["support"]),
            )
        out.print(classes)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}")


@app.command("compare")
def compare_command(
    run_a: Annotated[str, typer.Argument(help="First run: id, latest, vN or baseline.")],
    run_b: Annotated[str, typer.Argument(help="Second run: id, latest, vN or baseline.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two evaluations on their common items: deltas, a paired test, flipped items, drift."""
    from evals.evaluate import compare_runs
    from tools.projects import resolve_project_name

    run_command(
        as_json,
        lambda db: compare_runs(db, resolve_project_name(db, project), run_a, run_b),
        _render_comparison,
    )


def _render_errors(page: Any) -> None:
    run = page.run
    what = ""
    if page.gold_filter or page.predicted_filter:
        what = f" (gold {page.gold_filter or 'any'}, predicted {page.predicted_filter or 'any'})"
    out.print(
        f"[bold]{run.name}[/] (run {run.run_id}): {page.total_wrong:,} wrong item(s); "
        f"{page.matching:,} shown{what}, most confident first"
    )
    if page.pairs and not (page.gold_filter or page.predicted_filter):
        pairs = Table("gold", "predicted", "count", title="most frequent confusions")
        for gold, predicted, count in page.pairs:
            pairs.add_row(gold, predicted, str(count))
        out.print(pairs)
    for item in page.items:
        out.print(
            f"\n[bold]{item.external_id}[/]  gold [green]{short(item.gold, 40)}[/]  predicted "
            f"[red]{short(item.predicted, 40) if item.predicted is not None else '(no answer)'}[/]"
            + (f"  confidence {_fmt(item.confidence, 2)}" if item.confidence is not None else "")
        )
        for key, value in item.data.items():
            out.print(f"  {key}: {short(value, 200)}")
        if item.reasoning:
            out.print(f"  [dim]reasoning: {short(item.reasoning, 300)}[/]")
        if item.error_message:
            out.print(f"  [dim]error ({item.error_kind}): {short(item.error_message, 200)}[/]")


@app.command("errors")
def errors_command(
    run: Annotated[str, typer.Argument(help="The run: id, latest, vN or baseline.")] = "latest",
    gold: Annotated[str | None, typer.Option("--gold", help="Only items with this gold label.")] = None,
    predicted: Annotated[
        str | None,
        typer.Option("--predicted", help="Only items predicted as this label ('(no answer)': failed)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Items shown at most.")] = 20,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Browse what an evaluation got wrong: input, gold, prediction, reasoning and confidence."""
    from evals.evaluate import error_items
    from tools.projects import resolve_project_name

    run_command(
        as_json,
        lambda db: error_items(
            db, resolve_project_name(db, project), run, gold=gold, predicted=predicted, limit=limit
        ),
        _render_errors,
    )


def render_suspects(suspects: list[Any]) -> None:
    """Print ground-truth items several runs disagree with."""
    if not suspects:
        out.print(
            "No suspicious ground truth: no item is confidently contradicted by several evaluations "
            "(this needs finished evaluations of at least two labelers)."
        )
        return
    table = Table(
        "id", "text", "gold", "suggested", "runs agreeing", "confidence", title="re-check these labels"
    )
    for s in suspects:
        table.add_row(
            s.external_id,
            short(s.text, 60),
            short(s.gold, 24),
            short(s.suggested, 24),
            f"{s.runs_agreeing}/{s.runs_total}",
            _fmt(s.mean_confidence, 2),
        )
    out.print(table)
    out.print("Fix a label with: labelpilot gt set ID LABEL")
