"""preview_file: first rows and a guessed id/label/fields mapping, read like import_file reads, no writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tools.errors import InputFileError
from tools.importers import PREVIEW_SCAN_ROWS, ImportFormat, preview_file


def write_csv(path: Path, rows: list[dict[str, Any]], *, delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


REVIEWS = [
    {"id": "r1", "text": "Great phone, love it", "source": "web", "label": "positive"},
    {"id": "r2", "text": "Broke after a week", "source": "shop", "label": "negative"},
    {"id": "r3", "text": "It is a phone", "source": "web", "label": ""},
    {"id": "r4", "text": "Works as described", "source": "web", "label": "Positive"},
    {"id": "r5", "text": "Battery died, screen cracked", "source": "shop", "label": "negative"},
    {"id": "r6", "text": "Fine I guess", "source": "web", "label": "neutral"},
    {"id": "r7", "text": "Best purchase this year", "source": "web", "label": "positive"},
]


def test_csv_guesses_id_label_and_fields(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "reviews.csv", REVIEWS)
    preview = preview_file(source, rows=2)
    assert preview.path == str(source)
    assert preview.format is ImportFormat.csv
    assert preview.columns == ["id", "text", "source", "label"]
    assert preview.rows == REVIEWS[:2]
    assert preview.rows_scanned == 7
    assert preview.more_rows is False
    assert preview.id_column == "id"
    assert preview.label_column == "label"
    assert preview.label_separator is None
    # "positive" and "Positive" are one class (first spelling), as a created schema would have them.
    assert preview.label_values == ["positive", "negative", "neutral"]
    assert preview.fields == ["text", "source"]
    assert "1 of the 7 rows have no label in 'label' (they import unlabeled)." in preview.notes


def test_tsv(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "reviews.tsv", REVIEWS, delimiter="\t")
    preview = preview_file(source, rows=1)
    assert preview.format is ImportFormat.tsv
    assert preview.rows == [REVIEWS[0]]
    assert (preview.id_column, preview.label_column) == ("id", "label")
    assert preview.fields == ["text", "source"]


def test_jsonl_keeps_json_types_and_unions_keys(tmp_path: Path) -> None:
    records = [
        {"id": 1, "text": "refund please", "intent": "refund"},
        {"id": 2, "text": "where is my card", "intent": "card_arrival", "lang": "en"},
        {"id": 3, "text": "refund now", "intent": "refund"},
    ]
    source = tmp_path / "banking.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    preview = preview_file(source)
    assert preview.format is ImportFormat.jsonl
    assert preview.columns == ["id", "text", "intent", "lang"]
    assert preview.rows == records
    assert preview.id_column == "id"
    assert preview.label_column == "intent"
    assert preview.label_values == ["refund", "card_arrival"]
    assert preview.fields == ["text", "lang"]


def test_json_array_with_label_lists(tmp_path: Path) -> None:
    records = [
        {"text": "cheap and fast", "labels": ["price", "speed"]},
        {"text": "slow", "labels": ["speed"]},
        {"text": "nothing to say", "labels": []},
    ]
    source = tmp_path / "data.json"
    source.write_text(json.dumps(records, indent=2), encoding="utf-8")
    preview = preview_file(source)
    assert preview.format is ImportFormat.json
    assert preview.rows == records
    assert preview.id_column is None
    assert preview.label_column == "labels"
    assert preview.label_separator is None  # JSON lists need no separator
    assert preview.label_values == ["speed", "price"]
    assert preview.fields == ["text"]
    assert "There is no 'id' column: task ids will be derived from the content." in preview.notes
    assert "1 of the 3 rows have no label in 'labels' (they import unlabeled)." in preview.notes


def test_xlsx_with_header_below_a_blank_row(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append([])
    sheet.append(["id", "text", "Sentiment"])
    sheet.append([1, "love it", "pos"])
    sheet.append([2, "hate it", "neg"])
    sheet.append([3, "'=SUM(A1)", "pos"])
    source = tmp_path / "data.xlsx"
    workbook.save(source)
    preview = preview_file(source)
    assert preview.format is ImportFormat.xlsx
    assert preview.columns == ["id", "text", "Sentiment"]
    assert preview.rows[0] == {"id": 1, "text": "love it", "Sentiment": "pos"}
    assert preview.rows[2]["text"] == "=SUM(A1)"  # the exporters' formula guard is removed, as on import
    assert (preview.id_column, preview.label_column) == ("id", "Sentiment")
    assert preview.label_values == ["pos", "neg"]


def test_xlsx_unknown_sheet_is_the_importers_error(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Data"
    source = tmp_path / "data.xlsx"
    workbook.save(source)
    with pytest.raises(InputFileError, match=r"has no sheet named 'Dat'.*did you mean 'Data'"):
        preview_file(source, sheet="Dat")


def test_parquet(tmp_path: Path) -> None:
    table = pa.table({"text": ["a b", "c d", "e f", "g h"], "y": [0, 1, 1, 0], "score": [0.1, 0.2, 0.3, 0.4]})
    source = tmp_path / "data.parquet"
    pq.write_table(table, source)
    preview = preview_file(source, rows=1)
    assert preview.format is ImportFormat.parquet
    assert preview.columns == ["text", "y", "score"]
    assert preview.rows == [{"text": "a b", "y": 0, "score": 0.1}]
    assert preview.label_column == "y"
    assert preview.label_values == ["0", "1"]
    assert preview.fields == ["text", "score"]


def ls_choice(value: str) -> dict[str, Any]:
    return {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [value]}}


def test_labelstudio_export(tmp_path: Path) -> None:
    export = [
        {
            "id": 101,
            "data": {"text": "Great", "source": "web"},
            "annotations": [{"id": 1, "result": [ls_choice("Positive")], "completed_by": 1}],
            "predictions": [{"result": [ls_choice("Positive")], "model_version": "m1"}],
        },
        {
            "id": 102,
            "data": {"text": "Meh", "source": "shop", "lang": "en"},
            "annotations": [{"id": 2, "result": [ls_choice("Neutral")], "was_cancelled": True}],
        },
        {"id": 103, "data": {"text": "No label yet", "source": "web"}, "annotations": []},
    ]
    source = tmp_path / "project-1.json"
    source.write_text(json.dumps(export), encoding="utf-8")
    preview = preview_file(source)
    assert preview.format is ImportFormat.labelstudio
    assert preview.columns == ["text", "source", "lang"]
    assert preview.rows == [task["data"] for task in export]
    assert preview.id_column == "id"
    assert preview.label_column is None
    assert preview.label_values == []
    assert preview.fields == ["text", "source", "lang"]
    assert preview.notes[0] == (
        "Label Studio export: the latest non-cancelled annotation of each task becomes its ground truth "
        "(1 of the 3 tasks have one); no label column is needed."
    )
    assert "1 of the 3 tasks have predictions; they are kept as imported runs." in preview.notes


def test_labelstudio_export_of_labelpilot_uses_its_id(tmp_path: Path) -> None:
    export = [{"id": 7, "data": {"labelpilot_id": "t1", "text": "Hi"}}]
    source = tmp_path / "export.json"
    source.write_text(json.dumps(export), encoding="utf-8")
    preview = preview_file(source)
    assert preview.columns == ["labelpilot_id", "text"]
    assert preview.id_column == "labelpilot_id"
    assert preview.fields == ["text"]


def test_multi_label_column_gets_a_separator(tmp_path: Path) -> None:
    tags = ["a,b", "a", "b, c", "a,c", "b", "c,a"]
    source = write_csv(
        tmp_path / "multi.csv", [{"text": f"row {i}", "labels": t} for i, t in enumerate(tags)]
    )
    preview = preview_file(source)
    assert preview.label_column == "labels"
    assert preview.label_separator == ","
    assert preview.label_values == ["a", "b", "c"]
    assert preview.fields == ["text"]


def test_few_multi_label_cells_of_known_labels_get_a_separator(tmp_path: Path) -> None:
    cells = ["a", "b", "a,b", "c", "a", "b", "c", "b,c", "a", "c"]  # most rows have one label
    rows = [{"text": f"row {i}", "label": cell} for i, cell in enumerate(cells)]
    preview = preview_file(write_csv(tmp_path / "few.csv", rows))
    assert (preview.label_column, preview.label_separator) == ("label", ",")
    assert preview.label_values == ["a", "b", "c"]


def test_commas_in_short_free_text_are_not_a_separator(tmp_path: Path) -> None:
    cells = [
        "Paris, France",
        "Lyon",
        "Nice, France",
        "Rome",
        "Milan",
        "Lyon",
        "Rome",
        "Milan",
        "Turin",
        "Nice",
    ]
    rows = [{"text": f"row {i}", "label": cell} for i, cell in enumerate(cells)]
    preview = preview_file(write_csv(tmp_path / "cities.csv", rows))
    assert preview.label_separator is None
    assert preview.label_values[:3] == ["Lyon", "Rome", "Milan"]


def test_pipe_separated_labels_found_without_a_telling_name(tmp_path: Path) -> None:
    rows = [
        {"text": f"a fairly long text number {i}", "tags": tags}
        for i, tags in enumerate(["x|y", "y", "x|z", "z|y", "y", "y|x"])
    ]
    preview = preview_file(write_csv(tmp_path / "tags.csv", rows))
    assert (preview.label_column, preview.label_separator) == ("tags", "|")
    assert preview.label_values == ["y", "x", "z"]


def test_no_label_like_column(tmp_path: Path) -> None:
    rows = [{"id": str(i), "title": f"title {i}", "body": f"a longer body text {i}"} for i in range(6)]
    preview = preview_file(write_csv(tmp_path / "plain.csv", rows))
    assert preview.id_column == "id"
    assert preview.label_column is None
    assert preview.label_separator is None
    assert preview.label_values == []
    assert preview.fields == ["title", "body"]
    assert "No label column found: the tasks will be imported without ground truth." in preview.notes


def test_label_name_is_matched_case_insensitively(tmp_path: Path) -> None:
    rows = [
        {"ID": "1", "review": "good", "Sentiment": "pos"},
        {"ID": "2", "review": "bad", "Sentiment": "neg"},
    ]
    preview = preview_file(write_csv(tmp_path / "s.csv", rows))
    assert preview.label_column == "Sentiment"
    # import_file only takes a column named exactly "id" as the id column.
    assert preview.id_column is None
    assert preview.fields == ["ID", "review"]


def test_short_repeating_column_is_guessed_rightmost_first(tmp_path: Path) -> None:
    rows = [
        {"text": f"message number {i} with some words", "lang": lang, "mood": mood}
        for i, (lang, mood) in enumerate([("en", "happy"), ("de", "sad"), ("en", "sad"), ("en", "happy")])
    ]
    preview = preview_file(write_csv(tmp_path / "m.csv", rows))
    assert preview.label_column == "mood"
    assert preview.label_values == ["happy", "sad"]
    assert preview.fields == ["text", "lang"]
    assert "Other columns that could hold labels: 'lang'." in preview.notes


def test_large_file_is_read_only_in_part(tmp_path: Path) -> None:
    rows = [{"id": str(i), "text": f"text {i}", "label": ["spam", "ham"][i % 3 == 0]} for i in range(5000)]
    source = write_csv(tmp_path / "big.csv", rows)
    preview = preview_file(source, rows=3)
    assert preview.rows_scanned == PREVIEW_SCAN_ROWS == 2000
    assert preview.more_rows is True
    assert preview.rows == rows[:3]
    assert preview.label_values == ["spam", "ham"]


def test_file_that_ends_exactly_at_the_scan_limit_has_no_more_rows(tmp_path: Path) -> None:
    rows = [{"text": f"text {i}"} for i in range(PREVIEW_SCAN_ROWS)]
    preview = preview_file(write_csv(tmp_path / "exact.csv", rows), rows=0)
    assert (preview.rows_scanned, preview.more_rows, preview.rows) == (PREVIEW_SCAN_ROWS, False, [])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="file not found") as caught:
        preview_file(tmp_path / "nope.csv")
    assert caught.value.path == str(tmp_path / "nope.csv")


def test_empty_file(tmp_path: Path) -> None:
    source = tmp_path / "empty.csv"
    source.write_bytes(b"")
    with pytest.raises(InputFileError, match="the file is empty"):
        preview_file(source)


def test_broken_json_line_names_the_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "ok"}\n{"text": "broken"\n{"text": "fine"}\n', encoding="utf-8")
    with pytest.raises(InputFileError, match="invalid JSON") as caught:
        preview_file(source)
    assert caught.value.line == 2


def test_malformed_csv_names_the_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("id,text\n1,hello\n2,too,many\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="has 3 cells but the header has 2 columns") as caught:
        preview_file(source)
    assert caught.value.line == 3


def test_undecodable_file(tmp_path: Path) -> None:
    source = tmp_path / "latin.csv"
    source.write_bytes("id,text\n1,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(InputFileError, match="is not valid utf-8 text") as caught:
        preview_file(source)
    assert caught.value.line == 2
    assert preview_file(source, encoding="latin-1").rows == [{"id": "1", "text": "caf\u00e9"}]


def test_rows_out_of_range() -> None:
    with pytest.raises(ValueError, match="rows must be between 0 and 2000"):
        preview_file("whatever.csv", rows=-1)
