"""Langfuse faults with savings scores on: the user's call latency and the program's exit time.

A program makes `ChatOpenAI` calls through our handler (`savings_score=True`) to a local OpenRouter,
exporting to a local Langfuse whose scores endpoint is healthy, hangs (holds every request open), or
answers 401 or 413.

- User latency: one program, one Langfuse whose fault is switched between blocks of calls; the
  blocks are interleaved (healthy, fault, healthy, ...) and each fault's median call is divided by
  the healthy block next to it, per round.
- Exit time: one fresh program per fault that makes its calls, flushes and exits: from the last
  call's return to the process's end (`handler.flush()` included). For comparison, Langfuse's own
  score path (`langfuse.create_score` after each call) with the endpoint hanging, stopped after
  `CAP` seconds if it has not exited by then.

Run `python -m benchmarks.faults_langfuse [--quick]` from the repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._common import Row, Stats, print_table, quick_main, ratios
from ._fixtures import MODEL, SONNET_PRICING, marker
from ._servers import spawn_openrouter

ROOT = Path(__file__).resolve().parent.parent
SCORES_PATH = "/api/public/scores"
CAP = 60.0  # seconds a program that cannot exit is given before it is stopped
FAULTS = ("healthy", "hang", "401", "413")

PROGRAM = """
import json, sys, time
from langchain_openai import ChatOpenAI
from langfuse_openrouter_callbacks import PriceCatalog
from langfuse_openrouter_callbacks.langchain import CallbackHandler

base_url, calls, path, model, prices, markers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], \\
    json.loads(sys.argv[5]), json.loads(sys.argv[6])
llm = ChatOpenAI(base_url=base_url, api_key="sk-or-bench", model=model, max_retries=0)
if path == "ours":
    handler = CallbackHandler(price_catalog=PriceCatalog({model: prices}, offline=True), savings_score=True)
    score = lambda: None
else:  # Langfuse's own handler and score queue
    from langfuse import get_client
    from langfuse.langchain import CallbackHandler as LangfuseHandler

    handler = LangfuseHandler()
    client = get_client()
    score = lambda: client.create_score(name="savings", value=0.001, trace_id=handler.last_trace_id)
def call(i):
    started = time.perf_counter()
    llm.invoke("hi " + markers[i % len(markers)], config={"callbacks": [handler]})
    score()
    return (time.perf_counter() - started) * 1000

if calls == 0:  # blocks on request: one line in, the block's median call (ms) out
    for _ in range(5):
        call(0)
    print("ready", flush=True)
    for line in sys.stdin:
        block = sorted(call(i) for i in range(int(line)))
        print(block[len(block) // 2], flush=True)
    sys.exit(0)
latencies = [call(i) for i in range(calls)]
print(json.dumps({"latencies_ms": latencies}), flush=True)
started = time.perf_counter()
handler.flush() if path == "ours" else client.flush()
print(json.dumps({"flush_s": time.perf_counter() - started}), flush=True)
"""


def _set_fault(langfuse: Any, fault: str) -> None:
    langfuse.heal()
    if fault == "hang":
        langfuse.hang(SCORES_PATH)
    status = 200 if fault in ("healthy", "hang") else int(fault)
    langfuse.set_json_route("POST", SCORES_PATH, status, {} if status == 200 else {"message": "rejected"})


def _program(openrouter: str, langfuse: Any, path: str, calls: int, **popen: Any) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-bench-faults",
        "LANGFUSE_SECRET_KEY": "sk-lf-bench-faults",
        "LANGFUSE_BASE_URL": langfuse.base_url,
        "PYTHONPATH": str(ROOT),
    }
    markers = json.dumps([marker(n) for n in range(50)])
    args = [openrouter, str(calls), path, MODEL, json.dumps(SONNET_PRICING), markers]
    return subprocess.Popen(
        [sys.executable, "-c", PROGRAM, *args], env=env, stdout=subprocess.PIPE, text=True, **popen
    )


def _latency_ratios(openrouter: str, rounds: int, block: int) -> dict[str, Stats]:
    """Per fault, its block's median call over the healthy block next to it (interleaved rounds)."""
    from tests.support.otlp_receiver import OTLPReceiver  # the test suite's fake Langfuse

    medians: dict[str, list[float]] = {fault: [] for fault in FAULTS}
    with OTLPReceiver() as langfuse:
        child = _program(openrouter, langfuse, "ours", 0, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert child.stdin is not None and child.stdout is not None
        child.stdout.readline()  # warmed up
        for r in range(rounds):
            for fault in FAULTS if r % 2 == 0 else FAULTS[::-1]:
                _set_fault(langfuse, fault)
                child.stdin.write(f"{block}\n")
                child.stdin.flush()
                medians[fault].append(float(child.stdout.readline()))
        langfuse.heal()
        child.stdin.close()
        child.wait(CAP)
    return {
        fault: Stats.of(ratios(medians[fault], medians["healthy"])) for fault in FAULTS if fault != "healthy"
    } | {"healthy": Stats.of(medians["healthy"])}


def _case(openrouter: str, fault: str, path: str, calls: int) -> dict[str, Any]:
    """Run one program against a Langfuse with `fault`: its flush and exit times, its warnings."""
    from tests.support.otlp_receiver import OTLPReceiver  # the test suite's fake Langfuse

    with OTLPReceiver() as langfuse:
        _set_fault(langfuse, fault)
        child = _program(openrouter, langfuse, path, calls, stderr=subprocess.PIPE)
        assert child.stdout is not None
        result: dict[str, Any] = json.loads(child.stdout.readline() or "{}")
        returned = time.monotonic()
        try:
            child.wait(CAP)
            result["exit_s"] = time.monotonic() - returned
            line = child.stdout.readline()
            result.update(json.loads(line) if line.strip() else {})
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            result["exit_s"] = None
        stderr = child.stderr.read() if child.stderr is not None else ""
        result["warnings"] = sum(1 for line in stderr.splitlines() if "cache-savings score" in line)
        result["scores_requests"] = len([r for r in langfuse.other_requests if r.path == SCORES_PATH])
    return result


def _seconds(value: float | None) -> str:
    return f"> {CAP:.0f} s (stopped)" if value is None else f"{value:.2f} s"


def run(quick: bool) -> list[Row]:
    calls, rounds, block = (30, 6, 20) if quick else (200, 20, 50)
    rows: list[Row] = []
    with spawn_openrouter() as openrouter:
        latency = _latency_ratios(openrouter, rounds, block)
        results = {fault: _case(openrouter, fault, "ours", calls) for fault in FAULTS}
        theirs = _case(openrouter, "hang", "langfuse", 30)
    rows.append(Row("6.healthy", "Langfuse healthy: user call (ms)", latency["healthy"].fmt("ms")))
    for fault in FAULTS[1:]:
        rows.append(
            Row(
                f"6.{fault}",
                f"Langfuse {fault}: user call, ratio to healthy",
                latency[fault].fmt("x"),
                number=latency[fault].median,
            )
        )
    for fault, result in results.items():
        name = f"6.{fault}"
        rows.append(Row(name, f"Langfuse {fault}: handler.flush()", _seconds(result.get("flush_s"))))
        exit_s = result["exit_s"]
        rows.append(
            Row(
                name,
                f"Langfuse {fault}: exit after the last call",
                _seconds(exit_s),
                target="exits",
                passed=exit_s is not None,
                number=exit_s,
            )
        )
    rows.append(
        Row(
            "6.langfuse-own",
            "Langfuse's create_score, Langfuse hang: exit (30 calls)",
            _seconds(theirs["exit_s"]),
            number=theirs["exit_s"],
        )
    )
    print_table(
        f"faults_langfuse: scores on, local OpenRouter and Langfuse ({rounds} rounds of {block} calls; "
        f"{calls} calls per exit run)",
        rows,
        [
            "ratios: per round, the fault's median call over the healthy block run next to it",
            "exit: from the last call's return to the process's end (handler.flush() and interpreter exit)",
            "warnings from our logger: " + ", ".join(f"{k} {v['warnings']}" for k, v in results.items()),
        ],
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
