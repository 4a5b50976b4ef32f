"""The offline baseline labeler: sentence embeddings and nearest neighbours, no LLM, no key, $0.

It is the default labeler when no model is configured, the "$0 reference" every prompt version is compared
with, and a cheap first stage. `BaselineClassifier` is the model (labeled examples in, answers out, no
database); `BaselineLabeler` feeds it a project's ground truth and speaks the engine's `Labeler` protocol.

**What is embedded.** A task's input fields (the schema's `input_fields`, else all of its fields) joined:
the bare value when there is one field, "field: value" lines when there are several. Pairwise tasks are the
exception: each side is embedded alone and the task is the unit difference `left - right`, so the examples
learn a *direction of preference* ("the side with numbers wins"); every pairwise example also counts
mirrored (`-d` with the other side), which makes left and right symmetric. Example vectors are cached per
instance (by text); task vectors are not (memory stays flat over a bulk job).

**Strategies** (`BaselineStrategy`, one decision function per strategy and label arity in `_DECIDERS`):

- `centroid`: cosine to each class centroid (the normalised mean of its L2-normalised example vectors).
- `knn`: the `k` most similar examples vote, each weighted by `exp((sim - best) / temperature)`.
- `zero_shot`: no examples; each class is the vector of "name: description" ("card_arrival" reads as
  "card arrival"). Only for choice schemas: "left", "3" or "2.5" carry no meaning to compare with.
- `auto`: `zero_shot` without examples; `knn` (1-NN unless `k` says otherwise) with at least 20 classes and
  at least 16 examples in every class (where 1-NN beat centroids on banking77); else `centroid`.

**Class descriptions** ("name: description" vectors, choice schemas only) take part in two ways. In
centroids a description counts as `description_weight` (default 1) examples of its class: a prior that
matters with a handful of examples and fades as they grow (with 4 examples per class it added 2-9 points
of accuracy on the four benchmark datasets, with 64 it changed less than 2). And a class without examples
(or whose only example is the task itself, see below) is represented by its description alone, in every
strategy; without a description (pairwise, rating, number) such a class cannot be chosen. Such a class
rarely wins against real centroids, whose similarities run higher than a description's: the blend keeps
every class reachable, it does not make an unseen class likely.

**Task types.** single_choice and pairwise: the classes are the choices. rating and number: the distinct
values of the examples are the classes and the answer is that value (no interpolation). multi_choice: class
by class, a label is chosen when the task is closer to the class's centroid (its examples) than to its
"not" centroid (every other example): a margin above 0, a rule with no threshold fitted on the examples,
so nothing of a task leaks into its own answer and small example sets cannot overfit it. With `knn` a label
is chosen when the neighbours carrying it hold at least half of the vote; zero-shot picks the nearest class
and every class within `ZERO_SHOT_MULTI_MARGIN` of it. text and spans are not supported (`supports(spec)`
is False); every task then gets a `bad_request` outcome saying so.

**An item is never its own example.** When a task being labeled is one of the examples (evaluation on
ground truth), its rows are left out: centroids are recomputed without it, k-NN skips it. This is by task
(example key), not by text: another task with the same text is a legitimate example.

**Confidence** is the softmax probability of the chosen class over the class similarities divided by
`temperature` (centroid and zero-shot: similarity to each class; knn: similarity to each class's nearest
example). It lies in (0, 1], is 1/C for a tie of C classes and grows with the margin of the winner (with
two classes, a lead of 0.05 cosine gives 0.73, a lead of 0.15 gives 0.95). The default temperature 0.05 is
calibrated: of 0.01-0.12 it gave the lowest expected calibration error on banking77, ag_news, trec and
sst2 with 0-64 examples per class (mean ECE 0.08 for centroid, 0.05 zero-shot, 0.13 1-NN, whose nearest
neighbours are over-confident on trec and sst2). multi_choice: each class decision gets
`sigmoid(margin / temperature)` (knn: from the nearest example with and without the label) and the task's
confidence is the least certain of those decisions; zero-shot multi_choice: the probability mass of the
chosen classes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from tools.embeddings import Embedder, FloatMatrix, get_embedder
from tools.errors import ErrorKind, LabelSpecError, LabelValueError, NotFoundError
from tools.labelers import LabelerInfo, LabelerKind, LabelOutcome, TaskInput
from tools.labelspec import PAIRWISE_SIDES, LabelSpec, TaskType
from tools.prompting import as_text
from tools.storage import Database, Task

logger = logging.getLogger(__name__)

#: Texts embedded (and tasks answered) per step; outcomes are yielded after each step.
BATCH_SIZE = 64
#: Softmax temperature of the similarity margins (see the module docstring).
DEFAULT_TEMPERATURE = 0.05
#: A class description counts as this many examples of its class in centroids (see the module docstring).
DEFAULT_DESCRIPTION_WEIGHT = 1.0
#: `auto` uses k-NN from this many classes on...
AUTO_KNN_MIN_CLASSES = 20
#: ...when every class has at least this many examples.
AUTO_KNN_MIN_EXAMPLES = 16
#: Zero-shot multi_choice also picks classes this close (cosine) to the nearest one.
ZERO_SHOT_MULTI_MARGIN = 0.05
#: How many nearest examples a centroid answer names in `LabelOutcome.examples`.
SHOWN_NEIGHBOURS = 3
#: Task ids per query when reading example tasks (well under every database's parameter limit).
_READ_CHUNK = 500

IntArray = NDArray[np.intp]
BoolMatrix = NDArray[np.bool_]
_NO_CLASS = -math.inf


class BaselineStrategy(str, Enum):
    """How the baseline turns similarities into a label (see the module docstring)."""

    auto = "auto"
    centroid = "centroid"
    knn = "knn"
    zero_shot = "zero_shot"


@dataclass(frozen=True, slots=True)
class LabeledExample:
    """One labeled input the baseline compares tasks with: a unique key, the task's data and its value."""

    key: str
    data: Mapping[str, Any]
    value: Any


@dataclass(frozen=True)
class BaselineAnswer:
    """The baseline's answer for one input: a value with confidence and neighbours, or an error."""

    value: Any = None
    confidence: float | None = None
    #: Keys of the nearest examples the answer rests on (none for zero-shot).
    neighbours: list[str] = field(default_factory=list)
    error: str | None = None


# ---------------------------------------------------------------------------------------------- task types


def _require_fields(fields: Sequence[str], data: Mapping[str, Any]) -> None:
    missing = [name for name in fields if name not in data]
    if missing:
        listed = ", ".join(f"'{name}'" for name in data) or "none"
        raise LabelSpecError(
            f"the task has no field {', '.join(repr(m) for m in missing)} (its fields: {listed})"
        )


def task_text(spec: LabelSpec, data: Mapping[str, Any]) -> str:
    """Return the text a task is embedded as: its input fields, as "field: value" lines when several."""
    fields = list(spec.input_fields) or list(data)
    _require_fields(fields, data)
    if len(fields) == 1:
        return as_text(data[fields[0]])
    return "\n".join(f"{name}: {as_text(data[name])}" for name in fields)


def _joined_parts(spec: LabelSpec, data: Mapping[str, Any]) -> tuple[str, ...]:
    return (task_text(spec, data),)


def _pair_parts(spec: LabelSpec, data: Mapping[str, Any]) -> tuple[str, ...]:
    left, right = spec.pair_fields()
    _require_fields((left, right), data)
    return as_text(data[left]), as_text(data[right])


def _only_part(vectors: FloatMatrix) -> FloatMatrix:
    return np.ascontiguousarray(vectors[:, 0, :])


def _unit_difference(vectors: FloatMatrix) -> FloatMatrix:
    difference = vectors[:, 0, :] - vectors[:, 1, :]
    norms = np.linalg.norm(difference, axis=1, keepdims=True)
    return np.asarray(difference / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _spec_classes(spec: LabelSpec, values: Sequence[Any]) -> list[Any]:
    return list(spec.class_names())


def _pair_classes(spec: LabelSpec, values: Sequence[Any]) -> list[Any]:
    return list(PAIRWISE_SIDES)


def _distinct_values(spec: LabelSpec, values: Sequence[Any]) -> list[Any]:
    return sorted(set(values))


def _one_class(index: Mapping[Any, int], value: Any) -> list[int]:
    return [index[value]]


def _many_classes(index: Mapping[Any, int], value: Any) -> list[int]:
    return [index[item] for item in value]


def _class_descriptions(spec: LabelSpec) -> list[str]:
    """Return "name: description" per class, with snake_case names read as words."""
    texts = []
    for label_class in spec.classes:
        name = label_class.name.replace("_", " ").strip() or label_class.name
        texts.append(f"{name}: {label_class.description}" if label_class.description else name)
    return texts


@dataclass(frozen=True)
class _TaskTypeHandler:
    """How one task type becomes vectors and classes."""

    #: The texts embedded for one task (one, or left and right for pairwise).
    parts: Callable[[LabelSpec, Mapping[str, Any]], tuple[str, ...]]
    #: (tasks, parts, dimension) vectors -> (tasks, dimension) task vectors.
    combine: Callable[[FloatMatrix], FloatMatrix]
    #: The classes, from the schema and the canonical example values.
    classes: Callable[[LabelSpec, Sequence[Any]], list[Any]]
    #: The class indices of one canonical value.
    class_indices: Callable[[Mapping[Any, int], Any], list[int]]
    #: Texts standing for each class when it has no examples (None: no meaningful text exists).
    zero_shot_texts: Callable[[LabelSpec], list[str]] | None = None
    #: Several labels per task.
    multi: bool = False
    #: Pairwise symmetry: an example also counts as its negated vector with this other class.
    mirror: Callable[[int], int] | None = None


_HANDLERS: dict[TaskType, _TaskTypeHandler] = {
    TaskType.single_choice: _TaskTypeHandler(
        _joined_parts, _only_part, _spec_classes, _one_class, zero_shot_texts=_class_descriptions
    ),
    TaskType.multi_choice: _TaskTypeHandler(
        _joined_parts,
        _only_part,
        _spec_classes,
        _many_classes,
        zero_shot_texts=_class_descriptions,
        multi=True,
    ),
    TaskType.pairwise: _TaskTypeHandler(
        _pair_parts, _unit_difference, _pair_classes, _one_class, mirror=lambda side: 1 - side
    ),
    TaskType.rating: _TaskTypeHandler(_joined_parts, _only_part, _distinct_values, _one_class),
    TaskType.number: _TaskTypeHandler(_joined_parts, _only_part, _distinct_values, _one_class),
}


def supports(spec: LabelSpec) -> bool:
    """Return whether the baseline can label tasks of this schema (not text or spans)."""
    return spec.type in _HANDLERS


def unsupported_message(spec: LabelSpec) -> str:
    """Return why the baseline cannot label this schema."""
    return (
        f"the offline baseline cannot label {spec.type.value} tasks: it picks among labels by similarity "
        "and cannot write free text or mark spans; configure a model (OPENAI_API_KEY) for this schema"
    )


def resolve_strategy(requested: BaselineStrategy, class_counts: Sequence[int]) -> BaselineStrategy:
    """Return the strategy `auto` stands for given the examples per class (others are returned as is)."""
    if requested is not BaselineStrategy.auto:
        return requested
    if sum(class_counts) == 0:
        return BaselineStrategy.zero_shot
    if len(class_counts) >= AUTO_KNN_MIN_CLASSES and min(class_counts) >= AUTO_KNN_MIN_EXAMPLES:
        return BaselineStrategy.knn
    return BaselineStrategy.centroid


# ---------------------------------------------------------------------------------------------- the fitted index


@dataclass
class _Index:
    """Example vectors as rows (pairwise: each example twice) with their classes and owners."""

    classes: list[Any]
    vectors: FloatMatrix  # (rows, dimension)
    labels: BoolMatrix  # (rows, classes): which classes each row belongs to
    owners: IntArray  # row -> example index
    owner_rows: list[IntArray]  # example index -> its rows
    keys: list[str]  # example index -> key
    zero_shot: FloatMatrix | None  # (classes, dimension) or None
    description_weight: float
    class_rows: list[IntArray] = field(init=False)
    sums: FloatMatrix = field(init=False)  # (classes, dimension)
    counts: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        self.class_rows = [np.flatnonzero(self.labels[:, c]) for c in range(len(self.classes))]
        self.sums = np.asarray(self.labels.T.astype(np.float32) @ self.vectors, dtype=np.float32)
        self.counts = self.labels.sum(axis=0).astype(np.float64)

    @property
    def rows(self) -> int:
        return int(self.vectors.shape[0])

    def prior_sums(self, sums: FloatMatrix | None = None) -> FloatMatrix:
        """Class sums (default: of every example) plus each class's description as `description_weight`
        examples."""
        sums = self.sums if sums is None else sums
        if self.zero_shot is None or self.description_weight == 0:
            return sums
        return np.asarray(sums + self.description_weight * self.zero_shot, dtype=np.float32)


@dataclass
class _Batch:
    """One batch of task vectors with the similarities every strategy starts from."""

    vectors: FloatMatrix  # (tasks, dimension)
    excluded: list[IntArray]  # per task: the rows it must not use (its own)
    sims: FloatMatrix  # (tasks, rows), own rows set to -inf
    zero_shot_sims: FloatMatrix | None  # (tasks, classes)

    def class_counts(self, index: _Index, task: int) -> NDArray[np.float64]:
        """Examples per class available to one task (its own rows removed)."""
        rows = self.excluded[task]
        if rows.size == 0:
            return index.counts
        return np.asarray(index.counts - index.labels[rows].sum(axis=0), dtype=np.float64)

    def fallback(self, index: _Index, task: int) -> NDArray[np.float64]:
        """Per class: the zero-shot similarity standing in for a class without examples (or -inf)."""
        if self.zero_shot_sims is None:
            return np.full(len(index.classes), _NO_CLASS)
        return np.asarray(self.zero_shot_sims[task], dtype=np.float64)


@dataclass(frozen=True)
class _Decision:
    classes: list[int]  # chosen class indices (one for single-label types)
    confidence: float
    neighbour_rows: list[int]


@dataclass(frozen=True)
class _Settings:
    k: int
    temperature: float


Decider = Callable[[_Index, _Batch, _Settings], list[_Decision | str]]


def _softmax(scores: NDArray[np.float64], temperature: float) -> NDArray[np.float64]:
    finite = np.isfinite(scores)
    shifted = np.where(finite, (scores - scores[finite].max()) / temperature, -np.inf)
    weights = np.exp(shifted)
    return np.asarray(weights / weights.sum(), dtype=np.float64)


def _sigmoid(margin: NDArray[np.float64], temperature: float) -> NDArray[np.float64]:
    with np.errstate(over="ignore"):
        return np.asarray(1.0 / (1.0 + np.exp(-margin / temperature)), dtype=np.float64)


def _centroid_sims(
    vector: FloatMatrix, sums: NDArray[Any], counts: NDArray[np.float64], fallback: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Cosine of one task vector to each centroid; `fallback` where a class has no examples."""
    norms = np.linalg.norm(sums, axis=1)
    sims = (sums @ vector).astype(np.float64) / np.maximum(norms, 1e-12)
    return np.where(counts > 0, sims, fallback)


def _loo_sums(index: _Index, rows: IntArray) -> FloatMatrix:
    """Class sums without the given rows."""
    if rows.size == 0:
        return index.sums
    return np.asarray(index.sums - index.labels[rows].T.astype(np.float32) @ index.vectors[rows])


def _nearest(sims: FloatMatrix, rows: IntArray, count: int) -> list[int]:
    """Return up to `count` of `rows`, most similar first, skipping excluded (-inf) rows."""
    if rows.size == 0:
        return []
    values = sims[rows]
    order = np.argsort(-values, kind="stable")[:count]
    return [int(rows[i]) for i in order if np.isfinite(values[i])]


_ALL_EXCLUDED = "its only examples are the task itself; nothing is left to compare it with"


def _decide_centroid(index: _Index, batch: _Batch, settings: _Settings) -> list[_Decision | str]:
    sums = index.prior_sums()
    norms = np.maximum(np.linalg.norm(sums, axis=1), 1e-12)
    shared = (batch.vectors @ sums.T).astype(np.float64) / norms  # (tasks, classes), nobody left out
    decisions: list[_Decision | str] = []
    for t, vector in enumerate(batch.vectors):
        rows = batch.excluded[t]
        if rows.size:
            loo_sums = index.prior_sums(_loo_sums(index, rows))
            scores = _centroid_sims(vector, loo_sums, batch.class_counts(index, t), batch.fallback(index, t))
        else:
            scores = np.where(index.counts > 0, shared[t], batch.fallback(index, t))
        if not np.isfinite(scores).any():
            decisions.append(_ALL_EXCLUDED)
            continue
        chosen = int(np.argmax(scores))
        confidence = float(_softmax(scores, settings.temperature)[chosen])
        neighbours = _nearest(batch.sims[t], index.class_rows[chosen], SHOWN_NEIGHBOURS)
        decisions.append(_Decision([chosen], confidence, neighbours))
    return decisions


def _class_best(index: _Index, sims: FloatMatrix) -> NDArray[np.float64]:
    """Similarity of each task to the nearest (not excluded) example of each class, -inf when none."""
    best = np.full((sims.shape[0], len(index.classes)), _NO_CLASS)
    for c, rows in enumerate(index.class_rows):
        if rows.size:
            best[:, c] = sims[:, rows].max(axis=1)
    return best


def _top_rows(sims: FloatMatrix, k: int) -> IntArray:
    """Indices of the k largest finite similarities, largest first."""
    finite = int(np.isfinite(sims).sum())
    k = min(k, finite)
    if k == 0:
        return np.empty(0, dtype=np.intp)
    top = np.argpartition(-sims, k - 1)[:k] if k < sims.size else np.arange(sims.size)
    return np.asarray(top[np.argsort(-sims[top], kind="stable")], dtype=np.intp)


def _decide_knn(index: _Index, batch: _Batch, settings: _Settings) -> list[_Decision | str]:
    decisions: list[_Decision | str] = []
    n_classes = len(index.classes)
    class_best = _class_best(index, batch.sims)
    for t in range(len(batch.vectors)):
        best = class_best[t]
        # Classes with no example left are represented by their zero-shot vector (or cannot win).
        stand_ins = np.where(np.isfinite(best), _NO_CLASS, batch.fallback(index, t))
        scores = np.where(np.isfinite(best), best, stand_ins)
        if not np.isfinite(scores).any():
            decisions.append(_ALL_EXCLUDED)
            continue
        candidates = np.concatenate([batch.sims[t].astype(np.float64), stand_ins])
        top = _top_rows(candidates, settings.k)
        top_sim = candidates[top[0]]
        votes = np.zeros(n_classes)
        for row in top:
            weight = math.exp((candidates[row] - top_sim) / settings.temperature)
            if row < index.rows:
                votes[index.labels[row]] += weight
            else:
                votes[row - index.rows] += weight
        # Ties in the vote go to the class with the nearer example.
        chosen = int(np.lexsort((-scores, -votes))[0])
        confidence = float(_softmax(scores, settings.temperature)[chosen])
        decisions.append(_Decision([chosen], confidence, [int(r) for r in top if r < index.rows]))
    return decisions


def _decide_zero_shot(index: _Index, batch: _Batch, settings: _Settings) -> list[_Decision | str]:
    assert batch.zero_shot_sims is not None  # callers check that the schema has zero-shot texts
    decisions: list[_Decision | str] = []
    for scores in batch.zero_shot_sims.astype(np.float64):
        chosen = int(np.argmax(scores))
        decisions.append(_Decision([chosen], float(_softmax(scores, settings.temperature)[chosen]), []))
    return decisions


def _multi_decision(
    margins: NDArray[np.float64], settings: _Settings, neighbour_rows: list[int]
) -> _Decision:
    margins = np.nan_to_num(margins, nan=-np.inf)
    probabilities = _sigmoid(margins, settings.temperature)
    chosen = [int(c) for c in np.flatnonzero(margins > 0)]
    confidence = float(np.maximum(probabilities, 1.0 - probabilities).min())
    return _Decision(chosen, confidence, neighbour_rows)


def _decide_multi_centroid(index: _Index, batch: _Batch, settings: _Settings) -> list[_Decision | str]:
    decisions: list[_Decision | str] = []
    total = index.vectors.sum(axis=0)
    for t, vector in enumerate(batch.vectors):
        rows = batch.excluded[t]
        available = index.rows - rows.size
        if available == 0:
            decisions.append(_ALL_EXCLUDED)
            continue
        positives = _loo_sums(index, rows)
        remaining = np.asarray(total - index.vectors[rows].sum(axis=0))
        counts = batch.class_counts(index, t)
        negative_counts = available - counts
        positive = _centroid_sims(vector, index.prior_sums(positives), counts, batch.fallback(index, t))
        # No negative example: every example carries the class, so it is chosen (margin +inf).
        no_negatives = np.full(len(index.classes), _NO_CLASS)
        negative = _centroid_sims(vector, remaining[None, :] - positives, negative_counts, no_negatives)
        neighbours = _nearest(batch.sims[t], np.arange(index.rows), SHOWN_NEIGHBOURS)
        decisions.append(_multi_decision(positive - negative, settings, neighbours))
    return decisions


def _decide_multi_knn(index: _Index, batch: _Batch, settings: _Settings) -> list[_Decision | str]:
    decisions: list[_Decision | str] = []
    for t in range(len(batch.vectors)):
        sims = batch.sims[t].astype(np.float64)
        top = _top_rows(sims, settings.k)
        if top.size == 0:
            decisions.append(_ALL_EXCLUDED)
            continue
        weights = np.exp((sims[top] - sims[top[0]]) / settings.temperature)
        share = (weights[:, None] * index.labels[top]).sum(axis=0) / weights.sum()
        # Confidence per class: nearest example with the label against the nearest one without it.
        with_label = np.where(index.labels, sims[:, None], -np.inf).max(axis=0)
        without_label = np.where(~index.labels, sims[:, None], -np.inf).max(axis=0)
        decision = _multi_decision(with_label - without_label, settings, [int(r) for r in top])
        chosen = [int(c) for c in np.flatnonzero(share >= 0.5)]
        decisions.append(_Decision(chosen, decision.confidence, decision.neighbour_rows))
    return decisions


def _decide_multi_zero_shot(index: _Index, batch: _Batch, settings: _Settings) -> list[_Decision | str]:
    assert batch.zero_shot_sims is not None
    decisions: list[_Decision | str] = []
    for scores in batch.zero_shot_sims.astype(np.float64):
        chosen = [int(c) for c in np.flatnonzero(scores >= scores.max() - ZERO_SHOT_MULTI_MARGIN)]
        confidence = float(_softmax(scores, settings.temperature)[chosen].sum())
        decisions.append(_Decision(chosen, min(confidence, 1.0), []))
    return decisions


#: (strategy, several labels per task) -> decision function.
_DECIDERS: dict[tuple[BaselineStrategy, bool], Decider] = {
    (BaselineStrategy.centroid, False): _decide_centroid,
    (BaselineStrategy.knn, False): _decide_knn,
    (BaselineStrategy.zero_shot, False): _decide_zero_shot,
    (BaselineStrategy.centroid, True): _decide_multi_centroid,
    (BaselineStrategy.knn, True): _decide_multi_knn,
    (BaselineStrategy.zero_shot, True): _decide_multi_zero_shot,
}


# ---------------------------------------------------------------------------------------------- the classifier


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class BaselineClassifier:
    """Labels inputs by embedding similarity to labeled examples (see the module docstring).

    Building it is cheap; the example vectors are computed on the first `fit`/`predict` (thread-safe).
    """

    def __init__(
        self,
        spec: LabelSpec,
        examples: Sequence[LabeledExample],
        *,
        embedder: Embedder,
        strategy: BaselineStrategy | str = BaselineStrategy.auto,
        k: int = 1,
        temperature: float = DEFAULT_TEMPERATURE,
        description_weight: float = DEFAULT_DESCRIPTION_WEIGHT,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        """Prepare a classifier.

        Args:
            spec: the label schema (must be supported, see `supports`).
            examples: labeled inputs with canonical values of `spec` and unique keys (ignored by zero_shot).
            embedder: turns texts into unit vectors.
            strategy: centroid, knn, zero_shot or auto.
            k: neighbours that vote with knn (at least 1).
            temperature: softmax temperature of the confidence (greater than 0).
            description_weight: how many examples a class description counts as in centroids (0: only
                for classes without examples; choice schemas only).
            batch_size: texts embedded per call.
        """
        if not supports(spec):
            raise LabelSpecError(unsupported_message(spec))
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not temperature > 0:
            raise ValueError(f"temperature must be greater than 0, got {temperature}")
        if not description_weight >= 0:
            raise ValueError(f"description_weight must be 0 or more, got {description_weight}")
        keys = [example.key for example in examples]
        if len(set(keys)) != len(keys):
            raise ValueError("example keys must be unique")
        self.spec = spec
        self.embedder = embedder
        self.requested = BaselineStrategy(strategy)
        self.k = k
        self.temperature = temperature
        self.description_weight = description_weight
        self.batch_size = batch_size
        self._handler = _HANDLERS[spec.type]
        self.examples: list[LabeledExample] = []
        self._example_parts: list[tuple[str, ...]] = []
        if self.requested is not BaselineStrategy.zero_shot:
            self._prepare(examples)
        self.classes = self._handler.classes(spec, [example.value for example in self.examples])
        class_index = {value: i for i, value in enumerate(self.classes)}
        self._example_classes = [self._handler.class_indices(class_index, e.value) for e in self.examples]
        self.class_counts = [0] * len(self.classes)
        for indices in self._example_classes:
            for c in indices:
                self.class_counts[c] += 1
        self.strategy = resolve_strategy(self.requested, self.class_counts)
        self._key_index = {example.key: i for i, example in enumerate(self.examples)}
        self._cache: dict[str, NDArray[np.float32]] = {}
        self._index: _Index | None = None
        self._lock = threading.Lock()

    def _prepare(self, examples: Sequence[LabeledExample]) -> None:
        """Keep the examples with canonical values; skip (and log) those lacking an input field."""
        for example in examples:
            try:
                value = self.spec.validate_value(example.value)
            except LabelValueError as exc:
                raise LabelValueError(f"example '{example.key}': {exc.message}", hint=exc.hint) from None
            try:
                parts = self._handler.parts(self.spec, example.data)
            except LabelSpecError as exc:
                logger.warning("baseline: skipping example '%s': %s", example.key, exc.message)
                continue
            self.examples.append(LabeledExample(example.key, example.data, value))
            self._example_parts.append(parts)

    @property
    def name(self) -> str:
        """Short name of the method, e.g. 'minilm-centroid' or 'minilm-1nn'."""
        method = f"{self.k}nn" if self.strategy is BaselineStrategy.knn else self.strategy.value
        return f"{self.embedder.name}-{method}"

    @property
    def unavailable_reason(self) -> str | None:
        """None when the classifier can answer, else why not (no examples and no zero-shot texts)."""
        if self._handler.zero_shot_texts is None and (
            self.strategy is BaselineStrategy.zero_shot or not self.examples
        ):
            return (
                f"the offline baseline needs labeled examples for {self.spec.type.value} tasks "
                "(their labels have no names to compare with); add ground truth first"
            )
        return None

    # ------------------------------------------------------------------ vectors

    def _embed_texts(self, texts: Sequence[str], *, remember: bool) -> FloatMatrix:
        """Embed texts in batches, reusing (and with `remember`, filling) the example cache."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh: dict[str, NDArray[np.float32]] = {}
        for chunk in _chunks(missing, self.batch_size):
            for text, vector in zip(chunk, self.embedder.embed(list(chunk)), strict=True):
                fresh[text] = vector
        if remember:
            self._cache.update(fresh)
        if not texts:
            return np.zeros((0, self.embedder.dimension), dtype=np.float32)
        return np.stack([self._cache[t] if t in self._cache else fresh[t] for t in texts]).astype(np.float32)

    def _vectors(self, parts: Sequence[tuple[str, ...]], *, remember: bool) -> FloatMatrix:
        if not parts:
            return np.zeros((0, self.embedder.dimension), dtype=np.float32)
        width = len(parts[0])
        flat = self._embed_texts([text for item in parts for text in item], remember=remember)
        return self._handler.combine(flat.reshape(len(parts), width, -1))

    # ------------------------------------------------------------------ fitting

    def fit(self) -> None:
        """Embed the examples (and class descriptions) now; later calls return at once."""
        with self._lock:
            if self._index is None:
                self._index = self._build_index()

    def _build_index(self) -> _Index:
        handler = self._handler
        vectors = self._vectors(self._example_parts, remember=True)
        n_classes = len(self.classes)
        row_vectors, row_labels, owners = [], [], []
        for i, indices in enumerate(self._example_classes):
            label_row = np.zeros(n_classes, dtype=np.bool_)
            label_row[indices] = True
            row_vectors.append(vectors[i])
            row_labels.append(label_row)
            owners.append(i)
            if handler.mirror is not None:
                mirrored = np.zeros(n_classes, dtype=np.bool_)
                mirrored[[handler.mirror(c) for c in indices]] = True
                row_vectors.append(-vectors[i])
                row_labels.append(mirrored)
                owners.append(i)
        dimension = self.embedder.dimension
        owner_array = np.asarray(owners, dtype=np.intp)
        zero_shot = None
        if handler.zero_shot_texts is not None:
            zero_shot = self._embed_texts(handler.zero_shot_texts(self.spec), remember=True)
        return _Index(
            classes=self.classes,
            vectors=np.stack(row_vectors) if row_vectors else np.zeros((0, dimension), dtype=np.float32),
            labels=np.stack(row_labels) if row_labels else np.zeros((0, n_classes), dtype=np.bool_),
            owners=owner_array,
            owner_rows=list(np.arange(len(owners), dtype=np.intp).reshape(len(self.examples), -1))
            if owners
            else [],
            keys=[example.key for example in self.examples],
            zero_shot=zero_shot,
            description_weight=self.description_weight,
        )

    # ------------------------------------------------------------------ predicting

    def predict(
        self, inputs: Sequence[Mapping[str, Any]], *, exclude: Sequence[str | None] | None = None
    ) -> list[BaselineAnswer]:
        """Answer each input; `exclude[i]` names the example input i is (left out of its own answer)."""
        if exclude is not None and len(exclude) != len(inputs):
            raise ValueError("exclude must name one example key (or None) per input")
        reason = self.unavailable_reason
        if reason is not None:
            return [BaselineAnswer(error=reason) for _ in inputs]
        self.fit()
        answers: list[BaselineAnswer] = []
        for start in range(0, len(inputs), self.batch_size):
            batch_inputs = inputs[start : start + self.batch_size]
            batch_exclude = exclude[start : start + self.batch_size] if exclude is not None else None
            answers.extend(self._predict_batch(batch_inputs, batch_exclude))
        return answers

    def _predict_batch(
        self, inputs: Sequence[Mapping[str, Any]], exclude: Sequence[str | None] | None
    ) -> list[BaselineAnswer]:
        index = self._index
        assert index is not None
        answers: list[BaselineAnswer | None] = [None] * len(inputs)
        parts: list[tuple[str, ...]] = []
        positions: list[int] = []
        for i, data in enumerate(inputs):
            try:
                parts.append(self._handler.parts(self.spec, data))
            except LabelSpecError as exc:
                answers[i] = BaselineAnswer(error=exc.message)
                continue
            positions.append(i)
        if positions:
            vectors = self._vectors(parts, remember=False)
            no_rows = np.empty(0, dtype=np.intp)
            excluded = [
                index.owner_rows[self._key_index[key]]
                if exclude is not None and (key := exclude[i]) is not None and key in self._key_index
                else no_rows
                for i in positions
            ]
            sims = (vectors @ index.vectors.T).astype(np.float32)
            for t, rows in enumerate(excluded):
                sims[t, rows] = -np.inf
            zero_shot_sims = None if index.zero_shot is None else vectors @ index.zero_shot.T
            batch = _Batch(vectors, excluded, sims, zero_shot_sims)
            decide = _DECIDERS[(self.strategy, self._handler.multi)]
            settings = _Settings(k=self.k, temperature=self.temperature)
            for i, decision in zip(positions, decide(index, batch, settings), strict=True):
                answers[i] = self._answer(index, decision)
        return [answer if answer is not None else BaselineAnswer(error="no answer") for answer in answers]

    def _answer(self, index: _Index, decision: _Decision | str) -> BaselineAnswer:
        if isinstance(decision, str):
            return BaselineAnswer(error=decision)
        if self._handler.multi:
            value: Any = [self.classes[c] for c in sorted(decision.classes)]
        else:
            value = self.classes[decision.classes[0]]
        neighbours = list(
            dict.fromkeys(index.keys[int(index.owners[row])] for row in decision.neighbour_rows)
        )
        confidence = min(1.0, max(0.0, decision.confidence))
        return BaselineAnswer(value=value, confidence=confidence, neighbours=neighbours)


# ---------------------------------------------------------------------------------------------- the labeler


def examples_fingerprint(examples: Mapping[int, Any]) -> str:
    """Return a short hash of an example set: its sorted (task id, value) pairs."""
    pairs = sorted(examples.items())
    canonical = json.dumps(pairs, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _spec_fingerprint(spec: LabelSpec) -> str:
    canonical = json.dumps(spec.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class BaselineLabeler:
    """The offline baseline behind the `Labeler` protocol: a project's examples, embeddings, no LLM."""

    def __init__(
        self,
        db: Database,
        project_name: str | int,
        *,
        embedder: Embedder | None = None,
        strategy: BaselineStrategy | str = BaselineStrategy.auto,
        k: int = 1,
        examples: Mapping[int, Any] | None = None,
        exclude_self: bool = True,
        temperature: float = DEFAULT_TEMPERATURE,
        description_weight: float = DEFAULT_DESCRIPTION_WEIGHT,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        """Read the project's schema and examples; nothing is embedded until `label` is called.

        Args:
            db: the database holding the project.
            project_name: the project's name or id.
            embedder: sentence embedder (default: all-MiniLM-L6-v2 in numpy, loaded on first use).
            strategy: centroid, knn, zero_shot or auto (see the module docstring).
            k: neighbours that vote with knn.
            examples: {task id: label value} to learn from (default: the project's current ground truth).
                Values are checked against the schema; an unknown task id or a misfit value is an error.
            exclude_self: leave a task out of its own examples (keep True for evaluation on ground truth).
            temperature: softmax temperature of the confidence.
            description_weight: how many examples a class description counts as in centroids.
            batch_size: tasks embedded and answered per step (outcomes are yielded after each step).
        """
        from tools.groundtruth import current_labels
        from tools.projects import get_project, require_spec

        self.embedder = embedder if embedder is not None else get_embedder("minilm")
        self.exclude_self = exclude_self
        self.batch_size = batch_size
        requested = BaselineStrategy(strategy)
        with db.session() as session:
            project = get_project(session, project_name)
            self.spec = spec = require_spec(project)
            self.project_id = project.id
            given = examples is not None
            values = dict(examples) if examples is not None else current_labels(session, project.id)
            if not supports(spec) or requested is BaselineStrategy.zero_shot:
                values = {}
            rows = self._read_tasks(session, project.id, sorted(values))
        missing = sorted(set(values) - set(rows))
        if missing:
            shown = ", ".join(str(i) for i in missing[:10])
            raise NotFoundError(f"examples name task ids that are not in project '{project_name}': {shown}")
        self.example_values = self._canonical_values(spec, values, rows, strict=given)
        self._external_ids = {task_id: rows[task_id][0] for task_id in self.example_values}
        self.classifier: BaselineClassifier | None = None
        resolved = requested
        if supports(spec):
            labeled = [
                LabeledExample(rows[task_id][0], rows[task_id][1], value)
                for task_id, value in self.example_values.items()
            ]
            self.classifier = BaselineClassifier(
                spec,
                labeled,
                embedder=self.embedder,
                strategy=requested,
                k=k,
                temperature=temperature,
                description_weight=description_weight,
                batch_size=batch_size,
            )
            resolved = self.classifier.strategy
        method = f"{k}nn" if resolved is BaselineStrategy.knn else resolved.value
        self._info = LabelerInfo(
            kind=LabelerKind.baseline,
            model=f"baseline:{self.embedder.name}-{method}",
            identity={
                "strategy": requested.value,
                "resolved_strategy": resolved.value,
                "embedder": self.embedder.name,
                "k": k,
                "temperature": temperature,
                "description_weight": description_weight,
                "exclude_self": exclude_self,
                "examples": examples_fingerprint(self.example_values),
                "example_count": len(self.example_values),
                "schema": _spec_fingerprint(spec),
            },
        )

    @staticmethod
    def _read_tasks(session: Session, project_id: int, task_ids: Sequence[int]) -> dict[int, tuple[str, Any]]:
        rows: dict[int, tuple[str, Any]] = {}
        for chunk in _chunks(task_ids, _READ_CHUNK):
            query = select(Task.id, Task.external_id, Task.data).where(
                Task.project_id == project_id, Task.id.in_(list(chunk))
            )
            for task_id, external_id, data in session.execute(query):
                rows[task_id] = (external_id, data)
        return rows

    @staticmethod
    def _canonical_values(
        spec: LabelSpec, values: Mapping[int, Any], rows: Mapping[int, tuple[str, Any]], *, strict: bool
    ) -> dict[int, Any]:
        """Validate example values; given examples must fit, ground truth that no longer fits is skipped."""
        canonical: dict[int, Any] = {}
        for task_id, value in values.items():
            try:
                canonical[task_id] = spec.validate_value(value)
            except LabelValueError as exc:
                where = f"example task '{rows[task_id][0]}'"
                if strict:
                    raise LabelValueError(f"{where}: {exc.message}", hint=exc.hint) from None
                logger.warning("baseline: skipping %s, its label no longer fits the schema: %s", where, exc)
        return canonical

    @staticmethod
    def supports(spec: LabelSpec) -> bool:
        """Return whether the baseline can label tasks of this schema (not text or spans)."""
        return supports(spec)

    @property
    def info(self) -> LabelerInfo:
        """Kind, model (e.g. 'baseline:minilm-centroid') and identity (strategy, embedder, examples)."""
        return self._info

    async def label(self, tasks: Sequence[TaskInput]) -> AsyncIterator[LabelOutcome]:
        """Label tasks in batches, yielding each batch's outcomes; CPU work runs in a worker thread."""
        classifier = self.classifier
        if classifier is None:
            message = unsupported_message(self.spec)
            for task in tasks:
                yield LabelOutcome(
                    task_id=task.task_id,
                    error_kind=ErrorKind.bad_request,
                    error_message=message,
                    cost_usd=0.0,
                )
            return
        for batch in _chunks(tasks, self.batch_size):
            started = time.perf_counter()
            answers = await asyncio.to_thread(self._answer_batch, classifier, batch)
            latency_ms = (time.perf_counter() - started) * 1000 / max(len(batch), 1)
            for task, answer in zip(batch, answers, strict=True):
                yield self._outcome(task, answer, latency_ms)

    def _answer_batch(
        self, classifier: BaselineClassifier, batch: Sequence[TaskInput]
    ) -> list[BaselineAnswer]:
        exclude = [self._external_ids.get(task.task_id) if self.exclude_self else None for task in batch]
        return classifier.predict([task.data for task in batch], exclude=exclude)

    @staticmethod
    def _outcome(task: TaskInput, answer: BaselineAnswer, latency_ms: float) -> LabelOutcome:
        if answer.error is not None:
            return LabelOutcome(
                task_id=task.task_id,
                error_kind=ErrorKind.bad_request,
                error_message=answer.error,
                cost_usd=0.0,
                latency_ms=latency_ms,
            )
        return LabelOutcome(
            task_id=task.task_id,
            value=answer.value,
            confidence=answer.confidence,
            examples=answer.neighbours,
            cost_usd=0.0,
            latency_ms=latency_ms,
        )
