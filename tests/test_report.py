"""The savings report against a local Langfuse read API (metrics v2, observations v2) over real HTTP.

The data are generations and savings scores built exactly as the handlers record them; the expected
figures are summed here from those generations, and a few are spelled out by hand.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import struct
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from langfuse import Langfuse
from langfuse._client.resource_manager import LangfuseResourceManager

from langfuse_openrouter_callbacks import cli, report
from langfuse_openrouter_callbacks.langfuse_fields import SAVINGS_SCORE_NAME
from langfuse_openrouter_callbacks.report import (
    ReportError,
    ReportRow,
    SavingsReport,
    fetch_report,
    render_table,
    save_chart,
    to_csv,
    to_html,
    to_json,
)
from tests.support.langfuse_api_server import (
    METRICS_PATH,
    OBSERVATIONS_PATH,
    FakeLangfuseAPI,
    StoredGeneration,
    StoredScore,
    openrouter_generation,
)

PUBLIC_KEY = "pk-lf-report-test"
SECRET_KEY = "sk-lf-report-test"
SONNET = "anthropic/claude-sonnet-4.5"
MINI = "openai/gpt-4o-mini"
SONNET_PRICES = {
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
}
MINI_PRICES = {"prompt": "0.00000015", "completion": "0.0000006", "input_cache_read": "0.000000075"}
FROM, TO = date(2026, 11, 1), date(2026, 11, 28)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=timezone.utc)


def dataset() -> list[tuple[StoredGeneration, StoredScore | None]]:
    """Two models over four days, cache reads and writes, one disagreement, calls outside the range."""
    sonnet = {"pricing": SONNET_PRICES}
    mini = {"pricing": MINI_PRICES, "provider": "OpenAI"}
    return [
        # 2026-11-01: the README's example call (9,000 of 10,000 prompt tokens cached) and a cache write
        openrouter_generation(
            SONNET, at(1, 9), prompt_tokens=10_000, completion_tokens=400, cached_tokens=9_000, **sonnet
        ),
        openrouter_generation(
            SONNET,
            at(1, 10),
            prompt_tokens=5_000,
            completion_tokens=200,
            cache_write_tokens=4_000,
            reported="none",
            **sonnet,
        ),
        openrouter_generation(
            MINI, at(1, 11), prompt_tokens=2_000, completion_tokens=100, cached_tokens=1_024, **mini
        ),
        # 2026-11-02: OpenRouter charged $0.0005 more than the prices say
        openrouter_generation(
            SONNET,
            at(2, 8),
            prompt_tokens=12_000,
            completion_tokens=500,
            cached_tokens=11_000,
            reasoning_tokens=100,
            reported=Decimal("0.0143"),
            **sonnet,
        ),
        openrouter_generation(MINI, at(2, 12), prompt_tokens=800, completion_tokens=50, **mini),
        # 2026-11-03, just before midnight
        openrouter_generation(
            MINI,
            at(3, 23, 59),
            prompt_tokens=3_000,
            completion_tokens=120,
            cached_tokens=2_048,
            duration=timedelta(seconds=20),
            **mini,
        ),
        # 2026-11-04
        openrouter_generation(
            SONNET, at(4, 14), prompt_tokens=20_000, completion_tokens=1_000, cached_tokens=18_000, **sonnet
        ),
        openrouter_generation(
            SONNET, at(4, 15), prompt_tokens=20_000, completion_tokens=800, cached_tokens=18_000, **sonnet
        ),
        # outside 2026-11-01 .. 2026-11-28
        openrouter_generation(
            SONNET, at(31, 23, 30, month=10), prompt_tokens=1_000, completion_tokens=10, **sonnet
        ),
        openrouter_generation(MINI, at(29, 0, 1), prompt_tokens=1_000, completion_tokens=10, **mini),
    ]


def expected(
    generations: list[StoredGeneration], model: str | None = None, start: date = FROM, end: date = TO
) -> dict[tuple[str, str], dict[str, object]]:
    """(day, model) -> figures, summed from the stored generations."""
    cells: dict[tuple[str, str], dict[str, object]] = {}
    for g in generations:
        day = g.start_time.date()
        if not start <= day <= end or (model and g.model != model):
            continue
        cell = cells.setdefault(
            (day.isoformat(), g.model),
            {
                "calls": 0,
                "input": 0,
                "cached": 0,
                "written": 0,
                "output": 0,
                "cost": Decimal(0),
                "savings": Decimal(0),
            },
        )
        usage = g.usage_details
        cell["calls"] += 1
        cell["input"] += usage.get("input", 0) + usage.get("input_audio", 0)
        cell["cached"] += usage.get("input_cache_read", 0)
        cell["written"] += usage.get("input_cache_creation", 0)
        cell["output"] += sum(v for k, v in usage.items() if k.startswith("output"))
        cell["cost"] += Decimal(str(g.cost_details["total"]))
        cell["savings"] += Decimal(str(g.metadata["openrouter"].get("cache_savings_usd", 0)))
    return cells


def as_cells(result: SavingsReport) -> dict[tuple[str, str], dict[str, object]]:
    return {
        (row.day.isoformat(), row.model): {
            "calls": row.calls,
            "input": row.input_tokens,
            "cached": row.cached_tokens,
            "written": row.written_tokens,
            "output": row.output_tokens,
            "cost": row.cost,
            "savings": row.savings,
        }
        for row in result.rows
    }


def assert_figures(result: SavingsReport, want: dict[tuple[str, str], dict[str, object]]) -> None:
    got = as_cells(result)
    assert got.keys() == want.keys()
    for key, figures in want.items():
        for name, value in figures.items():
            if isinstance(value, Decimal):  # float scores and float metadata: equal to the micro-cent
                assert abs(got[key][name] - value) < Decimal("1e-12"), (key, name, got[key][name], value)
            else:
                assert got[key][name] == value, (key, name, got[key][name], value)
    for row in result.rows:
        assert row.no_cache_cost == row.cost + row.savings


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeLangfuseAPI]:
    server = FakeLangfuseAPI(PUBLIC_KEY, SECRET_KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(api_server: FakeLangfuseAPI) -> Iterator[Langfuse]:
    """The real Langfuse client (its own public key, tracing off), unregistered after this module."""
    langfuse = Langfuse(
        public_key=PUBLIC_KEY, secret_key=SECRET_KEY, base_url=api_server.root_url, tracing_enabled=False
    )
    try:
        yield langfuse
    finally:
        with LangfuseResourceManager._lock:
            manager = LangfuseResourceManager._instances.pop(PUBLIC_KEY, None)
        if manager is not None:
            manager.shutdown()


@pytest.fixture
def server(api_server: FakeLangfuseAPI) -> Iterator[FakeLangfuseAPI]:
    api_server.reset()
    for generation, score in dataset():
        api_server.add(generation, score)
    yield api_server
    api_server.reset()
    api_server.public_key, api_server.secret_key = PUBLIC_KEY, SECRET_KEY


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, api_server: FakeLangfuseAPI) -> None:
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", PUBLIC_KEY)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("LANGFUSE_BASE_URL", api_server.root_url)
    monkeypatch.delenv("LANGFUSE_HOST", raising=False)


def fetch(client: Langfuse, **kwargs: object) -> SavingsReport:
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("cache_misses", False)  # the diagnosis has its own tests (tests/test_cache_doctor.py)
    return fetch_report(FROM, TO, client=client, progress=False, **kwargs)


# -- server-side aggregation -----------------------------------------------------------------------


def test_metrics_path_sums_per_day_and_model(server: FakeLangfuseAPI, client: Langfuse) -> None:
    result = fetch(client)

    assert result.source == "metrics"
    assert result.notes == ()
    assert result.disagreements is None
    assert_figures(result, expected(server.generations))
    # by hand: the README's call ($0.0117, saved $0.0243) and a cache write ($0.021, saved -$0.003)
    sonnet_day1 = next(r for r in result.rows if r.day == date(2026, 11, 1) and r.model == SONNET)
    assert (sonnet_day1.calls, sonnet_day1.input_tokens, sonnet_day1.cached_tokens) == (2, 2_000, 9_000)
    assert (sonnet_day1.written_tokens, sonnet_day1.output_tokens) == (4_000, 600)
    assert sonnet_day1.cost == Decimal("0.0327")
    assert abs(sonnet_day1.savings - Decimal("0.0213")) < Decimal("1e-15")
    assert sonnet_day1.cache_hit_ratio == pytest.approx(9_000 / 15_000)
    assert [r.day.isoformat() for r in result.rows] == sorted(r.day.isoformat() for r in result.rows)
    assert result.totals.calls == 8

    # three aggregate queries, none reading generations one by one
    assert server.requests_to(OBSERVATIONS_PATH) == []
    generations, usage, savings = server.metrics_queries
    window = {"fromTimestamp": "2026-11-01T00:00:00.000Z", "toTimestamp": "2026-11-28T23:59:59.999Z"}
    generation_filter = [{"column": "type", "operator": "=", "value": "GENERATION", "type": "string"}]
    assert generations == {
        "view": "observations",
        "dimensions": [{"field": "providedModelName"}],
        "metrics": [
            {"measure": "count", "aggregation": "count"},
            {"measure": "totalCost", "aggregation": "sum"},
        ],
        "filters": generation_filter,
        "timeDimension": {"granularity": "day"},
        **window,
        "orderBy": [{"field": "time_dimension", "direction": "asc"}],
        "config": {"row_limit": 1000},
    }
    assert usage["dimensions"] == [{"field": "providedModelName"}, {"field": "usageType"}]
    assert usage["metrics"] == [{"measure": "usageByType", "aggregation": "sum"}]
    assert usage["filters"] == generation_filter
    assert savings["view"] == "scores-numeric"
    assert savings["dimensions"] == [{"field": "observationModelName"}]
    assert savings["metrics"] == [
        {"measure": "count", "aggregation": "count"},
        {"measure": "value", "aggregation": "sum"},
    ]
    assert savings["filters"] == [
        {"column": "name", "operator": "=", "value": SAVINGS_SCORE_NAME, "type": "string"},
        {"column": "dataType", "operator": "=", "value": "NUMERIC", "type": "string"},
    ]
    assert {q["timeDimension"]["granularity"] for q in (usage, savings)} == {"day"}


def test_model_filter_on_both_paths(server: FakeLangfuseAPI, client: Langfuse) -> None:
    by_metrics = fetch(client, model=MINI)
    by_scan = fetch(client, model=MINI, source="observations")

    want = expected(server.generations, model=MINI)
    assert {model for _, model in want} == {MINI}
    assert_figures(by_metrics, want)
    assert_figures(by_scan, want)
    names, *queries = server.metrics_queries  # first the model names of the range, then the figures
    assert names["dimensions"] == [{"field": "providedModelName"}]
    assert all(
        {"column": "providedModelName", "operator": "=", "value": MINI, "type": "string"} in q["filters"]
        for q in queries[:2]
    )
    assert {"column": "observationModelName", "operator": "=", "value": MINI, "type": "string"} in queries[2][
        "filters"
    ]
    # the structured filter replaces the query parameters, so it repeats type and time
    (request,) = server.requests_to(OBSERVATIONS_PATH)
    conditions = json.loads(request.query["filter"][0])
    assert {c["column"] for c in conditions} == {"type", "startTime", "model"}
    assert {"column": "model", "operator": "starts with", "value": MINI, "type": "string"} in conditions


DATED_MINI = "openai/gpt-4.1-mini-2025-04-14"


@pytest.mark.parametrize("source", ["metrics", "observations"])
def test_model_filter_finds_the_dated_id_the_generations_carry(
    server: FakeLangfuseAPI, client: Langfuse, source: str
) -> None:
    for hour in (9, 10):
        server.add(
            *openrouter_generation(
                DATED_MINI, at(5, hour), pricing=MINI_PRICES, prompt_tokens=1_500, completion_tokens=40
            )
        )
    server.add(  # another model whose id starts the same: not this one
        *openrouter_generation(
            "openai/gpt-4.1-mini-high", at(5, 11), pricing=MINI_PRICES, prompt_tokens=10, completion_tokens=1
        )
    )

    result = fetch(client, model="openai/gpt-4.1-mini", source=source)

    assert [(r.day, r.model, r.calls) for r in result.rows] == [(date(2026, 11, 5), DATED_MINI, 2)]
    assert result.totals.input_tokens == 3_000
    assert result.notes == ()


@pytest.mark.parametrize("source", ["metrics", "observations"])
def test_model_filter_without_a_match_says_which_ids_exist(
    server: FakeLangfuseAPI, client: Langfuse, source: str
) -> None:
    result = fetch(client, model="openai/gpt-4.1", source=source)

    assert result.rows == ()
    (note,) = result.notes
    assert note == (
        "No generation's model is openai/gpt-4.1 (or a dated id of it); the models recorded are: "
        f"{SONNET}, {MINI}."
    )


def test_metrics_answers_cut_at_the_row_limit_are_split(
    server: FakeLangfuseAPI, client: Langfuse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report._metrics, "_ROW_LIMIT", 10)  # 9 usage rows on 2026-11-01, 8 on 2026-11-02
    result = fetch(client)

    assert result.source == "metrics"
    assert_figures(result, expected(server.generations))
    usage_queries = [q for q in server.metrics_queries if q["metrics"][0]["measure"] == "usageByType"]
    assert [(q["fromTimestamp"][:10], q["toTimestamp"][:10]) for q in usage_queries] == [
        ("2026-11-01", "2026-11-28"),
        ("2026-11-01", "2026-11-14"),
        ("2026-11-01", "2026-11-07"),
        ("2026-11-01", "2026-11-04"),
        ("2026-11-01", "2026-11-02"),
        ("2026-11-01", "2026-11-01"),
        ("2026-11-02", "2026-11-02"),
        ("2026-11-03", "2026-11-04"),
        ("2026-11-05", "2026-11-07"),
        ("2026-11-08", "2026-11-14"),
        ("2026-11-15", "2026-11-28"),
    ]
    assert all(q["config"]["row_limit"] == 10 for q in server.metrics_queries)

    monkeypatch.setattr(report._metrics, "_ROW_LIMIT", 3)  # one day alone is more than a query can answer
    assert (
        fetch(client)
        .notes[0]
        .startswith("Server-side aggregation unavailable (more than 3 rows for 2026-11-01)")
    )


# -- reading every generation ----------------------------------------------------------------------


@pytest.mark.parametrize("style", ["object", "json", "flattened"])
def test_fallback_without_metrics_api_gives_the_same_figures(
    server: FakeLangfuseAPI, client: Langfuse, style: str
) -> None:
    by_metrics = fetch(client)
    server.metrics_status = 404
    server.metadata_style = style
    server.page_size_cap = 3

    by_scan = fetch(client)

    assert by_scan.source == "observations"
    assert "Server-side aggregation unavailable (HTTP 404" in by_scan.notes[0]
    assert_figures(by_scan, expected(server.generations))
    assert [
        (r.day, r.model, r.calls, r.cost, r.input_tokens, r.cached_tokens, r.written_tokens)
        for r in by_scan.rows
    ] == [
        (r.day, r.model, r.calls, r.cost, r.input_tokens, r.cached_tokens, r.written_tokens)
        for r in by_metrics.rows
    ]
    for scanned, aggregated in zip(by_scan.rows, by_metrics.rows, strict=True):
        assert abs(scanned.savings - aggregated.savings) < Decimal("1e-12")
    # pages of 3 linked by cursors; every request asks for the full metadata.openrouter
    requests = server.requests_to(OBSERVATIONS_PATH)
    assert len(requests) == 3  # 8 generations in range: 3 + 3 + 2
    assert "cursor" not in requests[0].query
    assert all("cursor" in r.query for r in requests[1:])
    assert {r.query["expandMetadata"][0] for r in requests} == {"openrouter"}
    assert requests[0].query["type"] == ["GENERATION"]
    assert requests[0].query["fromStartTime"][0].startswith("2026-11-01T00:00:00")
    assert requests[0].query["toStartTime"][0].startswith("2026-11-29T00:00:00")
    # the disagreement is only in the metadata, so it comes with the scan
    (disagreement,) = by_scan.disagreements
    assert (disagreement.day, disagreement.model) == (date(2026, 11, 2), SONNET)
    assert disagreement.reported_cost == Decimal("0.0143")
    assert disagreement.computed_cost == Decimal("0.0138")
    assert disagreement.delta == Decimal("0.0005")
    assert disagreement.generation_id.startswith("gen-")
    assert [r.disagreements for r in by_scan.rows] == [
        int(r.day == date(2026, 11, 2) and r.model == SONNET) for r in by_scan.rows
    ]


def test_missing_savings_scores_make_auto_read_the_generations(
    server: FakeLangfuseAPI, client: Langfuse
) -> None:
    unscored = next(g for g in server.generations if g.start_time == at(4, 15))
    server.scores = [s for s in server.scores if s.observation_id != unscored.id]
    want = expected(server.generations)

    automatic = fetch(client)
    metrics_only = fetch(client, source="metrics")

    assert automatic.source == "observations"
    assert_figures(automatic, want)
    assert f"{SAVINGS_SCORE_NAME} is on 9 of 10" not in automatic.notes[0]
    assert automatic.notes[0].startswith(
        f"The score {SAVINGS_SCORE_NAME} is on 7 of 8 generations ({SONNET}: 4 of 5)"
    )
    assert metrics_only.source == "metrics"
    assert metrics_only.notes[0].endswith("savings are understated.")
    assert metrics_only.totals.savings < automatic.totals.savings
    assert metrics_only.totals.cost == automatic.totals.cost


def test_openrouter_metadata_in_every_shape_langfuse_returns() -> None:
    fields = {"generation_id": "gen-1", "cache_savings_usd": 0.0243, "reconciliation_delta": None}

    assert report.openrouter_fields({"openrouter": fields}) == fields
    assert report.openrouter_fields({"openrouter": json.dumps(fields)}) == fields
    flattened = {"openrouter.generation_id": "gen-1", "openrouter.cache_savings_usd": "0.0243", "other": "x"}
    assert report.openrouter_fields(flattened) == {"generation_id": "gen-1", "cache_savings_usd": 0.0243}
    assert report.openrouter_fields({"openrouter": json.dumps(fields)[:20] + "..."}) == {}  # truncated
    assert report.openrouter_fields({"ls_provider": "openai"}) is None
    assert report.openrouter_fields(None) is None


def test_generations_of_other_providers_are_left_out_of_the_scan(
    server: FakeLangfuseAPI, client: Langfuse
) -> None:
    plain, _ = openrouter_generation(
        "openai/gpt-4o", at(2, 9), pricing=MINI_PRICES, prompt_tokens=100, completion_tokens=5
    )
    plain.metadata = {"ls_provider": "openai"}  # not through OpenRouter: no metadata.openrouter, no score
    server.add(plain)

    result = fetch(client)

    assert result.source == "observations"  # the metrics count it, the score is missing
    assert_figures(result, expected(server.generations[:-1]))
    assert "1 generations without metadata.openrouter were left out." in result.notes


def test_server_without_usage_by_type_falls_back(server: FakeLangfuseAPI, client: Langfuse) -> None:
    server.unsupported_measures = {"usageByType"}

    result = fetch(client)

    assert result.source == "observations"
    assert "(HTTP 400: Invalid metric usageByType" in result.notes[0]
    assert_figures(result, expected(server.generations))


def test_check_disagreements_on_the_metrics_path(server: FakeLangfuseAPI, client: Langfuse) -> None:
    result = fetch(client, check_disagreements=True)

    assert result.source == "metrics"
    assert [d.delta for d in result.disagreements] == [Decimal("0.0005")]
    assert result.totals.disagreements == 1
    (request,) = server.requests_to(OBSERVATIONS_PATH)
    assert request.query["fields"] == ["core,model,metadata"]
    # a tolerance above the delta finds none
    assert fetch(client, check_disagreements=True, tolerance="0.001").disagreements == ()


def test_empty_range(server: FakeLangfuseAPI, client: Langfuse, tmp_path) -> None:
    result = fetch_report("2026-12-01", "2026-12-03", client=client, progress=False)

    assert result.rows == ()
    assert result.totals.calls == 0
    assert [r.calls for r in result.by_day()] == [0, 0, 0]
    assert "no OpenRouter generations" in render_table(result)
    assert save_chart(result, tmp_path / "empty.png").stat().st_size > 5_000


# -- failures --------------------------------------------------------------------------------------


def test_rate_limit_waits_for_retry_after(server: FakeLangfuseAPI, client: Langfuse) -> None:
    server.fail("metrics", 429, headers={"Retry-After": "1"}, body={"message": "Rate limit exceeded"})

    began = time.monotonic()
    result = fetch(client)

    assert time.monotonic() - began >= 1.0
    assert result.source == "metrics"
    assert len(server.requests_to(METRICS_PATH)) == 4  # the refused query, then three


def test_server_errors_back_off_then_succeed(server: FakeLangfuseAPI, client: Langfuse) -> None:
    server.fail("observations", 500, times=2)

    result = fetch(client, source="observations", backoff=0.05)

    assert_figures(result, expected(server.generations))
    requests = server.requests_to(OBSERVATIONS_PATH)
    assert len(requests) == 3
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential


def test_progress_bar_while_reading(server: FakeLangfuseAPI, client: Langfuse, capsys) -> None:
    server.page_size_cap = 2

    result = fetch_report(FROM, TO, client=client, source="observations", progress=True)

    assert_figures(result, expected(server.generations))
    assert capsys.readouterr().out == ""  # the bar goes to stderr


def test_retries_are_bounded(server: FakeLangfuseAPI, client: Langfuse) -> None:
    server.fail("metrics", 503, times=10)

    with pytest.raises(ReportError, match=r"^Langfuse answered HTTP 503 to metrics 3 times"):
        fetch(client, source="metrics", max_retries=2)
    assert len(server.requests_to(METRICS_PATH)) == 3


def test_not_implemented_is_not_retried(server: FakeLangfuseAPI, client: Langfuse) -> None:
    server.metrics_status = 501

    result = fetch(client)

    assert result.source == "observations"
    assert len(server.requests_to(METRICS_PATH)) == 1
    with pytest.raises(ReportError, match="the metrics API cannot give this report"):
        fetch(client, source="metrics")


def test_bad_credentials(server: FakeLangfuseAPI, client: Langfuse) -> None:
    server.secret_key = "sk-lf-another"

    with pytest.raises(ReportError) as raised:
        fetch(client)

    message = str(raised.value)
    assert message.startswith("Langfuse rejected the API keys (HTTP 401")
    assert "LANGFUSE_SECRET_KEY" in message
    assert SECRET_KEY not in message and "\n" not in message
    assert len(server.requests) == 1  # no retry, no fallback


def test_observations_api_missing(server: FakeLangfuseAPI, client: Langfuse) -> None:
    server.metrics_status = 404
    server.fail("observations", 404, body={"message": "The observations v2 API is only available in v4"})

    with pytest.raises(ReportError, match=r"has no observations API \(HTTP 404: The observations v2 API"):
        fetch(client)


# -- output ----------------------------------------------------------------------------------------


@pytest.fixture
def full_report(server: FakeLangfuseAPI, client: Langfuse) -> SavingsReport:
    return fetch(client, check_disagreements=True)


def test_table(full_report: SavingsReport) -> None:
    text = render_table(full_report)

    assert text.startswith("OpenRouter prompt-cache savings, 2026-11-01 to 2026-11-28\n")
    day1 = next(line for line in text.splitlines() if "2026-11-01" in line and SONNET in line)
    assert [cell.strip() for cell in day1.split("│")[1:-1]] == [
        "2026-11-01",
        SONNET,
        "2",
        "2,000",
        "9,000",
        "4,000",
        "600",
        "60.0%",
        "$0.032700",
        "$0.054000",
        "$0.021300",
        "0",
    ]
    header = next(line for line in text.splitlines() if "Hit ratio" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]][-4:] == [
        "Cost",
        "No-cache cost",
        "Savings",
        "Disagreements",
    ]
    total = next(line for line in text.splitlines() if line.startswith("│ Total"))
    totals = full_report.totals
    assert f" {totals.calls:,} " in total and f" ${totals.cost.quantize(Decimal('0.000001'))} " in total
    assert "Cost disagreements (|delta| > $0.000001)" in text
    assert "$0.014300" in text and "$0.013800" in text and "$0.000500" in text


def test_csv(full_report: SavingsReport, server: FakeLangfuseAPI) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(full_report))))

    want = expected(server.generations)
    assert [(r["day"], r["model"]) for r in rows] == sorted(want)
    first = rows[0]
    assert first == {
        "day": "2026-11-01",
        "model": SONNET,
        "calls": "2",
        "input_tokens": "2000",
        "cached_tokens": "9000",
        "written_tokens": "4000",
        "output_tokens": "600",
        "cache_hit_ratio": "0.6000",
        "cost_usd": "0.032700",
        "no_cache_cost_usd": "0.054000",
        "savings_usd": "0.021300",
        "disagreements": "0",
    }
    for row in rows:
        cell = want[(row["day"], row["model"])]
        assert Decimal(row["cost_usd"]) == cell["cost"].quantize(Decimal("0.000001"))
        assert int(row["cached_tokens"]) == cell["cached"]


def test_json(full_report: SavingsReport, server: FakeLangfuseAPI) -> None:
    data = json.loads(to_json(full_report))

    assert (data["from"], data["to"], data["source"], data["model"]) == (
        "2026-11-01",
        "2026-11-28",
        "metrics",
        None,
    )
    want = expected(server.generations)
    assert data["totals"]["calls"] == sum(c["calls"] for c in want.values()) == 8
    assert data["totals"]["cached_tokens"] == sum(c["cached"] for c in want.values())
    assert data["totals"]["cost_usd"] == float(
        sum((c["cost"] for c in want.values()), Decimal(0)).quantize(Decimal("0.000001"))
    )
    assert [m["model"] for m in data["by_model"]] == [SONNET, MINI]
    assert data["rows"][0]["savings_usd"] == 0.0213
    assert data["disagreements"][0]["delta_usd"] == 0.0005
    assert data["notes"] == []


def test_html_is_one_self_contained_page(full_report: SavingsReport) -> None:
    page = to_html(full_report)

    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert '<img class="chart"' in page and 'src="data:image/png;base64,iVBORw0KGgo' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "<td>2026-11-01</td><td>anthropic/claude-sonnet-4.5</td>" in page
    assert (
        '<td class="num">$0.032700</td><td class="num">$0.054000</td><td class="num">$0.021300</td>' in page
    )
    assert '<tr class="total"><td>Total</td>' in page


def test_chart_is_a_png(full_report: SavingsReport, tmp_path) -> None:
    path = save_chart(full_report, tmp_path / "savings.png")

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1100, 594)
    assert len(data) > 20_000


# -- the command -----------------------------------------------------------------------------------


def test_cli_writes_html_and_chart(server: FakeLangfuseAPI, env: None, tmp_path, capsys) -> None:
    page, chart = tmp_path / "report.html", tmp_path / "savings.png"

    code = cli.main(
        [
            "report",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-28",
            "--format",
            "html",
            "--output",
            str(page),
            "--chart",
            str(chart),
        ]
    )

    assert code == 0
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert chart.read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"wrote {page}\nwrote {chart}\n"


def test_cli_csv_for_one_model(server: FakeLangfuseAPI, env: None, monkeypatch, capsys) -> None:
    monkeypatch.delenv("LANGFUSE_BASE_URL")
    monkeypatch.setenv("LANGFUSE_HOST", server.root_url + "/")  # the older variable, with a slash
    code = cli.main(
        ["report", "--from", "2026-11-01", "--to", "2026-11-28", "--model", MINI, "--format", "csv"]
    )

    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["model"] for r in rows} == {MINI}
    assert [r["day"] for r in rows] == ["2026-11-01", "2026-11-02", "2026-11-03"]


def test_cli_table_with_disagreements_from_observations(server: FakeLangfuseAPI, env: None, capsys) -> None:
    code = cli.main(
        [
            "report",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-28",
            "--source",
            "observations",
            "--tolerance",
            "0.0001",
        ]
    )

    assert code == 0
    out = capsys.readouterr().out
    assert "summed from every generation" in out and "Cost disagreements (|delta| > $0.0001)" in out


def test_cli_bad_credentials_is_one_line_and_exit_1(
    server: FakeLangfuseAPI, env: None, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-wrong-secret")

    code = cli.main(["report", "--from", "2026-11-01", "--to", "2026-11-28"])

    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(
        "langfuse-openrouter report: error: Langfuse rejected the API keys (HTTP 401"
    )
    assert "sk-lf-wrong-secret" not in captured.err and "Traceback" not in captured.err


def test_cli_without_credentials(monkeypatch, capsys) -> None:
    monkeypatch.delenv("LANGFUSE_PUBLIC_KEY", raising=False)
    monkeypatch.delenv("LANGFUSE_SECRET_KEY", raising=False)

    assert cli.main(["report", "--from", "2026-11-01", "--to", "2026-11-02"]) == 1
    assert "set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY" in capsys.readouterr().err


def test_cli_argument_errors(capsys) -> None:
    assert cli.main(["report", "--from", "2026-11-28", "--to", "2026-11-01"]) == 2
    assert "--from 2026-11-28 is after --to 2026-11-01" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["report", "--from", "November", "--to", "2026-11-01"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["report", "--from", "2026-11-01", "--to", "2026-11-02", "--format", "xml"])


def test_cli_unwritable_output(server: FakeLangfuseAPI, env: None, tmp_path, capsys) -> None:
    code = cli.main(
        [
            "report",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--output",
            str(tmp_path / "missing" / "r.txt"),
        ]
    )

    assert code == 1
    assert capsys.readouterr().err.startswith("langfuse-openrouter report: error: No such file or directory")


def test_cli_chart_as_jpeg_or_refused(server: FakeLangfuseAPI, env: None, tmp_path, capsys) -> None:
    jpeg = tmp_path / "savings.jpg"
    assert cli.main(["report", "--from", "2026-11-01", "--to", "2026-11-28", "--chart", str(jpeg)]) == 0
    assert jpeg.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, not a PNG under another name
    capsys.readouterr()

    gif = tmp_path / "savings.gif"
    assert cli.main(["report", "--from", "2026-11-01", "--to", "2026-11-28", "--chart", str(gif)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"langfuse-openrouter report: error: --chart writes .png, .jpg or .jpeg files, not '{gif}'\n"
    )
    assert not gif.exists()


def test_cli_takes_no_abbreviated_flags(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["report", "--from", "2026-11-01", "--to", "2026-11-02", "--form", "csv"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --form" in capsys.readouterr().err


def test_cli_refused_connection_fails_at_once_in_one_line(monkeypatch, capsys) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", PUBLIC_KEY)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("LANGFUSE_BASE_URL", f"http://127.0.0.1:{port}")
    connection = report.api_client_from_env()

    code = report.run_report(start=FROM, end=TO, client=connection, max_retries=4, backoff=30.0)

    assert code == 1
    assert connection.requests == 1  # no retry (and no 30 s back-off)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"langfuse-openrouter report: error: Langfuse cannot be reached at http://127.0.0.1:{port}"
    )


def test_cli_by_session_as_csv(server: FakeLangfuseAPI, env: None, capsys) -> None:
    for session, hour in (("s-a", 13), ("s-a", 14), ("s-b", 15)):
        generation, score = openrouter_generation(
            MINI, at(6, hour), pricing=MINI_PRICES, prompt_tokens=2_000, completion_tokens=10,
            session_id=session, openrouter={"prefix_hashes": ["x"]},
        )  # fmt: skip
        server.add(generation, score)

    day = ["--from", "2026-11-06", "--to", "2026-11-06"]
    code = cli.main(["report", *day, "--by", "session", "--format", "csv", "--table", "by"])

    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["session"], r["calls"]) for r in rows] == [("s-a", "2"), ("s-b", "1")]
    assert all(r["lost_usd"] == "0.000000" for r in rows)  # no cause: OpenAI caches without breakpoints


def test_every_report_flag_is_in_the_readme() -> None:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser()
    cli._add_report_parser(parser.add_subparsers())
    (report_parser,) = parser._subparsers._group_actions[0].choices.values()
    flags = {
        flag for action in report_parser._actions for flag in action.option_strings if flag.startswith("--")
    }
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The savings report", 1)[1].split("\n## ", 1)[0]
    assert flags - {"--help"}, flags
    assert sorted(f for f in flags - {"--help"} if f not in section) == []


def test_the_sdk_internal_the_report_reads_its_connection_from(client: Langfuse) -> None:
    """`LangfuseConnection.of` reads the SDK's generated client wrapper: fail loudly if it changes."""
    wrapper = client.api._client_wrapper
    assert wrapper.get_base_url() == client.api._client_wrapper._base_url
    headers = wrapper.get_headers()
    assert headers["Authorization"].startswith("Basic ") and headers["X-Langfuse-Public-Key"] == PUBLIC_KEY
    connection = report.LangfuseConnection.of(client)
    assert connection.headers["Authorization"] == headers["Authorization"]
    assert connection.base_url == wrapper.get_base_url().rstrip("/")


def _report_of(rows: list[ReportRow], start: date, end: date) -> SavingsReport:
    return SavingsReport(
        start=start, end=end, model=None, rows=tuple(rows), disagreements=None, source="metrics"
    )


def _row(day: date, model: str, cost: str, savings: str = "0") -> ReportRow:
    cost_, savings_ = Decimal(cost), Decimal(savings)
    return ReportRow(day, model, 1, 10, 0, 0, 1, cost_, cost_ + savings_, savings_)


def test_money_columns_add_up_to_the_total_shown() -> None:
    day = date(2026, 11, 1)
    rows = [_row(day, f"m/{i}", "0.0000004", "-0.0000004") for i in range(3)]  # 3 x 0.4 micro-dollars

    text = render_table(_report_of(rows, day, day))

    models = [line for line in text.splitlines() if line.startswith("│ m/")][-3:]
    costs = [Decimal(line.split("│")[8].strip().lstrip("$")) for line in models]
    total = next(line for line in text.splitlines() if line.startswith("│ Total"))
    assert sum(costs) == Decimal(total.split("│")[8].strip().lstrip("$")) == Decimal("0.000001")
    assert sorted(costs) == [0, 0, Decimal("0.000001")]  # the largest remainders get the unit
    assert " -$0.000001 " in total and "$0.000000 " in total  # savings, no-cache cost


def test_sparse_days_are_bars_and_a_full_month_lines() -> None:
    from langfuse_openrouter_callbacks.report._chart import drawn_as

    start = date(2026, 11, 1)
    every_day = [_row(start + timedelta(days=i), "m/a", "0.01") for i in range(40)]
    assert drawn_as(_report_of(every_day, start, start + timedelta(days=39))) == "lines"
    gaps = every_day[:3] + every_day[20:]
    assert drawn_as(_report_of(gaps, start, start + timedelta(days=39))) == "bars"
    assert drawn_as(_report_of(every_day[:5], start, start + timedelta(days=4))) == "bars"  # a short range


def test_the_command_imports_neither_the_langfuse_sdk_nor_matplotlib() -> None:
    """The report's start-up: the SDK's API client cost ~0.7 s to import; the JSON reader needs none of it."""
    import subprocess
    import sys

    code = (
        "import sys; from langfuse_openrouter_callbacks import cli;"
        "import langfuse_openrouter_callbacks.report._command;"
        "heavy = {'langfuse', 'matplotlib', 'pydantic', 'rich'};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
