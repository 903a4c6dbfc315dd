"""A local fake of OpenRouter's HTTP API, shaped like real recorded responses.

Serves, on ``http://127.0.0.1:PORT/api/v1``:

- ``POST /chat/completions`` (``stream: false`` JSON and ``stream: true`` SSE),
  ``POST /completions`` (text completion) and ``POST /responses`` (the Responses API: a
  ``response`` object, or its SSE events ending in ``response.completed``), answered from, in
  order of precedence:
  the FIFO queue (:meth:`FakeOpenRouter.queue`, :meth:`FakeOpenRouter.replay`), the installed
  ``responder(request_body)`` callable, then the default :class:`ResponseSpec`.
- ``GET /models``, ``GET /models/{author}/{slug}/endpoints`` and ``GET /generation?id=...`` from
  data the test sets, each with fault knobs (:class:`Fault`).

Response bodies follow the recorded exchanges in ``openrouter_recorded_exchanges.json``: top-level
``id`` (``gen-<unix>-<20 chars>``), ``provider``, ``model``, ``object``, ``created``, ``choices``
(with ``native_finish_reason`` and ``message.reasoning`` / ``refusal``), ``usage`` with
``prompt_tokens_details``, ``completion_tokens_details``, ``cost``, ``is_byok``, ``cost_details``
and optional ``server_tool_use_details``. SSE streams start with ``: OPENROUTER PROCESSING``
comments, end with a usage chunk and ``data: [DONE]``, and use chunked transfer encoding.

Note on the usage chunk: all seven recorded SSE streams put ``usage`` on a chunk that still
carries one choice (empty delta). The OpenAI-style ``"choices": []`` shape is the default here
(``usage_chunk_style="empty_choices"``); ``usage_chunk_style="with_choice"`` reproduces the
recordings. Replay (:meth:`FakeOpenRouter.replay`) serves the recorded bytes themselves.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from ..shared_data import DATA
from ._http import BackgroundHTTPServer, QuietHandler, RecordedRequest

__all__ = [
    "AUTO",
    "FakeOpenRouter",
    "Fault",
    "RecordedExchange",
    "ResponseSpec",
    "ToolCall",
    "Usage",
    "endpoint_entry",
    "endpoints_payload",
    "error_spec",
    "find_recorded_exchange",
    "generation_data",
    "load_recorded_exchanges",
    "marker",
    "marker_responder",
    "model_entry",
    "new_generation_id",
    "recorded_exchanges_path",
    "request_text",
]

API_PREFIX = "/api/v1"


class _Auto:
    """Sentinel: derive the value from the other fields."""

    _instance: _Auto | None = None

    def __new__(cls) -> _Auto:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "AUTO"


AUTO = _Auto()

_ALNUM = string.ascii_letters + string.digits


def new_generation_id(created: int | None = None) -> str:
    """A generation id shaped like OpenRouter's: ``gen-<unix seconds>-<20 alphanumerics>``."""
    stamp = int(time.time()) if created is None else created
    return f"gen-{stamp}-{''.join(secrets.choice(_ALNUM) for _ in range(20))}"


# --------------------------------------------------------------------------------------------
# Scripting types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """OpenRouter's ``usage`` object. Counts follow OpenRouter's inclusive semantics.

    ``prompt_tokens`` includes ``cached_tokens`` and ``cache_write_tokens``;
    ``completion_tokens`` includes ``reasoning_tokens``. ``None`` omits a key.
    ``upstream_inference_cost`` defaults (``AUTO``) to ``cost`` for non-BYOK calls and ``None``
    for BYOK; the prompt/completion parts default to a token-proportional split of it.
    ``legacy=True`` emits only ``prompt_tokens``/``completion_tokens``/``total_tokens`` as in
    2025 responses without cost accounting.
    """

    prompt_tokens: int = 12
    completion_tokens: int = 7
    cached_tokens: int | None = 0
    cache_write_tokens: int | None = 0
    audio_tokens: int | None = 0
    video_tokens: int | None = 0
    reasoning_tokens: int | None = 0
    image_tokens: int | None = 0
    completion_audio_tokens: int | None = 0
    cost: float | None = 0.000123
    is_byok: bool | None = False
    upstream_inference_cost: float | _Auto | None = AUTO
    upstream_inference_prompt_cost: float | _Auto | None = AUTO
    upstream_inference_completions_cost: float | _Auto | None = AUTO
    web_search_requests: int | None = None
    server_tool_cost: float | None = None
    tool_calls_requested: int | None = None
    tool_calls_executed: int | None = None
    total_tokens: int | _Auto | None = AUTO
    legacy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Merged into the usage object last (overrides computed keys)."""

    def to_json(self) -> dict[str, Any]:
        """The wire ``usage`` object."""
        total = (
            self.prompt_tokens + self.completion_tokens
            if isinstance(self.total_tokens, _Auto)
            else self.total_tokens
        )
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }
        if self.legacy:
            out.update(self.extra)
            return out
        if self.cost is not None:
            out["cost"] = self.cost
        if self.is_byok is not None:
            out["is_byok"] = self.is_byok
        out["prompt_tokens_details"] = _drop_none(
            {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
                "audio_tokens": self.audio_tokens,
                "video_tokens": self.video_tokens,
            }
        )
        out["completion_tokens_details"] = _drop_none(
            {
                "reasoning_tokens": self.reasoning_tokens,
                "image_tokens": self.image_tokens,
                "audio_tokens": self.completion_audio_tokens,
            }
        )
        if self.cost is not None or not isinstance(self.upstream_inference_cost, _Auto):
            out["cost_details"] = self.cost_details()
        server_tools = _drop_none(
            {
                "web_search_requests": self.web_search_requests,
                "tool_calls_requested": self.tool_calls_requested,
                "tool_calls_executed": self.tool_calls_executed,
            }
        )
        if server_tools:
            out["server_tool_use_details"] = server_tools
        out.update(self.extra)
        return out

    def to_responses_json(self) -> dict[str, Any]:
        """The wire ``usage`` object of the Responses API: the same counts and costs under its names
        (``input_tokens``, ``input_tokens_details``, ``upstream_inference_input_cost``, ...)."""
        chat = self.to_json()
        prompt = chat.get("prompt_tokens_details") or {}
        completion = chat.get("completion_tokens_details") or {}
        out: dict[str, Any] = {
            "input_tokens": chat["prompt_tokens"],
            "input_tokens_details": _drop_none(
                {
                    "cached_tokens": prompt.get("cached_tokens", 0),
                    "cache_write_tokens": prompt.get("cache_write_tokens"),
                }
            ),
            "output_tokens": chat["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": completion.get("reasoning_tokens", 0)},
            "total_tokens": chat["total_tokens"],
        }
        for key in ("cost", "is_byok", "server_tool_use_details"):
            if key in chat:
                out[key] = chat[key]
        if "cost_details" in chat:
            details = chat["cost_details"]
            out["cost_details"] = _drop_none(
                {
                    "upstream_inference_cost": details["upstream_inference_cost"],
                    "upstream_inference_input_cost": details["upstream_inference_prompt_cost"],
                    "upstream_inference_output_cost": details["upstream_inference_completions_cost"],
                    "server_tool_cost": details.get("server_tool_cost"),
                }
            )
            out["cost_details"].setdefault("upstream_inference_cost", None)
        return out

    def cost_details(self) -> dict[str, Any]:
        """The wire ``cost_details`` object (AUTO values resolved)."""
        upstream = self.upstream_inference_cost
        if isinstance(upstream, _Auto):
            upstream = None if self.is_byok else self.cost
        prompt_cost = self.upstream_inference_prompt_cost
        completions_cost = self.upstream_inference_completions_cost
        if isinstance(prompt_cost, _Auto) or isinstance(completions_cost, _Auto):
            tokens = self.prompt_tokens + self.completion_tokens
            basis = upstream if upstream is not None else self.cost or 0.0
            auto_prompt = round(basis * self.prompt_tokens / tokens, 12) if tokens else 0.0
            if isinstance(prompt_cost, _Auto):
                prompt_cost = auto_prompt
            if isinstance(completions_cost, _Auto):
                completions_cost = round(basis - auto_prompt, 12)
        details = {
            "upstream_inference_cost": upstream,
            "upstream_inference_prompt_cost": prompt_cost,
            "upstream_inference_completions_cost": completions_cost,
        }
        if self.server_tool_cost is not None:
            details["server_tool_cost"] = self.server_tool_cost
        return details


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class ToolCall:
    """An assistant tool call; ``arguments`` may be a dict (JSON-encoded on the wire)."""

    name: str
    arguments: str | dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    """Defaults to ``call_<24 alphanumerics>``."""

    def arguments_json(self) -> str:
        """Arguments as the JSON string OpenAI-compatible APIs send."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


UsageChunkStyle = Literal["empty_choices", "with_choice"]


@dataclass(frozen=True)
class ResponseSpec:
    """How to answer one completion request.

    ``model=None`` echoes the requested model (real OpenRouter often answers with a dated id,
    e.g. ``anthropic/claude-4.5-sonnet-20250929``: set it explicitly). ``generation_id=None``
    makes a fresh ``gen-...`` id per response. ``finish_reason=None`` means ``"tool_calls"``
    when ``tool_calls`` is set, else ``"stop"``.

    Errors: ``status >= 400`` sends ``error_body`` (see :func:`error_spec`). ``raw_body`` sends
    arbitrary bytes with ``status``. Streams: ``stream_chunks`` overrides how ``content`` is
    split; ``chunk_delay`` sleeps between SSE events; ``include_usage=False`` omits the usage
    chunk; ``truncate_after_events=N`` drops the connection after N ``data:`` events without
    ``[DONE]``; ``stream_error`` adds an in-stream error event (like the recorded minimax one).
    """

    content: str | None = "Hello from the fake OpenRouter."
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    provider: str | None = "OpenAI"
    generation_id: str | None = None
    created: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    extra_fields: dict[str, Any] = field(default_factory=dict)
    """Merged into the top-level response object (non-stream) / every chunk (stream)."""
    status: int = 200
    error_body: dict[str, Any] | None = None
    raw_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before sending the response headers."""
    chunk_delay: float = 0.0
    stream_chunks: tuple[str, ...] | None = None
    processing_comments: int = 2
    usage_chunk_style: UsageChunkStyle = "empty_choices"
    include_usage: bool = True
    truncate_after_events: int | None = None
    stream_error: dict[str, Any] | None = None

    def with_usage(self, **changes: Any) -> ResponseSpec:
        """Copy with some :class:`Usage` fields changed."""
        return replace(self, usage=replace(self.usage, **changes))

    @property
    def resolved_finish_reason(self) -> str:
        """The ``finish_reason`` sent on the wire."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


def error_spec(
    status: int = 429,
    message: str = "Provider returned error",
    *,
    provider_name: str | None = "Google",
    raw: str | None = "Upstream provider is temporarily rate-limited. Please retry shortly.",
    user_id: str | None = "user_2wT5ElBE4Es3R4QrNLpZiXICmQP",
    delay: float = 0.0,
    headers: dict[str, str] | None = None,
) -> ResponseSpec:
    """An error response shaped like the recorded 429 exchanges."""
    error: dict[str, Any] = {"code": status, "message": message}
    meta = _drop_none({"provider_name": provider_name, "raw": raw})
    if meta:
        error["metadata"] = meta
    body: dict[str, Any] = {"error": error}
    if user_id is not None:
        body["user_id"] = user_id
    return ResponseSpec(status=status, error_body=body, delay=delay, headers=dict(headers or {}))


# --------------------------------------------------------------------------------------------
# Recorded exchanges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedExchange:
    """One real recorded OpenRouter request/response pair."""

    index: int
    source: str
    request_method: str
    request_path: str
    request_body: dict[str, Any] | None
    status: int
    content_type: str
    json_body: Any
    text: str | None

    @property
    def is_stream(self) -> bool:
        """True for SSE recordings."""
        return self.content_type.startswith("text/event-stream")

    @property
    def name(self) -> str:
        """Short name from the source, e.g. ``test_openrouter_usage.yaml#1``."""
        match = re.search(r"/([^/]+\.yaml) \(interaction (\d+)\)", self.source)
        return f"{match.group(1)}#{match.group(2)}" if match else f"exchange-{self.index}"

    def body_bytes(self) -> bytes:
        """The response body to serve: the SSE text verbatim, or the JSON re-encoded."""
        if self.text is not None:
            return self.text.encode()
        return json.dumps(self.json_body).encode()


def recorded_exchanges_path() -> Path:
    """The recorded exchanges: `$OPENROUTER_RECORDED_EXCHANGES`, else `tests/data/`."""
    env = os.environ.get("OPENROUTER_RECORDED_EXCHANGES")
    return Path(env) if env else DATA / "openrouter_recorded_exchanges.json"


_EXCHANGES_CACHE: dict[Path, list[RecordedExchange]] = {}


def load_recorded_exchanges(path: Path | None = None) -> list[RecordedExchange]:
    """Load (and cache) all recorded exchanges."""
    resolved = path or recorded_exchanges_path()
    if resolved not in _EXCHANGES_CACHE:
        raw = json.loads(resolved.read_text())
        _EXCHANGES_CACHE[resolved] = [
            RecordedExchange(
                index=i,
                source=item.get("source", ""),
                request_method=item["request"]["method"],
                request_path=item["request"]["path"],
                request_body=item["request"].get("body"),
                status=item["response"]["status"],
                content_type=item["response"]["content_type"],
                json_body=item["response"].get("json"),
                text=item["response"].get("text"),
            )
            for i, item in enumerate(raw)
        ]
    return list(_EXCHANGES_CACHE[resolved])


def find_recorded_exchange(
    name_contains: str = "", *, stream: bool | None = None, status: int | None = None
) -> RecordedExchange:
    """First recorded exchange whose source contains ``name_contains`` and matches the filters."""
    for exchange in load_recorded_exchanges():
        if name_contains not in exchange.source:
            continue
        if stream is not None and exchange.is_stream != stream:
            continue
        if status is not None and exchange.status != status:
            continue
        return exchange
    raise LookupError(f"no recorded exchange matches {name_contains!r} stream={stream} status={status}")


# --------------------------------------------------------------------------------------------
# Responder helpers
# --------------------------------------------------------------------------------------------


def request_text(body: dict[str, Any]) -> str:
    """All prompt text of a chat (``messages``) or completion (``prompt``) request body."""
    texts: list[str] = []
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        texts.append(prompt)
    elif isinstance(prompt, list):
        texts.extend(p for p in prompt if isinstance(p, str))
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part.get("text", "") for part in content if isinstance(part, dict))
    return "\n".join(texts)


_MARKER_RE = re.compile(r"\[\[or:(\{.*?\})\]\]", re.S)


def marker(**fields: Any) -> str:
    """A prompt marker understood by :func:`marker_responder`, e.g. ``marker(prompt_tokens=7)``."""
    return f"[[or:{json.dumps(fields, sort_keys=True)}]]"


_USAGE_FIELDS = frozenset(Usage.__dataclass_fields__)
_SPEC_FIELDS = frozenset(ResponseSpec.__dataclass_fields__) - {"usage", "tool_calls"}


def marker_responder(base: ResponseSpec | None = None) -> Callable[[dict[str, Any]], ResponseSpec]:
    """A responder that reads the last :func:`marker` in the prompt.

    Marker keys naming :class:`Usage` fields set usage; keys naming :class:`ResponseSpec`
    fields (``content``, ``model``, ``provider``, ``generation_id``, ``delay``...) set those.
    Requests without a marker get ``base``. Lets 200 concurrent requests get distinguishable
    usage: ``llm.invoke(f"q {marker(prompt_tokens=i, cost=i / 1000)}")``.
    """
    default = base or ResponseSpec()

    def responder(body: dict[str, Any]) -> ResponseSpec:
        found = _MARKER_RE.findall(request_text(body))
        if not found:
            return default
        fields = json.loads(found[-1])
        usage_changes = {k: v for k, v in fields.items() if k in _USAGE_FIELDS}
        spec_changes = {k: v for k, v in fields.items() if k in _SPEC_FIELDS}
        unknown = set(fields) - _USAGE_FIELDS - _SPEC_FIELDS
        if unknown:
            raise ValueError(f"unknown marker fields: {sorted(unknown)}")
        return replace(default, usage=replace(default.usage, **usage_changes), **spec_changes)

    return responder


# --------------------------------------------------------------------------------------------
# Catalogue payload helpers (GET /models, /endpoints, /generation)
# --------------------------------------------------------------------------------------------


def model_entry(
    model_id: str,
    pricing: dict[str, Any],
    *,
    canonical_slug: str | None = None,
    name: str | None = None,
    context_length: int = 200000,
    **extra: Any,
) -> dict[str, Any]:
    """One ``/models`` ``data[]`` item with the SDK's required fields filled plausibly."""
    entry: dict[str, Any] = {
        "id": model_id,
        "canonical_slug": canonical_slug or model_id,
        "hugging_face_id": "",
        "name": name or model_id,
        "created": 1759161676,
        "description": f"Fake catalogue entry for {model_id}.",
        "context_length": context_length,
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "pricing": pricing,
        "top_provider": {
            "context_length": context_length,
            "max_completion_tokens": 64000,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": ["max_tokens", "reasoning", "temperature", "tool_choice", "tools"],
        "default_parameters": None,
        "supported_voices": None,
        "links": {"details": f"/api/v1/models/{model_id}/endpoints"},
    }
    entry.update(extra)
    return entry


def endpoint_entry(
    provider_name: str,
    pricing: dict[str, Any],
    *,
    model_id: str = "anthropic/claude-4.5-sonnet-20250929",
    model_name: str = "Anthropic: Claude Sonnet 4.5",
    tag: str | None = None,
    name: str | None = None,
    supports_implicit_caching: bool = False,
    context_length: int = 200000,
    **extra: Any,
) -> dict[str, Any]:
    """One ``/models/{author}/{slug}/endpoints`` ``endpoints[]`` item."""
    entry: dict[str, Any] = {
        "name": name or f"{provider_name} | {model_id}",
        "model_id": model_id,
        "model_name": model_name,
        "context_length": context_length,
        "pricing": pricing,
        "provider_name": provider_name,
        "tag": tag or re.sub(r"[^a-z0-9]+", "-", provider_name.lower()).strip("-"),
        "quantization": None,
        "max_completion_tokens": 64000,
        "max_prompt_tokens": None,
        "supported_parameters": ["max_tokens", "reasoning", "temperature", "tool_choice", "tools"],
        "status": 0,
        "uptime_last_30m": 99.9,
        "supports_implicit_caching": supports_implicit_caching,
    }
    entry.update(extra)
    return entry


def endpoints_payload(
    model_id: str, endpoints: list[dict[str, Any]], *, name: str | None = None
) -> dict[str, Any]:
    """The ``data`` object of an endpoints response."""
    return {
        "id": model_id,
        "name": name or model_id,
        "created": 1759161676,
        "description": f"Fake endpoints for {model_id}.",
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "endpoints": endpoints,
    }


def generation_data(
    generation_id: str,
    usage: Usage,
    *,
    model: str,
    provider_name: str | None,
    streamed: bool = False,
    finish_reason: str = "stop",
    **extra: Any,
) -> dict[str, Any]:
    """The ``data`` object of ``GET /generation`` for a call answered with ``usage``."""
    cost = usage.cost if usage.cost is not None else 0.0
    details = usage.cost_details()
    data: dict[str, Any] = {
        "id": generation_id,
        "upstream_id": "chatcmpl-" + generation_id.rsplit("-", 1)[-1],
        "total_cost": cost,
        "cache_discount": None,
        "upstream_inference_cost": details["upstream_inference_cost"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "model": model,
        "app_id": None,
        "streamed": streamed,
        "cancelled": False,
        "provider_name": provider_name,
        "latency": 412,
        "moderation_latency": None,
        "generation_time": 380,
        "finish_reason": finish_reason,
        "native_finish_reason": finish_reason,
        "tokens_prompt": usage.prompt_tokens,
        "tokens_completion": usage.completion_tokens,
        "native_tokens_prompt": usage.prompt_tokens,
        "native_tokens_completion": usage.completion_tokens,
        "native_tokens_completion_images": usage.image_tokens or 0,
        "native_tokens_reasoning": usage.reasoning_tokens or 0,
        "native_tokens_cached": usage.cached_tokens or 0,
        "num_media_prompt": None,
        "num_input_audio_prompt": None,
        "num_media_completion": 0,
        "num_search_results": usage.web_search_requests or None,
        "num_fetches": None,
        "origin": "",
        "usage": cost,
        "is_byok": bool(usage.is_byok),
        "api_type": "completions",
        "router": None,
        "provider_responses": [
            {"status": 200, "provider_name": provider_name, "latency": 380, "is_byok": bool(usage.is_byok)}
        ],
        "user_agent": None,
        "http_referer": None,
        "external_user": None,
        "preset_id": None,
        "service_tier": None,
        "web_search_engine": None,
        "data_region": "global",
    }
    data.update(extra)
    return data


# --------------------------------------------------------------------------------------------
# Faults for the GET endpoints
# --------------------------------------------------------------------------------------------

FaultTarget = Literal["models", "endpoints", "generation"]


@dataclass
class Fault:
    """A fault injected on a GET endpoint; ``times=None`` means every request.

    ``status`` sends an OpenRouter error body with that status; ``invalid_json`` sends a
    complete but unparseable ``application/json`` body; ``truncate`` declares the full
    Content-Length, sends half the body and closes the connection; ``delay`` sleeps first;
    ``hold`` waits until the test sets that event (at most 60 s), so a test can check what happened
    while the server had not answered yet, on any machine; ``headers`` are added to the response
    (e.g. ``{"Retry-After": "1"}`` with ``status=429``).
    """

    status: int | None = None
    delay: float = 0.0
    hold: threading.Event | None = None
    invalid_json: bool = False
    truncate: bool = False
    times: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------

Responder = Callable[[dict[str, Any]], "ResponseSpec | RecordedExchange"]


class _OpenRouterHandler(QuietHandler):
    server_version = "fake-openrouter/1.0"

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def do_GET(self) -> None:
        self.server.owner._handle(self)


class FakeOpenRouter(BackgroundHTTPServer[_OpenRouterHandler]):
    """Fake OpenRouter on 127.0.0.1:0; see the module docstring."""

    handler_class = _OpenRouterHandler

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._queue: deque[ResponseSpec | RecordedExchange] = deque()
        self._responder: Responder | None = None
        self._default = ResponseSpec()
        self._models: list[dict[str, Any]] = []
        self._endpoints: dict[str, dict[str, Any]] = {}
        self._generations: dict[str, dict[str, Any]] = {}
        self._faults: dict[str, Fault] = {}
        self.auto_register_generations = True
        """Register a ``/generation`` record for every successful completion served."""
        self.require_api_key: str | None = None
        """When set, completion requests without ``Authorization: Bearer <key>`` get 401."""

    def start(self) -> FakeOpenRouter:
        """Start serving; returns ``self``."""
        super().start()
        return self

    def __enter__(self) -> FakeOpenRouter:
        return self.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api/v1`` — pass as the client's ``base_url``."""
        return self.root_url + API_PREFIX

    # -- scripting ------------------------------------------------------------------------

    def queue(self, *responses: ResponseSpec | RecordedExchange) -> None:
        """Append responses consumed FIFO by the next completion requests."""
        with self._lock:
            self._queue.extend(responses)

    def replay(self, exchange: RecordedExchange | int | str, *, times: int = 1) -> RecordedExchange:
        """Queue a recorded exchange (object, index, or source substring) to be served verbatim."""
        if isinstance(exchange, int):
            exchange = load_recorded_exchanges()[exchange]
        elif isinstance(exchange, str):
            exchange = find_recorded_exchange(exchange)
        self.queue(*([exchange] * times))
        return exchange

    @property
    def pending(self) -> int:
        """Number of queued responses not yet served."""
        with self._lock:
            return len(self._queue)

    def set_default(self, spec: ResponseSpec) -> None:
        """Response used when the queue is empty and no responder is installed."""
        with self._lock:
            self._default = spec

    @property
    def default(self) -> ResponseSpec:
        """The current default response spec."""
        with self._lock:
            return self._default

    def set_responder(self, responder: Responder | None) -> None:
        """Install ``responder(request_body) -> ResponseSpec | RecordedExchange`` (or remove it)."""
        with self._lock:
            self._responder = responder

    def set_models(self, models: Iterable[dict[str, Any]]) -> None:
        """Data for ``GET /models`` (see :func:`model_entry`)."""
        with self._lock:
            self._models = list(models)

    def set_endpoints(self, model_id: str, data: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Data for ``GET /models/{model_id}/endpoints``: the ``data`` object or its endpoints list."""
        payload = endpoints_payload(model_id, data) if isinstance(data, list) else data
        with self._lock:
            self._endpoints[model_id] = payload

    def set_generation(self, generation_id: str, data: dict[str, Any]) -> None:
        """Data for ``GET /generation?id=generation_id`` (see :func:`generation_data`)."""
        with self._lock:
            self._generations[generation_id] = data

    def forget_generation(self, generation_id: str) -> None:
        """Make ``GET /generation?id=generation_id`` answer 404."""
        with self._lock:
            self._generations.pop(generation_id, None)

    @property
    def generations(self) -> dict[str, dict[str, Any]]:
        """Copy of the generation records served by ``GET /generation``."""
        with self._lock:
            return dict(self._generations)

    def set_fault(self, target: FaultTarget, fault: Fault | None) -> None:
        """Inject (or clear with ``None``) a fault on ``models``, ``endpoints`` or ``generation``."""
        with self._lock:
            if fault is None:
                self._faults.pop(target, None)
            else:
                self._faults[target] = fault

    def reset(self) -> None:
        """Drop queue, responder, faults, catalogue data and recorded requests."""
        with self._lock:
            self._queue.clear()
            self._responder = None
            self._default = ResponseSpec()
            self._models.clear()
            self._endpoints.clear()
            self._generations.clear()
            self._faults.clear()
            self._requests.clear()
            self.require_api_key = None
            self.auto_register_generations = True

    # -- inspection -----------------------------------------------------------------------

    @property
    def completion_requests(self) -> list[RecordedRequest]:
        """POSTs to ``/chat/completions``, ``/completions`` and ``/responses``."""
        return [
            r
            for r in self.requests
            if r.method == "POST" and (r.path.endswith("completions") or r.path.endswith("/responses"))
        ]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """POSTs to ``/chat/completions``."""
        return [r for r in self.requests if r.path == API_PREFIX + "/chat/completions"]

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request of any kind."""
        requests = self.requests
        if not requests:
            raise LookupError("no request received yet")
        return requests[-1]

    @property
    def last_body(self) -> dict[str, Any]:
        """JSON body of the most recent completion request."""
        requests = self.completion_requests
        if not requests:
            raise LookupError("no completion request received yet")
        body = requests[-1].json()
        assert isinstance(body, dict)
        return body

    @staticmethod
    def asked_for_usage(request: RecordedRequest) -> bool:
        """Whether the request sent ``stream_options.include_usage`` (or legacy ``usage.include``)."""
        body = request.json() or {}
        stream_options = body.get("stream_options") or {}
        usage = body.get("usage") or {}
        return bool(stream_options.get("include_usage") or usage.get("include"))

    # -- request handling -------------------------------------------------------------------

    def _next_response(self, body: dict[str, Any]) -> ResponseSpec | RecordedExchange:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            responder, default = self._responder, self._default
        return responder(body) if responder is not None else default

    def _take_fault(self, target: str) -> Fault | None:
        with self._lock:
            fault = self._faults.get(target)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[target]
            return fault

    def _handle(self, handler: _OpenRouterHandler) -> None:
        request = handler.record()
        self._add_request(request)
        path = request.path
        if not path.startswith(API_PREFIX + "/"):
            handler.send_json(404, {"error": {"code": 404, "message": "Not Found"}})
            return
        route = path[len(API_PREFIX) :]
        if request.method == "POST" and route in ("/chat/completions", "/completions", "/responses"):
            self._handle_completion(handler, request, chat=route == "/chat/completions", api=route)
        elif request.method == "GET" and route == "/models":
            with self._lock:
                payload: Any = {"data": list(self._models)}
            self._send_catalogue(handler, "models", 200, payload)
        elif request.method == "GET" and route.startswith("/models/") and route.endswith("/endpoints"):
            model_id = unquote(route[len("/models/") : -len("/endpoints")])
            with self._lock:
                data = self._endpoints.get(model_id)
            if data is None:
                self._send_catalogue(
                    handler,
                    "endpoints",
                    404,
                    {"error": {"code": 404, "message": "No endpoints found for " + model_id}},
                )
            else:
                self._send_catalogue(handler, "endpoints", 200, {"data": data})
        elif request.method == "GET" and route == "/generation":
            gen_id = (request.query.get("id") or [""])[0]
            with self._lock:
                record = self._generations.get(gen_id)
            if record is None:
                self._send_catalogue(
                    handler,
                    "generation",
                    404,
                    {"error": {"code": 404, "message": f"Generation {gen_id} not found"}},
                )
            else:
                self._send_catalogue(handler, "generation", 200, {"data": record})
        else:
            handler.send_json(404, {"error": {"code": 404, "message": "Not Found"}})

    def _send_catalogue(self, handler: _OpenRouterHandler, target: str, status: int, payload: Any) -> None:
        fault = self._take_fault(target)
        if fault is None:
            handler.send_json(status, payload)
            return
        if fault.delay:
            time.sleep(fault.delay)
        if fault.hold is not None:
            fault.hold.wait(60)
        if fault.status is not None:
            status = fault.status
            if status >= 400:
                payload = {"error": {"code": status, "message": "Injected fault"}}
        body = json.dumps(payload).encode()
        if fault.invalid_json:
            handler.send_bytes(status, b'{"data": {"id": "broken", ', "application/json", fault.headers)
        elif fault.truncate:
            handler.send_bytes(
                status,
                body[: max(1, len(body) // 2)],
                "application/json",
                fault.headers,
                declared_length=len(body),
            )
        else:
            handler.send_bytes(status, body, "application/json", fault.headers)

    def _handle_completion(
        self, handler: _OpenRouterHandler, request: RecordedRequest, *, chat: bool, api: str
    ) -> None:
        try:
            body = request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            handler.send_json(400, {"error": {"code": 400, "message": f"Invalid JSON body: {exc}"}})
            return
        if self.require_api_key is not None:
            auth = request.header("authorization") or ""
            if auth != f"Bearer {self.require_api_key}":
                handler.send_json(401, {"error": {"code": 401, "message": "No auth credentials found"}})
                return
        response = self._next_response(body)
        if isinstance(response, RecordedExchange):
            self._serve_recorded(handler, response)
            return
        spec = response
        if spec.delay:
            time.sleep(spec.delay)
        if spec.raw_body is not None:
            handler.send_bytes(spec.status, spec.raw_body, "application/json", spec.headers)
            return
        if spec.status >= 400:
            handler.send_json(
                spec.status,
                spec.error_body or {"error": {"code": spec.status, "message": "Error"}},
                spec.headers,
            )
            return
        created = spec.created if spec.created is not None else int(time.time())
        gen_id = spec.generation_id or new_generation_id(created)
        model = spec.model or str(body.get("model") or "openrouter/auto")
        tool_ids = tuple(
            tc.id or "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24)) for tc in spec.tool_calls
        )
        stream = bool(body.get("stream"))
        if self.auto_register_generations:
            self.set_generation(
                gen_id,
                generation_data(
                    gen_id,
                    spec.usage,
                    model=model,
                    provider_name=spec.provider,
                    streamed=stream,
                    finish_reason=spec.resolved_finish_reason,
                ),
            )
        if api == "/responses":
            response = _responses_payload(spec, gen_id, created, model)
            if stream:
                self._serve_stream(handler, spec, _responses_events(response))
            else:
                handler.send_json(200, response, spec.headers)
        elif stream:
            events = _chat_stream_events if chat else _text_stream_events
            self._serve_stream(handler, spec, events(spec, gen_id, created, model, tool_ids))
        else:
            payload = _chat_payload if chat else _text_payload
            handler.send_json(200, payload(spec, gen_id, created, model, tool_ids), spec.headers)

    def _serve_stream(self, handler: _OpenRouterHandler, spec: ResponseSpec, events: Iterator[bytes]) -> None:
        handler.start_chunked(200, "text/event-stream", spec.headers)
        for _ in range(spec.processing_comments):
            handler.write_chunk(b": OPENROUTER PROCESSING\n\n")
        for sent, event in enumerate(events):
            if spec.truncate_after_events is not None and sent >= spec.truncate_after_events:
                handler.abort_connection()
                return
            if spec.chunk_delay:
                time.sleep(spec.chunk_delay)
            handler.write_chunk(event)
        handler.end_chunked()

    def _serve_recorded(self, handler: _OpenRouterHandler, exchange: RecordedExchange) -> None:
        if not exchange.is_stream:
            handler.send_bytes(exchange.status, exchange.body_bytes(), exchange.content_type)
            return
        handler.start_chunked(exchange.status, exchange.content_type)
        text = exchange.text or ""
        # one HTTP chunk per SSE event, like the real service flushes them
        for piece in re.split(r"(?<=\n\n)", text):
            handler.write_chunk(piece.encode())
        handler.end_chunked()


# --------------------------------------------------------------------------------------------
# Wire shapes
# --------------------------------------------------------------------------------------------


def _message(spec: ResponseSpec, tool_ids: tuple[str, ...]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": spec.content,
        "refusal": None,
        "reasoning": spec.reasoning,
    }
    if spec.reasoning is not None:
        message["reasoning_details"] = [
            {"type": "reasoning.text", "text": spec.reasoning, "format": "unknown", "index": 0}
        ]
    if spec.tool_calls:
        message["tool_calls"] = [
            {
                "index": i,
                "id": tool_ids[i],
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments_json()},
            }
            for i, tc in enumerate(spec.tool_calls)
        ]
    return message


def _envelope(spec: ResponseSpec, gen_id: str, created: int, model: str, obj: str) -> dict[str, Any]:
    return {"id": gen_id, "provider": spec.provider, "model": model, "object": obj, "created": created}


def _chat_payload(
    spec: ResponseSpec, gen_id: str, created: int, model: str, tool_ids: tuple[str, ...]
) -> dict[str, Any]:
    finish = spec.resolved_finish_reason
    payload = _envelope(spec, gen_id, created, model, "chat.completion")
    payload["choices"] = [
        {
            "logprobs": None,
            "finish_reason": finish,
            "native_finish_reason": spec.native_finish_reason or finish,
            "index": 0,
            "message": _message(spec, tool_ids),
        }
    ]
    payload["system_fingerprint"] = spec.system_fingerprint
    payload["service_tier"] = spec.service_tier
    payload["usage"] = spec.usage.to_json()
    payload.update(spec.extra_fields)
    return payload


def _text_payload(
    spec: ResponseSpec, gen_id: str, created: int, model: str, tool_ids: tuple[str, ...]
) -> dict[str, Any]:
    finish = spec.resolved_finish_reason
    payload = _envelope(spec, gen_id, created, model, "text_completion")
    payload["choices"] = [
        {
            "text": spec.content or "",
            "index": 0,
            "finish_reason": finish,
            "native_finish_reason": spec.native_finish_reason or finish,
            "logprobs": None,
            "reasoning": spec.reasoning,
        }
    ]
    payload["system_fingerprint"] = spec.system_fingerprint
    payload["usage"] = spec.usage.to_json()
    payload.update(spec.extra_fields)
    return payload


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _split_content(spec: ResponseSpec) -> list[str]:
    if spec.stream_chunks is not None:
        return list(spec.stream_chunks)
    if not spec.content:
        return []
    return re.findall(r"\s*\S+\s*|\s+", spec.content)


def _stream_chunk(
    spec: ResponseSpec, gen_id: str, created: int, model: str, obj: str, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": gen_id,
        "object": obj,
        "created": created,
        "model": model,
        "provider": spec.provider,
    }
    chunk["choices"] = choices
    chunk.update(spec.extra_fields)
    return chunk


def _chat_stream_events(
    spec: ResponseSpec, gen_id: str, created: int, model: str, tool_ids: tuple[str, ...]
) -> Iterator[bytes]:
    obj = "chat.completion.chunk"

    def delta_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {
            "index": 0,
            "delta": delta,
            "finish_reason": finish,
            "native_finish_reason": finish and (spec.native_finish_reason or finish),
        }
        return _sse(_stream_chunk(spec, gen_id, created, model, obj, [choice]))

    if spec.reasoning is not None:
        yield delta_chunk(
            {
                "content": "",
                "role": "assistant",
                "reasoning": spec.reasoning,
                "reasoning_details": [
                    {"type": "reasoning.text", "text": spec.reasoning, "index": 0, "format": "unknown"}
                ],
            }
        )
    for piece in _split_content(spec):
        yield delta_chunk({"content": piece, "role": "assistant"})
    for i, tc in enumerate(spec.tool_calls):
        yield delta_chunk(
            {
                "content": "",
                "role": "assistant",
                "tool_calls": [
                    {
                        "index": i,
                        "id": tool_ids[i],
                        "type": "function",
                        "function": {"name": tc.name, "arguments": ""},
                    }
                ],
            }
        )
        yield delta_chunk(
            {
                "content": "",
                "role": "assistant",
                "tool_calls": [{"index": i, "function": {"arguments": tc.arguments_json()}}],
            }
        )
    finish = spec.resolved_finish_reason
    if spec.stream_error is not None:
        error_chunk = _stream_chunk(
            spec,
            gen_id,
            created,
            model,
            obj,
            [
                {
                    "index": 0,
                    "delta": {"content": "", "role": "assistant"},
                    "finish_reason": "error",
                    "native_finish_reason": None,
                }
            ],
        )
        error_chunk["error"] = spec.stream_error
        yield _sse(error_chunk)
        return
    yield delta_chunk({"content": "", "role": "assistant"}, finish)
    if spec.include_usage:
        yield _sse(_usage_chunk(spec, gen_id, created, model, obj, {"content": "", "role": "assistant"}))
    yield b"data: [DONE]\n\n"


def _usage_chunk(
    spec: ResponseSpec, gen_id: str, created: int, model: str, obj: str, empty_delta: dict[str, Any]
) -> dict[str, Any]:
    choices: list[dict[str, Any]] = []
    if spec.usage_chunk_style == "with_choice":
        finish = spec.resolved_finish_reason
        choice: dict[str, Any] = {"index": 0}
        if obj == "chat.completion.chunk":
            choice["delta"] = empty_delta
        else:
            choice["text"] = ""
        choice["finish_reason"] = finish
        choice["native_finish_reason"] = spec.native_finish_reason or finish
        choices.append(choice)
    chunk: dict[str, Any] = {
        "id": gen_id,
        "object": obj,
        "created": created,
        "model": model,
        "provider": spec.provider,
        "service_tier": spec.service_tier,
        "choices": choices,
        "usage": spec.usage.to_json(),
    }
    chunk.update(spec.extra_fields)
    return chunk


def _text_stream_events(
    spec: ResponseSpec, gen_id: str, created: int, model: str, tool_ids: tuple[str, ...]
) -> Iterator[bytes]:
    obj = "text_completion"

    def text_chunk(text: str, finish: str | None = None) -> bytes:
        choice = {
            "text": text,
            "index": 0,
            "finish_reason": finish,
            "native_finish_reason": finish and (spec.native_finish_reason or finish),
            "logprobs": None,
        }
        return _sse(_stream_chunk(spec, gen_id, created, model, obj, [choice]))

    for piece in _split_content(spec):
        yield text_chunk(piece)
    yield text_chunk("", spec.resolved_finish_reason)
    if spec.include_usage:
        yield _sse(_usage_chunk(spec, gen_id, created, model, obj, {}))
    yield b"data: [DONE]\n\n"


def _responses_payload(spec: ResponseSpec, gen_id: str, created: int, model: str) -> dict[str, Any]:
    """A Responses API ``response`` object as OpenRouter sends it (``POST /api/v1/responses``)."""
    output: list[dict[str, Any]] = []
    if spec.reasoning is not None:
        output.append(
            {
                "type": "reasoning",
                "id": "rs_" + gen_id.rsplit("-", 1)[-1],
                "summary": [{"type": "summary_text", "text": spec.reasoning}],
            }
        )
    output.append(
        {
            "type": "message",
            "id": "msg_" + gen_id.rsplit("-", 1)[-1],
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": spec.content or "", "annotations": [], "logprobs": []}
            ],
        }
    )
    payload: dict[str, Any] = {
        "id": gen_id,
        "object": "response",
        "created_at": created,
        "model": model,
        "status": "completed",
        "output": output,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": None,
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "max_output_tokens": None,
        "service_tier": spec.service_tier or "auto",
        "usage": spec.usage.to_responses_json() if spec.include_usage else None,
    }
    payload.update(spec.extra_fields)
    return payload


def _responses_events(response: dict[str, Any]) -> Iterator[bytes]:
    """The Responses API's SSE events for ``response``: created, in progress, the text as deltas, done,
    then ``response.completed`` carrying the whole response with its usage."""
    sequence = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": next(sequence), **fields}
        return f"event: {kind}\n".encode() + _sse(payload)

    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    for index, item in enumerate(response["output"]):
        if item["type"] != "message":
            yield event("response.output_item.added", output_index=index, item=item)
            yield event("response.output_item.done", output_index=index, item=item)
            continue
        text = item["content"][0]["text"]
        yield event(
            "response.output_item.added",
            output_index=index,
            item={**item, "status": "in_progress", "content": []},
        )
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event(
            "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
        )
        for piece in re.findall(r"\s*\S+\s*|\s+", text):
            yield event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        yield event(
            "response.output_text.done",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            text=text,
            logprobs=[],
        )
        yield event(
            "response.content_part.done",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            part={**part, "text": text},
        )
        yield event("response.output_item.done", output_index=index, item=item)
    yield event("response.completed", response=response)
