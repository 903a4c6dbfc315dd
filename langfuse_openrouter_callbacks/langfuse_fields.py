"""The one place that knows Langfuse's field names: usage, cost and metadata of a generation.

Langfuse prices and displays usage keys by exact name and sums cost buckets when `total` is missing,
so every bucket here is exclusive and `total` is always given.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .cost import BUCKETS, CostBreakdown
from .usage import OpenRouterUsage

__all__ = ["METADATA_KEY", "to_langfuse"]

#: The key under which the generation's metadata carries our OpenRouter fields.
METADATA_KEY = "openrouter"


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def usage_details(usage: OpenRouterUsage) -> dict[str, int]:
    """Exclusive integer token buckets under the keys Langfuse prices and shows."""
    uncached = usage.uncached_prompt_tokens
    input_audio = min(usage.prompt_audio_tokens, uncached)
    output_image = usage.completion_image_tokens
    output_audio = usage.completion_audio_tokens
    plain_output = usage.completion_tokens - usage.reasoning_tokens - output_image - output_audio
    if plain_output < 0:  # counts that overlap in the source: keep the buckets exclusive
        output_image = output_audio = 0
        plain_output = usage.completion_tokens - usage.reasoning_tokens
    details = {
        "input": uncached - input_audio,
        "input_audio": input_audio,
        "input_cache_read": usage.cached_tokens,
        "input_cache_creation": usage.cache_write_tokens,
        "output": plain_output,
        "output_reasoning": usage.reasoning_tokens,
        "output_image": output_image,
        "output_audio": output_audio,
    }
    kept = {k: int(v) for k, v in details.items() if v or k in ("input", "output")}
    kept["total"] = usage.prompt_tokens + usage.completion_tokens
    return kept


def cost_details(breakdown: CostBreakdown) -> dict[str, float]:
    """The breakdown's non-zero buckets and `total` as floats; empty when the call is unpriced."""
    if not breakdown.is_priced:
        return {}
    details = {name: float(value) for name in BUCKETS if (value := getattr(breakdown, name))}
    details["total"] = float(breakdown.total)
    return details


def openrouter_metadata(usage: OpenRouterUsage, breakdown: CostBreakdown) -> dict[str, Any]:
    """What OpenRouter said and what caching saved, for `metadata["openrouter"]`."""
    return {
        "generation_id": usage.generation_id,
        "provider": usage.provider,
        "model": usage.model,
        "is_byok": usage.is_byok,
        "reported_cost": _float(usage.cost),
        "upstream_inference_cost": _float(usage.upstream_inference_cost),
        "cache_savings_usd": _float(breakdown.cache_savings),
        "no_cache_cost_usd": _float(breakdown.no_cache_total),
        "cache_hit_ratio": breakdown.cache_hit_ratio,
        "cost_source": breakdown.source,
        "pricing_source": breakdown.pricing_source,
        "reconciliation_delta": _float(breakdown.reconciliation_delta),
        "web_search_requests": usage.web_search_requests or None,
    }


def to_langfuse(
    usage: OpenRouterUsage, breakdown: CostBreakdown
) -> tuple[dict[str, int], dict[str, float], dict[str, Any]]:
    """`(usage_details, cost_details, metadata)` for a Langfuse generation.

    `metadata` is `{"openrouter": {...}}`: generation id, provider, BYOK, reported and upstream cost,
    cache savings, no-cache cost, cache hit ratio, cost and pricing source, reconciliation delta.
    """
    return (
        usage_details(usage),
        cost_details(breakdown),
        {METADATA_KEY: openrouter_metadata(usage, breakdown)},
    )
