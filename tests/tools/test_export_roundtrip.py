"""Export then import into a new project: the same tasks (ids, data) and the same ground truth come back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tools.exporters import WRITERS, ExportFormat, export_project
from tools.groundtruth import current_labels
from tools.importers import import_file
from tools.labelspec import LabelSpec
from tools.projects import create_project, get_project
from tools.storage import Annotation, Database, Prediction, Run, Task

SINGLE = LabelSpec.from_classes(["Sports", "World", "Big, Small"], input_fields=["text"])
MULTI = LabelSpec.from_classes(
    ["Sports", "World", "Business", "Odd|Name"], type="multi_choice", input_fields=["text"]
)
SPANS = LabelSpec.from_classes(["PER", "ORG"], type="spans", input_fields=["text"], from_name="ner")

#: (external id, text, meta, label) per task; texts exercise formulas, quotes, newlines and non-ASCII.
TEXTS = [
    ("1", "Ada joined IBM", {"source": "wire"}),
    ("2", "=SUM(A1) is not a formula", {"source": "@user"}),
    ("a-3", 'line one\nsays "hi", then ; and |', {"source": "-5"}),
    ("4", "+1 growth at Acme — ünïcode", {"source": "blog", "year": 2024}),
    ("5", "nothing labeled here", {}),
]
LABELS: dict[str, dict[str, Any]] = {
    "single": {"1": "Sports", "2": "Big, Small", "a-3": "World", "4": "Sports"},
    "multi": {"1": ["Sports", "World"], "2": ["Odd|Name"], "a-3": [], "4": ["Business"]},
    "spans": {
        "1": [
            {"start": 0, "end": 3, "text": "Ada", "label": "PER"},
            {"start": 11, "end": 14, "text": "IBM", "label": "ORG"},
        ],
        "4": [{"start": 13, "end": 17, "text": "Acme", "label": "ORG"}],
    },
}
SPECS = {"single": SINGLE, "multi": MULTI, "spans": SPANS}


def build(db: Database, name: str, kind: str) -> None:
    """A project of TEXTS with LABELS[kind] (one label edited, one deleted) and a run with predictions."""
    create_project(db, name, spec=SPECS[kind])
    labels = LABELS[kind]
    with db.session() as session:
        project = get_project(session, name)
        run = Run(project_id=project.id, kind="bulk", model="m")
        session.add(run)
        session.flush()
        for external_id, text, meta in TEXTS:
            task = Task(
                project_id=project.id,
                external_id=external_id,
                content_hash=external_id,
                data={"text": text},
                meta=meta,
            )
            session.add(task)
            session.flush()
            if external_id == "5":  # labeled once, then the label was deleted
                first = labels["1"]
                session.add(Annotation(project_id=project.id, task_id=task.id, value=first, author="x"))
                session.add(Annotation(project_id=project.id, task_id=task.id, value=None, deleted=True))
            if external_id in labels:
                session.add(
                    Annotation(project_id=project.id, task_id=task.id, value=labels["1"], author="old")
                )
                session.add(
                    Annotation(
                        project_id=project.id, task_id=task.id, value=labels[external_id], author="ann"
                    )
                )
                session.add(
                    Prediction(run_id=run.id, task_id=task.id, value=labels[external_id], confidence=0.8)
                )
            session.flush()


def snapshot(db: Database, name: str) -> list[tuple[str, dict[str, Any], Any]]:
    """Return (external id, data, current label) per task, by external id."""
    with db.session() as session:
        project = get_project(session, name)
        labels = current_labels(session, project.id)
        tasks = session.scalars(select(Task).where(Task.project_id == project.id)).all()
        return sorted((task.external_id, task.data, labels.get(task.id)) for task in tasks)


IMPORT_OPTIONS: dict[ExportFormat, dict[str, Any]] = {
    ExportFormat.csv: {"label_column": "label", "fields": ["text"]},
    ExportFormat.jsonl: {"label_column": "label", "fields": ["text"]},
    ExportFormat.json: {"label_column": "label", "fields": ["text"]},
    ExportFormat.parquet: {"label_column": "label", "fields": ["text"]},
    # Label Studio assigns its own task ids; labelpilot's travel in data.labelpilot_id.
    ExportFormat.labelstudio: {"fmt": "labelstudio", "fields": ["text"]},
}


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize("fmt", list(IMPORT_OPTIONS))
def test_export_then_import_gives_the_same_tasks_and_labels(
    db: Database, tmp_path: Path, fmt: ExportFormat, kind: str
) -> None:
    build(db, "source", kind)
    output = tmp_path / f"export.{WRITERS[fmt].extension}"
    export_project(db, "source", fmt=fmt, output=output, exports_dir=tmp_path)
    create_project(db, "copy", spec=SPECS[kind])
    report = import_file(db, "copy", output, **IMPORT_OPTIONS[fmt])
    assert report.tasks_added == len(TEXTS)
    assert snapshot(db, "copy") == snapshot(db, "source")


@pytest.mark.parametrize(
    "empty_label",
    [False, True],
)
def test_spans_round_trip_through_label_studio_json(db: Database, tmp_path: Path, empty_label: bool) -> None:
    build(db, "source", "spans")
    if empty_label:
        with db.session() as session:
            task = session.scalars(select(Task).where(Task.external_id == "a-3")).one()
            session.add(Annotation(project_id=task.project_id, task_id=task.id, value=[], author="ann"))
    output = tmp_path / "export.json"
    export_project(db, "source", fmt=ExportFormat.labelstudio, output=output, exports_dir=tmp_path)
    create_project(db, "copy", spec=SPANS)
    import_file(db, "copy", output, **IMPORT_OPTIONS[ExportFormat.labelstudio])
    assert snapshot(db, "copy") == snapshot(db, "source")


@pytest.mark.parametrize("fmt", [ExportFormat.jsonl, ExportFormat.json])
def test_json_formats_also_keep_meta(db: Database, tmp_path: Path, fmt: ExportFormat) -> None:
    build(db, "source", "single")
    output = tmp_path / f"export.{WRITERS[fmt].extension}"
    export_project(db, "source", fmt=fmt, output=output, exports_dir=tmp_path, include_predictions=False)
    create_project(db, "copy", spec=SINGLE)
    import_file(db, "copy", output, label_column="label", fields=["text"])
    with db.session() as session:
        copied = {t.external_id: t.meta for t in session.scalars(select(Task).where(Task.project_id == 2))}
    assert copied == {external_id: meta for external_id, _, meta in TEXTS}


def test_label_studio_predictions_come_back_as_an_imported_run(db: Database, tmp_path: Path) -> None:
    build(db, "source", "multi")
    output = tmp_path / "export.json"
    export_project(db, "source", fmt=ExportFormat.labelstudio, output=output, exports_dir=tmp_path)
    create_project(db, "copy", spec=MULTI)
    report = import_file(db, "copy", output, **IMPORT_OPTIONS[ExportFormat.labelstudio])
    # Every prediction comes back, the empty choice list of task a-3 included.
    assert report.predictions_added == len(LABELS["multi"])
    with db.session() as session:
        run = session.scalars(select(Run).where(Run.project_id == 2)).one()
        assert run.model == "m"
        assert {
            p.confidence for p in session.scalars(select(Prediction).where(Prediction.run_id == run.id))
        } == {0.8}
