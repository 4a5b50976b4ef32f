"""`labelpilot label --batch-api` and `labelpilot batch ...` as real subprocesses against the fake OpenAI server
on 127.0.0.1: the whole flow, Ctrl-C while waiting and the resume that picks the same batch up, cancel at the
provider, and the clear refusals (no model, no Batch API on the endpoint)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evals.fake_openai import FakeOpenAIServer, FakeServerConfig
from tests.ui.test_cli import LABELPILOT, run, run_json
from tests.ui.test_cli_label import child_env, make_project, query
from tools.llm import ENDPOINTS_FILE, CapabilityStore, EndpointCapabilities, OutputMode

pytestmark = pytest.mark.subprocess

PRICES = '[models."fake-model"]\ninput = 1.0\noutput = 4.0\n'


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def fake(batch_phase_s: float) -> FakeOpenAIServer:
    return FakeOpenAIServer(
        FakeServerConfig(rpm=12_000, latency_ms=5, jitter_ms=1, batch_phase_s=batch_phase_s)
    )


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with fake(0.2) as running:
        yield running


def batch_env(server: FakeOpenAIServer) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": server.url,
        "LABELPILOT_MODEL": "fake-model",
        "LABELPILOT_BATCH_POLL_S": "0.05",
    }


def start_and_interrupt(home: Path, server: FakeOpenAIServer) -> tuple[str, str, str]:
    """Start `label --batch-api --yes`, press Ctrl-C once its batch is registered; return (id, stdout, stderr)."""
    env = {**child_env(home, server), "LABELPILOT_BATCH_POLL_S": "0.05"}
    command = [LABELPILOT, "label", "--batch-api", "--yes"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        batches: list[tuple[str]] = []
        while not batches:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no batch was registered in time"
            time.sleep(0.05)
            try:
                batches = [row for row in query(home, "select id from batch_jobs")]  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - the database or its table does not exist yet
                batches = []
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (stdout, stderr)
    return batches[0][0], stdout, stderr


def test_label_through_the_batch_api_then_list_and_show(
    home: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    make_project(home, tmp_path, 20, distinct=16)
    (home / "prices.toml").write_text(PRICES, encoding="utf-8")
    env = batch_env(server)

    shown = run("label", "--batch-api", home=home, env=env, stdin="n\n")
    assert "with the Batch API" in shown.stdout and "within 24 hours" in shown.stdout

    result = json.loads(run("label", "--batch-api", "--yes", "--json", home=home, env=env).stdout)
    estimate = result["estimate"]
    assert estimate["requests"] == 16
    assert estimate["batch_usd_high"] == pytest.approx(estimate["usd_high"] / 2)
    report = result["report"]
    assert result["ok"] and report["status"] == "finished"
    assert (report["labeled"], report["deduplicated"], report["failed"], report["sent"]) == (20, 4, 0, 16)
    [batch_id] = result["batches"]
    rows = query(home, "select input_tokens, output_tokens, cost_usd from predictions where input_tokens > 0")
    assert len(rows) == 16
    for input_tokens, output_tokens, cost in rows:
        assert cost == pytest.approx((input_tokens * 1.0 + output_tokens * 4.0) / 1e6 / 2)
    assert report["cost_usd"] == pytest.approx(sum(cost for *_, cost in rows))
    assert query(home, "select count(*) from predictions where error_kind is null") == [(20,)]

    [listed] = run_json("batch", "list", home=home)
    assert (listed["id"], listed["run_id"], listed["status"], listed["open"]) == (
        batch_id,
        1,
        "completed",
        False,
    )
    assert listed["requests"] == 16 and listed["request_counts"]["completed"] == 16
    assert run_json("batch", "show", batch_id, home=home) == listed
    assert batch_id in run("batch", "list", home=home).stdout
    assert "completed" in run("batch", "show", batch_id, home=home).stdout
    missing = run_json("batch", "show", "batch_nope", home=home, expect=1)
    assert "batch_nope" in missing["message"] and missing["hint"] == "see: labelpilot batch list"
    done = run("batch", "cancel", batch_id, home=home, env=env, expect=1)
    assert "already completed" in done.stderr


def test_ctrl_c_while_waiting_then_jobs_resume_picks_up_the_same_batch(home: Path, tmp_path: Path) -> None:
    make_project(home, tmp_path, 8)
    with fake(2.0) as server:
        batch_id, stdout, stderr = start_and_interrupt(home, server)
        assert f"Submitted batch {batch_id}" in stderr and "the batch keeps running" in stderr
        assert f"labelpilot batch resume {batch_id}" in stdout
        [listed] = run_json("batch", "list", home=home)
        assert listed["open"] and listed["status"] in ("validating", "in_progress")
        assert query(home, "select status from runs") == [("cancelled",)]
        told = run("jobs", "cancel", "1", home=home).stdout
        assert f"keep running at the provider ({batch_id})" in told

        # `jobs resume` sees the open batch and waits for it instead of submitting again.
        result = json.loads(
            run("jobs", "resume", "1", "--yes", "--json", home=home, env=batch_env(server)).stdout
        )
    report = result["report"]
    assert report["status"] == "finished" and report["labeled"] == 8 and result["batches"] == [batch_id]
    counts = query(home, "select task_id, count(*) from predictions group by task_id")
    assert len(counts) == 8 and {count for _, count in counts} == {1}
    assert [row["id"] for row in run_json("batch", "list", home=home)] == [batch_id]


def test_batch_cancel_then_batch_resume_reads_what_ran(home: Path, tmp_path: Path) -> None:
    make_project(home, tmp_path, 5)
    with fake(4.0) as server:
        env = batch_env(server)
        batch_id, _, _ = start_and_interrupt(home, server)
        cancelled = json.loads(run("batch", "cancel", batch_id, "--json", home=home, env=env).stdout)
        assert cancelled["id"] == batch_id and cancelled["status"] in ("cancelling", "cancelled")

        # The provider keeps what it finished before the cancel; the rest is named and left for a resume.
        ingested = json.loads(run("batch", "resume", batch_id, "--yes", "--json", home=home, env=env).stdout)
    report = ingested["report"]
    assert report["status"] == "finished" and ingested["batches"] == [batch_id]
    assert report["labeled"] + report["failed"] == 5 and report["failed"] >= 1
    assert report["failed_by_kind"] == {"server_error": report["failed"]}
    assert ingested["resume"] == "labelpilot jobs resume 1"
    messages = {
        m for (m,) in query(home, "select error_message from predictions where error_kind is not null")
    }
    assert messages == {f"batch {batch_id} was cancelled before this request ran; resume to resubmit"}
    assert run_json("batch", "show", batch_id, home=home)["status"] == "cancelled"


def test_an_endpoint_without_the_batch_api_and_no_model_are_refused(
    home: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    make_project(home, tmp_path, 3)
    no_model = run("label", "--batch-api", "--yes", home=home, expect=1)
    assert "the Batch API needs a model: set OPENAI_API_KEY" in no_model.stderr

    # A server that answers chat requests but has no /v1/files (llama.cpp): its capabilities are known, so
    # the first request is the upload.
    base_url = f"{server.root_url}/no-batches/v1"
    CapabilityStore(home / ENDPOINTS_FILE).remember(
        base_url, "fake-model", EndpointCapabilities(mode=OutputMode.json_schema, logprobs=False)
    )
    env = {"OPENAI_BASE_URL": base_url, "LABELPILOT_MODEL": "fake-model"}
    refused = run("label", "--batch-api", "--yes", "--json", home=home, env=env, expect=1)
    error = json.loads(refused.stdout)
    assert (
        error["ok"] is False and f"the endpoint {base_url} does not offer the Batch API" in error["message"]
    )
    assert "HTTP 404" in error["message"] and "without --batch-api" in error["hint"]
    assert run_json("batch", "list", home=home) == []
    assert query(home, "select count(*) from predictions") == [(0,)]
