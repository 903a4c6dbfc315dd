"""Reading every generation of the range (observations API v2, cursor pages, plain JSON) and adding it up."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from ..langfuse_fields import METADATA_KEY, TOTAL_KEY
from ._api import LangfuseConnection
from ._cells import Cell, Cells, token_bucket
from ._doctor import Call, Doctor
from ._metrics import equals, model_name
from ._model import UNKNOWN, Disagreement, GroupRow, ReportError

__all__ = ["OBSERVATIONS_PATH", "Scan", "model_matches", "openrouter_fields", "scan"]

OBSERVATIONS_PATH = "/api/public/v2/observations"
_PAGE_SIZE = 1000  # the observations API's maximum `limit`
_GENERATION = "GENERATION"
_ZERO = Decimal(0)
_GROUP_DIMENSIONS = (("session", "sessionId"), ("user", "userId"), ("trace_name", "traceName"))

# The `metadata.openrouter` fields the report reads (written by `langfuse_fields.openrouter_metadata` and
# the handlers); every one may be absent.
_SAVINGS_FIELD = "cache_savings_usd"
_DELTA_FIELD = "reconciliation_delta"
_REPORTED_FIELD = "reported_cost"
_GENERATION_ID_FIELD = "generation_id"
_PROVIDER_FIELD = "provider"
_MODEL_FIELD = "model"
_CACHE_CONTROL_FIELD = "cache_control"
_PREFIX_HASHES_FIELD = "prefix_hashes"
_CACHE_TTL_FIELD = "cache_ttl"


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


def _count(value: Any) -> int:
    if type(value) is int:
        return value if value > 0 else 0
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return number if number > 0 else 0


_DATED = r"(?:-\d{4}-?\d{2}-?\d{2})?(?::[\w.-]+)?"


def model_matches(wanted: str) -> Callable[[str], bool]:
    """Whether a recorded model name is `wanted`: the same id, a dated id of it, or a `:variant` of either."""
    pattern = re.compile(re.escape(wanted) + _DATED)
    return lambda name: name == wanted or pattern.fullmatch(name) is not None


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
class Scan:
    cells: Cells = field(default_factory=dict)
    groups: dict[str, dict[str, Cell]] = field(default_factory=dict)
    disagreements: list[Disagreement] = field(default_factory=list)
    other_generations: int = 0
    unreadable: int = 0
    names: set[str] = field(default_factory=set)  # every model name seen (for `--model` suggestions)

    def group_rows(
        self, lost_by: Mapping[tuple[str, str], Decimal] | None
    ) -> dict[str, tuple[GroupRow, ...]]:
        return {
            dimension: tuple(
                GroupRow(
                    dimension,
                    key,
                    cell.calls,
                    cell.cost,
                    cell.cost + cell.savings,
                    cell.savings,
                    None if lost_by is None else lost_by.get((dimension, key), _ZERO),
                )
                for key, cell in cells.items()
            )
            for dimension, cells in self.groups.items()
        }


def scan(
    connection: LangfuseConnection,
    start: date,
    end: date,
    model: str | None,
    tolerance: Decimal,
    *,
    fields: str,
    progress: bool,
    total: int | None,
    doctor: Doctor | None,
    base_url: str | None = None,
) -> Scan:
    """Read every generation of the range (cursor pages, newest first) and add it up."""
    from_time = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    to_time = datetime(end.year, end.month, end.day, tzinfo=timezone.utc) + timedelta(days=1)
    filters = None
    matches = model_matches(model) if model else None
    if model:  # the structured filter takes precedence over the query parameters: repeat them
        filters = json.dumps(
            [
                equals("type", _GENERATION),
                {"column": "startTime", "operator": ">=", "value": from_time.isoformat(), "type": "datetime"},
                {"column": "startTime", "operator": "<", "value": to_time.isoformat(), "type": "datetime"},
                {"column": "model", "operator": "starts with", "value": model, "type": "string"},
            ]
        )
    result = Scan(groups={dimension: {} for dimension, _ in _GROUP_DIMENSIONS})
    add = _Adder(result, start, end, matches, tolerance, doctor, base_url)
    cursor: str | None = None
    seen: set[str] = set()
    with _progress(progress, total) as advance:
        while True:
            page = connection.get(
                "observations",
                OBSERVATIONS_PATH,
                {
                    "type": _GENERATION,
                    "fromStartTime": from_time.isoformat(),
                    "toStartTime": to_time.isoformat(),
                    "fields": fields,
                    "expandMetadata": METADATA_KEY,
                    "limit": _PAGE_SIZE,
                    "cursor": cursor,
                    "filter": filters,
                },
            )
            data = page.get("data") if isinstance(page, Mapping) else None
            if not isinstance(data, list):
                raise ReportError("unexpected answer from Langfuse (observations): no data list")
            for observation in data:
                if isinstance(observation, dict):
                    add(observation)
            advance(len(data))
            meta = page.get("meta")
            cursor = meta.get("cursor") if isinstance(meta, Mapping) else None
            count = len(data)
            del page, data  # one page in memory at a time: not this one while the next is read
            if not cursor or not count:
                break
            if cursor in seen:
                raise ReportError("Langfuse returned the same page cursor twice; stopping")
            seen.add(cursor)
    result.disagreements.sort(key=lambda d: (d.day, d.model, d.start_time, d.observation_id))
    return result


class _Adder:
    """Adds one observation (a JSON object) to the scan, and hands its call to the doctor."""

    def __init__(
        self,
        scan: Scan,
        start: date,
        end: date,
        matches: Callable[[str], bool] | None,
        tolerance: Decimal,
        doctor: Doctor | None,
        base_url: str | None,
    ) -> None:
        self.scan = scan
        self.start, self.end = start, end
        self.matches = matches
        self.tolerance = tolerance
        self.doctor = doctor
        self.base_url = (base_url or "").rstrip("/")
        self._days: dict[str, date] = {}

    def __call__(self, o: dict[str, Any]) -> None:
        scan = self.scan
        if o.get("type") != _GENERATION:
            return
        fields = openrouter_fields(o.get("metadata"))
        if fields is None:
            scan.other_generations += 1
            return
        name = model_name(o.get("model") or o.get("providedModelName"))
        scan.names.add(name)
        if self.matches is not None and not self.matches(name):
            return
        try:
            started = datetime.fromisoformat(o["startTime"])
        except (KeyError, TypeError, ValueError):
            scan.unreadable += 1
            return
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        elif started.utcoffset():
            started = started.astimezone(timezone.utc)
        day = started.date()
        if not self.start <= day <= self.end:
            return
        cell = scan.cells.get((day, name))
        if cell is None:
            cell = scan.cells[(day, name)] = Cell()
        cell.calls += 1
        usage = o.get("usageDetails")
        usage = usage if isinstance(usage, dict) else {}
        uncached = read = write = completion = 0
        for key, value in usage.items():
            bucket = token_bucket(key)
            if bucket is None:
                continue
            count = value if type(value) is int and value > 0 else _count(value)
            if bucket == "input_tokens":
                uncached += count
            elif bucket == "output_tokens":
                completion += count
            elif bucket == "cached_tokens":
                read += count
            else:
                write += count
        cell.input_tokens += uncached
        cell.cached_tokens += read
        cell.written_tokens += write
        cell.output_tokens += completion
        costs = o.get("costDetails")
        costs = costs if isinstance(costs, dict) else {}
        cost = _money(costs[TOTAL_KEY]) if TOTAL_KEY in costs else _money(o.get("totalCost"))
        cost = cost or _ZERO
        cell.cost += cost
        savings = _ZERO
        if not fields:
            scan.unreadable += 1
        else:
            savings = _money(fields.get(_SAVINGS_FIELD)) or _ZERO
            cell.savings += savings
            delta = _money(fields.get(_DELTA_FIELD))
            if delta is not None and abs(delta) > self.tolerance:
                cell.disagreements += 1
                self._disagreement(o, fields, day, name, started, delta)
        groups = [("model", name), ("day", day.isoformat())]
        for dimension, key in _GROUP_DIMENSIONS:
            value = o.get(key)
            value = str(value) if value not in (None, "") else UNKNOWN
            group = scan.groups[dimension].get(value)
            if group is None:
                group = scan.groups[dimension][value] = Cell()
            group.calls += 1
            group.cost += cost
            group.savings += savings
            groups.append((dimension, value))
        if self.doctor is None:
            return
        prompt = uncached + read + write
        self.doctor.add(self._call(o, fields, name, started, prompt, read, write, completion, tuple(groups)))

    def _call(
        self,
        o: dict[str, Any],
        fields: dict[str, Any],
        name: str,
        started: datetime,
        prompt: int,
        read: int,
        write: int,
        completion: int,
        groups: tuple[tuple[str, str], ...],
    ) -> Call:
        trace_id = str(o.get("traceId") or "")
        session, user = o.get("sessionId"), o.get("userId")
        if session:
            thread: tuple[str, ...] = ("session", str(session), name)
        elif trace_id:
            thread = ("trace", trace_id, name)
        else:
            thread = ("user", str(user or ""), name)
        hashes = fields.get(_PREFIX_HASHES_FIELD)
        hashes = tuple(str(h) for h in hashes) if isinstance(hashes, list) else None
        provider = fields.get(_PROVIDER_FIELD)
        answered = fields.get(_MODEL_FIELD)
        ttl = fields.get(_CACHE_TTL_FIELD)
        project = o.get("projectId")
        observation_id = str(o.get("id") or "")
        url = None
        if project and self.base_url and trace_id:
            url = f"{self.base_url}/project/{project}/traces/{trace_id}?observation={observation_id}"
        return Call(
            id=observation_id,
            trace_id=trace_id,
            url=url,
            start=started.timestamp(),
            thread=thread,
            model=name,
            answered_model=answered if isinstance(answered, str) and answered else None,
            provider=provider if isinstance(provider, str) and provider else None,
            prompt=prompt,
            read=read,
            write=write,
            completion=completion,
            cache_control=fields.get(_CACHE_CONTROL_FIELD) is True,
            hashes=hashes,
            ttl=float(ttl)
            if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0
            else None,
            groups=groups,
        )

    def _disagreement(
        self,
        o: dict[str, Any],
        fields: dict[str, Any],
        day: date,
        name: str,
        started: datetime,
        delta: Decimal,
    ) -> None:
        reported = _money(fields.get(_REPORTED_FIELD))
        generation_id = fields.get(_GENERATION_ID_FIELD)
        self.scan.disagreements.append(
            Disagreement(
                day=day,
                model=name,
                observation_id=str(o.get("id")),
                trace_id=o.get("traceId"),
                generation_id=str(generation_id) if generation_id else None,
                start_time=started,
                reported_cost=reported,
                computed_cost=None if reported is None else reported - delta,
                delta=delta,
            )
        )
