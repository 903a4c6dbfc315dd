"""The package's shape: public API at the root, a core that loads no framework, typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import langfuse_openrouter_callbacks as pkg

ROOT = Path(pkg.__file__).parent


def test_public_api_is_re_exported_from_the_root() -> None:
    for name in (
        "OpenRouterUsage",
        "ModelPricing",
        "PriceCatalog",
        "compute_cost",
        "CostBreakdown",
        "to_langfuse",
    ):
        assert name in pkg.__all__ and getattr(pkg, name) is not None


def test_importing_the_core_imports_no_framework() -> None:
    code = (
        "import sys, langfuse_openrouter_callbacks as p;"
        "p.compute_cost({'prompt_tokens': 1}, {'prompt': '1e-6', 'completion': '1e-6'});"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('langchain', 'langchain_core', 'llama_index',"
        " 'langfuse', 'httpx')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_modules_never_import_an_adapter_or_framework() -> None:
    core = [
        "usage.py",
        "pricing.py",
        "catalog.py",
        "cost.py",
        "langfuse_fields.py",
        "_genai_prices.py",
        "_log.py",
    ]
    for name in core:
        text = (ROOT / name).read_text()
        for banned in ("langchain", "llama_index", "from .langchain", "from .llama_index"):
            assert f"import {banned}" not in text and f"from {banned}" not in text, (name, banned)


def test_ships_py_typed() -> None:
    assert (ROOT / "py.typed").exists()


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    repo = ROOT.parent
    readme = (repo / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("pip install") and "dev]" in line)
    ci_lines = (repo / ".ci" / "run").read_text().splitlines()
    assert command in ci_lines


def test_the_suite_needs_nothing_outside_the_clone() -> None:
    """The real data the tests use lives in tests/data/, every entry with its source; no test reads
    a path beside the repository (`../shared`)."""
    import json

    from tests import shared_data
    from tests.support import recorded_exchanges_path

    repo = ROOT.parent
    assert repo / "tests" / "data" == shared_data.DATA
    assert recorded_exchanges_path().parent == shared_data.DATA
    assert all(case["source"] for case in shared_data.cost_cases())
    assert all(exchange["source"] for exchange in shared_data.recorded_exchanges())
    for path in shared_data.DATA.glob("*.json"):
        data = json.loads(path.read_text())
        entries = data["cases"] if isinstance(data, dict) else data
        assert entries and all(entry.get("source") for entry in entries), path.name
    for path in (repo / "tests").rglob("*.py"):
        if path == Path(__file__).resolve():
            continue
        text = path.read_text()
        assert "shared/data" not in text and "parents[2]" not in text, path.relative_to(repo)
