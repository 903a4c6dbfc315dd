"""The report's values: rows per day and model, groups, disagreements, cache misses, and the report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

__all__ = [
    "CAUSES",
    "DEFAULT_TOLERANCE",
    "DIMENSIONS",
    "UNKNOWN",
    "CacheMiss",
    "Disagreement",
    "ExampleCall",
    "GroupRow",
    "ReportError",
    "ReportRow",
    "SavingsReport",
    "Undecided",
]

#: A reconciliation delta (USD) up to this size is rounding, not a disagreement.
DEFAULT_TOLERANCE = Decimal("0.000001")
#: The name shown for generations that name no model (session, user...).
UNKNOWN = "(none)"
UNKNOWN_MODEL = "(no model)"
#: What `--by` groups by.
DIMENSIONS = ("model", "day", "session", "user", "trace_name")
Dimension = Literal["model", "day", "session", "user", "trace_name"]
#: The causes of a cache miss, in the order the report lists them.
CAUSES = ("provider_switch", "expired", "prefix_changed", "below_minimum", "not_enabled", "write_unread")
_ZERO = Decimal(0)
MACHINE_MONEY = Decimal("0.000001")  # every format shows micro-dollars


def round_money(amount: Decimal, quantum: Decimal = MACHINE_MONEY) -> Decimal:
    """`amount` at `quantum`, never -0."""
    return amount.quantize(quantum) + 0


class ReportError(Exception):
    """Why the report could not be made, in one line fit for users."""


@dataclass(frozen=True)
class ReportRow:
    """Figures for one day and model; `day` or `model` is None in per-model, per-day and total rows.

    `input_tokens` are the prompt tokens neither read from nor written to the cache, `cached_tokens`
    those read from it, `written_tokens` those written to it; `cost` is what the calls cost,
    `no_cache_cost` what they would have cost at the plain prompt price, `savings` the difference
    (negative when cache writes cost more than the reads saved). `disagreements` is None when the
    calls' reconciliation was not checked.
    """

    day: date | None
    model: str | None
    calls: int
    input_tokens: int
    cached_tokens: int
    written_tokens: int
    output_tokens: int
    cost: Decimal
    no_cache_cost: Decimal
    savings: Decimal
    disagreements: int | None = None

    @property
    def prompt_tokens(self) -> int:
        """All prompt tokens: uncached, read from and written to the cache."""
        return self.input_tokens + self.cached_tokens + self.written_tokens

    @property
    def cache_hit_ratio(self) -> float | None:
        """Cached / prompt tokens; None without prompt tokens."""
        prompt = self.prompt_tokens
        return self.cached_tokens / prompt if prompt else None

    def as_dict(self) -> dict[str, Any]:
        """Plain values: ISO day, ints, money rounded to micro-dollars, ratio to 4 places."""
        ratio = self.cache_hit_ratio
        return {
            "day": self.day.isoformat() if self.day else None,
            "model": self.model,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "written_tokens": self.written_tokens,
            "output_tokens": self.output_tokens,
            "cache_hit_ratio": None if ratio is None else round(ratio, 4),
            "cost_usd": float(round_money(self.cost)),
            "no_cache_cost_usd": float(round_money(self.no_cache_cost)),
            "savings_usd": float(round_money(self.savings)),
            "disagreements": self.disagreements,
        }


@dataclass(frozen=True)
class GroupRow:
    """Cost, savings and what cache misses lost for one value of `dimension` (`--by`)."""

    dimension: str
    key: str
    calls: int
    cost: Decimal
    no_cache_cost: Decimal
    savings: Decimal
    lost_usd: Decimal | None

    def as_dict(self) -> dict[str, Any]:
        """Plain values; money as decimal strings at micro-dollars."""
        return {
            self.dimension: self.key,
            "calls": self.calls,
            "cost_usd": f"{round_money(self.cost):f}",
            "no_cache_cost_usd": f"{round_money(self.no_cache_cost):f}",
            "savings_usd": f"{round_money(self.savings):f}",
            "lost_usd": None if self.lost_usd is None else f"{round_money(self.lost_usd):f}",
        }


@dataclass(frozen=True)
class Disagreement:
    """A call whose cost as OpenRouter reported it and as computed from prices differ (`delta`)."""

    day: date
    model: str
    observation_id: str
    trace_id: str | None
    generation_id: str | None
    start_time: datetime
    reported_cost: Decimal | None
    computed_cost: Decimal | None
    delta: Decimal

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "day": self.day.isoformat(),
            "model": self.model,
            "observation_id": self.observation_id,
            "trace_id": self.trace_id,
            "generation_id": self.generation_id,
            "start_time": self.start_time.isoformat(),
            "reported_cost_usd": None if self.reported_cost is None else float(self.reported_cost),
            "computed_cost_usd": None if self.computed_cost is None else float(self.computed_cost),
            "delta_usd": float(self.delta),
        }


@dataclass(frozen=True)
class ExampleCall:
    """One call of a cause, to open in Langfuse (`url` None when the project is unknown)."""

    observation_id: str
    trace_id: str
    url: str | None


@dataclass(frozen=True)
class CacheMiss:
    """The calls whose prompt cache did not save what it could have, for one `cause`.

    `lost_usd`: what those calls cost minus what they would have cost had the cache hit (for
    `write_unread`: the write premium paid for nothing), both from the prices in force by `compute_cost`;
    `unpriced` calls (no price known) add nothing to it. `examples`: up to five calls.
    """

    cause: str
    calls: int
    prompt_tokens: int
    lost_usd: Decimal
    examples: tuple[ExampleCall, ...]
    advice: str
    unpriced: int = 0

    @property
    def observation_ids(self) -> list[str]:
        """The example calls' observation ids."""
        return [e.observation_id for e in self.examples]

    def as_dict(self) -> dict[str, Any]:
        """Exactly cause, calls, prompt_tokens, lost_usd (a decimal string), observation_ids, advice."""
        return {
            "cause": self.cause,
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "lost_usd": f"{round_money(self.lost_usd):f}",
            "observation_ids": self.observation_ids,
            "advice": self.advice,
        }


@dataclass(frozen=True)
class Undecided:
    """Calls for which `causes` could not be decided, and why."""

    causes: tuple[str, ...]
    calls: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Plain values."""
        return {"causes": list(self.causes), "calls": self.calls, "reason": self.reason}


@dataclass(frozen=True)
class SavingsReport:
    """Rows per (day, model), sorted; `disagreements` None when not checked; `source` says how it was made.

    `cache_misses` is None when the generations were not read (the diagnosis needs each of them), else one
    entry per cause that lost something, in `CAUSES` order; `groups` holds the per-session, per-user and
    per-trace-name figures when the generations were read; `by` is the grouping the renderers show.
    """

    start: date
    end: date
    model: str | None
    rows: tuple[ReportRow, ...]
    disagreements: tuple[Disagreement, ...] | None
    source: Literal["metrics", "observations"]
    tolerance: Decimal = DEFAULT_TOLERANCE
    notes: tuple[str, ...] = ()
    cache_misses: tuple[CacheMiss, ...] | None = None
    undecided: tuple[Undecided, ...] = ()
    groups: dict[str, tuple[GroupRow, ...]] = field(default_factory=dict)
    lost_by: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    by: str = "model"

    @property
    def totals(self) -> ReportRow:
        """All rows summed (`day` and `model` None)."""
        return _sum_rows(self.rows, None, None, checked=self.disagreements is not None)

    @property
    def lost_usd(self) -> Decimal | None:
        """What all cache misses lost; None when not diagnosed."""
        if self.cache_misses is None:
            return None
        return sum((m.lost_usd for m in self.cache_misses), _ZERO)

    def by_model(self) -> list[ReportRow]:
        """One row per model over the whole range (`day` None), sorted by model."""
        models = sorted({row.model or "" for row in self.rows})
        checked = self.disagreements is not None
        return [_sum_rows([r for r in self.rows if r.model == m], None, m, checked=checked) for m in models]

    def by_day(self) -> list[ReportRow]:
        """One row per day of the range, days without calls included (`model` None)."""
        checked = self.disagreements is not None
        days = [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]
        return [_sum_rows([r for r in self.rows if r.day == d], d, None, checked=checked) for d in days]

    def grouped(self, dimension: str | None = None) -> list[GroupRow]:
        """Cost, savings and lost-to-misses per `dimension` (default `by`), most costly first.

        "model" and "day" come from the rows; "session", "user" and "trace_name" need the generations
        read (`ReportError` otherwise).
        """
        dimension = dimension or self.by
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}; one of {', '.join(DIMENSIONS)}")
        diagnosed = self.cache_misses is not None
        if dimension in ("model", "day"):
            source = self.by_model() if dimension == "model" else [r for r in self.by_day() if r.calls]
            rows = []
            for r in source:
                key = r.model or "" if dimension == "model" else r.day.isoformat() if r.day else ""
                lost = self.lost_by.get((dimension, key), _ZERO) if diagnosed else None
                rows.append(GroupRow(dimension, key, r.calls, r.cost, r.no_cache_cost, r.savings, lost))
        elif dimension in self.groups:
            rows = list(self.groups[dimension])
        else:
            raise ReportError(f"grouping by {dimension} needs every generation read (--source observations)")
        return sorted(rows, key=lambda g: (-g.cost, g.key))

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready values."""
        try:
            grouped: list[dict[str, Any]] | None = [g.as_dict() for g in self.grouped()]
        except ReportError:
            grouped = None
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "model": self.model,
            "source": self.source,
            "tolerance_usd": float(self.tolerance),
            "totals": self.totals.as_dict(),
            "by_model": [row.as_dict() for row in self.by_model()],
            "rows": [row.as_dict() for row in self.rows],
            "by": {"dimension": self.by, "groups": grouped},
            "disagreements": None
            if self.disagreements is None
            else [d.as_dict() for d in self.disagreements],
            "cache_misses": None if self.cache_misses is None else [m.as_dict() for m in self.cache_misses],
            "cache_misses_undecided": [u.as_dict() for u in self.undecided],
            "notes": list(self.notes),
        }


def _sum_rows(rows: Iterable[ReportRow], day: date | None, model: str | None, *, checked: bool) -> ReportRow:
    rows = list(rows)
    return ReportRow(
        day=day,
        model=model,
        calls=sum(r.calls for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        cached_tokens=sum(r.cached_tokens for r in rows),
        written_tokens=sum(r.written_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost=sum((r.cost for r in rows), _ZERO),
        no_cache_cost=sum((r.no_cache_cost for r in rows), _ZERO),
        savings=sum((r.savings for r in rows), _ZERO),
        disagreements=sum(r.disagreements or 0 for r in rows) if checked else None,
    )
