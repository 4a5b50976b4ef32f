"""Metrics by task type: small cases computed by hand, agreement with scikit-learn, intervals and tests."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    jaccard_score,
    precision_recall_fscore_support,
)
from sklearn.preprocessing import MultiLabelBinarizer

from evals.metrics import (
    NO_ANSWER,
    ClassMetrics,
    Confusion,
    Metrics,
    item_correct,
    item_score,
    metric_deltas,
    paired_test,
    per_class_deltas,
    score,
    wilson_interval,
)
from tools.errors import LabelpilotError, LabelValueError
from tools.labelspec import LabelSpec, Span, TaskType

SINGLE = LabelSpec.from_classes(["a", "b", "c"])
MULTI = LabelSpec.from_classes(["x", "y", "z"], type="multi_choice")
RATING = LabelSpec.from_classes([], type="rating", max_rating=5)
NUMBER = LabelSpec.from_classes([], type="number", min_value=0, max_value=10)
FREE_NUMBER = LabelSpec.from_classes([], type="number")
TEXT = LabelSpec.from_classes([], type="text")
PAIRWISE = LabelSpec.from_classes([], type="pairwise", input_fields=["left_text", "right_text"])
SPANS = LabelSpec.from_classes(["PER", "ORG"], type="spans")


def span(start: int, end: int, label: str) -> Span:
    return {"start": start, "end": end, "text": "x" * (end - start), "label": label}


def per_class(metrics: Metrics) -> dict[str, tuple[float, float, float, int]]:
    return {row.label: (row.precision, row.recall, row.f1, row.support) for row in metrics.per_class}


def approx_dict(expected: dict[str, Any]) -> Any:
    return pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------- hand-computed cases


def test_single_choice_by_hand() -> None:
    metrics = score(SINGLE, ["a", "a", "b", "c"], ["a", "b", "b", None])
    interval = wilson_interval(2, 4)
    assert metrics.values == approx_dict(
        {
            "n": 4.0,
            "answered": 3.0,
            "invalid_rate": 0.25,  # 1 - 3/4
            "accuracy": 0.5,  # items 1 and 3 right
            "accuracy_low": interval.low,
            "accuracy_high": interval.high,
            # a: P 1/1, R 1/2, F1 2/3;  b: P 1/2, R 1/1, F1 2/3;  c: never predicted, P = R = F1 = 0
            "macro_f1": 4 / 9,  # (2/3 + 2/3 + 0) / 3
            "weighted_f1": 0.5,  # (2 * 2/3 + 1 * 2/3 + 1 * 0) / 4
            "macro_precision": 0.5,  # (1 + 1/2 + 0) / 3
            "macro_recall": 0.5,  # (1/2 + 1 + 0) / 3
            # po = 1/2; pe = gold(a) pred(a) + gold(b) pred(b) = 2/4 * 1/4 + 1/4 * 2/4 = 1/4
            "kappa": 1 / 3,  # (1/2 - 1/4) / (1 - 1/4)
        }
    )
    assert metrics.headline == "accuracy" and metrics.headline_value == 0.5
    assert metrics.interval == interval
    assert per_class(metrics) == {
        "a": (1.0, 0.5, pytest.approx(2 / 3), 2),
        "b": (0.5, 1.0, pytest.approx(2 / 3), 1),
        "c": (0.0, 0.0, 0.0, 1),
    }
    assert metrics.confusion == Confusion(
        labels=["a", "b", "c", NO_ANSWER],
        matrix=[[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
    )


def test_single_choice_unknown_prediction_is_an_error_and_a_confusion_column() -> None:
    metrics = score(SINGLE, ["a", "b"], ["zzz", "b"])
    assert metrics.values["accuracy"] == 0.5
    assert metrics.confusion is not None
    assert metrics.confusion.labels == ["a", "b", "c", "zzz"]
    assert metrics.confusion.matrix[0] == [0, 0, 0, 1]
    # macro averages run over the classes that occur (a, b), not over the invented one
    assert [row.label for row in metrics.per_class] == ["a", "b"]
    # a: never predicted, F1 0;  b: predicted once and right, F1 1  ->  macro (0 + 1) / 2
    assert metrics.values["macro_f1"] == 0.5
    assert per_class(metrics) == {"a": (0.0, 0.0, 0.0, 1), "b": (1.0, 1.0, 1.0, 1)}


def test_kappa_is_none_when_undefined() -> None:
    metrics = score(SINGLE, ["a", "a", "a"], ["a", "a", "a"])
    assert metrics.values["accuracy"] == 1.0
    assert metrics.values["kappa"] is None


def test_multi_choice_by_hand() -> None:
    gold = [["x", "y"], ["z"], []]
    predicted: list[list[str] | None] = [["x"], ["y", "z"], None]
    metrics = score(MULTI, gold, predicted)
    interval = wilson_interval(1, 3)
    # per item (TP, predicted, gold): (1, 1, 2), (1, 2, 1), (0, 0, 0)
    assert metrics.values == approx_dict(
        {
            "n": 3.0,
            "answered": 2.0,
            "invalid_rate": 1 / 3,
            "micro_f1": 2 / 3,  # 2 * 2 / (3 + 3)
            "macro_f1": 2 / 3,  # x: 1, y: 0 (predicted once, wrong), z: 1
            "micro_precision": 2 / 3,  # 2 / 3
            "micro_recall": 2 / 3,  # 2 / 3
            "jaccard": 2 / 3,  # (1/2 + 1/2 + 1 for two empty sets) / 3
            "exact_match": 1 / 3,  # only the empty item
            "exact_match_low": interval.low,
            "exact_match_high": interval.high,
        }
    )
    assert metrics.headline == "micro_f1"
    assert metrics.interval is not None and metrics.interval.method == "bootstrap"
    assert per_class(metrics) == {"x": (1.0, 1.0, 1.0, 1), "y": (0.0, 0.0, 0.0, 1), "z": (1.0, 1.0, 1.0, 1)}
    assert metrics.confusion is None
    assert item_score(MULTI, ["x", "y"], ["x"]) == pytest.approx(2 / 3)  # 2 * 1 / (1 + 2)
    assert item_score(MULTI, [], []) == 1.0
    assert item_score(MULTI, ["x"], None) == 0.0
    assert item_correct(MULTI, ["x", "y"], ["y", "x"])
    assert not item_correct(MULTI, ["x", "y"], ["x"])


def test_rating_by_hand() -> None:
    metrics = score(RATING, [1, 2, 3, 4, 5], [1, 3, 5, None, 4])
    # answered pairs (1,1) (2,3) (3,5) (5,4): absolute errors 0, 1, 2, 1
    # Spearman: gold ranks 1 2 3 4, predicted ranks 1 2 4 3, sum d^2 = 2 -> 1 - 6 * 2 / (4 * 15) = 0.8
    assert metrics.values == approx_dict(
        {
            "n": 5.0,
            "answered": 4.0,
            "invalid_rate": 0.2,
            "mae": 1.0,  # (0 + 1 + 2 + 1) / 4
            "rmse": math.sqrt(1.5),  # sqrt((0 + 1 + 4 + 1) / 4)
            "exact": 0.25,
            "within_1": 0.75,
            "spearman": 0.8,
            "coverage": 0.8,
        }
    )
    assert metrics.headline == "mae" and metrics.per_class == [] and metrics.confusion is None
    assert metrics.interval is not None
    assert metrics.interval.method == "bootstrap"
    assert 0.0 <= metrics.interval.low <= 1.0 <= metrics.interval.high <= 2.0
    assert item_score(RATING, 2, 5) == -3.0
    assert item_score(RATING, 2, None) == -4.0  # max_rating - 1
    assert item_correct(RATING, 3, 3) and not item_correct(RATING, 3, None)


def test_spearman_is_none_for_constant_or_tiny_input() -> None:
    assert score(RATING, [1, 2, 3], [2, 2, 2]).values["spearman"] is None
    assert score(RATING, [1, 2, 3, 4], [1, 2, None, None]).values["spearman"] is None
    assert score(RATING, [1, 2, 3], [None, None, None]).values["mae"] is None


def test_number_correctness_and_missing_answer_penalty() -> None:
    assert item_correct(NUMBER, 1.0, 1.0 + 1e-12)
    assert not item_correct(NUMBER, 1.0, 1.1)
    assert item_score(NUMBER, 3.0, None) == -7.0  # farther bound: 10 - 3
    assert item_score(FREE_NUMBER, -2.0, None) == -3.0  # no bounds: |gold| + 1
    metrics = score(NUMBER, [1.5, 2.0], [2.5, 2.0])
    assert metrics.values["mae"] == 0.5 and metrics.values["exact"] == 0.5


def test_text_compares_after_strip_and_casefold() -> None:
    assert item_correct(TEXT, "Paris ", "paris")
    assert item_correct(TEXT, "STRASSE", "straße")
    metrics = score(TEXT, ["Paris", "Rome", "Oslo"], [" paris", "Milan", None])
    assert metrics.values["accuracy"] == pytest.approx(1 / 3)
    assert metrics.per_class == [] and metrics.confusion is None


def test_pairwise_by_hand() -> None:
    metrics = score(PAIRWISE, ["left", "left", "right", "right"], ["left", "right", "right", None])
    assert metrics.values["accuracy"] == 0.5
    assert metrics.interval == wilson_interval(2, 4)
    assert metrics.confusion == Confusion(
        labels=["left", "right", NO_ANSWER], matrix=[[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    )
    assert "macro_f1" not in metrics.values


def test_spans_exact_and_partial_by_hand() -> None:
    gold = [[span(0, 5, "PER"), span(10, 15, "ORG")], [span(0, 4, "PER")], []]
    predicted: list[list[Span] | None] = [
        [span(0, 5, "PER"), span(11, 15, "ORG")],  # one exact, one overlapping by 4
        [span(2, 8, "PER"), span(20, 25, "ORG")],  # PER overlaps gold by 2; ORG has no gold
        None,
    ]
    metrics = score(SPANS, gold, predicted)
    # exact: TP 1 of 4 predicted and 3 gold spans; partial: 3 matches (PER 0-5, ORG 11-15, PER 2-8)
    assert metrics.values == approx_dict(
        {
            "n": 3.0,
            "answered": 2.0,
            "invalid_rate": 1 / 3,
            "precision": 0.25,  # 1 / 4
            "recall": 1 / 3,  # 1 / 3
            "f1": 2 / 7,  # 2 * 1 / (4 + 3)
            "entity_f1": 2 / 7,
            "partial_precision": 0.75,  # 3 / 4
            "partial_recall": 1.0,  # 3 / 3
            "partial_f1": 6 / 7,  # 2 * 3 / (4 + 3)
        }
    )
    assert metrics.headline == "entity_f1" and metrics.headline_value == pytest.approx(2 / 7)
    # PER: TP 1, predicted 2, gold 2; ORG: TP 0, predicted 2, gold 1
    assert per_class(metrics) == {"PER": (0.5, 0.5, 0.5, 2), "ORG": (0.0, 0.0, 0.0, 1)}
    assert item_score(SPANS, gold[0], predicted[0]) == 0.5  # 2 * 1 / (2 + 2)
    assert item_score(SPANS, [], None) == 1.0
    assert item_correct(SPANS, gold[0], list(reversed(gold[0])))


def test_partial_match_uses_each_gold_span_once() -> None:
    gold = [[span(0, 10, "PER")]]
    predicted = [[span(0, 3, "PER"), span(2, 10, "PER"), span(0, 10, "ORG")]]
    metrics = score(SPANS, gold, predicted)
    assert metrics.values["partial_precision"] == pytest.approx(1 / 3)  # one of 3 predictions matched
    assert metrics.values["partial_recall"] == 1.0
    assert metrics.values["entity_f1"] == 0.0


def test_no_spans_anywhere_is_perfect() -> None:
    metrics = score(SPANS, [[], []], [[], None])
    assert metrics.values["entity_f1"] == 1.0 and metrics.values["partial_f1"] == 1.0


# ---------------------------------------------------------------------- agreement with scikit-learn


def test_single_choice_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(7)
    classes = ["alpha", "beta", "gamma", "delta", "epsilon"]
    spec = LabelSpec.from_classes(classes)
    gold = [str(c) for c in rng.choice(classes, size=500, p=[0.4, 0.25, 0.2, 0.1, 0.05])]
    predicted: list[str | None] = [
        g if rng.random() < 0.6 else (None if rng.random() < 0.1 else str(rng.choice(classes))) for g in gold
    ]
    filled = [p if p is not None else NO_ANSWER for p in predicted]
    metrics = score(spec, gold, predicted)
    assert metrics.values["accuracy"] == pytest.approx(accuracy_score(gold, filled))
    assert metrics.values["macro_f1"] == pytest.approx(
        f1_score(gold, filled, labels=classes, average="macro", zero_division=0)
    )
    assert metrics.values["weighted_f1"] == pytest.approx(
        f1_score(gold, filled, labels=classes, average="weighted", zero_division=0)
    )
    assert metrics.values["kappa"] == pytest.approx(cohen_kappa_score(gold, filled))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, filled, labels=classes, zero_division=0
    )
    expected = [
        ClassMetrics(label=c, precision=precision[i], recall=recall[i], f1=f1[i], support=support[i])
        for i, c in enumerate(classes)
    ]
    assert metrics.per_class == expected
    assert metrics.confusion is not None
    assert sum(map(sum, metrics.confusion.matrix)) == 500


def test_multi_choice_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(11)
    classes = ["c0", "c1", "c2", "c3", "c4", "c5"]
    spec = LabelSpec.from_classes(classes, type="multi_choice")
    gold = [[c for c in classes if rng.random() < 0.3] for _ in range(500)]
    predicted: list[list[str] | None] = []
    for labels in gold:
        kept = [c for c in labels if rng.random() < 0.8]
        extra = [c for c in classes if c not in labels and rng.random() < 0.1]
        predicted.append(None if rng.random() < 0.05 else sorted(kept + extra))
    binarizer = MultiLabelBinarizer(classes=classes)
    y_true = binarizer.fit_transform(gold)
    y_pred = binarizer.transform([p or [] for p in predicted])
    metrics = score(spec, gold, predicted)
    assert metrics.values["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert metrics.values["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics.values["jaccard"] == pytest.approx(
        jaccard_score(y_true, y_pred, average="samples", zero_division=1.0)
    )
    sklearn_f1 = f1_score(y_true, y_pred, average=None)
    assert [row.f1 for row in metrics.per_class] == pytest.approx(list(sklearn_f1))


# ---------------------------------------------------------------------- intervals and paired tests


def test_wilson_interval_known_values() -> None:
    interval = wilson_interval(8, 10)
    z = 1.959963984540054
    centre = (0.8 + z**2 / 20) / (1 + z**2 / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z**2 / 400) / (1 + z**2 / 10)
    assert interval.low == pytest.approx(centre - half) and interval.high == pytest.approx(centre + half)
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.4902, 0.9433)
    assert interval.method == "wilson" and interval.level == 0.95
    assert wilson_interval(0, 0).model_dump() == {"low": 0.0, "high": 1.0, "level": 0.95, "method": "wilson"}
    assert wilson_interval(10, 10).high == 1.0 and wilson_interval(0, 10).low == 0.0


def test_mcnemar_exact_p_value() -> None:
    # 1 item right only in A (b), 9 right only in B (c), 10 right in both
    gold = ["a"] * 20
    a = ["a"] + ["b"] * 9 + ["a"] * 10
    b = ["c"] + ["a"] * 9 + ["a"] * 10
    result = paired_test(SINGLE, gold, a, b)
    assert result.method == "mcnemar_exact"
    assert (result.b_only, result.c_only, result.statistic) == (1, 9, 1.0)
    assert result.p_value == pytest.approx(0.021484375)  # 2 * (1 + 10) / 2**10
    assert result.delta == pytest.approx(8 / 20)
    assert result.delta_interval is not None
    assert result.delta_interval.low <= result.delta <= result.delta_interval.high


def test_mcnemar_without_discordant_items() -> None:
    result = paired_test(TEXT, ["x", "y"], ["x", None], ["X", None])
    assert result.p_value == 1.0 and result.delta == 0.0


def test_paired_bootstrap_detects_a_clear_improvement() -> None:
    rng = np.random.default_rng(3)
    gold = [int(g) for g in rng.integers(1, 6, size=300)]
    a = [int(v) for v in rng.integers(1, 6, size=300)]
    b = [g if rng.random() < 0.8 else int(rng.integers(1, 6)) for g in gold]
    result = paired_test(RATING, gold, a, b)
    assert result.method == "paired_bootstrap"
    assert result.p_value < 0.01
    assert result.delta > 0 and result.statistic == result.delta
    assert result.delta_interval is not None and result.delta_interval.low > 0
    assert paired_test(RATING, gold, b, a).delta == pytest.approx(-result.delta)


def test_paired_bootstrap_identical_predictions() -> None:
    gold = [[span(0, 3, "PER")], [span(4, 9, "ORG")], []] * 20
    predicted = [[span(0, 3, "PER")], [], [span(1, 2, "ORG")]] * 20
    result = paired_test(SPANS, gold, predicted, predicted)
    assert result.p_value > 0.2 and result.delta == 0.0


def test_paired_test_is_seeded_and_fast() -> None:
    rng = np.random.default_rng(5)
    gold = [float(v) for v in rng.normal(size=10_000)]
    a = [g + float(e) for g, e in zip(gold, rng.normal(scale=1.0, size=10_000), strict=True)]
    b = [g + float(e) for g, e in zip(gold, rng.normal(scale=0.9, size=10_000), strict=True)]
    started = time.perf_counter()
    first = paired_test(FREE_NUMBER, gold, a, b, seed=1, resamples=2000)
    assert time.perf_counter() - started < 1.0
    assert paired_test(FREE_NUMBER, gold, a, b, seed=1, resamples=2000) == first


def test_score_intervals_are_seeded() -> None:
    gold = [1, 2, 3, 4, 5] * 10
    predicted = [1, 3, 3, 5, 4] * 10
    assert score(RATING, gold, predicted, seed=4) == score(RATING, gold, predicted, seed=4)


# ---------------------------------------------------------------------- edges and comparisons


@pytest.mark.parametrize("spec", [SINGLE, MULTI, RATING, NUMBER, TEXT, PAIRWISE, SPANS])
def test_no_items(spec: LabelSpec) -> None:
    metrics = score(spec, [], [])
    assert (metrics.n, metrics.answered, metrics.interval, metrics.per_class) == (0, 0, None, [])
    assert metrics.headline_value is None
    assert metrics.values["n"] == 0.0
    assert all(v is None for k, v in metrics.values.items() if k not in ("n", "answered"))
    assert Metrics.model_validate_json(metrics.model_dump_json()) == metrics
    result = paired_test(spec, [], [], [])
    assert (result.n, result.p_value, result.delta, result.delta_interval) == (0, 1.0, 0.0, None)


@pytest.mark.parametrize("spec", [SINGLE, MULTI, RATING, TEXT, PAIRWISE, SPANS])
def test_all_answers_missing(spec: LabelSpec) -> None:
    gold: dict[TaskType, Any] = {
        TaskType.single_choice: "a",
        TaskType.multi_choice: ["x"],
        TaskType.rating: 3,
        TaskType.text: "t",
        TaskType.pairwise: "left",
        TaskType.spans: [span(0, 1, "PER")],
    }
    metrics = score(spec, [gold[spec.type]] * 3, [None] * 3)
    assert metrics.answered == 0 and metrics.values["invalid_rate"] == 1.0
    assert metrics.headline_value in (0.0, None)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(LabelpilotError, match="gold has 2 items but predicted has 1"):
        score(SINGLE, ["a", "b"], ["a"])
    with pytest.raises(LabelpilotError, match="but b has 3"):
        paired_test(SINGLE, ["a", "b"], ["a", "b"], ["a", "b", "c"])


def test_malformed_values_raise() -> None:
    with pytest.raises(LabelValueError, match="gold item 1 has no label"):
        score(SINGLE, ["a", None], ["a", "b"])
    with pytest.raises(LabelValueError, match="predicted item 0"):
        score(MULTI, [["x"]], ["x"])
    with pytest.raises(LabelValueError, match="finite number"):
        score(RATING, [1], [math.nan])
    with pytest.raises(LabelValueError, match="span needs start, end and label"):
        score(SPANS, [[{"start": 0}]], [[]])
    with pytest.raises(LabelValueError, match="integer offsets"):
        score(SPANS, [[]], [[{"start": "0", "end": 2, "label": "PER"}]])


def test_top_confusions_order() -> None:
    confusion = Confusion(labels=["a", "b", "c"], matrix=[[5, 2, 3], [3, 4, 0], [0, 1, 9]])
    assert confusion.top_confusions() == [("a", "c", 3), ("b", "a", 3), ("a", "b", 2), ("c", "b", 1)]
    assert confusion.top_confusions(n=1) == [("a", "c", 3)]


def test_metric_and_per_class_deltas() -> None:
    gold = ["a", "a", "b", "c"]
    before = score(SINGLE, gold, ["a", "b", "b", "b"])
    after = score(SINGLE, gold, ["a", "a", "c", "c"])
    deltas = metric_deltas(before, after)
    assert deltas["accuracy"] == pytest.approx(0.75 - 0.5)
    assert deltas["n"] == 0.0
    assert set(deltas) == set(before.values)
    rows = per_class_deltas(before, after)
    # before: a 2/3, b 1/2 (P 1/3, R 1), c 0;  after: a 1, b 0, c 2/3 (P 1/2, R 1)
    assert [row["label"] for row in rows] == ["b", "a", "c"]
    assert rows[0] == {"label": "b", "f1_a": 0.5, "f1_b": 0.0, "delta": -0.5, "support": 1}
    assert rows[1]["delta"] == pytest.approx(1 - 2 / 3)
    assert rows[2]["delta"] == pytest.approx(2 / 3)


def test_metric_deltas_none_where_undefined() -> None:
    undefined = score(SINGLE, ["a"], ["a"])  # kappa undefined
    defined = score(SINGLE, ["a", "b"], ["a", "b"])
    assert metric_deltas(undefined, defined)["kappa"] is None
    assert metric_deltas(score(SINGLE, [], []), defined)["accuracy"] is None


def test_metrics_are_json_models() -> None:
    metrics = score(SPANS, [[span(0, 2, "PER")]], [[span(0, 2, "PER")]])
    assert isinstance(metrics, BaseModel)
    assert Metrics.model_validate_json(metrics.model_dump_json()) == metrics
