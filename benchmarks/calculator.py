"""Benchmark 2, the calculator: `compute_cost` against `genai_prices.calc_price`, and the usage readers.

The same call (Claude Sonnet 4.5 through OpenRouter, cache reads and writes, reasoning) priced by both:
`compute_cost(OpenRouterUsage, ModelPricing)` and `calc_price(Usage(...), model, provider_id="openrouter")`,
interleaved round by round. Also `OpenRouterUsage.from_openrouter` on OpenRouter's raw JSON (a dict) and
on the openai SDK's `ChatCompletion`, `to_langfuse`, and the whole chain a handler runs per call.

    python -m benchmarks.calculator [--quick]
"""

from __future__ import annotations

import warnings
from decimal import Decimal

from ._common import (
    Row,
    Stats,
    interleaved,
    per_call_us,
    print_table,
    quick_main,
    ratios,
    scratch,
)
from ._fixtures import (
    MODEL,
    SONNET_PRICING,
    chat_completion,
    endpoint_entries,
    synthetic_models,
    write_price_cache,
)

NAME = "2. calculator"
TARGET_SPEEDUP = 10.0
TARGET_US = 10.0
CALL = 6  # the call number whose usage is priced (reads, writes and reasoning)


def run(quick: bool) -> list[Row]:
    from genai_prices import Usage, calc_price
    from openai.types.chat import ChatCompletion

    from langfuse_openrouter_callbacks import ModelPricing, OpenRouterUsage, compute_cost, to_langfuse
    from langfuse_openrouter_callbacks._enrich import enrich
    from langfuse_openrouter_callbacks._genai_prices import pricing_for as genai_pricing_for
    from langfuse_openrouter_callbacks.catalog import PriceCatalog

    rounds, calls = (11, 1500) if quick else (41, 5000)
    body = chat_completion(CALL)
    raw_usage = body["usage"]
    sdk_response = ChatCompletion.model_validate(body)

    usage = OpenRouterUsage.from_openrouter(body)
    tokens_only = OpenRouterUsage(  # the same tokens without OpenRouter's charge: the cost is computed
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        model=usage.model,
    )
    pricing = ModelPricing.from_openrouter(SONNET_PRICING, source="models")
    tiered = genai_pricing_for(MODEL)  # genai-prices' data as the catalog's fallback: tiers as overrides
    assert tiered is not None and tiered.overrides, "genai-prices has tiered prices for Claude Sonnet 4.5"
    genai_usage = Usage(
        input_tokens=usage.prompt_tokens,  # genai-prices counts input inclusively, as OpenRouter does
        cache_read_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.completion_tokens,
    )
    # The catalog as the handlers have it: OpenRouter's /models (1,000 models) from a fresh disk cache.
    api_base = "http://127.0.0.1:9/api/v1"  # never contacted: the cache is fresh
    cache_dir = scratch("calculator-")
    write_price_cache(cache_dir, api_base, synthetic_models(1000), endpoints={MODEL: endpoint_entries()})
    catalog = PriceCatalog(api_base=api_base, cache_dir=cache_dir)
    assert catalog.pricing_for(MODEL) is not None
    breakdown = compute_cost(usage, pricing)

    ours = compute_cost(tokens_only, pricing)
    theirs = calc_price(genai_usage, MODEL, provider_id="openrouter")
    agree = ours.total == theirs.total_price == Decimal(str(raw_usage["cost"]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = interleaved(
            {
                "compute_cost": per_call_us(lambda: compute_cost(tokens_only, pricing), calls),
                "lookup+cost": per_call_us(
                    lambda: compute_cost(tokens_only, catalog.pricing_for(MODEL)), calls
                ),
                "calc_price": per_call_us(
                    lambda: calc_price(genai_usage, MODEL, provider_id="openrouter"), calls // 5
                ),
            },
            rounds,
        )
        extra = interleaved(
            {
                "reported": per_call_us(lambda: compute_cost(usage, pricing), calls),
                "tiered": per_call_us(lambda: compute_cost(tokens_only, tiered), calls),
                "from_openrouter usage": per_call_us(
                    lambda: OpenRouterUsage.from_openrouter(raw_usage), calls
                ),
                "from_openrouter body": per_call_us(lambda: OpenRouterUsage.from_openrouter(body), calls),
                "from_openrouter sdk": per_call_us(
                    lambda: OpenRouterUsage.from_openrouter(sdk_response), calls
                ),
                "to_langfuse": per_call_us(lambda: to_langfuse(usage, breakdown), calls),
                "enrich": per_call_us(lambda: enrich(usage, catalog, requested_model=MODEL), calls),
            },
            max(5, rounds // 3),
        )

    ours_s, theirs_s = Stats.of(times["compute_cost"]), Stats.of(times["calc_price"])
    speedup = Stats.of(ratios(times["calc_price"], times["compute_cost"]))
    lookup = Stats.of(times["lookup+cost"])
    lookup_speedup = Stats.of(ratios(times["calc_price"], times["lookup+cost"]))
    e = {k: Stats.of(v) for k, v in extra.items()}
    rows = [
        Row(
            NAME,
            "speed-up calc_price / compute_cost",
            speedup.fmt("x", 1),
            f">= {TARGET_SPEEDUP:g}x",
            speedup.median >= TARGET_SPEEDUP,
            speedup.median,
        ),
        Row(
            NAME,
            "compute_cost (cache reads + writes + reasoning)",
            ours_s.fmt("µs"),
            f"<= {TARGET_US:g} µs",
            ours_s.median <= TARGET_US,
            ours_s.median,
        ),
        Row(
            NAME,
            "genai_prices.calc_price (same usage, provider openrouter)",
            theirs_s.fmt("µs"),
            number=theirs_s.median,
        ),
        Row(
            NAME,
            "same total (ours, genai-prices, OpenRouter's reported cost)",
            f"{ours.total} / {theirs.total_price} / {raw_usage['cost']}",
            "equal",
            agree,
        ),
        Row(
            NAME,
            "compute_cost with OpenRouter's reported cost (reconciled)",
            e["reported"].fmt("µs"),
            number=e["reported"].median,
        ),
        Row(
            NAME,
            "compute_cost on genai-prices' tiered price (overrides)",
            e["tiered"].fmt("µs"),
            number=e["tiered"].median,
        ),
        Row(
            NAME,
            "pricing_for + compute_cost (vs calc_price, which looks up too)",
            lookup.fmt("µs"),
            number=lookup.median,
        ),
        Row(
            NAME,
            "  speed-up calc_price / (pricing_for + compute_cost)",
            lookup_speedup.fmt("x", 1),
            number=lookup_speedup.median,
        ),
        Row(
            NAME,
            "OpenRouterUsage.from_openrouter(raw usage dict)",
            e["from_openrouter usage"].fmt("µs"),
            number=e["from_openrouter usage"].median,
        ),
        Row(
            NAME,
            "OpenRouterUsage.from_openrouter(whole response dict)",
            e["from_openrouter body"].fmt("µs"),
            number=e["from_openrouter body"].median,
        ),
        Row(
            NAME,
            "OpenRouterUsage.from_openrouter(openai ChatCompletion)",
            e["from_openrouter sdk"].fmt("µs"),
            number=e["from_openrouter sdk"].median,
        ),
        Row(
            NAME, "to_langfuse(usage, breakdown)", e["to_langfuse"].fmt("µs"), number=e["to_langfuse"].median
        ),
        Row(
            NAME,
            "enrich = pricing_for + compute_cost (what a handler adds after reading)",
            e["enrich"].fmt("µs"),
            number=e["enrich"].median,
        ),
    ]
    print_table(
        f"{NAME} ({rounds} rounds, {calls} calls per block, interleaved)",
        rows,
        ["µs per call; the speed-up is per round (calc_price time / compute_cost time of the same round)."],
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
