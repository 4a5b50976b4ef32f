"""Tuning the offline baseline's few-shot policy: chosen on dev, reported on test, stored as a version."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from evals.bench_improve import bench_dataset, main
from evals.evaluate import list_evals
from evals.tune_baseline import (
    NEEDS_MODEL,
    ONE_NN,
    BaselineConfig,
    default_candidates,
    stored_config,
    tune_baseline,
)
from tests.evals.test_bench_eval import _lines
from tools.baseline import BaselineStrategy
from tools.embeddings import HashingEmbedder
from tools.errors import ConfigError, NotFoundError
from tools.importers import import_file
from tools.labelspec import LabelSpec
from tools.projects import create_project
from tools.settings import Settings
from tools.storage import Database, Task
from tools.versions import PromptConfig, create_version, get_version
from ui.cli_label import _labeler_for

#: Words only one class uses, so the hashing embedder separates the classes.
VOCABULARY = {
    "alpha": ["apple", "apricot", "avocado", "almond", "anise", "artichoke", "arugula", "acorn"],
    "beta": ["bison", "beaver", "badger", "buffalo", "baboon", "bobcat", "beagle", "bull"],
    "gamma": ["granite", "gravel", "gneiss", "garnet", "gypsum", "geode", "galena", "glacier"],
}
#: Items per class and split; a fifth of the train labels are wrong, so 1-NN often copies a wrong label.
SIZES = {"train": 30, "dev": 20, "test": 20}
NOISE = 0.2


def _rows(*, with_splits: bool = True) -> list[dict[str, str]]:
    rng = random.Random(7)
    names = list(VOCABULARY)
    rows = []
    for split, count in SIZES.items():
        for label, words in VOCABULARY.items():
            for n in range(count):
                text = " ".join(rng.sample(words, 3))
                given = label
                if split == "train" and rng.random() < NOISE:
                    given = rng.choice([other for other in names if other != label])
                row = {"id": f"{split}-{label}-{n}", "text": text, "label": given}
                if with_splits:
                    row["split"] = split
                rows.append(row)
    return rows


def _make_project(db: Database, tmp_path: Path, name: str = "noisy", *, with_splits: bool = True) -> str:
    create_project(db, name, spec=LabelSpec.from_classes(list(VOCABULARY), input_fields=["text"]))
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _rows(with_splits=with_splits)))
    import_file(db, name, path, fields=["text"], id_column="id", label_column="label")
    return name


@pytest.fixture
def noisy(db: Database, tmp_path: Path) -> Database:
    _make_project(db, tmp_path)
    return db


async def test_tuning_beats_1nn_on_noisy_examples_and_stores_the_policy(noisy: Database) -> None:
    lines: list[str] = []

    tuning = await tune_baseline(noisy, "noisy", embedder=HashingEmbedder(), progress=lines.append)

    best = BaselineConfig.model_validate(tuning.best)
    assert not best.is_one_nn
    scores = {BaselineConfig.model_validate(s["config"]): s for s in tuning.dev_scores}
    assert ONE_NN in scores and best in scores
    assert scores[best]["score"] > scores[ONE_NN]["score"]
    assert scores[best]["headline"] == "accuracy" and scores[best]["n"] == 60
    assert (tuning.train_items, tuning.dev_items, tuning.test_items) == (90, 60, 60)
    assert not tuning.splits_assigned
    assert lines[0].startswith("dev 1/") and lines[-1].endswith("(after)")
    # Both final evaluations are stored runs on the test split; the tuned one is better there too.
    assert tuning.before is not None and tuning.after is not None and tuning.comparison is not None
    assert tuning.before.run.model == "baseline:hashing-1nn"
    assert tuning.after.run.model != tuning.before.run.model
    assert tuning.before.scored == tuning.after.scored == 60
    after = tuning.after.metrics.headline_value
    before = tuning.before.metrics.headline_value
    assert after is not None and before is not None and after > before
    assert tuning.comparison.test.delta == pytest.approx(after - before)
    stored = {(s.run.run_id, s.run.split) for s in list_evals(noisy, "noisy")}
    assert stored == {(tuning.before.run.run_id, "test"), (tuning.after.run.run_id, "test")}
    # The new version holds the policy; the message says what a model would add.
    assert tuning.version is not None
    version = get_version(noisy, "noisy", tuning.version.number)
    assert version.model == "baseline"
    assert version.params["baseline"] == tuning.best
    assert stored_config(version) == best
    assert "tuned on dev, reported on test" in version.note
    assert version.parent_number is None
    assert best.summary() in tuning.message
    assert tuning.message.endswith(NEEDS_MODEL)


async def test_the_tuned_version_is_a_child_of_the_newest_one(noisy: Database) -> None:
    create_version(noisy, "noisy", PromptConfig(instructions="Name the topic.", params={"temperature": 0}))

    tuning = await tune_baseline(noisy, "noisy", embedder=HashingEmbedder())

    assert tuning.version is not None
    assert tuning.version.number == 2 and tuning.version.parent_number == 1
    assert tuning.version.instructions == "Name the topic."
    assert tuning.version.params == {"temperature": 0, "baseline": tuning.best}


async def test_1nn_stays_when_it_is_the_best_candidate(noisy: Database) -> None:
    tuning = await tune_baseline(noisy, "noisy", candidates=[ONE_NN], embedder=HashingEmbedder())

    assert BaselineConfig.model_validate(tuning.best) == ONE_NN
    assert tuning.version is None and tuning.comparison is None
    assert tuning.after is tuning.before
    assert "1-NN stays" in tuning.message
    assert len(list_evals(noisy, "noisy")) == 1


async def test_a_project_without_splits_gets_the_default_ones(db: Database, tmp_path: Path) -> None:
    _make_project(db, tmp_path, "plain", with_splits=False)

    tuning = await tune_baseline(db, "plain", embedder=HashingEmbedder())

    assert tuning.splits_assigned
    assert tuning.train_items + tuning.dev_items + tuning.test_items == 210
    assert tuning.message.startswith("The project had no splits")
    assert tuning.message.endswith(NEEDS_MODEL)


async def test_a_project_without_ground_truth_is_a_clear_error(db: Database) -> None:
    summary = create_project(db, "bare", spec=LabelSpec.from_classes(list(VOCABULARY)))
    with db.session() as session:
        session.add(Task(project_id=summary.id, external_id="t1", content_hash="h1", data={"text": "apple"}))

    with pytest.raises(NotFoundError, match="no ground truth to tune the baseline on"):
        await tune_baseline(db, "bare", embedder=HashingEmbedder())


async def test_labeling_without_a_model_uses_the_tuned_policy(noisy: Database, settings: Settings) -> None:
    untuned, _ = _labeler_for(noisy, settings, "noisy", version=None)
    assert untuned.info.identity["strategy"] == "auto"

    tuning = await tune_baseline(noisy, "noisy", embedder=HashingEmbedder())
    labeler, notes = _labeler_for(noisy, settings, "noisy", version=None)

    best = BaselineConfig.model_validate(tuning.best)
    assert tuning.version is not None
    assert labeler.info.identity["strategy"] == best.strategy.value
    assert labeler.info.identity["k"] == best.k
    assert labeler.info.identity["description_weight"] == best.description_weight
    assert any(f"tuned in v{tuning.version.number}" in note for note in notes)
    assert "labeling without a model now uses it" in tuning.message
    # A version without a policy (an instructions rewrite) labels with the default baseline.
    rewrite = create_version(noisy, "noisy", PromptConfig(instructions="Name the topic."))
    again, _ = _labeler_for(noisy, settings, "noisy", version=rewrite.number)
    assert again.info.identity["strategy"] == "auto"
    chosen, _ = _labeler_for(noisy, settings, "noisy", version=tuning.version.number)
    assert chosen.info.identity == labeler.info.identity


async def test_the_message_says_whether_labeling_uses_the_new_version(
    noisy: Database, settings: Settings
) -> None:
    create_version(noisy, "noisy", PromptConfig(instructions="Name the topic."))

    tuning = await tune_baseline(noisy, "noisy", embedder=HashingEmbedder())

    assert tuning.version is not None
    labeler, _ = _labeler_for(noisy, settings, "noisy", version=None)
    # Where the project pins a current version, the tuned one is a proposal until it is adopted.
    if get_version(noisy, "noisy").number == tuning.version.number:
        assert "labeling without a model now uses it" in tuning.message
        assert labeler.info.identity["k"] == tuning.best["k"]
    else:
        assert "a proposal: labeling without a model uses it once you adopt it" in tuning.message
        assert labeler.info.identity["strategy"] == "auto"


def test_configs_normalise_what_their_strategy_ignores() -> None:
    assert BaselineConfig(strategy=BaselineStrategy.knn, k=1, description_weight=3) == ONE_NN
    assert BaselineConfig.model_validate({"strategy": "centroid", "k": 9}).k == 1
    assert BaselineConfig(description_weight=2).summary() == "centroid, descriptions x2"
    with pytest.raises(ValueError, match="centroid or knn"):
        BaselineConfig(strategy=BaselineStrategy.auto)
    with pytest.raises(ConfigError, match="not a baseline policy"):
        stored_config(PromptConfig(params={"baseline": {"strategy": "zero_shot"}}))
    assert stored_config(PromptConfig()) is None


def test_default_candidates_follow_the_schema_and_the_examples() -> None:
    plain = default_candidates(LabelSpec.from_classes(["a", "b"]), train_items=4)
    assert [c.summary() for c in plain] == ["centroid", "knn k=1", "knn k=3"]
    described = default_candidates(LabelSpec.from_classes([("a", "first"), ("b", "second")]), train_items=50)
    assert [c.summary() for c in described] == [
        "centroid",
        "centroid, descriptions x0",
        "centroid, descriptions x2",
        "centroid, descriptions x4",
        "knn k=1",
        "knn k=3",
        "knn k=5",
        "knn k=10",
        "knn k=20",
    ]


# ---------------------------------------------------------------------------------------------- benchmark


@pytest.fixture
def datasets_dir(tmp_path: Path) -> Path:
    """A datasets folder holding only a tiny trec (`<COARSE>:<fine> <question>` lines)."""
    folder = tmp_path / "datasets"
    (folder / "trec").mkdir(parents=True)
    (folder / "trec" / "train.txt").write_text("\n".join(_lines(0, 8)) + "\n", encoding="utf-8")
    (folder / "trec" / "test.txt").write_text("\n".join(_lines(100, 3)) + "\n", encoding="utf-8")
    return folder


def test_bench_dataset_reports_before_and_after_on_test(datasets_dir: Path) -> None:
    from evals.bench_baseline import load_trec

    row = bench_dataset(
        load_trec(datasets_dir / "trec", 0),
        per_class=2,
        dev_size=12,
        limit=18,
        seed=0,
        embedder=HashingEmbedder(),
    )

    assert (row.classes, row.train, row.dev, row.test) == (6, 12, 36, 18)
    assert row.dev_1nn is not None and row.dev_best is not None and row.dev_best >= row.dev_1nn
    assert row.test_1nn is not None and row.test_best is not None
    assert row.candidates == 8  # trec's classes have descriptions: 4 centroids, k = 1, 3, 5, 10 (<= 12)


def test_bench_main_prints_json_rows(datasets_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    assert [(r["dataset"], r["train"], r["test"]) for r in rows] == [("trec", 12, 12)]
    assert rows[0]["policy"]


def test_bench_main_prints_the_table(datasets_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--datasets",
            "trec",
            "--datasets-dir",
            str(datasets_dir),
            "--per-class",
            "4",
            "--embedder",
            "hashing",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["dataset", "train", "dev", "test"]
    assert out.splitlines()[1].startswith("trec")


def test_bench_skips_without_the_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--datasets-dir", str(tmp_path / "absent"), "--embedder", "hashing"])

    assert code == 0
    assert "skipped" in capsys.readouterr().out


async def test_a_tiny_dev_split_is_replaced_by_repeated_k_fold(db: Database, tmp_path: Path) -> None:
    # 8 items per class: the default 60/20/20 split leaves about 5 dev items, too few to choose on.
    create_project(db, "tiny", spec=LabelSpec.from_classes(list(VOCABULARY), input_fields=["text"]))
    rng = random.Random(3)
    rows = [
        {"id": f"{label}-{n}", "text": " ".join(rng.sample(words, 3)), "label": label}
        for label, words in VOCABULARY.items()
        for n in range(8)
    ]
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_file(db, "tiny", path, fields=["text"], id_column="id", label_column="label")

    tuning = await tune_baseline(db, "tiny", embedder=HashingEmbedder())

    assert tuning.dev_items < 30
    methods = {score.get("method") for score in tuning.dev_scores}
    assert len(methods) == 1 and "repeated stratified" in str(next(iter(methods)))
    # Every train + dev item is scored once per repeat.
    assert all(score["n"] == 3 * (tuning.train_items + tuning.dev_items) for score in tuning.dev_scores)
    assert "too few to choose on" in tuning.message and "±" in tuning.message
