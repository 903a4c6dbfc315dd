"""Benchmark 5, start-up: handler construction and the first call against Langfuse's own, lookups at scale.

What short scripts, notebooks and serverless functions pay every time, each measured in fresh
interpreters, ours and Langfuse's interleaved run by run (both import the same modules first, so
only the constructor or the call is timed):

- `CallbackHandler()` and `set_global_handler()` against `langfuse.langchain.CallbackHandler()`;
- the first `ChatOpenAI.invoke` through our handler against the same through Langfuse's, with no
  price cache on disk (cold) and with a fresh one (warm), against a local OpenRouter in its own process;
  the longest a price lookup (or `preload`) kept the caller's thread, and what the first call recorded;
- in this process: lookups cycling over 10,000 distinct ids against 1,000, a remembered unknown id
  against a known one, and the caller's part of a cold start with 10,000 models on disk.

    python -m benchmarks.startup [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from ._common import Row, Stats, interleaved, print_table, quick_main, ratios, scratch
from ._fixtures import DATED, MODEL, endpoint_entries, marker, synthetic_models, write_price_cache
from ._servers import spawn_openrouter
from .catalog import cycle_us

NAME = "7. startup"
TARGET_RATIO = 1.2
TARGET_WAIT_MS = 1.0
TARGET_SCALE = 2.0
PACKAGE = "langfuse_openrouter_callbacks"
IMPORTS = (
    "import json, os, time\n"
    "from langchain_openai import ChatOpenAI\n"
    "from langfuse.langchain import CallbackHandler as LangfuseHandler\n"
    f"from {PACKAGE} import PriceCatalog, _enrich\n"
    f"from {PACKAGE}.langchain import CallbackHandler\n"
    f"from {PACKAGE}.llama_index import set_global_handler\n"
    f"import {PACKAGE}.langchain as ours_module\n"
)
# The caller's waits for prices: every pricing_for and preload call on the main thread, timed.
WATCH_WAITS = """
waits = []
def _timed(name):
    original = getattr(PriceCatalog, name)
    def timed(self, *args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            waits.append((name, (time.perf_counter() - t0) * 1000, (time.thread_time() - c0) * 1000))
    setattr(PriceCatalog, name, timed)
for _name in ("pricing_for", "preload"):
    _timed(_name)
recorded = {}
_original_enrich = ours_module.enrich
def _enrich_watch(usage, catalog, **kwargs):
    found = _original_enrich(usage, catalog, **kwargs)
    recorded.update(total=str(found.breakdown.total), reported=str(usage.cost),
                    cost_source=found.breakdown.source, pricing_source=found.breakdown.pricing_source)
    return found
ours_module.enrich = _enrich_watch
"""
CONSTRUCT = {
    "CallbackHandler()": "CallbackHandler()",
    "set_global_handler()": "set_global_handler()",
    "Langfuse's CallbackHandler()": "LangfuseHandler()",
}


def _environment(xdg: str, base_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OPENROUTER_"))}
    env.update(
        LANGFUSE_PUBLIC_KEY="pk-lf-bench",
        LANGFUSE_SECRET_KEY="sk-lf-bench",
        LANGFUSE_BASE_URL="http://127.0.0.1:9",  # nothing is exported: the process leaves first
        XDG_CACHE_HOME=xdg,
    )
    if base_url:
        env["OPENROUTER_API_BASE"] = base_url
    return env


def _fresh(code: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS + code + "\nos._exit(0)\n"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def construction(runs: int) -> dict[str, list[float]]:
    xdg = scratch("xdg-")

    def contender(expression: str) -> Any:
        code = f"t = time.perf_counter(); {expression}; print(json.dumps((time.perf_counter() - t) * 1000))"
        return lambda: _fresh(code, _environment(xdg))

    return interleaved({label: contender(e) for label, e in CONSTRUCT.items()}, runs, collect=False)


def first_calls(base_url: str, runs: int) -> tuple[dict[str, list[float]], list[list[Any]], list[dict]]:
    warm_xdg = scratch("xdg-warm-")
    write_price_cache(
        os.path.join(warm_xdg, PACKAGE.replace("_", "-")),
        base_url,
        synthetic_models(1000),
        endpoints={MODEL: endpoint_entries()},
    )
    waits: list[list[Any]] = []  # (method, wall ms, the caller's CPU ms)
    recorded: list[dict] = []

    def contender(handler: str, warm: bool) -> Any:
        code = (
            WATCH_WAITS
            + f"handler = {handler}\n"
            + f"llm = ChatOpenAI(base_url={base_url!r}, api_key='sk', model={MODEL!r}, max_retries=0)\n"
            + "t = time.perf_counter()\n"
            + f"llm.invoke('hello {marker(1)}', config={{'callbacks': [handler]}})\n"
            + "ms = (time.perf_counter() - t) * 1000\n"
            + "print(json.dumps({'ms': ms, 'waits': waits, 'recorded': recorded}))\n"
        )

        def run() -> float:
            xdg = warm_xdg if warm else scratch("xdg-cold-")
            seen = _fresh(code, _environment(xdg, base_url))
            if handler.startswith("CallbackHandler"):
                waits.extend(seen["waits"])
                recorded.append(seen["recorded"])
            return seen["ms"]

        return run

    times = interleaved(
        {
            "ours cold": contender("CallbackHandler()", False),
            "Langfuse cold": contender("LangfuseHandler()", False),
            "ours warm": contender("CallbackHandler()", True),
            "Langfuse warm": contender("LangfuseHandler()", True),
        },
        runs,
        collect=False,
    )
    return times, waits, recorded


def lookups(rounds: int, repeat: int) -> dict[str, Any]:
    from langfuse_openrouter_callbacks import PriceCatalog

    api_base = "http://127.0.0.1:9/api/v1"  # never contacted: the disk caches are fresh
    catalogs = {}
    for count in (1000, 10_000):
        cache_dir = scratch(f"catalog-{count}-")
        write_price_cache(cache_dir, api_base, synthetic_models(count))
        catalog = PriceCatalog(api_base=api_base, cache_dir=cache_dir)
        t0 = time.perf_counter_ns()
        catalog.pricing_for(DATED)  # the caller's part of a cold start: it starts the load, no more
        caller_us = (time.perf_counter_ns() - t0) / 1000
        t0 = time.perf_counter()
        assert catalog.wait_until_idle(60)
        loaded_ms = (time.perf_counter() - t0) * 1000
        catalogs[count] = (catalog, caller_us, loaded_ms)
    small, big = catalogs[1000][0], catalogs[10_000][0]
    small_ids = [m["id"] for m in synthetic_models(1000)]
    big_ids = [m["id"] for m in synthetic_models(10_000)]
    unknown = [f"nobody/unknown-{i}" for i in range(1000)]
    for key in small_ids + unknown:
        small.pricing_for(key)
    for key in big_ids:
        big.pricing_for(key)
    times = interleaved(
        {
            "1,000": cycle_us(small.pricing_for, small_ids, repeat),
            "10,000": cycle_us(big.pricing_for, big_ids, max(1, repeat // 10)),
            "unknown": cycle_us(small.pricing_for, unknown, repeat),
        },
        rounds,
    )
    return {"times": times, "catalogs": {n: c[1:] for n, c in catalogs.items()}}


def _right(recorded: dict[str, Any]) -> bool:
    """A first call's numbers are right: OpenRouter's reported cost as the total, or priced."""
    if recorded.get("cost_source") == "openrouter" and recorded.get("total") == recorded.get("reported"):
        return True
    return recorded.get("pricing_source") is not None


def run(quick: bool) -> list[Row]:
    runs, rounds, repeat = (4, 7, 3) if quick else (15, 21, 10)
    built = construction(runs)
    with spawn_openrouter() as base_url:
        first, waits, recorded = first_calls(base_url, runs)
    scale = lookups(rounds, repeat)

    def ratio_row(label: str, ours: list[float], theirs: list[float], theirs_label: str) -> Row:
        r = Stats.of(ratios(ours, theirs))
        o, t = Stats.of(ours), Stats.of(theirs)
        return Row(
            NAME,
            f"{label} / {theirs_label} ({o.median:.1f} ms / {t.median:.1f} ms)",
            r.fmt("x"),
            f"<= {TARGET_RATIO:g}x",
            r.median <= TARGET_RATIO,
            r.median,
        )

    langfuse = built["Langfuse's CallbackHandler()"]
    longest_wait = max((w[1] for w in waits), default=0.0)
    longest = {
        name: max((w[1] for w in waits if w[0] == name), default=0.0) for name in ("pricing_for", "preload")
    }
    longest_cpu = max((w[2] for w in waits), default=0.0)
    right = [r for r in recorded if _right(r)]
    sources = sorted({f"{r.get('cost_source')}/{r.get('pricing_source')}" for r in recorded})
    times = {k: Stats.of(v) for k, v in scale["times"].items()}
    big_ratio = Stats.of(ratios(scale["times"]["10,000"], scale["times"]["1,000"]))
    unknown_ratio = Stats.of(ratios(scale["times"]["unknown"], scale["times"]["1,000"]))
    _, small_loaded = scale["catalogs"][1000]
    big_caller, big_loaded = scale["catalogs"][10_000]
    rows = [
        ratio_row("CallbackHandler()", built["CallbackHandler()"], langfuse, "Langfuse's"),
        ratio_row(
            "set_global_handler()", built["set_global_handler()"], langfuse, "Langfuse's CallbackHandler()"
        ),
        ratio_row("first invoke, no price cache", first["ours cold"], first["Langfuse cold"], "Langfuse's"),
        ratio_row("first invoke, warm price cache", first["ours warm"], first["Langfuse warm"], "Langfuse's"),
        Row(
            NAME,
            "longest a price lookup or preload held the caller's thread (first calls): wall; "
            "pricing_for, preload; the thread's own CPU",
            f"{longest_wait:.3f} ms; {longest['pricing_for']:.3f}, {longest['preload']:.3f}; "
            f"{longest_cpu:.3f} ms",
            f"<= {TARGET_WAIT_MS:g} ms",
            longest_wait <= TARGET_WAIT_MS,
            longest_wait,
        ),
        Row(
            NAME,
            "first calls recorded with OpenRouter's cost or a price (all of them)",
            f"{len(right)} of {len(recorded)} ({', '.join(sources)})",
            "all",
            len(right) == len(recorded),
        ),
        Row(
            NAME,
            f"pricing_for cycling over 10,000 ids / over 1,000 ({times['10,000'].median:.2f} µs / "
            f"{times['1,000'].median:.2f} µs)",
            big_ratio.fmt("x"),
            f"<= {TARGET_SCALE:g}x",
            big_ratio.median <= TARGET_SCALE,
            big_ratio.median,
        ),
        Row(
            NAME,
            f"pricing_for(unknown id, asked before) / known id ({times['unknown'].median:.2f} µs)",
            unknown_ratio.fmt("x"),
            f"<= {TARGET_RATIO:g}x",
            unknown_ratio.median <= TARGET_RATIO,
            unknown_ratio.median,
        ),
        Row(
            NAME,
            "cold start, 10,000 models on disk: the caller's part (new catalog + first lookup); behind it",
            f"{big_caller:.0f} µs; {big_loaded:.0f} ms (1,000 models: {small_loaded:.0f} ms)",
            number=big_caller,
        ),
    ]
    print_table(
        f"{NAME} (fresh interpreters, {runs} runs each, interleaved; lookups {rounds} rounds)",
        rows,
        [
            "first invoke: ChatOpenAI against a local OpenRouter in its own process, right after the handler",
            "is made (the worst case for prices loading behind it); a call that comes back before they are",
            "in carries OpenRouter's reported cost (cost_source openrouter), or is marked unpriced. Wall",
            "times include waiting for the GIL while the catalog's thread loads (Python's 5 ms switch).",
        ],
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
