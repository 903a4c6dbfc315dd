"""Offline fallback prices: genai-prices' `openrouter` data, converted to `ModelPricing`."""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from ._log import logger
from .pricing import PRICE_KEYS, ModelPricing, PriceOverride

SOURCE = "genai-prices"

# genai-prices price field -> (OpenRouter pricing key, units per genai-prices price)
_FIELDS: dict[str, tuple[str, int]] = {
    "input_mtok": ("prompt", 1_000_000),
    "output_mtok": ("completion", 1_000_000),
    "cache_read_mtok": ("input_cache_read", 1_000_000),
    "cache_write_mtok": ("input_cache_write", 1_000_000),
    "cache_write_1h_mtok": ("input_cache_write_1h", 1_000_000),
    "input_audio_mtok": ("audio", 1_000_000),
    "output_audio_mtok": ("audio_output", 1_000_000),
    "output_image_mtok": ("image_output", 1_000_000),
    "output_reasoning_mtok": ("internal_reasoning", 1_000_000),
    "requests_kcount": ("request", 1_000),
    "web_searches_kcount": ("web_search", 1_000),
}

_lock = threading.Lock()
_provider: Any = None
_unavailable = False


def import_data() -> None:
    """Import genai-prices on the calling thread.

    Never let a background thread be the first to import it: it imports `httpx2`, and the openai SDK
    reads `sys.modules["httpx2"]` when it builds a client, so a half-imported module there breaks the
    user's next LLM call ("partially initialized module 'httpx2'").
    """
    with contextlib.suppress(Exception):  # an unusable package is reported when the data is first used
        import genai_prices.data_snapshot  # noqa: F401


def _openrouter_provider() -> Any:
    global _provider, _unavailable
    if _provider is None and not _unavailable:
        with _lock:
            if _provider is None and not _unavailable:
                try:
                    from genai_prices import data_snapshot

                    snapshot = data_snapshot.get_snapshot()
                    _provider = next(p for p in snapshot.providers if p.id == "openrouter")
                except Exception as exc:
                    _unavailable = True
                    logger.warning(
                        "genai-prices' OpenRouter data is unavailable (%s): no offline prices", exc
                    )
    return _provider


def canonical_id(model: str) -> str | None:
    """genai-prices' id for `model`, which also matches OpenRouter's dated ids; None if unknown."""
    provider = _openrouter_provider()
    if provider is None:
        return None
    info = provider.find_model(model)
    return None if info is None else str(info.id)


def pricing_for(model: str, at: datetime | None = None) -> ModelPricing | None:
    """`model`'s genai-prices OpenRouter prices in force at `at` (default now), or None."""
    provider = _openrouter_provider()
    if provider is None:
        return None
    info = provider.find_model(model)
    if info is None:
        return None
    try:
        return _convert(info.prices, at or datetime.now(timezone.utc))
    except Exception as exc:  # the data is not ours: a shape we do not know means no price, not a guess
        logger.warning("genai-prices' price for %s could not be read (%s); treated as unpriced", model, exc)
        return None


def _convert(prices: Any, at: datetime) -> ModelPricing:
    if not isinstance(prices, list):
        return _model_price(prices, [])
    base: Any = None
    windows: list[PriceOverride] = []
    for conditional in prices:
        constraint = conditional.constraint
        if constraint is None or type(constraint).__name__ == "StartDateConstraint":
            if constraint is None or constraint.active(at):
                base, windows = conditional.prices, []  # the last active entry wins
        elif type(constraint).__name__ == "TimeOfDateConstraint":
            start = constraint.start_time.hour * 100 + constraint.start_time.minute
            end = constraint.end_time.hour * 100 + constraint.end_time.minute
            window = _model_price(conditional.prices, [])
            windows.append(PriceOverride(prices=_price_map(window), utc_start=start, utc_end=end))
    if base is None:
        raise ValueError("no price in force")
    return _model_price(base, windows)


def _price_map(pricing: ModelPricing) -> dict[str, Decimal]:
    return {key: value for key in PRICE_KEYS if (value := getattr(pricing, key)) is not None}


def _model_price(model_price: Any, windows: list[PriceOverride]) -> ModelPricing:
    base: dict[str, Decimal] = {}
    tiers: dict[int, dict[str, Decimal]] = {}
    for genai_field, (key, per) in _FIELDS.items():
        value = getattr(model_price, genai_field, None)
        if value is None:
            continue
        if isinstance(value, (Decimal, int)):
            base[key] = Decimal(value) / per
        else:  # TieredPrices: the tier's price applies to all tokens once the prompt exceeds its start
            base[key] = Decimal(value.base) / per
            for tier in value.tiers:
                tiers.setdefault(int(tier.start), {})[key] = Decimal(tier.price) / per
    overrides = tuple(
        PriceOverride(prices=prices, min_prompt_tokens=start) for start, prices in sorted(tiers.items())
    )
    return ModelPricing(**base, overrides=overrides + tuple(windows), source=SOURCE)
