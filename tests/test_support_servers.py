"""Smoke tests for the local test servers in ``tests/support`` driven by real clients over HTTP."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langfuse import Langfuse, get_client
from langfuse._client.resource_manager import LangfuseResourceManager
from langfuse.langchain import CallbackHandler
from opentelemetry.sdk.trace import TracerProvider

from tests.support import (
    FakeOpenRouter,
    Fault,
    LangfuseTestSession,
    OTLPReceiver,
    ResponseSpec,
    ToolCall,
    Usage,
    endpoint_entry,
    error_spec,
    find_recorded_exchange,
    isolated_langfuse_client,
    marker,
    marker_responder,
    model_entry,
)

# Registers the fixtures for this module; a conftest importing them takes precedence.

SONNET_DATED = "anthropic/claude-4.5-sonnet-20250929"

CACHED_SPEC = ResponseSpec(
    content="Cached hello.",
    model=SONNET_DATED,
    provider="Amazon Bedrock",
    usage=Usage(
        prompt_tokens=1200,
        completion_tokens=50,
        cached_tokens=1000,
        cache_write_tokens=100,
        reasoning_tokens=10,
        cost=0.0042,
    ),
)


def _client(fake: FakeOpenRouter) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key="sk-or-test", max_retries=0)


def test_openai_non_stream_carries_openrouter_usage(fake_openrouter: FakeOpenRouter) -> None:
    fake_openrouter.queue(CACHED_SPEC)
    response = _client(fake_openrouter).chat.completions.create(
        model="anthropic/claude-sonnet-4.5", messages=[{"role": "user", "content": "hi"}]
    )
    assert response.id.startswith("gen-")
    assert response.model == SONNET_DATED
    assert response.model_extra == {"provider": "Amazon Bedrock"}
    assert response.choices[0].message.content == "Cached hello."
    usage = response.usage
    assert usage is not None and usage.model_extra is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1000
    assert usage.prompt_tokens_details.model_dump()["cache_write_tokens"] == 100
    assert usage.model_extra["cost"] == 0.0042
    assert usage.model_extra["is_byok"] is False
    assert usage.model_extra["cost_details"]["upstream_inference_cost"] == 0.0042
    body = fake_openrouter.last_body
    assert body["model"] == "anthropic/claude-sonnet-4.5"
    assert fake_openrouter.last_request.header("authorization") == "Bearer sk-or-test"
    assert response.id in fake_openrouter.generations  # auto-registered for GET /generation


def test_openai_stream_ends_with_usage_chunk(fake_openrouter: FakeOpenRouter) -> None:
    fake_openrouter.queue(CACHED_SPEC)
    chunks = list(
        _client(fake_openrouter).chat.completions.create(
            model="anthropic/claude-sonnet-4.5",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Cached hello."
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.model_extra and c.model_extra["provider"] == "Amazon Bedrock" for c in chunks)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.model_extra is not None
    assert last.usage.model_extra["cost"] == 0.0042
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 1000
    assert FakeOpenRouter.asked_for_usage(fake_openrouter.last_request)


def test_raw_sse_wire_format(fake_openrouter: FakeOpenRouter) -> None:
    fake_openrouter.queue(ResponseSpec(content="a b", usage_chunk_style="with_choice"))
    with httpx.stream(
        "POST",
        fake_openrouter.base_url + "/chat/completions",
        json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert events[:2] == [": OPENROUTER PROCESSING"] * 2
    assert events[-1] == "data: [DONE]"
    usage_chunk = json.loads(events[-2].removeprefix("data: "))
    assert usage_chunk["choices"][0]["finish_reason"] == "stop"  # like the recorded streams
    assert usage_chunk["usage"]["total_tokens"] == 19
    assert not FakeOpenRouter.asked_for_usage(fake_openrouter.last_request)


def test_langchain_chatopenai_exports_generations(
    fake_openrouter: FakeOpenRouter, langfuse_client: Langfuse, otlp_receiver: OTLPReceiver
) -> None:
    assert get_client()._resources is langfuse_client._resources
    fake_openrouter.set_default(CACHED_SPEC)
    llm = ChatOpenAI(
        base_url=fake_openrouter.base_url,
        api_key="sk-or-test",
        model="anthropic/claude-sonnet-4.5",
        max_retries=0,
    )
    message = llm.invoke("hi", config={"callbacks": [CallbackHandler()]})
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_token_details"]["cache_read"] == 1000
    chunks = list(llm.stream("hi", config={"callbacks": [CallbackHandler()]}))
    assert any(c.usage_metadata for c in chunks)  # usage chunk parsed without stream_options
    langfuse_client.flush()

    generations = otlp_receiver.wait_for_generations(2)
    assert len(generations) == 2
    for generation in generations:
        usage = generation.usage_details
        assert usage is not None
        assert usage["input_cache_read"] == 1000 and usage["total"] == 1250
        assert generation.metadata["ls_provider"] == "openai"
    assert {g.model_name for g in generations} == {SONNET_DATED, "anthropic/claude-sonnet-4.5"}
    request = otlp_receiver.trace_requests[-1]
    assert request.header("content-encoding") == "gzip"
    assert request.header("x-langfuse-public-key") == "pk-lf-test"


def test_langchain_tool_call_response(fake_openrouter: FakeOpenRouter) -> None:
    @tool
    def divide(numerator: float, denominator: float) -> float:
        """Divide two numbers."""
        return numerator / denominator

    fake_openrouter.queue(
        ResponseSpec(
            content="",
            tool_calls=(ToolCall("divide", {"numerator": 123, "denominator": 456}),),
            usage=Usage(prompt_tokens=134, completion_tokens=43),
        ),
        ResponseSpec(
            content="",
            tool_calls=(ToolCall("divide", {"numerator": 1, "denominator": 2}, id="call_fixed"),),
        ),
    )
    llm = ChatOpenAI(base_url=fake_openrouter.base_url, api_key="sk-or-test", model="m", max_retries=0)
    bound = llm.bind_tools([divide])
    message = bound.invoke("What is 123 / 456?")
    assert message.tool_calls[0]["name"] == "divide"
    assert message.tool_calls[0]["args"] == {"numerator": 123, "denominator": 456}
    assert message.response_metadata["finish_reason"] == "tool_calls"
    streamed = None
    for chunk in bound.stream("What is 1 / 2?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    assert streamed.tool_calls == [  # type: ignore[attr-defined]
        {
            "name": "divide",
            "args": {"numerator": 1, "denominator": 2},
            "id": "call_fixed",
            "type": "tool_call",
        }
    ]
    assert fake_openrouter.chat_requests[0].json()["tools"][0]["function"]["name"] == "divide"


def test_errors_and_truncated_stream(fake_openrouter: FakeOpenRouter) -> None:
    client = _client(fake_openrouter)
    fake_openrouter.queue(error_spec(429), ResponseSpec(content="one two three", truncate_after_events=1))
    with pytest.raises(openai.RateLimitError) as excinfo:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert excinfo.value.body == {  # openai unwraps {"error": ...}
        "code": 429,
        "message": "Provider returned error",
        "metadata": {
            "provider_name": "Google",
            "raw": "Upstream provider is temporarily rate-limited. Please retry shortly.",
        },
    }
    with pytest.raises(httpx.RemoteProtocolError):
        list(
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )


def test_replay_recorded_sse_through_openai(fake_openrouter: FakeOpenRouter) -> None:
    exchange = find_recorded_exchange("test_openrouter_streaming_reasoning", stream=True)
    fake_openrouter.replay(exchange)
    assert exchange.request_body is not None
    standard = {"model", "messages", "stream", "stream_options"}
    body = exchange.request_body
    stream = _client(fake_openrouter).chat.completions.create(
        **{k: v for k, v in body.items() if k in standard},
        extra_body={k: v for k, v in body.items() if k not in standard},
    )
    chunks = list(stream)
    recorded_usage = json.loads(
        [e for e in (exchange.text or "").split("\n\n") if '"usage"' in e][-1].removeprefix("data: ")
    )["usage"]
    usage = chunks[-1].usage
    assert usage is not None and usage.model_extra is not None
    assert usage.prompt_tokens == recorded_usage["prompt_tokens"] == 43
    assert usage.model_extra["cost"] == recorded_usage["cost"]
    assert chunks[-1].model_extra == {"provider": "Google"}
    assert fake_openrouter.last_body == exchange.request_body

    json_exchange = fake_openrouter.replay("test_openrouter_thinking_high_emits_effort_high")
    response = _client(fake_openrouter).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert response.id == json_exchange.json_body["id"]
    assert response.usage is not None and response.usage.model_extra is not None
    assert response.usage.model_extra["cost"] == 0.000924


def test_catalogue_endpoints_and_faults(fake_openrouter: FakeOpenRouter) -> None:
    pricing = {"prompt": "0.000003", "completion": "0.000015", "input_cache_read": "0.0000003"}
    fake_openrouter.set_models(
        [
            model_entry(
                "anthropic/claude-sonnet-4.5", pricing, canonical_slug="anthropic/claude-4.5-sonnet-20250929"
            )
        ]
    )
    fake_openrouter.set_endpoints(
        "anthropic/claude-sonnet-4.5",
        [
            endpoint_entry("Anthropic", pricing, tag="anthropic"),
            endpoint_entry("Amazon Bedrock", {**pricing, "discount": 0.1}, tag="amazon-bedrock"),
        ],
    )
    base = fake_openrouter.base_url
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer sk-or-test"}) as http:
        models = http.get("/models").json()["data"]
        assert models[0]["canonical_slug"] == SONNET_DATED and models[0]["pricing"] == pricing
        endpoints = http.get("/models/anthropic/claude-sonnet-4.5/endpoints").json()["data"]
        assert [e["provider_name"] for e in endpoints["endpoints"]] == ["Anthropic", "Amazon Bedrock"]
        assert endpoints["endpoints"][1]["supports_implicit_caching"] is False
        assert http.get("/models/nobody/nothing/endpoints").status_code == 404

        missing = http.get("/generation", params={"id": "gen-unknown"})
        assert missing.status_code == 404 and "error" in missing.json()
        fake_openrouter.set_generation("gen-1-abc", {"id": "gen-1-abc", "total_cost": 0.5})
        fake_openrouter.set_fault("generation", Fault(status=404, times=1))
        assert http.get("/generation", params={"id": "gen-1-abc"}).status_code == 404  # not yet visible
        assert http.get("/generation", params={"id": "gen-1-abc"}).json() == {
            "data": {"id": "gen-1-abc", "total_cost": 0.5}
        }

        fake_openrouter.set_fault("models", Fault(invalid_json=True, times=1))
        with pytest.raises(json.JSONDecodeError):
            http.get("/models").json()
        fake_openrouter.set_fault("models", Fault(truncate=True, times=1))
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/models")
        fake_openrouter.set_fault("endpoints", Fault(status=503, delay=0.05))
        assert http.get("/models/anthropic/claude-sonnet-4.5/endpoints").status_code == 503
        fake_openrouter.set_fault("endpoints", None)
        assert http.get("/models/anthropic/claude-sonnet-4.5/endpoints").status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            fake_openrouter.set_fault("models", Fault(delay=0.5, times=1))
            http.get("/models", timeout=0.1)


async def test_marker_responder_gives_each_concurrent_request_its_usage(
    fake_openrouter: FakeOpenRouter,
) -> None:
    fake_openrouter.set_responder(marker_responder(ResponseSpec(provider="Fireworks")))
    client = openai.AsyncOpenAI(base_url=fake_openrouter.base_url, api_key="sk-or-test", max_retries=0)

    async def call(i: int) -> tuple[int, openai.types.chat.ChatCompletion]:
        prompt = f"question {i} {marker(prompt_tokens=1000 + i, cached_tokens=i, cost=i / 1000)}"
        response = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt}]
        )
        return i, response

    async with client:
        results = await asyncio.gather(*(call(i) for i in range(200)))
    for i, response in results:
        assert response.usage is not None and response.usage.model_extra is not None
        assert response.usage.prompt_tokens == 1000 + i
        assert response.usage.prompt_tokens_details is not None
        assert response.usage.prompt_tokens_details.cached_tokens == i
        assert response.usage.model_extra["cost"] == i / 1000
    assert len({r.id for _, r in results}) == 200
    assert len(fake_openrouter.chat_requests) == 200


def test_receiver_failure_mode_and_other_paths(
    langfuse_client: Langfuse, otlp_receiver: OTLPReceiver
) -> None:
    otlp_receiver.fail_with(500, times=1)
    langfuse_client.start_observation(name="dropped", as_type="generation").end()
    langfuse_client.flush()
    assert otlp_receiver.rejected_exports == 1 and otlp_receiver.spans == []
    assert not otlp_receiver.failing

    langfuse_client.start_observation(
        name="kept",
        as_type="generation",
        usage_details={"input": 3},
        cost_details={"total": 0.1},
        metadata={"k": 1},
    ).end()
    langfuse_client.flush()
    (kept,) = otlp_receiver.wait_for(lambda spans: len(spans) == 1)
    assert kept.name == "kept" and kept.is_generation and kept.parent_span_id is None
    assert kept.decoded() == {
        "usage_details": {"input": 3},
        "cost_details": {"total": 0.1},
        "metadata": {"k": 1},
    }
    assert len(kept.trace_id) == 32 and len(kept.span_id) == 16
    assert b"sk-lf-test" not in otlp_receiver.all_wire_bytes()  # only inside the base64 auth header

    response = httpx.post(otlp_receiver.base_url + "/api/public/scores", json={"name": "x"})
    assert response.status_code == 200 and response.json() == {}
    assert otlp_receiver.other_requests[-1].json() == {"name": "x"}


def test_langfuse_session_recovers_from_other_clients_and_reset(
    langfuse_session: LangfuseTestSession, langfuse_client: Langfuse, otlp_receiver: OTLPReceiver
) -> None:
    with isolated_langfuse_client(otlp_receiver, public_key="pk-lf-other") as other:
        other.start_observation(name="other", as_type="span").end()
        other.flush()
        assert get_client(public_key="pk-lf-other")._resources is other._resources
    Langfuse(
        public_key="pk-lf-leftover",
        secret_key="x",
        base_url="http://127.0.0.1:9",
        tracer_provider=TracerProvider(),
    )
    with pytest.warns(UserWarning, match="pk-lf-leftover"):
        assert langfuse_session.ensure() is langfuse_client  # leftover unregistered, same client kept

    LangfuseResourceManager.reset()  # as a careless test might do
    client = langfuse_session.ensure()
    assert client is not langfuse_client
    assert get_client()._resources is client._resources
    client.start_observation(name="after-reset", as_type="span").end()
    client.flush()
    otlp_receiver.wait_for(lambda spans: {"other", "after-reset"} <= {s.name for s in spans})
    keys = {r.header("x-langfuse-public-key") for r in otlp_receiver.trace_requests}
    assert keys == {"pk-lf-test", "pk-lf-other"}
