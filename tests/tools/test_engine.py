"""The bulk engine with a scripted labeler (no HTTP): resume, upserts, de-duplication, commits, cancel, progress."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from tools.engine import (
    JobProgress,
    JobScope,
    RunKind,
    RunStatus,
    ScopeKind,
    cancel_job,
    count_scope,
    job_key,
    job_plan,
    job_status,
    list_jobs,
    run_job,
)
from tools.errors import ConflictError, ErrorKind
from tools.groundtruth import set_label
from tools.labelers import LabelerInfo, LabelerKind, LabelOutcome, TaskInput
from tools.labelspec import LabelSpec
from tools.projects import create_project
from tools.storage import Database, Prediction, Run, Task

SPEC = LabelSpec.from_classes(["Sports", "World", "Business"], input_fields=["text"])
CLASSES = ["Sports", "World", "Business"]


class Boom(RuntimeError):
    """The scripted labeler's crash."""


class ScriptedLabeler:
    """A labeler that answers the last word of the text, can fail tasks, crash, and records what it saw."""

    def __init__(
        self,
        *,
        fail: Callable[[TaskInput], ErrorKind | None] | None = None,
        crash_after: int | None = None,
        delay: float = 0.0,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.fail = fail
        self.crash_after = crash_after
        self.delay = delay
        self.identity = identity or {"version": 1}
        self.given: list[int] = []  # task ids handed to label()
        self.answered: list[int] = []  # task ids an outcome was yielded for
        self.window_sizes: list[int] = []
        self.open_windows = 0
        self.peak_open_windows = 0

    @property
    def info(self) -> LabelerInfo:
        return LabelerInfo(kind=LabelerKind.baseline, model="scripted", identity=self.identity)

    async def label(self, tasks: Sequence[TaskInput]) -> AsyncIterator[LabelOutcome]:
        self.window_sizes.append(len(tasks))
        self.given.extend(t.task_id for t in tasks)
        self.open_windows += 1
        self.peak_open_windows = max(self.peak_open_windows, self.open_windows)
        try:
            for task in tasks:
                if self.delay:
                    await asyncio.sleep(self.delay)
                else:
                    await asyncio.sleep(0)
                if self.crash_after is not None and len(self.answered) >= self.crash_after:
                    raise Boom("the labeler crashed")
                kind = self.fail(task) if self.fail else None
                self.answered.append(task.task_id)
                if kind is not None:
                    yield LabelOutcome(task_id=task.task_id, error_kind=kind, error_message=f"{kind.value}!")
                else:
                    word = str(task.data["text"]).split()[-1]
                    yield LabelOutcome(task_id=task.task_id, value=word, confidence=0.9, cost_usd=0.001)
        finally:
            self.open_windows -= 1


def add_tasks(db: Database, texts: Sequence[str], *, project_id: int = 1) -> list[int]:
    with db.session() as session:
        rows = [
            Task(
                project_id=project_id,
                external_id=f"t{i}",
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                data={"text": text},
            )
            for i, text in enumerate(texts)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def texts(n: int, *, distinct: int | None = None) -> list[str]:
    distinct = distinct or n
    return [f"item {i % distinct} is about {CLASSES[(i % distinct) % 3]}" for i in range(n)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request: pytest.FixtureRequest) -> Iterator[Database]:
    """The engine's SQL (upserts, locks) on both backends."""
    name = "db" if request.param == "sqlite" else "pg_db"
    yield request.getfixturevalue(name)


@pytest.fixture
def project(db: Database) -> str:
    create_project(db, "news", spec=SPEC)
    return "news"


def predictions(db: Database, run_id: int) -> list[Prediction]:
    with db.session() as session:
        return list(
            session.scalars(
                select(Prediction).where(Prediction.run_id == run_id).order_by(Prediction.task_id)
            )
        )


def run_row(db: Database, run_id: int) -> Run:
    with db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


# ---------------------------------------------------------------------- the basics


async def test_labels_every_task_once_and_finishes(any_db: Database) -> None:
    create_project(any_db, "news", spec=SPEC)
    ids = add_tasks(any_db, texts(120))
    labeler = ScriptedLabeler()
    report = await run_job(any_db, "news", labeler, commit_every=10, window_size=32)
    assert (report.status, report.resumed, report.total, report.labeled, report.failed) == (
        RunStatus.finished,
        False,
        120,
        120,
        0,
    )
    rows = predictions(any_db, report.run_id)
    assert [p.task_id for p in rows] == ids
    assert all(p.value in CLASSES and p.error_kind is None for p in rows)
    run = run_row(any_db, report.run_id)
    assert run.status == "finished" and run.finished_at is not None and run.kind == "label"
    assert run.stats["done"] == 120 and run.stats["failed"] == 0 and "owner" not in run.stats
    assert run.stats["cost_usd"] == pytest.approx(0.12)
    assert sorted(labeler.given) == ids


async def test_resume_retries_errors_with_an_update_never_a_second_row(any_db: Database) -> None:
    create_project(any_db, "news", spec=SPEC)
    ids = add_tasks(any_db, texts(40))
    flaky = set(ids[::4])
    first = ScriptedLabeler(fail=lambda t: ErrorKind.server_error if t.task_id in flaky else None)
    report = await run_job(any_db, "news", first, commit_every=7)
    assert (report.labeled, report.failed, report.failed_by_kind) == (30, 10, {"server_error": 10})
    before = {p.task_id: p.id for p in predictions(any_db, report.run_id)}
    assert len(before) == 40

    # A finished run is not run again by default...
    healthy = ScriptedLabeler()
    again = await run_job(any_db, "news", healthy)
    assert again.run_id == report.run_id and again.status is RunStatus.finished and again.labeled == 0
    assert "already finished" in again.message and healthy.given == []
    # ... but retrying its errors updates exactly those rows.
    retried = await run_job(any_db, "news", healthy, rerun_errors=True)
    assert retried.run_id == report.run_id and retried.resumed
    assert sorted(healthy.given) == sorted(flaky)
    assert (retried.skipped, retried.labeled, retried.failed) == (30, 10, 0)
    rows = predictions(any_db, report.run_id)
    assert {p.task_id: p.id for p in rows} == before  # same rows, updated in place
    assert all(p.error_kind is None and p.error_message is None for p in rows)
    assert run_row(any_db, report.run_id).stats["failed"] == 0


async def test_crash_keeps_what_was_committed_and_a_rerun_completes_without_duplicates(
    db: Database, project: str
) -> None:
    ids = add_tasks(db, texts(300, distinct=200))
    crashing = ScriptedLabeler(crash_after=90)
    with pytest.raises(Boom):
        await run_job(db, project, crashing, commit_every=20, window_size=40)
    run = list_jobs(db, project)[0]
    assert run.status == "failed" and "crashed" in run.stats["message"]
    stored = predictions(db, run.run_id)
    assert 90 <= len(stored) < 300 and all(p.error_kind is None for p in stored)
    done_hashes = {h for (h,) in _hashes(db, [p.task_id for p in stored])}

    rerun = ScriptedLabeler()
    report = await run_job(db, project, rerun, window_size=40)
    assert report.run_id == run.run_id and report.resumed and report.status is RunStatus.finished
    final = predictions(db, run.run_id)
    assert [p.task_id for p in final] == ids  # exactly one prediction per task
    assert set(rerun.given).isdisjoint(p.task_id for p in stored)
    # Content labeled before the crash is copied, not sent again.
    assert not {h for (h,) in _hashes(db, rerun.given)} & done_hashes
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 1


def _hashes(db: Database, task_ids: Sequence[int]) -> list[tuple[str]]:
    with db.session() as session:
        return [(h,) for h in session.scalars(select(Task.content_hash).where(Task.id.in_(list(task_ids))))]


async def test_a_run_left_running_by_a_dead_process_is_resumed(db: Database, project: str) -> None:
    add_tasks(db, texts(20))
    labeler = ScriptedLabeler(crash_after=8)
    with pytest.raises(Boom):
        await run_job(db, project, labeler, commit_every=1)
    run_id = list_jobs(db, project)[0].run_id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status = "running"
        run.stats = {**run.stats, "owner": {"host": os.uname().nodename, "pid": dead.pid, "token": "x"}}
    assert job_status(db, project, run_id).status == "interrupted"
    report = await run_job(db, project, ScriptedLabeler())
    assert report.run_id == run_id and report.resumed and (report.skipped, report.labeled) == (8, 12)


async def test_a_run_owned_by_a_live_process_is_not_taken_over(db: Database, project: str) -> None:
    add_tasks(db, texts(5))
    with pytest.raises(Boom):
        await run_job(db, project, ScriptedLabeler(crash_after=1))
    run_id = list_jobs(db, project)[0].run_id
    with db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status = "running"
        run.stats = {**run.stats, "owner": {"host": os.uname().nodename, "pid": os.getppid(), "token": "y"}}
    with pytest.raises(ConflictError, match="already running"):
        await run_job(db, project, ScriptedLabeler())
    assert job_status(db, project, run_id).status == "running"


# ---------------------------------------------------------------------- de-duplication


async def test_identical_content_is_sent_once_and_copied(db: Database, project: str) -> None:
    ids = add_tasks(db, texts(90, distinct=10))
    labeler = ScriptedLabeler()
    report = await run_job(db, project, labeler, window_size=4)
    assert len(labeler.given) == 10
    assert (report.labeled, report.deduplicated, report.sent) == (90, 80, 10)
    rows = predictions(db, report.run_id)
    assert [p.task_id for p in rows] == ids
    by_text = {}
    with db.session() as session:
        for task in session.scalars(select(Task)):
            by_text.setdefault(task.data["text"], set()).add(
                next(p.value for p in rows if p.task_id == task.id)
            )
    assert all(len(values) == 1 for values in by_text.values())
    copies = [p for p in rows if p.task_id not in labeler.given]
    assert all(p.cost_usd == 0.0 and p.input_tokens is None for p in copies)


async def test_an_error_is_copied_to_duplicates_and_all_are_retried(db: Database, project: str) -> None:
    add_tasks(db, texts(6, distinct=2))
    bad = ScriptedLabeler(fail=lambda t: ErrorKind.timeout)
    report = await run_job(db, project, bad)
    assert (report.failed, report.deduplicated) == (6, 4) and len(bad.given) == 2
    good = ScriptedLabeler()
    retried = await run_job(db, project, good, rerun_errors=True)
    assert (retried.labeled, len(good.given)) == (6, 2)


# ---------------------------------------------------------------------- commits, cancel and progress


async def test_predictions_are_committed_in_small_batches_while_running(db: Database, project: str) -> None:
    add_tasks(db, texts(200))
    seen: list[int] = []

    def watch(progress: JobProgress) -> None:
        with db.session() as session:
            seen.append(session.scalar(select(func.count()).select_from(Prediction)) or 0)

    await run_job(db, project, ScriptedLabeler(delay=0.001), commit_every=25, progress=watch)
    assert seen[-1] == 200
    assert any(0 < count < 200 for count in seen)  # visible to another reader before the end
    assert all(count % 25 == 0 for count in seen[:-1])


async def test_cancel_stops_cleanly_and_a_resume_finishes(db: Database, project: str) -> None:
    ids = add_tasks(db, texts(200))
    cancel = asyncio.Event()

    def stop_at_50(progress: JobProgress) -> None:
        if progress.done >= 50:
            cancel.set()

    labeler = ScriptedLabeler(delay=0.002)
    report = await run_job(db, project, labeler, cancel=cancel, progress=stop_at_50, window_size=16)
    assert report.status is RunStatus.cancelled and 50 <= report.labeled < 200
    stored = {p.task_id for p in predictions(db, report.run_id)}
    assert stored == set(labeler.answered)  # what was in flight is not stored
    assert list_jobs(db, project)[0].status == "cancelled"

    rest = ScriptedLabeler()
    resumed = await run_job(db, project, rest)
    assert resumed.status is RunStatus.finished and resumed.skipped == len(stored)
    assert set(rest.given) == set(ids) - stored
    assert [p.task_id for p in predictions(db, report.run_id)] == ids


async def test_cancel_job_from_another_process_is_seen_at_the_next_commit(db: Database, project: str) -> None:
    add_tasks(db, texts(300))
    requested: list[int] = []

    def cancel_from_outside(progress: JobProgress) -> None:
        if progress.done >= 40 and not requested:
            requested.append(progress.run_id)
            info = cancel_job(db, progress.run_id)  # writes the flag, as `labelpilot jobs cancel` does
            assert info.cancel_requested and info.status == "running"

    report = await run_job(
        db, project, ScriptedLabeler(delay=0.002), progress=cancel_from_outside, commit_seconds=0.05
    )
    assert report.status is RunStatus.cancelled and report.labeled < 300
    info = job_status(db, project, report.run_id)
    assert info.status == "cancelled" and not info.cancel_requested


def test_cancel_job_of_an_idle_or_finished_run(db: Database, project: str) -> None:
    add_tasks(db, texts(3))
    report = asyncio.run(run_job(db, project, ScriptedLabeler()))
    with pytest.raises(ConflictError, match="already finished"):
        cancel_job(db, report.run_id)
    with db.session() as session:
        run = session.get(Run, report.run_id)
        assert run is not None
        run.status = "failed"
    assert cancel_job(db, report.run_id).status == "cancelled"


async def test_progress_reports_totals_rate_and_eta(db: Database, project: str) -> None:
    ids = add_tasks(db, texts(60))
    failing = set(ids[:6])
    reports: list[JobProgress] = []
    labeler = ScriptedLabeler(
        fail=lambda t: ErrorKind.invalid_output if t.task_id in failing else None, delay=0.005
    )
    await run_job(db, project, labeler, progress=reports.append)
    last = reports[-1]
    assert (last.total, last.done, last.failed, last.cached) == (60, 54, 6, 0)
    assert last.rate_per_s > 0 and last.eta_s == 0
    assert all(r.total == 60 for r in reports)
    assert [r.done for r in reports] == sorted(r.done for r in reports)
    middle = [r for r in reports if 0 < r.done < 54]
    assert middle and all(r.eta_s is not None for r in middle) and (middle[0].eta_s or 0) > 0


async def test_an_auth_error_stops_the_job(db: Database, project: str) -> None:
    add_tasks(db, texts(500))
    labeler = ScriptedLabeler(fail=lambda t: ErrorKind.auth, delay=0.001)
    report = await run_job(db, project, labeler, window_size=16)
    assert report.status is RunStatus.failed and "refused" in report.message
    assert report.failed < 500


# ---------------------------------------------------------------------- memory and scopes


async def test_tasks_are_fed_in_bounded_windows(db: Database, project: str) -> None:
    add_tasks(db, texts(2000))
    labeler = ScriptedLabeler()
    report = await run_job(db, project, labeler, window_size=50, max_windows=2)
    assert report.labeled == 2000
    assert max(labeler.window_sizes) == 50 and labeler.peak_open_windows <= 2


async def test_a_slow_task_does_not_hold_up_the_other_windows(db: Database, project: str) -> None:
    ids = add_tasks(db, texts(400))
    slow = ids[0]

    class OneSlowTask(ScriptedLabeler):
        """Task `slow` answers only after every other task did (like a long retry chain), or after 10 s."""

        others_done_first = False

        async def label(self, tasks: Sequence[TaskInput]) -> AsyncIterator[LabelOutcome]:
            async for outcome in super().label([t for t in tasks if t.task_id != slow]):
                yield outcome
            if any(t.task_id == slow for t in tasks):
                for _ in range(1000):
                    if len(self.answered) == 399:
                        self.others_done_first = True
                        break
                    await asyncio.sleep(0.01)
                yield LabelOutcome(task_id=slow, value="World")

    labeler = OneSlowTask()
    report = await run_job(db, project, labeler, window_size=20, max_windows=4)
    assert labeler.others_done_first and report.labeled == 400
    assert labeler.peak_open_windows <= 4 and max(labeler.window_sizes) <= 20


async def test_peak_memory_does_not_grow_with_the_number_of_tasks(db: Database, project: str) -> None:
    import tracemalloc

    async def peak(n: int, name: str) -> int:
        create_project(db, name, spec=SPEC)
        add_tasks(db, [f"{name} {t}" for t in texts(n)], project_id=_project_id(db, name))
        tracemalloc.start()
        tracemalloc.reset_peak()
        await run_job(db, name, ScriptedLabeler(), window_size=64)
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small = await peak(1200, "small")
    large = await peak(4800, "large")
    assert large < small * 2, (small, large)


def _project_id(db: Database, name: str) -> int:
    from tools.projects import get_project

    with db.session() as session:
        return get_project(session, name).id


async def test_scopes_limit_ground_truth_and_explicit_ids(db: Database, project: str) -> None:
    ids = add_tasks(db, texts(30))
    for task in ("t3", "t5", "t7"):
        set_label(db, project, task, "Sports")
    labeler = ScriptedLabeler()
    gt = await run_job(db, project, labeler, scope=JobScope(kind=ScopeKind.ground_truth), kind=RunKind.eval)
    assert gt.total == 3 and sorted(labeler.given) == [ids[3], ids[5], ids[7]]
    assert run_row(db, gt.run_id).kind == "eval"

    first = await run_job(db, project, ScriptedLabeler(), scope=JobScope(limit=10))
    assert first.total == 10 and [p.task_id for p in predictions(db, first.run_id)] == ids[:10]

    chosen = await run_job(
        db, project, ScriptedLabeler(), scope=JobScope(kind=ScopeKind.task_ids, task_ids=[ids[20], ids[2]])
    )
    assert chosen.total == 2

    rest = ScriptedLabeler()
    unlabeled = await run_job(db, project, rest, scope=JobScope(kind=ScopeKind.unlabeled))
    # Neither the first 10 (the limit run) nor the chosen ones; the eval run does not count.
    assert unlabeled.total == 19 and set(rest.given) == set(ids[10:]) - {ids[20]}
    plan = job_plan(db, project, rest, scope=JobScope(kind=ScopeKind.unlabeled))
    assert count_scope(db, plan).done == 19  # the run's own labels stay in its scope

    with pytest.raises(ValueError):
        JobScope(kind=ScopeKind.task_ids)
    assert JobScope(kind=ScopeKind.task_ids, task_ids=[3, 1, 3]).task_ids == [1, 3]


def test_job_key_is_stable_and_separates_jobs() -> None:
    info = LabelerInfo(kind=LabelerKind.llm, model="m", identity={"a": 1, "b": [1, 2]})
    same = LabelerInfo(kind=LabelerKind.llm, model="m", identity={"b": [1, 2], "a": 1})
    key = job_key(1, info, RunKind.label, JobScope())
    assert key == job_key(1, same, RunKind.label, JobScope())
    assert len(key) == 64 and key == "".join(c for c in key if c in "0123456789abcdef")
    others = {
        job_key(2, info, RunKind.label, JobScope()),
        job_key(1, info, RunKind.eval, JobScope()),
        job_key(1, info, RunKind.label, JobScope(limit=5)),
        job_key(1, info.model_copy(update={"model": "n"}), RunKind.label, JobScope()),
        job_key(
            1,
            LabelerInfo(kind=LabelerKind.llm, model="m", identity={"a": 2, "b": [1, 2]}),
            RunKind.label,
            JobScope(),
        ),
    }
    assert key not in others and len(others) == 5
    # Pinned: a change here would orphan every stored run (they could no longer be resumed).
    assert job_key(1, info, RunKind.label, JobScope()) == key


async def test_new_run_starts_over_and_jobs_are_listed(db: Database, project: str) -> None:
    add_tasks(db, texts(10))
    first = await run_job(db, project, ScriptedLabeler())
    second = await run_job(db, project, ScriptedLabeler(), new_run=True)
    assert second.run_id != first.run_id and second.labeled == 10 and not second.resumed
    jobs = list_jobs(db, project)
    assert [j.run_id for j in jobs] == [second.run_id, first.run_id]
    assert jobs[0].done == 10 and jobs[0].status == "finished" and jobs[0].labeler == "baseline"
    counts = Counter(p.task_id for p in predictions(db, first.run_id) + predictions(db, second.run_id))
    assert set(counts.values()) == {2}
