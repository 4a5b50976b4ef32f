"""The same journeys with a configured model: the OpenAI chat endpoint is faked at the HTTP level (respx).

The agent model's replies are scripted (tool calls, then words); labeling and writer requests that the
tools make are answered from their content. Every request goes through the respx-mocked client.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import func, select

from agent.context import AgentContext
from agent.graph import MAX_TOOL_ROUNDS
from tests.agent.conftest import (
    FAST,
    MODEL,
    FakeOpenAI,
    chat,
    gold_of,
    label_named_in_text,
    make_project,
    say,
    story_number,
    tool_call,
    tool_results,
)
from tests.tools.test_llm import URL, completion, error
from tools.groundtruth import coverage
from tools.settings import Settings
from tools.splits import assign_splits
from tools.storage import Database, Prediction
from tools.versions import PromptConfig, create_version, list_versions


def _fake(api: respx.MockRouter) -> FakeOpenAI:
    fake = FakeOpenAI()
    api.post(URL).mock(side_effect=fake)
    return fake


async def test_manager_gets_a_csv_with_the_right_rows(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    make_project(db, items=8, labeled=5)
    fake = _fake(api)
    fake.script(
        tool_call("export_labels", {"format": "csv", "rows": "labeled"}),
        lambda body: say(f"Here is the file. {tool_results(body)[-1]}"),
    )
    async with chat(model_context) as conversation:
        turn = await conversation.send("send me everything labeled so far as CSV")
    assert [c["name"] for c in turn.tool_calls] == ["export_labels"]
    with Path(turn.artifacts[0]).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["id"] for r in rows) == [f"t{n}" for n in range(1, 6)]
    assert all(r["label"] == gold_of(int(r["id"][1:])) for r in rows)
    assert "Exported 5 row(s)" in turn.reply
    # The model saw the system prompt, the question and the tool's short result (never the file).
    first, second = fake.agent_requests
    assert "Every number you state" in first["messages"][0]["content"]
    assert first["messages"][-1] == {"role": "user", "content": "send me everything labeled so far as CSV"}
    assert "Exported 5 row(s)" in tool_results(second)[0]


async def test_expert_labels_ten_items_and_states_a_preference(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    make_project(db, items=14)
    create_version(db, "news", PromptConfig(instructions="Label the news item.", model=MODEL))
    fake = _fake(api)
    shown: list[str] = []

    def answer_cards(body: dict[str, Any]) -> httpx.Response:
        listing = tool_results(body)[-1]
        shown.extend(
            line.split("(")[1].split(")")[0] for line in listing.splitlines() if line.startswith("#")
        )
        return say("Here are 10 stories. Which topic is each one?")

    fake.script(tool_call("sample_tasks", {"n": 10}), answer_cards)
    async with chat(model_context) as conversation:
        await conversation.send("I'd like to label some stories")
        assert len(shown) == 10
        labels = [{"task": f"#{i}", "label": gold_of(int(task[1:]))} for i, task in enumerate(shown, 1)]
        fake.script(tool_call("record_labels", {"labels": labels}), say("Thanks, 10 labels saved."))
        await conversation.send(", ".join(f"#{a['task'][1:]} is {a['label']}" for a in labels))
        assert coverage(db, "news").labeled_count == 10

        preference = "I only care about stories that mention a concrete number"
        fake.writer = lambda body: completion(
            json.dumps(
                {"instructions": "Label the news item. Prefer stories that mention a concrete number."}
            )
        )
        fake.script(
            tool_call("add_preference", {"text": preference}),
            lambda body: say(tool_results(body)[-1]),
        )
        turn = await conversation.send(preference)
    assert fake.writer_requests == 1
    newest = list_versions(db, "news")[-1]
    assert newest.number == 2 and newest.parent_number == 1
    assert "concrete number" in newest.instructions and preference in newest.note
    assert "v2" in turn.reply


async def test_engineer_improves_with_a_confirmed_estimate_and_gets_held_out_metrics(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    make_project(db, items=60, labeled=60)
    assign_splits(db, "news", ratios=(0.3, 0.4, 0.3), seed=1)
    create_version(db, "news", PromptConfig(instructions="Label the news item. BASE", model=MODEL))
    fake = _fake(api)

    def label(body: dict[str, Any]) -> httpx.Response:
        n = story_number(body)
        better = "CAND-GOOD" in body["messages"][0]["content"]
        right = n % 10 != 0 if better else n % 5 not in (0, 1)
        return completion(json.dumps({"label": gold_of(n) if right else gold_of(n + 1)}), usage=(120, 6, 0))

    fake.label = label
    fake.writer = lambda body: completion(
        json.dumps(
            {
                "candidates": [
                    {
                        "instructions": "Label the news item by its main topic. CAND-GOOD",
                        "rationale": "clearer",
                    },
                    {"instructions": "Label the news item quickly. CAND-POOR", "rationale": "shorter"},
                ]
            }
        ),
        usage=(1500, 300, 0),
    )
    fake.script(tool_call("improve_prompt", {"candidates": 2}))
    async with chat(model_context) as conversation:
        asked = await conversation.send("Can you improve v1? Show me the cost first.")
        assert asked.interrupt is not None and asked.interrupt["action"] == "improve"
        estimate = asked.interrupt["estimate"]
        assert estimate["base_version"] == 1 and estimate["total_calls"] > 0 and estimate["usd_high"] > 0
        assert "model calls" in asked.interrupt["question"] and fake.labeling_requests == 0
        fake.script(lambda body: say(tool_results(body)[-1]))
        done = await conversation.send("yes, go ahead")
    assert done.interrupt is None
    versions = list_versions(db, "news")
    assert [v.number for v in versions] == [1, 2] and "CAND-GOOD" in versions[1].instructions
    assert "New prompt version v2" in done.reply and "held-out test item(s)" in done.reply
    assert "v1 accuracy" in done.reply and "v2" in done.reply and "p = " in done.reply


async def test_engineer_labels_after_confirming_and_declining_sends_nothing(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    make_project(db, items=9, labeled=3)
    create_version(db, "news", PromptConfig(instructions="Label the news item.", model=MODEL))
    fake = _fake(api)
    fake.script(tool_call("start_labeling", {}))
    async with chat(model_context) as conversation:
        asked = await conversation.send("label everything")
        assert asked.interrupt is not None and asked.interrupt["estimate"]["requests"] == 9
        assert "$" in asked.interrupt["question"]
        fake.script(lambda body: say("OK, I did not start it."))
        declined = await conversation.send("no")
        assert "Not started" in declined.messages[0].content and fake.labeling_requests == 0

        fake.script(tool_call("start_labeling", {}))
        await conversation.send("actually, label everything")
        fake.script(lambda body: say(tool_results(body)[-1]))
        done = await conversation.send("yes")
    assert fake.labeling_requests == 9 and "finished: 9 labeled" in done.reply
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 9


async def test_numbers_in_replies_come_from_tools(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    make_project(db, items=6, labeled=2)
    fake = _fake(api)
    fake.script(tool_call("project_status", {}), lambda body: say(tool_results(body)[-1].splitlines()[0]))
    async with chat(model_context) as conversation:
        turn = await conversation.send("where are we?")
    assert turn.reply.startswith("Project news: 6 tasks, 2 with ground truth")


async def test_an_unreachable_chat_model_gets_a_helpful_reply(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    api.post(URL).mock(return_value=error(401, "Incorrect API key provided"))
    async with chat(model_context) as conversation:
        turn = await conversation.send("hello")
        assert "could not reach the chat model" in turn.reply and "OPENAI_API_KEY" in turn.reply
        # Slash commands never need the model.
        status = await conversation.send("/status")
    assert "There is no project yet" in status.reply


async def test_slash_commands_do_not_call_the_model(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    make_project(db, items=4, labeled=4)
    route = api.post(URL).mock(return_value=completion("unused"))
    async with chat(model_context) as conversation:
        turn = await conversation.send("/export csv")
    assert route.call_count == 0 and "Exported 4 row(s)" in turn.reply


async def test_a_long_job_runs_in_the_background_and_can_be_watched_and_cancelled(
    api: respx.MockRouter, model_settings: Settings, db: Database, http: httpx.AsyncClient
) -> None:
    context = AgentContext(
        settings=model_settings, db=db, foreground_s=0.3, rate_limits=FAST, http_async_client=http
    )
    make_project(db, items=12, labeled=2)
    create_version(db, "news", PromptConfig(instructions="Label the news item.", model=MODEL))
    fake = _fake(api)
    gate = asyncio.Event()

    async def slow(body: dict[str, Any]) -> httpx.Response:
        await gate.wait()
        return label_named_in_text(body)

    fake.label = slow
    async with chat(context) as conversation:
        await conversation.send("/label")
        started = await conversation.send("yes")
        assert "running in the background" in started.reply
        job = int(started.reply.split()[1])
        assert context.jobs.running() == [job]
        watched = await conversation.send("/jobs")
        assert (
            f"Job {job}" in watched.reply
            and "running" in watched.reply
            and "runs in this chat" in watched.reply
        )
        cancelled = await conversation.send("/cancel")
        assert f"Job {job} stops at its next save" in cancelled.reply
        gate.set()
        for _ in range(100):
            if not context.jobs.running():
                break
            await asyncio.sleep(0.05)
        assert context.jobs.running() == []
        after = await conversation.send(f"/job {job}")
    assert "is cancelled" in after.reply


async def test_a_model_that_never_stops_calling_tools_is_stopped(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    api.post(URL).mock(side_effect=lambda request: tool_call("project_status", {}))
    async with chat(model_context) as conversation:
        turn = await conversation.send("hello")
    assert len(turn.tool_calls) == MAX_TOOL_ROUNDS and "I stopped after" in turn.reply


async def test_an_unreadable_tool_call_is_said_not_dropped(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    body = json.loads(tool_call("project_status", {}).content)
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
    api.post(URL).mock(return_value=httpx.Response(200, json=body))
    async with chat(model_context) as conversation:
        turn = await conversation.send("hello")
    assert turn.tool_calls == [] and "could not be read" in turn.reply


async def test_a_turn_cut_short_asks_again_and_resumes_without_duplicates(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    make_project(db, items=12, labeled=2)
    create_version(db, "news", PromptConfig(instructions="Label the news item.", model=MODEL))
    fake = _fake(api)
    answered = 0
    gate = asyncio.Event()

    async def stalls_after_five(body: dict[str, Any]) -> httpx.Response:
        nonlocal answered
        answered += 1
        if answered > 5:
            await gate.wait()
        return label_named_in_text(body)

    fake.label = stalls_after_five
    async with chat(model_context) as conversation:
        await conversation.send("/label")
        running = asyncio.ensure_future(conversation.answer(True))
        while answered <= 5:
            await asyncio.sleep(0.05)
        running.cancel()  # Ctrl-C, or the process dying, while the job runs
        with pytest.raises(asyncio.CancelledError):
            await running
    gate.set()
    with db.session() as session:
        stored = session.scalar(select(func.count()).select_from(Prediction))
    assert stored is not None and stored <= 5
    async with chat(model_context) as later:
        # The question is still pending; answering it again resumes the same job.
        pending = await later.pending()
        assert pending is not None and pending["action"] == "label"
        done = await later.send("yes")
    assert "finished" in done.reply and "12 of 12 task(s) labeled in all" in done.reply
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 12
        assert session.scalar(select(func.count(func.distinct(Prediction.run_id)))) == 1


async def test_a_paid_evaluation_asks_first_and_reports_metrics_with_an_interval(
    api: respx.MockRouter, model_context: AgentContext, db: Database
) -> None:
    make_project(db, items=10, labeled=10)
    create_version(db, "news", PromptConfig(instructions="Label the news item.", model=MODEL))
    fake = _fake(api)
    async with chat(model_context) as conversation:
        asked = await conversation.send("/eval v1")
        assert asked.interrupt is not None and asked.interrupt["action"] == "evaluate"
        assert asked.interrupt["estimate"]["requests"] == 10 and fake.labeling_requests == 0
        declined = await conversation.send("no")
        assert "Not started" in declined.reply and fake.labeling_requests == 0
        await conversation.send("/eval v1")
        report = await conversation.send("yes")
    assert fake.labeling_requests == 10
    assert "v1 (run 1, gpt-4o-mini) on all ground truth: accuracy 1.000 [" in report.reply
    assert "10 item(s) scored" in report.reply and any(p.endswith("-confusion.png") for p in report.artifacts)
