"""`OpenRouterUsage`: every shape OpenRouter usage arrives in, and bad input that never raises."""

from __future__ import annotations

import logging
from decimal import Decimal

import openai.types
import openai.types.chat
import pytest

from langfuse_openrouter_callbacks import OpenRouterUsage
from tests.shared_data import recorded_exchanges, shape_cases

LOGGER = "langfuse_openrouter_callbacks"

GROK_CHUNK = next(  # a real final stream chunk with cache reads and reasoning
    e
    for e in recorded_exchanges()
    if e["response"].get("text") and '"cached_tokens":679' in e["response"]["text"]
)


def _final_usage_chunk(sse: str) -> dict:
    import json

    chunks = [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: {")]
    return next(c for c in reversed(chunks) if c.get("usage"))


def test_reads_a_plain_usage_dict() -> None:
    u = OpenRouterUsage.from_openrouter(
        {
            "prompt_tokens": 687,
            "completion_tokens": 187,
            "total_tokens": 874,
            "cost": 0.00333825,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 679, "cache_write_tokens": 5, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 118, "image_tokens": 0},
            "cost_details": {"upstream_inference_cost": None, "upstream_inference_prompt_cost": 0.00053325},
            "server_tool_use_details": {"web_search_requests": 2},
        }
    )
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (687, 187, 874)
    assert (u.cached_tokens, u.cache_write_tokens, u.reasoning_tokens) == (679, 5, 118)
    assert u.uncached_prompt_tokens == 3
    assert u.cost == Decimal("0.00333825")  # exact, from the float's shortest repr
    assert u.upstream_inference_cost is None
    assert u.upstream_inference_prompt_cost == Decimal("0.00053325")
    assert u.is_byok is False
    assert u.web_search_requests == 2


def test_reads_a_whole_response_with_id_provider_and_model() -> None:
    response = recorded_exchanges()[0]["response"]["json"]
    u = OpenRouterUsage.from_openrouter(response)
    assert u.generation_id == response["id"]
    assert u.provider == "Amazon Bedrock"
    assert u.model == "anthropic/claude-4.5-sonnet-20250929"
    assert u.prompt_tokens == 550 and u.cost == Decimal("0.00183")


def test_reads_openai_sdk_objects_with_openrouter_extras_in_model_extra() -> None:
    response = recorded_exchanges()[0]["response"]["json"]
    completion = openai.types.chat.ChatCompletion.model_validate(response)
    assert "cost" in (completion.usage.model_extra or {})
    from_object = OpenRouterUsage.from_openrouter(completion)
    assert from_object == OpenRouterUsage.from_openrouter(response)
    assert OpenRouterUsage.from_openrouter(completion.usage).cost == Decimal("0.00183")


def test_real_responses_are_read_by_the_usual_shape_reader_as_dicts_and_sdk_objects() -> None:
    """The reader for valid plain input is the one real responses take, and it reads them exactly as
    the careful reader does (which also says what is wrong with bad input)."""
    import contextlib

    import pydantic

    from langfuse_openrouter_callbacks._log import Problems

    exchanges = recorded_exchanges()
    responses = [e["response"]["json"] for e in exchanges if (e["response"].get("json") or {}).get("usage")]
    chunk = _final_usage_chunk(GROK_CHUNK["response"]["text"])
    shapes: list[object] = [*responses, chunk, openai.types.chat.ChatCompletionChunk.model_validate(chunk)]
    for response in responses:
        with contextlib.suppress(pydantic.ValidationError):  # a few have fields this openai lacks
            shapes.append(openai.types.chat.ChatCompletion.model_validate(response))
    assert len(responses) >= 10 and len(shapes) >= 2 * len(responses)
    for shape in shapes:
        usual = OpenRouterUsage._read_usual_openrouter(shape)
        assert usual is not None
        problems = Problems("test")
        careful = OpenRouterUsage._read_openrouter(shape, problems)._checked(problems)
        assert repr(usual) == repr(careful) and not problems


def test_reads_a_final_stream_chunk_as_sdk_object_and_dict() -> None:
    chunk = _final_usage_chunk(GROK_CHUNK["response"]["text"])
    as_object = openai.types.chat.ChatCompletionChunk.model_validate(chunk)
    u = OpenRouterUsage.from_openrouter(as_object)
    assert u == OpenRouterUsage.from_openrouter(chunk)
    assert (u.cached_tokens, u.reasoning_tokens, u.cost) == (679, 118, Decimal("0.00333825"))
    assert u.provider == chunk["provider"] and u.generation_id == chunk["id"]


def test_reads_a_text_completion() -> None:
    body = {
        "id": "gen-1",
        "object": "text_completion",
        "created": 1,
        "model": "openai/gpt-4o-mini",
        "provider": "OpenAI",
        "choices": [{"text": "hi", "index": 0, "finish_reason": "stop", "logprobs": None}],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 1,
            "total_tokens": 6,
            "cost": 0.0000014,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    u = OpenRouterUsage.from_openrouter(openai.types.Completion.model_validate(body))
    assert (u.prompt_tokens, u.completion_tokens, u.cost, u.provider) == (
        5,
        1,
        Decimal("0.0000014"),
        "OpenAI",
    )


def test_reads_a_generation_record_using_native_counts() -> None:
    record = {
        "data": {
            "id": "gen-abc",
            "model": "anthropic/claude-4.5-sonnet-20250929",
            "provider_name": "Anthropic",
            "total_cost": 0.0123,
            "upstream_inference_cost": 0.0123,
            "cache_discount": 0.004,
            "tokens_prompt": 900,
            "tokens_completion": 50,
            "native_tokens_prompt": 1000,
            "native_tokens_completion": 60,
            "native_tokens_cached": 800,
            "native_tokens_reasoning": 20,
            "is_byok": False,
        }
    }
    u = OpenRouterUsage.from_openrouter(record)
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens) == (1000, 60, 800, 20)
    assert u.cost == Decimal("0.0123") and u.provider == "Anthropic" and u.generation_id == "gen-abc"


def test_response_without_usage_keeps_who_served_it() -> None:
    u = OpenRouterUsage.from_openrouter({"id": "gen-x", "provider": "OpenAI", "choices": [], "usage": None})
    assert u.is_empty and u.generation_id == "gen-x" and u.provider == "OpenAI"


def test_langchain_chat_openai_invoke_prefers_raw_token_usage() -> None:
    raw = recorded_exchanges()[0]["response"]["json"]
    llm_output = {"token_usage": raw["usage"], "model_name": raw["model"], "id": raw["id"]}
    usage_metadata = {
        "input_tokens": 550,
        "output_tokens": 12,
        "total_tokens": 562,
        "input_token_details": {"cache_read": 0},
        "output_token_details": {"reasoning": 0},
    }
    u = OpenRouterUsage.from_langchain(usage_metadata, llm_output)
    assert u.cost == Decimal("0.00183") and u.upstream_inference_cost == Decimal("0.00183")
    assert u.generation_id == raw["id"] and u.model == raw["model"]


def test_langchain_usage_metadata_alone_as_when_streaming() -> None:
    usage_metadata = {
        "input_tokens": 2_000,
        "output_tokens": 300,
        "total_tokens": 2_300,
        "input_token_details": {"cache_read": 1_500, "cache_creation": 400},
        "output_token_details": {"reasoning": 120},
    }
    u = OpenRouterUsage.from_langchain(usage_metadata, {"model_name": "anthropic/claude-sonnet-4.5"})
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens) == (2_000, 1_500, 400)
    assert (u.completion_tokens, u.reasoning_tokens) == (300, 120)
    assert u.cost is None and u.model == "anthropic/claude-sonnet-4.5"


def test_langchain_chat_openrouter_cost_from_response_metadata() -> None:
    usage_metadata = {
        "input_tokens": 100,
        "output_tokens": 10,
        "total_tokens": 110,
        "input_token_details": {"cache_read": 60},
    }
    response_metadata = {
        "id": "gen-or",
        "model_name": "openai/gpt-4o-mini",
        "cost": 0.0000123,
        "cost_details": {"upstream_inference_cost": 0.0000123},
    }
    u = OpenRouterUsage.from_langchain(usage_metadata, response_metadata, model="requested")
    assert u.cost == Decimal("0.0000123") and u.upstream_inference_cost == Decimal("0.0000123")
    assert u.cached_tokens == 60 and u.generation_id == "gen-or" and u.model == "openai/gpt-4o-mini"


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (True, "not a non-negative number"),
        ("12", "not a non-negative number"),
        (float("nan"), "not a non-negative number"),
        (float("inf"), "not a non-negative number"),
        (1.5, "not a non-negative number"),
        ([1], "not a non-negative number"),
        (-3, "negative"),
        (10**30, "implausibly large"),
    ],
)
def test_malformed_counts_are_dropped_with_a_warning(bad: object, kind: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        u = OpenRouterUsage.from_openrouter({"prompt_tokens": bad, "completion_tokens": 7})
    assert u.prompt_tokens == 0 and u.completion_tokens == 7
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert kind in caplog.records[0].getMessage() and "prompt_tokens" in caplog.records[0].getMessage()


def test_one_warning_per_kind_of_problem(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        u = OpenRouterUsage.from_openrouter(
            {
                "prompt_tokens": "x",
                "completion_tokens": True,
                "cost": -1,
                "is_byok": 1,
                "prompt_tokens_details": {"cached_tokens": -5, "cache_write_tokens": None},
            }
        )
    assert u == OpenRouterUsage()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages  # not-a-number (2 fields), negative (2 fields), not-a-flag
    assert sum(": negative, dropped" in m for m in messages) == 1


def test_a_bool_is_never_a_count() -> None:
    u = OpenRouterUsage.from_openrouter({"prompt_tokens": 3, "completion_tokens": False, "is_byok": True})
    assert u.completion_tokens == 0 and u.is_byok is True


def test_contradictions_are_clamped_and_warned(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        u = OpenRouterUsage.from_openrouter(
            {
                "prompt_tokens": 100,
                "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 150, "cache_write_tokens": 20},
                "completion_tokens_details": {"reasoning_tokens": 11},
            }
        )
    # each count is clamped to its whole; writes within the prompt overlap the reads (as Gemini's do)
    assert (u.cached_tokens, u.cache_write_tokens, u.reasoning_tokens) == (100, 20, 10)
    assert u.uncached_prompt_tokens == 0
    assert len(caplog.records) == 1 and "clamped" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "junk", [None, 42, "usage", [1, 2], {"usage": "x"}, {"prompt_tokens_details": 5}, object()]
)
def test_junk_never_raises(junk: object) -> None:
    assert OpenRouterUsage.from_openrouter(junk).prompt_tokens == 0
    assert OpenRouterUsage.from_langchain(junk, junk).prompt_tokens == 0


def test_a_hostile_object_is_only_bad_input(caplog) -> None:
    class Hostile:
        def __getattr__(self, name: str) -> object:
            raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert OpenRouterUsage.from_openrouter(Hostile()).is_empty


# ---------------------------------------------------------------------------- the Responses API (issue 13)


def _responses_body(usage: dict) -> dict:
    """A Responses API `response` object as OpenRouter sends it, around `usage`."""
    return {
        "id": "gen-1779760224-sMJGzTLJPgeLJ7PAeyJ7",
        "object": "response",
        "created_at": 1779760224,
        "model": "anthropic/claude-4.5-sonnet-20250929",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


RESPONSES_USAGE = {  # issue 13's real cache-writing call, with the costs its fields carry
    **shape_cases()["responses-api-cache-write"]["usage"],
    "cost": 0.01518,
    "is_byok": False,
    "cost_details": {
        "upstream_inference_cost": 0.01518,
        "upstream_inference_input_cost": 0.015105,
        "upstream_inference_output_cost": 0.000075,
    },
}


def _sse_completed_event(body: dict) -> dict:
    """The `response.completed` event of the SSE text that streams `body`, parsed as a client would."""
    import json

    text = (
        'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
        f'"response":{json.dumps({**body, "status": "in_progress", "usage": None, "output": []})}}}\n\n'
        "event: response.completed\n"
        f"data: {json.dumps({'type': 'response.completed', 'sequence_number': 1, 'response': body})}\n\n"
    )
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert OpenRouterUsage.from_openrouter(events[0]).is_empty  # the stream's first event has no usage
    return events[-1]


def test_reads_the_responses_api_every_way_it_arrives() -> None:
    from openai.types.responses import Response, ResponseCompletedEvent

    body = _responses_body(RESPONSES_USAGE)
    event = _sse_completed_event(body)
    ways = {
        "usage dict": RESPONSES_USAGE,
        "response dict": body,
        "sdk Response": Response.model_validate(body),
        "sdk usage": Response.model_validate(body).usage,
        "sse event dict": event,
        "sdk completed event": ResponseCompletedEvent.model_validate(event),
    }
    for way, obj in ways.items():
        u = OpenRouterUsage.from_openrouter(obj)
        assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens) == (
            4020,
            5,
            0,
            4012,
        ), way
        assert u.uncached_prompt_tokens == 8 and u.cost == Decimal("0.01518"), way
        assert u.upstream_inference_prompt_cost == Decimal("0.015105"), way
        assert u.upstream_inference_completions_cost == Decimal("0.000075"), way
        assert u.is_byok is False and u.cache_reported, way
        if way not in ("usage dict", "sdk usage"):
            assert u.generation_id == body["id"] and u.model == body["model"], way


@pytest.mark.parametrize("case_id", ["responses-api-cache-write", "responses-api-reasoning"])
def test_responses_api_examples_read_as_exclusive_langfuse_buckets(case_id: str) -> None:
    from langfuse_openrouter_callbacks.langfuse_fields import usage_details

    case = shape_cases()[case_id]
    assert (
        usage_details(OpenRouterUsage.from_openrouter(_responses_body(case["usage"])))
        == (case["expected_usage_details"])
    )


def test_gemini_reads_and_writes_overlap_without_a_clamp(caplog) -> None:
    case = shape_cases()["gemini-cache-creation-overlap"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        u = OpenRouterUsage.from_openrouter(case["usage"])
    assert not caplog.records  # a real shape, not a contradiction
    assert (u.cached_tokens, u.cache_write_tokens) == (2161, 2161)
    assert u.uncached_prompt_tokens == 7 and u.cache_overlap_tokens == 2161


@pytest.mark.parametrize("case_id", ["byok-free-4170", "byok-free-0063", "endpoint-discount-not-byok"])
def test_byok_is_told_from_the_costs_when_the_flag_is_dropped(case_id: str) -> None:
    case = shape_cases()[case_id]
    usage_metadata = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
    metadata = {"model_name": "a/b", "id": "gen-1", **case["usage"]}  # as ChatOpenRouter keeps them
    u = OpenRouterUsage.from_langchain(usage_metadata, metadata)
    assert u.is_byok is case["expected_is_byok"]
    assert OpenRouterUsage.from_openrouter({"prompt_tokens": 100, **case["usage"]}).is_byok is u.is_byok
    # a flag the response does carry is never second-guessed
    assert OpenRouterUsage.from_langchain(usage_metadata, {**metadata, "is_byok": False}).is_byok is False


def test_server_tool_use_and_cost_are_read() -> None:
    usage = {
        "prompt_tokens": 8174,
        "completion_tokens": 30,
        "cost": 0.0133176,
        "cost_details": {"upstream_inference_cost": 0.0133176, "server_tool_cost": 0.01},
        "server_tool_use_details": {"web_search_requests": 1, "tool_calls_requested": 1},
    }
    u = OpenRouterUsage.from_openrouter(usage)
    assert u.web_search_requests == 1 and u.server_tool_cost == Decimal("0.01")
    assert not u.cache_reported  # no prompt_tokens_details: how the prompt used the cache is unknown


def test_the_cache_split_is_unknown_only_when_nothing_says_it() -> None:
    assert not OpenRouterUsage.from_openrouter({"prompt_tokens": 10, "completion_tokens": 2}).cache_reported
    said = {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 0}}
    assert OpenRouterUsage.from_openrouter(said).cache_reported
    completions = {"token_usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}
    assert not OpenRouterUsage.from_langchain(None, completions).cache_reported
    assert not OpenRouterUsage.from_langchain({"input_tokens": 10, "output_tokens": 2}, {}).cache_reported
    chat = {"input_tokens": 10, "output_tokens": 2, "input_token_details": {"cache_read": 0}}
    assert OpenRouterUsage.from_langchain(chat, {"model_name": "a/b"}).cache_reported


def test_anthropics_own_usage_is_not_read_as_the_responses_api() -> None:
    """Anthropic's `input_tokens` excludes the cache and has no `input_tokens_details`: not OpenRouter's
    Responses API, so it reads as empty (the LlamaIndex handler reads other providers' shapes itself)."""
    anthropic = {
        "id": "msg_01",
        "model": "claude-sonnet-4-5",
        "usage": {
            "input_tokens": 12,
            "cache_read_input_tokens": 4012,
            "cache_creation_input_tokens": 0,
            "output_tokens": 5,
        },
    }
    assert OpenRouterUsage.from_openrouter(anthropic).is_empty
