"""What each model family's prompt cache does, as data with its sources: the doctor's only provider facts.

A row applies to the model ids starting with `prefix` (the longest matching prefix wins). `explicit`: the
cache needs `cache_control` breakpoints (without them nothing is written or read); `lifetime`: how long an
entry lives after its last use with the default breakpoint; `minimum_tokens`: the shortest prompt that can
be cached (None: not documented); `write_premium`: the cache-write price over the input price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

__all__ = ["CACHE_FACTS", "CacheFacts", "facts_for"]

_ANTHROPIC = (
    "OpenRouter prompt-caching docs; Anthropic prompt-caching docs (minimum cacheable prompt per model, "
    "5-minute default lifetime refreshed on use, 1.25x write); shared/reference/openrouter.md sections 4, 9"
)
_OPENAI = (
    "OpenAI prompt-caching docs (automatic from 1024 tokens, 5-10 min idle); openrouter.md sections 4, 9"
)
_GEMINI = "Google Gemini context-caching docs (implicit on 2.5: 1028 Flash / 2048 Pro); openrouter.md 4, 9"
_DEEPSEEK = "DeepSeek context-caching docs (automatic, 64-token units, hours); openrouter.md sections 4, 9"
_AUTOMATIC = "OpenRouter prompt-caching docs (automatic, free writes, minutes); openrouter.md sections 4, 9"
_QWEN = "OpenRouter prompt-caching docs (Alibaba Qwen: explicit cache_control, 1.25x write); openrouter.md 4"


@dataclass(frozen=True)
class CacheFacts:
    """One model family's caching rules (see the module docs)."""

    prefix: str
    explicit: bool
    lifetime: timedelta
    minimum_tokens: int | None
    write_premium: Decimal
    source: str


_FIVE_MINUTES = timedelta(minutes=5)

CACHE_FACTS: tuple[CacheFacts, ...] = (
    CacheFacts("anthropic/", True, _FIVE_MINUTES, 1024, Decimal("1.25"), _ANTHROPIC),
    CacheFacts("anthropic/claude-opus-4.5", True, _FIVE_MINUTES, 4096, Decimal("1.25"), _ANTHROPIC),
    CacheFacts("anthropic/claude-opus-4.6", True, _FIVE_MINUTES, 4096, Decimal("1.25"), _ANTHROPIC),
    CacheFacts("anthropic/claude-haiku-4.5", True, _FIVE_MINUTES, 4096, Decimal("1.25"), _ANTHROPIC),
    CacheFacts("anthropic/claude-3.5-haiku", True, _FIVE_MINUTES, 2048, Decimal("1.25"), _ANTHROPIC),
    CacheFacts("anthropic/claude-3-haiku", True, _FIVE_MINUTES, 2048, Decimal("1.25"), _ANTHROPIC),
    CacheFacts("openai/", False, _FIVE_MINUTES, 1024, Decimal(1), _OPENAI),
    CacheFacts("google/gemini", False, _FIVE_MINUTES, 1028, Decimal(1), _GEMINI),
    CacheFacts("google/gemini-2.5-pro", False, _FIVE_MINUTES, 2048, Decimal(1), _GEMINI),
    CacheFacts("deepseek/", False, timedelta(hours=1), 64, Decimal(1), _DEEPSEEK),
    CacheFacts("x-ai/", False, _FIVE_MINUTES, None, Decimal(1), _AUTOMATIC),
    CacheFacts("moonshotai/", False, _FIVE_MINUTES, None, Decimal(1), _AUTOMATIC),
    CacheFacts("qwen/", True, _FIVE_MINUTES, None, Decimal("1.25"), _QWEN),
)

_BY_LENGTH = sorted(CACHE_FACTS, key=lambda facts: len(facts.prefix), reverse=True)
_KNOWN: dict[str, CacheFacts | None] = {}


def facts_for(model: str | None) -> CacheFacts | None:
    """The rules for `model` (an OpenRouter id, `:variant` ignored); None for a family not listed."""
    if not model:
        return None
    try:
        return _KNOWN[model]
    except KeyError:
        pass
    name = model.split(":", 1)[0].lower()
    found = next((facts for facts in _BY_LENGTH if name.startswith(facts.prefix)), None)
    if len(_KNOWN) < 4096:
        _KNOWN[model] = found
    return found
