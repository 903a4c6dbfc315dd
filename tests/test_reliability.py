"""Reliability: bad input into the handlers, Langfuse down, secrets kept out, concurrent mixed frameworks."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import llama_index.core
import pytest
from hypothesis import HealthCheck, example, given, settings
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_openai import ChatOpenAI
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.llms.openrouter import OpenRouter

from langfuse_openrouter_callbacks import PriceCatalog
from langfuse_openrouter_callbacks.langchain import CallbackHandler
from langfuse_openrouter_callbacks.llama_index import LlamaIndexHandler, set_global_handler
from tests.scenario import DATED, REQUESTED, SONNET
from tests.strategies import usage_like, usage_like_dicts
from tests.support.openrouter_server import ResponseSpec, Usage, marker, marker_responder, model_entry
from tests.support.otlp_receiver import ExportedSpan

LOGGER = "langfuse_openrouter_callbacks"

few = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def assert_sane(generation: ExportedSpan) -> None:
    """What a generation may never carry, whatever came in."""
    usage = generation.usage_details or {}
    for key, value in usage.items():
        assert type(value) is int and value >= 0, (key, value)
    costs = generation.cost_details or {}
    for key, value in costs.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        assert value >= 0, (key, value)
    if costs and len(costs) > 1:
        parts = sum(v for k, v in costs.items() if k != "total")
        assert parts == pytest.approx(costs["total"], rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------- bad input, end events


def _one_langchain_call(langfuse_session: Any, serialized: dict, result: LLMResult) -> tuple[Any, Any]:
    """A fresh handler starts one run of the chat model `serialized` describes and ends it with `result`
    (logging silenced): the handler, and the one generation exported."""
    client, receiver = langfuse_session.ensure(), langfuse_session.receiver
    client.flush()
    receiver.reset()
    handler = CallbackHandler(price_catalog=PriceCatalog({REQUESTED: SONNET}, offline=True))
    run_id = uuid.uuid4()
    handler.on_chat_model_start(serialized, [[]], run_id=run_id, invocation_params={"model": REQUESTED})
    logging.disable(logging.CRITICAL)
    try:
        handler.on_llm_end(result, run_id=run_id)
    finally:
        logging.disable(logging.NOTSET)
    client.flush()
    (generation,) = receiver.generations()
    return handler, generation


@few
@given(response_metadata=usage_like_dicts, llm_output=usage_like_dicts)
@example(response_metadata={}, llm_output={"usage": {"prompt_tokens": 2**53}})  # Langfuse: a string
def test_langchain_end_event_with_junk_never_raises_and_exports_sane_numbers(
    langfuse_session, response_metadata: dict, llm_output: dict
) -> None:
    message = AIMessage(content="ok", response_metadata=response_metadata)
    result = LLMResult(generations=[[ChatGeneration(message=message)]], llm_output=llm_output)
    chat_openai = {
        "id": ["langchain", "chat_models", "openai", "ChatOpenAI"],
        "kwargs": {"openai_api_base": "https://openrouter.ai/api/v1"},
    }
    handler, generation = _one_langchain_call(langfuse_session, chat_openai, result)
    assert_sane(generation)
    assert handler._calls == {}


@pytest.mark.parametrize("generations", [[], [[]]], ids=["no-generations", "empty-generation-list"])
def test_langchain_result_without_a_generation_still_ends_the_generation(
    langfuse_session, generations: list
) -> None:
    """OpenRouter usage to record but no generation to take the output from: Langfuse's own step
    fails there; the generation is still ended and exported, nothing is left behind."""
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "cost": 0.0004, "is_byok": False}
    result = LLMResult(generations=generations, llm_output={"token_usage": usage, "id": "gen-1"})
    chat_openrouter = {"id": ["langchain", "chat_models", "openrouter", "ChatOpenRouter"], "kwargs": {}}
    handler, generation = _one_langchain_call(langfuse_session, chat_openrouter, result)
    assert generation.end_time_unix_nano
    assert handler._runs == {} and handler._calls == {}


@few
@given(raw=usage_like)
def test_llama_index_end_event_with_junk_never_raises_and_exports_sane_numbers(
    langfuse_session, raw: Any
) -> None:
    client, receiver = langfuse_session.ensure(), langfuse_session.receiver
    client.flush()
    receiver.reset()
    handler = LlamaIndexHandler(price_catalog=PriceCatalog({REQUESTED: SONNET}, offline=True))
    llm = OpenRouter(api_key="sk-or-test", model=REQUESTED)
    messages = [ChatMessage(role="user", content="hi")]
    span_id = f"OpenRouter.chat-{uuid.uuid4()}"
    bound = inspect.signature(lambda messages: None).bind(messages)
    # what LlamaIndex's dispatcher tells the handler of one `llm.chat(messages)`
    handler._span_handler.span_enter(id_=span_id, bound_args=bound, instance=llm)
    start = LLMChatStartEvent(model_dict={}, messages=messages, additional_kwargs={}, span_id=span_id)
    handler._event_handler.handle(start)
    response = ChatResponse(message=ChatMessage(role="assistant", content="ok"), raw=raw)
    logging.disable(logging.CRITICAL)
    try:
        handler._event_handler.handle(LLMChatEndEvent(messages=messages, response=response, span_id=span_id))
        handler._span_handler.span_exit(id_=span_id, bound_args=bound, instance=llm, result=response)
    finally:
        logging.disable(logging.NOTSET)
    client.flush()
    (generation,) = receiver.generations()
    assert_sane(generation)
    assert handler._open == {} and handler._generations == {}


def test_malformed_usage_gets_a_clear_warning_and_the_generation_is_still_exported(
    fake_openrouter, langfuse_client, otlp_receiver, caplog
) -> None:
    fake_openrouter.set_default(
        ResponseSpec(
            model=DATED,
            provider="Anthropic",
            usage=Usage(
                prompt_tokens=100, completion_tokens=10, cost=0.0005, extra={"cost": "NaN", "is_byok": 3}
            ),
        )
    )
    llm = ChatOpenAI(base_url=fake_openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)
    handler = CallbackHandler(price_catalog=PriceCatalog({REQUESTED: SONNET}, offline=True))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert llm.invoke("hi", config={"callbacks": [handler]}).content
    langfuse_client.flush()
    (generation,) = otlp_receiver.generations()
    assert_sane(generation)
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "cost='NaN'" in warnings and "is_byok=3" in warnings
    # no trustworthy reported cost: computed from prices, and said so
    assert generation.metadata["openrouter"]["cost_source"] == "computed"
    assert generation.cost_details["total"] == pytest.approx(100 * 0.000003 + 10 * 0.000015)


def test_a_reported_cost_far_below_the_computed_one_leaves_no_bucket_negative(
    fake_openrouter, langfuse_client, otlp_receiver
) -> None:
    """OpenRouter reports 2.4e-18 for a call that lists at 4e-6 in four equal buckets: scaled down,
    each share is below the 1e-18 rounding unit; the residue never makes a bucket negative."""
    fake_openrouter.set_default(
        ResponseSpec(
            model=DATED,
            provider="Anthropic",
            usage=Usage(
                prompt_tokens=3, cached_tokens=1, cache_write_tokens=1, completion_tokens=1, cost=2.4e-18
            ),
        )
    )
    equal = {"prompt": "0.000001", "completion": "0.000001", "input_cache_read": "0.000001"}
    catalog = PriceCatalog({REQUESTED: {**equal, "input_cache_write": "0.000001"}}, offline=True)
    llm = ChatOpenAI(base_url=fake_openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)
    llm.invoke("hi", config={"callbacks": [CallbackHandler(price_catalog=catalog)]})
    langfuse_client.flush()
    (generation,) = otlp_receiver.generations()
    assert_sane(generation)
    assert generation.cost_details["total"] == 2.4e-18
    assert generation.metadata["openrouter"]["cost_source"] == "openrouter"


# ---------------------------------------------------------------------------- Langfuse down


def test_langfuse_answering_500_never_breaks_the_chain(
    fake_openrouter, langfuse_client, otlp_receiver
) -> None:
    otlp_receiver.fail_with(500)
    llm = ChatOpenAI(base_url=fake_openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)
    handler = CallbackHandler(price_catalog=PriceCatalog(offline=True))
    for _ in range(3):
        assert llm.invoke("hi", config={"callbacks": [handler]}).content == "Hello from the fake OpenRouter."
    langfuse_client.flush()
    assert otlp_receiver.rejected_exports >= 1


def test_langfuse_unreachable_never_breaks_the_chain_or_the_query(fake_openrouter, langfuse_session) -> None:
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

    from tests.support.langfuse_session import _unregister

    provider = TracerProvider()
    client = Langfuse(
        public_key="pk-lf-unreachable",
        secret_key="sk-lf-unreachable",
        base_url="http://127.0.0.1:9",
        tracer_provider=provider,
        timeout=1,
    )
    try:
        catalog = PriceCatalog(offline=True)
        handler = CallbackHandler(public_key="pk-lf-unreachable", price_catalog=catalog)
        llm = ChatOpenAI(
            base_url=fake_openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0
        )
        assert llm.invoke("hi", config={"callbacks": [handler]}).content
        li_llm = OpenRouter(
            api_base=fake_openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0
        )
        li_handler = set_global_handler(public_key="pk-lf-unreachable", price_catalog=catalog)
        try:
            assert li_llm.chat([ChatMessage(role="user", content="hi")]).message.content
        finally:
            li_handler.close()
        client.flush()  # the export fails inside Langfuse's exporter, quietly for the user
    finally:
        _unregister("pk-lf-unreachable")
        provider.shutdown()


# ---------------------------------------------------------------------------- Langfuse faults with scores on

SCORES_PATH = "/api/public/scores"
SCORED_PROGRAM = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
from langchain_openai import ChatOpenAI
from langfuse import Langfuse
from langfuse_openrouter_callbacks import PriceCatalog
from langfuse_openrouter_callbacks.langchain import CallbackHandler
from tests.scenario import REQUESTED, SONNET

Langfuse(timeout=600)  # a patient client: each score request may take up to 10 minutes
handler = CallbackHandler(price_catalog=PriceCatalog({REQUESTED: SONNET}, offline=True), savings_score=True)
llm = ChatOpenAI(base_url=sys.argv[1], api_key="sk-or-test", model=REQUESTED, max_retries=0)
for _ in range(int(sys.argv[2])):
    llm.invoke("hi", config={"callbacks": [handler]})
handler.flush()
print("flushed", flush=True)
"""


def _our_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(LOGGER + " WARNING")]


@pytest.mark.parametrize("fault", ["hang", 401, 413])
def test_with_scores_on_a_faulty_langfuse_never_keeps_the_program_from_exiting(
    openrouter, fault: Any, tmp_path: Path
) -> None:
    """Langfuse's own score queue waits for every score at flush and at exit, retried: with the
    scores endpoint hanging the program never exits. Ours are bounded: the program flushes and
    exits while Langfuse still holds the request, with one warning for the scores dropped."""
    import os
    import subprocess
    import sys

    from tests.support.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as langfuse:
        if fault == "hang":
            langfuse.hang(SCORES_PATH)
        else:
            langfuse.set_json_route("POST", SCORES_PATH, fault, {"message": "rejected"})
        env = {
            **os.environ,
            "LANGFUSE_PUBLIC_KEY": "pk-lf-scores",
            "LANGFUSE_SECRET_KEY": "sk-lf-scores",
            "LANGFUSE_BASE_URL": langfuse.base_url,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        try:
            done = subprocess.run(
                [sys.executable, "-c", SCORED_PROGRAM, openrouter.base_url, "10"],
                env=env,
                capture_output=True,
                text=True,
                timeout=240,  # far beyond the bounded wait: only a program that cannot exit reaches it
            )
        except subprocess.TimeoutExpired:
            pytest.fail("the program did not exit")
        held_at_exit = langfuse.held
        sent = [r for r in langfuse.other_requests if r.path == SCORES_PATH]
    assert done.returncode == 0, done.stderr[-2000:]
    assert "flushed" in done.stdout
    assert len(langfuse.generations()) == 10  # the generations themselves are exported
    (warning,) = _our_warnings(done.stderr)
    assert "dropped" in warning and "score" in warning
    assert sent  # the scores were offered to Langfuse
    if fault == "hang":
        assert held_at_exit >= 1  # it exited while Langfuse still held a request open


def test_scores_waiting_for_a_hanging_langfuse_are_bounded_and_flush_returns(
    openrouter, langfuse_client, otlp_receiver, monkeypatch, caplog
) -> None:
    from langfuse_openrouter_callbacks import _scores

    monkeypatch.setattr(_scores, "MAX_PENDING", 20)
    monkeypatch.setattr(_scores, "FLUSH_TIMEOUT", 0.5)
    monkeypatch.setattr(_scores, "_warned", False)
    otlp_receiver.hang(SCORES_PATH)
    handler = CallbackHandler(
        price_catalog=PriceCatalog({REQUESTED: SONNET}, offline=True), savings_score=True
    )
    llm = ChatOpenAI(base_url=openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(60):
            llm.invoke("hi", config={"callbacks": [handler]})
            assert _scores.pending() <= 20
        handler.flush()
    assert _scores.pending() <= 1  # at most the request Langfuse is holding
    assert len(otlp_receiver.generations()) == 60
    (warning,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert "dropped" in warning.getMessage()


def test_our_scores_carry_what_langfuses_create_score_sends(
    openrouter, langfuse_client, otlp_receiver
) -> None:
    """Our scores are sent the way Langfuse's client sends them (same endpoint, same fields), from
    the client attributes read for that (`_tracing_enabled`, `_environment`, `api`): fail loudly
    when Langfuse changes them."""
    from langfuse_openrouter_callbacks import _scores

    catalog = PriceCatalog({REQUESTED: SONNET}, offline=True)
    llm = ChatOpenAI(base_url=openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0)
    llm.invoke("hi", config={"callbacks": [CallbackHandler(price_catalog=catalog, savings_score=True)]})
    assert _scores.flush()
    (ours,) = otlp_receiver.scores()
    trace_id, observation_id = ours["traceId"], ours["observationId"]
    langfuse_client.create_score(
        name="theirs", value=0.5, trace_id=trace_id, observation_id=observation_id, data_type="NUMERIC"
    )
    langfuse_client.flush()
    theirs = next(s for s in otlp_receiver.scores() if s["name"] == "theirs")
    assert set(ours) == set(theirs), (ours, theirs)
    for key in set(ours) - {"id", "name", "value", "timestamp"}:
        assert ours[key] == theirs[key], key
    assert isinstance(langfuse_client._tracing_enabled, bool)


# ---------------------------------------------------------------------------- secrets


SECRET_OPENROUTER_KEY = "sk-or-v1-" + "5ecre7" * 8


def test_secrets_never_reach_spans_logs_warnings_or_cache_files(
    fake_openrouter, langfuse_client, otlp_receiver, caplog, recwarn, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", SECRET_OPENROUTER_KEY)
    fake_openrouter.set_models([model_entry(REQUESTED, SONNET, canonical_slug=DATED)])
    catalog = PriceCatalog(api_base=fake_openrouter.base_url, cache_dir=tmp_path)
    catalog.refresh()
    fake_openrouter.queue(ResponseSpec(status=401, error_body={"error": {"code": 401, "message": "bad key"}}))
    with caplog.at_level(logging.DEBUG):
        llm = ChatOpenAI(
            base_url=fake_openrouter.base_url, api_key=SECRET_OPENROUTER_KEY, model=REQUESTED, max_retries=0
        )
        handler = CallbackHandler(price_catalog=catalog, savings_score=True)
        with pytest.raises(Exception):  # noqa: B017 - the 401, as the user's code sees it
            llm.invoke("hi", config={"callbacks": [handler]})
        llm.invoke("hi", config={"callbacks": [handler]})
        li_llm = OpenRouter(api_base=fake_openrouter.base_url, api_key=SECRET_OPENROUTER_KEY, model=REQUESTED)
        li_handler = set_global_handler(price_catalog=catalog)
        try:
            li_llm.chat([ChatMessage(role="user", content="hi")])
        finally:
            li_handler.close()
        langfuse_client.flush()
    assert otlp_receiver.generations()
    langfuse_secret = langfuse_client._resources.secret_key
    for secret in (SECRET_OPENROUTER_KEY, langfuse_secret):
        for span in otlp_receiver.spans:
            assert secret not in repr(span.attributes)
        for record in caplog.records:
            assert secret not in record.getMessage() and secret not in (record.exc_text or "")
        for warning in recwarn.list:
            assert secret not in str(warning.message)
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert secret not in path.read_text(errors="replace")
        for request in otlp_receiver.requests:  # auth goes in the header Langfuse sets, never in bodies
            assert secret.encode() not in request.body


# ---------------------------------------------------------------------------- concurrency


def test_threads_and_tasks_mixing_langchain_and_llama_index_never_cross_talk(
    fake_openrouter, langfuse_client, otlp_receiver
) -> None:
    fake_openrouter.set_responder(marker_responder(ResponseSpec(model=DATED, provider="Anthropic")))
    catalog = PriceCatalog({REQUESTED: SONNET}, offline=True)
    lc_handler = CallbackHandler(price_catalog=catalog)
    li_handler = set_global_handler(price_catalog=catalog)
    lc_llm = ChatOpenAI(
        base_url=fake_openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0
    )
    li_llm = OpenRouter(
        api_base=fake_openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0
    )

    def prompt(i: int) -> str:
        return f"call {i} " + marker(
            prompt_tokens=2_000 + i, cached_tokens=i, completion_tokens=1, cost=(2_000 + i) / 1e6
        )

    def in_thread(i: int) -> None:
        if i % 2:
            lc_llm.invoke(prompt(i), config={"callbacks": [lc_handler]})
        else:
            li_llm.chat([ChatMessage(role="user", content=prompt(i))])

    async def in_tasks() -> None:
        async def one(i: int) -> None:
            if i % 2:
                await lc_llm.ainvoke(prompt(i), config={"callbacks": [lc_handler]})
            else:
                await li_llm.achat([ChatMessage(role="user", content=prompt(i))])

        await asyncio.gather(*(one(i) for i in range(40, 80)))

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(in_thread, i) for i in range(40)]
        loop_thread = threading.Thread(target=lambda: asyncio.run(in_tasks()))
        loop_thread.start()
        for future in futures:
            future.result()
        loop_thread.join(timeout=60)
    li_handler.close()
    langfuse_client.flush()
    generations = otlp_receiver.generations()
    assert len(generations) == 80
    seen = set()
    for generation in generations:
        i = generation.usage_details.get("input_cache_read", 0)
        assert generation.usage_details["total"] == 2_000 + i + 1
        assert generation.cost_details["total"] == pytest.approx((2_000 + i) / 1e6)
        assert generation.attributes["langfuse.observation.input"].count("call ") == 1
        assert f"call {i} " in generation.attributes["langfuse.observation.input"]
        seen.add(i)
    assert seen == set(range(80))
    assert lc_handler._calls == {} and li_handler._open == {} and li_handler._generations == {}
    assert llama_index.core.global_handler is None
