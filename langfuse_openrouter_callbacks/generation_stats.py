"""Opt-in lookups of OpenRouter's `GET /generation?id=` record, in the background, bounded.

    fetcher = GenerationStatsFetcher()             # OPENROUTER_API_KEY, OPENROUTER_API_BASE
    fetcher.submit("gen-...", on_done)             # never blocks; False when it cannot take it
    fetcher.flush()                                # wait (bounded) for the pending lookups

`on_done(record)` is called exactly once per accepted lookup, on a worker thread, with the record's
`data` object (JSON numbers with a fraction as `Decimal`), or with None when the lookup gave up or
the process is exiting. The handlers hold their generation open until then and end it with its
true end time.

- Threads: a fixed pool of at most `max_in_flight` daemon workers, started on demand and leaving
  after `idle_timeout` seconds without work; never a thread per call.
- Lookups: `404` is retried with exponential backoff (OpenRouter often answers 404 for a moment
  after the call) and `429` after its `Retry-After`, both within `total_timeout` seconds from the
  call's end; any other error (HTTP status, timeout, network, bad JSON) gives up. One warning per
  kind of failure, later ones at debug level.
- Bounded: at most `max_pending` lookups are accepted at once; beyond that `submit` returns False
  (the caller exports the generation without the record) with one warning. Nothing is kept once a
  lookup is done.
- Flushing: `flush()` waits for pending lookups. `watch_langfuse_client(client)` adds a span
  processor to that Langfuse client's TracerProvider, so that `langfuse.flush()` waits too and then
  exports the generations that ended meanwhile. At interpreter exit pending lookups are not waited
  for: their generations end with what they have, before Langfuse's own shutdown exports them.
- The API key is sent only in the `Authorization` header: it is never in a URL, a log message or
  an error this module produces.
"""

from __future__ import annotations

import atexit
import hashlib
import heapq
import itertools
import json
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

from ._log import log_exception_once, logger
from .catalog import DEFAULT_API_BASE

__all__ = [
    "ENV_FLAG",
    "GenerationStatsFetcher",
    "resolve_fetcher",
    "watch_langfuse_client",
]

#: Environment variable that turns the lookups on for handlers not given `fetch_generation_stats`.
ENV_FLAG = "LANGFUSE_OPENROUTER_FETCH_GENERATION_STATS"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

OnDone = Callable[[Mapping[str, Any] | None], None]

# Every fetcher alive, for the flush hook; and module-level warnings given once per process.
_live: weakref.WeakSet[GenerationStatsFetcher] = weakref.WeakSet()
_shared: dict[tuple[str, str], GenerationStatsFetcher] = {}
_shared_lock = threading.Lock()
_warned: set[str] = set()
_logged: set[str] = set()


def _warn_once(seen: set[str], kind: str, message: str, *args: Any) -> None:
    log = logger.debug if kind in seen else logger.warning
    seen.add(kind)
    log(message, *args)


def _configured_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get("OPENROUTER_API_KEY")
    return key.strip() if isinstance(key, str) else ""


def _configured_base(api_base: str | None) -> str:
    return (api_base or os.environ.get("OPENROUTER_API_BASE") or DEFAULT_API_BASE).rstrip("/")


@dataclass(eq=False, slots=True)
class _Lookup:
    """One accepted lookup; `claimed` once its `on_done` has been (or is being) called."""

    generation_id: str
    on_done: OnDone | None
    deadline: float
    attempts: int = 0
    claimed: bool = False


class GenerationStatsFetcher:
    """Fetches OpenRouter `/generation` records in the background; see the module docstring.

    - `api_key`: default `OPENROUTER_API_KEY`; without one nothing is fetched (`has_api_key` False).
    - `api_base`: default `OPENROUTER_API_BASE`, else `https://openrouter.ai/api/v1`.
    - `max_in_flight`: worker threads, so requests in flight at once (default 8).
    - `max_pending`: lookups accepted and not finished, in flight or waiting (default 512).
    - `total_timeout`: seconds from `submit` after which a lookup gives up (default 10).
    - `request_timeout`: seconds for one HTTP request (default 5; never past `total_timeout`).
    - `initial_delay`: seconds before the first attempt (default 0.5: the record is rarely there sooner).
    - `initial_backoff`, `max_backoff`: the 404 backoff, doubling from the first up to the second.
    - `flush_timeout`: how long `flush()` waits by default (default `total_timeout + request_timeout`).
    - `idle_timeout`: seconds a worker thread stays without work before it leaves (default 30).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        api_base: str | None = None,
        max_in_flight: int = 8,
        max_pending: int = 512,
        total_timeout: float = 10.0,
        request_timeout: float = 5.0,
        initial_delay: float = 0.5,
        initial_backoff: float = 0.25,
        max_backoff: float = 2.0,
        flush_timeout: float | None = None,
        idle_timeout: float = 30.0,
    ) -> None:
        self._api_key = _configured_key(api_key)
        self.api_base = _configured_base(api_base)
        self.max_in_flight = max(1, int(max_in_flight))
        self.max_pending = max(1, int(max_pending))
        self.total_timeout = float(total_timeout)
        self.request_timeout = float(request_timeout)
        self.initial_delay = max(0.0, float(initial_delay))
        self.initial_backoff = max(0.0, float(initial_backoff))
        self.max_backoff = max(self.initial_backoff, float(max_backoff))
        self.flush_timeout = (
            float(flush_timeout) if flush_timeout is not None else self.total_timeout + self.request_timeout
        )
        self.idle_timeout = float(idle_timeout)

        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, _Lookup]] = []  # (due, sequence, lookup)
        self._sequence = itertools.count()
        self._unfinished: set[_Lookup] = set()
        self._workers = 0
        self._idle = 0
        self._worker_ids: set[int] = set()
        self._closed = False
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._warned: set[str] = set()
        self._logged: set[str] = set()
        _live.add(self)

    def __repr__(self) -> str:  # never the key
        return f"GenerationStatsFetcher(api_base={self.api_base!r}, pending={self.pending})"

    @classmethod
    def shared(cls, api_key: str | None = None, api_base: str | None = None) -> GenerationStatsFetcher:
        """The process-wide fetcher for this key and API base (default: from the environment)."""
        base, api_key = _configured_base(api_base), _configured_key(api_key)
        key = (base, hashlib.sha256(api_key.encode()).hexdigest())  # the key itself is kept only once
        with _shared_lock:
            fetcher = _shared.get(key)
            if fetcher is None or fetcher._closed:
                fetcher = _shared[key] = cls(api_key, api_base=base)
            return fetcher

    # ------------------------------------------------------------------ public API

    @property
    def has_api_key(self) -> bool:
        return bool(self._api_key)

    @property
    def pending(self) -> int:
        """Lookups accepted and not finished."""
        with self._cv:
            return len(self._unfinished)

    @property
    def workers(self) -> int:
        """Worker threads alive."""
        with self._cv:
            return self._workers

    def submit(self, generation_id: str, on_done: OnDone) -> bool:
        """Look `generation_id` up in the background and call `on_done(record or None)` once.

        Never blocks. False (and `on_done` is not called) without an API key, after `close()`, or
        when `max_pending` lookups are already pending.
        """
        if not self._api_key or not isinstance(generation_id, str) or not generation_id:
            return False
        with self._cv:
            if self._closed:
                return False
            full = len(self._unfinished) >= self.max_pending
            if not full:
                first = not self._unfinished
                now = time.monotonic()
                lookup = _Lookup(generation_id, on_done, now + self.total_timeout)
                self._unfinished.add(lookup)
                heapq.heappush(self._heap, (now + self.initial_delay, next(self._sequence), lookup))
                if self._idle == 0 and self._workers < self.max_in_flight:
                    started = self._start_worker()
                    if not started and self._workers == 0:  # no thread to take it: the caller ends it now
                        self._unfinished.discard(lookup)
                        self._heap = [entry for entry in self._heap if entry[2] is not lookup]
                        heapq.heapify(self._heap)
                        return False
                self._cv.notify()
        if full:
            _warn_once(
                self._warned,
                "queue-full",
                "%d OpenRouter /generation lookups are already pending: generations are exported "
                "without their record until some finish",
                self.max_pending,
            )
            return False
        if first:
            self._run_before_earlier_exit_handlers()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until no lookup is pending (at most `timeout`, default `flush_timeout`). True if none is."""
        if threading.get_ident() in self._worker_ids:  # a worker cannot wait for itself
            return self.pending == 0
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else max(0.0, timeout))
        with self._cv:
            while self._unfinished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(remaining)
        return True

    def end_pending(self) -> None:
        """Give up every pending lookup now: each `on_done(None)` is called on this thread."""
        with self._cv:
            lookups = list(self._unfinished)
            self._heap.clear()
        for lookup in lookups:
            self._finish(lookup, None)

    def close(self) -> None:
        """End pending lookups with what they have and stop the workers. `submit` returns False after."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self.end_pending()
        atexit.unregister(self._at_exit)
        with self._cv:
            last = self._workers == 0
        if last:
            self._close_client()

    # ------------------------------------------------------------------ workers

    def _start_worker(self) -> bool:  # with self._cv held
        self._workers += 1
        try:
            threading.Thread(
                target=self._work, name="langfuse-openrouter-generation-stats", daemon=True
            ).start()
        except Exception:  # e.g. "can't start new thread": never the user's problem
            self._workers -= 1
            log_exception_once(self._logged, "thread", "could not start an OpenRouter /generation worker")
            return False
        return True

    def _work(self) -> None:
        me = threading.get_ident()
        with self._cv:
            self._worker_ids.add(me)
        idle_since = time.monotonic()
        try:
            while True:
                lookup = self._next_due(idle_since)
                if lookup is None:
                    return
                if not lookup.claimed:
                    try:
                        self._attempt(lookup)
                    except Exception:  # a bug of ours: the generation still ends
                        log_exception_once(
                            self._logged, "attempt", "OpenRouter /generation lookup failed unexpectedly"
                        )
                        self._finish(lookup, None)
                idle_since = time.monotonic()
        finally:
            with self._cv:
                self._workers -= 1
                self._worker_ids.discard(me)
                last = self._closed and self._workers == 0
            if last:
                self._close_client()

    def _next_due(self, idle_since: float) -> _Lookup | None:
        """The next lookup due, waiting for it; None when closed or idle for `idle_timeout`."""
        with self._cv:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    return heapq.heappop(self._heap)[2]
                if self._heap:
                    wait = self._heap[0][0] - now
                else:
                    wait = self.idle_timeout - (now - idle_since)
                    if wait <= 0:
                        return None
                self._idle += 1
                try:
                    self._cv.wait(wait)
                finally:
                    self._idle -= 1

    def _http(self) -> Any:
        with self._client_lock:  # not self._cv: submit() must never wait for an import or a connect
            if self._client is None:
                import httpx  # on a worker thread, not at import

                self._client = httpx.Client(
                    headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"},
                    timeout=self.request_timeout,
                    follow_redirects=False,
                )
            return self._client

    def _close_client(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                logger.debug("could not close the /generation HTTP client", exc_info=True)

    def _attempt(self, lookup: _Lookup) -> None:
        import httpx

        remaining = lookup.deadline - time.monotonic()
        if remaining <= 0:
            if lookup.attempts:
                self._give_up(lookup, "not-found", "no record after %.1f s", self.total_timeout)
            else:  # every worker was busy with other lookups all along
                self._give_up(lookup, "busy", "no free worker within %.1f s", self.total_timeout)
            return
        lookup.attempts += 1
        timeout = max(0.001, min(self.request_timeout, remaining))
        try:
            response = self._http().get(
                self.api_base + "/generation", params={"id": lookup.generation_id}, timeout=timeout
            )
        except httpx.TimeoutException:
            self._give_up(lookup, "timeout", "timed out after %.1f s", timeout)
            return
        except httpx.HTTPError as exc:  # connection refused, reset, truncated body, ...
            self._give_up(lookup, "network", "%s", type(exc).__name__)
            return
        status = response.status_code
        if status == 200:
            try:
                body = json.loads(response.content, parse_float=Decimal)
            except ValueError:
                self._give_up(lookup, "bad-response", "invalid JSON")
                return
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, dict):
                self._give_up(lookup, "bad-response", "a body without a data object")
                return
            self._finish(lookup, data)
            return
        if status in (404, 429):
            delay = _retry_after(response.headers.get("Retry-After")) if status == 429 else None
            if delay is None:
                delay = self._backoff(lookup.attempts)
            if time.monotonic() + delay >= lookup.deadline:
                if status == 404:
                    self._give_up(lookup, "not-found", "no record after %.1f s", self.total_timeout)
                else:
                    self._give_up(
                        lookup, "rate-limited", "rate-limited (HTTP 429, retry after %.1f s)", delay
                    )
                return
            with self._cv:
                if not lookup.claimed and not self._closed:
                    due = time.monotonic() + delay
                    heapq.heappush(self._heap, (due, next(self._sequence), lookup))
                    self._cv.notify()
            return
        self._give_up(lookup, "http-error", "HTTP %d", status)

    def _backoff(self, attempts: int) -> float:
        base = min(self.max_backoff, self.initial_backoff * 2 ** max(0, attempts - 1))
        return base * random.uniform(0.8, 1.0)  # a little jitter: calls made together do not retry together

    def _give_up(self, lookup: _Lookup, kind: str, reason: str, *args: Any) -> None:
        if not (lookup.claimed or self._closed):
            text = self._scrub(reason % args)
            _warn_once(
                self._warned,
                kind,
                "OpenRouter /generation lookup for %s gave up (%s): the Langfuse generation keeps the "
                "response's numbers",
                lookup.generation_id,
                text,
            )
        self._finish(lookup, None)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _finish(self, lookup: _Lookup, record: Mapping[str, Any] | None) -> None:
        with self._cv:
            if lookup.claimed:
                return
            lookup.claimed = True
            on_done, lookup.on_done = lookup.on_done, None
        try:
            if on_done is not None:
                on_done(record)
        except Exception:
            log_exception_once(
                self._logged, "on_done", "could not record an OpenRouter /generation record in Langfuse"
            )
        finally:
            with self._cv:
                self._unfinished.discard(lookup)
                self._cv.notify_all()

    # ------------------------------------------------------------------ exit

    def _run_before_earlier_exit_handlers(self) -> None:
        """(Re-)register the exit handler: atexit runs LIFO, so it runs before Langfuse's shutdown."""
        try:
            atexit.unregister(self._at_exit)
            atexit.register(self._at_exit)
        except Exception:
            logger.debug("could not register the /generation exit handler", exc_info=True)

    def _at_exit(self) -> None:
        if self.pending:
            logger.debug("exiting: %d OpenRouter /generation lookups end without their record", self.pending)
        self.close()


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


# ---------------------------------------------------------------------------- configuration


def _env_flag() -> bool:
    value = (os.environ.get(ENV_FLAG) or "").strip().lower()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        _warn_once(
            _warned, "env-flag", "%s=%r is not true or false: /generation lookups stay off", ENV_FLAG, value
        )
    return False


def resolve_fetcher(
    enabled: bool | None, fetcher: GenerationStatsFetcher | None = None
) -> GenerationStatsFetcher | None:
    """The fetcher a handler uses, or None when the lookups are off.

    `enabled` wins when given; else a given `fetcher` turns them on; else `ENV_FLAG`. Without an
    OpenRouter API key they stay off, with one warning.
    """
    if enabled is None:
        enabled = True if fetcher is not None else _env_flag()
    if not enabled:
        return None
    if fetcher is None:
        fetcher = GenerationStatsFetcher.shared()
    if not fetcher.has_api_key:
        _warn_once(
            _warned,
            "no-api-key",
            "fetch_generation_stats is on but OPENROUTER_API_KEY is not set: OpenRouter's /generation "
            "records will not be fetched",
        )
        return None
    return fetcher


# ---------------------------------------------------------------------------- langfuse.flush()

_hooked: weakref.WeakSet[Any] = weakref.WeakSet()  # TracerProviders our processor is on
_hook_lock = threading.Lock()
_reentry = threading.local()
_processor_class: type | None = None


def _exiting() -> bool:
    """True during interpreter exit (atexit handlers run after the main thread is marked stopped)."""
    return not threading.main_thread().is_alive()


def _flush_pending(timeout: float) -> bool:
    """Wait (at most `timeout`) for every fetcher's pending lookups, at exit end them instead; then
    for the scores waiting to be sent (bounded: `_scores`). True if lookups were pending."""
    from . import _scores

    fetchers = [f for f in list(_live) if f.pending]
    exiting = _exiting()
    deadline = time.monotonic() + timeout
    for fetcher in fetchers:
        if exiting:
            fetcher.end_pending()
        else:
            fetcher.flush(min(fetcher.flush_timeout, max(0.0, deadline - time.monotonic())))
    if _scores.pending():
        _scores.flush(_scores.EXIT_TIMEOUT if exiting else min(_scores.FLUSH_TIMEOUT, timeout))
    return bool(fetchers)


def _make_processor_class() -> type:
    from opentelemetry.sdk.trace import SpanProcessor

    class PendingGenerationStatsProcessor(SpanProcessor):
        """On `force_flush`, waits for pending `/generation` lookups, then flushes its provider again;
        then waits for the scores being sent (bounded).

        Registered after Langfuse's own processor, so Langfuse has exported what had ended; the
        generations our lookups end while we wait are exported by the second flush.
        """

        def __init__(self, provider: Any) -> None:
            self._provider = weakref.ref(provider)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            if getattr(_reentry, "active", False):
                return True
            try:
                started = time.monotonic()
                if not _flush_pending(timeout_millis / 1000):
                    return True
                provider = self._provider()
                if provider is None:
                    return True
                left_ms = timeout_millis - int((time.monotonic() - started) * 1000)
                _reentry.active = True
                try:
                    return bool(provider.force_flush(max(left_ms, 1000)))
                finally:
                    _reentry.active = False
            except Exception:
                log_exception_once(_logged, "flush-hook", "could not wait for OpenRouter /generation lookups")
                return True

    return PendingGenerationStatsProcessor


def watch_langfuse_client(client: Any) -> bool:
    """Make `client.flush()` wait for pending lookups and scores; True if the hook is (already) in place.

    Langfuse 5 keeps its TracerProvider at `client._resources.tracer_provider` (private): reached
    defensively; if it is not there, only the handlers' own `flush()` waits.
    """
    global _processor_class
    try:
        provider = getattr(getattr(client, "_resources", None), "tracer_provider", None)
        if provider is None or not callable(getattr(provider, "add_span_processor", None)):
            logger.debug("no TracerProvider found on %r: langfuse.flush() will not wait for lookups", client)
            return False
        with _hook_lock:
            if provider in _hooked:
                return True
            if _processor_class is None:
                _processor_class = _make_processor_class()
            provider.add_span_processor(_processor_class(provider))
            _hooked.add(provider)
        return True
    except Exception:
        log_exception_once(
            _logged, "watch", "could not hook OpenRouter /generation lookups into langfuse.flush()"
        )
        return False
