"""LangChain calls that do not end the usual way: cancelled, left open, interleaved, ended by an error.

Real LangChain, langchain-openai, langchain-openrouter and Langfuse clients against the local fake
OpenRouter (slow answers, mid-stream errors) and OTLP receiver; assertions read what Langfuse
exported, and what the real OpenTelemetry SDK saw start and end.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from langchain_openrouter import ChatOpenRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor

from langfuse_openrouter_callbacks import PriceCatalog
from langfuse_openrouter_callbacks.langchain import CANCELLED_LEVEL, CANCELLED_MESSAGE, CallbackHandler
from tests.scenario import CACHED_CALL, DATED, REQUESTED, SONNET
from tests.support.openrouter_server import FakeOpenRouter, ResponseSpec
from tests.support.otlp_receiver import ExportedSpan

LEVEL = "langfuse.observation.level"
STATUS = "langfuse.observation.status_message"


class SpanCounter(SpanProcessor):
    """Counts the spans the tracer provider starts and ends (a real OpenTelemetry span processor)."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.ended: set[int] = set()
        self._lock = threading.Lock()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        with self._lock:
            self.started.add(span.context.span_id)

    def on_end(self, span: Any) -> None:
        with self._lock:
            self.ended.add(span.context.span_id)


@pytest.fixture
def span_counter(langfuse_tracer_provider: Any) -> SpanCounter:
    counter = SpanCounter()
    langfuse_tracer_provider.add_span_processor(counter)
    return counter


@pytest.fixture
def handler() -> CallbackHandler:
    return CallbackHandler(price_catalog=PriceCatalog({REQUESTED: SONNET}, offline=True))


def chat_openai(server: FakeOpenRouter) -> ChatOpenAI:
    return ChatOpenAI(base_url=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)


def assert_no_run_state(handler: CallbackHandler) -> None:
    """Nothing per run is left in our handler or in Langfuse's."""
    assert handler._calls == {}
    assert handler._runs == {} and handler._context_tokens == {}
    assert handler._run_states == {} and handler._root_run_states == {}
    assert handler._updated_completion_start_time_memo == set()


def level(generation: ExportedSpan) -> tuple[Any, Any]:
    return generation.attributes.get(LEVEL), generation.attributes.get(STATUS)


def exported(handler: CallbackHandler, client: Any) -> None:
    """The handler ends a dropped run as soon as LangChain lets go of it (in the background);
    its `flush()` ends those not ended yet, then exports."""
    handler.flush()
    client.flush()


# ---------------------------------------------------------------------------- cancellation


def test_cancelled_ainvoke_calls_all_end_as_cancelled_and_leave_no_state(
    fake_openrouter, langfuse_client, otlp_receiver, span_counter, handler
) -> None:
    """500 calls cut by `asyncio.wait_for` while OpenRouter is slow: LangChain sends neither
    `on_llm_end` nor `on_llm_error`; every generation started is still ended and exported."""
    fake_openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL, delay=0.5))
    llm = chat_openai(fake_openrouter)

    async def one(i: int) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(llm.ainvoke("hi", config={"callbacks": [handler]}), 0.02 + i % 7 * 0.01)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(500)))

    asyncio.run(main())
    exported(handler, langfuse_client)
    generations = otlp_receiver.generations()
    assert generations, "no call got as far as starting"
    assert span_counter.started == span_counter.ended
    assert {int(g.span_id, 16) for g in generations} == span_counter.started
    assert {level(g) for g in generations} == {(CANCELLED_LEVEL, CANCELLED_MESSAGE)}
    assert_no_run_state(handler)


def test_astream_cancelled_at_once_or_midway_always_ends(
    fake_openrouter, langfuse_client, otlp_receiver, span_counter, handler
) -> None:
    """Cancelled while its start event is still being handled, or after some chunks: either way
    the generation ends, as cancelled. (A cancellation that lands as the stream closes can be
    swallowed below LangChain, in the HTTP client; that call finishes, and is recorded as finished.)"""
    fake_openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", chunk_delay=0.05))
    llm = chat_openai(fake_openrouter)
    finished = 0

    async def consume() -> None:
        async for _ in llm.astream("hi", config={"callbacks": [handler]}):
            pass

    async def main() -> None:
        nonlocal finished
        for i in range(40):
            task = asyncio.create_task(consume())
            for _ in range(i % 4):  # 0: before the start event has run; more: later
                await asyncio.sleep(0.02)
            task.cancel()
            try:
                await task
                finished += 1
            except asyncio.CancelledError:
                pass

    asyncio.run(main())
    exported(handler, langfuse_client)
    generations = otlp_receiver.generations()
    assert span_counter.started == span_counter.ended
    levels = [level(g) for g in generations]
    assert levels.count((CANCELLED_LEVEL, CANCELLED_MESSAGE)) == len(generations) - finished > 0
    assert_no_run_state(handler)


def test_a_stream_cancelled_after_its_usage_arrived_keeps_the_usage_and_cost(
    fake_openrouter, langfuse_client, otlp_receiver, handler
) -> None:
    fake_openrouter.set_default(
        ResponseSpec(
            model=DATED,
            provider="Anthropic",
            usage=CACHED_CALL,
            usage_chunk_style="with_choice",
            chunk_delay=0.3,
        )
    )
    llm = ChatOpenRouter(
        model=REQUESTED, api_key="sk-or-test", base_url=fake_openrouter.base_url, max_retries=0
    )
    usage_seen = asyncio.Event

    async def main() -> None:
        seen = usage_seen()

        async def consume() -> None:
            async for chunk in llm.astream("hi", config={"callbacks": [handler]}):
                if chunk.usage_metadata:
                    seen.set()

        task = asyncio.create_task(consume())
        await seen.wait()
        task.cancel()  # before the stream's end
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    exported(handler, langfuse_client)
    (generation,) = otlp_receiver.generations()
    assert level(generation) == (CANCELLED_LEVEL, CANCELLED_MESSAGE)
    assert generation.usage_details["input_cache_read"] == CACHED_CALL.cached_tokens
    assert generation.cost_details["total"] == pytest.approx(CACHED_CALL.cost)
    assert_no_run_state(handler)


# ---------------------------------------------------------------------------- streams left open


def test_a_stream_left_open_is_not_the_parent_of_the_next_call(
    fake_openrouter, langfuse_client, otlp_receiver, handler
) -> None:
    llm = chat_openai(fake_openrouter)
    config = {"callbacks": [handler]}
    left_open = llm.stream("first", config=config)
    next(left_open)
    assert trace.get_current_span() is trace.INVALID_SPAN  # the open stream is not the current span
    llm.invoke("second", config=config)
    langfuse_client.flush()
    (second,) = otlp_receiver.generations()
    assert second.parent_span_id is None
    list(left_open)
    langfuse_client.flush()
    first, second = sorted(otlp_receiver.generations(), key=lambda g: g.start_time_unix_nano)
    assert first.trace_id != second.trace_id and first.parent_span_id is None
    assert_no_run_state(handler)


def test_two_streams_interleaved_in_one_thread_stay_separate_and_restore_the_context(
    fake_openrouter, langfuse_client, otlp_receiver, handler
) -> None:
    llm = chat_openai(fake_openrouter)
    config = {"callbacks": [handler]}
    a, b = llm.stream("a", config=config), llm.stream("b", config=config)
    next(a)
    next(b)
    list(a)  # a ends first, though b started last
    llm.invoke("c", config=config)
    list(b)
    llm.invoke("d", config=config)
    assert trace.get_current_span() is trace.INVALID_SPAN
    langfuse_client.flush()
    generations = otlp_receiver.generations()
    assert len(generations) == 4
    assert all(g.parent_span_id is None for g in generations)
    assert len({g.trace_id for g in generations}) == 4
    assert_no_run_state(handler)


def test_a_chain_stream_left_open_is_not_the_parent_of_the_next_call(
    fake_openrouter, langfuse_client, otlp_receiver, handler
) -> None:
    from langchain_core.output_parsers import StrOutputParser

    chain = chat_openai(fake_openrouter) | StrOutputParser()
    config = {"callbacks": [handler]}
    a, b = chain.stream("a", config=config), chain.stream("b", config=config)
    next(a)
    next(b)  # two chain streams interleaved, both left open
    assert trace.get_current_span() is trace.INVALID_SPAN
    chat_openai(fake_openrouter).invoke("unrelated", config=config)
    list(b)
    list(a)  # a ends last, though it started first
    assert trace.get_current_span() is trace.INVALID_SPAN
    langfuse_client.flush()
    by_id = {s.span_id: s for s in otlp_receiver.spans}
    generations = otlp_receiver.generations()
    assert len(generations) == 3 and len({g.trace_id for g in generations}) == 3
    (unrelated,) = [g for g in generations if g.parent_span_id is None]  # a trace of its own
    streamed = [g for g in generations if g is not unrelated]
    for generation in streamed:  # each streamed chain's generation still nests under its chain
        parent = by_id[generation.parent_span_id]
        assert parent.parent_span_id is None and parent.trace_id == generation.trace_id
    assert_no_run_state(handler)


# ---------------------------------------------------------------------------- errors inside a stream


def test_an_error_inside_a_chat_openrouter_stream_is_recorded_as_an_error(
    fake_openrouter, langfuse_client, otlp_receiver, handler
) -> None:
    """OpenRouter sends a mid-stream error as an SSE data chunk (HTTP 200, finish_reason "error");
    langchain-openrouter ends the stream normally. The generation says it failed."""
    fake_openrouter.set_default(
        ResponseSpec(
            model=DATED, provider="Anthropic", stream_error={"code": 502, "message": "Provider disconnected"}
        )
    )
    llm = ChatOpenRouter(
        model=REQUESTED, api_key="sk-or-test", base_url=fake_openrouter.base_url, max_retries=0
    )
    chunks = list(llm.stream("hi", config={"callbacks": [handler]}))
    assert chunks  # the user's program sees what langchain-openrouter gives it, unchanged
    langfuse_client.flush()
    (generation,) = otlp_receiver.generations()
    recorded_level, message = level(generation)
    assert recorded_level == "ERROR" and "error" in message
    assert_no_run_state(handler)


def test_a_stream_that_ends_normally_is_not_an_error(
    fake_openrouter, langfuse_client, otlp_receiver, handler
) -> None:
    fake_openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL))
    llm = ChatOpenRouter(
        model=REQUESTED, api_key="sk-or-test", base_url=fake_openrouter.base_url, max_retries=0
    )
    list(llm.stream("hi", config={"callbacks": [handler]}))
    langfuse_client.flush()
    (generation,) = otlp_receiver.generations()
    assert level(generation)[0] in (None, "DEFAULT")


# ---------------------------------------------------------------------------- what we rely on


def test_the_langfuse_internals_the_lifecycle_relies_on_are_there(handler) -> None:
    """Ending dropped runs and keeping generations out of the caller's context use Langfuse's
    handler state by these names (langfuse 5): fail loudly when they change."""
    for name in ("_runs", "_context_tokens", "_run_states", "_root_run_states"):
        assert isinstance(getattr(handler, name), dict), name
    assert isinstance(handler._updated_completion_start_time_memo, set)
    for name in ("_detach_observation", "_clear_root_run_resume_key", "_reset", "_attach_observation"):
        assert callable(getattr(handler, name)), name
