"""What the Langfuse server stores for each LlamaIndex app traced by `set_global_handler()` or `instrument()`.

Each app (query engine, streamed query, chat engine, agent, workflow) runs against the local fake
OpenRouter; the exact OTLP requests the Langfuse client sent are handed to the Langfuse server's own
ingestion code (`langfuse-ingest`, node) and what it stores is checked: every generation with our
exact cost as the client-provided cost (the server prices nothing itself), and no other observation
priced. Skipped without node or a built harness: build one with `cp -r ../shared/tools/langfuse-ingest
/tmp/x && cd /tmp/x && npm ci && node build.mjs` and point `LANGFUSE_INGEST` at that directory.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool

from langfuse_openrouter_callbacks._openinference import instrument, uninstrument
from langfuse_openrouter_callbacks.demo.embedding import HashEmbedding
from tests.support.otlp_receiver import TRACES_PATH, OTLPReceiver
from tests.test_llama_index_agents import (  # noqa: F401 (clean_llama_index and handler are fixtures)
    CALL,
    QUESTION,
    TwoSteps,
    clean_llama_index,
    function_agent_responder,
    function_calling_llm,
    handler,
    multiply,
    openrouter_llm,
)

# A model Langfuse has a default price for: the server would price any observation naming it with usage.
PRICED = "openai/gpt-4.1-mini"
ANSWER = replace(CALL, model=PRICED, provider="OpenAI")

HARNESS = Path(os.environ.get("LANGFUSE_INGEST") or ".", "dist", "harness.cjs")

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not HARNESS.is_file(),
    reason="needs node and a built langfuse-ingest harness (LANGFUSE_INGEST=<dir with dist/harness.cjs>)",
)


def _index(server: Any) -> VectorStoreIndex:
    Settings.llm = openrouter_llm(server, PRICED)
    Settings.embed_model = HashEmbedding(model_name="hash-256")
    return VectorStoreIndex.from_documents(
        [Document(text="Lima is the capital of Peru."), Document(text="Paris is the capital of France.")]
    )


async def _query(server: Any) -> tuple[int, int]:
    index = _index(server)
    str(index.as_query_engine(similarity_top_k=1).query("What is the capital of Peru?"))
    return 1, 0


async def _streamed_query(server: Any) -> tuple[int, int]:
    response = _index(server).as_query_engine(similarity_top_k=1, streaming=True).query("Capital of Peru?")
    assert "".join(response.response_gen)
    return 1, 1


async def _chat(server: Any) -> tuple[int, int]:
    engine = _index(server).as_chat_engine(chat_mode="condense_plus_context")
    await engine.achat("What is the capital of Peru?")
    await engine.achat("And of France?")  # the second turn condenses the question first: two requests
    return 3, 0


async def _agent(server: Any) -> tuple[int, int]:
    server.set_responder(function_agent_responder(ANSWER))
    llm = function_calling_llm(server, PRICED)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(multiply)], llm=llm)
    await agent.run(user_msg=QUESTION)
    return 2, 2


async def _workflow(server: Any) -> tuple[int, int]:
    await TwoSteps(openrouter_llm(server, PRICED)).run(topic="cats")
    return 2, 1


# app -> (LLM requests, of which streamed)
APPS: dict[str, Callable[[Any], Awaitable[tuple[int, int]]]] = {
    "query": _query,
    "streamed_query": _streamed_query,
    "chat": _chat,
    "agent": _agent,
    "workflow": _workflow,
}


def write_captures(receiver: OTLPReceiver, directory: Path) -> int:
    """The trace exports exactly as the Langfuse client POSTed them, in langfuse-ingest's format."""
    directory.mkdir(parents=True)
    exports = [r for r in receiver.trace_requests if r.path == TRACES_PATH]
    for n, request in enumerate(exports):
        capture = {"headers": request.headers, "body_b64": base64.b64encode(request.raw_body).decode()}
        (directory / f"{n:03d}.json").write_text(json.dumps(capture))
    return len(exports)


def stored(captures: Path, out: Path) -> dict[str, Any]:
    subprocess.run(["node", str(HARNESS), str(captures), str(out)], check=True, capture_output=True)
    return json.loads(out.read_text())


@pytest.fixture
def openinference(langfuse_client, langfuse_tracer_provider, catalog) -> Iterator[None]:
    """`instrument()`: OpenInference's instrumentation with our enrichment, off again afterwards."""
    instrument(tracer_provider=langfuse_tracer_provider, price_catalog=catalog)
    try:
        yield
    finally:
        uninstrument()


@pytest.mark.usefixtures("handler")
@pytest.mark.parametrize("app", list(APPS))
async def test_the_server_stores_our_cost_on_generations_and_prices_nothing_else(
    app, openrouter, langfuse_client, otlp_receiver, tmp_path
) -> None:
    await check_stored(app, openrouter, langfuse_client, otlp_receiver, tmp_path)


@pytest.mark.usefixtures("clean_llama_index", "openinference")
@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")  # OpenInference 4.6 calls it
@pytest.mark.parametrize("app", ["query", "streamed_query", "agent"])
async def test_the_same_through_openinference(
    app, openrouter, langfuse_client, otlp_receiver, tmp_path
) -> None:
    # OpenInference's LLM spans carry token counts the server would price: only ours may be priced
    await check_stored(app, openrouter, langfuse_client, otlp_receiver, tmp_path)


async def check_stored(
    app: str, openrouter: Any, langfuse_client: Any, otlp_receiver: Any, tmp_path: Path
) -> None:
    openrouter.set_default(ANSWER)
    requests, streamed = await APPS[app](openrouter)
    langfuse_client.flush()
    assert len(openrouter.chat_requests) == requests
    assert write_captures(otlp_receiver, tmp_path / "captures" / app)
    result = stored(tmp_path / "captures", tmp_path / "result.json")
    scenario = result["scenarios"][app]
    rows = [span for export in scenario["exports"] for span in export["spans"]]
    generations = [r for r in rows if r["events_full"]["type"] == "GENERATION"]
    # what is priced: exactly the generations of this app's LLM requests (the index's embeddings are not)
    llm_generations = [g for g in generations if g["sent"]["cost_details"]]
    assert len(llm_generations) == len(openrouter.chat_requests), [r["span_name"] for r in generations]
    for row in llm_generations:
        sent, full, legacy = row["sent"], row["events_full"], row["observations_legacy"]
        assert full["model_matches"], row["span_name"]  # the server knows a price for it...
        assert full["cost_provided"], row["span_name"]  # ...yet stores our cost, not one it computed
        assert full["cost_details"] == sent["cost_details"]  # every bucket as we sent it
        assert full["cost_details"]["total"] == pytest.approx(0.0241, abs=1e-12)
        assert full["usage_details"] == sent["usage_details"]
        assert full["usage_keys_dropped"] == [] and full["cost_keys_dropped"] == []
        assert legacy["total_cost_stored"] == pytest.approx(0.0241, abs=1e-12)
        assert full["metadata_openrouter"], row["span_name"]
    assert sum(bool(g["events_full"]["completion_start_time"]) for g in llm_generations) == streamed
    for row in rows:
        if row in llm_generations:
            continue
        full, legacy = row["events_full"], row["observations_legacy"]
        assert not any(full["cost_details"].values()), (row["span_name"], full["cost_details"])
        assert full["columns"]["total_cost_ALIAS_cost_details_total"] == 0, row["span_name"]
        assert not legacy.get("total_cost"), row["span_name"]
    assert [w for w in scenario["warnings"] if "Redis" not in w] == []  # the harness has no Redis
