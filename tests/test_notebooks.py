"""Every notebook runs top to bottom on the embedded default (no keys), and is stored without outputs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
from nbclient import NotebookClient

from tests.scenario import SERVICE_VARIABLES

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_embedded_default(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env={**os.environ})  # raises CellExecutionError on any failing cell
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert errors == []
    printed = "".join(
        o.get("text", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )
    if path.name.startswith("01"):  # the embedded OpenRouter answers the question asked
        answers = dict(re.findall(r"^Q: (.*)\nA: (.*)$", printed, re.M))
        assert "refund" in answers["How long do refunds take?"].lower()
        assert "invoice" in answers["And for invoice payments?"].lower()
        assert "discount code" in answers["Can I combine two discount codes?"].lower()
        assert "never expire" in answers["Do gift cards expire?"]

    if path.stem.startswith("02"):  # the handler leaves the streamed answer to the reader
        (streaming,) = [c for c in notebook.cells if c.cell_type == "code" and "response_gen" in c.source]
        printed = "".join(o.get("text", "") for o in streaming.outputs if o.output_type == "stream")
        assert printed.strip(), f"the streaming cell printed {printed!r}"


def test_the_notebooks_extra_opens_and_runs_them() -> None:
    """`pip install -e ".[notebooks]"` brings JupyterLab (and with it nbconvert), as the README says."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "notebooks"
    ]
    assert any(requirement.startswith("jupyterlab") for requirement in extra)
    for module in ("jupyterlab", "nbconvert"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0 and done.stdout.strip()[0].isdigit(), (module, done.stderr[-2000:])
    readme = (REPO / "README.md").read_text()
    assert "jupyter lab notebooks/" in readme and "jupyter nbconvert --to notebook --execute" in readme
