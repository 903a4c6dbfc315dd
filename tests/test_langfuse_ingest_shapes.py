"""What the Langfuse server stores for the shapes of issue 13, recorded by the LangChain handler.

A Responses API call (`ChatOpenAI(use_responses_api=True)`), a Gemini call that creates a cache (reads
and writes overlap) and a BYOK call through `ChatOpenRouter`, each a bare LLM as the root run with
`langfuse_user_id`/`langfuse_session_id` in its metadata. The exact OTLP requests the Langfuse client
sent are handed to the Langfuse server's own ingestion code (`langfuse-ingest`, node): it must store
our buckets and total as given, the UI's input group summing to the prompt, and the ids unquoted.
Skipped without node or a built harness: build one with `cp -r ../shared/tools/langfuse-ingest /tmp/x
&& cd /tmp/x && npm ci && node build.mjs` and point `LANGFUSE_INGEST` at that directory.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from langchain_openrouter import ChatOpenRouter

from langfuse_openrouter_callbacks import PriceCatalog
from langfuse_openrouter_callbacks.langchain import CallbackHandler
from tests.scenario import CACHED_CALL, DATED, EXPECTED_USAGE, REQUESTED, SONNET
from tests.support.openrouter_server import FakeOpenRouter, ResponseSpec, Usage
from tests.support.otlp_receiver import TRACES_PATH, OTLPReceiver
from tests.test_langchain import GEMINI_FLASH

HARNESS = Path(os.environ.get("LANGFUSE_INGEST") or "/nonexistent") / "dist" / "harness.cjs"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not HARNESS.is_file(),
    reason="needs node and a built langfuse-ingest harness (LANGFUSE_INGEST=<dir with dist/harness.cjs>)",
)

GEMINI = "google/gemini-2.5-flash"
IDS = {"langfuse_user_id": "u-1", "langfuse_session_id": "s-1"}


def _responses_api(server: FakeOpenRouter, handler: CallbackHandler) -> tuple[dict[str, int], float]:
    server.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL))
    llm = ChatOpenAI(
        base_url=server.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0, use_responses_api=True
    )
    llm.invoke("hello", config={"callbacks": [handler], "metadata": IDS})
    # 1000 x 3e-6 + 6000 x 3e-7 + 3000 x 3.75e-6 + 300 x 15e-6 + 200 x 15e-6: LangChain drops the cost
    return EXPECTED_USAGE, 0.02355


def _gemini_cache_creation(server: FakeOpenRouter, handler: CallbackHandler) -> tuple[dict[str, int], float]:
    usage = Usage(
        prompt_tokens=2_168, completion_tokens=0, cached_tokens=2_161, cache_write_tokens=2_161, cost=None
    )
    server.set_default(ResponseSpec(model=GEMINI, provider="Google", usage=usage))
    llm = ChatOpenAI(base_url=server.base_url, api_key="sk-or-test", model=GEMINI, max_retries=0)
    llm.invoke("hello", config={"callbacks": [handler], "metadata": IDS})
    expected = {"input": 7, "input_cache_creation": 2_161, "cache_written_and_read": 2_161, "output": 0}
    return {**expected, "total": 2_168}, 0.000247013333333


def _chat_openrouter_byok(server: FakeOpenRouter, handler: CallbackHandler) -> tuple[dict[str, int], float]:
    usage = Usage(
        prompt_tokens=1_000, completion_tokens=100, cost=0.0, is_byok=True, upstream_inference_cost=0.00417
    )
    server.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=usage))
    llm = ChatOpenRouter(model=REQUESTED, api_key="sk-or-test", base_url=server.base_url, max_retries=0)
    llm.invoke("hello", config={"callbacks": [handler], "metadata": IDS})
    return {"input": 1_000, "output": 100, "total": 1_100}, 0.00417


CALLS = {
    "responses_api": _responses_api,
    "gemini_cache_creation": _gemini_cache_creation,
    "chat_openrouter_byok": _chat_openrouter_byok,
}


def _captures(receiver: OTLPReceiver, directory: Path) -> None:
    directory.mkdir(parents=True)
    exports = [r for r in receiver.trace_requests if r.path == TRACES_PATH]
    assert exports
    for n, request in enumerate(exports):
        capture = {"headers": request.headers, "body_b64": base64.b64encode(request.raw_body).decode()}
        (directory / f"{n:03d}.json").write_text(json.dumps(capture))


@pytest.mark.parametrize("call", list(CALLS))
def test_the_server_stores_our_buckets_total_and_unquoted_ids(
    call: str,
    fake_openrouter: FakeOpenRouter,
    langfuse_client: Any,
    otlp_receiver: OTLPReceiver,
    tmp_path,
    monkeypatch,
) -> None:
    monkeypatch.setenv("OPENROUTER_API_BASE", fake_openrouter.base_url)
    catalog = PriceCatalog({REQUESTED: SONNET, GEMINI: GEMINI_FLASH}, offline=True)
    usage_details, total = CALLS[call](fake_openrouter, CallbackHandler(price_catalog=catalog))
    langfuse_client.flush()
    _captures(otlp_receiver, tmp_path / "captures" / call)
    out = tmp_path / "result.json"
    subprocess.run(
        ["node", str(HARNESS), str(tmp_path / "captures"), str(out)], check=True, capture_output=True
    )
    scenario = json.loads(out.read_text())["scenarios"][call]
    rows = [span for export in scenario["exports"] for span in export["spans"]]
    (row,) = [r for r in rows if r["events_full"]["type"] == "GENERATION"]
    full = row["events_full"]
    assert full["cost_provided"]  # ours, not a price the server looked up
    assert full["usage_details"] == usage_details
    assert full["cost_details"]["total"] == pytest.approx(total, abs=1e-12)
    buckets = {k: v for k, v in full["cost_details"].items() if k != "total"}
    assert sum(buckets.values()) == pytest.approx(total, abs=1e-12)
    assert full["usage_keys_dropped"] == [] and full["cost_keys_dropped"] == []
    assert full["ui_usage"]["input"] == usage_details["total"] - usage_details["output"] - usage_details.get(
        "output_reasoning", 0
    )
    assert (full["user_id"], full["session_id"]) == ("u-1", "s-1")
