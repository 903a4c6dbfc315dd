"""OpenRouter's billing rules, each on its own: buckets, cache writes, discounts, fees, BYOK, overrides."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from langfuse_openrouter_callbacks import CostBreakdown, ModelPricing, OpenRouterUsage, compute_cost
from tests.shared_data import recorded_exchanges

SONNET = {  # anthropic/claude-sonnet-4.5 on OpenRouter
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
}
D = Decimal


def assert_consistent(b: CostBreakdown) -> None:
    buckets = b.buckets()
    assert all(isinstance(v, Decimal) and v >= 0 for v in buckets.values())
    assert sum(buckets.values()) == b.total


def test_buckets_are_exclusive_and_priced_per_kind() -> None:
    usage = {
        "prompt_tokens": 10_000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 6_000, "cache_write_tokens": 3_000},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    b = compute_cost(usage, SONNET)
    assert b.input == 1_000 * D("0.000003")
    assert b.input_cache_read == 6_000 * D("0.0000003")
    assert b.input_cache_creation == 3_000 * D("0.00000375")
    assert b.output == 300 * D("0.000015")
    assert b.output_reasoning == 200 * D("0.000015")  # inside completion, at the completion price
    assert b.total == D("0.003") + D("0.0018") + D("0.01125") + D("0.0045") + D("0.003")
    assert b.source == "computed"
    assert b.reported_total is None and b.reconciliation_delta is None
    assert_consistent(b)


def test_cache_writes_can_cost_more_than_reads_save() -> None:
    usage = {
        "prompt_tokens": 5_000,
        "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 4_000},
    }
    b = compute_cost(usage, SONNET)
    assert b.total == D("0.003") + D("0.015") + D("0.0015")
    assert b.no_cache_total == 5_000 * D("0.000003") + D("0.0015")
    assert b.cache_savings == D("-0.003")
    assert b.cache_hit_ratio == 0.0


def test_cache_reads_save_against_the_plain_prompt_price() -> None:
    usage = {
        "prompt_tokens": 10_000,
        "completion_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 9_000},
    }
    b = compute_cost(usage, SONNET)
    assert b.no_cache_total == D("0.03")
    assert b.total == 1_000 * D("0.000003") + 9_000 * D("0.0000003")
    assert b.cache_savings == 9_000 * (D("0.000003") - D("0.0000003"))
    assert b.cache_hit_ratio == 0.9


def test_cache_reads_without_a_read_price_are_billed_at_prompt() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 40}}
    b = compute_cost(usage, {"prompt": "0.000001", "completion": "0.000002"})
    assert b.input_cache_read == 40 * D("0.000001")
    assert b.total == D("0.0001")
    assert b.cache_savings == 0


def test_endpoint_discount_scales_token_buckets_not_fees() -> None:
    pricing = {**SONNET, "discount": 0.35, "request": "0.002", "web_search": "0.01"}
    usage = {
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "server_tool_use_details": {"web_search_requests": 2},
    }
    b = compute_cost(usage, pricing)
    assert b.input == 1_000 * D("0.000003") * D("0.65")
    assert b.output == 100 * D("0.000015") * D("0.65")
    assert b.request == D("0.002")
    assert b.server_tools == D("0.02")
    assert b.total == (D("0.003") + D("0.0015")) * D("0.65") + D("0.022")
    assert_consistent(b)


def test_web_search_priced_per_request_reproduces_a_recorded_call() -> None:
    exchange = next(
        e
        for e in recorded_exchanges()
        if e["request"]["body"].get("model") == "openai/gpt-4.1-mini"
        and e["response"].get("json")
        and e["response"]["json"]["usage"].get("prompt_tokens") == 8174
    )
    response = exchange["response"]["json"]
    pricing = {"prompt": "0.0000004", "completion": "0.0000016", "web_search": "0.01"}
    reported = compute_cost(response, pricing)
    usage = {k: v for k, v in response["usage"].items() if k not in ("cost", "cost_details")}
    usage["server_tool_use_details"] = {"web_search_requests": 1}
    computed = compute_cost(usage, pricing)
    assert computed.total == reported.total == D("0.0133176")
    assert computed.server_tools == D("0.01")
    assert reported.reconciliation_delta == 0


def test_a_plugin_fee_not_in_the_price_list_lands_in_other() -> None:
    # Recorded deepseek call with the Exa web plugin: OpenRouter charged $0.007 on top of the tokens.
    response = next(
        e["response"]["json"]
        for e in recorded_exchanges()
        if e["response"].get("json") and e["request"]["body"].get("model") == "deepseek/deepseek-chat"
    )
    b = compute_cost(response, {"prompt": "0.0000002574", "completion": "0.0000010287"})
    assert b.source == "openrouter"
    assert b.total == D("0.007637029")
    assert b.other == D("0.007")
    assert b.reconciliation_delta == D("0.007")
    assert_consistent(b)


def test_reported_cost_below_list_price_scales_buckets_to_the_billed_total() -> None:
    usage = {
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "cost": 0.0029250,  # 0.65 x list: an endpoint discount the price list did not show
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    b = compute_cost(usage, SONNET)
    assert b.total == D("0.002925")
    assert b.computed_total == D("0.0045")
    assert b.reconciliation_delta == D("-0.001575")
    assert b.input == D("0.00195") and b.output == D("0.000975")
    assert b.other == 0
    assert_consistent(b)


def test_byok_total_is_the_providers_charge_plus_openrouters_fee() -> None:
    usage = {
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "cost": 0.000225,
        "is_byok": True,
        "cost_details": {"upstream_inference_cost": 0.0045},
    }
    b = compute_cost(usage, SONNET)
    assert b.total == D("0.004725")
    assert b.other == D("0.000225")
    assert b.source == "openrouter"
    assert_consistent(b)


def test_byok_without_the_upstream_charge_computes_it_and_adds_the_fee() -> None:
    usage = {
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 0},
        "cost": 0.000225,
        "is_byok": True,
    }
    b = compute_cost(usage, SONNET)
    assert b.source == "computed"
    assert b.total == D("0.0045") + D("0.000225")
    assert b.other == D("0.000225")
    assert_consistent(b)


def test_unpriced_model_is_marked_never_guessed() -> None:
    b = compute_cost({"prompt_tokens": 1_000, "completion_tokens": 10}, None)
    assert b.source == "unpriced" and not b.is_priced
    assert b.total == 0 and b.no_cache_total is None and b.cache_savings is None


def test_unpriced_model_with_a_reported_cost_shows_it_split_by_upstream_parts() -> None:
    usage = {
        "prompt_tokens": 1_000,
        "completion_tokens": 10,
        "cost": 0.0012,
        "cost_details": {
            "upstream_inference_cost": 0.0012,
            "upstream_inference_prompt_cost": 0.001,
            "upstream_inference_completions_cost": 0.0002,
        },
    }
    b = compute_cost(usage, None)
    assert b.source == "openrouter" and b.total == D("0.0012")
    assert (b.input, b.output, b.other) == (D("0.001"), D("0.0002"), 0)
    assert b.cache_savings is None  # no prices, so no honest no-cache figure
    assert_consistent(b)


def test_tiered_override_applies_above_min_prompt_tokens_and_inherits_absent_keys() -> None:
    pricing = {
        **SONNET,
        "overrides": [{"min_prompt_tokens": 200_000, "prompt": "0.000006", "completion": "0.0000225"}],
    }
    small = compute_cost({"prompt_tokens": 200_000, "completion_tokens": 0}, pricing)
    assert small.total == 200_000 * D("0.000003")  # strictly greater than the threshold
    usage = {"prompt_tokens": 200_001, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1}}
    large = compute_cost(usage, pricing)
    assert large.input == 200_000 * D("0.000006")
    assert large.output == 10 * D("0.0000225")
    assert large.input_cache_read == D("0.0000003")  # absent from the override: inherited


def test_time_window_overrides_wrap_midnight_and_later_entries_win() -> None:
    pricing = ModelPricing.from_openrouter(
        {
            "prompt": "0.000001",
            "completion": "0.000002",
            "overrides": [
                {"utc_start": 2200, "utc_end": 600, "prompt": "0.0000005", "completion": "0.000001"},
                {"utc_start": 2330, "utc_end": 30, "prompt": "0.0000001"},
            ],
        }
    )
    usage = OpenRouterUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000)

    def total(hour: int, minute: int) -> Decimal:
        return compute_cost(
            usage, pricing, at=datetime(2026, 11, 28, hour, minute, tzinfo=timezone.utc)
        ).total

    assert total(12, 0) == D("3")  # outside every window
    assert total(22, 0) == D("1.5")  # window start is inclusive
    assert total(5, 59) == D("1.5")  # wrapped past midnight
    assert total(6, 0) == D("3")  # window end is exclusive
    assert total(23, 45) == D("1.1")  # the later entry's prompt wins, completion inherited from the first
    assert total(0, 15) == D("1.1")


def test_typed_and_raw_inputs_give_the_same_breakdown() -> None:
    raw_usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }
    typed = compute_cost(OpenRouterUsage.from_openrouter(raw_usage), ModelPricing.from_openrouter(SONNET))
    assert compute_cost(raw_usage, SONNET) == typed


def test_pricing_source_is_carried() -> None:
    pricing = ModelPricing.from_openrouter(SONNET, source="endpoint:Amazon Bedrock")
    assert compute_cost({"prompt_tokens": 1}, pricing).pricing_source == "endpoint:Amazon Bedrock"


@pytest.mark.parametrize("audio_price", [None, "0.000005"])
def test_audio_input_tokens_use_the_audio_price_when_there_is_one(audio_price: str | None) -> None:
    pricing = {"prompt": "0.000001", "completion": "0.000002"}
    if audio_price:
        pricing["audio"] = audio_price
    usage = {"prompt_tokens": 1_000, "completion_tokens": 0, "prompt_tokens_details": {"audio_tokens": 400}}
    b = compute_cost(usage, pricing)
    expected = 1_000 * D("0.000001") if audio_price is None else 600 * D("0.000001") + 400 * D(audio_price)
    assert b.input == b.total == expected


def test_a_low_precision_decimal_context_in_the_callers_thread_does_not_round_money() -> None:
    import decimal

    usage = {
        "prompt_tokens": 123_457,
        "completion_tokens": 9_876,
        "prompt_tokens_details": {"cached_tokens": 100_000},
    }
    expected = compute_cost(usage, SONNET).total
    with decimal.localcontext(decimal.Context(prec=4)):
        assert compute_cost(usage, SONNET).total == expected
    assert expected == 23_457 * D("0.000003") + 100_000 * D("0.0000003") + 9_876 * D("0.000015")


def test_a_reported_server_tool_cost_is_its_own_bucket() -> None:
    usage = {
        "prompt_tokens": 8174,
        "completion_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 0},
        "cost_details": {"server_tool_cost": 0.012},
        "server_tool_use_details": {"web_search_requests": 1},
    }
    pricing = {"prompt": "0.0000004", "completion": "0.0000016", "web_search": "0.01"}
    b = compute_cost(usage, pricing)
    assert b.server_tools == D("0.012")  # what OpenRouter said, not the list price of one search
    assert b.total == D("0.0032696") + D("0.000048") + D("0.012")
    unpriced = compute_cost({**usage, "cost": 0.02}, None)
    assert unpriced.server_tools == D("0.012") and unpriced.other == D("0.008")
    assert_consistent(b)


def test_an_unknown_cache_split_is_an_uncached_estimate_without_a_hit_ratio() -> None:
    b = compute_cost({"prompt_tokens": 10_000, "completion_tokens": 500}, SONNET)
    assert b.source == "uncached_estimate"
    assert b.total == 10_000 * D("0.000003") + 500 * D("0.000015")
    assert b.cache_hit_ratio is None and b.cache_savings is None and b.no_cache_total is None
    reported = compute_cost({"prompt_tokens": 10_000, "completion_tokens": 500, "cost": 0.0241}, SONNET)
    assert reported.source == "openrouter" and reported.cache_hit_ratio is None


def test_a_reported_server_tool_cost_is_not_scaled_with_a_discount() -> None:
    usage = {
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 0},
        "cost": 0.0129,  # 0.01 for the tools, 0.0029 for tokens listed at 0.0045
        "cost_details": {"server_tool_cost": 0.01},
    }
    b = compute_cost(usage, SONNET)
    assert b.server_tools == D("0.01") and b.total == D("0.0129")
    assert b.input + b.output == D("0.0029")
    assert_consistent(b)
