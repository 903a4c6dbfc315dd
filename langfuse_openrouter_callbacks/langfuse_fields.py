"""The one place that knows Langfuse's field names: usage, cost and metadata of a generation.

Langfuse prices and displays usage keys by exact name and sums cost buckets when `total` is missing,
so every bucket here is exclusive and `total` is always given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from ._log import Problems
from ._prompt_fingerprint import PromptFingerprint
from .cost import BUCKETS, CostBreakdown
from .usage import MAX_TOKENS, OpenRouterUsage

__all__ = ["METADATA_KEY", "generation_attributes", "otel_attributes", "to_langfuse"]

#: The key under which the generation's metadata carries our OpenRouter fields.
METADATA_KEY = "openrouter"
#: The numeric score (USD) the handlers record per generation when asked, for Langfuse to aggregate.
SAVINGS_SCORE_NAME = "openrouter_cache_savings_usd"
#: `usage_details` keys of the prompt tokens read from / written to the cache, and the key of the
#: whole (`total`) in both `usage_details` and `cost_details`.
CACHE_READ_KEY = "input_cache_read"
CACHE_WRITE_KEY = "input_cache_creation"
TOTAL_KEY = "total"
#: `usage_details` key of prompt tokens counted both as written to and as read from the cache (Gemini
#: reports a cache it creates as read too). They are in `input_cache_creation`; this key, outside the
#: UI's "input" group, says they were also read, so the input group still sums to the prompt.
CACHE_OVERLAP_KEY = "cache_written_and_read"

# Langfuse's OpenTelemetry span attributes (the SDK's `LangfuseOtelSpanAttributes`).
_OBSERVATION = "langfuse.observation"
_OBSERVATION_TYPE = _OBSERVATION + ".type"
_MODEL = _OBSERVATION + ".model.name"
_USAGE_DETAILS = _OBSERVATION + ".usage_details"
_COST_DETAILS = _OBSERVATION + ".cost_details"
_METADATA = _OBSERVATION + ".metadata"
_COMPLETION_START_TIME = _OBSERVATION + ".completion_start_time"
_OPENROUTER_METADATA = f"{_METADATA}.{METADATA_KEY}"
# The trace's user and session ids as Langfuse's `propagate_attributes` writes them: plain strings.
_TRACE_USER_ID = "user.id"
_TRACE_SESSION_ID = "session.id"


def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON of our own values (str, int, float, bool, None, lists, dicts), as fast as it gets.

    Strict JSON: NaN and infinities raise `ValueError` instead of being written. The C encoder the
    standard library uses inside `json.dumps`, made once; the public encoder where that is
    unavailable or behaves differently.
    """
    public = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, check_circular=False, allow_nan=False
    )
    try:
        from json.encoder import c_make_encoder  # type: ignore[attr-defined]

        fast = c_make_encoder(None, public.default, encode_basestring, None, ":", ",", False, False, False)

        def encode(value: Any) -> str:
            return "".join(fast(value, 0))

        sample = {"a": [1, 2.5, None, True], "b": 'é"', "c": {"d": 0.0090024}}
        if encode(sample) == public.encode(sample):
            return encode
    except Exception:  # another Python: its encoder's signature differs
        pass
    return public.encode


_to_json = _json_encoder()


def _dict(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return mapping if type(mapping) is dict else dict(mapping)


def usage_details(usage: OpenRouterUsage) -> dict[str, int]:
    """Exclusive integer token buckets under the keys Langfuse prices and shows.

    The "input" keys sum to the prompt and the "output" keys to the completion; reads that overlap
    writes are in `input_cache_creation` and counted again, outside those groups, under
    `CACHE_OVERLAP_KEY`.
    """
    uncached = usage.uncached_prompt_tokens
    overlap = usage.cache_overlap_tokens
    input_audio = min(usage.prompt_audio_tokens, uncached)
    reasoning = usage.reasoning_tokens
    output_image = usage.completion_image_tokens
    output_audio = usage.completion_audio_tokens
    plain_output = usage.completion_tokens - reasoning - output_image - output_audio
    if plain_output < 0:  # counts that overlap in the source: keep the buckets exclusive
        output_image = output_audio = 0
        plain_output = usage.completion_tokens - reasoning
    details = {"input": uncached - input_audio}
    if input_audio:
        details["input_audio"] = input_audio
    if usage.cached_tokens - overlap:
        details[CACHE_READ_KEY] = usage.cached_tokens - overlap
    if usage.cache_write_tokens:
        details[CACHE_WRITE_KEY] = usage.cache_write_tokens
    if overlap:
        details[CACHE_OVERLAP_KEY] = overlap
    details["output"] = plain_output
    if reasoning:
        details["output_reasoning"] = reasoning
    if output_image:
        details["output_image"] = output_image
    if output_audio:
        details["output_audio"] = output_audio
    details[TOTAL_KEY] = usage.prompt_tokens + usage.completion_tokens
    return details


def cost_details(breakdown: CostBreakdown) -> dict[str, float]:
    """The breakdown's non-zero buckets and `total` as floats; empty when the call is unpriced."""
    if not breakdown.is_priced:
        return {}
    details = {name: float(value) for name in BUCKETS if (value := getattr(breakdown, name))}
    details[TOTAL_KEY] = float(breakdown.total)
    return details


def openrouter_metadata(
    usage: OpenRouterUsage, breakdown: CostBreakdown, prompt: PromptFingerprint | None = None
) -> dict[str, Any]:
    """What OpenRouter said, what caching saved and what the prompt asked, for `metadata["openrouter"]`.

    Only what is known and adds something: no nulls; `is_byok` only when true; the provider's charge
    only when it differs from OpenRouter's; the cache fields only on calls that read or wrote the
    cache; `reconciliation_delta` only when not zero. `prompt` adds `cache_control` (when the request
    carried a breakpoint), `cache_ttl` (seconds, when a breakpoint named its lifetime) and
    `prefix_hashes`.
    """
    meta: dict[str, Any] = {}
    if usage.generation_id is not None:
        meta["generation_id"] = usage.generation_id
    if usage.provider is not None:
        meta["provider"] = usage.provider
    if usage.model is not None:
        meta["model"] = usage.model
    if usage.is_byok:
        meta["is_byok"] = True
    cost, upstream = usage.cost, usage.upstream_inference_cost
    if cost is not None:
        meta["reported_cost"] = float(cost)
    if upstream is not None and upstream != cost:
        meta["upstream_inference_cost"] = float(upstream)
    if usage.cached_tokens or usage.cache_write_tokens:
        savings, no_cache, ratio = (
            breakdown.cache_savings,
            breakdown.no_cache_total,
            breakdown.cache_hit_ratio,
        )
        if savings is not None:
            meta["cache_savings_usd"] = float(savings)
        if no_cache is not None:
            meta["no_cache_cost_usd"] = float(no_cache)
        if ratio is not None:
            meta["cache_hit_ratio"] = ratio
    meta["cost_source"] = breakdown.source
    if breakdown.pricing_source is not None:
        meta["pricing_source"] = breakdown.pricing_source
    if breakdown.reconciliation_delta:
        meta["reconciliation_delta"] = float(breakdown.reconciliation_delta)
    if usage.web_search_requests:
        meta["web_search_requests"] = usage.web_search_requests
    if usage.server_tool_cost is not None:
        meta["server_tool_cost"] = float(usage.server_tool_cost)
    if prompt is not None:
        if prompt.cache_control:
            meta["cache_control"] = True
        if prompt.cache_ttl is not None:
            meta["cache_ttl"] = prompt.cache_ttl
        meta["prefix_hashes"] = list(prompt.prefix_hashes)
    return meta


#: The fields of OpenRouter's `/generation` record that `metadata["openrouter"]` carries, under their names.
GENERATION_RECORD_FIELDS = (
    "total_cost",
    "cache_discount",
    "native_tokens_prompt",
    "native_tokens_completion",
    "native_tokens_cached",
    "native_tokens_reasoning",
    "provider_name",
    "provider_responses",
    "is_byok",
    "generation_time",
    "latency",
)


# What a `/generation` record's fields may hold; anything else is dropped with a warning.
_MAX_USD = 1_000_000  # as for usage: no single call costs more
_MAX_MS = 10**10  # a latency beyond ~4 months is not a latency
_RECORD_MONEY = ("total_cost", "cache_discount")  # cache_discount is signed (cache writes: negative)
_RECORD_MS = ("generation_time", "latency")
_RECORD_COUNTS = (
    "native_tokens_prompt",
    "native_tokens_completion",
    "native_tokens_cached",
    "native_tokens_reasoning",
)
# Any number nested in `provider_responses` (statuses, latencies): finite, and no larger than this.
_MAX_NESTED = 10**15
_MAX_DEPTH = 4


def _finite(value: Any) -> float | int | None:
    """A real number (not a bool) as an int or finite float, else None."""
    if type(value) is int:
        return value
    if isinstance(value, (float, Decimal)) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _record_value(key: str, value: Any, problems: Problems) -> Any:
    """A record field's value if it is what that field holds; None (and a problem noted) if not."""
    if value is None:
        return None
    if key in _RECORD_MONEY or key in _RECORD_MS:
        number = _finite(value)
        limit = _MAX_USD if key in _RECORD_MONEY else _MAX_MS
        signed = key == "cache_discount"
        if number is None or abs(number) > limit or (number < 0 and not signed):
            problems.add("not a plausible number, dropped", f"{key}={value!r:.40}")
            return None
        return number
    if key in _RECORD_COUNTS:
        if type(value) is int and 0 <= value <= MAX_TOKENS:
            return value
        problems.add("not a token count, dropped", f"{key}={value!r:.40}")
        return None
    if key == "is_byok":
        if isinstance(value, bool):
            return value
        problems.add("not true or false, dropped", f"{key}={value!r:.40}")
        return None
    if key == "provider_name":
        if isinstance(value, str):
            return value
        problems.add("not a name, dropped", f"{key}={value!r:.40}")
        return None
    return _json_value(value, key, problems, _MAX_DEPTH)  # provider_responses


def _json_value(value: Any, name: str, problems: Problems, depth: int) -> Any:
    """`value` with only strict-JSON values kept: strings, bools, None, finite bounded numbers."""
    if value is None or isinstance(value, (str, bool)):
        return value
    number = _finite(value)
    if number is not None and abs(number) <= _MAX_NESTED:
        return number
    if depth > 0 and isinstance(value, Mapping):
        return {str(k): _json_value(v, f"{name}.{k}", problems, depth - 1) for k, v in value.items()}
    if depth > 0 and isinstance(value, (list, tuple)):
        return [_json_value(v, f"{name}[{i}]", problems, depth - 1) for i, v in enumerate(value)]
    problems.add("not a plausible value, dropped", f"{name}={value!r:.40}")
    return None


def generation_record_metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata["openrouter"]` additions from a `/generation` record (its `data`): its own fields.

    Absent fields are left out. Every value is checked as usage is: amounts and latencies must be
    finite, in range and of their sign, counts non-negative integers, flags booleans; anything
    else is written as null, with one warning per kind of problem. `Decimal` amounts become floats
    here, at the Langfuse edge.
    """
    problems = Problems("OpenRouter /generation record")
    fields = GENERATION_RECORD_FIELDS
    said = {key: _record_value(key, record[key], problems) for key in fields if key in record}
    if problems:
        problems.report()
    return said


def to_langfuse(
    usage: OpenRouterUsage, breakdown: CostBreakdown, prompt: PromptFingerprint | None = None
) -> tuple[dict[str, int], dict[str, float], dict[str, Any]]:
    """`(usage_details, cost_details, metadata)` for a Langfuse generation.

    `metadata` is `{"openrouter": {...}}` (`openrouter_metadata`): generation id, provider, model,
    reported cost, cache savings, cost and pricing source, reconciliation delta, and, given the
    request's `prompt` fingerprint, its breakpoint flag and prefix hashes.
    """
    return (
        usage_details(usage),
        cost_details(breakdown),
        {METADATA_KEY: openrouter_metadata(usage, breakdown, prompt)},
    )


def otel_attributes(
    usage_details: Mapping[str, int] | None = None,
    cost_details: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    observation_type: str | None = None,
    model: str | None = None,
    completion_start_time: datetime | None = None,
) -> dict[str, str]:
    """The OpenTelemetry span attributes that carry these fields to Langfuse, as its SDK writes them.

    For spans that Langfuse's SDK did not make (OpenInference's): `usage_details` and `cost_details`
    are one JSON string each, metadata one JSON string per top-level key (a None value is not
    written), `observation_type` ("generation", "span", ...) and `model` plain strings,
    `completion_start_time` an ISO 8601 string in JSON (UTC, "Z"; a naive time is local time).
    Arguments left at None give no attribute.
    """
    attributes: dict[str, str] = {}
    if observation_type is not None:
        attributes[_OBSERVATION_TYPE] = observation_type
    if model is not None:
        attributes[_MODEL] = model
    if completion_start_time is not None:
        moment = completion_start_time.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        attributes[_COMPLETION_START_TIME] = _to_json(moment)
    if usage_details is not None:
        attributes[_USAGE_DETAILS] = _to_json(_dict(usage_details))
    if cost_details is not None:
        attributes[_COST_DETAILS] = _to_json(_dict(cost_details))
    if metadata:
        for key, value in metadata.items():
            if value is not None:
                attributes[f"{_METADATA}.{key}"] = _to_json(value)
    return attributes


def generation_attributes(
    usage: OpenRouterUsage, breakdown: CostBreakdown, prompt: PromptFingerprint | None = None
) -> dict[str, str]:
    """The span attributes of `to_langfuse(usage, breakdown, prompt)`, written straight from the values.

    The same JSON as `otel_attributes` of those dicts, but money is written as the exact decimal it
    is (a JSON number; Langfuse reads it as the float it would have got) and no dict is built on
    the way: this runs once per LLM call, on the caller's thread.
    """
    u, b = usage, breakdown
    uncached = u.prompt_tokens - u.cached_tokens - u.cache_write_tokens
    overlap = 0
    if uncached < 0:  # reads and writes overlap: as in `usage_details`
        uncached, overlap = u.uncached_prompt_tokens, u.cache_overlap_tokens
    input_audio = u.prompt_audio_tokens
    if input_audio > uncached:
        input_audio = uncached
    reasoning, output_image, output_audio = (
        u.reasoning_tokens,
        u.completion_image_tokens,
        u.completion_audio_tokens,
    )
    plain_output = u.completion_tokens - reasoning - output_image - output_audio
    if plain_output < 0:  # as in `usage_details`
        output_image = output_audio = 0
        plain_output = u.completion_tokens - reasoning
    cached, writes, total_tokens = (
        u.cached_tokens - overlap,
        u.cache_write_tokens,
        u.prompt_tokens + u.completion_tokens,
    )
    attributes = {  # the same keys, in the same order, as `usage_details` (zero buckets left out)
        _USAGE_DETAILS: (
            f'{{"input":{uncached - input_audio}{f"{_IN_AUDIO}{input_audio}" if input_audio else ""}'
            f"{f'{_IN_CACHE_READ}{cached}' if cached else ''}{f'{_IN_CACHE_WRITE}{writes}' if writes else ''}"
            f"{f'{_CACHE_OVERLAP}{overlap}' if overlap else ''}"
            f',"output":{plain_output}{f"{_OUT_REASONING}{reasoning}" if reasoning else ""}'
            f"{f'{_OUT_IMAGE}{output_image}' if output_image else ''}"
            f'{f"{_OUT_AUDIO}{output_audio}" if output_audio else ""},"total":{total_tokens}}}'
        )
    }
    total = str(b.total)
    if b.source != "unpriced":  # `cost_details`: the non-zero buckets (in `BUCKETS` order) and the total
        attributes[_COST_DETAILS] = (
            f"{{{f'{_INPUT}{b.input!s},' if b.input else ''}"
            f"{f'{_CACHE_READ}{b.input_cache_read!s},' if b.input_cache_read else ''}"
            f"{f'{_CACHE_WRITE}{b.input_cache_creation!s},' if b.input_cache_creation else ''}"
            f"{f'{_OUTPUT}{b.output!s},' if b.output else ''}"
            f"{f'{_REASONING}{b.output_reasoning!s},' if b.output_reasoning else ''}"
            f"{f'{_REQUEST}{b.request!s},' if b.request else ''}"
            f"{f'{_SERVER_TOOLS}{b.server_tools!s},' if b.server_tools else ''}"
            f'{f"{_OTHER}{b.other!s}," if b.other else ""}"total":{total}}}'
        )
    # `openrouter_metadata`, key by key; OpenRouter's charge is usually the total: written once.
    cost, upstream = u.cost, u.upstream_inference_cost
    meta = f'"generation_id":{_json_string(u.generation_id)},' if u.generation_id is not None else ""
    if u.provider is not None:
        meta += f'"provider":{_json_string(u.provider)},'
    if u.model is not None:
        meta += f'"model":{_json_string(u.model)},'
    if u.is_byok:
        meta += '"is_byok":true,'
    if cost is not None:
        meta += f'"reported_cost":{total if cost is b.total else str(cost)},'
    if upstream is not None and upstream != cost:
        meta += f'"upstream_inference_cost":{upstream!s},'
    if u.cached_tokens or writes:
        if b.cache_savings is not None:
            meta += f'"cache_savings_usd":{b.cache_savings!s},'
        if b.no_cache_total is not None:
            meta += f'"no_cache_cost_usd":{b.no_cache_total!s},'
        if b.cache_hit_ratio is not None:
            meta += f'"cache_hit_ratio":{float(b.cache_hit_ratio)!r},'
    meta += f'"cost_source":"{b.source}"'
    if b.pricing_source is not None:
        meta += f',"pricing_source":{_json_string(b.pricing_source)}'
    if b.reconciliation_delta:
        meta += f',"reconciliation_delta":{b.reconciliation_delta!s}'
    if u.web_search_requests:
        meta += f',"web_search_requests":{u.web_search_requests}'
    if u.server_tool_cost is not None:
        meta += f',"server_tool_cost":{u.server_tool_cost!s}'
    if prompt is not None:
        if prompt.cache_control:
            meta += ',"cache_control":true'
        if prompt.cache_ttl is not None:
            meta += f',"cache_ttl":{prompt.cache_ttl}'
        meta += (
            f',"prefix_hashes":["{_QUOTED_COMMA.join(prompt.prefix_hashes)}"]'
            if prompt.prefix_hashes
            else ',"prefix_hashes":[]'
        )
    attributes[_OPENROUTER_METADATA] = f"{{{meta}}}"
    return attributes


_QUOTED_COMMA = '","'  # between hex digests, which need no escaping
# JSON fragments of `usage_details` and `cost_details` keys
_IN_AUDIO, _IN_CACHE_READ, _IN_CACHE_WRITE, _CACHE_OVERLAP = (
    ',"input_audio":',
    f',"{CACHE_READ_KEY}":',
    f',"{CACHE_WRITE_KEY}":',
    f',"{CACHE_OVERLAP_KEY}":',
)
_OUT_REASONING, _OUT_IMAGE, _OUT_AUDIO = ',"output_reasoning":', ',"output_image":', ',"output_audio":'
_INPUT, _CACHE_READ, _CACHE_WRITE, _OUTPUT, _REASONING, _REQUEST, _SERVER_TOOLS, _OTHER = (
    f'"{name}":' for name in BUCKETS
)
_json_string = encode_basestring


def trace_attributes(user_id: Any = None, session_id: Any = None) -> dict[str, str]:
    """The span attributes that set a trace's user and session ids, as Langfuse stores them (plain
    strings; a non-string or empty id gives no attribute)."""
    attributes = {}
    if isinstance(user_id, str) and user_id:
        attributes[_TRACE_USER_ID] = user_id
    if isinstance(session_id, str) and session_id:
        attributes[_TRACE_SESSION_ID] = session_id
    return attributes


@dataclass(frozen=True)
class ExportedGeneration:
    """A generation read back from the span attributes the Langfuse SDK exports."""

    model: str | None
    usage_details: dict[str, int]
    cost_details: dict[str, float]
    openrouter: dict[str, Any]


def read_generation(attributes: Mapping[str, Any]) -> ExportedGeneration | None:
    """The generation fields of an exported span's attributes; None for spans of other types."""
    if attributes.get(_OBSERVATION_TYPE) != "generation":
        return None

    def decoded(key: str) -> Any:
        value = attributes.get(key)
        try:
            return json.loads(value) if isinstance(value, str) else value
        except ValueError:
            return None

    return ExportedGeneration(
        model=attributes.get(_MODEL),
        usage_details=decoded(_USAGE_DETAILS) or {},
        cost_details=decoded(_COST_DETAILS) or {},
        openrouter=decoded(_OPENROUTER_METADATA) or {},
    )
