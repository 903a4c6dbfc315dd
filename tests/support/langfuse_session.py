"""One process-wide real Langfuse client exporting to an :class:`OTLPReceiver` (no pytest needed).

What the installed Langfuse 5.0.4 does (``langfuse/_client/resource_manager.py``,
``get_client.py``, ``client.py``) and what this module and ``tests.support.fixtures`` do about it:

- **Singleton per public key.** ``Langfuse(...)`` delegates to ``LangfuseResourceManager``,
  whose ``__new__`` keeps a class-level ``_instances[public_key]``. A second
  ``Langfuse(public_key=same, base_url=other, ...)`` silently returns the first manager and
  ignores every other argument (base_url, timeout, tracer_provider...). So a process can
  only have one effective configuration per key: the receiver is session-scoped and the
  client is created once per session.
- **TracerProvider.** Without ``tracer_provider=``, ``_init_tracer_provider`` reuses the global
  OTel provider, and if that is still the ``ProxyTracerProvider`` it creates an SDK
  ``TracerProvider`` and installs it globally (``set_tracer_provider`` works once per process).
  If someone else set a global provider first, Langfuse adds its span processor to *theirs*.
  To be independent of import/test order we pass an explicit, non-global ``TracerProvider``;
  the global provider is left untouched. OTel instrumentors (e.g. OpenInference) used in tests
  must be given ``langfuse_tracer_provider`` explicitly.
- **get_client().** With exactly one registered manager and no key it returns a
  ``Langfuse`` bound to that same manager (what ``langfuse.langchain.CallbackHandler()``
  uses). With two or more managers it returns a *disabled* no-op client and only warns.
  ``langfuse_client`` therefore shuts down and unregisters foreign managers before each test
  (with a warning) and asserts ``get_client()`` resolves to the session manager.
- **reset / flush.** ``LangfuseResourceManager.reset()`` shuts down and forgets all
  managers; the session client is recreated (with a fresh provider) if that happened.
  ``flush()`` force-flushes the provider, i.e. exports synchronously to the receiver.
- The ``langfuse_session`` fixture also sets ``LANGFUSE_PUBLIC_KEY`` / ``LANGFUSE_SECRET_KEY`` /
  ``LANGFUSE_BASE_URL`` so code calling ``Langfuse()`` without arguments lands on the same
  manager.

Per test, ``langfuse_client`` flushes leftovers, then ``receiver.reset()`` (clears spans,
requests, failure mode); at teardown it heals the receiver and flushes again.
Tests needing another client configuration can use :func:`isolated_langfuse_client`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langfuse import Langfuse, get_client
from langfuse._client.resource_manager import LangfuseResourceManager
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from .otlp_receiver import OTLPReceiver

__all__ = ["TEST_PUBLIC_KEY", "TEST_SECRET_KEY", "LangfuseTestSession", "isolated_langfuse_client"]

TEST_PUBLIC_KEY = "pk-lf-test"
TEST_SECRET_KEY = "sk-lf-test"


def _new_provider() -> TracerProvider:
    return TracerProvider(resource=Resource.create({"service.name": "langfuse-openrouter-callbacks-tests"}))


def _unregister(public_key: str) -> None:
    """Shut down and forget the manager for ``public_key`` (test-only use of SDK internals)."""
    with LangfuseResourceManager._lock:
        manager = LangfuseResourceManager._instances.pop(public_key, None)
    if manager is not None:
        manager.shutdown()


class LangfuseTestSession:
    """Owns the one process-wide Langfuse client used by tests."""

    def __init__(self, receiver: OTLPReceiver, **client_kwargs: Any) -> None:
        self.receiver = receiver
        self.client_kwargs = client_kwargs
        self.tracer_provider = _new_provider()
        self.client = self._create()

    def _create(self) -> Langfuse:
        return Langfuse(
            public_key=TEST_PUBLIC_KEY,
            secret_key=TEST_SECRET_KEY,
            base_url=self.receiver.base_url,
            tracer_provider=self.tracer_provider,
            **self.client_kwargs,
        )

    def ensure(self) -> Langfuse:
        """Make the session client the only registered one; recreate it after a reset()."""
        with LangfuseResourceManager._lock:
            instances = dict(LangfuseResourceManager._instances)
        foreign = [key for key in instances if key != TEST_PUBLIC_KEY]
        if foreign:
            warnings.warn(
                f"Langfuse clients for public keys {foreign} were left registered by an earlier test; "
                "unregistering them so get_client() resolves to the test client.",
                stacklevel=2,
            )
            for key in foreign:
                _unregister(key)
        ours = instances.get(TEST_PUBLIC_KEY)
        if ours is None or ours._shutdown or ours.base_url != self.receiver.base_url:
            _unregister(TEST_PUBLIC_KEY)
            self.tracer_provider.shutdown()
            self.tracer_provider = _new_provider()
            self.client = self._create()
        resolved = get_client()
        assert resolved._resources is LangfuseResourceManager._instances[TEST_PUBLIC_KEY], (
            "langfuse.get_client() does not resolve to the test client"
        )
        return self.client

    def close(self) -> None:
        """Flush, shut down and unregister the session client."""
        self.client.flush()
        _unregister(TEST_PUBLIC_KEY)
        self.tracer_provider.shutdown()


@contextmanager
def isolated_langfuse_client(
    receiver: OTLPReceiver, public_key: str = "pk-lf-isolated", **kwargs: Any
) -> Iterator[Langfuse]:
    """A second, separately configured client (own key and provider), unregistered on exit.

    While it exists ``get_client()`` without a key returns a disabled client: pass
    ``public_key`` explicitly (e.g. ``CallbackHandler(public_key=...)``).
    """
    provider = _new_provider()
    client = Langfuse(
        public_key=public_key,
        secret_key="sk-lf-isolated",
        base_url=receiver.base_url,
        tracer_provider=provider,
        **kwargs,
    )
    try:
        yield client
    finally:
        _unregister(public_key)
        provider.shutdown()
