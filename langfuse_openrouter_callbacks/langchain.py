"""LangChain: a drop-in for `langfuse.langchain.CallbackHandler` that records OpenRouter's true cost.

    from langfuse_openrouter_callbacks.langchain import CallbackHandler

    handler = CallbackHandler()
    chain.invoke(inputs, config={"callbacks": [handler]})

Everything Langfuse's handler records is recorded the same way; for calls answered by OpenRouter the
generation's `usage_details`, `cost_details` and `metadata["openrouter"]` are ours. With
`fetch_generation_stats=True` the generation is held open until OpenRouter's `/generation` record of
the call is fetched in the background, then ends with its true end time (see `generation_stats`).

Every generation started ends, also when LangChain sends no end event: a call cancelled while it
runs (`asyncio.wait_for`, a cancelled task) ends, once LangChain lets go of the run, with level
WARNING and a status message saying so. A generation is never made the current OpenTelemetry span
of the caller's context, so a stream left open cannot become the parent of the next call.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from opentelemetry import context as otel_context

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
from ._langfuse_write import set_attributes
from ._log import log_exception_once
from ._prompt_fingerprint import PromptFingerprint, fingerprint
from .catalog import PriceCatalog
from .generation_stats import GenerationStatsFetcher, resolve_fetcher, watch_langfuse_client
from .langfuse_fields import trace_attributes
from .usage import MAX_TOKENS, OpenRouterUsage

with requires_extra("langchain", __name__):
    from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, LLMResult
    from langfuse.langchain import CallbackHandler as LangfuseCallbackHandler

__all__ = ["CallbackHandler"]

_OPENROUTER_CLASSES = ("ChatOpenRouter",)
_BASE_URL_KEYS = ("openai_api_base", "openrouter_api_base", "base_url", "api_base")


# What Langfuse's `on_llm_end` refers to in the versions `CallbackHandler._end_enriched` mirrors (5.0).
# Another set means another `on_llm_end`: then ours hands its fields to that one instead of mirroring it.
_LANGFUSE_ON_LLM_END_NAMES = frozenset(
    {
        "_log_debug_event",
        "generations",
        "isinstance",
        "ChatGeneration",
        "_convert_message_to_dict",
        "message",
        "_extract_raw_response",
        "_parse_usage",
        "_parse_model",
        "_detach_observation",
        "update",
        "get",
        "end",
        "Exception",
        "langfuse_logger",
        "exception",
        "_updated_completion_start_time_memo",
        "discard",
        "_clear_root_run_resume_key",
        "_reset",
    }
)
try:
    from langfuse.langchain.CallbackHandler import _extract_raw_response, _parse_model
except ImportError:  # another Langfuse: not mirrored
    _MIRRORS_LANGFUSE_ON_LLM_END = False
else:
    _MIRRORS_LANGFUSE_ON_LLM_END = (
        frozenset(LangfuseCallbackHandler.on_llm_end.__code__.co_names) == _LANGFUSE_ON_LLM_END_NAMES
    )


#: The level and status message of a generation whose call was cancelled before it finished.
CANCELLED_LEVEL = "WARNING"
CANCELLED_MESSAGE = "cancelled: the call ended before its response was complete"
#: The level of a generation whose stream OpenRouter ended with an error.
ERROR_LEVEL = "ERROR"
_STREAM_ERROR_MESSAGE = "OpenRouter ended the response with an error (finish_reason 'error')"


# What LangChain's streaming path (`Runnable._transform_stream_with_config`) passes as a chain's inputs
_STREAMED_CHAIN_INPUTS = {"input": ""}


@dataclass(frozen=True, slots=True)
class _Call:
    requested_model: str | None
    openrouter: bool  # known to be OpenRouter from the model's class or base URL
    key: UUID  # an equal copy of LangChain's run id: Langfuse's state and ours are keyed by it
    root: bool  # no parent run
    watch: _RunWatch  # dies with this entry; its callback fires if LangChain drops the run first
    prompt: PromptFingerprint | None = None  # of the request as LangChain was given it, before any mask


class _RunWatch(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to LangChain's own run id object, which lives as long as LangChain's call.

    Langfuse's state and ours hold an equal copy instead, so when LangChain lets go of a run it
    never ended (a cancelled call), the callback queues the run to be ended.
    """

    __slots__ = ("dropped_at", "handler", "key")


# Runs LangChain dropped without an end event. `SimpleQueue.put` is reentrant: safe in a weakref
# callback, which may run inside the garbage collector on any thread, holding any lock.
_dropped: queue.SimpleQueue[_RunWatch] = queue.SimpleQueue()
_ending = threading.Lock()  # held while a dropped run is ended: a drain waits for the one in progress
_dropped_worker_lock = threading.Lock()
_dropped_worker: threading.Thread | None = None
_logged: set[str] = set()


def _on_dropped(watch: _RunWatch) -> None:
    watch.dropped_at = time.time_ns()
    _dropped.put(watch)


def _end_dropped(watch: _RunWatch) -> None:
    handler = watch.handler()
    if handler is not None:
        handler._end_dropped(watch.key, watch.dropped_at)


def end_dropped_runs() -> None:
    """End, on this thread, every run LangChain dropped that the background thread has not ended yet."""
    with _ending:
        while True:
            try:
                watch = _dropped.get_nowait()
            except queue.Empty:
                return
            _end_dropped(watch)


def _work_on_dropped_runs() -> None:
    while True:
        watch = _dropped.get()
        try:
            with _ending:
                _end_dropped(watch)
        except Exception:
            log_exception_once(_logged, "dropped", "could not end a cancelled LangChain call's generation")


def _start_dropped_worker() -> None:
    """Once per process: the thread that ends dropped runs, and the exit hook that ends the rest.

    Registered after the Langfuse client was made, the exit hook runs before Langfuse's own
    shutdown exports what ended (atexit runs last-registered first).
    """
    global _dropped_worker
    with _dropped_worker_lock:
        if _dropped_worker is not None and _dropped_worker.is_alive():
            return
        worker = threading.Thread(target=_work_on_dropped_runs, name="langfuse-openrouter-dropped-runs")
        worker.daemon = True
        worker.start()
        _dropped_worker = worker
        atexit.register(end_dropped_runs)


class CallbackHandler(LangfuseCallbackHandler):
    """Langfuse's LangChain handler, with OpenRouter cache usage, true cost and savings.

    Takes every argument of `langfuse.langchain.CallbackHandler` (`public_key`, `trace_context`, ...),
    `price_catalog`, the `PriceCatalog` to price calls with (default: one shared per process), and
    `savings_score`: also record each call's cache savings as the numeric score
    `openrouter_cache_savings_usd`, which Langfuse can aggregate (default off).

    `fetch_generation_stats`: reconcile each call with OpenRouter's `/generation` record, fetched in
    the background (default: the `LANGFUSE_OPENROUTER_FETCH_GENERATION_STATS` environment variable;
    needs `OPENROUTER_API_KEY`). `generation_stats_fetcher`: a `GenerationStatsFetcher` of your own
    (its limits and timeouts); giving one turns the lookups on unless `fetch_generation_stats=False`.
    """

    def __init__(
        self,
        *,
        price_catalog: PriceCatalog | None = None,
        savings_score: bool = False,
        fetch_generation_stats: bool | None = None,
        generation_stats_fetcher: GenerationStatsFetcher | None = None,
        **langfuse_kwargs: Any,
    ) -> None:
        super().__init__(**langfuse_kwargs)
        self.savings_score = savings_score
        self.price_catalog = price_catalog if price_catalog is not None else PriceCatalog.shared()
        self.price_catalog.preload()
        self._calls: dict[UUID, _Call] = {}  # by run id; one atomic dict operation per access, no lock
        self._logged: set[str] = set()
        self._self_ref = weakref.ref(self)
        _start_dropped_worker()
        self._generation_stats = resolve_fetcher(fetch_generation_stats, generation_stats_fetcher)
        if self._generation_stats is not None:
            watch_langfuse_client(getattr(self, "_langfuse_client", None))

    def flush(self) -> None:
        """Wait (bounded) for pending `/generation` lookups, then export everything recorded so far."""
        end_dropped_runs()
        if self._generation_stats is not None:
            self._generation_stats.flush()
        client = getattr(self, "_langfuse_client", None)
        if client is not None:
            client.flush()

    # ------------------------------------------------------------------ LangChain events

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> Any:
        result = super().on_chain_start(serialized, inputs, run_id=run_id, **kwargs)
        if serialized is None and inputs == _STREAMED_CHAIN_INPUTS:
            # A chain run by `stream`/`transform` (LangChain starts those with no `serialized` and a
            # placeholder input): it yields to the caller with its span attached, so an unfinished or
            # interleaved stream would be the parent of every call made meanwhile. Its child runs
            # still nest under it by their parent run ids.
            self._not_current(run_id)
        return result

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> Any:
        key = self._remember(run_id, serialized, kwargs, messages)
        try:
            result = super().on_chat_model_start(serialized, messages, run_id=key, **kwargs)
            self._set_trace_attributes(key, kwargs)
            return result
        finally:
            self._not_current(key)

    def on_llm_start(self, serialized: dict[str, Any], prompts: Any, *, run_id: UUID, **kwargs: Any) -> Any:
        key = self._remember(run_id, serialized, kwargs, prompts)
        try:
            result = super().on_llm_start(serialized, prompts, run_id=key, **kwargs)
            self._set_trace_attributes(key, kwargs)
            return result
        finally:
            self._not_current(key)

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> Any:
        call = self._calls.get(run_id)  # Langfuse keeps the run id it is given: ours, not LangChain's
        return super().on_llm_new_token(token, run_id=run_id if call is None else call.key, **kwargs)

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> Any:
        call = self._calls.pop(run_id, None)
        enrichment = None
        failed = False
        try:
            failed = _ended_with_error(response)
            enrichment = self._enrichment(response, call)
            if enrichment is None:
                self._keep_usage_sane(run_id)
        except Exception:
            log_exception_once(
                self._logged,
                "on_llm_end",
                "could not record OpenRouter cost on a Langfuse generation; it keeps Langfuse's own data",
            )
        requested_model = call.requested_model if call else None
        if enrichment is not None and _MIRRORS_LANGFUSE_ON_LLM_END:
            status = {"level": ERROR_LEVEL, "status_message": _STREAM_ERROR_MESSAGE} if failed else None
            return self._end_enriched(
                response, run_id, parent_run_id, enrichment, requested_model, kwargs, status
            )
        if failed:
            self._mark(run_id, ERROR_LEVEL, _STREAM_ERROR_MESSAGE)
        if enrichment is not None:
            self._hand_to_final_update(run_id, enrichment, requested_model)
        result = super().on_llm_end(response, run_id=run_id, parent_run_id=parent_run_id, **kwargs)
        if run_id in self._runs:  # Langfuse's own on_llm_end failed before ending the generation
            self._end_left_open(run_id=run_id, output=getattr(_last_generation(response), "text", None))
        return result

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> Any:
        call = self._calls.pop(run_id, None)
        if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            self._record_cancelled(run_id, call, kwargs.get("response"))
        return super().on_llm_error(error, run_id=run_id, **kwargs)

    # ------------------------------------------------------------------ runs LangChain does not end

    def _not_current(self, key: UUID) -> None:
        """Undo, at once, Langfuse's making the generation the current span of the caller's context.

        An LLM run has no child runs to nest; left current until its end event, an unfinished
        stream would be the parent of every call made meanwhile, and two streams would reset the
        context out of order. LangChain's async calls already run this handler in a copied context.
        """
        token = self._context_tokens.pop(key, None)
        if token is not None:
            otel_context.detach(token)  # right after its attach, in the same context: in order

    def _record_cancelled(self, run_id: UUID, call: _Call | None, response: Any) -> None:
        """Langfuse's `on_llm_error` records the generation as failed; a cancelled call says so
        instead, with its usage and cost if they arrived before the cancellation (a stream's)."""
        try:
            enrichment = None
            if isinstance(response, LLMResult) and response.generations and response.generations[0]:
                partial = LLMResult(generations=[response.generations[0]], llm_output=response.llm_output)
                enrichment = self._enrichment(partial, call)
            generation = self._runs.get(run_id)
            if generation is None:
                return

            def adjust(fields: dict[str, Any]) -> None:
                fields["level"], fields["status_message"] = CANCELLED_LEVEL, CANCELLED_MESSAGE
                if enrichment is not None:
                    fields["usage_details"] = enrichment.usage_details
                    fields["cost_details"] = enrichment.cost_details or None
                    fields["metadata"] = {**(fields.get("metadata") or {}), **enrichment.metadata}

            _adjust_final_update(generation, adjust)
        except Exception:
            log_exception_once(self._logged, "cancelled", "could not record a cancelled call's usage")

    def _end_dropped(self, key: UUID, at: int | None) -> None:
        """End a run LangChain let go of without an end event, as cancelled, and forget it."""
        call = self._calls.pop(key, None)
        if call is None:
            return
        try:
            generation = self._detach_observation(key)
            self._updated_completion_start_time_memo.discard(key)
            if call.root:
                self._clear_root_run_resume_key(key)
                self._reset(key)
            if generation is not None:
                generation.update(level=CANCELLED_LEVEL, status_message=CANCELLED_MESSAGE)
                generation.end(end_time=at)
        except Exception:
            log_exception_once(self._logged, "dropped", "could not end a cancelled call's generation")

    # ------------------------------------------------------------------ internals

    def _mark(self, run_id: UUID, level: str, status_message: str) -> None:
        """Give the generation's final `update()` this level and status message."""
        generation = self._runs.get(run_id)
        if generation is not None:
            _adjust_final_update(
                generation, lambda fields: fields.update(level=level, status_message=status_message)
            )

    def _keep_usage_sane(self, run_id: UUID) -> None:
        """Langfuse keeps any int-valued usage key, bools, negatives and absurd sizes included (beyond
        2**53 its serializer writes them as strings): drop those, by the bound our own reading uses."""

        def adjust(fields: dict[str, Any]) -> None:
            usage = fields.get("usage_details")
            if isinstance(usage, Mapping):
                kept = {k: v for k, v in usage.items() if type(v) is int and 0 <= v <= MAX_TOKENS}
                if len(kept) != len(usage):
                    fields["usage_details"] = kept or None

        generation = self._runs.get(run_id)
        if generation is not None:
            _adjust_final_update(generation, adjust)

    def _end_left_open(
        self,
        generation: Any = None,
        *,
        run_id: UUID | None = None,
        output: Any = None,
        end_time: int | None = None,
    ) -> None:
        """End, with what is known, a generation a failure left open (Langfuse's `on_llm_end` crashes
        on bad usage, or ours failed): detached first when only its run is known, `output` set if given."""
        try:
            if generation is None and run_id is not None:
                generation = self._detach_observation(run_id)
            span = getattr(generation, "_otel_span", None)
            if span is not None and span.is_recording():
                if output is not None:
                    generation.update(output=output)
                generation.end(end_time=end_time)
        except Exception:
            log_exception_once(self._logged, "end-left-open", "could not end a Langfuse generation")

    def _set_trace_attributes(self, run_id: UUID, kwargs: Mapping[str, Any]) -> None:
        """A bare LLM as the root run: its trace's user and session ids as plain strings.

        Langfuse's handler keeps `langfuse_user_id`/`langfuse_session_id` in such a generation's
        metadata, JSON-encoded, and the server then stores them with quotes (`"u-1"`); below a chain
        it propagates them as plain attributes, which the server reads first. Those are set here.
        """
        if kwargs.get("parent_run_id") is not None:
            return
        metadata = kwargs.get("metadata")
        if not isinstance(metadata, Mapping):
            return
        try:
            attributes = trace_attributes(
                metadata.get("langfuse_user_id"), metadata.get("langfuse_session_id")
            )
            generation = self._runs.get(run_id) if attributes else None
            if generation is not None:
                set_attributes(generation._otel_span, attributes)
        except Exception:
            log_exception_once(
                self._logged, "trace-attributes", "could not set a trace's user and session ids"
            )

    def _remember(self, run_id: UUID, serialized: Any, kwargs: Mapping[str, Any], prompt: Any) -> UUID:
        """Note what the call's end needs from its start (the model asked for, whether it is OpenRouter's,
        the fingerprint of the prompt: `messages` of a chat model, `prompts` of an LLM), and watch
        LangChain's run id; returns the key Langfuse's state is kept by."""
        model, openrouter, params = None, False, {}
        try:
            params = kwargs.get("invocation_params") or {}
            constructor = serialized.get("kwargs") or {} if isinstance(serialized, Mapping) else {}
            class_path = serialized.get("id") or [] if isinstance(serialized, Mapping) else []
            model = params.get("model") or params.get("model_name") or constructor.get("model_name")
            openrouter = bool(class_path) and class_path[-1] in _OPENROUTER_CLASSES
            openrouter = openrouter or any(is_openrouter_url(constructor.get(k)) for k in _BASE_URL_KEYS)
        except Exception:
            log_exception_once(self._logged, "on_start", "could not read a LangChain model's configuration")
        fingerprinted = None
        try:
            fingerprinted = _prompt_fingerprint(prompt, params)
        except Exception:
            log_exception_once(self._logged, "fingerprint", "could not fingerprint a LangChain prompt")
        try:
            key = UUID(int=run_id.int)
            watch = _RunWatch(run_id, _on_dropped)
        except (AttributeError, TypeError):  # not a UUID: nothing to watch
            return run_id
        watch.handler, watch.key, watch.dropped_at = self._self_ref, key, None
        root = kwargs.get("parent_run_id") is None
        self._calls[key] = _Call(
            model if isinstance(model, str) else None, openrouter, key, root, watch, fingerprinted
        )
        return key

    def _enrichment(self, response: LLMResult, call: _Call | None) -> Enrichment | None:
        generations = response.generations
        message = getattr(generations[-1][-1], "message", None) if generations and generations[-1] else None
        llm_output = response.llm_output
        metadata = {**(llm_output or {}), **(getattr(message, "response_metadata", None) or {})}
        if (type(llm_output) is dict or isinstance(llm_output, Mapping)) and "token_usage" in llm_output:
            metadata["token_usage"] = llm_output["token_usage"]  # OpenRouter's raw usage
        model_name = metadata.get("model_name")
        if type(model_name) is str:
            metadata["model_name"] = _one_model(model_name)
        requested = call.requested_model if call else None
        usage = OpenRouterUsage.from_langchain(
            getattr(message, "usage_metadata", None), metadata, model=requested
        )
        if usage.is_empty or not ((call is not None and call.openrouter) or has_openrouter_markers(usage)):
            return None  # not OpenRouter, or nothing to price: Langfuse's own record stands
        return enrich(
            usage, self.price_catalog, requested_model=requested, prompt=call.prompt if call else None
        )

    def _end_enriched(
        self,
        response: LLMResult,
        run_id: UUID,
        parent_run_id: UUID | None,
        enrichment: Enrichment,
        requested_model: str | None,
        kwargs: Mapping[str, Any],
        status: Mapping[str, str] | None = None,
    ) -> None:
        """Langfuse's `on_llm_end`, step for step, with our usage in place of its own reading of it.

        `status`: the `level` and `status_message` of a response that ended with an error.

        The same output, input and model are recorded as Langfuse's `update()` records them, with our
        usage, cost and metadata in the same write (`update_and_record`); the same run state is cleared.
        Langfuse's reading of the usage, which ours replaces, is not done twice.
        """
        generation = None
        try:
            self._log_debug_event("on_llm_end", run_id, parent_run_id, response=response, kwargs=kwargs)
            last = response.generations[-1][-1]
            output = (
                self._convert_message_to_dict(last.message)
                if isinstance(last, ChatGeneration)
                else _extract_raw_response(last)
            )
            generation = self._detach_observation(run_id)
            if generation is not None:
                fields = {"output": output, "input": kwargs.get("inputs"), "model": _parse_model(response)}
                if status:
                    fields.update(status)
                update_and_record(generation, enrichment, fields)
                self._end(generation, enrichment, requested_model)
        except Exception:
            log_exception_once(
                self._logged, "on_llm_end", "could not record an OpenRouter call on its Langfuse generation"
            )
            self._end_left_open(generation, run_id=run_id)
        finally:
            self._updated_completion_start_time_memo.discard(run_id)
            if parent_run_id is None:
                self._clear_root_run_resume_key(run_id)
                self._reset(run_id)

    def _end(
        self, generation: Any, enrichment: Enrichment, requested_model: str | None, at: int | None = None
    ) -> None:
        """End the generation (at `at`, ns, default now), or once its `/generation` record is in."""
        stats = self._generation_stats if enrichment.usage.generation_id else None
        if stats is None:
            if self.savings_score:
                trace_id, observation_id = generation.trace_id, generation.id
                record_savings_score(
                    self._langfuse_client, enrichment, trace_id=trace_id, observation_id=observation_id
                )
            generation.end(end_time=at)
            return
        end_after_lookup(
            stats,
            generation,
            enrichment,
            catalog=self.price_catalog,
            requested_model=requested_model,
            ended_at=at or time.time_ns(),  # the call's true end, also when the end is held back
            langfuse=self._langfuse_client,
            savings_score=self.savings_score,
            logged=self._logged,
        )

    def _hand_to_final_update(
        self, run_id: UUID, enrichment: Enrichment, requested_model: str | None
    ) -> None:
        """For a Langfuse whose `on_llm_end` we do not mirror: our fields join its final `update()`.

        That update replaces `usage_details` whole, so ours are given to that very call, and the
        `end()` that follows goes through `_end` (savings score, `/generation` lookups).
        """
        generation = self._runs.get(run_id)
        if generation is None:
            return

        def adjust(fields: dict[str, Any]) -> None:
            fields["usage_details"] = enrichment.usage_details
            if enrichment.cost_details:
                fields["cost_details"] = enrichment.cost_details
            fields["metadata"] = {**(fields.get("metadata") or {}), **enrichment.metadata}
            generation.end = end  # type: ignore[method-assign]

        def end(*, end_time: int | None = None) -> Any:
            generation.__dict__.pop("end", None)
            try:
                self._end(generation, enrichment, requested_model, end_time or time.time_ns())
            except Exception:
                log_exception_once(self._logged, "end", "could not end a Langfuse generation")
                self._end_left_open(generation, end_time=end_time)
            return generation

        _adjust_final_update(generation, adjust)


_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function"}


def _prompt_fingerprint(prompt: Any, params: Mapping[str, Any]) -> PromptFingerprint | None:
    """The fingerprint of a chat model's `messages` (one list per run: a batch starts one run per
    prompt) or an LLM's `prompts`, with the tools and top-level `cache_control` of the request."""
    if not isinstance(prompt, list):
        return None
    if prompt and all(isinstance(p, str) for p in prompt):
        messages = [{"role": "user", "content": p} for p in prompt]
    else:
        messages = [_neutral(m) for run in prompt if isinstance(run, list) for m in run]
    extra = [params.get(k) for k in ("extra_body", "model_kwargs")]
    top = next(
        (d["cache_control"] for d in (params, *extra) if isinstance(d, Mapping) and "cache_control" in d),
        None,
    )
    tools = params.get("tools")
    return fingerprint(messages, tools if isinstance(tools, list) else None, cache_control=top)


def _neutral(message: Any) -> Any:
    """A LangChain message as the plain dict the fingerprint reads (other entries as they are)."""
    if not isinstance(message, BaseMessage):
        return message
    kind = message.type
    neutral: dict[str, Any] = {
        "role": message.role if isinstance(message, ChatMessage) else _ROLES.get(kind, kind),
        "content": message.content,
    }
    if isinstance(message, AIMessage) and message.tool_calls:
        neutral["tool_calls"] = [
            {"id": c.get("id"), "name": c.get("name"), "args": c.get("args")} for c in message.tool_calls
        ]
    elif isinstance(message, ToolMessage):
        neutral["tool_call_id"] = message.tool_call_id
    return neutral


def _ended_with_error(response: LLMResult) -> bool:
    """Whether OpenRouter ended the response with `finish_reason: "error"` (a mid-stream error, which
    langchain-openrouter passes on as a normal end)."""
    last = _last_generation(response)
    if last is None:
        return False
    info = getattr(last, "generation_info", None) or {}
    metadata = getattr(getattr(last, "message", None), "response_metadata", None) or {}
    return info.get("finish_reason") == "error" or metadata.get("finish_reason") == "error"


def _one_model(name: str) -> str:
    """The model a streamed `ChatOpenAI` call names: LangChain joins the `model` of every chunk that
    ends a choice, and OpenRouter's usage chunk ends it again, so the id comes twice over ("XX")."""
    period = (name + name).find(name, 1)
    return name[:period] if 0 < period < len(name) else name


def _last_generation(response: LLMResult) -> Any:
    """The generation LangChain reports last (the one Langfuse records), or None."""
    return response.generations[-1][-1] if response.generations and response.generations[-1] else None


def _adjust_final_update(generation: Any, adjust: Callable[[dict[str, Any]], None]) -> None:
    """Let `adjust` change the fields of the generation's next `update()`, the one it is ended with.

    A later `update(usage_details=...)` replaces the attribute whole, so ours must be in that very
    call. One call only; then the object is back to normal.
    """
    langfuse_update = generation.update

    def update(**fields: Any) -> Any:
        generation.__dict__.pop("update", None)
        adjust(fields)
        return langfuse_update(**fields)

    generation.update = update
