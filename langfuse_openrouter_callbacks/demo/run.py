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


@dataclass
class DemoResult:
    """What the demo ran against and what Langfuse received."""

    openrouter: str  # "embedded" or the API base used
    langfuse: str  # "embedded" or the Langfuse base URL
    rows: list[GenerationRow] = field(default_factory=list)
    spans_received: int | None = None  # by the embedded Langfuse

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
            )
        )


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


class DemoServices:
    """The OpenRouter and Langfuse the demo and the notebooks talk to, real or embedded.

    `OPENROUTER_API_KEY` picks OpenRouter (at `OPENROUTER_API_BASE`), else an embedded one;
    `LANGFUSE_PUBLIC_KEY` and `LANGFUSE_SECRET_KEY` pick Langfuse (at `LANGFUSE_BASE_URL`), else an
    embedded receiver. `generations` holds what each exported generation carried. Close when done.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        from langfuse import Langfuse
        from opentelemetry.sdk.trace import TracerProvider

        from .langfuse_server import EmbeddedLangfuse
        from .openrouter import EmbeddedOpenRouter

        env = os.environ if environ is None else environ
        self._stack = ExitStack()
        self.embedded_openrouter: EmbeddedOpenRouter | None = None
        self.embedded_langfuse: EmbeddedLangfuse | None = None
        key = env.get("OPENROUTER_API_KEY")
        if key:
            self.openrouter_base = (env.get("OPENROUTER_API_BASE") or DEFAULT_API_BASE).rstrip("/")
            self.openrouter_key = key
            self.catalog = PriceCatalog(api_base=self.openrouter_base)
        else:
            self.embedded_openrouter = self._stack.enter_context(EmbeddedOpenRouter())
            self.openrouter_base, self.openrouter_key = (
                self.embedded_openrouter.base_url,
                _EMBEDDED_OPENROUTER_KEY,
            )
            cache_dir = self._stack.enter_context(tempfile.TemporaryDirectory())
            self.catalog = PriceCatalog(api_base=self.openrouter_base, cache_dir=cache_dir)
        self.catalog.refresh()

        self.collector = _GenerationCollector()
        self.tracer_provider = tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(self.collector)
        public_key, secret_key = env.get("LANGFUSE_PUBLIC_KEY"), env.get("LANGFUSE_SECRET_KEY")
        if public_key and secret_key:
            self.langfuse_base = (
                env.get("LANGFUSE_BASE_URL") or env.get("LANGFUSE_HOST") or "https://cloud.langfuse.com"
            )
        else:
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

    @property
    def generations(self) -> list[GenerationRow]:
        return self.collector.rows

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


def run_demo(environ: Mapping[str, str] | None = None, progress: Any = None) -> DemoResult:
    """Run the demo's LangChain and LlamaIndex calls; `progress(description)` is told of each call."""
    with DemoServices(environ) as services:
        run_calls(services, progress)
        received = services.embedded_langfuse
        return DemoResult(
            openrouter="embedded" if services.embedded_openrouter else services.openrouter_base,
            langfuse="embedded" if received else services.langfuse_base,
            rows=list(services.generations),
            spans_received=len(received.spans) if received else None,
        )


def run_calls(services: DemoServices, progress: Any = None) -> None:
    """The demo's LangChain and LlamaIndex calls through `services`; `progress(description)` per call."""
    report = progress or (lambda description: None)
    services.collector.framework = "LangChain"
    _langchain_calls(services, report)
    services.collector.framework = "LlamaIndex"
    _llama_index_calls(services, report)
    run_cache_misses(services, report)
    services.langfuse.flush()


def _langchain_calls(services: DemoServices, report: Any) -> None:
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
            report(f"LangChain · {model} · {question}")
            chain.invoke([system, HumanMessage(content=question)], config={"callbacks": [handler]})


def _llama_index_calls(services: DemoServices, report: Any) -> None:
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
        index = VectorStoreIndex.from_documents(
            [Document(text=handbook())],
            embed_model=HashEmbedding(),
            transformations=[SentenceSplitter(chunk_size=4096)],
        )
        engine = index.as_query_engine(llm=llm, similarity_top_k=1)
        streaming = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True)
        for i, question in enumerate(RAG_QUESTIONS):
            report(f"LlamaIndex · {OPENAI_MODEL} · {question}")
            if i == len(RAG_QUESTIONS) - 1:
                response = streaming.query(question)
                "".join(response.response_gen)  # type: ignore[union-attr]
            else:
                engine.query(question)
    finally:
        llama_index.core.global_handler = previous
