"""`labelpilot label / estimate / jobs` as real subprocesses against the fake OpenAI server on 127.0.0.1.

Includes the hard-kill test: SIGKILL a labeling process mid-run, run the same command again, and check
that every task ends with exactly one prediction and that the second process sent fewer requests than
there are tasks.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.fake_openai import FakeOpenAIServer, FakeServerConfig
from tests.ui.test_cli import LABELPILOT, run, run_json

pytestmark = pytest.mark.subprocess

CLASSES = ["Sports", "World", "Business"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(FakeServerConfig(rpm=12_000, latency_ms=30, jitter_ms=5)) as running:
        yield running


def model_env(server: FakeOpenAIServer) -> dict[str, str]:
    return {"OPENAI_BASE_URL": server.url, "LABELPILOT_MODEL": "fake-model"}


def make_project(home: Path, tmp_path: Path, n: int, *, distinct: int | None = None) -> None:
    distinct = distinct or n
    path = tmp_path / "news.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(n):
            k = i % distinct
            writer.writerow([f"n{i}", f"item {k}: a story about {CLASSES[k % 3]}"])
    run("project", "create", "news", "--classes", ", ".join(CLASSES), home=home)
    run("import", str(path), "--fields", "text", home=home)


def child_env(home: Path, server: FakeOpenAIServer) -> dict[str, str]:
    """The environment of a labelpilot child process started with Popen."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LABELPILOT_", "OPENAI_"))}
    return {**env, "LABELPILOT_HOME": str(home), **model_env(server)}


def wait_for_predictions(home: Path, process: subprocess.Popen[Any], count: int) -> None:
    deadline = time.monotonic() + 60
    committed = 0
    while committed < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no predictions were committed in time"
        time.sleep(0.05)
        if (home / "labelpilot.db").exists():
            committed = query(home, "select count(*) from predictions")[0][0]


def query(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "labelpilot.db", timeout=30) as connection:
        return connection.execute(sql).fetchall()


def test_label_estimate_and_jobs(home: Path, tmp_path: Path, server: FakeOpenAIServer) -> None:
    make_project(home, tmp_path, 60, distinct=50)
    env = model_env(server)

    estimate = json.loads(run("estimate", "--json", home=home, env=env).stdout)
    assert (estimate["tasks"], estimate["requests"], estimate["duplicates"]) == (60, 50, 10)
    assert estimate["usd_low"] is None and "fake-model" in estimate["notes"][0]

    # --json without --yes: the estimate only; nothing is sent.
    preview = json.loads(run("label", "--json", home=home, env=env).stdout)
    assert preview["started"] is False and preview["estimate"]["requests"] == 50
    assert server.stats().requests == 0

    result = json.loads(run("label", "--yes", "--json", "--rpm", "6000", home=home, env=env).stdout)
    report = result["report"]
    assert result["ok"] and report["status"] == "finished"
    assert (report["labeled"], report["deduplicated"], report["failed"]) == (60, 10, 0)
    rows = query(
        home,
        "select t.data, p.value, p.error_kind from predictions p join tasks t on t.id = p.task_id",
    )
    assert len(rows) == 60
    for data, value, error_kind in rows:
        assert error_kind is None and json.loads(value) in json.loads(data)["text"]

    jobs = run_json("jobs", "list", home=home)
    assert [(j["run_id"], j["status"], j["done"], j["total"]) for j in jobs] == [(1, "finished", 60, 60)]
    shown = run_json("jobs", "show", "1", home=home)
    assert shown["stats"]["estimate_vs_actual"]["requests"] == [50, 50]

    # The same command again: the job is done, nothing is sent.
    sent = server.stats().requests
    again = json.loads(run("label", "--yes", "--json", home=home, env=env).stdout)
    assert again["started"] is False and again["status"] == "finished"
    # A task imported after the job finished: the same command labels just that one, in the same run.
    extra = tmp_path / "extra.csv"
    extra.write_text("id,text\nx1,late news about World\n", encoding="utf-8")
    run("import", str(extra), "--fields", "text", home=home)
    late = json.loads(run("label", "--yes", "--json", home=home, env=env).stdout)
    assert late["report"]["run_id"] == 1 and late["report"]["labeled"] == 1
    assert any("continuing run 1" in note for note in late["notes"])
    assert server.stats().requests == sent + 1
    sent += 1
    # A new run of the same requests comes from the response cache.
    fresh = json.loads(run("label", "--yes", "--json", "--new-run", home=home, env=env).stdout)
    assert fresh["report"]["from_cache"] == 51 and server.stats().requests == sent
    assert "labeled" in run("jobs", "list", home=home).stdout
    cancelled = run_json("jobs", "cancel", "2", home=home, expect=1)
    assert "already finished" in cancelled["message"]


def test_label_without_a_model_uses_the_offline_baseline(home: Path, tmp_path: Path) -> None:
    make_project(home, tmp_path, 6)
    estimate = json.loads(run("estimate", "--json", home=home).stdout)
    assert estimate["requests"] == 0 and estimate["usd_high"] == 0.0
    result = json.loads(run("label", "--yes", "--json", home=home).stdout)
    assert result["report"]["status"] == "finished" and result["report"]["labeled"] == 6
    assert any("offline baseline" in note for note in result["notes"])
    values = query(home, "select p.value from predictions p")
    assert len(values) == 6 and all(json.loads(v) in CLASSES for (v,) in values)
    # A schema the baseline cannot label: the clear "configure a model" message.
    run("schema", "set", "--type", "spans", "--classes", "PER, LOC", "--span-field", "text", home=home)
    failed = run("label", "--yes", home=home, expect=1)
    assert "no model configured: set OPENAI_API_KEY or OPENAI_BASE_URL" in failed.stderr


def test_unreachable_endpoint_fails_clearly(home: Path, tmp_path: Path) -> None:
    make_project(home, tmp_path, 3)
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "LABELPILOT_MODEL": "fake-model"}
    result = run("label", "--yes", home=home, env=env, expect=1)
    assert "cannot reach the model endpoint" in result.stderr
    assert run_json("jobs", "list", home=home)[0]["status"] == "failed"


def test_kill_9_mid_run_then_rerun_labels_each_task_exactly_once(
    home: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    tasks = 2000
    make_project(home, tmp_path, tasks, distinct=1900)
    command = [LABELPILOT, "label", "--yes", "--rpm", "12000", "--concurrency", "16"]
    process = subprocess.Popen(
        command, env=child_env(home, server), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_predictions(home, process, 300)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    killed_at = query(home, "select count(*) from predictions")[0][0]
    assert 300 <= killed_at < tasks
    assert query(home, "select status from runs") == [("running",)]  # nobody could write "finished"
    assert run_json("jobs", "list", home=home)[0]["status"] == "interrupted"

    server.reset()
    result = json.loads(
        run("label", "--yes", "--json", "--rpm", "12000", home=home, env=model_env(server)).stdout
    )
    report = result["report"]
    assert report["status"] == "finished" and report["resumed"] and report["run_id"] == 1
    assert report["skipped"] >= killed_at and report["done_total"] == tasks
    counts = query(home, "select task_id, count(*) from predictions group by task_id")
    assert len(counts) == tasks and {count for _, count in counts} == {1}
    assert query(home, "select count(*) from runs") == [(1,)]
    assert query(home, "select distinct run_id from predictions") == [(1,)]
    assert query(home, "select count(*) from predictions where error_kind is not null") == [(0,)]
    assert server.stats().requests < tasks - killed_at + 10  # only what was not done (+ the probes)


def test_ctrl_c_cancels_cleanly_and_says_how_to_resume(
    home: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    make_project(home, tmp_path, 600)
    command = [LABELPILOT, "label", "--yes", "--rpm", "3000"]
    process = subprocess.Popen(
        command, env=child_env(home, server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_predictions(home, process, 50)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (stdout, stderr)
    assert "Cancelling" in stderr and "Resume with: labelpilot jobs resume 1" in stdout
    assert query(home, "select status from runs") == [("cancelled",)]
    stored = query(home, "select count(*), count(error_kind) from predictions")[0]
    assert 50 <= stored[0] < 600 and stored[1] == 0
    resumed = json.loads(
        run(
            "jobs", "resume", "1", "--yes", "--json", "--rpm", "12000", home=home, env=model_env(server)
        ).stdout
    )
    assert resumed["report"]["done_total"] == 600 and resumed["report"]["skipped"] == stored[0]
