"""The cache doctor: why a call read nothing from the prompt cache, decided by rules written once here.

Calls are grouped into threads: one conversation (Langfuse session id, else trace id, else user and model)
and one model. Within a thread, a call that read nothing from the cache gets at most one cause, decided
from the call before it (`previous`) and the last earlier call that read or wrote the cache (`last_touch`):

1. `below_minimum`: it repeats the previous call's prefix but its prompt is shorter than the model's
   minimum cacheable length.
2. `not_enabled`: a model whose cache needs breakpoints, a repeated prefix at least that long, and the
   request carried no `cache_control` breakpoint: nothing written, nothing read.
3. With a `last_touch`: `provider_switch` when it was served by another provider than `last_touch`;
   `expired` when more than the cache lifetime passed since `last_touch`; `prefix_changed` when its
   prompt does not start with `last_touch`'s prompt. When a provider is unknown these three cannot be
   decided: the call is counted as undecided.
4. `write_unread` (only for calls without another cause): it read nothing and paid a cache write that no
   later call read within the lifetime on the same provider: neither a call of its thread nor, since a
   provider's cache is keyed by the prompt and not by the conversation, a call of another thread with
   the same model and the same first prefix hash. (A hit that also writes the conversation's new turn
   is a working cache, even when the conversation ends there.)

What a miss lost: the call's cost minus its cost had the cache hit (the prefix `last_touch` had cached,
or for 1-2 the prefix shared with the previous call, read instead of paid in full), both by
`compute_cost` from the prices in force; for `write_unread` the write premium (the written tokens at the
write price instead of the plain prompt price). Never negative.

The pages of generations come newest first, so the rules run backwards: a thread keeps its oldest call
seen so far (waiting for its previous call), the calls still waiting for a `last_touch`, and when each
provider's cache was next read. Memory is one page plus that per thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from ..cost import compute_cost
from ..pricing import ModelPricing
from ..usage import OpenRouterUsage
from ._cache_facts import CacheFacts, facts_for
from ._model import CAUSES, CacheMiss, ExampleCall, Undecided

__all__ = ["ADVICE", "Call", "Doctor"]

_ZERO = Decimal(0)
_EXAMPLES = 5

ADVICE = {
    "provider_switch": "Keep the conversation on one provider: send a session_id (sticky routing), or set "
    "provider.order with allow_fallbacks: false.",
    "expired": "Calls came after the cache lifetime: use the 1-hour cache (cache_control ttl: 1h) for slow "
    "conversations, or keep the gaps under the lifetime.",
    "prefix_changed": "Keep the start of the prompt byte-identical: move timestamps, user ids and other "
    "changing text after the cached part, and keep the tools in a fixed order.",
    "below_minimum": "These prompts are shorter than the model's minimum cacheable length: nothing can be "
    "cached until the repeated prefix is longer (or merge the small calls).",
    "not_enabled": "Add a cache_control breakpoint at the end of the repeated prefix (system prompt, tools, "
    "documents): this model caches only what is marked.",
    "write_unread": "A cache write was paid and never read: put the breakpoint only on prefixes that are "
    "reused within the lifetime, or drop it for one-off prompts.",
}
_PROVIDER_CAUSES = ("provider_switch", "expired", "prefix_changed")

Prices = Callable[[str, str | None, str | None], ModelPricing | None]


@dataclass(slots=True, eq=False)
class Call:
    """What the doctor needs of one generation (no prompt content: prefix hashes only)."""

    id: str
    trace_id: str
    url: str | None
    start: float  # seconds since the epoch
    thread: tuple[str, ...]
    model: str
    answered_model: str | None
    provider: str | None
    prompt: int
    read: int
    write: int
    completion: int
    cache_control: bool
    hashes: tuple[str, ...] | None
    ttl: float | None  # seconds, when the request asked for a lifetime
    groups: tuple[tuple[str, str], ...]  # (dimension, key) pairs the call's lost dollars count towards
    # set while diagnosing
    shared: int = 0  # prompt tokens shared with the previous call (estimate)
    touched: int = 0  # prompt tokens the last call that touched the cache read or wrote
    repeated: bool = False
    write_unread: bool = False


@dataclass(slots=True)
class _Thread:
    oldest: Call | None = None
    waiting: list[Call] = field(default_factory=list)
    next_read: dict[str | None, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    prompt_tokens: int = 0
    lost: Decimal = _ZERO
    unpriced: int = 0
    examples: list[ExampleCall] = field(default_factory=list)


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _lifetime(call: Call, facts: CacheFacts | None) -> float:
    if call.ttl:
        return call.ttl
    return facts.lifetime.total_seconds() if facts else 300.0


class Doctor:
    """Diagnoses the calls fed newest first (`add`), then `result()` gives the misses per cause.

    `prices(model, answered_model, provider)` gives the prices in force for a call (None: unpriced).
    """

    def __init__(self, prices: Prices) -> None:
        self._prices = prices
        self._threads: dict[tuple[str, ...], _Thread] = {}
        self._tallies = {cause: _Tally() for cause in CAUSES}
        self._undecided = 0
        # (model, provider, first prefix hash) -> when a cache read of that prefix came next (any thread)
        self._next_prefix_read: dict[tuple[str, str | None, str], float] = {}
        self.lost_by: dict[tuple[str, str], Decimal] = {}
        self.calls = 0

    # -- feeding -----------------------------------------------------------------------------------

    def add(self, call: Call) -> None:
        """One call, older than every call added before in its thread."""
        self.calls += 1
        thread = self._threads.get(call.thread)
        if thread is None:
            thread = self._threads[call.thread] = _Thread()
        facts = facts_for(call.model)
        prefix = (call.model, call.provider, call.hashes[0]) if call.hashes else None
        if call.write and not call.read:
            lifetime = _lifetime(call, facts)
            read_at = self._next_read(thread, call.provider)
            elsewhere = self._next_prefix_read.get(prefix) if prefix is not None else None
            call.write_unread = (read_at is None or read_at - call.start > lifetime) and (
                elsewhere is None or elsewhere - call.start > lifetime
            )
        if call.read:
            thread.next_read[call.provider] = call.start
            if prefix is not None:
                self._next_prefix_read[prefix] = call.start
        newer = thread.oldest
        if newer is not None:  # `call` is the previous call of `newer`
            self._after_previous(thread, newer, call)
        if call.read or call.write:  # the last earlier call that touched the cache of every waiting call
            for waiting in thread.waiting:
                waiting.touched = call.read + call.write
                self._decide(waiting, self._touch_cause(waiting, call))
            thread.waiting.clear()
        thread.oldest = call

    @staticmethod
    def _next_read(thread: _Thread, provider: str | None) -> float | None:
        if provider is not None:
            return thread.next_read.get(provider, thread.next_read.get(None))
        return min(thread.next_read.values(), default=None)

    def _after_previous(self, thread: _Thread, call: Call, previous: Call) -> None:
        if call.read:
            self._decide(call, None)
            return
        if call.hashes is not None and previous.hashes is not None:
            k = _common_prefix(previous.hashes, call.hashes)
            call.repeated = k > 0
            if k >= len(previous.hashes):
                call.shared = min(previous.prompt, call.prompt)
            elif call.hashes:
                call.shared = call.prompt * k // len(call.hashes)
        cause = self._previous_cause(call)
        if cause is not None:
            self._decide(call, cause)
        else:
            thread.waiting.append(call)

    @staticmethod
    def _previous_cause(call: Call) -> str | None:
        """Rules 1 and 2: what the previous call alone decides."""
        facts = facts_for(call.model)
        if facts is None or not call.repeated:
            return None
        minimum = facts.minimum_tokens
        if minimum is not None and call.prompt < minimum:
            return "below_minimum"
        if facts.explicit and not call.cache_control and not call.write:
            return "not_enabled"
        return None

    def _touch_cause(self, call: Call, touch: Call) -> str | None:
        """Rule 3: what the last call that touched the cache decides; "" when a provider is unknown."""
        if call.provider is None or touch.provider is None:
            return ""
        if call.provider != touch.provider:
            return "provider_switch"
        if call.start - touch.start > _lifetime(touch, facts_for(touch.model)):
            return "expired"
        if (
            call.hashes is not None
            and touch.hashes is not None
            and _common_prefix(touch.hashes, call.hashes) < len(touch.hashes)
        ):
            return "prefix_changed"
        return None

    # -- deciding ----------------------------------------------------------------------------------

    def _decide(self, call: Call, cause: str | None) -> None:
        if cause == "":
            self._undecided += 1
            cause = None
        if cause is None and call.write_unread:
            cause = "write_unread"
        if cause is None:
            return
        tally = self._tallies[cause]
        tally.calls += 1
        tally.prompt_tokens += call.prompt
        if len(tally.examples) < _EXAMPLES:
            tally.examples.append(ExampleCall(call.id, call.trace_id, call.url))
        lost = self._lost(call, cause)
        if lost is None:
            tally.unpriced += 1
            return
        tally.lost += lost
        for key in call.groups:
            self.lost_by[key] = self.lost_by.get(key, _ZERO) + lost

    def _lost(self, call: Call, cause: str) -> Decimal | None:
        prices = self._prices(call.model, call.answered_model, call.provider)
        if prices is None or not prices.is_priced:
            return None
        if cause == "write_unread":
            read, write = call.read, 0  # the written tokens at the plain prompt price
        else:
            hit = min(call.touched if cause in _PROVIDER_CAUSES else call.shared, call.prompt)
            read = call.read + hit
            write = max(0, call.write - hit)
            read = min(read, call.prompt - write)
        actual = compute_cost(_usage(call, call.read, call.write), prices).total
        had_hit = compute_cost(_usage(call, read, write), prices).total
        return max(_ZERO, actual - had_hit)

    def result(self) -> tuple[tuple[CacheMiss, ...], tuple[Undecided, ...]]:
        """The misses per cause (causes without calls left out) and what could not be decided."""
        for thread in self._threads.values():
            if thread.oldest is not None:  # the first call of its thread: nothing before it
                self._decide(thread.oldest, None)
            for waiting in thread.waiting:  # no earlier call touched the cache
                self._decide(waiting, None)
            thread.oldest = None
            thread.waiting.clear()
        misses = tuple(
            CacheMiss(
                cause=cause,
                calls=t.calls,
                prompt_tokens=t.prompt_tokens,
                lost_usd=t.lost,
                examples=tuple(t.examples),
                advice=ADVICE[cause],
                unpriced=t.unpriced,
            )
            for cause, t in self._tallies.items()
            if t.calls
        )
        undecided = ()
        if self._undecided:
            reason = "the serving provider is not recorded for them or for the call that last used the cache"
            undecided = (Undecided(_PROVIDER_CAUSES, self._undecided, reason),)
        return misses, undecided


def _usage(call: Call, read: int, write: int) -> OpenRouterUsage:
    return OpenRouterUsage(
        prompt_tokens=call.prompt,
        completion_tokens=call.completion,
        cached_tokens=read,
        cache_write_tokens=write,
    )
