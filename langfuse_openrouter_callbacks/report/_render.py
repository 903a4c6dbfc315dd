"""The report as text: a terminal table, CSV, JSON and one self-contained HTML page.

Money is shown at one precision everywhere (micro-dollars), and the rows of a table with a total are
rounded so that they add up to the total shown (largest remainders).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

from ._model import MACHINE_MONEY, CacheMiss, Disagreement, ReportError, ReportRow, SavingsReport

__all__ = ["Format", "Table", "render", "render_table", "to_csv", "to_html", "to_json"]

Format = Literal["table", "csv", "json", "html"]
Table = Literal["rows", "by", "cache_misses"]
_ZERO = Decimal(0)


def apportion(amounts: Sequence[Decimal], quantum: Decimal = MACHINE_MONEY) -> tuple[list[Decimal], Decimal]:
    """`amounts` rounded to `quantum` so that they add up to their rounded sum, and that sum."""
    total = sum(amounts, _ZERO).quantize(quantum) + 0
    floors = [a.quantize(quantum, rounding=ROUND_FLOOR) for a in amounts]
    units = int((total - sum(floors, _ZERO)) / quantum)
    order = sorted(range(len(amounts)), key=lambda i: (amounts[i] - floors[i], -i), reverse=True)
    for i in order[: max(0, units)]:
        floors[i] += quantum
    return [f + 0 for f in floors], total


def _usd(amount: Decimal | None) -> str:
    if amount is None:
        return "-"
    rounded = amount.quantize(MACHINE_MONEY) + 0
    return f"-${-rounded:,f}" if rounded < 0 else f"${rounded:,f}"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1%}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


_COLUMNS = (
    "Calls",
    "Input",
    "Cached",
    "Written",
    "Output",
    "Hit ratio",
    "Cost",
    "No-cache cost",
    "Savings",
    "Disagreements",
)
_GROUP_COLUMNS = ("Calls", "Cost", "No-cache cost", "Savings", "Lost to misses")
_MISS_COLUMNS = ("Cause", "Calls", "Prompt tokens", "Lost", "Example observations", "Advice")
_DISAGREEMENT_COLUMNS = ("Day", "Model", "Observation", "Generation", "Reported", "Computed", "Delta")
_DIMENSION_TITLES = {
    "model": "model",
    "day": "day",
    "session": "session",
    "user": "user",
    "trace_name": "trace name",
}


def _cells(row: ReportRow, money: tuple[Decimal, Decimal, Decimal] | None = None) -> list[str]:
    cost, no_cache, savings = money or (row.cost, row.no_cache_cost, row.savings)
    return [
        _count(row.calls),
        _count(row.input_tokens),
        _count(row.cached_tokens),
        _count(row.written_tokens),
        _count(row.output_tokens),
        _percent(row.cache_hit_ratio),
        _usd(cost),
        _usd(no_cache),
        _usd(savings),
        _count(row.disagreements),
    ]


def _model_table(report: SavingsReport) -> list[tuple[str, list[str]]]:
    """(model, cells) per model, then ("Total", cells), the money columns adding up."""
    rows = report.by_model()
    costs, cost = apportion([r.cost for r in rows])
    no_caches, no_cache = apportion([r.no_cache_cost for r in rows])
    savings, saved = apportion([r.savings for r in rows])
    out = [(r.model or "", _cells(r, (costs[i], no_caches[i], savings[i]))) for i, r in enumerate(rows)]
    out.append(("Total", _cells(report.totals, (cost, no_cache, saved))))
    return out


def _group_table(report: SavingsReport) -> list[tuple[str, list[str]]] | None:
    try:
        groups = report.grouped()
    except ReportError:
        return None
    costs, cost = apportion([g.cost for g in groups])
    no_caches, no_cache = apportion([g.no_cache_cost for g in groups])
    savings, saved = apportion([g.savings for g in groups])
    diagnosed = report.cache_misses is not None
    losts, lost = apportion([g.lost_usd or _ZERO for g in groups])
    out = [
        (
            g.key,
            [
                _count(g.calls),
                _usd(costs[i]),
                _usd(no_caches[i]),
                _usd(savings[i]),
                _usd(losts[i]) if diagnosed else "-",
            ],
        )
        for i, g in enumerate(groups)
    ]
    calls = sum(g.calls for g in groups)
    out.append(
        ("Total", [_count(calls), _usd(cost), _usd(no_cache), _usd(saved), _usd(lost) if diagnosed else "-"])
    )
    return out


def _miss_table(report: SavingsReport) -> list[tuple[CacheMiss | None, list[str]]]:
    misses = report.cache_misses or ()
    losts, lost = apportion([m.lost_usd for m in misses])
    out: list[tuple[CacheMiss | None, list[str]]] = [
        (
            m,
            [
                m.cause,
                _count(m.calls),
                _count(m.prompt_tokens),
                _usd(losts[i]),
                ", ".join(m.observation_ids),
                m.advice,
            ],
        )
        for i, m in enumerate(misses)
    ]
    calls = sum(m.calls for m in misses)
    tokens = sum(m.prompt_tokens for m in misses)
    out.append((None, ["Total", _count(calls), _count(tokens), _usd(lost), "", ""]))
    return out


def _title(report: SavingsReport) -> str:
    scope = f" for {report.model}" if report.model else ""
    return f"OpenRouter prompt-cache savings{scope}, {report.start.isoformat()} to {report.end.isoformat()}"


def _source_line(report: SavingsReport) -> str:
    how = (
        "aggregated by Langfuse (metrics API)"
        if report.source == "metrics"
        else "summed from every generation (observations API)"
    )
    return f"UTC days; {how}; input = prompt tokens neither read from nor written to the cache."


def _disagreement_cells(d: Disagreement) -> list[str]:
    return [
        d.day.isoformat(),
        d.model,
        d.observation_id,
        d.generation_id or "-",
        _usd(d.reported_cost),
        _usd(d.computed_cost),
        _usd(d.delta),
    ]


def _miss_lines(report: SavingsReport) -> list[str]:
    if report.cache_misses is None:
        return []
    lines = [
        f"For {u.calls} calls {', '.join(u.causes)} could not be decided: {u.reason}."
        for u in report.undecided
    ]
    if not report.cache_misses:
        lines.insert(
            0, "No cache misses: every repeated prefix that could be cached was read from the cache."
        )
    return lines


def _footnotes(report: SavingsReport) -> list[str]:
    lines = list(report.notes)
    if report.disagreements is None:
        lines.append("Cost disagreements not checked: check_disagreements=True (--disagreements) finds them.")
    if report.cache_misses is None:
        lines.append("Cache misses not diagnosed: they need every generation read (drop --no-cache-misses).")
    return lines


def render_table(report: SavingsReport, *, width: int = 200) -> str:
    """The report as plain-text tables (rich), for a terminal."""
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, highlight=False, emoji=False)
    console.print(_title(report))
    console.print(_source_line(report))

    def table(title: str, first: tuple[str, ...], columns: tuple[str, ...] = _COLUMNS) -> Table:
        t = Table(title=title, title_justify="left")
        for name in first:
            t.add_column(name, no_wrap=True)
        for name in columns:
            t.add_column(name, justify="right", no_wrap=True)
        return t

    daily = table("Per day and model", ("Day", "Model"))
    for row in report.rows:
        daily.add_row(row.day.isoformat() if row.day else "", row.model or "", *_cells(row))
    if not report.rows:
        daily.add_row("-", "no OpenRouter generations", *[""] * len(_COLUMNS))
    console.print(daily)

    models = table("Per model", ("Model",))
    model_rows = _model_table(report)
    for name, cells in model_rows[:-1]:
        models.add_row(name, *cells)
    models.add_section()
    models.add_row(*model_rows[-1][0:1], *model_rows[-1][1])
    console.print(models)

    group_rows = _group_table(report)
    if group_rows is not None and (report.cache_misses is not None or report.by != "model"):
        title = _DIMENSION_TITLES[report.by]
        groups = table(
            f"Per {title}: cost, savings and lost to cache misses", (title.capitalize(),), _GROUP_COLUMNS
        )
        for name, cells in group_rows[:-1]:
            groups.add_row(name, *cells)
        groups.add_section()
        groups.add_row(group_rows[-1][0], *group_rows[-1][1])
        console.print(groups)

    if report.cache_misses:
        t = Table(title="Cache misses: what caching did not save, and why", title_justify="left")
        for name in _MISS_COLUMNS:
            numeric = name in ("Calls", "Prompt tokens", "Lost")
            t.add_column(
                name,
                justify="right" if numeric else "left",
                no_wrap=name != "Advice" and name != "Example observations",
            )
        rows = _miss_table(report)
        for _, cells in rows[:-1]:
            t.add_row(*cells)
        t.add_section()
        t.add_row(*rows[-1][1])
        console.print(t)
    for line in _miss_lines(report):
        console.print(line)

    if report.disagreements:
        t = Table(title=f"Cost disagreements (|delta| > ${report.tolerance:f})", title_justify="left")
        for name in _DISAGREEMENT_COLUMNS:
            numeric = name in ("Reported", "Computed", "Delta")
            t.add_column(name, no_wrap=True, justify="right" if numeric else "left")
        for d in report.disagreements:
            t.add_row(*_disagreement_cells(d))
        console.print(t)
    for line in _footnotes(report):
        console.print(f"Note: {line}")
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


_CSV_FIELDS = (
    "day",
    "model",
    "calls",
    "input_tokens",
    "cached_tokens",
    "written_tokens",
    "output_tokens",
    "cache_hit_ratio",
    "cost_usd",
    "no_cache_cost_usd",
    "savings_usd",
    "disagreements",
)
_MISS_FIELDS = ("cause", "calls", "prompt_tokens", "lost_usd", "observation_ids", "advice")


def _money(amount: Decimal) -> str:
    return f"{amount.quantize(MACHINE_MONEY) + 0:f}"


def to_csv(report: SavingsReport, table: Table = "rows") -> str:
    """One CSV table: "rows" (per day and model), "by" (per `report.by`) or "cache_misses" (per cause).

    Money in USD at micro-dollars, the hit ratio to 4 places; observation ids separated by spaces.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if table == "rows":
        writer.writerow(_CSV_FIELDS)
        for row in report.rows:
            ratio = row.cache_hit_ratio
            writer.writerow(
                [
                    row.day.isoformat() if row.day else "",
                    row.model or "",
                    row.calls,
                    row.input_tokens,
                    row.cached_tokens,
                    row.written_tokens,
                    row.output_tokens,
                    "" if ratio is None else f"{ratio:.4f}",
                    _money(row.cost),
                    _money(row.no_cache_cost),
                    _money(row.savings),
                    "" if row.disagreements is None else row.disagreements,
                ]
            )
    elif table == "by":
        writer.writerow((report.by, "calls", "cost_usd", "no_cache_cost_usd", "savings_usd", "lost_usd"))
        for g in report.grouped():
            lost = "" if g.lost_usd is None else _money(g.lost_usd)
            writer.writerow(
                (g.key, g.calls, _money(g.cost), _money(g.no_cache_cost), _money(g.savings), lost)
            )
    elif table == "cache_misses":
        if report.cache_misses is None:
            raise ReportError("cache misses were not diagnosed (the generations were not read)")
        writer.writerow(_MISS_FIELDS)
        for m in report.cache_misses:
            writer.writerow(
                (m.cause, m.calls, m.prompt_tokens, _money(m.lost_usd), " ".join(m.observation_ids), m.advice)
            )
    else:
        raise ValueError(f"unknown table {table!r}")
    return buffer.getvalue()


def to_json(report: SavingsReport, *, indent: int | None = 2) -> str:
    """The whole report (`SavingsReport.as_dict`) as JSON."""
    return json.dumps(report.as_dict(), indent=indent) + "\n"


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1d1d1f; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
p.meta, p.note { color: #555; margin: .3rem 0; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { padding: .25rem .45rem; border-bottom: 1px solid #ddd; white-space: nowrap; vertical-align: top; }
th { background: #f3f4f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { white-space: normal; min-width: 14rem; max-width: 28rem; }
tr.total td { font-weight: 600; border-top: 2px solid #999; }
img.chart { max-width: 100%; height: auto; margin-top: 1rem; }
a { color: #1f5fbf; }
"""


def _html_table(
    head: Iterable[str],
    rows: Iterable[tuple[list[str], int, str]],
    *,
    raw: set[int] | None = None,
    wrap: set[int] | None = None,
) -> str:
    """`rows`: (cells, how many leading text cells, css class of the row); `raw` cells are HTML already."""
    raw, wrap = raw or set(), wrap or set()
    parts = ["<table><thead><tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for cells, text_cells, css in rows:
        parts.append(f'<tr class="{css}">' if css else "<tr>")
        for i, value in enumerate(cells):
            css_class = ' class="wrap"' if i in wrap else "" if i < text_cells else ' class="num"'
            parts.append(f"<td{css_class}>{value if i in raw else html.escape(value)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _example_links(miss: CacheMiss) -> str:
    links = []
    for e in miss.examples:
        text = html.escape(e.observation_id)
        links.append(f'<a href="{html.escape(e.url)}">{text}</a>' if e.url else text)
    return " ".join(links)


def to_html(report: SavingsReport, *, chart: bool = True) -> str:
    """One self-contained HTML page: the tables and (with `chart`) the chart inline as a base64 PNG."""
    from ._chart import chart_png

    body = [f"<h1>{html.escape(_title(report))}</h1>"]
    body.append(f'<p class="meta">{html.escape(_source_line(report))}</p>')
    if chart:
        encoded = base64.b64encode(chart_png(report)).decode("ascii")
        alt = "Daily cost with and without the prompt cache, and the dollars lost to cache misses by cause"
        body.append(f'<img class="chart" alt="{alt}" src="data:image/png;base64,{encoded}">')
    if report.cache_misses is not None:
        body.append("<h2>Cache misses: what caching did not save, and why</h2>")
        rows = _miss_table(report)
        miss_rows = [
            ([*cells[:4], _example_links(miss) if miss else "", cells[5]], 1, "" if miss else "total")
            for miss, cells in rows
        ]
        body.append(_html_table(_MISS_COLUMNS, miss_rows, raw={4}, wrap={4, 5}))
        body.extend(f'<p class="note">{html.escape(line)}</p>' for line in _miss_lines(report))
    group_rows = _group_table(report)
    if group_rows is not None and (report.cache_misses is not None or report.by != "model"):
        title = _DIMENSION_TITLES[report.by]
        body.append(f"<h2>Per {html.escape(title)}: cost, savings and lost to cache misses</h2>")
        rows = [
            ([name, *cells], 1, "total" if i == len(group_rows) - 1 else "")
            for i, (name, cells) in enumerate(group_rows)
        ]
        body.append(_html_table((title.capitalize(), *_GROUP_COLUMNS), rows))
    body.append("<h2>Per model</h2>")
    model_rows = [([name, *cells], 1, "") for name, cells in _model_table(report)]
    model_rows[-1] = (model_rows[-1][0], 1, "total")
    body.append(_html_table(("Model", *_COLUMNS), model_rows))
    body.append("<h2>Per day and model</h2>")
    day_rows = [([r.day.isoformat() if r.day else "", r.model or "", *_cells(r)], 2, "") for r in report.rows]
    body.append(_html_table(("Day", "Model", *_COLUMNS), day_rows))
    if report.disagreements:
        body.append(f"<h2>Cost disagreements (|delta| &gt; ${html.escape(f'{report.tolerance:f}')})</h2>")
        rows = [(_disagreement_cells(d), 4, "") for d in report.disagreements]
        body.append(_html_table(_DISAGREEMENT_COLUMNS, rows))
    body.extend(f'<p class="note">{html.escape(line)}</p>' for line in _footnotes(report))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(_title(report))}</title><style>{_HTML_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def render(report: SavingsReport, fmt: Format, *, table: Table = "rows") -> str:
    """The report as "table", "csv" (one `table`), "json" or "html" text."""
    renderers: dict[str, Callable[[SavingsReport], str]] = {
        "table": render_table,
        "csv": lambda r: to_csv(r, table),
        "json": to_json,
        "html": to_html,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}")
    return renderers[fmt](report)
