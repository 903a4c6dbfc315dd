"""A local OTLP/HTTP receiver that stands in for a Langfuse server's trace ingestion.

Langfuse's SDK exports spans as OTLP/HTTP protobuf (gzip by default) to
``{base_url}/api/public/otel/v1/traces``. :class:`OTLPReceiver` accepts exactly that, decodes it
with ``ExportTraceServiceRequest`` and keeps the spans as plain :class:`ExportedSpan` objects.
Every request (headers and raw bytes included) is recorded for secret-scanning assertions.
Any other path answers ``200 {}`` (``/api/public/projects`` answers a one-project list) and
is recorded too. A runtime failure mode (status code, count, delay) supports reliability tests.

Usage::

    with OTLPReceiver() as receiver:
        langfuse = Langfuse(public_key="pk", secret_key="sk", base_url=receiver.base_url)
        ...
        langfuse.flush()
        gen = receiver.wait_for(lambda spans: any(s.is_generation for s in spans))
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ._http import BackgroundHTTPServer, QuietHandler, RecordedRequest

__all__ = [
    "TRACES_PATH",
    "ExportedSpan",
    "OTLPReceiver",
    "SpanEvent",
    "any_value_to_python",
    "attributes_to_dict",
    "decode_export_request",
    "decode_langfuse_attributes",
]

TRACES_PATH = "/api/public/otel/v1/traces"

OBSERVATION_TYPE = "langfuse.observation.type"
USAGE_DETAILS = "langfuse.observation.usage_details"
COST_DETAILS = "langfuse.observation.cost_details"
METADATA_PREFIX = "langfuse.observation.metadata"
MODEL_NAME = "langfuse.observation.model.name"


def any_value_to_python(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to the equivalent plain Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_to_dict(attributes: Sequence[KeyValue]) -> dict[str, Any]:
    """Convert repeated OTLP ``KeyValue`` attributes to a dict."""
    return {kv.key: any_value_to_python(kv.value) for kv in attributes}


def _maybe_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def decode_langfuse_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """JSON-decode the Langfuse observation attributes that the SDK stores as JSON strings.

    Returns ``{"usage_details": dict | None, "cost_details": dict | None,
    "metadata": {key: decoded value}}``. ``langfuse.observation.metadata.<key>`` attributes are
    one JSON document per key (v5 SDKs encode strings too); a bare
    ``langfuse.observation.metadata`` (non-dict metadata) lands under the key ``""``.
    """
    metadata: dict[str, Any] = {}
    for key, value in attributes.items():
        if key == METADATA_PREFIX:
            metadata[""] = _maybe_json(value)
        elif key.startswith(METADATA_PREFIX + "."):
            metadata[key[len(METADATA_PREFIX) + 1 :]] = _maybe_json(value)
    usage = attributes.get(USAGE_DETAILS)
    cost = attributes.get(COST_DETAILS)
    return {
        "usage_details": json.loads(usage) if isinstance(usage, str) else usage,
        "cost_details": json.loads(cost) if isinstance(cost, str) else cost,
        "metadata": metadata,
    }


@dataclass(frozen=True)
class SpanEvent:
    """An OTLP span event (e.g. a recorded exception)."""

    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ExportedSpan:
    """One decoded span, with attributes as plain Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    status_code: str
    """``"UNSET"``, ``"OK"`` or ``"ERROR"``."""
    status_message: str
    kind: str
    """``"INTERNAL"``, ``"CLIENT"``, ... (``SPAN_KIND_`` prefix removed)."""
    resource_attributes: dict[str, Any]
    scope_name: str
    scope_version: str
    events: tuple[SpanEvent, ...] = ()
    request_index: int = 0
    """Index into :attr:`OTLPReceiver.requests` of the export request that carried it."""

    @property
    def status(self) -> tuple[str, str]:
        """``(status_code, status_message)``."""
        return self.status_code, self.status_message

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_time_unix_nano - self.start_time_unix_nano

    @property
    def observation_type(self) -> str | None:
        """The ``langfuse.observation.type`` attribute (``"generation"``, ``"span"``, ...)."""
        value = self.attributes.get(OBSERVATION_TYPE)
        return value if isinstance(value, str) else None

    @property
    def is_generation(self) -> bool:
        """True for Langfuse generation observations."""
        return self.observation_type == "generation"

    @property
    def model_name(self) -> str | None:
        """The ``langfuse.observation.model.name`` attribute."""
        value = self.attributes.get(MODEL_NAME)
        return value if isinstance(value, str) else None

    @property
    def usage_details(self) -> dict[str, Any] | None:
        """Decoded ``langfuse.observation.usage_details`` (``None`` when absent)."""
        return decode_langfuse_attributes(self.attributes)["usage_details"]

    @property
    def cost_details(self) -> dict[str, Any] | None:
        """Decoded ``langfuse.observation.cost_details`` (``None`` when absent)."""
        return decode_langfuse_attributes(self.attributes)["cost_details"]

    @property
    def metadata(self) -> dict[str, Any]:
        """Decoded ``langfuse.observation.metadata.<key>`` attributes keyed by ``<key>``."""
        return decode_langfuse_attributes(self.attributes)["metadata"]

    def decoded(self) -> dict[str, Any]:
        """See :func:`decode_langfuse_attributes`."""
        return decode_langfuse_attributes(self.attributes)

    def json_attribute(self, key: str) -> Any:
        """Attribute ``key`` JSON-decoded when it is a JSON string, else as stored."""
        return _maybe_json(self.attributes.get(key))


def _span_from_proto(
    span: Span, resource: dict[str, Any], scope_name: str, scope_version: str, request_index: int
) -> ExportedSpan:
    return ExportedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        attributes=attributes_to_dict(span.attributes),
        status_code=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message,
        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        resource_attributes=resource,
        scope_name=scope_name,
        scope_version=scope_version,
        events=tuple(
            SpanEvent(e.name, e.time_unix_nano, attributes_to_dict(e.attributes)) for e in span.events
        ),
        request_index=request_index,
    )


def decode_export_request(body: bytes, content_type: str, request_index: int = 0) -> list[ExportedSpan]:
    """Decode an OTLP/HTTP trace export body (protobuf or JSON) into spans."""
    message = ExportTraceServiceRequest()
    if "json" in content_type:
        json_format.Parse(body, message)
    else:
        message.ParseFromString(body)
    spans: list[ExportedSpan] = []
    for resource_spans in message.resource_spans:
        resource = attributes_to_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    _span_from_proto(
                        span, resource, scope_spans.scope.name, scope_spans.scope.version, request_index
                    )
                )
    return spans


@dataclass
class _FailureMode:
    status: int
    remaining: int | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _OTLPHandler(QuietHandler):
    server_version = "fake-langfuse/1.0"

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    def do_PUT(self) -> None:
        self.server.owner._handle(self)

    def do_PATCH(self) -> None:
        self.server.owner._handle(self)

    def do_DELETE(self) -> None:
        self.server.owner._handle(self)


class OTLPReceiver(BackgroundHTTPServer[_OTLPHandler]):
    """Fake Langfuse OTLP endpoint on 127.0.0.1:0 that decodes and stores exported spans."""

    handler_class = _OTLPHandler

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._spans: list[ExportedSpan] = []
        self._changed = threading.Condition(self._lock)
        self._failure: _FailureMode | None = None
        self._response_delay = 0.0
        self._rejected = 0
        self._json_routes: dict[tuple[str, str], tuple[int, Any]] = {
            ("GET", "/api/public/projects"): (200, {"data": [{"id": "test-project", "name": "test"}]}),
        }
        self._hung_paths: set[str] = set()
        self._release = threading.Event()
        self._held = 0

    def start(self) -> OTLPReceiver:
        """Start serving; returns ``self``."""
        super().start()
        return self

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    # -- configuration ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Pass this as ``Langfuse(base_url=...)``."""
        return self.root_url

    @property
    def traces_url(self) -> str:
        """Full OTLP traces endpoint URL."""
        return self.root_url + TRACES_PATH

    def fail_with(
        self,
        status: int = 500,
        *,
        times: int | None = None,
        body: bytes = b'{"message":"fake failure"}',
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer trace exports with ``status`` (``times`` requests, or all when ``None``).

        Failed exports are recorded as requests but their spans are not stored. Note that
        the OTLP exporter retries 429/502/503/504 with exponential backoff (up to the
        Langfuse ``timeout``); other statuses such as 500 fail the batch immediately.
        """
        with self._lock:
            self._failure = _FailureMode(status, times, body, dict(headers or {}))

    def heal(self) -> None:
        """Leave failure mode, and answer the requests held by :meth:`hang`."""
        with self._lock:
            self._failure = None
            self._hung_paths.clear()
            self._release.set()

    def hang(self, path: str) -> None:
        """Accept requests to ``path`` (e.g. ``/api/public/scores``) and never answer them: the
        connection stays open until :meth:`heal`, :meth:`reset` or :meth:`stop` (then a 503)."""
        with self._lock:
            if not self._hung_paths:
                self._release = threading.Event()
            self._hung_paths.add(path)

    @property
    def held(self) -> int:
        """Requests being held open by :meth:`hang` right now."""
        with self._lock:
            return self._held

    def stop(self) -> None:
        """Release held requests, then stop serving."""
        self.heal()
        super().stop()

    @property
    def failing(self) -> bool:
        """Whether the next trace export will be answered with a failure."""
        with self._lock:
            return self._failure is not None

    @property
    def rejected_exports(self) -> int:
        """Number of trace exports answered with a failure so far."""
        with self._lock:
            return self._rejected

    def set_response_delay(self, seconds: float) -> None:
        """Sleep this long before answering every request (slow ingestion)."""
        self._response_delay = seconds

    def set_json_route(self, method: str, path: str, status: int, payload: Any) -> None:
        """Answer ``method path`` (other than the traces path) with ``payload``."""
        with self._lock:
            self._json_routes[(method.upper(), path)] = (status, payload)

    # -- inspection -----------------------------------------------------------------------

    @property
    def spans(self) -> list[ExportedSpan]:
        """Copy of all stored spans in arrival order."""
        with self._lock:
            return list(self._spans)

    @property
    def trace_requests(self) -> list[RecordedRequest]:
        """Requests to the OTLP traces path (accepted or rejected)."""
        return [r for r in self.requests if r.path == TRACES_PATH]

    @property
    def other_requests(self) -> list[RecordedRequest]:
        """Requests to any other path."""
        return [r for r in self.requests if r.path != TRACES_PATH]

    def generations(self) -> list[ExportedSpan]:
        """Spans whose ``langfuse.observation.type`` is ``"generation"``."""
        return [s for s in self.spans if s.is_generation]

    def scores(self) -> list[dict[str, Any]]:
        """The scores Langfuse's client sent (``POST /api/public/scores``, a JSON list per request)."""
        return [score for r in self.other_requests if r.path == "/api/public/scores" for score in r.json()]

    def spans_named(self, name: str) -> list[ExportedSpan]:
        """Spans with exactly this name."""
        return [s for s in self.spans if s.name == name]

    def all_wire_bytes(self) -> bytes:
        """Every raw and decoded body plus all header lines, for secret scanning."""
        parts: list[bytes] = []
        for r in self.requests:
            parts.extend(f"{k}: {v}".encode() for k, v in r.raw_headers)
            parts.extend((r.raw_body, r.body))
        return b"\n".join(parts)

    def clear(self) -> None:
        """Forget stored spans and recorded requests (configuration is kept)."""
        with self._lock:
            self._spans.clear()
            self._requests.clear()
            self._rejected = 0
            self._changed.notify_all()

    def reset(self) -> None:
        """:meth:`clear` plus leave failure mode (answering held requests) and drop the response delay."""
        with self._lock:
            self.clear()
            self.heal()
            self._response_delay = 0.0

    def wait_for(
        self,
        predicate: Callable[[list[ExportedSpan]], bool],
        timeout: float = 5.0,
    ) -> list[ExportedSpan]:
        """Block until ``predicate(spans)`` is true; return the spans. Raises ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                spans = list(self._spans)
                if predicate(spans):
                    return spans
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [(s.name, s.observation_type) for s in spans]
                    raise TimeoutError(f"predicate not satisfied within {timeout}s; spans seen: {names}")
                self._changed.wait(remaining)

    def wait_for_generations(self, count: int = 1, timeout: float = 5.0) -> list[ExportedSpan]:
        """Wait until at least ``count`` generation spans arrived; return all generations."""
        spans = self.wait_for(lambda s: sum(x.is_generation for x in s) >= count, timeout)
        return [s for s in spans if s.is_generation]

    # -- request handling -------------------------------------------------------------------

    def _handle(self, handler: _OTLPHandler) -> None:
        request = handler.record()
        with self._lock:
            self._requests.append(request)
            index = len(self._requests) - 1
            failure = self._failure
            if failure is not None and request.path == TRACES_PATH:
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failure = None
                self._rejected += 1
            self._changed.notify_all()
        with self._lock:
            release = self._release if request.path in self._hung_paths else None
            if release is not None:
                self._held += 1
        if release is not None:
            try:
                release.wait(600)
            finally:
                with self._lock:
                    self._held -= 1
            with contextlib.suppress(OSError):  # the client gave up long ago
                handler.send_json(503, {"message": "fake hang released"})
            return
        if self._response_delay:
            time.sleep(self._response_delay)
        if request.path != TRACES_PATH:
            with self._lock:
                status, payload = self._json_routes.get((request.method, request.path), (200, {}))
            handler.send_json(status, payload)
            return
        if failure is not None:
            handler.send_bytes(failure.status, failure.body, "application/json", failure.headers)
            return
        content_type = request.header("content-type", "application/x-protobuf") or ""
        try:
            spans = decode_export_request(request.body, content_type, index)
        except Exception as exc:  # malformed payload: answer like a collector would
            handler.send_json(400, {"message": f"cannot decode OTLP payload: {exc}"})
            return
        with self._lock:
            self._spans.extend(spans)
            self._changed.notify_all()
        if "json" in content_type:
            handler.send_bytes(200, b"{}", "application/json")
        else:
            handler.send_bytes(
                200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
            )
