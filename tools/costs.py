"""What labeling costs: a price table, the cost of one reply, and the estimate shown before a job.

Prices are USD per 1 million tokens: input, cached input (prompt-cache hits, part of the input) and output.
The built-in table below holds OpenAI's list prices; a file in the data folder overrides or extends it:

`<LABELPILOT_HOME>/prices.toml` (or `prices.json` with the same shape)::

    # USD per 1M tokens. Entries replace the built-in ones with the same name.
    [models."gpt-4o-mini"]
    input = 0.15
    cached_input = 0.075   # optional; defaults to `input`
    output = 0.60

    [models."llama-3.1-8b-instruct"]   # a local server: free by configuration
    input = 0
    output = 0

Model names match case-insensitively, also with a dated snapshot suffix (`gpt-4o-2024-08-06` → `gpt-4o`)
or a provider prefix (`openai/gpt-4o`). A model that matches nothing has an unknown cost: costs are None
(never a made-up 0) and the estimate says how to add a price.

How an estimate is made (`estimate_job`): the tasks of the job's scope are counted in the database; what
a resumed run already labeled is left out; tasks whose content repeats another task of the job are sent
once; answers already in the response cache cost nothing. The input tokens per request are measured on the
rendered prompts of a sample of the pending tasks (`tools.prompting.estimate_prompt_tokens`: tiktoken when its
encoding file is cached offline, else characters / 4) and multiplied by the number of requests. The output
size comes from the label schema (the shortest and longest valid answers; free text and spans can run up to
`max_output_tokens`). Low = shortest answers and, when the static prompt prefix is long enough for the
provider's prompt caching (≥ 1,024 tokens), that prefix at the cached price; high = longest answers and no
caching. Repair requests (a second request for an unusable reply) and retries are not included. The Batch
API costs half. The time is the number of requests at the configured requests per minute.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.errors import ConfigError
from tools.labelers import Labeler, TaskInput
from tools.settings import Settings

if TYPE_CHECKING:
    from tools.engine import JobScope
    from tools.storage import Database

PRICES_FILES = ("prices.toml", "prices.json")
#: The provider caches a prompt prefix only from this many tokens on (OpenAI's documented minimum).
MIN_CACHEABLE_PREFIX_TOKENS = 1024
BATCH_DISCOUNT = 0.5
DEFAULT_SAMPLE_SIZE = 50


class ModelPrice(BaseModel):
    """USD per 1 million tokens for one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0, description="Defaults to the input price.")
    output: float = Field(ge=0)

    @property
    def cached_input_price(self) -> float:
        """The price of cached input tokens (the input price when none is given)."""
        return self.input if self.cached_input is None else self.cached_input

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """Return the USD cost of one usage; `input_tokens` includes the cached ones (as OpenAI reports)."""
        cached = min(max(cached_tokens, 0), max(input_tokens, 0))
        fresh = max(input_tokens, 0) - cached
        return (
            fresh * self.input + cached * self.cached_input_price + max(output_tokens, 0) * self.output
        ) / 1_000_000


#: OpenAI list prices, USD per 1M tokens (standard tier). Checked 2026-12-01 against OpenAI's model pages
#: (developers.openai.com/docs/models: gpt-5.5, gpt-5.4, gpt-5.4-mini) and published price tables quoting
#: openai.com/api/pricing (GitHub's Copilot pricing table, 2026; docs.rs openai-cost, 2026-Q2). Prices change:
#: override them in <LABELPILOT_HOME>/prices.toml.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-5.5": ModelPrice(input=5.00, cached_input=0.50, output=30.00),
    "gpt-5.4": ModelPrice(input=2.50, cached_input=0.25, output=15.00),
    "gpt-5.4-mini": ModelPrice(input=0.75, cached_input=0.075, output=4.50),
    "gpt-5.4-nano": ModelPrice(input=0.20, cached_input=0.02, output=1.25),
    "gpt-5": ModelPrice(input=1.25, cached_input=0.125, output=10.00),
    "gpt-5-mini": ModelPrice(input=0.25, cached_input=0.025, output=2.00),
    "gpt-5-nano": ModelPrice(input=0.05, cached_input=0.005, output=0.40),
    "gpt-4.1": ModelPrice(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4.1-mini": ModelPrice(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1-nano": ModelPrice(input=0.10, cached_input=0.025, output=0.40),
    "gpt-4o": ModelPrice(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4o-mini": ModelPrice(input=0.15, cached_input=0.075, output=0.60),
    "o3": ModelPrice(input=2.00, cached_input=0.50, output=8.00),
    "o4-mini": ModelPrice(input=1.10, cached_input=0.275, output=4.40),
}
PRICES_CHECKED = "2026-12-01"

_DATED_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _normalise(model: str) -> str:
    return model.strip().lower()


def _candidates(model: str) -> list[str]:
    name = _normalise(model)
    names = [name]
    if "/" in name:
        names.append(name.rsplit("/", 1)[1])
    names += [_DATED_SUFFIX.sub("", n) for n in list(names) if _DATED_SUFFIX.search(n)]
    return names


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice] = Field(default_factory=dict)


class PriceTable:
    """Prices by model name: the built-in table plus the overrides of a prices file."""

    def __init__(self, prices: Mapping[str, ModelPrice], *, source: str = "built-in") -> None:
        self._prices = {_normalise(name): price for name, price in prices.items()}
        self.source = source

    @classmethod
    def load(cls, settings: Settings) -> PriceTable:
        """Return the built-in prices overridden by `<home>/prices.toml` (or `prices.json`) if present."""
        for name in PRICES_FILES:
            path = settings.home / name
            if path.is_file():
                overrides = read_price_file(path)
                return cls({**DEFAULT_PRICES, **overrides}, source=f"built-in + {path}")
        return cls(DEFAULT_PRICES)

    def price_for(self, model: str) -> ModelPrice | None:
        """Return the price of a model (dated snapshots and provider prefixes match), or None."""
        for name in _candidates(model):
            if name in self._prices:
                return self._prices[name]
        return None

    def cost(self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float | None:
        """Return the USD cost of one usage, or None when the model's price is unknown."""
        price = self.price_for(model)
        return None if price is None else price.cost(input_tokens, output_tokens, cached_tokens)

    def note_for(self, model: str) -> str | None:
        """Return a sentence explaining an unknown price (None when the price is known)."""
        if self.price_for(model) is not None:
            return None
        return (
            f"no price is known for model '{model}', so its cost is not computed; add it to "
            f"prices.toml in the data folder (input = 0, output = 0 for a free local server)"
        )


def read_price_file(path: Path) -> dict[str, ModelPrice]:
    """Read a prices.toml / prices.json file; raise ConfigError naming the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the price file {path}: {exc}") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"the price file {path} is not valid {path.suffix[1:].upper()}: {exc}",
            hint='write one [models."NAME"] table per model with input, output and optional cached_input',
        ) from exc
    try:
        parsed = _PriceFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(
            f"the price file {path} has invalid entries ({problems})",
            hint="prices are USD per 1M tokens: input, output and optional cached_input, each >= 0",
        ) from exc
    return {_normalise(name): price for name, price in parsed.models.items()}


# ---------------------------------------------------------------------------------------------- estimates


class PromptSize(BaseModel):
    """The estimated input tokens of one request and how many of them are the static prefix."""

    tokens: int
    static_prefix_tokens: int = 0


@runtime_checkable
class PricedLabeler(Protocol):
    """What a labeler that calls a priced model tells the estimator (the LLM labeler implements it)."""

    @property
    def model_name(self) -> str:
        """The model requests go to."""
        ...

    @property
    def requests_per_minute(self) -> float:
        """The configured request rate."""
        ...

    def prompt_size(self, task: TaskInput) -> PromptSize:
        """Estimate the input tokens of the request for one task."""
        ...

    def output_token_range(self) -> tuple[int, int]:
        """Return the fewest and the most output tokens a valid answer takes."""
        ...

    def cached_task_ids(self, tasks: Sequence[TaskInput]) -> set[int]:
        """Return the ids of the tasks whose request is already in the response cache."""
        ...

    def has_cached_responses(self) -> bool:
        """Whether the response cache holds anything for this model (lets the estimate skip a full scan)."""
        ...


class CostEstimate(BaseModel):
    """What a job will cost and take, before it runs."""

    model: str
    tasks: int = Field(description="Tasks in the job's scope.")
    already_done: int = Field(description="Tasks a resumed run already labeled.")
    to_label: int = Field(description="Tasks left to label.")
    duplicates: int = Field(description="Of those, tasks whose content repeats another: sent once.")
    cached: int = Field(description="Requests answered from the response cache (no cost).")
    requests: int = Field(description="Requests to send (retries and repairs not included).")
    sample_size: int = Field(description="Pending tasks whose prompts were rendered and measured.")
    input_tokens_per_request: float
    static_prefix_tokens: int = Field(description="Tokens of the prompt prefix shared by every request.")
    output_tokens_low: int = Field(description="Per request.")
    output_tokens_high: int = Field(description="Per request.")
    input_tokens: int = Field(description="Total for all requests.")
    output_tokens_low_total: int
    output_tokens_high_total: int
    price: ModelPrice | None
    usd_low: float | None
    usd_high: float | None
    batch_usd_low: float | None = Field(description="With the Batch API (half price).")
    batch_usd_high: float | None
    rpm: float | None
    seconds: float | None = Field(description="Time to send every request at the configured RPM.")
    token_count_method: str
    notes: list[str] = Field(default_factory=list)


def _token_method(model: str) -> str:
    from tools.prompting import token_count_method

    return token_count_method(model)


def price_requests(
    *,
    model: str,
    prices: PriceTable,
    requests: int,
    input_tokens_per_request: float,
    static_prefix_tokens: int,
    output_tokens: tuple[int, int],
) -> tuple[ModelPrice | None, float | None, float | None]:
    """Return (price, low USD, high USD) for `requests` requests of the given sizes."""
    price = prices.price_for(model)
    if price is None:
        return None, None, None
    input_total = requests * input_tokens_per_request
    cacheable = static_prefix_tokens if static_prefix_tokens >= MIN_CACHEABLE_PREFIX_TOKENS else 0
    cached_total = requests * min(cacheable, input_tokens_per_request)
    low = (
        (input_total - cached_total) * price.input
        + cached_total * price.cached_input_price
        + requests * output_tokens[0] * price.output
    ) / 1_000_000
    high = (input_total * price.input + requests * output_tokens[1] * price.output) / 1_000_000
    return price, low, high


def estimate_job(
    db: Database,
    project: str | int,
    labeler: Labeler,
    *,
    scope: JobScope | None = None,
    kind: str = "label",
    new_run: bool = False,
    run_id: int | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    prices: PriceTable | None = None,
) -> CostEstimate:
    """Estimate what running `labeler` over `scope` will send, cost and take (see the module docstring).

    Nothing is sent to any model. Tasks the job's existing run labeled count as done (unless `new_run`);
    `run_id` estimates what resuming that run would do.
    """
    from tools.engine import JobScope, RunKind, count_scope, iter_pending, iter_pending_chunks, job_plan

    scope = scope or JobScope()
    plan = job_plan(db, project, labeler, scope=scope, kind=RunKind(kind), run_id=run_id)
    if new_run:
        plan = replace(plan, run_id=None, run_status=None)
    counts = count_scope(db, plan)
    notes: list[str] = []
    if not isinstance(labeler, PricedLabeler):
        return CostEstimate(
            model=labeler.info.model,
            tasks=counts.total,
            already_done=counts.done,
            to_label=counts.pending,
            duplicates=counts.pending - counts.pending_unique,
            cached=0,
            requests=0,
            sample_size=0,
            input_tokens_per_request=0.0,
            static_prefix_tokens=0,
            output_tokens_low=0,
            output_tokens_high=0,
            input_tokens=0,
            output_tokens_low_total=0,
            output_tokens_high_total=0,
            price=ModelPrice(input=0, output=0),
            usd_low=0.0,
            usd_high=0.0,
            batch_usd_low=0.0,
            batch_usd_high=0.0,
            rpm=None,
            seconds=None,
            token_count_method="none",
            notes=[f"the {labeler.info.kind.value} labeler makes no model calls: it costs nothing"],
        )
    prices = prices or PriceTable(DEFAULT_PRICES)
    sample = [task for task in iter_pending(db, plan, order_by_hash=True, limit=max(1, sample_size))]
    sizes = [labeler.prompt_size(task) for task in sample]
    per_request = sum(s.tokens for s in sizes) / len(sizes) if sizes else 0.0
    static_prefix = min((s.static_prefix_tokens for s in sizes), default=0)
    cached = 0
    if counts.pending_unique and labeler.has_cached_responses():
        # Every pending task is rendered and looked up, a chunk at a time; a content counts once.
        cached_hashes: set[str] = set()
        for chunk in iter_pending_chunks(db, plan):
            hits = labeler.cached_task_ids(chunk)
            cached_hashes.update(task.content_hash for task in chunk if task.task_id in hits)
        cached = len(cached_hashes)
    requests = max(0, counts.pending_unique - cached)
    low_out, high_out = labeler.output_token_range()
    model = labeler.model_name
    price, usd_low, usd_high = price_requests(
        model=model,
        prices=prices,
        requests=requests,
        input_tokens_per_request=per_request,
        static_prefix_tokens=static_prefix,
        output_tokens=(low_out, high_out),
    )
    if price is None:
        notes.append(prices.note_for(model) or "")
    if len(sample) < counts.pending_unique:
        notes.append(f"input tokens measured on {len(sample)} of {counts.pending_unique:,} distinct tasks")
    rpm = labeler.requests_per_minute
    return CostEstimate(
        model=model,
        tasks=counts.total,
        already_done=counts.done,
        to_label=counts.pending,
        duplicates=counts.pending - counts.pending_unique,
        cached=cached,
        requests=requests,
        sample_size=len(sample),
        input_tokens_per_request=round(per_request, 1),
        static_prefix_tokens=static_prefix,
        output_tokens_low=low_out,
        output_tokens_high=high_out,
        input_tokens=math.ceil(requests * per_request),
        output_tokens_low_total=requests * low_out,
        output_tokens_high_total=requests * high_out,
        price=price,
        usd_low=usd_low,
        usd_high=usd_high,
        batch_usd_low=None if usd_low is None else usd_low * BATCH_DISCOUNT,
        batch_usd_high=None if usd_high is None else usd_high * BATCH_DISCOUNT,
        rpm=rpm,
        seconds=requests / rpm * 60 if rpm else None,
        token_count_method=_token_method(model),
        notes=notes,
    )


# ---------------------------------------------------------------------- for people


def money(value: float | None, *, unknown: str = "unknown") -> str:
    """A cost for people: $0.0012 below a dollar, $12.34 above; `unknown` without a price."""
    if value is None:
        return unknown
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def duration(seconds: float | None) -> str:
    """Seconds, minutes or hours, whichever reads best; 'unknown' without an estimate."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
