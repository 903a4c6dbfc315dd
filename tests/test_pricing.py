"""`ModelPricing` from OpenRouter pricing objects: every key, exact Decimals, garbage rejected."""

from __future__ import annotations

from decimal import Decimal

import pytest

from langfuse_openrouter_callbacks import ModelPricing, PricingError
from langfuse_openrouter_callbacks.pricing import PRICE_KEYS

EVERY_KEY = {
    "prompt": "0.000003",
    "completion": "0.000015",
    "request": "0.0001",
    "image": "0.0048",
    "image_token": "0.000003",
    "image_output": "0.00003",
    "web_search": "0.01",
    "internal_reasoning": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
    "input_cache_write_1h": "0.000006",
    "audio": "0.000004",
    "audio_output": "0.00001",
    "input_audio_cache": "0.0000004",
    "discount": 0.1,
    "overrides": [
        {"min_prompt_tokens": 200000, "prompt": "0.000006"},
        {"utc_start": 1630, "utc_end": 30, "completion": "0.0000075"},
    ],
}


def test_every_key_is_read_as_an_exact_decimal() -> None:
    p = ModelPricing.from_openrouter(EVERY_KEY)
    for key in PRICE_KEYS:
        assert getattr(p, key) == Decimal(EVERY_KEY[key]), key
        assert isinstance(getattr(p, key), Decimal)
    assert p.discount == Decimal("0.1")
    assert p.overrides[0].min_prompt_tokens == 200000
    assert p.overrides[0].prices == {"prompt": Decimal("0.000006")}
    assert (p.overrides[1].utc_start, p.overrides[1].utc_end) == (1630, 30)
    assert ModelPricing.from_openrouter(p.to_openrouter()) == p


def test_absent_keys_are_none_and_unknown_keys_ignored() -> None:
    p = ModelPricing.from_openrouter({"prompt": "0", "completion": "0", "future_key": "1"})
    assert p.is_priced and p.input_cache_read is None and p.discount == 0


def test_reads_the_openrouter_sdk_pricing_model() -> None:
    from openrouter.components.publicpricing import PublicPricing

    sdk = PublicPricing.model_validate(
        {"prompt": "0.000001", "completion": "0.000002", "input_cache_read": "1e-7"}
    )
    p = ModelPricing.from_openrouter(sdk)
    assert p.input_cache_read == Decimal("1e-7")


@pytest.mark.parametrize(
    "bad",
    ["NaN", "-1", "1e999", "abc", "Infinity", True, [1], {"x": 1}, "-0.000001", "sNaN"],
)
def test_garbage_prices_are_rejected_with_a_clear_error(bad: object) -> None:
    with pytest.raises(PricingError, match="'prompt'"):
        ModelPricing.from_openrouter({"prompt": bad, "completion": "0.000001"})


@pytest.mark.parametrize(
    "override",
    [
        {"min_prompt_tokens": -1, "prompt": "1e-6"},
        {"utc_start": 2500, "prompt": "1e-6"},
        {"utc_end": 1275, "prompt": "1e-6"},
        {"utc_start": "noon"},
        {"prompt": "NaN"},
    ],
)
def test_garbage_overrides_are_rejected(override: dict) -> None:
    with pytest.raises(PricingError):
        ModelPricing.from_openrouter({"prompt": "1e-6", "completion": "1e-6", "overrides": [override]})


@pytest.mark.parametrize("discount", [1.5, -0.1, "x"])
def test_a_discount_outside_zero_to_one_is_rejected(discount: object) -> None:
    with pytest.raises(PricingError):
        ModelPricing.from_openrouter({"prompt": "1e-6", "completion": "1e-6", "discount": discount})


def test_constructor_validates_too() -> None:
    assert ModelPricing(prompt="0.000001").prompt == Decimal("0.000001")  # type: ignore[arg-type]
    with pytest.raises(PricingError):
        ModelPricing(prompt="NaN")  # type: ignore[arg-type]
