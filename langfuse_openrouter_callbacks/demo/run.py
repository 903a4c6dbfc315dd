"""Runs the demo's calls and collects, for each generation, what was exported to Langfuse."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

from .._extras import requires_extra
from ..catalog import DEFAULT_API_BASE, PriceCatalog
from ..langfuse_fields import read_generation
from .cache_misses import run_cache_misses

ANTHROPIC_MODEL = "anthropic/claude-sonnet-4.5"
OPENAI_MODEL = "openai/gpt-4.1-mini"
QUESTIONS = [
    "How long do refunds take?",
    "Do orders to Austria ship for free?",
    "Can I still change my delivery address?",
]
RAG_QUESTIONS = [
    "When is customer support open?",
    "Do gift cards expire?",
    "What does a warranty claim need?",
]
_EMBEDDED_OPENROUTER_KEY = "sk-or-embedded-demo"
EMBEDDED_LANGFUSE_KEYS = ("pk-lf-embedded-demo", "sk-lf-embedded-demo")  # any keys work; these are printed


@dataclass(frozen=True)
class GenerationRow:
    """One generation as Langfuse received it."""

    framework: str
    model: str
    provider: str
    input: int
    cache_read: int
    cache_write: int
    output: int
    reasoning: int
    cost: Decimal | None
    no_cache_cost: Decimal | None
    savings: Decimal | None
    cost_source: str
    trace_id: str
    span_id: str = ""
    started_at: float = 0.0  # seconds since the epoch
    requested_model: str = ""  # the model id the program asked for (`model` is the one that answered)
    streamed: bool = False


@dataclass
class DemoResult:
    """What the demo ran against and what it exported to Langfuse."""

    openrouter: str  # "embedded" or the API base used
    langfuse: str  # "embedded" or the Langfuse base URL
    rows: list[GenerationRow] = field(default_factory=list)
    spans_received: int | None = None  # by the embedded Langfuse
    export_error: str | None = None  # why the export was not seen in Langfuse (None: it was)

    def totals(self) -> dict[str, Any]:
        def total(name: str) -> Any:
            values = [getattr(r, name) for r in self.rows]
            return sum((v for v in values if v is not None), Decimal(0) if name in _MONEY else 0)

        return {
            name: total(name)
            for name in ("input", "cache_read", "cache_write", "output", "reasoning", *_MONEY)
        }


_MONEY = ("cost", "no_cache_cost", "savings")


def handbook() -> str:
    """The long shared document every demo call sends (well above providers' caching minimum)."""
    return resources.files(__package__).joinpath("handbook.md").read_text(encoding="utf-8")


class _GenerationCollector(SpanProcessor):
    """An OpenTelemetry span processor that keeps each ended generation's attributes."""

    def __init__(self) -> None:
        self.framework = ""
        self.requested_model = ""
        self.streamed = False
        self.rows: list[GenerationRow] = []

    def on_end(self, span: Any) -> None:
        generation = read_generation(span.attributes or {})
        if generation is None:
            return
        meta = generation.openrouter
        usage, cost = generation.usage_details, generation.cost_details
        self.rows.append(
            GenerationRow(
                framework=self.framework,
                model=generation.model or "",
                provider=meta.get("provider") or "",
                input=usage.get("input", 0),
                cache_read=usage.get("input_cache_read", 0),
                cache_write=usage.get("input_cache_creation", 0),
                output=usage.get("output", 0),
                reasoning=usage.get("output_reasoning", 0),
                cost=_decimal(cost.get("total")),
                # written only for calls that read or wrote the cache; otherwise the cost, and no savings
                no_cache_cost=_decimal(meta.get("no_cache_cost_usd", cost.get("total"))),
                savings=_decimal(meta.get("cache_savings_usd", 0 if "total" in cost else None)),
                cost_source=meta.get("cost_source") or "langfuse",
                trace_id=format(span.context.trace_id, "032x"),
                span_id=format(span.context.span_id, "016x"),
                started_at=(span.start_time or 0) / 1e9,
                requested_model=self.requested_model,
                streamed=self.streamed,
            )
        )


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


class DemoError(Exception):
    """The demo cannot go on: OpenRouter or Langfuse unreachable or refusing the keys. One line."""


class DemoServices:
    """The OpenRouter and Langfuse the demo and the notebooks talk to, real or embedded.

    `OPENROUTER_API_KEY` picks OpenRouter (at `OPENROUTER_API_BASE`), else an embedded one;
    `LANGFUSE_PUBLIC_KEY` and `LANGFUSE_SECRET_KEY` pick Langfuse (at `LANGFUSE_BASE_URL`), else an
    embedded one; a real Langfuse's keys are checked first (`DemoError` if refused or unreachable).
    `generations` holds what each exported generation carried; `progress(text)` hears what is being
    prepared and each call (`calling`). Close when done.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, progress: Any = None) -> None:
        self.progress = progress or (lambda description: None)
        env = os.environ if environ is None else environ
        self.progress("Loading Langfuse")
        from langfuse import Langfuse
        from opentelemetry.sdk.trace import TracerProvider

        from .langfuse_server import EmbeddedLangfuse
        from .openrouter import EmbeddedOpenRouter

        self._stack = ExitStack()
        self.embedded_openrouter: EmbeddedOpenRouter | None = None
        self.embedded_langfuse: EmbeddedLangfuse | None = None
        key = env.get("OPENROUTER_API_KEY")
        if key:
            self.openrouter_base = (env.get("OPENROUTER_API_BASE") or DEFAULT_API_BASE).rstrip("/")
            self.openrouter_key = key
            self.catalog = PriceCatalog(api_base=self.openrouter_base)
            self.progress(f"Loading OpenRouter's prices from {self.openrouter_base}")
        else:
            self.progress("Starting the embedded OpenRouter")
            self.embedded_openrouter = self._stack.enter_context(EmbeddedOpenRouter())
            self.openrouter_base, self.openrouter_key = (
                self.embedded_openrouter.base_url,
                _EMBEDDED_OPENROUTER_KEY,
            )
            cache_dir = self._stack.enter_context(tempfile.TemporaryDirectory())
            self.catalog = PriceCatalog(api_base=self.openrouter_base, cache_dir=cache_dir)
            self.progress("Loading the embedded OpenRouter's prices")
        if not self.catalog.refresh() and key:
            self._stack.close()
            raise DemoError(f"OpenRouter at {self.openrouter_base} did not answer its price list (/models)")

        self.collector = _GenerationCollector()
        self.tracer_provider = tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(self.collector)
        public_key, secret_key = env.get("LANGFUSE_PUBLIC_KEY"), env.get("LANGFUSE_SECRET_KEY")
        if public_key and secret_key:
            self.langfuse_base = (
                env.get("LANGFUSE_BASE_URL") or env.get("LANGFUSE_HOST") or "https://cloud.langfuse.com"
            ).rstrip("/")
        else:
            self.progress("Starting the embedded Langfuse")
            self.embedded_langfuse = self._stack.enter_context(EmbeddedLangfuse())
            # Langfuse keeps one client per public key: a key of its own for each embedded server.
            public_key, secret_key = f"pk-lf-embedded-{uuid.uuid4().hex[:12]}", "sk-lf-embedded-demo"
            self.langfuse_base = self.embedded_langfuse.base_url
        self.public_key = public_key
        self.langfuse = Langfuse(
            public_key=public_key,
            secret_key=secret_key,
            base_url=self.langfuse_base,
            tracer_provider=tracer_provider,
        )
        if self.embedded_langfuse is None:
            self.progress(f"Checking the Langfuse keys at {self.langfuse_base}")
            try:
                self.langfuse.auth_check()
            except Exception as exc:
                self.langfuse.shutdown()
                self._stack.close()
                raise DemoError(f"Langfuse at {self.langfuse_base}: {_why(exc)}; nothing was sent") from None

    @property
    def generations(self) -> list[GenerationRow]:
        return self.collector.rows

    def calling(self, framework: str, model: str, question: str, *, streamed: bool = False) -> None:
        """Say which call comes next: its generation's row gets these labels, and `progress` hears it."""
        collector = self.collector
        collector.framework, collector.requested_model, collector.streamed = framework, model, streamed
        number = len(collector.rows) + 1
        self.progress(f"Call {number}: {framework} · {model}{' (streamed)' if streamed else ''} · {question}")

    def check_export(self, wait: float = 30.0) -> str | None:
        """Ask Langfuse's public API (the real-time observations read path) whether every generation
        arrived; None if they did, else why not, in one line. Waits up to `wait` s for ingestion."""
        import time

        from langfuse.api.core.api_error import ApiError

        expected = {row.span_id for row in self.generations}
        if not expected:
            return None
        self.langfuse.flush()
        since = min(_started(row) for row in self.generations)
        deadline = time.monotonic() + (0 if self.embedded_langfuse else wait)
        while True:
            try:
                found = set()
                cursor = None
                while True:
                    page = self.langfuse.api.observations.get_many(
                        type="GENERATION", from_start_time=since, fields="core", limit=100, cursor=cursor
                    )
                    found |= {o.id for o in page.data}
                    cursor = page.meta.cursor if page.data else None
                    if not cursor:
                        break
            except ApiError as exc:
                return f"Langfuse at {self.langfuse_base} could not be asked what it received: {_why(exc)}"
            except Exception as exc:
                return f"Langfuse at {self.langfuse_base}: {_why(exc)}"
            missing = len(expected - found)
            if not missing:
                return None
            if time.monotonic() >= deadline:
                return (
                    f"Langfuse at {self.langfuse_base} has not received {missing} of the "
                    f"{len(expected)} generations"
                )
            time.sleep(1.0)

    def close(self) -> None:
        """Export what is pending, and stop the embedded services."""
        self.langfuse.flush()
        if self.embedded_langfuse is not None:
            self.langfuse.shutdown()
        self._stack.close()

    def __enter__(self) -> DemoServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _started(row: GenerationRow) -> Any:
    from datetime import datetime, timedelta, timezone

    return datetime.fromtimestamp(row.started_at, tz=timezone.utc) - timedelta(minutes=1)


def _why(exc: BaseException) -> str:
    """An HTTP client's or Langfuse's error as a short reason, without a traceback."""
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return f"the key was refused (HTTP {status})"
    if status is not None:
        return f"HTTP {status}"
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = str(cause) or type(cause).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text.splitlines()[0][:200]


def run_demo(environ: Mapping[str, str] | None = None, progress: Any = None) -> DemoResult:
    """Run the demo's LangChain and LlamaIndex calls, then check what reached Langfuse.

    `progress(description)` hears what is being prepared and each call. Raises `DemoError` when
    OpenRouter or Langfuse is unreachable or refuses the keys.
    """
    with DemoServices(environ, progress) as services:
        return run_on(services)


def run_on(services: DemoServices) -> DemoResult:
    """The demo's calls through `services`, and what Langfuse received of them."""
    run_calls(services)
    services.progress("Checking what Langfuse received")
    export_error = services.check_export()
    received = services.embedded_langfuse
    return DemoResult(
        openrouter="embedded" if services.embedded_openrouter else services.openrouter_base,
        langfuse="embedded" if received else services.langfuse_base,
        rows=list(services.generations),
        spans_received=len(received.spans) if received else None,
        export_error=export_error,
    )


def run_calls(services: DemoServices) -> None:
    """The demo's calls through `services`: LangChain, then LlamaIndex."""
    import openai

    with requires_extra("all", "The demo"):
        services.progress("Loading LangChain")
        from langchain_openai import ChatOpenAI  # noqa: F401

        from .. import langchain  # noqa: F401

        services.progress("Loading LlamaIndex")
        from llama_index.llms.openrouter import OpenRouter  # noqa: F401

        from .. import llama_index  # noqa: F401
    try:
        _langchain_calls(services)
        _llama_index_calls(services)
        run_cache_misses(services)
    except openai.APIConnectionError as exc:
        raise DemoError(f"OpenRouter at {services.openrouter_base}: {_why(exc)}") from None
    except openai.APIStatusError as exc:
        message = exc.message.splitlines()[0][:200] if exc.message else ""
        raise DemoError(f"OpenRouter at {services.openrouter_base}: {_why(exc)}: {message}") from None
    services.langfuse.flush()


def _langchain_calls(services: DemoServices) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_openai import ChatOpenAI

    from ..langchain import CallbackHandler

    handler = CallbackHandler(
        public_key=services.public_key, price_catalog=services.catalog, savings_score=True
    )
    document = handbook()
    for model, system in (
        # Anthropic caches up to an explicit breakpoint: the first call writes, the next ones read.
        (
            ANTHROPIC_MODEL,
            SystemMessage(
                content=[{"type": "text", "text": document, "cache_control": {"type": "ephemeral"}}]
            ),
        ),
        # OpenAI caches a long shared prefix by itself: the first call misses, the next ones read.
        (OPENAI_MODEL, SystemMessage(content=document)),
    ):
        chain = (
            ChatOpenAI(
                base_url=services.openrouter_base,
                api_key=services.openrouter_key,
                model=model,
                max_tokens=200,
                max_retries=1,
            )
            | StrOutputParser()
        )
        for question in QUESTIONS:
            services.calling("LangChain", model, question)
            chain.invoke([system, HumanMessage(content=question)], config={"callbacks": [handler]})


def _llama_index_calls(services: DemoServices) -> None:
    import llama_index.core
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.llms.openrouter import OpenRouter

    from ..llama_index import set_global_handler
    from .embedding import HashEmbedding

    previous = llama_index.core.global_handler
    set_global_handler(public_key=services.public_key, price_catalog=services.catalog, savings_score=True)
    try:
        llm = OpenRouter(
            api_base=services.openrouter_base,
            api_key=services.openrouter_key,
            model=OPENAI_MODEL,
            max_tokens=200,
            max_retries=1,
        )
        services.progress("LlamaIndex: indexing the handbook")
        index = VectorStoreIndex.from_documents(
            [Document(text=handbook())],
            embed_model=HashEmbedding(),
            transformations=[SentenceSplitter(chunk_size=4096)],
        )
        engine = index.as_query_engine(llm=llm, similarity_top_k=1)
        streaming = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True)
        for i, question in enumerate(RAG_QUESTIONS):
            streamed = i == len(RAG_QUESTIONS) - 1
            services.calling("LlamaIndex", OPENAI_MODEL, question, streamed=streamed)
            if streamed:
                response = streaming.query(question)
                "".join(response.response_gen)  # type: ignore[union-attr]
            else:
                engine.query(question)
    finally:
        llama_index.core.global_handler = previous
