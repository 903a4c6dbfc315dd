"""OpenRouter pricing objects as typed, validated `ModelPricing`, prices kept as exact `Decimal`s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["PRICE_KEYS", "ModelPricing", "PriceOverride", "PricingError"]

#: Every per-unit price key of OpenRouter's pricing object, USD per token / request / image / search.
PRICE_KEYS = (
    "prompt",
    "completion",
    "request",
    "image",
    "image_token",
    "image_output",
    "web_search",
    "internal_reasoning",
    "input_cache_read",
    "input_cache_write",
    "input_cache_write_1h",
    "audio",
    "audio_output",
    "input_audio_cache",
)

# No real unit price comes near this; a larger one is corrupt data (e.g. "1e999").
_MAX_UNIT_PRICE = Decimal(1000)


class PricingError(ValueError):
    """A pricing object that cannot be trusted: a price that is not a finite, non-negative number."""


def _price(value: Any, key: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise PricingError(
            f"price {key!r} must be a decimal string, got {type(value).__name__} {value!r:.40}"
        )
    try:
        price = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise PricingError(f"price {key!r} is not a number: {value!r:.40}") from None
    if not price.is_finite():
        raise PricingError(f"price {key!r} is not finite: {value!r:.40}")
    if price < 0:
        raise PricingError(
            f"price {key!r} is negative: {value!r:.40} (OpenRouter uses -1 for variable pricing)"
        )
    if price > _MAX_UNIT_PRICE:
        raise PricingError(f"price {key!r} is implausibly large: {value!r:.40}")
    return price + 0


def _condition(value: Any, key: str, *, clock: bool) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise PricingError(f"override condition {key!r} must be a number, got {value!r:.40}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise PricingError(f"override condition {key!r} is not a number: {value!r:.40}") from None
    if not number.is_finite() or number < 0 or number != number.to_integral_value():
        raise PricingError(f"override condition {key!r} must be a non-negative integer: {value!r:.40}")
    result = int(number)
    if clock and (result >= 2400 or result % 100 >= 60):
        raise PricingError(f"override condition {key!r} is not an HHMM clock time: {value!r:.40}")
    return result


def _items(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    if hasattr(obj, "model_dump"):  # an SDK pydantic model
        return obj.model_dump(exclude_none=True)
    raise PricingError(f"a pricing object must be a mapping, got {type(obj).__name__}")


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A conditional price entry: applies when every condition given holds.

    `min_prompt_tokens`: prompt tokens strictly greater than it. `utc_start`/`utc_end`: a half-open
    daily UTC window as HHMM clock numbers, which wraps past midnight when start > end.
    """

    prices: Mapping[str, Decimal]
    min_prompt_tokens: int | None = None
    utc_start: int | None = None
    utc_end: int | None = None

    @classmethod
    def from_openrouter(cls, obj: Any) -> PriceOverride:
        items = _items(obj)
        return cls(
            prices={k: p for k in PRICE_KEYS if k in items and (p := _price(items[k], k)) is not None},
            min_prompt_tokens=_condition(items.get("min_prompt_tokens"), "min_prompt_tokens", clock=False),
            utc_start=_condition(items.get("utc_start"), "utc_start", clock=True),
            utc_end=_condition(items.get("utc_end"), "utc_end", clock=True),
        )

    def applies(self, prompt_tokens: int, clock: int) -> bool:
        """Whether this entry applies to a call with `prompt_tokens` at UTC time `clock` (HHMM)."""
        if self.min_prompt_tokens is not None and not prompt_tokens > self.min_prompt_tokens:
            return False
        start, end = self.utc_start, self.utc_end
        if start is None and end is None:
            return True
        start = 0 if start is None else start
        end = 2400 if end is None else end
        if start <= end:
            return start <= clock < end
        return clock >= start or clock < end  # the window wraps past midnight


@dataclass(frozen=True, slots=True)
class ModelPricing:
    """One model's (or one serving endpoint's) OpenRouter prices, USD per unit, exact.

    Absent prices are `None`: cache reads and writes without a price of their own are billed at
    `prompt`. `discount` scales token prices by (1 - discount). `source` says where the prices came
    from (set by the catalog: "override", "endpoint", "models", "genai-prices").
    """

    prompt: Decimal | None = None
    completion: Decimal | None = None
    request: Decimal | None = None
    image: Decimal | None = None
    image_token: Decimal | None = None
    image_output: Decimal | None = None
    web_search: Decimal | None = None
    internal_reasoning: Decimal | None = None
    input_cache_read: Decimal | None = None
    input_cache_write: Decimal | None = None
    input_cache_write_1h: Decimal | None = None
    audio: Decimal | None = None
    audio_output: Decimal | None = None
    input_audio_cache: Decimal | None = None
    discount: Decimal = Decimal(0)
    overrides: tuple[PriceOverride, ...] = ()
    source: str | None = field(default=None, compare=False)
    # Derived once, for `compute_cost`: cache reads and writes priced at `prompt` when not priced
    # themselves, and whether any audio or image price needs its own term.
    _cache_read_price: Decimal | None = field(default=None, init=False, repr=False, compare=False)
    _cache_write_price: Decimal | None = field(default=None, init=False, repr=False, compare=False)
    _has_media_prices: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in PRICE_KEYS:
            value = getattr(self, key)
            if value is not None and not isinstance(value, Decimal):
                object.__setattr__(self, key, _price(value, key))
        discount = self.discount
        if not isinstance(discount, Decimal):
            discount = _price(discount, "discount") or Decimal(0)
            object.__setattr__(self, "discount", discount)
        if not (0 <= discount <= 1):
            raise PricingError(f"discount must be between 0 and 1, got {discount}")
        read, write = self.input_cache_read, self.input_cache_write
        object.__setattr__(self, "_cache_read_price", self.prompt if read is None else read)
        object.__setattr__(self, "_cache_write_price", self.prompt if write is None else write)
        media = (self.audio, self.image_output, self.audio_output)
        object.__setattr__(self, "_has_media_prices", any(price is not None for price in media))

    @classmethod
    def from_openrouter(cls, obj: Any, *, source: str | None = None) -> ModelPricing:
        """Build from an OpenRouter pricing object (`/models` or one `/endpoints` entry).

        Unknown keys are ignored; a bad price raises `PricingError` naming the key.
        """
        if isinstance(obj, ModelPricing):
            return obj if source is None else replace(obj, source=source)
        items = _items(obj)
        overrides = items.get("overrides") or ()
        if not isinstance(overrides, (list, tuple)):
            raise PricingError(f"overrides must be a list, got {type(overrides).__name__}")
        discount = items.get("discount")
        return cls(
            **{k: _price(items.get(k), k) for k in PRICE_KEYS},
            discount=Decimal(0) if discount is None else _price(discount, "discount") or Decimal(0),
            overrides=tuple(PriceOverride.from_openrouter(o) for o in overrides),
            source=source,
        )

    def to_openrouter(self) -> dict[str, Any]:
        """The pricing object in OpenRouter's JSON shape (prices as strings)."""
        out: dict[str, Any] = {k: str(v) for k in PRICE_KEYS if (v := getattr(self, k)) is not None}
        if self.discount:
            out["discount"] = float(self.discount)
        if self.overrides:
            out["overrides"] = [
                {
                    **{k: str(v) for k, v in o.prices.items()},
                    **{
                        k: v
                        for k in ("min_prompt_tokens", "utc_start", "utc_end")
                        if (v := getattr(o, k)) is not None
                    },
                }
                for o in self.overrides
            ]
        return out

    @property
    def is_priced(self) -> bool:
        """True when the prompt and completion prices are known."""
        return self.prompt is not None and self.completion is not None

    def effective(self, prompt_tokens: int = 0, at: datetime | None = None) -> ModelPricing:
        """The prices in force for a call of `prompt_tokens` at `at` (UTC; default now), overrides applied.

        Itself when no override applies (the clock is read only when an override has a time window).
        """
        if not self.overrides:
            return self
        clock = 0
        if any(o.utc_start is not None or o.utc_end is not None for o in self.overrides):
            when = at or datetime.now(timezone.utc)
            if when.tzinfo is not None:
                when = when.astimezone(timezone.utc)
            clock = when.hour * 100 + when.minute
        merged: dict[str, Decimal] = {}
        for override in self.overrides:
            if override.applies(prompt_tokens, clock):
                merged.update(override.prices)  # later entries win per key
        return replace(self, overrides=(), **merged) if merged else self
