"""`instrument()` end to end: OpenInference's LlamaIndex instrumentation with OpenRouter's cost on its spans.

Real LlamaIndex LLMs (`OpenRouter`, `OpenAILike`) against the local fake OpenRouter, OpenInference
exporting through the real Langfuse client's TracerProvider, and every assertion on what Langfuse
exported (decoded OTLP spans).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from langfuse._client.attributes import create_generation_attributes
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import ChatMessage, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.prompts import PromptTemplate
from llama_index.llms.openai_like import OpenAILike
from llama_index.llms.openrouter import OpenRouter
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

from langfuse_openrouter_callbacks._openinference import Instrumentation, instrument, uninstrument
from langfuse_openrouter_callbacks.langfuse_fields import otel_attributes
from tests.scenario import ANOTHER_PROVIDER, CACHED_CALL, DATED, EXPECTED_USAGE, REQUESTED, BrokenCatalog
from tests.support.openrouter_server import (
    FakeOpenRouter,
    ResponseSpec,
    error_spec,
    marker,
    marker_responder,
)
from tests.support.otlp_receiver import ExportedSpan, OTLPReceiver

# 1000 x 3e-6 + 6000 x 3e-7 + 3000 x 3.75e-6 + 300 x 15e-6 + 200 x 15e-6, by hand
COMPUTED_TOTAL = 0.003 + 0.0018 + 0.01125 + 0.0045 + 0.003
MESSAGES = [ChatMessage(role="user", content="hello")]
SPAN_KIND = "openinference.span.kind"

# OpenInference 4.6 calls pydantic's deprecated `.json()` on every LLM span.
pytestmark = pytest.mark.filterwarnings("ignore:The `json` method is deprecated")


@pytest.fixture
def instrumented(langfuse_client, langfuse_tracer_provider, catalog) -> Iterator[Instrumentation]:
    """Our instrumentation on the test Langfuse client's (non-global) provider, off again afterwards."""
    instrumentation = instrument(tracer_provider=langfuse_tracer_provider, price_catalog=catalog)
    try:
        yield instrumentation
    finally:
        uninstrument()
        assert not LlamaIndexInstrumentor().is_instrumented_by_opentelemetry


def openrouter_llm(server: FakeOpenRouter) -> OpenRouter:
    return OpenRouter(api_base=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)


def openai_like(server: FakeOpenRouter, *, is_chat_model: bool = True) -> OpenAILike:
    return OpenAILike(
        api_base=server.base_url,
        api_key="sk-or-test",
        model=REQUESTED,
        is_chat_model=is_chat_model,
        max_retries=0,
    )


def exported(client: Any, receiver: OTLPReceiver) -> list[ExportedSpan]:
    client.flush()
    return receiver.spans


def llm_spans(spans: list[ExportedSpan]) -> list[ExportedSpan]:
    return [s for s in spans if s.attributes.get(SPAN_KIND) == "LLM"]


def trace_cost(spans: list[ExportedSpan]) -> float:
    """What Langfuse adds up for the trace: every observation's cost total."""
    return sum((s.cost_details or {}).get("total", 0) for s in spans)


def ancestors(span: ExportedSpan, spans: list[ExportedSpan]) -> list[ExportedSpan]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


def assert_one_generation(
    spans: list[ExportedSpan], *, wrappers: int = 1, total: float = 0.0241, cost_source: str = "openrouter"
) -> ExportedSpan:
    """The call is recorded once: one enriched generation, its LLM wrappers made unpriceable spans."""
    calls = llm_spans(spans)
    (generation,) = [s for s in calls if s.is_generation]
    assert generation.usage_details == EXPECTED_USAGE
    assert generation.cost_details["total"] == pytest.approx(total, abs=1e-12)
    buckets = {k: v for k, v in generation.cost_details.items() if k != "total"}
    assert sum(buckets.values()) == pytest.approx(total, abs=1e-12)
    assert generation.model_name == DATED
    assert generation.attributes["llm.token_count.prompt"] == 10_000  # OpenInference's own data stays
    meta = generation.metadata["openrouter"]
    assert meta["cost_source"] == cost_source
    assert meta["pricing_source"] == "override"  # the requested id's override priced the dated response
    assert meta["generation_id"].startswith("gen-")
    assert meta["provider"] == "Anthropic"
    assert meta["cache_hit_ratio"] == 0.6
    assert meta["no_cache_cost_usd"] - meta["cache_savings_usd"] == pytest.approx(total, abs=1e-12)

    others = [s for s in calls if s is not generation]
    assert len(others) == wrappers
    outer = {s.span_id for s in ancestors(generation, spans)}
    assert {s.span_id for s in others} <= outer  # the wrappers are the same call, seen from further out
    for wrapper in others:
        assert wrapper.attributes["llm.model_name"]  # what made it priceable...
        assert wrapper.observation_type == "span"  # ...but Langfuse keeps no model, usage or cost on a span
        assert wrapper.cost_details == {"total": 0}  # and zero even where it were typed a generation
        assert wrapper.usage_details is None
        assert "openrouter" not in wrapper.metadata
    assert trace_cost(spans) == pytest.approx(total, abs=1e-12)  # OpenRouter's cost, exactly once
    assert len({s.trace_id for s in spans}) == 1
    return generation


# ---------------------------------------------------------------------------- the call paths


def test_chat(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    response = openrouter_llm(openrouter).chat(MESSAGES)
    assert response.message.content == "Hello from the fake OpenRouter."
    spans = exported(langfuse_client, otlp_receiver)
    generation = assert_one_generation(spans)
    (wrapper,) = [s for s in llm_spans(spans) if s is not generation]
    assert not any(k.startswith("llm.token_count") for k in wrapper.attributes)
    assert generation.cost_details["other"] == pytest.approx(0.0241 - COMPUTED_TOTAL, abs=1e-12)
    assert generation.metadata["openrouter"]["reported_cost"] == 0.0241
    assert json.loads(generation.attributes["langfuse.observation.usage_details"]) == EXPECTED_USAGE


async def test_achat(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    await openrouter_llm(openrouter).achat(MESSAGES)
    assert_one_generation(exported(langfuse_client, otlp_receiver))


def test_complete(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    assert openrouter_llm(openrouter).complete("hello").text
    assert_one_generation(exported(langfuse_client, otlp_receiver))


async def test_acomplete(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    await openrouter_llm(openrouter).acomplete("hello")
    assert_one_generation(exported(langfuse_client, otlp_receiver))


@pytest.mark.parametrize("usage_chunk_style", ["empty_choices", "with_choice"])
def test_stream_chat_keeps_openrouters_cost(
    openrouter, instrumented, langfuse_client, otlp_receiver, usage_chunk_style
) -> None:
    openrouter.set_default(
        ResponseSpec(
            model=DATED, provider="Anthropic", usage=CACHED_CALL, usage_chunk_style=usage_chunk_style
        )
    )
    chunks = list(openrouter_llm(openrouter).stream_chat(MESSAGES))
    assert chunks[-1].message.content == "Hello from the fake OpenRouter."
    generation = assert_one_generation(exported(langfuse_client, otlp_receiver))
    # LlamaIndex sends no stream_options, yet OpenRouter's usage chunk (with its cost) is parsed
    assert generation.metadata["openrouter"]["reported_cost"] == 0.0241
    assert generation.cost_details["input_cache_creation"] == pytest.approx(3_000 * 0.00000375)


async def test_astream_chat(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    chunks = [c async for c in await openrouter_llm(openrouter).astream_chat(MESSAGES)]
    assert chunks
    assert_one_generation(exported(langfuse_client, otlp_receiver))


def test_stream_complete(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    assert list(openrouter_llm(openrouter).stream_complete("hello"))
    assert_one_generation(exported(langfuse_client, otlp_receiver))


async def test_astream_complete(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    assert [c async for c in await openrouter_llm(openrouter).astream_complete("hello")]
    assert_one_generation(exported(langfuse_client, otlp_receiver))


COMPLETION_START = "langfuse.observation.completion_start_time"


def completion_start_ns(span: ExportedSpan) -> int:
    """The generation's completion start time (an ISO string in JSON, as Langfuse's SDK writes it), in ns."""
    value = json.loads(span.attributes[COMPLETION_START])
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.tzinfo is not None and value.endswith("Z")
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1_000


@pytest.mark.parametrize("method", ["stream_chat", "astream_chat", "stream_complete", "astream_complete"])
async def test_streamed_generations_carry_the_first_chunks_time(
    openrouter, instrumented, langfuse_client, otlp_receiver, method
) -> None:
    llm = openrouter_llm(openrouter)
    argument = MESSAGES if method.endswith("chat") else "hello"
    stream = getattr(llm, method)(argument)
    if method.startswith("a"):
        stream = (await stream).__aiter__()
        await stream.__anext__()
        first_chunk_received = time.time_ns()
        rest = [c async for c in stream]
    else:
        next(stream)
        first_chunk_received = time.time_ns()
        rest = list(stream)
    assert rest and (rest[-1].message.content if method.endswith("chat") else rest[-1].text)
    spans = exported(langfuse_client, otlp_receiver)
    generation = assert_one_generation(spans)
    first_chunk = completion_start_ns(generation)
    # The stream yields its second chunk only when asked again: a time before `first_chunk_received` is
    # the first chunk's. (OpenInference ends a stream's span at the time its method returned, before any
    # chunk: Langfuse then shows a first token after the end; its own "First Token Stream Event" agrees.)
    assert generation.start_time_unix_nano // 1_000 * 1_000 <= first_chunk <= first_chunk_received
    (first_token,) = [e.time_unix_nano for e in generation.events if e.name == "First Token Stream Event"]
    assert first_chunk <= first_token <= first_chunk_received
    for span in spans:
        if span is not generation:  # wrappers are no generations: no completion start either
            assert COMPLETION_START not in span.attributes, span.name


def test_unstreamed_generations_have_no_completion_start(
    openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    llm = openrouter_llm(openrouter)
    llm.chat(MESSAGES)
    llm.complete("hello")
    spans = exported(langfuse_client, otlp_receiver)
    assert len([s for s in spans if s.is_generation]) == 2
    assert not any(COMPLETION_START in s.attributes for s in spans)


def test_openai_like_pointed_at_openrouter(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    openai_like(openrouter).chat(MESSAGES)
    assert_one_generation(exported(langfuse_client, otlp_receiver))
    otlp_receiver.clear()
    list(openai_like(openrouter).stream_chat(MESSAGES))
    assert_one_generation(exported(langfuse_client, otlp_receiver))


def test_completion_model_chat_has_two_wrappers(
    openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    # OpenAILike(is_chat_model=False).chat -> .complete -> OpenAI.complete: three LLM spans, one call
    openai_like(openrouter, is_chat_model=False).chat(MESSAGES)
    assert_one_generation(exported(langfuse_client, otlp_receiver), wrappers=2)


def test_predict_wrapper_is_neutralized_too(openrouter, instrumented, langfuse_client, otlp_receiver) -> None:
    answer = openrouter_llm(openrouter).predict(PromptTemplate("Say {what}"), what="hi")
    assert answer == "Hello from the fake OpenRouter."
    spans = exported(langfuse_client, otlp_receiver)
    assert_one_generation(spans, wrappers=2)
    (predict,) = [s for s in spans if s.name.endswith(".predict")]
    assert predict.attributes["llm.prompt_template.template"] == "Say {what}"  # OpenInference's data stays


class _Router(CustomLLM):
    """An LLM answering with another LLM's response, as routers and fallbacks do."""

    inner: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="router")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        return self.inner.complete(prompt)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield from self.inner.stream_complete(prompt)


def test_an_llm_passing_another_ones_response_through_is_not_counted_again(
    openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    # Its own callback ends it with the inner call's response: same generation id, recorded once.
    router = _Router(inner=openrouter_llm(openrouter))
    assert router.complete("hello").text
    spans = exported(langfuse_client, otlp_receiver)
    assert_one_generation(spans, wrappers=2)
    (outer,) = [s for s in spans if s.attributes.get("llm.model_name") == "router"]
    assert outer.attributes["llm.token_count.prompt"] == 10_000  # OpenInference counts the call twice...
    assert outer.observation_type == "span" and outer.cost_details == {"total": 0}  # ...Langfuse will not
    otlp_receiver.clear()
    # Streaming, the nested call runs once the router's method has returned: OpenInference gives it
    # a trace of its own, and the router's span (with the call's tokens again) must not count either.
    assert list(router.stream_complete("hello"))
    spans = exported(langfuse_client, otlp_receiver)
    (outer,) = [s for s in spans if s.attributes.get("llm.model_name") == "router"]
    assert outer.attributes["llm.token_count.prompt"] == 10_000
    assert outer.observation_type == "span" and outer.cost_details == {"total": 0}
    assert_one_generation([s for s in spans if s is not outer], wrappers=1)
    assert trace_cost(spans) == pytest.approx(0.0241, abs=1e-12)


def test_trace_total_is_the_sum_of_openrouters_costs(
    openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    llm = openrouter_llm(openrouter)
    with langfuse_client.start_as_current_observation(name="agent", as_type="span"):
        llm.chat([ChatMessage(role="user", content="a " + marker(prompt_tokens=2_000, cost=0.00792))])
        llm.complete("b " + marker(prompt_tokens=2_100, cached_tokens=1_800, cost=0.00174))
        list(llm.stream_chat([ChatMessage(role="user", content="c " + marker(cost=0.0005))]))
    spans = exported(langfuse_client, otlp_receiver)
    assert len({s.trace_id for s in spans}) == 1
    generations = [s for s in spans if s.is_generation]
    assert sorted(g.cost_details["total"] for g in generations) == pytest.approx([0.0005, 0.00174, 0.00792])
    assert trace_cost(spans) == pytest.approx(0.00792 + 0.00174 + 0.0005, abs=1e-12)
    root = next(s for s in spans if s.name == "agent")
    assert all(root.span_id in {s.span_id for s in ancestors(g, spans)} for g in generations)


async def test_concurrent_calls_each_get_their_own_numbers(
    openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    llm = openrouter_llm(openrouter)

    async def call(i: int) -> None:
        prompt = f"q{i} " + marker(prompt_tokens=1_000 + i, cached_tokens=i, cost=(1_000 + i) / 10**6)
        if i % 2:
            await llm.achat([ChatMessage(role="user", content=prompt)])
        else:
            assert [c async for c in await llm.astream_chat([ChatMessage(role="user", content=prompt)])]

    await asyncio.gather(*(call(i) for i in range(40)))
    spans = exported(langfuse_client, otlp_receiver)
    generations = [s for s in spans if s.is_generation]
    assert sorted(g.usage_details.get("input_cache_read", 0) for g in generations) == list(range(40))
    for generation in generations:
        i = generation.usage_details.get("input_cache_read", 0)
        assert generation.cost_details["total"] == pytest.approx((1_000 + i) / 10**6)
    assert trace_cost(spans) == pytest.approx(sum((1_000 + i) / 10**6 for i in range(40)))
    assert instrumented._enricher._calls == {}  # no per-call state left behind


def test_stream_is_enriched_even_when_openinference_handles_events_first(
    openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    handlers = get_dispatcher().event_handlers
    ours = next(h for h in handlers if h.class_name() == "LangfuseOpenRouterEventHandler")
    handlers.remove(ours)
    handlers.append(ours)  # OpenInference now ends the stream's span on the end event before we see it
    list(openrouter_llm(openrouter).stream_chat(MESSAGES))
    assert_one_generation(exported(langfuse_client, otlp_receiver))  # recorded at the usage chunk


async def test_an_agents_tool_preparation_is_not_priced(
    openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    # FunctionAgent's `OpenRouter._prepare_chat_with_tools` is an LLM span with a model, input and output
    # but no request: Langfuse would type it a generation and price its text by tokenizing it.
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    from tests.test_llama_index_agents import QUESTION, function_agent_responder, multiply

    openrouter.set_responder(function_agent_responder())
    llm = OpenRouter(
        api_base=openrouter.base_url,
        api_key="sk-or-test",
        model=REQUESTED,
        max_retries=0,
        is_function_calling_model=True,
    )
    await FunctionAgent(tools=[FunctionTool.from_defaults(multiply)], llm=llm).run(user_msg=QUESTION)
    spans = exported(langfuse_client, otlp_receiver)
    preparations = [s for s in spans if s.name.endswith("._prepare_chat_with_tools")]
    assert len(preparations) == 2
    for preparation in preparations:
        assert preparation.attributes[SPAN_KIND] == "LLM" and preparation.attributes["llm.model_name"]
        assert preparation.observation_type == "span" and preparation.cost_details == {"total": 0}
    generations = [s for s in spans if s.is_generation]
    assert len(generations) == 2 and len(openrouter.chat_requests) == 2
    assert trace_cost(spans) == pytest.approx(2 * 0.0241, abs=1e-12)
    priceable = [s for s in llm_spans(spans) if s.observation_type != "span"]
    assert priceable == generations  # every other LLM span is one Langfuse cannot price


# ---------------------------------------------------------------------------- other providers, errors


def test_other_providers_are_exported_as_openinference_made_them(
    fake_openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    fake_openrouter.set_default(ANOTHER_PROVIDER)
    llm = OpenAILike(api_base=fake_openrouter.base_url, api_key="sk", model="gpt-4o-mini", is_chat_model=True)
    llm.chat(MESSAGES)
    list(llm.stream_chat(MESSAGES))
    spans = exported(langfuse_client, otlp_receiver)
    assert len(llm_spans(spans)) == 4
    assert any(s.attributes.get("llm.token_count.prompt_details.cache_read") == 20 for s in spans)
    assert not any(k.startswith("langfuse.observation.") for s in spans for k in s.attributes)


def test_llm_errors_are_exported_as_openinference_made_them(
    openrouter, instrumented, langfuse_client, otlp_receiver
) -> None:
    openrouter.queue(error_spec(status=400, message="Provider returned error"))
    with pytest.raises(Exception, match="Provider returned error"):
        openrouter_llm(openrouter).chat(MESSAGES)
    spans = exported(langfuse_client, otlp_receiver)
    assert llm_spans(spans) and all(s.status_code == "ERROR" for s in llm_spans(spans))
    assert not any(k.startswith("langfuse.observation.") for s in spans for k in s.attributes)
    assert instrumented._enricher._calls == {}


def test_an_error_in_enrichment_never_reaches_the_user(
    openrouter, langfuse_client, langfuse_tracer_provider, otlp_receiver, caplog
) -> None:
    instrument(tracer_provider=langfuse_tracer_provider, price_catalog=BrokenCatalog(offline=True))
    try:
        with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"):
            llm = openrouter_llm(openrouter)
            assert llm.chat(MESSAGES).message.content
            assert llm.complete("hello").text
            assert list(llm.stream_chat(MESSAGES))
    finally:
        uninstrument()
    spans = exported(langfuse_client, otlp_receiver)
    calls = llm_spans(spans)
    assert len(calls) == 6  # every span still exported, with OpenInference's own data
    assert sum(s.attributes.get("llm.token_count.prompt") == 10_000 for s in calls) == 3
    assert not any(k.startswith("langfuse.observation.") for s in spans for k in s.attributes)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1  # logged once, with the traceback
    assert "price list exploded" in errors[0].exc_text


# ---------------------------------------------------------------------------- instrument / uninstrument


def _our_handlers() -> list[Any]:
    return [h for h in get_dispatcher().event_handlers if h.class_name() == "LangfuseOpenRouterEventHandler"]


def _openinference_handlers() -> list[Any]:
    dispatcher = get_dispatcher()
    return [
        h
        for h in [*dispatcher.event_handlers, *dispatcher.span_handlers]
        if type(h).__module__.startswith("openinference.")
    ]


def test_instrument_is_idempotent_and_uninstrument_removes_both_handlers(
    openrouter, langfuse_client, langfuse_tracer_provider, catalog, otlp_receiver
) -> None:
    first = instrument(tracer_provider=langfuse_tracer_provider, price_catalog=catalog)
    try:
        assert instrument() is first and first.active
        assert len(_our_handlers()) == 1
        assert get_dispatcher().event_handlers[0] is _our_handlers()[0]
        assert len(_openinference_handlers()) == 2  # its span handler and its event handler
    finally:
        first.uninstrument()
    assert not first.active
    assert _our_handlers() == [] and _openinference_handlers() == []
    uninstrument()  # nothing left to undo
    openrouter_llm(openrouter).chat(MESSAGES)
    assert exported(langfuse_client, otlp_receiver) == []


def test_openinference_instrumented_by_the_user_is_left_on(
    langfuse_client, langfuse_tracer_provider, catalog
) -> None:
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=langfuse_tracer_provider)
    try:
        instrument(price_catalog=catalog)
        uninstrument()
        assert _our_handlers() == []
        assert instrumentor.is_instrumented_by_opentelemetry
    finally:
        instrumentor.uninstrument()


def test_default_tracer_provider_is_the_langfuse_clients(
    openrouter, langfuse_client, catalog, otlp_receiver
) -> None:
    # The test client exports through a private provider, not the global one: only it reaches Langfuse.
    instrument(price_catalog=catalog)
    try:
        openrouter_llm(openrouter).chat(MESSAGES)
    finally:
        uninstrument()
    assert_one_generation(exported(langfuse_client, otlp_receiver))


# ---------------------------------------------------------------------------- the attributes themselves


def test_otel_attributes_are_written_as_langfuses_sdk_writes_them() -> None:
    usage = {"input": 1_000, "input_cache_read": 6_000, "total": 7_000}
    cost = {"input": 0.003, "input_cache_read": 0.0018, "other": 1e-18, "total": 0.0048}
    metadata = {"openrouter": {"provider": "Anthropic", "is_byok": False, "reported_cost": None}, "x": None}
    first_token = datetime(2026, 12, 1, 20, 30, 5, 123456, tzinfo=timezone.utc)
    ours = otel_attributes(
        usage, cost, metadata, observation_type="generation", model=DATED, completion_start_time=first_token
    )
    theirs = create_generation_attributes(
        usage_details=usage,
        cost_details=cost,
        metadata=metadata,
        model=DATED,
        completion_start_time=first_token,
    )
    assert decoded(ours) == decoded(theirs)  # the same attributes and values (ours are compact JSON)
    assert otel_attributes(cost_details={"total": 0}, observation_type="span") == {
        "langfuse.observation.type": "span",
        "langfuse.observation.cost_details": '{"total":0}',
    }


def decoded(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attribute values with the JSON ones parsed."""
    out = {}
    for key, value in attributes.items():
        try:
            out[key] = json.loads(value) if key != "langfuse.observation.model.name" else value
        except (TypeError, ValueError):
            out[key] = value
    return out
