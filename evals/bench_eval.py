"""Does `labelpilot eval` report the accuracy one computes by hand? `python -m evals.bench_eval`.

An evaluation goes through many layers — import, splits in `Task.meta`, the labeling engine (windows,
de-duplication, commits), stored predictions, scoring against the current ground truth — and a bug in any
of them shows up as a plausible but wrong number. This benchmark checks the number end to end on real data:
for each dataset (default trec, banking77 and sst2 from `../shared/datasets`, read with the loaders of
`evals.bench_baseline`), in a fresh temporary data folder it

1. imports `--per-class` seeded training examples per class and `--limit` seeded test items as one JSONL
   file (field `text`, ground truth in `label`, `split` = train/test as task meta), the way a user would;
2. evaluates the offline baseline (`BaselineLabeler`, learning from the train split only, as
   `labelpilot eval --baseline --split test` does) on the test split with `evals.evaluate.evaluate`;
3. recomputes the accuracy twice, without labelpilot's metric code: (a) from the run's predictions exported
   to CSV (`prediction` vs `label` cells, plain `csv`), (b) by labeling the same test texts directly with
   `BaselineClassifier` (strategy auto, as `evals.bench_baseline` does) and averaging with numpy.

It prints one line per dataset: classes, train examples, test items, the eval accuracy with its 95%
interval, both recomputed accuracies, `match` (all three equal within 1e-9), the eval's macro F1, how many
test items got a different label from the eval run than from the classifier directly (`differ`), and the
seconds taken. One embedder is shared by all datasets (`--embedder`, default MiniLM). Exit status 0 when
every dataset matches, 1 otherwise; when the datasets folder is absent it prints why it skipped and exits 0.

    python -m evals.bench_eval [--datasets trec,banking77,sst2] [--per-class 16] [--limit 500] [--seed 0]
                               [--datasets-dir PATH] [--embedder minilm|hashing] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import select

from evals import bench_baseline
from evals.bench_baseline import (
    DEFAULT_DATASETS,
    LOADERS,
    Dataset,
    Item,
    Method,
    sample_examples,
    sample_test,
)
from evals.evaluate import evaluate
from tools.baseline import BaselineLabeler, BaselineStrategy, LabeledExample
from tools.embeddings import Embedder, embedder_names, get_embedder
from tools.errors import LabelpilotError
from tools.exporters import ExportFormat, export_project
from tools.importers import import_file
from tools.labelspec import LabelSpec
from tools.projects import create_project, get_project
from tools.settings import Settings
from tools.splits import Split, split_task_ids
from tools.storage import Database, Task

DEFAULT_BENCH_DATASETS = ("trec", "banking77", "sst2")
#: Largest difference between the three accuracies that still counts as equal.
TOLERANCE = 1e-9
#: The `labelpilot` CLI reads its data folder from this variable.
HOME_VARIABLE = "LABELPILOT_HOME"


@dataclass(frozen=True)
class BenchRow:
    """One dataset's result: the eval's figures next to the two independent recomputations."""

    dataset: str
    classes: int
    train_examples: int
    test_items: int
    #: The labeler as the run names it, e.g. baseline:minilm-centroid.
    model: str
    run_id: int
    scored: int
    eval_accuracy: float | None
    eval_low: float | None
    eval_high: float | None
    export_accuracy: float
    direct_accuracy: float
    macro_f1: float | None
    #: Test items whose exported prediction differs from the classifier's direct answer.
    differ: int
    match: bool
    seconds: float


@contextmanager
def temporary_home() -> Iterator[Path]:
    """Yield a fresh data folder, with LABELPILOT_HOME pointing at it in this process until the end."""
    previous = os.environ.get(HOME_VARIABLE)
    with tempfile.TemporaryDirectory(prefix="labelpilot-bench-eval-") as folder:
        home = Path(folder) / "home"
        os.environ[HOME_VARIABLE] = str(home)
        try:
            yield home
        finally:
            if previous is None:
                os.environ.pop(HOME_VARIABLE, None)
            else:
                os.environ[HOME_VARIABLE] = previous


def _write_jsonl(path: Path, examples: Sequence[LabeledExample], test: Sequence[Item]) -> None:
    """Write the examples (split train) then the test items (split test) as one import file."""
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            row = {"id": example.key, "text": example.data["text"], "label": example.value, "split": "train"}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        for j, (text, label) in enumerate(test):
            row = {"id": f"test-{j}", "text": text, "label": label, "split": "test"}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _task_ids(db: Database, project_name: str) -> dict[str, int]:
    """Return {external id: task id} of a project."""
    with db.session() as session:
        project_id = get_project(session, project_name).id
        rows = session.execute(select(Task.external_id, Task.id).where(Task.project_id == project_id))
        return {external_id: task_id for external_id, task_id in rows}


def _export_predictions(
    db: Database, project_name: str, run_id: int, path: Path
) -> dict[str, tuple[str, str]]:
    """Export the run to CSV and return {external id: (gold, predicted)} of its test rows, read as text."""
    export_project(
        db,
        project_name,
        fmt=ExportFormat.csv,
        exports_dir=path.parent,
        output=path,
        run_id=run_id,
        csv_safe=False,
    )
    with path.open(newline="", encoding="utf-8") as handle:
        return {
            row["id"]: (row["label"], row["prediction"])
            for row in csv.DictReader(handle)
            if row["split"] == "test"
        }


def bench_dataset(dataset: Dataset, *, per_class: int, limit: int, seed: int, embedder: Embedder) -> BenchRow:
    """Evaluate the baseline on one dataset through labelpilot and recompute its accuracy twice."""
    started = time.perf_counter()
    examples = sample_examples(dataset, per_class, seed=seed)
    test = sample_test(dataset, limit, seed=seed)
    spec = LabelSpec.from_classes(dataset.classes, input_fields=["text"])
    name = dataset.name
    with temporary_home() as home:
        # Settings built from the folder alone: a LABELPILOT_DATABASE_URL of the caller is never touched.
        settings = Settings(home=home)
        db = Database.open(settings)
        try:
            create_project(db, name, spec=spec)
            data_file = home / f"{name}.jsonl"
            _write_jsonl(data_file, examples, test)
            imported = import_file(db, name, data_file, fields=["text"], id_column="id", label_column="label")
            if imported.tasks_added != len(examples) + len(test):
                raise LabelpilotError(
                    f"{name}: {imported.tasks_added} tasks imported, expected {len(examples) + len(test)}"
                )
            ids = _task_ids(db, name)
            train = {ids[example.key]: example.value for example in examples}
            if set(split_task_ids(db, name, Split.train)) != set(train):
                raise LabelpilotError(f"{name}: the train split is not the imported examples")
            labeler = BaselineLabeler(db, name, examples=train, embedder=embedder)
            report = asyncio.run(evaluate(db, name, labeler, split=Split.test.value))
            exported = _export_predictions(db, name, report.run.run_id, settings.exports_dir / f"{name}.csv")
        finally:
            db.dispose()
    export_accuracy = sum(gold == predicted for gold, predicted in exported.values()) / len(test)
    method = Method(f"{embedder.name}-auto", embedder.name, BaselineStrategy.auto)
    direct = bench_baseline.evaluate(dataset, examples, test, method, embedder)
    direct_predictions = [value for value, _, _ in direct["predictions"]]
    differ = sum(
        exported.get(f"test-{j}", ("", ""))[1] != (value if value is not None else "")
        for j, value in enumerate(direct_predictions)
    )
    accuracy = report.metrics.values.get("accuracy")
    direct_accuracy = float(direct["accuracy"])
    match = accuracy is not None and all(
        abs(accuracy - other) <= TOLERANCE for other in (export_accuracy, direct_accuracy)
    )
    interval = report.metrics.interval
    return BenchRow(
        dataset=name,
        classes=len(dataset.classes),
        train_examples=len(examples),
        test_items=len(test),
        model=labeler.info.model,
        run_id=report.run.run_id,
        scored=report.scored,
        eval_accuracy=accuracy,
        eval_low=interval.low if interval else None,
        eval_high=interval.high if interval else None,
        export_accuracy=export_accuracy,
        direct_accuracy=direct_accuracy,
        macro_f1=report.metrics.values.get("macro_f1"),
        differ=differ,
        match=match,
        seconds=round(time.perf_counter() - started, 2),
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def format_table(rows: Sequence[BenchRow]) -> str:
    """Return the result table: one line per dataset."""
    header = (
        f"{'dataset':<10} {'classes':>7} {'train':>6} {'test':>5}  {'eval accuracy (95% CI)':<26} "
        f"{'export':>7} {'direct':>7} {'match':>5} {'macro F1':>8} {'differ':>6} {'seconds':>7}"
    )
    lines = [header]
    for row in rows:
        interval = f"[{_percent(row.eval_low)}, {_percent(row.eval_high)}]"
        lines.append(
            f"{row.dataset:<10} {row.classes:>7} {row.train_examples:>6} {row.test_items:>5}  "
            f"{_percent(row.eval_accuracy):>7} {interval:<18} {_percent(row.export_accuracy):>7} "
            f"{_percent(row.direct_accuracy):>7} {'yes' if row.match else 'NO':>5} "
            f"{_percent(row.macro_f1):>8} {row.differ:>6} {row.seconds:>7.1f}"
        )
    return "\n".join(lines)


def _dataset_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in LOADERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown dataset(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(LOADERS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table (or JSON); 0 when every dataset matches, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--datasets",
        type=_dataset_names,
        default=list(DEFAULT_BENCH_DATASETS),
        help=f"comma-separated, of {', '.join(LOADERS)} (default: {','.join(DEFAULT_BENCH_DATASETS)})",
    )
    parser.add_argument("--per-class", type=int, default=16, help="training examples per class")
    parser.add_argument("--limit", type=int, default=500, help="test items per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets-dir", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--embedder", choices=embedder_names(), default="minilm")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args(argv)

    absent = [name for name in args.datasets if not (args.datasets_dir / name).is_dir()]
    if absent:
        print(
            f"skipped: {', '.join(absent)} not found under {args.datasets_dir} (the shared datasets are absent)"
        )
        return 0
    rows: list[BenchRow] = []
    try:
        embedder = get_embedder(args.embedder)
        for name in args.datasets:
            dataset = LOADERS[name](args.datasets_dir / name, args.seed)
            row = bench_dataset(
                dataset, per_class=args.per_class, limit=args.limit, seed=args.seed, embedder=embedder
            )
            print(f"# {name}: {'match' if row.match else 'MISMATCH'}, {row.seconds:.1f} s", file=sys.stderr)
            rows.append(row)
    except LabelpilotError as exc:
        print(f"error: {exc.user_message()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(format_table(rows))
    return 0 if all(row.match for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
