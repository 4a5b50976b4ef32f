"""Evaluation against ground truth: run a labeler through the engine, score the run, compare runs.

- `evaluate` labels the ground truth (all of it, or one split) with any labeler — a prompt version or the
  offline baseline — as an `eval` run of the labeling engine. Each evaluation gets a NEW run (earlier runs are
  never overwritten); an interrupted evaluation resumes its own run; the response cache makes a repeated
  evaluation of the same prompt free.
- `run_report` scores a stored run against the CURRENT ground truth (a label corrected since is honoured),
  with usage: tokens, cost, latency p50/p95, invalid-output rate.
- `compare_runs` scores two runs on their common items: metric deltas, a paired test, flipped items,
  per-class deltas and label drift.
- `error_items` lists what a run got wrong (filterable by a gold/predicted pair); `gt_suspects` lists items
  that several runs confidently agree are labeled wrongly — candidates for a ground-truth re-check.

Runs are referred to by id, or by `latest`, `vN` (the newest eval run of prompt version N) or `baseline`
(the newest eval run of the offline baseline) — see `resolve_run`.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import select

from evals.metrics import (
    Metrics,
    PairedTest,
    item_correct,
    metric_deltas,
    paired_test,
    per_class_deltas,
    score,
)
from tools.costs import CostEstimate
from tools.engine import JobProgress, JobScope, RunKind, RunStatus, ScopeKind, job_plan, run_job
from tools.errors import LabelpilotError, NotFoundError
from tools.groundtruth import current_labels, labels_of
from tools.labelers import Labeler, LabelerKind
from tools.labelspec import LabelSpec
from tools.projects import get_project, require_spec
from tools.storage import Database, Prediction, PromptVersion, Run, Task

#: Items listed per flip direction in a comparison (the counts are always complete).
FLIPS_SHOWN = 50


class RunUsage(BaseModel):
    """What a run cost and how fast its answers came."""

    requests: int = Field(description="Predictions that needed a model call (cache hits excluded).")
    from_cache: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class RunLabel(BaseModel):
    """Who produced a run."""

    run_id: int
    kind: str = Field(description="llm or baseline")
    name: str = Field(description="e.g. 'v3' or 'baseline'")
    prompt_version: int | None
    model: str
    split: str | None
    created_at: datetime
    status: str


class EvalReport(BaseModel):
    """A run scored against the current ground truth."""

    project: str
    run: RunLabel
    task_type: str
    items_in_run: int
    scored: int = Field(description="Items of the run that have ground truth now.")
    metrics: Metrics
    usage: RunUsage
    errors_by_kind: dict[str, int]
    warnings: list[str] = Field(default_factory=list)
    #: The offline baseline's newest evaluation on the same split, when there is one: the "$0 reference".
    reference: EvalSummary | None = None


class EvalSummary(BaseModel):
    """One line of the evaluation leaderboard."""

    run: RunLabel
    headline: str
    value: float | None
    low: float | None
    high: float | None
    scored: int
    invalid_rate: float | None
    cost_usd: float | None


class FlippedItem(BaseModel):
    """An item whose correctness changed between two runs."""

    task_id: int
    external_id: str
    text: str
    gold: Any
    a: Any
    b: Any


class Comparison(BaseModel):
    """Two runs on their common items."""

    project: str
    a: RunLabel
    b: RunLabel
    common: int
    metrics_a: Metrics
    metrics_b: Metrics
    deltas: dict[str, float | None]
    test: PairedTest
    right_to_wrong: int
    wrong_to_right: int
    right_to_wrong_items: list[FlippedItem]
    wrong_to_right_items: list[FlippedItem]
    per_class: list[dict[str, Any]]
    changed: int = Field(description="Common items whose prediction differs at all (label drift).")
    changed_rate: float | None
    warnings: list[str] = Field(default_factory=list)


class ErrorItem(BaseModel):
    """A wrong (or failed) prediction with what a person needs to judge it."""

    task_id: int
    external_id: str
    data: dict[str, Any]
    gold: Any
    predicted: Any
    reasoning: str | None
    confidence: float | None
    error_kind: str | None
    error_message: str | None


class ErrorPage(BaseModel):
    """Wrong items of a run, optionally only one gold → predicted pair."""

    project: str
    run: RunLabel
    total_wrong: int
    matching: int
    gold_filter: str | None
    predicted_filter: str | None
    items: list[ErrorItem]
    #: The most frequent (gold, predicted, count) pairs among the wrong items.
    pairs: list[tuple[str, str, int]]


class Suspect(BaseModel):
    """A ground-truth item several runs confidently disagree with."""

    task_id: int
    external_id: str
    text: str
    gold: Any
    suggested: Any
    runs_wrong: int
    runs_agreeing: int
    runs_total: int
    mean_confidence: float | None


# ---------------------------------------------------------------------------------------- reading runs


@dataclass
class _Row:
    task_id: int
    external_id: str
    data: dict[str, Any]
    gold: Any
    value: Any
    ok: bool
    confidence: float | None
    reasoning: str | None
    error_kind: str | None
    error_message: str | None


def _version_numbers(session: Any, project_id: int) -> dict[int, int]:
    rows = session.execute(
        select(PromptVersion.id, PromptVersion.number).where(PromptVersion.project_id == project_id)
    ).all()
    return {vid: number for vid, number in rows}


def _run_label(run: Run, numbers: dict[int, int]) -> RunLabel:
    stats = dict(run.stats or {})
    kind = str((stats.get("labeler") or {}).get("kind") or "")
    number = numbers.get(run.prompt_version_id) if run.prompt_version_id is not None else None
    if kind == LabelerKind.baseline.value:
        name = "baseline"
    elif number is not None:
        name = f"v{number}"
    else:
        name = run.model or kind or f"run {run.id}"
    return RunLabel(
        run_id=run.id,
        kind=kind,
        name=name,
        prompt_version=number,
        model=run.model,
        split=stats.get("split"),
        created_at=run.created_at,
        status=run.status,
    )


def _eval_runs(session: Any, project_id: int) -> list[Run]:
    return list(
        session.scalars(
            select(Run)
            .where(Run.project_id == project_id, Run.kind == RunKind.eval.value)
            .order_by(Run.id.desc())
        ).all()
    )


def resolve_run(db: Database, project_name: str, ref: str | int) -> int:
    """Return the run id `ref` names: an id, `latest`, `vN` or `baseline` (newest eval run of each)."""
    text = str(ref).strip().lower()
    with db.session() as session:
        project = get_project(session, project_name)
        if text.isdigit():
            run = session.get(Run, int(text))
            if run is None or run.project_id != project.id:
                raise NotFoundError(
                    f"no run {text} in project '{project.name}'", hint="see: labelpilot eval --list"
                )
            return run.id
        numbers = _version_numbers(session, project.id)
        for run in _eval_runs(session, project.id):
            label = _run_label(run, numbers)
            if text == "latest" or text == label.name.lower():
                return run.id
    raise NotFoundError(
        f"no evaluation run matches '{ref}' in project '{project_name}'",
        hint="use a run id, 'latest', 'vN' or 'baseline'; see: labelpilot eval --list",
    )


def _load(db: Database, project_name: str, run_id: int) -> tuple[str, LabelSpec, RunLabel, list[_Row]]:
    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project)
        run = session.get(Run, run_id)
        if run is None or run.project_id != project.id:
            raise NotFoundError(
                f"no run {run_id} in project '{project.name}'", hint="see: labelpilot eval --list"
            )
        label = _run_label(run, _version_numbers(session, project.id))
        gold = current_labels(session, project.id)
        rows: list[_Row] = []
        query = (
            select(Prediction, Task.external_id, Task.data)
            .join(Task, Task.id == Prediction.task_id)
            .where(Prediction.run_id == run_id)
            .order_by(Prediction.task_id)
        )
        for prediction, external_id, data in session.execute(query):
            ok = prediction.error_kind is None
            rows.append(
                _Row(
                    task_id=prediction.task_id,
                    external_id=external_id,
                    data=dict(data or {}),
                    gold=gold.get(prediction.task_id),
                    value=prediction.value if ok else None,
                    ok=ok,
                    confidence=prediction.confidence,
                    reasoning=prediction.reasoning,
                    error_kind=prediction.error_kind,
                    error_message=prediction.error_message,
                )
            )
        return project.name, spec, label, rows


def _usage(db: Database, run_id: int) -> tuple[RunUsage, dict[str, int]]:
    with db.session() as session:
        rows = session.execute(
            select(
                Prediction.input_tokens,
                Prediction.output_tokens,
                Prediction.cached_tokens,
                Prediction.cost_usd,
                Prediction.latency_ms,
                Prediction.error_kind,
            ).where(Prediction.run_id == run_id)
        ).all()
    latencies = [float(r.latency_ms) for r in rows if r.latency_ms is not None]
    sent = [r for r in rows if r.input_tokens]
    costs = [r.cost_usd for r in rows if r.error_kind is None]
    unknown_cost = any(c is None for c in costs) and bool(sent)
    by_kind = Counter(str(r.error_kind) for r in rows if r.error_kind is not None)
    usage = RunUsage(
        requests=len(sent),
        from_cache=sum(1 for r in rows if r.error_kind is None and not r.input_tokens),
        input_tokens=sum(int(r.input_tokens or 0) for r in rows),
        output_tokens=sum(int(r.output_tokens or 0) for r in rows),
        cached_tokens=sum(int(r.cached_tokens or 0) for r in rows),
        cost_usd=None if unknown_cost else round(sum(float(c or 0) for c in costs), 6),
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else None,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else None,
    )
    return usage, dict(by_kind)


# ---------------------------------------------------------------------------------------- evaluation


def eval_scope(db: Database, project_name: str, split: str | None = None) -> JobScope:
    """The tasks an evaluation labels: all ground truth, or the ground truth of one split."""
    if split is None:
        return JobScope(kind=ScopeKind.ground_truth)
    from tools.splits import split_task_ids

    ids = split_task_ids(db, project_name, split)
    if not ids:
        raise NotFoundError(
            f"the {split} split of project '{project_name}' is empty",
            hint="assign splits with: labelpilot gt split (or label more items)",
        )
    return JobScope(kind=ScopeKind.task_ids, task_ids=ids)


async def evaluate(
    db: Database,
    project_name: str,
    labeler: Labeler,
    *,
    split: str | None = None,
    progress: Callable[[JobProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    estimate: CostEstimate | None = None,
    **job: Any,
) -> EvalReport:
    """Label the ground truth (or a split) with `labeler` in an eval run and score it.

    An unfinished evaluation of the same labeler and scope is resumed; a finished one is kept and a new
    run is started. Extra keyword arguments go to `run_job` (window sizes, commit intervals).
    """
    with db.session() as session:
        if not current_labels(session, get_project(session, project_name).id):
            raise NotFoundError(
                f"project '{project_name}' has no ground truth to evaluate on",
                hint="label some items first: labelpilot gt label (or import a file with --label)",
            )
    scope = eval_scope(db, project_name, split)
    plan = job_plan(db, project_name, labeler, scope=scope, kind=RunKind.eval)
    new_run = plan.run_status is RunStatus.finished
    report = await run_job(
        db,
        project_name,
        labeler,
        scope=scope,
        kind=RunKind.eval,
        progress=progress,
        cancel=cancel,
        new_run=new_run,
        estimate=estimate,
        **job,
    )
    with db.session() as session:
        run = session.get(Run, report.run_id)
        if run is not None:
            run.stats = {**(run.stats or {}), "split": split}
    result = run_report(db, project_name, report.run_id)
    if report.status is not RunStatus.finished:
        result.warnings.insert(
            0,
            f"the evaluation stopped ({report.status.value}): scores cover only what was labeled; "
            f"run the same command again to finish it",
        )
    return result


def run_report(db: Database, project_name: str, run_ref: str | int, *, seed: int = 0) -> EvalReport:
    """Score a stored run against the current ground truth."""
    run_id = resolve_run(db, project_name, run_ref)
    name, spec, label, rows = _load(db, project_name, run_id)
    scored = [r for r in rows if r.gold is not None]
    metrics = score(spec, [r.gold for r in scored], [r.value for r in scored], seed=seed)
    usage, by_kind = _usage(db, run_id)
    if label.kind == LabelerKind.baseline.value:
        usage.from_cache = 0
    warnings: list[str] = []
    if len(scored) < len(rows):
        warnings.append(
            f"{len(rows) - len(scored):,} item(s) of the run have no ground truth any more and are not scored"
        )
    if metrics.interval is not None and scored:
        width = metrics.interval.high - metrics.interval.low
        if width > 0.2:
            warnings.append(
                f"only {len(scored)} item(s) scored: the 95% interval of {metrics.headline} is "
                f"{metrics.interval.low:.3g}-{metrics.interval.high:.3g}; label more items to trust small "
                "differences"
            )
    if by_kind.get("auth"):
        warnings.append("some requests were refused (auth): check OPENAI_API_KEY")
    reference = None
    if label.kind != LabelerKind.baseline.value:
        reference = _reference(db, name, label.split)
    return EvalReport(
        project=name,
        run=label,
        task_type=spec.type.value,
        items_in_run=len(rows),
        scored=len(scored),
        metrics=metrics,
        usage=usage,
        errors_by_kind=by_kind,
        warnings=warnings,
        reference=reference,
    )


def _summary(report: EvalReport) -> EvalSummary:
    interval = report.metrics.interval
    return EvalSummary(
        run=report.run,
        headline=report.metrics.headline,
        value=report.metrics.headline_value,
        low=interval.low if interval else None,
        high=interval.high if interval else None,
        scored=report.scored,
        invalid_rate=report.metrics.values.get("invalid_rate"),
        cost_usd=report.usage.cost_usd,
    )


def _reference(db: Database, project_name: str, split: str | None) -> EvalSummary | None:
    with db.session() as session:
        project = get_project(session, project_name)
        numbers = _version_numbers(session, project.id)
        for run in _eval_runs(session, project.id):
            label = _run_label(run, numbers)
            if label.kind == LabelerKind.baseline.value and label.split == split:
                run_id = run.id
                break
        else:
            return None
    return _summary(run_report(db, project_name, run_id))


def list_evals(db: Database, project_name: str) -> list[EvalSummary]:
    """Every eval run of a project, newest first, with its headline metric, interval and cost."""
    with db.session() as session:
        project = get_project(session, project_name)
        ids = [run.id for run in _eval_runs(session, project.id)]
    summaries = []
    for run_id in ids:
        report = run_report(db, project_name, run_id)
        report.reference = None
        summaries.append(_summary(report))
    return summaries


# ---------------------------------------------------------------------------------------- comparing


def _text(spec: LabelSpec, data: dict[str, Any], width: int = 160) -> str:
    field = spec.span_field if spec.span_field and spec.span_field in data else None
    if field is None:
        field = next((k for k, v in data.items() if isinstance(v, str)), None)
    text = str(data.get(field, "")) if field else ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def compare_runs(
    db: Database, project_name: str, run_a: str | int, run_b: str | int, *, seed: int = 0
) -> Comparison:
    """Compare two runs on the items both labeled that have ground truth now."""
    id_a, id_b = resolve_run(db, project_name, run_a), resolve_run(db, project_name, run_b)
    if id_a == id_b:
        raise LabelpilotError(f"both sides are run {id_a}", hint="compare two different runs")
    name, spec, label_a, rows_a = _load(db, project_name, id_a)
    _, _, label_b, rows_b = _load(db, project_name, id_b)
    by_b = {r.task_id: r for r in rows_b}
    pairs = [(r, by_b[r.task_id]) for r in rows_a if r.task_id in by_b and r.gold is not None]
    if not pairs:
        raise NotFoundError(
            f"runs {id_a} and {id_b} have no item with ground truth in common",
            hint="evaluate both on the same ground truth (or split)",
        )
    gold = [a.gold for a, _ in pairs]
    values_a = [a.value for a, _ in pairs]
    values_b = [b.value for _, b in pairs]
    metrics_a = score(spec, gold, values_a, seed=seed)
    metrics_b = score(spec, gold, values_b, seed=seed)
    test = paired_test(spec, gold, values_a, values_b, seed=seed)
    to_wrong: list[FlippedItem] = []
    to_right: list[FlippedItem] = []
    changed = 0
    for (a, b), g in zip(pairs, gold, strict=True):
        if a.value != b.value:
            changed += 1
        right_a, right_b = item_correct(spec, g, a.value), item_correct(spec, g, b.value)
        if right_a != right_b:
            item = FlippedItem(
                task_id=a.task_id,
                external_id=a.external_id,
                text=_text(spec, a.data),
                gold=g,
                a=a.value,
                b=b.value,
            )
            (to_wrong if right_a else to_right).append(item)
    warnings = []
    if label_a.split != label_b.split:
        warnings.append(
            f"the runs were evaluated on different sets ({label_a.split or 'all ground truth'} vs "
            f"{label_b.split or 'all ground truth'}); only their {len(pairs):,} common items are compared"
        )
    return Comparison(
        project=name,
        a=label_a,
        b=label_b,
        common=len(pairs),
        metrics_a=metrics_a,
        metrics_b=metrics_b,
        deltas=metric_deltas(metrics_a, metrics_b),
        test=test,
        right_to_wrong=len(to_wrong),
        wrong_to_right=len(to_right),
        right_to_wrong_items=to_wrong[:FLIPS_SHOWN],
        wrong_to_right_items=to_right[:FLIPS_SHOWN],
        per_class=per_class_deltas(metrics_a, metrics_b),
        changed=changed,
        changed_rate=changed / len(pairs),
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------- errors


def _display(spec: LabelSpec, value: Any) -> str:
    if value is None:
        return "(no answer)"
    return ", ".join(labels_of(spec, value)) or spec.display(value)


def error_items(
    db: Database,
    project_name: str,
    run_ref: str | int,
    *,
    gold: str | None = None,
    predicted: str | None = None,
    limit: int = 50,
) -> ErrorPage:
    """List a run's wrong items, optionally only those with a gold label and/or a predicted label.

    Labels match case-insensitively against the item's label(s) (any of them for multiple choice and
    spans); `(no answer)` selects failed predictions.
    """
    run_id = resolve_run(db, project_name, run_ref)
    name, spec, label, rows = _load(db, project_name, run_id)
    wrong = [r for r in rows if r.gold is not None and not item_correct(spec, r.gold, r.value)]

    def labels(value: Any) -> set[str]:
        if value is None:
            return {"(no answer)"}
        return {x.casefold() for x in labels_of(spec, value)} or {spec.display(value).casefold()}

    def keep(row: _Row) -> bool:
        if gold is not None and gold.strip().casefold() not in labels(row.gold):
            return False
        return predicted is None or predicted.strip().casefold() in labels(row.value)

    matching = [r for r in wrong if keep(r)]
    pair_counts = Counter((_display(spec, r.gold), _display(spec, r.value)) for r in wrong)
    items = [
        ErrorItem(
            task_id=r.task_id,
            external_id=r.external_id,
            data=r.data,
            gold=r.gold,
            predicted=r.value,
            reasoning=r.reasoning,
            confidence=r.confidence,
            error_kind=r.error_kind,
            error_message=r.error_message,
        )
        for r in sorted(matching, key=lambda r: -(r.confidence or 0.0))[:limit]
    ]
    return ErrorPage(
        project=name,
        run=label,
        total_wrong=len(wrong),
        matching=len(matching),
        gold_filter=gold,
        predicted_filter=predicted,
        items=items,
        pairs=[(g, p, n) for (g, p), n in pair_counts.most_common(10)],
    )


# ---------------------------------------------------------------------------------------- sanity check


def gt_suspects(
    db: Database,
    project_name: str,
    *,
    min_runs: int = 2,
    min_confidence: float = 0.7,
    limit: int = 50,
) -> list[Suspect]:
    """Ground-truth items that at least `min_runs` evaluations (the newest of each labeler) got "wrong" with
    the same answer and, where they report one, high confidence: likely labeling mistakes to re-check.

    Items are ranked by how many runs agree, then by their mean confidence.
    """
    with db.session() as session:
        project = get_project(session, project_name)
        numbers = _version_numbers(session, project.id)
        newest: dict[str, int] = {}
        for run in _eval_runs(session, project.id):
            if run.status != RunStatus.finished.value:
                continue
            newest.setdefault(_run_label(run, numbers).name, run.id)
    if len(newest) < min_runs:
        return []
    answers: dict[int, list[tuple[Any, float | None]]] = defaultdict(list)
    info: dict[int, _Row] = {}
    spec: LabelSpec | None = None
    for run_id in newest.values():
        _, spec, _, rows = _load(db, project_name, run_id)
        for row in rows:
            if row.gold is None or not row.ok:
                continue
            info[row.task_id] = row
            answers[row.task_id].append((row.value, row.confidence))
    if spec is None:
        return []
    suspects: list[Suspect] = []
    for task_id, given in answers.items():
        row = info[task_id]
        wrong = [(v, c) for v, c in given if not item_correct(spec, row.gold, v)]
        if len(wrong) < min_runs:
            continue
        by_value: dict[str, list[tuple[Any, float | None]]] = defaultdict(list)
        for value, conf in wrong:
            by_value[_display(spec, value)].append((value, conf))
        top = max(by_value.values(), key=len)
        if len(top) < min_runs:
            continue
        confidences = [c for _, c in top if c is not None]
        mean = sum(confidences) / len(confidences) if confidences else None
        if mean is not None and mean < min_confidence:
            continue
        suspects.append(
            Suspect(
                task_id=task_id,
                external_id=row.external_id,
                text=_text(spec, row.data),
                gold=row.gold,
                suggested=top[0][0],
                runs_wrong=len(wrong),
                runs_agreeing=len(top),
                runs_total=len(given),
                mean_confidence=mean,
            )
        )
    suspects.sort(key=lambda s: (-s.runs_agreeing, -(s.mean_confidence or 0.0), s.task_id))
    return suspects[:limit]


EvalReport.model_rebuild()
