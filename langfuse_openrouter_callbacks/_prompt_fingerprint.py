"""A prompt's fingerprint: whether it asks for caching, and short hashes of its growing prefix.

What the cache-miss diagnosis compares between two calls of a conversation without their text (so it
also works when Langfuse masks the inputs): hash `i` covers the request's tools and messages `0..i`,
so two calls share hashes exactly as far as their prompts share a prefix. Framework-neutral: messages
are plain dicts (`role`, `content` a str or a list of parts, other keys such as `tool_calls` kept),
tools plain dicts, as OpenRouter's chat API takes them.

The serialization hashed is canonical: `cache_control` markers are left out (adding a breakpoint does
not change the prefix a provider caches), a str content hashes as one text part, and dict keys are
sorted. Hashes are the first 12 hex digits of SHA-256 (48 bits; SHA-256 is twice as fast as BLAKE2b
where the CPU has SHA instructions): collisions between the few calls of one
conversation are out of reach, and nothing of the text can be recovered from them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from hashlib import sha256
from typing import Any, NamedTuple

__all__ = ["PromptFingerprint", "fingerprint"]

_HEX_DIGITS = 12
_CACHE_CONTROL = "cache_control"
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=lambda value: type(value).__name__
).encode


class PromptFingerprint(NamedTuple):
    """`cache_control`: the request carried a breakpoint (on a content part, a message, or top-level);
    `cache_ttl`: the longest lifetime a breakpoint named (`"ttl": "1h"` is 3600 s), else None;
    `prefix_hashes[i]`: the hash of the tools and messages `0..i`."""

    cache_control: bool
    prefix_hashes: tuple[str, ...]
    cache_ttl: int | None = None


def fingerprint(
    messages: Sequence[Any], tools: Sequence[Any] | None = None, *, cache_control: Any = None
) -> PromptFingerprint:
    """The fingerprint of a chat request: its `messages`, `tools` and top-level `cache_control`.

    One pass over the messages; each hash continues the previous one. Entries that are not dicts are
    hashed by their type name (never their text, never `str()` of them).
    """
    hasher = sha256()
    if tools:
        hasher.update(b"T" + _canonical(list(tools)).encode())
    breakpoints = [cache_control] if cache_control is not None else []
    hashes = []
    for message in messages:
        if type(message) is dict or isinstance(message, Mapping):
            _update(hasher, message, breakpoints)
        else:
            hasher.update(b"?" + type(message).__name__.encode())
        hashes.append(hasher.copy().hexdigest()[:_HEX_DIGITS])
    if not breakpoints:
        return PromptFingerprint(False, tuple(hashes))
    ttls = [ttl for marker in breakpoints if (ttl := _ttl(marker)) is not None]
    return PromptFingerprint(True, tuple(hashes), max(ttls) if ttls else None)


def _ttl(marker: Any) -> int | None:
    """The lifetime a breakpoint names, in seconds (`"5m"`, `"1h"`, `"300s"`), else None."""
    ttl = marker.get("ttl") if isinstance(marker, Mapping) else None
    match = _TTL.fullmatch(ttl) if isinstance(ttl, str) else None
    return int(match[1]) * _UNITS[match[2]] if match else None


def _update(hasher: Any, message: Mapping[str, Any], breakpoints: list[Any]) -> None:
    """Hash one message onto `hasher`; its breakpoints join `breakpoints`."""
    if (marker := message.get(_CACHE_CONTROL)) is not None:
        breakpoints.append(marker)
    role, content = message.get("role"), message.get("content")
    role_bytes = b"\x1eR" + (role if isinstance(role, str) else _canonical(role)).encode()
    if isinstance(content, str):  # the usual message: one update
        data = content.encode("utf-8", "surrogatepass")
        hasher.update(b"%s\x1fT%d:%s" % (role_bytes, len(data), data))
    elif isinstance(content, (list, tuple)):
        hasher.update(role_bytes)
        for part in content:
            if isinstance(part, str):
                _text(hasher, part)
                continue
            if not isinstance(part, Mapping):
                hasher.update(b"\x1fP" + _canonical(part).encode())
                continue
            if (marker := part.get(_CACHE_CONTROL)) is not None:
                breakpoints.append(marker)
            text = part.get("text")
            if part.get("type", "text") == "text" and isinstance(text, str):
                _text(hasher, text)
            else:
                rest = {k: v for k, v in part.items() if k != _CACHE_CONTROL}
                hasher.update(b"\x1fP" + _canonical(rest).encode())
    else:
        hasher.update(role_bytes if content is None else role_bytes + b"\x1fC" + _canonical(content).encode())
    if len(message) > 2 or not _MESSAGE_KEYS.issuperset(message):
        extra = {k: v for k, v in message.items() if k not in _MESSAGE_KEYS and v is not None}
        if extra:
            hasher.update(b"\x1fX" + _canonical(extra).encode())


def _text(hasher: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    hasher.update(b"\x1fT%d:" % len(data))
    hasher.update(data)


_TTL = re.compile(r"(\d{1,6})([smh])")
_UNITS = {"s": 1, "m": 60, "h": 3600}
_MESSAGE_KEYS = frozenset({"role", "content", _CACHE_CONTROL})
