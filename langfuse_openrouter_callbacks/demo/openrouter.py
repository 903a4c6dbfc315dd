"""An embedded OpenRouter for the demo: OpenRouter's wire format, prompt caching, exact billing.

Serves `POST /api/v1/chat/completions` (JSON, or SSE with `: OPENROUTER PROCESSING` comments and a final
usage chunk), `GET /api/v1/models`, `GET /api/v1/models/{id}/endpoints` and `GET /api/v1/generation`.
Responses have the shape of real OpenRouter responses. Usage follows the providers' caching rules:
Anthropic-style models cache the prompt up to the last `cache_control` breakpoint (the first call
writes the cache, later calls read it) for 5 minutes from its last use, or an hour with `"ttl": "1h"`;
OpenAI-style models cache the longest prefix shared with an earlier request, in 128-token steps from
1,024 tokens. A cache lives on one provider: a request routed elsewhere (`provider.order` names another
provider of the model) reads nothing there. `clock_offset` moves the server's clock (simulated time, for
letting a cache expire without waiting). Costs follow OpenRouter's billing exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..cost import compute_cost
from ..pricing import ModelPricing
from ._http import EmbeddedServer, Handler

API_PREFIX = "/api/v1"
_CACHE_STEP = 128
_REMEMBERED_PROMPTS = 64
_LIFETIMES = {None: 300.0, "5m": 300.0, "1h": 3600.0}  # Anthropic's, from the cache entry's last use


def load_data() -> dict[str, Any]:
    """The demo's models, prices and answers."""
    return json.loads(resources.files(__package__).joinpath("data.json").read_text(encoding="utf-8"))


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return max(1, math.ceil(len(text) / 4))


def _content_parts(content: Any) -> list[tuple[str, Any]]:
    """A message's text parts, each with its `cache_control` breakpoint (None without)."""
    if isinstance(content, str):
        return [(content, None)]
    parts = []
    for part in content or []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append((part["text"], part.get("cache_control")))
    return parts


class EmbeddedOpenRouter(EmbeddedServer):
    """The demo's OpenRouter on 127.0.0.1; `base_url` is its `/api/v1`."""

    def __init__(self) -> None:
        super().__init__()
        self.data = load_data()
        self._lock = threading.Lock()
        self._written: dict[str, float] = {}  # explicit cache entries: when each was last used
        self.clock_offset = 0.0  # seconds the server's clock is ahead of (or, negative, behind) time.time()
        self._prompts: dict[str, list[str]] = {}  # model -> recent prompts, for implicit caching
        self._generations: dict[str, dict[str, Any]] = {}
        self._counter = 0
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return self.root_url + API_PREFIX

    def now(self) -> float:
        """The server's clock (seconds since the epoch): `time.time()` moved by `clock_offset`."""
        return time.time() + self.clock_offset

    # ------------------------------------------------------------------ routing

    def handle(self, request: Handler) -> None:
        url = urlsplit(request.path)
        path = url.path.removeprefix(API_PREFIX)
        if request.command == "POST" and path == "/chat/completions":
            self._chat(request)
        elif request.command == "GET" and path == "/models":
            request.send_json(200, {"data": [self._model_entry(m) for m in self.data["models"]]})
        elif request.command == "GET" and path.startswith("/models/") and path.endswith("/endpoints"):
            self._endpoints(request, unquote(path[len("/models/") : -len("/endpoints")]))
        elif request.command == "GET" and path == "/generation":
            generation_id = (parse_qs(url.query).get("id") or [""])[0]
            record = self._generations.get(generation_id)
            if record is None:
                request.send_json(404, {"error": {"code": 404, "message": "Generation not found"}})
            else:
                request.send_json(200, {"data": record})
        else:
            request.send_json(404, {"error": {"code": 404, "message": f"Not found: {path}"}})

    def _model_entry(self, model_id: str) -> dict[str, Any]:
        model = self.data["models"][model_id]
        return {
            "id": model_id,
            "canonical_slug": model["canonical_slug"],
            "name": model_id,
            "pricing": model["pricing"],
        }

    def _endpoints(self, request: Handler, model_id: str) -> None:
        model = self.data["models"].get(model_id)
        if model is None:
            request.send_json(404, {"error": {"code": 404, "message": "Model not found"}})
            return
        endpoints = [
            {
                "name": f"{provider} | {model['canonical_slug']}",
                "provider_name": provider,
                "tag": tag,
                "pricing": model["pricing"],
                "supports_implicit_caching": model["caching"] == "implicit",
            }
            for provider, tag in _providers(model).items()
        ]
        request.send_json(200, {"data": {"id": model_id, "name": model_id, "endpoints": endpoints}})

    # ------------------------------------------------------------------ completions

    def _chat(self, request: Handler) -> None:
        try:
            body = json.loads(request.body() or b"{}")
        except ValueError:
            request.send_json(400, {"error": {"code": 400, "message": "Invalid JSON"}})
            return
        self.requests.append(body)
        model_id = body.get("model")
        model = self.data["models"].get(model_id)
        if model is None:
            request.send_json(400, {"error": {"code": 400, "message": f"{model_id} is not a valid model ID"}})
            return
        answer = self._answer(body)
        provider = _route(model, body.get("provider"))
        usage = self._usage(model_id, model, provider, body.get("messages") or [], answer)
        with self._lock:
            self._counter += 1
            counter = self._counter
        created = int(self.now())
        generation_id = f"gen-{created}-" + hashlib.sha256(f"{counter}".encode()).hexdigest()[:20]
        common = {
            "id": generation_id,
            "provider": provider,
            "model": model["canonical_slug"],
            "created": created,
        }
        self._generations[generation_id] = self._generation_record(
            common, usage, stream=bool(body.get("stream"))
        )
        if body.get("stream"):
            self._stream(request, common, answer, usage)
        else:
            message = {"role": "assistant", "content": answer, "refusal": None, "reasoning": None}
            choice = {
                "index": 0,
                "message": message,
                "finish_reason": "stop",
                "native_finish_reason": "stop",
                "logprobs": None,
            }
            request.send_json(
                200,
                {
                    **common,
                    "object": "chat.completion",
                    "choices": [choice],
                    "usage": usage,
                    "system_fingerprint": None,
                },
            )

    def _answer(self, body: dict[str, Any]) -> str:
        return answer(body.get("messages") or [], self.data["answers"])

    def _usage(
        self,
        model_id: str,
        model: dict[str, Any],
        provider: str,
        messages: list[dict[str, Any]],
        answer: str,
    ) -> dict:
        prompt_text, breakpoint_at, breakpoint = "", None, None
        for message in messages:
            prompt_text += f"<{message.get('role')}>"
            for text, marker in _content_parts(message.get("content")):
                prompt_text += text
                if marker is not None:
                    breakpoint_at, breakpoint = len(prompt_text), marker
        prompt_tokens = count_tokens(prompt_text) + 3 * len(messages)
        cached = written = 0
        with self._lock:
            if model["caching"] == "explicit" and breakpoint_at is not None:
                prefix = prompt_text[:breakpoint_at]
                tokens = count_tokens(prefix)
                if tokens >= model["min_cache_tokens"]:
                    key = hashlib.sha256((provider + model_id + prefix).encode()).hexdigest()
                    now, last_used = self.now(), self._written.get(key)
                    ttl = breakpoint.get("ttl") if isinstance(breakpoint, dict) else None
                    if last_used is not None and now - last_used <= _LIFETIMES.get(ttl, 300.0):
                        cached = tokens
                    else:
                        written = tokens
                    self._written[key] = now
            elif model["caching"] == "implicit":
                earlier = self._prompts.setdefault(model_id, [])
                shared = max((_common_prefix(prompt_text, p) for p in earlier), default=0)
                tokens = count_tokens(prompt_text[:shared]) if shared else 0
                if tokens >= model["min_cache_tokens"]:
                    cached = tokens // _CACHE_STEP * _CACHE_STEP
                earlier.append(prompt_text)
                del earlier[:-_REMEMBERED_PROMPTS]
        completion_tokens = count_tokens(answer)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {
                "cached_tokens": cached,
                "cache_write_tokens": written,
                "audio_tokens": 0,
                "video_tokens": 0,
            },
            "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0, "audio_tokens": 0},
        }
        pricing = ModelPricing.from_openrouter(model["pricing"])
        breakdown = compute_cost(usage, pricing)
        prompt_part = breakdown.total - breakdown.output - breakdown.output_reasoning
        usage["cost"] = _number(breakdown.total)
        usage["is_byok"] = False
        usage["cost_details"] = {
            "upstream_inference_cost": _number(breakdown.total),
            "upstream_inference_prompt_cost": _number(prompt_part),
            "upstream_inference_completions_cost": _number(breakdown.output + breakdown.output_reasoning),
        }
        return usage

    def _stream(self, request: Handler, common: dict[str, Any], answer: str, usage: dict[str, Any]) -> None:
        request.start_stream()
        for _ in range(2):
            request.write_chunk(b": OPENROUTER PROCESSING\n\n")
        chunk = {**common, "object": "chat.completion.chunk"}
        words = answer.split(" ")
        pieces = [
            " ".join(words[i : i + 4]) + (" " if i + 4 < len(words) else "") for i in range(0, len(words), 4)
        ]
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            choice = {
                "index": 0,
                "delta": delta,
                "finish_reason": None,
                "native_finish_reason": None,
                "logprobs": None,
            }
            request.write_chunk(_sse({**chunk, "choices": [choice]}))
        end = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": "stop",
            "native_finish_reason": "stop",
            "logprobs": None,
        }
        request.write_chunk(_sse({**chunk, "choices": [end]}))
        request.write_chunk(_sse({**chunk, "choices": [end], "usage": usage}))  # as real streams end
        request.write_chunk(b"data: [DONE]\n\n")
        request.end_stream()

    @staticmethod
    def _generation_record(common: dict[str, Any], usage: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        details = usage["prompt_tokens_details"]
        return {
            "id": common["id"],
            "model": common["model"],
            "provider_name": common["provider"],
            "total_cost": usage["cost"],
            "upstream_inference_cost": usage["cost_details"]["upstream_inference_cost"],
            "cache_discount": None,
            "tokens_prompt": usage["prompt_tokens"],
            "tokens_completion": usage["completion_tokens"],
            "native_tokens_prompt": usage["prompt_tokens"],
            "native_tokens_completion": usage["completion_tokens"],
            "native_tokens_cached": details["cached_tokens"],
            "native_tokens_reasoning": 0,
            "is_byok": False,
            "streamed": stream,
            "cancelled": False,
            "latency": 250,
            "generation_time": 400,
            "provider_responses": [{"provider_name": common["provider"], "status": 200}],
        }


def _providers(model: dict[str, Any]) -> dict[str, str]:
    """The providers serving `model`, by name, with their slugs; the default one first."""
    return {model["provider"]: model["provider"].lower(), **model.get("other_providers", {})}


def _route(model: dict[str, Any], preferences: Any) -> str:
    """The provider that serves a request: the first of its `provider.order` (names or slugs) that
    serves the model, else the model's default provider."""
    order = preferences.get("order") if isinstance(preferences, dict) else None
    for wanted in order if isinstance(order, list) else []:
        for name, slug in _providers(model).items():
            if isinstance(wanted, str) and wanted.lower() in (name.lower(), slug):
                return name
    return model["provider"]


_STOP_WORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and are be can could do does for from how i in is it long me my of on or our still the there "
        "this to what when where which who why will with you your",
    )
)


def answer(messages: list[dict[str, Any]], answers: list[str]) -> str:
    """The answer to the question asked: the sentence of the prompt's documents (or of the demo's
    answers) that shares the most distinctive words with the last user message's question (and, less,
    with the user's message before it)."""
    texts = ["".join(t for t, _ in _content_parts(m.get("content"))) for m in messages]
    user = next((i for i in reversed(range(len(messages))) if messages[i].get("role") == "user"), None)
    if user is None:
        return answers[0]
    lines = [line for line in texts[user].splitlines() if line.strip()]
    asked = next((line for line in reversed(lines) if "?" in line), lines[-1] if lines else "")
    question = _stems(asked.removeprefix("Query:"))
    earlier = next((texts[i] for i in reversed(range(user)) if messages[i].get("role") == "user"), "")
    context = _stems(earlier) - question  # a follow-up ("And for invoices?") is read in its context
    documents = [t for t, m in zip(texts, messages, strict=True) if m.get("role") == "system"]
    documents.append(texts[user].replace(asked, ""))  # a RAG prompt's context
    sentences = [
        sentence.strip()
        for text in [*documents, *answers]
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-" * 3))
        for sentence in re.split(r"(?<=[.!?])\s+", line)
        if len(sentence.split()) >= 4
    ]
    stems = [_stems(sentence) for sentence in sentences]
    frequency: dict[str, int] = {}
    for words in stems:
        for word in words:
            frequency[word] = frequency.get(word, 0) + 1
    scores = [
        sum(1 / frequency[w] for w in words & question) + sum(0.5 / frequency[w] for w in words & context)
        for words in stems
    ]
    best = max(range(len(sentences)), key=lambda i: scores[i], default=None)
    if best is None or scores[best] == 0:
        return "I could not find that in the documents I was given."
    return sentences[best]


def _stems(text: str) -> set[str]:
    """The words of `text` that carry meaning, cut to five letters (refunds ~ refund, claims ~ claim)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {w[:5] for w in words if w not in _STOP_WORDS}


def _common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))  # noqa: RUF071 - characters, not paths


def _number(amount: Decimal) -> float:
    """A JSON number as OpenRouter sends it (its shortest decimal form)."""
    return float(amount)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
