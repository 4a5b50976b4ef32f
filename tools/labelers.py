"""What every labeler (an LLM prompt version, the offline baseline) offers the bulk engine and evaluation.

A labeler turns tasks into outcomes. Failures of one task are data (`error_kind`/`error_message`), never
exceptions, so a job always goes on. The engine owns persistence, resume, caching and progress; a labeler
owns only how one batch of tasks gets its labels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from enum import Enum
from typing import Any, Protocol

from pydantic import BaseModel, Field

from tools.errors import ErrorKind


class LabelerKind(str, Enum):
    """Families of labelers."""

    llm = "llm"
    baseline = "baseline"


class TaskInput(BaseModel):
    """One task as a labeler sees it."""

    task_id: int
    external_id: str
    data: dict[str, Any]
    content_hash: str


class LabelOutcome(BaseModel):
    """A labeler's result for one task: a value, or an error stored as data."""

    task_id: int
    value: Any = None
    confidence: float | None = None
    reasoning: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    #: External ids of the examples shown to the model (few-shot) or used as neighbours.
    examples: list[str] | None = None
    #: Whether the answer came from the response cache (no request was sent).
    from_cache: bool = False

    @property
    def ok(self) -> bool:
        """Whether the task got a value."""
        return self.error_kind is None


class LabelerInfo(BaseModel):
    """How a labeler identifies itself in runs, job keys and exports."""

    kind: LabelerKind
    model: str
    #: Everything that changes the answers (prompt version id, parameters, example-store state ...);
    #: it is hashed into the job key, so the same labeler on the same scope resumes the same run.
    identity: dict[str, Any] = Field(default_factory=dict)
    prompt_version_id: int | None = None


class Labeler(Protocol):
    """The interface the bulk engine and evaluation use."""

    @property
    def info(self) -> LabelerInfo:
        """Kind, model and identity of this labeler."""
        ...

    def label(self, tasks: Sequence[TaskInput]) -> AsyncIterator[LabelOutcome]:
        """Label tasks, yielding one outcome per task as each completes (in any order)."""
        ...
