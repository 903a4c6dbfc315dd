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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

__all__ = ["PromptFingerprint", "fingerprint"]

_HEX_DIGITS = 12
_CACHE_CONTROL = "cache_control"
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=lambda value: type(value).__name__
).encode


@dataclass(frozen=True, slots=True)
class PromptFingerprint:
    """`cache_control`: the request carried a breakpoint (on a content part, a message, or top-level);
    `prefix_hashes[i]`: the hash of the tools and messages `0..i`."""

    cache_control: bool
    prefix_hashes: tuple[str, ...]


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
    asked = cache_control is not None
    hashes = []
    for message in messages:
        if isinstance(message, Mapping):
            asked = _update(hasher, message) or asked
        else:
            hasher.update(b"?" + type(message).__name__.encode())
        hashes.append(hasher.copy().hexdigest()[:_HEX_DIGITS])
    return PromptFingerprint(asked, tuple(hashes))


def _update(hasher: Any, message: Mapping[str, Any]) -> bool:
    """Hash one message onto `hasher`; whether it carries a breakpoint."""
    asked = message.get(_CACHE_CONTROL) is not None
    role, content = message.get("role"), message.get("content")
    hasher.update(b"\x1eR" + (role if isinstance(role, str) else _canonical(role)).encode())
    if isinstance(content, str):
        _text(hasher, content)
    elif isinstance(content, (list, tuple)):
        for part in content:
            if isinstance(part, str):
                _text(hasher, part)
                continue
            if not isinstance(part, Mapping):
                hasher.update(b"\x1fP" + _canonical(part).encode())
                continue
            asked = asked or part.get(_CACHE_CONTROL) is not None
            text = part.get("text")
            if part.get("type", "text") == "text" and isinstance(text, str):
                _text(hasher, text)
            else:
                rest = {k: v for k, v in part.items() if k != _CACHE_CONTROL}
                hasher.update(b"\x1fP" + _canonical(rest).encode())
    elif content is not None:
        hasher.update(b"\x1fC" + _canonical(content).encode())
    if len(message) > 2 or not _MESSAGE_KEYS.issuperset(message):
        extra = {k: v for k, v in message.items() if k not in _MESSAGE_KEYS and v is not None}
        if extra:
            hasher.update(b"\x1fX" + _canonical(extra).encode())
    return asked


def _text(hasher: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    hasher.update(b"\x1fT%d:" % len(data))
    hasher.update(data)


_MESSAGE_KEYS = frozenset({"role", "content", _CACHE_CONTROL})
