"""Data the benchmarks share: OpenRouter responses, a synthetic 1,000-model price list, Langfuse clients."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

MODEL = "anthropic/claude-sonnet-4.5"
DATED = "anthropic/claude-4.5-sonnet-20250929"
PROVIDER = "Anthropic"
SONNET_PRICING = {
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
    "input_cache_write_1h": "0.000006",
    "request": "0",
    "image": "0.0048",
    "web_search": "0",
    "internal_reasoning": "0",
}
BENCH_PUBLIC_KEY = "pk-lf-bench"
BENCH_SECRET_KEY = "sk-lf-bench"
MARKER_PREFIX = "[bench:"


# ---------------------------------------------------------------------------- OpenRouter responses


def usage_for(n: int) -> dict[str, Any]:
    """OpenRouter's `usage` for call number `n`: distinct counts per call, cache reads and writes, reasoning.

    The cost is what OpenRouter charges at Claude Sonnet 4.5's list prices (exact, then as a JSON float).
    """
    cached = (n % 4) * 1024  # 0, 1024, 2048 or 3072 tokens read from the cache
    writes = 256 + (n % 7) * 128 if n % 2 == 0 else 0  # every other call writes
    prompt = cached + writes + 800 + n
    reasoning = (n % 5) * 16
    completion = 120 + n % 300 + reasoning
    price = {k: Decimal(v) for k, v in SONNET_PRICING.items()}
    uncached = prompt - cached - writes
    prompt_cost = (
        uncached * price["prompt"] + cached * price["input_cache_read"] + writes * price["input_cache_write"]
    )
    completion_cost = completion * price["completion"]
    cost = prompt_cost + completion_cost
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": float(cost),
        "is_byok": False,
        "prompt_tokens_details": {
            "cached_tokens": cached,
            "cache_write_tokens": writes,
            "audio_tokens": 0,
            "video_tokens": 0,
        },
        "cost_details": {
            "upstream_inference_cost": float(cost),
            "upstream_inference_prompt_cost": float(prompt_cost),
            "upstream_inference_completions_cost": float(completion_cost),
        },
        "completion_tokens_details": {"reasoning_tokens": reasoning, "image_tokens": 0, "audio_tokens": 0},
    }


def generation_id(n: int) -> str:
    """OpenRouter-shaped generation id that names the call number (`gen-<time>-bench<n>...`)."""
    return f"gen-1764000000-bench{n:07d}" + hashlib.sha256(str(n).encode()).hexdigest()[:8]


def call_number(generation: str | None) -> int | None:
    """The call number a `generation_id` names, or None."""
    if not generation or "-bench" not in generation:
        return None
    return int(generation.split("-bench", 1)[1][:7])


def chat_completion(n: int, content: str = "Refunds take 5 to 7 business days.") -> dict[str, Any]:
    """A non-streamed `chat.completion` as OpenRouter answers it for Claude Sonnet 4.5."""
    return {
        "id": generation_id(n),
        "provider": PROVIDER,
        "model": DATED,
        "object": "chat.completion",
        "created": 1764000000,
        "choices": [
            {
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "end_turn",
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": None},
            }
        ],
        "system_fingerprint": None,
        "usage": usage_for(n),
    }


def chat_completion_events(n: int, content: str = "Refunds take 5 to 7 business days.") -> bytes:
    """The same answer streamed as OpenRouter streams it: SSE chunks, the usage chunk last, `[DONE]`."""
    whole = chat_completion(n, content)
    envelope = {k: whole[k] for k in ("id", "provider", "model", "created")} | {
        "object": "chat.completion.chunk"
    }

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + json.dumps({**envelope, "choices": choices, **extra}).encode() + b"\n\n"

    words = content.split(" ")
    pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    events = [
        event([{"index": 0, "delta": {"role": "assistant", "content": p}, "finish_reason": None}])
        for p in pieces
    ]
    events.append(event([{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}]))
    events.append(event([], usage=whole["usage"]))
    return b"".join(events) + b"data: [DONE]\n\n"


def marker(n: int) -> str:
    """Text in a prompt that makes the benchmark's OpenRouter answer as call number `n`."""
    return f"{MARKER_PREFIX}{n}]"


def marker_number(text: str) -> int:
    start = text.rfind(MARKER_PREFIX)
    if start < 0:
        return 0
    end = text.find("]", start)
    try:
        return int(text[start + len(MARKER_PREFIX) : end])
    except ValueError:
        return 0


# ---------------------------------------------------------------------------- price list


def synthetic_models(count: int = 1000, seed: int = 7) -> list[dict[str, Any]]:
    """A `/models` data list of `count` models shaped like OpenRouter's (id, canonical_slug, pricing).

    The first entry is Claude Sonnet 4.5 (dated slug, cache prices); the others are made-up models of
    made-up vendors, a quarter with cache prices, some `:free`, a few with overrides (tiered pricing).
    """
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = [
        {
            "id": MODEL,
            "canonical_slug": DATED,
            "name": "Anthropic: Claude Sonnet 4.5",
            "pricing": SONNET_PRICING,
        }
    ]
    i = 0
    while len(entries) < count:
        vendor = f"vendor{i % 40:02d}"
        model_id = f"{vendor}/model-{i:04d}"
        if i % 25 == 24:
            model_id += ":free"
        prompt = Decimal(rng.randint(1, 150)) / Decimal(10_000_000)
        pricing: dict[str, Any] = {
            "prompt": str(prompt),
            "completion": str(prompt * 4),
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
        }
        if i % 4 == 0:
            pricing["input_cache_read"] = str(prompt / 10)
            pricing["input_cache_write"] = str(prompt * Decimal("1.25"))
        if i % 50 == 0:
            pricing["overrides"] = [{"min_prompt_tokens": 200_000, "prompt": str(prompt * 2)}]
        entries.append(
            {
                "id": model_id,
                "canonical_slug": f"{vendor}/model-{i:04d}-2025{1 + i % 12:02d}{1 + i % 28:02d}",
                "name": f"Vendor {i % 40}: Model {i}",
                "created": 1_700_000_000 + i,
                "context_length": 128_000,
                "pricing": pricing,
            }
        )
        i += 1
    return entries


def endpoint_entries() -> list[dict[str, Any]]:
    """`/models/anthropic/claude-sonnet-4.5/endpoints`' endpoints."""
    return [
        {"name": f"{p} | {DATED}", "provider_name": p, "tag": p.lower(), "pricing": SONNET_PRICING}
        for p in ("Anthropic", "Google", "Amazon Bedrock")
    ]


def cache_folder(cache_root: str | os.PathLike[str], api_base: str) -> Path:
    """Where `PriceCatalog(api_base=..., cache_dir=cache_root)` keeps its files (see catalog.py)."""
    return Path(cache_root) / hashlib.sha256(api_base.rstrip("/").encode()).hexdigest()[:16]


def write_price_cache(
    cache_root: str | os.PathLike[str],
    api_base: str,
    models: list[dict[str, Any]],
    *,
    endpoints: dict[str, list[dict[str, Any]]] | None = None,
    fetched_at: float | None = None,
) -> Path:
    """Write the catalog's disk cache (`models.json`, `endpoints/<id>.json`) as a fresh fetch would."""
    folder = cache_folder(cache_root, api_base)
    folder.mkdir(parents=True, exist_ok=True)
    when = time.time() if fetched_at is None else fetched_at
    kept = [{k: e[k] for k in ("id", "canonical_slug", "pricing") if k in e} for e in models]
    (folder / "models.json").write_text(
        json.dumps({"format": 1, "fetched_at": when, "data": kept}, separators=(",", ":")), encoding="utf-8"
    )
    for model_id, entries in (endpoints or {}).items():
        path = folder / "endpoints" / (quote(model_id, safe="") + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": 1, "fetched_at": when, "endpoints": entries}), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------- Langfuse


def langfuse_client(base_url: str, **kwargs: Any) -> tuple[Any, Any]:
    """A real Langfuse client for `pk-lf-bench` on its own TracerProvider, exporting to `base_url`.

    Returns `(client, tracer_provider)`; handlers find the client by `public_key=BENCH_PUBLIC_KEY`.
    """
    from langfuse import Langfuse
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": "langfuse-openrouter-benchmarks"}))
    client = Langfuse(
        public_key=BENCH_PUBLIC_KEY,
        secret_key=BENCH_SECRET_KEY,
        base_url=base_url,
        tracer_provider=provider,
        **kwargs,
    )
    return client, provider


def close_langfuse(client: Any, provider: Any) -> None:
    """Flush, shut down and forget the benchmark client (so another can be made in this process)."""
    from langfuse._client.resource_manager import LangfuseResourceManager

    client.flush()
    with LangfuseResourceManager._lock:
        manager = LangfuseResourceManager._instances.pop(BENCH_PUBLIC_KEY, None)
    if manager is not None:
        manager.shutdown()
    provider.shutdown()
