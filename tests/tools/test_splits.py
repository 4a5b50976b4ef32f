"""Ground-truth splits: stratified, seeded, stable as ground truth grows, honest about small sets."""

from __future__ import annotations

import pytest

from tools.errors import ConfigError, LabelpilotError, NotFoundError
from tools.groundtruth import set_label
from tools.labelspec import LabelSpec
from tools.projects import create_project
from tools.splits import Split, assign_splits, interval_width, split_summary, split_task_ids
from tools.storage import Database, Task

SPEC = LabelSpec.from_classes(["Sports", "World", "Business"])


def make_project(db: Database, labels: list[str], name: str = "news") -> int:
    summary = create_project(db, name, spec=SPEC)
    with db.session() as session:
        for i, _ in enumerate(labels):
            session.add(
                Task(
                    project_id=summary.id, external_id=f"t{i}", content_hash=f"h{i}", data={"text": f"x {i}"}
                )
            )
    for i, label in enumerate(labels):
        set_label(db, name, f"t{i}", label)
    return summary.id


def splits_by_id(db: Database) -> dict[str, str]:
    with db.session() as session:
        return {t.external_id: t.meta.get("split") for t in session.query(Task).all() if t.meta.get("split")}


def test_splits_are_stratified_and_seeded(db: Database) -> None:
    make_project(db, ["Sports"] * 50 + ["World"] * 30 + ["Business"] * 20)
    summary = assign_splits(db, "news", ratios=(0.6, 0.2, 0.2), seed=7)
    counts = {entry.split: entry for entry in summary.splits}
    assert summary.assigned_now == 100
    assert counts[Split.train].items == 60
    assert counts[Split.dev].items == 20
    assert counts[Split.test].items == 20
    # Each label keeps its share in each split: 50 Sports → 30/10/10, 20 Business → 12/4/4.
    assert counts[Split.train].per_label == {"Sports": 30, "World": 18, "Business": 12}
    assert counts[Split.test].per_label == {"Sports": 10, "World": 6, "Business": 4}
    first = splits_by_id(db)
    # The same seed on a fresh project gives the same assignment; another seed a different one.
    assign_splits(db, "news", seed=7, reset=True)
    assert splits_by_id(db) == first
    assign_splits(db, "news", seed=8, reset=True)
    assert splits_by_id(db) != first


def test_items_keep_their_split_when_ground_truth_grows(db: Database) -> None:
    project_id = make_project(db, ["Sports"] * 10 + ["World"] * 10)
    assign_splits(db, "news", seed=1)
    before = splits_by_id(db)
    with db.session() as session:
        for i in range(20, 30):
            session.add(
                Task(project_id=project_id, external_id=f"t{i}", content_hash=f"h{i}", data={"text": "y"})
            )
    for i in range(20, 30):
        set_label(db, "news", f"t{i}", "Business")
    summary = assign_splits(db, "news", seed=1)
    after = splits_by_id(db)
    assert summary.assigned_now == 10
    assert {k: after[k] for k in before} == before
    assert sorted(split_task_ids(db, "news", "test")) == sorted(
        t for t in split_task_ids(db, "news", Split.test)
    )
    assert summary.unassigned == 0


def test_small_splits_are_flagged_with_the_interval_width(db: Database) -> None:
    make_project(db, ["Sports"] * 6 + ["World"] * 6)
    summary = assign_splits(db, "news")
    assert any("test split has only" in w and "±" in w for w in summary.warnings)
    width = interval_width(20)
    assert width is not None and 0.401 < width < 0.402  # Wilson at p=0.5, n=20: 0.2993..0.7007
    assert interval_width(0) is None


def test_split_errors_are_clear(db: Database) -> None:
    make_project(db, ["Sports", "World"])
    with pytest.raises(NotFoundError, match="no splits yet"):
        split_task_ids(db, "news", "test")
    with pytest.raises(LabelpilotError, match="unknown split 'holdout'"):
        split_task_ids(db, "news", "holdout")
    with pytest.raises(ConfigError, match="three non-negative numbers"):
        assign_splits(db, "news", ratios=(0.5, 0.5))
    create_project(db, "empty", spec=SPEC)
    with pytest.raises(NotFoundError, match="no ground truth"):
        assign_splits(db, "empty")
    summary = split_summary(db, "news")
    assert summary.unassigned == 2
    assert any("no split yet" in w for w in summary.warnings)
