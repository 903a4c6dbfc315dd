"""The demo on its embedded default: no keys, no network, real clients over local HTTP."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from langfuse_openrouter_callbacks.demo import cache_misses
from langfuse_openrouter_callbacks.demo.cache_misses import EXPIRED_AFTER, SESSIONS
from langfuse_openrouter_callbacks.demo.openrouter import EmbeddedOpenRouter, answer, count_tokens, load_data
from langfuse_openrouter_callbacks.demo.run import ANTHROPIC_MODEL, OPENAI_MODEL, handbook
from tests.scenario import SERVICE_VARIABLES
from tests.support.openrouter_server import Fault

REPO = Path(__file__).resolve().parents[1]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}


_DEMO_AND_REPORT = """
import dataclasses, json
from datetime import datetime, timezone
from langfuse_openrouter_callbacks.demo import run_demo
from langfuse_openrouter_callbacks.demo.run import DemoServices, run_calls
from langfuse_openrouter_callbacks.report import fetch_report

steps = []
r = run_demo(progress=steps.append)
with DemoServices() as services:  # the savings report, read back from the embedded Langfuse
    run_calls(services)
    today = datetime.now(timezone.utc).date()
    report = fetch_report(today, today, client=services.langfuse, catalog=services.catalog,
                          check_disagreements=True)
    totals = {k: str(v) for k, v in dataclasses.asdict(report.totals).items()}
    stored = services.embedded_langfuse.observations({})
print(json.dumps({"openrouter": r.openrouter, "langfuse": r.langfuse, "spans": r.spans_received,
                  "rows": [dataclasses.asdict(x) for x in r.rows], "report": totals, "steps": steps,
                  "export_error": r.export_error, "cache_misses": report.as_dict()["cache_misses"],
                  "stored": stored}, default=str))
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
    assert result["export_error"] is None  # the embedded Langfuse's API lists every generation
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


def test_the_progress_says_what_is_prepared_before_the_calls(demo_run) -> None:
    steps = demo_run["steps"]
    first_call = next(i for i, step in enumerate(steps) if step.startswith("Call 1: "))
    prepared = steps[:first_call]
    assert "Starting the embedded OpenRouter" in prepared and "Starting the embedded Langfuse" in prepared
    assert "Loading LangChain" in prepared and "Loading LlamaIndex" in prepared
    calls = [step for step in steps if step.startswith("Call ")]
    assert len(calls) == 9 + cache_misses.CALLS
    assert calls[8].startswith("Call 9: LlamaIndex · openai/gpt-4.1-mini (streamed) · ")


def test_rows_carry_the_model_asked_for_and_the_streamed_call(demo_rows) -> None:
    demo_rows = [r for r in demo_rows if r["framework"] != MISSES]
    assert [r["requested_model"] for r in demo_rows] == [ANTHROPIC_MODEL] * 3 + [OPENAI_MODEL] * 6
    assert [r["streamed"] for r in demo_rows] == [False] * 8 + [True]
    assert {r["model"] for r in demo_rows} == {m["canonical_slug"] for m in load_data()["models"].values()}


MONEY = re.compile(r"-?\$\d[\d,]*\.\d+")


def _demo(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "langfuse_openrouter_callbacks", "demo"],
        capture_output=True,
        text=True,
        env={**_clean_env(), "XDG_CACHE_HOME": str(tmp_path), **env},
        cwd=tmp_path,
        timeout=300,
    )


@pytest.mark.parametrize("columns", ["120", None], ids=["COLUMNS=120", "piped-80"])
def test_demo_command_prints_a_table_that_fits_without_cutting_a_number(tmp_path, columns) -> None:
    done = _demo(tmp_path, **({"COLUMNS": columns} if columns else {}))
    assert done.returncode == 0, done.stderr[-3000:]
    out, width = done.stdout, int(columns or 80)
    assert "What was exported, per generation" in out and "Traceback" not in done.stderr
    assert max(len(line) for line in out.splitlines()) <= width
    assert "…" not in out
    amounts = MONEY.findall(out)
    assert len(amounts) >= 9 * 2 + 2 and all(re.fullmatch(r"-?\$\d\.\d{6}", a) for a in amounts), amounts
    joined = re.sub(r"/ *\n *", "/", out)  # a model id may go on two lines, split after its "/"
    assert ANTHROPIC_MODEL in joined and OPENAI_MODEL + " *" in joined and "* streamed" in out
    assert "Reasoning" not in out  # zero for every call
    assert "Prompt caching saved $" in out
    assert "spans with the chains, queries and retrievals around them" in " ".join(out.split())


def test_demo_on_the_embedded_default_at_80_columns_keeps_every_number(demo_run) -> None:
    """The layout picks what fits: at 80 the model goes under the framework, never a cut amount."""
    from decimal import Decimal as D

    from rich.console import Console

    from langfuse_openrouter_callbacks.demo.render import generations_table, usd
    from langfuse_openrouter_callbacks.demo.run import DemoResult, GenerationRow

    rows = [
        GenerationRow(**{**r, **{k: D(r[k]) for k in ("cost", "no_cache_cost", "savings")}})
        for r in demo_run["rows"]
    ]
    result = DemoResult("embedded", "embedded", rows)
    for width in (80, 100, 120, 200):
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(generations_table(result, width))
        words = console.export_text().split()
        for row in rows:
            assert usd(row.cost) in words and usd(row.savings) in words, width
            assert f"{row.cache_read:,}" in words and f"{row.input:,}" in words


def test_langfuse_unreachable_says_so_in_one_line_prints_no_link_and_fails(tmp_path) -> None:
    closed = _closed_port()
    done = _demo(
        tmp_path,
        LANGFUSE_PUBLIC_KEY="pk-lf-demo",
        LANGFUSE_SECRET_KEY="sk-lf-demo",
        LANGFUSE_BASE_URL=f"http://127.0.0.1:{closed}",
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"langfuse-openrouter demo: Langfuse at http://127.0.0.1:{closed}: connection refused; "
        "nothing was sent"
    ]
    assert "/trace/" not in done.stdout and "What was exported" not in done.stdout


def test_openrouter_unreachable_or_refusing_the_key_is_one_line(tmp_path, fake_openrouter) -> None:
    closed = _closed_port()
    done = _demo(
        tmp_path, OPENROUTER_API_KEY="sk-or-demo", OPENROUTER_API_BASE=f"http://127.0.0.1:{closed}/api/v1"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"langfuse-openrouter demo: OpenRouter at http://127.0.0.1:{closed}/api/v1 did not answer its price "
        "list (/models)"
    ]

    fake_openrouter.require_api_key = "sk-or-the-right-one"
    done = _demo(tmp_path, OPENROUTER_API_KEY="sk-or-wrong", OPENROUTER_API_BASE=fake_openrouter.base_url)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        f"langfuse-openrouter demo: OpenRouter at {fake_openrouter.base_url}: the key was refused (HTTP 401)"
    )
    assert "sk-or-wrong" not in done.stderr + done.stdout


def test_ctrl_c_stops_the_demo_quietly_with_status_130(tmp_path, fake_openrouter) -> None:
    answer = threading.Event()  # the price list is held back: the demo waits in its first request
    fake_openrouter.set_fault("models", Fault(hold=answer))
    demo = subprocess.Popen(
        [sys.executable, "-m", "langfuse_openrouter_callbacks", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **_clean_env(),
            "XDG_CACHE_HOME": str(tmp_path),
            "OPENROUTER_API_KEY": "sk-or-demo",
            "OPENROUTER_API_BASE": fake_openrouter.base_url,
        },
        cwd=tmp_path,
    )
    try:
        while not any(r.path.endswith("/models") for r in fake_openrouter.requests):
            assert demo.poll() is None, demo.communicate()
            time.sleep(0.05)
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=120)
    finally:
        answer.set()
        demo.kill()
    assert demo.returncode == 130
    assert err.strip() == "" and "Traceback" not in out


def _missing(code: str, *modules: str) -> subprocess.CompletedProcess:
    hide = "; ".join(f"sys.modules[{m!r}] = None" for m in modules)
    return subprocess.run(
        [sys.executable, "-c", f"import sys; {hide}; {code}"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )


def test_the_demo_without_its_extras_says_what_to_install_in_one_line() -> None:
    done = _missing(
        "from langfuse_openrouter_callbacks.cli import main; sys.exit(main(['demo']))", "langchain_core"
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith('langfuse-openrouter demo: The demo needs the "all" extra (')
    assert line.endswith('pip install "langfuse-openrouter-callbacks[all]"')


@pytest.mark.parametrize(
    ("adapter", "hidden", "extra"),
    [
        ("langchain", "langchain_core", "langchain"),
        ("llama_index", "llama_index", "llama-index"),
    ],
)
def test_importing_an_adapter_without_its_extra_names_the_extra(adapter, hidden, extra) -> None:
    module = f"langfuse_openrouter_callbacks.{adapter}"
    done = _missing(f"import {module}", hidden)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("langfuse_openrouter_callbacks._extras.MissingExtra: ")
    assert f'{module} needs the "{extra}" extra' in last
    assert last.endswith(f'pip install "langfuse-openrouter-callbacks[{extra}]"')
    done = _missing(
        "from langfuse_openrouter_callbacks._extras import MissingExtra\n"
        f"try:\n    import {module}\n"
        "except ImportError as e:\n    print(isinstance(e, MissingExtra))",
        hidden,
    )
    assert done.stdout.strip() == "True"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_embedded_openrouter_answers_the_question_asked(embedded) -> None:
    client = openai.OpenAI(base_url=embedded.base_url, api_key="sk-or-test", max_retries=0)
    system = {"role": "system", "content": [{"type": "text", "text": handbook()}]}
    history = [system]
    expected = {
        "How long do refunds take?": "refund is approved and issued",
        "And for invoice payments?": "Refunds for invoice payments",  # read in the context of the last
        "Do gift cards expire?": "never expire",
        "What does a warranty claim need?": "Warranty claims need",
    }
    for question, words in expected.items():
        history.append({"role": "user", "content": question})
        reply = (
            client.chat.completions.create(model=OPENAI_MODEL, messages=history).choices[0].message.content
        )
        assert words in reply, (question, reply)
        history.append({"role": "assistant", "content": reply})
    rag = f"Context information is below.\n---\n{handbook()}\n---\nQuery: When is support open?\nAnswer: "
    assert answer([{"role": "user", "content": rag}], []).startswith("Support is open Monday to Friday")
    assert answer([{"role": "user", "content": "What is the capital of France?"}], []) == (
        "I could not find that in the documents I was given."
    )


_LOST_EXPORT = """
from langchain_openai import ChatOpenAI
from langfuse_openrouter_callbacks.demo.run import OPENAI_MODEL, DemoServices
from langfuse_openrouter_callbacks.langchain import CallbackHandler

with DemoServices() as services:
    llm = ChatOpenAI(base_url=services.openrouter_base, api_key=services.openrouter_key, model=OPENAI_MODEL)
    handler = CallbackHandler(public_key=services.public_key, price_catalog=services.catalog)
    services.calling("LangChain", OPENAI_MODEL, "Do gift cards expire?")
    llm.invoke("Do gift cards expire?", config={"callbacks": [handler]})
    print(services.check_export())  # the embedded Langfuse's API lists it
    services.embedded_langfuse.spans.clear()  # as if the export had been lost
    print(services.check_export())
    print(services.langfuse_base)
"""


def test_the_export_is_checked_through_langfuses_api(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOST_EXPORT], capture_output=True, text=True, env=_clean_env(), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    received, lost, base = done.stdout.strip().splitlines()[-3:]
    assert received == "None"
    assert lost == f"Langfuse at {base} has not received 1 of the 1 generations"


def test_an_export_not_seen_in_langfuse_prints_no_link() -> None:
    from rich.console import Console

    from langfuse_openrouter_callbacks.demo.render import print_result
    from langfuse_openrouter_callbacks.demo.run import DemoResult, GenerationRow

    row = GenerationRow(
        "LangChain", OPENAI_MODEL, "", 10, 0, 0, 5, 0, None, None, None, "unpriced", "ab" * 16, "cd" * 8
    )
    seen = DemoResult("https://openrouter.ai/api/v1", "https://langfuse.example", [row])
    lost = DemoResult(seen.openrouter, seen.langfuse, [row], export_error="Langfuse at X: HTTP 500")
    texts = []
    for result in (seen, lost):
        console = Console(width=120, record=True, file=io.StringIO())
        print_result(console, result)
        texts.append(console.export_text())
    assert "https://langfuse.example/trace/" + "ab" * 16 in texts[0]
    assert "/trace/" not in texts[1] and "Not exported: Langfuse at X: HTTP 500." in texts[1]
