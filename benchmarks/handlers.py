"""Benchmark 1, handler overhead: what our enrichment adds to the end of one LLM call.

LangChain: our `CallbackHandler.on_llm_end` against `langfuse.langchain.CallbackHandler.on_llm_end` on
the same OpenRouter `LLMResult`. LlamaIndex: our `LlamaIndexHandler` (what `set_global_handler()` puts on
LlamaIndex's root dispatcher) handling the `LLMChatEndEvent` of a response whose raw `ChatCompletion`
carries OpenRouter's usage, against the same handler recording the same response's token usage as for
any provider (nothing priced). The events are captured from real `ChatOpenAI` and LlamaIndex
`OpenRouter` calls to a local OpenRouter, then replayed: each timed end event gets its own untimed start
(LangChain: `on_chat_model_start`; LlamaIndex: the call's span enters and start event, and its span
exits after) with fresh ids. Spans are real (a real Langfuse client);
they are exported to the embedded Langfuse receiver between blocks, outside the timed region (the
export is timed apart).

    python -m benchmarks.handlers [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from ._common import (
    Row,
    Stats,
    begin,
    emit,
    interleaved,
    print_table,
    ratios,
    scratch,
)
from ._fixtures import (
    BENCH_PUBLIC_KEY,
    MODEL,
    close_langfuse,
    endpoint_entries,
    langfuse_client,
    marker,
    synthetic_models,
    write_price_cache,
)

NAME = "1. handler overhead"
TARGET_RATIO = 1.15
SYSTEM = "You answer questions about the shop's handbook. " * 40


# ---------------------------------------------------------------------------- capture real events


def capture_langchain(
    base_url: str, integration: str = "ChatOpenAI"
) -> tuple[tuple[Any, ...], dict[str, Any], Any, dict[str, Any]]:
    """One real call of `integration` (`ChatOpenAI` or `ChatOpenRouter`) to the local OpenRouter: the
    start event's arguments and the LLMResult."""
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI
    from langchain_openrouter import ChatOpenRouter

    seen: dict[str, Any] = {}

    class Capture(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            seen["start"] = ((serialized, messages), kwargs)

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            seen["end"] = (response, kwargs)

    llm_class = {"ChatOpenAI": ChatOpenAI, "ChatOpenRouter": ChatOpenRouter}[integration]
    llm = llm_class(base_url=base_url, api_key="sk-or-bench", model=MODEL, max_retries=0, temperature=0.2)
    llm.invoke(
        [SystemMessage(SYSTEM), HumanMessage(f"How long do refunds take? {marker(6)}")],
        config={"callbacks": [Capture()], "metadata": {"app": "benchmarks"}},
    )
    start_args, start_kwargs = seen["start"]
    response, end_kwargs = seen["end"]
    for key in ("run_id", "parent_run_id"):
        start_kwargs.pop(key, None)
        end_kwargs.pop(key, None)
    if integration == "ChatOpenAI":
        _check_langchain_result(response)
    else:  # ChatOpenRouter: OpenRouter's cost beside LangChain's usage metadata
        message = response.generations[0][0].message
        assert message.usage_metadata["input_token_details"]["cache_creation"] > 0, message.usage_metadata
        assert message.response_metadata.get("cost") and message.response_metadata.get("cost_details")
    return start_args, start_kwargs, response, end_kwargs


def _check_langchain_result(response: Any) -> None:
    message = response.generations[0][0].message
    usage = message.usage_metadata
    assert usage["input_token_details"]["cache_read"] > 0, usage
    assert usage["input_token_details"]["cache_creation"] > 0, usage
    assert usage["output_token_details"]["reasoning"] > 0, usage
    raw = response.llm_output["token_usage"]
    assert {"cost", "cost_details", "is_byok", "prompt_tokens_details"} <= set(raw), raw
    assert response.llm_output["id"].startswith("gen-") and response.llm_output["model_name"], (
        response.llm_output
    )
    assert message.response_metadata["token_usage"]["cost"] == raw["cost"]


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice LlamaIndex's root dispatcher gave its handlers: a span's enter, exit or drop; an event."""

    kind: str  # "enter", "exit", "drop" or "event"
    id_: str = ""
    parent_id: str | None = None
    bound_args: Any = None
    instance: Any = None
    result: Any = None  # an exit's result, a drop's error
    event: Any = None


def capture_notices(call: Any) -> list[Notice]:
    """Every span notice and event LlamaIndex's root dispatcher sends while `call()` runs, in order."""
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

    notices: list[Notice] = []

    class Spans(BaseSpanHandler[Any]):
        def span_enter(
            self, id_: str, bound_args: Any, instance: Any = None, parent_id: Any = None, **kw: Any
        ) -> None:
            notices.append(Notice("enter", id_, parent_id, bound_args, instance))

        def span_exit(
            self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kw: Any
        ) -> None:
            notices.append(Notice("exit", id_, None, bound_args, instance, result))

        def span_drop(
            self, id_: str, bound_args: Any, instance: Any = None, err: Any = None, **kw: Any
        ) -> None:
            notices.append(Notice("drop", id_, None, bound_args, instance, err))

        def new_span(self, *args: Any, **kwargs: Any) -> None:
            return None

        def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
            return None

        def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
            return None

    class Events(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            notices.append(Notice("event", event=event))

    dispatcher = get_dispatcher()
    spans, events = Spans(), Events()
    dispatcher.add_span_handler(spans)
    dispatcher.add_event_handler(events)
    try:
        call()
    finally:
        dispatcher.span_handlers.remove(spans)
        dispatcher.event_handlers.remove(events)
    return notices


def openrouter_llm(base_url: str) -> Any:
    from llama_index.llms.openrouter import OpenRouter

    return OpenRouter(model=MODEL, api_base=base_url, api_key="sk-or-bench", max_retries=0, temperature=0.2)


def capture_llama_index(base_url: str) -> list[Notice]:
    """One real LlamaIndex `OpenRouter.chat` to the local OpenRouter, as the dispatcher's handlers see it:
    two spans (`OpenRouter.chat` and the `OpenAI.chat` it delegates to), its start and end events."""
    from llama_index.core.base.llms.types import ChatMessage

    llm = openrouter_llm(base_url)
    messages = [
        ChatMessage(role="system", content=SYSTEM),
        ChatMessage(role="user", content=f"How long do refunds take? {marker(6)}"),
    ]
    notices = capture_notices(lambda: llm.chat(messages))
    assert [n.kind for n in notices] == ["enter", "enter", "event", "event", "exit", "exit"], notices
    end = notices[3].event
    assert type(end).__name__ == "LLMChatEndEvent" and end.response.raw.usage.model_extra.get("cost"), end
    return notices


def end_event(notices: list[Notice]) -> Any:
    """The call's `LLMChatEndEvent` (what the handler enriches and records the generation at)."""
    return next(n.event for n in notices if n.kind == "event" and type(n.event).__name__ == "LLMChatEndEvent")


def _with_response(notices: list[Notice], response: Any, instance: Any = None) -> list[Notice]:
    out = []
    for notice in notices:
        if notice.kind == "event" and type(notice.event).__name__ == "LLMChatEndEvent":
            notice = replace(notice, event=notice.event.model_copy(update={"response": response}))
        elif instance is not None and notice.instance is not None:
            notice = replace(notice, instance=instance)
        out.append(notice)
    return out


def as_another_provider(notices: list[Notice]) -> list[Notice]:
    """The same call as if another provider (OpenAI) had answered it: an `OpenAI` LLM at OpenAI's URL, the
    same token counts, without what only OpenRouter sends (cost, BYOK flag, `gen-` id, provider). The
    handler records its usage as Langfuse records any provider's (`usage_details`), and prices nothing."""
    from llama_index.llms.openai import OpenAI
    from openai.types import CompletionUsage

    response = end_event(notices).response
    usage = response.raw.usage
    plain_usage = CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=usage.prompt_tokens_details,
        completion_tokens_details=usage.completion_tokens_details,
    )
    raw = response.raw.model_copy(update={"usage": plain_usage, "id": "chatcmpl-bench"})
    raw.__pydantic_extra__ = {}  # no `provider`
    openai = OpenAI(
        model="gpt-4.1-mini", api_key="sk-bench", api_base="https://api.openai.com/v1", temperature=0.2
    )
    return _with_response(notices, response.model_copy(update={"raw": raw}), instance=openai)


def usage_only_handler(**kwargs: Any) -> Any:
    """Our LlamaIndex handler recording every call as another provider's: the output, model and the
    token usage it reads as `usage_details`, nothing priced. What a Langfuse LlamaIndex integration
    records (Langfuse has no LlamaIndex handler of its own to compare with)."""
    from langfuse_openrouter_callbacks.llama_index import LlamaIndexHandler

    class UsageOnly(LlamaIndexHandler):
        def _is_openrouter(self, llm: Any, usage: Any) -> bool:
            return False

    return UsageOnly(**kwargs)


def without_usage(notices: list[Notice]) -> list[Notice]:
    """The same call, its raw `ChatCompletion` without any usage: recording the output only."""
    response = end_event(notices).response
    raw = response.raw.model_copy(update={"usage": None})
    return _with_response(notices, response.model_copy(update={"raw": raw, "additional_kwargs": {}}))


# ---------------------------------------------------------------------------- timed blocks


def langchain_block(
    handler: Any,
    start: tuple[tuple[Any, ...], dict[str, Any]],
    response: Any,
    end_kwargs: dict[str, Any],
    n: int,
    profiler: cProfile.Profile | None = None,
    starts: list[float] | None = None,
) -> float:
    """`n` events: untimed `on_chat_model_start`, timed `on_llm_end`; µs per `on_llm_end`.

    `starts`, when given, receives µs per `on_chat_model_start` (timed apart, for information).
    """
    (serialized, messages), start_kwargs = start
    counter = time.perf_counter_ns
    total = started = 0
    for _ in range(n):
        run_id = uuid.uuid4()
        s0 = counter()
        handler.on_chat_model_start(serialized, messages, run_id=run_id, parent_run_id=None, **start_kwargs)
        started += counter() - s0
        if profiler is not None:
            profiler.enable()
        t0 = counter()
        handler.on_llm_end(response, run_id=run_id, parent_run_id=None, **end_kwargs)
        total += counter() - t0
        if profiler is not None:
            profiler.disable()
    if starts is not None:
        starts.append(started / n / 1000)
    return total / n / 1000


def fresh(notices: list[Notice]) -> list[Notice]:
    """The notices of one more call like the captured one: fresh span ids, its events carrying them."""
    suffix = "-" + uuid.uuid4().hex[:12]
    ids = {n.id_: n.id_ + suffix for n in notices if n.kind == "enter"}
    out = []
    for notice in notices:
        if notice.kind == "event":
            event = notice.event.model_copy(update={"span_id": ids.get(notice.event.span_id)})
            out.append(replace(notice, event=event))
        else:
            out.append(replace(notice, id_=ids[notice.id_], parent_id=ids.get(notice.parent_id or "")))
    return out


def deliver(handler: Any, notice: Notice) -> None:
    """Hand one notice to `handler`'s span or event handler, as LlamaIndex's dispatcher does."""
    if notice.kind == "event":
        handler._event_handler.handle(notice.event)
    elif notice.kind == "enter":
        handler._span_handler.span_enter(
            id_=notice.id_, bound_args=notice.bound_args, instance=notice.instance, parent_id=notice.parent_id
        )
    elif notice.kind == "exit":
        handler._span_handler.span_exit(
            id_=notice.id_, bound_args=notice.bound_args, instance=notice.instance, result=notice.result
        )
    else:
        handler._span_handler.span_drop(
            id_=notice.id_, bound_args=notice.bound_args, instance=notice.instance, err=notice.result
        )


_END_EVENTS = ("LLMChatEndEvent", "LLMCompletionEndEvent")


def _is_end(notice: Notice) -> bool:
    return notice.kind == "event" and type(notice.event).__name__ in _END_EVENTS


def llama_index_block(
    handler: Any,
    notices: list[Notice],
    n: int,
    profiler: cProfile.Profile | None = None,
    whole_calls: list[float] | None = None,
) -> float:
    """`n` calls, every notice delivered, the LLM's end event timed; µs per end event.

    The calls' fresh ids and event copies are made before the block. `whole_calls`, when given,
    receives µs per call for all of its notices (two span enters and exits, start and end event).
    """
    calls = [fresh(notices) for _ in range(n)]
    counter = time.perf_counter_ns
    total = whole = 0
    for call in calls:
        c0 = counter()
        for notice in call:
            if _is_end(notice):
                if profiler is not None:
                    profiler.enable()
                t0 = counter()
                deliver(handler, notice)
                total += counter() - t0
                if profiler is not None:
                    profiler.disable()
            else:
                deliver(handler, notice)
        whole += counter() - c0
    if whole_calls is not None:
        whole_calls.append(whole / n / 1000)
    return total / n / 1000


class Exported:
    """Times the (untimed) export after each block: `flush()` of the Langfuse client, per event."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.us_per_event: dict[str, list[float]] = {}

    def wrap(self, name: str, block: Any, n: int) -> Any:
        def run() -> float:
            figure = block()
            t0 = time.perf_counter_ns()
            self.client.flush()
            self.us_per_event.setdefault(name, []).append((time.perf_counter_ns() - t0) / n / 1000)
            return figure

        return run


def profile(label: str, block: Any, top: int = 25) -> None:
    """Print where the timed calls' time goes (the start events are not profiled)."""
    profiler = cProfile.Profile()
    block(profiler)
    print(f"\n-- profile: {label}, end events only (cumulative time, top {top})")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(top)


def _variants(catalog: Any) -> dict[str, Any]:
    """Diagnostic variants of our LangChain handler (not the package's code): what each part costs."""
    from langfuse_openrouter_callbacks.langchain import CallbackHandler

    class ComputeOnly(CallbackHandler):
        """Reads and prices the usage, then lets Langfuse's own `on_llm_end` record the call: the
        compute share (Langfuse's reading of the usage included, which ours otherwise replaces)."""

        def _enrichment(self, response: Any, call: Any) -> Any:
            super()._enrichment(response, call)
            return None

    class RecordOnly(CallbackHandler):
        """Records the fields of an enrichment computed once beforehand: the recording share."""

        computed: Any = None

        def _enrichment(self, response: Any, call: Any) -> Any:
            if self.computed is None:
                self.computed = super()._enrichment(response, call)
            return self.computed

    return {
        "compute only": ComputeOnly(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog),
        "record only": RecordOnly(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog),
    }


def diagnosis(
    theirs: Any,
    catalog: Any,
    lc_start: Any,
    lc_response: Any,
    lc_end_kwargs: dict[str, Any],
    li_notices: list[Notice],
    rounds: int,
    per_block: int,
) -> list[Row]:
    """Where the added time goes: each step of the enrichment on its own (µs per call, warm caches),
    and diagnostic variants of our handler timed in place, interleaved with Langfuse's handler."""
    from langfuse.langchain.CallbackHandler import _parse_usage

    from langfuse_openrouter_callbacks import OpenRouterUsage
    from langfuse_openrouter_callbacks._enrich import enrich
    from langfuse_openrouter_callbacks.langchain import CallbackHandler
    from langfuse_openrouter_callbacks.langfuse_fields import generation_attributes

    from ._common import per_call_us

    message = lc_response.generations[-1][-1].message
    metadata = {**lc_response.llm_output, **message.response_metadata}
    usage = OpenRouterUsage.from_langchain(message.usage_metadata, metadata, model=MODEL)
    raw = end_event(li_notices).response.raw
    breakdown = enrich(usage, catalog, requested_model=MODEL).breakdown

    steps = interleaved(
        {
            "from_langchain": per_call_us(
                lambda: OpenRouterUsage.from_langchain(message.usage_metadata, metadata, model=MODEL), 500
            ),
            "from_openrouter": per_call_us(lambda: OpenRouterUsage.from_openrouter(raw), 500),
            "enrich": per_call_us(lambda: enrich(usage, catalog, requested_model=MODEL), 500),
            "attributes": per_call_us(lambda: generation_attributes(usage, breakdown), 500),
            "langfuse_parse_usage": per_call_us(lambda: _parse_usage(lc_response), 500),
        },
        rounds,
    )
    handlers = {
        "ours": CallbackHandler(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog),
        **_variants(catalog),
    }
    handlers["langfuse"] = theirs
    client = theirs._langfuse_client

    def block(handler: Any) -> Any:
        def run() -> float:
            figure = langchain_block(handler, lc_start, lc_response, lc_end_kwargs, per_block)
            client.flush()
            return figure

        return run

    in_place = interleaved({name: block(h) for name, h in handlers.items()}, rounds)
    step = {k: Stats.of(v) for k, v in steps.items()}
    ratio = {k: Stats.of(ratios(v, in_place["langfuse"])) for k, v in in_place.items() if k != "langfuse"}
    place = {k: Stats.of(v) for k, v in in_place.items()}
    return [
        Row(NAME, "where the added time goes; steps on their own:", ""),
        Row(
            NAME, "  OpenRouterUsage.from_langchain (LangChain's usage)", step["from_langchain"].fmt("µs", 1)
        ),
        Row(
            NAME,
            "  OpenRouterUsage.from_openrouter(ChatCompletion) (LlamaIndex)",
            step["from_openrouter"].fmt("µs", 1),
        ),
        Row(NAME, "  enrich = pricing_for + compute_cost", step["enrich"].fmt("µs", 1)),
        Row(NAME, "  generation_attributes (the span attributes)", step["attributes"].fmt("µs", 1)),
        Row(
            NAME,
            "  Langfuse's _parse_usage (done by its handler; ours does not repeat it)",
            step["langfuse_parse_usage"].fmt("µs", 1),
        ),
        Row(NAME, "in place, LangChain on_llm_end (µs; ratio to Langfuse's):", ""),
        Row(NAME, "  Langfuse's handler", place["langfuse"].fmt("µs", 1)),
        Row(NAME, "  ours", f"{place['ours'].fmt('µs', 1)}; {ratio['ours'].median:.2f}x"),
        Row(
            NAME,
            "  ours computing, then Langfuse's own recording (diagnostic)",
            f"{place['compute only'].fmt('µs', 1)}; {ratio['compute only'].median:.2f}x",
        ),
        Row(
            NAME,
            "  ours recording an enrichment computed beforehand (diagnostic)",
            f"{place['record only'].fmt('µs', 1)}; {ratio['record only'].median:.2f}x",
        ),
    ]


# ---------------------------------------------------------------------------- the benchmark


def run(quick: bool, show_profile: bool = False) -> list[Row]:
    from langfuse.langchain import CallbackHandler as LangfuseCallbackHandler

    from langfuse_openrouter_callbacks import PriceCatalog
    from langfuse_openrouter_callbacks.demo.langfuse_server import EmbeddedLangfuse
    from langfuse_openrouter_callbacks.langchain import CallbackHandler
    from langfuse_openrouter_callbacks.langfuse_fields import read_generation
    from langfuse_openrouter_callbacks.llama_index import LlamaIndexHandler

    from ._servers import LocalOpenRouter

    rounds, per_block = (10, 100) if quick else (40, 250)
    openrouter = LocalOpenRouter().start()
    receiver = EmbeddedLangfuse().start()
    cache_dir = scratch("cache-")
    os.environ["OPENROUTER_API_BASE"] = openrouter.base_url
    write_price_cache(
        cache_dir, openrouter.base_url, synthetic_models(1000), endpoints={MODEL: endpoint_entries()}
    )
    catalog = PriceCatalog(api_base=openrouter.base_url, cache_dir=cache_dir)
    # Exports happen only when flushed between blocks: flush_at above a block's spans, a long interval.
    client, provider = langfuse_client(receiver.base_url, flush_at=1000, flush_interval=3600)
    rows: list[Row] = []
    try:
        lc_start_args, lc_start_kwargs, lc_response, lc_end_kwargs = capture_langchain(openrouter.base_url)
        cor_start_args, cor_start_kwargs, cor_response, cor_end_kwargs = capture_langchain(
            openrouter.base_url, "ChatOpenRouter"
        )
        li_call = capture_llama_index(openrouter.base_url)
        li_other_call = as_another_provider(li_call)
        li_bare = without_usage(li_call)

        ours = CallbackHandler(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog)
        theirs = LangfuseCallbackHandler(public_key=BENCH_PUBLIC_KEY)
        li = LlamaIndexHandler(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog)
        li_usage_only = usage_only_handler(public_key=BENCH_PUBLIC_KEY, price_catalog=catalog)
        catalog.wait_until_idle(5)

        lc_start = (lc_start_args, lc_start_kwargs)
        exported = Exported(client)

        starts: dict[int, list[float]] = {id(ours): [], id(theirs): []}

        def lc(handler: Any) -> Any:
            return lambda profiler=None: langchain_block(
                handler, lc_start, lc_response, lc_end_kwargs, per_block, profiler, starts[id(handler)]
            )

        def chat_openrouter(handler: Any) -> Any:
            start = (cor_start_args, cor_start_kwargs)
            return lambda: langchain_block(handler, start, cor_response, cor_end_kwargs, per_block)

        whole: dict[str, list[float]] = {"enriched": [], "plain": []}

        def li_block(notices: list[Notice], handler: Any = li, calls: list[float] | None = None) -> Any:
            return lambda profiler=None: llama_index_block(handler, notices, per_block, profiler, calls)

        li_enriched = li_block(li_call, calls=whole["enriched"])
        li_plain = li_block(li_call, li_usage_only, whole["plain"])
        li_stripped = li_block(li_other_call)
        # warm-up: imports, caches, the first span of each kind
        for block in (lc(ours), lc(theirs), chat_openrouter(ours), li_enriched, li_plain, li_stripped):
            block()
        for figures in (*starts.values(), *whole.values()):
            figures.clear()
        client.flush()
        receiver.spans.clear()

        lc_times = interleaved(
            {
                "ours": exported.wrap("lc ours", lc(ours), per_block),
                "langfuse": exported.wrap("lc langfuse", lc(theirs), per_block),
            },
            rounds,
        )
        client.flush()
        start_ours, start_theirs = Stats.of(starts[id(ours)]), Stats.of(starts[id(theirs)])
        lc_spans = list(receiver.spans)
        receiver.spans.clear()
        cor_times = interleaved(
            {
                "ours": exported.wrap("cor ours", chat_openrouter(ours), per_block),
                "langfuse": exported.wrap("cor langfuse", chat_openrouter(theirs), per_block),
            },
            max(6, rounds // 2),
        )
        client.flush()
        cor_spans = list(receiver.spans)
        receiver.spans.clear()
        li_times = interleaved(
            {
                "enriched": exported.wrap("li enriched", li_enriched, per_block),
                "plain": exported.wrap("li plain", li_plain, per_block),
                "stripped": exported.wrap("li stripped", li_stripped, per_block),
                "bare": exported.wrap("li bare", li_block(li_bare), per_block),
            },
            rounds,
        )
        client.flush()
        li_spans = list(receiver.spans)

        if show_profile:
            profile("LangChain on_llm_end, ours", lc(ours))
            profile("LangChain on_llm_end, Langfuse's", lc(theirs))
            profile("LlamaIndex LLM end event, enriched", li_enriched)
            profile("LlamaIndex LLM end event, usage only", li_plain)
            client.flush()

        def enriched(spans: list[Any]) -> tuple[int, int, int]:
            """Generations; those with OpenRouter's cost; those with token usage but no OpenRouter fields."""
            generations = [g for g in (read_generation(s.attributes) for s in spans) if g is not None]
            with_cost = [
                g
                for g in generations
                if g.openrouter.get("cost_source") == "openrouter"
                and g.usage_details.get("input_cache_creation")
                and g.cost_details.get("total")
            ]
            usage_only = [
                g for g in generations if g.usage_details.get("input_cache_read") and not g.openrouter
            ]
            return len(generations), len(with_cost), len(usage_only)

        events = rounds * per_block
        lc_gens, lc_enriched, _ = enriched(lc_spans)
        cor_events = max(6, rounds // 2) * per_block
        cor_gens, cor_enriched, _ = enriched(cor_spans)
        cor_ratio = Stats.of(ratios(cor_times["ours"], cor_times["langfuse"]))
        cor_ours, cor_theirs = Stats.of(cor_times["ours"]), Stats.of(cor_times["langfuse"])
        li_gens, li_enriched, li_usage_only = enriched(li_spans)

        lc_ratio = Stats.of(ratios(lc_times["ours"], lc_times["langfuse"]))
        li_ratio = Stats.of(ratios(li_times["enriched"], li_times["plain"]))
        ours_s, theirs_s = Stats.of(lc_times["ours"]), Stats.of(lc_times["langfuse"])
        rich_s, plain_s = Stats.of(li_times["enriched"]), Stats.of(li_times["plain"])
        stripped_ratio = Stats.of(ratios(li_times["enriched"], li_times["stripped"]))
        stripped_s, bare_s = Stats.of(li_times["stripped"]), Stats.of(li_times["bare"])
        whole_ratio = Stats.of(ratios(whole["enriched"], whole["plain"]))
        whole_rich, whole_plain = Stats.of(whole["enriched"]), Stats.of(whole["plain"])
        export = {k: Stats.of(v) for k, v in exported.us_per_event.items()}
        rows = [
            Row(
                NAME,
                "LangChain on_llm_end ratio ours / Langfuse's",
                lc_ratio.fmt("x"),
                f"<= {TARGET_RATIO}",
                lc_ratio.median <= TARGET_RATIO,
                lc_ratio.median,
            ),
            Row(NAME, "LangChain on_llm_end, ours", ours_s.fmt("µs", 1), number=ours_s.median),
            Row(NAME, "LangChain on_llm_end, Langfuse's", theirs_s.fmt("µs", 1), number=theirs_s.median),
            Row(
                NAME,
                "LangChain added per call",
                f"{ours_s.median - theirs_s.median:.1f} µs",
                number=ours_s.median - theirs_s.median,
            ),
            Row(
                NAME,
                "  information: the same with ChatOpenRouter's LLMResult, ours / Langfuse's",
                f"{cor_ratio.fmt('x')} ({cor_ours.median:.1f} / {cor_theirs.median:.1f} µs)",
            ),
            Row(
                NAME,
                "LlamaIndex LLM end event ratio enriched / usage only (the same response)",
                li_ratio.fmt("x"),
                f"<= {TARGET_RATIO}",
                li_ratio.median <= TARGET_RATIO,
                li_ratio.median,
            ),
            Row(NAME, "LlamaIndex LLM end event, enriched", rich_s.fmt("µs", 1), number=rich_s.median),
            Row(NAME, "LlamaIndex LLM end event, usage only", plain_s.fmt("µs", 1), number=plain_s.median),
            Row(
                NAME,
                "  information: ratio enriched / usage only of the response without OpenRouter's fields",
                f"{stripped_ratio.fmt('x')} ({stripped_s.median:.1f} µs)",
            ),
            Row(NAME, "  information: no usage at all", bare_s.fmt("µs", 1)),
            Row(
                NAME,
                f"LlamaIndex whole call ({len(li_call)} notices: span enters, events, exits),"
                " enriched / usage only",
                f"{whole_ratio.fmt('x')} ({whole_rich.median:.1f} / {whole_plain.median:.1f} µs;"
                f" {whole_rich.median / len(li_call):.1f} µs per notice)",
            ),
            Row(
                NAME,
                "LlamaIndex added per call",
                f"{rich_s.median - plain_s.median:.1f} µs",
                number=rich_s.median - plain_s.median,
            ),
            Row(
                NAME,
                "LangChain on_chat_model_start (not in the ratio), ours / Langfuse's",
                f"{start_ours.median:.1f} / {start_theirs.median:.1f} µs",
            ),
            Row(
                NAME,
                "export per generation (flush, not timed above): LangChain ours / Langfuse's",
                f"{export['lc ours'].median:.1f} / {export['lc langfuse'].median:.1f} µs",
            ),
            Row(
                NAME,
                "export per generation: LlamaIndex enriched / usage only",
                f"{export['li enriched'].median:.1f} / {export['li plain'].median:.1f} µs",
            ),
            Row(
                NAME,
                "generations received with OpenRouter cost (LangChain ours)",
                f"{lc_enriched} of {events} ({lc_gens} generations from both)",
                f"= {events}",
                lc_enriched == events and lc_gens == 2 * events,
            ),
            Row(
                NAME,
                "generations received with OpenRouter cost (LangChain ours, ChatOpenRouter)",
                f"{cor_enriched} of {cor_events} ({cor_gens} generations from both)",
                f"= {cor_events}",
                cor_enriched == cor_events and cor_gens == 2 * cor_events,
            ),
            Row(
                NAME,
                "generations received with OpenRouter cost (LlamaIndex enriched)",
                f"{li_enriched} of {events} ({li_gens} generations from all four)",
                f"= {events}",
                li_enriched == events and li_gens == 4 * events,
            ),
            Row(
                NAME,
                "generations received with token usage, no OpenRouter fields (LlamaIndex usage only)",
                f"{li_usage_only} of {2 * events} (both usage-only contenders)",
                f"= {2 * events}",
                li_usage_only == 2 * events,
            ),
        ]
        if show_profile or lc_ratio.median > TARGET_RATIO or li_ratio.median > TARGET_RATIO:
            rows += diagnosis(
                theirs, catalog, lc_start, lc_response, lc_end_kwargs, li_call, max(6, rounds // 2), per_block
            )
        print_table(
            f"{NAME} ({rounds} rounds x {per_block} events per contender, interleaved)",
            rows,
            [
                "ratios are per round (contenders paired in the same round), then the median and IQR;",
                "spans go to a real Langfuse client; exported to the embedded receiver between blocks.",
            ],
        )
    finally:
        close_langfuse(client, provider)
        receiver.stop()
        openrouter.stop()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a few seconds)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each contender")
    args = parser.parse_args(argv)
    begin()
    emit(run(args.quick, args.profile))


if __name__ == "__main__":
    main()
