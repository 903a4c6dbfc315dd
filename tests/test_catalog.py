"""`PriceCatalog` against a local OpenRouter-compatible server: lookups, disk cache, faults, offline."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from langfuse_openrouter_callbacks import ModelPricing, PriceCatalog
from tests.support.openrouter_server import (
    FakeOpenRouter,
    Fault,
    endpoint_entry,
    endpoints_payload,
    model_entry,
)

LOGGER = "langfuse_openrouter_callbacks"
SONNET_ID = "anthropic/claude-sonnet-4.5"
SONNET_DATED = "anthropic/claude-4.5-sonnet-20250929"
MODEL_PRICING = {
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
}
BEDROCK_PRICING = {**MODEL_PRICING, "prompt": "0.0000033", "completion": "0.0000165"}


@pytest.fixture
def server() -> Iterator[FakeOpenRouter]:
    fake = FakeOpenRouter().start()
    fake.set_models(
        [
            model_entry(SONNET_ID, MODEL_PRICING, canonical_slug=SONNET_DATED),
            model_entry("openrouter/auto", {"prompt": "-1", "completion": "-1"}),
            model_entry("x/free-model:free", {"prompt": "0", "completion": "0"}),
        ]
    )
    fake.set_endpoints(
        SONNET_ID,
        endpoints_payload(
            SONNET_ID,
            [
                endpoint_entry("Anthropic", MODEL_PRICING),
                endpoint_entry("Amazon Bedrock", BEDROCK_PRICING),
                endpoint_entry("Google", {**MODEL_PRICING, "discount": 0.2}, tag="google-vertex/global"),
            ],
        ),
    )
    yield fake
    fake.stop()


def _catalog(server: FakeOpenRouter, tmp_path: Path, **kwargs) -> PriceCatalog:
    return PriceCatalog(api_base=server.base_url, cache_dir=tmp_path, **kwargs)


def _gets(server: FakeOpenRouter, path_part: str) -> int:
    return sum(1 for r in server.requests if r.method == "GET" and path_part in r.path)


def test_first_lookup_answers_from_offline_data_and_loads_in_the_background(server, tmp_path) -> None:
    catalog = _catalog(server, tmp_path)
    first = catalog.pricing_for(SONNET_ID)
    assert first is not None and first.source == "genai-prices"  # no network on the caller's thread
    assert catalog.wait_until_idle(5)
    loaded = catalog.pricing_for(SONNET_ID)
    assert loaded == ModelPricing.from_openrouter(MODEL_PRICING) and loaded.source == "models"
    assert _gets(server, "/models") == 1


def test_dated_ids_resolve_through_canonical_slug_and_suffixes_are_handled(server, tmp_path) -> None:
    catalog = _catalog(server, tmp_path)
    assert catalog.refresh()
    assert catalog.pricing_for(SONNET_DATED).source == "models"
    assert catalog.pricing_for(SONNET_ID + ":thinking").source == "models"
    free = catalog.pricing_for("x/free-model:free")
    assert free.prompt == 0 and free.source == "models"  # a :free id is its own model, priced 0
    assert catalog.pricing_for("nobody/unknown-model") is None


def test_serving_endpoints_price_is_used_once_fetched(server, tmp_path) -> None:
    catalog = _catalog(server, tmp_path)
    assert catalog.refresh()
    before = catalog.pricing_for(SONNET_DATED, provider="Amazon Bedrock")
    assert before.source == "models"  # endpoints not known yet: model level now, fetched behind
    assert catalog.wait_until_idle(5)
    bedrock = catalog.pricing_for(SONNET_DATED, provider="Amazon Bedrock")
    assert bedrock.prompt == Decimal("0.0000033") and bedrock.source == "endpoint:Amazon Bedrock"
    assert catalog.pricing_for(SONNET_ID, provider="amazon bedrock") == bedrock
    assert catalog.pricing_for(SONNET_ID, provider="google-vertex/global").discount == Decimal("0.2")
    assert catalog.pricing_for(SONNET_ID, provider="Nowhere").source == "models"
    assert _gets(server, "/endpoints") == 1  # once per model


def test_overrides_win_also_by_the_requested_id_and_offline(server, tmp_path) -> None:
    mine = {"prompt": "0.000001", "completion": "0.000002"}
    catalog = PriceCatalog({SONNET_ID: mine}, api_base=server.base_url, cache_dir=tmp_path, offline=True)
    found = catalog.pricing_for([SONNET_DATED, SONNET_ID], provider="Amazon Bedrock")
    assert found == ModelPricing.from_openrouter(mine) and found.source == "override"
    assert catalog.pricing_for(SONNET_DATED).source == "override"  # dated id matched offline too
    assert server.requests == []


def test_offline_never_touches_network_or_disk(server, tmp_path) -> None:
    catalog = PriceCatalog(api_base=server.base_url, cache_dir=tmp_path, offline=True)
    assert catalog.pricing_for(SONNET_DATED).source == "genai-prices"
    assert catalog.pricing_for("nobody/unknown-model") is None
    assert not catalog.refresh()
    assert catalog.wait_until_idle(1)
    assert server.requests == [] and list(tmp_path.iterdir()) == []


def test_disk_cache_serves_a_new_process_without_network(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-secret-never-written")
    catalog = _catalog(server, tmp_path)
    catalog.refresh()
    catalog.pricing_for(SONNET_ID, provider="Anthropic")
    catalog.wait_until_idle(5)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2 and not any(p.name.startswith(".tmp-") for p in files)
    for path in files:
        assert "secret" not in path.read_text()
    requests_before = len(server.requests)

    again = _catalog(server, tmp_path)  # a fresh catalog, as in a new process
    assert again.pricing_for(SONNET_DATED, provider="Anthropic").source == "endpoint:Anthropic"
    assert again.wait_until_idle(5)
    assert len(server.requests) == requests_before
    for request in server.requests:
        assert request.header("authorization") is None


def test_stale_cache_is_used_and_refreshed_in_the_background(server, tmp_path) -> None:
    _catalog(server, tmp_path).refresh()
    catalog = _catalog(server, tmp_path, ttl=0)
    assert catalog.pricing_for(SONNET_ID).source == "models"  # the stale copy, at once
    assert catalog.wait_until_idle(5)
    assert _gets(server, "/models") == 2


@pytest.mark.parametrize(
    "fault",
    [Fault(status=500), Fault(invalid_json=True), Fault(truncate=True), None, Fault(status=404)],
    ids=["500", "bad-json", "truncated", "timeout", "404"],
)
def test_faults_fall_back_with_one_warning_and_never_block(server, tmp_path, caplog, fault) -> None:
    answer = threading.Event()  # the server answers when the test says so; "timeout": not within 0.5 s
    server.set_fault("models", replace(fault or Fault(), hold=answer))
    catalog = _catalog(server, tmp_path, timeout=0.5)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            for _ in range(50):  # all while the server has not answered: the caller never waits on it
                assert catalog.pricing_for(SONNET_ID).source == "genai-prices"
            if fault is not None:  # the model list is still out: the lookups did not wait for it
                assert not catalog.wait_until_idle(0)
                answer.set()
            assert catalog.wait_until_idle(5)
            assert not catalog.refresh()
            assert catalog.pricing_for(SONNET_ID).source == "genai-prices"
    finally:
        answer.set()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "model list" in warnings[0] and server.base_url in warnings[0]


def test_failed_fetch_is_not_retried_on_every_lookup(server, tmp_path) -> None:
    server.set_fault("models", Fault(status=500))
    catalog = _catalog(server, tmp_path)
    for _ in range(5):
        catalog.pricing_for(SONNET_ID)
        catalog.wait_until_idle(5)
    assert _gets(server, "/models") == 1


def test_endpoint_faults_keep_the_model_level_price(server, tmp_path, caplog) -> None:
    server.set_fault("endpoints", Fault(status=500))
    catalog = _catalog(server, tmp_path)
    catalog.refresh()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        catalog.pricing_for(SONNET_ID, provider="Amazon Bedrock")
        catalog.wait_until_idle(5)
        assert catalog.pricing_for(SONNET_ID, provider="Amazon Bedrock").source == "models"
    assert len(caplog.records) == 1 and "endpoint prices" in caplog.records[0].getMessage()


def test_a_failed_endpoint_fetch_is_retried_when_its_time_comes(server, tmp_path) -> None:
    server.set_fault("endpoints", Fault(status=500))
    catalog = _catalog(server, tmp_path, ttl=0.5)  # failures are retried after min(ttl, 300 s)
    assert catalog.refresh()
    assert catalog.pricing_for(SONNET_ID, provider="Amazon Bedrock").source == "models"
    assert catalog.wait_until_idle(5)
    assert catalog.pricing_for(SONNET_ID, provider="Amazon Bedrock").source == "models"
    assert _gets(server, "/endpoints") == 1  # not again at once
    server.set_fault("endpoints", None)
    time.sleep(0.6)
    catalog.pricing_for(SONNET_ID, provider="Amazon Bedrock")  # the first lookup after: fetched again
    assert catalog.wait_until_idle(5)
    assert _gets(server, "/endpoints") == 2
    assert catalog.pricing_for(SONNET_ID, provider="Amazon Bedrock").source == "endpoint:Amazon Bedrock"


def test_a_remembered_answer_gives_way_to_new_prices_and_to_its_ttl(server, tmp_path) -> None:
    catalog = _catalog(server, tmp_path, ttl=1.0)
    assert catalog.refresh()
    catalog.pricing_for(SONNET_ID, provider="Anthropic")
    assert catalog.wait_until_idle(5)  # the endpoints are known: answers from here on are remembered
    for provider in ("Anthropic", "Nowhere"):
        assert catalog.pricing_for(SONNET_ID, provider=provider) is catalog.pricing_for(
            SONNET_ID, provider=provider
        )
    server.set_models([model_entry(SONNET_ID, {**MODEL_PRICING, "prompt": "0.000004"})])
    assert catalog.refresh()  # new prices installed: no earlier answer stands
    assert catalog.pricing_for(SONNET_ID, provider="Nowhere").prompt == Decimal("0.000004")
    model_lists = [r for r in server.requests if r.path.endswith("/models")]
    assert len(model_lists) == 2
    time.sleep(1.1)  # past the ttl: the next lookup refreshes the list behind the scenes
    catalog.pricing_for(SONNET_ID, provider="Nowhere")
    assert catalog.wait_until_idle(5)
    assert len([r for r in server.requests if r.path.endswith("/models")]) == 3


def test_corrupt_disk_cache_is_ignored_with_a_warning(server, tmp_path, caplog) -> None:
    _catalog(server, tmp_path).refresh()
    (cache_file,) = list(tmp_path.rglob("models.json"))
    cache_file.write_text('{"format": 1, "data": [')
    server.set_fault("models", Fault(status=500))
    catalog = _catalog(server, tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert catalog.pricing_for(SONNET_ID).source == "genai-prices"
        catalog.wait_until_idle(5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreadable price cache" in m for m in messages)


def test_unwritable_cache_dir_keeps_prices_in_memory(server, tmp_path, caplog) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    catalog = PriceCatalog(api_base=server.base_url, cache_dir=blocker)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert catalog.refresh()
        assert catalog.refresh()
    assert catalog.pricing_for(SONNET_ID).source == "models"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "in memory only" in warnings[0]


def test_models_with_garbage_prices_are_skipped_with_a_warning(server, tmp_path, caplog) -> None:
    server.set_models(
        [
            model_entry(SONNET_ID, MODEL_PRICING),
            model_entry("bad/model", {"prompt": "NaN", "completion": "1"}),
        ]
    )
    catalog = _catalog(server, tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert catalog.refresh()
    assert catalog.pricing_for(SONNET_ID).source == "models"
    assert catalog.pricing_for("bad/model") is None
    assert len(caplog.records) == 1 and "bad/model" in caplog.records[0].getMessage()


def test_api_base_defaults_to_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_BASE", "http://127.0.0.1:9/api/v1/")
    assert PriceCatalog(offline=True).api_base == "http://127.0.0.1:9/api/v1"
    monkeypatch.delenv("OPENROUTER_API_BASE")
    assert PriceCatalog(offline=True).api_base == "https://openrouter.ai/api/v1"


def test_cache_file_is_plain_json_of_what_was_served(server, tmp_path) -> None:
    _catalog(server, tmp_path).refresh()
    (cache_file,) = list(tmp_path.rglob("models.json"))
    body = json.loads(cache_file.read_text())
    assert {e["id"] for e in body["data"]} >= {SONNET_ID}
    assert body["format"] == 1 and isinstance(body["fetched_at"], float)


def test_preload_imports_the_offline_data_on_the_callers_thread() -> None:
    # A background thread importing genai-prices (and with it httpx2) races the openai SDK, which reads
    # sys.modules["httpx2"] when it builds a client: the user's first call failed on a half-imported module.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from langfuse_openrouter_callbacks import PriceCatalog\n"
        "assert 'genai_prices' not in sys.modules\n"
        "PriceCatalog(offline=True).preload()\n"
        "assert 'genai_prices.data_snapshot' in sys.modules, 'imported behind the caller'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
