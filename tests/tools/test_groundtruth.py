"""Projects and ground truth: schema changes, label history, coverage, sampling, the labeling session."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from tools.errors import ConflictError, LabelValueError, NotFoundError
from tools.groundtruth import (
    LabelingSession,
    SampleStrategy,
    coverage,
    delete_label,
    sample_tasks,
    set_label,
    task_history,
)
from tools.labelspec import LabelSpec, TaskType
from tools.projects import (
    create_project,
    list_projects,
    project_summary,
    resolve_project_name,
    set_label_spec,
)
from tools.storage import Database, Task

SPEC = LabelSpec.from_classes(["Sports", "World", "Business"])


def add_tasks(db: Database, project_id: int, rows: Sequence[tuple[str, str, str]]) -> None:
    with db.session() as session:
        for external_id, text, source in rows:
            session.add(
                Task(
                    project_id=project_id,
                    external_id=external_id,
                    content_hash=external_id,
                    data={"text": text},
                    meta={"source": source},
                )
            )


@pytest.fixture
def news(db: Database) -> Database:
    summary = create_project(db, "news", spec=SPEC)
    add_tasks(
        db,
        summary.id,
        [(f"t{i}", f"text number {i}", "bbc" if i % 4 == 0 else "cnn") for i in range(1, 21)],
    )
    return db


def test_create_project_rejects_duplicates_and_bad_names(db: Database) -> None:
    create_project(db, "alpha")
    with pytest.raises(ConflictError, match="already exists"):
        create_project(db, "alpha")
    with pytest.raises(ConflictError, match="not a valid project name"):
        create_project(db, "../etc")
    assert [p.name for p in list_projects(db)] == ["alpha"]


def test_resolve_project_name(db: Database) -> None:
    with pytest.raises(NotFoundError, match="no project yet"):
        resolve_project_name(db, None)
    create_project(db, "one")
    assert resolve_project_name(db, None) == "one"
    create_project(db, "two")
    with pytest.raises(NotFoundError, match="several projects"):
        resolve_project_name(db, None)
    assert resolve_project_name(db, "two") == "two"
    with pytest.raises(NotFoundError, match="projects: one, two"):
        project_summary(db, "three")


def test_label_history_latest_wins_and_delete_keeps_history(news: Database) -> None:
    set_label(news, "news", "t1", "sports", author="ann")
    set_label(news, "news", "t1", "2", author="bob")  # class number -> World
    history = task_history(news, "news", "t1")
    assert [(h.value, h.author) for h in history] == [("Sports", "ann"), ("World", "bob")]
    delete_label(news, "news", "t1", author="bob")
    history = task_history(news, "news", "t1")
    assert [h.deleted for h in history] == [False, False, True]
    assert coverage(news, "news").labeled_count == 0
    with pytest.raises(NotFoundError, match="no ground-truth label to delete"):
        delete_label(news, "news", "t1")


def test_same_label_twice_is_not_a_new_history_entry(news: Database) -> None:
    set_label(news, "news", "t2", "Sports")
    set_label(news, "news", "t2", "Sports")
    assert len(task_history(news, "news", "t2")) == 1


def test_invalid_label_and_unknown_task(news: Database) -> None:
    with pytest.raises(LabelValueError, match="Sprots"):
        set_label(news, "news", "t1", "Sprots")
    with pytest.raises(NotFoundError, match="no task 'nope'"):
        set_label(news, "news", "nope", "Sports")


def test_coverage_per_class(news: Database) -> None:
    set_label(news, "news", "t1", "Sports")
    set_label(news, "news", "t2", "Sports")
    set_label(news, "news", "t3", "World")
    cov = coverage(news, "news")
    assert cov.task_count == 20 and cov.labeled_count == 3
    assert [(c.label, c.count) for c in cov.classes] == [("Sports", 2), ("World", 1), ("Business", 0)]
    assert cov.missing_classes == ["Business"]


def test_schema_change_refused_when_labels_no_longer_fit(news: Database) -> None:
    set_label(news, "news", "t1", "Business")
    with pytest.raises(ConflictError, match="1 ground-truth label"):
        set_label_spec(news, "news", LabelSpec.from_classes(["Sports", "World"]))
    set_label_spec(news, "news", LabelSpec.from_classes(["Sports", "World", "Business", "Tech"]))
    summary = set_label_spec(news, "news", LabelSpec.from_classes(["Sports", "World"]), force=True)
    assert [c["name"] for c in summary.label_spec["classes"]] == ["Sports", "World"]  # type: ignore[index]


def test_random_sample_is_seeded_and_skips_labeled(news: Database) -> None:
    set_label(news, "news", "t1", "Sports")
    first = [t.external_id for t in sample_tasks(news, "news", 5, seed=7)]
    again = [t.external_id for t in sample_tasks(news, "news", 5, seed=7)]
    other = [t.external_id for t in sample_tasks(news, "news", 5, seed=8)]
    assert first == again != other
    assert "t1" not in first and len(set(first)) == 5
    everything = sample_tasks(news, "news", 50, include_labeled=True)
    assert len(everything) == 20
    assert {t.external_id: t.ground_truth for t in everything}["t1"] == "Sports"


def test_stratified_sample_covers_every_stratum(news: Database) -> None:
    tasks = sample_tasks(news, "news", 4, strategy=SampleStrategy.stratified, column="source")
    sources = [t.meta["source"] for t in tasks]
    assert sources.count("bbc") == 2 and sources.count("cnn") == 2
    with pytest.raises(LabelValueError, match="needs a column"):
        sample_tasks(news, "news", 4, strategy=SampleStrategy.stratified)
    with pytest.raises(LabelValueError, match="no column 'topic'"):
        sample_tasks(news, "news", 4, strategy=SampleStrategy.stratified, column="topic")


def test_diverse_sample_spreads_over_clusters(db: Database) -> None:
    summary = create_project(db, "clusters", spec=SPEC)
    rows = [(f"a{i}", f"apple {i}", "x") for i in range(10)] + [
        (f"b{i}", f"boat {i}", "x") for i in range(10)
    ]
    rows += [("c0", "cloud 0", "x")]
    add_tasks(db, summary.id, rows)

    def embed(texts: Sequence[str]) -> np.ndarray:
        # Three well-separated clusters keyed by the first letter, tiny jitter inside each.
        axes = {"a": 0, "b": 1, "c": 2}
        vectors = np.zeros((len(texts), 3), dtype=np.float32)
        for row, text in enumerate(texts):
            vectors[row, axes[text[0]]] = 1.0
            vectors[row, (axes[text[0]] + 1) % 3] = 0.01 * int(text.split()[1])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    picked = sample_tasks(db, "clusters", 3, strategy=SampleStrategy.diverse, embed=embed)
    assert sorted(t.external_id[0] for t in picked) == ["a", "b", "c"]


def test_labeling_session_skip_undo_progress(news: Database) -> None:
    tasks = sample_tasks(news, "news", 3, seed=1)
    labeling = LabelingSession(news, "news", tasks, author="ann")
    assert labeling.progress() == "1 / 3"
    labeling.label("Sports")
    labeling.skip()
    assert labeling.progress() == "3 / 3"
    labeling.label("3")
    assert labeling.done and labeling.labeled == 2 and labeling.skipped == 1
    undone = labeling.undo()  # removes the label just given (task had none before)
    assert undone.external_id == tasks[2].external_id
    assert coverage(news, "news").labeled_count == 1
    labeling.undo()  # the skip
    labeling.undo()  # the first label
    assert coverage(news, "news").labeled_count == 0
    with pytest.raises(NotFoundError, match="nothing to undo"):
        labeling.undo()


def test_undo_restores_a_previous_label(news: Database) -> None:
    set_label(news, "news", "t5", "World")
    tasks = [t for t in sample_tasks(news, "news", 20, include_labeled=True) if t.external_id == "t5"]
    labeling = LabelingSession(news, "news", tasks, author="ann")
    labeling.label("Business")
    labeling.undo()
    assert task_history(news, "news", "t5")[-1].value == "World"


def test_multi_choice_coverage_counts_each_label(db: Database) -> None:
    spec = LabelSpec.from_classes(["joy", "anger", "fear"], type=TaskType.multi_choice)
    summary = create_project(db, "emo", spec=spec)
    add_tasks(db, summary.id, [("e1", "x", "s"), ("e2", "y", "s")])
    set_label(db, "emo", "e1", "joy, fear")
    set_label(db, "emo", "e2", "3")
    assert {c.label: c.count for c in coverage(db, "emo").classes} == {"joy": 1, "anger": 0, "fear": 2}
