"""The demo on its embedded default: no keys, no network, real clients over local HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from langfuse_openrouter_callbacks.demo import cache_misses
from langfuse_openrouter_callbacks.demo.cache_misses import EXPIRED_AFTER, SESSIONS
from langfuse_openrouter_callbacks.demo.openrouter import EmbeddedOpenRouter, count_tokens, load_data
from tests.scenario import SERVICE_VARIABLES

REPO = Path(__file__).resolve().parents[1]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}


_DEMO_AND_REPORT = """
import dataclasses, json
from datetime import datetime, timezone
from langfuse_openrouter_callbacks.demo import run_demo
from langfuse_openrouter_callbacks.demo.run import DemoServices, run_calls
from langfuse_openrouter_callbacks.report import fetch_report

r = run_demo()
with DemoServices() as services:  # the savings report, read back from the embedded Langfuse
    run_calls(services)
    today = datetime.now(timezone.utc).date()
    report = fetch_report(today, today, client=services.langfuse, catalog=services.catalog,
                          check_disagreements=True)
    totals = {k: str(v) for k, v in dataclasses.asdict(report.totals).items()}
    stored = services.embedded_langfuse.observations({})
print(json.dumps({"openrouter": r.openrouter, "langfuse": r.langfuse, "spans": r.spans_received,
                  "rows": [dataclasses.asdict(x) for x in r.rows], "report": totals,
                  "cache_misses": report.as_dict()["cache_misses"], "stored": stored}, default=str))
"""


@pytest.fixture(scope="module")
def demo_run() -> dict:
    """The demo, and the report read back from its embedded Langfuse, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _DEMO_AND_REPORT],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["openrouter"] == "embedded" and result["langfuse"] == "embedded"
    assert result["spans"] > len(result["rows"])  # chains, queries and retrievals around the generations
    return result


@pytest.fixture(scope="module")
def demo_rows(demo_run: dict) -> list[dict]:
    return demo_run["rows"]


def test_the_report_reads_the_same_numbers_back_from_the_embedded_langfuse(demo_run) -> None:
    rows, report = demo_run["rows"], demo_run["report"]
    assert int(report["calls"]) == len(rows)
    assert int(report["cached_tokens"]) == sum(r["cache_read"] for r in rows)
    assert int(report["written_tokens"]) == sum(r["cache_write"] for r in rows)
    for money in ("cost", "savings"):
        assert Decimal(report[money]) == sum(Decimal(r[money]) for r in rows), money


def test_demo_runs_langchain_and_llamaindex_calls(demo_rows) -> None:
    frameworks = [r["framework"] for r in demo_rows]
    assert frameworks.count("LangChain") == 6 and frameworks.count("LlamaIndex") == 3
    assert all(r["cost_source"] == "openrouter" for r in demo_rows)


def test_explicit_cache_first_call_writes_then_later_calls_read(demo_rows) -> None:
    anthropic = [
        r for r in demo_rows if r["framework"] == "LangChain" and r["model"].startswith("anthropic/")
    ]
    first, *later = anthropic
    assert first["cache_write"] > 1024 and first["cache_read"] == 0
    assert Decimal(first["savings"]) < 0  # writes cost 1.25x the prompt price
    for row in later:
        assert row["cache_read"] == first["cache_write"] and row["cache_write"] == 0
        assert Decimal(row["savings"]) > 0


def test_implicit_cache_reads_a_shared_prefix_in_128_token_steps(demo_rows) -> None:
    for framework in ("LangChain", "LlamaIndex"):
        rows = [r for r in demo_rows if r["framework"] == framework and r["model"].startswith("openai/")]
        first, *later = rows
        assert first["cache_read"] == 0 and Decimal(first["savings"]) == 0
        for row in later:
            assert row["cache_read"] >= 1024 and row["cache_read"] % 128 == 0
            assert Decimal(row["savings"]) > 0


def test_demo_costs_follow_the_embedded_prices_exactly(demo_rows) -> None:
    prices = {m["canonical_slug"]: m["pricing"] for m in load_data()["models"].values()}
    for row in demo_rows:
        p = {k: Decimal(v) for k, v in prices[row["model"]].items()}
        expected = (
            row["input"] * p["prompt"]
            + row["cache_read"] * p["input_cache_read"]
            + row["cache_write"] * p.get("input_cache_write", p["prompt"])
            + (row["output"] + row["reasoning"]) * p["completion"]
        )
        assert Decimal(row["cost"]) == expected


# ---------------------------------------------------------------------------- the cache misses

MISSES = "LangChain (misses)"


def _sessions(demo_run: dict) -> dict[str, list[dict]]:
    """The stored generations of each cache-miss conversation, oldest first."""
    by_session: dict[str, list[dict]] = {}
    for generation in sorted(demo_run["stored"], key=lambda g: g["startTime"]):
        if (generation.get("sessionId") or "").startswith("demo-cache-miss-"):
            by_session.setdefault(generation["sessionId"], []).append(generation)
    return by_session


def test_demo_cache_miss_scenarios_happen(demo_run) -> None:
    sessions = _sessions(demo_run)
    assert [len(sessions[s]) for s in SESSIONS.values()] == [2, 2, 3]
    switched, expired, unmarked = (sessions[s] for s in SESSIONS.values())
    for first, follow_up in (switched, expired):
        written = first["usageDetails"]["input_cache_creation"]
        assert written > 1024 and follow_up["usageDetails"]["input_cache_creation"] == written  # paid again
        assert "input_cache_read" not in follow_up["usageDetails"]
        assert first["metadata"]["openrouter"]["cache_control"] is True
        hashes, grown = (g["metadata"]["openrouter"]["prefix_hashes"] for g in (first, follow_up))
        assert grown[: len(hashes)] == hashes  # the same prefix, grown
    # the follow-up went to another provider, which LangChain drops and the /generation record gives back
    assert [g["metadata"]["openrouter"]["provider"] for g in switched] == ["Anthropic", "Amazon Bedrock"]
    # simulated time: the first call six minutes before the follow-up, in what Langfuse stored too
    # (this moves OpenTelemetry's private span times; see `demo.cache_misses._SimulatedTime`)
    gap = datetime.fromisoformat(expired[1]["startTime"]) - datetime.fromisoformat(expired[0]["startTime"])
    assert gap.total_seconds() >= EXPIRED_AFTER
    assert [g["metadata"]["openrouter"]["provider"] for g in expired] == ["Anthropic", "Anthropic"]
    for generation in unmarked:  # no breakpoint: nothing written, nothing read, the same prefix
        assert set(generation["usageDetails"]) == {"input", "output", "total"}
        assert "cache_control" not in generation["metadata"]["openrouter"]
    assert len({g["metadata"]["openrouter"]["prefix_hashes"][0] for g in unmarked}) == 1
    assert [r["framework"] for r in demo_run["rows"]].count(MISSES) == cache_misses.CALLS


def test_the_report_names_each_demo_cache_miss_with_its_dollars(demo_run) -> None:
    misses = {m["cause"]: m for m in demo_run["cache_misses"]}
    assert {"provider_switch", "expired", "not_enabled"} <= set(misses)
    prices = {
        k: Decimal(v) for k, v in load_data()["models"]["anthropic/claude-sonnet-4.5"]["pricing"].items()
    }
    sessions = _sessions(demo_run)
    for cause in ("provider_switch", "expired"):
        follow_up = sessions[SESSIONS[cause]][1]
        assert misses[cause]["calls"] == 1 and misses[cause]["observation_ids"] == [follow_up["id"]]
        # had the cache hit, the written tokens would have been read
        written = follow_up["usageDetails"]["input_cache_creation"]
        lost = written * (prices["input_cache_write"] - prices["input_cache_read"])
        assert Decimal(misses[cause]["lost_usd"]) == lost.quantize(Decimal("0.000001"))
    unmarked = sessions[SESSIONS["not_enabled"]]
    assert misses["not_enabled"]["calls"] == 2
    assert set(misses["not_enabled"]["observation_ids"]) == {g["id"] for g in unmarked[1:]}
    assert Decimal(misses["not_enabled"]["lost_usd"]) > 0


def test_demo_command_prints_the_table(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "langfuse_openrouter_callbacks", "demo"],
        capture_output=True,
        text=True,
        env={**_clean_env(), "COLUMNS": "200"},
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "What Langfuse received, per generation" in out
    assert "anthropic/claude-4.5-sonnet-20250929" in out and "LlamaIndex" in out
    assert "Prompt caching saved $" in out


# ---------------------------------------------------------------------------- the embedded OpenRouter


@pytest.fixture
def embedded() -> EmbeddedOpenRouter:
    with EmbeddedOpenRouter() as server:
        yield server


def test_embedded_openrouter_streams_in_openrouters_shape(embedded) -> None:
    client = openai.OpenAI(base_url=embedded.base_url, api_key="sk-or-test", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="openai/gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as response:
        text = response.read().decode()
    assert text.startswith(": OPENROUTER PROCESSING")
    assert text.rstrip().endswith("data: [DONE]")
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["usage"]["cost"] > 0 and chunks[-1]["provider"] == "OpenAI"
    assert all(c["id"].startswith("gen-") for c in chunks)


def test_embedded_openrouter_serves_prices_and_generation_records(embedded) -> None:
    import httpx

    models = httpx.get(embedded.base_url + "/models").json()["data"]
    assert {m["id"] for m in models} == set(load_data()["models"])
    client = openai.OpenAI(base_url=embedded.base_url, api_key="sk-or-test", max_retries=0)
    completion = client.chat.completions.create(
        model="anthropic/claude-sonnet-4.5", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert completion.usage.prompt_tokens == count_tokens("<user>" + "x" * 400) + 3
    record = httpx.get(embedded.base_url + "/generation", params={"id": completion.id}).json()["data"]
    assert record["total_cost"] == completion.usage.model_extra["cost"]
    assert httpx.get(embedded.base_url + "/generation", params={"id": "gen-none"}).status_code == 404
    bad = httpx.post(embedded.base_url + "/chat/completions", json={"model": "nobody/none", "messages": []})
    assert bad.status_code == 400
