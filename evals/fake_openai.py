"""A fake OpenAI-compatible server for benchmarks and end-to-end tests: `python -m evals.fake_openai --port N`.

It answers `POST /v1/chat/completions` with JSON that is valid for the schema in the request
(`response_format` json_schema, llama.cpp's `json_object` + `schema`, a schema found in the prompt, or a forced
tool call), deterministically: an enum `label` is the value the task text names (see `pick_enum`) unless a
scripted rule says otherwise. It enforces an RPM (and optional TPM) limit the way OpenAI reports it
(`x-ratelimit-*` headers, 429 with `retry-after-ms`), injects seeded faults (429, 500, hung requests,
truncated JSON), adds latency, serves the Batch API flow (`/v1/files`, `/v1/batches`) and counts everything
(`GET /stats`, `POST /reset`).

As a library::

    with FakeOpenAIServer(FakeServerConfig(rpm=600, p429=0.1)) as server:  # or `async with`
        client = httpx.Client(base_url=server.url)  # http://127.0.0.1:PORT/v1
        ...
        server.stats().rate_limited

Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tools.ratelimit import TokenBucket

HOST = "127.0.0.1"
FAKE_MODEL = "fake-model"

#: A scripted answer: given the last user message, return the `label` value to answer, or None for the default.
LabelAnswer = Callable[[str], JsonValue | None]


class AnswerRule(BaseModel):
    """One line of an `--answers` JSONL file: when the last user message contains `contains`, answer `label`."""

    model_config = ConfigDict(extra="forbid")

    contains: str = Field(min_length=1)
    label: JsonValue
    logprob: float | None = Field(default=None, le=0, description="Logprob of the label token for this rule.")


class FakeServerConfig(BaseModel):
    """How the fake server behaves: limits, latency, fault probabilities and answer rules."""

    model_config = ConfigDict(extra="forbid")

    rpm: float = Field(default=3000, gt=0)
    tpm: float | None = Field(default=None, gt=0, description="Token limit; token headers only when set.")
    burst_seconds: float = Field(
        default=1.0, gt=0, description="Bucket capacity in seconds of the rate: the burst the server allows."
    )
    latency_ms: float = Field(default=50, ge=0)
    jitter_ms: float = Field(default=10, ge=0)
    p429: float = Field(default=0.0, ge=0, le=1, description="429 even under the limit.")
    p500: float = Field(default=0.0, ge=0, le=1)
    ptimeout: float = Field(default=0.0, ge=0, le=1, description="Hold the request; the client times out.")
    pbadjson: float = Field(default=0.0, ge=0, le=1, description="A 200 whose JSON content is truncated.")
    seed: int = 0
    timeout_hold_s: float = Field(default=30.0, ge=0)
    json_schema: bool = Field(
        default=True,
        description="False: refuse json_schema and tool_choice 'required' with 500, like llama.cpp.",
    )
    label_logprob: float = Field(default=-0.05, le=0, description="Logprob of the label token.")
    batch_phase_s: float = Field(
        default=0.5, ge=0, description="Seconds a batch spends validating, then running."
    )
    answers: list[AnswerRule] = Field(default_factory=list)
    api_key: str | None = Field(default=None, description="When set, other bearer tokens get 401.")

    @model_validator(mode="after")
    def _probabilities_fit(self) -> FakeServerConfig:
        if self.p429 + self.p500 + self.ptimeout + self.pbadjson > 1:
            raise ValueError("p429 + p500 + ptimeout + pbadjson must not exceed 1")
        return self


def load_answers(path: Path) -> list[AnswerRule]:
    """Read an answers JSONL file (`{"contains": ..., "label": ..., "logprob": ...}` per line)."""
    rules = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rules.append(AnswerRule.model_validate_json(line))
            except ValidationError as error:
                raise ValueError(f"{path}, line {number}: {error}") from error
    return rules


class FakeServerStats(BaseModel):
    """What the server saw on `/v1/chat/completions` since the start or the last reset."""

    requests: int = 0
    ok: int = Field(default=0, description="200 replies, bad JSON ones included.")
    rate_limited: int = Field(default=0, description="429 replies: over the limit plus injected.")
    rate_limited_injected: int = 0
    server_errors: int = 0
    timeouts: int = 0
    bad_json: int = 0
    client_errors: int = Field(default=0, description="400/401 replies.")
    elapsed_s: float = Field(default=0.0, description="From the first to the last request's arrival.")
    accepted_per_second: float = Field(default=0.0, description="200s over elapsed_s.")
    peak_accepted_per_second: float = Field(default=0.0, description="Most 200s arriving in any 1 s window.")
    events: list[tuple[float, int]] = Field(
        default_factory=list, description="(arrival seconds since the first request, status); 504 = held."
    )


# ============================================================================ answers


def _hash_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def _word_pattern(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE)


def pick_enum(values: Sequence[JsonValue], text: str, key: str) -> JsonValue:
    """Pick the enum value the text names, else one chosen by a hash of the text.

    A string value "is named" when it occurs as a whole word, case-insensitively. The value named most often
    wins (ties: the one named last); when every value is named equally often the text is only listing the
    choices, so that says nothing and the hash decides.
    """
    named = matched_enum_values(values, text)
    if named:
        return named[0]
    return values[_hash_int(text, key) % len(values)] if values else None


def matched_enum_values(values: Sequence[JsonValue], text: str) -> list[JsonValue]:
    """Return the values the text names, best first (see `pick_enum`); empty when none stands out."""
    scores: list[tuple[int, int, JsonValue]] = []
    for value in values:
        if isinstance(value, str) and value:
            hits = [match.start() for match in _word_pattern(value).finditer(text)]
            scores.append((len(hits), hits[-1] if hits else -1, value))
    counts = {count for count, _, _ in scores}
    if not scores or counts == {0} or (len(scores) == len(values) > 1 and len(counts) == 1):
        return []
    top = max(count for count, _, _ in scores)
    best = sorted((s for s in scores if s[0] == top), key=lambda s: -s[1])
    rest = sorted((s for s in scores if 0 < s[0] < top), key=lambda s: (-s[0], -s[1]))
    return [value for _, _, value in [*best, *rest]]


_TEXT_MARKERS = (
    re.compile(r"<text>(.*?)</text>", re.IGNORECASE | re.DOTALL),
    re.compile(r"(?:^|\n)\s*(?:text|input)\s*:\s*(.+)$", re.IGNORECASE | re.DOTALL),
)


def task_text(message: str) -> str:
    """Return the part of a user message that is the text to label: `<text>…</text>`, after `Text:`, or all."""
    for pattern in _TEXT_MARKERS:
        found = pattern.findall(message)
        if found:
            return str(found[-1]).strip()
    return message


@dataclass
class _AnswerContext:
    message: str  # the last user message
    text: str  # the task text in it
    defs: dict[str, Any]
    label: JsonValue | None  # a scripted label, or None
    key: str = ""


_NUMBER_RANGES = (
    (re.compile(r"(?:from|between)\s+(-?\d+(?:\.\d+)?)\s+(?:to|and)\s+(-?\d+(?:\.\d+)?)"), "both"),
    (re.compile(r"at least\s+(-?\d+(?:\.\d+)?)"), "low"),
    (re.compile(r"at most\s+(-?\d+(?:\.\d+)?)"), "high"),
)
_LABEL_FIELDS = ("label", "labels")


def answer_for_schema(schema: dict[str, Any], *, message: str, label: JsonValue | None = None) -> JsonValue:
    """Return a value valid for `schema`, derived deterministically from the last user message."""
    context = _AnswerContext(
        message=message,
        text=task_text(message),
        defs={**schema.get("definitions", {}), **schema.get("$defs", {})},
        label=label,
    )
    return _generate(schema, context, "$")


def _resolve(schema: dict[str, Any], context: _AnswerContext) -> dict[str, Any]:
    for _ in range(32):  # $ref chains are short; a cycle must not hang the server
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            return schema
        name = ref.rsplit("/", 1)[-1]
        schema = {**context.defs.get(name, {}), **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _schema_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return str(kinds[0]) if kinds else "null"
    if kind is None and "properties" in schema:
        return "object"
    return str(kind) if kind is not None else None


def _generate(schema: dict[str, Any], context: _AnswerContext, path: str) -> JsonValue:
    schema = _resolve(schema, context)
    for keyword in ("anyOf", "oneOf", "allOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options:
            usable = [o for o in options if isinstance(o, dict) and _schema_type(o) != "null"] or options
            return _generate({**schema, keyword: None, **usable[0]}, context, path)
    if "const" in schema:
        return schema["const"]  # type: ignore[no-any-return]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return pick_enum(schema["enum"], context.text, path)
    kind = _schema_type(schema)
    generators: dict[str | None, Callable[[dict[str, Any], _AnswerContext, str], JsonValue]] = {
        "object": _generate_object,
        "array": _generate_array,
        "string": _generate_string,
        "integer": _generate_integer,
        "number": _generate_number,
        "boolean": lambda _s, c, p: _hash_int(c.text, p) % 2 == 0,
        "null": lambda _s, _c, _p: None,
    }
    return generators.get(kind, _generate_string)(schema, context, path)


def _generate_object(schema: dict[str, Any], context: _AnswerContext, path: str) -> JsonValue:
    result: dict[str, JsonValue] = {}
    properties = schema.get("properties") or {}
    for name, sub in properties.items():
        if path == "$" and name in _LABEL_FIELDS and context.label is not None:
            result[name] = context.label
        else:
            result[name] = _generate(sub if isinstance(sub, dict) else {}, context, f"{path}.{name}")
    return result


def _generate_array(schema: dict[str, Any], context: _AnswerContext, path: str) -> JsonValue:
    items = _resolve(schema.get("items") or {}, context)
    low = int(schema.get("minItems", 0))
    high = int(schema.get("maxItems", max(low, 1) + 2))
    enum = items.get("enum")
    if isinstance(enum, list) and enum:
        chosen = matched_enum_values(enum, context.text) or [pick_enum(enum, context.text, path)]
        chosen = [value for value in enum if value in chosen]  # declaration order, no duplicates
        for value in enum:
            if len(chosen) >= low:
                break
            if value not in chosen:
                chosen.append(value)
        return chosen[: max(high, 0)]
    count = min(max(low, 1), max(high, 0))
    properties = items.get("properties") or {}
    if "text" in properties and "label" in properties:
        return [_span(items, context, f"{path}[{index}]") for index in range(count)]
    return [_generate(items, context, f"{path}[{index}]") for index in range(count)]


def _span(items: dict[str, Any], context: _AnswerContext, path: str) -> JsonValue:
    """A {text, label} item whose text is a word copied from the task text."""
    words = re.findall(r"\w{3,}", context.text)[:200] or re.findall(r"\S+", context.text)[:200] or ["?"]
    word = words[_hash_int(context.text, path) % len(words)]
    span = _generate_object(items, context, path)
    assert isinstance(span, dict)
    span["text"] = word
    label_schema = _resolve(items["properties"]["label"], context)
    if isinstance(label_schema.get("enum"), list) and label_schema["enum"]:
        span["label"] = pick_enum(label_schema["enum"], word, path)
    return span


def _generate_string(schema: dict[str, Any], context: _AnswerContext, path: str) -> JsonValue:
    words = context.text.split()[:8]
    text = "Because the text says: " + " ".join(words) if words else "No text was given."
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(text) < low:
        text = text + "." * (low - len(text))
    return text[: int(high)] if high is not None else text


def _bounds(schema: dict[str, Any], default: tuple[float, float]) -> tuple[float, float]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    description = str(schema.get("description", ""))
    for pattern, which in _NUMBER_RANGES:
        match = pattern.search(description)
        if match:
            if which == "both":
                low = low if low is not None else float(match.group(1))
                high = high if high is not None else float(match.group(2))
            elif which == "low" and low is None:
                low = float(match.group(1))
            elif which == "high" and high is None:
                high = float(match.group(1))
    low = float(low) if low is not None else (float(high) - 1 if high is not None else default[0])
    high = float(high) if high is not None else max(low + 1, default[1])
    return low, high


def _generate_integer(schema: dict[str, Any], context: _AnswerContext, path: str) -> JsonValue:
    low, high = _bounds(schema, (0, 10))
    first, last = math.ceil(low), math.floor(high)
    if "exclusiveMinimum" in schema and first == low:
        first += 1
    if "exclusiveMaximum" in schema and last == high:
        last -= 1
    return first + _hash_int(context.text, path) % max(1, last - first + 1)


def _generate_number(schema: dict[str, Any], context: _AnswerContext, path: str) -> JsonValue:
    low, high = _bounds(schema, (0.0, 1.0))
    fraction = 0.05 + 0.9 * (_hash_int(context.text, path) % 1000) / 1000  # inside, so exclusive bounds hold
    return round(low + (high - low) * fraction, 4)


def schema_in_prompt(messages: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the first JSON schema (an object with `properties`) written into any message, if any."""
    decoder = json.JSONDecoder()
    for message in messages:
        text = _content_text(message.get("content"))
        starts = [match.start() for match in re.finditer(r"\{", text)][:100]
        for start in starts:
            try:
                found, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            if isinstance(found, dict) and isinstance(found.get("properties"), dict):
                return found
    return None


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


# ============================================================================ logprobs

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
_JUNK_TOKENS = ('"', " ", "\n", "{", "the", ",", "}", ":", "a", "of")


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": round(logprob, 6), "bytes": list(token.encode())}


def content_logprobs(
    content: str,
    *,
    label_offset: int | None,
    label_logprob: float,
    alternatives: Sequence[str],
    top: int,
) -> dict[str, Any]:
    """Return a `choices[0].logprobs` object for `content`, split into tokens by a simple regex.

    The token starting at `label_offset` gets `label_logprob`; its top alternatives are `alternatives`
    sharing the rest of the probability. Other tokens are near-certain.
    """
    entries = []
    for match in _TOKEN.finditer(content):
        token = match.group()
        if match.start() == label_offset:
            chosen = label_logprob
            rest = max(1e-9, 1 - math.exp(label_logprob))
            others = [
                (alt, math.log(rest / max(1, len(alternatives))) - 0.01 * index)
                for index, alt in enumerate(alternatives)
            ]
        else:
            chosen = -(_hash_int(token, str(match.start())) % 1000) / 100_000
            others = [
                (junk, -8.0 - index - (_hash_int(token, junk) % 100) / 100)
                for index, junk in enumerate(j for j in _JUNK_TOKENS if j != token)
            ]
        candidates = sorted([(token, chosen), *others], key=lambda pair: -pair[1])[:top]
        entry = _token_entry(token, chosen)
        entry["top_logprobs"] = [_token_entry(t, lp) for t, lp in candidates]
        entries.append(entry)
    return {"content": entries, "refusal": None}


# ============================================================================ server state


def format_duration(seconds: float) -> str:
    """Format a reset time the way OpenAI's headers do: '20ms', '1.5s', '6m0s'."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def _estimate_tokens(chars: int) -> int:
    return max(1, round(chars / 4))


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _error_body(
    message: str, *, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


Outcome = Literal["ok", "429", "500", "timeout", "badjson"]

_PREFIX_BLOCK_CHARS = 512  # 128 tokens: the granularity of OpenAI's prompt cache
_PREFIX_MIN_CHARS = 4096  # 1,024 tokens: shorter prompts are never cached
_PREFIX_CACHE_SIZE = 100_000


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None
    created_at: int
    created_mono: float
    lines: list[dict[str, Any]]  # the output lines, computed at creation
    errors: list[dict[str, Any]]  # validation errors: the batch fails
    cancelled_mono: float | None = None
    cancelled_at: int | None = None
    cancelled_done: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    finished_at: int | None = None


@dataclass
class _State:
    config: FakeServerConfig
    answer: LabelAnswer | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)
    rng: random.Random = field(init=False)
    requests: TokenBucket = field(init=False)
    tokens: TokenBucket | None = field(init=False)
    stats: FakeServerStats = field(default_factory=FakeServerStats)
    first_arrival: float | None = None
    prefixes: OrderedDict[str, None] = field(default_factory=OrderedDict)
    files: dict[str, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    batches: dict[str, _Batch] = field(default_factory=dict)
    counter: int = 0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the counters and refill the limits; files and batches stay."""
        config, now = self.config, time.monotonic()
        with self.lock:
            self.rng = random.Random(config.seed)
            per_second = config.rpm / 60
            self.requests = TokenBucket(
                rate=per_second, capacity=max(1.0, per_second * config.burst_seconds), now=now
            )
            self.tokens = None
            if config.tpm:
                tokens_per_second = config.tpm / 60
                self.tokens = TokenBucket(
                    rate=tokens_per_second,
                    capacity=max(1.0, tokens_per_second * config.burst_seconds),
                    now=now,
                )
            self.stats = FakeServerStats()
            self.first_arrival = None
            self.prefixes.clear()

    # ------------------------------------------------------------------ limits

    def admit(self, cost: int) -> tuple[float | None, dict[str, str]]:
        """Spend one request and `cost` tokens, or return the seconds until they are there; plus headers."""
        now = time.monotonic()
        with self.lock:
            waits = [self.requests.wait_time(1, now)]
            if self.tokens:
                waits.append(self.tokens.wait_time(min(cost, self.tokens.capacity), now))
            wait = max(waits)
            if wait <= 0:
                self.requests.take(1, now)
                if self.tokens:
                    self.tokens.take(min(cost, self.tokens.capacity), now)
            return (wait if wait > 0 else None), self.limit_headers(now)

    def limit_headers(self, now: float) -> dict[str, str]:
        """The `x-ratelimit-*` headers for the bucket levels at `now` (call with the lock held)."""
        headers = {
            "x-ratelimit-limit-requests": f"{self.config.rpm:g}",
            "x-ratelimit-remaining-requests": str(max(0, math.floor(self.requests.refill(now)))),
            "x-ratelimit-reset-requests": format_duration(self.requests.seconds_to_full(now)),
        }
        if self.tokens and self.config.tpm:
            headers.update(
                {
                    "x-ratelimit-limit-tokens": f"{self.config.tpm:g}",
                    "x-ratelimit-remaining-tokens": str(max(0, math.floor(self.tokens.refill(now)))),
                    "x-ratelimit-reset-tokens": format_duration(self.tokens.seconds_to_full(now)),
                }
            )
        return headers

    def current_headers(self) -> dict[str, str]:
        with self.lock:
            return self.limit_headers(time.monotonic())

    def roll(self) -> tuple[Outcome, float]:
        """Draw this request's fault and latency (seconds) from the seeded generator."""
        config = self.config
        with self.lock:
            draw = self.rng.random()
            jitter = self.rng.uniform(-config.jitter_ms, config.jitter_ms)
        latency = max(0.0, config.latency_ms + jitter) / 1000
        faults: tuple[tuple[Outcome, float], ...] = (
            ("429", config.p429),
            ("500", config.p500),
            ("timeout", config.ptimeout),
            ("badjson", config.pbadjson),
        )
        for outcome, probability in faults:
            if draw < probability:
                return outcome, latency
            draw -= probability
        return "ok", latency

    # ------------------------------------------------------------------ stats

    def arrival(self) -> float:
        now = time.monotonic()
        with self.lock:
            if self.first_arrival is None:
                self.first_arrival = now
            self.stats.requests += 1
            return now - self.first_arrival

    def record(self, arrived: float, status: int, *, injected: bool = False, bad_json: bool = False) -> None:
        with self.lock:
            stats = self.stats
            stats.events.append((round(arrived, 6), status))
            if status == 200:
                stats.ok += 1
                stats.bad_json += bad_json
            elif status == 429:
                stats.rate_limited += 1
                stats.rate_limited_injected += injected
            elif status == 504:
                stats.timeouts += 1
            elif status >= 500:
                stats.server_errors += 1
            else:
                stats.client_errors += 1

    def snapshot(self) -> FakeServerStats:
        with self.lock:
            stats = self.stats.model_copy(deep=True)
        accepted = sorted(t for t, status in stats.events if status == 200)
        if stats.events:
            stats.elapsed_s = max(t for t, _ in stats.events)
        if accepted and stats.elapsed_s > 0:
            stats.accepted_per_second = len(accepted) / stats.elapsed_s
        peak, start = 0, 0
        for end, moment in enumerate(accepted):
            while moment - accepted[start] >= 1.0:
                start += 1
            peak = max(peak, end - start + 1)
        stats.peak_accepted_per_second = float(peak)
        return stats

    def cached_tokens(self, prompt: str) -> int:
        """Tokens of `prompt` in 128-token blocks whose prefix an earlier request sent (≥ 1,024 tokens)."""
        digest = hashlib.sha256()
        cached_blocks, still_cached = 0, True
        blocks = range(
            0, min(len(prompt), 256 * _PREFIX_BLOCK_CHARS) - _PREFIX_BLOCK_CHARS + 1, _PREFIX_BLOCK_CHARS
        )
        with self.lock:
            for start in blocks:
                digest.update(prompt[start : start + _PREFIX_BLOCK_CHARS].encode())
                key = digest.copy().hexdigest()
                if still_cached and key in self.prefixes:
                    cached_blocks += 1
                    self.prefixes.move_to_end(key)
                else:
                    still_cached = False
                    self.prefixes[key] = None
            while len(self.prefixes) > _PREFIX_CACHE_SIZE:
                self.prefixes.popitem(last=False)
        cached_chars = cached_blocks * _PREFIX_BLOCK_CHARS
        return _estimate_tokens(cached_chars) if cached_chars >= _PREFIX_MIN_CHARS else 0

    def next_number(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter


# ============================================================================ completions


class RequestError(Exception):
    """A request the fake rejects, with the status code and OpenAI-style error body to send."""

    def __init__(
        self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.body = _error_body(message, kind=kind, param=param)


@dataclass
class _Plan:
    """What a chat request asks for: a schema (or none), tool-call mode, logprobs."""

    schema: dict[str, Any] | None
    tool_name: str | None
    logprobs: bool
    top_logprobs: int


def _plan(body: dict[str, Any], config: FakeServerConfig) -> _Plan:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError(400, "'messages' must be a non-empty array of message objects", param="messages")
    if body.get("stream"):
        raise RequestError(400, "the fake server does not stream; send stream=false", param="stream")
    schema: dict[str, Any] | None = None
    tool_name: str | None = None
    tools = [
        t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    tool_choice = body.get("tool_choice")
    # With tools and any tool_choice but "none" ("auto" included) the fake calls a tool: the named one, else
    # the first; a deterministic stand-in for a model that decides to call it.
    if tools and tool_choice != "none":
        if tool_choice == "required" and not config.json_schema:
            raise RequestError(500, "tool_choice 'required' is not supported", kind="server_error")
        chosen = tools[0]["function"]
        if isinstance(tool_choice, dict):
            wanted = (tool_choice.get("function") or {}).get("name")
            chosen = next((t["function"] for t in tools if t["function"].get("name") == wanted), None)
            if chosen is None:
                raise RequestError(
                    400, f"tool_choice names an unknown function '{wanted}'", param="tool_choice"
                )
        tool_name = str(chosen.get("name", "tool"))
        schema = chosen.get("parameters") or {"type": "object", "properties": {}}
    else:
        response_format = body.get("response_format") or {}
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "json_schema":
            if not config.json_schema:
                raise RequestError(500, "response_format json_schema is not supported", kind="server_error")
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise RequestError(400, "json_schema.schema must be an object", param="response_format")
        elif kind == "json_object":
            given = response_format.get("schema")
            schema = given if isinstance(given, dict) else (schema_in_prompt(messages) or {"type": "object"})
        elif kind in (None, "text"):
            schema = schema_in_prompt(messages)
        else:
            raise RequestError(400, f"unknown response_format type '{kind}'", param="response_format")
    top = body.get("top_logprobs")
    return _Plan(
        schema=schema,
        tool_name=tool_name,
        logprobs=bool(body.get("logprobs")),
        top_logprobs=max(0, min(20, int(top))) if isinstance(top, int) else 0,
    )


def _last_user_message(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _scripted(state: _State, message: str) -> tuple[JsonValue | None, float | None]:
    if state.answer is not None:
        value = state.answer(message)
        if value is not None:
            return value, None
    lowered = message.lower()
    for rule in state.config.answers:
        if rule.contains.lower() in lowered:
            return rule.label, rule.logprob
    return None, None


def complete(state: _State, body: dict[str, Any], *, bad_json: bool = False) -> dict[str, Any]:
    """Return the chat.completion object answering `body` (raises RequestError for an invalid request)."""
    plan = _plan(body, state.config)
    messages: list[dict[str, Any]] = body["messages"]
    message = _last_user_message(messages)
    label, scripted_logprob = _scripted(state, message)
    content: str
    label_offset: int | None = None
    alternatives: list[str] = []
    if plan.schema is None:
        content = f"This is a fake answer to: {' '.join(task_text(message).split()[:12])}"
    else:
        value = answer_for_schema(plan.schema, message=message, label=label)
        content = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        label_value = value.get("label") if isinstance(value, dict) else None
        if isinstance(label_value, str):
            marker = '"label":' + json.dumps(label_value, ensure_ascii=False)
            position = content.find(marker)
            label_offset = position + len('"label":"') if position >= 0 else None
            enum = (plan.schema.get("properties", {}).get("label") or {}).get("enum") or []
            alternatives = [_TOKEN.findall(str(v))[0] for v in enum if v != label_value and str(v).strip()]
    if bad_json and content:
        content = content[: max(1, len(content) // 2)]
    prompt = "\n".join(_content_text(m.get("content")) for m in messages)
    prompt_tokens = _estimate_tokens(
        len(prompt) + len(json.dumps(plan.schema)) if plan.schema else len(prompt)
    )
    completion_tokens = _estimate_tokens(len(content))
    assistant: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    finish_reason = "stop"
    logprobs = None
    if plan.tool_name is not None:
        call = {
            "id": _new_id("call_"),
            "type": "function",
            "function": {"name": plan.tool_name, "arguments": content},
        }
        assistant.update(content=None, tool_calls=[call])
        finish_reason = "tool_calls"
    elif plan.logprobs:
        logprobs = content_logprobs(
            content,
            label_offset=label_offset,
            label_logprob=scripted_logprob if scripted_logprob is not None else state.config.label_logprob,
            alternatives=alternatives,
            top=plan.top_logprobs,
        )
    return {
        "id": f"chatcmpl-{state.next_number()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or FAKE_MODEL),
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": assistant, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": state.cached_tokens(prompt), "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }


def _request_cost(body: dict[str, Any]) -> int:
    """Tokens a request counts against TPM on arrival: its prompt plus the completion it may produce."""
    messages = body.get("messages")
    chars = sum(
        len(_content_text(m.get("content")))
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict)
    )
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or 16
    return _estimate_tokens(chars) + (int(completion) if isinstance(completion, int | float) else 16)


# ============================================================================ HTTP handlers


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


async def _hold(request: Request, seconds: float, closing: threading.Event) -> None:
    """Keep a request open for `seconds`, or until the client leaves or the server stops."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    deadline = time.monotonic() + seconds
    try:
        while not watcher.done() and not closing.is_set() and time.monotonic() < deadline:
            await asyncio.wait({watcher}, timeout=0.1)
    finally:
        watcher.cancel()


def _authorized(state: _State, request: Request) -> bool:
    expected = state.config.api_key
    return expected is None or request.headers.get("authorization") == f"Bearer {expected}"


def _unauthorized() -> JSONResponse:
    return _json(
        _error_body("Incorrect API key provided.", kind="invalid_request_error", code="invalid_api_key"), 401
    )


async def _read_json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    return body


def build_app(state: _State) -> Starlette:
    """Return the Starlette app serving the fake API over `state`."""

    async def chat_completions(request: Request) -> Response:
        arrived = state.arrival()
        if not _authorized(state, request):
            state.record(arrived, 401)
            return _unauthorized()
        try:
            body = await _read_json(request)
        except RequestError as error:
            state.record(arrived, error.status)
            return _json(error.body, error.status, state.current_headers())
        wait, headers = state.admit(_request_cost(body))
        if wait is not None:
            state.record(arrived, 429)
            return _rate_limited(wait, headers, state.config)
        outcome, latency = state.roll()
        await asyncio.sleep(latency)
        if outcome == "429":
            state.record(arrived, 429, injected=True)
            return _rate_limited(60 / state.config.rpm, headers, state.config)
        if outcome == "500":
            state.record(arrived, 500)
            message = "The server had an error while processing your request. Sorry about that!"
            return _json(_error_body(message, kind="server_error"), 500, headers)
        if outcome == "timeout":
            await _hold(request, state.config.timeout_hold_s, state.closing)
            state.record(arrived, 504)
            return _json(_error_body("The request timed out.", kind="timeout"), 504, headers)
        try:
            reply = complete(state, body, bad_json=outcome == "badjson")
        except RequestError as error:
            state.record(arrived, error.status)
            return _json(error.body, error.status, headers)
        state.record(arrived, 200, bad_json=outcome == "badjson")
        return _json(reply, 200, headers)

    async def models(request: Request) -> Response:
        model = {"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "labelpilot"}
        return _json({"object": "list", "data": [model]})

    async def stats(request: Request) -> Response:
        return _json(state.snapshot().model_dump(mode="json"))

    async def reset(request: Request) -> Response:
        state.reset()
        return _json({"reset": True})

    async def upload_file(request: Request) -> Response:
        if not _authorized(state, request):
            return _unauthorized()
        async with request.form() as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile) or not isinstance(purpose, str):
                return _json(
                    _error_body("send multipart fields 'file' and 'purpose'", kind="invalid_request_error"),
                    400,
                )
            data = await upload.read()
            name = upload.filename or "upload.jsonl"
        return _json(_store_file(state, data, filename=name, purpose=purpose))

    async def get_file(request: Request) -> Response:
        stored = state.files.get(request.path_params["file_id"])
        return _json(stored[0]) if stored else _not_found("File", request.path_params["file_id"])

    async def file_content(request: Request) -> Response:
        stored = state.files.get(request.path_params["file_id"])
        if stored is None:
            return _not_found("File", request.path_params["file_id"])
        return Response(stored[1], media_type="application/octet-stream")

    async def create_batch(request: Request) -> Response:
        if not _authorized(state, request):
            return _unauthorized()
        try:
            batch = _create_batch(state, await _read_json(request))
        except RequestError as error:
            return _json(error.body, error.status)
        return _json(_batch_view(state, batch))

    async def get_batch(request: Request) -> Response:
        batch = state.batches.get(request.path_params["batch_id"])
        return (
            _json(_batch_view(state, batch))
            if batch
            else _not_found("Batch", request.path_params["batch_id"])
        )

    async def cancel_batch(request: Request) -> Response:
        batch = state.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _not_found("Batch", request.path_params["batch_id"])
        view = _batch_view(state, batch)
        if view["status"] not in ("validating", "in_progress"):
            message = f"Cannot cancel a batch with status '{view['status']}'."
            return _json(_error_body(message, kind="invalid_request_error"), 409)
        batch.cancelled_mono, batch.cancelled_at = time.monotonic(), int(time.time())
        batch.cancelled_done = view["request_counts"]["completed"]
        return _json(_batch_view(state, batch))

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/files", upload_file, methods=["POST"]),
            Route("/v1/files/{file_id}", get_file, methods=["GET"]),
            Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
            Route("/v1/batches", create_batch, methods=["POST"]),
            Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/reset", reset, methods=["POST"]),
        ]
    )


def _rate_limited(wait: float, headers: dict[str, str], config: FakeServerConfig) -> JSONResponse:
    wait_ms = max(1, math.ceil(wait * 1000))
    message = (
        f"Rate limit reached for requests on {FAKE_MODEL}: Limit {config.rpm:g} / min. "
        f"Please try again in {wait_ms}ms."
    )
    headers = {**headers, "retry-after-ms": str(wait_ms), "retry-after": str(max(1, math.ceil(wait)))}
    return _json(_error_body(message, kind="requests", code="rate_limit_exceeded"), 429, headers)


def _not_found(what: str, identifier: str) -> JSONResponse:
    return _json(
        _error_body(f"No such {what} object: {identifier}", kind="invalid_request_error", param="id"), 404
    )


# ============================================================================ Batch API


def _store_file(state: _State, data: bytes, *, filename: str, purpose: str) -> dict[str, Any]:
    meta = {
        "id": _new_id("file-"),
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
    state.files[str(meta["id"])] = (meta, data)
    return meta


def _create_batch(state: _State, body: dict[str, Any]) -> _Batch:
    file_id, endpoint, window = body.get("input_file_id"), body.get("endpoint"), body.get("completion_window")
    stored = state.files.get(str(file_id))
    if stored is None:
        raise RequestError(400, f"No such File object: {file_id}", param="input_file_id")
    if stored[0]["purpose"] != "batch":
        raise RequestError(400, "the input file must be uploaded with purpose 'batch'", param="input_file_id")
    if endpoint != "/v1/chat/completions":
        raise RequestError(400, "the fake server batches only /v1/chat/completions", param="endpoint")
    if window != "24h":
        raise RequestError(400, "completion_window must be '24h'", param="completion_window")
    lines, errors, seen = [], [], set()
    for number, raw in enumerate(stored[1].decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            request = json.loads(raw)
        except json.JSONDecodeError:
            errors.append(
                {"code": "invalid_json_line", "message": "This line is not valid JSON.", "line": number}
            )
            continue
        custom_id = request.get("custom_id") if isinstance(request, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(
                {"code": "missing_custom_id", "message": "Each line needs a custom_id.", "line": number}
            )
        elif custom_id in seen:
            errors.append(
                {"code": "duplicate_custom_id", "message": f"'{custom_id}' repeats.", "line": number}
            )
        elif request.get("url") != endpoint or str(request.get("method", "")).upper() != "POST":
            message = f"The url must be '{endpoint}' and the method POST."
            errors.append({"code": "mismatched_url", "message": message, "line": number})
        else:
            seen.add(custom_id)
            lines.append(_batch_line(state, custom_id, request.get("body")))
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "The input file has no requests.", "line": None})
    batch = _Batch(
        id=_new_id("batch_"),
        input_file_id=str(file_id),
        endpoint=str(endpoint),
        completion_window=str(window),
        metadata=body.get("metadata") if isinstance(body.get("metadata"), dict) else None,
        created_at=int(time.time()),
        created_mono=time.monotonic(),
        lines=lines,
        errors=[{**e, "param": None} for e in errors],
    )
    state.batches[batch.id] = batch
    return batch


def _batch_line(state: _State, custom_id: str, body: object) -> dict[str, Any]:
    line: dict[str, Any] = {"id": _new_id("batch_req_"), "custom_id": custom_id, "error": None}
    try:
        if not isinstance(body, dict):
            raise RequestError(400, "'body' must be a JSON object", param="body")
        reply, status = complete(state, body), 200
    except RequestError as error:
        reply, status = error.body, error.status
    line["response"] = {"status_code": status, "request_id": _new_id("req_"), "body": reply}
    return line


def _batch_view(state: _State, batch: _Batch) -> dict[str, Any]:
    """The batch object now: validating → in_progress → completed over `batch_phase_s` steps."""
    phase = state.config.batch_phase_s
    now = time.monotonic()
    elapsed = now - batch.created_mono
    total = len(batch.lines)
    started = batch.created_at + round(phase)  # when it left "validating"
    view: dict[str, Any] = {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": FAKE_MODEL,
        "errors": None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": batch.created_at,
        "in_progress_at": None,
        "expires_at": batch.created_at + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": total, "completed": 0, "failed": 0},
        "metadata": batch.metadata,
    }
    if batch.errors:
        if elapsed >= phase:
            view.update(status="failed", failed_at=started, errors={"object": "list", "data": batch.errors})
        return view
    if batch.cancelled_mono is not None:
        view.update(status="cancelling", cancelling_at=batch.cancelled_at)
        if now - batch.cancelled_mono >= phase:
            _finish_batch(state, batch, batch.lines[: batch.cancelled_done])
            view.update(status="cancelled", cancelled_at=batch.finished_at)
        done = batch.cancelled_done
    elif elapsed < phase:
        return view
    elif elapsed < 2 * phase:
        view.update(status="in_progress", in_progress_at=started)
        done = min(total, math.floor(total * (elapsed - phase) / phase)) if phase else total
    else:
        _finish_batch(state, batch, batch.lines)
        view.update(status="completed", in_progress_at=started, finalizing_at=batch.finished_at)
        view["completed_at"] = batch.finished_at
        done = total
    failed = sum(1 for line in batch.lines[:done] if line["response"]["status_code"] != 200)
    view["request_counts"] = {"total": total, "completed": done - failed, "failed": failed}
    view.update(output_file_id=batch.output_file_id, error_file_id=batch.error_file_id)
    return view


def _finish_batch(state: _State, batch: _Batch, lines: list[dict[str, Any]]) -> None:
    if batch.finished_at is not None:
        return
    batch.finished_at = int(time.time())
    good = [line for line in lines if line["response"]["status_code"] == 200]
    bad = [line for line in lines if line["response"]["status_code"] != 200]
    for chosen, suffix, attribute in ((good, "output", "output_file_id"), (bad, "error", "error_file_id")):
        if chosen:
            data = "".join(json.dumps(line) + "\n" for line in chosen).encode()
            meta = _store_file(state, data, filename=f"{batch.id}_{suffix}.jsonl", purpose=f"batch_{suffix}")
            setattr(batch, attribute, meta["id"])


# ============================================================================ the server


def _listening_socket(port: int) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
    # reply waits ~40 ms for a delayed ACK (Nagle) between its header and body writes.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _uvicorn_server(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="asyncio",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


class FakeOpenAIServer:
    """The fake server on 127.0.0.1, run by uvicorn in a background thread (`start`/`stop`, or `with`)."""

    def __init__(
        self, config: FakeServerConfig | None = None, *, answer: LabelAnswer | None = None, port: int = 0
    ):
        self.config = config or FakeServerConfig()
        self._state = _State(config=self.config, answer=answer)
        self._requested_port = port
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (after `start`)."""
        if self._port is None:
            raise RuntimeError("the fake server is not started")
        return self._port

    @property
    def root_url(self) -> str:
        """http://127.0.0.1:PORT — where `/stats` and `/reset` live."""
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL, http://127.0.0.1:PORT/v1."""
        return f"{self.root_url}/v1"

    def start(self, *, timeout: float = 10.0) -> FakeOpenAIServer:
        """Start serving in a background thread and return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the fake server is already started")
        sock = _listening_socket(self._requested_port)
        self._port = int(sock.getsockname()[1])
        self._state.closing.clear()
        server = _uvicorn_server(build_app(self._state))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the server (held requests are released) and wait for its thread."""
        self._state.closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def stats(self) -> FakeServerStats:
        """What the server saw since the start or the last `reset`."""
        return self._state.snapshot()

    def reset(self) -> None:
        """Forget the counters and refill the rate limits."""
        self._state.reset()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAIServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


# ============================================================================ command line


def main(argv: list[str] | None = None) -> int:
    """Serve the fake API on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m evals.fake_openai", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one, printed)")
    parser.add_argument("--rpm", type=float, default=3000)
    parser.add_argument("--tpm", type=float, default=None)
    parser.add_argument("--burst-seconds", type=float, default=1.0)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--jitter-ms", type=float, default=10)
    parser.add_argument("--p429", type=float, default=0.0)
    parser.add_argument("--p500", type=float, default=0.0)
    parser.add_argument("--ptimeout", type=float, default=0.0)
    parser.add_argument("--pbadjson", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-hold-s", type=float, default=30.0)
    parser.add_argument("--label-logprob", type=float, default=-0.05)
    parser.add_argument("--batch-phase-s", type=float, default=0.5)
    parser.add_argument(
        "--no-json-schema", action="store_true", help="refuse json_schema with 500 like llama.cpp"
    )
    parser.add_argument(
        "--answers", type=Path, default=None, help="JSONL of {contains, label[, logprob]} rules"
    )
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    args = parser.parse_args(argv)
    try:
        config = FakeServerConfig(
            rpm=args.rpm,
            tpm=args.tpm,
            burst_seconds=args.burst_seconds,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            p429=args.p429,
            p500=args.p500,
            ptimeout=args.ptimeout,
            pbadjson=args.pbadjson,
            seed=args.seed,
            timeout_hold_s=args.timeout_hold_s,
            json_schema=not args.no_json_schema,
            label_logprob=args.label_logprob,
            batch_phase_s=args.batch_phase_s,
            answers=load_answers(args.answers) if args.answers else [],
            api_key=args.api_key,
        )
    except (ValidationError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sock = _listening_socket(args.port)
    state = _State(config=config, answer=None)
    print(f"fake OpenAI server on http://{HOST}:{sock.getsockname()[1]}/v1", flush=True)
    _uvicorn_server(build_app(state)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
