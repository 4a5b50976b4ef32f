"""The Chainlit app: handlers driven through a fake Chainlit context (a recording emitter), and the real server.

The fake context records what a browser would receive (messages and their updates, buttons, elements) so
each test reads the chat like a person would and clicks buttons by their label; the agent behind it is the
offline command model, on a real SQLite database in a temporary data folder.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.ui.conftest import import_chainlit
from tools.demo import setup_demo
from tools.groundtruth import task_history
from tools.labelspec import LabelClass, LabelSpec, TaskType
from tools.projects import create_project, project_summary, set_label_spec
from tools.settings import Settings
from tools.storage import Database

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The `ui.app` module, imported so that Chainlit writes its folders into a temporary directory."""
    import_chainlit(tmp_path_factory)
    yield importlib.import_module("ui.app")


@dataclass
class Chat:
    """A fake browser tab: the messages (as last updated), buttons and elements the app sent."""

    app: ModuleType
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    removed_actions: set[str] = field(default_factory=set)
    elements: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, Any]] = field(default_factory=list)

    def messages(self) -> list[dict[str, Any]]:
        return [s for s in self.steps.values() if s.get("type") == "assistant_message"]

    @property
    def texts(self) -> list[str]:
        return [str(step["output"]) for step in self.messages()]

    def tool_steps(self) -> list[dict[str, Any]]:
        return [s for s in self.steps.values() if s.get("type") == "tool"]

    def buttons(self, message_id: str | None = None) -> list[dict[str, Any]]:
        """Buttons still shown (of one message, or all)."""
        return [
            a
            for a in self.actions
            if a["id"] not in self.removed_actions and (message_id is None or a["forId"] == message_id)
        ]

    def button(self, label: str) -> dict[str, Any]:
        """The newest button shown with this label."""
        found = [b for b in self.buttons() if b["label"] == label]
        assert found, f"no button {label!r}; shown: {[b['label'] for b in self.buttons()]}"
        return found[-1]

    def card_buttons(self) -> list[str]:
        """Labels of the buttons under the newest message."""
        return [b["label"] for b in self.buttons(self.messages()[-1]["id"])]

    def elements_of(self, message_id: str) -> list[dict[str, Any]]:
        return [e for e in self.elements if e.get("forId") == message_id]

    async def type(self, text: str, files: list[Any] | None = None) -> list[str]:
        """Send a user message; return the texts of the new assistant messages."""
        import chainlit as cl

        before = len(self.messages())
        await self.app.on_message(cl.Message(content=text, type="user_message", elements=files or []))
        return self.texts[before:]

    async def click(self, label: str) -> list[str]:
        """Click the newest button with this label; return the texts of the new assistant messages."""
        import chainlit as cl

        data = self.button(label)
        callbacks = {
            "card": self.app.on_card,
            "confirm": self.app.on_confirm,
            "cancel_job": self.app.on_cancel_job,
            "import_file": self.app.on_import,
            "say": self.app.on_say,
        }
        before = len(self.messages())
        await callbacks[data["name"]](cl.Action(**data))
        return self.texts[before:]


async def open_chat(app: ModuleType, files_dir: Path) -> Chat:
    """Install a fake Chainlit context (session + recording emitter) and start the chat."""
    from chainlit.context import ChainlitContext, context_var
    from chainlit.emitter import BaseChainlitEmitter
    from chainlit.session import HTTPSession

    chat = Chat(app=app)

    class Session(HTTPSession):
        @property
        def files_dir(self) -> Path:
            return files_dir

    class RecordingEmitter(BaseChainlitEmitter):
        async def send_step(self, step_dict: Any) -> None:
            chat.steps[step_dict["id"]] = dict(step_dict)

        async def update_step(self, step_dict: Any) -> None:
            chat.steps[step_dict["id"]] = {**chat.steps.get(step_dict["id"], {}), **dict(step_dict)}

        def set_chat_settings(self, settings: Any) -> None:
            chat.events.append(("set_chat_settings", settings))

        async def emit(self, event: str, data: Any) -> None:
            chat.events.append((event, data))
            if event == "action":
                chat.actions.append(dict(data))
            elif event == "remove_action":
                chat.removed_actions.add(data["id"])

        async def send_element(self, element_dict: Any) -> None:
            chat.elements.append(dict(element_dict))

    files_dir.mkdir(parents=True, exist_ok=True)
    session = Session(id=str(uuid.uuid4()), client_type="webapp")
    context_var.set(ChainlitContext(session, emitter=RecordingEmitter(session)))
    await app.on_chat_start()
    return chat


async def close(app: ModuleType) -> None:
    await app.on_chat_end()


@pytest.fixture
def demo(db: Database, settings: Settings) -> Database:
    """A database holding the shipped demo projects."""
    setup_demo(db, settings, shared_dir=None)
    return db


# ---------------------------------------------------------------------------------------------- greeting


async def test_welcome_lists_projects_says_offline_and_sends_the_settings_panel(
    app: ModuleType, demo: Database, tmp_path: Path
) -> None:
    chat = await open_chat(app, tmp_path / "files")
    try:
        [welcome] = chat.texts
        assert (
            "| **reader-preference** ← current | 6 | 6 | single choice: Summary 1, Summary 2, Summary 3 |"
            in (welcome)
        )
        assert "| **support-intents** | 60 | 30 |" in welcome
        assert "Offline mode" in welcome and "OPENAI_API_KEY" in welcome and "OPENAI_BASE_URL" in welcome
        assert "A model would add" in welcome
        assert [b["label"] for b in chat.buttons()] == [
            "Expert: which summary is best for our reader?",
            "Engineer: how good is the $0 baseline?",
            "Manager: the labeled support intents as CSV",
            "What can I do?",
        ]
        [panel] = [data for event, data in chat.events if event == "chat_settings"]
        assert [item["id"] for item in panel] == ["labeling_model", "concurrency", "few_shot_k"]
        starters = await app.starters()
        assert [s.label.split(":")[0] for s in starters] == ["Expert", "Engineer", "Manager"]
    finally:
        await close(app)


async def test_welcome_names_a_configured_model(
    app: ModuleType, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LABELPILOT_MODEL", "local-model")
    chat = await open_chat(app, tmp_path)
    try:
        [welcome] = chat.texts
        assert "Offline" not in welcome
        assert "`local-model` at http://127.0.0.1:9/v1" in welcome
        assert "No projects yet" in welcome and "drop a data file" in welcome
    finally:
        await close(app)


async def test_help_runs_through_the_agent_as_a_tool_free_turn(
    app: ModuleType, demo: Database, tmp_path: Path
) -> None:
    chat = await open_chat(app, tmp_path)
    try:
        [reply] = await chat.type("/help")
        assert "/gt [N]" in reply and "/export" in reply and "/label" in reply
        [reply] = await chat.type("/use support-intents")
        assert "support-intents" in reply
        [step] = chat.tool_steps()
        assert step["name"] == "use_project" and json.loads(step["input"]) == {"name": "support-intents"}
        assert "support-intents" in step["output"] and not step["isError"]
    finally:
        await close(app)


# ---------------------------------------------------------------------------------------------- cards


async def test_cards_label_skip_undo_and_finish(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    chat = await open_chat(app, tmp_path)
    try:
        await chat.type("/use support-intents")
        texts = await chat.type("/gt 3")
        assert texts[-1] == "**label 1 / 3**"
        card = chat.messages()[-1]
        [element] = chat.elements_of(card["id"])
        assert element["type"] == "custom" and element["name"] == "TaskCard"
        props = element["props"]
        assert props["progress"] == "label 1 / 3" and [f["name"] for f in props["fields"]] == ["text"]
        first_task = props["title"].split("task ")[-1]
        assert [b["label"] for b in chat.buttons(card["id"])] == [
            "card_lost",
            "refund_request",
            "delivery_status",
            "change_address",
            "account_login",
            "Skip",
        ]

        replies = await chat.click("delivery_status")
        assert replies == ["**label 2 / 3**"]
        assert chat.steps[card["id"]]["output"] == "**label 1 / 3** — ✓ delivery_status"
        assert chat.buttons(card["id"]) == []  # the answered card keeps no buttons
        [record] = task_history(demo, "support-intents", first_task)
        assert (record.value, record.source) == ("delivery_status", "chat")

        # Undo takes the label back and shows the same task again.
        assert "Undo" in [b["label"] for b in chat.buttons()]
        await chat.click("Undo")
        again = chat.elements[-1]["props"]
        assert again["progress"] == "label 1 / 3" and again["title"].endswith(first_task)
        assert [r.deleted for r in task_history(demo, "support-intents", first_task)] == [False, True]

        await chat.click("card_lost")
        second_task = chat.elements[-1]["props"]["title"].split("task ")[-1]
        await chat.click("Skip")
        replies = await chat.click("account_login")
        assert replies[-1].startswith("Done: 2 labeled, 1 skipped, of 3.")
        assert "Ground truth of **support-intents**: 32 item(s)" in replies[-1]
        assert task_history(demo, "support-intents", second_task) == []
        assert [b["label"] for b in chat.buttons()][-3:] == ["Label 10 more", "Evaluate", "Export CSV"]
        assert project_summary(demo, "support-intents").ground_truth_count == 32
    finally:
        await close(app)


async def test_multi_choice_cards_toggle_then_done(app: ModuleType, db: Database, tmp_path: Path) -> None:
    create_project(db, "emotions")
    spec = LabelSpec.from_classes(
        [LabelClass(name="joy"), LabelClass(name="anger"), LabelClass(name="fear")],
        input_fields=["text"],
        type=TaskType.multi_choice,
    )
    set_label_spec(db, "emotions", spec)
    data = tmp_path / "emotions.csv"
    data.write_text("id,text\na,I won and I am scared\nb,Nothing happened\n", encoding="utf-8")
    from tools.importers import import_file

    import_file(db, "emotions", data)
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("/use emotions")
        await chat.type("/gt 2")
        assert chat.card_buttons() == ["☐ joy", "☐ anger", "☐ fear", "Done", "Skip"]
        task = chat.elements[-1]["props"]["title"].split("task ")[-1]
        await chat.click("☐ joy")
        await chat.click("☐ fear")
        assert chat.card_buttons()[:3] == ["☑ joy", "☐ anger", "☑ fear"]
        assert sum(1 for t in chat.texts if t.startswith("**label")) == 1  # toggles redraw the same card
        assert "Selected: joy, fear" in chat.elements[-1]["props"]["note"]
        await chat.click("Done")
        [record] = task_history(db, "emotions", task)
        assert record.value == ["joy", "fear"]
    finally:
        await close(app)


async def test_rating_cards_have_one_button_per_value(app: ModuleType, db: Database, tmp_path: Path) -> None:
    create_project(db, "quality")
    spec = LabelSpec.model_validate({"type": "rating", "input_fields": ["text"], "max_rating": 4})
    set_label_spec(db, "quality", spec)
    data = tmp_path / "quality.jsonl"
    data.write_text('{"text": "fine"}\n', encoding="utf-8")
    from tools.importers import import_file

    import_file(db, "quality", data)
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("/gt 1")
        assert chat.card_buttons() == ["1", "2", "3", "4", "Skip"]
        await chat.click("3")
        assert project_summary(db, "quality").ground_truth_count == 1
    finally:
        await close(app)


# ---------------------------------------------------------------------------------------------- evaluation


async def test_evaluation_shows_metrics_picture_versions_and_wrong_items(
    app: ModuleType, demo: Database, tmp_path: Path
) -> None:
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("/use support-intents")
        [report] = await chat.type("/eval baseline")
        assert "| **accuracy** |" in report and "| cost | $0 (offline) |" in report
        assert "| items scored | 30 |" in report
        assert "**Per class** (weakest first)" in report
        message = chat.messages()[-1]
        kinds = sorted(e["type"] for e in chat.elements_of(message["id"]))
        assert kinds.count("image") == 2 and "file" in kinds  # confusion matrix, F1 per class, CSV
        assert [b["label"] for b in chat.buttons(message["id"])] == [
            "Show errors",
            "Improve the prompt",
            "Label everything",
        ]
        [second] = await chat.type("/eval baseline")
        assert "**Evaluations of this project** (newest first)" in second
        table = second.split("**Evaluations of this project** (newest first)")[1]
        assert table.count("| baseline |") == 2
    finally:
        await close(app)


# ---------------------------------------------------------------------------------------------- jobs


async def test_labeling_asks_then_runs_with_live_progress(
    app: ModuleType, demo: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from ui import web_chat

    monkeypatch.setattr(web_chat, "FOREGROUND_S", 0.0)
    monkeypatch.setattr(web_chat, "PROGRESS_EVERY_S", 0.05)
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("/use support-intents")
        [question] = await chat.type("/label")
        assert question.startswith("**Please confirm:**") and "60" in question
        assert [b["label"] for b in chat.buttons()][-2:] == ["Yes, go ahead", "No"]
        await chat.click("Yes, go ahead")
        session = app.session_chat()
        for _ in range(400):
            if session.watchers and all(w.done() for w in session.watchers.values()):
                break
            await asyncio.sleep(0.05)
        progress = [t for t in chat.texts if t.startswith("**Labeling job")]
        assert progress, chat.texts
        assert "60 / 60 done" in progress[-1] and "0 failed" in progress[-1]
        assert (
            chat.texts[-1].startswith("Labeling job")
            and "**finished**: 60 labeled, 0 failed" in chat.texts[-1]
        )
        assert "Cancel" not in [b["label"] for b in chat.buttons()]
        assert "Review the least confident" in [b["label"] for b in chat.buttons()]
    finally:
        await close(app)


async def test_cancel_button_stops_a_running_job(
    app: ModuleType, demo: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import time as clock

    from tools import baseline
    from tools.engine import job_status
    from ui import web_chat

    monkeypatch.setattr(web_chat, "FOREGROUND_S", 0.0)
    monkeypatch.setattr(web_chat, "PROGRESS_EVERY_S", 0.05)
    # A slow labeler: two tasks at a time, 0.1 s each batch (60 tasks would take 3 s).
    monkeypatch.setattr(
        baseline, "_chunks", lambda items, _size: [items[i : i + 2] for i in range(0, len(items), 2)]
    )
    answer = baseline.BaselineLabeler._answer_batch

    def slow(self: Any, classifier: Any, batch: Any) -> Any:
        clock.sleep(0.1)
        return answer(self, classifier, batch)

    monkeypatch.setattr(baseline.BaselineLabeler, "_answer_batch", slow)
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("/use support-intents")
        await chat.type("/label")
        await chat.click("Yes, go ahead")
        for _ in range(100):
            if "Cancel" in [b["label"] for b in chat.buttons()] and "ETA" in chat.texts[-1]:
                break
            await asyncio.sleep(0.05)
        progress = chat.texts[-1]
        assert progress.startswith("**Labeling job") and "/ 60 done" in progress and "ETA" in progress
        [run_id] = app.session_chat().watchers
        await chat.click("Cancel")
        for watcher in list(app.session_chat().watchers.values()):
            await watcher
        info = job_status(demo, "support-intents", run_id)
        assert info.status == "cancelled" and 0 < info.done < 60
        assert any(t.startswith(f"Stopping job {run_id}") for t in chat.texts)
        assert f"Labeling job {run_id} is **cancelled**" in chat.texts[-1]
        assert "Cancel" not in [b["label"] for b in chat.buttons()]
    finally:
        await close(app)


async def test_review_cards_accept_or_correct_predictions(
    app: ModuleType, demo: Database, tmp_path: Path
) -> None:
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("/use support-intents")
        await chat.type("/label")
        await chat.click("Yes, go ahead")
        session = app.session_chat()
        for watcher in list(session.watchers.values()):
            await watcher
        replies = await chat.type("/review 2")
        assert replies[0].startswith("2 prediction(s) to review, least confident first")
        card = chat.elements[-1]["props"]
        assert card["progress"] == "review 1 / 2" and card["note"].startswith("Predicted: ")
        accept = chat.card_buttons()[0]
        assert accept.startswith("✓ Accept ") and chat.card_buttons()[-1] == "Skip"
        first = card["title"].split("task ")[-1]
        predicted = accept.removeprefix("✓ Accept ")
        await chat.click(accept)
        [record] = [r for r in task_history(demo, "support-intents", first)]
        assert (record.value, record.source) == (predicted, "review")
        second = chat.elements[-1]["props"]["title"].split("task ")[-1]
        other = next(label for label in chat.card_buttons()[1:-2] if label != chat.card_buttons()[0])
        replies = await chat.click(other)
        assert replies[-1].startswith("Done: 2 reviewed, 0 skipped, of 2.")
        assert task_history(demo, "support-intents", second)[-1].value == other
    finally:
        await close(app)


async def test_no_to_a_confirmation_starts_nothing(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("/use support-intents")
        await chat.type("/label")
        [reply] = await chat.click("No")
        assert "Not started" in reply
        replies = await chat.click("What can I do?")
        assert replies[0] == "▶ `/help`" and "/label" in replies[-1]
    finally:
        await close(app)


# ---------------------------------------------------------------------------------------------- export


async def test_export_is_a_download(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    files = tmp_path / "files"
    chat = await open_chat(app, files)
    try:
        await chat.type("/use reader-preference")
        [reply] = await chat.type("/export csv")
        assert "6" in reply
        message = chat.messages()[-1]
        [element] = chat.elements_of(message["id"])
        assert element["type"] == "file" and element["name"].endswith(".csv")
        [served] = [p for p in files.iterdir() if p.suffix == ".csv"]
        rows = list(csv.DictReader(served.open(encoding="utf-8")))
        assert len(rows) == 6 and {"article", "summary_1", "label"} <= set(rows[0])
    finally:
        await close(app)


# ---------------------------------------------------------------------------------------------- upload


class Upload:
    """What Chainlit hands `on_message` for a dropped file: a name and where it was stored."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = str(path)
        self.name = name


async def test_upload_previews_then_imports_with_the_mapping(
    app: ModuleType, db: Database, tmp_path: Path
) -> None:
    stored = tmp_path / "chainlit-file-without-extension"
    stored.write_text(
        "id,message,intent\n1,Where is my parcel?,delivery\n2,I want my money back,refund\n"
        "3,Package not here yet,delivery\n4,Refund please,refund\n",
        encoding="utf-8",
    )
    chat = await open_chat(app, tmp_path / "files")
    try:
        [preview] = await chat.type("", files=[Upload(stored, "tickets.csv")])
        assert "**tickets.csv** · csv · 4 rows · 3 columns" in preview
        assert "| 1 | Where is my parcel? | delivery |" in preview
        assert "input fields (what is labeled): `message`" in preview
        assert "existing labels → ground truth: `intent`" in preview
        assert "a new project **tickets**" in preview
        assert chat.card_buttons() == [
            "Import into new project tickets",
            "No label column",
            "Cancel",
        ]

        await chat.click("No label column")
        preview_now = chat.texts[-1]
        assert "existing labels: none" in preview_now and "`message`, `intent`" in preview_now
        assert chat.card_buttons()[1:3] == ["Labels are in “intent”", "Labels are in “message”"]
        await chat.click("Labels are in “intent”")
        assert "existing labels → ground truth: `intent`" in chat.texts[-1]

        replies = await chat.click("Import into new project tickets")
        assert any("Imported" in r and "4 new tasks" in r for r in replies), replies
        summary = project_summary(db, "tickets")
        assert (summary.task_count, summary.ground_truth_count) == (4, 4)
        assert chat.tool_steps()[-1]["name"] == "import_file"
        assert chat.card_buttons() == ["Label 10 items", "Evaluate the baseline"]
    finally:
        await close(app)


async def test_a_typed_change_adjusts_the_mapping_before_the_import(
    app: ModuleType, db: Database, tmp_path: Path
) -> None:
    stored = tmp_path / "upload"
    stored.write_text(
        "ticket,subject,body,team\nA1,Parcel,Where is it?,logistics\nA2,Money,Refund me,billing\n"
        "A3,Parcel,Still waiting,logistics\n",
        encoding="utf-8",
    )
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("", files=[Upload(stored, "support.csv")])
        [reply] = await chat.type("label=nope")
        assert reply.startswith("**Mapping not changed:** the file has no column 'nope'")
        assert "ticket, subject, body, team" in reply
        [reply] = await chat.type("fields=subject,body label=team id=ticket project=helpdesk")
        assert reply == "Mapping updated: check it above, then click Import."
        preview = next(t for t in reversed(chat.texts) if "Proposed mapping" in t)
        assert "input fields (what is labeled): `subject`, `body`" in preview
        assert "task id: `ticket`" in preview and "existing labels → ground truth: `team`" in preview
        assert "a new project **helpdesk**" in preview
        await chat.click("Import into new project helpdesk")
        summary = project_summary(db, "helpdesk")
        assert (summary.task_count, summary.ground_truth_count) == (3, 3)
        assert set(task_history(db, "helpdesk", "A2")[-1].value.split()) == {"billing"}
    finally:
        await close(app)


async def test_a_bad_upload_is_refused_and_writes_nothing(
    app: ModuleType, db: Database, tmp_path: Path
) -> None:
    stored = tmp_path / "broken"
    stored.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")
    chat = await open_chat(app, tmp_path / "files")
    try:
        [reply] = await chat.type("", files=[Upload(stored, "data.jsonl")])
        assert reply.startswith("**Cannot import data.jsonl:**") and "line 2" in reply
        assert chat.card_buttons() == []
        from tools.projects import list_projects

        assert list_projects(db) == []
    finally:
        await close(app)


async def test_cancelled_upload_imports_nothing(app: ModuleType, db: Database, tmp_path: Path) -> None:
    stored = tmp_path / "f"
    stored.write_text("text\nhello\n", encoding="utf-8")
    chat = await open_chat(app, tmp_path / "files")
    try:
        await chat.type("", files=[Upload(stored, "notes.csv")])
        [reply] = await chat.click("Cancel")
        assert reply == "Not imported: notes.csv."
        from tools.projects import list_projects

        assert list_projects(db) == []
    finally:
        await close(app)


# ---------------------------------------------------------------------------------------------- settings


async def test_settings_panel_overrides_apply_to_the_chat(
    app: ModuleType, demo: Database, tmp_path: Path
) -> None:
    chat = await open_chat(app, tmp_path / "files")
    try:
        await app.on_settings_update({"labeling_model": "gpt-4.1-mini", "concurrency": 4, "few_shot_k": 6})
        reply = chat.texts[-1]
        assert "labeling model `gpt-4.1-mini`" in reply and "4 request(s) in flight" in reply
        assert "6 few-shot example(s)" in reply and "No model is configured" in reply
        session = app.session_chat()
        context = session.context
        assert (context.labeling_model, context.rate_limits.max_concurrency, context.few_shot_k) == (
            "gpt-4.1-mini",
            4,
            6,
        )
        await app.on_settings_update({"labeling_model": "gpt-4.1-mini", "concurrency": 4, "few_shot_k": 6})
        assert chat.texts[-1] == "Settings unchanged."
    finally:
        await close(app)


async def test_starter_runs_its_commands(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    chat = await open_chat(app, tmp_path / "files")
    try:
        starters = {s.label.split(":")[0]: s.message for s in await app.starters()}
        await chat.type(starters["Expert"])
        assert chat.texts[-1] == "**label 1 / 5**" or "Every task already has ground truth" in " ".join(
            chat.texts
        )
        assert [s["name"] for s in chat.tool_steps()][:2] == ["use_project", "sample_tasks"]
        # The greeting's starter buttons do the same: the manager's gets a CSV download.
        replies = await chat.click("Manager: the labeled support intents as CSV")
        assert replies[0] == "▶ Send me the support intents labeled so far as CSV"
        assert [s["name"] for s in chat.tool_steps()][-2:] == ["use_project", "export_labels"]
        [element] = chat.elements_of(chat.messages()[-1]["id"])
        assert element["type"] == "file" and element["name"].startswith("support-intents-")
    finally:
        await close(app)


# ---------------------------------------------------------------------------------------------- the real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chat_over_socketio(port: int, text: str) -> tuple[str, str]:
    """Open a chat like the browser does (Socket.IO); return the welcome and the reply to `text`."""
    import socketio

    replies: list[str] = []
    arrived = threading.Condition()

    client = socketio.Client()

    @client.on("new_message")
    def on_new_message(step: dict[str, Any]) -> None:
        if step.get("type") == "assistant_message":
            with arrived:
                replies.append(str(step["output"]))
                arrived.notify_all()

    def wait_for(count: int) -> None:
        with arrived:
            assert arrived.wait_for(lambda: len(replies) >= count, timeout=15), f"replies so far: {replies}"

    auth = {"clientType": "webapp", "sessionId": str(uuid.uuid4()), "threadId": None, "userEnv": "{}"}
    client.connect(
        f"http://127.0.0.1:{port}", socketio_path="/ws/socket.io", transports=["websocket"], auth=auth
    )
    try:
        client.emit("connection_successful")
        wait_for(1)
        message = {"id": str(uuid.uuid4()), "name": "User", "type": "user_message", "output": text}
        client.emit("client_message", {"message": {**message, "createdAt": "2026-01-01T00:00:00Z"}})
        wait_for(2)
    finally:
        client.disconnect()
    return replies[0], replies[1]


@pytest.mark.subprocess
def test_chainlit_serves_the_app_from_ui_folder(tmp_path: Path) -> None:
    port = _free_port()
    # CI=true would put Chainlit in its "CI mode", which overwrites OPENAI_API_KEY with a fake key.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LABELPILOT_", "OPENAI_")) and key != "CI"
    }
    env.update(
        LABELPILOT_HOME=str(tmp_path / "home"),
        # Keep .chainlit/, .files/ and chainlit.md out of the repository.
        CHAINLIT_APP_ROOT=str(tmp_path / "chainlit-root"),
    )
    (tmp_path / "chainlit-root").mkdir()
    chainlit = str(Path(sys.executable).with_name("chainlit"))
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [chainlit, "run", "app.py", "--headless", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO / "ui",
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        output = (tmp_path / "server.log").read_text()
        assert status == 200, f"no HTTP 200 within 30 s (exit code {server.poll()}):\n{output}"
        # Our own server must be the one answering (not another process that held the port).
        assert server.poll() is None, f"the server exited:\n{output}"
        welcome, reply = _chat_over_socketio(port, "/help")
        assert "No projects yet" in welcome, welcome
        assert "Offline mode" in welcome, f"{welcome}\n--- server log:\n{output}"
        assert "/export" in reply and "/gt [N]" in reply
        assert "Traceback" not in (tmp_path / "server.log").read_text()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


async def test_an_unexpected_failure_gets_an_answer(
    app: ModuleType, demo: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = await open_chat(app, tmp_path / "files")
    try:
        session = app.session_chat()

        async def broken(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("database went away")

        monkeypatch.setattr(session.conversation, "send", broken)
        [reply] = await chat.type("/status")
        assert reply.startswith("**Something went wrong** (RuntimeError)")
        assert "database went away" not in reply
    finally:
        await close(app)
