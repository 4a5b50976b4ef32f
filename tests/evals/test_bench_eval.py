"""The eval benchmark on a tiny synthetic trec-format dataset (hashing embedder, no network)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evals.bench_baseline import TREC_CLASSES, load_trec
from evals.bench_eval import bench_dataset, main
from tools.embeddings import HashingEmbedder

#: Words only one class uses, so the hashing embedder separates the classes.
WORDS = {
    "ABBR": ["acronym", "abbreviation", "stands", "initials", "shorthand"],
    "DESC": ["define", "meaning", "reason", "explain", "manner"],
    "ENTY": ["animal", "product", "object", "instrument", "substance"],
    "HUM": ["person", "inventor", "author", "president", "singer"],
    "LOC": ["city", "country", "river", "mountain", "capital"],
    "NUM": ["year", "many", "distance", "population", "temperature"],
}
TRAIN_PER_CLASS = 6
TEST_PER_CLASS = 5


def _lines(offset: int, count: int) -> list[str]:
    lines = []
    for label, words in WORDS.items():
        for n in range(offset, offset + count):
            first, second = words[n % len(words)], words[(n + 2) % len(words)]
            lines.append(f"{label}:other {first} {second} question {n} ?")
    return lines


@pytest.fixture
def datasets_dir(tmp_path: Path) -> Path:
    """A datasets folder holding only trec: `<COARSE>:<fine> <question>` lines."""
    folder = tmp_path / "datasets"
    (folder / "trec").mkdir(parents=True)
    (folder / "trec" / "train.txt").write_text("\n".join(_lines(0, TRAIN_PER_CLASS)) + "\n", encoding="utf-8")
    (folder / "trec" / "test.txt").write_text("\n".join(_lines(100, TEST_PER_CLASS)) + "\n", encoding="utf-8")
    return folder


def test_eval_accuracy_equals_both_recomputations(datasets_dir: Path) -> None:
    dataset = load_trec(datasets_dir / "trec", 0)
    home_before = os.environ.get("LABELPILOT_HOME")

    row = bench_dataset(dataset, per_class=3, limit=20, seed=0, embedder=HashingEmbedder())

    assert row.classes == len(TREC_CLASSES)
    assert row.train_examples == 3 * len(TREC_CLASSES)
    assert row.test_items == row.scored == 20
    assert row.eval_accuracy is not None
    assert row.eval_accuracy == pytest.approx(row.export_accuracy, abs=1e-9)
    assert row.eval_accuracy == pytest.approx(row.direct_accuracy, abs=1e-9)
    assert row.eval_accuracy > 0.5  # the classes are separable: a broken pipeline would not score this
    assert row.differ == 0
    assert row.match
    assert row.eval_low is not None and row.eval_high is not None
    assert row.eval_low <= row.eval_accuracy <= row.eval_high
    assert os.environ.get("LABELPILOT_HOME") == home_before


def test_main_prints_json_rows_and_exits_0(datasets_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--datasets",
            "trec",
            "--datasets-dir",
            str(datasets_dir),
            "--per-class",
            "2",
            "--limit",
            "12",
            "--embedder",
            "hashing",
            "--json",
        ]
    )

    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["dataset"], r["test_items"], r["train_examples"], r["match"]) for r in rows] == [
        ("trec", 12, 12, True)
    ]


def test_main_prints_the_table(datasets_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["--datasets", "trec", "--datasets-dir", str(datasets_dir), "--limit", "6", "--embedder", "hashing"]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["dataset", "classes", "train", "test"]
    assert out.splitlines()[1].startswith("trec")
    assert " yes " in out


def test_missing_datasets_folder_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--datasets-dir", str(tmp_path / "absent"), "--embedder", "hashing"])

    assert code == 0
    assert "skipped" in capsys.readouterr().out


def test_unknown_dataset_is_a_usage_error(datasets_dir: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--datasets", "trec,nope", "--datasets-dir", str(datasets_dir)])
    assert exited.value.code == 2
