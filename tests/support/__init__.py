"""Local test servers: a fake OpenRouter and a fake Langfuse OTLP receiver, plus pytest fixtures.

Fixtures live in :mod:`tests.support.fixtures` (register with
``pytest_plugins = ["tests.support.fixtures"]`` in ``conftest.py``); importing this package does
not import pytest.
"""

from ._http import RecordedRequest
from .langfuse_session import TEST_PUBLIC_KEY, TEST_SECRET_KEY, LangfuseTestSession, isolated_langfuse_client
from .openrouter_server import (
    AUTO,
    FakeOpenRouter,
    Fault,
    RecordedExchange,
    ResponseSpec,
    ToolCall,
    Usage,
    endpoint_entry,
    endpoints_payload,
    error_spec,
    find_recorded_exchange,
    generation_data,
    load_recorded_exchanges,
    marker,
    marker_responder,
    model_entry,
    new_generation_id,
    recorded_exchanges_path,
    request_text,
)
from .otlp_receiver import (
    TRACES_PATH,
    ExportedSpan,
    OTLPReceiver,
    SpanEvent,
    any_value_to_python,
    attributes_to_dict,
    decode_export_request,
    decode_langfuse_attributes,
)

__all__ = [
    "AUTO",
    "TEST_PUBLIC_KEY",
    "TEST_SECRET_KEY",
    "TRACES_PATH",
    "ExportedSpan",
    "FakeOpenRouter",
    "Fault",
    "LangfuseTestSession",
    "OTLPReceiver",
    "RecordedExchange",
    "RecordedRequest",
    "ResponseSpec",
    "SpanEvent",
    "ToolCall",
    "Usage",
    "any_value_to_python",
    "attributes_to_dict",
    "decode_export_request",
    "decode_langfuse_attributes",
    "endpoint_entry",
    "endpoints_payload",
    "error_spec",
    "find_recorded_exchange",
    "generation_data",
    "isolated_langfuse_client",
    "load_recorded_exchanges",
    "marker",
    "marker_responder",
    "model_entry",
    "new_generation_id",
    "recorded_exchanges_path",
    "request_text",
]
