"""Every real cost case reproduces OpenRouter's reported total exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from langfuse_openrouter_callbacks import OpenRouterUsage, compute_cost
from tests.shared_data import cost_cases

CASES = cost_cases()


def _without_reported_cost(usage: dict) -> dict:
    return {k: v for k, v in usage.items() if k not in ("cost", "cost_details")}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_total_equals_what_openrouter_billed(case: dict) -> None:
    breakdown = compute_cost(case["usage"], case["pricing"])
    expected = Decimal(case["expected_total_usd"])
    assert breakdown.total == expected
    assert sum(breakdown.buckets().values()) == breakdown.total
    assert all(v >= 0 for v in breakdown.buckets().values())
    assert breakdown.source == "openrouter"


@pytest.mark.parametrize("case", [c for c in CASES if c["pure_calculation_matches"]], ids=lambda c: c["id"])
def test_pure_calculation_matches_without_reported_cost(case: dict) -> None:
    usage = _without_reported_cost(case["usage"])
    breakdown = compute_cost(usage, case["pricing"])
    # a usage that does not say how its prompt split over the cache is priced as if uncached, and says so
    said = "prompt_tokens_details" in usage or "input_tokens_details" in usage
    assert breakdown.source == ("computed" if said else "uncached_estimate")
    assert breakdown.total == Decimal(case["expected_total_usd"])
    assert sum(breakdown.buckets().values()) == breakdown.total


def test_cases_cover_reasoning_cache_reads_and_byok() -> None:
    usages = [OpenRouterUsage.from_openrouter(c["usage"]) for c in CASES]
    assert any(u.reasoning_tokens for u in usages)
    assert any(u.cached_tokens for u in usages)
    assert any(u.is_byok for u in usages)
