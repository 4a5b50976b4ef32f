"""Evaluation through the engine: two scripted prompt versions, their comparison, errors, GT suspects."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import respx

from evals.evaluate import (
    compare_runs,
    error_items,
    evaluate,
    gt_suspects,
    list_evals,
    resolve_run,
    run_report,
)
from tests.tools.test_llm import URL, completion
from tests.tools.test_llm_labeler import SPEC, make_labeler
from tools.baseline import BaselineLabeler
from tools.embeddings import HashingEmbedder
from tools.errors import NotFoundError
from tools.groundtruth import set_label
from tools.projects import create_project
from tools.settings import Settings
from tools.splits import assign_splits
from tools.storage import Database, Task
from tools.versions import PromptConfig, VersionInfo, create_version

CLASSES = ["Sports", "World", "Business"]
#: Items each scripted version gets wrong (1-based numbers in the task text).
WRONG = {"V1": {1, 2, 3, 4, 5, 6}, "V2": {1, 2, 19}}


def gold_of(number: int) -> str:
    return CLASSES[number % 3]


def wrong_of(number: int) -> str:
    return CLASSES[(number + 1) % 3]


@pytest.fixture
def project(db: Database) -> Database:
    summary = create_project(db, "news", spec=SPEC)
    with db.session() as session:
        for n in range(1, 21):
            session.add(
                Task(
                    project_id=summary.id,
                    external_id=f"t{n}",
                    content_hash=f"h{n}",
                    data={"text": f"{gold_of(n).lower()} story number {n}"},
                )
            )
    for n in range(1, 21):
        set_label(db, "news", f"t{n}", gold_of(n))
    return db


def scripted(request: httpx.Request) -> httpx.Response:
    """V1 and V2 (named in the instructions) answer right except on their WRONG items."""
    body = json.loads(request.content)
    system = body["messages"][0]["content"]
    version = "V2" if "V2" in system else "V1"
    number = int(re.search(r"number (\d+)", body["messages"][-1]["content"]).group(1))  # type: ignore[union-attr]
    label = wrong_of(number) if number in WRONG[version] else gold_of(number)
    return completion(json.dumps({"label": label}), usage=(100, 5, 0))


def versions(db: Database) -> tuple[VersionInfo, VersionInfo]:
    v1 = create_version(db, "news", PromptConfig(instructions="Label the news item. V1", model="gpt-4o-mini"))
    v2 = create_version(
        db,
        "news",
        PromptConfig(instructions="Label the news item carefully. V2", model="gpt-4o-mini"),
        parent=1,
    )
    return v1, v2


async def test_two_versions_compared_with_exact_mcnemar(
    api: respx.MockRouter, settings: Settings, project: Database, http: httpx.AsyncClient
) -> None:
    db = project
    api.post(URL).mock(side_effect=scripted)
    v1, v2 = versions(db)
    first = await evaluate(db, "news", make_labeler(settings, v1, db, http))
    second = await evaluate(db, "news", make_labeler(settings, v2, db, http))
    assert first.metrics.values["accuracy"] == pytest.approx(14 / 20)
    assert second.metrics.values["accuracy"] == pytest.approx(17 / 20)
    assert first.run.name == "v1" and second.run.name == "v2"
    assert first.usage.requests == 20 and first.usage.input_tokens == 2000
    assert first.usage.cost_usd == pytest.approx(20 * (100 * 0.15 + 5 * 0.60) / 1e6)

    result = compare_runs(db, "news", "v1", "v2")
    assert result.common == 20
    assert result.deltas["accuracy"] == pytest.approx(0.15)
    assert result.test.method == "mcnemar_exact"
    # Discordant pairs: 1 right → wrong (item 19), 4 wrong → right (items 3-6): p = 2 * P(X <= 1 | n=5) = 0.375.
    assert (result.test.b_only, result.test.c_only) == (1, 4)
    assert result.test.p_value == pytest.approx(0.375)
    assert [i.external_id for i in result.right_to_wrong_items] == ["t19"]
    assert sorted(i.external_id for i in result.wrong_to_right_items) == ["t3", "t4", "t5", "t6"]
    assert result.changed == 5
    per_class = {row["label"]: row for row in result.per_class}
    assert set(per_class) == set(CLASSES)

    # The error browser, filtered by a class pair: gold Sports (n % 3 == 0), predicted World.
    page = error_items(db, "news", "v1", gold="sports", predicted="World")
    assert page.total_wrong == 6
    assert sorted(i.external_id for i in page.items) == ["t3", "t6"]
    assert all(i.gold == "Sports" and i.predicted == "World" for i in page.items)

    # Items 1 and 2 are wrong in both runs with the same answer: ground-truth suspects.
    suspects = gt_suspects(db, "news", min_runs=2)
    assert [s.external_id for s in suspects] == ["t1", "t2"]
    assert suspects[0].suggested == wrong_of(1) and suspects[0].runs_agreeing == 2


async def test_a_repeated_evaluation_is_a_new_free_run(
    api: respx.MockRouter, settings: Settings, project: Database, http: httpx.AsyncClient
) -> None:
    db = project
    route = api.post(URL).mock(side_effect=scripted)
    v1, _ = versions(db)
    first = await evaluate(db, "news", make_labeler(settings, v1, db, http))
    calls = route.call_count
    again = await evaluate(db, "news", make_labeler(settings, v1, db, http))
    assert again.run.run_id != first.run.run_id
    assert route.call_count == calls  # every answer came from the response cache
    assert again.usage.requests == 0 and again.usage.from_cache == 20 and again.usage.cost_usd == 0
    assert again.metrics.values["accuracy"] == first.metrics.values["accuracy"]
    # The first run is still there, unchanged.
    assert run_report(db, "news", first.run.run_id).metrics.values["accuracy"] == pytest.approx(0.7)
    assert resolve_run(db, "news", "v1") == again.run.run_id
    assert resolve_run(db, "news", "latest") == again.run.run_id


async def test_baseline_is_the_zero_dollar_reference_and_scores_follow_gt_fixes(
    api: respx.MockRouter, settings: Settings, project: Database, http: httpx.AsyncClient
) -> None:
    db = project
    api.post(URL).mock(side_effect=scripted)
    baseline = await evaluate(db, "news", BaselineLabeler(db, "news", embedder=HashingEmbedder()))
    assert baseline.run.name == "baseline" and baseline.usage.cost_usd == 0
    v1, _ = versions(db)
    report = await evaluate(db, "news", make_labeler(settings, v1, db, http))
    assert report.reference is not None and report.reference.run.run_id == baseline.run.run_id
    assert report.reference.headline == "accuracy"
    # Correcting a ground-truth label changes the stored run's score (it is scored against the current GT).
    set_label(db, "news", "t1", wrong_of(1))
    assert run_report(db, "news", report.run.run_id).metrics.values["accuracy"] == pytest.approx(15 / 20)
    names = [s.run.name for s in list_evals(db, "news")]
    assert names == ["v1", "baseline"]


async def test_evaluate_on_a_split(
    api: respx.MockRouter, settings: Settings, project: Database, http: httpx.AsyncClient
) -> None:
    db = project
    api.post(URL).mock(side_effect=scripted)
    with pytest.raises(NotFoundError, match="no splits yet"):
        await evaluate(db, "news", make_labeler(settings, versions(db)[0], db, http), split="test")
    summary = assign_splits(db, "news", ratios=(0.5, 0.25, 0.25), seed=3)
    test_items = next(s.items for s in summary.splits if s.split.value == "test")
    v1 = versions(db)[0]
    report = await evaluate(db, "news", make_labeler(settings, v1, db, http), split="test")
    assert report.run.split == "test" and report.scored == test_items
    assert any("interval" in w for w in report.warnings)  # a handful of items: the interval is wide


async def test_nothing_to_evaluate_without_ground_truth(settings: Settings, db: Database) -> None:
    create_project(db, "empty", spec=SPEC)
    with pytest.raises(NotFoundError, match="no ground truth"):
        await evaluate(db, "empty", BaselineLabeler(db, "empty", embedder=HashingEmbedder()))
    with pytest.raises(NotFoundError, match="no evaluation run matches 'v7'"):
        run_report(db, "empty", "v7")
