"""Reconciliation with OpenRouter's `/generation` record, with real clients against local servers.

The lookups run in the background with small timeouts and backoffs injected through
`GenerationStatsFetcher(...)`; every assertion reads what Langfuse exported (decoded OTLP spans).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from langchain_openrouter import ChatOpenRouter
from llama_index.core.llms import ChatMessage
from llama_index.llms.openrouter import OpenRouter

from langfuse_openrouter_callbacks import PriceCatalog, generation_stats
from langfuse_openrouter_callbacks.generation_stats import ENV_FLAG, GenerationStatsFetcher
from langfuse_openrouter_callbacks.langchain import CallbackHandler
from langfuse_openrouter_callbacks.llama_index import LlamaIndexHandler, set_global_handler
from tests.scenario import CACHED_CALL as SCENARIO_CALL
from tests.scenario import DATED, EXPECTED_USAGE, REQUESTED, SONNET
from tests.support.openrouter_server import (
    FakeOpenRouter,
    Fault,
    ResponseSpec,
    Usage,
    endpoint_entry,
    generation_data,
    marker,
    marker_responder,
    model_entry,
    new_generation_id,
)
from tests.support.otlp_receiver import ExportedSpan, OTLPReceiver

SECRET = "sk-or-v1-SECRET-5f0c2a9be47d41c6a8d3e1f2b7c9d0aa"
MODEL_LEVEL = {"prompt": "0.000004", "completion": "0.00002"}  # the list price: not what Anthropic bills
# 1000 x 3e-6 + 6000 x 3e-7 + 3000 x 3.75e-6 + 300 x 15e-6 + 200 x 15e-6: the call at Anthropic's prices
AT_ENDPOINT_PRICES = 0.02355
CACHED_CALL = dataclasses.replace(SCENARIO_CALL, cost=AT_ENDPOINT_PRICES)
RECORD_FIELDS = (
    "total_cost",
    "cache_discount",
    "native_tokens_prompt",
    "native_tokens_completion",
    "native_tokens_cached",
    "native_tokens_reasoning",
    "provider_name",
    "provider_responses",
    "is_byok",
    "generation_time",
    "latency",
)
HELLO = [ChatMessage(role="user", content="hello")]
FAST = {"initial_delay": 0.0, "initial_backoff": 0.05, "max_backoff": 0.2, "total_timeout": 3.0}


# ---------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def openrouter(fake_openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch) -> FakeOpenRouter:
    """The fake OpenRouter as this machine's OpenRouter, with an API key in the environment."""
    monkeypatch.setenv("OPENROUTER_API_BASE", fake_openrouter.base_url)
    monkeypatch.setenv("OPENROUTER_API_KEY", SECRET)
    monkeypatch.delenv(ENV_FLAG, raising=False)
    monkeypatch.setattr(generation_stats, "_warned", set())  # process-wide warnings: fresh per test
    fake_openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL))
    return fake_openrouter


@pytest.fixture
def make_fetcher(openrouter, langfuse_client) -> Iterator[Callable[..., GenerationStatsFetcher]]:
    """Fetchers with test-sized timings, closed before the Langfuse client's teardown flush."""
    made: list[GenerationStatsFetcher] = []

    def make(**kwargs: Any) -> GenerationStatsFetcher:
        fetcher = GenerationStatsFetcher(api_base=openrouter.base_url, **{**FAST, **kwargs})
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


@pytest.fixture
def catalog() -> PriceCatalog:
    return PriceCatalog({REQUESTED: SONNET}, offline=True)


@pytest.fixture
def endpoint_catalog(openrouter: FakeOpenRouter, tmp_path: Path) -> PriceCatalog:
    """Real catalog on the fake API: a model-level list price, and Anthropic's endpoint price."""
    openrouter.set_models([model_entry(REQUESTED, MODEL_LEVEL, canonical_slug=DATED)])
    openrouter.set_endpoints(
        REQUESTED,
        [endpoint_entry("Google", MODEL_LEVEL, model_id=REQUESTED), endpoint_entry("Anthropic", SONNET)],
    )
    catalog = PriceCatalog(api_base=openrouter.base_url, cache_dir=tmp_path, timeout=2.0)
    assert catalog.refresh()
    return catalog


def chat_openai(server: FakeOpenRouter) -> ChatOpenAI:
    return ChatOpenAI(base_url=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)


def chat_openrouter(server: FakeOpenRouter) -> ChatOpenRouter:
    return ChatOpenRouter(model=REQUESTED, api_key="sk-or-test", base_url=server.base_url, max_retries=0)


def llama_openrouter(server: FakeOpenRouter) -> OpenRouter:
    return OpenRouter(api_base=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)


def serve_record(server: FakeOpenRouter, usage: Usage = CACHED_CALL, **record: Any) -> str:
    """Answer the next calls with one generation id whose `/generation` record is `record`."""
    gen_id = new_generation_id()
    server.auto_register_generations = False
    server.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=usage, generation_id=gen_id))
    server.set_generation(
        gen_id, generation_data(gen_id, usage, model=DATED, provider_name="Anthropic", **record)
    )
    return gen_id


def lookups(server: FakeOpenRouter) -> list[Any]:
    return [r for r in server.requests if r.path.endswith("/generation")]


def exported(flush: Callable[[], Any], receiver: OTLPReceiver, count: int = 1) -> list[ExportedSpan]:
    flush()
    generations = receiver.generations()
    assert len(generations) == count, [g.name for g in generations]
    assert len({g.span_id for g in generations}) == count  # each exported once
    return generations


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("langfuse_openrouter_callbacks")
    ]


def assert_reconciled(generation: ExportedSpan, *, record_total: float) -> None:
    """The record's fields in metadata, its total in cost_details, Anthropic's endpoint prices."""
    meta = generation.metadata["openrouter"]
    assert set(RECORD_FIELDS) <= set(meta)
    assert meta["total_cost"] == pytest.approx(record_total)
    assert meta["native_tokens_prompt"] == 10_000 and meta["native_tokens_completion"] == 500
    assert meta["native_tokens_cached"] == 6_000 and meta["native_tokens_reasoning"] == 200
    assert meta["provider_name"] == "Anthropic" and meta["provider"] == "Anthropic"
    assert meta["provider_responses"][0]["provider_name"] == "Anthropic"
    assert meta["latency"] == 412 and meta["generation_time"] == 380 and meta["is_byok"] is False
    assert meta["cache_discount"] is None
    assert meta["pricing_source"] == "endpoint:Anthropic"
    assert meta["reported_cost"] == pytest.approx(AT_ENDPOINT_PRICES)  # what the response said
    assert meta.get("reconciliation_delta", 0) == pytest.approx(record_total - AT_ENDPOINT_PRICES, abs=1e-12)
    assert generation.usage_details == EXPECTED_USAGE
    assert generation.cost_details["total"] == pytest.approx(record_total, abs=1e-12)
    assert generation.cost_details["input_cache_creation"] == pytest.approx(3_000 * 0.00000375)
    buckets = {k: v for k, v in generation.cost_details.items() if k != "total"}
    assert sum(buckets.values()) == pytest.approx(record_total, abs=1e-12)


def assert_response_numbers_only(generation: ExportedSpan) -> None:
    meta = generation.metadata["openrouter"]
    assert not (set(RECORD_FIELDS) - {"is_byok"}) & set(meta)
    assert generation.cost_details["total"] == pytest.approx(AT_ENDPOINT_PRICES)
    assert generation.usage_details == EXPECTED_USAGE


# ---------------------------------------------------------------------------- reconciliation


def test_record_after_404s_wins_and_prices_at_the_serving_endpoint(
    openrouter, endpoint_catalog, make_fetcher, langfuse_client, otlp_receiver
) -> None:
    serve_record(openrouter, total_cost=0.0241)  # OpenRouter's record disagrees with the response
    openrouter.set_fault("generation", Fault(status=404, times=3))
    handler = CallbackHandler(price_catalog=endpoint_catalog, generation_stats_fetcher=make_fetcher())
    chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
    (generation,) = exported(handler.flush, otlp_receiver)
    assert_reconciled(generation, record_total=0.0241)
    assert generation.cost_details["other"] == pytest.approx(0.0241 - AT_ENDPOINT_PRICES, abs=1e-12)
    assert [r.query["id"][0] for r in lookups(openrouter)] == [
        generation.metadata["openrouter"]["generation_id"]
    ] * 4


def test_without_the_record_langchain_prices_at_the_list_price(
    openrouter, endpoint_catalog, langfuse_client, otlp_receiver
) -> None:
    """What the record fixes: LangChain loses the provider, so the model-level price was used."""
    serve_record(openrouter, total_cost=0.0241)
    handler = CallbackHandler(price_catalog=endpoint_catalog)
    chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
    (generation,) = exported(handler.flush, otlp_receiver)
    meta = generation.metadata["openrouter"]
    assert "provider" not in meta and meta["pricing_source"] == "models"
    assert "total_cost" not in meta and lookups(openrouter) == []


def test_chat_openrouter_stream_gets_its_provider_from_the_record(
    openrouter, endpoint_catalog, make_fetcher, langfuse_client, otlp_receiver
) -> None:
    serve_record(openrouter, total_cost=AT_ENDPOINT_PRICES)
    handler = CallbackHandler(
        price_catalog=endpoint_catalog, generation_stats_fetcher=make_fetcher(), savings_score=True
    )
    assert list(chat_openrouter(openrouter).stream("hello", config={"callbacks": [handler]}))
    (generation,) = exported(handler.flush, otlp_receiver)
    assert_reconciled(generation, record_total=AT_ENDPOINT_PRICES)
    assert "reconciliation_delta" not in generation.metadata["openrouter"]  # zero: not written
    (score,) = otlp_receiver.scores()  # recorded once, from the reconciled numbers
    assert score["observationId"] == generation.span_id
    assert score["value"] == pytest.approx(9_000 * 0.000003 - (0.0018 + 0.01125))


async def test_chat_openrouter_ainvoke_is_reconciled(
    openrouter, endpoint_catalog, make_fetcher, langfuse_client, otlp_receiver
) -> None:
    serve_record(openrouter, total_cost=0.025)
    openrouter.set_fault("generation", Fault(status=404, times=1))
    handler = CallbackHandler(price_catalog=endpoint_catalog, generation_stats_fetcher=make_fetcher())
    await chat_openrouter(openrouter).ainvoke("hello", config={"callbacks": [handler]})
    (generation,) = exported(handler.flush, otlp_receiver)
    assert_reconciled(generation, record_total=0.025)


def test_chat_openai_stream_loses_the_id_so_nothing_is_looked_up(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver
) -> None:
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=make_fetcher())
    assert list(chat_openai(openrouter).stream("hello", config={"callbacks": [handler]}))
    (generation,) = exported(handler.flush, otlp_receiver)
    meta = generation.metadata["openrouter"]
    assert "generation_id" not in meta and meta["cost_source"] == "computed"
    assert "total_cost" not in meta and lookups(openrouter) == []


@pytest.mark.parametrize("stream", [False, True])
def test_llama_index_openrouter_is_reconciled(
    openrouter, endpoint_catalog, make_fetcher, langfuse_client, otlp_receiver, stream
) -> None:
    serve_record(openrouter, total_cost=0.0241)
    openrouter.set_fault("generation", Fault(status=404, times=2))
    handler = set_global_handler(price_catalog=endpoint_catalog, generation_stats_fetcher=make_fetcher())
    llm = llama_openrouter(openrouter)
    try:
        if stream:
            assert list(llm.stream_chat(HELLO))[-1].message.content
        else:
            assert llm.chat(HELLO).message.content
        returned_at = time.time_ns()
    finally:
        handler.close()
    (generation,) = exported(handler.flush, otlp_receiver)
    assert_reconciled(generation, record_total=0.0241)
    assert generation.end_time_unix_nano <= returned_at
    assert len(lookups(openrouter)) == 3


# ---------------------------------------------------------------------------- retries and giving up


def test_429_retry_after_is_honoured(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_fault("generation", Fault(status=429, headers={"Retry-After": "1"}, times=1))
    handler = CallbackHandler(
        price_catalog=catalog, generation_stats_fetcher=make_fetcher(initial_backoff=0.01, max_backoff=0.01)
    )
    chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
    (generation,) = exported(handler.flush, otlp_receiver)
    assert generation.metadata["openrouter"]["total_cost"] == pytest.approx(AT_ENDPOINT_PRICES)
    first, second = lookups(openrouter)
    assert second.received_at - first.received_at >= 0.9  # Retry-After, not the 10 ms backoff


def test_a_server_error_gives_up_with_one_warning(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver, caplog
) -> None:
    openrouter.set_fault("generation", Fault(status=500))
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=make_fetcher())
    with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"):
        for _ in range(2):
            chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        generations = exported(handler.flush, otlp_receiver, 2)
    for generation in generations:
        assert_response_numbers_only(generation)
    assert len(lookups(openrouter)) == 2  # no retry on 500
    (warning,) = warnings_of(caplog)
    assert "HTTP 500" in warning.getMessage()


@pytest.mark.parametrize(
    "fault",
    [Fault(hold=threading.Event()), Fault(invalid_json=True), Fault(truncate=True)],
    ids=["slower-than-the-request-timeout", "bad-json", "truncated"],
)
def test_timeouts_and_bad_responses_give_up(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver, caplog, fault
) -> None:
    openrouter.set_fault("generation", fault)  # a held answer comes only when the test releases it
    handler = CallbackHandler(
        price_catalog=catalog, generation_stats_fetcher=make_fetcher(request_timeout=0.2)
    )
    try:
        with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"):
            chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
            (generation,) = exported(handler.flush, otlp_receiver)  # while the slow server holds its answer
    finally:
        if fault.hold is not None:
            fault.hold.set()
    assert_response_numbers_only(generation)
    (warning,) = warnings_of(caplog)
    assert len(lookups(openrouter)) == 1  # gave up, no retry
    if fault.hold is not None:
        assert "timed out after 0.2 s" in warning.getMessage()


def test_a_record_that_never_appears_gives_up_within_the_bound(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver, caplog
) -> None:
    openrouter.auto_register_generations = False  # /generation answers 404 forever
    fetcher = make_fetcher(total_timeout=0.6, initial_backoff=0.05, max_backoff=0.1)
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=fetcher)
    with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"):
        chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        (generation,) = exported(handler.flush, otlp_receiver)
    assert_response_numbers_only(generation)
    assert len(lookups(openrouter)) >= 3  # retried with backoff
    (warning,) = warnings_of(caplog)
    assert "no record after 0.6 s" in warning.getMessage()


# ---------------------------------------------------------------------------- timing and exports


def test_exported_once_with_its_true_end_and_the_call_never_waits(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver
) -> None:
    answer = threading.Event()
    openrouter.set_fault("generation", Fault(hold=answer))  # /generation answers when the test says
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=make_fetcher())
    try:
        chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        returned_at = time.time_ns()
        # the call returned while its lookup was held: the lookup is not on the caller's path
        time.sleep(0.6)  # longer than the client's 0.5 s export interval: still held back
        assert otlp_receiver.generations() == []
        threading.Timer(0.3, answer.set).start()  # the record comes while flush() is waiting
        (generation,) = exported(handler.flush, otlp_receiver)
    finally:
        answer.set()
    # handler.flush() waited for the held lookup: the record's cost is in
    assert generation.metadata["openrouter"]["total_cost"] == pytest.approx(AT_ENDPOINT_PRICES)
    assert generation.start_time_unix_nano < generation.end_time_unix_nano <= returned_at

    langfuse_client.flush()
    assert len(otlp_receiver.generations()) == 1  # exported exactly once


def test_langfuse_flush_waits_for_pending_lookups(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_fault("generation", Fault(delay=0.3))
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=make_fetcher())
    chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
    langfuse_client.flush()  # not the handler's: the span processor on Langfuse's provider waits
    (generation,) = otlp_receiver.generations()
    assert generation.metadata["openrouter"]["total_cost"] == pytest.approx(AT_ENDPOINT_PRICES)


def test_queue_full_exports_without_the_record_with_one_warning(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver, caplog
) -> None:
    openrouter.set_fault("generation", Fault(delay=0.4))
    fetcher = make_fetcher(max_pending=1, max_in_flight=1)
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=fetcher)
    with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"):
        for _ in range(3):
            chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        assert fetcher.pending == 1  # only the first call's lookup was taken
        otlp_receiver.wait_for_generations(2, timeout=3)  # the other two were not held back
        generations = exported(handler.flush, otlp_receiver, 3)
    with_record = [g for g in generations if "total_cost" in g.metadata["openrouter"]]
    assert len(with_record) == 1
    (warning,) = warnings_of(caplog)
    assert "already pending" in warning.getMessage()


def test_no_thread_or_state_left_behind(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    openrouter.set_fault("generation", Fault(status=404, times=4))
    fetcher = make_fetcher(max_in_flight=2, idle_timeout=0.3)
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=fetcher)
    inputs = [f"q {marker(prompt_tokens=1_000 + i, cost=(1_000 + i) / 10**6)}" for i in range(12)]
    chat_openai(openrouter).batch(inputs, config={"callbacks": [handler]})
    assert fetcher.workers <= 2
    generations = exported(handler.flush, otlp_receiver, 12)
    for generation in generations:
        meta = generation.metadata["openrouter"]
        assert meta["total_cost"] == pytest.approx(meta["native_tokens_prompt"] / 10**6)
    assert fetcher.pending == 0 and fetcher._heap == [] and handler._calls == {}
    deadline = time.monotonic() + 3
    while fetcher.workers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fetcher.workers == 0  # the pool leaves when idle, and comes back when needed
    names = [t.name for t in threading.enumerate()]
    assert sum(n == "langfuse-openrouter-generation-stats" for n in names) <= 2


def test_an_error_while_applying_the_record_is_logged_once_and_the_generation_still_ends(
    openrouter, make_fetcher, langfuse_client, otlp_receiver, caplog
) -> None:
    class _BrokenForProviders(PriceCatalog):
        def pricing_for(self, model: Any, provider: str | None = None, **kwargs: Any) -> Any:
            if provider:
                raise RuntimeError("endpoint prices exploded")
            return super().pricing_for(model, provider, **kwargs)

    catalog = _BrokenForProviders({REQUESTED: SONNET}, offline=True)
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=make_fetcher())
    with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"):
        for _ in range(2):
            assert chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]}).content
        generations = exported(handler.flush, otlp_receiver, 2)
    for generation in generations:
        assert_response_numbers_only(generation)
    (error,) = warnings_of(caplog)
    assert "endpoint prices exploded" in error.exc_text


# ---------------------------------------------------------------------------- configuration


def test_no_api_key_warns_once_and_turns_the_feature_off(
    openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch, caplog
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY")
    with caplog.at_level(logging.DEBUG, logger="langfuse_openrouter_callbacks"):
        handler = CallbackHandler(price_catalog=catalog, fetch_generation_stats=True)
        LlamaIndexHandler(price_catalog=catalog, fetch_generation_stats=True)
        chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        (generation,) = exported(handler.flush, otlp_receiver)
    (warning,) = warnings_of(caplog)
    assert "OPENROUTER_API_KEY" in warning.getMessage()
    assert_response_numbers_only(generation)
    assert lookups(openrouter) == []


def test_the_environment_turns_it_on_and_the_argument_wins(
    openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch
) -> None:
    monkeypatch.setenv(ENV_FLAG, "true")
    shared = GenerationStatsFetcher.shared()
    try:
        assert CallbackHandler(price_catalog=catalog, fetch_generation_stats=False)._generation_stats is None
        handler = CallbackHandler(price_catalog=catalog)
        assert handler._generation_stats is shared and shared.api_base == openrouter.base_url
        chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        (generation,) = exported(handler.flush, otlp_receiver)
        assert generation.metadata["openrouter"]["total_cost"] == pytest.approx(AT_ENDPOINT_PRICES)
        monkeypatch.setenv(ENV_FLAG, "0")
        assert CallbackHandler(price_catalog=catalog)._generation_stats is None
        assert CallbackHandler(price_catalog=catalog, fetch_generation_stats=True)._generation_stats is shared
    finally:
        shared.close()


def test_the_api_key_never_leaks(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver, caplog
) -> None:
    handler = CallbackHandler(
        price_catalog=catalog, generation_stats_fetcher=make_fetcher(request_timeout=0.2)
    )
    llm = chat_openai(openrouter)
    with caplog.at_level(logging.DEBUG):  # every logger: ours, httpx's, httpcore's
        for fault in (Fault(status=404, times=2), Fault(status=500), Fault(delay=0.5), Fault(status=401)):
            openrouter.set_fault("generation", fault)
            llm.invoke("hello", config={"callbacks": [handler]})
            handler.flush()
        exported(handler.flush, otlp_receiver, 4)
    assert warnings_of(caplog)  # failures were reported...
    logged = "\n".join(
        [caplog.text] + [f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records]
    )
    assert SECRET not in logged  # ...without the key
    assert SECRET not in repr(handler._generation_stats)
    for span in otlp_receiver.spans:
        assert SECRET not in json.dumps(span.attributes, default=str)
    assert SECRET.encode() not in otlp_receiver.all_wire_bytes()
    for request in lookups(openrouter):  # only ever in the Authorization header
        assert request.header("authorization") == f"Bearer {SECRET}"
        assert SECRET not in request.path and SECRET not in json.dumps(request.query)


# ---------------------------------------------------------------------------- interpreter exit


_EXIT_SCRIPT = """
import time, uuid
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langfuse_openrouter_callbacks import PriceCatalog
from langfuse_openrouter_callbacks.generation_stats import GenerationStatsFetcher
from langfuse_openrouter_callbacks.langchain import CallbackHandler

fetcher = GenerationStatsFetcher(initial_delay=0, total_timeout=60, request_timeout=60)
handler = CallbackHandler(
    price_catalog=PriceCatalog({{{requested!r}: {prices!r}}}, offline=True), generation_stats_fetcher=fetcher
)
# The events ChatOpenAI sends for an OpenRouter call (its import alone would double this script's time).
run_id = uuid.uuid4()
model = {{
    "id": ["langchain", "chat_models", "openai", "ChatOpenAI"],
    "kwargs": {{"openai_api_base": {base_url!r}}},
}}
handler.on_chat_model_start(model, [[]], run_id=run_id, invocation_params={{"model": {requested!r}}})
output = {{"id": {gen_id!r}, "model_name": {dated!r}, "token_usage": {usage!r}}}
result = LLMResult(generations=[[ChatGeneration(message=AIMessage("ok"))]], llm_output=output)
handler.on_llm_end(result, run_id=run_id)
print(time.time_ns(), flush=True)
time.sleep(0.3)  # the lookup is in flight now (the server holds it)
# no flush: the script just ends while the lookup is pending
"""


def test_at_exit_pending_generations_end_with_what_they_have(
    openrouter, langfuse_client, otlp_receiver
) -> None:
    held = threading.Event()  # the lookup is still in flight at exit: never answered while the script runs
    openrouter.set_fault("generation", Fault(hold=held))
    script = _EXIT_SCRIPT.format(
        requested=REQUESTED,
        dated=DATED,
        prices=SONNET,
        base_url=openrouter.base_url,
        gen_id=new_generation_id(),
        usage=CACHED_CALL.to_json(),
    )
    env = {
        **os.environ,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-exit",
        "LANGFUSE_SECRET_KEY": "sk-lf-exit",
        "LANGFUSE_BASE_URL": otlp_receiver.base_url,
    }
    try:  # a script that waited for the lookup would outlive the 60 s the server holds it
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        held.set()
    assert result.returncode == 0, result.stderr
    returned_at = int(result.stdout.split()[-1])
    (generation,) = otlp_receiver.wait_for_generations(1, timeout=5)
    assert "total_cost" not in generation.metadata["openrouter"]
    assert generation.cost_details["total"] == pytest.approx(AT_ENDPOINT_PRICES)
    assert generation.end_time_unix_nano <= returned_at
    assert len(lookups(openrouter)) == 1


# ---------------------------------------------------------------------------- invalid numbers in a record


def test_invalid_numbers_in_a_record_never_reach_langfuse(
    openrouter, catalog, make_fetcher, langfuse_client, otlp_receiver, caplog
) -> None:
    """NaN/Infinity latencies (the fake serves them as Python's json does), a negative total, a flag
    for a count, strings and 1e300: each is written as null with a warning; the metadata stays JSON."""
    serve_record(
        openrouter,
        latency=float("nan"),
        generation_time=float("inf"),
        total_cost=-0.5,
        cache_discount="lots",
        native_tokens_prompt=True,
        native_tokens_completion=1e300,
        is_byok="no",
        provider_responses=[{"status": 200, "latency": float("-inf"), "cost": 1e300, "provider_name": "A"}],
    )
    handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=make_fetcher())
    with caplog.at_level(logging.WARNING, logger="langfuse_openrouter_callbacks"):
        chat_openai(openrouter).invoke("hello", config={"callbacks": [handler]})
        (generation,) = exported(handler.flush, otlp_receiver)

    def not_json(constant: str) -> Any:
        raise AssertionError(f"{constant} in the exported metadata")

    raw = generation.attributes["langfuse.observation.metadata.openrouter"]
    meta = json.loads(raw, parse_constant=not_json)  # strict JSON
    for key in (
        "latency",
        "generation_time",
        "total_cost",
        "cache_discount",
        "native_tokens_prompt",
        "native_tokens_completion",
        "is_byok",
    ):
        assert meta[key] is None, key
    assert meta["provider_responses"] == [
        {"status": 200, "latency": None, "cost": None, "provider_name": "A"}
    ]
    # no trustworthy total in the record: the response's numbers stand
    assert generation.cost_details["total"] == pytest.approx(AT_ENDPOINT_PRICES)
    assert generation.usage_details == EXPECTED_USAGE
    warned = " ".join(r.getMessage() for r in warnings_of(caplog))
    assert "latency=nan" in warned and "total_cost=" in warned and "native_tokens_prompt=True" in warned
