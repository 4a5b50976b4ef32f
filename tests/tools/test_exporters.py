"""Exports: exact content of every format, filters, spreadsheet safety, atomic writes and streaming."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import event, insert, select

from tools import exporters
from tools.errors import LabelpilotError, NotFoundError
from tools.exporters import (
    WRITERS,
    CsvWriter,
    ExportFormat,
    ExportReport,
    ExportRow,
    export_project,
    flat_label,
    select_run,
)
from tools.labelspec import LabelSpec
from tools.storage import Annotation, Database, Prediction, Project, PromptVersion, Run, Task

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NEWS = LabelSpec.from_classes(["Sports", "World", "Business"], input_fields=["text"])


@dataclass
class Fixture:
    """Ids of what a test project holds."""

    project_id: int
    tasks: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)


def add_project(db: Database, name: str, spec: LabelSpec | None) -> int:
    with db.session() as session:
        project = Project(name=name, label_spec=spec.to_json() if spec else None)
        session.add(project)
        session.flush()
        return project.id


def add_task(
    db: Database, project_id: int, external_id: str, data: dict[str, Any], meta: dict[str, Any]
) -> int:
    with db.session() as session:
        task = Task(
            project_id=project_id, external_id=external_id, content_hash=external_id, data=data, meta=meta
        )
        session.add(task)
        session.flush()
        return task.id


def annotate(
    db: Database,
    project_id: int,
    task_id: int,
    value: Any,
    *,
    author: str = "",
    minutes: int = 0,
    deleted: bool = False,
) -> int:
    with db.session() as session:
        annotation = Annotation(
            project_id=project_id,
            task_id=task_id,
            value=None if deleted else value,
            deleted=deleted,
            author=author,
            created_at=T0 + timedelta(minutes=minutes),
        )
        session.add(annotation)
        session.flush()
        return annotation.id


def add_run(db: Database, project_id: int, *, version: int | None, model: str = "") -> int:
    with db.session() as session:
        version_id = None
        if version is not None:
            prompt = session.scalar(
                select(PromptVersion).where(
                    PromptVersion.project_id == project_id, PromptVersion.number == version
                )
            )
            if prompt is None:
                prompt = PromptVersion(project_id=project_id, number=version, instructions="Label {text}")
                session.add(prompt)
                session.flush()
            version_id = prompt.id
        run = Run(
            project_id=project_id, prompt_version_id=version_id, kind="bulk", status="done", model=model
        )
        session.add(run)
        session.flush()
        return run.id


def predict(
    db: Database,
    run_id: int,
    task_id: int,
    value: Any,
    confidence: float | None,
    *,
    error: tuple[str, str] | None = None,
) -> None:
    with db.session() as session:
        session.add(
            Prediction(
                run_id=run_id,
                task_id=task_id,
                value=value,
                confidence=confidence,
                error_kind=error[0] if error else None,
                error_message=error[1] if error else None,
            )
        )


@pytest.fixture
def news(db: Database) -> Fixture:
    """Four tasks: a changed label, a deleted label, a label, no label; runs for versions 1 and 2."""
    fx = Fixture(project_id=add_project(db, "news", NEWS))
    pid = fx.project_id
    fx.tasks["1"] = add_task(db, pid, "1", {"text": "Match report"}, {"source": "wire"})
    fx.tasks["2"] = add_task(db, pid, "2", {"text": "=SUM(A1)"}, {"source": "@user"})
    fx.tasks["a-3"] = add_task(db, pid, "a-3", {"text": 'line one\nsays "hi"'}, {"source": "-5"})
    fx.tasks["4"] = add_task(db, pid, "4", {"text": "+1 growth"}, {"source": "blog", "year": 2024})
    annotate(db, pid, fx.tasks["1"], "Sports", author="alice", minutes=0)
    annotate(db, pid, fx.tasks["1"], "World", author="bob", minutes=5)
    annotate(db, pid, fx.tasks["2"], "Business", author="alice", minutes=1)
    annotate(db, pid, fx.tasks["2"], None, author="alice", minutes=2, deleted=True)
    annotate(db, pid, fx.tasks["a-3"], "Sports", author="carol", minutes=3)
    fx.runs["v1"] = add_run(db, pid, version=1, model="gpt-a")
    predict(db, fx.runs["v1"], fx.tasks["1"], "Sports", 0.5)
    predict(db, fx.runs["v1"], fx.tasks["a-3"], "Sports", 0.6)
    fx.runs["v2"] = add_run(db, pid, version=2, model="gpt-b")
    predict(db, fx.runs["v2"], fx.tasks["1"], "World", 0.9)
    predict(db, fx.runs["v2"], fx.tasks["2"], "Business", 0.4)
    predict(db, fx.runs["v2"], fx.tasks["a-3"], None, None, error=("invalid_output", "not JSON"))
    predict(db, fx.runs["v2"], fx.tasks["4"], "Sports", None)
    # The newest run has no predictions yet: the default export skips it.
    fx.runs["empty"] = add_run(db, pid, version=2, model="gpt-b")
    return fx


def run_export(db: Database, tmp_path: Path, fmt: ExportFormat, **options: Any) -> ExportReport:
    options.setdefault("output", tmp_path / "out" / f"export.{WRITERS[fmt].extension}")
    return export_project(db, "news", fmt=fmt, exports_dir=tmp_path / "exports", **options)


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def records(db: Database, tmp_path: Path, **options: Any) -> list[dict[str, Any]]:
    report = run_export(db, tmp_path, ExportFormat.jsonl, **options)
    return [json.loads(line) for line in report.path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------- formats


def test_csv_is_exact_spreadsheet_safe_and_quoted(db: Database, news: Fixture, tmp_path: Path) -> None:
    report = run_export(db, tmp_path, ExportFormat.csv)
    run = news.runs["v2"]
    expected = (
        "id,text,source,year,label,prediction,confidence,model_version,run_id,error\r\n"
        f"1,Match report,wire,,World,World,0.9,v2,{run},\r\n"
        f"2,'=SUM(A1),'@user,,,Business,0.4,v2,{run},\r\n"
        f'a-3,"line one\nsays ""hi""",\'-5,,Sports,,,v2,{run},invalid_output: not JSON\r\n'
        f"4,'+1 growth,blog,2024,,Sports,,v2,{run},\r\n"
    )
    assert report.path.read_bytes() == expected.encode("utf-8")
    assert report.model_dump() == {
        "path": tmp_path / "out" / "export.csv",
        "format": ExportFormat.csv,
        "rows": 4,
        "with_ground_truth": 2,
        "with_predictions": 3,
        "filters": {
            "ground_truth_only": False,
            "min_confidence": None,
            "run_id": run,
            "version": None,
            "include_predictions": True,
        },
        "bytes": len(expected.encode("utf-8")),
        "warnings": [],
    }
    rows = csv_rows(report.path)
    assert rows[3][1] == 'line one\nsays "hi"'


def test_csv_safety_can_be_turned_off(db: Database, news: Fixture, tmp_path: Path) -> None:
    report = run_export(db, tmp_path, ExportFormat.csv, csv_safe=False, include_predictions=False)
    rows = csv_rows(report.path)
    assert rows[0] == ["id", "text", "source", "year", "label"]
    assert [row[1:3] for row in rows[1:]] == [
        ["Match report", "wire"],
        ["=SUM(A1)", "@user"],
        ['line one\nsays "hi"', "-5"],
        ["+1 growth", "blog"],
    ]


def test_csv_injection_covers_every_trigger_and_the_header(db: Database, tmp_path: Path) -> None:
    pid = add_project(db, "news", NEWS)
    add_task(db, pid, "-1", {"=cmd": "@SUM(1)", "t": "\tx"}, {"r": "\rx", "ok": "a=b"})
    report = run_export(db, tmp_path, ExportFormat.csv)
    rows = csv_rows(report.path)
    assert rows == [
        ["id", "'=cmd", "t", "r", "ok", "label"],
        ["'-1", "'@SUM(1)", "'\tx", "'\rx", "a=b", ""],
    ]


def test_jsonl_keeps_json_values(db: Database, news: Fixture, tmp_path: Path) -> None:
    run = news.runs["v2"]
    common = {"model_version": "v2", "run_id": run}
    assert records(db, tmp_path) == [
        {
            "id": "1",
            "text": "Match report",
            "source": "wire",
            "label": "World",
            "prediction": "World",
            "confidence": 0.9,
            **common,
            "error": None,
        },
        {
            "id": "2",
            "text": "=SUM(A1)",
            "source": "@user",
            "label": None,
            "prediction": "Business",
            "confidence": 0.4,
            **common,
            "error": None,
        },
        {
            "id": "a-3",
            "text": 'line one\nsays "hi"',
            "source": "-5",
            "label": "Sports",
            "prediction": None,
            "confidence": None,
            **common,
            "error": "invalid_output: not JSON",
        },
        {
            "id": "4",
            "text": "+1 growth",
            "source": "blog",
            "year": 2024,
            "label": None,
            "prediction": "Sports",
            "confidence": None,
            **common,
            "error": None,
        },
    ]


def test_json_is_an_array_of_the_jsonl_objects(db: Database, news: Fixture, tmp_path: Path) -> None:
    report = run_export(db, tmp_path, ExportFormat.json)
    text = report.path.read_text(encoding="utf-8")
    assert text.startswith('[\n{"id": "1", ') and text.endswith("}\n]\n")
    assert json.loads(text) == records(db, tmp_path)


def test_empty_json_export_is_an_empty_array(db: Database, tmp_path: Path) -> None:
    add_project(db, "news", NEWS)
    for fmt in (ExportFormat.json, ExportFormat.labelstudio, ExportFormat.labelstudio_min):
        report = run_export(db, tmp_path, fmt)
        assert json.loads(report.path.read_text(encoding="utf-8")) == []
        assert report.rows == 0


def test_parquet_has_flat_cells_and_typed_columns(db: Database, news: Fixture, tmp_path: Path) -> None:
    report = run_export(db, tmp_path, ExportFormat.parquet)
    table = pq.read_table(report.path)
    assert table.schema.field("confidence").type == pa.float64()
    assert table.schema.field("run_id").type == pa.int64()
    assert table.schema.field("year").type == pa.string()
    run = news.runs["v2"]
    assert table.to_pylist() == [
        {
            "id": "1",
            "text": "Match report",
            "source": "wire",
            "year": None,
            "label": "World",
            "prediction": "World",
            "confidence": 0.9,
            "model_version": "v2",
            "run_id": run,
            "error": None,
        },
        {
            "id": "2",
            "text": "=SUM(A1)",
            "source": "@user",
            "year": None,
            "label": None,
            "prediction": "Business",
            "confidence": 0.4,
            "model_version": "v2",
            "run_id": run,
            "error": None,
        },
        {
            "id": "a-3",
            "text": 'line one\nsays "hi"',
            "source": "-5",
            "year": None,
            "label": "Sports",
            "prediction": None,
            "confidence": None,
            "model_version": "v2",
            "run_id": run,
            "error": "invalid_output: not JSON",
        },
        {
            "id": "4",
            "text": "+1 growth",
            "source": "blog",
            "year": "2024",
            "label": None,
            "prediction": "Sports",
            "confidence": None,
            "model_version": "v2",
            "run_id": run,
            "error": None,
        },
    ]


def test_parquet_writes_row_groups_per_chunk(
    db: Database, news: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporters, "CHUNK_SIZE", 3)
    report = run_export(db, tmp_path, ExportFormat.parquet)
    metadata = pq.ParquetFile(report.path).metadata
    assert (metadata.num_rows, metadata.num_row_groups) == (4, 2)


def test_parquet_keeps_ratings_as_integers(db: Database, tmp_path: Path) -> None:
    spec = LabelSpec.from_classes([], type="rating", max_rating=5, input_fields=["text"])
    pid = add_project(db, "news", spec)
    annotate(db, pid, add_task(db, pid, "r1", {"text": "good"}, {}), 4)
    add_task(db, pid, "r2", {"text": "meh"}, {})
    table = pq.read_table(run_export(db, tmp_path, ExportFormat.parquet).path)
    assert table.schema.field("label").type == pa.int64()
    assert table.column("label").to_pylist() == [4, None]


def test_labelstudio_json_has_annotations_and_predictions(
    db: Database, news: Fixture, tmp_path: Path
) -> None:
    report = run_export(db, tmp_path, ExportFormat.labelstudio)
    tasks = json.loads(report.path.read_text(encoding="utf-8"))
    assert tasks == [
        {
            "id": 1,
            "data": {"text": "Match report", "labelpilot_id": "1"},
            "meta": {"source": "wire"},
            "annotations": [
                {
                    "result": NEWS.to_ls_result("World"),
                    "ground_truth": True,
                    "was_cancelled": False,
                    "completed_by": "bob",
                    "created_at": "2026-01-02T03:04:05.000000Z",
                    "updated_at": "2026-01-02T03:09:05.000000Z",
                }
            ],
            "predictions": [{"model_version": "v2", "score": 0.9, "result": NEWS.to_ls_result("World")}],
        },
        {
            "id": 2,
            "data": {"text": "=SUM(A1)", "labelpilot_id": "2"},
            "meta": {"source": "@user"},
            "predictions": [{"model_version": "v2", "score": 0.4, "result": NEWS.to_ls_result("Business")}],
        },
        {
            "data": {"text": 'line one\nsays "hi"', "labelpilot_id": "a-3"},
            "meta": {"source": "-5"},
            "annotations": [
                {
                    "result": NEWS.to_ls_result("Sports"),
                    "ground_truth": True,
                    "was_cancelled": False,
                    "completed_by": "carol",
                    "created_at": "2026-01-02T03:07:05.000000Z",
                    "updated_at": "2026-01-02T03:07:05.000000Z",
                }
            ],
        },
        {
            "id": 4,
            "data": {"text": "+1 growth", "labelpilot_id": "4"},
            "meta": {"source": "blog", "year": 2024},
            "predictions": [{"model_version": "v2", "result": NEWS.to_ls_result("Sports")}],
        },
    ]
    assert tasks[0]["annotations"][0]["result"] == [
        {
            "id": NEWS.to_ls_result("World")[0]["id"],
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["World"]},
        }
    ]
    assert (report.with_ground_truth, report.with_predictions) == (2, 3)


def test_labelstudio_min_is_flat_like_label_studio_json_min(
    db: Database, news: Fixture, tmp_path: Path
) -> None:
    report = run_export(db, tmp_path, ExportFormat.labelstudio_min)
    empty = {
        "annotator": None,
        "annotation_id": None,
        "created_at": None,
        "updated_at": None,
        "lead_time": None,
    }
    first_label = 1  # the first annotation row of task 1's current label
    assert json.loads(report.path.read_text(encoding="utf-8")) == [
        {
            "text": "Match report",
            "id": 1,
            "label": "World",
            "annotator": "bob",
            "annotation_id": first_label,
            "created_at": "2026-01-02T03:04:05.000000Z",
            "updated_at": "2026-01-02T03:09:05.000000Z",
            "lead_time": None,
        },
        {"text": "=SUM(A1)", "id": 2, **empty},
        {
            "text": 'line one\nsays "hi"',
            "id": "a-3",
            "label": "Sports",
            "annotator": "carol",
            "annotation_id": 5,
            "created_at": "2026-01-02T03:07:05.000000Z",
            "updated_at": "2026-01-02T03:07:05.000000Z",
            "lead_time": None,
        },
        {"text": "+1 growth", "id": 4, **empty},
    ]
    assert (report.with_ground_truth, report.with_predictions) == (2, 0)


def test_relabeling_after_a_deletion_starts_a_new_annotation(db: Database, tmp_path: Path) -> None:
    pid = add_project(db, "news", NEWS)
    task = add_task(db, pid, "t", {"text": "x"}, {})
    annotate(db, pid, task, "Sports", minutes=0)
    annotate(db, pid, task, None, minutes=1, deleted=True)
    again = annotate(db, pid, task, "World", author="dan", minutes=2)
    annotate(db, pid, task, "Business", author="eve", minutes=3)
    [record] = json.loads(run_export(db, tmp_path, ExportFormat.labelstudio_min).path.read_text())
    assert (record["label"], record["annotator"], record["annotation_id"]) == ("Business", "eve", again)
    assert (record["created_at"], record["updated_at"]) == (
        "2026-01-02T03:06:05.000000Z",
        "2026-01-02T03:07:05.000000Z",
    )


# ---------------------------------------------------------------------- label shapes per task type


def test_labelstudio_results_per_task_type(db: Database, tmp_path: Path) -> None:
    multi = LabelSpec.from_classes(
        ["Sports", "World", "Business"], type="multi_choice", input_fields=["text"]
    )
    rating = LabelSpec.from_classes([], type="rating", max_rating=5, input_fields=["text"])
    spans = LabelSpec.from_classes(["PER", "ORG"], type="spans", input_fields=["text"], from_name="ner")
    span_value = [
        {"start": 0, "end": 3, "text": "Ada", "label": "PER"},
        {"start": 13, "end": 16, "text": "IBM", "label": "ORG"},
    ]
    cases: list[tuple[LabelSpec, Any, list[dict[str, Any]], Any]] = [
        (
            multi,
            ["Sports", "Business"],
            [
                {
                    "from_name": "label",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": ["Sports", "Business"]},
                }
            ],
            {"choices": ["Sports", "Business"]},
        ),
        (
            rating,
            4,
            [{"from_name": "label", "to_name": "text", "type": "rating", "value": {"rating": 4}}],
            [{"rating": 4}],
        ),
        (
            spans,
            span_value,
            [
                {
                    "from_name": "ner",
                    "to_name": "text",
                    "type": "labels",
                    "value": {"start": 0, "end": 3, "text": "Ada", "labels": ["PER"]},
                },
                {
                    "from_name": "ner",
                    "to_name": "text",
                    "type": "labels",
                    "value": {"start": 13, "end": 16, "text": "IBM", "labels": ["ORG"]},
                },
            ],
            [
                {"start": 0, "end": 3, "text": "Ada", "labels": ["PER"]},
                {"start": 13, "end": 16, "text": "IBM", "labels": ["ORG"]},
            ],
        ),
    ]
    for number, (spec, value, expected_result, expected_min) in enumerate(cases):
        name = f"p{number}"
        pid = add_project(db, name, spec)
        task = add_task(db, pid, "t1", {"text": "Ada works at IBM"}, {})
        annotate(db, pid, task, value, author="ann")
        run = add_run(db, pid, version=1)
        predict(db, run, task, value, 0.75)
        output = tmp_path / f"{name}.json"
        export_project(db, name, fmt=ExportFormat.labelstudio, output=output, exports_dir=tmp_path)
        [ls_task] = json.loads(output.read_text())
        for results in (ls_task["annotations"][0]["result"], ls_task["predictions"][0]["result"]):
            assert all(isinstance(item.pop("id"), str) for item in results)
            assert results == expected_result
        assert ls_task["predictions"][0]["score"] == 0.75
        export_project(db, name, fmt=ExportFormat.labelstudio_min, output=output, exports_dir=tmp_path)
        [minimal] = json.loads(output.read_text())
        assert minimal[spec.from_name] == expected_min


def test_flat_labels_read_back_with_the_schema() -> None:
    multi = LabelSpec.from_classes(["Sports", "World", "Big, Small"], type="multi_choice")
    assert flat_label(multi, ["Sports", "World"]) == "Sports|World"
    assert flat_label(multi, ["Sports", "Big, Small"]) == '["Sports","Big, Small"]'
    assert flat_label(multi, []) == "[]"
    for value in (["Sports", "World"], ["Sports", "Big, Small"], [], ["World"]):
        assert multi.parse_text(str(flat_label(multi, value))) == value
    spans = LabelSpec.from_classes(["PER"], type="spans", input_fields=["text"])
    span_value = [{"start": 0, "end": 3, "text": "Ada", "label": "PER"}]
    assert flat_label(spans, span_value) == '[{"start":0,"end":3,"text":"Ada","label":"PER"}]'
    assert spans.parse_text(str(flat_label(spans, span_value)), source_text="Ada") == span_value
    number = LabelSpec.from_classes([], type="number")
    assert flat_label(number, -2.5) == -2.5
    assert flat_label(None, {"a": 1}) == '{"a":1}'


def test_multi_choice_csv_label_column(db: Database, tmp_path: Path) -> None:
    spec = LabelSpec.from_classes(["Sports", "World", "Business"], type="multi_choice", input_fields=["text"])
    pid = add_project(db, "news", spec)
    annotate(db, pid, add_task(db, pid, "m1", {"text": "x"}, {}), ["Sports", "Business"])
    report = run_export(db, tmp_path, ExportFormat.csv)
    assert report.path.read_bytes() == b"id,text,label\r\nm1,x,Sports|Business\r\n"


def test_a_label_that_no_longer_fits_the_schema_is_left_out_with_a_warning(
    db: Database, tmp_path: Path
) -> None:
    pid = add_project(db, "news", NEWS)
    annotate(db, pid, add_task(db, pid, "1", {"text": "x"}, {}), "Weather")
    report = run_export(db, tmp_path, ExportFormat.labelstudio)
    assert json.loads(report.path.read_text()) == [{"id": 1, "data": {"text": "x", "labelpilot_id": "1"}}]
    assert len(report.warnings) == 1
    assert "task '1': label left out" in report.warnings[0]


def test_reserved_and_clashing_column_names_are_prefixed(db: Database, tmp_path: Path) -> None:
    pid = add_project(db, "news", NEWS)
    add_task(db, pid, "1", {"text": "x", "label": "given", "id": 7}, {"text": "m", "error": "e"})
    [record] = records(db, tmp_path)
    assert record == {
        "id": "1",
        "text": "x",
        "data.label": "given",
        "data.id": 7,
        "meta.text": "m",
        "meta.error": "e",
        "label": None,
    }


def test_a_project_without_schema_exports_tables_but_not_label_studio(db: Database, tmp_path: Path) -> None:
    pid = add_project(db, "news", None)
    add_task(db, pid, "1", {"text": "x"}, {})
    assert records(db, tmp_path) == [{"id": "1", "text": "x", "label": None}]
    with pytest.raises(NotFoundError, match="no label schema"):
        run_export(db, tmp_path, ExportFormat.labelstudio)


# ---------------------------------------------------------------------- filters and runs


def test_ground_truth_only(db: Database, news: Fixture, tmp_path: Path) -> None:
    report = run_export(db, tmp_path, ExportFormat.jsonl, ground_truth_only=True)
    assert [r["id"] for r in records(db, tmp_path, ground_truth_only=True)] == ["1", "a-3"]
    assert report.filters["ground_truth_only"] is True


def test_min_confidence_keeps_confident_predictions_only(db: Database, news: Fixture, tmp_path: Path) -> None:
    assert [r["id"] for r in records(db, tmp_path, min_confidence=0.9)] == ["1"]
    # A missing confidence (an error, or a labeler without confidences) fails the filter.
    assert [r["id"] for r in records(db, tmp_path, min_confidence=0.4)] == ["1", "2"]
    assert [r["id"] for r in records(db, tmp_path, min_confidence=0.4, ground_truth_only=True)] == ["1"]


def test_run_and_version_select_the_predictions(db: Database, news: Fixture, tmp_path: Path) -> None:
    by_run = records(db, tmp_path, run_id=news.runs["v1"])
    assert [(r["id"], r["prediction"], r["confidence"]) for r in by_run] == [
        ("1", "Sports", 0.5),
        ("2", None, None),
        ("a-3", "Sports", 0.6),
        ("4", None, None),
    ]
    assert {(r["model_version"], r["run_id"]) for r in by_run if r["prediction"]} == {("v1", news.runs["v1"])}
    # Columns of a task without a prediction in the run stay empty.
    assert by_run[1]["model_version"] is None
    assert records(db, tmp_path, version=1) == by_run
    assert records(db, tmp_path, version=2) == records(db, tmp_path)
    assert records(db, tmp_path, version=1, run_id=news.runs["v1"]) == by_run
    # A run asked for by id is used even when it has no predictions.
    empty = records(db, tmp_path, run_id=news.runs["empty"])
    assert {r["run_id"] for r in empty} == {None}
    assert "prediction" in empty[0]


def test_unknown_run_or_version_is_an_error(db: Database, news: Fixture, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no run 999"):
        run_export(db, tmp_path, ExportFormat.csv, run_id=999)
    with pytest.raises(NotFoundError, match="no prompt version 7"):
        run_export(db, tmp_path, ExportFormat.csv, version=7)
    with pytest.raises(NotFoundError, match=f"no run {news.runs['v2']} of prompt version 1"):
        run_export(db, tmp_path, ExportFormat.csv, run_id=news.runs["v2"], version=1)
    other = add_project(db, "other", NEWS)
    foreign = add_run(db, other, version=None, model="m")
    with pytest.raises(NotFoundError, match=f"no run {foreign}"):
        run_export(db, tmp_path, ExportFormat.csv, run_id=foreign)
    with pytest.raises(NotFoundError, match="no project named 'nope'"):
        export_project(db, "nope", fmt=ExportFormat.csv, exports_dir=tmp_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_version_without_predictions_is_an_error(db: Database, news: Fixture, tmp_path: Path) -> None:
    add_run(db, news.project_id, version=3)
    with pytest.raises(NotFoundError, match="prompt version 3 has no run with predictions"):
        run_export(db, tmp_path, ExportFormat.csv, version=3)


def test_model_version_names_the_run(db: Database, news: Fixture) -> None:
    named = add_run(db, news.project_id, version=None, model="gpt-d")
    anonymous = add_run(db, news.project_id, version=None)
    with db.session() as session:
        versions = [
            select_run(session, news.project_id, run_id=run, version=None)
            for run in (news.runs["v1"], named, anonymous)
        ]
    assert [v.model_version if v else None for v in versions] == ["v1", "gpt-d", f"run-{anonymous}"]


def test_predictions_can_be_left_out(db: Database, news: Fixture, tmp_path: Path) -> None:
    report = run_export(db, tmp_path, ExportFormat.csv, include_predictions=False)
    assert report.path.read_text(encoding="utf-8").splitlines()[0] == "id,text,source,year,label"
    assert report.with_predictions == 0
    assert (
        "predictions"
        not in json.loads(
            run_export(db, tmp_path, ExportFormat.labelstudio, include_predictions=False).path.read_text()
        )[0]
    )
    with pytest.raises(LabelpilotError, match="predictions were left out"):
        run_export(db, tmp_path, ExportFormat.csv, include_predictions=False, min_confidence=0.5)


def test_a_project_without_runs_has_no_prediction_columns(db: Database, tmp_path: Path) -> None:
    pid = add_project(db, "news", NEWS)
    annotate(db, pid, add_task(db, pid, "1", {"text": "x"}, {}), "World")
    assert records(db, tmp_path) == [{"id": "1", "text": "x", "label": "World"}]
    with pytest.raises(NotFoundError, match="no predictions to filter"):
        run_export(db, tmp_path, ExportFormat.csv, min_confidence=0.5)


# ---------------------------------------------------------------------- files


def test_default_path_is_in_the_exports_folder(db: Database, news: Fixture, tmp_path: Path) -> None:
    exports_dir = tmp_path / "nested" / "exports"
    first = export_project(db, "news", fmt=ExportFormat.parquet, exports_dir=exports_dir)
    second = export_project(db, "news", fmt=ExportFormat.parquet, exports_dir=exports_dir)
    assert first.path.parent == exports_dir
    assert first.path.name.startswith("news-") and first.path.suffix == ".parquet"
    assert second.path != first.path and second.path.is_file() and first.path.is_file()
    assert first.bytes == first.path.stat().st_size > 0


def test_an_existing_folder_as_output_gets_a_default_name(
    db: Database, news: Fixture, tmp_path: Path
) -> None:
    folder = tmp_path / "here"
    folder.mkdir()
    report = export_project(
        db, "news", fmt=ExportFormat.labelstudio, output=folder, exports_dir=tmp_path / "x"
    )
    assert report.path.parent == folder and report.path.suffix == ".json"


def test_output_extension_is_the_users_choice(db: Database, news: Fixture, tmp_path: Path) -> None:
    report = run_export(db, tmp_path, ExportFormat.csv, output=tmp_path / "data.txt")
    assert report.path == tmp_path / "data.txt"
    assert report.path.read_text(encoding="utf-8").startswith("id,text")


def test_unwritable_output_is_a_clear_error(db: Database, news: Fixture, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(LabelpilotError, match="cannot write the export to") as caught:
        run_export(db, tmp_path, ExportFormat.csv, output=blocker / "out.csv")
    assert caught.value.hint
    assert blocker.read_text() == "not a folder"


class FailingCsvWriter(CsvWriter):
    """A writer that breaks after its first row."""

    def write(self, row: ExportRow) -> None:
        super().write(row)
        self.file.flush()
        raise RuntimeError("disk on fire")


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_a_failed_export_leaves_no_file(
    db: Database, news: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: ExportFormat
) -> None:
    base = WRITERS[fmt]

    class Failing(base):  # type: ignore[valid-type, misc]
        def write(self, row: ExportRow) -> None:
            super().write(row)
            raise RuntimeError("disk on fire")

    monkeypatch.setitem(WRITERS, fmt, Failing)
    folder = tmp_path / "out"
    folder.mkdir()
    previous = folder / "export.dat"
    previous.write_text("the previous export")
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_export(db, tmp_path, fmt, output=previous)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_export(db, tmp_path, fmt, output=None)
    assert [p.name for p in folder.iterdir()] == ["export.dat"]
    assert previous.read_text() == "the previous export"
    assert not (tmp_path / "exports").exists() or list((tmp_path / "exports").iterdir()) == []


def test_a_writer_failing_after_one_flushed_row_leaves_no_partial_file(
    db: Database, news: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(WRITERS, ExportFormat.csv, FailingCsvWriter)
    with pytest.raises(RuntimeError):
        run_export(db, tmp_path, ExportFormat.csv)
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------------- streaming


def test_twenty_thousand_tasks_stream_in_chunks(db: Database, tmp_path: Path) -> None:
    total = 20_000
    pid = add_project(db, "news", NEWS)
    run = add_run(db, pid, version=1, model="m")
    with db.session() as session:
        session.execute(
            insert(Task),
            [
                {
                    "project_id": pid,
                    "external_id": str(n),
                    "content_hash": str(n),
                    "data": {"text": f"t{n}"},
                    "meta": {},
                }
                for n in range(total)
            ],
        )
        ids = session.scalars(select(Task.id).where(Task.project_id == pid).order_by(Task.id)).all()
        session.execute(
            insert(Annotation),
            [{"project_id": pid, "task_id": tid, "value": "Sports", "author": "a"} for tid in ids[::2]],
        )
        session.execute(
            insert(Prediction),
            [{"run_id": run, "task_id": tid, "value": "World", "confidence": 0.8} for tid in ids[::3]],
        )
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    started = time.perf_counter()
    try:
        report = export_project(
            db, "news", fmt=ExportFormat.csv, output=tmp_path / "big.csv", exports_dir=tmp_path
        )
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    elapsed = time.perf_counter() - started
    assert (report.rows, report.with_ground_truth, report.with_predictions) == (total, 10_000, 6_667)
    task_pages = [s for s in statements if "FROM tasks" in s and "LIMIT" in s]
    assert len(task_pages) == total // exporters.CHUNK_SIZE + 1
    assert len(statements) < 100
    assert elapsed < 10, f"exporting {total} tasks took {elapsed:.1f} s"
    with report.path.open(encoding="utf-8", newline="") as handle:
        assert sum(1 for _ in csv.reader(handle)) == total + 1
