"""The LlamaIndex global handler end to end: real llama-index clients, local OpenRouter and OTLP servers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import llama_index.core
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike
from llama_index.llms.openrouter import OpenRouter

from langfuse_openrouter_callbacks import _enrich, _langfuse_write
from langfuse_openrouter_callbacks.demo.embedding import HashEmbedding
from langfuse_openrouter_callbacks.llama_index import (
    LlamaIndexCallbackHandler,
    set_global_handler,
    trace_attributes,
)
from tests.scenario import ANOTHER_PROVIDER, CACHED_CALL, DATED, EXPECTED_USAGE, REQUESTED, BrokenCatalog
from tests.support.openrouter_server import (
    FakeOpenRouter,
    ResponseSpec,
    error_spec,
    marker,
    marker_responder,
)
from tests.support.otlp_receiver import ExportedSpan, OTLPReceiver

HELLO = [ChatMessage(role="user", content="hello")]


@pytest.fixture
def clean_llama_index() -> Iterator[None]:
    """Leave LlamaIndex's global handler and Settings as they were."""
    llm, embed, manager = Settings._llm, Settings._embed_model, Settings._callback_manager
    yield
    llama_index.core.global_handler = None
    Settings._llm, Settings._embed_model, Settings._callback_manager = llm, embed, manager


@pytest.fixture
def handler(catalog, clean_llama_index, langfuse_client) -> LlamaIndexCallbackHandler:
    return set_global_handler(price_catalog=catalog)


def openrouter_llm(server: FakeOpenRouter) -> OpenRouter:
    return OpenRouter(api_base=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)


def exported_generations(client: Any, receiver: OTLPReceiver, count: int = 1) -> list[ExportedSpan]:
    client.flush()
    generations = receiver.generations()
    assert len(generations) == count, [g.name for g in generations]
    return generations


def assert_cached_call(generation: ExportedSpan) -> None:
    assert generation.usage_details == EXPECTED_USAGE
    assert generation.cost_details["total"] == 0.0241
    buckets = {k: v for k, v in generation.cost_details.items() if k != "total"}
    assert sum(buckets.values()) == pytest.approx(0.0241, abs=1e-12)
    meta = generation.metadata["openrouter"]
    assert meta["cost_source"] == "openrouter"
    assert meta["pricing_source"] == "override"  # priced by the configured model id's override
    assert meta["provider"] == "Anthropic" and meta["generation_id"].startswith("gen-")
    assert meta["cache_hit_ratio"] == 0.6
    # the 9,000 cache tokens at the prompt price, minus what reading and writing them cost
    assert meta["cache_savings_usd"] == pytest.approx(9_000 * 0.000003 - (0.0018 + 0.01125), abs=1e-12)
    assert generation.model_name == DATED


def test_set_global_handler_is_llama_indexs_global_handler(handler) -> None:
    assert llama_index.core.global_handler is handler
    assert handler in CallbackManager().handlers


def test_chat(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    response = openrouter_llm(openrouter).chat(HELLO)
    assert response.message.content
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation)
    assert generation.attributes["langfuse.observation.input"] == '[{"role": "user", "content": "hello"}]'
    assert "Hello from the fake OpenRouter." in generation.attributes["langfuse.observation.output"]
    assert generation.name == "OpenRouter"
    assert generation.json_attribute("langfuse.observation.model.parameters")["context_window"] > 0


def test_complete(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    assert openrouter_llm(openrouter).complete("hello").text
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation)
    assert generation.attributes["langfuse.observation.input"] == "hello"


async def test_achat_and_acomplete(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    llm = openrouter_llm(openrouter)
    await llm.achat(HELLO)
    await llm.acomplete("hello")
    for generation in exported_generations(langfuse_client, otlp_receiver, 2):
        assert_cached_call(generation)


@pytest.mark.parametrize("usage_chunk_style", ["empty_choices", "with_choice"])
def test_stream_chat_carries_cache_fields_cost_and_first_token_time(
    openrouter, handler, langfuse_client, otlp_receiver, usage_chunk_style
) -> None:
    openrouter.set_default(
        ResponseSpec(
            model=DATED, provider="Anthropic", usage=CACHED_CALL, usage_chunk_style=usage_chunk_style
        )
    )
    chunks = list(openrouter_llm(openrouter).stream_chat(HELLO))
    assert chunks[-1].message.content == "Hello from the fake OpenRouter."
    assert not FakeOpenRouter.asked_for_usage(openrouter.chat_requests[-1])  # LlamaIndex never asks
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation)
    assert "langfuse.observation.completion_start_time" in generation.attributes


def test_stream_complete(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    assert list(openrouter_llm(openrouter).stream_complete("hello"))
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation)
    assert "langfuse.observation.completion_start_time" in generation.attributes


async def test_astream_chat(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    stream = await openrouter_llm(openrouter).astream_chat(HELLO)
    assert [chunk async for chunk in stream]
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation)
    assert "langfuse.observation.completion_start_time" in generation.attributes


def test_openai_like_against_openrouter(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    llm = OpenAILike(
        api_base=openrouter.base_url, api_key="sk-or-test", model=REQUESTED, is_chat_model=True, max_retries=0
    )
    llm.chat(HELLO)
    list(llm.stream_chat(HELLO))
    for generation in exported_generations(langfuse_client, otlp_receiver, 2):
        assert_cached_call(generation)
        assert generation.name == "OpenAILike"


def test_query_engine_builds_the_trace_tree(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    Settings.llm = openrouter_llm(openrouter)
    Settings.embed_model = HashEmbedding(model_name="hash-256")
    index = VectorStoreIndex.from_documents(
        [Document(text="Lima is the capital of Peru."), Document(text="Paris is the capital of France.")]
    )
    langfuse_client.flush()
    otlp_receiver.clear()

    answer = index.as_query_engine(similarity_top_k=1).query("What is the capital of Peru?")
    assert str(answer) == "Hello from the fake OpenRouter."
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert_cached_call(generation)
    spans = {s.span_id: s for s in otlp_receiver.spans}
    by_name = {s.name: s for s in spans.values()}
    root = by_name["query"]
    assert root.parent_span_id is None
    assert root.attributes["langfuse.observation.input"] == "What is the capital of Peru?"
    assert {s.trace_id for s in spans.values()} == {root.trace_id}
    retrieve, synthesize = by_name["retrieve"], by_name["synthesize"]
    assert retrieve.parent_span_id == root.span_id and synthesize.parent_span_id == root.span_id
    assert retrieve.observation_type == "retriever"
    assert "Lima is the capital of Peru." in retrieve.attributes["langfuse.observation.output"]
    embedding = next(s for s in spans.values() if s.observation_type == "embedding")
    assert embedding.parent_span_id == retrieve.span_id and embedding.model_name == "hash-256"
    assert generation.parent_span_id == synthesize.span_id
    assert spans[by_name["templating"].span_id].parent_span_id == synthesize.span_id


async def test_concurrent_queries_stay_separate(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    Settings.embed_model = HashEmbedding(model_name="hash-256")
    Settings.llm = openrouter_llm(openrouter)
    index = VectorStoreIndex.from_documents([Document(text="Lima is the capital of Peru.")])
    engine = index.as_query_engine()
    langfuse_client.flush()
    otlp_receiver.clear()

    questions = [
        f"capital {marker(prompt_tokens=1_000 + i, cached_tokens=i, cost=(1_000 + i) / 10**6)}"
        for i in range(8)
    ]
    await asyncio.gather(*(engine.aquery(q) for q in questions))
    generations = exported_generations(langfuse_client, otlp_receiver, 8)
    roots = [s for s in otlp_receiver.spans if s.name == "query"]
    assert len(roots) == 8 and len({r.trace_id for r in roots}) == 8
    for generation in generations:
        i = generation.usage_details.get("input_cache_read", 0)
        assert generation.usage_details["total"] == 1_000 + i + 7
        assert generation.cost_details["total"] == pytest.approx((1_000 + i) / 10**6)
        root = next(r for r in roots if r.trace_id == generation.trace_id)
        assert f'prompt_tokens": {1_000 + i}' in root.attributes["langfuse.observation.input"]


def test_trace_attributes_from_arguments_and_context_manager(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    set_global_handler(
        price_catalog=catalog, user_id="u-1", session_id="s-1", tags=["rag"], trace_name="support"
    )
    llm = openrouter_llm(openrouter)
    llm.chat(HELLO)
    with trace_attributes(user_id="u-2", trace_name="override"):
        llm.chat(HELLO)
    first, second = sorted(
        exported_generations(langfuse_client, otlp_receiver, 2), key=lambda g: g.start_time_unix_nano
    )
    assert first.attributes["user.id"] == "u-1" and second.attributes["user.id"] == "u-2"
    assert first.attributes["session.id"] == second.attributes["session.id"] == "s-1"
    assert first.attributes["langfuse.trace.name"] == "support"
    assert second.attributes["langfuse.trace.name"] == "override"
    assert list(first.attributes["langfuse.trace.tags"]) == ["rag"]


def test_handler_in_a_callback_manager_without_the_global_one(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    handler = LlamaIndexCallbackHandler(price_catalog=catalog)
    llm = OpenRouter(
        api_base=openrouter.base_url,
        api_key="sk-or-test",
        model=REQUESTED,
        max_retries=0,
        callback_manager=CallbackManager([handler]),
    )
    llm.chat(HELLO)
    handler.flush()
    (generation,) = otlp_receiver.generations()
    assert_cached_call(generation)


def test_settings_callback_manager_made_before_gets_the_handler(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    Settings.callback_manager = CallbackManager([])
    handler = set_global_handler(price_catalog=catalog)
    assert handler in Settings.callback_manager.handlers
    set_global_handler(price_catalog=catalog)
    assert sum(isinstance(h, LlamaIndexCallbackHandler) for h in Settings.callback_manager.handlers) == 1


def test_llm_errors_are_recorded_and_raised(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    openrouter.queue(error_spec(status=400, message="Provider returned error"))
    with pytest.raises(Exception, match="Provider returned error"):
        openrouter_llm(openrouter).chat(HELLO)
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert generation.attributes["langfuse.observation.level"] == "ERROR"
    assert "Provider returned error" in generation.attributes["langfuse.observation.status_message"]


def test_an_error_in_enrichment_never_reaches_the_user(
    openrouter, clean_llama_index, langfuse_client, otlp_receiver, caplog
) -> None:
    set_global_handler(price_catalog=BrokenCatalog(offline=True))
    llm = openrouter_llm(openrouter)
    with caplog.at_level(logging.WARNING, logger="langfuse_openrouter_callbacks"):
        assert llm.chat(HELLO).message.content
        assert llm.complete("hello").text
    generations = exported_generations(langfuse_client, otlp_receiver, 2)
    for generation in generations:
        assert "openrouter" not in generation.metadata
        assert "Hello from the fake OpenRouter." in generation.attributes["langfuse.observation.output"]
    assert len(caplog.records) == 1 and "price list exploded" in caplog.records[0].exc_text


def _recorded(span: ExportedSpan) -> dict[str, Any]:
    """What a generation records, without what differs from call to call (ids, times)."""
    varying = ("completion_start_time", "metadata.openrouter", "trace")
    return {k: v for k, v in span.attributes.items() if not any(part in k for part in varying)}


def test_one_write_records_what_langfuses_update_records_mask_included(
    openrouter, handler, langfuse_client, otlp_receiver, monkeypatch
) -> None:
    """The output, model and our fields go to the span in one write, by Langfuse's own steps: the same
    attributes as its `update()` followed by our write, the client's mask applied to the output."""
    assert _langfuse_write.langfuse().mirrored  # the pinned Langfuse's update() is the one mirrored
    monkeypatch.setattr(
        handler.langfuse, "_mask", lambda data: "<masked>" if isinstance(data, dict) else data
    )
    writes: list[int] = []
    steps = _langfuse_write.langfuse()
    counted = dataclasses.replace(
        steps, set_attributes=lambda *a: writes.append(1) or steps.set_attributes(*a)
    )
    monkeypatch.setattr(_langfuse_write, "_langfuse", counted)
    llm = openrouter_llm(openrouter)
    llm.chat(HELLO)
    (one_write,) = exported_generations(langfuse_client, otlp_receiver)
    assert writes == [1]
    otlp_receiver.clear()
    monkeypatch.setattr(_langfuse_write, "_langfuse", dataclasses.replace(counted, mirrored=False))
    llm.chat(HELLO)
    (two_writes,) = exported_generations(langfuse_client, otlp_receiver)
    assert writes == [1, 1]  # Langfuse's update() does not go through our steps: ours is the second
    assert one_write.attributes["langfuse.observation.output"] == "<masked>"
    assert _recorded(one_write) == _recorded(two_writes)
    assert_cached_call(one_write)


def test_when_our_fields_cannot_be_written_the_output_still_is(
    openrouter, handler, langfuse_client, otlp_receiver, monkeypatch, caplog
) -> None:
    def broken(*args: Any) -> dict[str, str]:
        raise RuntimeError("attributes exploded")

    monkeypatch.setattr(_enrich, "generation_attributes", broken)
    with caplog.at_level(logging.WARNING, logger="langfuse_openrouter_callbacks"):
        assert openrouter_llm(openrouter).chat(HELLO).message.content
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert "Hello from the fake OpenRouter." in generation.attributes["langfuse.observation.output"]
    assert generation.model_name == DATED and "openrouter" not in generation.metadata
    assert len(caplog.records) == 1 and "attributes exploded" in caplog.records[0].exc_text


def test_other_providers_get_their_usage_and_no_openrouter_cost(
    fake_openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    fake_openrouter.set_default(ANOTHER_PROVIDER)
    llm = OpenAILike(api_base=fake_openrouter.base_url, api_key="sk", model="gpt-4o-mini", is_chat_model=True)
    llm.chat(HELLO)
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    assert generation.usage_details == {"input": 30, "input_cache_read": 20, "output": 5, "total": 55}
    assert generation.cost_details is None  # Langfuse prices it as usual
    assert "openrouter" not in generation.metadata


def test_savings_score_is_recorded_when_asked(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    set_global_handler(price_catalog=catalog, savings_score=True)
    openrouter_llm(openrouter).chat(HELLO)
    (generation,) = exported_generations(langfuse_client, otlp_receiver)
    (score,) = otlp_receiver.scores()
    assert score["name"] == "openrouter_cache_savings_usd" and score["dataType"] == "NUMERIC"
    assert score["value"] == pytest.approx(9_000 * 0.000003 - (0.0018 + 0.01125))
    assert score["observationId"] == generation.span_id and score["traceId"] == generation.trace_id


def test_no_savings_score_unless_asked(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    openrouter_llm(openrouter).chat(HELLO)
    exported_generations(langfuse_client, otlp_receiver)
    assert otlp_receiver.scores() == []
