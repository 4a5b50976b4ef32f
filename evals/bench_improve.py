"""Does tuning the baseline's few-shot policy beat 1-NN on held-out items? `python -m evals.bench_improve`.

For each dataset (default trec, banking77, sst2 and ag_news from `../shared/datasets`, read with the loaders
of `evals.bench_baseline`), in a fresh temporary data folder it

1. imports one JSONL file the way a user would (field `text`, ground truth in `label`, `split` as task
   meta): `--per-class` seeded training examples per class (split train), a seeded stratified sample of
   other training items (split dev: at least `--dev` items and at least 10 per class) and `--limit` seeded
   test items (split test);
2. runs `evals.tune_baseline.tune_baseline`: every candidate policy learns from train and is scored on dev;
   1-NN (before) and the chosen policy (after) learn from train and are evaluated on test as stored runs,
   with a paired test (McNemar) between them.

It prints one line per dataset: classes, split sizes, the chosen policy, the dev accuracy of 1-NN and of
the chosen policy, the TEST accuracy of 1-NN and of the chosen policy with 95% intervals, their difference
in points, the paired test's p-value and the seconds taken. The choice never sees the test items, so the
test columns are an honest held-out comparison. One embedder is shared by all datasets (`--embedder`,
default MiniLM). Exit status 0 (1 on an error); when the datasets folder is absent it says so and exits 0.

    python -m evals.bench_improve [--datasets trec,banking77,sst2,ag_news] [--per-class 16] [--dev 200]
                                  [--limit 500] [--seed 0] [--datasets-dir PATH] [--embedder minilm|hashing]
                                  [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from evals.bench_baseline import DEFAULT_DATASETS, LOADERS, Dataset, Item, sample_examples, sample_test
from evals.bench_eval import _dataset_names, _write_jsonl, temporary_home
from evals.evaluate import EvalReport
from evals.tune_baseline import ONE_NN, BaselineConfig, tune_baseline
from tools.baseline import LabeledExample
from tools.embeddings import Embedder, embedder_names, get_embedder
from tools.errors import LabelpilotError
from tools.importers import import_file
from tools.labelspec import LabelSpec
from tools.projects import create_project
from tools.settings import Settings
from tools.storage import Database

DEFAULT_BENCH_DATASETS = ("trec", "banking77", "sst2", "ag_news")
#: Dev items per dataset (at least) and per class (at least).
DEFAULT_DEV = 200
DEV_MIN_PER_CLASS = 10


@dataclass(frozen=True)
class BenchRow:
    """One dataset's result: the chosen policy, dev scores, and 1-NN vs the chosen policy on test."""

    dataset: str
    classes: int
    train: int
    dev: int
    test: int
    policy: str
    candidates: int
    dev_1nn: float | None
    dev_best: float | None
    test_1nn: float | None
    test_1nn_low: float | None
    test_1nn_high: float | None
    test_best: float | None
    test_best_low: float | None
    test_best_high: float | None
    #: Test accuracy of the chosen policy minus that of 1-NN.
    delta: float | None
    #: Exact McNemar test of the two test runs (None when 1-NN was chosen: one run).
    p_value: float | None
    version: int | None
    seconds: float


def sample_dev(dataset: Dataset, examples: Sequence[LabeledExample], size: int, *, seed: int) -> list[Item]:
    """Return a seeded stratified sample of training items that are not examples: at least `size` in all
    and `DEV_MIN_PER_CLASS` per class (fewer where a class has fewer left)."""
    used = {example.key for example in examples}
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(dataset.train):
        if f"train-{i}" not in used:
            by_class[label].append(i)
    per_class = max(DEV_MIN_PER_CLASS, math.ceil(size / max(len(dataset.classes), 1)))
    dev: list[Item] = []
    for label_class in dataset.classes:
        indices = by_class[label_class.name]
        random.Random(f"{dataset.name}-dev-{label_class.name}-{seed}").shuffle(indices)
        dev.extend(dataset.train[i] for i in indices[:per_class])
    return dev


def _append_dev(path: Path, dev: Sequence[Item]) -> None:
    """Add the dev items (split dev) to an import file written by `bench_eval._write_jsonl`."""
    with path.open("a", encoding="utf-8") as handle:
        for j, (text, label) in enumerate(dev):
            row = {"id": f"dev-{j}", "text": text, "label": label, "split": "dev"}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _accuracy(report: EvalReport | None) -> tuple[float | None, float | None, float | None]:
    if report is None:
        return None, None, None
    interval = report.metrics.interval
    low, high = (interval.low, interval.high) if interval else (None, None)
    return report.metrics.values.get("accuracy"), low, high


def bench_dataset(
    dataset: Dataset, *, per_class: int, dev_size: int, limit: int, seed: int, embedder: Embedder
) -> BenchRow:
    """Import one dataset with train/dev/test splits into a temporary project and tune its baseline."""
    started = time.perf_counter()
    examples = sample_examples(dataset, per_class, seed=seed)
    dev = sample_dev(dataset, examples, dev_size, seed=seed)
    test = sample_test(dataset, limit, seed=seed)
    spec = LabelSpec.from_classes(dataset.classes, input_fields=["text"])
    name = dataset.name
    with temporary_home() as home:
        # Settings built from the folder alone: a LABELPILOT_DATABASE_URL of the caller is never touched.
        db = Database.open(Settings(home=home))
        try:
            create_project(db, name, spec=spec)
            data_file = home / f"{name}.jsonl"
            _write_jsonl(data_file, examples, test)
            _append_dev(data_file, dev)
            expected = len(examples) + len(dev) + len(test)
            imported = import_file(db, name, data_file, fields=["text"], id_column="id", label_column="label")
            if imported.tasks_added != expected:
                raise LabelpilotError(f"{name}: {imported.tasks_added} tasks imported, expected {expected}")
            tuning = asyncio.run(tune_baseline(db, name, seed=seed, embedder=embedder))
        finally:
            db.dispose()
    best = BaselineConfig.model_validate(tuning.best)
    dev_values = {BaselineConfig.model_validate(e["config"]): e["value"] for e in tuning.dev_scores}
    test_1nn, low_1nn, high_1nn = _accuracy(tuning.before)
    test_best, low_best, high_best = _accuracy(tuning.after)
    comparison = tuning.comparison
    return BenchRow(
        dataset=name,
        classes=len(dataset.classes),
        train=tuning.train_items,
        dev=tuning.dev_items,
        test=tuning.test_items,
        policy=best.summary(),
        candidates=len(tuning.dev_scores),
        dev_1nn=dev_values[ONE_NN],
        dev_best=dev_values[best],
        test_1nn=test_1nn,
        test_1nn_low=low_1nn,
        test_1nn_high=high_1nn,
        test_best=test_best,
        test_best_low=low_best,
        test_best_high=high_best,
        delta=None if test_best is None or test_1nn is None else test_best - test_1nn,
        p_value=comparison.test.p_value if comparison is not None else None,
        version=tuning.version.number if tuning.version is not None else None,
        seconds=round(time.perf_counter() - started, 2),
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _with_interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    return f"{_percent(value)} [{100 * (low or 0):.1f}-{100 * (high or 0):.1f}]"


def format_table(rows: Sequence[BenchRow]) -> str:
    """Return the result table: one line per dataset."""
    header = (
        f"{'dataset':<10} {'train':>5} {'dev':>4} {'test':>4}  {'chosen policy':<26} {'dev 1-NN':>8} "
        f"{'dev best':>8}  {'TEST 1-NN (95% CI)':<21} {'TEST tuned (95% CI)':<21} {'delta':>6} "
        f"{'p':>8} {'seconds':>7}"
    )
    lines = [header]
    for row in rows:
        delta = "-" if row.delta is None else f"{100 * row.delta:+.1f}"
        p_value = "-" if row.p_value is None else f"{row.p_value:.2g}"
        lines.append(
            f"{row.dataset:<10} {row.train:>5} {row.dev:>4} {row.test:>4}  {row.policy:<26} "
            f"{_percent(row.dev_1nn):>8} {_percent(row.dev_best):>8}  "
            f"{_with_interval(row.test_1nn, row.test_1nn_low, row.test_1nn_high):<21} "
            f"{_with_interval(row.test_best, row.test_best_low, row.test_best_high):<21} "
            f"{delta:>6} {p_value:>8} {row.seconds:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (or JSON); 0 unless an error stopped it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--datasets",
        type=_dataset_names,
        default=list(DEFAULT_BENCH_DATASETS),
        help=f"comma-separated, of {', '.join(LOADERS)} (default: {','.join(DEFAULT_BENCH_DATASETS)})",
    )
    parser.add_argument("--per-class", type=int, default=16, help="training examples per class")
    parser.add_argument(
        "--dev", type=int, default=DEFAULT_DEV, help=f"dev items (at least {DEV_MIN_PER_CLASS} per class)"
    )
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
                dataset,
                per_class=args.per_class,
                dev_size=args.dev,
                limit=args.limit,
                seed=args.seed,
                embedder=embedder,
            )
            print(f"# {name}: {row.policy}, {row.seconds:.1f} s", file=sys.stderr)
            rows.append(row)
    except LabelpilotError as exc:
        print(f"error: {exc.user_message()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
