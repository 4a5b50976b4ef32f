"""Broken and hostile input files: one clear InputFileError each, and the database exactly as before.

Every case writes its file into tmp_path, imports it into a database that already holds a valid import
(tasks, labels, a schema, imported runs and predictions), and checks the error names the file and, where
they apply, the line and field, carries a hint, and left every table and schema untouched.
"""

from __future__ import annotations

import json
import os
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tools.errors import InputFileError
from tools.importers import import_file
from tools.labelspec import LabelSpec
from tools.projects import create_project
from tools.storage import Annotation, Database, Prediction, Project, Run, Task

SENTIMENT = LabelSpec.from_classes(["Positive", "Negative", "Neutral"], from_name="sentiment")


@dataclass
class Case:
    """A broken file: how to write it, how to import it, and what the error must say."""

    make: Callable[[Path], Path]
    kwargs: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    field: str | None = None
    says: str = ""
    #: The project to import into: "labeled" has a schema and data; "fresh" has neither.
    project: str = "labeled"


def text_file(name: str, content: str, *, encoding: str = "utf-8") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content.encode(encoding))
        return path

    return make


def bytes_file(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return make


def random_bytes(size: int, *, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def ls_task(task_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": task_id, "data": {"text": f"task {task_id}"}, "annotations": [{"result": result}]}


def ls_file(name: str, tasks: list[Any]) -> Callable[[Path], Path]:
    return text_file(name, json.dumps(tasks, indent=1))


def many_rows(n: int, make_row: Callable[[int], str], header: str = "id,text,label") -> str:
    return header + "\n" + "".join(make_row(i) + "\n" for i in range(n))


def missing(folder: Path) -> Path:
    return folder / "nowhere" / "data.csv"


def directory(folder: Path) -> Path:
    path = folder / "data.csv"
    path.mkdir()
    return path


def fifo(folder: Path) -> Path:
    path = folder / "pipe.csv"
    os.mkfifo(path)
    return path


def unreadable(folder: Path) -> Path:
    path = folder / "secret.csv"
    path.write_text("text\nx\n", encoding="utf-8")
    path.chmod(0)
    return path


def garbage_zip_xlsx(folder: Path) -> Path:
    path = folder / "book.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/workbook.xml", random_bytes(2000))
        archive.writestr("junk.bin", random_bytes(5000, seed=3))
    return path


def broken_sheet_xlsx(folder: Path) -> Path:
    import openpyxl

    path = folder / "sheet.xlsx"
    workbook = openpyxl.Workbook()
    workbook.save(path)
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    parts["xl/worksheets/sheet1.xml"] = b"<worksheet><sheetData><row r='1'><c r='A1' t='s'>"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in parts.items():
            archive.writestr(name, content)
    return path


def xlsx_with(rows: list[list[Any]], name: str = "book.xlsx") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        import openpyxl

        path = folder / name
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        assert sheet is not None
        for row in rows:
            sheet.append(row)
        workbook.save(path)
        return path

    return make


TEN_MB = "x" * (10 * 1024 * 1024)

CASES: dict[str, Case] = {
    # -- the file itself
    "not found": Case(missing, says="not found"),
    "a directory": Case(directory, says="folder"),
    "a pipe": Case(fifo, says="not a regular file"),
    "unknown extension": Case(text_file("data.txt", "text\nx\n"), says="--format"),
    "unknown encoding name": Case(
        text_file("data.csv", "text\nx\n"), {"encoding": "klingon"}, says="encoding"
    ),
    "empty csv": Case(text_file("empty.csv", ""), says="empty"),
    "blank csv": Case(text_file("blank.csv", "\n\n  \n"), says="no column names"),
    "empty json": Case(text_file("empty.json", "  \n"), says="empty"),
    "empty jsonl": Case(text_file("empty.jsonl", "\n\n"), says="no JSON objects"),
    "empty parquet": Case(text_file("empty.parquet", ""), says="empty"),
    "wrong encoding": Case(
        bytes_file("latin.csv", "id,text\n1,fine\n2,caf\xe9 cr\xe8me\n".encode("latin-1")),
        line=3,
        says="--encoding latin-1",
    ),
    "binary garbage as csv": Case(
        bytes_file("garbage.csv", b"id,text\n1,ok\n" + b"\x00\x01\x02" * 50), line=3
    ),
    "random bytes as csv": Case(bytes_file("random.csv", random_bytes(4096)), says="binary"),
    # -- delimited files
    "ragged row": Case(text_file("ragged.csv", "id,text\n1,a\n2,b\n3,c,extra\n"), line=4, says="3 cells"),
    "short row": Case(text_file("short.tsv", "id\ttext\tlabel\n1\ta\tPositive\n2\tb\n"), line=3),
    "unclosed quote": Case(
        text_file("quote.csv", 'id,text\n1,a\n2,"never closed\n3,c\n'), line=3, says="never closed"
    ),
    "bad quote": Case(text_file("quote2.csv", 'id,text\n1,"ab"c\n'), line=2),
    "duplicate header": Case(
        text_file("dup.csv", "id,text,text\n1,a,b\n"), line=1, field="text", says="twice"
    ),
    "value without header": Case(text_file("pandas.csv", ",text\n0,a\n1,b\n"), line=2, says="no name"),
    # -- JSON
    "invalid json": Case(
        text_file("bad.json", '[\n  {"text": "a"},\n  {"text": "b",}\n]\n'), line=3, says="column"
    ),
    "json object, not array": Case(text_file("obj.json", '{"text": "a"}'), line=1, says="not an array"),
    "json array of non-objects": Case(
        text_file("nums.json", '[\n{"text": "a"},\n 2\n]'), line=3, says="number"
    ),
    "json truncated": Case(text_file("cut.json", '[{"text": "a"},\n{"text": "b"}'), says="not closed"),
    "json trailing data": Case(
        text_file("tail.json", '[{"text": "a"}]\n{"text": "b"}'), line=2, says="extra"
    ),
    "jsonl line not an object": Case(
        text_file("lines.jsonl", '{"text": "a"}\n\n[1, 2]\n'), line=3, says="array"
    ),
    "jsonl invalid line": Case(
        text_file("lines.jsonl", '{"text": "a"}\n{"text": b}\n'), line=2, says="invalid JSON"
    ),
    "lone surrogate": Case(text_file("s.jsonl", '{"text": "ok"}\n{"text": "bad \\ud800"}\n'), line=2),
    # -- columns
    "missing chosen field": Case(
        text_file("cols.csv", "id,text,label\n1,a,Positive\n"),
        {"fields": ["txt"]},
        line=1,
        field="txt",
        says="did you mean 'text'",
    ),
    "missing id column": Case(text_file("cols.csv", "id,text\n1,a\n"), {"id_column": "key"}, field="key"),
    "missing label column": Case(text_file("cols.csv", "id,text\n1,a\n"), {"label_column": "y"}, field="y"),
    "missing field in a jsonl record": Case(
        text_file("recs.jsonl", '{"text": "a"}\n{"body": "b"}\n'), {"fields": ["text"]}, line=2, field="text"
    ),
    "label column is also an input": Case(
        text_file("cols.csv", "text,label\na,Positive\n"),
        {"fields": ["text", "label"], "label_column": "label"},
    ),
    "empty id": Case(text_file("ids.csv", "id,text\n1,a\n,b\n"), line=3, field="id", says="empty"),
    "id too long": Case(text_file("ids.csv", f"id,text\n{'k' * 300},b\n"), line=2, field="id"),
    # -- ids and content
    "same id, different content": Case(
        text_file("dups.csv", "id,text\n1,a\n2,b\n1,c\n"), line=4, says="different content"
    ),
    "same id, different content, across chunks": Case(
        text_file("big.csv", many_rows(4500, lambda i: f"t{i % 4000},text {i},")),
        line=4002,
        says="earlier in this file",
    ),
    "id already imported with other content": Case(
        text_file("again.csv", "id,text,label\nv1,changed text,Positive\n"), line=2, says="already imported"
    ),
    # -- sizes
    "field over the limit": Case(
        text_file("big.csv", f"id,text,note\n1,{'y' * 300},short\n"),
        {"max_field_bytes": 200},
        line=2,
        field="text",
    ),
    "meta field over the limit": Case(
        text_file("big.csv", f"id,text,note\n1,short,{'y' * 300}\n"),
        {"max_field_bytes": 200, "fields": ["text"]},
        line=2,
        field="note",
    ),
    "10 MB field": Case(text_file("huge.csv", f"id,text\n1,small\n2,{TEN_MB}\n"), line=3, field="text"),
    "10 MB jsonl field": Case(
        text_file("huge.jsonl", json.dumps({"text": TEN_MB}) + "\n"), line=1, field="text"
    ),
    # -- labels
    "invalid label": Case(
        text_file("labels.csv", "id,text,label\nn1,a,Positive\nn2,b,Happy\n"),
        {"label_column": "label"},
        line=3,
        field="label",
        says="not one of the labels",
    ),
    "label-sep on a single-choice schema": Case(
        text_file("labels.csv", "id,text,label\nn1,a,Positive\n"),
        {"label_column": "label", "label_sep": ","},
        field="label",
    ),
    "more than 1000 distinct labels": Case(
        text_file("free.csv", many_rows(1500, lambda i: f"f{i},text {i},label {i}")),
        {"label_column": "label"},
        line=1002,
        field="label",
        says="labelpilot schema set",
        project="fresh",
    ),
    "a single distinct label": Case(
        text_file("one.csv", "text,label\na,spam\nb,spam\n"),
        {"label_column": "label"},
        field="label",
        says="at least two",
        project="fresh",
    ),
    # -- Label Studio
    "labelstudio unknown tag": Case(
        ls_file(
            "ls.json",
            [
                ls_task(
                    1, [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["Positive"]}}]
                ),
                ls_task(2, [{"from_name": "topic", "type": "choices", "value": {"choices": ["Sports"]}}]),
            ],
        ),
        line=23,
        field="annotations",
        says="topic",
    ),
    "labelstudio result does not fit": Case(
        ls_file(
            "ls.json",
            [ls_task(1, [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["Meh"]}}])],
        ),
        line=2,
        field="annotations",
        says="not one of the labels",
    ),
    "labelstudio wrong result type": Case(
        ls_file(
            "ls.json", [ls_task(1, [{"from_name": "sentiment", "type": "rating", "value": {"rating": 4}}])]
        ),
        line=2,
        field="annotations",
    ),
    "labelstudio prediction does not fit": Case(
        ls_file(
            "ls.json",
            [
                {
                    "id": 9,
                    "data": {"text": "t"},
                    "predictions": [
                        {
                            "result": [
                                {"from_name": "sentiment", "type": "choices", "value": {"choices": ["?"]}}
                            ]
                        }
                    ],
                }
            ],
        ),
        line=2,
        field="predictions",
    ),
    "labelstudio without a schema": Case(
        ls_file(
            "ls.json",
            [ls_task(1, [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["x"]}}])],
        ),
        line=2,
        field="annotations",
        says="schema set --config",
        project="fresh",
    ),
    "labelstudio data is not an object": Case(
        text_file("ls.json", '[{"id": 1, "data": {"text": "a"}},\n {"id": 2, "data": "b"}]'),
        {"fmt": "labelstudio"},
        line=2,
        field="data",
    ),
    # -- binary formats
    "parquet of random bytes": Case(bytes_file("data.parquet", random_bytes(5000)), says="Parquet"),
    "xlsx of random bytes": Case(bytes_file("data.xlsx", random_bytes(5000)), says="xlsx"),
    "xlsx that is a zip of garbage": Case(garbage_zip_xlsx, says="xlsx"),
    "xlsx with a broken sheet": Case(broken_sheet_xlsx),
    "csv renamed to xlsx": Case(text_file("data.xlsx", "id,text\n1,a\n"), says="xlsx"),
    "xlsx missing sheet": Case(xlsx_with([["text"], ["a"]]), {"sheet": "Dtaa"}, says="Sheet"),
    "xlsx stray cell": Case(xlsx_with([["id", "text"], [1, "a"], [2, "b", "stray"]]), line=3, says="stray"),
    "xlsx duplicate header": Case(xlsx_with([["text", "text"], ["a", "b"]]), line=1, field="text"),
    "xlsx empty sheet": Case(xlsx_with([]), says="empty"),
}


def snapshot(db: Database) -> dict[str, Any]:
    with db.session() as session:
        counts = {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (Project, Task, Annotation, Run, Prediction)
        }
        specs = {name: spec for name, spec in session.execute(select(Project.name, Project.label_spec))}
        newest = session.scalar(select(func.max(Annotation.id)))
    return {"counts": counts, "specs": specs, "newest annotation": newest}


@pytest.fixture
def populated(db: Database, tmp_path: Path) -> Database:
    """A database with a labeled project (schema, tasks, labels, imported predictions) and an empty one."""
    create_project(db, "labeled", spec=SENTIMENT)
    create_project(db, "fresh")
    valid = tmp_path / "valid" / "good.csv"
    valid.parent.mkdir()
    valid.write_text("id,text,label\nv1,fine,Positive\nv2,bad,negative\nv3,so so,\n", encoding="utf-8")
    import_file(db, "labeled", valid, label_column="label")
    export = tmp_path / "valid" / "export.json"
    task = {
        "id": 55,
        "data": {"text": "from label studio"},
        "annotations": [
            {"result": [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["Neutral"]}}]}
        ],
        "predictions": [
            {
                "result": [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["Positive"]}}],
                "score": 0.7,
                "model_version": "m1",
            }
        ],
    }
    export.write_text(json.dumps([task]), encoding="utf-8")
    report = import_file(db, "labeled", export)
    assert (report.tasks_added, report.labels_added, report.predictions_added) == (1, 1, 1)
    return db


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_cleanly(name: str, populated: Database, tmp_path: Path) -> None:
    case = CASES[name]
    folder = tmp_path / "case"
    folder.mkdir()
    path = case.make(folder)
    before = snapshot(populated)

    with pytest.raises(InputFileError) as caught:
        import_file(populated, case.project, path, **case.kwargs)

    error = caught.value
    message = error.user_message()
    assert path.name in message, message
    assert error.path == str(path)
    if case.line is not None:
        assert error.line == case.line, message
        assert f"line {case.line}" in message
    if case.field is not None:
        assert error.field == case.field, message
        assert f"'{case.field}'" in message
    if case.says:
        assert case.says in message, message
    assert error.hint, f"no hint: {message}"
    assert snapshot(populated) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(populated: Database, tmp_path: Path) -> None:
    path = unreadable(tmp_path)
    with pytest.raises(InputFileError, match="cannot be opened"):
        import_file(populated, "labeled", path)


def test_bad_row_deep_in_a_big_file_writes_nothing(populated: Database, tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    rows = "".join(f"x{i},text {i},Positive\n" for i in range(9000))
    path.write_text("id,text,label\n" + rows + "x9000,text,Unknown\n", encoding="utf-8")
    before = snapshot(populated)
    with pytest.raises(InputFileError, match="line 9002"):
        import_file(populated, "labeled", path, label_column="label")
    assert snapshot(populated) == before


def test_error_is_raised_before_a_schema_is_created(populated: Database, tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(3000)) + "x,y,z\n")
    with pytest.raises(InputFileError, match="line 3002"):
        import_file(populated, "fresh", path, label_column="label")
    assert snapshot(populated)["specs"]["fresh"] is None
