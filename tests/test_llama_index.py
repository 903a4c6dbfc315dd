"""The LlamaIndex global handler end to end: real llama-index apps, local OpenRouter and OTLP servers.

Each app runs over HTTP against the fake OpenRouter with the handler on; the assertions are on the
spans the real Langfuse client exported: what the user got back (the same text as without the
handler), how many traces, the observation types and their nesting, the generations' fields.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
import logging
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.llms.openai_like import OpenAILike
from llama_index.llms.openrouter import OpenRouter
from pydantic import BaseModel

from langfuse_openrouter_callbacks import _enrich, _langfuse_write
from langfuse_openrouter_callbacks.demo.embedding import HashEmbedding
from langfuse_openrouter_callbacks.llama_index import LlamaIndexHandler, set_global_handler, trace_attributes
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
ANSWER = "Hello from the fake OpenRouter."
DOCUMENTS = ["Lima is the capital of Peru.", "Paris is the capital of France."]


# ---------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def clean_llama_index() -> Iterator[None]:
    """Leave LlamaIndex's Settings and dispatcher as they were."""
    llm, embed, manager = Settings._llm, Settings._embed_model, Settings._callback_manager
    dispatcher = get_dispatcher()
    span_handlers, event_handlers = list(dispatcher.span_handlers), list(dispatcher.event_handlers)
    yield
    Settings._llm, Settings._embed_model, Settings._callback_manager = llm, embed, manager
    dispatcher.span_handlers[:], dispatcher.event_handlers[:] = span_handlers, event_handlers


@pytest.fixture
def handler(catalog, clean_llama_index, langfuse_client) -> Iterator[LlamaIndexHandler]:
    handler = set_global_handler(price_catalog=catalog)
    yield handler
    handler.close()


def openrouter_llm(server: FakeOpenRouter, **kwargs: Any) -> OpenRouter:
    return OpenRouter(
        api_base=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0, **kwargs
    )


def openai_like(server: FakeOpenRouter, **kwargs: Any) -> OpenAILike:
    return OpenAILike(
        api_base=server.base_url,
        api_key="sk-or-test",
        model=REQUESTED,
        is_chat_model=True,
        max_retries=0,
        **kwargs,
    )


def build_index(server: FakeOpenRouter) -> VectorStoreIndex:
    Settings.llm = openrouter_llm(server)
    Settings.embed_model = HashEmbedding(model_name="hash-256")
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS])


class Exported:
    """What the Langfuse client exported, as traces of observations."""

    def __init__(self, client: Any, receiver: OTLPReceiver) -> None:
        client.flush()
        self.spans = list(receiver.spans)
        self.by_id = {s.span_id: s for s in self.spans}

    @property
    def traces(self) -> dict[str, list[ExportedSpan]]:
        out: dict[str, list[ExportedSpan]] = {}
        for span in self.spans:
            out.setdefault(span.trace_id, []).append(span)
        return out

    @property
    def roots(self) -> list[ExportedSpan]:
        return [s for s in self.spans if s.parent_span_id is None]

    @property
    def generations(self) -> list[ExportedSpan]:
        return [s for s in self.spans if s.observation_type == "generation"]

    def typed(self, as_type: str) -> list[ExportedSpan]:
        return [s for s in self.spans if s.observation_type == as_type]

    def named(self, name: str) -> list[ExportedSpan]:
        return [s for s in self.spans if s.name == name]

    def ancestors(self, span: ExportedSpan) -> list[ExportedSpan]:
        out = []
        while span.parent_span_id is not None:
            span = self.by_id[span.parent_span_id]
            out.append(span)
        return out

    def tree(self) -> str:
        """The traces as indented `type name` lines (for failure messages)."""
        lines: list[str] = []

        def walk(span: ExportedSpan, depth: int) -> None:
            lines.append(f"{'  ' * depth}{span.observation_type} {span.name}")
            for child in sorted(
                (s for s in self.spans if s.parent_span_id == span.span_id),
                key=lambda s: s.start_time_unix_nano,
            ):
                walk(child, depth + 1)

        for root in self.roots:
            walk(root, 0)
        return "\n".join(lines)


def exported(client: Any, receiver: OTLPReceiver) -> Exported:
    return Exported(client, receiver)


def assert_cached_call(generation: ExportedSpan) -> None:
    """The scenario's call, as LangChain's handler records it (core `enrich`)."""
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


def assert_one_trace_one_generation(seen: Exported) -> ExportedSpan:
    """One trace, one root, exactly one generation (enriched), and no other observation priced."""
    assert len(seen.traces) == 1, seen.tree()
    assert len(seen.roots) == 1, seen.tree()
    (generation,) = seen.generations
    assert_cached_call(generation)
    for span in seen.spans:
        if span is not generation:
            assert span.usage_details is None and span.cost_details is None, span.name
            assert span.model_name is None or span.observation_type == "embedding", span.name
    return generation


def assert_stream_generation(generation: ExportedSpan) -> None:
    start = generation.attributes["langfuse.observation.completion_start_time"]
    assert start and ANSWER in generation.attributes["langfuse.observation.output"]


def without_handler(run: Callable[[], Any]) -> Any:
    """What `run` gives with no handler listening (LlamaIndex's dispatcher as it was before)."""
    dispatcher = get_dispatcher()
    span_handlers, event_handlers = list(dispatcher.span_handlers), list(dispatcher.event_handlers)
    ours = [h for h in span_handlers if type(h).__name__ == "_SpanHandler"]
    dispatcher.span_handlers[:] = [h for h in span_handlers if h not in ours]
    dispatcher.event_handlers[:] = [h for h in event_handlers if type(h).__name__ != "_EventHandler"]
    try:
        return run()
    finally:
        dispatcher.span_handlers[:], dispatcher.event_handlers[:] = span_handlers, event_handlers


# ---------------------------------------------------------------------------- the one line


def test_set_global_handler_listens_on_the_root_dispatcher_once(
    catalog, clean_llama_index, langfuse_client
) -> None:
    dispatcher = get_dispatcher()
    first = set_global_handler(price_catalog=catalog)
    second = set_global_handler(price_catalog=catalog)
    ours = [h for h in dispatcher.span_handlers if type(h).__name__ == "_SpanHandler"]
    assert len(ours) == 1 and ours[0] is second._span_handler
    assert first._event_handler not in dispatcher.event_handlers
    second.close()
    assert not [h for h in dispatcher.span_handlers if type(h).__name__ == "_SpanHandler"]


def test_legacy_ignore_arguments_warn(catalog, clean_llama_index, langfuse_client) -> None:
    with pytest.warns(DeprecationWarning, match="event_starts_to_ignore is ignored"):
        set_global_handler(price_catalog=catalog, event_starts_to_ignore=["llm"]).close()


def test_what_the_handler_relies_on_in_llama_index(openrouter, clean_llama_index) -> None:
    """LlamaIndex internals the handler reads (no public API says them): fails loudly if they change.

    Span ids are `Class.method-<uuid>` (names, and how a repeated call is recognised); an index
    construction opens no span but a legacy `as_trace` (its root); `Settings._callback_manager` is the
    callback manager Settings made before the handler (it gets the handler too).
    """
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.callbacks.base_handler import BaseCallbackHandler
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    spans = SimpleSpanHandler()
    dispatcher = get_dispatcher()
    dispatcher.add_span_handler(spans)
    openrouter_llm(openrouter).chat(HELLO)
    ids = [s.id_.partition("-") for s in spans.completed_spans]
    assert [name for name, _, _ in ids] == ["OpenRouter.chat", "OpenRouter.chat"]
    assert all(uuid.UUID(rest) for _, _, rest in ids)

    traces: list[str] = []

    class Traces(BaseCallbackHandler):
        def __init__(self) -> None:
            super().__init__([], [])

        def start_trace(self, trace_id: str | None = None) -> None:
            traces.append(str(trace_id))

        def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None: ...

        def on_event_start(self, *args: Any, **kwargs: Any) -> str:
            return ""

        def on_event_end(self, *args: Any, **kwargs: Any) -> None: ...

    Settings.callback_manager = CallbackManager([Traces()])
    assert Settings._callback_manager is Settings.callback_manager
    spans.completed_spans.clear()
    Settings.embed_model = HashEmbedding()
    VectorStoreIndex.from_documents([Document(text=DOCUMENTS[0])])
    assert traces[0] == "index_construction"
    batches = [
        s for s in spans.completed_spans if s.id_.startswith("HashEmbedding.get_text_embedding_batch-")
    ]
    assert batches and all(s.parent_id is None for s in batches)  # no span encloses the construction


# ---------------------------------------------------------------------------- a lone LLM call


def test_chat(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    response = openrouter_llm(openrouter, temperature=0.3).chat(HELLO)
    assert response.message.content == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    generation = assert_one_trace_one_generation(seen)
    assert generation.parent_span_id is None and generation.name == "OpenRouter"
    assert generation.attributes["langfuse.observation.input"] == '[{"role": "user", "content": "hello"}]'
    assert ANSWER in generation.attributes["langfuse.observation.output"]
    parameters = generation.json_attribute("langfuse.observation.model.parameters")
    assert parameters["temperature"] == 0.3 and "context_window" not in parameters
    assert "langfuse.observation.completion_start_time" not in generation.attributes


def test_complete(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    assert openrouter_llm(openrouter).complete("hello").text == ANSWER
    generation = assert_one_trace_one_generation(exported(langfuse_client, otlp_receiver))
    assert generation.attributes["langfuse.observation.input"] == "hello"


async def test_achat_acomplete_then_astream_chat_on_the_same_llm(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    llm = openrouter_llm(openrouter)
    await llm.achat(HELLO)
    await llm.acomplete("hello")
    stream = await llm.astream_chat(HELLO)
    assert "".join([c.delta async for c in stream]) == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 3 and len(seen.generations) == 3
    for generation in seen.generations:
        assert_cached_call(generation)


@pytest.mark.parametrize("usage_chunk_style", ["empty_choices", "with_choice"])
def test_stream_chat_is_one_generation_ended_by_the_stream(
    openrouter, handler, langfuse_client, otlp_receiver, usage_chunk_style
) -> None:
    openrouter.set_default(
        ResponseSpec(
            model=DATED, provider="Anthropic", usage=CACHED_CALL, usage_chunk_style=usage_chunk_style
        )
    )
    chunks = list(openrouter_llm(openrouter).stream_chat(HELLO))
    assert chunks[-1].message.content == ANSWER
    generation = assert_one_trace_one_generation(exported(langfuse_client, otlp_receiver))
    assert_stream_generation(generation)


async def test_astream_complete(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    stream = await openrouter_llm(openrouter).astream_complete("hello")
    assert "".join([c.delta async for c in stream]) == ANSWER
    assert_stream_generation(assert_one_trace_one_generation(exported(langfuse_client, otlp_receiver)))


def test_an_unconsumed_stream_ends_its_generation_when_dropped(
    openrouter, handler, langfuse_client, otlp_receiver
):
    stream = openrouter_llm(openrouter).stream_chat(HELLO)
    next(stream)
    del stream
    gc.collect()
    (generation,) = exported(langfuse_client, otlp_receiver).generations
    assert generation.usage_details is None  # the usage chunk never came


@pytest.mark.parametrize("is_chat_model", [True, False])
def test_openai_like_wrapper_spans_are_not_priced(
    is_chat_model, openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    llm = openai_like(openrouter).model_copy(update={"is_chat_model": is_chat_model})
    assert llm.chat(HELLO).message.content == ANSWER
    assert "".join(c.delta for c in llm.stream_chat(HELLO)) == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 2 and len(seen.generations) == 2, seen.tree()
    for generation in seen.generations:
        assert_cached_call(generation)
        assert generation.name == "OpenAILike"
    for trace in seen.traces.values():
        assert sum(s.observation_type == "generation" for s in trace) == 1
    if not is_chat_model:  # chat() completes a prompt: its chat span wraps the completion's generation
        assert "OpenAILike.chat" in {s.name for s in seen.spans if s.observation_type == "span"}


def test_structured_predict(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    class City(BaseModel):
        name: str

    openrouter.set_default(
        ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL, content='{"name": "Lima"}')
    )
    city = openrouter_llm(openrouter).structured_predict(
        City, PromptTemplate("The capital of {country}?"), country="Peru"
    )
    assert city == City(name="Lima")
    seen = exported(langfuse_client, otlp_receiver)
    generation = assert_one_trace_one_generation(seen)
    (root,) = seen.roots
    assert root.name == "OpenRouter.structured_predict" and root.observation_type == "span"
    assert "The capital of Peru?" in generation.attributes["langfuse.observation.input"]
    assert [a.name for a in seen.ancestors(generation)] == [
        "LLMTextCompletionProgram.__call__",
        "OpenRouter.structured_predict",
    ]
    assert root.json_attribute("langfuse.observation.output") == {"name": "Lima"} or "Lima" in str(
        root.attributes.get("langfuse.observation.output")
    )


def test_llm_error_is_an_error_generation_costing_nothing(
    openrouter, handler, langfuse_client, otlp_receiver
):
    openrouter.queue(error_spec(status=500, message="Internal Server Error"))
    with pytest.raises(Exception, match="Internal Server Error"):
        openrouter_llm(openrouter).chat(HELLO)
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 1
    (generation,) = seen.generations
    assert generation.attributes["langfuse.observation.level"] == "ERROR"
    assert "Internal Server Error" in generation.attributes["langfuse.observation.status_message"]
    assert generation.cost_details == {"total": 0}


def test_a_failed_stream_is_an_error_generation_costing_nothing(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    openrouter.queue(error_spec(status=500, message="Internal Server Error"))
    stream = openrouter_llm(openrouter).stream_chat(HELLO)
    with pytest.raises(Exception, match="Internal Server Error"):
        list(stream)
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 1
    (generation,) = seen.generations
    assert generation.attributes["langfuse.observation.level"] == "ERROR"
    assert generation.cost_details == {"total": 0} and generation.usage_details is None
    assert handler._generations == {}


def test_a_failed_query_is_one_trace_with_its_error(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    engine = build_index(openrouter).as_query_engine(similarity_top_k=1)
    langfuse_client.flush()
    otlp_receiver.clear()
    openrouter.queue(error_spec(status=500, message="Internal Server Error"))
    with pytest.raises(Exception, match="Internal Server Error"):
        engine.query("capital of Peru?")
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 1
    (generation,) = seen.generations
    assert generation.cost_details == {"total": 0}
    for span in [generation, *seen.ancestors(generation)]:
        assert span.attributes["langfuse.observation.level"] == "ERROR", span.name
    assert not [s for s in seen.spans if s.cost_details and s.cost_details.get("total")]


def test_an_llm_call_without_a_span_of_its_own_is_still_one_generation(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    """LLM events whose span is not an LLM's (an LLM class outside LlamaIndex's span mixin)."""
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent

    response = openrouter_llm(openrouter)._chat(HELLO)  # the real response, without LlamaIndex's spans
    otlp_receiver.clear()
    span_id = f"MyPipeline.run-{uuid.uuid4()}"
    bound = inspect.signature(lambda question: None).bind("hi")
    handler._span_handler.span_enter(id_=span_id, bound_args=bound, instance=None)
    model_dict = {"class_name": "OpenRouter_LLM", "model_name": REQUESTED}
    handler._event_handler.handle(
        LLMChatStartEvent(model_dict=model_dict, messages=HELLO, additional_kwargs={}, span_id=span_id)
    )
    handler._event_handler.handle(LLMChatEndEvent(messages=HELLO, response=response, span_id=span_id))
    handler._span_handler.span_exit(id_=span_id, bound_args=bound, instance=None, result="done")
    seen = exported(langfuse_client, otlp_receiver)
    generation = assert_one_trace_one_generation(seen)
    assert generation.name == "OpenRouter" and seen.by_id[generation.parent_span_id].name == "MyPipeline.run"


def test_other_providers_get_their_usage_and_no_cost_of_ours(
    fake_openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    fake_openrouter.set_default(ANOTHER_PROVIDER)
    llm = OpenAILike(api_base=fake_openrouter.base_url, api_key="sk", model="gpt-4o-mini", is_chat_model=True)
    llm.chat(HELLO)
    (generation,) = exported(langfuse_client, otlp_receiver).generations
    assert generation.usage_details == {"input": 30, "input_cache_read": 20, "output": 5, "total": 55}
    assert generation.cost_details is None  # Langfuse prices it as usual
    assert "openrouter" not in generation.metadata


ANTHROPIC_RAW = {  # an Anthropic Message's usage: input_tokens without the cache
    "id": "msg_01",
    "model": "claude-sonnet-4-5-20250929",
    "usage": {
        "input_tokens": 100,
        "cache_read_input_tokens": 6_000,
        "cache_creation_input_tokens": 3_000,
        "output_tokens": 50,
    },
}
GEMINI_RAW = {  # Gemini's usage_metadata: prompt_token_count with the cache, thoughts beside candidates
    "model_version": "gemini-2.5-flash",
    "usage_metadata": {
        "prompt_token_count": 1_000,
        "cached_content_token_count": 600,
        "candidates_token_count": 40,
        "thoughts_token_count": 10,
        "total_token_count": 1_050,
    },
}


@pytest.mark.parametrize(
    ("raw", "model", "usage"),
    [
        (
            ANTHROPIC_RAW,
            "claude-sonnet-4-5-20250929",
            {
                "input": 100,
                "input_cache_read": 6_000,
                "input_cache_creation": 3_000,
                "output": 50,
                "total": 9_150,
            },
        ),
        (
            GEMINI_RAW,
            "gemini-2.5-flash",
            {"input": 400, "input_cache_read": 600, "output": 40, "output_reasoning": 10, "total": 1_050},
        ),
    ],
    ids=["anthropic", "gemini"],
)
def test_other_providers_usage_shapes_in_langfuses_keys(
    raw, model, usage, handler, langfuse_client, otlp_receiver
) -> None:
    """What LlamaIndex's Anthropic and Gemini LLMs put in `response.raw`, as the LLM events carry it."""
    from llama_index.core.base.llms.types import ChatResponse
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
    from llama_index.core.llms.mock import MockLLM

    llm = MockLLM()
    span_id = f"MockLLM.chat-{uuid.uuid4()}"
    bound = inspect.signature(lambda messages: None).bind(HELLO)
    response = ChatResponse(message=ChatMessage(role="assistant", content="ok"), raw=raw)
    handler._span_handler.span_enter(id_=span_id, bound_args=bound, instance=llm)
    handler._event_handler.handle(
        LLMChatStartEvent(model_dict={}, messages=HELLO, additional_kwargs={}, span_id=span_id)
    )
    handler._event_handler.handle(LLMChatEndEvent(messages=HELLO, response=response, span_id=span_id))
    handler._span_handler.span_exit(id_=span_id, bound_args=bound, instance=llm, result=response)
    (generation,) = exported(langfuse_client, otlp_receiver).generations
    assert generation.usage_details == usage and generation.model_name == model
    assert generation.cost_details is None and "openrouter" not in generation.metadata


# ---------------------------------------------------------------------------- query engines


def test_query_engine_is_one_trace_with_typed_nested_observations(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    index = build_index(openrouter)
    engine = index.as_query_engine(similarity_top_k=1)
    expected = without_handler(lambda: str(engine.query("What is the capital of Peru?")))
    langfuse_client.flush()
    otlp_receiver.clear()

    answer = engine.query("What is the capital of Peru?")
    assert str(answer) == expected == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    generation = assert_one_trace_one_generation(seen)
    (root,) = seen.roots
    assert root.name == "RetrieverQueryEngine.query" and root.observation_type == "chain"
    assert root.attributes["langfuse.observation.input"] == "What is the capital of Peru?"
    assert root.attributes["langfuse.observation.output"] == ANSWER
    (retriever,) = seen.typed("retriever")
    assert retriever.parent_span_id == root.span_id
    nodes = retriever.json_attribute("langfuse.observation.output")
    assert nodes[0]["text"] == "Lima is the capital of Peru." and nodes[0]["score"] > 0
    (embedding,) = seen.typed("embedding")
    assert embedding.parent_span_id == retriever.span_id
    assert [a.name for a in seen.ancestors(generation)][-2:] == ["CompactAndRefine.synthesize", root.name]
    assert "Lima is the capital of Peru." in generation.attributes["langfuse.observation.input"]


def test_structured_query_records_the_users_model(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    class City(BaseModel):
        name: str

    engine = build_index(openrouter).as_query_engine(similarity_top_k=1, output_cls=City)
    openrouter.set_default(
        ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL, content='{"name": "Lima"}')
    )
    langfuse_client.flush()
    otlp_receiver.clear()
    assert engine.query("What is the capital of Peru?").response == City(name="Lima")
    seen = exported(langfuse_client, otlp_receiver)
    assert_one_trace_one_generation(seen)
    assert seen.roots[0].json_attribute("langfuse.observation.output") == {"name": "Lima"}


async def test_aquery(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    engine = build_index(openrouter).as_query_engine(similarity_top_k=1)
    langfuse_client.flush()
    otlp_receiver.clear()
    assert str(await engine.aquery("What is the capital of Peru?")) == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    generation = assert_one_trace_one_generation(seen)
    assert seen.roots[0].name == "RetrieverQueryEngine.aquery"
    assert seen.ancestors(generation)[-1] is seen.roots[0]
    assert len(seen.typed("retriever")) == 1


def test_streaming_query_yields_what_it_yields_without_the_handler(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    engine = build_index(openrouter).as_query_engine(similarity_top_k=1, streaming=True)
    expected = without_handler(lambda: list(engine.query("capital of Peru?").response_gen))
    langfuse_client.flush()
    otlp_receiver.clear()

    requests = len(openrouter.chat_requests)
    response = engine.query("capital of Peru?")
    exported(langfuse_client, otlp_receiver)  # the query returned and was exported: nothing read its stream
    assert len(openrouter.chat_requests) == requests  # the LLM request waits for the user's first read
    chunks = list(response.response_gen)
    assert chunks == expected and "".join(chunks) == ANSWER and len(chunks) > 1
    seen = exported(langfuse_client, otlp_receiver)
    generation = assert_one_trace_one_generation(seen)
    assert_stream_generation(generation)
    (root,) = seen.roots
    assert seen.ancestors(generation)[-1] is root and root.name == "RetrieverQueryEngine.query"
    assert root.attributes["langfuse.observation.output"] == ANSWER  # the query ends with its stream
    assert root.end_time_unix_nano >= generation.end_time_unix_nano


async def test_async_streaming_query_yields_what_it_yields_without_the_handler(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    engine = build_index(openrouter).as_query_engine(similarity_top_k=1, streaming=True)

    async def run() -> list[str]:
        response = await engine.aquery("capital of Peru?")
        return [t async for t in response.async_response_gen()]

    dispatcher = get_dispatcher()
    saved = list(dispatcher.span_handlers), list(dispatcher.event_handlers)
    dispatcher.span_handlers[:] = [h for h in saved[0] if h is not handler._span_handler]
    dispatcher.event_handlers[:] = [h for h in saved[1] if h is not handler._event_handler]
    expected = await run()
    dispatcher.span_handlers[:], dispatcher.event_handlers[:] = saved
    langfuse_client.flush()
    otlp_receiver.clear()

    chunks = await run()
    assert chunks == expected and "".join(chunks) == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    generation = assert_one_trace_one_generation(seen)
    assert_stream_generation(generation)
    assert seen.ancestors(generation)[-1].name == "RetrieverQueryEngine.aquery"


def test_nothing_is_held_after_the_calls(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    """Memory stays flat: what is open ends with the calls; what ended keeps no observation."""
    index = build_index(openrouter)
    index.as_query_engine(similarity_top_k=1).query("capital of Peru?")
    list(index.as_query_engine(similarity_top_k=1, streaming=True).query("capital?").response_gen)
    list(openrouter_llm(openrouter).stream_chat(HELLO))
    gc.collect()
    assert handler._open == {} and handler._aliases == {} and handler._generations == {}
    assert handler._streams == {}
    assert handler._ended and all(
        s.observation is None and s.context is not None for s in handler._ended.values()
    )
    assert len(exported(langfuse_client, otlp_receiver).traces) == 4


def test_retriever_alone(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    retriever = build_index(openrouter).as_retriever(similarity_top_k=2)
    langfuse_client.flush()
    otlp_receiver.clear()
    nodes = retriever.retrieve("capital of Peru")
    assert len(nodes) == 2
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 1 and not seen.generations
    (root,) = seen.roots
    assert (
        root.observation_type == "retriever"
        and root.attributes["langfuse.observation.input"] == "capital of Peru"
    )
    output = root.json_attribute("langfuse.observation.output")
    assert [n["score"] for n in output] == [n.score for n in nodes]
    (embedding,) = seen.typed("embedding")
    assert embedding.parent_span_id == root.span_id and embedding.model_name == "hash-256"


def test_index_construction_is_one_trace(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    build_index(openrouter)
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 1, seen.tree()
    (root,) = seen.roots
    assert root.name == "index_construction" and root.observation_type == "chain"
    (embedding,) = seen.typed("embedding")
    assert embedding.json_attribute("langfuse.observation.output") == {"embeddings": 2, "dimensions": 256}
    assert not seen.generations


async def test_200_concurrent_aqueries_are_200_traces_each_with_its_numbers(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    engine = build_index(openrouter).as_query_engine(similarity_top_k=1)
    langfuse_client.flush()
    otlp_receiver.clear()

    questions = [
        f"capital {marker(prompt_tokens=1_000 + i, cached_tokens=i, cost=(1_000 + i) / 10**6)}"
        for i in range(200)
    ]
    answers = await asyncio.gather(*(engine.aquery(q) for q in questions))
    assert all(str(a) == ANSWER for a in answers)
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 200 and len(seen.roots) == 200 and len(seen.generations) == 200
    for generation in seen.generations:
        i = generation.usage_details.get("input_cache_read", 0)
        assert generation.usage_details["total"] == 1_000 + i + 7
        assert generation.cost_details["total"] == pytest.approx((1_000 + i) / 10**6)
        root = seen.ancestors(generation)[-1]
        assert root.trace_id == generation.trace_id
        assert f'prompt_tokens": {1_000 + i}' in root.attributes["langfuse.observation.input"]
        assert len(seen.traces[root.trace_id]) == len(seen.traces[seen.roots[0].trace_id])


def test_queries_in_threads_stay_separate(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    engine = build_index(openrouter).as_query_engine(similarity_top_k=1)
    langfuse_client.flush()
    otlp_receiver.clear()
    threads = [threading.Thread(target=engine.query, args=(f"question {i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 4 and len(seen.generations) == 4
    for generation in seen.generations:
        root = seen.ancestors(generation)[-1]
        assert (
            root.attributes["langfuse.observation.input"]
            in generation.attributes["langfuse.observation.input"]
        )


# ---------------------------------------------------------------------------- chat engines


def _chat_engine(server: FakeOpenRouter, mode: str) -> Any:
    index = build_index(server)
    return index.as_chat_engine(chat_mode=mode, similarity_top_k=1)


@pytest.mark.parametrize("mode", ["condense_plus_context", "context"])
def test_chat_engine_turns_are_one_trace_each(
    mode, openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    engine = _chat_engine(openrouter, mode)
    langfuse_client.flush()
    otlp_receiver.clear()
    assert str(engine.chat("What is the capital of Peru?")) == ANSWER
    assert str(engine.chat("And of France?")) == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 2, seen.tree()
    roots = sorted(seen.roots, key=lambda s: s.start_time_unix_nano)
    assert all(r.observation_type == "chain" and r.name.endswith(".chat") for r in roots)
    assert roots[1].attributes["langfuse.observation.output"] == ANSWER
    # the second turn of condense_plus_context condenses the question first: two LLM calls
    assert len(seen.generations) == (3 if mode == "condense_plus_context" else 2)
    for generation in seen.generations:
        assert_cached_call(generation)
    assert all(len(seen.typed("retriever")) == 2 for _ in [0])


@pytest.mark.parametrize("mode", ["condense_plus_context", "context"])
def test_chat_engine_stream_chat(mode, openrouter, handler, langfuse_client, otlp_receiver) -> None:
    engine = _chat_engine(openrouter, mode)
    expected = without_handler(lambda: list(engine.stream_chat("What is the capital of Peru?").response_gen))
    engine.reset()
    langfuse_client.flush()
    otlp_receiver.clear()

    chunks = list(engine.stream_chat("What is the capital of Peru?").response_gen)
    assert chunks == expected and "".join(chunks) == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    generation = assert_one_trace_one_generation(seen)
    assert_stream_generation(generation)
    (root,) = seen.roots
    assert root.name.endswith(".stream_chat") and seen.ancestors(generation)[-1] is root
    assert root.attributes["langfuse.observation.output"] == ANSWER


@pytest.mark.parametrize("mode", ["condense_plus_context", "context"])
async def test_chat_engine_achat_then_astream_chat_on_the_same_llm(
    mode, openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    engine = _chat_engine(openrouter, mode)
    langfuse_client.flush()
    otlp_receiver.clear()
    assert str(await engine.achat("What is the capital of Peru?")) == ANSWER
    stream = await engine.astream_chat("And of France?")
    chunks = [t async for t in stream.async_response_gen()]
    assert "".join(chunks) == ANSWER
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 2, seen.tree()
    for generation in seen.generations:
        assert_cached_call(generation)
        assert generation.attributes.get("langfuse.observation.level") != "ERROR"
    streamed = [g for g in seen.generations if "langfuse.observation.completion_start_time" in g.attributes]
    (last,) = streamed
    root = seen.ancestors(last)[-1]
    assert root.name.endswith(".astream_chat") and root.attributes["langfuse.observation.output"] == ANSWER


def test_an_index_built_with_a_callback_manager_made_before_is_one_trace(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    from llama_index.core.callbacks import CallbackManager

    Settings.callback_manager = CallbackManager([])
    handler = set_global_handler(price_catalog=catalog)
    build_index(openrouter)
    handler.close()
    seen = exported(langfuse_client, otlp_receiver)
    assert len(seen.traces) == 1 and seen.roots[0].name == "index_construction", seen.tree()
    assert Settings.callback_manager.handlers == []  # closed: nothing of ours is left


# ---------------------------------------------------------------------------- trace attributes, scores


def test_trace_attributes_from_arguments_and_context_manager(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    handler = set_global_handler(
        price_catalog=catalog, user_id="u-1", session_id="s-1", tags=["rag"], trace_name="support"
    )
    llm = openrouter_llm(openrouter)
    llm.chat(HELLO)
    with trace_attributes(user_id="u-2", trace_name="override"):
        llm.chat(HELLO)
    handler.close()
    first, second = sorted(
        exported(langfuse_client, otlp_receiver).generations, key=lambda g: g.start_time_unix_nano
    )
    assert first.attributes["user.id"] == "u-1" and second.attributes["user.id"] == "u-2"
    assert first.attributes["session.id"] == second.attributes["session.id"] == "s-1"
    assert first.attributes["langfuse.trace.name"] == "support"
    assert second.attributes["langfuse.trace.name"] == "override"
    assert list(first.attributes["langfuse.trace.tags"]) == ["rag"]


def test_trace_attributes_reach_every_observation_of_a_query(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    handler = set_global_handler(price_catalog=catalog)
    engine = build_index(openrouter).as_query_engine(similarity_top_k=1)
    langfuse_client.flush()
    otlp_receiver.clear()
    with trace_attributes(session_id="s-9"):
        engine.query("capital of Peru?")
    handler.close()
    seen = exported(langfuse_client, otlp_receiver)
    assert {s.attributes.get("session.id") for s in seen.spans} == {"s-9"}


def test_savings_score_is_recorded_when_asked(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    handler = set_global_handler(price_catalog=catalog, savings_score=True)
    openrouter_llm(openrouter).chat(HELLO)
    handler.close()
    (generation,) = exported(langfuse_client, otlp_receiver).generations
    (score,) = otlp_receiver.scores()
    assert score["name"] == "openrouter_cache_savings_usd" and score["dataType"] == "NUMERIC"
    assert score["value"] == pytest.approx(9_000 * 0.000003 - (0.0018 + 0.01125))
    assert score["observationId"] == generation.span_id and score["traceId"] == generation.trace_id


def test_no_savings_score_unless_asked(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    openrouter_llm(openrouter).chat(HELLO)
    exported(langfuse_client, otlp_receiver)
    assert otlp_receiver.scores() == []


# ---------------------------------------------------------------------------- failures inside the handler


def test_an_error_in_enrichment_never_reaches_the_user(
    openrouter, clean_llama_index, langfuse_client, otlp_receiver, caplog
) -> None:
    handler = set_global_handler(price_catalog=BrokenCatalog(offline=True))
    llm = openrouter_llm(openrouter)
    with caplog.at_level(logging.WARNING, logger="langfuse_openrouter_callbacks"):
        assert llm.chat(HELLO).message.content == ANSWER
        assert "".join(c.delta for c in llm.stream_complete("hello")) == ANSWER
    handler.close()
    generations = exported(langfuse_client, otlp_receiver).generations
    assert len(generations) == 2
    for generation in generations:
        assert "openrouter" not in generation.metadata
        assert ANSWER in generation.attributes["langfuse.observation.output"]
    assert len(caplog.records) == 1 and "price list exploded" in caplog.records[0].exc_text


def test_a_failing_handler_leaves_the_users_stream_alone(
    openrouter, handler, langfuse_client, otlp_receiver, monkeypatch, caplog
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("handler exploded")

    monkeypatch.setattr(handler, "_llm_progress", broken)
    monkeypatch.setattr(handler, "_llm_end", broken)
    with caplog.at_level(logging.WARNING, logger="langfuse_openrouter_callbacks"):
        assert "".join(c.delta for c in openrouter_llm(openrouter).stream_chat(HELLO)) == ANSWER
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 2  # once per kind


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
    (one_write,) = exported(langfuse_client, otlp_receiver).generations
    assert writes == [1]
    otlp_receiver.clear()
    monkeypatch.setattr(_langfuse_write, "_langfuse", dataclasses.replace(counted, mirrored=False))
    llm.chat(HELLO)
    (two_writes,) = exported(langfuse_client, otlp_receiver).generations
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
    (generation,) = exported(langfuse_client, otlp_receiver).generations
    assert ANSWER in generation.attributes["langfuse.observation.output"]
    assert generation.model_name == DATED and "openrouter" not in generation.metadata
    assert len(caplog.records) == 1 and "attributes exploded" in caplog.records[0].exc_text


def test_no_warnings_on_a_plain_query(openrouter, handler, langfuse_client, otlp_receiver, caplog) -> None:
    engine = build_index(openrouter).as_query_engine(similarity_top_k=1)
    with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"), warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.query("capital of Peru?")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---------------------------------------------------------------------------- prompt fingerprints


def test_generations_carry_the_prompt_prefix_fingerprint_of_the_request_as_sent(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    """The cache doctor compares calls by the hashes of their growing prefix, never by their text."""
    from langfuse_openrouter_callbacks._prompt_fingerprint import fingerprint

    system = ChatMessage(role="system", content="You answer from the handbook. " * 40)
    llm = openrouter_llm(openrouter)
    llm.chat([system, ChatMessage(role="user", content="How long do refunds take?")])
    llm.chat([system, ChatMessage(role="user", content="Do gift cards expire?")])
    llm.chat([ChatMessage(role="system", content="Another prompt."), *HELLO])
    seen = exported(langfuse_client, otlp_receiver)
    generations = sorted(seen.generations, key=lambda g: g.start_time_unix_nano)
    metas = [g.metadata["openrouter"] for g in generations]
    sent = [r.json()["messages"] for r in openrouter.chat_requests]
    assert [m["prefix_hashes"] for m in metas] == [list(fingerprint(s).prefix_hashes) for s in sent]
    assert metas[0]["prefix_hashes"][0] == metas[1]["prefix_hashes"][0]  # the same system prompt
    assert metas[0]["prefix_hashes"][1] != metas[1]["prefix_hashes"][1]  # another question
    assert metas[2]["prefix_hashes"][0] != metas[0]["prefix_hashes"][0]
    assert all("cache_control" not in m for m in metas)  # no breakpoint was asked for
    assert "handbook" not in str(metas)
