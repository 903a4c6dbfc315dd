"""LlamaIndex: a one-line global handler for Langfuse 5, with OpenRouter cache usage, true cost and savings.

    from langfuse_openrouter_callbacks.llama_index import set_global_handler

    set_global_handler()      # before the LLMs and query engines are built

`llama_index.core.set_global_handler("langfuse")` needs a package that requires `langfuse<3`; this one
builds the Langfuse trace itself from LlamaIndex's callback events: a span per query / chat / agent
step, child observations for retrieval, synthesis, templating and function calls, a generation per
LLM call and an embedding observation per embedding call, nested by the events' parent ids.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from langfuse import Langfuse, get_client, propagate_attributes
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatInProgressEvent,
    LLMCompletionInProgressEvent,
)
from llama_index.core.instrumentation.span import active_span_id

from ._enrich import (
    Enrichment,
    end_after_lookup,
    enrich,
    has_openrouter_markers,
    is_openrouter_url,
    record_savings_score,
    update_and_record,
)
from ._log import log_exception_once
from .catalog import PriceCatalog
from .generation_stats import GenerationStatsFetcher, resolve_fetcher, watch_langfuse_client
from .langfuse_fields import usage_details
from .usage import OpenRouterUsage

__all__ = ["LlamaIndexCallbackHandler", "instrument", "set_global_handler", "trace_attributes"]

_TRACE_KEYS = ("user_id", "session_id", "tags", "trace_name", "metadata", "version")
_trace_attributes: ContextVar[dict[str, Any] | None] = ContextVar("lfor_trace_attributes", default=None)

# LlamaIndex event type -> Langfuse observation type
_OBSERVATION_TYPES = {
    CBEventType.LLM: "generation",
    CBEventType.EMBEDDING: "embedding",
    CBEventType.RETRIEVE: "retriever",
    CBEventType.FUNCTION_CALL: "tool",
    CBEventType.AGENT_STEP: "agent",
}
# LlamaIndex's LLM payload (`LLMMetadata`) name -> model parameter name
_MODEL_PARAMETERS = {
    "num_output": "max_tokens",
    "context_window": "context_window",
    "temperature": "temperature",
}
_LLM_BASE_URL_KEYS = ("api_base", "base_url")


@contextmanager
def trace_attributes(
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    tags: list[str] | None = None,
    trace_name: str | None = None,
    metadata: dict[str, Any] | None = None,
    version: str | None = None,
) -> Iterator[None]:
    """Trace attributes for the LlamaIndex calls made inside this block (they win over the handler's)."""
    given = {k: v for k, v in locals().items() if v is not None}
    outer = _trace_attributes.get() or {}
    token = _trace_attributes.set({**outer, **given})
    try:
        yield
    finally:
        _trace_attributes.reset(token)


@dataclass(slots=True)
class _Open:
    """An observation started for a LlamaIndex event and not yet ended."""

    observation: Any
    attributes: dict[str, Any]
    event_type: CBEventType
    requested_model: str | None = None
    openrouter: bool = False
    span_id: str | None = None
    first_chunk_at: datetime | None = None
    usage_chunk: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


# Open LLM calls by LlamaIndex dispatcher span id, for the per-chunk stream events.
_streams: dict[str, _Open] = {}


class _StreamEvents(BaseEventHandler):
    """Sees LlamaIndex's per-chunk stream events: first-token time and the usage chunk."""

    @classmethod
    def class_name(cls) -> str:
        return "LangfuseOpenRouterStreamEvents"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if not isinstance(event, (LLMChatInProgressEvent, LLMCompletionInProgressEvent)):
            return
        record = _streams.get(event.span_id or "")
        if record is None:
            return
        if record.first_chunk_at is None:
            record.first_chunk_at = datetime.now(timezone.utc)
        raw = getattr(event.response, "raw", None)
        if raw is not None and getattr(raw, "usage", None) is not None:
            record.usage_chunk = raw


_stream_events = _StreamEvents()
_stream_events_lock = threading.Lock()


def _listen_to_stream_events() -> None:
    with _stream_events_lock:
        dispatcher = get_dispatcher()
        if _stream_events not in dispatcher.event_handlers:
            dispatcher.add_event_handler(_stream_events)


class LlamaIndexCallbackHandler(BaseCallbackHandler):
    """LlamaIndex callback handler that records a Langfuse trace, OpenRouter cost included.

    Use it through `set_global_handler()`, or in `CallbackManager([handler])` /
    `Settings.callback_manager`. Arguments: the Langfuse client's (`public_key`, `secret_key`,
    `base_url`, ...; default: the client `langfuse.get_client()` resolves), trace attributes
    (`user_id`, `session_id`, `tags`, `trace_name`, `metadata`, `version`), `price_catalog`, and
    `savings_score` (record each call's cache savings as the numeric score `openrouter_cache_savings_usd`),
    `fetch_generation_stats` (reconcile each call with OpenRouter's `/generation` record, fetched in the
    background; default: the `LANGFUSE_OPENROUTER_FETCH_GENERATION_STATS` environment variable; needs
    `OPENROUTER_API_KEY`) and `generation_stats_fetcher` (a `GenerationStatsFetcher` of your own).
    """

    def __init__(
        self,
        *,
        price_catalog: PriceCatalog | None = None,
        savings_score: bool = False,
        fetch_generation_stats: bool | None = None,
        generation_stats_fetcher: GenerationStatsFetcher | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: list[str] | None = None,
        trace_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        version: str | None = None,
        **langfuse_kwargs: Any,
    ) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        if (
            langfuse_kwargs.get("secret_key")
            or langfuse_kwargs.get("base_url")
            or langfuse_kwargs.get("host")
        ):
            self.langfuse = Langfuse(**langfuse_kwargs)
        else:
            self.langfuse = get_client(public_key=langfuse_kwargs.get("public_key"))
        self.price_catalog = price_catalog if price_catalog is not None else PriceCatalog.shared()
        self.price_catalog.preload()
        self.savings_score = savings_score
        given = {
            "user_id": user_id,
            "session_id": session_id,
            "tags": tags,
            "trace_name": trace_name,
            "metadata": metadata,
            "version": version,
        }
        self.trace_attributes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self._generation_stats = resolve_fetcher(fetch_generation_stats, generation_stats_fetcher)
        if self._generation_stats is not None:
            watch_langfuse_client(self.langfuse)
        _listen_to_stream_events()

    def flush(self) -> None:
        """Export everything recorded so far (short scripts and notebooks).

        Pending `/generation` lookups are waited for first (bounded).
        """
        if self._generation_stats is not None:
            self._generation_stats.flush()
        self.langfuse.flush()

    # ------------------------------------------------------------------ LlamaIndex callbacks

    def start_trace(self, trace_id: str | None = None) -> None:
        """Nothing to do: each top-level event starts its own Langfuse trace."""

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        """Nothing to do: observations end with their events."""

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        try:
            self._start(event_type, payload or {}, event_id, parent_id)
        except Exception:
            log_exception_once(self._logged, "start", "could not record a LlamaIndex event in Langfuse")
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        with self._lock:
            record = self._open.pop(event_id, None)
        if record is None:
            return
        try:
            if record.span_id is not None:
                _streams.pop(record.span_id, None)
            self._end(record, payload or {})
        except Exception:
            log_exception_once(self._logged, "end", "could not finish a LlamaIndex event in Langfuse")
            try:
                record.observation.end()
            except Exception:
                log_exception_once(self._logged, "end-fallback", "could not end a Langfuse observation")

    # ------------------------------------------------------------------ starting

    def _start(
        self, event_type: CBEventType, payload: Mapping[str, Any], event_id: str, parent_id: str
    ) -> None:
        with self._lock:
            parent = self._open.get(parent_id)
        attributes = (
            parent.attributes if parent else {**self.trace_attributes, **(_trace_attributes.get() or {})}
        )
        as_type = _OBSERVATION_TYPES.get(event_type, "span")
        fields: dict[str, Any] = {"name": _event_name(event_type, payload), "as_type": as_type}
        record_fields: dict[str, Any] = {}
        if event_type == CBEventType.LLM:
            fields.update(_llm_start_fields(payload))
            serialized = payload.get(EventPayload.SERIALIZED) or {}
            record_fields["requested_model"] = fields.get("model")
            record_fields["openrouter"] = _is_openrouter_llm(serialized)
            record_fields["span_id"] = active_span_id.get()
        elif event_type == CBEventType.EMBEDDING:
            serialized = payload.get(EventPayload.SERIALIZED) or {}
            fields["model"] = serialized.get("model_name")
            fields["input"] = payload.get(EventPayload.CHUNKS)
        else:
            fields["input"] = _event_input(event_type, payload)
        with propagate_attributes(**attributes):
            if parent is None:
                observation = self.langfuse.start_observation(**fields)
            else:
                observation = parent.observation.start_observation(**fields)
        record = _Open(observation, attributes, event_type, **record_fields)
        with self._lock:
            self._open[event_id] = record
        if record.span_id is not None:
            _streams[record.span_id] = record

    # ------------------------------------------------------------------ ending

    def _end(self, record: _Open, payload: Mapping[str, Any]) -> None:
        observation = record.observation
        error = payload.get(EventPayload.EXCEPTION)
        if error is not None:
            fields: dict[str, Any] = {"level": "ERROR", "status_message": str(error)}
            if record.event_type == CBEventType.LLM:
                fields["cost_details"] = {"total": 0}
            observation.update(**fields).end()
            return
        if record.event_type == CBEventType.LLM:
            self._end_generation(record, payload)
        elif record.event_type == CBEventType.EMBEDDING:
            embeddings = payload.get(EventPayload.EMBEDDINGS) or []
            dimensions = len(embeddings[0]) if embeddings and isinstance(embeddings[0], Sequence) else None
            observation.update(output={"embeddings": len(embeddings), "dimensions": dimensions}).end()
        else:
            observation.update(output=_event_output(record.event_type, payload)).end()

    def _end_generation(self, record: _Open, payload: Mapping[str, Any]) -> None:
        ended_at = time.time_ns()  # the call's true end, also when the end is held back for a lookup
        response = payload.get(EventPayload.RESPONSE) or payload.get(EventPayload.COMPLETION)
        fields: dict[str, Any] = {"output": _llm_output(response)}
        if record.first_chunk_at is not None:
            fields["completion_start_time"] = record.first_chunk_at
        enrichment: Enrichment | None = None
        try:
            usage_fields, enrichment = self._usage_fields(record, response)
            fields.update(usage_fields)
        except Exception:
            log_exception_once(
                self._logged,
                "usage",
                "could not record OpenRouter cost on a Langfuse generation; it keeps its other data",
            )
        observation = record.observation
        if enrichment is None:
            observation.update(**fields)
        else:
            try:
                update_and_record(observation, enrichment, fields)
            except Exception:
                log_exception_once(
                    self._logged, "usage", "could not record OpenRouter cost on a Langfuse generation"
                )
                enrichment = None
        if enrichment is None:
            observation.end(end_time=ended_at)
            return
        stats = self._generation_stats if enrichment.usage.generation_id else None
        if stats is None:
            if self.savings_score:
                self._savings_score(record, enrichment)
            observation.end(end_time=ended_at)
            return
        end_after_lookup(
            stats,
            observation,
            enrichment,
            catalog=self.price_catalog,
            requested_model=record.requested_model,
            ended_at=ended_at,
            langfuse=self.langfuse,
            savings_score=self.savings_score,
            logged=self._logged,
        )

    def _savings_score(self, record: _Open, enrichment: Enrichment) -> None:
        try:
            observation = record.observation
            record_savings_score(
                self.langfuse, enrichment, trace_id=observation.trace_id, observation_id=observation.id
            )
        except Exception:
            log_exception_once(self._logged, "savings-score", "could not record the cache savings score")

    def _is_openrouter(self, record: _Open, usage: OpenRouterUsage) -> bool:
        """Whether OpenRouter answered: its LLM class or base URL, or what only it sends."""
        return record.openrouter or has_openrouter_markers(usage)

    def _usage_fields(self, record: _Open, response: Any) -> tuple[dict[str, Any], Enrichment | None]:
        """The generation's usage fields, and the OpenRouter enrichment they came from (if any)."""
        raw = getattr(response, "raw", None)
        usage = OpenRouterUsage.from_openrouter(raw)
        if usage.is_empty and record.usage_chunk is not None:  # usage came on an earlier stream chunk
            usage = OpenRouterUsage.from_openrouter(record.usage_chunk)
        if usage.is_empty:
            return {}, None
        fields: dict[str, Any] = {}
        if usage.model:
            fields["model"] = usage.model
        if self._is_openrouter(record, usage):
            # usage, cost and metadata go onto the span with the output: `update_and_record`
            return fields, enrich(usage, self.price_catalog, requested_model=record.requested_model)
        # another provider: its token counts, priced by Langfuse as usual
        fields["usage_details"] = usage_details(usage)
        return fields, None


# ---------------------------------------------------------------------------- payload readers


def _event_name(event_type: CBEventType, payload: Mapping[str, Any]) -> str:
    if event_type == CBEventType.FUNCTION_CALL:
        tool = payload.get(EventPayload.TOOL)
        name = getattr(tool, "name", None)
        if isinstance(name, str) and name:
            return name
    if event_type in (CBEventType.LLM, CBEventType.EMBEDDING):
        serialized = payload.get(EventPayload.SERIALIZED) or {}
        class_name = serialized.get("class_name")
        if isinstance(class_name, str) and class_name:
            return class_name.removesuffix("_LLM")
    return event_type.value


def _is_openrouter_llm(serialized: Mapping[str, Any]) -> bool:
    if serialized.get("class_name") == "OpenRouter_LLM":
        return True
    return any(is_openrouter_url(serialized.get(key)) for key in _LLM_BASE_URL_KEYS)


def _message_dict(message: Any) -> Any:
    role = getattr(message, "role", None)
    content = getattr(message, "content", None)
    if role is None:
        return str(message)
    out: dict[str, Any] = {"role": getattr(role, "value", role), "content": content}
    tool_calls = (getattr(message, "additional_kwargs", None) or {}).get("tool_calls")
    if tool_calls:
        out["tool_calls"] = [getattr(t, "model_dump", lambda t=t: t)() for t in tool_calls]
    return out


def _llm_start_fields(payload: Mapping[str, Any]) -> dict[str, Any]:
    serialized = payload.get(EventPayload.SERIALIZED) or {}
    messages = payload.get(EventPayload.MESSAGES)
    prompt = payload.get(EventPayload.PROMPT)
    parameters = {
        name: serialized[k] for k, name in _MODEL_PARAMETERS.items() if serialized.get(k) is not None
    }
    additional = payload.get(EventPayload.ADDITIONAL_KWARGS) or {}
    parameters.update({k: v for k, v in additional.items() if isinstance(v, (str, int, float, bool))})
    return {
        "model": serialized.get("model_name") or serialized.get("model"),
        "model_parameters": parameters or None,
        "input": [_message_dict(m) for m in messages] if messages is not None else prompt,
    }


def _llm_output(response: Any) -> Any:
    message = getattr(response, "message", None)
    if message is not None:
        return _message_dict(message)
    text = getattr(response, "text", None)
    return text if text is not None else None


def _nodes(nodes: Any) -> Any:
    if not isinstance(nodes, list):
        return nodes
    out = []
    for node in nodes:
        inner = getattr(node, "node", node)
        out.append(
            {
                "id": getattr(inner, "node_id", None),
                "score": getattr(node, "score", None),
                "text": getattr(inner, "text", None),
            }
        )
    return out


def _event_input(event_type: CBEventType, payload: Mapping[str, Any]) -> Any:
    if EventPayload.QUERY_STR in payload:
        return payload[EventPayload.QUERY_STR]
    if event_type == CBEventType.TEMPLATING:
        return {
            "template": payload.get(EventPayload.TEMPLATE),
            "template_vars": payload.get(EventPayload.TEMPLATE_VARS),
            "system_prompt": payload.get(EventPayload.SYSTEM_PROMPT),
        }
    if event_type == CBEventType.FUNCTION_CALL:
        return payload.get(EventPayload.FUNCTION_CALL)
    if EventPayload.MESSAGES in payload:
        return [_message_dict(m) for m in payload[EventPayload.MESSAGES]]
    if EventPayload.CHUNKS in payload:
        return payload[EventPayload.CHUNKS]
    return None


def _event_output(event_type: CBEventType, payload: Mapping[str, Any]) -> Any:
    if EventPayload.NODES in payload:
        return _nodes(payload[EventPayload.NODES])
    if EventPayload.FUNCTION_OUTPUT in payload:
        return str(payload[EventPayload.FUNCTION_OUTPUT])
    response = payload.get(EventPayload.RESPONSE)
    if response is not None:
        text = getattr(response, "response", None)
        if text is not None:
            return text
        message = getattr(response, "message", None)
        return _message_dict(message) if message is not None else str(response)
    return None


# ---------------------------------------------------------------------------- one line


def set_global_handler(**kwargs: Any) -> LlamaIndexCallbackHandler:
    """Make a `LlamaIndexCallbackHandler` LlamaIndex's global handler; returns it.

    Takes the handler's arguments. Call it before building LLMs and query engines: LlamaIndex
    gives the global handler to the callback managers created after it is set.
    """
    import llama_index.core
    from llama_index.core.settings import Settings

    handler = LlamaIndexCallbackHandler(**kwargs)
    llama_index.core.global_handler = handler
    existing = Settings._callback_manager  # one made before: give it the handler too
    if existing is not None:
        existing.handlers[:] = [h for h in existing.handlers if not isinstance(h, LlamaIndexCallbackHandler)]
        existing.add_handler(handler)
    return handler


def instrument(**kwargs: Any) -> Any:
    """OpenInference's LlamaIndex instrumentation with our OpenRouter enrichment (see `_openinference`)."""
    from ._openinference import instrument as _instrument

    return _instrument(**kwargs)
