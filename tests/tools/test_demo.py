"""Demo projects: the shipped samples, idempotent setup, and the real shared datasets when present."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from tools.demo import (
    BANKING_INTENTS,
    DEMO_DATA_DIR,
    READER_PREFERENCE,
    SUPPORT_INTENTS,
    default_shared_dir,
    majority_best,
    setup_demo,
)
from tools.groundtruth import coverage, set_label, task_history
from tools.labelspec import LabelSpec
from tools.projects import get_project, project_summary
from tools.settings import Settings
from tools.storage import Database, Task

SHARED = Path(__file__).resolve().parents[3] / "shared"
needs_shared = pytest.mark.skipif(
    not (SHARED / "datasets" / "news_summary_best_of_3").is_dir()
    or not (SHARED / "datasets" / "banking77").is_dir(),
    reason="../shared/datasets is not next to the repository",
)


def tasks_of(db: Database, project: str) -> list[Task]:
    with db.session() as session:
        project_id = get_project(session, project).id
        return list(session.scalars(select(Task).where(Task.project_id == project_id).order_by(Task.id)))


def test_shipped_samples(db: Database, settings: Settings) -> None:
    results = {r.name: r for r in setup_demo(db, settings, shared_dir=None)}
    assert set(results) == {READER_PREFERENCE, SUPPORT_INTENTS}
    reader, support = results[READER_PREFERENCE], results[SUPPORT_INTENTS]
    assert (reader.tasks, reader.ground_truth, reader.source, reader.created) == (
        6,
        6,
        "shipped sample",
        True,
    )
    assert (support.tasks, support.ground_truth, support.created) == (60, 30, True)

    spec = LabelSpec.model_validate(project_summary(db, READER_PREFERENCE).label_spec)
    assert spec.choices() == ["Summary 1", "Summary 2", "Summary 3"]
    assert all(label.description for label in spec.classes)
    assert spec.input_fields == ["article", "summary_1", "summary_2", "summary_3"]
    for task in tasks_of(db, READER_PREFERENCE):
        assert set(task.data) == {"article", "summary_1", "summary_2", "summary_3"}
    # Every summary position wins somewhere, so the sample does not teach "always pick Summary 1".
    assert all(item.count == 2 for item in coverage(db, READER_PREFERENCE).classes)

    intents = coverage(db, SUPPORT_INTENTS)
    assert [c.label for c in intents.classes] == [
        "card_lost",
        "refund_request",
        "delivery_status",
        "change_address",
        "account_login",
    ]
    assert all(c.count == 6 for c in intents.classes)
    assert {tuple(task.data) for task in tasks_of(db, SUPPORT_INTENTS)} == {("text",)}


def test_setup_is_idempotent_and_keeps_labels_people_changed(db: Database, settings: Settings) -> None:
    first = setup_demo(db, settings, shared_dir=None)
    set_label(db, READER_PREFERENCE, "article-1", "Summary 3")
    again = setup_demo(db, settings, shared_dir=None)
    assert [(r.name, r.tasks, r.ground_truth, r.source) for r in again] == [
        (r.name, r.tasks, r.ground_truth, r.source) for r in first
    ]
    assert not any(r.created for r in again)
    assert task_history(db, READER_PREFERENCE, "article-1")[-1].value == "Summary 3"
    assert len(tasks_of(db, SUPPORT_INTENTS)) == 60


def test_a_half_set_up_project_is_completed(db: Database, settings: Settings) -> None:
    from tools.projects import create_project

    create_project(db, SUPPORT_INTENTS)  # e.g. an earlier setup stopped before its import
    results = {r.name: r for r in setup_demo(db, settings, shared_dir=None)}
    assert (results[SUPPORT_INTENTS].tasks, results[SUPPORT_INTENTS].ground_truth) == (60, 30)


def test_missing_shared_folder_falls_back_to_samples(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    results = setup_demo(db, settings, shared_dir=tmp_path / "nowhere")
    assert {r.source for r in results} == {"shipped sample"}
    assert not list(settings.home.glob("demo-*")), "the temporary import file is removed"


def test_shipped_samples_are_well_formed() -> None:
    support = [
        json.loads(line) for line in (DEMO_DATA_DIR / "support_intents.jsonl").read_text().splitlines()
    ]
    assert len({row["id"] for row in support}) == len(support) == 60
    assert len({row["text"] for row in support}) == 60
    reader = [
        json.loads(line) for line in (DEMO_DATA_DIR / "reader_preference.jsonl").read_text().splitlines()
    ]
    assert len(reader) == 6
    assert all(row["best"] in {"Summary 1", "Summary 2", "Summary 3"} for row in reader)


def test_majority_best() -> None:
    assert (
        majority_best([{"best_summary": ["t0"]}, {"best_summary": ["gpt3"]}, {"best_summary": ["t0"]}])
        == "t0"
    )
    assert (
        majority_best([{"best_summary": ["t0"]}, {"best_summary": ["gpt3"]}, {"best_summary": ["brio"]}])
        is None
    )
    # An annotator may name two systems; each counts once for both.
    assert (
        majority_best([{"best_summary": ["t0", "brio"]}, {"best_summary": ["brio"]}, {"best_summary": []}])
        == "brio"
    )
    assert majority_best([{"best_summary": ["t0", "brio"]}, {"best_summary": ["gpt3"]}]) is None
    assert majority_best([]) is None


def test_default_shared_dir(tmp_path: Path) -> None:
    assert default_shared_dir({"LABELPILOT_SHARED_DIR": str(tmp_path)}) == tmp_path
    assert default_shared_dir({"LABELPILOT_SHARED_DIR": str(tmp_path / "missing")}) is None
    expected = SHARED if SHARED.is_dir() else None
    assert default_shared_dir({}) == expected


@needs_shared
def current_labels_by_id(db: Database, project: str) -> dict[str, str]:
    """Return {external id: current ground truth} of a project."""
    from tools.groundtruth import latest_annotations
    from tools.projects import get_project

    with db.session() as session:
        project_id = get_project(session, project).id
        return {task.external_id: ann.value for task, ann in latest_annotations(session, project_id)}


def test_shared_datasets(db: Database, settings: Settings) -> None:
    results = {r.name: r for r in setup_demo(db, settings, shared_dir=SHARED)}

    reader = results[READER_PREFERENCE]
    assert reader.source.startswith("news_summary_best_of_3")
    assert reader.tasks == 200
    assert reader.ground_truth == 169  # majority votes; 31 ties stay unlabeled (see PROVENANCE.md)
    tasks = tasks_of(db, READER_PREFERENCE)
    assert all(
        set(task.data) == {"article", "summary_1", "summary_2", "summary_3"} and all(task.data.values())
        for task in tasks
    )
    assert {task.meta["outlet"] for task in tasks} == {"bbc", "cnn"}
    # PROVENANCE.md: majority-best gpt3 / brio / t0 = 48+47 / 27+16 / 7+24; the slots are shuffled per
    # article, so every slot wins sometimes and no slot wins most of the time.
    labels = current_labels_by_id(db, READER_PREFERENCE)
    winners = Counter()
    for task in tasks:
        if task.external_id in labels:
            slot = int(labels[task.external_id].split()[-1]) - 1
            winners[task.meta["systems"].split(",")[slot]] += 1
    assert winners == {"gpt3": 95, "brio": 43, "t0": 31}
    counts = {c.label: c.count for c in coverage(db, READER_PREFERENCE).classes}
    assert sum(counts.values()) == 169 and max(counts.values()) < 95

    support = results[SUPPORT_INTENTS]
    assert (support.tasks, support.ground_truth) == (12 * 25, 12 * 5)
    per_class = coverage(db, SUPPORT_INTENTS).classes
    assert [(c.label, c.count) for c in per_class] == [(intent, 5) for intent in BANKING_INTENTS]

    again = setup_demo(db, settings, shared_dir=SHARED)
    assert [(r.tasks, r.ground_truth) for r in again] == [(200, 169), (300, 60)]
    assert again[0].source == reader.source


@needs_shared
def test_shared_subset_is_deterministic(settings: Settings, tmp_path: Path) -> None:
    ids = []
    for attempt in ("a", "b"):
        db = Database(f"sqlite:///{tmp_path / attempt}.db")
        db.ensure_schema()
        setup_demo(db, settings, shared_dir=SHARED)
        ids.append([(t.external_id, t.data["text"]) for t in tasks_of(db, SUPPORT_INTENTS)])
        db.dispose()
    assert ids[0] == ids[1]
