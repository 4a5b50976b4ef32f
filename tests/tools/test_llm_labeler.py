"""The LLM labeler against an HTTP-level fake endpoint (respx): cache, retries, errors as data, cost."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import func, select

from tests.tools.test_llm import API_KEY, ENDPOINT, URL, completion, error
from tools.costs import ModelPrice, PriceTable
from tools.engine import RunStatus, run_job
from tools.errors import ErrorKind
from tools.labelers import LabelOutcome, TaskInput
from tools.labelspec import LabelSpec
from tools.llm import CapabilityStore, EndpointCapabilities, ModelSettings, OutputMode
from tools.llm_labeler import LLMLabeler
from tools.projects import create_project
from tools.prompting import Example
from tools.ratelimit import Backoff, RateLimits
from tools.settings import Settings
from tools.storage import Database, Prediction, ResponseCache, Task
from tools.versions import PromptConfig, VersionInfo, create_version

SPEC = LabelSpec.from_classes(["Sports", "World", "Business"], input_fields=["text"])
MODEL = "gpt-4o-mini"
PRICE = ModelPrice(input=0.15, cached_input=0.075, output=0.60)


@pytest.fixture
def version(db: Database) -> VersionInfo:
    create_project(db, "news", spec=SPEC)
    return create_version(db, "news", PromptConfig(instructions="Label the news item.", model=MODEL))


def known_store(mode: OutputMode = OutputMode.json_schema, *, logprobs: bool = False) -> CapabilityStore:
    """A capability store that already knows the endpoint (no probe requests)."""
    store = CapabilityStore(None)
    store.remember(ENDPOINT, MODEL, EndpointCapabilities(mode=mode, logprobs=logprobs))
    return store


class Sleeps:
    """Records the backoff waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_labeler(
    settings: Settings,
    version: VersionInfo,
    db: Database | None,
    http: httpx.AsyncClient,
    *,
    store: CapabilityStore | None = None,
    sleeps: Sleeps | None = None,
    **kwargs: Any,
) -> LLMLabeler:
    return LLMLabeler(
        settings,
        SPEC,
        version,
        model_settings=ModelSettings(model=MODEL, base_url=ENDPOINT, api_key=SecretStr(API_KEY), timeout_s=5),
        rate_limits=RateLimits(rpm=60_000, max_concurrency=4),
        capability_store=store or known_store(),
        db=db,
        http_async_client=http,
        backoff=Backoff(rng=random.Random(0)),
        prices=PriceTable({MODEL: PRICE}),
        sleep=sleeps or Sleeps(),
        **kwargs,
    )


def tasks(*texts: str) -> list[TaskInput]:
    return [
        TaskInput(
            task_id=i + 1,
            external_id=f"t{i}",
            data={"text": text},
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
        )
        for i, text in enumerate(texts)
    ]


async def collect(labeler: LLMLabeler, items: Sequence[TaskInput]) -> dict[int, LabelOutcome]:
    return {outcome.task_id: outcome async for outcome in labeler.label(items)}


def answer_by_text(request: httpx.Request) -> httpx.Response:
    """Answer the class the task text names."""
    body = json.loads(request.content)
    text = body["messages"][1]["content"]
    label = next(c for c in ("Sports", "World", "Business") if c.lower() in text.lower())
    return completion(json.dumps({"label": label}), usage=(100, 7, 0))


# ---------------------------------------------------------------------- the request and the cache


async def test_labels_with_cost_from_usage(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(return_value=completion('{"label":"World"}', usage=(2000, 10, 1024)))
    labeler = make_labeler(settings, version, db, http)
    outcomes = await collect(labeler, tasks("Summit in Paris"))
    outcome = outcomes[1]
    assert outcome.ok and outcome.value == "World" and not outcome.from_cache
    assert (outcome.input_tokens, outcome.output_tokens, outcome.cached_tokens) == (2000, 10, 1024)
    # (2000 - 1024) fresh input + 1024 cached input + 10 output, per 1M tokens.
    assert outcome.cost_usd == pytest.approx((976 * 0.15 + 1024 * 0.075 + 10 * 0.60) / 1e6)
    body = json.loads(route.calls[0].request.content)
    assert body["model"] == MODEL and body["response_format"]["json_schema"]["strict"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert route.calls[0].request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_a_second_identical_job_is_answered_from_the_cache(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(side_effect=answer_by_text)
    with db.session() as session:
        for i, text in enumerate(["Sports final", "World summit", "Business news", "Sports final again"]):
            session.add(Task(project_id=1, external_id=f"t{i}", content_hash=f"h{i}", data={"text": text}))
    first = await run_job(db, "news", make_labeler(settings, version, db, http))
    assert (first.sent, first.from_cache, route.call_count) == (4, 0, 4)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ResponseCache)) == 4
    # A new run of the same requests (another process: a new labeler) sends nothing and costs nothing.
    second = await run_job(db, "news", make_labeler(settings, version, db, http), new_run=True)
    assert (second.status, second.labeled, second.from_cache, second.sent) == (RunStatus.finished, 4, 4, 0)
    assert route.call_count == 4 and second.cost_usd == 0.0
    with db.session() as session:
        rows = session.scalars(select(Prediction).where(Prediction.run_id == second.run_id)).all()
    assert sorted(str(p.value) for p in rows) == ["Business", "Sports", "Sports", "World"]
    assert all(p.cost_usd == 0.0 and p.input_tokens is None for p in rows)


async def test_the_cache_key_covers_the_prompt(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(side_effect=answer_by_text)
    await collect(make_labeler(settings, version, db, http), tasks("Sports final"))
    other = create_version(db, "news", PromptConfig(instructions="Something else entirely.", model=MODEL))
    outcome = (await collect(make_labeler(settings, other, db, http), tasks("Sports final")))[1]
    assert not outcome.from_cache and route.call_count == 2
    again = (await collect(make_labeler(settings, other, db, http), tasks("Sports final")))[1]
    assert again.from_cache and route.call_count == 2


async def test_capabilities_are_detected_once_per_endpoint(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    route = api.post(URL).mock(side_effect=lambda request: completion('{"label":"Sports"}'))
    store = CapabilityStore(tmp_path / "endpoints.json")
    labeler = make_labeler(settings, version, None, http, store=store)
    await collect(labeler, tasks("Sports a"))
    probes = route.call_count - 1
    assert probes >= 1
    await collect(labeler, tasks("Sports b", "Sports c"))
    assert route.call_count == probes + 3  # no new probe
    other = make_labeler(settings, version, None, http, store=CapabilityStore(tmp_path / "endpoints.json"))
    await collect(other, tasks("Sports d"))
    assert route.call_count == probes + 4  # remembered on disk too


# ---------------------------------------------------------------------- retries and errors as data


async def test_retries_429_500_and_timeouts_then_succeeds(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(
        side_effect=[
            error(429, "slow down", {"retry-after-ms": "20"}),
            error(500, "oops"),
            httpx.ReadTimeout("slow"),
            completion('{"label":"Business"}'),
        ]
    )
    sleeps = Sleeps()
    labeler = make_labeler(settings, version, None, http, sleeps=sleeps)
    outcome = (await collect(labeler, tasks("Business news")))[1]
    assert outcome.ok and outcome.value == "Business" and route.call_count == 4
    assert len(sleeps.waits) == 3
    assert 0.02 <= sleeps.waits[0] <= 0.02 + 0.05 + 1e-9  # the server's retry-after-ms, plus a little jitter
    stats = labeler.controller.stats()
    assert stats.failures == {"rate_limited": 1, "server_error": 1, "timeout": 1} and stats.succeeded == 1


async def test_the_sdk_does_not_retry_on_its_own(settings: Settings, version: VersionInfo) -> None:
    labeler = LLMLabeler(
        settings,
        SPEC,
        version,
        model_settings=ModelSettings(model=MODEL, base_url=ENDPOINT),
        capability_store=known_store(),
    )
    assert labeler._chat_model().max_retries == 0  # type: ignore[attr-defined]


async def test_a_400_is_stored_as_an_error_without_retry(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(return_value=error(400, "unknown parameter"))
    sleeps = Sleeps()
    outcome = (await collect(make_labeler(settings, version, None, http, sleeps=sleeps), tasks("x")))[1]
    assert outcome.error_kind is ErrorKind.bad_request and "unknown parameter" in (
        outcome.error_message or ""
    )
    assert route.call_count == 1 and sleeps.waits == [] and outcome.cost_usd is None


async def test_rate_limited_past_the_last_attempt_is_stored(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(return_value=error(429, "slow down", {"retry-after-ms": "1"}))
    labeler = make_labeler(settings, version, None, http)
    labeler.backoff = Backoff(max_attempts=3, rng=random.Random(0))
    outcome = (await collect(labeler, tasks("x")))[1]
    assert outcome.error_kind is ErrorKind.rate_limited and "after 3 attempts" in (
        outcome.error_message or ""
    )
    assert route.call_count == 3


async def test_invalid_json_twice_is_stored_as_invalid_output(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(return_value=completion('{"label": "Sports"', usage=(1000, 10, 0)))
    outcome = (await collect(make_labeler(settings, version, db, http), tasks("Sports")))[1]
    assert outcome.error_kind is ErrorKind.invalid_output and "not valid JSON" in (
        outcome.error_message or ""
    )
    assert route.call_count == 2  # the reply and one repair attempt, no retries
    # Both replies were billed: their tokens and cost are on the error outcome.
    assert (outcome.input_tokens, outcome.output_tokens) == (2000, 20)
    assert outcome.cost_usd == pytest.approx((2000 * 0.15 + 20 * 0.60) / 1e6)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ResponseCache)) == 0  # errors are not cached


async def test_a_job_stores_every_kind_of_outcome(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["messages"][1]["content"]  # the task (a repair adds turns)
        if "broken" in text:
            return completion("not json at all")
        if "refused" in text:
            return error(400, "content policy")
        return answer_by_text(request)

    api.post(URL).mock(side_effect=handle)
    with db.session() as session:
        for i, text in enumerate(["Sports ok", "broken reply", "refused item", "World ok"]):
            session.add(Task(project_id=1, external_id=f"t{i}", content_hash=f"h{i}", data={"text": text}))
    report = await run_job(db, "news", make_labeler(settings, version, db, http))
    assert (report.labeled, report.failed) == (2, 2)
    assert report.failed_by_kind == {"invalid_output": 1, "bad_request": 1}
    # Two labeled replies plus the broken reply and its repair (billed even though unusable).
    assert report.cost_usd == pytest.approx(4 * (100 * 0.15 + 7 * 0.60) / 1e6)
    with db.session() as session:
        kinds = dict(session.execute(select(Prediction.task_id, Prediction.error_kind)).all())
    assert sorted(str(k) for k in kinds.values()) == ["None", "None", "bad_request", "invalid_output"]


async def test_a_task_the_prompt_cannot_render_is_an_error_not_a_crash(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(return_value=completion('{"label":"Sports"}'))
    missing = TaskInput(task_id=9, external_id="t9", data={"title": "no text field"}, content_hash="x")
    outcome = (await collect(make_labeler(settings, version, None, http), [missing]))[9]
    assert outcome.error_kind is ErrorKind.bad_request and "text" in (outcome.error_message or "")
    assert route.call_count == 0


async def test_examples_hook_and_unknown_price(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, http: httpx.AsyncClient
) -> None:
    route = api.post(URL).mock(return_value=completion('{"label":"Sports"}'))

    async def examples_for(task: TaskInput) -> list[Example]:
        return [Example(data={"text": "Cup final tonight"}, value="Sports", task_id="ex1")]

    labeler = make_labeler(settings, version, None, http, examples_for=examples_for)
    labeler.prices = PriceTable({})
    outcome = (await collect(labeler, tasks("Sports news")))[1]
    assert outcome.examples == ["ex1"] and outcome.cost_usd is None
    roles = [m["role"] for m in json.loads(route.calls[0].request.content)["messages"]]
    assert roles == ["system", "user", "assistant", "user"]


def test_identity_changes_with_what_changes_the_answers(
    settings: Settings, version: VersionInfo, db: Database
) -> None:
    def info(**changes: Any) -> dict[str, Any]:
        ms = ModelSettings(model=MODEL, base_url=ENDPOINT).model_copy(update=changes)
        return LLMLabeler(
            settings, SPEC, version, model_settings=ms, capability_store=known_store()
        ).info.identity

    base = info()
    assert base == info()
    assert base != info(temperature=0.7)
    assert base != info(base_url="http://127.0.0.1:9/v1")
    assert base["prompt_version_id"] == version.id
    assert API_KEY not in json.dumps(base)
