"""Scripted conversations through the command model, with no model configured (no key, no network)."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import func, select

from agent.context import AgentContext
from agent.tools import tool_error_message
from tests.agent.conftest import chat, gold_of, make_project
from tools.engine import list_jobs
from tools.errors import NotFoundError
from tools.groundtruth import coverage
from tools.projects import list_projects
from tools.storage import Database, Prediction, Run
from tools.versions import list_versions


def _csv_rows(path: str) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


async def test_manager_asks_for_a_csv_of_everything_labeled(
    context: AgentContext, db: Database, tmp_path: Path
) -> None:
    data = tmp_path / "reviews.csv"
    data.write_text(
        "id,text,sentiment\nr1,great phone,positive\nr2,broke in a day,negative\nr3,arrived on time,\n"
        "r4,love it,positive\n",
        encoding="utf-8",
    )
    async with chat(context) as conversation:
        imported = await conversation.send(f"/import {data} fields=text label=sentiment")
        assert "4 new tasks" in imported.reply and "3 labels became ground truth" in imported.reply
        turn = await conversation.send("Please send me everything labeled so far as CSV")
    assert [c["name"] for c in turn.tool_calls] == ["export_labels"]
    assert len(turn.artifacts) == 1 and turn.artifacts[0].endswith(".csv")
    rows = _csv_rows(turn.artifacts[0])
    # Nothing was bulk-labeled yet: "labeled so far" is the ground truth.
    assert {(r["id"], r["label"]) for r in rows} == {
        ("r1", "positive"),
        ("r2", "negative"),
        ("r4", "positive"),
    }
    assert "Exported 3 row(s)" in turn.reply and turn.interrupt is None


async def test_expert_labels_ten_items_and_a_preference_becomes_a_new_version(
    context: AgentContext, db: Database
) -> None:
    make_project(db, items=15)
    async with chat(context) as conversation:
        cards = await conversation.send("/gt 10")
        assert cards.tool_calls[0]["args"] == {"n": 10}
        shown = cards.artifact_details[0]["data"]["cards"]
        assert len(shown) == 10 and cards.reply.count("\n#") == 10
        answers = ", ".join(f"#{c['position']} is {gold_of(int(c['task'][1:]))}" for c in shown)
        recorded = await conversation.send(answers)
        assert "Recorded 10 label(s)" in recorded.reply and "Ground truth: 10 of 15 tasks" in recorded.reply
        preference = await conversation.send("I only care about stories that mention a concrete number")
        versions = list_versions(db, "news")
        newest = versions[-1]
        # A proposal: the version in use stays the parent until the user adopts the new one.
        assert not newest.current and versions[-2].current
        adopted = await conversation.send(f"/adopt {newest.number}")
        assert f"v{newest.number} is now the current prompt version" in adopted.reply
    labels = coverage(db, "news")
    assert labels.labeled_count == 10
    assert "I only care about stories that mention a concrete number" in newest.instructions
    assert newest.parent_number == versions[-2].number
    assert f"v{newest.number}" in preference.reply
    assert list_versions(db, "news")[-1].current


async def test_engineer_confirms_bulk_labeling_and_the_job_finishes(
    context: AgentContext, db: Database
) -> None:
    make_project(db, items=9, labeled=6)
    async with chat(context) as conversation:
        asked = await conversation.send("/label")
        assert asked.interrupt is not None and asked.interrupt["kind"] == "confirm"
        assert asked.interrupt["action"] == "label" and asked.interrupt["estimate"]["to_label"] == 9
        assert "no model calls, $0" in asked.interrupt["question"]
        assert not list_jobs(db, "news")  # nothing starts before the answer
        done = await conversation.send("yes")
        assert done.interrupt is None and "Job" in done.reply and "finished" in done.reply
        # The same request again: the job is done, nothing is asked or labeled twice.
        again = await conversation.send("/label")
        assert again.interrupt is None and "already finished" in again.reply
        status = await conversation.send("/jobs")
        assert "finished: 9 of 9 labeled" in status.reply
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 9
        assert session.scalar(select(func.count()).select_from(Run).where(Run.kind == "label")) == 1


async def test_declining_labels_nothing(context: AgentContext, db: Database) -> None:
    make_project(db, items=6, labeled=3)
    async with chat(context) as conversation:
        asked = await conversation.send("label everything")
        assert asked.interrupt is not None
        declined = await conversation.send("no")
        assert declined.interrupt is None and "Not started: nothing was labeled" in declined.reply
        # Something other than yes/no while a confirmation waits declines it and is then answered.
        await conversation.send("/label")
        moved_on = await conversation.send("/status")
        assert "Not started" in moved_on.messages[0].content or any(
            "Not started" in m.content for m in moved_on.messages
        )
        assert "Project news" in moved_on.reply
    assert list_jobs(db, "news") == []


async def test_review_queue_accept_and_correct_become_ground_truth(
    context: AgentContext, db: Database
) -> None:
    make_project(db, items=9, labeled=6)
    async with chat(context) as conversation:
        await conversation.send("/label")
        await conversation.send("yes")
        queue = await conversation.send("/review")
        assert "3 prediction(s)" in queue.reply and queue.artifact_details[0]["kind"] == "cards"
        cards = queue.artifact_details[0]["data"]["cards"]
        first, second = cards[0]["task"], cards[1]["task"]
        reviewed = await conversation.send("/accept #1")
        assert "Accepted 1" in reviewed.reply
        corrected = await conversation.send("/correct #2 World")
        assert "Corrected 1" in corrected.reply
    labels = {c.label: c.count for c in coverage(db, "news").classes}
    assert sum(labels.values()) == 8
    from tools.groundtruth import task_history

    assert task_history(db, "news", first)[-1].source == "review"
    assert task_history(db, "news", second)[-1].display == "World"


async def test_evaluate_errors_and_improve_without_a_model(context: AgentContext, db: Database) -> None:
    make_project(db, items=30, labeled=30)
    async with chat(context) as conversation:
        evaluated = await conversation.send("/eval")
        assert evaluated.interrupt is None  # the baseline costs nothing: no question
        assert (
            "baseline" in evaluated.reply
            and "accuracy" in evaluated.reply
            and "95% interval" in evaluated.reply
        )
        assert any(path.endswith("-confusion.png") for path in evaluated.artifacts)
        errors = await conversation.send("/errors")
        assert "wrong item(s)" in errors.reply
        asked = await conversation.send("/improve")
        assert asked.interrupt is not None and asked.interrupt["action"] == "improve"
        tuned = await conversation.send("yes")
    assert "few-shot policies of the offline baseline" in tuned.reply
    assert "needs a model" in tuned.reply


async def test_a_returning_user_continues_the_conversation(context: AgentContext, db: Database) -> None:
    make_project(db, items=8)
    async with chat(context, thread="alice:1") as conversation:
        cards = await conversation.send("/gt 3")
        first = cards.artifact_details[0]["data"]["cards"][0]["task"]
        waiting = await conversation.send("/label")
        assert waiting.interrupt is not None
    # A new graph on the same checkpoint file: the cards shown and the pending question are still there.
    async with chat(context, thread="alice:1") as later:
        assert (await later.pending()) is not None
        assert len(await later.messages()) >= 4
        declined = await later.send("no")
        assert "Not started" in declined.reply
        recorded = await later.send("#1 is Business")
        assert f"{first} → Business" in recorded.reply
    async with chat(context, thread="bob:1") as other:
        assert await other.messages() == []


async def test_tool_failures_become_helpful_replies(
    context: AgentContext, db: Database, tmp_path: Path
) -> None:
    async with chat(context) as conversation:
        missing = await conversation.send(f"/import {tmp_path / 'nope.csv'}")
        assert "That did not work" in missing.reply and "file not found" in missing.reply
        assert missing.messages[-2].status == "error"
        assert list_projects(db) == []  # the project made for the import is gone with it
        make_project(db)
        unknown = await conversation.send("/use elsewhere")
        assert "no project named 'elsewhere'" in unknown.reply and "What to do" in unknown.reply
        bad_label = await conversation.send("/gt t1 Weather")
        assert "Not recorded" in bad_label.reply and "Weather" in bad_label.reply
    for turn in (missing, unknown, bad_label):
        assert "Traceback" not in turn.reply


def test_unexpected_errors_are_apologised_for_not_shown() -> None:
    text = tool_error_message(RuntimeError("kaboom"))
    assert "bug" in text and "kaboom" in text and "Traceback" not in text
    found = tool_error_message(NotFoundError("no task 'x'", hint="see the ids"))
    assert found == "That did not work: no task 'x'\nWhat to do: see the ids"


async def test_the_other_tools_work_offline(context: AgentContext, db: Database, tmp_path: Path) -> None:
    data = tmp_path / "news.jsonl"
    data.write_text(
        "\n".join(f'{{"id": "n{n}", "text": "{gold_of(n).lower()} story number {n}"}}' for n in range(1, 25)),
        encoding="utf-8",
    )
    config = tmp_path / "labels.xml"
    config.write_text(
        '<View><Text name="text" value="$text"/><Choices name="topic" toName="text">'
        '<Choice value="Sports"/><Choice value="World"/><Choice value="Business"/></Choices></View>',
        encoding="utf-8",
    )
    async with chat(context) as conversation:
        created = await conversation.send("/new desk Sports, World, Business")
        assert "Created project desk" in created.reply
        imported = await conversation.send(f"/import {data} fields=text")
        assert "24 new tasks" in imported.reply and "project desk" in imported.reply
        schema = await conversation.send(f"/schema {config}")
        assert "Labels of desk set (single_choice): Sports, World, Business." in schema.reply
        labels = ", ".join(f"n{n}={gold_of(n)}" for n in range(1, 21))
        recorded = await conversation.send(f"/gt {labels}")
        assert "Recorded 20 label(s)" in recorded.reply
        undone = await conversation.send("/undo n20")
        assert "Removed the label of n20" in undone.reply and "19 of 24" in undone.reply
        split = await conversation.send("/split")
        assert "Splits: train" in split.reply and "19 item(s) placed now" in split.reply
        first = await conversation.send("/prompt Label the story {text} by topic.")
        assert "Created prompt v1." in first.reply
        second = await conversation.send("/prompt Label the story {text} by its main topic.")
        assert "Created prompt v2 (parent v1)." in second.reply
        versions = await conversation.send("/versions")
        assert "2 prompt version(s)" in versions.reply and versions.artifacts[0].endswith("versions.csv")
        diff = await conversation.send("/diff 1 2")
        assert "+Label the story {text} by its main topic." in diff.reply
        estimate = await conversation.send("/estimate")
        assert "24 of 24 task(s) to label" in estimate.reply and "$0" in estimate.reply
        everything = await conversation.send("/eval")
        on_test = await conversation.send("/eval baseline test")
        assert "on the test split" in on_test.reply
        run_a = everything.reply.split("(run ")[1].split(",")[0]
        run_b = on_test.reply.split("(run ")[1].split(",")[0]
        compared = await conversation.send(f"/compare {run_a} {run_b}")
        assert "common item(s)" in compared.reply and "p = " in compared.reply
        suspects = await conversation.send("/suspects")
        assert "No suspicious ground truth" in suspects.reply
        status = await conversation.send("/status")
    assert "Project desk: 24 tasks, 19 with ground truth, 2 prompt version(s)" in status.reply
