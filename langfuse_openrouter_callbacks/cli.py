"""The `langfuse-openrouter` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cost import BUCKETS, compute_cost
from .langfuse_fields import to_langfuse
from .pricing import ModelPricing
from .usage import OpenRouterUsage

# A real-shaped OpenRouter response: Claude Sonnet 4.5 reading 9,000 of 10,000 prompt tokens from the cache.
_EXAMPLE_RESPONSE = {
    "id": "gen-1764330000-example",
    "provider": "Anthropic",
    "model": "anthropic/claude-4.5-sonnet-20250929",
    "usage": {
        "prompt_tokens": 10_000,
        "completion_tokens": 400,
        "total_tokens": 10_400,
        "cost": 0.0117,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 9_000, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost_details": {"upstream_inference_cost": 0.0117},
    },
}
_EXAMPLE_PRICING = {
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
}


def _usd(amount: object) -> str:
    return f"${amount.normalize():f}" if hasattr(amount, "normalize") else "-"


def _example() -> int:
    usage = OpenRouterUsage.from_openrouter(_EXAMPLE_RESPONSE)
    breakdown = compute_cost(usage, ModelPricing.from_openrouter(_EXAMPLE_PRICING, source="example"))
    usage_details, cost_details, metadata = to_langfuse(usage, breakdown)
    print(
        f"{usage.model} via {usage.provider}: {usage.prompt_tokens} prompt tokens "
        f"({usage.cached_tokens} read from the cache), {usage.completion_tokens} completion tokens"
    )
    for name in BUCKETS:
        value = getattr(breakdown, name)
        if value:
            print(f"  {name:<22} {_usd(value)}")
    print(f"  {'total':<22} {_usd(breakdown.total)}  ({breakdown.source})")
    print(f"  {'without the cache':<22} {_usd(breakdown.no_cache_total)}")
    ratio = breakdown.cache_hit_ratio or 0.0
    print(f"  {'cache savings':<22} {_usd(breakdown.cache_savings)}  (hit ratio {ratio:.0%})")
    print(f"Langfuse usage_details: {usage_details}")
    print(f"Langfuse cost_details:  {cost_details}")
    print(f"Langfuse metadata:      {metadata}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="langfuse-openrouter",
        description="OpenRouter prompt-cache usage, true cost and savings for Langfuse.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("example", help="print the cost breakdown of an example cached OpenRouter call")
    args = parser.parse_args(argv)
    if args.command == "example":
        return _example()
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
