"""Every CLI command, run as a real `labelpilot` subprocess against a temporary data folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.subprocess

LABELPILOT = str(Path(sys.executable).with_name("labelpilot"))


def run(
    *args: str, home: Path, stdin: str | None = None, expect: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `labelpilot ARGS` and check its exit code."""
    full_env = {
        key: value for key, value in os.environ.items() if not key.startswith(("LABELPILOT_", "OPENAI_"))
    }
    full_env.update({"LABELPILOT_HOME": str(home), "COLUMNS": "200", **(env or {})})
    result = subprocess.run(
        [LABELPILOT, *args], input=stdin, capture_output=True, text=True, env=full_env, timeout=120
    )
    assert result.returncode == expect, (
        f"exit {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
    )
    return result


def run_json(*args: str, home: Path, expect: int = 0, stdin: str | None = None) -> Any:
    """Run a command with --json and parse its stdout."""
    return json.loads(run(*args, "--json", home=home, expect=expect, stdin=stdin).stdout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def reviews_csv(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "shop", "sentiment"])
        for i in range(12):
            label = ("positive", "negative", "")[i % 3]
            writer.writerow([f"r{i}", f"review number {i}", "a" if i < 6 else "b", label])
    return path


def test_help_and_usage_errors(home: Path) -> None:
    assert "project" in run("--help", home=home).stdout
    run("no-such-command", home=home, expect=2)
    run("gt", "sample", "-n", "zero", home=home, expect=2)


def test_the_whole_loop_from_the_command_line(home: Path, reviews_csv: Path, tmp_path: Path) -> None:
    created = run_json("project", "create", "reviews", "--description", "shop reviews", home=home)
    assert created["name"] == "reviews" and created["task_count"] == 0
    assert [p["name"] for p in run_json("project", "list", home=home)] == ["reviews"]

    report = run_json("import", str(reviews_csv), "--fields", "text", "--label", "sentiment", home=home)
    assert report["tasks_added"] == 12 and report["labels_added"] == 8 and report["schema_created"] is True
    again = run_json("import", str(reviews_csv), "--fields", "text", "--label", "sentiment", home=home)
    assert again["tasks_added"] == 0 and again["tasks_unchanged"] == 12

    schema = run_json("schema", "show", home=home)
    assert [c["name"] for c in schema["label_spec"]["classes"]] == ["positive", "negative"]
    schema = run_json("schema", "set", "--classes", "positive, negative, neutral: neither", home=home)
    assert [c["name"] for c in schema["label_spec"]["classes"]] == ["positive", "negative", "neutral"]
    assert "<Choices" in run("schema", "show", "--label-config", home=home).stdout

    sample = run_json("gt", "sample", "-n", "3", "--seed", "1", home=home)
    assert len(sample) == 3 and all(t["ground_truth"] is None for t in sample)
    strata = run_json("gt", "sample", "-n", "2", "--strategy", "stratified", "--column", "shop", home=home)
    assert sorted(t["meta"]["shop"] for t in strata) == ["a", "b"]

    recorded = run_json("gt", "set", "r2", "neutral", home=home)
    assert recorded["value"] == "neutral"
    history = run_json("gt", "show", "r2", home=home)
    assert [h["value"] for h in history] == ["neutral"]
    run_json("gt", "delete", "r2", home=home)
    coverage = run_json("gt", "show", home=home)
    assert coverage["labeled_count"] == 8
    assert {c["label"]: c["count"] for c in coverage["classes"]} == {
        "positive": 4,
        "negative": 4,
        "neutral": 0,
    }

    # Interactive labeling: label, skip, undo, label again, then quit.
    session = run_json("gt", "label", "-n", "4", home=home, stdin="3\ns\nu\n1\nq\n")
    assert session == {"project": "reviews", "labeled": 2, "skipped": 0, "remaining": 2}
    assert run_json("gt", "show", home=home)["labeled_count"] == 10

    out = tmp_path / "out.csv"
    exported = run_json("export", "--format", "csv", "--output", str(out), "--gt-only", home=home)
    assert exported["rows"] == 10
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and {"id", "text", "label"} <= set(rows[0])
    # Without --format the output's extension decides.
    lines = tmp_path / "out.jsonl"
    assert run_json("export", "--output", str(lines), "--gt-only", home=home)["format"] == "jsonl"
    assert len([json.loads(line) for line in lines.read_text(encoding="utf-8").splitlines()]) == 10

    status = run_json("status", home=home)
    assert status["project"]["ground_truth_count"] == 10 and status["model_configured"] is False
    assert run_json("db", "status", home=home)["up_to_date"] is True
    assert run_json("db", "upgrade", home=home)["to"] == status["schema_revision"]
    assert "reviews" in run("project", "show", home=home).stdout


def test_failures_exit_1_with_a_json_error(home: Path, tmp_path: Path) -> None:
    missing = run_json("project", "show", "ghost", home=home, expect=1)
    assert missing["ok"] is False and missing["error"] == "NotFoundError"
    run("project", "create", "p1", home=home)
    duplicate = run("project", "create", "p1", home=home, expect=1)
    assert "already exists" in duplicate.stderr and "Hint:" in duplicate.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,a\n2,b,c\n", encoding="utf-8")
    failure = run_json("import", str(bad), home=home, expect=1)
    assert failure["error"] == "InputFileError" and failure["line"] == 3
    assert run_json("project", "show", "p1", home=home)["task_count"] == 0
    no_schema = run("gt", "set", "x", "y", home=home, expect=1)
    assert "no label schema" in no_schema.stderr


def test_secrets_never_reach_output(home: Path) -> None:
    result = run("status", "--json", home=home, env={"OPENAI_API_KEY": "sk-very-secret-value"})
    assert json.loads(result.stdout)["model_configured"] is True
    assert "sk-very-secret" not in result.stdout + result.stderr
    pg = run(
        "status",
        home=home,
        env={"LABELPILOT_DATABASE_URL": "postgresql://user:hunter2@127.0.0.1:1/db"},
        expect=1,
    )
    assert "hunter2" not in pg.stdout + pg.stderr


def test_demo_setup_from_shipped_samples(home: Path, tmp_path: Path) -> None:
    env = {"LABELPILOT_SHARED_DIR": str(tmp_path / "no-shared-here")}
    first = json.loads(run("demo", "setup", "--json", home=home, env=env).stdout)
    names = {item["name"]: item for item in first}
    assert set(names) == {"reader-preference", "support-intents"}
    assert all(item["tasks"] > 0 and item["ground_truth"] > 0 for item in first)
    second = json.loads(run("demo", "setup", "--json", home=home, env=env).stdout)
    assert [(i["name"], i["tasks"], i["ground_truth"]) for i in second] == [
        (i["name"], i["tasks"], i["ground_truth"]) for i in first
    ]
    listed = run_json("project", "list", home=home)
    assert {p["name"]: p["task_count"] for p in listed} == {n: i["tasks"] for n, i in names.items()}
