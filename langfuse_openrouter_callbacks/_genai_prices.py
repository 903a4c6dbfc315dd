"""Offline fallback prices: genai-prices' `openrouter` data, converted to `ModelPricing`."""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from collections.abc import Callable
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
_importing = threading.local()  # set on the thread importing the data, while it does


def ready() -> bool:
    """Whether `load()` has run (the data is in memory, or known to be unavailable). Never blocks."""
    return _provider is not None or _unavailable


def load() -> None:
    """Load genai-prices' OpenRouter data (a background thread's job: tens to hundreds of ms).

    It is imported without running `genai_prices/__init__.py` (see `_data_snapshot`), so no thread
    but the program's own ever imports httpx2, which the openai SDK reads half-imported otherwise.
    """
    global _provider, _unavailable
    if ready():
        return
    with _lock:
        if ready():
            return
        try:
            snapshot = _data_snapshot().get_snapshot()
            _provider = next(p for p in snapshot.providers if p.id == "openrouter")
        except Exception as exc:
            _unavailable = True
            logger.warning("genai-prices' OpenRouter data is unavailable (%s): no offline prices", exc)


def _data_snapshot() -> Any:
    """`genai_prices.data_snapshot`, imported without importing `genai_prices.update_prices` and httpx2.

    `genai_prices/__init__.py` imports httpx2, and the openai SDK reads `sys.modules["httpx2"]` each
    time it builds a request: imported on a background thread, a half-imported httpx2 breaks the
    program's LLM calls ("partially initialized module 'httpx2' has no attribute 'Client'"). So unless
    the program imported genai-prices itself, the package module is made from its spec with its
    `__init__` deferred: the submodules we need (`types`, `data_snapshot`, `data`) import as usual, and
    the first access to any other name (`genai_prices.calc_price`, a later `from genai_prices import
    ...` by the program) runs the real `__init__` on that thread, as a plain import would have.
    """
    if "genai_prices" not in sys.modules:
        spec = importlib.util.find_spec("genai_prices")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
            raise ImportError("genai-prices is not installed")
        package = importlib.util.module_from_spec(spec)
        package.__dict__["__getattr__"] = _deferred_init(package, spec.loader)
        sys.modules.setdefault("genai_prices", package)  # one already there (imported meanwhile) wins
    _importing.active = True  # the import system's own `hasattr(package, submodule)` must not run it
    try:
        return importlib.import_module("genai_prices.data_snapshot")
    finally:
        _importing.active = False


def _deferred_init(package: types.ModuleType, loader: Any) -> Callable[[str], Any]:
    init_lock = threading.RLock()

    def __getattr__(name: str) -> Any:
        if getattr(_importing, "active", False):
            raise AttributeError(name)  # a submodule not imported yet: the import system imports it
        with init_lock:
            if package.__dict__.get("__getattr__") is __getattr__:
                del package.__dict__["__getattr__"]
                exec(loader.get_code(package.__name__), package.__dict__)  # the package's own __init__
        return object.__getattribute__(package, name)

    return __getattr__


def _openrouter_provider() -> Any:
    """The OpenRouter provider's data once `load()` has run, else None (never loads, never blocks)."""
    return _provider


def canonical_id(model: str) -> str | None:
    """genai-prices' id for `model`, which also matches OpenRouter's dated ids; None if unknown or
    not loaded yet."""
    provider = _openrouter_provider()
    if provider is None:
        return None
    info = provider.find_model(model)
    return None if info is None else str(info.id)


def pricing_for(model: str, at: datetime | None = None) -> ModelPricing | None:
    """`model`'s genai-prices OpenRouter prices in force at `at` (default now), or None (also when
    not loaded yet)."""
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
