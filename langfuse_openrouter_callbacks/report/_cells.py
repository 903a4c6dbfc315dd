"""Figures being summed: one `Cell` per (day, model) or group, and the rows they become."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from ..langfuse_fields import CACHE_READ_KEY, CACHE_WRITE_KEY, TOTAL_KEY
from ._model import ReportRow

__all__ = ["Cell", "Cells", "rows_of", "token_bucket"]

_ZERO = Decimal(0)


@dataclass(slots=True)
class Cell:
    calls: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    written_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = _ZERO
    savings: Decimal = _ZERO
    scored: int = 0  # calls with a savings score (metrics path)
    disagreements: int = 0

    def add_tokens(self, key: str, count: int) -> None:
        bucket = token_bucket(key)
        if bucket is not None:
            setattr(self, bucket, getattr(self, bucket) + count)


Cells = dict[tuple[date, str], Cell]

_BUCKETS: dict[str, str | None] = {}


def token_bucket(key: str) -> str | None:
    """Which column a `usage_details` key adds to: Langfuse counts every key naming input (output) as such."""
    known = _BUCKETS.get(key, "")
    if known != "":
        return known
    if key == TOTAL_KEY:
        bucket = None
    elif key == CACHE_READ_KEY:
        bucket = "cached_tokens"
    elif key == CACHE_WRITE_KEY:
        bucket = "written_tokens"
    elif "input" in key.lower():
        bucket = "input_tokens"
    elif "output" in key.lower():
        bucket = "output_tokens"
    else:
        bucket = None
    if len(_BUCKETS) < 1024:
        _BUCKETS[key] = bucket
    return bucket


def rows_of(cells: Cells, *, checked: bool) -> tuple[ReportRow, ...]:
    return tuple(
        ReportRow(
            day=day,
            model=model,
            calls=cell.calls,
            input_tokens=cell.input_tokens,
            cached_tokens=cell.cached_tokens,
            written_tokens=cell.written_tokens,
            output_tokens=cell.output_tokens,
            cost=cell.cost,
            no_cache_cost=cell.cost + cell.savings,
            savings=cell.savings,
            disagreements=cell.disagreements if checked else None,
        )
        for (day, model), cell in sorted(cells.items())
    )
