"""What the cache-miss diagnosis needs, recorded by the LangChain handler: breakpoints and prefix hashes.

Real ChatOpenAI and ChatOpenRouter over HTTP to the fake OpenRouter; every assertion reads what
Langfuse exported (decoded OTLP spans).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAI
from langchain_openrouter import ChatOpenRouter

from langfuse_openrouter_callbacks import generation_stats
from langfuse_openrouter_callbacks._prompt_fingerprint import fingerprint
from langfuse_openrouter_callbacks.generation_stats import GenerationStatsFetcher
from langfuse_openrouter_callbacks.langchain import CallbackHandler
from tests.scenario import DATED, REQUESTED
from tests.support.langfuse_session import isolated_langfuse_client
from tests.support.openrouter_server import FakeOpenRouter, ResponseSpec
from tests.support.otlp_receiver import OTLPReceiver

HANDBOOK = "Refunds take 14 days; exchanges 30. " * 400  # ~14 kB
BREAKPOINT = {"type": "ephemeral"}
MARKED = SystemMessage(content=[{"type": "text", "text": HANDBOOK, "cache_control": BREAKPOINT}])
PLAIN = SystemMessage(content=HANDBOOK)
QUESTION = HumanMessage(content="How long do refunds take?")


def chat_openai(server: FakeOpenRouter, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0, **kwargs
    )


def chat_openrouter(server: FakeOpenRouter) -> ChatOpenRouter:
    return ChatOpenRouter(model=REQUESTED, api_key="sk-or-test", base_url=server.base_url, max_retries=0)


MODELS = {"ChatOpenAI": chat_openai, "ChatOpenRouter": chat_openrouter}


def recorded(client: Any, receiver: OTLPReceiver, count: int) -> list[dict[str, Any]]:
    """`metadata.openrouter` of each exported generation, in the order the calls started."""
    client.flush()
    generations = sorted(receiver.generations(), key=lambda g: g.start_time_unix_nano)
    assert len(generations) == count, [g.name for g in generations]
    return [g.metadata["openrouter"] for g in generations]


def sent_messages(server: FakeOpenRouter) -> list[dict[str, Any]]:
    return [r.json()["messages"] for r in server.chat_requests]


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_a_breakpoint_and_the_prefix_are_recorded(
    make, openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    handler = CallbackHandler(price_catalog=catalog)
    make(openrouter).invoke([MARKED, QUESTION], config={"callbacks": [handler]})
    (meta,) = recorded(langfuse_client, otlp_receiver, 1)
    (sent,) = sent_messages(openrouter)
    assert sent[0]["content"][0]["cache_control"] == BREAKPOINT  # the request did carry it
    assert meta["cache_control"] is True and "cache_ttl" not in meta
    assert meta["prefix_hashes"] == list(fingerprint(sent).prefix_hashes)  # the request as sent
    assert HANDBOOK[:20] not in json.dumps(meta)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_calls_sharing_a_prefix_share_its_hashes(
    make, openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    handler = CallbackHandler(price_catalog=catalog)
    llm = make(openrouter)
    answer = AIMessage(content="14 days.")
    follow_up = HumanMessage(content="And exchanges?")
    for messages in ([PLAIN, QUESTION], [PLAIN, HumanMessage(content="Do gift cards expire?")]):
        llm.invoke(messages, config={"callbacks": [handler]})
    llm.invoke([PLAIN, QUESTION, answer, follow_up], config={"callbacks": [handler]})
    first, other, longer = recorded(langfuse_client, otlp_receiver, 3)
    assert "cache_control" not in first  # inspected, and no breakpoint
    assert first["prefix_hashes"][0] == other["prefix_hashes"][0]  # the same system prompt
    assert first["prefix_hashes"][1] != other["prefix_hashes"][1]  # another question
    assert longer["prefix_hashes"][:2] == first["prefix_hashes"]  # the conversation grew from it
    assert len(longer["prefix_hashes"]) == 4


def test_chat_openai_and_chat_openrouter_fingerprint_a_prompt_alike(
    openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    handler = CallbackHandler(price_catalog=catalog)
    for make in MODELS.values():
        make(openrouter).invoke([MARKED, QUESTION], config={"callbacks": [handler]})
    by_openai, by_openrouter = recorded(langfuse_client, otlp_receiver, 2)
    assert by_openai["prefix_hashes"] == by_openrouter["prefix_hashes"]


def test_masked_inputs_are_still_fingerprinted(openrouter, catalog, otlp_receiver, langfuse_client) -> None:
    langfuse_client.flush()
    otlp_receiver.reset()
    with isolated_langfuse_client(
        otlp_receiver, public_key="pk-lf-masked", mask=lambda *, data, **_: "[masked]"
    ) as masked:
        handler = CallbackHandler(public_key="pk-lf-masked", price_catalog=catalog)
        chat_openai(openrouter).invoke([MARKED, QUESTION], config={"callbacks": [handler]})
        masked.flush()
        (generation,) = otlp_receiver.generations()
    assert generation.attributes["langfuse.observation.input"] == "[masked]"
    meta = generation.metadata["openrouter"]
    assert meta["cache_control"] is True
    assert meta["prefix_hashes"] == list(fingerprint(sent_messages(openrouter)[0]).prefix_hashes)


def test_a_top_level_breakpoint_and_its_lifetime(openrouter, catalog, langfuse_client, otlp_receiver) -> None:
    automatic = {"type": "ephemeral", "ttl": "1h"}
    llm = chat_openai(openrouter, extra_body={"cache_control": automatic})
    llm.invoke([PLAIN, QUESTION], config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    (meta,) = recorded(langfuse_client, otlp_receiver, 1)
    assert openrouter.chat_requests[0].json()["cache_control"] == automatic
    assert meta["cache_control"] is True and meta["cache_ttl"] == 3600


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_tools_and_tool_turns_are_part_of_the_prefix(
    make, openrouter, catalog, langfuse_client, otlp_receiver
) -> None:
    @tool
    def refund_status(order: str) -> str:
        """The status of an order's refund."""
        return "sent"

    @tool
    def exchange_status(order: str) -> str:
        """The status of an order's exchange."""
        return "open"

    handler = CallbackHandler(price_catalog=catalog)
    call = AIMessage(
        content="", tool_calls=[{"id": "call_1", "name": "refund_status", "args": {"order": "7"}}]
    )
    turns = [PLAIN, QUESTION, call, ToolMessage(content="sent", tool_call_id="call_1")]
    llm = make(openrouter)
    llm.bind_tools([refund_status, exchange_status]).invoke(turns, config={"callbacks": [handler]})
    llm.bind_tools([exchange_status, refund_status]).invoke(turns, config={"callbacks": [handler]})
    llm.invoke(turns, config={"callbacks": [handler]})
    tools, reordered, without = recorded(langfuse_client, otlp_receiver, 3)
    assert len(tools["prefix_hashes"]) == 4
    assert not set(tools["prefix_hashes"]) & set(reordered["prefix_hashes"])  # reordered tools: a new prefix
    assert not set(tools["prefix_hashes"]) & set(without["prefix_hashes"])


def test_a_completion_model_is_fingerprinted_too(
    openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch
) -> None:
    monkeypatch.setenv(
        "OPENROUTER_API_BASE", openrouter.base_url
    )  # LangChain keeps no OpenRouter marker here
    llm = OpenAI(base_url=openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)
    llm.invoke(HANDBOOK, config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    llm.invoke(HANDBOOK, config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    first, second = recorded(langfuse_client, otlp_receiver, 2)
    assert len(first["prefix_hashes"]) == 1 and first["prefix_hashes"] == second["prefix_hashes"]


def test_with_lookups_langchain_gets_the_provider_and_keeps_the_fingerprint(
    openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch
) -> None:
    """LangChain drops the response's provider; OpenRouter's `/generation` record gives it back."""
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    monkeypatch.setattr(generation_stats, "_warned", set())
    openrouter.set_default(ResponseSpec(model=DATED, provider="Amazon Bedrock"))
    fetcher = GenerationStatsFetcher(api_base=openrouter.base_url, initial_delay=0.0, total_timeout=3.0)
    try:
        for make in MODELS.values():
            without = CallbackHandler(price_catalog=catalog)
            make(openrouter).invoke([MARKED, QUESTION], config={"callbacks": [without]})
            with_lookups = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=fetcher)
            make(openrouter).invoke([MARKED, QUESTION], config={"callbacks": [with_lookups]})
            with_lookups.flush()
    finally:
        fetcher.close()
    lost, found, lost_too, found_too = recorded(langfuse_client, otlp_receiver, 4)
    assert "provider" not in lost and "provider" not in lost_too
    assert found["provider"] == found_too["provider"] == "Amazon Bedrock"
    assert found["cache_control"] is True and found["prefix_hashes"] == lost["prefix_hashes"]
