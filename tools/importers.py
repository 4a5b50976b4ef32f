"""Import datasets into a project: CSV, TSV, JSON, JSONL, Parquet, Excel and Label Studio exports.

`import_file` reads one file as a stream of records (one reader per format, registered in `READERS`),
maps each record to a task (`data` = the input fields, `meta` = the other columns), and writes tasks,
ground-truth labels and imported predictions in chunks inside ONE transaction: any problem raises
`InputFileError` (naming file, line and field) and nothing is written.

Rules worth knowing:

- Line numbers are 1-based and count the header line of CSV/TSV files; for Excel they are sheet row
  numbers; for Parquet they are row numbers (1-based); for JSON/JSONL the line an object starts on.
- Memory stays bounded for CSV/TSV/JSONL/Parquet/Excel (streamed; ~2,000 rows in flight). A JSON array
  (plain or Label Studio) is read into memory as text, then decoded one object at a time.
- Task ids (`external_id`): the `id_column` when given; else for Label Studio the task `id`; else a column
  literally named `id` when there is one; else the first 16 hex digits of the content hash, so identical
  rows collapse into one task. Re-importing adds nothing: a known id with the same content is counted as
  unchanged, a known id with different content is an error.
- Spreadsheet safety reversal: our exporters write text cells starting with `=`, `+`, `-`, `@`, tab or CR
  with a leading `'` so spreadsheets do not run them as formulas. Reading CSV/TSV/Excel removes that `'`
  again (`unescape_formulas=False` keeps cells as they are).
- A label column becomes ground truth (source "import", parsed with the project's schema; an empty cell is
  no label). When the project has no schema yet, the distinct labels become its classes (first-seen
  order, at most 1,000): a single-choice schema, multi-choice when `label_sep` is given. The schema is
  collected while reading and saved in the same transaction.
- Label Studio exports: the task `data` is the input; the latest non-cancelled annotation becomes ground
  truth (author: `completed_by`); predictions are kept in one `Run(kind="imported")` per model_version.
- A CSV/TSV/Excel file without a header line can be read with `column_names`.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import decimal
import difflib
import hashlib
import json
import math
import re
import time
import zipfile
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, cast
from xml.etree.ElementTree import ParseError

from pydantic import BaseModel
from sqlalchemy import Connection, Dialect, Table, func, insert, select
from sqlalchemy.orm import Session

from tools.errors import InputFileError, LabelSpecError, LabelValueError
from tools.groundtruth import AnnotationSource, source_text_for
from tools.labelspec import LabelSpec, TaskType
from tools.projects import get_project, load_spec
from tools.storage import Annotation, Database, Prediction, Run, Task, utcnow

try:
    import orjson
except ImportError:  # pragma: no cover - orjson ships with the locked dependencies
    orjson = None  # type: ignore[assignment]

#: Rows written per executemany (and per progress callback).
CHUNK_ROWS = 2000
#: Most distinct labels a label column may hold when the schema is created from it.
MAX_INFERRED_CLASSES = 1000
#: Longest task id (the width of tasks.external_id); a longer one is almost always the wrong column.
MAX_EXTERNAL_ID_CHARS = 255
#: Cells our exporters protect with a leading "'" (spreadsheet formula injection).
FORMULA_STARTS = frozenset("=+-@\t\r")

_TASKS = cast(Table, Task.__table__)
_ANNOTATIONS = cast(Table, Annotation.__table__)
_PREDICTIONS = cast(Table, Prediction.__table__)
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_STORAGE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCAN_BLOCK = 1 << 20


#: Key under which labelpilot's Label Studio exports keep the task id (used as the id on import).
LS_ID_KEY = "labelpilot_id"


class ImportFormat(str, Enum):
    """The file formats `import_file` reads."""

    csv = "csv"
    tsv = "tsv"
    json = "json"
    jsonl = "jsonl"
    parquet = "parquet"
    xlsx = "xlsx"
    labelstudio = "labelstudio"


#: File extension (lower case) -> format; `.json` is sniffed for a Label Studio export.
EXTENSIONS: dict[str, ImportFormat] = {
    ".csv": ImportFormat.csv,
    ".tsv": ImportFormat.tsv,
    ".tab": ImportFormat.tsv,
    ".json": ImportFormat.json,
    ".jsonl": ImportFormat.jsonl,
    ".ndjson": ImportFormat.jsonl,
    ".parquet": ImportFormat.parquet,
    ".pq": ImportFormat.parquet,
    ".xlsx": ImportFormat.xlsx,
}
#: Formats whose cells our exporters protect against formula injection (see the module docstring).
_SPREADSHEET_FORMATS = frozenset({ImportFormat.csv, ImportFormat.tsv, ImportFormat.xlsx})
_TEXT_FORMATS = frozenset(
    {ImportFormat.csv, ImportFormat.tsv, ImportFormat.json, ImportFormat.jsonl, ImportFormat.labelstudio}
)


class ImportReport(BaseModel):
    """What an import did: rows read, tasks added or already there, labels and predictions added."""

    path: str
    format: ImportFormat
    rows_read: int
    tasks_added: int
    tasks_unchanged: int
    duplicates_in_file: int
    labels_added: int
    predictions_added: int
    fields: list[str]
    id_column: str | None
    label_column: str | None
    schema_created: bool
    seconds: float


Record = dict[str, Any]
RecordStream = Generator[tuple[int, Record], None, None]


@dataclass
class ReadOptions:
    """What a reader needs besides the path; `on_columns` is told the header before any row."""

    path: Path
    encoding: str = "utf-8"
    sheet: str | None = None
    column_names: list[str] | None = None
    unescape_formulas: bool = True
    max_field_bytes: int = 1_000_000
    on_columns: Callable[[list[str], int | None], None] | None = None

    def columns_known(self, columns: list[str], line: int | None) -> None:
        """Pass a tabular file's header to whoever maps the rows."""
        if self.on_columns is not None:
            self.on_columns(columns, line)


Reader = Callable[[ReadOptions], RecordStream]


# ---------------------------------------------------------------------- small helpers


def _python_encoding(encoding: str) -> str:
    """Return the codec to open text with: utf-8 also skips a byte-order mark."""
    name = codecs.lookup(encoding).name
    return "utf-8-sig" if name == "utf-8" else encoding


def _is_ascii_compatible(encoding: str) -> bool:
    return not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def _unescape_cell(value: str) -> str:
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_STARTS:
        return value[1:]
    return value


def _clean_value(value: Any) -> Any:
    """Make a reader's value JSON-safe: NaN/inf become null, dates ISO text, decimals numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _listing(names: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "") if names else "none"


def _label_key(name: str) -> str:
    """The key the schema matches labels by (case and runs of spaces do not matter)."""
    return " ".join(name.split()).casefold()


#: Value types orjson encodes byte for byte like the stdlib's canonical form (see `_canonical_json`).
_ORJSON_SAFE = frozenset({str, int, bool, type(None)})


def _loads(text: str) -> Any:
    """Decode strict JSON (orjson when installed; the stdlib for its better messages and big integers)."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _dumps(value: Any) -> str:
    """Encode JSON for storage, keeping key order (orjson when installed)."""
    if orjson is not None:
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # integers beyond 64 bits, lone surrogates
            pass
    return _STORAGE_JSON.encode(value)


def _canonical_json(value: Any, *, flat_text: bool = False) -> bytes:
    """Return the canonical JSON of a value as UTF-8: sorted keys, no spaces, non-ASCII kept.

    It is `json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`. orjson writes
    the same bytes for a flat object of strings, integers, booleans and nulls (checked over every code
    point in the tests) and is several times faster, so it is used then; float notation differs (1e-07
    vs 1e-7) and orjson refuses lone surrogates and integers beyond 64 bits, so those use the stdlib.
    `flat_text` says the value is known to be a dict of strings (a CSV row) and skips the type check.
    """
    if orjson is not None and (
        flat_text or (type(value) is dict and all(type(v) in _ORJSON_SAFE for v in value.values()))
    ):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass
    return _CANONICAL_JSON.encode(value).encode()


# ---------------------------------------------------------------------- file checks


def _check_path(path: Path) -> Path:
    if not path.exists():
        hint = "check the spelling; a relative path is relative to the current folder"
        raise InputFileError("file not found", path=path, hint=hint)
    if path.is_dir():
        raise InputFileError(
            "is a folder, not a file", path=path, hint="give the path of a data file inside it"
        )
    if not path.is_file():
        raise InputFileError(
            "is not a regular file (a pipe, socket or device)",
            path=path,
            hint="save the data to a file first",
        )
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise InputFileError(
            f"cannot be opened: {exc.strerror or exc}", path=path, hint="check the file's permissions"
        ) from None
    return path


def _check_encoding(encoding: str, path: Path) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputFileError(
            f"'{encoding}' is not a known text encoding",
            path=path,
            hint="use e.g. --encoding utf-8, latin-1, cp1252 or utf-16",
        ) from None


def _scan_text_file(path: Path, encoding: str, fmt: ImportFormat) -> None:
    """Refuse an empty file, or a binary one (NUL bytes) handed over as text; reads in 1 MB blocks."""
    if path.stat().st_size == 0:
        raise InputFileError(
            "the file is empty", path=path, hint=f"export the data again; a {fmt.value} file needs rows"
        )
    if not _is_ascii_compatible(encoding):
        return
    line = 1
    with path.open("rb") as handle:
        while block := handle.read(_SCAN_BLOCK):
            position = block.find(b"\x00")
            if position >= 0:
                line += block.count(b"\n", 0, position)
                raise InputFileError(
                    f"holds binary data (a NUL byte), not {fmt.value} text",
                    path=path,
                    line=line,
                    hint="check that this is the right file; if it is UTF-16 text, pass --encoding utf-16; "
                    "if the extension is wrong, pass --format",
                )
            line += block.count(b"\n")


def _decoding_error(path: Path, encoding: str) -> InputFileError:
    """Build the error for a file that is not valid text in `encoding`, locating the first bad line."""
    codec = _python_encoding(encoding)
    decoder = codecs.getincrementaldecoder(codec)()
    hint = (
        "pass the file's encoding, e.g. --encoding latin-1 (or cp1252 for files saved by Excel on "
        "Windows), or save the file as UTF-8"
    )
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as exc:
                column = len(raw[: exc.start].decode(codec, errors="replace")) + 1
                bad = raw[exc.start : exc.end].hex()
                return InputFileError(
                    f"is not valid {encoding} text: byte 0x{bad} at column {column} cannot be decoded",
                    path=path,
                    line=number,
                    hint=hint,
                )
    return InputFileError(f"is not valid {encoding} text", path=path, hint=hint)


def detect_format(path: Path, *, encoding: str = "utf-8") -> ImportFormat:
    """Return the format of a file from its extension (a `.json` file is checked for a Label Studio export)."""
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(EXTENSIONS)
        raise InputFileError(
            f"the extension '{path.suffix or '(none)'}' is not one labelpilot imports ({known})",
            path=path,
            hint="rename the file, or say what it holds with --format "
            + "|".join(f.value for f in ImportFormat),
        )
    if fmt is ImportFormat.json and _looks_like_labelstudio(path, encoding):
        return ImportFormat.labelstudio
    return fmt


def _looks_like_labelstudio(path: Path, encoding: str) -> bool:
    """A Label Studio export is a JSON array whose objects carry a `data` object."""
    _check_encoding(encoding, path)
    _scan_text_file(path, encoding, ImportFormat.json)
    for _line, record in _read_json_array(ReadOptions(path=path, encoding=encoding)):
        return isinstance(record.get("data"), dict)
    return False


# ---------------------------------------------------------------------- readers


def _open_text(options: ReadOptions) -> Any:
    return options.path.open(encoding=_python_encoding(options.encoding), newline="", errors="strict")


def _header(options: ReadOptions, names: Sequence[object], line: int | None) -> list[str]:
    """Check header names: no duplicates; unnamed columns are kept as '' (they must stay empty)."""
    header = ["" if name is None else str(name).strip() for name in names]
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if not name:
            continue
        if name in seen:
            raise InputFileError(
                f"the header names the column '{name}' twice (columns {seen[name]} and {position})",
                path=options.path,
                line=line,
                field=name,
                hint="rename one of them so every column has its own name",
            )
        seen[name] = position
    if not seen:
        raise InputFileError(
            "the header line has no column names",
            path=options.path,
            line=line,
            hint="the first line must name the columns, e.g. id,text,label",
        )
    return header


def _row_record(options: ReadOptions, header: list[str], cells: Sequence[Any], line: int) -> Record:
    """Zip a row with the header; a value in a column without a name is an error."""
    record: Record = {}
    for position, (name, value) in enumerate(zip(header, cells, strict=True), start=1):
        if name:
            record[name] = value
        elif value not in (None, ""):
            raise InputFileError(
                f"column {position} has a value ({str(value)[:40]!r}) but no name in the header",
                path=options.path,
                line=line,
                hint="name every column in the header line (pandas: write with index=False)",
            )
    return record


def _read_delimited(options: ReadOptions, delimiter: str) -> RecordStream:
    wanted = max(options.max_field_bytes * 16, 131_072)
    if csv.field_size_limit() < wanted:
        # Large enough that an oversized field is read and reported by name, small enough to stay bounded.
        csv.field_size_limit(wanted)
    kind = "TSV" if delimiter == "\t" else "CSV"
    with _open_text(options) as handle:
        # strict: a malformed quote is an error naming its line, not a silently merged cell.
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        previous_end = 0
        try:
            if options.column_names is not None:
                header = _header(options, options.column_names, None)
            else:
                first = next(reader, None)
                while first == []:
                    first = next(reader, None)
                if first is None:
                    raise InputFileError(
                        "the file is empty (not even a header line)",
                        path=options.path,
                        hint="the first line must name the columns, e.g. id,text,label",
                    )
                header = _header(options, first, reader.line_num)
            header_line = None if options.column_names is not None else reader.line_num
            options.columns_known([name for name in header if name], header_line)
            width = len(header)
            plain = all(header)
            unescape = options.unescape_formulas
            previous_end = reader.line_num
            for row in reader:
                line = previous_end + 1
                previous_end = reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise InputFileError(
                        f"has {len(row)} cells but the header has {width} columns",
                        path=options.path,
                        line=line,
                        hint=f"quote cells that contain the delimiter or line breaks; {kind} rows must "
                        "all have as many cells as the header (or pass --format if this is not "
                        f"{kind})",
                    )
                if unescape:
                    row = [_unescape_cell(cell) if cell[:1] == "'" else cell for cell in row]
                yield (
                    line,
                    dict(zip(header, row, strict=True)) if plain else _row_record(options, header, row, line),
                )
        except UnicodeDecodeError:
            raise _decoding_error(options.path, options.encoding) from None
        except csv.Error as exc:
            problem = str(exc)
            if "unexpected end of data" in problem:
                problem = "a quoted cell starting on this line is never closed"
            raise InputFileError(
                f"is not valid {kind}: {problem}",
                path=options.path,
                line=previous_end + 1,
                hint='a cell that starts with a quote must end with one, and quotes inside it are doubled ("")',
            ) from None


def _read_csv(options: ReadOptions) -> RecordStream:
    return _read_delimited(options, ",")


def _read_tsv(options: ReadOptions) -> RecordStream:
    return _read_delimited(options, "\t")


def _read_jsonl(options: ReadOptions) -> RecordStream:
    seen_any = False
    with _open_text(options) as handle:
        try:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    record = _loads(text)
                except json.JSONDecodeError as exc:
                    raise InputFileError(
                        f"invalid JSON at column {exc.colno}: {exc.msg}",
                        path=options.path,
                        line=number,
                        hint="each line of a JSONL file must be one complete JSON object",
                    ) from None
                if not isinstance(record, dict):
                    raise InputFileError(
                        f"holds a JSON {_kind(record)}, not an object",
                        path=options.path,
                        line=number,
                        hint='each line must be an object such as {"id": 1, "text": "..."}',
                    )
                seen_any = True
                yield number, {key: _clean_value(value) for key, value in record.items()}
        except UnicodeDecodeError:
            raise _decoding_error(options.path, options.encoding) from None
    if not seen_any:
        raise InputFileError(
            "the file has no JSON objects (only blank lines)",
            path=options.path,
            hint="a JSONL file holds one JSON object per line",
        )


def _read_json_array(options: ReadOptions) -> RecordStream:
    """Decode a JSON array of objects one object at a time (the text itself is held in memory)."""
    raw = options.path.read_bytes()
    try:
        text = raw.decode(_python_encoding(options.encoding))
    except UnicodeDecodeError:
        raise _decoding_error(options.path, options.encoding) from None
    del raw
    path = options.path
    decoder = json.JSONDecoder()

    def skip(position: int) -> int:
        match = _JSON_WHITESPACE.match(text, position)
        return match.end() if match else position

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    def invalid(exc: json.JSONDecodeError) -> InputFileError:
        return InputFileError(
            f"invalid JSON at column {exc.colno}: {exc.msg}",
            path=path,
            line=exc.lineno,
            hint="check the JSON (a missing comma or quote is the usual cause); a file with one object "
            "per line is JSONL: name it .jsonl",
        )

    position = skip(0)
    if position >= len(text):
        raise InputFileError("the file is empty", path=path, hint="a JSON file must hold an array of objects")
    if text[position] != "[":
        try:
            value, _end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise invalid(exc) from None
        raise InputFileError(
            f"holds a JSON {_kind(value)}, not an array of objects",
            path=path,
            line=line_of(position),
            hint='write the records as [{"text": "..."}, ...]; for one object per line use a .jsonl file',
        )
    position = skip(position + 1)
    line, counted_to, index = 1, 0, 0
    if position < len(text) and text[position] == "]":
        position += 1
    else:
        while True:
            line += text.count("\n", counted_to, position)
            counted_to = position
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as exc:
                raise invalid(exc) from None
            index += 1
            if not isinstance(value, dict):
                raise InputFileError(
                    f"item {index} of the array is a JSON {_kind(value)}, not an object",
                    path=path,
                    line=line,
                    hint='every item must be an object such as {"id": 1, "text": "..."}',
                )
            yield line, {key: _clean_value(item) for key, item in value.items()}
            position = skip(end)
            if position >= len(text):
                raise InputFileError(
                    "the JSON array is not closed (the file ends too early)",
                    path=path,
                    line=line_of(position),
                    hint="the file may be cut off; export it again",
                )
            if text[position] == "]":
                position += 1
                break
            if text[position] != ",":
                line_number = line_of(position)
                column = position - text.rfind("\n", 0, position)
                raise InputFileError(
                    f"invalid JSON at column {column}: expected ',' or ']' after item {index}",
                    path=path,
                    line=line_number,
                    hint="check for a missing comma between two objects",
                )
            position = skip(position + 1)
    position = skip(position)
    if position < len(text):
        raise InputFileError(
            "invalid JSON: extra data after the array",
            path=path,
            line=line_of(position),
            hint="a JSON file holds one array; for one object per line use a .jsonl file",
        )


def _read_parquet(options: ReadOptions) -> RecordStream:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = options.path
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(
            f"is not a readable Parquet file ({str(exc).splitlines()[0][:200]})",
            path=path,
            hint="check that this is the right file; if the extension is wrong, pass --format",
        ) from None
    with parquet:
        schema = parquet.schema_arrow
        header = _header(options, schema.names, None)
        options.columns_known(header, None)
        # Types without a JSON form become text in Arrow (fast); decimals and dates are cleaned per value.
        to_text = [
            name
            for name, kind in zip(schema.names, schema.types, strict=True)
            if pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_fixed_size_binary(kind)
        ]
        row = 0
        try:
            for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
                for name in to_text:
                    index = batch.schema.get_field_index(name)
                    batch = batch.set_column(index, name, pc.cast(batch.column(index), pa.string()))
                for record in batch.to_pylist():
                    row += 1
                    yield row, {key: _clean_value(value) for key, value in record.items()}
        except (pa.ArrowException, OSError) as exc:
            raise InputFileError(
                f"cannot be read as Parquet after row {row}: {str(exc).splitlines()[0][:200]}",
                path=path,
                line=row + 1,
                hint="the file may be damaged or cut off; export it again",
            ) from None


def _read_xlsx(options: ReadOptions) -> RecordStream:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    path = options.path
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError, ParseError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputFileError(
            f"is not a readable Excel .xlsx workbook ({detail})",
            path=path,
            hint="open it in Excel or LibreOffice and save it as .xlsx (old .xls files are not supported), "
            "or export it as CSV",
        ) from None
    try:
        if options.sheet is None:
            sheet = workbook.worksheets[0]
        elif options.sheet in workbook.sheetnames:
            sheet = workbook[options.sheet]
        else:
            raise InputFileError(
                f"has no sheet named '{options.sheet}' (sheets: {', '.join(workbook.sheetnames)})"
                + _suggest(options.sheet, workbook.sheetnames),
                path=path,
                hint="pass one of the sheet names with --sheet",
            )
        unescape = options.unescape_formulas
        header: list[str] | None = None
        width = 0
        if options.column_names is not None:
            header = _header(options, options.column_names, None)
            width = len(header)
            options.columns_known([name for name in header if name], None)
        rows = sheet.iter_rows(values_only=True)
        try:
            for number, cells in enumerate(rows, start=1):
                values = [_clean_value(value) for value in cells]
                if all(value is None or value == "" for value in values):
                    continue
                if unescape:
                    values = [_unescape_cell(v) if isinstance(v, str) else v for v in values]
                if header is None:
                    while values and values[-1] in (None, ""):
                        values.pop()
                    header = _header(options, values, number)
                    width = len(header)
                    options.columns_known([name for name in header if name], number)
                    continue
                if len(values) < width:
                    values += [None] * (width - len(values))
                elif len(values) > width:
                    extra = [v for v in values[width:] if v not in (None, "")]
                    if extra:
                        raise InputFileError(
                            f"has a value ({str(extra[0])[:40]!r}) right of the last named column",
                            path=path,
                            line=number,
                            hint="name every column in the header row, or delete the stray cells",
                        )
                    values = values[:width]
                yield number, _row_record(options, header, values, number)
        except (zipfile.BadZipFile, KeyError, ParseError, ValueError, OSError) as exc:
            raise InputFileError(
                f"the sheet cannot be read: {str(exc)[:200] or type(exc).__name__}",
                path=path,
                hint="open it in Excel or LibreOffice and save it again as .xlsx",
            ) from None
        if header is None:
            raise InputFileError(
                f"the sheet '{sheet.title}' is empty",
                path=path,
                hint="put a header row and the data on the first sheet, or pass --sheet NAME",
            )
    finally:
        workbook.close()


def _read_labelstudio(options: ReadOptions) -> RecordStream:
    for line, task in _read_json_array(options):
        if not isinstance(task.get("data"), dict):
            raise InputFileError(
                "this Label Studio task has no 'data' object",
                path=options.path,
                line=line,
                field="data",
                hint="use the JSON export of Label Studio (not JSON-MIN or CSV); each task needs "
                '{"data": {...}}',
            )
        yield line, task


#: Format -> reader; every reader yields (line number, record) and raises InputFileError.
READERS: dict[ImportFormat, Reader] = {
    ImportFormat.csv: _read_csv,
    ImportFormat.tsv: _read_tsv,
    ImportFormat.json: _read_json_array,
    ImportFormat.jsonl: _read_jsonl,
    ImportFormat.parquet: _read_parquet,
    ImportFormat.xlsx: _read_xlsx,
    ImportFormat.labelstudio: _read_labelstudio,
}


# ---------------------------------------------------------------------- labels


class _LabelParser:
    """Turns label cells into canonical values with the project's schema (cached per distinct text)."""

    def __init__(self, path: Path, spec: LabelSpec, column: str, separator: str | None) -> None:
        self.path = path
        self.spec = spec
        self.column = column
        self.split = separator if spec.type is TaskType.multi_choice else None
        self.spans = spec.type is TaskType.spans
        self._cache: dict[str, Any] = {}
        if separator is not None and spec.type is not TaskType.multi_choice:
            raise InputFileError(
                f"--label-sep splits multi-label cells, but the project's schema is {spec.type.value}",
                path=path,
                field=column,
                hint="leave out --label-sep, or set a multi_choice schema first",
            )

    def parse(self, raw: Any, line: int, data: Mapping[str, Any]) -> Any:
        """Return the canonical label of a cell, or None for an empty cell."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        cacheable = isinstance(raw, str) and not self.spans
        if cacheable and raw in self._cache:
            return self._cache[raw]
        try:
            value = self._parse(raw, data)
        except LabelValueError as exc:
            raise InputFileError(
                f"the label {str(raw)[:80]!r} does not fit the project's schema: {exc.message}",
                path=self.path,
                line=line,
                field=self.column,
                hint=exc.hint or "fix the label, or change the schema with: labelpilot schema set",
            ) from None
        if cacheable:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[raw] = value
        return value

    def _parse(self, raw: Any, data: Mapping[str, Any]) -> Any:
        source = self._source_text(data)
        if isinstance(raw, list):
            return self.spec.validate_value(raw, source_text=source)
        text = raw if isinstance(raw, str) else str(raw)
        if self.split is not None:
            parts = [part.strip() for part in text.split(self.split) if part.strip()]
            return self.spec.validate_value(parts, source_text=source)
        return self.spec.parse_text(text, source_text=source)

    def _source_text(self, data: Mapping[str, Any]) -> str | None:
        if not self.spans:
            return None
        return source_text_for(self.spec, Task(data=dict(data)))


class _LabelCollector:
    """Label cells of a project without a schema: the classes are collected while reading (one pass).

    Every non-empty label is a class, first-seen spelling and order; labels that differ only by case or
    spaces are the same class (as `LabelSpec.match_class` would match them). A cell's canonical value
    is therefore known at once: the class name (single choice) or the names in class order (multi
    choice, when `separator` is given). `finish` builds the schema and re-parses the recorded cells
    with it, so this module and `LabelSpec` cannot silently disagree.
    """

    #: Distinct cells remembered for speed and for the final check.
    MAX_REMEMBERED = 10_000

    def __init__(self, path: Path, column: str, separator: str | None) -> None:
        self.path = path
        self.column = column
        self.separator = separator
        self.position: dict[str, int] = {}
        self._by_key: dict[str, str] = {}
        self._remembered: dict[str, Any] = {}

    def parse(self, raw: Any, line: int, data: Mapping[str, Any]) -> Any:
        """Return the canonical label of a cell (registering new classes), or None for an empty cell."""
        if type(raw) is str:
            known = self._remembered.get(raw)
            if known is not None:
                return known
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        names = [self._register(name, line) for name in self._names(raw)]
        value: Any
        if self.separator is not None:
            # An empty list is a label too: none of the classes applies.
            value = sorted(set(names), key=self.position.__getitem__)
        elif len(names) == 1:
            value = names[0]
        elif not names:
            return None
        else:
            raise InputFileError(
                f"the cell holds several labels ({', '.join(names[:5])}) but the schema being created is "
                "single-choice",
                path=self.path,
                line=line,
                field=self.column,
                hint="pass --label-sep (e.g. ',') to create a multi-choice schema",
            )
        if type(raw) is str and len(self._remembered) < self.MAX_REMEMBERED:
            self._remembered[raw] = value
        return value

    def _names(self, raw: Any) -> list[str]:
        items = raw if isinstance(raw, list) else [raw]
        names: list[str] = []
        for item in items:
            text = item if isinstance(item, str) else str(item)
            if self.separator is not None and not isinstance(raw, list):
                names.extend(part.strip() for part in text.split(self.separator))
            elif isinstance(raw, list):
                names.append(text.strip())
            else:
                names.append(_unquote(text.strip()))
        return [name for name in names if name]

    def _register(self, name: str, line: int) -> str:
        key = _label_key(name)
        known = self._by_key.get(key)
        if known is not None:
            return known
        if len(self._by_key) >= MAX_INFERRED_CLASSES:
            raise InputFileError(
                f"the label column has more than {MAX_INFERRED_CLASSES} distinct values; that looks like "
                "free text or ids, not classes",
                path=self.path,
                line=line,
                field=self.column,
                hint="check --label-column, or set the schema first: labelpilot schema set --classes 'A, B, C'",
            )
        self._by_key[key] = name
        self.position[name] = len(self.position)
        return name

    def finish(self) -> LabelSpec | None:
        """Build the schema from the classes seen (None when no cell had a label)."""
        names = list(self.position)
        if not names:
            return None
        if len(names) == 1:
            raise InputFileError(
                f"the label column holds a single label ('{names[0]}'); a schema needs at least two classes",
                path=self.path,
                field=self.column,
                hint=f"set the schema first: labelpilot schema set --classes '{names[0]}, <other labels>'",
            )
        task_type = TaskType.single_choice if self.separator is None else TaskType.multi_choice
        try:
            spec = LabelSpec.from_classes(names, type=task_type)
        except LabelSpecError as exc:
            raise InputFileError(
                f"cannot build a schema from the labels in this column: {exc.message}",
                path=self.path,
                field=self.column,
                hint=exc.hint or "set the schema first: labelpilot schema set --classes 'A, B, C'",
            ) from None
        parser = _LabelParser(self.path, spec, self.column, self.separator)
        for raw, value in self._remembered.items():
            if parser.parse(raw, 0, {}) != value:
                raise RuntimeError(
                    f"labelpilot bug: the label {raw!r} was read as {value!r} while building the schema "
                    "but the schema reads it differently"
                )
        return spec


def _unquote(text: str) -> str:
    """Strip one pair of matching quotes, as `LabelSpec.parse_text` does for choice labels."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].strip()
    return text


# ---------------------------------------------------------------------- records -> task drafts


@dataclass(slots=True)
class _Draft:
    """One task as read from the file, before it is checked against the database."""

    line: int
    external_id: str
    content_hash: str
    data: Record
    meta: Record
    label: Any = None
    label_author: str = ""
    #: (model_version, value, score) per imported prediction.
    predictions: list[tuple[str, Any, float | None]] = field(default_factory=list)


def _missing_column(
    path: Path, name: str, available: Sequence[str], line: int | None, *, role: str
) -> InputFileError:
    return InputFileError(
        f"there is no {role} column '{name}' (columns: {_listing(available)}){_suggest(name, available)}",
        path=path,
        line=line,
        field=name,
        hint={
            "input": "choose input fields with --fields that name existing columns",
            "id": "give every record its id, or pass --id-column NAME (a column named 'id' is used "
            "automatically; without one, ids are derived from the content)",
            "label": "pass an existing column with --label-column",
        }[role],
    )


class _RowMapper:
    """Maps records of a table-like file (CSV, TSV, JSON, JSONL, Parquet, Excel) to task drafts."""

    def __init__(
        self,
        path: Path,
        *,
        fields: list[str] | None,
        id_column: str | None,
        label_column: str | None,
        max_field_bytes: int,
        text_cells: bool = False,
    ) -> None:
        self.path = path
        self.fields = fields
        self.id_column = id_column
        self.label_column = label_column
        self.max_field_bytes = max_field_bytes
        #: Every value is a str (CSV/TSV), which lets the hash skip a type check per row.
        self.text_cells = text_cells
        self.labels: _LabelParser | _LabelCollector | None = None
        self.id_key: str | None = id_column
        self.seen_fields: dict[str, None] = dict.fromkeys(fields or [])
        self._resolved = False
        self._fixed_data: list[str] | None = None
        self._fixed_meta: list[str] | None = None
        if fields is not None:
            for role, name in (("id", id_column), ("label", label_column)):
                if name is not None and name in fields:
                    raise InputFileError(
                        f"the {role} column '{name}' cannot also be an input field",
                        path=path,
                        field=name,
                        hint=f"leave '{name}' out of --fields",
                    )
            if not fields:
                raise InputFileError(
                    "no input fields were chosen", path=path, hint="pass --fields with column names"
                )

    def on_columns(self, columns: list[str], line: int | None) -> None:
        """Check the chosen columns against a fixed header and precompute the data/meta split."""
        self._resolve(columns, line)
        self._fixed_data = self._data_keys(columns)
        self._fixed_meta = [c for c in columns if c not in self._excluded() and c not in self._fixed_data]
        self.seen_fields.update(dict.fromkeys(self._fixed_data))

    def _resolve(self, columns: Sequence[str], line: int | None) -> None:
        self._resolved = True
        if self.id_key is None and self.id_column is None and "id" in columns:
            self.id_key = "id"
        for role, name in (("id", self.id_column), ("label", self.label_column)):
            if name is not None and name not in columns:
                raise _missing_column(self.path, name, columns, line, role=role)
        for name in self.fields or []:
            if name not in columns:
                raise _missing_column(self.path, name, columns, line, role="input")
        if not self._data_keys(columns):
            raise InputFileError(
                "there is no column left to use as input (every column is the id or the label)",
                path=self.path,
                line=line,
                hint="add a text column, or check --id-column and --label-column",
            )

    def _excluded(self) -> tuple[str | None, str | None]:
        return self.id_key, self.label_column

    def _data_keys(self, columns: Sequence[str]) -> list[str]:
        if self.fields is not None:
            return self.fields
        excluded = self._excluded()
        return [c for c in columns if c not in excluded]

    def map(self, line: int, record: Record) -> _Draft:
        """Return the draft task of one record."""
        if not self._resolved:
            self._resolve(list(record), line)
        data_keys = self._fixed_data
        if data_keys is None:
            data_keys = self._data_keys(list(record))
            for name in (*data_keys, self.id_key, self.label_column):
                if name is not None and name not in record:
                    role = "input" if name in data_keys else "id" if name == self.id_key else "label"
                    raise _missing_column(self.path, name, list(record), line, role=role)
            if self.fields is None:
                self.seen_fields.update(dict.fromkeys(data_keys))
            meta_keys = [k for k in record if k not in self._excluded() and k not in data_keys]
        else:
            meta_keys = self._fixed_meta or []
        data = {key: record[key] for key in data_keys}
        meta = {key: record[key] for key in meta_keys}
        content_hash = _content_hash(self.path, data, line, self.max_field_bytes, flat_text=self.text_cells)
        if meta:
            _check_sizes(self.path, meta, line, self.max_field_bytes)
        external_id = (
            _external_id(self.path, record[self.id_key], line, self.id_key)
            if self.id_key is not None
            else content_hash[:16]
        )
        draft = _Draft(line, external_id, content_hash, data, meta)
        if self.labels is not None and self.label_column is not None:
            raw = record[self.label_column]
            if type(raw) is str and len(raw) > self.max_field_bytes // 4:
                _check_sizes(self.path, {self.label_column: raw}, line, self.max_field_bytes)
            draft.label = self.labels.parse(raw, line, data)
        return draft


#: Task types whose empty list is a label (no spans in the text; none of the classes applies).
_EMPTY_IS_A_VALUE = frozenset({TaskType.spans, TaskType.multi_choice})


class _LabelStudioMapper:
    """Maps Label Studio export tasks to drafts: data, task id, latest annotation, predictions."""

    def __init__(
        self,
        path: Path,
        *,
        fields: list[str] | None,
        id_column: str | None,
        max_field_bytes: int,
        spec: LabelSpec | None,
    ) -> None:
        self.path = path
        self.fields = fields
        self.id_column = id_column
        self.max_field_bytes = max_field_bytes
        self.spec = spec
        self.id_key: str | None = id_column
        self.seen_fields: dict[str, None] = dict.fromkeys(fields or [])

    def map(self, line: int, task: Record) -> _Draft:
        """Return the draft task of one Label Studio task."""
        source: Record = task["data"]
        keys = list(source)
        # Our own Label Studio exports carry the task's labelpilot id in data.labelpilot_id.
        id_column = self.id_column or (LS_ID_KEY if LS_ID_KEY in source else None)
        for name in [*(self.fields or []), *([id_column] if id_column else [])]:
            if name not in source:
                role = "id" if name == id_column else "input"
                raise _missing_column(self.path, name, keys, line, role=role)
        data_keys = self.fields if self.fields is not None else [k for k in keys if k != id_column]
        self.seen_fields.update(dict.fromkeys(data_keys))
        data = {key: _clean_value(source[key]) for key in data_keys}
        meta = {key: _clean_value(source[key]) for key in keys if key not in data and key != id_column}
        content_hash = _content_hash(self.path, data, line, self.max_field_bytes)
        if meta:
            _check_sizes(self.path, meta, line, self.max_field_bytes)
        if id_column is not None:
            self.id_key = self.id_key or id_column
            external_id = _external_id(self.path, source[id_column], line, id_column)
        elif task.get("id") is not None:
            self.id_key = self.id_key or "id"
            external_id = _external_id(self.path, task["id"], line, "id")
        else:
            external_id = content_hash[:16]
        draft = _Draft(line, external_id, content_hash, data, meta)
        annotation = self._latest_annotation(task, line)
        if annotation is not None:
            draft.label = self._value(annotation.get("result"), data, line, "annotations")
            draft.label_author = _author(annotation.get("completed_by"))
        predictions = task.get("predictions") or []
        if not isinstance(predictions, list):
            raise self._error("'predictions' must be a list", line, "predictions")
        by_model: dict[str, tuple[str, Any, float | None]] = {}
        for prediction in predictions:
            if not isinstance(prediction, dict):
                raise self._error("each prediction must be an object", line, "predictions")
            value = self._value(prediction.get("result"), data, line, "predictions")
            if value is None:
                continue
            model = str(prediction.get("model_version") or "unknown")
            score = prediction.get("score")
            confidence = (
                float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
            )
            by_model[model] = (model, value, confidence)
        draft.predictions = list(by_model.values())
        return draft

    def _latest_annotation(self, task: Record, line: int) -> Record | None:
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise self._error("'annotations' must be a list", line, "annotations")
        kept = [
            (str(a.get("updated_at") or a.get("created_at") or ""), position, a)
            for position, a in enumerate(annotations)
            if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        if not kept:
            return None
        return max(kept, key=lambda item: (item[0], item[1]))[2]

    def _value(self, result: Any, data: Record, line: int, where: str) -> Any:
        if result is None:
            return None
        if result == []:
            # A submitted empty result says "no entities" / "none applies" where that is a value.
            empty_is_a_value = self.spec is not None and self.spec.type in _EMPTY_IS_A_VALUE
            return [] if empty_is_a_value else None
        if self.spec is None:
            raise InputFileError(
                f"this task has {where}, but the project has no label schema to read them with",
                path=self.path,
                line=line,
                field=where,
                hint="set the schema from the Label Studio labeling config first: "
                "labelpilot schema set --config label_config.xml",
            )
        source = source_text_for(self.spec, Task(data=data))
        try:
            value = self.spec.from_ls_result(result, source_text=source)
        except LabelValueError as exc:
            raise InputFileError(
                f"a result does not fit the project's schema: {exc.message}",
                path=self.path,
                line=line,
                field=where,
                hint=exc.hint or "the Label Studio config of this export differs from the project's schema",
            ) from None
        if value is None:
            tags = sorted(
                {f"{item.get('from_name')} ({item.get('type')})" for item in result if isinstance(item, dict)}
            )
            raise InputFileError(
                f"the results are for {', '.join(tags) or 'nothing readable'}, but the project's schema "
                f"labels with '{self.spec.from_name}' ({self.spec.type.value})",
                path=self.path,
                line=line,
                field=where,
                hint="set the schema from this export's Label Studio config: "
                "labelpilot schema set --config label_config.xml",
            )
        return value

    def _error(self, message: str, line: int, where: str) -> InputFileError:
        return InputFileError(
            message, path=self.path, line=line, field=where, hint="use Label Studio's JSON export format"
        )


def _author(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "")
    return "" if completed_by is None else str(completed_by)


def _check_sizes(path: Path, record: Mapping[str, Any], line: int, limit: int) -> None:
    """Refuse a record with a value over `limit` bytes (as UTF-8 text or as JSON)."""
    quarter = limit // 4
    for key, value in record.items():
        if type(value) is str:
            # A str of n characters is at most 4n UTF-8 bytes: encode only the long ones.
            if len(value) > quarter and len(value.encode()) > limit:
                raise _too_large(path, key, len(value.encode()), line, limit)
        elif isinstance(value, dict | list) and len(_canonical_json(value)) > limit:
            raise _too_large(path, key, len(_canonical_json(value)), line, limit)


def _too_large(path: Path, key: str, size: int, line: int, limit: int) -> InputFileError:
    return InputFileError(
        f"the value is {size:,} bytes, over the limit of {limit:,} bytes per field",
        path=path,
        line=line,
        field=key,
        hint="check that the file's quoting is right (an unclosed quote swallows the rest of the file); "
        "raise the limit with --max-field-bytes if such long texts are intended",
    )


def _content_hash(path: Path, data: Record, line: int, limit: int, *, flat_text: bool = False) -> str:
    """Return sha256 of the canonical JSON of the input fields (see `_canonical_json`)."""
    try:
        encoded = _canonical_json(data, flat_text=flat_text)
    except UnicodeEncodeError as exc:
        raise InputFileError(
            f"holds text that is not valid Unicode ({exc.reason}: {exc.object[exc.start : exc.end]!r})",
            path=path,
            line=line,
            hint="the file contains a broken character escape (e.g. a lone \\ud800); fix or remove it",
        ) from None
    except (TypeError, ValueError) as exc:
        raise InputFileError(
            f"holds a value that cannot be stored as JSON ({exc})",
            path=path,
            line=line,
            hint="convert such columns to text before importing",
        ) from None
    if len(encoded) > limit:
        for key, value in data.items():
            size = len(_canonical_json(value))
            if size > limit:
                raise _too_large(path, key, size, line, limit)
    return hashlib.sha256(encoded).hexdigest()


def _external_id(path: Path, value: Any, line: int, column: str) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        raise InputFileError(
            "the id is empty",
            path=path,
            line=line,
            field=column,
            hint="give every row an id, or leave out --id-column to derive ids from the content",
        )
    if len(text) > MAX_EXTERNAL_ID_CHARS:
        raise InputFileError(
            f"the id is {len(text)} characters long; ids may have at most {MAX_EXTERNAL_ID_CHARS}",
            path=path,
            line=line,
            field=column,
            hint="check --id-column (it should name a short identifier, not a text)",
        )
    return text


# ---------------------------------------------------------------------- writing


@dataclass
class _Counts:
    tasks_added: int = 0
    tasks_unchanged: int = 0
    duplicates_in_file: int = 0
    labels_added: int = 0
    predictions_added: int = 0


def _bind_processor(column: Any, dialect: Dialect) -> Callable[[Any], Any]:
    """Return what SQLAlchemy would do to a value of this column before handing it to the driver."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor if processor is not None else (lambda value: value)


class _Bulk:
    """Reads and writes one chunk at a time through SQLAlchemy Core (works on every database)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def known_tasks(self, project_id: int, external_ids: list[str]) -> list[tuple[str, int, str]]:
        """Return (external_id, id, content_hash) for those of the ids the project already has."""
        query = select(_TASKS.c.external_id, _TASKS.c.id, _TASKS.c.content_hash).where(
            _TASKS.c.project_id == project_id, _TASKS.c.external_id.in_(external_ids)
        )
        return [(row[0], row[1], row[2]) for row in self.connection.execute(query)]

    def insert_tasks(self, project_id: int, drafts: list[_Draft], now: dt.datetime) -> dict[str, int]:
        """Insert new tasks; return {external_id: task id}."""
        rows = [
            {
                "project_id": project_id,
                "external_id": d.external_id,
                "content_hash": d.content_hash,
                "data": d.data,
                "meta": d.meta,
                "created_at": now,
            }
            for d in drafts
        ]
        result = self.connection.execute(insert(_TASKS).returning(_TASKS.c.external_id, _TASKS.c.id), rows)
        return {external_id: task_id for external_id, task_id in result}

    def insert_annotations(
        self, project_id: int, labels: list[tuple[int, Any, str]], now: dt.datetime
    ) -> None:
        """Insert ground-truth labels given as (task id, value, author); the source is "import"."""
        rows = [
            {
                "project_id": project_id,
                "task_id": task_id,
                "value": value,
                "deleted": False,
                "author": author,
                "source": AnnotationSource.import_.value,
                "created_at": now,
            }
            for task_id, value, author in labels
        ]
        self.connection.execute(insert(_ANNOTATIONS), rows)

    def current_labels(self, task_ids: list[int]) -> dict[int, Any]:
        """Return {task id: value} of the newest annotation of each task, unless it is a deletion."""
        latest = (
            select(func.max(_ANNOTATIONS.c.id))
            .where(_ANNOTATIONS.c.task_id.in_(task_ids))
            .group_by(_ANNOTATIONS.c.task_id)
        )
        query = select(_ANNOTATIONS.c.task_id, _ANNOTATIONS.c.value, _ANNOTATIONS.c.deleted).where(
            _ANNOTATIONS.c.id.in_(latest)
        )
        return {task_id: value for task_id, value, deleted in self.connection.execute(query) if not deleted}

    def close(self) -> None:
        """Undo any connection setting made for the import."""


class _SqliteBulk(_Bulk):
    """The embedded database's fast path: executemany straight through the sqlite3 driver.

    Measured on 1M rows, SQLAlchemy's per-row parameter handling and the expansion of a 2,000-item `IN`
    list cost more than SQLite's own work. Here statements go to the driver connection of the same
    transaction, ids travel as one JSON array (`json_each`), `data`/`meta`/label values are encoded with
    orjson (any valid JSON reads back the same), times and booleans go through the bind processors
    SQLAlchemy would use, and the page cache is raised to `CACHE_KIB` while the import runs: the random
    content-hash index of a large project does not fit SQLite's default 2 MB cache, and the import was
    three times slower with it.
    """

    CACHE_KIB = 262_144

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        dialect = connection.dialect
        driver = connection.connection.driver_connection
        if driver is None:  # pragma: no cover - a live session always has its driver connection
            raise RuntimeError("the session's database connection is closed")
        self.driver: Any = driver
        self._db_time = _bind_processor(_TASKS.c.created_at, dialect)
        self._db_bool = _bind_processor(_ANNOTATIONS.c.deleted, dialect)
        self._insert_task = self._insert_sql(
            _TASKS, ["project_id", "external_id", "content_hash", "data", "meta", "created_at"]
        )
        self._insert_annotation = self._insert_sql(
            _ANNOTATIONS, ["project_id", "task_id", "value", "deleted", "author", "source", "created_at"]
        )
        in_ids = "project_id = ? AND external_id IN (SELECT value FROM json_each(?))"
        self._select_known = f"SELECT external_id, id, content_hash FROM {_TASKS.name} WHERE {in_ids}"
        self._select_ids = f"SELECT external_id, id FROM {_TASKS.name} WHERE {in_ids}"
        self._cache_before = int(self.driver.execute("PRAGMA cache_size").fetchone()[0])
        self.driver.execute(f"PRAGMA cache_size = -{self.CACHE_KIB}")

    @staticmethod
    def _insert_sql(table: Table, columns: list[str]) -> str:
        placeholders = ", ".join("?" for _ in columns)
        return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"

    def known_tasks(self, project_id: int, external_ids: list[str]) -> list[tuple[str, int, str]]:
        """Return (external_id, id, content_hash) for those of the ids the project already has."""
        ids = json.dumps(external_ids, ensure_ascii=False)
        rows: list[tuple[str, int, str]] = self.driver.execute(
            self._select_known, (project_id, ids)
        ).fetchall()
        return rows

    def insert_tasks(self, project_id: int, drafts: list[_Draft], now: dt.datetime) -> dict[str, int]:
        """Insert new tasks; return {external_id: task id}."""
        created, dumps = self._db_time(now), _dumps
        self.driver.executemany(
            self._insert_task,
            [
                (project_id, d.external_id, d.content_hash, dumps(d.data), dumps(d.meta), created)
                for d in drafts
            ],
        )
        ids = json.dumps([d.external_id for d in drafts], ensure_ascii=False)
        return dict(self.driver.execute(self._select_ids, (project_id, ids)).fetchall())

    def insert_annotations(
        self, project_id: int, labels: list[tuple[int, Any, str]], now: dt.datetime
    ) -> None:
        """Insert ground-truth labels given as (task id, value, author); the source is "import"."""
        created, deleted, source = self._db_time(now), self._db_bool(False), AnnotationSource.import_.value
        encoded: dict[str, str] = {}  # labels repeat: encode each distinct text label once
        rows = []
        for task_id, value, author in labels:
            if type(value) is str:
                text = encoded.get(value)
                if text is None:
                    text = encoded[value] = _dumps(value)
            else:
                text = _dumps(value)
            rows.append((project_id, task_id, text, deleted, author, source, created))
        self.driver.executemany(self._insert_annotation, rows)

    def close(self) -> None:
        """Restore the page cache size."""
        self.driver.execute(f"PRAGMA cache_size = {self._cache_before}")


#: Database dialect -> bulk reader/writer; other dialects use the portable Core one.
_BULK_BY_DIALECT: dict[str, type[_Bulk]] = {"sqlite": _SqliteBulk}


class _ChunkWriter:
    """Writes drafts a chunk at a time; one `IN` query per chunk finds the ids already stored."""

    def __init__(self, session: Session, *, path: Path, project_id: int, author: str) -> None:
        self.session = session
        connection = session.connection()
        self.connection = connection
        self.bulk = _BULK_BY_DIALECT.get(connection.dialect.name, _Bulk)(connection)
        self.path = path
        self.project_id = project_id
        self.author = author
        self.counts = _Counts()
        # Tasks with a larger id were written by this import (we are inside its transaction).
        self.first_new_task_id = (session.scalar(select(func.max(Task.id))) or 0) + 1
        self.pending: list[_Draft] = []
        self._runs: dict[str, int] = {}
        self._fresh_runs: dict[str, int] = {}

    def add(self, draft: _Draft) -> None:
        """Queue one draft; writes a chunk when enough are queued."""
        self.pending.append(draft)
        if len(self.pending) >= CHUNK_ROWS:
            self.flush()

    def close(self) -> None:
        """Release what the writer changed on the connection."""
        self.bulk.close()

    def flush(self) -> None:
        """Write the queued drafts."""
        if not self.pending:
            return
        drafts, self.pending = self.pending, []
        now = utcnow()
        first: dict[str, _Draft] = {}
        for draft in drafts:
            earlier = first.get(draft.external_id)
            if earlier is None:
                first[draft.external_id] = draft
            elif earlier.content_hash != draft.content_hash:
                raise self._conflict(draft, f"appears earlier in this file (line {earlier.line})")
        self.counts.duplicates_in_file += len(drafts) - len(first)
        task_ids: dict[str, int] = {}
        for external_id, task_id, content_hash in self.bulk.known_tasks(self.project_id, list(first)):
            draft = first.pop(external_id)
            from_this_file = task_id >= self.first_new_task_id
            if content_hash != draft.content_hash:
                raise self._conflict(
                    draft, "appears earlier in this file" if from_this_file else "was already imported"
                )
            if from_this_file:
                self.counts.duplicates_in_file += 1
            else:
                self.counts.tasks_unchanged += 1
            task_ids[external_id] = task_id
        stored = list(task_ids.values())
        if first:
            task_ids.update(self.bulk.insert_tasks(self.project_id, list(first.values()), now))
            self.counts.tasks_added += len(first)
        self._write_labels(drafts, task_ids, stored, now)
        self._write_predictions(drafts, task_ids, now)

    def _conflict(self, draft: _Draft, where: str) -> InputFileError:
        return InputFileError(
            f"id '{draft.external_id}' at line {draft.line} {where} with different content",
            path=self.path,
            line=draft.line,
            hint="task ids must be unique: fix the id column, or pick another with --id-column (leave it "
            "out to derive ids from the content)",
        )

    def _write_labels(
        self, drafts: list[_Draft], task_ids: dict[str, int], stored: list[int], now: dt.datetime
    ) -> None:
        labeled = [d for d in drafts if d.label is not None]
        if not labeled:
            return
        # Only tasks stored before this chunk can have a label already (same rule as record_label).
        current = self.bulk.current_labels(stored) if stored else {}
        rows: list[tuple[int, Any, str]] = []
        for draft in labeled:
            task_id = task_ids[draft.external_id]
            if task_id in current and current[task_id] == draft.label:
                continue
            current[task_id] = draft.label
            rows.append((task_id, draft.label, draft.label_author or self.author))
        if rows:
            self.bulk.insert_annotations(self.project_id, rows, now)
            self.counts.labels_added += len(rows)

    def _run_id(self, model: str, *, fresh: bool) -> int:
        runs = self._fresh_runs if fresh else self._runs
        if model not in runs:
            run = None
            if not fresh:
                run = self.session.scalar(
                    select(Run)
                    .where(Run.project_id == self.project_id, Run.kind == "imported", Run.model == model)
                    .order_by(Run.id.desc())
                    .limit(1)
                )
            if run is None:
                run = Run(
                    project_id=self.project_id,
                    kind="imported",
                    model=model,
                    status="finished",
                    scope={"file": self.path.name},
                    finished_at=utcnow(),
                )
                self.session.add(run)
                self.session.flush()
            runs[model] = run.id
        return runs[model]

    def _write_predictions(self, drafts: list[_Draft], task_ids: dict[str, int], now: dt.datetime) -> None:
        predicted = [d for d in drafts if d.predictions]
        if not predicted:
            return
        models = dict.fromkeys(model for d in predicted for model, _, _ in d.predictions)  # file order
        run_ids = {model: self._run_id(model, fresh=False) for model in models}
        existing: dict[tuple[int, int], Any] = {
            (run_id, task_id): value
            for run_id, task_id, value in self.connection.execute(
                select(_PREDICTIONS.c.run_id, _PREDICTIONS.c.task_id, _PREDICTIONS.c.value).where(
                    _PREDICTIONS.c.run_id.in_(list(run_ids.values())),
                    _PREDICTIONS.c.task_id.in_({task_ids[d.external_id] for d in predicted}),
                )
            )
        }
        rows: list[dict[str, Any]] = []
        for draft in predicted:
            task_id = task_ids[draft.external_id]
            for model, value, confidence in draft.predictions:
                run_id = run_ids[model]
                if (run_id, task_id) in existing:
                    if existing[(run_id, task_id)] == value:
                        continue
                    # A different answer from the same model: keep both, the new one in a new run.
                    run_id = self._run_id(model, fresh=True)
                    if (run_id, task_id) in existing:
                        continue
                existing[(run_id, task_id)] = value
                rows.append(
                    {
                        "run_id": run_id,
                        "task_id": task_id,
                        "value": value,
                        "confidence": confidence,
                        "created_at": now,
                    }
                )
        if rows:
            self.connection.execute(insert(_PREDICTIONS), rows)
            self.counts.predictions_added += len(rows)


# ---------------------------------------------------------------------- entry point


def _resolve_format(path: Path, fmt: ImportFormat | str | None, encoding: str) -> ImportFormat:
    if fmt is None:
        return detect_format(path, encoding=encoding)
    try:
        return ImportFormat(fmt)
    except ValueError:
        raise InputFileError(
            f"'{fmt}' is not a format labelpilot imports",
            path=path,
            hint="use --format " + "|".join(f.value for f in ImportFormat),
        ) from None


def _checked_input(
    path: str | Path, fmt: ImportFormat | str | None, encoding: str
) -> tuple[Path, ImportFormat]:
    """Check that a data file exists, is readable and not empty or binary; return it and its format."""
    file_path = _check_path(Path(path).expanduser())
    _check_encoding(encoding, file_path)
    chosen = _resolve_format(file_path, fmt, encoding)
    if chosen in _TEXT_FORMATS:
        _scan_text_file(file_path, encoding, chosen)
    elif file_path.stat().st_size == 0:
        raise InputFileError("the file is empty", path=file_path, hint="export the data again")
    return file_path, chosen


def import_file(
    db: Database,
    project_name: str,
    path: str | Path,
    *,
    fmt: ImportFormat | str | None = None,
    fields: list[str] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    label_sep: str | None = None,
    encoding: str = "utf-8",
    sheet: str | None = None,
    column_names: list[str] | None = None,
    author: str = "import",
    max_field_bytes: int = 1_000_000,
    unescape_formulas: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import a data file into a project as tasks (and ground truth), all or nothing.

    Args:
        db: the database to write to.
        project_name: the project (name or id) that receives the tasks.
        path: the file; its extension gives the format unless `fmt` is passed.
        fmt: the format, when the extension does not say it (e.g. a .txt file holding TSV).
        fields: the input fields (columns) of a task; default: every column except the id and label.
        id_column: the column holding stable task ids; default: a column named `id` if there is one
            (the task `id` for Label Studio), else ids derived from the content.
        label_column: a column of ground-truth labels (parsed with the project's schema; an empty cell
            means no label). Creates a schema from the distinct labels when the project has none.
        label_sep: splits multi-label cells (e.g. ",") and makes a created schema multi-choice.
        encoding: the text encoding of CSV/TSV/JSON/JSONL files.
        sheet: the Excel sheet to read (default: the first).
        column_names: names for the columns of a CSV/TSV/Excel file without a header line.
        author: the author recorded on imported labels (Label Studio annotations keep their own).
        max_field_bytes: the largest value (UTF-8 bytes) one field may hold.
        unescape_formulas: drop the "'" our exporters put before cells starting with = + - @ tab CR.
        progress: called with the number of rows read after every chunk.
    """
    started = time.perf_counter()
    file_path, chosen = _checked_input(path, fmt, encoding)
    if chosen is ImportFormat.labelstudio and (label_column is not None or label_sep is not None):
        raise InputFileError(
            "--label-column/--label-sep do not apply to Label Studio exports",
            path=file_path,
            field=label_column,
            hint="the latest non-cancelled annotation of each task becomes its ground truth",
        )
    if max_field_bytes < 1:
        raise InputFileError(
            f"max_field_bytes must be positive, got {max_field_bytes}",
            path=file_path,
            hint="e.g. --max-field-bytes 1000000",
        )
    reader = READERS[chosen]

    with db.session() as session:
        project = get_project(session, project_name)
        spec = load_spec(project)
        schema_created = False
        mapper: _RowMapper | _LabelStudioMapper
        collector: _LabelCollector | None = None
        if chosen is ImportFormat.labelstudio:
            mapper = _LabelStudioMapper(
                file_path, fields=fields, id_column=id_column, max_field_bytes=max_field_bytes, spec=spec
            )
        else:
            mapper = _RowMapper(
                file_path,
                fields=fields,
                id_column=id_column,
                label_column=label_column,
                max_field_bytes=max_field_bytes,
                text_cells=chosen in (ImportFormat.csv, ImportFormat.tsv),
            )
            if label_column is not None and spec is None:
                collector = _LabelCollector(file_path, label_column, label_sep)
                mapper.labels = collector
            elif label_column is not None and spec is not None:
                mapper.labels = _LabelParser(file_path, spec, label_column, label_sep)
        stream = reader(
            ReadOptions(
                path=file_path,
                encoding=encoding,
                sheet=sheet,
                column_names=list(column_names) if column_names is not None else None,
                unescape_formulas=unescape_formulas and chosen in _SPREADSHEET_FORMATS,
                max_field_bytes=max_field_bytes,
                on_columns=mapper.on_columns if isinstance(mapper, _RowMapper) else None,
            )
        )
        writer = _ChunkWriter(session, path=file_path, project_id=project.id, author=author)
        rows_read = 0
        try:
            for line, record in stream:
                rows_read += 1
                writer.add(mapper.map(line, record))
                if progress is not None and rows_read % CHUNK_ROWS == 0:
                    progress(rows_read)
            writer.flush()
        finally:
            stream.close()
            writer.close()
        if collector is not None:
            spec = collector.finish()
            if spec is not None:
                project.label_spec = spec.to_json()
                schema_created = True
        if progress is not None and rows_read % CHUNK_ROWS != 0:
            progress(rows_read)
        counts = writer.counts
    return ImportReport(
        path=str(file_path),
        format=chosen,
        rows_read=rows_read,
        tasks_added=counts.tasks_added,
        tasks_unchanged=counts.tasks_unchanged,
        duplicates_in_file=counts.duplicates_in_file,
        labels_added=counts.labels_added,
        predictions_added=counts.predictions_added,
        fields=list(mapper.seen_fields),
        id_column=mapper.id_key,
        label_column=label_column,
        schema_created=schema_created,
        seconds=round(time.perf_counter() - started, 3),
    )


# ---------------------------------------------------------------------- preview

#: Most records `preview_file` reads to guess the mapping; the rest of the file is not parsed.
PREVIEW_SCAN_ROWS = CHUNK_ROWS
#: Column names (compared case-insensitively) taken as the label column, most telling first.
LABEL_COLUMN_NAMES = (
    "label",
    "labels",
    "category",
    "class",
    "intent",
    "sentiment",
    "topic",
    "gold",
    "target",
    "answer",
    "annotation",
    "y",
)
#: Separators tried on label cells that may hold several labels, in order of preference.
LABEL_SEPARATORS = (",", "|", ";")
#: Longest label a guessed label column may hold (longer values are text, not classes).
_SHORT_LABEL_CHARS = 40
#: Most distinct labels a guessed label column may hold, and most `label_values` shown.
_MAX_PREVIEW_LABELS = 50


class FilePreview(BaseModel):
    """The first records of a data file and a guessed mapping for `import_file`, for a person to confirm."""

    path: str
    format: ImportFormat
    #: Columns in file order (for Label Studio exports: the keys of the tasks' `data`).
    columns: list[str]
    #: The first records as the importer reads them (for Label Studio exports: the tasks' `data`).
    rows: list[Record]
    #: Records read for the guesses (at most `PREVIEW_SCAN_ROWS`); `more_rows` says whether more follow.
    rows_scanned: int
    more_rows: bool
    #: The id `import_file` uses by default: a column named `id` (Label Studio: `labelpilot_id` in the
    #: data, else "id" meaning the export's task id); None: ids are derived from the content.
    id_column: str | None
    #: Guessed ground-truth column (None for Label Studio exports: annotations are the ground truth).
    label_column: str | None
    #: "," "|" or ";" when the label cells hold several labels each.
    label_separator: str | None
    #: Distinct labels of the label column (split by the separator), most frequent first, at most 50.
    label_values: list[str]
    #: Proposed input fields: every column but the id and label columns.
    fields: list[str]
    #: Remarks for the person confirming the mapping.
    notes: list[str]


@dataclass
class _LabelGuess:
    column: str
    separator: str | None
    #: Class name -> cells holding it, most frequent first (names merged as the schema would merge them).
    counts: dict[str, int]
    unlabeled: int


def _is_empty_cell(value: Any) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def _guess_separator(cells: Sequence[Any]) -> str | None:
    """Return the separator of multi-label text cells, or None when the cells hold one label each.

    A separator counts when the parts it splits off are short and repeat across rows, and it occurs in a
    third of the cells or more, or every part is also a whole cell elsewhere (most rows with one label).
    """
    if not cells or not all(isinstance(cell, str) for cell in cells):
        return None
    whole = {_label_key(cell) for cell in cells}
    best: str | None = None
    best_cells = 0
    for separator in LABEL_SEPARATORS:
        split_cells = sum(separator in cell for cell in cells)
        if split_cells < 2 or split_cells <= best_cells:
            continue
        parts = [part.strip() for cell in cells for part in cell.split(separator) if part.strip()]
        distinct = {_label_key(part) for part in parts}
        if (
            len(distinct) >= 2
            and len(parts) >= 2 * len(distinct)
            and all(len(part) <= _SHORT_LABEL_CHARS for part in parts)
            and (split_cells * 3 >= len(cells) or distinct <= whole)
        ):
            best, best_cells = separator, split_cells
    return best


def _guess_labels(path: Path, column: str, cells: Sequence[Any]) -> _LabelGuess:
    """Read a column's cells as `import_file` reads labels: class names as a created schema would get them."""
    filled = [cell for cell in cells if not _is_empty_cell(cell)]
    separator = _guess_separator(filled)
    collector = _LabelCollector(path, column, separator)
    counts: dict[str, int] = {}
    spelling: dict[str, str] = {}  # labels differing only by case or spaces are one class: first spelling
    unlabeled = len(cells) - len(filled)
    for cell in filled:
        names = collector._names(cell)
        if not names:
            unlabeled += 1
        for name in names:
            spelling.setdefault(_label_key(name), name)
        for key in dict.fromkeys(_label_key(name) for name in names):
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)  # stable: ties keep first-seen order
    return _LabelGuess(column, separator, {spelling[key]: counts[key] for key in ranked}, unlabeled)


def _looks_like_classes(guess: _LabelGuess, cells: Sequence[Any], scanned: int) -> bool:
    """Whether a column holds short values that repeat: 2 to min(50, scanned/2) distinct labels."""
    allowed = (str, int, list)  # floats are measurements, objects are structure; bool is an int
    if any(not isinstance(cell, allowed) for cell in cells if not _is_empty_cell(cell)):
        return False
    if any(len(name) > _SHORT_LABEL_CHARS for name in guess.counts):
        return False
    return 2 <= len(guess.counts) <= min(_MAX_PREVIEW_LABELS, scanned / 2)


def _mean_chars(cells: Sequence[Any]) -> float:
    lengths = [len(str(cell)) for cell in cells if not _is_empty_cell(cell)]
    return sum(lengths) / len(lengths) if lengths else 0.0


def _guess_label_column(
    path: Path,
    columns: Sequence[str],
    cells: Mapping[str, list[Any]],
    *,
    id_column: str | None,
    scanned: int,
    notes: list[str],
) -> _LabelGuess | None:
    """Pick the label column: a telling name first, else the rightmost column of short repeating values."""
    others = [name for name in columns if name != id_column]
    if len(others) < 2:
        return None  # the only column left must be the input
    longest = max(others, key=lambda name: _mean_chars(cells[name]))
    by_key = {name.casefold(): name for name in reversed(others)}  # first in file order wins
    for wanted in LABEL_COLUMN_NAMES:
        name = by_key.get(wanted)
        if name is None:
            continue
        guess = _guess_labels(path, name, cells[name])
        if name == longest and any(len(label) > _SHORT_LABEL_CHARS for label in guess.counts):
            notes.append(f"The column '{name}' holds long texts, so it is not taken as the label column.")
            continue
        return guess
    candidates = [
        guess
        for name in others
        if name != longest
        and _looks_like_classes(guess := _guess_labels(path, name, cells[name]), cells[name], scanned)
    ]
    if not candidates:
        return None
    chosen = candidates[-1]
    shown = ", ".join(f"'{label}'" for label in list(chosen.counts)[:5])
    notes.append(f"The column '{chosen.column}' is taken as the label column: its values repeat ({shown}).")
    if len(candidates) > 1:
        alternatives = ", ".join(f"'{guess.column}'" for guess in candidates[:-1])
        notes.append(f"Other columns that could hold labels: {alternatives}.")
    return chosen


def _label_notes(guess: _LabelGuess, scanned: int, more_rows: bool) -> list[str]:
    notes = []
    scope = f"of the first {scanned:,} rows" if more_rows else f"of the {scanned:,} rows"
    if guess.unlabeled:
        notes.append(
            f"{guess.unlabeled:,} {scope} have no label in '{guess.column}' (they import unlabeled)."
        )
    if guess.separator is not None:
        notes.append(
            f"Cells of '{guess.column}' hold several labels separated by '{guess.separator}' (multi-label)."
        )
    if len(guess.counts) == 1:
        notes.append(
            f"The column '{guess.column}' holds a single label ('{next(iter(guess.counts))}'); a schema "
            "created from it needs at least two classes."
        )
    elif len(guess.counts) > _MAX_PREVIEW_LABELS:
        notes.append(
            f"'{guess.column}' has {len(guess.counts):,} distinct labels; the {_MAX_PREVIEW_LABELS} most "
            "frequent are listed."
        )
    return notes


def _preview_labelstudio(
    path: Path, records: list[tuple[int, Record]], *, shown: int, more_rows: bool, fmt: ImportFormat
) -> FilePreview:
    """Preview a Label Studio export: the tasks' data, the task id, and what becomes ground truth."""
    mapper = _LabelStudioMapper(path, fields=None, id_column=None, max_field_bytes=1_000_000, spec=None)
    data = [{key: _clean_value(value) for key, value in task["data"].items()} for _line, task in records]
    columns = list(dict.fromkeys(key for record in data for key in record))
    id_column: str | None = None
    for _line, task in records:  # the first task that has an id decides, as in `_LabelStudioMapper.map`
        if LS_ID_KEY in task["data"]:
            id_column = LS_ID_KEY
        elif task.get("id") is not None:
            id_column = "id"
        if id_column is not None:
            break
    annotated = sum(mapper._latest_annotation(task, line) is not None for line, task in records)
    predicted = sum(bool(task.get("predictions")) for _line, task in records)
    scope = f"of the first {len(records):,}" if more_rows else f"of the {len(records):,}"
    notes = [
        "Label Studio export: the latest non-cancelled annotation of each task becomes its ground truth "
        f"({annotated:,} {scope} tasks have one); no label column is needed."
    ]
    if annotated:
        notes.append("Reading annotations needs the project's label schema (e.g. from the labeling config).")
    if predicted:
        notes.append(f"{predicted:,} {scope} tasks have predictions; they are kept as imported runs.")
    if id_column is None:
        notes.append("The tasks have no id: task ids will be derived from the content.")
    return FilePreview(
        path=str(path),
        format=fmt,
        columns=columns,
        rows=data[:shown],
        rows_scanned=len(records),
        more_rows=more_rows,
        id_column=id_column,
        label_column=None,
        label_separator=None,
        label_values=[],
        fields=[name for name in columns if name != LS_ID_KEY],
        notes=notes,
    )


def preview_file(
    path: str | Path,
    *,
    rows: int = 5,
    fmt: ImportFormat | str | None = None,
    encoding: str = "utf-8",
    sheet: str | None = None,
) -> FilePreview:
    """Show the first records of a data file and guess its id, label and input columns; writes nothing.

    The file is checked and read exactly as `import_file` reads it (same errors), but at most
    `PREVIEW_SCAN_ROWS` records are parsed: the guesses rest on those.

    Args:
        path: the file; its extension gives the format unless `fmt` is passed.
        rows: how many records to return in `rows` (0 to `PREVIEW_SCAN_ROWS`).
        fmt: the format, when the extension does not say it.
        encoding: the text encoding of CSV/TSV/JSON/JSONL files.
        sheet: the Excel sheet to read (default: the first).
    """
    if not 0 <= rows <= PREVIEW_SCAN_ROWS:
        raise ValueError(f"rows must be between 0 and {PREVIEW_SCAN_ROWS}, got {rows}")
    file_path, chosen = _checked_input(path, fmt, encoding)
    headers: list[list[str]] = []
    stream = READERS[chosen](
        ReadOptions(
            path=file_path,
            encoding=encoding,
            sheet=sheet,
            unescape_formulas=chosen in _SPREADSHEET_FORMATS,
            on_columns=lambda columns, _line: headers.append(columns),
        )
    )
    records: list[tuple[int, Record]] = []
    more_rows = False
    try:
        for item in stream:
            if len(records) == PREVIEW_SCAN_ROWS:
                more_rows = True
                break
            records.append(item)
    finally:
        stream.close()
    if chosen is ImportFormat.labelstudio:
        return _preview_labelstudio(file_path, records, shown=rows, more_rows=more_rows, fmt=chosen)

    values = [record for _line, record in records]
    columns = headers[0] if headers else list(dict.fromkeys(key for record in values for key in record))
    # `import_file` takes a column named exactly `id` from the header, or from the first JSON record.
    first_keys = headers[0] if headers else list(values[0]) if values else []
    id_column = "id" if "id" in first_keys else None
    cells = {name: [record.get(name) for record in values] for name in columns}
    notes: list[str] = []
    guess = _guess_label_column(
        file_path, columns, cells, id_column=id_column, scanned=len(values), notes=notes
    )
    if guess is None:
        notes.append("No label column found: the tasks will be imported without ground truth.")
    else:
        notes.extend(_label_notes(guess, len(values), more_rows))
    if id_column is None:
        notes.append("There is no 'id' column: task ids will be derived from the content.")
    for role, name in (("id", id_column), ("label", guess.column if guess else None)):
        lacking = sum(name not in record for record in values) if name is not None else 0
        if lacking:
            notes.append(f"{lacking:,} records have no '{name}' key; every record needs its {role}.")
    if not values:
        notes.append("The file has no rows, only a header.")
    label_column = guess.column if guess is not None else None
    return FilePreview(
        path=str(file_path),
        format=chosen,
        columns=columns,
        rows=values[:rows],
        rows_scanned=len(values),
        more_rows=more_rows,
        id_column=id_column,
        label_column=label_column,
        label_separator=guess.separator if guess is not None else None,
        label_values=list(guess.counts)[:_MAX_PREVIEW_LABELS] if guess is not None else [],
        fields=[name for name in columns if name not in (id_column, label_column)],
        notes=notes,
    )
