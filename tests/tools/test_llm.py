"""tools/llm.py against an HTTP-level fake of an OpenAI-compatible endpoint (respx; nothing leaves the process)."""

from __future__ import annotations

import json
import math
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from langchain_core.messages import HumanMessage
from pydantic import SecretStr

from tools.errors import ConfigError, ErrorKind, LabelSpecError, ModelCallError
from tools.labelspec import LabelSpec
from tools.llm import (
    ENDPOINTS_FILE,
    CapabilityStore,
    ModelSettings,
    OutputMode,
    build_chat_model,
    confidence_from_logprobs,
    detect_capabilities,
    is_configured,
    label_call,
    model_factory,
    retry_after_seconds,
)
from tools.prompting import Example, render_messages
from tools.settings import Settings
from tools.versions import PromptConfig

ENDPOINT = "https://api.test/v1"
URL = f"{ENDPOINT}/chat/completions"
API_KEY = "sk-test-secret"

SINGLE = LabelSpec.from_classes(["Sports", "World", "Business"], input_fields=["text"])
MULTI = LabelSpec.from_classes(["Sports", "World", "Business"], type="multi_choice", input_fields=["text"])
RATING = LabelSpec.from_classes([], type="rating", max_rating=5, input_fields=["text"])
NUMBER = LabelSpec.from_classes([], type="number", min_value=0, max_value=10, input_fields=["text"])
TEXT = LabelSpec.from_classes([], type="text", input_fields=["text"])
PAIRWISE = LabelSpec.from_classes([], type="pairwise", input_fields=["summary_1", "summary_2"])
SPANS = LabelSpec.from_classes(["PER", "LOC"], type="spans", input_fields=["text"])
SOURCE = "Ada Lovelace met Charles Babbage in London."


# ---------------------------------------------------------------------- fake endpoint helpers


def completion(
    content: str | None = None,
    *,
    tool_args: str | None = None,
    tool_name: str = "label_single_choice",
    logprobs: list[tuple[str, float]] | None = None,
    usage: tuple[int, int, int] = (100, 7, 0),
    finish_reason: str = "stop",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A chat.completion reply as an OpenAI-compatible server sends it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_args is not None:
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": tool_name, "arguments": tool_args}}
        ]
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason,
        "logprobs": None,
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                for t, lp in logprobs
            ],
            "refusal": None,
        }
    prompt, completion_tokens, cached = usage
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "test-model",
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }
    return httpx.Response(200, json=body, headers=headers)


def error(status: int, message: str = "nope", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": message, "type": "x", "code": None}}, headers=headers
    )


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    """The JSON body of a request the fake endpoint received."""
    return dict(json.loads(route.calls[index].request.content))


def request_mode(body: dict[str, Any]) -> OutputMode:
    if "tools" in body:
        return OutputMode.tool_call
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return OutputMode.json_schema
    if "schema" in response_format:
        return OutputMode.json_object_schema
    return OutputMode.json_object


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as router:
        yield router


@pytest.fixture(scope="session")
def tls() -> ssl.SSLContext:
    """One TLS context for every test client (building one per client costs ~0.1 s)."""
    return ssl.create_default_context()


@pytest.fixture
async def clients(tls: ssl.SSLContext) -> AsyncIterator[tuple[httpx.Client, httpx.AsyncClient]]:
    with httpx.Client(verify=tls) as sync_client:
        async with httpx.AsyncClient(verify=tls) as async_client:
            yield sync_client, async_client


@pytest.fixture
def ms() -> ModelSettings:
    return ModelSettings(model="test-model", base_url=ENDPOINT, api_key=SecretStr(API_KEY))


@pytest.fixture
def factory(ms: ModelSettings, clients: tuple[httpx.Client, httpx.AsyncClient]) -> Callable[..., Any]:
    sync_client, async_client = clients
    return model_factory(ms, http_client=sync_client, http_async_client=async_client)


@pytest.fixture
def model(factory: Callable[..., Any]) -> Any:
    return factory()


def task_messages(text: str = "Liverpool won 2-1.") -> list[Any]:
    return render_messages(SINGLE, PromptConfig(), {"text": text}, mode=OutputMode.json_schema)


# ---------------------------------------------------------------------- settings and the model


def test_model_settings_from_settings_and_configured(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, openai_base_url="http://localhost:8080/v1", label_model="llama")
    ms = ModelSettings.from_settings(settings, params={"temperature": 0.3, "max_tokens": 99, "top_k": 40})
    assert (ms.model, ms.base_url, ms.api_key) == ("llama", "http://localhost:8080/v1", None)
    assert (ms.temperature, ms.max_output_tokens, ms.params) == (0.3, 99, {"top_k": 40})
    assert ModelSettings.from_settings(settings, model="other").model == "other"
    assert is_configured(settings)
    assert is_configured(Settings(home=tmp_path, openai_api_key=SecretStr("k")))
    assert not is_configured(Settings(home=tmp_path))


def test_build_needs_a_key_or_a_base_url() -> None:
    with pytest.raises(ConfigError, match="no model is configured") as caught:
        build_chat_model(ModelSettings(model="gpt-4o-mini"))
    assert "OPENAI_API_KEY" in caught.value.user_message()


def test_openai_host_gets_no_extra_max_tokens_and_params_are_split(
    clients: tuple[httpx.Client, httpx.AsyncClient],
) -> None:
    sync_client, async_client = clients
    openai_model = build_chat_model(
        ModelSettings(model="gpt-4o-mini", api_key=SecretStr("k"), params={"seed": 7, "top_k": 40}),
        http_client=sync_client,
        http_async_client=async_client,
    )
    assert openai_model.openai_api_base == "https://api.openai.com/v1"
    assert openai_model.extra_body == {"top_k": 40}
    assert openai_model.seed == 7
    assert openai_model.include_response_headers is True
    assert openai_model.max_retries == 0
    local = build_chat_model(
        ModelSettings(model="m", base_url=ENDPOINT + "/"),
        http_client=sync_client,
        http_async_client=async_client,
        max_retries=3,
        logprobs=True,
    )
    assert local.openai_api_base == ENDPOINT
    assert local.extra_body == {"max_tokens": 512}
    assert (local.max_retries, local.logprobs) == (3, True)


async def test_local_server_without_key_gets_a_dummy_key(
    api: respx.MockRouter, clients: tuple[httpx.Client, httpx.AsyncClient]
) -> None:
    route = api.post(URL).mock(return_value=completion('{"label":"Sports"}'))
    model = build_chat_model(
        ModelSettings(model="m", base_url=ENDPOINT), http_client=clients[0], http_async_client=clients[1]
    )
    reply = await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_schema)
    assert reply.value == "Sports"
    assert route.calls[0].request.headers["authorization"] == "Bearer not-needed"


def test_sync_client_is_used_for_sync_calls(
    api: respx.MockRouter, clients: tuple[httpx.Client, httpx.AsyncClient], ms: ModelSettings
) -> None:
    api.post(URL).mock(return_value=completion("hello"))
    model = build_chat_model(ms, http_client=clients[0], http_async_client=clients[1])
    assert model.invoke([HumanMessage(content="hi")]).content == "hello"


# ---------------------------------------------------------------------- the request


async def test_request_body_json_schema(api: respx.MockRouter, model: Any) -> None:
    route = api.post(URL).mock(
        return_value=completion('{"reasoning":"A match result.","label":"Sports"}', logprobs=[("x", 0.0)])
    )
    config = PromptConfig(instructions="Classify the news {text} by topic.", reasoning=True)
    examples = [Example(data={"text": "Markets fell."}, value="Business", reasoning="Stocks.")]
    messages = render_messages(
        SINGLE, config, {"text": "Liverpool won 2-1."}, examples=examples, mode=OutputMode.json_schema
    )
    reply = await label_call(
        model, messages, SINGLE, mode=OutputMode.json_schema, reasoning=True, logprobs=True
    )

    body = sent(route)
    assert route.calls[0].request.headers["authorization"] == f"Bearer {API_KEY}"
    assert body["model"] == "test-model"
    assert body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert body["max_completion_tokens"] == 512 and body["max_tokens"] == 512  # max_tokens for llama.cpp
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "label_single_choice"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == ["reasoning", "label"]
    assert schema["required"] == ["reasoning", "label"]
    assert schema["properties"]["label"]["enum"] == ["Sports", "World", "Business"]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert "Markets fell." in body["messages"][1]["content"]
    assert json.loads(body["messages"][2]["content"]) == {"reasoning": "Stocks.", "label": "Business"}
    assert "Liverpool won 2-1." in body["messages"][3]["content"]
    assert "Liverpool" not in body["messages"][0]["content"]
    assert "tools" not in body
    assert reply.value == "Sports" and reply.reasoning == "A match result."
    assert reply.mode is OutputMode.json_schema and not reply.repaired


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (OutputMode.json_object_schema, {"type": "json_object", "schema": SINGLE.json_schema()}),
        (OutputMode.json_object, {"type": "json_object"}),
    ],
)
async def test_request_body_json_object_modes(
    api: respx.MockRouter, model: Any, mode: OutputMode, expected: dict[str, Any]
) -> None:
    route = api.post(URL).mock(return_value=completion('{"label":"World"}'))
    messages = render_messages(SINGLE, PromptConfig(), {"text": "x"}, mode=mode)
    reply = await label_call(model, messages, SINGLE, mode=mode)
    body = sent(route)
    assert body["response_format"] == expected
    assert "logprobs" not in body
    assert reply.value == "World" and reply.confidence is None
    # Unenforced schemas are spelled out in the prompt.
    assert '"additionalProperties":false' in body["messages"][0]["content"]


async def test_tool_call_mode_forces_the_named_function(api: respx.MockRouter, model: Any) -> None:
    route = api.post(URL).mock(return_value=completion(None, tool_args='{"label": "Business"}'))
    reply = await label_call(model, task_messages(), SINGLE, mode=OutputMode.tool_call)
    body = sent(route)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "label_single_choice"}}
    assert body["tools"][0]["function"]["name"] == "label_single_choice"
    assert body["tools"][0]["function"]["parameters"] == SINGLE.json_schema()
    assert "response_format" not in body
    assert reply.value == "Business" and reply.mode is OutputMode.tool_call


# ---------------------------------------------------------------------- parsing each task type


@pytest.mark.parametrize(
    ("spec", "content", "expected"),
    [
        (SINGLE, '{"label": "sports"}', "Sports"),
        (MULTI, '{"label": ["World", "Sports"]}', ["Sports", "World"]),
        (MULTI, '{"label": []}', []),
        (RATING, '{"label": 4}', 4),
        (NUMBER, '{"label": 7.5}', 7.5),
        (TEXT, '{"label": "  A short answer. "}', "A short answer."),
        (PAIRWISE, '{"label": "right"}', "right"),
        (SINGLE, '```json\n{"label": "World"}\n```', "World"),  # code fences are tolerated
        (SINGLE, '{"label": "World", "extra": 1}', "World"),  # unknown keys are ignored
    ],
)
async def test_parsing_every_task_type(
    api: respx.MockRouter, model: Any, spec: LabelSpec, content: str, expected: object
) -> None:
    api.post(URL).mock(return_value=completion(content))
    reply = await label_call(model, [HumanMessage(content="task")], spec, mode=OutputMode.json_schema)
    assert reply.value == expected
    assert type(reply.value) is type(expected)
    assert reply.raw_text == content and not reply.repaired


async def test_spans_get_offsets_and_unplaceable_ones_are_reported(api: respx.MockRouter, model: Any) -> None:
    items = [
        {"text": "London", "label": "LOC"},
        {"text": "Ada Lovelace", "label": "PER"},
        {"text": "Alan Turing", "label": "PER"},
    ]
    api.post(URL).mock(return_value=completion(json.dumps({"label": items})))
    reply = await label_call(
        model, [HumanMessage(content="t")], SPANS, mode=OutputMode.json_schema, source_text=SOURCE
    )
    assert reply.value == [
        {"start": 0, "end": 12, "text": "Ada Lovelace", "label": "PER"},
        {"start": 36, "end": 42, "text": "London", "label": "LOC"},
    ]
    assert reply.unplaced_spans == [
        {"text": "Alan Turing", "label": "PER", "reason": "the text was not found"}
    ]
    assert not reply.repaired


async def test_spans_none_placeable_gets_a_repair_then_fails_as_unplaceable(
    api: respx.MockRouter, model: Any
) -> None:
    bad = json.dumps({"label": [{"text": "Grace Hopper", "label": "PER"}]})
    route = api.post(URL).mock(side_effect=[completion(bad), completion(bad)])
    with pytest.raises(ModelCallError) as caught:
        await label_call(
            model, [HumanMessage(content="t")], SPANS, mode=OutputMode.json_schema, source_text=SOURCE
        )
    assert caught.value.kind is ErrorKind.unplaceable_spans
    assert "Grace Hopper" in sent(route, 1)["messages"][-1]["content"]


async def test_spans_need_the_source_text(model: Any) -> None:
    with pytest.raises(LabelSpecError, match="source text"):
        await label_call(model, [HumanMessage(content="t")], SPANS, mode=OutputMode.json_schema)


async def test_empty_spans_list_is_a_valid_answer(api: respx.MockRouter, model: Any) -> None:
    api.post(URL).mock(return_value=completion('{"label": []}'))
    reply = await label_call(
        model, [HumanMessage(content="t")], SPANS, mode=OutputMode.json_schema, source_text=SOURCE
    )
    assert reply.value == [] and reply.unplaced_spans == []


# ---------------------------------------------------------------------- repair


async def test_repair_sends_the_bad_reply_and_the_error_back(api: respx.MockRouter, model: Any) -> None:
    route = api.post(URL).mock(
        side_effect=[
            completion('{"label": "Sportz"}', usage=(100, 6, 80)),
            completion('{"label": "Sports"}', usage=(130, 6, 100)),
        ]
    )
    messages = task_messages()
    reply = await label_call(model, messages, SINGLE, mode=OutputMode.json_object)
    assert reply.value == "Sports" and reply.repaired
    second = sent(route, 1)["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[:2] == sent(route, 0)["messages"]
    assert second[2]["content"] == '{"label": "Sportz"}'
    assert "'Sportz' is not one of the labels" in second[3]["content"]
    assert "did you mean 'Sports'" in second[3]["content"]
    assert (reply.input_tokens, reply.output_tokens, reply.cached_tokens) == (230, 12, 180)


async def test_repair_of_invalid_json(api: respx.MockRouter, model: Any) -> None:
    route = api.post(URL).mock(side_effect=[completion("Sports, I think."), completion('{"label":"Sports"}')])
    reply = await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_object)
    assert reply.value == "Sports" and reply.repaired
    assert "not valid JSON" in sent(route, 1)["messages"][-1]["content"]


async def test_failed_repair_raises_invalid_output(api: respx.MockRouter, model: Any) -> None:
    route = api.post(URL).mock(
        side_effect=[completion('{"label": "Cats"}'), completion('{"answer": "Sports"}')]
    )
    with pytest.raises(ModelCallError) as caught:
        await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_object)
    assert caught.value.kind is ErrorKind.invalid_output
    assert '"label" key' in caught.value.message
    assert not caught.value.retryable
    assert route.call_count == 2


async def test_repair_in_tool_call_mode(api: respx.MockRouter, model: Any) -> None:
    route = api.post(URL).mock(
        side_effect=[
            completion(None, tool_args='{"label": 9'),
            completion(None, tool_args='{"label": "World"}'),
        ]
    )
    reply = await label_call(model, task_messages(), SINGLE, mode=OutputMode.tool_call)
    assert reply.value == "World" and reply.repaired
    second = sent(route, 1)
    assert second["messages"][2] == {"role": "assistant", "content": '{"label": 9'}
    assert "label_single_choice" in second["messages"][3]["content"]
    assert second["tool_choice"]["function"]["name"] == "label_single_choice"


async def test_truncated_reply_fails_without_a_repair(api: respx.MockRouter, model: Any) -> None:
    route = api.post(URL).mock(return_value=completion('{"label": "Spo', finish_reason="length"))
    with pytest.raises(ModelCallError) as caught:
        await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_schema)
    assert caught.value.kind is ErrorKind.invalid_output
    assert "max_output_tokens" in (caught.value.hint or "")
    assert route.call_count == 1


# ---------------------------------------------------------------------- confidence from logprobs

SPORTS_TOKENS = [('{"', -0.01), ("label", -0.02), ('":"', -0.03), ("Sports", -0.1), ('"}', -0.04)]


async def test_logprob_confidence_is_the_probability_of_the_value_tokens(
    api: respx.MockRouter, model: Any
) -> None:
    api.post(URL).mock(return_value=completion('{"label":"Sports"}', logprobs=SPORTS_TOKENS))
    reply = await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_schema, logprobs=True)
    assert reply.confidence == pytest.approx(math.exp(-0.1), abs=1e-12)


async def test_no_logprobs_means_no_confidence(api: respx.MockRouter, model: Any) -> None:
    api.post(URL).mock(return_value=completion('{"label":"Sports"}'))
    reply = await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_schema, logprobs=True)
    assert reply.confidence is None


@pytest.mark.parametrize(
    ("spec", "tokens", "expected"),
    [
        # a value split over tokens: the joint probability
        (SINGLE, [('{"label": "', -0.01), ("Spo", -0.2), ("rts", -0.3), ('"}', 0.0)], math.exp(-0.5)),
        # a token that carries the opening quote and the first letters still counts
        (SINGLE, [('{"label":"Sp', -0.2), ("orts", -0.3), ('"}', -1.0)], math.exp(-0.5)),
        (RATING, [('{"label":', -0.5), ("4", -0.7), ("}", 0.0)], math.exp(-0.7)),
        (PAIRWISE, [('{"label":"', 0.0), ("left", -0.25), ('"}', 0.0)], math.exp(-0.25)),
        # multi_choice: the mean of each chosen label's joint probability
        (
            MULTI,
            [('{"label":["', 0.0), ("Sports", -0.1), ('","', 0.0), ("World", -0.6), ('"]}', 0.0)],
            (math.exp(-0.1) + math.exp(-0.6)) / 2,
        ),
        (MULTI, [('{"label":', 0.0), ("[]", -0.3), ("}", 0.0)], math.exp(-0.3)),
        # text, number, spans: the mean token probability
        (
            TEXT,
            [('{"label":"', 0.0), ("Good", -0.1), (" game", -0.3), ('"}', 0.0)],
            (math.exp(-0.1) + math.exp(-0.3)) / 2,
        ),
        (
            NUMBER,
            [('{"label":', 0.0), ("7", -0.2), (".5", -0.4), ("}", 0.0)],
            (math.exp(-0.2) + math.exp(-0.4)) / 2,
        ),
    ],
)
def test_confidence_rules(spec: LabelSpec, tokens: list[tuple[str, float]], expected: float) -> None:
    raw = "".join(t for t, _ in tokens)
    payload = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tokens]
    assert confidence_from_logprobs(spec, raw, payload) == pytest.approx(expected, abs=1e-12)


def test_confidence_with_reasoning_first_and_multibyte_text() -> None:
    tokens = [('{"reasoning":"Sports é", ', -2.0), ('"label":"', 0.0), ("Sports", -0.1), ('"}', 0.0)]
    raw = "".join(t for t, _ in tokens)
    payload = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tokens]
    assert confidence_from_logprobs(SINGLE, raw, payload) == pytest.approx(math.exp(-0.1))


def _with_top(tokens: list[tuple[str, float, list[tuple[str, float]]]]) -> tuple[str, list[dict[str, Any]]]:
    raw = "".join(t for t, _, _ in tokens)
    payload = [
        {
            "token": t,
            "logprob": lp,
            "bytes": list(t.encode()),
            "top_logprobs": [{"token": a, "logprob": alp, "bytes": list(a.encode())} for a, alp in top],
        }
        for t, lp, top in tokens
    ]
    return raw, payload


def test_confidence_is_renormalised_over_legal_alternatives() -> None:
    # As llama.cpp reports it (captured from a real server, SmolLM2, classes Sports/World/Business): the
    # unconstrained distribution. "S" could still spell Sports; "F" and "St" spell nothing allowed; "World"
    # is not listed, so it counts with the smallest listed probability (e^-4.79).
    raw, payload = _with_top(
        [
            ('{ "label": "', -0.16, []),
            (
                "Sports",
                -0.32,
                [("Sports", -0.32), ("Business", -2.5), ("F", -4.37), ("S", -4.53), ("St", -4.79)],
            ),
            ('"}', -0.69, []),
        ]
    )
    legal = math.exp(-0.32) + math.exp(-2.5) + math.exp(-4.53) + math.exp(-4.79)
    assert confidence_from_logprobs(SINGLE, raw, payload) == pytest.approx(math.exp(-0.32) / legal)


def test_a_forced_label_stays_improbable() -> None:
    # The model wanted to write something else; the grammar forced "World": no legal alternative is listed,
    # so the two other classes count with the smallest listed probability and the confidence stays tiny.
    raw, payload = _with_top(
        [
            ('{"label":"', 0.0, []),
            ("World", -13.0, [("Football", -0.1), ("The", -2.0), ("Soccer", -3.0)]),
            ('"}', 0.0, []),
        ]
    )
    confidence = confidence_from_logprobs(SINGLE, raw, payload)
    assert confidence is not None and confidence < 1e-3
    assert confidence == pytest.approx(math.exp(-13.0) / (math.exp(-13.0) + 2 * math.exp(-3.0)))


def test_renormalising_leaves_a_constrained_distribution_alone() -> None:
    # Where the server's logprobs already cover only legal tokens, nothing changes.
    raw, payload = _with_top(
        [
            ('{"label":"', 0.0, []),
            (
                "Sports",
                math.log(0.7),
                [("Sports", math.log(0.7)), ("World", math.log(0.2)), ("Business", math.log(0.1))],
            ),
            ('"}', 0.0, []),
        ]
    )
    assert confidence_from_logprobs(SINGLE, raw, payload) == pytest.approx(0.7)


def test_confidence_is_none_when_tokens_do_not_spell_the_reply() -> None:
    payload = [{"token": "something else", "logprob": -0.1}]
    assert confidence_from_logprobs(SINGLE, '{"label":"Sports"}', payload) is None
    assert confidence_from_logprobs(SINGLE, '{"label":"Sports"}', []) is None


# ---------------------------------------------------------------------- errors, usage, headers


async def test_rate_limit_keeps_retry_after_and_headers(api: respx.MockRouter, model: Any) -> None:
    headers = {
        "retry-after-ms": "250",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    api.post(URL).mock(return_value=error(429, "Rate limit reached", headers))
    with pytest.raises(ModelCallError) as caught:
        await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_schema)
    exc = caught.value
    assert exc.kind is ErrorKind.rate_limited and exc.retryable
    assert exc.retry_after == 0.25
    assert exc.status_code == 429
    assert exc.headers["x-ratelimit-remaining-requests"] == "0"
    assert exc.headers["x-ratelimit-reset-requests"] == "1s"


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (error(503), ErrorKind.server_error),
        (error(500), ErrorKind.server_error),
        (error(401), ErrorKind.auth),
        (error(403), ErrorKind.auth),
        (error(400, "bad param"), ErrorKind.bad_request),
        (error(404, "no such model"), ErrorKind.bad_request),
        (
            httpx.Response(
                429, json={"error": {"message": "quota", "type": "x", "code": "insufficient_quota"}}
            ),
            ErrorKind.auth,
        ),
        (
            httpx.Response(200, text="<html>gateway</html>", headers={"content-type": "text/html"}),
            ErrorKind.server_error,
        ),
    ],
)
async def test_http_errors_map_to_kinds(
    api: respx.MockRouter, model: Any, response: httpx.Response, kind: ErrorKind
) -> None:
    route = api.post(URL).mock(return_value=response)
    with pytest.raises(ModelCallError) as caught:
        await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_schema)
    assert caught.value.kind is kind
    assert route.call_count == 1  # max_retries=0: no hidden SDK retries
    assert API_KEY not in caught.value.user_message()


@pytest.mark.parametrize(
    ("exception", "kind"),
    [(httpx.ReadTimeout("slow"), ErrorKind.timeout), (httpx.ConnectError("refused"), ErrorKind.connection)],
)
async def test_transport_failures_map_to_kinds(
    api: respx.MockRouter, model: Any, exception: Exception, kind: ErrorKind
) -> None:
    api.post(URL).mock(side_effect=exception)
    with pytest.raises(ModelCallError) as caught:
        await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_schema)
    assert caught.value.kind is kind and caught.value.retryable


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"Retry-After-Ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


async def test_usage_latency_and_headers_of_a_success(api: respx.MockRouter, model: Any) -> None:
    headers = {"x-ratelimit-remaining-tokens": "9000", "x-ratelimit-limit-requests": "500"}
    api.post(URL).mock(return_value=completion('{"label":"World"}', usage=(1200, 9, 1024), headers=headers))
    reply = await label_call(model, task_messages(), SINGLE, mode=OutputMode.json_schema)
    assert (reply.input_tokens, reply.output_tokens, reply.cached_tokens) == (1200, 9, 1024)
    assert reply.headers["x-ratelimit-remaining-tokens"] == "9000"
    assert reply.headers["x-ratelimit-limit-requests"] == "500"
    assert reply.latency_ms > 0


# ---------------------------------------------------------------------- capability detection


def fake_server(
    answers: dict[OutputMode, httpx.Response | Callable[[dict[str, Any]], httpx.Response]],
    seen: list[OutputMode],
) -> Callable[[httpx.Request], httpx.Response]:
    """A server that answers by the output mode of each request (missing modes answer 500)."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        mode = request_mode(body)
        seen.append(mode)
        answer = answers.get(mode, error(500, "unsupported"))
        return answer(body) if callable(answer) else answer

    return handle


async def test_fallback_from_500_to_json_object_schema(api: respx.MockRouter, factory: Any) -> None:
    seen: list[OutputMode] = []
    api.post(URL).mock(
        side_effect=fake_server({OutputMode.json_object_schema: completion('{"label":"Sports"}')}, seen)
    )
    caps = await detect_capabilities(factory, SINGLE)
    assert caps.mode is OutputMode.json_object_schema
    assert seen == [OutputMode.json_schema, OutputMode.json_object_schema, OutputMode.json_object_schema]
    assert caps.logprobs is False  # the logprobs probe came back without logprobs
    assert "500" in caps.rejected["json_schema"]


async def test_probes_are_cheap_and_not_retried(api: respx.MockRouter, factory: Any) -> None:
    route = api.post(URL).mock(
        side_effect=fake_server({OutputMode.json_schema: completion('{"label":"World"}')}, [])
    )
    caps = await detect_capabilities(factory, SINGLE)
    assert caps.mode is OutputMode.json_schema
    first, logprob_probe = sent(route, 0), sent(route, 1)
    assert first["max_completion_tokens"] == 64 and first["max_tokens"] == 64
    assert "logprobs" not in first
    assert logprob_probe["logprobs"] is True and logprob_probe["top_logprobs"] == 5


async def test_400_and_garbage_fall_back_to_a_forced_tool_call(
    api: respx.MockRouter, factory: Any, model: Any
) -> None:
    seen: list[OutputMode] = []
    tool_reply = completion(
        None, tool_args='{"label": "World"}', logprobs=[('{"label": "', 0.0), ("World", -0.2), ('"}', 0.0)]
    )
    api.post(URL).mock(
        side_effect=fake_server(
            {
                OutputMode.json_schema: error(400, "response_format json_schema is not supported"),
                OutputMode.json_object_schema: completion("Sure! The topic is world news."),
                OutputMode.tool_call: tool_reply,
            },
            seen,
        )
    )
    caps = await detect_capabilities(factory, SINGLE)
    assert caps.mode is OutputMode.tool_call
    assert caps.logprobs is True
    assert seen == [
        OutputMode.json_schema,
        OutputMode.json_object_schema,
        OutputMode.tool_call,
        OutputMode.tool_call,
    ]
    assert "not valid JSON" in caps.rejected["json_object_schema"]
    reply = await label_call(model, task_messages(), SINGLE, mode=caps.mode, logprobs=caps.logprobs)
    assert reply.value == "World"
    assert reply.confidence == pytest.approx(math.exp(-0.2))  # tokens spell the (re-serialised) arguments


async def test_tool_call_mode_needs_a_real_tool_call(api: respx.MockRouter, factory: Any) -> None:
    seen: list[OutputMode] = []
    api.post(URL).mock(
        side_effect=fake_server(
            {
                OutputMode.tool_call: completion('{"label":"World"}'),  # ignores tool_choice
                OutputMode.json_object: completion('{"label":"World"}'),
            },
            seen,
        )
    )
    caps = await detect_capabilities(factory, SINGLE)
    assert caps.mode is OutputMode.json_object
    assert caps.rejected["tool_call"] == "the reply has no tool call"


async def test_only_json_object_works(api: respx.MockRouter, factory: Any) -> None:
    seen: list[OutputMode] = []
    api.post(URL).mock(
        side_effect=fake_server(
            {
                OutputMode.json_schema: error(500),
                OutputMode.json_object_schema: error(400),
                OutputMode.tool_call: error(500),
                OutputMode.json_object: completion(
                    '{"label":"Business"}', logprobs=[('{"label":"Business"}', -0.1)]
                ),
            },
            seen,
        )
    )
    caps = await detect_capabilities(factory, SINGLE)
    assert caps.mode is OutputMode.json_object and caps.logprobs is True
    assert set(caps.rejected) == {"json_schema", "json_object_schema", "tool_call"}


async def test_no_mode_works(api: respx.MockRouter, factory: Any) -> None:
    api.post(URL).mock(side_effect=fake_server({OutputMode.json_object: completion("no JSON here")}, []))
    with pytest.raises(ModelCallError, match="no usable JSON") as caught:
        await detect_capabilities(factory, SINGLE)
    assert caught.value.kind is ErrorKind.invalid_output


async def test_auth_failure_stops_detection(api: respx.MockRouter, factory: Any) -> None:
    route = api.post(URL).mock(return_value=error(401, "Incorrect API key"))
    with pytest.raises(ModelCallError) as caught:
        await detect_capabilities(factory, SINGLE)
    assert caught.value.kind is ErrorKind.auth
    assert route.call_count == 1


async def test_detection_accepts_spans_the_probe_text_lacks(api: respx.MockRouter, factory: Any) -> None:
    api.post(URL).mock(return_value=completion('{"label":[{"text":"Paris","label":"LOC"}]}'))
    caps = await detect_capabilities(factory, SPANS)
    assert caps.mode is OutputMode.json_schema


async def test_capabilities_are_remembered_and_persisted(
    api: respx.MockRouter, factory: Any, ms: ModelSettings, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", openai_api_key=SecretStr(API_KEY))
    seen: list[OutputMode] = []
    route = api.post(URL).mock(
        side_effect=fake_server({OutputMode.json_object_schema: completion('{"label":"Sports"}')}, seen)
    )
    store = CapabilityStore.for_settings(settings)
    first = await store.ensure(ms, factory, SINGLE)
    calls = route.call_count
    again = await store.ensure(ms, factory, SINGLE)
    assert again == first and route.call_count == calls  # no request the second time

    path = settings.home / ENDPOINTS_FILE
    saved = path.read_text(encoding="utf-8")
    assert API_KEY not in saved
    assert json.loads(saved)["endpoints"][0]["key"] == "https://api.test/v1 test-model"

    reread = CapabilityStore.for_settings(settings)  # a new process
    assert await reread.ensure(ms, factory, SINGLE) == first
    assert route.call_count == calls
    assert reread.get(ENDPOINT + "/", "test-model") == first  # a trailing slash is the same endpoint
    assert reread.get(ENDPOINT, "other-model") is None

    assert reread.forget(ENDPOINT, "test-model") == 1
    assert CapabilityStore.for_settings(settings).get(ENDPOINT, "test-model") is None
    redetected = await reread.ensure(ms, factory, SINGLE)
    assert redetected.mode is OutputMode.json_object_schema and route.call_count > calls


async def test_redetect_and_damaged_store_file(
    api: respx.MockRouter, factory: Any, ms: ModelSettings, tmp_path: Path
) -> None:
    path = tmp_path / ENDPOINTS_FILE
    path.write_text("{not json", encoding="utf-8")
    route = api.post(URL).mock(
        side_effect=fake_server({OutputMode.json_schema: completion('{"label":"World"}')}, [])
    )
    store = CapabilityStore(path)
    assert store.get(ENDPOINT, "test-model") is None
    await store.ensure(ms, factory, SINGLE)
    calls = route.call_count
    await store.ensure(ms, factory, SINGLE, redetect=True)
    assert route.call_count == 2 * calls
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == 1


async def test_concurrent_first_uses_detect_once(
    api: respx.MockRouter, factory: Any, ms: ModelSettings
) -> None:
    import asyncio

    route = api.post(URL).mock(
        side_effect=fake_server({OutputMode.json_schema: completion('{"label":"World"}')}, [])
    )
    store = CapabilityStore()  # memory only
    results = await asyncio.gather(*(store.ensure(ms, factory, SINGLE) for _ in range(5)))
    assert len({r.mode for r in results}) == 1
    assert route.call_count == 2  # one mode probe + one logprobs probe


async def test_tool_call_turns_carry_empty_content_for_compatible_servers(
    api: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    # llama.cpp answers HTTP 500 to an assistant turn whose content is null (../STACK.md); OpenAI accepts it.
    from langchain_core.messages import AIMessage, ToolMessage

    route = api.post(URL).mock(return_value=completion("done"))
    ms = ModelSettings(model="local", base_url=ENDPOINT, api_key=SecretStr(API_KEY))
    chat = build_chat_model(ms, http_async_client=http)
    turns = [
        HumanMessage(content="status?"),
        AIMessage(content="", tool_calls=[{"name": "project_status", "args": {}, "id": "call_1"}]),
        ToolMessage(content="all good", tool_call_id="call_1"),
    ]
    await chat.ainvoke(turns)
    sent = json.loads(route.calls.last.request.content)["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["content"] == "" and sent[1]["tool_calls"]
