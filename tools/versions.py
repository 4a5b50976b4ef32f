"""Prompt versions: immutable, numbered per project, each with a parent link."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tools.errors import NotFoundError
from tools.storage import Database, PromptVersion

DEFAULT_INSTRUCTIONS = "Label the task below with the best matching label."


class FewShotKind(str, Enum):
    """How examples are chosen for the few-shot block of a prompt."""

    none = "none"
    fixed = "fixed"
    nearest = "nearest"
    mmr = "mmr"
    label_diverse = "label_diverse"


class FewShotPolicy(BaseModel):
    """Which examples a prompt shows before the task."""

    kind: FewShotKind = FewShotKind.none
    k: int = Field(default=0, ge=0, le=64)
    example_ids: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(default=None, ge=1)


class PromptConfig(BaseModel):
    """Everything that decides what a labeling request says and to which model."""

    instructions: str = DEFAULT_INSTRUCTIONS
    label_descriptions: dict[str, str] = Field(default_factory=dict)
    few_shot: FewShotPolicy = Field(default_factory=FewShotPolicy)
    model: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    reasoning: bool = False


class VersionInfo(PromptConfig):
    """A stored prompt version."""

    id: int
    number: int
    parent_number: int | None = None
    note: str = ""
    created_at: datetime


def _info(session: Session, row: PromptVersion) -> VersionInfo:
    parent = session.get(PromptVersion, row.parent_id) if row.parent_id else None
    return VersionInfo(
        id=row.id,
        number=row.number,
        parent_number=parent.number if parent else None,
        note=row.note,
        created_at=row.created_at,
        instructions=row.instructions,
        label_descriptions=row.label_descriptions,
        few_shot=FewShotPolicy.model_validate(row.few_shot or {}),
        model=row.model,
        params=row.params,
        reasoning=row.reasoning,
    )


def create_version(
    db: Database,
    project_name: str,
    config: PromptConfig,
    *,
    parent: int | None = None,
    note: str = "",
) -> VersionInfo:
    """Store a new immutable version numbered after the project's newest one."""
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        parent_row = _get_row(session, project.id, parent) if parent is not None else None
        number = (
            session.scalar(
                select(func.max(PromptVersion.number)).where(PromptVersion.project_id == project.id)
            )
            or 0
        ) + 1
        row = PromptVersion(
            project_id=project.id,
            number=number,
            parent_id=parent_row.id if parent_row else None,
            instructions=config.instructions,
            label_descriptions=config.label_descriptions,
            few_shot=config.few_shot.model_dump(mode="json"),
            model=config.model,
            params=config.params,
            reasoning=config.reasoning,
            note=note,
        )
        session.add(row)
        session.flush()
        return _info(session, row)


def _get_row(session: Session, project_id: int, number: int) -> PromptVersion:
    row = session.scalar(
        select(PromptVersion).where(PromptVersion.project_id == project_id, PromptVersion.number == number)
    )
    if row is None:
        numbers = session.scalars(
            select(PromptVersion.number)
            .where(PromptVersion.project_id == project_id)
            .order_by(PromptVersion.number)
        ).all()
        known = ", ".join(f"v{n}" for n in numbers) or "none yet"
        raise NotFoundError(
            f"no prompt version v{number} (versions: {known})",
            hint="create one with: labelpilot prompt create --instructions '...'",
        )
    return row


def get_version(db: Database, project_name: str, number: int | None = None) -> VersionInfo:
    """Return a version by number, or the newest one when number is None."""
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        if number is None:
            number = session.scalar(
                select(func.max(PromptVersion.number)).where(PromptVersion.project_id == project.id)
            )
            if number is None:
                raise NotFoundError(
                    f"project '{project.name}' has no prompt version yet",
                    hint="create one with: labelpilot prompt create --instructions '...'",
                )
        return _info(session, _get_row(session, project.id, number))


def list_versions(db: Database, project_name: str) -> list[VersionInfo]:
    """Return every version of a project, oldest first."""
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        rows = session.scalars(
            select(PromptVersion).where(PromptVersion.project_id == project.id).order_by(PromptVersion.number)
        ).all()
        return [_info(session, row) for row in rows]
