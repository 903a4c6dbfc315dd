"""Reading Langfuse's public API as JSON over httpx, with a bounded retry policy and one-line errors.

The report reads pages of generations as plain JSON: parsing them into the Langfuse SDK's pydantic
models cost ~400 us per generation, 96% of a large report. The SDK's client is only asked for where to
connect and how to authenticate (see `LangfuseConnection.of`).
"""

from __future__ import annotations

import base64
import email.utils
import os
import random
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ._model import ReportError

__all__ = ["DEFAULT_MAX_RETRIES", "DEFAULT_TIMEOUT", "LangfuseConnection", "api_client_from_env"]

DEFAULT_MAX_RETRIES = 4
DEFAULT_TIMEOUT = 60.0
_MAX_RETRY_AFTER = 120.0
_MAX_BACKOFF = 30.0
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_METRICS_UNAVAILABLE = frozenset({400, 404, 405, 501})
_DEFAULT_BASE_URL = "https://cloud.langfuse.com"


class MetricsUnavailable(Exception):
    """The metrics API cannot give (all of) the figures."""


class LangfuseConnection:
    """Where Langfuse's public API is and how to authenticate; `get` calls it with the retry policy.

    Rate limits (429) wait for `Retry-After`, server errors and dropped connections back off
    exponentially (`backoff` seconds, doubled per retry), both bounded by `max_retries`; a refused
    connection or a failed name lookup fails at once. Anything else is a `ReportError` whose message
    is one line fit for users (never a secret).
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.requests = 0
        self._client: Any = None

    @classmethod
    def from_keys(cls, base_url: str, public_key: str, secret_key: str, **options: Any) -> LangfuseConnection:
        """Basic authentication with a project's public and secret key."""
        token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "X-Langfuse-Public-Key": public_key}
        return cls(base_url, headers, **options)

    @classmethod
    def of(cls, client: Any, **options: Any) -> LangfuseConnection:
        """The connection of a `Langfuse` client, the SDK's `LangfuseAPI`, or a `LangfuseConnection`.

        From the SDK it reads its API client's `_client_wrapper` (`get_base_url()`, `get_headers()`),
        the generated client's one holder of both (pinned by tests/test_report.py).
        """
        if isinstance(client, LangfuseConnection):
            for name, value in options.items():
                setattr(client, name, max(0, value) if name == "max_retries" else value)
            return client
        wrapper = getattr(client, "_client_wrapper", None)
        if wrapper is None:
            try:
                wrapper = client.api._client_wrapper
            except AttributeError:  # a Langfuse client without keys is disabled and has no API client
                raise ReportError(
                    "the Langfuse client is not configured: set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY"
                ) from None
        return cls(wrapper.get_base_url(), wrapper.get_headers(), **options)

    def get(self, what: str, path: str, params: Mapping[str, Any], *, metrics: bool = False) -> Any:
        """The JSON answer to GET `path` with `params` (None values left out)."""
        import httpx

        if self._client is None:
            # no TLS over plain http (a local server): loading the CA bundle costs ~80 ms of start-up
            plain = self.base_url.lower().startswith("http://")
            self._client = httpx.Client(
                base_url=self.base_url, headers=self.headers, timeout=self.timeout, verify=not plain
            )
        query = {key: value for key, value in params.items() if value is not None}
        attempt = 0
        while True:
            self.requests += 1
            try:
                response = self._client.get(path, params=query)
                # httpx's Response and its stream refer to each other: without this, each page's bytes
                # wait for the cycle collector, and a few of them pile up (the body is read already)
                response.stream = None
            except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise ReportError(
                    f"Langfuse cannot be reached at {self.base_url} ({what}): {_reason(exc)}"
                ) from None
            except httpx.TransportError as exc:
                if attempt < self.max_retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                timed_out = isinstance(exc, httpx.TimeoutException)
                kind = "did not answer in time" if timed_out else "cannot be reached"
                raise ReportError(
                    f"Langfuse {kind} ({what}, {attempt + 1} attempts): {_reason(exc)}"
                ) from None
            status = response.status_code
            if status < 300:
                try:
                    return response.json()
                except ValueError as exc:
                    raise ReportError(
                        f"unexpected answer from Langfuse ({what}): {_message(str(exc))}"
                    ) from None
            if status in _RETRY_STATUSES and attempt < self.max_retries:
                self._sleep(attempt, _retry_after(response.headers) if status == 429 else None)
                attempt += 1
                continue
            raise self._error(what, status, _body(response), attempts=attempt + 1, metrics=metrics)

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            time.sleep(min(retry_after, _MAX_RETRY_AFTER))
        else:
            time.sleep(min(self.backoff * 2**attempt, _MAX_BACKOFF) * (1 + random.random() / 10))

    @staticmethod
    def _error(what: str, status: int, body: Any, *, attempts: int, metrics: bool) -> Exception:
        detail = _message(body)
        suffix = f": {detail}" if detail else ""
        if status in (401, 403):
            return ReportError(
                f"Langfuse rejected the API keys (HTTP {status}{suffix}); "
                "check LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL"
            )
        if metrics and status in _METRICS_UNAVAILABLE:
            return MetricsUnavailable(f"HTTP {status}{suffix}")
        if status in (404, 501):
            return ReportError(
                f"this Langfuse server has no {what} API (HTTP {status}{suffix}); "
                "the report needs Langfuse Cloud or a Langfuse v4 server"
            )
        if status in _RETRY_STATUSES:
            return ReportError(f"Langfuse answered HTTP {status} to {what} {attempts} times{suffix}")
        return ReportError(f"Langfuse answered HTTP {status} to {what}{suffix}")


def api_client_from_env(*, timeout: float = DEFAULT_TIMEOUT) -> LangfuseConnection:
    """The connection from LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL (or LANGFUSE_HOST).

    Unlike `Langfuse()`, this starts no tracing, registers no client and imports no SDK.
    """
    public_key = os.environ.get("LANGFUSE_PUBLIC_KEY")
    secret_key = os.environ.get("LANGFUSE_SECRET_KEY")
    if not public_key or not secret_key:
        raise ReportError("set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (and LANGFUSE_BASE_URL)")
    base_url = os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST") or _DEFAULT_BASE_URL
    return LangfuseConnection.from_keys(base_url, public_key, secret_key, timeout=timeout)


def _body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return _message(text)


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str):
                body = body[key]
                break
    text = " ".join(str(body).split()) if body not in (None, "") else ""
    return text[:200]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date); None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
