"""LlamaIndex's `OpenAIResponses` LLM pointed at OpenRouter's Responses API, traced by `set_global_handler()`.

Only the public API (`set_global_handler()`) and what Langfuse exported (decoded OTLP spans): the
handler reads the Responses API `response` (`response.raw`: the SDK's `Response`, or a stream's
`response.completed` event) like any other OpenRouter response.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_index.core
import pytest
from llama_index.core import Settings
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai import OpenAIResponses

from langfuse_openrouter_callbacks.llama_index import set_global_handler
from tests.scenario import CACHED_CALL, DATED, EXPECTED_USAGE, REQUESTED
from tests.support.openrouter_server import FakeOpenRouter, ResponseSpec
from tests.support.otlp_receiver import ExportedSpan, OTLPReceiver

HELLO = [ChatMessage(role="user", content="hello")]


@pytest.fixture
def handler(catalog, langfuse_client) -> Iterator[Any]:
    """The global handler, with LlamaIndex's Settings, global handler and dispatcher left as they were."""
    llm, embed, manager = Settings._llm, Settings._embed_model, Settings._callback_manager
    dispatcher, global_handler = get_dispatcher(), llama_index.core.global_handler
    span_handlers, event_handlers = list(dispatcher.span_handlers), list(dispatcher.event_handlers)
    handler = set_global_handler(price_catalog=catalog)
    yield handler
    close = getattr(handler, "close", None)
    if close is not None:
        close()
    llama_index.core.global_handler = global_handler
    Settings._llm, Settings._embed_model, Settings._callback_manager = llm, embed, manager
    dispatcher.span_handlers[:], dispatcher.event_handlers[:] = span_handlers, event_handlers


def responses_llm(server: FakeOpenRouter) -> OpenAIResponses:
    return OpenAIResponses(
        api_base=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0, context_window=200_000
    )


def exported_generation(client: Any, receiver: OTLPReceiver) -> ExportedSpan:
    client.flush()
    generations = [g for g in receiver.generations() if g.usage_details]
    assert len(generations) == 1, [g.name for g in receiver.generations()]
    return generations[0]


@pytest.mark.usefixtures("handler")
@pytest.mark.parametrize("way", ["chat", "stream_chat", "achat"])
async def test_openai_responses_on_openrouter_records_openrouters_cost_and_cache(
    openrouter, langfuse_client, otlp_receiver, way
) -> None:
    openrouter.set_default(ResponseSpec(model=DATED, provider=None, usage=CACHED_CALL))
    llm = responses_llm(openrouter)
    if way == "chat":
        assert llm.chat(HELLO).message.content
    elif way == "achat":
        assert (await llm.achat(HELLO)).message.content
    else:
        assert "".join(r.delta or "" for r in llm.stream_chat(HELLO))
    assert openrouter.completion_requests[-1].path.endswith("/responses")
    generation = exported_generation(langfuse_client, otlp_receiver)
    assert generation.usage_details == EXPECTED_USAGE
    assert generation.cost_details["total"] == pytest.approx(0.0241, abs=1e-12)
    buckets = {k: v for k, v in generation.cost_details.items() if k != "total"}
    assert sum(buckets.values()) == pytest.approx(0.0241, abs=1e-12)
    meta = generation.metadata["openrouter"]
    assert meta["cost_source"] == "openrouter" and meta["cache_hit_ratio"] == 0.6
    assert meta["generation_id"].startswith("gen-") and meta["reported_cost"] == 0.0241
