"""Markdown the web chat shows: notices, tables of metrics and comparisons, upload previews, job progress.

Plain functions of plain data (no Chainlit), so every table is unit-tested; `ui/app.py` sends them.
Cells coming from datasets are escaped (pipes, newlines, markup) so a row can never break a table.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.costs import money
from tools.labelspec import LabelSpec
from tools.projects import ProjectSummary
from tools.settings import Settings

#: Characters of a cell before it is cut with "…".
CELL_CHARS = 80
MAX_CHOICES_SHOWN = 8

_MARKUP = re.compile(r"([\\`*_{}\[\]<>#|!~])")
#: "word:word" (e.g. the model "baseline:minilm-centroid"): the chat's markdown reads ":minilm" as a
#: directive and drops it, so the colon is escaped (URLs, times and "Note: x" are left alone).
_DIRECTIVE = re.compile(r"(?<=\w):(?=[A-Za-z])")
_CODE = re.compile(r"(`+)(.+?)\1", re.S)


def cell(value: Any, width: int = CELL_CHARS) -> str:
    """A value as a safe, one-line markdown table cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = number(value)
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    text = " ".join(text.split())
    if len(text) > width:
        text = text[: width - 1].rstrip() + "…"
    return _DIRECTIVE.sub(r"\\:", _MARKUP.sub(r"\\\1", text))


def safe_markdown(text: str) -> str:
    """Text from a tool or the model, made safe for the chat's markdown (outside code spans)."""
    parts, last = [], 0
    for code in _CODE.finditer(text):
        parts.append(_DIRECTIVE.sub(r"\\:", text[last : code.start()]))
        parts.append(code.group(0))
        last = code.end()
    parts.append(_DIRECTIVE.sub(r"\\:", text[last:]))
    return "".join(parts)


def number(value: float | None, digits: int = 3) -> str:
    """A metric for people: 0.842 (1.000, not 1, so columns line up), a count as 1,234, — when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int) and not isinstance(value, bool) and value != 0:
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.{digits}f}"
    return f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    """0.842 → 84.2%."""
    return "—" if value is None or math.isnan(value) else f"{value:.1%}"


class Markdown(str):
    """A cell rendered already (e.g. a bold name built from escaped parts): `table` keeps it as it is."""


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    """A markdown table; `right` lists the columns aligned right (numbers).

    Every cell is escaped with `cell` except `Markdown` ones: a dataset value that merely starts with
    "**" is escaped like any other, so it cannot break the table.
    """
    head = "| " + " | ".join(cell(h) for h in headers) + " |"
    rule = "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"
    body = ["| " + " | ".join(c if isinstance(c, Markdown) else cell(c) for c in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


# ---------------------------------------------------------------------------------------------- notices


def model_configured(settings: Settings) -> bool:
    """Whether a model endpoint is configured (else the app runs offline)."""
    return settings.openai_api_key is not None or settings.openai_base_url is not None


def model_notice(settings: Settings) -> str:
    """Which model labels, or the offline notice: what a model would add and how to configure one."""
    if model_configured(settings):
        endpoint = settings.openai_base_url or "OpenAI"
        return f"**Model:** `{settings.label_model}` at {endpoint}. Write in your own words, or use `/help`."
    return (
        "**Offline mode: no model is configured.** Everything here works without one: import, labeling "
        "with buttons, the offline baseline (embeddings, $0) for evaluation and bulk labeling, exports, and "
        "every `/command`.\n\n"
        "A model would add: conversation in plain words, LLM labeling of every task type (ratings, "
        "multi-label, spans, free text), prompt versions written from your preferences, and prompt "
        "improvement with a writer model.\n\n"
        "To configure one, stop the app and start it again with `OPENAI_API_KEY=sk-… make run` (OpenAI), or "
        "`OPENAI_BASE_URL=http://host:port/v1` for an OpenAI-compatible server (vLLM, Ollama, llama.cpp, "
        "Azure); `LABELPILOT_MODEL` picks the labeling model. The key is read from the environment only and "
        "is never stored."
    )


def schema_text(label_spec: Mapping[str, Any] | None) -> str:
    """A stored label schema in one line."""
    if label_spec is None:
        return "not set"
    spec = LabelSpec.model_validate(label_spec)
    choices = spec.choices()
    shown = ", ".join(choices[:MAX_CHOICES_SHOWN])
    if len(choices) > MAX_CHOICES_SHOWN:
        shown += f", … (+{len(choices) - MAX_CHOICES_SHOWN})"
    kind = spec.type.value.replace("_", " ")
    return f"{kind}: {shown}" if shown else kind


def projects_table(projects: Sequence[ProjectSummary], current: str | None) -> str:
    """The projects with their size, ground truth and schema."""
    if not projects:
        return (
            "No projects yet: drop a data file (CSV, TSV, JSON, JSONL, Parquet, Excel or a Label Studio "
            "export) into the chat to start one."
        )
    rows = []
    for project in projects:
        name = Markdown(f"**{cell(project.name)}**" + (" ← current" if project.name == current else ""))
        rows.append(
            [
                name,
                f"{project.task_count:,}",
                f"{project.ground_truth_count:,}",
                schema_text(project.label_spec),
            ]
        )
    return table(["project", "tasks", "ground truth", "schema"], rows, right=(1, 2))


# ---------------------------------------------------------------------------------------------- upload


def preview_text(preview: Any, *, project: str, new_project: bool) -> str:
    """The first rows of an uploaded file and the proposed field mapping, to confirm before importing."""
    columns: list[str] = list(preview.columns)
    shown = columns[:8]
    rows = [[row.get(c) for c in shown] for row in preview.rows]
    more = "" if len(columns) <= len(shown) else f" (+{len(columns) - len(shown)} more columns)"
    count = f"{preview.rows_scanned:,}" + ("+" if preview.more_rows else "")
    lines = [
        f"**{cell(Path(preview.path).name)}** · {preview.format.value} · {count} rows · "
        f"{len(columns)} columns{more}",
        "",
        table(shown, rows),
        "",
        "**Proposed mapping**",
        f"- input fields (what is labeled): {', '.join(f'`{f}`' for f in preview.fields) or 'none'}",
        f"- task id: `{preview.id_column}`" if preview.id_column else "- task id: from the content",
    ]
    if preview.label_column:
        values = ", ".join(cell(v, 30) for v in preview.label_values[:12])
        extra = "" if len(preview.label_values) <= 12 else f", … ({len(preview.label_values)} values)"
        sep = f" (several per cell, split at `{preview.label_separator}`)" if preview.label_separator else ""
        lines.append(f"- existing labels → ground truth: `{preview.label_column}`{sep}: {values}{extra}")
    else:
        lines.append("- existing labels: none")
    where = f"a new project **{cell(project)}**" if new_project else f"project **{cell(project)}**"
    lines += [f"- into {where}", *[f"- note: {cell(n, 200)}" for n in preview.notes]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- evaluation


def metrics_table(report: Mapping[str, Any]) -> str:
    """The metrics of an evaluation report (the `evaluate` tool's data artifact)."""
    metrics = report["metrics"]
    values: Mapping[str, Any] = metrics.get("values") or {}
    interval = metrics.get("interval")
    headline = metrics["headline"]
    rows: list[list[Any]] = []
    span = f"{number(interval['low'])} – {number(interval['high'])}" if interval else ""
    rows.append([Markdown(f"**{cell(headline.replace('_', ' '))}**"), number(values.get(headline)), span])
    for key, value in values.items():
        if key == headline or value is None or key in ("n", "answered") or key.startswith("latency"):
            continue
        if key.endswith(("_low", "_high")):
            continue
        rows.append([key.replace("_", " "), number(value), ""])
    usage = report.get("usage") or {}
    cost = usage.get("cost_usd")
    rows.append(["cost", "$0 (offline)" if report["run"]["kind"] == "baseline" else _money_cell(cost), ""])
    rows.append(["items scored", f"{report['scored']:,}", ""])
    run = report["run"]
    title = f"**{cell(run['name'])}** (run {run['run_id']}, {cell(run['model'] or run['kind'])})" + (
        f" on the {run['split']} split" if run.get("split") else ""
    )
    return title + "\n\n" + table(["metric", "value", "95% interval"], rows, right=(1,))


def per_class_table(report: Mapping[str, Any], limit: int = 12) -> str:
    """Per-class precision / recall / F1, the weakest first."""
    classes = sorted(report["metrics"].get("per_class") or [], key=lambda c: (c["f1"], c["label"]))
    if len(classes) < 2:
        return ""
    rows = [
        [c["label"], number(c["precision"]), number(c["recall"]), number(c["f1"]), c["support"]]
        for c in classes[:limit]
    ]
    more = f"\n\n{len(classes) - limit} more classes in the per-class CSV." if len(classes) > limit else ""
    return table(["class", "precision", "recall", "F1", "n"], rows, right=(1, 2, 3, 4)) + more


def leaderboard_table(summaries: Sequence[Any], limit: int = 8) -> str:
    """Evaluations of the project side by side (newest first): the version comparison table."""
    rows = []
    for item in summaries[:limit]:
        span = f"{number(item.low)} – {number(item.high)}" if item.low is not None else ""
        cost = "$0" if item.run.kind == "baseline" else _money_cell(item.cost_usd)
        rows.append(
            [
                item.run.name,
                item.run.run_id,
                item.run.split or "all",
                number(item.value),
                span,
                item.scored,
                percent(item.invalid_rate),
                cost,
            ]
        )
    if not rows:
        return ""
    head = summaries[0].headline.replace("_", " ")
    return table(
        ["version", "run", "split", head, "95% interval", "n", "invalid", "cost"], rows, right=(1, 3, 5, 6, 7)
    )


def errors_table(items: Sequence[Any], *, text_chars: int = 100) -> str:
    """A few wrong predictions: the input, the gold label and what was predicted."""
    rows = []
    for item in items:
        text = " · ".join(str(v) for v in item.data.values())
        # The input is cut (and escaped) here to its own width: `Markdown` keeps `table` from escaping it twice.
        rows.append(
            [item.external_id, Markdown(cell(text, text_chars)), _label(item.gold), _label(item.predicted)]
        )
    return table(["task", "input", "gold", "predicted"], rows) if rows else ""


def comparison_table(data: Mapping[str, Any]) -> str:
    """Two runs side by side: each metric, the difference, and the flips."""
    a, b = data["a"], data["b"]
    values_a: Mapping[str, Any] = data["metrics_a"]["values"]
    values_b: Mapping[str, Any] = data["metrics_b"]["values"]
    rows = []
    for key, delta in data["deltas"].items():
        if delta is None or key.startswith("latency"):
            continue
        sign = "+" if delta >= 0 else ""
        rows.append(
            [
                key.replace("_", " "),
                number(values_a.get(key)),
                number(values_b.get(key)),
                f"{sign}{number(delta)}",
            ]
        )
    test = data["test"]
    verdict = "significant" if test["p_value"] < 0.05 else "not significant"
    head = table(
        ["metric", f"{a['name']} (run {a['run_id']})", f"{b['name']} (run {b['run_id']})", "Δ"],
        rows,
        right=(1, 2, 3),
    )
    return (
        f"{head}\n\n{data['common']:,} common items · {test['method'].replace('_', ' ')} p = "
        f"{test['p_value']:.3g} ({verdict} at 0.05) · right → wrong {data['right_to_wrong']:,}, wrong → right "
        f"{data['wrong_to_right']:,}"
    )


def csv_preview(path: str | Path, rows: int = 5, columns: int = 6) -> str:
    """The first rows of a CSV artifact as a table (the file itself is attached for the rest)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            return ""
        body = [row[:columns] for _, row in zip(range(rows), reader, strict=False)]
    return table(header[:columns], body)


def _money_cell(value: float | None) -> str:
    return money(value, unknown="—")


def _label(value: Any) -> str:
    if value is None:
        return "(no answer)"
    if isinstance(value, list):
        return ", ".join(str(v.get("label", v)) if isinstance(v, dict) else str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------------------------- jobs


def progress_text(info: Any, *, rate: float | None, running: bool) -> str:
    """A job's progress line: done / total, failed, rate and ETA (the live message of a bulk job)."""
    total = info.total
    done = info.done
    failed = info.failed
    bar = ""
    if total:
        filled = int(20 * min(1.0, (done + failed) / total))
        bar = "`" + "█" * filled + "░" * (20 - filled) + "` "
    parts = [f"{done:,} / {total:,} done" if total is not None else f"{done:,} done", f"{failed:,} failed"]
    if rate:
        parts.append(f"{rate:,.1f} tasks/s")
        if total and running:
            left = max(0, total - done - failed)
            parts.append(f"ETA {_eta(left / rate)}")
    if info.cost_usd:
        parts.append(f"cost {_money_cell(info.cost_usd)}")
    state = "running" if running else info.status
    return f"**Labeling job {info.run_id}** ({state})\n\n{bar}" + " · ".join(parts)


def _eta(seconds: float) -> str:
    if round(seconds) < 60:
        return f"{max(1, round(seconds))} s"
    if round(seconds / 60) < 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def estimate_lines(interrupt: Mapping[str, Any]) -> str:
    """The question of a confirmation and the estimate behind it, for the confirmation message."""
    estimate: Mapping[str, Any] = interrupt.get("estimate") or {}
    lines = [f"**Please confirm:** {interrupt.get('question', 'go ahead?')}"]
    notes = estimate.get("notes") or []
    lines += [f"- {cell(note, 200)}" for note in notes[:5]]
    return "\n".join(lines)
