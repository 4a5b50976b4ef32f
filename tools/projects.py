"""Projects: create, find, describe, and set the label schema."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tools.errors import ConflictError, LabelValueError, NotFoundError
from tools.labelspec import LabelSpec
from tools.storage import Annotation, Database, Project, PromptVersion, Run, Task

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,99}$")


class ProjectSummary(BaseModel):
    """What a person sees about a project: sizes, schema and activity."""

    id: int
    name: str
    description: str
    label_spec: dict[str, Any] | None
    task_count: int
    ground_truth_count: int
    prompt_version_count: int
    run_count: int
    created_at: datetime


def validate_project_name(name: str) -> str:
    """Return the trimmed project name or raise a clear error."""
    cleaned = name.strip()
    if not _NAME_RE.match(cleaned):
        raise ConflictError(
            f"'{name}' is not a valid project name",
            hint="use 1-100 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit",
        )
    return cleaned


def get_project(session: Session, name_or_id: str | int) -> Project:
    """Find a project by name (or numeric id) or raise NotFoundError naming the ones that exist."""
    project: Project | None = None
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        project = session.get(Project, int(name_or_id))
    if project is None:
        project = session.scalar(select(Project).where(Project.name == str(name_or_id).strip()))
    if project is None:
        names = session.scalars(select(Project.name).order_by(Project.name)).all()
        known = ", ".join(names) if names else "none yet"
        raise NotFoundError(
            f"no project named '{name_or_id}' (projects: {known})",
            hint="create one with: labelpilot project create NAME",
        )
    return project


def resolve_project_name(db: Database, requested: str | None) -> str:
    """Pick the project a command acts on: the one asked for, else the only one that exists."""
    if requested:
        return requested
    with db.session() as session:
        names = session.scalars(select(Project.name).order_by(Project.name)).all()
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFoundError("there is no project yet", hint="create one with: labelpilot project create NAME")
    raise NotFoundError(
        f"several projects exist ({', '.join(names)}); say which one",
        hint="pass --project NAME or set LABELPILOT_PROJECT",
    )


def load_spec(project: Project) -> LabelSpec | None:
    """Return the project's label schema, or None when it has none yet."""
    if project.label_spec is None:
        return None
    return LabelSpec.model_validate(project.label_spec)


def require_spec(project: Project) -> LabelSpec:
    """Return the project's label schema or explain how to set one."""
    spec = load_spec(project)
    if spec is None:
        raise NotFoundError(
            f"project '{project.name}' has no label schema yet",
            hint="set one with: labelpilot schema set --classes 'A, B, C' (or --config labels.xml)",
        )
    return spec


def _summary(session: Session, project: Project) -> ProjectSummary:
    from tools.groundtruth import latest_annotation_ids

    task_count = session.scalar(select(func.count()).where(Task.project_id == project.id)) or 0
    gt_ids = latest_annotation_ids(project.id)
    gt_count = (
        session.scalar(
            select(func.count())
            .select_from(Annotation)
            .where(Annotation.id.in_(gt_ids), Annotation.deleted.is_(False))
        )
        or 0
    )
    versions = session.scalar(select(func.count()).where(PromptVersion.project_id == project.id))
    runs = session.scalar(select(func.count()).where(Run.project_id == project.id))
    return ProjectSummary(
        id=project.id,
        name=project.name,
        description=project.description,
        label_spec=project.label_spec,
        task_count=task_count,
        ground_truth_count=gt_count,
        prompt_version_count=versions or 0,
        run_count=runs or 0,
        created_at=project.created_at,
    )


def create_project(
    db: Database, name: str, *, description: str = "", spec: LabelSpec | None = None
) -> ProjectSummary:
    """Create a project; its name must be new."""
    cleaned = validate_project_name(name)
    with db.session() as session:
        if session.scalar(select(Project.id).where(Project.name == cleaned)) is not None:
            raise ConflictError(
                f"a project named '{cleaned}' already exists",
                hint="pick another name, or use it with --project",
            )
        project = Project(
            name=cleaned,
            description=description,
            label_spec=spec.model_dump(mode="json") if spec else None,
        )
        session.add(project)
        session.flush()
        return _summary(session, project)


def list_projects(db: Database) -> list[ProjectSummary]:
    """Return every project, by name."""
    with db.session() as session:
        projects = session.scalars(select(Project).order_by(Project.name)).all()
        return [_summary(session, project) for project in projects]


def project_summary(db: Database, name: str) -> ProjectSummary:
    """Return one project's summary."""
    with db.session() as session:
        return _summary(session, get_project(session, name))


def set_label_spec(db: Database, name: str, spec: LabelSpec, *, force: bool = False) -> ProjectSummary:
    """Set (or replace) the label schema; refuse when existing ground truth would no longer fit."""
    from tools.groundtruth import latest_annotations

    with db.session() as session:
        project = get_project(session, name)
        misfits: list[str] = []
        for task, annotation in latest_annotations(session, project.id):
            try:
                spec.validate_value(annotation.value, source_text=_span_source(spec, task))
            except LabelValueError as exc:
                misfits.append(f"{task.external_id}: {exc.message}")
        if misfits and not force:
            shown = "; ".join(misfits[:5])
            raise ConflictError(
                f"{len(misfits)} ground-truth label(s) do not fit the new schema ({shown})",
                hint="change or delete those labels first, or pass --force to keep them as they are",
            )
        project.label_spec = spec.model_dump(mode="json")
        session.flush()
        return _summary(session, project)


def _span_source(spec: LabelSpec, task: Task) -> str | None:
    if spec.span_field is None:
        return None
    value = task.data.get(spec.span_field)
    return value if isinstance(value, str) else None
