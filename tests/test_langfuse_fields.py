"""`to_langfuse`: exclusive integer usage, float cost buckets with total, OpenRouter metadata."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langfuse_openrouter_callbacks import CostBreakdown, OpenRouterUsage, compute_cost, to_langfuse
from langfuse_openrouter_callbacks.cost import BUCKETS
from langfuse_openrouter_callbacks.langfuse_fields import generation_attributes, otel_attributes
from tests.scenario import SONNET
from tests.shared_data import cost_cases
from tests.strategies import usage_like_dicts, valid_openrouter_usages

RESPONSE = {
    "id": "gen-1",
    "provider": "Anthropic",
    "model": "anthropic/claude-4.5-sonnet-20250929",
    "usage": {
        "prompt_tokens": 10_000,
        "completion_tokens": 500,
        "total_tokens": 10_500,
        "cost": 0.0241,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 6_000, "cache_write_tokens": 3_000, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 200},
        "cost_details": {"upstream_inference_cost": 0.0241},
    },
}


def test_usage_details_are_exclusive_integers_summing_to_total() -> None:
    usage = OpenRouterUsage.from_openrouter(RESPONSE)
    usage_details, _, _ = to_langfuse(usage, compute_cost(usage, SONNET))
    assert usage_details == {
        "input": 1_000,
        "input_cache_read": 6_000,
        "input_cache_creation": 3_000,
        "output": 300,
        "output_reasoning": 200,
        "total": 10_500,
    }
    assert all(type(v) is int for v in usage_details.values())
    assert sum(v for k, v in usage_details.items() if k != "total") == usage_details["total"]
    assert "is_byok" not in usage_details


def test_cost_details_are_the_non_zero_buckets_and_total_as_floats() -> None:
    usage = OpenRouterUsage.from_openrouter(RESPONSE)
    breakdown = compute_cost(usage, SONNET)
    _, cost_details, _ = to_langfuse(usage, breakdown)
    assert set(cost_details) == {
        "input",
        "input_cache_read",
        "input_cache_creation",
        "output",
        "output_reasoning",
        "other",
        "total",
    }
    assert all(type(v) is float for v in cost_details.values())
    assert cost_details["total"] == 0.0241
    assert cost_details["other"] == float(breakdown.other) > 0  # billed above list price: shown, not lost


def test_metadata_carries_savings_and_provenance() -> None:
    usage = OpenRouterUsage.from_openrouter(RESPONSE)
    breakdown = compute_cost(usage, SONNET)
    _, _, metadata = to_langfuse(usage, breakdown)
    meta = metadata["openrouter"]
    assert meta["generation_id"] == "gen-1" and meta["provider"] == "Anthropic"
    assert meta["is_byok"] is False and meta["reported_cost"] == 0.0241
    assert meta["cache_savings_usd"] == float(breakdown.cache_savings)
    assert meta["no_cache_cost_usd"] == float(breakdown.no_cache_total)
    assert meta["cache_hit_ratio"] == 0.6
    assert meta["cost_source"] == "openrouter"
    assert meta["reconciliation_delta"] == float(breakdown.reconciliation_delta)
    json.dumps(metadata)  # exportable as it is


def test_unpriced_calls_carry_no_cost_so_langfuse_is_not_told_zero() -> None:
    usage = OpenRouterUsage.from_openrouter({"prompt_tokens": 10, "completion_tokens": 2})
    usage_details, cost_details, metadata = to_langfuse(usage, compute_cost(usage, None))
    assert usage_details == {"input": 10, "output": 2, "total": 12}
    assert cost_details == {}
    assert metadata["openrouter"]["cost_source"] == "unpriced"


def test_audio_and_image_tokens_get_their_own_exclusive_keys() -> None:
    usage = OpenRouterUsage.from_openrouter(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"audio_tokens": 30},
            "completion_tokens_details": {"image_tokens": 20, "reasoning_tokens": 10},
        }
    )
    usage_details, _, _ = to_langfuse(usage, compute_cost(usage, None))
    assert usage_details == {
        "input": 70,
        "input_audio": 30,
        "output": 20,
        "output_reasoning": 10,
        "output_image": 20,
        "total": 150,
    }


# ---------------------------------------------------------------------------- span attributes


def _decoded(attributes: dict[str, str]) -> dict[str, object]:
    return {key: json.loads(value) for key, value in attributes.items()}


def _both_ways(usage: OpenRouterUsage, pricing: object) -> tuple[dict[str, object], dict[str, object]]:
    breakdown = compute_cost(usage, pricing)
    fast = generation_attributes(usage, breakdown)
    usage_details, cost_details, metadata = to_langfuse(usage, breakdown)
    return _decoded(fast), _decoded(otel_attributes(usage_details, cost_details or None, metadata))


@pytest.mark.parametrize("case", cost_cases(), ids=lambda c: c["id"])
def test_generation_attributes_carry_what_to_langfuse_says(case: dict) -> None:
    usage = OpenRouterUsage.from_openrouter(
        {"id": "gen-x", "model": 'm\u00e9/"q"', "provider": None, "usage": case["usage"]}
    )
    unreported = OpenRouterUsage.from_openrouter(
        {k: v for k, v in case["usage"].items() if k not in ("cost", "cost_details")}
    )
    for u, pricing in (
        (usage, case["pricing"]),
        (unreported, case["pricing"]),
        (usage, None),
        (unreported, None),
    ):
        fast, slow = _both_ways(u, pricing)
        assert fast == slow  # the same keys and values; money as exact decimals reads as the same floats
        assert set(fast) >= {"langfuse.observation.usage_details", "langfuse.observation.metadata.openrouter"}
        if compute_cost(u, pricing).is_priced:
            cost = fast["langfuse.observation.cost_details"]
            assert isinstance(cost, dict) and cost["total"] == pytest.approx(
                sum(v for k, v in cost.items() if k != "total")
            )


@settings(max_examples=200, deadline=None)
@given(usage_like_dicts)
def test_generation_attributes_agree_on_junk_usage(raw: dict) -> None:
    usage = OpenRouterUsage.from_openrouter(raw)
    fast, slow = _both_ways(usage, SONNET)
    assert fast == slow


@settings(max_examples=200, deadline=None)
@given(valid_openrouter_usages, st.booleans())
def test_generation_attributes_agree_on_every_kind_of_token_and_bucket(raw: dict, discounted: bool) -> None:
    usage = OpenRouterUsage.from_openrouter(raw)
    pricing = {
        **SONNET,
        "request": "0.001",
        "web_search": "0.004",
        "audio": "0.00001",
        "audio_output": "0.00002",
        "image_output": "0.00003",
        "discount": 0.1 if discounted else 0,
    }
    fast, slow = _both_ways(usage, pricing)
    assert fast == slow


def test_generation_attributes_write_every_bucket() -> None:
    """The cost attribute is written bucket by bucket: none of `BUCKETS` may be missing from it."""
    breakdown = CostBreakdown(**dict.fromkeys(BUCKETS, Decimal("0.5")), total=Decimal(4), source="computed")
    written = json.loads(
        generation_attributes(OpenRouterUsage(), breakdown)["langfuse.observation.cost_details"]
    )
    assert list(written) == [*BUCKETS, "total"]


def test_overlapping_reads_and_writes_keep_the_input_group_summing_to_the_prompt() -> None:
    from tests.shared_data import shape_cases

    case = shape_cases()["gemini-cache-creation-overlap"]
    usage = OpenRouterUsage.from_openrouter(case["usage"])
    breakdown = compute_cost(usage, case["pricing"])
    usage_details, cost_details, metadata = to_langfuse(usage, breakdown)
    assert usage_details == case["expected_usage_details"]
    assert sum(v for k, v in usage_details.items() if "input" in k) == usage.prompt_tokens
    assert sum(v for k, v in cost_details.items() if k != "total") == pytest.approx(cost_details["total"])
    assert metadata["openrouter"]["cache_hit_ratio"] == pytest.approx(2161 / 2168)
    fast = generation_attributes(usage, breakdown)
    assert json.loads(fast["langfuse.observation.usage_details"]) == usage_details


def test_server_tools_are_a_cost_bucket_and_metadata() -> None:
    usage = OpenRouterUsage.from_openrouter(
        {
            "prompt_tokens": 100,
            "completion_tokens": 10,
            "cost": 0.0105,
            "cost_details": {"server_tool_cost": 0.01},
            "server_tool_use_details": {"web_search_requests": 2},
        }
    )
    _, cost_details, metadata = to_langfuse(usage, compute_cost(usage, SONNET))
    assert cost_details["server_tools"] == 0.01
    assert metadata["openrouter"]["server_tool_cost"] == 0.01
    assert metadata["openrouter"]["web_search_requests"] == 2


def test_trace_attributes_are_plain_strings() -> None:
    from langfuse_openrouter_callbacks.langfuse_fields import trace_attributes

    assert trace_attributes("u-1", "s-1") == {"user.id": "u-1", "session.id": "s-1"}
    assert trace_attributes(None, 7) == {} and trace_attributes("", "s") == {"session.id": "s"}
