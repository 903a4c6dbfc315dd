"""Run the benchmarks from the repository root: `python -m benchmarks [--quick] [--only NAME] [--profile]`.

Each benchmark runs in a fresh interpreter (no state, threads or garbage carried from one to the next),
prints its own table, and hands its figures back; a summary of every checked target follows. The exit
status is 1 when a target fails or a benchmark crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from ._common import SUMMARY_ENV, Row, environment, print_table

BENCHMARKS = {
    "handlers": "1. handler overhead: our on_llm_end / LLM end event against Langfuse's and plain recording",
    "calculator": "2. calculator: compute_cost against genai_prices.calc_price, usage readers",
    "catalog": "3. catalog: lookups in 1,000 models, cold start, import time",
    "scale": "4. scale: 100,000 generations, 20,000 LlamaIndex queries (memory), 1,000 concurrent chains",
    "report_scale": "5. report: 100,000 generations read and diagnosed (time, memory), the start-up",
    "faults_langfuse": "6. Langfuse faults, scores on: user latency ratios and exit times (hang, 401, 413)",
    "startup": "7. startup: handler construction and first call against Langfuse's, lookups at 10,000 ids",
    "faults_catalog": "8. price-list faults: the user's latency while /models or the disk cache misbehaves",
}
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmarks of langfuse-openrouter-callbacks."
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs; all eight in a few minutes")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument(
        "--profile", action="store_true", help="handlers: also show where the time goes (cProfile + steps)"
    )
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    mode = "quick" if args.quick else "full"
    started = time.monotonic()
    now = datetime.now(timezone.utc)
    print(f"langfuse-openrouter-callbacks benchmarks, {mode} run, {now:%Y-%m-%d %H:%M} UTC")
    print(environment())

    rows: list[Row] = []
    crashed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lfor-bench-") as scratch:
        summary = os.path.join(scratch, "rows.jsonl")
        env = {
            **os.environ,
            SUMMARY_ENV: summary,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        for name in names:
            command = [sys.executable, "-m", f"benchmarks.{name}"]
            if args.quick:
                command.append("--quick")
            if args.profile and name == "handlers":
                command.append("--profile")
            t0 = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, env=env, check=False)
            print(f"   ({name}: {time.monotonic() - t0:.1f} s)")
            if done.returncode != 0:
                crashed.append(f"{name} (exit status {done.returncode})")
        if os.path.exists(summary):
            with open(summary, encoding="utf-8") as f:
                rows = [Row(**json.loads(line)) for line in f if line.strip()]

    checked = [r for r in rows if r.passed is not None]
    failed = [r for r in checked if not r.passed]
    print_table(
        f"summary: {len(checked) - len(failed)} of {len(checked)} targets met ({mode} run, "
        f"{time.monotonic() - started:.0f} s)",
        [
            Row(r.benchmark, f"{r.benchmark.split('.')[0]}. {r.metric.strip()}", r.value, r.target, r.passed)
            for r in checked
        ],
        [f"crashed: {c}" for c in crashed],
    )
    return 1 if failed or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
