"""The prompt optimizer: new candidate prompts from a version's errors, chosen on dev, reported on test.

`improve(db, settings, project)` runs these steps and returns an `ImprovementReport`:

1. Splits: train (error mining, the few-shot pool), dev (choosing), test (the report). A project without
   splits gets them with the default ratios (said in the notes).
2. Errors: the base version labels the train split (up to `MAX_TRAIN_ITEMS`, a seeded stratified sample)
   through `LLMLabeler.label` — not stored as a run; the response cache makes a repeat free. From the
   answers: the most-confused class pairs and up to `MAX_ERROR_EXAMPLES` wrong items with the model's
   reasoning when the version asks for it.
3. Candidates: ONE writer call (a chat model that may be stronger than the labeling model) returns N
   rewritten instructions with a rationale each, validated like any prompt version (one repair request
   when none is usable). Few-shot variants (none / nearest k=4, 8 / label-diverse k=8) of the base and of
   the best rewrite on the first dev subset join them when an example store exists (`tools.examples`).
   The base version is always a candidate, so "keep the current prompt" is a possible outcome.
4. Successive halving on dev: every candidate labels a seeded stratified subset (25% of dev, at least
   `MIN_FIRST_ROUND` items); the better half (ties: fewer prompt tokens, then the base) goes on to a
   subset twice as large (a prefix-extension, so earlier answers count again) until one is left or dev is
   used up. Before each round the calls and dollars it needs (cache hits excluded) are checked against the
   budget, with the test evaluation reserved; a round that does not fit is not started and the report
   says so. Spending is counted from actual usage.
5. The winner is saved as a new version (parent = base, note = rationale + dev scores), then it and the
   base are evaluated on TEST through `evals.evaluate.evaluate` (stored eval runs) and compared with
   `compare_runs` (paired test, deltas, flips). Nothing is adopted: no setting changes; the report says
   how to use the new version. When the base wins, no version is created.

Every candidate answer is checked for few-shot leakage: an item must never be shown as its own example
(`ImprovementReport.leaks_checked`, `leaks`). `plan_improvement` computes the same schedule, call counts
and a USD low/high estimate before anything is sent. `preferences_to_instructions` turns stated
preferences into a new version's instructions (with the writer model, or verbatim without one).

Choices: candidates are labeled one after another (each labeler has its own rate controller, so running
them side by side would multiply the request rate); "calls" count answers that were not cache hits (a
repair or a retry inside one answer is not counted separately, nor is the one-time endpoint probe).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import httpx
import openai
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field
from sqlalchemy import select

from evals.evaluate import Comparison, EvalReport, compare_runs, evaluate
from evals.metrics import LOWER_IS_BETTER, item_correct, score
from tools.costs import PriceTable, price_requests
from tools.engine import JobProgress
from tools.errors import ConfigError, ErrorKind, LabelpilotError, ModelCallError, NotFoundError
from tools.groundtruth import current_labels, labels_of
from tools.labelers import LabelOutcome, TaskInput
from tools.labelspec import LabelSpec
from tools.llm import (
    CapabilityStore,
    ModelSettings,
    OutputMode,
    build_chat_model,
    is_configured,
    to_model_call_error,
    token_usage,
)
from tools.llm_labeler import DEFAULT_RATE_LIMITS, LLMLabeler
from tools.projects import get_project, require_spec
from tools.prompting import TOKENS_PER_MESSAGE, estimate_prompt_tokens, render_system_prompt, render_task
from tools.ratelimit import RateLimits
from tools.settings import Settings
from tools.splits import TRUST_WIDTH, assign_splits, interval_width, split_summary
from tools.storage import Database, Prediction, Task
from tools.versions import (
    FewShotKind,
    PromptConfig,
    VersionInfo,
    create_version,
    derive_config,
    derive_few_shot,
    few_shot_summary,
    get_version,
    normalize_config,
    validate_and_create,
    validate_config,
)

#: Train items the base version labels to find its errors (a seeded, label-stratified sample).
MAX_TRAIN_ITEMS = 200
#: Wrong train items shown to the writer.
MAX_ERROR_EXAMPLES = 8
#: Most-confused (gold, predicted) pairs shown to the writer.
TOP_CONFUSIONS = 5
#: The first halving round labels this share of dev, but at least MIN_FIRST_ROUND items.
FIRST_ROUND_SHARE = 0.25
MIN_FIRST_ROUND = 12
#: Few-shot policies tried on the base and on the best rewrite: (kind, k).
FEW_SHOT_VARIANTS: tuple[tuple[FewShotKind, int], ...] = (
    (FewShotKind.none, 0),
    (FewShotKind.nearest, 4),
    (FewShotKind.nearest, 8),
    (FewShotKind.label_diverse, 8),
)
WRITER_MAX_OUTPUT_TOKENS = 4096
WRITER_TIMEOUT_S = 180.0
#: In estimates, rewritten instructions may add up to this many tokens to every request.
REWRITE_ALLOWANCE_TOKENS = 400
#: Characters of each task field shown to the writer, and of instructions in excerpts.
FIELD_CHARS = 600
EXCERPT_CHARS = 160
NEEDS_MODEL = "rewriting instructions needs a model: set OPENAI_API_KEY or OPENAI_BASE_URL"
WRITER_MARKER = "You improve the instructions of an LLM that labels data."


# ---------------------------------------------------------------------------------------- results


class Stage(str, Enum):
    """Steps of an improvement run, in order."""

    splits = "splits"
    train = "train"
    writer = "writer"
    dev = "dev"
    test = "test"


class ImprovementProgress(BaseModel):
    """A progress report: the step, what is being done, and how far it got."""

    stage: Stage
    message: str
    round: int | None = None
    candidate: str | None = None
    done: int = 0
    total: int = 0


class RoundPlan(BaseModel):
    """One successive-halving round as planned: candidates, dev items, and the new calls it needs."""

    round: int
    candidates: int
    items: int
    new_calls: int


class ImprovementPlan(BaseModel):
    """What an improvement run will do and cost, computed before anything is sent."""

    project: str
    base_version: int
    model: str
    writer_model: str
    instruction_candidates: int
    few_shot_variants: int
    candidates_total: int = Field(description="Including the base version.")
    splits_exist: bool
    train_items: int = Field(description="Train items the base labels to find its errors.")
    dev_items: int
    test_items: int
    rounds: list[RoundPlan]
    calls: dict[str, int] = Field(description="Upper bounds per step: train, writer, dev, test.")
    total_calls: int
    minimum_calls: int = Field(description="Train, writer, the first round and the test evaluation.")
    usd_low: float | None
    usd_high: float | None
    minimum_usd: float | None = Field(description="High estimate of the minimum run.")
    max_calls: int | None
    budget_usd: float | None
    fits_budget: bool = Field(description="Whether the whole schedule fits the budget (else it stops early).")
    notes: list[str] = Field(default_factory=list)


class CandidateOrigin(str, Enum):
    """Where a candidate came from."""

    base = "base"
    rewrite = "rewrite"
    few_shot = "few_shot"


class RoundScore(BaseModel):
    """A candidate's score on one round's dev subset."""

    round: int
    items: int
    headline: str
    value: float | None
    correct: int
    calls: int = Field(description="Requests sent in this round (cache hits excluded).")
    cost_usd: float | None


class CandidateResult(BaseModel):
    """One candidate: what it is, why, and how it scored round by round."""

    name: str
    origin: CandidateOrigin
    instructions_excerpt: str
    instructions: str
    few_shot: str
    rationale: str
    prompt_tokens: int = Field(description="Estimated input tokens per request.")
    rounds: list[RoundScore] = Field(default_factory=list)
    eliminated_in_round: int | None = None
    calls: int = 0
    cost_usd: float | None = 0.0


class RoundSummary(BaseModel):
    """One successive-halving round: its dev subset size and the candidates best first."""

    round: int
    items: int
    ranking: list[str]
    kept: list[str]


class ConfusedPair(BaseModel):
    """A (gold, predicted) cell of the confusion matrix and how often it occurred."""

    gold: str
    predicted: str
    count: int


class ErrorExample(BaseModel):
    """A wrong train answer as the writer sees it."""

    external_id: str
    fields: dict[str, str]
    gold: Any
    predicted: Any
    reasoning: str | None = None


class TrainAnalysis(BaseModel):
    """The base version's answers on train: score, errors, confusions, examples for the writer."""

    items: int
    headline: str
    value: float | None
    errors: int
    top_confusions: list[ConfusedPair]
    examples: list[ErrorExample]


class BudgetUse(BaseModel):
    """What the run spent and whether the budget stopped it."""

    calls: int
    usd: float | None
    max_calls: int | None
    budget_usd: float | None
    stopped_early: bool = False
    reason: str | None = None


class ImprovementReport(BaseModel):
    """The result of `improve` (JSON-able)."""

    project: str
    base_version: int
    plan: ImprovementPlan
    train: TrainAnalysis | None
    writer_model: str
    candidates: list[CandidateResult]
    rounds: list[RoundSummary]
    winner: str
    winner_is_base: bool
    new_version: int | None
    comparison: Comparison | None
    test_reports: dict[str, EvalReport] = Field(default_factory=dict)
    budget: BudgetUse
    few_shot: str = Field(description="How few-shot candidates were built, or why they were skipped.")
    leaks_checked: bool = Field(
        description="Every candidate answer was checked: no item was its own example."
    )
    leaks: list[str] = Field(default_factory=list)
    answers_checked: int = Field(default=0, description="Candidate answers checked for leaks.")
    answers_with_examples: int = Field(default=0, description="Of those, answers that showed examples.")
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    message: str


ProgressFn = Callable[[ImprovementProgress], None]


# ---------------------------------------------------------------------------------------- context


@dataclass
class _Item:
    task: TaskInput
    gold: Any


@dataclass
class _Context:
    db: Database
    settings: Settings
    project: str
    spec: LabelSpec
    base: VersionInfo
    fields: list[str]
    store: CapabilityStore
    prices: PriceTable
    rate_limits: RateLimits
    http_async_client: httpx.AsyncClient | None
    model: str
    #: Estimated tokens of a request without its system prompt (task message, schema), and of one example.
    task_tokens: int = 0
    example_tokens: int = 0
    output_tokens: tuple[int, int] = (1, 1)
    #: Why few-shot candidates are skipped (None: they are built), and what the example source says.
    few_shot_note: str | None = None
    few_shot_notes: list[str] = field(default_factory=list)


def _load_context(
    db: Database,
    settings: Settings,
    project: str,
    *,
    base_version: int | None,
    http_async_client: httpx.AsyncClient | None,
    rate_limits: RateLimits | None,
) -> _Context:
    from tools.exporters import read_columns

    with db.session() as session:
        row = get_project(session, project)
        spec = require_spec(row)
        name = row.name
        fields = [key for _, key in read_columns(session, row.id, predictions=False).data]
    base = get_version(db, name, base_version)
    model = ModelSettings.from_settings(settings, model=base.model or None, params=base.params).model
    return _Context(
        db=db,
        settings=settings,
        project=name,
        spec=spec,
        base=base,
        fields=fields,
        store=CapabilityStore.for_settings(settings),
        prices=PriceTable.load(settings),
        rate_limits=rate_limits or DEFAULT_RATE_LIMITS,
        http_async_client=http_async_client,
        model=model,
    )


def _draft(config: PromptConfig, note: str = "candidate (not stored)") -> VersionInfo:
    """A candidate as an unsaved version: labelers need a VersionInfo; id 0 and number 0 mark it unsaved."""
    return VersionInfo(id=0, number=0, note=note, created_at=datetime.now(UTC), **config.model_dump())


def candidate_labeler(ctx: _Context, version: VersionInfo) -> tuple[LLMLabeler | None, str | None]:
    """Build the labeler of a candidate or stored version — the one place optimizer labelers are made.

    Few-shot examples come from `tools.examples.examples_for_version` (the train split is the pool when
    splits exist; an item is never its own example). Returns (None, why) when the version needs examples
    and none can be chosen (the module is missing, or the project has no example store).
    """
    model_settings = ModelSettings.from_settings(
        ctx.settings, model=version.model or None, params=version.params
    )
    examples_for: Any = None
    if version.few_shot.kind is not FewShotKind.none:
        try:
            from tools.examples import examples_for_version
        except ImportError:
            return None, "few-shot selection (tools.examples) is not available in this installation"
        try:
            examples_for = examples_for_version(
                ctx.db, ctx.settings, ctx.project, version, model=model_settings.model
            )
        except LabelpilotError as exc:
            return None, f"few-shot examples cannot be chosen: {exc.message}"
        if examples_for is None:
            return None, "the project has no example store (no verified examples to show)"
    identity = getattr(examples_for, "identity", None)
    labeler = LLMLabeler(
        ctx.settings,
        ctx.spec,
        version,
        model_settings=model_settings,
        rate_limits=ctx.rate_limits,
        capability_store=ctx.store,
        db=ctx.db,
        http_async_client=ctx.http_async_client,
        examples_for=examples_for,
        prices=ctx.prices,
        # The example pool's fingerprint joins the identity, so a test evaluation with other examples is
        # another job (as `labelpilot label` does).
        identity_extra=identity() if callable(identity) else None,
    )
    return labeler, None


# ---------------------------------------------------------------------------------------- splits and items


def _gt_items(ctx: _Context) -> dict[str, list[_Item]]:
    """Ground-truth items per split (tasks without a split are left out)."""
    with ctx.db.session() as session:
        project_id = get_project(session, ctx.project).id
        labels = current_labels(session, project_id)
        rows = session.execute(
            select(Task.id, Task.external_id, Task.data, Task.content_hash, Task.meta)
            .where(Task.id.in_(list(labels)))
            .order_by(Task.id)
        ).all()
    found: dict[str, list[_Item]] = {"train": [], "dev": [], "test": []}
    for row in rows:
        split = (row.meta or {}).get("split")
        if split in found:
            task = TaskInput(
                task_id=row.id,
                external_id=row.external_id,
                data=dict(row.data),
                content_hash=row.content_hash,
            )
            found[split].append(_Item(task=task, gold=labels[row.id]))
    return found


def _has_splits(db: Database, project: str) -> bool:
    with db.session() as session:
        project_id = get_project(session, project).id
        labels = current_labels(session, project_id)
        metas = session.scalars(select(Task.meta).where(Task.id.in_(list(labels)))).all()
    return any((meta or {}).get("split") for meta in metas)


def _stratified(spec: LabelSpec, items: Sequence[_Item], seed: int) -> list[_Item]:
    """Order items so every prefix is stratified by label: seeded order within a label, labels in turn."""
    strata: dict[str, list[_Item]] = defaultdict(list)
    for item in items:
        strata["|".join(sorted(labels_of(spec, item.gold))) or "*"].append(item)
    queues = []
    for key in sorted(strata):
        members = strata[key]
        members.sort(key=lambda i: hashlib.sha256(f"{seed}:{i.task.external_id}".encode()).hexdigest())
        queues.append(members)
    ordered: list[_Item] = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def halving_schedule(dev_items: int, candidates: int) -> list[tuple[int, int]]:
    """Return (candidates, items) per successive-halving round for `candidates` on `dev_items` dev items."""
    if dev_items <= 0 or candidates <= 1:
        return []
    size = min(dev_items, max(MIN_FIRST_ROUND, math.ceil(FIRST_ROUND_SHARE * dev_items)))
    alive = candidates
    rounds = [(alive, size)]
    while alive > 1 and size < dev_items:
        alive = math.ceil(alive / 2)
        if alive == 1:
            break
        size = min(dev_items, size * 2)
        rounds.append((alive, size))
    return rounds


# ---------------------------------------------------------------------------------------- estimates


def _tokens(text: str, model: str) -> int:
    return estimate_prompt_tokens([SystemMessage(content=text)], model) - TOKENS_PER_MESSAGE


def _system_tokens(ctx: _Context, config: PromptConfig) -> int:
    return _tokens(render_system_prompt(ctx.spec, config, mode=OutputMode.json_schema), ctx.model)


def _measure(ctx: _Context, sample: Sequence[_Item]) -> None:
    """Measure the base's request size on a sample: task part, one few-shot example, output range."""
    if not sample:
        return
    estimator = LLMLabeler(
        ctx.settings,
        ctx.spec,
        ctx.base,
        model_settings=ModelSettings.from_settings(ctx.settings, model=ctx.model, params=ctx.base.params),
        capability_store=ctx.store,
        prices=ctx.prices,
    )
    sizes = [estimator.prompt_size(item.task).tokens for item in sample]
    system = _system_tokens(ctx, ctx.base)
    ctx.task_tokens = max(1, round(sum(sizes) / len(sizes)) - system)
    ctx.output_tokens = estimator.output_token_range()
    messages = []
    for item in sample:
        try:
            messages.append(render_task(ctx.spec, ctx.base, item.task.data))
        except LabelpilotError:
            continue
    per_task = sum(_tokens(m, ctx.model) for m in messages) / max(1, len(messages))
    ctx.example_tokens = round(per_task) + ctx.output_tokens[1] + 2 * TOKENS_PER_MESSAGE


def _prompt_tokens(ctx: _Context, config: PromptConfig) -> int:
    """Estimated input tokens of one request of `config` (few-shot examples at the measured size)."""
    shots = config.few_shot.k if config.few_shot.kind not in (FewShotKind.none, FewShotKind.fixed) else 0
    if config.few_shot.kind is FewShotKind.fixed:
        shots = len(config.few_shot.example_ids)
    return ctx.task_tokens + _system_tokens(ctx, config) + shots * ctx.example_tokens


def _usd(
    ctx: _Context, model: str, calls: int, tokens: int, output: tuple[int, int]
) -> tuple[float, float] | None:
    price, low, high = price_requests(
        model=model,
        prices=ctx.prices,
        requests=calls,
        input_tokens_per_request=tokens,
        static_prefix_tokens=0,
        output_tokens=output,
    )
    if price is None or low is None or high is None:
        return None
    return low, high


def _writer_model_name(ctx: _Context, writer_model: str | None) -> str:
    return writer_model or ctx.settings.writer_model or ctx.model


def _writer_tokens(ctx: _Context, candidates: int) -> tuple[int, tuple[int, int]]:
    instructions = _tokens(ctx.base.instructions, ctx.model)
    prompt = 900 + _system_tokens(ctx, ctx.base) + MAX_ERROR_EXAMPLES * (ctx.task_tokens + 80)
    high = min(WRITER_MAX_OUTPUT_TOKENS, candidates * (2 * instructions + REWRITE_ALLOWANCE_TOKENS // 2 + 80))
    return prompt, (max(1, high // 3), high)


def _few_shot_variants(config: PromptConfig) -> list[PromptConfig]:
    """The few-shot variants of `config` that differ from it."""
    variants: list[PromptConfig] = []
    for kind, k in FEW_SHOT_VARIANTS:
        policy = derive_few_shot(config.few_shot, kind=kind, k=k or None)
        variant = derive_config(config, few_shot=policy)
        if variant != derive_config(config) and variant not in variants:
            variants.append(variant)
    return variants


def _few_shot_available(ctx: _Context) -> tuple[str | None, list[str]]:
    """(None, notes of the example source) when few-shot candidates can be built, else (why not, [])."""
    probe = _draft(
        derive_config(ctx.base, few_shot=derive_few_shot(ctx.base.few_shot, kind=FewShotKind.nearest, k=4))
    )
    labeler, why = candidate_labeler(ctx, probe)
    if labeler is None:
        return why, []
    return None, list(getattr(labeler.examples_for, "notes", []))


def _uncached(labeler: LLMLabeler, tasks: Sequence[TaskInput]) -> int:
    return len(tasks) - len(labeler.cached_task_ids(tasks)) if tasks else 0


def _plan(
    ctx: _Context,
    items: dict[str, list[_Item]],
    *,
    splits_exist: bool,
    candidates: int,
    budget_usd: float | None,
    max_calls: int | None,
    writer_model: str | None,
    seed: int,
    few_shot_ok: bool,
) -> ImprovementPlan:
    notes: list[str] = []
    train = _stratified(ctx.spec, items["train"], seed)[:MAX_TRAIN_ITEMS]
    dev, test = items["dev"], items["test"]
    _measure(ctx, (dev or train or test)[:20])
    base_labeler, why = candidate_labeler(ctx, ctx.base)
    if base_labeler is None:
        raise ConfigError(
            f"v{ctx.base.number} uses few-shot examples ({few_shot_summary(ctx.base.few_shot)}), but {why}",
            hint="improve a version without few-shot examples, or set up the example store first",
        )
    fs_per_parent = len(_few_shot_variants(ctx.base)) if few_shot_ok else 0
    fs_total = fs_per_parent * (2 if candidates > 0 else 1)
    total = 1 + candidates + fs_total
    schedule = halving_schedule(len(dev), total)
    rounds: list[RoundPlan] = []
    previous = 0
    for number, (alive, size) in enumerate(schedule, start=1):
        rounds.append(
            RoundPlan(round=number, candidates=alive, items=size, new_calls=alive * (size - previous))
        )
        previous = size
    train_calls = _uncached(base_labeler, [i.task for i in train])
    base_test = _uncached(base_labeler, [i.task for i in test])
    calls = {
        "train": train_calls,
        "writer": 1 if candidates > 0 else 0,
        "dev": sum(r.new_calls for r in rounds),
        "test": (len(test) + base_test) if rounds else 0,
    }
    total_calls = sum(calls.values())
    minimum_calls = calls["train"] + calls["writer"] + (rounds[0].new_calls if rounds else 0) + calls["test"]
    writer_name = _writer_model_name(ctx, writer_model)
    base_tokens = _prompt_tokens(ctx, ctx.base)
    largest_k = max((k for _, k in FEW_SHOT_VARIANTS), default=0) if few_shot_ok else 0
    widest = base_tokens + REWRITE_ALLOWANCE_TOKENS + largest_k * ctx.example_tokens
    per_call_low = _usd(ctx, ctx.model, 1, base_tokens, ctx.output_tokens)
    per_call_high = _usd(ctx, ctx.model, 1, widest, ctx.output_tokens)
    writer_prompt, writer_output = _writer_tokens(ctx, max(candidates, 1))
    writer_usd = (
        _usd(ctx, writer_name, calls["writer"], writer_prompt, writer_output)
        if calls["writer"]
        else (0.0, 0.0)
    )
    usd_low = usd_high = minimum_usd = None
    if per_call_low is not None and per_call_high is not None and writer_usd is not None:
        labeled = calls["train"] + calls["dev"] + calls["test"]
        usd_low = round(labeled * per_call_low[0] + writer_usd[0], 6)
        usd_high = round(
            (calls["train"] + base_test) * per_call_low[1]
            + (calls["dev"] + calls["test"] - base_test) * per_call_high[1]
            + writer_usd[1],
            6,
        )
        minimum_usd = round(
            (calls["train"] + base_test) * per_call_low[1]
            + (minimum_calls - calls["train"] - calls["writer"] - base_test) * per_call_high[1]
            + writer_usd[1],
            6,
        )
    else:
        for model in dict.fromkeys([ctx.model, writer_name]):
            note = ctx.prices.note_for(model)
            if note:
                notes.append(note)
    if not splits_exist:
        notes.append(
            "the project has no splits yet: they will be assigned with the default ratios 0.6/0.2/0.2 "
            "(the sizes above are estimates)"
        )
    if len(items["train"]) > MAX_TRAIN_ITEMS:
        notes.append(f"errors are mined on a stratified sample of {MAX_TRAIN_ITEMS} of the train items")
    if not few_shot_ok:
        notes.append(f"few-shot candidates are skipped: {ctx.few_shot_note}")
    if not rounds:
        notes.append("nothing to choose between: only the base version is a candidate")
    fits = True
    if max_calls is not None and total_calls > max_calls:
        fits = False
    if budget_usd is not None and (usd_high is None or usd_high > budget_usd):
        fits = False
    return ImprovementPlan(
        project=ctx.project,
        base_version=ctx.base.number,
        model=ctx.model,
        writer_model=writer_name,
        instruction_candidates=candidates,
        few_shot_variants=fs_total,
        candidates_total=total,
        splits_exist=splits_exist,
        train_items=len(train),
        dev_items=len(dev),
        test_items=len(test),
        rounds=rounds,
        calls=calls,
        total_calls=total_calls,
        minimum_calls=minimum_calls,
        usd_low=usd_low,
        usd_high=usd_high,
        minimum_usd=minimum_usd,
        max_calls=max_calls,
        budget_usd=budget_usd,
        fits_budget=fits,
        notes=notes,
    )


def _estimated_items(db: Database, project: str) -> dict[str, list[_Item]]:
    """Split sizes the default ratios would give (for a plan made before splits exist): placeholder items."""
    from tools.splits import DEFAULT_RATIOS

    with db.session() as session:
        project_id = get_project(session, project).id
        labels = current_labels(session, project_id)
        rows = session.execute(
            select(Task.id, Task.external_id, Task.data, Task.content_hash).where(Task.id.in_(list(labels)))
        ).all()
    items = [
        _Item(
            task=TaskInput(
                task_id=r.id, external_id=r.external_id, data=dict(r.data), content_hash=r.content_hash
            ),
            gold=labels[r.id],
        )
        for r in rows
    ]
    n_train = round(DEFAULT_RATIOS[0] * len(items))
    n_dev = round(DEFAULT_RATIOS[1] * len(items))
    return {
        "train": items[:n_train],
        "dev": items[n_train : n_train + n_dev],
        "test": items[n_train + n_dev :],
    }


def _prepare(
    db: Database,
    settings: Settings,
    project: str,
    *,
    base_version: int | None,
    http_async_client: httpx.AsyncClient | None,
    rate_limits: RateLimits | None,
) -> _Context:
    if not is_configured(settings):
        raise ConfigError(
            NEEDS_MODEL, hint="without a model, `labelpilot improve` tunes the offline baseline"
        )
    ctx = _load_context(
        db,
        settings,
        project,
        base_version=base_version,
        http_async_client=http_async_client,
        rate_limits=rate_limits,
    )
    with db.session() as session:
        if not current_labels(session, get_project(session, ctx.project).id):
            raise NotFoundError(
                f"project '{ctx.project}' has no ground truth to improve a prompt on",
                hint="label some items first: labelpilot gt label (or import a file with --label)",
            )
    return ctx


def _probe_few_shot(ctx: _Context, wanted: bool) -> None:
    if not wanted:
        ctx.few_shot_note = "not asked for"
        return
    ctx.few_shot_note, ctx.few_shot_notes = _few_shot_available(ctx)


def _check_budget_args(candidates: int, budget_usd: float | None, max_calls: int | None) -> None:
    if candidates < 0:
        raise ConfigError(f"--candidates must be 0 or more, not {candidates}")
    if max_calls is not None and max_calls < 1:
        raise ConfigError(f"the call budget must be at least 1, not {max_calls}")
    if budget_usd is not None and budget_usd <= 0:
        raise ConfigError(f"the dollar budget must be more than 0, not {budget_usd}")


def plan_improvement(
    db: Database,
    settings: Settings,
    project: str,
    *,
    base_version: int | None = None,
    candidates: int = 4,
    budget_usd: float | None = None,
    max_calls: int | None = None,
    writer_model: str | None = None,
    seed: int = 0,
    few_shot: bool = True,
    rate_limits: RateLimits | None = None,
) -> ImprovementPlan:
    """Plan an improvement run without sending anything: candidates, halving rounds, calls and USD.

    The arguments are `improve`'s. Syncs the example store when few-shot variants are planned.
    """
    _check_budget_args(candidates, budget_usd, max_calls)
    ctx = _prepare(
        db, settings, project, base_version=base_version, http_async_client=None, rate_limits=rate_limits
    )
    _probe_few_shot(ctx, few_shot)
    exists = _has_splits(db, ctx.project)
    items = _gt_items(ctx) if exists else _estimated_items(db, ctx.project)
    return _plan(
        ctx,
        items,
        splits_exist=exists,
        candidates=candidates,
        budget_usd=budget_usd,
        max_calls=max_calls,
        writer_model=writer_model,
        seed=seed,
        few_shot_ok=ctx.few_shot_note is None,
    )


# ---------------------------------------------------------------------------------------- budget


@dataclass
class _Budget:
    max_calls: int | None
    max_usd: float | None
    calls: int = 0
    usd: float = 0.0
    usd_known: bool = True
    stopped: str | None = None

    def spend(self, calls: int, usd: float | None) -> None:
        self.calls += calls
        if usd is None:
            self.usd_known = self.usd_known and calls == 0
        else:
            self.usd += usd

    def refuses(
        self, calls: int, usd: float | None, *, reserve_calls: int = 0, reserve_usd: float = 0.0
    ) -> str | None:
        """Why spending `calls` / `usd` now (keeping the reserve) would break the budget, or None."""
        if self.max_calls is not None and self.calls + calls + reserve_calls > self.max_calls:
            return (
                f"it needs {calls:,} more call(s) (plus {reserve_calls:,} kept for the steps after it), and "
                f"{self.calls:,} of the {self.max_calls:,} allowed are used"
            )
        if self.max_usd is not None:
            if usd is None:
                return "its cost cannot be estimated (no price for the model)"
            if self.usd + usd + reserve_usd > self.max_usd:
                return (
                    f"it may cost up to ${usd:,.4f} (plus ${reserve_usd:,.4f} kept for the steps after it), and "
                    f"${self.usd:,.4f} of the ${self.max_usd:,.4f} budget is used"
                )
        return None

    def use(self) -> BudgetUse:
        return BudgetUse(
            calls=self.calls,
            usd=round(self.usd, 6) if self.usd_known else None,
            max_calls=self.max_calls,
            budget_usd=self.max_usd,
            stopped_early=self.stopped is not None,
            reason=self.stopped,
        )


# ---------------------------------------------------------------------------------------- candidates


@dataclass
class _Candidate:
    name: str
    origin: CandidateOrigin
    config: PromptConfig
    rationale: str
    labeler: LLMLabeler
    prompt_tokens: int
    usd_per_call: float | None
    order: int
    outcomes: dict[int, LabelOutcome] = field(default_factory=dict)
    #: What the report shows of it, filled round by round.
    report: CandidateResult = field(init=False)

    def __post_init__(self) -> None:
        self.report = CandidateResult(
            name=self.name,
            origin=self.origin,
            instructions_excerpt=_excerpt(self.config.instructions),
            instructions=self.config.instructions,
            few_shot=few_shot_summary(self.config.few_shot),
            rationale=self.rationale,
            prompt_tokens=self.prompt_tokens,
        )

    def last(self) -> RoundScore | None:
        return self.report.rounds[-1] if self.report.rounds else None


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


class _Run:
    """The state of one improvement run: context, items, budget, candidates, leak checks, progress."""

    def __init__(
        self, ctx: _Context, items: dict[str, list[_Item]], budget: _Budget, progress: ProgressFn | None
    ) -> None:
        self.ctx = ctx
        self.items = items
        self.budget = budget
        self.progress = progress
        self.external = {
            item.task.task_id: item.task.external_id for split in items.values() for item in split
        }
        self.held_out = {
            key
            for split in ("dev", "test")
            for item in items[split]
            for key in (str(item.task.task_id), item.task.external_id)
        }
        self.leaks: list[str] = []
        self.held_out_examples = 0
        self.with_examples = 0
        self.checked = 0
        self.candidates: list[_Candidate] = []
        self.skipped: list[str] = []

    def tell(self, stage: Stage, message: str, **extra: Any) -> None:
        if self.progress is not None:
            self.progress(ImprovementProgress(stage=stage, message=message, **extra))

    def check_leaks(self, name: str, task_id: int, examples: Sequence[Any] | None) -> bool:
        """Record whether an answer showed the item itself (or a dev/test item) as an example."""
        self.checked += 1
        if not examples:
            return True
        self.with_examples += 1
        shown = {str(e) for e in examples}
        own = {str(task_id), self.external.get(task_id, "")}
        if shown & own:
            self.leaks.append(
                f"{name}: item {self.external.get(task_id, task_id)} was shown as its own example"
            )
            return False
        if shown & self.held_out:
            self.held_out_examples += 1
        return True

    def add(
        self,
        name: str,
        origin: CandidateOrigin,
        config: PromptConfig,
        rationale: str,
        *,
        version: VersionInfo | None = None,
    ) -> _Candidate | None:
        """Make a candidate (None, noted in `skipped`, when its few-shot examples cannot be chosen)."""
        labeler, why = candidate_labeler(self.ctx, version or _draft(config))
        if labeler is None:
            self.skipped.append(f"{name}: {why}")
            return None
        tokens = _prompt_tokens(self.ctx, config)
        usd = _usd(self.ctx, labeler.model_name, 1, tokens, self.ctx.output_tokens)
        candidate = _Candidate(
            name=name,
            origin=origin,
            config=config,
            rationale=rationale,
            labeler=labeler,
            prompt_tokens=tokens,
            usd_per_call=usd[1] if usd is not None else None,
            order=len(self.candidates),
        )
        self.candidates.append(candidate)
        return candidate

    def need(self, candidates: Sequence[_Candidate], items: Sequence[_Item]) -> tuple[int, float | None]:
        """Calls and high USD estimate to label `items` with each candidate (answers known or cached are free)."""
        calls, usd = 0, 0.0
        known = True
        for candidate in candidates:
            todo = [i.task for i in items if i.task.task_id not in candidate.outcomes]
            count = _uncached(candidate.labeler, todo)
            calls += count
            if candidate.usd_per_call is None:
                known = known and count == 0
            else:
                usd += count * candidate.usd_per_call
        return calls, (usd if known else None)

    async def label(self, candidate: _Candidate, items: Sequence[_Item], *, round_number: int) -> RoundScore:
        """Label the items `candidate` has not answered yet and score it on all of `items`."""
        todo = [i.task for i in items if i.task.task_id not in candidate.outcomes]
        calls, cost, cost_known, done = 0, 0.0, True, 0
        self.tell(
            Stage.dev,
            f"round {round_number}: {candidate.name}",
            round=round_number,
            candidate=candidate.name,
            total=len(todo),
        )
        async for outcome in candidate.labeler.label(todo):
            done += 1
            if not self.check_leaks(candidate.name, outcome.task_id, outcome.examples):
                outcome = outcome.model_copy(update={"value": None})
            candidate.outcomes[outcome.task_id] = outcome
            if not outcome.from_cache:
                calls += 1
                if outcome.cost_usd is None and outcome.ok:
                    cost_known = False
                cost += outcome.cost_usd or 0.0
            self.tell(
                Stage.dev,
                f"round {round_number}: {candidate.name}",
                round=round_number,
                candidate=candidate.name,
                done=done,
                total=len(todo),
            )
        self.budget.spend(calls, cost if cost_known else None)
        report = candidate.report
        report.calls += calls
        report.cost_usd = None if (report.cost_usd is None or not cost_known) else report.cost_usd + cost
        spec = self.ctx.spec
        gold = [i.gold for i in items]
        predicted = [_value(candidate.outcomes.get(i.task.task_id)) for i in items]
        metrics = score(spec, gold, predicted)
        result = RoundScore(
            round=round_number,
            items=len(items),
            headline=metrics.headline,
            value=metrics.headline_value,
            correct=sum(item_correct(spec, g, p) for g, p in zip(gold, predicted, strict=True)),
            calls=calls,
            cost_usd=round(cost, 6) if cost_known else None,
        )
        report.rounds.append(result)
        return result


def _value(outcome: LabelOutcome | None) -> Any:
    return outcome.value if outcome is not None and outcome.ok else None


def _rank_key(candidate: _Candidate) -> tuple[float, int, int, int]:
    """Better first: the last round's headline (direction-aware), fewer prompt tokens, the base, order."""
    last = candidate.last()
    value = last.value if last is not None else None
    if value is None:
        merit = math.inf
    else:
        merit = value if last is not None and last.headline in LOWER_IS_BETTER else -value
    base_first = 0 if candidate.origin is CandidateOrigin.base else 1
    return merit, candidate.prompt_tokens, base_first, candidate.order


# ---------------------------------------------------------------------------------------- train errors


def _field_texts(ctx: _Context, data: Mapping[str, Any]) -> dict[str, str]:
    names = list(ctx.spec.input_fields) or [k for k, v in data.items() if isinstance(v, str)]
    shown: dict[str, str] = {}
    for name in names:
        if name not in data:
            continue
        value = data[name]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        shown[name] = text if len(text) <= FIELD_CHARS else text[: FIELD_CHARS - 1] + "…"
    return shown


def _analyse(ctx: _Context, items: Sequence[_Item], outcomes: Mapping[int, LabelOutcome]) -> TrainAnalysis:
    spec = ctx.spec
    gold = [i.gold for i in items]
    predicted = [_value(outcomes.get(i.task.task_id)) for i in items]
    metrics = score(spec, gold, predicted)
    pairs = metrics.confusion.top_confusions(TOP_CONFUSIONS) if metrics.confusion is not None else []
    wrong = [
        (item, p) for item, g, p in zip(items, gold, predicted, strict=True) if not item_correct(spec, g, p)
    ]

    def pair_of(item: _Item, value: Any) -> tuple[str, str]:
        return (", ".join(labels_of(spec, item.gold)), ", ".join(labels_of(spec, value)) or "(no answer)")

    chosen: list[tuple[_Item, Any]] = []
    for gold_label, predicted_label, _ in pairs:
        matching = [(i, p) for i, p in wrong if pair_of(i, p) == (gold_label, predicted_label)]
        chosen += matching[:2]
    chosen += [w for w in wrong if w not in chosen]
    examples = [
        ErrorExample(
            external_id=item.task.external_id,
            fields=_field_texts(ctx, item.task.data),
            gold=item.gold,
            predicted=value,
            reasoning=(outcomes[item.task.task_id].reasoning if item.task.task_id in outcomes else None),
        )
        for item, value in chosen[:MAX_ERROR_EXAMPLES]
    ]
    return TrainAnalysis(
        items=len(items),
        headline=metrics.headline,
        value=metrics.headline_value,
        errors=len(wrong),
        top_confusions=[ConfusedPair(gold=g, predicted=p, count=n) for g, p, n in pairs],
        examples=examples,
    )


# ---------------------------------------------------------------------------------------- the writer


def _writer_chat_model(ctx: _Context, name: str) -> BaseChatModel:
    ms = ModelSettings.from_settings(ctx.settings, model=name).model_copy(
        update={"max_output_tokens": WRITER_MAX_OUTPUT_TOKENS, "timeout_s": WRITER_TIMEOUT_S}
    )
    # The SDK's own retries are fine here: one call, no job-wide pacing to conflict with.
    return build_chat_model(ms, http_async_client=ctx.http_async_client, max_retries=2)


def _labels_text(ctx: _Context, config: PromptConfig) -> str:
    spec = ctx.spec
    if not spec.classes:
        return f"The task type is {spec.type.value}; there is no list of labels."
    lines = [f"The task type is {spec.type.value}. The labels:"]
    for label in spec.classes:
        description = config.label_descriptions.get(label.name) or label.description
        lines.append(f"- {label.name}" + (f": {description}" if description else ""))
    return "\n".join(lines)


def _rules(ctx: _Context) -> str:
    names = ", ".join("{" + f + "}" for f in ctx.fields) or "(none)"
    return (
        "Rules for instructions:\n"
        "- Write complete instructions that replace the current ones, in the same language.\n"
        "- Do not describe the output format or JSON: the application adds it, and the label list.\n"
        f"- To refer to a task field write its name in braces; the fields are: {names}. Write {{{{ and }}}} "
        "for literal braces.\n"
        "- Do not copy the example items into the instructions; state general rules instead."
    )


def _rewrite_request(ctx: _Context, analysis: TrainAnalysis, candidates: int) -> list[BaseMessage]:
    system = (
        f"{WRITER_MARKER} You read its current instructions, the label schema and the mistakes it made on "
        f"items a person labeled, and you write {candidates} different improved versions of the instructions "
        "that would avoid those mistakes (for example: sharper definitions of the confused labels, decision "
        "rules for borderline cases, what to ignore).\n\n"
        f"{_rules(ctx)}\n\n"
        'Reply with one JSON object and nothing else: {"candidates": [{"instructions": "...", "rationale": '
        '"one or two sentences: what changed and which mistakes it targets"}, ...]}'
    )
    lines = [
        "Current instructions:",
        "<<<",
        ctx.base.instructions,
        ">>>",
        "",
        _labels_text(ctx, ctx.base),
        "",
        f"On {analysis.items} labeled items the current instructions scored {analysis.headline} "
        f"{'-' if analysis.value is None else f'{analysis.value:.3f}'} with {analysis.errors} wrong answer(s).",
    ]
    if analysis.top_confusions:
        lines.append("Most frequent confusions (gold → answered, count):")
        lines += [f"- {p.gold} → {p.predicted}: {p.count}" for p in analysis.top_confusions]
    if analysis.examples:
        lines.append("")
        lines.append("Wrong answers:")
        for number, example in enumerate(analysis.examples, start=1):
            lines.append(f"Example {number}:")
            lines += [f"  {name}: {text}" for name, text in example.fields.items()]
            lines.append(f"  correct label: {json.dumps(example.gold, ensure_ascii=False)}")
            lines.append(f"  model's answer: {json.dumps(example.predicted, ensure_ascii=False)}")
            if example.reasoning:
                lines.append(f"  model's reasoning: {example.reasoning}")
    lines.append("")
    lines.append(f"Write {candidates} candidate(s) as JSON.")
    return [SystemMessage(content=system), HumanMessage(content="\n".join(lines))]


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def _json_object(text: str) -> dict[str, Any]:
    """Parse the JSON object of a writer reply (code fences and text around it tolerated)."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the reply holds no JSON object")
    data = json.loads(body[start : end + 1])
    if not isinstance(data, dict):
        raise ValueError("the reply is not a JSON object")
    return data


async def _writer_call(
    ctx: _Context, run: _Run | None, model: BaseChatModel, name: str, messages: Sequence[BaseMessage]
) -> AIMessage:
    """Send one writer request (JSON mode); count it in the run's budget; SDK failures become ModelCallError."""
    try:
        reply = await model.ainvoke(list(messages), response_format={"type": "json_object"})
    except (openai.OpenAIError, httpx.HTTPError) as exc:
        raise to_model_call_error(exc) from exc
    if run is not None:
        run.budget.spend(
            1, ctx.prices.cost(name, *token_usage(reply)) if isinstance(reply, AIMessage) else None
        )
    if not isinstance(reply, AIMessage):
        raise ModelCallError("the writer's reply is not a chat message", kind=ErrorKind.server_error)
    if reply.response_metadata.get("finish_reason") == "length":
        raise ModelCallError(
            "the writer's reply was cut off at the output token limit",
            kind=ErrorKind.invalid_output,
            hint="ask for fewer --candidates, or use a writer model with a larger output limit",
        )
    return reply


def _valid_instructions(ctx: _Context, config: PromptConfig) -> tuple[PromptConfig | None, str | None]:
    normalized = normalize_config(ctx.spec, config)
    try:
        validate_config(ctx.spec, normalized, fields=ctx.fields or None)
    except LabelpilotError as exc:
        return None, exc.message
    return normalized, None


def _read_candidates(
    ctx: _Context, text: str, wanted: int
) -> tuple[list[tuple[PromptConfig, str]], list[str]]:
    """Valid, distinct rewrites from a writer reply, and the problems of the others."""
    try:
        data = _json_object(text)
    except ValueError as exc:
        return [], [f"the reply is not usable JSON ({exc})"]
    raw = data.get("candidates")
    if not isinstance(raw, list):
        return [], ['the reply has no "candidates" list']
    found: list[tuple[PromptConfig, str]] = []
    problems: list[str] = []
    seen = {" ".join(ctx.base.instructions.split())}
    for number, entry in enumerate(raw, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("instructions"), str):
            problems.append(f'candidate {number} has no "instructions" text')
            continue
        config, problem = _valid_instructions(
            ctx, derive_config(ctx.base, instructions=entry["instructions"])
        )
        if config is None:
            problems.append(f"candidate {number}: {problem}")
            continue
        flat = " ".join(config.instructions.split())
        if flat in seen:
            problems.append(f"candidate {number} repeats the current (or another candidate's) instructions")
            continue
        seen.add(flat)
        rationale = entry.get("rationale")
        found.append((config, rationale.strip() if isinstance(rationale, str) else ""))
    return found[:wanted], problems


async def _write_rewrites(
    ctx: _Context,
    run: _Run,
    analysis: TrainAnalysis,
    name: str,
    wanted: int,
    warnings: list[str],
    *,
    reserve_calls: int,
) -> list[tuple[PromptConfig, str]]:
    """Ask the writer for `wanted` rewrites; one repair request when none is usable (if the budget allows)."""
    model = _writer_chat_model(ctx, name)
    messages = _rewrite_request(ctx, analysis, wanted)
    run.tell(Stage.writer, f"writing {wanted} candidate instruction(s) with {name}")
    reply = await _writer_call(ctx, run, model, name, messages)
    found, problems = _read_candidates(ctx, reply.text, wanted)
    if not found and problems:
        refused = run.budget.refuses(1, 0.0, reserve_calls=reserve_calls)
        if refused is None:
            repair = (
                "Your answer could not be used: "
                + "; ".join(problems[:5])
                + '\nReply again with only the corrected JSON object {"candidates": [...]}.'
            )
            retry = [*messages, AIMessage(content=reply.text), HumanMessage(content=repair)]
            reply = await _writer_call(ctx, run, model, name, retry)
            found, problems = _read_candidates(ctx, reply.text, wanted)
    if problems:
        warnings.append("writer candidates left out: " + "; ".join(problems[:5]))
    if len(found) < wanted:
        warnings.append(f"the writer gave {len(found)} usable candidate(s) of the {wanted} asked for")
    return found


# ---------------------------------------------------------------------------------------- improve


def _letter(number: int) -> str:
    letters = ""
    while True:
        number, rest = divmod(number, 26)
        letters = chr(ord("A") + rest) + letters
        if number == 0:
            return letters
        number -= 1


async def improve(
    db: Database,
    settings: Settings,
    project: str,
    *,
    base_version: int | None = None,
    candidates: int = 4,
    budget_usd: float | None = None,
    max_calls: int | None = None,
    writer_model: str | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    http_async_client: httpx.AsyncClient | None = None,
    few_shot: bool = True,
    rate_limits: RateLimits | None = None,
) -> ImprovementReport:
    """Propose better versions of a prompt, choose one on dev inside a budget, report it on test.

    See the module docstring for the steps. Nothing is adopted: the winner is saved as a new version whose
    parent is the base (none when the base wins), and no other setting changes.

    Args:
        db / settings / project: where the project lives and which endpoint labels.
        base_version: the version to improve (default: the newest).
        candidates: rewritten instructions to ask the writer for (0: few-shot variants only).
        budget_usd / max_calls: the budget; the run stops before a step that would exceed it.
        writer_model: the model that writes candidates (default: the labeling model).
        seed: subsets and train sample.
        progress: called with an `ImprovementProgress` as the run goes.
        http_async_client: the HTTP client of every model call (tests point it at a fake).
        few_shot: also try few-shot variants (none / nearest / label-diverse) of the base and best rewrite.
        rate_limits: RPM/TPM/concurrency of the endpoint (default: the labeler's).
    """
    _check_budget_args(candidates, budget_usd, max_calls)
    ctx = _prepare(
        db,
        settings,
        project,
        base_version=base_version,
        http_async_client=http_async_client,
        rate_limits=rate_limits,
    )
    notes: list[str] = []
    warnings: list[str] = []
    splits_existed = _has_splits(db, ctx.project)
    if not splits_existed:
        assign_splits(db, ctx.project, seed=seed)
        notes.append(
            "the project had no splits: assigned train/dev/test with the default ratios 0.6/0.2/0.2 "
            f"(seed {seed}); see them with `labelpilot gt split --show`"
        )
    warnings += split_summary(db, ctx.project).warnings
    items = _gt_items(ctx)
    for split in ("train", "dev", "test"):
        if not items[split]:
            raise NotFoundError(
                f"the {split} split of project '{ctx.project}' is empty: improving needs items in train "
                "(errors), dev (choosing) and test (the report)",
                hint="label more items, then assign them: labelpilot gt split",
            )
    _probe_few_shot(ctx, few_shot)
    few_shot_ok = ctx.few_shot_note is None
    plan = _plan(
        ctx,
        items,
        splits_exist=True,
        candidates=candidates,
        budget_usd=budget_usd,
        max_calls=max_calls,
        writer_model=writer_model,
        seed=seed,
        few_shot_ok=few_shot_ok,
    )
    if budget_usd is not None and plan.usd_high is None:
        raise ConfigError(
            "a dollar budget cannot be kept: " + "; ".join(n for n in plan.notes if "no price" in n),
            hint="give a call budget (--max-calls) instead, or add the price to prices.toml",
        )
    _refuse_too_small(plan)
    budget = _Budget(max_calls=max_calls, max_usd=budget_usd)
    run = _Run(ctx, items, budget, progress)
    base = run.add(
        f"v{ctx.base.number} (current)",
        CandidateOrigin.base,
        derive_config(ctx.base),
        "the current version",
        version=ctx.base,
    )
    assert base is not None  # _plan checked that the base's labeler can be built
    test_tasks = [i.task for i in items["test"]]
    reserve_calls = len(test_tasks) + _uncached(base.labeler, test_tasks)
    reserve_usd = reserve_calls * (base.usd_per_call or 0.0)

    # 2. errors on train
    train = _stratified(ctx.spec, items["train"], seed)[:MAX_TRAIN_ITEMS]
    run.tell(
        Stage.train,
        f"v{ctx.base.number} labels {len(train)} train item(s) to find its errors",
        total=len(train),
    )
    train_outcomes: dict[int, LabelOutcome] = {}
    calls, cost, cost_known = 0, 0.0, True
    async for outcome in base.labeler.label([i.task for i in train]):
        run.check_leaks(base.name, outcome.task_id, outcome.examples)
        train_outcomes[outcome.task_id] = outcome
        if not outcome.from_cache:
            calls += 1
            cost_known = cost_known and (outcome.cost_usd is not None or not outcome.ok)
            cost += outcome.cost_usd or 0.0
        run.tell(Stage.train, f"v{ctx.base.number} on train", done=len(train_outcomes), total=len(train))
    budget.spend(calls, cost if cost_known else None)
    analysis = _analyse(ctx, train, train_outcomes)

    # 3. candidates
    writer_name = plan.writer_model
    rewrites: list[_Candidate] = []
    if candidates > 0:
        # The writer must leave room for the first round and the test evaluation.
        writer_reserve = reserve_calls + (plan.rounds[0].new_calls if plan.rounds else 0)
        refused = budget.refuses(1, 0.0, reserve_calls=writer_reserve)
        if refused is None:
            written = await _write_rewrites(
                ctx, run, analysis, writer_name, candidates, warnings, reserve_calls=writer_reserve
            )
            for number, (config, rationale) in enumerate(written):
                made = run.add(f"rewrite {_letter(number)}", CandidateOrigin.rewrite, config, rationale)
                if made is not None:
                    rewrites.append(made)
        else:
            warnings.append(
                f"no instructions were rewritten: the writer call does not fit the budget ({refused})"
            )
    fs_note = "few-shot candidates built with tools.examples.examples_for_version"
    if few_shot_ok:
        notes += ctx.few_shot_notes
        for config in _few_shot_variants(ctx.base):
            run.add(
                f"v{ctx.base.number} + few-shot {few_shot_summary(config.few_shot)}",
                CandidateOrigin.few_shot,
                config,
                f"the current instructions with few-shot {few_shot_summary(config.few_shot)}",
            )
    else:
        fs_note = f"few-shot candidates skipped: {ctx.few_shot_note}"
        notes.append(fs_note)

    # 4. successive halving on dev
    dev = _stratified(ctx.spec, items["dev"], seed)
    alive = list(run.candidates)
    rounds: list[RoundSummary] = []
    winner = base
    size = min(len(dev), max(MIN_FIRST_ROUND, math.ceil(FIRST_ROUND_SHARE * len(dev))))
    number = 0
    ranking: list[_Candidate] = [base]
    while len(alive) > 1:
        subset = dev[:size]
        need_calls, need_usd = run.need(alive, subset)
        refused = budget.refuses(need_calls, need_usd, reserve_calls=reserve_calls, reserve_usd=reserve_usd)
        if refused is not None:
            budget.stopped = (
                f"stopped before round {number + 1} ({len(alive)} candidates on {size} dev items): {refused}"
            )
            break
        number += 1
        for candidate in alive:
            await run.label(candidate, subset, round_number=number)
        if number == 1 and few_shot_ok and rewrites:
            best_rewrite = min(rewrites, key=_rank_key)
            extra = [
                made
                for config in _few_shot_variants(best_rewrite.config)
                if (
                    made := run.add(
                        f"{best_rewrite.name} + few-shot {few_shot_summary(config.few_shot)}",
                        CandidateOrigin.few_shot,
                        config,
                        f"{best_rewrite.rationale} With few-shot {few_shot_summary(config.few_shot)}.".strip(),
                    )
                )
                is not None
            ]
            need_calls, need_usd = run.need(extra, subset)
            refused = budget.refuses(
                need_calls, need_usd, reserve_calls=reserve_calls, reserve_usd=reserve_usd
            )
            if refused is None:
                for candidate in extra:
                    await run.label(candidate, subset, round_number=number)
                alive += extra
            else:
                run.candidates = [c for c in run.candidates if c not in extra]
                warnings.append(f"few-shot variants of {best_rewrite.name} were not tried: {refused}")
        ranking = sorted(alive, key=_rank_key)
        last_round = size >= len(dev)
        keep = ranking[:1] if last_round else ranking[: math.ceil(len(ranking) / 2)]
        for candidate in ranking[len(keep) :]:
            candidate.report.eliminated_in_round = number
        rounds.append(
            RoundSummary(
                round=number, items=size, ranking=[c.name for c in ranking], kept=[c.name for c in keep]
            )
        )
        winner = keep[0]
        alive = keep
        run.tell(Stage.dev, f"round {number} done: {', '.join(c.name for c in keep)} go on", round=number)
        if last_round:
            break
        size = min(len(dev), size * 2)
    if number == 0 and len(run.candidates) > 1:
        warnings.append("no candidate was scored on dev: the budget does not cover the first round")

    # 5. save and report on test
    comparison: Comparison | None = None
    test_reports: dict[str, EvalReport] = {}
    new_version: int | None = None
    if winner is base:
        message = f"the current prompt v{ctx.base.number} stays: no candidate did better on dev"
    else:
        saved = create_version(
            db,
            ctx.project,
            winner.config,
            parent=ctx.base.number,
            note=_note(ctx, winner, base, rounds, seed),
        )
        new_version = saved.number
        message = (
            f"saved the winner as v{saved.number} (parent v{ctx.base.number}); it is NOT adopted. Use it with "
            f"`labelpilot label --version {saved.number}`; commands without --version take the newest version, "
            f"so pass --version {ctx.base.number} to keep labeling with the current prompt"
        )
        comparison, test_reports = await _test(run, saved, base, warnings)
    leaks_checked = run.checked > 0
    if run.held_out_examples:
        warnings.append(
            f"{run.held_out_examples} answer(s) were shown dev/test items as few-shot examples: their scores "
            "may be optimistic"
        )
    warnings += _interval_warnings(winner)
    if run.skipped:
        notes += [f"skipped {s}" for s in run.skipped]
    return ImprovementReport(
        project=ctx.project,
        base_version=ctx.base.number,
        plan=plan,
        train=analysis,
        writer_model=writer_name,
        candidates=[c.report for c in run.candidates],
        rounds=rounds,
        winner=winner.name,
        winner_is_base=winner is base,
        new_version=new_version,
        comparison=comparison,
        test_reports=test_reports,
        budget=budget.use(),
        few_shot=fs_note,
        leaks_checked=leaks_checked,
        leaks=run.leaks,
        answers_checked=run.checked,
        answers_with_examples=run.with_examples,
        warnings=warnings,
        notes=notes,
        message=message,
    )


def _refuse_too_small(plan: ImprovementPlan) -> None:
    if plan.max_calls is not None and plan.max_calls < plan.minimum_calls:
        raise ConfigError(
            f"a budget of {plan.max_calls:,} call(s) cannot cover the smallest useful run: {plan.minimum_calls:,} "
            f"(train {plan.calls['train']:,}, writer {plan.calls['writer']:,}, the first round "
            f"{plan.rounds[0].new_calls if plan.rounds else 0:,}, the test evaluation {plan.calls['test']:,})",
            hint="raise --max-calls, or ask for fewer --candidates",
        )
    if plan.budget_usd is not None and plan.minimum_usd is not None and plan.budget_usd < plan.minimum_usd:
        raise ConfigError(
            f"a budget of ${plan.budget_usd:,.4f} cannot cover the smallest useful run (up to ${plan.minimum_usd:,.4f})",
            hint="raise --budget-usd, or ask for fewer --candidates",
        )


def _note(
    ctx: _Context, winner: _Candidate, base: _Candidate, rounds: Sequence[RoundSummary], seed: int
) -> str:
    last = winner.last()
    text = f"improve: {winner.rationale or winner.name}"
    if last is not None:
        base_score = next((s for s in reversed(base.report.rounds) if s.round == last.round), base.last())
        versus = ""
        if base_score is not None and base_score.value is not None:
            versus = f" vs v{ctx.base.number} {base_score.value:.3f} on {base_score.items}"
        text += (
            f" | dev {last.headline} {'-' if last.value is None else f'{last.value:.3f}'} on {last.items} item(s)"
            f"{versus}; chosen among {len(rounds[0].ranking) if rounds else 1} candidates by successive halving "
            f"({len(rounds)} round(s), seed {seed})"
        )
    return text


async def _test(
    run: _Run, saved: VersionInfo, base: _Candidate, warnings: list[str]
) -> tuple[Comparison | None, dict[str, EvalReport]]:
    """Evaluate the base and the saved winner on test (stored runs) and compare them."""
    ctx = run.ctx
    winner_labeler, why = candidate_labeler(ctx, saved)
    if winner_labeler is None:
        warnings.append(f"v{saved.number} was not evaluated on test: {why}")
        return None, {}
    tasks = [i.task for i in run.items["test"]]
    need_calls = _uncached(base.labeler, tasks) + _uncached(winner_labeler, tasks)
    usd = None
    per_call = _usd(ctx, winner_labeler.model_name, 1, _prompt_tokens(ctx, saved), ctx.output_tokens)
    if per_call is not None:
        usd = need_calls * per_call[1]
    refused = run.budget.refuses(need_calls, usd)
    if refused is not None:
        warnings.append(f"v{saved.number} was not evaluated on test: {refused}")
        return None, {}

    def progress_of(name: str) -> Callable[[JobProgress], None]:
        def report(p: JobProgress) -> None:
            run.tell(Stage.test, f"{name} on test", done=p.done + p.failed, total=p.total)

        return report

    reports: dict[str, EvalReport] = {}
    for name, labeler in ((f"v{ctx.base.number}", base.labeler), (f"v{saved.number}", winner_labeler)):
        run.tell(Stage.test, f"{name} on test", total=len(tasks))
        report = await evaluate(ctx.db, ctx.project, labeler, split="test", progress=progress_of(name))
        run.budget.spend(report.usage.requests, report.usage.cost_usd)
        reports[name] = report
        _check_run_leaks(run, name, report.run.run_id)
    base_report, winner_report = reports[f"v{ctx.base.number}"], reports[f"v{saved.number}"]
    comparison = compare_runs(ctx.db, ctx.project, base_report.run.run_id, winner_report.run.run_id)
    if comparison.test.p_value >= 0.05:
        warnings.append(
            f"on test the difference is not significant ({comparison.test.method.replace('_', ' ')} "
            f"p = {comparison.test.p_value:.3g} on {comparison.common} item(s))"
        )
    return comparison, reports


def _check_run_leaks(run: _Run, name: str, run_id: int) -> None:
    with run.ctx.db.session() as session:
        rows = session.execute(
            select(Prediction.task_id, Prediction.examples).where(Prediction.run_id == run_id)
        ).all()
    for task_id, examples in rows:
        run.check_leaks(name, task_id, examples)


def _interval_warnings(winner: _Candidate) -> list[str]:
    last = winner.last()
    if last is None:
        return []
    width = interval_width(last.items)
    if width is None or width <= TRUST_WIDTH:
        return []
    return [
        f"the winner was chosen on {last.items} dev item(s): a 95% interval on accuracy is up to ±{width / 2:.0%} "
        "wide there, so the choice is uncertain; label more items to trust small differences"
    ]


# ---------------------------------------------------------------------------------------- preferences


def _preferences_request(ctx: _Context, text: str) -> list[BaseMessage]:
    system = (
        f"{WRITER_MARKER} A person stated preferences about the labels they want. Merge them into the current "
        "instructions: keep what is still right, change what conflicts with the preferences, add what is "
        "missing, and write the complete new instructions.\n\n"
        f"{_rules(ctx)}\n\n"
        'Reply with one JSON object and nothing else: {"instructions": "..."}'
    )
    user = "\n".join(
        [
            "Current instructions:",
            "<<<",
            ctx.base.instructions,
            ">>>",
            "",
            _labels_text(ctx, ctx.base),
            "",
            "The person's preferences:",
            "<<<",
            text.strip(),
            ">>>",
        ]
    )
    return [SystemMessage(content=system), HumanMessage(content=user)]


def _verbatim(text: str) -> str:
    """Preferences as literal text in instructions (braces escaped so they are never placeholders)."""
    return text.strip().replace("{", "{{").replace("}", "}}")


async def preferences_to_instructions(
    db: Database,
    settings: Settings,
    project: str,
    text: str,
    *,
    base_version: int | None = None,
    writer_model: str | None = None,
    http_async_client: httpx.AsyncClient | None = None,
) -> VersionInfo:
    """Turn a person's stated preferences into a NEW version's instructions (parent = the base version).

    With a model, the writer merges them into the base's instructions; without one they are appended
    verbatim as a "Preferences:" paragraph (the note says so). Nothing is adopted.
    """
    if not text.strip():
        raise ConfigError(
            "the preferences are empty", hint='say what you want, e.g. "summaries with numbers"'
        )
    ctx = _load_context(
        db,
        settings,
        project,
        base_version=base_version,
        http_async_client=http_async_client,
        rate_limits=None,
    )
    note = f"preferences: {text.strip()}"
    if not is_configured(settings):
        instructions = f"{ctx.base.instructions.rstrip()}\n\nPreferences:\n{_verbatim(text)}"
        config = derive_config(ctx.base, instructions=instructions)
        note += " (no model configured: added verbatim as a 'Preferences:' paragraph)"
        return validate_and_create(db, ctx.project, config, parent=ctx.base.number, note=note).version
    name = _writer_model_name(ctx, writer_model)
    model = _writer_chat_model(ctx, name)
    messages = _preferences_request(ctx, text)
    problem = ""
    for _attempt in range(2):
        reply = await _writer_call(ctx, None, model, name, messages)
        try:
            written = _json_object(reply.text).get("instructions")
            if not isinstance(written, str) or not written.strip():
                raise ValueError('the reply has no "instructions" text')
        except ValueError as exc:
            problem = str(exc)
        else:
            merged, invalid = _valid_instructions(ctx, derive_config(ctx.base, instructions=written))
            if merged is not None:
                return validate_and_create(db, ctx.project, merged, parent=ctx.base.number, note=note).version
            problem = invalid or "invalid instructions"
        messages = [
            *messages,
            AIMessage(content=reply.text),
            HumanMessage(
                content=f"Your answer could not be used: {problem}\n"
                'Reply again with only the corrected JSON object {"instructions": "..."}.'
            ),
        ]
    raise ModelCallError(
        f"the writer model gave no usable instructions: {problem}",
        kind=ErrorKind.invalid_output,
        hint="try again, or use a stronger writer model (--writer-model)",
    )


__all__ = [
    "FEW_SHOT_VARIANTS",
    "NEEDS_MODEL",
    "BudgetUse",
    "CandidateResult",
    "ImprovementPlan",
    "ImprovementProgress",
    "ImprovementReport",
    "RoundScore",
    "RoundSummary",
    "Stage",
    "TrainAnalysis",
    "candidate_labeler",
    "halving_schedule",
    "improve",
    "plan_improvement",
    "preferences_to_instructions",
]
