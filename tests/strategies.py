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
    ]
)
usage_like = st.recursive(
    json_scalars,
    lambda children: st.dictionaries(usage_keys, children, max_size=6) | st.lists(children, max_size=3),
    max_leaves=30,
)
usage_like_dicts = st.dictionaries(usage_keys, usage_like, max_size=6)
