"""Benchmark 4, scale: many sequential generations (memory stays flat) and 1,000 concurrent async chains.

Sequential: the LangChain events of one real OpenRouter call (captured as in benchmark 1) replayed
100,000 times (5,000 with --quick) through our handler, start + end each, on a real Langfuse client whose
exporter drops the spans (a receiver keeping 100,000 spans would be the leak). tracemalloc is started
after a warm-up: what it still holds at the end is what the run left behind. Langfuse's own handler runs
the same way beside it, as the reference; the handlers' internal dicts must be empty at the end.

Concurrent: 1,000 (200 with --quick) `prompt | ChatOpenAI(base_url=<local OpenRouter>) | StrOutputParser()`
chains through `asyncio.gather`, each prompt with its own marker, so each call gets its own usage and cost
from the local OpenRouter (in a process of its own). Spans are exported to the embedded Langfuse receiver
and read back: every generation must carry its own call's numbers. The same run with Langfuse's handler
gives the throughput ratio; the contenders alternate, a few rounds each.

LlamaIndex: the dispatcher notices of one real query engine query (15 spans: query, retrieval, embedding,
synthesis, the OpenRouter call) replayed 20,000 times (1,000 with --quick) through `LlamaIndexHandler`,
the same way; its bounded memory of ended spans is cycled through under tracemalloc before the baseline.

    python -m benchmarks.scale [--quick] [--skip-memory] [--skip-concurrency]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import linecache
import os
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from typing import Any

from ._common import Row, Stats, begin, emit, print_table, ratios, scratch, settle
from ._fixtures import (
    BENCH_PUBLIC_KEY,
    MODEL,
    call_number,
    close_langfuse,
    endpoint_entries,
    langfuse_client,
    marker,
    synthetic_models,
    usage_for,
    write_price_cache,
)

NAME = "4. scale"
TARGET_CONCURRENT_RATIO = 0.85  # our throughput at least 85% of Langfuse's handler's (1 / 1.15)
TARGET_GROWTH_BYTES_PER_GEN = 16  # memory left behind per generation after the run (a leak shows as 100s)

# Langfuse handler state keyed by run (ours adds `_calls`): all must be empty once the runs have ended.
_STATE = (
    "_calls",
    "_runs",
    "_context_tokens",
    "_run_states",
    "_root_run_states",
    "_updated_completion_start_time_memo",
    "_prompt_to_parent_run_map",
    "_pending_resume_trace_contexts",
)


class _DropSpans:
    """A span exporter that drops everything (the span work up to the export is still done)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _state_sizes(handler: Any) -> dict[str, int]:
    sizes = {}
    for name in _STATE:
        value = getattr(handler, name, None)
        if value is not None:
            sizes[name] = len(value)
    return sizes


def _ours(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    """The snapshot without what measuring allocates (tracemalloc's snapshots, this benchmark's lists)."""
    return snapshot.filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    )


def _top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, limit: int = 3) -> list[str]:
    stats = after.compare_to(before, "lineno")
    out = []
    for stat in stats[:limit]:
        if stat.size_diff <= 0:
            break
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno}"
        code = linecache.getline(frame.filename, frame.lineno).strip()[:60]
        out.append(f"{stat.size_diff / 1024:+.1f} kB ({stat.count_diff:+d} blocks) {where} `{code}`")
    return out


# ---------------------------------------------------------------------------- sequential / memory


def sequential(
    handler: Any, start: Any, response: Any, end_kwargs: dict[str, Any], total: int, client: Any
) -> dict[str, Any]:
    """`total` start + end events; tracemalloc from after a warm-up to the end. Figures and state."""
    (serialized, messages), start_kwargs = start

    def events(count: int) -> None:
        for i in range(count):
            run_id = uuid.uuid4()
            handler.on_chat_model_start(
                serialized, messages, run_id=run_id, parent_run_id=None, **start_kwargs
            )
            handler.on_llm_end(response, run_id=run_id, parent_run_id=None, **end_kwargs)
            if i % 500 == 499:
                client.flush()  # keep the exporter's queue (2,048 spans) from overflowing

    events(min(2000, total // 5))  # warm-up: caches, lazily built structures, the exporter's queue
    client.flush()
    settle()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    baseline = tracemalloc.get_traced_memory()[0]
    samples = []
    step = max(1, total // 10)
    t0 = time.perf_counter()
    for done in range(0, total, step):
        events(min(step, total - done))
        samples.append(tracemalloc.get_traced_memory()[0] - baseline)
    elapsed = time.perf_counter() - t0
    client.flush()
    gc.collect()
    peak = tracemalloc.get_traced_memory()[1] - baseline
    after = _ours(tracemalloc.take_snapshot())
    before = _ours(before)
    tracemalloc.stop()
    left = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {
        "left": left,
        "peak": peak,
        "samples": samples,
        "top": _top_growth(before, after),
        "state": _state_sizes(handler),
        "us_per_generation": elapsed / total * 1e6,
    }


def _setup(prefix: str) -> tuple[Any, Any, Any, Any]:
    """A local OpenRouter, a price catalog on a disk cache of 1,000 models, and a Langfuse client whose
    spans are dropped: what both memory benchmarks run on."""
    from langfuse_openrouter_callbacks import PriceCatalog

    from ._servers import LocalOpenRouter

    openrouter = LocalOpenRouter().start()
    cache_dir = scratch(prefix)
    os.environ["OPENROUTER_API_BASE"] = openrouter.base_url
    write_price_cache(
        cache_dir, openrouter.base_url, synthetic_models(1000), endpoints={MODEL: endpoint_entries()}
    )
    catalog = PriceCatalog(api_base=openrouter.base_url, cache_dir=cache_dir)
    client, provider = langfuse_client("http://127.0.0.1:9", span_exporter=_DropSpans())
    return openrouter, catalog, client, provider


def memory_rows(quick: bool) -> list[Row]:
    from langfuse.langchain import CallbackHandler as LangfuseCallbackHandler

    from langfuse_openrouter_callbacks.langchain import CallbackHandler

    from .handlers import capture_langchain

    total = 5_000 if quick else 100_000
    reference = 1_000 if quick else 20_000
    openrouter, catalog, client, provider = _setup("scale-")
    try:
        start_args, start_kwargs, response, end_kwargs = capture_langchain(openrouter.base_url)
        openrouter.stop()
        start = (start_args, start_kwargs)
        ours = CallbackHandler(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog)
        catalog.wait_until_idle(5)
        mine = sequential(ours, start, response, end_kwargs, total, client)
        theirs_handler = LangfuseCallbackHandler(public_key=BENCH_PUBLIC_KEY)
        theirs = sequential(theirs_handler, start, response, end_kwargs, reference, client)
        catalog_state = {
            "_fallback": len(catalog._fallback),
            "_endpoints": len(catalog._endpoints),
            "_queued": len(catalog._queued),
        }
    finally:
        close_langfuse(client, provider)

    per_gen = mine["left"] / total
    per_gen_ref = theirs["left"] / reference
    leftover = {k: v for k, v in mine["state"].items() if v}
    curve = " ".join(f"{s / 1024:.0f}" for s in mine["samples"])
    rows = [
        Row(
            NAME,
            f"sequential: memory left after {total:,} generations (ours)",
            f"{mine['left'] / 1024:.1f} kB = {per_gen:.1f} B/generation",
            f"<= {TARGET_GROWTH_BYTES_PER_GEN} B/gen",
            per_gen <= TARGET_GROWTH_BYTES_PER_GEN,
            per_gen,
        ),
        Row(
            NAME,
            f"  Langfuse's handler, {reference:,} generations (reference)",
            f"{theirs['left'] / 1024:.1f} kB = {per_gen_ref:.1f} B/generation",
            number=per_gen_ref,
        ),
        Row(NAME, "  traced memory every 10% of the run (kB, ours)", curve),
        Row(
            NAME,
            "  peak traced memory during the run (ours / Langfuse's)",
            f"{mine['peak'] / 1024:.0f} / {theirs['peak'] / 1024:.0f} kB",
        ),
        Row(
            NAME,
            f"  per-run state left in the handler (ours; {len(mine['state'])} dicts)",
            ", ".join(f"{k}={v}" for k, v in leftover.items()) or "all empty",
            "all empty",
            not leftover,
        ),
        Row(NAME, "  catalog state after the run", ", ".join(f"{k}={v}" for k, v in catalog_state.items())),
        Row(
            NAME,
            "  start + end per generation under tracemalloc (ours / Langfuse's)",
            f"{mine['us_per_generation']:.0f} / {theirs['us_per_generation']:.0f} µs",
        ),
    ]
    notes = [
        f"dicts checked: {', '.join(mine['state'])}",
        "tracemalloc's own snapshots and this benchmark's lists are filtered out of the figures.",
        *("largest growth, ours: " + line for line in mine["top"]),
    ]
    print_table(f"{NAME}: sequential generations, memory (tracemalloc after a warm-up)", rows, notes)
    return rows


# ---------------------------------------------------------------------------- LlamaIndex queries, memory

TARGET_GROWTH_BYTES_PER_QUERY = 16  # as per generation: a query leaving its spans behind shows as 1,000s

# The LlamaIndex handler's per-span state: empty once the queries have ended, but `_ended` (a bounded
# memory of ended spans, for children that start late) and `_streams` (weak, per returned generator).
_LLAMA_INDEX_STATE = ("_open", "_aliases", "_generations", "_streams", "_ended")
_ENDED_KEPT = 4096  # llama_index._ENDED_KEPT


def _query_engine(base_url: str, streaming: bool = False) -> Any:
    from llama_index.core import Document, VectorStoreIndex

    from langfuse_openrouter_callbacks.demo.embedding import HashEmbedding

    from .handlers import openrouter_llm

    index = VectorStoreIndex.from_documents(
        [Document(text="Refunds take 5 to 7 business days."), Document(text="Support is open 9 to 5.")],
        embed_model=HashEmbedding(),
    )
    return index.as_query_engine(llm=openrouter_llm(base_url), similarity_top_k=1, streaming=streaming)


QUESTION = f"How long do refunds take? {marker(7)}"


def capture_query(base_url: str) -> list[Any]:
    """One real `VectorStoreIndex` query (retrieval, embedding, synthesis, an OpenRouter call), as the
    root dispatcher's handlers see it."""
    from .handlers import capture_notices

    engine = _query_engine(base_url)
    notices = capture_notices(lambda: engine.query(QUESTION))
    kinds = {type(n.event).__name__ for n in notices if n.kind == "event"}
    assert {"QueryStartEvent", "RetrievalEndEvent", "LLMChatEndEvent"} <= kinds, kinds
    return notices


def llama_index_sequential(
    handler: Any, query: Any, spans: int, total: int, client: Any, warm_up: int
) -> dict[str, Any]:
    """`total` calls of `query()`; tracemalloc after a warm-up. Figures and the handler's state."""

    def queries(count: int) -> None:
        for i in range(count):
            query()
            if i % 100 == 99:
                client.flush()  # keep the exporter's queue (2,048 spans) from overflowing

    queries(warm_up)  # caches, lazily built structures, the exporter's queue
    client.flush()
    settle()
    tracemalloc.start()
    # The handler keeps the last 4,096 ended spans (for children that start late): a bounded memory whose
    # entries were allocated before tracemalloc started. Cycle it through once under tracemalloc first,
    # so that replacing its entries during the run counts as what it is: nothing.
    queries(_ENDED_KEPT // spans + 100)
    client.flush()
    gc.collect()
    ring = tracemalloc.get_traced_memory()[0]
    before = tracemalloc.take_snapshot()
    baseline = tracemalloc.get_traced_memory()[0]
    samples = []
    step = max(1, total // 10)
    t0 = time.perf_counter()
    for done in range(0, total, step):
        queries(min(step, total - done))
        client.flush()
        gc.collect()  # what is left, not what awaits the collector
        samples.append(tracemalloc.get_traced_memory()[0] - baseline)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - baseline
    after = _ours(tracemalloc.take_snapshot())
    before = _ours(before)
    tracemalloc.stop()
    left = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    state = {name: len(getattr(handler, name)) for name in _LLAMA_INDEX_STATE}
    return {
        "left": left,
        "peak": peak,
        "ring": ring,
        "samples": samples,
        "top": _top_growth(before, after),
        "state": state,
        "us_per_query": elapsed / total * 1e6,
    }


def _memory_rows(label: str, total: int, spans: int, figures: dict[str, Any]) -> list[Row]:
    samples = figures["samples"]
    half = samples[len(samples) // 2 - 1]
    slope = (samples[-1] - half) / (total - total // 2)
    state = figures["state"]
    leftover = {k: v for k, v in state.items() if v and k != "_ended"}
    return [
        Row(
            NAME,
            f"LlamaIndex {label}: memory growth over the 2nd half of {total:,} ({spans} spans each)",
            f"{(samples[-1] - half) / 1024:.1f} kB = {slope:.1f} B/query",
            f"<= {TARGET_GROWTH_BYTES_PER_QUERY} B/query",
            slope <= TARGET_GROWTH_BYTES_PER_QUERY,
            slope,
        ),
        Row(
            NAME,
            "  memory left after the whole run",
            f"{figures['left'] / 1024:.1f} kB = {figures['left'] / total:.1f} B/query",
        ),
        Row(NAME, "  traced memory every 10% of the run (kB)", " ".join(f"{s / 1024:.0f}" for s in samples)),
        Row(NAME, "  peak traced memory during the run", f"{figures['peak'] / 1024:.0f} kB"),
        Row(
            NAME,
            f"  held by the handler's memory of the last {state['_ended']:,} ended spans (bounded)",
            f"{figures['ring'] / 1024:.0f} kB = {figures['ring'] / max(1, state['_ended']):.0f} B/span",
        ),
        Row(
            NAME,
            "  per-call state left in the handler (ended spans kept: bounded)",
            ", ".join(f"{k}={v}" for k, v in state.items()),
            "only _ended",
            not leftover,
        ),
        Row(NAME, "  one query under tracemalloc", f"{figures['us_per_query']:.0f} µs"),
    ]


def llama_index_memory_rows(quick: bool) -> list[Row]:
    from langfuse_openrouter_callbacks.llama_index import LlamaIndexHandler, set_global_handler

    from .handlers import deliver, fresh

    total, streamed = (1_000, 200) if quick else (20_000, 2_000)
    openrouter, catalog, client, provider = _setup("scale-li-")
    try:
        notices = capture_query(openrouter.base_url)
        spans = sum(n.kind == "enter" for n in notices)
        handler = LlamaIndexHandler(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog)
        catalog.wait_until_idle(5)

        def replayed() -> None:
            for notice in fresh(notices):
                deliver(handler, notice)

        mine = llama_index_sequential(handler, replayed, spans, total, client, min(2000, total // 5))
        # Streams for real: the handler on the dispatcher, each answer read to its end over HTTP. Counted
        # rather than traced (tracemalloc makes a real query ~10x slower): the live objects per type.
        engine = _query_engine(openrouter.base_url, streaming=True)
        live = set_global_handler(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog)
        try:
            streams = streamed_queries(live, engine, streamed, client)
        finally:
            live.close()
    finally:
        close_langfuse(client, provider)
        openrouter.stop()
    rows = _memory_rows("queries (replayed)", total, spans, mine)
    grown = streams["grown"]
    second_half = streamed - streamed // 2
    # one object left behind per query would be +1,000; the ring's phase moves the counts by a few
    tolerance = second_half // 10
    leftover = {k: v for k, v in streams["state"].items() if v and k != "_ended"}
    rows += [
        Row(
            NAME,
            f"LlamaIndex streamed queries (real, HTTP): live objects gained in the last {second_half:,}",
            ", ".join(f"{k} {v:+d}" for k, v in grown.items()),
            f"each < {tolerance}",
            all(v < tolerance for v in grown.values()),
        ),
        Row(
            NAME,
            "  per-call state left in the handler",
            ", ".join(f"{k}={v}" for k, v in streams["state"].items()),
            "only _ended",
            not leftover,
        ),
        Row(NAME, "  one streamed query, read to its end", f"{streams['us_per_query']:.0f} µs"),
    ]
    notes = [
        "replayed: the notices (span enters and exits, events) of one real query, with fresh span ids;",
        "streamed: real streaming queries to the local OpenRouter, each response_gen read to its end;",
        "  live objects counted after a collection, at half-time and at the end, by type and in all;",
        "tracemalloc's own snapshots and this benchmark's lists are filtered out of the figures.",
        *("largest growth, replayed: " + line for line in mine["top"]),
    ]
    print_table(f"{NAME}: LlamaIndex queries, memory (tracemalloc after a warm-up)", rows, notes)
    return rows


_COUNTED = ("_Span", "_LLMCall", "LangfuseSpan", "LangfuseGeneration", "finalize", "StreamingResponse")


def _live() -> dict[str, int]:
    gc.collect()
    counts = dict.fromkeys(_COUNTED, 0)
    objects = gc.get_objects()
    for obj in objects:
        name = type(obj).__name__
        if name in counts:
            counts[name] += 1
    counts["gc-tracked objects"] = len(objects)
    return counts


def streamed_queries(handler: Any, engine: Any, total: int, client: Any) -> dict[str, Any]:
    """`total` streamed queries read to their end; live objects at half-time and at the end."""

    def queries(count: int) -> None:
        for i in range(count):
            assert "".join(engine.query(QUESTION).response_gen)
            if i % 100 == 99:
                client.flush()

    queries(_ENDED_KEPT // 10 + 100)  # warm-up, and the memory of ended spans full
    client.flush()
    queries(total // 2)
    client.flush()
    half = _live()
    t0 = time.perf_counter()
    queries(total - total // 2)
    elapsed = time.perf_counter() - t0
    client.flush()
    end = _live()
    grown = {k: end[k] - half[k] for k in end}
    return {
        "grown": grown,
        "state": {name: len(getattr(handler, name)) for name in _LLAMA_INDEX_STATE},
        "us_per_query": elapsed / (total - total // 2) * 1e6,
    }


# ---------------------------------------------------------------------------- concurrent chains


async def _chains(handler: Any, base_url: str, numbers: range) -> float:
    """`numbers` chains at once through `handler`; seconds for the whole gather."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer questions about the shop's handbook."), ("user", "{question}")]
    )
    llm = ChatOpenAI(base_url=base_url, api_key="sk-or-bench", model=MODEL, max_retries=0, timeout=120)
    chain = prompt | llm | StrOutputParser()
    t0 = time.perf_counter()
    answers = await asyncio.gather(
        *(
            chain.ainvoke({"question": f"Question {n}? {marker(n)}"}, config={"callbacks": [handler]})
            for n in numbers
        )
    )
    elapsed = time.perf_counter() - t0
    assert len(answers) == len(numbers) and all(answers)
    return elapsed


def _check_generations(spans: list[Any], numbers: range) -> tuple[int, list[str]]:
    """How many generations carry exactly their own call's usage and cost; the first mismatches."""
    from langfuse_openrouter_callbacks.langfuse_fields import read_generation

    good, problems, seen = 0, [], set()
    for span in spans:
        generation = read_generation(span.attributes)
        if generation is None:
            continue
        n = call_number(generation.openrouter.get("generation_id"))
        if n is None:
            problems.append(f"generation without our id: {generation.openrouter}")
            continue
        usage = usage_for(n)
        details = usage["prompt_tokens_details"]
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        uncached = usage["prompt_tokens"] - details["cached_tokens"] - details["cache_write_tokens"]
        expected = {
            "input": uncached,
            "input_cache_read": details["cached_tokens"],
            "input_cache_creation": details["cache_write_tokens"],
            "output": usage["completion_tokens"] - reasoning,
            "output_reasoning": reasoning,
            "total": usage["total_tokens"],
        }
        expected = {k: v for k, v in expected.items() if v or k in ("input", "output", "total")}
        cost_ok = abs(generation.cost_details.get("total", -1) - usage["cost"]) < 1e-12
        if generation.usage_details == expected and cost_ok and n not in seen and n in numbers:
            good += 1
            seen.add(n)
        elif len(problems) < 3:
            problems.append(f"call {n}: usage {generation.usage_details} cost {generation.cost_details}")
    return good, problems


async def _rounds(
    ours: Any, theirs: Any, base_url: str, chains: int, rounds: int, client: Any, receiver: Any
) -> tuple[dict[str, list[float]], list[tuple[int, list[str]]]]:
    """Alternating rounds of `chains` concurrent chains per handler, in one event loop (LangChain keeps
    one async HTTP client per base URL); our generations are checked after each of our rounds."""
    await _chains(ours, base_url, range(20))  # warm-up: imports, connections, caches
    await _chains(theirs, base_url, range(20))
    client.flush()
    receiver.spans.clear()
    settle()
    seconds: dict[str, list[float]] = {"ours": [], "langfuse": []}
    checked: list[tuple[int, list[str]]] = []
    for r in range(rounds):
        order = [("ours", ours), ("langfuse", theirs)]
        for name, handler in order if r % 2 == 0 else order[::-1]:
            gc.collect()  # (cheap: the imports are frozen)
            seconds[name].append(await _chains(handler, base_url, range(chains)))
            client.flush()  # the export finishes outside the timed gather
            spans = list(receiver.spans)
            receiver.spans.clear()
            if name == "ours":
                checked.append(_check_generations(spans, range(chains)))
    return seconds, checked


def concurrency_rows(quick: bool) -> list[Row]:
    from langfuse.langchain import CallbackHandler as LangfuseCallbackHandler

    from langfuse_openrouter_callbacks import PriceCatalog
    from langfuse_openrouter_callbacks.demo.langfuse_server import EmbeddedLangfuse
    from langfuse_openrouter_callbacks.langchain import CallbackHandler

    from ._servers import spawn_openrouter

    chains, rounds = (200, 3) if quick else (1000, 7)
    receiver = EmbeddedLangfuse().start()
    cache_dir = scratch("concurrency-")
    client, provider = langfuse_client(receiver.base_url)
    rows: list[Row] = []
    try:
        with spawn_openrouter() as base_url:
            os.environ["OPENROUTER_API_BASE"] = base_url
            write_price_cache(
                cache_dir, base_url, synthetic_models(1000), endpoints={MODEL: endpoint_entries()}
            )
            catalog = PriceCatalog(api_base=base_url, cache_dir=cache_dir)
            ours = CallbackHandler(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog)
            theirs = LangfuseCallbackHandler(public_key=BENCH_PUBLIC_KEY)
            catalog.wait_until_idle(5)
            seconds, checked = asyncio.run(_rounds(ours, theirs, base_url, chains, rounds, client, receiver))
            state = {k: v for k, v in _state_sizes(ours).items() if v}
    finally:
        close_langfuse(client, provider)
        receiver.stop()

    throughput = {k: [chains / s for s in v] for k, v in seconds.items()}
    ratio = Stats.of(ratios(throughput["ours"], throughput["langfuse"]))
    mine, theirs_s = Stats.of(throughput["ours"]), Stats.of(throughput["langfuse"])
    good = min(g for g, _ in checked)
    problems = [p for _, ps in checked for p in ps][:3]
    rows = [
        Row(
            NAME,
            f"concurrent: throughput ratio ours / Langfuse's ({chains:,} chains)",
            ratio.fmt("x"),
            f">= {TARGET_CONCURRENT_RATIO}",
            ratio.median >= TARGET_CONCURRENT_RATIO,
            ratio.median,
        ),
        Row(NAME, "  chains per second, ours", mine.fmt("/s", 0), number=mine.median),
        Row(NAME, "  chains per second, Langfuse's handler", theirs_s.fmt("/s", 0), number=theirs_s.median),
        Row(
            NAME,
            "  generations with their own call's usage and cost (worst round)",
            f"{good:,} of {chains:,}",
            f"= {chains:,}",
            good == chains,
            good,
        ),
        Row(
            NAME,
            "  per-run state left in our handler",
            ", ".join(f"{k}={v}" for k, v in state.items()) or "none",
            "none",
            not state,
        ),
    ]
    print_table(
        f"{NAME}: {chains:,} concurrent async chains ({rounds} rounds per handler, alternating)",
        rows,
        [f"mismatch: {p}" for p in problems]
        + ["OpenRouter runs in its own process; spans are read back from the embedded Langfuse receiver."],
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 sequential, 200 concurrent")
    parser.add_argument("--skip-memory", action="store_true", help="only the concurrent chains")
    parser.add_argument("--skip-concurrency", action="store_true", help="only the sequential run")
    args = parser.parse_args(argv)
    begin()
    rows: list[Row] = []
    if not args.skip_memory:
        rows += memory_rows(args.quick)
        rows += llama_index_memory_rows(args.quick)
    if not args.skip_concurrency:
        rows += concurrency_rows(args.quick)
    emit(rows)


if __name__ == "__main__":
    main()
