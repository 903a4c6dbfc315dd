"""Faults of the price sources, end to end: routed calls, faulty `/models` servers, faulty disk caches.

Real LangChain and LlamaIndex clients call the local OpenRouter; assertions read what Langfuse exported.
Where a latency is the point, the user's calls during the fault are compared with the same calls
measured in the same test without it (a ratio, never an absolute bound).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import llama_index.core
import pytest
from langchain_openai import ChatOpenAI
from llama_index.core import Settings
from llama_index.core.llms import ChatMessage
from llama_index.llms.openrouter import OpenRouter

from langfuse_openrouter_callbacks import PriceCatalog
from langfuse_openrouter_callbacks.catalog import MAX_MODELS_BYTES
from langfuse_openrouter_callbacks.langchain import CallbackHandler
from langfuse_openrouter_callbacks.llama_index import set_global_handler
from tests.scenario import CACHED_CALL, DATED, REQUESTED, SONNET
from tests.support.openrouter_server import (
    FakeOpenRouter,
    Fault,
    ResponseSpec,
    Usage,
    endpoint_entry,
    endpoints_payload,
    model_entry,
)
from tests.support.otlp_receiver import ExportedSpan, OTLPReceiver

LOGGER = "langfuse_openrouter_callbacks"
ROUTED_TO = "newco/brand-new-model"  # known to no price source
CHEAP = "openai/gpt-4.1-mini"
CHEAP_PRICING = {"prompt": "0.0000004", "completion": "0.0000016"}
PAID_LLAMA = "meta-llama/llama-3.3-70b-instruct"  # genai-prices knows its paid price
STREAMED = Usage(prompt_tokens=1_000, completion_tokens=100, cost=0.0123)  # the cost LangChain drops


@pytest.fixture
def openrouter(fake_openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch) -> FakeOpenRouter:
    monkeypatch.setenv("OPENROUTER_API_BASE", fake_openrouter.base_url)
    fake_openrouter.set_models(
        [
            model_entry(REQUESTED, SONNET, canonical_slug=DATED),
            model_entry(CHEAP, CHEAP_PRICING),
            model_entry(PAID_LLAMA + ":free", {"prompt": "0", "completion": "0"}),
        ]
    )
    fake_openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL))
    return fake_openrouter


def _loaded(catalog: PriceCatalog) -> PriceCatalog:
    catalog.preload()
    assert catalog.wait_until_idle(10)
    return catalog


def chat_openai(server: FakeOpenRouter, model: str = REQUESTED) -> ChatOpenAI:
    return ChatOpenAI(base_url=server.base_url, api_key="sk-or-test", model=model, max_retries=0)


def exported(client: Any, receiver: OTLPReceiver, count: int = 1) -> list[ExportedSpan]:
    client.flush()
    generations = receiver.generations()
    assert len(generations) == count, [g.name for g in generations]
    return generations


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == LOGGER]


# ---------------------------------------------------------------------------- routed calls (14.1)


def _stream_routed(server: FakeOpenRouter, catalog: PriceCatalog, answered: str, requested: str) -> None:
    server.set_default(ResponseSpec(model=answered, provider=None, usage=STREAMED))
    llm = chat_openai(server, requested)
    chunks = list(
        llm.stream(
            "hello",
            config={"callbacks": [CallbackHandler(price_catalog=catalog)]},
            extra_body={"models": [requested, answered]},  # OpenRouter's fallback routing
        )
    )
    assert chunks


def test_a_call_routed_to_a_model_no_source_knows_is_unpriced_not_priced_as_the_requested_one(
    openrouter, tmp_path, langfuse_client, otlp_receiver
) -> None:
    catalog = _loaded(PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path))
    _stream_routed(openrouter, catalog, ROUTED_TO, REQUESTED)
    (generation,) = exported(langfuse_client, otlp_receiver)
    meta = generation.metadata["openrouter"]
    assert meta["model"] == ROUTED_TO and meta["cost_source"] == "unpriced"
    assert not generation.cost_details  # no cost rather than Sonnet's price
    assert meta.get("pricing_source") is None


def test_a_free_request_answered_by_the_paid_model_is_priced_as_the_paid_one(
    openrouter, tmp_path, langfuse_client, otlp_receiver
) -> None:
    catalog = _loaded(PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path))
    _stream_routed(openrouter, catalog, PAID_LLAMA, PAID_LLAMA + ":free")
    (generation,) = exported(langfuse_client, otlp_receiver)
    meta = generation.metadata["openrouter"]
    assert meta["cost_source"] == "computed" and meta["pricing_source"] == "genai-prices"
    paid = catalog.pricing_for(PAID_LLAMA)
    expected = 1_000 * paid.prompt + 100 * paid.completion
    assert expected > 0
    assert Decimal(str(generation.cost_details["total"])) == expected  # not $0


def test_an_override_on_the_requested_id_does_not_price_the_model_that_answered(
    openrouter, tmp_path, langfuse_client, otlp_receiver
) -> None:
    expensive = {"prompt": "0.00003", "completion": "0.00003"}
    catalog = _loaded(PriceCatalog({REQUESTED: expensive}, api_base=openrouter.base_url, cache_dir=tmp_path))
    _stream_routed(openrouter, catalog, CHEAP, REQUESTED)
    (generation,) = exported(langfuse_client, otlp_receiver)
    assert generation.metadata["openrouter"]["pricing_source"] == "models"
    assert generation.cost_details["total"] == pytest.approx(1_000 * 0.0000004 + 100 * 0.0000016)


def test_a_routed_call_keeps_the_cost_openrouter_reported(
    openrouter, tmp_path, langfuse_client, otlp_receiver
) -> None:
    catalog = _loaded(PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path))
    openrouter.set_default(ResponseSpec(model=ROUTED_TO, provider=None, usage=STREAMED))
    handler = CallbackHandler(price_catalog=catalog)
    chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
    (generation,) = exported(langfuse_client, otlp_receiver)
    assert generation.cost_details["total"] == 0.0123  # OpenRouter's bill, whatever the prices
    assert generation.metadata["openrouter"]["cost_source"] == "openrouter"


@pytest.mark.parametrize(
    ("answered", "requested", "source"),
    [
        (DATED, REQUESTED, "override"),  # a dated id: the same model
        (REQUESTED + ":thinking", REQUESTED, "override"),  # a variant suffix: the same model
        (REQUESTED, REQUESTED + ":thinking", "override"),
        (CHEAP, REQUESTED, "models"),  # another model: its own price
        (PAID_LLAMA, PAID_LLAMA + ":free", "genai-prices"),  # :free is its own model
        (ROUTED_TO, REQUESTED, None),  # known nowhere: unpriced
        (None, REQUESTED, "override"),  # the response names no model: the requested one
    ],
)
def test_the_requested_id_stands_in_only_for_the_same_model(
    openrouter, tmp_path, answered, requested, source
) -> None:
    mine = {"prompt": "0.000001", "completion": "0.000002"}
    catalog = _loaded(PriceCatalog({REQUESTED: mine}, api_base=openrouter.base_url, cache_dir=tmp_path))
    found = catalog.pricing_for(answered, requested=requested)
    assert (found.source if found is not None else None) == source
    offline = _loaded(PriceCatalog({REQUESTED: mine}, offline=True))  # the same, from genai-prices' ids
    if source in ("override", None):
        found = offline.pricing_for(answered, requested=requested)
        assert (found.source if found is not None else None) == source


# ---------------------------------------------------------------------------- faulty /models (14.4)


def _user_calls(call: Callable[[], Any], until: Callable[[], bool], at_least: int) -> list[float]:
    """Seconds each `call()` took, repeated until `until()` holds (and at least `at_least` times)."""
    took: list[float] = []
    while len(took) < at_least or not until():
        started = time.perf_counter()
        call()
        took.append(time.perf_counter() - started)
    return took


def test_a_huge_model_list_is_abandoned_without_stalling_the_users_calls(
    openrouter, tmp_path, langfuse_client, otlp_receiver, caplog
) -> None:
    handler = CallbackHandler(price_catalog=PriceCatalog(offline=True))
    llm = chat_openai(openrouter)

    def call() -> None:
        llm.invoke("hello", config={"callbacks": [handler]})

    openrouter.set_fault("models", Fault(size=65_000_000))  # OpenRouter's is about 1 MB
    baseline = _user_calls(call, lambda: True, 30)
    catalog = PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path, timeout=30)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        catalog.preload()
        during = _user_calls(call, lambda: catalog.wait_until_idle(0), 30)
    ratio = max(during) / max(baseline)  # the slowest call: parsing such a list holds the GIL for seconds
    assert ratio < 10, f"the user's slowest call took {ratio:.1f}x the slowest without the fault"
    (warning,) = warnings_of(caplog)
    assert "model list" in warning and "bytes accepted" in warning
    assert catalog.pricing_for(REQUESTED).source == "genai-prices"  # the offline prices stand
    assert not list(tmp_path.rglob("models.json"))  # nothing of it was kept


def test_a_model_list_that_trickles_in_is_abandoned_after_the_timeout(openrouter, tmp_path, caplog) -> None:
    openrouter.set_fault("models", Fault(trickle=0.25))  # the whole list would take hours
    catalog = PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path, timeout=1.0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        catalog.preload()
        assert catalog.wait_until_idle(15)  # the worker is free again (it was held for good before)
    (warning,) = warnings_of(caplog)
    assert "took more than 1 s" in warning
    openrouter.set_fault("models", None)
    assert catalog.refresh()  # and the next fetch works
    assert catalog.pricing_for(REQUESTED).source == "models"


def test_a_huge_endpoint_list_is_abandoned_and_the_model_price_stands(openrouter, tmp_path, caplog) -> None:
    padding = [endpoint_entry(f"Filler {i}", SONNET) for i in range(15_000)]
    openrouter.set_endpoints(
        REQUESTED, endpoints_payload(REQUESTED, [endpoint_entry("Anthropic", SONNET), *padding])
    )
    catalog = _loaded(PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert catalog.pricing_for(DATED, provider="Anthropic").source == "models"
        assert catalog.wait_until_idle(10)
        assert catalog.pricing_for(DATED, provider="Anthropic").source == "models"
    (warning,) = warnings_of(caplog)
    assert "endpoint prices" in warning and "bytes accepted" in warning


# ---------------------------------------------------------------------------- faulty disk cache (14.5)


def _cache_folder(server: FakeOpenRouter, root: Path) -> Path:
    catalog = PriceCatalog(api_base=server.base_url, cache_dir=root)
    assert catalog.refresh()
    (models_file,) = root.rglob("models.json")
    return models_file.parent


def _first_call_seconds(server: FakeOpenRouter, catalog: PriceCatalog) -> float:
    """A program's first lookup (the core API, no preload) and its first LLM call with the handler."""
    llm = chat_openai(server)
    started = time.perf_counter()
    catalog.pricing_for(DATED)
    llm.invoke("hello", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    return time.perf_counter() - started


def test_a_huge_disk_cache_does_not_slow_the_first_call_and_is_ignored(
    openrouter, tmp_path, langfuse_client, caplog
) -> None:
    folder = _cache_folder(openrouter, tmp_path / "huge")
    models = [model_entry(f"filler/model-{i}", SONNET) for i in range(70_000)]
    body = {"format": 1, "fetched_at": time.time(), "data": models}
    (folder / "models.json").write_text(json.dumps(body))
    assert (folder / "models.json").stat().st_size > MAX_MODELS_BYTES
    _cache_folder(openrouter, tmp_path / "usual")
    openrouter.set_fault("models", Fault(status=500))  # what the catalog holds is the disk's

    usual = [
        _first_call_seconds(
            openrouter, PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path / "usual")
        )
        for _ in range(3)
    ]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        catalog = PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path / "huge")
        huge = _first_call_seconds(openrouter, catalog)
        assert catalog.wait_until_idle(10)
    assert huge / statistics.median(usual) < 3
    assert any("more than the" in w and "models.json" in w for w in warnings_of(caplog))
    assert catalog.pricing_for("filler/model-1") is None  # ignored, not installed


def test_a_cache_file_that_blocks_on_read_never_blocks_the_users_call(
    openrouter, tmp_path, langfuse_client, otlp_receiver, caplog
) -> None:
    folder = _cache_folder(openrouter, tmp_path)
    models_file = folder / "models.json"
    models_file.unlink()
    os.mkfifo(models_file)  # stands in for a hung network mount: opening it for reading waits forever
    done = threading.Event()

    def user() -> None:
        catalog = PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path)
        _first_call_seconds(openrouter, catalog)
        catalog.wait_until_idle(10)
        done.set()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        thread = threading.Thread(target=user, daemon=True)
        thread.start()
        try:
            assert done.wait(20), "the user's call blocked on the price cache"
        finally:
            fd = os.open(models_file, os.O_WRONLY | os.O_NONBLOCK) if not done.is_set() else None
            if fd is not None:  # let a blocked reader go
                os.close(fd)
    (generation,) = exported(langfuse_client, otlp_receiver)
    assert generation.cost_details["total"] == 0.0241
    assert any("not a file" in w for w in warnings_of(caplog))


@pytest.fixture
def clean_llama_index() -> Iterator[None]:
    llm, embed, manager = Settings._llm, Settings._embed_model, Settings._callback_manager
    yield
    llama_index.core.global_handler = None
    Settings._llm, Settings._embed_model, Settings._callback_manager = llm, embed, manager


def test_a_malformed_endpoints_cache_is_ignored_with_one_warning_and_the_call_keeps_its_cost(
    openrouter, tmp_path, langfuse_client, otlp_receiver, clean_llama_index, caplog
) -> None:
    openrouter.set_endpoints(REQUESTED, endpoints_payload(REQUESTED, [endpoint_entry("Anthropic", SONNET)]))
    folder = _cache_folder(openrouter, tmp_path)
    (folder / "endpoints").mkdir()
    bad = {"format": 1, "fetched_at": "yesterday", "endpoints": [endpoint_entry("Anthropic", SONNET)]}
    (folder / "endpoints" / "anthropic%2Fclaude-sonnet-4.5.json").write_text(json.dumps(bad))
    catalog = _loaded(PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path))
    handler = set_global_handler(price_catalog=catalog)
    llm = OpenRouter(api_base=openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        llm.chat([ChatMessage(role="user", content="hello")])
        assert catalog.wait_until_idle(10)
        handler.flush()
    (generation,) = exported(langfuse_client, otlp_receiver)
    assert generation.cost_details["total"] == 0.0241
    assert generation.metadata["openrouter"]["pricing_source"] == "models"
    (warning,) = warnings_of(caplog)
    assert "unknown shape" in warning
    assert catalog.pricing_for(DATED, provider="Anthropic").source == "endpoint:Anthropic"  # fetched anew
