"""LangChain: a drop-in for `langfuse.langchain.CallbackHandler` that records OpenRouter's true cost.

    from langfuse_openrouter_callbacks.langchain import CallbackHandler

    handler = CallbackHandler()
    chain.invoke(inputs, config={"callbacks": [handler]})

Everything Langfuse's handler records is recorded the same way; for calls answered by OpenRouter the
generation's `usage_details`, `cost_details` and `metadata["openrouter"]` are ours.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.outputs import LLMResult
from langfuse.langchain import CallbackHandler as LangfuseCallbackHandler

from ._enrich import Enrichment, enrich, has_openrouter_markers, is_openrouter_url, record_savings_score
from ._log import log_exception_once
from .catalog import PriceCatalog
from .usage import OpenRouterUsage

__all__ = ["CallbackHandler"]

_OPENROUTER_CLASSES = ("ChatOpenRouter",)
_BASE_URL_KEYS = ("openai_api_base", "openrouter_api_base", "base_url", "api_base")


@dataclass(frozen=True, slots=True)
class _Call:
    requested_model: str | None
    openrouter: bool  # known to be OpenRouter from the model's class or base URL


class CallbackHandler(LangfuseCallbackHandler):
    """Langfuse's LangChain handler, with OpenRouter cache usage, true cost and savings.

    Takes every argument of `langfuse.langchain.CallbackHandler` (`public_key`, `trace_context`, ...),
    `price_catalog`, the `PriceCatalog` to price calls with (default: one shared per process), and
    `savings_score`: also record each call's cache savings as the numeric score
    `openrouter_cache_savings_usd`, which Langfuse can aggregate (default off).
    """

    def __init__(
        self,
        *,
        price_catalog: PriceCatalog | None = None,
        savings_score: bool = False,
        **langfuse_kwargs: Any,
    ) -> None:
        super().__init__(**langfuse_kwargs)
        self.savings_score = savings_score
        self.price_catalog = price_catalog if price_catalog is not None else PriceCatalog.shared()
        self.price_catalog.preload()
        self._calls: dict[UUID, _Call] = {}
        self._calls_lock = threading.Lock()
        self._logged: set[str] = set()

    # ------------------------------------------------------------------ LangChain events

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> Any:
        self._remember(run_id, serialized, kwargs)
        return super().on_chat_model_start(serialized, messages, run_id=run_id, **kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: Any, *, run_id: UUID, **kwargs: Any) -> Any:
        self._remember(run_id, serialized, kwargs)
        return super().on_llm_start(serialized, prompts, run_id=run_id, **kwargs)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> Any:
        with self._calls_lock:
            call = self._calls.pop(run_id, None)
        try:
            enrichment = self._enrichment(response, call)
            if enrichment is not None:
                self._record(run_id, enrichment)
        except Exception:
            log_exception_once(
                self._logged,
                "on_llm_end",
                "could not record OpenRouter cost on a Langfuse generation; it keeps Langfuse's own data",
            )
        return super().on_llm_end(response, run_id=run_id, **kwargs)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> Any:
        with self._calls_lock:
            self._calls.pop(run_id, None)
        return super().on_llm_error(error, run_id=run_id, **kwargs)

    # ------------------------------------------------------------------ internals

    def _remember(self, run_id: UUID, serialized: Any, kwargs: Mapping[str, Any]) -> None:
        try:
            params = kwargs.get("invocation_params") or {}
            constructor = serialized.get("kwargs") or {} if isinstance(serialized, Mapping) else {}
            class_path = serialized.get("id") or [] if isinstance(serialized, Mapping) else []
            model = params.get("model") or params.get("model_name") or constructor.get("model_name")
            openrouter = bool(class_path) and class_path[-1] in _OPENROUTER_CLASSES
            openrouter = openrouter or any(is_openrouter_url(constructor.get(k)) for k in _BASE_URL_KEYS)
            call = _Call(model if isinstance(model, str) else None, openrouter)
        except Exception:
            log_exception_once(self._logged, "on_start", "could not read a LangChain model's configuration")
            return
        with self._calls_lock:
            self._calls[run_id] = call

    def _enrichment(self, response: LLMResult, call: _Call | None) -> Enrichment | None:
        generation = (
            response.generations[-1][-1] if response.generations and response.generations[-1] else None
        )
        message = getattr(generation, "message", None)
        metadata = {**(response.llm_output or {}), **(getattr(message, "response_metadata", None) or {})}
        if isinstance(response.llm_output, Mapping) and "token_usage" in response.llm_output:
            metadata["token_usage"] = response.llm_output["token_usage"]  # OpenRouter's raw usage
        requested = call.requested_model if call else None
        usage = OpenRouterUsage.from_langchain(
            getattr(message, "usage_metadata", None), metadata, model=requested
        )
        if usage.is_empty or not ((call is not None and call.openrouter) or has_openrouter_markers(usage)):
            return None  # not OpenRouter, or nothing to price: Langfuse's own record stands
        return enrich(usage, self.price_catalog, requested_model=requested)

    def _record(self, run_id: UUID, enrichment: Enrichment) -> None:
        """Make our fields the ones Langfuse's `on_llm_end` ends the generation with.

        Langfuse ends the generation with one `update(usage_details=...)` that replaces the whole
        attribute, so ours are given to that very call.
        """
        generation = self._runs.get(run_id)
        if generation is None:
            return
        generation.update(metadata=enrichment.metadata)
        if self.savings_score:
            record_savings_score(
                self._langfuse_client, enrichment, trace_id=generation.trace_id, observation_id=generation.id
            )
        langfuse_update = generation.update

        def update(**fields: Any) -> Any:
            fields["usage_details"] = enrichment.usage_details
            if enrichment.cost_details:
                fields["cost_details"] = enrichment.cost_details
            generation.__dict__.pop("update", None)  # one final update; the object is back to normal
            return langfuse_update(**fields)

        generation.update = update  # type: ignore[method-assign]
