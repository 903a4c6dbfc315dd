"""The demo's output: a table of what was exported per generation, totals, and where to look in Langfuse.

The table fits the terminal without cutting a number: at 120 columns one line per call; narrower, the
model id goes under the framework; narrower still, the no-cache cost moves to the summary line.
Columns that are zero for every call are left out, and so is the cost source when it is the same for
every call (the caption says which).
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from decimal import Decimal

from rich import box
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .run import EMBEDDED_LANGFUSE_KEYS, DemoResult, DemoServices, run_demo, run_on

_TOKENS = (
    ("input", "Input"),
    ("cache_read", "Cache read"),
    ("cache_write", "Cache write"),
    ("output", "Output"),
    ("reasoning", "Reasoning"),
)
_SOURCES = {
    "openrouter": "the charge OpenRouter reported",
    "computed": "computed from OpenRouter's prices",
    "unpriced": "no known price",
    "langfuse": "Langfuse's own",
}


def usd(amount: Decimal | None, sign: str = "$") -> str:
    """`$0.006420`, `-$0.001312`, or `—` when there is none; never rounded to nothing."""
    if amount is None:
        return "—"
    return f"{sign}{amount:,.6f}" if amount >= 0 else f"-{sign}{-amount:,.6f}"


# Most to least spread out: (first columns, a Provider column, a No-cache cost column).
_LAYOUTS = (
    ("columns", True, True),
    ("columns", False, True),
    ("two lines", False, True),
    ("three lines", False, True),
    ("two lines", False, False),
    ("three lines", False, False),
)


def generations_table(result: DemoResult, width: int = 120) -> Table:
    """What was exported for each generation, with totals: the most spread-out layout that fits
    `width` columns without cutting a number."""
    for layout in _LAYOUTS:
        table, numbers = _table(result, *layout)
        console = Console(width=width, file=io.StringIO(), record=True)
        console.print(table)
        words = set(console.export_text().split())
        if all(number in words for number in numbers):
            return table
    return table


def _table(result: DemoResult, label: str, provider: bool, no_cache: bool) -> tuple[Table, list[str]]:
    """The table in one layout, and the numbers it shows."""
    rows, totals = result.rows, result.totals()
    numbers: list[str] = []
    tokens = [(key, header) for key, header in _TOKENS if any(getattr(r, key) for r in rows)]
    sources = {r.cost_source for r in rows}
    money = [("cost", "Cost"), ("no_cache_cost", "No-cache cost"), ("savings", "Savings")][
        :: 1 if no_cache else 2
    ]
    caption = "Tokens are exclusive: input is neither read from nor written to the cache."
    if len(sources) == 1:
        (source,) = sources
        caption += f" Cost: {_SOURCES.get(source, source)} (cost source `{source}`)."
    if any(r.streamed for r in rows):
        caption += " * streamed."
    table = Table(
        title="What was exported, per generation",
        caption=caption,
        show_footer=True,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption_justify="left",
    )
    if label == "columns":
        table.add_column("Framework", footer="Total", no_wrap=True)
        table.add_column("Model", no_wrap=True)
        if provider:
            table.add_column("Provider", no_wrap=True)
    else:
        table.add_column("Call", footer="Total", no_wrap=True)
    for key, header in tokens:
        cells = [f"{totals[key]:,}", *(f"{getattr(r, key):,}" for r in rows)]
        numbers += cells
        table.add_column(header, footer=cells[0], justify="right", min_width=max(map(len, cells)))
    for key, header in money:
        cells = [usd(totals[key]), *(usd(getattr(r, key)) for r in rows)]
        numbers += cells
        style = {"style": "green"} if key == "savings" else {}
        table.add_column(header, footer=cells[0], justify="right", min_width=max(map(len, cells)), **style)
    if len(sources) > 1:
        table.add_column("Cost source", no_wrap=True)
    for row in rows:
        model = (row.requested_model or row.model) + (" *" if row.streamed else "")
        if label == "columns":
            labels = [row.framework, model, *([row.provider or "—"] if provider else [])]
        else:
            labels = [
                f"{row.framework}\n" + (model.replace("/", "/\n", 1) if label == "three lines" else model)
            ]
        cells = [f"{getattr(row, key):,}" for key, _ in tokens]
        for key, _ in money:
            text = usd(getattr(row, key))
            cells.append(f"[red]{text}[/red]" if key == "savings" and (row.savings or 0) < 0 else text)
        table.add_row(*labels, *cells, *([row.cost_source] if len(sources) > 1 else []))
    return table, numbers


@contextmanager
def _quiet_logs() -> Iterator[list[logging.LogRecord]]:
    """Keep the libraries' warnings (the SDK's retries, ours) off the screen while the demo runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root, handler = logging.getLogger(), Keep(logging.WARNING)
    root.addHandler(handler)  # with a handler, nothing falls through to the last-resort stderr one
    try:
        yield records
    finally:
        root.removeHandler(handler)


def run(console: Console | None = None) -> int:
    """Run the demo with a progress line and print its table; the exit status (1: export not seen)."""
    console = console or Console()
    with _quiet_logs() as warnings, _Progress(console) as progress:
        result = run_demo(progress=progress.say)
    print_result(console, result, warnings)
    return 0 if result.export_error is None else 1


def serve(console: Console | None = None) -> int:
    """Run the demo on the embedded services, then keep them running for the README's snippets, the
    notebooks and `report`, with the variables that point at them; Ctrl-C stops them."""
    console = console or Console()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "LANGFUSE_"))}
    with (
        _quiet_logs() as warnings,
        _Progress(console) as progress,
        DemoServices(environ, progress.say) as services,
    ):
        result = run_on(services)
        progress.stop()
        print_result(console, result, warnings, serving=True)
        exports = {
            "OPENROUTER_API_KEY": services.openrouter_key,
            "OPENROUTER_API_BASE": services.openrouter_base,
            "LANGFUSE_PUBLIC_KEY": EMBEDDED_LANGFUSE_KEYS[0],
            "LANGFUSE_SECRET_KEY": EMBEDDED_LANGFUSE_KEYS[1],
            "LANGFUSE_BASE_URL": services.langfuse_base,
        }
        console.print(
            "\nThe embedded OpenRouter and Langfuse keep running until Ctrl-C. Paste these in another shell, "
            "then run the README's snippets, the notebooks or `langfuse-openrouter report` as written:",
            highlight=False,
        )
        console.print(
            "\n".join(f"export {k}={v}" for k, v in exports.items()), highlight=False, soft_wrap=True
        )
        console.file.flush()
        with suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


class _Progress:
    """A transient spinner line saying what is being prepared and which call runs."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(  # off when piped: a file gets the table only
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task = self._progress.add_task("Starting", total=None)

    def say(self, description: str) -> None:
        self._progress.update(self._task, description=description)

    def stop(self) -> None:
        self._progress.stop()

    def __enter__(self) -> _Progress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def print_result(
    console: Console, result: DemoResult, warnings: Sequence[logging.LogRecord] = (), *, serving: bool = False
) -> None:
    """The table, the savings, and either where to look in Langfuse or why the export was not seen."""
    traces = sorted({row.trace_id for row in result.rows})
    where = "embedded" if result.langfuse == "embedded" else result.langfuse
    console.print(f"OpenRouter: [bold]{result.openrouter}[/bold]   Langfuse: [bold]{where}[/bold]")
    console.print(generations_table(result, console.width))
    totals = result.totals()
    if totals["no_cache_cost"]:
        share = totals["savings"] / totals["no_cache_cost"]
        console.print(
            f"Prompt caching saved [bold green]{usd(totals['savings'])}[/bold green] "
            f"({share:.0%} of the {usd(totals['no_cache_cost'])} these calls cost without it). The first "
            "call to each cached prompt writes the cache (negative savings for Anthropic's 1.25x writes); "
            "the calls after it read it."
        )
    ours = (r.getMessage().splitlines()[0] for r in warnings if r.name.startswith("langfuse_openrouter"))
    for message in dict.fromkeys(ours):
        console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
    if result.export_error is not None:
        console.print(f"[bold red]Not exported:[/bold red] {result.export_error}.", highlight=False)
    elif result.langfuse == "embedded" and serving:
        console.print(
            f"The embedded Langfuse received these {len(result.rows)} generations in {len(traces)} traces "
            f"({result.spans_received} spans with the chains, queries and retrievals around them).",
            highlight=False,
        )
    elif result.langfuse == "embedded":
        console.print(
            f"The embedded Langfuse received these {len(result.rows)} generations in {len(traces)} traces "
            f"({result.spans_received} spans with the chains, queries and retrievals around them). Set "
            "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (and OPENROUTER_API_KEY) to send them to your "
            "Langfuse, or run `langfuse-openrouter demo --serve` to keep the embedded services running.",
            highlight=False,
        )
    else:
        console.print(
            f"Langfuse received them: open the {len(traces)} traces below; each generation's cost tooltip "
            "shows the buckets, its metadata the `openrouter` savings.",
            highlight=False,
        )
        for trace_id in traces:
            console.print(f"  {result.langfuse}/trace/{trace_id}", highlight=False, soft_wrap=True)
