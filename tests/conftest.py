"""Shared fixtures: local OpenRouter and Langfuse-compatible servers, one Langfuse client per session."""

from __future__ import annotations

import pytest

from langfuse_openrouter_callbacks import PriceCatalog
from tests.scenario import CACHED_CALL, DATED, REQUESTED, SONNET
from tests.support.openrouter_server import FakeOpenRouter, ResponseSpec

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session", autouse=True)
def offline_price_data() -> None:
    """genai-prices' data, loaded once before the tests. A program's handler loads it in the background
    while its first call is out; a test's first call to a local server can come back sooner, and would
    then be priced without it (tests/test_startup.py covers that window)."""
    catalog = PriceCatalog(offline=True)
    catalog.preload()
    assert catalog.wait_until_idle(60)


@pytest.fixture
def catalog() -> PriceCatalog:
    """Offline prices keyed by the model the user asks for; responses name the dated id."""
    return PriceCatalog({REQUESTED: SONNET}, offline=True)


@pytest.fixture
def openrouter(fake_openrouter: FakeOpenRouter) -> FakeOpenRouter:
    """The fake OpenRouter answering every call with the scenario's cached call."""
    fake_openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL))
    return fake_openrouter
