"""`labelpilot gt split / eval / compare / errors / gt suspects` as real subprocesses.

The offline baseline is evaluated with no model configured; a prompt version is evaluated against the fake
OpenAI server on 127.0.0.1, which answers with the class a text names. Five items carry a wrong ground-truth
label on purpose, so the numbers are known in advance.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.fake_openai import FakeOpenAIServer, FakeServerConfig
from tests.ui.test_cli import run

pytestmark = pytest.mark.subprocess

CLASSES = ["Sports", "World", "Business"]
#: Items whose ground truth disagrees with the class their text names.
MISLABELED = {f"n{i}" for i in range(5)}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(FakeServerConfig(rpm=60_000, latency_ms=5, jitter_ms=1)) as running:
        yield running


def jrun(*args: str, home: Path, expect: int = 0, env: dict[str, str] | None = None) -> Any:
    return json.loads(run(*args, "--json", home=home, expect=expect, env=env).stdout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    path = tmp_path / "news.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        for i in range(30):
            named = CLASSES[i % 3]
            gold = CLASSES[(i + 1) % 3] if f"n{i}" in MISLABELED else named
            writer.writerow([f"n{i}", f"item {i}: a story about {named.lower()} and {named}", gold])
    run("project", "create", "news", "--classes", ", ".join(CLASSES), home=home)
    run("import", str(path), "--fields", "text", "--label", "label", home=home)
    return home


def test_evaluate_compare_and_browse_errors(home: Path, server: FakeOpenAIServer, tmp_path: Path) -> None:
    model = {"OPENAI_BASE_URL": server.url, "LABELPILOT_MODEL": "fake-model"}

    splits = jrun("gt", "split", "--seed", "1", home=home)
    assert sum(s["items"] for s in splits["splits"]) == 30 and splits["assigned_now"] == 30

    baseline = jrun("eval", "--baseline", "--pictures", str(tmp_path / "pics"), home=home)
    assert baseline["run"]["name"] == "baseline" and baseline["scored"] == 30
    assert baseline["usage"]["cost_usd"] == 0
    for picture in baseline["pictures"].values():
        assert Path(picture).read_bytes().startswith(b"\x89PNG")

    # Without --yes, --json prints the estimate of an evaluation that costs requests, and labels nothing.
    estimate = jrun("eval", home=home, env=model)
    assert estimate["started"] is False and estimate["estimate"]["requests"] == 30
    first = jrun("eval", "--yes", home=home, env=model)
    assert first["run"]["name"] == "v1" and first["scored"] == 30
    assert first["metrics"]["values"]["accuracy"] == pytest.approx(25 / 30)
    assert first["usage"]["requests"] == 30
    assert first["reference"]["run"]["run_id"] == baseline["run"]["run_id"]

    again = jrun("eval", "--yes", home=home, env=model)
    assert again["run"]["run_id"] != first["run"]["run_id"]
    assert again["usage"]["requests"] == 0 and again["usage"]["from_cache"] == 30

    on_test = jrun("eval", "--baseline", "--split", "test", home=home)
    assert on_test["run"]["split"] == "test" and on_test["scored"] == 6

    listed = jrun("eval", "--list", home=home)
    assert [s["run"]["name"] for s in listed] == ["baseline", "v1", "v1", "baseline"]

    compared = jrun("compare", str(first["run"]["run_id"]), str(again["run"]["run_id"]), home=home)
    assert compared["common"] == 30 and compared["changed"] == 0 and compared["test"]["p_value"] == 1.0
    text = run("compare", "baseline", "v1", home=home, env={"COLUMNS": "200"}).stdout
    assert "mcnemar" in text and "label drift" in text

    errors = jrun("errors", "v1", "--gold", "world", home=home)
    assert errors["total_wrong"] == 5
    assert errors["items"] and all(item["gold"] == "World" for item in errors["items"])
    assert {item["external_id"] for item in errors["items"]} <= MISLABELED
    assert "gold" in run("errors", "v1", home=home).stdout

    suspects = jrun("gt", "suspects", home=home)
    assert {s["external_id"] for s in suspects} <= MISLABELED

    missing = jrun("errors", "999", home=home, expect=1)
    assert missing["error"] == "NotFoundError" and "no run 999" in missing["message"]
    bad_split = jrun("eval", "--baseline", "--split", "holdout", home=home, expect=1)
    assert "unknown split" in bad_split["message"]
