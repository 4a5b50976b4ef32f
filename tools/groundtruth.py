"""Ground truth: choose tasks worth labeling, record labels with history, and measure coverage."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tools.errors import LabelValueError, NotFoundError
from tools.labelspec import LabelSpec, TaskType
from tools.storage import Annotation, Database, Task


class AnnotationSource(str, Enum):
    """Where a ground-truth label came from."""

    human = "human"
    cli = "cli"
    chat = "chat"
    import_ = "import"
    review = "review"


class TaskView(BaseModel):
    """A task as shown to a person or a tool: ids, inputs, and its current ground truth."""

    id: int
    external_id: str
    data: dict[str, Any]
    meta: dict[str, Any] = {}
    ground_truth: Any = None


class AnnotationRecord(BaseModel):
    """One entry of a task's label history."""

    task: str
    value: Any
    display: str
    deleted: bool
    author: str
    source: str
    created_at: datetime


class ClassCoverage(BaseModel):
    """How many ground-truth labels a class has."""

    label: str
    count: int


class Coverage(BaseModel):
    """How much of a project has ground truth, per class."""

    task_count: int
    labeled_count: int
    classes: list[ClassCoverage]
    missing_classes: list[str]


def latest_annotation_ids(project_id: int) -> Select[int]:
    """Return a query of the newest annotation id per task of a project (deleted rows included)."""
    return (
        select(func.max(Annotation.id))
        .where(Annotation.project_id == project_id)
        .group_by(Annotation.task_id)
    )


def latest_annotations(
    session: Session, project_id: int, *, task_ids: Sequence[int] | None = None
) -> list[tuple[Task, Annotation]]:
    """Return (task, current label) for every task whose newest annotation is not a deletion."""
    query = (
        select(Task, Annotation)
        .join(Annotation, Annotation.task_id == Task.id)
        .where(Annotation.id.in_(latest_annotation_ids(project_id)), Annotation.deleted.is_(False))
        .order_by(Task.id)
    )
    if task_ids is not None:
        query = query.where(Task.id.in_(list(task_ids)))
    return [(task, annotation) for task, annotation in session.execute(query)]


def current_labels(session: Session, project_id: int) -> dict[int, Any]:
    """Return {task id: current ground-truth value} for a project."""
    return {task.id: ann.value for task, ann in latest_annotations(session, project_id)}


def find_task(session: Session, project_id: int, ref: str | int) -> Task:
    """Find a task by external id (or '#<row id>') or raise NotFoundError."""
    text = str(ref).strip()
    task: Task | None = None
    if text.startswith("#") and text[1:].isdigit():
        task = session.get(Task, int(text[1:]))
        if task is not None and task.project_id != project_id:
            task = None
    if task is None:
        task = session.scalar(select(Task).where(Task.project_id == project_id, Task.external_id == text))
    if task is None:
        raise NotFoundError(
            f"no task '{ref}' in this project",
            hint="task ids are shown by 'labelpilot gt sample' and in exports (column 'id')",
        )
    return task


def source_text_for(spec: LabelSpec, task: Task) -> str | None:
    """Return the text that span offsets refer to, for span schemas."""
    if spec.type is not TaskType.spans:
        return None
    field = spec.span_field or (spec.input_fields[0] if spec.input_fields else None)
    if field is None and len(task.data) == 1:
        field = next(iter(task.data))
    value = task.data.get(field) if field else None
    return value if isinstance(value, str) else None


def newest_annotation(session: Session, task_id: int) -> Annotation | None:
    """Return a task's newest annotation row (a deletion included), or None when it never had one."""
    return session.scalar(
        select(Annotation).where(Annotation.task_id == task_id).order_by(Annotation.id.desc()).limit(1)
    )


def record_label(
    session: Session,
    *,
    task: Task,
    spec: LabelSpec,
    value: Any,
    author: str,
    source: AnnotationSource | str,
) -> Annotation | None:
    """Validate and append a label for a task; return None when it equals the current one."""
    canonical = spec.validate_value(value, source_text=source_text_for(spec, task))
    current = newest_annotation(session, task.id)
    if current is not None and not current.deleted and current.value == canonical:
        return None
    annotation = Annotation(
        project_id=task.project_id,
        task_id=task.id,
        value=canonical,
        deleted=False,
        author=author,
        source=AnnotationSource(source).value,
    )
    session.add(annotation)
    session.flush()
    return annotation


def set_label(
    db: Database,
    project_name: str,
    task_ref: str,
    value: Any,
    *,
    author: str = "",
    source: AnnotationSource = AnnotationSource.cli,
    parse: bool = True,
) -> AnnotationRecord:
    """Record (or change) the ground-truth label of one task; text values are parsed with the schema."""
    from tools.projects import get_project, require_spec

    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project)
        task = find_task(session, project.id, task_ref)
        if parse and isinstance(value, str):
            # Spans typed without offsets (or without their text) are placed in the task's source text.
            value = spec.parse_text(value, source_text=source_text_for(spec, task))
        record_label(session, task=task, spec=spec, value=value, author=author, source=source)
        return history(session, task, spec)[-1]


def delete_label(db: Database, project_name: str, task_ref: str, *, author: str = "") -> AnnotationRecord:
    """Remove the ground-truth label of one task (kept in its history as a deletion)."""
    from tools.projects import get_project, require_spec

    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project)
        task = find_task(session, project.id, task_ref)
        current = newest_annotation(session, task.id)
        if current is None or current.deleted:
            raise NotFoundError(f"task '{task.external_id}' has no ground-truth label to delete")
        session.add(
            Annotation(
                project_id=project.id,
                task_id=task.id,
                value=None,
                deleted=True,
                author=author,
                source=AnnotationSource.cli.value,
            )
        )
        session.flush()
        return history(session, task, spec)[-1]


def history(session: Session, task: Task, spec: LabelSpec) -> list[AnnotationRecord]:
    """Return a task's label history, oldest first."""
    rows = session.scalars(
        select(Annotation).where(Annotation.task_id == task.id).order_by(Annotation.id)
    ).all()
    return [
        AnnotationRecord(
            task=task.external_id,
            value=row.value,
            display="(deleted)" if row.deleted else spec.display(row.value),
            deleted=row.deleted,
            author=row.author,
            source=row.source,
            created_at=row.created_at,
        )
        for row in rows
    ]


def task_history(db: Database, project_name: str, task_ref: str) -> list[AnnotationRecord]:
    """Return the label history of one task."""
    from tools.projects import get_project, require_spec

    with db.session() as session:
        project = get_project(session, project_name)
        return history(session, find_task(session, project.id, task_ref), require_spec(project))


def labels_of(spec: LabelSpec, value: Any) -> list[str]:
    """Return the class names a value counts toward (for coverage and stratification)."""
    if value is None:
        return []
    if spec.type is TaskType.multi_choice:
        return [str(item) for item in value]
    if spec.type is TaskType.spans:
        return sorted({str(item["label"]) for item in value})
    return [str(value)]


def coverage(db: Database, project_name: str) -> Coverage:
    """Count ground-truth labels per class."""
    from tools.projects import get_project, require_spec

    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project)
        task_count = session.scalar(select(func.count()).where(Task.project_id == project.id)) or 0
        counts: Counter[str] = Counter()
        labeled = 0
        for _task, annotation in latest_annotations(session, project.id):
            labeled += 1
            counts.update(labels_of(spec, annotation.value))
    names = spec.choices()
    ordered = [ClassCoverage(label=name, count=counts.get(name, 0)) for name in names]
    ordered += [ClassCoverage(label=name, count=count) for name, count in counts.items() if name not in names]
    return Coverage(
        task_count=task_count,
        labeled_count=labeled,
        classes=ordered,
        missing_classes=[c.label for c in ordered if c.count == 0 and c.label in names],
    )


# ---------------------------------------------------------------- sampling


class SampleStrategy(str, Enum):
    """How `sample` chooses tasks to label."""

    random = "random"
    stratified = "stratified"
    diverse = "diverse"


#: An embedder turns texts into L2-normalised row vectors (see tools.embeddings).
EmbedFn = Callable[[Sequence[str]], np.ndarray]

#: Largest candidate pool the diverse strategy embeds; beyond it a random pool is drawn first.
DIVERSE_POOL = 2000


def _task_text(task: Task) -> str:
    return "\n".join(str(value) for value in task.data.values())


def _column_value(task: Task, column: str) -> str:
    if column in task.meta:
        return str(task.meta[column])
    if column in task.data:
        return str(task.data[column])
    raise LabelValueError(
        f"task '{task.external_id}' has no column '{column}' to stratify by",
        hint="stratify by a column kept at import (any column that was not an input field, id or label)",
    )


def _sample_random(
    session: Session, candidates: list[int], n: int, rng: random.Random, **_: Any
) -> list[int]:
    return rng.sample(candidates, min(n, len(candidates)))


def _sample_stratified(
    session: Session,
    candidates: list[int],
    n: int,
    rng: random.Random,
    *,
    column: str | None = None,
    **_: Any,
) -> list[int]:
    if not column:
        raise LabelValueError(
            "stratified sampling needs a column", hint="pass --column NAME (e.g. a source or category)"
        )
    strata: dict[str, list[int]] = defaultdict(list)
    for chunk_start in range(0, len(candidates), 5000):
        chunk = candidates[chunk_start : chunk_start + 5000]
        for task in session.scalars(select(Task).where(Task.id.in_(chunk))):
            strata[_column_value(task, column)].append(task.id)
    for members in strata.values():
        members.sort()
        rng.shuffle(members)
    # Round-robin over strata (largest first) gives every stratum a share before any gets two.
    order = sorted(strata, key=lambda key: (-len(strata[key]), key))
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n and any(depth < len(strata[key]) for key in order):
        for key in order:
            if depth < len(strata[key]) and len(chosen) < n:
                chosen.append(strata[key][depth])
        depth += 1
    return chosen


def _sample_diverse(
    session: Session,
    candidates: list[int],
    n: int,
    rng: random.Random,
    *,
    embed: EmbedFn | None = None,
    **_: Any,
) -> list[int]:
    if embed is None:
        from tools.embeddings import get_embedder

        embed = get_embedder().embed
    pool = rng.sample(candidates, min(DIVERSE_POOL, len(candidates)))
    pool.sort()
    tasks = {task.id: task for task in session.scalars(select(Task).where(Task.id.in_(pool)))}
    vectors = np.asarray(embed([_task_text(tasks[task_id]) for task_id in pool]), dtype=np.float32)
    # Farthest-first traversal: start near the centroid, then repeatedly take the task least
    # similar to everything chosen so far.
    centroid = vectors.mean(axis=0)
    first = int(np.argmax(vectors @ centroid))
    chosen = [first]
    closest = vectors @ vectors[first]
    while len(chosen) < min(n, len(pool)):
        closest[chosen] = np.inf
        nxt = int(np.argmin(closest))
        chosen.append(nxt)
        closest = np.maximum(closest, vectors @ vectors[nxt])
    return [pool[index] for index in chosen]


SAMPLERS: dict[SampleStrategy, Callable[..., list[int]]] = {
    SampleStrategy.random: _sample_random,
    SampleStrategy.stratified: _sample_stratified,
    SampleStrategy.diverse: _sample_diverse,
}


def sample_tasks(
    db: Database,
    project_name: str,
    n: int,
    *,
    strategy: SampleStrategy = SampleStrategy.random,
    column: str | None = None,
    seed: int = 0,
    include_labeled: bool = False,
    embed: EmbedFn | None = None,
) -> list[TaskView]:
    """Choose up to n tasks worth labeling (unlabeled ones unless include_labeled)."""
    from tools.projects import get_project

    if n < 1:
        raise LabelValueError(f"the sample size must be at least 1, not {n}")
    with db.session() as session:
        project = get_project(session, project_name)
        labels = current_labels(session, project.id)
        all_ids = session.scalars(
            select(Task.id).where(Task.project_id == project.id).order_by(Task.id)
        ).all()
        candidates = [tid for tid in all_ids if include_labeled or tid not in labels]
        if not candidates:
            return []
        rng = random.Random(seed)
        chosen = SAMPLERS[strategy](session, candidates, n, rng, column=column, embed=embed)
        tasks = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(chosen)))}
        return [
            TaskView(
                id=tid,
                external_id=tasks[tid].external_id,
                data=tasks[tid].data,
                meta=tasks[tid].meta,
                ground_truth=labels.get(tid),
            )
            for tid in chosen
        ]


# ---------------------------------------------------------------- interactive labeling


class LabelingSession:
    """A queue of tasks a person labels one by one, with skip and undo (used by the CLI and the chat)."""

    def __init__(
        self,
        db: Database,
        project_name: str,
        tasks: Sequence[TaskView],
        *,
        author: str,
        source: AnnotationSource = AnnotationSource.human,
    ) -> None:
        self.db = db
        self.project_name = project_name
        self.tasks = list(tasks)
        self.author = author
        self.source = source
        self.position = 0
        self.labeled = 0
        self.skipped = 0
        # Each step remembers (position, previous value or None, whether it was a label or a skip).
        self._steps: list[tuple[int, Any, bool]] = []

    @property
    def done(self) -> bool:
        """Whether every task in the queue has been labeled or skipped."""
        return self.position >= len(self.tasks)

    @property
    def current(self) -> TaskView | None:
        """The task waiting for a label, if any."""
        return None if self.done else self.tasks[self.position]

    def progress(self) -> str:
        """Return e.g. '7 / 20'."""
        return f"{min(self.position + 1, len(self.tasks))} / {len(self.tasks)}"

    def label(self, value: Any) -> AnnotationRecord:
        """Label the current task and move on (text values are parsed with the schema)."""
        task = self.current
        if task is None:
            raise NotFoundError("every task in this session is done")
        record = set_label(
            self.db, self.project_name, f"#{task.id}", value, author=self.author, source=self.source
        )
        self._steps.append((self.position, task.ground_truth, True))
        task.ground_truth = record.value
        self.position += 1
        self.labeled += 1
        return record

    def skip(self) -> None:
        """Leave the current task unlabeled and move on."""
        if self.done:
            raise NotFoundError("every task in this session is done")
        self._steps.append((self.position, None, False))
        self.position += 1
        self.skipped += 1

    def undo(self) -> TaskView:
        """Go back one step, restoring the label the task had before it (or none)."""
        if not self._steps:
            raise NotFoundError("nothing to undo yet")
        position, previous, was_label = self._steps.pop()
        task = self.tasks[position]
        if was_label:
            if previous is None:
                delete_label(self.db, self.project_name, f"#{task.id}", author=self.author)
            else:
                set_label(
                    self.db,
                    self.project_name,
                    f"#{task.id}",
                    previous,
                    author=self.author,
                    source=self.source,
                    parse=False,
                )
            task.ground_truth = previous
            self.labeled -= 1
        else:
            self.skipped -= 1
        self.position = position
        return task
