"""An embedded Langfuse-compatible server for the demo: receives what the Langfuse SDK exports.

Accepts OTLP/HTTP protobuf traces at `/api/public/otel/v1/traces` (gzip or not) and scores at
`/api/public/scores`, and keeps them in memory, whatever the keys. Serves the received generations back
through the public observations API (`GET /api/public/v2/observations`, pages of `limit` with a `cursor`,
with their trace's `sessionId`, `userId` and `traceName` as Langfuse sets them from any span of the trace),
so the demo can check its export and the savings report works against it; it has no metrics API (404),
like a self-hosted Langfuse without the v2 APIs, so the report reads every generation.
`GET /api/public/projects` answers one project (the SDK's `auth_check()`). Other public API calls answer `{}`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..langfuse_fields import METADATA_KEY, read_generation
from ._http import EmbeddedServer, Handler

TRACES_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"
OBSERVATIONS_PATH = "/api/public/v2/observations"
METRICS_PATH = "/api/public/v2/metrics"
PROJECTS_PATH = "/api/public/projects"
_PROJECT = {
    "id": "embedded-demo",
    "name": "Embedded demo",
    "organization": {"id": "embedded", "name": "langfuse-openrouter demo"},
    "metadata": {},
}


@dataclass
class ReceivedSpan:
    """One span as the server received it, attributes decoded to Python values."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


class EmbeddedLangfuse(EmbeddedServer):
    """The demo's Langfuse on 127.0.0.1; point `Langfuse(base_url=...)` at `base_url`."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.spans: list[ReceivedSpan] = []
        self.scores: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return self.root_url

    def handle(self, request: Handler) -> None:
        path = request.path.split("?", 1)[0]
        if request.command == "POST" and path == TRACES_PATH:
            self._receive_traces(request)
        elif request.command == "POST" and path == SCORES_PATH:
            scores = json.loads(request.body() or b"[]")
            with self._lock:
                self.scores.extend(scores if isinstance(scores, list) else [scores])
            request.send_json(200, {})
        elif request.command == "GET" and path == OBSERVATIONS_PATH:
            query = parse_qs(urlsplit(request.path).query)
            found = self.observations(query)
            start = int((query.get("cursor") or ["0"])[0] or 0)
            limit = int((query.get("limit") or [0])[0] or 0) or len(found) or 1
            page, meta = found[start : start + limit], {}
            if start + limit < len(found):
                meta["cursor"] = str(start + limit)
            request.send_json(200, {"data": page, "meta": meta})
        elif request.command == "GET" and path == PROJECTS_PATH:
            request.send_json(200, {"data": [_PROJECT]})  # what `Langfuse.auth_check()` reads
        elif path == METRICS_PATH:
            request.send_json(404, {"message": "The metrics API is not available on this server"})
        else:
            request.body()
            request.send_json(200, {})

    def observations(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """The received generations as the v2 observations API lists them, newest first."""
        start = _time((query.get("fromStartTime") or [None])[0])
        end = _time((query.get("toStartTime") or [None])[0])
        with self._lock:
            spans = list(self.spans)
        traces: dict[str, dict[str, Any]] = {}  # what any span of a trace says of the trace
        for span in spans:
            said = traces.setdefault(span.trace_id, {})
            for key, attributes in _TRACE_ATTRIBUTES.items():
                if key not in said and (value := _first_string(span.attributes, attributes)) is not None:
                    said[key] = value
        found = []
        for span in sorted(spans, key=lambda s: s.start_time_unix_nano, reverse=True):
            generation = read_generation(span.attributes)
            started = datetime.fromtimestamp(span.start_time_unix_nano / 1e9, tz=timezone.utc)
            if generation is None or (start and started < start) or (end and started >= end):
                continue
            ended = datetime.fromtimestamp(span.end_time_unix_nano / 1e9, tz=timezone.utc)
            found.append(
                {
                    "id": span.span_id,
                    "traceId": span.trace_id,
                    "type": "GENERATION",
                    "name": span.name,
                    "startTime": started.isoformat(),
                    "endTime": ended.isoformat(),
                    "projectId": "embedded-demo",
                    "parentObservationId": span.parent_span_id,
                    "model": generation.model,
                    "usageDetails": generation.usage_details,
                    "costDetails": generation.cost_details,
                    "totalCost": generation.cost_details.get("total"),
                    "metadata": {METADATA_KEY: generation.openrouter} if generation.openrouter else {},
                    **{key: traces[span.trace_id].get(key) for key in _TRACE_ATTRIBUTES},
                }
            )
        return found

    def _receive_traces(self, request: Handler) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        export = ExportTraceServiceRequest()
        export.ParseFromString(request.body())
        received = []
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            start_time_unix_nano=span.start_time_unix_nano,
                            end_time_unix_nano=span.end_time_unix_nano,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(received)
        request.send_body(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


# Where Langfuse's OTel ingestion finds a trace's session, user and name, in its order
# (`OtelIngestionProcessor.extractSessionId` / `extractUserId`; LangChain puts them in the metadata).
_TRACE_ATTRIBUTES = {
    "sessionId": (
        "langfuse.session.id",
        "session.id",
        "gen_ai.conversation.id",
        "langfuse.observation.metadata.langfuse_session_id",
        "langfuse.trace.metadata.langfuse_session_id",
    ),
    "userId": (
        "langfuse.user.id",
        "user.id",
        "langfuse.observation.metadata.langfuse_user_id",
        "langfuse.trace.metadata.langfuse_user_id",
    ),
    "traceName": ("langfuse.trace.name",),
}


def _first_string(attributes: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first of `keys` set to a non-empty string, as it is (a metadata value is JSON: Langfuse keeps
    its quotes)."""
    return next((v for k in keys if isinstance(v := attributes.get(k), str) and v), None)


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
