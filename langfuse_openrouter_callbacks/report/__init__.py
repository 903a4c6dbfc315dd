"""What OpenRouter calls cost per model and day, with and without the prompt cache, and what the cache
failed to save and why, read back from Langfuse.

```python
from langfuse_openrouter_callbacks.report import fetch_report, render_table, save_chart

report = fetch_report("2026-11-01", "2026-11-28")  # the client from langfuse.get_client()
print(render_table(report))
save_chart(report, "savings.png")
report.rows  # ReportRow per (day, model): calls, tokens, cost, no-cache cost, savings
report.cache_misses  # CacheMiss per cause: calls, prompt tokens, lost_usd, example observations, advice
report.grouped("session")  # GroupRow per session: cost, savings, lost to misses
```

Where the figures come from (`source`):

- `"observations"`: every generation is read (observations API v2, cursor pages of 1000, as plain JSON)
  and the figures come from its `usageDetails`, `costDetails` and `metadata.openrouter`. Only
  generations carrying `metadata.openrouter` count. Reading them is what the cache doctor needs
  (`_doctor`): why each call that read nothing from the cache missed, in dollars.
- `"metrics"`: Langfuse aggregates server-side (metrics API v2), so millions of generations cost three
  queries: generations and `totalCost` per model and day, `usageByType` per model and day, and the
  numeric score `openrouter_cache_savings_usd` (`savings_score=True`) summed per model and day.
- `"auto"` (default): every generation is read when cache misses are diagnosed (`cache_misses=True`,
  the default) or the grouping needs it; otherwise the metrics API when it can give every figure.

The calls whose reported and computed cost disagree (`metadata.openrouter.reconciliation_delta` beyond
`tolerance`) are listed whenever the generations are read.

Modules: `_api` (HTTP, retries, errors), `_metrics` (server-side aggregation), `_scan` (reading every
generation), `_doctor` and `_cache_facts` (the cache-miss rules and the providers' caching facts),
`_render` (table, CSV, JSON, HTML), `_chart` (PNG/JPEG), `_command` (the CLI). Money is summed as
`Decimal` (floats converted through `str`) and rounded only when presented.
"""

from __future__ import annotations

from ._api import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, LangfuseConnection, api_client_from_env
from ._cache_facts import CACHE_FACTS, CacheFacts, facts_for
from ._chart import chart_bytes, chart_png, save_chart
from ._command import run_report
from ._fetch import fetch_report
from ._model import (
    CAUSES,
    DEFAULT_TOLERANCE,
    DIMENSIONS,
    CacheMiss,
    Disagreement,
    ExampleCall,
    GroupRow,
    ReportError,
    ReportRow,
    SavingsReport,
    Undecided,
)
from ._render import render, render_table, to_csv, to_html, to_json
from ._scan import openrouter_fields

__all__ = [
    "CACHE_FACTS",
    "CAUSES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOLERANCE",
    "DIMENSIONS",
    "CacheFacts",
    "CacheMiss",
    "Disagreement",
    "ExampleCall",
    "GroupRow",
    "LangfuseConnection",
    "ReportError",
    "ReportRow",
    "SavingsReport",
    "Undecided",
    "api_client_from_env",
    "chart_bytes",
    "chart_png",
    "facts_for",
    "fetch_report",
    "openrouter_fields",
    "render",
    "render_table",
    "run_report",
    "save_chart",
    "to_csv",
    "to_html",
    "to_json",
]
