"""`langfuse-openrouter report`: fetch, render, write, and one line on stderr when something fails."""

from __future__ import annotations

import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from ._model import DEFAULT_TOLERANCE, ReportError

__all__ = ["run_report"]

_CHART_SUFFIXES = (".png", ".jpg", ".jpeg")


def run_report(
    *,
    start: date,
    end: date,
    model: str | None = None,
    fmt: str = "table",
    table: str = "rows",
    by: str = "model",
    chart: str | None = None,
    output: str | None = None,
    source: str = "auto",
    cache_misses: bool = True,
    check_disagreements: bool = False,
    tolerance: Decimal = DEFAULT_TOLERANCE,
    client: Any = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    **options: Any,
) -> int:
    """`langfuse-openrouter report`: 0 done, 1 Langfuse or file error, 2 bad arguments (one stderr line)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    prefix = "langfuse-openrouter report: error:"
    if start > end:
        print(f"{prefix} --from {start} is after --to {end}", file=stderr)
        return 2
    if chart and Path(chart).suffix.lower() not in _CHART_SUFFIXES:
        print(f"{prefix} --chart writes .png, .jpg or .jpeg files, not {chart!r}", file=stderr)
        return 2
    from ._api import api_client_from_env
    from ._fetch import fetch_report
    from ._render import render

    try:
        report = fetch_report(
            start,
            end,
            model=model,
            client=client if client is not None else api_client_from_env(),
            source=source,  # type: ignore[arg-type]
            cache_misses=cache_misses,
            by=by,
            check_disagreements=check_disagreements,
            tolerance=tolerance,
            **options,
        )
        text = render(report, fmt, table=table)  # type: ignore[arg-type]
        if chart:
            from ._chart import save_chart

            save_chart(report, chart)
        if output:
            Path(output).write_text(text, encoding="utf-8")
        else:
            stdout.write(text)
            stdout.flush()
    except ReportError as exc:
        print(f"{prefix} {exc}", file=stderr)
        return 1
    except OSError as exc:
        print(f"{prefix} {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=stderr)
        return 1
    if fmt == "csv":
        for line in report.notes:
            print(f"note: {line}", file=stderr)
    for path in (p for p in (output, chart) if p):
        print(f"wrote {path}", file=stderr)
    return 0
