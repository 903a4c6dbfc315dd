"""What both framework adapters do with one finished call: price it and map it to Langfuse fields."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._log import logger
from .catalog import DEFAULT_API_BASE, PriceCatalog
from .cost import CostBreakdown, compute_cost
from .langfuse_fields import SAVINGS_SCORE_NAME, to_langfuse
from .usage import OpenRouterUsage


@dataclass(frozen=True, slots=True)
class Enrichment:
    """A call's usage and cost, and the Langfuse fields that record them."""

    usage: OpenRouterUsage
    breakdown: CostBreakdown
    usage_details: dict[str, int]
    cost_details: dict[str, float]
    metadata: dict[str, Any]


def enrich(
    usage: OpenRouterUsage,
    catalog: PriceCatalog,
    *,
    requested_model: str | None = None,
    at: datetime | None = None,
) -> Enrichment:
    """Price `usage` (by the model the response names, then the one requested) and map it."""
    models = [m for m in (usage.model, requested_model) if m]
    pricing = catalog.pricing_for(models, provider=usage.provider) if models else None
    breakdown = compute_cost(usage, pricing, at=at)
    usage_details, cost_details, metadata = to_langfuse(usage, breakdown)
    return Enrichment(usage, breakdown, usage_details, cost_details, metadata)


def is_openrouter_url(url: Any) -> bool:
    """Whether `url` is OpenRouter's API: openrouter.ai, or the `OPENROUTER_API_BASE` configured."""
    if not isinstance(url, str) or not url:
        return False
    normalized = url.rstrip("/")
    if "openrouter.ai" in normalized:
        return True
    configured = (os.environ.get("OPENROUTER_API_BASE") or DEFAULT_API_BASE).rstrip("/")
    return normalized == configured or normalized.startswith(configured + "/")


def has_openrouter_markers(usage: OpenRouterUsage) -> bool:
    """Whether a response carries what only OpenRouter sends: a cost, BYOK flag or `gen-` id."""
    if usage.cost is not None or usage.is_byok is not None:
        return True
    return bool(usage.generation_id and usage.generation_id.startswith("gen-"))


def record_savings_score(
    langfuse: Any, enrichment: Enrichment, *, trace_id: str, observation_id: str
) -> None:
    """Record the call's cache savings as a numeric Langfuse score, when they are known."""
    savings = enrichment.breakdown.cache_savings
    if savings is None:
        return
    langfuse.create_score(
        name=SAVINGS_SCORE_NAME,
        value=float(savings),
        trace_id=trace_id,
        observation_id=observation_id,
        data_type="NUMERIC",
    )
    logger.debug("recorded %s=%s on %s", SAVINGS_SCORE_NAME, savings, observation_id)
