"""The demo's output: a rich table per generation, totals, and where to look in Langfuse."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from . import cache_misses
from .run import QUESTIONS, RAG_QUESTIONS, DemoResult, run_demo

CALLS = 2 * len(QUESTIONS) + len(RAG_QUESTIONS) + cache_misses.CALLS


def usd(amount: Decimal | None) -> str:
    if amount is None:
        return "—"
    return f"${amount:,.6f}" if amount >= 0 else f"-${-amount:,.6f}"


def generations_table(result: DemoResult) -> Table:
    table = Table(title="What Langfuse received, per generation", show_footer=True, header_style="bold")
    totals = result.totals()
    columns: list[tuple[str, str, dict[str, Any]]] = [
        ("Framework", "Total", {}),
        ("Model", "", {"overflow": "fold"}),
        ("Provider", "", {}),
        ("Input", f"{totals['input']:,}", {"justify": "right"}),
        ("Cache read", f"{totals['cache_read']:,}", {"justify": "right"}),
        ("Cache write", f"{totals['cache_write']:,}", {"justify": "right"}),
        ("Output", f"{totals['output']:,}", {"justify": "right"}),
        ("Reasoning", f"{totals['reasoning']:,}", {"justify": "right"}),
        ("Cost", usd(totals["cost"]), {"justify": "right"}),
        ("No-cache cost", usd(totals["no_cache_cost"]), {"justify": "right"}),
        ("Savings", usd(totals["savings"]), {"justify": "right", "style": "green"}),
        ("Cost source", "", {}),
    ]
    for header, footer, options in columns:
        table.add_column(header, footer=footer, **options)
    for row in result.rows:
        savings = usd(row.savings)
        table.add_row(
            row.framework,
            row.model,
            row.provider or "—",
            f"{row.input:,}",
            f"{row.cache_read:,}",
            f"{row.cache_write:,}",
            f"{row.output:,}",
            f"{row.reasoning:,}",
            usd(row.cost),
            usd(row.no_cache_cost),
            f"[red]{savings}[/red]" if row.savings is not None and row.savings < 0 else savings,
            row.cost_source,
        )
    return table


def run(console: Console | None = None) -> DemoResult:
    """Run the demo with a progress bar and print its tables."""
    console = console or Console()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("Starting", total=CALLS)
        calls = 0

        def step(description: str) -> None:
            nonlocal calls
            if calls:
                progress.advance(task)
            calls += 1
            progress.update(task, description=description)

        result = run_demo(progress=step)
        progress.advance(task)

    console.print(
        f"OpenRouter: [bold]{result.openrouter}[/bold]   Langfuse: [bold]{result.langfuse}[/bold]"
        + (f" ({result.spans_received} spans received)" if result.spans_received is not None else "")
    )
    console.print(generations_table(result))
    totals = result.totals()
    if totals["no_cache_cost"]:
        share = totals["savings"] / totals["no_cache_cost"]
        console.print(
            f"Prompt caching saved [bold green]{usd(totals['savings'])}[/bold green] "
            f"({share:.0%} of {usd(totals['no_cache_cost'])}). The first call to each cached prompt writes "
            "the cache (negative savings for Anthropic's 1.25x writes); the calls after it read it."
        )
    if result.langfuse == "embedded":
        console.print(
            "Set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (and OPENROUTER_API_KEY) "
            "to send these to your Langfuse."
        )
    else:
        traces = sorted({row.trace_id for row in result.rows})
        console.print(
            f"In Langfuse ({result.langfuse}): open the {len(traces)} traces below; each generation's "
            "cost tooltip shows the buckets, its metadata the `openrouter` savings."
        )
        for trace_id in traces:
            console.print(f"  {result.langfuse.rstrip('/')}/trace/{trace_id}")
    return result
