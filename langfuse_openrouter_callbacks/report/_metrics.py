"""Server-side aggregation: three metrics API v2 queries give calls, cost, tokens, savings per model, day."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from ..langfuse_fields import SAVINGS_SCORE_NAME
from ._api import LangfuseConnection, MetricsUnavailable
from ._cells import Cell, Cells
from ._model import UNKNOWN_MODEL

__all__ = ["METRICS_PATH", "from_metrics", "generations_query", "savings_query", "usage_query"]

METRICS_PATH = "/api/public/v2/metrics"
_ROW_LIMIT = 1000  # the metrics API's maximum `config.row_limit`
_GENERATION = "GENERATION"
_ZERO = Decimal(0)


def _window(start: date, end: date) -> tuple[str, str]:
    """The metrics API's inclusive `fromTimestamp`/`toTimestamp` for whole UTC days."""
    return f"{start.isoformat()}T00:00:00.000Z", f"{end.isoformat()}T23:59:59.999Z"


def equals(column: str, value: str) -> dict[str, Any]:
    return {"column": column, "operator": "=", "value": value, "type": "string"}


def _query(
    view: str, start: date, end: date, dimensions: list[str], metrics: list[tuple[str, str]], filters: list
) -> dict[str, Any]:
    from_ts, to_ts = _window(start, end)
    return {
        "view": view,
        "dimensions": [{"field": name} for name in dimensions],
        "metrics": [{"measure": measure, "aggregation": aggregation} for measure, aggregation in metrics],
        "filters": filters,
        "timeDimension": {"granularity": "day"},
        "fromTimestamp": from_ts,
        "toTimestamp": to_ts,
        # an explicit order also turns off the gap filling (WITH FILL) of time series
        "orderBy": [{"field": "time_dimension", "direction": "asc"}],
        "config": {"row_limit": _ROW_LIMIT},
    }


def generations_query(start: date, end: date, model: str | None = None) -> dict[str, Any]:
    """Metrics API query: generations and their total cost per model and day."""
    filters = [equals("type", _GENERATION)] + ([equals("providedModelName", model)] if model else [])
    metrics = [("count", "count"), ("totalCost", "sum")]
    return _query("observations", start, end, ["providedModelName"], metrics, filters)


def usage_query(start: date, end: date, model: str | None = None) -> dict[str, Any]:
    """Metrics API query: tokens per usage key (`usageType`), model and day."""
    filters = [equals("type", _GENERATION)] + ([equals("providedModelName", model)] if model else [])
    metrics = [("usageByType", "sum")]
    return _query("observations", start, end, ["providedModelName", "usageType"], metrics, filters)


def savings_query(start: date, end: date, model: str | None = None) -> dict[str, Any]:
    """Metrics API query: the savings scores, their count and sum, per observation model and day."""
    filters = [equals("name", SAVINGS_SCORE_NAME), equals("dataType", "NUMERIC")]
    if model:
        filters.append(equals("observationModelName", model))
    metrics = [("count", "count"), ("value", "sum")]
    return _query("scores-numeric", start, end, ["observationModelName"], metrics, filters)


def model_names_query(start: date, end: date) -> dict[str, Any]:
    """Metrics API query: the generations' model names over the range (for `--model` suggestions)."""
    return _query(
        "observations", start, end, ["providedModelName"], [("count", "count")], [equals("type", _GENERATION)]
    )


def metrics_rows(
    connection: LangfuseConnection, build: Callable[[date, date], dict[str, Any]], start: date, end: date
) -> list[dict[str, Any]]:
    """All rows of a query; a range whose answer may have been cut at the row limit is split in two."""
    query = json.dumps(build(start, end), separators=(",", ":"))
    answer = connection.get("metrics", METRICS_PATH, {"query": query}, metrics=True)
    rows = answer.get("data") if isinstance(answer, Mapping) else None
    if not isinstance(rows, list):
        raise MetricsUnavailable("the metrics answer has no data list")
    if len(rows) < _ROW_LIMIT:
        return [row for row in rows if isinstance(row, Mapping)]
    if start == end:
        raise MetricsUnavailable(f"more than {_ROW_LIMIT} rows for {start.isoformat()}")
    middle = start + (end - start) // 2
    return metrics_rows(connection, build, start, middle) + metrics_rows(
        connection, build, middle + timedelta(days=1), end
    )


def _day(value: Any) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def model_name(value: Any) -> str:
    return str(value) if value not in (None, "") else UNKNOWN_MODEL


def _int(value: Any) -> int:
    return int(_decimal(value))


def _decimal(value: Any) -> Decimal:
    if value is None or value == "":
        return _ZERO
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise MetricsUnavailable(f"not a number in the metrics answer: {value!r}") from None
    return amount if amount.is_finite() else _ZERO


def from_metrics(
    connection: LangfuseConnection, start: date, end: date, models: tuple[str, ...] | None
) -> tuple[Cells, str | None]:
    """Cells from three aggregate queries, and why the savings are incomplete (None when they are not).

    `models`: only these model names (the ids a `--model` stands for), None for all.
    """
    cells: Cells = {}

    def cell(row: Mapping[str, Any], model_key: str) -> Cell | None:
        day = _day(row.get("time_dimension"))
        if day is None or not start <= day <= end:
            return None
        return cells.setdefault((day, model_name(row.get(model_key))), Cell())

    for name in models or (None,):
        for row in metrics_rows(
            connection, lambda s, e, name=name: generations_query(s, e, name), start, end
        ):
            calls = _int(row.get("count_count"))
            if calls and (target := cell(row, "providedModelName")) is not None:
                target.calls += calls
                target.cost += _decimal(row.get("sum_totalCost"))
        for row in metrics_rows(connection, lambda s, e, name=name: usage_query(s, e, name), start, end):
            tokens = _int(row.get("sum_usageByType"))
            if tokens and row.get("usageType") and (target := cell(row, "providedModelName")) is not None:
                target.add_tokens(str(row["usageType"]), tokens)
        for row in metrics_rows(connection, lambda s, e, name=name: savings_query(s, e, name), start, end):
            scores = _int(row.get("count_count"))
            if scores and (target := cell(row, "observationModelName")) is not None:
                target.scored += scores
                target.savings += _decimal(row.get("sum_value"))

    per_model: dict[str, list[int]] = {}
    for (_, name), c in cells.items():
        counts = per_model.setdefault(name, [0, 0])
        counts[0] += c.calls
        counts[1] += c.scored
    short = {name: counts for name, counts in per_model.items() if counts[0] != counts[1]}
    if not short:
        return cells, None
    calls = sum(counts[0] for counts in per_model.values())
    scored = sum(counts[1] for counts in per_model.values())
    detail = ", ".join(f"{name}: {s} of {c}" for name, (c, s) in sorted(short.items()))
    return cells, f"the score {SAVINGS_SCORE_NAME} is on {scored} of {calls} generations ({detail})"
