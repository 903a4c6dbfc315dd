"""What OpenRouter calls cost per model and day, with and without the prompt cache, read back from Langfuse.

```python
from langfuse_openrouter_callbacks.report import fetch_report, render_table, save_chart

report = fetch_report("2026-11-01", "2026-11-28")  # the client from langfuse.get_client()
print(render_table(report))
save_chart(report, "savings.png")
report.rows  # ReportRow per (day, model): calls, tokens, cost, no-cache cost, savings
```

Where the figures come from (`source`):

- `"metrics"`: Langfuse aggregates server-side (metrics API v2), so millions of generations cost three
  queries: generations and `totalCost` per model and day, `usageByType` (tokens per usage key) per model
  and day, and the numeric score `openrouter_cache_savings_usd` that the handlers record when asked
  (`savings_score=True`), summed per model and day. No-cache cost is cost plus savings.
- `"observations"`: every generation is read (observations API v2, cursor pages of 1000) and the figures
  come from its `usage_details`, `cost_details` and `metadata.openrouter`. Only generations carrying
  `metadata.openrouter` count.
- `"auto"` (default): the metrics API when it can give every figure, otherwise every generation is read:
  when the server has no metrics API v2 (404/501), does not know a measure (400), or when the savings
  score is missing on some generations (not recorded, unpriced calls, non-OpenRouter generations).

The calls whose reported and computed cost disagree (`metadata.openrouter.reconciliation_delta` beyond
`tolerance`) are only in the metadata: they are listed when the generations are read, which the metrics
path does only with `check_disagreements=True`.

Requests go through the Langfuse SDK's API client. Rate limits (429) wait for `Retry-After`, server errors
and dropped connections back off exponentially; both are bounded by `max_retries`. Anything else stops
the report with a `ReportError` whose message is one line fit for users (never a secret).

Money is summed as `Decimal` (floats converted through `str`) and rounded only when presented.
"""

from __future__ import annotations

import base64
import csv
import email.utils
import html
import io
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import httpx
from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from .langfuse_fields import CACHE_READ_KEY, CACHE_WRITE_KEY, METADATA_KEY, SAVINGS_SCORE_NAME, TOTAL_KEY

if TYPE_CHECKING:
    from langfuse import Langfuse

__all__ = [
    "DEFAULT_TOLERANCE",
    "Disagreement",
    "ReportError",
    "ReportRow",
    "SavingsReport",
    "api_client_from_env",
    "chart_png",
    "fetch_report",
    "render",
    "render_table",
    "run_report",
    "save_chart",
    "to_csv",
    "to_html",
    "to_json",
]

Source = Literal["auto", "metrics", "observations"]
Format = Literal["table", "csv", "json", "html"]

#: A reconciliation delta (USD) up to this size is rounding, not a disagreement.
DEFAULT_TOLERANCE = Decimal("0.000001")
DEFAULT_MAX_RETRIES = 4
DEFAULT_TIMEOUT = 60.0
#: The model shown for generations that name none.
UNKNOWN_MODEL = "(no model)"

_ROW_LIMIT = 1000  # the metrics API's maximum `config.row_limit`
_PAGE_SIZE = 1000  # the observations API's maximum `limit`
_MAX_RETRY_AFTER = 120.0
_MAX_BACKOFF = 30.0
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_METRICS_UNAVAILABLE = frozenset({400, 404, 405, 501})
_GENERATION = "GENERATION"
_ZERO = Decimal(0)
_MACHINE_MONEY = Decimal("0.000001")  # csv, json
_SHOWN_MONEY = Decimal("0.0001")  # table, html

# The `metadata.openrouter` fields the report reads (written by `langfuse_fields.openrouter_metadata`).
_SAVINGS_FIELD = "cache_savings_usd"
_DELTA_FIELD = "reconciliation_delta"
_REPORTED_FIELD = "reported_cost"
_GENERATION_ID_FIELD = "generation_id"


class ReportError(Exception):
    """Why the report could not be made, in one line fit for users."""


class _MetricsUnavailable(Exception):
    """The metrics API cannot give (all of) the figures."""


# -- the report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRow:
    """Figures for one day and model; `day` or `model` is None in per-model, per-day and total rows.

    `input_tokens` are the prompt tokens neither read from nor written to the cache, `cached_tokens`
    those read from it, `written_tokens` those written to it; `cost` is what the calls cost,
    `no_cache_cost` what they would have cost at the plain prompt price, `savings` the difference
    (negative when cache writes cost more than the reads saved). `disagreements` is None when the
    calls' reconciliation was not checked.
    """

    day: date | None
    model: str | None
    calls: int
    input_tokens: int
    cached_tokens: int
    written_tokens: int
    output_tokens: int
    cost: Decimal
    no_cache_cost: Decimal
    savings: Decimal
    disagreements: int | None = None

    @property
    def prompt_tokens(self) -> int:
        """All prompt tokens: uncached, read from and written to the cache."""
        return self.input_tokens + self.cached_tokens + self.written_tokens

    @property
    def cache_hit_ratio(self) -> float | None:
        """Cached / prompt tokens; None without prompt tokens."""
        prompt = self.prompt_tokens
        return self.cached_tokens / prompt if prompt else None

    def as_dict(self) -> dict[str, Any]:
        """Plain values: ISO day, ints, money rounded to micro-dollars, ratio to 4 places."""
        ratio = self.cache_hit_ratio
        return {
            "day": self.day.isoformat() if self.day else None,
            "model": self.model,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "written_tokens": self.written_tokens,
            "output_tokens": self.output_tokens,
            "cache_hit_ratio": None if ratio is None else round(ratio, 4),
            "cost_usd": float(_round(self.cost, _MACHINE_MONEY)),
            "no_cache_cost_usd": float(_round(self.no_cache_cost, _MACHINE_MONEY)),
            "savings_usd": float(_round(self.savings, _MACHINE_MONEY)),
            "disagreements": self.disagreements,
        }


@dataclass(frozen=True)
class Disagreement:
    """A call whose cost as OpenRouter reported it and as computed from prices differ (`delta`)."""

    day: date
    model: str
    observation_id: str
    trace_id: str | None
    generation_id: str | None
    start_time: datetime
    reported_cost: Decimal | None
    computed_cost: Decimal | None
    delta: Decimal

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "day": self.day.isoformat(),
            "model": self.model,
            "observation_id": self.observation_id,
            "trace_id": self.trace_id,
            "generation_id": self.generation_id,
            "start_time": self.start_time.isoformat(),
            "reported_cost_usd": None if self.reported_cost is None else float(self.reported_cost),
            "computed_cost_usd": None if self.computed_cost is None else float(self.computed_cost),
            "delta_usd": float(self.delta),
        }


@dataclass(frozen=True)
class SavingsReport:
    """Rows per (day, model), sorted; `disagreements` None when not checked; `source` says how it was made."""

    start: date
    end: date
    model: str | None
    rows: tuple[ReportRow, ...]
    disagreements: tuple[Disagreement, ...] | None
    source: Literal["metrics", "observations"]
    tolerance: Decimal = DEFAULT_TOLERANCE
    notes: tuple[str, ...] = ()

    @property
    def totals(self) -> ReportRow:
        """All rows summed (`day` and `model` None)."""
        return _sum_rows(self.rows, None, None, checked=self.disagreements is not None)

    def by_model(self) -> list[ReportRow]:
        """One row per model over the whole range (`day` None), sorted by model."""
        models = sorted({row.model or "" for row in self.rows})
        checked = self.disagreements is not None
        return [_sum_rows([r for r in self.rows if r.model == m], None, m, checked=checked) for m in models]

    def by_day(self) -> list[ReportRow]:
        """One row per day of the range, days without calls included (`model` None)."""
        checked = self.disagreements is not None
        days = [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]
        return [_sum_rows([r for r in self.rows if r.day == d], d, None, checked=checked) for d in days]

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready values."""
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "model": self.model,
            "source": self.source,
            "tolerance_usd": float(self.tolerance),
            "totals": self.totals.as_dict(),
            "by_model": [row.as_dict() for row in self.by_model()],
            "rows": [row.as_dict() for row in self.rows],
            "disagreements": None
            if self.disagreements is None
            else [d.as_dict() for d in self.disagreements],
            "notes": list(self.notes),
        }


def _sum_rows(rows: Iterable[ReportRow], day: date | None, model: str | None, *, checked: bool) -> ReportRow:
    rows = list(rows)
    return ReportRow(
        day=day,
        model=model,
        calls=sum(r.calls for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        cached_tokens=sum(r.cached_tokens for r in rows),
        written_tokens=sum(r.written_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost=sum((r.cost for r in rows), _ZERO),
        no_cache_cost=sum((r.no_cache_cost for r in rows), _ZERO),
        savings=sum((r.savings for r in rows), _ZERO),
        disagreements=sum(r.disagreements or 0 for r in rows) if checked else None,
    )


@dataclass
class _Cell:
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
        bucket = _token_bucket(key)
        if bucket is not None:
            setattr(self, bucket, getattr(self, bucket) + count)


_Cells = dict[tuple[date, str], _Cell]


def _token_bucket(key: str) -> str | None:
    """Which column a `usage_details` key adds to: Langfuse counts every key naming input (output) as such."""
    if key == TOTAL_KEY:
        return None
    if key == CACHE_READ_KEY:
        return "cached_tokens"
    if key == CACHE_WRITE_KEY:
        return "written_tokens"
    lowered = key.lower()
    if "input" in lowered:
        return "input_tokens"
    if "output" in lowered:
        return "output_tokens"
    return None


def _rows(cells: _Cells, *, checked: bool) -> tuple[ReportRow, ...]:
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


# -- talking to Langfuse ---------------------------------------------------------------------------


def api_client_from_env(*, timeout: float = DEFAULT_TIMEOUT) -> LangfuseAPI:
    """The Langfuse SDK's API client from LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_BASE_URL/HOST.

    Unlike `Langfuse()`, this starts no tracing and registers no client singleton.
    """
    public_key = os.environ.get("LANGFUSE_PUBLIC_KEY")
    secret_key = os.environ.get("LANGFUSE_SECRET_KEY")
    if not public_key or not secret_key:
        raise ReportError("set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (and LANGFUSE_BASE_URL)")
    base_url = (
        os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST") or "https://cloud.langfuse.com"
    )
    try:
        from langfuse.version import __version__ as sdk_version
    except ImportError:  # pragma: no cover - every langfuse 5 has it
        sdk_version = None
    return LangfuseAPI(
        base_url=base_url.rstrip("/"),
        username=public_key,
        password=secret_key,
        x_langfuse_sdk_name="python",
        x_langfuse_sdk_version=sdk_version,
        x_langfuse_public_key=public_key,
        timeout=timeout,
    )


def _resolve_api(client: Langfuse | LangfuseAPI | None) -> LangfuseAPI:
    if client is None:
        from langfuse import get_client

        client = get_client()
    if isinstance(client, LangfuseAPI):
        return client
    try:
        return client.api
    except AttributeError:  # a Langfuse client without keys is disabled and has no API client
        raise ReportError(
            "the Langfuse client is not configured: set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY"
        ) from None


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date); None when absent or unreadable."""
    value = _header(headers, "retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str):
                body = body[key]
                break
    text = " ".join(str(body).split()) if body not in (None, "") else ""
    return text[:200]


class _Caller:
    """Calls the SDK's API client with our bounded retry policy and maps failures to one-line errors.

    The generated client retries by itself (2 times, also on 501) with fixed delays; it is called with
    `max_retries=0` and this policy retries 408/429/5xx except 501 and dropped connections, waiting
    `Retry-After` when given (capped) and otherwise backing off exponentially.
    """

    def __init__(self, *, max_retries: int, timeout: float, backoff: float) -> None:
        self.max_retries = max(0, max_retries)
        self.timeout = timeout
        self.backoff = backoff
        self.requests = 0

    def __call__(self, what: str, fn: Callable[..., Any], *, metrics: bool = False, **kwargs: Any) -> Any:
        options = {"max_retries": 0, "timeout_in_seconds": self.timeout}
        attempt = 0
        while True:
            self.requests += 1
            try:
                return fn(**kwargs, request_options=options)
            except ApiError as exc:
                status = exc.status_code or 0
                if status in _RETRY_STATUSES and attempt < self.max_retries:
                    delay = _retry_after(exc.headers) if status == 429 else None
                    self._sleep(attempt, delay)
                    attempt += 1
                    continue
                raise self._error(what, exc, attempts=attempt + 1, metrics=metrics) from None
            except httpx.TransportError as exc:
                if attempt < self.max_retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                timed_out = isinstance(exc, httpx.TimeoutException)
                kind = "did not answer in time" if timed_out else "cannot be reached"
                raise ReportError(f"Langfuse {kind} ({what}, {attempt + 1} attempts): {exc}") from None
            except ValueError as exc:  # bad JSON or a response the SDK's types cannot parse
                raise ReportError(f"unexpected answer from Langfuse ({what}): {_message(exc)}") from None

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            time.sleep(min(retry_after, _MAX_RETRY_AFTER))
        else:
            time.sleep(min(self.backoff * 2**attempt, _MAX_BACKOFF) * (1 + random.random() / 10))

    def _error(self, what: str, exc: ApiError, *, attempts: int, metrics: bool) -> Exception:
        status = exc.status_code
        detail = _message(exc.body)
        suffix = f": {detail}" if detail else ""
        if status in (401, 403):
            return ReportError(
                f"Langfuse rejected the API keys (HTTP {status}{suffix}); "
                "check LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL"
            )
        if metrics and status in _METRICS_UNAVAILABLE:
            return _MetricsUnavailable(f"HTTP {status}{suffix}")
        if status in (404, 501):
            return ReportError(
                f"this Langfuse server has no {what} API (HTTP {status}{suffix}); "
                "the report needs Langfuse Cloud or a Langfuse v4 server"
            )
        if status in _RETRY_STATUSES:
            return ReportError(f"Langfuse answered HTTP {status} to {what} {attempts} times{suffix}")
        return ReportError(f"Langfuse answered HTTP {status} to {what}{suffix}")


# -- server-side aggregation (metrics API v2) ------------------------------------------------------


def _window(start: date, end: date) -> tuple[str, str]:
    """The metrics API's inclusive `fromTimestamp`/`toTimestamp` for whole UTC days."""
    return f"{start.isoformat()}T00:00:00.000Z", f"{end.isoformat()}T23:59:59.999Z"


def _equals(column: str, value: str) -> dict[str, Any]:
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
    filters = [_equals("type", _GENERATION)] + ([_equals("providedModelName", model)] if model else [])
    metrics = [("count", "count"), ("totalCost", "sum")]
    return _query("observations", start, end, ["providedModelName"], metrics, filters)


def usage_query(start: date, end: date, model: str | None = None) -> dict[str, Any]:
    """Metrics API query: tokens per usage key (`usageType`), model and day."""
    filters = [_equals("type", _GENERATION)] + ([_equals("providedModelName", model)] if model else [])
    metrics = [("usageByType", "sum")]
    return _query("observations", start, end, ["providedModelName", "usageType"], metrics, filters)


def savings_query(start: date, end: date, model: str | None = None) -> dict[str, Any]:
    """Metrics API query: the savings scores, their count and sum, per observation model and day."""
    filters = [_equals("name", SAVINGS_SCORE_NAME), _equals("dataType", "NUMERIC")]
    if model:
        filters.append(_equals("observationModelName", model))
    metrics = [("count", "count"), ("value", "sum")]
    return _query("scores-numeric", start, end, ["observationModelName"], metrics, filters)


def _metrics_rows(
    call: _Caller, api: LangfuseAPI, build: Callable[[date, date], dict[str, Any]], start: date, end: date
) -> list[dict[str, Any]]:
    """All rows of a query; a range whose answer may have been cut at the row limit is split in two."""
    query = json.dumps(build(start, end), separators=(",", ":"))
    rows = call("metrics", api.metrics.metrics, metrics=True, query=query).data
    if len(rows) < _ROW_LIMIT:
        return list(rows)
    if start == end:
        raise _MetricsUnavailable(f"more than {_ROW_LIMIT} rows for {start.isoformat()}")
    middle = start + (end - start) // 2
    return _metrics_rows(call, api, build, start, middle) + _metrics_rows(
        call, api, build, middle + timedelta(days=1), end
    )


def _day(value: Any) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _name(value: Any) -> str:
    return str(value) if value not in (None, "") else UNKNOWN_MODEL


def _int(value: Any) -> int:
    return int(_decimal(value))


def _decimal(value: Any) -> Decimal:
    if value is None or value == "":
        return _ZERO
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _MetricsUnavailable(f"not a number in the metrics answer: {value!r}") from None
    return amount if amount.is_finite() else _ZERO


def _from_metrics(
    call: _Caller, api: LangfuseAPI, start: date, end: date, model: str | None
) -> tuple[_Cells, str | None]:
    """Cells from three aggregate queries, and why the savings are incomplete (None when they are not)."""
    cells: _Cells = {}

    def cell(row: Mapping[str, Any], model_key: str) -> _Cell | None:
        day = _day(row.get("time_dimension"))
        if day is None or not start <= day <= end:
            return None
        return cells.setdefault((day, _name(row.get(model_key))), _Cell())

    for row in _metrics_rows(call, api, lambda s, e: generations_query(s, e, model), start, end):
        calls = _int(row.get("count_count"))
        if calls and (target := cell(row, "providedModelName")) is not None:
            target.calls += calls
            target.cost += _decimal(row.get("sum_totalCost"))
    for row in _metrics_rows(call, api, lambda s, e: usage_query(s, e, model), start, end):
        tokens = _int(row.get("sum_usageByType"))
        if tokens and row.get("usageType") and (target := cell(row, "providedModelName")) is not None:
            target.add_tokens(str(row["usageType"]), tokens)
    for row in _metrics_rows(call, api, lambda s, e: savings_query(s, e, model), start, end):
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


# -- reading every generation (observations API v2) ------------------------------------------------


def openrouter_fields(metadata: Any) -> dict[str, Any] | None:
    """`metadata.openrouter` of an observation as a dict; None when it has none.

    Accepts the shapes Langfuse returns: a nested object, its JSON string, or keys flattened to
    `openrouter.<field>`. An unreadable value (e.g. truncated JSON) gives an empty dict.
    """
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(METADATA_KEY)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if isinstance(value, Mapping):
        return dict(value)
    if value is not None:
        return {}
    prefix = METADATA_KEY + "."
    flat = {key[len(prefix) :]: _json_scalar(v) for key, v in metadata.items() if str(key).startswith(prefix)}
    return flat or None


def _json_scalar(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _money(value: Any) -> Decimal | None:
    """A float, int or numeric string as an exact `Decimal` (through `str`); None when not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


@contextmanager
def _progress(enabled: bool, total: int | None) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _count: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("Reading generations from Langfuse", total=total)
        yield lambda count: bar.advance(task, count)


@dataclass
class _Scan:
    cells: _Cells = field(default_factory=dict)
    disagreements: list[Disagreement] = field(default_factory=list)
    other_generations: int = 0
    unreadable: int = 0


def _scan(
    call: _Caller,
    api: LangfuseAPI,
    start: date,
    end: date,
    model: str | None,
    tolerance: Decimal,
    *,
    fields: str,
    progress: bool,
    total: int | None,
) -> _Scan:
    """Read every generation of the range (cursor pages) and add it up."""
    from_time = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    to_time = datetime(end.year, end.month, end.day, tzinfo=timezone.utc) + timedelta(days=1)
    filters = None
    if model:  # the structured filter takes precedence over the query parameters: repeat them
        filters = json.dumps(
            [
                _equals("type", _GENERATION),
                {"column": "startTime", "operator": ">=", "value": from_time.isoformat(), "type": "datetime"},
                {"column": "startTime", "operator": "<", "value": to_time.isoformat(), "type": "datetime"},
                _equals("model", model),
            ]
        )
    scan = _Scan()
    cursor: str | None = None
    seen: set[str] = set()
    with _progress(progress, total) as advance:
        while True:
            page = call(
                "observations",
                api.observations.get_many,
                type=_GENERATION,
                from_start_time=from_time,
                to_start_time=to_time,
                fields=fields,
                expand_metadata=METADATA_KEY,
                limit=_PAGE_SIZE,
                cursor=cursor,
                filter=filters,
            )
            for observation in page.data:
                _add_observation(scan, observation, start, end, model, tolerance)
            advance(len(page.data))
            cursor = page.meta.cursor
            if not cursor or not page.data:
                break
            if cursor in seen:
                raise ReportError("Langfuse returned the same page cursor twice; stopping")
            seen.add(cursor)
    scan.disagreements.sort(key=lambda d: (d.day, d.model, d.start_time, d.observation_id))
    return scan


def _add_observation(
    scan: _Scan, observation: Any, start: date, end: date, model: str | None, tolerance: Decimal
) -> None:
    if observation.type != _GENERATION:
        return
    fields = openrouter_fields(observation.metadata)
    if fields is None:
        scan.other_generations += 1
        return
    extra = observation.model_extra or {}
    name = _name(observation.model or extra.get("providedModelName"))
    if model is not None and name != model:
        return
    started = observation.start_time
    started = started.replace(tzinfo=timezone.utc) if started.tzinfo is None else started
    day = started.astimezone(timezone.utc).date()
    if not start <= day <= end:
        return
    cell = scan.cells.setdefault((day, name), _Cell())
    cell.calls += 1
    for key, count in (observation.usage_details or {}).items():
        cell.add_tokens(key, int(count))
    costs = observation.cost_details or {}
    cost = _money(costs.get(TOTAL_KEY)) if TOTAL_KEY in costs else _money(observation.total_cost)
    cell.cost += cost or _ZERO
    if not fields:
        scan.unreadable += 1
        return
    cell.savings += _money(fields.get(_SAVINGS_FIELD)) or _ZERO
    delta = _money(fields.get(_DELTA_FIELD))
    if delta is not None and abs(delta) > tolerance:
        cell.disagreements += 1
        reported = _money(fields.get(_REPORTED_FIELD))
        generation_id = fields.get(_GENERATION_ID_FIELD)
        scan.disagreements.append(
            Disagreement(
                day=day,
                model=name,
                observation_id=observation.id,
                trace_id=observation.trace_id,
                generation_id=str(generation_id) if generation_id else None,
                start_time=started,
                reported_cost=reported,
                computed_cost=None if reported is None else reported - delta,
                delta=delta,
            )
        )


# -- fetch_report ----------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _as_date(value: date | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value)


def fetch_report(
    start: date | str,
    end: date | str,
    *,
    model: str | None = None,
    client: Langfuse | LangfuseAPI | None = None,
    source: Source = "auto",
    check_disagreements: bool = False,
    tolerance: Decimal | str | float = DEFAULT_TOLERANCE,
    progress: bool | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
    backoff: float = 1.0,
) -> SavingsReport:
    """The OpenRouter generations from `start` to `end` (UTC days, both included), per day and model.

    `client`: a `Langfuse` client or the SDK's `LangfuseAPI` (default: `langfuse.get_client()`).
    `model`: only this model (Langfuse's model name of the generation). `source`: "auto", "metrics"
    or "observations" (see the module docs). `check_disagreements`: on the metrics path, also read
    every generation's metadata to find the calls whose reported and computed cost differ by more
    than `tolerance` USD. `progress`: a progress bar on stderr while reading generations (default:
    when stderr is a terminal). `max_retries`, `timeout` (seconds per request) and `backoff` (first
    delay, doubled per retry) bound the waiting. Raises `ReportError`.
    """
    start, end = _as_date(start), _as_date(end)
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    if source not in ("auto", "metrics", "observations"):
        raise ValueError(f"unknown source {source!r}")
    tolerance = abs(Decimal(str(tolerance)))
    progress = sys.stderr.isatty() if progress is None else progress
    api = _resolve_api(client)
    call = _Caller(max_retries=max_retries, timeout=timeout, backoff=backoff)
    notes: list[str] = []

    cells: _Cells | None = None
    known_calls: int | None = None
    if source in ("auto", "metrics"):
        try:
            cells, shortfall = _from_metrics(call, api, start, end, model)
        except _MetricsUnavailable as exc:
            if source == "metrics":
                raise ReportError(f"the metrics API cannot give this report ({exc})") from None
            notes.append(f"Server-side aggregation unavailable ({exc}): every generation was read.")
        else:
            known_calls = sum(c.calls for c in cells.values())
            if shortfall and source == "auto":
                notes.append(f"{_sentence(shortfall)}: every generation was read to sum its savings.")
                cells = None
            elif shortfall:
                notes.append(f"{_sentence(shortfall)}: savings are understated.")

    if cells is None:
        scan = _scan(
            call,
            api,
            start,
            end,
            model,
            tolerance,
            fields="core,model,usage,metadata",
            progress=progress,
            total=known_calls,
        )
        cells, disagreements, used = scan.cells, tuple(scan.disagreements), "observations"
        if scan.other_generations:
            notes.append(f"{scan.other_generations} generations without metadata.openrouter were left out.")
        if scan.unreadable:
            unreadable = f"{scan.unreadable} generations had an unreadable metadata.openrouter"
            notes.append(f"{unreadable}: their savings are not counted.")
    else:
        used, disagreements = "metrics", None
        if check_disagreements:
            scan = _scan(
                call,
                api,
                start,
                end,
                model,
                tolerance,
                fields="core,model,metadata",
                progress=progress,
                total=known_calls,
            )
            disagreements = tuple(scan.disagreements)
            for d in disagreements:
                if (target := cells.get((d.day, d.model))) is not None:
                    target.disagreements += 1
    return SavingsReport(
        start=start,
        end=end,
        model=model,
        rows=_rows(cells, checked=disagreements is not None),
        disagreements=disagreements,
        source=used,
        tolerance=tolerance,
        notes=tuple(notes),
    )


# -- presenting ------------------------------------------------------------------------------------


def _round(amount: Decimal, quantum: Decimal) -> Decimal:
    return amount.quantize(quantum) + 0  # `+ 0` turns -0 into 0


def _usd(amount: Decimal | None, quantum: Decimal = _SHOWN_MONEY) -> str:
    if amount is None:
        return "-"
    rounded = _round(amount, quantum)
    return f"-${-rounded:,f}" if rounded < 0 else f"${rounded:,f}"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1%}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


_COLUMNS = (
    "Calls",
    "Input",
    "Cached",
    "Written",
    "Output",
    "Hit ratio",
    "Cost",
    "No-cache cost",
    "Savings",
    "Disagree",
)


def _cells(row: ReportRow) -> list[str]:
    return [
        _count(row.calls),
        _count(row.input_tokens),
        _count(row.cached_tokens),
        _count(row.written_tokens),
        _count(row.output_tokens),
        _percent(row.cache_hit_ratio),
        _usd(row.cost),
        _usd(row.no_cache_cost),
        _usd(row.savings),
        _count(row.disagreements),
    ]


def _title(report: SavingsReport) -> str:
    scope = f" for {report.model}" if report.model else ""
    return f"OpenRouter prompt-cache savings{scope}, {report.start.isoformat()} to {report.end.isoformat()}"


def _source_line(report: SavingsReport) -> str:
    how = (
        "aggregated by Langfuse (metrics API)"
        if report.source == "metrics"
        else "summed from every generation (observations API)"
    )
    return f"UTC days; {how}; input = prompt tokens neither read from nor written to the cache."


def _disagreement_cells(d: Disagreement) -> list[str]:
    return [
        d.day.isoformat(),
        d.model,
        d.observation_id,
        d.generation_id or "-",
        _usd(d.reported_cost, _MACHINE_MONEY),
        _usd(d.computed_cost, _MACHINE_MONEY),
        _usd(d.delta, _MACHINE_MONEY),
    ]


_DISAGREEMENT_COLUMNS = ("Day", "Model", "Observation", "Generation", "Reported", "Computed", "Delta")


def _footnotes(report: SavingsReport) -> list[str]:
    lines = list(report.notes)
    if report.disagreements is None:
        lines.append("Cost disagreements not checked: check_disagreements=True (--disagreements) finds them.")
    return lines


def render_table(report: SavingsReport, *, width: int = 200) -> str:
    """The report as plain-text tables (rich), for a terminal."""
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, highlight=False, emoji=False)
    console.print(_title(report))
    console.print(_source_line(report))

    def table(title: str, first: tuple[str, ...]) -> Table:
        t = Table(title=title, title_justify="left")
        for name in first:
            t.add_column(name, no_wrap=True)
        for name in _COLUMNS:
            t.add_column(name, justify="right", no_wrap=True)
        return t

    daily = table("Per day and model", ("Day", "Model"))
    for row in report.rows:
        daily.add_row(row.day.isoformat() if row.day else "", row.model or "", *_cells(row))
    if not report.rows:
        daily.add_row("-", "no OpenRouter generations", *[""] * len(_COLUMNS))
    console.print(daily)

    models = table("Per model", ("Model",))
    for row in report.by_model():
        models.add_row(row.model or "", *_cells(row))
    models.add_section()
    models.add_row("Total", *_cells(report.totals))
    console.print(models)

    if report.disagreements:
        t = Table(title=f"Cost disagreements (|delta| > ${report.tolerance:f})", title_justify="left")
        for name in _DISAGREEMENT_COLUMNS:
            numeric = name in ("Reported", "Computed", "Delta")
            t.add_column(name, no_wrap=True, justify="right" if numeric else "left")
        for d in report.disagreements:
            t.add_row(*_disagreement_cells(d))
        console.print(t)
    for line in _footnotes(report):
        console.print(f"Note: {line}")
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


_CSV_FIELDS = (
    "day",
    "model",
    "calls",
    "input_tokens",
    "cached_tokens",
    "written_tokens",
    "output_tokens",
    "cache_hit_ratio",
    "cost_usd",
    "no_cache_cost_usd",
    "savings_usd",
    "disagreements",
)


def to_csv(report: SavingsReport) -> str:
    """One line per (day, model); money rounded to micro-dollars, the hit ratio to 4 places."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_FIELDS)
    for row in report.rows:
        ratio = row.cache_hit_ratio
        writer.writerow(
            [
                row.day.isoformat() if row.day else "",
                row.model or "",
                row.calls,
                row.input_tokens,
                row.cached_tokens,
                row.written_tokens,
                row.output_tokens,
                "" if ratio is None else f"{ratio:.4f}",
                f"{_round(row.cost, _MACHINE_MONEY):f}",
                f"{_round(row.no_cache_cost, _MACHINE_MONEY):f}",
                f"{_round(row.savings, _MACHINE_MONEY):f}",
                "" if row.disagreements is None else row.disagreements,
            ]
        )
    return buffer.getvalue()


def to_json(report: SavingsReport, *, indent: int | None = 2) -> str:
    """The whole report (`SavingsReport.as_dict`) as JSON."""
    return json.dumps(report.as_dict(), indent=indent) + "\n"


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1d1d1f; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
p.meta, p.note { color: #555; margin: .3rem 0; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #ddd; white-space: nowrap; }
th { background: #f3f4f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid #999; }
img.chart { max-width: 100%; height: auto; margin-top: 1rem; }
"""


def _html_table(head: Iterable[str], rows: Iterable[tuple[list[str], int, str]]) -> str:
    """`rows`: (cells, how many leading text cells, css class of the row)."""
    parts = ["<table><thead><tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for cells, text_cells, css in rows:
        parts.append(f'<tr class="{css}">' if css else "<tr>")
        for i, value in enumerate(cells):
            css_class = "" if i < text_cells else ' class="num"'
            parts.append(f"<td{css_class}>{html.escape(value)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def to_html(report: SavingsReport, *, chart: bool = True) -> str:
    """One self-contained HTML page: the tables and (with `chart`) the chart inline as a base64 PNG."""
    body = [f"<h1>{html.escape(_title(report))}</h1>"]
    body.append(f'<p class="meta">{html.escape(_source_line(report))}</p>')
    if chart:
        encoded = base64.b64encode(chart_png(report)).decode("ascii")
        alt = "Daily cost with and without the prompt cache; the savings are the shaded area between them"
        body.append(f'<img class="chart" alt="{alt}" src="data:image/png;base64,{encoded}">')
    body.append("<h2>Per model</h2>")
    model_rows = [([r.model or "", *_cells(r)], 1, "") for r in report.by_model()]
    model_rows.append((["Total", *_cells(report.totals)], 1, "total"))
    body.append(_html_table(("Model", *_COLUMNS), model_rows))
    body.append("<h2>Per day and model</h2>")
    day_rows = [([r.day.isoformat() if r.day else "", r.model or "", *_cells(r)], 2, "") for r in report.rows]
    body.append(_html_table(("Day", "Model", *_COLUMNS), day_rows))
    if report.disagreements:
        body.append(f"<h2>Cost disagreements (|delta| &gt; ${html.escape(f'{report.tolerance:f}')})</h2>")
        rows = [(_disagreement_cells(d), 4, "") for d in report.disagreements]
        body.append(_html_table(_DISAGREEMENT_COLUMNS, rows))
    body.extend(f'<p class="note">{html.escape(line)}</p>' for line in _footnotes(report))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(_title(report))}</title><style>{_HTML_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def render(report: SavingsReport, fmt: Format) -> str:
    """The report as "table", "csv", "json" or "html" text."""
    renderers: dict[str, Callable[[SavingsReport], str]] = {
        "table": render_table,
        "csv": to_csv,
        "json": to_json,
        "html": to_html,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}")
    return renderers[fmt](report)


# -- the chart -------------------------------------------------------------------------------------


def _plain(text: str) -> str:
    """Text for matplotlib, whose mathtext would read what stands between two `$` as a formula."""
    return text.replace("$", r"\$")


def _axis_usd(top: float) -> Callable[[float, Any], str]:
    places = 2 if top >= 1 else 3 if top >= 0.1 else 4 if top >= 0.01 else 6

    def label(value: float, _position: Any) -> str:
        text = _plain(f"${abs(value):,.{places}f}")
        return f"-{text}" if value < 0 else text

    return label


def chart_png(report: SavingsReport, *, dpi: int = 110) -> bytes:
    """PNG: daily cost and no-cache cost, the savings shaded between them (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, DateFormatter, DayLocator
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    days = report.by_day()
    x = [datetime(d.day.year, d.day.month, d.day.day) for d in days if d.day is not None]
    cost = [float(d.cost) for d in days]
    no_cache = [float(d.no_cache_cost) for d in days]
    totals = report.totals

    figure = Figure(figsize=(10, 5.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    marker = "o" if len(x) <= 62 else None
    axes.plot(x, no_cache, color="#7f7f7f", marker=marker, linewidth=2, label="Without the prompt cache")
    axes.plot(x, cost, color="#1f77b4", marker=marker, linewidth=2, label="What the calls cost")
    saved = [n >= c for n, c in zip(no_cache, cost, strict=True)]
    axes.fill_between(
        x, cost, no_cache, where=saved, interpolate=True, color="#2ca02c", alpha=0.3,
        label=_plain(f"Saved by caching ({_usd(totals.savings)} in total)"),
    )  # fmt: skip
    if not all(saved):
        axes.fill_between(
            x, cost, no_cache, where=[not s for s in saved], interpolate=True, color="#d62728", alpha=0.3,
            label="Cache writes cost more than reads saved",
        )  # fmt: skip
    top = max([*cost, *no_cache, 0.0])
    axes.yaxis.set_major_formatter(FuncFormatter(_axis_usd(top)))
    if min([*cost, *no_cache, 0.0]) >= 0:
        axes.set_ylim(bottom=0, top=top * 1.12 if top > 0 else 1)
    span = (x[-1] - x[0]).days if x else 0
    if span <= 31:  # one point per day: day ticks, never hours
        axes.xaxis.set_major_locator(DayLocator(interval=max(1, span // 8)))
        axes.xaxis.set_major_formatter(DateFormatter("%b %d"))
    else:
        locator = AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if len(x) == 1:
        axes.set_xlim(x[0] - timedelta(days=1), x[0] + timedelta(days=1))
    axes.set_ylabel("USD per day")
    axes.set_xlabel("Day (UTC)")
    scope = f"{report.model}, " if report.model else ""
    axes.set_title(
        _plain(
            f"OpenRouter cost with and without prompt caching\n{scope}{report.start.isoformat()} to "
            f"{report.end.isoformat()}: {_count(totals.calls)} calls, {_usd(totals.cost)} paid, "
            f"{_usd(totals.savings)} saved"
        )
    )
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left")
    if not totals.calls:
        axes.text(0.5, 0.5, "No OpenRouter generations in this range", transform=axes.transAxes, ha="center")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_chart(report: SavingsReport, path: str | os.PathLike[str]) -> Path:
    """Write `chart_png(report)` to `path`; returns the path."""
    target = Path(path)
    target.write_bytes(chart_png(report))
    return target


# -- the command -----------------------------------------------------------------------------------


def run_report(
    *,
    start: date,
    end: date,
    model: str | None = None,
    fmt: Format = "table",
    chart: str | None = None,
    output: str | None = None,
    source: Source = "auto",
    check_disagreements: bool = False,
    tolerance: Decimal = DEFAULT_TOLERANCE,
    client: Langfuse | LangfuseAPI | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    **options: Any,
) -> int:
    """`langfuse-openrouter report`: 0 done, 1 Langfuse or file error, 2 bad arguments (one stderr line)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    prefix = "langfuse-openrouter report: error:"
    if start > end:
        print(f"{prefix} --from {start} is after --to {end}", file=stderr)
        return 2
    try:
        report = fetch_report(
            start,
            end,
            model=model,
            client=client if client is not None else api_client_from_env(),
            source=source,
            check_disagreements=check_disagreements,
            tolerance=tolerance,
            **options,
        )
        text = render(report, fmt)
        if chart:
            save_chart(report, chart)
        if output:
            Path(output).write_text(text, encoding="utf-8")
        else:
            stdout.write(text)
            stdout.flush()
    except ReportError as exc:
        print(f"{prefix} {exc}", file=stderr)
        return 1
    except OSError as exc:
        print(f"{prefix} {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=stderr)
        return 1
    if fmt == "csv":
        for line in report.notes:
            print(f"note: {line}", file=stderr)
    for path in (p for p in (output, chart) if p):
        print(f"wrote {path}", file=stderr)
    return 0
