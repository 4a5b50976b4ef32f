"""Bulk-labeling throughput against the fake OpenAI server: `python -m evals.bench_engine [--tasks 5000]`.

Starts `evals.fake_openai` in a CHILD process on 127.0.0.1 (so the server's CPU does not share the GIL with
the client) with an RPM limit, latency and optional faults; imports N synthetic tasks into a temporary data
folder; runs `tools.engine.run_job` with the `LLMLabeler`; and prints:

- throughput (tasks per second over the whole job) against the theoretical ceiling
  min(rpm / 60, concurrency / latency) and the target 0.95;
- the peak resident memory of this process during the job, above what it used before the job started;
- the server's view (requests, 429s, accepted per second) and the client's rate controller;
- `--faults` (10% 429s, 5% 500s, 2% hung requests with a 2 s client timeout, 2% truncated JSON): whether every
  task ends labeled or with a stored error, and none twice;
- a baseline in the same run: plain `ChatOpenAI.abatch(..., max_concurrency=N, return_exceptions=True)` with
  the SDK's default retries (2), as ../STACK.md measured it, on `--baseline-tasks` tasks: its useful
  throughput (valid answers per second), the tasks it lost, and the engine's ratio to it.

`--json` prints the figures as JSON; `--check` exits 1 when a target is missed (correctness always does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tools.engine import JobReport, run_job
from tools.importers import import_file
from tools.labelspec import LabelSpec
from tools.llm import ModelSettings, OutputMode, build_chat_model, request_options
from tools.llm_labeler import LLMLabeler
from tools.projects import create_project
from tools.prompting import render_messages
from tools.ratelimit import Backoff, RateLimits
from tools.settings import Settings
from tools.storage import Database, Prediction
from tools.versions import PromptConfig, create_version

TARGET_RATIO = 0.95
MODEL = "fake-model"
CLASSES = ["complaint", "praise", "question", "billing", "delivery"]
FAULTS = {"p429": 0.10, "p500": 0.05, "ptimeout": 0.02, "pbadjson": 0.02}
FAULT_CLIENT_TIMEOUT_S = 2.0

_SUBJECTS = ["The new update", "My card payment", "The delivery driver", "Customer support", "The hotel room"]
_ENDINGS = [
    "arrived three days late, which was annoying",
    "worked perfectly and I am happy",
    "was charged twice this month",
    "stopped working after the update, can you help",
    "was friendly and quick",
]


# ---------------------------------------------------------------------------------------------- the server


class ServerProcess:
    """`python -m evals.fake_openai` in a child process; stopped by its own Popen handle."""

    def __init__(self, options: dict[str, Any]) -> None:
        command = [sys.executable, "-m", "evals.fake_openai", "--port", "0"]
        for name, value in options.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        # The server's log goes to stderr and is dropped: a full pipe would block it.
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        stdout = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/v1", line)
        if found is None:
            self.stop()
            raise RuntimeError(f"the fake server did not start (it printed {line!r})")
        self.root = found.group(1)
        self.url = f"{self.root}/v1"
        threading.Thread(target=stdout.read, daemon=True).start()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.root}/stats", timeout=10).json()
        data.pop("events", None)
        return data

    def reset(self) -> None:
        httpx.post(f"{self.root}/reset", timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------------------------------------- data


def write_tasks(path: Path, count: int, *, seed: int = 0) -> None:
    """Write `count` distinct synthetic tasks (id,text)."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(count):
            text = f"{rng.choice(_SUBJECTS)} {rng.choice(_ENDINGS)} (ticket {i})."
            writer.writerow([f"b{i}", text])


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class MemorySampler:
    """Samples the resident memory every 0.1 s while a job runs."""

    def __init__(self) -> None:
        self.start_mb = rss_mb()
        self.peak_mb = self.start_mb
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.1)

    def stop(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------------------------------------- runs


async def run_engine(
    db: Database, settings: Settings, spec: LabelSpec, server: ServerProcess, args: argparse.Namespace
) -> dict[str, Any]:
    version = create_version(
        db, "bench", PromptConfig(instructions="Classify the customer message.", model=MODEL)
    )
    timeout = FAULT_CLIENT_TIMEOUT_S if args.faults else 30.0
    labeler = LLMLabeler(
        settings,
        spec,
        version,
        model_settings=ModelSettings(model=MODEL, base_url=server.url, timeout_s=timeout),
        rate_limits=RateLimits(rpm=args.rpm, max_concurrency=args.concurrency),
        db=db,
        backoff=Backoff(rng=random.Random(args.seed)),
    )
    await labeler.capabilities()  # the probe requests are not part of the measured job
    server.reset()
    sampler = MemorySampler()
    sampling = asyncio.create_task(sampler.run())
    started = time.perf_counter()
    cpu_started = time.process_time()
    report: JobReport = await run_job(db, "bench", labeler, commit_every=50)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    sampler.stop()
    await sampling
    with db.session() as session:
        rows = (
            session.query(Prediction.task_id, Prediction.error_kind)
            .filter(Prediction.run_id == report.run_id)
            .all()
        )
    task_ids = [task_id for task_id, _ in rows]
    handled = report.labeled + report.failed
    ceiling = min(args.rpm / 60, args.concurrency / (args.latency_ms / 1000))
    # Retries and repairs spend the same request budget: the most tasks per second the limit allows.
    stats = server.stats()
    requests_per_task = stats["requests"] / max(handled, 1)
    effective = ceiling / max(requests_per_task, 1.0)
    return {
        "tasks": args.tasks,
        "labeled": report.labeled,
        "failed": report.failed,
        "failed_by_kind": report.failed_by_kind,
        "seconds": round(elapsed, 2),
        "throughput_per_s": round(handled / elapsed, 2),
        "ceiling_per_s": round(ceiling, 2),
        "ratio_to_ceiling": round(handled / elapsed / ceiling, 4),
        "client_cpu_ms_per_task": round(cpu / max(handled, 1) * 1000, 2),
        "memory_before_job_mb": round(sampler.start_mb, 1),
        "memory_peak_mb": round(sampler.peak_mb, 1),
        "memory_growth_mb": round(sampler.peak_mb - sampler.start_mb, 1),
        "predictions": len(task_ids),
        "distinct_tasks": len(set(task_ids)),
        "every_task_once": len(task_ids) == len(set(task_ids)) == args.tasks,
        "server": stats,
        "requests_per_task": round(requests_per_task, 3),
        "effective_ceiling_per_s": round(effective, 2),
        "ratio_to_effective_ceiling": round(handled / elapsed / effective, 4),
        "controller": labeler.controller.stats().model_dump(),
    }


async def run_baseline(spec: LabelSpec, server: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    """Plain abatch with the SDK's retries: what STACK.md measured."""
    timeout = FAULT_CLIENT_TIMEOUT_S if args.faults else 30.0
    model = build_chat_model(
        ModelSettings(model=MODEL, base_url=server.url, timeout_s=timeout), max_retries=2
    ).bind(**request_options(spec, mode=OutputMode.json_schema))
    config = PromptConfig(instructions="Classify the customer message.")
    rng = random.Random(args.seed + 1)
    inputs: list[Any] = [
        render_messages(
            spec,
            config,
            {"text": f"{rng.choice(_SUBJECTS)} {rng.choice(_ENDINGS)} (baseline {i})."},
            mode=OutputMode.json_schema,
        )
        for i in range(args.baseline_tasks)
    ]
    server.reset()
    started = time.perf_counter()
    results = await model.abatch(inputs, config={"max_concurrency": args.concurrency}, return_exceptions=True)
    elapsed = time.perf_counter() - started
    valid = 0
    errors: dict[str, int] = {}
    for result in results:
        if isinstance(result, BaseException):
            errors[type(result).__name__] = errors.get(type(result).__name__, 0) + 1
            continue
        try:
            label = json.loads(str(result.content))["label"]
        except (ValueError, KeyError, TypeError):
            errors["invalid JSON (not repaired)"] = errors.get("invalid JSON (not repaired)", 0) + 1
            continue
        valid += 1 if label in CLASSES else 0
    return {
        "tasks": args.baseline_tasks,
        "valid": valid,
        "lost": args.baseline_tasks - valid,
        "lost_by_reason": errors,
        "seconds": round(elapsed, 2),
        "useful_throughput_per_s": round(valid / elapsed, 2),
        "server": server.stats(),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "rpm": args.rpm,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "seed": args.seed,
    }
    if args.faults:
        options.update(FAULTS)
    spec = LabelSpec.from_classes(CLASSES, input_fields=["text"])
    server = ServerProcess(options)
    try:
        with tempfile.TemporaryDirectory(prefix="labelpilot-bench-") as folder:
            settings = Settings(home=Path(folder) / "home")
            db = Database.open(settings)
            try:
                create_project(db, "bench", spec=spec)
                data = Path(folder) / "tasks.csv"
                write_tasks(data, args.tasks, seed=args.seed)
                import_file(db, "bench", data, fields=["text"])
                engine = await run_engine(db, settings, spec, server, args)
            finally:
                db.dispose()
        baseline = await run_baseline(spec, server, args) if args.baseline_tasks else None
    finally:
        server.stop()
    result: dict[str, Any] = {"config": {**vars(args), **options}, "engine": engine, "baseline": baseline}
    if baseline:
        engine_useful = engine["labeled"] / engine["seconds"]
        result["engine_vs_baseline_useful_throughput"] = round(
            engine_useful / max(baseline["useful_throughput_per_s"], 1e-9), 2
        )
    return result


def verdict(result: dict[str, Any], *, faults: bool) -> list[str]:
    """Return the missed targets (empty when all are met)."""
    engine = result["engine"]
    missed = []
    if not engine["every_task_once"]:
        missed.append("some task has no stored outcome or more than one")
    if not faults and engine["ratio_to_ceiling"] < TARGET_RATIO:
        missed.append(f"throughput {engine['ratio_to_ceiling']:.3f} of the ceiling < {TARGET_RATIO}")
    return missed


def render(result: dict[str, Any], missed: list[str]) -> None:
    engine, baseline, config = result["engine"], result["baseline"], result["config"]
    mode = (
        "with faults " + ", ".join(f"{k}={v}" for k, v in FAULTS.items()) if config["faults"] else "no faults"
    )
    print(
        f"fake server: {config['rpm']:g} RPM, {config['latency_ms']:g} ms latency (±{config['jitter_ms']:g}), {mode}"
    )
    print(
        f"engine: {engine['tasks']:,} tasks, concurrency {config['concurrency']}: {engine['labeled']:,} labeled, "
        f"{engine['failed']:,} stored errors {engine['failed_by_kind'] or ''} in {engine['seconds']:.1f} s"
    )
    print(
        f"  throughput {engine['throughput_per_s']:.2f}/s, ceiling {engine['ceiling_per_s']:.2f}/s "
        f"-> {engine['ratio_to_ceiling']:.3f} of the ceiling (target {TARGET_RATIO})"
    )
    if config["faults"]:
        print(
            f"  {engine['requests_per_task']:.3f} requests per task (retries, repairs): effective ceiling "
            f"{engine['effective_ceiling_per_s']:.2f}/s -> {engine['ratio_to_effective_ceiling']:.3f} of it"
        )
    print(
        f"  every task exactly once: {engine['every_task_once']} ({engine['predictions']:,} predictions, "
        f"{engine['distinct_tasks']:,} distinct tasks)"
    )
    print(
        f"  memory: {engine['memory_before_job_mb']:.0f} MB before the job, peak {engine['memory_peak_mb']:.0f} MB "
        f"(+{engine['memory_growth_mb']:.1f} MB); client CPU {engine['client_cpu_ms_per_task']:.1f} ms per task"
    )
    server, controller = engine["server"], engine["controller"]
    print(
        f"  server: {server['requests']:,} requests, {server['rate_limited']:,} 429s "
        f"({server['rate_limited_injected']:,} injected), {server['server_errors']:,} 500s, "
        f"{server['timeouts']:,} held, {server['bad_json']:,} bad JSON; accepted {server['accepted_per_second']:.2f}/s"
    )
    print(
        f"  controller: concurrency limit {controller['concurrency_limit']} (peak in flight "
        f"{controller['peak_in_flight']}), {controller['decreases']} decreases, {controller['cooldowns']} cooldowns"
    )
    if baseline:
        print(
            f"baseline (abatch, SDK retries=2, max_concurrency={config['concurrency']}): {baseline['tasks']:,} tasks, "
            f"{baseline['valid']:,} valid, {baseline['lost']:,} lost {baseline['lost_by_reason']} in "
            f"{baseline['seconds']:.1f} s -> {baseline['useful_throughput_per_s']:.2f} valid/s"
        )
        print(f"engine / baseline useful throughput: {result['engine_vs_baseline_useful_throughput']:.2f}x")
    print("PASS" if not missed else "MISSED: " + "; ".join(missed))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m evals.bench_engine", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rpm", type=float, default=3000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--jitter-ms", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--faults", action="store_true", help="inject 10%% 429, 5%% 500, 2%% timeouts, 2%% bad JSON"
    )
    parser.add_argument(
        "--baseline-tasks", type=int, default=None, help="default: min(tasks, 2000); 0 skips it"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when the throughput target is missed")
    args = parser.parse_args(argv)
    if args.baseline_tasks is None:
        args.baseline_tasks = min(args.tasks, 2000)
    result = asyncio.run(bench(args))
    missed = verdict(result, faults=args.faults)
    if args.json:
        print(json.dumps({**result, "missed": missed}, indent=2, default=str))
    else:
        render(result, missed)
    correctness = [m for m in missed if "exactly once" in m or "no stored outcome" in m]
    return 1 if correctness or (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
