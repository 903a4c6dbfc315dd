"""The real OpenRouter data the tests run on, kept in the repository (`tests/data/`), loaded once."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


@cache
def cost_cases() -> list[dict[str, Any]]:
    """Real OpenRouter usages with the prices in force and the cost OpenRouter reported."""
    return json.loads((DATA / "openrouter_cost_cases.json").read_text())["cases"]


@cache
def recorded_exchanges() -> list[dict[str, Any]]:
    """Real recorded OpenRouter exchanges: request body and JSON or SSE response."""
    return json.loads((DATA / "openrouter_recorded_exchanges.json").read_text())


@cache
def shape_cases() -> dict[str, dict[str, Any]]:
    """Real usage in the shapes of issue 13 (Responses API, Gemini's overlap, BYOK), by id, with sources."""
    cases = json.loads((DATA / "openrouter_shape_cases.json").read_text())["cases"]
    return {case["id"]: case for case in cases}
