"""Tests of evals/fake_openai.py: answers per schema, tool calls, logprobs, limits, faults, Batch API, stats.

Every test starts its own server on 127.0.0.1 (a free port) and talks to it with a real httpx client.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion

from evals.fake_openai import (
    FakeOpenAIServer,
    FakeServerConfig,
    answer_for_schema,
    format_duration,
    load_answers,
    pick_enum,
    task_text,
)
from tools.errors import ErrorKind, ModelCallError
from tools.labelspec import LabelSpec, TaskType, place_spans
from tools.ratelimit import (
    Backoff,
    HeaderBudget,
    RateController,
    RateLimits,
    parse_duration,
    retry_after_from_headers,
)

QUICK = {"latency_ms": 0, "jitter_ms": 0}
TEXT = "Text: Angela Merkel met Emmanuel Macron in Paris to talk about Business and trade."


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(FakeServerConfig(**QUICK)) as running:
        yield running


@pytest.fixture
def server(shared_server: FakeOpenAIServer) -> FakeOpenAIServer:
    """A quick server with default answers and fresh counters (shared by the module: starting one costs ~0.1 s)."""
    shared_server.reset()
    return shared_server


def chat(
    client: httpx.Client, content: str = TEXT, *, schema: dict[str, Any] | None = None, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": "fake-model",
        "messages": [{"role": "system", "content": "Label the text."}, {"role": "user", "content": content}],
        **extra,
    }
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "label", "strict": True, "schema": schema},
        }
    return client.post("/chat/completions", json=body)


def content_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    ChatCompletion.model_validate(response.json())
    return json.loads(response.json()["choices"][0]["message"]["content"])


SPECS = {
    "single_choice": LabelSpec.from_classes(["Sports", "World", "Business"], input_fields=["text"]),
    "multi_choice": LabelSpec.from_classes(
        ["Sports", "World", "Business"], type=TaskType.multi_choice, input_fields=["text"]
    ),
    "rating": LabelSpec.from_classes([], type=TaskType.rating, max_rating=5, input_fields=["text"]),
    "number": LabelSpec.from_classes(
        [], type=TaskType.number, min_value=10, max_value=20, input_fields=["text"]
    ),
    "text": LabelSpec.from_classes([], type=TaskType.text, input_fields=["text"]),
    "pairwise": LabelSpec.from_classes([], type=TaskType.pairwise, input_fields=["summary_1", "summary_2"]),
    "spans": LabelSpec.from_classes(["PER", "LOC"], type=TaskType.spans, input_fields=["text"]),
}


# ------------------------------------------------------------------------------------------- answers


@pytest.mark.parametrize("task_type", list(SPECS))
def test_answers_are_valid_for_every_label_schema(server: FakeOpenAIServer, task_type: str) -> None:
    spec = SPECS[task_type]
    schema = spec.json_schema(reasoning=True)
    with httpx.Client(base_url=server.url) as client:
        first = content_of(chat(client, schema=schema))
        again = content_of(chat(client, schema=schema))
    jsonschema.validate(first, schema)
    assert first == again  # deterministic
    source = task_text(TEXT)
    label = first["label"]
    if task_type == "spans":
        label, unplaceable = place_spans(source, first["label"])
        assert label and not unplaceable
    spec.validate_value(label, source_text=source)
    if task_type in ("single_choice", "multi_choice"):
        assert first["label"] in ("Business", ["Business"])  # the class the text names


def test_enum_rule_uses_the_named_value_and_ignores_a_plain_listing() -> None:
    labels = ["positive", "negative", "neutral"]
    assert pick_enum(labels, "I am so POSITIVE about this", "k") == "positive"
    listing = "Choose positive, negative or neutral."
    assert pick_enum(labels, listing, "k") == pick_enum(labels, listing, "k") in labels
    # The listing names each once; the text names "negative" again, so it stands out.
    assert pick_enum(labels, listing + "\nThis was a negative experience.", "k") == "negative"
    picks = {pick_enum(labels, f"review number {n}", "k") for n in range(30)}
    assert picks == set(labels)  # without a hint the hash spreads over every value
    assert pick_enum([1, 2, 3], "three", "k") in (1, 2, 3)
    assert task_text("Classify this.\n<text>the body</text>\nAnswer in JSON.") == "the body"


def test_generic_schemas_refs_arrays_and_bounds() -> None:
    schema = {
        "type": "object",
        "$defs": {"Level": {"type": "string", "enum": ["low", "high"]}},
        "properties": {
            "level": {"$ref": "#/$defs/Level"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "minItems": 2},
            "score": {"type": "integer", "minimum": 3, "maximum": 4},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
            "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 5}]},
            "flag": {"type": "boolean"},
            "nested": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        },
    }
    value = answer_for_schema(schema, message="Text: something with a high level")
    jsonschema.validate(value, schema)
    assert isinstance(value, dict) and value["level"] == "high"


def test_scripted_answers_from_rules_file_and_callable(tmp_path: Path) -> None:
    rules = tmp_path / "answers.jsonl"
    rules.write_text('{"contains": "macron", "label": "World", "logprob": -1.5}\n\n')
    schema = SPECS["single_choice"].json_schema()
    config = FakeServerConfig(**QUICK, answers=load_answers(rules))
    with FakeOpenAIServer(config) as server, httpx.Client(base_url=server.url) as client:
        reply = chat(client, schema=schema, logprobs=True, top_logprobs=3)
        assert content_of(reply)["label"] == "World"
        label_token = next(
            t for t in reply.json()["choices"][0]["logprobs"]["content"] if t["token"] == "World"
        )
        assert label_token["logprob"] == -1.5
    scripted = {"Paris": "Sports"}

    def answer(message: str) -> str | None:
        return next((label for word, label in scripted.items() if word in message), None)

    with (
        FakeOpenAIServer(FakeServerConfig(**QUICK), answer=answer) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert content_of(chat(client, schema=schema))["label"] == "Sports"
        assert content_of(chat(client, "Text: no city here", schema=schema))["label"] in (
            "Sports",
            "World",
            "Business",
        )
    rules.write_text('{"contains": ""}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_answers(rules)


def test_tool_call_mode_answers_with_arguments(server: FakeOpenAIServer) -> None:
    schema = SPECS["multi_choice"].json_schema()
    tools = [
        {
            "type": "function",
            "function": {"name": "other", "parameters": {"type": "object", "properties": {}}},
        },
        {"type": "function", "function": {"name": "record_label", "parameters": schema}},
    ]
    forced = {"type": "function", "function": {"name": "record_label"}}
    with httpx.Client(base_url=server.url) as client:
        reply = chat(client, tools=tools, tool_choice=forced)
        bad = chat(client, tools=tools, tool_choice={"type": "function", "function": {"name": "nope"}})
    assert reply.status_code == 200
    choice = ChatCompletion.model_validate(reply.json()).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0] if choice.message.tool_calls else None
    assert call is not None and call.type == "function" and call.function.name == "record_label"
    jsonschema.validate(json.loads(call.function.arguments), schema)
    assert bad.status_code == 400


def test_json_object_modes_and_plain_text(server: FakeOpenAIServer) -> None:
    schema = SPECS["single_choice"].json_schema()
    with httpx.Client(base_url=server.url) as client:
        llama = chat(client, response_format={"type": "json_object", "schema": schema})
        prompt = chat(client, f"Answer with JSON for this schema: {json.dumps(schema)}\n{TEXT}")
        plain_json = chat(client, response_format={"type": "json_object"})
        text = chat(client)
    jsonschema.validate(content_of(llama), schema)
    jsonschema.validate(content_of(prompt), schema)
    assert content_of(plain_json) == {}
    assert text.json()["choices"][0]["message"]["content"].startswith("This is a fake answer")


def test_logprobs_cover_the_content_tokens(server: FakeOpenAIServer) -> None:
    schema = SPECS["single_choice"].json_schema()
    with httpx.Client(base_url=server.url) as client:
        with_top = chat(client, schema=schema, logprobs=True, top_logprobs=2).json()
        no_top = chat(client, schema=schema, logprobs=True).json()
        without = chat(client, schema=schema).json()
    tokens = with_top["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == with_top["choices"][0]["message"]["content"]
    label = next(t for t in tokens if t["token"] == "Business")
    assert label["logprob"] == -0.05
    assert [alt["token"] for alt in label["top_logprobs"]] == ["Business", "Sports"]
    assert math.isclose(
        sum(math.exp(a["logprob"]) for a in label["top_logprobs"]), 0.95 + 0.05 / 2, rel_tol=0.05
    )
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in tokens)
    assert all(t["top_logprobs"] == [] for t in no_top["choices"][0]["logprobs"]["content"])
    assert without["choices"][0]["logprobs"] is None


def test_usage_counts_tokens_and_caches_long_prefixes(server: FakeOpenAIServer) -> None:
    instructions = "Follow these labeling rules carefully. " * 200  # ~8,000 chars, ~2,000 tokens
    with httpx.Client(base_url=server.url) as client:
        first = chat(client, instructions + "Text: one").json()["usage"]
        second = chat(client, instructions + "Text: two").json()["usage"]
    assert first["prompt_tokens"] == pytest.approx(len(instructions) / 4 + 5, abs=10)
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert 1024 <= cached < second["prompt_tokens"] and cached % 128 == 0
    assert first["total_tokens"] == first["prompt_tokens"] + first["completion_tokens"]


# ------------------------------------------------------------------------------------------- limits


def test_429_past_the_rpm_with_openai_headers() -> None:
    config = FakeServerConfig(**QUICK, rpm=120, tpm=100_000, burst_seconds=1.5)  # 2/s, a burst of 3
    with FakeOpenAIServer(config) as server, httpx.Client(base_url=server.url) as client:
        replies = [chat(client) for _ in range(5)]
    assert [r.status_code for r in replies][:3] == [200, 200, 200]
    limited = next(r for r in replies if r.status_code == 429)
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    hint = retry_after_from_headers(limited.headers)
    assert hint is not None and 0 < hint <= 0.5
    assert int(limited.headers["retry-after"]) >= 1
    first = replies[0].headers
    requests = HeaderBudget.from_headers(first, "requests")
    tokens = HeaderBudget.from_headers(first, "tokens")
    assert requests is not None and requests.limit == 120 and requests.remaining == 2
    assert requests.reset_seconds == pytest.approx(0.5, abs=0.05)
    assert tokens is not None and tokens.limit == 100_000 and tokens.remaining < tokens.limit
    assert first["x-ratelimit-reset-requests"].endswith("ms")


def test_duration_format_round_trips() -> None:
    for seconds in (0.0, 0.02, 0.5, 1.0, 1.5, 59.25, 61.0, 360.0):
        text = format_duration(seconds)
        assert parse_duration(text) == pytest.approx(seconds, abs=0.001), text
    assert format_duration(360) == "6m0s" and format_duration(0.0201) == "21ms"


async def test_fault_probabilities_are_roughly_honoured_and_seeded() -> None:
    config = FakeServerConfig(**QUICK, rpm=1_000_000, p429=0.2, p500=0.1, pbadjson=0.1, seed=7)
    async with FakeOpenAIServer(config) as server, httpx.AsyncClient(base_url=server.url) as client:
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": TEXT}],
            "response_format": {"type": "json_object"},
        }

        async def run() -> list[str]:
            outcomes = []
            for _ in range(150):  # sequential, so the seeded draws meet the requests in a fixed order
                reply = await client.post("/chat/completions", json=body)
                if reply.status_code == 200:
                    try:
                        json.loads(reply.json()["choices"][0]["message"]["content"])
                        outcomes.append("ok")
                    except json.JSONDecodeError:
                        outcomes.append("badjson")
                else:
                    outcomes.append(str(reply.status_code))
            return outcomes

        first = await run()
        await client.post(f"{server.root_url}/reset")
        second = await run()
        stats = server.stats()
    assert first == second
    counts = Counter(first)
    assert counts["429"] / 150 == pytest.approx(0.2, abs=0.08)
    assert counts["500"] / 150 == pytest.approx(0.1, abs=0.06)
    assert counts["badjson"] / 150 == pytest.approx(0.1, abs=0.06)
    assert (stats.rate_limited, stats.rate_limited_injected, stats.server_errors, stats.bad_json) == (
        counts["429"],
        counts["429"],
        counts["500"],
        counts["badjson"],
    )
    assert stats.requests == 150 and stats.ok == counts["ok"] + counts["badjson"]


async def test_timeouts_hold_the_request_until_the_client_gives_up() -> None:
    config = FakeServerConfig(**QUICK, ptimeout=1.0, timeout_hold_s=30)
    async with (
        FakeOpenAIServer(config) as server,
        httpx.AsyncClient(base_url=server.url, timeout=0.3) as client,
    ):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
            )
        assert time.monotonic() - started < 2
        for _ in range(40):  # the server notices the disconnect within ~0.1 s
            if server.stats().timeouts:
                break
            await asyncio.sleep(0.05)
        assert server.stats().timeouts == 1


def test_llama_mode_refuses_json_schema_with_500() -> None:
    schema = SPECS["single_choice"].json_schema()
    with (
        FakeOpenAIServer(FakeServerConfig(**QUICK, json_schema=False)) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        refused = chat(client, schema=schema)
        required = chat(
            client,
            tools=[{"type": "function", "function": {"name": "f", "parameters": schema}}],
            tool_choice="required",
        )
        fallback = chat(client, response_format={"type": "json_object", "schema": schema})
    assert refused.status_code == 500 and required.status_code == 500
    jsonschema.validate(content_of(fallback), schema)
    assert server.stats().server_errors == 2


def test_bad_requests_and_auth() -> None:
    with (
        FakeOpenAIServer(FakeServerConfig(**QUICK, api_key="sk-test")) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert chat(client).status_code == 401
        client.headers["Authorization"] = "Bearer sk-test"
        assert chat(client).status_code == 200
        assert client.post("/chat/completions", json={"messages": []}).status_code == 400
        assert client.post("/chat/completions", content=b"{not json").status_code == 400
        assert chat(client, stream=True).status_code == 400
        assert client.get("/models").json()["data"][0]["id"] == "fake-model"
    assert server.stats().client_errors == 4


def test_stats_endpoint_and_reset(server: FakeOpenAIServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            chat(client)
        stats = httpx.get(f"{server.root_url}/stats").json()
        assert stats["requests"] == 3 and stats["ok"] == 3
        assert [status for _, status in stats["events"]] == [200, 200, 200]
        assert stats["peak_accepted_per_second"] == 3
        assert httpx.post(f"{server.root_url}/reset").json() == {"reset": True}
    assert server.stats().requests == 0 and server.stats().events == []


# ------------------------------------------------------------------------------------------- Batch API


def _upload(client: httpx.Client, lines: list[dict[str, Any]] | str, purpose: str = "batch") -> str:
    data = lines if isinstance(lines, str) else "".join(json.dumps(line) + "\n" for line in lines)
    reply = client.post("/files", files={"file": ("in.jsonl", data.encode())}, data={"purpose": purpose})
    assert reply.status_code == 200, reply.text
    return FileObject.model_validate(reply.json()).id


def _wait_for(client: httpx.Client, batch_id: str, statuses: set[str]) -> Batch:
    seen: list[str] = []
    for _ in range(100):
        batch = Batch.model_validate(client.get(f"/batches/{batch_id}").json())
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in statuses:
            return batch
        time.sleep(0.02)
    raise AssertionError(f"batch stuck: {seen}")


def test_batch_flow_end_to_end() -> None:
    schema = SPECS["single_choice"].json_schema()
    request_format = {
        "type": "json_schema",
        "json_schema": {"name": "label", "strict": True, "schema": schema},
    }
    lines: list[dict[str, Any]] = [
        {
            "custom_id": f"task-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "m",
                "messages": [{"role": "user", "content": text}],
                "response_format": request_format,
            },
        }
        for n, text in enumerate(["Text: Sports news", "Text: World affairs", "Text: Business deal"])
    ]
    lines.append(
        {"custom_id": "broken", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}
    )
    with (
        FakeOpenAIServer(FakeServerConfig(**QUICK, batch_phase_s=0.15)) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        file_id = _upload(client, lines)
        created = client.post(
            "/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
        batch = Batch.model_validate(created.json())
        assert batch.status == "validating" and batch.request_counts and batch.request_counts.total == 4
        running = _wait_for(client, batch.id, {"in_progress", "completed"})
        assert running.status == "in_progress"
        done = _wait_for(client, batch.id, {"completed"})
        assert done.request_counts is not None and (
            done.request_counts.completed,
            done.request_counts.failed,
        ) == (3, 1)
        assert done.output_file_id and done.error_file_id
        output = [
            json.loads(line) for line in client.get(f"/files/{done.output_file_id}/content").text.splitlines()
        ]
        errors = [
            json.loads(line) for line in client.get(f"/files/{done.error_file_id}/content").text.splitlines()
        ]
        assert client.get(f"/files/{done.output_file_id}").json()["purpose"] == "batch_output"
        # Validation failures, wrong purpose, unknown ids.
        bad_file = _upload(client, "not json\n")
        failed = client.post(
            "/batches",
            json={"input_file_id": bad_file, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ).json()
        failed_batch = _wait_for(client, failed["id"], {"failed"})
        assert failed_batch.errors and failed_batch.errors.data and failed_batch.errors.data[0].line == 1
        wrong_purpose = _upload(client, lines, purpose="fine-tune")
        rejected = client.post(
            "/batches",
            json={
                "input_file_id": wrong_purpose,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        assert rejected.status_code == 400
        assert client.get("/batches/batch_nope").status_code == 404
    assert [line["custom_id"] for line in output] == ["task-0", "task-1", "task-2"]
    labels = []
    for line in output:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        completion = ChatCompletion.model_validate(line["response"]["body"])
        labels.append(json.loads(completion.choices[0].message.content or "")["label"])
    assert labels == ["Sports", "World", "Business"]
    assert errors[0]["custom_id"] == "broken" and errors[0]["response"]["status_code"] == 400


def test_batch_cancel() -> None:
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    with (
        FakeOpenAIServer(FakeServerConfig(**QUICK, batch_phase_s=0.1)) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        file_id = _upload(client, [line])
        batch = client.post(
            "/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ).json()
        cancelling = Batch.model_validate(client.post(f"/batches/{batch['id']}/cancel").json())
        assert cancelling.status == "cancelling"
        cancelled = _wait_for(client, batch["id"], {"cancelled"})
        assert cancelled.cancelled_at is not None and cancelled.output_file_id is None
        assert client.post(f"/batches/{batch['id']}/cancel").status_code == 409


# ------------------------------------------------------------------------------------------- clients


def test_openai_sdk_reads_the_fake(server: FakeOpenAIServer) -> None:
    from openai import OpenAI
    from pydantic import BaseModel

    class Answer(BaseModel):
        label: str

    with httpx.Client() as http:
        client = OpenAI(base_url=server.url, api_key="sk-fake", http_client=http, max_retries=0)
        parsed = client.chat.completions.parse(
            model="fake-model", messages=[{"role": "user", "content": TEXT}], response_format=Answer
        )
        assert isinstance(parsed.choices[0].message.parsed, Answer)
        uploaded = client.files.create(
            file=(
                "in.jsonl",
                b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n',
            ),
            purpose="batch",
        )
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert client.batches.retrieve(batch.id).id == batch.id


@pytest.mark.subprocess
def test_command_line_entry_point_serves() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "evals.fake_openai", "--port", "0", "--rpm", "600", "--latency-ms", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), line
        reply = None
        for _ in range(50):
            try:
                reply = httpx.post(
                    f"{url}/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                )
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert reply is not None and reply.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    bad = subprocess.run(
        [sys.executable, "-m", "evals.fake_openai", "--p429", "0.8", "--p500", "0.8"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert bad.returncode == 2 and "must not exceed 1" in bad.stderr


# ------------------------------------------------------------------------------------------- throughput


async def drive(
    server: FakeOpenAIServer, controller: RateController, *, tasks: int, deadline: float
) -> dict[str, float]:
    """Send `tasks` requests through `controller`, retrying with its backoff; return what happened."""
    body = {"model": "m", "messages": [{"role": "user", "content": TEXT}], "max_tokens": 20}
    backoff = Backoff(max_attempts=8)
    finished = {"ok": 0, "lost": 0}
    limits = httpx.Limits(max_connections=controller.limits.max_concurrency + 8)
    async with httpx.AsyncClient(base_url=server.url, timeout=5, limits=limits) as client:

        async def one() -> None:
            for attempt in range(1, 100):
                async with controller.slot(estimated_tokens=60) as slot:
                    try:
                        reply = await client.post("/chat/completions", json=body)
                    except httpx.TimeoutException as error:
                        failure = ModelCallError(str(error), kind=ErrorKind.timeout)
                    else:
                        if reply.status_code == 200:
                            slot.success(reply.headers, used_tokens=reply.json()["usage"]["total_tokens"])
                            finished["ok"] += 1
                            return
                        kind = ErrorKind.rate_limited if reply.status_code == 429 else ErrorKind.server_error
                        failure = ModelCallError(
                            reply.text, kind=kind, retry_after=retry_after_from_headers(reply.headers)
                        )
                    slot.failure(failure)
                delay = backoff.should_retry(failure, attempt)
                if delay is None:
                    finished["lost"] += 1
                    return
                await asyncio.sleep(delay)

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(tasks))), timeout=deadline)
        elapsed = time.monotonic() - started
    return {"ok": finished["ok"], "lost": finished["lost"], "elapsed": elapsed}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server_burst", "p429"), [(1.0, 0.0), (0.1, 0.0), (1.0, 0.05)], ids=["burst1s", "burst0.1s", "p429-5pct"]
)
async def test_rate_controller_throughput_against_the_fake_server(server_burst: float, p429: float) -> None:
    rpm, tasks = 3000, 1000
    config = FakeServerConfig(
        rpm=rpm, latency_ms=50, jitter_ms=10, burst_seconds=server_burst, p429=p429, seed=1
    )
    controller = RateController(RateLimits(rpm=rpm, max_concurrency=32))
    async with FakeOpenAIServer(config) as server:
        result = await drive(server, controller, tasks=tasks, deadline=90)
        stats = server.stats()
    ceiling = rpm / 60
    achieved = result["ok"] / result["elapsed"]
    print(
        f"\n[{server_burst=} {p429=}] {result['ok']:.0f} ok, {result['lost']:.0f} lost in {result['elapsed']:.1f} s: "
        f"{achieved:.1f}/s of a {ceiling:.0f}/s ceiling = {achieved / ceiling:.3f}; server 429s {stats.rate_limited} "
        f"({stats.rate_limited_injected} injected), peak {stats.peak_accepted_per_second:.0f} accepted in 1 s; "
        f"controller: {controller.stats().model_dump(include={'concurrency_limit', 'peak_in_flight', 'decreases', 'cooldowns'})}"
    )
    assert result["ok"] == tasks and result["lost"] == 0
    assert achieved / ceiling >= (0.9 if p429 == 0 else 0.8)
