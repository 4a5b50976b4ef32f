"""Services the tool adapters share: which labeler runs, the review queue, and jobs run in the background.

`labeler_for` is the one place that chooses a labeler (the CLI uses it too): the LLM labeler of a prompt
version when a model is configured, else the offline baseline (with the policy a tuned version stores).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import exists, select

from tools.engine import JobReport
from tools.errors import ConfigError
from tools.ratelimit import RateLimits
from tools.settings import Settings
from tools.storage import Database, Prediction, PromptVersion, Run

logger = logging.getLogger(__name__)

#: Seconds a job gets to store what it finished when the turn that waits for it is cancelled.
CANCEL_GRACE_S = 10.0


# ---------------------------------------------------------------------------------------------- labelers


#: The `model` (and params key) of prompt versions that hold tuned offline-baseline settings.
BASELINE_MODEL = "baseline"


def labeler_for(
    db: Database,
    settings: Settings,
    project_name: str,
    *,
    version: int | None,
    rate_limits: RateLimits,
    http_async_client: Any = None,
    baseline: bool | None = None,
    version_id: int | None = None,
    model: str | None = None,
    few_shot_k: int | None = None,
    created_by: str = "the chat agent to label",
) -> tuple[Any, list[str]]:
    """Return the labeler a job runs and notes for the person (the one place that makes this choice).

    The LLM labeler of a prompt version (`version`, else the current one; `version_id` for a job resumed
    with the version it started with) when a model is configured — a project without versions gets v1 with
    default instructions — else the offline baseline, with the policy a tuned version stores. `baseline`
    forces the choice (a resumed job keeps the labeler it started with); `model` overrides the version's,
    and `few_shot_k` its number of examples (0 turns them off; the chat's settings panel sets both).
    """
    from tools.llm import is_configured
    from tools.projects import get_project, require_spec
    from tools.versions import PromptConfig, create_version, get_version, list_versions

    notes: list[str] = []
    with db.session() as session:
        spec = require_spec(get_project(session, project_name))
    if baseline is None:
        baseline = not is_configured(settings)
    if baseline:
        from tools.baseline import BaselineLabeler, supports

        if not is_configured(settings):
            notes.append("no model is configured: labeling with the offline baseline (embeddings, no LLM)")
        if not supports(spec):
            raise ConfigError(
                "no model configured: set OPENAI_API_KEY or OPENAI_BASE_URL "
                f"(the offline baseline cannot label {spec.type.value} tasks)",
                hint="OPENAI_BASE_URL may point at a local OpenAI-compatible server (vLLM, Ollama, llama.cpp)",
            )
        tuned = _tuned_baseline(db, project_name, version, version_id)
        if tuned is None:
            return BaselineLabeler(db, project_name), notes
        options, note = tuned
        notes.append(note)
        return BaselineLabeler(db, project_name, **options), notes
    from tools.llm import ModelSettings
    from tools.llm_labeler import LLMLabeler

    versions = list_versions(db, project_name)
    if version_id is not None:
        found = next((v for v in versions if v.id == version_id), None)
        if found is None:
            raise ConfigError(f"the prompt version (id {version_id}) of this job no longer exists")
        info = found
    elif not versions and version is None:
        info = create_version(db, project_name, PromptConfig(), note=f"created by {created_by}", adopt=True)
        notes.append(f"the project had no prompt version: created v{info.number} with default instructions")
    else:
        info = get_version(db, project_name, version)
    # A version holding tuned baseline settings (model "baseline") names no LLM: the configured model labels.
    llm_model = info.model if info.model and info.model != BASELINE_MODEL else None
    identity: dict[str, Any] = {}
    if few_shot_k is not None and few_shot_k != info.few_shot.k:
        info = with_few_shot_k(info, few_shot_k)
        # The version's id stays in the identity; the changed policy must be in it too (a different job).
        identity["few_shot_override"] = info.few_shot.model_dump(mode="json")
        notes.append(f"{few_shot_k} few-shot example(s) per item, from the chat settings")
    params = {key: value for key, value in info.params.items() if key != BASELINE_MODEL}
    model_settings = ModelSettings.from_settings(settings, model=model or llm_model, params=params)
    # Few-shot examples come from the example store, synced with the ground truth now; the pool's
    # fingerprint joins the labeler's identity, so a job whose examples changed is a new job.
    examples = _few_shot_examples(db, settings, project_name, info, model_settings.model)
    if examples is not None:
        notes.extend(examples.notes)
    labeler = LLMLabeler(
        settings,
        spec,
        info,
        model_settings=model_settings,
        rate_limits=rate_limits,
        db=db,
        http_async_client=http_async_client,
        examples_for=examples,
        identity_extra={**identity, **(examples.identity() if examples is not None else {})} or None,
    )
    return labeler, notes


def with_few_shot_k(info: Any, k: int) -> Any:
    """A copy of a prompt version that shows `k` examples (nearest ones when it had no policy; 0: none)."""
    from tools.versions import FewShotKind, FewShotPolicy

    kind = info.few_shot.kind
    if k == 0:
        kind = FewShotKind.none
    elif kind is FewShotKind.none:
        kind = FewShotKind.nearest
    policy = FewShotPolicy(
        kind=kind, k=k, example_ids=info.few_shot.example_ids, max_tokens=info.few_shot.max_tokens
    )
    return info.model_copy(update={"few_shot": policy})


def _tuned_baseline(
    db: Database, project_name: str, version: int | None, version_id: int | None = None
) -> tuple[dict[str, Any], str] | None:
    """The baseline policy a tuned prompt version stores, as labeler options and a note (None: defaults)."""
    try:
        from evals.tune_baseline import tuned_config
    except ImportError:  # an installation without baseline tuning labels with the defaults
        return None
    tuned = tuned_config(db, project_name, version=version, version_id=version_id)
    if tuned is None:
        return None
    policy, source = tuned
    return (
        policy.labeler_options(),
        f"the baseline uses the policy tuned in v{source.number}: {policy.summary()}",
    )


def _few_shot_examples(db: Database, settings: Settings, project_name: str, info: Any, model: str) -> Any:
    """The few-shot example source of a version (None without a few-shot policy or an example store)."""
    try:
        from tools.examples import examples_for_version
    except ImportError:  # an installation without the example store labels without examples
        return None
    return examples_for_version(db, settings, project_name, info, model=model)


def eval_labeler(
    db: Database,
    settings: Settings,
    project_name: str,
    *,
    version: int | None,
    baseline: bool,
    split: str | None,
    rate_limits: RateLimits,
    http_async_client: Any = None,
    model: str | None = None,
    few_shot_k: int | None = None,
) -> tuple[Any, list[str]]:
    """Return the labeler an evaluation runs: the baseline (learning from the train split only when
    evaluating another split) when asked or when no model is configured, else `labeler_for`'s LLM labeler."""
    from tools.llm import is_configured

    if not baseline and is_configured(settings):
        return labeler_for(
            db,
            settings,
            project_name,
            version=version,
            rate_limits=rate_limits,
            http_async_client=http_async_client,
            baseline=False,
            model=model,
            few_shot_k=few_shot_k,
        )
    from tools.baseline import BaselineLabeler, supports
    from tools.groundtruth import current_labels
    from tools.projects import get_project, require_spec
    from tools.splits import split_task_ids

    notes = [] if baseline else ["no model is configured: evaluating the offline baseline"]
    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project)
        labels = current_labels(session, project.id) if split not in (None, "train") else {}
    if not supports(spec):
        raise ConfigError(
            f"the offline baseline cannot label {spec.type.value} tasks",
            hint="configure a model (OPENAI_API_KEY or OPENAI_BASE_URL) to evaluate prompt versions",
        )
    examples = None
    if split not in (None, "train"):
        train = set(split_task_ids(db, project_name, "train"))
        examples = {task_id: value for task_id, value in labels.items() if task_id in train}
        notes.append(f"the baseline learns from the train split only ({len(examples):,} items)")
    return BaselineLabeler(db, project_name, examples=examples), notes


def drop_empty_project(db: Database, name: str) -> None:
    """Delete a project that has no tasks (one created for an import that then failed)."""
    from tools.projects import get_project
    from tools.storage import Task

    with db.session() as session:
        project = get_project(session, name)
        if session.scalar(select(Task.id).where(Task.project_id == project.id).limit(1)) is None:
            session.delete(project)


# ---------------------------------------------------------------------------------------------- review


class ReviewItem(BaseModel):
    """A prediction waiting for a person: the task, what the labeler said and how sure it was."""

    task: str
    data: dict[str, Any]
    prediction: Any
    display: str
    confidence: float | None
    run_id: int
    model_version: str


def newest_label_run(db: Database, project_name: str) -> tuple[int, str] | None:
    """The newest bulk-labeling run of a project that has predictions: (run id, model version)."""
    from tools.projects import get_project

    with db.session() as session:
        project = get_project(session, project_name)
        found = session.execute(
            select(Run.id, Run.model, PromptVersion.number)
            .outerjoin(PromptVersion, PromptVersion.id == Run.prompt_version_id)
            .where(
                Run.project_id == project.id,
                Run.kind == "label",
                exists().where(Prediction.run_id == Run.id),
            )
            .order_by(Run.id.desc())
            .limit(1)
        ).first()
    if found is None:
        return None
    run_id, model, number = found
    return run_id, f"v{number}" if number is not None else model or f"run-{run_id}"


def review_queue(
    db: Database, project_name: str, *, limit: int = 10, max_confidence: float | None = None
) -> tuple[list[ReviewItem], int]:
    """Predictions of the newest labeling run that nobody has checked, least confident first.

    Items with ground truth are left out (a person already decided); a prediction without a confidence
    counts as doubtful. Returns the first `limit` items and how many are waiting in all.
    """
    from tools.exporters import SelectedRun, iter_rows
    from tools.projects import get_project, require_spec

    newest = newest_label_run(db, project_name)
    if newest is None:
        from tools.errors import NotFoundError

        raise NotFoundError(
            "there is nothing to review: no labeling run has predictions yet",
            hint="label the project first (start labeling), then review the doubtful items",
        )
    run_id, model_version = newest
    waiting: list[ReviewItem] = []
    with db.session() as session:
        project = get_project(session, project_name)
        spec = require_spec(project)
        for row in iter_rows(session, project.id, run=SelectedRun(id=run_id, model_version=model_version)):
            prediction = row.prediction
            if row.ground_truth is not None or prediction is None or prediction.value is None:
                continue
            if max_confidence is not None and (
                prediction.confidence is not None and prediction.confidence > max_confidence
            ):
                continue
            waiting.append(
                ReviewItem(
                    task=row.external_id,
                    data=row.data,
                    prediction=prediction.value,
                    display=spec.display(prediction.value),
                    confidence=prediction.confidence,
                    run_id=run_id,
                    model_version=model_version,
                )
            )
    waiting.sort(key=lambda item: (-1.0 if item.confidence is None else item.confidence, item.task))
    return waiting[:limit], len(waiting)


# ---------------------------------------------------------------------------------------------- jobs


@dataclass
class _Running:
    task: asyncio.Task[JobReport]
    cancel: asyncio.Event


class JobRunner:
    """Bulk jobs started from the chat that outlive the turn that started them (in this process's loop).

    The engine persists progress, so `job_status` reads the database and works from any process; this
    registry only keeps the asyncio tasks alive and lets a cancel reach an in-process job at once.
    """

    def __init__(self) -> None:
        self._running: dict[int, _Running] = {}

    async def start(
        self,
        work: Callable[[asyncio.Event, Callable[[Any], None]], Awaitable[JobReport]],
        *,
        wait_s: float | None,
        find_run_id: Callable[[], int | None],
    ) -> tuple[JobReport | None, int | None]:
        """Start `work(cancel, progress)`; return (report, run id) when it ends within `wait_s` seconds,
        else (None, run id) and keep it running. Its errors are raised when it ends in time."""
        cancel = asyncio.Event()
        seen: dict[str, int] = {}

        def progress(event: Any) -> None:
            seen.setdefault("run_id", int(event.run_id))

        task = asyncio.ensure_future(work(cancel, progress))
        try:
            done, _ = await asyncio.wait({task}, timeout=wait_s)
        except asyncio.CancelledError:
            # The turn was cancelled (Ctrl-C): stop the job cleanly so it can be resumed, then give up.
            cancel.set()
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
            if not task.done():
                task.cancel()
            raise
        if task in done:
            report = task.result()
            return report, report.run_id
        run_id = seen.get("run_id") or find_run_id()
        if run_id is None:  # not claimed yet: wait for the claim, which comes first in run_job
            await asyncio.sleep(0.2)
            run_id = seen.get("run_id") or find_run_id()
        if run_id is not None:
            self._running[run_id] = _Running(task=task, cancel=cancel)
        task.add_done_callback(lambda finished: self._forget(run_id, finished))
        return None, run_id

    def _forget(self, run_id: int | None, finished: asyncio.Task[JobReport]) -> None:
        if run_id is not None:
            self._running.pop(run_id, None)
        if not finished.cancelled() and finished.exception() is not None:
            logger.error("background job %s failed", run_id, exc_info=finished.exception())

    def running(self) -> list[int]:
        """The jobs this process runs now."""
        return sorted(self._running)

    def is_running(self, run_id: int) -> bool:
        """Whether this process is running the job now."""
        return run_id in self._running

    def cancel(self, run_id: int) -> bool:
        """Ask an in-process job to stop at its next commit; False when this process does not run it."""
        running = self._running.get(run_id)
        if running is None:
            return False
        running.cancel.set()
        return True

    async def shutdown(self, *, timeout_s: float = 10.0) -> None:
        """Cancel every in-process job and wait for them to store what they finished (resume them later)."""
        running = list(self._running.values())
        for item in running:
            item.cancel.set()
        if running:
            await asyncio.wait([item.task for item in running], timeout=timeout_s)
