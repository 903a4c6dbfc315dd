"""Start-up: nothing that loads prices runs on the program's thread, and loading them behind it is safe.

Each test runs a fresh interpreter (start-up happens once per process) that talks to the local
OpenRouter of this process over real HTTP and prints what it saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.scenario import CACHED_CALL, DATED, REQUESTED
from tests.support.openrouter_server import FakeOpenRouter, ResponseSpec

# Records which thread imports each genai-prices and httpx2 module (a finder that only looks, then
# steps aside), and makes httpx2's submodules slow to find off the main thread, as on a slow disk:
# while they load, a half-imported httpx2 sits in sys.modules for a third of a second.
IMPORT_WATCH = """
import sys, threading, time
imported_on = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("genai_prices", "httpx2"):
            imported_on.setdefault(name, threading.current_thread().name)
            if name.startswith("httpx2.") and threading.current_thread() is not threading.main_thread():
                time.sleep(0.3)
        return None

sys.meta_path.insert(0, Watch())
"""


def _run(code: str) -> dict:
    """Run `code` (after the import watch) in a fresh interpreter; the JSON its last line prints."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_WATCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loading_genai_prices_behind_the_program_never_breaks_its_openai_calls(
    fake_openrouter: FakeOpenRouter,
) -> None:
    # The openai SDK reads sys.modules["httpx2"] each time it builds a request; genai-prices' package
    # imports httpx2, so a background thread importing it exposed a half-imported module to the
    # program's calls ("partially initialized module 'httpx2' has no attribute 'Client'"). The data
    # must load behind the program without that: here the program calls OpenRouter in a loop for as
    # long as the data loads, three times over.
    fake_openrouter.set_default(ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL))
    code = f"""
        import json
        import openai
        from langfuse_openrouter_callbacks import PriceCatalog

        client = openai.OpenAI(api_key="sk-or-test", base_url={fake_openrouter.base_url!r}, max_retries=0)
        messages = [{{"role": "user", "content": "hi"}}]
        client.chat.completions.create(model={REQUESTED!r}, messages=messages)  # its own imports done
        catalog = PriceCatalog(offline=True)
        catalog.preload()
        errors, calls = [], 0
        while not catalog.wait_until_idle(0) or calls == 0:
            try:
                client.chat.completions.create(model={REQUESTED!r}, messages=messages)
            except Exception as exc:
                errors.append(repr(exc))
                break
            calls += 1
        priced = catalog.pricing_for({DATED!r})
        print(json.dumps({{"errors": errors, "calls": calls, "imported": imported_on,
                           "priced": priced is not None and priced.source}}))
    """
    for _ in range(3):
        seen = _run(code)
        assert seen["errors"] == [], seen
        assert seen["priced"] == "genai-prices"  # the data did load, behind the calls
        assert "httpx2" not in seen["imported"]  # nothing but the program itself imports httpx2


def test_handler_and_first_lookup_leave_the_price_data_to_the_background_thread(
    fake_openrouter: FakeOpenRouter, tmp_path
) -> None:
    code = f"""
        import json, os, time
        from langfuse_openrouter_callbacks import PriceCatalog
        from langfuse_openrouter_callbacks.langchain import CallbackHandler

        catalog = PriceCatalog(api_base={fake_openrouter.base_url!r}, cache_dir={str(tmp_path)!r})
        handler = CallbackHandler(price_catalog=catalog)
        first = catalog.pricing_for({DATED!r})  # nothing in memory yet: answered at once, unpriced
        assert catalog.wait_until_idle(60)
        later = catalog.pricing_for({DATED!r})
        print(json.dumps({{"first": first is not None, "later": later.source, "imported": imported_on}}))
    """
    seen = _run(code)
    assert seen["first"] is False
    assert seen["later"] == "genai-prices"  # the fake /models lists no model: the offline data
    threads = {name: thread for name, thread in seen["imported"].items() if name.startswith("genai_prices")}
    assert "genai_prices.data" in threads
    assert set(threads.values()) == {"langfuse-openrouter-price-catalog"}, threads
