"""OpenRouter's billing, exactly: `compute_cost(usage, pricing) -> CostBreakdown`.

    uncached = prompt_tokens - cached_tokens - cache_write_tokens
               (reads and writes that overlap, cached + writes > prompt: prompt - max(cached, writes))
    tokens   = uncached * prompt + cached * input_cache_read + writes * input_cache_write
             + completion_tokens * completion           (reasoning is inside completion)
    total    = tokens * (1 - discount) + request + server_tools
    server_tools = cost_details.server_tool_cost if reported, else web_search_requests * web_search

When OpenRouter reported what it charged, that figure is the total (BYOK: the provider's charge plus
OpenRouter's fee): a surplus over the computed buckets is a fee (`other`), a shortfall scales the
buckets down (an endpoint discount the price list did not show), and `reconciliation_delta` says by how much.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from .pricing import ModelPricing
from .usage import OpenRouterUsage

__all__ = ["BUCKETS", "CostBreakdown", "compute_cost"]

#: The exclusive cost buckets of a `CostBreakdown`, in display order.
BUCKETS = (
    "input",
    "input_cache_read",
    "input_cache_creation",
    "output",
    "output_reasoning",
    "request",
    "server_tools",
    "other",
)

CostSource = Literal["openrouter", "computed", "uncached_estimate", "unpriced"]

_ZERO = Decimal(0)
# Products of token counts (up to 1e9) and prices (up to ~18 significant digits) stay exact at 28 digits,
# the default; a thread whose context has less precision gets this one.
_MIN_PRECISION = 28
_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)
# Amounts that come from a division (scaling to a reported total) are rounded to this, far below
# any billing unit, so they stay exact to add in the default 28-digit context.
_QUANTUM = Decimal("1e-18")


@dataclass(slots=True)
class CostBreakdown:
    """What a call cost, split into exclusive `Decimal` buckets that sum exactly to `total` (USD).

    `source`: "openrouter" when OpenRouter's reported charge is the total, "computed" when the total
    comes from prices alone, "uncached_estimate" when it does and the response did not say how the
    prompt split over the cache (priced as if uncached: an upper bound), "unpriced" when neither was
    available (all buckets zero, not a guess). `server_tools`: web searches and other server-side
    tools. `no_cache_total`/`cache_savings` compare with the same call at the plain prompt price
    (savings are negative when cache writes cost more than reads saved); `None` when prices or the
    cache split are unknown, as is `cache_hit_ratio` without the split.
    A value: treat it as read-only (it is not frozen only because that makes it 3x slower to build).
    """

    input: Decimal = _ZERO
    input_cache_read: Decimal = _ZERO
    input_cache_creation: Decimal = _ZERO
    output: Decimal = _ZERO
    output_reasoning: Decimal = _ZERO
    request: Decimal = _ZERO
    server_tools: Decimal = _ZERO
    other: Decimal = _ZERO
    total: Decimal = _ZERO
    computed_total: Decimal | None = None
    reported_total: Decimal | None = None
    no_cache_total: Decimal | None = None
    cache_savings: Decimal | None = None
    cache_hit_ratio: float | None = None
    source: CostSource = "unpriced"
    pricing_source: str | None = None
    reconciliation_delta: Decimal | None = None

    @property
    def is_priced(self) -> bool:
        """False for an "unpriced" breakdown, whose zeros are not a cost."""
        return self.source != "unpriced"

    def buckets(self) -> dict[str, Decimal]:
        """The exclusive buckets by name, zero ones included."""
        return {name: getattr(self, name) for name in BUCKETS}


def _usage(usage: OpenRouterUsage | Mapping[str, Any] | Any) -> OpenRouterUsage:
    return usage if isinstance(usage, OpenRouterUsage) else OpenRouterUsage.from_openrouter(usage)


def _scaled(buckets: dict[str, Decimal], target: Decimal) -> dict[str, Decimal]:
    """The buckets scaled to sum exactly to `target`, the rounding residue on the largest one."""
    current = sum(buckets.values(), _ZERO)
    if current == 0:
        return {**buckets, "other": buckets.get("other", _ZERO) + target}
    scaled = {k: (v * target / current).quantize(_QUANTUM) for k, v in buckets.items()}
    largest = max(scaled, key=scaled.__getitem__)
    scaled[largest] += target - sum(scaled.values(), _ZERO)
    return scaled


def _reported_total(usage: OpenRouterUsage) -> Decimal | None:
    """What the call cost the user, as OpenRouter reported it; None when it cannot be known."""
    if usage.cost is None:
        return None
    if usage.is_byok:
        if usage.upstream_inference_cost is None:
            return None  # only the fee is known; the provider's charge has to be computed
        return usage.upstream_inference_cost + usage.cost
    return usage.cost


def compute_cost(
    usage: OpenRouterUsage | Mapping[str, Any] | Any,
    pricing: ModelPricing | Mapping[str, Any] | None,
    *,
    at: datetime | None = None,
) -> CostBreakdown:
    """Cost of one OpenRouter call, split into exclusive buckets that sum exactly to `total`.

    `usage` is an `OpenRouterUsage` or anything `OpenRouterUsage.from_openrouter` reads;
    `pricing` a `ModelPricing`, an OpenRouter pricing mapping, or None when the model is unpriced.
    `at` (UTC, default now) selects time-window price overrides.
    """
    u = usage if type(usage) is OpenRouterUsage else _usage(usage)
    if pricing is not None and type(pricing) is not ModelPricing:
        pricing = ModelPricing.from_openrouter(pricing)
    context = decimal.getcontext()
    if context.prec < _MIN_PRECISION or context.rounding != decimal.ROUND_HALF_EVEN:
        with decimal.localcontext(_CONTEXT):  # the default context is exact enough (the hot path)
            return compute_cost(u, pricing, at=at)
    prompt_tokens, cached, writes = u.prompt_tokens, u.cached_tokens, u.cache_write_tokens
    hit_ratio = cached / prompt_tokens if prompt_tokens and u.cache_reported else None
    reported = u.cost if u.cost is None or not u.is_byok else _reported_total(u)
    if pricing is None or pricing.prompt is None or pricing.completion is None:
        return _unpriced(u, reported, hit_ratio, pricing)

    p = pricing.effective(prompt_tokens, at) if pricing.overrides else pricing
    prompt_price, completion_price = p.prompt, p.completion
    assert prompt_price is not None and completion_price is not None  # overrides only add prices
    uncached = prompt_tokens - cached - writes
    if uncached < 0:  # reads and writes overlap (Gemini): see `OpenRouterUsage.uncached_prompt_tokens`
        uncached = u.uncached_prompt_tokens
    reasoning_tokens = u.reasoning_tokens

    input_cost = uncached * prompt_price
    text_out = u.completion_tokens - reasoning_tokens
    output_cost = None
    if p._has_media_prices:  # audio input, image and audio output at their own prices
        if p.audio is not None and u.prompt_audio_tokens:
            input_cost += min(u.prompt_audio_tokens, uncached) * (p.audio - prompt_price)
        if p.image_output is not None and u.completion_image_tokens:
            text_out -= u.completion_image_tokens
            output_cost = u.completion_image_tokens * p.image_output
        if p.audio_output is not None and u.completion_audio_tokens:
            text_out -= u.completion_audio_tokens
            audio_out = u.completion_audio_tokens * p.audio_output
            output_cost = audio_out if output_cost is None else output_cost + audio_out
    text_cost = (text_out if text_out > 0 else 0) * completion_price
    output_cost = text_cost if output_cost is None else output_cost + text_cost
    cache_read = cached * p._cache_read_price
    cache_creation = writes * p._cache_write_price
    reasoning = reasoning_tokens * completion_price
    no_cache_cache_part = (prompt_tokens - uncached) * prompt_price
    if p.discount:  # token prices scaled by (1 - discount); the usual zero skips the multiplications
        keep = 1 - p.discount
        input_cost, output_cost = input_cost * keep, output_cost * keep
        cache_read, cache_creation, reasoning = cache_read * keep, cache_creation * keep, reasoning * keep
        no_cache_cache_part *= keep
    computed = input_cost + cache_read + cache_creation + output_cost + reasoning
    request = p.request or _ZERO
    if request:
        computed += request
    server_tools = u.server_tool_cost
    if server_tools is None:
        server_tools = _ZERO
        if p.web_search is not None and u.web_search_requests:
            server_tools = u.web_search_requests * p.web_search
    if server_tools:
        computed += server_tools

    other = _ZERO
    delta = None
    if reported is not None:
        delta = reported - computed
        if delta >= _ZERO:
            other = delta
        else:  # OpenRouter charged less than list prices say: an endpoint discount or a stale price
            # a server tool cost OpenRouter reported is what it charged: the rest is scaled
            fixed = server_tools if u.server_tool_cost is not None and server_tools <= reported else _ZERO
            scalable = {
                "input": input_cost,
                "input_cache_read": cache_read,
                "input_cache_creation": cache_creation,
                "output": output_cost,
                "output_reasoning": reasoning,
                "request": request,
            }
            if not fixed:
                scalable["server_tools"] = server_tools
            scaled = _scaled(scalable, reported - fixed)
            input_cost, cache_read, cache_creation = (
                scaled["input"],
                scaled["input_cache_read"],
                scaled["input_cache_creation"],
            )
            output_cost, reasoning = scaled["output"], scaled["output_reasoning"]
            request, server_tools = scaled["request"], scaled.get("server_tools", fixed)
            scale = (reported - fixed) / (computed - fixed)  # computed > reported >= fixed
            no_cache_cache_part = (no_cache_cache_part * scale).quantize(_QUANTUM)
        total = reported  # exact by construction
    else:
        if u.is_byok and u.cost is not None:
            other = u.cost  # BYOK fee on top of the computed provider charge
        total = computed + other

    if u.cache_reported:
        savings = no_cache_cache_part - cache_read - cache_creation  # the cached tokens at `prompt`
        no_cache_total = total + savings
    else:  # nothing known of the cache: nothing known of what it saved
        savings = no_cache_total = None
    return CostBreakdown(  # positional, in field order: this runs once per LLM call
        input_cost,
        cache_read,
        cache_creation,
        output_cost,
        reasoning,
        request,
        server_tools,
        other,
        total,
        computed,
        reported,
        no_cache_total,
        savings,
        hit_ratio,
        "openrouter" if reported is not None else "computed" if u.cache_reported else "uncached_estimate",
        p.source,
        delta,
    )


def _unpriced(
    u: OpenRouterUsage,
    reported: Decimal | None,
    hit_ratio: float | None,
    pricing: ModelPricing | None,
) -> CostBreakdown:
    """No usable prices: OpenRouter's figure if it gave one, split as its upstream details allow."""
    pricing_source = pricing.source if pricing is not None else None
    if reported is None:  # includes BYOK with only the fee known: the provider's charge is not
        return CostBreakdown(cache_hit_ratio=hit_ratio, source="unpriced", pricing_source=pricing_source)
    split = {"input": _ZERO, "output": _ZERO, "server_tools": u.server_tool_cost or _ZERO, "other": _ZERO}
    prompt_part, completion_part = u.upstream_inference_prompt_cost, u.upstream_inference_completions_cost
    if prompt_part is not None and completion_part is not None:
        split["input"], split["output"] = prompt_part, completion_part
    known = sum(split.values(), _ZERO)
    if known <= reported:
        split["other"] = reported - known
    else:
        split = _scaled(split, reported)
    return CostBreakdown(
        **split,
        total=reported,
        reported_total=reported,
        cache_hit_ratio=hit_ratio,
        source="openrouter",
        pricing_source=pricing_source,
    )
