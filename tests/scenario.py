"""The call most handler tests make: Claude Sonnet 4.5 through OpenRouter, reading and writing the cache."""

from __future__ import annotations

from typing import Any

from langfuse_openrouter_callbacks import PriceCatalog
from tests.support.openrouter_server import ResponseSpec, Usage

REQUESTED = "anthropic/claude-sonnet-4.5"  # the id users ask for
DATED = "anthropic/claude-4.5-sonnet-20250929"  # the id OpenRouter answers with
SONNET = {  # its OpenRouter prices
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
}
CACHED_CALL = Usage(
    prompt_tokens=10_000,
    completion_tokens=500,
    cached_tokens=6_000,
    cache_write_tokens=3_000,
    reasoning_tokens=200,
    cost=0.0241,
)
# What Langfuse must receive for it: exclusive buckets summing to the total.
EXPECTED_USAGE = {
    "input": 1_000,
    "input_cache_read": 6_000,
    "input_cache_creation": 3_000,
    "output": 300,
    "output_reasoning": 200,
    "total": 10_500,
}
# The environment that switches the demo and notebooks to real services: tests run without it.
SERVICE_VARIABLES = (
    "OPENROUTER_API_KEY",
    "OPENROUTER_API_BASE",
    "LANGFUSE_PUBLIC_KEY",
    "LANGFUSE_SECRET_KEY",
    "LANGFUSE_BASE_URL",
    "LANGFUSE_HOST",
)


class BrokenCatalog(PriceCatalog):
    """A price catalog that fails on every lookup: the enrichment must fail without the user noticing."""

    def pricing_for(self, model: Any, provider: str | None = None, **kwargs: Any) -> Any:
        raise RuntimeError("price list exploded")


# An OpenAI-compatible API that is not OpenRouter: no cost, no BYOK flag, no gen- id, no provider.
ANOTHER_PROVIDER = ResponseSpec(
    model="gpt-4o-mini-2024-07-18",
    provider=None,
    generation_id="chatcmpl-abc123",
    usage=Usage(prompt_tokens=50, completion_tokens=5, cached_tokens=20, cost=None, is_byok=None),
)
