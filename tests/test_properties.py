"""Properties over generated input: extraction never raises, buckets never go negative and always sum."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langfuse_openrouter_callbacks import OpenRouterUsage, compute_cost, to_langfuse
from langfuse_openrouter_callbacks._log import Problems
from langfuse_openrouter_callbacks.langfuse_fields import (
    CACHE_OVERLAP_KEY,
    generation_attributes,
    otel_attributes,
)
from tests.strategies import (
    json_values,
    openrouter_responses,
    openrouter_usages,
    responses_api_events,
    responses_api_responses,
    responses_api_usages,
    usage_like,
    valid_openrouter_usages,
)

quiet = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300, deadline=None)


def _valid(u: OpenRouterUsage) -> None:
    for name in (
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "web_search_requests",
    ):
        value = getattr(u, name)
        assert type(value) is int and value >= 0
    assert u.cached_tokens <= u.prompt_tokens and u.cache_write_tokens <= u.prompt_tokens
    assert 0 <= u.uncached_prompt_tokens <= u.prompt_tokens
    assert u.reasoning_tokens <= u.completion_tokens
    for name in ("cost", "upstream_inference_cost", "server_tool_cost"):
        value = getattr(u, name)
        assert value is None or (isinstance(value, Decimal) and value.is_finite() and value >= 0)


@quiet
@given(obj=usage_like | json_values)
def test_from_openrouter_never_raises_and_yields_valid_usage(obj: object) -> None:
    logging.disable(logging.WARNING)
    try:
        _valid(OpenRouterUsage.from_openrouter(obj))
    finally:
        logging.disable(logging.NOTSET)


@quiet
@given(usage_metadata=usage_like, metadata=usage_like)
def test_from_langchain_never_raises(usage_metadata: object, metadata: object) -> None:
    logging.disable(logging.WARNING)
    try:
        _valid(OpenRouterUsage.from_langchain(usage_metadata, metadata))
    finally:
        logging.disable(logging.NOTSET)


def _careful(read, *args) -> tuple[OpenRouterUsage, Problems]:
    problems = Problems("test")
    return read(*args, problems)._checked(problems), problems


def _same(usual: OpenRouterUsage, careful: OpenRouterUsage) -> None:
    assert usual == careful
    assert repr(usual) == repr(careful)  # the same Decimals, digit for digit (they are exported as written)


@quiet
@given(
    obj=openrouter_responses
    | openrouter_usages
    | responses_api_usages
    | responses_api_responses
    | responses_api_events
)
def test_the_usual_shape_reader_agrees_with_the_careful_one(obj: dict) -> None:
    usual = OpenRouterUsage._read_usual_openrouter(obj)
    if usual is not None:
        careful, problems = _careful(OpenRouterUsage._read_openrouter, obj)
        _same(usual, careful)
        assert not problems.kinds()  # the usual reader answers only for input without problems


@quiet
@given(usage=valid_openrouter_usages, generation_id=st.none() | st.text(max_size=5))
def test_valid_usage_takes_the_usual_path_to_the_careful_readers_result(
    usage: dict, generation_id: str | None
) -> None:
    response = {"id": generation_id, "provider": "Anthropic", "model": "a/b", "usage": usage}
    for obj in (usage, response):
        usual = OpenRouterUsage._read_usual_openrouter(obj)
        assert usual is not None
        careful, problems = _careful(OpenRouterUsage._read_openrouter, obj)
        _same(usual, careful)
        assert not problems.kinds()
    metadata = {"token_usage": usage, "model_name": "a/b", "id": generation_id}
    usual = OpenRouterUsage._read_usual_langchain({"input_tokens": 1}, metadata, None)
    assert usual is not None
    _same(usual, _careful(OpenRouterUsage._read_langchain, {"input_tokens": 1}, metadata, None)[0])


@quiet
@given(usage=openrouter_usages, model_name=st.none() | st.text(max_size=5), generation_id=json_values)
def test_the_usual_langchain_reader_agrees_with_the_careful_one(
    usage: dict, model_name: str | None, generation_id: object
) -> None:
    metadata = {"token_usage": usage, "model_name": model_name, "id": generation_id}
    usual = OpenRouterUsage._read_usual_langchain(None, metadata, "requested/model")
    if usual is not None:
        careful, problems = _careful(OpenRouterUsage._read_langchain, None, metadata, "requested/model")
        _same(usual, careful)
        assert not problems.kinds()


def _as_langchain_usage_metadata(usage: dict) -> object:
    """OpenRouter's usage as ChatOpenRouter puts it: LangChain's `UsageMetadata` (junk passed along)."""
    prompt = usage.get("prompt_tokens_details")
    completion = usage.get("completion_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = completion if isinstance(completion, dict) else {}
    return {
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "input_token_details": {
            "cache_read": prompt.get("cached_tokens"),
            "audio": prompt.get("audio_tokens"),
        }
        | ({"cache_creation": prompt["cache_write_tokens"]} if "cache_write_tokens" in prompt else {}),
        "output_token_details": {
            "reasoning": completion.get("reasoning_tokens"),
            "audio": completion.get("audio_tokens"),
        },
    }


@quiet
@given(usage=openrouter_usages | valid_openrouter_usages, generation_id=json_values)
def test_the_usual_reader_of_chat_openrouters_metadata_agrees_with_the_careful_one(
    usage: dict, generation_id: object
) -> None:
    usage_metadata = _as_langchain_usage_metadata(usage)
    metadata = {
        "model_name": "a/b",
        "id": generation_id,
        "cost": usage.get("cost"),
        "cost_details": usage.get("cost_details"),
        "is_byok": usage.get("is_byok"),
    }
    usual = OpenRouterUsage._read_usual_langchain(usage_metadata, metadata, "requested/model")
    careful, problems = _careful(OpenRouterUsage._read_langchain, usage_metadata, metadata, "requested/model")
    if usual is not None:
        _same(usual, careful)
        assert not problems.kinds()


counts = st.integers(min_value=0, max_value=2_000_000)
prices = st.decimals(
    min_value=0, max_value=Decimal("0.001"), places=12, allow_nan=False, allow_infinity=False
)
money = st.none() | st.decimals(min_value=0, max_value=100, places=9, allow_nan=False, allow_infinity=False)


@st.composite
def usages(draw: st.DrawFn) -> dict:
    prompt = draw(counts)
    cached = draw(st.integers(0, prompt))
    # writes within what is left, or (as Gemini reports a cache it creates) overlapping the reads
    writes = draw(st.integers(0, prompt - cached) | st.integers(0, prompt))
    completion = draw(counts)
    cost = draw(money)
    upstream = draw(money)
    tools_cost = draw(money)
    responses_api = draw(st.booleans())
    details = {"cached_tokens": cached, "cache_write_tokens": writes}
    reasoning = {"reasoning_tokens": draw(st.integers(0, completion))}
    usage = {
        "cost": None if cost is None else str(cost),
        "is_byok": draw(st.none() | st.booleans()),
        "cost_details": {
            "upstream_inference_cost": None if upstream is None else str(upstream),
            "server_tool_cost": None if tools_cost is None else str(tools_cost),
        },
        "server_tool_use_details": {"web_search_requests": draw(st.integers(0, 5))},
    }
    if responses_api:
        usage |= {"input_tokens": prompt, "output_tokens": completion}
        usage |= {"input_tokens_details": details, "output_tokens_details": reasoning}
    else:
        usage |= {"prompt_tokens": prompt, "completion_tokens": completion}
        if draw(st.booleans()) or draw(st.booleans()):  # without details the cache split is unknown
            usage |= {"prompt_tokens_details": details, "completion_tokens_details": reasoning}
    return usage


@st.composite
def pricings(draw: st.DrawFn) -> dict | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    pricing = {"prompt": str(draw(prices)), "completion": str(draw(prices))}
    for key in ("input_cache_read", "input_cache_write", "request", "web_search"):
        if draw(st.booleans()):
            pricing[key] = str(draw(prices))
    if draw(st.booleans()):
        pricing["discount"] = float(draw(st.decimals(min_value=0, max_value=1, places=2)))
    if draw(st.booleans()):
        pricing["overrides"] = [{"min_prompt_tokens": draw(counts), "prompt": str(draw(prices))}]
    return pricing


@quiet
@given(usage=usages(), pricing=pricings())
def test_buckets_are_non_negative_and_sum_exactly_to_total(usage: dict, pricing: dict | None) -> None:
    b = compute_cost(usage, pricing)
    buckets = b.buckets()
    assert all(v >= 0 for v in buckets.values())
    assert sum(buckets.values()) == b.total
    if b.reported_total is not None:
        assert b.total == b.reported_total
    if b.is_priced and b.cache_savings is not None:
        assert b.no_cache_total - b.total == b.cache_savings
    u = OpenRouterUsage.from_openrouter(usage)
    usage_details, cost_details, _ = to_langfuse(u, b)
    assert all(type(v) is int and v >= 0 for v in usage_details.values())
    # the UI's "input" and "output" groups (keys containing those words) sum to the prompt and completion
    inputs = sum(v for k, v in usage_details.items() if "input" in k)
    outputs = sum(v for k, v in usage_details.items() if "output" in k)
    assert (inputs, outputs) == (u.prompt_tokens, u.completion_tokens)
    assert inputs + outputs == usage_details["total"]
    assert set(usage_details) - {"total", CACHE_OVERLAP_KEY} == {k for k in usage_details if "put" in k}
    assert all(type(v) is float and v >= 0 for v in cost_details.values())


@quiet
@given(usage=usages(), pricing=pricings())
def test_the_fast_attribute_writer_writes_what_the_dicts_say(usage: dict, pricing: dict | None) -> None:
    u = OpenRouterUsage.from_openrouter(usage)
    b = compute_cost(u, pricing)
    fast = generation_attributes(u, b)
    usage_details, cost_details, metadata = to_langfuse(u, b)
    slow = otel_attributes(usage_details, cost_details or None, metadata)
    assert fast.keys() == slow.keys()
    for key in fast:
        assert json.loads(fast[key]) == pytest.approx(json.loads(slow[key]))
