"""`labelpilot chat`: one-turn JSON for scripts, confirmations across invocations, the interactive REPL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.agent.conftest import make_project
from tools.storage import Database
from ui.cli import app

LABELPILOT = str(Path(sys.executable).with_name("labelpilot"))


def chat_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["chat", *args, "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def run(*args: str, home: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELPILOT_", "OPENAI_"))}
    env.update({"LABELPILOT_HOME": str(home), "LABELPILOT_USER": "tester", "COLUMNS": "200"})
    result = subprocess.run(
        [LABELPILOT, *args], input=stdin, capture_output=True, text=True, env=env, timeout=180
    )
    assert result.returncode == 0, f"stdout:{result.stdout}\nstderr:{result.stderr}"
    return result


@pytest.mark.subprocess
def test_one_turn_json_from_a_script(tmp_path: Path) -> None:
    out = json.loads(run("chat", "-m", "/status", "--json", home=tmp_path / "home").stdout)
    assert set(out) >= {"thread", "messages", "tool_calls", "artifacts", "interrupt", "reply"}
    assert [c["name"] for c in out["tool_calls"]] == ["project_status"]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert out["interrupt"] is None and out["artifacts"] == []
    assert "There is no project yet" in out["reply"]


def test_a_confirmation_is_answered_by_a_later_invocation(db: Database) -> None:
    make_project(db, items=6, labeled=3)
    asked = chat_json("-m", "/label")
    assert asked["interrupt"]["kind"] == "confirm" and asked["interrupt"]["estimate"]["to_label"] == 6
    done = chat_json("--thread", asked["thread"], "-m", "yes")
    assert done["interrupt"] is None and "finished: 6 labeled" in done["reply"]
    exported = chat_json("--thread", asked["thread"], "-m", "/export csv")
    assert exported["artifacts"][0].endswith(".csv") and Path(exported["artifacts"][0]).is_file()
    assert exported["artifact_details"][0]["kind"] == "file"


def test_yes_confirms_without_asking(db: Database) -> None:
    make_project(db, items=5, labeled=3)
    out = chat_json("-m", "label everything", "--yes")
    assert out["interrupt"] is None and "finished: 5 labeled" in out["reply"]
    assert [c["name"] for c in out["tool_calls"]] == ["start_labeling"]


def test_json_needs_a_message() -> None:
    result = CliRunner().invoke(app, ["chat", "--json"])
    assert result.exit_code == 2


@pytest.mark.subprocess
def test_interactive_chat_asks_in_the_terminal_and_continues_later(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = tmp_path / "news.csv"
    data.write_text("text,topic\nthe match,Sports\nthe summit,World\nthe bank,\n", encoding="utf-8")
    first = run("chat", home=home, stdin=f"/import {data} label=topic\n/label\ny\n/quit\n")
    assert "labelpilot chat" in first.stdout and "Imported news.csv" in first.stdout
    assert "Start?" in first.stdout and "finished: 3 labeled" in first.stdout
    second = run("chat", home=home, stdin="/status\n")
    assert "Where we left off" in second.stdout and "Project news: 3 tasks" in second.stdout
