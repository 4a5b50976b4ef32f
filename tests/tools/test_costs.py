"""Prices, the override file, unknown models, and the estimate shown before a job."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx
from langchain_core.messages import BaseMessage
from pydantic import SecretStr

from tests.tools.test_engine import ScriptedLabeler, add_tasks, texts
from tests.tools.test_llm import API_KEY, ENDPOINT, URL, completion, error
from tools.costs import (
    DEFAULT_PRICES,
    MIN_CACHEABLE_PREFIX_TOKENS,
    ModelPrice,
    PriceTable,
    estimate_job,
    read_price_file,
)
from tools.engine import JobScope, run_job
from tools.errors import ConfigError
from tools.labelspec import LabelSpec
from tools.llm import CapabilityStore, EndpointCapabilities, ModelSettings, OutputMode
from tools.llm_labeler import LLMLabeler
from tools.projects import create_project
from tools.prompting import estimate_prompt_tokens, render_messages
from tools.ratelimit import RateLimits
from tools.settings import Settings
from tools.storage import Database
from tools.versions import PromptConfig, VersionInfo, create_version

SPEC = LabelSpec.from_classes(["Sports", "World", "Business"], input_fields=["text"])
MODEL = "gpt-4o-mini"


# ---------------------------------------------------------------------- prices


def test_cost_counts_cached_input_inside_the_input() -> None:
    price = ModelPrice(input=2.0, cached_input=0.5, output=8.0)
    assert price.cost(1_000_000, 0) == pytest.approx(2.0)
    assert price.cost(1_000_000, 1_000_000, cached_tokens=400_000) == pytest.approx(0.6 * 2 + 0.4 * 0.5 + 8)
    assert ModelPrice(input=1.0, output=1.0).cost(10, 0, cached_tokens=10) == pytest.approx(10 / 1e6)


def test_built_in_prices_and_name_matching() -> None:
    table = PriceTable(DEFAULT_PRICES)
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
    ):
        assert table.price_for(model) is not None, model
    assert table.price_for("gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    assert table.price_for("openai/GPT-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]
    assert table.price_for("gpt-4o-mini") != table.price_for("gpt-4o")
    assert table.cost("gpt-4.1-mini", 1_000_000, 1_000_000) == pytest.approx(0.40 + 1.60)


def test_unknown_model_has_no_cost_and_a_note() -> None:
    table = PriceTable(DEFAULT_PRICES)
    assert table.price_for("llama-3.1-8b") is None
    assert table.cost("llama-3.1-8b", 1000, 10) is None
    note = table.note_for("llama-3.1-8b") or ""
    assert "llama-3.1-8b" in note and "prices.toml" in note
    assert table.note_for("gpt-4o") is None


def test_price_override_file(settings: Settings) -> None:
    settings.ensure_home()
    (settings.home / "prices.toml").write_text(
        '# USD per 1M tokens\n[models."gpt-4o-mini"]\ninput = 0.2\noutput = 0.8\n\n'
        '[models."llama-3.1-8b"]\ninput = 0\noutput = 0\n',
        encoding="utf-8",
    )
    table = PriceTable.load(settings)
    assert table.price_for("gpt-4o-mini") == ModelPrice(input=0.2, output=0.8)
    assert table.price_for("gpt-4o-mini-2024-07-18") == ModelPrice(input=0.2, output=0.8)
    assert table.cost("llama-3.1-8b", 5000, 50) == 0.0  # a local server: free by configuration
    assert table.price_for("gpt-4.1") == DEFAULT_PRICES["gpt-4.1"]  # the rest stays built in
    assert "prices.toml" in table.source


def test_price_override_as_json_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"m": {"input": 1, "cached_input": 0.1, "output": 2}}}))
    assert read_price_file(path) == {"m": ModelPrice(input=1, cached_input=0.1, output=2)}
    path.write_text('{"models": {"m": {"input": -1, "output": 2}}}')
    with pytest.raises(ConfigError, match=r"prices.json has invalid entries \(models.m.input"):
        read_price_file(path)
    bad = tmp_path / "prices.toml"
    bad.write_text("[models.x\ninput=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_price_file(bad)


# ---------------------------------------------------------------------- estimates


@pytest.fixture
def version(db: Database) -> VersionInfo:
    create_project(db, "news", spec=SPEC)
    return create_version(db, "news", PromptConfig(instructions="Label the news item.", model=MODEL))


def llm_labeler(
    settings: Settings,
    version: VersionInfo,
    db: Database,
    *,
    http: httpx.AsyncClient | None = None,
    model: str = MODEL,
    prices: PriceTable | None = None,
) -> LLMLabeler:
    store = CapabilityStore(None)
    store.remember(ENDPOINT, model, EndpointCapabilities(mode=OutputMode.json_schema, logprobs=False))
    return LLMLabeler(
        settings,
        SPEC,
        version,
        model_settings=ModelSettings(model=model, base_url=ENDPOINT, api_key=SecretStr(API_KEY)),
        rate_limits=RateLimits(rpm=600),
        capability_store=store,
        db=db,
        http_async_client=http,
        prices=prices or PriceTable(DEFAULT_PRICES),
    )


def expected_input_tokens(version: VersionInfo, text: str) -> tuple[int, int]:
    messages: list[BaseMessage] = render_messages(SPEC, version, {"text": text}, mode=OutputMode.json_schema)
    schema = json.dumps(SPEC.json_schema(), separators=(",", ":"))
    schema_tokens = estimate_prompt_tokens([messages[0].model_copy(update={"content": schema})], MODEL) - 4
    return estimate_prompt_tokens(messages, MODEL) + schema_tokens, estimate_prompt_tokens(
        messages[:1], MODEL
    )


def test_estimate_for_a_known_prompt(settings: Settings, version: VersionInfo, db: Database) -> None:
    # 30 tasks, 20 distinct texts of one length: every rendered prompt has the same size.
    add_tasks(db, [f"news item {i % 20:02d} about World" for i in range(30)])
    labeler = llm_labeler(settings, version, db)
    estimate = estimate_job(db, "news", labeler)
    per_request, _ = expected_input_tokens(version, "news item 00 about World")
    low_out, high_out = labeler.output_token_range()
    assert (estimate.tasks, estimate.already_done, estimate.to_label, estimate.duplicates) == (30, 0, 30, 10)
    assert (estimate.cached, estimate.requests, estimate.sample_size) == (0, 20, 20)
    assert estimate.input_tokens_per_request == per_request
    assert estimate.input_tokens == 20 * per_request
    assert (estimate.output_tokens_low, estimate.output_tokens_high) == (low_out, high_out)
    assert 0 < low_out < high_out <= 10  # {"label": "World"} .. {"label": "Business"}
    price = DEFAULT_PRICES[MODEL]
    assert estimate.price == price
    # The static prefix is far below 1,024 tokens: no prompt caching in the low figure either.
    assert estimate.static_prefix_tokens < MIN_CACHEABLE_PREFIX_TOKENS
    assert estimate.usd_low == pytest.approx((20 * per_request * 0.15 + 20 * low_out * 0.60) / 1e6)
    assert estimate.usd_high == pytest.approx((20 * per_request * 0.15 + 20 * high_out * 0.60) / 1e6)
    assert estimate.batch_usd_high == pytest.approx((estimate.usd_high or 0) / 2)
    assert estimate.seconds == pytest.approx(20 / 600 * 60)
    assert estimate.notes == []


def test_a_long_static_prompt_is_cheaper_at_the_low_end(settings: Settings, db: Database) -> None:
    create_project(db, "news", spec=SPEC)
    long_version = create_version(db, "news", PromptConfig(instructions="Be careful. " * 600, model=MODEL))
    add_tasks(db, ["World news"])
    estimate = estimate_job(db, "news", llm_labeler(settings, long_version, db))
    assert estimate.static_prefix_tokens >= MIN_CACHEABLE_PREFIX_TOKENS
    full = estimate.input_tokens_per_request * 0.15 / 1e6
    assert (estimate.usd_high or 0) - (estimate.usd_low or 0) > full / 3


def test_estimate_for_an_unknown_model(settings: Settings, version: VersionInfo, db: Database) -> None:
    add_tasks(db, texts(5))
    estimate = estimate_job(db, "news", llm_labeler(settings, version, db, model="my-local-llama"))
    assert estimate.requests == 5 and estimate.input_tokens > 0
    assert estimate.price is None and estimate.usd_low is None and estimate.batch_usd_high is None
    assert any("my-local-llama" in note and "prices.toml" in note for note in estimate.notes)


def test_estimate_of_a_labeler_without_model_calls(db: Database) -> None:
    create_project(db, "news", spec=SPEC)
    add_tasks(db, texts(8, distinct=4))
    estimate = estimate_job(db, "news", ScriptedLabeler(), scope=JobScope(limit=6))
    assert (estimate.tasks, estimate.requests, estimate.usd_high, estimate.duplicates) == (6, 0, 0.0, 2)
    assert "no model calls" in estimate.notes[0]


async def test_estimate_after_a_run_counts_done_work_and_the_cache(
    api: respx.MockRouter, settings: Settings, version: VersionInfo, db: Database, http: httpx.AsyncClient
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["messages"][1]["content"]
        return error(400, "nope") if "Business" in text else completion('{"label":"World"}')

    api.post(URL).mock(side_effect=handle)
    add_tasks(db, texts(9))  # 3 of them mention Business and fail
    labeler = llm_labeler(settings, version, db, http=http)
    estimate = estimate_job(db, "news", labeler)
    report = await run_job(db, "news", labeler, estimate=estimate)
    assert (report.labeled, report.failed) == (6, 3)
    resumed = estimate_job(db, "news", labeler)
    assert (resumed.already_done, resumed.to_label, resumed.requests) == (6, 3, 3)
    fresh = estimate_job(db, "news", labeler, new_run=True)
    assert (fresh.to_label, fresh.cached, fresh.requests) == (9, 6, 3)
    # The run keeps the estimate next to what was actually used.
    from tools.engine import job_status

    stats = job_status(db, "news", report.run_id).stats
    assert stats["estimate"]["requests"] == 9 and stats["actual_session"]["requests"] == 9
    assert stats["estimate_vs_actual"]["requests"] == [9, 9]
    assert stats["estimate_vs_actual"]["cost_usd"][1] == pytest.approx(report.cost_usd)
