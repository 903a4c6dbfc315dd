"""The README's Python snippets and `report` run as written against `langfuse-openrouter demo --serve`."""

from __future__ import annotations

import base64
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from tests.scenario import SERVICE_VARIABLES

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SNIPPETS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)
EXPORT = re.compile(r"^export (OPENROUTER_\w+|LANGFUSE_\w+)=(\S+)$")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict[str, str]]:
    """`demo --serve` running; the variables it printed."""
    home = tmp_path_factory.mktemp("serve")
    server = subprocess.Popen(
        [sys.executable, "-m", "langfuse_openrouter_callbacks", "demo", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_clean_env(), "XDG_CACHE_HOME": str(home)},
        cwd=home,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    exports: dict[str, str] = {}
    printed: list[str] = []
    while len(exports) < 5:
        try:
            line = lines.get(timeout=300)
        except queue.Empty:
            server.kill()
            pytest.fail(f"demo --serve printed no variables: {''.join(printed)}{server.stderr.read()}")
        printed.append(line)
        if match := EXPORT.match(line.strip()):
            exports[match.group(1)] = match.group(2)
    try:
        yield exports
    finally:
        server.send_signal(signal.SIGINT)
        try:
            assert server.wait(timeout=60) == 0  # Ctrl-C is how --serve ends
        finally:
            server.kill()
            server.stdout.close()
            server.stderr.close()


def _generations(exports: dict[str, str]) -> list[dict]:
    """What the embedded Langfuse serves on its public API (newest first)."""
    auth = base64.b64encode(f"{exports['LANGFUSE_PUBLIC_KEY']}:{exports['LANGFUSE_SECRET_KEY']}".encode())
    response = httpx.get(
        exports["LANGFUSE_BASE_URL"] + "/api/public/v2/observations",
        params={"type": "GENERATION"},
        headers={"Authorization": "Basic " + auth.decode()},
    )
    response.raise_for_status()
    return response.json()["data"]


def _run(args: list[str], exports: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env={**_clean_env(), **exports, "XDG_CACHE_HOME": str(tmp_path)},
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def test_the_readme_lists_the_variables_serve_prints(served) -> None:
    block = README[README.index("demo --serve`** runs") :]
    listed = re.findall(r"^export (\w+)=", block[: block.index("```\n", block.index("```bash") + 7)], re.M)
    assert listed == list(served)


def test_the_readme_has_the_quickstarts() -> None:
    assert len(SNIPPETS) >= 4
    assert any("CallbackHandler()" in s for s in SNIPPETS) and any(
        "set_global_handler()" in s for s in SNIPPETS
    )


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet-{i + 1}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs_as_written_against_the_embedded_services(served, snippet, tmp_path) -> None:
    before = {g["id"] for g in _generations(served)}
    done = _run([sys.executable, "-c", snippet], served, tmp_path)
    new = [g for g in _generations(served) if g["id"] not in before]
    if "CallbackHandler()" in snippet or "set_global_handler()" in snippet:
        assert "refunds" in done.stdout.lower()  # the embedded OpenRouter answered the question asked
        (generation,) = new
        openrouter = generation["metadata"]["openrouter"]
        assert openrouter["cost_source"] == "openrouter" and generation["costDetails"]["total"] > 0


def test_report_runs_as_written_against_the_embedded_langfuse(served, tmp_path) -> None:
    today = datetime.now(timezone.utc).date().isoformat()
    done = _run(
        [sys.executable, "-m", "langfuse_openrouter_callbacks", "report", "--from", today, "--to", today],
        served,
        tmp_path,
    )
    assert "anthropic/claude-4.5-sonnet-20250929" in done.stdout and "openai/gpt-4.1-mini" in done.stdout


def test_the_readme_lists_the_models_the_embedded_openrouter_serves() -> None:
    from langfuse_openrouter_callbacks.demo.openrouter import load_data

    table = README[README.index("It serves these models:") : README.index("- With `LANGFUSE_PUBLIC_KEY`")]
    listed = re.findall(r"^  \| `([^`]+)` \| `([^`]+)` \| (\w+) \|", table, re.M)
    served = [(m, d["canonical_slug"], d["provider"]) for m, d in load_data()["models"].items()]
    assert listed == served
