"""The one place that knows Langfuse's field names: usage, cost and metadata of a generation.

Langfuse prices and displays usage keys by exact name and sums cost buckets when `total` is missing,
so every bucket here is exclusive and `total` is always given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .cost import BUCKETS, CostBreakdown
from .usage import OpenRouterUsage

__all__ = ["METADATA_KEY", "otel_attributes", "to_langfuse"]

#: The key under which the generation's metadata carries our OpenRouter fields.
METADATA_KEY = "openrouter"
#: The numeric score (USD) the handlers record per generation when asked, for Langfuse to aggregate.
SAVINGS_SCORE_NAME = "openrouter_cache_savings_usd"
#: `usage_details` keys of the prompt tokens read from / written to the cache, and the key of the
#: whole (`total`) in both `usage_details` and `cost_details`.
CACHE_READ_KEY = "input_cache_read"
CACHE_WRITE_KEY = "input_cache_creation"
TOTAL_KEY = "total"

# Langfuse's OpenTelemetry span attributes (the SDK's `LangfuseOtelSpanAttributes`).
_OBSERVATION = "langfuse.observation"
_OBSERVATION_TYPE = _OBSERVATION + ".type"
_MODEL = _OBSERVATION + ".model.name"
_USAGE_DETAILS = _OBSERVATION + ".usage_details"
_COST_DETAILS = _OBSERVATION + ".cost_details"
_METADATA = _OBSERVATION + ".metadata"


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


#: The fields of OpenRouter's `/generation` record that `metadata["openrouter"]` carries, under their names.
GENERATION_RECORD_FIELDS = (
    "total_cost",
    "cache_discount",
    "native_tokens_prompt",
    "native_tokens_completion",
    "native_tokens_cached",
    "native_tokens_reasoning",
    "provider_name",
    "provider_responses",
    "is_byok",
    "generation_time",
    "latency",
)


def _json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def generation_record_metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata["openrouter"]` additions from a `/generation` record (its `data`): its own fields.

    Absent fields are left out; `Decimal` amounts become floats here, at the Langfuse edge.
    """
    return {key: _json_safe(record[key]) for key in GENERATION_RECORD_FIELDS if key in record}


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


def otel_attributes(
    usage_details: Mapping[str, int] | None = None,
    cost_details: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    observation_type: str | None = None,
    model: str | None = None,
) -> dict[str, str]:
    """The OpenTelemetry span attributes that carry these fields to Langfuse, as its SDK writes them.

    For spans that Langfuse's SDK did not make (OpenInference's): `usage_details` and `cost_details`
    are one JSON string each, metadata one JSON string per top-level key (a None value is not
    written), `observation_type` ("generation", "span", ...) and `model` plain strings. Arguments
    left at None give no attribute.
    """
    attributes: dict[str, str] = {}
    if observation_type is not None:
        attributes[_OBSERVATION_TYPE] = observation_type
    if model is not None:
        attributes[_MODEL] = model
    if usage_details is not None:
        attributes[_USAGE_DETAILS] = json.dumps(dict(usage_details))
    if cost_details is not None:
        attributes[_COST_DETAILS] = json.dumps(dict(cost_details))
    for key, value in (metadata or {}).items():
        if value is not None:
            attributes[f"{_METADATA}.{key}"] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return attributes


@dataclass(frozen=True)
class ExportedGeneration:
    """A generation read back from the span attributes the Langfuse SDK exports."""

    model: str | None
    usage_details: dict[str, int]
    cost_details: dict[str, float]
    openrouter: dict[str, Any]


def read_generation(attributes: Mapping[str, Any]) -> ExportedGeneration | None:
    """The generation fields of an exported span's attributes; None for spans of other types."""
    if attributes.get(_OBSERVATION_TYPE) != "generation":
        return None

    def decoded(key: str) -> Any:
        value = attributes.get(key)
        try:
            return json.loads(value) if isinstance(value, str) else value
        except ValueError:
            return None

    return ExportedGeneration(
        model=attributes.get(_MODEL),
        usage_details=decoded(_USAGE_DETAILS) or {},
        cost_details=decoded(_COST_DETAILS) or {},
        openrouter=decoded(f"{_METADATA}.{METADATA_KEY}") or {},
    )
