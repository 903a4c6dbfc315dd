"""The chart: daily cost against no-cache cost (the savings between them), and beside it the dollars
lost to cache misses by cause (matplotlib, Agg; PNG or JPEG)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._model import MACHINE_MONEY, SavingsReport

__all__ = ["CHART_FORMATS", "chart_bytes", "chart_png", "save_chart"]

#: File suffixes `save_chart` writes, and matplotlib's name for each.
CHART_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
_LINES_FROM = 32  # days: a longer range with a call every day is drawn as lines, anything else as bars


def _plain(text: str) -> str:
    """Text for matplotlib, whose mathtext would read what stands between two `$` as a formula."""
    return text.replace("$", r"\$")


def _usd(amount: Decimal) -> str:
    rounded = Decimal(amount).quantize(MACHINE_MONEY) + 0
    return f"-${-rounded:,f}" if rounded < 0 else f"${rounded:,f}"


def _axis_usd(top: float) -> Callable[[float, Any], str]:
    places = 2 if top >= 1 else 3 if top >= 0.1 else 4 if top >= 0.01 else 6

    def label(value: float, _position: Any) -> str:
        text = _plain(f"${abs(value):,.{places}f}")
        return f"-{text}" if value < 0 else text

    return label


def drawn_as(report: SavingsReport) -> str:
    """ "bars" when some day of the range has no call or the range is short, else "lines" (a line over
    empty days would invent a ramp between the days around them)."""
    days = report.by_day()
    return "bars" if len(days) < _LINES_FROM or any(d.calls == 0 for d in days) else "lines"


def chart_bytes(report: SavingsReport, fmt: str = "png", *, dpi: int = 110) -> bytes:
    """The chart as `fmt` ("png" or "jpeg") bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, DateFormatter, DayLocator
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    if fmt not in ("png", "jpeg"):
        raise ValueError(f"unknown chart format {fmt!r}")
    days = report.by_day()
    x = [datetime(d.day.year, d.day.month, d.day.day) for d in days if d.day is not None]
    cost = [float(d.cost) for d in days]
    no_cache = [float(d.no_cache_cost) for d in days]
    totals = report.totals
    misses = report.cache_misses

    figure = Figure(figsize=(15, 5.4) if misses is not None else (10, 5.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    if misses is not None:
        axes, lost_axes = figure.subplots(1, 2, width_ratios=(2, 1))
    else:
        axes, lost_axes = figure.add_subplot(), None
    if drawn_as(report) == "bars":  # bars: nothing drawn on the days without calls
        width = 0.38
        left = [d - timedelta(days=width / 2) for d in x]
        right = [d + timedelta(days=width / 2) for d in x]
        axes.bar(left, no_cache, width=width, color="#9e9e9e", label="Without the prompt cache")
        axes.bar(right, cost, width=width, color="#1f77b4", label="What the calls cost")
        axes.plot([], [], " ", label=_plain(f"Saved by caching: {_usd(totals.savings)} in total"))
    else:
        axes.plot(x, no_cache, color="#7f7f7f", linewidth=2, label="Without the prompt cache")
        axes.plot(x, cost, color="#1f77b4", linewidth=2, label="What the calls cost")
        saved = [n >= c for n, c in zip(no_cache, cost, strict=True)]
        axes.fill_between(
            x, cost, no_cache, where=saved, interpolate=True, color="#2ca02c", alpha=0.3,
            label=_plain(f"Saved by caching ({_usd(totals.savings)} in total)"),
        )  # fmt: skip
        if not all(saved):
            axes.fill_between(
                x, cost, no_cache, where=[not s for s in saved], interpolate=True, color="#d62728", alpha=0.3,
                label="Cache writes cost more than reads saved",
            )  # fmt: skip
    top = max([*cost, *no_cache, 0.0])
    axes.yaxis.set_major_formatter(FuncFormatter(_axis_usd(top)))
    if min([*cost, *no_cache, 0.0]) >= 0:
        axes.set_ylim(bottom=0, top=top * 1.3 if top > 0 else 1)  # room for the legend above the bars
    span = (x[-1] - x[0]).days if x else 0
    if span <= 31:  # one point per day: day ticks, never hours
        axes.xaxis.set_major_locator(DayLocator(interval=max(1, span // 8)))
        axes.xaxis.set_major_formatter(DateFormatter("%b %d"))
    else:
        locator = AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if x:
        axes.set_xlim(x[0] - timedelta(days=0.7), x[-1] + timedelta(days=0.7))
    axes.set_ylabel("USD per day")
    axes.set_xlabel("Day (UTC)")
    scope = f"{report.model}, " if report.model else ""
    axes.set_title(
        _plain(
            f"OpenRouter cost with and without prompt caching\n{scope}{report.start.isoformat()} to "
            f"{report.end.isoformat()}: {totals.calls:,} calls, {_usd(totals.cost)} paid, "
            f"{_usd(totals.savings)} saved"
        )
    )
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper center", ncols=3, fontsize=9, frameon=False)
    if not totals.calls:
        axes.text(0.5, 0.5, "No OpenRouter generations in this range", transform=axes.transAxes, ha="center")
    if lost_axes is not None:
        _lost_panel(lost_axes, report, FuncFormatter)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    return buffer.getvalue()


def _lost_panel(axes: Any, report: SavingsReport, formatter: Any) -> None:
    misses = [m for m in report.cache_misses or () if m.calls]
    names = [m.cause.replace("_", " ") for m in misses][::-1]
    values = [float(m.lost_usd) for m in misses][::-1]
    lost = report.lost_usd or 0
    axes.set_title(_plain(f"Lost to cache misses, by cause\n{_usd(lost)} in total"))
    if not misses:
        axes.text(0.5, 0.5, "No cache misses", transform=axes.transAxes, ha="center", va="center")
        axes.set_xticks([])
        axes.set_yticks([])
        return
    bars = axes.barh(names, values, color="#d62728", alpha=0.8)
    top = max([*values, 0.0])
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(4))
    axes.xaxis.set_major_formatter(formatter(_axis_usd(top)))
    axes.set_xlim(0, top * 1.75 if top > 0 else 1)  # room for the labels
    for bar, miss in zip(bars, misses[::-1], strict=True):
        label = _plain(f" {_usd(miss.lost_usd)} ({miss.calls:,} call{'' if miss.calls == 1 else 's'})")
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=9)
    axes.set_xlabel("USD lost: cost minus the cost had the cache hit")
    axes.grid(True, axis="x", alpha=0.3)


def chart_png(report: SavingsReport, *, dpi: int = 110) -> bytes:
    """PNG: daily cost and no-cache cost (bars for sparse days), and the lost dollars by cause beside it."""
    return chart_bytes(report, "png", dpi=dpi)


def save_chart(report: SavingsReport, path: str | os.PathLike[str]) -> Path:
    """Write the chart to `path` as PNG (.png) or JPEG (.jpg, .jpeg); other suffixes: `ValueError`."""
    target = Path(path)
    fmt = CHART_FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ValueError(f"the chart is written as .png, .jpg or .jpeg, not {target.suffix or 'no suffix'!r}")
    target.write_bytes(chart_bytes(report, fmt))
    return target
