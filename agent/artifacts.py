"""Artifacts: what a tool hands the UI besides its short reply (files, tables, pictures, cards).

A tool message's `artifact` is a list of `Artifact` dicts (JSON-safe, so the checkpointer stores them).
The model never sees artifacts; the UI renders them (a download, an image, a table, buttons).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class ArtifactKind(str, Enum):
    """What an artifact is, so the UI knows how to show it."""

    file = "file"  # a download (an export)
    table = "table"  # a CSV file with the full table the reply summarises
    image = "image"  # a PNG picture
    cards = "cards"  # tasks to label or review (inline data: buttons in the UI)
    data = "data"  # a small JSON document (a report, an estimate)


class Artifact(BaseModel):
    """One artifact: its kind, a title, a file path and/or small inline data."""

    kind: ArtifactKind
    title: str
    path: str | None = None
    data: Any = None


Artifacts = list[dict[str, Any]]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "table"


def dump(*artifacts: Artifact) -> Artifacts:
    """Artifacts as JSON-safe dicts (what a tool returns as its ToolMessage artifact)."""
    return [artifact.model_dump(mode="json") for artifact in artifacts]


def file_artifact(path: Path | str, title: str) -> Artifact:
    """A file to download."""
    return Artifact(kind=ArtifactKind.file, title=title, path=str(path))


def image_artifact(path: Path | str, title: str) -> Artifact:
    """A picture."""
    return Artifact(kind=ArtifactKind.image, title=title, path=str(path))


def data_artifact(title: str, data: Any) -> Artifact:
    """A small JSON document (made JSON-safe here)."""
    return Artifact(kind=ArtifactKind.data, title=title, data=json.loads(json.dumps(data, default=str)))


def table_artifact(folder: Path, name: str, rows: Sequence[Mapping[str, Any]], title: str) -> Artifact:
    """Write `rows` as a CSV file in `folder` and return it as a table artifact."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    path = folder / f"{stamp}-{_slug(name)}.csv"
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in columns})
    return Artifact(kind=ArtifactKind.table, title=title, path=str(path), data={"rows": len(rows)})


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def artifact_paths(artifacts: Any) -> list[str]:
    """The file paths among a tool message's artifacts."""
    if not isinstance(artifacts, list):
        return []
    return [str(item["path"]) for item in artifacts if isinstance(item, dict) and item.get("path")]
