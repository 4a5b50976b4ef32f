"""The markdown of the web chat (`ui.web_render`): escaping, numbers, notices, previews, tables, progress."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from evals.evaluate import ErrorItem, EvalSummary, RunLabel
from tools.engine import JobInfo
from tools.importers import preview_file
from tools.labelspec import LabelSpec, TaskType
from tools.projects import create_project, list_projects
from tools.settings import Settings
from tools.storage import Database
from ui import web_render as render
from ui.web_render import (
    Markdown,
    cell,
    comparison_table,
    csv_preview,
    errors_table,
    estimate_lines,
    leaderboard_table,
    metrics_table,
    model_notice,
    number,
    per_class_table,
    percent,
    preview_text,
    progress_text,
    projects_table,
    schema_text,
    table,
)

CLASSES = ["Sports", "World", "Business"]
WHEN = datetime(2025, 1, 2, 3, 4, 5)

# ---------------------------------------------------------------------------------------------- cells


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("plain text", "plain text"),
        ("pipes | break tables", r"pipes \| break tables"),
        ("two\nlines\r\n\tand  tabs", "two lines and tabs"),
        ("<script>alert(1)</script>", r"\<script\>alert(1)\</script\>"),
        ("`rm -rf /`", r"\`rm -rf /\`"),
        (
            "**bold** _it_ [link](x) #tag ~s~ !img {b}",
            r"\*\*bold\*\* \_it\_ \[link\](x) \#tag \~s\~ \!img \{b\}",
        ),
        ("back\\slash", r"back\\slash"),
        (0.5, "0.500"),
        (2.0, "2.000"),
        (7, "7"),
        ([1, "a", None], "1, a, None"),
        (True, "True"),
    ],
)
def test_cell_escapes_markup_and_keeps_one_line(value: Any, expected: str) -> None:
    assert cell(value) == expected


def test_long_cells_are_cut_with_an_ellipsis_before_escaping() -> None:
    assert cell("x" * 80) == "x" * 80
    assert cell("x" * 81) == "x" * 79 + "…"
    assert len(cell("y" * 500)) == render.CELL_CHARS
    # Trailing space before the cut is dropped; escapes are added after cutting (never split).
    assert cell("abcd efgh ijkl", width=6) == "abcd…"
    assert cell("||||||||", width=4) == r"\|\|\|…"
    assert cell("a\n" * 100, width=10) == "a a a a a…"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "—"),
        (float("nan"), "—"),
        (0.8421, "0.842"),
        (0.0, "0.000"),
        (0, "0.000"),
        (1.0, "1.000"),  # a metric: the same width as the others in its column
        (2.0, "2.000"),
        (-1.0, "-1.000"),
        (12, "12"),  # a count
        (1234567, "1,234,567"),
        (1234.5, "1,234.500"),
        (1.5, "1.500"),
        (-0.0833, "-0.083"),
    ],
)
def test_number(value: float | None, expected: str) -> None:
    assert number(value) == expected


def test_number_digits() -> None:
    assert number(0.84, digits=1) == "0.8"
    assert number(3.14159, digits=2) == "3.14"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "—"), (float("nan"), "—"), (0.842, "84.2%"), (1.0, "100.0%"), (0.0, "0.0%"), (0.0004, "0.0%")],
)
def test_percent(value: float | None, expected: str) -> None:
    assert percent(value) == expected


def test_table_escapes_every_cell_but_markdown_ones() -> None:
    text = table(
        ["name", "a|b", "n"],
        [
            ["**x | y\nz", "<b>", 3],
            [Markdown("**kept**"), None, 0.25],
        ],
        right=(2,),
    )
    assert text.splitlines() == [
        r"| name | a\|b | n |",
        "|---|---|---:|",
        r"| \*\*x \| y z | \<b\> | 3 |",
        "| **kept** |  | 0.250 |",
    ]


def test_a_dataset_cell_starting_with_bold_markup_cannot_break_a_table() -> None:
    # Regression: cells starting with "**" used to be passed through unescaped (newline and pipe included).
    text = table(["text"], [["**oops | two\nlines"]])
    assert text.splitlines() == ["| text |", "|---|", r"| \*\*oops \| two lines |"]


# ---------------------------------------------------------------------------------------------- notices


def test_model_notice_offline(settings: Settings) -> None:
    assert not render.model_configured(settings)
    notice = model_notice(settings)
    assert notice.startswith("**Offline mode: no model is configured.**")
    assert "the offline baseline (embeddings, $0)" in notice
    assert "`OPENAI_API_KEY=sk-… make run`" in notice and "`OPENAI_BASE_URL=http://host:port/v1`" in notice
    assert "`LABELPILOT_MODEL`" in notice and "never stored" in notice


def test_model_notice_with_a_compatible_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("LABELPILOT_MODEL", "qwen2.5-7b")
    settings = Settings.from_env()
    assert render.model_configured(settings)
    assert model_notice(settings) == (
        "**Model:** `qwen2.5-7b` at http://127.0.0.1:8000/v1. Write in your own words, or use `/help`."
    )


def test_model_notice_with_an_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    settings = Settings.from_env()
    notice = model_notice(settings)
    assert (
        notice == f"**Model:** `{settings.label_model}` at OpenAI. Write in your own words, or use `/help`."
    )
    assert "sk-test" not in notice


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "not set"),
        (LabelSpec.from_classes(CLASSES), "single choice: Sports, World, Business"),
        (
            LabelSpec.from_classes(CLASSES, type=TaskType.multi_choice),
            "multi choice: Sports, World, Business",
        ),
        (LabelSpec.model_validate({"type": "rating", "max_rating": 5}), "rating: 1, 2, 3, 4, 5"),
        (LabelSpec.model_validate({"type": "text"}), "text"),
        (LabelSpec.model_validate({"type": "number"}), "number"),
        (LabelSpec.from_classes(["PER", "ORG"], type=TaskType.spans), "spans: PER, ORG"),
        (
            LabelSpec.from_classes([f"c{i}" for i in range(11)]),
            "single choice: c0, c1, c2, c3, c4, c5, c6, c7, … (+3)",
        ),
    ],
)
def test_schema_text(spec: LabelSpec | None, expected: str) -> None:
    assert schema_text(spec.model_dump(mode="json") if spec else None) == expected


def test_projects_table_without_projects(db: Database) -> None:
    assert projects_table(list_projects(db), None) == (
        "No projects yet: drop a data file (CSV, TSV, JSON, JSONL, Parquet, Excel or a Label Studio "
        "export) into the chat to start one."
    )


def test_projects_table_marks_the_current_project(db: Database, tmp_path: Path) -> None:
    from tools.importers import import_file

    create_project(db, "my_data")
    create_project(db, "news", spec=LabelSpec.from_classes(CLASSES, input_fields=["text"]))
    path = tmp_path / "news.csv"
    path.write_text("id,text,topic\nt1,goal,Sports\nt2,vote,\nt3,deal,\n", encoding="utf-8")
    import_file(db, "news", path, label_column="topic")
    assert projects_table(list_projects(db), "news").splitlines() == [
        "| project | tasks | ground truth | schema |",
        "|---|---:|---:|---|",
        r"| **my\_data** | 0 | 0 | not set |",
        "| **news** ← current | 3 | 1 | single choice: Sports, World, Business |",
    ]
    assert "← current" not in projects_table(list_projects(db), None)


def test_estimate_lines() -> None:
    notes = [f"note {n}" for n in range(1, 8)]
    notes[1] = "costs | <b>$0</b>"
    text = estimate_lines({"question": "Label 9 tasks with the baseline?", "estimate": {"notes": notes}})
    assert text.splitlines() == [
        "**Please confirm:** Label 9 tasks with the baseline?",
        "- note 1",
        r"- costs \| \<b\>$0\</b\>",
        "- note 3",
        "- note 4",
        "- note 5",
    ]
    assert estimate_lines({}) == "**Please confirm:** go ahead?"


# ---------------------------------------------------------------------------------------------- upload


def test_preview_text_of_an_upload_escapes_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(
        "id,text,topic\n"
        'r1,"pipes | break tables",positive\n'
        'r2,"two\nlines",negative\n'
        "r3,<script>alert(1)</script>,positive\n"
        "r4,**bold** start,\n"
        "r5,`code` and more,negative\n",
        encoding="utf-8",
    )
    preview = preview_file(path)
    assert preview_text(preview, project="reviews", new_project=True).splitlines() == [
        "**reviews.csv** · csv · 5 rows · 3 columns",
        "",
        "| id | text | topic |",
        "|---|---|---|",
        r"| r1 | pipes \| break tables | positive |",
        "| r2 | two lines | negative |",
        r"| r3 | \<script\>alert(1)\</script\> | positive |",
        r"| r4 | \*\*bold\*\* start |  |",
        r"| r5 | \`code\` and more | negative |",
        "",
        "**Proposed mapping**",
        "- input fields (what is labeled): `text`",
        "- task id: `id`",
        "- existing labels → ground truth: `topic`: positive, negative",
        "- into a new project **reviews**",
        "- note: 1 of the 5 rows have no label in 'topic' (they import unlabeled).",
    ]
    existing = preview_text(preview, project="my_reviews", new_project=False)
    assert r"- into project **my\_reviews**" in existing.splitlines()


def test_preview_text_of_a_wide_file_without_ids_or_labels(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    lines = [",".join(f"c{i}" for i in range(10))]
    lines += [",".join(f"v{n}x{i}" for i in range(10)) for n in range(1, 2102)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    preview = preview_file(path)
    text = preview_text(preview, project="wide", new_project=True).splitlines()
    # More rows than the preview scans: the count says so with "+".
    assert text[0] == f"**wide.csv** · csv · {preview.rows_scanned:,}+ rows · 10 columns (+2 more columns)"
    assert preview.rows_scanned >= 1000
    assert text[2] == "| " + " | ".join(f"c{i}" for i in range(8)) + " |"
    assert text[4] == "| " + " | ".join(f"v1x{i}" for i in range(8)) + " |"
    assert text[8] == "| " + " | ".join(f"v5x{i}" for i in range(8)) + " |"
    assert "- input fields (what is labeled): " + ", ".join(f"`c{i}`" for i in range(10)) in text
    assert "- task id: from the content" in text
    assert "- existing labels: none" in text


def test_preview_text_of_multi_label_cells(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    values = [f"l{n:02d}" for n in range(14)]
    path.write_text(
        "text,tags\n"
        + "".join(
            f'a longer text of item {n},"{values[n % 14]};{values[(n + 1) % 14]}"\n' for n in range(40)
        ),
        encoding="utf-8",
    )
    preview = preview_file(path)
    assert preview.label_column == "tags" and preview.label_separator == ";"
    line = next(x for x in preview_text(preview, project="t", new_project=True).splitlines() if "→" in x)
    shown = ", ".join(preview.label_values[:12])
    assert line == (
        f"- existing labels → ground truth: `tags` (several per cell, split at `;`): {shown}, … (14 values)"
    )


# ---------------------------------------------------------------------------------------------- evaluation


def _run(run_id: int, name: str, *, kind: str = "llm", split: str | None = None) -> RunLabel:
    return RunLabel(
        run_id=run_id,
        kind=kind,
        name=name,
        prompt_version=None if kind == "baseline" else run_id,
        model="baseline:hashing-centroid" if kind == "baseline" else "gpt-4o-mini",
        split=split,
        created_at=WHEN,
        status="finished",
    )


def _summary(run: RunLabel, value: float | None, **kwargs: Any) -> EvalSummary:
    fields: dict[str, Any] = {"low": None, "high": None, "scored": 20, "invalid_rate": 0.0, "cost_usd": 0.0}
    fields.update(kwargs)
    return EvalSummary(run=run, headline="micro_f1", value=value, **fields)


async def test_tables_of_a_real_baseline_evaluation(db: Database, tmp_path: Path) -> None:
    from evals.evaluate import compare_runs, error_items, evaluate, list_evals
    from tools.baseline import BaselineLabeler
    from tools.embeddings import HashingEmbedder
    from tools.importers import import_file

    words = {
        "Sports": "match goal team",
        "World": "election summit treaty",
        "Business": "shares profit market",
    }
    lines = ["id,text,topic"]
    for n in range(1, 13):
        gold = CLASSES[n % 3]
        text = f"{words[gold]} story {n}"
        # Two sports stories carry wrong ground truth: the baseline disagrees with them.
        if n in (3, 6):
            gold = "World" if n == 3 else "Business"
        lines.append(f"n{n},{text},{gold}")
    path = tmp_path / "news.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    create_project(db, "news", spec=LabelSpec.from_classes(CLASSES, input_fields=["text"]))
    import_file(db, "news", path, label_column="topic")

    first = await evaluate(db, "news", BaselineLabeler(db, "news", embedder=HashingEmbedder()))
    second = await evaluate(db, "news", BaselineLabeler(db, "news", embedder=HashingEmbedder(), k=3))
    report = first.model_dump(mode="json")  # what the `evaluate` tool hands the UI
    run_id = first.run.run_id
    values = first.metrics.values
    accuracy = values["accuracy"]
    assert accuracy is not None and 0 < accuracy < 1 and first.metrics.interval is not None

    # Metrics: the headline first, in bold, with its interval; then the other metrics, cost, items.
    lines = metrics_table(report).splitlines()
    # "baseline\:hashing": the chat's markdown would read ":hashing" as a directive and drop it.
    assert lines[0] == f"**baseline** (run {run_id}, baseline\\:hashing-centroid)"
    assert lines[2:4] == ["| metric | value | 95% interval |", "|---|---:|---|"]
    low, high = first.metrics.interval.low, first.metrics.interval.high
    assert lines[4] == f"| **accuracy** | {accuracy:.3f} | {number(low)} – {number(high)} |"
    assert f"| macro f1 | {values['macro_f1']:.3f} |  |" in lines
    assert f"| kappa | {values['kappa']:.3f} |  |" in lines
    assert not any(line.startswith(("| n |", "| answered |", "| accuracy low |")) for line in lines)
    assert lines[-2:] == ["| cost | $0 (offline) |  |", "| items scored | 12 |  |"]
    assert not any("latency" in line for line in lines)

    # The same report as an LLM run on a split: the model, the split and the cost in dollars.
    llm = copy.deepcopy(report)
    llm["run"].update(kind="llm", name="v2", model="gpt-4o-mini", split="test")
    llm["usage"]["cost_usd"] = 0.01234
    llm["metrics"]["values"]["latency_p50_ms"] = 120.0
    llm_lines = metrics_table(llm).splitlines()
    assert llm_lines[0] == f"**v2** (run {run_id}, gpt-4o-mini) on the test split"
    assert "| cost | $0.0123 |  |" in llm_lines
    assert not any("latency" in line for line in llm_lines)
    llm["metrics"]["interval"] = None
    llm["usage"]["cost_usd"] = None
    assert f"| **accuracy** | {accuracy:.3f} |  |" in metrics_table(llm).splitlines()
    assert "| cost | — |  |" in metrics_table(llm).splitlines()

    # Per class: the weakest class first.
    per_class = sorted(first.metrics.per_class, key=lambda c: (c.f1, c.label))
    rows = per_class_table(report).splitlines()
    assert rows[:2] == ["| class | precision | recall | F1 | n |", "|---|---:|---:|---:|---:|"]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows[2:]] == [c.label for c in per_class]
    weakest = per_class[0]
    assert rows[2] == (
        f"| {weakest.label} | {number(weakest.precision)} | {number(weakest.recall)} | "
        f"{number(weakest.f1)} | {weakest.support} |"
    )
    assert per_class_table(report, limit=1).endswith("\n\n2 more classes in the per-class CSV.")

    # The leaderboard: newest first; baselines cost "$0".
    board = leaderboard_table(list_evals(db, "news")).splitlines()
    assert board[:2] == [
        "| version | run | split | accuracy | 95% interval | n | invalid | cost |",
        "|---|---:|---|---:|---|---:|---:|---:|",
    ]
    assert board[3] == (
        f"| baseline | {run_id} | all | {accuracy:.3f} | {number(low)} – {number(high)} | 12 | 0.0% | $0 |"
    )
    assert board[2].startswith(f"| baseline | {second.run.run_id} | all | ")
    assert board[2].endswith(" | 12 | 0.0% | $0 |")

    # Errors: the input, the gold label and the prediction of each wrong item.
    page = error_items(db, "news", run_id)
    assert {item.external_id for item in page.items} >= {"n3", "n6"}
    errors = errors_table(page.items).splitlines()
    assert errors[:2] == ["| task | input | gold | predicted |", "|---|---|---|---|"]
    by_task = {item.external_id: item for item in page.items}
    assert f"| n3 | match goal team story 3 | World | {by_task['n3'].predicted} |" in errors

    # Comparison of the two runs: metric by metric, the paired test, the flips.
    comparison = compare_runs(db, "news", run_id, second.run.run_id).model_dump(mode="json")
    table_lines = comparison_table(comparison).splitlines()
    assert table_lines[0] == (
        f"| metric | baseline (run {run_id}) | baseline (run {second.run.run_id}) | Δ |"
    )
    assert table_lines[1] == "|---|---:|---:|---:|"
    delta = comparison["deltas"]["accuracy"]
    sign = "+" if delta >= 0 else ""
    assert (
        f"| accuracy | {number(comparison['metrics_a']['values']['accuracy'])} | "
        f"{number(comparison['metrics_b']['values']['accuracy'])} | {sign}{number(delta)} |"
    ) in table_lines
    test = comparison["test"]
    assert table_lines[-1] == (
        f"12 common items · mcnemar exact p = {test['p_value']:.3g} "
        f"({'significant' if test['p_value'] < 0.05 else 'not significant'} at 0.05) · "
        f"right → wrong {comparison['right_to_wrong']}, wrong → right {comparison['wrong_to_right']}"
    )


def test_comparison_table_signs_and_significance() -> None:
    data = {
        "a": {"name": "v1", "run_id": 3},
        "b": {"name": "v2 | new", "run_id": 4},
        "common": 1200,
        "metrics_a": {"values": {"accuracy": 0.7, "macro_f1": 0.65, "kappa": 0.5, "latency_p50_ms": 900.0}},
        "metrics_b": {"values": {"accuracy": 0.85, "macro_f1": 0.6, "kappa": None, "latency_p50_ms": 800.0}},
        "deltas": {"accuracy": 0.15, "macro_f1": -0.05, "kappa": None, "latency_p50_ms": -100.0},
        "test": {"method": "mcnemar_exact", "p_value": 0.0123456},
        "right_to_wrong": 3,
        "wrong_to_right": 1500,
    }
    assert comparison_table(data).splitlines() == [
        r"| metric | v1 (run 3) | v2 \| new (run 4) | Δ |",
        "|---|---:|---:|---:|",
        "| accuracy | 0.700 | 0.850 | +0.150 |",
        "| macro f1 | 0.650 | 0.600 | -0.050 |",
        "",
        "1,200 common items · mcnemar exact p = 0.0123 (significant at 0.05) · right → wrong 3, wrong → "
        "right 1,500",
    ]
    data["test"] = {"method": "paired_bootstrap", "p_value": 0.05}
    assert comparison_table(data).endswith(
        "paired bootstrap p = 0.05 (not significant at 0.05) · right → wrong 3, wrong → right 1,500"
    )
    data["deltas"] = {"accuracy": 0.0}
    assert "| accuracy | 0.700 | 0.850 | +0.000 |" in comparison_table(data).splitlines()


def test_leaderboard_table_of_llm_and_baseline_runs() -> None:
    summaries = [
        _summary(
            _run(9, "v3", split="test"), 0.8123, low=0.71, high=0.9, invalid_rate=0.025, cost_usd=0.0042
        ),
        _summary(_run(8, "v2"), None, scored=0, invalid_rate=None, cost_usd=None),
        _summary(_run(7, "v1"), 0.5, low=0.4, high=0.6, scored=1500, cost_usd=1234.5),
        _summary(_run(6, "baseline", kind="baseline"), 0.61, low=0.5, high=0.7, cost_usd=0.0),
    ]
    assert leaderboard_table(summaries).splitlines() == [
        "| version | run | split | micro f1 | 95% interval | n | invalid | cost |",
        "|---|---:|---|---:|---|---:|---:|---:|",
        "| v3 | 9 | test | 0.812 | 0.710 – 0.900 | 20 | 2.5% | $0.0042 |",
        "| v2 | 8 | all | — |  | 0 | — | — |",
        "| v1 | 7 | all | 0.500 | 0.400 – 0.600 | 1500 | 0.0% | $1,234.50 |",
        "| baseline | 6 | all | 0.610 | 0.500 – 0.700 | 20 | 0.0% | $0 |",
    ]
    assert len(leaderboard_table(summaries, limit=2).splitlines()) == 4
    assert leaderboard_table([]) == ""


def test_errors_table_of_every_value_kind() -> None:
    def item(external_id: str, data: dict[str, Any], gold: Any, predicted: Any) -> ErrorItem:
        return ErrorItem(
            task_id=1,
            external_id=external_id,
            data=data,
            gold=gold,
            predicted=predicted,
            reasoning=None,
            confidence=None,
            error_kind=None,
            error_message=None,
        )

    spans = [
        {"start": 0, "end": 5, "text": "Alice", "label": "PER"},
        {"start": 15, "end": 19, "label": "ORG"},
    ]
    items = [
        item("a|1", {"title": "Cup final", "body": "a <b>late</b>\ngoal"}, "Sports", None),
        item("m1", {"text": "x"}, ["Sports", "World"], ["World"]),
        item("s1", {"text": "Alice works at Acme"}, spans, []),
        item("r1", {"text": "long " * 40}, 4, 2),
    ]
    assert errors_table(items).splitlines() == [
        "| task | input | gold | predicted |",
        "|---|---|---|---|",
        r"| a\|1 | Cup final · a \<b\>late\</b\> goal | Sports | (no answer) |",
        "| m1 | x | Sports, World | World |",
        "| s1 | Alice works at Acme | PER, ORG |  |",
        "| r1 | " + ("long " * 20).strip() + "… | 4 | 2 |",
    ]
    assert errors_table(items, text_chars=8).splitlines()[2].startswith(r"| a\|1 | Cup fin… |")
    assert errors_table([]) == ""


def test_per_class_table_needs_two_classes() -> None:
    report = {
        "metrics": {"per_class": [{"label": "A", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}]}
    }
    assert per_class_table(report) == ""
    assert per_class_table({"metrics": {"per_class": []}}) == ""


def test_csv_preview(tmp_path: Path) -> None:
    path = tmp_path / "errors.csv"
    header = ",".join(f"h{i}" for i in range(8))
    rows = [",".join(f"r{n}c{i}" for i in range(8)) for n in range(1, 8)]
    rows[0] = 'r1c0,"a | b\nc",r1c2,r1c3,r1c4,r1c5,r1c6,r1c7'
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    lines = csv_preview(path).splitlines()
    assert lines[:2] == ["| h0 | h1 | h2 | h3 | h4 | h5 |", "|---|---|---|---|---|---|"]
    assert lines[2] == r"| r1c0 | a \| b c | r1c2 | r1c3 | r1c4 | r1c5 |"
    assert lines[-1] == "| r5c0 | r5c1 | r5c2 | r5c3 | r5c4 | r5c5 |"
    assert len(lines) == 7
    assert csv_preview(str(path), rows=1, columns=2).splitlines() == [
        "| h0 | h1 |",
        "|---|---|",
        r"| r1c0 | a \| b c |",
    ]
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert csv_preview(empty) == ""
    only_header = tmp_path / "header.csv"
    only_header.write_text("a,b\n", encoding="utf-8")
    assert csv_preview(only_header) == "| a | b |\n|---|---|"


# ---------------------------------------------------------------------------------------------- jobs


def _job(**changes: Any) -> JobInfo:
    fields: dict[str, Any] = {
        "run_id": 7,
        "kind": "label",
        "status": "running",
        "model": "gpt-4o-mini",
        "labeler": "llm",
        "prompt_version_id": 1,
        "scope": {"kind": "all"},
        "total": 200,
        "done": 50,
        "failed": 2,
        "failed_by_kind": {},
        "cost_usd": 0.01234,
        "cancel_requested": False,
        "created_at": WHEN,
        "finished_at": None,
    }
    fields.update(changes)
    return JobInfo(**fields)


def test_progress_text_of_a_running_job() -> None:
    assert progress_text(_job(), rate=2.5, running=True) == (
        "**Labeling job 7** (running)\n\n"
        "`█████░░░░░░░░░░░░░░░` 50 / 200 done · 2 failed · 2.5 tasks/s · ETA 59 s · cost $0.0123"
    )


def test_progress_text_without_a_rate_or_a_total() -> None:
    assert progress_text(_job(cost_usd=None), rate=None, running=True) == (
        "**Labeling job 7** (running)\n\n`█████░░░░░░░░░░░░░░░` 50 / 200 done · 2 failed"
    )
    unknown = _job(total=None, done=1234, failed=0, cost_usd=0.0)
    # Without a total there is no bar and no ETA, only the rate.
    assert progress_text(unknown, rate=12.345, running=True) == (
        "**Labeling job 7** (running)\n\n1,234 done · 0 failed · 12.3 tasks/s"
    )
    assert progress_text(unknown, rate=0.0, running=True) == (
        "**Labeling job 7** (running)\n\n1,234 done · 0 failed"
    )


@pytest.mark.parametrize(
    ("total", "rate", "eta"),
    [
        (201, 100.0, "1 s"),  # 1 task left: under a second rounds up to 1 s
        (318, 2.0, "59 s"),
        (320, 2.0, "1 min"),  # 60 s
        (10_200, 10.0, "17 min"),  # 1000 s
        (36_170, 10.0, "1.0 h"),  # 3597 s: not "60 min"
        (100_200, 10.0, "2.8 h"),  # 10000 s
    ],
)
def test_progress_eta_in_seconds_minutes_and_hours(total: int, rate: float, eta: str) -> None:
    info = _job(total=total, done=150, failed=50, cost_usd=None)
    assert progress_text(info, rate=rate, running=True).endswith(f" · ETA {eta}")


def test_progress_text_of_a_finished_job() -> None:
    done = _job(status="finished", done=198, failed=2, cost_usd=1234.5, finished_at=WHEN)
    assert progress_text(done, rate=3.0, running=False) == (
        "**Labeling job 7** (finished)\n\n"
        "`████████████████████` 198 / 200 done · 2 failed · 3.0 tasks/s · cost $1,234.50"
    )
    cancelled = _job(status="cancelled", total=0, done=0, failed=0, cost_usd=None)
    assert progress_text(cancelled, rate=None, running=False) == (
        "**Labeling job 7** (cancelled)\n\n0 / 0 done · 0 failed"
    )


def test_safe_markdown_escapes_directive_colons_outside_code() -> None:
    from ui.web_render import safe_markdown

    text = "run 3 (baseline:minilm-centroid) at 12:30, see http://host:8000/x. Note: `a:b` stays"
    assert safe_markdown(text) == (
        "run 3 (baseline\\:minilm-centroid) at 12:30, see http://host:8000/x. Note: `a:b` stays"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("import this into support-intents please", "support-intents"),
        ("put it in my data", "my data"),
        ("into new-one please", "new-one"),
        ("project=abc", "abc"),
        ("project: xyz now", "xyz"),
        ("", None),
        ("just a file", None),
    ],
)
def test_the_project_named_with_an_upload(text: str, expected: str | None) -> None:
    from ui.web_chat import _project_in

    assert _project_in(text, {"support-intents", "my data"}) == expected
