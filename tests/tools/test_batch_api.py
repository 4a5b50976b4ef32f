"""The Batch API labeler against the fake OpenAI server on 127.0.0.1 (and respx for provider states the fake
cannot reach): the JSONL body, the whole flow through the engine, repairs, errors, resume, cancel, registry."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import JsonValue, SecretStr
from sqlalchemy import func, select

from evals.fake_openai import FakeOpenAIServer, FakeServerConfig, RequestError
from tests.tools.test_engine import add_tasks, predictions, run_row, texts
from tests.tools.test_llm import API_KEY, ENDPOINT, completion
from tools.batch_api import BatchLabeler, BatchPhase, BatchStatus, get_batch, list_batches
from tools.costs import BATCH_DISCOUNT, ModelPrice, PriceTable, estimate_job
from tools.engine import JobScope, RunStatus, ScopeKind, cancel_job, run_job
from tools.errors import ConfigError, ErrorKind, NotFoundError
from tools.labelers import TaskInput
from tools.labelspec import LabelSpec
from tools.llm import CapabilityStore, EndpointCapabilities, ModelSettings, OutputMode
from tools.llm_labeler import LLMLabeler
from tools.projects import create_project
from tools.ratelimit import RateLimits
from tools.settings import Settings
from tools.storage import BatchJob, Database, Prediction, ResponseCache
from tools.versions import PromptConfig, VersionInfo, create_version

SPEC = LabelSpec.from_classes(["Sports", "World", "Business"], input_fields=["text"])
MODEL = "fake-model"
PRICE = ModelPrice(input=1.0, cached_input=0.5, output=4.0)
FAST = {"latency_ms": 1, "jitter_ms": 0, "rpm": 60_000}


class Traffic:
    """Records every request the SDK sends (an httpx event hook) and the JSONL lines it uploads."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.uploads: list[list[dict[str, Any]]] = []
        self.chat_bodies: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> None:
        path = request.url.path
        self.calls.append((request.method, path))
        content = request.read()
        if path.endswith("/files") and request.method == "POST":
            lines = [line for line in content.split(b"\r\n") if line.startswith(b'{"custom_id"')]
            self.uploads.append([json.loads(line) for line in b"\n".join(lines).splitlines() if line])
        elif path.endswith("/chat/completions"):
            self.chat_bodies.append(json.loads(content))

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, path in self.calls if m == method and path.endswith(suffix))


class Statuses(list[BatchStatus]):
    def __call__(self, status: BatchStatus) -> None:
        self.append(status)


@pytest.fixture
def version(db: Database) -> VersionInfo:
    create_project(db, "news", spec=SPEC)
    return create_version(db, "news", PromptConfig(instructions="Label the news item.", model=MODEL))


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()


@pytest.fixture
async def client(traffic: Traffic) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(event_hooks={"request": [traffic]}) as http:
        yield http


def serve(**config: Any) -> FakeOpenAIServer:
    answer = config.pop("answer", None)
    return FakeOpenAIServer(FakeServerConfig(**{**FAST, "batch_phase_s": 0.1, **config}), answer=answer)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with serve() as running:
        yield running


def known_store(base_url: str, mode: OutputMode = OutputMode.json_schema) -> CapabilityStore:
    store = CapabilityStore(None)
    store.remember(base_url, MODEL, EndpointCapabilities(mode=mode, logprobs=True))
    return store


def inner_labeler(
    settings: Settings,
    version: VersionInfo,
    db: Database | None,
    client: httpx.AsyncClient,
    base_url: str,
    *,
    mode: OutputMode = OutputMode.json_schema,
) -> LLMLabeler:
    async def no_wait(_: float) -> None:
        return None

    return LLMLabeler(
        settings,
        SPEC,
        version,
        model_settings=ModelSettings(
            model=MODEL, base_url=base_url, api_key=SecretStr(API_KEY), timeout_s=10
        ),
        rate_limits=RateLimits(rpm=60_000, max_concurrency=8),
        capability_store=known_store(base_url, mode),
        db=db,
        http_async_client=client,
        prices=PriceTable({MODEL: PRICE}),
        sleep=no_wait,
    )


def batch_labeler(
    settings: Settings,
    version: VersionInfo,
    db: Database,
    client: httpx.AsyncClient,
    base_url: str,
    *,
    statuses: Statuses | None = None,
    **options: Any,
) -> BatchLabeler:
    return BatchLabeler(
        inner_labeler(settings, version, db, client, base_url),
        project="news",
        poll_interval_s=0.02,
        on_status=statuses,
        **options,
    )


def batch_run_options(db: Database) -> dict[str, Any]:
    return {"window_size": 50_000, "max_windows": 1, "commit_seconds": 0.05}


def stored(db: Database) -> dict[int, Prediction]:
    with db.session() as session:
        return {p.task_id: p for p in session.scalars(select(Prediction))}


# ---------------------------------------------------------------------- the request body


@pytest.mark.parametrize(
    "mode", [OutputMode.json_schema, OutputMode.tool_call, OutputMode.json_object_schema]
)
async def test_the_batch_body_is_the_live_request_body(
    settings: Settings,
    version: VersionInfo,
    db: Database,
    server: FakeOpenAIServer,
    traffic: Traffic,
    client: httpx.AsyncClient,
    mode: OutputMode,
) -> None:
    task = TaskInput(task_id=7, external_id="a", data={"text": "A match about Sports"}, content_hash="h")
    live = inner_labeler(settings, version, None, client, server.url, mode=mode)
    assert [o.ok async for o in live.label([task])] == [True]
    live_body = traffic.chat_bodies[-1]

    labeler = BatchLabeler(
        inner_labeler(settings, version, db, client, server.url, mode=mode),
        project="news",
        poll_interval_s=0.02,
    )
    outcomes = [o async for o in labeler.label([task])]
    assert [o.value for o in outcomes] == ["Sports"]
    [[line]] = traffic.uploads
    assert (
        line["custom_id"] == "task-7" and line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    )
    assert live_body.pop("stream") is False  # the SDK says stream=false; a batch line leaves it out
    assert line["body"] == live_body
    assert line["body"]["max_tokens"] == 512  # extra_body (non-OpenAI host) merged the way the SDK does
    assert "extra_body" not in line["body"] and "stream" not in line["body"]


# ---------------------------------------------------------------------- the whole flow through the engine


async def test_a_job_through_the_batch_api(
    settings: Settings,
    version: VersionInfo,
    db: Database,
    server: FakeOpenAIServer,
    traffic: Traffic,
    client: httpx.AsyncClient,
) -> None:
    ids = add_tasks(db, texts(12, distinct=9))  # 9 contents, 3 repeated
    # A live job on two tasks fills the response cache for them.
    warm = await run_job(
        db,
        "news",
        inner_labeler(settings, version, db, client, server.url),
        scope=JobScope(kind=ScopeKind.task_ids, task_ids=ids[:2]),
    )
    assert warm.labeled == 2

    statuses = Statuses()
    labeler = batch_labeler(settings, version, db, client, server.url, statuses=statuses)
    estimate = estimate_job(db, "news", labeler, prices=labeler.prices)
    assert (estimate.requests, estimate.cached, estimate.duplicates) == (7, 2, 3)
    assert estimate.batch_usd_low == pytest.approx(estimate.usd_low * BATCH_DISCOUNT)

    report = await run_job(db, "news", labeler, **batch_run_options(db))
    assert report.status is RunStatus.finished
    assert (report.labeled, report.from_cache, report.deduplicated, report.failed) == (12, 2, 3, 0)
    assert report.sent == 7
    assert traffic.count("POST", "/batches") == 1 and len(labeler.batch_ids) == 1
    [lines] = traffic.uploads
    assert len(lines) == 7  # cache hits and duplicates are not submitted
    assert traffic.count("POST", "/chat/completions") == 2  # the warm-up job only: no repairs here

    rows = predictions(db, report.run_id)
    assert len(rows) == 12 and all(p.error_kind is None for p in rows)
    for row in rows:
        text = next(t for t in texts(12, distinct=9) if row.value in t)
        assert row.value in text
    sent = [p for p in rows if p.input_tokens]
    assert len(sent) == 7
    for p in sent:
        live_price = PRICE.cost(p.input_tokens or 0, p.output_tokens or 0, p.cached_tokens or 0)
        assert p.cost_usd == pytest.approx(live_price * BATCH_DISCOUNT)
        assert p.confidence is not None and 0 < p.confidence <= 1  # from the batch reply's logprobs
        assert p.latency_ms is None
    assert report.cost_usd == pytest.approx(sum(p.cost_usd or 0 for p in sent))

    [info] = list_batches(db, "news")
    assert info.run_id == report.run_id and info.status == "completed" and not info.open
    assert info.requests == 7 and info.request_counts["completed"] == 7
    assert get_batch(db, info.id) == info
    phases = [s.phase for s in statuses]
    assert phases[0] is BatchPhase.submitted and phases[-1] is BatchPhase.ingested
    assert BatchPhase.polled in phases
    with db.session() as session:  # every reply is in the response cache
        assert session.scalar(select(func.count()).select_from(ResponseCache)) == 9

    # The same job started live now has nothing left to do (same job key).
    again = await run_job(db, "news", inner_labeler(settings, version, db, client, server.url))
    assert again.run_id == report.run_id and again.labeled == 0


async def test_batches_are_split_at_the_request_limit(
    settings: Settings,
    version: VersionInfo,
    db: Database,
    server: FakeOpenAIServer,
    traffic: Traffic,
    client: httpx.AsyncClient,
) -> None:
    add_tasks(db, texts(7))
    labeler = batch_labeler(settings, version, db, client, server.url, max_requests_per_batch=3)
    report = await run_job(db, "news", labeler, **batch_run_options(db))
    assert report.labeled == 7
    assert [len(lines) for lines in traffic.uploads] == [3, 3, 1]
    assert len(list_batches(db, "news")) == 3 and len(labeler.batch_ids) == 3


async def test_an_unusable_reply_gets_one_repair_sent_live(
    settings: Settings, version: VersionInfo, db: Database, traffic: Traffic, client: httpx.AsyncClient
) -> None:
    def answer(message: str) -> JsonValue | None:
        # The task asks; the repair request ("Your previous answer could not be used ...") gets the default.
        return "Weather" if "needs a repair" in message and "previous answer" not in message else None

    add_tasks(db, ["this one needs a repair about Sports", "a story about World"])
    repair_usage: list[dict[str, int]] = []

    async def on_response(response: httpx.Response) -> None:
        if response.url.path.endswith("/chat/completions"):
            await response.aread()
            repair_usage.append(response.json()["usage"])

    client.event_hooks["response"] = [on_response]
    with serve(answer=answer) as server:
        labeler = batch_labeler(settings, version, db, client, server.url)
        report = await run_job(db, "news", labeler, **batch_run_options(db))
    assert report.status is RunStatus.finished and report.labeled == 2
    assert traffic.count("POST", "/chat/completions") == 1  # the repair only
    [repair] = traffic.chat_bodies
    assert "could not be used" in repair["messages"][-1]["content"]
    rows = {p.task_id: p for p in predictions(db, report.run_id)}
    repaired = rows[1]
    assert repaired.value == "Sports" and repaired.error_kind is None and repaired.latency_ms is not None
    [usage] = repair_usage
    first_in = (repaired.input_tokens or 0) - usage["prompt_tokens"]
    first_out = (repaired.output_tokens or 0) - usage["completion_tokens"]
    first_cached = (repaired.cached_tokens or 0) - usage["prompt_tokens_details"]["cached_tokens"]
    expected = BATCH_DISCOUNT * PRICE.cost(first_in, first_out, first_cached) + PRICE.cost(
        usage["prompt_tokens"], usage["completion_tokens"], usage["prompt_tokens_details"]["cached_tokens"]
    )
    assert repaired.cost_usd == pytest.approx(expected)


async def test_a_non_200_line_is_a_bad_request_error(
    settings: Settings, version: VersionInfo, db: Database, traffic: Traffic, client: httpx.AsyncClient
) -> None:
    def answer(message: str) -> JsonValue | None:
        if "poison" in message:
            raise RequestError(400, "this request is poisoned", param="messages")
        return None

    add_tasks(db, ["a poison pill about Sports", "a story about World"])
    with serve(answer=answer) as server:
        report = await run_job(
            db, "news", batch_labeler(settings, version, db, client, server.url), **batch_run_options(db)
        )
    assert (report.labeled, report.failed, report.failed_by_kind) == (1, 1, {"bad_request": 1})
    bad = stored(db)[1]
    assert bad.error_kind == ErrorKind.bad_request.value
    assert "HTTP 400" in (bad.error_message or "") and "this request is poisoned" in (bad.error_message or "")
    assert traffic.count("POST", "/chat/completions") == 0


# ---------------------------------------------------------------------- stopping, cancelling, resuming


async def test_a_cancelled_batch_leaves_retryable_errors_that_a_resume_resubmits(
    settings: Settings,
    version: VersionInfo,
    db: Database,
    server: FakeOpenAIServer,
    traffic: Traffic,
    client: httpx.AsyncClient,
) -> None:
    add_tasks(db, texts(5))
    cancelled: list[str] = []
    labeler = batch_labeler(settings, version, db, client, server.url)

    def on_status(status: BatchStatus) -> None:
        if status.phase is BatchPhase.submitted:
            cancelled.append(status.batch_id)
            asyncio.get_running_loop().create_task(labeler.cancel_remote(status.batch_id))

    labeler.on_status = on_status
    first = await run_job(db, "news", labeler, **batch_run_options(db))
    assert first.status is RunStatus.finished
    assert first.failed == 5 and first.failed_by_kind == {"server_error": 5}
    message = stored(db)[1].error_message or ""
    assert message == f"batch {cancelled[0]} was cancelled before this request ran; resume to resubmit"
    assert get_batch(db, cancelled[0]).status == "cancelled"

    # `jobs resume` (a run id) resubmits exactly the tasks without a label, in a new batch.
    resumed = await run_job(
        db,
        "news",
        batch_labeler(settings, version, db, client, server.url),
        run_id=first.run_id,
        **batch_run_options(db),
    )
    assert resumed.status is RunStatus.finished and resumed.labeled == 5 and resumed.errors_total == 0
    assert traffic.count("POST", "/batches") == 2 and [len(u) for u in traffic.uploads] == [5, 5]
    assert len(stored(db)) == 5


async def test_stopping_mid_poll_keeps_the_batch_and_a_resume_attaches_to_it(
    settings: Settings, version: VersionInfo, db: Database, traffic: Traffic, client: httpx.AsyncClient
) -> None:
    add_tasks(db, texts(6))
    heartbeats: list[str] = []
    with serve(batch_phase_s=0.6) as server:
        labeler = batch_labeler(settings, version, db, client, server.url)

        def on_status(status: BatchStatus) -> None:
            if status.phase is BatchPhase.polled:
                assert labeler.run_id is not None
                heartbeats.append(run_row(db, labeler.run_id).stats["owner"]["heartbeat"])
                if len(heartbeats) == 8:
                    cancel_job(db, labeler.run_id)  # as `labelpilot jobs cancel` from another process

        labeler.on_status = on_status
        first = await run_job(db, "news", labeler, **batch_run_options(db))
        assert first.status is RunStatus.cancelled and first.labeled == 0
        # The engine kept committing while the labeler polled: the heartbeat moved on.
        assert len(set(heartbeats)) > 1
        [info] = list_batches(db, "news", open_only=True)
        assert info.run_id == first.run_id

        statuses = Statuses()
        again = batch_labeler(settings, version, db, client, server.url, statuses=statuses)
        second = await run_job(db, "news", again, **batch_run_options(db))
    assert second.status is RunStatus.finished and second.run_id == first.run_id
    assert second.labeled == 6 and second.sent == 6
    assert traffic.count("POST", "/batches") == 1 and traffic.count("POST", "/files") == 1
    assert again.batch_ids == [info.id]
    assert statuses[0].phase is BatchPhase.attached and statuses[0].tasks == 6
    with db.session() as session:
        per_task = Counter(session.scalars(select(Prediction.task_id)).all())
    assert len(per_task) == 6 and set(per_task.values()) == {1}
    assert not get_batch(db, info.id).open


# ---------------------------------------------------------------------- provider states the fake cannot reach


def batch_object(batch_id: str, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "created_at": 1,
        "request_counts": {"total": 3, "completed": 1, "failed": 0},
        **fields,
    }


def file_object(file_id: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": 1,
        "created_at": 1,
        "filename": "in.jsonl",
        "purpose": "batch",
        "status": "processed",
    }


async def test_an_expired_batch_keeps_what_ran_and_names_the_rest(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    ids = add_tasks(db, ["one about Sports", "two about World", "three about Business"])
    reply = completion('{"label":"Sports"}', usage=(100, 5, 0)).json()
    output = json.dumps(
        {
            "id": "r1",
            "custom_id": f"task-{ids[0]}",
            "response": {"status_code": 200, "body": reply},
            "error": None,
        }
    )
    api.post(f"{ENDPOINT}/files").mock(return_value=httpx.Response(200, json=file_object("file-in")))
    api.post(f"{ENDPOINT}/batches").mock(
        return_value=httpx.Response(200, json=batch_object("batch_x", "validating"))
    )
    api.get(f"{ENDPOINT}/batches/batch_x").mock(
        side_effect=[
            httpx.Response(503, json={"error": {"message": "busy"}}),  # a blip: retried, never fatal
            httpx.Response(200, json=batch_object("batch_x", "expired", output_file_id="file-out")),
        ]
    )
    api.get(f"{ENDPOINT}/files/file-out/content").mock(
        return_value=httpx.Response(200, content=output.encode())
    )
    report = await run_job(
        db, "news", batch_labeler(settings, version, db, http, ENDPOINT), **batch_run_options(db)
    )
    assert (report.labeled, report.failed, report.failed_by_kind) == (1, 2, {"server_error": 2})
    rows = stored(db)
    assert rows[ids[0]].value == "Sports"
    assert rows[ids[0]].cost_usd == pytest.approx(PRICE.cost(100, 5) * BATCH_DISCOUNT)
    assert rows[ids[1]].error_message == "batch batch_x expired before this request ran; resume to resubmit"
    assert get_batch(db, "batch_x").status == "expired" and not get_batch(db, "batch_x").open


async def test_stopping_while_the_batch_is_created_still_registers_it(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    add_tasks(db, ["one about Sports", "two about World"])
    cancel = asyncio.Event()

    async def slow_create(request: httpx.Request) -> httpx.Response:
        cancel.set()  # Ctrl-C arrives while the provider is creating the batch
        await asyncio.sleep(0.3)
        return httpx.Response(200, json=batch_object("batch_slow", "validating"))

    api.post(f"{ENDPOINT}/files").mock(return_value=httpx.Response(200, json=file_object("file-in")))
    api.post(f"{ENDPOINT}/batches").mock(side_effect=slow_create)
    report = await run_job(
        db,
        "news",
        batch_labeler(settings, version, db, http, ENDPOINT),
        cancel=cancel,
        **batch_run_options(db),
    )
    assert report.status is RunStatus.cancelled and report.labeled == 0
    info = get_batch(db, "batch_slow")
    assert info.open and info.run_id == report.run_id and info.requests == 2


async def test_an_endpoint_without_the_batch_api_is_refused_and_nothing_is_registered(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    add_tasks(db, ["one about Sports"])
    api.post(f"{ENDPOINT}/files").mock(
        return_value=httpx.Response(404, json={"error": {"message": "File Not Found"}})
    )
    with pytest.raises(ConfigError, match=r"https://api\.test/v1 does not offer the Batch API") as info:
        await run_job(
            db, "news", batch_labeler(settings, version, db, http, ENDPOINT), **batch_run_options(db)
        )
    assert "without --batch-api" in (info.value.hint or "")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(BatchJob)) == 0
        assert session.scalar(select(func.count()).select_from(Prediction)) == 0


def test_an_unknown_batch_id_is_not_found_with_a_hint(db: Database) -> None:
    with pytest.raises(NotFoundError) as info:
        get_batch(db, "batch_nope")
    assert info.value.hint == "see: labelpilot batch list"


def test_the_labeler_keeps_the_job_key_and_the_estimate_hooks(
    settings: Settings, version: VersionInfo, db: Database
) -> None:
    inner = inner_labeler(settings, version, db, httpx.AsyncClient(), ENDPOINT)
    labeler = BatchLabeler(inner, project="news")
    assert labeler.info == inner.info and labeler.prices is inner.prices
    assert labeler.model_name == MODEL and labeler.output_token_range() == inner.output_token_range()
    with pytest.raises(ConfigError, match="needs a database"):
        BatchLabeler(inner_labeler(settings, version, None, httpx.AsyncClient(), ENDPOINT), project="news")
