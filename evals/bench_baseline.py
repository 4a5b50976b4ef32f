"""Accuracy of the offline baseline on four public datasets: `python -m evals.bench_baseline`.

For banking77 (77 intents), ag_news (4 topics), trec (6 coarse question types) and sst2 (2 sentiments) from
`../shared/datasets` (relative to the repository root): sample `k` labeled examples per class from the
training split (seeded; the smaller sets are prefixes of the larger ones), label up to `--limit` test items
(a seeded sample) with `BaselineClassifier`, and print the accuracy of MiniLM centroid, MiniLM 1-NN and
MiniLM auto, of the hashing-embedder centroid as the no-model baseline of the same run, and of MiniLM
zero-shot (k = 0: class names and the short descriptions below, as a user would type them). ag_news ships
only its test file: it is split in two halves by a seeded shuffle (examples from one, test items from the
other). Skips with a message when the datasets are absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.baseline import BaselineClassifier, BaselineStrategy, LabeledExample
from tools.embeddings import Embedder, FloatMatrix, HashingEmbedder, MiniLMEmbedder
from tools.labelspec import LabelClass, LabelSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO_ROOT.parent / "shared" / "datasets"

Item = tuple[str, str]  # (text, label)


@dataclass(frozen=True)
class Dataset:
    """A labeled text dataset split into an example pool and test items."""

    name: str
    classes: list[LabelClass]
    train: list[Item]
    test: list[Item]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_banking77(folder: Path, seed: int) -> Dataset:
    """banking77: train.csv / test.csv with columns text, category; class names only."""
    names = json.loads((folder / "categories.json").read_text(encoding="utf-8"))
    train, test = (
        [(row["text"], row["category"]) for row in _read_csv(folder / f"{split}.csv")]
        for split in ("train", "test")
    )
    return Dataset("banking77", [LabelClass(name=n) for n in names], train, test)


AG_NEWS_CLASSES = {
    "1": ("World", "world news and politics"),
    "2": ("Sports", "sports news"),
    "3": ("Business", "business and economy news"),
    "4": ("Science/Tech", "science and technology news"),
}


def load_ag_news(folder: Path, seed: int) -> Dataset:
    """ag_news: test.csv only (Class Index, Title, Description), split in halves by a seeded shuffle."""
    items = [
        (f"{row['Title']}\n{row['Description']}", AG_NEWS_CLASSES[row["Class Index"]][0])
        for row in _read_csv(folder / "test.csv")
    ]
    random.Random(f"ag_news-split-{seed}").shuffle(items)
    half = len(items) // 2
    classes = [LabelClass(name=n, description=d) for n, d in AG_NEWS_CLASSES.values()]
    return Dataset("ag_news", classes, items[:half], items[half:])


TREC_CLASSES = {
    "ABBR": "abbreviation: what an abbreviation stands for",
    "DESC": "description: a definition, manner or reason",
    "ENTY": "entity: a thing, animal, product, event or other object",
    "HUM": "human: a person or group of people",
    "LOC": "location: a place, city, country or address",
    "NUM": "numeric: a number, date, count, amount or distance",
}


def _read_trec(path: Path) -> list[Item]:
    # `<COARSE>:<fine> <question>`: the coarse label is the part before ':'.
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            items.append((text.strip(), label.split(":", 1)[0]))
    return items


def load_trec(folder: Path, seed: int) -> Dataset:
    """trec: train.txt / test.txt, 6 coarse question types."""
    classes = [LabelClass(name=n, description=d) for n, d in TREC_CLASSES.items()]
    return Dataset("trec", classes, _read_trec(folder / "train.txt"), _read_trec(folder / "test.txt"))


SST2_CLASSES = {"0": ("negative", "a negative movie review"), "1": ("positive", "a positive movie review")}


def _read_sst2(path: Path) -> list[Item]:
    # `<0|1> <text>` per line.
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            items.append((text.strip(), SST2_CLASSES[label][0]))
    return items


def load_sst2(folder: Path, seed: int) -> Dataset:
    """sst2: stsa.binary.train / stsa.binary.test, `label text` lines."""
    classes = [LabelClass(name=n, description=d) for n, d in SST2_CLASSES.values()]
    return Dataset(
        "sst2", classes, _read_sst2(folder / "stsa.binary.train"), _read_sst2(folder / "stsa.binary.test")
    )


LOADERS: dict[str, Callable[[Path, int], Dataset]] = {
    "banking77": load_banking77,
    "ag_news": load_ag_news,
    "trec": load_trec,
    "sst2": load_sst2,
}


def sample_examples(dataset: Dataset, per_class: int, *, seed: int) -> list[LabeledExample]:
    """Return `per_class` seeded examples of each class (a prefix of the same shuffle for every k)."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(dataset.train):
        by_class[label].append(i)
    examples = []
    for label_class in dataset.classes:
        indices = by_class[label_class.name]
        random.Random(f"{dataset.name}-{label_class.name}-{seed}").shuffle(indices)
        for i in indices[:per_class]:
            text, label = dataset.train[i]
            examples.append(LabeledExample(key=f"train-{i}", data={"text": text}, value=label))
    return examples


def sample_test(dataset: Dataset, limit: int, *, seed: int) -> list[Item]:
    """Return a seeded sample of at most `limit` test items (test files are often sorted by class)."""
    items = list(dataset.test)
    random.Random(f"{dataset.name}-test-{seed}").shuffle(items)
    return items[:limit]


class CachingEmbedder:
    """Wraps an embedder and remembers every vector, so the methods of one run embed each text once."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self._vectors: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Return unit vectors for texts, embedding only those not seen before."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            self._vectors.update(zip(missing, self.inner.embed(missing), strict=True))
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])


@dataclass(frozen=True)
class Method:
    """One column of the table: an embedder and a strategy."""

    name: str
    embedder: str
    strategy: BaselineStrategy


METHODS = [
    Method("hashing-centroid", "hashing", BaselineStrategy.centroid),
    Method("minilm-centroid", "minilm", BaselineStrategy.centroid),
    Method("minilm-1nn", "minilm", BaselineStrategy.knn),
    Method("minilm-auto", "minilm", BaselineStrategy.auto),
]
ZERO_SHOT = Method("minilm-zero-shot", "minilm", BaselineStrategy.zero_shot)


def evaluate(
    dataset: Dataset,
    examples: list[LabeledExample],
    test: list[Item],
    method: Method,
    embedder: Embedder,
) -> dict[str, Any]:
    """Label the test items with one method; return accuracy, mean confidence and the strategy used."""
    spec = LabelSpec.from_classes(dataset.classes, input_fields=["text"])
    classifier = BaselineClassifier(spec, examples, embedder=embedder, strategy=method.strategy, k=1)
    answers = classifier.predict([{"text": text} for text, _ in test])
    correct = [answer.value == gold for answer, (_, gold) in zip(answers, test, strict=True)]
    confidences = [answer.confidence or 0.0 for answer in answers]
    return {
        "accuracy": float(np.mean(correct)),
        "mean_confidence": float(np.mean(confidences)),
        "strategy": classifier.name,
        "predictions": [
            (answer.value, answer.confidence, gold) for answer, (_, gold) in zip(answers, test, strict=True)
        ],
    }


def run(
    datasets_dir: Path, names: Sequence[str], per_class: Sequence[int], *, limit: int, seed: int
) -> list[dict[str, Any]]:
    """Return one result row per (dataset, k, method)."""
    rows: list[dict[str, Any]] = []
    for name in names:
        started = time.perf_counter()
        dataset = LOADERS[name](datasets_dir / name, seed)
        test = sample_test(dataset, limit, seed=seed)
        embedders: dict[str, Embedder] = {
            "minilm": CachingEmbedder(MiniLMEmbedder()),
            "hashing": CachingEmbedder(HashingEmbedder()),
        }
        result = evaluate(dataset, [], test, ZERO_SHOT, embedders["minilm"])
        rows.append({"dataset": name, "k": 0, "method": ZERO_SHOT.name, **result})
        for k in per_class:
            examples = sample_examples(dataset, k, seed=seed)
            for method in METHODS:
                result = evaluate(dataset, examples, test, method, embedders[method.embedder])
                rows.append({"dataset": name, "k": k, "method": method.name, **result})
        seconds = time.perf_counter() - started
        print(
            f"# {name}: {len(dataset.classes)} classes, {len(test)} test items, {seconds:.1f} s",
            file=sys.stderr,
        )
    return rows


def format_table(rows: list[dict[str, Any]], per_class: Sequence[int]) -> str:
    """Return the accuracy table: one line per dataset and k, one column per method, then the means."""
    columns = [m.name for m in METHODS]
    accuracy = {(r["dataset"], r["k"], r["method"]): r["accuracy"] for r in rows}
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    lines = [f"{'dataset':<10} {'k':>3}  " + "  ".join(f"{c:>16}" for c in columns) + "   minilm-hashing"]

    def line(label: str, k: int, values: list[float]) -> str:
        cells = "  ".join(f"{100 * v:>15.1f}%" for v in values)
        return f"{label:<10} {k:>3}  {cells}   {100 * (values[1] - values[0]):>+13.1f}"

    for name in datasets:
        zero = accuracy[(name, 0, ZERO_SHOT.name)]
        lines.append(f"{name:<10} {0:>3}  zero-shot (class names + descriptions): {100 * zero:.1f}%")
        for k in per_class:
            lines.append(line(name, k, [accuracy[(name, k, c)] for c in columns]))
    for k in per_class:
        lines.append(
            line("mean", k, [float(np.mean([accuracy[(n, k, c)] for n in datasets])) for c in columns])
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the accuracy table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--datasets-dir", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--datasets", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    parser.add_argument("--per-class", nargs="+", type=int, default=[4, 16, 64])
    parser.add_argument("--limit", type=int, default=1000, help="test items per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    absent = [n for n in args.datasets if not (args.datasets_dir / n).is_dir()]
    if absent:
        print(
            f"skipped: {', '.join(absent)} not found under {args.datasets_dir} (the shared datasets are absent)"
        )
        return 0
    started = time.perf_counter()
    rows = run(args.datasets_dir, args.datasets, sorted(args.per_class), limit=args.limit, seed=args.seed)
    if args.json:
        for row in rows:
            row.pop("predictions")
        print(json.dumps({"seed": args.seed, "limit": args.limit, "results": rows}, indent=2))
    else:
        print(format_table(rows, sorted(args.per_class)))
        print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
