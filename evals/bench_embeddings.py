"""Throughput of the embedders on 500 banking77 sentences: `python -m evals.bench_embeddings`.

Prints import and load time of MiniLMEmbedder and texts per second for it and, as the in-run baseline on
the same machine, for HashingEmbedder. Skips with a message when the shared datasets are absent.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "datasets" / "banking77" / "test.csv"


def read_texts(path: Path, *, limit: int) -> list[str]:
    """Return the first `limit` values of the `text` column of a CSV file."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [row["text"] for _, row in zip(range(limit), csv.DictReader(handle), strict=False)]


def best_rate(embed: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], *, repeats: int) -> float:
    """Return the best texts/s over `repeats` full passes (the best pass is the least disturbed one)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        embed(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return max(rates)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    if not args.dataset.is_file():
        print(f"skipped: {args.dataset} not found (the shared datasets are not on this machine)")
        return 0
    texts = read_texts(args.dataset, limit=args.limit)

    # Timed here, not imported at the top, so the figure includes numpy and is what a fresh process pays.
    started = time.perf_counter()
    module = importlib.import_module("tools.embeddings")
    import_seconds = time.perf_counter() - started
    minilm = module.MiniLMEmbedder()
    started = time.perf_counter()
    minilm.load()
    load_seconds = time.perf_counter() - started
    hashing = module.HashingEmbedder()
    hashing.embed(["warm up: import scikit-learn outside the timed passes"])

    print(
        f"texts: {len(texts)} from {args.dataset.name}, batch size {args.batch_size}, best of {args.repeats}"
    )
    print(f"minilm   import tools.embeddings {import_seconds:.3f} s, load weights {load_seconds:.3f} s")
    minilm_rate = best_rate(
        lambda batch: minilm.embed(batch, batch_size=args.batch_size), texts, repeats=args.repeats
    )
    hashing_rate = best_rate(hashing.embed, texts, repeats=args.repeats)
    print(f"minilm   {minilm_rate:8.1f} texts/s")
    print(f"hashing  {hashing_rate:8.1f} texts/s (baseline, same run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
