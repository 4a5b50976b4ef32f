"""Confusion heatmaps, per-class F1 bars and terminal tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from evals.metrics import ClassMetrics, Confusion
from evals.pictures import chosen_labels, confusion_png, confusion_table, per_class_f1_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_confusion() -> Confusion:
    return Confusion(
        labels=["World", "Sports", "Business", "Sci/Tech"],
        matrix=[[40, 2, 5, 3], [1, 48, 0, 1], [6, 0, 35, 9], [2, 1, 7, 40]],
    )


def banking_confusion(classes: int = 77) -> Confusion:
    """A 77-class matrix with mostly right answers and a few planted confusions."""
    rng = np.random.default_rng(0)
    labels = [f"intent_{i:02d}_" + "very_long_banking_intent_name" * (i % 2) for i in range(classes)]
    matrix = np.diag(rng.integers(10, 40, size=classes))
    for _ in range(60):
        i, j = rng.integers(0, classes, size=2)
        if i != j:
            matrix[i, j] += 1
    matrix[3, 70] += 30  # the largest confusions
    matrix[70, 3] += 20
    matrix[10, 11] += 15
    return Confusion(labels=labels, matrix=matrix.tolist())


def assert_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1024
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    return pixels


def test_confusion_png_small(tmp_path: Path) -> None:
    path = tmp_path / "confusion.png"
    assert confusion_png(small_confusion(), path, title="AG News") == path
    assert_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]  # no temporary file left behind


def test_confusion_png_many_classes(tmp_path: Path) -> None:
    confusion = banking_confusion()
    path = confusion_png(confusion, tmp_path / "nested" / "banking77.png", title="banking77", max_labels=20)
    small = assert_png(confusion_png(small_confusion(), tmp_path / "small.png"))
    large = assert_png(path)
    assert large.shape[0] > small.shape[0]  # the figure grows with the labels shown


def test_chosen_labels() -> None:
    confusion = banking_confusion()
    chosen = chosen_labels(confusion, 20)
    assert 2 < len(chosen) <= 20
    for i in (3, 70, 10, 11):
        assert confusion.labels[i] in chosen
    assert chosen == [label for label in confusion.labels if label in chosen]  # original order kept
    assert chosen_labels(small_confusion(), 20) == small_confusion().labels


def test_chosen_labels_without_confusions_takes_the_largest_classes() -> None:
    labels = [f"c{i}" for i in range(30)]
    confusion = Confusion(labels=labels, matrix=np.diag(np.arange(30)).tolist())
    assert chosen_labels(confusion, 5) == ["c25", "c26", "c27", "c28", "c29"]


def test_confusion_png_of_an_empty_matrix(tmp_path: Path) -> None:
    confusion = Confusion(labels=["a", "b"], matrix=[[0, 0], [0, 0]])
    assert_png(confusion_png(confusion, tmp_path / "empty.png"))


@pytest.mark.parametrize("classes", [5, 60])
def test_per_class_f1_png(tmp_path: Path, classes: int) -> None:
    rows = [
        ClassMetrics(
            label=f"class {i}" * (1 + i % 5), precision=0.5, recall=0.5, f1=i / classes, support=i + 1
        )
        for i in range(classes)
    ]
    assert_png(per_class_f1_png(rows, tmp_path / "f1.png", title="per-class F1", max_bars=40))


def test_per_class_f1_png_without_classes(tmp_path: Path) -> None:
    assert (tmp_path / "none.png").exists() is False
    assert_png(per_class_f1_png([], tmp_path / "none.png"))


def test_confusion_table_small() -> None:
    table = confusion_table(small_confusion())
    assert table[0] == ["gold \\ predicted", "World", "Sports", "Business", "Sci/Tech"]
    assert len(table) == 5 and all(len(row) == 5 for row in table)
    assert table[3] == ["Business", "6", "0", "35", "9"]


def test_confusion_table_large() -> None:
    confusion = banking_confusion()
    table = confusion_table(confusion, max_labels=12)
    assert table[0] == ["gold", "predicted", "count"]
    assert 1 < len(table) <= 13 and all(len(row) == 3 for row in table)
    assert table[1] == [confusion.labels[3], confusion.labels[70], str(confusion.matrix[3][70])]
