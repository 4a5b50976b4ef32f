"""The LLM labeler: a prompt version + a chat model, behind the `Labeler` interface the engine drives.

For each window of tasks (`label`):

1. the endpoint's output mode and logprob support are detected once (`CapabilityStore`, remembered per
   endpoint and model; transient failures of the probe are retried a few times);
2. each task's messages are rendered (`tools.prompting.render_messages`, with the examples `examples_for`
   returns) and the request is fingerprinted (model, messages, schema, parameters, output mode, endpoint);
3. fingerprints found in the persistent response cache (`ResponseCache`) are answered at once:
   `from_cache=True`, no request, cost 0;
4. the others call `label_call` inside `RateController.slot(...)` — the one controller of this labeler owns
   pacing (RPM/TPM), adaptive concurrency and the shared cooldown after a 429 — and report success (with
   the response headers and the tokens used) or failure to it. Retryable failures (429, 5xx, timeouts,
   connection errors) are retried after `Backoff.should_retry` (jittered exponential, honouring the server's
   `retry-after`); anything else, or a retryable failure past the last attempt, becomes an outcome with an
   error kind. The SDK's own retries are off (`max_retries=0`): they would multiply with ours;
5. successful replies are written to the response cache (in small batches) and costed with the price table.

Outcomes are yielded as they complete. Cancelling the consumer cancels the calls in flight.

Steps 2-3 (`plan`, `triage`), the reply handling of step 4 for a reply that came through the Batch API
(`read_received`; `repair_received` sends its repair live through the same controller) and the cache of
step 5 (`flush_cache`) are public: `tools.batch_api.BatchLabeler` reuses them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from sqlalchemy import select

from tools.costs import PriceTable, PromptSize
from tools.errors import ErrorKind, LabelpilotError, ModelCallError
from tools.labelers import LabelerInfo, LabelerKind, LabelOutcome, TaskInput
from tools.labelspec import LabelSpec, TaskType
from tools.llm import (
    CapabilityStore,
    ChatModelFactory,
    EndpointCapabilities,
    ModelSettings,
    OutputMode,
    endpoint_key,
    label_call,
    model_factory,
    read_reply,
    token_usage,
)
from tools.prompting import TOKENS_PER_MESSAGE, Example, estimate_prompt_tokens, render_messages
from tools.ratelimit import Backoff, RateController, RateLimits
from tools.settings import Settings
from tools.storage import Database, ResponseCache, Task
from tools.versions import VersionInfo

logger = logging.getLogger(__name__)

#: Used when nothing else is configured: OpenAI's lowest paid tier allows about this for small models.
DEFAULT_RATE_LIMITS = RateLimits(rpm=500, max_concurrency=16)
#: Cache entries written per transaction.
CACHE_WRITE_BATCH = 64
#: Output tokens a reasoning field adds, at least and at most, in estimates.
REASONING_TOKENS = (20, 200)

ExamplesFor = Callable[[TaskInput], Sequence[Example] | Awaitable[Sequence[Example]]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class PlannedRequest:
    """One task's request, ready to send: its messages, response-cache key, few-shot examples, span text."""

    task: TaskInput
    messages: list[BaseMessage]
    key: str
    examples: list[str] | None
    source_text: str | None
    estimated_tokens: int


@dataclass(frozen=True)
class _Received:
    """A reply that came without a request of ours (a Batch API result) and the price factor of its tokens."""

    message: AIMessage
    price_factor: float


def _hash_json(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class LLMLabeler:
    """Labels tasks with a prompt version on an OpenAI-compatible chat endpoint (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        spec: LabelSpec,
        version: VersionInfo,
        *,
        model_settings: ModelSettings | None = None,
        rate_limits: RateLimits | None = None,
        capability_store: CapabilityStore | None = None,
        db: Database | None = None,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        examples_for: ExamplesFor | None = None,
        backoff: Backoff | None = None,
        prices: PriceTable | None = None,
        logprobs: bool = True,
        sleep: Sleep = asyncio.sleep,
        identity_extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Build a labeler; nothing is sent until `label` is called.

        Args:
            settings: app settings (the endpoint, key and label model when `model_settings` is not given).
            spec: the project's label schema.
            version: the prompt version (instructions, few-shot policy, model, parameters, reasoning).
            model_settings: the model to call (default: from `settings` and the version's model/params).
            rate_limits: RPM/TPM/concurrency of the endpoint (default: `DEFAULT_RATE_LIMITS`).
            capability_store: where endpoint capabilities are remembered (default: the data folder's).
            db: the database holding the response cache (None: no cache).
            http_client / http_async_client: HTTP clients for the SDK (tests point them at fakes).
            examples_for: returns the few-shot examples of a task (default: none).
            backoff: retry policy (default: `Backoff()`).
            prices: the price table (default: built-in + `<home>/prices.toml`).
            logprobs: ask for token logprobs (for confidence) where the endpoint supports them.
            sleep: how retries wait (tests pass a fake).
            identity_extra: more of what changes the answers, added to `info.identity` (and so to the job
                key): e.g. the fingerprint of the few-shot example pool `examples_for` draws from.
        """
        self.settings = settings
        self.spec = spec
        self.version = version
        self.model_settings = model_settings or ModelSettings.from_settings(
            settings, model=version.model or None, params=version.params
        )
        self.rate_limits = rate_limits or DEFAULT_RATE_LIMITS
        self.backoff = backoff or Backoff()
        self.controller = RateController(self.rate_limits, backoff=self.backoff)
        self.capability_store = capability_store or CapabilityStore.for_settings(settings)
        self.db = db
        self.examples_for = examples_for
        self.prices = prices or PriceTable.load(settings)
        self.logprobs = logprobs
        self._sleep = sleep
        self._factory: ChatModelFactory = model_factory(
            self.model_settings, http_client=http_client, http_async_client=http_async_client
        )
        self._model: BaseChatModel | None = None
        self._pending_cache: list[dict[str, Any]] = []
        self._schema = spec.json_schema(reasoning=version.reasoning)
        self._info = LabelerInfo(
            kind=LabelerKind.llm,
            model=self.model_settings.model,
            prompt_version_id=version.id,
            identity={
                "prompt_version_id": version.id,
                "prompt_version": version.number,
                "endpoint": endpoint_key(self.model_settings.base_url, self.model_settings.model),
                "temperature": self.model_settings.temperature,
                "max_output_tokens": self.model_settings.max_output_tokens,
                "params": self.model_settings.params,
                "schema": _hash_json(self._schema),
                "logprobs": logprobs,
                **(identity_extra or {}),
            },
        )

    # ------------------------------------------------------------------ Labeler

    @property
    def info(self) -> LabelerInfo:
        """Kind, model and identity (prompt version, endpoint, parameters, schema) of this labeler."""
        return self._info

    async def label(self, tasks: Sequence[TaskInput]) -> AsyncIterator[LabelOutcome]:
        """Label tasks, yielding one outcome per task as each completes (cache hits first)."""
        if not tasks:
            return
        capabilities = await self.capabilities()
        calls: list[asyncio.Task[LabelOutcome]] = []
        try:
            async for item in self.triage(tasks, capabilities.mode):
                if isinstance(item, LabelOutcome):
                    yield item
                else:
                    calls.append(asyncio.create_task(self._call(item, capabilities)))
            for next_done in asyncio.as_completed(calls):
                yield await next_done
        finally:
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            self.flush_cache()

    async def triage(
        self, tasks: Sequence[TaskInput], mode: OutputMode
    ) -> AsyncIterator[LabelOutcome | PlannedRequest]:
        """Plan tasks; yield the outcomes decided without a request (tasks the prompt cannot be rendered
        for, as they are planned; then response-cache hits), then the requests still to send."""
        planned: list[PlannedRequest] = []
        for task in tasks:
            plan = await self.plan(task, mode)
            if isinstance(plan, LabelOutcome):
                yield plan
            else:
                planned.append(plan)
        hits = self._cached_responses([p.key for p in planned])
        for plan in planned:
            if plan.key in hits:
                yield self._from_cache(plan, hits[plan.key])
        for plan in planned:
            if plan.key not in hits:
                yield plan

    # ------------------------------------------------------------------ capabilities and the model

    async def capabilities(self) -> EndpointCapabilities:
        """Return the endpoint's output mode and logprob support, probing it once (retrying blips)."""
        attempt = 0
        policy = Backoff(base=self.backoff.base, cap=self.backoff.cap, max_attempts=3)
        while True:
            attempt += 1
            try:
                return await self.capability_store.ensure(self.model_settings, self._factory, self.spec)
            except ModelCallError as exc:
                delay = policy.should_retry(exc, attempt)
                if delay is None:
                    raise
                await self._sleep(delay)

    def chat_model(self) -> BaseChatModel:
        """The chat model requests go through (built once, with the SDK's own retries off)."""
        return self._chat_model()

    def _chat_model(self) -> BaseChatModel:
        if self._model is None:
            self._model = self._factory(max_retries=0)
        return self._model

    def known_mode(self) -> OutputMode:
        """The endpoint's remembered output mode, or json_schema when it was never probed (for estimates)."""
        known = self.capability_store.get(self.model_settings.base_url, self.model_settings.model)
        return known.mode if known is not None else OutputMode.json_schema

    # ------------------------------------------------------------------ planning

    def _source_text(self, task: TaskInput) -> str | None:
        if self.spec.type is not TaskType.spans:
            return None
        from tools.groundtruth import source_text_for

        return source_text_for(self.spec, Task(data=task.data))

    async def _examples(self, task: TaskInput) -> Sequence[Example]:
        if self.examples_for is None:
            return ()
        found = self.examples_for(task)
        if isinstance(found, Awaitable):
            return await found
        return found

    def request_key(self, messages: Sequence[BaseMessage], mode: OutputMode) -> str:
        """Return the response-cache key of a request: everything that changes the answer."""
        from tools.prompting import request_fingerprint

        ms = self.model_settings
        params = {
            "endpoint": endpoint_key(ms.base_url, ms.model),
            "mode": mode.value,
            "temperature": ms.temperature,
            "max_output_tokens": ms.max_output_tokens,
            "params": ms.params,
            "logprobs": self.logprobs,
        }
        return request_fingerprint(ms.model, messages, self._schema, params)

    def _render(self, task: TaskInput, examples: Sequence[Example], mode: OutputMode) -> list[BaseMessage]:
        return render_messages(self.spec, self.version, task.data, examples=examples, mode=mode)

    async def plan(self, task: TaskInput, mode: OutputMode) -> PlannedRequest | LabelOutcome:
        """Render a task's request for `mode`; a task that cannot be rendered is an outcome (bad_request)."""
        try:
            examples = await self._examples(task)
            messages = self._render(task, examples, mode)
            source_text = self._source_text(task)
            if self.spec.type is TaskType.spans and source_text is None:
                raise LabelpilotError(
                    f"task {task.external_id} has no text field for the spans "
                    f"(span field: {self.spec.span_field or 'not set'})"
                )
        except LabelpilotError as exc:
            # A task the prompt cannot be rendered for (a missing field, an invalid example) is data too.
            return LabelOutcome(
                task_id=task.task_id, error_kind=ErrorKind.bad_request, error_message=exc.user_message()
            )
        estimated = 0
        if self.rate_limits.tpm:
            estimated = estimate_prompt_tokens(messages, self.model_settings.model)
            estimated += self.model_settings.max_output_tokens
        return PlannedRequest(
            task=task,
            messages=messages,
            key=self.request_key(messages, mode),
            examples=[str(e.task_id) for e in examples if e.task_id is not None] or None,
            source_text=source_text,
            estimated_tokens=estimated,
        )

    # ------------------------------------------------------------------ one call, with retries

    async def _call(
        self,
        plan: PlannedRequest,
        capabilities: EndpointCapabilities,
        *,
        received: _Received | None = None,
    ) -> LabelOutcome:
        """Send a request (or, with `received`, the repair of a reply that came through the Batch API)."""
        attempt = 0
        spent = (0, 0, 0)  # tokens of failed attempts: billed, so counted in the outcome
        while True:
            attempt += 1
            async with self.controller.slot(plan.estimated_tokens) as slot:
                try:
                    reply = await label_call(
                        self._chat_model(),
                        plan.messages,
                        self.spec,
                        mode=capabilities.mode,
                        reasoning=self.version.reasoning,
                        logprobs=self.logprobs and capabilities.logprobs,
                        source_text=plan.source_text,
                        first=received.message if received is not None else None,
                    )
                except ModelCallError as exc:
                    slot.failure(exc)
                    error = exc
                    spent = (spent[0] + exc.spent[0], spent[1] + exc.spent[1], spent[2] + exc.spent[2])
                else:
                    slot.success(reply.headers, used_tokens=reply.input_tokens + reply.output_tokens)
                    outcome = self._success(plan, reply.model_dump(mode="json"), received=received)
                    return self._with_spent(outcome, spent)
            delay = self.backoff.should_retry(error, attempt)
            if delay is None:
                return self._with_spent(self._failure(plan, error, attempt), spent)
            await self._sleep(delay)

    def _with_spent(self, outcome: LabelOutcome, spent: tuple[int, int, int]) -> LabelOutcome:
        """Add the tokens (and their cost) of failed attempts to an outcome."""
        if not any(spent):
            return outcome
        extra = self.prices.cost(self.model_settings.model, *spent)
        cost = outcome.cost_usd
        if outcome.error_kind is not None and cost is None:
            cost = 0.0
        return outcome.model_copy(
            update={
                "input_tokens": (outcome.input_tokens or 0) + spent[0],
                "output_tokens": (outcome.output_tokens or 0) + spent[1],
                "cached_tokens": (outcome.cached_tokens or 0) + spent[2],
                "cost_usd": None if cost is None or extra is None else cost + extra,
            }
        )

    def read_received(
        self,
        plan: PlannedRequest,
        capabilities: EndpointCapabilities,
        message: AIMessage,
        *,
        price_factor: float = 1.0,
    ) -> LabelOutcome | None:
        """Read a reply that came without a request of ours (a Batch API result for `plan`) as it is.

        Returns its outcome (a value, cached under `plan.key`; or an error no repair helps: cut off,
        refused), or None when the reply is unusable and needs the repair `repair_received` sends. Its
        tokens are priced × `price_factor` (the Batch API discount). Nothing is sent.
        """
        try:
            reply = read_reply(
                self.spec,
                message,
                mode=capabilities.mode,
                logprobs=self.logprobs and capabilities.logprobs,
                source_text=plan.source_text,
            )
        except ModelCallError as exc:
            return self._failure(plan, exc, 1)
        if reply is None:
            return None
        return self._success(plan, reply.model_dump(mode="json"), received=_Received(message, price_factor))

    async def repair_received(
        self,
        plan: PlannedRequest,
        capabilities: EndpointCapabilities,
        message: AIMessage,
        *,
        price_factor: float = 1.0,
    ) -> LabelOutcome:
        """Send the ONE repair request of an unusable received reply, live through this labeler's rate
        controller and retries; the received tokens are priced × `price_factor`, the repair's at the live
        price."""
        return await self._call(plan, capabilities, received=_Received(message, price_factor))

    def _failure(self, plan: PlannedRequest, error: ModelCallError, attempts: int) -> LabelOutcome:
        return LabelOutcome(
            task_id=plan.task.task_id,
            error_kind=error.kind,
            error_message=_error_text(error, attempts),
            examples=plan.examples,
        )

    def _success(
        self, plan: PlannedRequest, reply: dict[str, Any], *, received: _Received | None = None
    ) -> LabelOutcome:
        self._remember(plan.key, reply)
        model = self.model_settings.model
        input_tokens = int(reply.get("input_tokens") or 0)
        output_tokens = int(reply.get("output_tokens") or 0)
        cached_tokens = int(reply.get("cached_tokens") or 0)
        cost = self.prices.cost(model, input_tokens, output_tokens, cached_tokens)
        latency_ms = reply.get("latency_ms")
        if received is not None:
            # The received part is billed at its own price; only a repair (if any) ran live.
            received_cost = self.prices.cost(model, *token_usage(received.message))
            if cost is not None and received_cost is not None:
                cost -= (1.0 - received.price_factor) * received_cost
            if not reply.get("repaired"):
                latency_ms = None
        return LabelOutcome(
            task_id=plan.task.task_id,
            value=reply.get("value"),
            confidence=reply.get("confidence"),
            reasoning=reply.get("reasoning"),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            cost_usd=cost,
            latency_ms=latency_ms,
            error_message=_unplaced_note(reply.get("unplaced_spans")),
            examples=plan.examples,
        )

    def _from_cache(self, plan: PlannedRequest, reply: Mapping[str, Any]) -> LabelOutcome:
        return LabelOutcome(
            task_id=plan.task.task_id,
            value=reply.get("value"),
            confidence=reply.get("confidence"),
            reasoning=reply.get("reasoning"),
            cost_usd=0.0,
            error_message=_unplaced_note(reply.get("unplaced_spans")),
            examples=plan.examples,
            from_cache=True,
        )

    # ------------------------------------------------------------------ response cache

    def _cached_responses(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.db is None or not keys:
            return {}
        self.flush_cache()
        found: dict[str, dict[str, Any]] = {}
        with self.db.session() as session:
            for start in range(0, len(keys), 500):
                rows = session.execute(
                    select(ResponseCache.key, ResponseCache.response).where(
                        ResponseCache.key.in_(keys[start : start + 500])
                    )
                ).all()
                found.update({key: dict(response) for key, response in rows})
        return found

    def _remember(self, key: str, reply: dict[str, Any]) -> None:
        if self.db is None:
            return
        kept = {
            name: reply.get(name)
            for name in (
                "value",
                "reasoning",
                "confidence",
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "raw_text",
                "mode",
                "repaired",
                "unplaced_spans",
            )
        }
        self._pending_cache.append({"key": key, "model": self.model_settings.model, "response": kept})
        if len(self._pending_cache) >= CACHE_WRITE_BATCH:
            self.flush_cache()

    def flush_cache(self) -> None:
        """Store the replies gathered so far (first writer wins; a lost batch only costs a request)."""
        if self.db is None or not self._pending_cache:
            return
        from tools.engine import dialect_insert
        from tools.storage import utcnow

        rows, self._pending_cache = self._pending_cache, []
        now = utcnow()
        statement = dialect_insert(self.db, ResponseCache.__table__).on_conflict_do_nothing(
            index_elements=["key"]
        )
        with self.db.session() as session:
            session.execute(statement, [{**row, "created_at": now} for row in rows])

    # ------------------------------------------------------------------ estimates (tools.costs.PricedLabeler)

    @property
    def model_name(self) -> str:
        """The model requests go to."""
        return self.model_settings.model

    @property
    def requests_per_minute(self) -> float:
        """The configured request rate."""
        return self.rate_limits.rpm

    def prompt_size(self, task: TaskInput) -> PromptSize:
        """Estimate the input tokens of a task's request (few-shot examples from a sync hook only)."""
        examples = self.examples_for(task) if self.examples_for is not None else ()
        if isinstance(examples, Awaitable):
            # An async example source cannot be consulted here; the estimate leaves its examples out.
            close = getattr(examples, "close", None)
            if close is not None:
                close()
            examples = ()
        mode = self.known_mode()
        try:
            messages = self._render(task, examples, mode)
        except LabelpilotError:
            return PromptSize(tokens=0)
        model = self.model_settings.model
        # A schema sent beside the messages (response_format, tool parameters) is billed as input too.
        schema = 0
        if mode is not OutputMode.json_object:
            schema_text = json.dumps(self._schema, ensure_ascii=False, separators=(",", ":"))
            schema = _text_tokens(schema_text, model)
        return PromptSize(
            tokens=estimate_prompt_tokens(messages, model) + schema,
            static_prefix_tokens=estimate_prompt_tokens(messages[:-1], model) + schema,
        )

    def output_token_range(self) -> tuple[int, int]:
        """Return the fewest and the most output tokens a valid answer takes (see tools.costs)."""
        model, cap = self.model_settings.model, self.model_settings.max_output_tokens

        def tokens(label: object) -> int:
            return _text_tokens(json.dumps({"label": label}, ensure_ascii=False), model)

        spec = self.spec
        candidates: list[object]
        open_ended = False
        if spec.type is TaskType.single_choice:
            candidates = list(spec.class_names())
        elif spec.type is TaskType.multi_choice:
            candidates = [[], spec.class_names()]
        elif spec.type is TaskType.rating:
            candidates = list(range(1, (spec.max_rating or 5) + 1))
        elif spec.type is TaskType.pairwise:
            candidates = ["left", "right"]
        elif spec.type is TaskType.number:
            candidates = [0, 1234567.25]
        else:
            candidates = ["" if spec.type is TaskType.text else []]
            open_ended = True
        sizes = [tokens(c) for c in candidates] or [tokens("")]
        low, high = min(sizes), (cap if open_ended else max(sizes))
        if self.version.reasoning:
            low, high = low + REASONING_TOKENS[0], high + REASONING_TOKENS[1]
        return min(low, cap), min(high, cap)

    def cached_task_ids(self, tasks: Sequence[TaskInput]) -> set[int]:
        """Return the ids of the tasks whose request is in the response cache (sync example hooks only)."""
        mode = self.known_mode()
        keys: dict[str, list[int]] = {}
        for task in tasks:
            examples = self.examples_for(task) if self.examples_for is not None else ()
            if isinstance(examples, Awaitable):
                close = getattr(examples, "close", None)
                if close is not None:
                    close()
                continue
            try:
                messages = self._render(task, examples, mode)
            except LabelpilotError:
                continue
            keys.setdefault(self.request_key(messages, mode), []).append(task.task_id)
        hits = self._cached_responses(list(keys))
        return {task_id for key in hits for task_id in keys[key]}

    def has_cached_responses(self) -> bool:
        """Whether the response cache holds any reply of this model."""
        if self.db is None:
            return False
        with self.db.session() as session:
            found = session.scalar(
                select(ResponseCache.key).where(ResponseCache.model == self.model_settings.model).limit(1)
            )
        return found is not None


def _text_tokens(text: str, model: str) -> int:
    """Tokens of a bare text (estimate_prompt_tokens counts a message's overhead too)."""
    return estimate_prompt_tokens([AIMessage(content=text)], model) - TOKENS_PER_MESSAGE


def _error_text(error: ModelCallError, attempts: int) -> str:
    text = error.message
    if error.retryable and attempts > 1:
        text += f" (after {attempts} attempts)"
    return text


def _unplaced_note(unplaced: object) -> str | None:
    """Spans the model gave that are not in the text: reported with the prediction, never dropped silently."""
    if not isinstance(unplaced, list) or not unplaced:
        return None
    shown = "; ".join(f"{item.get('text', item)!r}: {item.get('reason', '')}" for item in unplaced[:5])
    return f"{len(unplaced)} span(s) could not be placed in the text and were left out: {shown}"
