"""The labelpilot chat (ui/app.py) in a real browser: greeting, ground-truth cards, CSV export.

One server per module on a data folder with the demo projects; offline (no model configured).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.chat import ChatPage
from tests.e2e.conftest import ChainlitServer
from tools.groundtruth import latest_annotations
from tools.labelspec import LabelSpec
from tools.projects import get_project, project_summary
from tools.settings import Settings
from tools.storage import Database

PROJECT = "support-intents"


@pytest.fixture
def home_db(labelpilot_home: Path) -> Iterator[Database]:
    """The database of the server's data folder, opened as the app opens it."""
    database = Database.open(Settings.from_env({"LABELPILOT_HOME": str(labelpilot_home)}))
    yield database
    database.dispose()


def ground_truth(db: Database, project: str) -> dict[str, Any]:
    """{external id: current label} of a project's tasks with ground truth."""
    with db.session() as session:
        project_id = get_project(session, project).id
        return {task.external_id: ann.value for task, ann in latest_annotations(session, project_id)}


def test_greeting_lists_the_demo_projects(chat: ChatPage, labelpilot_server: ChainlitServer) -> None:
    chat.open(labelpilot_server.url)
    greeting = chat.wait_for_text("reader-preference", timeout=30).inner_text()
    assert "support-intents" in greeting
    assert "offline mode" in greeting.lower()


def test_label_three_cards_then_export_them(
    chat: ChatPage, labelpilot_server: ChainlitServer, home_db: Database
) -> None:
    summary = project_summary(home_db, PROJECT)
    assert summary.label_spec is not None
    choices = LabelSpec.model_validate(summary.label_spec).choices()
    before = ground_truth(home_db, PROJECT)

    chat.open(labelpilot_server.url)
    chat.wait_for_text("reader-preference", timeout=30)
    chat.send(f"/use {PROJECT}")
    chat.wait_for_text(re.compile(rf"working on .*{PROJECT}", re.IGNORECASE))
    chat.send("/gt 3")
    for choice in choices[:3]:
        # The newest card still open; labeling it removes its buttons (or replaces the card).
        chat.click_button(choice, until_gone=True, timeout=30)

    after = ground_truth(home_db, PROJECT)
    added = {task: label for task, label in after.items() if task not in before}
    assert len(after) == len(before) + 3
    assert sorted(added.values()) == sorted(choices[:3])
    assert project_summary(home_db, PROJECT).ground_truth_count == summary.ground_truth_count + 3

    chat.send("/export csv")
    path = chat.download(f"{PROJECT}-", timeout=30)
    assert path.suffix == ".csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary.task_count
    labels = {row["id"]: row["label"] for row in rows}
    for task, label in added.items():
        assert labels[task] == label
    assert sum(1 for label in labels.values() if label) == len(after)
