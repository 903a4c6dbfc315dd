"""LlamaIndex through OpenInference: OpenRouter's cache usage, true cost and savings on its LLM spans.

    from langfuse_openrouter_callbacks.llama_index import instrument

    instrument()   # instead of LlamaIndexInstrumentor().instrument(), with the Langfuse client

Langfuse's documented LlamaIndex path is OpenInference's `LlamaIndexInstrumentor` exporting through the
Langfuse client's TracerProvider. `instrument()` turns it on (with Langfuse's TracerProvider unless one
is given) and adds one LlamaIndex instrumentation event handler. For each call answered by OpenRouter it
writes Langfuse's own attributes on OpenInference's spans while they are still open: an OpenTelemetry
span is frozen once it ends, so nothing can be added at export time.

What OpenInference 4.6 makes of one `OpenRouter(...).chat()`. The same holds for `OpenAILike`, for
`complete`, and for the streaming and async methods. LlamaIndex opens one span for the subclass's
method (`OpenAILike.chat`) and one for the method it delegates to (`OpenAI.chat`). Both are named after
the instance's class. Only the inner one's `llm_chat_callback` emits the call's events:

    OpenRouter.chat    outer  LLM  llm.model_name, input.value, output.value         no tokens
      OpenRouter.chat  inner  LLM  llm.model_name, llm.input/output_messages,
                                   llm.token_count.{prompt,completion,total,
                                   prompt_details.cache_read,completion_details.reasoning}
                                   (no cache writes, no cost)

`predict` adds one more LLM span above the outer one. So does `OpenAILike(is_chat_model=False).chat`,
which calls `complete`.

Which span gets the enrichment: the inner span, because the events name it and it carries the tokens.
It becomes the call's generation: `type` "generation", the model id the response names, our
`usage_details`, `cost_details` and `metadata.openrouter`.

How the wrappers are neutralized: each LLM span with a model name above it, up to the first span that
is neither, is the same call seen from further out. Left alone, such a span has a model and an input
but no usage, and the Langfuse server may tokenize and price it: the call would count twice. Each gets
`langfuse.observation.type` "span" and `cost_details` `{"total": 0}`. The server reads
`langfuse.observation.type` before `openinference.span.kind`. A span observation keeps no model, usage
or cost, so it can be neither tokenized nor priced. The explicit zero also holds on a server that still
types it as a generation. The trace's total is then OpenRouter's cost, counted once.

Streams: OpenRouter always sends a usage chunk last (LlamaIndex sends no `stream_options`). The openai
SDK parses it, and it arrives as the last `LLM*InProgressEvent` and as the end event's `response.raw`.
The enrichment is written at that chunk, while OpenInference still holds the stream's span open (it
ends the span on the end event). The handler also sits first among the dispatcher's handlers, so the
end event reaches it before OpenInference ends the span. A stream's generation also gets its completion
start time: the time of its first `LLM*InProgressEvent` (the first chunk handed to the caller). Note that
OpenInference dates a stream's span end at the time its method returned, before any chunk arrived.

OpenInference makes every span of an LLM's method an LLM span with the model's name, also those that send
no request (`FunctionCallingLLM._prepare_chat_with_tools`, run by every function-calling agent step):
Langfuse would type them generations and price their text by tokenizing it. A span handler, also first
among the dispatcher's, sees each span of an OpenRouter LLM exit while OpenInference still holds it open:
one that had no start event of its own and encloses none gets the wrapper attributes too.

A call counts as OpenRouter's when the LLM is `llama_index.llms.openrouter.OpenRouter` or the response
carries OpenRouter's cost, BYOK flag or `gen-` id. LlamaIndex's events do not carry the LLM's
`api_base`. Other calls, and every span when something fails, are exported exactly as OpenInference
made them. A failure is logged once per handler.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.span import SpanDropEvent
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from pydantic import PrivateAttr

from ._enrich import Enrichment, enrich, has_openrouter_markers, is_openrouter_url
from ._log import log_exception_once, logger
from .catalog import PriceCatalog
from .langfuse_fields import otel_attributes
from .usage import OpenRouterUsage

__all__ = ["Instrumentation", "instrument", "uninstrument"]

_OPENROUTER_CLASSES = ("OpenRouter_LLM",)  # `OpenRouter.class_name()`, in the events' model_dict
_LLM_KIND = OpenInferenceSpanKindValues.LLM.value
_MODEL_NAME = SpanAttributes.LLM_MODEL_NAME
# Per-call state is dropped at the call's end; a stream abandoned half-way never ends, so every
# table is bounded (the oldest entries go first), far above any number of calls in flight.
_MAX_TRACKED = 4096

_START_EVENTS = (LLMChatStartEvent, LLMCompletionStartEvent)
_PROGRESS_EVENTS = (LLMChatInProgressEvent, LLMCompletionInProgressEvent)
_END_EVENTS = (LLMChatEndEvent, LLMCompletionEndEvent)

#: What a wrapper span of an enriched call is given: Langfuse records it as a span, never priced.
_WRAPPER_ATTRIBUTES = otel_attributes(cost_details={"total": 0}, observation_type="span")


@dataclass(slots=True)
class _Call:
    requested_model: str | None
    openrouter: bool  # known to be OpenRouter from the LLM's class
    recorded: Any = None  # the stream chunk whose usage is already on the span
    first_chunk_at: datetime | None = None  # a stream's first chunk: its completion start time


def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > _MAX_TRACKED:
        table.popitem(last=False)


def _usage_of(raw: Any) -> Any:
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        return raw.get("usage")
    return getattr(raw, "usage", None)


class _Enricher:
    """Turns LlamaIndex's LLM events into Langfuse attributes on OpenInference's open spans."""

    def __init__(self, catalog: PriceCatalog) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._generations: OrderedDict[str, str] = OrderedDict()  # OpenRouter generation id -> span id
        self._wrappers: OrderedDict[str, None] = OrderedDict()  # span ids given the wrapper attributes
        self._requesting: OrderedDict[str, None] = OrderedDict()  # LLM spans that made or wrap a request
        self._logged: set[str] = set()

    def handle(self, event: BaseEvent) -> None:
        try:
            span_id = event.span_id
            if not span_id:
                return
            if isinstance(event, _START_EVENTS):
                self._start(span_id, event.model_dict)
            elif isinstance(event, _PROGRESS_EVENTS):
                self._chunk(span_id, event.timestamp)
                raw = getattr(event.response, "raw", None)
                if _usage_of(raw) is not None:  # OpenRouter's usage chunk, the stream's last
                    self._finish(span_id, raw, end=False)
            elif isinstance(event, _END_EVENTS):
                self._finish(span_id, getattr(event.response, "raw", None), end=True)
            elif isinstance(event, (ExceptionEvent, SpanDropEvent)):  # a stream's error; a call's
                with self._lock:
                    self._calls.pop(span_id, None)
        except Exception:
            log_exception_once(
                self._logged,
                "event",
                "could not record OpenRouter cost on an OpenInference span; it keeps OpenInference's data",
            )

    # ------------------------------------------------------------------ internals

    def _start(self, span_id: str, model_dict: Any) -> None:
        model_dict = model_dict if isinstance(model_dict, Mapping) else {}
        model = model_dict.get("model_name") or model_dict.get("model")
        call = _Call(
            requested_model=model if isinstance(model, str) and model else None,
            openrouter=model_dict.get("class_name") in _OPENROUTER_CLASSES,
        )
        with self._lock:
            _remember(self._calls, span_id, call)
        span = self._open_span(span_id)
        with self._lock:
            while span is not None and getattr(span, "_span_kind", None) == _LLM_KIND:
                _remember(self._requesting, span.id_, None)  # the call's span, and the LLM spans around it
                span = getattr(span, "_parent", None)

    def exit(self, span_id: str, instance: Any) -> None:
        """An LLM's span ends: one of an OpenRouter LLM that sent no request (say, its
        `_prepare_chat_with_tools`) is made a span Langfuse cannot price (it would tokenize its text)."""
        try:
            if not isinstance(instance, BaseLLM):
                return
            with self._lock:
                requesting = span_id in self._requesting
                self._requesting.pop(span_id, None)
            if requesting or not _is_openrouter_llm(instance):
                return
            span = self._open_span(span_id)
            if (
                span is not None
                and getattr(span, "_span_kind", None) == _LLM_KIND
                and _MODEL_NAME in (getattr(span, "_attributes", None) or {})
            ):
                self._neutralize([span])
        except Exception:
            log_exception_once(self._logged, "span", "could not mark an OpenInference LLM span as unpriced")

    def _chunk(self, span_id: str, at: datetime) -> None:
        """A stream's chunk reached the user: the first one's time is the call's completion start."""
        with self._lock:
            call = self._calls.get(span_id)
            if call is None:
                call = _Call(requested_model=None, openrouter=False)
                _remember(self._calls, span_id, call)
            if call.first_chunk_at is None:
                call.first_chunk_at = at

    def _finish(self, span_id: str, raw: Any, *, end: bool) -> None:
        with self._lock:
            call = self._calls.pop(span_id, None) if end else self._calls.get(span_id)
            if call is None and not end:
                call = _Call(requested_model=None, openrouter=False)
                _remember(self._calls, span_id, call)
        if raw is None or (call is not None and call.recorded is raw):
            return  # nothing to read, or the stream's usage chunk, already recorded
        usage = OpenRouterUsage.from_openrouter(raw)
        if usage.is_empty or not ((call is not None and call.openrouter) or has_openrouter_markers(usage)):
            return  # not OpenRouter, or nothing to price: OpenInference's span stands
        span = self._open_span(span_id)
        if span is None:
            return
        if self._recorded_elsewhere(span_id, usage):
            self._neutralize([span, *self._wrappers_of(span)])
            return
        enrichment = enrich(usage, self.catalog, requested_model=call.requested_model if call else None)
        self._record(span, enrichment, call.first_chunk_at if call else None)
        with self._lock:
            if usage.generation_id:
                _remember(self._generations, usage.generation_id, span_id)
        if call is not None and not end:
            call.recorded = raw

    def _open_span(self, span_id: str) -> Any:
        """OpenInference's span for `span_id` while it can still take attributes, else None."""
        handler = _span_handler(LlamaIndexInstrumentor())  # the current one, should it be re-instrumented
        if handler is None:
            return None
        span = handler.open_spans.get(span_id)
        if span is None:  # a stream's span waits in OpenInference's export queue after its method returned
            queue = getattr(handler, "_export_queue", None)
            span = queue.find(span_id) if queue is not None else None
        return span if span is not None and span.active else None

    def _recorded_elsewhere(self, span_id: str, usage: OpenRouterUsage) -> bool:
        """Whether this response is a wrapper's view of a call already recorded on another span.

        An LLM whose own callback passes a nested LLM's response through ends after it with the same
        response: the generation id tells; without one, the span was already made a wrapper. (A
        streaming wrapper's nested call runs after the wrapper's method returned, outside its span:
        OpenInference puts it in a trace of its own.)
        """
        with self._lock:
            if usage.generation_id:
                owner = self._generations.get(usage.generation_id)
                return owner is not None and owner != span_id
            return span_id in self._wrappers

    def _record(self, span: Any, enrichment: Enrichment, first_chunk_at: datetime | None) -> None:
        attributes = otel_attributes(
            observation_type="generation", model=enrichment.usage.model, completion_start_time=first_chunk_at
        )
        attributes.update(enrichment.attributes())
        for key, value in attributes.items():
            span[key] = value  # OpenInference sets its spans' attributes from these when they end
        self._neutralize(self._wrappers_of(span))

    def _neutralize(self, wrappers: list[Any]) -> None:
        for wrapper in wrappers:
            for key, value in _WRAPPER_ATTRIBUTES.items():
                wrapper[key] = value
        with self._lock:
            for wrapper in wrappers:
                _remember(self._wrappers, wrapper.id_, None)

    @staticmethod
    def _wrappers_of(span: Any) -> list[Any]:
        """The open LLM spans with a model above `span`, up to the first span that is not one."""
        wrappers = []
        parent = getattr(span, "_parent", None)
        while (
            parent is not None
            and getattr(parent, "_span_kind", None) == _LLM_KIND
            and _MODEL_NAME in (getattr(parent, "_attributes", None) or {})
        ):
            if parent.active:
                wrappers.append(parent)
            parent = getattr(parent, "_parent", None)
        return wrappers


class _EventHandler(BaseEventHandler):
    """LlamaIndex's side of the enricher: hands every event over; never raises."""

    _enricher: _Enricher = PrivateAttr()

    def __init__(self, enricher: _Enricher) -> None:
        super().__init__()
        self._enricher = enricher

    @classmethod
    def class_name(cls) -> str:
        return "LangfuseOpenRouterEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> Any:
        self._enricher.handle(event)


class _SpanHandler(BaseSpanHandler[Any]):
    """Sees LlamaIndex's span exits before OpenInference ends its spans; keeps no spans of its own."""

    _enricher: _Enricher = PrivateAttr()

    def __init__(self, enricher: _Enricher) -> None:
        super().__init__()
        self._enricher = enricher

    @classmethod
    def class_name(cls) -> str:
        return "LangfuseOpenRouterOpenInferenceSpans"

    def span_enter(self, *args: Any, **kwargs: Any) -> None:
        return None

    def span_exit(
        self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kw: Any
    ) -> None:
        self._enricher.exit(id_, instance)

    def span_drop(self, id_: str, bound_args: Any, instance: Any = None, err: Any = None, **kw: Any) -> None:
        self._enricher.exit(id_, instance)

    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


def _is_openrouter_llm(llm: BaseLLM) -> bool:
    return llm.class_name() in _OPENROUTER_CLASSES or is_openrouter_url(getattr(llm, "api_base", None))


class Instrumentation:
    """What `instrument()` turned on. `uninstrument()` turns it off again."""

    def __init__(
        self,
        event_handler: _EventHandler,
        span_handler: _SpanHandler,
        enricher: _Enricher,
        owns_openinference: bool,
    ) -> None:
        self._event_handler = event_handler
        self._span_handler = span_handler
        self._enricher = enricher
        self._owns_openinference = owns_openinference

    @property
    def price_catalog(self) -> PriceCatalog:
        """The catalog calls are priced with."""
        return self._enricher.catalog

    @property
    def active(self) -> bool:
        """Whether this instrumentation is the one in force."""
        return _active is self

    def uninstrument(self) -> None:
        """Remove our event handler, and OpenInference's instrumentation if `instrument()` turned it on."""
        global _active
        with _lock:
            dispatcher = get_dispatcher()
            dispatcher.event_handlers[:] = [
                h for h in dispatcher.event_handlers if h is not self._event_handler
            ]
            dispatcher.span_handlers[:] = [h for h in dispatcher.span_handlers if h is not self._span_handler]
            if self._owns_openinference:
                self._owns_openinference = False
                instrumentor = LlamaIndexInstrumentor()
                if instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.uninstrument()
            if _active is self:
                _active = None


_lock = threading.RLock()
_active: Instrumentation | None = None


def _langfuse_tracer_provider() -> Any:
    """The TracerProvider the Langfuse client exports through; None (the global one) if unknown."""
    try:
        from langfuse import get_client

        resources = getattr(get_client(), "_resources", None)
        return getattr(resources, "tracer_provider", None)
    except Exception:
        logger.warning(
            "could not get the Langfuse client's TracerProvider; using the global one", exc_info=True
        )
        return None


def _span_handler(instrumentor: LlamaIndexInstrumentor) -> Any:
    from openinference.instrumentation.llama_index._handler import _SpanHandler

    handler = getattr(instrumentor, "_span_handler", None)
    if isinstance(handler, _SpanHandler):
        return handler
    return next((h for h in get_dispatcher().span_handlers if isinstance(h, _SpanHandler)), None)


def instrument(
    *,
    tracer_provider: Any = None,
    price_catalog: PriceCatalog | None = None,
    **instrumentor_kwargs: Any,
) -> Instrumentation:
    """Turn on OpenInference's LlamaIndex instrumentation with OpenRouter's cost on its LLM spans.

    `tracer_provider`: where the spans go (default: the Langfuse client's, `langfuse.get_client()`).
    `price_catalog`: the `PriceCatalog` to price calls with (default: one shared per process). Other
    keyword arguments go to `LlamaIndexInstrumentor().instrument()`. Calling it again returns the
    instrumentation in force. When OpenInference was already instrumented, its TracerProvider is kept.
    """
    global _active
    with _lock:
        if _active is not None:
            if tracer_provider is not None or price_catalog is not None:
                logger.warning("already instrumented; call uninstrument() first to change its settings")
            return _active
        instrumentor = LlamaIndexInstrumentor()
        owns_openinference = not instrumentor.is_instrumented_by_opentelemetry
        if owns_openinference:
            provider = tracer_provider if tracer_provider is not None else _langfuse_tracer_provider()
            instrumentor.instrument(tracer_provider=provider, **instrumentor_kwargs)
        else:
            logger.info("OpenInference's LlamaIndex instrumentation is already on; its settings are kept")
        catalog = price_catalog if price_catalog is not None else PriceCatalog.shared()
        catalog.preload()
        enricher = _Enricher(catalog)
        event_handler = _EventHandler(enricher)
        span_handler = _SpanHandler(enricher)
        if _span_handler(instrumentor) is None:
            logger.warning(
                "OpenInference's LlamaIndex span handler is not in use (legacy callback mode?); "
                "OpenRouter costs will not be recorded"
            )
        else:
            # First, so that a stream's end event and a span's exit reach us before OpenInference ends it.
            get_dispatcher().event_handlers.insert(0, event_handler)
            get_dispatcher().span_handlers.insert(0, span_handler)
        _active = Instrumentation(event_handler, span_handler, enricher, owns_openinference)
        return _active


def uninstrument() -> None:
    """Undo `instrument()`: our handler goes, and OpenInference's instrumentation if we turned it on."""
    with _lock:
        if _active is not None:
            _active.uninstrument()
