"""The one place that builds chat models and makes a labeling call.

- `ModelSettings` + `build_chat_model`: a `ChatOpenAI` for OpenAI or any OpenAI-compatible server, with the
  base URL, retries and HTTP clients exposed (tests point them at respx), response headers included (for
  `x-ratelimit-*`), and `max_tokens` also sent in `extra_body` to non-OpenAI hosts (llama.cpp ignores
  `max_completion_tokens`).
- `OutputMode`: how a server is made to answer with JSON. `detect_capabilities` probes an endpoint once,
  judging each mode by VALIDATING the reply (a 500, a 400 or garbage all mean "try the next mode"), and
  `CapabilityStore` remembers the result per (base URL, model) in `<home>/endpoints.json` (never the key).
- `label_call`: send one labeling request, parse and validate the JSON with the `LabelSpec`, make ONE repair
  attempt (the bad reply goes back with the reason), place spans, compute a confidence from token logprobs,
  and report usage, latency and response headers. Every failure is a `ModelCallError` with a kind.
  It can also start from a reply received without a request (`first=`, a Batch API result; `read_reply`
  reads one without sending anything): then only the repair, if needed, is sent live.
- For the Batch API (`tools.batch_api`): `request_payload` is the exact body the live path sends,
  `message_from_completion` turns a result line's body into the message a live call returns, and
  `openai_client` is the SDK client of the chat model (no second configuration path).

Decisions:
- Span items the model returns as `{text, label}` are placed with `place_spans`. Items that cannot be placed
  are reported in `LabelReply.unplaced_spans` (never dropped) and the placed ones are kept. When the reply has
  spans and NONE can be placed, that counts as an unusable reply: it gets the repair attempt (telling the
  model which texts were not found), and fails with kind `unplaceable_spans` if the repair does not help.
- A reply cut off at the token limit (`finish_reason == "length"`) or refused by the model is not repaired
  (asking again hits the same limit or refusal): it fails at once with kind `invalid_output`.
- Keys other than `reasoning` and `label` in a reply are ignored; a missing `reasoning` is tolerated.
- Confidence (`confidence_from_logprobs`), from the tokens whose characters overlap the answer value inside
  the JSON text (string quotes excluded):
  single_choice, pairwise, rating: exp(sum of their logprobs), the joint probability of writing that value
  given the prefix; multi_choice: the mean of that joint probability over the chosen labels (for `[]`: the
  joint probability of `[]`); number, text, spans: the mean per-token probability over the value's tokens
  (a joint probability would shrink with the length of the answer). `None`, never 0, when the server sent no
  logprobs or its tokens do not spell the reply text (e.g. tool-call arguments on most servers). The closing
  quote is not counted, so a class that is a prefix of another ("Sport"/"Sports") is over-estimated slightly.
  For choices, pairwise and ratings each token's probability is renormalised over the alternatives the
  server lists (`top_logprobs`) that could still spell an allowed value: servers that constrain output with a
  grammar (llama.cpp) report the unconstrained distribution, where an allowed label may get 1e-6 while the
  model has no other legal choice; on servers whose logprobs are already constrained this changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import openai
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from tools.errors import ConfigError, ErrorKind, LabelSpecError, LabelValueError, ModelCallError
from tools.labelspec import PAIRWISE_SIDES, LabelSpec, LabelValue, TaskType, place_spans
from tools.ratelimit import retry_after_from_headers as retry_after_seconds
from tools.settings import Settings

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Sent as the API key to servers that need none (the SDK refuses to start without one).
LOCAL_DUMMY_KEY = "not-needed"
ENDPOINTS_FILE = "endpoints.json"
TOP_LOGPROBS = 5
PROBE_MAX_TOKENS = 64
#: Hosts that speak OpenAI's own dialect (max_completion_tokens); everything else also gets max_tokens.
_OPENAI_HOST_SUFFIXES = ("api.openai.com", ".openai.azure.com")
#: ChatOpenAI fields a prompt version's `params` may set; any other key goes to the server in `extra_body`.
_CHAT_OPENAI_PARAMS = frozenset(
    {
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "stop",
        "reasoning_effort",
        "service_tier",
        "verbosity",
    }
)
_PARAM_ALIASES = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------- settings and model factory


class ModelSettings(BaseModel):
    """Which chat model to call and how: endpoint, key, sampling and limits."""

    model_config = ConfigDict(frozen=True)

    model: str
    base_url: str | None = None
    api_key: SecretStr | None = None
    #: None leaves the server's default (some reasoning models accept no other value).
    temperature: float | None = 0.0
    timeout_s: float = Field(default=60.0, gt=0)
    max_output_tokens: int = Field(default=512, ge=1)
    #: Extra request parameters: ChatOpenAI fields (top_p, seed, ...) or server-specific ones (top_k, ...).
    params: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, model: str | None = None, params: Mapping[str, Any] | None = None
    ) -> ModelSettings:
        """Build model settings from the app settings; `params` (a prompt version's) may override fields."""
        fields: dict[str, Any] = {
            "model": model or settings.label_model,
            "base_url": settings.openai_base_url,
            "api_key": settings.openai_api_key,
        }
        extra: dict[str, Any] = {}
        for key, value in (params or {}).items():
            name = _PARAM_ALIASES.get(key, key)
            if name in ("temperature", "timeout_s", "max_output_tokens"):
                fields[name] = value
            else:
                extra[key] = value
        return cls(**fields, params=extra)

    @property
    def endpoint_url(self) -> str:
        """The base URL requests go to (OpenAI's when none is set), without a trailing slash."""
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")

    @property
    def is_openai_hosted(self) -> bool:
        """Whether the endpoint is OpenAI or Azure OpenAI (which reject `max_tokens` for newer models)."""
        host = (urlsplit(self.endpoint_url).hostname or "").lower()
        return any(host == s or host.endswith(s) for s in _OPENAI_HOST_SUFFIXES)


def is_configured(settings: Settings) -> bool:
    """Whether a labeling model can be called: an API key or a base URL (a local server) is set."""
    return settings.openai_api_key is not None or bool(settings.openai_base_url)


class CompatibleChatOpenAI(ChatOpenAI):
    """ChatOpenAI for OpenAI-compatible servers: an assistant turn with tool calls carries `content: ""`.

    langchain-openai sends `null` there, which OpenAI accepts and llama.cpp's server answers with HTTP 500.
    """

    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        for message in payload.get("messages") or []:
            if message.get("role") == "assistant" and message.get("content") is None:
                message["content"] = ""
        return payload


def build_chat_model(
    ms: ModelSettings,
    *,
    http_client: httpx.Client | None = None,
    http_async_client: httpx.AsyncClient | None = None,
    max_retries: int = 0,
    **bind: Any,
) -> ChatOpenAI:
    """Build the chat model for `ms`; `bind` sets further ChatOpenAI fields (e.g. `logprobs=True`).

    `max_retries` defaults to 0: the labeling engine owns pacing and retries for a whole job.
    """
    if ms.api_key is None and ms.base_url is None:
        raise ConfigError(
            "no model is configured: there is neither an API key nor a base URL",
            hint="set OPENAI_API_KEY, or OPENAI_BASE_URL for a local OpenAI-compatible server",
        )
    known = {k: v for k, v in ms.params.items() if k in _CHAT_OPENAI_PARAMS}
    extra_body = {k: v for k, v in ms.params.items() if k not in _CHAT_OPENAI_PARAMS}
    if not ms.is_openai_hosted:
        extra_body.setdefault("max_tokens", ms.max_output_tokens)
    kwargs: dict[str, Any] = {
        "model": ms.model,
        # Explicit, so OPENAI_BASE_URL / OPENAI_API_KEY in the environment never override the settings.
        "base_url": ms.endpoint_url,
        "api_key": ms.api_key or SecretStr(LOCAL_DUMMY_KEY),
        "temperature": ms.temperature,
        "timeout": ms.timeout_s,
        "max_tokens": ms.max_output_tokens,
        "max_retries": max_retries,
        "http_client": http_client,
        "http_async_client": http_async_client,
        "include_response_headers": True,
        "use_responses_api": False,
        **known,
    }
    if extra_body:
        kwargs["extra_body"] = extra_body
    kwargs.update(bind)
    return ChatOpenAI(**kwargs) if ms.is_openai_hosted else CompatibleChatOpenAI(**kwargs)


class ChatModelFactory(Protocol):
    """Builds a chat model for one endpoint; detection asks for small, retry-free probe models."""

    def __call__(self, *, max_output_tokens: int | None = None, max_retries: int = 0) -> BaseChatModel:
        """Return a chat model, optionally with a different output token limit and retry count."""
        ...


def model_factory(
    ms: ModelSettings,
    *,
    http_client: httpx.Client | None = None,
    http_async_client: httpx.AsyncClient | None = None,
) -> ChatModelFactory:
    """Return a `ChatModelFactory` that builds models for `ms` with the given HTTP clients."""

    def factory(*, max_output_tokens: int | None = None, max_retries: int = 0) -> BaseChatModel:
        settings = (
            ms
            if max_output_tokens is None
            else ms.model_copy(update={"max_output_tokens": max_output_tokens})
        )
        return build_chat_model(
            settings, http_client=http_client, http_async_client=http_async_client, max_retries=max_retries
        )

    return factory


# ---------------------------------------------------------------------- output modes and requests


class OutputMode(str, Enum):
    """How a server is asked for JSON, from the most to the least constrained."""

    json_schema = "json_schema"  # OpenAI structured outputs, strict
    json_object_schema = "json_object_schema"  # {"type": "json_object", "schema": ...}: llama.cpp grammar
    tool_call = "tool_call"  # a forced call of one named function whose parameters are the schema
    json_object = "json_object"  # plain JSON mode; the schema is only in the prompt, replies are validated


#: Detection order.
MODE_ORDER = (
    OutputMode.json_schema,
    OutputMode.json_object_schema,
    OutputMode.tool_call,
    OutputMode.json_object,
)

_TOOL_DESCRIPTION = "Record the answer for the task."


def _json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": schema},
        }
    }


def _json_object_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_object", "schema": schema}}


def _forced_tool_call(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "tools": [
            {
                "type": "function",
                "function": {"name": name, "description": _TOOL_DESCRIPTION, "parameters": schema},
            }
        ],
        # Named, never "required": llama.cpp answers "required" with a 500.
        "tool_choice": {"type": "function", "function": {"name": name}},
    }


def _json_object_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_object"}}


#: The request parameters of each mode, from the schema's name and the schema.
_MODE_REQUESTS: dict[OutputMode, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
    OutputMode.json_schema: _json_schema_format,
    OutputMode.json_object_schema: _json_object_schema_format,
    OutputMode.tool_call: _forced_tool_call,
    OutputMode.json_object: _json_object_format,
}


def request_options(
    spec: LabelSpec, *, mode: OutputMode, reasoning: bool = False, logprobs: bool = False
) -> dict[str, Any]:
    """Return the per-call request parameters for a mode (response_format or a forced tool call)."""
    options = _MODE_REQUESTS[mode](spec.schema_name(), spec.json_schema(reasoning=reasoning))
    if logprobs:
        # Servers return null logprobs unless top_logprobs is set too.
        options.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
    return options


def _describe_label(spec: LabelSpec) -> str:
    field = f"`{spec.span_field}`" if spec.span_field else "the input"
    describe: dict[TaskType, str] = {
        TaskType.single_choice: "the one label that fits best, written exactly as listed",
        TaskType.multi_choice: "a list of every label that applies, written exactly as listed; [] when none does",
        TaskType.rating: f"a whole number from 1 to {spec.max_rating}",
        TaskType.number: "a number",
        TaskType.text: "your answer as text",
        TaskType.pairwise: '"left" or "right"',
        TaskType.spans: (
            f'a list of {{"text": ..., "label": ...}} objects, one per labeled piece of {field}, in the order '
            f"they appear, each text copied exactly from {field}; [] when there is none"
        ),
    }
    return describe[spec.type]


def format_instructions(spec: LabelSpec, *, mode: OutputMode, reasoning: bool = False) -> str:
    """Return the output rules for the system prompt: the JSON shape and, when unenforced, the schema."""
    keys = '"label"'
    if reasoning:
        keys = '"reasoning" (brief reasoning about the input, written first), then "label"'
    lines = [
        "Answer with one JSON object and nothing else: no text before or after it, no code fences.",
        f"Its keys: {keys}. The label is {_describe_label(spec)}.",
    ]
    if mode is OutputMode.tool_call:
        lines.append(
            f"Give the answer by calling the function `{spec.schema_name()}` with that object as its arguments."
        )
    elif mode is not OutputMode.json_schema:
        schema = json.dumps(spec.json_schema(reasoning=reasoning), ensure_ascii=False, separators=(",", ":"))
        lines.append(f"The object must match this JSON schema: {schema}")
    return "\n".join(lines)


def answer_json(spec: LabelSpec, value: LabelValue, *, reasoning: str | None = None) -> str:
    """Return a canonical value as the JSON answer a model is asked for (spans as {text, label} items)."""
    label: Any = value
    if spec.type is TaskType.spans and isinstance(value, list):
        label = [{"text": s["text"], "label": s["label"]} for s in value if isinstance(s, Mapping)]
    answer: dict[str, Any] = {"reasoning": reasoning} if reasoning is not None else {}
    answer["label"] = label
    return json.dumps(answer, ensure_ascii=False)


# ---------------------------------------------------------------------- errors


def _status_kind(status: int, body: object) -> ErrorKind:
    if status == 429:
        code = body.get("code") if isinstance(body, Mapping) else None
        # OpenAI's "insufficient_quota" is a 429 that no amount of waiting fixes.
        return ErrorKind.auth if code == "insufficient_quota" else ErrorKind.rate_limited
    if status in (401, 403):
        return ErrorKind.auth
    if status == 408:
        return ErrorKind.timeout
    if status >= 500:
        return ErrorKind.server_error
    return ErrorKind.bad_request


_KIND_HINTS = {
    ErrorKind.auth: "check OPENAI_API_KEY (and the account's quota) for this endpoint",
    ErrorKind.bad_request: "check the model name and parameters; the server refused the request as sent",
    ErrorKind.connection: "check OPENAI_BASE_URL and that the server is running",
    ErrorKind.timeout: "the server did not answer in time; retry later or raise the timeout",
}


def to_model_call_error(exc: BaseException) -> ModelCallError:
    """Translate an OpenAI SDK or httpx exception into a `ModelCallError` with its kind and headers."""
    if isinstance(exc, ModelCallError):
        return exc
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        kind = ErrorKind.timeout
        return ModelCallError("the model request timed out", kind=kind, hint=_KIND_HINTS[kind])
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        kind = ErrorKind.connection
        return ModelCallError(f"cannot reach the model endpoint: {exc}", kind=kind, hint=_KIND_HINTS[kind])
    if isinstance(exc, openai.APIStatusError):
        headers = {k.lower(): v for k, v in exc.response.headers.items()}
        return status_error(exc.status_code, exc.body, exc.message, headers=headers)
    if isinstance(exc, openai.LengthFinishReasonError):
        return _truncated()
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return ModelCallError(
            "the reply was stopped by the provider's content filter", kind=ErrorKind.invalid_output
        )
    return ModelCallError(f"the model call failed: {_shorten(str(exc))}", kind=ErrorKind.server_error)


def status_error(
    status: int,
    body: object,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    source: str = "the model endpoint answered",
) -> ModelCallError:
    """Return the `ModelCallError` of an HTTP error reply; `body` is its JSON error object (the kind reads
    its `code`), `source` starts the message (a Batch API result line says where it came from)."""
    found = dict(headers or {})
    kind = _status_kind(status, body)
    return ModelCallError(
        f"{source} HTTP {status}: {_shorten(message)}",
        kind=kind,
        retry_after=retry_after_seconds(found),
        status_code=status,
        headers=found,
        hint=_KIND_HINTS.get(kind),
    )


def _truncated() -> ModelCallError:
    return ModelCallError(
        "the reply was cut off at the output token limit",
        kind=ErrorKind.invalid_output,
        hint="raise max_output_tokens (or turn reasoning off)",
    )


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------- one request


@dataclass
class _Response:
    message: AIMessage
    raw_text: str
    from_tool_call: bool
    latency_ms: float

    @property
    def headers(self) -> dict[str, str]:
        found = self.message.response_metadata.get("headers") or {}
        return {str(k).lower(): str(v) for k, v in found.items()}

    @property
    def token_logprobs(self) -> list[Mapping[str, Any]]:
        found = self.message.response_metadata.get("logprobs")
        content = found.get("content") if isinstance(found, Mapping) else None
        return list(content) if isinstance(content, list) else []


async def _request(
    model: BaseChatModel, messages: Sequence[BaseMessage], options: Mapping[str, Any]
) -> _Response:
    started = time.perf_counter()
    try:
        message = await model.ainvoke(list(messages), **options)
    except (openai.OpenAIError, httpx.HTTPError) as exc:
        raise to_model_call_error(exc) from exc
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        # langchain-openai and the SDK raise these for a 200 reply that is not a chat completion (an HTML
        # page, no "choices"): the endpoint's fault, so it becomes data like any other server error. The
        # exception type stays in the message so a bug of ours would not pass unnoticed.
        raise ModelCallError(
            f"the endpoint's reply is not a chat completion ({type(exc).__name__}: {_shorten(str(exc))})",
            kind=ErrorKind.server_error,
        ) from exc
    return _response(message, latency_ms=(time.perf_counter() - started) * 1000)


def _response(message: AIMessage, *, latency_ms: float) -> _Response:
    """Check a reply (cut off, refused) and read its text; raise ModelCallError when it cannot be used."""
    if message.response_metadata.get("finish_reason") == "length":
        raise _truncated()
    refusal = message.additional_kwargs.get("refusal")
    if refusal:
        raise ModelCallError(
            f"the model refused to answer: {_shorten(str(refusal))}", kind=ErrorKind.invalid_output
        )
    raw_text, from_tool_call = _reply_text(message)
    return _Response(message=message, raw_text=raw_text, from_tool_call=from_tool_call, latency_ms=latency_ms)


# ---------------------------------------------------------------------- requests sent elsewhere (Batch API)


def _chat_openai(model: BaseChatModel) -> ChatOpenAI:
    if not isinstance(model, ChatOpenAI):
        raise TypeError(f"the Batch API needs a ChatOpenAI model, not {type(model).__name__}")
    return model


def request_payload(
    model: BaseChatModel, messages: Sequence[BaseMessage], options: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the JSON body a live call of `model` with `options` sends to /chat/completions.

    Built by the chat model itself (`_get_request_payload`), with `extra_body` merged in the way the SDK
    merges it and without `stream`: a Batch API line carries exactly the request the live path sends.
    """
    payload = _chat_openai(model)._get_request_payload(list(messages), **options)
    payload.pop("stream", None)
    extra = payload.pop("extra_body", None) or {}
    payload.update(extra)
    return payload


def openai_client(model: BaseChatModel) -> openai.AsyncOpenAI:
    """Return the SDK client a chat model talks through (same key, base URL and HTTP client)."""
    client = _chat_openai(model).root_async_client
    if not isinstance(client, openai.AsyncOpenAI):
        raise TypeError("the chat model has no async OpenAI client")
    return client


def message_from_completion(model: BaseChatModel, body: Mapping[str, Any]) -> AIMessage:
    """Return the message a live call would have returned for a chat.completion `body` received elsewhere
    (a Batch API result line): the chat model parses it, and finish reason, logprobs, token usage and model
    name land in `response_metadata` as `BaseChatModel` puts them there."""
    try:
        result = _chat_openai(model)._create_chat_result(dict(body))
        generation = result.generations[0]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise ModelCallError(
            f"the batch result is not a chat completion ({type(exc).__name__}: {_shorten(str(exc))})",
            kind=ErrorKind.server_error,
        ) from exc
    message = generation.message
    if not isinstance(message, AIMessage):
        raise ModelCallError(
            f"the batch result holds a {type(message).__name__}, not an assistant message",
            kind=ErrorKind.server_error,
        )
    message.response_metadata = {
        **(result.llm_output or {}),
        **(generation.generation_info or {}),
        **message.response_metadata,
    }
    return message


def _reply_text(message: AIMessage) -> tuple[str, bool]:
    for call in message.tool_calls:
        return json.dumps(call["args"], ensure_ascii=False), True
    for bad in message.invalid_tool_calls:
        return str(bad.get("args") or ""), True
    return message.text, False


# ---------------------------------------------------------------------- reading a reply


@dataclass
class _Accepted:
    value: LabelValue
    reasoning: str | None
    unplaced: list[dict[str, Any]]


@dataclass
class _Rejected:
    reason: str
    kind: ErrorKind = ErrorKind.invalid_output


_FENCE = re.compile(r"\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*", re.DOTALL)


def _json_start(raw: str) -> tuple[str, int]:
    """Return the JSON text inside a reply (code fences tolerated) and where it starts in the reply."""
    fenced = _FENCE.fullmatch(raw)
    if fenced:
        return fenced.group(1), fenced.start(1)
    stripped = raw.lstrip()
    return stripped.rstrip(), len(raw) - len(stripped)


def _interpret(spec: LabelSpec, raw: str, source_text: str | None) -> _Accepted | _Rejected:
    text, _ = _json_start(raw)
    if not text:
        return _Rejected("the reply is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _Rejected(f"the reply is not valid JSON ({exc.msg} at character {exc.pos})")
    if not isinstance(data, dict) or "label" not in data:
        return _Rejected('the reply must be a JSON object with a "label" key')
    reasoning = data.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, str) else None
    unplaced: list[dict[str, Any]] = []
    label: object = data["label"]
    try:
        if spec.type is TaskType.spans:
            if not isinstance(label, list):
                return _Rejected('"label" must be a list of {"text", "label"} objects')
            items = [item if isinstance(item, Mapping) else {"item": item} for item in label]
            placed, unplaced = place_spans(source_text or "", items)
            if items and not placed:
                missing = "; ".join(f"{u.get('text', u.get('item'))!r}: {u['reason']}" for u in unplaced)
                return _Rejected(
                    f"none of the spans could be found in the text ({missing}); copy each text exactly",
                    kind=ErrorKind.unplaceable_spans,
                )
            label = placed
        value = spec.validate_value(label, source_text=source_text)
    except LabelValueError as exc:
        return _Rejected(exc.user_message())
    return _Accepted(value=value, reasoning=reasoning, unplaced=unplaced)


def _repair_request(reason: str, mode: OutputMode, spec: LabelSpec) -> str:
    again = (
        f"Call the function `{spec.schema_name()}` again with corrected arguments."
        if mode is OutputMode.tool_call
        else "Reply again with only the corrected JSON object."
    )
    return f"Your previous answer could not be used: {reason}\n{again}"


# ---------------------------------------------------------------------- the labeling call


class LabelReply(BaseModel):
    """A validated answer for one task, with what it cost and how sure the model was."""

    #: The canonical value (a `LabelValue`; typed Any because `Span` is a typing.TypedDict, which pydantic
    #: cannot validate on Python 3.11).
    value: Any
    reasoning: str | None = None
    #: Probability of the answer from token logprobs (see the module docstring); None without logprobs.
    confidence: float | None = None
    #: Token counts and latency, summed over both requests when the reply was repaired.
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float = 0.0
    #: The text the value was read from (tool-call arguments re-serialised in tool_call mode).
    raw_text: str
    mode: OutputMode
    #: Whether the first reply was unusable and the repair attempt produced this one.
    repaired: bool = False
    #: Span items the model returned that could not be found in the source text, each with a "reason".
    unplaced_spans: list[dict[str, Any]] = Field(default_factory=list)
    #: Response headers of the (last) reply, lower-cased, e.g. x-ratelimit-remaining-requests.
    headers: dict[str, str] = Field(default_factory=dict)


def token_usage(message: AIMessage) -> tuple[int, int, int]:
    """Return (input, output, cached input) tokens a reply reports (zeros when it reports none)."""
    usage: Mapping[str, Any] = message.usage_metadata or {}
    details = usage.get("input_token_details") or {}
    return (
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        int(details.get("cache_read") or 0),
    )


@dataclass
class _Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float = 0.0

    def add(self, response: _Response) -> None:
        input_tokens, output_tokens, cached_tokens = token_usage(response.message)
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cached_tokens += cached_tokens
        self.latency_ms += response.latency_ms

    def spent(self) -> tuple[int, int, int]:
        return self.input_tokens, self.output_tokens, self.cached_tokens


def _require_source_text(spec: LabelSpec, source_text: str | None) -> None:
    if spec.type is TaskType.spans and source_text is None:
        raise LabelSpecError(
            "labeling spans needs the source text the offsets refer to", hint="pass source_text"
        )


def _label_reply(
    spec: LabelSpec,
    response: _Response,
    answer: _Accepted,
    usage: _Usage,
    *,
    mode: OutputMode,
    logprobs: bool,
    repaired: bool,
) -> LabelReply:
    confidence = (
        confidence_from_logprobs(spec, response.raw_text, response.token_logprobs) if logprobs else None
    )
    return LabelReply(
        value=answer.value,
        reasoning=answer.reasoning,
        confidence=confidence,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        latency_ms=usage.latency_ms,
        raw_text=response.raw_text,
        mode=mode,
        repaired=repaired,
        unplaced_spans=answer.unplaced,
        headers=response.headers,
    )


def read_reply(
    spec: LabelSpec,
    message: AIMessage,
    *,
    mode: OutputMode,
    logprobs: bool = False,
    source_text: str | None = None,
) -> LabelReply | None:
    """Read a reply that arrived without a request of ours (a Batch API result): the validated answer, or
    None when it is unusable and needs the repair request `label_call(..., first=message)` sends.

    Raises `ModelCallError` for a reply that no repair helps (cut off at the token limit, refused).
    """
    _require_source_text(spec, source_text)
    response = _response(message, latency_ms=0.0)
    answer = _interpret(spec, response.raw_text, source_text)
    if isinstance(answer, _Rejected):
        return None
    usage = _Usage()
    usage.add(response)
    return _label_reply(spec, response, answer, usage, mode=mode, logprobs=logprobs, repaired=False)


async def label_call(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    spec: LabelSpec,
    *,
    mode: OutputMode,
    reasoning: bool = False,
    logprobs: bool = False,
    source_text: str | None = None,
    first: AIMessage | None = None,
) -> LabelReply:
    """Ask the model to label one task and return the validated answer, or raise `ModelCallError`.

    `source_text` is the text span offsets refer to (required for spans). An unusable reply gets one repair
    attempt; HTTP and SDK failures are mapped to error kinds (rate limits keep `retry_after` and headers).
    `first` is a reply already received for `messages` (a Batch API result): no request is sent for it, and
    only its repair, if it needs one, goes to `model` (live). Token counts include both replies.
    """
    _require_source_text(spec, source_text)
    options = request_options(spec, mode=mode, reasoning=reasoning, logprobs=logprobs)
    usage = _Usage()
    if first is None:
        response = await _request(model, messages, options)
    else:
        response = _response(first, latency_ms=0.0)
    usage.add(response)
    answer = _interpret(spec, response.raw_text, source_text)
    repaired = False
    if isinstance(answer, _Rejected):
        conversation = [
            *messages,
            AIMessage(content=response.raw_text or "(empty reply)"),
            HumanMessage(content=_repair_request(answer.reason, mode, spec)),
        ]
        try:
            response = await _request(model, conversation, options)
        except ModelCallError as exc:
            exc.spent = usage.spent()
            raise
        usage.add(response)
        repaired = True
        answer = _interpret(spec, response.raw_text, source_text)
        if isinstance(answer, _Rejected):
            error = ModelCallError(
                f"the model's answer is unusable even after a repair attempt: {answer.reason}; "
                f"reply: {_shorten(response.raw_text, 200)!r}",
                kind=answer.kind,
                hint="make the instructions clearer or use a stronger model",
            )
            error.spent = usage.spent()
            raise error
    return _label_reply(spec, response, answer, usage, mode=mode, logprobs=logprobs, repaired=repaired)


# ---------------------------------------------------------------------- confidence from logprobs

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, index: int) -> int:
    found = _WHITESPACE.match(text, index)
    return found.end() if found else index


def _object_members(text: str, index: int) -> dict[str, tuple[int, int]] | None:
    """Return {key: (start, end)} of each value of the JSON object at `index`, or None if there is none."""
    index = _skip(text, index)
    if not text.startswith("{", index):
        return None
    index = _skip(text, index + 1)
    members: dict[str, tuple[int, int]] = {}
    if text.startswith("}", index):
        return members
    try:
        while True:
            key, index = _DECODER.raw_decode(text, index)
            index = _skip(text, index)
            if not isinstance(key, str) or not text.startswith(":", index):
                return None
            start = _skip(text, index + 1)
            _, end = _DECODER.raw_decode(text, start)
            members[key] = (start, end)
            index = _skip(text, end)
            if text.startswith("}", index):
                return members
            if not text.startswith(",", index):
                return None
            index = _skip(text, index + 1)
    except json.JSONDecodeError:
        return None


def _array_items(text: str, index: int) -> list[tuple[int, int]]:
    """Return (start, end) of each element of the JSON array at `index` (already known to be valid)."""
    index = _skip(text, index + 1)
    items: list[tuple[int, int]] = []
    while not text.startswith("]", index):
        _, end = _DECODER.raw_decode(text, index)
        items.append((index, end))
        index = _skip(text, end)
        if text.startswith(",", index):
            index = _skip(text, index + 1)
    return items


def _unquoted(text: str, span: tuple[int, int]) -> tuple[int, int]:
    start, end = span
    if text.startswith('"', start):
        return start + 1, end - 1
    return span


def _value_units(spec: LabelSpec, raw: str) -> list[tuple[int, int]]:
    """Character ranges of the answer inside the raw reply: one per chosen label for multi_choice."""
    _, start = _json_start(raw)
    members = _object_members(raw, start)
    if not members or "label" not in members:
        return []
    value = members["label"]
    if spec.type is TaskType.multi_choice and raw.startswith("[", value[0]):
        items = _array_items(raw, value[0])
        units = [_unquoted(raw, item) for item in items] if items else [value]
    else:
        units = [_unquoted(raw, value)]
    return [(s, e) for s, e in units if e > s]


@dataclass
class _TokenAt:
    """One reply token placed at its byte range, with the alternatives the server listed."""

    first: int
    last: int
    logprob: float
    alternatives: list[tuple[bytes, float]]


def _token_bytes(token: Mapping[str, Any]) -> bytes:
    spelled = token.get("bytes")
    return bytes(spelled) if isinstance(spelled, list) else str(token.get("token", "")).encode()


def _token_byte_ranges(raw: str, tokens: Sequence[Mapping[str, Any]]) -> list[_TokenAt] | None:
    """Place each token at its byte range in the UTF-8 reply; None when the tokens do not spell it."""
    pieces: list[tuple[bytes, float, list[tuple[bytes, float]]]] = []
    for token in tokens:
        logprob = token.get("logprob")
        if not isinstance(logprob, int | float) or not math.isfinite(logprob):
            return None
        alternatives = [
            (_token_bytes(alt), float(alt["logprob"]))
            for alt in token.get("top_logprobs") or []
            if isinstance(alt, Mapping)
            and isinstance(alt.get("logprob"), int | float)
            and math.isfinite(alt["logprob"])
        ]
        pieces.append((_token_bytes(token), float(logprob), alternatives))
    joined = b"".join(p for p, _, _ in pieces)
    target = raw.encode()
    offset = joined.find(target) if target else -1
    if offset < 0:
        return None
    ranges: list[_TokenAt] = []
    position = -offset
    for data, logprob, alternatives in pieces:
        ranges.append(_TokenAt(position, position + len(data), logprob, alternatives))
        position += len(data)
    return ranges


#: Bytes that end an unquoted JSON value (a rating).
_VALUE_END = frozenset(b" \t\r\n,}]")


def _allowed_texts(spec: LabelSpec) -> list[bytes] | None:
    """The spellings (inside the JSON text, quotes excluded) of every allowed value of a choice-like spec."""
    if spec.type in (TaskType.single_choice, TaskType.multi_choice):
        names = spec.class_names()
    elif spec.type is TaskType.pairwise:
        names = list(PAIRWISE_SIDES)
    elif spec.type is TaskType.rating:
        names = [str(n) for n in range(1, (spec.max_rating or 5) + 1)]
    else:
        return None
    # As json.dumps writes them inside the quotes (a quote or backslash in a label is escaped).
    return [json.dumps(name, ensure_ascii=False)[1:-1].encode() for name in names] if names else None


def _renormalised(token: _TokenAt, raw: bytes, low: int, allowed: Sequence[bytes], quoted: bool) -> float:
    """The token's logprob renormalised over the alternatives that can still spell an allowed value.

    Allowed values that no listed alternative could start are counted with the smallest listed probability
    (an upper bound of their mass), so a token the grammar forced on an unwilling model stays improbable.
    """
    if not token.alternatives:
        return token.logprob
    before = raw[token.first : low] if token.first < low else b""  # e.g. the opening quote
    prefix = raw[low : token.first] if token.first > low else b""
    open_values = [value for value in allowed if value.startswith(prefix)]

    def spelled(alternative: bytes) -> list[bytes]:
        """The allowed values an alternative token is consistent with (none: illegal here)."""
        if not alternative.startswith(before):
            return []
        part = alternative[len(before) :]
        cut = next(
            (i for i, byte in enumerate(part) if (byte == 0x22 if quoted else byte in _VALUE_END)),
            None,
        )
        text = prefix + (part if cut is None else part[:cut])
        if cut is None:
            return [value for value in open_values if value.startswith(text)]
        return [value for value in open_values if value == text]

    chosen = raw[max(token.first, 0) : token.last]
    listed = list(token.alternatives)
    if all(alternative != chosen for alternative, _ in listed):
        listed.append((chosen, token.logprob))
    total = 0.0
    reached: set[bytes] = set(spelled(chosen))
    for alternative, logprob in listed:
        values = spelled(alternative)
        if values:
            total += math.exp(logprob)
            reached.update(values)
    smallest = min(math.exp(logprob) for _, logprob in token.alternatives)
    total += smallest * len([value for value in open_values if value not in reached])
    if total <= 0:
        return token.logprob
    return min(0.0, token.logprob - math.log(total))


def _joint(logprobs: list[float]) -> float:
    return math.exp(sum(logprobs))


def _mean_token(logprobs: list[float]) -> float:
    return sum(math.exp(lp) for lp in logprobs) / len(logprobs)


#: How the value tokens' logprobs become one probability, per task type (see the module docstring).
_CONFIDENCE_RULES: dict[TaskType, Callable[[list[float]], float]] = {
    TaskType.single_choice: _joint,
    TaskType.multi_choice: _joint,  # per chosen label, then averaged
    TaskType.rating: _joint,
    TaskType.pairwise: _joint,
    TaskType.number: _mean_token,
    TaskType.text: _mean_token,
    TaskType.spans: _mean_token,
}


def confidence_from_logprobs(
    spec: LabelSpec, raw_text: str, token_logprobs: Sequence[Mapping[str, Any]]
) -> float | None:
    """Return the probability of the answer in `raw_text` from the reply's token logprobs, or None."""
    if not token_logprobs:
        return None
    ranges = _token_byte_ranges(raw_text, token_logprobs)
    units = _value_units(spec, raw_text)
    if ranges is None or not units:
        return None
    rule = _CONFIDENCE_RULES[spec.type]
    allowed = _allowed_texts(spec)
    raw = raw_text.encode()
    scores: list[float] = []
    for start, end in units:
        low, high = len(raw_text[:start].encode()), len(raw_text[:end].encode())
        tokens = [t for t in ranges if t.first < high and t.last > low]
        if not tokens:
            return None
        quoted = start > 0 and raw_text[start - 1] == '"'
        covered = [_renormalised(t, raw, low, allowed, quoted) if allowed else t.logprob for t in tokens]
        scores.append(rule(covered))
    return min(max(sum(scores) / len(scores), 0.0), 1.0)


# ---------------------------------------------------------------------- capability detection


class EndpointCapabilities(BaseModel):
    """What one endpoint + model supports, found by probing it once."""

    mode: OutputMode
    logprobs: bool
    detected_at: datetime = Field(default_factory=_utcnow)
    #: Why each more constrained mode was not chosen (mode -> reason).
    rejected: dict[str, str] = Field(default_factory=dict)


_PROBE_TEXT = "The match ended 2-1 after extra time."
#: Errors that say "this mode does not work here"; any other kind (auth, timeout, ...) stops detection.
_MODE_FAILURE_KINDS = frozenset(
    {ErrorKind.server_error, ErrorKind.bad_request, ErrorKind.invalid_output, ErrorKind.unplaceable_spans}
)


def _probe_messages(spec: LabelSpec, mode: OutputMode) -> list[BaseMessage]:
    return [
        SystemMessage(content="You label data.\n" + format_instructions(spec, mode=mode)),
        HumanMessage(
            content=f'<field name="text">{_PROBE_TEXT}</field>\n'
            "This is a format check: give any valid answer, as short as possible."
        ),
    ]


async def _probe(model: BaseChatModel, spec: LabelSpec, mode: OutputMode, *, logprobs: bool) -> _Response:
    """Send one probe request; raise ModelCallError unless the reply is valid for the mode."""
    response = await _request(
        model, _probe_messages(spec, mode), request_options(spec, mode=mode, logprobs=logprobs)
    )
    if mode is OutputMode.tool_call and not response.from_tool_call:
        raise ModelCallError("the reply has no tool call", kind=ErrorKind.invalid_output)
    outcome = _interpret(spec, response.raw_text, _PROBE_TEXT)
    # Spans that are not in the probe text are a content problem, not a format one.
    if isinstance(outcome, _Rejected) and outcome.kind is not ErrorKind.unplaceable_spans:
        raise ModelCallError(outcome.reason, kind=outcome.kind)
    return response


async def detect_capabilities(chat_model_factory: ChatModelFactory, spec: LabelSpec) -> EndpointCapabilities:
    """Find the most constrained output mode that works, then whether logprobs come back.

    Each mode gets one cheap probe (no retries, few tokens) judged by validating the reply; then one more
    probe in the chosen mode asks for logprobs (so a server that rejects logprobs cannot hide a mode).
    Raises ModelCallError when the endpoint is unreachable, refuses the key, or no mode works.
    """
    model = chat_model_factory(max_output_tokens=PROBE_MAX_TOKENS, max_retries=0)
    rejected: dict[str, str] = {}
    for mode in MODE_ORDER:
        try:
            await _probe(model, spec, mode, logprobs=False)
        except ModelCallError as exc:
            if exc.kind not in _MODE_FAILURE_KINDS:
                raise
            rejected[mode.value] = exc.message
            logger.info("output mode %s does not work here: %s", mode.value, exc.message)
            continue
        return EndpointCapabilities(
            mode=mode, logprobs=await _logprobs_work(model, spec, mode), rejected=rejected
        )
    reasons = "; ".join(f"{mode}: {reason}" for mode, reason in rejected.items())
    raise ModelCallError(
        f"the endpoint gave no usable JSON in any output mode ({reasons})",
        kind=ErrorKind.invalid_output,
        hint="check that the model is a chat model that can answer in JSON",
    )


async def _logprobs_work(model: BaseChatModel, spec: LabelSpec, mode: OutputMode) -> bool:
    try:
        response = await _probe(model, spec, mode, logprobs=True)
    except ModelCallError as exc:
        if exc.kind not in _MODE_FAILURE_KINDS:
            raise
        return False
    return bool(response.token_logprobs)


def endpoint_key(base_url: str | None, model: str) -> str:
    """Return the store key of an endpoint + model; credentials, query and fragment are left out."""
    parts = urlsplit((base_url or OPENAI_BASE_URL).strip())
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')} {model}"


class _StoredEndpoint(EndpointCapabilities):
    key: str


class CapabilityStore:
    """Remembers endpoint capabilities in memory and in `<home>/endpoints.json` (never an API key)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._memory: dict[str, EndpointCapabilities] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> CapabilityStore:
        """Return the store kept in the data folder of `settings`."""
        return cls(settings.home / ENDPOINTS_FILE)

    def get(self, base_url: str | None, model: str) -> EndpointCapabilities | None:
        """Return the remembered capabilities of an endpoint + model, if any."""
        return self._entries().get(endpoint_key(base_url, model))

    def remember(self, base_url: str | None, model: str, capabilities: EndpointCapabilities) -> None:
        """Remember capabilities in memory and on disk."""
        key = endpoint_key(base_url, model)
        self._entries()[key] = capabilities
        on_disk = self._read()
        on_disk[key] = capabilities
        self._write(on_disk)

    def forget(self, base_url: str | None = None, model: str | None = None) -> int:
        """Forget an endpoint + model (None matches any) so the next use detects again; return how many."""
        prefix = endpoint_key(base_url, "") if base_url is not None else None

        def matches(key: str) -> bool:
            url, _, name = key.partition(" ")
            return (prefix is None or f"{url} " == prefix) and (model is None or name == model)

        memory = self._entries()
        for key in [k for k in memory if matches(k)]:
            del memory[key]
        on_disk = self._read()
        gone = [k for k in on_disk if matches(k)]
        for key in gone:
            del on_disk[key]
        if gone:
            self._write(on_disk)
        return len(gone)

    async def ensure(
        self,
        ms: ModelSettings,
        chat_model_factory: ChatModelFactory,
        spec: LabelSpec,
        *,
        redetect: bool = False,
    ) -> EndpointCapabilities:
        """Return the capabilities of `ms`'s endpoint, detecting them (once, even under concurrency) if new."""
        key = endpoint_key(ms.base_url, ms.model)
        async with self._locks.setdefault(key, asyncio.Lock()):
            known = None if redetect else self.get(ms.base_url, ms.model)
            if known is not None:
                return known
            found = await detect_capabilities(chat_model_factory, spec)
            self.remember(ms.base_url, ms.model, found)
            return found

    def _entries(self) -> dict[str, EndpointCapabilities]:
        if self._memory is None:
            self._memory = self._read()
        return self._memory

    def _read(self) -> dict[str, EndpointCapabilities]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            stored = [_StoredEndpoint.model_validate(item) for item in data.get("endpoints", [])]
        except (OSError, ValueError, AttributeError, ValidationError) as exc:
            # A damaged cache only costs a new detection; it is overwritten on the next write.
            logger.warning("ignoring unreadable endpoint capabilities file %s: %s", self.path, exc)
            return {}
        return {item.key: EndpointCapabilities(**item.model_dump(exclude={"key"})) for item in stored}

    def _write(self, entries: Mapping[str, EndpointCapabilities]) -> None:
        if self.path is None:
            return
        document = {
            "version": 1,
            "endpoints": [
                _StoredEndpoint(key=key, **caps.model_dump()).model_dump(mode="json")
                for key, caps in sorted(entries.items())
            ],
        }
        temporary: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=self.path.parent, prefix=".endpoints-", suffix=".tmp", delete=False
            ) as handle:
                temporary = Path(handle.name)
                json.dump(document, handle, indent=2)
            temporary.replace(self.path)
            temporary = None
        except OSError as exc:
            # Capabilities stay remembered in memory; the next process detects again.
            logger.warning("cannot save endpoint capabilities to %s: %s", self.path, exc)
        finally:
            if temporary is not None:
                temporary.unlink(missing_ok=True)
