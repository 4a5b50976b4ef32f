"""The bulk labeling engine: run a labeler over a project's tasks as a resumable, cancellable job.

`run_job` owns persistence, resume, de-duplication and progress; the labeler (an LLM prompt version, the
offline baseline) owns only how a window of tasks gets its outcomes (see `tools.labelers`).

- **Job identity.** A job is (project, labeler kind/model/identity, run kind, scope); its sha256 is the
  `job_key` stored on the `Run`. Running the same job again finds the newest run with that key and resumes
  it: tasks with a successful prediction are skipped; tasks whose stored prediction is an error are retried
  and their row is UPDATED (an upsert on (run_id, task_id): one prediction per task, ever). A finished run is
  not run again unless `rerun_errors` (retry its errors, label tasks new to the scope) or `new_run`.
- **Bounded memory.** Pending tasks are read from the database in keyset-paginated chunks and handed to the
  labeler in windows of `window_size` tasks. A new window starts while fewer than 2 × `window_size` tasks
  await an outcome and fewer than `max_windows` windows are open, so the pipeline never drains at a
  window's end, and a window kept open by one slow task (a long retry chain) does not hold up the others.
  At most `max_windows` × `window_size` tasks are held; nothing grows with the number of tasks but counters.
- **De-duplication.** Tasks of a job with the same `content_hash` are sent once: while one is in flight the
  others wait for its outcome, and an outcome already stored in this run (or seen recently) is copied.
- **Commits.** Outcomes are upserted in small batches, every `commit_every` outcomes or `commit_seconds`,
  so a crash loses at most what was in flight and not yet committed. Each commit also refreshes the run's
  stats and heartbeat and reads its cancel flag, so `cancel_job` from another process stops the job.
- **Status.** created → running → finished | cancelled | failed | interrupted (the coroutine itself was
  cancelled, e.g. by Ctrl-C in a plain `asyncio.run`). A run whose owner process is gone (kill -9) shows
  as interrupted and is resumed by the next run of the same job. An `auth` outcome stops the job (failed):
  every other task would fail the same way.
- **Cancel.** Setting `cancel` (or `cancel_job`) stops dispatching, cancels in-flight labeler calls (their
  tasks are NOT stored, so a resume labels them) and stores every outcome that had completed.
- **Slow windows.** A window may yield nothing for hours (the Batch API labeler polls until its batch is
  done): the commits on the `commit_seconds` clock go on without outcomes, so the heartbeat stays fresh and
  a cancel request from another process is still seen within about a second.

Concurrency of the read-modify-write of `Run.stats` (the engine's commits against `cancel_job` from another
process): both first run a no-op UPDATE of the run row, which takes SQLite's write lock / PostgreSQL's row
lock, and only then read the stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import ColumnElement, Select, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tools.errors import ConflictError, ErrorKind, NotFoundError
from tools.labelers import Labeler, LabelerInfo, LabelOutcome, TaskInput
from tools.storage import Annotation, Database, Prediction, Project, Run, Task, utcnow

if TYPE_CHECKING:
    from tools.costs import CostEstimate

logger = logging.getLogger(__name__)

#: Tasks read from the database per query.
CHUNK_SIZE = 500
#: Outcomes of recent representatives kept to copy to later duplicates (the database has the rest).
RECENT_OUTCOMES = 1024
#: Another host's run counts as alive while its heartbeat is younger than this.
DEFAULT_STALE_AFTER_S = 120.0
#: How often at most the progress callback is called.
PROGRESS_INTERVAL_S = 0.1

#: Tokens of the runs this process is executing (a run claimed by our own pid but not listed is dead).
_ACTIVE_TOKENS: set[str] = set()


class RunKind(str, Enum):
    """Why a run labels tasks."""

    label = "label"
    eval = "eval"


class RunStatus(str, Enum):
    """Where a run stands."""

    created = "created"
    running = "running"
    finished = "finished"
    cancelled = "cancelled"
    failed = "failed"
    interrupted = "interrupted"


RESUMABLE = frozenset(
    {RunStatus.created, RunStatus.running, RunStatus.cancelled, RunStatus.failed, RunStatus.interrupted}
)


class ScopeKind(str, Enum):
    """Which tasks of a project a job covers."""

    all = "all"
    #: Tasks without a successful prediction from any OTHER label run of the project.
    unlabeled = "unlabeled"
    ground_truth = "ground_truth"
    task_ids = "task_ids"


class JobScope(BaseModel):
    """The tasks of a job: a kind, explicit task ids for `task_ids`, and optionally the first `limit` by id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ScopeKind = ScopeKind.all
    task_ids: list[int] | None = None
    limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ids_fit_kind(self) -> JobScope:
        if (self.kind is ScopeKind.task_ids) != (self.task_ids is not None):
            raise ValueError("task_ids are given exactly when the scope kind is task_ids")
        if self.task_ids is not None:
            object.__setattr__(self, "task_ids", sorted(set(self.task_ids)))
        return self

    def describe(self) -> str:
        """Return the scope in words."""
        text = {
            ScopeKind.all: "all tasks",
            ScopeKind.unlabeled: "tasks not labeled by another run",
            ScopeKind.ground_truth: "tasks with ground truth",
            ScopeKind.task_ids: f"{len(self.task_ids or [])} chosen tasks",
        }[self.kind]
        return f"{text}, the first {self.limit:,}" if self.limit else text


class JobProgress(BaseModel):
    """A progress report: tasks done (incl. earlier sessions), failed (this session), rate and ETA."""

    run_id: int
    total: int
    done: int
    failed: int
    cached: int
    deduplicated: int
    rate_per_s: float
    eta_s: float | None
    elapsed_s: float


class JobReport(BaseModel):
    """What a call of `run_job` did."""

    run_id: int
    job_key: str
    status: RunStatus
    resumed: bool
    total: int = Field(description="Tasks in the job's scope.")
    skipped: int = Field(description="Tasks already labeled before this session.")
    labeled: int = Field(description="Tasks labeled in this session (deduplicated copies included).")
    failed: int = Field(description="Tasks whose outcome in this session is an error.")
    failed_by_kind: dict[str, int] = Field(default_factory=dict)
    from_cache: int = 0
    deduplicated: int = 0
    sent: int = Field(default=0, description="Outcomes that needed a model call (retries not counted).")
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = 0.0
    duration_s: float = 0.0
    throughput_per_s: float = 0.0
    done_total: int = Field(default=0, description="Tasks of the scope with a label now.")
    errors_total: int = Field(default=0, description="Tasks of the scope with a stored error now.")
    message: str = ""


class JobInfo(BaseModel):
    """A run as `jobs list` / `jobs show` present it."""

    run_id: int
    kind: str
    status: str
    model: str
    labeler: str
    prompt_version_id: int | None
    scope: dict[str, Any]
    total: int | None
    done: int
    failed: int
    failed_by_kind: dict[str, int]
    cost_usd: float | None
    cancel_requested: bool
    created_at: datetime
    finished_at: datetime | None
    stats: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- planning


def job_key(project_id: int, info: LabelerInfo, kind: RunKind, scope: JobScope) -> str:
    """Return the sha256 that identifies a job: same project, labeler, run kind and scope → same key."""
    document = {
        "project": project_id,
        "labeler": {"kind": info.kind.value, "model": info.model, "identity": info.identity},
        "kind": kind.value,
        "scope": scope.model_dump(mode="json"),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class JobPlan:
    """A job resolved against the database: its project, key, scope and the run it would continue."""

    project_id: int
    project_name: str
    key: str
    kind: RunKind
    scope: JobScope
    info: LabelerInfo
    run_id: int | None
    run_status: RunStatus | None


def _project(session: Session, project: str | int) -> Project:
    from tools.projects import get_project

    return get_project(session, project)


def job_plan(
    db: Database,
    project: str | int,
    labeler: Labeler,
    *,
    scope: JobScope | None = None,
    kind: RunKind = RunKind.label,
    run_id: int | None = None,
) -> JobPlan:
    """Resolve a job: the project, the job key, and the newest run with that key.

    With `run_id`, the job is that run's: its key, kind and scope (the labeler may differ from the one it
    started with, e.g. after an endpoint moved; `jobs resume` relies on this).
    """
    scope = scope or JobScope()
    info = labeler.info
    with db.session() as session:
        row = _project(session, project)
        key = job_key(row.id, info, kind, scope)
        if run_id is not None:
            run = session.get(Run, run_id)
            if run is None or run.project_id != row.id:
                raise NotFoundError(
                    f"no job {run_id} in project '{row.name}'", hint="see: labelpilot jobs list"
                )
            scope = JobScope.model_validate(run.scope or {})
            kind = RunKind(run.kind)
        else:
            run = session.scalar(
                select(Run)
                .where(Run.project_id == row.id, Run.job_key == key)
                .order_by(Run.id.desc())
                .limit(1)
            )
        if run is not None and run.job_key:
            key = run.job_key
        return JobPlan(
            project_id=row.id,
            project_name=row.name,
            key=key,
            kind=kind,
            scope=scope,
            info=info,
            run_id=run.id if run is not None else None,
            run_status=RunStatus(run.status) if run is not None else None,
        )


def _scope_filters(session: Session, plan: JobPlan, run_id: int | None) -> list[ColumnElement[bool]]:
    from tools.groundtruth import latest_annotation_ids

    scope = plan.scope
    filters: list[ColumnElement[bool]] = [Task.project_id == plan.project_id]
    if scope.kind is ScopeKind.ground_truth:
        labeled = select(Annotation.task_id).where(
            Annotation.id.in_(latest_annotation_ids(plan.project_id)), Annotation.deleted.is_(False)
        )
        filters.append(Task.id.in_(labeled))
    elif scope.kind is ScopeKind.task_ids:
        filters.append(Task.id.in_(scope.task_ids or []))
    elif scope.kind is ScopeKind.unlabeled:
        others = (
            select(Prediction.id)
            .join(Run, Run.id == Prediction.run_id)
            .where(
                Prediction.task_id == Task.id,
                Prediction.error_kind.is_(None),
                Run.project_id == plan.project_id,
                Run.kind == RunKind.label.value,
            )
        )
        if run_id is not None:
            others = others.where(Prediction.run_id != run_id)
        filters.append(~exists(others))
    if scope.limit is not None:
        boundary = session.scalar(
            select(Task.id).where(*filters).order_by(Task.id).offset(scope.limit - 1).limit(1)
        )
        if boundary is not None:
            filters.append(Task.id <= boundary)
    return filters


def _ok_in_run(run_id: int) -> ColumnElement[bool]:
    return exists().where(
        Prediction.run_id == run_id, Prediction.task_id == Task.id, Prediction.error_kind.is_(None)
    )


class ScopeCounts(BaseModel):
    """Sizes of a job: tasks in scope, done by its run, pending, and pending with distinct content."""

    total: int
    done: int
    pending: int
    pending_unique: int


def count_scope(db: Database, plan: JobPlan) -> ScopeCounts:
    """Count a job's tasks (in SQL: nothing is loaded)."""
    with db.session() as session:
        filters = _scope_filters(session, plan, plan.run_id)
        total = session.scalar(select(func.count()).select_from(Task).where(*filters)) or 0
        pending_filters = list(filters)
        done = 0
        if plan.run_id is not None:
            done = (
                session.scalar(
                    select(func.count()).select_from(Task).where(*filters, _ok_in_run(plan.run_id))
                )
                or 0
            )
            pending_filters.append(~_ok_in_run(plan.run_id))
        unique = (
            session.scalar(
                select(func.count(func.distinct(Task.content_hash))).select_from(Task).where(*pending_filters)
            )
            or 0
        )
    return ScopeCounts(total=total, done=done, pending=total - done, pending_unique=unique)


def _task_input(row: Any) -> TaskInput:
    return TaskInput(
        task_id=row.id, external_id=row.external_id, data=row.data, content_hash=row.content_hash
    )


def iter_pending_chunks(
    db: Database, plan: JobPlan, *, run_id: int | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[list[TaskInput]]:
    """Yield the job's tasks without a successful prediction in its run, by id, `chunk_size` at a time.

    Keyset pagination (id > last): one short query per chunk, nothing else held.
    """
    run_id = run_id if run_id is not None else plan.run_id
    last_id = 0
    while True:
        with db.session() as session:
            filters = _scope_filters(session, plan, run_id)
            if run_id is not None:
                filters.append(~_ok_in_run(run_id))
            rows = session.execute(
                select(Task.id, Task.external_id, Task.data, Task.content_hash)
                .where(*filters, Task.id > last_id)
                .order_by(Task.id)
                .limit(chunk_size)
            ).all()
        if not rows:
            return
        last_id = rows[-1].id
        yield [_task_input(row) for row in rows]


def iter_pending(
    db: Database, plan: JobPlan, *, order_by_hash: bool = False, limit: int | None = None
) -> Iterator[TaskInput]:
    """Yield the job's pending tasks; `order_by_hash` gives one task per distinct content, ordered by the
    content hash: with `limit`, a deterministic pseudo-random sample."""
    if not order_by_hash:
        count = 0
        for chunk in iter_pending_chunks(db, plan):
            for task in chunk:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield task
        return
    with db.session() as session:
        filters = _scope_filters(session, plan, plan.run_id)
        if plan.run_id is not None:
            filters.append(~_ok_in_run(plan.run_id))
        firsts = (
            select(func.min(Task.id)).where(*filters).group_by(Task.content_hash).order_by(Task.content_hash)
        )
        if limit is not None:
            firsts = firsts.limit(limit)
        query: Select[Any] = (
            select(Task.id, Task.external_id, Task.data, Task.content_hash)
            .where(Task.id.in_(firsts.subquery().select()))
            .order_by(Task.content_hash)
        )
        rows = session.execute(query).all()
    for row in rows:
        yield _task_input(row)


# ---------------------------------------------------------------------------------------------- storage helpers


def dialect_insert(db: Database, table: Any) -> Any:
    """Return an INSERT for `table` that supports ON CONFLICT on this database (SQLite or PostgreSQL)."""
    if db.is_sqlite:
        return sqlite.insert(table)
    if db.url.get_backend_name() == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"no upsert for the database backend {db.url.get_backend_name()}")


_PREDICTION_FIELDS = (
    "value",
    "confidence",
    "reasoning",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_ms",
    "error_kind",
    "error_message",
    "examples",
    "created_at",
)


def upsert_predictions(db: Database, session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert predictions, or update the row a (run, task) already has: never a second row."""
    if not rows:
        return
    statement = dialect_insert(db, Prediction.__table__)
    statement = statement.on_conflict_do_update(
        index_elements=["run_id", "task_id"],
        set_={name: getattr(statement.excluded, name) for name in _PREDICTION_FIELDS},
    )
    session.execute(statement, list(rows))


def _lock_run(session: Session, run_id: int) -> Run:
    # A no-op UPDATE takes SQLite's write lock / PostgreSQL's row lock before the read (see module docstring).
    session.execute(
        update(Run).where(Run.id == run_id).values(status=Run.status),
        execution_options={"synchronize_session": False},
    )
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    return run


# ---------------------------------------------------------------------------------------------- ownership


def _owner() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "heartbeat": utcnow().isoformat(),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child its parent has not reaped yet is a zombie: dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def owner_alive(owner: Any, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> bool:
    """Whether the process that claimed a run is still running it."""
    if not isinstance(owner, dict):
        return False
    if owner.get("token") in _ACTIVE_TOKENS:
        return True
    if owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        return isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid)
    try:
        heartbeat = datetime.fromisoformat(str(owner.get("heartbeat")))
    except ValueError:
        return False
    if heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=UTC)
    return utcnow() - heartbeat < timedelta(seconds=stale_after_s)


def _effective_status(run: Run, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> str:
    stats = run.stats or {}
    if run.status == RunStatus.running.value and not owner_alive(
        stats.get("owner"), stale_after_s=stale_after_s
    ):
        return RunStatus.interrupted.value
    return run.status


# ---------------------------------------------------------------------------------------------- the job


@dataclass
class _WindowEnd:
    window: int
    task: asyncio.Task[None]


@dataclass
class _Counters:
    ok: int = 0
    failed: int = 0
    failed_by_kind: Counter[str] = field(default_factory=Counter)
    from_cache: int = 0
    deduplicated: int = 0
    sent: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True


_CUMULATIVE = ("from_cache", "deduplicated", "sent", "input_tokens", "output_tokens", "cached_tokens")


class _Job:
    def __init__(
        self,
        db: Database,
        plan: JobPlan,
        labeler: Labeler,
        *,
        progress: Callable[[JobProgress], None] | None,
        cancel: asyncio.Event | None,
        commit_every: int,
        commit_seconds: float,
        window_size: int,
        max_windows: int,
        estimate: CostEstimate | None,
    ) -> None:
        self.db = db
        self.plan = plan
        self.labeler = labeler
        self.progress = progress
        self.cancel = cancel
        self.commit_every = max(1, commit_every)
        self.commit_seconds = commit_seconds
        self.window_size = max(1, window_size)
        self.max_windows = max(1, max_windows)
        self.max_waiting = 4 * self.window_size
        self.estimate = estimate
        self.counters = _Counters()
        self.buffer: list[dict[str, Any]] = []
        self.reps: dict[int, TaskInput] = {}
        self.rep_by_hash: dict[str, int] = {}
        self.waiters: dict[str, list[TaskInput]] = {}
        self.waiting = 0
        self.recent: OrderedDict[str, LabelOutcome] = OrderedDict()
        self.fetched: list[TaskInput] = []
        self.windows: dict[int, asyncio.Task[None]] = {}
        self.window_members: dict[int, list[int]] = {}
        self.next_window = 0
        self.queue: asyncio.Queue[LabelOutcome | _WindowEnd] = asyncio.Queue()
        self.exhausted = False
        self.stopping = False
        self.stop_status: RunStatus | None = None
        self.stop_message = ""
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.last_flush = self.started
        self.last_progress = 0.0
        self.run_id = 0
        self.total = 0
        self.done_before = 0
        self.base_stats: dict[str, Any] = {}
        self.owner: dict[str, Any] = {}
        self.chunks: Iterator[list[TaskInput]] = iter(())

    # ------------------------------------------------------------------ outcomes and commits

    def _row(self, outcome: LabelOutcome) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "task_id": outcome.task_id,
            "value": outcome.value,
            "confidence": outcome.confidence,
            "reasoning": outcome.reasoning,
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "cached_tokens": outcome.cached_tokens,
            "cost_usd": outcome.cost_usd,
            "latency_ms": outcome.latency_ms,
            "error_kind": outcome.error_kind.value if outcome.error_kind else None,
            "error_message": outcome.error_message,
            "examples": outcome.examples,
            "created_at": utcnow(),
        }

    def _record(self, outcome: LabelOutcome, *, copied: bool = False) -> None:
        counters = self.counters
        self.buffer.append(self._row(outcome))
        if outcome.ok:
            counters.ok += 1
        else:
            counters.failed += 1
            counters.failed_by_kind[outcome.error_kind.value if outcome.error_kind else "unknown"] += 1
        if copied:
            counters.deduplicated += 1
        elif outcome.from_cache:
            counters.from_cache += 1
        else:
            counters.sent += 1
            counters.input_tokens += outcome.input_tokens or 0
            counters.output_tokens += outcome.output_tokens or 0
            counters.cached_tokens += outcome.cached_tokens or 0
            if outcome.cost_usd is not None:
                counters.cost_usd += outcome.cost_usd
            elif outcome.ok:
                counters.cost_known = False
        if len(self.buffer) >= self.commit_every:
            self._flush()
        self._report_progress()

    def _copy(self, outcome: LabelOutcome, task: TaskInput) -> None:
        copy = outcome.model_copy(
            update={
                "task_id": task.task_id,
                "input_tokens": None,
                "output_tokens": None,
                "cached_tokens": None,
                "cost_usd": 0.0,
                "latency_ms": None,
                "from_cache": False,
            }
        )
        self._record(copy, copied=True)

    def _remember(self, content_hash: str, outcome: LabelOutcome) -> None:
        self.recent[content_hash] = outcome
        self.recent.move_to_end(content_hash)
        while len(self.recent) > RECENT_OUTCOMES:
            self.recent.popitem(last=False)

    def _on_outcome(self, outcome: LabelOutcome) -> None:
        task = self.reps.pop(outcome.task_id, None)
        if task is None:
            logger.warning("the labeler returned an outcome for task %s it was not given", outcome.task_id)
            return
        self.rep_by_hash.pop(task.content_hash, None)
        duplicates = self.waiters.pop(task.content_hash, [])
        self.waiting -= len(duplicates)
        self._record(outcome)
        for duplicate in duplicates:
            self._copy(outcome, duplicate)
        if outcome.ok:
            self._remember(task.content_hash, outcome)
        elif outcome.error_kind is ErrorKind.auth and not self.stopping:
            self._stop(RunStatus.failed, f"the endpoint refused the request: {outcome.error_message}")

    def _stats(self, *, final: bool = False) -> dict[str, Any]:
        base = self.base_stats
        counters = self.counters
        elapsed = time.monotonic() - self.started
        stats: dict[str, Any] = dict(base)
        for name in _CUMULATIVE:
            stats[name] = int(base.get(name) or 0) + getattr(counters, name)
        base_cost = base.get("cost_usd", 0.0)
        stats["cost_usd"] = (
            None
            if base_cost is None or not counters.cost_known
            else round(float(base_cost) + counters.cost_usd, 8)
        )
        stats["total"] = self.total
        stats["done"] = self.done_before + counters.ok
        stats["failed_session"] = counters.failed
        stats["duration_s"] = round(float(base.get("duration_before_s") or 0.0) + elapsed, 3)
        stats["session_duration_s"] = round(elapsed, 3)
        stats["throughput_per_s"] = (
            round((counters.ok + counters.failed) / elapsed, 3) if elapsed > 0 else 0.0
        )
        stats["actual_session"] = {
            "requests": counters.sent,
            "input_tokens": counters.input_tokens,
            "output_tokens": counters.output_tokens,
            "cached_tokens": counters.cached_tokens,
            "cost_usd": round(counters.cost_usd, 8) if counters.cost_known else None,
            "seconds": round(elapsed, 3),
        }
        if self.estimate is not None:
            stats["estimate"] = self.estimate.model_dump(mode="json")
        if not final:
            stats["owner"] = {**self.owner, "heartbeat": utcnow().isoformat()}
        return stats

    def _flush(self) -> None:
        """Commit buffered predictions and the run's stats; note whether a cancel was requested."""
        rows, self.buffer = self.buffer, []
        with self.db.session() as session:
            upsert_predictions(self.db, session, rows)
            run = _lock_run(session, self.run_id)
            current = dict(run.stats or {})
            cancel_requested = bool(current.get("cancel_requested"))
            run.stats = {**self._stats(), "cancel_requested": cancel_requested}
        self.last_flush = time.monotonic()
        if cancel_requested and not self.stopping:
            self._stop(RunStatus.cancelled, "cancelled on request")

    def _report_progress(self, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self.last_progress < PROGRESS_INTERVAL_S:
            return
        self.last_progress = now
        counters = self.counters
        elapsed = now - self.started
        handled = counters.ok + counters.failed
        rate = handled / elapsed if elapsed > 0 else 0.0
        remaining = max(0, self.total - self.done_before - handled)
        self.progress(
            JobProgress(
                run_id=self.run_id,
                total=self.total,
                done=self.done_before + counters.ok,
                failed=counters.failed,
                cached=counters.from_cache,
                deduplicated=counters.deduplicated,
                rate_per_s=round(rate, 3),
                eta_s=round(remaining / rate, 2) if rate > 0 else None,
                elapsed_s=round(elapsed, 3),
            )
        )

    # ------------------------------------------------------------------ windows

    def _stored_outcomes(self, chunk: Sequence[TaskInput]) -> dict[str, LabelOutcome]:
        """Successful outcomes this run already stored for content in `chunk` (earlier sessions)."""
        hashes = {t.content_hash for t in chunk} - set(self.recent) - set(self.rep_by_hash)
        if not hashes:
            return {}
        found: dict[str, LabelOutcome] = {}
        with self.db.session() as session:
            rows = session.execute(
                select(Task.content_hash, Prediction)
                .join(Task, Task.id == Prediction.task_id)
                .where(
                    Prediction.run_id == self.run_id,
                    Prediction.error_kind.is_(None),
                    Task.project_id == self.plan.project_id,
                    Task.content_hash.in_(sorted(hashes)),
                )
            ).all()
            for content_hash, prediction in rows:
                found.setdefault(
                    content_hash,
                    LabelOutcome(
                        task_id=prediction.task_id,
                        value=prediction.value,
                        confidence=prediction.confidence,
                        reasoning=prediction.reasoning,
                        examples=prediction.examples,
                    ),
                )
        return found

    def _build_window(self) -> list[TaskInput]:
        window: list[TaskInput] = []
        while len(window) < self.window_size and self.waiting < self.max_waiting:
            if not self.fetched:
                chunk = next(self.chunks, None)
                if chunk is None:
                    self.exhausted = True
                    break
                for content_hash, outcome in self._stored_outcomes(chunk).items():
                    self._remember(content_hash, outcome)
                self.fetched = chunk[::-1]
                continue
            task = self.fetched.pop()
            content_hash = task.content_hash
            if content_hash in self.rep_by_hash:
                self.waiters.setdefault(content_hash, []).append(task)
                self.waiting += 1
            elif content_hash in self.recent:
                self._copy(self.recent[content_hash], task)
            else:
                self.rep_by_hash[content_hash] = task.task_id
                self.reps[task.task_id] = task
                window.append(task)
        return window

    async def _feed(self, tasks: list[TaskInput]) -> None:
        outcomes = self.labeler.label(tasks)
        try:
            async for outcome in outcomes:
                self.queue.put_nowait(outcome)
        finally:
            close = getattr(outcomes, "aclose", None)
            if close is not None:
                await close()

    def _top_up(self) -> None:
        while (
            not self.stopping
            and not self.exhausted
            and len(self.windows) < self.max_windows
            and len(self.reps) < 2 * self.window_size
        ):
            window = self._build_window()
            if not window:
                if self.waiting >= self.max_waiting:
                    return
                continue
            number = self.next_window
            self.next_window += 1
            task = asyncio.create_task(self._feed(window), name=f"labelpilot-window-{number}")
            self.windows[number] = task
            self.window_members[number] = [t.task_id for t in window]
            task.add_done_callback(functools.partial(self._window_done, number))

    def _window_done(self, number: int, task: asyncio.Task[None]) -> None:
        self.queue.put_nowait(_WindowEnd(number, task))

    def _on_window_end(self, end: _WindowEnd) -> None:
        self.windows.pop(end.window, None)
        members = self.window_members.pop(end.window, [])
        # Tasks the labeler never answered stay pending (a resume labels them); so do their duplicates.
        for task_id in members:
            task = self.reps.pop(task_id, None)
            if task is not None:
                self.rep_by_hash.pop(task.content_hash, None)
                self.waiting -= len(self.waiters.pop(task.content_hash, []))
        if not end.task.cancelled() and end.task.exception() is not None and not self.stopping:
            self.error = end.task.exception()
            self._stop(RunStatus.failed, f"the labeler failed: {self.error}")

    def _stop(self, status: RunStatus, message: str) -> None:
        self.stopping = True
        self.stop_status = status
        self.stop_message = message

    async def _stop_windows(self) -> None:
        for task in self.windows.values():
            task.cancel()
        if self.windows:
            await asyncio.gather(*self.windows.values(), return_exceptions=True)
        # Outcomes that completed before the stop are real results: keep them.
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, LabelOutcome):
                self._on_outcome(item)
        self.windows.clear()

    async def pump(self) -> None:
        getter: asyncio.Task[LabelOutcome | _WindowEnd] | None = None
        try:
            while True:
                self._top_up()
                if not self.windows and (self.exhausted or self.stopping):
                    break
                if getter is None:
                    getter = asyncio.ensure_future(self.queue.get())
                timeout = max(0.0, min(0.2, self.commit_seconds - (time.monotonic() - self.last_flush)))
                done, _ = await asyncio.wait({getter}, timeout=timeout)
                if getter in done:
                    item = getter.result()
                    getter = None
                    if isinstance(item, _WindowEnd):
                        self._on_window_end(item)
                    else:
                        self._on_outcome(item)
                if time.monotonic() - self.last_flush >= self.commit_seconds:
                    self._flush()
                if self.cancel is not None and self.cancel.is_set() and not self.stopping:
                    self._stop(RunStatus.cancelled, "cancelled")
                if self.stopping:
                    break
        finally:
            if getter is not None:
                if getter.done() and not getter.cancelled():
                    self.queue.put_nowait(getter.result())
                else:
                    getter.cancel()
            await self._stop_windows()


def _claim(
    db: Database,
    plan: JobPlan,
    *,
    rerun_errors: bool,
    new_run: bool,
    stale_after_s: float,
) -> tuple[int, bool, bool, str]:
    """Find or create the job's run and mark it running.

    Returns (run id, resumed, left finished, owner token); the token is listed as active in this process.
    """
    owner = _owner()
    with db.session() as session:
        # Serialise claims within a project so two processes cannot both create the same job's run
        # (a no-op UPDATE that leaves updated_at alone takes the write/row lock).
        session.execute(
            update(Project)
            .where(Project.id == plan.project_id)
            .values(name=Project.name, updated_at=Project.updated_at),
            execution_options={"synchronize_session": False},
        )
        run: Run | None = None
        if plan.run_id is not None and not new_run:
            run = _lock_run(session, plan.run_id)
        if run is not None:
            status = RunStatus(run.status)
            stats = dict(run.stats or {})
            if status is RunStatus.finished and not rerun_errors:
                return run.id, True, True, ""
            if status is RunStatus.running and owner_alive(stats.get("owner"), stale_after_s=stale_after_s):
                where = stats.get("owner", {})
                raise ConflictError(
                    f"run {run.id} is already running (process {where.get('pid')} on {where.get('host')})",
                    hint=f"wait for it, or stop it with: labelpilot jobs cancel {run.id}",
                )
            stats["duration_before_s"] = stats.get("duration_s", 0.0)
            stats["sessions"] = int(stats.get("sessions") or 0) + 1
            stats.pop("cancel_requested", None)
            stats["owner"] = owner
            run.stats = stats
            run.status = RunStatus.running.value
            run.finished_at = None
            resumed = True
        else:
            info = plan.info
            run = Run(
                project_id=plan.project_id,
                prompt_version_id=info.prompt_version_id,
                kind=plan.kind.value,
                status=RunStatus.running.value,
                model=info.model,
                job_key=plan.key,
                scope=plan.scope.model_dump(mode="json"),
                stats={
                    "labeler": info.model_dump(mode="json"),
                    "sessions": 1,
                    "owner": owner,
                    "cost_usd": 0.0,
                },
            )
            session.add(run)
            session.flush()
            resumed = False
        _ACTIVE_TOKENS.add(owner["token"])
        return run.id, resumed, False, owner["token"]


def _final_counts(db: Database, plan: JobPlan, run_id: int) -> tuple[int, int, dict[str, int], int]:
    """Return (tasks in scope, ok predictions, errors by kind, error predictions) for a run, from SQL."""
    with db.session() as session:
        filters = _scope_filters(session, plan, run_id)
        total = session.scalar(select(func.count()).select_from(Task).where(*filters)) or 0
        ok = session.scalar(select(func.count()).select_from(Task).where(*filters, _ok_in_run(run_id))) or 0
        rows = session.execute(
            select(Prediction.error_kind, func.count())
            .where(Prediction.run_id == run_id, Prediction.error_kind.is_not(None))
            .group_by(Prediction.error_kind)
        ).all()
    by_kind = {str(kind): int(count) for kind, count in rows}
    return total, ok, by_kind, sum(by_kind.values())


async def run_job(
    db: Database,
    project: str | int,
    labeler: Labeler,
    *,
    scope: JobScope | None = None,
    kind: RunKind = RunKind.label,
    progress: Callable[[JobProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    commit_every: int = 50,
    commit_seconds: float = 1.0,
    rerun_errors: bool = False,
    new_run: bool = False,
    run_id: int | None = None,
    estimate: CostEstimate | None = None,
    window_size: int = 128,
    max_windows: int = 8,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> JobReport:
    """Run `labeler` over the tasks of `scope` as a resumable job (see the module docstring).

    Args:
        db: the database holding the project; predictions and the run are written to it.
        project: the project's name or id.
        labeler: any `Labeler` (LLM prompt version, offline baseline, Batch API). One with a `bind_run(run_id)`
            method is told the run it labels for once the run is claimed (the Batch API records it).
        scope: which tasks (default: all of them).
        kind: `label` (bulk) or `eval` (evaluation on ground truth).
        progress: called with a `JobProgress` at most every 0.1 s and once at the end.
        cancel: set it to stop cleanly (in-flight tasks are not stored; a resume labels them).
        commit_every / commit_seconds: commit buffered predictions after this many outcomes / seconds.
        rerun_errors: continue a finished run: retry its errors and label tasks new to its scope.
        new_run: start a new run even when the job has one.
        run_id: continue this run (for `jobs resume ID`) instead of looking the job key up.
        estimate: the cost estimate shown before the run; stored in the run's stats next to the actual use.
        window_size / max_windows: tasks per labeler call, and calls open at most (they bound memory).
        stale_after_s: a run of another host whose heartbeat is older than this counts as interrupted.
    """
    scope = scope or JobScope()
    plan = job_plan(db, project, labeler, scope=scope, kind=kind, run_id=run_id)
    claimed_id, resumed, finished, token = _claim(
        db,
        plan,
        rerun_errors=rerun_errors or run_id is not None,
        new_run=new_run,
        stale_after_s=stale_after_s,
    )
    if finished:
        total, ok, by_kind, errors = _final_counts(db, plan, claimed_id)
        return JobReport(
            run_id=claimed_id,
            job_key=plan.key,
            status=RunStatus.finished,
            resumed=True,
            total=total,
            skipped=ok,
            labeled=0,
            failed=0,
            done_total=ok,
            errors_total=errors,
            failed_by_kind=by_kind,
            message=(
                f"run {claimed_id} already finished ({ok:,} labeled, {errors:,} errors); "
                "retry its errors with rerun_errors, or start over with new_run"
            ),
        )
    plan = dataclasses.replace(plan, run_id=claimed_id, run_status=RunStatus.running)
    bind = getattr(labeler, "bind_run", None)
    if callable(bind):
        bind(claimed_id)
    job = _Job(
        db,
        plan,
        labeler,
        progress=progress,
        cancel=cancel,
        commit_every=commit_every,
        commit_seconds=commit_seconds,
        window_size=window_size,
        max_windows=max_windows,
        estimate=estimate,
    )
    job.run_id = claimed_id
    status = RunStatus.finished
    message = ""
    try:
        with db.session() as session:
            run = session.get(Run, claimed_id)
            assert run is not None
            job.base_stats = dict(run.stats or {})
            job.owner = dict(job.base_stats.get("owner") or {})
        counts = count_scope(db, plan)
        job.total, job.done_before = counts.total, counts.done
        job.chunks = iter_pending_chunks(db, plan, run_id=claimed_id)
        await job.pump()
        if job.stop_status is not None:
            status, message = job.stop_status, job.stop_message
    except asyncio.CancelledError:
        status, message = RunStatus.interrupted, "interrupted"
        raise
    except BaseException as exc:
        status, message = RunStatus.failed, f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _ACTIVE_TOKENS.discard(token)
        report = _finish(db, job, plan, status, message, resumed=resumed)
    if job.error is not None:
        raise job.error
    return report


def _finish(
    db: Database, job: _Job, plan: JobPlan, status: RunStatus, message: str, *, resumed: bool
) -> JobReport:
    """Commit what is buffered, write the final stats and status, and build the report."""
    with db.session() as session:
        upsert_predictions(db, session, job.buffer)
    job.buffer = []
    total, ok, by_kind, errors = _final_counts(db, plan, job.run_id)
    stats = job._stats(final=True)
    stats.pop("owner", None)
    stats.update(
        {
            "total": total,
            "done": ok,
            "failed": errors,
            "failed_by_kind": by_kind,
            "message": message,
        }
    )
    if job.estimate is not None:
        estimate = job.estimate
        actual = stats["actual_session"]
        stats["estimate_vs_actual"] = {
            "requests": [estimate.requests, actual["requests"]],
            "input_tokens": [estimate.input_tokens, actual["input_tokens"]],
            "output_tokens": [
                [estimate.output_tokens_low_total, estimate.output_tokens_high_total],
                actual["output_tokens"],
            ],
            "cost_usd": [[estimate.usd_low, estimate.usd_high], actual["cost_usd"]],
            "seconds": [estimate.seconds, actual["seconds"]],
        }
    with db.session() as session:
        run = _lock_run(session, job.run_id)
        if status is RunStatus.finished and job.counters.failed == 0 and errors:
            message = message or f"{errors:,} task(s) have stored errors from earlier sessions"
        run.status = status.value
        run.finished_at = utcnow() if status is RunStatus.finished else None
        run.stats = stats
    counters = job.counters
    elapsed = time.monotonic() - job.started
    report = JobReport(
        run_id=job.run_id,
        job_key=plan.key,
        status=status,
        resumed=resumed,
        total=total,
        skipped=job.done_before,
        labeled=counters.ok,
        failed=counters.failed,
        failed_by_kind=dict(counters.failed_by_kind),
        from_cache=counters.from_cache,
        deduplicated=counters.deduplicated,
        sent=counters.sent,
        input_tokens=counters.input_tokens,
        output_tokens=counters.output_tokens,
        cached_tokens=counters.cached_tokens,
        cost_usd=round(counters.cost_usd, 8) if counters.cost_known else None,
        duration_s=round(elapsed, 3),
        throughput_per_s=round((counters.ok + counters.failed) / elapsed, 3) if elapsed > 0 else 0.0,
        done_total=ok,
        errors_total=errors,
        message=message,
    )
    job._report_progress(force=True)
    return report


# ---------------------------------------------------------------------------------------------- job control


def _job_info(run: Run) -> JobInfo:
    stats = dict(run.stats or {})
    labeler = stats.get("labeler") or {}
    return JobInfo(
        run_id=run.id,
        kind=run.kind,
        status=_effective_status(run),
        model=run.model,
        labeler=str(labeler.get("kind", "")),
        prompt_version_id=run.prompt_version_id,
        scope=dict(run.scope or {}),
        total=stats.get("total"),
        done=int(stats.get("done") or 0),
        failed=int(stats.get("failed", stats.get("failed_session", 0)) or 0),
        failed_by_kind=dict(stats.get("failed_by_kind") or {}),
        cost_usd=stats.get("cost_usd"),
        cancel_requested=bool(stats.get("cancel_requested")),
        created_at=run.created_at,
        finished_at=run.finished_at,
        stats={k: v for k, v in stats.items() if k != "owner"},
    )


def list_jobs(db: Database, project: str | int) -> list[JobInfo]:
    """Return the label and eval runs of a project, newest first."""
    with db.session() as session:
        row = _project(session, project)
        runs = session.scalars(
            select(Run)
            .where(Run.project_id == row.id, Run.kind.in_([k.value for k in RunKind]))
            .order_by(Run.id.desc())
        ).all()
        return [_job_info(run) for run in runs]


def job_status(db: Database, project: str | int, run_id: int) -> JobInfo:
    """Return one run of a project."""
    with db.session() as session:
        row = _project(session, project)
        run = session.get(Run, run_id)
        if run is None or run.project_id != row.id:
            raise NotFoundError(f"no job {run_id} in project '{row.name}'", hint="see: labelpilot jobs list")
        return _job_info(run)


def cancel_job(db: Database, run_id: int, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> JobInfo:
    """Ask a run to stop. A running engine (any process) sees the flag at its next commit and stops;
    a run nobody is executing is marked cancelled at once. A finished run cannot be cancelled."""
    with db.session() as session:
        if session.get(Run, run_id) is None:
            raise NotFoundError(f"no job {run_id}", hint="see: labelpilot jobs list")
        run = _lock_run(session, run_id)
        if run.status == RunStatus.finished.value:
            raise ConflictError(f"job {run_id} has already finished", hint="nothing to cancel")
        stats = dict(run.stats or {})
        if run.status == RunStatus.running.value and owner_alive(
            stats.get("owner"), stale_after_s=stale_after_s
        ):
            stats["cancel_requested"] = True
            run.stats = stats
        else:
            run.status = RunStatus.cancelled.value
            stats.pop("cancel_requested", None)
            run.stats = stats
        session.flush()
        return _job_info(run)


def scope_of(info: JobInfo) -> JobScope:
    """Return the scope a run was started with."""
    return JobScope.model_validate(info.scope or {})


def labeler_info_of(info: JobInfo) -> LabelerInfo | None:
    """Return the labeler a run was started with (None for runs without one recorded)."""
    data = info.stats.get("labeler")
    return LabelerInfo.model_validate(data) if isinstance(data, dict) else None
