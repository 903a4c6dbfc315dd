"""Benchmark 3, the price catalog: lookups in a 1,000-model catalog, cold start, import time.

The catalog reads a synthetic 1,000-model `/models` list from its disk cache (written in the catalog's
own format, fresh, so nothing is fetched): lookups by id, by dated `canonical_slug`, with a `:thinking`
suffix, by the two ids a handler passes (the dated one that answered + the one requested), with a
serving provider (endpoint prices); each cycles over all 1,000 models so no single key stays hot.
Cold start: a new `PriceCatalog` until its prices are in (the disk cache is read and parsed on the
catalog's thread; the caller's part is in benchmark 5). Import time: `python -X importtime` in fresh
processes.

    python -m benchmarks.catalog [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from ._common import Row, Stats, interleaved, print_table, quick_main, scratch
from ._fixtures import DATED, MODEL, SONNET_PRICING, endpoint_entries, synthetic_models, write_price_cache

NAME = "3. catalog"
TARGET_LOOKUP_US = 2.0
API_BASE = "http://127.0.0.1:9/api/v1"  # never contacted: the disk cache is fresh
PACKAGE = "langfuse_openrouter_callbacks"


def cycle_us(lookup: Any, keys: list[Any], repeat: int) -> Any:
    """A block: `lookup(key)` for every key, `repeat` times; µs per lookup."""

    def block() -> float:
        counter = time.perf_counter_ns
        start = counter()
        for _ in range(repeat):
            for key in keys:
                lookup(key)
        return (counter() - start) / (repeat * len(keys)) / 1000

    return block


def _import_run(env: dict[str, str]) -> tuple[float, list[tuple[str, int]]]:
    """One `python -X importtime -c "import <package>"`: its cumulative ms and its direct children (µs)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {PACKAGE}"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    entries = []  # (indent, name, cumulative µs), in the order printed (children before parents)
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line, or another line on stderr
        raw = parts[2].rstrip()
        entries.append((len(raw) - len(raw.lstrip()), raw.strip(), int(parts[1])))
    at = max(i for i, (indent, name, _) in enumerate(entries) if indent == 1 and name == PACKAGE)
    start = max((i for i, (indent, _, _) in enumerate(entries[:at]) if indent == 1), default=-1) + 1
    children = [(name, cumulative) for indent, name, cumulative in entries[start:at] if indent == 3]
    return entries[at][2] / 1000, sorted(children, key=lambda c: -c[1])


def import_time(runs: int) -> tuple[Stats, Stats, list[str], list[tuple[str, int]]]:
    """The package's cumulative import time in fresh interpreters (ms): with its bytecode cached (as an
    installed package has it) and compiling from source; the framework modules it imported; its
    heaviest parts (one run). Bytecode goes to a temporary `PYTHONPYCACHEPREFIX`, not the repository."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = scratch("pycache-")
    _import_run(env)  # writes the bytecode
    cached: list[float] = []
    heaviest: list[tuple[str, int]] = []
    for _ in range(runs):
        figure, heaviest = _import_run(env)
        cached.append(figure)
    source_env = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"}
    source_env["PYTHONDONTWRITEBYTECODE"] = "1"  # the package compiled, the standard library's bytecode used
    from_source = [_import_run(source_env)[0] for _ in range(max(3, runs // 3))]
    frameworks = ("langchain", "langchain_core", "langchain_openai", "llama_index", "langfuse")
    probe = (
        f"import sys, json, {PACKAGE}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {frameworks!r})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    return Stats.of(cached), Stats.of(from_source), json.loads(done.stdout), heaviest


def fresh_process_fallback_ms(runs: int) -> Stats:
    """Loading genai-prices' data in a fresh process, on the catalog's thread, until a lookup has it (ms)."""
    code = (
        "import time; from langfuse_openrouter_callbacks import PriceCatalog; "
        "c = PriceCatalog(offline=True); t = time.perf_counter(); c.preload(); c.wait_until_idle(); "
        f"assert c.pricing_for('{MODEL}') is not None; print((time.perf_counter() - t) * 1000)"
    )
    figures = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        figures.append(float(done.stdout.strip()))
    return Stats.of(figures)


def run(quick: bool) -> list[Row]:
    from langfuse_openrouter_callbacks import PriceCatalog

    rounds, repeat, cold_runs, import_runs = (9, 3, 9, 3) if quick else (25, 10, 31, 9)
    models = synthetic_models(1000)
    cache_dir = scratch("catalog-")
    folder = write_price_cache(cache_dir, API_BASE, models, endpoints={MODEL: endpoint_entries()})
    size_kb = (folder / "models.json").stat().st_size / 1024

    catalog = PriceCatalog(api_base=API_BASE, cache_dir=cache_dir)
    catalog.preload()
    assert catalog.wait_until_idle(60)
    ids = [m["id"] for m in models]
    slugs = [m["canonical_slug"] for m in models]
    suffixed = [i + ":thinking" if not i.endswith(":free") else i for i in ids]
    pairs = list(zip(slugs, ids, strict=True))
    unknown = [f"nobody/unknown-{i}" for i in range(1000)]
    assert all(catalog.pricing_for(k) is not None for k in ids + slugs + suffixed)
    catalog.pricing_for(DATED, provider="Anthropic")
    assert catalog.wait_until_idle(60)  # its endpoints, from the disk cache
    assert catalog.pricing_for(DATED, provider="Anthropic").source == "endpoint:Anthropic"
    for key in unknown:  # remembered misses: the offline fallback is asked once per id
        catalog.pricing_for(key)

    overrides = PriceCatalog({MODEL: SONNET_PRICING}, api_base=API_BASE, cache_dir=cache_dir)
    unremembered = PriceCatalog(api_base=API_BASE, cache_dir=cache_dir)
    for loaded in (overrides, unremembered):
        loaded.preload()
        assert loaded.wait_until_idle(60)
    overrides.pricing_for(MODEL)
    unremembered.pricing_for(DATED, provider="Anthropic")
    assert unremembered.wait_until_idle(60)

    def first_lookup(key: Any) -> Any:
        """`pricing_for` walking its lookup levels: the answers it remembers are dropped first."""
        unremembered._answers.clear()
        return unremembered.pricing_for(key)

    def first_pair(pair: Any) -> Any:
        unremembered._answers.clear()
        return unremembered.pricing_for(pair[0], requested=pair[1])

    def pair(key: Any) -> Any:
        return catalog.pricing_for(key[0], requested=key[1])

    times = interleaved(
        {
            "id": cycle_us(catalog.pricing_for, ids, repeat),
            "first id": cycle_us(first_lookup, ids, repeat),
            "first pair": cycle_us(first_pair, pairs, repeat),
            "slug": cycle_us(catalog.pricing_for, slugs, repeat),
            "suffix": cycle_us(catalog.pricing_for, suffixed, repeat),
            "pair": cycle_us(pair, pairs, repeat),
            "provider": cycle_us(lambda k: catalog.pricing_for(k, provider="Anthropic"), [DATED, MODEL], 500),
            "miss": cycle_us(catalog.pricing_for, unknown, repeat),
            "override id": cycle_us(overrides.pricing_for, [MODEL], 500),
            "override other": cycle_us(overrides.pricing_for, ids[1:200], 2),
        },
        rounds,
    )

    def cold() -> float:
        t0 = time.perf_counter_ns()
        fresh = PriceCatalog(api_base=API_BASE, cache_dir=cache_dir)
        fresh.preload()
        fresh.wait_until_idle(60)
        elapsed = (time.perf_counter_ns() - t0) / 1e6
        found = fresh.pricing_for(DATED)
        assert found is not None and found.source == "models"
        return elapsed

    cold_ms = Stats.of(interleaved({"cold": cold}, cold_runs)["cold"])
    imported, from_source, frameworks, heaviest = import_time(import_runs)
    fallback = fresh_process_fallback_ms(max(3, import_runs // 3))

    s = {k: Stats.of(v) for k, v in times.items()}

    def lookup_row(label: str, key: str, target: bool = True) -> Row:
        stat = s[key]
        if not target:
            return Row(NAME, label, stat.fmt("µs"), number=stat.median)
        return Row(
            NAME,
            label,
            stat.fmt("µs"),
            f"<= {TARGET_LOOKUP_US:g} µs",
            stat.median <= TARGET_LOOKUP_US,
            stat.median,
        )

    rows = [
        lookup_row("pricing_for(id), the answer remembered (every call after the first)", "id"),
        lookup_row("pricing_for(id), the first time (answers dropped before each lookup)", "first id"),
        lookup_row("pricing_for(dated, requested=id), the first time", "first pair", target=False),
        lookup_row("pricing_for(dated canonical_slug)", "slug"),
        lookup_row("pricing_for(id:thinking)", "suffix"),
        lookup_row("pricing_for(dated, requested=id) as the handlers ask", "pair", target=False),
        lookup_row("pricing_for(model, provider=...) (endpoint prices)", "provider", target=False),
        lookup_row("pricing_for(unknown id) (remembered miss)", "miss", target=False),
        lookup_row("with user overrides: pricing_for(overridden id)", "override id"),
        lookup_row("with user overrides: pricing_for(other id)", "override other"),
        Row(
            NAME,
            f"cold start: a new PriceCatalog until its prices are in ({size_kb:.0f} kB cache)",
            cold_ms.fmt("ms"),
            number=cold_ms.median,
        ),
        Row(
            NAME,
            "genai-prices' data loaded in a fresh process (on the catalog's thread)",
            fallback.fmt("ms", 1),
            number=fallback.median,
        ),
        Row(
            NAME,
            f"import {PACKAGE} (python -X importtime, cumulative, bytecode cached)",
            imported.fmt("ms", 1),
            number=imported.median,
        ),
        Row(NAME, "  the same, the package compiled from source (no bytecode)", from_source.fmt("ms", 1)),
        Row(
            NAME,
            "  LangChain / LlamaIndex / Langfuse modules imported by the core",
            ", ".join(frameworks) or "none",
            "none",
            not frameworks,
        ),
        Row(
            NAME,
            "  heaviest parts (ms)",
            ", ".join(f"{n.removeprefix(PACKAGE + '.')} {c / 1000:.1f}" for n, c in heaviest[:3]),
        ),
    ]
    print_table(
        f"{NAME} (1,000 models; {rounds} rounds, each over all 1,000 keys x {repeat}, interleaved)",
        rows,
        ["µs per lookup; lookups read memory only (the disk cache is fresh, so nothing is fetched)."],
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
