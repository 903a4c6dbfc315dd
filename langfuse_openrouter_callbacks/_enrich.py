"""What both framework adapters do with one finished call: price it and map it to Langfuse fields."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from ._langfuse_write import set_attributes, write_generation
from ._log import log_exception_once, logger
from .catalog import DEFAULT_API_BASE, PriceCatalog
from .cost import CostBreakdown, compute_cost
from .generation_stats import GenerationStatsFetcher
from .langfuse_fields import (
    METADATA_KEY,
    SAVINGS_SCORE_NAME,
    cost_details,
    generation_attributes,
    generation_record_metadata,
    openrouter_metadata,
    otel_attributes,
    usage_details,
)
from .pricing import ModelPricing
from .usage import OpenRouterUsage


@dataclass(slots=True)
class Enrichment:
    """A call's usage and cost, and the Langfuse fields that record them.

    `reported`: what the response said, when `usage` is what a `/generation` record billed;
    `record`: that record (its fields join the metadata). A value: treat it as read-only (not frozen,
    which makes it slower to build, once per LLM call).
    """

    usage: OpenRouterUsage
    breakdown: CostBreakdown
    reported: OpenRouterUsage | None = None
    record: Mapping[str, Any] | None = None

    @property
    def usage_details(self) -> dict[str, int]:
        return usage_details(self.usage)

    @property
    def cost_details(self) -> dict[str, float]:
        return cost_details(self.breakdown)

    @property
    def metadata(self) -> dict[str, Any]:
        said = openrouter_metadata(self.reported or self.usage, self.breakdown)
        if self.record is not None:
            said.update(generation_record_metadata(self.record))
        return {METADATA_KEY: said}

    def attributes(self) -> dict[str, str]:
        """The OpenTelemetry span attributes that carry these fields to Langfuse."""
        if self.reported is None and self.record is None:  # the usual case: straight from the values
            return generation_attributes(self.usage, self.breakdown)
        return otel_attributes(self.usage_details, self.cost_details or None, self.metadata)


def enrich(
    usage: OpenRouterUsage,
    catalog: PriceCatalog,
    *,
    requested_model: str | None = None,
    at: datetime | None = None,
) -> Enrichment:
    """Price `usage` (by the model the response names, then the one requested)."""
    pricing = catalog.pricing_for((usage.model, requested_model), provider=usage.provider)
    return Enrichment(usage, compute_cost(usage, pricing, at=at))


def record_on_observation(observation: Any, enrichment: Enrichment) -> None:
    """Write the enrichment's usage, cost and metadata onto a Langfuse observation, as its `update()` would.

    Straight onto the observation's OpenTelemetry span, in the attributes Langfuse's SDK writes:
    these fields are our own numbers and ids, not user content, so Langfuse's media scan and mask
    (which would otherwise take a quarter of the time of recording a call) are not run on them.
    """
    set_attributes(observation._otel_span, enrichment.attributes())


def update_and_record(observation: Any, enrichment: Enrichment, fields: Mapping[str, Any]) -> None:
    """`observation.update(**fields)` and `record_on_observation(observation, enrichment)`.

    In one write to the span where Langfuse's steps for these fields are known (`write_generation`).
    When ours cannot be made, Langfuse's fields are still written, then the error is raised.
    """
    try:
        ours = enrichment.attributes()
    except Exception:
        observation.update(**fields)
        raise
    try:
        if write_generation(observation, fields, ours):
            return
    except Exception:  # a Langfuse that differs after all: its own update() below
        logger.debug("writing a generation's attributes in one step failed", exc_info=True)
    observation.update(**fields)
    set_attributes(observation._otel_span, ours)


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


# ---------------------------------------------------------------------------- /generation records


def enrich_with_record(
    enrichment: Enrichment,
    record: Mapping[str, Any],
    catalog: PriceCatalog,
    *,
    requested_model: str | None = None,
    at: datetime | None = None,
    price_wait: float = 0.0,
) -> Enrichment:
    """`enrichment` (from the response) reconciled with OpenRouter's `/generation` record of the call.

    The record wins for what was billed: `total_cost` (and `upstream_inference_cost`, `is_byok`) is
    the reported total the buckets add up to, and `provider_name` chooses the serving endpoint's
    prices. Token counts stay the response's (they carry cache writes, which the record lacks) unless
    the response had none, or did not say how its prompt split over the cache (LangChain's completion
    models): then the record's cache reads stand. `reported_cost` stays what the response said, the
    record's fields are added under their own names, and `reconciliation_delta` is the record's total
    minus the computed one.
    `price_wait` (seconds) lets the catalog fetch the endpoint's prices it does not hold yet.
    """
    response = enrichment.usage
    recorded = OpenRouterUsage.from_openrouter(record)
    billed = recorded if response.is_empty else response
    if not billed.cache_reported:
        cached = min(recorded.cached_tokens, billed.prompt_tokens)
        billed = replace(billed, cached_tokens=cached, cache_reported=True)
    billed = replace(
        billed,
        cost=recorded.cost if recorded.cost is not None else response.cost,
        upstream_inference_cost=(
            recorded.upstream_inference_cost
            if recorded.upstream_inference_cost is not None
            else response.upstream_inference_cost
        ),
        is_byok=recorded.is_byok if recorded.is_byok is not None else response.is_byok,
        provider=recorded.provider or response.provider,
        model=response.model or recorded.model,
        generation_id=response.generation_id or recorded.generation_id,
    )
    models = [m for m in (billed.model, requested_model) if m]
    pricing = _pricing(catalog, models, billed.provider, price_wait) if models else None
    breakdown = compute_cost(billed, pricing, at=at)
    said = replace(
        billed,
        cost=response.cost,
        upstream_inference_cost=response.upstream_inference_cost,
        upstream_inference_prompt_cost=response.upstream_inference_prompt_cost,
        upstream_inference_completions_cost=response.upstream_inference_completions_cost,
    )
    return Enrichment(billed, breakdown, reported=said, record=record)


def _pricing(
    catalog: PriceCatalog, models: list[str], provider: str | None, wait: float
) -> ModelPricing | None:
    """The serving endpoint's prices, waiting (at most `wait` s) for the catalog to fetch them."""
    pricing = catalog.pricing_for(models, provider=provider)
    if not provider or wait <= 0 or catalog.offline:
        return pricing
    deadline = time.monotonic() + wait
    for _ in range(2):  # /models first if the catalog had none, then the model's /endpoints
        source = pricing.source if pricing is not None else None
        if source is not None and (source == "override" or source.startswith("endpoint:")):
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        catalog.wait_until_idle(remaining)
        pricing = catalog.pricing_for(models, provider=provider)
    return pricing


def end_after_lookup(
    fetcher: GenerationStatsFetcher,
    observation: Any,
    enrichment: Enrichment,
    *,
    catalog: PriceCatalog,
    requested_model: str | None,
    ended_at: int,
    langfuse: Any,
    savings_score: bool,
    logged: set[str],
) -> None:
    """End `observation` at `ended_at` (ns) once the call's `/generation` record is in, or now.

    The lookup runs on the fetcher's threads; when it cannot be queued, or gives up, the generation
    ends with the response's numbers. Either way it ends exactly once, with its true end time.
    """

    def done(record: Mapping[str, Any] | None) -> None:
        final = enrichment
        try:
            if record is not None:
                final = enrich_with_record(
                    enrichment,
                    record,
                    catalog,
                    requested_model=requested_model,
                    at=datetime.fromtimestamp(ended_at / 1e9, timezone.utc),
                    price_wait=catalog.timeout,
                )
                record_on_observation(observation, final)
        except Exception:
            final = enrichment
            log_exception_once(
                logged,
                "generation-record",
                "could not record OpenRouter's /generation record on a Langfuse generation; "
                "it keeps the response's numbers",
            )
        try:
            if savings_score:
                record_savings_score(
                    langfuse, final, trace_id=observation.trace_id, observation_id=observation.id
                )
        except Exception:
            log_exception_once(logged, "savings-score", "could not record the cache savings score")
        finally:
            observation.end(end_time=ended_at)

    generation_id = enrichment.usage.generation_id
    if not (generation_id and fetcher.submit(generation_id, done)):
        done(None)
