"""The LangChain handler end to end: real LangChain and Langfuse clients, local OpenRouter and OTLP servers.

Every assertion reads what Langfuse exported (decoded OTLP spans).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import replace
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from langchain_openrouter import ChatOpenRouter
from langfuse.langchain import CallbackHandler as LangfuseCallbackHandler

from langfuse_openrouter_callbacks import PriceCatalog
from langfuse_openrouter_callbacks import langchain as langchain_module
from langfuse_openrouter_callbacks.langchain import CallbackHandler
from tests.scenario import (
    ANOTHER_PROVIDER,
    CACHED_CALL,
    DATED,
    EXPECTED_USAGE,
    REQUESTED,
    SONNET,
    BrokenCatalog,
)
from tests.support.openrouter_server import (
    FakeOpenRouter,
    Fault,
    ResponseSpec,
    ToolCall,
    Usage,
    error_spec,
    marker,
    marker_responder,
    model_entry,
)
from tests.support.otlp_receiver import ExportedSpan, OTLPReceiver

# Gemini 2.5 Flash on OpenRouter: a 5-minute cache write is an hour's storage at $1/M over 12
GEMINI_FLASH = {
    "prompt": "0.0000003",
    "completion": "0.0000025",
    "input_cache_read": "0.00000003",
    "input_cache_write": "0.00000008333333333333334",
}
# 1000 x 3e-6 + 6000 x 3e-7 + 3000 x 3.75e-6 + 300 x 15e-6 + 200 x 15e-6, by hand
COMPUTED_TOTAL = 0.003 + 0.0018 + 0.01125 + 0.0045 + 0.003
NO_CACHE_TOTAL = 10_000 * 0.000003 + 500 * 0.000015


@pytest.fixture
def openrouter(fake_openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch) -> FakeOpenRouter:
    """The fake OpenRouter, configured as this machine's OpenRouter API base."""
    monkeypatch.setenv("OPENROUTER_API_BASE", fake_openrouter.base_url)
    fake_openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL))
    return fake_openrouter


def chat_openai(server: FakeOpenRouter, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0, **kwargs
    )


def chat_openrouter(server: FakeOpenRouter) -> ChatOpenRouter:
    return ChatOpenRouter(model=REQUESTED, api_key="sk-or-test", base_url=server.base_url, max_retries=0)


def exported_generations(client: Any, receiver: OTLPReceiver, count: int = 1) -> list[ExportedSpan]:
    client.flush()
    generations = receiver.generations()
    assert len(generations) == count, [g.name for g in generations]
    return generations


def assert_cached_call(generation: ExportedSpan, *, cost_source: str, total: float) -> None:
    assert generation.usage_details == EXPECTED_USAGE
    assert generation.cost_details["total"] == pytest.approx(total, abs=1e-12)
    buckets = {k: v for k, v in generation.cost_details.items() if k != "total"}
    assert sum(buckets.values()) == pytest.approx(total, abs=1e-12)
    meta = generation.metadata["openrouter"]
    assert meta["cost_source"] == cost_source
    assert meta["pricing_source"] == "override"  # the requested id's override priced the dated response
    assert meta["cache_hit_ratio"] == 0.6
    assert meta["no_cache_cost_usd"] - meta["cache_savings_usd"] == pytest.approx(total, abs=1e-12)


# ---------------------------------------------------------------------------- ChatOpenAI


def test_chat_openai_invoke_records_openrouter_cost(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    llm = chat_openai(openrouter)
    message = llm.invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    assert message.content
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="openrouter", total=0.0241)
    assert generation.cost_details["other"] == pytest.approx(0.0241 - COMPUTED_TOTAL, abs=1e-12)
    meta = generation.metadata["openrouter"]
    assert meta["generation_id"].startswith("gen-")
    assert meta["reported_cost"] == 0.0241 and meta["is_byok"] is False
    assert meta["reconciliation_delta"] == pytest.approx(0.0241 - COMPUTED_TOTAL, abs=1e-12)
    assert generation.model_name == DATED
    assert "is_byok" not in generation.usage_details


async def test_chat_openai_ainvoke(openrouter, catalog, langfuse_client, otlp_receiver) -> None:
    await chat_openai(openrouter).ainvoke(
        "hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]}
    )
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="openrouter", total=0.0241)


def _batch_inputs() -> list[str]:
    return [
        "q " + marker(prompt_tokens=1_000 * i, cached_tokens=100 * i, completion_tokens=i, cost=i / 1000)
        for i in (1, 2, 3)
    ]


def _assert_batch(generations: list[ExportedSpan]) -> None:
    by_total = sorted(generations, key=lambda g: g.usage_details["total"])
    for i, generation in enumerate(by_total, start=1):
        assert generation.usage_details["input_cache_read"] == 100 * i
        assert generation.usage_details["input"] == 900 * i
        assert generation.cost_details["total"] == pytest.approx(i / 1000)
        assert generation.metadata["openrouter"]["reported_cost"] == pytest.approx(i / 1000)


def test_chat_openai_batch_gives_each_generation_its_numbers(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    chat_openai(openrouter).batch(
        _batch_inputs(), config={"callbacks": [CallbackHandler(price_catalog=catalog)]}
    )
    _assert_batch(exported_generations(langfuse_client, otlp_receiver, 3))


async def test_chat_openai_abatch(openrouter, catalog, langfuse_client, otlp_receiver) -> None:
    openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    await chat_openai(openrouter).abatch(
        _batch_inputs(), config={"callbacks": [CallbackHandler(price_catalog=catalog)]}
    )
    _assert_batch(exported_generations(langfuse_client, otlp_receiver, 3))


@pytest.mark.parametrize("usage_chunk_style", ["empty_choices", "with_choice"])
def test_chat_openai_stream_computes_the_cost_langchain_loses(
    openrouter, catalog, langfuse_client, otlp_receiver, usage_chunk_style
) -> None:
    openrouter.set_default(
        ResponseSpec(
            model=DATED, provider="Anthropic", usage=CACHED_CALL, usage_chunk_style=usage_chunk_style
        )
    )
    chunks = list(
        chat_openai(openrouter).stream(
            "hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]}
        )
    )
    assert chunks
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="computed", total=COMPUTED_TOTAL)
    assert generation.metadata["openrouter"]["reported_cost"] is None
    assert generation.cost_details["input_cache_creation"] == pytest.approx(3_000 * 0.00000375)


async def test_chat_openai_astream(openrouter, catalog, langfuse_client, otlp_receiver) -> None:
    handler = CallbackHandler(price_catalog=catalog)
    chunks = [c async for c in chat_openai(openrouter).astream("hello", config={"callbacks": [handler]})]
    assert chunks
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="computed", total=COMPUTED_TOTAL)


def test_streaming_byok_call_adds_nothing_it_cannot_know(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_default(
        ResponseSpec(
            model=DATED,
            provider="Anthropic",
            usage=Usage(prompt_tokens=100, completion_tokens=10, cost=0.0, is_byok=True),
        )
    )
    chat_openai(openrouter).invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    # BYOK without the provider's charge: computed from prices, OpenRouter's (zero) fee on top
    assert generation.cost_details["total"] == pytest.approx(100 * 0.000003 + 10 * 0.000015)
    assert generation.metadata["openrouter"]["is_byok"] is True


def test_chat_openai_and_chat_openrouter_results_are_read_at_once(openrouter) -> None:
    """Both integrations' real `LLMResult`s take the usual-shape reader, which reads them exactly as the
    careful one does (that one also says what is wrong with bad input)."""
    from langchain_core.callbacks import BaseCallbackHandler

    from langfuse_openrouter_callbacks._log import Problems
    from langfuse_openrouter_callbacks.usage import OpenRouterUsage

    results: list[Any] = []

    class Keep(BaseCallbackHandler):
        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            results.append(response)

    for llm in (chat_openai(openrouter), chat_openrouter(openrouter)):
        llm.invoke("hello", config={"callbacks": [Keep()]})
    for result in results:
        message = result.generations[-1][-1].message
        metadata = {**(result.llm_output or {}), **message.response_metadata}
        usual = OpenRouterUsage._read_usual_langchain(message.usage_metadata, metadata, REQUESTED)
        assert usual is not None and usual.cost is not None and usual.cache_write_tokens > 0
        problems = Problems("test")
        careful = OpenRouterUsage._read_langchain(message.usage_metadata, metadata, REQUESTED, problems)
        assert repr(usual) == repr(careful._checked(problems)) and not problems


# ---------------------------------------------------------------------------- ChatOpenRouter


def test_chat_openrouter_invoke(openrouter, catalog, langfuse_client, otlp_receiver) -> None:
    message = chat_openrouter(openrouter).invoke(
        "hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]}
    )
    assert message.content
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="openrouter", total=0.0241)
    assert generation.metadata["openrouter"]["generation_id"].startswith("gen-")


async def test_chat_openrouter_ainvoke(openrouter, catalog, langfuse_client, otlp_receiver) -> None:
    await chat_openrouter(openrouter).ainvoke(
        "hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]}
    )
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="openrouter", total=0.0241)


def test_chat_openrouter_stream_keeps_openrouters_cost(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    handler = CallbackHandler(price_catalog=catalog)
    assert list(chat_openrouter(openrouter).stream("hello", config={"callbacks": [handler]}))
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="openrouter", total=0.0241)


async def test_chat_openrouter_astream(openrouter, catalog, langfuse_client, otlp_receiver) -> None:
    handler = CallbackHandler(price_catalog=catalog)
    assert [c async for c in chat_openrouter(openrouter).astream("hello", config={"callbacks": [handler]})]
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="openrouter", total=0.0241)


# ---------------------------------------------------------------------------- chains and agents


def test_chain_records_spans_and_an_enriched_generation(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    chain = (
        ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{q}")])
        | chat_openai(openrouter)
        | StrOutputParser()
    )
    handler = CallbackHandler(price_catalog=catalog)
    answer = chain.invoke(
        {"q": "hi"},
        config={
            "callbacks": [handler],
            "metadata": {"langfuse_session_id": "session-7", "langfuse_user_id": "u-1"},
        },
    )
    assert answer == "Hello from the fake OpenRouter."
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="openrouter", total=0.0241)
    spans = otlp_receiver.spans
    names = {s.name for s in spans}
    assert {"RunnableSequence", "ChatPromptTemplate", "StrOutputParser"} <= names
    root = next(s for s in spans if s.name == "RunnableSequence")
    assert generation.parent_span_id == root.span_id
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert any(v == "session-7" for k, v in root.attributes.items() if "session" in k)
    assert any(v == "u-1" for k, v in root.attributes.items() if "user" in k)


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_agent_each_generation_carries_its_own_numbers(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"Sunny in {city}"

    openrouter.queue(
        ResponseSpec(
            model=DATED,
            provider="Anthropic",
            tool_calls=[ToolCall("get_weather", {"city": "Lima"})],
            usage=Usage(prompt_tokens=2_000, completion_tokens=40, cache_write_tokens=1_800, cost=0.00792),
        ),
        ResponseSpec(
            model=DATED,
            provider="Anthropic",
            content="It is sunny in Lima.",
            usage=Usage(prompt_tokens=2_100, completion_tokens=20, cached_tokens=1_800, cost=0.00174),
        ),
    )
    agent = create_react_agent(chat_openai(openrouter), [get_weather])
    result = agent.invoke(
        {"messages": [("user", "Weather in Lima?")]},
        config={"callbacks": [CallbackHandler(price_catalog=catalog)]},
    )
    assert result["messages"][-1].content == "It is sunny in Lima."
    generations = exported_generations(langfuse_client, otlp_receiver, 2)
    first, second = sorted(generations, key=lambda g: g.start_time_unix_nano)
    assert (
        first.usage_details["input_cache_creation"] == 1_800 and "input_cache_read" not in first.usage_details
    )
    assert (
        second.usage_details["input_cache_read"] == 1_800
        and "input_cache_creation" not in second.usage_details
    )
    assert first.cost_details["total"] == pytest.approx(0.00792)
    assert second.cost_details["total"] == pytest.approx(0.00174)
    assert (
        first.metadata["openrouter"]["cache_savings_usd"]
        < 0
        < second.metadata["openrouter"]["cache_savings_usd"]
    )
    spans = otlp_receiver.spans
    assert len({s.trace_id for s in spans}) == 1
    assert any(s.attributes.get("langfuse.observation.type") == "tool" for s in spans)
    trace_total = sum(g.cost_details["total"] for g in generations)
    assert trace_total == pytest.approx(0.00792 + 0.00174)


async def test_200_concurrent_calls_each_get_their_own_numbers(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    llm = chat_openai(openrouter)
    handler = CallbackHandler(price_catalog=catalog)

    async def call(i: int) -> None:
        prompt = f"q{i} " + marker(
            prompt_tokens=1_000 + i, cached_tokens=i, completion_tokens=1 + i % 7, cost=(1_000 + i) / 10**6
        )
        await llm.ainvoke(prompt, config={"callbacks": [handler]})

    await asyncio.gather(*(call(i) for i in range(200)))
    generations = exported_generations(langfuse_client, otlp_receiver, 200)
    seen = set()
    for generation in generations:
        i = generation.usage_details.get("input_cache_read", 0)
        assert generation.usage_details["total"] == 1_000 + i + 1 + i % 7
        assert generation.cost_details["total"] == pytest.approx((1_000 + i) / 10**6)
        seen.add(i)
    assert len(seen) == 200
    assert handler._calls == {}  # no per-run state left behind


# ---------------------------------------------------------------------------- other providers, errors


def _attributes_without_ids(span: ExportedSpan) -> dict[str, Any]:
    skip = ("completion_start_time",)
    return {k: v for k, v in span.attributes.items() if not any(s in k for s in skip)}


def test_other_providers_are_recorded_exactly_as_langfuse_records_them(
    fake_openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    # An OpenAI-compatible API that is not OpenRouter: no cost, no gen- id, not OpenRouter's base URL.
    fake_openrouter.set_default(ANOTHER_PROVIDER)
    llm = ChatOpenAI(base_url=fake_openrouter.base_url, api_key="sk-test", model="gpt-4o-mini", max_retries=0)
    llm.invoke("hello", config={"callbacks": [LangfuseCallbackHandler()]})
    (theirs,) = exported_generations(langfuse_client, otlp_receiver)
    otlp_receiver.clear()
    llm.invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    (ours,) = exported_generations(langfuse_client, otlp_receiver)
    assert "openrouter" not in ours.metadata
    assert _attributes_without_ids(ours) == _attributes_without_ids(theirs)


_OUR_FIELDS = (
    "langfuse.observation.usage_details",
    "langfuse.observation.cost_details",
    "langfuse.observation.metadata.openrouter",
)


def test_openrouter_calls_differ_from_langfuses_record_only_in_our_fields(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    """Our `on_llm_end` mirrors Langfuse's step for step: output, input, model, name, trace, all equal."""
    assert (
        langchain_module._MIRRORS_LANGFUSE_ON_LLM_END
    )  # the pinned Langfuse's on_llm_end is the one mirrored
    llm = chat_openai(openrouter)
    llm.invoke("hello", config={"callbacks": [LangfuseCallbackHandler()], "metadata": {"app": "x"}})
    (theirs,) = exported_generations(langfuse_client, otlp_receiver)
    otlp_receiver.clear()
    llm.invoke(
        "hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)], "metadata": {"app": "x"}}
    )
    (ours,) = exported_generations(langfuse_client, otlp_receiver)

    def without_ours(span: ExportedSpan) -> dict[str, Any]:
        return {k: v for k, v in _attributes_without_ids(span).items() if k not in _OUR_FIELDS}

    assert without_ours(ours) == without_ours(theirs)
    assert ours.name == theirs.name and ours.attributes["langfuse.observation.output"]
    assert_cached_call(ours, cost_source="openrouter", total=0.0241)


def test_a_langfuse_whose_on_llm_end_is_not_mirrored_gets_the_same_fields_another_way(
    openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch
) -> None:
    """Another Langfuse 5.x `on_llm_end`: ours hands its fields to that one's final update instead."""
    llm = chat_openai(openrouter)
    llm.invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    (mirrored,) = exported_generations(langfuse_client, otlp_receiver)
    otlp_receiver.clear()
    monkeypatch.setattr(langchain_module, "_MIRRORS_LANGFUSE_ON_LLM_END", False)
    handler = CallbackHandler(price_catalog=catalog, savings_score=True)
    llm.invoke("hello", config={"callbacks": [handler]})
    (handed,) = exported_generations(langfuse_client, otlp_receiver)
    assert handed.usage_details == mirrored.usage_details == EXPECTED_USAGE
    assert handed.cost_details == pytest.approx(mirrored.cost_details)
    assert handed.metadata["openrouter"]["generation_id"] != mirrored.metadata["openrouter"]["generation_id"]
    for key in ("reported_cost", "cache_savings_usd", "cost_source", "pricing_source"):
        assert handed.metadata["openrouter"][key] == mirrored.metadata["openrouter"][key]
    assert not handler._runs and not handler._calls  # nothing left behind
    savings = mirrored.metadata["openrouter"]["cache_savings_usd"]
    assert [s["value"] for s in otlp_receiver.scores()] == [pytest.approx(savings)]


def test_llm_errors_are_recorded_as_langfuse_records_them(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    openrouter.queue(error_spec(status=400, message="Provider returned error"))
    handler = CallbackHandler(price_catalog=catalog)
    with pytest.raises(Exception, match="Provider returned error"):
        chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert generation.attributes["langfuse.observation.level"] == "ERROR"
    assert generation.cost_details == {"total": 0}
    assert "openrouter" not in generation.metadata
    assert handler._calls == {}


def test_an_error_in_enrichment_never_reaches_the_user(
    openrouter, langfuse_client, otlp_receiver, caplog
) -> None:
    handler = CallbackHandler(price_catalog=BrokenCatalog(offline=True))
    with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"):
        for _ in range(3):
            assert chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]}).content
    generations = exported_generations(langfuse_client, otlp_receiver, 3)
    for generation in generations:  # Langfuse's own data, still exported
        assert generation.usage_details["input_cache_read"] == 6_000
        assert "openrouter" not in generation.metadata
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1  # logged once, with the traceback
    assert "price list exploded" in errors[0].exc_text


def test_the_users_call_never_waits_for_the_price_api(
    openrouter, langfuse_client, otlp_receiver, tmp_path
) -> None:
    openrouter.set_models([model_entry(REQUESTED, SONNET, canonical_slug=DATED)])
    answer = threading.Event()  # the price API answers only when the test says so
    openrouter.set_fault("models", Fault(hold=answer))
    catalog = PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path)
    handler = CallbackHandler(price_catalog=catalog)
    try:  # the call returns and is exported while the price API has not answered
        chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        (generation,) = exported_generations(langfuse_client, otlp_receiver)
        assert not catalog.wait_until_idle(0)  # the model list is still out
    finally:
        answer.set()
    assert generation.metadata["openrouter"]["pricing_source"] == "genai-prices"  # offline data meanwhile
    assert generation.cost_details["total"] == 0.0241


def test_savings_score_is_recorded_when_asked(openrouter, catalog, langfuse_client, otlp_receiver) -> None:
    llm = chat_openai(openrouter)
    llm.invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog, savings_score=True)]})
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    (score,) = otlp_receiver.scores()
    assert score["name"] == "openrouter_cache_savings_usd" and score["dataType"] == "NUMERIC"
    assert score["value"] == pytest.approx(9_000 * 0.000003 - (0.0018 + 0.01125))
    assert score["observationId"] == generation.span_id and score["traceId"] == generation.trace_id

    otlp_receiver.clear()
    llm.invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    exported_generations(langfuse_client, otlp_receiver)
    assert otlp_receiver.scores() == []  # opt-in


# ---------------------------------------------------------------------------- every real shape (issue 13)


def _lookups(openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch) -> Any:
    from langfuse_openrouter_callbacks import generation_stats
    from langfuse_openrouter_callbacks.generation_stats import GenerationStatsFetcher

    monkeypatch.setattr(generation_stats, "_warned", set())
    return GenerationStatsFetcher(
        "sk-or-test", api_base=openrouter.base_url, initial_delay=0.0, initial_backoff=0.05, total_timeout=3.0
    )


@pytest.mark.parametrize("way", ["invoke", "stream"])
def test_chat_openai_on_the_responses_api(openrouter, catalog, langfuse_client, otlp_receiver, way) -> None:
    """`use_responses_api=True` posts to /responses: LangChain keeps the counts (cache writes included)
    and drops OpenRouter's cost, which is then computed from the prices."""
    llm = chat_openai(openrouter, use_responses_api=True)
    config = {"callbacks": [CallbackHandler(price_catalog=catalog)]}
    if way == "invoke":
        assert llm.invoke("hello", config=config).content
    else:
        assert list(llm.stream("hello", config=config))
    assert openrouter.completion_requests[-1].path.endswith("/responses")
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="computed", total=COMPUTED_TOTAL)
    assert generation.metadata["openrouter"]["generation_id"].startswith("gen-")


def test_chat_openai_on_the_responses_api_takes_the_billed_cost_from_the_generation_record(
    openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch
) -> None:
    fetcher = _lookups(openrouter, monkeypatch)
    try:
        handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=fetcher)
        chat_openai(openrouter, use_responses_api=True).invoke("hello", config={"callbacks": [handler]})
        handler.flush()
    finally:
        fetcher.close()
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation, cost_source="openrouter", total=0.0241)


# Real BYOK and non-BYOK costs (reference openrouter.md section 8; issue 13): ChatOpenRouter drops `is_byok`.
BYOK_CASES = {
    "byok-free": (
        Usage(prompt_tokens=1_000, completion_tokens=100, cost=0.0, upstream_inference_cost=0.00417),
        True,
    ),
    "byok-5pct-fee": (
        Usage(prompt_tokens=1_000, completion_tokens=100, cost=0.0002085, upstream_inference_cost=0.00417),
        True,
    ),
    "endpoint-discount": (
        Usage(prompt_tokens=1_000, completion_tokens=100, cost=0.0027105, upstream_inference_cost=0.00417),
        False,
    ),
    "plain": (Usage(prompt_tokens=1_000, completion_tokens=100, cost=0.00417), False),
}


@pytest.mark.parametrize("way", ["invoke", "stream"])
@pytest.mark.parametrize("name", list(BYOK_CASES))
def test_chat_openrouter_tells_byok_from_the_costs_it_keeps(
    openrouter, catalog, langfuse_client, otlp_receiver, name, way
) -> None:
    usage, byok = BYOK_CASES[name]
    openrouter.set_default(
        ResponseSpec(model=DATED, provider="Anthropic", usage=replace(usage, is_byok=byok))
    )
    config = {"callbacks": [CallbackHandler(price_catalog=catalog)]}
    llm = chat_openrouter(openrouter)
    if way == "invoke":
        message = llm.invoke("hello", config=config)
    else:
        chunks = list(llm.stream("hello", config=config))
        message = chunks[0]
        for chunk in chunks[1:]:
            message = message + chunk
    assert "cost" in message.response_metadata
    assert "is_byok" not in message.response_metadata  # langchain-openrouter 0.2.9 drops it
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    meta = generation.metadata["openrouter"]
    assert meta["is_byok"] is byok and meta["cost_source"] == "openrouter"
    # BYOK: the provider's charge to your key plus OpenRouter's fee; else OpenRouter's charge
    expected = usage.upstream_inference_cost + usage.cost if byok else usage.cost
    assert generation.cost_details["total"] == pytest.approx(expected, abs=1e-15)


def test_chat_openrouter_byok_is_taken_from_the_generation_record_when_lookups_are_on(
    openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch
) -> None:
    """A BYOK fee above the rule's 5% would read as not BYOK; the /generation record says it is."""
    usage = Usage(prompt_tokens=1_000, completion_tokens=100, cost=0.001, upstream_inference_cost=0.00417)
    openrouter.set_default(
        ResponseSpec(model=DATED, provider="Anthropic", usage=replace(usage, is_byok=True))
    )
    fetcher = _lookups(openrouter, monkeypatch)
    try:
        handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=fetcher)
        chat_openrouter(openrouter).invoke("hello", config={"callbacks": [handler]})
        handler.flush()
    finally:
        fetcher.close()
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert generation.metadata["openrouter"]["is_byok"] is True
    assert generation.cost_details["total"] == pytest.approx(0.001 + 0.00417, abs=1e-15)


def completion_model(server: FakeOpenRouter) -> Any:
    from langchain_openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)


def test_openai_completions_say_the_cost_is_an_uncached_estimate(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    """LangChain's completion models keep only the three totals: the cache split is unknown, and said so."""
    assert completion_model(openrouter).invoke(
        "hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]}
    )
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert generation.usage_details == {"input": 10_000, "output": 500, "total": 10_500}
    meta = generation.metadata["openrouter"]
    assert meta["cost_source"] == "uncached_estimate"
    assert meta["cache_hit_ratio"] is None and meta["cache_savings_usd"] is None
    assert generation.cost_details["total"] == pytest.approx(NO_CACHE_TOTAL, abs=1e-12)


def test_gemini_cache_creation_keeps_both_counts_and_exclusive_input_buckets(
    openrouter, langfuse_client, otlp_receiver
) -> None:
    """Issue 13's real Gemini call: 2168 prompt tokens, 2161 read and the same 2161 written."""
    gemini = "google/gemini-2.5-flash"
    catalog = PriceCatalog({gemini: GEMINI_FLASH}, offline=True)
    usage = Usage(
        prompt_tokens=2_168, completion_tokens=0, cached_tokens=2_161, cache_write_tokens=2_161, cost=None
    )
    openrouter.set_default(ResponseSpec(model=gemini, provider="Google", usage=usage))
    llm = ChatOpenAI(base_url=openrouter.base_url, api_key="sk-or-test", model=gemini, max_retries=0)
    llm.invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    details = generation.usage_details
    assert details == {
        "input": 7,
        "input_cache_creation": 2_161,
        "cache_written_and_read": 2_161,
        "output": 0,
        "total": 2_168,
    }
    assert sum(v for k, v in details.items() if "input" in k) == 2_168  # the UI's "input" group
    cost = generation.cost_details
    assert cost["input_cache_read"] == pytest.approx(2_161 * 0.03e-6)
    assert cost["input_cache_creation"] == pytest.approx(2_161 * 0.0833333333e-6)
    assert cost["total"] == pytest.approx(0.00024701333, abs=5e-12)  # OpenRouter's prompt cost, as quoted


def test_a_bare_llm_root_run_stores_unquoted_user_and_session_ids(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    """The server reads `user.id`/`session.id` before the JSON-encoded metadata copies (`"u-1"`)."""
    chat_openai(openrouter).invoke(
        "hello",
        config={
            "callbacks": [CallbackHandler(price_catalog=catalog)],
            "metadata": {"langfuse_user_id": "u-1", "langfuse_session_id": "s-1"},
        },
    )
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert generation.attributes["user.id"] == "u-1"
    assert generation.attributes["session.id"] == "s-1"
    assert generation.attributes["langfuse.observation.metadata.langfuse_user_id"] == '"u-1"'  # Langfuse's


def test_a_recorded_web_search_call_gets_its_server_tools_bucket(
    openrouter, langfuse_client, otlp_receiver
) -> None:
    """The real recorded gpt-4.1-mini call with one web search, replayed byte for byte."""
    model = "openai/gpt-4.1-mini"
    catalog = PriceCatalog(
        {model: {"prompt": "0.0000004", "completion": "0.0000016", "web_search": "0.01"}}, offline=True
    )
    openrouter.replay("test_openrouter_web_search_tool_usage.yaml")
    llm = ChatOpenAI(base_url=openrouter.base_url, api_key="sk-or-test", model=model, max_retries=0)
    llm.invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert generation.cost_details["server_tools"] == pytest.approx(0.01)
    assert generation.cost_details["total"] == pytest.approx(0.0133176, abs=1e-12)
    meta = generation.metadata["openrouter"]
    assert meta["web_search_requests"] == 1 and meta["reconciliation_delta"] == 0
    assert meta["server_tool_cost"] is None  # not reported: priced by the catalog's web_search


def test_chat_openrouter_loses_the_server_tool_details_but_not_their_cost(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    """langchain-openrouter 0.2.9 drops `server_tool_use_details` and `cost_details.server_tool_cost`:
    the total is still OpenRouter's, and what the tools cost shows as `other`."""
    usage = Usage(
        prompt_tokens=1_000, completion_tokens=100, cost=0.0145, server_tool_cost=0.01, web_search_requests=1
    )
    openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=usage))
    message = chat_openrouter(openrouter).invoke(
        "hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]}
    )
    assert "server_tool_cost" not in message.response_metadata["cost_details"]
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert "server_tools" not in generation.cost_details
    assert generation.cost_details["other"] == pytest.approx(0.01, abs=1e-12)
    assert generation.cost_details["total"] == pytest.approx(0.0145, abs=1e-12)


def test_chat_openai_keeps_a_reported_server_tool_cost(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    usage = Usage(
        prompt_tokens=1_000, completion_tokens=100, cost=0.0145, server_tool_cost=0.01, web_search_requests=1
    )
    openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=usage))
    chat_openai(openrouter).invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert generation.cost_details["server_tools"] == pytest.approx(0.01)
    assert generation.cost_details["total"] == pytest.approx(0.0145, abs=1e-12)
    meta = generation.metadata["openrouter"]
    assert meta["server_tool_cost"] == pytest.approx(0.01) and meta["web_search_requests"] == 1


def test_a_response_without_the_cache_split_takes_it_from_the_generation_record(
    openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch
) -> None:
    """Only the three totals on the wire (as in older responses): an uncached estimate, unless the
    `/generation` record (its `native_tokens_cached` and `total_cost`) is fetched."""
    openrouter.set_default(
        ResponseSpec(model=DATED, provider="Anthropic", usage=replace(CACHED_CALL, legacy=True))
    )
    chat_openai(openrouter).invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    (estimate,) = exported_generations(langfuse_client, otlp_receiver)
    assert estimate.metadata["openrouter"]["cost_source"] == "uncached_estimate"
    assert estimate.metadata["openrouter"]["cache_hit_ratio"] is None
    otlp_receiver.clear()
    fetcher = _lookups(openrouter, monkeypatch)
    try:
        handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=fetcher)
        chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        handler.flush()
    finally:
        fetcher.close()
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    meta = generation.metadata["openrouter"]
    assert meta["cost_source"] == "openrouter" and meta["cache_hit_ratio"] == 0.6
    assert generation.usage_details["input_cache_read"] == 6_000  # the record has no cache writes
    assert generation.cost_details["total"] == pytest.approx(0.0241, abs=1e-12)
