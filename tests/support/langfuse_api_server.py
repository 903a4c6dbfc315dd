"""A local fake of Langfuse's public read API: metrics v2 and observations v2, over stored generations.

Serves, on ``http://127.0.0.1:PORT`` (use it as the Langfuse ``base_url``):

- ``GET /api/public/v2/metrics?query=<json>``: views ``observations`` and ``scores-numeric``, computed
  from the stored data for the query received, the way Langfuse's query builder does
  (``web/src/features/query``): dimensions (``providedModelName``, ``usageType``, ``type``, ``name``,
  ``observationModelName``, ...), measures with ``sum``/``count``/``avg``/``min``/``max`` (``count``,
  ``totalCost``, ``inputTokens``, ``outputTokens``, ``totalTokens``, ``inputCost``, ``outputCost``,
  ``usageByType`` with its ARRAY JOIN on ``usageType``, ``costByType``; scores: ``count``, ``value``),
  filters, ``timeDimension`` (``day``, bucket ``time_dimension`` = ``YYYY-MM-DD``), inclusive
  ``fromTimestamp``/``toTimestamp``, ``orderBy`` (without it: time order and WITH FILL gap rows),
  ``config.row_limit`` (default 100, at most 1000). Rows are ClickHouse JSON: dimension aliases,
  ``time_dimension``, ``<aggregation>_<measure>``; 64-bit integers as strings, decimals as numbers.
  Scores joined to their observation (observation dimensions/filters) also need the observation's
  start time in the window, like the server's JOIN. Unknown fields give 400 like the real validator.
- ``GET /api/public/v2/observations``: cursor pagination (newest first, opaque base64 cursor in
  ``meta.cursor``, absent on the last page), ``limit`` (default 50, at most 1000, optionally capped
  lower by ``page_size_cap``), ``fields`` groups (core always; default core,basic), ``type``,
  ``fromStartTime`` (>=), ``toStartTime`` (<), the structured ``filter`` JSON (which, as documented,
  replaces the query-parameter filters), ``expandMetadata`` (other metadata values longer than 200
  characters are truncated). ``metadata_style`` chooses how ``metadata.openrouter`` comes back: a nested
  object, its JSON string, or flattened ``openrouter.<field>`` keys.

Every request needs ``Authorization: Basic base64(public_key:secret_key)`` (else 401). Fault knobs:
:meth:`FakeLangfuseAPI.fail` queues responses (status, headers such as ``Retry-After``, body) per
endpoint; ``metrics_status`` answers every metrics request with that status (404/501: no metrics API);
``unsupported_measures`` makes those measures a 400 like an older server.

:func:`openrouter_generation` builds generations (and their savings score) exactly as the handlers
write them, through the package's own usage/cost/Langfuse mapping.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

from langfuse_openrouter_callbacks import ModelPricing, OpenRouterUsage, compute_cost, to_langfuse
from langfuse_openrouter_callbacks.langfuse_fields import SAVINGS_SCORE_NAME

from ._http import BackgroundHTTPServer, QuietHandler

__all__ = [
    "METRICS_PATH",
    "OBSERVATIONS_PATH",
    "FakeLangfuseAPI",
    "StoredGeneration",
    "StoredScore",
    "openrouter_generation",
    "stored_generations",
]

METRICS_PATH = "/api/public/v2/metrics"
OBSERVATIONS_PATH = "/api/public/v2/observations"
PROJECT_ID = "proj-report-test"
_TRUNCATE_AT = 200


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _parse_time(value: Any) -> datetime:
    text = str(value).strip().replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class StoredGeneration:
    """A generation as Langfuse stores it (usage/cost maps, metadata by top-level key)."""

    id: str
    trace_id: str
    start_time: datetime
    end_time: datetime
    model: str | None
    usage_details: dict[str, int]
    cost_details: dict[str, float]
    metadata: dict[str, Any]
    type: str = "GENERATION"
    name: str = "ChatOpenAI"
    environment: str = "default"
    session_id: str | None = None
    user_id: str | None = None
    trace_name: str | None = None

    @property
    def total_cost(self) -> float | None:
        """Langfuse's `total_cost`: the `total` bucket, else the sum of the buckets, else none."""
        if "total" in self.cost_details:
            return self.cost_details["total"]
        return sum(self.cost_details.values()) if self.cost_details else None


@dataclass
class StoredScore:
    """A numeric score attached to an observation."""

    id: str
    name: str
    value: float
    timestamp: datetime
    observation_id: str | None
    trace_id: str | None
    data_type: str = "NUMERIC"
    source: str = "API"
    environment: str = "default"


def openrouter_generation(
    model: str,
    start_time: datetime,
    *,
    pricing: Mapping[str, str],
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    reported: Literal["exact", "none"] | Decimal = "exact",
    provider: str = "Anthropic",
    duration: timedelta = timedelta(seconds=2),
    langfuse_model: str | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    trace_id: str | None = None,
    openrouter: Mapping[str, Any] | None = None,
) -> tuple[StoredGeneration, StoredScore | None]:
    """A generation with usage, cost and metadata.openrouter as the handlers record them, and its score.

    `reported`: "exact" - OpenRouter reported the computed cost; "none" - no reported cost (computed);
    a `Decimal` - that reported cost (a disagreement when it differs). The score is the handlers'
    `openrouter_cache_savings_usd`, dated at the end of the call, when the savings are known.
    `openrouter`: more `metadata.openrouter` fields (e.g. `prefix_hashes`, `cache_control`); a None value
    removes the field. `session_id`, `user_id`, `trace_id`: the trace the generation belongs to.
    """
    generation_id = f"gen-{int(start_time.timestamp())}-{secrets.token_hex(10)}"
    raw_usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": cache_write_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }
    response = {"id": generation_id, "provider": provider, "model": model, "usage": raw_usage}
    prices = ModelPricing.from_openrouter(dict(pricing), source="models")
    if reported != "none":
        computed = compute_cost(OpenRouterUsage.from_openrouter(response), prices).total
        cost = computed if reported == "exact" else reported
        raw_usage.update(
            cost=float(cost), is_byok=False, cost_details={"upstream_inference_cost": float(cost)}
        )
    usage = OpenRouterUsage.from_openrouter(response)
    breakdown = compute_cost(usage, prices)
    usage_details, cost_details, metadata = to_langfuse(usage, breakdown)
    for key, value in (openrouter or {}).items():
        if value is None:
            metadata["openrouter"].pop(key, None)
        else:
            metadata["openrouter"][key] = value
    generation = StoredGeneration(
        id=secrets.token_hex(8),
        trace_id=trace_id or secrets.token_hex(16),
        session_id=session_id,
        user_id=user_id,
        start_time=start_time,
        end_time=start_time + duration,
        model=langfuse_model or model,
        usage_details=usage_details,
        cost_details=cost_details,
        metadata=metadata,
    )
    score = None
    if breakdown.cache_savings is not None:
        score = StoredScore(
            id=secrets.token_hex(8),
            name=SAVINGS_SCORE_NAME,
            value=float(breakdown.cache_savings),
            timestamp=generation.end_time,
            observation_id=generation.id,
            trace_id=generation.trace_id,
        )
    return generation, score


_OBSERVATION_TYPE = "langfuse.observation.type"
_METADATA_PREFIX = "langfuse.observation.metadata."
_TRACE_ATTRIBUTES = {"session_id": "session.id", "user_id": "user.id", "trace_name": "langfuse.trace.name"}


def _decoded(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def stored_generations(
    spans: Iterable[Any], *, shift: Mapping[str, timedelta] | None = None
) -> list[StoredGeneration]:
    """What Langfuse stores for exported OTLP spans (``ExportedSpan``s): their generations.

    Type, model, usage and cost details and metadata come from the ``langfuse.observation.*``
    attributes (JSON values decoded, as the server does); session, user and trace name from the span's
    ``session.id`` / ``user.id`` / ``langfuse.trace.name``, else from any span of its trace (the trace's
    values, which Langfuse gives each observation). ``shift``: per span id, time added to its start and
    end, to simulate calls made later (a cache lifetime passing without waiting for it).
    """
    spans = list(spans)
    trace_values: dict[str, dict[str, str]] = {}
    for span in spans:
        values = trace_values.setdefault(span.trace_id, {})
        for field_name, key in _TRACE_ATTRIBUTES.items():
            value = span.attributes.get(key)
            if isinstance(value, str) and value and field_name not in values:
                values[field_name] = value
    stored = []
    for span in spans:
        if span.attributes.get(_OBSERVATION_TYPE) != "generation":
            continue
        attributes = span.attributes
        offset = (shift or {}).get(span.span_id, timedelta(0))
        metadata = {
            key[len(_METADATA_PREFIX) :]: _decoded(value)
            for key, value in attributes.items()
            if key.startswith(_METADATA_PREFIX)
        }
        values = trace_values.get(span.trace_id, {})
        stored.append(
            StoredGeneration(
                id=span.span_id,
                trace_id=span.trace_id,
                start_time=datetime.fromtimestamp(span.start_time_unix_nano / 1e9, tz=timezone.utc) + offset,
                end_time=datetime.fromtimestamp(span.end_time_unix_nano / 1e9, tz=timezone.utc) + offset,
                model=attributes.get("langfuse.observation.model.name"),
                usage_details={
                    k: v
                    for k, v in (_decoded(attributes.get("langfuse.observation.usage_details")) or {}).items()
                    if isinstance(v, int) and v >= 0
                },
                cost_details=_decoded(attributes.get("langfuse.observation.cost_details")) or {},
                metadata=metadata,
                name=span.name,
                session_id=values.get("session_id"),
                user_id=values.get("user_id"),
                trace_name=values.get("trace_name"),
            )
        )
    return stored


@dataclass
class Fault:
    """One canned response for an endpoint."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class _BadRequest(Exception):
    pass


# -- metrics ---------------------------------------------------------------------------------------

_AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": lambda values: sum(values),
    "count": lambda values: len(values),
    "avg": lambda values: sum(values) / len(values) if values else 0,
    "min": lambda values: min(values) if values else 0,
    "max": lambda values: max(values) if values else 0,
}
_INTEGER_MEASURES = {"count", "inputTokens", "outputTokens", "totalTokens", "usageByType", "countScores"}


def _keys_containing(details: Mapping[str, float], word: str) -> float:
    return sum(value for key, value in details.items() if word in key.lower())


@dataclass
class _Row:
    """One row of a view (a generation, one of its usage/cost keys, or a score)."""

    dimensions: dict[str, Any]
    measures: dict[str, float | None]
    moment: datetime


def _generation_rows(generation: StoredGeneration, explode: str | None) -> list[_Row]:
    g = generation
    dimensions = {
        "providedModelName": g.model,
        "type": g.type,
        "name": g.name,
        "environment": g.environment,
        "startTimeMonth": g.start_time.strftime("%Y-%m"),
    }
    measures: dict[str, float | None] = {
        "count": 1,
        "totalCost": g.total_cost,
        "inputTokens": _keys_containing(g.usage_details, "input"),
        "outputTokens": _keys_containing(g.usage_details, "output"),
        "totalTokens": g.usage_details.get("total", 0),
        "inputCost": _keys_containing(g.cost_details, "input"),
        "outputCost": _keys_containing(g.cost_details, "output"),
    }
    if explode is None:
        return [_Row(dimensions, measures, g.start_time)]
    source, dimension, measure = (
        (g.usage_details, "usageType", "usageByType")
        if explode == "usage"
        else (g.cost_details, "costType", "costByType")
    )
    return [
        _Row({**dimensions, dimension: key}, {**measures, measure: value}, g.start_time)
        for key, value in source.items()
    ]


_OBSERVATION_DIMENSIONS = {
    "providedModelName",
    "type",
    "name",
    "environment",
    "startTimeMonth",
    "usageType",
    "costType",
}
_OBSERVATION_MEASURES = {
    "count",
    "totalCost",
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "inputCost",
    "outputCost",
    "usageByType",
    "costByType",
}
_SCORE_DIMENSIONS = {
    "name",
    "dataType",
    "source",
    "environment",
    "timestampDay",
    "observationModelName",
    "value",
}
_SCORE_OBSERVATION_DIMENSIONS = {"observationModelName"}
_SCORE_MEASURES = {"count", "value"}


class FakeLangfuseAPI(BackgroundHTTPServer["_Handler"]):
    """Langfuse's metrics and observations read API over stored generations and scores."""

    def __init__(self, public_key: str = "pk-lf-report-test", secret_key: str = "sk-lf-report-test") -> None:
        super().__init__()
        self.handler_class = _Handler
        self.public_key = public_key
        self.secret_key = secret_key
        self.generations: list[StoredGeneration] = []
        self.scores: list[StoredScore] = []
        self.metadata_style: Literal["object", "json", "flattened"] = "object"
        self.page_size_cap: int | None = None
        self.metrics_status: int | None = None
        self.unsupported_measures: set[str] = set()
        self._faults: dict[str, deque[Fault]] = {}
        self._data_lock = threading.Lock()

    # -- knobs ---------------------------------------------------------------------------------------

    def add(self, generation: StoredGeneration, score: StoredScore | None = None) -> None:
        """Store a generation and (unless None) its score."""
        with self._data_lock:
            self.generations.append(generation)
            if score is not None:
                self.scores.append(score)

    def fail(
        self,
        endpoint: Literal["metrics", "observations"],
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next `times` requests to `endpoint` with `status` (then normally again)."""
        queue = self._faults.setdefault(endpoint, deque())
        for _ in range(times):
            queue.append(Fault(status, dict(headers or {}), body))

    def reset(self) -> None:
        """Forget data, knobs and recorded requests."""
        with self._data_lock:
            self.generations.clear()
            self.scores.clear()
        self.metadata_style = "object"
        self.page_size_cap = None
        self.metrics_status = None
        self.unsupported_measures = set()
        self._faults.clear()
        with self._lock:
            self._requests.clear()

    def requests_to(self, path: str) -> list[Any]:
        """The recorded requests to `path`."""
        return [r for r in self.requests if r.path == path]

    @property
    def metrics_queries(self) -> list[dict[str, Any]]:
        """The decoded `query` of every metrics request, in order."""
        return [json.loads(r.query["query"][0]) for r in self.requests_to(METRICS_PATH) if "query" in r.query]

    def _take_fault(self, endpoint: str) -> Fault | None:
        queue = self._faults.get(endpoint)
        return queue.popleft() if queue else None

    # -- metrics -------------------------------------------------------------------------------------

    def metrics(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows Langfuse's v2 metrics API answers `query` with."""
        view = query.get("view")
        dimensions = [d.get("field") for d in query.get("dimensions") or []]
        metrics = [(m.get("measure"), m.get("aggregation")) for m in query.get("metrics") or []]
        filters = query.get("filters") or []
        if view == "observations":
            known_dimensions, known_measures = _OBSERVATION_DIMENSIONS, _OBSERVATION_MEASURES
        elif view == "scores-numeric":
            known_dimensions, known_measures = _SCORE_DIMENSIONS, _SCORE_MEASURES
        else:
            raise _BadRequest(f"View '{view}' is not supported in version 'v2'")
        for name in dimensions:
            if name not in known_dimensions:
                raise _BadRequest(f"Invalid dimension {name}. Must be one of {sorted(known_dimensions)}")
        if not metrics:
            raise _BadRequest("At least one metric must be provided")
        for measure, aggregation in metrics:
            if measure not in known_measures or measure in self.unsupported_measures:
                raise _BadRequest(f"Invalid metric {measure}. Must be one of {sorted(known_measures)}")
            if aggregation not in _AGGREGATIONS:
                raise _BadRequest(f"Invalid aggregation: {aggregation}")
        try:
            start, end = _parse_time(query["fromTimestamp"]), _parse_time(query["toTimestamp"])
        except (KeyError, ValueError) as exc:
            raise _BadRequest(f"fromTimestamp and toTimestamp are required ISO datetimes: {exc}") from None
        if end <= start:
            raise _BadRequest("toTimestamp must be after fromTimestamp")
        granularity = (query.get("timeDimension") or {}).get("granularity")
        if granularity not in (None, "day"):
            raise _BadRequest(f"the fake server only buckets by day, not {granularity}")
        limit = (query.get("config") or {}).get("row_limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise _BadRequest("config.row_limit must be between 1 and 1000")

        measures = [m for m, _ in metrics]
        if view == "observations":
            explode = None
            if "usageByType" in measures or "usageType" in dimensions:
                explode = "usage"
                dimensions = dimensions if "usageType" in dimensions else [*dimensions, "usageType"]
            if "costByType" in measures or "costType" in dimensions:
                if explode:
                    raise _BadRequest("Only one pairExpand dimension is supported per query")
                explode = "cost"
                dimensions = dimensions if "costType" in dimensions else [*dimensions, "costType"]
            with self._data_lock:
                rows = [row for g in self.generations for row in _generation_rows(g, explode)]
        else:
            joined = bool(_SCORE_OBSERVATION_DIMENSIONS & {*dimensions, *(f.get("column") for f in filters)})
            rows = self._score_rows(start, end, joined=joined)
        rows = [r for r in rows if start <= r.moment <= end]
        for condition in filters:
            rows = [r for r in rows if _matches(r, condition, view)]

        groups: dict[tuple[Any, ...], list[_Row]] = {}
        for row in rows:
            key = tuple(row.dimensions.get(d) for d in dimensions)
            if granularity:
                key += (row.moment.astimezone(timezone.utc).date().isoformat(),)
            groups.setdefault(key, []).append(row)
        result = [
            self._aggregate(key, members, dimensions, metrics, granularity) for key, members in groups.items()
        ]

        order = query.get("orderBy")
        if order:
            for item in reversed(order):
                name = item.get("field")
                result.sort(
                    key=lambda r, n=name: _sortable(r.get(n)), reverse=item.get("direction") == "desc"
                )
        elif granularity:  # default order plus WITH FILL: a zero row for every day without data
            present = {r["time_dimension"] for r in result}
            day = start.date()
            while day <= end.date():
                if day.isoformat() not in present:
                    filler: dict[str, Any] = dict.fromkeys(dimensions)
                    filler["time_dimension"] = day.isoformat()
                    for measure, aggregation in metrics:
                        filler[f"{aggregation}_{measure}"] = _wire(measure, aggregation, 0)
                    result.append(filler)
                day += timedelta(days=1)
            result.sort(key=lambda r: r["time_dimension"])
        return result[:limit]

    def _score_rows(self, start: datetime, end: datetime, *, joined: bool) -> list[_Row]:
        with self._data_lock:
            by_id = {g.id: g for g in self.generations}
            scores = list(self.scores)
        rows = []
        for s in scores:
            if s.data_type == "CATEGORICAL":
                continue
            observation = by_id.get(s.observation_id or "")
            if joined and (observation is None or not start <= observation.start_time <= end):
                continue  # INNER JOIN events_observations, with its own time window
            dimensions = {
                "name": s.name,
                "dataType": s.data_type,
                "source": s.source,
                "environment": s.environment,
                "timestampDay": s.timestamp.date().isoformat(),
                "value": s.value,
                "observationModelName": observation.model if observation else None,
            }
            rows.append(_Row(dimensions, {"count": 1, "value": s.value}, s.timestamp))
        return rows

    @staticmethod
    def _aggregate(
        key: tuple[Any, ...],
        members: list[_Row],
        dimensions: list[str],
        metrics: list[tuple[str, str]],
        granularity: str | None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = dict(zip(dimensions, key, strict=False))
        if granularity:
            out["time_dimension"] = key[-1]
        for measure, aggregation in metrics:
            values = [v for r in members if (v := r.measures.get(measure)) is not None]
            out[f"{aggregation}_{measure}"] = _wire(measure, aggregation, _AGGREGATIONS[aggregation](values))
        return out

    # -- observations --------------------------------------------------------------------------------

    def observations(self, params: dict[str, list[str]]) -> dict[str, Any]:
        """The page Langfuse's v2 observations API answers `params` with."""

        def one(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        if (one("parseIoAsJson") or "").lower() == "true":
            raise _BadRequest("parseIoAsJson is deprecated; remove it")
        limit = int(one("limit") or 50)
        if not 1 <= limit <= 1000:
            raise _BadRequest("limit must be between 1 and 1000")
        if self.page_size_cap:
            limit = min(limit, self.page_size_cap)
        groups = {"core", *(one("fields") or "core,basic").split(",")}
        expanded = set((one("expandMetadata") or "").split(",")) - {""}
        raw_filter = one("filter")
        if raw_filter:
            try:
                conditions = json.loads(raw_filter)
            except ValueError:
                raise _BadRequest("filter is not valid JSON") from None
            if not isinstance(conditions, list):
                raise _BadRequest("filter must be a JSON array")
        else:
            conditions = []
            if one("type"):
                conditions.append({"column": "type", "operator": "=", "value": one("type"), "type": "string"})
            if one("fromStartTime"):
                conditions.append({"column": "startTime", "operator": ">=", "value": one("fromStartTime")})
            if one("toStartTime"):
                conditions.append({"column": "startTime", "operator": "<", "value": one("toStartTime")})
            if one("name"):
                conditions.append({"column": "name", "operator": "=", "value": one("name"), "type": "string"})
        with self._data_lock:
            selected = [g for g in self.generations if all(_observation_matches(g, c) for c in conditions)]
        selected.sort(key=lambda g: (g.start_time, g.trace_id, g.id), reverse=True)
        cursor = one("cursor")
        if cursor:
            try:
                last = json.loads(base64.b64decode(cursor))
                last_key = (_parse_time(last["lastStartTimeTo"]), last["lastTraceId"], last["lastId"])
            except (ValueError, KeyError, TypeError):
                raise _BadRequest("Invalid cursor") from None
            selected = [g for g in selected if (g.start_time, g.trace_id, g.id) < last_key]
        page, more = selected[:limit], len(selected) > limit
        meta: dict[str, Any] = {}
        if more and page:
            last_item = page[-1]
            token = {"lastStartTimeTo": _iso(last_item.start_time), "lastTraceId": last_item.trace_id}
            token["lastId"] = last_item.id
            meta["cursor"] = base64.b64encode(json.dumps(token).encode()).decode()
        return {"data": [self._observation(g, groups, expanded) for g in page], "meta": meta}

    def _observation(self, g: StoredGeneration, groups: set[str], expanded: set[str]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": g.id,
            "traceId": g.trace_id,
            "startTime": _iso(g.start_time),
            "endTime": _iso(g.end_time),
            "projectId": PROJECT_ID,
            "parentObservationId": None,
            "type": g.type,
        }
        if "basic" in groups:
            item.update(
                name=g.name,
                level="DEFAULT",
                statusMessage=None,
                version=None,
                environment=g.environment,
                bookmarked=False,
                public=False,
                userId=g.user_id,
                sessionId=g.session_id,
                isRootObservation=False,
            )
        if "time" in groups:
            item.update(completionStartTime=None, createdAt=_iso(g.start_time), updatedAt=_iso(g.end_time))
        if "metadata" in groups:
            item["metadata"] = self._metadata(g.metadata, expanded)
        if "model" in groups:
            item.update(
                model=g.model,
                internalModelId=None,
                modelParameters=None,
                modelId=None,
                inputPrice=None,
                outputPrice=None,
                totalPrice=None,
            )
        if "trace_context" in groups:
            item.update(tags=[], release=None, traceName=g.trace_name)
        if "usage" in groups:
            item.update(
                usageDetails=g.usage_details,
                costDetails=g.cost_details,
                totalCost=g.total_cost,
                usagePricingTierName=None,
            )
        return item

    def _metadata(self, metadata: dict[str, Any], expanded: set[str]) -> dict[str, Any]:
        if self.metadata_style == "flattened":
            flat: dict[str, Any] = {}
            for key, value in metadata.items():
                if isinstance(value, Mapping):
                    for leaf, leaf_value in value.items():
                        if leaf_value is not None:
                            flat[f"{key}.{leaf}"] = (
                                leaf_value if isinstance(leaf_value, str) else json.dumps(leaf_value)
                            )
                else:
                    flat[key] = value
            return flat
        out: dict[str, Any] = {}
        for key, value in metadata.items():
            text = value if isinstance(value, str) else json.dumps(value)
            if key not in expanded and len(text) > _TRUNCATE_AT:
                out[key] = text[:_TRUNCATE_AT] + "..."
            elif self.metadata_style == "json":
                out[key] = text
            else:
                out[key] = value
        return out


def _wire(measure: str, aggregation: str, value: float) -> Any:
    """ClickHouse JSON: 64-bit integers quoted, decimals and floats as numbers."""
    if aggregation == "count" or (measure in _INTEGER_MEASURES and aggregation in ("sum", "min", "max")):
        return str(int(value))
    return value


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        try:
            return (1, float(value))
        except ValueError:
            return (2, value)
    return (1, value)


def _compare(actual: Any, operator: str, expected: Any) -> bool:
    if operator == "=":
        return actual == expected
    if operator in ("!=", "<>"):
        return actual != expected
    if operator == "any of":
        return actual in expected
    if operator == "none of":
        return actual not in expected
    if operator == "contains":
        return actual is not None and str(expected) in str(actual)
    if operator == "does not contain":
        return actual is None or str(expected) not in str(actual)
    if operator == "starts with":
        return actual is not None and str(actual).startswith(str(expected))
    if operator in (">", ">=", "<", "<="):
        if actual is None:
            return False
        if isinstance(actual, datetime):
            expected = _parse_time(expected)
        return {
            ">": actual > expected,
            ">=": actual >= expected,
            "<": actual < expected,
            "<=": actual <= expected,
        }[operator]
    if operator == "is null":
        return actual is None
    if operator == "is not null":
        return actual is not None
    raise _BadRequest(f"Invalid filter operator {operator}")


def _matches(row: _Row, condition: Mapping[str, Any], view: str) -> bool:
    column = condition.get("column")
    operator = condition.get("operator", "=")
    value = condition.get("value")
    if column in row.dimensions:
        return _compare(row.dimensions[column], operator, value)
    if column in ("start_time", "timestamp"):
        return _compare(row.moment, operator, value)
    raise _BadRequest(f"Invalid filter column {column} for view {view}")


_OBSERVATION_FILTER_COLUMNS: dict[str, Callable[[StoredGeneration], Any]] = {
    "id": lambda g: g.id,
    "type": lambda g: g.type,
    "name": lambda g: g.name,
    "traceId": lambda g: g.trace_id,
    "environment": lambda g: g.environment,
    "startTime": lambda g: g.start_time,
    "endTime": lambda g: g.end_time,
    "model": lambda g: g.model,
    "providedModelName": lambda g: g.model,
    "totalCost": lambda g: g.total_cost,
}


def _observation_matches(g: StoredGeneration, condition: Mapping[str, Any]) -> bool:
    column = condition.get("column")
    operator = condition.get("operator", "=")
    if column == "metadata":
        key = condition.get("key")
        value = g.metadata.get(key)
        text = value if isinstance(value, str) or value is None else json.dumps(value)
        return _compare(text, operator, condition.get("value"))
    if column not in _OBSERVATION_FILTER_COLUMNS:
        raise _BadRequest(f"Invalid filter column: {column}")
    return _compare(_OBSERVATION_FILTER_COLUMNS[column](g), operator, condition.get("value"))


class _Handler(QuietHandler):
    server_version = "langfuse-fake/1.0"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms per response
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        owner: FakeLangfuseAPI = self.server.owner
        request = self.record()
        owner._add_request(request)
        expected = "Basic " + base64.b64encode(f"{owner.public_key}:{owner.secret_key}".encode()).decode()
        if request.header("authorization") != expected:
            self.send_json(
                401, {"message": "Invalid credentials. Confirm that you've configured the correct host."}
            )
            return
        endpoint = {METRICS_PATH: "metrics", OBSERVATIONS_PATH: "observations"}.get(request.path)
        if endpoint is None:
            self.send_json(404, {"message": "Not Found", "error": "LangfuseNotFoundError"})
            return
        fault = owner._take_fault(endpoint)
        if fault is not None:
            self.send_json(fault.status, fault.body or {"message": f"fault {fault.status}"}, fault.headers)
            return
        try:
            if endpoint == "metrics":
                if owner.metrics_status is not None:
                    status = owner.metrics_status
                    message = "v2 APIs are currently in beta and only available on Langfuse Cloud"
                    self.send_json(status, {"message": message, "error": "LangfuseNotFoundError"})
                    return
                try:
                    query = json.loads(request.query["query"][0])
                except (KeyError, IndexError, ValueError):
                    raise _BadRequest("query must be a JSON object") from None
                self.send_json(200, {"data": owner.metrics(query)})
            else:
                self.send_json(200, owner.observations(request.query))
        except _BadRequest as exc:
            self.send_json(400, {"message": str(exc), "error": "InvalidRequestError"})
