"""Tune the offline baseline's few-shot policy without a model: choose on dev, report on test.

The baseline (`tools.baseline`) turns labeled examples into answers by a policy: class centroids (where a
class description counts as `description_weight` examples) or the `k` nearest examples voting, each
weighted by its similarity. Which policy is best depends on the data: with a few examples per class
centroids usually win, with many examples per class and many classes a small k does; label noise in the
examples favours centroids or a larger k over 1-NN.

`tune_baseline` makes that choice the way an optimizer should, on the project's ground-truth splits:

1. every candidate policy learns from the **train** split and labels the **dev** split in memory (no runs
   are stored for candidates); the best dev score wins, ties going to the simpler policy (centroid before
   k-NN, a smaller k before a larger one, the default description weight before others);
2. 1-NN (the reference, "before") and the winner ("after") learn from the train split and are evaluated on
   the **test** split, which took no part in the choice, as stored eval runs (`labelpilot eval --list`,
   `compare`), with a paired test between them;
3. when the winner is not 1-NN, a new prompt version stores it (`params["baseline"]`, model `baseline`) as
   a child of the version commands use by default; labeling without a model uses the policy of the version
   it labels with (`ui.cli_label._labeler_for`), so once that is the new version (the newest, or adopted
   where the project pins a current version).

What is not tuned: the k-NN vote is already weighted by similarity (`exp((sim - best) / temperature)`), and
`temperature` also sets the calibrated confidence (it does not change a centroid's answer), so it stays at
its default; a plain majority vote lost to the weighted one on banking77 with 16 examples per class.
Description weights above 4 helped on no benchmark dev split but sst2's (+1 point at 8, -9 on trec).

Projects without splits get the default ones first. Rewriting instructions is not done here: it needs a
model, and the result says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select

from evals.bench_baseline import CachingEmbedder
from evals.evaluate import Comparison, EvalReport, compare_runs, evaluate
from evals.metrics import item_score, score
from tools.baseline import (
    DEFAULT_DESCRIPTION_WEIGHT,
    BaselineAnswer,
    BaselineLabeler,
    BaselineStrategy,
    supports,
    unsupported_message,
)
from tools.embeddings import Embedder, get_embedder
from tools.errors import ConfigError, LabelSpecError, NotFoundError
from tools.groundtruth import current_labels
from tools.labelspec import LabelSpec
from tools.projects import get_project, require_spec
from tools.splits import (
    DEFAULT_RATIOS,
    Split,
    assign_splits,
    interval_width,
    split_summary,
    split_task_ids,
    stratum,
)
from tools.storage import Database, Task
from tools.versions import (
    PromptConfig,
    VersionInfo,
    create_version,
    derive_config,
    get_version,
    list_versions,
)

#: The strategies a tuned policy may use (auto is a rule over these; zero_shot ignores the examples).
TUNABLE_STRATEGIES = (BaselineStrategy.centroid, BaselineStrategy.knn)
#: Neighbours tried with k-NN (those above the number of train examples are skipped).
KNN_GRID = (1, 3, 5, 10, 20)
#: Description weights tried with centroids when the classes have descriptions.
DESCRIPTION_WEIGHT_GRID = (DEFAULT_DESCRIPTION_WEIGHT, 0.0, 2.0, 4.0)
#: The key of a prompt version's params that holds a tuned baseline policy.
PARAMS_KEY = "baseline"
#: The model name of a version that stores a baseline policy.
BASELINE_MODEL = "baseline"
#: A paired test's p-value below this counts as a real difference in the message.
SIGNIFICANCE = 0.05
NEEDS_MODEL = "Rewriting instructions needs a model: set OPENAI_API_KEY or OPENAI_BASE_URL."


class BaselineConfig(BaseModel):
    """A few-shot policy of the offline baseline: how its examples become an answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: BaselineStrategy = BaselineStrategy.centroid
    #: Neighbours that vote (knn only).
    k: int = Field(default=1, ge=1, le=1000)
    #: How many examples a class description counts as in a centroid (centroid only).
    description_weight: float = Field(default=DEFAULT_DESCRIPTION_WEIGHT, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _drop_unused(cls, data: Any) -> Any:
        """Settings a strategy does not read take their defaults, so equal policies compare equal."""
        if isinstance(data, dict):
            strategy = data.get("strategy", BaselineStrategy.centroid)
            unused = "description_weight" if strategy == BaselineStrategy.knn else "k"
            data = {key: value for key, value in data.items() if key != unused}
        return data

    @field_validator("strategy")
    @classmethod
    def _tunable(cls, value: BaselineStrategy) -> BaselineStrategy:
        if value not in TUNABLE_STRATEGIES:
            raise ValueError(f"a tuned policy is centroid or knn, not {value.value}")
        return value

    @property
    def is_one_nn(self) -> bool:
        """Whether this is 1-NN, the reference policy."""
        return self.strategy is BaselineStrategy.knn and self.k == 1

    def summary(self) -> str:
        """Return a short name, e.g. 'centroid', 'centroid, descriptions x2' or 'knn k=5'."""
        if self.strategy is BaselineStrategy.knn:
            return f"knn k={self.k}"
        if self.description_weight == DEFAULT_DESCRIPTION_WEIGHT:
            return "centroid"
        return f"centroid, descriptions x{self.description_weight:g}"

    def labeler_options(self) -> dict[str, Any]:
        """Return the `BaselineLabeler` keyword arguments of this policy."""
        return {"strategy": self.strategy, "k": self.k, "description_weight": self.description_weight}

    def simplicity(self) -> tuple[int, int, float, float]:
        """Sort key, simplest first: centroid, then k-NN by k; the default description weight first."""
        offset = abs(self.description_weight - DEFAULT_DESCRIPTION_WEIGHT)
        return (TUNABLE_STRATEGIES.index(self.strategy), self.k, offset, self.description_weight)


ONE_NN = BaselineConfig(strategy=BaselineStrategy.knn, k=1)


class BaselineTuning(BaseModel):
    """What tuning the baseline found: the chosen policy, dev scores, test before/after, the new version."""

    project: str
    #: The chosen policy (a `BaselineConfig` as JSON).
    best: dict[str, Any]
    #: Per candidate, simplest first: config, policy (short name), headline, value, score (mean item
    #: score, the accuracy for choices; what is compared), n.
    dev_scores: list[dict[str, Any]]
    #: 1-NN learning from the train split, evaluated on the test split (None without test items).
    before: EvalReport | None
    #: The chosen policy learning from the train split, on the test split (`before` itself when it is 1-NN).
    after: EvalReport | None
    #: before vs after on the test split (None when they are the same run).
    comparison: Comparison | None
    #: The prompt version storing the chosen policy (None when 1-NN stays).
    version: VersionInfo | None
    train_items: int
    dev_items: int
    test_items: int
    splits_assigned: bool
    message: str


def default_candidates(spec: LabelSpec, *, train_items: int) -> list[BaselineConfig]:
    """Return the policies tried by default: centroid (and description weights when classes have
    descriptions), and k-NN for each k of `KNN_GRID` up to the number of train examples."""
    described = any(label_class.description for label_class in spec.classes)
    weights = DESCRIPTION_WEIGHT_GRID if described else (DEFAULT_DESCRIPTION_WEIGHT,)
    candidates = [BaselineConfig(strategy=BaselineStrategy.centroid, description_weight=w) for w in weights]
    candidates += [
        BaselineConfig(strategy=BaselineStrategy.knn, k=k) for k in KNN_GRID if k == 1 or k <= train_items
    ]
    return candidates


def stored_config(version: PromptConfig) -> BaselineConfig | None:
    """Return the baseline policy a prompt version stores, or None when it stores none."""
    stored = version.params.get(PARAMS_KEY)
    if stored is None:
        return None
    try:
        return BaselineConfig.model_validate(stored)
    except ValidationError as exc:
        raise ConfigError(
            f"the prompt version's params['{PARAMS_KEY}'] is not a baseline policy: {exc.errors()[0]['msg']}",
            hint="create a new version with: labelpilot prompt create, or tune the baseline again",
        ) from None


def _default_version(db: Database, project_name: str) -> VersionInfo | None:
    """The version commands use when none is named (`get_version`'s choice), or None without versions."""
    if not list_versions(db, project_name):
        return None
    return get_version(db, project_name)


def tuned_config(
    db: Database, project_name: str, *, version: int | None = None, version_id: int | None = None
) -> tuple[BaselineConfig, VersionInfo] | None:
    """Return the baseline policy of a version (by id, else number, else the one commands use by default)
    with that version; None when there is no such version or it stores no policy."""
    if version_id is None and version is None:
        chosen = _default_version(db, project_name)
    else:
        chosen = next(
            (
                v
                for v in list_versions(db, project_name)
                if (v.id == version_id if version_id is not None else v.number == version)
            ),
            None,
        )
    if chosen is None:
        return None
    config = stored_config(chosen)
    return None if config is None else (config, chosen)


# ---------------------------------------------------------------------------------------------- tuning


def _show(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if metric == "mae" else f"{100 * value:.1f}%"


def _difference(metric: str, delta: float) -> str:
    """The paired test's delta (mean item score, B - A) in the headline's terms."""
    if metric == "mae":
        return f"mean absolute error {-delta:+.3g}"
    return f"{100 * delta:+.1f} points"


def _ground_truth(db: Database, project_name: str) -> tuple[str, LabelSpec, dict[int, Any]]:
    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project)
        labels = current_labels(session, project.id)
        name = project.name
    if not supports(spec):
        raise LabelSpecError(unsupported_message(spec))
    if not labels:
        raise NotFoundError(
            f"project '{name}' has no ground truth to tune the baseline on",
            hint="label some items first: labelpilot gt label (or import a file with --label)",
        )
    return name, spec, labels


def _task_data(db: Database, task_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    with db.session() as session:
        rows = session.execute(select(Task.id, Task.data).where(Task.id.in_(list(task_ids))))
        return {task_id: dict(data or {}) for task_id, data in rows}


def _dev_score(
    spec: LabelSpec,
    config: BaselineConfig,
    gold: Sequence[Any],
    answers: Sequence[BaselineAnswer],
    *,
    seed: int,
) -> dict[str, Any]:
    """Score one policy's dev answers: the headline metric and the mean item score that is compared."""
    predicted = [answer.value if answer.error is None else None for answer in answers]
    metrics = score(spec, gold, predicted, seed=seed)
    mean = sum(item_score(spec, g, p) for g, p in zip(gold, predicted, strict=True)) / len(gold)
    return {
        "config": config.model_dump(mode="json"),
        "policy": config.summary(),
        "headline": metrics.headline,
        "value": metrics.headline_value,
        "score": mean,
        "n": metrics.n,
    }


#: Below this many dev items, candidates are scored by repeated k-fold over train + dev.
SMALL_DEV = 30
#: Folds and repeats of that cross-validation.
CV_FOLDS, CV_REPEATS = 5, 3


@dataclass(frozen=True)
class _Folds:
    labels: dict[int, Any]
    data: dict[int, dict[str, Any]]
    splits: list[tuple[list[int], list[int]]]  # (example task ids, scored task ids)
    description: str


def _folds(spec: LabelSpec, labels: dict[int, Any], *, seed: int) -> _Folds | None:
    """Repeated (stratified when every label has enough items) k-fold splits of a small labeled set."""
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    ids = sorted(labels)
    if len(ids) < 4:
        return None
    strata = [stratum(spec, labels[task_id]) for task_id in ids]
    smallest = min(strata.count(value) for value in set(strata))
    k = min(CV_FOLDS, len(ids) // 2)
    if smallest >= k:
        splitter: Any = RepeatedStratifiedKFold(n_splits=k, n_repeats=CV_REPEATS, random_state=seed)
        kind = "stratified"
    else:
        splitter = RepeatedKFold(n_splits=k, n_repeats=CV_REPEATS, random_state=seed)
        kind = "plain"
    splits = [
        ([ids[i] for i in learn], [ids[i] for i in held])
        for learn, held in splitter.split(np.zeros(len(ids)), strata)
    ]
    return _Folds(
        labels=labels,
        data={},
        splits=splits,
        description=f"{CV_REPEATS}x repeated {kind} {k}-fold over the {len(ids)} train + dev items",
    )


async def _cross_validated(
    db: Database,
    project_name: str,
    spec: LabelSpec,
    config: BaselineConfig,
    folds: _Folds,
    embedder: Embedder,
    *,
    seed: int,
) -> dict[str, Any]:
    """Score a policy by repeated k-fold: every item is answered by a model that never saw it."""
    if not folds.data:
        folds.data.update(_task_data(db, sorted(folds.labels)))
    gold: list[Any] = []
    answers: list[BaselineAnswer] = []
    for learn, held in folds.splits:
        examples = {task_id: folds.labels[task_id] for task_id in learn}
        labeler = BaselineLabeler(
            db, project_name, embedder=embedder, examples=examples, **config.labeler_options()
        )
        assert labeler.classifier is not None
        answers.extend(await asyncio.to_thread(labeler.classifier.predict, [folds.data[t] for t in held]))
        gold.extend(folds.labels[task_id] for task_id in held)
    result = _dev_score(spec, config, gold, answers, seed=seed)
    result["method"] = folds.description
    return result


def _version_note(best: BaselineConfig, dev_scores: Sequence[dict[str, Any]], dev_items: int) -> str:
    shown = ", ".join(f"{s['policy']} {_show(s['headline'], s['value'])}" for s in dev_scores)
    return (
        f"offline baseline policy: {best.summary()}; tuned on dev, reported on test. "
        f"Dev {dev_scores[0]['headline']} on {dev_items} items: {shown}"
    )


def _store_version(db: Database, project_name: str, best: BaselineConfig, note: str) -> VersionInfo:
    """Store the policy as a child of the default version (keeping its instructions), or as a first version.

    It is not adopted: where the project has a current version, that stays current (see `create_version`).
    """
    parent = _default_version(db, project_name)
    stored = best.model_dump(mode="json")
    if parent is None:
        config = PromptConfig(model=BASELINE_MODEL, params={PARAMS_KEY: stored})
        return create_version(db, project_name, config, note=note)
    config = derive_config(parent, model=BASELINE_MODEL, params={**parent.params, PARAMS_KEY: stored})
    return create_version(db, project_name, config, parent=parent.number, note=note)


async def tune_baseline(
    db: Database,
    project_name: str,
    *,
    seed: int = 0,
    candidates: Sequence[BaselineConfig] | None = None,
    progress: Callable[[str], None] | None = None,
    embedder: Embedder | None = None,
) -> BaselineTuning:
    """Choose the baseline's few-shot policy on the dev split and report it against 1-NN on the test split.

    Args:
        db: the database holding the project.
        project_name: the project's name or id.
        seed: seed of the splits (when the project has none yet) and of the metrics' intervals.
        candidates: the policies to try (default: `default_candidates`); 1-NN is always tried.
        progress: called with a short line as each step starts.
        embedder: sentence embedder (default: MiniLM, as the baseline labeler uses).
    """
    say = progress or (lambda line: None)
    name, spec, labels = _ground_truth(db, project_name)
    splits_assigned = False
    if not any(entry.items for entry in split_summary(db, name).splits):
        assign_splits(db, name, seed=seed)
        splits_assigned = True
    ids = {split: split_task_ids(db, name, split) for split in Split}
    train = {task_id: labels[task_id] for task_id in ids[Split.train]}
    if not train:
        raise NotFoundError(
            f"the train split of project '{name}' is empty: the baseline has no examples to learn from",
            hint="label more items, or re-assign the splits: labelpilot gt split --reset",
        )
    if not ids[Split.dev]:
        raise NotFoundError(
            f"the dev split of project '{name}' is empty: there is nothing to choose a policy on",
            hint="label more items, or re-assign the splits: labelpilot gt split --reset",
        )
    data = _task_data(db, ids[Split.dev])
    dev = [(data[task_id], labels[task_id]) for task_id in ids[Split.dev]]
    shared = CachingEmbedder(embedder if embedder is not None else get_embedder())
    tried = list(dict.fromkeys(candidates or default_candidates(spec, train_items=len(train))))
    if not any(config.is_one_nn for config in tried):
        tried.append(ONE_NN)
    tried.sort(key=BaselineConfig.simplicity)

    dev_inputs = [data for data, _ in dev]
    dev_gold = [value for _, value in dev]
    dev_scores = []
    folds = None
    if len(dev) < SMALL_DEV:
        # Too few dev items to choose on: score by repeated k-fold over train + dev instead.
        folds = _folds(spec, {**train, **{task_id: labels[task_id] for task_id in ids[Split.dev]}}, seed=seed)
    for number, config in enumerate(tried, 1):
        say(f"dev {number}/{len(tried)}: {config.summary()}")
        if folds is not None:
            dev_scores.append(await _cross_validated(db, name, spec, config, folds, shared, seed=seed))
            continue
        labeler = BaselineLabeler(db, name, embedder=shared, examples=train, **config.labeler_options())
        assert labeler.classifier is not None  # the schema was checked by _ground_truth
        # In memory, off the event loop: candidates store no runs.
        answers = await asyncio.to_thread(labeler.classifier.predict, dev_inputs)
        dev_scores.append(_dev_score(spec, config, dev_gold, answers, seed=seed))
    # The first of the best scores: candidates are in simplicity order, so ties go to the simpler policy.
    top = max(range(len(tried)), key=lambda i: (dev_scores[i]["score"], -i))
    best = tried[top]
    one_nn = next(config for config in tried if config.is_one_nn)

    before = after = None
    comparison = None
    if ids[Split.test]:
        say("test: 1-NN (before)")
        before = await evaluate(
            db,
            name,
            BaselineLabeler(db, name, embedder=shared, examples=train, **one_nn.labeler_options()),
            split=Split.test.value,
        )
        after = before
        if not best.is_one_nn:
            say(f"test: {best.summary()} (after)")
            labeler = BaselineLabeler(db, name, embedder=shared, examples=train, **best.labeler_options())
            after = await evaluate(db, name, labeler, split=Split.test.value)
            comparison = compare_runs(db, name, before.run.run_id, after.run.run_id, seed=seed)

    version = None
    if not best.is_one_nn:
        version = _store_version(db, name, best, _version_note(best, dev_scores, len(dev)))
    tuning = BaselineTuning(
        project=name,
        best=best.model_dump(mode="json"),
        dev_scores=dev_scores,
        before=before,
        after=after,
        comparison=comparison,
        version=version,
        train_items=len(train),
        dev_items=len(dev),
        test_items=len(ids[Split.test]),
        splits_assigned=splits_assigned,
        message="",
    )
    default = _default_version(db, name)
    in_use = version is not None and default is not None and default.number == version.number
    tuning.message = _message(
        tuning, best, dev_scores[tried.index(one_nn)], dev_scores[top], seed=seed, in_use=in_use
    )
    return tuning


def _message(
    tuning: BaselineTuning,
    best: BaselineConfig,
    one_nn: dict[str, Any],
    top: dict[str, Any],
    *,
    seed: int,
    in_use: bool,
) -> str:
    metric = top["headline"]
    parts: list[str] = []
    if tuning.splits_assigned:
        shares = "/".join(f"{100 * share:g}" for share in DEFAULT_RATIOS)
        parts.append(f"The project had no splits: assigned train/dev/test ({shares}, seed {seed}).")
    method = top.get("method")
    if method:
        width = interval_width(tuning.dev_items)
        scored_on = (
            f"scored by {method}, because the {tuning.dev_items} dev items alone are too few to choose on "
            f"(a 95% interval on accuracy would be up to ±{(width or 1.0) / 2:.0%} wide there)"
        )
    else:
        scored_on = f"learning from the {tuning.train_items} train items and scored on the {tuning.dev_items} dev items"
    parts.append(
        f"Tried {len(tuning.dev_scores)} few-shot policies of the offline baseline, {scored_on}: "
        f"best {best.summary()} ({metric} {_show(metric, top['value'])}; 1-NN "
        f"{_show(metric, one_nn['value'])})."
    )
    if tuning.before is None or tuning.after is None:
        parts.append("The test split is empty, so nothing was measured on held-out items.")
    elif tuning.comparison is None:
        parts.append(
            f"1-NN stays: on the {tuning.test_items} test items it scores "
            f"{_show(metric, tuning.before.metrics.headline_value)} (run {tuning.before.run.run_id})."
        )
    else:
        test = tuning.comparison.test
        parts.append(
            f"On the {tuning.test_items} test items, which took no part in the choice: 1-NN "
            f"{_show(metric, tuning.before.metrics.headline_value)} (run {tuning.before.run.run_id}), "
            f"{best.summary()} {_show(metric, tuning.after.metrics.headline_value)} "
            f"(run {tuning.after.run.run_id}); {_difference(metric, test.delta)}, p = {test.p_value:.2g} "
            "(paired test)."
        )
        if test.delta < 0:
            parts.append(
                "The chosen policy did worse on held-out items: the dev split may be too small to choose well."
            )
        elif test.p_value >= SIGNIFICANCE:
            parts.append(
                f"The difference is not significant (p >= {SIGNIFICANCE:g}): more test items would tell."
            )
    if tuning.version is not None:
        number = tuning.version.number
        if in_use:
            parts.append(f"Stored as prompt version v{number}: labeling without a model now uses it.")
        else:
            parts.append(
                f"Stored as prompt version v{number}, a proposal: labeling without a model uses it once "
                f"you adopt it (or name it: --version {number})."
            )
    parts.append(NEEDS_MODEL)
    return " ".join(parts)
