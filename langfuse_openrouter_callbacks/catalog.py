"""`PriceCatalog`: OpenRouter prices by model and serving endpoint, never fetched on the hot path.

A call is priced at the model that answered it; the id it was asked for stands in only when it is the
same model under another name (a dated `canonical_slug`, a variant suffix such as `:thinking`).
Lookup order in `pricing_for`: the user's overrides; the serving endpoint's prices (when the provider
is known); the model-level price from `/models`; genai-prices' OpenRouter data (offline); else None.
Everything that takes time runs on one background thread: reading the disk copy, loading genai-prices'
data, fetching `/models` (at most once per TTL) and each model's `/endpoints` (once), bounded in size
and in total time. A lookup only ever reads memory, and until the prices arrive it answers with what
is there (None when nothing is: the call is then marked unpriced, or carries OpenRouter's own cost).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import queue
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import _genai_prices
from ._log import logger
from .pricing import ModelPricing, PricingError

__all__ = ["DEFAULT_API_BASE", "PriceCatalog"]

DEFAULT_API_BASE = "https://openrouter.ai/api/v1"
_CACHE_FORMAT = 1
_RETRY_AFTER_FAILURE = 300.0  # seconds before a failed fetch is tried again
_MEMO_SIZE = 16_384  # answers (and offline lookups) remembered, least recently used forgotten first
_FOREVER = float("inf")
# The most a `/models` answer or its disk copy may hold: OpenRouter's is about 1 MB; parsing JSON holds
# the GIL, so a larger one would stall the program's threads. An endpoint list is a few kB.
MAX_MODELS_BYTES = 8 * 1024 * 1024
MAX_ENDPOINTS_BYTES = 1024 * 1024


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "langfuse-openrouter-callbacks"


def _without_suffix(model: str) -> str:
    """`anthropic/claude-3.7-sonnet:thinking` -> `anthropic/claude-3.7-sonnet`; a `:free` id is its own
    model (priced 0, unlike the paid one), so it keeps its suffix."""
    return model if model.endswith(":free") else model.split(":", 1)[0]


class _Memo(OrderedDict):  # type: ignore[type-arg]
    """A bounded map that forgets its least recently used entries first (never all at once)."""

    def remember(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _MEMO_SIZE:
            try:
                self.popitem(last=False)
            except KeyError:  # emptied meanwhile by another thread
                break

    def recall(self, key: Any, default: Any = None) -> Any:
        value = self.get(key, default)
        if value is not default:
            with contextlib.suppress(KeyError):  # forgotten meanwhile by another thread
                self.move_to_end(key)
        return value


def _provider_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


class _Unusable(Exception):
    """A response or cache file that is not what OpenRouter serves."""


class PriceCatalog:
    """OpenRouter prices for `compute_cost`, from the user's overrides, OpenRouter's API and offline data.

    - `overrides`: model id -> pricing (an OpenRouter pricing mapping or `ModelPricing`); always wins.
    - `api_base`: OpenRouter's API (default `OPENROUTER_API_BASE`, else `https://openrouter.ai/api/v1`).
    - `cache_dir`: where fetched prices are kept (default `$XDG_CACHE_HOME/langfuse-openrouter-callbacks`).
    - `ttl`: how long `/models` is trusted before a background refresh (default 24 h).
    - `offline`: never touch the network or the disk cache: overrides and genai-prices' data only.
    - `timeout`: seconds a fetch may take in all (default 5; a single read may overrun it once).

    No API key is needed or sent: OpenRouter's model and endpoint lists are public.
    """

    def __init__(
        self,
        overrides: Mapping[str, ModelPricing | Mapping[str, Any]] | None = None,
        *,
        api_base: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        ttl: timedelta | float = timedelta(hours=24),
        offline: bool = False,
        timeout: float = 5.0,
    ) -> None:
        self._overrides: dict[str, ModelPricing] = {
            model: ModelPricing.from_openrouter(pricing, source="override")
            for model, pricing in (overrides or {}).items()
        }
        self.api_base = (api_base or os.environ.get("OPENROUTER_API_BASE") or DEFAULT_API_BASE).rstrip("/")
        self.offline = offline
        self.ttl = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
        self.timeout = timeout
        cache_root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        # One folder per API base, so a test server's prices never mix with OpenRouter's.
        self._cache_dir = cache_root / hashlib.sha256(self.api_base.encode()).hexdigest()[:16]

        self._lock = threading.Lock()
        self._loaded = False  # the disk copy was read (or there is none to read) and the offline data loaded
        self._models: dict[str, ModelPricing] = {}
        self._aliases: dict[str, str] = {}  # canonical_slug (dated id) -> id
        self._models_fetched_at: float | None = None
        self._endpoints: dict[str, dict[str, ModelPricing]] = {}  # model id -> provider key -> pricing
        self._fallback = _Memo()  # model -> genai-prices' prices or None
        self._genai_aliases = _Memo()  # model -> genai-prices' id or None
        self._failed_at: dict[str, float] = {}
        self._warned: set[str] = set()
        # pricing_for's answers: (model, requested, provider) -> (prices, valid until (time.time()));
        # dropped whenever prices are installed (`_version` counts the installs).
        self._answers = _Memo()
        self._version = 0

        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._worker: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self._busy = 0

    # ------------------------------------------------------------------ public API

    @classmethod
    def shared(cls) -> PriceCatalog:
        """The process-wide catalog the handlers use when given none."""
        global _shared
        with _shared_lock:
            if _shared is None:
                _shared = cls()
            return _shared

    def pricing_for(
        self, model: str | None, provider: str | None = None, *, requested: str | None = None
    ) -> ModelPricing | None:
        """Prices for a call answered by `model`, served by `provider`, from memory only (never waits).

        `requested`: the id the call asked for. It stands in for `model` only when it is the same model
        under another name (a dated id, a variant suffix); a call routed to another model is priced as
        that model, or None (unpriced), never at the requested one's price. With no `model` (a response
        that names none), `requested` is the model.
        """
        if requested == model or not requested or not isinstance(requested, str):
            requested = None
        key = (model, requested, provider)
        now = time.time()
        answers = self._answers
        known = answers.get(key)
        if known is not None and known[1] > now:  # the usual case: the same models and provider as before
            try:  # noqa: SIM105 (the hot path: suppress() costs a context manager per call)
                answers.move_to_end(key)  # recently used: forgotten last
            except KeyError:  # forgotten meanwhile by another thread
                pass
            return known[0]
        version = self._version
        if not model or not isinstance(model, str):
            if requested is None:
                return None
            model, requested = requested, None
        found, valid_until = self._lookup(model, requested, provider, now)
        if valid_until > now:
            with self._lock:
                if self._version == version:  # nothing was installed meanwhile: the answer is current
                    self._answers.remember(key, (found, valid_until))
        return found

    def _lookup(
        self, model: str, requested: str | None, provider: str | None, now: float
    ) -> tuple[ModelPricing | None, float]:
        """The prices for `pricing_for`, and until when (`time.time()`) the answer stands unless prices
        are installed meanwhile: 0 while the lookup still waits for prices (loading, fetches queued or
        failed)."""
        valid_until = _FOREVER
        if not self._loaded:
            self._schedule(("load", ""))
            valid_until = 0.0
        candidates = [model]
        if requested is not None and self._same_model(model, requested):
            candidates.append(requested)
        if self._overrides:
            for m in candidates:
                found = self._override_for(m)
                if found is not None:
                    return found, valid_until
        if not self.offline:
            if self._loaded:
                valid_until = self._models_valid_until(now)
            ids = []
            for m in candidates:
                model_id = self._resolve(m)
                if model_id is not None:
                    ids.append(model_id)
            if provider:
                for model_id in ids:
                    found = self._endpoint_pricing(model_id, provider)
                    if found is not None:
                        return found, valid_until
                    if model_id not in self._endpoints:
                        valid_until = 0.0  # its endpoints' prices are still to come
            models = self._models
            for model_id in ids:
                found = models.get(model_id)
                if found is not None:
                    return found, valid_until
        for m in candidates:
            found = self._fallback_for(m)
            if found is not None:
                return found, valid_until
        return None, valid_until

    def preload(self) -> None:
        """Start loading prices on the background thread: the disk copy first, then the offline data,
        then a refresh if the copy is stale. Returns at once; the handlers call it when created."""
        if not self._loaded:
            self._schedule(("load", ""))

    def refresh(self) -> bool:
        """Fetch `/models` and the endpoints already known now, on this thread. True if `/models` loaded.

        Failures keep the prices already held, with one warning.
        """
        if self.offline:
            return False
        self._load()
        ok = self._run_task(("models", ""))
        with self._lock:
            known = list(self._endpoints)
        for model_id in known:
            self._run_task(("endpoints", model_id))
        return ok

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Wait for background work to finish; True if none is left. For tests and short scripts."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._busy or self._queued:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # ------------------------------------------------------------------ lookup levels

    def _same_model(self, answered: str, requested: str) -> bool:
        """Whether `requested` names the model that answered: the same `/models` id (through
        `canonical_slug` and variant suffixes), or, for ids `/models` does not list, genai-prices' id."""
        if _without_suffix(answered) == _without_suffix(requested):
            return True
        a, r = self._resolve(answered), self._resolve(requested)
        if a is not None and r is not None:
            return a == r
        a = a or self._genai_alias(_without_suffix(answered))
        r = r or self._genai_alias(_without_suffix(requested))
        return a is not None and a == r

    def _override_for(self, model: str) -> ModelPricing | None:
        overrides = self._overrides
        base = _without_suffix(model)
        for key in (model, base, self._aliases.get(model), self._aliases.get(base)):
            if key is not None and key in overrides:
                return overrides[key]
        alias = self._genai_alias(base)  # the offline alias last: the only lookup that is not a dict hit
        return overrides.get(alias) if alias is not None else None

    def _genai_alias(self, model: str) -> str | None:
        """genai-prices' id for `model` (which knows dated ids offline), remembered per model."""
        alias = self._genai_aliases.recall(model, _MISSING)
        if alias is not _MISSING:
            return alias
        if not _genai_prices.ready():
            return None  # not loaded yet: asked again once it is
        try:
            alias = _genai_prices.canonical_id(model)
        except Exception:
            alias = None
        self._genai_aliases.remember(model, alias)
        return alias

    def _resolve(self, model: str) -> str | None:
        models = self._models
        if model in models:
            return model
        alias = self._aliases.get(model)
        if alias is not None:
            return alias
        base = _without_suffix(model)
        if base in models:
            return base
        return self._aliases.get(base)

    def _endpoint_pricing(self, model_id: str, provider: str) -> ModelPricing | None:
        endpoints = self._endpoints.get(model_id)
        if endpoints is None:
            self._schedule(("endpoints", model_id))  # the disk copy, else OpenRouter
            return None
        return endpoints.get(_provider_key(provider))

    def _fallback_for(self, model: str) -> ModelPricing | None:
        found = self._fallback.recall(model, _MISSING)
        if found is not _MISSING:
            return found
        if not _genai_prices.ready():
            return None  # not loaded yet: asked again once it is
        found = _genai_prices.pricing_for(model)
        base = _without_suffix(model)
        if found is None and base != model:
            found = _genai_prices.pricing_for(base)
        self._fallback.remember(model, found)
        return found

    # ------------------------------------------------------------------ background work

    def _models_valid_until(self, now: float) -> float:
        """Until when (`time.time()`) the model list stands, 0 without one; a missing or stale list
        is fetched behind the scenes."""
        fetched = self._models_fetched_at
        valid_until = 0.0 if fetched is None else fetched + self.ttl
        if valid_until < now:
            self._schedule(("models", ""))
        return valid_until

    def _schedule(self, task: tuple[str, str]) -> None:
        failed = self._failed_at.get(task[0] + task[1])
        if failed is not None and time.monotonic() - failed < min(self.ttl, _RETRY_AFTER_FAILURE):
            return
        with self._lock:
            if task in self._queued:
                return
            self._queued.add(task)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._work, name="langfuse-openrouter-price-catalog", daemon=True
                )
                self._worker.start()
        self._queue.put(task)

    def _work(self) -> None:
        time.sleep(0.001)  # let the thread that started this one (waiting in start()) take the GIL first
        while True:
            try:
                task = self._queue.get(timeout=30)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            with self._lock:
                self._busy += 1
            try:
                self._run_task(task)
            except Exception:  # a bug of ours: the worker goes on, the lookups keep what they have
                logger.debug("price catalog task %s failed", task, exc_info=True)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._queued.discard(task)
                    self._idle.notify_all()

    def _run_task(self, task: tuple[str, str]) -> bool:
        kind, model_id = task
        if kind == "load":
            self._load()
            if not self.offline:
                self._models_valid_until(time.time())  # a missing or stale copy: fetched next
            return True
        fresh_on_disk = kind == "endpoints" and model_id not in self._endpoints
        if fresh_on_disk and self._load_endpoints_from_disk(model_id):
            return True  # nothing to fetch
        try:
            if kind == "models":
                self._fetch_models()
            else:
                self._fetch_endpoints(model_id)
        except Exception as exc:  # network, HTTP status, too big, too slow, bad JSON, an unknown shape
            self._failed_at[kind + model_id] = time.monotonic()
            what = "the model list" if kind == "models" else "endpoint prices"
            self._warn_once(
                f"fetch-{kind}",
                "could not fetch OpenRouter %s from %s (%s); using cached or offline prices",
                what,
                self.api_base,
                _describe(exc),
            )
            return False
        self._failed_at.pop(kind + model_id, None)
        return True

    def _load(self) -> None:
        """The disk copy of `/models` (what a warm start needs), then genai-prices' data. Once; on the
        background thread (or in `refresh`)."""
        if self._loaded:
            return
        if not self.offline:
            self._load_models_from_disk()
        _genai_prices.load()
        with self._lock:
            self._loaded = True
            self._forget_answers()  # answers given while loading were not remembered; now they may be

    def _get_json(self, path: str, limit: int) -> Any:
        """GET `path` as JSON, abandoned past `limit` bytes or `timeout` seconds in all."""
        import httpx  # imported on the background thread, not at package import

        deadline = time.monotonic() + self.timeout
        with httpx.stream(
            "GET", self.api_base + path, timeout=self.timeout, headers={"Accept": "application/json"}
        ) as response:
            response.raise_for_status()
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _Unusable(f"{path} is {int(declared):,} bytes, more than the {limit:,} bytes accepted")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise _Unusable(f"{path} is more than the {limit:,} bytes accepted")
                if time.monotonic() > deadline:
                    raise _Unusable(f"{path} took more than {self.timeout:g} s")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise _Unusable(f"invalid JSON from {path}") from exc

    def _fetch_models(self) -> None:
        body = self._get_json("/models", MAX_MODELS_BYTES)
        entries = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(entries, list):
            raise _Unusable("/models answered without a data list")
        kept = [_trim_model(e) for e in entries if isinstance(e, Mapping)]
        self._install_models(kept, time.time())
        self._write_cache("models.json", {"fetched_at": time.time(), "data": kept})

    def _fetch_endpoints(self, model_id: str) -> None:
        body = self._get_json(f"/models/{quote(model_id, safe='/')}/endpoints", MAX_ENDPOINTS_BYTES)
        data = body.get("data") if isinstance(body, Mapping) else None
        endpoints = data.get("endpoints") if isinstance(data, Mapping) else None
        if not isinstance(endpoints, list):
            raise _Unusable(f"/models/{model_id}/endpoints answered without an endpoints list")
        kept = [_trim_endpoint(e) for e in endpoints if isinstance(e, Mapping)]
        self._install_endpoints(model_id, kept)
        self._write_cache(_endpoints_file(model_id), {"fetched_at": time.time(), "endpoints": kept})

    # ------------------------------------------------------------------ parsing and installing

    def _install_models(self, entries: list[dict[str, Any]], fetched_at: float) -> None:
        models: dict[str, ModelPricing] = {}
        aliases: dict[str, str] = {}
        rejected: list[str] = []
        for entry in entries:
            model_id = entry.get("id")
            if not isinstance(model_id, str) or not isinstance(entry.get("pricing"), Mapping):
                continue
            try:
                models[model_id] = ModelPricing.from_openrouter(entry["pricing"], source="models")
            except PricingError as exc:
                if "variable pricing" not in str(exc):  # e.g. openrouter/auto: priced per routed call
                    rejected.append(f"{model_id} ({exc})")
                continue
            slug = entry.get("canonical_slug")
            if isinstance(slug, str) and slug and slug != model_id:
                aliases.setdefault(slug, model_id)
        if rejected:
            logger.warning(
                "OpenRouter price list: %d model(s) with unusable prices ignored: %s",
                len(rejected),
                "; ".join(rejected[:5]),
            )
        with self._lock:
            self._models, self._aliases, self._models_fetched_at = models, aliases, fetched_at
            self._forget_answers()

    def _install_endpoints(self, model_id: str, entries: list[dict[str, Any]]) -> None:
        by_provider: dict[str, ModelPricing] = {}
        for entry in entries:
            names = [n for n in (entry.get("provider_name"), entry.get("tag"), entry.get("name")) if n]
            if not names or not isinstance(entry.get("pricing"), Mapping):
                continue
            try:
                pricing = ModelPricing.from_openrouter(
                    entry["pricing"], source=f"endpoint:{entry.get('provider_name') or names[0]}"
                )
            except PricingError as exc:
                self._warn_once(
                    "endpoint-pricing", "OpenRouter endpoint prices for %s ignored: %s", model_id, exc
                )
                continue
            for name in names:
                by_provider.setdefault(_provider_key(str(name)), pricing)
        with self._lock:
            self._endpoints[model_id] = by_provider
            self._forget_answers()

    def _forget_answers(self) -> None:
        """Called with the lock held, when prices change: earlier answers may be stale."""
        self._version += 1
        self._answers = _Memo()

    # ------------------------------------------------------------------ disk cache (background thread)

    def _load_models_from_disk(self) -> None:
        cached = self._read_cache("models.json", MAX_MODELS_BYTES)
        if cached is None:
            return
        entries, fetched_at = cached.get("data"), _timestamp(cached.get("fetched_at"))
        if not isinstance(entries, list) or fetched_at is None:
            self._warn_unknown_shape("models.json")
            return
        self._install_models([e for e in entries if isinstance(e, dict)], fetched_at)

    def _load_endpoints_from_disk(self, model_id: str) -> bool:
        """Install the disk copy of `model_id`'s endpoints; True if it is fresh (nothing to fetch)."""
        cached = self._read_cache(_endpoints_file(model_id), MAX_ENDPOINTS_BYTES)
        if cached is None:
            return False
        entries, fetched_at = cached.get("endpoints"), _timestamp(cached.get("fetched_at"))
        if not isinstance(entries, list) or fetched_at is None:
            self._warn_unknown_shape(_endpoints_file(model_id))
            return False
        self._install_endpoints(model_id, [e for e in entries if isinstance(e, dict)])
        return time.time() - fetched_at <= self.ttl  # stale: used, and fetched again

    def _read_cache(self, name: str, limit: int) -> dict[str, Any] | None:
        """A cache file's JSON, or None: missing, not a regular file (a FIFO would block), larger than
        `limit` bytes, unreadable or of unknown shape (the last four with one warning)."""
        path = self._cache_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # opening a FIFO must not wait
        except (FileNotFoundError, NotADirectoryError):  # nothing cached (yet)
            return None
        except OSError as exc:
            self._warn_once("disk-read", "ignoring unreadable price cache %s (%s)", path, _describe(exc))
            return None
        try:
            with open(fd, "rb") as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    self._warn_once("disk-read", "ignoring a price cache that is not a file: %s", path)
                    return None
                if info.st_size > limit:
                    self._warn_once(
                        "disk-read",
                        "ignoring a price cache of %s bytes, more than the %s accepted: %s",
                        f"{info.st_size:,}",
                        f"{limit:,}",
                        path,
                    )
                    return None
                body = json.loads(f.read(limit + 1))
        except (OSError, ValueError) as exc:
            self._warn_once("disk-read", "ignoring unreadable price cache %s (%s)", path, _describe(exc))
            return None
        if not isinstance(body, dict) or body.get("format") != _CACHE_FORMAT:
            self._warn_unknown_shape(name)
            return None
        return body

    def _warn_unknown_shape(self, name: str) -> None:
        path = self._cache_dir / name
        self._warn_once("disk-read", "ignoring a price cache file of unknown shape: %s", path)

    def _write_cache(self, name: str, body: dict[str, Any]) -> None:
        path = self._cache_dir / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"format": _CACHE_FORMAT, **body}, f, separators=(",", ":"))
                os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            self._warn_once(
                "disk-write",
                "could not write the price cache in %s (%s); prices kept in memory only",
                path.parent,
                _describe(exc),
            )

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        log: Callable[..., None] = logger.debug if kind in self._warned else logger.warning
        self._warned.add(kind)
        log(message, *args)


_MISSING = object()


def _timestamp(value: Any) -> float | None:
    """A cache file's `fetched_at`: a finite number of seconds, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _describe(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, _Unusable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _trim_model(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("id", "canonical_slug", "pricing") if k in entry}


def _trim_endpoint(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("name", "provider_name", "tag", "pricing") if k in entry}


def _endpoints_file(model_id: str) -> str:
    return "endpoints/" + quote(model_id, safe="") + ".json"


_shared: PriceCatalog | None = None
_shared_lock = threading.Lock()
