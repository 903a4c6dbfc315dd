"""Pytest fixtures for the local servers and a real Langfuse client exporting to them.

Register them from ``tests/conftest.py`` (preferred; ``tests/test_support_servers.py`` does the
same, and pytest registers a plugin module only once)::

    pytest_plugins = ["tests.support.fixtures"]

- ``otlp_receiver`` (session): the fake Langfuse OTLP endpoint.
- ``langfuse_session`` (session): :class:`LangfuseTestSession` - the one real ``Langfuse``
  client (key ``pk-lf-test``) with its private, non-global ``TracerProvider``.
- ``langfuse_client`` (function): that client, with the receiver reset before the test and
  ``get_client()`` guaranteed to resolve to it. Call ``flush()`` before reading spans.
- ``langfuse_tracer_provider`` (function): the client's TracerProvider, for OTel instrumentors.
- ``fake_openrouter`` (function): a fresh :class:`FakeOpenRouter`.

Why it is built this way (Langfuse singletons, TracerProvider) is documented in
:mod:`tests.support.langfuse_session`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langfuse import Langfuse
from opentelemetry.sdk.trace import TracerProvider

from .langfuse_session import TEST_PUBLIC_KEY, TEST_SECRET_KEY, LangfuseTestSession
from .openrouter_server import FakeOpenRouter
from .otlp_receiver import OTLPReceiver

__all__ = [
    "fake_openrouter",
    "langfuse_client",
    "langfuse_session",
    "langfuse_tracer_provider",
    "otlp_receiver",
]


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """Session-wide fake Langfuse OTLP endpoint (reset per test by ``langfuse_client``)."""
    receiver = OTLPReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def langfuse_session(otlp_receiver: OTLPReceiver) -> Iterator[LangfuseTestSession]:
    """The process-wide Langfuse client, its private TracerProvider and the receiver."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANGFUSE_PUBLIC_KEY", TEST_PUBLIC_KEY)
        mp.setenv("LANGFUSE_SECRET_KEY", TEST_SECRET_KEY)
        mp.setenv("LANGFUSE_BASE_URL", otlp_receiver.base_url)
        mp.delenv("LANGFUSE_HOST", raising=False)
        mp.delenv("LANGFUSE_TRACING_ENABLED", raising=False)
        mp.delenv("LANGFUSE_SAMPLE_RATE", raising=False)
        session = LangfuseTestSession(otlp_receiver, flush_interval=0.5)
        try:
            yield session
        finally:
            session.close()


@pytest.fixture
def langfuse_client(langfuse_session: LangfuseTestSession) -> Iterator[Langfuse]:
    """A real ``Langfuse`` client exporting to ``otlp_receiver``, with a clean receiver.

    ``langfuse.get_client()`` (and so ``langfuse.langchain.CallbackHandler()``) resolves to it.
    Call ``langfuse_client.flush()`` before asserting on ``otlp_receiver.spans``.
    """
    receiver = langfuse_session.receiver
    client = langfuse_session.ensure()
    receiver.heal()
    client.flush()
    receiver.reset()
    try:
        yield client
    finally:
        receiver.heal()
        langfuse_session.client.flush()


@pytest.fixture
def langfuse_tracer_provider(langfuse_session: LangfuseTestSession) -> TracerProvider:
    """The (non-global) TracerProvider the test Langfuse client exports through."""
    langfuse_session.ensure()
    return langfuse_session.tracer_provider


@pytest.fixture
def fake_openrouter() -> Iterator[FakeOpenRouter]:
    """A fresh fake OpenRouter per test; use ``fake_openrouter.base_url`` as the client base URL."""
    server = FakeOpenRouter().start()
    try:
        yield server
    finally:
        server.stop()
