"""Demo projects to try labelpilot with: built from ../shared/datasets when present, else shipped samples.

Two projects, each a case the product is made for:

- `reader-preference`: "which of these 3 summaries is best for our reader" (article + 3 summaries, one
  single-choice label). From `news_summary_best_of_3` (Goyal et al. 2022): 100 CNN + 100 BBC articles with
  the summaries of three systems (gpt3, brio, t0) in an order shuffled per article (kept in `systems`);
  ground truth is the annotators' majority "best" vote, and ties stay unlabeled.
- `support-intents`: customer-support intent classification, a case where the offline embedding baseline
  does well. From `banking77`: 12 well-separated intents x 25 messages, 5 per intent labeled.

Without the shared datasets the projects are built from the small samples in `tools/demo_data/`, which were
written for labelpilot (no dataset text is shipped). Every import goes through `import_file` (dataset rows
are written to a temporary JSONL file in the data folder first, and deleted afterwards).

Setting up is idempotent: a demo project that already has tasks is left as it is (so labels a person changed
are never overwritten), and a project whose earlier setup stopped half-way is completed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tools.errors import InputFileError
from tools.importers import ImportFormat, import_file
from tools.labelspec import LabelClass, LabelSpec
from tools.projects import create_project, list_projects, project_summary, set_label_spec
from tools.settings import Settings
from tools.storage import Database

SHARED_DIR_ENV = "LABELPILOT_SHARED_DIR"
DEMO_DATA_DIR = Path(__file__).with_name("demo_data")

READER_PREFERENCE = "reader-preference"
SUPPORT_INTENTS = "support-intents"

#: Order in which the dataset's systems become Summary 1, 2, 3 (fixed, so ids and labels are stable).
SUMMARY_SYSTEMS = ("gpt3", "brio", "t0")
SUMMARY_FIELDS = ("summary_1", "summary_2", "summary_3")
NEWS_FILES = (("bbc", "bbc_human.json"), ("cnn", "cnn_human.json"))

#: Banking77 intents of the demo: distinct enough for a nearest-neighbour baseline, each with a description.
BANKING_INTENTS: dict[str, str] = {
    "card_arrival": "The customer is waiting for a card that was ordered and has not arrived yet.",
    "lost_or_stolen_card": "The customer's card was lost or stolen and needs to be blocked or replaced.",
    "exchange_rate": "A question about the exchange rate applied when converting between currencies.",
    "age_limit": "A question about the minimum age to open or use an account.",
    "change_pin": "The customer wants to change the PIN of their card.",
    "request_refund": "The customer wants a refund for a purchase, or asks how refunds work.",
    "terminate_account": "The customer wants to close or delete their account.",
    "top_up_limits": "A question about the limits (minimum, maximum, frequency) of topping up the account.",
    "cancel_transfer": "The customer wants to cancel or reverse a transfer they made.",
    "apple_pay_or_google_pay": "A question about using the card with Apple Pay or Google Pay.",
    "card_swallowed": "An ATM kept (swallowed) the customer's card.",
    "edit_personal_details": "The customer wants to change personal details such as name or address.",
}
BANKING_PER_INTENT = 25
BANKING_LABELED_PER_INTENT = 5
BANKING_SEED = 77

SHIPPED_INTENTS: dict[str, str] = {
    "card_lost": "The customer's card was lost or stolen and should be blocked or replaced.",
    "refund_request": "The customer wants money back for an order, return or charge.",
    "delivery_status": "The customer asks where an order or parcel is, or when it will arrive.",
    "change_address": "The customer wants to change a delivery, billing or postal address.",
    "account_login": "The customer cannot sign in: passwords, locked accounts, verification codes.",
}

SUMMARY_CLASSES = [
    LabelClass(name="Summary 1", description="The first summary (summary_1) serves our reader best."),
    LabelClass(name="Summary 2", description="The second summary (summary_2) serves our reader best."),
    LabelClass(name="Summary 3", description="The third summary (summary_3) serves our reader best."),
]
SUMMARY_SPEC = LabelSpec.from_classes(SUMMARY_CLASSES, input_fields=["article", *SUMMARY_FIELDS])
#: Dataset system -> the class naming its position.
_SOURCE_NOTE = re.compile(r"\(source: (?P<source>.*)\)\s*$")


class DemoProject(BaseModel):
    """One demo project after setup: its size, ground truth, where its data came from, and if it is new."""

    name: str
    tasks: int
    ground_truth: int
    source: str
    created: bool


@dataclass(frozen=True)
class _DemoData:
    """Rows ready to import (JSONL records), the schema they are labeled with, and where they came from."""

    source: str
    spec: LabelSpec
    records: list[dict[str, Any]]
    fields: list[str]
    label_column: str


@dataclass(frozen=True)
class _DemoDefinition:
    name: str
    description: str
    #: Builds the rows from the shared folder (None when its dataset is not there).
    from_shared: Callable[[Path], _DemoData | None]
    #: Builds the rows from the shipped sample.
    shipped: Callable[[], _DemoData]


def default_shared_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Return $LABELPILOT_SHARED_DIR, else the `shared/` folder next to the repository, if it exists."""
    env = os.environ if env is None else env
    configured = env.get(SHARED_DIR_ENV)
    candidate = (
        Path(configured).expanduser() if configured else Path(__file__).resolve().parents[1].parent / "shared"
    )
    return candidate if candidate.is_dir() else None


def setup_demo(db: Database, settings: Settings, *, shared_dir: Path | None) -> list[DemoProject]:
    """Create the demo projects (from `shared_dir/datasets` when present, else the shipped samples)."""
    existing = {summary.name: summary for summary in list_projects(db)}
    results: list[DemoProject] = []
    for definition in DEMOS:
        current = existing.get(definition.name)
        if current is not None and current.task_count > 0:
            match = _SOURCE_NOTE.search(current.description)
            results.append(
                DemoProject(
                    name=current.name,
                    tasks=current.task_count,
                    ground_truth=current.ground_truth_count,
                    source=match.group("source") if match else "existing project",
                    created=False,
                )
            )
            continue
        data = definition.from_shared(shared_dir) if shared_dir is not None else None
        if data is None:
            data = definition.shipped()
        if current is None:
            create_project(
                db, definition.name, description=f"{definition.description} (source: {data.source})"
            )
        if current is None or current.label_spec is None:
            set_label_spec(db, definition.name, data.spec)
        _import_records(db, settings, definition.name, data)
        summary = project_summary(db, definition.name)
        results.append(
            DemoProject(
                name=summary.name,
                tasks=summary.task_count,
                ground_truth=summary.ground_truth_count,
                source=data.source,
                created=True,
            )
        )
    return results


def _import_records(db: Database, settings: Settings, project: str, data: _DemoData) -> None:
    with tempfile.TemporaryDirectory(prefix="demo-", dir=settings.ensure_home()) as folder:
        path = Path(folder) / f"{project}.jsonl"
        _write_jsonl(path, data.records)
        import_file(
            db,
            project,
            path,
            fmt=ImportFormat.jsonl,
            fields=data.fields,
            id_column="id",
            label_column=data.label_column,
            author="demo",
        )


def _write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ---------------------------------------------------------------- reader-preference


def majority_best(annotators: Iterable[Mapping[str, Any]]) -> str | None:
    """Return the system most annotators chose as best, or None on a tie (a vote may name two systems)."""
    votes: Counter[str] = Counter()
    for annotator in annotators:
        votes.update(set(annotator.get("best_summary") or []))
    ranked = votes.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _news_records(folder: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for outlet, filename in NEWS_FILES:
        path = folder / filename
        try:
            articles = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFileError(f"cannot read the dataset: {exc}", path=path) from exc
        for key, item in sorted(articles.items(), key=lambda pair: int(pair[0])):
            best = majority_best(item["annotators"])
            record: dict[str, Any] = {"id": f"{outlet}-{key}", "article": item["article"]}
            # Which system's summary sits in which slot is shuffled per article (deterministically), so
            # "always Summary 1" cannot score well just because one system tends to win.
            order = sorted(
                SUMMARY_SYSTEMS,
                key=lambda system: hashlib.sha256(f"{outlet}-{key}-{system}".encode()).hexdigest(),
            )
            for field, system in zip(SUMMARY_FIELDS, order, strict=True):
                record[field] = item[system]["text"]
            record["systems"] = ",".join(order)
            record["outlet"] = outlet
            slot = {system: label.name for system, label in zip(order, SUMMARY_CLASSES, strict=True)}
            record["best"] = slot[best] if best else None
            records.append(record)
    return records


def _reader_preference_shared(shared_dir: Path) -> _DemoData | None:
    folder = shared_dir / "datasets" / "news_summary_best_of_3"
    if not folder.is_dir():
        return None
    return _DemoData(
        source="news_summary_best_of_3 (CNN + BBC, majority of 3 annotators)",
        spec=SUMMARY_SPEC,
        records=_news_records(folder),
        fields=["article", *SUMMARY_FIELDS],
        label_column="best",
    )


def _reader_preference_shipped() -> _DemoData:
    return _DemoData(
        source="shipped sample",
        spec=SUMMARY_SPEC,
        records=_read_jsonl(DEMO_DATA_DIR / "reader_preference.jsonl"),
        fields=["article", *SUMMARY_FIELDS],
        label_column="best",
    )


# ---------------------------------------------------------------- support-intents


def _banking_records(folder: Path) -> list[dict[str, Any]]:
    path = folder / "train.csv"
    by_intent: dict[str, list[tuple[int, str]]] = {intent: [] for intent in BANKING_INTENTS}
    seen: set[str] = set()
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            # Line 1 is the header; quoted texts never span lines in this file.
            for line, row in enumerate(csv.DictReader(handle), start=2):
                text = row["text"].strip()
                if row["category"] in by_intent and text not in seen:
                    seen.add(text)
                    by_intent[row["category"]].append((line, text))
    except (OSError, KeyError, csv.Error) as exc:
        raise InputFileError(f"cannot read the dataset: {exc}", path=path) from exc
    records: list[dict[str, Any]] = []
    for intent, rows in by_intent.items():
        chosen = random.Random(f"{BANKING_SEED}-{intent}").sample(rows, min(BANKING_PER_INTENT, len(rows)))
        for position, (line, text) in enumerate(chosen):
            labeled = position < BANKING_LABELED_PER_INTENT
            records.append(
                {"id": f"banking77-train-{line}", "text": text, "label": intent if labeled else None}
            )
    # File order interleaves nothing (the CSV is grouped by intent); a seeded shuffle does, stably.
    random.Random(BANKING_SEED).shuffle(records)
    return records


def _support_intents_shared(shared_dir: Path) -> _DemoData | None:
    folder = shared_dir / "datasets" / "banking77"
    if not (folder / "train.csv").is_file():
        return None
    return _DemoData(
        source=f"banking77 ({len(BANKING_INTENTS)} intents x {BANKING_PER_INTENT} messages)",
        spec=_intent_spec(BANKING_INTENTS),
        records=_banking_records(folder),
        fields=["text"],
        label_column="label",
    )


def _support_intents_shipped() -> _DemoData:
    return _DemoData(
        source="shipped sample",
        spec=_intent_spec(SHIPPED_INTENTS),
        records=_read_jsonl(DEMO_DATA_DIR / "support_intents.jsonl"),
        fields=["text"],
        label_column="label",
    )


def _intent_spec(intents: Mapping[str, str]) -> LabelSpec:
    return LabelSpec.from_classes(list(intents.items()), input_fields=["text"])


# ---------------------------------------------------------------- registry

DEMOS: tuple[_DemoDefinition, ...] = (
    _DemoDefinition(
        name=READER_PREFERENCE,
        description="Demo: which of these 3 summaries of a news article is best for our reader?",
        from_shared=_reader_preference_shared,
        shipped=_reader_preference_shipped,
    ),
    _DemoDefinition(
        name=SUPPORT_INTENTS,
        description="Demo: the intent of a customer-support message.",
        from_shared=_support_intents_shared,
        shipped=_support_intents_shipped,
    ),
)
