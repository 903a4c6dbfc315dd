"""Numeric scores sent to Langfuse, bounded in memory and in time, whatever Langfuse does.

Langfuse's own `create_score` queues up to 100,000 scores, and its `flush()` and its exit hook wait
for every one of them, retried: with Langfuse hanging, a program that records scores cannot exit.
Scores go through here instead:

- at most `MAX_PENDING` wait at once; beyond that new ones are dropped;
- one daemon thread posts them in batches to `POST /api/public/scores` through the client's own
  API client (its base URL, keys and HTTP client), one attempt of at most `REQUEST_TIMEOUT` s each;
- `flush()` waits at most `FLUSH_TIMEOUT` s, the exit at most `EXIT_TIMEOUT` s; what is not sent
  by then is dropped, and a request a flush gave up on is not waited for again.

Whatever is dropped, for whatever reason, gets one warning per process (later ones go to debug).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

from ._log import logger

__all__ = ["EXIT_TIMEOUT", "FLUSH_TIMEOUT", "MAX_PENDING", "REQUEST_TIMEOUT", "flush", "pending", "submit"]

#: Scores waiting or being sent at once; more are dropped.
MAX_PENDING = 1000
#: Scores per request (far below the endpoint's 1 MB body limit).
BATCH_SIZE = 100
#: Seconds one request may take.
REQUEST_TIMEOUT = 5
#: Seconds `flush()` waits for the scores recorded so far.
FLUSH_TIMEOUT = 3.0
#: Seconds the interpreter's exit waits for them.
EXIT_TIMEOUT = 2.0

_cv = threading.Condition()
_pending: deque[tuple[Any, dict[str, Any]]] = deque()  # (Langfuse client, score body)
_sending = 0  # scores in the request in flight
_batch = 0  # number of the batch in flight (or last sent)
_given_up = -1  # the batch a flush stopped waiting for: later flushes do not wait for it again
_worker: threading.Thread | None = None
_dropped = 0  # scores dropped so far in this process
_warned = False


def pending() -> int:
    """Scores waiting or being sent."""
    with _cv:
        return len(_pending) + _sending


def submit(langfuse: Any, *, name: str, value: float, trace_id: str, observation_id: str) -> None:
    """Queue a NUMERIC score on an observation, as `langfuse.create_score` would make it. Never blocks."""
    if not getattr(langfuse, "_tracing_enabled", True):  # a disabled client records nothing
        return
    score = {
        "id": os.urandom(8).hex(),
        "traceId": trace_id,
        "observationId": observation_id,
        "name": name,
        "value": value,
        "dataType": "NUMERIC",
        "timestamp": datetime.now(timezone.utc),
    }
    environment = getattr(langfuse, "_environment", None)
    if environment:
        score["environment"] = environment
    with _cv:
        full = len(_pending) + _sending >= MAX_PENDING
        if not full:
            _pending.append((langfuse, score))
            _start_worker()
            _cv.notify()
    if full:
        _drop(1, f"{MAX_PENDING} scores are already waiting for Langfuse")


def flush(timeout: float = FLUSH_TIMEOUT) -> bool:
    """Wait (at most `timeout` s) until every score queued is sent; drop those still waiting then.

    True if none was left. The request in flight, if any, is not waited for past the timeout.
    """
    global _given_up
    if threading.current_thread() is _worker:
        return False
    deadline = time.monotonic() + max(0.0, timeout)
    with _cv:
        while _pending or (_sending and _batch != _given_up):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            _cv.wait(remaining)
        left = len(_pending)
        _pending.clear()
        done = not left and not _sending
        if _sending:
            _given_up = _batch
    if left:
        _drop(left, f"Langfuse did not take them within {timeout:g} s")
    return done


# ---------------------------------------------------------------------------- the sending thread


def _start_worker() -> None:  # with _cv held
    global _worker
    if _worker is not None and _worker.is_alive():
        return
    _worker = threading.Thread(target=_work, name="langfuse-openrouter-scores", daemon=True)
    _worker.start()
    atexit.register(_at_exit)  # once the thread runs; later registrations run first (LIFO): fine either way


def _work() -> None:
    global _sending, _batch
    while True:
        with _cv:
            while not _pending:
                _cv.wait()
            client = _pending[0][0]
            batch = []
            while _pending and len(batch) < BATCH_SIZE and _pending[0][0] is client:
                batch.append(_pending.popleft()[1])
            _sending, _batch = len(batch), _batch + 1
        try:
            _send(client, batch)
        finally:
            with _cv:
                _sending = 0
                _cv.notify_all()


def _send(client: Any, batch: list[dict[str, Any]]) -> None:
    """One attempt; a batch that fails is dropped (counted, and warned about once)."""
    for score in batch:
        score["timestamp"] = score["timestamp"].isoformat()
    try:
        response = client.api.scores.create(
            request=batch, request_options={"max_retries": 0, "timeout_in_seconds": REQUEST_TIMEOUT}
        )
    except Exception as exc:  # HTTP status, timeout, network: never retried, never the user's problem
        status = getattr(exc, "status_code", None)
        _drop(len(batch), f"HTTP {status}" if status is not None else type(exc).__name__)
        return
    rejected = getattr(response, "rejected", 0)
    if isinstance(rejected, int) and rejected > 0:
        _drop(rejected, "Langfuse rejected them")


def _drop(count: int, reason: str) -> None:
    global _dropped, _warned
    with _cv:
        _dropped += count
        first, _warned = not _warned, True
    log = logger.warning if first else logger.debug
    log("dropped %d cache-savings score(s) (%s); later drops are logged at debug level", count, reason)


def _at_exit() -> None:
    flush(EXIT_TIMEOUT)
