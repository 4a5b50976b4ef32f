"""Importers: every format, ids and de-duplication, ground truth from a column or a Label Studio export."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, text

from tools.groundtruth import coverage, set_label, task_history
from tools.importers import (
    CHUNK_ROWS,
    ImportFormat,
    _canonical_json,
    detect_format,
    import_file,
)
from tools.labelspec import LabelSpec, TaskType
from tools.projects import create_project, project_summary
from tools.storage import Annotation, Database, Prediction, Run, Task

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"


# ---------------------------------------------------------------------- helpers


def write_csv(path: Path, rows: list[dict[str, Any]], *, delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def tasks_of(db: Database, project: str = "p") -> dict[str, Task]:
    project_id = project_summary(db, project).id
    with db.session() as session:
        rows = session.scalars(select(Task).where(Task.project_id == project_id).order_by(Task.id)).all()
    return {t.external_id: t for t in rows}


def labels_of(db: Database, project: str = "p") -> dict[str, Any]:
    """Return {external id: current label} (the newest annotation per task)."""
    with db.session() as session:
        rows = session.execute(
            select(Task.external_id, Annotation.value, Annotation.author, Annotation.source)
            .join(Annotation, Annotation.task_id == Task.id)
            .where(Task.project_id == project_summary(db, project).id)
            .order_by(Annotation.id)
        ).all()
    return {external_id: value for external_id, value, _, _ in rows}


def count(db: Database, model: type[Any]) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def project(db: Database) -> Database:
    create_project(db, "p")
    return db


REVIEWS = [
    {"id": "r1", "text": "Great phone, love it", "source": "web", "label": "positive"},
    {"id": "r2", "text": "Broke after a week", "source": "shop", "label": "negative"},
    {"id": "r3", "text": "It is a phone", "source": "web", "label": ""},
    {"id": "r4", "text": "Café au lait, très bien ☕", "source": "web", "label": "Positive"},
]


# ---------------------------------------------------------------------- formats


def test_csv_gives_tasks_ids_data_and_meta(project: Database, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "reviews.csv", REVIEWS)
    report = import_file(project, "p", source, fields=["text"])
    assert report.format is ImportFormat.csv
    assert (report.rows_read, report.tasks_added, report.labels_added) == (4, 4, 0)
    assert report.id_column == "id"  # a column literally named id is used by default
    assert report.fields == ["text"]
    tasks = tasks_of(project)
    assert list(tasks) == ["r1", "r2", "r3", "r4"]
    assert tasks["r4"].data == {"text": "Café au lait, très bien ☕"}
    # Columns that are not inputs are kept as meta (the label column too, when it is not used as one).
    assert tasks["r1"].meta == {"source": "web", "label": "positive"}
    canonical = json.dumps(
        {"text": "Great phone, love it"}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    assert tasks["r1"].content_hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_default_fields_are_every_column_but_id_and_label(project: Database, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "reviews.csv", REVIEWS)
    report = import_file(project, "p", source, label_column="label")
    assert report.fields == ["text", "source"]
    task = tasks_of(project)["r2"]
    assert list(task.data) == ["text", "source"]  # file order is kept in storage
    assert task.meta == {}


def test_tsv_with_quoted_cells(project: Database, tmp_path: Path) -> None:
    source = tmp_path / "data.tsv"
    source.write_text('id\ttext\n1\t"He said ""hi""\tthen left"\n2\tplain\n', encoding="utf-8")
    report = import_file(project, "p", source)
    assert report.format is ImportFormat.tsv and report.tasks_added == 2
    assert tasks_of(project)["1"].data == {"text": 'He said "hi"\tthen left'}


def test_json_array_keeps_json_types_and_auto_detects_id(project: Database, tmp_path: Path) -> None:
    records = [
        {"id": 7, "text": "first", "score": 0.5, "tags": ["a", "b"], "extra": {"k": None}},
        {"id": 8, "text": "second", "score": 2, "tags": [], "extra": {"k": True}},
    ]
    source = tmp_path / "data.json"
    source.write_text(json.dumps(records, indent=2), encoding="utf-8")
    report = import_file(project, "p", source, fields=["text", "score"])
    assert report.format is ImportFormat.json
    tasks = tasks_of(project)
    assert tasks["7"].data == {"text": "first", "score": 0.5}
    assert tasks["7"].meta == {"tags": ["a", "b"], "extra": {"k": None}}
    assert tasks["8"].data["score"] == 2


def test_jsonl_with_blank_lines_and_hash_ids(project: Database, tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_text('{"text": "a"}\n\n{"text": "b", "n": 1}\r\n{"text": "a"}\n', encoding="utf-8")
    report = import_file(project, "p", source)
    assert (report.rows_read, report.tasks_added, report.duplicates_in_file) == (3, 2, 1)
    assert report.id_column is None
    tasks = tasks_of(project)
    expected = hashlib.sha256(b'{"text":"a"}').hexdigest()[:16]
    assert expected in tasks
    assert sorted(t.data.get("n", 0) for t in tasks.values()) == [0, 1]


def test_parquet_values_become_json(project: Database, tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "text": ["alpha", "beta"],
            "score": [0.25, float("nan")],
            "when": pa.array([dt.datetime(2024, 5, 1, 12, 0), None], pa.timestamp("us")),
            "category": pa.array(["x", "y"]).dictionary_encode(),
            "blob": pa.array([b"raw", b"bytes"], pa.binary()),
        }
    )
    source = tmp_path / "data.parquet"
    pq.write_table(table, source)
    report = import_file(project, "p", source, fields=["text"])
    assert report.format is ImportFormat.parquet
    tasks = tasks_of(project)
    assert tasks["1"].meta == {
        "score": 0.25,
        "when": "2024-05-01T12:00:00",
        "category": "x",
        "blob": "raw",
    }
    assert tasks["2"].meta["score"] is None and tasks["2"].meta["when"] is None


def test_parquet_written_by_pandas(project: Database, tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": [f"row {i}" for i in range(5)], "label": ["a", "b", "a", "b", "a"]})
    source = tmp_path / "frame.pq"
    frame.to_parquet(source)
    report = import_file(project, "p", source, label_column="label")
    assert (report.tasks_added, report.labels_added, report.schema_created) == (5, 5, True)


def test_xlsx_reads_first_sheet_with_offset_header(project: Database, tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Data"
    sheet["B2"], sheet["C2"], sheet["D2"] = "id", "text", "when"
    sheet["B3"], sheet["C3"], sheet["D3"] = 1, "first", dt.datetime(2024, 1, 2, 3, 4)
    sheet["B5"], sheet["C5"], sheet["D5"] = 2, "'=SUM(A1:A2)", None
    other = workbook.create_sheet("Other")
    other["A1"], other["A2"] = "text", "from the other sheet"
    source = tmp_path / "book.xlsx"
    workbook.save(source)

    report = import_file(project, "p", source, fields=["text"])
    assert (report.format, report.rows_read, report.tasks_added) == (ImportFormat.xlsx, 2, 2)
    tasks = tasks_of(project)
    assert tasks["1"].meta == {"when": "2024-01-02T03:04:00"}
    assert tasks["2"].data == {"text": "=SUM(A1:A2)"}  # our exporter's "'" is removed again

    create_project(project, "q")
    assert import_file(project, "q", source, sheet="Other").tasks_added == 1


def test_xlsx_written_by_pandas(project: Database, tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "text": ["one", "two"], "n": [1, 2]})
    source = tmp_path / "frame.xlsx"
    frame.to_excel(source, index=False)
    import_file(project, "p", source)
    assert tasks_of(project)["b"].data == {"text": "two", "n": 2}


def test_detect_format_by_extension_and_sniffing(tmp_path: Path) -> None:
    for name, fmt in [
        ("a.csv", ImportFormat.csv),
        ("a.TAB", ImportFormat.tsv),
        ("a.ndjson", ImportFormat.jsonl),
        ("a.pq", ImportFormat.parquet),
        ("a.xlsx", ImportFormat.xlsx),
    ]:
        assert detect_format(tmp_path / name) is fmt
    plain = tmp_path / "plain.json"
    plain.write_text('[{"text": "x"}]', encoding="utf-8")
    studio = tmp_path / "studio.json"
    studio.write_text('[{"id": 1, "data": {"text": "x"}, "annotations": []}]', encoding="utf-8")
    assert detect_format(plain) is ImportFormat.json
    assert detect_format(studio) is ImportFormat.labelstudio


def test_explicit_format_overrides_extension(project: Database, tmp_path: Path) -> None:
    source = tmp_path / "data.txt"
    source.write_text("text\tlabel\nhello\tx\n", encoding="utf-8")
    report = import_file(project, "p", source, fmt="tsv")
    assert report.format is ImportFormat.tsv and report.tasks_added == 1


def test_headerless_file_with_column_names(project: Database, tmp_path: Path) -> None:
    source = tmp_path / "raw.tsv"
    source.write_text("hello world\t1,2\tabc\nbye\t0\tdef\n", encoding="utf-8")
    report = import_file(
        project, "p", source, column_names=["text", "labels", "id"], label_column="labels", label_sep=","
    )
    assert (report.rows_read, report.tasks_added, report.id_column) == (2, 2, "id")
    assert labels_of(project) == {"abc": ["1", "2"], "def": ["0"]}


def test_other_encodings(project: Database, tmp_path: Path) -> None:
    source = tmp_path / "latin.csv"
    source.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    import_file(project, "p", source, encoding="latin-1")
    assert [t.data for t in tasks_of(project).values()] == [{"text": "café"}]
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffid,text\n1,x\n".encode())
    assert import_file(project, "p", bom).id_column == "id"  # the BOM is not part of the first name
    utf16 = tmp_path / "wide.csv"
    utf16.write_text("id,text\nw1,wide\n", encoding="utf-16")
    assert import_file(project, "p", utf16, encoding="utf-16").tasks_added == 1


# ---------------------------------------------------------------------- ids, re-import, duplicates


def test_reimport_adds_nothing(project: Database, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "reviews.csv", REVIEWS)
    first = import_file(project, "p", source, label_column="label")
    assert (first.tasks_added, first.labels_added, first.schema_created) == (4, 3, True)
    again = import_file(project, "p", source, label_column="label")
    assert (again.tasks_added, again.tasks_unchanged, again.labels_added) == (0, 4, 0)
    assert not again.schema_created
    assert count(project, Task) == 4 and count(project, Annotation) == 3


def test_reimport_with_a_changed_label_appends_history(project: Database, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "reviews.csv", REVIEWS)
    import_file(project, "p", source, label_column="label")
    set_label(project, "p", "r1", "negative", author="ann")
    # The file still says positive: importing it again records that as the newest label.
    report = import_file(project, "p", source, label_column="label")
    assert report.labels_added == 1
    assert [h.value for h in task_history(project, "p", "r1")] == ["positive", "negative", "positive"]


def test_identical_rows_without_ids_are_one_task(project: Database, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "dups.csv", [{"text": "same"}, {"text": "other"}, {"text": "same"}])
    report = import_file(project, "p", source)
    assert (report.tasks_added, report.duplicates_in_file, report.id_column) == (2, 1, None)
    again = import_file(project, "p", source)
    assert (again.tasks_added, again.tasks_unchanged, again.duplicates_in_file) == (0, 2, 1)


def test_explicit_id_column(project: Database, tmp_path: Path) -> None:
    rows = [{"key": "k1", "id": "1", "text": "a"}, {"key": "k2", "id": "1", "text": "b"}]
    source = write_csv(tmp_path / "keys.csv", rows)
    report = import_file(project, "p", source, id_column="key")
    assert report.id_column == "key"
    assert tasks_of(project)["k2"].data == {"id": "1", "text": "b"}


def test_chunk_boundaries(project: Database, tmp_path: Path) -> None:
    rows = [{"text": f"sentence number {i}", "label": "even" if i % 2 == 0 else "odd"} for i in range(5000)]
    rows[4500] = dict(rows[10])  # the same row again, two chunks later
    source = write_csv(tmp_path / "big.csv", rows)
    seen: list[int] = []
    report = import_file(project, "p", source, label_column="label", progress=seen.append)
    assert (report.rows_read, report.tasks_added, report.duplicates_in_file) == (5000, 4999, 1)
    assert report.labels_added == 4999
    assert seen == [CHUNK_ROWS, 2 * CHUNK_ROWS, 5000]
    assert count(project, Task) == 4999

    ids = [{"id": f"t{i}", "text": f"text {i}"} for i in range(5000)]
    ids[4999] = dict(ids[3])  # same id, same content, in the third chunk
    create_project(project, "ids")
    report = import_file(project, "ids", write_csv(tmp_path / "ids.csv", ids))
    assert (report.tasks_added, report.duplicates_in_file) == (4999, 1)


def test_sqlite_page_cache_is_restored(project: Database, tmp_path: Path) -> None:
    if not project.is_sqlite:
        pytest.skip("SQLite only")
    with project.engine.connect() as connection:
        before = connection.execute(text("PRAGMA cache_size")).scalar()
    import_file(project, "p", write_csv(tmp_path / "reviews.csv", REVIEWS))
    with project.engine.connect() as connection:
        assert connection.execute(text("PRAGMA cache_size")).scalar() == before


# ---------------------------------------------------------------------- labels


def test_label_column_creates_a_schema_in_first_seen_order(project: Database, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "reviews.csv", REVIEWS)
    report = import_file(project, "p", source, label_column="label")
    assert report.schema_created
    spec = LabelSpec.model_validate(project_summary(project, "p").label_spec)
    assert spec.type is TaskType.single_choice
    assert spec.class_names() == ["positive", "negative"]  # "Positive" is the same class
    assert labels_of(project) == {"r1": "positive", "r2": "negative", "r4": "positive"}
    with project.session() as session:
        authors = set(session.execute(select(Annotation.author, Annotation.source)).all())
    assert authors == {("import", "import")}


def test_label_column_with_an_existing_schema(db: Database, tmp_path: Path) -> None:
    create_project(db, "p", spec=LabelSpec.from_classes(["negative", "neutral", "positive"]))
    rows = [{"text": "a", "label": "POSITIVE"}, {"text": "b", "label": "2"}, {"text": "c", "label": " "}]
    report = import_file(db, "p", write_csv(tmp_path / "l.csv", rows), label_column="label", author="ann")
    assert (report.labels_added, report.schema_created) == (2, False)
    assert sorted(labels_of(db).values()) == ["neutral", "positive"]  # "2" is the second class
    cov = coverage(db, "p")
    assert {c.label: c.count for c in cov.classes} == {"negative": 0, "neutral": 1, "positive": 1}


def test_multi_label_with_separator(project: Database, tmp_path: Path) -> None:
    rows = [
        {"id": "1", "text": "a", "labels": "sports; politics"},
        {"id": "2", "text": "b", "labels": "politics"},
        {"id": "3", "text": "c", "labels": "business;Sports"},
        {"id": "4", "text": "d", "labels": ""},
    ]
    source = write_csv(tmp_path / "multi.csv", rows)
    report = import_file(project, "p", source, label_column="labels", label_sep=";")
    spec = LabelSpec.model_validate(project_summary(project, "p").label_spec)
    assert spec.type is TaskType.multi_choice
    assert spec.class_names() == ["sports", "politics", "business"]
    # Values are in class order, like LabelSpec.validate_value returns them.
    assert labels_of(project) == {"1": ["sports", "politics"], "2": ["politics"], "3": ["sports", "business"]}
    assert report.labels_added == 3
    assert import_file(project, "p", source, label_column="labels", label_sep=";").labels_added == 0


def test_json_label_lists(db: Database, tmp_path: Path) -> None:
    create_project(db, "p", spec=LabelSpec.from_classes(["a", "b", "c"], type=TaskType.multi_choice))
    source = tmp_path / "l.jsonl"
    source.write_text('{"text": "x", "labels": ["c", "a"]}\n{"text": "y", "labels": []}\n', encoding="utf-8")
    report = import_file(db, "p", source, label_column="labels")
    # null (or a missing cell) is no label; an empty list says that none of the classes applies.
    assert report.labels_added == 2
    assert list(labels_of(db).values()) == [["a", "c"], []]


def test_formula_prefix_is_removed_only_before_formula_characters(project: Database, tmp_path: Path) -> None:
    rows = [
        {"id": "1", "text": '\'=HYPERLINK("x")'},
        {"id": "2", "text": "'+1"},
        {"id": "3", "text": "'-2"},
        {"id": "4", "text": "'@me"},
        {"id": "5", "text": "'\tindented"},
        {"id": "6", "text": "'quoted'"},
        {"id": "7", "text": "'"},
    ]
    source = write_csv(tmp_path / "formulas.csv", rows)
    import_file(project, "p", source)
    texts = {k: t.data["text"] for k, t in tasks_of(project).items()}
    assert texts == {
        "1": '=HYPERLINK("x")',
        "2": "+1",
        "3": "-2",
        "4": "@me",
        "5": "\tindented",
        "6": "'quoted'",
        "7": "'",
    }
    create_project(project, "raw")
    import_file(project, "raw", source, unescape_formulas=False)
    assert tasks_of(project, "raw")["1"].data["text"] == '\'=HYPERLINK("x")'


# ---------------------------------------------------------------------- Label Studio


def ls_choice(value: str, *, from_name: str = "sentiment") -> dict[str, Any]:
    return {"from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": [value]}}


def ls_export() -> list[dict[str, Any]]:
    return [
        {
            "id": 101,
            "data": {"text": "I love it", "source": "web"},
            "annotations": [
                {
                    "id": 1,
                    "result": [ls_choice("Negative")],
                    "completed_by": 3,
                    "created_at": "2024-01-01T10:00:00Z",
                },
                {
                    "id": 2,
                    "result": [ls_choice("Positive")],
                    "completed_by": {"id": 4, "email": "ann@example.com"},
                    "created_at": "2024-01-02T10:00:00Z",
                },
                {
                    "id": 3,
                    "result": [ls_choice("Neutral")],
                    "was_cancelled": True,
                    "completed_by": 5,
                    "created_at": "2024-01-03T10:00:00Z",
                },
            ],
            "predictions": [
                {"result": [ls_choice("Positive")], "score": 0.91, "model_version": "gpt-4o-mini-v1"},
                {"result": [ls_choice("Neutral")], "score": 0.4, "model_version": "baseline"},
            ],
        },
        {
            "id": 102,
            "data": {"text": "Meh", "source": "shop"},
            "annotations": [{"id": 4, "result": [ls_choice("Neutral")], "completed_by": 3}],
            "predictions": [
                {"result": [ls_choice("Negative")], "score": 0.55, "model_version": "gpt-4o-mini-v1"}
            ],
        },
        {"id": 103, "data": {"text": "No label yet", "source": "web"}, "annotations": [], "predictions": []},
        {
            "id": 104,
            "data": {"text": "Only a cancelled one", "source": "web"},
            "annotations": [{"id": 5, "result": [ls_choice("Positive")], "was_cancelled": True}],
        },
    ]


SENTIMENT = LabelSpec.from_classes(["Positive", "Negative", "Neutral"], from_name="sentiment")


def test_labelstudio_export_annotations_and_predictions(db: Database, tmp_path: Path) -> None:
    create_project(db, "p", spec=SENTIMENT)
    source = tmp_path / "project-1-at-2024.json"
    source.write_text(json.dumps(ls_export(), indent=1), encoding="utf-8")
    report = import_file(db, "p", source)
    assert report.format is ImportFormat.labelstudio
    assert (report.tasks_added, report.labels_added, report.predictions_added) == (4, 2, 3)
    assert report.id_column == "id" and report.fields == ["text", "source"]
    assert labels_of(db) == {"101": "Positive", "102": "Neutral"}
    with db.session() as session:
        authors = dict(session.execute(select(Task.external_id, Annotation.author).join(Annotation)).all())
        runs = {r.model: r for r in session.scalars(select(Run))}
        predictions = session.execute(
            select(Run.model, Task.external_id, Prediction.value, Prediction.confidence)
            .join(Run, Run.id == Prediction.run_id)
            .join(Task, Task.id == Prediction.task_id)
            .order_by(Run.model, Task.external_id)
        ).all()
    assert authors == {"101": "ann@example.com", "102": "3"}
    assert set(runs) == {"gpt-4o-mini-v1", "baseline"}
    assert all(r.kind == "imported" and r.status == "finished" for r in runs.values())
    assert [tuple(p) for p in predictions] == [
        ("baseline", "101", "Neutral", 0.4),
        ("gpt-4o-mini-v1", "101", "Positive", 0.91),
        ("gpt-4o-mini-v1", "102", "Negative", 0.55),
    ]

    again = import_file(db, "p", source)
    assert (again.tasks_added, again.tasks_unchanged, again.labels_added, again.predictions_added) == (
        0,
        4,
        0,
        0,
    )
    assert count(db, Run) == 2 and count(db, Prediction) == 3


def test_labelstudio_changed_prediction_goes_to_a_new_run(db: Database, tmp_path: Path) -> None:
    create_project(db, "p", spec=SENTIMENT)
    tasks = ls_export()[:1]
    source = tmp_path / "export.json"
    source.write_text(json.dumps(tasks), encoding="utf-8")
    import_file(db, "p", source)
    tasks[0]["predictions"][0]["result"] = [ls_choice("Negative")]
    source.write_text(json.dumps(tasks), encoding="utf-8")
    report = import_file(db, "p", source, fmt=ImportFormat.labelstudio)
    assert report.predictions_added == 1
    with db.session() as session:
        models = session.scalars(select(Run.model).order_by(Run.id)).all()
    assert models == ["gpt-4o-mini-v1", "baseline", "gpt-4o-mini-v1"]  # earlier runs are never rewritten


def test_labelstudio_spans(db: Database, tmp_path: Path) -> None:
    spec = LabelSpec.from_classes(["PER", "ORG"], type=TaskType.spans, input_fields=["text"])
    create_project(db, "p", spec=spec)
    text_value = "Ada Lovelace met Babbage at the Royal Society"
    export = [
        {
            "id": 1,
            "data": {"text": text_value},
            "annotations": [
                {
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "labels",
                            "value": {"start": 32, "end": 45, "text": "Royal Society", "labels": ["ORG"]},
                        },
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "labels",
                            "value": {"start": 0, "end": 12, "text": "Ada Lovelace", "labels": ["PER"]},
                        },
                    ]
                }
            ],
        }
    ]
    # A submitted annotation with an empty result says "no entities"; a cancelled one says nothing.
    export.append({"id": 2, "data": {"text": "nothing here"}, "annotations": [{"result": []}]})
    export.append(
        {"id": 3, "data": {"text": "skipped"}, "annotations": [{"result": [], "was_cancelled": True}]}
    )
    source = tmp_path / "spans.json"
    source.write_text(json.dumps(export), encoding="utf-8")
    assert import_file(db, "p", source).labels_added == 2
    assert labels_of(db)["2"] == [] and "3" not in labels_of(db)
    assert labels_of(db)["1"] == [
        {"start": 0, "end": 12, "text": "Ada Lovelace", "label": "PER"},
        {"start": 32, "end": 45, "text": "Royal Society", "label": "ORG"},
    ]


def test_labelstudio_without_annotations_needs_no_schema(project: Database, tmp_path: Path) -> None:
    source = tmp_path / "tasks.json"
    source.write_text(json.dumps([{"data": {"text": "x"}}, {"data": {"text": "y"}, "annotations": []}]))
    report = import_file(project, "p", source)
    assert (report.format, report.tasks_added, report.id_column) == (ImportFormat.labelstudio, 2, None)


# ---------------------------------------------------------------------- canonical JSON


def test_canonical_json_matches_the_stdlib_definition() -> None:
    def stdlib(value: Any) -> bytes:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()

    text_values = [
        "".join(chr(c) for c in range(start, min(start + 64, 0x110000))) for start in range(0, 0x110000, 64)
    ]
    for value in text_values:
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
            continue
        row = {"z": value, "a": value[::-1], "é": "x"}
        assert _canonical_json(row, flat_text=True) == stdlib(row)
    awkward: list[dict[str, Any]] = [
        {"b": 1e-07, "a": 0.1},
        {"n": 2**70},
        {"nested": {"b": [1, 2.5], "a": None}, "t": True},
    ]
    for row in awkward:
        assert _canonical_json(row) == stdlib(row)


# ---------------------------------------------------------------------- the real datasets


def test_banking77_train(project: Database) -> None:
    source = DATASETS / "banking77" / "train.csv"
    if not source.is_file():
        pytest.skip("the shared datasets are not on this machine")
    with source.open(newline="", encoding="utf-8") as handle:
        data_rows = sum(1 for _ in csv.reader(handle)) - 1
    report = import_file(project, "p", source, label_column="category")
    assert report.rows_read == data_rows
    assert report.tasks_added + report.duplicates_in_file == data_rows
    assert report.schema_created
    cov = coverage(project, "p")
    assert len(cov.classes) == 77 and not cov.missing_classes
    assert cov.labeled_count == report.tasks_added


@pytest.mark.parametrize("split", [pytest.param("train", marks=pytest.mark.slow), "dev", "test"])
def test_goemotions_tsv(project: Database, split: str) -> None:
    source = DATASETS / "goemotions" / "original" / f"{split}.tsv"
    if not source.is_file():
        pytest.skip("the shared datasets are not on this machine")
    # Layout: no header; text<TAB>comma-separated label ids<TAB>comment id (see PROVENANCE.md).
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    distinct = {label for row in rows for label in row[1].split(",")}
    report = import_file(
        project,
        "p",
        source,
        column_names=["text", "labels", "id"],
        label_column="labels",
        label_sep=",",
    )
    assert (report.rows_read, report.tasks_added, report.labels_added) == (len(rows), len(rows), len(rows))
    spec = LabelSpec.model_validate(project_summary(project, "p").label_spec)
    assert spec.type is TaskType.multi_choice
    assert set(spec.class_names()) == distinct
    labels = labels_of(project)
    tasks = tasks_of(project)
    for text_value, label_ids, comment_id in rows[:200]:
        assert tasks[comment_id].data == {"text": text_value}
        assert labels[comment_id] == sorted(set(label_ids.split(",")), key=spec.class_names().index)
    assert import_file(
        project, "p", source, column_names=["text", "labels", "id"], label_column="labels", label_sep=","
    ).tasks_unchanged == len(rows)
