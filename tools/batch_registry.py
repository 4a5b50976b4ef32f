"""The registry of Batch API batches (`batch_jobs`): what labelpilot submitted, where it stands, what it asked.

Kept apart from `tools.batch_api` (which needs the OpenAI SDK and LangChain) so that listing and showing
batches stays as quick to start as the other read-only commands.

A batch is registered in the transaction right after the provider created it; `requests` maps each line's
custom_id to the request's response-cache key and few-shot example ids (what ingesting its results needs).
A batch is *open* until its results were turned into outcomes (`ingested_at`); the tasks of open batches
are attached to them instead of being submitted again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field
from sqlalchemy import select

from tools.errors import NotFoundError
from tools.labelers import LabelerInfo
from tools.storage import BatchJob, Database, utcnow

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
#: The status recorded for a batch the endpoint no longer knows (404 when it is read).
MISSING = "missing"


def custom_id(task_id: int) -> str:
    """Return the custom_id of a task's line in a batch input file."""
    return f"task-{task_id}"


def task_id_of(name: str) -> int | None:
    """Return the task id a custom_id names, or None for one labelpilot did not write."""
    number = name.removeprefix("task-")
    return int(number) if name.startswith("task-") and number.isdigit() else None


def identity_hash(info: LabelerInfo) -> str:
    """Return the sha256 of a labeler's identity: tasks are attached only to batches of the same one."""
    document = {"kind": info.kind.value, "model": info.model, "identity": info.identity}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class BatchInfo(BaseModel):
    """A registered batch as `batch list` / `batch show` present it."""

    id: str
    project_id: int
    run_id: int | None
    identity: str
    endpoint: str
    status: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    request_counts: dict[str, int]
    requests: int = Field(description="Requests labelpilot submitted in it.")
    created_at: datetime
    updated_at: datetime
    ingested_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def open(self) -> bool:
        """Whether its results are still to be ingested."""
        return self.ingested_at is None


def _info(row: BatchJob) -> BatchInfo:
    return BatchInfo(
        id=row.id,
        project_id=row.project_id,
        run_id=row.run_id,
        identity=row.identity,
        endpoint=row.endpoint,
        status=row.status,
        input_file_id=row.input_file_id,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        request_counts={str(k): int(v) for k, v in (row.request_counts or {}).items()},
        requests=len(row.requests or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        ingested_at=row.ingested_at,
    )


def list_batches(
    db: Database, project: str | int, *, run_id: int | None = None, open_only: bool = False
) -> list[BatchInfo]:
    """Return the project's registered batches, newest first (optionally of one run, or only open ones)."""
    from tools.projects import get_project

    with db.session() as session:
        row = get_project(session, project)
        query = select(BatchJob).where(BatchJob.project_id == row.id)
        if run_id is not None:
            query = query.where(BatchJob.run_id == run_id)
        if open_only:
            query = query.where(BatchJob.ingested_at.is_(None))
        rows = session.scalars(query.order_by(BatchJob.created_at.desc(), BatchJob.id.desc())).all()
        return [_info(batch) for batch in rows]


def get_batch(db: Database, batch_id: str) -> BatchInfo:
    """Return one registered batch; NotFoundError for an id labelpilot never submitted."""
    with db.session() as session:
        row = session.get(BatchJob, batch_id)
        if row is None:
            raise NotFoundError(
                f"no batch '{batch_id}' was submitted by labelpilot here", hint="see: labelpilot batch list"
            )
        return _info(row)


def register_batch(
    db: Database,
    batch_id: str,
    *,
    project_id: int,
    run_id: int | None,
    identity: str,
    endpoint: str,
    status: str,
    input_file_id: str,
    request_counts: dict[str, int],
    requests: dict[str, dict[str, Any]],
) -> None:
    """Record a batch the provider just created (one transaction)."""
    with db.session() as session:
        session.add(
            BatchJob(
                id=batch_id,
                project_id=project_id,
                run_id=run_id,
                identity=identity,
                endpoint=endpoint,
                status=status,
                input_file_id=input_file_id,
                request_counts=request_counts,
                requests=requests,
            )
        )


def record_batch(
    db: Database,
    batch_id: str,
    *,
    status: str,
    output_file_id: str | None = None,
    error_file_id: str | None = None,
    request_counts: dict[str, int] | None = None,
) -> None:
    """Store what the provider says about a batch now (file ids and counts it does not give are kept)."""
    with db.session() as session:
        row = session.get(BatchJob, batch_id)
        if row is None:
            return
        row.status = status
        row.output_file_id = output_file_id or row.output_file_id
        row.error_file_id = error_file_id or row.error_file_id
        if request_counts is not None:
            row.request_counts = request_counts
        row.updated_at = utcnow()


def mark_ingested(db: Database, batch_id: str) -> None:
    """Note that a batch's results became outcomes: its tasks are no longer attached to it."""
    with db.session() as session:
        row = session.get(BatchJob, batch_id)
        if row is not None and row.ingested_at is None:
            row.ingested_at = utcnow()


@dataclass(frozen=True)
class OpenRequest:
    """A request inside an open batch: the batch, its last known status, the cache key, the examples."""

    batch_id: str
    status: str
    key: str
    examples: list[str] | None


def open_requests(db: Database, project_id: int, identity: str) -> dict[str, OpenRequest]:
    """Return the requests of a labeler identity's open batches by custom_id (the newest batch wins)."""
    found: dict[str, OpenRequest] = {}
    with db.session() as session:
        rows = session.scalars(
            select(BatchJob)
            .where(
                BatchJob.project_id == project_id,
                BatchJob.identity == identity,
                BatchJob.ingested_at.is_(None),
            )
            .order_by(BatchJob.created_at, BatchJob.id)
        ).all()
        for row in rows:
            for name, entry in (row.requests or {}).items():
                found[name] = OpenRequest(
                    batch_id=row.id,
                    status=row.status,
                    key=str(entry.get("key") or ""),
                    examples=entry.get("examples"),
                )
    return found


def batch_requests(db: Database, batch_id: str) -> dict[str, dict[str, Any]]:
    """Return a batch's requests by custom_id ({} for an unknown batch)."""
    with db.session() as session:
        row = session.get(BatchJob, batch_id)
        return dict(row.requests or {}) if row is not None else {}
