"""The demo's cache misses: three conversations whose prompt cache saved less than it could, each for a
reason the savings report's cache-miss section names, with the dollars it lost.

- `provider_switch`: a conversation's follow-up is routed to another provider (`provider.order` names
  Amazon Bedrock), which holds none of the cache Anthropic wrote: it pays the write again.
- `expired`: a follow-up comes after the cache's 5-minute lifetime (simulated time: the embedded
  OpenRouter's clock, and the generations' timestamps, are moved back for the first call; nothing sleeps).
- `not_enabled`: the same long prompt asked three times without a `cache_control` breakpoint, on a model
  that caches only what is marked: nothing written, nothing read.

Each conversation is a Langfuse session of its own (`demo-cache-miss-...`), with its own prompt so that
no cache is shared with the rest of the demo. The LangChain handler looks up OpenRouter's `/generation`
records, which give back the serving provider LangChain drops. Against the real OpenRouter the expired
cache cannot be simulated: that conversation is left out.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

SESSIONS = {
    "provider_switch": "demo-cache-miss-provider-switch",
    "expired": "demo-cache-miss-expired",
    "not_enabled": "demo-cache-miss-no-breakpoint",
}
FIRST_QUESTION = "Can I return opened software?"
FOLLOW_UP = "And how long does the refund take?"
#: The demo table's framework column for these calls, and how many calls there are (embedded OpenRouter).
FRAMEWORK = "LangChain (misses)"
CALLS = 7
EXPIRED_AFTER = 6 * 60  # seconds between the two calls of the expired conversation (lifetime: 5 minutes)
_ROLES = {
    "provider_switch": "You answer for the returns desk.",
    "expired": "You answer for the warranty desk.",
    "not_enabled": "You answer for the shipping desk.",
}


def run_cache_misses(services: Any) -> None:
    """The three conversations through `services` (a `DemoServices`), each announced by `services.calling`."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_openai import ChatOpenAI

    from ..generation_stats import GenerationStatsFetcher
    from ..langchain import CallbackHandler
    from .run import ANTHROPIC_MODEL, handbook

    embedded = services.embedded_openrouter
    fetcher = GenerationStatsFetcher(  # the embedded OpenRouter has each record at once
        services.openrouter_key,
        api_base=services.openrouter_base,
        initial_delay=0.5 if embedded is None else 0.0,
    )
    handler = CallbackHandler(
        public_key=services.public_key,
        price_catalog=services.catalog,
        savings_score=True,
        generation_stats_fetcher=fetcher,
    )
    if embedded is not None:
        services.tracer_provider.add_span_processor(_SimulatedTime(embedded))
    document = handbook()

    def system(cause: str, *, breakpoint: bool = True) -> SystemMessage:
        text = f"{_ROLES[cause]}\n\n{document}"
        if not breakpoint:
            return SystemMessage(content=text)
        return SystemMessage(content=[{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}])

    def ask(cause: str, messages: list[Any], **routing: Any) -> str:
        services.calling(FRAMEWORK, ANTHROPIC_MODEL, f"cache miss: {cause.replace('_', ' ')}")
        chain = (
            ChatOpenAI(
                base_url=services.openrouter_base,
                api_key=services.openrouter_key,
                model=ANTHROPIC_MODEL,
                max_tokens=200,
                max_retries=1,
                extra_body=routing or None,
            )
            | StrOutputParser()
        )  # a chain: Langfuse sets the session on the trace (on an LLM alone, only in
        # its metadata, which Langfuse's server then stores as the JSON string, quotes and all)
        config = {"callbacks": [handler], "metadata": {"langfuse_session_id": SESSIONS[cause]}}
        answer = chain.invoke(messages, config=config)
        handler.flush()  # the /generation record is in before the clock moves
        return answer

    try:
        # Anthropic writes the cache; the follow-up is sent to Amazon Bedrock, which has none of it.
        first = [system("provider_switch"), HumanMessage(content=FIRST_QUESTION)]
        answer = ask("provider_switch", first, provider={"order": ["anthropic"]})
        follow_up = [*first, AIMessage(content=answer), HumanMessage(content=FOLLOW_UP)]
        ask("provider_switch", follow_up, provider={"order": ["amazon-bedrock"], "allow_fallbacks": False})

        if embedded is not None:  # the first call six minutes ago (simulated), then the follow-up now
            first = [system("expired"), HumanMessage(content=FIRST_QUESTION)]
            embedded.clock_offset = -EXPIRED_AFTER
            try:
                answer = ask("expired", first)
            finally:
                embedded.clock_offset = 0.0
            ask("expired", [*first, AIMessage(content=answer), HumanMessage(content=FOLLOW_UP)])

        # The same long prompt three times, and no breakpoint: Anthropic caches nothing.
        for question in (FIRST_QUESTION, FOLLOW_UP, "Do you ship to Norway?"):
            ask("not_enabled", [system("not_enabled", breakpoint=False), HumanMessage(content=question)])
    finally:
        fetcher.close()


class _SimulatedTime(SpanProcessor):
    """Moves the start and end of each span started while the embedded OpenRouter's clock is moved
    (`clock_offset`) by as much, so the generations Langfuse stores carry the time that clock showed.

    OpenTelemetry's SDK lets a processor change a span when it starts (`on_start`) and while it ends
    (`_on_ending`, before it becomes read-only); the times are its `_start_time` and `_end_time`
    (checked by `tests/test_demo.py`).
    """

    def __init__(self, server: Any) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._moved: dict[int, int] = {}  # span id -> nanoseconds its times move

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        offset = self._server.clock_offset
        if not offset:
            return
        shift = int(offset * 1e9)
        with self._lock:
            self._moved[span.context.span_id] = shift
        span._start_time += shift

    def _on_ending(self, span: Any) -> None:
        with self._lock:
            shift = self._moved.pop(span.context.span_id, 0)
        if shift and span._end_time is not None:
            span._end_time += shift
