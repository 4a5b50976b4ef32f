"""Exports: a project's tasks with their ground truth and predictions, as a file people and tools can read.

Formats (`ExportFormat`): CSV, JSONL, JSON, Parquet, Label Studio JSON and Label Studio JSON-MIN; each is
written by the `ExportWriter` registered for it in `WRITERS`.

Rows: one per task, ordered by task id. Tabular formats (csv, jsonl, json, parquet) have the columns `id`
(the external id), the input fields, the meta columns, `label` (the current ground truth, empty when there is
none) and, when predictions are exported, `prediction`, `confidence`, `model_version`, `run_id` and `error`.
An input field or meta column whose name is one of those columns is written as `data.<name>` / `meta.<name>`
(a meta column named like an input field as `meta.<name>` too).

Predictions come from one run: the one asked for (`run_id`), else the newest run of prompt version
`version` that has predictions, else the newest run of the project that has predictions; there are none
with `include_predictions=False` or when the project has no such run. `model_version` names the run:
`v<number>` of its prompt version, else the run's model, else `run-<id>`.

Cells: flat formats (csv, parquet) write a label as text that `LabelSpec.parse_text` reads back (a class
name; several joined by `|`, or a JSON list when a name holds `,`, `;` or `|`; spans as compact JSON), ratings
and numbers as numbers, and field values that are not strings as JSON text. JSON and JSONL keep JSON values.
CSV is spreadsheet-safe by default: a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`.

Files are streamed: tasks are read in id ranges of `CHUNK_SIZE` (with their current label and selected
prediction) and written to a temporary file next to the target, which replaces the target only when every row
was written, so a failure never leaves a half-written export. Tabular formats first collect the column names
in one more streamed pass over the tasks.
"""

from __future__ import annotations

import csv
import json
import math
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from tools.errors import LabelpilotError, LabelValueError, NotFoundError
from tools.importers import LS_ID_KEY
from tools.labelspec import LabelSpec, TaskType
from tools.projects import get_project, load_spec, require_spec
from tools.storage import Annotation, Database, Prediction, PromptVersion, Run, Task

#: How many tasks are read (and held in memory) at a time.
CHUNK_SIZE = 1000
#: At most this many warnings are listed in a report (the rest are counted).
MAX_WARNINGS = 20

ID_COLUMN = "id"
LABEL_COLUMN = "label"
PREDICTION_COLUMNS = ("prediction", "confidence", "model_version", "run_id", "error")
RESERVED_COLUMNS = frozenset({ID_COLUMN, LABEL_COLUMN, *PREDICTION_COLUMNS})

_SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_MULTI_SEPARATORS = re.compile(r"[,;|]")
_INT_ID = re.compile(r"0|[1-9][0-9]{0,17}")


class ExportFormat(str, Enum):
    """The file formats a project can be exported to."""

    csv = "csv"
    jsonl = "jsonl"
    json = "json"
    parquet = "parquet"
    labelstudio = "labelstudio"
    labelstudio_min = "labelstudio_min"


class ExportReport(BaseModel):
    """What an export wrote: where, how many rows, and with which filters."""

    path: Path
    format: ExportFormat
    rows: int
    with_ground_truth: int
    with_predictions: int
    filters: dict[str, Any]
    bytes: int
    warnings: list[str] = []


# ---------------------------------------------------------------------- rows


@dataclass(frozen=True)
class GroundTruth:
    """A task's current label and when/by whom it was given."""

    value: Any
    author: str
    #: The first annotation row of the current label (stable while the label is edited).
    annotation_id: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class PredictedLabel:
    """A task's prediction in the selected run (value None when the labeler failed on it)."""

    value: Any
    confidence: float | None
    error: str | None


@dataclass(frozen=True)
class ExportRow:
    """One task as the writers see it."""

    external_id: str
    data: dict[str, Any]
    meta: dict[str, Any]
    ground_truth: GroundTruth | None
    prediction: PredictedLabel | None


@dataclass(frozen=True)
class SelectedRun:
    """The run whose predictions are exported."""

    id: int
    model_version: str


@dataclass(frozen=True)
class Columns:
    """The tabular columns: input fields and meta keys, each as (column name, key)."""

    data: list[tuple[str, str]]
    meta: list[tuple[str, str]]
    predictions: bool

    def names(self) -> list[str]:
        """Return every column name in file order."""
        prediction_columns = list(PREDICTION_COLUMNS) if self.predictions else []
        return [
            ID_COLUMN,
            *(name for name, _ in self.data),
            *(name for name, _ in self.meta),
            LABEL_COLUMN,
            *prediction_columns,
        ]


@dataclass
class ExportContext:
    """What every writer needs besides the rows."""

    spec: LabelSpec | None
    run: SelectedRun | None
    columns: Columns
    csv_safe: bool = True
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record a problem with one row that did not stop the export."""
        self.warnings.append(message)


# ---------------------------------------------------------------------- cell values


def json_text(value: Any) -> str:
    """Return compact JSON text (non-ASCII kept as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def field_text(value: Any) -> str | None:
    """Return a field value for a flat cell: strings as they are, other values as JSON text."""
    if value is None:
        return None
    return value if isinstance(value, str) else json_text(value)


def _choice_text(value: Any) -> str | None:
    return value if isinstance(value, str) else field_text(value)


def _multi_choice_text(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return field_text(value)
    # "A|B" reads back with LabelSpec.parse_text; a name holding a separator needs the JSON list form.
    if not value or any(_MULTI_SEPARATORS.search(item) for item in value):
        return json_text(value)
    return "|".join(value)


def _number_cell(value: Any) -> int | float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


#: Task type -> the flat-cell form of a label value (see the module docstring).
FLAT_LABEL: dict[TaskType, Callable[[Any], str | int | float | None]] = {
    TaskType.single_choice: _choice_text,
    TaskType.multi_choice: _multi_choice_text,
    TaskType.rating: _number_cell,
    TaskType.number: _number_cell,
    TaskType.text: _choice_text,
    TaskType.pairwise: _choice_text,
    TaskType.spans: field_text,
}


def flat_label(spec: LabelSpec | None, value: Any) -> str | int | float | None:
    """Return a label value as a flat (csv/parquet) cell."""
    if value is None:
        return None
    if spec is None:
        return field_text(value)
    return FLAT_LABEL[spec.type](value)


def spreadsheet_safe(text: str) -> str:
    """Prefix a cell a spreadsheet would run as a formula with `'` (OWASP CSV injection)."""
    return "'" + text if text.startswith(_SPREADSHEET_TRIGGERS) else text


def _ls_task_id(external_id: str) -> int | None:
    return int(external_id) if _INT_ID.fullmatch(external_id) else None


def _ls_id(external_id: str) -> int | str:
    task_id = _ls_task_id(external_id)
    return external_id if task_id is None else task_id


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; they are stored in UTC.
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _renamed(values: dict[str, Any], names: list[tuple[str, str]]) -> dict[str, Any]:
    return {name: values[key] for name, key in names if key in values}


def tabular_record(row: ExportRow, context: ExportContext) -> dict[str, Any]:
    """Return a row with JSON values under the tabular column names (the JSON/JSONL form)."""
    columns = context.columns
    record: dict[str, Any] = {ID_COLUMN: row.external_id}
    record.update(_renamed(row.data, columns.data))
    record.update(_renamed(row.meta, columns.meta))
    record[LABEL_COLUMN] = row.ground_truth.value if row.ground_truth else None
    if columns.predictions:
        record.update(_prediction_cells(row, context, row.prediction.value if row.prediction else None))
    return record


def flat_record(row: ExportRow, context: ExportContext) -> list[Any]:
    """Return a row as flat cells in column order (the CSV/Parquet form; None for empty)."""
    columns = context.columns
    cells: list[Any] = [row.external_id]
    cells += [field_text(row.data.get(key)) for _, key in columns.data]
    cells += [field_text(row.meta.get(key)) for _, key in columns.meta]
    cells.append(flat_label(context.spec, row.ground_truth.value) if row.ground_truth else None)
    if columns.predictions:
        predicted = flat_label(context.spec, row.prediction.value) if row.prediction else None
        cells += list(_prediction_cells(row, context, predicted).values())
    return cells


def _prediction_cells(row: ExportRow, context: ExportContext, value: Any) -> dict[str, Any]:
    prediction, run = row.prediction, context.run
    return {
        "prediction": value,
        "confidence": prediction.confidence if prediction else None,
        "model_version": run.model_version if prediction and run else None,
        "run_id": run.id if prediction and run else None,
        "error": prediction.error if prediction else None,
    }


# ---------------------------------------------------------------------- writers


class ExportWriter(ABC):
    """Writes the rows of one export to a file; one subclass per format, registered in WRITERS.

    The exporter calls `write` for every row, then `finish` once all went well, and `close` always.
    """

    #: File extension of the format (without the dot).
    extension: ClassVar[str]
    #: Whether the format writes the tabular columns (collecting them costs one pass over the tasks).
    tabular: ClassVar[bool] = True
    #: Whether the format cannot be written without a label schema.
    needs_spec: ClassVar[bool] = False
    #: Whether the format carries predictions (JSON-MIN, like Label Studio's, holds annotations only).
    writes_predictions: ClassVar[bool] = True

    def __init__(self, path: Path, context: ExportContext) -> None:
        self.path = path
        self.context = context

    @abstractmethod
    def write(self, row: ExportRow) -> None:
        """Write one row."""

    def finish(self) -> None:  # noqa: B027 - most formats need no trailer
        """Write whatever ends the file."""

    @abstractmethod
    def close(self) -> None:
        """Release the file (called after `finish`, or after a failure)."""


class TextWriter(ExportWriter):
    """A writer of a UTF-8 text file."""

    def __init__(self, path: Path, context: ExportContext) -> None:
        super().__init__(path, context)
        self.file: IO[str] = path.open("w", encoding="utf-8", newline="")

    def close(self) -> None:
        """Close the file."""
        self.file.close()


class CsvWriter(TextWriter):
    """CSV with a header row; spreadsheet-safe unless the context says otherwise."""

    extension = "csv"

    def __init__(self, path: Path, context: ExportContext) -> None:
        super().__init__(path, context)
        self.csv = csv.writer(self.file)
        self.csv.writerow([self._cell(name) for name in context.columns.names()])

    def _cell(self, value: Any) -> str:
        if value is None:
            return ""
        text = value if isinstance(value, str) else json_text(value)
        return spreadsheet_safe(text) if self.context.csv_safe else text

    def write(self, row: ExportRow) -> None:
        """Write one CSV line."""
        self.csv.writerow([self._cell(cell) for cell in flat_record(row, self.context)])


class JsonlWriter(TextWriter):
    """One JSON object per line."""

    extension = "jsonl"

    def write(self, row: ExportRow) -> None:
        """Write one JSON line."""
        self.file.write(json_text(tabular_record(row, self.context)) + "\n")


class JsonArrayWriter(TextWriter):
    """A JSON array written one item at a time (one item per line)."""

    def __init__(self, path: Path, context: ExportContext) -> None:
        super().__init__(path, context)
        self.file.write("[")
        self._separator = "\n"

    @abstractmethod
    def item(self, row: ExportRow) -> dict[str, Any] | None:
        """Return the array item for a row (None to leave the row out)."""

    def write(self, row: ExportRow) -> None:
        """Append one item to the array."""
        item = self.item(row)
        if item is not None:
            self.file.write(self._separator + json.dumps(item, ensure_ascii=False))
            self._separator = ",\n"

    def finish(self) -> None:
        """Close the array."""
        self.file.write("\n]\n")


class JsonWriter(JsonArrayWriter):
    """A JSON array of row objects (the JSONL objects)."""

    extension = "json"

    def item(self, row: ExportRow) -> dict[str, Any]:
        """Return the row object."""
        return tabular_record(row, self.context)


class LabelStudioWriter(JsonArrayWriter):
    """Label Studio JSON tasks: data, ground truth as annotations, and predictions with score."""

    extension = "json"
    tabular = False
    needs_spec = True

    def item(self, row: ExportRow) -> dict[str, Any]:
        """Return the Label Studio task of a row."""
        spec = self.context.spec
        assert spec is not None
        task: dict[str, Any] = {}
        task_id = _ls_task_id(row.external_id)
        if task_id is not None:
            task["id"] = task_id
        task["data"] = {**row.data, LS_ID_KEY: row.external_id}
        if row.meta:
            task["meta"] = row.meta
        truth, prediction, run = row.ground_truth, row.prediction, self.context.run
        result = self._result(spec, row, truth.value, "label") if truth else None
        if truth and result is not None:
            annotation: dict[str, Any] = {"result": result, "ground_truth": True, "was_cancelled": False}
            if truth.author:
                # LS keeps integer user ids and gives other values to the importing user.
                annotation["completed_by"] = truth.author
            annotation["created_at"] = _iso(truth.created_at)
            annotation["updated_at"] = _iso(truth.updated_at)
            task["annotations"] = [annotation]
        predicted = (
            self._result(spec, row, prediction.value, "prediction")
            if prediction and prediction.value is not None
            else None
        )
        if prediction and run and predicted is not None:
            entry: dict[str, Any] = {"model_version": run.model_version}
            if prediction.confidence is not None:
                entry["score"] = prediction.confidence
            entry["result"] = predicted
            task["predictions"] = [entry]
        return task

    def _result(self, spec: LabelSpec, row: ExportRow, value: Any, what: str) -> list[dict[str, Any]] | None:
        try:
            return spec.to_ls_result(value)
        except LabelValueError as exc:
            self.context.warn(f"task '{row.external_id}': {what} left out: {exc.message}")
            return None


class LabelStudioMinWriter(JsonArrayWriter):
    """Label Studio JSON-MIN: one flat object per task with the label under the control tag's name."""

    extension = "json"
    tabular = False
    needs_spec = True
    writes_predictions = False

    def item(self, row: ExportRow) -> dict[str, Any]:
        """Return the JSON-MIN object of a row (the fields LS's JSON-MIN export writes)."""
        spec = self.context.spec
        assert spec is not None
        record: dict[str, Any] = {**row.data, "id": _ls_id(row.external_id)}
        truth = row.ground_truth
        if truth is not None:
            try:
                record[spec.from_name] = spec.to_ls_min_value(truth.value)
            except LabelValueError as exc:
                self.context.warn(f"task '{row.external_id}': label left out: {exc.message}")
                truth = None
        record["annotator"] = (truth.author or None) if truth else None
        record["annotation_id"] = truth.annotation_id if truth else None
        record["created_at"] = _iso(truth.created_at) if truth else None
        record["updated_at"] = _iso(truth.updated_at) if truth else None
        record["lead_time"] = None
        return record


class ParquetExportWriter(ExportWriter):
    """Parquet written in row groups of CHUNK_SIZE rows; ratings/numbers typed, other cells strings."""

    extension = "parquet"

    def __init__(self, path: Path, context: ExportContext) -> None:
        super().__init__(path, context)
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        label_type = _parquet_label_type(context.spec)
        types = {ID_COLUMN: pa.string(), LABEL_COLUMN: label_type, "prediction": label_type}
        types.update({"confidence": pa.float64(), "run_id": pa.int64()})
        self.schema = pa.schema([(name, types.get(name, pa.string())) for name in context.columns.names()])
        self._rows: list[list[Any]] = []
        self._writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, row: ExportRow) -> None:
        """Buffer one row; a full buffer becomes a row group."""
        self._rows.append(flat_record(row, self.context))
        if len(self._rows) >= CHUNK_SIZE:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        columns = [list(column) for column in zip(*self._rows, strict=True)]
        arrays = [
            self._pa.array(values, type=column.type)
            for values, column in zip(columns, self.schema, strict=True)
        ]
        self._writer.write_batch(self._pa.record_batch(arrays, schema=self.schema))
        self._rows = []

    def finish(self) -> None:
        """Write the last row group."""
        self._flush()

    def close(self) -> None:
        """Write the footer and close the file."""
        self._writer.close()


def _parquet_label_type(spec: LabelSpec | None) -> Any:
    import pyarrow as pa

    numeric = {TaskType.rating: pa.int64(), TaskType.number: pa.float64()}
    return numeric.get(spec.type, pa.string()) if spec else pa.string()


#: Export format -> the writer of that format.
WRITERS: dict[ExportFormat, type[ExportWriter]] = {
    ExportFormat.csv: CsvWriter,
    ExportFormat.jsonl: JsonlWriter,
    ExportFormat.json: JsonWriter,
    ExportFormat.parquet: ParquetExportWriter,
    ExportFormat.labelstudio: LabelStudioWriter,
    ExportFormat.labelstudio_min: LabelStudioMinWriter,
}


# ---------------------------------------------------------------------- reading


def select_run(
    session: Session, project_id: int, *, run_id: int | None, version: int | None
) -> SelectedRun | None:
    """Return the run whose predictions an export carries (see the module docstring), or None."""
    query = select(Run, PromptVersion.number).outerjoin(
        PromptVersion, PromptVersion.id == Run.prompt_version_id
    )
    query = query.where(Run.project_id == project_id)
    if run_id is not None:
        query = query.where(Run.id == run_id)
    else:
        query = query.where(exists().where(Prediction.run_id == Run.id))
    if version is not None:
        if not session.scalar(
            select(PromptVersion.id).where(
                PromptVersion.project_id == project_id, PromptVersion.number == version
            )
        ):
            raise NotFoundError(
                f"this project has no prompt version {version}",
                hint="list the versions with: labelpilot prompt list",
            )
        query = query.where(PromptVersion.number == version)
    found = session.execute(query.order_by(Run.id.desc()).limit(1)).first()
    if found is None:
        if run_id is not None:
            scope = f" of prompt version {version}" if version is not None else ""
            raise NotFoundError(
                f"this project has no run {run_id}{scope}", hint="list the runs with: labelpilot run list"
            )
        if version is not None:
            raise NotFoundError(
                f"prompt version {version} has no run with predictions yet",
                hint="run it first, or export without --version",
            )
        return None
    run, number = found
    model_version = f"v{number}" if number is not None else run.model or f"run-{run.id}"
    return SelectedRun(id=run.id, model_version=model_version)


def read_columns(session: Session, project_id: int, *, predictions: bool) -> Columns:
    """Collect the input fields and meta keys of every task (in order of first appearance)."""
    data_keys: dict[str, None] = {}
    meta_keys: dict[str, None] = {}
    query = select(Task.data, Task.meta).where(Task.project_id == project_id).order_by(Task.id)
    for data, meta in session.execute(query.execution_options(yield_per=CHUNK_SIZE)):
        data_keys.update(dict.fromkeys(data))
        meta_keys.update(dict.fromkeys(meta or {}))
    data = [(f"data.{key}" if key in RESERVED_COLUMNS else key, key) for key in data_keys]
    taken = RESERVED_COLUMNS | {name for name, _ in data}
    meta = [(f"meta.{key}" if key in taken else key, key) for key in meta_keys]
    return Columns(data=data, meta=meta, predictions=predictions)


def _ground_truth(session: Session, project_id: int, first: int, last: int) -> dict[int, GroundTruth]:
    """Return the current label of the tasks with ids first..last (history walked oldest first)."""
    query = (
        select(
            Annotation.task_id,
            Annotation.id,
            Annotation.deleted,
            Annotation.value,
            Annotation.author,
            Annotation.created_at,
        )
        .where(Annotation.project_id == project_id, Annotation.task_id.between(first, last))
        .order_by(Annotation.task_id, Annotation.id)
    )
    current: dict[int, GroundTruth] = {}
    for task_id, annotation_id, deleted, value, author, created_at in session.execute(query):
        if deleted:
            current.pop(task_id, None)
            continue
        earlier = current.get(task_id)
        current[task_id] = GroundTruth(
            value=value,
            author=author,
            annotation_id=earlier.annotation_id if earlier else annotation_id,
            created_at=earlier.created_at if earlier else created_at,
            updated_at=created_at,
        )
    return current


def _predictions(session: Session, run_id: int, first: int, last: int) -> dict[int, PredictedLabel]:
    query = select(
        Prediction.task_id,
        Prediction.value,
        Prediction.confidence,
        Prediction.error_kind,
        Prediction.error_message,
    ).where(Prediction.run_id == run_id, Prediction.task_id.between(first, last))
    found: dict[int, PredictedLabel] = {}
    for task_id, value, confidence, error_kind, error_message in session.execute(query):
        error = ": ".join(part for part in (error_kind, error_message) if part) or None
        found[task_id] = PredictedLabel(value=value, confidence=confidence, error=error)
    return found


def iter_rows(
    session: Session,
    project_id: int,
    *,
    run: SelectedRun | None,
    ground_truth_only: bool = False,
    min_confidence: float | None = None,
) -> Iterator[ExportRow]:
    """Yield the export rows of a project in task order, reading CHUNK_SIZE tasks at a time."""
    after = 0
    while True:
        tasks = session.execute(
            select(Task.id, Task.external_id, Task.data, Task.meta)
            .where(Task.project_id == project_id, Task.id > after)
            .order_by(Task.id)
            .limit(CHUNK_SIZE)
        ).all()
        if not tasks:
            return
        first, after = tasks[0].id, tasks[-1].id
        labels = _ground_truth(session, project_id, first, after)
        predictions = _predictions(session, run.id, first, after) if run else {}
        for task_id, external_id, data, meta in tasks:
            truth = labels.get(task_id)
            prediction = predictions.get(task_id)
            if ground_truth_only and truth is None:
                continue
            if min_confidence is not None and not _confident(prediction, min_confidence):
                continue
            yield ExportRow(
                external_id=external_id,
                data=data,
                meta=meta or {},
                ground_truth=truth,
                prediction=prediction,
            )


def _confident(prediction: PredictedLabel | None, threshold: float) -> bool:
    return prediction is not None and prediction.confidence is not None and prediction.confidence >= threshold


# ---------------------------------------------------------------------- export


def default_export_path(folder: Path, project_name: str, extension: str) -> Path:
    """Return `<folder>/<project>-<UTC timestamp>.<ext>`, numbered when that file exists already."""
    safe_name = re.sub(r"\s+", "_", project_name)
    stem = f"{safe_name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    path = folder / f"{stem}.{extension}"
    number = 2
    while path.exists():
        path = folder / f"{stem}-{number}.{extension}"
        number += 1
    return path


def _unwritable(path: Path, exc: OSError) -> LabelpilotError:
    reason = exc.strerror or str(exc)
    return LabelpilotError(
        f"cannot write the export to {path}: {reason}",
        hint="choose another output path (a folder you can write to, on a disk with free space)",
    )


def _check_options(
    *, include_predictions: bool, run_id: int | None, version: int | None, min_confidence: float | None
) -> None:
    if not include_predictions and (run_id is not None or version is not None or min_confidence is not None):
        raise LabelpilotError(
            "a run, a version or a minimum confidence selects predictions, "
            "but predictions were left out of the export",
            hint="drop --no-predictions, or drop --run/--version/--min-confidence",
        )
    if min_confidence is not None and not math.isfinite(min_confidence):
        raise LabelpilotError(f"the minimum confidence must be a number, not {min_confidence}")


def export_project(
    db: Database,
    project_name: str,
    *,
    fmt: ExportFormat,
    exports_dir: Path,
    output: Path | None = None,
    ground_truth_only: bool = False,
    run_id: int | None = None,
    version: int | None = None,
    min_confidence: float | None = None,
    include_predictions: bool = True,
    csv_safe: bool = True,
) -> ExportReport:
    """Export a project's tasks, ground truth and predictions to one file (see the module docstring).

    `output` is the file to write (an existing folder gets a default name inside it); without it the file
    goes to `exports_dir/<project>-<timestamp>.<ext>`. `ground_truth_only` keeps labeled tasks,
    `min_confidence` tasks whose prediction is at least that confident; `run_id` / `version` pick the run
    whose predictions are exported. Raises NotFoundError for an unknown project, run or version, and
    LabelpilotError when the output cannot be written (nothing is left behind then).
    """
    fmt = ExportFormat(fmt)
    writer_class = WRITERS[fmt]
    _check_options(
        include_predictions=include_predictions,
        run_id=run_id,
        version=version,
        min_confidence=min_confidence,
    )
    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project) if writer_class.needs_spec else load_spec(project)
        run = select_run(session, project.id, run_id=run_id, version=version) if include_predictions else None
        if min_confidence is not None and run is None:
            raise NotFoundError(
                "there are no predictions to filter by confidence: this project has no run with predictions",
                hint="label tasks first, or export without --min-confidence",
            )
        context = ExportContext(
            spec=spec,
            run=run,
            columns=(
                read_columns(session, project.id, predictions=run is not None)
                if writer_class.tabular
                else Columns(data=[], meta=[], predictions=run is not None)
            ),
            csv_safe=csv_safe,
        )
        target = _target(output, exports_dir, project.name, writer_class.extension)
        rows = iter_rows(
            session, project.id, run=run, ground_truth_only=ground_truth_only, min_confidence=min_confidence
        )
        counts = _write_atomically(target, writer_class, context, rows)
    warnings = context.warnings[:MAX_WARNINGS]
    if len(context.warnings) > MAX_WARNINGS:
        warnings.append(f"… and {len(context.warnings) - MAX_WARNINGS} more")
    return ExportReport(
        path=target,
        format=fmt,
        rows=counts.rows,
        with_ground_truth=counts.with_ground_truth,
        with_predictions=counts.with_predictions if writer_class.writes_predictions else 0,
        filters={
            "ground_truth_only": ground_truth_only,
            "min_confidence": min_confidence,
            "run_id": run.id if run else None,
            "version": version,
            "include_predictions": include_predictions,
        },
        bytes=target.stat().st_size,
        warnings=warnings,
    )


def _target(output: Path | None, exports_dir: Path, project_name: str, extension: str) -> Path:
    if output is not None:
        output = Path(output).expanduser()
    named = output is not None and not output.is_dir()
    if output is None:
        folder = exports_dir
    elif named:
        folder = output.parent
    else:
        folder = output
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(output or folder, exc) from exc
    return output if output is not None and named else default_export_path(folder, project_name, extension)


@dataclass
class _Counts:
    rows: int = 0
    with_ground_truth: int = 0
    with_predictions: int = 0


def _write_atomically(
    target: Path, writer_class: type[ExportWriter], context: ExportContext, rows: Iterator[ExportRow]
) -> _Counts:
    """Write every row to a temporary file beside target, then move it into place."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    counts = _Counts()
    try:
        writer = writer_class(temporary, context)
        try:
            for row in rows:
                writer.write(row)
                counts.rows += 1
                counts.with_ground_truth += row.ground_truth is not None
                counts.with_predictions += row.prediction is not None and row.prediction.value is not None
            writer.finish()
        finally:
            writer.close()
        temporary.replace(target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise _unwritable(target, exc) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return counts
