"""Import throughput and memory on a generated CSV: `python -m evals.bench_import [--rows 1000000]`.

Writes an `id,text,label` CSV of realistic sentences (60-100 characters) to a temporary folder, imports it
with `tools.importers.import_file` in a CHILD process into a fresh temporary data folder (so the peak
resident memory measured is the import's alone), and reads the same file with a plain `csv.reader` as the
in-run baseline. Prints rows/s, peak memory and the ratio to the baseline; `--json` prints the figures as
JSON. Targets: >= 20,000 rows/s and < 500 MB peak for 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_ROWS_PER_SECOND = 20_000
TARGET_PEAK_MB = 500

_SUBJECTS = [
    "The new update",
    "My card payment",
    "The delivery driver",
    "Customer support",
    "This restaurant",
    "The hotel room",
    "Our flight to Lisbon",
    "The mobile app",
    "The refund I asked for",
    "The monthly invoice",
    "My savings account",
    "The package from Berlin",
]
_VERBS = [
    "arrived",
    "was declined",
    "took",
    "crashed",
    "worked",
    "was charged twice",
    "looked",
    "stopped working",
    "was cancelled",
    "showed up",
]
_ENDINGS = [
    "three days later than promised, which was really annoying.",
    "perfectly and I am very happy with the whole experience.",
    "without any explanation and nobody answered my emails.",
    "after I changed the settings, so I had to reinstall it twice.",
    "better than expected; the staff were friendly and quick.",
    "again this morning even though I had enough money on it.",
    "at the wrong address, and the tracking page never updated.",
    "fine at first but then the screen froze during the payment.",
]
_LABELS = ["complaint", "praise", "question", "billing", "delivery"]


def make_sentence(rng: random.Random) -> str:
    """Return one sentence of about 60-100 characters."""
    while True:
        text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_ENDINGS)}"
        if rng.random() < 0.3:
            text += f" Order {rng.randrange(10_000, 99_999)}."
        if 60 <= len(text) <= 100:
            return text


def write_dataset(path: Path, rows: int, *, seed: int = 0) -> int:
    """Write `rows` rows of id,text,label to path; return the file size in bytes."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        for number in range(1, rows + 1):
            writer.writerow([f"r{number}", make_sentence(rng), rng.choice(_LABELS)])
    return path.stat().st_size


def baseline_rows_per_second(path: Path) -> tuple[int, float]:
    """Count the data rows with a plain csv.reader; return (rows, rows/s)."""
    started = time.perf_counter()
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = sum(1 for _ in reader)
    return rows, rows / (time.perf_counter() - started)


def run_child(path: Path, home: Path) -> dict[str, float]:
    """Import the file in this process (the child side); return timings."""
    os.environ["LABELPILOT_HOME"] = str(home)
    os.environ.pop("LABELPILOT_DATABASE_URL", None)
    from tools.importers import import_file
    from tools.projects import create_project
    from tools.settings import Settings
    from tools.storage import Database

    database = Database.open(Settings.from_env())
    create_project(database, "bench")
    started = time.perf_counter()
    report = import_file(database, "bench", path, label_column="label")
    seconds = time.perf_counter() - started
    database.dispose()
    return {
        "rows": report.rows_read,
        "tasks_added": report.tasks_added,
        "labels_added": report.labels_added,
        "seconds": seconds,
        "self_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", nargs=2, metavar=("CSV", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(Path(args.child[0]), Path(args.child[1]))))
        return 0

    with tempfile.TemporaryDirectory(prefix="labelpilot-bench-") as folder:
        data = Path(folder) / "bench.csv"
        started = time.perf_counter()
        size = write_dataset(data, args.rows)
        generate_seconds = time.perf_counter() - started

        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        child = subprocess.run(
            [sys.executable, "-m", "evals.bench_import", "--child", str(data), str(Path(folder) / "home")],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[1],
        )
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return child.returncode
        peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        result = json.loads(child.stdout.strip().splitlines()[-1])
        baseline_rows, baseline_rate = baseline_rows_per_second(data)

    rate = result["rows"] / result["seconds"]
    figures = {
        "rows": int(result["rows"]),
        "file_mb": round(size / 1e6, 1),
        "generate_seconds": round(generate_seconds, 2),
        "import_seconds": round(result["seconds"], 2),
        "import_rows_per_second": round(rate),
        "peak_rss_mb": round(peak_mb, 1),
        "baseline_csv_reader_rows_per_second": round(baseline_rate),
        "import_vs_baseline": round(rate / baseline_rate, 4),
        "tasks_added": int(result["tasks_added"]),
        "labels_added": int(result["labels_added"]),
        "meets_targets": rate >= TARGET_ROWS_PER_SECOND and peak_mb < TARGET_PEAK_MB,
    }
    if baseline_rows != figures["rows"]:
        print(f"warning: the baseline counted {baseline_rows} rows, the import {figures['rows']}")
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"rows: {figures['rows']:,} ({figures['file_mb']} MB CSV, generated in {generate_seconds:.1f} s)")
    print(
        f"import   {rate:10,.0f} rows/s  ({result['seconds']:.1f} s; {figures['tasks_added']:,} tasks, "
        f"{figures['labels_added']:,} labels)  target >= {TARGET_ROWS_PER_SECOND:,}"
    )
    print(f"peak RSS {peak_mb:10.1f} MB (import child process)  target < {TARGET_PEAK_MB}")
    print(f"baseline {baseline_rate:10,.0f} rows/s  (csv.reader counting rows, same file, same run)")
    print(f"ratio    {rate / baseline_rate:10.4f}  (import / baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
