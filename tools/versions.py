"""Prompt versions: immutable, numbered per project, each with a parent link.

Also what is done with them before and after they are stored: deriving a new config from a parent,
validating it against the project's schema and task fields, comparing two versions and previewing the
messages a version sends.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tools.errors import ConfigError, LabelpilotError, LabelSpecError, LabelValueError, NotFoundError
from tools.labelspec import LabelSpec, TaskType
from tools.storage import Database, PromptVersion

#: A `{field}` placeholder in instructions; `{{` and `}}` are literal braces (tools.prompting renders them).
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][\w .-]*)\}")
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
    #: Whether this is the project's current version (the one commands use by default).
    current: bool = False


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
    adopt: bool = False,
) -> VersionInfo:
    """Store a new immutable version numbered after the project's newest one.

    With `adopt` it becomes the project's current version (what commands use by default). Without, it is a
    proposal (an optimizer's winner, tuned baseline settings): the current version stays what it was —
    nothing is adopted without the user (`adopt_version`, `labelpilot prompt use N`).
    """
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        parent_row = _get_row(session, project.id, parent) if parent is not None else None
        newest = session.scalar(
            select(func.max(PromptVersion.number)).where(PromptVersion.project_id == project.id)
        )
        number = (newest or 0) + 1
        if adopt or newest is None:
            # The first version is current by necessity; a proposal never is.
            project.current_version = number if adopt else project.current_version
        elif project.current_version is None:
            # Pin what "the newest" meant until now, so this proposal does not silently take over.
            project.current_version = newest
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
        # Current: the adopted one, or (none adopted yet) the newest, which this one is.
        current = (project.current_version or number) == number
        return _info(session, row).model_copy(update={"current": current})


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
            hint="see them with: labelpilot prompt list"
            if numbers
            else "create one with: labelpilot prompt create --instructions '...'",
        )
    return row


def get_version(db: Database, project_name: str, number: int | None = None) -> VersionInfo:
    """Return a version by number, or the current one when number is None (the newest when none is set)."""
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        if number is None:
            number = project.current_version or session.scalar(
                select(func.max(PromptVersion.number)).where(PromptVersion.project_id == project.id)
            )
            if number is None:
                raise NotFoundError(
                    f"project '{project.name}' has no prompt version yet",
                    hint="create one with: labelpilot prompt create --instructions '...'",
                )
        row = _get_row(session, project.id, number)
        current = project.current_version or session.scalar(
            select(func.max(PromptVersion.number)).where(PromptVersion.project_id == project.id)
        )
        return _info(session, row).model_copy(update={"current": row.number == current})


def current_version_number(db: Database, project_name: str) -> int | None:
    """The number of the version commands use by default (None: the project has no version)."""
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        return project.current_version or session.scalar(
            select(func.max(PromptVersion.number)).where(PromptVersion.project_id == project.id)
        )


def adopt_version(db: Database, project_name: str, number: int) -> VersionInfo:
    """Make a version the project's current one (what label, eval and improve use by default)."""
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        row = _get_row(session, project.id, number)
        project.current_version = row.number
        return _info(session, row).model_copy(update={"current": True})


def list_versions(db: Database, project_name: str) -> list[VersionInfo]:
    """Return every version of a project, oldest first."""
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        rows = session.scalars(
            select(PromptVersion).where(PromptVersion.project_id == project.id).order_by(PromptVersion.number)
        ).all()
        current = project.current_version or (rows[-1].number if rows else None)
        return [_info(session, row).model_copy(update={"current": row.number == current}) for row in rows]


# ---------------------------------------------------------------------- deriving


#: The FewShotPolicy settings each kind reads; the others are ignored by that kind.
FEW_SHOT_SETTINGS: dict[FewShotKind, frozenset[str]] = {
    FewShotKind.none: frozenset(),
    FewShotKind.fixed: frozenset({"example_ids", "max_tokens"}),
    FewShotKind.nearest: frozenset({"k", "max_tokens"}),
    FewShotKind.mmr: frozenset({"k", "max_tokens"}),
    FewShotKind.label_diverse: frozenset({"k", "max_tokens"}),
}


def few_shot_summary(policy: FewShotPolicy) -> str:
    """Return a short text for a few-shot policy, e.g. 'nearest k=8' or 'fixed: 3 examples'."""
    if policy.kind is FewShotKind.none:
        return "none"
    uses = FEW_SHOT_SETTINGS[policy.kind]
    text: str = policy.kind.value
    if "k" in uses:
        text += f" k={policy.k}"
    if "example_ids" in uses:
        text += f": {len(policy.example_ids)} example{'s' if len(policy.example_ids) != 1 else ''}"
    if policy.max_tokens is not None:
        text += f", ≤{policy.max_tokens} tokens"
    return text


def derive_config(base: PromptConfig, **changes: Any) -> PromptConfig:
    """Return a new config: `base`'s settings with `changes` (PromptConfig fields) replacing some.

    `base` (a stored VersionInfo, usually) is never modified; its number, parent and note are not copied.
    """
    unknown = sorted(set(changes) - set(PromptConfig.model_fields))
    if unknown:
        raise TypeError(f"derive_config() got unknown setting(s): {', '.join(unknown)}")
    settings = base.model_dump(include=set(PromptConfig.model_fields))
    return PromptConfig.model_validate({**settings, **changes})


def derive_few_shot(
    base: FewShotPolicy,
    *,
    kind: FewShotKind | None = None,
    k: int | None = None,
    example_ids: Sequence[str] | None = None,
    max_tokens: int | None = None,
) -> FewShotPolicy:
    """Return `base` with the given settings changed.

    Switching to another kind keeps only the settings the new kind reads (nearest -> mmr keeps k;
    fixed -> nearest drops the example ids), so a child does not inherit settings that would be ignored.
    """
    settings = base.model_dump()
    if kind is not None and kind is not base.kind:
        keep = FEW_SHOT_SETTINGS[kind]
        defaults = FewShotPolicy().model_dump()
        settings = {name: value if name in keep else defaults[name] for name, value in settings.items()}
        settings["kind"] = kind
    given = {
        "k": k,
        "example_ids": None if example_ids is None else list(example_ids),
        "max_tokens": max_tokens,
    }
    settings.update({name: value for name, value in given.items() if value is not None})
    return FewShotPolicy.model_validate(settings)


# ---------------------------------------------------------------------- validation


def normalize_config(spec: LabelSpec | None, config: PromptConfig) -> PromptConfig:
    """Return `config` as it would be stored: label descriptions under the schema's own class names
    (matched ignoring case and spaces, a later one winning), empty descriptions dropped (an empty
    description is no description), trailing whitespace of the instructions removed.

    Names that match no class are kept as they are, for `validate_config` to report.
    """
    descriptions: dict[str, str] = {}
    for name, text in config.label_descriptions.items():
        canonical = _canonical_label(spec, name)
        if canonical is None:
            descriptions[name] = text
        elif text.strip():
            descriptions[canonical] = text.strip()
        else:
            descriptions.pop(canonical, None)
    return config.model_copy(
        update={"instructions": config.instructions.rstrip(), "label_descriptions": descriptions}
    )


def _canonical_label(spec: LabelSpec | None, name: str) -> str | None:
    """The schema's name for `name`; `name` itself without a schema; None when no class matches."""
    if spec is None:
        return name
    if not spec.classes:
        return None
    try:
        return spec.match_class(name)
    except LabelValueError:
        return None


def validate_config(
    spec: LabelSpec | None, config: PromptConfig, *, fields: Sequence[str] | None = None
) -> list[str]:
    """Check a prompt config before it is stored; raise for what would break labeling, return warnings.

    `spec` is the project's label schema (None: not set yet, labels are not checked) and `fields` the input
    fields its tasks have (None: unknown, placeholders are not checked). Raises ConfigError for empty
    instructions or an unusable few-shot policy, and LabelSpecError for what does not fit the schema or the
    data (the errors `tools.prompting` would raise at labeling time): a `{placeholder}` naming no field, a
    description of a label the schema does not have. Placeholders are read exactly as `tools.prompting`
    renders them: `{{`/`}}` are literal braces and other text in braces (a JSON example) is left alone,
    so an unmatched brace is only a warning.
    """
    from tools.prompting import placeholders

    if not config.instructions.strip():
        raise ConfigError(
            "the instructions are empty",
            hint="say what to label and how, e.g. --instructions 'Classify the topic of the article.'",
        )
    warnings: list[str] = []
    names = placeholders(config.instructions)
    if names and fields is not None:
        unknown = [name for name in names if name not in fields]
        if unknown:
            listed = ", ".join(f"'{name}'" for name in fields) or "none"
            raise LabelSpecError(
                f"the instructions refer to {', '.join('{' + name + '}' for name in unknown)}, but the "
                f"project's tasks have no such field (their fields: {listed})",
                hint="write placeholders as {field} with a task field name; write {{ and }} for literal braces",
            )
    elif names:
        warnings.append(
            f"placeholders {', '.join('{' + name + '}' for name in names)} were not checked: the project "
            "has no tasks yet (labeling fails for tasks without such a field)"
        )
    unmatched = _unmatched_braces(config.instructions)
    if unmatched:
        warnings.append(
            f"the instructions have an unmatched brace ({unmatched}); it is sent as it is. Write "
            "{field} for a placeholder, or {{ and }} for literal braces"
        )
    warnings += _check_descriptions(spec, config)
    warnings += _check_few_shot(config.few_shot)
    return warnings


def _unmatched_braces(instructions: str) -> str | None:
    """Describe the first brace (outside `{{`, `}}` and placeholders) that has no partner, if any."""
    # Blank out what the renderer substitutes, keeping offsets, then pair the braces that are left.
    text = PLACEHOLDER.sub(lambda match: " " * len(match.group(0)), instructions)
    opened: list[int] = []
    for offset, char in enumerate(text):
        if char == "{":
            opened.append(offset)
        elif char == "}":
            if not opened:
                return _where("}", instructions, offset)
            opened.pop()
    return _where("{", instructions, opened[0]) if opened else None


def _where(char: str, text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"'{char}' at line {line}, column {column}"


def _check_descriptions(spec: LabelSpec | None, config: PromptConfig) -> list[str]:
    if spec is None:
        if config.label_descriptions:
            return ["the project has no label schema yet: the label descriptions were not checked"]
        return []
    if config.label_descriptions and not spec.classes:
        raise LabelSpecError(
            f"the prompt describes the label(s) {', '.join(map(repr, config.label_descriptions))}, but a "
            f"{spec.type.value} schema has no labels to describe",
            hint="describe the expected answer in the instructions instead",
        )
    for name in config.label_descriptions:
        try:
            spec.match_class(name)
        except LabelValueError as exc:
            raise LabelSpecError(
                f"cannot describe a label the schema does not have: {exc.message}",
                hint="describe only the schema's labels (see: labelpilot schema show)",
            ) from None
    if spec.type not in (TaskType.single_choice, TaskType.multi_choice, TaskType.spans):
        return []
    described = any(c.description for c in spec.classes) or any(
        text.strip() for text in config.label_descriptions.values()
    )
    instructions = " ".join(config.instructions.split()).casefold()
    mentioned = any(" ".join(name.split()).casefold() in instructions for name in spec.class_names())
    if not described and not mentioned:
        return [
            "the instructions name none of the labels and no label has a description: the model sees only "
            "the bare label names (describe them, e.g. --describe 'Label=what it means')"
        ]
    return []


def _check_few_shot(policy: FewShotPolicy) -> list[str]:
    uses = FEW_SHOT_SETTINGS[policy.kind]
    if policy.kind is FewShotKind.fixed and not policy.example_ids:
        raise ConfigError(
            "the few-shot policy 'fixed' lists no examples",
            hint="name the example tasks, e.g. --examples t12,t40,t77 (or choose another --few-shot)",
        )
    if "k" in uses and policy.k == 0:
        raise ConfigError(
            f"the few-shot policy '{policy.kind.value}' would choose k=0 examples",
            hint="say how many examples to show, e.g. --k 8 (or --few-shot none)",
        )
    defaults = FewShotPolicy()
    ignored = [
        name
        for name in ("k", "example_ids", "max_tokens")
        if name not in uses and getattr(policy, name) != getattr(defaults, name)
    ]
    if ignored:
        return [f"the few-shot policy '{policy.kind.value}' ignores its setting(s): {', '.join(ignored)}"]
    return []


class NewVersion(BaseModel):
    """A version just stored, with the warnings its validation gave."""

    version: VersionInfo
    warnings: list[str] = Field(default_factory=list)


def validate_and_create(
    db: Database,
    project_name: str,
    config: PromptConfig,
    *,
    parent: int | None = None,
    note: str = "",
    adopt: bool = False,
) -> NewVersion:
    """Normalize and validate `config` against the project's schema and task fields, then store it.

    Nothing is stored when validation fails. Warns when the settings equal the parent's. With `adopt` the
    new version becomes the current one (see `create_version`).
    """
    from tools.exporters import read_columns
    from tools.projects import get_project, load_spec

    with db.session() as session:
        project = get_project(session, project_name)
        spec = load_spec(project)
        fields = [key for _, key in read_columns(session, project.id, predictions=False).data]
    config = normalize_config(spec, config)
    warnings = validate_config(spec, config, fields=fields or None)
    if parent is not None:
        parent_info = get_version(db, project_name, parent)
        if derive_config(parent_info) == config:
            warnings.append(f"the settings are the same as v{parent}'s (only the note tells them apart)")
    info = create_version(db, project_name, config, parent=parent, note=note, adopt=adopt)
    return NewVersion(version=info, warnings=warnings)


# ---------------------------------------------------------------------- comparing


class SettingChange(BaseModel):
    """One setting that differs between two versions; None where a version does not have it."""

    field: str
    before: Any = None
    after: Any = None


class VersionDiff(BaseModel):
    """What changed from version `a` to version `b`."""

    a: int
    b: int
    #: Unified diff lines of the instructions (empty when they are equal).
    instructions_diff: list[str]
    #: Every other changed setting, in a fixed order (the note is not a setting).
    changes: list[SettingChange]
    identical: bool


def diff_versions(a: VersionInfo, b: VersionInfo) -> VersionDiff:
    """Compare two versions: a unified diff of the instructions and a list of changed settings."""
    lines = list(
        difflib.unified_diff(
            a.instructions.splitlines(),
            b.instructions.splitlines(),
            fromfile=f"v{a.number}",
            tofile=f"v{b.number}",
            n=3,
            lineterm="",
        )
    )
    changes: list[SettingChange] = []

    def compare(field: str, before: Any, after: Any) -> None:
        # As JSON, the way requests are fingerprinted: 1 and true (== in Python) are different settings.
        if json.dumps(before, sort_keys=True) != json.dumps(after, sort_keys=True):
            changes.append(SettingChange(field=field, before=before, after=after))

    for label in _union(a.label_descriptions, b.label_descriptions):
        compare(
            f"label_descriptions.{label}", a.label_descriptions.get(label), b.label_descriptions.get(label)
        )
    before_policy, after_policy = a.few_shot.model_dump(mode="json"), b.few_shot.model_dump(mode="json")
    for name in FewShotPolicy.model_fields:
        compare(f"few_shot.{name}", before_policy[name], after_policy[name])
    compare("model", a.model, b.model)
    for name in _union(a.params, b.params):
        compare(f"params.{name}", a.params.get(name), b.params.get(name))
    compare("reasoning", a.reasoning, b.reasoning)
    return VersionDiff(
        a=a.number, b=b.number, instructions_diff=lines, changes=changes, identical=not lines and not changes
    )


def _union(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """The keys of both, the first's order first."""
    return list(dict.fromkeys([*first, *second]))


# ---------------------------------------------------------------------- preview


class PreviewMessage(BaseModel):
    """One chat message of a preview; role is system, user or assistant."""

    role: str
    content: str


class Preview(BaseModel):
    """The messages a version sends for one of the project's tasks (or why there are none)."""

    task_id: str | None = None
    messages: list[PreviewMessage] | None = None
    #: Why there is no preview, or what it leaves out.
    note: str | None = None


_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def preview_messages(db: Database, project_name: str, version: PromptConfig) -> Preview:
    """Render the messages `version` would send for the project's first task (few-shot examples left out)."""
    from tools.llm import OutputMode
    from tools.projects import get_project, load_spec
    from tools.prompting import render_messages
    from tools.storage import Task

    with db.session() as session:
        project = get_project(session, project_name)
        spec = load_spec(project)
        task = session.scalar(select(Task).where(Task.project_id == project.id).order_by(Task.id).limit(1))
        task_id, data = (task.external_id, dict(task.data)) if task is not None else (None, {})
    if spec is None:
        return Preview(note="no preview: the project has no label schema yet")
    if task_id is None:
        return Preview(note="no preview: the project has no tasks yet")
    try:
        messages = render_messages(spec, version, data, mode=OutputMode.json_schema)
    except LabelpilotError as exc:
        return Preview(task_id=task_id, note=f"no preview: {exc.message}")
    note = None
    if version.few_shot.kind is not FewShotKind.none:
        note = f"few-shot examples ({few_shot_summary(version.few_shot)}) are chosen per task and not shown"
    return Preview(
        task_id=task_id,
        messages=[PreviewMessage(role=_ROLES.get(m.type, m.type), content=m.text) for m in messages],
        note=note,
    )
