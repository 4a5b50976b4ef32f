"""`labelpilot prompt create / list / show / diff`, in process with CliRunner (plus one real subprocess)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.ui.test_cli import run_json
from ui.cli import app

runner = CliRunner()


def invoke(*args: str, expect: int = 0) -> Result:
    """Run `labelpilot ARGS` in process and check its exit code."""
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == expect, (
        f"exit {result.exit_code}\nstdout:{result.stdout}\nstderr:{result.stderr}\n{result.exception!r}"
    )
    return result


def invoke_json(*args: str, expect: int = 0) -> Any:
    return json.loads(invoke(*args, "--json", expect=expect).stdout)


def write_reviews(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "shop", "sentiment"])
        for i in range(6):
            writer.writerow([f"r{i}", f"review number {i} [b]loud[/b]", "a", ("positive", "negative")[i % 2]])
    return path


@pytest.fixture
def reviews(tmp_path: Path) -> str:
    """A project with tasks (input field `text`, metadata `shop`) and a three-class schema."""
    invoke("project", "create", "reviews")
    invoke("import", str(write_reviews(tmp_path / "reviews.csv")), "--fields", "text", "--label", "sentiment")
    invoke("schema", "set", "--classes", "positive, negative, neutral: neither clearly")
    return "reviews"


def numbers() -> list[int]:
    return [v["number"] for v in invoke_json("prompt", "list")]


V1 = "Classify the sentiment of {text}."
V2 = "Classify the sentiment of {text}.\nAnswer neutral when unsure."


def test_create_list_show_and_diff(reviews: str) -> None:
    assert invoke("prompt", "list").stdout.startswith("No prompt versions yet")
    first = invoke_json("prompt", "create", "--instructions", V1, "--note", "baseline")
    assert (first["number"], first["parent_number"], first["note"]) == (1, None, "baseline")
    assert first["instructions"] == V1 and first["few_shot"]["kind"] == "none"
    assert first["warnings"] == []  # the schema describes 'neutral'

    second = invoke_json(
        "prompt",
        "create",
        "--from",
        "1",
        "--instructions",
        V2,
        "--describe",
        "NEUTRAL=neither positive nor negative",
        "--param",
        "temperature=0.2",
        "--param",
        "seed=7",
        "--param",
        "style=terse",
        "--few-shot",
        "nearest",
        "--k",
        "4",
        "--model",
        "gpt-4o-mini",
        "--reasoning",
    )
    assert (second["number"], second["parent_number"], second["warnings"]) == (2, 1, [])
    assert second["label_descriptions"] == {"neutral": "neither positive nor negative"}
    assert second["params"] == {"temperature": 0.2, "seed": 7, "style": "terse"}
    assert second["few_shot"] == {"kind": "nearest", "k": 4, "example_ids": [], "max_tokens": None}
    assert (second["model"], second["reasoning"], second["note"]) == ("gpt-4o-mini", True, "")

    listed = invoke_json("prompt", "list")
    assert [(v["number"], v["parent_number"]) for v in listed] == [(1, None), (2, 1)]
    table = invoke("prompt", "list").stdout
    assert "nearest k=4" in table and "gpt-4o-mini" in table and "default" in table and "baseline" in table

    shown = invoke_json("prompt", "show", "2")
    assert shown["number"] == 2 and shown["preview_task"] == "r0"
    assert [m["role"] for m in shown["preview"]] == ["system", "user"]
    system, user = (m["content"] for m in shown["preview"])
    assert "Classify the sentiment of the `text` field.\nAnswer neutral when unsure." in system
    assert "- neutral: neither positive nor negative" in system
    assert "review number 0 [b]loud[/b]" in user
    assert "nearest k=4" in shown["preview_note"]
    assert invoke_json("prompt", "show")["number"] == 2  # the newest by default
    text = invoke("prompt", "show", "1").stdout
    assert "Classify the sentiment of {text}." in text and "Preview (task r0)" in text
    assert "review number 0 [b]loud[/b]" in text  # task text is printed as it is, never as markup

    diff = invoke_json("prompt", "diff", "1", "2")
    assert diff["instructions_diff"] == [
        "--- v1",
        "+++ v2",
        "@@ -1 +1,2 @@",
        " Classify the sentiment of {text}.",
        "+Answer neutral when unsure.",
    ]
    assert [(c["field"], c["before"], c["after"]) for c in diff["changes"]] == [
        ("label_descriptions.neutral", None, "neither positive nor negative"),
        ("few_shot.kind", "none", "nearest"),
        ("few_shot.k", 0, 4),
        ("model", "", "gpt-4o-mini"),
        ("params.temperature", None, 0.2),
        ("params.seed", None, 7),
        ("params.style", None, "terse"),
        ("reasoning", False, True),
    ]
    assert diff["identical"] is False
    human = invoke("prompt", "diff", "1", "2").stdout
    assert "+Answer neutral when unsure." in human and "params.temperature" in human
    assert invoke("prompt", "diff", "2", "2").stdout.strip() == "v2 and v2 are identical"


def test_settings_come_from_the_parent(reviews: str, tmp_path: Path) -> None:
    invoke("prompt", "create", "--instructions", V1, "--model", "m1", "--param", "temperature=0.5")
    descriptions = tmp_path / "descriptions.json"
    descriptions.write_text(json.dumps({"Positive": "praise", "negative": "complaints"}), encoding="utf-8")
    second = invoke_json("prompt", "create", "--descriptions-file", str(descriptions), "--param", "seed=1")
    # Without --from: the newest version is the parent and every setting not given comes from it.
    assert (second["parent_number"], second["instructions"], second["model"]) == (1, V1, "m1")
    assert second["params"] == {"temperature": 0.5, "seed": 1}
    assert second["label_descriptions"] == {"positive": "praise", "negative": "complaints"}

    # --describe wins over the file and over the parent; 'Label=' removes an inherited description.
    third = invoke_json(
        "prompt", "create", "--describe", "positive=", "--describe", "Negative=rants", "--no-reasoning"
    )
    assert third["parent_number"] == 2 and third["label_descriptions"] == {"negative": "rants"}

    # --from an older version: its settings, not the newest one's.
    fourth = invoke_json("prompt", "create", "--from", "1", "--instructions", V2)
    assert fourth["parent_number"] == 1 and fourth["label_descriptions"] == {}
    assert fourth["params"] == {"temperature": 0.5} and fourth["instructions"] == V2

    copy = invoke("prompt", "create", "--from", "4", "--note", "same again")
    assert "the settings are the same as v4's" in copy.stderr
    assert "changed from v4: nothing" in copy.stdout
    assert [(v["number"], v["parent_number"]) for v in invoke_json("prompt", "list")] == [
        (1, None),
        (2, 1),
        (3, 2),
        (4, 1),
        (5, 4),
    ]


def test_few_shot_options(reviews: str) -> None:
    invoke("prompt", "create", "--instructions", V1, "--few-shot", "fixed", "--examples", "r1, r3")
    nearest = invoke_json(
        "prompt", "create", "--few-shot", "nearest", "--k", "3", "--few-shot-max-tokens", "400"
    )
    # Switching kinds drops the example ids (nearest does not read them) and keeps the rest given.
    assert nearest["few_shot"] == {"kind": "nearest", "k": 3, "example_ids": [], "max_tokens": 400}
    mmr = invoke_json("prompt", "create", "--few-shot", "mmr")
    assert mmr["few_shot"] == {"kind": "mmr", "k": 3, "example_ids": [], "max_tokens": 400}
    ignored = invoke_json("prompt", "create", "--examples", "r2")
    assert ignored["warnings"] == ["the few-shot policy 'mmr' ignores its setting(s): example_ids"]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["prompt", "show", "9"], "NotFoundError", "no prompt version v9 (versions: v1)"),
        (["prompt", "diff", "1", "9"], "NotFoundError", "no prompt version v9"),
        (["prompt", "create", "--from", "9", "--note", "x"], "NotFoundError", "no prompt version v9"),
        (["prompt", "create", "--instructions-file", "missing.txt"], "InputFileError", "file not found"),
        (["prompt", "create", "--param", "temperature"], "ConfigError", "not of the form key=value"),
        (["prompt", "create", "--param", "=1"], "ConfigError", "not of the form key=value"),
        (["prompt", "create", "--describe", "neutral"], "ConfigError", "not of the form key=value"),
        (["prompt", "create", "--describe", "Neutrl=x"], "LabelSpecError", "did you mean 'neutral'"),
        (["prompt", "create", "--instructions", "Rate {stars}"], "LabelSpecError", "no such field"),
        (["prompt", "create", "--instructions", " "], "ConfigError", "instructions are empty"),
        (["prompt", "create", "--few-shot", "fixed"], "ConfigError", "lists no examples"),
        (["prompt", "create", "--few-shot", "nearest"], "ConfigError", "k=0"),
    ],
)
def test_errors_exit_1_and_store_nothing(reviews: str, args: list[str], error: str, message: str) -> None:
    invoke("prompt", "create", "--instructions", V1)
    failure = invoke_json(*args, expect=1)
    assert failure["ok"] is False and failure["error"] == error and message in failure["message"]
    assert failure["hint"] or error == "InputFileError"
    human = invoke(*args, expect=1)
    assert message in human.stderr and human.stdout == ""
    assert numbers() == [1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"neutral": 1}', "must be a string"),
    ],
)
def test_a_bad_descriptions_file_is_refused(reviews: str, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "descriptions.json"
    path.write_text(content, encoding="utf-8")
    failure = invoke_json("prompt", "create", "--descriptions-file", str(path), expect=1)
    assert (
        failure["error"] == "InputFileError"
        and message in failure["message"]
        and failure["path"] == str(path)
    )
    assert numbers() == []


def test_usage_errors_exit_2(reviews: str, tmp_path: Path) -> None:
    instructions = tmp_path / "instructions.txt"
    instructions.write_text(V1, encoding="utf-8")
    both = invoke(
        "prompt", "create", "--instructions", V1, "--instructions-file", str(instructions), expect=2
    )
    assert "give the instructions once" in both.stderr
    invoke("prompt", "create", "--few-shot", "sometimes", expect=2)
    invoke("prompt", "create", "--k", "65", expect=2)
    invoke("prompt", "diff", "1", expect=2)
    assert numbers() == []
    from_file = invoke_json("prompt", "create", "--instructions-file", str(instructions))
    assert from_file["instructions"] == V1


def test_without_tasks_placeholders_are_not_checked_but_said_so() -> None:
    invoke("project", "create", "empty", "--classes", "yes, no")
    created = invoke("prompt", "create", "--instructions", "Is {question} answered? yes or no")
    assert "Created prompt v1" in created.stdout
    assert "{question} were not checked" in created.stderr
    shown = invoke_json("prompt", "show")
    assert shown["preview"] is None and shown["preview_note"] == "no preview: the project has no tasks yet"


@pytest.mark.subprocess
def test_prompt_commands_in_a_real_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_json("project", "create", "reviews", "--classes", "positive, negative, neutral", home=home)
    run_json("import", str(write_reviews(tmp_path / "reviews.csv")), "--fields", "text", home=home)
    first = run_json("prompt", "create", "--instructions", V1, home=home)
    second = run_json(
        "prompt", "create", "--from", "1", "--instructions", V2, "--describe", "neutral=unsure", home=home
    )
    assert (first["number"], second["number"], second["parent_number"]) == (1, 2, 1)
    diff = run_json("prompt", "diff", "1", "2", home=home)
    assert diff["instructions_diff"][-1] == "+Answer neutral when unsure."
    assert diff["changes"] == [{"field": "label_descriptions.neutral", "before": None, "after": "unsure"}]
