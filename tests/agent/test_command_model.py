"""The command model maps commands and unambiguous phrases to the tool calls a model would make."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from agent.command_model import CommandModel, TextIntent, ToolIntent, interpret, parse_assignments
from agent.tools import agent_tools

TOOL_NAMES = {t.name for t in agent_tools()}


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("/status", "project_status", {}),
    ("/projects", "project_status", {}),
    ("/use reviews", "use_project", {"name": "reviews"}),
    (
        "/new reviews positive, negative",
        "create_project",
        {"name": "reviews", "classes": "positive, negative"},
    ),
    (
        '/import "my data.csv" fields=article,summary_1 label=pick id=uid',
        "import_file",
        {
            "path": "my data.csv",
            "fields": ["article", "summary_1"],
            "label_column": "pick",
            "id_column": "uid",
        },
    ),
    ("/schema Sports, World: politics", "set_label_schema", {"classes": "Sports, World: politics"}),
    (
        "/schema type=multi_choice joy, anger --replace",
        "set_label_schema",
        {"classes": "joy, anger", "schema_type": "multi_choice", "replace_labels": True},
    ),
    ("/schema labels.xml", "set_label_schema", {"label_config": "labels.xml"}),
    ("/gt 20", "sample_tasks", {"n": 20}),
    ("/gt", "sample_tasks", {"n": 10}),
    ("/gt 5 diverse", "sample_tasks", {"n": 5, "strategy": "diverse"}),
    ("/gt #3 Sports", "record_labels", {"labels": [{"task": "#3", "label": "Sports"}]}),
    ("/undo #2", "remove_label", {"task": "#2"}),
    ("/split 0.5,0.25,0.25", "make_splits", {"ratios": [0.5, 0.25, 0.25]}),
    ("/prefer only numbers", "add_preference", {"text": "only numbers"}),
    ("/prompt Classify {text}.", "create_prompt_version", {"instructions": "Classify {text}."}),
    ("/versions", "list_prompt_versions", {}),
    ("/diff 1 v2", "diff_prompt_versions", {"a": 1, "b": 2}),
    ("/adopt v3", "adopt_prompt_version", {"version": 3}),
    ("/eval", "evaluate", {}),
    ("/eval v2 test", "evaluate", {"version": 2, "split": "test"}),
    ("/eval baseline", "evaluate", {"baseline": True}),
    ("/compare v1 baseline", "compare_runs", {"run_a": "v1", "run_b": "baseline"}),
    ("/errors v2 gold=Sports", "show_errors", {"run": "v2", "gold": "Sports"}),
    ("/suspects", "suspect_labels", {}),
    ("/improve", "improve_prompt", {}),
    (
        "/improve v2 budget=0.50 calls=100",
        "improve_prompt",
        {"base_version": 2, "budget_usd": 0.5, "max_calls": 100},
    ),
    ("/estimate limit=100 gt", "estimate_cost", {"limit": 100, "ground_truth_only": True}),
    ("/label", "start_labeling", {}),
    ("/label v3 new", "start_labeling", {"version": 3, "new_run": True}),
    ("/jobs", "job_status", {}),
    ("/job 4", "job_status", {"job_id": 4}),
    ("/cancel", "cancel_job", {}),
    ("/review 5 max=0.6", "show_review_queue", {"limit": 5, "max_confidence": 0.6}),
    ("/accept #1 #3-#4", "review_items", {"decisions": [{"task": "#1"}, {"task": "#3"}, {"task": "#4"}]}),
    ("/correct #2 World", "review_items", {"decisions": [{"task": "#2", "label": "World"}]}),
    ("/export csv", "export_labels", {"format": "csv"}),
    (
        "/export jsonl gt v2 min=0.8",
        "export_labels",
        {"format": "jsonl", "rows": "ground_truth", "version": 2, "min_confidence": 0.8},
    ),
    # unambiguous phrases
    ("status", "project_status", {}),
    ("Where are we?", "project_status", {}),
    (
        "#1 is Sports, #2 World",
        "record_labels",
        {"labels": [{"task": "#1", "label": "Sports"}, {"task": "#2", "label": "World"}]},
    ),
    ("send me everything labeled so far as CSV", "export_labels", {"format": "csv", "rows": "labeled"}),
    ("Export the ground truth to jsonl", "export_labels", {"format": "jsonl", "rows": "ground_truth"}),
    (
        "I only care about summaries that mention concrete numbers",
        "add_preference",
        {"text": "I only care about summaries that mention concrete numbers"},
    ),
    ("Preference: short answers", "add_preference", {"text": "short answers"}),
    ("label everything", "start_labeling", {}),
    ("improve the prompt", "improve_prompt", {}),
    ("show me the errors", "show_errors", {}),
    ("cancel the job", "cancel_job", {}),
    ("how much would it cost?", "estimate_cost", {}),
]


@pytest.mark.parametrize(("text", "name", "args"), CASES)
def test_commands_and_phrases_become_tool_calls(text: str, name: str, args: dict[str, Any]) -> None:
    assert interpret(text) == ToolIntent(name, args)
    assert name in TOOL_NAMES


def test_every_tool_is_reachable_without_a_model() -> None:
    assert {name for _, name, _ in CASES} == TOOL_NAMES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "#1 is Sports, #2 World and #3: joy, anger",
            [("#1", "Sports"), ("#2", "World"), ("#3", "joy, anger")],
        ),
        ("3=Sports 4=World", [("3", "Sports"), ("4", "World")]),
        ("t12 Business", [("t12", "Business")]),
    ],
)
def test_label_assignments(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(a["task"], a["label"]) for a in parse_assignments(text)] == expected


def test_unknown_text_lists_commands_and_how_to_configure_a_model() -> None:
    intent = interpret("could you maybe tidy things up a bit")
    assert isinstance(intent, TextIntent)
    assert "/import" in intent.text and "/export" in intent.text and "OPENAI_API_KEY" in intent.text
    assert isinstance(interpret("/frobnicate"), TextIntent)


def test_bad_command_syntax_answers_with_its_usage() -> None:
    intent = interpret("/diff 1")
    assert isinstance(intent, TextIntent) and "Usage: /diff A B" in intent.text
    intent = interpret("/eval banana")
    assert isinstance(intent, TextIntent) and "not a version" in intent.text


def test_the_model_calls_a_tool_then_reports_its_result() -> None:
    model = CommandModel().bind_tools(agent_tools())
    first = model.invoke([SystemMessage("s"), HumanMessage("/export csv")])
    assert isinstance(first, AIMessage) and first.tool_calls[0]["name"] == "export_labels"
    call_id = first.tool_calls[0]["id"]
    second = model.invoke(
        [HumanMessage("/export csv"), first, ToolMessage("Exported 3 row(s).", tool_call_id=call_id)]
    )
    assert second.content == "Exported 3 row(s)." and not second.tool_calls


def test_tool_names_in_results_become_commands_for_people() -> None:
    model = CommandModel()
    call = AIMessage(content="", tool_calls=[{"name": "project_status", "args": {}, "id": "c1"}])
    result = ToolMessage(
        "No project yet: create one (create_project) or import a file (import_file).", tool_call_id="c1"
    )
    reply = model.invoke([HumanMessage("/status"), call, result])
    assert reply.content == "No project yet: create one (/new) or import a file (/import)."
