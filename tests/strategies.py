"""Hypothesis strategies for the JSON that arrives where OpenRouter usage is expected."""

from __future__ import annotations

from hypothesis import strategies as st

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Keys of OpenRouter's, LangChain's and the generation endpoint's usage shapes, so junk lands where it hurts.
usage_keys = st.sampled_from(
    [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "is_byok",
        "prompt_tokens_details",
        "completion_tokens_details",
        "cost_details",
        "server_tool_use_details",
        "usage",
        "id",
        "provider",
        "model",
        "data",
        "total_cost",
        "native_tokens_prompt",
        "cached_tokens",
        "reasoning_tokens",
        "cache_write_tokens",
        "upstream_inference_cost",
        "web_search_requests",
        "choices",
        "token_usage",
        "model_name",
        "input_tokens",
        "output_tokens",
        "input_token_details",
        "cache_read",
        # the Responses API: its usage, details and cost names, and a stream event's wrapping
        "input_tokens_details",
        "output_tokens_details",
        "upstream_inference_input_cost",
        "server_tool_cost",
        "type",
        "response",
        "output",
    ]
)
usage_like = st.recursive(
    json_scalars,
    lambda children: st.dictionaries(usage_keys, children, max_size=6) | st.lists(children, max_size=3),
    max_leaves=30,
)
usage_like_dicts = st.dictionaries(usage_keys, usage_like, max_size=6)

# OpenRouter usage in its real shape, each value valid or (now and then) junk: for comparing the
# usual-shape readers with the careful ones where the usual ones answer.
_counts = st.none() | st.integers(min_value=0, max_value=10_000) | json_scalars
_money = (
    st.none() | st.floats(min_value=0, max_value=2) | st.integers(min_value=0, max_value=3) | json_scalars
)


def _details(*keys: str, values: st.SearchStrategy = _counts) -> st.SearchStrategy:
    return st.none() | st.fixed_dictionaries({}, optional=dict.fromkeys(keys, values)) | json_scalars


openrouter_usages = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": _counts,
        "completion_tokens": _counts,
        "total_tokens": _counts,
        "cost": _money,
        "is_byok": st.none() | st.booleans() | json_scalars,
        "prompt_tokens_details": _details(
            "cached_tokens", "cache_write_tokens", "audio_tokens", "video_tokens"
        ),
        "completion_tokens_details": _details("reasoning_tokens", "audio_tokens", "image_tokens"),
        "cost_details": _details(
            "upstream_inference_cost",
            "upstream_inference_prompt_cost",
            "upstream_inference_completions_cost",
            "server_tool_cost",
            values=_money,
        ),
        "server_tool_use_details": _details("web_search_requests"),
    },
)
responses_api_usages = st.fixed_dictionaries(
    {},
    optional={
        "input_tokens": _counts,
        "output_tokens": _counts,
        "total_tokens": _counts,
        "cost": _money,
        "is_byok": st.none() | st.booleans() | json_scalars,
        "input_tokens_details": _details("cached_tokens", "cache_write_tokens"),
        "output_tokens_details": _details("reasoning_tokens"),
        "cost_details": _details(
            "upstream_inference_cost",
            "upstream_inference_input_cost",
            "upstream_inference_output_cost",
            "server_tool_cost",
            values=_money,
        ),
    },
)
# A Responses API response, and the `response.completed` stream event that carries one.
responses_api_responses = st.fixed_dictionaries(
    {"usage": responses_api_usages | json_scalars},
    optional={
        "id": json_scalars,
        "model": json_scalars,
        "object": st.just("response"),
        "output": st.just([]),
    },
)
responses_api_events = st.fixed_dictionaries(
    {"type": st.just("response.completed"), "response": responses_api_responses | json_scalars}
)
openrouter_responses = st.fixed_dictionaries(
    {"usage": openrouter_usages | json_scalars},
    optional={"id": json_scalars, "provider": json_scalars, "model": json_scalars, "choices": st.just([])},
)

# ...and with every value valid and consistent (details within their totals): the usual readers' input.
_part = st.none() | st.integers(min_value=0, max_value=5_000)
_usd = st.none() | st.floats(min_value=1e-9, max_value=2) | st.integers(min_value=0, max_value=3)
valid_openrouter_usages = st.fixed_dictionaries(
    {
        "prompt_tokens": st.integers(min_value=20_000, max_value=30_000),
        "completion_tokens": st.integers(min_value=10_000, max_value=20_000),
    },
    optional={
        "total_tokens": st.none() | st.integers(min_value=0, max_value=50_000),
        "cost": _usd,
        "is_byok": st.none() | st.booleans(),
        "prompt_tokens_details": _details(
            "cached_tokens", "cache_write_tokens", "audio_tokens", "video_tokens", values=_part
        ).filter(lambda d: d is None or isinstance(d, dict)),
        "completion_tokens_details": _details(
            "reasoning_tokens", "audio_tokens", "image_tokens", values=_part
        ).filter(lambda d: d is None or isinstance(d, dict)),
        "cost_details": _details(
            "upstream_inference_cost",
            "upstream_inference_prompt_cost",
            "upstream_inference_completions_cost",
            values=_usd,
        ).filter(lambda d: d is None or isinstance(d, dict)),
        "server_tool_use_details": _details("web_search_requests", values=_part).filter(
            lambda d: d is None or isinstance(d, dict)
        ),
    },
)
