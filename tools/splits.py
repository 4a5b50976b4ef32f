"""Ground-truth splits: train (example pool, error mining), dev (choosing between prompts), test (the report).

A task's split is stored in its `meta["split"]` and never changes once given (unless reset), so an item
cannot wander from test into the example pool as ground truth grows. New ground-truth items are assigned
stratified by label: within each label they are ordered by a seeded hash of their external id, and each goes
to the split furthest below its target share of that label. The same seed and the same items give the same
splits on any machine.

Small splits are flagged: the summary states how wide a 95% interval on accuracy would be, so nobody trusts
a 3-point difference measured on 20 items.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from tools.errors import ConfigError, LabelpilotError, NotFoundError
from tools.labelspec import LabelSpec, TaskType
from tools.storage import Database, Task

#: The 95% normal quantile.
Z95 = 1.959963984540054
#: A split whose worst-case 95% interval on accuracy is wider than this (in points, both sides) is flagged.
TRUST_WIDTH = 0.20
DEFAULT_RATIOS = (0.6, 0.2, 0.2)


class Split(str, Enum):
    """The three ground-truth splits."""

    train = "train"
    dev = "dev"
    test = "test"


class SplitCounts(BaseModel):
    """How many ground-truth items a split holds, in all and per label."""

    split: Split
    items: int
    per_label: dict[str, int] = Field(default_factory=dict)
    #: Width of a 95% Wilson interval on an accuracy of 50% with this many items (the widest case).
    interval_width: float | None


class SplitSummary(BaseModel):
    """The splits of a project's ground truth after an assignment (or as they are)."""

    project: str
    seed: int | None
    ratios: dict[str, float]
    assigned_now: int
    unassigned: int
    splits: list[SplitCounts]
    warnings: list[str] = Field(default_factory=list)


def interval_width(n: int, p: float = 0.5) -> float | None:
    """Return the width of the 95% Wilson interval of a proportion `p` measured on `n` items."""
    if n <= 0:
        return None
    z2 = Z95 * Z95
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return 2 * half


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ConfigError(
            f"split ratios must be three non-negative numbers (train, dev, test), got {list(ratios)}",
            hint="for example --ratios 0.6,0.2,0.2",
        )
    total = float(sum(ratios))
    train, dev, test = (r / total for r in ratios)
    return train, dev, test


def stratum(spec: LabelSpec, value: Any) -> str:
    """The label an item is stratified by (the class for choices; one stratum for other types)."""
    if spec.type in (TaskType.single_choice, TaskType.pairwise, TaskType.rating):
        return str(value)
    if spec.type is TaskType.multi_choice and isinstance(value, list):
        return "|".join(sorted(str(v) for v in value)) or "(none)"
    if spec.type is TaskType.spans and isinstance(value, list):
        return "|".join(sorted({str(s.get("label")) for s in value if isinstance(s, dict)})) or "(none)"
    return "*"


def _order_key(seed: int, external_id: str) -> str:
    return hashlib.sha256(f"{seed}:{external_id}".encode()).hexdigest()


def _gt_tasks(db: Database, project_name: str) -> tuple[str, LabelSpec, list[tuple[Task, Any]]]:
    from tools.groundtruth import current_labels
    from tools.projects import get_project, require_spec

    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project)
        labels = current_labels(session, project.id)
        tasks = session.scalars(select(Task).where(Task.id.in_(list(labels))).order_by(Task.id)).all()
        session.expunge_all()
        return project.name, spec, [(task, labels[task.id]) for task in tasks]


def assign_splits(
    db: Database,
    project_name: str,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    reset: bool = False,
) -> SplitSummary:
    """Give every ground-truth item without a split one (all of them with `reset`), stratified by label."""
    shares = dict(zip(Split, _check_ratios(ratios), strict=True))
    name, spec, items = _gt_tasks(db, project_name)
    if not items:
        raise NotFoundError(
            f"project '{name}' has no ground truth to split",
            hint="label some items first: labelpilot gt label",
        )
    by_stratum: dict[str, list[tuple[Task, Any]]] = defaultdict(list)
    for task, value in items:
        by_stratum[stratum(spec, value)].append((task, value))
    assigned: dict[int, Split] = {}
    for members in by_stratum.values():
        counts: Counter[Split] = Counter()
        fresh: list[Task] = []
        for task, _ in members:
            current = None if reset else _split_of(task)
            if current is None:
                fresh.append(task)
            else:
                counts[current] += 1
        fresh.sort(key=lambda t: _order_key(seed, t.external_id))
        total = len(members)
        for task in fresh:
            # The split furthest below its share of this label; ties go train → dev → test.
            choice = max(Split, key=lambda s: (shares[s] * total - counts[s], -list(Split).index(s)))
            if shares[choice] == 0:
                choice = max(Split, key=lambda s: shares[s])
            counts[choice] += 1
            assigned[task.id] = choice
    if assigned:
        with db.session() as session:
            for task in session.scalars(select(Task).where(Task.id.in_(list(assigned)))):
                task.meta = {**(task.meta or {}), "split": assigned[task.id].value, "split_seed": seed}
    return split_summary(db, name, assigned_now=len(assigned), seed=seed, ratios=shares)


def _split_of(task: Task) -> Split | None:
    found = (task.meta or {}).get("split")
    try:
        return Split(found) if found is not None else None
    except ValueError:
        return None


def split_summary(
    db: Database,
    project_name: str,
    *,
    assigned_now: int = 0,
    seed: int | None = None,
    ratios: dict[Split, float] | None = None,
) -> SplitSummary:
    """Count the ground truth per split and label; warn about splits too small to trust."""
    name, spec, items = _gt_tasks(db, project_name)
    per: dict[Split, Counter[str]] = {s: Counter() for s in Split}
    unassigned = 0
    seeds: set[int] = set()
    for task, value in items:
        split = _split_of(task)
        if split is None:
            unassigned += 1
            continue
        found_seed = (task.meta or {}).get("split_seed")
        if isinstance(found_seed, int):
            seeds.add(found_seed)
        for label in _labels(spec, value):
            per[split][label] += 1
    sizes = {s: sum(1 for t, _ in items if _split_of(t) is s) for s in Split}
    counts = [
        SplitCounts(split=s, items=sizes[s], per_label=dict(per[s]), interval_width=interval_width(sizes[s]))
        for s in Split
    ]
    warnings: list[str] = []
    if unassigned:
        warnings.append(
            f"{unassigned:,} ground-truth item(s) have no split yet: run `labelpilot gt split` to assign them"
        )
    for entry in counts:
        if entry.split is Split.train:
            continue
        width = entry.interval_width
        if entry.items and width is not None and width > TRUST_WIDTH:
            warnings.append(
                f"the {entry.split.value} split has only {entry.items} item(s): a 95% interval on accuracy "
                f"is up to ±{width / 2:.0%} wide there, so small differences mean nothing; label more items"
            )
    if seed is None and len(seeds) == 1:
        seed = seeds.pop()
    total = sum(sizes.values())
    shown = ratios or {s: (sizes[s] / total if total else 0.0) for s in Split}
    return SplitSummary(
        project=name,
        seed=seed,
        ratios={s.value: round(r, 4) for s, r in shown.items()},
        assigned_now=assigned_now,
        unassigned=unassigned,
        splits=counts,
        warnings=warnings,
    )


def _labels(spec: LabelSpec, value: Any) -> list[str]:
    from tools.groundtruth import labels_of

    found = labels_of(spec, value)
    return found or ["*"]


def split_task_ids(db: Database, project_name: str, split: Split | str) -> list[int]:
    """Return the ids of the ground-truth tasks in a split (an error when splits were never assigned)."""
    try:
        wanted = Split(split)
    except ValueError:
        raise LabelpilotError(
            f"unknown split '{split}'", hint="use one of: " + ", ".join(s.value for s in Split)
        ) from None
    name, _, items = _gt_tasks(db, project_name)
    if not any(_split_of(task) is not None for task, _ in items):
        raise NotFoundError(
            f"project '{name}' has no splits yet", hint="assign them with: labelpilot gt split"
        )
    return [task.id for task, _ in items if _split_of(task) is wanted]
