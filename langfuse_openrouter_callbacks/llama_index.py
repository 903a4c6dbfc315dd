"""LlamaIndex: a one-line global handler for Langfuse 5, with OpenRouter cache usage, true cost and savings.

    from langfuse_openrouter_callbacks.llama_index import set_global_handler

    set_global_handler()      # once; every LlamaIndex call after it is traced

`llama_index.core.set_global_handler("langfuse")` needs a package that requires `langfuse<3`; this one
listens to LlamaIndex's instrumentation (the root dispatcher: every `@dispatcher.span` call with its
parent, and the typed events) and writes the Langfuse observations itself: one trace per user call
(a query, a chat turn, an agent or workflow run, an index construction, a lone LLM call), nested by the
spans' real parents. It only reads what the spans and events carry: streams, lazy responses and
workflow handlers are never consumed, awaited or wrapped.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from langfuse import Langfuse, get_client, propagate_attributes
from opentelemetry import trace as otel_trace
from pydantic import BaseModel as PydanticModel
from pydantic import PrivateAttr

from ._enrich import (
    Enrichment,
    end_after_lookup,
    enrich,
    has_openrouter_markers,
    is_openrouter_url,
    record_savings_score,
    update_and_record,
)
from ._extras import requires_extra
from ._log import log_exception_once, logger
from ._prompt_fingerprint import PromptFingerprint, fingerprint
from .catalog import PriceCatalog
from .generation_stats import GenerationStatsFetcher, resolve_fetcher, watch_langfuse_client
from .langfuse_fields import usage_details
from .usage import OpenRouterUsage, usage_from_llm_raw

with requires_extra("llama-index", __name__):
    from llama_index.core.agent.workflow import AgentOutput
    from llama_index.core.base.base_query_engine import BaseQueryEngine
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.base.llms.base import BaseLLM
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
    from llama_index.core.base.response.schema import (
        AsyncStreamingResponse,
        PydanticResponse,
        Response,
        StreamingResponse,
    )
    from llama_index.core.callbacks.base_handler import BaseCallbackHandler
    from llama_index.core.chat_engine.types import (
        AgentChatResponse,
        BaseChatEngine,
        StreamingAgentChatResponse,
    )
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.exception import ExceptionEvent
    from llama_index.core.instrumentation.events.llm import (
        LLMChatEndEvent,
        LLMChatInProgressEvent,
        LLMChatStartEvent,
        LLMCompletionEndEvent,
        LLMCompletionInProgressEvent,
        LLMCompletionStartEvent,
    )
    from llama_index.core.instrumentation.span import active_span_id
    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
    from llama_index.core.prompts import BasePromptTemplate
    from llama_index.core.schema import BaseComponent, BaseNode, NodeWithScore, QueryBundle
    from llama_index.core.tools.types import BaseTool, ToolOutput
    from llama_index.core.workflow import Context, Event, StopEvent, Workflow

__all__ = ["LlamaIndexHandler", "instrument", "set_global_handler", "trace_attributes"]

_trace_attributes: ContextVar[dict[str, Any] | None] = ContextVar("lfor_trace_attributes", default=None)
# The root of a LlamaIndex operation that has no span of its own (index construction, insert), if open
_operation: ContextVar[_Span | None] = ContextVar("lfor_llama_index_operation", default=None)

# LLM fields that are request parameters (not `context_window`, which is the model's, not the request's)
_MODEL_PARAMETERS = (
    "temperature",
    "max_tokens",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "reasoning_effort",
)
_ENDED_KEPT = 4096  # ended spans remembered for children that start late (threads, tasks)
_LAZY = (Generator, AsyncGenerator, StreamingResponse, AsyncStreamingResponse, StreamingAgentChatResponse)
_LIST_LIMIT = 100  # items of a list recorded as input or output


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


@dataclass(slots=True, eq=False)
class _LLMCall:
    """What a generation needs beyond its span: the LLM's configuration and the stream's progress."""

    model: str | None
    parameters: dict[str, Any]
    openrouter: bool
    first_chunk_at: datetime | None = None
    usage_chunk: Any = None  # the last stream chunk that carried usage
    prompt: PromptFingerprint | None = None  # the request's prompt-prefix fingerprint, taken at its start


@dataclass(slots=True, eq=False)
class _Span:
    """A LlamaIndex span and the Langfuse observation it became (None until started, for LLM spans)."""

    name: str
    as_type: str
    parent: _Span | None
    attributes: dict[str, Any]
    instance_id: int
    method: str
    input: Any = None
    observation: Any = None
    llm: _LLMCall | None = None  # an LLM's span: becomes the generation if its start event comes
    generation: bool = False
    event_id: str | None = None  # the span id the LLM's events carry (a generation's)
    waiting: bool = False  # returned a stream: ends when the stream's LLM call does
    ended: bool = False
    context: Any = None  # once ended: its OpenTelemetry span context (late children's parent), not the span

    @property
    def unstarted(self) -> bool:
        return self.observation is None and self.context is None


class LlamaIndexHandler:
    """Records LlamaIndex's instrumentation spans and events as Langfuse observations.

    Made by `set_global_handler()` (which takes its arguments): the Langfuse client's (`public_key`,
    `secret_key`, `base_url`, ...; default: the client `langfuse.get_client()` resolves), trace
    attributes (`user_id`, `session_id`, `tags`, `trace_name`, `metadata`, `version`), `price_catalog`,
    `savings_score` (record each call's cache savings as the numeric score
    `openrouter_cache_savings_usd`), `fetch_generation_stats` (reconcile each call with OpenRouter's
    `/generation` record, fetched in the background; default: the
    `LANGFUSE_OPENROUTER_FETCH_GENERATION_STATS` environment variable; needs `OPENROUTER_API_KEY`) and
    `generation_stats_fetcher` (a `GenerationStatsFetcher` of your own).
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
        for legacy in ("event_starts_to_ignore", "event_ends_to_ignore"):
            if langfuse_kwargs.pop(legacy, None) is not None:
                warnings.warn(
                    f"{legacy} is ignored: it named legacy callback events, and the handler now records "
                    "LlamaIndex's instrumentation spans",
                    DeprecationWarning,
                    stacklevel=3,
                )
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
        self._generation_stats = resolve_fetcher(fetch_generation_stats, generation_stats_fetcher)
        if self._generation_stats is not None:
            watch_langfuse_client(self.langfuse)
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        self._open: dict[str, _Span] = {}  # by LlamaIndex span id
        self._aliases: dict[str, _Span] = {}  # span id -> the span whose call it repeats
        self._ended: OrderedDict[str, _Span] = OrderedDict()
        self._generations: dict[str, _Span] = {}  # by the span id LLM events carry
        # a returned generator's frame -> the span that returned it
        self._streams: dict[FrameType, _Span] = {}
        self._span_handler = _SpanHandler(self)
        self._event_handler = _EventHandler(self)
        self._operations = _Operations(self)

    def flush(self) -> None:
        """Export everything recorded so far (short scripts and notebooks).

        Pending `/generation` lookups are waited for first (bounded).
        """
        if self._generation_stats is not None:
            self._generation_stats.flush()
        self.langfuse.flush()

    def close(self) -> None:
        """Stop recording (the handler leaves LlamaIndex's dispatcher), then flush."""
        global _current
        with _registration:
            _leave(get_dispatcher(), self)
            if _current is self:
                _current = None
        self.flush()

    # ------------------------------------------------------------------ spans

    def _enter(self, id_: str, bound_args: Any, instance: Any, parent_id: str | None) -> None:
        parent = self._find(parent_id) if parent_id else (self._stream_parent() or _operation.get())
        method = id_.partition("-")[0].rpartition(".")[2]
        private = method.startswith("_") and not method.startswith("__")
        if parent is not None and instance is not None and parent.instance_id == id(instance):
            repeated = method == parent.method or private
        else:
            repeated = False
        if repeated:
            self._aliases[id_] = parent  # the same call seen again (a subclass's override, a private step)
            return
        if parent is not None and parent.unstarted:
            self._start(parent, parent.as_type)  # an LLM's span with a child: a wrapper, not the generation
        attributes = (
            parent.attributes
            if parent is not None
            else {**self.trace_attributes, **(_trace_attributes.get() or {})}
        )
        as_type, name = _kind(instance, method, id_)
        span = _Span(name, as_type, parent, attributes, id(instance), method, _arguments(bound_args, as_type))
        if isinstance(instance, BaseLLM):
            span.llm = _llm_call(instance)  # started by its start event (a generation) or its first child
        elif isinstance(instance, BaseEmbedding):
            self._start(span, as_type, model=getattr(instance, "model_name", None))
        else:
            self._start(span, as_type)
        self._open[id_] = span

    def _exit(self, id_: str, result: Any) -> None:
        span = self._pop(id_)
        if span is None or span.ended:
            return  # an alias of its parent's call, or ended by its events
        if span.generation:
            if isinstance(result, _LAZY):  # the stream ends with the LLM's end event
                self._on_collected(result, span)
            else:
                self._end(span, None)
            return
        if isinstance(result, _LAZY):
            span.waiting = True
            self._remember_streams(result, span)
            self._on_collected(result, span)
            return
        if span.unstarted:
            self._start(span, span.as_type)
        self._end(span, _output(result))

    def _drop(self, id_: str, err: BaseException | None) -> None:
        span = self._pop(id_)
        if span is None or span.ended:
            return
        if type(err).__name__ == "WorkflowDone":  # how a workflow's run ends
            self._exit_as_done(span)
            return
        self._fail(span, err)

    def _exit_as_done(self, span: _Span) -> None:
        if span.unstarted:
            self._start(span, span.as_type)
        self._end(span, None)

    def _fail(self, span: _Span, err: BaseException | None) -> None:
        if span.event_id is not None:
            self._generations.pop(span.event_id, None)
        if span.unstarted:
            self._start(span, span.as_type)
        fields: dict[str, Any] = {"level": "ERROR", "status_message": f"{type(err).__name__}: {err}"}
        if span.generation:
            fields["cost_details"] = {"total": 0}
        span.ended = True
        span.observation.update(**fields).end()
        _release(span)

    # ------------------------------------------------------------------ LLM events

    def _llm_start(
        self,
        span_id: str,
        messages: Sequence[Any] | None,
        prompt: str | None,
        kwargs: Any,
        model_dict: Mapping[str, Any],
    ) -> None:
        span = self._find(span_id)
        llm = span.llm if span is not None else None
        if span is None or llm is None:  # an LLM whose call opened no span of its own: still one generation
            llm = _llm_call_from_payload(model_dict)
            name = str(model_dict.get("class_name") or "LLM").removesuffix("_LLM")
            attributes = (
                span.attributes
                if span is not None
                else {**self.trace_attributes, **(_trace_attributes.get() or {})}
            )
            span = _Span(name, "generation", span, attributes, 0, name, llm=llm)
        parameters = dict(llm.parameters)
        for key, value in (kwargs or {}).items():
            if isinstance(value, (str, int, float, bool)):
                parameters[key] = value
        fields = {"model": llm.model, "model_parameters": parameters or None}
        fields["input"] = generation_input(messages, prompt)
        try:
            llm.prompt = _fingerprint(messages, prompt, kwargs)
        except Exception:
            log_exception_once(self._logged, "fingerprint", "could not fingerprint a LlamaIndex prompt")
        if span.unstarted:
            span.generation = True
            span.name = span.name.partition(".")[0]  # the LLM's class; its model is the generation's model
            self._start(span, "generation", **fields)
        else:  # its span already had children: the generation is one of them
            name = span.name.partition(".")[0]
            child = _Span(name, "generation", span, span.attributes, span.instance_id, "", llm=llm)
            child.generation = True
            self._start(child, "generation", **fields)
            span = child
        span.event_id = span_id
        self._generations[span_id] = span

    def _llm_progress(self, span_id: str, response: Any) -> None:
        span = self._generations.get(span_id)
        if span is None or span.llm is None:
            return
        if span.llm.first_chunk_at is None:
            span.llm.first_chunk_at = datetime.now(timezone.utc)
        raw = getattr(response, "raw", None)
        if raw is not None and _get(raw, "usage") is not None:
            span.llm.usage_chunk = raw

    def _llm_end(self, span_id: str, response: Any) -> None:
        span = self._generations.pop(span_id, None)
        if span is None or span.ended:
            return
        span.ended = True
        try:
            self._end_generation(span, response)
        except Exception:
            log_exception_once(self._logged, "llm-end", "could not record a LlamaIndex LLM call in Langfuse")
            span.observation.end()  # recorded with what it has
        finally:
            _release(span)
            self._end_waiting(span.parent, _text(response))

    def _llm_error(self, span_id: str, err: BaseException) -> None:
        span = self._generations.pop(span_id, None)
        if span is not None and not span.ended:
            self._fail(span, err)
            self._end_waiting(span.parent, None)

    def _end_generation(self, span: _Span, response: Any) -> None:
        ended_at = time.time_ns()  # the call's true end, also when the end is held back for a lookup
        llm = span.llm
        assert llm is not None
        fields: dict[str, Any] = {"output": _output(response)}
        if llm.first_chunk_at is not None:
            fields["completion_start_time"] = llm.first_chunk_at
        enrichment: Enrichment | None = None
        try:
            usage_fields, enrichment = self._usage_fields(llm, response)
            fields.update(usage_fields)
        except Exception:
            log_exception_once(
                self._logged,
                "usage",
                "could not record OpenRouter cost on a Langfuse generation; it keeps its other data",
            )
        observation = span.observation
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
        stats = self._generation_stats if enrichment is not None and enrichment.usage.generation_id else None
        if enrichment is None or stats is None:
            if enrichment is not None and self.savings_score:
                self._savings_score(observation, enrichment)
            observation.end(end_time=ended_at)
            return
        end_after_lookup(
            stats,
            observation,
            enrichment,
            catalog=self.price_catalog,
            requested_model=llm.model,
            ended_at=ended_at,
            langfuse=self.langfuse,
            savings_score=self.savings_score,
            logged=self._logged,
        )

    def _savings_score(self, observation: Any, enrichment: Enrichment) -> None:
        try:
            record_savings_score(
                self.langfuse, enrichment, trace_id=observation.trace_id, observation_id=observation.id
            )
        except Exception:
            log_exception_once(self._logged, "savings-score", "could not record the cache savings score")

    def _is_openrouter(self, llm: _LLMCall, usage: OpenRouterUsage) -> bool:
        """Whether OpenRouter answered: its LLM class or base URL, or what only it sends."""
        return llm.openrouter or has_openrouter_markers(usage)

    def _usage_fields(self, llm: _LLMCall, response: Any) -> tuple[dict[str, Any], Enrichment | None]:
        """The generation's usage fields, and the OpenRouter enrichment they came from (if any)."""
        raw = getattr(response, "raw", None)
        usage = OpenRouterUsage.from_openrouter(raw)
        if usage.is_empty and llm.usage_chunk is not None:  # usage came on an earlier stream chunk
            usage = OpenRouterUsage.from_openrouter(llm.usage_chunk)
        fields: dict[str, Any] = {}
        if usage.is_empty:
            usage = usage_from_llm_raw(raw)  # another provider's shape (Anthropic, Gemini, ...)
            if usage.is_empty:
                return fields, None
        if usage.model:
            fields["model"] = usage.model
        if self._is_openrouter(llm, usage):
            # usage, cost and metadata go onto the span with the output: `update_and_record`
            return fields, enrich(usage, self.price_catalog, requested_model=llm.model, prompt=llm.prompt)
        fields["usage_details"] = usage_details(usage)  # another provider: its token counts, no cost of ours
        return fields, None

    # ------------------------------------------------------------------ observations

    def _start(self, span: _Span, as_type: str, **fields: Any) -> None:
        parent = span.parent
        if parent is not None and parent.unstarted:
            self._start(parent, parent.as_type)
        if span.input is not None and "input" not in fields:
            fields["input"] = span.input
        span.as_type = as_type
        span.input = None
        if span.attributes:
            with propagate_attributes(**span.attributes):
                span.observation = self._observation(parent, span.name, as_type, fields)
        else:
            span.observation = self._observation(parent, span.name, as_type, fields)

    def _observation(self, parent: _Span | None, name: str, as_type: str, fields: dict[str, Any]) -> Any:
        if parent is None:
            return self.langfuse.start_observation(name=name, as_type=as_type, **fields)  # type: ignore[call-overload]
        if parent.observation is not None:
            return parent.observation.start_observation(name=name, as_type=as_type, **fields)
        with otel_trace.use_span(otel_trace.NonRecordingSpan(parent.context)):  # a child of an ended span
            return self.langfuse.start_observation(name=name, as_type=as_type, **fields)  # type: ignore[call-overload]

    def _end(self, span: _Span, output: Any) -> None:
        span.ended = True
        if output is not None:
            span.observation.update(output=output)
        span.observation.end()
        _release(span)

    def _end_waiting(self, span: _Span | None, text: str | None) -> None:
        """End the spans that returned the stream this LLM call was: they end when it does."""
        while span is not None:
            if span.waiting and not span.ended:
                if span.unstarted:
                    self._start(span, span.as_type)
                self._end(span, text)
            span = span.parent

    def _collected(self, span: _Span) -> None:
        """A returned stream was garbage-collected: what waited for it ends (unconsumed or abandoned)."""
        try:
            if span.ended:
                return
            if span.generation:
                span.ended = True
                self._generations.pop(span.event_id or "", None)
                span.observation.end()
                _release(span)
            else:
                self._exit_as_done(span)
        except Exception:
            log_exception_once(self._logged, "collected", "could not end a Langfuse observation")

    def _on_collected(self, result: Any, span: _Span) -> None:
        try:
            weakref.finalize(result, self._collected, span)
        except TypeError:  # not weak-referenceable: nothing tells when it is gone, so it ends now
            self._collected(span)

    # ------------------------------------------------------------------ parents

    def _pop(self, span_id: str) -> _Span | None:
        """The span `span_id` names, now ended; None for an alias."""
        alias = self._aliases.pop(span_id, None)
        span = self._open.pop(span_id, None)
        if alias is not None or span is not None:
            self._remember_ended(span_id, alias or span)  # type: ignore[arg-type]
        return span

    def _find(self, span_id: str) -> _Span | None:
        span = self._open.get(span_id) or self._aliases.get(span_id)
        if span is None:
            with self._lock:
                span = self._ended.get(span_id)
        return span

    def _remember_ended(self, span_id: str, span: _Span) -> None:
        with self._lock:
            self._ended[span_id] = span
            if len(self._ended) > _ENDED_KEPT:
                self._ended.popitem(last=False)

    def _remember_streams(self, result: Any, span: _Span) -> None:
        """A returned generator runs later, where the caller iterates it: its frame names its parent."""
        generator = (
            result
            if isinstance(result, (Generator, AsyncGenerator))
            else getattr(result, "response_gen", None)
        )
        frame = getattr(generator, "gi_frame", None) or getattr(generator, "ag_frame", None)
        if frame is None or frame in self._streams:
            return
        try:
            weakref.finalize(generator, self._streams.pop, frame, None)
        except TypeError:
            return
        self._streams[frame] = span

    def _stream_parent(self) -> _Span | None:
        """The span that returned the generator running this call, if one does (a stream's LLM call)."""
        if not self._streams:
            return None
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            span = self._streams.get(frame)
            if span is not None:
                return span
            frame = frame.f_back
        return None

    # ------------------------------------------------------------------ operations without a span

    def _operation_start(self, name: str) -> None:
        """LlamaIndex began an operation (its legacy `as_trace`): a root when no span encloses it."""
        if _operation.get() is not None or active_span_id.get() is not None:
            return
        span = _Span(
            name, "chain", None, {**self.trace_attributes, **(_trace_attributes.get() or {})}, 0, name
        )
        self._start(span, "chain")
        _operation.set(span)

    def _operation_end(self) -> None:
        span = _operation.get()
        if span is not None:
            _operation.set(None)
            self._end(span, None)

    def _guard(self, key: str, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception:
            log_exception_once(self._logged, key, "could not record a LlamaIndex call in Langfuse")


# ---------------------------------------------------------------------------- LlamaIndex's handlers


class _SpanHandler(BaseSpanHandler[Any]):
    """Hands LlamaIndex's span notices to the handler; keeps no spans of its own."""

    _handler: LlamaIndexHandler = PrivateAttr()

    def __init__(self, handler: LlamaIndexHandler) -> None:
        super().__init__()
        self._handler = handler

    @classmethod
    def class_name(cls) -> str:
        return "LangfuseOpenRouterSpanHandler"

    def span_enter(
        self, id_: str, bound_args: Any, instance: Any = None, parent_id: str | None = None, **kwargs: Any
    ) -> None:
        self._handler._guard("span-enter", self._handler._enter, id_, bound_args, instance, parent_id)

    def span_exit(
        self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kwargs: Any
    ) -> None:
        self._handler._guard("span-exit", self._handler._exit, id_, result)

    def span_drop(
        self, id_: str, bound_args: Any, instance: Any = None, err: Any = None, **kwargs: Any
    ) -> None:
        self._handler._guard("span-drop", self._handler._drop, id_, err)

    def new_span(self, *args: Any, **kwargs: Any) -> None:  # abstract in the base; span_enter is used instead
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Operations(BaseCallbackHandler):
    """LlamaIndex's legacy traces, for the operations that open no span (`from_documents`, `insert`)."""

    def __init__(self, handler: LlamaIndexHandler) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self._handler = handler

    def start_trace(self, trace_id: str | None = None) -> None:
        self._handler._guard("operation", self._handler._operation_start, trace_id or "llama-index")

    def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None:
        self._handler._guard("operation", self._handler._operation_end)

    def on_event_start(self, event_type: Any, payload: Any = None, event_id: str = "", **kwargs: Any) -> str:
        return event_id

    def on_event_end(self, event_type: Any, payload: Any = None, event_id: str = "", **kwargs: Any) -> None:
        return None


class _EventHandler(BaseEventHandler):
    """Hands LlamaIndex's LLM events to the handler: start, stream chunks, end, failure."""

    _handler: LlamaIndexHandler = PrivateAttr()

    def __init__(self, handler: LlamaIndexHandler) -> None:
        super().__init__()
        self._handler = handler

    @classmethod
    def class_name(cls) -> str:
        return "LangfuseOpenRouterEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        span_id = event.span_id
        if not span_id:
            return
        handler = self._handler
        kind = type(event)
        if kind is LLMChatInProgressEvent or kind is LLMCompletionInProgressEvent:
            handler._guard("llm-progress", handler._llm_progress, span_id, event.response)
        elif kind is LLMChatStartEvent:
            handler._guard(
                "llm-start",
                handler._llm_start,
                span_id,
                event.messages,
                None,
                event.additional_kwargs,
                event.model_dict,
            )
        elif kind is LLMCompletionStartEvent:
            handler._guard(
                "llm-start",
                handler._llm_start,
                span_id,
                None,
                event.prompt,
                event.additional_kwargs,
                event.model_dict,
            )
        elif kind is LLMChatEndEvent or kind is LLMCompletionEndEvent:
            handler._guard("llm-end", handler._llm_end, span_id, event.response)
        elif kind is ExceptionEvent:
            handler._guard("llm-error", handler._llm_error, span_id, event.exception)


# ---------------------------------------------------------------------------- what spans record


def _release(span: _Span) -> None:
    """Keep only an ended observation's span context (late children's parent), not its data."""
    if span.observation is not None:
        span.context = span.observation._otel_span.get_span_context()
        span.observation = None
    span.llm = None


def generation_input(messages: Sequence[Any] | None, prompt: str | None) -> Any:
    """A generation's input, from the request's messages (chat) or prompt (completion), at its start.

    The one place the handler has an LLM request's messages as the request starts (`_llm_start`
    calls it for every generation): what is derived from them, such as prompt-prefix fingerprints,
    belongs here.
    """
    if messages is not None:
        return [_message(m) for m in messages]
    return prompt


def _fingerprint(messages: Sequence[Any] | None, prompt: str | None, kwargs: Any) -> PromptFingerprint:
    """The request's prompt-prefix fingerprint (`fingerprint`), from its messages or its prompt."""
    neutral = (
        [_neutral_message(m) for m in messages]
        if messages is not None
        else [{"role": "user", "content": prompt or ""}]
    )
    tools = (kwargs or {}).get("tools") if isinstance(kwargs, Mapping) else None
    return fingerprint(neutral, tools if isinstance(tools, list) else None)


def _neutral_message(message: Any) -> dict[str, Any]:
    """A LlamaIndex `ChatMessage` as the plain dict `fingerprint` reads: its text blocks, others by kind."""
    role = getattr(message, "role", None)
    parts = []
    for block in getattr(message, "blocks", None) or []:
        text = getattr(block, "text", None)
        kind = getattr(block, "block_type", type(block).__name__)
        parts.append({"type": "text", "text": text} if isinstance(text, str) else {"type": kind})
    neutral: dict[str, Any] = {"role": getattr(role, "value", role), "content": parts}
    extra = getattr(message, "additional_kwargs", None) or {}
    neutral.update(
        {k: extra[k] for k in ("tool_calls", "tool_call_id", "cache_control") if extra.get(k) is not None}
    )
    return neutral


def _kind(instance: Any, method: str, id_: str) -> tuple[str, str]:
    """The observation type and name of a span of `instance.method`."""
    name = id_.partition("-")[0]
    if instance is None:
        return "span", name
    if isinstance(instance, Workflow):
        return ("agent" if method == "run" else "chain"), name
    if isinstance(instance, BaseTool):
        tool = getattr(getattr(instance, "metadata", None), "name", None)
        return "tool", tool if isinstance(tool, str) and tool else name
    if isinstance(instance, BaseRetriever):
        return "retriever", name
    if isinstance(instance, BaseEmbedding):
        return "embedding", name
    if isinstance(instance, (BaseQueryEngine, BaseChatEngine)):
        return "chain", name
    return "span", name


def _llm_call(llm: BaseLLM) -> _LLMCall:
    """An LLM's model, request parameters and whether it is OpenRouter, read from its fields."""
    parameters = {}
    for key in _MODEL_PARAMETERS:
        value = getattr(llm, key, None)
        if value is not None and isinstance(value, (str, int, float, bool, list)):
            parameters[key] = value
    for key, value in (getattr(llm, "additional_kwargs", None) or {}).items():
        if isinstance(value, (str, int, float, bool)):
            parameters[key] = value
    model = getattr(llm, "model", None) or getattr(llm, "model_name", None)
    base = getattr(llm, "api_base", None) or getattr(llm, "base_url", None)
    openrouter = type(llm).__name__ == "OpenRouter" or is_openrouter_url(str(base) if base else None)
    return _LLMCall(model if isinstance(model, str) else None, parameters, openrouter)


def _llm_call_from_payload(model_dict: Mapping[str, Any]) -> _LLMCall:
    """What LlamaIndex's LLM start event says of the LLM (its metadata), when its instance is unknown."""
    model = model_dict.get("model_name") or model_dict.get("model")
    openrouter = model_dict.get("class_name") == "OpenRouter_LLM" or any(
        is_openrouter_url(model_dict.get(key)) for key in ("api_base", "base_url")
    )
    return _LLMCall(model if isinstance(model, str) else None, {}, openrouter)


def _arguments(bound_args: Any, as_type: str) -> Any:
    """A span's input: its call's arguments (one argument: just its value); a run's: its start event."""
    arguments = getattr(bound_args, "arguments", None)
    if not arguments:
        return None
    if as_type == "agent" and "start_event" in arguments:
        return _safe(arguments["start_event"])
    if as_type == "tool" and isinstance(arguments.get("kwargs"), dict):  # the LLM's arguments, no Context
        arguments = {
            **arguments,
            "kwargs": {k: v for k, v in arguments["kwargs"].items() if not isinstance(v, Context)},
        }
    values = {
        k: _safe(v)
        for k, v in arguments.items()
        if not (k == "kwargs" and not v) and not isinstance(v, Context)
    }
    if len(values) == 1:
        return next(iter(values.values()))
    return values or None


def _output(result: Any) -> Any:
    if isinstance(result, list) and result and all(isinstance(v, float) for v in result[:3]):
        return {"dimensions": len(result)}  # an embedding
    if (
        isinstance(result, list)
        and result
        and isinstance(result[0], list)
        and result[0]
        and isinstance(result[0][0], float)
    ):
        return {"embeddings": len(result), "dimensions": len(result[0])}
    return _safe(result)


def _safe(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-able data, read without calling into it: lazy objects and unknown ones by type name.

    Only the content of what LlamaIndex passes (messages, nodes, queries, responses, tool outputs,
    workflow events, the user's own pydantic outputs) is recorded; other objects (LLM and client
    configurations among them) are not.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if depth > 5:
        return f"<{type(value).__name__}>"
    if isinstance(value, (list, tuple)):
        return [_safe(v, depth + 1) for v in value[:_LIST_LIMIT]]
    if isinstance(value, dict):
        return {str(k): _safe(v, depth + 1) for k, v in list(value.items())[:_LIST_LIMIT]}
    if isinstance(value, ChatMessage):
        return _message(value)
    if isinstance(value, NodeWithScore):
        return {"id": value.node.node_id, "score": value.score, "text": getattr(value.node, "text", None)}
    if isinstance(value, BaseNode):
        return {"id": value.node_id, "text": getattr(value, "text", None)}
    if isinstance(value, QueryBundle):
        return value.query_str
    if isinstance(value, (Response, PydanticResponse, AgentChatResponse)):
        return _safe(value.response, depth + 1)
    if isinstance(value, ChatResponse):
        return _message(value.message)
    if isinstance(value, CompletionResponse):
        return value.text
    if isinstance(value, ToolOutput):
        return value.content
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, BasePromptTemplate):
        template = getattr(value, "template", None)
        return template if isinstance(template, str) else f"<{type(value).__name__}>"
    if isinstance(value, AgentOutput):
        return _message(value.response)
    if isinstance(value, StopEvent):
        return _safe(value.result, depth + 1)
    if isinstance(value, PydanticModel) and not isinstance(value, BaseComponent):  # data: events, outputs
        fields = {
            k: _safe(getattr(value, k, None), depth + 1)
            for k, info in type(value).model_fields.items()
            if not info.exclude
        }
        if isinstance(value, Event):  # a workflow event's own fields
            fields.update({str(k): _safe(v, depth + 1) for k, v in value.to_dict().items()})
        return fields or type(value).__name__
    return f"<{type(value).__name__}>"


def _message(message: Any) -> Any:
    role = getattr(message, "role", None)
    if role is None:
        return _safe(message)
    out: dict[str, Any] = {"role": getattr(role, "value", role), "content": getattr(message, "content", None)}
    tool_calls = (getattr(message, "additional_kwargs", None) or {}).get("tool_calls")
    if tool_calls:
        out["tool_calls"] = [t.model_dump() if hasattr(t, "model_dump") else _safe(t) for t in tool_calls]
    return out


def _text(response: Any) -> str | None:
    message = getattr(response, "message", None)
    if message is not None:
        content = getattr(message, "content", None)
        return content if isinstance(content, str) else None
    text = getattr(response, "text", None)
    return text if isinstance(text, str) else None


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


# ---------------------------------------------------------------------------- one line

_registration = threading.Lock()
_current: LlamaIndexHandler | None = None


def _leave(dispatcher: Any, handler: LlamaIndexHandler) -> None:
    import llama_index.core
    from llama_index.core.settings import Settings

    dispatcher.span_handlers[:] = [h for h in dispatcher.span_handlers if h is not handler._span_handler]
    dispatcher.event_handlers[:] = [h for h in dispatcher.event_handlers if h is not handler._event_handler]
    if llama_index.core.global_handler is handler._operations:
        llama_index.core.global_handler = None
    manager = Settings._callback_manager
    if manager is not None:
        manager.handlers[:] = [h for h in manager.handlers if h is not handler._operations]


def _join(dispatcher: Any, handler: LlamaIndexHandler) -> None:
    import llama_index.core
    from llama_index.core.settings import Settings

    dispatcher.add_span_handler(handler._span_handler)
    dispatcher.add_event_handler(handler._event_handler)
    # callback managers made from now on get it; so does the one Settings made before
    if llama_index.core.global_handler is None:
        llama_index.core.global_handler = handler._operations
    manager = Settings._callback_manager
    if manager is not None and all(type(h) is not _Operations for h in manager.handlers):
        manager.add_handler(handler._operations)


def set_global_handler(**kwargs: Any) -> LlamaIndexHandler:
    """Trace every LlamaIndex call in Langfuse from now on (replacing an earlier handler); returns it.

    Takes `LlamaIndexHandler`'s arguments. LLMs, indexes and engines built before it are traced too.
    """
    global _current
    handler = LlamaIndexHandler(**kwargs)
    dispatcher = get_dispatcher()
    with _registration:
        previous, _current = _current, handler
        if previous is not None:
            _leave(dispatcher, previous)
        _join(dispatcher, handler)
    if previous is not None:
        logger.debug("set_global_handler: the earlier LlamaIndex handler was replaced")
    return handler


def instrument(**kwargs: Any) -> Any:
    """OpenInference's LlamaIndex instrumentation with our OpenRouter enrichment (see `_openinference`)."""
    from ._openinference import instrument as _instrument

    return _instrument(**kwargs)
