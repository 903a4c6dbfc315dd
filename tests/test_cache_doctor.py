"""The cache doctor: why the prompt cache missed, per cause, with the dollars lost.

First the rules on rows (`Call`s as the scan builds them), then the whole report read over HTTP from
the local Langfuse read API, then real clients through the handlers to the local servers.
"""

from __future__ import annotations

import csv
import io
import json
import struct
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langfuse_openrouter_callbacks import ModelPricing, PriceCatalog
from langfuse_openrouter_callbacks.report import (
    CACHE_FACTS,
    CAUSES,
    facts_for,
    fetch_report,
    render_table,
    save_chart,
    to_csv,
    to_html,
    to_json,
)
from langfuse_openrouter_callbacks.report._doctor import ADVICE, Call, Doctor
from tests.support.langfuse_api_server import FakeLangfuseAPI, openrouter_generation

SONNET = "anthropic/claude-sonnet-4.5"
MINI = "openai/gpt-4o-mini"
SONNET_PRICES = {
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
}
MINI_PRICES = {"prompt": "0.00000015", "completion": "0.0000006", "input_cache_read": "0.000000075"}
PRICES = {
    SONNET: ModelPricing.from_openrouter(SONNET_PRICES),
    MINI: ModelPricing.from_openrouter(MINI_PRICES),
}
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=timezone.utc).timestamp()


def prices(model: str, answered: str | None, provider: str | None) -> ModelPricing | None:
    return PRICES.get(model)


def call(
    name: str,
    minute: float,
    *,
    prompt: int,
    read: int = 0,
    write: int = 0,
    hashes: tuple[str, ...] | None = ("sys", "q1"),
    provider: str | None = "Anthropic",
    model: str = SONNET,
    cache_control: bool = True,
    thread: str = "s-1",
    ttl: float | None = None,
) -> Call:
    return Call(
        id=name,
        trace_id="t-" + name,
        url=None,
        start=T0 + minute * 60,
        thread=("session", thread, model),
        model=model,
        answered_model=None,
        provider=provider,
        prompt=prompt,
        read=read,
        write=write,
        completion=100,
        cache_control=cache_control,
        hashes=hashes,
        ttl=ttl,
        groups=(("model", model), ("session", thread)),
    )


def diagnose(*calls: Call) -> dict[str, tuple[int, int, Decimal, list[str]]]:
    """cause -> (calls, prompt tokens, lost, observation ids); the calls fed newest first, as pages come."""
    doctor = Doctor(prices)
    for c in sorted(calls, key=lambda c: c.start, reverse=True):
        doctor.add(c)
    misses, _ = doctor.result()
    return {m.cause: (m.calls, m.prompt_tokens, m.lost_usd, m.observation_ids) for m in misses}


# -- the rules, on rows ----------------------------------------------------------------------------


def test_a_conversation_whose_cache_hits_reports_no_miss() -> None:
    assert (
        diagnose(
            call("w", 0, prompt=5_000, write=4_000),
            call("r1", 1, prompt=6_000, read=4_000, write=1_500, hashes=("sys", "q1", "a1", "q2")),
            call("r2", 3, prompt=7_000, read=5_500, hashes=("sys", "q1", "a1", "q2", "a2", "q3")),
        )
        == {}
    )


def test_provider_switch() -> None:
    found = diagnose(
        call("write", 0, prompt=5_000, write=4_000),
        call("bedrock", 1, prompt=6_000, write=4_000, provider="Amazon Bedrock", hashes=("sys", "q1", "a1")),
    )

    # had the 4,000 cached tokens been read on Anthropic: 2,000 x $3/M + 4,000 x $0.3/M + output, not
    # 2,000 x $3/M + 4,000 x $3.75/M + output: $0.0225 - $0.0087
    assert found["provider_switch"] == (1, 6_000, Decimal("0.0138"), ["bedrock"])
    # and the first write was never read: its premium, 4,000 x ($3.75 - $3)/M
    assert found["write_unread"] == (1, 5_000, Decimal("0.003"), ["write"])


def test_expired_after_the_lifetime_and_not_before() -> None:
    first = call("w", 0, prompt=5_000, write=4_000)
    late = call("late", 6, prompt=5_200, write=4_000, hashes=("sys", "q1", "a1"))

    found = diagnose(first, late)

    # 4,000 read instead of written: 4,000 x ($3.75 - $0.3)/M
    assert found["expired"] == (1, 5_200, Decimal("0.0138"), ["late"])
    assert diagnose(call("w", 0, prompt=5_000, write=4_000, ttl=3600), late).keys() == {"write_unread"}
    assert "expired" not in diagnose(
        first, call("soon", 4, prompt=5_200, write=4_000, hashes=("sys", "q1", "a1"))
    )


def test_prefix_changed() -> None:
    found = diagnose(
        call("w", 0, prompt=5_000, write=4_000, hashes=("sys@09:00", "q1")),
        call("changed", 2, prompt=5_000, write=4_000, hashes=("sys@09:02", "q1")),
    )

    assert found["prefix_changed"] == (1, 5_000, Decimal("0.0138"), ["changed"])


def test_below_minimum() -> None:
    found = diagnose(
        call("a", 0, prompt=900, hashes=("sys", "q1")),
        call("b", 1, prompt=950, hashes=("sys", "q2")),
        call("c", 2, prompt=980, hashes=("sys", "q3")),
    )

    # one of two messages shared: half the prompt, had it been read: 475 x ($3 - $0.3)/M, 490 x ...
    assert found == {"below_minimum": (2, 1_930, Decimal("0.0012825") + Decimal("0.001323"), ["c", "b"])}


def test_not_enabled() -> None:
    found = diagnose(
        call("a", 0, prompt=5_000, cache_control=False, hashes=("sys", "q1")),
        call("b", 1, prompt=5_000, cache_control=False, hashes=("sys", "q1")),
    )

    # the same prompt again, had it been read: 5,000 x ($3 - $0.3)/M
    assert found == {"not_enabled": (1, 5_000, Decimal("0.0135"), ["b"])}
    # automatic caching (OpenAI) needs no breakpoint: no such cause
    assert (
        diagnose(
            call("a", 0, prompt=5_000, cache_control=False, model=MINI, provider="OpenAI"),
            call("b", 1, prompt=5_000, cache_control=False, model=MINI, provider="OpenAI"),
        )
        == {}
    )


def test_write_unread() -> None:
    found = diagnose(
        call("one-off", 0, prompt=5_000, write=4_000),
        call("other", 1, prompt=300, hashes=("x",), cache_control=False, thread="s-2"),
    )

    assert found == {"write_unread": (1, 5_000, Decimal("0.003"), ["one-off"])}


def test_a_write_read_by_another_conversation_with_the_same_prefix_was_not_wasted() -> None:
    """A provider's cache is keyed by the prompt: calls in separate traces (no session) share it."""
    write = call("write", 0, prompt=5_000, write=4_000, thread="t-1")
    assert (
        diagnose(write, call("read", 1, prompt=5_100, read=4_000, hashes=("sys", "q2"), thread="t-2")) == {}
    )
    elsewhere = call("elsewhere", 1, prompt=5_100, read=4_000, hashes=("other", "q2"), thread="t-2")
    assert diagnose(write, elsewhere).keys() == {"write_unread"}  # another prefix: not its cache
    late = call("late", 6, prompt=5_100, read=4_000, hashes=("sys", "q2"), thread="t-2")
    assert diagnose(write, late).keys() == {"write_unread"}  # read after the 5-minute lifetime


def test_unknown_providers_leave_the_provider_causes_undecided() -> None:
    doctor = Doctor(prices)
    for c in (
        call("b", 1, prompt=6_000, write=4_000, provider=None, hashes=("sys", "q1", "a1")),
        call("a", 0, prompt=5_000, write=4_000, provider=None),
    ):
        doctor.add(c)
    misses, undecided = doctor.result()

    assert [m.cause for m in misses] == ["write_unread"]  # the last write, never read
    ((causes, calls),) = [(u.causes, u.calls) for u in undecided]
    assert (causes, calls) == (("provider_switch", "expired", "prefix_changed"), 1)


def test_unpriced_misses_are_counted_but_lose_nothing_known() -> None:
    doctor = Doctor(lambda *_: None)
    for c in (call("b", 6, prompt=5_200, write=4_000), call("a", 0, prompt=5_000, write=4_000)):
        doctor.add(c)
    misses, _ = doctor.result()

    expired = next(m for m in misses if m.cause == "expired")
    assert (expired.calls, expired.unpriced, expired.lost_usd) == (1, 1, Decimal(0))


def test_the_facts_have_their_sources_and_the_longest_prefix_wins() -> None:
    assert all(f.source and f.lifetime.total_seconds() > 0 for f in CACHE_FACTS)
    assert facts_for("anthropic/claude-haiku-4.5").minimum_tokens == 4096
    assert facts_for("anthropic/claude-sonnet-4.5:thinking").minimum_tokens == 1024
    assert facts_for("openai/gpt-4.1-mini-2025-04-14").explicit is False
    assert facts_for("mistralai/mistral-large") is None
    assert set(ADVICE) == set(CAUSES)


# -- the property: never negative, never twice -----------------------------------------------------

_calls = st.lists(
    st.tuples(
        st.integers(0, 20),  # minute
        st.sampled_from(["s-1", "s-2"]),
        st.sampled_from(["Anthropic", "Amazon Bedrock", None]),
        st.integers(0, 6_000),  # prompt
        st.integers(0, 100),  # % read
        st.integers(0, 100),  # % written
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(tuple) | st.none(),
        st.booleans(),  # cache_control
        st.sampled_from([SONNET, MINI]),
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_calls)
def test_lost_is_never_negative_and_no_call_counts_twice(rows) -> None:
    calls = []
    for i, (minute, thread, provider, prompt, read_share, write_share, hashes, marked, model) in enumerate(
        rows
    ):
        read = prompt * read_share // 100
        write = (prompt - read) * write_share // 100
        calls.append(
            call(f"c{i}", minute + i / 100, prompt=prompt, read=read, write=write, hashes=hashes,
                 provider=provider, cache_control=marked, thread=thread, model=model)
        )  # fmt: skip

    found = diagnose(*calls)

    ids = [i for _, _, _, observation_ids in found.values() for i in observation_ids]
    assert len(ids) == len(set(ids)) == sum(n for n, _, _, _ in found.values()) <= len(calls)
    assert all(lost >= 0 for _, _, lost, _ in found.values())
    assert set(found) <= set(CAUSES)


# -- the report over HTTP --------------------------------------------------------------------------

PUBLIC_KEY, SECRET_KEY = "pk-lf-doctor", "sk-lf-doctor"
DAY = date(2026, 11, 3)


@pytest.fixture(scope="module")
def api_server():
    server = FakeLangfuseAPI(PUBLIC_KEY, SECRET_KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(api_server: FakeLangfuseAPI):
    api_server.reset()
    yield api_server
    api_server.reset()


def at(minute: float) -> datetime:
    return datetime(2026, 11, 3, 9, 0, tzinfo=timezone.utc) + timedelta(minutes=minute)


def stored(
    server: FakeLangfuseAPI,
    minute: float,
    *,
    session: str | None,
    hashes: list[str],
    user: str = "u-1",
    model: str = SONNET,
    marked: bool = True,
    **usage,
) -> str:
    generation, score = openrouter_generation(
        model,
        at(minute),
        pricing=SONNET_PRICES if model == SONNET else MINI_PRICES,
        session_id=session,
        user_id=user,
        trace_id=f"trace-{session or minute}",
        openrouter={"prefix_hashes": hashes, "cache_control": True if marked else None},
        **usage,
    )
    server.add(generation, score)
    return generation.id


def report_of(server: FakeLangfuseAPI, **kwargs):
    from langfuse_openrouter_callbacks.report import LangfuseConnection

    connection = LangfuseConnection.from_keys(server.root_url, PUBLIC_KEY, SECRET_KEY, backoff=0.01)
    catalog = PriceCatalog({SONNET: SONNET_PRICES, MINI: MINI_PRICES}, offline=True)
    return fetch_report(DAY, DAY, client=connection, catalog=catalog, progress=False, **kwargs)


def conversation(server: FakeLangfuseAPI) -> dict[str, str]:
    """One conversation per cause, and one whose cache hits."""
    ids = {}
    # hits: write, then two reads
    stored(
        server,
        0,
        session="hits",
        hashes=["s", "q"],
        prompt_tokens=5_000,
        completion_tokens=100,
        cache_write_tokens=4_000,
    )
    stored(
        server,
        1,
        session="hits",
        hashes=["s", "q", "a"],
        prompt_tokens=5_500,
        completion_tokens=100,
        cached_tokens=4_000,
    )
    # provider_switch (the write before it is read by nobody on Bedrock: write_unread); a system prompt of
    # its own, so the "hits" conversation's reads of its prefix do not count as reading this write
    ids["write_unread"] = stored(
        server,
        0,
        session="switch",
        hashes=["s-switch", "q"],
        prompt_tokens=5_000,
        completion_tokens=100,
        cache_write_tokens=4_000,
    )
    ids["provider_switch"] = stored(
        server,
        1,
        session="switch",
        hashes=["s-switch", "q", "a"],
        prompt_tokens=6_000,
        completion_tokens=100,
        cache_write_tokens=4_000,
        provider="Amazon Bedrock",
    )
    # not_enabled: the same long prompt twice without a breakpoint
    stored(
        server,
        2,
        session="plain",
        hashes=["s", "q"],
        marked=False,
        prompt_tokens=5_000,
        completion_tokens=100,
    )
    ids["not_enabled"] = stored(
        server,
        3,
        session="plain",
        hashes=["s", "q"],
        marked=False,
        prompt_tokens=5_000,
        completion_tokens=100,
    )
    return ids  # fmt: skip


def test_the_report_names_each_cause_with_its_dollars_in_every_format(
    server: FakeLangfuseAPI, tmp_path
) -> None:
    ids = conversation(server)
    # the Bedrock write is read a minute later on Bedrock: not unread
    stored(server, 2, session="switch", hashes=["s", "q", "a", "b"], prompt_tokens=6_200,
           completion_tokens=100, cached_tokens=4_000, provider="Amazon Bedrock")  # fmt: skip

    report = report_of(server)

    assert report.source == "observations"
    data = json.loads(to_json(report))
    assert data["cache_misses"] == [
        {"cause": "provider_switch", "calls": 1, "prompt_tokens": 6_000, "lost_usd": "0.013800",
         "observation_ids": [ids["provider_switch"]], "advice": ADVICE["provider_switch"]},
        {"cause": "not_enabled", "calls": 1, "prompt_tokens": 5_000, "lost_usd": "0.013500",
         "observation_ids": [ids["not_enabled"]], "advice": ADVICE["not_enabled"]},
        {"cause": "write_unread", "calls": 1, "prompt_tokens": 5_000, "lost_usd": "0.003000",
         "observation_ids": [ids["write_unread"]], "advice": ADVICE["write_unread"]},
    ]  # fmt: skip
    assert report.lost_usd == Decimal("0.0303")

    rows = list(csv.DictReader(io.StringIO(to_csv(report, "cache_misses"))))
    assert [(r["cause"], r["calls"], r["lost_usd"]) for r in rows] == [
        ("provider_switch", "1", "0.013800"),
        ("not_enabled", "1", "0.013500"),
        ("write_unread", "1", "0.003000"),
    ]
    text = render_table(report)
    assert "Cache misses: what caching did not save, and why" in text
    total = [line for line in text.splitlines() if line.startswith("│ Total") and "$0.030300" in line]
    assert total, text
    page = to_html(report)
    assert "<h2>Cache misses: what caching did not save, and why</h2>" in page
    assert f'<a href="{server.root_url}/project/proj-report-test/traces/trace-switch?observation=' in page
    chart = save_chart(report, tmp_path / "chart.png").read_bytes()
    assert struct.unpack(">II", chart[16:24]) == (1650, 594)  # the savings and, beside it, the lost dollars


def test_by_session_user_and_model(server: FakeLangfuseAPI) -> None:
    conversation(server)

    report = report_of(server, by="session")

    groups = {g.key: g for g in report.grouped()}
    assert set(groups) == {"hits", "switch", "plain"}
    assert groups["switch"].lost_usd == Decimal("0.0168")  # provider switch + the unread write
    assert groups["plain"].lost_usd == Decimal("0.0135")
    assert groups["hits"].lost_usd == 0
    assert sum(g.calls for g in groups.values()) == report.totals.calls == 6
    assert sum((g.cost for g in groups.values()), Decimal(0)) == report.totals.cost
    assert [g.key for g in report.grouped("user")] == ["u-1"]
    (by_model,) = report.grouped("model")
    assert by_model.lost_usd == Decimal("0.0303")
    rows = list(csv.DictReader(io.StringIO(to_csv(report, "by"))))
    assert {r["session"]: r["lost_usd"] for r in rows} == {
        "switch": "0.016800",
        "plain": "0.013500",
        "hits": "0.000000",
    }
    assert json.loads(to_json(report))["by"]["dimension"] == "session"


def test_no_cache_misses_keeps_the_metrics_path(server: FakeLangfuseAPI) -> None:
    conversation(server)

    report = report_of(server, cache_misses=False)

    assert report.source == "metrics" and report.cache_misses is None
    assert json.loads(to_json(report))["cache_misses"] is None
    assert "Cache misses not diagnosed" in render_table(report)


# -- end to end: real clients through the handler to the local servers, then the report ------------

HANDBOOK = "Refunds take 14 days; exchanges 30 days; gift cards never expire. " * 300
BREAKPOINT = {"type": "ephemeral"}


def system(text: str = HANDBOOK, *, marked: bool = True):
    from langchain_core.messages import SystemMessage

    return SystemMessage(
        content=[{"type": "text", "text": text, "cache_control": BREAKPOINT}] if marked else text
    )


def ask(text: str):
    from langchain_core.messages import HumanMessage

    return HumanMessage(content=text)


def answer(text: str):
    from langchain_core.messages import AIMessage

    return AIMessage(content=text)


def usage(prompt: int, *, read: int = 0, write: int = 0, completion: int = 100):
    """OpenRouter's usage for a Sonnet 4.5 call, its cost what OpenRouter charges at the list prices."""
    from langfuse_openrouter_callbacks import OpenRouterUsage, compute_cost
    from tests.scenario import SONNET as PRICES_OF_SONNET
    from tests.support.openrouter_server import Usage

    cost = compute_cost(
        OpenRouterUsage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=read,
                        cache_write_tokens=write),
        PRICES_OF_SONNET,
    ).total  # fmt: skip
    counts = {"prompt_tokens": prompt, "completion_tokens": completion}
    return Usage(**counts, cached_tokens=read, cache_write_tokens=write, cost=float(cost))


class Run:
    """ChatOpenAI calls through our handler (`/generation` lookups give the provider LangChain drops)."""

    def __init__(self, openrouter, catalog, langfuse_client, otlp_receiver, *, lookups: bool = True) -> None:
        from langchain_openai import ChatOpenAI

        from langfuse_openrouter_callbacks.generation_stats import GenerationStatsFetcher
        from langfuse_openrouter_callbacks.langchain import CallbackHandler
        from tests.scenario import REQUESTED

        self.openrouter, self.client, self.receiver = openrouter, langfuse_client, otlp_receiver
        self.fetcher = (
            GenerationStatsFetcher(api_base=openrouter.base_url, initial_delay=0.0, total_timeout=3.0)
            if lookups
            else None
        )
        self.handler = CallbackHandler(price_catalog=catalog, generation_stats_fetcher=self.fetcher)
        self.llm = ChatOpenAI(
            base_url=openrouter.base_url, api_key="sk-or-test", model=REQUESTED, max_retries=0
        )

    def call(self, session: str, messages, spec_usage, provider: str = "Anthropic") -> None:
        from langfuse import propagate_attributes

        from tests.scenario import DATED
        from tests.support.openrouter_server import ResponseSpec

        self.openrouter.queue(ResponseSpec(model=DATED, provider=provider, usage=spec_usage))
        with propagate_attributes(session_id=session, user_id="u-" + session, trace_name="support-chat"):
            self.llm.invoke(messages, config={"callbacks": [self.handler]})

    def store(self, server: FakeLangfuseAPI, *, later: dict[int, timedelta] | None = None) -> list[str]:
        """What Langfuse stores for the calls, in the local read API; their observation ids in call order.

        `later`: call index -> time it is moved forward (a cache lifetime passing without waiting).
        """
        from tests.support.langfuse_api_server import stored_generations

        self.handler.flush()
        if self.fetcher is not None:
            self.fetcher.close()
        self.client.flush()
        spans = sorted(self.receiver.generations(), key=lambda s: s.start_time_unix_nano)
        shift = {spans[i].span_id: delta for i, delta in (later or {}).items()}
        for generation in stored_generations(self.receiver.spans, shift=shift):
            server.add(generation)
        return [s.span_id for s in spans]


@pytest.fixture
def run(openrouter, catalog, langfuse_client, otlp_receiver, monkeypatch):
    from langfuse_openrouter_callbacks import generation_stats

    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    monkeypatch.setattr(generation_stats, "_warned", set())
    return lambda **kwargs: Run(openrouter, catalog, langfuse_client, otlp_receiver, **kwargs)


def e2e_report(server: FakeLangfuseAPI, catalog):
    from langfuse_openrouter_callbacks.report import LangfuseConnection

    connection = LangfuseConnection.from_keys(server.root_url, PUBLIC_KEY, SECRET_KEY, backoff=0.01)
    today = datetime.now(timezone.utc).date()
    return fetch_report(today - timedelta(days=1), today + timedelta(days=1), client=connection,
                        catalog=catalog, progress=False)  # fmt: skip


def causes_of(report) -> dict[str, tuple[int, Decimal, list[str]]]:
    return {m.cause: (m.calls, m.lost_usd, m.observation_ids) for m in report.cache_misses}


def test_e2e_a_conversation_whose_cache_hits_reports_no_miss(run, server, catalog) -> None:
    calls = run()
    calls.call("hits", [system(), ask("How long do refunds take?")], usage(5_000, write=4_000))
    follow_up = [system(), ask("How long do refunds take?"), answer("14 days."), ask("And exchanges?")]
    calls.call("hits", follow_up, usage(5_400, read=4_000, write=300))
    calls.store(server)

    report = e2e_report(server, catalog)

    assert report.totals.calls == 2
    assert report.cache_misses == ()
    assert "No cache misses" in render_table(report)


def test_e2e_provider_switch(run, server, catalog) -> None:
    calls = run()
    first = [system(), ask("How long do refunds take?")]
    calls.call("switch", first, usage(5_000, write=4_000))
    calls.call("switch", [*first, answer("14 days."), ask("And exchanges?")], usage(6_000, write=4_000),
               provider="Amazon Bedrock")  # fmt: skip
    written, switched = calls.store(server)

    found = causes_of(e2e_report(server, catalog))

    assert found["provider_switch"] == (1, Decimal("0.0138"), [switched])
    assert found["write_unread"] == (1, Decimal("0.003"), [written])  # nobody read it on Anthropic
    assert set(found) == {"provider_switch", "write_unread"}


def test_e2e_without_the_provider_the_report_says_what_it_could_not_decide(run, server, catalog) -> None:
    calls = run(lookups=False)  # LangChain drops the serving provider
    first = [system(), ask("How long do refunds take?")]
    calls.call("switch", first, usage(5_000, write=4_000))
    calls.call("switch", [*first, answer("14 days."), ask("And exchanges?")], usage(6_000, write=4_000),
               provider="Amazon Bedrock")  # fmt: skip
    calls.store(server)

    report = e2e_report(server, catalog)

    assert "provider_switch" not in causes_of(report)
    ((causes, count),) = [(u.causes, u.calls) for u in report.undecided]
    assert (causes, count) == (("provider_switch", "expired", "prefix_changed"), 1)
    assert "For 1 calls provider_switch, expired, prefix_changed could not be decided" in render_table(report)
    assert json.loads(to_json(report))["cache_misses_undecided"][0]["calls"] == 1


def test_e2e_expired(run, server, catalog) -> None:
    calls = run()
    first = [system(), ask("How long do refunds take?")]
    calls.call("slow", first, usage(5_000, write=4_000))
    calls.call("slow", [*first, answer("14 days."), ask("And exchanges?")], usage(5_200, write=4_000))
    written, late = calls.store(server, later={1: timedelta(minutes=6)})  # the user came back 6 minutes later

    found = causes_of(e2e_report(server, catalog))

    assert found["expired"] == (1, Decimal("0.0138"), [late])
    assert found["write_unread"] == (1, Decimal("0.003"), [written])


def test_e2e_prefix_changed(run, server, catalog) -> None:
    calls = run()
    calls.call("stamped", [system("Now: 09:00. " + HANDBOOK), ask("Refunds?")], usage(5_000, write=4_000))
    calls.call("stamped", [system("Now: 09:01. " + HANDBOOK), ask("Refunds?")], usage(5_000, write=4_000))
    written, changed = calls.store(server)

    found = causes_of(e2e_report(server, catalog))

    assert found["prefix_changed"] == (1, Decimal("0.0138"), [changed])
    assert found["write_unread"] == (1, Decimal("0.003"), [written])


def test_e2e_below_minimum(run, server, catalog) -> None:
    calls = run()
    short = [system("You answer in one line.", marked=False), ask("Refunds?")]
    calls.call("short", short, usage(900))
    calls.call("short", short, usage(900))
    _, repeated = calls.store(server)

    found = causes_of(e2e_report(server, catalog))

    # the same 900 tokens again (under Sonnet 4.5's 1,024), had they been read: 900 x ($3 - $0.3)/M
    assert found == {"below_minimum": (1, Decimal("0.00243"), [repeated])}


def test_e2e_not_enabled(run, server, catalog) -> None:
    calls = run()
    plain = [system(marked=False), ask("How long do refunds take?")]
    calls.call("plain", plain, usage(5_000))
    calls.call("plain", plain, usage(5_000))
    _, repeated = calls.store(server)

    report = e2e_report(server, catalog)

    assert causes_of(report) == {"not_enabled": (1, Decimal("0.0135"), [repeated])}
    (row,) = json.loads(to_json(report))["cache_misses"]
    assert row == {"cause": "not_enabled", "calls": 1, "prompt_tokens": 5_000, "lost_usd": "0.013500",
                   "observation_ids": [repeated], "advice": ADVICE["not_enabled"]}  # fmt: skip
    (group,) = report.grouped("session")
    assert (group.key, group.lost_usd) == ("plain", Decimal("0.0135"))
    assert [g.key for g in report.grouped("trace_name")] == ["support-chat"]


def test_e2e_write_unread(run, server, catalog) -> None:
    calls = run()
    calls.call("one-off", [system(), ask("How long do refunds take?")], usage(5_000, write=4_000))
    (written,) = calls.store(server)

    found = causes_of(e2e_report(server, catalog))

    assert found == {"write_unread": (1, Decimal("0.003"), [written])}


def test_by_session_without_the_diagnosis(server: FakeLangfuseAPI) -> None:
    conversation(server)

    report = report_of(server, cache_misses=False, by="session")

    assert report.source == "observations" and report.cache_misses is None  # sessions need the generations
    assert {g.key: (g.calls, g.lost_usd) for g in report.grouped()} == {
        "hits": (2, None),
        "switch": (2, None),
        "plain": (2, None),
    }
    assert "Per session: cost, savings and lost to cache misses" in render_table(report)


def test_the_metrics_path_with_the_diagnosis_reads_the_generations_once(server: FakeLangfuseAPI) -> None:
    from tests.support.langfuse_api_server import OBSERVATIONS_PATH

    conversation(server)

    report = report_of(server, source="metrics")

    assert report.source == "metrics"  # the rows aggregated by Langfuse
    assert [m.cause for m in report.cache_misses] == ["provider_switch", "not_enabled", "write_unread"]
    assert report.disagreements == ()  # checked on the way
    assert len(server.requests_to(OBSERVATIONS_PATH)) == 1
