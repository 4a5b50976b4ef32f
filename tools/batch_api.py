"""The OpenAI Batch API behind the `Labeler` interface: half price, results within 24 hours.

`BatchLabeler` wraps an `LLMLabeler` (same `info`, so the same job key: a job started live can be finished
by batch and the other way round). For each window of tasks the engine hands it (`label`):

1. the endpoint's capabilities are read once and every task is planned by the wrapped labeler
   (`LLMLabeler.triage`): tasks the prompt cannot be rendered for and response-cache hits are yielded at once;
2. tasks already in an open (not yet ingested) batch of the same labeler identity are attached to that batch
   instead of being submitted again: the resume path after Ctrl-C, kill -9 or `jobs cancel`;
3. the others become JSONL lines `{"custom_id": "task-<id>", "method": "POST", "url": "/v1/chat/completions",
   "body": ...}` whose body is exactly what the live path sends (`tools.llm.request_payload`), split into
   batches of at most 50,000 lines / ~190 MB, uploaded (purpose "batch") and created (24 h window) through the
   chat model's own SDK client; each batch is registered (`batch_jobs`) in the transaction right after its
   creation, so a crash after that is resumable;
4. every open batch is polled every `poll_interval_s`; transient poll errors (429, 5xx, timeouts, connection)
   are retried with backoff and never end the wait; `on_status` hears about every step;
5. a terminal batch (completed, failed, expired, cancelled) is ingested: its output and error files are
   read; a 200 line is read exactly like a live reply (`LLMLabeler.read_received`), and an unusable one gets
   its ONE repair request, sent LIVE through the wrapped labeler's rate controller and priced at the live
   price; the batch part is priced × `BATCH_DISCOUNT`; confidence comes from logprobs when they were asked
   for; usable replies are cached under their request key. A non-200 line becomes an error with the kind of
   its status; a task without a line (expired, cancelled, failed validation) a retryable `server_error`
   naming the batch, so a resume resubmits exactly those. The batch is marked ingested after its outcomes
   were yielded; the replies are cached before, so a crash in between costs no second request.

Cancelling the consumer stops polling but not the batch: it keeps running at the provider and the next run
of the job attaches to it. `cancel_remote` cancels it at the provider.

Decisions and limits:
- Creating a batch is retried only after a 429 (refused, so nothing was created); after a timeout or a 5xx
  the batch may exist, and a retry could pay for it twice: the job fails with the error instead, and its
  resume uploads again (the orphaned input file costs nothing).
- A window holding only some tasks of an open batch (more than 50,000 pending tasks on a resume, or runs of
  different scopes with one prompt version): the batch is ingested for the window's tasks; the usable
  replies of its other tasks go to the response cache, so later windows get them free (their batch cost is
  then counted in no run), and the rest are resubmitted.
- An endpoint without `/v1/files` or `/v1/batches` (404/405/501, e.g. llama.cpp) is refused with a
  `ConfigError` before anything is registered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, TypeVar

import httpx
import openai
from langchain_core.messages import AIMessage
from openai.types import Batch
from pydantic import BaseModel, Field
from sqlalchemy import select

from tools.batch_registry import (
    MISSING,
    TERMINAL_STATUSES,
    BatchInfo,
    batch_requests,
    custom_id,
    get_batch,
    identity_hash,
    list_batches,
    mark_ingested,
    open_requests,
    record_batch,
    register_batch,
    task_id_of,
)
from tools.costs import BATCH_DISCOUNT, PriceTable, PromptSize
from tools.errors import ConfigError, ConflictError, ErrorKind, ModelCallError
from tools.labelers import LabelerInfo, LabelOutcome, TaskInput
from tools.llm import (
    EndpointCapabilities,
    ModelSettings,
    build_chat_model,
    endpoint_key,
    message_from_completion,
    openai_client,
    request_options,
    request_payload,
    status_error,
    to_model_call_error,
)
from tools.llm_labeler import LLMLabeler, PlannedRequest
from tools.ratelimit import Backoff
from tools.storage import Database, Task

logger = logging.getLogger(__name__)

#: OpenAI's limits per batch: 50,000 requests and a 200 MB input file (we stay below it).
MAX_REQUESTS_PER_BATCH = 50_000
MAX_BATCH_BYTES = 190 * 1024 * 1024
DEFAULT_POLL_INTERVAL_S = 30.0
BATCH_URL: Final = "/v1/chat/completions"
COMPLETION_WINDOW: Final = "24h"
#: Uploads and downloads of input/output files may be large.
FILE_TIMEOUT_S = 600.0
#: Error kinds worth another try of an upload or a poll.
_TRANSIENT = frozenset(
    {ErrorKind.rate_limited, ErrorKind.server_error, ErrorKind.timeout, ErrorKind.connection}
)
#: HTTP statuses that mean "this endpoint has no Batch API".
_NO_BATCH_API = frozenset({404, 405, 501})
#: Why a task of a terminal batch has no result line, by batch status.
_NO_RESULT = {
    "expired": "expired before this request ran",
    "cancelled": "was cancelled before this request ran",
    "failed": "failed before this request ran",
    "completed": "completed without a result for this request",
    MISSING: "is unknown to the endpoint (deleted, or submitted to another endpoint)",
}

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")

#: The public names; `BatchInfo`, `get_batch` and `list_batches` come from `tools.batch_registry`.
__all__ = [
    "BatchInfo",
    "BatchLabeler",
    "BatchPhase",
    "BatchStatus",
    "cancel_remote_batch",
    "get_batch",
    "list_batches",
]


# ---------------------------------------------------------------------------------------------- models


class BatchPhase(str, Enum):
    """What happened to a batch when `on_status` is called."""

    submitted = "submitted"  # created at the provider and registered
    attached = "attached"  # an open batch this window's tasks wait for (resume)
    polled = "polled"  # its status was read
    ingested = "ingested"  # its results became outcomes


class BatchStatus(BaseModel):
    """A report on one batch while a job waits for it."""

    batch_id: str
    phase: BatchPhase
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    tasks: int = Field(default=0, description="Tasks of this window that wait for the batch.")


def _counts(batch: Batch) -> dict[str, int]:
    counts = batch.request_counts
    if counts is None:
        return {}
    return {"total": counts.total, "completed": counts.completed, "failed": counts.failed}


def _record(db: Database, batch: Batch) -> None:
    record_batch(
        db,
        batch.id,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        request_counts=_counts(batch),
    )


def _check_endpoint(info: BatchInfo, model_settings: ModelSettings) -> None:
    submitted_to = info.endpoint.split(" ", 1)[0]
    configured = endpoint_key(model_settings.base_url, model_settings.model).split(" ", 1)[0]
    if submitted_to != configured:
        raise ConfigError(
            f"batch {info.id} was submitted to {submitted_to}, but the configured endpoint is {configured}",
            hint="set OPENAI_BASE_URL (and OPENAI_API_KEY) to the endpoint the batch was submitted to",
        )


async def _cancel(db: Database, client: openai.AsyncOpenAI, info: BatchInfo) -> BatchInfo:
    if info.status in TERMINAL_STATUSES or info.status == MISSING:
        hint = f"its results are still to be read: labelpilot batch resume {info.id}" if info.open else None
        raise ConflictError(f"batch {info.id} is already {info.status}: nothing to cancel", hint=hint)
    try:
        batch = await client.batches.cancel(info.id)
    except (openai.OpenAIError, httpx.HTTPError) as exc:
        error = to_model_call_error(exc)
        if error.status_code == 409:
            _record(db, await client.batches.retrieve(info.id))
            current = get_batch(db, info.id)
            raise ConflictError(
                f"batch {info.id} can no longer be cancelled (it is {current.status})"
            ) from exc
        raise error from exc
    _record(db, batch)
    return get_batch(db, info.id)


async def cancel_remote_batch(
    db: Database,
    batch_id: str,
    model_settings: ModelSettings,
    *,
    http_async_client: httpx.AsyncClient | None = None,
) -> BatchInfo:
    """Cancel a registered batch at the provider (`model_settings` must point at the endpoint it went to).

    The provider finishes the requests in flight and then reports the batch `cancelled`; the next run of its
    job ingests what was done and resubmits the rest.
    """
    info = get_batch(db, batch_id)
    _check_endpoint(info, model_settings)
    client = openai_client(build_chat_model(model_settings, http_async_client=http_async_client))
    return await _cancel(db, client, info)


# ---------------------------------------------------------------------------------------------- the labeler


@dataclass(frozen=True)
class _Terminal:
    """A batch that will change no more: where its results are and why some may be missing."""

    batch_id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    problem: str | None = None  # validation errors of a failed batch

    @classmethod
    def of(cls, batch: Batch) -> _Terminal:
        problem = None
        if batch.errors is not None and batch.errors.data:
            problem = "; ".join(
                f"line {e.line}: {e.message}" if e.line is not None else str(e.message)
                for e in batch.errors.data[:3]
            )
        return cls(batch.id, batch.status, batch.output_file_id, batch.error_file_id, problem)


class BatchLabeler:
    """Labels tasks through the OpenAI Batch API with an `LLMLabeler`'s prompt (see the module docstring)."""

    def __init__(
        self,
        inner: LLMLabeler,
        *,
        project: str | int,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        on_status: Callable[[BatchStatus], None] | None = None,
        sleep: Sleep = asyncio.sleep,
        backoff: Backoff | None = None,
        max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        """Wrap a labeler; nothing is sent until `label` is called.

        Args:
            inner: the LLM labeler whose prompt, model, cache and rate controller (for repairs) are used;
                it needs a database (the registry of batches and the response cache live there).
            project: the project the tasks belong to (name or id).
            poll_interval_s: seconds between two status reads of a batch.
            on_status: called with a `BatchStatus` when a batch is submitted, attached, polled, ingested.
            sleep: how waits happen (tests pass a fast one).
            backoff: retry policy for uploads and polls (default: the inner labeler's).
            max_requests_per_batch / max_batch_bytes: where the input is split into several batches.
        """
        if inner.db is None:
            raise ConfigError(
                "the Batch API labeler needs a database (its batch registry and response cache)"
            )
        if poll_interval_s < 0 or max_requests_per_batch < 1 or max_batch_bytes < 1:
            raise ValueError("poll_interval_s must be >= 0 and the batch limits >= 1")
        self.inner = inner
        self.db: Database = inner.db
        self.project = project
        self.poll_interval_s = poll_interval_s
        self.on_status = on_status
        self.backoff = backoff or inner.backoff
        self.max_requests_per_batch = max_requests_per_batch
        self.max_batch_bytes = max_batch_bytes
        self.run_id: int | None = None
        #: Batches this labeler submitted or attached to, in order.
        self.batch_ids: list[str] = []
        self._sleep = sleep
        self._identity = identity_hash(inner.info)
        ms = inner.model_settings
        self._endpoint = endpoint_key(ms.base_url, ms.model)
        self._project: tuple[int, str] | None = None

    # ------------------------------------------------------------------ Labeler and estimate hooks

    @property
    def info(self) -> LabelerInfo:
        """The wrapped labeler's: a job keeps its key whether it runs live or by batch."""
        return self.inner.info

    def bind_run(self, run_id: int) -> None:
        """Remember the run this labeler works for (the engine calls it); new batches record it."""
        self.run_id = run_id

    @property
    def prices(self) -> PriceTable:
        """The price table (estimates and costs)."""
        return self.inner.prices

    @property
    def model_name(self) -> str:
        """The model requests go to."""
        return self.inner.model_name

    @property
    def requests_per_minute(self) -> float:
        """The live request rate (repairs are sent live)."""
        return self.inner.requests_per_minute

    def prompt_size(self, task: TaskInput) -> PromptSize:
        """Estimate the input tokens of a task's request."""
        return self.inner.prompt_size(task)

    def output_token_range(self) -> tuple[int, int]:
        """Return the fewest and the most output tokens a valid answer takes."""
        return self.inner.output_token_range()

    def cached_task_ids(self, tasks: Sequence[TaskInput]) -> set[int]:
        """Return the ids of the tasks whose request is in the response cache."""
        return self.inner.cached_task_ids(tasks)

    def has_cached_responses(self) -> bool:
        """Whether the response cache holds any reply of this model."""
        return self.inner.has_cached_responses()

    async def cancel_remote(self, batch_id: str) -> BatchInfo:
        """Cancel a batch at the provider and record it (its job's next run ingests what was done)."""
        info = get_batch(self.db, batch_id)
        _check_endpoint(info, self.inner.model_settings)
        return await _cancel(self.db, self._client(), info)

    # ------------------------------------------------------------------ label

    async def label(self, tasks: Sequence[TaskInput]) -> AsyncIterator[LabelOutcome]:
        """Label tasks through batches, yielding outcomes at once (render failures, cache hits) or when
        their batch is done."""
        if not tasks:
            return
        inner = self.inner
        capabilities = await inner.capabilities()
        try:
            planned: list[PlannedRequest] = []
            async for item in inner.triage(tasks, capabilities.mode):
                if isinstance(item, LabelOutcome):
                    yield item
                else:
                    planned.append(item)
            if not planned:
                return
            waiting, fresh = self._attach(planned)
            waiting.update(await self._submit(fresh, capabilities))
            async for outcome in self._wait(waiting, capabilities):
                yield outcome
        finally:
            inner.flush_cache()

    def _project_ref(self) -> tuple[int, str]:
        if self._project is None:
            from tools.projects import get_project

            with self.db.session() as session:
                row = get_project(session, self.project)
                self._project = (row.id, row.name)
        return self._project

    def _client(self) -> openai.AsyncOpenAI:
        return openai_client(self.inner.chat_model())

    def _report(self, status: BatchStatus) -> None:
        if self.on_status is not None:
            self.on_status(status)

    def _note(self, batch_id: str) -> None:
        if batch_id not in self.batch_ids:
            self.batch_ids.append(batch_id)

    def _attach(
        self, planned: Sequence[PlannedRequest]
    ) -> tuple[dict[str, dict[int, PlannedRequest]], list[PlannedRequest]]:
        """Split planned requests into those an open batch already holds (by batch) and the rest."""
        project_id, _ = self._project_ref()
        known = open_requests(self.db, project_id, self._identity)
        attached: dict[str, dict[int, PlannedRequest]] = {}
        statuses: dict[str, str] = {}
        fresh: list[PlannedRequest] = []
        for plan in planned:
            found = known.get(custom_id(plan.task.task_id))
            if found is None:
                fresh.append(plan)
                continue
            # The reply answers the request as it was submitted: cache it under that key.
            attached.setdefault(found.batch_id, {})[plan.task.task_id] = dataclasses.replace(
                plan, key=found.key or plan.key, examples=found.examples
            )
            statuses[found.batch_id] = found.status
        for batch_id, members in attached.items():
            self._note(batch_id)
            self._report(
                BatchStatus(
                    batch_id=batch_id,
                    phase=BatchPhase.attached,
                    status=statuses[batch_id],
                    tasks=len(members),
                )
            )
        return attached, fresh

    # ------------------------------------------------------------------ submitting

    def _groups(
        self, plans: Sequence[PlannedRequest], capabilities: EndpointCapabilities
    ) -> Iterator[tuple[list[PlannedRequest], bytes]]:
        """Yield the requests of each batch and its JSONL input (at most the request and byte limits)."""
        inner = self.inner
        model = inner.chat_model()
        options = request_options(
            inner.spec,
            mode=capabilities.mode,
            reasoning=inner.version.reasoning,
            logprobs=inner.logprobs and capabilities.logprobs,
        )
        group: list[PlannedRequest] = []
        lines: list[bytes] = []
        size = 0
        for plan in plans:
            line = {
                "custom_id": custom_id(plan.task.task_id),
                "method": "POST",
                "url": BATCH_URL,
                "body": request_payload(model, plan.messages, options),
            }
            data = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            if group and (
                len(group) >= self.max_requests_per_batch or size + len(data) > self.max_batch_bytes
            ):
                yield group, b"".join(lines)
                group, lines, size = [], [], 0
            group.append(plan)
            lines.append(data)
            size += len(data)
        if group:
            yield group, b"".join(lines)

    async def _submit(
        self, plans: Sequence[PlannedRequest], capabilities: EndpointCapabilities
    ) -> dict[str, dict[int, PlannedRequest]]:
        """Upload, create and register the batches of `plans`; return their requests by batch id."""
        if not plans:
            return {}
        client = self._client()
        project_id, project_name = self._project_ref()
        submitted: dict[str, dict[int, PlannedRequest]] = {}
        for group, data in self._groups(plans, capabilities):
            upload = await self._provider_call(
                functools.partial(
                    client.files.create,
                    file=(f"labelpilot-{self._identity[:12]}-{len(group)}.jsonl", data, "application/jsonl"),
                    purpose="batch",
                    timeout=FILE_TIMEOUT_S,
                ),
                what="POST /files (upload the batch input)",
                retry_kinds=_TRANSIENT,
            )
            metadata = {"labelpilot_project": project_name[:512], "labelpilot_job": self._identity}
            if self.run_id is not None:
                metadata["labelpilot_run"] = str(self.run_id)
            requests = {custom_id(p.task.task_id): {"key": p.key, "examples": p.examples} for p in group}
            creating = asyncio.ensure_future(
                self._create_registered(client, upload.id, metadata, requests, project_id=project_id)
            )
            try:
                batch = await asyncio.shield(creating)
            except asyncio.CancelledError:
                # Stopped while the provider may be creating the batch: wait for the answer (seconds) and
                # register the batch, or it would run and be paid for with nobody to pick it up.
                await asyncio.wait({creating})
                raise
            self._note(batch.id)
            self._report(self._status(batch, BatchPhase.submitted, tasks=len(group)))
            submitted[batch.id] = {p.task.task_id: p for p in group}
        return submitted

    async def _create_registered(
        self,
        client: openai.AsyncOpenAI,
        input_file_id: str,
        metadata: dict[str, str],
        requests: dict[str, dict[str, Any]],
        *,
        project_id: int,
    ) -> Batch:
        """Create a batch and register it at once (a crash between the two is the only way to lose one)."""
        batch = await self._provider_call(
            functools.partial(
                client.batches.create,
                input_file_id=input_file_id,
                endpoint=BATCH_URL,
                completion_window=COMPLETION_WINDOW,
                metadata=metadata,
            ),
            what="POST /batches (create the batch)",
            retry_kinds=frozenset({ErrorKind.rate_limited}),
        )
        register_batch(
            self.db,
            batch.id,
            status=batch.status,
            input_file_id=batch.input_file_id,
            request_counts=_counts(batch),
            project_id=project_id,
            run_id=self.run_id,
            identity=self._identity,
            endpoint=self._endpoint,
            requests=requests,
        )
        return batch

    async def _provider_call(
        self, call: Callable[[], Awaitable[T]], *, what: str, retry_kinds: frozenset[ErrorKind]
    ) -> T:
        """Make one Batch API call, retrying the error kinds given; an endpoint without the API is refused."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except (openai.OpenAIError, httpx.HTTPError) as exc:
                if isinstance(exc, openai.APIStatusError) and exc.status_code in _NO_BATCH_API:
                    url = self.inner.model_settings.endpoint_url
                    raise ConfigError(
                        f"the endpoint {url} does not offer the Batch API: {what} answered HTTP "
                        f"{exc.status_code}",
                        hint="label without --batch-api (live requests work with any OpenAI-compatible server)",
                    ) from exc
                error = to_model_call_error(exc)
                delay = self.backoff.should_retry(error, attempt) if error.kind in retry_kinds else None
                if delay is None:
                    raise error from exc
                await self._sleep(delay)

    # ------------------------------------------------------------------ waiting

    def _status(self, batch: Batch, phase: BatchPhase, *, tasks: int = 0) -> BatchStatus:
        counts = _counts(batch)
        return BatchStatus(
            batch_id=batch.id,
            phase=phase,
            status=batch.status,
            total=counts.get("total", 0),
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            tasks=tasks,
        )

    def _wait_after(self, error: ModelCallError, failures: int) -> float:
        # A poll never gives up on a transient error: the batch runs on without us.
        hint = error.retry_after if error.retry_after is not None else self.backoff.delay(min(failures, 16))
        return max(self.poll_interval_s, min(hint, self.backoff.max_retry_after))

    async def _wait(
        self, waiting: dict[str, dict[int, PlannedRequest]], capabilities: EndpointCapabilities
    ) -> AsyncIterator[LabelOutcome]:
        """Poll the batches until each is terminal, ingesting each as it gets there."""
        client = self._client()
        pending = dict(waiting)
        failures = 0
        while pending:
            transient: ModelCallError | None = None
            for batch_id in list(pending):
                try:
                    batch = await client.batches.retrieve(batch_id)
                except (openai.OpenAIError, httpx.HTTPError) as exc:
                    error = to_model_call_error(exc)
                    if error.status_code == 404:
                        logger.warning("batch %s is unknown to the endpoint: %s", batch_id, error.message)
                        record_batch(self.db, batch_id, status=MISSING)
                        terminal = _Terminal(batch_id, MISSING)
                    elif error.retryable:
                        transient = error
                        continue
                    else:
                        raise error from exc
                else:
                    _record(self.db, batch)
                    self._report(self._status(batch, BatchPhase.polled, tasks=len(pending[batch_id])))
                    if batch.status not in TERMINAL_STATUSES:
                        continue
                    terminal = _Terminal.of(batch)
                members = pending.pop(batch_id)
                async for outcome in self._ingest(client, terminal, members, capabilities):
                    yield outcome
            if not pending:
                break
            if transient is not None:
                failures += 1
                logger.info("polling batches failed (%s); trying again", transient.message)
                await self._sleep(self._wait_after(transient, failures))
            else:
                failures = 0
                await self._sleep(self.poll_interval_s)

    # ------------------------------------------------------------------ ingesting

    async def _download(self, client: openai.AsyncOpenAI, file_id: str) -> dict[str, dict[str, Any]]:
        """Return the lines of a result file by custom_id (transient errors are retried without end)."""
        failures = 0
        while True:
            try:
                content = await client.files.content(file_id, timeout=FILE_TIMEOUT_S)
                break
            except (openai.OpenAIError, httpx.HTTPError) as exc:
                error = to_model_call_error(exc)
                if error.status_code == 404:
                    logger.warning("the batch result file %s is gone: %s", file_id, error.message)
                    return {}
                if not error.retryable:
                    raise error from exc
                failures += 1
                await self._sleep(self._wait_after(error, failures))
        lines: dict[str, dict[str, Any]] = {}
        for number, raw in enumerate(content.content.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                logger.warning("line %d of the batch result file %s is not JSON; skipped", number, file_id)
                continue
            name = line.get("custom_id") if isinstance(line, dict) else None
            if isinstance(name, str):
                lines[name] = line
        return lines

    def _failed(self, plan: PlannedRequest, kind: ErrorKind, message: str) -> LabelOutcome:
        return LabelOutcome(
            task_id=plan.task.task_id, error_kind=kind, error_message=message, examples=plan.examples
        )

    def _read_line(
        self, plan: PlannedRequest, line: dict[str, Any] | None, terminal: _Terminal
    ) -> LabelOutcome | AIMessage:
        """Turn a task's result line into the reply it carries, or into an error outcome."""
        if line is None:
            why = _NO_RESULT.get(terminal.status, f"ended as {terminal.status} before this request ran")
            if terminal.problem:
                why += f" ({terminal.problem})"
            return self._failed(
                plan, ErrorKind.server_error, f"batch {terminal.batch_id} {why}; resume to resubmit"
            )
        response = line.get("response")
        if isinstance(response, dict):
            status = int(response.get("status_code") or 0)
            body = response.get("body")
            if status == 200 and isinstance(body, dict):
                try:
                    return message_from_completion(self.inner.chat_model(), body)
                except ModelCallError as exc:
                    return self._failed(plan, exc.kind, exc.message)
            details = body.get("error", body) if isinstance(body, dict) else body
            text = details.get("message") if isinstance(details, dict) else None
            error = status_error(
                status or 500,
                details,
                str(text or body or "no details"),
                source=f"the request in batch {terminal.batch_id} got",
            )
            return self._failed(plan, error.kind, error.message)
        found = line.get("error")
        problem: dict[str, Any] = found if isinstance(found, dict) else {}
        code = str(problem.get("code") or "")
        kind = (
            ErrorKind.server_error
            if code in ("", "batch_expired", "batch_cancelled")
            else ErrorKind.bad_request
        )
        text = problem.get("message") or code or "no result"
        return self._failed(plan, kind, f"batch {terminal.batch_id}: {text}; resume to resubmit")

    async def _ingest(
        self,
        client: openai.AsyncOpenAI,
        terminal: _Terminal,
        members: dict[int, PlannedRequest],
        capabilities: EndpointCapabilities,
    ) -> AsyncIterator[LabelOutcome]:
        """Yield the outcomes of a terminal batch's tasks in this window, then mark the batch ingested."""
        inner = self.inner
        lines: dict[str, dict[str, Any]] = {}
        for file_id in (terminal.output_file_id, terminal.error_file_id):
            if file_id:
                lines.update(await self._download(client, file_id))
        ready: list[LabelOutcome] = []
        to_repair: list[tuple[PlannedRequest, AIMessage]] = []
        for task_id, plan in members.items():
            result = self._read_line(plan, lines.pop(custom_id(task_id), None), terminal)
            if isinstance(result, AIMessage):
                outcome = inner.read_received(plan, capabilities, result, price_factor=BATCH_DISCOUNT)
                if outcome is None:
                    to_repair.append((plan, result))
                    continue
                result = outcome
            ready.append(result)
        await self._cache_others(lines, terminal, capabilities)
        # Replies are in the cache before anything is handed on: a crash from here on costs no request.
        inner.flush_cache()
        repairs = [
            asyncio.create_task(
                inner.repair_received(plan, capabilities, message, price_factor=BATCH_DISCOUNT)
            )
            for plan, message in to_repair
        ]
        labeled = failed = 0
        try:
            for outcome in ready:
                yield outcome
                labeled, failed = labeled + outcome.ok, failed + (not outcome.ok)
            for next_done in asyncio.as_completed(repairs):
                outcome = await next_done
                yield outcome
                labeled, failed = labeled + outcome.ok, failed + (not outcome.ok)
        finally:
            for repair in repairs:
                repair.cancel()
            await asyncio.gather(*repairs, return_exceptions=True)
        inner.flush_cache()
        mark_ingested(self.db, terminal.batch_id)
        self._report(
            BatchStatus(
                batch_id=terminal.batch_id,
                phase=BatchPhase.ingested,
                status=terminal.status,
                completed=labeled,
                failed=failed,
                total=len(members),
                tasks=len(members),
            )
        )

    async def _cache_others(
        self, lines: dict[str, dict[str, Any]], terminal: _Terminal, capabilities: EndpointCapabilities
    ) -> None:
        """Cache the usable replies of the batch's tasks that are not in this window (see the docstring)."""
        if not lines:
            return
        entries = batch_requests(self.db, terminal.batch_id)
        task_ids = [number for name in lines if name in entries and (number := task_id_of(name)) is not None]
        project_id, _ = self._project_ref()
        for start in range(0, len(task_ids), 500):
            with self.db.session() as session:
                rows = session.execute(
                    select(Task.id, Task.external_id, Task.data, Task.content_hash).where(
                        Task.id.in_(task_ids[start : start + 500]), Task.project_id == project_id
                    )
                ).all()
            for row in rows:
                task = TaskInput(
                    task_id=row.id, external_id=row.external_id, data=row.data, content_hash=row.content_hash
                )
                plan = await self.inner.plan(task, capabilities.mode)
                if isinstance(plan, LabelOutcome):
                    continue
                entry = entries[custom_id(task.task_id)]
                plan = dataclasses.replace(plan, key=str(entry.get("key") or plan.key))
                result = self._read_line(plan, lines[custom_id(task.task_id)], terminal)
                if isinstance(result, AIMessage):
                    # Its outcome belongs to no run here: only the cached reply is kept.
                    self.inner.read_received(plan, capabilities, result, price_factor=BATCH_DISCOUNT)
