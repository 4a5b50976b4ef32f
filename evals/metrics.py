"""Metrics of predicted labels against trusted (gold) labels, by task type, and paired tests of two runs.

`score(spec, gold, predicted)` returns a `Metrics`: every scalar metric of the task type in `values`, the
name of the main one in `headline` with a 95% interval, per-class figures and, for single_choice and
pairwise, a confusion matrix. A missing or invalid prediction is `None`: it is scored as wrong (the class
`NO_ANSWER` in confusion matrices, the empty set for multi_choice and spans, the worst error for
`item_score` of rating and number) and counted in `invalid_rate`.

`paired_test(spec, gold, a, b)` says whether run B differs from run A on the same items: an exact McNemar
test where an item is simply right or wrong, a paired bootstrap on `item_score` otherwise.

Choices made here (each a reader of the numbers should know):

- The classes scored by macro averages and listed in `per_class` are the spec's classes (and any gold value
  the spec does not know) that occur in the gold labels or in the predictions; a class absent from both
  has no defined precision or recall and is left out, so `macro_f1` is the mean of the `per_class` F1s.
  Predictions outside those classes (`NO_ANSWER`, invented class names) are errors but not classes.
  This is scikit-learn's `labels=` argument with that list, and `zero_division=0`.
- Micro F1 (multi_choice) and entity F1 (spans) count every predicted label, known or not. When neither the
  gold labels nor the predictions hold a single label or span, precision, recall and F1 are 1.0 (nothing to
  find, nothing found), like `item_score` of two empty sets; otherwise a 0/0 ratio is 0.
- Rating and number metrics are computed over answered items only; `coverage` says how many those are.
- Intervals: Wilson for proportions (accuracy, exact match), a seeded percentile bootstrap over items for
  the others (micro F1, MAE, entity F1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel
from scipy import stats
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    jaccard_score,
    precision_recall_fscore_support,
)
from sklearn.preprocessing import MultiLabelBinarizer

from tools.errors import LabelpilotError, LabelSpecError, LabelValueError
from tools.labelspec import PAIRWISE_SIDES, LabelSpec, TaskType

#: The predicted "class" of an item whose prediction is missing or invalid (`None`).
NO_ANSWER = "(no answer)"
#: Level of every interval `score` and `paired_test` report.
CONFIDENCE_LEVEL = 0.95
#: Bootstrap resamples behind the intervals of `score`.
BOOTSTRAP_RESAMPLES = 2000
#: Metrics where lower is better (every other value in `Metrics.values` is better higher, or a count).
LOWER_IS_BETTER = frozenset({"mae", "rmse", "invalid_rate"})
#: Two numbers closer than this are equal (`item_correct` of number and rating, the `exact` metric).
NUMBER_TOLERANCE = 1e-9
#: Resampled item indices held in memory at once by the bootstrap (about 16 MB of int64).
_BOOTSTRAP_CHUNK_CELLS = 2_000_000

K = TypeVar("K", bound=Hashable)
SpanKey = tuple[int, int, str]


# ---------------------------------------------------------------------- results


class ClassMetrics(BaseModel):
    """Precision, recall and F1 of one class (or span label); `support` is its number of gold labels."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


class Interval(BaseModel):
    """A confidence interval and how it was computed (`wilson`, `bootstrap`)."""

    low: float
    high: float
    level: float = CONFIDENCE_LEVEL
    method: str


class Confusion(BaseModel):
    """A confusion matrix: `matrix[i][j]` items with gold `labels[i]` were predicted `labels[j]`.

    `labels` holds the spec's classes in order, then `NO_ANSWER` if a prediction was missing, then any value
    the spec does not know (sorted).
    """

    labels: list[str]
    matrix: list[list[int]]

    def top_confusions(self, n: int = 10) -> list[tuple[str, str, int]]:
        """Return the `n` largest off-diagonal cells as (gold, predicted, count), ties in label order."""
        cells = [
            (count, i, j)
            for i, row in enumerate(self.matrix)
            for j, count in enumerate(row)
            if i != j and count > 0
        ]
        cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
        return [(self.labels[i], self.labels[j], count) for count, i, j in cells[:n]]


class Metrics(BaseModel):
    """Every metric of one set of predictions against gold labels (see the module docstring)."""

    task_type: str
    #: Items scored: every gold item; a `None` prediction counts as wrong.
    n: int
    #: Items with a prediction (not `None`).
    answered: int
    #: Key of the main metric in `values`: accuracy, micro_f1, mae or entity_f1.
    headline: str
    #: Every scalar metric; `None` where undefined (no items, constant input to a correlation).
    values: dict[str, float | None]
    #: 95% interval of the headline metric; `None` when it is undefined.
    interval: Interval | None
    #: Per class (per span label for spans); empty where classes do not apply.
    per_class: list[ClassMetrics]
    #: single_choice and pairwise only.
    confusion: Confusion | None

    @property
    def headline_value(self) -> float | None:
        """Return the value of the headline metric."""
        return self.values.get(self.headline)


class PairedTest(BaseModel):
    """Whether run B differs from run A on the same items (`delta` > 0: B scores higher on `item_score`)."""

    #: "mcnemar_exact" or "paired_bootstrap".
    method: str
    #: Items compared.
    n: int
    p_value: float
    #: McNemar: min(b_only, c_only); bootstrap: the observed mean difference (B - A) of `item_score`.
    statistic: float | None
    #: McNemar: items right in A and wrong in B.
    b_only: int | None = None
    #: McNemar: items wrong in A and right in B.
    c_only: int | None = None
    #: mean(item_score B) - mean(item_score A).
    delta: float
    #: Percentile bootstrap interval of `delta`; `None` without items.
    delta_interval: Interval | None


# ---------------------------------------------------------------------- shared arithmetic


def wilson_interval(successes: int, n: int, level: float = CONFIDENCE_LEVEL) -> Interval:
    """Return the Wilson score interval of a proportion `successes / n` (0..1 when `n` is 0)."""
    if n == 0:
        return Interval(low=0.0, high=1.0, level=level, method="wilson")
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at p = 0 or 1 one bound is exactly 0 or 1; rounding would leave 0.9999999999999999
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low=low, high=high, level=level, method="wilson")


def _bootstrap_sums(columns: NDArray[np.float64], *, seed: int, resamples: int) -> NDArray[np.float64]:
    """Resample the rows (items) with replacement; return each resample's column sums, (resamples, k)."""
    n, k = columns.shape
    rng = np.random.default_rng(seed)
    sums = np.empty((resamples, k))
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        rows = rng.integers(0, n, size=(stop - start, n))
        for j in range(k):
            sums[start:stop, j] = columns[:, j][rows].sum(axis=1)
    return sums


def _percentile_interval(samples: NDArray[np.float64], level: float = CONFIDENCE_LEVEL) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(low=float(low), high=float(high), level=level, method="bootstrap")


def _set_f1(
    true_positives: NDArray[np.float64], predicted: NDArray[np.float64], gold: NDArray[np.float64]
) -> NDArray[np.float64]:
    """F1 = 2 TP / (|predicted| + |gold|), elementwise; 1.0 where both are empty."""
    total = predicted + gold
    return np.where(total > 0, 2 * true_positives / np.maximum(total, 1), 1.0)


def _prf(true_positives: float, predicted: float, gold: float) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts; all 1.0 when nothing is predicted or expected, else 0/0 is 0."""
    if predicted == 0 and gold == 0:
        return 1.0, 1.0, 1.0
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / gold if gold else 0.0
    return float(precision), float(recall), float(2 * true_positives / (predicted + gold))


def _scored_classes(classes: Sequence[str], gold: set[str], predicted: set[str]) -> list[str]:
    """The classes macro averages run over: spec classes and unknown gold values that occur anywhere."""
    known = [*classes, *sorted(gold - set(classes))]
    return [c for c in known if c in gold or c in predicted]


def _class_rows(
    labels: Sequence[str], precision: Any, recall: Any, f1: Any, support: Any
) -> list[ClassMetrics]:
    return [
        ClassMetrics(
            label=label,
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            support=int(support[i]),
        )
        for i, label in enumerate(labels)
    ]


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# ---------------------------------------------------------------------- per-type scorers

#: What a scorer returns for a run: (values, headline interval, per_class, confusion).
_RunScores: TypeAlias = tuple[dict[str, float | None], Interval | None, list[ClassMetrics], Confusion | None]


class _Scorer(Generic[K]):
    """How one task type reads values, judges one item and scores a whole run."""

    headline: str = "accuracy"
    paired_method: str = "mcnemar_exact"

    def key(self, spec: LabelSpec, value: Any, where: str) -> K:
        """Return the canonical, hashable form of a non-None value (raise LabelValueError if malformed)."""
        raise NotImplementedError

    def correct(self, spec: LabelSpec, gold: K, predicted: K | None) -> bool:
        """Whether one prediction is exactly right."""
        return predicted is not None and gold == predicted

    def item_score(self, spec: LabelSpec, gold: K, predicted: K | None) -> float:
        """Per-item score, higher is better."""
        return float(self.correct(spec, gold, predicted))

    def metrics(self, spec: LabelSpec, gold: list[K], predicted: list[K | None], *, seed: int) -> _RunScores:
        """Score a run: every value of the type, the headline interval, per_class and confusion."""
        raise NotImplementedError


def _accuracy_values(correct: int, n: int) -> tuple[dict[str, float | None], Interval | None]:
    if n == 0:
        return {"accuracy": None, "accuracy_low": None, "accuracy_high": None}, None
    interval = wilson_interval(correct, n)
    return {"accuracy": correct / n, "accuracy_low": interval.low, "accuracy_high": interval.high}, interval


def _str_key(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise LabelValueError(f"{where}: expected {what} (a string), got {type(value).__name__} {value!r}")
    return value


class _CategoricalScorer(_Scorer[str]):
    """single_choice and pairwise: one class name per item."""

    averages = ("macro_f1", "weighted_f1", "macro_precision", "macro_recall", "kappa")

    def __init__(self, *, detailed: bool) -> None:
        #: single_choice reports `averages` too; pairwise reports accuracy only.
        self.detailed = detailed

    def classes(self, spec: LabelSpec) -> list[str]:
        return spec.class_names() if self.detailed else list(PAIRWISE_SIDES)

    def key(self, spec: LabelSpec, value: Any, where: str) -> str:
        return _str_key(value, where, "a class name" if self.detailed else "'left' or 'right'")

    def metrics(
        self, spec: LabelSpec, gold: list[str], predicted: list[str | None], *, seed: int
    ) -> _RunScores:
        classes = self.classes(spec)
        y_pred = [p if p is not None else NO_ANSWER for p in predicted]
        n = len(gold)
        values, interval = _accuracy_values(sum(g == p for g, p in zip(gold, y_pred, strict=True)), n)
        confusion = _confusion(classes, gold, y_pred, no_answer=None in predicted)
        scored = _scored_classes(classes, set(gold), set(y_pred))
        if self.detailed:
            values.update(dict.fromkeys(self.averages))
        if not n:
            return values, None, [], confusion
        precision, recall, f1, support = precision_recall_fscore_support(
            gold, y_pred, labels=scored, average=None, zero_division=0
        )
        per_class = _class_rows(scored, precision, recall, f1, support)
        if self.detailed:
            with warnings.catch_warnings():
                # one shared label makes kappa undefined: reported as None, a warning adds nothing
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                kappa = cohen_kappa_score(gold, y_pred, labels=confusion.labels, replace_undefined_by=np.nan)
            values["macro_f1"] = float(np.mean(f1))
            values["weighted_f1"] = float(np.average(f1, weights=support))
            values["macro_precision"] = float(np.mean(precision))
            values["macro_recall"] = float(np.mean(recall))
            values["kappa"] = _none_if_nan(float(kappa))
        return values, interval, per_class, confusion


def _confusion(classes: list[str], gold: list[str], predicted: list[str], *, no_answer: bool) -> Confusion:
    unknown = sorted((set(gold) | set(predicted)) - set(classes) - {NO_ANSWER})
    labels = [*classes, *([NO_ANSWER] if no_answer else []), *unknown]
    if not gold:
        return Confusion(labels=labels, matrix=[[0] * len(labels) for _ in labels])
    matrix = confusion_matrix(gold, predicted, labels=labels)
    return Confusion(labels=labels, matrix=[[int(c) for c in row] for row in matrix])


class _TextScorer(_Scorer[str]):
    """text: right when equal after strip and casefold."""

    def key(self, spec: LabelSpec, value: Any, where: str) -> str:
        return _str_key(value, where, "a text answer").strip().casefold()

    def metrics(
        self, spec: LabelSpec, gold: list[str], predicted: list[str | None], *, seed: int
    ) -> _RunScores:
        values, interval = _accuracy_values(
            sum(g == p for g, p in zip(gold, predicted, strict=True)), len(gold)
        )
        return values, interval, [], None


class _MultiChoiceScorer(_Scorer[frozenset[str]]):
    """multi_choice: a set of class names per item; a missing prediction is the empty set."""

    headline = "micro_f1"

    def key(self, spec: LabelSpec, value: Any, where: str) -> frozenset[str]:
        if isinstance(value, str) or not isinstance(value, Sequence | set | frozenset):
            raise LabelValueError(
                f"{where}: expected a list of class names, got {type(value).__name__} {value!r}"
            )
        return frozenset(_str_key(v, where, "a class name") for v in value)

    def item_score(self, spec: LabelSpec, gold: frozenset[str], predicted: frozenset[str] | None) -> float:
        """F1 of the two label sets (1.0 when both are empty)."""
        chosen = predicted or frozenset()
        return _prf(len(gold & chosen), len(chosen), len(gold))[2]

    def metrics(
        self,
        spec: LabelSpec,
        gold: list[frozenset[str]],
        predicted: list[frozenset[str] | None],
        *,
        seed: int,
    ) -> _RunScores:
        keys = (
            "micro_f1",
            "macro_f1",
            "micro_precision",
            "micro_recall",
            "jaccard",
            "exact_match",
            "exact_match_low",
            "exact_match_high",
        )
        n = len(gold)
        if n == 0:
            return dict.fromkeys(keys), None, [], None
        chosen = [p or frozenset() for p in predicted]
        gold_seen, predicted_seen = set().union(*gold), set().union(*chosen)
        classes = spec.class_names()
        columns = [*classes, *sorted((gold_seen | predicted_seen) - set(classes))]
        binarizer = MultiLabelBinarizer(classes=columns)
        y_true = binarizer.fit_transform(gold)
        y_pred = binarizer.transform(chosen)
        counts = np.column_stack(
            [(y_true & y_pred).sum(axis=1), y_pred.sum(axis=1), y_true.sum(axis=1)]
        ).astype(float)
        precision, recall, micro_f1 = _prf(*counts.sum(axis=0))
        exact = int(sum(g == p for g, p in zip(gold, chosen, strict=True)))
        exact_interval = wilson_interval(exact, n)
        scored = _scored_classes(classes, gold_seen, predicted_seen)
        class_precision, class_recall, class_f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=[columns.index(c) for c in scored], average=None, zero_division=0
        )
        values: dict[str, float | None] = {
            "micro_f1": micro_f1,
            "macro_f1": float(np.mean(class_f1)) if scored else None,
            "micro_precision": precision,
            "micro_recall": recall,
            "jaccard": float(jaccard_score(y_true, y_pred, average="samples", zero_division=1.0)),
            "exact_match": exact / n,
            "exact_match_low": exact_interval.low,
            "exact_match_high": exact_interval.high,
        }
        sums = _bootstrap_sums(counts, seed=seed, resamples=BOOTSTRAP_RESAMPLES)
        interval = _percentile_interval(_set_f1(sums[:, 0], sums[:, 1], sums[:, 2]))
        per_class = _class_rows(scored, class_precision, class_recall, class_f1, support)
        return values, interval, per_class, None


class _NumericScorer(_Scorer[float]):
    """rating and number: errors over answered items."""

    headline = "mae"
    paired_method = "paired_bootstrap"

    def key(self, spec: LabelSpec, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise LabelValueError(f"{where}: expected a finite number, got {type(value).__name__} {value!r}")
        return float(value)

    def correct(self, spec: LabelSpec, gold: float, predicted: float | None) -> bool:
        return predicted is not None and abs(predicted - gold) <= NUMBER_TOLERANCE

    def item_score(self, spec: LabelSpec, gold: float, predicted: float | None) -> float:
        """Minus the absolute error; a missing answer costs the largest error possible.

        That is max_rating - 1 for rating; for number, the distance from the gold value to the farther
        bound when the spec has both bounds, else |gold| + 1 (worse than answering 0).
        """
        if predicted is not None:
            return -abs(predicted - gold)
        if spec.type is TaskType.rating and spec.max_rating is not None:
            return -float(spec.max_rating - 1)
        if spec.min_value is not None and spec.max_value is not None:
            return -max(abs(gold - spec.min_value), abs(spec.max_value - gold))
        return -(abs(gold) + 1)

    def metrics(
        self, spec: LabelSpec, gold: list[float], predicted: list[float | None], *, seed: int
    ) -> _RunScores:
        pairs = [(g, p) for g, p in zip(gold, predicted, strict=True) if p is not None]
        values: dict[str, float | None] = dict.fromkeys(("mae", "rmse", "exact", "within_1", "spearman"))
        values["coverage"] = len(pairs) / len(gold) if gold else None
        if not pairs:
            return values, None, [], None
        truth = np.array([g for g, _ in pairs])
        answer = np.array([p for _, p in pairs])
        errors = np.abs(answer - truth)
        values["mae"] = float(errors.mean())
        values["rmse"] = float(np.sqrt((errors**2).mean()))
        values["exact"] = float((errors <= NUMBER_TOLERANCE).mean())
        values["within_1"] = float((errors <= 1 + NUMBER_TOLERANCE).mean())
        values["spearman"] = _spearman(truth, answer)
        sums = _bootstrap_sums(errors[:, None], seed=seed, resamples=BOOTSTRAP_RESAMPLES)
        return values, _percentile_interval(sums[:, 0] / len(errors)), [], None


def _spearman(truth: NDArray[np.float64], answer: NDArray[np.float64]) -> float | None:
    """Spearman's rho; None with fewer than 3 pairs or a constant side (where it is undefined)."""
    if len(truth) < 3 or np.ptp(truth) == 0 or np.ptp(answer) == 0:
        return None
    return _none_if_nan(float(stats.spearmanr(truth, answer).statistic))


class _SpansScorer(_Scorer[frozenset[SpanKey]]):
    """spans: a set of (start, end, label) per item; a missing prediction is the empty set."""

    headline = "entity_f1"
    paired_method = "paired_bootstrap"

    def key(self, spec: LabelSpec, value: Any, where: str) -> frozenset[SpanKey]:
        if isinstance(value, str | Mapping) or not isinstance(value, Sequence):
            raise LabelValueError(f"{where}: expected a list of spans, got {type(value).__name__} {value!r}")
        spans: set[SpanKey] = set()
        for span in value:
            if not isinstance(span, Mapping) or not {"start", "end", "label"} <= span.keys():
                raise LabelValueError(f"{where}: a span needs start, end and label, got {span!r}")
            start, end, label = span["start"], span["end"], span["label"]
            if not (_is_offset(start) and _is_offset(end) and isinstance(label, str)):
                raise LabelValueError(
                    f"{where}: a span needs integer offsets and a string label, got {span!r}"
                )
            spans.add((start, end, label))
        return frozenset(spans)

    def item_score(
        self, spec: LabelSpec, gold: frozenset[SpanKey], predicted: frozenset[SpanKey] | None
    ) -> float:
        """Entity F1 of the item (1.0 when both have no spans)."""
        chosen = predicted or frozenset()
        return _prf(len(gold & chosen), len(chosen), len(gold))[2]

    def metrics(
        self,
        spec: LabelSpec,
        gold: list[frozenset[SpanKey]],
        predicted: list[frozenset[SpanKey] | None],
        *,
        seed: int,
    ) -> _RunScores:
        keys = ("precision", "recall", "f1", "entity_f1", "partial_precision", "partial_recall", "partial_f1")
        if not gold:
            return dict.fromkeys(keys), None, [], None
        chosen = [p or frozenset() for p in predicted]
        counts = np.array(
            [[len(g & p), len(p), len(g)] for g, p in zip(gold, chosen, strict=True)], dtype=float
        )
        partial = sum(_partial_matches(g, p) for g, p in zip(gold, chosen, strict=True))
        total_predicted, total_gold = counts[:, 1].sum(), counts[:, 2].sum()
        precision, recall, f1 = _prf(counts[:, 0].sum(), total_predicted, total_gold)
        partial_precision, partial_recall, partial_f1 = _prf(partial, total_predicted, total_gold)
        values: dict[str, float | None] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "entity_f1": f1,
            "partial_precision": partial_precision,
            "partial_recall": partial_recall,
            "partial_f1": partial_f1,
        }
        sums = _bootstrap_sums(counts, seed=seed, resamples=BOOTSTRAP_RESAMPLES)
        interval = _percentile_interval(_set_f1(sums[:, 0], sums[:, 1], sums[:, 2]))
        return values, interval, _span_classes(spec, gold, chosen), None


def _is_offset(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _partial_matches(gold: frozenset[SpanKey], predicted: frozenset[SpanKey]) -> int:
    """Count predicted spans overlapping a same-label gold span, each gold span used once, largest overlap first."""
    candidates: list[tuple[int, SpanKey, SpanKey]] = []
    for p in sorted(predicted):
        for g in sorted(gold):
            overlap = min(p[1], g[1]) - max(p[0], g[0])
            if p[2] == g[2] and overlap >= 1:
                candidates.append((-overlap, p, g))
    candidates.sort()
    used_predicted: set[SpanKey] = set()
    used_gold: set[SpanKey] = set()
    for _, p, g in candidates:
        if p not in used_predicted and g not in used_gold:
            used_predicted.add(p)
            used_gold.add(g)
    return len(used_gold)


def _span_classes(
    spec: LabelSpec, gold: list[frozenset[SpanKey]], predicted: list[frozenset[SpanKey]]
) -> list[ClassMetrics]:
    """Exact precision/recall/F1 per span label (0/0 is 0)."""
    true_positives: dict[str, int] = {}
    predicted_count: dict[str, int] = {}
    gold_count: dict[str, int] = {}
    for g, p in zip(gold, predicted, strict=True):
        for counter, spans in ((true_positives, g & p), (predicted_count, p), (gold_count, g)):
            for _, _, label in spans:
                counter[label] = counter.get(label, 0) + 1
    rows = []
    for label in _scored_classes(spec.class_names(), set(gold_count), set(predicted_count)):
        tp, n_predicted, n_gold = (
            true_positives.get(label, 0),
            predicted_count.get(label, 0),
            gold_count.get(label, 0),
        )
        precision = tp / n_predicted if n_predicted else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * tp / (n_predicted + n_gold) if n_predicted + n_gold else 0.0
        rows.append(ClassMetrics(label=label, precision=precision, recall=recall, f1=f1, support=n_gold))
    return rows


#: The scorer of each task type.
_SCORERS: dict[TaskType, _Scorer[Any]] = {
    TaskType.single_choice: _CategoricalScorer(detailed=True),
    TaskType.pairwise: _CategoricalScorer(detailed=False),
    TaskType.multi_choice: _MultiChoiceScorer(),
    TaskType.rating: _NumericScorer(),
    TaskType.number: _NumericScorer(),
    TaskType.text: _TextScorer(),
    TaskType.spans: _SpansScorer(),
}


def _scorer(spec: LabelSpec) -> _Scorer[Any]:
    scorer = _SCORERS.get(spec.type)
    if scorer is None:
        raise LabelSpecError(f"no metrics for the task type {spec.type!r}")
    return scorer


def _gold_keys(spec: LabelSpec, scorer: _Scorer[Any], gold: Sequence[Any]) -> list[Any]:
    keys = []
    for i, value in enumerate(gold):
        if value is None:
            raise LabelValueError(
                f"gold item {i} has no label", hint="score only items that have a trusted label"
            )
        keys.append(scorer.key(spec, value, f"gold item {i}"))
    return keys


def _predicted_keys(spec: LabelSpec, scorer: _Scorer[Any], predicted: Sequence[Any], name: str) -> list[Any]:
    return [None if v is None else scorer.key(spec, v, f"{name} item {i}") for i, v in enumerate(predicted)]


def _check_lengths(gold: Sequence[Any], **others: Sequence[Any]) -> None:
    for name, values in others.items():
        if len(values) != len(gold):
            raise LabelpilotError(
                f"gold has {len(gold)} items but {name} has {len(values)}; they must be the same items in "
                "the same order"
            )


# ---------------------------------------------------------------------- public functions


def score(spec: LabelSpec, gold: Sequence[Any], predicted: Sequence[Any | None], *, seed: int = 0) -> Metrics:
    """Score predictions against gold labels (same order; `None` = no valid prediction)."""
    scorer = _scorer(spec)
    _check_lengths(gold, predicted=predicted)
    gold_keys = _gold_keys(spec, scorer, gold)
    predicted_keys = _predicted_keys(spec, scorer, predicted, "predicted")
    n = len(gold_keys)
    answered = sum(p is not None for p in predicted_keys)
    values, interval, per_class, confusion = scorer.metrics(spec, gold_keys, predicted_keys, seed=seed)
    common: dict[str, float | None] = {
        "n": float(n),
        "answered": float(answered),
        "invalid_rate": 1 - answered / n if n else None,
    }
    return Metrics(
        task_type=spec.type.value,
        n=n,
        answered=answered,
        headline=scorer.headline,
        values={**common, **values},
        interval=interval,
        per_class=per_class,
        confusion=confusion,
    )


def item_correct(spec: LabelSpec, gold: Any, predicted: Any | None) -> bool:
    """Whether one prediction is exactly right (`None` is wrong; see the module docstring per type)."""
    scorer = _scorer(spec)
    gold_key = _gold_keys(spec, scorer, [gold])[0]
    return scorer.correct(spec, gold_key, _predicted_keys(spec, scorer, [predicted], "predicted")[0])


def item_score(spec: LabelSpec, gold: Any, predicted: Any | None) -> float:
    """Score one prediction, higher is better: 1/0, set F1, or minus the absolute error (rating, number)."""
    scorer = _scorer(spec)
    gold_key = _gold_keys(spec, scorer, [gold])[0]
    return scorer.item_score(spec, gold_key, _predicted_keys(spec, scorer, [predicted], "predicted")[0])


def paired_test(
    spec: LabelSpec,
    gold: Sequence[Any],
    a: Sequence[Any | None],
    b: Sequence[Any | None],
    *,
    seed: int = 0,
    resamples: int = 2000,
) -> PairedTest:
    """Test whether runs A and B differ on the same items: exact McNemar or a paired bootstrap.

    McNemar (single_choice, multi_choice by exact match, pairwise, text) is a two-sided binomial test on the
    items only one run got right. The bootstrap (rating, number, spans) resamples items and counts the mean
    `item_score` differences on the other side of 0 from the observed one: p = 2 (count + 1) / (resamples + 1),
    at most 1.
    """
    scorer = _scorer(spec)
    _check_lengths(gold, a=a, b=b)
    gold_keys = _gold_keys(spec, scorer, gold)
    a_keys = _predicted_keys(spec, scorer, a, "a")
    b_keys = _predicted_keys(spec, scorer, b, "b")
    n = len(gold_keys)
    differences = np.array(
        [
            scorer.item_score(spec, g, pb) - scorer.item_score(spec, g, pa)
            for g, pa, pb in zip(gold_keys, a_keys, b_keys, strict=True)
        ],
        dtype=float,
    )
    delta = float(differences.mean()) if n else 0.0
    resampled = _bootstrap_sums(differences[:, None], seed=seed, resamples=resamples)[:, 0] / n if n else None
    delta_interval = _percentile_interval(resampled) if resampled is not None else None
    if scorer.paired_method == "mcnemar_exact":
        right_a = np.array([scorer.correct(spec, g, p) for g, p in zip(gold_keys, a_keys, strict=True)], bool)
        right_b = np.array([scorer.correct(spec, g, p) for g, p in zip(gold_keys, b_keys, strict=True)], bool)
        b_only = int((right_a & ~right_b).sum())
        c_only = int((~right_a & right_b).sum())
        discordant = b_only + c_only
        p_value = float(stats.binomtest(b_only, discordant, 0.5).pvalue) if discordant else 1.0
        return PairedTest(
            method="mcnemar_exact",
            n=n,
            p_value=min(1.0, p_value),
            statistic=float(min(b_only, c_only)),
            b_only=b_only,
            c_only=c_only,
            delta=delta,
            delta_interval=delta_interval,
        )
    p_value = 1.0
    if resampled is not None and delta != 0:
        other_side = int((resampled <= 0).sum()) if delta > 0 else int((resampled >= 0).sum())
        p_value = min(1.0, 2 * (other_side + 1) / (resamples + 1))
    return PairedTest(
        method="paired_bootstrap",
        n=n,
        p_value=p_value,
        statistic=delta if n else None,
        delta=delta,
        delta_interval=delta_interval,
    )


def metric_deltas(a: Metrics, b: Metrics) -> dict[str, float | None]:
    """Return b - a for every metric both have (None where either is None)."""
    deltas: dict[str, float | None] = {}
    for key, value_a in a.values.items():
        if key not in b.values:
            continue
        value_b = b.values[key]
        deltas[key] = None if value_a is None or value_b is None else value_b - value_a
    return deltas


def per_class_deltas(a: Metrics, b: Metrics) -> list[dict[str, Any]]:
    """Compare per-class F1 of two runs, worst change first.

    Rows are {"label", "f1_a", "f1_b", "delta", "support"} over the classes of either run; a class missing
    from one run's `per_class` (it occurred in neither its gold labels nor its predictions) has F1 0 there,
    scikit-learn's zero_division=0. `support` is B's gold count (A's when B lacks the class).
    """
    rows_a = {row.label: row for row in a.per_class}
    rows_b = {row.label: row for row in b.per_class}
    labels = [*rows_a, *(label for label in rows_b if label not in rows_a)]
    rows: list[dict[str, Any]] = []
    for label in labels:
        f1_a = rows_a[label].f1 if label in rows_a else 0.0
        f1_b = rows_b[label].f1 if label in rows_b else 0.0
        support = (rows_b.get(label) or rows_a[label]).support
        rows.append({"label": label, "f1_a": f1_a, "f1_b": f1_b, "delta": f1_b - f1_a, "support": support})
    order = {label: i for i, label in enumerate(labels)}
    rows.sort(key=lambda row: (row["delta"], order[row["label"]]))
    return rows
