"""Writing a Langfuse generation's fields and ours in one span write, the way Langfuse's `update()` does.

Langfuse 5's `LangfuseObservationWrapper.update()` runs the input and output through the media scan
and the client's mask, serializes them, builds the span attributes and sets them without evicting
earlier ones. `write_generation` does those steps for the input, output, model and completion start
time of a generation, and adds our own attributes to the same write. It is used only while Langfuse's
`update()` and attribute builder refer to exactly the names checked below (5.0); otherwise
`update()` is called as it is and ours are set after it. Langfuse is imported on first use: the core
of this package does not import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What Langfuse's `update()` and `create_generation_attributes` refer to in the versions mirrored.
_UPDATE_NAMES = frozenset(
    {
        "Literal",
        "ObservationTypeGenerationLike",
        "ObservationTypeSpanLike",
        "Optional",
        "Union",
        "_observation_type",
        "_otel_span",
        "_process_media_and_apply_mask",
        "_reserved_attribute_keys",
        "_set_otel_span_status_if_error",
        "_set_span_attributes_within_limit",
        "cast",
        "create_generation_attributes",
        "create_span_attributes",
        "get_observation_types_list",
        "is_recording",
        "update_name",
    }
)
_ATTRIBUTE_BUILDER_NAMES = frozenset(
    {
        "LangfuseOtelSpanAttributes",
        "OBSERVATION_COMPLETION_START_TIME",
        "OBSERVATION_COST_DETAILS",
        "OBSERVATION_INPUT",
        "OBSERVATION_LEVEL",
        "OBSERVATION_MODEL",
        "OBSERVATION_MODEL_PARAMETERS",
        "OBSERVATION_OUTPUT",
        "OBSERVATION_PROMPT_NAME",
        "OBSERVATION_PROMPT_VERSION",
        "OBSERVATION_STATUS_MESSAGE",
        "OBSERVATION_TYPE",
        "OBSERVATION_USAGE_DETAILS",
        "VERSION",
        "_flatten_and_serialize_metadata",
        "_serialize",
        "is_fallback",
        "items",
        "name",
        "version",
    }
)
#: The fields `write_generation` writes as Langfuse's `update()` would.
WRITTEN_FIELDS = frozenset({"input", "output", "model", "completion_start_time"})


@dataclass(frozen=True)
class _Langfuse:
    """Langfuse's helpers and attribute names, found once. `mirrored`: `write_generation` may run."""

    set_attributes: Any  # (span, attributes[, reserved keys]): without evicting earlier attributes
    mirrored: bool = False
    serialize: Any = None
    reserved_keys: tuple[str, ...] = ()
    type_key: str = ""
    input_key: str = ""
    output_key: str = ""
    model_key: str = ""
    completion_start_time_key: str = ""


def _find() -> _Langfuse:
    try:
        from langfuse._client.span import _set_span_attributes_within_limit
    except ImportError:  # another Langfuse 5.x: OpenTelemetry's own limit handling
        return _Langfuse(_set_plainly)
    try:
        from langfuse._client.attributes import (
            LangfuseOtelSpanAttributes,
            _serialize,
            create_generation_attributes,
        )
        from langfuse._client.span import LangfuseObservationWrapper, _reserved_attribute_keys

        names = frozenset(LangfuseObservationWrapper.update.__code__.co_names)
        builder_names = frozenset(create_generation_attributes.__code__.co_names)
        return _Langfuse(
            _set_span_attributes_within_limit,
            mirrored=names == _UPDATE_NAMES and builder_names == _ATTRIBUTE_BUILDER_NAMES,
            serialize=_serialize,
            reserved_keys=_reserved_attribute_keys("generation"),
            type_key=LangfuseOtelSpanAttributes.OBSERVATION_TYPE,
            input_key=LangfuseOtelSpanAttributes.OBSERVATION_INPUT,
            output_key=LangfuseOtelSpanAttributes.OBSERVATION_OUTPUT,
            model_key=LangfuseOtelSpanAttributes.OBSERVATION_MODEL,
            completion_start_time_key=LangfuseOtelSpanAttributes.OBSERVATION_COMPLETION_START_TIME,
        )
    except (ImportError, AttributeError, TypeError):
        return _Langfuse(_set_span_attributes_within_limit)


def _set_plainly(span: Any, attributes: dict[str, str], *_: Any) -> None:
    span.set_attributes(attributes)


_langfuse: _Langfuse | None = None


def langfuse() -> _Langfuse:
    """Langfuse's helpers (found on the first call)."""
    global _langfuse
    if _langfuse is None:
        _langfuse = _find()
    return _langfuse


def set_attributes(span: Any, attributes: dict[str, str]) -> None:
    """`span.set_attributes`, keeping Langfuse's own attributes when the span is at its attribute limit."""
    (_langfuse or langfuse()).set_attributes(span, attributes)


def write_generation(observation: Any, fields: Mapping[str, Any], ours: dict[str, str]) -> bool:
    """`observation.update(**fields)` with `ours` added to the same span write, as Langfuse's `update()`
    writes a generation's input, output, model and completion start time: input and output through
    its media scan and mask, then serialized. False, with nothing written, when that is not known to
    be what `update()` does here (another Langfuse, another observation type, other fields).
    """
    steps = _langfuse or langfuse()
    if (
        not steps.mirrored
        or getattr(observation, "_observation_type", None) != "generation"
        or not WRITTEN_FIELDS.issuperset(fields)
    ):
        return False
    span = observation._otel_span
    if not span.is_recording():
        return True  # update() writes nothing either
    serialize, masked = steps.serialize, observation._process_media_and_apply_mask
    attributes: dict[str, str] = {steps.type_key: "generation"}
    value = fields.get("input")
    if value is not None and (value := serialize(masked(data=value, field="input", span=span))) is not None:
        attributes[steps.input_key] = value
    value = fields.get("output")
    if value is not None and (value := serialize(masked(data=value, field="output", span=span))) is not None:
        attributes[steps.output_key] = value
    model = fields.get("model")
    if model is not None:
        attributes[steps.model_key] = model
    started = fields.get("completion_start_time")
    if started is not None:
        attributes[steps.completion_start_time_key] = serialize(started)
    attributes.update(ours)
    steps.set_attributes(span, attributes, steps.reserved_keys)
    return True
