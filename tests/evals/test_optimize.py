"""The prompt optimizer against a scripted endpoint (respx): candidates differ measurably by a marker.

Items are numbered; item n has gold label CLASSES[n % 3]. Which answers are right depends on the marker in
the system message (the instructions of the prompt that asked):

- the base version (BASE): wrong when n % 5 in {0, 1} (60% right);
- CAND-A: right on the first 12 items it is ever asked (exactly the first halving round), wrong afterwards:
  better than the base on a small subset only;
- CAND-B: wrong only when n % 10 == 0 (90% right): the best on dev and on test;
- CAND-C: wrong when n % 5 in {0, 1, 2} (40% right).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr
from typer.testing import CliRunner

from evals.optimize import (
    NEEDS_MODEL,
    WRITER_MARKER,
    ImprovementProgress,
    halving_schedule,
    improve,
    plan_improvement,
    preferences_to_instructions,
)
from tests.tools.test_llm import API_KEY, ENDPOINT, URL, completion
from tests.tools.test_llm_labeler import SPEC
from tools.errors import ConfigError
from tools.groundtruth import set_label
from tools.llm import CapabilityStore, EndpointCapabilities, OutputMode
from tools.projects import create_project
from tools.ratelimit import RateLimits
from tools.settings import Settings
from tools.splits import assign_splits, split_task_ids
from tools.storage import Database, Task
from tools.versions import PromptConfig, create_version, list_versions
from ui.cli import app

CLASSES = ["Sports", "World", "Business"]
MODEL = "gpt-4o-mini"
ITEMS = 100
BASE = "Label the news item. BASE"
CANDIDATES = {
    "CAND-A": "Label the news item by its main subject. CAND-A",
    "CAND-B": "Label the news item by what the story is mostly about. CAND-B",
    "CAND-C": "Label the news item quickly. CAND-C",
}
FAST = RateLimits(rpm=60_000, max_concurrency=8)


def gold_of(n: int) -> str:
    return CLASSES[n % 3]


def base_right(n: int) -> bool:
    return n % 5 not in (0, 1)


def b_right(n: int) -> bool:
    return n % 10 != 0


def c_right(n: int) -> bool:
    return n % 5 not in (0, 1, 2)


class Script:
    """The scripted endpoint: a writer reply for the writer, marker-dependent labels for everything else."""

    def __init__(self, writer_candidates: list[dict[str, str]] | None = None) -> None:
        self.writer_candidates = writer_candidates or [
            {"instructions": CANDIDATES[m], "rationale": f"rationale of {m}"} for m in CANDIDATES
        ]
        self.a_seen: list[int] = []
        self.writer_requests: list[dict[str, Any]] = []
        self.labeled: dict[str, int] = {"BASE": 0, "CAND-A": 0, "CAND-B": 0, "CAND-C": 0}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        system = body["messages"][0]["content"]
        if WRITER_MARKER in system:
            self.writer_requests.append(body)
            return completion(json.dumps({"candidates": self.writer_candidates}), usage=(1500, 400, 0))
        number = int(re.search(r"story number (\d+)", body["messages"][-1]["content"]).group(1))  # type: ignore[union-attr]
        marker = next((m for m in ("CAND-A", "CAND-B", "CAND-C") if m in system), "BASE")
        self.labeled[marker] += 1
        if marker == "CAND-A":
            if number not in self.a_seen:
                self.a_seen.append(number)
            right = self.a_seen.index(number) < 12
        else:
            right = {"BASE": base_right, "CAND-B": b_right, "CAND-C": c_right}[marker](number)
        label = gold_of(number) if right else CLASSES[(number + 1) % 3]
        return completion(json.dumps({"label": label}), usage=(120, 6, 0))


@pytest.fixture
def model_settings(settings: Settings, db: Database) -> Settings:
    """Settings with a configured endpoint whose capabilities are already known (no probe requests)."""
    configured = settings.model_copy(
        update={"openai_api_key": SecretStr(API_KEY), "openai_base_url": ENDPOINT}
    )
    CapabilityStore.for_settings(configured).remember(
        ENDPOINT, MODEL, EndpointCapabilities(mode=OutputMode.json_schema, logprobs=False)
    )
    return configured


def make_project(db: Database, *, ratios: tuple[float, float, float] | None = (0.3, 0.4, 0.3)) -> None:
    summary = create_project(db, "news", spec=SPEC)
    with db.session() as session:
        for n in range(1, ITEMS + 1):
            session.add(
                Task(
                    project_id=summary.id,
                    external_id=f"t{n}",
                    content_hash=f"h{n}",
                    data={"text": f"{gold_of(n).lower()} story number {n}"},
                )
            )
    for n in range(1, ITEMS + 1):
        set_label(db, "news", f"t{n}", gold_of(n))
    create_version(db, "news", PromptConfig(instructions=BASE, model=MODEL), note="hand-written")
    if ratios is not None:
        assign_splits(db, "news", ratios=ratios, seed=1)


def test_halving_schedule() -> None:
    assert halving_schedule(40, 4) == [(4, 12), (2, 24)]
    assert halving_schedule(40, 11) == [(11, 12), (6, 24), (3, 40)]
    assert halving_schedule(12, 5) == [(5, 12)]  # dev used up in the first round
    assert halving_schedule(100, 8) == [(8, 25), (4, 50), (2, 100)]
    assert halving_schedule(40, 1) == []


async def test_the_better_candidate_wins_on_dev_and_is_reported_on_test(
    api: respx.MockRouter, model_settings: Settings, db: Database, http: httpx.AsyncClient
) -> None:
    make_project(db)
    script = Script()
    route = api.post(URL).mock(side_effect=script)
    plan = plan_improvement(db, model_settings, "news", candidates=3, rate_limits=FAST)
    assert plan.dev_items == 40 and plan.test_items == 30 and plan.train_items == 30
    # v1, 3 rewrites, 3 few-shot variants of v1 and 3 of the best rewrite (nearest 4 / 8, label-diverse 8).
    assert plan.candidates_total == 10 and plan.few_shot_variants == 6
    assert [(r.candidates, r.items) for r in plan.rounds] == [(10, 12), (5, 24), (3, 40)]
    assert plan.calls == {"train": 30, "writer": 1, "dev": 10 * 12 + 5 * 12 + 3 * 16, "test": 60}
    assert plan.usd_low is not None and plan.usd_high is not None and 0 < plan.usd_low <= plan.usd_high

    events: list[ImprovementProgress] = []
    report = await improve(
        db,
        model_settings,
        "news",
        candidates=3,
        http_async_client=http,
        rate_limits=FAST,
        progress=events.append,
    )

    # The writer saw the errors and the most-confused pairs.
    writer_prompt = script.writer_requests[0]["messages"][1]["content"]
    assert "Most frequent confusions" in writer_prompt and "story number" in writer_prompt
    assert report.train is not None and report.train.errors == sum(
        not base_right(n) for n in numbers_of(db, "train")
    )

    # Halving: A (perfect on the small subset, as are its few-shot variants) and B survive round 1; B beats
    # A on the larger subsets and wins on the whole dev split.
    assert [(r.items, len(r.ranking), len(r.kept)) for r in report.rounds] == [
        (12, 10, 5),
        (24, 5, 3),
        (40, 3, 1),
    ]
    first, *_, last = report.rounds
    assert first.ranking[0] == "rewrite A" and "rewrite B" in first.kept
    assert all(name.startswith("rewrite A") for name in first.ranking[:4])
    assert last.kept == ["rewrite B"] and report.rounds[1].ranking[0] == "rewrite B"
    by_name = {c.name: c for c in report.candidates}
    assert by_name["rewrite A"].rounds[0].correct == 12 and by_name["rewrite A"].eliminated_in_round in (2, 3)
    assert by_name["v1 + few-shot nearest k=4"].origin.value == "few_shot"
    assert by_name["rewrite A + few-shot label_diverse k=8"].few_shot == "label_diverse k=8"
    assert (
        "CAND-B" in by_name["rewrite B"].instructions
        and by_name["rewrite B"].rationale == "rationale of CAND-B"
    )
    assert report.winner == "rewrite B" and not report.winner_is_base

    # Saved as a new version with lineage and a rationale; the base is unchanged and still there.
    versions = list_versions(db, "news")
    assert [v.number for v in versions] == [1, 2]
    assert versions[0].instructions == BASE and versions[0].note == "hand-written"
    new = versions[1]
    assert report.new_version == 2 and new.parent_number == 1
    assert "CAND-B" in new.instructions and "rationale of CAND-B" in new.note and "dev accuracy" in new.note

    # Reported on test against the base with the paired comparison the script implies.
    test = numbers_of(db, "test")
    assert report.comparison is not None
    assert report.comparison.a.name == "v1" and report.comparison.b.name == "v2"
    assert report.comparison.common == len(test) == 30
    expected = (sum(b_right(n) for n in test) - sum(base_right(n) for n in test)) / len(test)
    assert report.comparison.deltas["accuracy"] == pytest.approx(expected)
    assert report.comparison.test.method == "mcnemar_exact"
    assert report.comparison.test.b_only == 0  # every item B gets wrong, the base gets wrong too
    assert report.comparison.test.c_only == sum(b_right(n) and not base_right(n) for n in test)
    assert set(report.test_reports) == {"v1", "v2"}

    # Spending is counted from actual use and matches what was sent.
    assert report.budget.calls == route.call_count == plan.total_calls
    assert report.budget.usd is not None and 0 < report.budget.usd <= plan.usd_high
    assert not report.budget.stopped_early

    # Few-shot answers never showed an item as its own example (the pool is the train split).
    assert report.leaks_checked and report.leaks == []
    assert report.answers_with_examples >= 6 * 12 and report.answers_checked >= 30 + 10 * 12
    assert "examples_for_version" in report.few_shot
    shown = [
        message["content"]
        for call in route.calls
        for message in json.loads(call.request.content)["messages"][1:-1]
        if message["role"] == "user"
    ]
    train = set(numbers_of(db, "train"))
    assert shown and all(int(re.search(r"story number (\d+)", text).group(1)) in train for text in shown)  # type: ignore[union-attr]
    assert "--version 2" in report.message and "NOT adopted" in report.message
    stages = {e.stage.value for e in events}
    assert stages == {"train", "writer", "dev", "test"}
    json.dumps(report.model_dump(mode="json"))  # JSON-able


def numbers_of(db: Database, split: str) -> list[int]:
    ids = split_task_ids(db, "news", split)
    with db.session() as session:
        return [int(session.get(Task, i).external_id[1:]) for i in ids]  # type: ignore[union-attr]


async def test_a_tight_call_budget_stops_early_and_says_so(
    api: respx.MockRouter, model_settings: Settings, db: Database, http: httpx.AsyncClient
) -> None:
    make_project(db)
    route = api.post(URL).mock(side_effect=Script())
    options: dict[str, Any] = {"candidates": 3, "max_calls": 150, "few_shot": False, "rate_limits": FAST}
    plan = plan_improvement(db, model_settings, "news", **options)
    assert [(r.candidates, r.items) for r in plan.rounds] == [(4, 12), (2, 24)]
    assert plan.minimum_calls == 30 + 1 + 48 + 60 and plan.total_calls == 163 and not plan.fits_budget

    report = await improve(db, model_settings, "news", http_async_client=http, **options)
    assert report.budget.stopped_early and "round 2" in (report.budget.reason or "")
    assert len(report.rounds) == 1
    assert report.budget.calls <= 150 and route.call_count <= 150
    assert route.call_count == report.budget.calls
    # The best of the last finished round wins (A, perfect on its 12 items) and is still tested honestly.
    assert report.winner == "rewrite A" and report.comparison is not None
    assert report.comparison.deltas["accuracy"] is not None and report.comparison.deltas["accuracy"] < 0

    with pytest.raises(ConfigError, match="smallest useful run"):
        await improve(db, model_settings, "news", candidates=3, max_calls=20, few_shot=False)


async def test_a_dollar_budget_is_never_exceeded(
    api: respx.MockRouter, model_settings: Settings, db: Database, http: httpx.AsyncClient
) -> None:
    make_project(db)
    route = api.post(URL).mock(side_effect=Script())
    options: dict[str, Any] = {"candidates": 3, "few_shot": False, "rate_limits": FAST}
    plan = plan_improvement(db, model_settings, "news", **options)
    assert plan.minimum_usd is not None and plan.usd_high is not None and plan.minimum_usd < plan.usd_high
    with pytest.raises(ConfigError, match="smallest useful run"):
        await improve(db, model_settings, "news", budget_usd=plan.minimum_usd / 2, **options)
    assert route.call_count == 0

    budget = plan.minimum_usd * 1.01
    report = await improve(db, model_settings, "news", budget_usd=budget, http_async_client=http, **options)
    # What was sent, priced as the script reported it (gpt-4o-mini: $0.15 / $0.60 per 1M tokens).
    writer = (1500 * 0.15 + 400 * 0.60) / 1e6
    labels = (120 * 0.15 + 6 * 0.60) / 1e6
    spent = writer + (route.call_count - 1) * labels
    assert report.budget.usd == pytest.approx(spent, abs=1e-5) and spent <= budget
    assert report.budget.budget_usd == budget


async def test_the_current_prompt_stays_when_no_candidate_is_better(
    api: respx.MockRouter, model_settings: Settings, db: Database, http: httpx.AsyncClient
) -> None:
    make_project(db, ratios=None)  # no splits yet: assigned with the default ratios
    writer = [
        {"instructions": CANDIDATES["CAND-C"], "rationale": "worse"},
        {"instructions": BASE, "rationale": "the same as now"},
        {
            "instructions": "Label {missing_field}. CAND-B",
            "rationale": "refers to a field that does not exist",
        },
    ]
    api.post(URL).mock(side_effect=Script(writer))
    report = await improve(
        db, model_settings, "news", candidates=3, few_shot=False, http_async_client=http, rate_limits=FAST
    )
    assert any("assigned train/dev/test" in n for n in report.notes)
    assert [c.name for c in report.candidates] == ["v1 (current)", "rewrite A"]
    assert any("missing_field" in w for w in report.warnings)
    assert report.winner_is_base and report.new_version is None and report.comparison is None
    assert "stays" in report.message
    assert [v.number for v in list_versions(db, "news")] == [1]


async def test_no_model_is_a_clear_error(settings: Settings, db: Database) -> None:
    make_project(db)
    with pytest.raises(ConfigError, match="needs a model"):
        await improve(db, settings, "news")


# ---------------------------------------------------------------------------------------------- preferences


async def test_preferences_become_instructions_with_the_writer(
    api: respx.MockRouter, model_settings: Settings, db: Database, http: httpx.AsyncClient
) -> None:
    make_project(db, ratios=None)
    merged = "Label the news item. BASE\nPrefer Business when a story reports concrete numbers."
    route = api.post(URL).mock(return_value=completion(json.dumps({"instructions": merged})))
    info = await preferences_to_instructions(
        db, model_settings, "news", "stories with concrete numbers are Business", http_async_client=http
    )
    body = json.loads(route.calls[0].request.content)
    assert WRITER_MARKER in body["messages"][0]["content"]
    assert "stories with concrete numbers are Business" in body["messages"][1]["content"]
    assert info.number == 2 and info.parent_number == 1 and info.instructions == merged
    assert info.note == "preferences: stories with concrete numbers are Business"
    assert list_versions(db, "news")[0].instructions == BASE


async def test_preferences_without_a_model_are_added_verbatim(settings: Settings, db: Database) -> None:
    make_project(db, ratios=None)
    info = await preferences_to_instructions(db, settings, "news", "no marketing tone; keep {braces} literal")
    assert info.instructions == f"{BASE}\n\nPreferences:\nno marketing tone; keep {{{{braces}}}} literal"
    assert info.parent_number == 1 and "no model configured" in info.note
    with pytest.raises(ConfigError, match="empty"):
        await preferences_to_instructions(db, settings, "news", "  ")


# ---------------------------------------------------------------------------------------------- CLI


runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None, expect: int = 0) -> Any:
    """Run `labelpilot ARGS --json` in process (respx sees its requests) and parse its stdout."""
    result = runner.invoke(app, [*args, "--json"], env={"COLUMNS": "200", **(env or {})})
    assert result.exit_code == expect, (
        f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    )
    return json.loads(result.stdout)


@pytest.fixture
def cli_project(isolated_env: Path) -> None:
    """A project in the CLI's data folder, with the endpoint's capabilities already known."""
    settings = Settings.from_env()
    db = Database.open(settings)
    make_project(db)
    db.dispose()
    CapabilityStore.for_settings(settings).remember(
        ENDPOINT, MODEL, EndpointCapabilities(mode=OutputMode.json_schema, logprobs=False)
    )


MODEL_ENV = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": ENDPOINT, "LABELPILOT_RPM": "60000"}


def test_cli_improve_json(api: respx.MockRouter, cli_project: None) -> None:
    route = api.post(URL).mock(side_effect=Script())
    planned = invoke("improve", "--candidates", "3", "--no-few-shot", env=MODEL_ENV)
    assert planned["started"] is False and planned["plan"]["total_calls"] == 163
    assert route.call_count == 0  # the plan sends nothing

    done = invoke("improve", "--candidates", "3", "--no-few-shot", "--yes", env=MODEL_ENV)
    assert done["started"] is True and done["winner"] == "rewrite B" and done["new_version"] == 2
    assert done["comparison"]["a"]["name"] == "v1" and done["comparison"]["b"]["name"] == "v2"
    assert done["budget"]["calls"] == route.call_count

    tight = invoke("improve", "--candidates", "3", "--max-calls", "20", "--yes", env=MODEL_ENV, expect=1)
    assert tight["error"] == "ConfigError" and "smallest useful run" in tight["message"]


def test_cli_improve_without_a_model(cli_project: None) -> None:
    result = invoke("improve", "--yes")
    assert result["message"] == NEEDS_MODEL
    assert result["model"] is False


def test_cli_prompt_prefer(api: respx.MockRouter, cli_project: None) -> None:
    verbatim = invoke("prompt", "prefer", "no marketing tone")
    assert verbatim["number"] == 2 and verbatim["parent_number"] == 1
    assert verbatim["instructions"].endswith("Preferences:\nno marketing tone")

    api.post(URL).mock(
        return_value=completion(json.dumps({"instructions": BASE + "\nAvoid marketing tone."}))
    )
    written = invoke("prompt", "prefer", "avoid marketing tone", "--version", "1", env=MODEL_ENV)
    assert written["number"] == 3 and written["parent_number"] == 1
    assert written["instructions"].endswith("Avoid marketing tone.")
    assert written["note"] == "preferences: avoid marketing tone"
