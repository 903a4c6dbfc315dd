"""`write_generation`: Langfuse's `update()` steps and our attributes in one span write, on a real client."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

import pytest

from langfuse_openrouter_callbacks import _langfuse_write
from langfuse_openrouter_callbacks._langfuse_write import set_attributes, write_generation
from tests.support.otlp_receiver import ExportedSpan

OURS = {
    "langfuse.observation.usage_details": '{"input":10,"output":2,"total":12}',
    "langfuse.observation.metadata.openrouter": '{"generation_id":"gen-1"}',
}
FIELD_SETS = [
    {"output": {"role": "assistant", "content": "hi"}},
    {"output": "plain text", "model": "anthropic/claude-4.5-sonnet-20250929"},
    {"input": [{"role": "user", "content": "hello"}], "output": {"content": "hi"}, "model": "m"},
    {"output": None, "input": None, "model": None},
    {"output": "hi", "completion_start_time": datetime(2026, 11, 28, 12, 0, 1, 250000, tzinfo=timezone.utc)},
]


def _written(span: ExportedSpan) -> dict[str, Any]:
    return {k: v for k, v in span.attributes.items() if "trace" not in k}


def _record_both_ways(
    client: Any, receiver: Any, fields: dict[str, Any]
) -> tuple[ExportedSpan, ExportedSpan]:
    one = client.start_observation(name="g", as_type="generation")
    assert write_generation(one, fields, dict(OURS))
    one.end()
    other = client.start_observation(name="g", as_type="generation")
    other.update(**fields)
    set_attributes(other._otel_span, dict(OURS))
    other.end()
    client.flush()
    by_id = {s.span_id: s for s in receiver.spans}
    return by_id[one.id], by_id[other.id]


@pytest.mark.parametrize("fields", FIELD_SETS, ids=lambda f: "+".join(f))
def test_one_write_is_what_update_then_our_write_record(langfuse_client, otlp_receiver, fields) -> None:
    assert _langfuse_write.langfuse().mirrored  # the pinned Langfuse is the one mirrored
    one, other = _record_both_ways(langfuse_client, otlp_receiver, fields)
    assert _written(one) == _written(other)
    assert set(OURS) <= set(one.attributes)


def test_the_clients_mask_and_media_steps_apply_to_input_and_output(
    langfuse_client, otlp_receiver, monkeypatch
) -> None:
    monkeypatch.setattr(langfuse_client, "_mask", lambda data: "<masked>")
    one, other = _record_both_ways(langfuse_client, otlp_receiver, FIELD_SETS[2])
    assert one.attributes["langfuse.observation.input"] == "<masked>"
    assert one.attributes["langfuse.observation.output"] == "<masked>"
    assert _written(one) == _written(other)


def test_nothing_is_written_where_updates_steps_are_not_known(langfuse_client, monkeypatch) -> None:
    span = langfuse_client.start_observation(name="s")  # a span, not a generation
    generation = langfuse_client.start_observation(name="g", as_type="generation")
    try:
        assert not write_generation(span, {"output": "x"}, dict(OURS))
        assert not write_generation(generation, {"output": "x", "metadata": {"a": 1}}, dict(OURS))
        monkeypatch.setattr(
            _langfuse_write, "_langfuse", dataclasses.replace(_langfuse_write.langfuse(), mirrored=False)
        )
        assert not write_generation(generation, {"output": "x"}, dict(OURS))
        assert "langfuse.observation.output" not in generation._otel_span.attributes
    finally:
        span.end()
        generation.end()
