"""OpenRouter usage, read from every shape it arrives in, into one typed, validated `OpenRouterUsage`.

Semantics (OpenRouter's, see the README): `prompt_tokens` includes cache reads and cache writes,
`completion_tokens` includes reasoning, `cost` is what OpenRouter charged (for BYOK only its fee;
the provider's charge is `upstream_inference_cost`). The Responses API (`input_tokens`,
`output_tokens`, `input_tokens_details`, ...) has the same semantics under other names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from ._log import Problems

__all__ = ["OpenRouterUsage", "usage_from_llm_raw"]

# Larger values are not counts or charges a real call can have: they are corrupt input.
#: The largest token count taken as real (larger ones are dropped as corrupt).
MAX_TOKENS = 10**12
_MAX_USD = Decimal(1_000_000)
_MAX_USD_FLOAT = 1_000_000.0

_NOT_A_NUMBER = "not a non-negative number, dropped"
_NOT_A_FLAG = "not true or false, dropped"
_NEGATIVE = "negative, dropped"
_TOO_LARGE = "implausibly large, dropped"
_CONTRADICTION = "contradictory counts, clamped"


def _get(obj: Any, key: str) -> Any:
    """`obj[key]` for a mapping; the attribute, or the pydantic extra field, for an SDK object."""
    if obj is None:
        return None
    if type(obj) is dict or isinstance(obj, Mapping):  # a plain dict skips the ABC check (hot path)
        return obj.get(key)
    fields = getattr(obj, "__dict__", None)  # a pydantic model's fields and extras, read without raising
    if type(fields) is dict and key in fields:
        return fields[key]
    extra = getattr(obj, "__pydantic_extra__", None)
    if type(extra) is dict and key in extra:
        return extra[key]
    if type(fields) is dict and _is_pydantic(type(obj)):
        return None  # a pydantic model has nothing more to give: skip the raising getattr
    try:
        value = getattr(obj, key, None)
        if value is None:
            extra = getattr(obj, "model_extra", None)
            if isinstance(extra, Mapping):
                value = extra.get(key)
    except Exception:  # a hostile __getattr__ is still just bad input
        return None
    return value


_pydantic_types: dict[type, bool] = {}


def _is_pydantic(cls: type) -> bool:
    known = _pydantic_types.get(cls)
    if known is None:
        known = _pydantic_types[cls] = hasattr(cls, "__pydantic_fields__")
    return known


def _is_object(obj: Any) -> bool:
    if type(obj) is dict:
        return True
    return isinstance(obj, Mapping) or hasattr(obj, "model_extra") or hasattr(obj, "__dict__")


_NOTHING: dict[str, Any] = {}  # read-only: what a missing object reads as


def _fields(obj: Any) -> dict[str, Any] | None:
    """All of `obj`'s keys at once, when it is a plain dict or a pydantic model (declared fields, then
    extras), `{}` for None; None for anything else, which is read key by key (`_getter`)."""
    kind = type(obj)
    if kind is dict:
        return obj
    if obj is None:
        return _NOTHING
    if _pydantic_types.get(kind):  # a pydantic model class seen before
        fields, extra = obj.__dict__, obj.__pydantic_extra__
        return extra | fields if type(extra) is dict and extra else fields
    fields = getattr(obj, "__dict__", None)
    if type(fields) is dict and _is_pydantic(kind):
        extra = getattr(obj, "__pydantic_extra__", None)
        return extra | fields if type(extra) is dict and extra else fields
    return None


def _getter(obj: Any) -> Callable[[str], Any]:
    """`_get` bound to `obj`, specialised once per object: the `get` of all its keys at once where
    `_fields` has them (dicts, pydantic models, None), else key by key."""
    fields = _fields(obj)
    if fields is not None:
        return fields.get
    return lambda key: _get(obj, key)


def _n(value: Any, name: str, problems: Problems) -> int:
    """A count, 0 when absent or unusable (noted in `problems`)."""
    return _count(value, name, problems) or 0


def _count(value: Any, name: str, problems: Problems) -> int | None:
    """A token or request count: a non-negative integral number, else None (and a problem noted)."""
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the usual case, decided at once
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        problems.add(_NOT_A_NUMBER, f"{name}={value!r:.40}")
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            problems.add(_NOT_A_NUMBER, f"{name}={value!r}")
            return None
        value = int(value)
    elif isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            problems.add(_NOT_A_NUMBER, f"{name}={value!r}")
            return None
        value = int(value)
    if value < 0:
        problems.add(_NEGATIVE, f"{name}={value}")
        return None
    if value > MAX_TOKENS:
        problems.add(_TOO_LARGE, f"{name}={value:.3g}")
        return None
    return value


def _money(value: Any, name: str, problems: Problems) -> Decimal | None:
    """A USD amount as an exact `Decimal` (floats through their shortest repr), else None."""
    if value is None:
        return None
    if type(value) is float and 0 < value <= _MAX_USD_FLOAT:  # the usual case: OpenRouter's JSON number
        return Decimal(repr(value))
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        problems.add(_NOT_A_NUMBER, f"{name}={value!r:.40}")
        return None
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        problems.add(_NOT_A_NUMBER, f"{name}={value!r:.40}")
        return None
    if not amount.is_finite():
        problems.add(_NOT_A_NUMBER, f"{name}={value!r}")
        return None
    if amount < 0:
        problems.add(_NEGATIVE, f"{name}={value}")
        return None
    if amount > _MAX_USD:
        problems.add(_TOO_LARGE, f"{name}={value}")
        return None
    return amount + 0  # normalises -0


def _flag(value: Any, name: str, problems: Problems) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    problems.add(_NOT_A_FLAG, f"{name}={value!r:.40}")
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(slots=True)
class OpenRouterUsage:
    """What one OpenRouter call used and cost, with OpenRouter's inclusive semantics.

    Token counts are non-negative ints; `cached_tokens <= prompt_tokens`, `cache_write_tokens <=
    prompt_tokens` and `reasoning_tokens <= completion_tokens` always hold. Reads and writes that add
    up to more than the prompt overlap (Gemini reports a cache it creates as read too): see
    `uncached_prompt_tokens`. `cache_reported` is False when the response did not say how the prompt
    split over the cache (LangChain's completion models keep only the three totals): then the
    cache counts are zeros that mean "unknown". Money is `Decimal` USD, `None` when unreported;
    `server_tool_cost` is what server-side tools (web search, ...) cost, when OpenRouter said so.
    A value: treat it as read-only (it is not frozen only because that makes it 5x slower to build,
    once per LLM call); `dataclasses.replace` gives a changed copy.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    prompt_audio_tokens: int = 0
    prompt_video_tokens: int = 0
    completion_audio_tokens: int = 0
    completion_image_tokens: int = 0
    web_search_requests: int = 0
    cost: Decimal | None = None
    upstream_inference_cost: Decimal | None = None
    upstream_inference_prompt_cost: Decimal | None = None
    upstream_inference_completions_cost: Decimal | None = None
    is_byok: bool | None = None
    generation_id: str | None = None
    provider: str | None = None
    model: str | None = None
    server_tool_cost: Decimal | None = None
    cache_reported: bool = True

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens neither read from nor written to the cache.

        `prompt - cached - writes`; when reads and writes overlap (their sum exceeds the prompt, as
        Gemini reports the cache a call creates), the smaller count lies inside the larger one and
        `prompt - max(cached, writes)` is uncached: that is what OpenRouter bills.
        """
        uncached = self.prompt_tokens - self.cached_tokens - self.cache_write_tokens
        if uncached >= 0:
            return uncached
        return self.prompt_tokens - max(self.cached_tokens, self.cache_write_tokens)

    @property
    def cache_overlap_tokens(self) -> int:
        """Prompt tokens counted both as read from and as written to the cache (0 but for overlaps)."""
        if self.cached_tokens + self.cache_write_tokens <= self.prompt_tokens:
            return 0
        return min(self.cached_tokens, self.cache_write_tokens)

    @property
    def is_empty(self) -> bool:
        """True when nothing was reported: no tokens and no cost."""
        return not (self.prompt_tokens or self.completion_tokens or self.cost is not None)

    # ------------------------------------------------------------------ readers

    @classmethod
    def from_openrouter(cls, obj: Any) -> OpenRouterUsage:
        """Read OpenRouter's `usage`, a whole response or stream chunk, or a `/generation` record.

        Accepts dicts and openai-SDK objects (OpenRouter's extra fields live in `model_extra`).
        Never raises: malformed values are dropped with one warning per kind of problem.
        """
        try:
            usage = cls._read_usual_openrouter(obj)
        except Exception:
            usage = None
        if usage is not None:
            return usage
        problems = Problems("OpenRouter usage")
        try:
            usage = cls._read_openrouter(obj, problems)
        except Exception as exc:  # defensive: input we did not foresee is still only bad input
            problems.add("unreadable, ignored", f"{type(exc).__name__}")
            usage = cls()
        usage = usage._checked(problems)
        problems.report()
        return usage

    @classmethod
    def from_langchain(
        cls, usage_metadata: Any = None, response_metadata: Any = None, *, model: str | None = None
    ) -> OpenRouterUsage:
        """Read LangChain's `UsageMetadata` together with `response_metadata` or `llm_output`.

        OpenRouter's raw usage (ChatOpenAI's `token_usage`) wins where present; `usage_metadata`
        (`input_token_details.cache_read/.cache_creation`, `output_token_details.reasoning`) fills
        the rest, and ChatOpenRouter's `cost`/`cost_details`/`id` are taken from the metadata.
        """
        try:
            usage = cls._read_usual_langchain(usage_metadata, response_metadata, model)
        except Exception:
            usage = None
        if usage is not None:
            return usage
        problems = Problems("LangChain usage")
        try:
            usage = cls._read_langchain(usage_metadata, response_metadata, model, problems)
        except Exception as exc:
            problems.add("unreadable, ignored", f"{type(exc).__name__}")
            usage = cls()
        usage = usage._checked(problems)
        problems.report()
        return usage

    # ------------------------------------------------------------------ internals

    # The usual shapes (plain dicts or pydantic models, every value valid) are read at once by the
    # `_read_usual_*` readers, which give None for anything else: the careful readers below then read
    # it key by key and say what was wrong. Both give the same result where the usual ones answer.

    @classmethod
    def _read_usual_openrouter(cls, obj: Any) -> OpenRouterUsage | None:
        response = _fields(obj)
        if not response:
            return None
        get = response.get
        if (
            get("total_cost") is not None
            or get("native_tokens_prompt") is not None
            or get("data") is not None
        ):
            return None  # a /generation record, or wrapped in "data"
        if type(get("type")) is str and get("response") is not None:
            response = _fields(get("response"))  # a Responses API stream event: its response
            if not response:
                return None
            get = response.get
        usage = get("usage")
        if usage is None:
            if get("choices") is not None or get("output") is not None:
                return None
            return cls._read_usual_usage(response, None, None, None)
        generation_id, provider, model = get("id"), get("provider"), get("model")
        return cls._read_usual_usage(
            usage,
            generation_id if isinstance(generation_id, str) and generation_id else None,
            provider if isinstance(provider, str) and provider else None,
            model if isinstance(model, str) and model else None,
        )

    @classmethod
    def _read_usual_langchain(
        cls, usage_metadata: Any, metadata: Any, model: str | None
    ) -> OpenRouterUsage | None:
        fields = metadata if type(metadata) is dict else _fields(metadata)
        if not fields or (
            usage_metadata is not None and type(usage_metadata) is not dict and not _is_object(usage_metadata)
        ):
            return None
        get = fields.get
        generation_id, provider, model_name = get("id"), get("provider"), get("model_name")
        generation_id = generation_id if isinstance(generation_id, str) and generation_id else None
        provider = provider if isinstance(provider, str) and provider else None
        model = model_name if isinstance(model_name, str) and model_name else _text(get("model")) or model
        raw = get("token_usage")  # ChatOpenAI and OpenAI (completions): OpenRouter's usage dict, verbatim
        if raw is not None:
            raw = raw if type(raw) is dict else _fields(raw)
            if not raw or raw.get("prompt_tokens") is None:
                return None
            return cls._read_usual_usage(raw, generation_id, provider, model)
        # ChatOpenRouter, ChatOpenAI's Responses API: LangChain's usage metadata, any cost beside it
        if type(usage_metadata) is not dict:
            return None
        inputs = usage_metadata.get("input_token_details")
        outputs = usage_metadata.get("output_token_details") or _NOTHING
        costs = get("cost_details")
        if costs is None:
            costs = _NOTHING
        elif type(costs) is not dict:
            costs = _fields(costs)
        if inputs is None:
            inputs = _NOTHING
        if type(inputs) is not dict or type(outputs) is not dict or costs is None:
            return None
        return cls._usual(
            (
                usage_metadata.get("input_tokens"),
                usage_metadata.get("output_tokens"),
                usage_metadata.get("total_tokens"),
                inputs.get("cache_read"),
                inputs.get("cache_creation"),
                outputs.get("reasoning"),
                inputs.get("audio"),
                None,
                outputs.get("audio"),
                None,
                None,
            ),
            get("cost"),
            costs,
            get("is_byok"),
            generation_id,
            provider,
            model,
            _cache_said(inputs, "cache_read", "cache_creation"),
        )

    @classmethod
    def _read_usual_usage(
        cls, usage: Any, generation_id: str | None, provider: str | None, model: str | None
    ) -> OpenRouterUsage | None:
        fields = usage if type(usage) is dict else _fields(usage)
        if fields is None:
            return None
        get = fields.get
        chat = _is_chat_usage(get)
        names = _CHAT_NAMES if chat else _RESPONSES_NAMES
        # the nested objects: dicts read as they are, SDK objects through `_fields`, absent ones as {}
        prompt, completion = get(names[2]), get(names[3])
        costs, tools = get("cost_details"), get("server_tool_use_details")
        if type(prompt) is not dict:
            prompt = _fields(prompt)
        if type(completion) is not dict:
            completion = _fields(completion)
        if type(costs) is not dict:
            costs = _fields(costs)
        if tools is None:
            tools = _NOTHING
        elif type(tools) is not dict:
            tools = _fields(tools)
        if prompt is None or completion is None or costs is None or tools is None:
            return None
        if not chat:
            costs = _as_chat_costs(costs)
        return cls._usual(
            (
                get(names[0]),
                get(names[1]),
                get("total_tokens"),
                prompt.get("cached_tokens"),
                prompt.get("cache_write_tokens"),
                completion.get("reasoning_tokens"),
                prompt.get("audio_tokens"),
                prompt.get("video_tokens"),
                completion.get("audio_tokens"),
                completion.get("image_tokens"),
                tools.get("web_search_requests"),
            ),
            get("cost"),
            costs,
            get("is_byok"),
            generation_id,
            provider,
            model,
            _cache_said(prompt, "cached_tokens", "cache_write_tokens"),
        )

    @classmethod
    def _usual(
        cls,
        counts: tuple[Any, ...],
        cost: Any,
        costs: Mapping[str, Any],
        is_byok: Any,
        generation_id: str | None,
        provider: str | None,
        model: str | None,
        cache_reported: bool = True,
    ) -> OpenRouterUsage | None:
        """The usage from its values (counts in field order, prompt ... web searches; OpenRouter's `cost`
        and its `cost_details`), or None unless every value is valid."""
        money = (
            cost,
            costs.get("upstream_inference_cost"),
            costs.get("upstream_inference_prompt_cost"),
            costs.get("upstream_inference_completions_cost"),
            costs.get("server_tool_cost"),
        )
        for value in counts:
            if value is not None and not (type(value) is int and 0 <= value <= MAX_TOKENS):
                return None
        for value in money:
            if value is not None and not (
                (type(value) is float and 0 < value <= _MAX_USD_FLOAT)
                or (type(value) is int and 0 <= value <= _MAX_USD_FLOAT)
            ):
                return None
        if is_byok is not None and type(is_byok) is not bool:
            return None
        (
            prompt_tokens,
            completion_tokens,
            total_tokens,
            cached,
            writes,
            reasoning,
            prompt_audio,
            prompt_video,
            completion_audio,
            completion_image,
            searches,
        ) = counts
        prompt_tokens, completion_tokens = prompt_tokens or 0, completion_tokens or 0
        cached, writes, reasoning = cached or 0, writes or 0, reasoning or 0
        prompt_audio, prompt_video = prompt_audio or 0, prompt_video or 0
        completion_audio, completion_image, searches = (
            completion_audio or 0,
            completion_image or 0,
            searches or 0,
        )
        if not (
            cached <= prompt_tokens
            and writes <= prompt_tokens
            and prompt_audio <= prompt_tokens
            and prompt_video <= prompt_tokens
            and reasoning <= completion_tokens
            and completion_audio <= completion_tokens
            and completion_image <= completion_tokens
        ):
            return None  # contradictory: clamped, with a warning, by the careful reader
        upstream, upstream_prompt, upstream_completions, tools_cost = money[1:]
        reported = None if cost is None else Decimal(repr(cost))
        if type(upstream) is type(cost) and upstream == cost:
            upstream = cost  # without BYOK OpenRouter's charge is the provider's: one Decimal for both
        upstream_amount = (
            reported if upstream is cost else None if upstream is None else Decimal(repr(upstream))
        )
        return cls(
            prompt_tokens,
            completion_tokens,
            total_tokens,
            cached,
            writes,
            reasoning,
            prompt_audio,
            prompt_video,
            completion_audio,
            completion_image,
            searches,
            reported,
            upstream_amount,
            None if upstream_prompt is None else Decimal(repr(upstream_prompt)),
            None if upstream_completions is None else Decimal(repr(upstream_completions)),
            is_byok if is_byok is not None else _byok_from_costs(reported, upstream_amount),
            generation_id,
            provider,
            model,
            None if tools_cost is None else Decimal(repr(tools_cost)),
            cache_reported,
        )

    @classmethod
    def _read_openrouter(cls, obj: Any, problems: Problems) -> OpenRouterUsage:
        if obj is None:
            return cls()
        if not _is_object(obj):
            problems.add("not an object, ignored", f"{type(obj).__name__}")
            return cls()
        get = _getter(obj)
        data = get("data")
        if data is not None and _is_object(data) and _get(data, "total_cost") is not None:
            obj, get = data, _getter(data)  # {"data": {...}} as /generation answers
        if get("total_cost") is not None or get("native_tokens_prompt") is not None:
            return cls._read_generation_record(obj, problems)
        inner = get("response")
        if isinstance(get("type"), str) and inner is not None:  # a Responses API stream event
            if not _is_object(inner):
                problems.add("not an object, ignored", f"response {type(inner).__name__}")
                return cls()
            obj, get = inner, _getter(inner)
        usage = get("usage")
        if usage is not None and _is_object(usage):
            return cls._read_usage(
                usage, problems, _text(get("id")), _text(get("provider")), _text(get("model"))
            )
        if usage is not None or get("choices") is not None or get("output") is not None:
            return cls(  # a response or chunk without (valid) usage: keep who served it
                generation_id=_text(get("id")),
                provider=_text(get("provider")),
                model=_text(get("model")),
            )
        return cls._read_usage(obj, problems)

    @classmethod
    def _read_usage(
        cls,
        usage: Any,
        problems: Problems,
        generation_id: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> OpenRouterUsage:
        get = _getter(usage)
        chat = _is_chat_usage(get)
        names = _CHAT_NAMES if chat else _RESPONSES_NAMES
        prompt = _getter(get(names[2]))
        completion = _getter(get(names[3]))
        cost_details = get("cost_details")
        tools = get("server_tool_use_details")
        upstream = upstream_prompt = upstream_completions = tools_cost = None
        if cost_details is not None:
            costs = _getter(cost_details)
            prompt_key, completions_key = _CHAT_COST_NAMES if chat else _RESPONSES_COST_NAMES
            upstream = _money(costs("upstream_inference_cost"), "upstream_inference_cost", problems)
            upstream_prompt = _money(costs(prompt_key), prompt_key, problems)
            upstream_completions = _money(costs(completions_key), completions_key, problems)
            tools_cost = _money(costs("server_tool_cost"), "server_tool_cost", problems)
        cost = _money(get("cost"), "cost", problems)
        is_byok = _flag(get("is_byok"), "is_byok", problems)
        cached, writes = prompt("cached_tokens"), prompt("cache_write_tokens")
        return cls(
            _n(get(names[0]), names[0], problems),
            _n(get(names[1]), names[1], problems),
            _count(get("total_tokens"), "total_tokens", problems),
            _n(cached, "cached_tokens", problems),
            _n(writes, "cache_write_tokens", problems),
            _n(completion("reasoning_tokens"), "reasoning_tokens", problems),
            _n(prompt("audio_tokens"), "prompt audio_tokens", problems),
            _n(prompt("video_tokens"), "video_tokens", problems),
            _n(completion("audio_tokens"), "completion audio_tokens", problems),
            _n(completion("image_tokens"), "image_tokens", problems),
            0 if tools is None else _n(_get(tools, "web_search_requests"), "web_search_requests", problems),
            cost,
            upstream,
            upstream_prompt,
            upstream_completions,
            is_byok if is_byok is not None else _byok_from_costs(cost, upstream),
            generation_id,
            provider,
            model,
            tools_cost,
            cached is not None or writes is not None,
        )

    @classmethod
    def _read_generation_record(cls, record: Any, problems: Problems) -> OpenRouterUsage:
        def count(*keys: str) -> int:
            for key in keys:  # native counts are what the provider billed; normalised ones a fallback
                value = _count(_get(record, key), key, problems)
                if value is not None:
                    return value
            return 0

        return cls(
            prompt_tokens=count("native_tokens_prompt", "tokens_prompt"),
            completion_tokens=count("native_tokens_completion", "tokens_completion"),
            cached_tokens=count("native_tokens_cached"),
            reasoning_tokens=count("native_tokens_reasoning"),
            completion_image_tokens=count("native_tokens_completion_images"),
            cost=_money(_get(record, "total_cost"), "total_cost", problems),
            upstream_inference_cost=_money(
                _get(record, "upstream_inference_cost"), "upstream_inference_cost", problems
            ),
            is_byok=_flag(_get(record, "is_byok"), "is_byok", problems),
            generation_id=_text(_get(record, "id")),
            provider=_text(_get(record, "provider_name")),
            model=_text(_get(record, "model")),
        )

    @classmethod
    def _read_langchain(
        cls, usage_metadata: Any, metadata: Any, model: str | None, problems: Problems
    ) -> OpenRouterUsage:
        if metadata is not None and not _is_object(metadata):
            problems.add("not an object, ignored", f"metadata {type(metadata).__name__}")
            metadata = None
        if usage_metadata is not None and not _is_object(usage_metadata):
            problems.add("not an object, ignored", f"usage_metadata {type(usage_metadata).__name__}")
            usage_metadata = None

        get = _getter(metadata)
        generation_id = _text(get("id"))
        provider = _text(get("provider"))
        model = _text(get("model_name")) or _text(get("model")) or model
        raw = get("token_usage")  # ChatOpenAI and OpenAI (completions): OpenRouter's usage dict, verbatim
        if raw is not None and _is_object(raw) and _get(raw, "prompt_tokens") is not None:
            return cls._read_usage(raw, problems, generation_id, provider, model)
        usage = cls._read_usage_metadata(usage_metadata, problems)
        cost, cost_details, is_byok = get("cost"), get("cost_details"), get("is_byok")
        if cost is None and cost_details is None and is_byok is None:
            return replace(usage, generation_id=generation_id, provider=provider, model=model)
        # ChatOpenRouter puts OpenRouter's cost and its details beside the usage metadata.
        costs = cls._read_usage({"cost": cost, "cost_details": cost_details, "is_byok": is_byok}, problems)
        return replace(
            usage,
            cost=costs.cost,
            upstream_inference_cost=costs.upstream_inference_cost,
            upstream_inference_prompt_cost=costs.upstream_inference_prompt_cost,
            upstream_inference_completions_cost=costs.upstream_inference_completions_cost,
            is_byok=costs.is_byok if costs.is_byok is not None else usage.is_byok,
            generation_id=generation_id,
            provider=provider,
            model=model,
            server_tool_cost=costs.server_tool_cost,
        )

    @classmethod
    def _read_usage_metadata(cls, usage_metadata: Any, problems: Problems) -> OpenRouterUsage:
        if usage_metadata is None:
            return cls()
        get = _getter(usage_metadata)
        inputs = _getter(get("input_token_details"))
        outputs = _getter(get("output_token_details"))
        cached, writes = inputs("cache_read"), inputs("cache_creation")
        return cls(
            prompt_tokens=_n(get("input_tokens"), "input_tokens", problems),
            completion_tokens=_n(get("output_tokens"), "output_tokens", problems),
            total_tokens=_count(get("total_tokens"), "total_tokens", problems),
            cached_tokens=_n(cached, "cache_read", problems),
            cache_write_tokens=_n(writes, "cache_creation", problems),
            prompt_audio_tokens=_n(inputs("audio"), "input audio", problems),
            reasoning_tokens=_n(outputs("reasoning"), "reasoning", problems),
            completion_audio_tokens=_n(outputs("audio"), "output audio", problems),
            cache_reported=cached is not None or writes is not None,
        )

    def _checked(self, problems: Problems) -> OpenRouterUsage:
        """Clamp contradictory counts so the inclusive invariants hold, noting each clamp."""
        prompt, completion = self.prompt_tokens, self.completion_tokens
        if (
            self.cached_tokens <= prompt
            and self.cache_write_tokens <= prompt
            and self.prompt_audio_tokens <= prompt
            and self.prompt_video_tokens <= prompt
            and self.reasoning_tokens <= completion
            and self.completion_audio_tokens <= completion
            and self.completion_image_tokens <= completion
        ):
            return self  # the usual case (reads and writes may overlap: see `uncached_prompt_tokens`)
        changes: dict[str, int] = {}
        for part in ("cached_tokens", "cache_write_tokens", "prompt_audio_tokens", "prompt_video_tokens"):
            if getattr(self, part) > prompt:
                problems.add(_CONTRADICTION, f"{part} {getattr(self, part)} > prompt_tokens {prompt}")
                changes[part] = prompt
        for part in ("reasoning_tokens", "completion_audio_tokens", "completion_image_tokens"):
            if getattr(self, part) > completion:
                problems.add(_CONTRADICTION, f"{part} {getattr(self, part)} > completion_tokens {completion}")
                changes[part] = completion
        return replace(self, **changes) if changes else self


# Key names of the chat completions usage and of the Responses API usage: prompt and completion
# counts, the two detail objects; then the upstream prompt and completion cost names in `cost_details`.
_CHAT_NAMES = ("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details")
_RESPONSES_NAMES = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")
_CHAT_COST_NAMES = ("upstream_inference_prompt_cost", "upstream_inference_completions_cost")
_RESPONSES_COST_NAMES = ("upstream_inference_input_cost", "upstream_inference_output_cost")


def _is_chat_usage(get: Callable[[str], Any]) -> bool:
    """Whether a usage object has the chat completions' names; else the Responses API's, which has
    `input_tokens` with `input_tokens_details` (Anthropic's own `input_tokens`, without the cache and
    without those details, is not OpenRouter's and reads as empty here)."""
    return (
        get("prompt_tokens") is not None or get("input_tokens") is None or get("input_tokens_details") is None
    )


def _as_chat_costs(costs: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses API `cost_details` under the chat completions' names."""
    return {
        "upstream_inference_cost": costs.get("upstream_inference_cost"),
        "upstream_inference_prompt_cost": costs.get("upstream_inference_input_cost"),
        "upstream_inference_completions_cost": costs.get("upstream_inference_output_cost"),
        "server_tool_cost": costs.get("server_tool_cost"),
    }


def _cache_said(details: Mapping[str, Any], read_key: str, write_key: str) -> bool:
    """Whether a prompt's details say how it split over the cache (a count of reads or writes)."""
    return details.get(read_key) is not None or details.get(write_key) is not None


#: A BYOK call's `cost` is OpenRouter's fee: 0, or 5% of what the provider charged your key. Without
#: the flag (langchain-openrouter drops it) a cost at most this share of the upstream cost is BYOK.
#: Endpoint discounts seen on non-BYOK calls leave far more (0.65 x upstream).
BYOK_FEE_SHARE = Decimal("0.0505")


def _byok_from_costs(cost: Decimal | None, upstream: Decimal | None) -> bool | None:
    """BYOK as the costs tell it when the flag is absent: None when they cannot tell."""
    if cost is None or not upstream:
        return None
    return cost <= upstream * BYOK_FEE_SHARE


# ---------------------------------------------------------------------------- other providers' raw responses


def usage_from_llm_raw(raw: Any) -> OpenRouterUsage:
    """Token counts from a LlamaIndex LLM's raw response in another provider's shape, as OpenRouterUsage.

    The shapes LlamaIndex's own token counter reads besides OpenAI's (which `from_openrouter` reads):
    Anthropic's `usage` (`input_tokens` without the cache, `cache_read_input_tokens`,
    `cache_creation_input_tokens`, `output_tokens`) and Gemini's `usage_metadata`
    (`prompt_token_count` with the cache, `cached_content_token_count`, `candidates_token_count`,
    `thoughts_token_count`). No cost: these are not OpenRouter's. Empty when neither is there.
    """
    problems = Problems("LLM usage")
    try:
        usage = _read_provider_usage(raw, problems)
    except Exception as exc:  # defensive: input we did not foresee is still only bad input
        problems.add("unreadable, ignored", f"{type(exc).__name__}")
        usage = OpenRouterUsage()
    usage = usage._checked(problems)
    problems.report()
    return usage


def _read_provider_usage(raw: Any, problems: Problems) -> OpenRouterUsage:
    if raw is None or not _is_object(raw):
        return OpenRouterUsage()
    get = _getter(raw)
    model = _text(get("model")) or _text(get("model_version"))
    anthropic = get("usage")
    if anthropic is not None and _is_object(anthropic) and _get(anthropic, "input_tokens") is not None:
        usage = _getter(anthropic)
        uncached = _n(usage("input_tokens"), "input_tokens", problems)
        reads = _n(usage("cache_read_input_tokens"), "cache_read_input_tokens", problems)
        writes = _n(usage("cache_creation_input_tokens"), "cache_creation_input_tokens", problems)
        return OpenRouterUsage(
            prompt_tokens=uncached + reads + writes,
            completion_tokens=_n(usage("output_tokens"), "output_tokens", problems),
            cached_tokens=reads,
            cache_write_tokens=writes,
            generation_id=_text(get("id")),
            model=model,
        )
    gemini = get("usage_metadata")
    if gemini is not None and _is_object(gemini):
        usage = _getter(gemini)
        thoughts = _n(usage("thoughts_token_count"), "thoughts_token_count", problems)
        return OpenRouterUsage(
            prompt_tokens=_n(usage("prompt_token_count"), "prompt_token_count", problems),
            completion_tokens=_n(usage("candidates_token_count"), "candidates_token_count", problems)
            + thoughts,
            total_tokens=_count(usage("total_token_count"), "total_token_count", problems),
            cached_tokens=_n(usage("cached_content_token_count"), "cached_content_token_count", problems),
            reasoning_tokens=thoughts,
            model=model,
        )
    return OpenRouterUsage()
