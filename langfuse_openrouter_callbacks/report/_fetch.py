"""`fetch_report`: which way to read Langfuse, and putting the figures together."""

from __future__ import annotations

import sys
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from ._api import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, LangfuseConnection, MetricsUnavailable
from ._cells import Cells, rows_of
from ._doctor import Doctor, Prices
from ._metrics import from_metrics, metrics_rows, model_names_query
from ._model import DEFAULT_TOLERANCE, DIMENSIONS, ReportError, SavingsReport
from ._scan import model_matches, scan

if TYPE_CHECKING:
    from ..catalog import PriceCatalog
    from ..pricing import ModelPricing

__all__ = ["Source", "fetch_report"]

Source = Literal["auto", "metrics", "observations"]
_SCAN_FIELDS = "core,basic,model,usage,metadata,trace_context"
_PRICE_WAIT = 15.0  # seconds to wait for OpenRouter's price list when a miss needs pricing


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _as_date(value: date | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value)


def catalog_prices(catalog: PriceCatalog | None) -> Prices:
    """The prices in force per (model, answered model, provider), from `catalog` (default: the shared one).

    The catalog is loaded (disk copy, then OpenRouter's lists when stale) only when a miss needs a price.
    """
    memo: dict[tuple[str, str | None, str | None], ModelPricing | None] = {}
    loaded: list[PriceCatalog] = []

    def prices(model: str, answered: str | None, provider: str | None) -> ModelPricing | None:
        key = (model, answered, provider)
        if key in memo:
            return memo[key]
        if not loaded:
            from ..catalog import PriceCatalog

            loaded.append(catalog or PriceCatalog.shared())
            loaded[0].preload()
            loaded[0].wait_until_idle(_PRICE_WAIT)
        source = loaded[0]
        answering = answered or model  # priced as the model that answered; the recorded id stands in for it
        found = source.pricing_for(answering, provider, requested=model)
        if not source.wait_until_idle(0):  # the serving endpoint's prices were still to come
            source.wait_until_idle(_PRICE_WAIT)
            found = source.pricing_for(answering, provider, requested=model)
        memo[key] = found
        return found

    return prices


def _model_names(connection: LangfuseConnection, start: date, end: date) -> list[str] | None:
    try:
        rows = metrics_rows(connection, lambda s, e: model_names_query(s, e), start, end)
    except (MetricsUnavailable, ReportError):
        return None
    return sorted({str(r["providedModelName"]) for r in rows if r.get("providedModelName")})


def _no_model_note(model: str, names: list[str] | None) -> str:
    if names:
        recorded = ", ".join(names)
        return f"No generation's model is {model} (or a dated id of it); the models recorded are: {recorded}."
    return f"No generation's model is {model} (or a dated id of it) in this range."


def fetch_report(
    start: date | str,
    end: date | str,
    *,
    model: str | None = None,
    client: Any = None,
    source: Source = "auto",
    cache_misses: bool = True,
    by: str = "model",
    catalog: PriceCatalog | None = None,
    check_disagreements: bool = False,
    tolerance: Decimal | str | float = DEFAULT_TOLERANCE,
    progress: bool | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
    backoff: float = 1.0,
) -> SavingsReport:
    """The OpenRouter generations from `start` to `end` (UTC days, both included), per day and model.

    `client`: a `Langfuse` client, the SDK's `LangfuseAPI`, or `api_client_from_env()` (default:
    `langfuse.get_client()`). `model`: only this model (also its dated ids, e.g. `openai/gpt-4.1-mini`
    finds `openai/gpt-4.1-mini-2025-04-14`). `source`: "auto", "metrics" or "observations" (see the
    package docs). `cache_misses`: read every generation and diagnose why the cache missed (the prices
    come from `catalog`, default the shared `PriceCatalog`); with False, "auto" lets Langfuse aggregate.
    `by`: the grouping the renderers show (model, day, session, user, trace_name).
    `check_disagreements`: on the metrics path, also read every generation's metadata for the calls whose
    reported and computed cost differ by more than `tolerance` USD. `progress`: a progress bar on stderr
    while reading generations (default: when stderr is a terminal). `max_retries`, `timeout` (seconds per
    request) and `backoff` (first delay, doubled per retry) bound the waiting. Raises `ReportError`.
    """
    start, end = _as_date(start), _as_date(end)
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    if source not in ("auto", "metrics", "observations"):
        raise ValueError(f"unknown source {source!r}")
    if by not in DIMENSIONS:
        raise ValueError(f"unknown grouping {by!r}; one of {', '.join(DIMENSIONS)}")
    tolerance = abs(Decimal(str(tolerance)))
    progress = sys.stderr.isatty() if progress is None else progress
    if client is None:
        from langfuse import get_client

        client = get_client()
    connection = LangfuseConnection.of(client, max_retries=max_retries, timeout=timeout, backoff=backoff)
    notes: list[str] = []
    try:
        return _fetch(
            connection, start, end, model, source, cache_misses, by, catalog, check_disagreements, tolerance,
            progress, notes,
        )  # fmt: skip
    finally:
        if connection is not client:
            connection.close()


def _fetch(
    connection: LangfuseConnection,
    start: date,
    end: date,
    model: str | None,
    source: Source,
    cache_misses: bool,
    by: str,
    catalog: PriceCatalog | None,
    check_disagreements: bool,
    tolerance: Decimal,
    progress: bool,
    notes: list[str],
) -> SavingsReport:
    cells: Cells | None = None
    known_calls: int | None = None
    read_all = source == "observations" or (source == "auto" and (cache_misses or by in DIMENSIONS[2:]))
    if not read_all:
        try:
            models: tuple[str, ...] | None = None
            if model:
                names = _model_names(connection, start, end)
                if names is None:
                    raise MetricsUnavailable("no model names")
                models = tuple(n for n in names if model_matches(model)(n))
                if not models:
                    notes.append(_no_model_note(model, names))
            cells, shortfall = from_metrics(connection, start, end, models) if models != () else ({}, None)
        except MetricsUnavailable as exc:
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

    doctor = Doctor(catalog_prices(catalog)) if cache_misses else None
    misses = undecided = None
    groups: dict[str, Any] = {}
    if cells is None:
        result = scan(
            connection, start, end, model, tolerance,
            fields=_SCAN_FIELDS,
            progress=progress, total=known_calls, doctor=doctor, base_url=connection.base_url,
        )  # fmt: skip
        cells, disagreements, used = result.cells, tuple(result.disagreements), "observations"
        if result.other_generations:
            notes.append(f"{result.other_generations} generations without metadata.openrouter were left out.")
        if result.unreadable:
            unreadable = f"{result.unreadable} generations had an unreadable metadata.openrouter"
            notes.append(f"{unreadable}: their savings are not counted.")
        if model and not cells and not any(n.startswith("No generation") for n in notes):
            notes.append(_no_model_note(model, _model_names(connection, start, end)))
    else:
        used, disagreements = "metrics", None
        if check_disagreements or doctor is not None:
            fields = _SCAN_FIELDS if doctor else "core,model,metadata"
            result = scan(
                connection, start, end, model, tolerance, fields=fields, progress=progress, total=known_calls,
                doctor=doctor, base_url=connection.base_url,
            )  # fmt: skip
            disagreements = tuple(result.disagreements)
            for d in disagreements:
                if (target := cells.get((d.day, d.model))) is not None:
                    target.disagreements += 1
        else:
            result = None
    if result is not None:
        groups = result.group_rows(None)
    if doctor is not None and result is not None:
        misses, undecided = doctor.result()
        groups = result.group_rows(doctor.lost_by)
        unpriced = sum(m.unpriced for m in misses)
        if unpriced:
            notes.append(f"{unpriced} missed calls have no known price: their lost dollars are not counted.")
    return SavingsReport(
        start=start,
        end=end,
        model=model,
        rows=rows_of(cells, checked=disagreements is not None),
        disagreements=disagreements,
        source=used,
        tolerance=tolerance,
        notes=tuple(notes),
        cache_misses=misses,
        undecided=undecided or (),
        groups=groups,
        lost_by=dict(doctor.lost_by) if doctor is not None and misses is not None else {},
        by=by,
    )
